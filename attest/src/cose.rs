//! The COSE_Sign1 envelope (RFC 9052 section 4.2) of a Nitro document:
//! `[protected, unprotected, payload, signature]`, signed with ES384.

use crate::error::AttestError;
use coset::cbor::Value;
use coset::{iana, AsCborValue, CborSerializable, CoseSign1, CoseSign1Builder, Header, HeaderBuilder};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// COSE tag of a COSE_Sign1 (RFC 9052 section 2); the NSM omits it, some
/// relays add it.
const COSE_SIGN1_TAG: u64 = 18;

/// The envelope is a tag (optional) holding an array holding a map: three
/// levels, anything deeper is not ours.
const ENVELOPE_DEPTH: usize = 3;

/// The only protected header a Nitro document carries: `{1: -35}`.
fn es384_header() -> Header {
    HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build()
}

/// Decodes the envelope of untrusted bytes and returns it with its payload.
pub(crate) fn decode(bytes: &[u8]) -> Result<(CoseSign1, Vec<u8>), AttestError> {
    let mut rest = bytes;
    let value: Value =
        coset::cbor::de::from_reader_with_recursion_limit(&mut rest, ENVELOPE_DEPTH).map_err(|e| AttestError::malformed(format!("COSE_Sign1: {e}")))?;
    if !rest.is_empty() {
        return Err(AttestError::malformed(format!("{} bytes after the COSE_Sign1", rest.len())));
    }
    let value = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(tag, _) => return Err(AttestError::malformed(format!("CBOR tag {tag}, expected a COSE_Sign1"))),
        v => v,
    };
    let mut sign1 = CoseSign1::from_cbor_value(value).map_err(|e| AttestError::malformed(format!("COSE_Sign1: {e}")))?;
    // Anything but exactly ES384 (including `crit` parameters we would have
    // to understand) is refused rather than interpreted.
    if sign1.protected.header != es384_header() {
        return Err(AttestError::malformed(format!("protected header must be exactly {{alg: ES384 (-35)}}, found alg {:?}", sign1.protected.header.alg)));
    }
    // Not covered by the signature: accepting content there would let anyone
    // add claims that look signed.
    if !sign1.unprotected.is_empty() {
        return Err(AttestError::malformed("unprotected header must be empty"));
    }
    if sign1.signature.len() != 96 {
        return Err(AttestError::malformed(format!("ES384 signature is {} bytes, expected 96", sign1.signature.len())));
    }
    let payload = sign1.payload.take().ok_or_else(|| AttestError::malformed("detached payload"))?;
    Ok((sign1, payload))
}

/// Checks the ES384 signature over the Sig_structure
/// `["Signature1", protected, h'', payload]` (RFC 9052 section 4.4).
pub(crate) fn verify(envelope: &CoseSign1, payload: &[u8], key: &VerifyingKey) -> Result<(), AttestError> {
    let signature =
        Signature::from_slice(&envelope.signature).map_err(|_| AttestError::Signature { reason: "not an ES384 signature (r, s out of range)".into() })?;
    let tbs = coset::sig_structure_data(coset::SignatureContext::CoseSign1, envelope.protected.clone(), None, b"", payload);
    key.verify(&tbs, &signature).map_err(|_| AttestError::Signature { reason: "does not verify under the leaf certificate's key".into() })
}

/// Wraps `payload` in an envelope signed by `key`, as the NSM does.
pub(crate) fn sign(payload: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    CoseSign1Builder::new()
        .protected(es384_header())
        .payload(payload)
        .create_signature(b"", |tbs| {
            let signature: Signature = key.sign(tbs);
            signature.to_bytes().to_vec()
        })
        .build()
        .to_vec()
        .expect("a COSE_Sign1 of byte strings always encodes")
}
