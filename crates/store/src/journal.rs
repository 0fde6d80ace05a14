//! The audit journal (`docs/format/audit.md`, "The audit journal"): where a group of read
//! audit records is committed with one sealed `write`, until the writer moves the records
//! into blocks and leaves of the database.
//!
//! Only the process holding the journal's exclusive lock uses it: its request threads
//! append, its writer thread takes what they appended and cuts the files.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::engine::{AuditReply, CheckpointSigner, PendingAudit};
use crate::sqlite::AUDIT_JOURNAL_RECORDS_MAX;
use crate::StoreError;

const VERSION: u8 = 1;
const HEADER: [u8; 8] = [b'M', b'V', b'A', b'J', VERSION, 0, 0, 0];
/// Length and sequence in front of each sealed frame.
const FRAME_HEAD_BYTES: usize = 12;
/// A frame longer than this is not one the writer made (a group's records are far fewer).
const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The `resource_type` in the sealed-record identity of a journal frame: not a FHIR type.
pub const AUDIT_JOURNAL_TYPE: &str = ":audit-journal";

/// Records staged from which the writer moves the journal without waiting: four fifths of
/// the limit, above what a second of reads stages at the rates this server sustains, so
/// the one-second moves stay the rule and the last fifth absorbs a move's duration.
const JOURNAL_MOVE_AT: usize = AUDIT_JOURNAL_RECORDS_MAX / 5 * 4;

/// The sealed-record `resource_key` of frame `sequence`.
pub fn frame_key(sequence: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The journal's two files for a database file: appends go to one while the writer moves
/// the other's records into the database.
pub fn journal_paths(database: &Path) -> [PathBuf; 2] {
    ["-audit-journal-a", "-audit-journal-b"].map(|suffix| {
        let mut name = database.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// The journal: shared by the threads that answer requests (they append) and the writer
/// (it moves records into the database and cuts the files).
#[derive(Debug)]
pub(crate) struct AuditJournal {
    state: std::sync::Mutex<JournalState>,
    /// The two files again, to sync without holding the state's lock (appends go on).
    sync_handles: [File; 2],
}

#[derive(Debug)]
struct JournalState {
    files: [JournalFile; 2],
    /// The file appends go to.
    active: usize,
    /// Records committed to the files and not yet taken by the writer, oldest first.
    staged: Vec<PendingAudit>,
    /// Frames sealed and waiting for the next write (`AuditJournal::write_out`).
    outbox: Outbox,
    /// The sequence of the last frame staged (or found).
    last_sequence: u64,
    /// The sequence of the last frame written to a file (or found).
    written: u64,
    /// The files held frames when they were opened, not yet read back.
    unrecovered: bool,
    /// Frames were written since the last [`AuditJournal::sync`].
    unsynced: bool,
}

#[derive(Debug)]
struct JournalFile {
    file: File,
    path: PathBuf,
    /// The highest sequence in the file (0: only the header).
    last_sequence: u64,
    /// Where the next frame goes (the file is opened for appending: writes go to its end).
    len: u64,
}

/// What staging did.
pub(crate) enum Staged {
    /// Sealed and queued for the next write, whose outcome goes to the reply. `notify`: the
    /// first record since the writer last synced or took them, or the one that filled four
    /// fifths of the journal: the writer must be told (it syncs within `AUDIT_SYNC_MS` and
    /// moves within `AUDIT_MOVE_MS`, at once when nearly full).
    Queued { notify: bool },
    /// Not staged: the journal holds `AUDIT_JOURNAL_RECORDS_MAX` records the database has not
    /// taken yet. The records and their reply come back, to go through the writer (which
    /// makes the caller wait for it).
    Full(Vec<PendingAudit>, AuditReply),
    /// Not staged: the frame could not be sealed.
    Failed(StoreError, AuditReply),
}

/// Frames sealed and not yet written: their bytes (in sequence order), their records and who
/// waits for them.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    records: Vec<PendingAudit>,
    replies: Vec<AuditReply>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("bytes", &self.bytes.len()).field("records", &self.records.len()).finish()
    }
}

/// Records the writer took from the journal, to put into the database.
#[derive(Debug)]
pub(crate) struct Taken {
    pub records: Vec<PendingAudit>,
    /// The last sequence they cover: `meta.audit_journal_seq` once they are in.
    pub sequence: u64,
}

impl AuditJournal {
    /// Opens (or creates) the journal of `database` and takes its lock; `None` when another
    /// process holds it (that process journals; this one commits its records directly).
    pub fn open(database: &Path) -> Result<Option<Self>, StoreError> {
        let paths = journal_paths(database);
        let first = open_file(&paths[0])?;
        match first.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io(format!("cannot lock the audit journal {}: {e}", paths[0].display())))
            }
        }
        let second = open_file(&paths[1])?;
        let mut files = [
            JournalFile { file: first, path: paths[0].clone(), last_sequence: 0, len: 0 },
            JournalFile { file: second, path: paths[1].clone(), last_sequence: 0, len: 0 },
        ];
        let mut damage = None;
        for file in &mut files {
            match file.scan() {
                Ok(()) => {}
                Err(reason) => damage = Some(reason),
            }
        }
        let active = usize::from(files[1].last_sequence > files[0].last_sequence);
        let last_sequence = files[0].last_sequence.max(files[1].last_sequence);
        let unrecovered = files.iter().any(|f| f.last_sequence > 0);
        let sync_handles = [files[0].file.try_clone(), files[1].file.try_clone()];
        let [Ok(first_handle), Ok(second_handle)] = sync_handles else {
            return Err(StoreError::Io("cannot open the audit journal a second time for syncing".into()));
        };
        let mut state = JournalState {
            files,
            active,
            staged: Vec::new(),
            outbox: Outbox::default(),
            last_sequence,
            written: last_sequence,
            unrecovered,
            unsynced: false,
        };
        if let Some(reason) = damage {
            state.set_aside(&reason)?;
        }
        Ok(Some(Self { state: std::sync::Mutex::new(state), sync_handles: [first_handle, second_handle] }))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, JournalState>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Frames from now on follow `moved`, the last one the database holds: a journal cut
    /// back to its header does not restart its sequence.
    pub fn continue_after(&self, moved: u64) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.last_sequence = state.last_sequence.max(moved);
        state.written = state.written.max(moved);
        Ok(())
    }

    /// Whether the writer has records to take.
    pub fn has_staged(&self) -> bool {
        self.lock().map(|state| !state.staged.is_empty() || state.unrecovered).unwrap_or(true)
    }

    /// Seals one request's (or group's) records as a frame and queues it for the next
    /// [`AuditJournal::write_out`], which commits it (one `write` for every frame queued,
    /// no sync) and then calls `reply`. Until then the records are not committed.
    pub fn stage(&self, records: Vec<PendingAudit>, reply: AuditReply, signer: &dyn CheckpointSigner) -> Staged {
        let plain = match encode_frame(&records) {
            Ok(plain) => plain,
            Err(error) => return Staged::Failed(error, reply),
        };
        let Ok(mut state) = self.lock() else { return Staged::Failed(StoreError::Poisoned, reply) };
        let held = state.staged.len() + state.outbox.records.len();
        if held + records.len() > AUDIT_JOURNAL_RECORDS_MAX {
            return Staged::Full(records, reply);
        }
        let sequence = state.last_sequence + 1;
        let sealed = match signer.seal_audit_journal(sequence, &plain) {
            Ok(sealed) => sealed,
            Err(e) => return Staged::Failed(StoreError::Crypto(format!("sealing an audit journal frame: {e}")), reply),
        };
        let Some(length) = u32::try_from(sealed.len()).ok().filter(|l| (*l as usize) <= FRAME_BYTES_MAX) else {
            return Staged::Failed(StoreError::Io("an audit journal frame is too long".into()), reply);
        };
        let added = records.len();
        let outbox = &mut state.outbox;
        outbox.bytes.reserve(FRAME_HEAD_BYTES + sealed.len());
        outbox.bytes.extend_from_slice(&length.to_be_bytes());
        outbox.bytes.extend_from_slice(&sequence.to_be_bytes());
        outbox.bytes.extend_from_slice(&sealed);
        outbox.records.extend(records);
        outbox.replies.push(reply);
        state.last_sequence = sequence;
        let was_empty = held == 0 && !state.unrecovered;
        let was_synced = !state.unsynced;
        let crossed = held < JOURNAL_MOVE_AT && held + added >= JOURNAL_MOVE_AT;
        state.unsynced = true;
        Staged::Queued { notify: was_empty || was_synced || crossed }
    }

    /// Writes every frame staged so far with one `write` (appends go to the end of the
    /// active file), then answers each frame's reply: `Ok`, or the error for all of them.
    /// On an error no partial frame stays behind and their sequences are reused.
    pub fn write_out(&self) -> Result<(), StoreError> {
        let (replies, result) = self.lock()?.write_staged();
        answer(replies, &result);
        result
    }

    /// Whether the journal holds (or has staged) four fifths of `AUDIT_JOURNAL_RECORDS_MAX`
    /// or more: the writer then moves it at once instead of waiting for `AUDIT_MOVE_MS`, so
    /// that a burst of reads rarely meets a full journal (whose records then wait for the
    /// writer).
    pub fn is_nearly_full(&self) -> bool {
        self.lock().map(|state| state.staged.len() + state.outbox.records.len() >= JOURNAL_MOVE_AT).unwrap_or(false)
    }

    /// Syncs to disk every frame written so far (power-loss safety). The state's lock is
    /// held only to note that; appends go on while the disk works.
    pub fn sync(&self) -> Result<(), StoreError> {
        // Frames staged and not yet written are committed first, under the same lock as
        // the note that all is being synced: a frame staged after it finds the journal
        // synced and tells the writer again. A failed write is its frames' callers' error;
        // what was written before is synced all the same.
        let (replies, written, unsynced) = {
            let mut state = self.lock()?;
            let (replies, written) = state.write_staged();
            (replies, written, std::mem::replace(&mut state.unsynced, false))
        };
        answer(replies, &written);
        if let Err(error) = &written {
            tracing::error!(%error, "staged audit records could not be committed to the journal; their accesses are refused");
        }
        if !unsynced {
            return Ok(());
        }
        let synced = self.sync_handles.iter().try_for_each(File::sync_data);
        if let Err(error) = synced {
            self.lock()?.unsynced = true;
            return Err(journal_io("sync", &error));
        }
        Ok(())
    }

    /// Whether frames were written since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.lock().map(|state| state.unsynced).unwrap_or(true)
    }

    /// Takes every record the journal holds that the database may not, oldest first. Frames
    /// found at open are read back first (after a crash); those at or below `moved`
    /// (`meta.audit_journal_seq`) are already in the database. Appends go on to the other
    /// file if it is empty, so that this one can be cut once the records are in.
    pub fn take(&self, moved: u64, signer: &dyn CheckpointSigner) -> Result<Option<Taken>, StoreError> {
        let mut state = self.lock()?;
        if state.unrecovered {
            match state.recover(moved, signer) {
                Ok(mut recovered) => {
                    if !recovered.is_empty() {
                        tracing::warn!(
                            records = recovered.len(),
                            "audit records committed to the journal before a crash are moved into the database"
                        );
                    }
                    recovered.append(&mut state.staged);
                    state.staged = recovered;
                    state.unrecovered = false;
                }
                Err(reason) => {
                    // Records appended since open are lost with the files: keep them.
                    let keep = std::mem::take(&mut state.staged);
                    state.set_aside(&reason)?;
                    state.staged = keep;
                }
            }
        }
        if state.staged.is_empty() {
            return Ok(None);
        }
        let other = 1 - state.active;
        if state.files[other].last_sequence == 0 {
            state.active = other;
        }
        Ok(Some(Taken { records: std::mem::take(&mut state.staged), sequence: state.written }))
    }

    /// The database could not take them: they go back in front, to be taken again.
    pub fn put_back(&self, taken: Taken) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        let mut records = taken.records;
        records.append(&mut state.staged);
        state.staged = records;
        Ok(())
    }

    /// The database holds (synced) every frame up to `moved`: cuts back to its header a file
    /// that appends no longer go to and whose frames are all in.
    pub fn settled(&self, moved: u64) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        let other = 1 - state.active;
        let file = &mut state.files[other];
        if file.last_sequence != 0 && file.last_sequence <= moved {
            file.file.set_len(HEADER.len() as u64).map_err(|e| journal_io("cut", &e))?;
            file.last_sequence = 0;
            file.len = HEADER.len() as u64;
        }
        Ok(())
    }
}

impl JournalState {
    /// Writes every staged frame (if any) and takes their replies, for the caller to answer
    /// once the lock is released.
    fn write_staged(&mut self) -> (Vec<AuditReply>, Result<(), StoreError>) {
        if self.outbox.bytes.is_empty() {
            return (Vec::new(), Ok(()));
        }
        let replies = std::mem::take(&mut self.outbox.replies);
        (replies, self.write_outbox())
    }

    /// Writes the outbox to the active file.
    fn write_outbox(&mut self) -> Result<(), StoreError> {
        let active = self.active;
        let file = &mut self.files[active];
        if let Err(error) = file.file.write_all(&self.outbox.bytes) {
            // Leave no partial frame behind a later one. The frames are dropped (their
            // accesses are refused), so the next frame takes the first one's sequence.
            let _ = file.file.set_len(file.len);
            self.outbox.bytes.clear();
            self.outbox.records.clear();
            self.last_sequence = self.written;
            return Err(journal_io("write", &error));
        }
        file.len += self.outbox.bytes.len() as u64;
        file.last_sequence = self.last_sequence;
        self.written = self.last_sequence;
        self.outbox.bytes.clear();
        self.staged.append(&mut self.outbox.records);
        Ok(())
    }

    fn recover(&mut self, moved: u64, signer: &dyn CheckpointSigner) -> Result<Vec<PendingAudit>, String> {
        let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
        for file in &mut self.files {
            file.frames(&mut frames)?;
        }
        frames.sort_by_key(|(sequence, _)| *sequence);
        let mut records = Vec::new();
        let mut expected = None;
        for (sequence, sealed) in frames {
            if sequence <= moved {
                continue;
            }
            // Between the frames found, none may be missing.
            if let Some(expected) = expected.filter(|e| sequence != *e) {
                return Err(format!("frame {sequence} does not follow frame {}", expected - 1));
            }
            expected = Some(sequence + 1);
            let plain = signer
                .open_audit_journal(sequence, &sealed)
                .map_err(|_| format!("frame {sequence} failed authentication"))?;
            records.extend(decode_frame(&plain).ok_or_else(|| format!("frame {sequence} is not a frame of records"))?);
        }
        Ok(records)
    }

    /// Renames damaged journal files aside (kept for investigation) and starts new ones.
    fn set_aside(&mut self, reason: &str) -> Result<(), StoreError> {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        for file in &mut self.files {
            let mut aside = file.path.clone().into_os_string();
            aside.push(format!(".damaged-{at}"));
            let aside = PathBuf::from(aside);
            tracing::error!(
                target: "medvault::security",
                journal = %aside.display(),
                "the audit journal was altered ({reason}); it is kept aside and a new one started"
            );
            std::fs::copy(&file.path, &aside).map_err(|e| journal_io("set aside", &e))?;
            file.file.set_len(0).and_then(|()| file.file.write_all(&HEADER)).map_err(|e| journal_io("create", &e))?;
            file.last_sequence = 0;
            file.len = HEADER.len() as u64;
        }
        self.staged.clear();
        self.unrecovered = false;
        Ok(())
    }
}

impl JournalFile {
    /// Checks the header and finds the last complete frame. A frame cut short at the end (a
    /// crash during its `write`, whose access was never answered) is cut off the file.
    fn scan(&mut self) -> Result<(), String> {
        let length = self.file.metadata().map_err(|e| format!("it cannot be read: {e}"))?.len();
        if length < HEADER.len() as u64 {
            // New, or cut during its creation: nothing was ever committed to it.
            self.file
                .set_len(0)
                .and_then(|()| self.file.write_all(&HEADER))
                .map_err(|e| format!("it cannot be written: {e}"))?;
            self.len = HEADER.len() as u64;
            return Ok(());
        }
        let mut header = [0u8; 8];
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_exact(&mut header))
            .map_err(|e| format!("it cannot be read: {e}"))?;
        if header != HEADER {
            return Err(format!("its header is not that of a version {VERSION} journal"));
        }
        let mut at = HEADER.len() as u64;
        let mut head = [0u8; FRAME_HEAD_BYTES];
        while length - at >= FRAME_HEAD_BYTES as u64 {
            self.file
                .seek(SeekFrom::Start(at))
                .and_then(|_| self.file.read_exact(&mut head))
                .map_err(|e| format!("it cannot be read: {e}"))?;
            let (sealed_length, sequence) = frame_head_unchecked(&head);
            let end = at + FRAME_HEAD_BYTES as u64 + sealed_length as u64;
            if sealed_length > FRAME_BYTES_MAX || end > length {
                break;
            }
            if sequence <= self.last_sequence {
                return Err(format!("frame {sequence} follows frame {}", self.last_sequence));
            }
            self.last_sequence = sequence;
            at = end;
        }
        if at < length {
            tracing::warn!(
                bytes = length - at,
                "the audit journal ends with a frame cut short by a crash; it is dropped"
            );
            self.file.set_len(at).map_err(|e| format!("it cannot be cut: {e}"))?;
        }
        self.len = at;
        Ok(())
    }

    /// Every frame of the file: (sequence, sealed bytes).
    fn frames(&mut self, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), String> {
        let mut bytes = Vec::new();
        self.file
            .seek(SeekFrom::Start(HEADER.len() as u64))
            .and_then(|_| self.file.read_to_end(&mut bytes))
            .map_err(|e| format!("it cannot be read: {e}"))?;
        let mut at = 0usize;
        while at < bytes.len() {
            let (length, sequence) = frame_head(&bytes[at..]).ok_or("a frame is cut short")?;
            out.push((sequence, bytes[at + FRAME_HEAD_BYTES..at + FRAME_HEAD_BYTES + length].to_vec()));
            at += FRAME_HEAD_BYTES + length;
        }
        Ok(())
    }
}

fn open_file(path: &Path) -> Result<File, StoreError> {
    // Appending: every write goes to the end, whatever a read moved the cursor to.
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| StoreError::Io(format!("cannot open the audit journal {}: {e}", path.display())))
}

fn frame_head_unchecked(head: &[u8; FRAME_HEAD_BYTES]) -> (usize, u64) {
    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&head[4..12]);
    (length, u64::from_be_bytes(sequence))
}

fn frame_head(bytes: &[u8]) -> Option<(usize, u64)> {
    let head: &[u8; FRAME_HEAD_BYTES] = bytes.get(..FRAME_HEAD_BYTES)?.try_into().ok()?;
    let (length, sequence) = frame_head_unchecked(head);
    (bytes.len() - FRAME_HEAD_BYTES >= length).then_some((length, sequence))
}

fn encode_frame(records: &[PendingAudit]) -> Result<Vec<u8>, StoreError> {
    let too_many = || StoreError::Io("an audit journal frame cannot hold this group".into());
    let size = 4 + records.iter().map(|r| 14 + 32 * r.patients.len() + r.record.len()).sum::<usize>();
    let mut plain = Vec::with_capacity(size);
    plain.extend_from_slice(&u32::try_from(records.len()).map_err(|_| too_many())?.to_be_bytes());
    for record in records {
        plain.extend_from_slice(&record.recorded_ms.to_be_bytes());
        plain.extend_from_slice(&u16::try_from(record.patients.len()).map_err(|_| too_many())?.to_be_bytes());
        for patient in &record.patients {
            plain.extend_from_slice(patient);
        }
        plain.extend_from_slice(&u32::try_from(record.record.len()).map_err(|_| too_many())?.to_be_bytes());
        plain.extend_from_slice(&record.record);
    }
    Ok(plain)
}

fn decode_frame(plain: &[u8]) -> Option<Vec<PendingAudit>> {
    fn take<'a>(plain: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
        let slice = plain.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(slice)
    }
    let mut at = 0;
    let count = u32::from_be_bytes(take(plain, &mut at, 4)?.try_into().ok()?);
    let mut records = Vec::with_capacity(usize::try_from(count).ok()?.min(65_536));
    for _ in 0..count {
        let recorded_ms = i64::from_be_bytes(take(plain, &mut at, 8)?.try_into().ok()?);
        let patients = u16::from_be_bytes(take(plain, &mut at, 2)?.try_into().ok()?);
        let patients = (0..patients)
            .map(|_| take(plain, &mut at, 32).and_then(|p| p.try_into().ok()))
            .collect::<Option<Vec<[u8; 32]>>>()?;
        let length = usize::try_from(u32::from_be_bytes(take(plain, &mut at, 4)?.try_into().ok()?)).ok()?;
        let record = take(plain, &mut at, length)?.to_vec();
        records.push(PendingAudit { recorded_ms, patients, record });
    }
    (at == plain.len()).then_some(records)
}

/// Tells each staged frame's caller how its `write` went (outside the journal's lock).
fn answer(replies: Vec<AuditReply>, result: &Result<(), StoreError>) {
    for reply in replies {
        reply(result.clone());
    }
}

fn journal_io(what: &str, error: &std::io::Error) -> StoreError {
    StoreError::Io(format!("audit journal ({what}): {error}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_frame_round_trips_and_rejects_trailing_bytes() {
        let records = vec![
            PendingAudit { recorded_ms: -5, patients: vec![[7u8; 32], [9u8; 32]], record: b"one".to_vec() },
            PendingAudit { recorded_ms: 1_700_000_000_000, patients: vec![], record: Vec::new() },
        ];
        let plain = encode_frame(&records).expect("encode");
        let decoded = decode_frame(&plain).expect("decode");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].patients, records[0].patients);
        assert_eq!(decoded[0].record, b"one");
        assert_eq!(decoded[1].recorded_ms, 1_700_000_000_000);
        let mut longer = plain.clone();
        longer.push(0);
        assert!(decode_frame(&longer).is_none());
        assert!(decode_frame(&plain[..plain.len() - 1]).is_none());
        assert_eq!(&HEADER[..4], b"MVAJ");
    }

    /// Seals nothing: enough to drive `append` (recovery's opening is tested through the
    /// store, `tests/audit.rs` and the CLI's kill test).
    #[derive(Debug)]
    struct PlainSigner;

    impl CheckpointSigner for PlainSigner {
        fn sign(&self, _: u64, _: &[u8; 32]) -> Result<String, String> {
            Err("unused".into())
        }

        fn seal_audit_journal(&self, _: u64, frame: &[u8]) -> Result<Vec<u8>, String> {
            Ok(frame.to_vec())
        }

        fn open_audit_journal(&self, _: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
            Ok(sealed.to_vec())
        }
    }

    fn records(count: usize) -> Vec<PendingAudit> {
        (0..count).map(|_| PendingAudit { recorded_ms: 1, patients: vec![], record: b"r".to_vec() }).collect()
    }

    /// Stages `records` with a reply that counts its calls; `Some(notify)` when queued.
    fn stage(journal: &AuditJournal, records: Vec<PendingAudit>, answered: &Arc<AtomicUsize>) -> Option<bool> {
        let answered = answered.clone();
        let reply: AuditReply = Box::new(move |result| {
            assert!(result.is_ok(), "{result:?}");
            answered.fetch_add(1, Ordering::SeqCst);
        });
        match journal.stage(records, reply, &PlainSigner) {
            Staged::Queued { notify } => Some(notify),
            Staged::Full(..) => None,
            Staged::Failed(error, _) => panic!("staging failed: {error}"),
        }
    }

    #[test]
    fn the_writer_is_told_first_after_a_sync_and_when_nearly_full() {
        let dir = medvault_testkit::TempDir::new("journal-nearly-full");
        let journal = AuditJournal::open(&dir.path().join("medvault.db")).expect("open").expect("lock");
        let answered = Arc::new(AtomicUsize::new(0));
        assert_eq!(stage(&journal, records(1), &answered), Some(true));
        assert_eq!(stage(&journal, records(1), &answered), Some(false));
        journal.sync().expect("sync");
        assert!(!journal.has_unsynced());
        assert_eq!(answered.load(Ordering::SeqCst), 2, "the sync wrote the staged frames first");
        assert_eq!(stage(&journal, records(1), &answered), Some(true), "unsynced again");
        assert!(!journal.is_nearly_full());
        assert_eq!(stage(&journal, records(JOURNAL_MOVE_AT - 4), &answered), Some(false));
        assert_eq!(stage(&journal, records(1), &answered), Some(true), "crossed four fifths");
        assert!(journal.is_nearly_full(), "counting the frames staged and not yet written");
        assert_eq!(stage(&journal, records(1), &answered), Some(false));
        journal.write_out().expect("write");
        assert_eq!(answered.load(Ordering::SeqCst), 6);
        let taken = journal.take(0, &PlainSigner).expect("take").expect("records");
        assert_eq!(taken.records.len(), JOURNAL_MOVE_AT + 1);
        assert_eq!(taken.sequence, 6);
        assert!(!journal.is_nearly_full());
        assert_eq!(stage(&journal, records(AUDIT_JOURNAL_RECORDS_MAX + 1), &answered), None, "over the limit");
    }

    #[test]
    fn one_write_commits_every_staged_frame_and_the_writer_takes_only_written_ones() {
        let dir = medvault_testkit::TempDir::new("journal-group-write");
        let path = dir.path().join("medvault.db");
        let journal = AuditJournal::open(&path).expect("open").expect("lock");
        let answered = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            stage(&journal, records(2), &answered).expect("queued");
        }
        let file = &journal_paths(&path)[0];
        let header_only = HEADER.len() as u64;
        assert_eq!(std::fs::metadata(file).expect("file").len(), header_only, "nothing written yet");
        assert_eq!(answered.load(Ordering::SeqCst), 0, "no reply before the write");
        assert!(journal.take(0, &PlainSigner).expect("take").is_none(), "staged records are not committed");
        journal.write_out().expect("write");
        assert_eq!(answered.load(Ordering::SeqCst), 3);
        let written = std::fs::metadata(file).expect("file").len();
        assert!(written > header_only);
        journal.write_out().expect("nothing to write");
        assert_eq!(std::fs::metadata(file).expect("file").len(), written);
        stage(&journal, records(1), &answered).expect("queued");
        let taken = journal.take(0, &PlainSigner).expect("take").expect("records");
        assert_eq!((taken.records.len(), taken.sequence), (6, 3), "only what was written");
        drop(journal);
        // Reopened: the three written frames follow each other; the staged one is gone (its
        // access was never answered).
        let reopened = AuditJournal::open(&path).expect("open").expect("lock");
        let recovered = reopened.take(0, &PlainSigner).expect("take").expect("records");
        assert_eq!((recovered.records.len(), recovered.sequence), (6, 3));
    }
}
