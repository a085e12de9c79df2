//! The enclave's configuration: one typed struct, loaded and validated at
//! start-up, with errors that name the field.

use crate::hsm::{HsmConfig, PinSource};
use crate::nitro::{NitroConfig, RawNitro};
use conclave_proto::link::{LinkAddr, Mode, NodeIdentity};
use conclave_proto::NodeId;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is not valid or has unknown fields.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: toml::de::Error,
    },
    /// The roster JSON is not valid.
    #[error("cannot parse roster {path}: {source}")]
    Roster {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: serde_json::Error,
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
struct RawConfig {
    node_id: NodeId,
    mode: Mode,
    link: LinkAddr,
    state_dir: PathBuf,
    roster: PathBuf,
    initiators: Vec<String>,
    #[serde(default = "default_max_request_age_secs")]
    max_request_age_secs: u64,
    #[serde(default = "default_presign_pool")]
    presign_pool: u32,
    #[serde(default)]
    presign_pools: std::collections::BTreeMap<conclave_proto::WalletId, u32>,
    #[serde(default)]
    presign_paths: std::collections::BTreeMap<conclave_proto::WalletId, Vec<String>>,
    heavy_sessions: Option<usize>,
    admins: Option<RawAdmins>,
    hsm: Option<RawHsm>,
    nitro: Option<RawNitro>,
    dev_attestation_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmins {
    threshold: u16,
    keys: Vec<String>,
}

impl RawAdmins {
    fn validate(self) -> Result<AdminQuorum, ConfigError> {
        let keys = self.keys.iter().map(|k| ed25519_key("admins.keys", k)).collect::<Result<Vec<_>, _>>()?;
        let distinct: std::collections::BTreeSet<_> = keys.iter().map(|k| k.to_bytes()).collect();
        if keys.is_empty() || keys.len() > conclave_proto::policy::MAX_LIST || distinct.len() != keys.len() {
            return Err(ConfigError::Field { field: "admins.keys", reason: format!("1 to {} distinct keys", conclave_proto::policy::MAX_LIST) });
        }
        if self.threshold == 0 || usize::from(self.threshold) > keys.len() {
            return Err(ConfigError::Field { field: "admins.threshold", reason: format!("{} of {} admins", self.threshold, keys.len()) });
        }
        Ok(AdminQuorum { threshold: self.threshold, keys })
    }
}

/// The admins whose signatures set a policy: any `threshold` of `keys`.
#[derive(Debug, Clone)]
pub struct AdminQuorum {
    /// How many must sign.
    pub threshold: u16,
    /// Who may.
    pub keys: Vec<ed25519_dalek::VerifyingKey>,
}

fn ed25519_key(field: &'static str, hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, ConfigError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes)
        .ok()
        .and_then(|_| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| ConfigError::Field { field, reason: format!("{hex_key:?} is not a hex Ed25519 public key") })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsm {
    module: PathBuf,
    token_label: String,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    #[serde(default = "default_seal_key_label")]
    seal_key_label: String,
    #[serde(default = "default_identity_key_label")]
    identity_key_label: String,
}

fn default_seal_key_label() -> String {
    "conclave-seal-1".into()
}

fn default_identity_key_label() -> String {
    "conclave-identity".into()
}

/// PKCS#11 labels are at most 32 bytes for tokens; keep key labels as short.
const MAX_LABEL_BYTES: usize = 32;

fn label(field: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || value.len() > MAX_LABEL_BYTES || value.trim() != value {
        return Err(ConfigError::Field { field, reason: format!("{value:?} must be 1 to 32 bytes without surrounding spaces") });
    }
    Ok(value)
}

impl RawHsm {
    fn validate(self) -> Result<HsmConfig, ConfigError> {
        let pin = match (self.pin_file, self.pin_env) {
            (Some(path), None) => PinSource::File(path),
            (None, Some(var)) if !var.is_empty() => PinSource::Env(var),
            _ => {
                return Err(ConfigError::Field {
                    field: "hsm.pin_file",
                    reason: "give exactly one of `pin_file` and `pin_env` (the PIN never goes in this file or on the command line)".into(),
                })
            }
        };
        Ok(HsmConfig {
            module: self.module,
            token_label: label("hsm.token_label", self.token_label)?,
            pin,
            seal_key_label: label("hsm.seal_key_label", self.seal_key_label)?,
            identity_key_label: label("hsm.identity_key_label", self.identity_key_label)?,
        })
    }
}

fn default_max_request_age_secs() -> u64 {
    300
}

fn default_presign_pool() -> u32 {
    4
}

/// Validated enclave configuration.
#[derive(Debug, Clone)]
pub struct EnclaveConfig {
    /// This node.
    pub node_id: NodeId,
    /// How shares are sealed.
    pub mode: Mode,
    /// Where the link listens.
    pub link: LinkAddr,
    /// Where this node's own secrets live (dev mode).
    pub state_dir: PathBuf,
    /// The file listing the peers this enclave trusts.
    pub roster: PathBuf,
    /// Ed25519 keys whose signatures authorise requests.
    pub initiators: Vec<ed25519_dalek::VerifyingKey>,
    /// Requests issued longer ago than this are refused.
    pub max_request_age: Duration,
    /// Unused presignatures (EdDSA: nonce pairs) this signer keeps per
    /// pool (wallet key version and signer set, root key), by wallet; 0
    /// makes none, so every signature runs the full protocol.
    pub presign_pools: conclave_proto::presign::PoolSizes,
    /// Heavy sessions (ECDSA signing, presigning, aux info) this signer
    /// runs at once; the others wait for their turn, first planned first.
    /// Default: twice the cores it has.
    pub heavy_sessions: usize,
    /// The admin quorum that sets policies (none: policies cannot be set,
    /// and every authorised request signs).
    pub admins: Option<AdminQuorum>,
    /// The token, in `hsm` mode.
    pub hsm: Option<HsmConfig>,
    /// KMS and peer attestation, in `nitro` mode.
    pub nitro: Option<NitroConfig>,
    /// Dev mode: the dev cluster's CA file, with which a simulated NSM
    /// signs this node's attestation documents (none: no attestation).
    pub dev_attestation_ca: Option<PathBuf>,
}

impl EnclaveConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        let field = |field, reason: &str| ConfigError::Field { field, reason: reason.into() };
        let (hsm, nitro) = match (raw.mode, raw.hsm, raw.nitro) {
            (Mode::Hsm, Some(hsm), None) => (Some(hsm.validate()?), None),
            (Mode::Hsm, None, _) => return Err(field("hsm", "mode `hsm` needs an [hsm] section")),
            (Mode::Nitro, None, Some(nitro)) => {
                if !matches!(raw.link, LinkAddr::Vsock { .. }) {
                    return Err(field("link", "mode `nitro` listens on vsock:CID:PORT"));
                }
                (None, Some(nitro.validate().map_err(|reason| ConfigError::Field { field: "nitro", reason })?))
            }
            (Mode::Nitro, _, None) => return Err(field("nitro", "mode `nitro` needs a [nitro] section")),
            (Mode::Dev, None, None) => (None, None),
            (_, Some(_), _) => return Err(field("hsm", "an [hsm] section is only for mode `hsm`")),
            (_, _, Some(_)) => return Err(field("nitro", "a [nitro] section is only for mode `nitro`")),
        };
        // vsock is the transport between a Nitro Enclave and its parent;
        // elsewhere the signer and its host share a machine.
        if raw.mode != Mode::Nitro && matches!(raw.link, LinkAddr::Vsock { .. }) {
            return Err(field("link", "vsock links are for mode `nitro`; use unix:/path"));
        }
        if raw.dev_attestation_ca.is_some() && raw.mode != Mode::Dev {
            return Err(field("dev_attestation_ca", "a simulated NSM is for mode `dev` only"));
        }
        if raw.initiators.is_empty() {
            return Err(ConfigError::Field { field: "initiators", reason: "at least one initiator key is required".into() });
        }
        let initiators = raw.initiators.iter().map(|k| ed25519_key("initiators", k)).collect::<Result<_, _>>()?;
        let admins = raw.admins.map(RawAdmins::validate).transpose()?;
        if raw.max_request_age_secs == 0 || raw.max_request_age_secs > 24 * 3600 {
            return Err(ConfigError::Field { field: "max_request_age_secs", reason: "must be 1 to 86400".into() });
        }
        let presign_pools = conclave_proto::presign::PoolSizes::new(raw.presign_pool, raw.presign_pools)
            .and_then(|sizes| sizes.with_paths(raw.presign_paths))
            .map_err(|e| ConfigError::Field { field: "presign_pool", reason: e.to_string() })?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let heavy_sessions = raw.heavy_sessions.unwrap_or(2 * cores);
        if !(1..=1024).contains(&heavy_sessions) {
            return Err(field("heavy_sessions", "must be 1 to 1024"));
        }
        Ok(EnclaveConfig {
            node_id: raw.node_id,
            mode: raw.mode,
            link: raw.link,
            state_dir: raw.state_dir,
            roster: raw.roster,
            initiators,
            max_request_age: Duration::from_secs(raw.max_request_age_secs),
            presign_pools,
            heavy_sessions,
            admins,
            hsm,
            nitro,
            dev_attestation_ca: raw.dev_attestation_ca,
        })
    }

    /// Reads the roster: the identities of every node this enclave will run
    /// protocols with. It is configuration, not something the host tells us,
    /// so a hostile host cannot introduce a peer.
    pub fn load_roster(&self) -> Result<Vec<NodeIdentity>, ConfigError> {
        let text = std::fs::read(&self.roster).map_err(|source| ConfigError::Read { path: self.roster.clone(), source })?;
        let roster: Vec<NodeIdentity> = serde_json::from_slice(&text).map_err(|source| ConfigError::Roster { path: self.roster.clone(), source })?;
        let mut ids: Vec<_> = roster.iter().map(|n| &n.node_id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != roster.len() {
            return Err(ConfigError::Field { field: "roster", reason: "a node id appears twice".into() });
        }
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("enclave.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn errors_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let base = "node_id = \"node-1\"\nlink = \"unix:/tmp/x.sock\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\n";
        let e = EnclaveConfig::load(&write(d.path(), &format!("{base}mode = \"dev\"\ninitiators = [\"zz\"]\n"))).unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "initiators", .. }), "{e}");
        let e = EnclaveConfig::load(&write(d.path(), &format!("{base}mode = \"nitro\"\ninitiators = [\"{KEY}\"]\n"))).unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "nitro", .. }), "{e}");
        let e = EnclaveConfig::load(&write(d.path(), &format!("{base}mode = \"hsm\"\ninitiators = [\"{KEY}\"]\n"))).unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "hsm", .. }), "{e}");
        let e = EnclaveConfig::load(&write(d.path(), &format!("{base}mode = \"dev\"\ninitiators = [\"{KEY}\"]\nsurprise = 1\n"))).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let ok = EnclaveConfig::load(&write(d.path(), &format!("{base}mode = \"dev\"\ninitiators = [\"{KEY}\"]\n"))).unwrap();
        assert_eq!(ok.max_request_age, Duration::from_secs(300));
    }

    #[test]
    fn pool_sizes_default_and_per_wallet_within_bounds() {
        let d = tempfile::tempdir().unwrap();
        let base = format!(
            "node_id = \"node-1\"\nlink = \"unix:/tmp/x.sock\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\nmode = \"dev\"\ninitiators = [\"{KEY}\"]\n"
        );
        let load = |extra: &str| EnclaveConfig::load(&write(d.path(), &format!("{base}{extra}")));
        let wallet = |w: &str| conclave_proto::WalletId::new(w).unwrap();
        let ok = load("presign_pool = 2\n[presign_pools]\nhot = 16\ncold = 0\n").unwrap();
        assert_eq!([ok.presign_pools.of(&wallet("hot")), ok.presign_pools.of(&wallet("cold")), ok.presign_pools.of(&wallet("other"))], [16, 0, 2]);
        assert_eq!(load("").unwrap().presign_pools.of(&wallet("any")), 4, "default");
        let e = load("[presign_pools]\nhot = 5000\n").unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "presign_pool", .. }), "{e}");
        assert!(matches!(load("[presign_pools]\n\"a.b\" = 1\n").unwrap_err(), ConfigError::Parse { .. }), "a wallet id is checked");
    }

    #[test]
    fn an_admin_quorum_is_m_of_n_distinct_keys() {
        let d = tempfile::tempdir().unwrap();
        let base = format!(
            "node_id = \"node-1\"\nlink = \"unix:/tmp/x.sock\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\nmode = \"dev\"\ninitiators = [\"{KEY}\"]\n"
        );
        let load = |extra: &str| EnclaveConfig::load(&write(d.path(), &format!("{base}{extra}")));
        assert!(load("").unwrap().admins.is_none());
        let other = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let one = load(&format!("[admins]\nthreshold = 2\nkeys = [\"{KEY}\", \"{other}\"]\n")).unwrap().admins.unwrap();
        assert_eq!((one.threshold, one.keys.len()), (2, 2));
        for (bad, field) in [
            (format!("[admins]\nthreshold = 3\nkeys = [\"{KEY}\", \"{other}\"]\n"), "admins.threshold"),
            (format!("[admins]\nthreshold = 0\nkeys = [\"{KEY}\"]\n"), "admins.threshold"),
            (format!("[admins]\nthreshold = 1\nkeys = [\"{KEY}\", \"{KEY}\"]\n"), "admins.keys"),
            ("[admins]\nthreshold = 1\nkeys = [\"zz\"]\n".to_string(), "admins.keys"),
        ] {
            let e = load(&bad).unwrap_err();
            assert!(matches!(e, ConfigError::Field { field: f, .. } if f == field), "{bad}: {e}");
        }
    }

    #[test]
    fn hsm_section_needs_one_pin_source_and_sane_labels() {
        let d = tempfile::tempdir().unwrap();
        let base = format!(
            "node_id = \"node-1\"\nmode = \"hsm\"\nlink = \"unix:/tmp/x.sock\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\ninitiators = [\"{KEY}\"]\n[hsm]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n"
        );
        let load = |extra: &str| EnclaveConfig::load(&write(d.path(), &format!("{base}{extra}")));
        let e = load("token_label = \"t\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "hsm.pin_file", .. }), "{e}");
        let e = load("token_label = \"t\"\npin_file = \"/p\"\npin_env = \"P\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "hsm.pin_file", .. }), "{e}");
        let e = load("token_label = \"a-label-that-is-longer-than-32-bytes\"\npin_env = \"P\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "hsm.token_label", .. }), "{e}");
        let e = load("token_label = \"t\"\npin_env = \"P\"\npin = \"1234\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "a PIN in the file is refused: {e}");
        let ok = load("token_label = \"t\"\npin_env = \"P\"\n").unwrap().hsm.unwrap();
        assert_eq!(ok.pin, PinSource::Env("P".into()));
        assert_eq!(ok.seal_key_label, "conclave-seal-1");
    }

    #[test]
    fn nitro_section_needs_vsock_a_kms_key_and_the_image_pcrs() {
        let d = tempfile::tempdir().unwrap();
        let pcr = |b: &str| b.repeat(96);
        let load = |link: &str, nitro: &str| {
            let base = format!("node_id = \"node-1\"\nmode = \"nitro\"\nlink = \"{link}\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\ninitiators = [\"{KEY}\"]\n[nitro]\n");
            EnclaveConfig::load(&write(d.path(), &format!("{base}{nitro}")))
        };
        let good = format!("kms_key_id = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\nkms_region = \"eu-west-1\"\n[nitro.expected_pcrs]\n0 = [\"{}\"]\n1 = [\"{}\"]\n2 = [\"{}\", \"{}\"]\n", pcr("a"), pcr("b"), pcr("c"), pcr("d"));
        let ok = load("vsock:4294967295:5000", &good).unwrap().nitro.unwrap();
        assert_eq!(ok.expected_pcrs[&2].len(), 2, "a rolling upgrade lists two images");
        assert!(!ok.allow_debug_enclaves);
        assert_eq!(ok.kms_proxy, "vsock:3:8000".parse().unwrap(), "the parent's vsock-proxy by default");
        let own_image_only = load(
            "vsock:4294967295:5000",
            "kms_key_id = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\nkms_region = \"eu-west-1\"\n",
        )
        .unwrap()
        .nitro
        .unwrap();
        assert!(own_image_only.expected_pcrs.is_empty(), "no other image: only the node's own is admitted");
        let refused = |link: &str, nitro: &str, why: &str| {
            let e = load(link, nitro).unwrap_err();
            assert!(matches!(e, ConfigError::Field { .. }), "{why}: {e}");
        };
        refused("unix:/tmp/x.sock", &good, "nitro listens on vsock");
        for other in [
            "my key",
            "alias/conclave",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/conclave",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            refused(
                "vsock:4294967295:5000",
                &good.replace("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", other),
                "only the key's full ARN, in kms_region",
            );
        }
        refused("vsock:4294967295:5000", &good.replace(&format!("1 = [\"{}\"]\n", pcr("b")), ""), "PCR1 is required with 0 and 2");
        refused("vsock:4294967295:5000", &good.replace("eu-west-1", "EU West"), "a region name");
        let e = load("vsock:4294967295:5000", &good.replace("kms_region = \"eu-west-1\"\n", "")).unwrap_err();
        assert!(e.to_string().contains("kms_region"), "the region is required: {e}");
        refused("vsock:4294967295:5000", &good.replace(&pcr("b"), &pcr("0")), "all-zero PCRs are a debug enclave");
        refused("vsock:4294967295:5000", &good.replace(&pcr("b"), "abcd"), "PCRs are 48 bytes");
        refused("vsock:4294967295:5000", &format!("{good}5 = [\"{}\"]\n", pcr("e")), "PCR5 identifies nothing");
        let debug = good.replace(&pcr("b"), &pcr("0")).replace("kms_key_id", "allow_debug_enclaves = true\nkms_key_id");
        assert!(load("vsock:4294967295:5000", &debug).unwrap().nitro.unwrap().allow_debug_enclaves, "debug only when spelled out");
    }

    #[test]
    fn vsock_is_only_for_nitro() {
        let d = tempfile::tempdir().unwrap();
        let body = format!(
            "node_id = \"node-1\"\nmode = \"dev\"\nlink = \"vsock:16:5000\"\nstate_dir = \"/tmp\"\nroster = \"/tmp/r.json\"\ninitiators = [\"{KEY}\"]\n"
        );
        let e = EnclaveConfig::load(&write(d.path(), &body)).unwrap_err();
        assert!(matches!(e, ConfigError::Field { field: "link", .. }), "{e}");
    }

    #[test]
    fn the_documented_nitro_example_is_a_valid_configuration() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/enclave.nitro.toml");
        let config = EnclaveConfig::load(&example).unwrap();
        assert_eq!(config.mode, Mode::Nitro);
        assert!(config.nitro.expect("nitro section").expected_pcrs.contains_key(&8));
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/enclave.hsm.toml");
        let config = EnclaveConfig::load(&example).unwrap();
        let hsm = config.hsm.expect("the example is hsm mode");
        assert_eq!(hsm.pin, PinSource::File("/etc/conclave/hsm.pin".into()));
    }
}
