//! The Redis connector: the one room that opens Redis connections. Every Redis user (token store
//! and refresh lock in `auth`, the limiter and quota in `ratelimit`, the ordering `ledger`, the
//! `parking` registry, the `poison` crash marks) asks [`Redis::from_settings`] for a pool and
//! never learns which of the three shapes it talks to:
//!
//! * one server, `CCSYNC_REDIS_URL` (redis:// or rediss://);
//! * a Redis Cluster, `CCSYNC_REDIS__CLUSTER_NODES` (seed nodes; commands go to the node owning
//!   their key's slot, and every Lua script's keys share one slot: they carry a `{hash tag}`);
//! * a master found through Sentinel, `CCSYNC_REDIS__SENTINELS` + `CCSYNC_REDIS__SENTINEL_MASTER`.
//!   Each new connection asks the sentinels for the master, and a pooled connection is checked
//!   with `ROLE` before reuse, so after a failover the pool drops the connections to the demoted
//!   master and the next ones reach the promoted replica.
//!
//! TLS (rediss://) uses `CCSYNC_REDIS_CA_FILE` when set (else the platform's roots) and the
//! optional client certificate (`CCSYNC_REDIS_CLIENT_CERT_FILE` + `..._KEY_FILE`). Errors name
//! the connection (the setting an operator fixes) and never carry a URL: it may hold a password.
//!
//! `deadpool` lives here only; the users build commands with the `redis` crate and run them on
//! the [`Conn`] this hands out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, TlsCertificates, TlsMode, Value,
};
use deadpool::managed::{self, Metrics, Object, Pool, RecycleError, RecycleResult};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{RedisTopology, Settings, TlsFiles};

mod managers;

pub(crate) use managers::{ClusterManager, SentinelManager, SingleManager};
use managers::{certificates, sentinel_client};

/// Bound on connecting, on waiting for a pooled connection, and on the recycle check: a dead
/// Redis turns into an error within seconds instead of hanging callers.
const BOUND: Duration = Duration::from_secs(5);

/// Connections per pool (each is multiplexed: many requests share one).
const POOL_SIZE: usize = 16;

/// A Redis connection problem, worded for the operator: which connection and what to check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RedisConnError(String);

/// A pool on the configured Redis. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Redis {
    pool: Pools,
    /// Which connection this is, for error lines ("Redis (CCSYNC_REDIS_URL)").
    label: String,
}

#[derive(Clone)]
enum Pools {
    Single(Pool<SingleManager>),
    Cluster(Pool<ClusterManager>),
    Sentinel(Pool<SentinelManager>),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("label", &self.label).finish()
    }
}

/// One pooled connection; run `redis` commands, pipelines and scripts on it.
pub(crate) enum Conn {
    Single(Object<SingleManager>),
    Cluster(Object<ClusterManager>),
    Sentinel(Object<SentinelManager>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

impl Redis {
    /// A pool on the Redis `settings` name (no connection is made yet: the first [`Redis::get`]
    /// connects). Fails only on a configuration the client library refuses (a URL it cannot
    /// use, TLS files it cannot parse).
    pub fn from_settings(settings: &Settings) -> Result<Redis, RedisConnError> {
        let certs = certificates(&settings.redis_tls)?;
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(BOUND),
            create: Some(BOUND),
            recycle: Some(BOUND),
        };
        let pc = managed::PoolConfig {
            max_size: POOL_SIZE,
            timeouts,
            ..managed::PoolConfig::default()
        };
        let (pool, label) = match &settings.redis.topology {
            RedisTopology::Single => {
                let label = "Redis (CCSYNC_REDIS_URL)".to_string();
                let url = settings.redis_url.expose_secret();
                let client = match (&certs, url.starts_with("rediss:")) {
                    (Some(c), true) => Client::build_with_tls(url, c.clone()),
                    _ => Client::open(url),
                }
                .map_err(|e| unusable(&label, &e))?;
                let m = SingleManager {
                    client,
                    ping: AtomicUsize::new(0),
                };
                (Pools::Single(build(m, pc, &label)?), label)
            }
            RedisTopology::Cluster(nodes) => {
                let label = "Redis Cluster (CCSYNC_REDIS__CLUSTER_NODES)".to_string();
                let urls: Vec<&str> = nodes.iter().map(|n| n.expose_secret()).collect();
                let mut b =
                    ::redis::cluster::ClusterClientBuilder::new(urls).connection_timeout(BOUND);
                if let Some(c) = &certs {
                    b = b.certs(c.clone());
                }
                let client = b.build().map_err(|e| unusable(&label, &e))?;
                let m = ClusterManager {
                    client,
                    ping: AtomicUsize::new(0),
                };
                (Pools::Cluster(build(m, pc, &label)?), label)
            }
            RedisTopology::Sentinel { sentinels, master } => {
                let label = format!(
                    "Redis Sentinel (CCSYNC_REDIS__SENTINELS, master '{master}' with CCSYNC_REDIS_URL's credentials)"
                );
                let client =
                    sentinel_client(sentinels, master, &settings.redis_url, certs.as_ref())
                        .map_err(|e| unusable(&label, &e))?;
                let m = SentinelManager {
                    client: tokio::sync::Mutex::new(client),
                };
                (Pools::Sentinel(build(m, pc, &label)?), label)
            }
        };
        Ok(Redis { pool, label })
    }

    /// A connection from the pool (connecting when none is idle).
    pub(crate) async fn get(&self) -> Result<Conn, RedisConnError> {
        let r = match &self.pool {
            Pools::Single(p) => p.get().await.map(Conn::Single),
            Pools::Cluster(p) => p.get().await.map(Conn::Cluster),
            Pools::Sentinel(p) => p.get().await.map(Conn::Sentinel),
        };
        r.map_err(|e| match e {
            managed::PoolError::Backend(e) => self.explain(&e.to_string()),
            managed::PoolError::Timeout(_) => self.explain(&format!(
                "no connection within {} s (is Redis up and reachable?)",
                BOUND.as_secs()
            )),
            other => self.explain(&other.to_string()),
        })
    }

    /// Connect and `PING` once: the start-up check that makes a wrong URL, password or CA stop
    /// the program with one line naming the connection.
    pub async fn check(&self) -> Result<(), RedisConnError> {
        let mut c = self.get().await?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| self.explain(&e.to_string()))
    }

    /// Whether keys are spread over a cluster's nodes (a script's keys must then share a slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.pool, Pools::Cluster(_))
    }

    /// Every key matching `pattern` (`SCAN` with `MATCH`, on every master of a cluster), so a
    /// large Redis is never blocked by `KEYS`.
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, RedisConnError> {
        self.scan(pattern, false).await.map(|(keys, _)| keys)
    }

    /// Delete every key matching `pattern` page by page (`SCAN` + `UNLINK`, on every master of
    /// a cluster), so Redis keeps answering other clients meanwhile. Returns how many went.
    pub async fn unlink_matching(&self, pattern: &str) -> Result<u64, RedisConnError> {
        self.scan(pattern, true).await.map(|(_, gone)| gone)
    }

    async fn scan(
        &self,
        pattern: &str,
        unlink: bool,
    ) -> Result<(Vec<String>, u64), RedisConnError> {
        let err = |e: RedisError| self.explain(&e.to_string());
        let mut c = self.get().await?;
        let nodes: Vec<Option<(String, u16)>> = match &mut c {
            Conn::Cluster(cc) => masters(cc)
                .await
                .map_err(err)?
                .into_iter()
                .map(Some)
                .collect(),
            _ => vec![None],
        };
        let (mut found, mut gone) = (Vec::new(), 0u64);
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = ::redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<String>) = match (&node, &mut c) {
                    (Some((host, port)), Conn::Cluster(cc)) => {
                        let route = SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        };
                        let v = cc
                            .route_command(cmd, RoutingInfo::SingleNode(route))
                            .await
                            .map_err(err)?;
                        ::redis::from_redis_value(v).map_err(|e| self.explain(&e.to_string()))?
                    }
                    _ => cmd.query_async(&mut c).await.map_err(err)?,
                };
                if unlink && !keys.is_empty() {
                    // On a cluster the client splits a multi-key UNLINK by slot and sums the
                    // replies.
                    gone += ::redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async::<u64>(&mut c)
                        .await
                        .map_err(err)?;
                } else {
                    found.extend(keys);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok((found, gone))
    }

    /// An error line naming this connection, with what to check for the usual causes.
    fn explain(&self, e: &str) -> RedisConnError {
        let hint = if e.contains("certificate") || e.contains("UnknownIssuer") {
            "; the server's certificate is not signed by the CA in CCSYNC_REDIS_CA_FILE (or, unset, the platform's roots): point it at the CA that signed it"
        } else if e.contains("NOAUTH") || e.contains("WRONGPASS") || e.contains("AUTH") {
            "; check the user and password in the URL"
        } else {
            ""
        };
        RedisConnError(format!("{}: {e}{hint}", self.label))
    }
}

/// The `host:port` of every master of the cluster (`CLUSTER NODES`).
async fn masters(c: &mut ClusterConnection) -> Result<Vec<(String, u16)>, RedisError> {
    let text: String = ::redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !f[2].split(',').any(|x| x == "master") || f[2].contains("fail") {
            continue;
        }
        // ip:port@cport[,hostname]
        let addr = f[1].split('@').next().unwrap_or_default();
        if let Some((host, port)) = addr.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            out.push((host.to_string(), port));
        }
    }
    Ok(out)
}

fn build<M: managed::Manager>(
    m: M,
    pc: managed::PoolConfig,
    label: &str,
) -> Result<Pool<M>, RedisConnError> {
    Pool::builder(m)
        .config(pc)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| RedisConnError(format!("{label}: cannot build the pool: {e}")))
}

/// A configuration the client library refuses. The library's message never carries the URL's
/// password (it names what is wrong, not the value).
fn unusable(label: &str, e: &RedisError) -> RedisConnError {
    RedisConnError(format!("{label}: not usable: {e}"))
}
