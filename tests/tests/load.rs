//! A signer under more heavy sessions (ECDSA's Paillier rounds) than it
//! runs at once: sessions take turns, earliest deadline first, and no two
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
    let cluster = Cluster::start_with_heavy_sessions(Mode::Dev, 3, 1).await;
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
