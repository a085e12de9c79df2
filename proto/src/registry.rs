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
    /// The image measurement (PCR0, hex; in dev mode the dev measurement)
    /// this node's signer verified in each peer's attestation document.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attested_peers: std::collections::BTreeMap<NodeId, String>,
    /// Unused presignatures of the pools this node keeps (its keeper's last
    /// look), by `<wallet>/v<version>/<signer>+<signer>`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub presign_pools: std::collections::BTreeMap<String, u32>,
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

/// A presignature pool's counters, as the pool's keeper (the host of the
/// set's first member) last copied them; never lowered, changed only by
/// compare-and-set. Signers trust none of it (a wrong count costs a fallback to
/// the full protocol, never a presignature used twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Presignatures 1..=made were stored by every signer of the set.
    pub made: u32,
    /// Presignatures 1..=used were handed to sign requests.
    pub used: u32,
}

/// Where a request stands in its fencing record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionState {
    /// The current attempt is running.
    #[default]
    Running,
    /// The host that created the record is choosing the attempt's
    /// presignature; nobody starts until it is `Running`. Written only by
    /// releases before pooled requests were planned by their pool's
    /// keeper (which writes the record `Running`, its presignature
    /// chosen); read so that a cluster part-way through an upgrade waits
    /// for such a record to move on.
    Planning,
    /// The signers want approvals (a policy rule); the request waits
    /// until enough arrive (each moves it to a new attempt) or the plan's
    /// deadline, the approval deadline, passes (`approval_expired`).
    Pending {
        /// What the signers counted and need.
        approvals: crate::error::ApprovalStatus,
    },
    /// A result was published.
    Done,
    /// The request failed for good; this is its answer.
    Failed {
        /// Why.
        error: crate::RequestError,
    },
}

/// A question a client asks the cluster about the registry (core NATS
/// request on [`crate::subjects::QUERY_SUBJECT`]; the first host to answer
/// wins). Clients read the registry through the hosts, so they
/// work the same whichever backend (NATS KV or Consul) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// What is asked.
    #[serde(flatten)]
    pub ask: Ask,
}

/// What a [`Query`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Ask {
    /// Every registered node and its readiness.
    Nodes,
    /// A wallet's public record.
    Wallet {
        /// The wallet.
        wallet: crate::WalletId,
        /// Its scheme.
        scheme: crate::Scheme,
    },
    /// Wallet records: of one scheme, or all; held by exactly this
    /// committee (in any order: what to reshare when the committee
    /// changes), or by any.
    Wallets {
        /// The scheme, or any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<crate::Scheme>,
        /// The committee, or any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        committee: Option<Vec<crate::NodeId>>,
    },
    /// A request that waits for approvals: what it asks and who approved.
    Pending {
        /// The request.
        request_id: RequestId,
    },
}

/// The largest query a host reads.
pub const MAX_QUERY_BYTES: usize = 4 * 1024;
/// The largest answer a client reads (a node listing of the largest
/// committee, or a wallet record).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A host's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Registered nodes, sorted by id, as the answering host sees them (a
    /// host answers this only while its view is current).
    Nodes {
        /// The nodes.
        nodes: Vec<NodeEntry>,
    },
    /// The wallet's record (its committee's signed statement), or none.
    Wallet {
        /// The record.
        record: Option<crate::statement::Endorsed>,
    },
    /// The wallets asked for, sorted by wallet id and scheme.
    Wallets {
        /// Their records.
        records: Vec<crate::statement::Endorsed>,
    },
    /// The request and its approvals (the client shows the signed body it
    /// hashes itself, never what a host says it contains), and where it
    /// stands if it waits; none if no request of that id waits or waited.
    Pending {
        /// The request and the approvals gathered.
        pending: Option<crate::approvals::PendingRequest>,
        /// What the signers last counted and need, while it waits.
        status: Option<crate::error::ApprovalStatus>,
    },
    /// The query could not be answered.
    Error {
        /// Why.
        error: crate::RequestError,
    },
}

/// One node in an [`Answer::Nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node.
    pub node_id: NodeId,
    /// Its registration.
    pub record: NodeRecord,
    /// Its latest heartbeat, if it counts as ready.
    pub ready: Option<ReadyRecord>,
}

impl Query {
    /// Decodes a query from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Query, crate::codec::DecodeError> {
        let query: Query = crate::codec::decode_json("query", bytes, MAX_QUERY_BYTES)?;
        crate::codec::check_version("query", query.v)?;
        Ok(query)
    }
}

impl Answer {
    /// Decodes an answer from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Answer, crate::codec::DecodeError> {
        crate::codec::decode_json("answer", bytes, MAX_ANSWER_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_versioned() {
        let q = Query { v: crate::PROTOCOL_VERSION, ask: Ask::Nodes };
        let bytes = serde_json::to_vec(&q).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), r#"{"v":1,"ask":"nodes"}"#);
        assert_eq!(Query::decode(&bytes).unwrap(), q);
        assert!(matches!(Query::decode(br#"{"v":9,"ask":"nodes"}"#), Err(crate::codec::DecodeError::Version { got: 9, .. })));
        assert!(matches!(Query::decode(br#"{"v":1,"ask":"keys"}"#), Err(crate::codec::DecodeError::Json { .. })));
        let big = vec![b' '; MAX_QUERY_BYTES + 1];
        assert!(matches!(Query::decode(&big), Err(crate::codec::DecodeError::TooLarge { .. })));
    }
}
