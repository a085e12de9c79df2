//! What CGGMP24 costs on this machine, all parties in one process on one
//! thread (round-based's simulator), for each big-integer backend:
//!
//!     cargo run --release -q -p conclave-enclave --example ecdsa_cost -- 10 1
//!     cargo run --release -q -p conclave-enclave --no-default-features --features bigint-num-bigint --example ecdsa_cost -- 10 1
//!
//! Arguments: signatures per row (default 10), prime sets to generate
//! (default 1; each is four 1536-bit safe primes). Aux info is made from
//! the test primes fixture (three parties); the key is a trusted dealer's
//! 2-of-3 HD key (test-only).

use conclave_enclave::ecdsa;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

fn row(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!("| {what} | {} | {:.1} | {:.1} |", samples.len(), ms(p(0.5)), ms(p(0.99)));
}

fn timed<T>(count: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut last = None;
    let samples = (0..count)
        .map(|_| {
            let start = Instant::now();
            last = Some(std::hint::black_box(f()));
            start.elapsed()
        })
        .collect();
    (samples, last.expect("at least one run"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let prime_sets: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let backend = if cfg!(feature = "bigint-num-bigint") { "num-bigint" } else { "rug (GMP)" };
    println!("backend: {backend}");
    println!("| step (all parties, one thread) | runs | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- |");

    if prime_sets > 0 {
        row("one party's prime set (4 safe primes)", timed(prime_sets, ecdsa::Primes::generate).0);
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pregenerated-primes.json");
    let sets: Vec<String> = serde_json::from_slice(&std::fs::read(fixture).expect("the primes fixture")).expect("a list of sets");
    let primes = || sets.iter().take(3).map(|s| ecdsa::Primes::from_bytes(s.as_bytes()).expect("a prime set")).collect();
    let (samples, aux) = timed(3, || ecdsa::aux_info_in_process(primes()).expect("aux info"));
    row("aux info, committee of 3", samples);

    let cores = cggmp24::trusted_dealer::builder::<cggmp24::supported_curves::Secp256k1, cggmp24::security_level::SecurityLevel128>(3)
        .set_threshold(Some(2))
        .hd_wallet(true)
        .generate_core_shares(&mut rand_core::OsRng)
        .expect("dealt");
    let shares: Vec<Zeroizing<Vec<u8>>> = cores.iter().map(|c| Zeroizing::new(serde_json::to_vec(c).expect("serialises"))).collect();
    let signers = [0u16, 2];
    let pick = |all: &[Zeroizing<Vec<u8>>]| -> Vec<Zeroizing<Vec<u8>>> { signers.iter().map(|&i| all[usize::from(i)].clone()).collect() };
    let (shares, aux) = (pick(&shares), pick(&aux));

    let sign = |threads| timed(count, || ecdsa::sign_in_process(&shares, &aux, &signers, [7; 32], threads).expect("signs")).0;
    row("full signing, 2 signers", sign(ecdsa::Threads::One));
    row("full signing, 2 signers, a thread each", sign(ecdsa::Threads::Each));
    let (samples, records) = timed(count, || ecdsa::presign_in_process(&shares, &aux, &signers, &[]).expect("presigns"));
    row("presignature, 2 signers", samples);
    row(
        "signing with a presignature, 2 signers",
        timed(count, || ecdsa::sign_presigned_in_process(&records, b"bench", &[]).expect("signs").into_iter().all(|r| r.is_ok())).0,
    );
    println!();
    println!("sealed sizes (plaintext JSON): aux info {} B per party, presignature {} B per signer", aux[0].len(), records[0].len());
}
