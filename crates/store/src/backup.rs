//! The store's side of backups (`docs/format/backup-repository.md`): a logical dump read in
//! one SQLite read transaction bound to the latest signed checkpoint, the keys and
//! signatures a backup needs, and [`Rebuild`] (`rebuild.rs`), which writes a new store from a
//! dump and rebuilds the tables derived from `versions`.
//!
//! Architecture invariants:
//! - a dump holds exactly the ledger leaves its checkpoint covers (versions and audit blocks,
//!   checked inside the read transaction), so a snapshot is a signed state, never a torn one:
//!   audit blocks committed after that checkpoint (reads' audit-only groups are signed up to
//!   `AUDIT_SYNC_MS` later) are left to the next snapshot, with their index rows;
//! - ephemeral tables ([`EPHEMERAL_TABLES`]) are never dumped, so restoring never revives a
//!   session or login ticket;
//! - the store signs only backup texts that start with a backup domain line, so a backup
//!   signature can never pass for a checkpoint.

mod rebuild;
mod sqlite_file;

use medvault_crypto::Secret32;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use rebuild::{Rebuild, RebuildTable, RebuiltLedger};

use crate::engine::CheckpointRow;
use crate::sqlite::DATABASE_FILE;
use crate::{Store, StoreError};

/// Tables never backed up, restored empty: sessions and login tickets, so that a restore
/// cannot revive stolen logins; the search index, which a restored store rebuilds (its
/// generations in `meta` are not dumped either, so the store knows it has none).
pub const EPHEMERAL_TABLES: &[&str] = &["sessions", "login_tickets", "search_entries", "search_docs", "search_pending"];
/// `meta` rows never backed up: the search index's generations and the state of its posting
/// (`index-token.md`): every `meta` row whose name starts with `search_`.
pub const EPHEMERAL_META: &[&str] = &["search_active", "search_building", "search_posts", "search_post_cursor"];
/// Tables rebuilt from `versions` on restore; their rows are not backed up.
pub const DERIVED_TABLES: &[&str] = &["resources", "ledger_nodes"];
/// Tables whose rows are ledger leaves or name one, and the column holding the leaf index:
/// a dump keeps the rows of the leaves its checkpoint covers.
pub const LEAF_BOUND_TABLES: &[(&str, &str)] =
    &[("versions", "seq"), ("audit_blocks", "seq"), ("audit_by_patient", "block")];
/// Tables each of whose rows the ledger proves: the store's `verify` recomputes every row's
/// leaf hash (a version's from its row and sealed body, an audit block's from its row) and
/// compares it with the ledger, whose root a restore proves against the signed checkpoint.
/// Restore takes their blobs' ids from the AEAD instead of recomputing them
/// (`backup-repository.md`, "Restore").
pub const LEAF_PROVEN_TABLES: &[&str] = &["versions", "audit_blocks"];
/// The pseudo-table that carries the ledger's leaf hashes (level 0 of `ledger_nodes`).
pub const LEAF_HASHES_TABLE: &str = "medvault_ledger_leaves";
/// The first lines of the texts [`Store::sign_backup_note`] agrees to sign.
pub const BACKUP_NOTE_DOMAINS: &[&str] =
    &["medvault/v1/backup-config\n", "medvault/v1/backup-manifest\n", "medvault/v1/backup-erasure\n"];

/// Bytes of the database a dump reads through a memory mapping (SQLite caps it at
/// `SQLITE_MAX_MMAP_SIZE`, 0x7fff0000 on 64-bit builds; the rest is read as usual).
const DUMP_MMAP_BYTES: u64 = 0x7fff_0000;
/// Bytes of row data buffered before they are handed to the sink.
const DUMP_BUFFER_BYTES: usize = 256 * 1024;

const TAG_NULL: u8 = 0;
const TAG_INTEGER: u8 = 1;
const TAG_REAL: u8 = 2;
const TAG_TEXT: u8 = 3;
const TAG_BLOB: u8 = 4;

/// What a table contributes to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableContent {
    /// Its rows are dumped.
    Rows,
    /// Rebuilt from other tables on restore.
    Derived,
    /// Restored empty.
    Ephemeral,
}

impl TableContent {
    pub fn name(self) -> &'static str {
        match self {
            TableContent::Rows => "rows",
            TableContent::Derived => "derived",
            TableContent::Ephemeral => "ephemeral",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rows" => Some(TableContent::Rows),
            "derived" => Some(TableContent::Derived),
            "ephemeral" => Some(TableContent::Ephemeral),
            _ => None,
        }
    }
}

/// One table of the store as a dump sees it.
#[derive(Debug, Clone)]
pub struct DumpTable {
    pub name: String,
    /// Its `CREATE TABLE` statement, from `sqlite_schema`.
    pub create_sql: String,
    pub columns: Vec<String>,
    pub content: TableContent,
    order_by: String,
    /// For a [`LEAF_BOUND_TABLES`] table, its leaf-index column.
    leaf_column: Option<&'static str>,
}

/// A patient key destroyed by crypto-shredding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedKey {
    pub key_id: u64,
    pub compartment: [u8; 32],
    pub destroyed_ms: i64,
}

/// An open read transaction over the store, bound to its latest signed checkpoint.
/// Dropping it ends the transaction.
#[derive(Debug)]
pub struct BackupDump {
    connection: Connection,
    /// The latest signed checkpoint; the dump holds exactly the leaves it covers.
    pub checkpoint: CheckpointRow,
    /// The recorded time of the last leaf the checkpoint covers (0 for an empty ledger).
    pub last_leaf_ms: i64,
    pub tables: Vec<DumpTable>,
    /// `CREATE INDEX`, `CREATE TRIGGER` and `CREATE VIEW` statements, in schema order.
    pub schema: Vec<String>,
    pub destroyed_keys: Vec<DestroyedKey>,
    /// Rows of [`LEAF_PROVEN_TABLES`] (each a ledger leaf) and leaf hashes streamed so far,
    /// for [`BackupDump::check_leaves`].
    leaf_rows_streamed: std::cell::Cell<u64>,
    leaf_hashes_streamed: std::cell::Cell<u64>,
}

impl Store {
    /// Starts a dump: one read transaction (beside the live writer, thanks to WAL) that
    /// reads the latest signed checkpoint and checks that it covers every version row.
    pub fn backup_dump(&self) -> Result<BackupDump, StoreError> {
        let path = self.data_dir.join(DATABASE_FILE);
        let connection =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        // The dump reads every page once: mapped (up to SQLite's own cap of 2 GiB), they are
        // not copied into SQLite's cache first. An I/O error under a mapping ends the process
        // with a signal instead of an error: this is `medvault backup create`'s own process,
        // never the server's.
        connection.execute_batch(&format!(
            "PRAGMA cache_size = -65536; PRAGMA mmap_size = {DUMP_MMAP_BYTES}; BEGIN DEFERRED;"
        ))?;
        let checkpoint = connection
            .query_row(
                "SELECT tree_size, root, note, created_ms FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                [],
                |row| {
                    let root: Vec<u8> = row.get(1)?;
                    Ok(CheckpointRow {
                        tree_size: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        root: root.try_into().unwrap_or([0; 32]),
                        note: row.get(2)?,
                        created_ms: row.get(3)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| StoreError::Missing("a signed checkpoint to back up (the store is empty)".into()))?;
        let size = i64::try_from(checkpoint.tree_size).map_err(|_| StoreError::Corrupt("tree size overflow".into()))?;
        // Every ledger leaf is a version or a block of audit records (`audit.md`). Beyond the
        // checkpoint there may be audit blocks of reads, not yet signed, but never a version
        // (a write is signed before it commits). That the leaves below it are all there is
        // counted as they stream (`check_leaves`): counting first would read them twice.
        let next_version: i64 =
            connection.query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM versions", [], |row| row.get(0))?;
        if next_version > size {
            return Err(StoreError::Corrupt(format!(
                "the latest signed checkpoint covers {size} leaves but the store holds versions up to {next_version}; run `medvault verify`"
            )));
        }
        let last_leaf_ms: i64 = if size == 0 {
            0
        } else {
            connection.query_row(
                "SELECT recorded_ms FROM versions WHERE seq = ?1 UNION ALL SELECT last_ms FROM audit_blocks WHERE seq = ?1",
                [size - 1],
                |row| row.get(0),
            )?
        };
        let (tables, schema) = read_schema(&connection)?;
        let destroyed_keys = connection
            .prepare(
                "SELECT key_id, compartment, COALESCE(destroyed_ms, 0) FROM keys
                 WHERE wrapped IS NULL AND purpose = 3 AND compartment IS NOT NULL ORDER BY key_id",
            )?
            .query_map([], |row| {
                let compartment: Vec<u8> = row.get(1)?;
                Ok((row.get::<_, i64>(0)?, compartment, row.get::<_, i64>(2)?))
            })?
            .filter_map(|row| match row {
                Ok((key_id, compartment, destroyed_ms)) => Some(Ok(DestroyedKey {
                    key_id: u64::try_from(key_id).ok()?,
                    compartment: compartment.try_into().ok()?,
                    destroyed_ms,
                })),
                Err(error) => Some(Err(error)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BackupDump {
            connection,
            checkpoint,
            last_leaf_ms,
            tables,
            schema,
            destroyed_keys,
            leaf_rows_streamed: std::cell::Cell::new(0),
            leaf_hashes_streamed: std::cell::Cell::new(0),
        })
    }

    /// A key for the backup repository derived from the store's index key, so that a store
    /// restored from a repository derives the same one (`backup-repository.md`, "Actors").
    pub fn backup_key(&self, label: &str) -> Secret32 {
        self.keyring.backup_key(label)
    }

    /// Signs a backup config, manifest or erasure record with the ledger key, as a C2SP
    /// signed note under the log's origin. Refuses any other text.
    pub fn sign_backup_note(&self, body: &str) -> Result<String, StoreError> {
        if !BACKUP_NOTE_DOMAINS.iter().any(|domain| body.starts_with(domain)) {
            return Err(StoreError::Crypto("the store signs only backup notes with a backup domain line".into()));
        }
        let key = self.keyring.ledger_signing_key()?;
        medvault_ledger::sign_note(body, &self.ledger_origin()?, &key)
            .map_err(|e| StoreError::Crypto(format!("backup note signature: {e}")))
    }
}

/// For the backup benchmark only: a store that keeps no search index, so that a store of a
/// million resources builds in minutes and its data directory holds what a backup restores.
/// Search tables are never backed up ([`EPHEMERAL_TABLES`]), so such a store is what a
/// restored store is until it is reindexed.
#[cfg(feature = "bench-no-search-index")]
impl Store {
    /// Removes the search index's generations from an empty store: writes then index
    /// nothing, searches answer "must be rebuilt", and reopening does not start one (a store
    /// with resources is not activated). Refused once the store holds a resource.
    pub fn danger_drop_search_index_for_benchmark(&self) -> Result<(), StoreError> {
        let names = [crate::search::state::ACTIVE, crate::search::state::BUILDING];
        self.engine.execute(Box::new(move |c| {
            let resources: Option<i64> =
                c.query_row("SELECT 1 FROM resources LIMIT 1", [], |row| row.get(0)).optional()?;
            if resources.is_some() {
                return Err(StoreError::Corrupt("the search index is dropped only from an empty store".into()));
            }
            for name in names {
                c.execute("DELETE FROM meta WHERE name = ?1", [name])?;
            }
            Ok(0)
        }))?;
        self.reload_search_state()?;
        Ok(())
    }
}

fn read_schema(connection: &Connection) -> Result<(Vec<DumpTable>, Vec<String>), StoreError> {
    let entries = connection
        .prepare("SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid")?
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut tables = Vec::new();
    let mut schema = Vec::new();
    for (kind, name, sql) in entries {
        if name.starts_with("sqlite_") {
            continue;
        }
        if kind != "table" {
            schema.push(sql);
            continue;
        }
        let mut columns = Vec::new();
        let mut key: Vec<(i64, String)> = Vec::new();
        let mut statement = connection.prepare(&format!("PRAGMA table_info({})", quote(&name)))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let column: String = row.get(1)?;
            let pk: i64 = row.get(5)?;
            if pk > 0 {
                key.push((pk, column.clone()));
            }
            columns.push(column);
        }
        key.sort();
        let order_by = if key.is_empty() {
            "rowid".to_string()
        } else {
            key.iter().map(|(_, column)| quote(column)).collect::<Vec<_>>().join(", ")
        };
        let content = if EPHEMERAL_TABLES.contains(&name.as_str()) {
            TableContent::Ephemeral
        } else if DERIVED_TABLES.contains(&name.as_str()) {
            TableContent::Derived
        } else {
            TableContent::Rows
        };
        let leaf_column = LEAF_BOUND_TABLES.iter().find(|(table, _)| *table == name).map(|(_, column)| *column);
        if leaf_column.is_some_and(|column| !columns.iter().any(|c| c == column)) {
            return Err(StoreError::Corrupt(format!("the table {name} lacks its leaf-index column")));
        }
        tables.push(DumpTable { name, create_sql: sql, columns, content, order_by, leaf_column });
    }
    Ok((tables, schema))
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl BackupDump {
    /// Streams a table's rows in primary-key order (format: "The logical dump"), those of a
    /// [`LEAF_BOUND_TABLES`] table only for the leaves the checkpoint covers; returns the
    /// number of rows. Tables that are not [`TableContent::Rows`] stream nothing.
    pub fn stream_rows(
        &self,
        table: &DumpTable,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, StoreError> {
        if table.content != TableContent::Rows {
            return Ok(0);
        }
        let columns = table.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let covered = match table.leaf_column {
            Some(column) => format!("WHERE {} < {}", quote(column), self.checkpoint.tree_size),
            None if table.name == "meta" => {
                let names = EPHEMERAL_META.iter().map(|name| format!("'{name}'")).collect::<Vec<_>>().join(", ");
                format!("WHERE name NOT IN ({names})")
            }
            None => String::new(),
        };
        let mut statement = self.connection.prepare(&format!(
            "SELECT {columns} FROM {} {covered} ORDER BY {}",
            quote(&table.name),
            table.order_by
        ))?;
        let mut rows = statement.query([])?;
        let mut buffer = Vec::with_capacity(DUMP_BUFFER_BYTES + 4096);
        let mut count = 0u64;
        let sink_error = |e: String| StoreError::Io(format!("backup sink: {e}"));
        while let Some(row) = rows.next()? {
            for index in 0..table.columns.len() {
                encode_value(&mut buffer, row.get_ref(index)?)?;
            }
            count += 1;
            if buffer.len() >= DUMP_BUFFER_BYTES {
                sink(&buffer).map_err(sink_error)?;
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            sink(&buffer).map_err(sink_error)?;
        }
        if LEAF_PROVEN_TABLES.contains(&table.name.as_str()) {
            self.leaf_rows_streamed.set(self.leaf_rows_streamed.get() + count);
        }
        Ok(count)
    }

    /// After every table and the leaf hashes have streamed: checks that the dump held every
    /// leaf its checkpoint covers — a version or an audit block for each, and each leaf's
    /// hash — so that a snapshot is never made of a store that lost leaves. Inside the read
    /// transaction, so it speaks of exactly what was dumped.
    pub fn check_leaves(&self) -> Result<(), StoreError> {
        let size = self.checkpoint.tree_size;
        let (rows, hashes) = (self.leaf_rows_streamed.get(), self.leaf_hashes_streamed.get());
        if rows != size || hashes != size {
            return Err(StoreError::Corrupt(format!(
                "the latest signed checkpoint covers {size} leaves but the store holds {rows} versions and audit blocks and {hashes} leaf hashes below it; run `medvault verify`"
            )));
        }
        Ok(())
    }

    /// Streams the leaf hashes of the leaves the checkpoint covers (32 bytes each, leaf
    /// order); returns their number.
    pub fn stream_leaf_hashes(&self, sink: &mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<u64, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT node_index, hash FROM ledger_nodes WHERE level = 0 AND node_index < ?1 ORDER BY node_index",
        )?;
        let size =
            i64::try_from(self.checkpoint.tree_size).map_err(|_| StoreError::Corrupt("tree size overflow".into()))?;
        let mut rows = statement.query([size])?;
        let mut buffer = Vec::with_capacity(DUMP_BUFFER_BYTES + 64);
        let mut count = 0u64;
        while let Some(row) = rows.next()? {
            let index: i64 = row.get(0)?;
            let hash = row
                .get_ref(1)?
                .as_blob()
                .map_err(|_| StoreError::Corrupt(format!("ledger leaf {count} is not a blob")))?;
            if u64::try_from(index).ok() != Some(count) || hash.len() != 32 {
                return Err(StoreError::Corrupt(format!("ledger leaf {count} is missing or malformed")));
            }
            buffer.extend_from_slice(hash);
            count += 1;
            if buffer.len() >= DUMP_BUFFER_BYTES {
                sink(&buffer).map_err(|e| StoreError::Io(format!("backup sink: {e}")))?;
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            sink(&buffer).map_err(|e| StoreError::Io(format!("backup sink: {e}")))?;
        }
        self.leaf_hashes_streamed.set(count);
        Ok(count)
    }
}

fn encode_value(buffer: &mut Vec<u8>, value: ValueRef<'_>) -> Result<(), StoreError> {
    let length =
        |bytes: &[u8]| u32::try_from(bytes.len()).map_err(|_| StoreError::Corrupt("a value larger than 4 GiB".into()));
    match value {
        ValueRef::Null => buffer.push(TAG_NULL),
        ValueRef::Integer(integer) => {
            buffer.push(TAG_INTEGER);
            buffer.extend_from_slice(&integer.to_be_bytes());
        }
        ValueRef::Real(real) => {
            buffer.push(TAG_REAL);
            buffer.extend_from_slice(&real.to_bits().to_be_bytes());
        }
        ValueRef::Text(text) => {
            buffer.push(TAG_TEXT);
            buffer.extend_from_slice(&length(text)?.to_be_bytes());
            buffer.extend_from_slice(text);
        }
        ValueRef::Blob(blob) => {
            buffer.push(TAG_BLOB);
            buffer.extend_from_slice(&length(blob)?.to_be_bytes());
            buffer.extend_from_slice(blob);
        }
    }
    Ok(())
}
