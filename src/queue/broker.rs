//! The connection: connect (TLS through rustls), channels for consuming and publishing, close.

use lapin::options::ConfirmSelectOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use super::{Publisher, QueueError};
use crate::config::{AmqpEndpoint, TlsFiles};

/// The lapin TLS configuration of `CCSYNC_AMQP_*_FILE` (read at each connect, so a renewed
/// certificate is picked up by the next connection).
fn tls_config(files: &TlsFiles) -> Result<OwnedTLSConfig, QueueError> {
    let read = |key: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| QueueError::Tls(format!("{key}: cannot read {}: {e}", p.display())))
    };
    let cert_chain = match &files.ca_file {
        Some(p) => Some(
            String::from_utf8(read("CCSYNC_AMQP_CA_FILE", p)?)
                .map_err(|_| QueueError::Tls("CCSYNC_AMQP_CA_FILE is not PEM text".into()))?,
        ),
        None => None,
    };
    let identity = match (&files.client_cert_file, &files.client_key_file) {
        (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 {
            pem: read("CCSYNC_AMQP_CLIENT_CERT_FILE", c)?,
            key: read("CCSYNC_AMQP_CLIENT_KEY_FILE", k)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Whether a connection error is about certificates (retrying cannot fix it).
fn is_certificate_problem(e: &str) -> bool {
    [
        "certificate",
        "UnknownIssuer",
        "BadSignature",
        "CertExpired",
        "NotValidForName",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// A connection to the broker.
pub struct Broker {
    pub(super) conn: Connection,
}

impl Broker {
    /// Connect (amqp:// or amqps://). TLS runs through rustls, trusting the CA of
    /// `CCSYNC_AMQP_CA_FILE` besides the platform's roots, with the optional client certificate.
    /// A certificate problem is [`QueueError::Tls`] (fatal); anything else [`QueueError::Connect`].
    pub async fn connect(target: &AmqpEndpoint) -> Result<Broker, QueueError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("ccsync-{}", std::process::id()).into());
        let tls = tls_config(&target.tls)?;
        let runtime =
            lapin::runtime::default_runtime().map_err(|e| QueueError::Connect(e.to_string()))?;
        let conn = Connection::connect_with_config(target.url.expose_secret(), props, tls, runtime)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if is_certificate_problem(&text) {
                    QueueError::Tls(text)
                } else {
                    QueueError::Connect(text)
                }
            })?;
        Ok(Broker { conn })
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }
    /// A channel in confirm mode for publishing.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { ch })
    }

    /// True while the broker has blocked this connection (a memory or disk alarm): publishes
    /// are not read until it unblocks, so a caller waiting for a confirm would wait that long.
    pub(crate) fn is_blocked(&self) -> bool {
        self.conn.status().blocked()
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}
