//! The host<->enclave link: length-prefixed JSON frames over a Unix socket
//! (dev, hsm) or vsock (nitro). The enclave is the server; the host connects.
//!
//! Frame: 4-byte big-endian length, then that many bytes of JSON. Both sides
//! refuse a frame longer than [`MAX_FRAME_BYTES`] before reading it.

use crate::codec::{self, DecodeError};
use crate::envelope::Envelope;
use crate::request::SignedRequest;
use crate::result::Outcome;
use crate::{CommitteeId, ErrorCode, NodeId, PoolId, RequestError, RequestId, Scheme, SessionId, WalletId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Where the link listens, from configuration: `unix:/path/to.sock` or
/// `vsock:CID:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAddr {
    /// A Unix stream socket (dev and hsm modes, and tests).
    Unix(PathBuf),
    /// An AF_VSOCK address (nitro mode).
    Vsock {
        /// Context id of the enclave.
        cid: u32,
        /// Port.
        port: u32,
    },
}

/// A link address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid link address {0:?}: expected unix:/path or vsock:CID:PORT")]
pub struct LinkAddrError(String);

impl std::str::FromStr for LinkAddr {
    type Err = LinkAddrError;
    fn from_str(s: &str) -> Result<Self, LinkAddrError> {
        let err = || LinkAddrError(s.to_string());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err());
            }
            Ok(LinkAddr::Unix(PathBuf::from(path)))
        } else if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest.split_once(':').ok_or_else(err)?;
            Ok(LinkAddr::Vsock { cid: cid.parse().map_err(|_| err())?, port: port.parse().map_err(|_| err())? })
        } else {
            Err(err())
        }
    }
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            LinkAddr::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for LinkAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for LinkAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Encodes one frame: length prefix and JSON.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("link frames serialise infallibly");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the length prefix and checks it against [`MAX_FRAME_BYTES`] before
/// anything is allocated.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge { what: "link frame", len, limit: MAX_FRAME_BYTES });
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode_frame<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    codec::decode_json("link frame", body, MAX_FRAME_BYTES)
}

/// Reads one frame from an async stream. The outer error is the stream's
/// (closed, or an oversized prefix after which it cannot be resynchronised:
/// the caller drops the connection); the inner one is a bad frame body, after
/// which the stream is still in step.
#[cfg(feature = "tokio")]
pub async fn read_frame<T, R>(r: &mut R) -> std::io::Result<Result<T, DecodeError>>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let len = frame_len(prefix).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(decode_frame(&body))
}

/// How a node keeps its shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local key file. Insecure; for experiments only.
    Dev,
    /// Sealed by a PKCS#11 token.
    Hsm,
    /// Sealed by a KMS key released to an attested Nitro Enclave.
    Nitro,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Dev => "dev",
            Mode::Hsm => "hsm",
            Mode::Nitro => "nitro",
        })
    }
}

/// A node's public identity, as its enclave reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node id.
    pub node_id: NodeId,
    /// How it keeps shares.
    pub mode: Mode,
    /// Ed25519 key that signs its broadcasts.
    #[serde(with = "codec::hex_array")]
    pub sign_key: [u8; 32],
    /// X25519 key that peers encrypt to.
    #[serde(with = "codec::hex_array")]
    pub kx_key: [u8; 32],
}

impl NodeIdentity {
    /// What an attestation document's `user_data` carries to bind this
    /// identity to the enclave that produced it: a label, the node id and
    /// both public keys. A peer admits the node only if the document binds
    /// exactly the keys it will use with it.
    pub fn attestation_binding(&self) -> Vec<u8> {
        let id = self.node_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(ATTESTATION_LABEL.len() + 1 + id.len() + 64);
        out.extend_from_slice(ATTESTATION_LABEL);
        // Node ids are at most 64 bytes, so one length byte delimits them.
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.sign_key);
        out.extend_from_slice(&self.kx_key);
        out
    }
}

const ATTESTATION_LABEL: &[u8] = b"conclave/attestation/v1";

/// Where a sealed blob lives in the host's store. Each slot holds numbered
/// versions; a version, once written, is never overwritten.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "slot", rename_all = "snake_case")]
pub enum BlobSlot {
    /// A wallet's key share.
    Share {
        /// The wallet.
        wallet: WalletId,
        /// Its scheme.
        scheme: Scheme,
    },
    /// ECDSA auxiliary info of a committee.
    AuxInfo {
        /// The committee.
        committee: CommitteeId,
    },
    /// A signer's presignatures of one pool; a blob's version is the
    /// presignature's number, and the slot's floor the lowest still usable.
    Presignatures {
        /// The wallet.
        wallet: WalletId,
        /// The pool (key version and signer set).
        pool: PoolId,
    },
    /// The enclave's pool of pre-generated Paillier primes.
    Primes,
    /// The policy this signer enforces, as the admins signed it (not
    /// sealed: the signer checks the admins' signatures again when it
    /// loads it); version = the policy's version.
    Policy,
    /// This signer's audit trail: one signed entry per version, numbered
    /// as the entries are (not sealed: signed, and public).
    Audit,
    /// What this signer counted for a wallet's policy: recent signatures
    /// by rule (velocity) and the requests it let through.
    Ledger {
        /// The wallet.
        wallet: WalletId,
    },
    /// Nitro mode: the node's seal key as KMS wrapped it (`CiphertextBlob`),
    /// which only KMS opens, and only for this enclave image.
    SealKey,
    /// Nitro mode: the node's identity keys, sealed (an enclave has no disk).
    Identity,
}

impl BlobSlot {
    /// Whether blobs at `path` are signed by their signer rather than
    /// sealed (the policy, the audit trail): nothing to reseal, and
    /// checked by their signatures.
    pub fn is_signed_path(path: &str) -> bool {
        path == BlobSlot::Policy.path() || path == BlobSlot::Audit.path()
    }

    /// A relative path for the slot, safe by construction (ids exclude `/`
    /// and `.`).
    pub fn path(&self) -> String {
        match self {
            BlobSlot::Share { wallet, scheme } => format!("share/{wallet}/{scheme}"),
            BlobSlot::AuxInfo { committee } => format!("aux/{committee}"),
            BlobSlot::Presignatures { wallet, pool } => format!("presig/{wallet}/{pool}"),
            BlobSlot::Primes => "primes".to_string(),
            BlobSlot::Policy => "policy".to_string(),
            BlobSlot::Audit => "audit".to_string(),
            BlobSlot::Ledger { wallet } => format!("ledger/{wallet}"),
            BlobSlot::SealKey => "custody/seal-key".to_string(),
            BlobSlot::Identity => "custody/identity".to_string(),
        }
    }
}

/// A blob and the slot it is from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotBlob {
    /// The slot.
    pub slot: BlobSlot,
    /// The blob.
    pub blob: StoredBlob,
}

/// A sealed blob and its version. The host cannot open `sealed`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// Version within its slot.
    pub version: u32,
    /// Opaque sealed bytes.
    #[serde(with = "codec::b64")]
    pub sealed: Vec<u8>,
}

impl fmt::Debug for StoredBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredBlob(v{}, {} sealed bytes)", self.version, self.sealed.len())
    }
}

/// What the coordinator decided for one attempt at a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPlan {
    /// The request.
    pub request_id: RequestId,
    /// Attempt number, from 1; part of the session id.
    pub attempt: u32,
    /// Who takes part: the whole committee for keygen, exactly `threshold`
    /// members for signing.
    pub participants: Vec<NodeId>,
    /// Unix milliseconds by which the request must end, whatever the
    /// attempt: a retry keeps the first attempt's deadline.
    pub deadline_ms: u64,
    /// Unix milliseconds when the request was first planned; a retry keeps
    /// it. Heavy sessions take turns at every signer in this order, first
    /// planned first (0 in a plan stored by an older release: first).
    #[serde(default)]
    pub planned_ms: u64,
    /// A party that hears nothing from a peer it waits for during this long
    /// gives up on the attempt and blames that peer (`peer_unavailable`).
    pub round_timeout_ms: u64,
    /// What the attempt does: the request itself, or first a step it needs.
    #[serde(default, skip_serializing_if = "Purpose::is_request")]
    pub purpose: Purpose,
    /// Approvals gathered for the request (its policy rule may need them);
    /// each signer checks each one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<crate::policy::Approval>,
}

/// One presignature to make: sent by the host of the pool's first signer
/// to every signer of the set (through their hosts). Nothing in it is
/// trusted: each signer checks the wallet, the set, and that `seq` is in
/// its pool's window (at most the pool size above its floor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignPlan {
    /// Names this run (routes its envelopes); unique per try.
    pub request_id: RequestId,
    /// The wallet.
    pub wallet: WalletId,
    /// Its scheme: an ECDSA presignature or FROST nonces (EdDSA).
    pub scheme: Scheme,
    /// Its key version.
    pub version: u32,
    /// The signer set, in committee order.
    pub signers: Vec<NodeId>,
    /// The presignature's number in the pool.
    pub seq: u32,
    /// The derivation path it is made for (ECDSA; empty: the root key). A
    /// signer makes one only for a path declared for the wallet in its own
    /// configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<u32>,
    /// Unix milliseconds by which it must be made.
    pub deadline_ms: u64,
    /// As [`SessionPlan::planned_ms`].
    #[serde(default)]
    pub planned_ms: u64,
    /// As [`SessionPlan::round_timeout_ms`].
    pub round_timeout_ms: u64,
}

/// The numbers a signer makes for a pool: from its floor (the lowest
/// still usable) up to, not including, `end` (the pool's size above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignWindow {
    /// The lowest number still usable.
    pub floor: u32,
    /// One past the highest number it makes now.
    pub end: u32,
}

impl PresignWindow {
    /// Whether `seq` is in the window.
    pub fn holds(&self, seq: u32) -> bool {
        (self.floor..self.end).contains(&seq)
    }
}

/// What an attempt does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Purpose {
    /// What the request asks.
    #[default]
    Request,
    /// A sign request's ECDSA committee makes its aux info again (every
    /// member takes part; the CGGMP21 release's aux info does not serve
    /// CGGMP24); the attempt after it signs with `then`.
    RenewAux {
        /// The signers of the attempt that follows.
        then: Vec<NodeId>,
    },
    /// A sign request on the root key (ECDSA: of a `message`), signed in
    /// one round with presignature (EdDSA: nonces) `seq` of the signers'
    /// pool ([`crate::PoolId`]); a signer that cannot use it answers
    /// `presignature_unavailable` before anything leaves, and the next
    /// attempt runs the full protocol.
    Presigned {
        /// The presignature's number in its pool.
        seq: u32,
    },
}

impl Purpose {
    /// Whether this is the request itself (the default, not serialised).
    pub fn is_request(&self) -> bool {
        *self == Purpose::Request
    }
}

/// Frames from the host to the enclave.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToEnclave {
    /// First frame on a connection.
    Hello {
        /// Link version.
        v: u16,
    },
    /// Make one presignature of a pool (its signer checks what it may make).
    Presign {
        /// Which pool, which number, with whom, until when.
        plan: PresignPlan,
    },
    /// Run a session for a request.
    Start {
        /// The authorised request, verified by the enclave.
        request: SignedRequest,
        /// Who takes part and until when.
        plan: SessionPlan,
        /// Blobs the attempt will load, sent with it so that the signer
        /// need not ask (a sign request's share, and its presignature):
        /// checked as every blob it loads is. Hosts of earlier releases
        /// send none.
        #[serde(default)]
        blobs: Vec<SlotBlob>,
    },
    /// Can this node's signer open this blob? Asked by `conclave-host
    /// restore` for every blob of a backup before it writes any. The
    /// plaintext never leaves the signer; the answer is [`FromEnclave::Checked`].
    Check {
        /// Matches the answer.
        call: u64,
        /// The slot path in the store.
        path: String,
        /// The blob.
        blob: StoredBlob,
    },
    /// An attestation document about this enclave, answering `nonce` (asked
    /// through the host by a peer or a compliance client); the answer is
    /// [`FromEnclave::Attested`].
    Attest {
        /// Matches the answer.
        call: u64,
        /// The asker's challenge.
        #[serde(with = "codec::hex_bytes")]
        nonce: Vec<u8>,
    },
    /// A question from a client about this signer's governance, or a
    /// policy to take; the answer is [`FromEnclave::Governed`].
    Govern {
        /// Matches the answer.
        call: u64,
        /// The question.
        query: crate::govern::GovernQuery,
    },
    /// Drop the session of this attempt (and refuse to start it later): it
    /// was superseded by a later attempt, or the request ended.
    Abort {
        /// The request.
        request_id: RequestId,
        /// The attempt to drop.
        attempt: u32,
        /// The request was answered (another signer completed it): a
        /// session whose share already left runs on to its end, so that
        /// its signer records the signature too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        answered: bool,
    },
    /// A message from a peer.
    Deliver {
        /// The envelope.
        envelope: Envelope,
    },
    /// Answer to [`FromEnclave::AskAttestation`]: what the peer answered.
    PeerAttested {
        /// The call this answers.
        call: u64,
        /// The peer's document, or why there is none.
        result: Result<crate::attestation::Document, crate::RequestError>,
    },
    /// Answer to [`FromEnclave::Load`]: the blob asked for, if the slot has it.
    Loaded {
        /// The call this answers.
        call: u64,
        /// The blob, if the slot has any.
        blob: Option<StoredBlob>,
    },
    /// Answer to [`FromEnclave::Store`] and [`FromEnclave::ReplaceAll`].
    Stored {
        /// The call this answers.
        call: u64,
        /// Why the blob was not stored, if it was not.
        error: Option<StoreError>,
    },
    /// Answer to [`FromEnclave::Credentials`].
    Credentials {
        /// The call this answers.
        call: u64,
        /// The instance role's temporary credentials, or why there are none.
        result: Result<AwsCredentials, String>,
    },
}

/// Temporary AWS credentials (the instance role's, from the instance
/// metadata service) that a nitro enclave signs its KMS calls with. The host
/// holds them anyway; KMS releases data keys only to an attested enclave.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `Token`.
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Why the host did not store a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StoreError {
    /// That version of the slot exists already; nothing was overwritten.
    #[error("version exists already")]
    Exists,
    /// The disk write failed.
    #[error("write failed: {detail}")]
    Io {
        /// What the OS said.
        detail: String,
    },
}

/// Why a signer dropped an authenticated envelope without acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Seen before in its session (a replay), or older than one seen.
    Replayed,
    /// For a session that ended here: late, or replayed after the end.
    Finished,
    /// Over the bounds on what is held for a session not started here (per
    /// session, per peer, in all), or on a running session's queue.
    NoRoom,
}

impl DropReason {
    /// Every reason (metrics start each at zero).
    pub const ALL: [DropReason; 3] = [DropReason::Replayed, DropReason::Finished, DropReason::NoRoom];

    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Replayed => "replayed",
            DropReason::Finished => "finished",
            DropReason::NoRoom => "no_room",
        }
    }
}

/// Frames from the enclave to the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromEnclave {
    /// First frame on a connection.
    Hello {
        /// Link version.
        v: u16,
        /// Who this enclave is.
        identity: NodeIdentity,
    },
    /// Deliver this to `envelope.header.recipient`.
    Send {
        /// The envelope.
        envelope: Envelope,
    },
    /// Fetch a slot's blob: the highest version, or exactly `version`.
    Load {
        /// Correlates the answer.
        call: u64,
        /// Which slot.
        slot: BlobSlot,
        /// That version only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    /// Persist a sealed blob (never overwriting a version, unless `replace`).
    Store {
        /// Correlates the answer.
        call: u64,
        /// Which slot.
        slot: BlobSlot,
        /// The blob.
        blob: StoredBlob,
        /// Replace the version if it exists: only ever for a version the
        /// signer never committed to (a reshare cut before every new member
        /// acknowledged, then retried).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replace: bool,
    },
    /// Persist several versions of one slot, each replacing the version if
    /// it exists (as [`FromEnclave::Store`] with `replace`), answered once
    /// all are stored: a batch of audit entries costs the host one sync of
    /// the slot's directory, not one per entry.
    ReplaceAll {
        /// Correlates the answer.
        call: u64,
        /// Which slot.
        slot: BlobSlot,
        /// The blobs, each its own version.
        blobs: Vec<StoredBlob>,
    },
    /// A session ended.
    Finished {
        /// The request.
        request_id: RequestId,
        /// The attempt.
        attempt: u32,
        /// The session.
        session: SessionId,
        /// What came of it.
        outcome: Outcome,
    },
    /// A [`ToEnclave::Presign`] ended: every signer of the set stored the
    /// presignature (`error` none), or why not.
    Presigned {
        /// The plan's run.
        request_id: RequestId,
        /// The pool.
        pool: PoolId,
        /// The presignature's number.
        seq: u32,
        /// Why it was not made.
        error: Option<RequestError>,
        /// This signer's window for the pool, when `seq` lies outside it:
        /// a keeper whose counts a registry restore left behind the
        /// signers' floors (or ahead of a nitro signer's, which starts
        /// again from 1) moves to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<PresignWindow>,
    },
    /// Answer to [`ToEnclave::Check`].
    Checked {
        /// The call this answers.
        call: u64,
        /// Why the blob does not open here, if it does not.
        error: Option<crate::RequestError>,
    },
    /// Ask `peer`, through the hosts, for an attestation document
    /// answering `nonce`; the answer is [`ToEnclave::PeerAttested`].
    AskAttestation {
        /// Matches the answer.
        call: u64,
        /// The peer.
        peer: NodeId,
        /// This signer's challenge.
        #[serde(with = "codec::hex_bytes")]
        nonce: Vec<u8>,
    },
    /// This signer admitted `peer`, whose document showed `pcr0`.
    Admitted {
        /// The peer.
        peer: NodeId,
        /// Its image measurement as verified.
        #[serde(with = "codec::hex_bytes")]
        pcr0: Vec<u8>,
    },
    /// Answer to [`ToEnclave::Attest`].
    Attested {
        /// The call this answers.
        call: u64,
        /// The document, or why there is none (hsm mode has no attestation).
        result: Result<crate::attestation::Document, crate::RequestError>,
    },
    /// Answer to [`ToEnclave::Govern`].
    Governed {
        /// The call this answers.
        call: u64,
        /// What the signer said, signed, or why it said nothing.
        result: Result<crate::govern::Said, crate::RequestError>,
    },
    /// Nitro mode: the instance role's credentials, for the enclave's own
    /// TLS connection to KMS; the answer is [`ToEnclave::Credentials`].
    Credentials {
        /// Matches the answer.
        call: u64,
    },
    /// Whether a set of Paillier primes is ready, so that a new committee's
    /// first ECDSA keygen does not wait for prime generation. Sent on
    /// attach and whenever it changes.
    Primes {
        /// A set is ready.
        ready: bool,
    },
    /// A heavy session waited `ms` for its turn at the signer's CPU
    /// (counted by the host in `conclave_heavy_sessions_waited_total` and
    /// `conclave_heavy_sessions_wait_ms_total`).
    Waited {
        /// How long.
        ms: u64,
    },
    /// An authenticated envelope from `peer` was dropped unread (counted
    /// by the host in `conclave_envelopes_dropped_total{reason}`).
    Dropped {
        /// Why.
        reason: DropReason,
        /// Who sent it.
        peer: NodeId,
    },
    /// Something from outside was refused (for the host's logs and metrics).
    Rejected {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for people.
        reason: String,
        /// The peer that sent it, if it came from a peer.
        peer: Option<NodeId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_parse_both_kinds() {
        assert_eq!("unix:/tmp/a.sock".parse::<LinkAddr>().unwrap(), LinkAddr::Unix("/tmp/a.sock".into()));
        assert_eq!("vsock:16:5000".parse::<LinkAddr>().unwrap(), LinkAddr::Vsock { cid: 16, port: 5000 });
        for bad in ["", "unix:", "vsock:16", "vsock:x:1", "tcp:1.2.3.4:5"] {
            assert!(bad.parse::<LinkAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        assert!(frame_len((MAX_FRAME_BYTES as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(frame_len(5u32.to_be_bytes()).unwrap(), 5);
    }

    #[test]
    fn frames_round_trip() {
        let f = encode_frame(&ToEnclave::Hello { v: 1 });
        let len = frame_len(f[..4].try_into().unwrap()).unwrap();
        let back: ToEnclave = decode_frame(&f[4..4 + len]).unwrap();
        assert!(matches!(back, ToEnclave::Hello { v: 1 }));
    }
}
