//! This signer's audit trail: every decision it makes, appended as an
//! entry chained to the one before and signed by its identity key, stored
//! through the host (slot `audit`, version = sequence number) under a
//! version floor, so that a host that serves an older tail gets no entry
//! appended after it (no fork), and a host that drops or alters entries is
//! named by `conclave audit verify`. Heads signed over an asker's nonce
//! (and, in every endorsement, over the request) show how far the log goes.

use super::*;
use conclave_proto::audit::{self, AuditEvent, SignedAuditEntry, SignedAuditHead};
use std::num::NonZeroU64;

/// The last entry appended: its sequence number and hash.
type Tail = Option<(NonZeroU64, [u8; 32])>;

/// The audit state of a signer.
#[derive(Default)]
pub(crate) struct AuditLog {
    /// `None` until read through the host; held while an entry is appended.
    tail: tokio::sync::Mutex<Option<Tail>>,
}

impl Enclave {
    /// Appends `event` to this signer's audit trail: stored, and the floor
    /// raised, before this returns.
    pub(super) async fn audit(&self, event: AuditEvent) -> Result<(), RequestError> {
        let mut held = self.audit_log.tail.lock().await;
        let last = match *held {
            Some(tail) => tail,
            None => self.audit_tail().await?,
        };
        let me = self.keys.node_id();
        let (entry, text) = audit::next_entry(me, last, crate::now_ms(), event);
        let version = u32::try_from(entry.seq.get()).map_err(|_| RequestError::new(ErrorCode::Storage, "the audit trail holds 2^32 entries"))?;
        let signature = self
            .keys
            .sign(&SignedAuditEntry::signing_bytes(&text))
            .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign an audit entry: {e}")))?;
        let signed = SignedAuditEntry { entry: text, signature };
        let blob = StoredBlob { version, sealed: serde_json::to_vec(&signed).expect("entries serialise") };
        // Not committed until the floor rises: an entry a host kept from a
        // try that never got that far is this signer's to replace.
        self.host.replace(BlobSlot::Audit, blob).await?;
        self.raise_floor(&BlobSlot::Audit, version)?;
        *held = Some(Some((entry.seq, audit::entry_hash(&signed.entry))));
        Ok(())
    }

    /// Appends `event`, logging instead of failing: for entries recorded
    /// after the decision took effect (a signature already given away).
    pub(super) async fn audit_after(&self, event: AuditEvent) {
        if let Err(e) = self.audit(event).await {
            tracing::error!(code = %e.code, reason = %e.reason, "could not append to the audit trail");
        }
    }

    /// A head of this signer's trail answering `nonce`.
    pub(super) async fn audit_head(&self, nonce: [u8; 32]) -> Result<SignedAuditHead, RequestError> {
        let mut held = self.audit_log.tail.lock().await;
        let last = match *held {
            Some(tail) => tail,
            None => {
                let tail = self.audit_tail().await?;
                *held = Some(tail);
                tail
            }
        };
        let (_, text) = audit::head_for(self.keys.node_id(), last, nonce, crate::now_ms());
        let signature = self
            .keys
            .sign(&SignedAuditHead::signing_bytes(&text))
            .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign an audit head: {e}")))?;
        Ok(SignedAuditHead { head: text, signature })
    }

    /// The last entry as the host serves it: this signer's own, signed,
    /// and not below the floor (else the host cut the trail).
    async fn audit_tail(&self) -> Result<Tail, RequestError> {
        let floor = self.floor(&BlobSlot::Audit)?;
        let bad = |why: String| RequestError::new(ErrorCode::Storage, format!("audit trail: {why}"));
        let Some(blob) = self.host.load(BlobSlot::Audit).await? else {
            return match floor {
                0 => Ok(None),
                _ => Err(bad(format!("the host serves no entry; this signer wrote {floor}"))),
            };
        };
        self.above_floor(&BlobSlot::Audit, blob.version)?;
        let signed: SignedAuditEntry = serde_json::from_slice(&blob.sealed).map_err(|e| bad(format!("the last entry does not decode: {e}")))?;
        let mine = self.keys.identity().sign_key;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&mine).map_err(|_| bad("this signer's key".into()))?;
        key.verify_strict(&SignedAuditEntry::signing_bytes(&signed.entry), &ed25519_dalek::Signature::from_bytes(&signed.signature))
            .map_err(|_| bad("the last entry is not signed by this signer".into()))?;
        let entry = signed.parse().map_err(|e| bad(e.to_string()))?;
        if entry.node != *self.keys.node_id() || entry.seq.get() != u64::from(blob.version) {
            return Err(bad(format!("the entry stored as {} is entry {} of {}", blob.version, entry.seq, entry.node)));
        }
        Ok(Some((entry.seq, audit::entry_hash(&signed.entry))))
    }
}
