//! The embedded engine: SQLite in WAL mode, every write synced before its reply (the
//! writer syncs the WAL itself, see `sync_wal`), one writer thread that
//! group-commits queued jobs (many writes share one sync), and a pool of readers.
//!
//! Architecture invariant: only the writer thread writes. Each job runs inside its own
//! savepoint of the group's transaction, so a job that conflicts rolls back alone; the
//! group's `COMMIT` is the durability point and every reply is sent after it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use medvault_base::limits::{
    GROUP_COMMIT_JOBS_MAX, GROUP_COMMIT_VERSIONS_MAX, SEARCH_PENDING_DOCS_MAX, SEARCH_POST_DELAY_MS,
    SEARCH_POST_SLICE_ENTRIES_MAX, WRITE_QUEUE_JOBS_MAX,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::audit_index::{self, AuditIndexEntry};
use crate::engine::*;
use crate::journal::{AuditJournal, Staged, Taken};
use crate::search::pending::{self, PendingIndex, Stamp};
use crate::StoreError;

pub const DATABASE_FILE: &str = "medvault.db";
/// Schema version stored in `meta.format_version`; see `docs/format/store-schema.md`.
pub const SCHEMA_VERSION: &str = "6";
/// Reader connections kept open; more are opened under load and closed after.
const READERS_MAX: usize = 64;
/// Page cache of the writer connection (readers keep SQLite's 32 MiB setting below).
const WRITER_CACHE_KIB: u32 = 256 * 1024;
/// WAL pages before an automatic checkpoint (SQLite's default is 1,000).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
const BUSY_TIMEOUT_MS: u64 = 10_000;
/// Longest time a committed audit record of a read waits for a sync (power-loss safety).
pub const AUDIT_SYNC_MS: u64 = 100;
/// Longest time a read's audit record stays in the audit journal before the writer moves it
/// into the database's blocks, index and ledger (with the next write if that is sooner). Each
/// move costs about one index page per patient read since the last: fewer, larger moves
/// cost less per record.
pub const AUDIT_MOVE_MS: u64 = 1_000;
/// Records in one audit block made from the audit journal: a report that needs one record
/// opens a small block.
pub const AUDIT_JOURNAL_BLOCK_RECORDS: usize = 256;
/// Records the audit journal holds before the database takes them; beyond, records go
/// through the writer, which takes the journal's first and makes their callers wait.
pub const AUDIT_JOURNAL_RECORDS_MAX: usize = 50_000;

/// How often another process's commits are looked for (see `SqliteEngine::change_marker`).
pub const CHANGE_POLL_MS: u64 = 50;

/// See [`SqliteEngine::change_marker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMarker {
    commits: u64,
    generation: i64,
}

const SCHEMA: &str = "
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE keys (
    key_id       INTEGER PRIMARY KEY,
    purpose      INTEGER NOT NULL,
    compartment  BLOB UNIQUE,
    wrapped      BLOB,
    created_ms   INTEGER NOT NULL,
    destroyed_ms INTEGER
);
CREATE TABLE resources (
    resource_key  BLOB PRIMARY KEY,
    resource_type TEXT NOT NULL,
    version       INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    seq           INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE versions (
    seq           INTEGER PRIMARY KEY, -- the version's ledger leaf index: global order and ledger position
    resource_key  BLOB NOT NULL,
    resource_type TEXT NOT NULL,
    version       INTEGER NOT NULL,
    key_id        INTEGER NOT NULL,
    recorded_ms   INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    sealed        BLOB NOT NULL,
    author        TEXT NOT NULL,
    UNIQUE (resource_key, version)
);
CREATE TABLE ledger_nodes (
    level      INTEGER NOT NULL,
    node_index INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    PRIMARY KEY (level, node_index)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX versions_by_type ON versions (resource_type, seq);
CREATE TABLE tokens (
    digest     BLOB PRIMARY KEY,
    client     TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    scopes     TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
";

/// Format version 2: accounts, sessions and the care relationships that authorize them
/// (`docs/format/accounts.md`). Applied to new stores after `SCHEMA`, and to version-1
/// stores when they are opened.
const SCHEMA_V2: &str = "
CREATE TABLE users (
    user_id           INTEGER PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    role              TEXT NOT NULL,
    fhir_user         TEXT,
    scopes            TEXT NOT NULL,
    password          TEXT NOT NULL,
    mfa_required      INTEGER NOT NULL,
    mfa_wrapped       BLOB,
    mfa_epoch         INTEGER NOT NULL DEFAULT 0,
    mfa_last_step     INTEGER,
    failures          INTEGER NOT NULL DEFAULT 0,
    last_failure_ms   INTEGER,
    locked            INTEGER NOT NULL DEFAULT 0,
    disabled_ms       INTEGER,
    sessions_after_ms INTEGER NOT NULL DEFAULT 0,
    created_ms        INTEGER NOT NULL
);
CREATE TABLE recovery_codes (
    user_id INTEGER NOT NULL,
    digest  BLOB NOT NULL,
    used_ms INTEGER,
    PRIMARY KEY (user_id, digest)
) WITHOUT ROWID;
CREATE TABLE sessions (
    digest       BLOB PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    scopes       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    idle_ms      INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE TABLE care_links (
    practitioner BLOB NOT NULL,
    patient      BLOB NOT NULL,
    source       BLOB NOT NULL,
    PRIMARY KEY (practitioner, patient, source)
) WITHOUT ROWID;
CREATE INDEX care_links_by_source ON care_links (source);
CREATE TABLE assignments (
    user_id    INTEGER NOT NULL,
    patient    BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (user_id, patient)
) WITHOUT ROWID;
CREATE TABLE break_glass (
    grant_id   INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    patient    BLOB NOT NULL,
    sealed     BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    reviewed_ms INTEGER,
    reviewer   TEXT,
    decision   TEXT
);
CREATE INDEX break_glass_by_user ON break_glass (user_id, patient, expires_ms);
CREATE TABLE service_clients (
    client_id   TEXT PRIMARY KEY,
    jwks        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    disabled_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE assertion_ids (
    client_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
";

/// Format version 3: the audit trail (`docs/format/audit.md`): sealed blocks of audit
/// records, each a ledger leaf, and the index by patient.
const SCHEMA_V3: &str = "
CREATE TABLE audit_blocks (
    seq      INTEGER PRIMARY KEY,
    first_ms INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    sealed   BLOB NOT NULL
);
CREATE INDEX audit_blocks_by_time ON audit_blocks (last_ms);
CREATE TABLE IF NOT EXISTS audit_canaries (
    patient    BLOB PRIMARY KEY,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE audit_by_patient (
    patient     BLOB NOT NULL,
    recorded_ms INTEGER NOT NULL,
    block       INTEGER NOT NULL,
    slot        INTEGER NOT NULL,
    PRIMARY KEY (patient, recorded_ms, block, slot)
) WITHOUT ROWID;
";

/// Format version 4: the search index (`docs/format/index-token.md`): keyed tokens and the
/// rows that have them, and each indexed resource's tokens per generation.
const SCHEMA_V4: &str = "
CREATE TABLE search_entries (
    token BLOB NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (token, rid)
) WITHOUT ROWID;
CREATE TABLE search_docs (
    gen    INTEGER NOT NULL,
    rid    INTEGER NOT NULL,
    tokens BLOB NOT NULL,
    PRIMARY KEY (gen, rid)
) WITHOUT ROWID;
";

/// Format version 6: documents whose tokens are not posted to `search_entries` yet
/// (`docs/format/index-token.md`, *Pending documents and posting*).
const SCHEMA_V6: &str = "
CREATE TABLE IF NOT EXISTS search_pending (
    gen     INTEGER NOT NULL,
    rid     INTEGER NOT NULL,
    posting INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (gen, rid)
) WITHOUT ROWID;
";

/// Brings a version-1 store to version 2 (adds tables; rewrites nothing).
const MIGRATE_V1_TO_V2: &str = "ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';";

/// A small write of the accounts tables, run by the writer inside its own savepoint.
pub(crate) type Statement = Box<dyn FnOnce(&Connection) -> Result<i64, StoreError> + Send>;

enum WriterJob {
    Versions(VersionJob, Sender<Result<Result<VersionReceipt, JobConflict>, StoreError>>),
    Exec(Option<Statement>, Sender<Result<i64, StoreError>>),
    /// Audit records of reads and refusals: committed in the group's audit block, without
    /// waiting for a sync of their own (`docs/format/audit.md`, durability).
    Audit(Vec<PendingAudit>, Option<AuditReply>),
    InsertToken(TokenRow, Sender<Result<(), StoreError>>),
    RevokeTokens(String, i64, Sender<Result<u64, StoreError>>),
    /// Moves what the audit journal holds into the database (before an audit query).
    Flush(Sender<Result<(), StoreError>>),
    /// The audit journal got its first record since the writer last synced or took them:
    /// sync them within `AUDIT_SYNC_MS`, take them within `AUDIT_MOVE_MS`.
    Nudge,
}

impl WriterJob {
    fn version_count(&self) -> usize {
        match self {
            WriterJob::Versions(job, _) => job.versions.len(),
            WriterJob::Audit(records, _) => records.len(),
            _ => 1,
        }
    }
}

type SharedSigner = std::sync::Arc<Mutex<Option<std::sync::Arc<dyn CheckpointSigner>>>>;

#[derive(Debug)]
pub struct SqliteEngine {
    path: PathBuf,
    signer: SharedSigner,
    readers: Mutex<Vec<Connection>>,
    /// A connection that only reads `meta.data_generation`, which every commit that changes
    /// more than the audit trail increments (in this process or another). Polled at most
    /// every `CHANGE_POLL_MS`, with the time of the last poll.
    watch: Mutex<(Connection, i64, Option<std::time::Instant>)>,
    /// Group commits of this process's writer, counted before any of their replies.
    commits: std::sync::Arc<AtomicU64>,
    writer: Mutex<Option<SyncSender<WriterJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The audit journal, if this process holds its lock (`docs/format/audit.md`).
    journal: Option<std::sync::Arc<AuditJournal>>,
    /// The writer's copy of the pending search documents, for searches.
    pending: std::sync::Arc<PendingIndex>,
}

impl SqliteEngine {
    /// Creates a new database file with the schema, `meta` rows and first keys, atomically.
    pub fn create(path: &Path, meta: &[(&str, Vec<u8>)], keys: &[NewKey]) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::AlreadyExists(path.display().to_string()));
        }
        let mut connection = open_connection(path, true)?;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute_batch(SCHEMA)?;
        transaction.execute_batch(SCHEMA_V2)?;
        transaction.execute_batch(SCHEMA_V3)?;
        transaction.execute_batch(SCHEMA_V4)?;
        audit_index::migrate_from_v4(&transaction)?;
        transaction.execute_batch(SCHEMA_V6)?;
        transaction
            .execute("INSERT INTO meta (name, value) VALUES ('format_version', ?1)", [SCHEMA_VERSION.as_bytes()])?;
        for (name, value) in meta {
            transaction.execute("INSERT INTO meta (name, value) VALUES (?1, ?2)", params![name, value])?;
        }
        for key in keys {
            insert_key(&transaction, key)?;
        }
        transaction.commit()?;
        drop(connection);
        Self::open(path)
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        migrate(path)?;
        let reader = open_reader(path)?;
        let version: Option<Vec<u8>> = reader
            .query_row("SELECT value FROM meta WHERE name = 'format_version'", [], |row| row.get(0))
            .optional()
            .map_err(|_| StoreError::NotAStore(path.display().to_string()))?;
        if version.as_deref() != Some(SCHEMA_VERSION.as_bytes()) {
            return Err(StoreError::UnsupportedFormat(
                version.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_else(|| "none".into()),
            ));
        }
        let writer_connection = open_connection(path, false)?;
        // The writer's inserts land at random places in the keyed indexes, so it keeps a
        // larger page cache than readers; fewer, larger WAL checkpoints keep imports steady.
        // The writer commits with `synchronous = NORMAL` and syncs the WAL itself after every
        // commit that must be durable before its reply (`sync_wal`): a group of read audit
        // records alone needs no sync of its own, and switching the pragma per group would
        // empty the writer's page cache each time.
        writer_connection.execute_batch(&format!(
            "PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};
             PRAGMA synchronous = NORMAL;"
        ))?;
        let wal_path = wal_path_of(path);
        let (sender, receiver) = mpsc::sync_channel(WRITE_QUEUE_JOBS_MAX);
        let signer: SharedSigner = std::sync::Arc::new(Mutex::new(None));
        let writer_signer = signer.clone();
        let commits = std::sync::Arc::new(AtomicU64::new(0));
        let writer_commits = commits.clone();
        let journal = AuditJournal::open(path)?.map(std::sync::Arc::new);
        let writer_journal = journal.clone();
        let pending = std::sync::Arc::new(PendingIndex::default());
        let writer_pending = pending.clone();
        let writer_thread = std::thread::Builder::new()
            .name("medvault-writer".into())
            .spawn(move || {
                let context =
                    WriterContext { signer: writer_signer, commits: writer_commits, wal_path, pending: writer_pending };
                writer_loop(writer_connection, receiver, context, writer_journal)
            })
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            signer,
            readers: Mutex::new(vec![reader]),
            watch: Mutex::new((open_connection(path, false)?, 0, None)),
            commits,
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(writer_thread)),
            journal,
            pending,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_reader<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_reader(&self.path)?,
        };
        let result = read(&connection);
        let mut readers = self.readers.lock().map_err(|_| StoreError::Poisoned)?;
        if readers.len() < READERS_MAX {
            readers.push(connection);
        }
        result
    }

    fn submit<T>(&self, make: impl FnOnce(Sender<Result<T, StoreError>>) -> WriterJob) -> Result<T, StoreError> {
        let (reply, receive) = mpsc::channel();
        let sender = self.writer.lock().map_err(|_| StoreError::Poisoned)?.clone().ok_or(StoreError::Closed)?;
        sender.send(make(reply)).map_err(|_| StoreError::Closed)?;
        receive.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `statement` on the writer, in its own savepoint of a group commit; returns
    /// after the group is durable.
    pub(crate) fn execute(&self, statement: Statement) -> Result<i64, StoreError> {
        self.submit(|reply| WriterJob::Exec(Some(statement), reply))
    }

    /// A marker that changes when this process's writer commits a change of more than the
    /// audit trail (at once: it is counted before the commit's replies) and when another
    /// process does (seen within `CHANGE_POLL_MS`, through `meta.data_generation`): caches
    /// derived from stored rows are valid while it stays the same. Moving audit records
    /// into the database changes nothing such a cache holds, so it leaves the marker alone.
    pub(crate) fn change_marker(&self) -> Result<ChangeMarker, StoreError> {
        let commits = self.commits.load(Ordering::SeqCst);
        let mut watch = self.watch.lock().map_err(|_| StoreError::Poisoned)?;
        let fresh = watch.2.is_some_and(|at| at.elapsed() < std::time::Duration::from_millis(CHANGE_POLL_MS));
        if !fresh {
            let generation: Option<i64> = watch
                .0
                .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'data_generation'")?
                .query_row([], |row| row.get(0))
                .optional()?;
            watch.1 = generation.unwrap_or(0);
            watch.2 = Some(std::time::Instant::now());
        }
        Ok(ChangeMarker { commits, generation: watch.1 })
    }

    /// Commits audit records: to the audit journal with one `write` on the caller's thread
    /// (or through the writer's next group commit); `reply` gets the outcome once they are
    /// committed, or the error (then the access must not be answered).
    pub(crate) fn submit_audit(&self, records: Vec<PendingAudit>, reply: AuditReply) -> Result<(), StoreError> {
        self.stage_audit(records, reply)?;
        self.write_staged_audit();
        Ok(())
    }

    /// [`SqliteEngine::submit_audit`] without the `write`: with a journal, the records wait,
    /// sealed, for the next [`SqliteEngine::write_staged_audit`] of any thread (or the
    /// writer's sync, within `AUDIT_SYNC_MS`), so that the frames of requests answered
    /// together are committed with one `write`.
    pub(crate) fn stage_audit(&self, records: Vec<PendingAudit>, reply: AuditReply) -> Result<(), StoreError> {
        let sender = || self.writer.lock().map_err(|_| StoreError::Poisoned)?.clone().ok_or(StoreError::Closed);
        let signer = self.signer.lock().map_err(|_| StoreError::Poisoned)?.clone();
        match (&self.journal, signer) {
            (Some(journal), Some(signer)) if !signer.danger_skips_ledger() => {
                #[cfg(feature = "fault-injection")]
                if FAIL_AUDIT.load(Ordering::SeqCst) {
                    reply(Err(StoreError::Io("audit storage failure (injected)".into())));
                    return Ok(());
                }
                match journal.stage(records, reply, &*signer) {
                    Staged::Queued { notify } => {
                        // The writer syncs the records within AUDIT_SYNC_MS and takes them
                        // within AUDIT_MOVE_MS; when its queue is full it is busy, and every
                        // commit of its takes them anyway.
                        if notify {
                            if let Ok(sender) = sender() {
                                let _ = sender.try_send(WriterJob::Nudge);
                            }
                        }
                    }
                    // The database is behind: these records go through the writer, which
                    // takes the journal's first and makes this caller wait its turn.
                    Staged::Full(records, reply) => {
                        return sender()?.send(WriterJob::Audit(records, Some(reply))).map_err(|_| StoreError::Closed)
                    }
                    Staged::Failed(error, reply) => {
                        tracing::error!(%error, "audit records could not be committed to the journal; their accesses are refused");
                        reply(Err(error));
                    }
                }
                Ok(())
            }
            _ => sender()?.send(WriterJob::Audit(records, Some(reply))).map_err(|_| StoreError::Closed),
        }
    }

    /// Commits every audit frame staged so far with one `write`, and answers their replies.
    pub(crate) fn write_staged_audit(&self) {
        if let Some(journal) = &self.journal {
            if let Err(error) = journal.write_out() {
                tracing::error!(%error, "audit records could not be committed to the journal; their accesses are refused");
            }
        }
    }

    /// Moves the audit records this process's journal holds into the database, so a query
    /// that follows sees every record committed before it.
    pub(crate) fn flush_audit(&self) -> Result<(), StoreError> {
        self.submit(WriterJob::Flush)
    }

    /// Runs a read on a pooled reader connection.
    pub(crate) fn query<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.with_reader(read)
    }

    /// The writer's copy of the pending search documents' tokens.
    pub(crate) fn pending_index(&self) -> &PendingIndex {
        &self.pending
    }

    /// Stops the writer after it finishes queued jobs.
    pub fn close(&self) {
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        if let Ok(mut thread) = self.writer_thread.lock() {
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for SqliteEngine {
    fn drop(&mut self) {
        self.close();
    }
}

/// Upgrades an older store in place, in one transaction: a crash leaves it as it was.
fn migrate(path: &Path) -> Result<(), StoreError> {
    let mut connection = open_connection(path, false)?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: Option<Vec<u8>> = transaction
        .query_row("SELECT value FROM meta WHERE name = 'format_version'", [], |row| row.get(0))
        .optional()
        .map_err(|_| StoreError::NotAStore(path.display().to_string()))?;
    let from = match version.as_deref() {
        Some(b"1") => 1,
        Some(b"2") => 2,
        Some(b"3") => 3,
        Some(b"4") => 4,
        Some(b"5") => 5,
        _ => return Ok(()),
    };
    if from == 1 {
        transaction.execute_batch(MIGRATE_V1_TO_V2)?;
        transaction.execute_batch(SCHEMA_V2)?;
    }
    if from <= 2 {
        transaction.execute_batch(SCHEMA_V3)?;
    } else {
        // Added to version 3 during its development; created if missing.
        transaction.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit_canaries (patient BLOB PRIMARY KEY, created_ms INTEGER NOT NULL) WITHOUT ROWID;",
        )?;
    }
    if from <= 3 {
        // The search index starts empty: a store with resources is reindexed before
        // searches are answered (`docs/format/index-token.md`).
        transaction.execute_batch(SCHEMA_V4)?;
    }
    if from <= 4 {
        // One index row per patient and commit instead of per record (`docs/format/audit.md`).
        audit_index::migrate_from_v4(&transaction)?;
    }
    // Every existing document is posted: the pending table starts empty.
    transaction.execute_batch(SCHEMA_V6)?;
    transaction.execute("UPDATE meta SET value = ?1 WHERE name = 'format_version'", [SCHEMA_VERSION.as_bytes()])?;
    transaction.commit()?;
    tracing::info!(path = %path.display(), "upgraded the store from format version {from} to {SCHEMA_VERSION}");
    Ok(())
}

/// A pooled reader connection. It reads the database file with `pread` into its own page
/// cache, never through a memory mapping (`PRAGMA mmap_size = 0`). In WAL mode SQLite
/// unmaps a connection's whole mapping at the start of its first read after another
/// connection committed (every move of the audit journal, each second under reads; every
/// write), maps it again, and faults every page back in. On a store of about 1 GB the
/// `munmap` alone held a request's worker thread for 7.5–19 ms, and the other worker waited
/// on the process's memory-map lock: the read p99 grew with the store
/// (docs/PERFORMANCE.md, *Read p99 on large stores*).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let connection = open_connection(path, false)?;
    connection.execute_batch("PRAGMA mmap_size = 0;")?;
    Ok(connection)
}

fn open_connection(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // WAL with FULL: every commit syncs the WAL, so an acknowledged write survives power loss.
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io(format!("SQLite refused WAL mode (got {mode})")));
    }
    connection.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -32768;",
    )?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// What the writer thread is started with, besides its connection, queue and journal.
struct WriterContext {
    signer: SharedSigner,
    commits: std::sync::Arc<AtomicU64>,
    wal_path: PathBuf,
    pending: std::sync::Arc<PendingIndex>,
}

fn writer_loop(
    mut connection: Connection,
    receiver: Receiver<WriterJob>,
    context: WriterContext,
    journal: Option<std::sync::Arc<AuditJournal>>,
) {
    let WriterContext { signer, commits, wal_path, pending } = context;
    let mut frontier = Frontier::default();
    let journal = journal.as_deref();
    let moved = journal_moved(&connection).unwrap_or_else(|error| {
        tracing::error!(%error, "reading how far the audit journal was moved failed");
        0
    });
    if let Some(journal) = journal {
        if let Err(error) = journal.continue_after(moved) {
            tracing::error!(%error, "the audit journal is unusable");
        }
    }
    if let Err(error) = pending.load(&connection) {
        // Searches read the pending documents from the tables until a commit reloads it.
        tracing::error!(%error, "reading the pending search documents failed");
    }
    let mut writer = WriterState { commits: &commits, wal_path: &wal_path, journal, moved, pending: &pending };
    // Audit records committed to the journal are synced to disk within AUDIT_SYNC_MS and
    // moved into the database (blocks, index, leaves, a signed checkpoint) within
    // AUDIT_MOVE_MS, or with the next write. Audit-only groups committed without a sync
    // (when another process holds the journal) are synced and signed within AUDIT_SYNC_MS.
    // A crash may have left such records or leaves: they are settled before anything else.
    let mut timers = AuditTimers { settle_due: Some(std::time::Instant::now()), journal_sync_due: None };
    let settle = |connection: &mut Connection, frontier: &mut Frontier, writer: &mut WriterState<'_>| {
        let signer = signer.lock().ok().and_then(|s| s.clone());
        let Some(signer) = signer else { return SyncState::Unchanged };
        commit_group(connection, Vec::new(), Some(&*signer), frontier, writer, true)
    };
    // Pending search documents are posted within SEARCH_POST_DELAY_MS of the first one, or
    // as soon as SEARCH_PENDING_DOCS_MAX are pending; those a crash left, soon after start.
    let mut post_due = (pending.state() != (0, false)).then(std::time::Instant::now);
    let mut post_plan = None;
    loop {
        let due = match (timers.next_due(), post_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = match due {
            Some(due) => match receiver.recv_timeout(due.saturating_duration_since(std::time::Instant::now())) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = std::time::Instant::now();
                    if post_due.is_some_and(|due| due <= now) {
                        advance_posting(&mut connection, &pending, &mut post_plan, &mut post_due);
                    }
                    if timers.journal_sync_due.is_some_and(|due| due <= now) {
                        timers.journal_sync_due = None;
                        if let Some(Err(error)) = journal.map(AuditJournal::sync) {
                            // Tried again after another AUDIT_SYNC_MS.
                            tracing::error!(%error, "the audit journal could not be synced to disk");
                            timers.journal_sync_due = Some(now + AUDIT_SYNC);
                        }
                    }
                    if timers.settle_due.is_some_and(|due| due <= now) {
                        match settle(&mut connection, &mut frontier, &mut writer) {
                            SyncState::Synced => timers.settled(journal),
                            // Tried again after another AUDIT_SYNC_MS (the failure is logged).
                            _ => timers.settle_due = Some(now + AUDIT_SYNC),
                        }
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let mut versions = first.version_count();
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT_JOBS_MAX && versions < GROUP_COMMIT_VERSIONS_MAX {
            match receiver.try_recv() {
                Ok(job) => {
                    versions += job.version_count();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // A nudge only starts the clocks; a query of the audit trail that finds nothing in
        // the journal needs no commit.
        let journaled = journal.is_some_and(AuditJournal::has_staged);
        if jobs.iter().all(|job| matches!(job, WriterJob::Flush(..) | WriterJob::Nudge))
            && (!journaled || jobs.iter().all(|job| matches!(job, WriterJob::Nudge)))
        {
            for job in jobs {
                if let WriterJob::Flush(reply) = job {
                    let _ = reply.send(Ok(()));
                }
            }
            timers.journal_appended(journal);
            continue;
        }
        let signer = signer.lock().ok().and_then(|s| s.clone());
        // Under a steady stream of writes there may be no idle moment: a group that comes
        // due is synced and signed itself.
        let force_sync = timers.settle_due.is_some_and(|due| due <= std::time::Instant::now());
        match commit_group(&mut connection, jobs, signer.as_deref(), &mut frontier, &mut writer, force_sync) {
            SyncState::Synced => timers.settled(journal),
            SyncState::Unsynced => {
                timers.settle_due.get_or_insert_with(|| std::time::Instant::now() + AUDIT_SYNC);
            }
            SyncState::Unchanged => {}
        }
        // Records appended while the group committed wait for the next one, or the clocks.
        timers.journal_appended(journal);
        advance_posting(&mut connection, &pending, &mut post_plan, &mut post_due);
    }
    if let Some(Err(error)) = journal.map(AuditJournal::sync) {
        tracing::error!(%error, "the audit journal could not be synced at close");
    }
    if timers.settle_due.is_some() || journal.is_some_and(AuditJournal::has_staged) {
        if let SyncState::Unchanged = settle(&mut connection, &mut frontier, &mut writer) {
            tracing::error!("syncing and signing the audit trail at close failed");
        }
    }
}

const AUDIT_SYNC: std::time::Duration = std::time::Duration::from_millis(AUDIT_SYNC_MS);
const AUDIT_MOVE: std::time::Duration = std::time::Duration::from_millis(AUDIT_MOVE_MS);
const SEARCH_POST_DELAY: std::time::Duration = std::time::Duration::from_millis(SEARCH_POST_DELAY_MS);

/// The writer's posting of pending search documents (`docs/format/index-token.md`,
/// *Pending documents and posting*), one step per call between group commits: the next
/// slice of a post in progress; or a new post, once `SEARCH_PENDING_DOCS_MAX` documents are
/// pending or the first has waited `SEARCH_POST_DELAY_MS`. `due` is when to call again.
fn advance_posting(
    connection: &mut Connection,
    pending: &PendingIndex,
    plan: &mut Option<pending::PostPlan>,
    due: &mut Option<std::time::Instant>,
) {
    let now = std::time::Instant::now();
    let (docs, posting) = pending.state();
    if !pending.posts_automatically() {
        *due = None;
        return;
    }
    let start = !posting && (docs >= SEARCH_PENDING_DOCS_MAX || due.is_some_and(|due| due <= now));
    if !posting && !start {
        if docs > 0 {
            due.get_or_insert(now + SEARCH_POST_DELAY);
        }
        return;
    }
    pending::take();
    let mut stamps = None;
    let step = (|| -> Result<bool, StoreError> {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = Stamp::read(&transaction)?;
        if start {
            pending::start_post(&transaction)?;
        }
        let finished =
            pending::post_slice(&transaction, SEARCH_POST_SLICE_ENTRIES_MAX, plan, pending.post_docs_version())?;
        let after = Stamp::read(&transaction)?;
        transaction.commit()?;
        stamps = Some((before, after));
        Ok(finished)
    })();
    let changes = pending::take();
    if let Some((before, after)) = stamps {
        if let Err(error) = pending.committed(connection, before, after, changes) {
            tracing::error!(%error, "reading the pending search documents failed");
            pending.invalidate();
        }
    }
    *due = match step {
        // Documents written during the post wait for the next one.
        Ok(true) => (pending.state().0 > 0).then(|| now + SEARCH_POST_DELAY),
        // The next slice after the next group commit, or at once if none is waiting.
        Ok(false) => Some(now),
        Err(error) => {
            tracing::error!(%error, "posting the pending search documents failed; they stay pending");
            Some(now + SEARCH_POST_DELAY)
        }
    };
}

/// When the writer must next sync the audit journal, and next settle the audit trail (move
/// the journal into the database, sync, sign).
struct AuditTimers {
    settle_due: Option<std::time::Instant>,
    journal_sync_due: Option<std::time::Instant>,
}

impl AuditTimers {
    fn next_due(&self) -> Option<std::time::Instant> {
        match (self.settle_due, self.journal_sync_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The journal may hold records written since its last sync or move: start the clocks
    /// that are not running.
    fn journal_appended(&mut self, journal: Option<&AuditJournal>) {
        let Some(journal) = journal else { return };
        let now = std::time::Instant::now();
        if journal.has_unsynced() {
            self.journal_sync_due.get_or_insert(now + AUDIT_SYNC);
        }
        if journal.has_staged() {
            // Nearly full: at once, so a burst rarely meets a full journal.
            let due = if journal.is_nearly_full() { now } else { now + AUDIT_MOVE };
            self.settle_due = Some(self.settle_due.map_or(due, |current| current.min(due)));
        }
    }

    /// A synced commit took everything due; what was appended during it starts again.
    fn settled(&mut self, journal: Option<&AuditJournal>) {
        self.settle_due = None;
        self.journal_appended(journal);
    }
}

/// What the writer thread keeps between group commits, besides the ledger's frontier.
struct WriterState<'a> {
    /// Commits that changed more than the audit trail (see `change_marker`).
    commits: &'a AtomicU64,
    wal_path: &'a Path,
    journal: Option<&'a AuditJournal>,
    /// The last audit journal frame the database holds (`meta.audit_journal_seq`).
    moved: u64,
    /// The pending search documents' tokens, for searches (`search::pending`).
    pending: &'a PendingIndex,
}

/// The last audit journal frame the database holds (`meta.audit_journal_seq`).
fn journal_moved(connection: &Connection) -> Result<u64, StoreError> {
    let value: Option<Vec<u8>> = connection
        .query_row("SELECT value FROM meta WHERE name = 'audit_journal_seq'", [], |row| row.get(0))
        .optional()?;
    match value {
        None => Ok(0),
        Some(value) => std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("meta.audit_journal_seq is not a number".into())),
    }
}

fn wal_path_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_os_string();
    name.push("-wal");
    PathBuf::from(name)
}

/// Makes every commit so far durable: SQLite wrote the WAL frames (with `synchronous =
/// NORMAL` it does not sync them); syncing the WAL file's data makes them survive a power
/// failure, as `synchronous = FULL` would.
fn sync_wal(wal_path: &Path) -> Result<(), StoreError> {
    match std::fs::File::open(wal_path) {
        Ok(file) => file.sync_data().map_err(|e| StoreError::Io(format!("cannot sync the write-ahead log: {e}"))),
        // No WAL file: nothing is waiting in one.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::Io(format!("cannot open the write-ahead log to sync it: {error}"))),
    }
}

/// Computes the root at `size`, has it signed, and stores the checkpoint.
fn insert_checkpoint(
    connection: &Connection,
    signer: &dyn CheckpointSigner,
    size: u64,
    frontier: &Frontier,
) -> Result<(), StoreError> {
    let root = medvault_ledger::root(size, &CachedNodes { connection, frontier })
        .map_err(|e| StoreError::Corrupt(format!("ledger root: {e}")))?;
    let note = signer.sign(size, &root).map_err(|e| StoreError::Corrupt(format!("checkpoint signing: {e}")))?;
    let tree_size = i64::try_from(size).map_err(|_| StoreError::Corrupt("ledger size overflow".into()))?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    connection.execute(
        "INSERT INTO checkpoints (tree_size, root, note, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![tree_size, &root[..], note, created_ms],
    )?;
    Ok(())
}

/// The last complete subtree at each level, which is what the next append needs: it
/// saves the writer a look-up per level per leaf. Valid for the ledger size it records;
/// another process growing the ledger makes it stale, and it is then rebuilt from SQL.
#[derive(Debug, Clone, Default)]
struct Frontier {
    size: u64,
    last: Vec<Option<(u64, medvault_ledger::Hash)>>,
}

impl Frontier {
    fn remember(&mut self, level: u8, index: u64, hash: medvault_ledger::Hash) {
        let level = usize::from(level);
        if self.last.len() <= level {
            self.last.resize(level + 1, None);
        }
        self.last[level] = Some((index, hash));
    }
}

/// Nodes from the frontier, else from the table.
struct CachedNodes<'a> {
    connection: &'a Connection,
    frontier: &'a Frontier,
}

impl medvault_ledger::NodeStore for CachedNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Option<medvault_ledger::Hash>, medvault_ledger::LedgerError> {
        if let Some(Some((cached_index, hash))) = self.frontier.last.get(usize::from(level)) {
            if *cached_index == index {
                return Ok(Some(*hash));
            }
        }
        medvault_ledger::NodeStore::node(&SqlNodes(self.connection), level, index)
    }
}

/// The ledger's node table, read inside the writer's transaction.
struct SqlNodes<'a>(&'a Connection);

impl medvault_ledger::NodeStore for SqlNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Option<medvault_ledger::Hash>, medvault_ledger::LedgerError> {
        let index =
            i64::try_from(index).map_err(|_| medvault_ledger::LedgerError::Store("node index overflow".into()))?;
        let hash: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT hash FROM ledger_nodes WHERE level = ?1 AND node_index = ?2")
            .and_then(|mut statement| statement.query_row(params![level, index], |row| row.get(0)).optional())
            .map_err(|e| medvault_ledger::LedgerError::Store(e.to_string().into()))?;
        hash.map(|h| {
            h.try_into().map_err(|_| medvault_ledger::LedgerError::Store("a ledger node is not 32 bytes".into()))
        })
        .transpose()
    }
}

/// The next leaf index by the version rows (benchmark stores without a ledger).
fn next_leaf_of_versions(connection: &Connection) -> Result<u64, StoreError> {
    let next: Option<i64> = connection.query_row("SELECT MAX(seq) + 1 FROM versions", [], |row| row.get(0))?;
    Ok(next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

fn ledger_size_of(connection: &Connection) -> Result<u64, StoreError> {
    let next: Option<i64> =
        connection.query_row("SELECT MAX(node_index) + 1 FROM ledger_nodes WHERE level = 0", [], |row| row.get(0))?;
    Ok(next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

/// Appends one leaf and the complete subtrees it closes.
fn append_leaf(
    connection: &Connection,
    leaf_index: u64,
    leaf_hash: [u8; 32],
    frontier: &mut Frontier,
) -> Result<(), StoreError> {
    let nodes = medvault_ledger::append_nodes(leaf_index, leaf_hash, &CachedNodes { connection, frontier })
        .map_err(|e| StoreError::Corrupt(format!("ledger append: {e}")))?;
    let mut insert =
        connection.prepare_cached("INSERT INTO ledger_nodes (level, node_index, hash) VALUES (?1, ?2, ?3)")?;
    for (level, index, hash) in nodes {
        frontier.remember(level, index, hash);
        let index = i64::try_from(index).map_err(|_| StoreError::Corrupt("ledger index overflow".into()))?;
        insert.execute(params![level, index, &hash[..]])?;
    }
    frontier.size = leaf_index + 1;
    Ok(())
}

/// Outcome of one job inside the group, held until the group commits.
enum Applied {
    Versions(Result<Result<VersionReceipt, JobConflict>, StoreError>),
    Exec(Result<i64, StoreError>),
    Audit,
    Token(Result<(), StoreError>),
    Revoked(Result<u64, StoreError>),
}

fn commit_group(
    connection: &mut Connection,
    mut jobs: Vec<WriterJob>,
    signer: Option<&dyn CheckpointSigner>,
    frontier: &mut Frontier,
    writer: &mut WriterState<'_>,
    force_sync: bool,
) -> SyncState {
    let WriterState { commits, wal_path, journal, moved, pending } = writer;
    let journal = *journal;
    let pending = *pending;
    // Changes a failed group recorded are dropped with it.
    pending::take();
    let mut stamps: Option<(Stamp, Stamp)> = None;
    let mut outcomes = Vec::with_capacity(jobs.len());
    // A group of audit records alone commits without its own sync: a read's audit record is
    // committed (it survives a crash of the process) before the read is answered, and is
    // synced with the next write or within AUDIT_SYNC_MS. Anything else syncs (FULL).
    let audit_only = !force_sync && jobs.iter().all(|job| matches!(job, WriterJob::Audit(..)));
    let skip_ledger = signer.is_some_and(|s| s.danger_skips_ledger());
    // Whether caches derived from stored rows must be dropped (`change_marker`).
    let changes_data =
        jobs.iter().any(|job| !matches!(job, WriterJob::Audit(..) | WriterJob::Flush(..) | WriterJob::Nudge));
    // With a journal, records reach the writer as jobs only when the journal is full: they
    // are committed with a sync, after the journal's.
    let audit_only = audit_only && journal.is_none();
    // Records the journal holds go into this commit, before the group's own.
    let mut journaled: Option<Taken> = None;
    let commit = (|| -> Result<(), StoreError> {
        if let (Some(journal), Some(signer)) = (journal, signer) {
            if !skip_ledger && !audit_only {
                journaled = journal.take(*moved, signer)?;
            }
        }
        let mut transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stamp_before = Stamp::read(&transaction)?;
        // Read inside the transaction: another process may have grown the ledger.
        let size_before =
            if skip_ledger { next_leaf_of_versions(&transaction)? } else { ledger_size_of(&transaction)? };
        if frontier.size != size_before {
            *frontier = Frontier { size: size_before, last: Vec::new() };
        }
        let mut size = size_before;
        // Records committed to the journal come first: they were committed before this group.
        if let (Some(Taken { records: staged, sequence }), Some(signer)) = (&journaled, signer) {
            #[cfg(feature = "fault-injection")]
            if FAIL_AUDIT.load(Ordering::SeqCst) {
                return Err(StoreError::Io("audit storage failure (injected)".into()));
            }
            let staged: Vec<&PendingAudit> = staged.iter().collect();
            let mut index = Vec::with_capacity(staged.len());
            for block in staged.chunks(AUDIT_JOURNAL_BLOCK_RECORDS) {
                apply_audit_block(&transaction, block, size, frontier, signer, &mut index)?;
                size += 1;
            }
            audit_index::insert(&transaction, index)?;
            transaction.execute(
                "INSERT INTO meta (name, value) VALUES ('audit_journal_seq', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [sequence.to_string().as_bytes()],
            )?;
        }
        for job in jobs.iter_mut() {
            // Audit records are written after the jobs, in the group's block: nothing to
            // roll back, so no savepoint (each costs two statements).
            if matches!(job, WriterJob::Audit(..) | WriterJob::Flush(..) | WriterJob::Nudge) {
                outcomes.push(Applied::Audit);
                continue;
            }
            let mut savepoint = transaction.savepoint()?;
            let pending_at_job = pending::mark();
            let size_at_job = size;
            let frontier_at_job = frontier.clone();
            let applied = match job {
                WriterJob::Versions(job, _) => {
                    Applied::Versions(apply_versions(&savepoint, job, &mut size, frontier, skip_ledger))
                }
                WriterJob::Exec(statement, _) => {
                    let statement = statement.take();
                    Applied::Exec(statement.map_or(Err(StoreError::Closed), |run| run(&savepoint)))
                }
                WriterJob::InsertToken(token, _) => Applied::Token(apply_insert_token(&savepoint, token)),
                WriterJob::RevokeTokens(client, at_ms, _) => Applied::Revoked(apply_revoke(&savepoint, client, *at_ms)),
                WriterJob::Audit(..) | WriterJob::Flush(..) | WriterJob::Nudge => Applied::Audit,
            };
            let keep = match &applied {
                Applied::Versions(result) => matches!(result, Ok(Ok(_))),
                Applied::Exec(result) => result.is_ok(),
                Applied::Audit => true,
                Applied::Token(result) => result.is_ok(),
                Applied::Revoked(result) => result.is_ok(),
            };
            if keep {
                savepoint.commit()?;
            } else {
                savepoint.rollback()?;
                savepoint.commit()?;
                pending::truncate(pending_at_job);
                size = size_at_job;
                *frontier = frontier_at_job;
            }
            outcomes.push(applied);
        }
        // The audit records of every job that stays, in one sealed block and one leaf. If
        // it cannot be written, the whole group fails: no access without its audit record.
        let mut records: Vec<&PendingAudit> = Vec::new();
        for (job, applied) in jobs.iter().zip(&outcomes) {
            match (job, applied) {
                (WriterJob::Versions(job, _), Applied::Versions(Ok(Ok(_)))) => records.extend(job.audit.iter()),
                (WriterJob::Audit(pending, _), _) => records.extend(pending.iter()),
                _ => {}
            }
        }
        if !records.is_empty() && !skip_ledger {
            let signer = signer.ok_or_else(|| StoreError::Corrupt("no key holder is installed".into()))?;
            #[cfg(feature = "fault-injection")]
            if FAIL_AUDIT.load(Ordering::SeqCst) {
                return Err(StoreError::Io("audit storage failure (injected)".into()));
            }
            let mut index = Vec::with_capacity(records.len());
            apply_audit_block(&transaction, &records, size, frontier, signer, &mut index)?;
            audit_index::insert(&transaction, index)?;
            size += 1;
        }
        // No write is acknowledged before a signed checkpoint covers it. A group of audit
        // records alone signs none: the next write's checkpoint, or `sign_pending` within
        // AUDIT_SYNC_MS, covers its block.
        let uncovered = !skip_ledger
            && !audit_only
            && (size > size_before || {
                let covered: Option<i64> =
                    transaction.query_row("SELECT MAX(tree_size) FROM checkpoints", [], |row| row.get(0))?;
                size > 0 && covered.and_then(|c| u64::try_from(c).ok()) != Some(size)
            });
        if uncovered {
            let signer = signer.ok_or_else(|| StoreError::Corrupt("no checkpoint signer is installed".into()))?;
            insert_checkpoint(&transaction, signer, size, frontier)?;
            for outcome in &mut outcomes {
                if let Applied::Versions(Ok(Ok(receipt))) = outcome {
                    receipt.checkpoint_size = size;
                }
            }
        }
        if changes_data {
            transaction.execute(
                "INSERT INTO meta (name, value) VALUES ('data_generation', '1')
                 ON CONFLICT (name) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
                [],
            )?;
        }
        let stamp_after = Stamp::read(&transaction)?;
        transaction.commit()?;
        stamps = Some((stamp_before, stamp_after));
        Ok(())
    })();
    // Committed (even if the sync below fails, the rows are in the database): searches
    // see its pending documents before any reply.
    let changes = pending::take();
    if let Some((before, after)) = stamps {
        if let Err(error) = pending.committed(connection, before, after, changes) {
            tracing::error!(%error, "reading the pending search documents failed");
            pending.invalidate();
        }
    }
    let mut commit = commit;
    if commit.is_ok() && changes_data {
        // Before any reply: a client that hears of this commit and asks again sees it.
        commits.fetch_add(1, Ordering::SeqCst);
    }
    if commit.is_ok() {
        // A write (and anything not only audit records) is durable before its reply.
        if !audit_only {
            if let Err(error) = sync_wal(wal_path) {
                tracing::error!(%error, "a commit could not be synced to disk; its clients are told it failed");
                commit = Err(error);
            }
        }
    }
    if let (Some(journal), Some(taken)) = (journal, journaled) {
        let result = if commit.is_ok() {
            // The database holds these records, synced: the journal may forget them.
            *moved = taken.sequence;
            journal.settled(*moved)
        } else {
            journal.put_back(taken)
        };
        if let Err(error) = result {
            tracing::error!(%error, "the audit journal could not be updated after a commit");
        }
    }
    for (job, applied) in jobs.into_iter().zip(outcomes.into_iter().map(Some).chain(std::iter::repeat_with(|| None))) {
        // If the group failed to commit, nothing of it is durable: every job gets the error.
        let failure = || match &commit {
            Err(error) => error.clone(),
            Ok(()) => StoreError::Io("the group commit lost a job".into()),
        };
        match (job, applied) {
            (WriterJob::Versions(_, reply), Some(Applied::Versions(result))) if commit.is_ok() => {
                let _ = reply.send(result);
            }
            (WriterJob::Exec(_, reply), Some(Applied::Exec(result))) if commit.is_ok() => {
                let _ = reply.send(result);
            }
            (WriterJob::Exec(_, reply), _) => {
                let _ = reply.send(Err(failure()));
            }
            (WriterJob::Audit(_, reply), _) => {
                if let Some(reply) = reply {
                    reply(match &commit {
                        Ok(()) => Ok(()),
                        Err(_) => Err(failure()),
                    });
                }
            }
            (WriterJob::Nudge, _) => {}
            (WriterJob::Flush(reply), _) => {
                let _ = reply.send(match &commit {
                    Ok(()) => Ok(()),
                    Err(_) => Err(failure()),
                });
            }
            (WriterJob::InsertToken(_, reply), Some(Applied::Token(result))) if commit.is_ok() => {
                let _ = reply.send(result);
            }
            (WriterJob::RevokeTokens(_, _, reply), Some(Applied::Revoked(result))) if commit.is_ok() => {
                let _ = reply.send(result);
            }
            (WriterJob::Versions(_, reply), _) => {
                let _ = reply.send(Err(failure()));
            }
            (WriterJob::InsertToken(_, reply), _) => {
                let _ = reply.send(Err(failure()));
            }
            (WriterJob::RevokeTokens(_, _, reply), _) => {
                let _ = reply.send(Err(failure()));
            }
        }
    }
    match (&commit, audit_only) {
        (Err(_), _) => SyncState::Unchanged,
        (Ok(()), true) => SyncState::Unsynced,
        (Ok(()), false) => SyncState::Synced,
    }
}

/// What a group commit did to the WAL's durability.
enum SyncState {
    /// Synced (FULL): every earlier commit is durable too.
    Synced,
    /// Committed without a sync (an audit-only group).
    Unsynced,
    /// Nothing committed.
    Unchanged,
}

/// Test builds only: makes every commit that carries audit records fail, to show that an
/// access whose audit record cannot be written does not happen.
#[cfg(feature = "fault-injection")]
pub static FAIL_AUDIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one sealed block of audit records as ledger leaf `leaf_index`; adds its index
/// entries to `index` (see [`audit_index::insert`]).
fn apply_audit_block(
    connection: &Connection,
    records: &[&PendingAudit],
    leaf_index: u64,
    frontier: &mut Frontier,
    signer: &dyn CheckpointSigner,
    index: &mut Vec<AuditIndexEntry>,
) -> Result<(), StoreError> {
    let mut block = Vec::with_capacity(4 + records.iter().map(|r| r.record.len() + 4).sum::<usize>());
    let count = u32::try_from(records.len()).map_err(|_| StoreError::Corrupt("too many audit records".into()))?;
    block.extend_from_slice(&count.to_be_bytes());
    for record in records {
        let length = u32::try_from(record.record.len())
            .map_err(|_| StoreError::Corrupt("an audit record is too long".into()))?;
        block.extend_from_slice(&length.to_be_bytes());
        block.extend_from_slice(&record.record);
    }
    let sealed = signer
        .seal_audit_block(leaf_index, &block)
        .map_err(|e| StoreError::Crypto(format!("sealing an audit block: {e}")))?;
    let first_ms = records.iter().map(|r| r.recorded_ms).min().unwrap_or(0);
    let last_ms = records.iter().map(|r| r.recorded_ms).max().unwrap_or(0);
    let leaf =
        medvault_ledger::AuditBlockLeaf { first_ms, last_ms, count, sealed_sha256: medvault_crypto::sha256(&sealed) };
    let leaf_hash = leaf.leaf_hash().map_err(|e| StoreError::Corrupt(format!("audit leaf: {e}")))?;
    append_leaf(connection, leaf_index, leaf_hash, frontier)?;
    let seq = i64::try_from(leaf_index).map_err(|_| StoreError::Corrupt("leaf index overflow".into()))?;
    connection
        .prepare_cached("INSERT INTO audit_blocks (seq, first_ms, last_ms, count, sealed) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![seq, first_ms, last_ms, count, sealed])?;
    for (slot, record) in records.iter().enumerate() {
        index.extend(record.patients.iter().map(|patient| (*patient, record.recorded_ms, seq, slot)));
    }
    Ok(())
}

fn insert_key(connection: &Connection, key: &NewKey) -> Result<u64, StoreError> {
    connection
        .prepare_cached("INSERT INTO keys (purpose, compartment, wrapped, created_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![key.purpose, key.compartment.as_ref().map(|c| &c[..]), key.wrapped, key.created_ms])?;
    u64::try_from(connection.last_insert_rowid()).map_err(|_| StoreError::Corrupt("negative key id".into()))
}

fn apply_versions(
    connection: &Connection,
    job: &VersionJob,
    ledger_size: &mut u64,
    frontier: &mut Frontier,
    skip_ledger: bool,
) -> Result<Result<VersionReceipt, JobConflict>, StoreError> {
    let mut new_key_ids = Vec::with_capacity(job.new_keys.len());
    for (index, key) in job.new_keys.iter().enumerate() {
        let compartment =
            key.compartment.ok_or_else(|| StoreError::Corrupt("a data key without compartment".into()))?;
        let exists: Option<i64> = connection
            .prepare_cached("SELECT key_id FROM keys WHERE compartment = ?1")?
            .query_row([&compartment[..]], |row| row.get(0))
            .optional()?;
        if exists.is_some() {
            return Ok(Err(JobConflict::KeyExists { index }));
        }
        new_key_ids.push(insert_key(connection, key)?);
    }
    if !job.versions.is_empty() && read_search_generations(connection)? != job.search_generations {
        return Ok(Err(JobConflict::SearchGenerationsChanged));
    }
    let mut seqs = Vec::with_capacity(job.versions.len());
    let mut leaf_indexes = Vec::with_capacity(job.versions.len());
    let mut select_current = connection.prepare_cached("SELECT version FROM resources WHERE resource_key = ?1")?;
    let mut insert_version = connection.prepare_cached(
        "INSERT INTO versions (seq, resource_key, resource_type, version, key_id, recorded_ms, deleted, sealed, author)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut upsert_resource = connection.prepare_cached(
        "INSERT INTO resources (resource_key, resource_type, version, deleted, seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (resource_key) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, seq = excluded.seq",
    )?;
    for (index, version) in job.versions.iter().enumerate() {
        let found: Option<i64> = select_current.query_row([&version.resource_key[..]], |row| row.get(0)).optional()?;
        let found = found.map(|v| u64::try_from(v).unwrap_or(0));
        let matches = match version.expected {
            Expected::Absent => found.is_none(),
            Expected::Current(current) => found == Some(current),
        };
        if !matches {
            return Ok(Err(JobConflict::Stale { index, found }));
        }
        // Programmer errors, kept on in release: a broken invariant stops the write.
        assert!(version.version == found.map_or(1, |current| current + 1), "version must follow the current one");
        assert!(!version.sealed.is_empty(), "a version is never stored without its sealed bytes");
        let key_id = match version.key {
            KeyRef::Existing(key_id) => key_id,
            KeyRef::New(index) => {
                *new_key_ids.get(index).ok_or_else(|| StoreError::Corrupt("bad new-key index".into()))?
            }
        };
        let version_number =
            i64::try_from(version.version).map_err(|_| StoreError::Corrupt("version overflow".into()))?;
        let key_id = i64::try_from(key_id).map_err(|_| StoreError::Corrupt("key id overflow".into()))?;
        let leaf_index = *ledger_size;
        if !skip_ledger {
            append_leaf(connection, leaf_index, version.leaf_hash, frontier)?;
        }
        *ledger_size += 1;
        // The row's key is its leaf index: one sequence gives the system history order and
        // the ledger position, with no second index to keep.
        let seq = i64::try_from(leaf_index).map_err(|_| StoreError::Corrupt("leaf index overflow".into()))?;
        insert_version.execute(params![
            seq,
            &version.resource_key[..],
            version.resource_type,
            version_number,
            key_id,
            version.recorded_ms,
            version.deleted,
            version.sealed,
            version.author
        ])?;
        leaf_indexes.push(leaf_index);
        if let Some(links) = &version.care_links {
            replace_care_links(connection, &version.resource_key, links)?;
        }
        upsert_resource.execute(params![
            &version.resource_key[..],
            version.resource_type,
            version_number,
            version.deleted,
            seq
        ])?;
        if !version.search.is_empty() {
            let rid = if version.version == 1 { seq } else { resource_rid(connection, &version.resource_key)? };
            for doc in &version.search {
                replace_search_doc(connection, doc.generation, rid, (!version.deleted).then_some(&doc.tokens[..]))?;
            }
        }
        seqs.push(seq);
    }
    for (user_id, patient) in &job.assignments {
        connection
            .prepare_cached(
                "INSERT INTO assignments (user_id, patient, created_ms, created_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, patient) DO NOTHING",
            )?
            .execute(params![
                user_id,
                &patient[..],
                job.versions.first().map_or(0, |v| v.recorded_ms),
                "registration"
            ])?;
    }
    Ok(Ok(VersionReceipt { seqs, new_key_ids, leaf_indexes, checkpoint_size: 0 }))
}

/// The row id of a resource in the search index: the seq of its version 1
/// (`docs/format/index-token.md`).
pub(crate) fn resource_rid(connection: &Connection, resource_key: &ResourceKey) -> Result<i64, StoreError> {
    connection
        .prepare_cached("SELECT seq FROM versions WHERE resource_key = ?1 AND version = 1")?
        .query_row([&resource_key[..]], |row| row.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("a resource without its first version".into()))
}

/// The index generations recorded in `meta` (`search_active`, `search_building`).
pub(crate) fn read_search_generations(connection: &Connection) -> Result<SearchGenerations, StoreError> {
    let generation = |name: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<Vec<u8>> = connection
            .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?;
        value
            .map(|value| {
                String::from_utf8_lossy(&value)
                    .split(' ')
                    .next()
                    .and_then(|g| g.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("meta {name} is malformed")))
            })
            .transpose()
    };
    Ok(SearchGenerations { active: generation("search_active")?, building: generation("search_building")? })
}

/// Replaces the document of one resource in one index generation (`None`: the resource is
/// deleted, its document removed). A posted document's entries are replaced by their
/// difference at once; a new document, and a pending one, stays pending until the writer
/// posts it (`docs/format/index-token.md`, *Pending documents and posting*). Runs on the
/// writer thread, which applies the recorded pending changes once the group commits.
pub(crate) fn replace_search_doc(
    connection: &Connection,
    generation: u32,
    rid: i64,
    tokens: Option<&[SearchToken]>,
) -> Result<(), StoreError> {
    let old: Option<Vec<u8>> = connection
        .prepare_cached("SELECT tokens FROM search_docs WHERE gen = ?1 AND rid = ?2")?
        .query_row(params![generation, rid], |row| row.get(0))
        .optional()?;
    if old.is_none() && tokens.is_none() {
        return Ok(());
    }
    // `None`: posted; `Some(false)`: pending; `Some(true)`: in the post in progress.
    let pending_state: Option<bool> = match &old {
        None => Some(false),
        Some(_) => connection
            .prepare_cached("SELECT posting FROM search_pending WHERE gen = ?1 AND rid = ?2")?
            .query_row(params![generation, rid], |row| row.get(0))
            .optional()?,
    };
    let old = decode_tokens(&old.unwrap_or_default());
    let new = tokens.unwrap_or(&[]);
    // The tokens of this document that are in `search_entries`: all of a posted one, those
    // below the cursor of one being posted, none of a pending one.
    let cursor = match pending_state {
        None => None,
        Some(false) => Some(Vec::new()),
        Some(true) => Some(pending::read_cursor(connection)?.unwrap_or_default()),
    };
    let posted = |token: &&SearchToken| cursor.as_ref().is_none_or(|cursor| *token < cursor);
    let mut delete = connection.prepare_cached("DELETE FROM search_entries WHERE token = ?1 AND rid = ?2")?;
    for token in old.iter().filter(posted).filter(|t| new.binary_search(t).is_err()) {
        delete.execute(params![&token[..], rid])?;
    }
    let mut insert =
        connection.prepare_cached("INSERT INTO search_entries (token, rid) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?;
    for token in new.iter().filter(posted).filter(|t| old.binary_search(t).is_err()) {
        insert.execute(params![&token[..], rid])?;
    }
    if pending_state.is_some() {
        if tokens.is_some() {
            connection
                .prepare_cached("INSERT INTO search_pending (gen, rid) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                .execute(params![generation, rid])?;
        } else {
            connection
                .prepare_cached("DELETE FROM search_pending WHERE gen = ?1 AND rid = ?2")?
                .execute(params![generation, rid])?;
        }
        pending::record(pending::PendingChange::Doc { generation, rid, removed: old, added: new.to_vec() });
    }
    match tokens {
        Some(tokens) => {
            let bytes = encode_tokens(tokens);
            connection
                .prepare_cached(
                    "INSERT INTO search_docs (gen, rid, tokens) VALUES (?1, ?2, ?3)
                     ON CONFLICT (gen, rid) DO UPDATE SET tokens = excluded.tokens",
                )?
                .execute(params![generation, rid, bytes])?;
        }
        None => {
            connection
                .prepare_cached("DELETE FROM search_docs WHERE gen = ?1 AND rid = ?2")?
                .execute(params![generation, rid])?;
        }
    }
    Ok(())
}

/// `search_docs.tokens`: each token as its length (one byte) and its bytes.
fn encode_tokens(tokens: &[SearchToken]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for token in tokens {
        let length = u8::try_from(token.len()).unwrap_or(u8::MAX);
        bytes.push(length);
        bytes.extend_from_slice(&token[..usize::from(length)]);
    }
    bytes
}

pub(crate) fn decode_tokens(mut bytes: &[u8]) -> Vec<SearchToken> {
    let mut tokens = Vec::new();
    while let Some((&length, rest)) = bytes.split_first() {
        let Some((token, rest)) = rest.split_at_checked(usize::from(length)) else { break };
        tokens.push(token.to_vec());
        bytes = rest;
    }
    tokens
}

/// The care relationships a CareTeam or Encounter version states replace those its
/// previous version stated (a deletion states none).
fn replace_care_links(connection: &Connection, source: &ResourceKey, links: &[CareLink]) -> Result<(), StoreError> {
    connection.prepare_cached("DELETE FROM care_links WHERE source = ?1")?.execute([&source[..]])?;
    let mut insert = connection.prepare_cached(
        "INSERT INTO care_links (practitioner, patient, source) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?;
    for link in links {
        insert.execute(params![&link.practitioner[..], &link.patient[..], &source[..]])?;
    }
    Ok(())
}

fn apply_insert_token(connection: &Connection, token: &TokenRow) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO tokens (digest, client, role, created_ms, expires_ms, revoked_ms, scopes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            &token.digest[..],
            token.client,
            token.role,
            token.created_ms,
            token.expires_ms,
            token.revoked_ms,
            token.scopes
        ],
    )?;
    Ok(())
}

fn apply_revoke(connection: &Connection, client: &str, at_ms: i64) -> Result<u64, StoreError> {
    let changed = connection.execute(
        "UPDATE tokens SET revoked_ms = ?2 WHERE client = ?1 AND revoked_ms IS NULL",
        params![client, at_ms],
    )?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

/// The columns every version query reads, in `version_row` order.
macro_rules! version_columns {
    () => {
        "seq, resource_key, resource_type, version, key_id, recorded_ms, deleted, sealed, author"
    };
}

/// The current version row of the resource whose search row id is `rid`.
pub(crate) fn current_by_rid(connection: &Connection, rid: i64) -> Result<Option<VersionRow>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT v.seq, v.resource_key, v.resource_type, v.version, v.key_id, v.recorded_ms, v.deleted, v.sealed, v.author
             FROM versions f JOIN resources r ON r.resource_key = f.resource_key JOIN versions v ON v.seq = r.seq
             WHERE f.seq = ?1 AND f.version = 1",
        )?
        .query_row([rid], version_row)
        .optional()?)
}

/// The data key of the current version of the resource whose search row id is `rid`.
pub(crate) fn current_key_by_rid(connection: &Connection, rid: i64) -> Result<Option<(u64, bool)>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT v.key_id, v.deleted FROM versions f JOIN resources r ON r.resource_key = f.resource_key
             JOIN versions v ON v.seq = r.seq WHERE f.seq = ?1 AND f.version = 1",
        )?
        .query_row([rid], |row| Ok((u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0), row.get(1)?)))
        .optional()?)
}

/// A batch of current resources after `after` (resource-key order), for a reindex: each
/// with its search row id.
pub(crate) fn current_batch(
    connection: &Connection,
    after: Option<&ResourceKey>,
    count: usize,
) -> Result<Vec<(i64, VersionRow)>, StoreError> {
    let after: &[u8] = after.map_or(&[], |key| &key[..]);
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(
        "SELECT (SELECT f.seq FROM versions f WHERE f.resource_key = r.resource_key AND f.version = 1),
                v.seq, v.resource_key, v.resource_type, v.version, v.key_id, v.recorded_ms, v.deleted, v.sealed, v.author
         FROM resources r JOIN versions v ON v.seq = r.seq WHERE r.resource_key > ?1 ORDER BY r.resource_key LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![after, count], |row| {
            let rid: i64 = row.get(0)?;
            let resource_key: Vec<u8> = row.get(2)?;
            let version: i64 = row.get(4)?;
            let key_id: i64 = row.get(5)?;
            Ok((
                rid,
                VersionRow {
                    seq: row.get(1)?,
                    resource_key: resource_key.try_into().unwrap_or([0; 16]),
                    resource_type: row.get(3)?,
                    version: u64::try_from(version).unwrap_or(0),
                    key_id: u64::try_from(key_id).unwrap_or(0),
                    recorded_ms: row.get(6)?,
                    deleted: row.get(7)?,
                    sealed: row.get(8)?,
                    leaf_index: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(u64::MAX),
                    author: row.get(9)?,
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let resource_key: Vec<u8> = row.get(1)?;
    let version: i64 = row.get(3)?;
    let key_id: i64 = row.get(4)?;
    Ok(VersionRow {
        seq: row.get(0)?,
        // A malformed key column becomes all zeros, which no keyed token equals; opening then fails.
        resource_key: resource_key.try_into().unwrap_or([0; 16]),
        resource_type: row.get(2)?,
        version: u64::try_from(version).unwrap_or(0),
        key_id: u64::try_from(key_id).unwrap_or(0),
        recorded_ms: row.get(5)?,
        deleted: row.get(6)?,
        sealed: row.get(7)?,
        leaf_index: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(u64::MAX),
        author: row.get(8)?,
    })
}

fn checkpoint_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRow> {
    let root: Vec<u8> = row.get(1)?;
    Ok(CheckpointRow {
        tree_size: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        root: root.try_into().unwrap_or([0; 32]),
        note: row.get(2)?,
        created_ms: row.get(3)?,
    })
}

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    let key_id: i64 = row.get(0)?;
    let compartment: Option<Vec<u8>> = row.get(2)?;
    Ok(KeyRow {
        key_id: u64::try_from(key_id).unwrap_or(0),
        purpose: row.get(1)?,
        compartment: compartment.and_then(|c| c.try_into().ok()),
        wrapped: row.get(3)?,
    })
}

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let digest: Vec<u8> = row.get(0)?;
    Ok(TokenRow {
        digest: digest.try_into().unwrap_or([0; 32]),
        client: row.get(1)?,
        role: row.get(2)?,
        created_ms: row.get(3)?,
        expires_ms: row.get(4)?,
        revoked_ms: row.get(5)?,
        scopes: row.get(6)?,
    })
}

impl Engine for SqliteEngine {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
                .query_row([name], |row| row.get(0))
                .optional()?)
        })
    }

    fn current(&self, resource_key: &ResourceKey) -> Result<Option<VersionRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM versions WHERE seq = (SELECT seq FROM resources WHERE resource_key = ?1)"
            ))?
            .query_row([&resource_key[..]], version_row)
            .optional()?)
        })
    }

    fn current_state(&self, resource_key: &ResourceKey) -> Result<Option<CurrentState>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT r.version, r.deleted, v.key_id FROM resources r JOIN versions v ON v.seq = r.seq WHERE r.resource_key = ?1",
            )?
            .query_row([&resource_key[..]], |row| {
                let version: i64 = row.get(0)?;
                let key_id: i64 = row.get(2)?;
                Ok(CurrentState {
                    version: u64::try_from(version).unwrap_or(0),
                    deleted: row.get(1)?,
                    key_id: u64::try_from(key_id).unwrap_or(0),
                })
            })
            .optional()?)
        })
    }

    fn version(&self, resource_key: &ResourceKey, version: u64) -> Result<Option<VersionRow>, StoreError> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            Ok(c.prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM versions WHERE resource_key = ?1 AND version = ?2"
            ))?
            .query_row(params![&resource_key[..], version], version_row)
            .optional()?)
        })
    }

    fn history(&self, scope: &HistoryScope, page: HistoryPage) -> Result<Vec<VersionRow>, StoreError> {
        let before = page.before_seq.unwrap_or(i64::MAX);
        let since = page.since_ms.unwrap_or(i64::MIN);
        let count = i64::from(page.count);
        self.with_reader(|c| {
            let rows = match scope {
                HistoryScope::System => c
                    .prepare_cached(concat!(
                        "SELECT ",
                        version_columns!(),
                        " FROM versions WHERE seq < ?1 AND recorded_ms >= ?2 ORDER BY seq DESC LIMIT ?3"
                    ))?
                    .query_map(params![before, since, count], version_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                HistoryScope::Type(resource_type) => c
                    .prepare_cached(concat!(
                        "SELECT ",
                        version_columns!(),
                        " FROM versions WHERE resource_type = ?1 AND seq < ?2 AND recorded_ms >= ?3
                         ORDER BY seq DESC LIMIT ?4"
                    ))?
                    .query_map(params![resource_type, before, since, count], version_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                HistoryScope::Instance(resource_key) => c
                    .prepare_cached(concat!(
                        "SELECT ",
                        version_columns!(),
                        " FROM versions WHERE resource_key = ?1 AND seq < ?2 AND recorded_ms >= ?3
                         ORDER BY seq DESC LIMIT ?4"
                    ))?
                    .query_map(params![&resource_key[..], before, since, count], version_row)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        })
    }

    fn key_by_id(&self, key_id: u64) -> Result<Option<KeyRow>, StoreError> {
        let key_id = i64::try_from(key_id).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            Ok(c.prepare_cached("SELECT key_id, purpose, compartment, wrapped FROM keys WHERE key_id = ?1")?
                .query_row([key_id], key_row)
                .optional()?)
        })
    }

    fn key_by_compartment(&self, compartment: &[u8; 32]) -> Result<Option<KeyRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached("SELECT key_id, purpose, compartment, wrapped FROM keys WHERE compartment = ?1")?
                .query_row([&compartment[..]], key_row)
                .optional()?)
        })
    }

    fn keys_by_purpose(&self, purpose: u8) -> Result<Vec<KeyRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT key_id, purpose, compartment, wrapped FROM keys WHERE purpose = ?1 ORDER BY key_id",
            )?
            .query_map([purpose], key_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn commit_versions(&self, job: VersionJob) -> Result<Result<VersionReceipt, JobConflict>, StoreError> {
        self.submit(|reply| WriterJob::Versions(job, reply))
    }

    fn commit_versions_each(
        &self,
        jobs: Vec<VersionJob>,
    ) -> Vec<Result<Result<VersionReceipt, JobConflict>, StoreError>> {
        let sender = match self
            .writer
            .lock()
            .map_err(|_| StoreError::Poisoned)
            .and_then(|w| w.clone().ok_or(StoreError::Closed))
        {
            Ok(sender) => sender,
            Err(error) => return jobs.iter().map(|_| Err(error.clone())).collect(),
        };
        // Queue every job before waiting for any, so they share group commits.
        let receivers: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let (reply, receive) = mpsc::channel();
                sender.send(WriterJob::Versions(job, reply)).map(|()| receive).map_err(|_| StoreError::Closed)
            })
            .collect();
        receivers
            .into_iter()
            .map(|receive| receive.and_then(|receive| receive.recv().map_err(|_| StoreError::Closed)?))
            .collect()
    }

    fn insert_token(&self, token: TokenRow) -> Result<(), StoreError> {
        self.submit(|reply| WriterJob::InsertToken(token, reply))
    }

    fn token(&self, digest: &[u8; 32]) -> Result<Option<TokenRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT digest, client, role, created_ms, expires_ms, revoked_ms, scopes FROM tokens WHERE digest = ?1",
            )?
            .query_row([&digest[..]], token_row)
            .optional()?)
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT digest, client, role, created_ms, expires_ms, revoked_ms, scopes FROM tokens ORDER BY created_ms, client",
            )?
            .query_map([], token_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn revoke_tokens(&self, client: &str, at_ms: i64) -> Result<u64, StoreError> {
        let client = client.to_string();
        self.submit(|reply| WriterJob::RevokeTokens(client, at_ms, reply))
    }

    fn set_checkpoint_signer(&self, signer: std::sync::Arc<dyn CheckpointSigner>) -> Result<(), StoreError> {
        *self.signer.lock().map_err(|_| StoreError::Poisoned)? = Some(signer);
        Ok(())
    }

    fn ledger_node(&self, level: u8, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        self.with_reader(|c| {
            medvault_ledger::NodeStore::node(&SqlNodes(c), level, index).map_err(|e| StoreError::Io(e.to_string()))
        })
    }

    fn ledger_size(&self) -> Result<u64, StoreError> {
        self.with_reader(ledger_size_of)
    }

    fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT tree_size, root, note, created_ms FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
            )?
            .query_row([], checkpoint_row)
            .optional()?)
        })
    }

    fn checkpoint(&self, tree_size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        let tree_size = i64::try_from(tree_size).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            Ok(c.prepare_cached("SELECT tree_size, root, note, created_ms FROM checkpoints WHERE tree_size = ?1")?
                .query_row([tree_size], checkpoint_row)
                .optional()?)
        })
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare("SELECT tree_size, root, note, created_ms FROM checkpoints ORDER BY tree_size")?
                .query_map([], checkpoint_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn versions_by_leaf(&self, first_leaf: u64, count: u32) -> Result<Vec<VersionRow>, StoreError> {
        let first = i64::try_from(first_leaf).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            Ok(c.prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM versions WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map(params![first, count], version_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn version_count(&self) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            let count: i64 = c.query_row("SELECT COUNT(*) FROM versions", [], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn current_versions(&self) -> Result<Vec<(ResourceKey, u64, bool)>, StoreError> {
        self.with_reader(|c| {
            Ok(c.prepare("SELECT resource_key, version, deleted FROM resources")?
                .query_map([], |row| {
                    let key: Vec<u8> = row.get(0)?;
                    let version: i64 = row.get(1)?;
                    Ok((key.try_into().unwrap_or([0; 16]), u64::try_from(version).unwrap_or(0), row.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn counts(&self) -> Result<EngineCounts, StoreError> {
        self.with_reader(|c| {
            let mut by_type = c
                .prepare(
                    "SELECT v.resource_type, COUNT(*),
                            (SELECT COUNT(*) FROM resources r WHERE r.resource_type = v.resource_type AND r.deleted = 0)
                     FROM versions v GROUP BY v.resource_type ORDER BY v.resource_type",
                )?
                .query_map([], |row| {
                    let versions: i64 = row.get(1)?;
                    let current: i64 = row.get(2)?;
                    Ok((
                        row.get::<_, String>(0)?,
                        u64::try_from(current).unwrap_or(0),
                        u64::try_from(versions).unwrap_or(0),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            by_type.sort();
            let data_keys: i64 =
                c.query_row("SELECT COUNT(*) FROM keys WHERE purpose IN (2, 3)", [], |row| row.get(0))?;
            let audit: (i64, i64) =
                c.query_row("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM audit_blocks", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            let tokens_active: i64 =
                c.query_row("SELECT COUNT(*) FROM tokens WHERE revoked_ms IS NULL", [], |row| row.get(0))?;
            Ok(EngineCounts {
                by_type,
                data_keys: u64::try_from(data_keys).unwrap_or(0),
                tokens_active: u64::try_from(tokens_active).unwrap_or(0),
                audit_blocks: u64::try_from(audit.0).unwrap_or(0),
                audit_records: u64::try_from(audit.1).unwrap_or(0),
            })
        })
    }
}
