//! Running one protocol session over the end-to-end channel.
//!
//! Every protocol (keygen, aux info, signing, for both schemes) runs through
//! [`run`]: it implements round-based's delivery once. The protocol itself
//! runs on a dedicated thread, because its rounds are seconds of CPU and must
//! not stall the link. Outgoing messages are serialised, sealed per recipient
//! and handed to the host; incoming envelopes are authenticated, checked
//! against replay, decoded and checked against the round the header claims.
//! A deadline ends the session whatever the peers do; a peer that stays
//! silent for a round timeout while this party waits for it ends it sooner,
//! blaming that peer; the host can abort it (a later attempt superseded it).

use crate::channel::{self, ReplayGuard};
use crate::service::Enclave;
use conclave_proto::envelope::{Envelope, EnvelopeHeader};
use conclave_proto::link::{DropReason, FromEnclave};
use conclave_proto::{ErrorCode, NodeId, RequestError, RequestId, SessionId, PROTOCOL_VERSION};
use futures::channel::mpsc as fmpsc;
use futures::StreamExt;
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Envelopes that arrive before their session starts here are kept this long.
const EARLY_TTL: Duration = Duration::from_secs(60);
/// At most this many not-yet-started sessions are held...
const MAX_EARLY_SESSIONS: usize = 256;
/// ...with at most this many envelopes each...
const MAX_EARLY_PER_SESSION: usize = 64;
/// ...at most this many bytes from one peer...
const MAX_EARLY_BYTES_PER_PEER: usize = 16 * 1024 * 1024;
/// ...and at most this many bytes in all.
const MAX_EARLY_BYTES: usize = 64 * 1024 * 1024;
/// A running session's queue of envelopes not yet read by its loop.
const LIVE_QUEUE: usize = 1024;
/// Ended sessions are remembered this long, so that their late or replayed
/// envelopes are dropped rather than held as early ones...
const ENDED_TTL: Duration = Duration::from_secs(15 * 60);
/// ...up to this many (the oldest are forgotten first).
const MAX_ENDED: usize = 100_000;

/// The delivery a protocol gets: a stream of incoming and a sink of
/// outgoing messages.
pub type Delivery<M> = (fmpsc::UnboundedReceiver<Result<Incoming<M>, Infallible>>, fmpsc::UnboundedSender<Outgoing<M>>);
/// The party handle a protocol runs with.
pub type Party<M> = MpcParty<M, Delivery<M>>;

/// Who runs a session and until when.
pub struct SessionSpec {
    /// The session (routing of envelopes; derived from request, attempt
    /// and kind).
    pub id: SessionId,
    /// The request the session serves.
    pub request: RequestId,
    /// Its attempt.
    pub attempt: u32,
    /// The protocol's execution id: binds the session id, the request body,
    /// the parties and the key version (`service::Attempt::spec`).
    pub execution: [u8; 32],
    /// Participants; a party's protocol index is its position here.
    pub parties: Vec<NodeId>,
    /// When the session is abandoned.
    pub deadline: Instant,
    /// The same deadline as the plan states it (Unix ms): how long a heavy
    /// session may wait for its turn ([`crate::turns`]).
    pub deadline_ms: u64,
    /// When the plan says its request was first planned (Unix ms): where a
    /// heavy session stands in line at every party.
    pub planned_ms: u64,
    /// How long this party waits for a peer before it blames it.
    pub round_timeout: Duration,
}

impl SessionSpec {
    /// This node's index among the parties.
    pub fn index_of(&self, node: &NodeId) -> Option<u16> {
        self.parties.iter().position(|p| p == node).map(|i| i as u16)
    }
}

/// An envelope that authenticated: its header and the protocol message.
pub struct Opened {
    /// The authenticated header.
    pub header: EnvelopeHeader,
    /// The decrypted protocol message.
    pub message: zeroize::Zeroizing<Vec<u8>>,
}

/// Routes authenticated messages to live sessions, and holds (boundedly:
/// per session, per peer and in all) those that arrive before their
/// session has started here. Nothing a peer's host sends makes it hold
/// more.
#[derive(Default)]
pub struct Router {
    inner: Mutex<RouterInner>,
}

#[derive(Default)]
struct RouterInner {
    live: HashMap<SessionId, mpsc::Sender<Opened>>,
    early: HashMap<SessionId, Early>,
    /// Bytes held early, by sender.
    early_bytes: HashMap<NodeId, usize>,
    /// Ended sessions (aborted, or finished here), and when they ended.
    ended: HashMap<SessionId, Instant>,
}

/// Envelopes held for a session that has not started here.
struct Early {
    since: Instant,
    envelopes: Vec<Opened>,
}

/// A session's inbox; leaving the session (dropping this) unregisters it
/// and remembers it as ended.
pub struct Inbox {
    router: Arc<Router>,
    id: SessionId,
    rx: mpsc::Receiver<Opened>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.router.abort(self.id);
    }
}

impl RouterInner {
    fn expire(&mut self, now: Instant) {
        let RouterInner { early, early_bytes, ended, .. } = self;
        early.retain(|_, e| {
            let keep = now.duration_since(e.since) < EARLY_TTL;
            if !keep {
                release(early_bytes, &e.envelopes);
            }
            keep
        });
        ended.retain(|_, at| now.duration_since(*at) < ENDED_TTL);
        if ended.len() > MAX_ENDED {
            let mut by_age: Vec<(SessionId, Instant)> = ended.iter().map(|(id, at)| (*id, *at)).collect();
            by_age.sort_by_key(|(_, at)| *at);
            for (id, _) in by_age.into_iter().take(ended.len() - MAX_ENDED) {
                ended.remove(&id);
            }
        }
    }
}

fn release(early_bytes: &mut HashMap<NodeId, usize>, envelopes: &[Opened]) {
    for e in envelopes {
        if let Some(bytes) = early_bytes.get_mut(&e.header.sender) {
            *bytes = bytes.saturating_sub(e.message.len());
            if *bytes == 0 {
                early_bytes.remove(&e.header.sender);
            }
        }
    }
}

impl Router {
    /// Hands a message to its session, or keeps it until the session starts.
    pub fn deliver(&self, envelope: Opened) -> Result<(), DropReason> {
        let mut inner = self.inner.lock().expect("router lock");
        let id = envelope.header.session;
        if let Some(tx) = inner.live.get(&id) {
            return tx.try_send(envelope).map_err(|_| DropReason::NoRoom);
        }
        inner.expire(Instant::now());
        if inner.ended.contains_key(&id) {
            return Err(DropReason::Finished);
        }
        let (sender, len) = (envelope.header.sender.clone(), envelope.message.len());
        let peer_bytes = inner.early_bytes.get(&sender).copied().unwrap_or(0);
        let total_bytes: usize = inner.early_bytes.values().sum();
        if peer_bytes + len > MAX_EARLY_BYTES_PER_PEER || total_bytes + len > MAX_EARLY_BYTES {
            return Err(DropReason::NoRoom);
        }
        let sessions = inner.early.len();
        match inner.early.get_mut(&id) {
            // The same envelope again: a replay, held once.
            Some(e) if e.envelopes.iter().any(|held| held.header.sender == sender && held.header.seq == envelope.header.seq) => {
                return Err(DropReason::Replayed)
            }
            Some(e) if e.envelopes.len() < MAX_EARLY_PER_SESSION => e.envelopes.push(envelope),
            None if sessions < MAX_EARLY_SESSIONS => {
                inner.early.insert(id, Early { since: Instant::now(), envelopes: vec![envelope] });
            }
            _ => return Err(DropReason::NoRoom),
        }
        *inner.early_bytes.entry(sender).or_default() += len;
        Ok(())
    }

    /// Opens the inbox of session `id`, with anything that arrived early;
    /// refused if the session ended here already (an attempt aborted
    /// before it started).
    pub fn register(self: &Arc<Self>, id: SessionId) -> Result<Inbox, RequestError> {
        let (tx, rx) = mpsc::channel(LIVE_QUEUE.max(MAX_EARLY_PER_SESSION));
        let mut inner = self.inner.lock().expect("router lock");
        if inner.ended.contains_key(&id) || inner.live.contains_key(&id) {
            return Err(RequestError::new(ErrorCode::ProtocolAbort, format!("session {id} ended here, or runs already")));
        }
        if let Some(early) = inner.early.remove(&id) {
            release(&mut inner.early_bytes, &early.envelopes);
            for e in early.envelopes {
                let _ = tx.try_send(e);
            }
        }
        inner.live.insert(id, tx);
        Ok(Inbox { router: self.clone(), id, rx })
    }

    /// Ends session `id` if it runs here (its protocol stops at its next
    /// receive and its thread drops its secrets), drops what is held for
    /// it, and drops what arrives for it from now on.
    pub fn abort(&self, id: SessionId) {
        let mut inner = self.inner.lock().expect("router lock");
        inner.live.remove(&id);
        if let Some(early) = inner.early.remove(&id) {
            release(&mut inner.early_bytes, &early.envelopes);
        }
        inner.ended.insert(id, Instant::now());
    }

    /// Number of sessions running here (for status and tests).
    pub fn live_sessions(&self) -> usize {
        self.inner.lock().expect("router lock").live.len()
    }

    /// Envelopes and bytes held for sessions not started here.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("router lock");
        (inner.early.values().map(|e| e.envelopes.len()).sum(), inner.early_bytes.values().sum())
    }
}

/// This signer's seat in one session: what a protocol engine gets. Its
/// index among the parties, the session's size and execution id, and the
/// means to run a protocol there; not the signer's keys, sealer or host
/// link.
pub struct Seat<'a> {
    enclave: &'a Arc<Enclave>,
    spec: &'a SessionSpec,
    index: u16,
    cost: Cost,
    background: bool,
}

/// What a session's rounds cost this signer's CPU.
#[derive(Clone, Copy)]
enum Cost {
    /// Milliseconds: runs at once.
    Light,
    /// Paillier arithmetic, tenths of a second and more per round: runs in
    /// its turn ([`crate::turns`]).
    Heavy,
}

impl<'a> Seat<'a> {
    /// This signer's seat in `spec`; an internal error if it is not a party
    /// (the policy checked that before).
    pub fn take(enclave: &'a Arc<Enclave>, spec: &'a SessionSpec) -> Result<Seat<'a>, RequestError> {
        let index = spec.index_of(enclave.keys.node_id()).ok_or_else(|| RequestError::new(ErrorCode::Internal, "this node is not a party of the session"))?;
        Ok(Seat { enclave, spec, index, cost: Cost::Light, background: false })
    }

    /// This seat for a protocol whose rounds are heavy (ECDSA's Paillier
    /// proofs): it runs when its turn comes, first planned first, so
    /// that an overloaded signer finishes sessions instead of slowing all.
    pub fn heavy(self) -> Self {
        Seat { cost: Cost::Heavy, ..self }
    }

    /// This seat for work nobody waits for (a pool's refill): its thread
    /// runs at the lowest CPU priority, so that requests take the CPU
    /// first and the pool fills in what they leave.
    pub fn background(self) -> Self {
        Seat { background: true, ..self }
    }

    /// This party's index in the session.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// How many parties the session has.
    pub fn parties(&self) -> u16 {
        self.spec.parties.len() as u16
    }

    /// The session's execution id.
    pub fn execution(&self) -> [u8; 32] {
        self.spec.execution
    }

    /// Runs `protocol` here, on its own thread, and returns its output, or
    /// an error by the deadline.
    pub async fn run<M, T, E, F>(self, protocol: F) -> Result<T, RequestError>
    where
        M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
    {
        run_releasing(&self, self.enclave.inbox(self.spec)?, None, protocol).await
    }

    /// [`Seat::run`] for a signing protocol: before a message that
    /// `releases` says carries this party's share of the signature leaves,
    /// the attempt must still be the request's current one here, and from
    /// then on no later attempt of the request runs here
    /// ([`Enclave::release`]). With `2t > n` any two quorums share a
    /// signer, so a request never gets two signatures.
    pub async fn run_signing<M, T, E, F>(self, releases: fn(&M) -> bool, protocol: F) -> Result<T, RequestError>
    where
        M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
    {
        run_releasing(&self, self.enclave.inbox(self.spec)?, Some(releases), protocol).await
    }

    /// [`Seat::run`] with an inbox opened earlier: a party that must wait
    /// before it can start (for its Paillier primes) opens its inbox first,
    /// so that faster peers' first messages wait in it rather than expire
    /// unheard among early envelopes.
    pub async fn run_in<M, T, E, F>(self, inbox: Inbox, protocol: F) -> Result<T, RequestError>
    where
        M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
    {
        run_releasing(&self, inbox, None, protocol).await
    }
}

/// The lowest CPU priority for the calling thread only (Linux schedules
/// each thread by its own policy; this one ends with its session):
/// `SCHED_IDLE`, which runs only on a core nothing else wants and gives it
/// up the moment a request's thread wakes. Nice 19 is not enough: the
/// kernel lets a running thread finish its slice (milliseconds) before a
/// waking one of higher weight, which put a refill's slice in front of
/// every hop of a presigned signature. Nice 19 stays as a fallback where
/// the policy is refused.
fn lowest_priority() {
    use thread_priority::{set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let me = thread_native_id();
    let idle = set_thread_priority_and_policy(me, ThreadPriority::Min, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
    if let Err(idle) = idle {
        let nice = set_thread_priority_and_policy(me, ThreadPriority::Min, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other));
        tracing::warn!(error = %idle, fallback = ?nice, "cannot give a background session the idle policy");
    }
}

async fn run_releasing<M, T, E, F>(seat: &Seat<'_>, mut inbox: Inbox, releases: Option<fn(&M) -> bool>, protocol: F) -> Result<T, RequestError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
{
    let (enclave, spec) = (seat.enclave, seat.spec);
    // Peers' messages that arrive while this party waits for its turn.
    let mut held = VecDeque::new();
    let turn = match seat.cost {
        Cost::Light => None,
        Cost::Heavy => Some(wait_turn(enclave, spec, &mut inbox, &mut held).await?),
    };
    // Before this party's share of the signature leaves: the writes it
    // waits for are durable (the decision that allowed it on record, the
    // presignature it used spent), and the attempt may still release.
    let release = async |msg: &M| match releases {
        Some(releases) if releases(msg) => {
            enclave.durable(&spec.request, spec.attempt).await?;
            enclave.release(&spec.request, spec.attempt)
        }
        _ => Ok(()),
    };
    let me = enclave.keys.node_id().clone();
    let background = seat.background;
    let (in_tx, in_rx) = fmpsc::unbounded::<Result<Incoming<M>, Infallible>>();
    let (out_tx, mut out_rx) = fmpsc::unbounded::<Outgoing<M>>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("session-{}", spec.id))
        .spawn(move || {
            // The turn ends with the thread, when the protocol's CPU is spent.
            let _turn = turn;
            if background {
                lowest_priority();
            }
            let party = MpcParty::connected((in_rx, out_tx));
            let _ = done_tx.send(protocol(party).map_err(|e| e.to_string()));
        })
        .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot start session thread: {e}")))?;

    let mut replay = ReplayGuard::default();
    let mut seq = 0u64;
    let mut next_msg_id = 0u64;
    let deadline = tokio::time::Instant::from_std(spec.deadline);
    let mut in_tx = Some(in_tx);
    let mut rounds = Rounds::new(&spec.parties, &me);
    let mut quiet_until = tokio::time::Instant::now() + spec.round_timeout;
    loop {
        tokio::select! {
            // Outgoing first: a party's last messages must leave before it
            // reports, or its peers wait for them forever.
            biased;
            Some(out) = out_rx.next() => {
                seq += 1;
                rounds.sent(out.msg.round());
                release(&out.msg).await?;
                send_outgoing(enclave, spec, &me, seq, out)?;
            }
            result = &mut done_rx => {
                // The protocol has returned, so everything it will ever send
                // is queued already.
                while let Ok(out) = out_rx.try_recv() {
                    seq += 1;
                    release(&out.msg).await?;
                    send_outgoing(enclave, spec, &me, seq, out)?;
                }
                return match result {
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(reason)) => Err(RequestError::new(ErrorCode::ProtocolAbort, reason)),
                    Err(_) => Err(RequestError::new(ErrorCode::Internal, "session thread panicked")),
                };
            }
            opened = next_opened(&mut held, &mut inbox) => {
                let Some(opened) = opened else {
                    in_tx.take();
                    return Err(RequestError::new(ErrorCode::ProtocolAbort, format!("session {} was aborted", spec.id)));
                };
                match accept_incoming::<M>(enclave, spec, &mut replay, &opened) {
                    Ok((sender, msg)) => {
                        next_msg_id += 1;
                        rounds.heard(&opened.header.sender, opened.header.round);
                        quiet_until = tokio::time::Instant::now() + spec.round_timeout;
                        let msg_type = if opened.header.broadcast { MessageType::Broadcast } else { MessageType::P2P };
                        if let Some(tx) = &in_tx {
                            let _ = tx.unbounded_send(Ok(Incoming { id: next_msg_id, sender, msg_type, msg }));
                        }
                    }
                    Err(Refusal::Replayed) => {
                        enclave.host.send(FromEnclave::Dropped { reason: DropReason::Replayed, peer: opened.header.sender.clone() });
                    }
                    Err(Refusal::Bad(error)) => {
                        tracing::warn!(session = %spec.id, peer = %opened.header.sender, %error, "message refused");
                        enclave.host.send(FromEnclave::Rejected {
                            code: error.code,
                            reason: error.reason,
                            peer: Some(opened.header.sender.clone()),
                        });
                    }
                }
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                in_tx.take();
                let silent = rounds.behind();
                let names: Vec<String> = silent.iter().map(|n| n.to_string()).collect();
                let error = RequestError::new(
                    ErrorCode::PeerUnavailable,
                    format!("session {}: nothing from {} for {} ms", spec.id, names.join(", "), spec.round_timeout.as_millis()),
                );
                return Err(error.blaming(silent));
            }
            _ = tokio::time::sleep_until(deadline) => {
                // Closing the protocol's input ends it at its next receive;
                // its thread then exits and drops (zeroizes) its secrets.
                in_tx.take();
                return Err(RequestError::new(ErrorCode::Timeout, format!("session {} passed its deadline", spec.id)));
            }
        }
    }
}

/// Which peers this party is waiting for: those that have not sent a
/// message of the latest round this party has sent in.
struct Rounds {
    mine: u16,
    theirs: HashMap<NodeId, Option<u16>>,
}

impl Rounds {
    fn new(parties: &[NodeId], me: &NodeId) -> Rounds {
        Rounds { mine: 0, theirs: parties.iter().filter(|p| *p != me).map(|p| (p.clone(), None)).collect() }
    }

    fn sent(&mut self, round: u16) {
        self.mine = self.mine.max(round);
    }

    fn heard(&mut self, peer: &NodeId, round: u16) {
        if let Some(r) = self.theirs.get_mut(peer) {
            *r = Some(r.map_or(round, |r| r.max(round)));
        }
    }

    /// The peers behind this party; all of them if none is (the protocol is
    /// computing, or waiting on everyone).
    fn behind(&self) -> Vec<NodeId> {
        let mut behind: Vec<NodeId> = self.theirs.iter().filter(|(_, r)| r.is_none_or(|r| r < self.mine)).map(|(p, _)| p.clone()).collect();
        if behind.is_empty() {
            behind = self.theirs.keys().cloned().collect();
        }
        behind.sort();
        behind
    }
}

fn send_outgoing<M: ProtocolMessage + Serialize>(enclave: &Enclave, spec: &SessionSpec, me: &NodeId, seq: u64, out: Outgoing<M>) -> Result<(), RequestError> {
    let payload = zeroize::Zeroizing::new(serde_json::to_vec(&out.msg).map_err(|e| RequestError::new(ErrorCode::Internal, format!("encode message: {e}")))?);
    let recipients: Vec<&NodeId> = match out.recipient {
        MessageDestination::AllParties => spec.parties.iter().filter(|p| *p != me).collect(),
        MessageDestination::OneParty(i) => {
            vec![spec.parties.get(usize::from(i)).ok_or_else(|| RequestError::new(ErrorCode::Internal, format!("message to unknown party {i}")))?]
        }
    };
    for recipient in recipients {
        let peer = enclave.peer(recipient)?;
        let header = EnvelopeHeader {
            v: PROTOCOL_VERSION,
            session: spec.id,
            sender: me.clone(),
            recipient: recipient.clone(),
            round: out.msg.round(),
            seq,
            broadcast: out.recipient == MessageDestination::AllParties,
        };
        let envelope = channel::seal(&enclave.keys, header, &peer.kx, &payload)
            .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign with the identity key: {e}")))?;
        enclave.host.send(FromEnclave::Send { envelope });
    }
    Ok(())
}

/// Authenticates an envelope from the host: it must come from a roster peer,
/// be addressed to this node, and open. Done on arrival, before the session
/// is known here, so nothing unauthenticated is ever buffered.
pub fn open(enclave: &Enclave, envelope: &Envelope) -> Result<Opened, RequestError> {
    let h = &envelope.header;
    let bad = |reason: String| RequestError::new(ErrorCode::BadEnvelope, reason);
    conclave_proto::codec::check_version("envelope", h.v).map_err(|e| bad(e.to_string()))?;
    if h.sender == *enclave.keys.node_id() {
        return Err(bad("envelope claims to come from this node".into()));
    }
    let peer = enclave.peer(&h.sender).map_err(|e| bad(e.reason))?;
    let message = channel::open(&enclave.keys, envelope, &peer.kx, &peer.sign).map_err(|e| bad(e.to_string()))?;
    Ok(Opened { header: h.clone(), message })
}

/// Why a session refused an authenticated envelope.
enum Refusal {
    /// A replay (or reordered): dropped and counted, nothing to report.
    Replayed,
    /// Not a message of this session.
    Bad(RequestError),
}

/// Runs `protocol` for `n` parties in this process, each on its own
/// thread, passing messages in memory: the same protocol code and threads
/// a cluster runs, without the channel, the link and NATS. The benchmark's
/// baseline of what a cluster adds (`examples/ecdsa_cost.rs`).
pub fn run_threaded<M, T>(n: u16, protocol: impl Fn(u16, Party<M>) -> T + Sync) -> Vec<T>
where
    M: ProtocolMessage + Clone + Send + 'static,
    T: Send,
{
    let ids = std::sync::atomic::AtomicU64::new(0);
    let (inboxes, incoming): (Vec<_>, Vec<_>) = (0..n).map(|_| fmpsc::unbounded::<Result<Incoming<M>, Infallible>>()).unzip();
    std::thread::scope(|scope| {
        let running: Vec<_> = incoming
            .into_iter()
            .enumerate()
            .map(|(i, in_rx)| {
                let (out_tx, mut out_rx) = fmpsc::unbounded::<Outgoing<M>>();
                let (inboxes, ids) = (&inboxes, &ids);
                // Forwards this party's messages until its protocol ends.
                let sender = i as u16;
                scope.spawn(move || {
                    while let Some(out) = futures::executor::block_on(out_rx.next()) {
                        let deliver = |to: u16, msg_type| {
                            let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = inboxes[usize::from(to)].unbounded_send(Ok(Incoming { id, sender, msg_type, msg: out.msg.clone() }));
                        };
                        match out.recipient {
                            MessageDestination::AllParties => (0..n).filter(|&j| j != sender).for_each(|j| deliver(j, MessageType::Broadcast)),
                            MessageDestination::OneParty(j) => deliver(j, MessageType::P2P),
                        }
                    }
                });
                let protocol = &protocol;
                scope.spawn(move || protocol(sender, MpcParty::connected((in_rx, out_tx))))
            })
            .collect();
        running.into_iter().map(|party| party.join().expect("a party's thread panicked")).collect()
    })
}

/// Waits for a heavy session's turn, keeping (up to a running session's
/// queue) what its peers send meanwhile; ends it if it is aborted or its
/// deadline passes first, and refuses it at once (`overloaded`) if the
/// line ahead would keep it past its deadline.
async fn wait_turn(enclave: &Arc<Enclave>, spec: &SessionSpec, inbox: &mut Inbox, held: &mut VecDeque<Opened>) -> Result<crate::turns::Turn, RequestError> {
    let place = crate::turns::Place { planned_ms: spec.planned_ms, session: spec.id };
    if let Err(overloaded) = enclave.turns.admit(&place, spec.deadline_ms, crate::now_ms()) {
        return Err(RequestError::new(
            ErrorCode::Overloaded,
            format!(
                "session {}: the heavy sessions queued at {} would end it about {} ms past its deadline",
                spec.id,
                enclave.keys.node_id(),
                overloaded.expected_end_ms.saturating_sub(spec.deadline_ms)
            ),
        ));
    }
    let take = enclave.turns.take(place);
    tokio::pin!(take);
    let deadline = tokio::time::Instant::from_std(spec.deadline);
    loop {
        tokio::select! {
            turn = &mut take => {
                if let Some(waited) = turn.waited() {
                    enclave.host.send(FromEnclave::Waited { ms: waited.as_millis() as u64 });
                }
                return Ok(turn);
            }
            opened = inbox.rx.recv(), if held.len() < LIVE_QUEUE => match opened {
                Some(opened) => held.push_back(opened),
                None => return Err(RequestError::new(ErrorCode::ProtocolAbort, format!("session {} was aborted while it waited for its turn", spec.id))),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(RequestError::new(ErrorCode::Timeout, format!("session {} waited for its turn past its deadline", spec.id)));
            }
        }
    }
}

/// The next message for a running session: those held while it waited
/// first.
async fn next_opened(held: &mut VecDeque<Opened>, inbox: &mut Inbox) -> Option<Opened> {
    match held.pop_front() {
        Some(opened) => Some(opened),
        None => inbox.rx.recv().await,
    }
}

fn accept_incoming<M: ProtocolMessage + DeserializeOwned>(
    enclave: &Enclave,
    spec: &SessionSpec,
    replay: &mut ReplayGuard,
    opened: &Opened,
) -> Result<(u16, M), Refusal> {
    let h = &opened.header;
    let bad = |reason: String| Refusal::Bad(RequestError::new(ErrorCode::BadEnvelope, reason));
    let sender = spec
        .index_of(&h.sender)
        .filter(|_| h.sender != *enclave.keys.node_id())
        .ok_or_else(|| bad(format!("{} is not a party of session {}", h.sender, spec.id)))?;
    replay.accept(&h.sender, h.seq).map_err(|_| Refusal::Replayed)?;
    // Reasons travel to the host: they name the sender and what failed,
    // never anything of the decrypted message (a parser's complaint quotes
    // its input).
    let msg: M = serde_json::from_slice(&opened.message).map_err(|_| bad(format!("undecodable message from {}", h.sender)))?;
    if msg.round() != h.round {
        return Err(bad(format!("message from {} is not of the round its header names", h.sender)));
    }
    Ok((sender, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::ids::SessionKind;

    fn session(n: u32) -> SessionId {
        SessionId::derive(SessionKind::Sign, &RequestId::new("r").unwrap(), n)
    }

    fn opened(session: SessionId, sender: &str, seq: u64, len: usize) -> Opened {
        let header = EnvelopeHeader {
            v: PROTOCOL_VERSION,
            session,
            sender: NodeId::new(sender).unwrap(),
            recipient: NodeId::new("me").unwrap(),
            round: 1,
            seq,
            broadcast: false,
        };
        Opened { header, message: zeroize::Zeroizing::new(vec![0; len]) }
    }

    #[test]
    fn a_background_session_lowers_its_own_thread_only() {
        use thread_priority::{thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let before = thread_schedule_policy().unwrap();
        let background = std::thread::spawn(move || {
            lowest_priority();
            thread_schedule_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(background, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        assert_eq!(thread_schedule_policy().unwrap(), before, "the calling thread keeps its policy");
        assert_ne!(before, background);
    }

    #[test]
    fn early_envelopes_are_held_once_and_within_bounds() {
        let router = Arc::new(Router::default());
        router.deliver(opened(session(1), "a", 1, 10)).unwrap();
        assert_eq!(router.deliver(opened(session(1), "a", 1, 10)), Err(DropReason::Replayed), "the same envelope again");
        for seq in 2..=MAX_EARLY_PER_SESSION as u64 {
            router.deliver(opened(session(1), "a", seq, 10)).unwrap();
        }
        assert_eq!(router.deliver(opened(session(1), "a", 1000, 10)), Err(DropReason::NoRoom), "per session");
        assert_eq!(router.held(), (MAX_EARLY_PER_SESSION, MAX_EARLY_PER_SESSION * 10));

        // One peer cannot take more than its share of bytes...
        let big = MAX_EARLY_BYTES_PER_PEER / 2 + 1;
        router.deliver(opened(session(2), "b", 1, big)).unwrap();
        assert_eq!(router.deliver(opened(session(3), "b", 1, big)), Err(DropReason::NoRoom), "per peer");
        // ...nor all peers together more than the total.
        let mut peer = 0;
        let refused = loop {
            peer += 1;
            match router.deliver(opened(session(100 + peer), &format!("p{peer}"), 1, big)) {
                Ok(()) => assert!(peer < 1000, "never refused"),
                Err(reason) => break reason,
            }
        };
        assert_eq!(refused, DropReason::NoRoom);
        assert!(router.held().1 <= MAX_EARLY_BYTES, "{:?}", router.held());

        // Starting a session takes its envelopes and releases their bytes.
        let held = router.held();
        let mut inbox = router.register(session(1)).unwrap();
        assert_eq!(router.held(), (held.0 - MAX_EARLY_PER_SESSION, held.1 - MAX_EARLY_PER_SESSION * 10));
        assert_eq!(inbox.rx.try_recv().unwrap().header.seq, 1);
    }

    #[test]
    fn ended_sessions_drop_late_envelopes_and_never_start_again() {
        let router = Arc::new(Router::default());
        let inbox = router.register(session(1)).unwrap();
        assert!(router.register(session(1)).is_err(), "a session runs once at a time");
        drop(inbox);
        assert_eq!(router.deliver(opened(session(1), "a", 7, 10)), Err(DropReason::Finished));
        assert_eq!(router.held(), (0, 0), "nothing held for it");
        assert!(router.register(session(1)).is_err(), "an ended session does not start again");

        // An attempt aborted before it started here never starts.
        router.deliver(opened(session(2), "a", 1, 10)).unwrap();
        router.abort(session(2));
        assert_eq!(router.held(), (0, 0));
        assert!(router.register(session(2)).is_err());
    }

    #[test]
    fn a_running_sessions_queue_is_bounded() {
        let router = Arc::new(Router::default());
        let _inbox = router.register(session(1)).unwrap();
        for seq in 0..LIVE_QUEUE as u64 {
            router.deliver(opened(session(1), "a", seq, 1)).unwrap();
        }
        assert_eq!(router.deliver(opened(session(1), "a", 99_999, 1)), Err(DropReason::NoRoom));
    }
}
