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
use conclave_proto::link::FromEnclave;
use conclave_proto::{ErrorCode, NodeId, RequestError, SessionId, PROTOCOL_VERSION};
use futures::channel::mpsc as fmpsc;
use futures::StreamExt;
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Envelopes that arrive before their session starts here are kept this long.
const EARLY_TTL: Duration = Duration::from_secs(60);
/// At most this many not-yet-started sessions are buffered...
const MAX_EARLY_SESSIONS: usize = 256;
/// ...with at most this many envelopes each.
const MAX_EARLY_PER_SESSION: usize = 64;

/// The delivery a protocol gets: a stream of incoming messages and a sink of
/// outgoing ones.
pub type Delivery<M> = (fmpsc::UnboundedReceiver<Result<Incoming<M>, Infallible>>, fmpsc::UnboundedSender<Outgoing<M>>);
/// The party handle a protocol runs with.
pub type Party<M> = MpcParty<M, Delivery<M>>;

/// Who runs a session and until when.
pub struct SessionSpec {
    /// The session (and the protocol's execution id).
    pub id: SessionId,
    /// Participants; a party's protocol index is its position here.
    pub parties: Vec<NodeId>,
    /// When the session is abandoned.
    pub deadline: Instant,
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

/// Routes authenticated messages to live sessions, and holds (boundedly)
/// those that arrive before their session has started here.
#[derive(Default)]
pub struct Router {
    inner: Mutex<RouterInner>,
}

#[derive(Default)]
struct RouterInner {
    live: HashMap<SessionId, mpsc::UnboundedSender<Opened>>,
    early: HashMap<SessionId, (Instant, Vec<Opened>)>,
    /// Aborted sessions: what still arrives for them is dropped, not held.
    closed: HashMap<SessionId, Instant>,
}

/// Why an envelope was dropped by the router.
#[derive(Debug, thiserror::Error)]
#[error("no room to hold an envelope for session {0}, which has not started here")]
pub struct EarlyOverflow(SessionId);

/// A session's inbox; leaving the session (dropping this) unregisters it.
pub struct Inbox {
    router: Arc<Router>,
    id: SessionId,
    rx: mpsc::UnboundedReceiver<Opened>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.router.inner.lock().expect("router lock").live.remove(&self.id);
    }
}

impl Router {
    /// Hands a message to its session, or keeps it until the session starts.
    pub fn deliver(&self, envelope: Opened) -> Result<(), EarlyOverflow> {
        let mut inner = self.inner.lock().expect("router lock");
        let id = envelope.header.session;
        if let Some(tx) = inner.live.get(&id) {
            let _ = tx.send(envelope);
            return Ok(());
        }
        let now = Instant::now();
        inner.early.retain(|_, (since, _)| now.duration_since(*since) < EARLY_TTL);
        inner.closed.retain(|_, since| now.duration_since(*since) < EARLY_TTL);
        if inner.closed.contains_key(&id) {
            return Ok(());
        }
        let full = inner.early.len() >= MAX_EARLY_SESSIONS;
        match inner.early.get_mut(&id) {
            Some((_, queue)) if queue.len() < MAX_EARLY_PER_SESSION => queue.push(envelope),
            None if !full => {
                inner.early.insert(id, (now, vec![envelope]));
            }
            _ => return Err(EarlyOverflow(id)),
        }
        Ok(())
    }

    /// Opens the inbox of session `id`, with anything that arrived early.
    pub fn register(self: &Arc<Self>, id: SessionId) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock().expect("router lock");
        if let Some((_, early)) = inner.early.remove(&id) {
            for e in early {
                let _ = tx.send(e);
            }
        }
        inner.live.insert(id, tx);
        Inbox { router: self.clone(), id, rx }
    }

    /// Ends session `id` if it runs here (its protocol stops at its next
    /// receive and its thread drops its secrets), drops what is held for
    /// it, and drops what arrives for it from now on.
    pub fn abort(&self, id: SessionId) {
        let mut inner = self.inner.lock().expect("router lock");
        inner.live.remove(&id);
        inner.early.remove(&id);
        inner.closed.insert(id, Instant::now());
    }

    /// Number of sessions running here (for status and tests).
    pub fn live_sessions(&self) -> usize {
        self.inner.lock().expect("router lock").live.len()
    }
}

/// Runs `protocol` as party `me` of `spec`, on its own thread, and returns
/// its output, or an error by the deadline.
pub async fn run<M, T, E, F>(enclave: &Arc<Enclave>, spec: &SessionSpec, protocol: F) -> Result<T, RequestError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
{
    run_in(enclave, spec, enclave.router.register(spec.id), protocol).await
}

/// [`run`] with an inbox opened earlier: a party that must wait before it
/// can start (for its Paillier primes) opens its inbox first, so that
/// faster peers' first messages wait in it rather than expire unheard
/// among early envelopes.
pub async fn run_in<M, T, E, F>(enclave: &Arc<Enclave>, spec: &SessionSpec, mut inbox: Inbox, protocol: F) -> Result<T, RequestError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnOnce(Party<M>) -> Result<T, E> + Send + 'static,
{
    let me = enclave.keys.node_id().clone();
    spec.index_of(&me)
        .ok_or_else(|| RequestError::new(ErrorCode::Internal, "this node is not a party of the session"))?;
    let (in_tx, in_rx) = fmpsc::unbounded::<Result<Incoming<M>, Infallible>>();
    let (out_tx, mut out_rx) = fmpsc::unbounded::<Outgoing<M>>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("session-{}", spec.id))
        .spawn(move || {
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
                send_outgoing(enclave, spec, &me, seq, out)?;
            }
            result = &mut done_rx => {
                // The protocol has returned, so everything it will ever send
                // is queued already.
                while let Ok(out) = out_rx.try_recv() {
                    seq += 1;
                    send_outgoing(enclave, spec, &me, seq, out)?;
                }
                return match result {
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(reason)) => Err(RequestError::new(ErrorCode::ProtocolAbort, reason)),
                    Err(_) => Err(RequestError::new(ErrorCode::Internal, "session thread panicked")),
                };
            }
            opened = inbox.rx.recv() => {
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
                    Err(error) => {
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
        let mut behind: Vec<NodeId> =
            self.theirs.iter().filter(|(_, r)| r.is_none_or(|r| r < self.mine)).map(|(p, _)| p.clone()).collect();
        if behind.is_empty() {
            behind = self.theirs.keys().cloned().collect();
        }
        behind.sort();
        behind
    }
}

fn send_outgoing<M: ProtocolMessage + Serialize>(
    enclave: &Enclave,
    spec: &SessionSpec,
    me: &NodeId,
    seq: u64,
    out: Outgoing<M>,
) -> Result<(), RequestError> {
    let payload = zeroize::Zeroizing::new(
        serde_json::to_vec(&out.msg).map_err(|e| RequestError::new(ErrorCode::Internal, format!("encode message: {e}")))?,
    );
    let recipients: Vec<&NodeId> = match out.recipient {
        MessageDestination::AllParties => spec.parties.iter().filter(|p| *p != me).collect(),
        MessageDestination::OneParty(i) => vec![spec
            .parties
            .get(usize::from(i))
            .ok_or_else(|| RequestError::new(ErrorCode::Internal, format!("message to unknown party {i}")))?],
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

fn accept_incoming<M: ProtocolMessage + DeserializeOwned>(
    enclave: &Enclave,
    spec: &SessionSpec,
    replay: &mut ReplayGuard,
    opened: &Opened,
) -> Result<(u16, M), RequestError> {
    let h = &opened.header;
    let bad = |reason: String| RequestError::new(ErrorCode::BadEnvelope, reason);
    let sender = spec
        .index_of(&h.sender)
        .filter(|_| h.sender != *enclave.keys.node_id())
        .ok_or_else(|| bad(format!("{} is not a party of session {}", h.sender, spec.id)))?;
    replay.accept(&h.sender, h.seq).map_err(|e| bad(e.to_string()))?;
    let msg: M = serde_json::from_slice(&opened.message).map_err(|e| bad(format!("undecodable message from {}: {e}", h.sender)))?;
    if msg.round() != h.round {
        return Err(bad(format!("message from {} claims round {} but is of round {}", h.sender, h.round, msg.round())));
    }
    Ok((sender, msg))
}
