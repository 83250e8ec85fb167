//! Issue 16, end to end: signed NDJSON into `ccsync ingest`, through the queue and a worker
//! process, into the simulated CC; a Shopify webhook delivered twice makes one contact with the
//! mapped fields.

use crate::common;

use std::time::Duration;

use ccsync::ingest::sign::{ccsync_header, shopify_header};
use common::{World, message, store, wait_for};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "e2e-secret-0123456789abcdef";
const SHOPIFY: &str = "shpss_e2e_0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_ndjson_batch_and_a_repeated_shopify_webhook_reach_cc_through_the_worker() {
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_INGEST__ADDR", "127.0.0.1:0");
    world.set("CCSYNC_INGEST__SECRETS", SECRET);
    world.set("CCSYNC_INGEST__SHOPIFY_SECRET", SHOPIFY);
    let stop = CancellationToken::new();
    let running = ccsync::ingest::start(&world.settings(), stop.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(10), "ingest ready", || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // 1,000 messages in one signed NDJSON request.
    let mut body = Vec::new();
    for i in 0..1000 {
        body.extend(message(
            &format!("nd{i}@example.com"),
            "2026-11-23T10:00:00Z",
            json!({"first_name": "Nd"}),
        ));
        body.push(b'\n');
    }
    let r = http
        .post(format!("{base}/v1/contacts"))
        .header("content-type", "application/x-ndjson")
        .header(
            "x-ccsync-signature",
            ccsync_header(SECRET, ccsync::clock::now_unix(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Shopify retries a delivery with the same webhook id: one message id, one contact.
    let shop = std::fs::read("tests/fixtures/shopify_customer.json").unwrap();
    let hmac = shopify_header(SHOPIFY, &shop);
    let webhook_id = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let r = http
            .post(format!("{base}/webhooks/shopify"))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "customers/create")
            .header("x-shopify-webhook-id", &webhook_id)
            .header("x-shopify-shop-domain", "example-shop.myshopify.com")
            .header("x-shopify-hmac-sha256", &hmac)
            .body(shop.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let worker = world.spawn_worker();
    wait_for(
        Duration::from_secs(90),
        "every contact in CC through the worker",
        || async { store(&world.sim).len() == 1001 },
    )
    .await;
    let bob = world
        .sim
        .contact("bob.norman@example.com")
        .expect("the Shopify customer reached CC");
    assert_eq!(
        bob.fields.get("first_name").map(String::as_str),
        Some("Bob")
    );
    assert!(world.terminate(worker).await.success());
    assert_eq!(
        store(&world.sim).len(),
        1001,
        "the repeated webhook made one contact"
    );
    assert_eq!(world.queue_len().await, 0);
    assert_eq!(world.dead_len().await, 0);
    stop.cancel();
    running.wait().await;
    world.cleanup().await;
}

/// Issue 16, "nothing is half-published": a 503 may leave part of an NDJSON batch queued, and the
/// sender then retries the whole request with the same ids (docs/operations.md, Ingest). Here the
/// retry comes after a newer event for the same contacts: the worker does not drop repeats by
/// message id, but its ordering ledger keeps each field's newest `occurred_at`, so the repeated
/// older lines change nothing in CC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_after_a_newer_event_changes_nothing() {
    const N: usize = 10;
    let mut world = World::new(World::fast_sim()).await;
    world.seed_tokens("default").await;
    world.set("CCSYNC_INGEST__ADDR", "127.0.0.1:0");
    world.set("CCSYNC_INGEST__SECRETS", SECRET);
    world.set("CCSYNC_WORKER__LINGER_MIN_MS", "100");
    world.set("CCSYNC_WORKER__LINGER_MAX_MS", "200");
    let stop = CancellationToken::new();
    let running = ccsync::ingest::start(&world.settings(), stop.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(10), "ingest ready", || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let post = |body: Vec<u8>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.post(format!("{base}/v1/contacts"))
                .header("content-type", "application/x-ndjson")
                .header(
                    "x-ccsync-signature",
                    ccsync_header(SECRET, ccsync::clock::now_unix(), &body),
                )
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let batch = |at: &str, name: &str| {
        let mut body = Vec::new();
        for i in 0..N {
            body.extend(message(
                &format!("retry{i}@example.com"),
                at,
                json!({"first_name": name, "last_name": format!("L{name}")}),
            ));
            body.push(b'\n');
        }
        body
    };
    let older = batch("2026-11-23T10:00:00Z", "old");
    let newer = batch("2026-11-23T10:05:00Z", "new");
    let names = |want: &'static str| {
        let held = store(&world.sim);
        held.len() == N
            && held
                .values()
                .all(|c| c.fields.get("first_name").map(String::as_str) == Some(want))
    };
    let worker = world.spawn_worker();
    assert_eq!(post(older.clone()).await, 202);
    wait_for(Duration::from_secs(60), "the older batch in CC", || async {
        names("old")
    })
    .await;
    assert_eq!(post(newer).await, 202);
    wait_for(Duration::from_secs(60), "the newer batch in CC", || async {
        names("new")
    })
    .await;
    // The sender's retry of the older request (same bytes, same ids), answered 202 again.
    assert_eq!(post(older).await, 202);
    wait_for(
        Duration::from_secs(60),
        "the worker settled the retried batch",
        || async { world.settled().await >= 3 * N as u64 && world.queue_len().await == 0 },
    )
    .await;
    let held = store(&world.sim);
    assert_eq!(held.len(), N);
    for c in held.values() {
        assert_eq!(c.fields.get("first_name").map(String::as_str), Some("new"));
        assert_eq!(c.fields.get("last_name").map(String::as_str), Some("Lnew"));
    }
    assert!(world.terminate(worker).await.success());
    assert_eq!(world.dead_len().await, 0);
    stop.cancel();
    running.wait().await;
    world.cleanup().await;
}
