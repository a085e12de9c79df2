//! NATS names: streams, subjects, KV buckets, message ids.

use crate::{NodeId, RequestId, Scheme, WalletId};

/// JetStream stream of client requests (`conclave.req.>`), with message-id
/// deduplication on the request id.
pub const REQUEST_STREAM: &str = "CONCLAVE_REQUESTS";
/// Subject for keygen requests.
pub const KEYGEN_SUBJECT: &str = "conclave.req.keygen";
/// Subject for sign requests.
pub const SIGN_SUBJECT: &str = "conclave.req.sign";
/// Reshare requests.
pub const RESHARE_SUBJECT: &str = "conclave.req.reshare";
/// A request that waited for approvals, published again by the host that
/// took an approval for it, so that every host follows it again (one that
/// restarted meanwhile, too). Message id [`resume_msg_id`].
pub const RESUME_SUBJECT: &str = "conclave.req.resume";
/// Wildcard of all request subjects.
pub const REQUEST_SUBJECTS: &str = "conclave.req.>";
/// JetStream stream of results (`conclave.res.>`), one message per request.
pub const RESULT_STREAM: &str = "CONCLAVE_RESULTS";
/// Wildcard of all result subjects.
pub const RESULT_SUBJECTS: &str = "conclave.res.>";
/// How long JetStream remembers a request id for deduplication.
pub const DEDUP_WINDOW_SECS: u64 = 24 * 3600;

/// Where clients ask the hosts about the registry
/// ([`crate::registry::Query`]; core NATS request-reply). Every host that
/// can answer does; the client takes the first answer, so a host that is
/// cut off or restarting delays nobody.
pub const QUERY_SUBJECT: &str = "conclave.query";

/// KV bucket of registered nodes.
pub const MEMBERS_BUCKET: &str = "conclave-members";
/// KV bucket of readiness heartbeats (entries expire).
pub const READY_BUCKET: &str = "conclave-ready";
/// KV bucket of public wallet records ([`crate::result::KeygenResult`]),
/// keyed by [`wallet_key`], so that any node can route a sign request or
/// answer `unknown_wallet`.
pub const WALLETS_BUCKET: &str = "conclave-wallets";
/// KV bucket of per-request fencing records.
pub const SESSIONS_BUCKET: &str = "conclave-sessions";
/// Presignature pools: per [`crate::PoolId`], how many were made and how
/// many handed out ([`crate::registry::PoolRecord`]). No expiry.
pub const POOLS_BUCKET: &str = "conclave-pools";

/// Where a node's host takes presignature plans ([`crate::link::PresignPlan`]).
pub fn presign_subject(node: &NodeId) -> String {
    format!("conclave.presign.{node}")
}

/// Where the result of `request` is published.
pub fn result_subject(request: &RequestId) -> String {
    format!("conclave.res.{request}")
}

/// The JetStream message id of the result of `request` (deduplicates results
/// reported by several nodes).
pub fn result_msg_id(request: &RequestId) -> String {
    format!("result-{request}")
}

/// The JetStream message id of the `n`th publication of `request` on
/// [`RESUME_SUBJECT`].
pub fn resume_msg_id(request: &RequestId, n: usize) -> String {
    format!("resume-{request}-{n}")
}

/// The JetStream message id of a notice that `request` waits for
/// approvals, after its attempt `attempt`.
pub fn pending_msg_id(request: &RequestId, attempt: u32) -> String {
    format!("pending-{request}-{attempt}")
}

/// The key of a waiting request ([`crate::approvals::PendingRequest`]) in
/// [`SESSIONS_BUCKET`].
pub fn pending_key(request: &RequestId) -> String {
    format!("{request}.pending")
}

/// Where `sender` publishes envelopes for `recipient` (core NATS). The
/// sender is in the subject so that NATS permissions can let each node
/// publish only as itself (`conclave.p2p.*.<node>`).
pub fn p2p_subject(recipient: &NodeId, sender: &NodeId) -> String {
    format!("conclave.p2p.{recipient}.{sender}")
}

/// Every envelope for `node`, whoever sent it.
pub fn p2p_inbox(node: &NodeId) -> String {
    format!("conclave.p2p.{node}.*")
}

/// The sender named by an envelope's subject.
pub fn p2p_sender(subject: &str) -> Option<&str> {
    subject.strip_prefix("conclave.p2p.")?.split_once('.').map(|(_, sender)| sender)
}

/// The key of a wallet's record in [`WALLETS_BUCKET`].
pub fn wallet_key(wallet: &WalletId, scheme: Scheme) -> String {
    format!("{wallet}.{scheme}")
}
