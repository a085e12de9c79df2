//! The sealed blob store. It holds only ciphertext the host cannot open,
//! and beside it this node's copies of the wallet records its signer
//! signed (public, signed statements).
//!
//! Layout: `<dir>/blobs/<slot path>/<version, 10 digits>.blob` and
//! `<dir>/records/<wallet>/<scheme>/<version, 10 digits>.json`. A version
//! is written to a temporary file, synced, and hard-linked into place: the
//! link fails if the version exists, so nothing is ever overwritten, and a
//! crash leaves either the whole blob or none.

use conclave_proto::link::{BlobSlot, StoreError, StoredBlob};
use conclave_proto::store;
use conclave_proto::{Scheme, WalletId};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The blob store.
pub struct BlobStore {
    root: PathBuf,
    records: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<BlobStore> {
        let root = dir.join("blobs");
        std::fs::create_dir_all(&root)?;
        Ok(BlobStore { root, records: dir.join("records") })
    }

    /// The highest version in `slot`.
    pub fn load_latest(&self, slot: &BlobSlot) -> std::io::Result<Option<StoredBlob>> {
        latest(&self.root.join(slot.path()), store::parse_blob_file_name, store::blob_file_name)
    }

    /// The versions stored in `slot`, ascending.
    pub fn versions(&self, slot: &BlobSlot) -> std::io::Result<Vec<u32>> {
        versions(&self.root.join(slot.path()), store::parse_blob_file_name)
    }

    /// Version `version` of `slot`, if stored.
    pub fn load_version(&self, slot: &BlobSlot, version: u32) -> std::io::Result<Option<StoredBlob>> {
        match std::fs::read(self.root.join(slot.path()).join(store::blob_file_name(version))) {
            Ok(sealed) => Ok(Some(StoredBlob { version, sealed })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a version of `slot`, replacing it if it exists (the signer
    /// asks for this only for a version it never committed to). Atomic: a
    /// crash leaves the old blob or the new one.
    pub fn replace(&self, slot: &BlobSlot, blob: &StoredBlob) -> Result<(), StoreError> {
        let staged = self.stage(slot, blob)?;
        self.put_in_place(slot, vec![staged])
    }

    /// The first half of [`BlobStore::replace`]: `blob` written and synced
    /// beside its place in `slot`. Versions of one slot can be staged at
    /// once, then put in place together.
    pub fn stage(&self, slot: &BlobSlot, blob: &StoredBlob) -> Result<Staged, StoreError> {
        let dir = self.root.join(slot.path());
        let tmp = write_tmp(&dir, blob)?;
        Ok(Staged { tmp: Some(tmp), target: dir.join(store::blob_file_name(blob.version)) })
    }

    /// The second half of [`BlobStore::replace`]: staged versions of `slot`
    /// moved into place, each replacing what was there, with one sync of
    /// the slot's directory for all.
    pub fn put_in_place(&self, slot: &BlobSlot, staged: Vec<Staged>) -> Result<(), StoreError> {
        // One that fails stops the rest, whose temporary files go with them.
        for mut staged in staged {
            let tmp = staged.tmp.take().expect("staged once");
            std::fs::rename(&tmp, &staged.target).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io(e)
            })?;
        }
        std::fs::File::open(self.root.join(slot.path())).and_then(|d| d.sync_all()).map_err(io)
    }

    /// Keeps this node's copy of a wallet record (the committee's signed
    /// statement): what it answers about the wallet, whatever the registry
    /// holds. Never overwritten.
    pub fn keep_record(&self, wallet: &WalletId, scheme: Scheme, version: u32, record: &[u8]) -> Result<(), StoreError> {
        let dir = self.records.join(wallet.as_str()).join(scheme.as_str());
        write_once(&dir, &record_file_name(version), &StoredBlob { version, sealed: record.to_vec() })
    }

    /// The latest copy of a wallet record kept here.
    pub fn kept_record(&self, wallet: &WalletId, scheme: Scheme) -> std::io::Result<Option<Vec<u8>>> {
        Ok(latest(&self.records.join(wallet.as_str()).join(scheme.as_str()), parse_record_file_name, record_file_name)?.map(|b| b.sealed))
    }

    /// Writes a new version of `slot`; refuses to overwrite.
    pub fn store(&self, slot: &BlobSlot, blob: &StoredBlob) -> Result<(), StoreError> {
        self.store_at(&slot.path(), blob)
    }

    /// The store's blob root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a new version at a slot path (a restore knows paths, not
    /// slots); refuses to overwrite.
    pub fn store_at(&self, path: &str, blob: &StoredBlob) -> Result<(), StoreError> {
        write_once(&self.root.join(path), &store::blob_file_name(blob.version), blob)
    }
}

/// A blob written and synced beside its place ([`BlobStore::stage`]); its
/// temporary file is removed if it is dropped before it is put in place.
pub struct Staged {
    /// `None` once in place.
    tmp: Option<PathBuf>,
    target: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A kept record's file name.
fn record_file_name(version: u32) -> String {
    format!("{version:010}.json")
}

fn parse_record_file_name(name: &str) -> Option<u32> {
    name.strip_suffix(".json").filter(|v| v.len() == 10).and_then(|v| v.parse().ok())
}

/// The highest version in a slot's directory, by its files' names.
fn latest(dir: &Path, parse: fn(&str) -> Option<u32>, name: fn(u32) -> String) -> std::io::Result<Option<StoredBlob>> {
    match versions(dir, parse)?.last().copied() {
        None => Ok(None),
        Some(version) => {
            let sealed = std::fs::read(dir.join(name(version)))?;
            Ok(Some(StoredBlob { version, sealed }))
        }
    }
}

/// The versions stored in `dir`, ascending.
fn versions(dir: &Path, parse: fn(&str) -> Option<u32>) -> std::io::Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        if let Some(v) = entry?.file_name().to_str().and_then(parse) {
            found.push(v);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io { detail: e.to_string() }
}

/// Writes `blob` to a synced temporary file in `dir` (created if missing),
/// named for this write alone: writes of one version may run at once.
fn write_tmp(dir: &Path, blob: &StoredBlob) -> Result<PathBuf, StoreError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(io)?;
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{:010}.{}.{write}.tmp", blob.version, std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&blob.sealed).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(tmp)
}

/// Writes a version into a slot's directory; refuses to overwrite.
fn write_once(dir: &Path, file_name: &str, blob: &StoredBlob) -> Result<(), StoreError> {
    let target = dir.join(file_name);
    if target.exists() {
        return Err(StoreError::Exists);
    }
    let tmp = write_tmp(dir, blob)?;
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(StoreError::Exists),
        Err(e) => return Err(io(e)),
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_never_overwritten_and_the_latest_is_served() {
        let d = tempfile::tempdir().unwrap();
        let slot = BlobSlot::Share { wallet: WalletId::new("w").unwrap(), scheme: Scheme::Ecdsa };
        let store = BlobStore::open(d.path()).unwrap();
        assert!(store.load_latest(&slot).unwrap().is_none());
        store.store(&slot, &StoredBlob { version: 1, sealed: b"one".to_vec() }).unwrap();
        assert_eq!(store.store(&slot, &StoredBlob { version: 1, sealed: b"evil".to_vec() }), Err(StoreError::Exists));
        store.store(&slot, &StoredBlob { version: 2, sealed: b"two".to_vec() }).unwrap();
        let reopened = BlobStore::open(d.path()).unwrap();
        let latest = reopened.load_latest(&slot).unwrap().unwrap();
        assert_eq!((latest.version, latest.sealed.as_slice()), (2, b"two".as_slice()));
        assert_eq!(std::fs::read(d.path().join("blobs/share/w/ecdsa/0000000001.blob")).unwrap(), b"one");
        assert_eq!(reopened.load_version(&slot, 1).unwrap().unwrap().sealed, b"one", "an exact version, not the latest");
        assert!(reopened.load_version(&slot, 3).unwrap().is_none());
        // Only an explicit replace overwrites (a version the signer never committed to).
        reopened.replace(&slot, &StoredBlob { version: 2, sealed: b"two again".to_vec() }).unwrap();
        assert_eq!(reopened.load_latest(&slot).unwrap().unwrap().sealed, b"two again");
        assert_eq!(std::fs::read_dir(d.path().join("blobs/share/w/ecdsa")).unwrap().count(), 2, "no temporary file left");
    }

    #[test]
    fn staged_versions_are_invisible_until_put_in_place_and_leave_nothing_if_dropped() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let slot = BlobSlot::Audit;
        store.store(&slot, &StoredBlob { version: 1, sealed: b"one, never committed".to_vec() }).unwrap();
        let staged: Vec<Staged> =
            [(1, "one"), (2, "two")].into_iter().map(|(version, text)| store.stage(&slot, &StoredBlob { version, sealed: text.into() }).unwrap()).collect();
        assert_eq!(store.versions(&slot).unwrap(), vec![1], "staged, not stored");
        assert_eq!(store.load_version(&slot, 1).unwrap().unwrap().sealed, b"one, never committed");
        store.put_in_place(&slot, staged).unwrap();
        assert_eq!(store.versions(&slot).unwrap(), vec![1, 2]);
        assert_eq!(store.load_version(&slot, 1).unwrap().unwrap().sealed, b"one", "replaced");
        assert_eq!(store.load_latest(&slot).unwrap().unwrap().sealed, b"two");
        // A batch given up (another of its blobs failed) leaves no file.
        drop(store.stage(&slot, &StoredBlob { version: 3, sealed: b"three".to_vec() }).unwrap());
        assert_eq!(std::fs::read_dir(d.path().join("blobs").join(slot.path())).unwrap().count(), 2, "no temporary file left");
    }
}
