//! `conclave-bench`: signing latency and throughput of a local 2-of-3
//! cluster (real nats-server, real node processes, the SDK), and in the same
//! run the same protocol executed in this one process with the same shares,
//! without NATS or the link: the difference is what the appliance costs.
//!
//! Figures are printed, never asserted. Usage:
//! `cargo run -p conclave-tests --bin conclave-bench -- [--count N]`, after
//! `deploy/setup.sh` has built the node binaries. Both sides run the same
//! build profile (the workspace optimises dependencies even in dev builds).

use conclave_proto::request::SignPayload;
use conclave_proto::{NodeId, Scheme, WalletId};
use conclave_tests::Cluster;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SIGNERS: [usize; 2] = [1, 2];

fn main() {
    let count = parse_count();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(bench(count));
}

fn parse_count() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 20,
        [flag, n] if flag == "--count" => n.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: conclave-bench [--count N]   (N > 0 signatures per scheme)");
    std::process::exit(2)
}

async fn bench(count: usize) {
    eprintln!("starting a 3-node cluster (the first run builds the test template: primes and aux info, minutes)");
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let signers: Vec<NodeId> = SIGNERS.iter().map(|i| cluster.node_ids()[i - 1].clone()).collect();
    println!("{count} signatures per scheme, 2-of-3, signers {signers:?}, sequential");
    println!("{:<7} {:<11} {:>9} {:>9} {:>10}", "scheme", "where", "p50 ms", "p99 ms", "sig/s");
    for scheme in [Scheme::Ecdsa, Scheme::Eddsa] {
        let wallet = WalletId::new(format!("bench-{scheme}")).expect("wallet id");
        let started = Instant::now();
        client.keygen(&wallet, scheme, 2, None).await.expect("keygen");
        let keygen = started.elapsed();

        let payload = || match scheme {
            Scheme::Ecdsa => SignPayload::Digest([7u8; 32].to_vec()),
            Scheme::Eddsa => SignPayload::Message(b"bench".to_vec()),
        };
        // One unmeasured signature: connections, caches.
        client.sign(&wallet, scheme, payload(), vec![], Some(signers.clone())).await.expect("warm-up signature");
        let mut cluster_times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            client.sign(&wallet, scheme, payload(), vec![], Some(signers.clone())).await.expect("cluster signature");
            cluster_times.push(t.elapsed());
        }

        let shares: Vec<Zeroizing<Vec<u8>>> =
            SIGNERS.iter().map(|&i| Zeroizing::new(cluster.open_share(i, &wallet, scheme).secret.expose().to_vec())).collect();
        let indexes: Vec<u16> = SIGNERS.iter().map(|&i| (i - 1) as u16).collect();
        let local_times = tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|_| {
                    let t = Instant::now();
                    match scheme {
                        Scheme::Ecdsa => conclave_enclave::ecdsa::sign_in_process(&shares, &indexes, [7u8; 32]).map(drop),
                        Scheme::Eddsa => conclave_enclave::eddsa::sign_in_process(&shares, &indexes, b"bench").map(drop),
                    }
                    .expect("in-process signature");
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("in-process run");

        let cluster_stats = Stats::of(cluster_times);
        let local_stats = Stats::of(local_times);
        cluster_stats.print(scheme, "cluster");
        local_stats.print(scheme, "in-process");
        println!(
            "{:<7} cluster/in-process p50 ratio {:.1}x; keygen of this wallet {} ms",
            scheme.to_string(),
            cluster_stats.p50.as_secs_f64() / local_stats.p50.as_secs_f64(),
            keygen.as_millis()
        );
    }
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
        println!("{:<7} {:<11} {:>9.1} {:>9.1} {:>10.2}", scheme.to_string(), place, ms(self.p50), ms(self.p99), self.per_second);
    }
}
