//! Approving a request that waits for approvals: the approver's client
//! reads the request (its exact signed body) from the hosts, shows it,
//! signs the body's hash ([`crate::policy::Approval`]) and hands the
//! approval to any host on [`APPROVE_SUBJECT`]; hosts keep approvals with
//! the request ([`PendingRequest`]) and start a new attempt with them.
//! Hosts judge nothing: the signers check every approval themselves.

use crate::codec::{self, DecodeError};
use crate::policy::{Approval, MAX_LIST};
use crate::request::SignedRequest;
use crate::{RequestError, RequestId};
use serde::{Deserialize, Serialize};

/// Where approvals are handed in (core NATS request; every host may answer).
pub const APPROVE_SUBJECT: &str = "conclave.approve";
/// Largest submission or answer.
pub const MAX_APPROVAL_BYTES: usize = 4 * 1024;

/// A request that waits for approvals, and those gathered (sessions
/// bucket, key [`crate::subjects::pending_key`]). Untrusted: signers check
/// the request and every approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The request, as the initiator signed it.
    pub request: SignedRequest,
    /// At most one per approver, at most [`MAX_LIST`].
    pub approvals: Vec<Approval>,
}

impl PendingRequest {
    /// Adds `approval` (replacing an earlier one by the same approver);
    /// refuses it when the request holds as many as any group can need.
    pub fn add(&mut self, approval: Approval) -> Result<(), RequestError> {
        self.approvals.retain(|a| a.approver != approval.approver);
        if self.approvals.len() >= MAX_LIST {
            return Err(RequestError::new(crate::ErrorCode::TooLarge, format!("the request holds {MAX_LIST} approvals already")));
        }
        self.approvals.push(approval);
        Ok(())
    }
}

/// An approval handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSubmission {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The request it approves.
    pub request_id: RequestId,
    /// The approval.
    pub approval: Approval,
}

impl ApprovalSubmission {
    /// Decodes a submission from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<ApprovalSubmission, DecodeError> {
        let s: ApprovalSubmission = codec::decode_json("approval", bytes, MAX_APPROVAL_BYTES)?;
        codec::check_version("approval", s.v)?;
        codec::check_version("approval", s.approval.v)?;
        Ok(s)
    }
}

/// A host's answer to a submission: kept (how many the request holds), or
/// why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalReceipt {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// Approvals the request holds now, or why this one was refused.
    pub result: Result<u16, RequestError>,
}

impl ApprovalReceipt {
    /// Decodes an answer from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<ApprovalReceipt, DecodeError> {
        let r: ApprovalReceipt = codec::decode_json("approval receipt", bytes, MAX_APPROVAL_BYTES)?;
        codec::check_version("approval receipt", r.v)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Ed25519Key;

    fn approval(by: u8) -> Approval {
        Approval { v: 1, request: [1; 32], approver: Ed25519Key([by; 32]), signature: [0; 64] }
    }

    #[test]
    fn one_approval_per_approver_and_a_bounded_number() {
        let mut p = PendingRequest { v: 1, request: SignedRequest { v: 1, body: "{}".into(), initiator: [0; 32], signature: [0; 64] }, approvals: vec![] };
        p.add(approval(1)).unwrap();
        p.add(approval(1)).unwrap();
        assert_eq!(p.approvals.len(), 1);
        for by in 2..=MAX_LIST as u8 {
            p.add(approval(by)).unwrap();
        }
        assert_eq!(p.add(approval(200)).unwrap_err().code, crate::ErrorCode::TooLarge);
    }

    #[test]
    fn submissions_are_bounded_and_versioned() {
        let s = ApprovalSubmission { v: 1, request_id: RequestId::new("r").unwrap(), approval: approval(1) };
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(ApprovalSubmission::decode(&json).unwrap(), s);
        let other = ApprovalSubmission { approval: Approval { v: 2, ..approval(1) }, ..s.clone() };
        assert!(ApprovalSubmission::decode(&serde_json::to_vec(&other).unwrap()).is_err());
        assert!(ApprovalSubmission::decode(&vec![b' '; MAX_APPROVAL_BYTES + 1]).is_err());
    }
}
