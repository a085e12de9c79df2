//! Attestation documents as a verifier receives them: from a peer asking to
//! be admitted, or from a file an auditor was handed. Every input must be
//! refused without a panic (a real one cannot be forged).
#![no_main]
use conclave_attest::{verify, Document, Policy, TrustedRoot};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

/// The AWS root at the time of the real production document, so that
/// inputs mutated from it travel as far into the checks as they can.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy {
        root: TrustedRoot::aws_nitro(),
        pcrs: BTreeMap::from([(0, vec![0; 48])]),
        nonce: Some(vec![0; 32]),
        at: UNIX_EPOCH + Duration::from_millis(1_665_651_482_136),
        allow_debug: false,
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = Document::parse(data) {
        assert!(!doc.claims().pcrs.is_empty(), "a parsed document has PCRs");
    }
    assert!(verify(data, policy()).is_err(), "a mutated document verified");
});
