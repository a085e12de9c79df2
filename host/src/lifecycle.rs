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
use crate::quorum::{self, Quorum};
use crate::registry::{Bucket, Entry, RecordWatch, RegistryError, Unknown};
use conclave_proto::ids::SessionKind;
use conclave_proto::link::{BlobSlot, Purpose, SessionPlan, SlotBlob, ToEnclave};
use conclave_proto::registry::{SessionRecord, SessionState};
use conclave_proto::request::{RequestBody, SignedRequest};
use conclave_proto::result::Outcome;
use conclave_proto::{ErrorCode, NodeId, PoolId, RequestError, RequestId, Scheme, SessionId, WalletId, PROTOCOL_VERSION};
use std::sync::Arc;

/// Why this host ends its signer's attempt at a request.
#[derive(Clone, Copy)]
enum Ended {
    /// Another signer answered the request.
    Answered,
    /// A later attempt replaced it.
    Replaced,
    /// This host stopped following the request.
    Unfollowed,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ended::Answered => "the request was answered",
            Ended::Replaced => "a later attempt replaced it",
            Ended::Unfollowed => "this host stopped following the request",
        })
    }
}
use std::time::Duration;
use tokio::sync::oneshot;

/// How long after the deadline the host waits for its signer before it
/// answers `timeout` itself.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// The states a request's session goes through on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// This host wrote the request's first attempt.
    Created,
    /// This node's signer started an attempt.
    Running,
    /// A later attempt, with another quorum, replaced the current one.
    Retried,
    /// The signers want approvals; the request waits for them.
    Pending,
    /// The request was answered with a result.
    Completed,
    /// The request was answered with an error.
    Failed,
    /// This node's signer was told to drop its attempt.
    Aborted,
    /// This host stopped following the request.
    Cleaned,
}

impl Phase {
    /// Every phase (metrics start each at zero).
    pub const ALL: [Phase; 8] =
        [Phase::Created, Phase::Running, Phase::Retried, Phase::Pending, Phase::Completed, Phase::Failed, Phase::Aborted, Phase::Cleaned];

    /// The name in logs and in `conclave_session_transitions_total{to=...}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Running => "running",
            Phase::Retried => "retried",
            Phase::Pending => "pending",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
            Phase::Cleaned => "cleaned",
        }
    }
}

/// A request this host follows: what its logs and session ids need.
pub(crate) struct Followed {
    span: tracing::Span,
    kind: SessionKind,
    /// A sign request's key: whose blobs go with each of its attempts.
    key: Option<SignedKey>,
}

/// The key a sign request names.
struct SignedKey {
    wallet: WalletId,
    scheme: Scheme,
    version: u32,
    path: Vec<u32>,
}

impl Host {
    /// Follows request `id` until it is answered. `proposal` is this host's
    /// plan for attempt 1, used if no host has written the record yet.
    pub(crate) async fn follow(self: Arc<Self>, request: SignedRequest, body: RequestBody, proposal: SessionPlan, quorum: Quorum) {
        let id = body.request_id().clone();
        if !self.following.lock().expect("following lock").insert(id.clone()) {
            return;
        }
        let wallet = body.wallet().0.to_string();
        let kind = match &body {
            RequestBody::Keygen(_) => SessionKind::Keygen,
            RequestBody::Sign(_) => SessionKind::Sign,
            RequestBody::Reshare(_) => SessionKind::Reshare,
        };
        let key = match &body {
            RequestBody::Sign(s) => Some(SignedKey { wallet: s.wallet.clone(), scheme: s.scheme, version: s.version, path: s.path.clone() }),
            _ => None,
        };
        let followed = Followed { span: tracing::info_span!("request", request = %id, wallet = %wallet), kind, key };
        self.metrics.following.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pool = proposal.purpose.is_request().then(|| crate::pools::eligible(&self.config.presign_pools, &body, &proposal.participants)).flatten();
        self.clone().drive(&id, &request, proposal, &quorum, pool, &followed).await;
        self.following.lock().expect("following lock").remove(&id);
        self.metrics.following.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.transition(&followed, Phase::Cleaned, None, "this host no longer follows the request");
    }

    async fn drive(self: Arc<Self>, id: &RequestId, request: &SignedRequest, proposal: SessionPlan, quorum: &Quorum, pool: Option<PoolId>, req: &Followed) {
        // A request that may use a presignature is planned by the keeper
        // of its signers' pool (the host of the set's first member), the
        // one host that hands out that pool's numbers; the others give it
        // a heartbeat period to write the record before they write one of
        // their own, for the full protocol (the keeper may be gone).
        let keeper = pool.filter(|_| proposal.participants.first() == Some(self.me()));
        let taken = match keeper {
            Some(pool) => self.take_presignature(pool).await,
            None => None,
        };
        let first = SessionRecord {
            v: PROTOCOL_VERSION,
            request_id: id.clone(),
            coordinator: self.me().clone(),
            plan: SessionPlan { purpose: taken.map_or(Purpose::Request, |seq| Purpose::Presigned { seq }), ..proposal },
            excluded: Vec::new(),
            state: SessionState::Running,
        };
        // Watched before the create, so that no change after it is missed
        // when the record this host wrote is taken as read (below).
        let watch = self.registry.watch_request(id).await;
        if pool.is_some() && keeper.is_none() {
            let _ = tokio::time::timeout(self.config.heartbeat, watch.changed()).await;
        }
        // Tried again across a registry outage (a conflict, another host's
        // record, is final): if no host's create got through, no host would
        // follow the request. Not tried when the watch brought the record.
        let created = match watch.newer_than(0) {
            Ok(Some(_)) => None,
            _ => Some(crate::nats::retrying("create the session record", || self.registry.create(Bucket::Sessions, id.as_str(), encode(&first))).await),
        };
        if let Some(pool) = keeper {
            match (&created, taken) {
                (Some(Ok(_)), Some(_)) => self.metrics.inc("conclave_pool_plans_total", "presigned"),
                (Some(Ok(_)), None) => {
                    self.metrics.inc("conclave_pool_plans_total", "full");
                    self.metrics.inc("conclave_presign_fallbacks_total", "empty");
                }
                (_, Some(seq)) => self.give_back_presignature(pool, seq),
                (_, None) => {}
            }
        }
        // What this host knows of the record (read, written, or delivered
        // by the watch) while nothing of its own may have moved it since:
        // the record it created, at the revision the registry gave it, or
        // the one another host created, as the watch delivered it, needs
        // no read.
        let mut known = match &created {
            Some(Ok(revision)) => {
                self.transition(req, Phase::Created, Some(&first.plan), format!("with {:?}", first.plan.participants));
                revision.map(|revision| (revision, first.clone()))
            }
            _ => watch.newer_than(0).ok().flatten().and_then(decoded),
        };
        // This host's signer: the attempt it runs and where its outcome lands,
        // and the latest attempt it started (never start one twice).
        let mut running: Option<(u32, oneshot::Receiver<Outcome>)> = None;
        let mut started = 0u32;
        let mut tick = tokio::time::interval(self.config.heartbeat);
        let mut missed: Vec<NodeId> = Vec::new();
        loop {
            let Some((revision, record)) = self.current_record(id, &watch, known.take()).await else {
                tracing::warn!(parent: &req.span, "session record unreadable; stopping");
                break;
            };
            known = Some((revision, record.clone()));
            match &record.state {
                SessionState::Running => {}
                // Written by releases before keepers planned their pooled
                // requests: its creator moves it on.
                SessionState::Planning => {}
                // Waiting for approvals: a new attempt, or the deadline.
                SessionState::Pending { .. } => {}
                SessionState::Done | SessionState::Failed { .. } => {
                    self.abort_mine(id, &mut running, req, Ended::Answered);
                    break;
                }
            }
            let plan = &record.plan;
            if running.as_ref().is_some_and(|(attempt, _)| *attempt < plan.attempt) {
                self.abort_mine(id, &mut running, req, Ended::Replaced);
            }
            if record.state == SessionState::Running && running.is_none() && plan.participants.contains(self.me()) && plan.attempt > started {
                started = plan.attempt;
                running = Some((plan.attempt, self.start_signer(request, plan.clone(), req)));
            }
            // Absolute: recomputed on every pass of the loop, a grace added to
            // "now" would move the deadline with each heartbeat tick.
            let due_ms = plan.deadline_ms + DEADLINE_GRACE.as_millis() as u64;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(due_ms.saturating_sub(crate::now_ms()));
            tokio::select! {
                outcome = async { (&mut running.as_mut().expect("guarded").1).await }, if running.is_some() => {
                    let attempt = running.take().expect("guarded").0;
                    known = None;
                    match outcome {
                        Ok(outcome) => {
                            if self.settle(id, revision, &record, quorum, request, outcome, req).await {
                                break;
                            }
                        }
                        // The link went down with the session: the signer
                        // lost it. Peers will blame this node and move on.
                        Err(_) => tracing::warn!(parent: &req.span, attempt, "the signer's link dropped during the attempt"),
                    }
                }
                _ = watch.changed() => {}
                _ = tick.tick() => {
                    // Nobody runs anything while the request waits.
                    if record.state != SessionState::Running {
                        continue;
                    }
                    // Missing at two checks a heartbeat period apart: one late
                    // heartbeat of a busy node is not a failure.
                    // A view that is not current says nothing about the peers.
                    let Ok(ready) = self.view.ready() else { continue };
                    let (missing, gone) = quorum::gone(&plan.participants, &ready, &missed);
                    missed = missing;
                    if !gone.is_empty() && plan.deadline_ms > crate::now_ms() {
                        let names: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
                        let error = RequestError::new(ErrorCode::PeerUnavailable, format!("{} stopped heartbeating", names.join(", ")))
                            .blaming(gone);
                        self.replace_attempt(id, revision, &record, quorum, error, req).await;
                        known = None;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let error = match &record.state {
                        SessionState::Pending { approvals: a } => RequestError::new(
                            ErrorCode::ApprovalExpired,
                            format!("{} of {} approvals from {} by the approval deadline", a.approved.len(), a.required, a.group),
                        )
                        .by_rule(a.rule.clone()),
                        _ => RequestError::new(ErrorCode::Timeout, format!("no answer by the deadline (attempt {})", plan.attempt)),
                    };
                    self.fail(id, revision, &record, error, req).await;
                    known = None;
                }
            }
        }
        // However following ended, this node's signer drops what it still runs.
        self.abort_mine(id, &mut running, req, Ended::Unfollowed);
    }

    /// This host's signer reported. Returns whether the request is settled.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        id: &RequestId,
        revision: u64,
        record: &SessionRecord,
        quorum: &Quorum,
        request: &SignedRequest,
        outcome: Outcome,
        req: &Followed,
    ) -> bool {
        match outcome {
            Outcome::Ok { result } => {
                // A key (new, or moved) is usable only once every member
                // holds its share. What the statement says is not trusted
                // here: clients check the signers' signatures on it.
                let outcome = match result.unverified_record() {
                    Some(key) => self.confirm_stored(id, result, &key, record.plan.deadline_ms).await,
                    None => Outcome::Ok { result },
                };
                if let Outcome::Error { error } = outcome {
                    self.fail(id, revision, record, error, req).await;
                    return true;
                }
                self.transition(req, Phase::Completed, Some(&record.plan), "result published");
                self.publish(id.clone(), outcome).await;
                let done = SessionRecord { state: SessionState::Done, ..record.clone() };
                // Best effort: followers also stop when they see the result's
                // record; if this loses a race, the record moved on already.
                let _ = self.registry.update(Bucket::Sessions, id.as_str(), encode(&done), revision).await;
                true
            }
            Outcome::Error { error } if error.code == ErrorCode::ApprovalRequired => {
                self.await_approvals(id, revision, record, request, error, req).await;
                false
            }
            Outcome::Error { error } if error.code == ErrorCode::AuxInfoStale && record.plan.purpose.is_request() => {
                self.renew_aux(id, revision, record, quorum, error, req).await;
                false
            }
            Outcome::Error { error } if error.code == ErrorCode::AuxInfoRenewed => {
                match &record.plan.purpose {
                    Purpose::RenewAux { then } => {
                        let signing = SessionRecord {
                            plan: SessionPlan { round_timeout_ms: self.config.round_timeout.as_millis() as u64, ..record.plan.clone() },
                            ..record.clone()
                        };
                        self.next_attempt(id, revision, &signing, then.clone(), Purpose::Request, record.excluded.clone(), &error, req).await;
                    }
                    Purpose::Request | Purpose::Presigned { .. } => {
                        self.fail(id, revision, record, RequestError::new(ErrorCode::Internal, "aux info renewed unasked"), req).await
                    }
                }
                false
            }
            // Nothing left any signer: the same signers run the full protocol.
            Outcome::Error { error } if error.code == ErrorCode::PresignatureUnavailable => {
                if self.next_attempt(id, revision, record, record.plan.participants.clone(), Purpose::Request, record.excluded.clone(), &error, req).await {
                    self.metrics.inc("conclave_presign_fallbacks_total", "unavailable");
                }
                false
            }
            Outcome::Error { error } if quorum::replaceable(&error) => {
                self.replace_attempt(id, revision, record, quorum, error, req).await;
                false
            }
            Outcome::Error { error } => {
                self.fail(id, revision, record, error, req).await;
                true
            }
        }
    }

    /// Moves the request to a new attempt without the blamed nodes, or fails
    /// it if no quorum is left. A lost compare-and-set means another host
    /// moved it first; its record wins.
    async fn replace_attempt(&self, id: &RequestId, revision: u64, record: &SessionRecord, quorum: &Quorum, cause: RequestError, req: &Followed) {
        if !quorum.may_fail_over {
            self.fail(id, revision, record, cause, req).await;
            return;
        }
        let Ok(ready) = self.view.ready_within(self.config.ready_ttl).await else {
            // Try again at the next check; the deadline still bounds it.
            return;
        };
        let excluded = quorum::excluded_after(&record.excluded, &cause.blamed);
        let Some(chosen) = quorum::next_signers(quorum, &excluded, &cause.blamed, &ready) else {
            self.fail(id, revision, record, cause, req).await;
            return;
        };
        if self.next_attempt(id, revision, record, chosen, Purpose::Request, excluded, &cause, req).await {
            self.metrics.failovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A sign request whose ECDSA committee has no aux info of this
    /// release: one attempt of the whole committee makes it, then the
    /// signers of this attempt sign. Every member must be ready.
    async fn renew_aux(&self, id: &RequestId, revision: u64, record: &SessionRecord, quorum: &Quorum, cause: RequestError, req: &Followed) {
        let Ok(ready) = self.view.ready_within(self.config.ready_ttl).await else {
            return;
        };
        let absent: Vec<String> = quorum.committee.iter().filter(|m| !ready.contains(*m)).map(|m| m.to_string()).collect();
        if !absent.is_empty() {
            let reason = format!("{}; renewing it takes every committee member, and {} are not ready", cause.reason, absent.join(", "));
            self.fail(id, revision, record, RequestError::new(ErrorCode::AuxInfoStale, reason), req).await;
            return;
        }
        let purpose = Purpose::RenewAux { then: record.plan.participants.clone() };
        // Making aux info is a committee's first keygen over again (seconds
        // of CPU a round, and a member may still be finding its primes):
        // the renewal, and the signing after it, get keygen's time; its
        // rounds wait until the deadline (heartbeats catch a dead member).
        let deadline_ms = record.plan.deadline_ms.max(crate::now_ms() + crate::coordinator::KEYGEN_SESSION.as_millis() as u64);
        let patient = SessionRecord {
            plan: SessionPlan { deadline_ms, round_timeout_ms: deadline_ms.saturating_sub(crate::now_ms()), ..record.plan.clone() },
            ..record.clone()
        };
        self.next_attempt(id, revision, &patient, quorum.committee.clone(), purpose, record.excluded.clone(), &cause, req).await;
    }

    /// Moves the request to its next attempt by compare-and-set; returns
    /// whether this host moved it (else another host did first).
    #[allow(clippy::too_many_arguments)]
    async fn next_attempt(
        &self,
        id: &RequestId,
        revision: u64,
        record: &SessionRecord,
        participants: Vec<NodeId>,
        purpose: Purpose,
        excluded: Vec<NodeId>,
        cause: &RequestError,
        req: &Followed,
    ) -> bool {
        let next = SessionRecord {
            v: PROTOCOL_VERSION,
            request_id: id.clone(),
            coordinator: self.me().clone(),
            plan: SessionPlan { attempt: record.plan.attempt + 1, participants, purpose, ..record.plan.clone() },
            excluded,
            state: SessionState::Running,
        };
        let moved = self.registry.update(Bucket::Sessions, id.as_str(), encode(&next), revision).await.is_ok();
        if moved {
            self.transition(
                req,
                Phase::Retried,
                Some(&next.plan),
                format!("attempt {} with {:?} after: {} ({})", next.plan.attempt, next.plan.participants, cause.reason, cause.code),
            );
        }
        moved
    }

    /// Ends the request with `error`: the host that wins the compare-and-set
    /// publishes it, so exactly one error result goes out per request.
    pub(crate) async fn fail(&self, id: &RequestId, revision: u64, record: &SessionRecord, error: RequestError, req: &Followed) {
        let failed = SessionRecord { state: SessionState::Failed { error: error.clone() }, ..record.clone() };
        if self.registry.update(Bucket::Sessions, id.as_str(), encode(&failed), revision).await.is_ok() {
            self.transition(req, Phase::Failed, Some(&record.plan), format!("{}: {}", error.code, error.reason));
            self.publish(id.clone(), Outcome::Error { error }).await;
        }
    }

    /// The request's record as it stands: `known` if nothing newer came
    /// since (on NATS the watch says so, and delivers what is newer),
    /// else read from the registry.
    async fn current_record(&self, id: &RequestId, watch: &RecordWatch, known: Option<(u64, SessionRecord)>) -> Option<(u64, SessionRecord)> {
        if let Some((revision, record)) = known {
            match watch.newer_than(revision) {
                Ok(None) => return Some((revision, record)),
                Ok(Some(entry)) => {
                    if let Some(newer) = decoded(entry) {
                        return Some(newer);
                    }
                }
                Err(Unknown) => {}
            }
        }
        self.read_record(id).await
    }

    async fn read_record(&self, id: &RequestId) -> Option<(u64, SessionRecord)> {
        // The record exists (this host created it or found it), but a read
        // served by a replica that has not caught up yet may not show it.
        let read = crate::nats::retrying("read a session record", || async {
            let missing = || RegistryError::Unavailable { op: "get", bucket: Bucket::Sessions.name(), detail: "not visible here yet".into() };
            self.registry.get(Bucket::Sessions, id.as_str()).await?.ok_or_else(missing)
        });
        decoded(read.await.ok()?)
    }

    fn start_signer(&self, request: &SignedRequest, plan: SessionPlan, req: &Followed) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let attempt = plan.attempt;
        self.pending.lock().expect("pending lock").insert((plan.request_id.clone(), attempt), tx);
        self.metrics.sessions_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.transition(req, Phase::Running, Some(&plan), format!("with {:?}", plan.participants));
        let blobs = req.key.as_ref().map(|key| self.blobs_for(key, &plan)).unwrap_or_default();
        if !self.link.send(ToEnclave::Start { request: request.clone(), plan: plan.clone(), blobs }) {
            let error = RequestError::new(ErrorCode::PeerUnavailable, format!("{} has no enclave link", self.me())).blaming(vec![self.me().clone()]);
            self.deliver_outcome(&plan.request_id, attempt, Outcome::Error { error });
        }
        rx
    }

    /// What a signing attempt will load, from this node's store: the share
    /// of the key, and the presignature the plan names. What cannot be
    /// read is left out (the signer asks for it).
    fn blobs_for(&self, key: &SignedKey, plan: &SessionPlan) -> Vec<SlotBlob> {
        let mut wanted = vec![(BlobSlot::Share { wallet: key.wallet.clone(), scheme: key.scheme }, key.version)];
        if let Purpose::Presigned { seq } = plan.purpose {
            let pool = PoolId::of(&key.wallet, key.scheme, key.version, &plan.participants, &key.path);
            wanted.push((BlobSlot::Presignatures { wallet: key.wallet.clone(), pool }, seq));
        }
        wanted.into_iter().filter_map(|(slot, version)| Some(SlotBlob { blob: self.store.load_version(&slot, version).ok()??, slot })).collect()
    }

    fn abort_mine(&self, id: &RequestId, running: &mut Option<(u32, oneshot::Receiver<Outcome>)>, req: &Followed, why: Ended) {
        if let Some((attempt, _)) = running.take() {
            self.finish(id, attempt);
            self.link.send(ToEnclave::Abort { request_id: id.clone(), attempt, answered: matches!(why, Ended::Answered) });
            self.metrics.inc("conclave_session_transitions_total", Phase::Aborted.as_str());
            tracing::info!(parent: &req.span, state = Phase::Aborted.as_str(), attempt, "{why}");
        }
    }

    /// Routes a signer's outcome to the follower waiting for it; an outcome
    /// nobody waits for (an aborted attempt) is dropped.
    pub(crate) fn deliver_outcome(&self, id: &RequestId, attempt: u32, outcome: Outcome) {
        let waiting = self.pending.lock().expect("pending lock").remove(&(id.clone(), attempt));
        match waiting {
            Some(tx) => {
                self.metrics.sessions_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send(outcome);
            }
            None => {
                tracing::debug!(request = %id, attempt, "outcome of an attempt nobody follows; dropped")
            }
        }
    }

    /// The signer's attempt is over for this host (its outcome arrived, or
    /// it was aborted): `conclave_sessions_active` counts it out once.
    fn finish(&self, id: &RequestId, attempt: u32) {
        if self.pending.lock().expect("pending lock").remove(&(id.clone(), attempt)).is_some() {
            self.metrics.sessions_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Logs (with the request, wallet, attempt and session id) and counts a
    /// transition.
    pub(crate) fn transition(&self, req: &Followed, to: Phase, plan: Option<&SessionPlan>, why: impl std::fmt::Display) {
        match plan {
            Some(plan) => {
                let session = SessionId::derive(req.kind, &plan.request_id, plan.attempt);
                let presignature = match plan.purpose {
                    Purpose::Presigned { seq } => Some(seq),
                    _ => None,
                };
                tracing::info!(parent: &req.span, state = to.as_str(), attempt = plan.attempt, %session, presignature, "{why}");
            }
            None => tracing::info!(parent: &req.span, state = to.as_str(), "{why}"),
        }
        self.metrics.inc("conclave_session_transitions_total", to.as_str());
    }
}

/// A session record as the registry delivered it, with its revision.
fn decoded(entry: Entry) -> Option<(u64, SessionRecord)> {
    Some((entry.revision, serde_json::from_slice(&entry.value).ok()?))
}

pub(crate) fn encode(record: &SessionRecord) -> bytes::Bytes {
    serde_json::to_vec(record).expect("records serialise").into()
}
