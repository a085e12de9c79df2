//! Version floors: per sealed slot (a wallet's share, the prime pool), the
//! lowest version this signer still opens. The host serves sealed blobs
//! and may serve an old one (a share a reshare replaced, primes already
//! used); a floor held where the host cannot roll it back makes that a
//! refusal instead of a second use.
//!
//! - hsm: private data objects in the PKCS#11 token (two copies per slot,
//!   the version in their label: [`crate::hsm::Token::set_floor`]).
//! - dev: a file in the signer's state directory (dev mode trusts its
//!   disk; it is insecure by design).
//! - nitro: in the enclave's memory only, so a restart forgets it: an
//!   enclave has no storage of its own that the host cannot replace (see
//!   SECURITY.md, "Rollback", for what still holds).
//!
//! This process is the one writer of its floors, so each floor is read
//! from where it is kept once and then answered from memory: a signature
//! checks several floors, and a token read costs a search of the token's
//! objects. Every raise is written through before it returns, with only
//! its own slot's lock held: a presignature spent, the audit trail's floor
//! raised and a share's floor checked do not wait for each other's token
//! writes.

use crate::hsm::{FloorObjects, HsmError, Token};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// Where a signer keeps its floors.
enum Kept {
    /// In the PKCS#11 token.
    Token(Arc<Token>),
    /// In a file of the state directory (dev), rewritten whole under the
    /// lock.
    File(PathBuf, Mutex<()>),
    /// Nowhere but memory (nitro).
    Memory,
}

/// This signer's floors: where they are kept, and those read or raised so
/// far, each behind its own lock. A slot's lock is held across a read or
/// write of its kept copy, so a check and a raise ([`Floors::take`]) have
/// nothing between them.
pub struct Floors {
    kept: Kept,
    slots: Mutex<HashMap<String, Arc<Mutex<Option<Known>>>>>,
}

/// How many passed-over versions a slot remembers (a pool holds at most
/// 1024 presignatures).
const MAX_PASSED: usize = 1024;

/// A slot's floor as read or last raised.
struct Known {
    floor: u32,
    /// Versions below the floor that no take used: passed over when a
    /// later one was taken first (concurrent requests reach the signer in
    /// any order). Each may still be taken once, in this run only: the
    /// kept floor is above them, so after a restart (or a failed write,
    /// which forgets this) they are refused.
    passed: BTreeSet<u32>,
    /// Where the token holds it: `Some` for token floors, read with the
    /// floor.
    objects: Option<FloorObjects>,
}

impl Floors {
    /// Floors in the token.
    pub fn token(token: Arc<Token>) -> Floors {
        Floors::kept(Kept::Token(token))
    }

    /// Floors in a dev signer's state directory.
    pub fn file(state_dir: &std::path::Path) -> Floors {
        Floors::kept(Kept::File(state_dir.join("version-floors.json"), Mutex::default()))
    }

    /// Floors in memory.
    pub fn memory() -> Floors {
        Floors::kept(Kept::Memory)
    }

    fn kept(kept: Kept) -> Floors {
        Floors { kept, slots: Mutex::default() }
    }

    /// Whether the floors are forgotten when this process ends (nitro).
    pub fn volatile(&self) -> bool {
        matches!(self.kept, Kept::Memory)
    }

    /// The floor of `slot` (a slot path): 0 if never raised.
    pub fn get(&self, slot: &str) -> Result<u32, FloorError> {
        let lock = self.slot(slot);
        let mut known = lock.lock().expect("floor lock");
        Ok(self.known(&mut known, slot)?.floor)
    }

    /// Raises the floor of `slot` to `version`; never lowers it.
    pub fn raise(&self, slot: &str, version: u32) -> Result<(), FloorError> {
        let lock = self.slot(slot);
        let mut known = lock.lock().expect("floor lock");
        self.raise_known(&mut known, slot, version)
    }

    /// Takes version `seq` of `slot` for one use: at or above the floor,
    /// the floor rises past it, durably, before this returns, and the
    /// versions it passed over stay takeable in this run; below the floor,
    /// only a version passed over so, once. Two takes of one version never
    /// both succeed, whatever the host serves or however often the signer
    /// restarts (nitro: within one run; see SECURITY.md).
    pub fn take(&self, slot: &str, seq: u32) -> Result<bool, FloorError> {
        let lock = self.slot(slot);
        let mut known = lock.lock().expect("floor lock");
        let from = {
            let known = self.known(&mut known, slot)?;
            if known.floor > seq {
                return Ok(known.passed.remove(&seq));
            }
            known.floor
        };
        self.raise_known(&mut known, slot, seq + 1)?;
        let passed = &mut known.as_mut().expect("raised above").passed;
        passed.extend(from.max(seq.saturating_sub(MAX_PASSED as u32))..seq);
        while passed.len() > MAX_PASSED {
            passed.pop_first();
        }
        Ok(true)
    }

    /// The lock of `slot`'s floor.
    fn slot(&self, slot: &str) -> Arc<Mutex<Option<Known>>> {
        let mut slots = self.slots.lock().expect("floor slots");
        match slots.get(slot) {
            Some(lock) => lock.clone(),
            None => slots.entry(slot.to_string()).or_default().clone(),
        }
    }

    /// `slot`'s floor, read from where it is kept if not known yet.
    fn known<'a>(&self, known: &'a mut Option<Known>, slot: &str) -> Result<&'a mut Known, FloorError> {
        if known.is_none() {
            *known = Some(match &self.kept {
                Kept::Token(token) => {
                    let objects = token.floor(&name(slot))?;
                    Known { floor: objects.value(), passed: BTreeSet::new(), objects: Some(objects) }
                }
                Kept::File(path, lock) => {
                    let _file = lock.lock().expect("floor file lock");
                    Known { floor: read(path)?.get(slot).copied().unwrap_or(0), passed: BTreeSet::new(), objects: None }
                }
                Kept::Memory => Known { floor: 0, passed: BTreeSet::new(), objects: None },
            });
        }
        Ok(known.as_mut().expect("read above"))
    }

    /// Raises `slot`'s floor to `version` where the floors are kept, if it
    /// is higher. A write that fails forgets what was known of the slot: it
    /// may have changed part of the kept copy, so the next use reads it
    /// again.
    fn raise_known(&self, known: &mut Option<Known>, slot: &str, version: u32) -> Result<(), FloorError> {
        let floor = self.known(known, slot)?;
        if floor.floor >= version {
            return Ok(());
        }
        let written = self.write(floor, slot, version);
        if written.is_err() {
            *known = None;
        }
        written
    }

    fn write(&self, known: &mut Known, slot: &str, version: u32) -> Result<(), FloorError> {
        match &self.kept {
            Kept::Token(token) => {
                let objects = known.objects.as_mut().expect("a token floor is read with its objects");
                token.set_floor(&name(slot), objects, version)?;
            }
            Kept::File(path, lock) => {
                let _file = lock.lock().expect("floor file lock");
                let mut all = read(path)?;
                all.insert(slot.to_string(), version);
                let file_error = |e: std::io::Error| FloorError::File { path: path.clone(), detail: e.to_string() };
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&all).expect("floors serialise")).map_err(file_error)?;
                std::fs::rename(&tmp, path).map_err(file_error)?;
            }
            Kept::Memory => {}
        }
        known.floor = version;
        Ok(())
    }
}

/// A floor's name in the token: slot paths are at most a few hundred bytes
/// of `[A-Za-z0-9_/-]`.
fn name(slot: &str) -> String {
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
    fn a_version_is_taken_once_in_any_order_and_a_restart_refuses_what_was_passed() {
        let d = tempfile::tempdir().unwrap();
        for floors in [Floors::file(d.path()), Floors::memory()] {
            assert!(floors.take("presig/w/p", 3).unwrap());
            assert!(!floors.take("presig/w/p", 3).unwrap(), "never twice");
            assert!(floors.take("presig/w/p", 5).unwrap());
            // 4 was passed over, never taken: once, later, out of order.
            assert!(floors.take("presig/w/p", 4).unwrap(), "passed over");
            assert!(!floors.take("presig/w/p", 4).unwrap(), "and then never again");
            assert!(floors.take("presig/w/p", 9).unwrap());
        }
        let restarted = Floors::file(d.path());
        assert!(!restarted.take("presig/w/p", 9).unwrap(), "a restart remembers");
        assert!(!restarted.take("presig/w/p", 7).unwrap(), "and refuses what the last run passed over");
        assert!(!restarted.take("presig/w/p", 2).unwrap(), "or passed over before that");
        // Racing takes of one version, at the floor or passed over: exactly
        // one wins.
        let floors = std::sync::Arc::new(Floors::memory());
        floors.take("presig/w/r", 5).unwrap();
        for (slot, seq) in [("presig/w/q", 1), ("presig/w/r", 3)] {
            let won: usize = std::thread::scope(|s| {
                let racers: Vec<_> = (0..8).map(|_| s.spawn(|| floors.take(slot, seq).unwrap())).collect();
                racers.into_iter().map(|r| r.join().unwrap() as usize).sum()
            });
            assert_eq!(won, 1, "{slot} {seq}");
        }
    }
}
