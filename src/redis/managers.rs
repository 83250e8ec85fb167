//! The deadpool managers of the three topologies (one server, a cluster, a master found through
//! Sentinel), the TLS certificates and the Sentinel client they connect with.

use super::*;

/// The TLS material of `CCSYNC_REDIS_*_FILE`, read now (so a file that went away fails at start).
pub(super) fn certificates(files: &TlsFiles) -> Result<Option<TlsCertificates>, RedisConnError> {
    if files.is_empty() {
        return Ok(None);
    }
    let read = |key: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            RedisConnError(format!(
                "configuration: {key}: cannot read {}: {e}",
                p.display()
            ))
        })
    };
    let root_cert = match &files.ca_file {
        Some(p) => Some(read("CCSYNC_REDIS_CA_FILE", p)?),
        None => None,
    };
    let client_tls = match (&files.client_cert_file, &files.client_key_file) {
        (Some(c), Some(k)) => Some(ClientTlsConfig {
            client_cert: read("CCSYNC_REDIS_CLIENT_CERT_FILE", c)?,
            client_key: read("CCSYNC_REDIS_CLIENT_KEY_FILE", k)?,
        }),
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

pub(super) fn sentinel_client(
    sentinels: &[SecretString],
    master: &str,
    redis_url: &SecretString,
    certs: Option<&TlsCertificates>,
) -> Result<SentinelClient, RedisError> {
    let infos = sentinels
        .iter()
        .map(|s| s.expose_secret().into_connection_info())
        .collect::<Result<Vec<_>, _>>()?;
    let sentinel_tls = sentinels
        .iter()
        .any(|s| s.expose_secret().starts_with("rediss:"));
    let mut b = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master,
        SentinelServerType::Master,
    )?;
    if let Some(first) = infos.first() {
        let r = first.redis_settings();
        if let Some(u) = r.username() {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = r.password() {
            b = b.set_client_to_sentinel_password(p);
        }
    }
    if sentinel_tls {
        b = b.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(c) = certs {
            b = b.set_client_to_sentinel_certificates(c.clone());
        }
    }
    let data = redis_url.expose_secret();
    let info = data.into_connection_info()?;
    let r = info.redis_settings();
    if let Some(u) = r.username() {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = r.password() {
        b = b.set_client_to_redis_password(p);
    }
    if r.db() != 0 {
        b = b.set_client_to_redis_db(r.db());
    }
    if data.starts_with("rediss:") {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(c) = certs {
            b = b.set_client_to_redis_certificates(c.clone());
        }
    }
    b.build()
}

/// One server: multiplexed connections, checked with `PING` before reuse.
pub(crate) struct SingleManager {
    pub(super) client: Client,
    pub(super) ping: AtomicUsize,
}

impl managed::Manager for SingleManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(Some(BOUND));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    async fn recycle(
        &self,
        c: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        ping(c, &self.ping).await
    }
}

/// A cluster: one connection reaches every node (it follows slot moves by itself).
pub(crate) struct ClusterManager {
    pub(super) client: ::redis::cluster::ClusterClient,
    pub(super) ping: AtomicUsize,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(&self, c: &mut ClusterConnection, _: &Metrics) -> RecycleResult<RedisError> {
        ping(c, &self.ping).await
    }
}

/// Sentinel: each connection goes to the master the sentinels name now; a connection whose
/// server is no longer a master (a failover demoted it) is dropped instead of reused.
pub(crate) struct SentinelManager {
    pub(super) client: tokio::sync::Mutex<SentinelClient>,
}

impl managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(Some(BOUND));
        self.client
            .lock()
            .await
            .get_async_connection_with_config(&cfg)
            .await
    }

    async fn recycle(
        &self,
        c: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        let role: Vec<Value> = ::redis::cmd("ROLE").query_async(c).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r == b"master" => Ok(()),
            _ => Err(RecycleError::message(
                "no longer the master (Sentinel failed over)",
            )),
        }
    }
}

async fn ping<C: ConnectionLike + Send>(c: &mut C, n: &AtomicUsize) -> RecycleResult<RedisError> {
    let want = n.fetch_add(1, Ordering::Relaxed).to_string();
    let got: String = ::redis::cmd("PING").arg(&want).query_async(c).await?;
    if got == want {
        Ok(())
    } else {
        Err(RecycleError::message("invalid PING reply"))
    }
}
