//! The sealed blob store. It holds only ciphertext the host cannot open,
//! and beside it this node's copies of the wallet records its signer
//! signed (public, signed statements).
//!
//! Layout: `<dir>/blobs/<slot path>/<version, 10 digits>.blob` and
//! `<dir>/records/<wallet>/<scheme>/<version, 10 digits>.json`. A version
//! is written to a temporary file, synced, and hard-linked into place: the
//! link fails if the version exists, so nothing is ever overwritten, and a
//! crash leaves either the whole blob or none. The audit trail is the
//! exception: its entries are records of one journal,
//! `<dir>/blobs/audit/journal` ([`crate::journal`]).

use crate::journal::Journal;
use conclave_proto::link::{BlobSlot, StoreError, StoredBlob};
use conclave_proto::store;
use conclave_proto::{Scheme, WalletId};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The blob store.
pub struct BlobStore {
    root: PathBuf,
    records: PathBuf,
    audit: Journal,
}

impl BlobStore {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<BlobStore> {
        let root = dir.join("blobs");
        std::fs::create_dir_all(&root)?;
        let audit = Journal::open(&root.join(BlobSlot::Audit.path()))?;
        Ok(BlobStore { root, records: dir.join("records"), audit })
    }

    /// The audit trail's journal.
    pub fn audit(&self) -> &Journal {
        &self.audit
    }

    /// The highest version in `slot`.
    pub fn load_latest(&self, slot: &BlobSlot) -> std::io::Result<Option<StoredBlob>> {
        if *slot == BlobSlot::Audit {
            return self.audit.latest();
        }
        latest(&self.root.join(slot.path()), store::parse_blob_file_name, store::blob_file_name)
    }

    /// Version `version` of `slot`, if stored.
    pub fn load_version(&self, slot: &BlobSlot, version: u32) -> std::io::Result<Option<StoredBlob>> {
        self.load_version_at(&slot.path(), version)
    }

    /// Version `version` at a slot path (a restore knows paths, not
    /// slots), if stored.
    pub fn load_version_at(&self, path: &str, version: u32) -> std::io::Result<Option<StoredBlob>> {
        if path == BlobSlot::Audit.path() {
            return self.audit.get(version);
        }
        match std::fs::read(self.root.join(path).join(store::blob_file_name(version))) {
            Ok(sealed) => Ok(Some(StoredBlob { version, sealed })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a version of `slot`, replacing it if it exists (the signer
    /// asks for this only for a version it never committed to). Atomic: a
    /// crash leaves the old blob or the new one.
    pub fn replace(&self, slot: &BlobSlot, blob: &StoredBlob) -> Result<(), StoreError> {
        if *slot == BlobSlot::Audit {
            return self.audit.append(std::slice::from_ref(blob), true);
        }
        let dir = self.root.join(slot.path());
        let tmp = write_tmp(&dir, blob)?;
        std::fs::rename(&tmp, dir.join(store::blob_file_name(blob.version))).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io)
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
        if path == BlobSlot::Audit.path() {
            return self.audit.append(std::slice::from_ref(blob), false);
        }
        write_once(&self.root.join(path), &store::blob_file_name(blob.version), blob)
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
    fn the_audit_trail_is_kept_in_its_journal_not_in_files() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let entry = |version, text: &str| StoredBlob { version, sealed: text.into() };
        store.store(&BlobSlot::Audit, &entry(1, "one, never committed")).unwrap();
        store.replace(&BlobSlot::Audit, &entry(1, "one")).unwrap();
        store.store_at("audit", &entry(2, "two")).unwrap();
        assert_eq!(store.store_at("audit", &entry(2, "again")), Err(StoreError::Exists));
        assert_eq!(store.load_version_at("audit", 1).unwrap().unwrap().sealed, b"one");
        assert_eq!(store.load_latest(&BlobSlot::Audit).unwrap().unwrap().sealed, b"two");
        let files: Vec<_> = std::fs::read_dir(d.path().join("blobs/audit")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from("journal")]);
    }
}
