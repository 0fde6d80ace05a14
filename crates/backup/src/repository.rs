//! A backup repository: init, create a snapshot from a live store, list, restore into a new
//! data directory, verify, prune (`docs/format/backup-repository.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use medvault_base::hex;
use medvault_base::limits::BACKUP_TREE_DEPTH_MAX;
use medvault_ledger::{RootBuilder, Verifier};
use medvault_store::backup::BackupDump;
use medvault_store::backup::{
    DestroyedKey, Rebuild, RebuildTable, RebuiltLedger, TableContent, LEAF_HASHES_TABLE, LEAF_PROVEN_TABLES,
};
use medvault_store::Store;
use serde_json::{json, Value};

use crate::chunker::{Chunker, CHUNK_MAX_BYTES};
use crate::keys::{self, BlobCipher, BlobType, PruneKey, RecoverySecret, RepositoryKeys};
use crate::manifest::{self, Config, Erasure, Manifest};
use crate::pack::{self, BlobRef, IdCheck, PackWriter};
use crate::storage::{ObjectStore, PruneStore, StorageError};
use crate::BackupError;

/// Packs are closed at this size (`pack-target-bytes`).
pub const PACK_TARGET_BYTES: u64 = 16 * 1024 * 1024;
/// Tree blobs hold at least this many references before a content-defined cut…
const TREE_REFS_MIN: usize = 16;
/// …cut after a reference whose id's last 32 bits are 0 modulo this power of two (about
/// 64 per tree)…
const TREE_CUT_MODULUS: u32 = 64;
/// …and at most this many (256 × 78 bytes = 19,968 bytes).
const TREE_REFS_MAX: usize = 256;
/// Blobs (about 8 KiB each) the restore's reading thread hands the writer at once: fewer
/// hand-overs, fewer thread wake-ups.
const PIPE_BATCH_BLOBS: usize = 16;
/// Batches the reading thread may run ahead of the writer.
const PIPE_BATCHES: usize = 16;
/// Bytes of chunks the dumping thread hands the sealing thread at once.
const DUMP_BATCH_BYTES: usize = 256 * 1024;
/// Batches the dumping thread may run ahead of the sealing one.
const DUMP_BATCHES: usize = 8;
/// Closed packs waiting for the storing thread (16 MiB each).
const PACKS_IN_FLIGHT: usize = 2;
/// After this many new data blobs of a stream in a row did not compress (most of a store
/// is sealed records: ciphertext), compression is tried on one in
/// `COMPRESS_PROBE_INTERVAL` until one does again.
const INCOMPRESSIBLE_RUN_MIN: u64 = 16;
const COMPRESS_PROBE_INTERVAL: u64 = 16;

/// A snapshot whose manifest verified.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Object name, `snapshots/<tree size>-<hash>`.
    pub name: String,
    pub manifest: Manifest,
}

/// A phase and its progress, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Valid snapshots by tree size, and refused ones with the reason.
pub type SnapshotList = (Vec<Snapshot>, Vec<(String, String)>);

#[derive(Debug, Clone, Default)]
pub struct CreateReport {
    pub name: String,
    /// The repository already held a snapshot of exactly this state: nothing was written.
    pub unchanged: bool,
    pub parent: Option<String>,
    pub tree_size: u64,
    pub parent_tree_size: u64,
    pub last_leaf_ms: i64,
    /// Bytes of the logical dump (all tables and leaf hashes).
    pub dump_bytes: u64,
    /// Bytes of the rows of `versions` added since the parent (what changed).
    pub tables: Vec<(String, u64, u64)>,
    pub blobs_new: u64,
    pub blobs_reused: u64,
    pub packs_written: u64,
    /// Every byte added to the repository: packs, manifest, erasure records.
    pub bytes_written: u64,
    pub erasures_written: u64,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub snapshot: String,
    pub tree_size: u64,
    pub last_leaf_ms: i64,
    pub tables: Vec<(String, u64)>,
    pub bytes_read: u64,
    pub erasures_applied: u64,
    pub elapsed_s: f64,
}

/// One problem `verify` found; `object` names the repository object.
#[derive(Debug, Clone)]
pub struct VerifyFinding {
    pub kind: &'static str,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub packs: u64,
    pub blobs: u64,
    pub bytes_read: u64,
    /// Whether blob contents and ledgers were checked (the recovery key was given).
    pub contents_checked: bool,
    pub unreferenced_packs: u64,
    pub findings: Vec<VerifyFinding>,
    pub elapsed_s: f64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn find(&mut self, kind: &'static str, object: impl Into<String>, message: impl Into<String>) {
        self.findings.push(VerifyFinding { kind, object: object.into(), message: message.into() });
    }
}

#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub record: String,
    pub snapshots_removed: Vec<String>,
    pub packs_removed: u64,
    pub bytes_removed: u64,
}

#[derive(Debug)]
pub struct Repository {
    objects: Arc<dyn ObjectStore>,
    config: Config,
    log_key: Verifier,
}

impl Repository {
    /// Creates a repository for `store`, whose snapshots only the holder of the recovery key
    /// can read and only the holder of the prune key can remove.
    pub fn init(
        objects: Arc<dyn ObjectStore>,
        store: &Store,
        recovery_public: [u8; 32],
        prune_public: [u8; 32],
    ) -> Result<Self, BackupError> {
        if objects.size("config").is_ok() {
            return Err(BackupError::State("the directory already holds a backup repository".into()));
        }
        let repository_id = medvault_crypto::random::array::<16>().map_err(|e| BackupError::Key(e.to_string()))?;
        let keys = server_keys(store);
        let wrapped_keys = keys::wrap(&recovery_public, &keys.to_bytes(), "repository-keys", &repository_id)?;
        let log_key = store.ledger_verifier()?;
        let config = Config {
            repository_id,
            store_id: store_id(store)?,
            log_key: log_key.to_vkey(),
            recovery_public,
            prune_public,
            wrapped_keys,
            pack_target_bytes: PACK_TARGET_BYTES,
        };
        let note = store.sign_backup_note(&config.body())?;
        objects.put_new("config", note.as_bytes())?;
        Ok(Self { objects, config, log_key })
    }

    /// Opens a repository. With `pinned`, the config must be signed by that log key (from
    /// the operator's records); without, by the key it names, which the caller should show.
    pub fn open(objects: Arc<dyn ObjectStore>, pinned: Option<&Verifier>) -> Result<Self, BackupError> {
        let note = match objects.get("config") {
            Ok(note) => note,
            Err(StorageError::NotFound(_)) => {
                return Err(BackupError::NotFound("a backup repository (no config)".into()))
            }
            Err(error) => return Err(error.into()),
        };
        let text = std::str::from_utf8(&note).map_err(|_| BackupError::Integrity("the config is not text".into()))?;
        let unverified_body = text.rfind("\n\n").map(|end| &text[..end + 1]).unwrap_or(text);
        let claimed = Config::parse(unverified_body)?;
        let claimed_key = Verifier::parse(&claimed.log_key)
            .map_err(|e| BackupError::Integrity(format!("the config's log key is malformed: {e}")))?;
        let log_key = match pinned {
            Some(pinned) if pinned.to_vkey() != claimed.log_key => {
                return Err(BackupError::Forged(format!(
                    "the repository is bound to the log key {}, not to the pinned {}",
                    claimed.log_key,
                    pinned.to_vkey()
                )))
            }
            Some(pinned) => pinned.clone(),
            None => claimed_key,
        };
        let body = manifest::open_signed(&note, &log_key, "repository config")?;
        let config = Config::parse(&body)?;
        Ok(Self { objects, config, log_key })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn log_key(&self) -> &Verifier {
        &self.log_key
    }

    /// Every snapshot whose manifest verifies, by tree size; and the refused ones with why.
    pub fn snapshots(&self) -> Result<SnapshotList, BackupError> {
        let mut valid = Vec::new();
        let mut refused = Vec::new();
        for name in self.objects.list("snapshots/")? {
            match self.open_manifest(&name) {
                Ok(manifest) => valid.push(Snapshot { name, manifest }),
                Err(error) => refused.push((name, error.to_string())),
            }
        }
        let generations = same_size_generations(&valid);
        let mut ordered: Vec<(u64, Snapshot)> = generations.into_iter().zip(valid).collect();
        ordered.sort_by(|(a_generation, a), (b_generation, b)| {
            (a.manifest.tree_size, a_generation, &a.name).cmp(&(b.manifest.tree_size, b_generation, &b.name))
        });
        Ok((ordered.into_iter().map(|(_, snapshot)| snapshot).collect(), refused))
    }

    fn open_manifest(&self, name: &str) -> Result<Manifest, BackupError> {
        let note = self.objects.get(name)?;
        let digest = hex::encode(&keys::sha256(&note)[..8]);
        if !name.ends_with(&format!("-{digest}")) {
            return Err(BackupError::Integrity(format!("{name} does not match its name (altered or renamed)")));
        }
        let body = manifest::open_signed(&note, &self.log_key, "manifest")?;
        let manifest = Manifest::parse(&body)?;
        if manifest.repository_id != self.config.repository_id {
            return Err(BackupError::Forged(format!("{name} belongs to another repository")));
        }
        if !name.starts_with(&format!("snapshots/{:020}-", manifest.tree_size)) {
            return Err(BackupError::Integrity(format!("{name} names another tree size than its manifest")));
        }
        let opened = medvault_ledger::open_checkpoint(manifest.checkpoint.as_bytes(), &self.log_key, &[])
            .map_err(|e| BackupError::Forged(format!("{name}: its checkpoint is not signed by the log key: {e}")))?;
        if opened.checkpoint.size() != manifest.tree_size || *opened.checkpoint.root() != manifest.root {
            return Err(BackupError::Forged(format!("{name}: its checkpoint names another tree than the manifest")));
        }
        Ok(manifest)
    }

    /// Every erasure record that verifies.
    pub fn erasures(&self) -> Result<Vec<Erasure>, BackupError> {
        let mut erasures = Vec::new();
        for name in self.objects.list("erasures/")? {
            let note = self.objects.get(&name)?;
            let Ok(body) = manifest::open_signed(&note, &self.log_key, "erasure record") else { continue };
            match Erasure::parse(&body) {
                Ok(erasure) if erasure.repository_id == self.config.repository_id => erasures.push(erasure),
                _ => continue,
            }
        }
        Ok(erasures)
    }

    /// Creates a snapshot of `store` while it runs: one read transaction, bound to the
    /// latest signed checkpoint; deduplicated against the newest snapshot.
    pub fn create_snapshot(&self, store: &Store, progress: Progress<'_>) -> Result<CreateReport, BackupError> {
        let started = Instant::now();
        if store_id(store)? != self.config.store_id {
            return Err(BackupError::State("this repository belongs to another store".into()));
        }
        if store.ledger_verifier()?.to_vkey() != self.config.log_key {
            return Err(BackupError::State("the store's log key is not the one this repository is bound to".into()));
        }
        let dump = store.backup_dump()?;
        let opened = medvault_ledger::open_checkpoint(dump.checkpoint.note.as_bytes(), &self.log_key, &[])
            .map_err(|e| BackupError::Integrity(format!("the store's latest checkpoint does not verify: {e}")))?;
        if opened.checkpoint.size() != dump.checkpoint.tree_size || *opened.checkpoint.root() != dump.checkpoint.root {
            return Err(BackupError::Integrity("the store's latest checkpoint row disagrees with its note".into()));
        }
        let (snapshots, _) = self.snapshots()?;
        let parent = snapshots.last();
        if let Some(parent) = parent {
            if parent.manifest.tree_size > dump.checkpoint.tree_size {
                return Err(BackupError::State(format!(
                    "the newest snapshot {} covers {} leaves but the store has {}: this store is older than the repository",
                    parent.name, parent.manifest.tree_size, dump.checkpoint.tree_size
                )));
            }
        }
        let keys = server_keys(store);
        let mut writer = SnapshotWriter::new(self, keys.clone())?;
        if let Some(parent) = parent {
            writer.load_parent(&parent.manifest)?;
        }
        let mut report = CreateReport {
            parent: parent.map(|p| p.name.clone()),
            tree_size: dump.checkpoint.tree_size,
            parent_tree_size: parent.map_or(0, |p| p.manifest.tree_size),
            last_leaf_ms: dump.last_leaf_ms,
            ..CreateReport::default()
        };
        let database_bytes = std::fs::metadata(store.data_dir().join(medvault_store::sqlite::DATABASE_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        let checkpoint = dump.checkpoint.clone();
        let destroyed_keys = dump.destroyed_keys.clone();
        let schema = dump.schema.clone();
        let dump_tables = dump.tables.clone();
        // Three threads: this one dedupes, compresses and seals; one dumps rows and cuts
        // them into chunks; one hashes and stores the packs as they close.
        let chunker = Chunker::new(keys.id_key.expose_secret());
        let root_ref = std::thread::scope(|scope| -> Result<BlobRef, BackupError> {
            let (chunk_sender, chunks) = std::sync::mpsc::sync_channel(DUMP_BATCHES);
            let (recycle, recycled) = std::sync::mpsc::sync_channel(DUMP_BATCHES + 2);
            let dumper = std::thread::Builder::new()
                .name("backup-dump".into())
                .spawn_scoped(scope, move || dump_streams(dump, chunker, chunk_sender, recycled))
                .map_err(|e| BackupError::Io(format!("cannot start the backup's dumping thread: {e}")))?;
            let (pack_sender, packs) = std::sync::mpsc::sync_channel(PACKS_IN_FLIGHT);
            let (buffer_back, buffers) = std::sync::mpsc::sync_channel(PACKS_IN_FLIGHT + 2);
            let objects = self.objects.as_ref();
            let storer = std::thread::Builder::new()
                .name("backup-packs".into())
                .spawn_scoped(scope, move || store_packs(objects, packs, buffer_back));
            let storer = match storer {
                Ok(storer) => storer,
                Err(error) => {
                    drop(chunks);
                    let _ = dumper.join();
                    return Err(BackupError::Io(format!("cannot start the backup's pack thread: {error}")));
                }
            };
            writer.pack_sink = Some(PackSink { sender: pack_sender, buffers });
            let mut pipe = DumpPipe { chunks, recycle };
            let sealed = (|| -> Result<BlobRef, BackupError> {
                let mut tables_json = Vec::new();
                for table in &dump_tables {
                    let (tree, rows, bytes) =
                        writer.seal_stream(&mut pipe, &mut |done| progress("dump", done, database_bytes))?;
                    report.tables.push((table.name.clone(), rows, bytes));
                    tables_json.push(json!({
                        "name": table.name, "create": table.create_sql, "columns": table.columns,
                        "content": table.content.name(), "rows": rows, "bytes": bytes,
                        "tree": tree.map(|(r, _)| r.to_hex()), "depth": tree.map_or(0, |(_, d)| d),
                    }));
                }
                let (tree, leaves, bytes) =
                    writer.seal_stream(&mut pipe, &mut |done| progress("dump", done, database_bytes))?;
                report.tables.push((LEAF_HASHES_TABLE.to_string(), leaves, bytes));
                let root = json!({
                    "version": 1, "tree_size": checkpoint.tree_size, "schema": schema, "tables": tables_json,
                    "leaves": {"rows": leaves, "bytes": bytes, "tree": tree.map(|(r, _)| r.to_hex()), "depth": tree.map_or(0, |(_, d)| d)},
                });
                let root_bytes = serde_json::to_vec(&root).map_err(|e| BackupError::Io(e.to_string()))?;
                let root_ref = writer.add_blob(BlobType::Tree, &root_bytes)?;
                writer.flush_pack()?;
                Ok(root_ref)
            })();
            // Hang up on both threads (after a failure, either may wait on a channel), then
            // take their results: a thread's own failure is the cause of the sealer's.
            drop(pipe);
            writer.pack_sink = None;
            let dumped =
                dumper.join().map_err(|_| BackupError::State("the backup's dumping thread panicked".into()))?;
            let stored = storer.join().map_err(|_| BackupError::State("the backup's pack thread panicked".into()))?;
            match (sealed, dumped, stored) {
                (Err(BackupError::State(message)), Err(error), _) if message == DUMP_STOPPED => Err(error),
                (Err(BackupError::State(message)), _, Err(error)) if message == PACKS_STOPPED => Err(error),
                (Err(error), _, _) => Err(error),
                (Ok(_), Err(error), _) | (Ok(_), _, Err(error)) => Err(error),
                (Ok(root_ref), Ok(()), Ok(stored)) => {
                    for (id, sha, bytes) in stored {
                        writer.packs_used.insert(id, sha);
                        writer.bytes_written += bytes;
                        writer.packs_written += 1;
                    }
                    Ok(root_ref)
                }
            }
        })?;
        report.dump_bytes = writer.dump_bytes;
        if let Some(parent) = parent {
            if parent.manifest.snapshot_root.id == root_ref.id && writer.blobs_new == 0 {
                report.name = parent.name.clone();
                report.unchanged = true;
                report.elapsed_s = started.elapsed().as_secs_f64();
                return Ok(report);
            }
        }
        for destroyed in &destroyed_keys {
            let erasure = Erasure {
                repository_id: self.config.repository_id,
                key_id: destroyed.key_id,
                compartment: destroyed.compartment,
                destroyed_ms: destroyed.destroyed_ms,
            };
            let note = store.sign_backup_note(&erasure.body())?;
            let name = format!("erasures/{}", hex::encode(&keys::sha256(note.as_bytes())[..16]));
            match self.objects.put_new(&name, note.as_bytes()) {
                Ok(()) => {
                    report.erasures_written += 1;
                    report.bytes_written += note.len() as u64;
                }
                Err(StorageError::AlreadyExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let manifest = Manifest {
            repository_id: self.config.repository_id,
            parent: parent.map(|p| p.name.clone()),
            tree_size: checkpoint.tree_size,
            root: checkpoint.root,
            last_leaf_ms: report.last_leaf_ms,
            checkpoint: checkpoint.note.clone(),
            snapshot_root: root_ref,
            packs: writer.packs_used.iter().map(|(id, sha)| (*id, *sha)).collect(),
        };
        let note = store.sign_backup_note(&manifest.body())?;
        let name = format!("snapshots/{:020}-{}", manifest.tree_size, hex::encode(&keys::sha256(note.as_bytes())[..8]));
        self.objects.put_new(&name, note.as_bytes())?;
        report.bytes_written += writer.bytes_written + note.len() as u64;
        report.blobs_new = writer.blobs_new;
        report.blobs_reused = writer.blobs_reused;
        report.packs_written = writer.packs_written;
        report.name = name;
        report.elapsed_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Finds a snapshot by name, by a unique prefix of its name, or `latest`; refuses one
    /// whose manifest did not verify.
    pub fn find_snapshot(&self, wanted: &str) -> Result<Snapshot, BackupError> {
        let (snapshots, refused) = self.snapshots()?;
        if wanted == "latest" {
            return snapshots.last().cloned().ok_or_else(|| BackupError::NotFound("a valid snapshot".into()));
        }
        let full = if wanted.starts_with("snapshots/") { wanted.to_string() } else { format!("snapshots/{wanted}") };
        if let Some((name, reason)) = refused.iter().find(|(name, _)| *name == full) {
            return Err(BackupError::Forged(format!("{name}: {reason}")));
        }
        let matches: Vec<&Snapshot> = snapshots.iter().filter(|s| s.name.starts_with(&full)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(BackupError::NotFound(format!("snapshot {wanted}"))),
            _ => Err(BackupError::State(format!("{wanted} names several snapshots; give more of the name"))),
        }
    }

    /// Restores `snapshot` into `data_dir` (which must not exist or be empty): refuses it if
    /// it is older than `witness` (a signed checkpoint the operator holds); proves that the
    /// restored leaves reproduce the signed root; applies every erasure record.
    ///
    /// The rows of `versions` and `audit_blocks` are proven by the store's `verify`, not
    /// here (their blobs' ids are not recomputed: `IdCheck`): open the restored store and
    /// run it before trusting them, as `medvault backup restore` and `drill` do.
    pub fn restore(
        &self,
        snapshot: &Snapshot,
        recovery: &RecoverySecret,
        data_dir: &Path,
        witness: Option<(u64, [u8; 32])>,
        progress: Progress<'_>,
    ) -> Result<RestoreReport, BackupError> {
        let started = Instant::now();
        let manifest = &snapshot.manifest;
        if let Some((witness_size, _)) = witness {
            if manifest.tree_size < witness_size {
                return Err(BackupError::Stale(format!(
                    "{} covers {} leaves, fewer than the witness checkpoint's {witness_size}: an old (possibly planted) backup",
                    snapshot.name, manifest.tree_size
                )));
            }
        }
        let keys = self.repository_keys(recovery)?;
        let mut reader = BlobReader::new(self, keys, Some(recovery));
        let root = reader.read_root(&manifest.snapshot_root)?;
        if root["tree_size"].as_u64() != Some(manifest.tree_size) {
            return Err(BackupError::Integrity(format!("{}: its root names another tree size", snapshot.name)));
        }
        let tables = root_tables(&root).ok_or_else(|| malformed_root(&snapshot.name))?;
        let schema: Vec<String> = root["schema"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let erasures: Vec<DestroyedKey> = self
            .erasures()?
            .into_iter()
            .map(|e| DestroyedKey { key_id: e.key_id, compartment: e.compartment, destroyed_ms: e.destroyed_ms })
            .collect();
        let total_bytes: u64 =
            root["tables"].as_array().into_iter().flatten().filter_map(|t| t["bytes"].as_u64()).sum::<u64>()
                + root["leaves"]["bytes"].as_u64().unwrap_or(0);
        // Streams in the order the rebuild takes them: each dumped table, then the leaves.
        // Whose blobs' ids are recomputed: see `IdCheck` and "Restore" in the format.
        let mut streams = Vec::new();
        for (table, json) in tables.iter().zip(root["tables"].as_array().into_iter().flatten()) {
            if table.content == TableContent::Rows {
                let proven = LEAF_PROVEN_TABLES.contains(&table.name.as_str());
                streams.push((table_tree(json)?, proven));
            }
        }
        streams.push((table_tree(&root["leaves"])?, true));
        let mut rebuild = Rebuild::create(data_dir, &tables, &schema, &erasures)?;
        let mut report = RestoreReport {
            snapshot: snapshot.name.clone(),
            tree_size: manifest.tree_size,
            last_leaf_ms: manifest.last_leaf_ms,
            ..RestoreReport::default()
        };
        let mut sizes = vec![manifest.tree_size];
        sizes.extend(witness.map(|(size, _)| size));
        // Blobs are read, opened and checked on a second thread while this one writes the
        // database; a bounded channel keeps the reader at most `PIPE_BATCHES` batches ahead.
        let (ledger, bytes_read) = std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(PIPE_BATCHES);
            let (recycle, recycled) = std::sync::mpsc::sync_channel((PIPE_BATCHES + 2) * PIPE_BATCH_BLOBS);
            let producer = std::thread::Builder::new()
                .name("restore-read".into())
                .spawn_scoped(scope, move || read_streams(reader, streams, sender, recycled))
                .map_err(|e| BackupError::Io(format!("cannot start the restore's reading thread: {e}")))?;
            let written = (|| -> Result<RebuiltLedger, BackupError> {
                let mut pipe = PipeReader {
                    receiver,
                    recycle,
                    batch: Vec::new(),
                    current: Vec::new(),
                    position: 0,
                    end: 0,
                    ended: false,
                    total: total_bytes,
                    progress,
                };
                for table in tables.iter().filter(|t| t.content == TableContent::Rows) {
                    pipe.ended = false;
                    let rows = rebuild.insert_rows(&table.name, &table.columns, &mut pipe)?;
                    report.tables.push((table.name.clone(), rows));
                }
                pipe.ended = false;
                Ok(rebuild.insert_leaf_hashes(&mut pipe, &sizes)?)
            })();
            // The pipe (and its receiver) is gone: a reader still sending stops.
            match producer.join() {
                Ok(Ok(bytes_read)) => written.map(|ledger| (ledger, bytes_read)),
                // The reader's failure (a damaged blob) is the cause of the writer's.
                Ok(Err(error)) => Err(error),
                Err(_) => Err(BackupError::State("the restore's reading thread panicked".into())),
            }
        })?;
        if ledger.leaves != manifest.tree_size {
            return Err(BackupError::Integrity(format!(
                "{}: the snapshot holds {} leaves, not the {} its checkpoint signs",
                snapshot.name, ledger.leaves, manifest.tree_size
            )));
        }
        let root_at = |size: u64| ledger.roots.iter().find(|(s, _)| *s == size).map(|(_, r)| *r);
        if root_at(manifest.tree_size) != Some(manifest.root) {
            return Err(BackupError::Integrity(format!(
                "{}: the restored ledger does not reproduce the signed checkpoint root",
                snapshot.name
            )));
        }
        if let Some((witness_size, witness_root)) = witness {
            if root_at(witness_size) != Some(witness_root) {
                return Err(BackupError::Forged(format!(
                    "{}: its ledger at the witness's size {witness_size} differs from the witness checkpoint (a fork)",
                    snapshot.name
                )));
            }
        }
        report.tables.push((LEAF_HASHES_TABLE.to_string(), ledger.leaves));
        report.erasures_applied = rebuild.erasures_applied();
        report.bytes_read = bytes_read;
        rebuild.finish()?;
        report.elapsed_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Checks the repository; with the recovery key, also every blob and every snapshot's
    /// ledger. Names every problem and the object it is in.
    pub fn verify(
        &self,
        recovery: Option<&RecoverySecret>,
        progress: Progress<'_>,
    ) -> Result<VerifyReport, BackupError> {
        let started = Instant::now();
        let mut report = VerifyReport { contents_checked: recovery.is_some(), ..VerifyReport::default() };
        let (snapshots, refused) = self.snapshots()?;
        for (name, reason) in &refused {
            report.find("snapshot-refused", name.clone(), reason.clone());
        }
        report.snapshots = snapshots.len() as u64;
        let pruned = self.prune_records()?;
        let all_names: HashSet<String> = self.objects.list("snapshots/")?.into_iter().collect();
        for snapshot in &snapshots {
            if let Some(parent) = &snapshot.manifest.parent {
                if !all_names.contains(parent) && !pruned.0.contains(parent) {
                    report.find(
                        "snapshot-missing",
                        parent.clone(),
                        format!("{} names it as parent, but it is gone and no prune record removed it", snapshot.name),
                    );
                }
            }
        }
        let mut expected: BTreeMap<[u8; 32], ([u8; 32], Vec<&str>)> = BTreeMap::new();
        for snapshot in &snapshots {
            for (id, sha) in &snapshot.manifest.packs {
                let entry = expected.entry(*id).or_insert((*sha, Vec::new()));
                if entry.0 != *sha {
                    report.find("pack-conflict", pack::pack_name(id), "two manifests give this pack different hashes");
                }
                entry.1.push(&snapshot.name);
            }
        }
        let existing: HashSet<String> = self.objects.list("packs/")?.into_iter().collect();
        report.unreferenced_packs =
            existing.iter().filter(|name| !expected.keys().any(|id| pack::pack_name(id) == **name)).count() as u64;
        let keys = recovery.map(|r| self.repository_keys(r)).transpose()?;
        let mut good_blobs: HashSet<([u8; 32], [u8; 32])> = HashSet::new();
        let mut reader = keys.clone().map(|k| BlobReader::new(self, k, recovery));
        let total = expected.len() as u64;
        for (done, (id, (sha, users))) in expected.iter().enumerate() {
            progress("packs", done as u64, total);
            let name = pack::pack_name(id);
            if !existing.contains(&name) {
                report.find("pack-missing", name, format!("used by {}", users.join(", ")));
                continue;
            }
            let bytes = self.objects.get(&name)?;
            report.bytes_read += bytes.len() as u64;
            report.packs += 1;
            if keys::sha256(&bytes) != *sha {
                report.find(
                    "pack-damaged",
                    name,
                    format!("its bytes do not match the hash its manifests sign; used by {}", users.join(", ")),
                );
                continue;
            }
            if let Some(reader) = reader.as_mut() {
                match reader.check_pack(id, &bytes) {
                    Ok((ids, bad)) => {
                        report.blobs += ids.len() as u64;
                        good_blobs.extend(ids.into_iter().map(|blob| (*id, blob)));
                        for message in bad {
                            report.find("blob-damaged", name.clone(), message);
                        }
                    }
                    Err(error) => report.find("pack-damaged", name, error.to_string()),
                }
            }
        }
        progress("packs", total, total);
        if let Some(reader) = reader.as_mut() {
            let sizes: Vec<(u64, [u8; 32], String)> =
                snapshots.iter().map(|s| (s.manifest.tree_size, s.manifest.root, s.name.clone())).collect();
            for snapshot in &snapshots {
                if let Err(error) = reader.check_snapshot(snapshot, &good_blobs, &sizes, &mut report) {
                    report.find("snapshot-damaged", snapshot.name.clone(), error.to_string());
                }
            }
        }
        report.elapsed_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Removes all but the newest `keep_last` snapshots and the packs only they use, after a
    /// full verify, and only with the prune key; writes the signed prune record before
    /// deleting anything.
    pub fn prune(
        &self,
        objects: &dyn PruneStore,
        prune_key: &PruneKey,
        recovery: &RecoverySecret,
        keep_last: usize,
    ) -> Result<PruneReport, BackupError> {
        if prune_key.public_key() != self.config.prune_public {
            return Err(BackupError::Key("this prune key is not the one the repository was created with".into()));
        }
        if keep_last == 0 {
            return Err(BackupError::State("prune keeps at least one snapshot".into()));
        }
        let report = self.verify(Some(recovery), &mut |_, _, _| {})?;
        if !report.ok() {
            return Err(BackupError::State(format!(
                "the repository does not verify ({} problem(s)); prune removes nothing from a damaged repository",
                report.findings.len()
            )));
        }
        let (snapshots, _) = self.snapshots()?;
        let split = snapshots.len().saturating_sub(keep_last);
        let (remove, keep) = snapshots.split_at(split);
        // The packs only removed snapshots name. A pack no manifest names is left alone: it
        // may belong to a backup being written now (its packs are stored before its
        // manifest, which will name them; `verify` counts such packs as unreferenced).
        let kept_packs: HashSet<&[u8; 32]> =
            keep.iter().flat_map(|s| s.manifest.packs.iter().map(|(id, _)| id)).collect();
        let existing: HashSet<String> = self.objects.list("packs/")?.into_iter().collect();
        let packs: BTreeSet<String> = remove
            .iter()
            .flat_map(|s| s.manifest.packs.iter().map(|(id, _)| id))
            .filter(|id| !kept_packs.contains(id))
            .map(pack::pack_name)
            .filter(|name| existing.contains(name))
            .collect();
        let mut body = format!("{}\nrepository {}\n", manifest::PRUNE_DOMAIN, hex::encode(&self.config.repository_id));
        for snapshot in remove {
            body.push_str(&format!("snapshot {}\n", snapshot.name));
        }
        for name in &packs {
            body.push_str(&format!("pack {name}\n"));
        }
        let signature = prune_key.sign(body.as_bytes())?;
        let record = format!("{body}signature {}\n", STANDARD.encode(signature));
        let record_name = format!("prunes/{}", hex::encode(&keys::sha256(record.as_bytes())[..16]));
        objects.put_new(&record_name, record.as_bytes())?;
        let mut result = PruneReport { record: record_name, ..PruneReport::default() };
        for snapshot in remove {
            objects.delete(&snapshot.name)?;
            result.snapshots_removed.push(snapshot.name.clone());
        }
        for name in &packs {
            result.bytes_removed += objects.size(name).unwrap_or(0);
            objects.delete(name)?;
            result.packs_removed += 1;
        }
        Ok(result)
    }

    /// Snapshot and pack names removed by valid prune records.
    fn prune_records(&self) -> Result<(HashSet<String>, HashSet<String>), BackupError> {
        let mut snapshots = HashSet::new();
        let mut packs = HashSet::new();
        for name in self.objects.list("prunes/")? {
            let bytes = self.objects.get(&name)?;
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            let Some((body, signature)) = text.rsplit_once("signature ") else { continue };
            let Ok(signature) = STANDARD.decode(signature.trim_end()) else { continue };
            if !keys::verify_prune_signature(&self.config.prune_public, body.as_bytes(), &signature) {
                continue;
            }
            for line in body.lines() {
                if let Some(snapshot) = line.strip_prefix("snapshot ") {
                    snapshots.insert(snapshot.to_string());
                } else if let Some(pack) = line.strip_prefix("pack ") {
                    packs.insert(pack.to_string());
                }
            }
        }
        Ok((snapshots, packs))
    }

    fn repository_keys(&self, recovery: &RecoverySecret) -> Result<RepositoryKeys, BackupError> {
        if recovery.public_key() != self.config.recovery_public {
            return Err(BackupError::Key("this recovery key is not the one the repository was created with".into()));
        }
        let bytes = recovery.unwrap(&self.config.wrapped_keys, "repository-keys", &self.config.repository_id)?;
        RepositoryKeys::from_bytes(&bytes)
    }
}

fn server_keys(store: &Store) -> RepositoryKeys {
    RepositoryKeys { id_key: store.backup_key("blob-id"), metadata_key: store.backup_key("metadata") }
}

fn store_id(store: &Store) -> Result<[u8; 16], BackupError> {
    let origin = store.ledger_origin()?;
    origin
        .strip_prefix("medvault/")
        .and_then(hex::decode)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| BackupError::State("the store's ledger origin does not name its id".into()))
}

/// For each snapshot, how many of its ancestors in a row share its tree size. Snapshots of
/// one tree size (tables outside the ledger changed, the ledger did not) are ordered by their
/// signed parent links, not by name: the child is the newer. A walk stops after as many
/// steps as there are snapshots (signed links cannot loop, but a bound costs nothing).
fn same_size_generations(snapshots: &[Snapshot]) -> Vec<u64> {
    let by_name: HashMap<&str, &Snapshot> = snapshots.iter().map(|s| (s.name.as_str(), s)).collect();
    snapshots
        .iter()
        .map(|snapshot| {
            let mut generation = 0u64;
            let mut current = snapshot;
            while let Some(parent) = current.manifest.parent.as_deref().and_then(|name| by_name.get(name)) {
                if parent.manifest.tree_size != snapshot.manifest.tree_size || generation as usize >= snapshots.len() {
                    break;
                }
                generation += 1;
                current = parent;
            }
            generation
        })
        .collect()
}

fn malformed_root(name: &str) -> BackupError {
    BackupError::Integrity(format!("{name}: its snapshot root is malformed"))
}

fn table_tree(table: &Value) -> Result<Option<BlobRef>, BackupError> {
    match table["tree"].as_str() {
        Some(text) => BlobRef::from_hex(text).map(Some),
        None => Ok(None),
    }
}

/// Builds one snapshot: deduplicates, fills packs, stores them.
struct SnapshotWriter<'a> {
    repository: &'a Repository,
    keys: RepositoryKeys,
    metadata: BlobCipher,
    /// Blobs of the parent snapshot, by id.
    known: HashMap<[u8; 32], BlobRef>,
    parent_packs: HashMap<[u8; 32], [u8; 32]>,
    written: HashMap<[u8; 32], BlobRef>,
    pack: Option<PackWriter>,
    packs_used: BTreeMap<[u8; 32], [u8; 32]>,
    bytes_written: u64,
    dump_bytes: u64,
    blobs_new: u64,
    blobs_reused: u64,
    packs_written: u64,
    /// Where closed packs go to be hashed and stored (a thread of their own); without one,
    /// they are stored in turn.
    pack_sink: Option<PackSink>,
    /// New data blobs of the current stream stored raw in a row.
    incompressible_run: u64,
}

/// The storing thread's side of the channel, and the buffers it hands back.
struct PackSink {
    sender: std::sync::mpsc::SyncSender<([u8; 32], Vec<u8>)>,
    buffers: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// What the dumping thread hands the sealing one: chunks of a stream (their bytes end to
/// end, where each ends, and the stream's bytes dumped so far), or a stream's end (its rows
/// and bytes).
enum DumpPiece {
    Chunks(Vec<u8>, Vec<usize>, u64),
    End(u64, u64),
}

/// The sealing thread's end of the dump.
struct DumpPipe {
    chunks: std::sync::mpsc::Receiver<DumpPiece>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
}

/// The sealing thread's error when the dumping thread stopped (with an error of its own).
const DUMP_STOPPED: &str = "the backup's dumping thread stopped";
/// The sealing thread's error when the storing thread stopped (with an error of its own).
const PACKS_STOPPED: &str = "the backup's pack thread stopped";

/// The dumping thread: every table's rows, then the leaf hashes, cut into chunks, in
/// batches; each stream followed by its end. Stops quietly if the sealer hung up (it
/// reports its own error).
fn dump_streams(
    dump: BackupDump,
    mut chunker: Chunker,
    sender: std::sync::mpsc::SyncSender<DumpPiece>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), BackupError> {
    let mut batch =
        DumpBatch { bytes: Vec::new(), ends: Vec::new(), sender: &sender, recycled: &recycled, hung_up: false };
    batch.renew();
    for stream in 0..dump.tables.len() + 1 {
        let mut dumped = 0u64;
        let rows = {
            let mut sink = |data: &[u8]| -> Result<(), String> {
                dumped += data.len() as u64;
                let so_far = dumped;
                chunker.push(data, &mut |chunk| batch.add(chunk, so_far))
            };
            match dump.tables.get(stream) {
                Some(table) => dump.stream_rows(table, &mut sink),
                None => dump.stream_leaf_hashes(&mut sink),
            }
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(_) if batch.hung_up => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if chunker.finish(&mut |chunk| batch.add(chunk, dumped)).is_err()
            || batch.send(dumped).is_err()
            || sender.send(DumpPiece::End(rows, dumped)).is_err()
        {
            return Ok(());
        }
    }
    // Before the sealer may finish: a failure here stops the snapshot before its manifest.
    Ok(dump.check_leaves()?)
}

/// The chunks being gathered for the sealer.
struct DumpBatch<'c> {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    sender: &'c std::sync::mpsc::SyncSender<DumpPiece>,
    recycled: &'c std::sync::mpsc::Receiver<Vec<u8>>,
    /// The sealer hung up: it reports its own error.
    hung_up: bool,
}

impl DumpBatch<'_> {
    fn renew(&mut self) {
        let mut bytes =
            self.recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(DUMP_BATCH_BYTES + CHUNK_MAX_BYTES));
        bytes.clear();
        self.bytes = bytes;
        self.ends = Vec::with_capacity(DUMP_BATCH_BYTES / 1024);
    }

    fn add(&mut self, chunk: &[u8], dumped: u64) -> Result<(), String> {
        self.bytes.extend_from_slice(chunk);
        self.ends.push(self.bytes.len());
        if self.bytes.len() >= DUMP_BATCH_BYTES {
            self.send(dumped)?;
        }
        Ok(())
    }

    fn send(&mut self, dumped: u64) -> Result<(), String> {
        let bytes = std::mem::take(&mut self.bytes);
        let ends = std::mem::take(&mut self.ends);
        self.renew();
        if self.sender.send(DumpPiece::Chunks(bytes, ends, dumped)).is_err() {
            self.hung_up = true;
            return Err("the sealer stopped".into());
        }
        Ok(())
    }
}

/// The storing thread: hashes and stores each closed pack, hands its buffer back for the
/// next, and returns what it stored (id, SHA-256, bytes).
#[allow(clippy::type_complexity)]
fn store_packs(
    objects: &dyn ObjectStore,
    packs: std::sync::mpsc::Receiver<([u8; 32], Vec<u8>)>,
    buffers: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<Vec<([u8; 32], [u8; 32], u64)>, BackupError> {
    let mut stored = Vec::new();
    for (id, mut bytes) in packs {
        let sha = keys::sha256(&bytes);
        objects.put_new(&pack::pack_name(&id), &bytes)?;
        stored.push((id, sha, bytes.len() as u64));
        bytes.clear();
        // The sealer allocates anew when none comes back.
        let _ = buffers.try_send(bytes);
    }
    Ok(stored)
}

impl<'a> SnapshotWriter<'a> {
    fn new(repository: &'a Repository, keys: RepositoryKeys) -> Result<Self, BackupError> {
        Ok(Self {
            repository,
            metadata: keys::cipher(&keys.metadata_key),
            keys,
            known: HashMap::new(),
            parent_packs: HashMap::new(),
            written: HashMap::new(),
            pack: None,
            packs_used: BTreeMap::new(),
            bytes_written: 0,
            dump_bytes: 0,
            blobs_new: 0,
            blobs_reused: 0,
            packs_written: 0,
            pack_sink: None,
            incompressible_run: 0,
        })
    }

    /// Loads every blob reference of the parent snapshot. Only trees are read: they are
    /// sealed under the metadata key, which the server holds; data stays unreadable.
    fn load_parent(&mut self, parent: &Manifest) -> Result<(), BackupError> {
        self.parent_packs = parent.packs.iter().copied().collect();
        let mut reader = BlobReader::new(self.repository, self.keys.clone(), None);
        let root = reader.read_root(&parent.snapshot_root)?;
        self.known.insert(parent.snapshot_root.id, parent.snapshot_root);
        let mut trees = Vec::new();
        for table in root["tables"].as_array().into_iter().flatten().chain(std::iter::once(&root["leaves"])) {
            trees.extend(table_tree(table)?);
        }
        while let Some(tree) = trees.pop() {
            for child in BlobRef::decode_all(&reader.read(&tree)?)? {
                if child.blob_type == BlobType::Tree {
                    trees.push(child);
                }
                self.known.insert(child.id, child);
            }
            self.known.insert(tree.id, tree);
        }
        Ok(())
    }

    fn add_blob(&mut self, blob_type: BlobType, plaintext: &[u8]) -> Result<BlobRef, BackupError> {
        let id = self.keys.blob_id(blob_type, plaintext);
        if let Some(known) = self.known.get(&id) {
            if let Some(sha) = self.parent_packs.get(&known.pack) {
                self.packs_used.insert(known.pack, *sha);
                self.blobs_reused += 1;
                return Ok(*known);
            }
        }
        if let Some(written) = self.written.get(&id) {
            return Ok(*written);
        }
        let config = &self.repository.config;
        if self.pack.is_none() {
            let buffer = self.pack_sink.as_ref().and_then(|sink| sink.buffers.try_recv().ok()).unwrap_or_default();
            self.pack = Some(PackWriter::with_buffer(
                &config.recovery_public,
                &config.repository_id,
                config.pack_target_bytes as usize,
                buffer,
            )?);
        }
        let pack = self.pack.as_mut().ok_or_else(|| BackupError::State("no open pack".into()))?;
        let run = self.incompressible_run;
        let try_compress = blob_type == BlobType::Tree || worth_compressing(run);
        let blob_ref = pack.add(&config.repository_id, &self.metadata, blob_type, id, plaintext, try_compress)?;
        if blob_type == BlobType::Data {
            self.incompressible_run = if blob_ref.compression == pack::COMPRESSION_NONE { run + 1 } else { 0 };
        }
        self.blobs_new += 1;
        self.written.insert(id, blob_ref);
        if pack.len() as u64 >= config.pack_target_bytes
            || pack.blob_count() >= medvault_base::limits::BACKUP_PACK_BLOBS_MAX
        {
            self.flush_pack()?;
        }
        Ok(blob_ref)
    }

    fn flush_pack(&mut self) -> Result<(), BackupError> {
        let Some(pack) = self.pack.take() else { return Ok(()) };
        if pack.is_empty() {
            return Ok(());
        }
        let id = pack.id;
        let bytes = pack.finish(&self.repository.config.repository_id, &self.metadata)?;
        if let Some(sink) = &self.pack_sink {
            // A closed channel means the storing thread failed; it reports why.
            return sink.sender.send((id, bytes)).map_err(|_| BackupError::State(PACKS_STOPPED.into()));
        }
        let sha = keys::sha256(&bytes);
        self.repository.objects.put_new(&pack::pack_name(&id), &bytes)?;
        self.packs_used.insert(id, sha);
        self.bytes_written += bytes.len() as u64;
        self.packs_written += 1;
        Ok(())
    }

    /// Seals the chunks of the dump's next stream as data blobs and builds its trees; returns
    /// the top tree and its depth (none for an empty stream), its rows and its bytes.
    #[allow(clippy::type_complexity)]
    fn seal_stream(
        &mut self,
        pipe: &mut DumpPipe,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Option<(BlobRef, u32)>, u64, u64), BackupError> {
        let mut refs = Vec::new();
        self.incompressible_run = 0;
        let (rows, bytes) = loop {
            match pipe.chunks.recv() {
                Ok(DumpPiece::Chunks(bytes, ends, dumped)) => {
                    let mut start = 0;
                    for end in &ends {
                        refs.push(self.add_blob(BlobType::Data, &bytes[start..*end])?);
                        start = *end;
                    }
                    progress(dumped);
                    // The dumper allocates anew when none comes back.
                    let _ = pipe.recycle.try_send(bytes);
                }
                Ok(DumpPiece::End(rows, bytes)) => break (rows, bytes),
                Err(_) => return Err(BackupError::State(DUMP_STOPPED.into())),
            }
        };
        self.dump_bytes += bytes;
        Ok((self.build_tree(refs)?, rows, bytes))
    }

    /// Groups references into tree blobs, level by level, until one remains.
    fn build_tree(&mut self, refs: Vec<BlobRef>) -> Result<Option<(BlobRef, u32)>, BackupError> {
        if refs.is_empty() {
            return Ok(None);
        }
        let mut level = refs;
        let mut depth = 0u32;
        loop {
            if level.len() == 1 && depth > 0 {
                return Ok(Some((level[0], depth)));
            }
            if depth as usize >= BACKUP_TREE_DEPTH_MAX {
                return Err(BackupError::State("a table needs more tree levels than the limit".into()));
            }
            let mut next = Vec::with_capacity(level.len() / TREE_REFS_MIN + 1);
            let mut group = Vec::with_capacity(TREE_REFS_MAX * pack::REF_BYTES);
            let mut count = 0;
            for blob_ref in &level {
                blob_ref.encode(&mut group);
                count += 1;
                if tree_cut(blob_ref, count) {
                    next.push(self.add_blob(BlobType::Tree, &group)?);
                    group.clear();
                    count = 0;
                }
            }
            if !group.is_empty() {
                next.push(self.add_blob(BlobType::Tree, &group)?);
            }
            level = next;
            depth += 1;
        }
    }
}

/// Whether to try compressing the next data blob of a stream after `run` new ones in a row
/// were stored raw: always at first, then one in `COMPRESS_PROBE_INTERVAL`.
fn worth_compressing(run: u64) -> bool {
    run < INCOMPRESSIBLE_RUN_MIN
        || (run - INCOMPRESSIBLE_RUN_MIN) % COMPRESS_PROBE_INTERVAL == COMPRESS_PROBE_INTERVAL - 1
}

/// Where a tree blob ends: content-defined on the references' (keyed) ids, on reference
/// boundaries, so an appended table changes only the last tree blob of each level.
fn tree_cut(blob_ref: &BlobRef, count: usize) -> bool {
    let tail = u32::from_be_bytes([blob_ref.id[28], blob_ref.id[29], blob_ref.id[30], blob_ref.id[31]]);
    count >= TREE_REFS_MAX || (count >= TREE_REFS_MIN && tail & (TREE_CUT_MODULUS - 1) == 0)
}

/// Reads blobs: trees with the metadata key, data with pack keys opened by the recovery key.
struct BlobReader<'a> {
    repository: &'a Repository,
    keys: RepositoryKeys,
    metadata: BlobCipher,
    recovery: Option<&'a RecoverySecret>,
    pack_ciphers: HashMap<[u8; 32], BlobCipher>,
    /// The pack last read from, kept open.
    open_pack: Option<([u8; 32], Box<dyn crate::storage::ObjectReader>)>,
    bytes_read: u64,
}

impl<'a> BlobReader<'a> {
    fn new(repository: &'a Repository, keys: RepositoryKeys, recovery: Option<&'a RecoverySecret>) -> Self {
        let metadata = keys::cipher(&keys.metadata_key);
        Self { repository, keys, metadata, recovery, pack_ciphers: HashMap::new(), open_pack: None, bytes_read: 0 }
    }

    fn read(&mut self, blob_ref: &BlobRef) -> Result<Vec<u8>, BackupError> {
        let name = pack::pack_name(&blob_ref.pack);
        let stored =
            self.repository.objects.get_range(&name, u64::from(blob_ref.offset), blob_ref.stored_length as usize)?;
        self.bytes_read += stored.len() as u64;
        let repository_id = self.repository.config.repository_id;
        if blob_ref.blob_type == BlobType::Tree {
            return pack::open_blob(&self.metadata, &self.keys, &repository_id, blob_ref, &stored);
        }
        if !self.pack_ciphers.contains_key(&blob_ref.pack) {
            let cipher = self.open_pack_key(&blob_ref.pack)?;
            self.pack_ciphers.insert(blob_ref.pack, cipher);
        }
        let cipher = &self.pack_ciphers[&blob_ref.pack];
        pack::open_blob(cipher, &self.keys, &repository_id, blob_ref, &stored)
    }

    /// Reads, opens and checks a data blob into `buffer` (reused), keeping its pack open for
    /// the next; returns the buffer holding the plaintext and where. `spare` is a second
    /// buffer for decompression. Its id is recomputed unless `proven_by_ledger`.
    fn read_data_into(
        &mut self,
        blob_ref: &BlobRef,
        mut buffer: Vec<u8>,
        spare: &mut Vec<u8>,
        proven_by_ledger: bool,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), BackupError> {
        if self.open_pack.as_ref().map(|(id, _)| id) != Some(&blob_ref.pack) {
            let name = pack::pack_name(&blob_ref.pack);
            self.open_pack = Some((blob_ref.pack, self.repository.objects.open(&name)?));
        }
        let (_, object) = self.open_pack.as_mut().expect("just opened");
        // Every byte is read over: only a buffer's new length is zeroed.
        buffer.resize(blob_ref.stored_length as usize, 0);
        object.read_exact_at(u64::from(blob_ref.offset), &mut buffer)?;
        self.bytes_read += buffer.len() as u64;
        if !self.pack_ciphers.contains_key(&blob_ref.pack) {
            let cipher = self.open_pack_key(&blob_ref.pack)?;
            self.pack_ciphers.insert(blob_ref.pack, cipher);
        }
        let cipher = &self.pack_ciphers[&blob_ref.pack];
        let id_check = if proven_by_ledger { IdCheck::ProvenByLedger } else { IdCheck::Recompute(&self.keys) };
        pack::open_blob_into(cipher, id_check, &self.repository.config.repository_id, blob_ref, buffer, spare)
    }

    fn open_pack_key(&self, id: &[u8; 32]) -> Result<BlobCipher, BackupError> {
        let name = pack::pack_name(id);
        let size = self.repository.objects.size(&name)?;
        let trailer_at = size
            .checked_sub(pack::trailer_bytes() as u64)
            .ok_or_else(|| BackupError::Integrity(format!("{name} is too short to be a pack")))?;
        let trailer = self.repository.objects.get_range(&name, trailer_at, pack::trailer_bytes())?;
        let (start, length) = pack::header_location(size, &trailer)?;
        let sealed = self.repository.objects.get_range(&name, start, length)?;
        let header = pack::open_header(&self.metadata, &self.repository.config.repository_id, &sealed, start)
            .map_err(|e| BackupError::Integrity(format!("{name}: {e}")))?;
        self.pack_cipher(&name, &header.wrapped_key)
    }

    fn pack_cipher(&self, name: &str, wrapped: &[u8]) -> Result<BlobCipher, BackupError> {
        let recovery = self.recovery.ok_or_else(|| BackupError::Key("reading data needs the recovery key".into()))?;
        let mut key = recovery
            .unwrap(wrapped, "pack-key", &self.repository.config.repository_id)
            .map_err(|_| BackupError::Integrity(format!("{name}: its key does not open with the recovery key")))?;
        let secret = medvault_crypto::Secret32::from_slice_zeroizing(&mut key)
            .ok_or_else(|| BackupError::Integrity(format!("{name}: its key is not 32 bytes")))?;
        Ok(keys::cipher(&secret))
    }

    fn read_root(&mut self, root_ref: &BlobRef) -> Result<Value, BackupError> {
        if root_ref.blob_type != BlobType::Tree {
            return Err(BackupError::Integrity("a snapshot root that is not a tree".into()));
        }
        let bytes = self.read(root_ref)?;
        let root: Value =
            serde_json::from_slice(&bytes).map_err(|_| BackupError::Integrity("a snapshot root is not JSON".into()))?;
        if root["version"].as_u64() != Some(1) {
            return Err(BackupError::Integrity("unsupported snapshot root version".into()));
        }
        Ok(root)
    }

    /// Opens every blob of a whole pack; returns the ids that opened and what failed.
    fn check_pack(&mut self, id: &[u8; 32], bytes: &[u8]) -> Result<(Vec<[u8; 32]>, Vec<String>), BackupError> {
        let name = pack::pack_name(id);
        let trailer_at = bytes
            .len()
            .checked_sub(pack::trailer_bytes())
            .ok_or_else(|| BackupError::Integrity(format!("{name} is too short to be a pack")))?;
        let (start, length) = pack::header_location(bytes.len() as u64, &bytes[trailer_at..])?;
        let header = pack::open_header(
            &self.metadata,
            &self.repository.config.repository_id,
            &bytes[start as usize..start as usize + length],
            start,
        )?;
        let data_cipher = self.pack_cipher(&name, &header.wrapped_key)?;
        let mut good = Vec::with_capacity(header.entries.len());
        let mut bad = Vec::new();
        for entry in &header.entries {
            let blob_ref = BlobRef {
                id: entry.id,
                pack: *id,
                offset: entry.offset,
                stored_length: entry.stored_length,
                raw_length: entry.raw_length,
                blob_type: entry.blob_type,
                compression: entry.compression,
            };
            let stored = &bytes[entry.offset as usize..(entry.offset + entry.stored_length) as usize];
            let cipher = if entry.blob_type == BlobType::Tree { &self.metadata } else { &data_cipher };
            match pack::open_blob(cipher, &self.keys, &self.repository.config.repository_id, &blob_ref, stored) {
                Ok(_) => good.push(entry.id),
                Err(error) => bad.push(error.to_string()),
            }
        }
        Ok((good, bad))
    }

    /// Walks a snapshot's trees (every reference must name a blob that opened) and rebuilds
    /// its ledger from its leaf hashes: the root must be the signed one, and at every smaller
    /// snapshot's size, that snapshot's root (no fork between snapshots).
    fn check_snapshot(
        &mut self,
        snapshot: &Snapshot,
        good: &HashSet<([u8; 32], [u8; 32])>,
        sizes: &[(u64, [u8; 32], String)],
        report: &mut VerifyReport,
    ) -> Result<(), BackupError> {
        let root = self.read_root(&snapshot.manifest.snapshot_root)?;
        let tables = root["tables"].as_array().ok_or_else(|| malformed_root(&snapshot.name))?;
        let mut trees: Vec<BlobRef> = Vec::new();
        for table in tables.iter().chain(std::iter::once(&root["leaves"])) {
            trees.extend(table_tree(table)?);
        }
        // Check references without reading data blobs (each pack was read once above).
        let mut missing = 0u64;
        while let Some(tree) = trees.pop() {
            if !good.contains(&(tree.pack, tree.id)) {
                missing += 1;
                continue;
            }
            for child in BlobRef::decode_all(&self.read(&tree)?)? {
                if child.blob_type == BlobType::Tree {
                    trees.push(child);
                } else if !good.contains(&(child.pack, child.id)) {
                    missing += 1;
                }
            }
        }
        if missing > 0 {
            report.find(
                "snapshot-damaged",
                snapshot.name.clone(),
                format!("{missing} of its blobs are damaged or missing; it cannot be restored"),
            );
            return Ok(());
        }
        let mut builder = RootBuilder::new();
        let mut quiet = |_: &str, _: u64, _: u64| {};
        let mut stream = TreeStream::new(self, table_tree(&root["leaves"])?, 0, &mut quiet);
        let mut hash = [0u8; 32];
        loop {
            match read_exact_or_end(&mut stream, &mut hash)? {
                false => break,
                true => builder.push(hash),
            }
            for (size, expected, name) in sizes {
                if *size == builder.size() && builder.root() != *expected {
                    report.find(
                        "snapshot-fork",
                        snapshot.name.clone(),
                        format!("its ledger at size {size} does not reproduce the root of {name}"),
                    );
                }
            }
        }
        stream.finish()?;
        if builder.size() != snapshot.manifest.tree_size || builder.root() != snapshot.manifest.root {
            report.find(
                "snapshot-ledger",
                snapshot.name.clone(),
                "its leaf hashes do not reproduce the signed checkpoint root",
            );
        }
        Ok(())
    }
}

/// A root's tables as the rebuild takes them.
fn root_tables(root: &Value) -> Option<Vec<RebuildTable>> {
    root["tables"]
        .as_array()?
        .iter()
        .map(|table| {
            Some(RebuildTable {
                name: table["name"].as_str()?.to_string(),
                create_sql: table["create"].as_str()?.to_string(),
                columns: table["columns"]
                    .as_array()?
                    .iter()
                    .map(|c| c.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()?,
                content: TableContent::parse(table["content"].as_str()?)?,
                rows: table["rows"].as_u64()?,
            })
        })
        .collect()
}

/// What the restore's reading thread hands the writer: buffers holding data blobs' bytes
/// (where they are in each, and the bytes read so far), or the end of a stream.
enum Piece {
    Blobs(Vec<(Vec<u8>, std::ops::Range<usize>)>, u64),
    End,
}

/// The reading thread: every stream's data blobs in order, each opened and checked, into
/// buffers the writer sends back once read. A stream marked proven by the ledger has its
/// data blobs' ids taken from the AEAD rather than recomputed ([`IdCheck`]); tree blobs are
/// always rechecked. Returns the bytes read; stops quietly if the writer hung up (it
/// reports its own error).
fn read_streams(
    mut reader: BlobReader<'_>,
    streams: Vec<(Option<BlobRef>, bool)>,
    sender: std::sync::mpsc::SyncSender<Piece>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64, BackupError> {
    let mut spare = Vec::new();
    let mut batch = Vec::with_capacity(PIPE_BATCH_BLOBS);
    for (tree, proven_by_ledger) in streams {
        let mut stack: Vec<(Vec<BlobRef>, usize)> = Vec::new();
        if let Some(tree) = tree {
            stack.push((BlobRef::decode_all(&reader.read(&tree)?)?, 0));
        }
        while let Some((refs, index)) = stack.last_mut() {
            let Some(blob_ref) = refs.get(*index).copied() else {
                stack.pop();
                continue;
            };
            *index += 1;
            if blob_ref.blob_type == BlobType::Tree {
                if stack.len() >= BACKUP_TREE_DEPTH_MAX {
                    return Err(BackupError::Integrity("a tree deeper than the limit".into()));
                }
                stack.push((BlobRef::decode_all(&reader.read(&blob_ref)?)?, 0));
                continue;
            }
            let buffer = recycled.try_recv().unwrap_or_default();
            batch.push(reader.read_data_into(&blob_ref, buffer, &mut spare, proven_by_ledger)?);
            if batch.len() == PIPE_BATCH_BLOBS {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(PIPE_BATCH_BLOBS));
                if sender.send(Piece::Blobs(full, reader.bytes_read)).is_err() {
                    return Ok(reader.bytes_read);
                }
            }
        }
        let last = std::mem::replace(&mut batch, Vec::with_capacity(PIPE_BATCH_BLOBS));
        if sender.send(Piece::Blobs(last, reader.bytes_read)).is_err() || sender.send(Piece::End).is_err() {
            return Ok(reader.bytes_read);
        }
    }
    Ok(reader.bytes_read)
}

/// One stream at a time, as an `io::Read` over the blobs the reading thread sends; each
/// buffer goes back to it once read.
struct PipeReader<'p> {
    receiver: std::sync::mpsc::Receiver<Piece>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// The rest of the batch being read, last blob first.
    batch: Vec<(Vec<u8>, std::ops::Range<usize>)>,
    current: Vec<u8>,
    position: usize,
    end: usize,
    /// The current stream's end was reached; cleared to read the next stream.
    ended: bool,
    total: u64,
    progress: Progress<'p>,
}

impl std::io::BufRead for PipeReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.position >= self.end {
            if self.ended {
                return Ok(&[]);
            }
            if let Some((bytes, range)) = self.batch.pop() {
                let used = std::mem::replace(&mut self.current, bytes);
                // The reader allocates anew when none comes back.
                let _ = self.recycle.try_send(used);
                (self.position, self.end) = (range.start, range.end);
                continue;
            }
            match self.receiver.recv() {
                Ok(Piece::Blobs(mut batch, bytes_read)) => {
                    batch.reverse();
                    self.batch = batch;
                    (self.progress)("restore", bytes_read, self.total);
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => return Err(std::io::Error::other("the restore's reading thread stopped")),
            }
        }
        Ok(&self.current[self.position..self.end])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.end);
    }
}

impl Read for PipeReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let available = std::io::BufRead::fill_buf(self)?;
        let n = buffer.len().min(available.len());
        buffer[..n].copy_from_slice(&available[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

fn read_exact_or_end(reader: &mut dyn Read, buffer: &mut [u8]) -> Result<bool, BackupError> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = reader.read(&mut buffer[filled..]).map_err(|e| BackupError::Integrity(e.to_string()))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    match filled {
        0 => Ok(false),
        n if n == buffer.len() => Ok(true),
        _ => Err(BackupError::Integrity("a stream of leaf hashes ends inside a hash".into())),
    }
}

/// A table's stream, read blob by blob through its trees: an `io::Read` for the rebuild.
/// Errors are kept so that the caller reports the repository's error, not an I/O one.
struct TreeStream<'r, 'a> {
    reader: &'r mut BlobReader<'a>,
    stack: Vec<(Vec<BlobRef>, usize)>,
    pending: Option<BlobRef>,
    current: Vec<u8>,
    position: usize,
    error: Option<BackupError>,
    total: u64,
    progress: Progress<'r>,
}

impl<'r, 'a> TreeStream<'r, 'a> {
    fn new(reader: &'r mut BlobReader<'a>, tree: Option<BlobRef>, total: u64, progress: Progress<'r>) -> Self {
        Self {
            reader,
            stack: Vec::new(),
            pending: tree,
            current: Vec::new(),
            position: 0,
            error: None,
            total,
            progress,
        }
    }

    fn next_data(&mut self) -> Result<bool, BackupError> {
        if let Some(tree) = self.pending.take() {
            let refs = BlobRef::decode_all(&self.reader.read(&tree)?)?;
            self.stack.push((refs, 0));
        }
        loop {
            let Some((refs, index)) = self.stack.last_mut() else { return Ok(false) };
            if *index >= refs.len() {
                self.stack.pop();
                continue;
            }
            let blob_ref = refs[*index];
            *index += 1;
            let bytes = self.reader.read(&blob_ref)?;
            if blob_ref.blob_type == BlobType::Tree {
                if self.stack.len() >= BACKUP_TREE_DEPTH_MAX {
                    return Err(BackupError::Integrity("a tree deeper than the limit".into()));
                }
                self.stack.push((BlobRef::decode_all(&bytes)?, 0));
            } else {
                self.current = bytes;
                self.position = 0;
                (self.progress)("restore", self.reader.bytes_read, self.total);
                return Ok(true);
            }
        }
    }

    fn finish(self) -> Result<(), BackupError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Read for TreeStream<'_, '_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.position >= self.current.len() {
            match self.next_data() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(error) => {
                    let message = error.to_string();
                    self.error = Some(error);
                    return Err(std::io::Error::other(message));
                }
            }
        }
        let n = buffer.len().min(self.current.len() - self.position);
        buffer[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_tried_on_every_blob_then_on_one_in_the_probe_interval_after_a_raw_run() {
        let tried: Vec<u64> =
            (0..INCOMPRESSIBLE_RUN_MIN + 4 * COMPRESS_PROBE_INTERVAL).filter(|run| worth_compressing(*run)).collect();
        let first_probe = INCOMPRESSIBLE_RUN_MIN + COMPRESS_PROBE_INTERVAL - 1;
        let mut expected: Vec<u64> = (0..INCOMPRESSIBLE_RUN_MIN).collect();
        expected.extend((0..4).map(|n| first_probe + n * COMPRESS_PROBE_INTERVAL));
        assert_eq!(tried, expected);
    }
}
