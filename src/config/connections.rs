//! Where the broker and Redis are: TLS files, Redis topologies, and URL masking.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::load::{secret_like, string_like};
use super::{ConfigError, invalid};

/// `[redis]` as written; validated into [`RedisSettings`].
#[derive(Debug, Deserialize)]
pub(super) struct RawRedis {
    #[serde(deserialize_with = "string_like")]
    pub(super) key_prefix: String,
    #[serde(default, deserialize_with = "secret_like")]
    pub(super) cluster_nodes: SecretString,
    #[serde(default, deserialize_with = "secret_like")]
    pub(super) sentinels: SecretString,
    #[serde(default, deserialize_with = "string_like")]
    pub(super) sentinel_master: String,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Prefix of every Redis key ccsync writes; lets tests (and several deployments) share one Redis.
    pub key_prefix: String,
    /// One server, a cluster, or a master found through Sentinel.
    pub topology: RedisTopology,
}

/// Where Redis is (`[redis]`): every Redis user goes through `crate::redis`, which opens the
/// connections this names.
#[derive(Clone)]
pub enum RedisTopology {
    /// `CCSYNC_REDIS_URL` alone.
    Single,
    /// `CCSYNC_REDIS__CLUSTER_NODES`: seed nodes of a Redis Cluster (redis:// or rediss://; the
    /// first one's user and password are used for every node).
    Cluster(Vec<SecretString>),
    /// `CCSYNC_REDIS__SENTINELS` + `CCSYNC_REDIS__SENTINEL_MASTER`: the sentinels to ask, and the
    /// master's name. The master itself is reached with `CCSYNC_REDIS_URL`'s scheme (rediss://
    /// for TLS), user, password and database; its host and port are Sentinel's answer.
    Sentinel {
        sentinels: Vec<SecretString>,
        master: String,
    },
}

impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &[SecretString]| -> Vec<String> { v.iter().map(mask_url).collect() };
        match self {
            RedisTopology::Single => f.write_str("Single (CCSYNC_REDIS_URL)"),
            RedisTopology::Cluster(nodes) => {
                f.debug_tuple("Cluster").field(&masked(nodes)).finish()
            }
            RedisTopology::Sentinel { sentinels, master } => f
                .debug_struct("Sentinel")
                .field("sentinels", &masked(sentinels))
                .field("master", master)
                .finish(),
        }
    }
}

/// PEM files for one TLS connection (`CCSYNC_<AMQP|REDIS>_CA_FILE`, `..._CLIENT_CERT_FILE`,
/// `..._CLIENT_KEY_FILE`). Checked at load: each names a readable file of the right kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA (one or more PEM certificates) that signed the server's certificate; `None`: the
    /// platform's root store (a public CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for servers that ask for one (mutual TLS); both or none.
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
}

impl TlsFiles {
    pub(crate) fn is_empty(&self) -> bool {
        self == &TlsFiles::default()
    }
}

/// The broker as the product reaches it: URL and TLS files (`crate::queue::Broker::connect`).
#[derive(Debug, Clone)]
pub struct AmqpEndpoint {
    pub url: SecretString,
    pub tls: TlsFiles,
}

impl AmqpEndpoint {
    /// A URL without TLS files (amqp://, or amqps:// to a broker with a public certificate).
    pub fn plain(url: SecretString) -> AmqpEndpoint {
        AmqpEndpoint {
            url,
            tls: TlsFiles::default(),
        }
    }
}

/// A URL with its password masked (anything unparsable is masked whole).
pub(super) fn mask_url(s: &SecretString) -> String {
    match url::Url::parse(s.expose_secret()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.to_string()
        }
        Err(_) => "[REDACTED]".into(),
    }
}

/// `CCSYNC_<conn>_CA_FILE`, `..._CLIENT_CERT_FILE`, `..._CLIENT_KEY_FILE`: each empty or a
/// readable PEM file of its kind; the client pair both or neither.
pub(super) fn tls_files(
    conn: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<TlsFiles, ConfigError> {
    let pem = |name: &str, path: &str, what: &str, marker: &str| {
        let path = path.trim();
        if path.is_empty() {
            return Ok(None);
        }
        let key = format!("CCSYNC_{conn}_{name}");
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&key, format!("cannot read {path}: {e}")))?;
        if !text.contains("-----BEGIN ") || !text.contains(marker) {
            return Err(invalid(&key, format!("{path} holds no PEM {what}")));
        }
        Ok(Some(std::path::PathBuf::from(path)))
    };
    let files = TlsFiles {
        ca_file: pem("CA_FILE", ca, "certificate", "CERTIFICATE-----")?,
        client_cert_file: pem("CLIENT_CERT_FILE", cert, "certificate", "CERTIFICATE-----")?,
        client_key_file: pem("CLIENT_KEY_FILE", key, "private key", "PRIVATE KEY-----")?,
    };
    match (&files.client_cert_file, &files.client_key_file) {
        (Some(_), None) => Err(invalid(
            &format!("CCSYNC_{conn}_CLIENT_KEY_FILE"),
            format!(
                "must be set with CCSYNC_{conn}_CLIENT_CERT_FILE (the client certificate's key)"
            ),
        )),
        (None, Some(_)) => Err(invalid(
            &format!("CCSYNC_{conn}_CLIENT_CERT_FILE"),
            format!("must be set with CCSYNC_{conn}_CLIENT_KEY_FILE (the key's certificate)"),
        )),
        _ => Ok(files),
    }
}

/// Comma-separated redis:// or rediss:// URLs.
pub(super) fn redis_urls(key: &str, list: &SecretString) -> Result<Vec<SecretString>, ConfigError> {
    list.expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let parsed = url::Url::parse(u).map_err(|_| {
                invalid(key, "holds an entry that is not a URL (redis://host:port)")
            })?;
            if !["redis", "rediss"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
                return Err(invalid(
                    key,
                    format!(
                        "entries must be redis://host:port or rediss://host:port, not {}://",
                        parsed.scheme()
                    ),
                ));
            }
            Ok(SecretString::from(u.to_string()))
        })
        .collect()
}

pub(super) fn validate_redis(
    raw: RawRedis,
    redis_url: &SecretString,
    tls: &TlsFiles,
) -> Result<RedisSettings, ConfigError> {
    let nodes = redis_urls("CCSYNC_REDIS__CLUSTER_NODES", &raw.cluster_nodes)?;
    let sentinels = redis_urls("CCSYNC_REDIS__SENTINELS", &raw.sentinels)?;
    let master = raw.sentinel_master.trim().to_string();
    let topology = match (nodes.is_empty(), sentinels.is_empty()) {
        (false, false) => {
            return Err(invalid(
                "CCSYNC_REDIS__SENTINELS",
                "set either CCSYNC_REDIS__CLUSTER_NODES (Redis Cluster) or CCSYNC_REDIS__SENTINELS (Sentinel), not both",
            ));
        }
        (false, true) => {
            if !master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINEL_MASTER",
                    "is only used with CCSYNC_REDIS__SENTINELS, not with CCSYNC_REDIS__CLUSTER_NODES",
                ));
            }
            RedisTopology::Cluster(nodes)
        }
        (true, false) => {
            if master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINEL_MASTER",
                    "must name the master the sentinels watch (as in `sentinel monitor <name> ...`)",
                ));
            }
            RedisTopology::Sentinel { sentinels, master }
        }
        (true, true) => {
            if !master.is_empty() {
                return Err(invalid(
                    "CCSYNC_REDIS__SENTINELS",
                    "must list the sentinels (redis://host:26379,...) when CCSYNC_REDIS__SENTINEL_MASTER is set",
                ));
            }
            RedisTopology::Single
        }
    };
    let tls_urls: Vec<&SecretString> = match &topology {
        RedisTopology::Cluster(n) => n.iter().collect(),
        RedisTopology::Sentinel { sentinels, .. } => {
            sentinels.iter().chain(std::iter::once(redis_url)).collect()
        }
        RedisTopology::Single => vec![redis_url],
    };
    if !tls.is_empty()
        && !tls_urls
            .iter()
            .any(|u| u.expose_secret().starts_with("rediss:"))
    {
        return Err(invalid(
            "CCSYNC_REDIS_CA_FILE",
            "TLS files are set but no Redis URL in use is rediss:// (use rediss:// or unset them)",
        ));
    }
    Ok(RedisSettings {
        key_prefix: raw.key_prefix,
        topology,
    })
}
