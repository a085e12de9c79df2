//! An attestation question as a host reads it, and an answer as a signer's
//! host or a client reads it.
#![no_main]
use conclave_proto::attestation::{AttestAnswer, AttestQuery};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(query) = AttestQuery::decode(data) {
        assert!(conclave_proto::attestation::NONCE_BYTES.contains(&query.nonce.len()), "an accepted nonce has an answerable length");
    }
    if let Ok(AttestAnswer { result: Ok(doc), .. }) = AttestAnswer::decode(data) {
        assert!(doc.0.len() <= conclave_proto::attestation::MAX_DOCUMENT_BYTES);
    }
});
