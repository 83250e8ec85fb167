//! `ccsync ingest` against the real broker: each test runs its own server (port 0) on its own
//! random queue, and reads what reached the queue.

use std::time::Duration;

use ccsync::config::Settings;
use ccsync::ingest::sign::{ccsync_header, shopify_header};
use ccsync::queue::{Broker, Topology};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const OLD: &str = "old-secret-0123456789abcdef";
const NEW: &str = "new-secret-0123456789abcdef";
const SHOPIFY: &str = "shpss_0123456789abcdef";
const LIST: &str = "c2a2b8b4-0000-4000-8000-000000000001";

struct Ingest {
    base: String,
    queue: String,
    broker: Broker,
    http: reqwest::Client,
    stop: CancellationToken,
    running: Option<ccsync::ingest::Running>,
}

impl Ingest {
    async fn start(extra: &[(&str, &str)]) -> Ingest {
        let queue = format!("test.ingest.{}", &Uuid::new_v4().simple().to_string()[..12]);
        let secrets = format!("{OLD},{NEW}");
        let mut pairs = vec![
            ("CCSYNC_QUEUE", queue.as_str()),
            ("CCSYNC_DEFAULT_LIST_IDS", LIST),
            ("CCSYNC_INGEST__ADDR", "127.0.0.1:0"),
            ("CCSYNC_INGEST__SECRETS", secrets.as_str()),
            ("CCSYNC_INGEST__SHOPIFY_SECRET", SHOPIFY),
            ("CCSYNC_INGEST__PUBLISH_TIMEOUT_MS", "3000"),
        ];
        pairs.extend_from_slice(extra);
        let settings = Settings::from_pairs(pairs).unwrap();
        let stop = CancellationToken::new();
        let running = ccsync::ingest::start(&settings, stop.clone())
            .await
            .unwrap();
        let base = format!("http://{}", running.addr);
        let broker = Broker::connect(&Settings::from_pairs([]).unwrap().amqp())
            .await
            .expect("RabbitMQ answers on 127.0.0.1:5672 (bash scripts/services.sh)");
        Ingest {
            base,
            queue,
            broker,
            http: reqwest::Client::new(),
            stop,
            running: Some(running),
        }
    }

    async fn ready(&self) -> bool {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if self.ready().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ingest not ready within 10 s");
    }

    async fn post(
        &self,
        body: &[u8],
        content_type: &str,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/contacts", self.base))
            .header("content-type", content_type)
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("x-ccsync-signature", s);
        }
        req.send().await.unwrap()
    }

    async fn post_signed(&self, body: &[u8], content_type: &str) -> reqwest::Response {
        let sig = ccsync_header(NEW, ccsync::clock::now_unix(), body);
        self.post(body, content_type, Some(sig)).await
    }

    async fn shopify(
        &self,
        topic: &str,
        webhook_id: &str,
        body: &[u8],
        hmac: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/webhooks/shopify", self.base))
            .header("content-type", "application/json")
            .header("x-shopify-topic", topic)
            .header("x-shopify-webhook-id", webhook_id)
            .header("x-shopify-shop-domain", "example-shop.myshopify.com")
            .header("x-shopify-hmac-sha256", hmac)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Every message in the queue, in order (taken).
    async fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = self.broker.take(&self.queue).await.unwrap() {
            out.push(f.body);
        }
        out
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
        let _ = self.broker.delete(&Topology::for_queue(&self.queue)).await;
        self.broker.close().await;
    }
}

fn message(email: &str) -> Vec<u8> {
    crate::common::message(email, "2026-01-01T00:00:00Z", json!({"first_name": "Ada"}))
}

fn id_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn signed_json_and_ndjson_reach_the_queue_exactly_as_sent() {
    let ing = Ingest::start(&[]).await;
    ing.wait_ready().await;

    let one = message("one@example.com");
    let r = ing.post_signed(&one, "application/json").await;
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer, json!({"accepted": 1, "ids": [id_of(&one)]}));
    // 202 came after the confirm: the message is already in the queue.
    assert_eq!(ing.drain().await, vec![one]);

    let lines: Vec<Vec<u8>> = (0..50)
        .map(|i| message(&format!("n{i}@example.com")))
        .collect();
    let mut body = lines.join(&b"\n"[..]);
    body.extend_from_slice(b"\n");
    let r = ing.post_signed(&body, "application/x-ndjson").await;
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 50);
    let ids: Vec<String> = lines.iter().map(|l| id_of(l)).collect();
    assert_eq!(answer["ids"], json!(ids));
    let mut got = ing.drain().await;
    got.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got, want, "every line, byte for byte");

    let metrics = ing
        .http
        .get(format!("{}/metrics", ing.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ccsync_ingest_requests_total{route=\"contacts\",status=\"202\"}"));
    assert!(metrics.contains("ccsync_ingest_broker_up 1"));
    ing.stop().await;
}

#[tokio::test]
async fn signatures_missing_bad_stale_and_rotated() {
    let ing = Ingest::start(&[]).await;
    ing.wait_ready().await;
    let body = message("sig@example.com");
    let now = ccsync::clock::now_unix();

    let r = ing.post(&body, "application/json", None).await;
    assert_eq!(r.status(), 401);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("X-Ccsync-Signature")
    );

    let wrong = ccsync_header("not-a-configured-secret-123", now, &body);
    assert_eq!(
        ing.post(&body, "application/json", Some(wrong))
            .await
            .status(),
        401
    );
    // Signed over another body.
    let other = ccsync_header(NEW, now, b"{}");
    assert_eq!(
        ing.post(&body, "application/json", Some(other))
            .await
            .status(),
        401
    );
    let stale = ccsync_header(NEW, now - 301, &body);
    let r = ing.post(&body, "application/json", Some(stale)).await;
    assert_eq!(r.status(), 401);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["detail"].as_str().unwrap().contains("timestamp"),
        "{answer}"
    );
    assert!(
        ing.drain().await.is_empty(),
        "nothing refused was published"
    );

    // Rotation: both configured secrets are accepted.
    let a = message("old@example.com");
    let r = ing
        .post(&a, "application/json", Some(ccsync_header(OLD, now, &a)))
        .await;
    assert_eq!(r.status(), 202);
    let b = message("new@example.com");
    let r = ing
        .post(
            &b,
            "application/json",
            Some(ccsync_header(NEW, now - 200, &b)),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(ing.drain().await, vec![a, b]);
    ing.stop().await;
}

#[tokio::test]
async fn one_bad_line_is_a_400_naming_it_and_nothing_is_published() {
    let ing = Ingest::start(&[]).await;
    ing.wait_ready().await;
    let mut body = message("a@example.com");
    body.extend_from_slice(b"\n");
    body.extend_from_slice(&message("not-an-email"));
    body.extend_from_slice(b"\n");
    body.extend_from_slice(&message("c@example.com"));
    let r = ing.post_signed(&body, "application/x-ndjson").await;
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["lines"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["lines"][0]["line"], 2);
    assert_eq!(answer["lines"][0]["code"], "invalid_email");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was published")
    );
    assert!(ing.drain().await.is_empty());
    ing.stop().await;
}

#[tokio::test]
async fn oversize_bodies_and_too_many_lines_are_413() {
    let ing = Ingest::start(&[
        ("CCSYNC_INGEST__MAX_BODY_BYTES", "4096"),
        ("CCSYNC_INGEST__MAX_LINES", "3"),
    ])
    .await;
    ing.wait_ready().await;
    let big = vec![b' '; 8192];
    let r = ing.post_signed(&big, "application/json").await;
    assert_eq!(r.status(), 413);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("ingest.max_body_bytes")
    );

    let lines: Vec<Vec<u8>> = (0..4)
        .map(|i| message(&format!("m{i}@example.com")))
        .collect();
    let r = ing
        .post_signed(&lines.join(&b"\n"[..]), "application/x-ndjson")
        .await;
    assert_eq!(r.status(), 413);
    assert!(ing.drain().await.is_empty());
    ing.stop().await;
}

/// Over `ingest.rate_per_second` a route answers 429 with `Retry-After` and publishes nothing
/// for the refused requests; the limit is per route, so Shopify's webhooks still get through.
#[tokio::test]
async fn over_the_rate_a_route_is_429_with_retry_after_and_publishes_nothing() {
    let ing = Ingest::start(&[("CCSYNC_INGEST__RATE_PER_SECOND", "1")]).await;
    ing.wait_ready().await;
    // Ten requests at once against a bucket of one request per second.
    let bodies: Vec<Vec<u8>> = (0..10)
        .map(|i| message(&format!("r{i}@example.com")))
        .collect();
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|b| ing.post_signed(b, "application/json")),
    )
    .await;
    let mut accepted = Vec::new();
    let mut limited = 0;
    for (body, r) in bodies.iter().zip(answers) {
        match r.status().as_u16() {
            202 => accepted.push(id_of(body)),
            429 => {
                limited += 1;
                assert_eq!(
                    r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let answer: Value = r.json().await.unwrap();
                assert_eq!(answer["error"], "rate_limited");
                assert!(
                    answer["detail"]
                        .as_str()
                        .unwrap()
                        .contains("ingest.rate_per_second")
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!accepted.is_empty(), "the bucket's first request passes");
    assert!(
        limited >= 5,
        "only {limited} of 10 concurrent requests were limited"
    );
    // Only the accepted requests reached the queue.
    let queued: Vec<String> = ing.drain().await.iter().map(|b| id_of(b)).collect();
    assert_eq!(queued.len(), accepted.len());
    for id in &accepted {
        assert!(queued.contains(id), "accepted {id} is not in the queue");
    }
    // The Shopify route has its own bucket.
    let body = std::fs::read("tests/fixtures/shopify_customer.json").unwrap();
    let r = ing
        .shopify(
            "customers/create",
            &Uuid::new_v4().to_string(),
            &body,
            &shopify_header(SHOPIFY, &body),
        )
        .await;
    assert_eq!(r.status(), 200);
    ing.stop().await;
}

#[tokio::test]
async fn broker_down_is_503_with_retry_after_and_not_ready() {
    // A closed port: the link never connects.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let ing = Ingest::start(&[("CCSYNC_AMQP_URL", url.as_str())]).await;
    assert!(!ing.ready().await, "/readyz must be 503 without a broker");
    let r = ing
        .http
        .get(format!("{}/healthz", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "alive all the same");
    let body = message("down@example.com");
    let r = ing.post_signed(&body, "application/json").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let hook = br#"{"id":1,"email":"s@example.com","updated_at":"2026-01-01T00:00:00Z"}"#;
    let r = ing
        .shopify(
            "customers/create",
            &Uuid::new_v4().to_string(),
            hook,
            &shopify_header(SHOPIFY, hook),
        )
        .await;
    assert_eq!(r.status(), 503, "Shopify retries a 503");
    ing.stop().await;
}

#[tokio::test]
async fn a_deleted_queue_is_503_not_a_silent_drop() {
    // The publish is mandatory: with no queue to take it the broker returns it, and the sender
    // hears 503 instead of a 202 for a message that went nowhere.
    let ing = Ingest::start(&[]).await;
    ing.wait_ready().await;
    ing.broker
        .delete(&Topology::for_queue(&ing.queue))
        .await
        .unwrap();
    let r = ing
        .post_signed(&message("gone@example.com"), "application/json")
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    ing.stop().await;
}

#[tokio::test]
async fn shopify_customers_create_becomes_a_decodable_upsert() {
    let ing = Ingest::start(&[(
        "CCSYNC_INGEST__SHOPIFY_ACCOUNTS",
        "example-shop.myshopify.com=acme",
    )])
    .await;
    ing.wait_ready().await;
    let body = std::fs::read("tests/fixtures/shopify_customer.json").unwrap();
    let webhook_id = Uuid::new_v4().to_string();

    let r = ing
        .shopify("customers/create", &webhook_id, &body, "bm90IHRoZSBobWFj")
        .await;
    assert_eq!(r.status(), 401, "wrong HMAC");
    assert!(ing.drain().await.is_empty());

    let hmac = shopify_header(SHOPIFY, &body);
    for _ in 0..2 {
        // Shopify's retry of one delivery: same webhook id, same message id.
        let r = ing
            .shopify("customers/create", &webhook_id, &body, &hmac)
            .await;
        assert_eq!(r.status(), 200);
    }
    let got = ing.drain().await;
    assert_eq!(got.len(), 2);
    for m in &got {
        let c = ccsync::contact::decode(m, &[LIST.parse().unwrap()])
            .expect("the worker's decoder reads it");
        assert_eq!(&*c.id, webhook_id.as_str());
        assert_eq!(c.email, "bob.norman@example.com");
        assert_eq!(c.account, "acme");
        assert_eq!(c.consent, ccsync::contact::Consent::Explicit);
        assert_eq!(c.fields.first_name.as_deref(), Some("Bob"));
    }
    assert_eq!(got[0], got[1], "a retry is the same message");

    // Another topic: acknowledged, nothing published.
    let r = ing
        .shopify("orders/create", &Uuid::new_v4().to_string(), &body, &hmac)
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["skipped"], "unknown_topic");
    assert!(ing.drain().await.is_empty());
    ing.stop().await;
}

/// A TCP proxy between ingest and RabbitMQ that the test can cut (every open connection closed,
/// new ones accepted and dropped at once, as a broker that went away) and restore. Traffic
/// towards the broker is paced at [`PROXY_BYTES_PER_SEC`], so an NDJSON batch takes long enough
/// on the wire that a cut lands in the middle of one.
struct Proxy {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    up: std::sync::atomic::AtomicBool,
    /// Cancelled on each cut; every connection of the current generation holds a clone.
    cut: std::sync::Mutex<CancellationToken>,
}

const PROXY_BYTES_PER_SEC: usize = 512 << 10;

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(ProxyState {
            up: std::sync::atomic::AtomicBool::new(true),
            cut: std::sync::Mutex::new(CancellationToken::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !st.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = st.cut.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(broker) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut br, mut bw) = broker.into_split();
                    let to_broker = async {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            bw.write_all(&buf[..n]).await?;
                            // Pacing, not a timing assertion: n bytes at PROXY_BYTES_PER_SEC.
                            tokio::time::sleep(Duration::from_secs_f64(
                                n as f64 / PROXY_BYTES_PER_SEC as f64,
                            ))
                            .await;
                        }
                    };
                    let to_client = tokio::io::copy(&mut br, &mut cw);
                    // Dropping both halves of both sockets closes them: the broker sees its
                    // client gone, ingest sees its broker gone.
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = to_broker => {}
                        _ = to_client => {}
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.state.up.store(false, Ordering::SeqCst);
        let mut cut = self.state.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }

    fn restore(&self) {
        self.state
            .up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// One request of the stream and what it got.
#[derive(Debug, Clone)]
struct Sent {
    body: Vec<u8>,
    content_type: &'static str,
    ids: Vec<String>,
    /// The status, `None` when no answer came within the client's timeout (a hang).
    status: Option<u16>,
    retry_after: Option<String>,
    /// Sent after the proxy came back.
    after_restore: bool,
}

/// Poll `cond` every 20 ms until it holds; panics naming `what` after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Issue 16, "the broker stopped": the connection between ingest and RabbitMQ is cut while
/// signed single messages and NDJSON batches stream in, then comes back.
///
/// What "nothing is half-published" means here (docs/operations.md, Ingest): a 202 is given only
/// once the broker confirmed every message of the request, so every 202's messages are all in
/// the queue. A request the cut interrupts gets 503 with `Retry-After`; the lines of an NDJSON
/// batch the broker had already stored stay queued (a publish cannot be taken back, and quorum
/// queues do not support AMQP transactions), so the sender retries the whole request: the retry
/// carries the same message ids and the worker applies a repeated upsert harmlessly (the
/// ordering ledger keeps each field's newest `occurred_at`: tests/ingest/e2e.rs,
/// `a_retried_batch_after_a_newer_event_changes_nothing`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_mid_stream_is_503_never_a_false_202_and_ingest_recovers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Mutex;

    let proxy = Proxy::start("127.0.0.1:5672").await;
    let url = proxy.url();
    let ing = Arc::new(Ingest::start(&[("CCSYNC_AMQP_URL", url.as_str())]).await);
    ing.wait_ready().await;
    // No answer within this is a hang (the publish timeout is 3 s).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let restored = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for k in 0..4usize {
        let (ing, log, stop, restored, client) = (
            ing.clone(),
            log.clone(),
            stop.clone(),
            restored.clone(),
            client.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                // Senders 0 and 1: single JSON messages; 2 and 3: NDJSON batches of 100.
                let lines = if k < 2 { 1 } else { 100 };
                let msgs: Vec<Vec<u8>> = (0..lines)
                    .map(|j| message(&format!("s{k}.{i}.{j}@example.com")))
                    .collect();
                let (body, content_type) = if k < 2 {
                    (msgs[0].clone(), "application/json")
                } else {
                    (msgs.join(&b"\n"[..]), "application/x-ndjson")
                };
                let after_restore = restored.load(Ordering::SeqCst);
                let sig = ccsync_header(NEW, ccsync::clock::now_unix(), &body);
                let r = client
                    .post(format!("{}/v1/contacts", ing.base))
                    .header("content-type", content_type)
                    .header("x-ccsync-signature", sig)
                    .body(body.clone())
                    .send()
                    .await;
                let (status, retry_after) = match r {
                    Ok(r) => (
                        Some(r.status().as_u16()),
                        r.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    ),
                    Err(e) => {
                        assert!(e.is_timeout(), "the request failed without an answer: {e}");
                        (None, None)
                    }
                };
                let was_503 = status == Some(503);
                log.lock().await.push(Sent {
                    body,
                    content_type,
                    ids: msgs.iter().map(|m| id_of(m)).collect(),
                    status,
                    retry_after,
                    after_restore,
                });
                if was_503 {
                    // Pacing while the broker is away (not an assertion).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                i += 1;
            }
        }));
    }
    let count = |pred: fn(&Sent) -> bool| {
        let log = log.clone();
        async move { log.lock().await.iter().filter(|s| pred(s)).count() }
    };
    until(Duration::from_secs(30), "20 accepted requests", || {
        let c = count(|s| s.status == Some(202));
        async move { c.await >= 20 }
    })
    .await;
    proxy.cut();
    until(
        Duration::from_secs(30),
        "503s and /readyz 503 after the cut",
        || {
            let c = count(|s| s.status == Some(503));
            let ing = ing.clone();
            async move { c.await >= 8 && !ing.ready().await }
        },
    )
    .await;
    restored.store(true, Ordering::SeqCst);
    proxy.restore();
    until(Duration::from_secs(30), "/readyz 200 again", || {
        let ing = ing.clone();
        async move { ing.ready().await }
    })
    .await;
    until(
        Duration::from_secs(30),
        "accepted requests after the broker came back",
        || {
            let c = count(|s| s.after_restore && s.status == Some(202));
            async move { c.await >= 20 }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("every sender ends: its last request is answered within 15 s")
            .unwrap();
    }
    let sent = log.lock().await.clone();

    // Every request was answered, 202 or 503 with Retry-After; NDJSON batches were among both.
    for s in &sent {
        match s.status {
            Some(202) => {}
            Some(503) => assert_eq!(s.retry_after.as_deref(), Some("5"), "{s:?}"),
            other => panic!("answer {other:?} (None: no answer in 15 s, a hang)"),
        }
    }
    let ndjson = |status| {
        sent.iter()
            .filter(|s| s.ids.len() > 1 && s.status == Some(status))
            .count()
    };
    assert!(ndjson(202) > 0 && ndjson(503) > 0, "NDJSON 202s and 503s");

    // A 202 only when every message of the request is in the queue. (Taken with a consumer:
    // `drain` opens a channel per message, too slow for thousands.)
    let queued = || async {
        let mut n = std::collections::HashMap::<String, usize>::new();
        let ready = ing.broker.queue_len(&ing.queue).await.unwrap();
        let mut c = ing
            .broker
            .consume(&Topology::for_queue(&ing.queue), 1000)
            .await
            .unwrap();
        for _ in 0..ready {
            let d = tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .expect("a ready message is delivered")
                .unwrap()
                .unwrap();
            *n.entry(id_of(&d.body)).or_default() += 1;
            d.tag.ack().await.unwrap();
        }
        c.close().await;
        assert_eq!(ing.broker.queue_len(&ing.queue).await.unwrap(), 0);
        n
    };
    let in_queue = tokio::time::timeout(Duration::from_secs(60), queued())
        .await
        .expect("reading the queue hung");
    for s in sent.iter().filter(|s| s.status == Some(202)) {
        for id in &s.ids {
            assert_eq!(
                in_queue.get(id),
                Some(&1),
                "accepted message {id} is queued once"
            );
        }
    }
    // What the cut left of the refused requests: nothing, part (an NDJSON batch the broker had
    // partly stored) or all (stored, but the confirm was lost with the connection).
    let refused: Vec<&Sent> = sent.iter().filter(|s| s.status == Some(503)).collect();
    let partial = refused
        .iter()
        .filter(|s| {
            let n = s.ids.iter().filter(|id| in_queue.contains_key(*id)).count();
            n > 0 && n < s.ids.len()
        })
        .count();
    eprintln!(
        "{} requests: {} accepted, {} refused with 503 ({} NDJSON); of the refused, {} partly queued",
        sent.len(),
        sent.len() - refused.len(),
        refused.len(),
        ndjson(503),
        partial
    );

    // The sender's retry of every refused request is accepted, and then all of it is queued.
    for s in &refused {
        let sig = ccsync_header(NEW, ccsync::clock::now_unix(), &s.body);
        let r = client
            .post(format!("{}/v1/contacts", ing.base))
            .header("content-type", s.content_type)
            .header("x-ccsync-signature", sig)
            .body(s.body.clone())
            .send()
            .await
            .expect("the retry is answered within 15 s");
        assert_eq!(r.status(), 202, "the retry of a refused request");
    }
    let again = tokio::time::timeout(Duration::from_secs(60), queued())
        .await
        .expect("reading the queue hung");
    for s in &refused {
        for id in &s.ids {
            assert!(again.contains_key(id), "retried message {id} is queued");
        }
    }
    // Stopping ingest ends its broker connection cleanly, through the proxy; then the proxy.
    let Ok(ing) = Arc::try_unwrap(ing) else {
        panic!("a sender still holds the server")
    };
    tokio::time::timeout(Duration::from_secs(30), ing.stop())
        .await
        .expect("ingest stops within 30 s");
    drop(proxy);
}
