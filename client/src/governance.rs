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
        let reply = self.ask_node(node, GovernQuery { v: PROTOCOL_VERSION, nonce, ask }).await?;
        let answer = GovernAnswer::decode(&reply).map_err(|e| ClientError::BadResult(format!("{node}: {e}")))?;
        let said = answer.result.map_err(ClientError::Request)?;
        let Saying { node: said_by, nonce: answered, fact, .. } = self.roster().saying(node, &said)?;
        if said_by != *node || answered != nonce {
            return Err(ClientError::Unauthenticated(format!("{node}'s answer is not to this question (a replay)")));
        }
        Ok(fact)
    }

    /// One question on `node`'s governance subject; the answer's bytes.
    async fn ask_node(&self, node: &NodeId, query: GovernQuery) -> Result<bytes::Bytes, ClientError> {
        let query = serde_json::to_vec(&query).expect("queries serialise");
        self.request_once(govern_subject(node), query, &node.to_string()).await
    }

    /// A core NATS request and its answer's bytes, within [`GOVERN_TIMEOUT`]
    /// (`who` names the asked in errors).
    async fn request_once(&self, subject: String, payload: Vec<u8>, who: &str) -> Result<bytes::Bytes, ClientError> {
        match tokio::time::timeout(GOVERN_TIMEOUT, self.nats().request(subject, payload.into())).await {
            Ok(Ok(reply)) => Ok(reply.payload),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Err(ClientError::Nats(format!("{who} is not running"))),
            Ok(Err(e)) => Err(ClientError::Nats(format!("{who}: {e}"))),
            Err(_) => Err(ClientError::Nats(format!("{who}: no answer within {GOVERN_TIMEOUT:?}"))),
        }
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
        let reply = self.request_once(APPROVE_SUBJECT.to_string(), serde_json::to_vec(submission).expect("serialises"), "the hosts").await?;
        let receipt = ApprovalReceipt::decode(&reply).map_err(|e| ClientError::BadResult(e.to_string()))?;
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
        Ok(AuditExport { v: PROTOCOL_VERSION, exported_at_ms: crate::client::now_ms(), nodes })
    }

    async fn audit_page(&self, node: &NodeId, from_seq: u64) -> Result<Vec<conclave_proto::audit::SignedAuditEntry>, ClientError> {
        use conclave_proto::govern::AuditPage;
        // The host answers from its store: no nonce to sign over.
        let reply = self.ask_node(node, GovernQuery { v: PROTOCOL_VERSION, nonce: [0; 32], ask: GovernAsk::AuditLog { from_seq } }).await?;
        let page = AuditPage::decode(&reply).map_err(|e| ClientError::BadResult(format!("{node}: {e}")))?;
        page.result.map_err(ClientError::Request)
    }
}
