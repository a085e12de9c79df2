//! The one error type that crosses the wire. Clients match on [`ErrorCode`];
//! the reason is for people and is never parsed.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every way a request can fail, as seen by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is not signed by a configured initiator key, or the
    /// signature does not verify.
    Unauthorized,
    /// The request is not valid JSON of the documented shape, or a field is
    /// out of range.
    Malformed,
    /// The request exceeds the size limit.
    TooLarge,
    /// The request speaks a protocol version this cluster does not.
    UnsupportedVersion,
    /// The request is older than the signer accepts, or dated in the future.
    Expired,
    /// No key is stored for this wallet and scheme.
    UnknownWallet,
    /// A key already exists for this wallet and scheme.
    WalletExists,
    /// The signer's share is of another key version than the request
    /// names: the wallet was reshared, or a host served an old share.
    VersionMismatch,
    /// A sign request names signers that are not exactly threshold-many
    /// members of the wallet's committee.
    InvalidSigners,
    /// A reshare request names another key (public key, xpub, version,
    /// committee or threshold) than the wallet's current one: it was
    /// reshared since the client read it.
    KeyMismatch,
    /// The request asks for something this scheme or build cannot do.
    Unsupported,
    /// Fewer than the threshold of the wallet's committee are ready.
    InsufficientPeers,
    /// A participant went away during the session.
    PeerUnavailable,
    /// A participant's attestation document did not pass this signer's
    /// checks; `blamed` names it, the reason the failed check.
    PeerUnattested,
    /// The session did not finish before its deadline.
    Timeout,
    /// The protocol aborted; `blamed` names the misbehaving party when the
    /// protocol identifies one.
    ProtocolAbort,
    /// A message from a peer failed authentication or decryption.
    BadEnvelope,
    /// A sealed share could not be stored, found or opened.
    Storage,
    /// A bug or an unexpected state; the reason says where.
    Internal,
    /// The wallet's ECDSA committee has no aux info of this release (it was
    /// made by the CGGMP21 release): the hosts run one attempt in which
    /// every committee member makes it again, then sign. A client sees it
    /// only when not every member is ready to take part.
    AuxInfoStale,
    /// The committee's aux info was made again; the next attempt signs.
    /// Between signers and hosts only: never a request's result.
    AuxInfoRenewed,
    /// The presignature a plan names cannot serve here (missing, used,
    /// made for another set, or the payload is not a message): nothing
    /// left this signer, and the next attempt runs the full protocol.
    /// Between signers and hosts only: never a request's result.
    PresignatureUnavailable,
    /// The wallet's policy refuses the request; `rule` names the rule that
    /// denied it (absent: a rule's condition failed and no other allowed it).
    PolicyDenied,
    /// The request waits for approvals (`approvals` says how many, from
    /// whom, until when). Between signers and hosts, and in the pending
    /// status a client reads; never a request's final result.
    ApprovalRequired,
    /// The request's approval window passed before enough approvals came.
    ApprovalExpired,
    /// No request of that id waits (an approval handed in for it).
    UnknownRequest,
    /// A signer has more ECDSA work queued than it can finish before the
    /// request's deadline: nothing ran; ask again later, or with a longer
    /// `timeout_ms`.
    Overloaded,
}

impl ErrorCode {
    /// Every code (metrics start each at zero).
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::Unauthorized,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Expired,
        ErrorCode::UnknownWallet,
        ErrorCode::WalletExists,
        ErrorCode::VersionMismatch,
        ErrorCode::InvalidSigners,
        ErrorCode::KeyMismatch,
        ErrorCode::Unsupported,
        ErrorCode::InsufficientPeers,
        ErrorCode::PeerUnavailable,
        ErrorCode::PeerUnattested,
        ErrorCode::Timeout,
        ErrorCode::ProtocolAbort,
        ErrorCode::BadEnvelope,
        ErrorCode::Storage,
        ErrorCode::Internal,
        ErrorCode::AuxInfoStale,
        ErrorCode::AuxInfoRenewed,
        ErrorCode::PresignatureUnavailable,
        ErrorCode::PolicyDenied,
        ErrorCode::ApprovalRequired,
        ErrorCode::ApprovalExpired,
        ErrorCode::UnknownRequest,
        ErrorCode::Overloaded,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Expired => "expired",
            ErrorCode::UnknownWallet => "unknown_wallet",
            ErrorCode::WalletExists => "wallet_exists",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::InvalidSigners => "invalid_signers",
            ErrorCode::KeyMismatch => "key_mismatch",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::InsufficientPeers => "insufficient_peers",
            ErrorCode::PeerUnavailable => "peer_unavailable",
            ErrorCode::PeerUnattested => "peer_unattested",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ProtocolAbort => "protocol_abort",
            ErrorCode::BadEnvelope => "bad_envelope",
            ErrorCode::Storage => "storage",
            ErrorCode::Internal => "internal",
            ErrorCode::AuxInfoStale => "aux_info_stale",
            ErrorCode::AuxInfoRenewed => "aux_info_renewed",
            ErrorCode::PresignatureUnavailable => "presignature_unavailable",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::ApprovalRequired => "approval_required",
            ErrorCode::ApprovalExpired => "approval_expired",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request: what went wrong, why, and who is to blame if anyone is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct RequestError {
    /// What went wrong; match on this.
    pub code: ErrorCode,
    /// Why, for people.
    pub reason: String,
    /// Parties the protocol identified as misbehaving.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blamed: Vec<NodeId>,
    /// The policy rule that decided (`policy_denied`, `approval_required`,
    /// `approval_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What approvals the request waits for (`approval_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Box<ApprovalStatus>>,
}

/// Where a request that waits for approvals stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalStatus {
    /// The policy rule that wants them.
    pub rule: String,
    /// The approver group.
    pub group: String,
    /// How many approvals the rule requires.
    pub required: u16,
    /// The approvers counted so far.
    pub approved: Vec<crate::policy::Ed25519Key>,
    /// Unix ms after which the request fails with `approval_expired`.
    pub until_ms: u64,
}

impl RequestError {
    /// An error that blames nobody.
    pub fn new(code: ErrorCode, reason: impl fmt::Display) -> Self {
        RequestError { code, reason: reason.to_string(), blamed: Vec::new(), rule: None, approvals: None }
    }

    /// Names the policy rule that decided.
    pub fn by_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Names the misbehaving parties.
    pub fn blaming(mut self, blamed: Vec<NodeId>) -> Self {
        self.blamed = blamed;
        self
    }
}

impl From<crate::codec::DecodeError> for RequestError {
    fn from(e: crate::codec::DecodeError) -> Self {
        RequestError::new(e.code(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_documented_names() {
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&format!("\"{}\"", code.as_str())).unwrap(), code);
            assert!(names.insert(code.as_str()), "{code} listed once");
        }
    }
}
