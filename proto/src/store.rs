//! The layout of a sealed blob store on disk, shared by the host (which
//! writes it), `conclave-host backup` (which reads it) and
//! `conclave-enclave reseal` (which rewrites it in place):
//! `<blob root>/<slot path>/<version, 10 digits>.blob`, except the audit
//! trail, whose entries are records of one append-only journal,
//! `<blob root>/audit/journal` (see [`journal_record`]).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The name of the audit trail's journal in the slot's directory.
pub const JOURNAL_FILE: &str = "journal";

/// Bytes before each record's content in the journal.
pub const JOURNAL_HEADER: usize = 16;

/// Most bytes of one journal record's content (an audit entry is a few
/// hundred): a length above it is damage, not a record.
pub const MAX_JOURNAL_RECORD: usize = 1 << 20;

/// Version `version`'s record in the audit journal: content length (u32
/// LE), version (u32 LE), the first 8 bytes of a SHA-256 over the three,
/// then the content. The check tells a record cut by a crash from a whole
/// one.
pub fn journal_record(version: u32, content: &[u8]) -> Vec<u8> {
    let len = u32::try_from(content.len()).expect("records are size-limited");
    let mut record = Vec::with_capacity(JOURNAL_HEADER + content.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(&journal_check(len, version, content));
    record.extend_from_slice(content);
    record
}

fn journal_check(len: u32, version: u32, content: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"conclave/audit-journal/v1");
    h.update(len.to_le_bytes());
    h.update(version.to_le_bytes());
    h.update(content);
    h.finalize()[..8].try_into().expect("8 bytes")
}

/// A journal record's header, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    /// Bytes of content after the header.
    pub len: usize,
    /// The version (audit sequence number) it holds.
    pub version: u32,
    check: [u8; 8],
}

impl JournalHeader {
    /// Reads a header; `None` if its length is beyond any record's.
    pub fn parse(bytes: &[u8; JOURNAL_HEADER]) -> Option<JournalHeader> {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        (len <= MAX_JOURNAL_RECORD).then(|| JournalHeader { len, version, check: bytes[8..].try_into().expect("8 bytes") })
    }

    /// Whether `content` is what this header was written with.
    pub fn holds(&self, content: &[u8]) -> bool {
        content.len() == self.len && journal_check(self.len as u32, self.version, content) == self.check
    }
}

/// Reads the records of a journal from `r`, at most `limit` bytes, handing
/// each to `each` with its offset, in order, until `each` returns false.
/// Returns the offset after the last record read: `limit` if every byte is
/// in a whole record, else where the first record that does not read (cut
/// short by a crash while appending, or damaged) begins.
pub fn read_journal(r: &mut dyn std::io::Read, limit: u64, each: &mut dyn FnMut(u64, u32, Vec<u8>) -> bool) -> std::io::Result<u64> {
    let mut at = 0u64;
    while limit - at >= JOURNAL_HEADER as u64 {
        let mut header = [0u8; JOURNAL_HEADER];
        r.read_exact(&mut header)?;
        let Some(parsed) = JournalHeader::parse(&header).filter(|h| (JOURNAL_HEADER + h.len) as u64 <= limit - at) else {
            break;
        };
        let mut content = vec![0u8; parsed.len];
        r.read_exact(&mut content)?;
        if !parsed.holds(&content) {
            break;
        }
        let next = at + (JOURNAL_HEADER + parsed.len) as u64;
        if !each(at, parsed.version, content) {
            return Ok(next);
        }
        at = next;
    }
    Ok(at)
}

/// The file name of version `version` of a slot.
pub fn blob_file_name(version: u32) -> String {
    format!("{version:010}.blob")
}

/// The version a blob store file name stands for; `None` for anything else
/// (temporary files, strays).
pub fn parse_blob_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".blob")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One blob file found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The slot's path, relative to the blob root, `/`-separated.
    pub path: String,
    /// The version.
    pub version: u32,
    /// The file.
    pub file: PathBuf,
}

/// Every blob file under `blob_root`, ordered by path and version. Other
/// files (temporaries, strays) are handed to `other`.
pub fn list_blobs(blob_root: &Path, other: &mut dyn FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<Vec<StoredFile>> {
    let mut found = Vec::new();
    walk(blob_root, "", other, &mut found)?;
    found.sort_by(|a, b| (&a.path, a.version).cmp(&(&b.path, b.version)));
    Ok(found)
}

fn walk(dir: &Path, prefix: &str, other: &mut dyn FnMut(&Path) -> std::io::Result<()>, found: &mut Vec<StoredFile>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            let sub = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
            walk(&path, &sub, other, found)?;
        } else if let Some(version) = parse_blob_file_name(name) {
            found.push(StoredFile { path: prefix.to_string(), version, file: path });
        } else {
            other(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_file_names_round_trip_and_strays_are_not_blobs() {
        assert_eq!(blob_file_name(7), "0000000007.blob");
        assert_eq!(parse_blob_file_name(&blob_file_name(u32::MAX)), Some(u32::MAX));
        for stray in ["7.blob", "0000000007.blob.tmp", ".0000000007.12.tmp", "0000000007.reseal.tmp", "000000000a.blob", "+000000007.blob"] {
            assert_eq!(parse_blob_file_name(stray), None, "{stray}");
        }
    }

    #[test]
    fn lists_blobs_by_slot_and_version_and_hands_over_the_rest() {
        let d = tempfile_dir();
        for (dir, name) in [("share/w/ecdsa", "0000000002.blob"), ("share/w/ecdsa", "0000000001.blob"), ("primes", "0000000001.blob"), ("primes", "x.tmp")] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
            std::fs::write(d.join(dir).join(name), b"x").unwrap();
        }
        let mut others = Vec::new();
        let listed = list_blobs(&d, &mut |p| {
            others.push(p.file_name().unwrap().to_string_lossy().into_owned());
            Ok(())
        })
        .unwrap();
        let summary: Vec<(String, u32)> = listed.iter().map(|f| (f.path.clone(), f.version)).collect();
        assert_eq!(summary, vec![("primes".into(), 1), ("share/w/ecdsa".into(), 1), ("share/w/ecdsa".into(), 2)]);
        assert_eq!(others, vec!["x.tmp".to_string()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("conclave-proto-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
