//! `ccsync demo`: the whole pipeline against an in-process simulator, on the local RabbitMQ and
//! Redis. It authorizes through the device flow (auto-approved), publishes generated contacts
//! (with repeats, list changes, explicit consents and a few invalid messages), runs a worker until
//! the queue drains, then checks that the simulator holds exactly the merged contacts.
//!
//! Everything lives under a random queue name and Redis key prefix, removed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;
use crate::queue::{Broker, Topology};
use crate::sim::{Sim, SimConfig};
use crate::telemetry::metrics;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error(
        "{0} does not answer on 127.0.0.1. Start RabbitMQ and Redis with `bash scripts/services.sh` (Debian/Ubuntu: installs them when missing), or on another system: `redis-server --daemonize yes` and `rabbitmq-server -detached`"
    )]
    ServiceDown(&'static str),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error("the simulator does not hold the expected contacts: {0}")]
    Mismatch(String),
}

fn setup(e: impl std::fmt::Display) -> DemoError {
    DemoError::Setup(e.to_string())
}

/// What the demo expects CC to hold for one email: newest first name, all lists, permission.
struct Expect {
    first_name: String,
    occurred: i64,
    lists: BTreeSet<Uuid>,
    explicit: bool,
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Run the demo with `n` messages. Prints progress and a summary on stdout.
pub(crate) async fn run(n: usize) -> Result<(), DemoError> {
    if !answers(5672) {
        return Err(DemoError::ServiceDown("RabbitMQ (port 5672)"));
    }
    if !answers(6379) {
        return Err(DemoError::ServiceDown("Redis (port 6379)"));
    }
    let started = Instant::now();
    let sim = Sim::start(SimConfig {
        auto_approve: true,
        device_interval_secs: 1,
        processing: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await
    .map_err(setup)?;
    let lists = [sim.create_list("Customers"), sim.create_list("Newsletter")];
    sim.create_custom_field("loyalty_tier");
    let id = Uuid::new_v4().simple().to_string();
    let queue = format!("ccsync.demo.{}", &id[..8]);
    let prefix = format!("ccsync-demo-{}", &id[..8]);
    let (api, auth) = (sim.api_base_url(), sim.auth_base_url());
    // Show the production setting: the token set encrypted at rest (a throw-away key).
    let key = {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let settings = Settings::from_pairs([
        ("CCSYNC_QUEUE", queue.as_str()),
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str()),
        ("CCSYNC_API_BASE_URL", api.as_str()),
        ("CCSYNC_AUTH_BASE_URL", auth.as_str()),
        ("CCSYNC_CLIENT_ID", "ccsync-demo"),
        ("CCSYNC_DEFAULT_LIST_IDS", &lists[0].to_string()),
        ("CCSYNC_METRICS_ADDR", "127.0.0.1:0"),
        ("CCSYNC_TOKEN_ENCRYPTION_KEY", key.as_str()),
        ("CCSYNC_WORKER__LINGER_MIN_MS", "1000"),
        ("CCSYNC_WORKER__LINGER_MAX_MS", "1000"),
        ("CCSYNC_WORKER__POLL_INITIAL_MS", "300"),
        ("CCSYNC_WORKER__POLL_MAX_MS", "2000"),
    ])
    .map_err(setup)?;
    println!("ccsync demo: simulator at {}", sim.base_url());

    // 1. The one-time approval, through the device flow (the simulator approves at once).
    println!("\n== 1. authorize (OAuth device flow)");
    let gate: Arc<dyn crate::ratelimit::Gate> =
        crate::ratelimit::SharedLimiter::connect(&settings, &settings.client_id)
            .await
            .map_err(setup)?;
    let mut out = std::io::stdout();
    crate::auth::cli::login(&settings, gate, "default", &mut out)
        .await
        .map_err(setup)?;

    // 2. Publish.
    println!("\n== 2. publish {n} messages to {queue}");
    let (bodies, expected, invalid) = generate(n, &lists);
    let broker = Broker::connect(&settings.amqp()).await.map_err(setup)?;
    let topo = Topology::for_queue(&queue);
    broker.declare(&topo).await.map_err(setup)?;
    let publisher = broker.publisher().await.map_err(setup)?;
    for b in &bodies {
        publisher.publish(&queue, b).await.map_err(setup)?;
    }
    println!(
        "   {} messages: {} distinct contacts, {} repeats, {} invalid",
        bodies.len(),
        expected.len(),
        bodies.len() - expected.len() - invalid,
        invalid
    );

    // 3. Run a worker until every message is settled.
    println!("\n== 3. run the worker");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(crate::app::run_worker(settings.clone(), shutdown.clone()));
    let m = metrics();
    let settled = || {
        ["synced", "dead_lettered", "superseded"]
            .iter()
            .map(|o| m.settled_total(o))
            .sum::<u64>()
    };
    // The test kit's waiting (ccsync-kit-base), printing the progress at each look.
    ccsync_kit_base::wait_until(Duration::from_secs(300), Duration::from_millis(500), || {
        let done = settled() as usize >= bodies.len();
        print!(
            "\r   settled {:>6}/{}  contacts in CC {:>6}  imports in flight {}   ",
            settled(),
            bodies.len(),
            sim.contacts().len(),
            m.activities_in_flight()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::future::ready(done)
    })
    .await;
    println!();
    shutdown.cancel();
    let _ = worker.await;

    // 4. Check and summarize.
    println!("\n== 4. check");
    let held: BTreeMap<String, crate::sim::SimContact> = sim
        .contacts()
        .into_iter()
        .map(|c| (c.email.clone(), c))
        .collect();
    let mut problems = Vec::new();
    if held.len() != expected.len() {
        problems.push(format!(
            "{} contacts in CC, {} expected",
            held.len(),
            expected.len()
        ));
    }
    for (email, e) in &expected {
        match held.get(email) {
            None => problems.push(format!("{email} missing")),
            Some(c) => {
                if c.fields.get("first_name") != Some(&e.first_name) || c.list_ids != e.lists {
                    problems.push(format!("{email} holds other values"));
                }
                if e.explicit && c.permission_to_send != "explicit" {
                    problems.push(format!("{email} lacks explicit permission"));
                }
            }
        }
    }
    let dead_by_reason: BTreeMap<String, u64> = {
        let mut r = BTreeMap::new();
        while let Some(f) = broker.take(&topo.dead).await.map_err(setup)? {
            *r.entry(f.reason.unwrap_or_default()).or_insert(0) += 1;
        }
        r
    };
    let requests = sim.requests();
    let by_path = |p: &str| requests.iter().filter(|r| r.path.ends_with(p)).count();
    let api_calls = requests
        .iter()
        .filter(|r| r.path.starts_with("/v3/"))
        .count();
    println!("   contacts synced:   {}", held.len());
    println!(
        "   dead letters:      {} ({})",
        dead_by_reason.values().sum::<u64>(),
        dead_by_reason
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   CC requests used:  {api_calls} API ({} imports, {} activity polls, {} sign-up forms, {} look-ups) + {} token calls; one call per contact would need {}",
        by_path("/contacts_json_import"),
        requests
            .iter()
            .filter(|r| r.path.starts_with("/v3/activities/") && r.method == "GET")
            .count(),
        by_path("/sign_up_form"),
        by_path("/contact_custom_fields"),
        by_path("/token"),
        bodies.len() - invalid
    );
    println!(
        "   time taken:        {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let _ = broker.delete(&topo).await;
    broker.close().await;
    sim.shutdown().await;
    if dead_by_reason.values().sum::<u64>() as usize != invalid {
        problems.push(format!(
            "{} dead letters, {invalid} expected",
            dead_by_reason.values().sum::<u64>()
        ));
    }
    if problems.is_empty() {
        println!("\nOK: Constant Contact (simulated) holds exactly the merged contacts.");
        Ok(())
    } else {
        Err(DemoError::Mismatch(format!(
            "{} problems, e.g. {}",
            problems.len(),
            problems[..problems.len().min(3)].join("; ")
        )))
    }
}

/// `n` messages: ~10% repeats (newer names, sometimes another list), ~2% explicit consents,
/// ~1% invalid. Returns the bodies, the expected state by email, and the invalid count.
fn generate(n: usize, lists: &[Uuid; 2]) -> (Vec<Vec<u8>>, BTreeMap<String, Expect>, usize) {
    let mut bodies = Vec::with_capacity(n);
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    let mut invalid = 0;
    let base = 1_795_000_000i64; // 2026-11-18, so every event is in the past
    for i in 0..n {
        if i % 100 == 99 {
            let bad = match (i / 100) % 3 {
                0 => b"{\"type\": \"contact.upsert\", broken".to_vec(),
                1 => msg(
                    &format!("missing-at-{i}.example.com"),
                    base,
                    "X",
                    &[lists[0]],
                    false,
                ),
                _ => msg(
                    &format!("u{i}@example.com"),
                    base,
                    &"y".repeat(60),
                    &[lists[0]],
                    false,
                ),
            };
            bodies.push(bad);
            invalid += 1;
            continue;
        }
        let repeat = i % 10 == 9 && i >= 10;
        let who = if repeat { i - 9 } else { i };
        let email = format!("person{who}@example.com");
        let occurred = base + i as i64;
        let list = if repeat && i % 20 == 19 {
            lists[1]
        } else {
            lists[0]
        };
        let explicit = !repeat && i % 50 == 7;
        let name = format!("Name{i}");
        bodies.push(msg(&email, occurred, &name, &[list], explicit));
        let e = expected.entry(email).or_insert_with(|| Expect {
            first_name: name.clone(),
            occurred,
            lists: BTreeSet::new(),
            explicit,
        });
        if occurred >= e.occurred {
            e.first_name = name;
            e.occurred = occurred;
        }
        e.lists.insert(list);
    }
    (bodies, expected, invalid)
}

fn msg(email: &str, occurred: i64, first_name: &str, lists: &[Uuid], explicit: bool) -> Vec<u8> {
    let at = time::OffsetDateTime::from_unix_timestamp(occurred)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // The test kit's message builder (ccsync-kit-base), as the tests and the bench build them.
    ccsync_kit_base::upsert(
        email,
        &at,
        Some(if explicit { "explicit" } else { "implicit" }),
        json!({
            "first_name": first_name,
            "custom_fields": { "loyalty_tier": if occurred % 2 == 0 { "gold" } else { "silver" } },
            "list_ids": lists,
        }),
    )
}
