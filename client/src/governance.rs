//! Asking each signer about its policy, and submitting a policy to every
//! signer. Answers count only when signed by the pinned node over this
//! client's fresh nonce, so a host can neither forge nor replay one.

use crate::{Client, ClientError};
use conclave_proto::govern::{govern_subject, Fact, GovernAnswer, GovernAsk, GovernQuery, Saying};
use conclave_proto::policy::{AdminSignature, Ed25519Key, SignedPolicy};
use conclave_proto::{NodeId, PROTOCOL_VERSION};
use ed25519_dalek::Signer;
use rand_core::RngCore;

/// How long one signer is given to answer.
const GOVERN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// An admin's signature on a policy document (`conclave policy sign`).
pub fn sign_policy(document: &str, admin: &ed25519_dalek::SigningKey) -> AdminSignature {
    AdminSignature { admin: Ed25519Key(admin.verifying_key().to_bytes()), signature: admin.sign(&SignedPolicy::signing_bytes(document)).to_bytes() }
}

impl Client {
    /// Asks every pinned node's signer; one answer (or failure) per node,
    /// in roster order.
    pub async fn govern_all(&self, ask: GovernAsk) -> Vec<(NodeId, Result<Fact, ClientError>)> {
        let nodes: Vec<NodeId> = self.roster().nodes().cloned().collect();
        let asks = nodes.iter().map(|node| self.govern(node, ask.clone()));
        nodes.iter().cloned().zip(futures::future::join_all(asks).await).collect()
    }

    /// Asks `node`'s signer, and checks that the answer is its, signed over
    /// this question's nonce.
    pub async fn govern(&self, node: &NodeId, ask: GovernAsk) -> Result<Fact, ClientError> {
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let query = serde_json::to_vec(&GovernQuery { v: PROTOCOL_VERSION, nonce, ask }).expect("queries serialise");
        let reply = match tokio::time::timeout(GOVERN_TIMEOUT, self.nats().request(govern_subject(node), query.into())).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Err(ClientError::Nats(format!("{node} is not running"))),
            Ok(Err(e)) => return Err(ClientError::Nats(format!("{node}: {e}"))),
            Err(_) => return Err(ClientError::Nats(format!("{node}: no answer within {GOVERN_TIMEOUT:?}"))),
        };
        let answer = GovernAnswer::decode(&reply.payload).map_err(|e| ClientError::BadResult(format!("{node}: {e}")))?;
        let said = answer.result.map_err(ClientError::Request)?;
        let Saying { node: said_by, nonce: answered, fact, .. } = self.roster().saying(node, &said)?;
        if said_by != *node || answered != nonce {
            return Err(ClientError::Unauthenticated(format!("{node}'s answer is not to this question (a replay)")));
        }
        Ok(fact)
    }
}

/// A request waiting for approvals, as an approver is shown it: the body
/// is the exact string the initiator signed, and its hash is computed
/// here, so what is approved is what is shown.
#[derive(Debug, Clone)]
pub struct PendingView {
    /// The request as signed.
    pub request: conclave_proto::request::SignedRequest,
    /// Its body, parsed.
    pub body: conclave_proto::request::RequestBody,
    /// SHA-256 of the body: what an approval signs.
    pub hash: [u8; 32],
    /// Approvals the hosts hold for it.
    pub approvals: usize,
    /// What the signers last said it needs, while it waits.
    pub status: Option<conclave_proto::error::ApprovalStatus>,
}

impl Client {
    /// The request `request_id` that waits (or waited) for approvals.
    pub async fn pending(&self, request_id: &conclave_proto::RequestId) -> Result<PendingView, ClientError> {
        use conclave_proto::registry::{Answer, Ask};
        match self.ask(Ask::Pending { request_id: request_id.clone() }).await? {
            Answer::Pending { pending: Some(pending), status } => {
                let body = pending.request.parse_body().map_err(|e| ClientError::BadResult(format!("the waiting request: {e}")))?;
                if body.request_id() != request_id {
                    return Err(ClientError::BadResult(format!("asked for {request_id}, shown {}", body.request_id())));
                }
                Ok(PendingView { hash: pending.request.body_hash(), request: pending.request, body, approvals: pending.approvals.len(), status })
            }
            Answer::Pending { pending: None, .. } => Err(ClientError::Request(conclave_proto::RequestError::new(
                conclave_proto::ErrorCode::UnknownRequest,
                format!("no request {request_id} waits for approvals"),
            ))),
            Answer::Error { error } => Err(ClientError::Request(error)),
            other => Err(ClientError::BadResult(format!("a pending request answered with {other:?}"))),
        }
    }

    /// Approves `pending` with `approver`'s key: signs the hash of the body
    /// shown and hands the approval to the hosts. Returns how many
    /// approvals the request holds now.
    pub async fn approve(&self, pending: &PendingView, approver: &ed25519_dalek::SigningKey) -> Result<u16, ClientError> {
        use conclave_proto::approvals::ApprovalSubmission;
        use conclave_proto::policy::Approval;
        let approval = Approval {
            v: PROTOCOL_VERSION,
            request: pending.hash,
            approver: Ed25519Key(approver.verifying_key().to_bytes()),
            signature: approver.sign(&Approval::signing_bytes(&pending.hash)).to_bytes(),
        };
        self.submit_approval(&ApprovalSubmission { v: PROTOCOL_VERSION, request_id: pending.body.request_id().clone(), approval }).await
    }

    /// Hands an approval to the hosts (the first to answer is taken).
    pub async fn submit_approval(&self, submission: &conclave_proto::approvals::ApprovalSubmission) -> Result<u16, ClientError> {
        use conclave_proto::approvals::{ApprovalReceipt, APPROVE_SUBJECT};
        let bytes = serde_json::to_vec(submission).expect("serialises");
        let reply = match tokio::time::timeout(GOVERN_TIMEOUT, self.nats().request(APPROVE_SUBJECT, bytes.into())).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(ClientError::Nats(e.to_string())),
            Err(_) => return Err(ClientError::Nats(format!("no host answered within {GOVERN_TIMEOUT:?}"))),
        };
        let receipt = ApprovalReceipt::decode(&reply.payload).map_err(|e| ClientError::BadResult(e.to_string()))?;
        receipt.result.map_err(ClientError::Request)
    }
}

impl Client {
    /// Every pinned node's audit trail: first a head signed over a fresh
    /// nonce (so a host cannot pass off an older one), then the entries
    /// its host stores, from the first; checked by [`crate::Roster::check_audit`].
    pub async fn audit_export(&self) -> Result<conclave_proto::audit::AuditExport, ClientError> {
        use conclave_proto::audit::{AuditExport, NodeLog};
        let mut nodes = Vec::new();
        for node in self.roster().nodes().cloned().collect::<Vec<_>>() {
            let head = match self.govern(&node, GovernAsk::AuditHead).await? {
                Fact::AuditHead { head } => head,
                other => return Err(ClientError::BadResult(format!("{node} answered an audit head with {other:?}"))),
            };
            let mut entries: Vec<conclave_proto::audit::SignedAuditEntry> = Vec::new();
            loop {
                // Paging by the last entry's number (unchecked here: the
                // whole trail is checked by `audit verify`).
                let next = match entries.last() {
                    None => 1,
                    Some(last) => match last.parse() {
                        Ok(entry) => entry.seq.get() + 1,
                        Err(_) => break,
                    },
                };
                let page = self.audit_page(&node, next).await?;
                if page.is_empty() {
                    break;
                }
                entries.extend(page);
            }
            nodes.push(NodeLog { node, entries, head: Some(head) });
        }
        let exported_at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ok(AuditExport { v: PROTOCOL_VERSION, exported_at_ms, nodes })
    }

    async fn audit_page(&self, node: &NodeId, from_seq: u64) -> Result<Vec<conclave_proto::audit::SignedAuditEntry>, ClientError> {
        use conclave_proto::govern::AuditPage;
        let query = serde_json::to_vec(&GovernQuery { v: PROTOCOL_VERSION, nonce: [0; 32], ask: GovernAsk::AuditLog { from_seq } }).expect("serialises");
        let reply = match tokio::time::timeout(GOVERN_TIMEOUT, self.nats().request(govern_subject(node), query.into())).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(ClientError::Nats(format!("{node}: {e}"))),
            Err(_) => return Err(ClientError::Nats(format!("{node}: no answer within {GOVERN_TIMEOUT:?}"))),
        };
        let page = AuditPage::decode(&reply.payload).map_err(|e| ClientError::BadResult(format!("{node}: {e}")))?;
        page.result.map_err(ClientError::Request)
    }
}
