//! The client's configuration file.

use crate::ClientError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    nats_urls: Vec<String>,
    nats_ca_file: Option<PathBuf>,
    nats_nkey_file: Option<PathBuf>,
    dev_attestation_root: Option<PathBuf>,
    initiator_key: PathBuf,
    roster: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

/// Longer than the cluster's longest session (a keygen that also generates
/// a new committee's aux info: 600 s) plus its grace: the cluster always
/// answers, with a typed `timeout` at worst, before the client gives up.
fn default_timeout_ms() -> u64 {
    620_000
}

/// Validated client configuration.
pub struct ClientConfig {
    /// NATS servers.
    pub nats_urls: Vec<String>,
    /// The CA of the NATS servers' certificates (TLS required when set).
    pub nats_ca_file: Option<PathBuf>,
    /// The client's NATS user (nkey seed).
    pub nats_nkey_file: Option<PathBuf>,
    /// The root of a dev cluster's simulated NSM (`attest node --allow-dev`).
    pub dev_attestation_root: Option<PathBuf>,
    /// The initiator's signing key.
    pub initiator: ed25519_dalek::SigningKey,
    /// The signers' identity keys: only what they sign is believed.
    pub roster: crate::Roster,
    /// How long to wait for a result.
    pub timeout: Duration,
}

impl ClientConfig {
    /// Loads `path`; `initiator_key` is relative to the file's directory.
    pub fn load(path: &Path) -> Result<ClientConfig, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        let raw: Raw = toml::from_str(&text).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        if raw.nats_urls.is_empty() {
            return Err(ClientError::Config("`nats_urls` is empty".into()));
        }
        let key_path = path.parent().unwrap_or(Path::new(".")).join(&raw.initiator_key);
        let initiator = read_key(&key_path)?;
        // Like the initiator key, files are relative to the configuration's directory.
        let dir = path.parent().unwrap_or(Path::new("."));
        let roster = raw.roster.ok_or_else(|| {
            ClientError::Config(format!(
                "{}: `roster` is not set: the client believes only what the signers sign, and pins their keys from the roster file they run with",
                path.display()
            ))
        })?;
        let roster = crate::Roster::load(&dir.join(roster))?;
        Ok(ClientConfig {
            nats_urls: raw.nats_urls,
            nats_ca_file: raw.nats_ca_file.map(|f| dir.join(f)),
            nats_nkey_file: raw.nats_nkey_file.map(|f| dir.join(f)),
            dev_attestation_root: raw.dev_attestation_root.map(|f| dir.join(f)),
            initiator,
            roster,
            timeout: Duration::from_millis(raw.timeout_ms),
        })
    }

    /// Finds the configuration: `explicit`, else `$CONCLAVE_CONFIG`, else
    /// `./.conclave/client.toml`.
    pub fn discover(explicit: Option<&Path>) -> Result<ClientConfig, ClientError> {
        if let Some(p) = explicit {
            return Self::load(p);
        }
        if let Some(p) = std::env::var_os("CONCLAVE_CONFIG") {
            return Self::load(Path::new(&p));
        }
        let local = Path::new(".conclave/client.toml");
        if local.exists() {
            return Self::load(local);
        }
        Err(ClientError::Config(
            "no configuration: tried --config, $CONCLAVE_CONFIG and ./.conclave/client.toml (start a local cluster with deploy/local/cluster.sh up)".into(),
        ))
    }
}

/// Reads a hex Ed25519 seed.
pub fn read_key(path: &Path) -> Result<ed25519_dalek::SigningKey, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config(format!("initiator key {}: {e}", path.display())))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| ClientError::Config(format!("initiator key {}: expected 64 hex digits", path.display())))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Creates a new initiator key file (refusing to overwrite one) and returns
/// the public key.
pub fn new_key(path: &Path) -> Result<ed25519_dalek::VerifyingKey, ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    f.write_all(hex::encode(key.to_bytes()).as_bytes()).map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_is_relative_to_the_config_file() {
        let d = tempfile::tempdir().unwrap();
        let public = new_key(&d.path().join("init.key")).unwrap();
        let config = "nats_urls = [\"nats://127.0.0.1:1\"]\ninitiator_key = \"init.key\"\n";
        std::fs::write(d.path().join("c.toml"), config).unwrap();
        assert!(matches!(ClientConfig::load(&d.path().join("c.toml")), Err(ClientError::Config(m)) if m.contains("`roster` is not set")));
        let roster = format!(r#"[{{"node_id":"node-1","mode":"dev","sign_key":"{}","kx_key":"{}"}}]"#, hex::encode(public.to_bytes()), "00".repeat(32));
        std::fs::write(d.path().join("roster.json"), roster).unwrap();
        std::fs::write(d.path().join("c.toml"), format!("{config}roster = \"roster.json\"\n")).unwrap();
        let c = ClientConfig::load(&d.path().join("c.toml")).unwrap();
        assert_eq!(c.initiator.verifying_key(), public);
        assert_eq!(c.roster.nodes().map(|n| n.as_str()).collect::<Vec<_>>(), ["node-1"]);
        assert!(new_key(&d.path().join("init.key")).is_err(), "an existing key is never overwritten");
    }
}
