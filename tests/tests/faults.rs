//! Faults: signers killed mid-session, nodes that stop heartbeating and
//! come back, duplicate requests. Real processes on loopback; a kill is a
//! SIGKILL of the node's signer and host.

use conclave_client::{Client, ClientError};
use conclave_proto::request::{RequestBody, SignPayload, SignRequest};
use conclave_proto::result::{Outcome, RequestResult, SignResult};
use conclave_proto::subjects::{result_subject, RESULT_STREAM, SIGN_SUBJECT};
use conclave_proto::{ErrorCode, NodeId, RequestId, Scheme, WalletId};
use conclave_tests::{eventually, wire, Cluster};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wallet(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

/// Where the cluster keeps its registry: the tests that depend on the
/// registry (readiness, fencing, watches) run on both backends.
#[derive(Clone, Copy)]
enum Registry {
    Nats,
    Consul,
}

impl Registry {
    async fn cluster(self) -> Cluster {
        match self {
            Registry::Nats => Cluster::start(3).await,
            Registry::Consul => Cluster::start_on_consul(3).await,
        }
    }
}

macro_rules! on_both_registries {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$test(super::Registry::Nats).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consul() {
                super::$test(super::Registry::Consul).await
            }
        }
    };
}

on_both_registries!(a_signer_that_dies_stops_counting_as_ready_before_its_heartbeat_lapses);
async fn a_signer_that_dies_stops_counting_as_ready_before_its_heartbeat_lapses(registry: Registry) {
    // Heartbeats count for ten minutes here: only the host's withdrawal
    // can take node-2 out of the others' views within the wait.
    let mut cluster = Cluster::start_with_lasting_heartbeats(3, matches!(registry, Registry::Consul)).await;
    let client = cluster.client().await;
    let w = wallet("withdrawn");
    client.keygen(&w, Scheme::Eddsa, 2, None).await.expect("keygen");
    cluster.kill_signer(2);
    cluster.wait_unready(2).await;
    // A request right away goes to the nodes that can sign.
    let message = |text: &str| SignPayload::Message(text.as_bytes().to_vec());
    let sig = client.sign(&w, Scheme::Eddsa, message("without node-2"), vec![], None).await.expect("signed without node-2");
    let ids = |names: &[&str]| names.iter().map(|n| NodeId::new(*n).unwrap()).collect::<Vec<_>>();
    assert_eq!(sig.signers, ids(&["node-1", "node-3"]));
    // Its signer back, the node counts again (its host announces it) and
    // signs.
    cluster.start_signer(2);
    cluster.wait_ready(3).await;
    let signers = ids(&["node-1", "node-2"]);
    let sig = client.sign(&w, Scheme::Eddsa, message("with node-2"), vec![], Some(signers.clone())).await.expect("node-2 signs again");
    assert_eq!(sig.signers, signers);
}

/// Signs `count` requests at once, without naming signers; returns each
/// request's outcome. The client waits longer than a node's deadline and
/// grace: a request that hung would end in the client's own
/// `ClientError::Timeout`, which every caller treats as a failure.
fn sign_concurrently(client: &Arc<Client>, w: &WalletId, count: usize) -> Vec<tokio::task::JoinHandle<Result<SignResult, ClientError>>> {
    (0..count)
        .map(|i| {
            let (client, w) = (client.clone(), w.clone());
            tokio::spawn(async move {
                let payload = SignPayload::Message(format!("transfer {i}").into_bytes());
                client.sign(&w, Scheme::Ecdsa, payload, vec![], None).await
            })
        })
        .collect()
}

/// Waits until node `i`'s signer is running at least one session.
async fn until_signing(cluster: &Cluster, i: usize) {
    eventually(&format!("node-{i} to be running a session"), Duration::from_secs(60), || async move {
        (cluster.metric(i, "conclave_sessions_active").await >= 1.0).then_some(())
    })
    .await;
}

on_both_registries!(a_signer_killed_mid_signing_is_replaced_by_another_quorum);
async fn a_signer_killed_mid_signing_is_replaced_by_another_quorum(registry: Registry) {
    let mut cluster = registry.cluster().await;
    let client = Arc::new(cluster.client().await);
    let w = wallet("failover");
    client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();

    // Requests take turns over the ready members; node-2 runs at least one
    // of them when it is killed (each quorum misses it with odds 1 in 3:
    // all six, 1 in 729).
    let requests = sign_concurrently(&client, &w, 6);
    until_signing(&cluster, 2).await;
    cluster.kill_node(2);
    let node2 = cluster.node_ids()[1].clone();
    let mut replaced = 0;
    for request in requests {
        let sig = request.await.unwrap().unwrap_or_else(|e| panic!("a 2-of-3 wallet keeps signing with one node dead: {e}"));
        if !sig.signers.contains(&node2) {
            replaced += 1;
        }
    }
    assert!(replaced >= 1, "at least one request in flight at the kill finished without node-2");
    let failovers = cluster.metric(1, "conclave_failovers_total").await + cluster.metric(3, "conclave_failovers_total").await;
    assert!(failovers >= 1.0, "a survivor moved a request to a new attempt");

    // Nothing of the abandoned attempts stays behind on the survivors.
    for i in [1, 3] {
        eventually(&format!("node-{i} to drop every session"), Duration::from_secs(30), || {
            let cluster = &cluster;
            async move { (cluster.metric(i, "conclave_sessions_active").await == 0.0).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_of_two_wallet_with_a_dead_signer_fails_with_peer_unavailable_in_time() {
    let mut cluster = Cluster::start(3).await;
    let client = Arc::new(cluster.client().await);
    let w = wallet("pair");
    let pair: Vec<NodeId> = cluster.node_ids()[..2].to_vec();
    // A new committee: its first ECDSA keygen makes its aux info.
    client.keygen(&w, Scheme::Ecdsa, 2, Some(pair.clone())).await.unwrap();

    let requests = sign_concurrently(&client, &w, 3);
    until_signing(&cluster, 2).await;
    cluster.kill_node(2);
    let mut unavailable = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(sig) => assert_eq!(sig.signers, pair, "finished before the kill"),
            Err(ClientError::Request(e)) => {
                assert_eq!(e.code, ErrorCode::PeerUnavailable, "{e}");
                assert_eq!(e.blamed, vec![pair[1].clone()], "the dead signer is named: {e}");
                unavailable += 1;
            }
            // A client timeout included: the nodes must answer first.
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert!(unavailable >= 1, "a request in flight at the kill failed with peer_unavailable");

    // With the signer gone from the registry, new requests fail at once.
    eventually("node-2 to drop out of the registry", Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.status().await.ok().filter(|s| s.ready == 2).map(|_| ()) }
    })
    .await;
    let created = r#"conclave_session_transitions_total{to="created"}"#;
    let before = cluster.metric(1, created).await + cluster.metric(3, created).await;
    let err = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"late".to_vec()), vec![], None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InsufficientPeers), "{err}");
    let after = cluster.metric(1, created).await + cluster.metric(3, created).await;
    assert_eq!(after, before, "refused without starting a session");
}

on_both_registries!(a_node_that_stops_heartbeating_is_skipped_and_chosen_again_when_back);
async fn a_node_that_stops_heartbeating_is_skipped_and_chosen_again_when_back(registry: Registry) {
    let mut cluster = registry.cluster().await;
    let client = cluster.client().await;
    let w = wallet("rejoin");
    client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let ids = cluster.node_ids();
    let sign = || client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"m".to_vec()), vec![], None);

    cluster.kill_node(1);
    eventually("node-1 to drop out of the registry", Duration::from_secs(30), || async { client.status().await.ok().filter(|s| s.ready == 2).map(|_| ()) })
        .await;
    let sig = sign().await.expect("signs without node-1");
    assert_eq!(sig.signers, ids[1..].to_vec());

    cluster.start_node(1);
    cluster.wait_ready(3).await;
    // Requests take turns over the ready members (by request id): in twelve,
    // each member is a signer (all three miss one with odds of 1 in 3^12).
    let mut carried = std::collections::BTreeSet::new();
    for _ in 0..12 {
        carried.extend(sign().await.expect("signs with node-1 back").signers);
    }
    assert_eq!(carried.into_iter().collect::<Vec<_>>(), ids, "node-1 is chosen again, no other process restarted, and every member signs");
}

on_both_registries!(concurrent_duplicates_of_a_request_yield_one_signature);
async fn concurrent_duplicates_of_a_request_yield_one_signature(registry: Registry) {
    let cluster = registry.cluster().await;
    let client = cluster.client().await;
    let w = wallet("dup");
    client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();

    let id = RequestId::new("dup-1").unwrap();
    let body = RequestBody::Sign(SignRequest {
        request_id: id.clone(),
        wallet: w.clone(),
        scheme: Scheme::Ecdsa,
        version: 1,
        payload: SignPayload::Message(b"once".to_vec()),
        path: vec![],
        signers: None,
        timeout_ms: None,
        issued_at_ms: wire::now_ms(),
    });
    let bytes = serde_json::to_vec(&wire::sign_request(&body, &cluster.initiator())).unwrap();
    let running_before = running_sessions(&cluster).await;
    let nats = async_nats::connect(cluster.nats_url()).await.unwrap();
    let mut results = nats.subscribe(result_subject(&id)).await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    // Five copies under five message ids, so that JetStream's own
    // deduplication does not hide them: the nodes must.
    let copies = (0..5).map(|i| {
        let js = js.clone();
        let payload = bytes.clone();
        async move {
            let msg = async_nats::jetstream::message::PublishMessage::build().payload(payload.into()).message_id(format!("dup-1-copy-{i}"));
            js.send_publish(SIGN_SUBJECT.to_string(), msg).await.unwrap().await.unwrap();
        }
    });
    futures::future::join_all(copies).await;
    let first = tokio::time::timeout(Duration::from_secs(60), results.next()).await.expect("a result").unwrap();
    let first = RequestResult::decode(&first.payload).unwrap();
    assert!(matches!(first.outcome, Outcome::Ok { .. }), "{:?}", first.outcome);

    // Every host that took part published its result; the stream kept one.
    let stream = js.get_stream(RESULT_STREAM).await.unwrap();
    let mut consumer_stream = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { filter_subject: result_subject(&id), ..Default::default() })
        .await
        .unwrap()
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut stored = Vec::new();
    while let Some(Ok(msg)) = consumer_stream.next().await {
        stored.push(RequestResult::decode(&msg.payload).unwrap());
    }
    assert_eq!(stored.len(), 1, "one stored result for the request: {stored:?}");
    // One signature: the stream kept the same statement this subscriber
    // heard first. Its endorser may be the other signer: both hosts
    // publish, a core subscriber hears both, and which one the stream
    // stores first is a race between them.
    let statement = |outcome: &Outcome| match outcome {
        Outcome::Ok { result } => result.statement.clone(),
        other => panic!("not a signature: {other:?}"),
    };
    assert_eq!(statement(&stored[0].outcome), statement(&first.outcome));
    // And only one session ran: its two signers started once each.
    assert_eq!(running_sessions(&cluster).await - running_before, 2.0, "one attempt, two signers, whatever the copies");
}

async fn running_sessions(cluster: &Cluster) -> f64 {
    let mut total = 0.0;
    for i in 1..=3 {
        total += cluster.metric(i, "conclave_session_transitions_total{to=\"running\"}").await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_goes_on_when_a_nats_server_dies() {
    let mut cluster = Cluster::start_on_nats_cluster(3).await;
    let client = Arc::new(cluster.client().await);
    let w = wallet("nats-loss");
    client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();

    // Requests in flight while the server some nodes and the client talk to dies.
    let requests = sign_concurrently(&client, &w, 3);
    cluster.nats(1).kill();
    for request in requests {
        request.await.unwrap().unwrap_or_else(|e| panic!("a request in flight survives the loss of one NATS server: {e}"));
    }
    // And the cluster keeps working on the two servers left: new wallets
    // (replicated buckets) and new signatures.
    let w2 = wallet("nats-loss-after");
    client.keygen(&w2, Scheme::Eddsa, 2, None).await.expect("keygen on two of three NATS servers");
    client.sign(&w2, Scheme::Eddsa, SignPayload::Message(b"after".to_vec()), vec![], None).await.expect("signs after the loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_fails_fast_the_majority_signs_and_it_rejoins_when_healed() {
    let cluster = Cluster::start_behind_proxies(3).await;
    let client = Arc::new(cluster.client().await);
    let w = wallet("partition");
    client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    let ids = cluster.node_ids();

    // Cut node-2 off while it runs at least one of the requests (each
    // quorum misses it with odds 1 in 3: all six, 1 in 729).
    let requests = sign_concurrently(&client, &w, 6);
    until_signing(&cluster, 2).await;
    cluster.link(2).cut();
    for request in requests {
        request.await.unwrap().unwrap_or_else(|e| panic!("the majority keeps signing: {e}"));
    }
    // The isolated node's signer gives up on its sessions by itself (round
    // timeout), instead of holding them: nothing stays active on it.
    eventually("node-2's signer to drop its sessions", Duration::from_secs(30), || {
        let cluster = &cluster;
        async move { (cluster.metric(2, "conclave_sessions_active").await == 0.0).then_some(()) }
    })
    .await;
    let sig = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"while cut".to_vec()), vec![], None).await.expect("signs without node-2");
    assert!(!sig.signers.contains(&ids[1]), "{:?}", sig.signers);

    // Healed, it heartbeats again and is chosen again, with no restart.
    cluster.link(2).heal();
    eventually("node-2 to be ready again", Duration::from_secs(60), || {
        let client = client.clone();
        async move { client.status().await.ok().filter(|s| s.ready == 3).map(|_| ()) }
    })
    .await;
    // Requests take turns over the ready members: one of twelve that has no
    // node-2 in its quorum has odds of 1 in 3^12.
    let mut carried = std::collections::BTreeSet::new();
    for i in 0..12 {
        let message = SignPayload::Message(format!("healed {i}").into_bytes());
        carried.extend(client.sign(&w, Scheme::Ecdsa, message, vec![], None).await.expect("signs after healing").signers);
    }
    assert!(carried.contains(&ids[1]), "node-2 is chosen again: {carried:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_within_the_deadline_still_signs() {
    let cluster = Cluster::start_behind_proxies(3).await;
    let client = cluster.client().await;
    let w = wallet("slow");
    client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    let pair: Vec<NodeId> = cluster.node_ids()[..2].to_vec();
    // 300 ms each way on every chunk node-2 sends or receives: a CGGMP21
    // signature's four rounds take seconds longer, well within the deadline
    // and under the round timeout.
    cluster.link(2).delay(Duration::from_millis(300));
    let started = Instant::now();
    let sig = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"slowly".to_vec()), vec![], Some(pair.clone())).await.expect("a slow signer still signs");
    assert_eq!(sig.signers, pair);
    assert!(started.elapsed() > Duration::from_millis(600), "the delay was in the path ({:?})", started.elapsed());
}
