//! The layout of a sealed blob store on disk, shared by the host (which
//! writes it), `conclave-host backup` (which reads it) and
//! `conclave-enclave reseal` (which rewrites it in place):
//! `<blob root>/<slot path>/<version, 10 digits>.blob`.

use std::path::{Path, PathBuf};

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
