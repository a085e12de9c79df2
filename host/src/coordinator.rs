//! What the host does with requests and with the enclave's frames: decode
//! and route requests, plan and fence sessions through the registry, carry
//! envelopes, store blobs, publish results, and time out sessions whose
//! enclave stays silent.

use crate::config::HostConfig;
use crate::link::LinkHandle;
use crate::metrics::Metrics;
use crate::nats::Nats;
use crate::quorum::{self, Quorum};
use crate::registry::{Bucket, Registry};
use crate::store::BlobStore;
use crate::view::RegistryView;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use conclave_proto::envelope::Envelope;
use conclave_proto::link::{BlobSlot, FromEnclave, Purpose, SessionPlan, StoreError, StoredBlob, ToEnclave};
use conclave_proto::registry::{NodeRecord, ReadyRecord};
use conclave_proto::request::{RequestBody, ReshareRequest, SignedRequest};
use conclave_proto::result::{KeygenResult, Outcome, RequestResult};
use conclave_proto::statement::Endorsed;
use conclave_proto::subjects::*;
use conclave_proto::{ErrorCode, NodeId, RequestError, RequestId, Scheme, WalletId, PROTOCOL_VERSION};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a request waits for this host's view of the registry to become
/// current (longer than a JetStream leader election).
const VIEW_PATIENCE: Duration = Duration::from_secs(15);
/// Keygen may include aux info generation for a new committee.
pub(crate) const KEYGEN_SESSION: Duration = Duration::from_secs(600);
/// A committee's first keygen waits while a peer generates its Paillier
/// primes (minutes on a busy machine), so silence proves nothing before the
/// deadline; a keygen peer that dies is caught by its missing heartbeats.
const KEYGEN_ROUND_TIMEOUT: Duration = KEYGEN_SESSION;

/// The host's state.
pub struct Host {
    /// Configuration.
    pub config: HostConfig,
    /// Sealed blobs.
    pub store: BlobStore,
    /// Counters.
    pub metrics: Metrics,
    /// NATS: envelopes, requests, results.
    pub nats: Nats,
    /// Members, readiness, wallets and fencing records (NATS KV or Consul).
    pub registry: Registry,
    /// The enclave link.
    pub link: LinkHandle,
    /// Who is ready and who is registered.
    pub view: Arc<RegistryView>,
    /// Attempts this node's signer runs, and who waits for their outcome.
    pub(crate) pending: Mutex<HashMap<(RequestId, u32), tokio::sync::oneshot::Sender<Outcome>>>,
    /// What this node's signer verified of its peers' images (PCR0, hex),
    /// reported in its heartbeats.
    attested_peers: Mutex<std::collections::BTreeMap<NodeId, String>>,
    /// Requests a follower runs for on this host.
    pub(crate) following: Mutex<std::collections::HashSet<RequestId>>,
    /// Presignatures this host's keeper asked for, and who waits for each.
    pub(crate) presigning: Mutex<HashMap<RequestId, tokio::sync::oneshot::Sender<crate::pools::Made>>>,
    /// The counts of the pools this host keeps.
    pub(crate) pools: crate::pools::Ledger,
    /// Envelopes to publish, in the order the enclave sent them: receivers
    /// refuse reordered envelopes, so they must leave in sequence.
    outbox: tokio::sync::mpsc::UnboundedSender<Envelope>,
}

impl Host {
    /// Builds the host state and starts its envelope publisher.
    pub fn new(config: HostConfig, store: BlobStore, nats: Nats, registry: Registry) -> Host {
        let (outbox, mut queue) = tokio::sync::mpsc::unbounded_channel::<Envelope>();
        let client = nats.client.clone();
        tokio::spawn(async move {
            while let Some(envelope) = queue.recv().await {
                let payload = serde_json::to_vec(&envelope).expect("serialises");
                if let Err(e) = client.publish(p2p_subject(&envelope.header.recipient, &envelope.header.sender), payload.into()).await {
                    tracing::warn!(error = %e, "cannot publish envelope");
                }
            }
        });
        let view = RegistryView::new(config.node_id.clone(), config.ready_ttl);
        Host {
            config,
            store,
            metrics: Metrics::new(),
            nats,
            registry,
            link: LinkHandle::default(),
            view,
            pending: Mutex::default(),
            attested_peers: Mutex::default(),
            following: Mutex::default(),
            presigning: Mutex::default(),
            pools: crate::pools::Ledger::default(),
            outbox,
        }
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.config.node_id
    }

    /// Registers this node, then heartbeats readiness while the link and
    /// NATS are up. A link going down withdraws readiness at once (a peer
    /// that planned a session with this node in the TTL's remainder would
    /// only fail it); a link coming up announces it at once.
    pub async fn heartbeat(self: Arc<Self>) {
        let identity = self.link.identity().await;
        let record = NodeRecord { v: PROTOCOL_VERSION, identity: identity.clone(), http: self.config.http_addr.to_string(), registered_at_ms: crate::now_ms() };
        let mut link = self.link.watch_up();
        // Whether the registry may still hold a heartbeat of this process.
        let mut announced = false;
        loop {
            let connected = self.nats.client.connection_state() == async_nats::connection::State::Connected;
            self.metrics.nats_connected.store(connected, Ordering::Relaxed);
            if connected {
                if let Err(e) = self.registry.put(Bucket::Members, self.me().as_str(), serde_json::to_vec(&record).expect("serialises").into()).await {
                    tracing::warn!(error = %e, "registration not recorded");
                }
                if *link.borrow_and_update() {
                    let beat = ReadyRecord {
                        v: PROTOCOL_VERSION,
                        node_id: self.me().clone(),
                        mode: identity.mode,
                        at_ms: crate::now_ms(),
                        primes_ready: self.metrics.primes_ready.load(Ordering::Relaxed),
                        attested_peers: self.attested_peers.lock().expect("attested lock").clone(),
                        presign_pools: self.metrics.pool_levels(),
                    };
                    match self.registry.heartbeat(self.me(), serde_json::to_vec(&beat).expect("serialises").into()).await {
                        Ok(()) => announced = true,
                        Err(e) => tracing::warn!(error = %e, "heartbeat not recorded"),
                    }
                } else if announced {
                    match self.registry.withdraw(self.me()).await {
                        Ok(()) => announced = false,
                        Err(e) => tracing::warn!(error = %e, "readiness not withdrawn; it lapses with its TTL"),
                    }
                }
                self.metrics.peers_ready.store(self.view.ready_count() as u64, Ordering::Relaxed);
                self.metrics.members.store(self.view.member_count() as u64, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.heartbeat) => {}
                _ = link.changed() => {}
            }
        }
    }

    /// Subscribes to envelopes addressed to this node. Done before the node
    /// heartbeats: core NATS drops messages nobody is subscribed to.
    pub async fn subscribe_envelopes(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(p2p_inbox(self.me())).await
    }

    /// Forwards envelopes addressed to this node to the enclave.
    pub async fn carry_envelopes(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            match Envelope::decode(&msg.payload) {
                // The subject's sender is the NATS user's own (see
                // `p2p_subject`); an envelope claiming another is dropped
                // here (the signer would refuse its signature anyway).
                Ok(envelope) if envelope.header.recipient == *self.me() && p2p_sender(&msg.subject) == Some(envelope.header.sender.as_str()) => {
                    self.metrics.envelopes_in.fetch_add(1, Ordering::Relaxed);
                    self.link.send(ToEnclave::Deliver { envelope });
                }
                Ok(_) => self.metrics.inc("conclave_rejected_total", crate::metrics::MISADDRESSED),
                Err(e) => self.metrics.inc("conclave_rejected_total", e.code().as_str()),
            }
        }
    }

    /// Opens this node's durable consumer of the request stream. Done before
    /// the node heartbeats, so that no request a client sends after seeing
    /// it ready is missed.
    pub async fn request_consumer(&self) -> Result<async_nats::jetstream::consumer::pull::Stream, crate::nats::NatsError> {
        let setup = |e: &dyn std::fmt::Display| crate::nats::NatsError::Setup { what: "this host's request consumer", detail: e.to_string() };
        let stream = self.nats.js.get_stream(REQUEST_STREAM).await.map_err(|e| setup(&e))?;
        let name = format!("host-{}", self.me());
        let consumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config { durable_name: Some(name.clone()), deliver_policy: DeliverPolicy::New, ack_policy: AckPolicy::Explicit, ..Default::default() },
            )
            .await
            .map_err(|e| setup(&e))?;
        consumer.messages().await.map_err(|e| setup(&e))
    }

    /// Handles requests from this node's consumer.
    pub async fn consume_requests(self: Arc<Self>, mut messages: async_nats::jetstream::consumer::pull::Stream) {
        while let Some(msg) = messages.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "request stream");
                    continue;
                }
            };
            let _ = msg.ack().await;
            let msg_id = msg.headers.as_ref().and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)).map(|v| v.to_string());
            let host = self.clone();
            let payload = msg.payload.clone();
            tokio::spawn(async move { host.handle_request(&payload, msg_id).await });
        }
    }

    async fn handle_request(self: Arc<Self>, bytes: &[u8], msg_id: Option<String>) {
        let (request, body) = match SignedRequest::decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.inc("conclave_requests_total", "undecodable");
                tracing::warn!(error = %e, msg_id = ?msg_id, "undecodable request");
                if let Some(id) = msg_id.and_then(|m| RequestId::new(m).ok()) {
                    self.publish(id, Outcome::Error { error: e.into() }).await;
                }
                return;
            }
        };
        let id = body.request_id().clone();
        tracing::info!(request = %id, "request taken");
        if let Err(error) = body.validate() {
            self.publish(id, Outcome::Error { error }).await;
            return;
        }
        let kind = match &body {
            RequestBody::Keygen(_) => "keygen",
            RequestBody::Sign(_) => "sign",
            RequestBody::Reshare(_) => "reshare",
        };
        self.metrics.inc("conclave_requests_total", kind);
        let (proposal, quorum) = match self.propose(&body).await {
            Ok(Some(planned)) => planned,
            Ok(None) => return,
            Err(error) => {
                self.publish(id, Outcome::Error { error }).await;
                return;
            }
        };
        self.follow(request, body, proposal, quorum).await;
    }

    /// This node's plan for the request's first attempt and what a later
    /// one may choose from, or `None` if this node takes no part.
    async fn propose(&self, body: &RequestBody) -> Result<Option<(SessionPlan, Quorum)>, RequestError> {
        let now = crate::now_ms();
        match body {
            RequestBody::Keygen(k) => {
                if !k.committee.contains(self.me()) {
                    return Ok(None);
                }
                let mut participants = k.committee.clone();
                participants.sort();
                Ok(Some(everyone(&k.request_id, participants, now)))
            }
            RequestBody::Reshare(r) => self.propose_reshare(r, now).await,
            RequestBody::Sign(s) => {
                // The view's record, unless the request names a later
                // version than it holds (a reshare the watch has not
                // brought yet): then the registry's.
                let seen = self.view.wallet(&wallet_key(&s.wallet, s.scheme)).filter(|w| w.version >= s.version);
                let wallet = match seen {
                    Some(wallet) => wallet,
                    None => self.wallet_record(&s.wallet, s.scheme).await?,
                };
                if !wallet.committee.contains(self.me()) {
                    return Ok(None);
                }
                // A request for a version a reshare replaced (a client's
                // record was older) is refused before the signers judge it
                // (and count it against a velocity limit); the signers would
                // refuse it too. A newer version than the registry's is left
                // to them: the registry may lag.
                if s.version < wallet.version {
                    return Err(RequestError::new(
                        ErrorCode::VersionMismatch,
                        format!("the request names version {} of {}, whose key is at version {}", s.version, s.wallet, wallet.version),
                    ));
                }
                let t = usize::from(wallet.threshold);
                // Named signers need no view of who is ready (nor a wait
                // for one).
                let ready = match &s.signers {
                    Some(_) => HashSet::new(),
                    None => match self.view.ready_within(VIEW_PATIENCE).await {
                        Ok(ready) => ready,
                        // This host cannot tell who is ready, so it must not
                        // answer for the cluster: hosts that can will.
                        Err(e) => {
                            tracing::error!(request = %s.request_id, error = %e, "no current view of the ready nodes; leaving the request to the others");
                            return Ok(None);
                        }
                    },
                };
                let participants = quorum::first_signers(&wallet.committee, t, s.signers.as_deref(), &ready, &s.request_id)?;
                let quorum = Quorum { committee: wallet.committee.clone(), threshold: t, may_fail_over: s.signers.is_none() };
                let plan = SessionPlan {
                    request_id: s.request_id.clone(),
                    attempt: 1,
                    participants,
                    deadline_ms: now + s.timeout_ms.unwrap_or(self.config.sign_deadline.as_millis() as u64),
                    planned_ms: now,
                    round_timeout_ms: self.config.round_timeout.as_millis() as u64,
                    purpose: Purpose::Request,
                    approvals: Vec::new(),
                };
                Ok(Some((plan, quorum)))
            }
        }
    }

    /// A wallet's record as the registry holds it, for routing only: the
    /// signers check every request against their own sealed records, and
    /// clients check the signatures on the record.
    async fn wallet_record(&self, wallet: &WalletId, scheme: Scheme) -> Result<KeygenResult, RequestError> {
        let key = wallet_key(wallet, scheme);
        let read = crate::nats::retrying("read the wallet record", || self.registry.get(Bucket::Wallets, &key));
        match read.await {
            Ok(Some(entry)) => {
                crate::view::routing_record(&entry.value).ok_or_else(|| RequestError::new(ErrorCode::Internal, format!("wallet record {key} is corrupt")))
            }
            Ok(None) => Err(RequestError::new(ErrorCode::UnknownWallet, format!("no {scheme} key for wallet {wallet}"))),
            Err(e) => Err(RequestError::new(ErrorCode::Internal, format!("registry: {e}"))),
        }
    }

    pub(crate) async fn publish(&self, request_id: RequestId, outcome: Outcome) {
        let status = match &outcome {
            Outcome::Ok { .. } => "ok".to_string(),
            Outcome::Error { error } => error.code.as_str().to_string(),
        };
        self.metrics.inc("conclave_results_total", status);
        let result = RequestResult { v: PROTOCOL_VERSION, request_id, reported_by: self.me().clone(), outcome };
        if let Err(e) = self.nats.publish_result(&result).await {
            tracing::error!(request = %result.request_id, error = %e, "cannot publish result");
        }
    }

    /// Answers the enclave's [`FromEnclave::Load`].
    pub(crate) fn answer_load(&self, call: u64, slot: &BlobSlot, version: Option<u32>) -> ToEnclave {
        let read = match version {
            Some(version) => self.store.load_version(slot, version),
            None => self.store.load_latest(slot),
        };
        let blob = read.unwrap_or_else(|e| {
            tracing::error!(slot = %slot.path(), error = %e, "blob store read failed");
            None
        });
        ToEnclave::Loaded { call, blob }
    }

    /// Answers the enclave's [`FromEnclave::ReplaceAll`]: a batch of audit
    /// entries, appended to the journal with one write and one sync.
    fn answer_replace_all(&self, call: u64, slot: &BlobSlot, blobs: &[StoredBlob]) -> ToEnclave {
        let error = if *slot == BlobSlot::Audit {
            self.store.audit().append(blobs, true).err()
        } else {
            Some(StoreError::Io { detail: format!("only audit entries are written in batches, not {}", slot.path()) })
        };
        ToEnclave::Stored { call, error }
    }

    /// Answers the enclave's [`FromEnclave::Store`].
    pub(crate) fn answer_store(&self, call: u64, slot: &BlobSlot, blob: &StoredBlob, replace: bool) -> ToEnclave {
        let stored = if replace { self.store.replace(slot, blob) } else { self.store.store(slot, blob) };
        ToEnclave::Stored { call, error: stored.err() }
    }

    /// Answers the enclave's [`FromEnclave::Credentials`].
    pub(crate) async fn answer_credentials(&self, call: u64) -> ToEnclave {
        let result = crate::aws::instance_credentials(self.config.imds_addr).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "no AWS credentials for the enclave's KMS calls");
        }
        // The signer only reports why; the reason travels as text.
        ToEnclave::Credentials { call, result: result.map_err(|e| e.to_string()) }
    }

    /// Handles one frame from the enclave.
    pub fn from_enclave(self: Arc<Self>, frame: FromEnclave) {
        match frame {
            FromEnclave::Hello { .. } => {}
            FromEnclave::Send { envelope } => {
                self.metrics.envelopes_out.fetch_add(1, Ordering::Relaxed);
                let _ = self.outbox.send(envelope);
            }
            FromEnclave::Load { call, slot, version } => {
                self.link.send(self.answer_load(call, &slot, version));
            }
            // Off the link's reader, which would otherwise wait for each
            // store's two syncs before it reads the next frame; stores that
            // run at once (a batch of audit entries) share the disk's syncs.
            FromEnclave::Store { call, slot, blob, replace } => {
                let host = self.clone();
                tokio::task::spawn_blocking(move || {
                    let answer = host.answer_store(call, &slot, &blob, replace);
                    host.link.send(answer);
                });
            }
            FromEnclave::ReplaceAll { call, slot, blobs } => {
                let host = self.clone();
                tokio::task::spawn_blocking(move || {
                    let answer = host.answer_replace_all(call, &slot, &blobs);
                    host.link.send(answer);
                });
            }
            FromEnclave::Credentials { call } => {
                let host = self.clone();
                tokio::spawn(async move {
                    let answer = host.answer_credentials(call).await;
                    host.link.send(answer);
                });
            }
            FromEnclave::Finished { request_id, attempt, outcome, .. } => self.deliver_outcome(&request_id, attempt, outcome),
            FromEnclave::Presigned { request_id, error, window, .. } => self.presigned(&request_id, crate::pools::Made { error, window }),
            // Only `conclave-host restore` asks the signer to check blobs.
            FromEnclave::Checked { call, .. } => {
                tracing::warn!(call, "unexpected check answer from the enclave")
            }
            answer @ (FromEnclave::Attested { call, .. } | FromEnclave::Governed { call, .. }) => self.link.answered(call, answer),
            FromEnclave::Admitted { peer, pcr0 } => {
                self.attested_peers.lock().expect("attested lock").insert(peer, hex::encode(pcr0));
            }
            FromEnclave::AskAttestation { call, peer, nonce } => {
                let host = self.clone();
                tokio::spawn(async move {
                    let result = host.ask_attestation(&peer, nonce).await;
                    host.link.send(ToEnclave::PeerAttested { call, result });
                });
            }
            FromEnclave::Primes { ready } => self.metrics.primes_ready.store(ready, Ordering::Relaxed),
            FromEnclave::Waited { ms } => {
                self.metrics.heavy_waited.fetch_add(1, Ordering::Relaxed);
                self.metrics.heavy_wait_ms.fetch_add(ms, Ordering::Relaxed);
            }
            FromEnclave::Dropped { reason, peer } => {
                tracing::debug!(reason = reason.as_str(), %peer, "the enclave dropped an envelope");
                self.metrics.inc("conclave_envelopes_dropped_total", reason.as_str());
            }
            FromEnclave::Rejected { code, reason, peer } => {
                tracing::warn!(%code, %reason, peer = ?peer, "the enclave refused input");
                self.metrics.inc("conclave_rejected_total", code.as_str());
            }
        }
    }

    /// A reshare's session: the new committee and every ready member of the
    /// old one (each deals; at least the old threshold must be ready, and
    /// every new member). Leaving members take part to retire their shares.
    /// No failover: the participants are the request's.
    async fn propose_reshare(&self, r: &ReshareRequest, now: u64) -> Result<Option<(SessionPlan, Quorum)>, RequestError> {
        let wallet = self.wallet_record(&r.wallet, r.scheme).await?;
        if wallet.public_key != r.public_key
            || wallet.xpub != r.xpub
            || wallet.version != r.version
            || wallet.committee != r.committee
            || wallet.threshold != r.threshold
        {
            return Err(RequestError::new(
                ErrorCode::KeyMismatch,
                format!("the request names another key than wallet {}'s version {}", r.wallet, wallet.version),
            ));
        }
        let ready = match self.view.ready_within(VIEW_PATIENCE).await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(request = %r.request_id, error = %e, "no current view of the ready nodes; leaving the request to the others");
                return Ok(None);
            }
        };
        let participants = quorum::reshare_participants(&wallet.committee, usize::from(wallet.threshold), &r.new_committee, &ready)?;
        if !participants.contains(self.me()) {
            return Ok(None);
        }
        // As long as a keygen: an ECDSA reshare first makes the new
        // committee's aux info when it has none.
        Ok(Some(everyone(&r.request_id, participants, now)))
    }

    /// A keygen or reshare is complete only when every member of the
    /// (new) committee has stored its share: each host records its
    /// signer's signed statement, and waits (until the deadline) for every
    /// other member's statement, which must be the very same string. Then
    /// the wallet's record, that statement with every member's signature,
    /// names the new key version, and is the result.
    pub(crate) async fn confirm_stored(&self, id: &RequestId, mine: Endorsed, record: &KeygenResult, deadline_ms: u64) -> Outcome {
        let key_of = |node: &NodeId| format!("{id}.stored.{node}");
        let fail = |code, reason: String| Outcome::Error { error: RequestError::new(code, reason) };
        let watch = self.registry.watch_request(id).await;
        // Puts are idempotent: tried again across a registry's leader
        // election (a NATS server lost), like the reads.
        let (my_key, stored): (String, bytes::Bytes) = (key_of(self.me()), serde_json::to_vec(&mine).expect("serialises").into());
        if let Err(e) = crate::nats::retrying("record this member's stored share", || self.registry.put(Bucket::Sessions, &my_key, stored.clone())).await {
            return fail(ErrorCode::Internal, format!("registry: {e}"));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(crate::now_ms()));
        loop {
            let mut missing = Vec::new();
            let mut endorsements = Vec::with_capacity(record.committee.len());
            for node in &record.committee {
                match self.registry.get(Bucket::Sessions, &key_of(node)).await {
                    Ok(Some(entry)) => {
                        let theirs = serde_json::from_slice::<Endorsed>(&entry.value).ok().filter(|e| e.statement == mine.statement);
                        match theirs.and_then(|e| e.endorsements.into_iter().find(|e| e.node == *node)) {
                            Some(endorsement) => endorsements.push(endorsement),
                            None => {
                                let error = RequestError::new(ErrorCode::ProtocolAbort, format!("{node} reports another key for this request"));
                                return Outcome::Error { error: error.blaming(vec![node.clone()]) };
                            }
                        }
                    }
                    _ => missing.push(node.to_string()),
                }
            }
            if missing.is_empty() {
                let endorsed = Endorsed { statement: mine.statement, endorsements };
                // The wallet must be routable before anyone learns it exists.
                let key = wallet_key(&record.wallet, record.scheme);
                let bytes: bytes::Bytes = serde_json::to_vec(&endorsed).expect("serialises").into();
                // This node's own copy answers queries even if someone
                // overwrites the registry's.
                if let Err(e) = self.store.keep_record(&record.wallet, record.scheme, record.version, &bytes) {
                    tracing::warn!(wallet = %record.wallet, error = %e, "cannot keep a copy of the wallet record");
                }
                if let Err(e) = crate::nats::retrying("record the wallet", || self.registry.put(Bucket::Wallets, &key, bytes.clone())).await {
                    return fail(ErrorCode::Internal, format!("cannot record the wallet: {e}"));
                }
                return Outcome::Ok { result: endorsed };
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return fail(ErrorCode::Timeout, format!("{} did not store their shares before the deadline", missing.join(", ")));
                }
            }
        }
    }

    /// The enclave went away: its sessions will not report.
    /// The enclave went away: the attempts it ran are lost with it. Their
    /// followers hear so now, blaming this node, and move on to quorums
    /// without it instead of waiting for the deadline.
    pub fn link_lost(&self) {
        let lost: Vec<_> = self.pending.lock().expect("pending lock").drain().collect();
        if !lost.is_empty() {
            tracing::warn!(sessions = lost.len(), "enclave link lost with sessions running");
        }
        for ((request, attempt), tx) in lost {
            self.metrics.sessions_active.fetch_sub(1, Ordering::Relaxed);
            let error = RequestError::new(ErrorCode::PeerUnavailable, format!("{}'s signer went away during attempt {attempt} of {request}", self.me()))
                .blaming(vec![self.me().clone()]);
            let _ = tx.send(Outcome::Error { error });
        }
    }
}

/// A session every participant must take part in (keygen, reshare): no
/// failover, and keygen's deadline and round timeout, since a new
/// committee's first ECDSA session waits for aux info (and its primes).
fn everyone(request_id: &RequestId, participants: Vec<NodeId>, now: u64) -> (SessionPlan, Quorum) {
    let quorum = Quorum::everyone(&participants);
    let plan = SessionPlan {
        request_id: request_id.clone(),
        attempt: 1,
        participants,
        deadline_ms: now + KEYGEN_SESSION.as_millis() as u64,
        planned_ms: now,
        round_timeout_ms: KEYGEN_ROUND_TIMEOUT.as_millis() as u64,
        purpose: Purpose::Request,
        approvals: Vec::new(),
    };
    (plan, quorum)
}
