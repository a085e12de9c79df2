//! The registry's guarantees, checked by the same code on both backends:
//! NATS KV on a real nats-server, and Consul (the in-repo stand-in, or a
//! real agent when `CONSUL_HTTP_ADDR` is set; see the README).

use bytes::Bytes;
use conclave_host::registry::{Bucket, Change, Registry, RegistryError};
use conclave_host::view::RegistryView;
use conclave_proto::link::Mode;
use conclave_proto::registry::ReadyRecord;
use conclave_proto::result::{Completed, KeygenResult};
use conclave_proto::statement::{Endorsed, Statement};
use conclave_proto::subjects::wallet_key;
use conclave_proto::{NodeId, RequestId, Scheme, WalletId, PROTOCOL_VERSION};
use conclave_tests::consul::ConsulAgent;
use conclave_tests::{eventually, NatsServer};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a heartbeat lasts here. Consul's shortest session TTL is 10 s,
/// which the Consul backend uses for anything shorter.
const READY_TTL: Duration = Duration::from_secs(2);

/// A registry and what keeps its backend running.
struct Backend {
    registry: Arc<Registry>,
    /// A second host's handle on the same registry.
    peer: Arc<Registry>,
    /// How long an unrenewed heartbeat may stay visible on this backend
    /// (a real Consul invalidates a session up to twice its TTL late).
    expiry_bound: Duration,
    _dir: tempfile::TempDir,
    _nats: Option<NatsServer>,
    _consul: Option<ConsulAgent>,
}

async fn nats() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path()).await;
    let open = || async {
        let client = async_nats::connect(server.url()).await.unwrap();
        Arc::new(Registry::nats(&async_nats::jetstream::new(client), READY_TTL, 1).await.unwrap())
    };
    let (registry, peer) = (open().await, open().await);
    Backend { registry, peer, expiry_bound: READY_TTL * 3, _dir: dir, _nats: Some(server), _consul: None }
}

async fn consul() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let agent = ConsulAgent::start(dir.path()).await;
    let open = || Arc::new(Registry::consul(&agent.config(), READY_TTL).unwrap());
    let (registry, peer) = (open(), open());
    Backend { registry, peer, expiry_bound: Duration::from_secs(10) * 3, _dir: dir, _nats: None, _consul: Some(agent) }
}

/// Runs a check on both backends.
macro_rules! on_both_backends {
    ($check:ident) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$check(super::nats().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consul() {
                super::$check(super::consul().await).await
            }
        }
    };
}

on_both_backends!(a_fencing_record_is_taken_by_one_writer_only);
on_both_backends!(a_heartbeat_that_is_not_renewed_expires);
on_both_backends!(watchers_see_the_contents_then_every_change);
on_both_backends!(a_request_watch_wakes_on_its_records_changes);
on_both_backends!(a_watch_begun_after_a_record_was_written_finds_it);
on_both_backends!(a_restarted_node_heartbeats_at_once);
on_both_backends!(a_listing_holds_every_key_of_its_bucket_and_nothing_else);
on_both_backends!(a_hosts_view_holds_each_wallets_latest_record);

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

async fn a_fencing_record_is_taken_by_one_writer_only(b: Backend) {
    let key = "request-fence";
    // Eight coordinators race to create the record.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let registry = b.registry.clone();
            tokio::spawn(async move { registry.create(Bucket::Sessions, key, bytes(&format!("plan of coordinator {i}"))).await })
        })
        .collect();
    let mut won = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap() {
            Ok(revision) => won.push((i, revision)),
            Err(RegistryError::Conflict { .. }) => {}
            Err(e) => panic!("coordinator {i}: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one coordinator creates the record, not {won:?}");
    let first = b.registry.get(Bucket::Sessions, key).await.unwrap().expect("the record exists");
    assert_eq!(first.value, bytes(&format!("plan of coordinator {}", won[0].0)));
    // A revision the create gives (NATS) is the one a read gives: the
    // winner moves the record on without reading it.
    if let Some(revision) = won[0].1 {
        assert_eq!(revision, first.revision);
    }

    // Moving it on needs the revision read; a writer with an older one loses.
    b.registry.update(Bucket::Sessions, key, bytes("attempt 2"), first.revision).await.unwrap();
    let stale = b.registry.update(Bucket::Sessions, key, bytes("attempt 2 again"), first.revision).await;
    assert!(matches!(stale, Err(RegistryError::Conflict { .. })), "a stale revision is refused: {stale:?}");
    let second = b.registry.get(Bucket::Sessions, key).await.unwrap().unwrap();
    assert_eq!(second.value, bytes("attempt 2"));
    assert_ne!(second.revision, first.revision);
    // Creating it again is refused too.
    assert!(matches!(b.registry.create(Bucket::Sessions, key, bytes("again")).await, Err(RegistryError::Conflict { .. })));
    assert!(b.registry.get(Bucket::Sessions, "no-such-request").await.unwrap().is_none());
}

fn beat(node: &NodeId) -> Bytes {
    let record = ReadyRecord {
        v: PROTOCOL_VERSION,
        node_id: node.clone(),
        mode: Mode::Hsm,
        at_ms: 1,
        primes_ready: true,
        attested_peers: Default::default(),
        presign_pools: Default::default(),
    };
    serde_json::to_vec(&record).unwrap().into()
}

async fn a_heartbeat_that_is_not_renewed_expires(b: Backend) {
    let (me, peer) = (NodeId::new("node-1").unwrap(), NodeId::new("node-2").unwrap());
    let view = RegistryView::new(me.clone(), READY_TTL);
    let watching = tokio::spawn({
        let (view, registry) = (view.clone(), b.registry.clone());
        async move { view.run(&registry).await }
    });
    // Heartbeats at twice the rate they expire keep node-2 ready for longer
    // than one TTL.
    let mut tick = tokio::time::interval(READY_TTL / 2);
    for _ in 0..5 {
        tick.tick().await;
        b.registry.heartbeat(&me, beat(&me)).await.unwrap();
        b.peer.heartbeat(&peer, beat(&peer)).await.unwrap();
    }
    let ready = eventually("both nodes ready in the view", READY_TTL, || async { view.ready().ok().filter(|r| r.len() == 2) }).await;
    assert!(ready.contains(&peer));
    assert!(b.registry.get(Bucket::Ready, peer.as_str()).await.unwrap().is_some());

    // node-2 stops; node-1 goes on.
    let renew = tokio::spawn({
        let (registry, me) = (b.registry.clone(), me.clone());
        async move {
            let mut tick = tokio::time::interval(READY_TTL / 2);
            loop {
                tick.tick().await;
                registry.heartbeat(&me, beat(&me)).await.unwrap();
            }
        }
    });
    eventually("node-2 to drop out of the view", READY_TTL * 3, || async { view.ready().ok().filter(|r| !r.contains(&peer)).map(|_| ()) }).await;
    eventually("node-2's heartbeat to disappear from the registry", b.expiry_bound, || async {
        b.registry.get(Bucket::Ready, peer.as_str()).await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(b.registry.get(Bucket::Ready, me.as_str()).await.unwrap().is_some(), "a renewed heartbeat stays");
    renew.abort();
    watching.abort();
}

/// A wallet's record as hosts put it into the wallets bucket (unsigned
/// here: the view routes by it, and clients check the signatures).
fn wallet_record(version: u32) -> (KeygenResult, Bytes) {
    let record = KeygenResult {
        wallet: WalletId::new("treasury").unwrap(),
        scheme: Scheme::Eddsa,
        public_key: vec![7; 32],
        xpub: None,
        version,
        threshold: 2,
        committee: vec![NodeId::new("node-1").unwrap(), NodeId::new("node-2").unwrap()],
    };
    let statement = Statement { v: PROTOCOL_VERSION, request: [version as u8; 32], result: Completed::Keygen(record.clone()) };
    let endorsed = Endorsed { statement: serde_json::to_string(&statement).unwrap(), endorsements: Vec::new() };
    (record, serde_json::to_vec(&endorsed).unwrap().into())
}

async fn a_hosts_view_holds_each_wallets_latest_record(b: Backend) {
    let key = wallet_key(&WalletId::new("treasury").unwrap(), Scheme::Eddsa);
    let (first, value) = wallet_record(1);
    b.registry.put(Bucket::Wallets, &key, value).await.unwrap();
    b.registry.put(Bucket::Wallets, "unreadable.eddsa", bytes("not a record")).await.unwrap();
    let view = RegistryView::new(NodeId::new("node-1").unwrap(), READY_TTL);
    let watching = tokio::spawn({
        let (view, registry) = (view.clone(), b.registry.clone());
        async move { view.run(&registry).await }
    });
    let wait = Duration::from_secs(30);
    assert_eq!(eventually("the record in the view", wait, || async { view.wallet(&key) }).await, first, "what was there before the view started");
    let (reshared, value) = wallet_record(2);
    b.peer.put(Bucket::Wallets, &key, value).await.unwrap();
    eventually("the new version in the view", wait, || async { view.wallet(&key).filter(|w| *w == reshared).map(drop) }).await;
    assert!(view.wallet("unreadable.eddsa").is_none(), "an unreadable record is not taken");
    watching.abort();
}

async fn next(watch: &mut futures::stream::BoxStream<'static, Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(30), watch.next()).await.expect("a change in time").expect("the watch goes on")
}

async fn watchers_see_the_contents_then_every_change(b: Backend) {
    b.registry.put(Bucket::Members, "node-1", bytes("one")).await.unwrap();
    let mut watch = b.registry.watch(Bucket::Members).await.unwrap();
    assert_eq!(next(&mut watch).await, Change::Put { key: "node-1".into(), value: bytes("one") });
    b.registry.put(Bucket::Members, "node-2", bytes("two")).await.unwrap();
    assert_eq!(next(&mut watch).await, Change::Put { key: "node-2".into(), value: bytes("two") });
    b.registry.put(Bucket::Members, "node-1", bytes("one, re-registered")).await.unwrap();
    assert_eq!(next(&mut watch).await, Change::Put { key: "node-1".into(), value: bytes("one, re-registered") });
    // Other buckets are not this watch's business.
    b.registry.put(Bucket::Wallets, "w.ecdsa", bytes("wallet")).await.unwrap();
    b.registry.put(Bucket::Members, "node-3", bytes("three")).await.unwrap();
    assert_eq!(next(&mut watch).await, Change::Put { key: "node-3".into(), value: bytes("three") });
}

async fn a_request_watch_wakes_on_its_records_changes(b: Backend) {
    let id = RequestId::new("req-watched").unwrap();
    let watch = b.registry.watch_request(&id).await;
    let changed = || async { tokio::time::timeout(Duration::from_secs(30), watch.changed()).await.is_ok() };
    // Each wake below has exactly one cause: a follower holds at most one
    // pending wake, and it is taken before the next change is made.
    b.registry.create(Bucket::Sessions, id.as_str(), bytes("attempt 1")).await.unwrap();
    assert!(changed().await, "the follower wakes when the record is created");
    let entry = b.registry.get(Bucket::Sessions, id.as_str()).await.unwrap().unwrap();
    // What the watch delivered, where it can tell (NATS): the record as
    // created, and nothing newer than that.
    let seen = |revision| watch.newer_than(revision).map(|newer| newer.map(|e| (e.revision, e.value)));
    if let Ok(delivered) = seen(0) {
        assert_eq!(delivered, Some((entry.revision, bytes("attempt 1"))));
        assert_eq!(seen(entry.revision).unwrap(), None);
    }
    b.registry.update(Bucket::Sessions, id.as_str(), bytes("attempt 2"), entry.revision).await.unwrap();
    assert!(changed().await, "the follower wakes on the new attempt");
    let moved = b.registry.get(Bucket::Sessions, id.as_str()).await.unwrap().unwrap();
    if let Ok(delivered) = seen(entry.revision) {
        assert_eq!(delivered, Some((moved.revision, bytes("attempt 2"))));
    }
    // A keygen confirmation is one of the request's records too; it wakes
    // the follower and is not taken for the request's record.
    b.registry.put(Bucket::Sessions, "req-watched.stored.node-1", bytes("stored")).await.unwrap();
    assert!(changed().await, "the follower wakes on a confirmation");
    if let Ok(delivered) = seen(0) {
        assert_eq!(delivered, Some((moved.revision, bytes("attempt 2"))));
    }
}

/// A host that takes a request after another host wrote its record (the
/// pool's keeper plans pooled requests; the others wait for its record).
async fn a_watch_begun_after_a_record_was_written_finds_it(b: Backend) {
    let early = RequestId::new("req-early").unwrap();
    let fence = RequestId::new("req-fence").unwrap();
    b.registry.create(Bucket::Sessions, early.as_str(), bytes("planned by the keeper")).await.unwrap();
    // Changes arrive in the order they were made: once a watch of a later
    // record has woken, the earlier record went by unwatched.
    let fenced = b.registry.watch_request(&fence).await;
    b.registry.create(Bucket::Sessions, fence.as_str(), bytes("later")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), fenced.changed()).await.expect("the later record is delivered");

    let watch = b.registry.watch_request(&early).await;
    tokio::time::timeout(Duration::from_secs(30), watch.changed()).await.expect("the record is there at once");
    let entry = b.registry.get(Bucket::Sessions, early.as_str()).await.unwrap().unwrap();
    // Where the watch can tell (NATS), it holds the record as written.
    if let Ok(delivered) = watch.newer_than(0) {
        assert_eq!(delivered.map(|e| (e.revision, e.value)), Some((entry.revision, bytes("planned by the keeper"))));
    }
}

/// Our side of an ACL refusal: a typed error naming the agent's answer,
/// and nothing written. (Against the stand-in only: a real agent may run
/// without ACLs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let standin = conclave_tests::consul_standin::ConsulStandIn::start(Some("the-right-token".into())).await;
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let section = format!("address = \"{}\"\ntoken_file = \"{}\"\n", standin.address(), wrong.display());
    let registry = Registry::consul(&toml::from_str(&section).unwrap(), READY_TTL).unwrap();
    let refused = registry.put(Bucket::Members, "node-1", bytes("one")).await.unwrap_err();
    assert!(matches!(&refused, RegistryError::Refused { status: 403, .. }), "an ACL refusal is final: {refused:?}");
    assert!(refused.to_string().contains("403"), "the agent's answer is named: {refused}");

    let right = dir.path().join("right.token");
    std::fs::write(&right, "the-right-token\n").unwrap();
    let section = format!("address = \"{}\"\ntoken_file = \"{}\"\n", standin.address(), right.display());
    let registry = Registry::consul(&toml::from_str(&section).unwrap(), READY_TTL).unwrap();
    assert!(registry.get(Bucket::Members, "node-1").await.unwrap().is_none(), "the refused write changed nothing");
}

/// TLS to the agent: the configured CA only, and a client certificate
/// when the agent verifies incoming connections. (The stand-in again: what
/// is tested is our side of the handshake.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_agent_trusts_only_the_configured_ca() {
    use conclave_tests::consul_standin::ConsulStandIn;
    use conclave_tests::pki::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(&dir.path().join("ca"), "agent CA");
    ca.issue("host", false);
    let other = TestCa::create(&dir.path().join("other"), "another CA");
    let registry = |address: String, ca_file: &std::path::Path, client: Option<&TestCa>| {
        let mut section = format!("address = \"{address}\"\nca_file = \"{}\"\n", ca_file.display());
        if let Some(client) = client {
            section += &format!("cert_file = \"{}\"\nkey_file = \"{}\"\n", client.file("host.pem").display(), client.file("host.key").display());
        }
        Registry::consul(&toml::from_str(&section).unwrap(), READY_TTL).unwrap()
    };

    let agent = ConsulStandIn::start_tls(None, &ca, false).await;
    assert!(agent.address().starts_with("https://"));
    registry(agent.address(), &ca.file("ca.pem"), None).put(Bucket::Members, "node-1", bytes("one")).await.expect("TLS with the agent's CA");
    let refused = registry(agent.address(), &other.file("ca.pem"), None).get(Bucket::Members, "node-1").await.unwrap_err();
    assert!(refused.to_string().contains("TLS"), "another CA's agent is refused at the handshake: {refused}");

    let strict = ConsulStandIn::start_tls(None, &ca, true).await;
    registry(strict.address(), &ca.file("ca.pem"), Some(&ca)).put(Bucket::Members, "node-1", bytes("one")).await.expect("with a client certificate");
    assert!(registry(strict.address(), &ca.file("ca.pem"), None).get(Bucket::Members, "node-1").await.is_err(), "without one the agent refuses");
}

/// A node killed and restarted must not wait for its old heartbeat to
/// expire (on Consul: its previous process's session, 10 s or more).
async fn a_restarted_node_heartbeats_at_once(b: Backend) {
    let node = NodeId::new("node-1").unwrap();
    let before = beat(&node);
    b.registry.heartbeat(&node, before).await.unwrap();
    // The process dies without a goodbye; the next one has a new handle.
    let restarted = b.peer.clone();
    let mut after = ReadyRecord {
        v: PROTOCOL_VERSION,
        node_id: node.clone(),
        mode: Mode::Hsm,
        at_ms: 2,
        primes_ready: false,
        attested_peers: Default::default(),
        presign_pools: Default::default(),
    };
    restarted.heartbeat(&node, serde_json::to_vec(&after).unwrap().into()).await.expect("the restarted node heartbeats");
    let stored = restarted.get(Bucket::Ready, node.as_str()).await.unwrap().expect("its heartbeat is there");
    assert_eq!(serde_json::from_slice::<ReadyRecord>(&stored.value).unwrap(), after);
    // And it keeps renewing.
    after.at_ms = 3;
    restarted.heartbeat(&node, serde_json::to_vec(&after).unwrap().into()).await.unwrap();
}

async fn a_listing_holds_every_key_of_its_bucket_and_nothing_else(b: Backend) {
    assert!(b.registry.list(Bucket::Wallets).await.unwrap().is_empty(), "an empty bucket lists nothing");
    b.registry.put(Bucket::Wallets, "w2.eddsa", bytes("two")).await.unwrap();
    b.registry.put(Bucket::Wallets, "w1.ecdsa", bytes("one")).await.unwrap();
    b.registry.put(Bucket::Wallets, "w1.ecdsa", bytes("one, moved")).await.unwrap();
    b.registry.put(Bucket::Members, "node-1", bytes("a member")).await.unwrap();
    let listed = b.registry.list(Bucket::Wallets).await.unwrap();
    assert_eq!(listed, vec![("w1.ecdsa".to_string(), bytes("one, moved")), ("w2.eddsa".to_string(), bytes("two"))]);
}
