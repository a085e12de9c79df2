//! Requests that wait for approvals, on this host: kept with their
//! approvals in the registry (`<request>.pending`), so that they survive a
//! restart of any node; each approval handed in starts a new attempt with
//! every approval gathered, and is published again on the request stream
//! so that every host (one that restarted too) follows it. The host judges
//! nothing: the signers count the approvals, and a request that still
//! lacks some comes back waiting.

use crate::coordinator::Host;
use crate::lifecycle::{encode, Followed, Phase};
use crate::registry::{Bucket, RegistryError};
use conclave_proto::approvals::{ApprovalReceipt, ApprovalSubmission, PendingRequest, APPROVE_SUBJECT};
use conclave_proto::error::ApprovalStatus;
use conclave_proto::link::SessionPlan;
use conclave_proto::registry::{Answer, SessionRecord, SessionState};
use conclave_proto::request::SignedRequest;
use conclave_proto::result::{Outcome, RequestResult};
use conclave_proto::subjects::{pending_key, pending_msg_id, result_subject, resume_msg_id, RESUME_SUBJECT};
use conclave_proto::{ErrorCode, RequestError, RequestId, PROTOCOL_VERSION};
use std::sync::Arc;

/// Compare-and-set tries on a pending record that other hosts also change.
const CAS_TRIES: usize = 10;

impl Host {
    /// The signers want approvals for the attempt that just ended: keep the
    /// request with its approvals, mark it waiting until the approval
    /// deadline, and tell the client.
    pub(crate) async fn await_approvals(
        &self,
        id: &RequestId,
        revision: u64,
        record: &SessionRecord,
        request: &SignedRequest,
        error: RequestError,
        req: &Followed,
    ) {
        let status = match &error.approvals {
            Some(status) => (**status).clone(),
            None => return self.fail(id, revision, record, RequestError::new(ErrorCode::Internal, "approvals wanted, but not said which"), req).await,
        };
        let pending = PendingRequest { v: PROTOCOL_VERSION, request: request.clone(), approvals: record.plan.approvals.clone() };
        // Kept from an earlier attempt if it exists: it holds the approvals.
        let _ = self.registry.create(Bucket::Sessions, &pending_key(id), serde_json::to_vec(&pending).expect("serialises").into()).await;
        let waiting = SessionRecord {
            state: SessionState::Pending { approvals: status.clone() },
            plan: SessionPlan { deadline_ms: status.until_ms, ..record.plan.clone() },
            ..record.clone()
        };
        if self.registry.update(Bucket::Sessions, id.as_str(), encode(&waiting), revision).await.is_err() {
            return;
        }
        self.transition(req, Phase::Pending, Some(&record.plan), format!("{} of {} approvals from {}", status.approved.len(), status.required, status.group));
        self.metrics.inc("conclave_results_total", ErrorCode::ApprovalRequired.as_str());
        let notice = RequestResult { v: PROTOCOL_VERSION, request_id: id.clone(), reported_by: self.me().clone(), outcome: Outcome::Error { error } };
        if let Err(e) = self.nats.publish_once(result_subject(id), pending_msg_id(id, record.plan.attempt), &notice).await {
            tracing::warn!(request = %id, error = %e, "cannot publish the pending notice");
        }
        // Approvals that came while the attempt ran are not in its plan.
        if let Err(e) = self.resume(id).await {
            tracing::warn!(request = %id, error = %e, "cannot resume the request");
        }
    }

    /// Starts a new attempt of a waiting request with every approval
    /// gathered, if it has approvals its last attempt did not.
    async fn resume(&self, id: &RequestId) -> Result<(), RegistryError> {
        let Some((_, pending)) = self.pending_record(id).await? else {
            return Ok(());
        };
        let Some((revision, record)) = self.session_record(id).await? else {
            return Ok(());
        };
        let SessionState::Pending { .. } = record.state else {
            return Ok(());
        };
        if pending.approvals.iter().all(|a| record.plan.approvals.contains(a)) {
            return Ok(());
        }
        let plan = SessionPlan {
            attempt: record.plan.attempt + 1,
            deadline_ms: crate::now_ms() + self.config.sign_deadline.as_millis() as u64,
            approvals: pending.approvals.clone(),
            ..record.plan.clone()
        };
        let attempt = plan.attempt;
        let next = SessionRecord { coordinator: self.me().clone(), plan, state: SessionState::Running, ..record };
        // Lost: another host moved it first, with what it read.
        if self.registry.update(Bucket::Sessions, id.as_str(), encode(&next), revision).await.is_err() {
            return Ok(());
        }
        tracing::info!(request = %id, attempt, approvals = pending.approvals.len(), "a waiting request resumes with new approvals");
        if let Err(e) = self.nats.publish_once(RESUME_SUBJECT.to_string(), resume_msg_id(id, attempt as usize), &pending.request).await {
            tracing::warn!(request = %id, error = %e, "cannot publish the resumed request");
        }
        Ok(())
    }

    /// Keeps an approval with its request and resumes the request.
    async fn take_approval(&self, submission: ApprovalSubmission) -> Result<u16, RequestError> {
        let id = &submission.request_id;
        let storage = |e: RegistryError| RequestError::new(ErrorCode::Storage, e.to_string());
        for _ in 0..CAS_TRIES {
            let Some((revision, mut pending)) = self.pending_record(id).await.map_err(storage)? else {
                return Err(RequestError::new(ErrorCode::UnknownRequest, format!("no request {id} waits for approvals")));
            };
            if submission.approval.request != pending.request.body_hash() {
                return Err(RequestError::new(ErrorCode::Unauthorized, format!("the approval is for another request than {id}")));
            }
            pending.add(submission.approval.clone())?;
            let value = serde_json::to_vec(&pending).expect("serialises").into();
            match self.registry.update(Bucket::Sessions, &pending_key(id), value, revision).await {
                Ok(_) => {
                    self.resume(id).await.map_err(storage)?;
                    return Ok(pending.approvals.len() as u16);
                }
                Err(RegistryError::Conflict { .. }) => continue,
                Err(e) => return Err(storage(e)),
            }
        }
        Err(RequestError::new(ErrorCode::Storage, format!("the pending record of {id} kept changing")))
    }

    /// Subscribes to approvals.
    pub async fn subscribe_approvals(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(APPROVE_SUBJECT).await
    }

    /// Takes approvals for the life of the process. Every host takes each
    /// (keeping one is idempotent); the first answer wins.
    pub async fn answer_approvals(self: Arc<Self>, sub: async_nats::Subscriber) {
        self.serve(sub, "an approval", |host, payload| async move {
            let result = match ApprovalSubmission::decode(&payload) {
                Ok(submission) => host.take_approval(submission).await,
                Err(e) => {
                    host.metrics.inc("conclave_rejected_total", e.code().as_str());
                    Err(RequestError::new(e.code(), e.to_string()))
                }
            };
            Some(ApprovalReceipt { v: PROTOCOL_VERSION, result })
        })
        .await
    }

    /// A waiting request, its approvals and where it stands (`Ask::Pending`).
    pub(crate) async fn pending_answer(&self, id: &RequestId) -> Answer {
        let pending = match self.pending_record(id).await {
            Ok(pending) => pending.map(|(_, p)| p),
            Err(e) => return Answer::Error { error: RequestError::new(ErrorCode::Storage, e.to_string()) },
        };
        let status: Option<ApprovalStatus> = match self.session_record(id).await.ok().flatten() {
            Some((_, SessionRecord { state: SessionState::Pending { approvals }, .. })) => Some(approvals),
            _ => None,
        };
        Answer::Pending { pending, status }
    }

    /// The waiting request `id` with its approvals, and the revision to
    /// replace it at (none: no request of that id waits, or the record
    /// does not read).
    async fn pending_record(&self, id: &RequestId) -> Result<Option<(u64, PendingRequest)>, RegistryError> {
        let entry = self.registry.get(Bucket::Sessions, &pending_key(id)).await?;
        Ok(entry.and_then(|e| Some((e.revision, serde_json::from_slice(&e.value).ok()?))))
    }

    /// The request's session record and its revision, as stored now.
    async fn session_record(&self, id: &RequestId) -> Result<Option<(u64, SessionRecord)>, RegistryError> {
        let entry = self.registry.get(Bucket::Sessions, id.as_str()).await?;
        Ok(entry.and_then(|e| Some((e.revision, serde_json::from_slice(&e.value).ok()?))))
    }
}
