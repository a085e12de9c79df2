//! Presignature pools (ECDSA, CGGMP24; EdDSA: FROST nonces): filled in the background for every
//! signer set the rotation chooses, serving message signatures in one
//! round, never a digest, never twice (a keeper's host that starts again
//! on a registry that hands one out again,
//! a signer killed between taking one and sending its partial), a bad
//! partial blamed, and the full protocol whenever none can serve. Real
//! node processes (dev mode, so that the tests can read the pools).

use conclave_client::ClientError;
use conclave_proto::registry::PoolRecord;
use conclave_proto::request::SignPayload;
use conclave_proto::result::KeygenResult;
use conclave_proto::{ErrorCode, NodeId, PoolId, Scheme, WalletId};
use conclave_tests::adversary::Adversary;
use conclave_tests::{eventually, Cluster};
use std::time::Duration;

/// Presignatures a 2-of-3 pool of `size` holds when full: one pool per
/// pair, three pairs.
const PAIRS: usize = 3;

fn ids(cluster: &Cluster, which: &[usize]) -> Vec<NodeId> {
    which.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect()
}

/// Summed over every node: a counter only the host that acted counts.
async fn total(cluster: &Cluster, sample: &str) -> f64 {
    let mut sum = 0.0;
    for i in 1..=cluster.node_ids().len() {
        sum += cluster.metric(i, sample).await;
    }
    sum
}

async fn made(cluster: &Cluster) -> f64 {
    total(cluster, "conclave_presignatures_total{outcome=\"made\"}").await
}

async fn wait_made(cluster: &Cluster, at_least: f64) {
    eventually(&format!("{at_least} presignatures made"), Duration::from_secs(300), || async { (made(cluster).await >= at_least).then_some(()) }).await;
}

/// A 2-of-3 cluster with pools of one presignature per pair, a client,
/// and a `scheme` key of wallet `name`, once every pair's pool is full.
async fn pooled(name: &str, scheme: Scheme) -> (Cluster, conclave_client::Client, WalletId, KeygenResult) {
    let cluster = Cluster::start_with_pools(3, 1).await;
    let client = cluster.client().await;
    let w = WalletId::new(name).unwrap();
    let key = client.keygen(&w, scheme, 2, None).await.unwrap();
    wait_made(&cluster, PAIRS as f64).await;
    (cluster, client, w, key)
}

/// Kills the host of node `keeper` (the keeper of `pool`: the host of its
/// set's first member), sets the registry's copy of the pool's counts to
/// `record` and starts the host again, as a host that starts on a
/// rolled-back registry finds it.
async fn restart_keeper_on(cluster: &mut Cluster, keeper: usize, adversary: &Adversary, pool: &PoolId, record: PoolRecord) {
    cluster.kill_host(keeper);
    adversary.set_pool_record(pool, record).await;
    cluster.start_host(keeper);
    cluster.wait_ready(3).await;
}

/// Until the keeper's copy of `pool` counts presignature `made` made and
/// one unused.
async fn refilled_to(adversary: &Adversary, pool: &PoolId, made: u32) {
    eventually(&format!("presignature {made} of {pool} in the keeper's copy"), Duration::from_secs(300), || async {
        let record = adversary.pool_record(pool).await;
        (record.made >= made && record.made > record.used).then_some(())
    })
    .await;
}

/// An Ed25519 signature, checked strictly.
fn verify_eddsa(public_key: &[u8], message: &[u8], signature: &[u8]) {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key.try_into().unwrap()).unwrap();
    vk.verify_strict(message, &ed25519_dalek::Signature::from_slice(signature).unwrap()).expect("verifies strictly");
}

/// An ECDSA signature over `message` (SHA-256) under `public_key` (SEC1).
fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) {
    use k256::ecdsa::signature::Verifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    vk.verify(message, &k256::ecdsa::Signature::from_slice(signature).unwrap()).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_fill_serve_messages_in_one_round_never_digests_and_refill() {
    let cluster = Cluster::start_with_pools(3, 2).await;
    let client = cluster.client().await;
    let w = WalletId::new("pooled").unwrap();
    let key = client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    wait_made(&cluster, (2 * PAIRS) as f64).await;
    let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";

    // Operators see the levels: node-1 keeps the pools of (1,2) and (1,3),
    // node-2 that of (2,3); `conclave status` shows what they report.
    eventually("pool levels in /metrics", Duration::from_secs(60), || async {
        (cluster.metric(1, "conclave_presign_pool_level{pool=\"pooled/ecdsa/v1/node-1+node-2\"}").await == 2.0).then_some(())
    })
    .await;
    let levels = eventually("pool levels in conclave status", Duration::from_secs(60), || async {
        let (code, out, _) = cluster.cli(&["status"]);
        assert_eq!(code, 0, "{out}");
        let levels: Vec<(String, String, u64)> = out["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| {
                let node = n["id"].as_str().unwrap().to_string();
                n["presign_pools"].as_object().cloned().unwrap_or_default().into_iter().map(move |(pool, level)| (node.clone(), pool, level.as_u64().unwrap()))
            })
            .collect();
        (levels.len() == PAIRS && levels.iter().all(|l| l.2 == 2)).then_some(levels)
    })
    .await;
    let keepers: Vec<(&str, &str)> = levels.iter().map(|(node, pool, _)| (node.as_str(), pool.as_str())).collect();
    assert_eq!(
        keepers,
        [("node-1", "pooled/ecdsa/v1/node-1+node-2"), ("node-1", "pooled/ecdsa/v1/node-1+node-3"), ("node-2", "pooled/ecdsa/v1/node-2+node-3")]
    );

    // Every message signature of a full pool is presigned: two by each pair.
    for pair in [[1, 2], [1, 3], [2, 3], [1, 2], [1, 3], [2, 3]] {
        let message = format!("pay by {pair:?}").into_bytes();
        let sig = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(message.clone()), vec![], Some(ids(&cluster, &pair))).await.unwrap();
        verify(&key.public_key, &message, &sig.signature);
    }
    assert_eq!(total(&cluster, presigned).await, (2 * PAIRS) as f64);

    // A digest, or a derived key, never takes a presignature.
    let before = total(&cluster, presigned).await;
    let sig = client.sign(&w, Scheme::Ecdsa, SignPayload::Digest([9; 32].to_vec()), vec![], None).await.unwrap();
    assert_eq!(sig.public_key, key.public_key);
    client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"child".to_vec()), vec![1, 2], None).await.unwrap();
    assert_eq!(total(&cluster, presigned).await, before, "neither was presigned");

    // The pools refill once used.
    wait_made(&cluster, (4 * PAIRS) as f64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_path_has_pools_of_its_own_and_other_paths_sign_in_full() {
    let cluster = Cluster::start_with_path_pools(3, 1, "[presign_paths]\npaths = [\"m/0/7\"]\n").await;
    let client = cluster.client().await;
    let w = WalletId::new("paths").unwrap();
    let key = client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    // One presignature per pair for the root key and one for m/0/7.
    wait_made(&cluster, (2 * PAIRS) as f64).await;
    let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";
    let pair = ids(&cluster, &[1, 2]);
    let before = total(&cluster, presigned).await;
    // The client checks each signature under the child key of the path.
    let child = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"to m/0/7".to_vec()), vec![0, 7], Some(pair.clone())).await.unwrap();
    assert_ne!(child.public_key, key.public_key);
    assert_eq!(total(&cluster, presigned).await, before + 1.0, "the declared path's pool served it");
    client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"to m/0/8".to_vec()), vec![0, 8], Some(pair.clone())).await.unwrap();
    assert_eq!(total(&cluster, presigned).await, before + 1.0, "an undeclared path runs the full protocol");
    client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"to m".to_vec()), vec![], Some(pair)).await.unwrap();
    assert_eq!(total(&cluster, presigned).await, before + 2.0, "the root key's pool is its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_serves_once_whatever_the_registry_or_a_crash_does() {
    let (mut cluster, client, w, key) = pooled("once", Scheme::Ecdsa).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let pair = ids(&cluster, &[1, 2]);
    let pool = PoolId::of(&w, Scheme::Ecdsa, 1, &pair, &[]);
    let sign = |m: &'static [u8]| client.sign(&w, Scheme::Ecdsa, SignPayload::Message(m.to_vec()), vec![], Some(pair.clone()));

    let sig = sign(b"first").await.unwrap();
    verify(&key.public_key, b"first", &sig.signature);
    // The keeper (node-1's host) copies its counts to the registry.
    eventually("the pool's counts copied", Duration::from_secs(30), || async {
        (adversary.pool_record(&pool).await == PoolRecord { made: 1, used: 1 }).then_some(())
    })
    .await;

    // A lying registry hands presignature 1 out again to the keeper's host
    // when it starts again: both signers refuse it before anything leaves,
    // and the request signs by the full protocol.
    let unavailable = "conclave_presign_fallbacks_total{reason=\"unavailable\"}";
    restart_keeper_on(&mut cluster, 1, &adversary, &pool, PoolRecord { made: 1, used: 0 }).await;
    let refused_before = total(&cluster, unavailable).await;
    let sig = sign(b"second").await.expect("signs all the same");
    verify(&key.public_key, b"second", &sig.signature);
    assert_eq!(total(&cluster, unavailable).await, refused_before + 1.0, "refused, then the full protocol");

    // node-2 dies (kill -9 by its fault hook) right after taking the next
    // presignature, before its partial leaves: the request fails over to
    // the other pair; that presignature never serves again.
    eventually("presignature 2 of (1, 2)", Duration::from_secs(300), || async { (adversary.pool_record(&pool).await.made == 2).then_some(()) }).await;
    cluster.restart_signer_with(2, &[(conclave_enclave::fault::Hook::PresignCrashAfterTake.env(), "1")]).await;
    cluster.wait_ready(3).await;
    let refused = sign(b"third").await.expect_err("named signers cannot fail over");
    assert!(matches!(&refused, ClientError::Request(e) if e.code == ErrorCode::PeerUnavailable), "{refused}");
    cluster.wait_unready(2).await;
    cluster.start_signer(2);
    cluster.wait_ready(3).await;
    restart_keeper_on(&mut cluster, 1, &adversary, &pool, PoolRecord { made: 2, used: 1 }).await;
    let refused_before = total(&cluster, unavailable).await;
    let sig = sign(b"fourth").await.expect("signs by the full protocol");
    verify(&key.public_key, b"fourth", &sig.signature);
    assert_eq!(total(&cluster, unavailable).await, refused_before + 1.0, "presignature 2 was taken before the crash: never again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_share_out_the_last_presignature_and_a_bad_partial_is_blamed() {
    let (mut cluster, client, w, key) = pooled("race", Scheme::Ecdsa).await;
    let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";
    let full = "conclave_pool_plans_total{protocol=\"full\"}";
    let (p0, f0) = (total(&cluster, presigned).await, total(&cluster, full).await);

    // Two requests at once for the one presignature of pair (1, 3).
    let one_three = ids(&cluster, &[1, 3]);
    let pair = || Some(one_three.clone());
    let (a, b) = tokio::join!(
        client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"a".to_vec()), vec![], pair()),
        client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"b".to_vec()), vec![], pair()),
    );
    verify(&key.public_key, b"a", &a.unwrap().signature);
    verify(&key.public_key, b"b", &b.unwrap().signature);
    assert_eq!((total(&cluster, presigned).await - p0, total(&cluster, full).await - f0), (1.0, 1.0), "one took it, one ran the full protocol");

    // node-3 sends partial signatures that do not match its presignature:
    // its peer blames it.
    wait_made(&cluster, (PAIRS + 1) as f64).await;
    cluster.restart_signer_with(3, &[(conclave_enclave::fault::Hook::PresignTamper.env(), "1")]).await;
    cluster.wait_ready(3).await;
    let refused = client.sign(&w, Scheme::Ecdsa, SignPayload::Message(b"c".to_vec()), vec![], pair()).await.expect_err("a bad partial");
    match refused {
        ClientError::Request(e) => {
            assert_eq!(e.code, ErrorCode::ProtocolAbort, "{e}");
            assert_eq!(e.blamed, ids(&cluster, &[3]), "{e}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_signs_in_one_round_with_pooled_nonces_each_used_once_and_a_bad_share_is_blamed() {
    let (mut cluster, client, w, key) = pooled("frost", Scheme::Eddsa).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let pair = ids(&cluster, &[2, 3]);
    let pool = PoolId::of(&w, Scheme::Eddsa, 1, &pair, &[]);
    let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";
    let verify = |message: &[u8], signature: &[u8]| verify_eddsa(&key.public_key, message, signature);

    // Digests too: FROST binds the nonces to whatever it signs.
    let before = total(&cluster, presigned).await;
    let sig = client.sign(&w, Scheme::Eddsa, SignPayload::Digest([3; 32].to_vec()), vec![], Some(pair.clone())).await.unwrap();
    verify(&[3; 32], &sig.signature);
    assert_eq!(total(&cluster, presigned).await, before + 1.0, "one round with pooled nonces");
    eventually("the pool's counts copied", Duration::from_secs(30), || async {
        (adversary.pool_record(&pool).await == PoolRecord { made: 1, used: 1 }).then_some(())
    })
    .await;

    // Handed out again by a lying registry to the keeper's host (node-2's)
    // when it starts again: refused, then the full protocol.
    let unavailable = "conclave_presign_fallbacks_total{reason=\"unavailable\"}";
    restart_keeper_on(&mut cluster, 2, &adversary, &pool, PoolRecord { made: 1, used: 0 }).await;
    let refused_before = total(&cluster, unavailable).await;
    let sig = client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"again".to_vec()), vec![], Some(pair.clone())).await.unwrap();
    verify(b"again", &sig.signature);
    assert_eq!(total(&cluster, unavailable).await, refused_before + 1.0, "the nonces serve once");

    // node-3 sends signature shares that do not fit its nonces: checked
    // one by one (RFC 9591's verify_signature_share), it is named.
    // Number 2 (1 went to "again"), as the keeper's copy shows it.
    refilled_to(&adversary, &pool, 2).await;
    cluster.restart_signer_with(3, &[(conclave_enclave::fault::Hook::PresignTamper.env(), "1")]).await;
    cluster.wait_ready(3).await;
    let before = total(&cluster, presigned).await;
    let refused = client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"tampered".to_vec()), vec![], Some(pair.clone())).await.expect_err("a bad share");
    assert_eq!(total(&cluster, presigned).await, before + 1.0, "it was a pooled signature");
    match refused {
        ClientError::Request(e) => {
            assert_eq!(e.code, ErrorCode::ProtocolAbort, "{e}");
            assert_eq!(e.blamed, ids(&cluster, &[3]), "{e}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_whose_counts_a_restore_set_back_refills_from_the_signers_floor() {
    let (mut cluster, client, w, key) = pooled("restored", Scheme::Eddsa).await;
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let pair = ids(&cluster, &[2, 3]);
    let pool = PoolId::of(&w, Scheme::Eddsa, 1, &pair, &[]);
    let sign = |m: &'static [u8]| client.sign(&w, Scheme::Eddsa, SignPayload::Message(m.to_vec()), vec![], Some(pair.clone()));
    // Two signatures take numbers 1 and 2: the signers' floor is 3.
    sign(b"one").await.unwrap();
    refilled_to(&adversary, &pool, 2).await;
    sign(b"two").await.unwrap();
    refilled_to(&adversary, &pool, 3).await;

    // The registry is restored from a backup taken before the pool
    // existed: the keeper (node-2's host) starts on counts of zero. Its
    // signer refuses number 1 (below the floor) and says where the window
    // starts; the keeper moves there and the pool fills and serves again
    // (before, it asked for number 1 at every tick, forever).
    restart_keeper_on(&mut cluster, 2, &adversary, &pool, PoolRecord { made: 0, used: 0 }).await;
    refilled_to(&adversary, &pool, 3).await;
    let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";
    let before = total(&cluster, presigned).await;
    let sig = sign(b"three").await.unwrap();
    verify_eddsa(&key.public_key, b"three", &sig.signature);
    assert_eq!(total(&cluster, presigned).await, before + 1.0, "from the pool again");
}
