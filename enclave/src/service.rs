//! The enclave's state and what it does with a request: authorise, load and
//! unseal what it needs through the host, run the protocol, seal and store
//! the result through the host, and report the outcome.

use crate::attestation::{Admission, Nsm};
use crate::config::EnclaveConfig;
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
use conclave_proto::{CommitteeId, ErrorCode, NodeId, RequestError, RequestId, Scheme, SessionId};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What this enclave has done for one request.
struct Claim {
    attempt: u32,
    at: Instant,
    completed: bool,
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
    /// Fault injection for tests (`CONCLAVE_FAULT_RESHARE_TAMPER`, dev mode
    /// only): as a dealer, this node sends sub-shares that do not match its
    /// commitments, as a cheating dealer would.
    tampers_sub_shares: bool,
    /// Per request: the highest attempt started here, when, and whether one
    /// completed (then no later attempt runs here).
    started: Mutex<HashMap<RequestId, Claim>>,
}

impl Enclave {
    /// Builds the enclave from its configuration, keys, sealer and roster.
    pub fn new(
        config: EnclaveConfig,
        keys: NodeKeys,
        sealer: Box<dyn Sealer>,
        nsm: Option<Nsm>,
        roster: Vec<NodeIdentity>,
    ) -> Result<Enclave, String> {
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
            let sign = ed25519_dalek::VerifyingKey::from_bytes(&n.sign_key)
                .map_err(|_| format!("roster: bad sign_key for {}", n.node_id))?;
            peers.insert(n.node_id, Peer { kx, sign });
        }
        let tampers_sub_shares = config.mode == conclave_proto::link::Mode::Dev && std::env::var_os("CONCLAVE_FAULT_RESHARE_TAMPER").is_some();
        if tampers_sub_shares {
            tracing::warn!("FAULT INJECTION: as a resharing dealer this node sends sub-shares that do not match its commitments");
        }
        Ok(Enclave {
            config,
            keys,
            sealer,
            host: HostLink::default(),
            router: Arc::default(),
            primes: PrimePool::default(),
            admission: nsm.as_ref().map(Nsm::admission),
            tampers_sub_shares,
            nsm,
            identities,
            peers,
            aux_locks: Mutex::default(),
            started: Mutex::default(),
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
        let Some(admission) = &self.admission else { return Ok(()) };
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
                format!("request {request_id}: attempt {} is superseded here, or the request completed", plan.attempt),
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
            Ok(body) => self.admit_participants(&plan).await.map(|()| body),
            refused => refused,
        };
        let (session, result) = match authorised {
            Ok(RequestBody::Keygen(k)) => {
                let session = SessionId::derive(SessionKind::Keygen, &request_id, plan.attempt);
                (session, self.keygen(&k, &plan, session, deadline).await.map(Completed::Keygen))
            }
            Ok(RequestBody::Sign(s)) => {
                let session = SessionId::derive(SessionKind::Sign, &request_id, plan.attempt);
                (session, self.sign(&s, &plan, session, deadline).await.map(Completed::Sign))
            }
            Ok(RequestBody::Reshare(r)) => {
                let session = SessionId::derive(SessionKind::Reshare, &request_id, plan.attempt);
                (session, self.reshare(&r, &plan, session, deadline).await.map(Completed::Reshare))
            }
            Err(e) => (SessionId::derive(SessionKind::Sign, &request_id, plan.attempt), Err(e)),
        };
        if result.is_ok() {
            self.completed(&request_id);
        }
        match &result {
            Ok(_) => tracing::info!(request = %request_id, %session, "session completed"),
            Err(e) => tracing::warn!(request = %request_id, %session, code = %e.code, reason = %e.reason, "session failed"),
        }
        let outcome = match result {
            Ok(result) => Outcome::Ok { result },
            Err(error) => Outcome::Error { error },
        };
        self.host.send(FromEnclave::Finished { request_id, attempt: plan.attempt, session, outcome });
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
            Some(claim) if claim.attempt >= attempt || claim.completed => return false,
            Some(claim) => Some(claim.attempt),
            None => None,
        };
        started.insert(request.clone(), Claim { attempt, at: Instant::now(), completed: false });
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
        let claim = started.entry(request.clone()).or_insert(Claim { attempt, at: Instant::now(), completed: false });
        claim.attempt = claim.attempt.max(attempt);
        drop(started);
        self.end_sessions(request, attempt);
    }

    fn completed(&self, request: &RequestId) {
        if let Some(claim) = self.started.lock().expect("started lock").get_mut(request) {
            claim.completed = true;
        }
    }

    fn end_sessions(&self, request: &RequestId, attempt: u32) {
        for kind in [SessionKind::Keygen, SessionKind::AuxInfo, SessionKind::Sign, SessionKind::Reshare] {
            self.router.abort(SessionId::derive(kind, request, attempt));
        }
        tracing::info!(request = %request, attempt, "attempt ended here");
    }

    async fn keygen(
        self: &Arc<Self>,
        req: &KeygenRequest,
        plan: &SessionPlan,
        session: SessionId,
        deadline: Instant,
    ) -> Result<KeygenResult, RequestError> {
        let mut committee = req.committee.clone();
        committee.sort();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        if self.host.load(slot.clone()).await?.is_some() {
            return Err(RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme)));
        }
        let spec = SessionSpec { id: session, parties: committee.clone(), deadline, round_timeout: round_timeout(plan) };
        let (public_key, xpub, secret) = match req.scheme {
            Scheme::Ecdsa => {
                let aux = self.committee_aux(&committee, plan, deadline).await?;
                let out = ecdsa::keygen(self, &spec, req.threshold, aux).await?;
                (out.public_key, Some(out.xpub), out.share)
            }
            Scheme::Eddsa => {
                let out = eddsa::keygen(self, &spec, req.threshold).await?;
                (out.public_key, None, out.share)
            }
        };
        let public = KeygenResult {
            wallet: req.wallet.clone(),
            scheme: req.scheme,
            public_key,
            xpub,
            version: 1,
            threshold: req.threshold,
            committee,
        };
        let record = ShareRecord { public, secret: SecretShare::new(secret) };
        let blob = record.seal(self.sealer.as_ref(), self.keys.node_id(), &slot)?;
        self.host.store(slot, blob).await.map_err(|e| match e {
            crate::link::HostCallError::Refused(conclave_proto::link::StoreError::Exists) => {
                RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme))
            }
            other => other.into(),
        })?;
        Ok(record.public.clone())
    }

    /// Moves a wallet's key to a new committee (`crate::reshare`): every
    /// participant that holds the named version deals, every new member
    /// joins, and once all new members have confirmed the same new version,
    /// each stores version + 1: its new share, or (a member that leaves) a
    /// record without one, so that it never signs with the old share again.
    /// Until then nothing is stored and the old version still signs.
    async fn reshare(
        self: &Arc<Self>,
        req: &ReshareRequest,
        plan: &SessionPlan,
        session: SessionId,
        deadline: Instant,
    ) -> Result<KeygenResult, RequestError> {
        let me = self.keys.node_id().clone();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        let stored = match self.host.load(slot.clone()).await? {
            Some(blob) => Some(ShareRecord::open(self.sealer.as_ref(), &me, &slot, &blob)?),
            None => None,
        };
        let old = match (req.committee.contains(&me), stored) {
            (true, Some(record)) => {
                let p = &record.public;
                if p.public_key != req.public_key || p.xpub != req.xpub || p.version != req.version || p.committee != req.committee || p.threshold != req.threshold {
                    return Err(RequestError::new(
                        ErrorCode::Malformed,
                        format!("the request names another key than this node's share of {} (version {})", req.wallet, p.version),
                    ));
                }
                Some(record)
            }
            (true, None) => return Err(RequestError::new(ErrorCode::UnknownWallet, format!("node {me} holds no {} key for {}", req.scheme, req.wallet))),
            // A member that left an earlier version keeps only its record.
            (false, Some(record)) if record.public.committee.contains(&me) => {
                return Err(RequestError::new(ErrorCode::WalletExists, format!("node {me} already holds version {} of {}", record.public.version, req.wallet)))
            }
            (false, _) => None,
        };
        let mut committee = req.new_committee.clone();
        committee.sort();
        let mut parties = plan.participants.clone();
        parties.sort();
        let roles = reshare::rounds::Roles {
            dealing: parties.iter().map(|p| req.committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
            joining: parties.iter().map(|p| committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
        };
        let joining = committee.contains(&me);
        // The new committee's aux info comes first, so that the sealed share
        // signs the moment it is stored.
        let aux = match (req.scheme, joining) {
            (Scheme::Ecdsa, true) => Some(self.committee_aux(&committee, plan, deadline).await?),
            _ => None,
        };
        let spec = SessionSpec { id: session, parties: parties.clone(), deadline, round_timeout: round_timeout(plan) };
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
                        let xpub = share.chain_code.map(|chain_code| conclave_proto::xpub::Xpub { public_key: share.core.shared_public_key.to_bytes(true).as_ref().try_into().expect("a compressed secp256k1 point is 33 bytes"), chain_code }.encode());
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
        self.host.store(slot, blob).await?;
        tracing::info!(wallet = %req.wallet, scheme = %req.scheme, version, joined = joining, "reshared");
        Ok(record.public.clone())
    }

    /// The committee's aux info, generated (once, whichever keygen asks
    /// first) if it does not exist yet.
    async fn committee_aux(
        self: &Arc<Self>,
        committee: &[NodeId],
        plan: &SessionPlan,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, RequestError> {
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
        let spec = SessionSpec {
            id: SessionId::derive(SessionKind::AuxInfo, &plan.request_id, plan.attempt),
            parties: committee.to_vec(),
            deadline,
            round_timeout: round_timeout(plan),
        };
        // Peers whose primes are ready first start at once: their messages
        // must wait here for as long as this node's primes take.
        let inbox = self.router.register(spec.id);
        let primes = PrimePool::take(self).await;
        let aux = ecdsa::aux_info(self, &spec, inbox, primes).await?;
        let ctx = SealContext::blob(node, &slot, 1);
        let sealed = self.sealer.seal(&ctx, &aux).map_err(storage)?;
        self.host.store(slot, StoredBlob { version: 1, sealed }).await?;
        Ok(aux)
    }

    async fn sign(
        self: &Arc<Self>,
        req: &SignRequest,
        plan: &SessionPlan,
        session: SessionId,
        deadline: Instant,
    ) -> Result<SignResult, RequestError> {
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        let blob = self.host.load(slot.clone()).await?.ok_or_else(|| {
            RequestError::new(ErrorCode::UnknownWallet, format!("node {} holds no {} key for {}", self.keys.node_id(), req.scheme, req.wallet))
        })?;
        let record = ShareRecord::open(self.sealer.as_ref(), self.keys.node_id(), &slot, &blob)?;
        let committee = &record.public.committee;
        // Signers in keygen-index order: a signer's index in the session is
        // its position here, and `indexes` maps it back to keygen.
        let mut indexes = Vec::with_capacity(plan.participants.len());
        for p in &plan.participants {
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
        let spec = SessionSpec { id: session, parties: signers.clone(), deadline, round_timeout: round_timeout(plan) };
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
            public_key: generic_ec::Point::<E>::from_bytes(s.public_key).map_err(|_| RequestError::new(ErrorCode::Malformed, "the request's public key does not decode"))?,
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

/// The plan's round timeout (the policy check bounds it).
fn round_timeout(plan: &SessionPlan) -> Duration {
    Duration::from_millis(plan.round_timeout_ms)
}
