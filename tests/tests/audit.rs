//! The audit trail: each signer appends every decision (policy changes,
//! requests accepted and denied, signatures, keys made), chained and
//! signed; `conclave audit export` collects the trails with a fresh head
//! from each signer, and `conclave audit verify` checks them offline,
//! naming the first entry that was altered, dropped or moved, and a trail
//! a host cut short. Real node processes.

use conclave_proto::audit::AuditExport;
use conclave_tests::Cluster;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn verify(cluster: &Cluster, file: &Path) -> (i32, Value) {
    let (code, out, _) = cluster.cli(&["audit", "verify", "--file", file.to_str().unwrap()]);
    (code, out)
}

fn export_trails(cluster: &Cluster, name: &str) -> (PathBuf, AuditExport) {
    let file = cluster.dir().join(name);
    let (code, out, err) = cluster.cli(&["audit", "export", "--out", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    let export = AuditExport::decode(&std::fs::read(&file).unwrap()).unwrap();
    (file, export)
}

fn faults(out: &Value) -> Vec<String> {
    out["nodes"].as_array().unwrap().iter().filter_map(|n| n["fault"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trails_record_every_decision_and_verify_names_the_first_bad_entry() {
    let cluster = Cluster::start(3).await;
    let policy = cluster.dir().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"v": 1, "version": 1, "rules": [
            {"name": "no-digests", "wallets": ["*"], "effect": "deny", "when": {"payloads": ["digest"]}},
            {"name": "the-rest", "wallets": ["*"], "effect": "allow"}]}"#,
    )
    .unwrap();
    let (one, two) = (cluster.admin_key_file(1), cluster.admin_key_file(2));
    assert_eq!(
        cluster.cli(&["policy", "set", "--file", policy.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--admin-key", two.to_str().unwrap()]).0,
        0
    );
    assert_eq!(cluster.cli(&["keygen", "--wallet", "w", "--scheme", "eddsa", "--threshold", "2"]).0, 0);
    for _ in 0..2 {
        assert_eq!(cluster.cli(&["sign", "--wallet", "w", "--scheme", "eddsa", "--message-hex", "aa"]).0, 0);
    }
    assert_eq!(cluster.cli(&["sign", "--wallet", "w", "--scheme", "eddsa", "--digest-hex", "aa"]).1["error"]["code"], "policy_denied");

    // Each signer of a signature records it before it answers, but the
    // client has its result from the first: exported until both are in.
    let mut tries = 0;
    let (export, out) = conclave_tests::eventually("both signers' entries of both signatures", std::time::Duration::from_secs(30), || {
        tries += 1;
        let (file, export) = export_trails(&cluster, &format!("audit-{tries}.json"));
        let (code, out) = verify(&cluster, &file);
        assert_eq!(code, 0, "{out}");
        let signatures: u64 = out["nodes"].as_array().unwrap().iter().map(|r| r["signatures"].as_u64().unwrap()).sum();
        std::future::ready((signatures >= 4).then_some((export, out)))
    })
    .await;
    let rows = out["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // The denial is recorded by each signer that judged it before the
    // first refusal ended the request (one or both).
    let denials: u64 = rows.iter().map(|r| r["denials"].as_u64().unwrap()).sum();
    assert!(denials >= 1, "{out}");
    for r in rows {
        assert_eq!(r["head_seq"], r["last_seq"], "each trail reaches its signer's head: {out}");
    }
    let kinds: Vec<String> = export.nodes[0]
        .entries
        .iter()
        .map(|e| e.parse().unwrap().event)
        .map(|ev| serde_json::to_value(ev).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    // The policy change, then the wallet's key (after whatever the harness did).
    assert!(kinds.windows(2).any(|w| w == ["policy_changed", "key_created"]), "{kinds:?}");

    // Offline tampering with the file: each is named.
    let busiest = export.nodes.iter().position(|n| n.entries.len() >= 4).expect("a signer of both signatures");
    let node = export.nodes[busiest].node.clone();
    let tampered = |name: &str, change: &dyn Fn(&mut AuditExport)| {
        let mut copy = export.clone();
        change(&mut copy);
        let path = cluster.dir().join(name);
        std::fs::write(&path, copy.encode()).unwrap();
        let (code, out) = verify(&cluster, &path);
        assert_eq!(code, 1, "{out}");
        faults(&out).join("; ")
    };
    let altered = tampered("altered.json", &|e| {
        let entry = &mut e.nodes[busiest].entries[2];
        entry.entry = entry.entry.replacen("\"w\"", "\"x\"", 1);
    });
    assert!(altered.contains(&format!("entry 3 (seq 3) of {node}")), "{altered}");
    let dropped = tampered("dropped.json", &|e| {
        e.nodes[busiest].entries.remove(1);
    });
    assert!(dropped.contains(&node.to_string()) && dropped.contains("missing"), "{dropped}");
    let reordered = tampered("reordered.json", &|e| e.nodes[busiest].entries.swap(1, 2));
    assert!(reordered.contains(&node.to_string()) && reordered.contains("reordered"), "{reordered}");

    // hsm signers sign their trails with run keys their tokens certified;
    // an entry signed by another node's run key, under its certificate, is
    // refused at the certificate, before anything in it is read.
    assert!(export.nodes.iter().all(|n| n.entries.iter().all(|e| e.run_key.is_some()) && n.head.as_ref().is_some_and(|h| h.run_key.is_some())));
    let other = (busiest + 1) % export.nodes.len();
    let borrowed = tampered("borrowed.json", &|e| e.nodes[busiest].entries[1] = e.nodes[other].entries[1].clone());
    assert!(borrowed.contains(&format!("entry 2 (seq 2) of {node}: the signature does not verify")), "{borrowed}");

    // A host that cuts its node's trail short is caught by the signer's
    // fresh head.
    let journal = cluster.node_dir(busiest + 1).join("store/blobs/audit").join(conclave_proto::store::JOURNAL_FILE);
    let bytes = std::fs::read(&journal).unwrap();
    let mut newest = 0;
    conclave_proto::store::read_journal(&mut bytes.as_slice(), bytes.len() as u64, &mut |at, _, _| {
        newest = at;
        true
    })
    .unwrap();
    std::fs::OpenOptions::new().write(true).open(&journal).unwrap().set_len(newest).unwrap();
    let (cut, _) = export_trails(&cluster, "audit-cut.json");
    let (code, out) = verify(&cluster, &cut);
    assert_eq!(code, 1, "{out}");
    assert!(faults(&out).join("; ").contains("cut short"), "{out}");

    // Its signer, restarted, finds the shorter trail, never reuses a number,
    // and declares the gap; the trail checks around it and the gap is named.
    let mut cluster = cluster;
    cluster.restart_signer_with(busiest + 1, &[]).await;
    cluster.wait_ready(3).await;
    let (declared, _) = export_trails(&cluster, "audit-declared.json");
    let (code, out) = verify(&cluster, &declared);
    assert_eq!(code, 1, "{out}");
    let row = out["nodes"].as_array().unwrap().iter().find(|n| n["node"] == node.as_str()).unwrap_or_else(|| panic!("{out}")).clone();
    let last = row["last_seq"].as_u64().unwrap();
    assert_eq!(row["lost"], serde_json::json!([[last - 1, last - 1]]), "{out}");
    assert!(faults(&out).is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_that_cannot_write_its_decision_to_the_trail_gives_no_share() {
    use conclave_proto::request::SignPayload;
    use conclave_proto::{ErrorCode, Scheme, WalletId};
    let cluster = Cluster::start_in(conclave_tests::Mode::Dev, 3).await;
    let client = cluster.client().await;
    let w = WalletId::new("unwritten").unwrap();
    client.keygen(&w, Scheme::Eddsa, 2, None).await.unwrap();
    let signers = cluster.node_ids()[..2].to_vec();
    let sign = |m: &'static [u8]| client.sign(&w, Scheme::Eddsa, SignPayload::Message(m.to_vec()), vec![], Some(signers.clone()));
    sign(b"first").await.expect("signs while the trail can be written");

    // Node-1's host can no longer store audit entries (a file where the
    // trail's directory was): node-1's decision must be in its trail before
    // its share of the signature leaves, the write fails, and it gives no
    // share; node-2's share alone makes no signature.
    let trail = cluster.node_dir(1).join("store/blobs/audit");
    let aside = trail.with_extension("aside");
    std::fs::rename(&trail, &aside).unwrap();
    std::fs::write(&trail, b"not a directory").unwrap();
    let refused = sign(b"unrecorded").await.expect_err("no signature without node-1's decision in its trail");
    assert_eq!(refused.code(), Some(ErrorCode::Storage), "{refused}");

    // Once the trail can be written again, the next request signs.
    std::fs::remove_file(&trail).unwrap();
    std::fs::rename(&aside, &trail).unwrap();
    sign(b"again").await.expect("signs once the trail can be written");
}
