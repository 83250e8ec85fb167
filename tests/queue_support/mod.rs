//! What the queue tests share: the broker URL and a bare lapin connection, for what the worker
//! must never do itself (declaring with chosen arguments, deleting `<queue>.dead`, reading raw
//! headers).
#![allow(dead_code)]

use secrecy::{ExposeSecret, SecretString};

pub fn amqp_url() -> SecretString {
    SecretString::from(
        std::env::var("CCSYNC_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    )
}

pub async fn raw() -> lapin::Connection {
    lapin::Connection::connect(
        amqp_url().expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap()
}
