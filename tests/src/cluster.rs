//! A cluster of real node processes for one test, built from a template
//! (see the crate docs).

use crate::consul::ConsulAgent;
use crate::faultproxy::FaultProxy;
use crate::natsaccess::NatsAccess;
use crate::process::Proc;
use crate::{bin, eventually, softhsm, Mode, NatsServer};
use conclave_enclave::seal::KeySealer;
use conclave_enclave::share::ShareRecord;
use conclave_proto::link::{BlobSlot, StoredBlob};
use conclave_proto::store::blob_file_name;
use conclave_proto::{NodeId, Scheme, WalletId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Nodes starting while other tests generate primes on the same 2 cores can take minutes.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Generating primes and aux info for a template can take minutes on 2 cores.
const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(900);

/// How the cluster reaches NATS.
struct Topology {
    nats_servers: usize,
    proxied: bool,
    /// The registry on Consul rather than NATS KV.
    consul: bool,
    /// NATS with TLS and a user per node (`deploy/nats/users.conf`).
    secured: bool,
    /// How long a heartbeat counts (`ready_ttl_ms`).
    ready_ttl_ms: u64,
    /// Unused presignatures per pool (`presign_pool` of signers and hosts);
    /// 0 in most tests, so that no background presigning competes with
    /// what a test measures.
    presign_pool: u32,
    /// Derivation paths with pools of their own, as a `[presign_paths]`
    /// table for signers and hosts (empty: none).
    presign_paths: &'static str,
    /// Heavy sessions each signer runs at once (`heavy_sessions`; none:
    /// the signer's default).
    heavy_sessions: Option<usize>,
    /// The hosts' `round_timeout_ms` (none: the default, 10 s).
    round_timeout_ms: Option<u64>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            nats_servers: 1,
            proxied: false,
            consul: false,
            secured: false,
            ready_ttl_ms: READY_TTL_MS,
            presign_pool: 0,
            presign_paths: "",
            heavy_sessions: None,
            round_timeout_ms: None,
        }
    }
}

/// The tests' readiness TTL: eight heartbeats.
const READY_TTL_MS: u64 = 4000;

struct Node {
    id: NodeId,
    http_port: u16,
    enclave: Option<Proc>,
    host: Option<Proc>,
}

/// A running cluster: nats-server (one, or a cluster of three) and `n`
/// nodes, all on 127.0.0.1.
pub struct Cluster {
    dir: tempfile::TempDir,
    nats: Vec<NatsServer>,
    /// Per node, when the nodes reach NATS through fault proxies.
    proxies: Vec<FaultProxy>,
    _consul: Option<ConsulAgent>,
    nodes: Vec<Node>,
    mode: Mode,
}

impl Cluster {
    /// Starts an `n`-node cluster in `hsm` mode (a SoftHSM2 token per node)
    /// whose committee already has primes and aux info, from the template.
    pub async fn start(n: usize) -> Cluster {
        Self::start_in(Mode::Hsm, n).await
    }

    /// Starts an `n`-node cluster in `mode` (`hsm` or `dev`).
    pub async fn start_in(mode: Mode, n: usize) -> Cluster {
        Self::start_with(mode, n, Topology::default()).await
    }

    /// Starts an `n`-node hsm cluster on a JetStream cluster of three
    /// nats-servers, with every stream and bucket replicated three times.
    pub async fn start_on_nats_cluster(n: usize) -> Cluster {
        Self::start_with(Mode::Hsm, n, Topology { nats_servers: 3, ..Topology::default() }).await
    }

    /// Starts an `n`-node hsm cluster whose registry is on Consul (the
    /// stand-in, or the agent at `CONSUL_HTTP_ADDR`).
    pub async fn start_on_consul(n: usize) -> Cluster {
        Self::start_with(Mode::Hsm, n, Topology { consul: true, ..Topology::default() }).await
    }

    /// Starts an `n`-node hsm cluster on a nats-server that requires TLS
    /// and gives each node and the client its own user and permissions.
    pub async fn start_secured(n: usize) -> Cluster {
        Self::start_with(Mode::Hsm, n, Topology { secured: true, ..Topology::default() }).await
    }

    /// Starts an `n`-node hsm cluster whose hosts each reach NATS through
    /// their own [`FaultProxy`] (see [`Cluster::link`]).
    pub async fn start_behind_proxies(n: usize) -> Cluster {
        Self::start_with(Mode::Hsm, n, Topology { proxied: true, ..Topology::default() }).await
    }

    /// Starts an `n`-node dev cluster whose heartbeats count for ten
    /// minutes: a node that counts as ready again, or no longer, does so
    /// by its host's announcement, not by the TTL.
    /// The registry is on Consul if `consul`, else on NATS KV.
    pub async fn start_with_lasting_heartbeats(n: usize, consul: bool) -> Cluster {
        Self::start_with(Mode::Dev, n, Topology { consul, ready_ttl_ms: 600_000, ..Topology::default() }).await
    }

    /// Starts an `n`-node dev cluster whose signers keep `pool`
    /// presignatures per pool (the product's default is 4; other test
    /// clusters keep none).
    pub async fn start_with_pools(n: usize, pool: u32) -> Cluster {
        Self::start_with_pools_in(Mode::Dev, n, pool).await
    }

    /// [`Cluster::start_with_pools`] in `mode`.
    pub async fn start_with_pools_in(mode: Mode, n: usize, pool: u32) -> Cluster {
        Self::start_with(mode, n, Topology { presign_pool: pool, ..Topology::default() }).await
    }

    /// As [`Cluster::start_with_pools`], with pools also for the paths that
    /// `paths` (a `[presign_paths]` TOML table) declares.
    pub async fn start_with_path_pools(n: usize, pool: u32, paths: &'static str) -> Cluster {
        Self::start_with(Mode::Dev, n, Topology { presign_pool: pool, presign_paths: paths, ..Topology::default() }).await
    }

    /// Starts an `n`-node cluster in `mode` whose signers run at most
    /// `limit` heavy sessions at once.
    pub async fn start_with_heavy_sessions(mode: Mode, n: usize, limit: usize) -> Cluster {
        Self::start_with(mode, n, Topology { heavy_sessions: Some(limit), ..Topology::default() }).await
    }

    /// [`Cluster::start_with_heavy_sessions`] with a round timeout of 30 s:
    /// a peer gives up on a party still queued for its turn after one
    /// round timeout (then the request fails over, docs/flows.md), and a
    /// test machine running other tests' ECDSA sessions beside these can
    /// hold a short queue longer than the default 10 s.
    pub async fn start_with_long_queues(mode: Mode, n: usize, limit: usize) -> Cluster {
        Self::start_with(mode, n, Topology { heavy_sessions: Some(limit), round_timeout_ms: Some(30_000), ..Topology::default() }).await
    }

    /// Starts an `n`-node dev cluster from a state saved by
    /// [`Cluster::save_state`] (possibly by an earlier release): its
    /// roster, initiator key, dev CA and every node's signer state and
    /// store, on a fresh NATS.
    pub async fn start_from_saved(saved: &Path, n: usize) -> Cluster {
        let dir = tempfile::Builder::new().prefix("conclave-test-").tempdir().expect("tempdir");
        copy_dir(saved, dir.path());
        Self::boot(dir, Mode::Dev, n, Topology::default()).await
    }

    /// Stops every node and saves what [`Cluster::start_from_saved`] reads
    /// to `to`: the cluster's keys and each node's `enclave/` and `store/`.
    pub fn save_state(&mut self, to: &Path) {
        assert_eq!(self.mode, Mode::Dev, "a saved state carries no HSM token");
        for i in 1..=self.nodes.len() {
            self.kill_node(i);
        }
        std::fs::create_dir_all(to).unwrap();
        for file in ["roster.json", "initiator.key", "dev-attestation-ca", "dev-attestation-root.pem"] {
            std::fs::copy(self.dir().join(file), to.join(file)).unwrap();
        }
        for i in 1..=self.nodes.len() {
            let (src, dst) = (self.node_dir(i), to.join(format!("node-{i}")));
            copy_dir(&src.join("enclave"), &dst.join("enclave"));
            copy_dir(&src.join("store"), &dst.join("store"));
        }
    }

    async fn start_with(mode: Mode, n: usize, topology: Topology) -> Cluster {
        let template = template(mode, n).await;
        let dir = tempfile::Builder::new().prefix("conclave-test-").tempdir().expect("tempdir");
        copy_dir(&template, dir.path());
        Self::boot(dir, mode, n, topology).await
    }

    async fn boot(dir: tempfile::TempDir, mode: Mode, n: usize, topology: Topology) -> Cluster {
        let access = topology.secured.then(|| NatsAccess::create(&dir.path().join("nats-access"), n));
        let nats = match (topology.nats_servers, &access) {
            (1, Some(access)) => {
                vec![NatsServer::start_secured(&dir.path().join("nats"), access).await]
            }
            (1, None) => vec![NatsServer::start(&dir.path().join("nats")).await],
            (size, _) => NatsServer::start_cluster(&dir.path().join("nats"), size).await,
        };
        let mut proxies = Vec::new();
        if topology.proxied {
            for _ in 0..n {
                proxies.push(FaultProxy::start(nats[0].port()).await);
            }
        }
        let consul = match topology.consul {
            true => Some(ConsulAgent::start(dir.path()).await),
            false => None,
        };
        let registry = consul.as_ref().map(ConsulAgent::host_toml).unwrap_or_default();
        let access_lines = |user: &str| access.as_ref().map(|a| a.config_lines(user)).unwrap_or_default();
        let mut cluster = Cluster { dir, nats, proxies, _consul: consul, nodes: Vec::new(), mode };
        let initiator = cluster.initiator_public_hex();
        let admins = governance_keys(cluster.dir.path());
        for i in 1..=n {
            let id = NodeId::new(format!("node-{i}")).unwrap();
            let http_port = crate::free_port();
            let urls = match cluster.proxies.get(i - 1) {
                Some(proxy) => vec![proxy.url()],
                None => cluster.nats_urls(),
            };
            let round_timeout = topology.round_timeout_ms.map(|ms| format!("round_timeout_ms = {ms}\n")).unwrap_or_default();
            let extra = format!(
                "ready_ttl_ms = {}\npresign_pool = {}\n{round_timeout}{}{registry}\n{}",
                topology.ready_ttl_ms,
                topology.presign_pool,
                access_lines(id.as_str()),
                topology.presign_paths
            );
            let node = NodeConfig {
                mode,
                id: &id,
                http_port,
                nats_urls: &urls,
                initiator: &initiator,
                presign_pool: topology.presign_pool,
                presign_paths: topology.presign_paths,
                heavy_sessions: topology.heavy_sessions,
                admins: &admins,
            };
            write_node_configs(cluster.dir.path(), &node, &extra);
            cluster.nodes.push(Node { id, http_port, enclave: None, host: None });
        }
        write_client_config(cluster.dir.path(), &cluster.nats_urls(), &access_lines("client"));
        for i in 1..=n {
            cluster.start_node(i);
        }
        cluster.wait_ready(n).await;
        cluster
    }

    /// The cluster's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client configuration file the tests (and `conclave`) use.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    /// Runs the `conclave` CLI with this cluster's client configuration
    /// and `--json`: its exit code, its stdout as JSON, and its stderr.
    pub fn cli(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = std::process::Command::new(crate::bin("conclave"))
            .arg("--config")
            .arg(self.client_config())
            .args(args)
            .arg("--json")
            .output()
            .expect("run conclave");
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON on stdout: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().expect("exit code"), json, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A connected SDK client with the cluster's initiator key.
    pub async fn client(&self) -> conclave_client::Client {
        let config = conclave_client::ClientConfig::load(&self.client_config()).expect("client config");
        conclave_client::Client::connect(config).await.expect("client connects")
    }

    /// The first nats-server's URL, for raw clients.
    pub fn nats_url(&self) -> String {
        self.nats[0].url()
    }

    /// Every nats-server's URL.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats.iter().map(NatsServer::url).collect()
    }

    /// Node `i`'s link to NATS (clusters started behind proxies).
    pub fn link(&self, i: usize) -> &FaultProxy {
        &self.proxies[i - 1]
    }

    /// nats-server `i` (1-based), to kill it in fault tests.
    pub fn nats(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nats[i - 1]
    }

    /// Node ids in order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Directory of node `i` (1-based).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    /// Starts node `i`'s enclave and host processes. After a kill, call
    /// `wait_unready` first if a `wait_ready` follows: until the others
    /// drop the killed node, its last heartbeat still counts.
    pub fn start_node(&mut self, i: usize) {
        self.start_signer(i);
        self.start_host(i);
    }

    /// Starts node `i`'s enclave process only.
    pub fn start_signer(&mut self, i: usize) {
        self.start_signer_with(i, &[]);
    }

    /// Starts node `i`'s signer with extra environment (fault injection).
    pub fn start_signer_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let d = self.node_dir(i);
        let node = &mut self.nodes[i - 1];
        let softhsm_conf = softhsm::conf(&d);
        // Test signers take pregenerated Paillier primes (crate::primes).
        let (primes_var, primes) = crate::primes::env(i);
        let mut all = vec![(softhsm::CONF_ENV, softhsm_conf.to_str().unwrap()), (primes_var, primes.as_str())];
        all.extend_from_slice(env);
        node.enclave = Some(Proc::spawn(
            &format!("enclave {}", node.id),
            &bin("conclave-enclave"),
            &["run", "--config", d.join("enclave.toml").to_str().unwrap()],
            &d.join("enclave.log"),
            &all,
        ));
    }

    /// Replaces node `i`'s signer with one started with extra environment
    /// (fault injection), and returns once its host is linked to the new
    /// one: the host is seen without a link before the new signer starts,
    /// so a link seen afterwards is the new signer's. Call `wait_ready`
    /// before a request that needs the node.
    pub async fn restart_signer_with(&mut self, i: usize, env: &[(&str, &str)]) {
        self.kill_signer(i);
        self.wait_link(i, false).await;
        self.wait_unready(i).await;
        self.start_signer_with(i, env);
        self.wait_link(i, true).await;
    }

    /// The nodes whose host process runs.
    fn running_hosts(&self) -> Vec<usize> {
        (1..=self.nodes.len()).filter(|&i| self.nodes[i - 1].host.is_some()).collect()
    }

    /// Waits until no running host counts node `i` as ready (its host
    /// withdraws readiness when its link drops), so that a later
    /// `wait_ready` sees the node's next heartbeat, not its last one.
    pub async fn wait_unready(&self, i: usize) {
        let node = self.nodes[i - 1].id.clone();
        let running = self.running_hosts();
        eventually(&format!("every host to stop counting {node} as ready"), READY_TIMEOUT, || {
            let (running, node) = (&running, &node);
            async move {
                for &j in running {
                    let (_, body) = self.try_http_get(j, "/readyz").await?;
                    let ready = serde_json::from_str::<serde_json::Value>(&body).ok()?["ready_peers"].as_array()?.clone();
                    if ready.iter().any(|n| n.as_str() == Some(node.as_str())) {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }

    async fn wait_link(&self, i: usize, up: bool) {
        eventually(&format!("node-{i}'s host to see its link {}", if up { "up" } else { "down" }), READY_TIMEOUT, || async move {
            let (_, body) = self.try_http_get(i, "/readyz").await?;
            (serde_json::from_str::<serde_json::Value>(&body).ok()?["link"].as_bool()? == up).then_some(())
        })
        .await;
    }

    /// Kills node `i`'s signer with SIGKILL (its host stays).
    pub fn kill_signer(&mut self, i: usize) {
        self.nodes[i - 1].enclave.take();
    }

    /// Starts node `i`'s host process only.
    pub fn start_host(&mut self, i: usize) {
        let d = self.node_dir(i);
        let node = &mut self.nodes[i - 1];
        node.host = Some(Proc::spawn(
            &format!("host {}", node.id),
            &bin("conclave-host"),
            &["run", "--config", d.join("host.toml").to_str().unwrap()],
            &d.join("host.log"),
            &[],
        ));
    }

    /// CPU time node `i`'s signer and host have used so far.
    pub fn cpu_time(&self, i: usize) -> (Duration, Duration) {
        let node = &self.nodes[i - 1];
        let of = |p: &Option<Proc>| p.as_ref().and_then(Proc::cpu_time).unwrap_or_default();
        (of(&node.enclave), of(&node.host))
    }

    /// Kills node `i`'s host process only (SIGKILL).
    pub fn kill_host(&mut self, i: usize) {
        self.nodes[i - 1].host.take();
    }

    /// Kills node `i`'s processes with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        let node = &mut self.nodes[i - 1];
        node.host.take();
        node.enclave.take();
    }

    /// Kills and restarts every node process, then waits until all are ready.
    pub async fn restart_all(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill_node(i);
        }
        for i in 1..=self.nodes.len() {
            self.start_node(i);
        }
        self.wait_ready(self.nodes.len()).await;
    }

    /// Waits until every running node's own `/readyz` says ready (its link
    /// and NATS are up: a heartbeat left in the registry by a killed process
    /// does not count) and `count` nodes heartbeat in the registry.
    pub async fn wait_ready(&self, count: usize) {
        let running = self.running_hosts();
        // Every running host must see them: any of them may plan the next
        // request.
        eventually(&format!("{count} nodes ready in every host's view"), READY_TIMEOUT, || {
            let running = &running;
            async move {
                for &i in running {
                    let (status, body) = self.try_http_get(i, "/readyz").await?;
                    let seen = serde_json::from_str::<serde_json::Value>(&body).ok()?["peers_ready"].as_u64()?;
                    if status != 200 || seen < count as u64 {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }

    /// GETs `path` from node `i`'s HTTP endpoint; `None` if it does not answer.
    pub async fn try_http_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.nodes[i - 1].http_port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok())?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    }

    /// The value of a Prometheus sample on node `i`; panics if the node
    /// does not export it.
    pub async fn metric(&self, i: usize, sample: &str) -> f64 {
        let (_, body) = self.try_http_get(i, "/metrics").await.expect("node answers /metrics");
        // A sample the node does not export is a test's mistake, not a zero.
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("node-{i} exports no sample {sample}"))
    }

    /// Opens node `i`'s sealed share of `wallet` (version 1) with the node's
    /// dev seal key, as only its enclave could: for tests that look for
    /// secrets where they must not be, and for the in-process baseline.
    /// Dev mode only: in hsm mode the key never leaves the token.
    pub fn open_share(&self, i: usize, wallet: &WalletId, scheme: Scheme) -> ShareRecord {
        self.open_share_version(i, wallet, scheme, 1)
    }

    /// Node `i`'s share record of `wallet` at `version`, opened with its dev
    /// seal key.
    pub fn open_share_version(&self, i: usize, wallet: &WalletId, scheme: Scheme, version: u32) -> ShareRecord {
        let slot = BlobSlot::Share { wallet: wallet.clone(), scheme };
        ShareRecord::open(&self.dev_sealer(i), &self.nodes[i - 1].id, &slot, &self.stored_blob(i, &slot, version))
            .expect("the node's own seal key opens its share")
    }

    /// Node `i`'s blob of `slot` at `version`, opened with its dev seal key.
    pub fn open_blob(&self, i: usize, slot: &BlobSlot, version: u32) -> zeroize::Zeroizing<Vec<u8>> {
        use conclave_enclave::seal::{SealContext, Sealer};
        let blob = self.stored_blob(i, slot, version);
        self.dev_sealer(i).open(&SealContext::blob(&self.nodes[i - 1].id, slot, version), &blob.sealed).expect("the node's own seal key opens its blob")
    }

    /// Node `i`'s newest version of `slot` in its store (dev mode only),
    /// opened.
    pub fn open_latest_blob(&self, i: usize, slot: &BlobSlot) -> zeroize::Zeroizing<Vec<u8>> {
        let dir = self.node_dir(i).join("store/blobs").join(slot.path());
        let versions = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let newest = versions
            .filter_map(|f| conclave_proto::store::parse_blob_file_name(f.ok()?.file_name().to_str()?))
            .max()
            .unwrap_or_else(|| panic!("no version in {}", dir.display()));
        self.open_blob(i, slot, newest)
    }

    fn stored_blob(&self, i: usize, slot: &BlobSlot, version: u32) -> StoredBlob {
        let path = self.node_dir(i).join("store/blobs").join(slot.path()).join(blob_file_name(version));
        StoredBlob { version, sealed: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    /// Node `i`'s dev seal key (dev mode only: in hsm mode it never leaves the token).
    fn dev_sealer(&self, i: usize) -> KeySealer {
        assert_eq!(self.mode, Mode::Dev, "only a dev-mode cluster's blobs can be opened outside its nodes");
        let seal_key_hex = std::fs::read_to_string(self.node_dir(i).join("enclave/seal.key")).expect("dev seal key");
        let mut seal_key = [0u8; 32];
        hex::decode_to_slice(seal_key_hex.trim(), &mut seal_key).expect("dev seal key is 32 bytes of hex");
        KeySealer::from_key(&seal_key)
    }

    /// The cluster's initiator key.
    pub fn initiator(&self) -> ed25519_dalek::SigningKey {
        read_initiator(self.dir.path())
    }

    /// Admin key `i` (1 to 3; any 2 set a policy).
    pub fn admin(&self, i: usize) -> ed25519_dalek::SigningKey {
        read_key(self.dir.path(), &format!("admin-{i}.key"))
    }

    /// The file of admin key `i`.
    pub fn admin_key_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("admin-{i}.key"))
    }

    /// Approver key `i` (1 to 3).
    pub fn approver(&self, i: usize) -> ed25519_dalek::SigningKey {
        read_key(self.dir.path(), &format!("approver-{i}.key"))
    }

    fn initiator_public_hex(&self) -> String {
        hex::encode(self.initiator().verifying_key().to_bytes())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows what the nodes said; the directory is removed.
        if std::thread::panicking() {
            for i in 1..=self.nodes.len() {
                for log in ["enclave.log", "host.log"] {
                    let text = std::fs::read_to_string(self.node_dir(i).join(log)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    eprintln!("--- node-{i} {log} (last {} lines)", tail.len());
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// Makes the cluster's three admin and three approver keys
/// (`admin-N.key`, `approver-N.key`, as the local cluster does) unless
/// they exist; returns the admins' public keys, hex.
fn governance_keys(dir: &Path) -> Vec<String> {
    for role in ["admin", "approver"] {
        for i in 1..=3 {
            let path = dir.join(format!("{role}-{i}.key"));
            if !path.exists() {
                std::fs::write(&path, hex::encode(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng).to_bytes())).unwrap();
            }
        }
    }
    (1..=3).map(|i| hex::encode(read_key(dir, &format!("admin-{i}.key")).verifying_key().to_bytes())).collect()
}

fn read_initiator(dir: &Path) -> ed25519_dalek::SigningKey {
    read_key(dir, "initiator.key")
}

fn read_key(dir: &Path, name: &str) -> ed25519_dalek::SigningKey {
    let text = std::fs::read_to_string(dir.join(name)).expect("key file");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).expect("key files are hex");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `extra` is appended to the host's configuration (NATS access, registry).
/// What a node's two configuration files say.
struct NodeConfig<'a> {
    mode: Mode,
    id: &'a NodeId,
    http_port: u16,
    nats_urls: &'a [String],
    /// The initiator's public key, hex.
    initiator: &'a str,
    presign_pool: u32,
    /// A `[presign_paths]` table, or nothing.
    presign_paths: &'a str,
    /// `heavy_sessions`, if set.
    heavy_sessions: Option<usize>,
    /// The admins' public keys, hex (a quorum of 2).
    admins: &'a [String],
}

fn write_node_configs(dir: &Path, node: &NodeConfig<'_>, extra: &str) {
    let NodeConfig { mode, id, http_port, nats_urls, initiator, presign_pool, presign_paths, heavy_sessions, admins } = *node;
    let d = dir.join(id.as_str());
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("enclave.sock");
    let mut enclave = format!(
        "node_id = \"{id}\"\nmode = \"{mode}\"\nlink = \"unix:{}\"\nstate_dir = \"{}\"\nroster = \"{}\"\ninitiators = [\"{initiator}\"]\npresign_pool = {presign_pool}\n",
        sock.display(),
        d.join("enclave").display(),
        dir.join("roster.json").display()
    );
    if let Some(limit) = heavy_sessions {
        enclave.push_str(&format!("heavy_sessions = {limit}\n"));
    }
    if mode == Mode::Dev {
        enclave.push_str(&format!("dev_attestation_ca = \"{}\"\n", dev_attestation_ca(dir).display()));
    }
    if !admins.is_empty() {
        enclave.push_str(&format!("\n[admins]\nthreshold = 2\nkeys = {}\n", toml_list(admins)));
    }
    enclave.push_str(&format!("\n{presign_paths}"));
    if mode == Mode::Hsm {
        softhsm::write_conf(&d);
        enclave.push_str(&format!(
            "\n[hsm]\nmodule = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n",
            softhsm::MODULE,
            softhsm::token_label(id.as_str()),
            softhsm::pin_file(&d, &softhsm::token_label(id.as_str())).display()
        ));
    }
    std::fs::write(d.join("enclave.toml"), enclave).unwrap();
    std::fs::write(
        d.join("host.toml"),
        format!(
            "node_id = \"{id}\"\nlink = \"unix:{}\"\nnats_urls = {}\nnats_replicas = {}\nstore_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\nheartbeat_ms = 500\n{extra}",
            sock.display(),
            toml_list(nats_urls),
            // Replicate streams and buckets on every server of a NATS cluster.
            nats_urls.len(),
            d.join("store").display()
        ),
    )
    .unwrap();
}

/// The cluster's dev attestation CA (made on first use): its simulated
/// NSMs sign under it, and the client is told its root.
fn dev_attestation_ca(dir: &Path) -> PathBuf {
    let file = dir.join("dev-attestation-ca");
    if !file.exists() {
        let ca = conclave_attest::sim::DevCa::generate().expect("dev CA");
        std::fs::write(&file, ca.to_file()).unwrap();
        std::fs::write(dir.join("dev-attestation-root.pem"), ca.root().to_pem()).unwrap();
    }
    file
}

/// The client waits as long as the `conclave` CLI does by default: past the
/// cluster's longest session deadline, so that a slow template keygen is
/// not cut short and a stuck request still ends in the cluster's own answer.
fn write_client_config(dir: &Path, nats_urls: &[String], access: &str) {
    let dev_root = if dir.join("dev-attestation-root.pem").exists() { "dev_attestation_root = \"dev-attestation-root.pem\"\n" } else { "" };
    std::fs::write(
        dir.join("client.toml"),
        format!("nats_urls = {}\ninitiator_key = \"initiator.key\"\nroster = \"roster.json\"\n{dev_root}{access}", toml_list(nats_urls)),
    )
    .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Identifies the build the template was made with: a template from another
/// build of the enclave may hold blobs it cannot read.
fn build_fingerprint() -> String {
    let meta = std::fs::metadata(bin("conclave-enclave")).expect("enclave binary");
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}", meta.len(), mtime)
}

/// The template for `n` nodes, made on first use by a real cluster. A file
/// lock makes concurrent test processes wait for one maker.
async fn template(mode: Mode, n: usize) -> PathBuf {
    let root = crate::workspace().join("target").join("test-template");
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(format!("{mode}-nodes-{n}"));
    let lock = std::fs::File::create(root.join(format!("{mode}-nodes-{n}.lock"))).unwrap();
    lock.lock().expect("template lock");
    let marker = dir.join("READY");
    let fingerprint = build_fingerprint();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(fingerprint.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_template(&dir, mode, n).await;
    std::fs::write(&marker, fingerprint).unwrap();
    dir
}

async fn make_template(dir: &Path, mode: Mode, n: usize) {
    let initiator = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    std::fs::write(dir.join("initiator.key"), hex::encode(initiator.to_bytes())).unwrap();
    let initiator_hex = hex::encode(initiator.verifying_key().to_bytes());
    let mut roster = Vec::new();
    for i in 1..=n {
        let id = NodeId::new(format!("node-{i}")).unwrap();
        let node_dir = dir.join(id.as_str());
        if mode == Mode::Hsm {
            softhsm::create_token(&node_dir, &softhsm::token_label(id.as_str()));
        }
        let node = NodeConfig {
            mode,
            id: &id,
            http_port: 0,
            nats_urls: &["nats://127.0.0.1:1".to_string()],
            initiator: &initiator_hex,
            presign_pool: 0,
            presign_paths: "",
            heavy_sessions: None,
            admins: &[],
        };
        write_node_configs(dir, &node, "");
        let out = std::process::Command::new(bin("conclave-enclave"))
            .args(["init", "--config", node_dir.join("enclave.toml").to_str().unwrap()])
            .env(softhsm::CONF_ENV, softhsm::conf(&node_dir))
            .output()
            .expect("conclave-enclave init");
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        roster.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("identity JSON"));
    }
    std::fs::write(dir.join("roster.json"), serde_json::to_vec(&roster).unwrap()).unwrap();

    // Boot it for real in a scratch copy, generate the committee's aux info
    // with one ECDSA keygen, and wait until every node has stored the primes
    // that replace the ones aux info consumed.
    let scratch = tempfile::Builder::new().prefix("conclave-template-").tempdir().unwrap();
    copy_dir(dir, scratch.path());
    let cluster = Cluster::boot(scratch, mode, n, Topology::default()).await;
    let client = cluster.client().await;
    let wallet = conclave_proto::WalletId::new("template-aux").unwrap();
    tokio::time::timeout(TEMPLATE_TIMEOUT, client.keygen(&wallet, conclave_proto::Scheme::Ecdsa, 2, None))
        .await
        .expect("template keygen in time")
        .expect("template keygen");
    for i in 1..=n {
        let primes = cluster.node_dir(i).join("store/blobs/primes");
        eventually(&format!("node-{i} to store fresh primes"), TEMPLATE_TIMEOUT, || {
            let primes = primes.clone();
            async move { (std::fs::read_dir(&primes).map(|d| d.count()).unwrap_or(0) >= 2).then_some(()) }
        })
        .await;
    }
    let scratch_dir = cluster.dir().to_path_buf();
    for i in 1..=n {
        let src = scratch_dir.join(format!("node-{i}"));
        let dst = dir.join(format!("node-{i}"));
        copy_dir(&src.join("enclave"), &dst.join("enclave"));
        copy_dir(&src.join("store"), &dst.join("store"));
    }
    drop(cluster);
}
