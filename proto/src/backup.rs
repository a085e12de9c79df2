//! The backup of a node's sealed blob store (`conclave-host backup`): only
//! ciphertext, so it can sit wherever backups sit. A restore reads it as
//! hostile input: it is size-limited, versioned, and checksummed, and every
//! blob in it must open in the node's signer before anything is written.

use crate::codec::{self, DecodeError};
use crate::NodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format this build writes and reads.
pub const BACKUP_FORMAT: &str = "conclave-backup/v1";
/// A backup larger than this is refused before it is parsed.
pub const MAX_BACKUP_BYTES: usize = 256 * 1024 * 1024;

/// A node's sealed blobs at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Must be [`BACKUP_FORMAT`].
    pub format: String,
    /// The node whose store this is: its blobs open only in its signer.
    pub node_id: NodeId,
    /// When it was taken (Unix milliseconds).
    pub created_ms: u64,
    /// Every blob, ordered by path and version.
    pub blobs: Vec<BackedUpBlob>,
    /// SHA-256 over the format, node id and every blob (see [`Backup::digest`]), hex.
    pub checksum: String,
}

/// One version of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackedUpBlob {
    /// The slot's path in the store (`share/<wallet>/<scheme>`, `aux/<committee>`, `primes`).
    pub path: String,
    /// Its version in the slot.
    pub version: u32,
    /// The sealed bytes, as stored (ciphertext).
    #[serde(with = "codec::b64")]
    pub sealed: Vec<u8>,
}

/// Why a backup cannot be restored (before any blob is checked).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a backup of a format this build reads.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Another format version.
    #[error("backup format {0:?} is not {BACKUP_FORMAT:?}")]
    Format(String),
    /// The content does not match its checksum: corrupted or altered.
    #[error("the backup does not match its checksum: it is corrupted or was altered")]
    Checksum,
    /// A path that is not a store slot (it could escape the store).
    #[error("the backup names a blob path {0:?} that is not a store slot")]
    Path(String),
}

impl Backup {
    /// A backup of `blobs` (sorted here) for `node_id`.
    pub fn new(node_id: NodeId, created_ms: u64, mut blobs: Vec<BackedUpBlob>) -> Backup {
        blobs.sort_by(|a, b| (&a.path, a.version).cmp(&(&b.path, b.version)));
        let mut backup = Backup { format: BACKUP_FORMAT.into(), node_id, created_ms, blobs, checksum: String::new() };
        backup.checksum = hex::encode(backup.digest());
        backup
    }

    /// SHA-256 over the format, node id, creation time and every blob's path,
    /// version and bytes, each length-prefixed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.format.as_bytes());
        field(self.node_id.as_str().as_bytes());
        field(&self.created_ms.to_be_bytes());
        for b in &self.blobs {
            field(b.path.as_bytes());
            field(&b.version.to_be_bytes());
            field(&b.sealed);
        }
        h.finalize().into()
    }

    /// Serialises the backup.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("backups serialise")
    }

    /// Reads and verifies a backup: size, shape, format, checksum, paths.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        let backup: Backup = codec::decode_json("backup", bytes, MAX_BACKUP_BYTES)?;
        if backup.format != BACKUP_FORMAT {
            return Err(BackupError::Format(backup.format));
        }
        if backup.checksum != hex::encode(backup.digest()) {
            return Err(BackupError::Checksum);
        }
        if let Some(bad) = backup.blobs.iter().find(|b| !is_slot_path(&b.path)) {
            return Err(BackupError::Path(bad.path.clone()));
        }
        Ok(backup)
    }
}

/// Whether `path` is a relative store path of plain segments (no `..`, no
/// absolute path, nothing but the id alphabet), so that a restore cannot
/// write outside the store.
fn is_slot_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        let blob = |path: &str, version, byte| BackedUpBlob { path: path.into(), version, sealed: vec![byte; 40] };
        Backup::new(NodeId::new("node-1").unwrap(), 7, vec![blob("share/w/ecdsa", 1, 1), blob("primes", 2, 2), blob("primes", 1, 3)])
    }

    #[test]
    fn round_trips_sorted_and_refuses_alteration() {
        let backup = sample();
        assert_eq!(backup.blobs[0].path, "primes");
        assert_eq!(backup.blobs[0].version, 1);
        assert_eq!(Backup::decode(&backup.encode()).unwrap(), backup);

        let mut altered = backup.clone();
        altered.blobs[2].sealed[0] ^= 1;
        assert!(matches!(Backup::decode(&altered.encode()), Err(BackupError::Checksum)));
        let mut other_node = backup.clone();
        other_node.node_id = NodeId::new("node-2").unwrap();
        assert!(matches!(Backup::decode(&other_node.encode()), Err(BackupError::Checksum)));
        let mut bytes = backup.encode();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        assert!(Backup::decode(&bytes).is_err());
    }

    #[test]
    fn refuses_other_formats_and_paths_outside_the_store() {
        let mut future = sample();
        future.format = "conclave-backup/v2".into();
        assert!(matches!(Backup::decode(&future.encode()), Err(BackupError::Format(_))));
        for path in ["../etc", "/abs", "share//x", "share/./x", "share/w x"] {
            let evil = Backup::new(NodeId::new("node-1").unwrap(), 1, vec![BackedUpBlob { path: path.into(), version: 1, sealed: vec![0] }]);
            assert!(matches!(Backup::decode(&evil.encode()), Err(BackupError::Path(_))), "{path}");
        }
    }
}
