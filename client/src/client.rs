//! The SDK client.

use crate::{verify, ClientConfig, ClientError};
use async_nats::jetstream;
use conclave_proto::registry::{Answer, Ask, NodeEntry, Query};
use conclave_proto::request::{KeygenRequest, RequestBody, ReshareRequest, SignPayload, SignRequest, SignedRequest};
use conclave_proto::result::{Completed, KeygenResult, Outcome, RequestResult, SignResult};
use conclave_proto::statement::Endorsed;
use conclave_proto::subjects::*;
use conclave_proto::{ErrorCode, NodeId, RequestError, RequestId, Scheme, WalletId, PROTOCOL_VERSION};
use ed25519_dalek::Signer;
use futures::StreamExt;
use rand_core::RngCore;
use serde::Serialize;
use std::collections::HashMap;

/// Publishing a request is tried this many times, 1 s apart: longer than a
/// reconnect to another server plus a JetStream leader election.
const PUBLISH_TRIES: u32 = 20;
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the result stream is read while waiting on the subscription.
const RESULT_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a registry query waits for a host's answer.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How many times a query is sent before the client gives up.
const QUERY_TRIES: u32 = 4;
/// How long answers from further hosts are awaited after the first.
const GATHER: std::time::Duration = std::time::Duration::from_millis(250);

/// A connection to a cluster, acting for one initiator.
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    config: ClientConfig,
    /// Told each time a request is found waiting for approvals.
    on_pending: Option<Box<PendingHook>>,
    /// The wallet records this client read and checked: [`Client::sign`]
    /// takes the key and version from here instead of asking every host
    /// again for each signature.
    records: Records,
}

/// Most wallet records a client keeps ([`Records`]).
const MAX_RECORDS: usize = 4096;

/// Checked wallet records by wallet and scheme, at most [`MAX_RECORDS`]: a
/// client that signs for more wallets than that drops one to keep another
/// and reads the dropped one again when it next signs with it.
#[derive(Default)]
struct Records(std::sync::Mutex<HashMap<(WalletId, Scheme), KeygenResult>>);

impl Records {
    fn get(&self, wallet: &WalletId, scheme: Scheme) -> Option<KeygenResult> {
        self.0.lock().expect("records").get(&(wallet.clone(), scheme)).cloned()
    }

    fn keep(&self, record: &KeygenResult) {
        let mut records = self.0.lock().expect("records");
        let key = (record.wallet.clone(), record.scheme);
        if records.len() >= MAX_RECORDS && !records.contains_key(&key) {
            if let Some(dropped) = records.keys().next().cloned() {
                records.remove(&dropped);
            }
        }
        records.insert(key, record.clone());
    }

    fn forget(&self, wallet: &WalletId, scheme: Scheme) {
        self.0.lock().expect("records").remove(&(wallet.clone(), scheme));
    }
}

/// What [`Client::on_pending`] calls.
type PendingHook = dyn Fn(&RequestId, &RequestError) + Send + Sync;

/// One node as the registry sees it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// Heartbeating now.
    pub ready: bool,
    /// Its Paillier prime pool is filled (a new committee's first ECDSA
    /// keygen waits for this).
    pub primes_ready: bool,
    /// `dev`, `hsm` or `nitro`.
    pub mode: String,
    /// Health and metrics address.
    pub http: String,
    /// Identity key (hex).
    pub sign_key: String,
    /// The image measurement (PCR0, hex; the dev measurement in dev mode)
    /// each peer's signer verified in this node's attestation, by peer.
    /// Empty where nodes do not attest (hsm mode).
    pub attested_by: std::collections::BTreeMap<NodeId, String>,
    /// Unused ECDSA presignatures of the pools this node keeps, by
    /// `<wallet>/v<version>/<signers>` (as its last heartbeat said).
    pub presign_pools: std::collections::BTreeMap<String, u32>,
}

/// Wallet records as listed by the hosts.
#[derive(Debug, Default)]
pub struct WalletListing {
    /// Records signed by every member of their committee, the latest
    /// version of each wallet.
    pub records: Vec<KeygenResult>,
    /// Records that their committee did not sign, by wallet: never use them.
    pub refused: Vec<(String, ClientError)>,
}

/// The cluster as the registry sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every registered node.
    pub nodes: Vec<NodeStatus>,
    /// How many are ready.
    pub ready: usize,
    /// How many are registered.
    pub total: usize,
}

fn nats_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Nats(e.to_string())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh random request id.
pub fn new_request_id() -> RequestId {
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    RequestId::new(hex::encode(b)).expect("hex is a valid request id")
}

impl Client {
    /// Connects to the cluster's NATS.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let options = conclave_proto::nats_access::connect_options(config.nats_ca_file.as_deref(), config.nats_nkey_file.as_deref())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let nats = options.connect(config.nats_urls.as_slice()).await.map_err(nats_err)?;
        let mut js = jetstream::new(nats.clone());
        // Publishes are repeated on failure; a short wait per try gets past a
        // server that just died sooner than the default 5 s.
        js.set_timeout(std::time::Duration::from_millis(1500));
        Ok(Client { nats, js, config, on_pending: None, records: Default::default() })
    }

    /// Calls `f` each time a request this client waits for is found
    /// waiting for approvals (`approval_required`, with what it needs): the
    /// client keeps waiting, up to its timeout, for the final result.
    pub fn on_pending(&mut self, f: impl Fn(&RequestId, &RequestError) + Send + Sync + 'static) {
        self.on_pending = Some(Box::new(f));
    }

    /// A final result, or `None` (after telling `on_pending`) for a notice
    /// that the request waits for approvals.
    fn final_result(&self, result: RequestResult, told: &mut Option<RequestError>) -> Option<RequestResult> {
        match &result.outcome {
            Outcome::Error { error } if error.code == ErrorCode::ApprovalRequired => {
                if told.as_ref() != Some(error) {
                    if let Some(f) = &self.on_pending {
                        f(&result.request_id, error);
                    }
                    *told = Some(error.clone());
                }
                None
            }
            _ => Some(result),
        }
    }

    /// Signs a request body with the initiator key.
    pub fn sign_request(&self, body: &RequestBody) -> SignedRequest {
        let body = serde_json::to_string(body).expect("bodies serialise");
        let signature = self.config.initiator.sign(&SignedRequest::signing_bytes(&body)).to_bytes();
        SignedRequest { v: PROTOCOL_VERSION, body, initiator: self.config.initiator.verifying_key().to_bytes(), signature }
    }

    /// Publishes a signed request (again, if it was sent before: the cluster
    /// acts on a request id once) and waits for its result.
    pub async fn send(&self, request: &SignedRequest) -> Result<RequestResult, ClientError> {
        let body = request.parse_body().map_err(|e| ClientError::BadResult(e.to_string()))?;
        let id = body.request_id().clone();
        let subject = match body {
            RequestBody::Keygen(_) => KEYGEN_SUBJECT,
            RequestBody::Sign(_) => SIGN_SUBJECT,
            RequestBody::Reshare(_) => RESHARE_SUBJECT,
        };
        let mut results = self.nats.subscribe(result_subject(&id)).await.map_err(nats_err)?;
        let payload: bytes::Bytes = serde_json::to_vec(request).expect("requests serialise").into();
        // Publishing again under the same message id is harmless (the stream
        // keeps one copy), so a publish that fails while the connection moves
        // to another server is simply repeated.
        let mut tries = 0;
        let duplicate = loop {
            let publish = jetstream::message::PublishMessage::build().payload(payload.clone()).message_id(id.as_str());
            let acked = match self.js.send_publish(subject, publish).await {
                Ok(ack) => ack.await.map_err(nats_err),
                Err(e) => Err(nats_err(e)),
            };
            match acked {
                Ok(ack) => break ack.duplicate,
                Err(e) if tries + 1 >= PUBLISH_TRIES => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(PUBLISH_RETRY).await;
                }
            }
        };
        // The result arrives on the subscription, opened before the publish.
        // The result stream is read as well when the stream already held the
        // request (it may have been answered before), and after each quiet
        // poll period (a result published while this client was reconnecting
        // never reaches the subscription).
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut told = None;
        let mut look = duplicate;
        loop {
            if look {
                if let Some(stored) = self.stored_result(&id).await.ok().flatten().and_then(|r| self.final_result(r, &mut told)) {
                    return Ok(stored);
                }
            }
            look = true;
            tokio::select! {
                msg = results.next() => match msg {
                    Some(msg) => {
                        let result = RequestResult::decode(&msg.payload).map_err(|e| ClientError::BadResult(e.to_string()))?;
                        if let Some(result) = self.final_result(result, &mut told) {
                            return Ok(result);
                        }
                        // A notice (waiting for approvals): the next result
                        // comes on the subscription too.
                        look = false;
                    }
                    // The subscription is gone: the stream alone tells.
                    None => tokio::time::sleep(RESULT_POLL).await,
                },
                _ = tokio::time::sleep(RESULT_POLL) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout { request_id: id.to_string(), timeout_ms: timeout.as_millis() as u64 });
            }
        }
    }

    async fn stored_result(&self, id: &RequestId) -> Result<Option<RequestResult>, ClientError> {
        let stream = self.js.get_stream_no_info(RESULT_STREAM).await.map_err(nats_err)?;
        match stream.get_last_raw_message_by_subject(&result_subject(id)).await {
            Ok(m) => RequestResult::decode(&m.payload).map(Some).map_err(|e| ClientError::BadResult(e.to_string())),
            Err(_) => Ok(None),
        }
    }

    /// Sends `body` signed; returns the signed body string and the signers'
    /// statement of its result, which the caller checks.
    async fn submit(&self, body: RequestBody) -> Result<(String, Endorsed), ClientError> {
        let request = self.sign_request(&body);
        let result = self.send(&request).await?;
        match result.outcome {
            Outcome::Ok { result } => Ok((request.body, result)),
            Outcome::Error { error } => Err(ClientError::Request(error)),
        }
    }

    /// Asks the cluster's hosts about the registry; the first host to
    /// answer is taken (for questions whose answer steers nothing). Asked
    /// again, like [`Client::ask_all`], when the query is lost while the
    /// connection (or a host's) moves to another server.
    pub(crate) async fn ask(&self, ask: Ask) -> Result<Answer, ClientError> {
        let query: bytes::Bytes = serde_json::to_vec(&Query { v: PROTOCOL_VERSION, ask }).expect("queries serialise").into();
        let mut lost = ClientError::Nats(format!("no node answered within {:?}", QUERY_TIMEOUT * QUERY_TRIES));
        for _ in 0..QUERY_TRIES {
            let reply = match tokio::time::timeout(QUERY_TIMEOUT, self.nats.request(QUERY_SUBJECT, query.clone())).await {
                Ok(Ok(reply)) => reply,
                // Nobody subscribed: no host runs, or every one is between
                // servers; the latter passes in a moment.
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    lost = ClientError::Nats("no node of the cluster is running to answer".into());
                    tokio::time::sleep(PUBLISH_RETRY).await;
                    continue;
                }
                Ok(Err(e)) => return Err(nats_err(e)),
                Err(_) => continue,
            };
            return match Answer::decode(&reply.payload).map_err(|e| ClientError::BadResult(e.to_string()))? {
                Answer::Error { error } => Err(ClientError::Request(error)),
                answer => Ok(answer),
            };
        }
        Err(lost)
    }

    /// Asks every host and gathers their answers: until each pinned node's
    /// host answered, or [`GATHER`] after the first answer. Anyone on NATS
    /// can answer a query, so the caller checks what each answer says and
    /// a forged answer that comes first hides no honest one.
    async fn ask_all(&self, ask: Ask) -> Result<Vec<Answer>, ClientError> {
        let query: bytes::Bytes = serde_json::to_vec(&Query { v: PROTOCOL_VERSION, ask }).expect("queries serialise").into();
        // A query sent while the connection moves to another server (one
        // died) is lost: asked again, like a request is published again.
        for _ in 0..QUERY_TRIES {
            let answers = self.gather(query.clone()).await?;
            if !answers.is_empty() {
                return Ok(answers);
            }
        }
        Err(ClientError::Nats(format!("no node answered within {:?}", QUERY_TIMEOUT * QUERY_TRIES)))
    }

    /// One round of [`Client::ask_all`]: the answers, none if nobody answered.
    async fn gather(&self, query: bytes::Bytes) -> Result<Vec<Answer>, ClientError> {
        let inbox = self.nats.new_inbox();
        let mut replies = self.nats.subscribe(inbox.clone()).await.map_err(nats_err)?;
        self.nats.publish_with_reply(QUERY_SUBJECT, inbox, query).await.map_err(nats_err)?;
        let mut until = tokio::time::Instant::now() + QUERY_TIMEOUT;
        let mut answers = Vec::new();
        while answers.len() < self.config.roster.nodes().count() {
            let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await else { break };
            if answers.is_empty() {
                until = tokio::time::Instant::now() + GATHER;
            }
            // One undecodable answer (from anyone) spoils no other.
            if let Ok(answer) = Answer::decode(&reply.payload) {
                answers.push(answer);
            }
        }
        Ok(answers)
    }

    /// The signers this client pins: what checks their statements.
    pub fn roster(&self) -> &crate::Roster {
        &self.config.roster
    }

    /// The NATS connection.
    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The root of the dev cluster's simulated NSM, if configured.
    pub fn dev_attestation_root(&self) -> Option<&std::path::Path> {
        self.config.dev_attestation_root.as_deref()
    }

    /// Asks `node` for an attestation document answering `nonce` (16 to 64
    /// bytes); the document is not verified here.
    pub async fn attestation(&self, node: &NodeId, nonce: &[u8]) -> Result<Vec<u8>, ClientError> {
        use conclave_proto::attestation::AskError;
        match conclave_proto::attestation::ask(&self.nats, node, nonce.to_vec(), QUERY_TIMEOUT * 3).await {
            Ok(document) => Ok(document.0),
            Err(AskError::Refused(e)) => Err(ClientError::Request(e)),
            Err(e @ AskError::BadAnswer { .. }) => Err(ClientError::BadResult(e.to_string())),
            Err(e) => Err(ClientError::Nats(e.to_string())),
        }
    }

    /// Registered nodes, their records and readiness, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, ClientError> {
        match self.ask(Ask::Nodes).await? {
            Answer::Nodes { nodes } => Ok(nodes),
            other => Err(ClientError::BadResult(format!("a node listing answered with {other:?}"))),
        }
    }

    /// Registered node ids, sorted.
    pub async fn members(&self) -> Result<Vec<NodeId>, ClientError> {
        Ok(self.nodes().await?.into_iter().map(|n| n.node_id).collect())
    }

    /// Generates a key for `wallet`, shared by `committee` (default: every
    /// registered node), `threshold` of which sign.
    pub async fn keygen(&self, wallet: &WalletId, scheme: Scheme, threshold: u16, committee: Option<Vec<NodeId>>) -> Result<KeygenResult, ClientError> {
        let committee = match committee {
            Some(c) => c,
            // Registered nodes that this client pins: a registration is
            // anyone's to write.
            None => self.members().await?.into_iter().filter(|n| self.config.roster.nodes().any(|p| p == n)).collect(),
        };
        let mut expected = committee.clone();
        expected.sort();
        let body =
            RequestBody::Keygen(KeygenRequest { request_id: new_request_id(), wallet: wallet.clone(), scheme, threshold, committee, issued_at_ms: now_ms() });
        let (body, endorsed) = self.submit(body).await?;
        match self.config.roster.key_result(&endorsed, &body, wallet, scheme)? {
            (Completed::Keygen(_), k) if k.committee == expected && k.threshold == threshold && k.version == 1 => Ok(self.remember(k)),
            (other, _) => Err(ClientError::Unauthenticated(format!("a keygen request answered with {other:?}"))),
        }
    }

    /// Moves `wallet`'s key to `new_committee`, `new_threshold` of which
    /// sign, under the same public key; returns the wallet's new record.
    /// Checked here first, as the nodes will: the wallet exists, the new
    /// committee and threshold make sense, every new member is ready.
    pub async fn reshare(&self, wallet: &WalletId, scheme: Scheme, new_threshold: u16, new_committee: Vec<NodeId>) -> Result<KeygenResult, ClientError> {
        let record = self
            .wallet(wallet, scheme)
            .await?
            .ok_or_else(|| ClientError::Request(RequestError::new(ErrorCode::UnknownWallet, format!("no {scheme} key for wallet {wallet}"))))?;
        let ready: Vec<NodeId> = self.nodes().await?.into_iter().filter(|n| n.ready.is_some()).map(|n| n.node_id).collect();
        if let Some(absent) = new_committee.iter().find(|n| !ready.contains(n)) {
            return Err(ClientError::Request(RequestError::new(ErrorCode::InsufficientPeers, format!("{absent} is not ready; every new member must be"))));
        }
        let ready_old = record.committee.iter().filter(|n| ready.contains(n)).count();
        if ready_old < usize::from(record.threshold) {
            return Err(ClientError::Request(RequestError::new(
                ErrorCode::InsufficientPeers,
                format!("{ready_old} of the committee are ready, {} are needed to deal", record.threshold),
            )));
        }
        let mut expected = new_committee.clone();
        expected.sort();
        let body = RequestBody::Reshare(ReshareRequest {
            request_id: new_request_id(),
            wallet: wallet.clone(),
            scheme,
            public_key: record.public_key.clone(),
            xpub: record.xpub.clone(),
            version: record.version,
            committee: record.committee.clone(),
            threshold: record.threshold,
            new_committee,
            new_threshold,
            issued_at_ms: now_ms(),
        });
        body.validate().map_err(ClientError::Request)?;
        let (body, endorsed) = self.submit(body).await?;
        match self.config.roster.key_result(&endorsed, &body, wallet, scheme)? {
            (Completed::Reshare(_), k)
                if k.public_key == record.public_key
                    && k.xpub == record.xpub
                    && k.committee == expected
                    && k.threshold == new_threshold
                    && k.version == record.version + 1 =>
            {
                Ok(self.remember(k))
            }
            (other, _) => Err(ClientError::Unauthenticated(format!("a reshare request answered with {other:?}"))),
        }
    }

    /// The records of `scheme`'s wallets held by exactly `committee`, each
    /// signed by its committee.
    pub async fn wallets_of(&self, scheme: Scheme, committee: Vec<NodeId>) -> Result<Vec<KeygenResult>, ClientError> {
        let listing = self.wallets(Some(scheme), Some(committee)).await?;
        match listing.refused.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(listing.records),
        }
    }

    /// Wallet records (of a scheme, or all; of exactly a committee, or
    /// any), sorted by wallet and scheme: those signed by their committee,
    /// and apart, what no committee signed.
    pub async fn wallets(&self, scheme: Option<Scheme>, committee: Option<Vec<NodeId>>) -> Result<WalletListing, ClientError> {
        let mut found: Vec<Endorsed> = Vec::new();
        let mut error = None;
        for answer in self.ask_all(Ask::Wallets { scheme, committee }).await? {
            match answer {
                Answer::Wallets { records } => found.extend(records),
                Answer::Error { error: e } => error = Some(ClientError::Request(e)),
                _ => {}
            }
        }
        if found.is_empty() {
            if let Some(e) = error {
                return Err(e);
            }
        }
        let mut listing = WalletListing::default();
        let mut best: std::collections::BTreeMap<(WalletId, &'static str), KeygenResult> = Default::default();
        for endorsed in found {
            let claimed = endorsed.unverified_record();
            let checked = claimed.as_ref().ok_or_else(|| ClientError::Unauthenticated("a wallet record that is not a keygen's or a reshare's".into()));
            match checked.and_then(|c| self.config.roster.record(&endorsed, &c.wallet, c.scheme)) {
                Ok(record) => {
                    let slot = best.entry((record.wallet.clone(), record.scheme.as_str())).or_insert_with(|| record.clone());
                    if record.version > slot.version {
                        *slot = record;
                    }
                }
                Err(e) => {
                    let name = claimed.map(|c| format!("{} ({})", c.wallet, c.scheme)).unwrap_or_else(|| "?".into());
                    if !listing.refused.iter().any(|(n, _)| *n == name) {
                        listing.refused.push((name, e));
                    }
                }
            }
        }
        listing.records = best.into_values().collect();
        Ok(listing)
    }

    /// The public record of a wallet, signed by every member of its
    /// committee. Every host is asked; of the records its committee
    /// signed, the latest version counts. A record that no committee
    /// signed is refused ([`ClientError::Unauthenticated`]) when no signed
    /// one is found.
    pub async fn wallet(&self, wallet: &WalletId, scheme: Scheme) -> Result<Option<KeygenResult>, ClientError> {
        let (mut best, mut refused, mut error): (Option<KeygenResult>, Option<ClientError>, Option<ClientError>) = (None, None, None);
        for answer in self.ask_all(Ask::Wallet { wallet: wallet.clone(), scheme }).await? {
            match answer {
                Answer::Wallet { record: Some(endorsed) } => match self.config.roster.record(&endorsed, wallet, scheme) {
                    Ok(record) if best.as_ref().is_none_or(|b| record.version > b.version) => best = Some(record),
                    Ok(_) => {}
                    Err(e) => refused = Some(e),
                },
                Answer::Wallet { record: None } => {}
                Answer::Error { error: e } => error = Some(ClientError::Request(e)),
                _ => refused = Some(ClientError::BadResult("a wallet lookup answered with another kind of answer".into())),
            }
        }
        match (best, refused, error) {
            (Some(record), _, _) => Ok(Some(self.remember(record))),
            (None, Some(e), _) | (None, None, Some(e)) => Err(e),
            (None, None, None) => {
                self.records.forget(wallet, scheme);
                Ok(None)
            }
        }
    }

    /// Keeps `record` (checked) as the wallet's current one for signing.
    fn remember(&self, record: KeygenResult) -> KeygenResult {
        self.records.keep(&record);
        record
    }

    /// Signs with `wallet`'s key and verifies the signature before
    /// returning it. The key and its version come from the wallet's record
    /// as this client last read it; if a reshare has moved the key to
    /// another version since, the cluster answers `version_mismatch`, and
    /// the record is read again and the signature asked for again under a
    /// new request id.
    pub async fn sign(
        &self,
        wallet: &WalletId,
        scheme: Scheme,
        payload: SignPayload,
        path: Vec<u32>,
        signers: Option<Vec<NodeId>>,
    ) -> Result<SignResult, ClientError> {
        let known = self.records.get(wallet, scheme);
        if let Some(record) = known {
            match self.sign_with(&record, new_request_id(), payload.clone(), path.clone(), signers.clone()).await {
                // The key moved on: read its record again, below.
                Err(ClientError::Request(e)) if e.code == ErrorCode::VersionMismatch => {}
                signed => return signed,
            }
        }
        let record = self.current_record(wallet, scheme).await?;
        self.sign_with(&record, new_request_id(), payload, path, signers).await
    }

    /// [`Client::sign`] under a request id the caller chose (one that
    /// approvers are told in advance, say), with the wallet's record read
    /// from the hosts first: a request id is answered once, so it is not
    /// asked again.
    pub async fn sign_as(
        &self,
        request_id: RequestId,
        wallet: &WalletId,
        scheme: Scheme,
        payload: SignPayload,
        path: Vec<u32>,
        signers: Option<Vec<NodeId>>,
    ) -> Result<SignResult, ClientError> {
        let record = self.current_record(wallet, scheme).await?;
        self.sign_with(&record, request_id, payload, path, signers).await
    }

    /// The committee's signed record of `wallet`, read from the hosts now.
    async fn current_record(&self, wallet: &WalletId, scheme: Scheme) -> Result<KeygenResult, ClientError> {
        self.wallet(wallet, scheme)
            .await?
            .ok_or_else(|| ClientError::Request(RequestError::new(ErrorCode::UnknownWallet, format!("no {scheme} key for wallet {wallet}"))))
    }

    /// Asks for a signature with the key and version of `record`, a
    /// record checked against the roster, and checks the result.
    async fn sign_with(
        &self,
        record: &KeygenResult,
        request_id: RequestId,
        payload: SignPayload,
        path: Vec<u32>,
        signers: Option<Vec<NodeId>>,
    ) -> Result<SignResult, ClientError> {
        let wallet = &record.wallet;
        let scheme = record.scheme;
        let body = RequestBody::Sign(SignRequest {
            request_id,
            wallet: wallet.clone(),
            scheme,
            version: record.version,
            payload: payload.clone(),
            path: path.clone(),
            signers,
            timeout_ms: None,
            issued_at_ms: now_ms(),
        });
        let (body, endorsed) = self.submit(body).await?;
        let sig = self.config.roster.sign_result(&endorsed, &body)?;
        if sig.wallet != *wallet || sig.scheme != scheme || sig.path != path {
            return Err(ClientError::Unauthenticated(format!("a sign request for {wallet} answered for {} at {:?}", sig.wallet, sig.path)));
        }
        verify::check(record, &payload, &path, &sig)?;
        Ok(sig)
    }

    /// Nodes, their readiness and mode.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let entries = self.nodes().await?;
        let attested_by = |node: &NodeId| {
            entries.iter().filter_map(|verifier| Some((verifier.node_id.clone(), verifier.ready.as_ref()?.attested_peers.get(node)?.clone()))).collect()
        };
        let nodes: Vec<NodeStatus> = entries
            .iter()
            .cloned()
            .map(|n| NodeStatus {
                attested_by: attested_by(&n.node_id),
                ready: n.ready.is_some(),
                primes_ready: n.ready.as_ref().is_some_and(|b| b.primes_ready),
                presign_pools: n.ready.as_ref().map(|b| b.presign_pools.clone()).unwrap_or_default(),
                mode: n.record.identity.mode.to_string(),
                http: n.record.http,
                sign_key: hex::encode(n.record.identity.sign_key),
                id: n.node_id,
            })
            .collect();
        let ready = nodes.iter().filter(|n| n.ready).count();
        Ok(Status { total: nodes.len(), ready, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, version: u32) -> KeygenResult {
        KeygenResult {
            wallet: WalletId::new(format!("w-{i}")).unwrap(),
            scheme: Scheme::Eddsa,
            public_key: vec![7; 32],
            xpub: None,
            version,
            threshold: 2,
            committee: vec![NodeId::new("node-1").unwrap(), NodeId::new("node-2").unwrap()],
        }
    }

    #[test]
    fn the_record_cache_is_bounded_and_keeps_the_newest() {
        let records = Records::default();
        for i in 0..=MAX_RECORDS {
            records.keep(&record(i, 1));
        }
        assert_eq!(records.0.lock().unwrap().len(), MAX_RECORDS);
        assert!(records.get(&record(MAX_RECORDS, 1).wallet, Scheme::Eddsa).is_some(), "the newest is kept");
        // A wallet already kept is replaced, nothing else dropped.
        records.keep(&record(MAX_RECORDS, 2));
        assert_eq!(records.0.lock().unwrap().len(), MAX_RECORDS);
        assert_eq!(records.get(&record(MAX_RECORDS, 1).wallet, Scheme::Eddsa).unwrap().version, 2);
        records.forget(&record(MAX_RECORDS, 1).wallet, Scheme::Eddsa);
        assert!(records.get(&record(MAX_RECORDS, 1).wallet, Scheme::Eddsa).is_none());
    }
}
