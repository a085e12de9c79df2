//! Rust SDK for Conclave clusters, and the `conclave` CLI (`main.rs`).
//!
//! [`Client`] signs requests with the initiator key, publishes them on the
//! request stream, waits for their results, and verifies every signature
//! before returning it. The wire format it speaks is documented in the
//! README for clients in other languages.

pub mod client;
pub mod config;
pub mod error;
pub mod governance;
pub mod trust;
pub mod verify;

pub use client::{Client, NodeStatus, Status, WalletListing};
pub use config::ClientConfig;
pub use error::ClientError;
pub use trust::{Roster, RosterError};
