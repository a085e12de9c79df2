//! The audit trail's journal: the signer's entries as records of one
//! append-only file (`<blob root>/audit/journal`, layout in
//! `conclave_proto::store::journal_record`), so that a batch of entries
//! costs one write and one sync (a file per entry cost two syncs each and
//! a directory sync per batch, on the path of every signature).
//!
//! Versions only rise along the file. A batch that starts at or below the
//! last version (the signer writing again what a failed try left
//! uncommitted) cuts the journal there first. The file is opened for each
//! call (none before the first append: an empty trail) and read again
//! when its length is not the one last seen, so what is on disk is what
//! is served. A record that does not read (a crash
//! while appending, or damage) ends the journal. Reading changes nothing
//! (a backup may read while the host appends); the next append keeps the
//! bytes from it on aside in `journal.<offset>.damaged` and cuts them off,
//! and the signer, finding a shorter trail than its floor, declares the
//! gap.

use conclave_proto::link::{StoreError, StoredBlob};
use conclave_proto::store::{self, read_journal, JOURNAL_FILE};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Every this many records, one is remembered with its offset: a lookup
/// reads at most this many records.
const MARK_EVERY: u64 = 256;

/// The journal of one audit trail.
pub struct Journal {
    dir: PathBuf,
    file: PathBuf,
    state: Mutex<Option<State>>,
}

/// What is known of the file as last read or written.
#[derive(Default)]
struct State {
    /// Its length.
    len: u64,
    /// Where its whole records end (below `len` if its tail does not read).
    end: u64,
    /// The version and offset of every [`MARK_EVERY`]th record.
    marks: Vec<Mark>,
    /// The last record's version and offset.
    last: Option<(u32, u64)>,
    /// Records in it.
    count: u64,
}

#[derive(Clone, Copy)]
struct Mark {
    version: u32,
    offset: u64,
}

impl State {
    fn noted(&mut self, version: u32, offset: u64) {
        if self.count.is_multiple_of(MARK_EVERY) {
            self.marks.push(Mark { version, offset });
        }
        self.last = Some((version, offset));
        self.count += 1;
    }

    /// The mark to read from for `version`: the last one at or below it.
    fn from(&self, version: u32) -> Mark {
        let i = self.marks.partition_point(|m| m.version <= version);
        self.marks.get(i.wrapping_sub(1)).copied().unwrap_or(Mark { version: 0, offset: 0 })
    }
}

impl Journal {
    /// Opens the journal in `dir` (created by the first append), moving in
    /// the entries of a store written as a file per entry (earlier
    /// releases).
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let journal = Journal { dir: dir.to_path_buf(), file: dir.join(JOURNAL_FILE), state: Mutex::new(None) };
        journal.move_in_entry_files()?;
        Ok(journal)
    }

    /// The last entry.
    pub fn latest(&self) -> std::io::Result<Option<StoredBlob>> {
        self.with_state(|file, state| match (file, state.last) {
            (Some(file), Some((version, offset))) => read_at(file, offset).map(|sealed| Some(StoredBlob { version, sealed })),
            _ => Ok(None),
        })
    }

    /// Entry `version`, if held.
    pub fn get(&self, version: u32) -> std::io::Result<Option<StoredBlob>> {
        let mut found = None;
        self.read_from(version, &mut |blob| {
            if blob.version == version {
                found = Some(blob);
            }
            false
        })?;
        Ok(found)
    }

    /// Hands the entries from `version` on to `each`, in order, until it
    /// returns false.
    pub fn read_from(&self, version: u32, each: &mut dyn FnMut(StoredBlob) -> bool) -> std::io::Result<()> {
        self.with_state(|file, state| {
            let Some(file) = file else { return Ok(()) };
            let mark = state.from(version);
            file.seek(SeekFrom::Start(mark.offset))?;
            read_journal(&mut std::io::BufReader::new(file), state.end - mark.offset, &mut |_, v, sealed| {
                v < version || each(StoredBlob { version: v, sealed })
            })?;
            Ok(())
        })
    }

    /// Appends `blobs` (versions rising) with one write and one sync. With
    /// `replace`, the journal is first cut at the first of them; without, a
    /// version at or below the last is refused (`Exists` if it is held).
    pub fn append(&self, blobs: &[StoredBlob], replace: bool) -> Result<(), StoreError> {
        let Some(first) = blobs.first().map(|b| b.version) else { return Ok(()) };
        if blobs.windows(2).any(|w| w[0].version >= w[1].version) {
            return Err(StoreError::Io { detail: "audit entries must be written in rising order".into() });
        }
        let mut guard = self.state.lock().expect("journal lock");
        let mut file = self.open_file(&mut guard, true).map_err(io)?.expect("created");
        if guard.as_ref().expect("read above").last.is_some_and(|(last, _)| first <= last) {
            let at = offset_of(&mut file, guard.as_ref().expect("read above"), first).map_err(io)?;
            if !replace {
                return Err(match at {
                    Some((v, _)) if v == first => StoreError::Exists,
                    _ => StoreError::Io { detail: format!("audit entry {first} is below the journal's last entry") },
                });
            }
            // Cut, then read again (a rare path: a try that failed).
            if let Some((_, at)) = at {
                file.set_len(at).map_err(io)?;
                *guard = None;
                file = self.open_file(&mut guard, true).map_err(io)?.expect("created");
            }
        }
        let state = guard.as_mut().expect("read above");
        if state.end < state.len {
            self.set_aside(&mut file, state).map_err(io)?;
        }
        let mut bytes = Vec::new();
        let mut at = state.end;
        let mut appended = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let record = store::journal_record(blob.version, &blob.sealed);
            appended.push((blob.version, at));
            at += record.len() as u64;
            bytes.extend_from_slice(&record);
        }
        let written = file.seek(SeekFrom::Start(state.end)).and_then(|_| file.write_all(&bytes)).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Read again next time: what reached the disk is unknown.
            *guard = None;
            return Err(io(e));
        }
        for (version, offset) in appended {
            state.noted(version, offset);
        }
        (state.end, state.len) = (at, at);
        Ok(())
    }

    /// `read` with the file, opened (none before the first append), and
    /// what is known of it, read again if its length changed.
    fn with_state<T>(&self, read: impl FnOnce(Option<&mut std::fs::File>, &State) -> std::io::Result<T>) -> std::io::Result<T> {
        let mut guard = self.state.lock().expect("journal lock");
        let mut file = self.open_file(&mut guard, false)?;
        read(file.as_mut(), guard.as_ref().expect("read above"))
    }

    /// The file, opened (`create`d if missing), and its state read again if
    /// its length is not the one last seen.
    fn open_file(&self, state: &mut Option<State>, create: bool) -> std::io::Result<Option<std::fs::File>> {
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(&self.file) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                *state = Some(State::default());
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.create()?,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if state.as_ref().is_none_or(|s| s.len != len) {
            *state = Some(self.scan(&mut file, len)?);
        }
        Ok(Some(file))
    }

    /// Creates the journal, durably: the file and its name.
    fn create(&self) -> std::io::Result<std::fs::File> {
        std::fs::create_dir_all(&self.dir)?;
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&self.file)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        Ok(file)
    }

    /// Reads the whole journal. Changes nothing: a tail that is no whole
    /// record may be another process's append under way (a backup reads
    /// while the host writes); the host sets it aside before it appends.
    fn scan(&self, file: &mut std::fs::File, len: u64) -> std::io::Result<State> {
        let mut state = State { len, ..State::default() };
        file.seek(SeekFrom::Start(0))?;
        state.end = read_journal(&mut std::io::BufReader::new(&mut *file), len, &mut |offset, version, _| {
            state.noted(version, offset);
            true
        })?;
        Ok(state)
    }

    /// Moves the journal's tail that is no whole record (a crash while
    /// appending) aside, into `journal.<offset>.damaged`, and cuts it off.
    fn set_aside(&self, file: &mut std::fs::File, state: &mut State) -> std::io::Result<()> {
        let aside = self.dir.join(format!("{JOURNAL_FILE}.{}.damaged", state.end));
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(state.end))?;
        file.read_to_end(&mut tail)?;
        write_synced(&aside, &tail)?;
        file.set_len(state.end)?;
        file.sync_all()?;
        state.len = state.end;
        tracing::warn!(journal = %self.file.display(), at = state.end, kept = %aside.display(), "the audit journal ended in a record that does not read; its bytes from there on are kept aside");
        Ok(())
    }

    /// Moves the entries of an earlier release's store (a file per entry)
    /// into the journal: written and synced whole before any file goes, so
    /// that a journal beside entry files holds them all already.
    fn move_in_entry_files(&self) -> std::io::Result<()> {
        let mut files: Vec<(u32, PathBuf)> = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if let Some(version) = path.file_name().and_then(|n| n.to_str()).and_then(store::parse_blob_file_name) {
                files.push((version, path));
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        files.sort();
        if !self.file.exists() {
            let mut bytes = Vec::new();
            for (version, path) in &files {
                bytes.extend_from_slice(&store::journal_record(*version, &std::fs::read(path)?));
            }
            let tmp = self.dir.join(format!("{JOURNAL_FILE}.tmp"));
            write_synced(&tmp, &bytes)?;
            std::fs::rename(&tmp, &self.file)?;
            sync_dir(&self.dir)?;
            tracing::info!(entries = files.len(), journal = %self.file.display(), "audit entries moved into the journal");
        }
        for (_, path) in files {
            std::fs::remove_file(path)?;
        }
        sync_dir(&self.dir)
    }
}

/// The version and offset of the first record of `version` or later.
fn offset_of(file: &mut std::fs::File, state: &State, version: u32) -> std::io::Result<Option<(u32, u64)>> {
    let mark = state.from(version);
    let mut found = None;
    file.seek(SeekFrom::Start(mark.offset))?;
    read_journal(&mut std::io::BufReader::new(&mut *file), state.end - mark.offset, &mut |offset, v, _| {
        if v >= version {
            found = Some((v, mark.offset + offset));
        }
        found.is_none()
    })?;
    Ok(found)
}

/// The content of the record at `offset`.
fn read_at(file: &std::fs::File, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; store::JOURNAL_HEADER];
    file.read_exact_at(&mut header, offset)?;
    let parsed =
        store::JournalHeader::parse(&header).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "an audit journal record's header"))?;
    let mut content = vec![0u8; parsed.len];
    file.read_exact_at(&mut content, offset + store::JOURNAL_HEADER as u64)?;
    if !parsed.holds(&content) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "an audit journal record changed on disk"));
    }
    Ok(content)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io { detail: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u32, text: &str) -> StoredBlob {
        StoredBlob { version, sealed: text.as_bytes().to_vec() }
    }

    fn all(journal: &Journal) -> Vec<(u32, String)> {
        let mut found = Vec::new();
        journal
            .read_from(0, &mut |b| {
                found.push((b.version, String::from_utf8(b.sealed).unwrap()));
                true
            })
            .unwrap();
        found
    }

    /// Offsets of the records in the journal file.
    fn offsets(file: &Path) -> Vec<u64> {
        let bytes = std::fs::read(file).unwrap();
        let mut found = Vec::new();
        read_journal(&mut bytes.as_slice(), bytes.len() as u64, &mut |at, _, _| {
            found.push(at);
            true
        })
        .unwrap();
        found
    }

    #[test]
    fn a_batch_goes_in_whole_and_one_that_replaces_cuts_the_journal_where_it_begins() {
        let d = tempfile::tempdir().unwrap();
        let journal = Journal::open(d.path()).unwrap();
        assert!(journal.latest().unwrap().is_none());
        journal.append(&[entry(1, "a"), entry(2, "b"), entry(3, "c")], true).unwrap();
        assert_eq!(journal.get(2).unwrap().unwrap().sealed, b"b");
        assert_eq!(journal.latest().unwrap().unwrap().version, 3);
        // A try that failed is written again from 2: 3 is gone with it.
        journal.append(&[entry(2, "B")], true).unwrap();
        assert_eq!(all(&journal), vec![(1, "a".into()), (2, "B".into())]);
        assert!(journal.get(3).unwrap().is_none());
        // Without replace, nothing at or below the end goes in.
        assert_eq!(journal.append(&[entry(2, "x")], false), Err(StoreError::Exists));
        // A declared gap: 3 and 4 never reached the host.
        journal.append(&[entry(5, "e")], false).unwrap();
        assert!(matches!(journal.append(&[entry(4, "d")], false), Err(StoreError::Io { .. })));
        assert!(matches!(journal.append(&[entry(7, "g"), entry(6, "f")], true), Err(StoreError::Io { .. })), "out of order");
        let reopened = Journal::open(d.path()).unwrap();
        assert_eq!(all(&reopened), vec![(1, "a".into()), (2, "B".into()), (5, "e".into())]);
        assert!(reopened.get(4).unwrap().is_none());
    }

    #[test]
    fn lookups_and_cuts_find_their_record_among_many() {
        let d = tempfile::tempdir().unwrap();
        let journal = Journal::open(d.path()).unwrap();
        for batch in 0..20u32 {
            let entries: Vec<StoredBlob> = (1..=50).map(|i| batch * 50 + i).map(|v| entry(v, &v.to_string())).collect();
            journal.append(&entries, true).unwrap();
        }
        for v in [1, 256, 257, 513, 999, 1000] {
            assert_eq!(journal.get(v).unwrap().unwrap().sealed, v.to_string().as_bytes(), "{v}");
        }
        let mut from = Vec::new();
        journal
            .read_from(770, &mut |b| {
                from.push(b.version);
                from.len() < 3
            })
            .unwrap();
        assert_eq!(from, vec![770, 771, 772]);
        journal.append(&[entry(600, "cut here")], true).unwrap();
        assert_eq!(journal.latest().unwrap().unwrap().sealed, b"cut here");
        assert!(journal.get(601).unwrap().is_none());
        assert_eq!(journal.get(599).unwrap().unwrap().sealed, b"599");
        journal.append(&[entry(601, "after")], false).unwrap();
        assert_eq!(all(&Journal::open(d.path()).unwrap()).len(), 601);
    }

    #[test]
    fn a_record_cut_by_a_crash_ends_the_journal_and_its_bytes_are_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let journal = Journal::open(d.path()).unwrap();
        journal.append(&[entry(1, "a"), entry(2, "b")], true).unwrap();
        let torn = &store::journal_record(3, b"c, cut")[..10];
        std::fs::OpenOptions::new().append(true).open(d.path().join(JOURNAL_FILE)).unwrap().write_all(torn).unwrap();
        assert_eq!(journal.latest().unwrap().unwrap().version, 2);
        let file = d.path().join(JOURNAL_FILE);
        assert!(std::fs::read(&file).unwrap().ends_with(torn), "reading changes nothing (a backup may read while the host appends)");
        journal.append(&[entry(3, "c")], true).unwrap();
        let aside: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".damaged")).collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(&aside[0]).unwrap(), torn);
        assert_eq!(all(&Journal::open(d.path()).unwrap()), vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]);
    }

    #[test]
    fn a_journal_cut_on_disk_is_served_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let journal = Journal::open(d.path()).unwrap();
        journal.append(&[entry(1, "a"), entry(2, "b"), entry(3, "c")], true).unwrap();
        let file = d.path().join(JOURNAL_FILE);
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(offsets(&file)[2]).unwrap();
        assert_eq!(journal.latest().unwrap().unwrap().version, 2);
        assert!(journal.get(3).unwrap().is_none());
    }

    #[test]
    fn entries_of_an_earlier_release_move_into_the_journal() {
        let d = tempfile::tempdir().unwrap();
        for (v, text) in [(2, "b"), (1, "a"), (4, "d")] {
            std::fs::write(d.path().join(store::blob_file_name(v)), text).unwrap();
        }
        let journal = Journal::open(d.path()).unwrap();
        assert_eq!(all(&journal), vec![(1, "a".into()), (2, "b".into()), (4, "d".into())]);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(JOURNAL_FILE)]);
        // A move cut after the journal was in place: the files left are in it.
        std::fs::write(d.path().join(store::blob_file_name(4)), "d").unwrap();
        assert_eq!(all(&Journal::open(d.path()).unwrap()).len(), 3);
        assert!(!d.path().join(store::blob_file_name(4)).exists());
    }

    #[test]
    fn nothing_is_written_before_the_first_entry_and_a_journal_that_cannot_be_reached_fails() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("audit");
        let journal = Journal::open(&dir).unwrap();
        assert!(journal.latest().unwrap().is_none());
        assert!(journal.get(1).unwrap().is_none());
        assert!(!dir.exists(), "opened and read, nothing written");
        journal.append(&[entry(1, "a")], true).unwrap();
        // The trail's directory replaced by a file: an error, never a new trail.
        std::fs::rename(&dir, d.path().join("aside")).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        assert!(journal.latest().is_err());
        assert!(matches!(journal.append(&[entry(2, "b")], true), Err(StoreError::Io { .. })));
    }
}
