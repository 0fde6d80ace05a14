//! The record store: every version of every resource sealed under its patient's data key,
//! written through one group-committing writer, read back only after the AEAD and a second
//! check agree. Knows nothing of HTTP.
//!
//! Architecture invariants:
//! - No plaintext leaves this crate towards the engine: engines see keyed resource keys,
//!   sealed bytes and wrapped keys only ([`engine`]).
//! - A version that fails to open, or opens to something other than its row, is an
//!   integrity error; altered data is never returned.
//! - A write either commits every version of its job or none ([`Store::write`]).

pub mod accounts;
pub mod audit;
mod audit_index;
pub mod backup;
pub mod engine;
mod journal;
pub mod keyring;
pub mod ledger;
pub mod search;
pub mod sqlite;
mod stamp;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use medvault_base::limits::WRITE_RETRIES_MAX;
use medvault_base::Clock;
use medvault_crypto::{KeyEncryptionKey, KeyPurpose, MasterKeySource, RecordIdentity, Secret32, WrapContext};

pub use audit::{AuditEntry, StoredAudit};
use engine::{
    CareLink, Engine, Expected, HistoryPage, HistoryScope, JobConflict, KeyRef, NewKey, NewVersion, TokenRow,
    VersionJob, VersionRow,
};
pub use keyring::{Compartment, Keyring};
use sqlite::{SqliteEngine, DATABASE_FILE};

/// Failures of the store. Messages never contain keys, tokens or clinical data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory (or database) already exists; `init` never overwrites.
    #[error("{0} already exists; medvault will not overwrite a store")]
    AlreadyExists(String),
    /// No store at the given path.
    #[error("no medvault store at {0}")]
    NotFound(String),
    /// A ledger object asked for (a checkpoint of some size, a version in a checkpoint)
    /// does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// A uniqueness rule refused the change (a user name already taken).
    #[error("{0}")]
    Conflict(String),
    /// The file exists but is not a medvault database.
    #[error("{0} is not a medvault store")]
    NotAStore(String),
    /// The store was written by another format version.
    #[error("unsupported store format version {0}")]
    UnsupportedFormat(String),
    /// The master key does not unwrap the store's keys.
    #[error("the master key does not open this store")]
    WrongMasterKey,
    /// The store's master key comes from another kind of source.
    #[error("this store's master key comes from a {expected}, not a {given}")]
    MasterKeySourceMismatch { expected: String, given: String },
    /// A key operation failed (key file unreadable, random generator failed).
    #[error("{0}")]
    Crypto(String),
    /// Stored bytes failed authentication or the second check: they were altered, moved or
    /// replaced. The detail names the row, never its content.
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// The data key of this version was destroyed (crypto-shredding).
    #[error("the data key of this record was destroyed; it cannot be read")]
    KeyDestroyed,
    /// The database contradicts the store's own invariants.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The database or file system failed.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A lock was poisoned by a panic in another thread.
    #[error("internal lock poisoned")]
    Poisoned,
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// Searches cannot be answered until the search index is rebuilt.
    #[error("{0}")]
    SearchUnavailable(String),
    /// A search the executor will not run (too broad to sort or resolve, a foreign cursor).
    /// The message names no value of the query.
    #[error("{0}")]
    SearchRefused(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Io(error.to_string())
    }
}

impl From<medvault_crypto::CryptoError> for StoreError {
    fn from(error: medvault_crypto::CryptoError) -> Self {
        match error {
            medvault_crypto::CryptoError::Integrity => {
                StoreError::Integrity("a sealed value failed authentication".into())
            }
            other => StoreError::Crypto(other.to_string()),
        }
    }
}

/// Why a write did not happen. Nothing of it was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// `If-Match` named another version than the current one.
    #[error("version conflict on write {index}: expected version {expected}, current is {}", current.map_or("none".to_string(), |v| v.to_string()))]
    PreconditionFailed { index: usize, expected: u64, current: Option<u64> },
    /// A create with a server-assigned id found the id taken.
    #[error("write {index}: a resource with this id already exists")]
    AlreadyExists { index: usize },
    /// Two writes of one transaction name the same resource.
    #[error("write {index}: the same resource appears twice in one transaction")]
    Duplicate { index: usize },
    /// The write lost the race for the same resource too many times in a row.
    #[error("the resource is being changed by other requests; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One resource version as opened and checked.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub recorded_ms: i64,
    pub deleted: bool,
    /// Position in the store's global order.
    pub seq: i64,
    /// The resource's JSON as served (a tombstone for a deletion).
    pub json: Vec<u8>,
    /// The patient compartment token of the key that seals it (`None`: shared data).
    /// Authorization reads whose record a version is from here.
    pub compartment: Option<[u8; 32]>,
}

/// A requested write.
#[derive(Debug, Clone)]
pub struct Write {
    pub resource_type: String,
    pub id: String,
    pub action: WriteAction,
    /// `If-Match`: the version the client last saw.
    pub if_match: Option<u64>,
    /// The id was assigned by the server: the resource must not exist yet.
    pub must_be_new: bool,
}

#[derive(Debug, Clone)]
pub enum WriteAction {
    /// Create or update with this body (already validated; `id` and `meta` are stamped here).
    Put(serde_json::Value),
    Delete,
}

/// The result of one committed write.
#[derive(Debug, Clone)]
pub struct Written {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub recorded_ms: i64,
    pub deleted: bool,
    /// No version existed before (or only deleted ones): the write created the resource.
    pub created: bool,
    /// A delete of something absent or already deleted: nothing was written.
    pub noop: bool,
    pub seq: i64,
    pub json: Vec<u8>,
    /// The ledger leaf of this version (a receipt the client can ask a proof for).
    pub leaf_index: u64,
    /// The size of the signed checkpoint that covers it.
    pub checkpoint_size: u64,
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    pub data_dir: PathBuf,
    pub store_id: String,
    pub format_version: String,
    pub master_key_source: String,
    pub by_type: Vec<(String, u64, u64)>,
    pub data_keys: u64,
    pub tokens_active: u64,
    pub audit_blocks: u64,
    pub audit_records: u64,
    pub database_bytes: u64,
    /// Leaves in the ledger, and the size of the latest signed checkpoint.
    pub ledger_leaves: u64,
    pub checkpoint_size: Option<u64>,
}

#[derive(Debug)]
pub struct Store {
    engine: Arc<SqliteEngine>,
    keyring: Keyring,
    /// Opens and seals blocks of audit records (`docs/format/audit.md`).
    audit_sealer: Arc<medvault_crypto::Sealer>,
    clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    /// Serializes, within this process, writes to the same existing resource, so that
    /// concurrent updates queue instead of failing their version check over and over.
    /// Other processes are still caught by the version check inside the transaction.
    write_stripes: Vec<std::sync::Mutex<()>>,
    /// The search index generations and their keys (`docs/format/index-token.md`).
    search: std::sync::RwLock<Arc<search::state::SearchState>>,
    /// Only ever true in a benchmark build (`bench-plaintext-index`).
    danger_plaintext_index: bool,
}

/// The role of every access token: tokens are for service clients.
pub const SERVICE_ROLE: &str = "service";

/// Lock stripes for updates; creates with server-assigned ids cannot conflict and take none.
const WRITE_STRIPES: usize = 1024;

/// Scope of a history request, by resource type and id rather than keyed tokens.
#[derive(Debug, Clone)]
pub enum History {
    System,
    Type(String),
    Instance { resource_type: String, id: String },
}

impl Store {
    /// Creates a new store in `data_dir` (which must not exist or be empty) and opens it.
    pub fn create(data_dir: &Path, source: &dyn MasterKeySource, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if data_dir.exists() {
            let mut entries = std::fs::read_dir(data_dir).map_err(|e| StoreError::Io(e.to_string()))?;
            if entries.next().is_some() {
                return Err(StoreError::AlreadyExists(data_dir.display().to_string()));
            }
        } else {
            create_private_dir(data_dir)?;
        }
        let store_id = medvault_crypto::random::array::<16>()?;
        let salt = medvault_crypto::random::array::<16>()?;
        let master = source.master_key(Some(&salt))?;
        let kek = KeyEncryptionKey::derive(&master, &store_id);
        let now_ms = clock.now_ms();
        let wrap = |purpose| -> Result<NewKey, StoreError> {
            let key = Secret32::random()?;
            let wrapped = kek.wrap(&key, &WrapContext { store_id: &store_id, purpose, compartment: &[] })?;
            Ok(NewKey { purpose: purpose as u8, compartment: None, wrapped, created_ms: now_ms })
        };
        let keys = [
            wrap(KeyPurpose::Index)?,
            wrap(KeyPurpose::SharedData)?,
            wrap(KeyPurpose::LedgerSigning)?,
            wrap(KeyPurpose::AuditData)?,
        ];
        let mut meta = vec![
            ("store_id", store_id.to_vec()),
            ("created_ms", now_ms.to_string().into_bytes()),
            ("master_key_source", source.kind().as_bytes().to_vec()),
            ("ledger_origin", format!("medvault/{}", medvault_base::hex::encode(&store_id)).into_bytes()),
        ];
        if source.kind() == "passphrase" {
            meta.push(("master_key_salt", salt.to_vec()));
            meta.push(("master_key_kdf", medvault_crypto::master::PASSPHRASE_KDF_DESCRIPTION.as_bytes().to_vec()));
        }
        let engine = SqliteEngine::create(&data_dir.join(DATABASE_FILE), &meta, &keys)?;
        drop(engine);
        Self::open(data_dir, source, clock)
    }

    pub fn open(data_dir: &Path, source: &dyn MasterKeySource, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with(data_dir, source, clock, false, false)
    }

    /// Opens a store whose search index holds plaintext tokens instead of keyed ones, so a
    /// benchmark can measure what the keyed scheme costs. Open a store written this way
    /// only this way: its tokens mean nothing to a keyed search.
    #[cfg(feature = "bench-plaintext-index")]
    pub fn danger_open_with_plaintext_index_for_benchmark(
        data_dir: &Path,
        source: &dyn MasterKeySource,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_with(data_dir, source, clock, false, true)
    }

    /// Opens a store whose new versions are written unsealed: for measuring sealing only.
    #[cfg(feature = "danger-benchmark-unsealed")]
    pub fn danger_open_unsealed_for_benchmark(
        data_dir: &Path,
        source: &dyn MasterKeySource,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_with(data_dir, source, clock, true, false)
    }

    /// Opens a store (sealed) whose new versions get no ledger leaves and no checkpoints,
    /// so a benchmark can measure what the ledger costs on the write path. Such a store
    /// fails `verify`.
    #[cfg(feature = "danger-benchmark-unsealed")]
    pub fn danger_open_without_ledger_for_benchmark(
        data_dir: &Path,
        source: &dyn MasterKeySource,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let store = Self::open_with(data_dir, source, clock, false, false)?;
        store.engine.set_checkpoint_signer(Arc::new(ledger::DangerNoLedger))?;
        Ok(store)
    }

    fn open_with(
        data_dir: &Path,
        source: &dyn MasterKeySource,
        clock: Arc<dyn Clock>,
        danger_unsealed: bool,
        danger_plaintext_index: bool,
    ) -> Result<Self, StoreError> {
        let engine = Arc::new(SqliteEngine::open(&data_dir.join(DATABASE_FILE))?);
        let recorded_source =
            engine.meta("master_key_source")?.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        if recorded_source != source.kind() {
            return Err(StoreError::MasterKeySourceMismatch { expected: recorded_source, given: source.kind().into() });
        }
        let store_id: [u8; 16] = engine
            .meta("store_id")?
            .and_then(|v| v.try_into().ok())
            .ok_or(StoreError::Corrupt("the store has no valid store id".into()))?;
        let salt = engine.meta("master_key_salt")?;
        let master = source.master_key(salt.as_deref())?;
        let kek = KeyEncryptionKey::derive(&master, &store_id);
        #[cfg(feature = "danger-benchmark-unsealed")]
        let keyring = if danger_unsealed {
            Keyring::danger_load_unsealed_for_benchmark(engine.as_ref(), store_id, kek)?
        } else {
            Keyring::load(engine.as_ref(), store_id, kek)?
        };
        #[cfg(not(feature = "danger-benchmark-unsealed"))]
        let keyring = {
            assert!(!danger_unsealed, "unsealed storage needs the danger-benchmark-unsealed feature");
            Keyring::load(engine.as_ref(), store_id, kek)?
        };
        let origin = engine
            .meta("ledger_origin")?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .ok_or(StoreError::Corrupt("the store has no ledger origin".into()))?;
        let audit_sealer = audit::load_or_create_audit_key(engine.as_ref(), &keyring, clock.now_ms())?;
        let signer = ledger::LedgerSigner::new(origin, keyring.ledger_signing_key()?, store_id, audit_sealer.clone())?;
        engine.set_checkpoint_signer(Arc::new(signer))?;
        let search_key = search::state::ensure_key(&engine, &keyring, clock.now_ms())?;
        search::state::activate_if_empty(&engine, search_key)?;
        let search_state = search::state::load(&engine, &keyring, danger_plaintext_index)?;
        let write_stripes = (0..WRITE_STRIPES).map(|_| std::sync::Mutex::new(())).collect();
        Ok(Self {
            engine,
            keyring,
            audit_sealer,
            clock,
            data_dir: data_dir.to_path_buf(),
            write_stripes,
            search: std::sync::RwLock::new(Arc::new(search_state)),
            danger_plaintext_index,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current version of a resource (a tombstone if it is deleted), or `None`.
    pub fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        let resource_key = self.keyring.resource_key(resource_type, id);
        match self.engine.current(&resource_key)? {
            Some(row) => self.open_row(&row).map(Some),
            None => Ok(None),
        }
    }

    pub fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        let resource_key = self.keyring.resource_key(resource_type, id);
        match self.engine.version(&resource_key, version)? {
            Some(row) => self.open_row(&row).map(Some),
            None => Ok(None),
        }
    }

    /// A page of history, newest first.
    pub fn history(&self, scope: &History, page: HistoryPage) -> Result<Vec<StoredVersion>, StoreError> {
        let scope = match scope {
            History::System => HistoryScope::System,
            History::Type(resource_type) => HistoryScope::Type(resource_type.clone()),
            History::Instance { resource_type, id } => {
                HistoryScope::Instance(self.keyring.resource_key(resource_type, id))
            }
        };
        self.engine.history(&scope, page)?.iter().map(|row| self.open_row(row)).collect()
    }

    /// Opens a row and checks it a second time against the row it came from.
    fn open_row(&self, row: &VersionRow) -> Result<StoredVersion, StoreError> {
        let (sealer, compartment) = self.keyring.sealer_and_compartment(self.engine.as_ref(), row.key_id)?;
        let identity = RecordIdentity {
            store_id: self.keyring.store_id(),
            resource_type: &row.resource_type,
            resource_key: &row.resource_key,
            version: row.version,
            deleted: row.deleted,
        };
        let json = sealer.open(&identity, &row.sealed).map_err(|_| {
            StoreError::Integrity(format!(
                "version {} of a {} (row {}) failed authentication",
                row.version, row.resource_type, row.seq
            ))
        })?;
        let head = stamp::parse_head(&json).ok_or_else(|| {
            StoreError::Integrity(format!("row {} opened to something that is not a resource", row.seq))
        })?;
        let consistent = head.resource_type == row.resource_type
            && head.version_id.parse::<u64>() == Ok(row.version)
            && self.keyring.resource_key(head.resource_type, head.id) == row.resource_key;
        if !consistent {
            return Err(StoreError::Integrity(format!("row {} opened to a resource that does not match it", row.seq)));
        }
        Ok(StoredVersion {
            resource_type: head.resource_type.to_string(),
            id: head.id.to_string(),
            version: row.version,
            recorded_ms: row.recorded_ms,
            deleted: row.deleted,
            seq: row.seq,
            json,
            compartment,
        })
    }

    /// Writes all of `writes` in one transaction, or none of them.
    /// `author` is the client name that the ledger records for every version.
    pub fn write(&self, writes: &[Write], author: &str) -> Result<Vec<Written>, WriteError> {
        self.write_by(writes, author, None)
    }

    /// [`Store::write`], assigning `registrar` (a user id) to every patient the writes
    /// create, in the same commit: a clinician who registers a patient cares for them.
    pub fn write_by(&self, writes: &[Write], author: &str, registrar: Option<i64>) -> Result<Vec<Written>, WriteError> {
        self.write_audited(writes, author, registrar, &[])
    }

    /// [`Store::write_by`] with the audit records of the write, committed in the same
    /// transaction: the write and its records are stored together or not at all.
    pub fn write_audited(
        &self,
        writes: &[Write],
        author: &str,
        registrar: Option<i64>,
        audit: &[AuditEntry],
    ) -> Result<Vec<Written>, WriteError> {
        let mut seen = HashMap::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            if seen.insert((write.resource_type.as_str(), write.id.as_str()), index).is_some() {
                return Err(WriteError::Duplicate { index });
            }
        }
        let _guards = self.lock_stripes(writes)?;
        for _attempt in 0..WRITE_RETRIES_MAX {
            let mut prepared = self.prepare(writes, author, registrar)?;
            prepared.job.audit = audit.iter().cloned().map(|entry| self.pending_audit(entry)).collect();
            match self.engine.commit_versions(std::mem::take(&mut prepared.job))? {
                Ok(receipt) => return self.finish(prepared, &receipt),
                Err(conflict) => self.check_conflict(writes, &prepared, &conflict)?,
            }
        }
        Err(WriteError::Contended)
    }

    /// Locks the stripes of every write that may race (sorted, so lockers never deadlock).
    fn lock_stripes(&self, writes: &[Write]) -> Result<Vec<std::sync::MutexGuard<'_, ()>>, StoreError> {
        let mut stripes: Vec<usize> = writes
            .iter()
            .filter(|write| !write.must_be_new)
            .map(|write| {
                let key = self.keyring.resource_key(&write.resource_type, &write.id);
                usize::from(u16::from_be_bytes([key[0], key[1]])) % WRITE_STRIPES
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.iter().map(|&stripe| self.write_stripes[stripe].lock().map_err(|_| StoreError::Poisoned)).collect()
    }

    /// Writes each of `writes` independently (a batch): one failing leaves the others.
    pub fn write_each(&self, writes: &[Write], author: &str) -> Vec<Result<Written, WriteError>> {
        self.write_each_by(writes, author, None)
    }

    /// [`Store::write_each`] with a registrar, as [`Store::write_by`].
    pub fn write_each_by(
        &self,
        writes: &[Write],
        author: &str,
        registrar: Option<i64>,
    ) -> Vec<Result<Written, WriteError>> {
        self.write_each_audited(writes, author, registrar, &[])
    }

    /// [`Store::write_each_by`] where `audit[i]` (if given) is the audit record of
    /// `writes[i]`, committed with it.
    pub fn write_each_audited(
        &self,
        writes: &[Write],
        author: &str,
        registrar: Option<i64>,
        audit: &[Option<AuditEntry>],
    ) -> Vec<Result<Written, WriteError>> {
        let guards = match self.lock_stripes(writes) {
            Ok(guards) => guards,
            Err(error) => return writes.iter().map(|_| Err(error.clone().into())).collect(),
        };
        let mut prepared: Vec<_> =
            writes.iter().map(|write| self.prepare(std::slice::from_ref(write), author, registrar)).collect();
        for (index, prepared) in prepared.iter_mut().enumerate() {
            if let (Ok(prepared), Some(Some(entry))) = (prepared, audit.get(index)) {
                prepared.job.audit = vec![self.pending_audit(entry.clone())];
            }
        }
        let jobs: Vec<VersionJob> =
            prepared.iter_mut().filter_map(|p| p.as_mut().ok()).map(|p| std::mem::take(&mut p.job)).collect();
        let mut committed = self.engine.commit_versions_each(jobs).into_iter();
        drop(guards);
        prepared
            .into_iter()
            .zip(writes)
            .enumerate()
            .map(|(index, (prepared, write))| {
                let prepared = prepared?;
                match committed.next().unwrap_or(Err(StoreError::Closed))? {
                    Ok(receipt) => self.finish(prepared, &receipt).map(|mut written| written.remove(0)),
                    // Lost a race: retry this one alone, with its audit record.
                    Err(_) => {
                        let entry: Vec<AuditEntry> = audit.get(index).cloned().flatten().into_iter().collect();
                        self.write_audited(std::slice::from_ref(write), author, registrar, &entry)
                            .map(|mut written| written.remove(0))
                    }
                }
            })
            .collect()
    }

    fn check_conflict(&self, writes: &[Write], prepared: &Prepared, conflict: &JobConflict) -> Result<(), WriteError> {
        if *conflict == JobConflict::SearchGenerationsChanged {
            self.reload_search_state()?;
        }
        if let JobConflict::Stale { index, found } = conflict {
            let write_index = prepared.version_to_write.get(*index).copied().unwrap_or(0);
            if let Some(expected) = writes.get(write_index).and_then(|w| w.if_match) {
                return Err(WriteError::PreconditionFailed { index: write_index, expected, current: *found });
            }
            if writes.get(write_index).is_some_and(|w| w.must_be_new) && found.is_some() {
                return Err(WriteError::AlreadyExists { index: write_index });
            }
        }
        Ok(())
    }

    fn prepare(&self, writes: &[Write], author: &str, registrar: Option<i64>) -> Result<Prepared, WriteError> {
        let now_ms = self.clock.now_ms();
        let search_state = self.search.read().map_err(|_| StoreError::Poisoned)?.clone();
        let mut job = VersionJob { search_generations: search_state.generations(), ..VersionJob::default() };
        let mut new_keys: HashMap<[u8; 32], (usize, Arc<medvault_crypto::Sealer>)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut version_to_write = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let resource_key = self.keyring.resource_key(&write.resource_type, &write.id);
            // A server-assigned id is new by construction; the writer still checks it is
            // absent inside the transaction, so skipping the look-up here is safe.
            let current = if write.must_be_new { None } else { self.engine.current_state(&resource_key)? };
            if let Some(expected) = write.if_match {
                if current.map(|c| c.version) != Some(expected) {
                    return Err(WriteError::PreconditionFailed {
                        index,
                        expected,
                        current: current.map(|c| c.version),
                    });
                }
            }
            if write.must_be_new && current.is_some() {
                return Err(WriteError::AlreadyExists { index });
            }
            let version = current.map_or(1, |c| c.version + 1);
            let created = current.is_none_or(|c| c.deleted);
            let expected = current.map_or(Expected::Absent, |c| Expected::Current(c.version));
            let mut care_links = None;
            let search;
            let (deleted, json, key) = match &write.action {
                WriteAction::Delete => {
                    if matches!(write.resource_type.as_str(), "CareTeam" | "Encounter") {
                        care_links = Some(Vec::new());
                    }
                    let Some(current) = current.filter(|c| !c.deleted) else {
                        outcomes.push(Outcome::Noop { index, current: current.map(|c| c.version) });
                        continue;
                    };
                    // The tombstone is sealed under the deleted version's key, so shredding
                    // the patient's key also removes what the tombstone names.
                    let sealer = self.keyring.sealer_by_id(self.engine.as_ref(), current.key_id)?;
                    let json = stamp::tombstone(&write.resource_type, &write.id, version, now_ms);
                    search = self.search_docs(&search_state, &write.resource_type, None, None)?;
                    (true, json, (KeyRef::Existing(current.key_id), sealer))
                }
                WriteAction::Put(resource) => {
                    let json = stamp::stamp(resource, &write.id, version, now_ms)
                        .ok_or_else(|| StoreError::Corrupt("a resource to store must be a JSON object".into()))?;
                    let patient = compartment_owner(&write.resource_type, &write.id, resource);
                    let compartment_token = patient.as_deref().map(|p| self.keyring.compartment_token(p));
                    search =
                        self.search_docs(&search_state, &write.resource_type, Some(&json), compartment_token.as_ref())?;
                    if let (Some(practitioners), Some(patient_id)) =
                        (medvault_fhir::care_relationships(resource), patient.as_deref())
                    {
                        let patient = self.keyring.compartment_token(patient_id);
                        care_links = Some(
                            practitioners
                                .iter()
                                .map(|id| CareLink { practitioner: self.keyring.practitioner_token(id), patient })
                                .collect(),
                        );
                    } else if medvault_fhir::care_relationships(resource).is_some() {
                        care_links = Some(Vec::new());
                    }
                    if let (Some(user_id), true, "Patient") = (registrar, created, write.resource_type.as_str()) {
                        // Only a patient that never existed: re-creating a deleted one is
                        // an update of someone's record, authorized as such.
                        if current.is_none() {
                            job.assignments.push((user_id, self.keyring.compartment_token(&write.id)));
                        }
                    }
                    let pending =
                        patient.as_deref().map(|p| self.keyring.compartment_token(p)).and_then(|t| new_keys.get(&t));
                    let key = match pending {
                        // A key this job already creates (a new patient's other resources).
                        Some((key_index, sealer)) => (KeyRef::New(*key_index), sealer.clone()),
                        None => {
                            let compartment = patient.map_or(Compartment::Shared, Compartment::Patient);
                            let choice = self.keyring.key_for_write(self.engine.as_ref(), &compartment)?;
                            match (choice.key_id, choice.new_wrapped) {
                                (Some(key_id), _) => (KeyRef::Existing(key_id), choice.sealer),
                                (None, Some(wrapped)) => {
                                    job.new_keys.push(NewKey {
                                        purpose: KeyPurpose::PatientData as u8,
                                        compartment: Some(choice.compartment_token),
                                        wrapped,
                                        created_ms: now_ms,
                                    });
                                    let key_index = job.new_keys.len() - 1;
                                    new_keys.insert(choice.compartment_token, (key_index, choice.sealer.clone()));
                                    (KeyRef::New(key_index), choice.sealer)
                                }
                                (None, None) => {
                                    return Err(StoreError::Corrupt("a new key without wrapped bytes".into()).into())
                                }
                            }
                        }
                    };
                    (false, json, key)
                }
            };
            let identity = RecordIdentity {
                store_id: self.keyring.store_id(),
                resource_type: &write.resource_type,
                resource_key: &resource_key,
                version,
                deleted,
            };
            // Check before sealing: what we seal must name this resource and version.
            let head = stamp::parse_head(&json)
                .ok_or_else(|| StoreError::Corrupt("stamped resource does not parse".into()))?;
            assert!(
                head.resource_type == write.resource_type
                    && head.id == write.id
                    && head.version_id.parse::<u64>() == Ok(version),
                "a stamped resource names another resource or version"
            );
            let sealed = key.1.seal(&identity, &json).map_err(StoreError::from)?;
            let leaf_hash = medvault_ledger::LeafData::resource_version(medvault_ledger::ResourceVersionFields {
                resource_type: &write.resource_type,
                resource_id: &write.id,
                version,
                sealed_sha256: medvault_crypto::sha256(&sealed),
                deleted,
                recorded_ms: now_ms,
                author,
            })
            .map_err(|e| StoreError::Corrupt(format!("ledger leaf: {e}")))?
            .leaf_hash();
            version_to_write.push(index);
            job.versions.push(NewVersion {
                resource_key,
                resource_type: write.resource_type.clone(),
                expected,
                version,
                key: key.0,
                recorded_ms: now_ms,
                deleted,
                sealed,
                leaf_hash,
                author: author.to_string(),
                care_links,
                search,
            });
            outcomes.push(Outcome::Written { index, version, created, deleted, json, recorded_ms: now_ms });
        }
        let names = writes.iter().map(|w| (w.resource_type.clone(), w.id.clone())).collect();
        Ok(Prepared { job, new_key_sealers: new_keys, outcomes, version_to_write, names })
    }

    fn finish(&self, prepared: Prepared, receipt: &engine::VersionReceipt) -> Result<Vec<Written>, WriteError> {
        for (token, (key_index, sealer)) in prepared.new_key_sealers {
            if let Some(key_id) = receipt.new_key_ids.get(key_index) {
                self.keyring.remember(*key_id, token, sealer)?;
            }
        }
        let mut seqs = receipt.seqs.iter();
        let mut leaves = receipt.leaf_indexes.iter();
        Ok(prepared
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Written { index, version, created, deleted, json, recorded_ms } => Written {
                    resource_type: prepared.names[index].0.clone(),
                    id: prepared.names[index].1.clone(),
                    version,
                    recorded_ms,
                    deleted,
                    created,
                    noop: false,
                    seq: seqs.next().copied().unwrap_or(0),
                    json,
                    leaf_index: leaves.next().copied().unwrap_or(0),
                    checkpoint_size: receipt.checkpoint_size,
                },
                Outcome::Noop { index, current } => Written {
                    resource_type: prepared.names[index].0.clone(),
                    id: prepared.names[index].1.clone(),
                    version: current.unwrap_or(0),
                    recorded_ms: 0,
                    deleted: true,
                    created: false,
                    noop: true,
                    seq: 0,
                    json: Vec::new(),
                    leaf_index: 0,
                    checkpoint_size: receipt.checkpoint_size,
                },
            })
            .collect())
    }

    /// The compartment token of a patient id (`docs/format/key-hierarchy.md`).
    pub fn compartment_token(&self, patient_id: &str) -> [u8; 32] {
        self.keyring.compartment_token(patient_id)
    }

    /// The keyed token of a practitioner in care relationships.
    pub fn practitioner_token(&self, practitioner_id: &str) -> [u8; 32] {
        self.keyring.practitioner_token(practitioner_id)
    }

    /// Whose record the current version of a resource is: `None` if the resource never
    /// existed, `Some(None)` for shared data, `Some(Some(token))` for a patient's.
    /// Deleted resources keep the compartment of their tombstone.
    pub fn current_compartment(&self, resource_type: &str, id: &str) -> Result<Option<Option<[u8; 32]>>, StoreError> {
        let resource_key = self.keyring.resource_key(resource_type, id);
        let Some(state) = self.engine.current_state(&resource_key)? else { return Ok(None) };
        let (_, compartment) = self.keyring.sealer_and_compartment(self.engine.as_ref(), state.key_id)?;
        Ok(Some(compartment))
    }

    /// The compartment a new body for `resource_type/id` would be sealed in.
    pub fn compartment_of(&self, resource_type: &str, id: &str, resource: &serde_json::Value) -> Option<[u8; 32]> {
        compartment_owner(resource_type, id, resource).map(|patient| self.keyring.compartment_token(&patient))
    }

    /// Mints an access token for the service client `client` with SMART `scopes`
    /// (space-separated, already checked); the token is returned once, only its digest is
    /// stored. People log in with a password and a second factor instead.
    pub fn create_service_token(
        &self,
        client: &str,
        scopes: &str,
        expires_ms: Option<i64>,
    ) -> Result<zeroize::Zeroizing<String>, StoreError> {
        let minted = medvault_crypto::new_access_token()?;
        self.engine.insert_token(TokenRow {
            digest: minted.digest,
            client: client.to_string(),
            role: SERVICE_ROLE.to_string(),
            scopes: scopes.to_string(),
            created_ms: self.clock.now_ms(),
            expires_ms,
            revoked_ms: None,
        })?;
        Ok(minted.token)
    }

    /// The live token row for a presented bearer token, or `None` (unknown, revoked, expired).
    pub fn authenticate_token(&self, token: &str) -> Result<Option<TokenRow>, StoreError> {
        let digest = medvault_crypto::access_token_digest(token);
        let Some(row) = self.engine.token(&digest)? else { return Ok(None) };
        let now_ms = self.clock.now_ms();
        let live = medvault_crypto::constant_time_eq(&row.digest, &digest)
            && row.revoked_ms.is_none()
            && row.expires_ms.is_none_or(|expires| now_ms < expires);
        Ok(live.then_some(row))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.engine.tokens()
    }

    pub fn revoke_tokens(&self, client: &str) -> Result<u64, StoreError> {
        self.engine.revoke_tokens(client, self.clock.now_ms())
    }

    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        let counts = self.engine.counts()?;
        let text = |name| -> Result<String, StoreError> {
            Ok(self.engine.meta(name)?.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default())
        };
        let database_bytes = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(self.data_dir.join(format!("{DATABASE_FILE}{suffix}"))).ok())
            .map(|m| m.len())
            .sum();
        Ok(StoreStatus {
            data_dir: self.data_dir.clone(),
            store_id: medvault_base::hex::encode(self.keyring.store_id()),
            format_version: text("format_version")?,
            master_key_source: text("master_key_source")?,
            by_type: counts.by_type,
            data_keys: counts.data_keys,
            tokens_active: counts.tokens_active,
            audit_blocks: counts.audit_blocks,
            audit_records: counts.audit_records,
            database_bytes,
            ledger_leaves: self.engine.ledger_size()?,
            checkpoint_size: self.engine.latest_checkpoint()?.map(|c| c.tree_size),
        })
    }

    /// Waits for queued writes and stops the writer.
    pub fn close(&self) {
        self.engine.close();
    }
}

struct Prepared {
    job: VersionJob,
    new_key_sealers: HashMap<[u8; 32], (usize, Arc<medvault_crypto::Sealer>)>,
    outcomes: Vec<Outcome>,
    /// For each version in `job`, the index of the write it came from.
    version_to_write: Vec<usize>,
    /// (type, id) of each write, in request order.
    names: Vec<(String, String)>,
}

enum Outcome {
    Written { index: usize, version: u64, created: bool, deleted: bool, json: Vec<u8>, recorded_ms: i64 },
    Noop { index: usize, current: Option<u64> },
}

/// The patient whose compartment a body belongs to: a Patient's own id, or the
/// compartment owner the Patient CompartmentDefinition gives.
fn compartment_owner(resource_type: &str, id: &str, resource: &serde_json::Value) -> Option<String> {
    match medvault_fhir::patient_compartment_owner(resource) {
        Some(patient_id) if resource_type != "Patient" => Some(patient_id),
        _ if resource_type == "Patient" => Some(id.to_string()),
        _ => None,
    }
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))
}
