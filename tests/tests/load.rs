//! A signer under more heavy sessions (ECDSA's Paillier rounds) than it
//! runs at once: sessions take turns, first planned first, and no two
//! signers hold each other's sessions back. Real node processes (dev mode).

use conclave_proto::request::SignPayload;
use conclave_proto::{Scheme, WalletId};
use conclave_tests::{Cluster, Mode};

/// Summed over every node.
async fn total(cluster: &Cluster, sample: &str) -> f64 {
    let mut sum = 0.0;
    for i in 1..=cluster.node_ids().len() {
        sum += cluster.metric(i, sample).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_heavy_session_at_a_time_and_concurrent_requests_over_every_pair_all_sign() {
    let cluster = Cluster::start_with_long_queues(Mode::Dev, 3, 1).await;
    let client = cluster.client().await;
    let w = WalletId::new("busy").unwrap();
    let key = client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    let failovers = total(&cluster, "conclave_failovers_total").await;

    // Six digests at once (the full protocol), quorums chosen by the
    // cluster in turn: every pair runs sessions while every signer may
    // run one, so most wait their turn, holding what their peers send
    // meanwhile. (That no two signers hold each other's sessions back
    // whatever order sessions arrive in is `turns`' unit tests'.)
    let digests: Vec<[u8; 32]> = (0..6u8).map(|i| [i + 1; 32]).collect();
    let signed = futures::future::join_all(digests.iter().map(|d| client.sign(&w, Scheme::Ecdsa, SignPayload::Digest(d.to_vec()), vec![], None))).await;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).unwrap();
    for (digest, result) in digests.iter().zip(signed) {
        let result = result.expect("every request signs in its turn");
        let signature = k256::ecdsa::Signature::from_slice(&result.signature).unwrap();
        k256::ecdsa::signature::hazmat::PrehashVerifier::verify_prehash(&vk, digest, &signature).expect("verifies");
    }
    assert!(total(&cluster, "conclave_heavy_sessions_waited_total").await >= 1.0, "sessions waited for their turn");
    assert_eq!(total(&cluster, "conclave_failovers_total").await, failovers, "no session was given up for a peer that seemed silent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_get_a_turn_before_their_deadline_are_refused_at_once() {
    use conclave_proto::request::{RequestBody, SignRequest};
    use conclave_proto::result::Outcome;
    use conclave_proto::ErrorCode;
    let cluster = Cluster::start_with_long_queues(Mode::Dev, 3, 1).await;
    let client = cluster.client().await;
    let w = WalletId::new("crowded").unwrap();
    let key = client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    let signers = cluster.node_ids()[..2].to_vec();
    let failovers = total(&cluster, "conclave_failovers_total").await;
    // One signature first, so that both signers know how long a turn lasts.
    let started = std::time::Instant::now();
    client.sign(&w, Scheme::Ecdsa, SignPayload::Digest(vec![9; 32]), vec![], Some(signers.clone())).await.expect("signs alone");
    let turn = started.elapsed();

    // One request with a deadline far away, then ten at once, one turn at
    // a time, each with room for about two and a half turns: the first
    // ones run, those further back would end past their deadline and are
    // told so when they arrive. The far deadline lets no one jump the line
    // past the limit (as the earliest deadline first would: all eleven ran
    // at once and none met its deadline). Ten, not fewer: how many wait
    // ahead of a request depends on the order the signers see them in, and
    // how long a turn lasts on a busy machine changes from turn to turn.
    let sign = |digest: u8, timeout_ms: u64| {
        client.sign_request(&RequestBody::Sign(SignRequest {
            request_id: conclave_client::client::new_request_id(),
            wallet: w.clone(),
            scheme: Scheme::Ecdsa,
            version: key.version,
            payload: SignPayload::Digest(vec![digest; 32]),
            path: vec![],
            signers: Some(signers.clone()),
            timeout_ms: Some(timeout_ms),
            issued_at_ms: conclave_tests::wire::now_ms(),
        }))
    };
    let patient = sign(100, 120_000);
    let timeout_ms = (turn.as_millis() as u64 * 5 / 2).max(1);
    let hurried: Vec<_> = (0..10u8).map(|i| sign(i + 1, timeout_ms)).collect();
    let client = &client;
    let timed = |r| async move {
        let t = std::time::Instant::now();
        let result = client.send(r).await.expect("answered");
        (t.elapsed(), result.outcome)
    };
    let (patient, answered) = futures::future::join(timed(&patient), futures::future::join_all(hurried.iter().map(timed))).await;
    assert!(matches!(patient.1, Outcome::Ok { .. }), "a request whose deadline leaves room for the queue waits its turn and signs: {patient:?}");
    let mut refused = 0;
    for (took, outcome) in &answered {
        match outcome {
            Outcome::Error { error } if error.code == ErrorCode::Overloaded => {
                refused += 1;
                assert!(took.as_millis() < u128::from(timeout_ms), "refused after {took:?}, not before its deadline ({timeout_ms} ms): {error}");
            }
            Outcome::Ok { .. } => {}
            Outcome::Error { error } => assert_eq!(error.code, ErrorCode::Timeout, "{error}"),
        }
    }
    assert!(refused >= 1, "some requests were refused as overloaded: {answered:?}");
    assert_eq!(total(&cluster, "conclave_failovers_total").await, failovers, "a refusal is final, no other quorum is tried");
}
