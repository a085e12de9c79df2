//! A SIMULATED Nitro Security Module, for dev mode and tests.
//!
//! It issues documents of exactly the real format (COSE_Sign1, ES384, the
//! same payload map) under a dev CA it generates: a P-384 root, and a fresh
//! leaf for every document, as the real NSM does. Its documents prove
//! nothing about any enclave; a verifier accepts them only when its
//! [`Policy`](crate::Policy) names [`SimulatedNsm::root`] explicitly, and
//! refuses them under the AWS root (`chain`).

use crate::root::TrustedRoot;
use coset::cbor::Value;
use p384::ecdsa::{DerSignature, SigningKey};
use rand_core::{OsRng, RngCore};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::Encode;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

const ROOT_SUBJECT: &str = "CN=Conclave SIMULATED NSM root - not AWS,O=Conclave dev";
const LEAF_SUBJECT: &str = "CN=Conclave SIMULATED NSM document signer - not AWS,O=Conclave dev";

/// The dev CA lasts as long as a dev cluster might.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Like a real NSM leaf: hours.
const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// Dev nodes' clocks differ a little; a leaf made now must verify now.
const CLOCK_SLACK: Duration = Duration::from_secs(300);

/// Why the simulated NSM cannot produce a document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A PCR, `user_data`, `nonce` or `public_key` a real NSM would refuse.
    #[error("invalid input: {0}")]
    Input(String),
    /// Building a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
}

/// A dev CA: the key that signs simulated documents' certificates, and its
/// root certificate. One per dev cluster, so that every node's simulated
/// NSM chains to the root its peers are told to trust.
pub struct DevCa {
    key: SigningKey,
    root: TrustedRoot,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").field("root_fingerprint", &self.root.fingerprint_hex()).finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new dev CA.
    pub fn generate() -> Result<DevCa, SimError> {
        Self::from_key(SigningKey::random(&mut OsRng))
    }

    fn from_key(key: SigningKey) -> Result<DevCa, SimError> {
        let name = Name::from_str(ROOT_SUBJECT).expect("constant name parses");
        let now = SystemTime::now();
        let validity = validity(now - CLOCK_SLACK, now + ROOT_LIFETIME)?;
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(cert_error)?;
        let builder = CertificateBuilder::new(Profile::Root, serial(), validity, name, spki, &key).map_err(cert_error)?;
        let der = builder.build::<DerSignature>().map_err(cert_error)?.to_der().map_err(cert_error)?;
        let root = TrustedRoot::from_der(der).map_err(cert_error)?;
        Ok(DevCa { key, root })
    }

    /// The CA as a file's contents: its key (48 bytes, hex) on the first
    /// line, then its root certificate (PEM). Dev mode only: the key is in
    /// the clear.
    pub fn to_file(&self) -> String {
        format!("{}\n{}", hex::encode(self.key.to_bytes()), self.root.to_pem())
    }

    /// Reads what [`DevCa::to_file`] wrote; the root must be this key's.
    pub fn from_file(text: &str) -> Result<DevCa, SimError> {
        let (key_hex, pem) = text.split_once('\n').ok_or_else(|| SimError::Input("a dev CA file is a hex key line, then a PEM root".into()))?;
        let mut key = [0u8; 48];
        hex::decode_to_slice(key_hex.trim(), &mut key).map_err(|_| SimError::Input("the dev CA key is not 48 bytes of hex".into()))?;
        let key = SigningKey::from_slice(&key).map_err(|_| SimError::Input("the dev CA key is not a P-384 scalar".into()))?;
        let root = TrustedRoot::from_pem(pem).map_err(cert_error)?;
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(cert_error)?;
        let cert = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(root.der()).map_err(cert_error)?;
        if cert.tbs_certificate.subject_public_key_info != spki {
            return Err(SimError::Input("the dev CA root is not the key's".into()));
        }
        Ok(DevCa { key, root })
    }

    /// The root verifiers of this dev cluster are told to trust.
    pub fn root(&self) -> &TrustedRoot {
        &self.root
    }
}

/// A simulated NSM under a dev CA. Not trusted by any default.
pub struct SimulatedNsm {
    module_id: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
    ca: DevCa,
}

impl std::fmt::Debug for SimulatedNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedNsm").field("module_id", &self.module_id).field("root_fingerprint", &self.ca.root.fingerprint_hex()).finish_non_exhaustive()
    }
}

impl SimulatedNsm {
    /// A simulated enclave `module_id` whose measurements are `pcrs` (index
    /// below 32 to 32, 48 or 64 bytes; at most 32 of them), with a new dev
    /// CA.
    pub fn new(module_id: impl Into<String>, pcrs: BTreeMap<u8, Vec<u8>>) -> Result<SimulatedNsm, SimError> {
        Self::with_ca(module_id, pcrs, DevCa::generate()?)
    }

    /// The same under an existing dev CA (a dev cluster's).
    pub fn with_ca(module_id: impl Into<String>, pcrs: BTreeMap<u8, Vec<u8>>, ca: DevCa) -> Result<SimulatedNsm, SimError> {
        let module_id = module_id.into();
        if module_id.is_empty() {
            return Err(SimError::Input("module_id is empty".into()));
        }
        if pcrs.is_empty() || pcrs.len() > 32 {
            return Err(SimError::Input(format!("{} PCRs, expected 1 to 32", pcrs.len())));
        }
        if let Some((i, m)) = pcrs.iter().find(|(i, m)| **i >= 32 || ![32, 48, 64].contains(&m.len())) {
            return Err(SimError::Input(format!("PCR{i} of {} bytes: indexes go to 31, lengths are 32, 48 or 64", m.len())));
        }
        Ok(SimulatedNsm { module_id, pcrs, ca })
    }

    /// The dev CA's root, to be trusted explicitly by dev-mode verifiers
    /// (its [`TrustedRoot::to_pem`] and [`TrustedRoot::der`] export it).
    pub fn root(&self) -> &TrustedRoot {
        &self.ca.root
    }

    /// The measurements its documents state.
    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.pcrs
    }

    /// A document stating this enclave's PCRs and the given fields, signed
    /// now under a fresh leaf of the dev CA; what a real NSM's `Attestation`
    /// request returns.
    pub fn attest(&self, user_data: Option<&[u8]>, nonce: Option<&[u8]>, public_key: Option<&[u8]>) -> Result<Vec<u8>, SimError> {
        let field = |name: &str, v: Option<&[u8]>, min: usize| match v {
            Some(b) if b.len() < min || b.len() > 1024 => Err(SimError::Input(format!("{name} is {} bytes, expected {min} to 1024", b.len()))),
            Some(b) => Ok(Value::Bytes(b.to_vec())),
            None => Ok(Value::Null),
        };
        let (user_data, nonce, public_key) = (field("user_data", user_data, 0)?, field("nonce", nonce, 0)?, field("public_key", public_key, 1)?);

        let now = SystemTime::now();
        let leaf_key = SigningKey::random(&mut OsRng);
        let issuer = Name::from_str(ROOT_SUBJECT).expect("constant name parses");
        let profile = Profile::Leaf { issuer, enable_key_agreement: false, enable_key_encipherment: false };
        let spki = SubjectPublicKeyInfoOwned::from_key(*leaf_key.verifying_key()).map_err(cert_error)?;
        let subject = Name::from_str(LEAF_SUBJECT).expect("constant name parses");
        let validity = validity(now - CLOCK_SLACK, now + LEAF_LIFETIME)?;
        let builder = CertificateBuilder::new(profile, serial(), validity, subject, spki, &self.ca.key).map_err(cert_error)?;
        let leaf = builder.build::<DerSignature>().map_err(cert_error)?.to_der().map_err(cert_error)?;

        let timestamp_ms = u64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
        let pcrs = self.pcrs.iter().map(|(i, m)| (Value::from(*i), Value::Bytes(m.clone()))).collect();
        // The NSM's field order.
        let payload = Value::Map(vec![
            (Value::from("module_id"), Value::from(self.module_id.as_str())),
            (Value::from("digest"), Value::from("SHA384")),
            (Value::from("timestamp"), Value::from(timestamp_ms)),
            (Value::from("pcrs"), Value::Map(pcrs)),
            (Value::from("certificate"), Value::Bytes(leaf)),
            (Value::from("cabundle"), Value::Array(vec![Value::Bytes(self.ca.root.der().to_vec())])),
            (Value::from("public_key"), public_key),
            (Value::from("user_data"), user_data),
            (Value::from("nonce"), nonce),
        ]);
        let mut encoded = Vec::new();
        coset::cbor::ser::into_writer(&payload, &mut encoded).expect("writing CBOR to a Vec cannot fail");
        Ok(crate::cose::sign(encoded, &leaf_key))
    }
}

fn cert_error(e: impl std::fmt::Display) -> SimError {
    SimError::Certificate(e.to_string())
}

fn validity(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, SimError> {
    Ok(Validity { not_before: Time::try_from(not_before).map_err(cert_error)?, not_after: Time::try_from(not_after).map_err(cert_error)? })
}

/// 16 random bytes, the first in 0x01..=0x7f so that the DER integer is
/// positive and minimal (RFC 5280 section 4.1.2.2).
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::new(&bytes).expect("16 positive bytes are a serial number")
}
