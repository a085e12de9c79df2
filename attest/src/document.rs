//! Syntactic parsing of untrusted document bytes, before any cryptography:
//! the payload map and its bounds as AWS specifies them ("Verifying the root
//! of trust", Nitro Enclaves user guide).

use crate::chain::Cert;
use crate::error::{AttestError, CertPosition};
use coset::cbor::Value;
use coset::CoseSign1;
use std::collections::BTreeMap;

/// Largest document accepted, checked before decoding. Real ones are about
/// 4.5 KiB (four CA certificates, a leaf, 16 PCRs).
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;

/// The payload is a map holding maps and arrays of scalars.
const PAYLOAD_DEPTH: usize = 3;

/// `user_data`, `nonce` and `public_key`, and each certificate, are at
/// most this long.
const MAX_FIELD_LEN: usize = 1024;

/// AWS chains have four certificates in the bundle; a few more is slack, not
/// an invitation to walk long chains.
const MAX_CABUNDLE_LEN: usize = 8;

/// What a document states: read from its payload, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The enclave: `i-<instance>-enc<enclave>`.
    pub module_id: String,
    /// When the NSM produced the document, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The PCR digest algorithm; always `SHA384`.
    pub digest: String,
    /// PCR index to measurement.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The nonce the requester asked the NSM to include.
    pub nonce: Option<Vec<u8>>,
    /// Data the enclave asked the NSM to include.
    pub user_data: Option<Vec<u8>>,
    /// A public key the enclave asked the NSM to include.
    pub public_key: Option<Vec<u8>>,
}

/// A document that passed syntactic parsing: its claims can be read, but
/// nothing in it is trusted until [`Document::verify`] says so.
pub struct Document {
    pub(crate) claims: Claims,
    pub(crate) envelope: CoseSign1,
    pub(crate) payload: Vec<u8>,
    pub(crate) certificate: Cert,
    pub(crate) cabundle: Vec<Cert>,
}

impl Document {
    /// Parses untrusted bytes: size, CBOR structure and depth, COSE_Sign1
    /// with ES384, every mandatory field with its type and bounds, no
    /// unknown or repeated field, DER certificates. Errors are `malformed`.
    pub fn parse(bytes: &[u8]) -> Result<Document, AttestError> {
        if bytes.len() > MAX_DOCUMENT_LEN {
            return Err(AttestError::malformed(format!("{} bytes, more than {MAX_DOCUMENT_LEN}", bytes.len())));
        }
        let (envelope, payload) = crate::cose::decode(bytes)?;
        let fields = Fields::decode(&payload)?;
        Ok(Document { claims: fields.claims, envelope, payload, certificate: fields.certificate, cabundle: fields.cabundle })
    }

    /// What the document states, unverified.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

struct Fields {
    claims: Claims,
    certificate: Cert,
    cabundle: Vec<Cert>,
}

impl Fields {
    fn decode(payload: &[u8]) -> Result<Fields, AttestError> {
        let mut rest = payload;
        let value: Value = coset::cbor::de::from_reader_with_recursion_limit(&mut rest, PAYLOAD_DEPTH)
            .map_err(|e| AttestError::malformed(format!("payload: {e}")))?;
        if !rest.is_empty() {
            return Err(AttestError::malformed(format!("{} bytes after the payload map", rest.len())));
        }
        let Value::Map(entries) = value else { return Err(AttestError::malformed("payload is not a map")) };
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in entries {
            let Value::Text(key) = key else { return Err(AttestError::malformed("payload key is not text")) };
            if !matches!(
                key.as_str(),
                "module_id" | "digest" | "timestamp" | "pcrs" | "certificate" | "cabundle" | "public_key" | "user_data" | "nonce"
            ) {
                return Err(AttestError::malformed(format!("unknown field {key:?}")));
            }
            // Two parsers could disagree on which of two values counts.
            if fields.insert(key.clone(), value).is_some() {
                return Err(AttestError::malformed(format!("field {key:?} appears twice")));
            }
        }
        let mut take = |name: &'static str| fields.remove(name).ok_or_else(|| AttestError::malformed(format!("{name} is missing")));

        let module_id = text(take("module_id")?, "module_id")?;
        if module_id.is_empty() {
            return Err(AttestError::malformed("module_id is empty"));
        }
        let digest = text(take("digest")?, "digest")?;
        if digest != "SHA384" {
            return Err(AttestError::malformed(format!("digest is {digest:?}, expected SHA384")));
        }
        let timestamp_ms = match take("timestamp")? {
            Value::Integer(i) => u64::try_from(i).ok().filter(|t| *t > 0),
            _ => None,
        }
        .ok_or_else(|| AttestError::malformed("timestamp is not a positive integer"))?;
        let pcrs = pcrs(take("pcrs")?)?;
        let certificate = Cert::parse(CertPosition::Leaf, bytes(take("certificate")?, "certificate", 1)?)?;
        let Value::Array(bundle) = take("cabundle")? else { return Err(AttestError::malformed("cabundle is not an array")) };
        if bundle.is_empty() || bundle.len() > MAX_CABUNDLE_LEN {
            return Err(AttestError::malformed(format!("cabundle has {} certificates, expected 1 to {MAX_CABUNDLE_LEN}", bundle.len())));
        }
        let cabundle = bundle
            .into_iter()
            .enumerate()
            .map(|(i, v)| Cert::parse(CertPosition::Bundle(i), bytes(v, "cabundle entry", 1)?))
            .collect::<Result<Vec<_>, _>>()?;
        let public_key = optional_bytes(fields.remove("public_key"), "public_key", 1)?;
        let user_data = optional_bytes(fields.remove("user_data"), "user_data", 0)?;
        let nonce = optional_bytes(fields.remove("nonce"), "nonce", 0)?;
        Ok(Fields {
            claims: Claims { module_id, timestamp_ms, digest, pcrs, nonce, user_data, public_key },
            certificate,
            cabundle,
        })
    }
}

fn text(value: Value, name: &str) -> Result<String, AttestError> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(AttestError::malformed(format!("{name} is not text"))),
    }
}

fn bytes(value: Value, name: &str, min_len: usize) -> Result<Vec<u8>, AttestError> {
    match value {
        Value::Bytes(b) if (min_len..=MAX_FIELD_LEN).contains(&b.len()) => Ok(b),
        Value::Bytes(b) => Err(AttestError::malformed(format!("{name} is {} bytes, expected {min_len} to {MAX_FIELD_LEN}", b.len()))),
        _ => Err(AttestError::malformed(format!("{name} is not a byte string"))),
    }
}

/// Optional fields are absent or null when the enclave did not set them.
fn optional_bytes(value: Option<Value>, name: &str, min_len: usize) -> Result<Option<Vec<u8>>, AttestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bytes(v, name, min_len).map(Some),
    }
}

fn pcrs(value: Value) -> Result<BTreeMap<u8, Vec<u8>>, AttestError> {
    let Value::Map(entries) = value else { return Err(AttestError::malformed("pcrs is not a map")) };
    if entries.is_empty() || entries.len() > 32 {
        return Err(AttestError::malformed(format!("pcrs has {} entries, expected 1 to 32", entries.len())));
    }
    let mut pcrs = BTreeMap::new();
    for (index, value) in entries {
        let index = match index {
            Value::Integer(i) => u8::try_from(i).ok().filter(|i| *i < 32),
            _ => None,
        }
        .ok_or_else(|| AttestError::malformed("a PCR index is not an integer from 0 to 31"))?;
        let Value::Bytes(measurement) = value else { return Err(AttestError::malformed(format!("PCR{index} is not a byte string"))) };
        if ![32, 48, 64].contains(&measurement.len()) {
            return Err(AttestError::malformed(format!("PCR{index} is {} bytes, expected 32, 48 or 64", measurement.len())));
        }
        if pcrs.insert(index, measurement).is_some() {
            return Err(AttestError::malformed(format!("PCR{index} appears twice")));
        }
    }
    Ok(pcrs)
}
