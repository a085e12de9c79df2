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

/// How long an entry recorded after the fact ([`Enclave::audit_after`])
/// waits for another entry to be written with.
const AFTER_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// The last entry appended: its sequence number and hash.
type Tail = Option<(NonZeroU64, [u8; 32])>;

/// An entry waiting to be written, and who waits for it.
type Waiting = (AuditEvent, tokio::sync::oneshot::Sender<Result<(), RequestError>>);

/// The audit state of a signer.
#[derive(Default)]
pub(crate) struct AuditLog {
    /// `None` until read through the host; held by the one task writing.
    tail: tokio::sync::Mutex<Option<Tail>>,
    /// Entries waiting for the writer: whoever holds `tail` next writes
    /// them all, with one floor raise (group commit), so that concurrent
    /// sessions do not queue one token write each.
    waiting: Mutex<Vec<Waiting>>,
    /// The tail as last committed, for heads: read without waiting for a
    /// writer's store and floor.
    committed: Mutex<Option<Tail>>,
}

impl Enclave {
    /// Appends `event` to this signer's audit trail: stored, and the floor
    /// raised, before this returns.
    pub(super) async fn audit(&self, event: AuditEvent) -> Result<(), RequestError> {
        let written = self.queue(event);
        self.flush().await;
        written.wait().await
    }

    /// Starts appending `event`, written by a task of its own (with
    /// whatever else waits), and returns what tells when it is stored and
    /// the floor raised: for a decision whose effect can wait for it, while
    /// the work before the effect goes on.
    pub(super) fn audit_soon(self: &Arc<Self>, event: AuditEvent) -> Durable {
        let written = self.queue(event);
        let me = self.clone();
        tokio::spawn(async move { me.flush().await });
        written
    }

    /// Appends `event`, logging instead of failing, for entries recorded
    /// after the decision took effect (a signature already given away): it
    /// is queued before this returns, so that it comes before any entry
    /// queued later, and written off the path of the result, with the next
    /// decision's entry if one comes within [`AFTER_WINDOW`] (one store
    /// round and one floor raise for both), else alone. A signer that dies
    /// before writing it leaves the trail at the entry before: the decision
    /// itself was written before it took effect.
    pub(super) fn audit_after(self: &Arc<Self>, event: AuditEvent) {
        let mut written = self.queue(event);
        let me = self.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(AFTER_WINDOW, &mut written.done).await {
                Ok(answer) => answer,
                Err(_) => {
                    me.flush().await;
                    written.done.await
                }
            };
            if let Ok(Err(e)) = answer {
                tracing::error!(code = %e.code, reason = %e.reason, "could not append to the audit trail");
            }
        });
    }

    fn queue(&self, event: AuditEvent) -> Durable {
        let (tx, written) = Durable::new("the audit writer");
        self.audit_log.waiting.lock().expect("audit queue").push((event, tx));
        written
    }

    /// Writes every queued entry (none if the writer before took them
    /// along) and tells each waiter.
    async fn flush(&self) {
        let mut held = self.audit_log.tail.lock().await;
        let batch = std::mem::take(&mut *self.audit_log.waiting.lock().expect("audit queue"));
        if batch.is_empty() {
            return;
        }
        let last = match *held {
            Some(tail) => Ok(tail),
            None => self.audit_tail().await,
        };
        let (events, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let written = match last {
            Ok(last) => self.append(last, events).await,
            Err(e) => Err(e),
        };
        let answer = match written {
            Ok(tail) => {
                *held = Some(tail);
                *self.audit_log.committed.lock().expect("audit tail") = Some(tail);
                Ok(())
            }
            Err(e) => Err(e),
        };
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Writes `events` after `last`, stored in one call, then raises the
    /// floor once to the last; returns the new tail.
    async fn append(&self, last: Tail, events: Vec<AuditEvent>) -> Result<Tail, RequestError> {
        let mut tail = last;
        let mut blobs = Vec::with_capacity(events.len());
        for event in events {
            let (entry, text) = audit::next_entry(self.keys.node_id(), tail, crate::now_ms(), event);
            let version = u32::try_from(entry.seq.get()).map_err(|_| RequestError::new(ErrorCode::Storage, "the audit trail holds 2^32 entries"))?;
            let signature = self
                .keys
                .sign(&SignedAuditEntry::signing_bytes(&text))
                .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign an audit entry: {e}")))?;
            tail = Some((entry.seq, audit::entry_hash(&text)));
            let signed = SignedAuditEntry { entry: text, signature: signature.signature, run_key: signature.run_key };
            blobs.push(StoredBlob { version, sealed: serde_json::to_vec(&signed).expect("entries serialise") });
        }
        let Some((last_seq, _)) = tail else { return Ok(tail) };
        // Not committed until both are done: entries a host kept from a try
        // that never got that far are this signer's to replace (under the
        // same numbers, so a floor raised by that try is not passed). The
        // floor is written beside the store: a signer that stops between
        // the two finds a floor above the host's tail at its next start and
        // declares the gap ([`Enclave::audit_tail`]).
        let floors = self.floors.clone();
        let raise = tokio::task::spawn_blocking(move || floors.raise(&BlobSlot::Audit.path(), last_seq.get() as u32));
        let (stored, raised) = tokio::join!(self.host.replace_all(BlobSlot::Audit, blobs), raise);
        stored?;
        raised.map_err(|e| RequestError::new(ErrorCode::Storage, format!("the audit floor's task: {e}")))?.map_err(floor_error)?;
        Ok(tail)
    }

    /// A head of this signer's trail answering `nonce`, once every entry
    /// queued before the question is written: what an export asks.
    pub(super) async fn audit_head(&self, nonce: [u8; 32]) -> Result<SignedAuditHead, RequestError> {
        self.flush().await;
        self.committed_head(nonce).await
    }

    /// A head of this signer's trail over `nonce` as last committed (read
    /// through the host the first time), without waiting for entries
    /// queued meanwhile: what a result's endorsement carries, after the
    /// entry that allowed the request.
    pub(super) async fn committed_head(&self, nonce: [u8; 32]) -> Result<SignedAuditHead, RequestError> {
        let committed = *self.audit_log.committed.lock().expect("audit tail");
        let last = match committed {
            Some(tail) => tail,
            None => {
                let mut held = self.audit_log.tail.lock().await;
                let tail = match *held {
                    Some(tail) => tail,
                    None => self.audit_tail().await?,
                };
                *held = Some(tail);
                *self.audit_log.committed.lock().expect("audit tail") = Some(tail);
                tail
            }
        };
        let (_, text) = audit::head_for(self.keys.node_id(), last, nonce, crate::now_ms());
        let signature = self
            .keys
            .sign(&SignedAuditHead::signing_bytes(&text))
            .map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign an audit head: {e}")))?;
        Ok(SignedAuditHead { head: text, signature: signature.signature, run_key: signature.run_key })
    }

    /// The last entry as the host serves it: this signer's own, signed. If
    /// the host serves an older tail than this signer wrote (its floor: a
    /// disk restored from a backup, or a host that cut entries), the signer
    /// goes on after the floor, never reusing a number, with an entry that
    /// declares the gap (`conclave audit verify` names it).
    async fn audit_tail(&self) -> Result<Tail, RequestError> {
        let floor = self.floor(&BlobSlot::Audit)?;
        let found = match self.host.load(BlobSlot::Audit).await? {
            Some(blob) => Some(self.own_entry(&blob)?),
            None => None,
        };
        let found_seq = found.map_or(0, |(seq, _)| seq.get());
        let Some(written) = NonZeroU64::new(u64::from(floor)).filter(|w| w.get() > found_seq) else {
            return Ok(found);
        };
        tracing::warn!(served = found_seq, written = floor, "the host serves a shorter audit trail than this signer wrote; the gap is declared in the trail");
        let gap = AuditEvent::Resumed { after_seq: found_seq, lost_through: written.get() };
        self.append(Some((written, found.map_or([0; 32], |(_, hash)| hash))), vec![gap]).await
    }

    /// A stored entry of this signer's trail, checked: its own, signed, and
    /// stored as the version it numbers. (`conclave-host restore` checks
    /// every entry of a backup with this.)
    pub(super) fn own_entry(&self, blob: &StoredBlob) -> Result<(NonZeroU64, [u8; 32]), RequestError> {
        let bad = |why: String| RequestError::new(ErrorCode::Storage, format!("audit trail: {why}"));
        let signed: SignedAuditEntry = serde_json::from_slice(&blob.sealed).map_err(|e| bad(format!("entry {} does not decode: {e}", blob.version)))?;
        let mine = self.keys.identity().sign_key;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&mine).map_err(|_| bad("this signer's key".into()))?;
        if !signed.holds(self.keys.node_id(), crate::identity::pinned(&key)) {
            return Err(bad(format!("entry {} is not signed by this signer", blob.version)));
        }
        let entry = signed.parse().map_err(|e| bad(e.to_string()))?;
        if entry.node != *self.keys.node_id() || entry.seq.get() != u64::from(blob.version) {
            return Err(bad(format!("the entry stored as {} is entry {} of {}", blob.version, entry.seq, entry.node)));
        }
        Ok((entry.seq, audit::entry_hash(&signed.entry)))
    }
}
