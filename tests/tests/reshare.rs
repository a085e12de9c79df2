//! Resharing end to end: a key moves to a new committee or threshold and
//! keeps its public key (and xpub); real node processes, dev mode (so that
//! the test can open each node's sealed records), four nodes.

use conclave_proto::request::{RequestBody, ReshareRequest, SignPayload, SignRequest};
use conclave_proto::result::Outcome;
use conclave_proto::subjects::RESHARE_SUBJECT;
use conclave_proto::{ErrorCode, NodeId, Scheme, WalletId};
use conclave_tests::{Cluster, Mode};

fn ids(cluster: &Cluster, which: &[usize]) -> Vec<NodeId> {
    which.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_moves_to_three_of_four_with_a_node_joining_and_signs_under_the_same_key() {
    let cluster = Cluster::start_in(Mode::Dev, 4).await;
    let (client, other) = (cluster.client().await, cluster.client().await);
    for scheme in [Scheme::Eddsa, Scheme::Ecdsa] {
        let w = WalletId::new(format!("join-{scheme}")).unwrap();
        let old = client.keygen(&w, scheme, 2, Some(ids(&cluster, &[1, 2, 3]))).await.expect("keygen");
        let message = SignPayload::Message(b"before".to_vec());
        let path = if scheme == Scheme::Ecdsa { vec![0, 7] } else { vec![] };
        let before = client.sign(&w, scheme, message.clone(), path.clone(), None).await.expect("the old committee signs");
        // A request the initiator signed while version 1 was current, sent
        // after the switch.
        let early = client.sign_request(&RequestBody::Sign(SignRequest {
            request_id: conclave_client::client::new_request_id(),
            wallet: w.clone(),
            scheme,
            version: 1,
            payload: message.clone(),
            path: path.clone(),
            signers: None,
            timeout_ms: None,
            issued_at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        }));

        // Another client reshares: `client` still holds version 1's record.
        let new = other.reshare(&w, scheme, 3, ids(&cluster, &[1, 2, 3, 4])).await.expect("reshare");
        assert_eq!((new.public_key.as_slice(), new.xpub.as_ref()), (old.public_key.as_slice(), old.xpub.as_ref()), "same key, same xpub");
        assert_eq!((new.version, new.threshold, new.committee.clone()), (2, 3, ids(&cluster, &[1, 2, 3, 4])));
        assert_eq!(other.wallet(&w, scheme).await.unwrap().as_ref(), Some(&new), "the wallet record names the new version");
        // It names version 1, which no signer holds any more: refused (by
        // the hosts, whose registry names version 2, and by every signer's
        // floor, which tests/hsm.rs reaches with lying hosts), so that no
        // share a reshare replaced ever signs again.
        match client.send(&early).await.expect("the early request is answered").outcome {
            Outcome::Error { error } => {
                assert_eq!(error.code, ErrorCode::VersionMismatch, "{error}")
            }
            other => panic!("a request for version 1 after the reshare got {other:?}"),
        }
        // The joining node signs with two old members; the SDK verifies
        // against the wallet record, and the derived key is the same. The
        // client's first request names version 1 (refused), so it reads the
        // record again and asks again.
        let after = client.sign(&w, scheme, message.clone(), path.clone(), Some(ids(&cluster, &[2, 3, 4]))).await.expect("the new committee signs");
        assert_eq!(after.version, 2);
        assert_eq!(after.public_key, before.public_key, "the same (derived) public key signs");
        // Two signers no longer suffice.
        let too_few = client.sign(&w, scheme, message, path, Some(ids(&cluster, &[1, 4]))).await.unwrap_err();
        assert_eq!(too_few.code(), Some(ErrorCode::InvalidSigners), "{too_few}");
        // Every new member sealed version 2 for the new committee.
        for i in 1..=4 {
            let record = cluster.open_share_version(i, &w, scheme, 2);
            assert_eq!(record.public, new, "node-{i}'s sealed record");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_four_moves_to_two_of_three_and_the_node_that_leaves_keeps_no_share() {
    let cluster = Cluster::start_in(Mode::Dev, 4).await;
    let client = cluster.client().await;
    let (w, scheme) = (WalletId::new("leave").unwrap(), Scheme::Eddsa);
    let old = client.keygen(&w, scheme, 3, None).await.expect("keygen");
    assert_eq!(old.committee.len(), 4);
    // The committee's wallets, as `conclave reshare --committee` finds them.
    let everyone = ids(&cluster, &[4, 3, 2, 1]);
    assert_eq!(client.wallets_of(scheme, everyone.clone()).await.unwrap(), vec![old.clone()]);
    assert!(client.wallets_of(Scheme::Ecdsa, everyone.clone()).await.unwrap().is_empty(), "another scheme's wallets are not listed");
    let new = client.reshare(&w, scheme, 2, ids(&cluster, &[1, 2, 3])).await.expect("reshare");
    assert!(client.wallets_of(scheme, everyone).await.unwrap().is_empty(), "the wallet left the old committee");
    assert_eq!(client.wallets_of(scheme, ids(&cluster, &[1, 2, 3])).await.unwrap(), vec![new.clone()]);
    assert_eq!((new.version, new.threshold, new.public_key.clone()), (2, 2, old.public_key.clone()));
    // node-4 sealed a version-2 record without a share: it will never sign
    // with its version-1 share again.
    let retired = cluster.open_share_version(4, &w, scheme, 2);
    assert_eq!(retired.public, new);
    assert!(retired.secret.expose().is_empty(), "the leaving node keeps no share");
    let message = SignPayload::Message(b"after".to_vec());
    client.sign(&w, scheme, message.clone(), vec![], Some(ids(&cluster, &[1, 3]))).await.expect("two of the new committee sign");
    let refused = client.sign(&w, scheme, message, vec![], Some(ids(&cluster, &[1, 4]))).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidSigners), "the departed node is not a signer: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_that_cannot_run_is_refused_up_front_and_the_key_keeps_signing() {
    let cluster = Cluster::start_in(Mode::Dev, 4).await;
    let client = cluster.client().await;
    let (w, scheme) = (WalletId::new("refused").unwrap(), Scheme::Eddsa);
    let key = client.keygen(&w, scheme, 2, Some(ids(&cluster, &[1, 2, 3]))).await.expect("keygen");
    let code = |r: Result<_, conclave_client::ClientError>| r.map(|_| ()).unwrap_err().code();
    // A request built from a stale read of the wallet (another version)
    // is told so by its own code, which the SDK never sends.
    let stale = RequestBody::Reshare(ReshareRequest {
        request_id: conclave_proto::RequestId::new("stale-reshare").unwrap(),
        wallet: w.clone(),
        scheme,
        public_key: key.public_key.clone(),
        xpub: key.xpub.clone(),
        version: 2,
        committee: key.committee.clone(),
        threshold: key.threshold,
        new_committee: ids(&cluster, &[1, 2, 3, 4]),
        new_threshold: 3,
        issued_at_ms: conclave_tests::wire::now_ms(),
    });
    let signed = serde_json::to_vec(&conclave_tests::wire::sign_request(&stale, &cluster.initiator())).unwrap();
    let result = conclave_tests::wire::request_raw(&cluster.nats_url(), RESHARE_SUBJECT, "stale-reshare", signed).await;
    match result.outcome {
        Outcome::Error { error } => assert_eq!(error.code, ErrorCode::KeyMismatch, "{error}"),
        other => panic!("a stale reshare ran: {other:?}"),
    }
    assert_eq!(code(client.reshare(&w, scheme, 4, ids(&cluster, &[1, 2, 3])).await), Some(ErrorCode::Malformed), "t' above n'");
    assert_eq!(code(client.reshare(&w, scheme, 1, ids(&cluster, &[1, 2, 3])).await), Some(ErrorCode::Malformed), "t' of 1: everyone would hold the key");
    let unknown = WalletId::new("no-such-wallet").unwrap();
    assert_eq!(code(client.reshare(&unknown, scheme, 2, ids(&cluster, &[1, 2])).await), Some(ErrorCode::UnknownWallet));
    let mut cluster = cluster;
    cluster.kill_node(4);
    let gone = ids(&cluster, &[4]).remove(0);
    conclave_tests::eventually("node-4 to be seen not ready", std::time::Duration::from_secs(60), || {
        let (client, gone) = (&client, &gone);
        async move { client.status().await.ok()?.nodes.iter().any(|n| n.id == *gone && !n.ready).then_some(()) }
    })
    .await;
    assert_eq!(code(client.reshare(&w, scheme, 2, ids(&cluster, &[1, 2, 4])).await), Some(ErrorCode::InsufficientPeers), "a new member is down");
    let sig = client.sign(&w, scheme, SignPayload::Message(b"still".to_vec()), vec![], None).await.expect("version 1 still signs");
    assert_eq!(sig.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_whose_new_member_dies_half_way_fails_and_the_old_version_keeps_signing() {
    let mut cluster = Cluster::start_in(Mode::Dev, 4).await;
    let client = std::sync::Arc::new(cluster.client().await);
    let (w, scheme) = (WalletId::new("halfway").unwrap(), Scheme::Ecdsa);
    let old = client.keygen(&w, scheme, 2, Some(ids(&cluster, &[1, 2, 3]))).await.expect("keygen");
    // A committee that has no aux info yet: its members make it first,
    // which keeps the session running long enough to be cut.
    let reshare = {
        let (client, w, new) = (client.clone(), w.clone(), ids(&cluster, &[1, 2, 4]));
        tokio::spawn(async move { client.reshare(&w, scheme, 2, new).await })
    };
    conclave_tests::eventually("node-4 to be running the reshare", std::time::Duration::from_secs(60), || {
        let cluster = &cluster;
        async move { (cluster.metric(4, "conclave_sessions_active").await >= 1.0).then_some(()) }
    })
    .await;
    cluster.kill_signer(4);
    let error = reshare.await.unwrap().expect_err("a reshare without one of its new members fails");
    assert_eq!(error.code(), Some(ErrorCode::PeerUnavailable), "{error}");
    // Nothing moved: the record, the shares, the signing.
    assert_eq!(client.wallet(&w, scheme).await.unwrap(), Some(old));
    for i in 1..=3 {
        let versions = std::fs::read_dir(cluster.node_dir(i).join("store/blobs/share").join(w.as_str()).join(scheme.to_string())).unwrap().count();
        assert_eq!(versions, 1, "node-{i} stored no new version");
    }
    let sig = client.sign(&w, scheme, SignPayload::Message(b"still".to_vec()), vec![], Some(ids(&cluster, &[1, 3]))).await.expect("version 1 still signs");
    assert_eq!(sig.version, 1);
    for i in 1..=3 {
        conclave_tests::eventually(&format!("node-{i} to drop the session"), std::time::Duration::from_secs(30), || {
            let cluster = &cluster;
            async move { (cluster.metric(i, "conclave_sessions_active").await == 0.0).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_whose_sub_shares_do_not_check_is_blamed_and_the_old_version_keeps_signing() {
    let mut cluster = Cluster::start_in(Mode::Dev, 4).await;
    // node-2's signer deals sub-shares that do not match its commitments.
    cluster.restart_signer_with(2, &[("CONCLAVE_FAULT_RESHARE_TAMPER", "1")]).await;
    cluster.wait_ready(4).await;
    let client = cluster.client().await;
    let (w, scheme) = (WalletId::new("cheat").unwrap(), Scheme::Eddsa);
    let old = client.keygen(&w, scheme, 2, Some(ids(&cluster, &[1, 2, 3]))).await.expect("keygen");
    let error = client.reshare(&w, scheme, 3, ids(&cluster, &[1, 2, 3, 4])).await.expect_err("a cheating dealer stops the reshare");
    match &error {
        conclave_client::ClientError::Request(e) => {
            assert_eq!(e.code, ErrorCode::ProtocolAbort, "{e}");
            assert_eq!(e.blamed, ids(&cluster, &[2]), "the dealer is named: {e}");
            assert!(e.reason.contains("sub_share"), "the failed check is named: {e}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(client.wallet(&w, scheme).await.unwrap(), Some(old), "the wallet still names version 1");
    let sig = client.sign(&w, scheme, SignPayload::Message(b"still".to_vec()), vec![], Some(ids(&cluster, &[1, 3]))).await.expect("version 1 still signs");
    assert_eq!(sig.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_whose_new_members_cannot_all_acknowledge_leaves_the_old_version_signing_and_a_retry_finishes_it() {
    let mut cluster = Cluster::start_in(Mode::Dev, 4).await;
    let client = cluster.client().await;
    let (w, scheme) = (WalletId::new("unacknowledged").unwrap(), Scheme::Eddsa);
    let old = client.keygen(&w, scheme, 3, None).await.expect("keygen");
    let message = |text: &str| SignPayload::Message(text.as_bytes().to_vec());
    // node-3, a new member, stops right after storing its new share, before
    // it acknowledges it; node-4 leaves.
    cluster.restart_signer_with(3, &[("CONCLAVE_FAULT_RESHARE_CRASH_BEFORE_ACK", "1")]).await;
    let cut = client.reshare(&w, scheme, 2, ids(&cluster, &[1, 2, 3])).await.expect_err("node-3 never acknowledges");
    assert_eq!(cut.code(), Some(ErrorCode::PeerUnavailable), "{cut}");
    // Nobody committed to version 2: the record names version 1, and
    // version 1 signs, the node that was leaving among its signers.
    assert_eq!(client.wallet(&w, scheme).await.unwrap(), Some(old.clone()));
    let sig = client.sign(&w, scheme, message("still version 1"), vec![], Some(ids(&cluster, &[1, 2, 4]))).await.expect("version 1 signs");
    assert_eq!(sig.version, 1);

    // A retry, with node-3 back, replaces the shares nobody committed to.
    cluster.restart_signer_with(3, &[]).await;
    cluster.wait_ready(4).await;
    let new = client.reshare(&w, scheme, 2, ids(&cluster, &[1, 2, 3])).await.expect("the retry finishes the reshare");
    assert_eq!((new.version, new.public_key.clone()), (2, old.public_key.clone()));
    let sig = client.sign(&w, scheme, message("version 2"), vec![], Some(ids(&cluster, &[1, 3]))).await.expect("version 2 signs");
    assert_eq!(sig.version, 2);
    assert!(cluster.open_share_version(4, &w, scheme, 2).secret.expose().is_empty(), "node-4 retired its share");
}
