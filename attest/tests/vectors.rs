//! Verification of real AWS Nitro attestation documents (see
//! `vectors/README.md`): what a correct verifier says about each.

use conclave_attest::sim::SimulatedNsm;
use conclave_attest::{verify, AttestError, CertPosition, Policy, TrustedRoot, AWS_NITRO_ROOT_SHA256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PROD: &[u8] = include_bytes!("vectors/prod-2022-10-13.cose");
const DEBUG: &[u8] = include_bytes!("vectors/debug-2022-10-12.cose");

struct Expected {
    module_id: String,
    timestamp_ms: u64,
    digest: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
    nonce: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
}

fn expected(file: &str) -> Expected {
    let all: serde_json::Value = serde_json::from_str(include_str!("vectors/expected.json")).unwrap();
    let e = &all[file];
    let hex_field = |name: &str| e[name].as_str().map(|h| hex::decode(h).unwrap());
    Expected {
        module_id: e["module_id"].as_str().unwrap().into(),
        timestamp_ms: e["timestamp_ms"].as_u64().unwrap(),
        digest: e["digest"].as_str().unwrap().into(),
        pcrs: e["pcrs"].as_object().unwrap().iter().map(|(i, h)| (i.parse().unwrap(), hex::decode(h.as_str().unwrap()).unwrap())).collect(),
        nonce: hex_field("nonce"),
        user_data: hex_field("user_data"),
        public_key: hex_field("public_key"),
    }
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What an auditor of the production document requires: its own PCRs and
/// nonce, at its own timestamp, under the AWS root.
fn prod_policy() -> Policy {
    let e = expected("prod-2022-10-13.cose");
    Policy { root: TrustedRoot::aws_nitro(), pcrs: e.pcrs, nonce: e.nonce, at: at_ms(e.timestamp_ms), allow_debug: false }
}

fn debug_policy(allow_debug: bool) -> Policy {
    let e = expected("debug-2022-10-12.cose");
    Policy { root: TrustedRoot::aws_nitro(), pcrs: BTreeMap::new(), nonce: None, at: at_ms(e.timestamp_ms), allow_debug }
}

#[test]
fn production_document_verifies_at_its_timestamp_and_states_what_expected_json_says() {
    let v = verify(PROD, &prod_policy()).expect("the production document verifies");
    let e = expected("prod-2022-10-13.cose");
    assert_eq!(v.module_id, e.module_id);
    assert_eq!(v.timestamp_ms, e.timestamp_ms);
    assert_eq!(v.digest, e.digest);
    assert_eq!(v.nonce, e.nonce);
    assert_eq!(v.user_data, None);
    assert_eq!(v.public_key, None);
    assert_eq!(hex::encode(v.root_fingerprint()), AWS_NITRO_ROOT_SHA256);
    // expected.json lists the PCRs in use; the NSM reports 16, the others zero.
    assert_eq!(v.pcrs.len(), 16);
    for (i, m) in &v.pcrs {
        match e.pcrs.get(i) {
            Some(expected) => assert_eq!(m, expected, "PCR{i}"),
            None => assert!(m.iter().all(|b| *b == 0), "PCR{i} is not listed, so zero"),
        }
    }
}

#[test]
fn production_document_is_expired_today() {
    let policy = Policy { at: SystemTime::now(), ..prod_policy() };
    let err = verify(PROD, &policy).unwrap_err();
    assert_eq!(err.check(), "expired", "{err}");
}

#[test]
fn production_document_is_not_yet_valid_before_its_leaf_was_issued() {
    let policy = Policy { at: at_ms(expected("prod-2022-10-13.cose").timestamp_ms - 300_000), ..prod_policy() };
    assert!(matches!(verify(PROD, &policy), Err(AttestError::Expired { cert: CertPosition::Leaf, .. })));
}

#[test]
fn any_changed_expected_pcr_is_refused_naming_the_pcr() {
    for index in expected("prod-2022-10-13.cose").pcrs.keys() {
        let mut policy = prod_policy();
        policy.pcrs.get_mut(index).unwrap()[7] ^= 1;
        match verify(PROD, &policy) {
            Err(AttestError::Pcr { index: i, actual: Some(_), .. }) => assert_eq!(i, *index),
            other => panic!("PCR{index} changed: {other:?}"),
        }
    }
}

#[test]
fn an_expected_pcr_the_document_lacks_is_refused() {
    let mut policy = prod_policy();
    policy.pcrs.insert(31, vec![0; 48]);
    assert!(matches!(verify(PROD, &policy), Err(AttestError::Pcr { index: 31, actual: None, .. })));
}

#[test]
fn a_changed_or_missing_nonce_is_refused() {
    let mut policy = prod_policy();
    policy.nonce.as_mut().unwrap()[0] ^= 1;
    assert_eq!(verify(PROD, &policy).unwrap_err().check(), "nonce");

    let policy = Policy { nonce: Some(b"fresh challenge".to_vec()), ..debug_policy(true) };
    assert!(matches!(verify(DEBUG, &policy), Err(AttestError::Nonce { actual: None, .. })));
}

#[test]
fn flipping_any_byte_never_verifies_and_never_panics() {
    let policy = prod_policy();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for position in 0..PROD.len() {
        // Each position flips a different bit, so every bit position is
        // exercised across the document.
        let flip = 1u8 << (position % 8);
        let mut doc = PROD.to_vec();
        doc[position] ^= flip;
        match verify(&doc, &policy) {
            Ok(_) => panic!("verified with byte {position} ^ {flip:#x}"),
            Err(e) => *counts.entry(e.check()).or_default() += 1,
        }
    }
    // The flips land in every part of the document.
    for check in ["malformed", "signature", "chain"] {
        assert!(counts.contains_key(check), "no flip failed with {check}: {counts:?}");
    }
}

#[test]
fn debug_document_is_refused_unless_debug_mode_is_allowed() {
    match verify(DEBUG, &debug_policy(false)) {
        Err(AttestError::Debug { zero_pcrs }) => assert_eq!(zero_pcrs, [0, 1, 2]),
        other => panic!("{other:?}"),
    }
    // Debug mode does not excuse anything else.
    let mut wrong_pcr = debug_policy(true);
    wrong_pcr.pcrs.insert(0, expected("prod-2022-10-13.cose").pcrs[&0].clone());
    assert_eq!(verify(DEBUG, &wrong_pcr).unwrap_err().check(), "pcr");
    assert_eq!(verify(DEBUG, &Policy { at: SystemTime::now(), ..debug_policy(true) }).unwrap_err().check(), "expired");

    let v = verify(DEBUG, &debug_policy(true)).expect("allowed debug document verifies");
    let e = expected("debug-2022-10-12.cose");
    assert_eq!(v.module_id, e.module_id);
    assert_eq!(v.timestamp_ms, e.timestamp_ms);
    assert_eq!(v.user_data, e.user_data);
    assert_eq!(v.public_key, e.public_key);
    assert_eq!(v.nonce, None);
    for (i, m) in &e.pcrs {
        assert_eq!(&v.pcrs[i], m, "PCR{i}");
    }
}

#[test]
fn a_document_under_another_root_is_refused_as_chain() {
    let dev_ca = SimulatedNsm::new("i-sim", BTreeMap::from([(0, vec![1; 48])])).unwrap();
    let policy = Policy { root: dev_ca.root().clone(), ..prod_policy() };
    assert!(matches!(verify(PROD, &policy), Err(AttestError::Chain { cert: CertPosition::Bundle(0), .. })));
}

#[test]
fn a_cose_tagged_document_verifies_like_the_untagged_one() {
    let tagged = [&[0xd2][..], PROD].concat();
    verify(&tagged, &prod_policy()).expect("tag 18 is a COSE_Sign1");
    let other_tag = [&[0xd1][..], PROD].concat();
    assert_eq!(verify(&other_tag, &prod_policy()).unwrap_err().check(), "malformed");
}

#[test]
fn truncated_oversized_and_garbage_input_is_malformed() {
    let policy = prod_policy();
    let malformed = |doc: &[u8]| verify(doc, &policy).unwrap_err().check() == "malformed";
    for len in 0..PROD.len() {
        assert!(malformed(&PROD[..len]), "truncated to {len}");
    }
    assert!(malformed(&[PROD, &[0]].concat()), "trailing byte");
    assert!(malformed(&[PROD, &vec![0; 16 * 1024]].concat()), "oversized");
    assert!(malformed(b"hello, world"));
    assert!(malformed(&[0xff; 100]));
    // Deep nesting: arrays of arrays, then maps of maps.
    assert!(malformed(&[vec![0x81; 10_000], vec![0]].concat()));
    assert!(malformed(&[[0xa1, 0x00].repeat(5_000), vec![0]].concat()));
    // Deep nesting inside the protected header's byte string.
    for depth in [10, 200, 10_000] {
        let header = [vec![0x81; depth], vec![0]].concat();
        let mut doc = vec![0x84, 0x59, (header.len() >> 8) as u8, header.len() as u8];
        doc.extend(header);
        doc.extend([0xa0, 0x41, 0x00, 0x41, 0x00]);
        assert!(malformed(&doc), "protected header nested {depth} deep");
    }
    // An indefinite-length array that never ends.
    assert!(malformed(&[0x9f; 1000]));
}
