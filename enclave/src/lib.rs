//! The Conclave signer.
//!
//! This crate is the trusted side of a node: it alone unseals shares, runs
//! protocol rounds, holds the node's identity keys, and decides whether a
//! request is authorised. Everything it receives comes through the host over
//! the link and is treated as hostile (see `../shared/DESIGN.md`).
//!
//! Layout, by boundary:
//! - [`link`]: the server end of the host<->enclave link and the dispatcher.
//! - [`policy`]: what makes a request authorised.
//! - [`session`]: running one protocol over the end-to-end [`channel`].
//! - [`ecdsa`] (the only module that knows CGGMP21) and [`eddsa`] (FROST).
//! - [`reshare`]: moving a key to a new committee (protocol core).
//! - [`seal`], [`identity`], [`primes`]: secrets at rest and their sources;
//!   [`hsm`]: the PKCS#11 token that roots them in `hsm` mode.

pub mod attestation;
pub mod broadcast;
pub mod channel;
pub mod config;
pub mod custody;
pub mod ecdsa;
pub mod eddsa;
pub mod fault;
pub mod floor;
pub mod hsm;
pub mod identity;
pub mod key_shares;
pub mod kms;
pub mod link;
pub mod nitro;
pub mod policy;
pub mod primes;
pub mod reseal;
pub mod reshare;
pub mod seal;
pub mod service;
pub mod session;
pub mod share;
pub mod turns;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
