//! `conclave attest node`: a node's fresh attestation document, verified
//! and checked against the identity it is registered with. On these
//! machines the documents come from the dev cluster's simulated NSM, which
//! no verifier trusts unless told to (`--allow-dev`).

use conclave_tests::{bin, Cluster, Mode};
use serde_json::Value;

fn attest(cluster: &Cluster, args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(bin("conclave"))
        .arg("--config")
        .arg(cluster.client_config())
        .args(["attest", "node"])
        .args(args)
        .arg("--json")
        .output()
        .expect("run conclave");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON on stdout: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().expect("exit code"), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_attests_its_own_identity_and_is_refused_without_allow_dev() {
    let cluster = Cluster::start_in(Mode::Dev, 3).await;
    let (code, report) = attest(&cluster, &["node-2"]);
    assert_eq!(code, 1, "a simulated document does not chain to the AWS root: {report}");
    assert_eq!(report["error"]["check"], "chain");

    let (code, report) = attest(&cluster, &["node-2", "--allow-dev"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["node"], "node-2");
    let identity = cluster.client().await.nodes().await.unwrap().into_iter().find(|n| n.node_id.as_str() == "node-2").unwrap().record.identity;
    assert_eq!(report["user_data"], hex::encode(identity.attestation_binding()), "the document binds node-2's keys");
    assert_eq!(report["nonce"].as_str().map(str::len), Some(64), "it answers the client's fresh 32-byte nonce");
    assert_eq!(report["pcrs"]["0"].as_str().map(str::len), Some(96), "PCR0: the dev measurement of the signer binary");

    // Asked to match a measurement the node does not have, it is refused.
    let (code, report) = attest(&cluster, &["node-2", "--allow-dev", "--pcr", &format!("0={}", "ab".repeat(48))]);
    assert_eq!((code, report["error"]["check"].as_str()), (1, Some("pcr")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_node_says_it_has_no_attestation() {
    let cluster = Cluster::start(3).await;
    let (code, report) = attest(&cluster, &["node-1"]);
    assert_ne!(code, 0);
    assert_eq!(report["error"]["code"], "unsupported", "{report}");
}

/// Peers admit each other by attestation before they run a protocol
/// together: a node whose document binds other keys than those it has in
/// the roster is refused by its peers with a typed error that names it and
/// the failed check, and the others keep signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_document_binds_other_keys_is_refused_and_the_others_keep_signing() {
    use conclave_proto::request::SignPayload;
    use conclave_proto::{ErrorCode, NodeId, Scheme, WalletId};
    let mut cluster = Cluster::start_in(Mode::Dev, 3).await;
    cluster.restart_signer_with(3, &[("CONCLAVE_FAULT_ATTEST_FOREIGN_KEYS", "1")]).await;
    cluster.wait_ready(3).await;
    let client = cluster.client().await;
    let (node1, node2, node3) = (NodeId::new("node-1").unwrap(), NodeId::new("node-2").unwrap(), NodeId::new("node-3").unwrap());

    let honest = WalletId::new("honest-pair").unwrap();
    client.keygen(&honest, Scheme::Eddsa, 2, Some(vec![node1.clone(), node2.clone()])).await.expect("node-1 and node-2 admit each other");
    client.sign(&honest, Scheme::Eddsa, SignPayload::Message(b"before".to_vec()), vec![], None).await.unwrap();

    let with_liar = WalletId::new("with-node-3").unwrap();
    let refused = client.keygen(&with_liar, Scheme::Eddsa, 2, None).await.expect_err("node-3 is not admitted");
    let conclave_client::ClientError::Request(error) = refused else { panic!("a typed error, not {refused}") };
    assert_eq!(error.code, ErrorCode::PeerUnattested, "{error:?}");
    assert_eq!(error.blamed, vec![node3.clone()]);
    assert!(error.reason.contains("binding"), "the failed check is named: {}", error.reason);
    let counted = cluster.metric(1, "conclave_rejected_total{code=\"peer_unattested\"}").await
        + cluster.metric(2, "conclave_rejected_total{code=\"peer_unattested\"}").await;
    assert!(counted >= 1.0, "the refusal is counted");

    client.sign(&honest, Scheme::Eddsa, SignPayload::Message(b"after".to_vec()), vec![], None).await.expect("the others keep signing");

    // `conclave status` shows what each node's peers verified of it: the
    // honest nodes verified each other, and nobody admitted node-3. (node-3
    // checks its peers too, when a session of its own starts: whether it
    // got through both before its refused attempt was aborted depends on
    // timing, so what it verified is checked only where it shows.)
    let status = conclave_tests::eventually("the peers' verifications in status", std::time::Duration::from_secs(60), || {
        let client = &client;
        let (node1, node2) = (&node1, &node2);
        async move {
            client.status().await.ok().filter(|s| {
                let of = |node: &NodeId| s.nodes.iter().find(|n| n.id == *node).map(|n| n.attested_by.clone()).unwrap_or_default();
                of(node1).contains_key(node2) && of(node2).contains_key(node1)
            })
        }
    })
    .await;
    let of = |node: &NodeId| status.nodes.iter().find(|n| n.id == *node).unwrap().attested_by.clone();
    assert!(of(&node3).is_empty(), "node-3 was never admitted");
    for (node, peer) in [(&node1, &node3), (&node2, &node3)] {
        if let Some(pcr0) = of(node).get(peer) {
            assert_eq!(pcr0, &of(&node1)[&node2], "node-3 saw the same build measurement");
        }
    }
    assert_eq!(of(&node1)[&node2], of(&node2)[&node1], "the same build shows the same measurement");
}
