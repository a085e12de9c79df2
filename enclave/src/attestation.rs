//! Attestation: the documents this signer produces about itself, and the
//! checks it makes before it admits a peer.
//!
//! In nitro mode documents come from the Nitro Security Module
//! (`/dev/nsm`, crate `aws-nitro-enclaves-nsm-api`); in dev mode from a
//! simulated NSM whose dev CA no verifier trusts unless told to. Either way
//! a document's `user_data` binds the node's identity and channel keys
//! ([`NodeIdentity::attestation_binding`]) and carries the asker's nonce.

use conclave_attest::sim::SimulatedNsm;
use conclave_attest::{AttestError, Policy, TrustedRoot, Verified};
use conclave_proto::link::NodeIdentity;
use conclave_proto::NodeId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;
use std::time::{Duration, Instant};

/// Why no document could be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// `/dev/nsm` could not be opened: not inside a Nitro Enclave.
    #[error("no Nitro Security Module (/dev/nsm): run inside a Nitro Enclave")]
    NoDevice,
    /// The NSM refused the request.
    #[error("the NSM refused the attestation request: {0}")]
    Refused(String),
    /// The simulated NSM could not make a document.
    #[error("simulated NSM: {0}")]
    Simulated(String),
    /// The configured attestation root cannot be used.
    #[error("attestation root {path}: {reason}")]
    Root {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The dev cluster's CA file cannot be used.
    #[error("dev attestation CA {path}: {reason}")]
    DevCa {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// A dev node's simulated NSM under its cluster's CA. Its "measurements"
/// are the SHA-384 of the running signer binary (PCR0) and of fixed labels
/// (PCR1, PCR2): nodes running the same build show the same values.
pub fn simulated(ca_file: &std::path::Path, node: &conclave_proto::NodeId) -> Result<Nsm, AttestationError> {
    use conclave_attest::sim::DevCa;
    use sha2::Digest;
    let fail = |reason: String| AttestationError::DevCa { path: ca_file.into(), reason };
    let text = std::fs::read_to_string(ca_file).map_err(|e| fail(e.to_string()))?;
    let ca = DevCa::from_file(&text).map_err(|e| fail(e.to_string()))?;
    let exe = std::env::current_exe().and_then(std::fs::read).map_err(|e| fail(format!("cannot measure the signer binary: {e}")))?;
    let pcrs = BTreeMap::from([
        (0u8, sha2::Sha384::digest(&exe).to_vec()),
        (1, sha2::Sha384::digest(b"conclave dev measurement: no kernel").to_vec()),
        (2, sha2::Sha384::digest(b"conclave dev measurement: no application image").to_vec()),
    ]);
    let nsm = SimulatedNsm::with_ca(format!("conclave-dev-{node}"), pcrs, ca).map_err(|e| fail(e.to_string()))?;
    let binds_foreign_keys = crate::fault::armed(crate::fault::Hook::AttestForeignKeys).is_some();
    Ok(Nsm::Simulated(Box::new(Simulated { nsm, binds_foreign_keys })))
}

/// Where this signer's documents come from.
pub enum Nsm {
    /// The Nitro Security Module.
    Nitro(NitroNsm),
    /// A simulated NSM (dev mode only; boxed: it carries its CA).
    Simulated(Box<Simulated>),
}

/// A dev node's simulated NSM.
pub struct Simulated {
    nsm: SimulatedNsm,
    /// Fault injection (`crate::fault::Hook::AttestForeignKeys`).
    binds_foreign_keys: bool,
}

/// An open `/dev/nsm`, and what this enclave requires of its peers.
pub struct NitroNsm {
    fd: i32,
    root: TrustedRoot,
    peer_pcrs: BTreeMap<u8, Vec<Vec<u8>>>,
    allow_debug: bool,
}

/// The PCRs that identify an image; PCR8 (its signing certificate) is
/// checked when the configuration lists it.
const IMAGE_PCRS: [u8; 3] = [0, 1, 2];

/// What a peer's PCRs may be: this enclave's own (the same image) or a
/// configured other image (a rolling upgrade).
fn admitted_pcrs(own: &BTreeMap<u8, Vec<u8>>, others: &BTreeMap<u8, Vec<[u8; 48]>>) -> BTreeMap<u8, Vec<Vec<u8>>> {
    own.iter()
        .map(|(index, value)| {
            let mut values = vec![value.clone()];
            values.extend(others.get(index).into_iter().flatten().map(|v| v.to_vec()).filter(|v| v != value));
            (*index, values)
        })
        .collect()
}

impl NitroNsm {
    /// Opens the NSM device and reads this enclave's own measurements.
    pub fn open(config: &crate::nitro::NitroConfig) -> Result<NitroNsm, AttestationError> {
        let root = match &config.root_ca_file {
            None => TrustedRoot::aws_nitro(),
            Some(path) => {
                let fail = |reason: String| AttestationError::Root { path: path.clone(), reason };
                TrustedRoot::from_pem(&std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?).map_err(|e| fail(e.to_string()))?
            }
        };
        let fd = aws_nitro_enclaves_nsm_api::driver::nsm_init();
        if fd < 0 {
            return Err(AttestationError::NoDevice);
        }
        let mut nsm = NitroNsm { fd, root, peer_pcrs: BTreeMap::new(), allow_debug: config.allow_debug_enclaves };
        let mut own = BTreeMap::new();
        for index in IMAGE_PCRS.into_iter().chain(config.expected_pcrs.contains_key(&8).then_some(8)) {
            own.insert(index, nsm.describe_pcr(index)?);
        }
        nsm.peer_pcrs = admitted_pcrs(&own, &config.expected_pcrs);
        Ok(nsm)
    }

    fn describe_pcr(&self, index: u8) -> Result<Vec<u8>, AttestationError> {
        use aws_nitro_enclaves_nsm_api::api::{Request, Response};
        match aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, Request::DescribePCR { index: index.into() }) {
            Response::DescribePCR { data, .. } => Ok(data),
            Response::Error(code) => Err(AttestationError::Refused(format!("{code:?}"))),
            other => Err(AttestationError::Refused(format!("unexpected answer {other:?}"))),
        }
    }

    fn attest(&self, user_data: Option<Vec<u8>>, nonce: Option<Vec<u8>>, public_key: Option<Vec<u8>>) -> Result<Vec<u8>, AttestationError> {
        use aws_nitro_enclaves_nsm_api::api::{Request, Response};
        use serde_bytes::ByteBuf;
        let request =
            Request::Attestation { user_data: user_data.map(ByteBuf::from), nonce: nonce.map(ByteBuf::from), public_key: public_key.map(ByteBuf::from) };
        match aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, request) {
            Response::Attestation { document } => Ok(document),
            Response::Error(code) => Err(AttestationError::Refused(format!("{code:?}"))),
            other => Err(AttestationError::Refused(format!("unexpected answer {other:?}"))),
        }
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        aws_nitro_enclaves_nsm_api::driver::nsm_exit(self.fd);
    }
}

impl Nsm {
    /// A document binding `identity`, answering `nonce`, and carrying
    /// `public_key` (the ephemeral key KMS encrypts to) if given.
    pub fn attest(&self, identity: &NodeIdentity, nonce: &[u8], public_key: Option<&[u8]>) -> Result<Vec<u8>, AttestationError> {
        let user_data = identity.attestation_binding();
        match self {
            Nsm::Nitro(nsm) => nsm.attest(Some(user_data), Some(nonce.to_vec()), public_key.map(<[u8]>::to_vec)),
            Nsm::Simulated(sim) => {
                let user_data = match crate::fault::ENABLED && sim.binds_foreign_keys {
                    true => NodeIdentity { sign_key: [0x5a; 32], ..identity.clone() }.attestation_binding(),
                    false => user_data,
                };
                sim.nsm.attest(Some(&user_data), Some(nonce), public_key).map_err(|e| AttestationError::Simulated(e.to_string()))
            }
        }
    }

    /// A document for KMS's Recipient flow: it carries the one-use RSA key
    /// KMS encrypts the data key to, and nothing else (it is made before
    /// the identity is unsealed).
    pub fn attest_for_kms(&self, public_key: &[u8]) -> Result<Vec<u8>, AttestationError> {
        match self {
            Nsm::Nitro(nsm) => nsm.attest(None, None, Some(public_key.to_vec())),
            Nsm::Simulated(sim) => sim.nsm.attest(None, None, Some(public_key)).map_err(|e| AttestationError::Simulated(e.to_string())),
        }
    }

    /// What this node requires of its peers' documents: in nitro mode the
    /// configured root (the AWS Nitro root by default) and its own PCRs or
    /// a configured other image's; in dev mode its own dev CA and its own
    /// measurements (the same build).
    pub fn admission(&self) -> Admission {
        let (root, pcrs, allow_debug) = match self {
            Nsm::Nitro(nsm) => (nsm.root.clone(), nsm.peer_pcrs.clone(), nsm.allow_debug),
            Nsm::Simulated(sim) => (sim.nsm.root().clone(), sim.nsm.pcrs().iter().map(|(i, m)| (*i, vec![m.clone()])).collect(), false),
        };
        Admission { root, pcrs, allow_debug, admitted: Mutex::default() }
    }
}

/// How long an admitted peer stays admitted before it is challenged again:
/// well within a document's leaf certificate (hours), so a node that is
/// replaced by another image is caught within this time.
const ADMISSION_TTL: Duration = Duration::from_secs(600);

/// What peers must show, and who showed it recently.
pub struct Admission {
    root: TrustedRoot,
    pcrs: BTreeMap<u8, Vec<Vec<u8>>>,
    allow_debug: bool,
    admitted: Mutex<HashMap<NodeId, Instant>>,
}

impl Admission {
    /// Whether `peer` passed within the admission TTL.
    pub fn is_admitted(&self, peer: &NodeId) -> bool {
        self.admitted.lock().expect("admission lock").get(peer).is_some_and(|at| at.elapsed() < ADMISSION_TTL)
    }

    /// Checks `document`, asked of `peer` with `nonce`, and remembers a
    /// pass; returns the peer's verified PCR0.
    pub fn check(&self, document: &[u8], peer: &NodeIdentity, nonce: &[u8]) -> Result<Vec<u8>, Refusal> {
        let verified = admit(document, peer, nonce, &self.root, &self.pcrs, self.allow_debug)?;
        self.admitted.lock().expect("admission lock").insert(peer.node_id.clone(), Instant::now());
        Ok(verified.pcrs.get(&0).cloned().unwrap_or_default())
    }
}

/// Why a peer is not admitted; [`Refusal::check`] names the failed check.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The document itself failed a check (signature, chain, expiry,
    /// debug mode, nonce, or its shape).
    #[error(transparent)]
    Document(#[from] AttestError),
    /// A PCR is not one of the values the configuration admits.
    #[error("PCR{index} {actual} is not an admitted value")]
    Pcr {
        /// The PCR.
        index: u8,
        /// What the document states (hex), or "missing".
        actual: String,
    },
    /// The document does not bind the identity the peer uses in the cluster.
    #[error("the document binds another identity than {node}'s")]
    Binding {
        /// The peer.
        node: String,
    },
}

impl Refusal {
    /// The failed check: `malformed`, `signature`, `chain`, `expired`,
    /// `debug`, `nonce`, `pcr` or `binding`.
    pub fn check(&self) -> &'static str {
        match self {
            Refusal::Document(e) => e.check(),
            Refusal::Pcr { .. } => "pcr",
            Refusal::Binding { .. } => "binding",
        }
    }
}

/// Decides whether `document`, asked of `peer` with `nonce`, admits it:
/// chain to `root`, valid now, the nonce, each listed PCR among its
/// admitted values, and a binding of exactly the identity `peer` has in
/// the roster.
pub fn admit(
    document: &[u8],
    peer: &NodeIdentity,
    nonce: &[u8],
    root: &TrustedRoot,
    pcrs: &BTreeMap<u8, Vec<Vec<u8>>>,
    allow_debug: bool,
) -> Result<Verified, Refusal> {
    // Several admitted values per PCR (a rolling upgrade) are checked
    // below; the verifier checks everything else.
    let policy = Policy { root: root.clone(), pcrs: BTreeMap::new(), nonce: Some(nonce.to_vec()), at: SystemTime::now(), allow_debug };
    let verified = conclave_attest::verify(document, &policy)?;
    for (index, admitted) in pcrs {
        match verified.pcrs.get(index) {
            Some(actual) if admitted.iter().any(|a| a.as_slice() == actual.as_slice()) => {}
            Some(actual) => return Err(Refusal::Pcr { index: *index, actual: hex::encode(actual) }),
            None => return Err(Refusal::Pcr { index: *index, actual: "missing".into() }),
        }
    }
    if verified.user_data.as_deref() != Some(peer.attestation_binding().as_slice()) {
        return Err(Refusal::Binding { node: peer.node_id.to_string() });
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::link::Mode;
    use conclave_proto::NodeId;

    fn identity(name: &str, key: u8) -> NodeIdentity {
        NodeIdentity { node_id: NodeId::new(name).unwrap(), mode: Mode::Nitro, sign_key: [key; 32], kx_key: [key + 1; 32] }
    }

    fn image(byte: u8) -> BTreeMap<u8, Vec<u8>> {
        [0u8, 1, 2].into_iter().map(|i| (i, vec![byte + i; 48])).collect()
    }

    fn config(admitted: &[u8]) -> BTreeMap<u8, Vec<Vec<u8>>> {
        [0u8, 1, 2].into_iter().map(|i| (i, admitted.iter().map(|b| vec![b + i; 48]).collect())).collect()
    }

    #[test]
    fn a_peer_is_admitted_only_with_its_own_binding_a_fresh_nonce_and_an_admitted_image() {
        let peer = identity("node-2", 7);
        let sim = SimulatedNsm::new("i-node-2-enc01", image(0x10)).unwrap();
        let root = sim.root().clone();
        let nsm = Nsm::Simulated(Box::new(Simulated { nsm: sim, binds_foreign_keys: false }));
        let nonce = [9u8; 32];
        let doc = nsm.attest(&peer, &nonce, None).unwrap();
        // Two admitted images (a rolling upgrade): either passes.
        let verified = admit(&doc, &peer, &nonce, &root, &config(&[0x40, 0x10]), false).unwrap();
        assert_eq!(verified.user_data.as_deref(), Some(peer.attestation_binding().as_slice()));

        let refused = |doc: &[u8], peer: &NodeIdentity, nonce: &[u8], root: &TrustedRoot, pcrs: &BTreeMap<u8, Vec<Vec<u8>>>| {
            admit(doc, peer, nonce, root, pcrs, false).unwrap_err().check()
        };
        // A node whose document binds other keys than the roster's.
        let impostor = identity("node-2", 8);
        assert_eq!(refused(&doc, &impostor, &nonce, &root, &config(&[0x10])), "binding");
        assert_eq!(refused(&doc, &identity("node-3", 7), &nonce, &root, &config(&[0x10])), "binding");
        // A replayed document answers an old nonce.
        assert_eq!(refused(&doc, &peer, &[1u8; 32], &root, &config(&[0x10])), "nonce");
        // Another image.
        assert_eq!(refused(&doc, &peer, &nonce, &root, &config(&[0x40])), "pcr");
        // A dev CA nobody configured, and the AWS root for a simulated document.
        let other = SimulatedNsm::new("i-x", image(0x10)).unwrap();
        assert_eq!(refused(&doc, &peer, &nonce, other.root(), &config(&[0x10])), "chain");
        assert_eq!(refused(&doc, &peer, &nonce, &TrustedRoot::aws_nitro(), &config(&[0x10])), "chain");
    }

    #[test]
    fn the_nitro_device_is_absent_here() {
        // These machines are not Nitro Enclaves: opening the NSM must fail
        // with the error that says so, not panic.
        let config = crate::nitro::NitroConfig {
            kms_key_id: "alias/k".into(),
            kms_region: "eu-west-1".into(),
            kms_proxy: crate::kms::default_proxy(),
            kms_ca_file: None,
            root_ca_file: None,
            expected_pcrs: BTreeMap::new(),
            allow_debug_enclaves: false,
        };
        assert!(matches!(NitroNsm::open(&config), Err(AttestationError::NoDevice)));
    }

    #[test]
    fn a_nitro_node_admits_its_own_image_and_the_configured_other() {
        let own: BTreeMap<u8, Vec<u8>> = [0u8, 1, 2].into_iter().map(|i| (i, vec![0x10 + i; 48])).collect();
        // No other image configured: exactly the node's own values.
        assert_eq!(admitted_pcrs(&own, &BTreeMap::new()), own.iter().map(|(i, v)| (*i, vec![v.clone()])).collect());
        // A rolling upgrade: either image, and only those.
        let next: BTreeMap<u8, Vec<[u8; 48]>> = [0u8, 1, 2].into_iter().map(|i| (i, vec![[0x40 + i; 48]])).collect();
        let admitted = admitted_pcrs(&own, &next);
        let peer = identity("node-2", 7);
        let nonce = [3u8; 32];
        for (byte, passes) in [(0x10, true), (0x40, true), (0x70, false)] {
            let sim = SimulatedNsm::new("i-node-2-enc01", image(byte)).unwrap();
            let root = sim.root().clone();
            let doc = Nsm::Simulated(Box::new(Simulated { nsm: sim, binds_foreign_keys: false })).attest(&peer, &nonce, None).unwrap();
            assert_eq!(admit(&doc, &peer, &nonce, &root, &admitted, false).is_ok(), passes, "image {byte:#x}");
        }
    }
}
