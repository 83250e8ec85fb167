//! The queue room folds acks into `multiple` acks (see `queue::Unsettled`). A `multiple` ack
//! settles every unacked delivery up to its tag, so the one property that matters to a user is:
//! a delivery the worker still holds is never acked by someone else's `multiple` ack, and a
//! settled delivery that waited for an older one is acked, not redelivered. Real RabbitMQ.

use std::time::Duration;

use ccsync::queue::{Broker, Consumer, Incoming, Tag, Topology};
use secrecy::SecretString;

fn amqp_url() -> SecretString {
    SecretString::from(
        std::env::var("CCSYNC_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    )
}

async fn ready_after_close(broker: &Broker, queue: &str, want: u32) -> u32 {
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

/// A fresh queue holding `n` messages `{"n":i}`, consumed with a window larger than `n`.
async fn consumed(n: usize) -> (Broker, Topology, Consumer, Vec<Incoming>) {
    let broker = Broker::connect(&ccsync::config::AmqpEndpoint::plain(amqp_url()))
        .await
        .unwrap();
    let topo = Topology::for_queue(&format!("test.acks.{}", uuid::Uuid::new_v4().simple()));
    broker.declare(&topo).await.unwrap();
    let publisher = broker.publisher().await.unwrap();
    for i in 0..n {
        publisher
            .publish(&topo.queue, format!("{{\"n\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    let mut consumer = broker.consume(&topo, 2_000).await.unwrap();
    let mut got: Vec<Incoming> = Vec::with_capacity(n);
    while got.len() < n {
        got.push(consumer.next().await.unwrap().unwrap());
    }
    (broker, topo, consumer, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deliveries_survive_folded_acks_and_waiting_acks_are_sent_at_close() {
    // More than the 1,024 deliveries near the front that are acked one by one at once, so some
    // settled deliveries have to wait for an older held one.
    let n = 1_500usize;
    let (broker, topo, consumer, got) = consumed(n).await;
    // Hold the oldest, one in the middle and the newest; settle everything else, newest first,
    // in three calls (like imports completing out of order).
    let held = [0, 700, n - 1];
    let others: Vec<Tag> = (0..n)
        .rev()
        .filter(|i| !held.contains(i))
        .map(|i| got[i].tag.clone())
        .collect();
    for part in others.chunks(500) {
        assert!(Tag::ack_many(part).await.is_empty());
    }
    // Settling the oldest held one lets the waiting run behind it go in one frame; the channel
    // must still be usable afterwards (a wrong tag would have closed it).
    got[0].tag.ack().await.unwrap();
    assert!(
        Tag::ack_many(&others[..10]).await.is_empty(),
        "repeat acks are ignored"
    );
    consumer.close().await;
    // Exactly the two deliveries still held come back: nothing settled was redelivered and
    // nothing held was acked by a folded ack.
    assert_eq!(ready_after_close(&broker, &topo.queue, 2).await, 2);
    let back = broker.peek(&topo.queue, 10).await.unwrap();
    let mut bodies: Vec<String> = back
        .iter()
        .map(|f| String::from_utf8(f.body.clone()).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![format!("{{\"n\":{}}}", n - 1), "{\"n\":700}".to_string()]
    );
    broker.delete(&topo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeueing_the_oldest_releases_the_settled_ones_behind_it() {
    let (broker, topo, mut consumer, got) = consumed(1_200).await;
    let rest: Vec<Tag> = got[1..].iter().map(|i| i.tag.clone()).collect();
    assert!(Tag::ack_many(&rest).await.is_empty());
    got[0].tag.requeue().await.unwrap();
    // The requeued one comes straight back to this consumer; nothing else does.
    let again = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the requeued delivery returns")
        .unwrap()
        .unwrap();
    assert_eq!(again.body, b"{\"n\":0}");
    again.tag.ack().await.unwrap();
    consumer.close().await;
    assert_eq!(ready_after_close(&broker, &topo.queue, 0).await, 0);
    broker.delete(&topo).await.unwrap();
}
