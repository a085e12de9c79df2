//! The Conclave wire contract.
//!
//! Everything that crosses a trust boundary is defined here and nowhere else:
//! client requests and results (JSON over NATS), host<->enclave link frames,
//! node<->node envelopes, registry records, NATS subject names, and the size
//! limits that every decoder enforces. Both sides of a boundary depend on this
//! crate, so they cannot disagree about a field.
//!
//! This crate holds no cryptography: it defines the exact bytes that are
//! signed or bound as associated data (`*_bytes` / `aad` functions), and the
//! crates on either side sign and verify them.
#![forbid(unused_crate_dependencies)]

pub mod approvals;
pub mod attestation;
pub mod audit;
pub mod backup;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod eth;
pub mod govern;
pub mod ids;
pub mod link;
#[cfg(feature = "nats")]
pub mod nats_access;
pub mod policy;
pub mod presign;
pub mod registry;
pub mod request;
pub mod result;
pub mod run_key;
pub mod sealed;
pub mod statement;
pub mod store;
pub mod subjects;
#[cfg(feature = "tokio")]
pub mod transport;
pub mod xpub;

pub use error::{ErrorCode, RequestError};
pub use ids::{CommitteeId, IdError, NodeId, PoolId, RequestId, Scheme, SessionId, WalletId};

/// Version of every wire format in this crate. A peer that speaks another
/// version is refused with [`ErrorCode::UnsupportedVersion`] rather than
/// half-understood.
pub const PROTOCOL_VERSION: u16 = 1;
