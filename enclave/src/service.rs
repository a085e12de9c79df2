//! The enclave's state and what it does with a request: authorise, load and
//! unseal what it needs through the host, run the protocol, seal and store
//! the result through the host, and report the outcome.

use crate::attestation::{Admission, Nsm};
use crate::config::EnclaveConfig;
use crate::floor::Floors;
use crate::identity::{self, KxPublic, NodeKeys};
use crate::link::HostLink;
use crate::primes::PrimePool;
use crate::seal::{SealContext, Sealer};
use crate::session::{Router, Seat, SessionSpec};
use crate::share::{storage, SecretShare, ShareRecord};
use crate::{ecdsa, eddsa, policy, reshare, session};
use conclave_proto::ids::SessionKind;
use conclave_proto::link::{BlobSlot, FromEnclave, NodeIdentity, Purpose, SessionPlan, SlotBlob, StoredBlob};
use conclave_proto::request::{KeygenRequest, RequestBody, ReshareRequest, SignPayload, SignRequest, SignedRequest};
use conclave_proto::result::{Completed, KeygenResult, Outcome, SignResult};
use conclave_proto::statement::{Endorsed, Endorsement, Statement};
use conclave_proto::{CommitteeId, ErrorCode, NodeId, RequestError, RequestId, Scheme, SessionId};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

// Frames from the host, and request handling by kind; fencing, floors and
// endorsements stay here.
mod audit;
mod frames;
mod governance;
mod keygen;
mod presign;
mod resharing;
mod sign;

/// What this enclave has done for one request.
struct Claim {
    /// The latest attempt started or aborted here.
    attempt: u32,
    /// Attempts up to this one are over here (aborted or superseded).
    ended: u32,
    at: Instant,
    completed: bool,
    /// An attempt gave away this signer's share of the signature: no later
    /// attempt runs here, or the request could be signed twice.
    released: bool,
    /// Writes of the latest attempt under way (its decision's audit entry,
    /// its presignature's floor): the attempt's rounds run meanwhile, and
    /// its share of the signature waits for them ([`Enclave::durable`]).
    writes: Vec<Durable>,
}

/// A write under way that must last before an attempt's share of a
/// signature leaves: resolves once it is durable, or with why not.
pub(super) struct Durable {
    done: tokio::sync::oneshot::Receiver<Result<(), RequestError>>,
    /// Who writes it, for the error if the writer goes away.
    writer: &'static str,
}

impl Durable {
    /// A write that `writer` reports to the sender.
    pub(super) fn new(writer: &'static str) -> (tokio::sync::oneshot::Sender<Result<(), RequestError>>, Durable) {
        let (tx, done) = tokio::sync::oneshot::channel();
        (tx, Durable { done, writer })
    }

    /// Waits until the write is durable.
    pub(super) async fn wait(self) -> Result<(), RequestError> {
        self.done.await.unwrap_or_else(|_| Err(RequestError::new(ErrorCode::Internal, format!("{} went away", self.writer))))
    }
}

impl Claim {
    /// A claim of `attempt`, made `at`, with attempts up to `ended` over.
    fn new(attempt: u32, ended: u32, at: Instant) -> Claim {
        Claim { attempt, ended, at, completed: false, released: false, writes: Vec::new() }
    }

    /// Whether `attempt` may still run here: it is the latest, it was not
    /// ended, and no attempt completed.
    fn allows(&self, attempt: u32) -> bool {
        attempt == self.attempt && attempt > self.ended && !self.completed
    }
}

/// Claims by request, and the order they were made in, so that forgetting
/// the old ones costs nothing per request (a scan of every claim at each
/// request was 3% of a signer's CPU at 170 requests a second, and grew
/// with the rate).
#[derive(Default)]
struct Claims {
    by_request: HashMap<RequestId, Claim>,
    made: std::collections::VecDeque<(Instant, RequestId)>,
}

impl Claims {
    /// Records `claim`, made now, for `request`.
    fn insert(&mut self, request: &RequestId, claim: Claim) {
        self.made.push_back((claim.at, request.clone()));
        self.by_request.insert(request.clone(), claim);
    }

    /// Forgets every claim last made before `cutoff`.
    fn forget_before(&mut self, cutoff: Instant) {
        while self.made.front().is_some_and(|(at, _)| *at < cutoff) {
            let (at, request) = self.made.pop_front().expect("checked above");
            // A claim made again since has a later entry of its own.
            if self.by_request.get(&request).is_some_and(|claim| claim.at <= at) {
                self.by_request.remove(&request);
            }
        }
    }
}

/// A trusted peer, from the roster.
pub struct Peer {
    /// Its channel key.
    pub kx: KxPublic,
    /// Its broadcast signing key.
    pub sign: ed25519_dalek::VerifyingKey,
}

/// Everything the enclave holds.
pub struct Enclave {
    /// Configuration.
    pub config: EnclaveConfig,
    /// Identity keys.
    pub keys: NodeKeys,
    /// Sealing backend.
    pub sealer: Box<dyn Sealer>,
    /// The lowest version of each slot this signer opens.
    pub floors: Arc<Floors>,
    /// The link to the host.
    pub host: HostLink,
    /// Incoming envelopes to sessions.
    pub router: Arc<Router>,
    /// Paillier primes.
    pub primes: PrimePool,
    /// Heavy sessions' turns at this signer's CPU.
    pub turns: Arc<crate::turns::Turns>,
    /// Attestation documents about this signer (nitro, or dev with a
    /// simulated NSM); none in hsm mode.
    pub nsm: Option<Nsm>,
    /// What peers' documents must show, when this node checks them.
    admission: Option<Admission>,
    /// The roster, as configured.
    identities: HashMap<NodeId, NodeIdentity>,
    peers: HashMap<NodeId, Peer>,
    aux_locks: Mutex<HashMap<CommitteeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Fault injection (`crate::fault::Hook::ReshareTamper`).
    tampers_sub_shares: bool,
    /// Fault injection (`crate::fault::Hook::ReshareCrashBeforeAck`).
    crashes_before_ack: bool,
    /// Fault hook: stop after taking a presignature, before its partial leaves.
    crashes_after_presignature_taken: bool,
    /// Fault hook: send partial signatures that do not match.
    tampers_partials: bool,
    /// Per request: the highest attempt started here, when, and whether one
    /// completed (then no later attempt runs here).
    started: Mutex<Claims>,
    /// When this signer started (Unix ms): requests issued before are
    /// refused, since `started` does not survive a restart.
    started_at_ms: u64,
    /// This run's random id: what a ledger entry names as the run that let
    /// a request through.
    run: [u8; 16],
    /// Where floors live in memory only (nitro), presignatures serve only
    /// the run that made them: this run's id, sealed with each.
    presign_run: Option<[u8; 16]>,
    /// The policy and the wallets' ledgers.
    governance: governance::Governance,
    /// The tail of this signer's audit trail.
    audit_log: audit::AuditLog,
}

/// Why the configured roster cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The roster lists this node with other keys than its own.
    #[error("the roster's entry for {0} does not match this node's keys")]
    NotMine(NodeId),
    /// The roster does not list this node.
    #[error("the roster has no entry for {0}")]
    Missing(NodeId),
    /// A node's key does not decode.
    #[error("roster: bad {key} for {node}")]
    BadKey {
        /// The node.
        node: NodeId,
        /// Which key (`kx_key`, `sign_key`).
        key: &'static str,
    },
}

impl Enclave {
    /// Builds the enclave from its configuration, keys, sealer and roster.
    pub fn new(config: EnclaveConfig, custody: crate::custody::Custody, roster: Vec<NodeIdentity>) -> Result<Enclave, RosterError> {
        let crate::custody::Custody { keys, sealer, nsm, floors } = custody;
        let me = keys.identity();
        match roster.iter().find(|n| n.node_id == me.node_id) {
            Some(entry) if *entry == me => {}
            Some(_) => return Err(RosterError::NotMine(me.node_id)),
            None => return Err(RosterError::Missing(me.node_id)),
        }
        let identities = roster.iter().map(|n| (n.node_id.clone(), n.clone())).collect();
        let mut peers = HashMap::new();
        for n in roster {
            let kx = identity::kx_public(&n.kx_key).ok_or_else(|| RosterError::BadKey { node: n.node_id.clone(), key: "kx_key" })?;
            let sign = ed25519_dalek::VerifyingKey::from_bytes(&n.sign_key).map_err(|_| RosterError::BadKey { node: n.node_id.clone(), key: "sign_key" })?;
            peers.insert(n.node_id, Peer { kx, sign });
        }
        let dev = config.mode == conclave_proto::link::Mode::Dev;
        let tampers_sub_shares = dev && crate::fault::armed(crate::fault::Hook::ReshareTamper).is_some();
        let crashes_before_ack = dev && crate::fault::armed(crate::fault::Hook::ReshareCrashBeforeAck).is_some();
        let crashes_after_presignature_taken = dev && crate::fault::armed(crate::fault::Hook::PresignCrashAfterTake).is_some();
        let tampers_partials = dev && crate::fault::armed(crate::fault::Hook::PresignTamper).is_some();
        let mut run = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut run);
        let presign_run = floors.volatile().then_some(run);
        let heavy_sessions = config.heavy_sessions;
        Ok(Enclave {
            config,
            keys,
            sealer,
            floors: Arc::new(floors),
            host: HostLink::default(),
            router: Arc::default(),
            primes: PrimePool::default(),
            turns: crate::turns::Turns::new(heavy_sessions),
            admission: nsm.as_ref().map(Nsm::admission),
            tampers_sub_shares,
            crashes_before_ack,
            crashes_after_presignature_taken,
            tampers_partials,
            nsm,
            identities,
            peers,
            aux_locks: Mutex::default(),
            started: Mutex::default(),
            started_at_ms: crate::now_ms(),
            run,
            presign_run,
            governance: Default::default(),
            audit_log: Default::default(),
        })
    }

    /// An attestation document about this signer answering `nonce`.
    pub fn attest(&self, nonce: &[u8]) -> Result<conclave_proto::attestation::Document, RequestError> {
        if !conclave_proto::attestation::NONCE_BYTES.contains(&nonce.len()) {
            return Err(RequestError::new(ErrorCode::Malformed, format!("a nonce of {} bytes; 16 to 64 are answered", nonce.len())));
        }
        let nsm = self.nsm.as_ref().ok_or_else(|| {
            RequestError::new(ErrorCode::Unsupported, format!("{} runs in {} mode, which has no attestation", self.keys.node_id(), self.config.mode))
        })?;
        nsm.attest(&self.keys.identity(), nonce, None)
            .map(conclave_proto::attestation::Document)
            .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))
    }

    /// Admits every other participant of `plan` that has not shown this
    /// node a passing attestation document recently (nodes that attest
    /// only). A refusal is reported to the host (counted, logged) and fails
    /// the attempt blaming the peer, so the request moves to a quorum
    /// without it.
    async fn admit_participants(&self, plan: &SessionPlan) -> Result<(), RequestError> {
        let Some(admission) = &self.admission else {
            return Ok(());
        };
        for peer in plan.participants.iter().filter(|p| *p != self.keys.node_id()) {
            if admission.is_admitted(peer) {
                continue;
            }
            let identity = self.identities.get(peer).ok_or_else(|| RequestError::new(ErrorCode::Malformed, format!("{peer} is not in the roster")))?;
            let mut nonce = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
            let unavailable = |why: String| RequestError::new(ErrorCode::PeerUnavailable, format!("{peer}'s attestation: {why}")).blaming(vec![peer.clone()]);
            let document = match self.host.peer_attestation(peer, &nonce).await {
                Ok(Ok(document)) => document,
                Ok(Err(e)) => return Err(unavailable(e.reason)),
                Err(e) => return Err(unavailable(e.to_string())),
            };
            match admission.check(&document.0, identity, &nonce) {
                Ok(pcr0) => {
                    tracing::info!(%peer, pcr0 = %hex::encode(&pcr0), "peer admitted by its attestation");
                    self.host.send(FromEnclave::Admitted { peer: peer.clone(), pcr0 });
                }
                Err(refusal) => {
                    let reason = format!("{peer} refused: {}: {refusal}", refusal.check());
                    tracing::warn!(%peer, check = refusal.check(), %refusal, "peer not admitted");
                    self.host.send(FromEnclave::Rejected { code: ErrorCode::PeerUnattested, reason: reason.clone(), peer: Some(peer.clone()) });
                    return Err(RequestError::new(ErrorCode::PeerUnattested, reason).blaming(vec![peer.clone()]));
                }
            }
        }
        Ok(())
    }

    /// A roster peer.
    pub fn peer(&self, node: &NodeId) -> Result<&Peer, RequestError> {
        self.peers.get(node).ok_or_else(|| RequestError::new(ErrorCode::Malformed, format!("{node} is not in the roster")))
    }

    /// Handles a `Start` frame to its end, reporting `Finished` to the host.
    pub async fn start(self: Arc<Self>, request: SignedRequest, plan: SessionPlan, blobs: Vec<SlotBlob>) {
        let request_id = plan.request_id.clone();
        if !self.claim(&request_id, plan.attempt) {
            tracing::warn!(request = %request_id, attempt = plan.attempt, "refusing a request attempt: a later one ran here, or one completed");
            let error = RequestError::new(
                ErrorCode::ProtocolAbort,
                format!("request {request_id}: attempt {} is superseded here, or an attempt completed or gave away its signature share", plan.attempt),
            );
            let session = SessionId::derive(SessionKind::Sign, &request_id, plan.attempt);
            self.host.send(FromEnclave::Finished { request_id, attempt: plan.attempt, session, outcome: Outcome::Error { error } });
            return;
        }
        let known: HashSet<&NodeId> = self.peers.keys().collect();
        let now = crate::now_ms();
        let authorised = policy::authorise(&self.config, &known, &request, &plan, now);
        let deadline = Instant::now() + Duration::from_millis(plan.deadline_ms.saturating_sub(now));
        let attempt = Attempt { plan: &plan, body: request.body_hash(), deadline };
        // A sign request is judged by the policy (which also says how old
        // it may be); the others by the configured age.
        let judged = match authorised {
            Ok(RequestBody::Sign(s)) => self.judge(&request, &s, &attempt, now).await.map(|judged| (RequestBody::Sign(s), judged)),
            Ok(body) => policy::fresh(body.issued_at_ms(), self.config.max_request_age, now).map(|()| (body, governance::Judged::default())),
            Err(e) => Err(e),
        };
        let authorised = match judged {
            // What this signer did before it started is forgotten (its
            // claims live in memory), so a request from before then could
            // run here a second time: refused, blaming this node, so that
            // the request moves to a quorum without it. A request the
            // wallet's ledger recorded is kept from that by the ledger.
            Ok((body, judged)) if !judged.recorded && body.issued_at_ms() < self.started_at_ms => {
                Err(RequestError::new(ErrorCode::PeerUnavailable, format!("{}'s signer restarted after request {request_id} was issued", self.keys.node_id()))
                    .blaming(vec![self.keys.node_id().clone()]))
            }
            Ok((body, judged)) => {
                if let Some(rule) = &judged.rule {
                    tracing::info!(request = %request_id, rule, "the policy allows it");
                }
                self.admit_participants(&plan).await.map(|()| body)
            }
            Err(e) => Err(e),
        };
        let (session, result) = match authorised {
            Ok(RequestBody::Keygen(k)) => (attempt.session(SessionKind::Keygen), self.keygen(&k, &attempt).await.map(Completed::Keygen)),
            Ok(RequestBody::Sign(s)) => (attempt.session(SessionKind::Sign), self.sign(&s, &attempt, blobs).await.map(Completed::Sign)),
            Ok(RequestBody::Reshare(r)) => (attempt.session(SessionKind::Reshare), self.reshare(&r, &attempt).await.map(Completed::Reshare)),
            Err(e) => (attempt.session(SessionKind::Sign), Err(e)),
        };
        if let Ok(completed) = &result {
            self.completed(&request_id);
            self.audit_after(audit_event(attempt.body, &request_id, completed));
        }
        match &result {
            Ok(_) => tracing::info!(request = %request_id, %session, "session completed"),
            Err(e) => {
                tracing::warn!(request = %request_id, %session, code = %e.code, reason = %e.reason, "session failed")
            }
        }
        let outcome = match result {
            Ok(completed) => match self.endorse(&request, completed).await {
                Ok(result) => Outcome::Ok { result },
                Err(error) => Outcome::Error { error },
            },
            Err(error) => Outcome::Error { error },
        };
        self.host.send(FromEnclave::Finished { request_id, attempt: plan.attempt, session, outcome });
    }

    /// States what came of `request` and signs the statement with this
    /// node's identity key, so that no host can change what it says.
    /// The endorsement carries the head of this signer's audit trail,
    /// signed over the request's hash: as committed, so through the entry
    /// that allowed the request (the entry of its result is written in the
    /// background, see [`Enclave::audit_after`]).
    async fn endorse(&self, request: &SignedRequest, result: Completed) -> Result<Endorsed, RequestError> {
        let statement = Statement { v: conclave_proto::PROTOCOL_VERSION, request: request.body_hash(), result };
        let statement = serde_json::to_string(&statement).expect("statements serialise");
        let signature =
            self.keys.sign(&Endorsed::signing_bytes(&statement)).map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign the result: {e}")))?;
        let audit_head = Some(self.committed_head(request.body_hash()).await?);
        Ok(Endorsed {
            statement,
            endorsements: vec![Endorsement { node: self.keys.node_id().clone(), signature: signature.signature, run_key: signature.run_key, audit_head }],
        })
    }

    /// Fencing: a request runs here at most one attempt at a time, in
    /// increasing order, each at most once. Claiming attempt `n` ends any
    /// earlier attempt still running here, so that two attempts of one
    /// request never both complete through this node.
    fn claim(&self, request: &RequestId, attempt: u32) -> bool {
        let mut started = self.started.lock().expect("started lock");
        let now = Instant::now();
        if let Some(cutoff) = now.checked_sub(self.config.max_request_age * 2) {
            started.forget_before(cutoff);
        }
        let previous = match started.by_request.get(request) {
            Some(claim) if claim.attempt >= attempt || claim.completed || claim.released => return false,
            Some(claim) => Some(claim.attempt),
            None => None,
        };
        started.insert(request, Claim::new(attempt, previous.unwrap_or(0), now));
        drop(started);
        if let Some(previous) = previous {
            self.end_sessions(request, previous);
        }
        true
    }

    /// Handles `Abort`: ends the attempt if it runs here, and makes sure it
    /// never starts here later. If the request was `answered` and this
    /// attempt's share of the signature already left, the attempt runs on
    /// to its end (the peers' last messages are on their way: another
    /// signer completed the request with them), so that this signer
    /// records the signature it released; its round timeout still ends it
    /// if they never come. (An attempt replaced after a failure ends at
    /// once: its peers may be gone, and it would hold its turn.)
    pub fn abort(&self, request: &RequestId, attempt: u32, answered: bool) {
        let mut started = self.started.lock().expect("started lock");
        let released = match started.by_request.get_mut(request) {
            Some(claim) => {
                let released = answered && claim.released && claim.attempt == attempt;
                claim.attempt = claim.attempt.max(attempt);
                claim.ended = claim.ended.max(attempt);
                released
            }
            None => {
                started.insert(request, Claim::new(attempt, attempt, Instant::now()));
                false
            }
        };
        drop(started);
        if !released {
            self.end_sessions(request, attempt);
        }
    }

    /// Opens the inbox of a session of `spec`'s attempt, if the attempt may
    /// still run here. Checked where the session registers, not only when
    /// the request arrived: however long the host delayed the frames that
    /// led here (a slow `Loaded`, say), an attempt that was superseded,
    /// aborted or whose request completed in the meantime never starts.
    pub fn inbox(self: &Arc<Self>, spec: &SessionSpec) -> Result<crate::session::Inbox, RequestError> {
        let current = self.started.lock().expect("started lock").by_request.get(&spec.request).is_some_and(|c| c.allows(spec.attempt));
        if !current {
            return Err(RequestError::new(
                ErrorCode::ProtocolAbort,
                format!("request {}: attempt {} ended here before its session started", spec.request, spec.attempt),
            ));
        }
        self.router.register(spec.id)
    }

    /// Keeps a write of `attempt` under way with the attempt's claim
    /// (forgotten with it).
    fn before_release(&self, request: &RequestId, attempt: u32, write: Durable) {
        if let Some(claim) = self.started.lock().expect("started lock").by_request.get_mut(request).filter(|c| c.attempt == attempt) {
            claim.writes.push(write);
        }
    }

    /// Waits until every write of `attempt` under way is durable (at once
    /// if there are none): what precedes [`Enclave::release`], so that no
    /// share of a signature leaves before the decision that allowed it is
    /// on record and the presignature it used is spent.
    pub async fn durable(&self, request: &RequestId, attempt: u32) -> Result<(), RequestError> {
        let writes =
            self.started.lock().expect("started lock").by_request.get_mut(request).filter(|c| c.attempt == attempt).map(|c| std::mem::take(&mut c.writes));
        for write in writes.unwrap_or_default() {
            write.wait().await?;
        }
        Ok(())
    }

    /// Called before this signer's share of a signature leaves in
    /// `attempt`: allowed only while the attempt is the request's current
    /// one here, and then no later attempt runs here (see `claim`).
    pub fn release(&self, request: &RequestId, attempt: u32) -> Result<(), RequestError> {
        let mut started = self.started.lock().expect("started lock");
        match started.by_request.get_mut(request) {
            Some(claim) if claim.allows(attempt) => {
                claim.released = true;
                Ok(())
            }
            _ => Err(RequestError::new(ErrorCode::ProtocolAbort, format!("request {request}: attempt {attempt} ended here before its signature share left"))),
        }
    }

    fn completed(&self, request: &RequestId) {
        if let Some(claim) = self.started.lock().expect("started lock").by_request.get_mut(request) {
            claim.completed = true;
        }
    }

    fn end_sessions(&self, request: &RequestId, attempt: u32) {
        for kind in SessionKind::ALL {
            self.router.abort(SessionId::derive(kind, request, attempt));
        }
        tracing::info!(request = %request, attempt, "attempt ended here");
    }

    fn floor(&self, slot: &BlobSlot) -> Result<u32, RequestError> {
        self.floors.get(&slot.path()).map_err(floor_error)
    }

    /// Refuses a blob of `slot` older than this signer's floor for it: the
    /// host served a version that was replaced.
    fn above_floor(&self, slot: &BlobSlot, version: u32) -> Result<(), RequestError> {
        let floor = self.floor(slot)?;
        if version < floor {
            return Err(RequestError::new(
                ErrorCode::VersionMismatch,
                format!("the host served version {version} of {}, which this signer replaced by version {floor}", slot.path()),
            ));
        }
        Ok(())
    }

    fn raise_floor(&self, slot: &BlobSlot, version: u32) -> Result<(), RequestError> {
        self.floors.raise(&slot.path(), version).map_err(floor_error)
    }
}

/// A floor that cannot be read or written: this signer's storage fails.
fn floor_error(e: crate::floor::FloorError) -> RequestError {
    RequestError::new(ErrorCode::Storage, format!("version floor: {e}"))
}

/// What the audit trail records of a completed request.
fn audit_event(request: [u8; 32], request_id: &RequestId, completed: &Completed) -> conclave_proto::audit::AuditEvent {
    use conclave_proto::audit::AuditEvent;
    let key = |k: &KeygenResult| (k.wallet.clone(), k.scheme, k.version);
    match completed {
        Completed::Sign(s) => AuditEvent::Signed {
            request,
            request_id: request_id.clone(),
            wallet: s.wallet.clone(),
            scheme: s.scheme,
            version: s.version,
            path: s.path.clone(),
            signature: s.signature.clone(),
        },
        Completed::Keygen(k) => {
            let (wallet, scheme, version) = key(k);
            AuditEvent::KeyCreated { request, request_id: request_id.clone(), wallet, scheme, version, public_key: k.public_key.clone() }
        }
        Completed::Reshare(k) => {
            let (wallet, scheme, version) = key(k);
            AuditEvent::Reshared { request, request_id: request_id.clone(), wallet, scheme, version }
        }
    }
}

/// One attempt at a request, as this signer runs it: what every session
/// of the attempt is bound to.
struct Attempt<'a> {
    plan: &'a SessionPlan,
    /// SHA-256 of the initiator-signed request body.
    body: [u8; 32],
    deadline: Instant,
}

impl Attempt<'_> {
    fn session(&self, kind: SessionKind) -> SessionId {
        SessionId::derive(kind, &self.plan.request_id, self.plan.attempt)
    }

    /// A session of this attempt among `parties` on key `version` (0 before
    /// a key exists). Its execution id binds the session id (request,
    /// attempt, kind), the exact request body, the parties in protocol
    /// order and the key version, so that no message of another request,
    /// attempt, quorum or key version fits it.
    fn spec(&self, kind: SessionKind, parties: Vec<NodeId>, version: u32) -> SessionSpec {
        let id = self.session(kind);
        let mut h = sha2::Sha256::new();
        h.update(b"conclave/execution/v1");
        h.update(id.as_bytes());
        h.update(self.body);
        h.update((parties.len() as u32).to_be_bytes());
        for p in &parties {
            h.update((p.as_str().len() as u32).to_be_bytes());
            h.update(p.as_str().as_bytes());
        }
        h.update(version.to_be_bytes());
        SessionSpec {
            id,
            request: self.plan.request_id.clone(),
            attempt: self.plan.attempt,
            execution: h.finalize().into(),
            parties,
            deadline: self.deadline,
            deadline_ms: self.plan.deadline_ms,
            planned_ms: self.plan.planned_ms,
            round_timeout: Duration::from_millis(self.plan.round_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dev signer alone in its roster, for fencing rules that need no peer.
    fn signer(dir: &std::path::Path) -> Arc<Enclave> {
        let path = dir.join("enclave.toml");
        let state = dir.join("state");
        std::fs::write(
            &path,
            format!(
                "node_id = \"node-1\"\nmode = \"dev\"\nlink = \"unix:{}\"\nstate_dir = \"{}\"\nroster = \"{}\"\ninitiators = [\"{}\"]\n",
                dir.join("s.sock").display(),
                state.display(),
                dir.join("roster.json").display(),
                "00".repeat(32)
            ),
        )
        .unwrap();
        let config = EnclaveConfig::load(&path).unwrap();
        let custody = crate::custody::Custody::open(&config, crate::custody::Missing::Create).unwrap();
        let roster = vec![custody.keys.identity()];
        Arc::new(Enclave::new(config, custody, roster).unwrap())
    }

    fn plan(attempt: u32) -> SessionPlan {
        SessionPlan {
            request_id: RequestId::new("r-1").unwrap(),
            attempt,
            participants: vec![NodeId::new("node-1").unwrap()],
            deadline_ms: crate::now_ms() + 60_000,
            planned_ms: crate::now_ms(),
            round_timeout_ms: 10_000,
            purpose: Purpose::Request,
            approvals: Vec::new(),
        }
    }

    fn spec(plan: &SessionPlan) -> SessionSpec {
        let attempt = Attempt { plan, body: [1; 32], deadline: Instant::now() + Duration::from_secs(60) };
        attempt.spec(SessionKind::Sign, plan.participants.clone(), 1)
    }

    #[test]
    fn an_attempt_that_ended_never_registers_a_session_however_late_it_gets_there() {
        let d = tempfile::tempdir().unwrap();
        let enclave = signer(d.path());
        let (one, two) = (plan(1), plan(2));
        // Attempt 1 is claimed, then (its frames delayed by the host) attempt 2.
        assert!(enclave.claim(&one.request_id, 1));
        assert!(enclave.claim(&two.request_id, 2));
        assert!(enclave.inbox(&spec(&one)).is_err(), "a superseded attempt never starts");
        assert!(!enclave.claim(&one.request_id, 1), "nor is it claimed again");
        let running = enclave.inbox(&spec(&two)).expect("the live attempt starts");
        drop(running);

        // An attempt aborted between its claim and its session.
        assert!(enclave.claim(&RequestId::new("r-2").unwrap(), 1));
        let aborted = SessionPlan { request_id: RequestId::new("r-2").unwrap(), ..plan(1) };
        enclave.abort(&aborted.request_id, 1, false);
        assert!(enclave.inbox(&spec(&aborted)).is_err());

        // An attempt whose signature share left: no later attempt here,
        // even if it never completed (its peers might still finish it).
        let released = SessionPlan { request_id: RequestId::new("r-4").unwrap(), ..plan(1) };
        assert!(enclave.claim(&released.request_id, 1));
        enclave.release(&released.request_id, 1).unwrap();
        assert!(!enclave.claim(&released.request_id, 2));
        // A superseded attempt cannot give its share away.
        assert!(enclave.release(&one.request_id, 1).is_err());

        // An abort because another signer answered the request ends a
        // running attempt, unless its share left: that one runs on to
        // record the signature it released.
        let sessions = |name: &str| {
            let plan = SessionPlan { request_id: RequestId::new(name).unwrap(), ..plan(1) };
            assert!(enclave.claim(&plan.request_id, 1));
            let inbox = enclave.inbox(&spec(&plan)).unwrap();
            (plan, inbox)
        };
        let (gave, _gave_inbox) = sessions("r-5");
        let (kept, _kept_inbox) = sessions("r-6");
        enclave.release(&gave.request_id, 1).unwrap();
        enclave.abort(&gave.request_id, 1, true);
        assert_eq!(enclave.router.live_sessions(), 2, "the attempt whose share left runs on");
        enclave.abort(&kept.request_id, 1, true);
        assert_eq!(enclave.router.live_sessions(), 1, "the other ends at once");
        // Replaced after a failure, even an attempt whose share left ends.
        enclave.abort(&gave.request_id, 1, false);
        assert_eq!(enclave.router.live_sessions(), 0);

        // A request that completed runs no further attempt.
        let done = SessionPlan { request_id: RequestId::new("r-3").unwrap(), ..plan(1) };
        assert!(enclave.claim(&done.request_id, 1));
        enclave.completed(&done.request_id);
        assert!(!enclave.claim(&done.request_id, 2));
    }

    #[test]
    fn claims_are_forgotten_in_the_order_they_were_last_made() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let claim = |s: u64| Claim::new(1, 0, at(s));
        let (a, b, c) = (RequestId::new("a").unwrap(), RequestId::new("b").unwrap(), RequestId::new("c").unwrap());
        let mut claims = Claims::default();
        claims.insert(&a, claim(0));
        claims.insert(&b, claim(1));
        claims.insert(&a, Claim { attempt: 2, ..claim(2) });
        claims.insert(&c, claim(3));
        claims.forget_before(at(2));
        assert!(!claims.by_request.contains_key(&b), "made before the cutoff");
        assert_eq!(claims.by_request.get(&a).map(|c| c.attempt), Some(2), "made again after it");
        assert!(claims.by_request.contains_key(&c));
        claims.forget_before(at(3));
        assert_eq!(claims.by_request.keys().collect::<Vec<_>>(), [&c]);
        assert_eq!(claims.made.len(), 1, "nothing is kept for a forgotten claim");
    }

    #[test]
    fn execution_ids_bind_the_request_body_the_parties_and_the_key_version() {
        let p = plan(1);
        let at = |body: [u8; 32]| Attempt { plan: &p, body, deadline: Instant::now() };
        let base = at([1; 32]).spec(SessionKind::Sign, vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()], 1);
        let other_body = at([2; 32]).spec(SessionKind::Sign, base.parties.clone(), 1);
        let other_parties = at([1; 32]).spec(SessionKind::Sign, vec![NodeId::new("a").unwrap(), NodeId::new("c").unwrap()], 1);
        let other_version = at([1; 32]).spec(SessionKind::Sign, base.parties.clone(), 2);
        for other in [&other_body, &other_parties, &other_version] {
            assert_eq!(other.id, base.id, "routing stays by request and attempt");
            assert_ne!(other.execution, base.execution);
        }
        assert_eq!(at([1; 32]).spec(SessionKind::Sign, base.parties.clone(), 1).execution, base.execution);
    }
}
