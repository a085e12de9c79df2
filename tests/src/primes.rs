//! Paillier primes for test clusters, pregenerated: finding a node's four
//! 1536-bit safe primes (CGGMP24: its Paillier key and its ring-Pedersen
//! modulus) takes minutes of CPU, and every
//! cluster template (and every new committee in a test) needs a set per
//! node. Test signers take theirs from `fixtures/pregenerated-primes.json`
//! (the `fault-injection` hook `CONCLAVE_FAULT_PREGENERATED_PRIMES`); the
//! rest of the path (sealing the pool, aux info, keygen) is the product's.
//! Test-only key material: never use it for anything else.

use std::path::PathBuf;

/// Nodes the fixture has a set for (the largest test cluster). A test
/// node takes its one set for every committee it joins (the product never
/// does: see `PrimePool`). The four sets were regrouped from the CGGMP21
/// release's eight two-prime sets.
pub const NODES: usize = 4;

/// The fixture's path.
pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pregenerated-primes.json")
}

/// The environment that gives node `i` (1-based) its own set.
pub fn env(i: usize) -> (&'static str, String) {
    assert!((1..=NODES).contains(&i), "the primes fixture has sets for node-1 to node-{NODES}");
    (conclave_enclave::fault::Hook::PregeneratedPrimes.env(), format!("{}#{}", fixture().display(), i - 1))
}

/// Writes the fixture: `NODES` sets, generated on every core.
#[test]
#[ignore = "writes the fixture (minutes of CPU); run by hand: cargo test -p conclave-tests --lib -- --ignored write_pregenerated_primes"]
fn write_pregenerated_primes() {
    let sets: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> =
            (0..NODES).map(|_| s.spawn(|| String::from_utf8(conclave_enclave::ecdsa::Primes::generate().to_bytes().to_vec()).expect("JSON"))).collect();
        workers.into_iter().map(|w| w.join().expect("generated")).collect()
    });
    std::fs::create_dir_all(fixture().parent().expect("folder")).expect("fixtures folder");
    std::fs::write(fixture(), serde_json::to_vec(&sets).expect("serialises")).expect("write the fixture");
}
