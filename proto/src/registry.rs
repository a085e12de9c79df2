//! Records in the peer registry (NATS KV buckets named in [`crate::subjects`]).
//! The registry is untrusted: these records steer routing and liveness, never
//! what an enclave accepts.

use crate::link::{Mode, NodeIdentity};
use crate::{NodeId, RequestId};
use serde::{Deserialize, Serialize};

/// A registered node (members bucket, no expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The enclave's identity.
    #[serde(flatten)]
    pub identity: NodeIdentity,
    /// The host's HTTP address for health and metrics.
    pub http: String,
    /// Unix milliseconds of the last registration.
    pub registered_at_ms: u64,
}

/// A readiness heartbeat (ready bucket; the bucket's TTL expires it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRecord {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// Who is ready.
    pub node_id: NodeId,
    /// How it keeps shares.
    pub mode: Mode,
    /// Unix milliseconds of this heartbeat.
    pub at_ms: u64,
    /// Whether the node's Paillier prime pool is filled.
    #[serde(default)]
    pub primes_ready: bool,
}

/// The fencing record of a request (sessions bucket, key = request id).
/// Created with a compare-and-set, and moved from attempt to attempt with
/// compare-and-set on its revision, so that each attempt is planned exactly
/// once and a request has at most one live attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The request.
    pub request_id: RequestId,
    /// The node that planned this attempt.
    pub coordinator: NodeId,
    /// The plan every participant of the current attempt runs.
    pub plan: crate::link::SessionPlan,
    /// Committee members that failed an earlier attempt; no later attempt
    /// chooses them.
    #[serde(default)]
    pub excluded: Vec<NodeId>,
    /// Where the request stands.
    #[serde(default)]
    pub state: SessionState,
}

/// Where a request stands in its fencing record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionState {
    /// The current attempt is running.
    #[default]
    Running,
    /// A result was published.
    Done,
    /// The request failed for good; this is its answer.
    Failed {
        /// Why.
        error: crate::RequestError,
    },
}
