//! `conclave-enclave reseal`: moves every sealed blob of this node to the
//! sealer's current key, so that an old key can be retired.
//!
//! Each blob is opened and sealed again in this process, for the same node,
//! path and version, and replaced in place: written to a temporary file
//! beside it, synced, then renamed over it. A kill at any moment leaves every
//! blob either under its old key or under the new one, both of which open
//! while the old key is still in the token; running the command again
//! finishes the job. It never creates or deletes a version, so it cannot
//! lose one, and a blob that does not open stops it before anything else is
//! written.

use crate::identity::{channel_key_path, CHANNEL_KEY_NAME};
use crate::seal::{key_id_of, SealContext, SealError, Sealer};
use conclave_proto::link::BlobSlot;
use conclave_proto::store::list_blobs;
use conclave_proto::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};

const TMP_SUFFIX: &str = ".reseal.tmp";

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Blobs moved to the current key.
    pub resealed: usize,
    /// Blobs already under it.
    pub current: usize,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blob does not open (or does not seal): nothing was written for it.
    #[error("{path}: {source}")]
    Seal {
        /// The blob.
        path: PathBuf,
        /// Why.
        #[source]
        source: SealError,
    },
}

/// One sealed file and what it is bound to.
struct Item {
    file: PathBuf,
    /// The path the seal binds (the slot path, or a local name).
    bound_to: Bound,
}

enum Bound {
    Stored { path: String, version: u32 },
    ChannelKey,
}

/// Reseals every blob under `store_dir/blobs` and, in hsm mode, the sealed
/// channel key in `state_dir`.
pub fn reseal(sealer: &dyn Sealer, node: &NodeId, store_dir: &Path, state_dir: &Path) -> Result<ResealReport, ResealError> {
    let blob_root = store_dir.join("blobs");
    // Temporaries an interrupted run left are removed on the way.
    let mut clean = |file: &Path| {
        if file.to_string_lossy().ends_with(TMP_SUFFIX) {
            std::fs::remove_file(file)
        } else {
            Ok(())
        }
    };
    let listed = list_blobs(&blob_root, &mut clean).map_err(|source| ResealError::Io { path: blob_root.clone(), source })?;
    // The policy and the audit trail are signed, not sealed.
    let sealed = listed.into_iter().filter(|f| !BlobSlot::is_signed_path(&f.path));
    let mut items: Vec<Item> = sealed.map(|f| Item { file: f.file, bound_to: Bound::Stored { path: f.path, version: f.version } }).collect();
    let channel_key = channel_key_path(state_dir);
    if channel_key.exists() {
        items.push(Item { file: channel_key, bound_to: Bound::ChannelKey });
    }
    // Fault injection (`crate::fault::Hook::ResealAbortAfter`): abort after
    // N blobs, leaving the next one's temporary file written, not renamed.
    let mut abort_after: Option<usize> = crate::fault::armed(crate::fault::Hook::ResealAbortAfter).and_then(|v| v.parse().ok());
    let mut report = ResealReport::default();
    for item in items {
        let io = |source| ResealError::Io { path: item.file.clone(), source };
        let sealed = std::fs::read(&item.file).map_err(io)?;
        let seal_err = |source| ResealError::Seal { path: item.file.clone(), source };
        if key_id_of(&sealed).map_err(seal_err)? == sealer.key_id() {
            report.current += 1;
            continue;
        }
        let ctx = match &item.bound_to {
            Bound::Stored { path, version } => SealContext::stored(node, path, *version),
            Bound::ChannelKey => SealContext::local(node, CHANNEL_KEY_NAME),
        };
        let plaintext = sealer.open(&ctx, &sealed).map_err(seal_err)?;
        let resealed = sealer.seal(&ctx, &plaintext).map_err(seal_err)?;
        drop(plaintext);
        replace(&item.file, &resealed, &mut abort_after).map_err(io)?;
        report.resealed += 1;
    }
    Ok(report)
}

/// Replaces `file` with `bytes` atomically and durably.
fn replace(file: &Path, bytes: &[u8], abort_after: &mut Option<usize>) -> std::io::Result<()> {
    let mut tmp_name = file.file_name().expect("a file").to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = file.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if crate::fault::ENABLED {
        match abort_after {
            Some(0) => std::process::abort(),
            Some(n) => *n -= 1,
            None => {}
        }
    }
    std::fs::rename(&tmp, file)?;
    let dir = file.parent().expect("a file has a directory");
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::KeySealer;
    use conclave_proto::link::BlobSlot;
    use conclave_proto::store::blob_file_name;
    use conclave_proto::{Scheme, WalletId};

    fn store_blob(store: &Path, sealer: &KeySealer, node: &NodeId, slot: &BlobSlot, version: u32, data: &[u8]) -> PathBuf {
        let dir = store.join("blobs").join(slot.path());
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(blob_file_name(version));
        std::fs::write(&file, sealer.seal(&SealContext::blob(node, slot, version), data).unwrap()).unwrap();
        file
    }

    #[test]
    fn moves_blobs_to_the_current_key_in_place_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let node = NodeId::new("node-1").unwrap();
        let (old, new) = (KeySealer::from_key(&[1; 32]), KeySealer::from_key(&[2; 32]));
        let share = BlobSlot::Share { wallet: WalletId::new("w").unwrap(), scheme: Scheme::Ecdsa };
        let a = store_blob(d.path(), &old, &node, &share, 1, b"share v1");
        let b = store_blob(d.path(), &old, &node, &BlobSlot::Primes, 3, b"primes");
        std::fs::write(a.with_file_name("0000000001.blob.reseal.tmp"), b"left by a kill").unwrap();

        // `new` cannot open `old`'s blobs: the run stops, nothing changes.
        let before = std::fs::read(&a).unwrap();
        assert!(matches!(reseal(&new, &node, d.path(), d.path()), Err(ResealError::Seal { source: SealError::UnknownKey(_), .. })));
        assert_eq!(std::fs::read(&a).unwrap(), before);

        // A sealer that holds both keys stands in for a token with both.
        let both = Both { old, new };
        assert_eq!(reseal(&both, &node, d.path(), d.path()).unwrap(), ResealReport { resealed: 2, current: 0 });
        assert!(!a.with_file_name("0000000001.blob.reseal.tmp").exists(), "stale temporary removed");
        assert_eq!(&**both.new.open(&SealContext::blob(&node, &share, 1), &std::fs::read(&a).unwrap()).unwrap(), b"share v1");
        assert_eq!(&**both.new.open(&SealContext::blob(&node, &BlobSlot::Primes, 3), &std::fs::read(&b).unwrap()).unwrap(), b"primes");
        assert_eq!(reseal(&both, &node, d.path(), d.path()).unwrap(), ResealReport { resealed: 0, current: 2 });
    }

    struct Both {
        old: KeySealer,
        new: KeySealer,
    }

    impl Sealer for Both {
        fn key_id(&self) -> &str {
            self.new.key_id()
        }
        fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
            self.new.seal(ctx, plaintext)
        }
        fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
            self.old.open(ctx, sealed).or_else(|_| self.new.open(ctx, sealed))
        }
    }
}
