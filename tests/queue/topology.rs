//! The queue the worker declares, read back from a real RabbitMQ: a quorum queue with an explicit
//! `x-delivery-limit` (ccsync::queue::DELIVERY_LIMIT) and `<queue>.dlx` as its dead-letter
//! exchange, so what the broker drops lands in `<queue>.dead`; and an existing queue declared
//! otherwise is used as it is; and the events exchange (`CCSYNC_EVENTS_EXCHANGE`) declared with
//! them as a durable topic exchange.

use std::time::Duration;

use ccsync::queue::{Broker, DELIVERY_LIMIT, Topology};
use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::queue_support;
use queue_support::{amqp_url, raw};

/// The arguments the worker is meant to declare, written out independently of queue.rs.
fn expected(t: &Topology, limit: i64) -> FieldTable {
    let mut a = FieldTable::default();
    a.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    a.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    a.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(t.dlx.as_str().into()),
    );
    a
}

async fn declare_with(
    conn: &lapin::Connection,
    queue: &str,
    args: FieldTable,
) -> Result<(), String> {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    if ch.status().connected() {
        let _ = ch.close(200, "ok".into()).await;
    }
    r
}

/// `rabbitmqctl list_queues name arguments` for one queue, when rabbitmqctl runs here.
fn listed_arguments(queue: &str) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--no-table-headers",
            "--quiet",
            "name",
            "arguments",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(queue))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_declares_a_delivery_limit_and_a_dead_letter_exchange() {
    let broker = Broker::connect(&ccsync::config::AmqpEndpoint::plain(amqp_url()))
        .await
        .unwrap();
    let topo = Topology::for_queue(&format!("test.topology.{}", uuid::Uuid::new_v4().simple()));
    broker.declare(&topo).await.unwrap();
    broker.declare(&topo).await.unwrap();
    let conn = raw().await;
    // The same arguments declare again (equivalent); a different delivery limit does not, which
    // shows the broker holds the one the worker declared.
    declare_with(&conn, &topo.queue, expected(&topo, DELIVERY_LIMIT))
        .await
        .expect("the worker's arguments, re-declared, are equivalent");
    let err = declare_with(&conn, &topo.queue, expected(&topo, 20))
        .await
        .expect_err("another delivery limit is not equivalent");
    assert!(err.contains("PRECONDITION_FAILED"), "{err}");
    match tokio::task::spawn_blocking({
        let q = topo.queue.clone();
        move || listed_arguments(&q)
    })
    .await
    .unwrap()
    {
        Some(line) => {
            assert!(line.contains("x-delivery-limit"), "{line}");
            assert!(line.contains(&DELIVERY_LIMIT.to_string()), "{line}");
            assert!(line.contains("x-dead-letter-exchange"), "{line}");
            assert!(line.contains(&topo.dlx), "{line}");
            assert!(line.contains("quorum"), "{line}");
        }
        None => eprintln!("rabbitmqctl not usable here; arguments checked by equivalence only"),
    }
    // What the broker itself drops goes to `<queue>.dead` (here a reject without requeue; the
    // delivery limit takes the same path).
    broker
        .publisher()
        .await
        .unwrap()
        .publish(&topo.queue, b"{\"n\":1}")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(topo.queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the message");
    got.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let mut dead = 0;
    for _ in 0..100 {
        dead = broker.queue_len(&topo.dead).await.unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 1, "the broker dead-lettered it to <queue>.dead");
    let _ = conn.close(200, "bye".into()).await;
    broker.delete(&topo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_queue_with_other_arguments_is_used_as_it_is() {
    let broker = Broker::connect(&ccsync::config::AmqpEndpoint::plain(amqp_url()))
        .await
        .unwrap();
    let topo = Topology::for_queue(&format!("test.topology.{}", uuid::Uuid::new_v4().simple()));
    let conn = raw().await;
    // As an older ccsync declared it: quorum only.
    let mut older = FieldTable::default();
    older.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare_with(&conn, &topo.queue, older).await.unwrap();
    broker
        .declare(&topo)
        .await
        .expect("falls back to the existing queue");
    // The dead-letter pair is there all the same.
    assert_eq!(broker.queue_len(&topo.dead).await.unwrap(), 0);
    let _ = conn.close(200, "bye".into()).await;
    broker.delete(&topo).await.unwrap();
}

/// Declare an exchange as `kind` (durable) on a channel of its own: `Ok` when the broker agrees
/// (it exists with those properties or was created), `Err` on PRECONDITION_FAILED.
async fn exchange_as(
    conn: &lapin::Connection,
    name: &str,
    kind: lapin::ExchangeKind,
    passive: bool,
) -> Result<(), String> {
    let ch = conn.create_channel().await.unwrap();
    let r = ch
        .exchange_declare(
            name.into(),
            kind,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                passive,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string());
    if ch.status().connected() {
        let _ = ch.close(200, "ok".into()).await;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_declares_the_events_exchange_as_a_durable_topic_exchange() {
    let broker = Broker::connect(&ccsync::config::AmqpEndpoint::plain(amqp_url()))
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let events = format!("test.events.{id}");
    let topo = Topology::for_queue(&format!("test.topology.{id}")).with_events(&events);
    let conn = raw().await;
    assert!(
        exchange_as(&conn, &events, lapin::ExchangeKind::Topic, true)
            .await
            .is_err(),
        "not there before the worker declares it"
    );
    broker.declare(&topo).await.unwrap();
    broker.declare(&topo).await.unwrap();
    // Redeclaring with the same properties is accepted; as another type it is refused, so the
    // exchange is exactly a durable topic exchange.
    exchange_as(&conn, &events, lapin::ExchangeKind::Topic, false)
        .await
        .expect("a durable topic exchange");
    assert!(
        exchange_as(&conn, &events, lapin::ExchangeKind::Fanout, false)
            .await
            .is_err()
    );
    // Without an events exchange (`ccsync publish`, `ingest`) none is declared.
    let plain = Topology::for_queue(&format!("test.topology.plain.{id}"));
    assert!(plain.events.is_none());
    broker.declare(&plain).await.unwrap();
    broker.delete(&plain).await.unwrap();
    broker.delete(&topo).await.unwrap();
    broker.delete_exchange(&events).await.unwrap();
    let _ = conn.close(200, "ok".into()).await;
    broker.close().await;
}
