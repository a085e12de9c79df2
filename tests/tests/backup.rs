//! `conclave-host backup` and `restore` with real node processes and
//! SoftHSM2 tokens.

use conclave_proto::request::SignPayload;
use conclave_proto::{NodeId, Scheme, WalletId};
use conclave_tests::{bin, eventually, softhsm, Cluster};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

fn wallet(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

fn host(args: &[&str]) -> Output {
    Command::new(bin("conclave-host")).args(args).output().unwrap()
}

fn backup(cluster: &Cluster, i: usize, out: &Path) -> Output {
    host(&["backup", "--config", cluster.node_dir(i).join("host.toml").to_str().unwrap(), "--out", out.to_str().unwrap()])
}

fn restore(config: &Path, from: &Path) -> Output {
    host(&["restore", "--config", config.to_str().unwrap(), "--from", from.to_str().unwrap()])
}

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

async fn signer_listening(cluster: &Cluster, i: usize) {
    let socket = cluster.node_dir(i).join("enclave.sock");
    eventually("the signer to listen", Duration::from_secs(30), || {
        let socket = socket.clone();
        async move { tokio::net::UnixStream::connect(&socket).await.ok().map(drop) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_signing_brings_back_a_lost_store() {
    let mut cluster = Cluster::start(3).await;
    let client = Arc::new(cluster.client().await);
    let wallets = [(wallet("kept-ecdsa"), Scheme::Ecdsa), (wallet("kept-eddsa"), Scheme::Eddsa)];
    for (w, scheme) in &wallets {
        client.keygen(w, *scheme, 2, None).await.unwrap();
    }
    let pair: Vec<NodeId> = cluster.node_ids()[..2].to_vec();

    // Take the backup while node-1 signs.
    let signing: Vec<_> = (0..4)
        .map(|i| {
            let (client, pair) = (client.clone(), pair.clone());
            let (w, scheme) = wallets[i % 2].clone();
            tokio::spawn(async move { client.sign(&w, scheme, SignPayload::Message(vec![i as u8]), vec![], Some(pair)).await })
        })
        .collect();
    let file = cluster.dir().join("node-1.backup");
    let out = backup(&cluster, 1, &file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for s in signing {
        s.await.unwrap().expect("signing goes on during a backup");
    }
    assert!(!backup(&cluster, 1, &file).status.success(), "an existing backup file is never overwritten");

    // Lose node-1's disk, restore with its signer up and its host down.
    cluster.kill_node(1);
    let store = cluster.node_dir(1).join("store");
    std::fs::remove_dir_all(&store).unwrap();
    cluster.wait_unready(1).await;
    cluster.start_signer(1);
    signer_listening(&cluster, 1).await;
    let out = restore(&cluster.node_dir(1).join("host.toml"), &file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = snapshot(&store);
    assert!(restored.len() >= 4, "shares, aux info and primes are back: {}", restored.len());
    // Restoring again finds everything present and changes nothing.
    let again = restore(&cluster.node_dir(1).join("host.toml"), &file);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(snapshot(&store), restored);

    cluster.start_host(1);
    cluster.wait_ready(3).await;
    for (w, scheme) in &wallets {
        let sig = client
            .sign(w, *scheme, SignPayload::Message(b"after restore".to_vec()), vec![], Some(pair.clone()))
            .await
            .expect("node-1 signs with the restored shares");
        assert_eq!(sig.signers, pair);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_foreign_or_unopenable_backups_are_refused_and_change_nothing() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    client.keygen(&wallet("guarded-backup"), Scheme::Eddsa, 2, None).await.unwrap();
    let node1_backup = cluster.dir().join("node-1.backup");
    let node2_backup = cluster.dir().join("node-2.backup");
    assert!(backup(&cluster, 1, &node1_backup).status.success());
    assert!(backup(&cluster, 2, &node2_backup).status.success());
    cluster.kill_host(1);
    let config = cluster.node_dir(1).join("host.toml");
    let store = cluster.node_dir(1).join("store");
    let before = snapshot(&store);

    let mut corrupted = std::fs::read(&node1_backup).unwrap();
    let at = corrupted.len() / 2;
    corrupted[at] = if corrupted[at] == b'A' { b'B' } else { b'A' };
    let corrupted_file = cluster.dir().join("corrupted.backup");
    std::fs::write(&corrupted_file, &corrupted).unwrap();
    for (file, expected) in [(&corrupted_file, "backup"), (&node2_backup, "this is a backup of node-2, not of node-1")] {
        let out = restore(&config, file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
        assert_eq!(snapshot(&store), before, "a refused restore changes nothing");
    }

    // A node with the same id but another token (another seal key): its
    // signer cannot open node-1's blobs, so nothing is restored.
    let other = tempfile::tempdir().unwrap();
    let d = other.path();
    let label = softhsm::token_label("node-1");
    let pin = softhsm::create_token(d, &label);
    std::fs::write(d.join("roster.json"), "[]").unwrap();
    let initiator = hex::encode(cluster.initiator().verifying_key().to_bytes());
    std::fs::write(
        d.join("enclave.toml"),
        format!(
            "node_id = \"node-1\"\nmode = \"hsm\"\nlink = \"unix:{sock}\"\nstate_dir = \"{state}\"\nroster = \"{roster}\"\ninitiators = [\"{initiator}\"]\n\
             [hsm]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n",
            sock = d.join("enclave.sock").display(),
            state = d.join("state").display(),
            roster = d.join("roster.json").display(),
            module = softhsm::MODULE,
            pin = pin.display()
        ),
    )
    .unwrap();
    let enclave = |args: &[&str]| {
        let mut command = Command::new(bin("conclave-enclave"));
        command.args(args).env(softhsm::CONF_ENV, softhsm::conf(d));
        command
    };
    let init = enclave(&["init", "--config", d.join("enclave.toml").to_str().unwrap()]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    std::fs::write(d.join("roster.json"), format!("[{}]", String::from_utf8_lossy(&init.stdout).trim())).unwrap();
    let mut signer = enclave(&["run", "--config", d.join("enclave.toml").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = d.join("enclave.sock");
    eventually("the other signer to listen", Duration::from_secs(30), || {
        let socket = socket.clone();
        async move { tokio::net::UnixStream::connect(&socket).await.ok().map(drop) }
    })
    .await;
    std::fs::write(
        d.join("host.toml"),
        format!(
            "node_id = \"node-1\"\nlink = \"unix:{}\"\nnats_urls = [\"nats://127.0.0.1:1\"]\nstore_dir = \"{}\"\nhttp_addr = \"127.0.0.1:1\"\n",
            socket.display(),
            d.join("store").display()
        ),
    )
    .unwrap();
    let out = restore(&d.join("host.toml"), &node1_backup);
    let _ = signer.kill();
    let _ = signer.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("signer cannot open"), "{stderr}");
    assert!(snapshot(&d.join("store")).is_empty(), "nothing was written");
}
