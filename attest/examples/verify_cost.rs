//! What verifying one attestation document costs: the first verification in
//! a process (cold: loading the AWS root included) and the median of the
//! following ones (warm). Prints figures; asserts nothing.
//!
//! `cargo run --release -p conclave-attest --example verify_cost [-- COUNT]`

use conclave_attest::{verify, Policy, TrustedRoot};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

const PROD: &[u8] = include_bytes!("../tests/vectors/prod-2022-10-13.cose");
const PROD_TIMESTAMP_MS: u64 = 1_665_651_482_136;

fn policy() -> Policy {
    Policy { root: TrustedRoot::aws_nitro(), pcrs: BTreeMap::new(), nonce: None, at: UNIX_EPOCH + Duration::from_millis(PROD_TIMESTAMP_MS), allow_debug: false }
}

fn main() {
    let count: usize = std::env::args().nth(1).map_or(200, |n| n.parse().expect("COUNT is a number"));
    let start = Instant::now();
    verify(PROD, &policy()).expect("the production document verifies at its timestamp");
    let cold = start.elapsed();

    let policy = policy();
    let mut warm: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            verify(PROD, &policy).expect("verifies");
            start.elapsed()
        })
        .collect();
    warm.sort();
    // A forged nonce (the payload's last field, just before the 96-byte
    // signature): refused after one ECDSA verification, not six.
    let mut forged = PROD.to_vec();
    forged[PROD.len() - 120] ^= 1;
    assert_eq!(verify(&forged, &policy).unwrap_err().check(), "signature");
    let mut refused: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            verify(&forged, &policy).expect_err("a forged document is refused");
            start.elapsed()
        })
        .collect();
    refused.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("document {} bytes, 5 certificate signatures + 1 document signature (ECDSA P-384)", PROD.len());
    println!("cold (first in process, root loaded): {:.0} us", us(cold));
    println!(
        "warm over {count}: p50 {:.0} us, p99 {:.0} us, {:.0} verifications/s",
        us(warm[count / 2]),
        us(warm[count * 99 / 100]),
        1e6 / us(warm[count / 2])
    );
    println!("forged payload refused (signature): p50 {:.0} us", us(refused[count / 2]));
}
