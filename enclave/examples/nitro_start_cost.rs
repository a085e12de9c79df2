//! What attestation and KMS sealing add to a signer's start, measured with
//! the simulated NSM and the KMS stand-in of the tests (so the KMS row is
//! this code's cost plus a local TLS exchange, not AWS's latency):
//!
//!     cargo run -q -p conclave-enclave --example nitro_start_cost -- 20

#[path = "../tests/support/nitro.rs"]
// Shared with tests/nitro_custody.rs; this measurement uses part of it.
#[allow(dead_code)]
mod nitro;

use std::time::{Duration, Instant};

fn row(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!("| {what} | {} | {:.1} | {:.1} | {:.1} |", samples.len(), ms(p(0.5)), ms(p(0.99)), ms(*samples.last().unwrap()));
}

fn timed<T>(count: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20);
    println!("| step | runs | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    let setup = nitro::Setup::new(None);
    // Dev mode with attestation: the simulated NSM measures the signer binary.
    row(
        "dev: simulated NSM at start (hash the signer binary)",
        timed(count, || conclave_enclave::attestation::simulated(&setup.ca_file, &setup.node).unwrap()),
    );
    row("nitro: one-use RSA-2048 recipient key", timed(count, || conclave_enclave::kms::RecipientKey::generate().unwrap()));
    let mut first = Vec::new();
    let mut restart = Vec::new();
    for _ in 0..count {
        let mut setup = nitro::Setup::new(None);
        let host = nitro::host();
        let start = Instant::now();
        setup.start(&host).await.unwrap();
        first.push(start.elapsed());
        let start = Instant::now();
        setup.start(&host).await.unwrap();
        restart.push(start.elapsed());
    }
    row("nitro: first start's custody (GenerateDataKey, make + seal identity)", first);
    row("nitro: restart's custody (Decrypt, open identity)", restart);
}
