//! A host that lies gets nothing. An adversary that can publish on any
//! NATS subject and write any registry key (`conclave_tests::adversary`,
//! as a compromised host or NATS user could) forges results, records and
//! answers, serves old sealed versions and replays envelopes; the client
//! refuses what the signers did not sign, and the signers refuse what no
//! current request asks for. Real node processes throughout.

use conclave_client::ClientError;
use conclave_proto::request::{RequestBody, SignPayload, SignRequest};
use conclave_proto::result::{KeygenResult, Outcome};
use conclave_proto::{ErrorCode, NodeId, Scheme, WalletId};
use conclave_tests::adversary::{Adversary, ATTACKER_KEY};
use conclave_tests::{eventually, Cluster, Mode};
use std::time::Duration;

fn ids(cluster: &Cluster, which: &[usize]) -> Vec<NodeId> {
    which.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect()
}

fn now_ms() -> u64 {
    conclave_tests::wire::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_keygen_result_published_first_is_refused_and_the_real_key_stays_obtainable() {
    let cluster = Cluster::start(3).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let client = cluster.client().await;
    let w = WalletId::new("forged-keygen").unwrap();

    let forger = adversary.forge_next_keygen_result().await;
    let refused = client.keygen(&w, Scheme::Eddsa, 2, None).await.expect_err("a forged result is no key");
    assert!(matches!(refused, ClientError::Unauthenticated(_)), "{refused}");
    forger.await.unwrap();

    // The signers made a real key all the same: its record, signed by the
    // whole committee, is what the client reads, and it signs.
    let real = eventually("the wallet's signed record", Duration::from_secs(60), || async { client.wallet(&w, Scheme::Eddsa).await.ok().flatten() }).await;
    assert_ne!(real.public_key, ATTACKER_KEY.to_vec());
    assert_eq!(real.committee, cluster.node_ids());
    let sig = client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"to the real key".to_vec()), vec![], None).await.expect("the real key signs");
    assert_eq!(sig.public_key, real.public_key);

    // The CLI: a non-zero exit with the typed code, and no key printed.
    let forger = adversary.forge_next_keygen_result().await;
    let (code, out, _) = cluster.cli(&["keygen", "--wallet", "forged-cli", "--scheme", "eddsa", "--threshold", "2"]);
    forger.await.unwrap();
    assert_eq!((code, out["error"]["code"].as_str()), (1, Some("unauthenticated_result")), "{out}");
    assert!(!out.to_string().contains(&hex::encode(ATTACKER_KEY)), "{out}");
    let (code, out, _) = eventually("the CLI shows the real record", Duration::from_secs(60), || async {
        let shown = cluster.cli(&["wallet", "show", "--wallet", "forged-cli", "--scheme", "eddsa"]);
        (shown.0 == 0).then_some(shown)
    })
    .await;
    assert_eq!(code, 0);
    assert_ne!(out["public_key"].as_str(), Some(hex::encode(ATTACKER_KEY).as_str()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_record_and_forged_query_answers_are_refused_and_the_real_key_stays_obtainable() {
    let cluster = Cluster::start(3).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let client = cluster.client().await;
    let w = WalletId::new("overwritten").unwrap();
    let real = client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();

    // The registry's record now names the attacker's key, "signed" by the
    // committee with the attacker's own key.
    let forged = adversary.forged_record(&real, [0; 32]);
    adversary.overwrite_wallet_record(&w, Scheme::Eddsa, &forged).await;
    // Each host answers from its own copy of what its signer signed.
    assert_eq!(client.wallet(&w, Scheme::Eddsa).await.unwrap(), Some(real.clone()));
    let sig =
        client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"after the overwrite".to_vec()), vec![], None).await.expect("signs, checked against the real key");
    assert_eq!(sig.public_key, real.public_key);

    // A wallet that exists only in the registry: no signer signed it.
    let phantom = WalletId::new("phantom").unwrap();
    let forged_phantom = adversary.forged_record(&KeygenResult { wallet: phantom.clone(), ..real.clone() }, [0; 32]);
    adversary.overwrite_wallet_record(&phantom, Scheme::Eddsa, &forged_phantom).await;
    let refused = client.wallet(&phantom, Scheme::Eddsa).await.expect_err("a record no signer signed");
    assert!(matches!(refused, ClientError::Unauthenticated(_)), "{refused}");
    let (code, out, _) = cluster.cli(&["wallet", "show", "--wallet", "phantom", "--scheme", "eddsa"]);
    assert_eq!((code, out["error"]["code"].as_str()), (1, Some("unauthenticated_result")), "{out}");
    // The listing shows the signed records and names the refused one.
    let (code, out, stderr) = cluster.cli(&["wallet", "list"]);
    assert_eq!(code, 1, "{out} {stderr}");
    let listed: Vec<KeygenResult> = serde_json::from_value(out["wallets"].clone()).unwrap();
    assert_eq!(out["refused"][0]["error"]["code"], "unauthenticated_result", "{out}");
    assert_eq!(listed, vec![real.clone()], "only the record its committee signed, with its real key");
    assert!(stderr.contains("phantom (eddsa): unauthenticated_result"), "{stderr}");

    // Someone answers every wallet query first, with the forged record.
    let liar = adversary.answer_wallet_queries_with(forged).await;
    assert_eq!(client.wallet(&w, Scheme::Eddsa).await.unwrap(), Some(real.clone()), "the honest hosts' answers count");
    let (code, out, _) = cluster.cli(&["wallet", "show", "--wallet", "overwritten", "--scheme", "eddsa"]);
    assert_eq!((code, out["public_key"].as_str()), (0, Some(hex::encode(&real.public_key).as_str())), "{out}");
    liar.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reshare_hosts_serving_version_1_get_no_signature_from_the_old_committee() {
    let cluster = Cluster::start_in(Mode::Dev, 4).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let client = cluster.client().await;
    let w = WalletId::new("rolled-back").unwrap();
    let scheme = Scheme::Eddsa;
    client.keygen(&w, scheme, 2, Some(ids(&cluster, &[1, 2, 3]))).await.unwrap();
    let old_record = adversary.wallet_record(&w, scheme).await;
    // A request the initiator signed for version 1, before the reshare.
    let early = client.sign_request(&RequestBody::Sign(SignRequest {
        request_id: conclave_client::client::new_request_id(),
        wallet: w.clone(),
        scheme,
        version: 1,
        payload: SignPayload::Message(b"pay the attacker".to_vec()),
        path: vec![],
        signers: Some(ids(&cluster, &[1, 2])),
        timeout_ms: None,
        issued_at_ms: now_ms(),
    }));
    client.reshare(&w, scheme, 3, ids(&cluster, &[1, 2, 3, 4])).await.expect("reshare");
    // Hosts still settling the reshare write version 2's record (some after
    // the client has its result): the rollback comes after the last.
    for i in 1..=4 {
        eventually(&format!("node-{i} done with the reshare"), Duration::from_secs(60), || async {
            (cluster.metric(i, "conclave_requests_following").await == 0.0).then_some(())
        })
        .await;
    }

    // The hosts roll back: their stores serve version 1 again, and the
    // registry names the old committee.
    for i in 1..=3 {
        let v2 = cluster.node_dir(i).join("store/blobs/share/rolled-back/eddsa/0000000002.blob");
        std::fs::remove_file(&v2).unwrap_or_else(|e| panic!("{}: {e}", v2.display()));
    }
    adversary.overwrite_wallet_record(&w, scheme, &old_record).await;
    // The old request now reaches two old members, each of which is served
    // its version 1 share: neither opens a version it replaced.
    match client.send(&early).await.expect("answered").outcome {
        Outcome::Error { error } => assert_eq!(error.code, ErrorCode::VersionMismatch, "{error}"),
        Outcome::Ok { .. } => panic!("the old committee signed after the reshare"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_signer_refuses_requests_issued_before_it_started() {
    let mut cluster = Cluster::start_in(Mode::Dev, 3).await;
    let client = cluster.client().await;
    let w = WalletId::new("restarted").unwrap();
    let key = client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let request = |signers: Option<Vec<NodeId>>, request_id: conclave_proto::RequestId| {
        client.sign_request(&RequestBody::Sign(SignRequest {
            request_id,
            wallet: w.clone(),
            scheme: Scheme::Eddsa,
            version: key.version,
            payload: SignPayload::Message(b"issued before the restart".to_vec()),
            path: vec![],
            signers,
            timeout_ms: None,
            issued_at_ms: now_ms(),
        }))
    };
    let pinned = request(Some(ids(&cluster, &[1, 2])), conclave_client::client::new_request_id());
    // A free request whose first quorum (by its id) includes node-2.
    let everyone: std::collections::HashSet<NodeId> = cluster.node_ids().into_iter().collect();
    let with_node_2 = std::iter::repeat_with(conclave_client::client::new_request_id)
        .find(|id| conclave_host::quorum::first_signers(&cluster.node_ids(), 2, None, &everyone, id).unwrap().contains(&ids(&cluster, &[2])[0]))
        .expect("two thirds of ids qualify");
    let free = request(None, with_node_2);
    // A signer that restarts forgets what it ran: it must not run these.
    cluster.restart_signer_with(2, &[]).await;
    match client.send(&pinned).await.expect("answered").outcome {
        Outcome::Error { error } => {
            assert_eq!(error.code, ErrorCode::PeerUnavailable, "{error}");
            assert_eq!(error.blamed, ids(&cluster, &[2]), "{error}");
        }
        Outcome::Ok { .. } => panic!("a signer ran a request issued before it restarted"),
    }
    // Where another quorum exists, the request moves to it.
    match client.send(&free).await.expect("answered").outcome {
        Outcome::Ok { result } => {
            let sig = client.roster().sign_result(&result, &free.body).expect("signed by its signers");
            assert!(!sig.signers.contains(&ids(&cluster, &[2])[0]), "{:?}", sig.signers);
        }
        Outcome::Error { error } => panic!("{error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_envelopes_are_dropped_and_counted_and_signing_goes_on() {
    let cluster = Cluster::start_in(Mode::Dev, 3).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let client = cluster.client().await;
    let w = WalletId::new("replayed").unwrap();
    client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let replayer = adversary.replay_envelopes_to(&ids(&cluster, &[2])[0], 3).await;
    for i in 0..5 {
        let message = format!("payment {i}").into_bytes();
        client.sign(&w, Scheme::Eddsa, SignPayload::Message(message), vec![], Some(ids(&cluster, &[1, 2]))).await.expect("signs despite the replays");
    }
    replayer.abort();
    let dropped = cluster.metric(2, r#"conclave_envelopes_dropped_total{reason="replayed"}"#).await;
    assert!(dropped >= 1.0, "replays counted: {dropped}");
}
