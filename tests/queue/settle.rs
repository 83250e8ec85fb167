//! Settling by publishing, against a real RabbitMQ: a dead letter the broker cannot route is not
//! acked (the message stays in the queue), and a blameless requeue gives a message back without
//! the broker counting it (`x-delivery-count` stays absent), body and headers intact.

use std::time::Duration;

use ccsync::queue::{Broker, Consumer, Incoming, QueueError, Requeued, Topology};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::queue_support;
use queue_support::{amqp_url, raw};

async fn settle_len(broker: &Broker, queue: &str, want: u32) -> u32 {
    // Returned deliveries become ready shortly after the channel closes.
    let mut n = broker.queue_len(queue).await.unwrap();
    for _ in 0..100 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = broker.queue_len(queue).await.unwrap();
    }
    n
}

async fn next(consumer: &mut Consumer) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery arrives")
        .expect("the consumer is open")
        .expect("a delivery, not an error")
}

async fn fresh(kind: &str) -> (Broker, Topology) {
    let broker = Broker::connect(&ccsync::config::AmqpEndpoint::plain(amqp_url()))
        .await
        .unwrap();
    let topo = Topology::for_queue(&format!("test.{kind}.{}", uuid::Uuid::new_v4().simple()));
    broker.declare(&topo).await.unwrap();
    (broker, topo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_dead_letter_is_not_acked_and_is_counted() {
    let (broker, topo) = fresh("unroutable").await;
    let body = br#"{"not":"a contact"}"#;
    broker
        .publisher()
        .await
        .unwrap()
        .publish(&topo.queue, body)
        .await
        .unwrap();
    let mut consumer = broker.consume(&topo, 10).await.unwrap();
    // A registry of its own: other tests of this binary settle (and count) at the same time.
    let m = ccsync::telemetry::Metrics::isolated();
    let settler = consumer.settler().with_metrics(m);
    let inc = next(&mut consumer).await;
    // Someone deletes `<queue>.dead`: `<queue>.dlx` is left with nothing bound.
    let conn = raw().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(topo.dead.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    let unroutable = || {
        m.value("ccsync_dead_letters_unroutable_total")
            .unwrap_or(0.0)
    };
    let before = unroutable();
    let err = settler
        .dead_letter(&inc.tag, &inc.body, "invalid_json", "not a contact")
        .await
        .expect_err("an unroutable dead letter is an error");
    assert!(
        matches!(&err, QueueError::Unroutable { exchange, .. } if *exchange == topo.dlx),
        "{err:?}"
    );
    assert_eq!(unroutable(), before + 1.0);
    // Not acked: the message comes back when the channel closes.
    consumer.close().await;
    assert_eq!(settle_len(&broker, &topo.queue, 1).await, 1);

    // The fix the log line names: declare the topology again (a worker restart does), and the
    // same message dead-letters normally.
    broker.declare(&topo).await.unwrap();
    let mut consumer = broker.consume(&topo, 10).await.unwrap();
    let inc = next(&mut consumer).await;
    assert_eq!(inc.body, body);
    consumer
        .settler()
        .dead_letter(&inc.tag, &inc.body, "invalid_json", "not a contact")
        .await
        .unwrap();
    consumer.close().await;
    assert_eq!(settle_len(&broker, &topo.queue, 0).await, 0);
    let dead = broker
        .take(&topo.dead)
        .await
        .unwrap()
        .expect("the dead letter");
    assert_eq!(dead.body, body);
    assert_eq!(dead.reason.as_deref(), Some("invalid_json"));
    assert_eq!(unroutable(), before + 1.0);
    let _ = conn.close(200, "bye".into()).await;
    broker.delete(&topo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blameless_requeues_are_not_counted_and_keep_body_and_headers() {
    let (broker, topo) = fresh("blameless").await;
    let body = br#"{"type":"contact.upsert","id":"1"}"#.to_vec();
    let mut upstream = FieldTable::default();
    upstream.insert("x-upstream".into(), AMQPValue::LongString("kept".into()));
    let publisher = broker.publisher().await.unwrap();
    publisher
        .send("", &topo.queue, &body, upstream)
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = broker.consume(&topo, 10).await.unwrap();
    let settler = consumer.settler();
    let rounds = 5u32;
    for round in 0..rounds {
        let inc = next(&mut consumer).await;
        assert_eq!(inc.body, body);
        assert_eq!(
            inc.delivery_count, 0,
            "round {round}: the broker counted nothing"
        );
        assert_eq!(inc.requeues, round);
        assert_eq!(inc.tag.requeues(), round);
        let how = inc
            .tag
            .requeue_blameless(&settler, &inc.body)
            .await
            .unwrap();
        assert_eq!(how, Requeued::Blameless);
        // A second give-back of the same delivery does nothing (no duplicate).
        let again = inc
            .tag
            .requeue_blameless(&settler, &inc.body)
            .await
            .unwrap();
        assert_eq!(again, Requeued::AlreadySettled);
    }
    // Leave the last copy in the queue and look at it raw.
    let last = next(&mut consumer).await;
    drop(last);
    consumer.close().await;
    assert_eq!(
        settle_len(&broker, &topo.queue, 1).await,
        1,
        "one message, not lost, not doubled"
    );
    let conn = raw().await;
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(topo.queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.delivery.data, body);
    let headers = got
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let h = headers.inner();
    assert_eq!(
        h.get("x-upstream"),
        Some(&AMQPValue::LongString("kept".into())),
        "upstream headers are kept"
    );
    assert_eq!(
        h.get("x-ccsync-requeues"),
        Some(&AMQPValue::LongLongInt(i64::from(rounds)))
    );
    // Once, when the channel closed while it was held: that return the broker does count.
    assert_eq!(h.get("x-delivery-count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(
        got.delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));
    let _ = conn.close(200, "bye".into()).await;
    broker.delete(&topo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_blameless_requeues_pipeline_and_the_ack_window_keeps_working() {
    let (broker, topo) = fresh("blameless-many").await;
    let n = 300usize;
    let publisher = broker.publisher().await.unwrap();
    for i in 0..n {
        publisher
            .publish(&topo.queue, format!("{{\"n\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    let mut consumer = broker.consume(&topo, 1_000).await.unwrap();
    let settler = consumer.settler();
    let mut first = Vec::with_capacity(n);
    while first.len() < n {
        first.push(next(&mut consumer).await);
    }
    // Hold the oldest; give the rest back at once.
    let rest: Vec<_> = first[1..]
        .iter()
        .map(|i| (&i.tag, i.body.as_slice()))
        .collect();
    let results = settler.requeue_blameless_many(&rest).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Requeued::Blameless))),
        "{:?}",
        results
            .iter()
            .find(|r| !matches!(r, Ok(Requeued::Blameless)))
    );
    let mut bodies = Vec::new();
    for _ in 1..n {
        let inc = next(&mut consumer).await;
        assert_eq!(inc.delivery_count, 0);
        assert_eq!(inc.requeues, 1);
        bodies.push(String::from_utf8(inc.body.clone()).unwrap());
        inc.tag.ack().await.unwrap();
    }
    bodies.sort();
    let mut want: Vec<String> = (1..n).map(|i| format!("{{\"n\":{i}}}")).collect();
    want.sort();
    assert_eq!(bodies, want);
    first[0].tag.ack().await.unwrap();
    consumer.close().await;
    assert_eq!(settle_len(&broker, &topo.queue, 0).await, 0);
    broker.delete(&topo).await.unwrap();
}
