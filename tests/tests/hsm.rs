//! HSM mode: shares sealed by a SoftHSM2 token per node, identity keys in
//! the token. Real tokens, real node processes, real `conclave-enclave`
//! commands.

use conclave_enclave::floor::Floors;
use conclave_enclave::hsm::{HsmConfig, PinSource, Token};
use conclave_enclave::seal::{key_id_of, SealContext, SealError, Sealer, TokenSealer};
use conclave_proto::link::BlobSlot;
use conclave_proto::request::{RequestBody, SignPayload, SignRequest};
use conclave_proto::result::Outcome;
use conclave_proto::store::blob_file_name;
use conclave_proto::{ErrorCode, NodeId, Scheme, WalletId};
use conclave_tests::adversary::Adversary;
use conclave_tests::{bin, softhsm, Cluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn wallet(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

fn hsm_config(label: &str, pin_file: PathBuf) -> HsmConfig {
    HsmConfig {
        module: softhsm::MODULE.into(),
        token_label: label.into(),
        pin: PinSource::File(pin_file),
        seal_key_label: "conclave-seal-1".into(),
        identity_key_label: "conclave-identity".into(),
    }
}

#[test]
fn a_blob_opens_only_under_its_own_token_wallet_and_version() {
    let d = tempfile::tempdir().unwrap();
    let pin_a = softhsm::create_token(d.path(), "token-a");
    let pin_b = softhsm::create_token(d.path(), "token-b");
    // SoftHSM2 reads its configuration from the environment when the module
    // is initialised. Each test is its own process (nextest) and this one
    // has started no other thread.
    std::env::set_var(softhsm::CONF_ENV, softhsm::conf(d.path()));
    let open = |label: &str, pin: &PathBuf| {
        let token = Arc::new(Token::open(&hsm_config(label, pin.clone())).unwrap());
        token.create_seal_key("conclave-seal-1").unwrap();
        TokenSealer::new(token, "conclave-seal-1").unwrap()
    };
    let (a, b) = (open("token-a", &pin_a), open("token-b", &pin_b));
    let node = NodeId::new("node-1").unwrap();
    let slot = |w: &str| BlobSlot::Share { wallet: wallet(w), scheme: Scheme::Ecdsa };
    let ctx = SealContext::blob(&node, &slot("w1"), 1);
    let blob = a.seal(&ctx, b"share").unwrap();
    assert_eq!(key_id_of(&blob).unwrap(), "hsm:conclave-seal-1");
    assert_eq!(&**a.open(&ctx, &blob).unwrap(), b"share");

    // Same node, slot, version and key label, another token: does not open.
    let other = b.open(&ctx, &blob).map(|_| ());
    assert!(matches!(other, Err(SealError::Open)), "{other:?}");
    // Another wallet, another version, a flipped byte: do not open.
    assert!(matches!(a.open(&SealContext::blob(&node, &slot("w2"), 1), &blob), Err(SealError::Open)));
    assert!(matches!(a.open(&SealContext::blob(&node, &slot("w1"), 2), &blob), Err(SealError::Open)));
    for i in [0, 10, blob.len() / 2, blob.len() - 1] {
        let mut tampered = blob.clone();
        tampered[i] ^= 1;
        assert!(a.open(&ctx, &tampered).is_err(), "byte {i} flipped still opens");
    }
    // Two seals of the same plaintext differ (fresh IV each time).
    assert_ne!(a.seal(&ctx, b"share").unwrap(), blob);
}

#[test]
fn the_signer_refuses_to_start_with_a_wrong_pin_token_module_or_missing_keys() {
    let d = tempfile::tempdir().unwrap();
    let label = softhsm::token_label("node-1");
    let pin = softhsm::create_token(d.path(), &label);
    let roster = d.path().join("roster.json");
    std::fs::write(&roster, "[]").unwrap();
    let config = |name: &str, module: &str, token: &str, pin_file: &Path| {
        let path = d.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"node-1\"\nmode = \"hsm\"\nlink = \"unix:{}\"\nstate_dir = \"{}\"\nroster = \"{}\"\n\
                 initiators = [\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"]\n\
                 [hsm]\nmodule = \"{module}\"\ntoken_label = \"{token}\"\npin_file = \"{}\"\n",
                d.path().join("enclave.sock").display(),
                d.path().join("state").display(),
                roster.display(),
                pin_file.display()
            ),
        )
        .unwrap();
        path
    };
    let enclave = |command: &str, config: &Path| {
        let out = Command::new(bin("conclave-enclave"))
            .args([command, "--config", config.to_str().unwrap()])
            .env(softhsm::CONF_ENV, softhsm::conf(d.path()))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let real_pin = std::fs::read_to_string(&pin).unwrap();
    let wrong_pin = d.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "000000").unwrap();

    let cases = [
        ("run", config("uninitialised", softhsm::MODULE, &label, &pin), "run `conclave-enclave init`"),
        ("init", config("wrong-pin", softhsm::MODULE, &label, &wrong_pin), "refused the PIN"),
        ("init", config("no-token", softhsm::MODULE, "no-such-token", &pin), "no initialised token labelled \"no-such-token\""),
        ("init", config("no-module", "/usr/lib/no-such-module.so", &label, &pin), "cannot load the PKCS#11 module"),
        ("init", config("no-pin", softhsm::MODULE, &label, &d.path().join("absent.pin")), "cannot read the PIN file"),
    ];
    for (command, config, expected) in &cases {
        let (code, stderr) = enclave(command, config);
        assert_eq!(code, Some(2), "{command} with {expected:?}: {stderr}");
        assert!(stderr.contains(expected), "{command}: expected {expected:?} in {stderr}");
        assert!(!stderr.contains(real_pin.trim()), "the PIN is never printed");
        assert!(!d.path().join("enclave.sock").exists(), "a refused signer never listens");
        assert!(!d.path().join("state").join("channel.key.sealed").exists(), "a refused signer creates nothing");
    }
    // With the right PIN, init makes the keys, and run then gets past them.
    let good = config("good", softhsm::MODULE, &label, &pin);
    let (code, stderr) = enclave("init", &good);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_swapped_or_rolled_back_blobs_are_refused_and_nothing_is_overwritten() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let status = client.status().await.unwrap();
    assert!(status.nodes.iter().all(|n| n.mode == "hsm"), "every node reports hsm mode: {:?}", status.nodes);
    let (a, b) = (wallet("blob-a"), wallet("blob-b"));
    for w in [&a, &b] {
        client.keygen(w, Scheme::Ecdsa, 2, None).await.unwrap();
    }
    let signers: Vec<NodeId> = cluster.node_ids()[..2].to_vec();
    let sign = |w: WalletId| {
        let (client, signers) = (&client, signers.clone());
        async move { client.sign(&w, Scheme::Ecdsa, SignPayload::Digest(vec![9; 32]), vec![], Some(signers)).await }
    };
    sign(a.clone()).await.expect("signs before any tampering");

    let slot_dir = |w: &WalletId| cluster.node_dir(1).join("store/blobs/share").join(w.as_str()).join("ecdsa");
    let v1 = slot_dir(&a).join(blob_file_name(1));
    let original = std::fs::read(&v1).unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };

    // One byte flipped.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    // Wallet b's share in wallet a's slot.
    let swapped = std::fs::read(slot_dir(&b).join(blob_file_name(1))).unwrap();
    for (what, bytes) in [("a tampered blob", tampered), ("another wallet's blob", swapped)] {
        std::fs::write(&v1, &bytes).unwrap();
        let files = listing(&slot_dir(&a));
        let err = sign(a.clone()).await.expect_err(what);
        assert_eq!(err.code(), Some(ErrorCode::Storage), "{what}: {err}");
        assert_eq!(std::fs::read(&v1).unwrap(), bytes, "{what}: the signer wrote nothing over it");
        assert_eq!(listing(&slot_dir(&a)), files, "{what}: no version was added or removed");
    }

    // Put back, the same share signs again: the refusals changed nothing.
    std::fs::write(&v1, &original).unwrap();
    sign(a.clone()).await.expect("signs once the blob is back");

    // A real older version: after a reshare (2-of-3 to 3-of-3, the same
    // committee), every host serves version 1 again, the registry names
    // version 1 again, and a request the initiator signed for version 1
    // arrives. Each signer's floor, kept in its token, refuses it.
    let adversary = Adversary::connect(&cluster.nats_url()).await;
    let old_record = adversary.wallet_record(&a, Scheme::Ecdsa).await;
    let early = client.sign_request(&RequestBody::Sign(SignRequest {
        request_id: conclave_client::client::new_request_id(),
        wallet: a.clone(),
        scheme: Scheme::Ecdsa,
        version: 1,
        payload: SignPayload::Digest(vec![7; 32]),
        path: vec![],
        signers: Some(signers.clone()),
        timeout_ms: None,
        issued_at_ms: conclave_tests::wire::now_ms(),
    }));
    let new = client.reshare(&a, Scheme::Ecdsa, 3, cluster.node_ids()).await.expect("reshare");
    assert_eq!(new.version, 2);
    for i in 1..=3 {
        std::fs::remove_file(cluster.node_dir(i).join("store/blobs/share").join(a.as_str()).join("ecdsa").join(blob_file_name(2))).unwrap();
    }
    adversary.overwrite_wallet_record(&a, Scheme::Ecdsa, &old_record).await;
    match client.send(&early).await.expect("answered").outcome {
        Outcome::Error { error } => assert_eq!(error.code, ErrorCode::VersionMismatch, "{error}"),
        Outcome::Ok { .. } => panic!("a replaced share signed again"),
    }
}

/// A new token labelled `label` in a directory of its own, with SoftHSM2
/// pointed at it (each test is its own process under nextest, and this
/// runs before any other thread starts): the directory, the PIN file, and
/// a way to open the token (a restarted signer opens it again).
fn fresh_token(label: &'static str) -> (tempfile::TempDir, PathBuf, impl Fn() -> Arc<Token>) {
    let dir = tempfile::tempdir().unwrap();
    let pin = softhsm::create_token(dir.path(), label);
    std::env::set_var(softhsm::CONF_ENV, softhsm::conf(dir.path()));
    let pin_file = pin.clone();
    (dir, pin, move || Arc::new(Token::open(&hsm_config(label, pin_file.clone())).unwrap()))
}

#[test]
fn a_version_floor_in_the_token_only_rises_and_outlives_the_session() {
    let (_dir, _, open) = fresh_token("floors");
    let floors = Floors::token(open());
    assert_eq!(floors.get("share/w/ecdsa").unwrap(), 0);
    floors.raise("share/w/ecdsa", 2).unwrap();
    floors.raise("share/w/ecdsa", 1).unwrap();
    assert_eq!(floors.get("share/w/ecdsa").unwrap(), 2, "never lowered");
    floors.raise("share/w/ecdsa", 3).unwrap();
    assert_eq!(floors.get("share/w/ecdsa").unwrap(), 3, "raised again");
    assert!(floors.take("presig/w/p", 4).unwrap());
    assert!(!floors.take("presig/w/p", 4).unwrap(), "taken once");
    drop(floors);
    // A new session (a restarted signer) reads them back from the token.
    let floors = Floors::token(open());
    assert_eq!(floors.get("share/w/ecdsa").unwrap(), 3);
    assert!(!floors.take("presig/w/p", 4).unwrap(), "a restart remembers a take");
    assert_eq!(floors.get("primes").unwrap(), 0, "one floor per slot");
}

#[test]
fn a_floor_kept_by_an_earlier_build_counts_and_is_replaced_at_its_next_raise() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, ObjectClass};
    let (_dir, pin, open) = fresh_token("earlier");
    // The earlier layout: one object labelled with the floor's name, the
    // version as a 4-byte big-endian value.
    let legacy =
        [Attribute::Class(ObjectClass::DATA), Attribute::Application(b"conclave-floor".to_vec()), Attribute::Label(b"conclave-floor:share/w/ecdsa".to_vec())];
    let with_raw_session = |act: &dyn Fn(&cryptoki::session::Session)| {
        let pkcs11 = Pkcs11::new(softhsm::MODULE).unwrap();
        pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
        let slot = pkcs11.get_slots_with_token().unwrap().into_iter().find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == "earlier").unwrap();
        let session = pkcs11.open_rw_session(slot).unwrap();
        let user_pin = std::fs::read_to_string(&pin).unwrap();
        session.login(cryptoki::session::UserType::User, Some(&cryptoki::types::AuthPin::from(user_pin))).unwrap();
        act(&session);
    };
    with_raw_session(&|session| {
        let mut template = legacy.to_vec();
        template.extend([Attribute::Token(true), Attribute::Private(true), Attribute::Value(7u32.to_be_bytes().to_vec())]);
        session.create_object(&template).unwrap();
    });
    let floors = Floors::token(open());
    assert_eq!(floors.get("share/w/ecdsa").unwrap(), 7, "an earlier build's floor counts");
    assert!(!floors.take("share/w/ecdsa", 6).unwrap(), "below it nothing is taken");
    floors.raise("share/w/ecdsa", 8).unwrap();
    drop(floors);
    assert_eq!(Floors::token(open()).get("share/w/ecdsa").unwrap(), 8);
    with_raw_session(&|session| assert!(session.find_objects(&legacy).unwrap().is_empty(), "the earlier layout's object is gone"));
}

#[test]
fn a_floor_object_lost_in_a_crash_mid_raise_leaves_at_least_the_floor_before_that_raise() {
    let (dir, _, open) = fresh_token("torn");
    let floors = Floors::token(open());
    for version in 1..=4 {
        floors.raise("presig/w/p", version).unwrap();
    }
    drop(floors);
    // SoftHSM2 keeps each object in a file of its own and skips a file it
    // cannot read: what a rewrite cut by kill -9 or a power cut leaves.
    let tokens = dir.path().join("softhsm/tokens");
    let token_dir = std::fs::read_dir(&tokens).unwrap().next().unwrap().unwrap().path();
    let floor_files: Vec<PathBuf> = std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "object") && p.file_name().is_some_and(|n| n != "token.object"))
        .collect();
    assert_eq!(floor_files.len(), 2, "{floor_files:?}");
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    for f in &floor_files {
        std::fs::copy(f, saved.join(f.file_name().unwrap())).unwrap();
    }
    let mut seen = Vec::new();
    for lost in &floor_files {
        for f in &floor_files {
            std::fs::copy(saved.join(f.file_name().unwrap()), f).unwrap();
        }
        std::fs::write(lost, b"").unwrap();
        let floors = Floors::token(open());
        let floor = floors.get("presig/w/p").unwrap();
        assert!(!floors.take("presig/w/p", 2).unwrap(), "a presignature taken before the last raise stays taken");
        seen.push(floor);
        drop(floors);
    }
    seen.sort();
    assert_eq!(seen, [3, 4], "losing either object leaves the floor of the last raise or the one before");
    // The floor goes on rising from what is left.
    let floors = Floors::token(open());
    floors.raise("presig/w/p", 9).unwrap();
    drop(floors);
    assert_eq!(Floors::token(open()).get("presig/w/p").unwrap(), 9);
}

#[test]
fn threads_that_use_the_token_at_once_each_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pin = softhsm::create_token(dir.path(), "busy");
    std::env::set_var(softhsm::CONF_ENV, softhsm::conf(dir.path()));
    let token = Token::open(&hsm_config("busy", pin)).unwrap();
    token.create_identity_key("conclave-identity").unwrap();
    let (key, public) = token.identity_key("conclave-identity").unwrap().unwrap();
    let seal = token.create_seal_key("conclave-seal-1").unwrap();
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    // Signatures and seals from four threads at once (the signer's sessions
    // do that): each thread's answers are for its own messages.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (token, verifying) = (&token, &verifying);
            s.spawn(move || {
                for i in 0..40u8 {
                    let message = [t, i];
                    let signature = token.sign_ed25519(key, &message).unwrap();
                    verifying.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature)).expect("a signature over this thread's message");
                    let mut iv = [0u8; 12];
                    iv[..2].copy_from_slice(&message);
                    let sealed = token.encrypt_gcm(seal, &iv, &message, &message).unwrap();
                    assert_eq!(*token.decrypt_gcm(seal, &iv, &message, &sealed).unwrap(), message);
                }
            });
        }
    });
}

/// Every blob file under `dir` and the key that sealed it.
fn sealed_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // The policy and the audit trail are signed, not sealed.
        let signed = path.strip_prefix(dir).ok().and_then(|p| p.to_str()).is_some_and(BlobSlot::is_signed_path);
        if path.is_dir() && !signed {
            sealed_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "blob" || e == "sealed") {
            let key = key_id_of(&std::fs::read(&path).unwrap()).unwrap().to_string();
            out.push((path, key));
        }
    }
    out.sort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseal_killed_half_way_loses_nothing_and_finishes_when_run_again() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let wallets = [(wallet("rotate-ecdsa"), Scheme::Ecdsa), (wallet("rotate-eddsa"), Scheme::Eddsa)];
    for (w, scheme) in &wallets {
        client.keygen(w, *scheme, 2, None).await.unwrap();
    }
    cluster.kill_node(1);
    let node = cluster.node_dir(1);
    let config = node.join("enclave.toml");
    let enclave = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin("conclave-enclave"));
        cmd.args(args).env(softhsm::CONF_ENV, softhsm::conf(&node));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let identity_before = enclave(&["init", "--config", config.to_str().unwrap()], &[]).stdout;

    // Rotate: a new seal key in the token, then reseal.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("[hsm]\n", "[hsm]\nseal_key_label = \"conclave-seal-2\"\n")).unwrap();
    let init = enclave(&["init", "--config", config.to_str().unwrap()], &[]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert_eq!(init.stdout, identity_before, "rotating the seal key keeps the identity");

    let mut before = Vec::new();
    sealed_files(&node, &mut before);
    assert!(before.len() >= 5, "shares, aux info, primes and the channel key: {before:?}");
    assert!(before.iter().all(|(_, key)| key == "hsm:conclave-seal-1"));

    let store = node.join("store");
    let reseal = ["reseal", "--config", config.to_str().unwrap(), "--store", store.to_str().unwrap()];
    let killed = enclave(&reseal, &[(conclave_enclave::fault::Hook::ResealAbortAfter.env(), "2")]);
    assert!(!killed.status.success() && killed.status.code().is_none(), "the first run dies by a signal");
    let mut half = Vec::new();
    sealed_files(&node, &mut half);
    let paths = |v: &[(PathBuf, String)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&half), paths(&before), "no blob lost or added by the kill");
    assert_eq!(half.iter().filter(|(_, k)| k == "hsm:conclave-seal-2").count(), 2, "killed after two blobs");

    let finished = enclave(&reseal, &[]);
    assert!(finished.status.success(), "{}", String::from_utf8_lossy(&finished.stderr));
    let mut after = Vec::new();
    sealed_files(&node, &mut after);
    assert_eq!(paths(&after), paths(&before), "every blob is still there");
    assert!(after.iter().all(|(_, key)| key == "hsm:conclave-seal-2"), "all under the new key: {after:?}");

    // The node starts on the resealed channel key and opens every share.
    cluster.wait_unready(1).await;
    cluster.start_node(1);
    cluster.wait_ready(3).await;
    let signers: Vec<NodeId> = cluster.node_ids()[..2].to_vec();
    for (w, scheme) in &wallets {
        let payload = SignPayload::Message(b"after rotation".to_vec());
        client.sign(w, *scheme, payload, vec![], Some(signers.clone())).await.expect("node-1 signs with resealed blobs");
    }
}
