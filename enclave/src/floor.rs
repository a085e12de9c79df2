//! Version floors: per sealed slot (a wallet's share, the prime pool), the
//! lowest version this signer still opens. The host serves sealed blobs
//! and may serve an old one (a share a reshare replaced, primes already
//! used); a floor held where the host cannot roll it back makes that a
//! refusal instead of a second use.
//!
//! - hsm: a private data object per slot in the PKCS#11 token.
//! - dev: a file in the signer's state directory (dev mode trusts its
//!   disk; it is insecure by design).
//! - nitro: in the enclave's memory only, so a restart forgets it: an
//!   enclave has no storage of its own that the host cannot replace (see
//!   SECURITY.md, "Rollback", for what still holds).

use crate::hsm::{HsmError, Token};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a floor could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The token refused.
    #[error(transparent)]
    Token(#[from] HsmError),
    /// The dev floor file.
    #[error("version floors {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Where this signer keeps its floors.
pub enum Floors {
    /// In the PKCS#11 token.
    Token(Arc<Token>),
    /// In a file of the state directory (dev).
    File(PathBuf, Mutex<()>),
    /// In memory (nitro).
    Memory(Mutex<BTreeMap<String, u32>>),
}

impl Floors {
    /// Floors in a dev signer's state directory.
    pub fn file(state_dir: &std::path::Path) -> Floors {
        Floors::File(state_dir.join("version-floors.json"), Mutex::new(()))
    }

    /// Floors in memory.
    pub fn memory() -> Floors {
        Floors::Memory(Mutex::default())
    }

    /// The floor of `slot` (a slot path): 0 if never raised.
    pub fn get(&self, slot: &str) -> Result<u32, FloorError> {
        match self {
            Floors::Token(token) => Ok(token.floor(&label(slot))?),
            Floors::File(path, lock) => {
                let _guard = lock.lock().expect("floor lock");
                Ok(read(path)?.get(slot).copied().unwrap_or(0))
            }
            Floors::Memory(map) => Ok(map.lock().expect("floor lock").get(slot).copied().unwrap_or(0)),
        }
    }

    /// Raises the floor of `slot` to `version`; never lowers it.
    pub fn raise(&self, slot: &str, version: u32) -> Result<(), FloorError> {
        match self {
            Floors::Token(token) => {
                let label = label(slot);
                if token.floor(&label)? < version {
                    token.set_floor(&label, version)?;
                }
                Ok(())
            }
            Floors::File(path, lock) => {
                let _guard = lock.lock().expect("floor lock");
                let mut all = read(path)?;
                let floor = all.entry(slot.to_string()).or_default();
                if *floor < version {
                    *floor = version;
                    let file_error = |e: std::io::Error| FloorError::File { path: path.clone(), detail: e.to_string() };
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, serde_json::to_vec(&all).expect("floors serialise")).map_err(file_error)?;
                    std::fs::rename(&tmp, path).map_err(file_error)?;
                }
                Ok(())
            }
            Floors::Memory(map) => {
                let mut map = map.lock().expect("floor lock");
                let floor = map.entry(slot.to_string()).or_default();
                *floor = (*floor).max(version);
                Ok(())
            }
        }
    }
}

/// Serialises [`Floors::take`]: a check and a raise that no other take
/// may come between (one `Floors` per signer process).
static TAKING: Mutex<()> = Mutex::new(());

impl Floors {
    /// Takes version `seq` of `slot` for one use: refused (`false`) if the
    /// floor is past it already, else the floor rises past it, durably,
    /// before this returns. Two takes of one version never both succeed,
    /// whatever the host serves or however often the signer restarts
    /// (nitro: within one run; see SECURITY.md).
    pub fn take(&self, slot: &str, seq: u32) -> Result<bool, FloorError> {
        let _serial = TAKING.lock().expect("take lock");
        if self.get(slot)? > seq {
            return Ok(false);
        }
        self.raise(slot, seq + 1)?;
        Ok(true)
    }
}

/// Token object labels: slot paths are at most a few hundred bytes of
/// `[A-Za-z0-9_/-]`.
fn label(slot: &str) -> String {
    format!("conclave-floor:{slot}")
}

fn read(path: &std::path::Path) -> Result<BTreeMap<String, u32>, FloorError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FloorError::File { path: path.to_path_buf(), detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(FloorError::File { path: path.to_path_buf(), detail: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_only_rise_and_dev_floors_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        for floors in [Floors::file(d.path()), Floors::memory()] {
            assert_eq!(floors.get("share/w/ecdsa").unwrap(), 0);
            floors.raise("share/w/ecdsa", 2).unwrap();
            floors.raise("share/w/ecdsa", 1).unwrap();
            assert_eq!(floors.get("share/w/ecdsa").unwrap(), 2, "never lowered");
            assert_eq!(floors.get("primes").unwrap(), 0, "per slot");
        }
        assert_eq!(Floors::file(d.path()).get("share/w/ecdsa").unwrap(), 2);
    }

    #[test]
    fn a_version_is_taken_once_and_nothing_below_it_after() {
        let d = tempfile::tempdir().unwrap();
        for floors in [Floors::file(d.path()), Floors::memory()] {
            assert!(floors.take("presig/w/p", 3).unwrap());
            assert!(!floors.take("presig/w/p", 3).unwrap(), "never twice");
            assert!(!floors.take("presig/w/p", 2).unwrap(), "nor one below it");
            assert!(floors.take("presig/w/p", 5).unwrap());
        }
        assert!(!Floors::file(d.path()).take("presig/w/p", 5).unwrap(), "a restart remembers");
        // Racing takes of one version: exactly one wins.
        let floors = std::sync::Arc::new(Floors::memory());
        let won: usize = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8).map(|_| s.spawn(|| floors.take("presig/w/q", 1).unwrap())).collect();
            racers.into_iter().map(|r| r.join().unwrap() as usize).sum()
        });
        assert_eq!(won, 1);
    }
}
