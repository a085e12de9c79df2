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
use crate::session::{Router, SessionSpec};
use crate::share::{storage, SecretShare, ShareRecord};
use crate::{ecdsa, eddsa, policy, reshare, session};
use conclave_proto::ids::SessionKind;
use conclave_proto::link::{BlobSlot, FromEnclave, NodeIdentity, SessionPlan, StoredBlob};
use conclave_proto::request::{KeygenRequest, RequestBody, ReshareRequest, SignPayload, SignRequest, SignedRequest};
use conclave_proto::result::{Completed, KeygenResult, Outcome, SignResult};
use conclave_proto::statement::{Endorsed, Endorsement, Statement};
use conclave_proto::{CommitteeId, ErrorCode, NodeId, RequestError, RequestId, Scheme, SessionId};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

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
}

impl Claim {
    /// Whether `attempt` may still run here: it is the latest, it was not
    /// ended, and no attempt completed.
    fn allows(&self, attempt: u32) -> bool {
        attempt == self.attempt && attempt > self.ended && !self.completed
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
    pub floors: Floors,
    /// The link to the host.
    pub host: HostLink,
    /// Incoming envelopes to sessions.
    pub router: Arc<Router>,
    /// Paillier primes.
    pub primes: PrimePool,
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
    /// Per request: the highest attempt started here, when, and whether one
    /// completed (then no later attempt runs here).
    started: Mutex<HashMap<RequestId, Claim>>,
    /// When this signer started (Unix ms): requests issued before are
    /// refused, since `started` does not survive a restart.
    started_at_ms: u64,
}

impl Enclave {
    /// Builds the enclave from its configuration, keys, sealer and roster.
    pub fn new(config: EnclaveConfig, custody: crate::custody::Custody, roster: Vec<NodeIdentity>) -> Result<Enclave, String> {
        let crate::custody::Custody { keys, sealer, nsm, floors } = custody;
        let me = keys.identity();
        match roster.iter().find(|n| n.node_id == me.node_id) {
            Some(entry) if *entry == me => {}
            Some(_) => return Err(format!("the roster's entry for {} does not match this node's keys", me.node_id)),
            None => return Err(format!("the roster has no entry for {}", me.node_id)),
        }
        let identities = roster.iter().map(|n| (n.node_id.clone(), n.clone())).collect();
        let mut peers = HashMap::new();
        for n in roster {
            let kx = identity::kx_public(&n.kx_key).ok_or_else(|| format!("roster: bad kx_key for {}", n.node_id))?;
            let sign = ed25519_dalek::VerifyingKey::from_bytes(&n.sign_key).map_err(|_| format!("roster: bad sign_key for {}", n.node_id))?;
            peers.insert(n.node_id, Peer { kx, sign });
        }
        let dev = config.mode == conclave_proto::link::Mode::Dev;
        let tampers_sub_shares = dev && crate::fault::armed(crate::fault::Hook::ReshareTamper).is_some();
        let crashes_before_ack = dev && crate::fault::armed(crate::fault::Hook::ReshareCrashBeforeAck).is_some();
        Ok(Enclave {
            config,
            keys,
            sealer,
            floors,
            host: HostLink::default(),
            router: Arc::default(),
            primes: PrimePool::default(),
            admission: nsm.as_ref().map(Nsm::admission),
            tampers_sub_shares,
            crashes_before_ack,
            nsm,
            identities,
            peers,
            aux_locks: Mutex::default(),
            started: Mutex::default(),
            started_at_ms: crate::now_ms(),
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
    pub async fn start(self: Arc<Self>, request: SignedRequest, plan: SessionPlan) {
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
        let authorised = match authorised {
            // What this signer did before it started is forgotten (its
            // claims live in memory), so a request from before then could
            // run here a second time: refused, blaming this node, so that
            // the request moves to a quorum without it.
            Ok(body) if body.issued_at_ms() < self.started_at_ms => {
                Err(RequestError::new(ErrorCode::PeerUnavailable, format!("{}'s signer restarted after request {request_id} was issued", self.keys.node_id()))
                    .blaming(vec![self.keys.node_id().clone()]))
            }
            Ok(body) => self.admit_participants(&plan).await.map(|()| body),
            refused => refused,
        };
        let attempt = Attempt { plan: &plan, body: sha2::Sha256::digest(request.body.as_bytes()).into(), deadline };
        let (session, result) = match authorised {
            Ok(RequestBody::Keygen(k)) => (attempt.session(SessionKind::Keygen), self.keygen(&k, &attempt).await.map(Completed::Keygen)),
            Ok(RequestBody::Sign(s)) => (attempt.session(SessionKind::Sign), self.sign(&s, &attempt).await.map(Completed::Sign)),
            Ok(RequestBody::Reshare(r)) => (attempt.session(SessionKind::Reshare), self.reshare(&r, &attempt).await.map(Completed::Reshare)),
            Err(e) => (attempt.session(SessionKind::Sign), Err(e)),
        };
        if result.is_ok() {
            self.completed(&request_id);
        }
        match &result {
            Ok(_) => tracing::info!(request = %request_id, %session, "session completed"),
            Err(e) => {
                tracing::warn!(request = %request_id, %session, code = %e.code, reason = %e.reason, "session failed")
            }
        }
        let outcome = match result.and_then(|completed| self.endorse(&request, completed)) {
            Ok(result) => Outcome::Ok { result },
            Err(error) => Outcome::Error { error },
        };
        self.host.send(FromEnclave::Finished { request_id, attempt: plan.attempt, session, outcome });
    }

    /// States what came of `request` and signs the statement with this
    /// node's identity key, so that no host can change what it says.
    fn endorse(&self, request: &SignedRequest, result: Completed) -> Result<Endorsed, RequestError> {
        let statement = Statement { v: conclave_proto::PROTOCOL_VERSION, request: sha2::Sha256::digest(request.body.as_bytes()).into(), result };
        let statement = serde_json::to_string(&statement).expect("statements serialise");
        let signature =
            self.keys.sign(&Endorsed::signing_bytes(&statement)).map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign the result: {e}")))?;
        Ok(Endorsed { statement, endorsements: vec![Endorsement { node: self.keys.node_id().clone(), signature }] })
    }

    /// Fencing: a request runs here at most one attempt at a time, in
    /// increasing order, each at most once. Claiming attempt `n` ends any
    /// earlier attempt still running here, so that two attempts of one
    /// request never both complete through this node.
    fn claim(&self, request: &RequestId, attempt: u32) -> bool {
        let mut started = self.started.lock().expect("started lock");
        let horizon = self.config.max_request_age * 2;
        started.retain(|_, claim| claim.at.elapsed() < horizon);
        let previous = match started.get(request) {
            Some(claim) if claim.attempt >= attempt || claim.completed || claim.released => return false,
            Some(claim) => Some(claim.attempt),
            None => None,
        };
        started.insert(request.clone(), Claim { attempt, ended: previous.unwrap_or(0), at: Instant::now(), completed: false, released: false });
        drop(started);
        if let Some(previous) = previous {
            self.end_sessions(request, previous);
        }
        true
    }

    /// Handles `Abort`: ends the attempt if it runs here, and makes sure it
    /// never starts here later.
    pub fn abort(&self, request: &RequestId, attempt: u32) {
        let mut started = self.started.lock().expect("started lock");
        let claim = started.entry(request.clone()).or_insert(Claim { attempt, ended: attempt, at: Instant::now(), completed: false, released: false });
        claim.attempt = claim.attempt.max(attempt);
        claim.ended = claim.ended.max(attempt);
        drop(started);
        self.end_sessions(request, attempt);
    }

    /// Opens the inbox of a session of `spec`'s attempt, if the attempt may
    /// still run here. Checked where the session registers, not only when
    /// the request arrived: however long the host delayed the frames that
    /// led here (a slow `Loaded`, say), an attempt that was superseded,
    /// aborted or whose request completed in the meantime never starts.
    pub fn inbox(self: &Arc<Self>, spec: &SessionSpec) -> Result<crate::session::Inbox, RequestError> {
        let current = self.started.lock().expect("started lock").get(&spec.request).is_some_and(|c| c.allows(spec.attempt));
        if !current {
            return Err(RequestError::new(
                ErrorCode::ProtocolAbort,
                format!("request {}: attempt {} ended here before its session started", spec.request, spec.attempt),
            ));
        }
        self.router.register(spec.id)
    }

    /// Called before this signer's share of a signature leaves in
    /// `attempt`: allowed only while the attempt is the request's current
    /// one here, and then no later attempt runs here (see `claim`).
    pub fn release(&self, request: &RequestId, attempt: u32) -> Result<(), RequestError> {
        let mut started = self.started.lock().expect("started lock");
        match started.get_mut(request) {
            Some(claim) if claim.allows(attempt) => {
                claim.released = true;
                Ok(())
            }
            _ => Err(RequestError::new(ErrorCode::ProtocolAbort, format!("request {request}: attempt {attempt} ended here before its signature share left"))),
        }
    }

    fn completed(&self, request: &RequestId) {
        if let Some(claim) = self.started.lock().expect("started lock").get_mut(request) {
            claim.completed = true;
        }
    }

    fn end_sessions(&self, request: &RequestId, attempt: u32) {
        for kind in [SessionKind::Keygen, SessionKind::AuxInfo, SessionKind::Sign, SessionKind::Reshare, SessionKind::ReshareAck] {
            self.router.abort(SessionId::derive(kind, request, attempt));
        }
        tracing::info!(request = %request, attempt, "attempt ended here");
    }

    async fn keygen(self: &Arc<Self>, req: &KeygenRequest, attempt: &Attempt<'_>) -> Result<KeygenResult, RequestError> {
        let mut committee = req.committee.clone();
        committee.sort();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        if self.host.load(slot.clone()).await?.is_some() {
            return Err(RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme)));
        }
        let spec = attempt.spec(SessionKind::Keygen, committee.clone(), 0);
        let (public_key, xpub, secret) = match req.scheme {
            Scheme::Ecdsa => {
                let aux = self.committee_aux(&committee, attempt).await?;
                let out = ecdsa::keygen(self, &spec, req.threshold, aux).await?;
                (out.public_key, Some(out.xpub), out.share)
            }
            Scheme::Eddsa => {
                let out = eddsa::keygen(self, &spec, req.threshold).await?;
                (out.public_key, None, out.share)
            }
        };
        let public = KeygenResult { wallet: req.wallet.clone(), scheme: req.scheme, public_key, xpub, version: 1, threshold: req.threshold, committee };
        let record = ShareRecord { public, secret: SecretShare::new(secret) };
        let blob = record.seal(self.sealer.as_ref(), self.keys.node_id(), &slot)?;
        self.host.store(slot.clone(), blob).await.map_err(|e| match e {
            crate::link::HostCallError::Refused(conclave_proto::link::StoreError::Exists) => {
                RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme))
            }
            other => other.into(),
        })?;
        self.raise_floor(&slot, 1)?;
        Ok(record.public.clone())
    }

    fn floor(&self, slot: &BlobSlot) -> Result<u32, RequestError> {
        self.floors.get(&slot.path()).map_err(|e| RequestError::new(ErrorCode::Storage, format!("version floor: {e}")))
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
        self.floors.raise(&slot.path(), version).map_err(|e| RequestError::new(ErrorCode::Storage, format!("version floor: {e}")))
    }

    /// Moves a wallet's key to a new committee (`crate::reshare`): every
    /// participant that holds the named version deals, every new member
    /// joins, and once all new members have confirmed the same new version,
    /// each stores version + 1: its new share, or (a member that leaves) a
    /// record without one, so that it never signs with the old share again.
    /// Until then nothing is stored and the old version still signs.
    async fn reshare(self: &Arc<Self>, req: &ReshareRequest, attempt: &Attempt<'_>) -> Result<KeygenResult, RequestError> {
        let me = self.keys.node_id().clone();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        let old = match req.committee.contains(&me) {
            // Exactly the version the request names: a newer one stored by a
            // reshare cut before every new member acknowledged is not in force.
            true => {
                let blob = self.host.load_version(slot.clone(), req.version).await?.ok_or_else(|| {
                    RequestError::new(ErrorCode::UnknownWallet, format!("node {me} holds no version {} of {}'s {} key", req.version, req.wallet, req.scheme))
                })?;
                self.above_floor(&slot, blob.version)?;
                let record = ShareRecord::open(self.sealer.as_ref(), &me, &slot, &blob)?;
                let p = &record.public;
                if p.public_key != req.public_key || p.xpub != req.xpub || p.committee != req.committee || p.threshold != req.threshold {
                    return Err(RequestError::new(
                        ErrorCode::Malformed,
                        format!("the request names another key than this node's share of {} (version {})", req.wallet, p.version),
                    ));
                }
                Some(record)
            }
            false => match self.host.load(slot.clone()).await? {
                // What a cut reshare left here, never committed to: replaced.
                Some(blob) if blob.version > req.version && self.floor(&slot)? < blob.version => None,
                Some(blob) => {
                    self.above_floor(&slot, blob.version)?;
                    let record = ShareRecord::open(self.sealer.as_ref(), &me, &slot, &blob)?;
                    // A member that left an earlier version keeps only its record.
                    if record.public.committee.contains(&me) {
                        return Err(RequestError::new(
                            ErrorCode::WalletExists,
                            format!("node {me} already holds version {} of {}", record.public.version, req.wallet),
                        ));
                    }
                    None
                }
                None => None,
            },
        };
        let mut committee = req.new_committee.clone();
        committee.sort();
        let mut parties = attempt.plan.participants.clone();
        parties.sort();
        let roles = reshare::rounds::Roles {
            dealing: parties.iter().map(|p| req.committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
            joining: parties.iter().map(|p| committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
        };
        let joining = committee.contains(&me);
        // The new committee's aux info comes first, so that the sealed share
        // signs the moment it is stored.
        let aux = match (req.scheme, joining) {
            (Scheme::Ecdsa, true) => Some(self.committee_aux(&committee, attempt).await?),
            _ => None,
        };
        let spec = attempt.spec(SessionKind::Reshare, parties.clone(), req.version);
        let version = req.version + 1;
        let blame = |e: reshare::rounds::RoundsError| reshare_error(e, &req.committee, &parties);
        let chain_code = match &req.xpub {
            Some(x) => Some(conclave_proto::xpub::Xpub::decode(x).map_err(|e| RequestError::new(ErrorCode::Malformed, format!("xpub: {e}")))?.chain_code),
            None => None,
        };
        let rounds = ReshareSession {
            spec: &spec,
            roles: &roles,
            committee: &committee,
            threshold: req.new_threshold,
            version,
            public_key: &req.public_key,
            chain_code,
            tamper: self.tampers_sub_shares,
        };
        let (secret, xpub) = match req.scheme {
            Scheme::Ecdsa => {
                let share = old.as_ref().map(|r| ecdsa::reshare_source(r.secret.expose())).transpose().map_err(|e| internal_reshare(e.to_string()))?;
                match reshare_rounds(self, rounds, share).await?.map_err(blame)? {
                    reshare::rounds::Reshared::Joined(share) => {
                        let xpub = share.chain_code.map(|chain_code| {
                            conclave_proto::xpub::Xpub {
                                public_key: share.core.shared_public_key.to_bytes(true).as_ref().try_into().expect("a compressed secp256k1 point is 33 bytes"),
                                chain_code,
                            }
                            .encode()
                        });
                        let incomplete = ecdsa::reshared(share).map_err(|e| internal_reshare(e.to_string()))?;
                        (Some(ecdsa::complete_reshared(&incomplete, aux.as_deref().expect("a joining ECDSA member made aux info"))?), xpub)
                    }
                    reshare::rounds::Reshared::Left => (None, req.xpub.clone()),
                }
            }
            Scheme::Eddsa => {
                let share = old.as_ref().map(|r| eddsa::reshare_source(r.secret.expose())).transpose().map_err(|e| internal_reshare(e.to_string()))?;
                match reshare_rounds(self, rounds, share).await?.map_err(blame)? {
                    reshare::rounds::Reshared::Joined(share) => (Some(eddsa::reshared(share).map_err(|e| internal_reshare(e.to_string()))?), None),
                    reshare::rounds::Reshared::Left => (None, None),
                }
            }
        };
        let public = KeygenResult {
            wallet: req.wallet.clone(),
            scheme: req.scheme,
            public_key: req.public_key.clone(),
            xpub,
            version,
            threshold: req.new_threshold,
            committee,
        };
        // A member that leaves keeps a record of the version that replaced
        // its share, and no share: it cannot sign with the old one again.
        let record = ShareRecord { public, secret: SecretShare::new(secret.unwrap_or_default()) };
        let blob = record.seal(self.sealer.as_ref(), &me, &slot)?;
        // New members store first; the old version stays in force (no floor
        // raised) until every one of them says it stored.
        if joining {
            self.store_uncommitted(&slot, blob.clone()).await?;
            if self.crashes_before_ack {
                tracing::warn!("FAULT INJECTION: stopping after storing the new share, before acknowledging it");
                std::process::exit(70);
            }
        }
        let joins: Vec<bool> = roles.joining.iter().map(Option::is_some).collect();
        let i = spec.index_of(&me).expect("checked by the policy");
        let ack = attempt.spec(SessionKind::ReshareAck, parties.clone(), version);
        session::run(self, &ack, move |party: session::Party<reshare::stored::Msg>| {
            Ok::<_, std::convert::Infallible>(futures::executor::block_on(reshare::stored::run(party, i, &joins, u64::from(version))))
        })
        .await?
        .map_err(|e| {
            let error = RequestError::new(ErrorCode::ProtocolAbort, format!("resharing: {e}"));
            match e {
                reshare::stored::AckError::NotStored { party } | reshare::stored::AckError::OutOfRole { party } => {
                    error.blaming(vec![parties[usize::from(party)].clone()])
                }
                reshare::stored::AckError::Transport(_) => error,
            }
        })?;
        // Every new member stored the new version: commit to it, and a
        // member that leaves retires its share.
        if !joining {
            self.store_uncommitted(&slot, blob).await?;
        }
        self.raise_floor(&slot, version)?;
        tracing::info!(wallet = %req.wallet, scheme = %req.scheme, version, joined = joining, "reshared");
        Ok(record.public.clone())
    }

    /// Stores a version this signer has not committed to (its floor is
    /// below it), replacing what a cut reshare left at that version.
    async fn store_uncommitted(&self, slot: &BlobSlot, blob: StoredBlob) -> Result<(), RequestError> {
        use crate::link::HostCallError::Refused;
        match self.host.store(slot.clone(), blob.clone()).await {
            Err(Refused(conclave_proto::link::StoreError::Exists)) if self.floor(slot)? < blob.version => Ok(self.host.replace(slot.clone(), blob).await?),
            stored => Ok(stored?),
        }
    }

    /// The committee's aux info, generated (once, whichever keygen asks
    /// first) if it does not exist yet.
    async fn committee_aux(self: &Arc<Self>, committee: &[NodeId], attempt: &Attempt<'_>) -> Result<Zeroizing<Vec<u8>>, RequestError> {
        let id = CommitteeId::of(committee);
        let slot = BlobSlot::AuxInfo { committee: id };
        let lock = self.aux_locks.lock().expect("aux lock").entry(id).or_default().clone();
        let _guard = lock.lock().await;
        let node = self.keys.node_id();
        if let Some(blob) = self.host.load(slot.clone()).await? {
            let ctx = SealContext::blob(node, &slot, blob.version);
            return self.sealer.open(&ctx, &blob.sealed).map_err(storage);
        }
        tracing::info!(committee = %id, "generating aux info for a new committee");
        let spec = attempt.spec(SessionKind::AuxInfo, committee.to_vec(), 0);
        // Peers whose primes are ready first start at once: their messages
        // must wait here for as long as this node's primes take.
        let inbox = self.inbox(&spec)?;
        let primes = PrimePool::take(self).await.map_err(|e| RequestError::new(ErrorCode::Storage, format!("version floor: {e}")))?;
        let aux = ecdsa::aux_info(self, &spec, inbox, primes).await?;
        let ctx = SealContext::blob(node, &slot, 1);
        let sealed = self.sealer.seal(&ctx, &aux).map_err(storage)?;
        self.host.store(slot, StoredBlob { version: 1, sealed }).await?;
        Ok(aux)
    }

    async fn sign(self: &Arc<Self>, req: &SignRequest, attempt: &Attempt<'_>) -> Result<SignResult, RequestError> {
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        // Exactly the version the request names (the initiator read it from
        // the committee's signed record), and none this signer replaced.
        let blob = match self.host.load_version(slot.clone(), req.version).await? {
            Some(blob) => blob,
            None => {
                let held = self.host.load(slot.clone()).await?.map(|b| b.version);
                return Err(match held {
                    Some(held) => RequestError::new(
                        ErrorCode::VersionMismatch,
                        format!("the request names version {} of {}, node {} holds version {held}", req.version, req.wallet, self.keys.node_id()),
                    ),
                    None => RequestError::new(ErrorCode::UnknownWallet, format!("node {} holds no {} key for {}", self.keys.node_id(), req.scheme, req.wallet)),
                });
            }
        };
        self.above_floor(&slot, blob.version)?;
        let record = ShareRecord::open(self.sealer.as_ref(), self.keys.node_id(), &slot, &blob)?;
        let committee = &record.public.committee;
        // Signers in keygen-index order: a signer's index in the session is
        // its position here, and `indexes` maps it back to keygen.
        let mut indexes = Vec::with_capacity(attempt.plan.participants.len());
        for p in &attempt.plan.participants {
            let i = committee
                .iter()
                .position(|c| c == p)
                .ok_or_else(|| RequestError::new(ErrorCode::Malformed, format!("{p} is not in the committee of {}", req.wallet)))?;
            indexes.push(i as u16);
        }
        indexes.sort();
        if indexes.len() != usize::from(record.public.threshold) {
            return Err(RequestError::new(
                ErrorCode::Malformed,
                format!("{} signers planned, the key needs exactly {}", indexes.len(), record.public.threshold),
            ));
        }
        let signers: Vec<NodeId> = indexes.iter().map(|&i| committee[usize::from(i)].clone()).collect();
        let spec = attempt.spec(SessionKind::Sign, signers.clone(), record.public.version);
        let (signature, recovery_id, public_key) = match req.scheme {
            Scheme::Ecdsa => {
                let digest: [u8; 32] = match &req.payload {
                    SignPayload::Digest(d) => d.as_slice().try_into().expect("validated to 32 bytes"),
                    SignPayload::Message(m) => sha2::Sha256::digest(m).into(),
                };
                let out = ecdsa::sign(self, &spec, indexes, record.secret.expose(), digest, req.path.clone()).await?;
                (out.signature, Some(out.recovery_id), out.public_key)
            }
            Scheme::Eddsa => {
                if !req.path.is_empty() {
                    return Err(RequestError::new(ErrorCode::Unsupported, "derivation paths are available for ECDSA wallets only"));
                }
                let message = match &req.payload {
                    SignPayload::Digest(m) | SignPayload::Message(m) => m.clone(),
                };
                let (signature, public_key) = eddsa::sign(self, &spec, indexes, record.secret.expose(), message).await?;
                (signature, None, public_key)
            }
        };
        Ok(SignResult {
            wallet: req.wallet.clone(),
            scheme: req.scheme,
            signature,
            recovery_id,
            public_key,
            path: req.path.clone(),
            signers,
            version: record.public.version,
        })
    }
}

/// The resharing session's inputs that every party shares.
struct ReshareSession<'a> {
    spec: &'a SessionSpec,
    roles: &'a reshare::rounds::Roles,
    committee: &'a [NodeId],
    threshold: u16,
    version: u32,
    /// The request's public key and chain code, for members without a share.
    public_key: &'a [u8],
    chain_code: Option<reshare::ChainCode>,
    /// Fault injection (dev mode): deal sub-shares that do not check.
    tamper: bool,
}

/// Runs the resharing rounds on the session's own thread, like every
/// protocol (`session::run`). The outer error is the session's (timeouts,
/// aborts, with their blame); the inner one the protocol's.
async fn reshare_rounds<E: generic_ec::Curve>(
    enclave: &Arc<Enclave>,
    s: ReshareSession<'_>,
    share: Option<reshare::KeyShare<E>>,
) -> Result<Result<reshare::rounds::Reshared<E>, reshare::rounds::RoundsError>, RequestError> {
    use reshare::rounds::OldKeySource;
    let i = s.spec.index_of(enclave.keys.node_id()).expect("checked by the policy");
    let new = reshare::NewCommittee::<E>::new(s.committee.len() as u16, s.threshold).map_err(|e| RequestError::new(ErrorCode::Malformed, e.to_string()))?;
    let old_key = match &share {
        Some(share) => OldKeySource::Own(share.old_key()),
        None => OldKeySource::Dealers {
            public_key: generic_ec::Point::<E>::from_bytes(s.public_key)
                .map_err(|_| RequestError::new(ErrorCode::Malformed, "the request's public key does not decode"))?,
            chain_code: s.chain_code,
        },
    };
    let (roles, committee, version, tamper) = (s.roles.clone(), s.committee.to_vec(), u64::from(s.version), s.tamper);
    session::run(enclave, s.spec, move |party: session::Party<reshare::rounds::Msg>| {
        let setup = reshare::rounds::Setup { roles: &roles, new: &new, committee: &committee, version, old_key, tamper };
        Ok::<_, std::convert::Infallible>(futures::executor::block_on(reshare::rounds::run(party, i, setup, share.as_ref(), &mut rand_core::OsRng)))
    })
    .await
}

/// A resharing protocol failure as the request's error, blaming the node
/// whose values did not check: a dealer by its index in the old
/// committee, any other party by its index in the session.
fn reshare_error(e: reshare::rounds::RoundsError, old_committee: &[NodeId], parties: &[NodeId]) -> RequestError {
    use reshare::rounds::RoundsError;
    let node = |list: &[NodeId], i: u16| list.get(usize::from(i)).cloned();
    let blamed = match &e {
        RoundsError::Reshare(r) => r.blamed_dealer().and_then(|d| node(old_committee, d)),
        RoundsError::OutOfRole { party, .. } | RoundsError::Confirmation { party } => node(parties, *party),
        RoundsError::Transport(_) => None,
    };
    let error = RequestError::new(ErrorCode::ProtocolAbort, format!("resharing: {e}"));
    match blamed {
        Some(node) => error.blaming(vec![node]),
        None => error,
    }
}

fn internal_reshare(reason: String) -> RequestError {
    RequestError::new(ErrorCode::Internal, format!("resharing: {reason}"))
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
            round_timeout_ms: 10_000,
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
        enclave.abort(&aborted.request_id, 1);
        assert!(enclave.inbox(&spec(&aborted)).is_err());

        // An attempt whose signature share left: no later attempt here,
        // even if it never completed (its peers might still finish it).
        let released = SessionPlan { request_id: RequestId::new("r-4").unwrap(), ..plan(1) };
        assert!(enclave.claim(&released.request_id, 1));
        enclave.release(&released.request_id, 1).unwrap();
        assert!(!enclave.claim(&released.request_id, 2));
        // A superseded attempt cannot give its share away.
        assert!(enclave.release(&one.request_id, 1).is_err());

        // A request that completed runs no further attempt.
        let done = SessionPlan { request_id: RequestId::new("r-3").unwrap(), ..plan(1) };
        assert!(enclave.claim(&done.request_id, 1));
        enclave.completed(&done.request_id);
        assert!(!enclave.claim(&done.request_id, 2));
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
