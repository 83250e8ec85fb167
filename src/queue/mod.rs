//! RabbitMQ, the only room that knows `lapin`: topology, consuming with manual acks, settling
//! (ack / requeue / dead-letter with a reason) and publishing with publisher confirms.
//!
//! Topology (declared idempotently by every worker and by `ccsync publish`):
//! * `<queue>`: a durable **quorum** queue (replicated, and it counts redeliveries in
//!   `x-delivery-count`, which the worker uses to dead-letter poison messages), with an explicit
//!   `x-delivery-limit` ([`DELIVERY_LIMIT`]) and `<queue>.dlx` as its dead-letter exchange
//!   (docs/operations.md, "Delivery limits"). If the queue already exists with other arguments
//!   (for example a classic queue an operator made, or one an older ccsync declared), the worker
//!   uses it as it is and logs a warning instead of failing.
//! * `<queue>.dlx`: a durable fanout exchange, bound to `<queue>.dead`, a durable queue.
//!   Dead letters are published there by the worker with `x-ccsync-reason`, `x-ccsync-detail`
//!   and `x-ccsync-failed-at` headers, `mandatory` and confirmed by the broker, and only then is
//!   the original acked (DESIGN §2): a crash in between leaves a duplicate dead letter, and an
//!   unroutable one leaves the original in the queue, never a lost message.
//!
//! * `CCSYNC_EVENTS_EXCHANGE` (default `ccsync.events`, [`Topology::events`]): a durable
//!   **topic** exchange for what ccsync tells upstream systems (`contact.unsubscribed`, the
//!   opt-out feed). The worker declares it with the queues; consumers bind their own queues.
//!   Events are persistent and confirmed ([`Publisher::publish_events`]), but **not**
//!   `mandatory`: an exchange nobody bound yet is a normal state of a fresh deployment, and a
//!   mandatory publish would come back unroutable and hold the feed (and every account's
//!   cursor) until someone binds a queue. So events published while no queue is bound are
//!   dropped by the broker, by design (README, "Events out").
//!
//! Giving a message back: [`Tag::requeue`] (a nack, which quorum queues count) or
//! [`Tag::requeue_blameless`] (a confirmed copy, then an ack: never counted).
//!
//! Following the lapin examples: `basic_qos` before `basic_consume`; on shutdown cancel the
//! consumer first, settle, then close the channel and the connection.

mod admin;
mod broker;
mod consumer;
mod delivery;
mod error;
mod publisher;
mod settler;
mod topology;
mod window;

pub use admin::Fetched;
#[doc(hidden)]
pub use broker::Broker;
pub use consumer::Consumer;
pub use delivery::{Incoming, Requeued, Tag};
pub use error::QueueError;
pub use publisher::Publisher;
pub use settler::{QueuePublisher, Settler};
pub use topology::{DELIVERY_LIMIT, Topology};
