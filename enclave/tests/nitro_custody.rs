//! Nitro custody end to end, but for the two parts that exist only on AWS:
//! the NSM (the dev CA's simulated one stands in) and KMS (a stand-in in
//! `support/nitro.rs`). The enclave's real code runs: its link to a host,
//! its TLS and SigV4 client, the Recipient flow, the CMS envelope, the
//! sealing.

#[path = "support/nitro.rs"]
mod nitro;

use conclave_enclave::custody::CustodyError;
use conclave_enclave::kms::KmsError;
use conclave_proto::NodeId;
use nitro::{host, Host, Setup};

#[tokio::test]
async fn first_start_makes_the_seal_key_and_identity_and_every_later_start_gets_them_back() {
    let mut setup = Setup::new(None);
    let host = host();
    let first = setup.start(&host).await.unwrap();
    assert_eq!(setup.calls(), ["GenerateDataKey"]);
    assert_eq!(host.paths(), ["custody/identity@1", "custody/seal-key@1"]);
    let identity = first.keys.identity();
    assert_eq!(identity.mode, conclave_proto::link::Mode::Nitro);

    // A restart: the same identity, by Decrypt of the wrapped key, and
    // nothing new in the store.
    let second = setup.start(&host).await.unwrap();
    assert_eq!(setup.calls(), ["GenerateDataKey", "Decrypt"]);
    assert_eq!(second.keys.identity(), identity);
    assert_eq!(host.paths(), ["custody/identity@1", "custody/seal-key@1"]);
    assert_eq!(second.sealer.key_id(), first.sealer.key_id());
    // What one start sealed, the next opens.
    use conclave_enclave::seal::SealContext;
    let slot = conclave_proto::link::BlobSlot::Primes;
    let blob = first.sealer.seal(&SealContext::blob(&setup.node, &slot, 1), b"primes").unwrap();
    assert_eq!(&**second.sealer.open(&SealContext::blob(&setup.node, &slot, 1), &blob).unwrap(), b"primes");
    // The host keeps only ciphertext: the sealed identity does not carry
    // even the public signing key in the clear.
    let stored = host.store.lock().unwrap()["custody/identity"][0].sealed.clone();
    assert!(!stored.windows(32).any(|w| w == identity.sign_key), "the identity is sealed");
}

#[tokio::test]
async fn an_image_the_key_policy_does_not_name_gets_no_key_and_stores_nothing() {
    let mut setup = Setup::new(Some(vec![0x42; 48]));
    let host = host();
    match setup.start(&host).await.err() {
        Some(CustodyError::Kms(KmsError::Refused { operation: "GenerateDataKey", kind, .. })) => assert_eq!(kind, "AccessDeniedException"),
        other => panic!("{other:?}"),
    }
    assert!(host.paths().is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_host_that_swaps_or_loses_the_wrapped_key_cannot_change_the_seal_key() {
    let mut setup = Setup::new(None);
    let host = host();
    let identity = setup.start(&host).await.unwrap().keys.identity();
    // Another node's wrapped key (same KMS key, other encryption context).
    let mut other = Setup { node: NodeId::new("node-2").unwrap(), ..Setup::new(None) };
    other.kms = setup.kms.clone();
    other.nitro = setup.nitro.clone();
    other.ca_file = setup.ca_file.clone();
    let other_host = self::host();
    other.start(&other_host).await.unwrap();
    let foreign = other_host.store.lock().unwrap()["custody/seal-key"][0].clone();
    let mine = host.store.lock().unwrap()["custody/seal-key"][0].clone();
    host.store.lock().unwrap().insert("custody/seal-key".into(), vec![foreign]);
    match setup.start(&host).await.err() {
        Some(CustodyError::Kms(KmsError::Refused { operation: "Decrypt", kind, .. })) => assert_eq!(kind, "InvalidCiphertextException"),
        other => panic!("{other:?}"),
    }
    // Lost: refused, rather than a new key that cannot open the identity.
    host.store.lock().unwrap().remove("custody/seal-key");
    assert!(matches!(setup.start(&host).await.err(), Some(CustodyError::SealKeyLost)));
    assert_eq!(host.paths(), ["custody/identity@1"], "nothing was written");
    // Put back: the node is itself again.
    host.store.lock().unwrap().insert("custody/seal-key".into(), vec![mine]);
    assert_eq!(setup.start(&host).await.unwrap().keys.identity(), identity);
}

#[tokio::test]
async fn a_host_without_credentials_is_a_typed_error() {
    let mut setup = Setup::new(None);
    let host = Host { credentials: Err("the instance has no IAM role".into()), ..host() };
    assert!(matches!(setup.start(&host).await.err(), Some(CustodyError::NoCredentials(reason)) if reason.contains("IAM role")));
    assert!(setup.calls().is_empty());
}
