//! The host's configuration: one typed struct, validated at start-up.

use crate::registry::{ConsulConfig, RegistryConfig};
use conclave_proto::link::LinkAddr;
use conclave_proto::NodeId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown fields.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: toml::de::Error,
    },
    /// A field has a value that cannot work.
    #[error("config field `{field}`: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    node_id: NodeId,
    link: LinkAddr,
    nats_urls: Vec<String>,
    nats_ca_file: Option<PathBuf>,
    nats_nkey_file: Option<PathBuf>,
    #[serde(default = "default_nats_replicas")]
    nats_replicas: usize,
    store_dir: PathBuf,
    http_addr: SocketAddr,
    #[serde(default = "default_heartbeat_ms")]
    heartbeat_ms: u64,
    #[serde(default = "default_ready_ttl_ms")]
    ready_ttl_ms: u64,
    #[serde(default = "default_sign_deadline_ms")]
    sign_deadline_ms: u64,
    #[serde(default = "default_round_timeout_ms")]
    round_timeout_ms: u64,
    #[serde(default = "default_presign_pool")]
    presign_pool: u32,
    #[serde(default)]
    presign_pools: std::collections::BTreeMap<conclave_proto::WalletId, u32>,
    #[serde(default)]
    presign_paths: std::collections::BTreeMap<conclave_proto::WalletId, Vec<String>>,
    #[serde(default)]
    registry: RegistryKind,
    consul: Option<ConsulConfig>,
    #[serde(default = "default_imds_addr")]
    imds_addr: SocketAddr,
}

/// The EC2 instance metadata service.
fn default_imds_addr() -> SocketAddr {
    SocketAddr::from(([169, 254, 169, 254], 80))
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum RegistryKind {
    #[default]
    Nats,
    Consul,
}

fn default_nats_replicas() -> usize {
    1
}

fn default_presign_pool() -> u32 {
    4
}

fn default_sign_deadline_ms() -> u64 {
    60_000
}

fn default_round_timeout_ms() -> u64 {
    10_000
}

/// The longest a signing request may run (requests may ask for less).
pub const MAX_SIGN_DEADLINE_MS: u64 = 300_000;

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_ready_ttl_ms() -> u64 {
    5000
}

/// Validated host configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node.
    pub node_id: NodeId,
    /// The enclave's link address.
    pub link: LinkAddr,
    /// NATS servers.
    pub nats_urls: Vec<String>,
    /// The CA of the NATS servers' certificates (TLS required when set).
    pub nats_ca_file: Option<PathBuf>,
    /// This node's NATS user (nkey seed).
    pub nats_nkey_file: Option<PathBuf>,
    /// Copies JetStream keeps of each stream and bucket (1, or 3 or 5 on a
    /// NATS cluster, so that losing a server loses nothing).
    pub nats_replicas: usize,
    /// Where sealed blobs are kept.
    pub store_dir: PathBuf,
    /// Health and metrics.
    pub http_addr: SocketAddr,
    /// Readiness heartbeat period.
    pub heartbeat: Duration,
    /// How long a heartbeat counts.
    pub ready_ttl: Duration,
    /// A signing request's deadline when it asks for none.
    pub sign_deadline: Duration,
    /// How long a signer waits for a silent peer before it blames it.
    pub round_timeout: Duration,
    /// Unused presignatures to keep per pool, by wallet (as the signers',
    /// which bound what they make); 0: keep none.
    pub presign_pools: conclave_proto::presign::PoolSizes,
    /// Where members, readiness, wallets and fencing records live.
    pub registry: RegistryConfig,
    /// Where the instance role's credentials come from (nitro mode: the
    /// enclave signs its KMS calls with them).
    pub imds_addr: SocketAddr,
}

impl HostConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let raw: Raw = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        if raw.nats_urls.is_empty() {
            return Err(ConfigError::Field { field: "nats_urls", reason: "at least one server is required".into() });
        }
        if ![1, 3, 5].contains(&raw.nats_replicas) {
            return Err(ConfigError::Field { field: "nats_replicas", reason: "must be 1, 3 or 5".into() });
        }
        if raw.heartbeat_ms == 0 || raw.ready_ttl_ms < 2 * raw.heartbeat_ms {
            return Err(ConfigError::Field {
                field: "ready_ttl_ms",
                reason: "must be at least twice heartbeat_ms, so one late heartbeat does not drop readiness".into(),
            });
        }
        if raw.sign_deadline_ms < 1_000 || raw.sign_deadline_ms > MAX_SIGN_DEADLINE_MS {
            return Err(ConfigError::Field { field: "sign_deadline_ms", reason: format!("must be 1000 to {MAX_SIGN_DEADLINE_MS}") });
        }
        if raw.round_timeout_ms < 500 || raw.round_timeout_ms >= raw.sign_deadline_ms {
            return Err(ConfigError::Field {
                field: "round_timeout_ms",
                reason: "must be at least 500 and below sign_deadline_ms, so a failed attempt leaves time for another".into(),
            });
        }
        let registry = match (raw.registry, raw.consul) {
            (RegistryKind::Nats, None) => RegistryConfig::Nats,
            (RegistryKind::Consul, Some(consul)) => {
                consul.validate().map_err(|reason| ConfigError::Field { field: "consul", reason })?;
                RegistryConfig::Consul(consul)
            }
            (RegistryKind::Consul, None) => {
                return Err(ConfigError::Field { field: "consul", reason: "registry = \"consul\" needs a [consul] section".into() })
            }
            // Settings that do nothing would mislead whoever reads the file.
            (RegistryKind::Nats, Some(_)) => {
                return Err(ConfigError::Field { field: "consul", reason: "a [consul] section is used only with registry = \"consul\"".into() })
            }
        };
        Ok(HostConfig {
            registry,
            imds_addr: raw.imds_addr,
            node_id: raw.node_id,
            link: raw.link,
            nats_urls: raw.nats_urls,
            nats_ca_file: raw.nats_ca_file,
            nats_nkey_file: raw.nats_nkey_file,
            nats_replicas: raw.nats_replicas,
            store_dir: raw.store_dir,
            http_addr: raw.http_addr,
            heartbeat: Duration::from_millis(raw.heartbeat_ms),
            ready_ttl: Duration::from_millis(raw.ready_ttl_ms),
            sign_deadline: Duration::from_millis(raw.sign_deadline_ms),
            presign_pools: conclave_proto::presign::PoolSizes::new(raw.presign_pool, raw.presign_pools)
                .and_then(|sizes| sizes.with_paths(raw.presign_paths))
                .map_err(|e| ConfigError::Field { field: "presign_pool", reason: e.to_string() })?,
            round_timeout: Duration::from_millis(raw.round_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/host.toml");
        let config = HostConfig::load(&example).unwrap();
        assert_eq!(config.nats_replicas, 3);
        assert_eq!(config.round_timeout, Duration::from_secs(10));
        assert_eq!(config.nats_nkey_file.as_deref(), Some(Path::new("/etc/conclave/nats.nk")));
        assert!(matches!(config.registry, RegistryConfig::Nats));
    }

    #[test]
    fn a_consul_registry_needs_its_section_and_a_sane_prefix() {
        let d = tempfile::tempdir().unwrap();
        let base = "node_id = \"node-1\"\nlink = \"unix:/tmp/x.sock\"\nnats_urls = [\"nats://127.0.0.1:4222\"]\nstore_dir = \"/tmp\"\nhttp_addr = \"127.0.0.1:9100\"\n";
        let load = |extra: &str| {
            let p = d.path().join("host.toml");
            std::fs::write(&p, format!("{base}{extra}")).unwrap();
            HostConfig::load(&p)
        };
        let field = |extra: &str| match load(extra) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("{extra}: {other:?}"),
        };
        assert_eq!(field("registry = \"consul\"\n"), "consul");
        assert_eq!(field("[consul]\naddress = \"http://127.0.0.1:8500\"\n"), "consul", "a section without registry = consul misleads");
        assert_eq!(field("registry = \"consul\"\n[consul]\naddress = \"http://127.0.0.1:8500\"\nprefix = \"a//b\"\n"), "consul");
        let ok = load("registry = \"consul\"\n[consul]\naddress = \"http://127.0.0.1:8500\"\n").unwrap();
        match ok.registry {
            RegistryConfig::Consul(c) => {
                assert_eq!((c.prefix.as_str(), c.wait_s), ("conclave", 15))
            }
            RegistryConfig::Nats => panic!("consul expected"),
        }
    }
}
