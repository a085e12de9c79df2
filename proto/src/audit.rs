//! Each signer's audit log: every decision it makes (a request accepted or
//! denied by the policy, approvals counted, a signature released, a key made
//! or reshared, a policy change taken or refused), as entries that the
//! signer signs with its identity key and chains by hash.
//!
//! The log is stored through the host, which can drop, truncate, reorder,
//! alter or replay entries but cannot sign one. So a compliance team that
//! exports the logs ([`AuditExport`]) checks them offline ([`check_log`])
//! against the nodes' pinned keys and learns the first entry that is not
//! the signer's own, in its order. A signed head ([`AuditHead`]), asked for
//! with a fresh nonce, says how far the log reaches, so that a log cut short
//! is told from a log that ends.
//!
//! Entries and heads travel as the JSON strings that were signed, like
//! statements ([`crate::statement`]): a checker in any language verifies
//! the signature over the bytes it holds and parses them afterwards, and
//! the hash chain links those same bytes, so no canonical JSON is needed.
//!
//! This module holds no signature scheme: the checker takes the
//! verification as a callback, and the signer signs [`SignedAuditEntry::signing_bytes`].

use crate::codec::{self, DecodeError};
use crate::run_key::NodeSignature;
use crate::{ErrorCode, NodeId, RequestId, Scheme, WalletId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;

/// Domain separation for a signer's signature on an audit entry.
pub const AUDIT_SIGNING_CONTEXT: &[u8] = b"conclave/audit/v1\n";
/// Domain separation for a signer's signature on its log's head, so that a
/// head can never be passed off as an entry or the other way round.
pub const AUDIT_HEAD_SIGNING_CONTEXT: &[u8] = b"conclave/audit-head/v1\n";
/// Largest entry (or head) string a checker reads. An entry is a few hundred
/// bytes; the bound is for the free-text fields (rule and group names).
pub const MAX_ENTRY_BYTES: usize = 8 * 1024;
/// Largest export file a checker reads.
pub const MAX_EXPORT_BYTES: usize = 256 * 1024 * 1024;
/// Most entries of one node in an export file (about as many typical
/// entries as [`MAX_EXPORT_BYTES`] holds).
pub const MAX_LOG_ENTRIES: usize = 1 << 20;

/// One decision of one signer, as it signs it: the `n`th of its log, linked
/// to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The signer whose log this is: an entry is never valid in another
    /// node's log, even when both are exported together.
    pub node: NodeId,
    /// Position in the log, from 1 without gaps, so that a dropped or
    /// reordered entry shows.
    pub seq: NonZeroU64,
    /// [`entry_hash`] of the entry with `seq - 1`; zeros for seq 1. Links
    /// the signed bytes, so an older entry signed validly cannot stand in
    /// for another.
    #[serde(with = "codec::hex_array")]
    pub prev: [u8; 32],
    /// When the signer decided (Unix milliseconds, the enclave's clock:
    /// not checked for order, as clocks step).
    pub at_ms: u64,
    /// What it decided (tagged by `kind`).
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// What a signer decided. A closed set: a new kind of decision is a new
/// variant, which every checker then reads (or refuses, if older).
///
/// `request` is the SHA-256 of the request body string the initiator signed
/// ([`crate::request::SignedRequest::body`]), as in
/// [`crate::statement::Statement::request`], so that entries, results and
/// the request itself can be matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditEvent {
    /// A request passed the policy.
    Accepted {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The wallet it concerns.
        wallet: WalletId,
        /// Which of the wallet's keys.
        scheme: Scheme,
        /// The initiator's Ed25519 public key.
        #[serde(with = "codec::hex_array")]
        initiator: [u8; 32],
        /// The policy rule that allowed it; none when no policy is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// The policy version that decided.
        policy_version: u64,
    },
    /// A request was refused (by the policy or a check before it).
    Denied {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The wallet it concerns.
        wallet: WalletId,
        /// Which of the wallet's keys.
        scheme: Scheme,
        /// The initiator's Ed25519 public key.
        #[serde(with = "codec::hex_array")]
        initiator: [u8; 32],
        /// The policy rule that refused it, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// The error the initiator was given.
        code: ErrorCode,
        /// The policy version that decided.
        policy_version: u64,
    },
    /// The approvals a rule asks for were counted for a request.
    ApprovalsCounted {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The rule that asks for approvals.
        rule: String,
        /// The approver group the rule names.
        group: String,
        /// The approvers' Ed25519 keys whose approvals were counted (only
        /// those: a key that approved but was not counted is not here).
        #[serde(with = "hex_keys")]
        approvers: Vec<[u8; 32]>,
        /// How many the rule requires.
        required: u16,
    },
    /// The signer released its part of a signature for a request.
    Signed {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The wallet whose key signed.
        wallet: WalletId,
        /// Which of its keys.
        scheme: Scheme,
        /// The key version.
        version: u32,
        /// The non-hardened derivation path; empty for the root key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<u32>,
        /// The signature, as the signer released it.
        #[serde(with = "codec::hex_bytes")]
        signature: Vec<u8>,
    },
    /// The signer took part in making a new key and stored its share.
    KeyCreated {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The new wallet.
        wallet: WalletId,
        /// Which of its keys.
        scheme: Scheme,
        /// The key version (1 for a new key).
        version: u32,
        /// The key's public key.
        #[serde(with = "codec::hex_bytes")]
        public_key: Vec<u8>,
    },
    /// The signer took part in resharing a key and stored its new share.
    Reshared {
        /// SHA-256 of the signed request body.
        #[serde(with = "codec::hex_array")]
        request: [u8; 32],
        /// The request's id.
        request_id: RequestId,
        /// The wallet.
        wallet: WalletId,
        /// Which of its keys.
        scheme: Scheme,
        /// The new key version.
        version: u32,
    },
    /// The signer took a new policy.
    PolicyChanged {
        /// The version it replaced (0 if none).
        from_version: u64,
        /// The version it now enforces.
        to_version: u64,
        /// SHA-256 of the policy document string, so the document can be
        /// matched to the entry.
        #[serde(with = "codec::hex_array")]
        digest: [u8; 32],
        /// The admin keys whose signatures on it were counted.
        #[serde(with = "hex_keys")]
        admins: Vec<[u8; 32]>,
    },
    /// The signer refused a policy it was given, and kept its own.
    PolicyRefused {
        /// The version the refused policy claims.
        version: u64,
        /// SHA-256 of the refused policy document string.
        #[serde(with = "codec::hex_array")]
        digest: [u8; 32],
        /// A fixed short reason (e.g. "too few admin signatures"), never
        /// text from the document.
        reason: String,
    },
    /// The signer found its trail cut short by its host (entries after
    /// `after_seq` up to `lost_through`, which it had written, were gone:
    /// a disk restored from an older backup, or a host that cut them) and
    /// went on after it. The entries are lost; the checker names the gap.
    Resumed {
        /// The last entry the host still served (0: none).
        after_seq: u64,
        /// The last entry the signer had written.
        lost_through: u64,
    },
}

/// An entry as the host stores it and an export carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAuditEntry {
    /// The [`AuditEntry`] as a JSON string, exactly as signed and hashed.
    pub entry: String,
    /// The signer's Ed25519 signature, by its identity key or a run key,
    /// over [`SignedAuditEntry::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
    /// The run key that made `signature`, certified by the identity key
    /// (hsm signers); absent: the identity key made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_key: Option<crate::run_key::RunKey>,
}

impl SignedAuditEntry {
    /// The bytes the signer signs: a fixed context string followed by the
    /// entry string.
    pub fn signing_bytes(entry: &str) -> Vec<u8> {
        [AUDIT_SIGNING_CONTEXT, entry.as_bytes()].concat()
    }

    /// Whether it is `node`'s, signed by its identity key or by a run key
    /// that key certified, valid when the entry says it was written (see
    /// [`NodeSignature::holds`] for `verify`).
    pub fn holds(&self, node: &NodeId, verify: impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool) -> bool {
        let at_ms = match self.run_key {
            Some(_) => self.parse().map_or(u64::MAX, |e| e.at_ms),
            None => 0,
        };
        NodeSignature { signature: self.signature, run_key: self.run_key }.holds(node, &Self::signing_bytes(&self.entry), at_ms, verify)
    }

    /// Parses the entry: size, shape, version. The signature is *not*
    /// checked here; [`check_log`] checks it first.
    pub fn parse(&self) -> Result<AuditEntry, DecodeError> {
        let entry: AuditEntry = codec::decode_json("audit entry", self.entry.as_bytes(), MAX_ENTRY_BYTES)?;
        codec::check_version("audit entry", entry.v)?;
        Ok(entry)
    }
}

/// What the next entry's `prev` is: SHA-256 of the entry string's bytes
/// (the signed string, not a re-encoding).
pub fn entry_hash(entry: &str) -> [u8; 32] {
    Sha256::digest(entry.as_bytes()).into()
}

/// The entry after `last` (its seq and [`entry_hash`]; `None` for a node's
/// first entry), and the JSON string to sign and store. The signer keeps
/// `(entry.seq, entry_hash(&json))` as the next `last` once the entry is
/// stored.
pub fn next_entry(node: &NodeId, last: Option<(NonZeroU64, [u8; 32])>, at_ms: u64, event: AuditEvent) -> (AuditEntry, String) {
    let (seq, prev) = match last {
        None => (NonZeroU64::MIN, [0; 32]),
        Some((seq, hash)) => (seq.checked_add(1).expect("an audit log of 2^64 entries"), hash),
    };
    let entry = AuditEntry { v: crate::PROTOCOL_VERSION, node: node.clone(), seq, prev, at_ms, event };
    let json = serde_json::to_string(&entry).expect("audit entries serialise");
    (entry, json)
}

/// How far a signer's log reaches, signed when asked with a fresh nonce: a
/// log that does not reach its head was cut short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHead {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The signer whose log this is.
    pub node: NodeId,
    /// The seq of its last entry; 0 if it has none.
    pub seq: u64,
    /// [`entry_hash`] of that entry; zeros if it has none.
    #[serde(with = "codec::hex_array")]
    pub hash: [u8; 32],
    /// The asker's fresh nonce, so that a host cannot answer with an old
    /// head (from before the entries it drops). Checked by the asker when
    /// it gets the head; an offline checker cannot tell how fresh it was.
    #[serde(with = "codec::hex_array")]
    pub nonce: [u8; 32],
    /// When the signer made it (Unix milliseconds).
    pub at_ms: u64,
}

/// The head of a node's log, for the asker that gave `nonce`, and the JSON
/// string to sign. `last` is as for [`next_entry`].
pub fn head_for(node: &NodeId, last: Option<(NonZeroU64, [u8; 32])>, nonce: [u8; 32], at_ms: u64) -> (AuditHead, String) {
    let (seq, hash) = last.map_or((0, [0; 32]), |(seq, hash)| (seq.get(), hash));
    let head = AuditHead { v: crate::PROTOCOL_VERSION, node: node.clone(), seq, hash, nonce, at_ms };
    let json = serde_json::to_string(&head).expect("audit heads serialise");
    (head, json)
}

/// A head as a signer returns it and an export carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAuditHead {
    /// The [`AuditHead`] as a JSON string, exactly as signed.
    pub head: String,
    /// The signer's Ed25519 signature, by its identity key or a run key,
    /// over [`SignedAuditHead::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
    /// The run key that made `signature`, certified by the identity key
    /// (hsm signers); absent: the identity key made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_key: Option<crate::run_key::RunKey>,
}

impl SignedAuditHead {
    /// The bytes the signer signs: a fixed context string (not the
    /// entries') followed by the head string.
    pub fn signing_bytes(head: &str) -> Vec<u8> {
        [AUDIT_HEAD_SIGNING_CONTEXT, head.as_bytes()].concat()
    }

    /// Whether it is `node`'s, as [`SignedAuditEntry::holds`] for an entry.
    pub fn holds(&self, node: &NodeId, verify: impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool) -> bool {
        let at_ms = match self.run_key {
            Some(_) => self.parse().map_or(u64::MAX, |h| h.at_ms),
            None => 0,
        };
        NodeSignature { signature: self.signature, run_key: self.run_key }.holds(node, &Self::signing_bytes(&self.head), at_ms, verify)
    }

    /// Parses the head: size, shape, version. The signature is *not*
    /// checked here.
    pub fn parse(&self) -> Result<AuditHead, DecodeError> {
        let head: AuditHead = codec::decode_json("audit head", self.head.as_bytes(), MAX_ENTRY_BYTES)?;
        codec::check_version("audit head", head.v)?;
        Ok(head)
    }
}

/// The file a compliance team keeps: every node's log as exported, each
/// checked on its own against that node's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExport {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// When it was exported (Unix milliseconds; the exporter's word only).
    pub exported_at_ms: u64,
    /// One log per node.
    pub nodes: Vec<NodeLog>,
}

impl AuditExport {
    /// Serialises the export.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("audit exports serialise")
    }

    /// Reads an export file: size, shape, version, entries per node. The
    /// entries themselves are read by [`check_log`].
    pub fn decode(bytes: &[u8]) -> Result<AuditExport, DecodeError> {
        let export: AuditExport = codec::decode_json("audit export", bytes, MAX_EXPORT_BYTES)?;
        codec::check_version("audit export", export.v)?;
        if let Some(log) = export.nodes.iter().find(|log| log.entries.len() > MAX_LOG_ENTRIES) {
            return Err(DecodeError::TooLarge { what: "audit log (entries)", len: log.entries.len(), limit: MAX_LOG_ENTRIES });
        }
        Ok(export)
    }
}

/// One node's log in an export: its entries in log order, and the head it
/// signed when the log was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLog {
    /// The node, as the exporter labels the log (every entry says it again,
    /// signed).
    pub node: NodeId,
    /// Its entries from seq 1.
    pub entries: Vec<SignedAuditEntry>,
    /// Its signed head, if the exporter got one. Without it, a log cut
    /// short cannot be told from a log that ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<SignedAuditHead>,
}

/// What a log that passed holds, for the compliance report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// Whose log.
    pub node: NodeId,
    /// How many entries (a log that passes has seqs 1 to `last_seq`, so
    /// this equals `last_seq`).
    pub entries: u64,
    /// The last entry's seq; 0 if none.
    pub last_seq: u64,
    /// The seq the signed head vouches for, if the log had one: the log is
    /// known not to be cut short before it. Entries after it were written
    /// after the head was taken and are signed, but a head does not cover
    /// them.
    pub head_seq: Option<u64>,
    /// How many `signed` entries (signatures released).
    pub signatures: u64,
    /// How many `denied` entries.
    pub denials: u64,
    /// Ranges of entries (first, last) the signer found gone and declared
    /// lost (a [`AuditEvent::Resumed`] entry): the trail checks around
    /// them, but they are missing.
    pub lost: Vec<(u64, u64)>,
}

/// The first thing wrong with a node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFault {
    /// Whose log.
    pub node: NodeId,
    /// Position of the bad entry in the file, from 0. For a fault of the
    /// head, the number of entries (the head comes after them); for a fault
    /// of the whole log, 0.
    pub index: usize,
    /// The seq the bad entry or head claims, when it can be read (not
    /// signed by the node when the fault is a bad signature).
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: FaultKind,
}

impl fmt::Display for AuditFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // People count entries from 1.
        match (self.kind.scope(), self.seq) {
            (Scope::Entry, Some(seq)) => write!(f, "entry {} (seq {seq}) of {}: {}", self.index + 1, self.node, self.kind),
            (Scope::Entry, None) => write!(f, "entry {} of {}: {}", self.index + 1, self.node, self.kind),
            (Scope::Head, Some(seq)) => write!(f, "head (seq {seq}) of {}: {}", self.node, self.kind),
            (Scope::Head, None) => write!(f, "head of {}: {}", self.node, self.kind),
            (Scope::Log, _) => write!(f, "log of {}: {}", self.node, self.kind),
        }
    }
}

impl std::error::Error for AuditFault {}

/// What is wrong with an entry, the head, or the log as a whole; each says
/// what a host could have done to cause it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultKind {
    /// The entry's signature does not verify with the node's key.
    #[error("the signature does not verify with the node's key: the entry was altered, or is not the node's")]
    BadSignature,
    /// The entry is signed but cannot be read (size, shape or version).
    #[error("the entry is signed but cannot be read: {0}")]
    Malformed(String),
    /// The entry is signed by this node's key but names another node.
    #[error("the entry names node {found}")]
    WrongNode {
        /// The node it names.
        found: NodeId,
    },
    /// A later seq than the next, which is not in the file at all.
    #[error("seq {found} where seq {expected} was due, and seq {expected} is not in the file: entries are missing")]
    Missing {
        /// The seq that was due.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A later seq than the next, which comes later in the file.
    #[error("seq {found} where seq {expected} was due, and seq {expected} comes later in the file: entries were reordered")]
    OutOfOrder {
        /// The seq that was due.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// An earlier entry again, byte for byte.
    #[error("a copy of entry {} (seq {seq}): it was replayed", .first_index + 1)]
    Replayed {
        /// Its seq.
        seq: u64,
        /// Where the file has it first.
        first_index: usize,
    },
    /// Another entry than the earlier one with the same seq, also signed by
    /// the node: the node's log forked, e.g. its state was rolled back.
    #[error("another entry with the seq of entry {} (seq {seq}), also signed by the node: its log forked (was its state rolled back?)", .first_index + 1)]
    Forked {
        /// The seq both claim.
        seq: u64,
        /// Where the file has the first.
        first_index: usize,
    },
    /// `prev` is not the hash of the entry before it (zeros for seq 1).
    #[error("it does not link to the entry before it: an entry was substituted, or the log forked")]
    BrokenLink,
    /// The head's signature does not verify with the node's key.
    #[error("the signature does not verify with the node's key: the head was altered, or is not the node's")]
    BadHeadSignature,
    /// The head is signed but cannot be read.
    #[error("the head is signed but cannot be read: {0}")]
    MalformedHead(String),
    /// The head is signed by this node's key but names another node.
    #[error("the head names node {found}")]
    HeadWrongNode {
        /// The node it names.
        found: NodeId,
    },
    /// The head vouches for entries the file does not have.
    #[error("the node's head is at seq {head_seq} but the log ends at seq {last_seq}: the log was cut short")]
    Truncated {
        /// The head's seq.
        head_seq: u64,
        /// The last seq in the file.
        last_seq: u64,
    },
    /// The head's hash is not that of the entry at its seq.
    #[error("the head's hash is not that of the entry at its seq: the log was altered, or forked")]
    HeadMismatch,
    /// The file lists this log under another node than the one checked.
    #[error("the file lists it as the log of {label}")]
    Mislabelled {
        /// The node the file names.
        label: NodeId,
    },
    /// The file lists the node more than once: which log is its own cannot
    /// be told.
    #[error("the export lists the node more than once")]
    ListedTwice,
}

/// What a fault is about, for its message.
enum Scope {
    Entry,
    Head,
    Log,
}

impl FaultKind {
    fn scope(&self) -> Scope {
        match self {
            FaultKind::BadSignature
            | FaultKind::Malformed(_)
            | FaultKind::WrongNode { .. }
            | FaultKind::Missing { .. }
            | FaultKind::OutOfOrder { .. }
            | FaultKind::Replayed { .. }
            | FaultKind::Forked { .. }
            | FaultKind::BrokenLink => Scope::Entry,
            FaultKind::BadHeadSignature
            | FaultKind::MalformedHead(_)
            | FaultKind::HeadWrongNode { .. }
            | FaultKind::Truncated { .. }
            | FaultKind::HeadMismatch => Scope::Head,
            FaultKind::Mislabelled { .. } | FaultKind::ListedTwice => Scope::Log,
        }
    }
}

/// Checks `node`'s log and stops at its first fault.
///
/// `verify(key, signing_bytes, signature)` must check an Ed25519 signature
/// by `key`, or by `node`'s pinned identity key for `None` (never a key the
/// file or the host names: the only other keys it is given are run keys
/// that pinned key certified, [`NodeSignature::holds`]).
/// In order, each entry: its signature; that it reads; that it names
/// `node`; that its seq is the next (from 1); that it links to the entry
/// before it. Then the head, if any: its signature, that it reads and names
/// `node`, and that the log reaches it with the same hash.
pub fn check_log(node: &NodeId, log: &NodeLog, verify: impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool) -> Result<LogSummary, AuditFault> {
    let fault = |index: usize, seq: Option<u64>, kind: FaultKind| AuditFault { node: node.clone(), index, seq, kind };
    if log.node != *node {
        return Err(fault(0, None, FaultKind::Mislabelled { label: log.node.clone() }));
    }
    let mut summary = LogSummary { node: node.clone(), entries: 0, last_seq: 0, head_seq: None, signatures: 0, denials: 0, lost: Vec::new() };
    let mut prev = [0u8; 32];
    // (seq, index in the file) of every entry that passed, seqs ascending.
    let mut seen: Vec<(u64, usize)> = Vec::new();
    for (index, signed) in log.entries.iter().enumerate() {
        if !signed.holds(node, &verify) {
            let claimed = signed.parse().ok().map(|e| e.seq.get());
            return Err(fault(index, claimed, FaultKind::BadSignature));
        }
        let entry = signed.parse().map_err(|e| fault(index, None, FaultKind::Malformed(e.to_string())))?;
        let seq = entry.seq.get();
        let fault = |kind| fault(index, Some(seq), kind);
        if entry.node != *node {
            return Err(fault(FaultKind::WrongNode { found: entry.node }));
        }
        let expected = summary.last_seq + 1;
        let declared = matches!(entry.event, AuditEvent::Resumed { after_seq, lost_through } if after_seq == summary.last_seq && lost_through + 1 == seq);
        if seq > expected && declared && entry.prev == prev {
            // The signer itself says these are gone: a gap, named, not a forgery.
            summary.lost.push((expected, seq - 1));
        } else if seq > expected {
            // Missing, or only moved: the next seq may come later.
            let moved = log.entries[index + 1..]
                .iter()
                .any(|later| later.holds(node, &verify) && later.parse().is_ok_and(|e| e.node == *node && e.seq.get() == expected));
            let kind = if moved { FaultKind::OutOfOrder { expected, found: seq } } else { FaultKind::Missing { expected, found: seq } };
            return Err(fault(kind));
        }
        if seq < expected {
            // Every entry before this one passed, each at a higher seq than
            // the one before (a declared gap skips some).
            let kind = match seen.binary_search_by_key(&seq, |&(s, _)| s) {
                Ok(at) => {
                    let first_index = seen[at].1;
                    if log.entries[first_index].entry == signed.entry {
                        FaultKind::Replayed { seq, first_index }
                    } else {
                        FaultKind::Forked { seq, first_index }
                    }
                }
                // A seq the signer declared lost, showing up again.
                Err(_) => FaultKind::OutOfOrder { expected, found: seq },
            };
            return Err(fault(kind));
        }
        if entry.prev != prev {
            return Err(fault(FaultKind::BrokenLink));
        }
        match entry.event {
            AuditEvent::Signed { .. } => summary.signatures += 1,
            AuditEvent::Denied { .. } => summary.denials += 1,
            _ => {}
        }
        summary.entries += 1;
        summary.last_seq = seq;
        seen.push((seq, index));
        prev = entry_hash(&signed.entry);
    }

    if let Some(signed) = &log.head {
        let index = log.entries.len();
        if !signed.holds(node, &verify) {
            return Err(fault(index, signed.parse().ok().map(|h| h.seq), FaultKind::BadHeadSignature));
        }
        let head = signed.parse().map_err(|e| fault(index, None, FaultKind::MalformedHead(e.to_string())))?;
        let fault = |kind| fault(index, Some(head.seq), kind);
        if head.node != *node {
            return Err(fault(FaultKind::HeadWrongNode { found: head.node.clone() }));
        }
        if head.seq > summary.last_seq {
            return Err(fault(FaultKind::Truncated { head_seq: head.seq, last_seq: summary.last_seq }));
        }
        let reached = match (head.seq, seen.binary_search_by_key(&head.seq, |&(s, _)| s)) {
            (0, _) => Some([0; 32]),
            (_, Ok(at)) => Some(entry_hash(&log.entries[seen[at].1].entry)),
            // A seq the signer declared lost: no head can vouch for it.
            (_, Err(_)) => None,
        };
        if reached != Some(head.hash) {
            return Err(fault(FaultKind::HeadMismatch));
        }
        summary.head_seq = Some(head.seq);
    }
    Ok(summary)
}

/// Checks every log of an export, each with its node's key:
/// `verify_for(node, key, signing_bytes, signature)` checks a signature as
/// [`check_log`]'s `verify` does for `node`, and refuses for a node that
/// has no pinned key. One result
/// per log, in the file's order. A node listed more than once fails at
/// every listing.
pub fn check_export(export: &AuditExport, verify_for: impl Fn(&NodeId, Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool) -> Vec<Result<LogSummary, AuditFault>> {
    let mut listings = BTreeMap::<&NodeId, usize>::new();
    for log in &export.nodes {
        *listings.entry(&log.node).or_default() += 1;
    }
    export
        .nodes
        .iter()
        .map(|log| {
            if listings[&log.node] > 1 {
                return Err(AuditFault { node: log.node.clone(), index: 0, seq: None, kind: FaultKind::ListedTwice });
            }
            check_log(&log.node, log, |key, bytes, signature| verify_for(&log.node, key, bytes, signature))
        })
        .collect()
}

/// `#[serde(with = "hex_keys")]` for lists of 32-byte public keys, each as
/// lower-case hex like a single key.
mod hex_keys {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    struct Key(#[serde(with = "crate::codec::hex_array")] [u8; 32]);

    pub fn serialize<S: Serializer>(keys: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Ok(Vec::<Key>::deserialize(d)?.into_iter().map(|k| k.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    /// A stand-in for a node's Ed25519 key: a signature only the holder of
    /// `key` "makes", so the tests need no curve.
    fn fake_sign(key: &str, bytes: &[u8]) -> [u8; 64] {
        let a: [u8; 32] = Sha256::new().chain_update(key).chain_update(bytes).finalize().into();
        let b: [u8; 32] = Sha256::digest(a).into();
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&a);
        sig[32..].copy_from_slice(&b);
        sig
    }

    /// Checks fake signatures by `key`, or by a run key (its hex as the key).
    fn verifier(key: &str) -> impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool + '_ {
        move |run, bytes, sig| match run {
            None => fake_sign(key, bytes) == *sig,
            Some(run) => fake_sign(&hex::encode(run), bytes) == *sig,
        }
    }

    fn sign_entry(key: &str, entry: String) -> SignedAuditEntry {
        let signature = fake_sign(key, &SignedAuditEntry::signing_bytes(&entry));
        SignedAuditEntry { entry, signature, run_key: None }
    }

    fn sign_head(key: &str, head: String) -> SignedAuditHead {
        let signature = fake_sign(key, &SignedAuditHead::signing_bytes(&head));
        SignedAuditHead { head, signature, run_key: None }
    }

    fn wallet() -> WalletId {
        WalletId::new("treasury").unwrap()
    }

    fn request_id(n: u64) -> RequestId {
        RequestId::new(format!("r{n}")).unwrap()
    }

    /// The `n`th decision of a small history: accepted, approvals, signed,
    /// denied, policy changed, then signed again.
    fn event(n: u64) -> AuditEvent {
        let request = Sha256::digest(format!("request {n}")).into();
        match n % 5 {
            1 => AuditEvent::Accepted {
                request,
                request_id: request_id(n),
                wallet: wallet(),
                scheme: Scheme::Ecdsa,
                initiator: [7; 32],
                rule: Some("small-payments".into()),
                policy_version: 3,
            },
            2 => AuditEvent::ApprovalsCounted {
                request,
                request_id: request_id(n),
                rule: "large-payments".into(),
                group: "treasurers".into(),
                approvers: vec![[1; 32], [2; 32]],
                required: 2,
            },
            3 => AuditEvent::Signed {
                request,
                request_id: request_id(n),
                wallet: wallet(),
                scheme: Scheme::Ecdsa,
                version: 1,
                path: vec![0, 5],
                signature: vec![9; 64],
            },
            4 => AuditEvent::Denied {
                request,
                request_id: request_id(n),
                wallet: wallet(),
                scheme: Scheme::Eddsa,
                initiator: [7; 32],
                rule: None,
                code: ErrorCode::Unauthorized,
                policy_version: 3,
            },
            _ => AuditEvent::PolicyChanged { from_version: 3, to_version: 4, digest: [4; 32], admins: vec![[5; 32]] },
        }
    }

    /// `n` entries of `name`'s log, signed with its key, and its head.
    fn log(name: &str, n: u64) -> NodeLog {
        let id = node(name);
        let mut last = None;
        let mut entries = Vec::new();
        for i in 1..=n {
            let (entry, json) = next_entry(&id, last, 1_700_000_000_000 + i, event(i));
            last = Some((entry.seq, entry_hash(&json)));
            entries.push(sign_entry(name, json));
        }
        let (_, head) = head_for(&id, last, [8; 32], 1_700_000_001_000);
        NodeLog { node: id, entries, head: Some(sign_head(name, head)) }
    }

    /// `log` signed again by a run key `name`'s identity certified until
    /// `not_after_ms`.
    fn by_run_key(log: &mut NodeLog, not_after_ms: u64) {
        let key = [3u8; 32];
        let run_key = Some(crate::run_key::RunKey {
            key,
            not_after_ms,
            signature: fake_sign(log.node.as_str(), &crate::run_key::RunKey::signing_bytes(&log.node, &key, not_after_ms)),
        });
        for e in &mut log.entries {
            *e = SignedAuditEntry { signature: fake_sign(&hex::encode(key), &SignedAuditEntry::signing_bytes(&e.entry)), run_key, ..e.clone() };
        }
        let head = log.head.take().unwrap();
        log.head = Some(SignedAuditHead { signature: fake_sign(&hex::encode(key), &SignedAuditHead::signing_bytes(&head.head)), run_key, ..head });
    }

    #[test]
    fn entries_signed_by_a_certified_run_key_count_until_its_end() {
        let mut log = self::log("node-2", 3);
        by_run_key(&mut log, 1_700_000_001_000);
        assert_eq!(check(&log).unwrap().entries, 3);
        // Entries written after the key's end (and its skew) do not count.
        let mut log = self::log("node-2", 3);
        by_run_key(&mut log, 1_700_000_000_002 - crate::run_key::RUN_KEY_SKEW_MS);
        assert_eq!(fault(&log), (2, Some(3), FaultKind::BadSignature));
        // A run key certified by another node's identity is not node-2's.
        let mut log = self::log("node-2", 1);
        by_run_key(&mut log, u64::MAX);
        assert!(check_log(&log.node, &log, verifier("node-1")).is_err());
    }

    fn check(log: &NodeLog) -> Result<LogSummary, AuditFault> {
        check_log(&log.node, log, verifier(log.node.as_str()))
    }

    fn fault(log: &NodeLog) -> (usize, Option<u64>, FaultKind) {
        let f = check(log).expect_err("a fault");
        (f.index, f.seq, f.kind)
    }

    /// Entry `i` of `log` with its JSON edited by `edit`, signed again by
    /// the node (as a signer that was made to would).
    fn resign(log: &mut NodeLog, i: usize, edit: impl Fn(&str) -> String) {
        let name = log.node.as_str().to_owned();
        let json = edit(&log.entries[i].entry);
        assert_ne!(json, log.entries[i].entry, "the edit changes the entry");
        log.entries[i] = sign_entry(&name, json);
    }

    #[test]
    fn a_gap_the_signer_declared_is_named_and_the_rest_checks() {
        // Entries 4 and 5 are gone; the signer resumed after 3 at 6.
        let mut cut = log("node-2", 3);
        let id = node("node-2");
        let found = Some((NonZeroU64::new(3).unwrap(), entry_hash(&cut.entries[2].entry)));
        let as_if_five = found.map(|(_, hash)| (NonZeroU64::new(5).unwrap(), hash));
        let (resumed, json) = next_entry(&id, as_if_five, 1, AuditEvent::Resumed { after_seq: 3, lost_through: 5 });
        assert_eq!(resumed.seq.get(), 6);
        cut.entries.push(sign_entry("node-2", json.clone()));
        let (_, head) = head_for(&id, Some((resumed.seq, entry_hash(&json))), [8; 32], 2);
        cut.head = Some(sign_head("node-2", head));
        let summary = check(&cut).unwrap();
        assert_eq!((summary.lost, summary.last_seq, summary.head_seq), (vec![(4, 5)], 6, Some(6)));

        // A declaration that does not fit what precedes it is no excuse.
        let mut wrong = cut.clone();
        resign(&mut wrong, 3, |e| e.replacen("\"after_seq\":3", "\"after_seq\":2", 1));
        assert!(matches!(fault(&wrong).2, FaultKind::Missing { expected: 4, found: 6 }));
    }

    #[test]
    fn a_whole_log_passes_with_its_counts() {
        let log = log("node-2", 5);
        let summary = check(&log).unwrap();
        assert_eq!(summary, LogSummary { node: node("node-2"), entries: 5, last_seq: 5, head_seq: Some(5), signatures: 1, denials: 1, lost: vec![] });

        let mut headless = log.clone();
        headless.head = None;
        assert_eq!(check(&headless).unwrap().head_seq, None);

        let empty = self::log("node-2", 0);
        assert_eq!(
            check(&empty).unwrap(),
            LogSummary { node: node("node-2"), entries: 0, last_seq: 0, head_seq: Some(0), signatures: 0, denials: 0, lost: vec![] }
        );
    }

    #[test]
    fn entries_are_chained_from_seq_1() {
        let id = node("node-1");
        let (first, json) = next_entry(&id, None, 10, event(1));
        assert_eq!((first.seq.get(), first.prev), (1, [0; 32]));
        let (second, _) = next_entry(&id, Some((first.seq, entry_hash(&json))), 11, event(2));
        assert_eq!((second.seq.get(), second.prev), (2, entry_hash(&json)));
        assert_eq!(entry_hash(&json), <[u8; 32]>::from(Sha256::digest(json.as_bytes())));
        assert_eq!(SignedAuditEntry::signing_bytes("{}"), b"conclave/audit/v1\n{}".to_vec());
        assert_eq!(SignedAuditHead::signing_bytes("{}"), b"conclave/audit-head/v1\n{}".to_vec());
    }

    #[test]
    fn an_altered_entry_has_a_bad_signature() {
        let mut log = log("node-2", 5);
        log.entries[2].entry = log.entries[2].entry.replace("treasury", "treasurx");
        assert_eq!(fault(&log), (2, Some(3), FaultKind::BadSignature));
    }

    #[test]
    fn an_entry_signed_again_after_an_edit_breaks_the_next_link() {
        let mut log = log("node-2", 5);
        resign(&mut log, 2, |e| e.replace("treasury", "treasurx"));
        assert_eq!(fault(&log), (3, Some(4), FaultKind::BrokenLink));
        // The same for the last entry, caught by the head instead.
        let mut log = self::log("node-2", 5);
        resign(&mut log, 4, |e| e.replace("\"to_version\":4", "\"to_version\":5"));
        assert_eq!(fault(&log), (5, Some(5), FaultKind::HeadMismatch));
    }

    #[test]
    fn a_first_entry_must_link_to_nothing() {
        let mut log = log("node-2", 2);
        resign(&mut log, 0, |e| e.replace(&"0".repeat(64), &"1".repeat(64)));
        assert_eq!(fault(&log), (0, Some(1), FaultKind::BrokenLink));
    }

    #[test]
    fn a_dropped_entry_is_missing() {
        let mut log = log("node-2", 5);
        log.entries.remove(2);
        assert_eq!(fault(&log), (2, Some(4), FaultKind::Missing { expected: 3, found: 4 }));
        let mut log = self::log("node-2", 5);
        log.entries.remove(0);
        assert_eq!(fault(&log), (0, Some(2), FaultKind::Missing { expected: 1, found: 2 }));
    }

    #[test]
    fn swapped_entries_are_out_of_order() {
        let mut log = log("node-2", 5);
        log.entries.swap(2, 3);
        assert_eq!(fault(&log), (2, Some(4), FaultKind::OutOfOrder { expected: 3, found: 4 }));
    }

    #[test]
    fn a_repeated_entry_is_replayed_and_a_second_history_is_a_fork() {
        let mut log = log("node-2", 5);
        log.entries.insert(3, log.entries[1].clone());
        assert_eq!(fault(&log), (3, Some(2), FaultKind::Replayed { seq: 2, first_index: 1 }));

        // The node signed another seq 2 (its state was rolled back after
        // entry 3 and it went on from entry 1).
        let mut log = self::log("node-2", 3);
        let id = node("node-2");
        let (_, fork) = next_entry(&id, Some((NonZeroU64::MIN, entry_hash(&log.entries[0].entry))), 5, event(4));
        log.entries.push(sign_entry("node-2", fork));
        assert_eq!(fault(&log), (3, Some(2), FaultKind::Forked { seq: 2, first_index: 1 }));
    }

    #[test]
    fn a_log_short_of_its_head_is_truncated() {
        let mut log = log("node-2", 5);
        log.entries.truncate(3);
        assert_eq!(fault(&log), (3, Some(5), FaultKind::Truncated { head_seq: 5, last_seq: 3 }));
        log.entries.clear();
        assert_eq!(fault(&log), (0, Some(5), FaultKind::Truncated { head_seq: 5, last_seq: 0 }));
    }

    #[test]
    fn a_head_must_match_the_entry_at_its_seq() {
        let id = node("node-2");
        let mut log = log("node-2", 5);
        let (_, other) = head_for(&id, Some((NonZeroU64::new(5).unwrap(), [6; 32])), [8; 32], 1);
        log.head = Some(sign_head("node-2", other));
        assert_eq!(fault(&log), (5, Some(5), FaultKind::HeadMismatch));

        // A head taken earlier that the log goes past is fine...
        let (_, earlier) = head_for(&id, Some((NonZeroU64::new(3).unwrap(), entry_hash(&log.entries[2].entry))), [8; 32], 1);
        log.head = Some(sign_head("node-2", earlier));
        assert_eq!(check(&log).unwrap().head_seq, Some(3));
        // ...but not one at the same seq with another hash, nor an empty
        // head with a hash.
        let (_, forked) = head_for(&id, Some((NonZeroU64::new(3).unwrap(), entry_hash(&log.entries[1].entry))), [8; 32], 1);
        log.head = Some(sign_head("node-2", forked));
        assert_eq!(fault(&log), (5, Some(3), FaultKind::HeadMismatch));
        let (_, empty) = head_for(&id, None, [8; 32], 1);
        log.head = Some(sign_head("node-2", empty.replace(&"0".repeat(64), &"6".repeat(64))));
        assert_eq!(fault(&log), (5, Some(0), FaultKind::HeadMismatch));
    }

    #[test]
    fn heads_are_signed_by_the_node_for_the_node() {
        let mut log = log("node-2", 3);
        let head = log.head.clone().unwrap();
        log.head = Some(SignedAuditHead { signature: [0; 64], ..head.clone() });
        assert_eq!(fault(&log), (3, Some(3), FaultKind::BadHeadSignature));
        // An entry's signature does not make a head, nor a head's an entry.
        log.head = Some(SignedAuditHead { head: head.head.clone(), signature: sign_entry("node-2", head.head.clone()).signature, run_key: None });
        assert_eq!(fault(&log).2, FaultKind::BadHeadSignature);
        let mut swapped = self::log("node-2", 3);
        swapped.entries[1].signature = sign_head("node-2", swapped.entries[1].entry.clone()).signature;
        assert_eq!(fault(&swapped), (1, Some(2), FaultKind::BadSignature));

        log.head = Some(sign_head("node-2", head.head.replace("node-2", "node-3")));
        assert_eq!(fault(&log), (3, Some(3), FaultKind::HeadWrongNode { found: node("node-3") }));
        log.head = Some(sign_head("node-2", head.head.replace("\"v\":1", "\"v\":2")));
        assert!(matches!(fault(&log), (3, None, FaultKind::MalformedHead(m)) if m.contains("version 2")));
    }

    #[test]
    fn an_entry_must_be_the_nodes_own() {
        // Signed by node-2's key but naming node-3: a signer bug, never valid.
        let mut log = log("node-2", 3);
        resign(&mut log, 1, |e| e.replace("node-2", "node-3"));
        assert_eq!(fault(&log), (1, Some(2), FaultKind::WrongNode { found: node("node-3") }));
        // node-3's own entry, slipped into node-2's log.
        let mut log = self::log("node-2", 3);
        log.entries[1] = self::log("node-3", 2).entries[1].clone();
        assert_eq!(fault(&log), (1, Some(2), FaultKind::BadSignature));
        // node-3's whole log, filed as node-2's.
        let log = self::log("node-3", 3);
        let f = check_log(&node("node-2"), &log, verifier("node-2")).unwrap_err();
        assert_eq!((f.index, f.seq, f.kind), (0, None, FaultKind::Mislabelled { label: node("node-3") }));
    }

    #[test]
    fn entries_are_bounded_and_versioned() {
        let mut log = log("node-2", 3);
        resign(&mut log, 1, |e| e.replace("\"rule\":\"large-payments\"", &format!("\"rule\":\"{}\"", "x".repeat(MAX_ENTRY_BYTES))));
        assert!(matches!(fault(&log), (1, None, FaultKind::Malformed(m)) if m.contains("exceeds the limit")));
        let mut log = self::log("node-2", 3);
        resign(&mut log, 1, |e| e.replace("\"v\":1", "\"v\":2"));
        assert!(matches!(fault(&log), (1, None, FaultKind::Malformed(m)) if m.contains("version 2")));
        let mut log = self::log("node-2", 3);
        resign(&mut log, 1, |e| e.replace("\"seq\":2", "\"seq\":0"));
        assert!(matches!(fault(&log), (1, None, FaultKind::Malformed(_))));
        let mut log = self::log("node-2", 3);
        resign(&mut log, 1, |e| e.replace("\"required\":2", "\"required\":2,\"extra\":1"));
        assert!(matches!(fault(&log), (1, None, FaultKind::Malformed(m)) if m.contains("extra")));
    }

    #[test]
    fn entries_and_heads_have_the_documented_shape() {
        let log = log("node-2", 5);
        let e = &log.entries;
        assert!(
            e[0].entry.starts_with(&format!(r#"{{"v":1,"node":"node-2","seq":1,"prev":"{}","at_ms":1700000000001,"kind":"accepted","#, "0".repeat(64))),
            "{}",
            e[0].entry
        );
        assert!(e[0].entry.contains(r#""rule":"small-payments","policy_version":3"#), "{}", e[0].entry);
        assert!(e[1].entry.contains(r#""kind":"approvals_counted","#), "{}", e[1].entry);
        assert!(e[1].entry.contains(&format!(r#""approvers":["{}","{}"],"required":2"#, "01".repeat(32), "02".repeat(32))), "{}", e[1].entry);
        assert!(e[2].entry.contains(r#""kind":"signed","#), "{}", e[2].entry);
        assert!(e[2].entry.contains(&format!(r#""scheme":"ecdsa","version":1,"path":[0,5],"signature":"{}"}}"#, "09".repeat(64))), "{}", e[2].entry);
        assert!(e[3].entry.contains(r#""kind":"denied","#), "{}", e[3].entry);
        assert!(!e[3].entry.contains("\"rule\""), "no rule, no field: {}", e[3].entry);
        assert!(e[3].entry.contains(r#""code":"unauthorized""#), "{}", e[3].entry);
        assert!(e[4].entry.contains(&format!(
            r#""kind":"policy_changed","from_version":3,"to_version":4,"digest":"{}","admins":["{}"]"#,
            "04".repeat(32),
            "05".repeat(32)
        )));
        for (i, signed) in e.iter().enumerate() {
            assert_eq!(signed.parse().unwrap().event, event(i as u64 + 1));
        }
        let head = log.head.unwrap();
        assert!(head.head.starts_with(r#"{"v":1,"node":"node-2","seq":5,"hash":""#), "{}", head.head);
        assert_eq!(head.parse().unwrap().hash, entry_hash(&e[4].entry));
        let signed = serde_json::to_string(&e[0]).unwrap();
        assert!(signed.starts_with(r#"{"entry":"{\"v\":1,"#) && signed.contains(r#"","signature":""#), "{signed}");

        let others = [
            AuditEvent::KeyCreated {
                request: [1; 32],
                request_id: request_id(1),
                wallet: wallet(),
                scheme: Scheme::Eddsa,
                version: 1,
                public_key: vec![2; 32],
            },
            AuditEvent::Reshared { request: [1; 32], request_id: request_id(1), wallet: wallet(), scheme: Scheme::Eddsa, version: 2 },
            AuditEvent::PolicyRefused { version: 5, digest: [3; 32], reason: "too few admin signatures".into() },
        ];
        for (event, kind) in others.into_iter().zip(["key_created", "reshared", "policy_refused"]) {
            let (_, json) = next_entry(&node("node-1"), None, 1, event.clone());
            assert!(json.contains(&format!(r#""kind":"{kind}""#)), "{json}");
            assert_eq!(SignedAuditEntry { entry: json, signature: [0; 64], run_key: None }.parse().unwrap().event, event);
        }
    }

    #[test]
    fn faults_read_as_sentences() {
        let mut log = log("node-2", 5);
        log.entries.remove(2);
        assert_eq!(
            check(&log).unwrap_err().to_string(),
            "entry 3 (seq 4) of node-2: seq 4 where seq 3 was due, and seq 3 is not in the file: entries are missing"
        );
        let mut log = self::log("node-2", 5);
        log.entries.truncate(4);
        assert_eq!(
            check(&log).unwrap_err().to_string(),
            "head (seq 5) of node-2: the node's head is at seq 5 but the log ends at seq 4: the log was cut short"
        );
        let mut log = self::log("node-2", 5);
        log.entries.insert(3, log.entries[1].clone());
        assert_eq!(check(&log).unwrap_err().to_string(), "entry 4 (seq 2) of node-2: a copy of entry 2 (seq 2): it was replayed");
    }

    #[test]
    fn an_export_is_checked_node_by_node() {
        let export = AuditExport { v: 1, exported_at_ms: 5, nodes: vec![log("node-1", 3), log("node-2", 2)] };
        let decoded = AuditExport::decode(&export.encode()).unwrap();
        assert_eq!(decoded, export);
        let verify_for = |node: &NodeId, run: Option<&[u8; 32]>, bytes: &[u8], sig: &[u8; 64]| verifier(node.as_str())(run, bytes, sig);
        let results = check_export(&decoded, verify_for);
        assert_eq!(results.iter().map(|r| r.as_ref().unwrap().entries).collect::<Vec<_>>(), [3, 2]);

        // node-2's log twice (an old copy and the current one): neither is believed.
        let mut twice = export.clone();
        twice.nodes.push(log("node-2", 1));
        let results = check_export(&twice, verify_for);
        assert!(results[0].is_ok());
        for r in &results[1..] {
            assert_eq!(r.as_ref().unwrap_err().kind, FaultKind::ListedTwice);
        }
        assert_eq!(results[2].as_ref().unwrap_err().to_string(), "log of node-2: the export lists the node more than once");

        let json = String::from_utf8(export.encode()).unwrap();
        assert!(matches!(AuditExport::decode(json.replacen(r#""v":1"#, r#""v":3"#, 1).as_bytes()), Err(DecodeError::Version { got: 3, .. })));
        assert!(matches!(AuditExport::decode(json.replacen(r#""nodes""#, r#""extra":0,"nodes""#, 1).as_bytes()), Err(DecodeError::Json { .. })));
        assert!(matches!(AuditExport::decode(b"[]"), Err(DecodeError::Json { .. })));
    }
}
