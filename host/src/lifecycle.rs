//! A request's life on this host, from its fencing record to its answer.
//!
//! Every committee member's host follows every request of its committee
//! until the request is answered or its deadline passes. The request's
//! record in the sessions bucket is the only source of truth about which
//! attempt is live: hosts move it forward only by compare-and-set on the
//! revision they read, so each attempt is planned once and a request has at
//! most one live attempt.
//!
//! An attempt ends in one of three ways:
//! - a participant's signer finishes it: with a result, which that host
//!   publishes (the result stream keeps the first per request id); or with
//!   an error, which is final unless it blames peers that can be replaced;
//! - a participant stops heartbeating (killed, cut off): any follower
//!   notices within a readiness TTL and moves the request to a new attempt
//!   with a quorum that excludes it;
//! - the deadline passes: the request fails with `timeout`.
//!
//! A new attempt keeps the first one's deadline. Hosts that ran the old
//! attempt tell their signer to abort it; signers also refuse to run an
//! attempt older than one they have started (see the enclave's `claim`).
//!
//! States, as logged and counted in `conclave_session_transitions_total`:
//! `created` (record written), `running` (this node's signer started),
//! `retried` (a new attempt replaced it), `completed`, `failed`,
//! `aborted` (this node's signer was told to drop it), `cleaned` (this
//! host stopped following the request).

use crate::coordinator::Host;
use async_nats::jetstream::kv;
use conclave_proto::link::{SessionPlan, ToEnclave};
use conclave_proto::registry::{SessionRecord, SessionState};
use conclave_proto::request::{RequestBody, SignedRequest};
use conclave_proto::result::{Completed, Outcome};
use conclave_proto::{ErrorCode, NodeId, RequestError, RequestId, PROTOCOL_VERSION};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long after the deadline the host waits for its signer before it
/// answers `timeout` itself.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// What a follower needs to know about the request to choose a quorum.
pub struct Quorum {
    /// The wallet's committee (keygen: the requested committee).
    pub committee: Vec<NodeId>,
    /// Signers needed (keygen: the whole committee).
    pub threshold: usize,
    /// Whether another quorum may be chosen: not for keygen (it needs the
    /// whole committee) nor for a request that names its signers.
    pub may_fail_over: bool,
}

/// Failures that another quorum can get past.
fn replaceable(error: &RequestError) -> bool {
    matches!(error.code, ErrorCode::PeerUnavailable | ErrorCode::Timeout | ErrorCode::ProtocolAbort) && !error.blamed.is_empty()
}

impl Host {
    /// Follows request `id` until it is answered. `proposal` is this host's
    /// plan for attempt 1, used if no host has written the record yet.
    pub(crate) async fn follow(self: Arc<Self>, request: SignedRequest, body: RequestBody, proposal: SessionPlan, quorum: Quorum) {
        let id = body.request_id().clone();
        if !self.following.lock().expect("following lock").insert(id.clone()) {
            return;
        }
        let wallet = match &body {
            RequestBody::Keygen(k) => k.wallet.to_string(),
            RequestBody::Sign(s) => s.wallet.to_string(),
        };
        let span = tracing::info_span!("request", request = %id, wallet = %wallet);
        self.metrics.following.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.clone().drive(&id, &request, proposal, &quorum, &span).await;
        self.following.lock().expect("following lock").remove(&id);
        self.metrics.following.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.transition(&span, "cleaned", "this host no longer follows the request");
    }

    async fn drive(self: Arc<Self>, id: &RequestId, request: &SignedRequest, proposal: SessionPlan, quorum: &Quorum, span: &tracing::Span) {
        let sessions = self.registry.sessions.clone();
        let first = SessionRecord {
            v: PROTOCOL_VERSION,
            request_id: id.clone(),
            coordinator: self.me().clone(),
            plan: proposal,
            excluded: Vec::new(),
            state: SessionState::Running,
        };
        if sessions.create(id.as_str(), encode(&first)).await.is_ok() {
            self.transition(span, "created", format!("attempt 1 with {:?}", first.plan.participants));
        }
        let mut watch = match sessions.watch(id.as_str()).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(parent: span, error = %e, "cannot watch the session record; polling it");
                None
            }
        };
        // This host's signer: the attempt it runs and where its outcome lands,
        // and the latest attempt it started (never start one twice).
        let mut running: Option<(u32, oneshot::Receiver<Outcome>)> = None;
        let mut started = 0u32;
        let mut tick = tokio::time::interval(self.config.heartbeat);
        let mut missed: Vec<NodeId> = Vec::new();
        loop {
            let Some((revision, record)) = self.read_record(id).await else {
                tracing::warn!(parent: span, "session record unreadable; stopping");
                break;
            };
            match &record.state {
                SessionState::Running => {}
                SessionState::Done | SessionState::Failed { .. } => {
                    self.abort_mine(id, &mut running, span, "the request was answered");
                    break;
                }
            }
            let plan = &record.plan;
            if running.as_ref().is_some_and(|(attempt, _)| *attempt < plan.attempt) {
                self.abort_mine(id, &mut running, span, "a later attempt replaced it");
            }
            if running.is_none() && plan.participants.contains(self.me()) && plan.attempt > started {
                started = plan.attempt;
                running = Some((plan.attempt, self.start_signer(request, plan.clone(), span)));
            }
            let deadline = tokio::time::Instant::now()
                + Duration::from_millis(plan.deadline_ms.saturating_sub(crate::now_ms()))
                + DEADLINE_GRACE;
            tokio::select! {
                outcome = async { (&mut running.as_mut().expect("guarded").1).await }, if running.is_some() => {
                    let attempt = running.take().expect("guarded").0;
                    self.finish(id, attempt);
                    match outcome {
                        Ok(outcome) => {
                            if self.settle(id, revision, &record, quorum, outcome, span).await {
                                break;
                            }
                        }
                        // The link went down with the session: the signer
                        // lost it. Peers will blame this node and move on.
                        Err(_) => tracing::warn!(parent: span, attempt, "the signer's link dropped during the attempt"),
                    }
                }
                changed = next_change(&mut watch) => {
                    if !changed {
                        watch = None;
                    }
                }
                _ = tick.tick() => {
                    // Missing at two checks a heartbeat period apart: one late
                    // heartbeat of a busy node is not a failure.
                    // An unreadable registry says nothing about the peers.
                    let Ok(ready) = self.registry.ready_view(self.me()).await else { continue };
                    let missing: Vec<NodeId> = plan.participants.iter().filter(|p| !ready.contains(*p)).cloned().collect();
                    let gone: Vec<NodeId> = missing.iter().filter(|p| missed.contains(*p)).cloned().collect();
                    missed = missing;
                    if !gone.is_empty() && plan.deadline_ms > crate::now_ms() {
                        let names: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
                        let error = RequestError::new(ErrorCode::PeerUnavailable, format!("{} stopped heartbeating", names.join(", ")))
                            .blaming(gone);
                        self.replace_attempt(id, revision, &record, quorum, error, span).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let error = RequestError::new(ErrorCode::Timeout, format!("no answer by the deadline (attempt {})", plan.attempt));
                    self.fail(id, revision, &record, error, span).await;
                }
            }
        }
    }

    /// This host's signer reported. Returns whether the request is settled.
    async fn settle(&self, id: &RequestId, revision: u64, record: &SessionRecord, quorum: &Quorum, outcome: Outcome, span: &tracing::Span) -> bool {
        match outcome {
            Outcome::Ok { result } => {
                let outcome = match result {
                    Completed::Keygen(key) => self.confirm_keygen(id, key, record.plan.deadline_ms).await,
                    sign => Outcome::Ok { result: sign },
                };
                if let Outcome::Error { error } = outcome {
                    self.fail(id, revision, record, error, span).await;
                    return true;
                }
                self.transition(span, "completed", format!("attempt {}", record.plan.attempt));
                self.publish(id.clone(), outcome).await;
                let done = SessionRecord { state: SessionState::Done, ..record.clone() };
                // Best effort: followers also stop when they see the result's
                // record; if this loses a race, the record moved on already.
                let _ = self.registry.sessions.update(id.as_str(), encode(&done), revision).await;
                true
            }
            Outcome::Error { error } if replaceable(&error) => {
                self.replace_attempt(id, revision, record, quorum, error, span).await;
                false
            }
            Outcome::Error { error } => {
                self.fail(id, revision, record, error, span).await;
                true
            }
        }
    }

    /// Moves the request to a new attempt without the blamed nodes, or fails
    /// it if no quorum is left. A lost compare-and-set means another host
    /// moved it first; its record wins.
    async fn replace_attempt(&self, id: &RequestId, revision: u64, record: &SessionRecord, quorum: &Quorum, cause: RequestError, span: &tracing::Span) {
        let mut excluded: Vec<NodeId> = record.excluded.clone();
        for node in &cause.blamed {
            if !excluded.contains(node) {
                excluded.push(node.clone());
            }
        }
        if !quorum.may_fail_over {
            self.fail(id, revision, record, cause, span).await;
            return;
        }
        let Ok(ready) = crate::registry::retrying("read the ready bucket", || self.registry.ready_view(self.me())).await else {
            // Try again at the next check; the deadline still bounds it.
            return;
        };
        let chosen: Vec<NodeId> =
            quorum.committee.iter().filter(|n| ready.contains(*n) && !excluded.contains(*n)).take(quorum.threshold).cloned().collect();
        if chosen.len() < quorum.threshold {
            self.fail(id, revision, record, cause, span).await;
            return;
        }
        let next = SessionRecord {
            v: PROTOCOL_VERSION,
            request_id: id.clone(),
            coordinator: self.me().clone(),
            plan: SessionPlan { attempt: record.plan.attempt + 1, participants: chosen, ..record.plan.clone() },
            excluded,
            state: SessionState::Running,
        };
        if self.registry.sessions.update(id.as_str(), encode(&next), revision).await.is_ok() {
            self.metrics.failovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.transition(
                span,
                "retried",
                format!("attempt {} with {:?} after: {} ({})", next.plan.attempt, next.plan.participants, cause.reason, cause.code),
            );
        }
    }

    /// Ends the request with `error`: the host that wins the compare-and-set
    /// publishes it, so exactly one error result goes out per request.
    async fn fail(&self, id: &RequestId, revision: u64, record: &SessionRecord, error: RequestError, span: &tracing::Span) {
        let failed = SessionRecord { state: SessionState::Failed { error: error.clone() }, ..record.clone() };
        if self.registry.sessions.update(id.as_str(), encode(&failed), revision).await.is_ok() {
            self.transition(span, "failed", format!("{}: {}", error.code, error.reason));
            self.publish(id.clone(), Outcome::Error { error }).await;
        }
    }

    async fn read_record(&self, id: &RequestId) -> Option<(u64, SessionRecord)> {
        let read = crate::registry::retrying("read a session record", || async { Ok(self.registry.sessions.entry(id.as_str()).await?) });
        let entry = read.await.ok()??;
        let record = serde_json::from_slice(&entry.value).ok()?;
        Some((entry.revision, record))
    }

    fn start_signer(&self, request: &SignedRequest, plan: SessionPlan, span: &tracing::Span) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let attempt = plan.attempt;
        self.pending.lock().expect("pending lock").insert((plan.request_id.clone(), attempt), tx);
        self.metrics.sessions_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.transition(span, "running", format!("attempt {attempt} with {:?}", plan.participants));
        if !self.link.send(ToEnclave::Start { request: request.clone(), plan: plan.clone() }) {
            let error = RequestError::new(ErrorCode::PeerUnavailable, format!("{} has no enclave link", self.me()))
                .blaming(vec![self.me().clone()]);
            self.deliver_outcome(&plan.request_id, attempt, Outcome::Error { error });
        }
        rx
    }

    fn abort_mine(&self, id: &RequestId, running: &mut Option<(u32, oneshot::Receiver<Outcome>)>, span: &tracing::Span, why: &str) {
        if let Some((attempt, _)) = running.take() {
            self.finish(id, attempt);
            self.link.send(ToEnclave::Abort { request_id: id.clone(), attempt });
            self.transition(span, "aborted", format!("attempt {attempt}: {why}"));
        }
    }

    /// Routes a signer's outcome to the follower waiting for it; an outcome
    /// nobody waits for (an aborted attempt) is dropped.
    pub(crate) fn deliver_outcome(&self, id: &RequestId, attempt: u32, outcome: Outcome) {
        match self.pending.lock().expect("pending lock").remove(&(id.clone(), attempt)) {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => tracing::debug!(request = %id, attempt, "outcome of an attempt nobody follows; dropped"),
        }
    }

    fn finish(&self, id: &RequestId, attempt: u32) {
        self.pending.lock().expect("pending lock").remove(&(id.clone(), attempt));
        self.metrics.sessions_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn transition(&self, span: &tracing::Span, to: &'static str, why: impl std::fmt::Display) {
        tracing::info!(parent: span, state = to, "{why}");
        self.metrics.inc("conclave_session_transitions_total", to);
    }
}

fn encode(record: &SessionRecord) -> bytes::Bytes {
    serde_json::to_vec(record).expect("records serialise").into()
}

/// Waits for the next change of the watched record; `false` once the watch
/// is gone (the caller then falls back to the periodic tick).
async fn next_change(watch: &mut Option<kv::Watch>) -> bool {
    match watch {
        Some(w) => matches!(w.next().await, Some(Ok(_))),
        None => std::future::pending().await,
    }
}
