//! Wallets made by the CGGMP21 release keep their keys under CGGMP24: the
//! core shares are read as they are, the committee's aux info is made
//! again once, by itself, at the first signature, and the shares are
//! sealed again. Real node processes on a state saved by that release
//! (`tests/fixtures/legacy-cggmp21`, see its README).

use conclave_client::ClientError;
use conclave_enclave::ecdsa;
use conclave_proto::link::BlobSlot;
use conclave_proto::request::SignPayload;
use conclave_proto::statement::Endorsed;
use conclave_proto::{CommitteeId, ErrorCode, Scheme, WalletId};
use conclave_tests::adversary::Adversary;
use conclave_tests::{bip32, Cluster};

fn saved() -> std::path::PathBuf {
    conclave_tests::workspace().join("tests/fixtures/legacy-cggmp21")
}

/// The wallet records as the old release's registry held them, put back
/// (as restoring the registry from a backup would).
async fn restore_records(cluster: &Cluster) -> Vec<(Scheme, Endorsed)> {
    let records: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&std::fs::read(saved().join("records.json")).unwrap()).unwrap();
    let registry = Adversary::connect(&cluster.nats_url()).await;
    let mut restored = Vec::new();
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        let record: Endorsed = serde_json::from_value(records[scheme.as_str()].clone()).unwrap();
        registry.overwrite_wallet_record(&WalletId::new("legacy").unwrap(), scheme, &record).await;
        restored.push((scheme, record));
    }
    restored
}

fn verify_ecdsa(public_key: &[u8], message: &[u8], signature: &[u8]) {
    use k256::ecdsa::signature::Verifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    vk.verify(message, &k256::ecdsa::Signature::from_slice(signature).unwrap()).expect("verifies under the CGGMP21 release's key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_of_the_cggmp21_release_keep_their_keys_and_sign_after_one_aux_renewal() {
    let mut cluster = Cluster::start_from_saved(&saved(), 3).await;
    let records = restore_records(&cluster).await;
    let client = cluster.client().await;
    let wallet = WalletId::new("legacy").unwrap();
    let aux_slot = BlobSlot::AuxInfo { committee: CommitteeId::of(&cluster.node_ids()) };
    for (scheme, record) in &records {
        let read = client.wallet(&wallet, *scheme).await.expect("the record verifies").expect("the wallet exists");
        assert_eq!(Some(read), record.unverified_record(), "{scheme}: the same key, xpub and committee");
    }
    let old = records[0].1.unverified_record().unwrap();
    for i in 1..=3 {
        assert!(!ecdsa::aux_is_current(&cluster.open_latest_blob(i, &aux_slot), 3), "the fixture holds CGGMP21 aux info");
        assert!(ecdsa::core_share(cluster.open_share(i, &wallet, Scheme::Ecdsa).secret.expose()).unwrap().1, "and CGGMP21 shares");
    }

    // Renewing the aux info takes the whole committee: with node-3 down the
    // first signature is refused, typed, and nothing is renewed.
    cluster.kill_node(3);
    cluster.wait_unready(3).await;
    let refused = client.sign(&wallet, Scheme::Ecdsa, SignPayload::Message(b"too early".to_vec()), vec![], None).await.expect_err("needs node-3");
    assert!(matches!(&refused, ClientError::Request(e) if e.code == ErrorCode::AuxInfoStale), "{refused}");
    cluster.start_node(3);
    cluster.wait_ready(3).await;

    // Every pair signs under the old key, the first after renewing.
    for pair in [[1, 2], [2, 3], [1, 3]] {
        let signers: Vec<_> = pair.iter().map(|&i| cluster.node_ids()[i - 1].clone()).collect();
        let message = format!("signed by {pair:?} under CGGMP24").into_bytes();
        let sig = client.sign(&wallet, Scheme::Ecdsa, SignPayload::Message(message.clone()), vec![], Some(signers)).await.expect("signs");
        assert_eq!(sig.public_key, old.public_key);
        verify_ecdsa(&old.public_key, &message, &sig.signature);
    }
    // A derived key: the old xpub's child.
    let (root, chain) = bip32::parse_xpub(old.xpub.as_deref().unwrap());
    let path = vec![3, 14];
    let sig = client.sign(&wallet, Scheme::Ecdsa, SignPayload::Message(b"child".to_vec()), path.clone(), None).await.expect("signs derived");
    let child = bip32::derive(root, chain, &path);
    assert_eq!(sig.public_key, child.to_vec());
    verify_ecdsa(&child, b"child", &sig.signature);

    // Renewed once: every member holds CGGMP24 aux info at version 2 (the
    // old one's floor passed) and its share sealed again as a core share.
    for i in 1..=3 {
        assert!(ecdsa::aux_is_current(&cluster.open_blob(i, &aux_slot, 2), 3), "node-{i} renewed its aux info");
        assert!(!cluster.node_dir(i).join("store/blobs").join(aux_slot.path()).join(conclave_proto::store::blob_file_name(3)).exists(), "and only once");
        assert!(!ecdsa::core_share(cluster.open_share(i, &wallet, Scheme::Ecdsa).secret.expose()).unwrap().1, "node-{i} sealed its share again");
    }

    // EdDSA shares (key-share's format, unchanged) sign as they are.
    let ed = records[1].1.unverified_record().unwrap();
    let sig = client.sign(&wallet, Scheme::Eddsa, SignPayload::Message(b"ed".to_vec()), vec![], None).await.expect("EdDSA signs");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(ed.public_key.as_slice().try_into().unwrap()).unwrap();
    vk.verify_strict(b"ed", &ed25519_dalek::Signature::from_slice(&sig.signature).unwrap()).expect("verifies under the old EdDSA key");
}
