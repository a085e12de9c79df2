//! Approvals: a sign request whose policy rule needs approvals waits,
//! durably, until enough approvers of the rule's group approved the exact
//! request (each signer counts them itself), or its window passes. Real
//! node processes; the policy is set through the CLI by two admins.

use conclave_client::ClientError;
use conclave_proto::request::SignPayload;
use conclave_proto::{ErrorCode, RequestId, Scheme, WalletId};
use conclave_tests::{eventually, Cluster};
use std::time::Duration;

/// Sets a policy: `treasury-*` wallets need 2 of the cluster's three
/// approvers within `window_s`; every other wallet signs as before.
fn set_policy(cluster: &Cluster, window_s: u64) {
    let approvers: Vec<String> = (1..=3).map(|i| format!("\"{}\"", hex::encode(cluster.approver(i).verifying_key().to_bytes()))).collect();
    let path = cluster.dir().join("approvals.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"v": 1, "version": 1, "approver_groups": {{"approvers": [{}]}}, "rules": [
                {{"name": "treasury", "wallets": ["treasury-*"], "effect": "allow",
                  "require": {{"approvals": {{"group": "approvers", "count": 2, "window_s": {window_s}}}}}}},
                {{"name": "the-rest", "wallets": ["*"], "effect": "allow"}}
            ]}}"#,
            approvers.join(", ")
        ),
    )
    .unwrap();
    let (one, two) = (cluster.admin_key_file(1), cluster.admin_key_file(2));
    let (code, out, _) =
        cluster.cli(&["policy", "set", "--file", path.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--admin-key", two.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

/// Waits until the request waits with `held` approvals counted by the signers.
async fn waiting(approvers: &conclave_client::Client, id: &RequestId, held: usize) -> conclave_client::governance::PendingView {
    eventually(&format!("request waits with {held} approvals counted"), Duration::from_secs(60), || async {
        approvers.pending(id).await.ok().filter(|p| p.status.as_ref().is_some_and(|s| s.approved.len() == held))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_treasury_signature_waits_for_two_approvers_even_across_a_restart() {
    let mut cluster = Cluster::start(3).await;
    set_policy(&cluster, 3600);
    let wallet = WalletId::new("treasury-1").unwrap();
    let key = cluster.client().await.keygen(&wallet, Scheme::Eddsa, 2, None).await.unwrap();

    let id = RequestId::new("pay-42").unwrap();
    let initiator = cluster.client().await;
    let (w, r) = (wallet.clone(), id.clone());
    let signing = tokio::spawn(async move { initiator.sign_as(r, &w, Scheme::Eddsa, SignPayload::Message(b"pay 42".to_vec()), vec![], None).await });

    let approvers = cluster.client().await;
    let pending = waiting(&approvers, &id, 0).await;
    let status = pending.status.clone().unwrap();
    assert_eq!((status.required, status.rule.as_str(), status.group.as_str()), (2, "treasury", "approvers"));
    assert!(pending.request.body.contains("\"pay-42\""), "the approver sees the signed body");

    // An approval of anything else is refused by the hosts; one by an
    // approver counts, and the request still waits.
    // Hostile input: an approval of anything else, one of an unknown
    // request, and bytes that are no approval get typed refusals.
    let raw = async_nats::connect(cluster.nats_url()).await.unwrap();
    let answer = raw.request(conclave_proto::approvals::APPROVE_SUBJECT, "{\"v\":1,\"request_id\":".into()).await.unwrap();
    let receipt = conclave_proto::approvals::ApprovalReceipt::decode(&answer.payload).unwrap();
    assert_eq!(receipt.result.unwrap_err().code, ErrorCode::Malformed);
    let unknown = conclave_client::governance::PendingView {
        body: {
            let mut b = pending.body.clone();
            if let conclave_proto::request::RequestBody::Sign(s) = &mut b {
                s.request_id = RequestId::new("nobody").unwrap();
            }
            b
        },
        ..pending.clone()
    };
    let refused = approvers.approve(&unknown, &cluster.approver(1)).await;
    assert!(matches!(refused, Err(ClientError::Request(ref e)) if e.code == ErrorCode::UnknownRequest), "{refused:?}");
    let elsewhere = conclave_client::governance::PendingView { hash: [9; 32], ..pending.clone() };
    let refused = approvers.approve(&elsewhere, &cluster.approver(1)).await;
    assert!(matches!(refused, Err(ClientError::Request(ref e)) if e.code == ErrorCode::Unauthorized), "{refused:?}");
    assert_eq!(approvers.approve(&pending, &cluster.approver(1)).await.unwrap(), 1);
    waiting(&approvers, &id, 1).await;
    assert!(!signing.is_finished());

    // Node 2 restarts, host and signer, while the request waits.
    cluster.kill_node(2);
    cluster.wait_unready(2).await;
    cluster.start_node(2);
    cluster.wait_ready(3).await;

    // The second approver, through the CLI: signed.
    let key_file = cluster.dir().join("approver-2.key");
    let (code, out, err) = cluster.cli(&["approve", "--request-id", "pay-42", "--key", key_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["approved"]["wallet"], "treasury-1 (eddsa)", "{out}");
    let signed = signing.await.unwrap().expect("signed after two approvals");
    assert_eq!(signed.public_key, key.public_key);
    // An approval after the fact is kept, but the answered request does
    // not wait (or run) again.
    assert_eq!(approvers.approve(&pending, &cluster.approver(3)).await.unwrap(), 3);
    assert_eq!(approvers.pending(&id).await.unwrap().status, None, "an answered request waits for nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_approval_window_passes_fails_with_approval_expired() {
    let cluster = Cluster::start(3).await;
    set_policy(&cluster, 2);
    let wallet = WalletId::new("treasury-2").unwrap();
    let client = cluster.client().await;
    client.keygen(&wallet, Scheme::Eddsa, 2, None).await.unwrap();
    let other = client.sign(&WalletId::new("treasury-2").unwrap(), Scheme::Eddsa, SignPayload::Message(b"unapproved".to_vec()), vec![], None).await;
    match other {
        Err(ClientError::Request(e)) => {
            assert_eq!(e.code, ErrorCode::ApprovalExpired, "{e}");
            assert_eq!(e.rule.as_deref(), Some("treasury"));
        }
        other => panic!("{other:?}"),
    }
}
