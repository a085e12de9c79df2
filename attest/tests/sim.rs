//! The simulated NSM: its documents have the real format, verify under its
//! own root when a policy names it, and under nothing else.

use conclave_attest::sim::{SimError, SimulatedNsm};
use conclave_attest::{verify, AttestError, CertPosition, Document, Policy, TrustedRoot};
use std::collections::BTreeMap;
use std::time::SystemTime;

fn pcrs() -> BTreeMap<u8, Vec<u8>> {
    (0..16).map(|i| (i, if i < 5 || i == 8 { vec![i + 1; 48] } else { vec![0; 48] })).collect()
}

fn policy(root: &TrustedRoot) -> Policy {
    Policy {
        root: root.clone(),
        pcrs: BTreeMap::from([(0, vec![1; 48]), (2, vec![3; 48])]),
        nonce: Some(b"challenge".to_vec()),
        at: SystemTime::now(),
        allow_debug: false,
    }
}

#[test]
fn simulated_documents_round_trip_under_their_dev_root() {
    let nsm = SimulatedNsm::new("i-0123456789abcdef0-enc0123456789abcdef", pcrs()).unwrap();
    let doc = nsm.attest(Some(b"user data"), Some(b"challenge"), Some(b"identity key")).unwrap();
    let v = verify(&doc, &policy(nsm.root())).expect("verifies under the dev root");
    assert_eq!(v.module_id, "i-0123456789abcdef0-enc0123456789abcdef");
    assert_eq!(v.digest, "SHA384");
    assert_eq!(v.pcrs, pcrs());
    assert_eq!(v.user_data.as_deref(), Some(&b"user data"[..]));
    assert_eq!(v.nonce.as_deref(), Some(&b"challenge"[..]));
    assert_eq!(v.public_key.as_deref(), Some(&b"identity key"[..]));
    assert_eq!(v.root_fingerprint(), nsm.root().fingerprint());
    let age = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - v.timestamp_ms;
    assert!(age < 60_000, "timestamp is now");

    let none = nsm.attest(None, None, None).unwrap();
    let claims = Document::parse(&none).unwrap().claims().clone();
    assert_eq!((claims.user_data, claims.nonce, claims.public_key), (None, None, None));
}

#[test]
fn simulated_documents_are_refused_under_the_aws_root_and_under_another_dev_root() {
    let nsm = SimulatedNsm::new("i-sim", pcrs()).unwrap();
    let doc = nsm.attest(None, Some(b"challenge"), None).unwrap();
    let aws = Policy { root: TrustedRoot::aws_nitro(), ..policy(nsm.root()) };
    assert!(matches!(verify(&doc, &aws), Err(AttestError::Chain { cert: CertPosition::Bundle(0), .. })));
    let other = SimulatedNsm::new("i-other", pcrs()).unwrap();
    assert_eq!(verify(&doc, &policy(other.root())).unwrap_err().check(), "chain");
}

#[test]
fn the_dev_root_exports_as_pem_and_der_that_load_back() {
    let nsm = SimulatedNsm::new("i-sim", pcrs()).unwrap();
    let pem = nsm.root().to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(&TrustedRoot::from_pem(&pem).unwrap(), nsm.root());
    assert_eq!(&TrustedRoot::from_der(nsm.root().der().to_vec()).unwrap(), nsm.root());
}

#[test]
fn a_simulated_debug_enclave_is_refused_like_a_real_one() {
    let mut zero = pcrs();
    zero.insert(1, vec![0; 48]);
    let nsm = SimulatedNsm::new("i-sim", zero).unwrap();
    let doc = nsm.attest(None, None, None).unwrap();
    let policy = Policy { pcrs: BTreeMap::new(), nonce: None, ..policy(nsm.root()) };
    assert!(matches!(verify(&doc, &policy), Err(AttestError::Debug { zero_pcrs }) if zero_pcrs == [1]));
    verify(&doc, &Policy { allow_debug: true, ..policy }).expect("allowed");
}

#[test]
fn the_simulated_nsm_refuses_what_a_real_nsm_would() {
    assert!(matches!(SimulatedNsm::new("i-sim", BTreeMap::new()), Err(SimError::Input(_))));
    assert!(matches!(SimulatedNsm::new("i-sim", BTreeMap::from([(0, vec![1; 20])])), Err(SimError::Input(_))));
    assert!(matches!(SimulatedNsm::new("i-sim", BTreeMap::from([(32, vec![1; 48])])), Err(SimError::Input(_))));
    assert!(matches!(SimulatedNsm::new("", pcrs()), Err(SimError::Input(_))));
    let nsm = SimulatedNsm::new("i-sim", pcrs()).unwrap();
    assert!(matches!(nsm.attest(Some(&[0; 1025]), None, None), Err(SimError::Input(_))));
    assert!(matches!(nsm.attest(None, None, Some(&[])), Err(SimError::Input(_))));
    nsm.attest(Some(&[0; 1024]), Some(&[0; 1024]), Some(&[0; 1024])).expect("1024 bytes each is the limit, not over it");
}

#[test]
fn a_dev_ca_kept_in_a_file_signs_for_every_node_of_its_cluster() {
    use conclave_attest::sim::DevCa;
    let ca = DevCa::generate().unwrap();
    let file = ca.to_file();
    let pcrs: std::collections::BTreeMap<u8, Vec<u8>> = [(0u8, vec![1u8; 48]), (1, vec![2; 48]), (2, vec![3; 48])].into_iter().collect();
    // Two nodes read the same file; a third party trusts its root only.
    let node1 = SimulatedNsm::with_ca("node-1", pcrs.clone(), DevCa::from_file(&file).unwrap()).unwrap();
    let node2 = SimulatedNsm::with_ca("node-2", pcrs, DevCa::from_file(&file).unwrap()).unwrap();
    let root = conclave_attest::TrustedRoot::from_pem(file.split_once('\n').unwrap().1).unwrap();
    for nsm in [&node1, &node2] {
        let doc = nsm.attest(Some(b"binding"), Some(b"nonce"), None).unwrap();
        let policy = conclave_attest::Policy {
            root: root.clone(),
            pcrs: Default::default(),
            nonce: Some(b"nonce".to_vec()),
            at: std::time::SystemTime::now(),
            allow_debug: false,
        };
        conclave_attest::verify(&doc, &policy).unwrap();
    }
    // A file whose root is not its key's is refused.
    let other = DevCa::generate().unwrap().to_file();
    let mixed = format!("{}\n{}", file.split_once('\n').unwrap().0, other.split_once('\n').unwrap().1);
    assert!(DevCa::from_file(&mixed).is_err());
    assert!(DevCa::from_file("not a key\n").is_err());
}
