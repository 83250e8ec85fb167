//! The one error of the queue room.

/// A broker failure. Every variant means: the connection or channel is gone or unusable;
/// unsettled deliveries return to the queue by themselves; reconnect with backoff.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot reach RabbitMQ: {0} (start it with `bash scripts/services.sh`, or check CCSYNC_AMQP_URL)"
    )]
    Connect(String),
    /// The TLS handshake failed on the certificates (the broker's is not signed by the CA we
    /// trust, or ours was refused), or the TLS files cannot be read: retrying cannot help. Fatal.
    #[error(
        "RabbitMQ (CCSYNC_AMQP_URL): TLS failed: {0}; point CCSYNC_AMQP_CA_FILE at the CA that signed the broker's certificate (unset: the platform's roots), and check CCSYNC_AMQP_CLIENT_CERT_FILE/KEY_FILE if the broker requires a client certificate"
    )]
    Tls(String),
    #[error("RabbitMQ error: {0}")]
    Broker(String),
    #[error("RabbitMQ refused a publish (nack) for routing key {0}")]
    Nacked(String),
    /// A `mandatory` publish the broker returned: no queue is bound for it. The message was not
    /// stored anywhere, so the delivery it was meant to settle is left unsettled (not acked).
    #[error(
        "RabbitMQ could not route a message published to exchange {exchange:?} with routing key {routing_key:?}: no queue is bound there"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        QueueError::Broker(e.to_string())
    }
}
