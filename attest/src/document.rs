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

/// The payload is a map holding maps and arrays of scalars: two levels.
const PAYLOAD_DEPTH: usize = 2;

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
        let value: Value =
            coset::cbor::de::from_reader_with_recursion_limit(&mut rest, PAYLOAD_DEPTH).map_err(|e| AttestError::malformed(format!("payload: {e}")))?;
        if !rest.is_empty() {
            return Err(AttestError::malformed(format!("{} bytes after the payload map", rest.len())));
        }
        let Value::Map(entries) = value else {
            return Err(AttestError::malformed("payload is not a map"));
        };
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(AttestError::malformed("payload key is not text"));
            };
            if !matches!(key.as_str(), "module_id" | "digest" | "timestamp" | "pcrs" | "certificate" | "cabundle" | "public_key" | "user_data" | "nonce") {
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
        let Value::Array(bundle) = take("cabundle")? else {
            return Err(AttestError::malformed("cabundle is not an array"));
        };
        if bundle.is_empty() || bundle.len() > MAX_CABUNDLE_LEN {
            return Err(AttestError::malformed(format!("cabundle has {} certificates, expected 1 to {MAX_CABUNDLE_LEN}", bundle.len())));
        }
        let cabundle =
            bundle.into_iter().enumerate().map(|(i, v)| Cert::parse(CertPosition::Bundle(i), bytes(v, "cabundle entry", 1)?)).collect::<Result<Vec<_>, _>>()?;
        let public_key = optional_bytes(fields.remove("public_key"), "public_key", 1)?;
        let user_data = optional_bytes(fields.remove("user_data"), "user_data", 0)?;
        let nonce = optional_bytes(fields.remove("nonce"), "nonce", 0)?;
        Ok(Fields { claims: Claims { module_id, timestamp_ms, digest, pcrs, nonce, user_data, public_key }, certificate, cabundle })
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
    let Value::Map(entries) = value else {
        return Err(AttestError::malformed("pcrs is not a map"));
    };
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
        let Value::Bytes(measurement) = value else {
            return Err(AttestError::malformed(format!("PCR{index} is not a byte string")));
        };
        if ![32, 48, 64].contains(&measurement.len()) {
            return Err(AttestError::malformed(format!("PCR{index} is {} bytes, expected 32, 48 or 64", measurement.len())));
        }
        if pcrs.insert(index, measurement).is_some() {
            return Err(AttestError::malformed(format!("PCR{index} appears twice")));
        }
    }
    Ok(pcrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{iana, AsCborValue, CborSerializable, Header, HeaderBuilder, Label, ProtectedHeader};

    fn protected(header: Header) -> ProtectedHeader {
        ProtectedHeader { original_data: None, header }
    }

    const PROD: &[u8] = include_bytes!("../tests/vectors/prod-2022-10-13.cose");

    /// The production document with its envelope changed by `f`.
    fn with_envelope(f: impl FnOnce(&mut CoseSign1)) -> Vec<u8> {
        let mut envelope = CoseSign1::from_slice(PROD).unwrap();
        f(&mut envelope);
        envelope.to_vec().unwrap()
    }

    /// The production document with its payload map changed by `f`.
    fn with_payload(f: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
        with_envelope(|envelope| {
            let payload = envelope.payload.as_deref().unwrap();
            let Value::Map(mut entries) = coset::cbor::de::from_reader(payload).unwrap() else { panic!("payload is a map") };
            f(&mut entries);
            let mut encoded = Vec::new();
            coset::cbor::ser::into_writer(&Value::Map(entries), &mut encoded).unwrap();
            envelope.payload = Some(encoded);
        })
    }

    fn set(entries: &mut [(Value, Value)], name: &str, value: Value) {
        entries.iter_mut().find(|(k, _)| k.as_text() == Some(name)).unwrap().1 = value;
    }

    fn refused(doc: &[u8], why: &str) {
        match Document::parse(doc) {
            Err(AttestError::Malformed { reason }) => {
                assert!(reason.contains(why), "{why:?} not in {reason:?}")
            }
            Err(e) => panic!("{why}: refused as {}, not malformed: {e}", e.check()),
            Ok(_) => panic!("{why}: parsed"),
        }
    }

    #[test]
    fn the_production_document_parses_and_re_encodes_to_the_same_bytes() {
        // The test helpers below change only what they say.
        assert_eq!(with_payload(|_| {}), PROD);
        assert_eq!(Document::parse(PROD).unwrap().claims().module_id, "i-020b6af9246d90e92-enc0183d09086c24190");
    }

    #[test]
    fn every_mandatory_field_must_be_present() {
        for name in ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"] {
            refused(&with_payload(|e| e.retain(|(k, _)| k.as_text() != Some(name))), &format!("{name} is missing"));
        }
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let doc = with_payload(|e| e.retain(|(k, _)| !matches!(k.as_text(), Some("nonce" | "user_data" | "public_key"))));
        let claims = Document::parse(&doc).unwrap().claims().clone();
        assert_eq!((claims.nonce, claims.user_data, claims.public_key), (None, None, None));
    }

    #[test]
    fn fields_of_the_wrong_type_or_value_are_refused() {
        refused(&with_payload(|e| set(e, "module_id", Value::Bytes(b"i-1".to_vec()))), "module_id is not text");
        refused(&with_payload(|e| set(e, "module_id", Value::from(""))), "module_id is empty");
        refused(&with_payload(|e| set(e, "digest", Value::from("SHA256"))), "expected SHA384");
        refused(&with_payload(|e| set(e, "timestamp", Value::from(0))), "timestamp");
        refused(&with_payload(|e| set(e, "timestamp", Value::from(-1))), "timestamp");
        refused(&with_payload(|e| set(e, "timestamp", Value::Float(1.5))), "timestamp");
        refused(&with_payload(|e| set(e, "certificate", Value::from("cert"))), "certificate is not a byte string");
        refused(&with_payload(|e| set(e, "certificate", Value::Bytes(vec![0x30; 1025]))), "certificate is 1025 bytes");
        refused(&with_payload(|e| set(e, "certificate", Value::Bytes(vec![0x30, 0x00]))), "certificate (leaf): not a DER X.509");
        refused(&with_payload(|e| set(e, "nonce", Value::Bytes(vec![0; 1025]))), "nonce is 1025 bytes");
        refused(&with_payload(|e| set(e, "user_data", Value::Bytes(vec![0; 1025]))), "user_data is 1025 bytes");
        refused(&with_payload(|e| set(e, "public_key", Value::Bytes(Vec::new()))), "public_key is 0 bytes");
        refused(&with_payload(|e| set(e, "user_data", Value::from(7))), "user_data is not a byte string");
    }

    #[test]
    fn unknown_or_repeated_fields_are_refused() {
        refused(&with_payload(|e| e.push((Value::from("extra"), Value::Null))), "unknown field \"extra\"");
        refused(&with_payload(|e| e.push((Value::from(1), Value::Null))), "payload key is not text");
        refused(&with_payload(|e| e.push((Value::from("module_id"), Value::from("i-other")))), "module_id\" appears twice");
    }

    #[test]
    fn pcrs_are_bounded_in_count_index_and_length() {
        let pcrs = |entries: Vec<(Value, Value)>| with_payload(|e| set(e, "pcrs", Value::Map(entries)));
        let pcr = |i: i64, len: usize| (Value::from(i), Value::Bytes(vec![1; len]));
        refused(&pcrs(vec![]), "pcrs has 0 entries");
        refused(&pcrs((0..33).map(|i| pcr(i % 32, 48)).collect()), "pcrs has 33 entries");
        refused(&pcrs(vec![pcr(32, 48)]), "PCR index");
        refused(&pcrs(vec![pcr(-1, 48)]), "PCR index");
        refused(&pcrs(vec![pcr(0, 47)]), "PCR0 is 47 bytes");
        refused(&pcrs(vec![pcr(3, 48), pcr(3, 48)]), "PCR3 appears twice");
        refused(&pcrs(vec![(Value::from(0), Value::from("zero"))]), "PCR0 is not a byte string");
        for len in [32, 48, 64] {
            Document::parse(&pcrs(vec![pcr(0, len)])).expect("32, 48 and 64 bytes are PCR lengths");
        }
    }

    #[test]
    fn the_cabundle_is_a_bounded_list_of_certificates() {
        let empty = Value::Bytes(Vec::new());
        refused(&with_payload(|e| set(e, "cabundle", Value::Array(vec![]))), "cabundle has 0 certificates");
        refused(&with_payload(|e| set(e, "cabundle", Value::Array(vec![empty.clone(); 9]))), "cabundle has 9 certificates");
        refused(&with_payload(|e| set(e, "cabundle", Value::Array(vec![empty]))), "cabundle entry is 0 bytes");
        refused(&with_payload(|e| set(e, "cabundle", Value::Bytes(vec![1]))), "cabundle is not an array");
    }

    #[test]
    fn the_envelope_must_be_an_es384_cose_sign1_with_an_attached_payload() {
        refused(&with_envelope(|s| s.protected = protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES256).build())), "protected header");
        refused(
            &with_envelope(|s| {
                s.protected = protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).add_critical(iana::HeaderParameter::Kid).build())
            }),
            "protected header",
        );
        refused(&with_envelope(|s| s.unprotected = HeaderBuilder::new().key_id(b"k".to_vec()).build()), "unprotected header");
        refused(&with_envelope(|s| s.unprotected.rest.push((Label::Int(99), Value::Null))), "unprotected header");
        refused(&with_envelope(|s| s.signature.truncate(95)), "signature is 95 bytes");
        refused(&with_envelope(|s| s.payload = None), "detached payload");
        let mut five = CoseSign1::from_slice(PROD).unwrap().to_cbor_value().unwrap().into_array().unwrap();
        five.push(Value::Null);
        let mut encoded = Vec::new();
        coset::cbor::ser::into_writer(&Value::Array(five), &mut encoded).unwrap();
        refused(&encoded, "COSE_Sign1");
    }

    #[test]
    fn payload_nesting_is_bounded() {
        refused(&with_payload(|e| set(e, "user_data", Value::Array(vec![Value::Array(vec![Value::Null])]))), "payload");
    }
}
