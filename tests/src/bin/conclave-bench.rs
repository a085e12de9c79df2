//! `conclave-bench`: what the appliance costs, measured, never asserted.
//!
//! 1. Sealing: seal and open latency per operation, dev key file against
//!    the PKCS#11 token (SoftHSM2), for a share-sized and a large blob.
//!    Signed results: what a signer's statement costs to sign (dev key,
//!    and the identity key in the token) and what a client's check of a
//!    wallet record (three endorsements) and of a signature result costs.
//! 2. Signing: N signatures per scheme through the SDK against a local
//!    2-of-3 cluster (real nats-server, real node processes), in hsm mode
//!    and in dev mode; and the same protocol executed in this one process
//!    with the dev cluster's shares, without NATS or the link.
//! 3. The registry, on NATS KV (real nats-server) and on Consul (the
//!    stand-in, or the agent at `CONSUL_HTTP_ADDR`): fencing a request
//!    (create), moving it to a new attempt (read + compare-and-set), and how
//!    long a follower's watch takes to wake after that move.
//! 4. Resharing on a 4-node dev cluster: N wallets per scheme move from
//!    2-of-3 (node-1..3) to 3-of-4 (node-1..4), whose committee has aux info
//!    (the template made it), one after the other: per wallet, and all N
//!    (a committee's wallets when a node joins). Then one ECDSA wallet to a
//!    committee without aux info (node-1, node-2, node-4): what making it
//!    adds.
//!
//! 5. Throughput (`--only throughput`): signatures through the SDK at
//!    concurrency 1, 4, 16 and 64 (or `--concurrency 2,8`), quorum chosen by
//!    the cluster, on a 2-of-3 hsm cluster: p50, p99, signatures per second
//!    of wall time, and CPU seconds per signature of each node's signer and
//!    host (from `/proc`); requests that failed (past their deadline in a
//!    queue longer than the CPU can sign) are counted by error code.
//!    `--heavy-sessions N` sets the signers' `heavy_sessions` (default:
//!    theirs, twice the cores).
//!
//! 6. Pools (`--only presigned`), per scheme, on a 2-of-3 dev cluster and
//!    on a 2-of-3 hsm cluster with pools of N/3 per pair (ECDSA presignatures, EdDSA FROST nonces): how
//!    long filling them takes and its CPU per presignature, then N message
//!    signatures that each take one (p50, p99); for ECDSA, N digest
//!    signatures (the full protocol) beside them. With `--concurrency`,
//!    the hsm clusters then sign at each level from full pools (deep
//!    enough for twice the highest level, with room for the cluster's
//!    uneven choice of pairs), quorum chosen by the cluster, in
//!    throughput's columns. Under each row, the machine's speed before
//!    and after it (an ed25519 signature in this process).
//!
//! 7. Policy (`--only policy`): EdDSA signatures (the cheapest protocol,
//!    where the policy's work shows most) on a 2-of-3 hsm cluster, the
//!    same signers throughout: without a policy, under an allow rule (the
//!    evaluation), and under a velocity rule (the wallet's ledger sealed and
//!    stored, and the tally broadcast); every signature also appends two
//!    audit entries per signer (accepted, signed). Then the audit trail's
//!    size per signature, from an export.
//!
//! Usage: `cargo run -p conclave-tests --bin conclave-bench -- [--count N] [--only sealing|statements|signing|registry|reshare|throughput|presigned|policy] [--concurrency N,N...] [--heavy-sessions N]`,
//! after `deploy/setup.sh` has built the node binaries. Both sides run the
//! same build profile (the workspace optimises dependencies even in dev
//! builds).

use conclave_enclave::hsm::{HsmConfig, PinSource, Token};
use conclave_enclave::seal::{KeySealer, SealContext, Sealer, TokenSealer};
use conclave_proto::link::BlobSlot;
use conclave_proto::request::SignPayload;
use conclave_proto::{CommitteeId, NodeId, Scheme, WalletId};
use conclave_tests::{softhsm, Cluster, Mode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SIGNERS: [usize; 2] = [1, 2];

fn main() {
    let Args { count, only, concurrency, heavy_sessions } = parse_args();
    let runs = |section: &str| only.as_deref().is_none_or(|o| o == section);
    // SoftHSM2 reads its configuration from the environment: set it before
    // any thread exists.
    let token_dir = tempfile::tempdir().expect("tempdir");
    let pin = softhsm::create_token(token_dir.path(), "bench");
    std::env::set_var(softhsm::CONF_ENV, softhsm::conf(token_dir.path()));
    if runs("sealing") || runs("statements") {
        let token = Arc::new(
            Token::open(&HsmConfig {
                module: softhsm::MODULE.into(),
                token_label: "bench".into(),
                pin: PinSource::File(pin),
                seal_key_label: "bench-seal".into(),
                identity_key_label: "bench-identity".into(),
            })
            .expect("SoftHSM2 token"),
        );
        if runs("sealing") {
            bench_sealing(count.max(100), token.clone());
        }
        if runs("statements") {
            bench_statements(count.max(100), &token);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    if runs("signing") {
        runtime.block_on(bench_signing(count));
    }
    if runs("registry") {
        runtime.block_on(bench_registry(count.max(100)));
    }
    if runs("reshare") {
        runtime.block_on(bench_reshare(count.min(10)));
    }
    // Not in the default run: it takes minutes at high concurrency.
    if only.as_deref() == Some("throughput") {
        runtime.block_on(bench_throughput(count, concurrency.as_deref().unwrap_or(&[1, 4, 16, 64]), heavy_sessions));
    }
    if only.as_deref() == Some("presigned") {
        runtime.block_on(bench_presigned(count, concurrency.as_deref()));
    }
    if only.as_deref() == Some("policy") {
        runtime.block_on(bench_policy(count));
    }
}

/// What a policy and the audit trail add to a signature (section 7).
async fn bench_policy(count: usize) {
    println!("policy and audit, {count} EdDSA signatures per case, 2-of-3 hsm cluster, signers node-1 and node-2, sequential");
    println!("{:<7} {:<28} {:>9} {:>9} {:>8}", "scheme", "case", "p50 ms", "p99 ms", "sig/s");
    let cluster = Cluster::start_in(Mode::Hsm, 3).await;
    let client = cluster.client().await;
    let signers: Vec<NodeId> = SIGNERS.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect();
    let wallet = WalletId::new("bench-policy").expect("wallet id");
    client.keygen(&wallet, Scheme::Eddsa, 2, None).await.expect("keygen");
    let measure = |case: &'static str| {
        let (client, wallet, signers) = (&client, &wallet, &signers);
        async move {
            client.sign(wallet, Scheme::Eddsa, SignPayload::Message(b"warm-up".to_vec()), vec![], Some(signers.clone())).await.expect("warm-up");
            let mut times = Vec::with_capacity(count);
            for k in 0..count {
                let t = Instant::now();
                let message = format!("{case} {k}").into_bytes();
                client.sign(wallet, Scheme::Eddsa, SignPayload::Message(message), vec![], Some(signers.clone())).await.expect("signs");
                times.push(t.elapsed());
            }
            Stats::of(times).print(Scheme::Eddsa, case);
        }
    };
    measure("no policy").await;
    let set = |version: u32, rule: &str| {
        let path = cluster.dir().join(format!("bench-policy-{version}.json"));
        std::fs::write(&path, format!(r#"{{"v": 1, "version": {version}, "rules": [{rule}]}}"#)).expect("policy file");
        let (one, two) = (cluster.admin_key_file(1), cluster.admin_key_file(2));
        let (code, out, err) =
            cluster.cli(&["policy", "set", "--file", path.to_str().unwrap(), "--admin-key", one.to_str().unwrap(), "--admin-key", two.to_str().unwrap()]);
        assert_eq!(code, 0, "policy set: {out} {err}");
    };
    set(1, r#"{"name": "all", "wallets": ["*"], "effect": "allow", "when": {"payloads": ["message"]}}"#);
    measure("allow rule").await;
    set(2, r#"{"name": "all", "wallets": ["*"], "effect": "allow", "require": {"velocity": {"window_s": 3600, "max_signatures": 1000000}}}"#);
    measure("velocity rule").await;
    let export = client.audit_export().await.expect("audit export");
    let node1 = &export.nodes[0];
    let stored = cluster.node_dir(1).join("store/blobs/audit");
    let bytes: u64 = std::fs::read_dir(&stored).expect("node-1's audit trail").map(|f| f.expect("entry").metadata().expect("size").len()).sum();
    let signed = node1.entries.iter().filter(|e| e.entry.contains(r#""kind":"signed""#)).count().max(1);
    println!();
    println!("audit trail of node-1: {} entries, {} signatures; {} bytes of stored entries per signature", node1.entries.len(), signed, bytes / signed as u64);
}

/// Sum of one counter over the three nodes of a cluster.
async fn total(cluster: &Cluster, sample: &str) -> f64 {
    let mut sum = 0.0;
    for i in 1..=3 {
        sum += cluster.metric(i, sample).await;
    }
    sum
}

async fn bench_presigned(count: usize, levels: Option<&[usize]>) {
    // Pools deep enough for the largest level's signatures, if any. The
    // sequential rows name the pairs in turn (a third each); at the levels
    // the cluster picks a pair by a hash of the request id, so a pair's
    // share of n requests varies (standard deviation sqrt(2n)/3): three of
    // them more keep a level's requests on warm pools.
    let most = levels.unwrap_or_default().iter().map(|&c| count.max(2 * c)).max();
    let per_pair = match most {
        Some(n) => n.div_ceil(3) + (2.0 * n as f64).sqrt().ceil() as usize,
        None => count.div_ceil(3),
    }
    .max(1) as u32;
    let presignatures = 3 * per_pair as usize;
    println!("presignature pools, 2-of-3 clusters (dev, hsm), {per_pair} per pair (3 pairs) and scheme");
    println!("{:<7} {:<28} {:>9} {:>9} {:>8}", "scheme", "where", "p50 ms", "p99 ms", "sig/s");
    let mut notes = Vec::new();
    for (mode, scheme) in [(Mode::Dev, Scheme::Ecdsa), (Mode::Dev, Scheme::Eddsa), (Mode::Hsm, Scheme::Ecdsa), (Mode::Hsm, Scheme::Eddsa)] {
        let mode_name = if mode == Mode::Dev { "dev" } else { "hsm" };
        eprintln!("starting a 3-node {mode_name} cluster with {scheme} pools of {per_pair} per pair");
        let cluster = Cluster::start_with_pools_in(mode, 3, per_pair).await;
        let client = Arc::new(cluster.client().await);
        let wallet = WalletId::new(format!("bench-presigned-{scheme}")).expect("wallet id");
        let cpu_before: Vec<(Duration, Duration)> = (1..=3).map(|i| cluster.cpu_time(i)).collect();
        let started = Instant::now();
        client.keygen(&wallet, scheme, 2, None).await.expect("keygen");
        let made = "conclave_presignatures_total{outcome=\"made\"}";
        conclave_tests::eventually("the pools full", Duration::from_secs(1800), || async {
            (total(&cluster, made).await >= presignatures as f64).then_some(())
        })
        .await;
        let fill = started.elapsed();
        let cpu: Vec<String> = (1..=3)
            .map(|i| {
                let (signer, host) = cluster.cpu_time(i);
                // Each presignature runs on two of the three signers.
                let per = |now: Duration, before: Duration| now.saturating_sub(before).as_secs_f64() * 1000.0 / (2 * presignatures) as f64 * 3.0;
                format!("{:.1}+{:.1}", per(signer, cpu_before[i - 1].0), per(host, cpu_before[i - 1].1))
            })
            .collect();
        notes.push(format!(
            "{scheme} {mode_name}: filled {presignatures} (keygen included) in {:.1} s, {:.2} s each; CPU ms per presignature per signer taking part, signer+host, node-1 node-2 node-3: {}",
            fill.as_secs_f64(),
            fill.as_secs_f64() / presignatures as f64,
            cpu.join("  ")
        ));
        let presigned = "conclave_pool_plans_total{protocol=\"presigned\"}";
        let before = total(&cluster, presigned).await;
        let pairs = [[1usize, 2], [1, 3], [2, 3]];
        let node = |i: usize| cluster.node_ids()[i - 1].clone();
        let speed = machine_speed();
        let mut times = Vec::with_capacity(count);
        for k in 0..count {
            let signers = pairs[k % 3].iter().map(|&i| node(i)).collect();
            let t = Instant::now();
            client.sign(&wallet, scheme, SignPayload::Message(format!("bench {k}").into_bytes()), vec![], Some(signers)).await.expect("signs");
            times.push(t.elapsed());
        }
        let took = total(&cluster, presigned).await - before;
        Stats::of(times).print(scheme, &format!("{mode_name}, pooled ({took:.0} of {count})"));
        println!("{:<7} {}", "", speed.around(machine_speed()));
        // At each level, from full pools, the quorum chosen by the cluster
        // (which spreads requests over the pairs): hsm only.
        if let Some(levels) = levels.filter(|_| mode == Mode::Hsm) {
            level_header();
            for &c in levels {
                let full = || async {
                    let level = total(&cluster, made).await - total(&cluster, presigned).await;
                    (level >= presignatures as f64).then_some(())
                };
                conclave_tests::eventually("the pools full again", Duration::from_secs(1800), full).await;
                let before = total(&cluster, presigned).await;
                let n = count.max(2 * c);
                let payload = |k: usize| SignPayload::Message(format!("bench at {c}: {k}").into_bytes());
                let speed = machine_speed();
                sign_at(&cluster, &client, &wallet, scheme, c, n, payload).await;
                let took = total(&cluster, presigned).await - before;
                println!("{:<7} {:>5} {:>6}   ({took:.0} of {n} from a pool; {})", "", "", "", speed.around(machine_speed()));
            }
        }
        // The full protocol beside it: ECDSA with a digest (never pooled).
        // (EdDSA's full protocol: `--only signing`.)
        if scheme == Scheme::Ecdsa {
            let mut times = Vec::with_capacity(count);
            for k in 0..count {
                let t = Instant::now();
                client.sign(&wallet, scheme, SignPayload::Digest([k as u8; 32].to_vec()), vec![], None).await.expect("signs");
                times.push(t.elapsed());
            }
            Stats::of(times).print(scheme, &format!("{mode_name}, full protocol (a digest)"));
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}

/// The machine's speed at a moment: µs per ed25519 signature in this
/// process, the mean of 2000 (40-60 ms). This machine's cores run at one
/// of two speeds, switching within seconds (17.3 or about 29 µs, the
/// second presumably while a neighbour shares the physical core), so a
/// row compares with another only beside the speed before and after
/// it. It does not see every slow spell: big-integer work (the full
/// protocol's row, a presignature's CPU) has run a third slower while
/// this read 18 µs.
struct Speed(f64);

fn machine_speed() -> Speed {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let t = Instant::now();
    for i in 0..2000u32 {
        std::hint::black_box(key.sign(&i.to_le_bytes()));
    }
    Speed(t.elapsed().as_secs_f64() * 1e6 / 2000.0)
}

impl Speed {
    /// Both ends of a row, as its footnote.
    fn around(&self, after: Speed) -> String {
        format!("machine before / after: {:.1} / {:.1} µs per ed25519 signature", self.0, after.0)
    }
}

async fn bench_throughput(count: usize, levels: &[usize], heavy_sessions: Option<usize>) {
    eprintln!("starting a 3-node hsm cluster (the first run of a build makes its template: primes and aux info, minutes)");
    let cluster = match heavy_sessions {
        Some(limit) => Cluster::start_with_heavy_sessions(Mode::Hsm, 3, limit).await,
        None => Cluster::start(3).await,
    };
    let client = Arc::new(cluster.client().await);
    println!("throughput, 2-of-3 hsm cluster, quorum chosen by the cluster; at least {count} signatures (and twice the concurrency) per row");
    level_header();
    for scheme in [Scheme::Eddsa, Scheme::Ecdsa] {
        let wallet = WalletId::new(format!("bench-throughput-{scheme}")).expect("wallet id");
        client.keygen(&wallet, scheme, 2, None).await.expect("keygen");
        let payload = move || match scheme {
            Scheme::Ecdsa => SignPayload::Digest([7u8; 32].to_vec()),
            Scheme::Eddsa => SignPayload::Message(b"bench".to_vec()),
        };
        client.sign(&wallet, scheme, payload(), vec![], None).await.expect("warm-up signature");
        for &c in levels {
            sign_at(&cluster, &client, &wallet, scheme, c, count.max(2 * c), move |_| payload()).await;
        }
    }
}

/// The header of [`sign_at`]'s rows.
fn level_header() {
    println!(
        "{:<7} {:>5} {:>6} {:>9} {:>9} {:>8}   CPU ms per signature, signer+host, node-1 node-2 node-3",
        "scheme", "conc", "sigs", "p50 ms", "p99 ms", "sig/s"
    );
}

/// Signs `n` requests for `wallet` at concurrency `c` (quorum chosen by
/// the cluster) and prints its row: p50, p99, signatures per second of
/// wall time, and CPU per signature of each node's signer and host (from
/// `/proc`). Beyond what the CPU signs within a request's
/// deadline, requests fail (`timeout`): counted by code, not hidden.
async fn sign_at(
    cluster: &Cluster,
    client: &Arc<conclave_client::Client>,
    wallet: &WalletId,
    scheme: Scheme,
    c: usize,
    n: usize,
    payload: impl Fn(usize) -> SignPayload,
) {
    use futures::StreamExt;
    let cpu_before: Vec<(Duration, Duration)> = (1..=3).map(|i| cluster.cpu_time(i)).collect();
    let started = Instant::now();
    let outcomes: Vec<(Duration, Result<(), String>)> = futures::stream::iter((0..n).map(|k| {
        let (client, wallet, payload) = (client.clone(), wallet.clone(), payload(k));
        async move {
            let t = Instant::now();
            let signed = client.sign(&wallet, scheme, payload, vec![], None).await;
            (t.elapsed(), signed.map(drop).map_err(|e| e.code().map_or_else(|| e.to_string(), |c| c.to_string())))
        }
    }))
    .buffer_unordered(c)
    .collect()
    .await;
    let mut failed = std::collections::BTreeMap::<String, usize>::new();
    let mut times = Vec::with_capacity(n);
    for (took, outcome) in outcomes {
        match outcome {
            Ok(()) => times.push(took),
            Err(code) => *failed.entry(code).or_default() += 1,
        }
    }
    let wall = started.elapsed();
    let cpu: Vec<String> = (1..=3)
        .map(|i| {
            let (signer, host) = cluster.cpu_time(i);
            let per = |now: Duration, before: Duration| now.saturating_sub(before).as_secs_f64() * 1000.0 / n as f64;
            format!("{:.1}+{:.1}", per(signer, cpu_before[i - 1].0), per(host, cpu_before[i - 1].1))
        })
        .collect();
    let signed = times.len();
    let failures = if failed.is_empty() { String::new() } else { format!("   failed: {failed:?}") };
    if signed == 0 {
        println!("{:<7} {:>5} {:>6}   no signature{failures}", scheme.to_string(), c, n);
        return;
    }
    let stats = Stats::of(times);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<7} {:>5} {:>6} {:>9.1} {:>9.1} {:>8.1}   {}{failures}",
        scheme.to_string(),
        c,
        n,
        ms(stats.p50),
        ms(stats.p99),
        signed as f64 / wall.as_secs_f64(),
        cpu.join("  ")
    );
}

async fn bench_reshare(count: usize) {
    eprintln!("starting a 4-node dev cluster (the first run of a build makes its template: primes and aux info, minutes)");
    let cluster = Cluster::start_in(Mode::Dev, 4).await;
    let client = cluster.client().await;
    let nodes = |which: &[usize]| -> Vec<NodeId> { which.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect() };
    println!("resharing, {count} wallets per scheme, 2-of-3 (node-1..3) to 3-of-4 (node-1..4), sequential, dev cluster");
    println!("{:<7} {:<28} {:>9} {:>9} {:>10}", "scheme", "what", "p50 ms", "p99 ms", "total ms");
    for scheme in [Scheme::Eddsa, Scheme::Ecdsa] {
        let wallets: Vec<WalletId> = (0..count).map(|i| WalletId::new(format!("bench-reshare-{scheme}-{i}")).expect("wallet id")).collect();
        for w in &wallets {
            client.keygen(w, scheme, 2, Some(nodes(&[1, 2, 3]))).await.expect("keygen");
        }
        let mut times = Vec::with_capacity(count);
        let all = Instant::now();
        for w in &wallets {
            let t = Instant::now();
            client.reshare(w, scheme, 3, nodes(&[1, 2, 3, 4])).await.expect("reshare");
            times.push(t.elapsed());
        }
        let total = all.elapsed();
        let stats = Stats::of(times);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{:<7} {:<28} {:>9.1} {:>9.1} {:>10.1}", scheme.to_string(), "per wallet (aux info exists)", ms(stats.p50), ms(stats.p99), ms(total));
    }
    let w = WalletId::new("bench-reshare-new-committee").expect("wallet id");
    client.keygen(&w, Scheme::Ecdsa, 2, Some(nodes(&[1, 2, 3]))).await.expect("keygen");
    let t = Instant::now();
    client.reshare(&w, Scheme::Ecdsa, 2, nodes(&[1, 2, 4])).await.expect("reshare to a committee without aux info");
    println!("{:<7} {:<28} {:>9} {:>9} {:>10.1}", "ecdsa", "one wallet, new aux info", "", "", t.elapsed().as_secs_f64() * 1000.0);
}

struct Args {
    count: usize,
    only: Option<String>,
    /// As given (`--concurrency`); throughput runs 1, 4, 16, 64 without.
    concurrency: Option<Vec<usize>>,
    heavy_sessions: Option<usize>,
}

const SECTIONS: [&str; 8] = ["sealing", "statements", "signing", "registry", "reshare", "throughput", "presigned", "policy"];

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut parsed = Args { count: 20, only: None, concurrency: None, heavy_sessions: None };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--count", Some(n)) => parsed.count = n.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage()),
            ("--only", Some(s)) if SECTIONS.contains(&s.as_str()) => parsed.only = Some(s.clone()),
            ("--concurrency", Some(list)) => {
                parsed.concurrency = Some(list.split(',').map(|c| c.parse().ok().filter(|c| *c > 0).unwrap_or_else(|| usage())).collect())
            }
            ("--heavy-sessions", Some(n)) => parsed.heavy_sessions = Some(n.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    parsed
}

fn usage() -> ! {
    eprintln!("usage: conclave-bench [--count N] [--only {}] [--concurrency N,N...] [--heavy-sessions N]   (N > 0 signatures per scheme)", SECTIONS.join("|"));
    std::process::exit(2)
}

async fn bench_registry(count: usize) {
    use conclave_host::registry::{Bucket, Registry};
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = conclave_tests::NatsServer::start(&dir.path().join("nats")).await;
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let consul = conclave_tests::consul::ConsulAgent::start(dir.path()).await;
    let ttl = Duration::from_secs(5);
    let backends = [
        ("nats kv", Registry::nats(&async_nats::jetstream::new(client), ttl, 1).await.expect("nats registry")),
        ("consul*", Registry::consul(&consul.config(), ttl).expect("consul registry")),
    ];
    println!("registry, {count} requests each (* the in-repo stand-in unless CONSUL_HTTP_ADDR is set)");
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "backend", "fence p50 µs", "fence p99 µs", "move p50 µs", "move p99 µs", "wake p50 µs", "wake p99 µs"
    );
    for (name, registry) in &backends {
        let (mut fences, mut moves, mut wakes) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..count {
            let id = conclave_proto::RequestId::new(format!("bench-{i}")).expect("request id");
            let watch = registry.watch_request(&id).await;
            let t = Instant::now();
            registry.create(Bucket::Sessions, id.as_str(), "attempt 1".into()).await.expect("fence");
            fences.push(t.elapsed());
            watch.changed().await;
            let t = Instant::now();
            let entry = registry.get(Bucket::Sessions, id.as_str()).await.expect("read").expect("record");
            registry.update(Bucket::Sessions, id.as_str(), "attempt 2".into(), entry.revision).await.expect("move");
            moves.push(t.elapsed());
            watch.changed().await;
            wakes.push(t.elapsed());
        }
        let (f, m, w) = (Stats::of(fences), Stats::of(moves), Stats::of(wakes));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("{name:<8} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>14.0}", us(f.p50), us(f.p99), us(m.p50), us(m.p99), us(w.p50), us(w.p99));
    }
    println!();
}

/// Signing a statement (as a signer does for every result) and checking
/// one (as a client does for every result and record).
fn bench_statements(count: usize, token: &Arc<Token>) {
    use conclave_proto::link::{Mode, NodeIdentity};
    use conclave_proto::result::{Completed, KeygenResult, SignResult};
    use conclave_proto::statement::{Endorsed, Endorsement, Statement};
    use ed25519_dalek::Signer;
    use sha2::Digest;
    token.create_identity_key("bench-identity").expect("identity key");
    let (handle, _) = token.identity_key("bench-identity").expect("token").expect("identity key");
    let body = r#"{"kind":"keygen","request_id":"bench"}"#;
    let request: [u8; 32] = sha2::Sha256::digest(body.as_bytes()).into();
    let nodes: Vec<NodeId> = (1..=3).map(|i| NodeId::new(format!("node-{i}")).expect("node id")).collect();
    let keys: Vec<ed25519_dalek::SigningKey> = (1..=3u8).map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32])).collect();
    let record = KeygenResult {
        wallet: WalletId::new("bench").expect("wallet"),
        scheme: Scheme::Ecdsa,
        public_key: vec![2; 33],
        xpub: Some("xpub".repeat(28)),
        version: 1,
        threshold: 2,
        committee: nodes.clone(),
    };
    let keygen = serde_json::to_string(&Statement { v: 1, request, result: Completed::Keygen(record.clone()) }).expect("serialises");
    let sign = serde_json::to_string(&Statement {
        v: 1,
        request,
        result: Completed::Sign(SignResult {
            wallet: record.wallet.clone(),
            scheme: Scheme::Ecdsa,
            signature: vec![1; 64],
            recovery_id: Some(0),
            public_key: vec![2; 33],
            path: vec![],
            signers: nodes[..2].to_vec(),
            version: 1,
        }),
    })
    .expect("serialises");
    let endorse = |statement: &str, by: &[usize]| Endorsed {
        statement: statement.to_string(),
        endorsements: by
            .iter()
            .map(|&i| Endorsement {
                node: nodes[i].clone(),
                signature: keys[i].sign(&Endorsed::signing_bytes(statement)).to_bytes(),
                run_key: None,
                audit_head: None,
            })
            .collect(),
    };
    let roster = conclave_client::Roster::new(
        nodes
            .iter()
            .zip(&keys)
            .map(|(n, k)| NodeIdentity { node_id: n.clone(), mode: Mode::Dev, sign_key: k.verifying_key().to_bytes(), kx_key: [0; 32] })
            .collect(),
    )
    .expect("roster");
    let (record_endorsed, sign_endorsed) = (endorse(&keygen, &[0, 1, 2]), endorse(&sign, &[0]));
    // As an hsm signer endorses: by a run key its identity key certified.
    let run = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let run_key = {
        use conclave_proto::run_key::RunKey;
        let (key, not_after_ms) = (run.verifying_key().to_bytes(), u64::MAX / 2);
        RunKey { key, not_after_ms, signature: keys[0].sign(&RunKey::signing_bytes(&nodes[0], &key, not_after_ms)).to_bytes() }
    };
    let mut by_run_key = sign_endorsed.clone();
    by_run_key.endorsements[0].signature = run.sign(&Endorsed::signing_bytes(&sign)).to_bytes();
    by_run_key.endorsements[0].run_key = Some(run_key);
    let time = |f: &mut dyn FnMut()| {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            f();
            times.push(t.elapsed());
        }
        Stats::of(times)
    };
    println!("signed results, {count} operations each");
    println!("{:<60} {:>9} {:>9}", "what", "p50 µs", "p99 µs");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let rows: Vec<(&str, Stats)> = vec![
        (
            "sign a statement, key in memory (dev, nitro; hsm run key)",
            time(&mut || {
                std::hint::black_box(keys[0].sign(&Endorsed::signing_bytes(&keygen)));
            }),
        ),
        (
            "sign a statement, identity key in the token",
            time(&mut || {
                std::hint::black_box(token.sign_ed25519(handle, &Endorsed::signing_bytes(&keygen)).expect("token signs"));
            }),
        ),
        ("raise a version floor in the token", {
            let floors = conclave_enclave::floor::Floors::token(token.clone());
            let mut version = 0;
            time(&mut || {
                version += 1;
                floors.raise("bench", version).expect("token raises");
            })
        }),
        (
            "client: check a wallet record (3 endorsements)",
            time(&mut || {
                std::hint::black_box(roster.record(&record_endorsed, &record.wallet, record.scheme).expect("checks"));
            }),
        ),
        (
            "client: check a signature result (1 endorsement)",
            time(&mut || {
                std::hint::black_box(roster.sign_result(&sign_endorsed, body).expect("checks"));
            }),
        ),
        (
            "client: check a signature result by a run key",
            time(&mut || {
                std::hint::black_box(roster.sign_result(&by_run_key, body).expect("checks"));
            }),
        ),
    ];
    for (what, s) in rows {
        println!("{what:<60} {:>9.0} {:>9.0}", us(s.p50), us(s.p99));
    }
    println!();
}

fn bench_sealing(count: usize, token: Arc<Token>) {
    token.create_seal_key("bench-seal").expect("seal key");
    let sealers: [(&str, Box<dyn Sealer>); 2] =
        [("dev", Box::new(KeySealer::from_key(&[7; 32]))), ("hsm", Box::new(TokenSealer::new(token, "bench-seal").expect("token sealer")))];
    let node = NodeId::new("node-1").expect("node id");
    let slot = BlobSlot::Primes;
    let ctx = SealContext::blob(&node, &slot, 1);
    println!("sealing, {count} operations each");
    println!("{:<7} {:>8} {:>12} {:>12} {:>12} {:>12}", "sealer", "bytes", "seal p50 µs", "seal p99 µs", "open p50 µs", "open p99 µs");
    // About an ECDSA share record, and about a committee's aux info.
    for size in [2 * 1024, 64 * 1024] {
        let plaintext = vec![0x5a; size];
        for (name, sealer) in &sealers {
            let mut seals = Vec::with_capacity(count);
            let mut opens = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let blob = sealer.seal(&ctx, &plaintext).expect("seal");
                seals.push(t.elapsed());
                let t = Instant::now();
                let opened = sealer.open(&ctx, &blob).expect("open");
                opens.push(t.elapsed());
                assert_eq!(opened.len(), size);
            }
            let (s, o) = (Stats::of(seals), Stats::of(opens));
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!("{name:<7} {size:>8} {:>12.0} {:>12.0} {:>12.0} {:>12.0}", us(s.p50), us(s.p99), us(o.p50), us(o.p99));
        }
    }
    println!();
}

async fn bench_signing(count: usize) {
    println!("signing, {count} signatures per scheme and mode, 2-of-3, signers node-1 and node-2, sequential");
    println!("{:<7} {:<13} {:>9} {:>9} {:>10}", "scheme", "where", "p50 ms", "p99 ms", "sig/s");
    let mut notes = Vec::new();
    for mode in [Mode::Hsm, Mode::Dev] {
        eprintln!("starting a 3-node {mode} cluster (the first run of a build makes its template: primes and aux info, minutes)");
        let cluster = Cluster::start_in(mode, 3).await;
        let client = cluster.client().await;
        let signers: Vec<NodeId> = SIGNERS.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect();
        for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
            let wallet = WalletId::new(format!("bench-{scheme}")).expect("wallet id");
            let started = Instant::now();
            client.keygen(&wallet, scheme, 2, None).await.expect("keygen");
            notes.push(format!("{scheme} keygen of one wallet, {mode} cluster: {} ms", started.elapsed().as_millis()));
            let payload = || match scheme {
                Scheme::Ecdsa => SignPayload::Digest([7u8; 32].to_vec()),
                Scheme::Eddsa => SignPayload::Message(b"bench".to_vec()),
            };
            // One unmeasured signature: connections, caches.
            client.sign(&wallet, scheme, payload(), vec![], Some(signers.clone())).await.expect("warm-up signature");
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                client.sign(&wallet, scheme, payload(), vec![], Some(signers.clone())).await.expect("cluster signature");
                times.push(t.elapsed());
            }
            let cluster_stats = Stats::of(times);
            cluster_stats.print(scheme, &format!("cluster {mode}"));
            if mode == Mode::Dev {
                let local = in_process(&cluster, &wallet, scheme, count).await;
                local.print(scheme, "in-process");
                notes.push(format!("{scheme} cluster (dev) / in-process p50: {:.1}x", cluster_stats.p50.as_secs_f64() / local.p50.as_secs_f64()));
            }
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}

/// The same signing protocol, all parties in this process (round-based's
/// simulator), with the dev cluster's shares.
async fn in_process(cluster: &Cluster, wallet: &WalletId, scheme: Scheme, count: usize) -> Stats {
    let shares: Vec<Zeroizing<Vec<u8>>> = SIGNERS.iter().map(|&i| Zeroizing::new(cluster.open_share(i, wallet, scheme).secret.expose().to_vec())).collect();
    let indexes: Vec<u16> = SIGNERS.iter().map(|&i| (i - 1) as u16).collect();
    let aux_slot = BlobSlot::AuxInfo { committee: CommitteeId::of(&cluster.node_ids()) };
    let auxes: Vec<Zeroizing<Vec<u8>>> = match scheme {
        Scheme::Ecdsa => SIGNERS.iter().map(|&i| cluster.open_latest_blob(i, &aux_slot)).collect(),
        Scheme::Eddsa => Vec::new(),
    };
    let times = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|_| {
                let t = Instant::now();
                match scheme {
                    Scheme::Ecdsa => {
                        conclave_enclave::ecdsa::sign_in_process(&shares, &auxes, &indexes, [7u8; 32], conclave_enclave::ecdsa::Threads::One).map(drop)
                    }
                    Scheme::Eddsa => conclave_enclave::eddsa::sign_in_process(&shares, &indexes, b"bench").map(drop),
                }
                .expect("in-process signature");
                t.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("in-process run");
    Stats::of(times)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Stats {
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let total: Duration = times.iter().sum();
        Stats { p50: at(0.50), p99: at(0.99), per_second: times.len() as f64 / total.as_secs_f64() }
    }

    fn print(&self, scheme: Scheme, place: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{:<7} {:<13} {:>9.1} {:>9.1} {:>10.2}", scheme.to_string(), place, ms(self.p50), ms(self.p99), self.per_second);
    }
}
