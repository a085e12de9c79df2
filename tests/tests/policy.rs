//! Approval policies, enforced inside each signer: set only by the admin
//! quorum, never rolled back by a host, and deciding every sign request
//! before any round (deny rules, conditions, velocity counted durably
//! across restarts and quorums). Real node processes, dev mode (so that a
//! test can play the host that serves an old policy).

use conclave_proto::{Scheme, WalletId};
use conclave_tests::Cluster;
use serde_json::Value;
use std::path::PathBuf;

/// Writes policy `version`: digests are refused everywhere; `hot-*`
/// wallets sign at most `hot_limit` times an hour; `treasury-*` wallets
/// sign only on a day that is not today (UTC), so never during the test;
/// every other wallet signs as without a policy.
fn policy_file(cluster: &Cluster, version: u32, hot_limit: u32) -> PathBuf {
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let today = ((conclave_tests::now_ms() / 86_400_000 + 3) % 7) as usize;
    let path = cluster.dir().join(format!("policy-{version}.json"));
    let text = format!(
        r#"{{"v": 1, "version": {version}, "rules": [
            {{"name": "no-digests", "wallets": ["*"], "effect": "deny", "when": {{"payloads": ["digest"]}}}},
            {{"name": "hot-limit", "wallets": ["hot-*"], "effect": "allow", "require": {{"velocity": {{"window_s": 3600, "max_signatures": {hot_limit}}}}}}},
            {{"name": "office", "wallets": ["treasury-*"], "effect": "allow", "when": {{"hours": {{"days": ["{}"], "from_hour": 0, "to_hour": 24}}}}}},
            {{"name": "the-rest", "wallets": ["*"], "effect": "allow"}}
        ]}}"#,
        days[(today + 1) % 7]
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Each node's policy version from `conclave policy show`, or its error code.
fn versions(cluster: &Cluster) -> Vec<Value> {
    let (_, out, _) = cluster.cli(&["policy", "show"]);
    out["nodes"]
        .as_array()
        .expect("a row per node")
        .iter()
        .map(|n| if n["error"].is_null() { n["version"].clone() } else { n["error"]["code"].clone() })
        .collect()
}

fn sign(cluster: &Cluster, wallet: &str, payload: &str) -> (i32, Value) {
    let (code, out, _) = cluster.cli(&["sign", "--wallet", wallet, "--scheme", "eddsa", payload, "00112233"]);
    (code, out)
}

fn denied_by(out: &Value) -> (&str, &str) {
    (out["error"]["code"].as_str().unwrap_or("none"), out["error"]["reason"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_take_an_admin_quorum_never_go_back_and_decide_before_any_round() {
    let mut cluster = Cluster::start(3).await;
    assert_eq!(versions(&cluster), [0, 0, 0], "no policy yet");

    // One admin of a 2-of-3 quorum is not enough; nothing changes.
    let v1 = policy_file(&cluster, 1, 2);
    let one = cluster.admin_key_file(1);
    let (code, out, _) = cluster.cli(&["policy", "set", "--file", v1.to_str().unwrap(), "--admin-key", one.to_str().unwrap()]);
    assert_eq!(code, 1);
    for node in out["nodes"].as_array().unwrap() {
        assert_eq!(node["error"]["code"], "unauthorized", "{node}");
    }
    assert_eq!(versions(&cluster), [0, 0, 0]);

    // A second admin signs on "another machine", and the two signatures
    // are joined.
    let (code, sig, _) = cluster.cli(&["policy", "sign", "--file", v1.to_str().unwrap(), "--admin-key", cluster.admin_key_file(2).to_str().unwrap()]);
    assert_eq!(code, 0);
    let sig_file = cluster.dir().join("admin-2.sig");
    std::fs::write(&sig_file, sig.to_string()).unwrap();
    let (code, out, err) =
        cluster.cli(&["policy", "set", "--file", v1.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--signature", sig_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(versions(&cluster), [1, 1, 1]);

    // Hostile input, past the CLI's own checks: a document that does not
    // parse, and one whose rule names an approver group it lacks, signed by
    // the quorum, are refused with a typed error by every signer; nothing
    // changes.
    let client = cluster.client().await;
    for document in [
        "{\"v\": 1, \"version\": 9, \"rules\": [",
        r#"{"v": 1, "version": 9, "rules": [{"name": "r", "wallets": ["*"], "effect": "allow", "require": {"approvals": {"group": "nobody", "count": 1, "window_s": 60}}}]}"#,
    ] {
        let signatures = (1..=2).map(|i| conclave_client::governance::sign_policy(document, &cluster.admin(i))).collect();
        let policy = conclave_proto::policy::SignedPolicy { v: 1, document: document.to_string(), signatures };
        for (node, answer) in client.govern_all(conclave_proto::govern::GovernAsk::SetPolicy { policy }).await {
            assert!(
                matches!(answer, Err(conclave_client::ClientError::Request(ref e)) if e.code == conclave_proto::ErrorCode::Malformed),
                "{node}: {answer:?}"
            );
        }
    }
    assert_eq!(versions(&cluster), [1, 1, 1]);

    for w in ["hot-1", "treasury-1", "cold"] {
        client.keygen(&WalletId::new(w).unwrap(), Scheme::Eddsa, 2, None).await.unwrap();
    }
    // Deny wins over every allow rule; other wallets sign as before.
    let (code, out) = sign(&cluster, "cold", "--digest-hex");
    assert_eq!((code, denied_by(&out).0), (1, "policy_denied"));
    assert_eq!(out["error"]["rule"], "no-digests", "{out}");
    assert_eq!(sign(&cluster, "cold", "--message-hex").0, 0);
    // A time window: treasury wallets sign only tomorrow.
    let (_, out) = sign(&cluster, "treasury-1", "--message-hex");
    assert_eq!((denied_by(&out).0, out["error"]["rule"].as_str()), ("policy_denied", Some("office")), "{out}");
    assert!(denied_by(&out).1.contains("outside its hours"), "{out}");

    // Velocity: two an hour, whichever pair of signers signs each (the
    // quorum rotates), then the third is refused...
    for _ in 0..2 {
        let (code, out) = sign(&cluster, "hot-1", "--message-hex");
        assert_eq!(code, 0, "{out}");
    }
    let (_, out) = sign(&cluster, "hot-1", "--message-hex");
    assert_eq!((denied_by(&out).0, out["error"]["rule"].as_str()), ("policy_denied", Some("hot-limit")), "{out}");
    // ...also after every signer restarts: the count is durable.
    for i in 1..=3 {
        cluster.restart_signer_with(i, &[]).await;
    }
    cluster.wait_ready(3).await;
    let (_, out) = sign(&cluster, "hot-1", "--message-hex");
    assert_eq!(denied_by(&out).0, "policy_denied", "{out}");
    assert_eq!(versions(&cluster), [1, 1, 1], "the policy survives a restart");

    // Version 2 raises the limit. Submitting version 1 again is refused.
    let v2 = policy_file(&cluster, 2, 3);
    let two = cluster.admin_key_file(2);
    let set = |file: &PathBuf| {
        cluster.cli(&["policy", "set", "--file", file.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--admin-key", two.to_str().unwrap()])
    };
    assert_eq!(set(&v2).0, 0);
    assert_eq!(sign(&cluster, "hot-1", "--message-hex").0, 0, "the third of three");
    let (code, out, _) = set(&v1);
    assert_eq!(code, 1);
    assert!(out["nodes"].as_array().unwrap().iter().all(|n| n["error"]["code"] == "version_mismatch"), "{out}");

    // Node 3's host serves version 1 again (it deletes version 2 from its
    // store) to a restarted signer: the signer refuses it rather than
    // enforce the old policy.
    let stored = cluster.node_dir(3).join("store/blobs/policy");
    let newest = std::fs::read_dir(&stored).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    std::fs::remove_file(&newest).unwrap();
    cluster.restart_signer_with(3, &[]).await;
    cluster.wait_ready(3).await;
    assert_eq!(versions(&cluster), [Value::from(2), Value::from(2), Value::from("version_mismatch")]);
}

/// An unsigned EIP-1559 transfer of `value` wei to `to` on `chain_id`.
fn transfer(to: &str, value: u128, chain_id: u64) -> Vec<u8> {
    use conclave_proto::eth::{encode_unsigned, Eip1559Tx};
    let tx = Eip1559Tx {
        chain_id,
        nonce: 7,
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 30_000_000_000,
        gas_limit: 21_000,
        to: Some(to.parse().unwrap()),
        value,
        data: vec![],
        access_list: vec![],
    };
    encode_unsigned(&tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_read_ethereum_transactions_which_the_signers_hash_themselves() {
    let cluster = Cluster::start(3).await;
    let allowed = "0x00000000000000000000000000000000000000aa";
    let policy = cluster.dir().join("payouts.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"v": 1, "version": 1, "rules": [
                {{"name": "payouts", "wallets": ["pay-*"], "effect": "allow",
                  "when": {{"payloads": ["eth_eip1559"], "chain_ids": [1], "destinations": ["{allowed}"], "max_amount": "1000"}},
                  "require": {{"velocity": {{"window_s": 3600, "max_amount": "1500"}}}}}}
            ]}}"#
        ),
    )
    .unwrap();
    let (one, two) = (cluster.admin_key_file(1), cluster.admin_key_file(2));
    let (code, out, _) =
        cluster.cli(&["policy", "set", "--file", policy.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--admin-key", two.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let client = cluster.client().await;
    let wallet = WalletId::new("pay-1").unwrap();
    let key = client.keygen(&wallet, Scheme::Ecdsa, 2, None).await.unwrap();

    let sign_tx = |tx: &[u8]| cluster.cli(&["sign", "--wallet", "pay-1", "--scheme", "ecdsa", "--eth-tx-hex", &hex::encode(tx)]);
    // Signed over Keccak-256 of the exact bytes, with the y-parity that
    // recovers the wallet's key (the CLI checked both; so does this test).
    let tx = transfer(allowed, 600, 1);
    let (code, out, err) = sign_tx(&tx);
    assert_eq!(code, 0, "{out} {err}");
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    use sha3::Digest;
    let signature = Signature::from_slice(&hex::decode(out["signature"].as_str().unwrap()).unwrap()).unwrap();
    let parity = RecoveryId::from_byte(out["recovery_id"].as_u64().unwrap() as u8).unwrap();
    let recovered = VerifyingKey::recover_from_prehash(&sha3::Keccak256::digest(&tx), &signature, parity).unwrap();
    assert_eq!(recovered.to_encoded_point(true).as_bytes(), key.public_key.as_slice());

    // The rule reads the destination, the amount and the chain.
    for (tx, why) in [
        (transfer("0x00000000000000000000000000000000000000bb", 1, 1), "is not on its list"),
        (transfer(allowed, 1001, 1), "exceeds its cap"),
        (transfer(allowed, 1, 5), "chain 5"),
    ] {
        let (code, out, _) = sign_tx(&tx);
        assert_eq!((code, denied_by(&out).0, out["error"]["rule"].as_str()), (1, "policy_denied", Some("payouts")), "{out}");
        assert!(denied_by(&out).1.contains(why), "{out}");
    }
    // A raw digest or message shows none of that: refused.
    let (_, out, _) = cluster.cli(&["sign", "--wallet", "pay-1", "--scheme", "ecdsa", "--digest-hex", &"07".repeat(32)]);
    assert_eq!(denied_by(&out).0, "policy_denied", "{out}");
    // Velocity by amount: 600 + 600 fit in 1500 an hour, a third does not.
    assert_eq!(sign_tx(&transfer(allowed, 600, 1)).0, 0);
    let (_, out, _) = sign_tx(&transfer(allowed, 600, 1));
    assert!(denied_by(&out).1.contains("would exceed its limit of 1500"), "{out}");

    // A transaction that does not decode is refused before any rule.
    let garbage = client.sign(&wallet, Scheme::Ecdsa, conclave_proto::request::SignPayload::EthEip1559(vec![2, 0xc1]), vec![], None).await;
    assert!(matches!(garbage, Err(conclave_client::ClientError::Request(ref e)) if e.code == conclave_proto::ErrorCode::Malformed), "{garbage:?}");
}
