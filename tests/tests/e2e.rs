//! End to end: real nats-server, real enclave and host processes per node,
//! hsm mode (a SoftHSM2 token per node) unless a test says otherwise,
//! 2-of-3. Each test starts its own cluster.

use conclave_proto::link::BlobSlot;
use conclave_proto::request::{KeygenRequest, RequestBody, SignPayload, SignRequest};
use conclave_proto::result::{KeygenResult, Outcome, SignResult};
use conclave_proto::subjects::{KEYGEN_SUBJECT, SIGN_SUBJECT};
use conclave_proto::{ErrorCode, NodeId, RequestId, Scheme, WalletId};
use conclave_tests::{bip32, wire, Cluster, Mode};
use futures::StreamExt;
use std::time::Duration;

fn wallet(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

/// Verifies a signature independently of the SDK.
fn assert_verifies(scheme: Scheme, public_key: &[u8], payload: &[u8], sig: &SignResult) {
    match scheme {
        Scheme::Ecdsa => {
            use k256::ecdsa::signature::hazmat::PrehashVerifier;
            use sha2::Digest;
            let digest: [u8; 32] = if payload.len() == 32 { payload.try_into().unwrap() } else { sha2::Sha256::digest(payload).into() };
            let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
            let s = k256::ecdsa::Signature::from_slice(&sig.signature).unwrap();
            assert!(s.normalize_s().is_none(), "signature is not low-S");
            vk.verify_prehash(&digest, &s).expect("ECDSA signature verifies");
            let rid = k256::ecdsa::RecoveryId::from_byte(sig.recovery_id.expect("recovery id")).unwrap();
            let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &s, rid).unwrap();
            assert_eq!(recovered, vk, "recovery id recovers the key");
        }
        Scheme::Eddsa => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key.try_into().unwrap()).unwrap();
            let s = ed25519_dalek::Signature::from_slice(&sig.signature).unwrap();
            vk.verify_strict(payload, &s).expect("Ed25519 signature verifies strictly");
        }
    }
}

fn ids(cluster: &Cluster, which: &[usize]) -> Vec<NodeId> {
    which.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_of_three_subset_signs_with_both_schemes() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        let w = wallet(&format!("subsets-{scheme}"));
        let key = client.keygen(&w, scheme, 2, None).await.expect("keygen");
        assert_eq!(key.committee, cluster.node_ids());
        assert_eq!(key.public_key.len(), if scheme == Scheme::Ecdsa { 33 } else { 32 });
        for pair in [[1, 2], [1, 3], [2, 3]] {
            let signers = ids(&cluster, &pair);
            let message = format!("pay 1 unit, signed by {pair:?}").into_bytes();
            let sig = client
                .sign(&w, scheme, SignPayload::Message(message.clone()), vec![], Some(signers.clone()))
                .await
                .unwrap_or_else(|e| panic!("{scheme} signing by {pair:?}: {e}"));
            assert_eq!(sig.signers, signers);
            assert_eq!(sig.public_key, key.public_key);
            assert_verifies(scheme, &key.public_key, &message, &sig);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_path_signatures_verify_under_the_child_of_the_printed_xpub() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let w = wallet("hd");
    let key = client.keygen(&w, Scheme::Ecdsa, 2, None).await.unwrap();
    let (root, chain) = bip32::parse_xpub(key.xpub.as_deref().expect("ECDSA keygen prints an xpub"));
    assert_eq!(root.as_slice(), key.public_key.as_slice(), "the xpub carries the wallet key");
    let path = vec![0, 7, 1_000_000];
    let digest = [0x42u8; 32];
    let sig = client.sign(&w, Scheme::Ecdsa, SignPayload::Digest(digest.to_vec()), path.clone(), None).await.unwrap();
    let child = bip32::derive(root, chain, &path);
    assert_eq!(sig.public_key, child.to_vec(), "signed under the BIP-32 child key");
    assert_verifies(Scheme::Ecdsa, &child, &digest, &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_sign_with_their_stored_shares() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let mut keys: Vec<(WalletId, Scheme, KeygenResult)> = Vec::new();
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        let w = wallet(&format!("restart-{scheme}"));
        let key = client.keygen(&w, scheme, 2, None).await.unwrap();
        keys.push((w, scheme, key));
    }
    cluster.restart_all().await;
    for (w, scheme, key) in keys {
        let message = b"after restart".to_vec();
        let sig = client.sign(&w, scheme, SignPayload::Message(message.clone()), vec![], None).await.unwrap();
        assert_verifies(scheme, &key.public_key, &message, &sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_an_unknown_initiator_are_refused_as_unauthorized() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let w = wallet("guarded");
    client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let sign = RequestBody::Sign(SignRequest {
        request_id: RequestId::new("stranger-sign").unwrap(),
        wallet: w.clone(),
        scheme: Scheme::Eddsa,
        version: 1,
        payload: SignPayload::Message(b"drain the wallet".to_vec()),
        path: vec![],
        signers: None,
        timeout_ms: None,
        issued_at_ms: wire::now_ms(),
    });
    let bytes = serde_json::to_vec(&wire::sign_request(&sign, &stranger)).unwrap();
    let result = wire::request_raw(&cluster.nats_url(), SIGN_SUBJECT, "stranger-sign", bytes).await;
    match result.outcome {
        Outcome::Error { error } => assert_eq!(error.code, ErrorCode::Unauthorized, "{error}"),
        other => panic!("an unknown initiator got {other:?}"),
    }
    let keygen = RequestBody::Keygen(KeygenRequest {
        request_id: RequestId::new("stranger-keygen").unwrap(),
        wallet: wallet("planted"),
        scheme: Scheme::Eddsa,
        threshold: 2,
        committee: cluster.node_ids(),
        issued_at_ms: wire::now_ms(),
    });
    let bytes = serde_json::to_vec(&wire::sign_request(&keygen, &stranger)).unwrap();
    let result = wire::request_raw(&cluster.nats_url(), KEYGEN_SUBJECT, "stranger-keygen", bytes).await;
    assert!(matches!(result.outcome, Outcome::Error { ref error } if error.code == ErrorCode::Unauthorized), "{result:?}");
    // Nothing was created for the stranger.
    for i in 1..=3 {
        assert!(!cluster.node_dir(i).join("store/blobs/share/planted").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_error_results_and_nodes_keep_serving() {
    let cluster = Cluster::start(3).await;
    let garbage = wire::request_raw(&cluster.nats_url(), SIGN_SUBJECT, "garbage-1", b"{not json".to_vec()).await;
    assert!(matches!(garbage.outcome, Outcome::Error { ref error } if error.code == ErrorCode::Malformed), "{garbage:?}");
    let huge = vec![b'x'; 70 * 1024];
    let big = wire::request_raw(&cluster.nats_url(), SIGN_SUBJECT, "huge-1", huge).await;
    assert!(matches!(big.outcome, Outcome::Error { ref error } if error.code == ErrorCode::TooLarge), "{big:?}");
    let unknown = wire::request_raw(
        &cluster.nats_url(),
        SIGN_SUBJECT,
        "versionless",
        format!(r#"{{"v":99,"body":"{{}}","initiator":"{}","signature":"{}"}}"#, "00".repeat(32), "00".repeat(64)).into_bytes(),
    )
    .await;
    // Well-formed but for its version: refused for the version, not as malformed.
    assert!(matches!(unknown.outcome, Outcome::Error { ref error } if error.code == ErrorCode::UnsupportedVersion), "{unknown:?}");
    // The cluster still serves.
    let client = cluster.client().await;
    let w = wallet("after-garbage");
    let key = client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let sig = client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"still here".to_vec()), vec![], None).await.unwrap();
    assert_verifies(Scheme::Eddsa, &key.public_key, b"still here", &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_envelopes_are_rejected_and_signing_goes_on() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let w = wallet("tamper");
    let key = client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    // Capture an envelope on its way to node-2 during a signing.
    let nats = async_nats::connect(cluster.nats_url()).await.unwrap();
    let mut sniff = nats.subscribe(conclave_proto::subjects::p2p_inbox(&cluster.node_ids()[1])).await.unwrap();
    let signers = ids(&cluster, &[1, 2]);
    client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"one".to_vec()), vec![], Some(signers.clone())).await.unwrap();
    let captured = tokio::time::timeout(Duration::from_secs(10), sniff.next()).await.unwrap().unwrap();
    let envelope: conclave_proto::envelope::Envelope = serde_json::from_slice(&captured.payload).unwrap();
    let before = cluster.metric(2, "conclave_rejected_total{code=\"bad_envelope\"}").await;
    let mut flipped = envelope.clone();
    let last = flipped.sealed.len() - 1;
    flipped.sealed[last] ^= 1;
    let mut reheaded = envelope.clone();
    reheaded.header.seq += 1000;
    let mut forged_sender = envelope.clone();
    forged_sender.header.sender = cluster.node_ids()[2].clone();
    let misaddressed_before = cluster.metric(2, "conclave_rejected_total{code=\"misaddressed\"}").await;
    for tampered in [flipped, reheaded, forged_sender] {
        // Under the subject its header claims: the signer must catch it.
        let subject = conclave_proto::subjects::p2p_subject(&tampered.header.recipient, &tampered.header.sender);
        nats.publish(subject, serde_json::to_vec(&tampered).unwrap().into()).await.unwrap();
    }
    // A subject naming another sender than the header: the host drops it.
    let elsewhere = conclave_proto::subjects::p2p_subject(&envelope.header.recipient, &cluster.node_ids()[2]);
    nats.publish(elsewhere, captured.payload.clone()).await.unwrap();
    nats.flush().await.unwrap();
    conclave_tests::eventually("node-2's host to drop the misaddressed copy", Duration::from_secs(20), || {
        let cluster = &cluster;
        async move { (cluster.metric(2, "conclave_rejected_total{code=\"misaddressed\"}").await >= misaddressed_before + 1.0).then_some(()) }
    })
    .await;
    conclave_tests::eventually("node-2 to reject three tampered envelopes", Duration::from_secs(20), || {
        let cluster = &cluster;
        async move { (cluster.metric(2, "conclave_rejected_total{code=\"bad_envelope\"}").await >= before + 3.0).then_some(()) }
    })
    .await;
    let sig = client.sign(&w, Scheme::Eddsa, SignPayload::Message(b"two".to_vec()), vec![], Some(signers)).await.unwrap();
    assert_verifies(Scheme::Eddsa, &key.public_key, b"two", &sig);
}

/// Finds every string value under a key named `x` (the secret share in
/// key-share's serialisation).
/// Every string of at least 16 characters (secrets, not flags or radixes)
/// in the value of one of `keys`, anywhere in `v` (`{"p": "…"}` and
/// `{"p": {"radix": 16, "value": "…"}}` alike).
fn strings_under(v: &serde_json::Value, keys: &[&str], out: &mut impl FnMut(String)) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match keys.contains(&k.as_str()) {
                    true => all_strings(v, out),
                    false => strings_under(v, keys, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings_under(v, keys, out)),
        _ => {}
    }
}

fn all_strings(v: &serde_json::Value, out: &mut impl FnMut(String)) {
    match v {
        serde_json::Value::String(s) if s.len() >= 16 => out(s.clone()),
        serde_json::Value::Object(m) => m.values().for_each(|v| all_strings(v, out)),
        serde_json::Value::Array(a) => a.iter().for_each(|v| all_strings(v, out)),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_anything_a_host_sees() {
    // Dev mode: the test opens the nodes' sealed blobs with their seal key
    // files to learn what to look for. What hosts see does not depend on the mode.
    let cluster = Cluster::start_in(Mode::Dev, 3).await;
    let nats = async_nats::connect(cluster.nats_url()).await.unwrap();
    let mut everything = nats.subscribe(">").await.unwrap();
    nats.flush().await.unwrap();
    let client = cluster.client().await;
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        let w = wallet(&format!("secret-{scheme}"));
        client.keygen(&w, scheme, 2, None).await.unwrap();
        client.sign(&w, scheme, SignPayload::Message(b"observe me".to_vec()), vec![], None).await.unwrap();
    }
    // Everything the hosts sent for these requests reached the server before
    // the client had its answers, so before this marker.
    nats.publish("conclave-test.end", "end".into()).await.unwrap();
    nats.flush().await.unwrap();
    let mut seen: Vec<u8> = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), everything.next()).await.expect("the marker comes back") {
        if msg.subject.as_str() == "conclave-test.end" {
            break;
        }
        seen.extend_from_slice(msg.subject.as_bytes());
        seen.extend_from_slice(&msg.payload);
    }
    assert!(!seen.is_empty());
    // What every host holds: its store and its log.
    let mut host_bytes = Vec::new();
    for i in 1..=3 {
        let mut files = Vec::new();
        files_under(&cluster.node_dir(i).join("store"), &mut files);
        files.push(cluster.node_dir(i).join("host.log"));
        host_bytes.extend(files.iter().flat_map(|f| std::fs::read(f).unwrap()));
    }
    let committee = conclave_proto::CommitteeId::of(&cluster.node_ids());
    for i in 1..=3 {
        // Secret share scalars of both schemes.
        let mut secrets: Vec<(&str, String)> = Vec::new();
        for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
            let record = cluster.open_share(i, &wallet(&format!("secret-{scheme}")), scheme);
            let share: serde_json::Value = serde_json::from_slice(record.secret.expose()).unwrap();
            let before = secrets.len();
            strings_under(&share, &["x"], &mut |s| secrets.push(("share scalar", s)));
            assert!(secrets.len() > before, "found node-{i}'s secret share in its {scheme} key share");
        }
        // Paillier primes: of the committee's aux info (this node's
        // Paillier key p, q and the factors of its ring-Pedersen modulus,
        // kept for CRT), and of the pool (four primes a set).
        let aux_slot = BlobSlot::AuxInfo { committee };
        let aux: serde_json::Value = serde_json::from_slice(&cluster.open_blob(i, &aux_slot, latest_version(&cluster, i, &aux_slot))).unwrap();
        let pool: serde_json::Value = serde_json::from_slice(&cluster.open_blob(i, &BlobSlot::Primes, latest_version(&cluster, i, &BlobSlot::Primes))).unwrap();
        let before = secrets.len();
        strings_under(&aux, &["p", "q", "n1", "n2", "phi_n1", "phi_n2"], &mut |s| secrets.push(("Paillier or ring-Pedersen prime", s)));
        assert!(secrets.len() >= before + 6, "found node-{i}'s secret primes in its aux info: {aux:.200}");
        let before = secrets.len();
        strings_under(&pool, &["primes"], &mut |s| secrets.push(("pooled prime", s)));
        assert_eq!(secrets.len(), before + 4, "found node-{i}'s pooled primes: {pool:.200}");
        // Identity and channel keys.
        let identity: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.node_dir(i).join("enclave/identity.key")).unwrap()).unwrap();
        strings_under(&identity, &["sign_seed", "kx_secret"], &mut |s| secrets.push(("identity or channel key", s)));
        for (what, s) in secrets {
            for needle in needles(&s) {
                assert!(!contains(&seen, &needle), "node-{i}'s {what} seen on NATS");
                assert!(!contains(&host_bytes, &needle), "node-{i}'s {what} in a host's store or log");
            }
        }
    }
}

/// A secret as text (either case) and, for hex, as bytes.
fn needles(s: &str) -> Vec<Vec<u8>> {
    let mut out = vec![s.to_lowercase().into_bytes(), s.to_uppercase().into_bytes()];
    if let Ok(raw) = hex::decode(s) {
        out.push(raw);
    }
    out
}

/// The highest version of `slot` node `i` stored.
fn latest_version(cluster: &Cluster, i: usize, slot: &BlobSlot) -> u32 {
    let mut files = Vec::new();
    files_under(&cluster.node_dir(i).join("store/blobs").join(slot.path()), &mut files);
    files.iter().filter_map(|f| conclave_proto::store::parse_blob_file_name(f.file_name()?.to_str()?)).max().expect("a stored version")
}
