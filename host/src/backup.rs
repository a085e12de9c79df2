//! `conclave-host backup` and `restore`: the sealed blob store to a file and
//! back. The store holds only ciphertext, so the backup does too.
//!
//! A restore changes nothing unless all of it can work: the file must be a
//! backup of this node with a valid checksum; no blob in it may conflict with
//! a different blob already in the store; and this node's signer must open
//! every blob (so a backup restored onto a node with another seal key is
//! refused). The signer is asked over the link, with the node's host daemon
//! stopped: the restore speaks as the node's host for its duration.

use crate::config::HostConfig;
use crate::store::BlobStore;
use conclave_proto::backup::{BackedUpBlob, Backup, BackupError};
use conclave_proto::link::{self, BlobSlot, FromEnclave, StoreError, StoredBlob, ToEnclave};
use conclave_proto::store::list_blobs;
use conclave_proto::{NodeId, RequestError, PROTOCOL_VERSION};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Why a backup or restore did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the store or the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid backup.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A backup of another node.
    #[error("this is a backup of {backup}, not of {node}")]
    OtherNode {
        /// In the backup.
        backup: NodeId,
        /// This node.
        node: NodeId,
    },
    /// The store already holds a different blob at a version of the backup.
    #[error("the store already holds a different {path} version {version}; restore onto an empty store or move it aside")]
    Conflict {
        /// The slot path.
        path: String,
        /// The version.
        version: u32,
    },
    /// The store's audit trail goes past an entry of the backup that it
    /// does not hold (its journal only grows).
    #[error("the store's audit trail goes to entry {tail} without entry {version} of the backup; restore onto an empty store or move it aside")]
    AuditBehind {
        /// The backup's entry.
        version: u32,
        /// The store's last entry.
        tail: u32,
    },
    /// The signer cannot be reached.
    #[error("cannot reach this node's signer at {link}: {reason} (it must be running, and this node's host stopped)")]
    Link {
        /// The link address.
        link: String,
        /// What went wrong.
        reason: String,
    },
    /// The signer cannot open a blob: sealed by another key or another node.
    #[error("this node's signer cannot open {path} version {version}: {reason}")]
    Unopenable {
        /// The slot path.
        path: String,
        /// The version.
        version: u32,
        /// The signer's reason.
        reason: RequestError,
    },
}

/// What a restore did.
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    /// Blobs written.
    pub written: usize,
    /// Blobs the store already held, identical.
    pub present: usize,
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.into();
    move |source| RestoreError::Io { path, source }
}

/// Every blob in the store, as a backup of `node`.
pub fn take(store: &BlobStore, node: &NodeId) -> Result<Backup, RestoreError> {
    // The host's own temporaries are not blobs.
    let listed = list_blobs(store.root(), &mut |_| Ok(())).map_err(io(store.root()))?;
    let mut blobs = Vec::with_capacity(listed.len());
    for f in listed {
        let sealed = std::fs::read(&f.file).map_err(io(&f.file))?;
        blobs.push(BackedUpBlob { path: f.path, version: f.version, sealed });
    }
    let audit = BlobSlot::Audit.path();
    store
        .audit()
        .read_from(0, &mut |b| {
            blobs.push(BackedUpBlob { path: audit.clone(), version: b.version, sealed: b.sealed });
            true
        })
        .map_err(io(store.root().join(&audit)))?;
    Ok(Backup::new(node.clone(), crate::now_ms(), blobs))
}

/// Restores `bytes` (a backup file's content) into this node's store.
pub async fn restore(config: &HostConfig, store: &BlobStore, bytes: &[u8]) -> Result<Restored, RestoreError> {
    let backup = Backup::decode(bytes)?;
    if backup.node_id != config.node_id {
        return Err(RestoreError::OtherNode { backup: backup.node_id, node: config.node_id.clone() });
    }
    let mut missing = Vec::new();
    let audit_tail = store.audit().latest().map_err(io(store.root().join(BlobSlot::Audit.path())))?.map_or(0, |b| b.version);
    for b in &backup.blobs {
        match store.load_version_at(&b.path, b.version) {
            Ok(Some(existing)) if existing.sealed == b.sealed => {}
            Ok(Some(_)) => return Err(RestoreError::Conflict { path: b.path.clone(), version: b.version }),
            // The journal only grows: an entry missing below its last one
            // cannot go in.
            Ok(None) if b.path == BlobSlot::Audit.path() && b.version <= audit_tail => {
                return Err(RestoreError::AuditBehind { version: b.version, tail: audit_tail });
            }
            Ok(None) => missing.push(b),
            Err(e) => return Err(io(store.root().join(&b.path))(e)),
        }
    }
    check_with_signer(config, &backup).await?;
    for b in &missing {
        let blob = StoredBlob { version: b.version, sealed: b.sealed.clone() };
        match store.store_at(&b.path, &blob) {
            Ok(()) | Err(StoreError::Exists) => {}
            Err(StoreError::Io { detail }) => {
                return Err(io(store.root().join(&b.path))(std::io::Error::other(detail)));
            }
        }
    }
    Ok(Restored { written: missing.len(), present: backup.blobs.len() - missing.len() })
}

/// Asks the signer to open every blob. While connected, the restore is the
/// signer's host: it serves the signer's loads from the backup and refuses
/// its stores.
async fn check_with_signer(config: &HostConfig, backup: &Backup) -> Result<(), RestoreError> {
    let link_err = |reason: String| RestoreError::Link { link: config.link.to_string(), reason };
    let stream = conclave_proto::transport::connect(&config.link).await.map_err(|e| link_err(e.to_string()))?;
    let (mut r, mut w) = tokio::io::split(stream);
    w.write_all(&link::encode_frame(&ToEnclave::Hello { v: PROTOCOL_VERSION })).await.map_err(|e| link_err(e.to_string()))?;
    match link::read_frame(&mut r).await {
        Ok(Ok(FromEnclave::Hello { v, identity })) if v == PROTOCOL_VERSION && identity.node_id == config.node_id => {}
        other => return Err(link_err(format!("the signer did not answer as {} (got {other:?})", config.node_id))),
    }
    for (call, b) in backup.blobs.iter().enumerate() {
        let call = call as u64;
        let check = ToEnclave::Check { call, path: b.path.clone(), blob: StoredBlob { version: b.version, sealed: b.sealed.clone() } };
        w.write_all(&link::encode_frame(&check)).await.map_err(|e| link_err(e.to_string()))?;
        loop {
            let frame = link::read_frame(&mut r).await.map_err(|e| link_err(e.to_string()))?.map_err(|e| link_err(e.to_string()))?;
            let answer = match frame {
                FromEnclave::Checked { call: c, error } if c == call => match error {
                    None => break,
                    Some(reason) => return Err(RestoreError::Unopenable { path: b.path.clone(), version: b.version, reason }),
                },
                FromEnclave::Load { call, slot, .. } => ToEnclave::Loaded { call, blob: latest(backup, &slot) },
                FromEnclave::Store { call, .. } | FromEnclave::ReplaceAll { call, .. } => {
                    ToEnclave::Stored { call, error: Some(StoreError::Io { detail: "a restore is in progress".into() }) }
                }
                _ => continue,
            };
            w.write_all(&link::encode_frame(&answer)).await.map_err(|e| link_err(e.to_string()))?;
        }
    }
    Ok(())
}

/// The backup's highest version of `slot`.
fn latest(backup: &Backup, slot: &BlobSlot) -> Option<StoredBlob> {
    let path = slot.path();
    backup.blobs.iter().filter(|b| b.path == path).max_by_key(|b| b.version).map(|b| StoredBlob { version: b.version, sealed: b.sealed.clone() })
}
