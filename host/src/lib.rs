//! The Conclave host proxy: the untrusted half of a node.
//!
//! It bridges the enclave link to NATS, keeps the sealed blobs it cannot
//! open, plans and fences requests through the registry, heartbeats
//! readiness, and serves health and metrics. It never depends on an MPC
//! crate, so it cannot hold a plaintext share (checked in CI).

pub mod approvals;
pub mod aws;
pub mod backup;
pub mod config;
pub mod coordinator;
pub mod http;
pub mod http_client;
pub mod journal;
pub mod lifecycle;
pub mod link;
pub mod metrics;
pub mod nats;
pub mod pools;
pub mod query;
pub mod quorum;
pub mod registry;
pub mod store;
pub mod view;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
