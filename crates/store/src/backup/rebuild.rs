//! [`Rebuild`]: a new store database from a snapshot's row streams, written as SQLite pages
//! in one sequential pass (decision 0001) under a temporary name, and renamed into place
//! only when complete.
//!
//! The schema is the snapshot's own: its statements are run in an in-memory SQLite
//! database, which says — through `sqlite_schema` and the `table_xinfo`, `index_list` and
//! `index_xinfo` pragmas — which b-trees exist, which columns each record holds in which
//! order, and how each index sorts. Rows stream into their tables' b-trees; index entries
//! are collected as order-preserving byte keys, sorted (spilling to disk beyond
//! `BACKUP_RESTORE_SORT_BYTES_MAX`) and written after — each index of a large table (and
//! `resources`, from `versions`) on a thread of its own, beside the tables after it and
//! the ledger, their pages appended to the same file under a lock (`SharedPages`). What the writer cannot reproduce
//! exactly as SQLite would — partial or expression indexes, collations other than BINARY,
//! CHECK constraints, generated columns, STRICT tables, AUTOINCREMENT, REAL values in index
//! keys, a value SQLite would have converted to its column's affinity — is refused, never
//! approximated.
//!
//! Architecture invariants:
//! - nothing is at `data_dir` until the database is complete, synced, reopened by SQLite and
//!   counted; an interrupted rebuild leaves a directory named `…restore-incomplete-…` whose
//!   database has no header (page 1 is written last);
//! - every row is checked before it is written: rowids and primary keys strictly increase,
//!   unique index keys are unique, NOT NULL holds, each value already has its column's type.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use medvault_base::limits::{BACKUP_RESTORE_SORT_BYTES_MAX, BACKUP_VALUE_BYTES_MAX};
use medvault_ledger::{Hash, RootBuilder};
use rusqlite::{Connection, OpenFlags};

use super::sqlite_file::{
    encode_record, IndexTree, PageFile, PageSink, Record, SchemaRow, SharedPages, TableTree, TreeError, Val,
};
use super::{DestroyedKey, TableContent, TAG_BLOB, TAG_INTEGER, TAG_NULL, TAG_REAL, TAG_TEXT};
use crate::sqlite::DATABASE_FILE;
use crate::StoreError;

/// How much of the rebuilt file the count maps (SQLite's own cap is 2 GiB; beyond, it reads).
const COUNT_MMAP_BYTES: u64 = 0x7fff_0000;
/// Tables counted each on a thread of its own, the largest first; the rest on the caller's.
const COUNT_THREADS: usize = 3;

/// One table of the snapshot, as its root describes it.
#[derive(Debug, Clone)]
pub struct RebuildTable {
    pub name: String,
    pub create_sql: String,
    /// The columns of its row stream, in order.
    pub columns: Vec<String>,
    pub content: TableContent,
    /// Rows the dump holds (its stream must have exactly these).
    pub rows: u64,
}

/// What a rebuilt store's ledger looks like.
#[derive(Debug, Clone, Default)]
pub struct RebuiltLedger {
    pub leaves: u64,
    /// The rebuilt root at each size asked for (those the ledger reached).
    pub roots: Vec<(u64, Hash)>,
}

/// A new store database being written. Dropping it before [`Rebuild::finish`] removes
/// everything it wrote.
#[derive(Debug)]
pub struct Rebuild {
    data_dir: PathBuf,
    /// Where the database is built; renamed to `data_dir` by `finish`.
    build_dir: PathBuf,
    /// Shared with the threads writing a large table's indexes.
    file: Option<SharedPages>,
    schema: Vec<SchemaEntry>,
    tables: Vec<TableLayout>,
    /// Each table's secondary index entries, by table name, in the order of its indexes.
    sorters: HashMap<String, Vec<Sorter>>,
    /// Large tables already written whose indexes (and, for `versions`, `resources`) are
    /// being sorted and written on a thread of their own.
    indexing: Vec<(String, IndexingThread)>,
    /// Root page of every b-tree written, by table or index name.
    roots: HashMap<String, u32>,
    rows_written: HashMap<String, u64>,
    /// `(key_id, compartment)` of destroyed patient keys → when.
    erasures: HashMap<(i64, Vec<u8>), i64>,
    erasures_applied: u64,
    /// When `resources` is derived: the index on `versions` it is written with.
    resources: Option<String>,
    /// The texts the rows of `versions` carried by position in that index's keys.
    carried_texts: Vec<Vec<u8>>,
    finished: bool,
}

/// A table's indexes being sorted and written; joined by `finish`, or by `drop` before the
/// build directory (where it may be writing sort runs) is removed.
type IndexingThread = JoinHandle<Result<IndexesWritten, StoreError>>;

/// What an indexing thread wrote: each index's root page, and `resources` (rows, root).
#[derive(Debug, Default)]
struct IndexesWritten {
    roots: Vec<(String, u32)>,
    resources: Option<(u64, u32)>,
}

#[derive(Debug, Clone)]
struct SchemaEntry {
    kind: String,
    name: String,
    table_name: String,
    sql: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

#[derive(Debug, Clone)]
struct ColumnLayout {
    name: String,
    affinity: Affinity,
    not_null: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowidKind {
    /// The column at this position is the rowid (`INTEGER PRIMARY KEY`).
    Alias(usize),
    /// Rows are numbered 1, 2, 3… in stream order.
    Implicit,
    WithoutRowid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    Column(usize),
    Rowid,
}

#[derive(Debug, Clone)]
struct IndexLayout {
    name: String,
    unique: bool,
    /// The record's columns in order (key columns, then the row's rowid or primary key), and
    /// whether each sorts descending.
    columns: Vec<(KeySource, bool)>,
    key_columns: usize,
    /// Columns carried in each entry's sort key after the record's (never written to the
    /// index): what `resources` needs from the version an entry names.
    carried: Vec<usize>,
    /// How many of the record's last values are the row's rowid, ascending (the rowid
    /// itself, and the column it is an alias of): 0 in a `WITHOUT ROWID` table.
    rowid_values: usize,
}

#[derive(Debug, Clone)]
struct TableLayout {
    name: String,
    content: TableContent,
    stream_columns: Vec<String>,
    /// Rows the dump holds.
    rows: u64,
    columns: Vec<ColumnLayout>,
    rowid: RowidKind,
    /// For a `WITHOUT ROWID` table: its primary-key index, whose record is the table's.
    primary: Option<IndexLayout>,
    indexes: Vec<IndexLayout>,
}

impl TableLayout {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

impl Rebuild {
    /// Prepares a rebuild into `data_dir`, which must not exist or be empty: reads the
    /// snapshot's schema, refuses what cannot be rebuilt exactly, and creates the database
    /// under a temporary name beside `data_dir`. `erasures` are applied to `keys` as it
    /// streams.
    pub fn create(
        data_dir: &Path,
        tables: &[RebuildTable],
        schema: &[String],
        erasures: &[DestroyedKey],
    ) -> Result<Self, StoreError> {
        if data_dir.exists() {
            let mut entries = std::fs::read_dir(data_dir).map_err(|e| StoreError::Io(e.to_string()))?;
            if entries.next().is_some() {
                return Err(StoreError::AlreadyExists(data_dir.display().to_string()));
            }
        }
        let (schema_entries, mut layouts) = read_layout(tables, schema)?;
        if let Some(table) = layouts.iter().find(|t| t.content == TableContent::Derived && !t.indexes.is_empty()) {
            return Err(unsupported(&format!("an index on the derived table {}", table.name)));
        }
        let resources = match layouts.iter().find(|t| t.name == "resources") {
            Some(table) if table.content == TableContent::Derived => Some(current_versions(&mut layouts)?),
            _ => None,
        };
        let name = data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::Io(format!("{} names no directory", data_dir.display())))?;
        let suffix = medvault_crypto::random::array::<4>().map_err(|e| StoreError::Crypto(e.to_string()))?;
        let build_dir =
            data_dir.with_file_name(format!("{name}.restore-incomplete-{}", medvault_base::hex::encode(&suffix)));
        crate::create_private_dir(&build_dir)?;
        let file = match PageFile::create(&build_dir.join(DATABASE_FILE)) {
            Ok(file) => file.share(),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&build_dir);
                return Err(io_error(&build_dir, error));
            }
        };
        let mut sorters = HashMap::new();
        for (layout, table) in layouts.iter().zip(tables) {
            let table_sorters = layout
                .indexes
                .iter()
                .map(|index| {
                    let sorter = Sorter::new(build_dir.clone(), BACKUP_RESTORE_SORT_BYTES_MAX, table.rows);
                    match index.rowid_values {
                        0 => sorter,
                        _ if !index.carried.is_empty() => sorter,
                        rowid_values => sorter.grouped(rowid_values),
                    }
                })
                .collect();
            sorters.insert(layout.name.clone(), table_sorters);
        }
        let erasures = erasures
            .iter()
            .filter_map(|e| Some(((i64::try_from(e.key_id).ok()?, e.compartment.to_vec()), e.destroyed_ms)))
            .collect();
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            resources,
            carried_texts: Vec::new(),
            build_dir,
            file: Some(file),
            schema: schema_entries,
            tables: layouts,
            sorters,
            indexing: Vec::new(),
            roots: HashMap::new(),
            rows_written: HashMap::new(),
            erasures,
            erasures_applied: 0,
            finished: false,
        })
    }

    /// How many erasure records matched a key of the snapshot.
    pub fn erasures_applied(&self) -> u64 {
        self.erasures_applied
    }

    /// Writes a table from its row stream (format: "The logical dump"); returns the number
    /// of rows. Rows are read in place from `reader`'s buffer (copied only when one spans two
    /// of its buffers).
    pub fn insert_rows(
        &mut self,
        table: &str,
        columns: &[String],
        reader: &mut dyn BufRead,
    ) -> Result<u64, StoreError> {
        let position =
            self.tables.iter().position(|t| t.name == table).ok_or_else(|| {
                StoreError::Integrity(format!("rows for a table the snapshot's schema lacks: {table}"))
            })?;
        let layout = self.tables[position].clone();
        if layout.content != TableContent::Rows || self.roots.contains_key(table) {
            return Err(StoreError::Integrity(format!("rows for table {table}, which takes none or has them")));
        }
        if layout.stream_columns != columns {
            return Err(StoreError::Integrity(format!("the rows of {table} name other columns than its schema")));
        }
        let keys_columns = (table == "keys" && !self.erasures.is_empty())
            .then(|| {
                let column =
                    |name: &str| layout.column(name).ok_or_else(|| unsupported(&format!("`keys` without {name}")));
                Ok::<_, StoreError>([
                    column("key_id")?,
                    column("compartment")?,
                    column("purpose")?,
                    column("wrapped")?,
                    column("destroyed_ms")?,
                ])
            })
            .transpose()?;
        let file = self.file.as_mut().expect("the file is open until finish");
        let sorters = self.sorters.get_mut(table).expect("sorters per table");
        let mut writer = TableWriter::new(&layout);
        let mut rows = RowReader::new(reader, columns.len());
        while let Some(mut values) = rows.next_row()? {
            if let Some([key_id, compartment, purpose, wrapped, destroyed_ms]) = keys_columns {
                if let (Val::Int(id), Val::Blob(token), Val::Int(3)) =
                    (values[key_id], values[compartment], values[purpose])
                {
                    if let Some(when) = self.erasures.get(&(id, token.to_vec())) {
                        values[wrapped] = Val::Null;
                        values[destroyed_ms] = Val::Int(*when);
                        self.erasures_applied += 1;
                    }
                }
            }
            writer.push(file, sorters, &values)?;
        }
        let count = writer.rows;
        let dumped = self.tables[position].rows;
        if count != dumped {
            return Err(StoreError::Integrity(format!("table {table} streamed {count} rows, not the {dumped} dumped")));
        }
        let carried_texts = std::mem::take(&mut writer.interned.texts);
        let root = writer.finish(file)?;
        // A table's pages are in the file once its rows are in: an error writing them is
        // this table's, and an interrupted rebuild leaves them there (without a header).
        file.write_out().map_err(|e| io_error(&self.build_dir, e))?;
        self.roots.insert(table.to_string(), root);
        self.rows_written.insert(table.to_string(), count);
        if count >= BACKGROUND_SORT_ROWS_MIN && !layout.indexes.is_empty() {
            // Its indexes are written beside the tables after it and the ledger.
            let sorters = self.sorters.remove(table).expect("sorters per table");
            let resources = match &self.resources {
                Some(current) if table == "versions" => {
                    let resources = self.tables.iter().find(|t| t.name == "resources").expect("resources is derived");
                    Some((current.clone(), resources.clone(), carried_texts))
                }
                _ => None,
            };
            let file = self.file.clone().expect("the file is open until finish");
            let handle = write_indexes_in_background(file, layout.indexes.clone(), sorters, resources)?;
            self.indexing.push((table.to_string(), handle));
        } else if table == "versions" {
            self.carried_texts = carried_texts;
        }
        Ok(count)
    }

    /// Writes `ledger_nodes` from the ledger's leaf hashes (32 bytes each, leaf order): the
    /// leaves, then each level of complete subtrees above them (what `append_nodes` stores),
    /// level by level. Returns the roots at `sizes` (those the ledger reached).
    pub fn insert_leaf_hashes(&mut self, reader: &mut dyn Read, sizes: &[u64]) -> Result<RebuiltLedger, StoreError> {
        let layout = self
            .tables
            .iter()
            .find(|t| t.name == "ledger_nodes" && t.content == TableContent::Derived)
            .ok_or_else(|| unsupported("leaf hashes without a derived `ledger_nodes`"))?
            .clone();
        if self.roots.contains_key(&layout.name) {
            return Err(StoreError::Integrity("the leaf hashes were given twice".into()));
        }
        let at = |name: &str| layout.column(name).ok_or_else(|| unsupported(&format!("`ledger_nodes` without {name}")));
        let (level_at, index_at, hash_at) = (at("level")?, at("node_index")?, at("hash")?);
        if layout.columns.len() != 3 {
            return Err(unsupported("`ledger_nodes` with other columns than level, node_index and hash"));
        }
        let file = self.file.as_mut().expect("the file is open until finish");
        let mut writer = TableWriter::new(&layout);
        let columns = (level_at, index_at, hash_at);
        // The complete subtrees whose nodes make up the root at each size asked for.
        let mut wanted: Vec<((u32, u64), Option<Hash>)> = Vec::new();
        for size in sizes {
            wanted.extend(root_nodes(*size).into_iter().map(|node| (node, None)));
        }
        // A level's few wanted indexes are compared with each of its nodes as it is written.
        let remember = |wanted: &mut Vec<((u32, u64), Option<Hash>)>, node: (u32, u64), hash: &Hash| {
            for (at, slot) in wanted.iter_mut() {
                if *at == node {
                    *slot = Some(*hash);
                }
            }
        };
        let wanted_at = |wanted: &[((u32, u64), Option<Hash>)], level: u32| -> Vec<u64> {
            wanted.iter().filter(|((l, _), _)| *l == level).map(|((_, index), _)| *index).collect()
        };
        let leaves_wanted = wanted_at(&wanted, 0);
        let expected = sizes.iter().copied().max().unwrap_or(0);
        let mut above = Level::new(self.build_dir.clone(), expected / 2);
        let mut hash = [0u8; 32];
        let mut left: Option<Hash> = None;
        let mut leaves = 0u64;
        loop {
            match read_full(reader, &mut hash)? {
                0 => break,
                32 => {}
                _ => return Err(StoreError::Integrity("the leaf hashes end inside a hash".into())),
            }
            push_node(&mut writer, file, columns, 0, leaves, &hash)?;
            if leaves_wanted.contains(&leaves) {
                remember(&mut wanted, (0, leaves), &hash);
            }
            leaves += 1;
            match left.take() {
                Some(previous) => above.push(medvault_ledger::node_hash(&previous, &hash))?,
                None => left = Some(hash),
            }
        }
        let mut level = 1u32;
        while !above.is_empty() {
            let mut index = 0u64;
            let level_wanted = wanted_at(&wanted, level);
            above = above.climb(&mut |hash: &Hash| {
                push_node(&mut writer, file, columns, i64::from(level), index, hash)?;
                if level_wanted.contains(&index) {
                    remember(&mut wanted, (level, index), hash);
                }
                index += 1;
                Ok(())
            })?;
            level += 1;
        }
        // Each root from the nodes just written (RFC 9162: the largest complete subtree on
        // the left, the rest of the tree on the right).
        let mut rebuilt = RebuiltLedger { leaves, roots: Vec::new() };
        for size in sizes.iter().copied().filter(|size| *size <= leaves) {
            let nodes: Option<Vec<Hash>> = root_nodes(size)
                .iter()
                .map(|node| wanted.iter().find(|(at, _)| at == node).and_then(|(_, hash)| *hash))
                .collect();
            let nodes = nodes.ok_or_else(|| StoreError::Corrupt(format!("a node of the root at {size} is missing")))?;
            let root = match nodes.split_last() {
                None => RootBuilder::new().root(),
                Some((last, rest)) => {
                    rest.iter().rev().fold(*last, |right, left| medvault_ledger::node_hash(left, &right))
                }
            };
            rebuilt.roots.push((size, root));
        }
        let count = writer.rows;
        let root = writer.finish(file)?;
        self.roots.insert(layout.name.clone(), root);
        self.rows_written.insert(layout.name, count);
        Ok(rebuilt)
    }

    /// Writes the derived `resources`, every table that got no rows, every index, the schema
    /// and the header; syncs the file; reopens it with SQLite and counts every table; then
    /// moves it to `data_dir`. Returns the database's path.
    pub fn finish(mut self) -> Result<PathBuf, StoreError> {
        let mut file = self.file.take().expect("the file is open until finish");
        let current = self.resources.take();
        // Every thread is joined before an error is returned: none may outlive the rebuild.
        let joined: Vec<_> = std::mem::take(&mut self.indexing)
            .into_iter()
            .map(|(_, handle)| handle.join().map_err(|_| StoreError::Corrupt("an indexing thread panicked".into()))?)
            .collect();
        for written in joined {
            let written = written?;
            self.roots.extend(written.roots);
            if let (Some((rows, root)), Some(layout)) =
                (written.resources, self.tables.iter().find(|t| t.name == "resources"))
            {
                self.roots.insert(layout.name.clone(), root);
                self.rows_written.insert(layout.name.clone(), rows);
            }
        }
        let mut sorters = std::mem::take(&mut self.sorters);
        let resources_pending = self.tables.iter().find(|t| t.name == "resources" && !self.roots.contains_key(&t.name));
        if let (Some(current), Some(layout)) = (&current, resources_pending) {
            let versions = self.tables.iter().find(|t| t.name == "versions").expect("resources come from versions");
            let position =
                versions.indexes.iter().position(|i| &i.name == current).expect("the index resources come from");
            let index = &versions.indexes[position];
            let placeholder = Sorter::new(self.build_dir.clone(), 0, 0);
            let versions_sorters = sorters.get_mut("versions").expect("sorters per table");
            let sorter = std::mem::replace(&mut versions_sorters[position], placeholder);
            let mut resources = ResourcesWriter::new(layout, &self.carried_texts)?;
            let root = write_index(&mut file, index, sorter, &mut |file, fields, scratch| {
                resources.entry(file, fields, scratch)
            })?;
            self.roots.insert(index.name.clone(), root);
            let (rows, resources_root) = resources.finish(&mut file)?;
            self.roots.insert(layout.name.clone(), resources_root);
            self.rows_written.insert(layout.name.clone(), rows);
        }
        for layout in &self.tables {
            if self.roots.contains_key(&layout.name) {
                continue;
            }
            if layout.content == TableContent::Derived {
                return Err(StoreError::Integrity(format!("the derived table {} was not rebuilt", layout.name)));
            }
            let root = TableWriter::new(layout).finish(&mut file)?;
            self.roots.insert(layout.name.clone(), root);
            self.rows_written.insert(layout.name.clone(), 0);
        }
        for layout in &self.tables {
            // A large table's indexes were written by its indexing thread.
            let Some(table_sorters) = sorters.remove(&layout.name) else { continue };
            for (index, sorter) in layout.indexes.iter().zip(table_sorters) {
                if self.roots.contains_key(&index.name) {
                    continue;
                }
                let root = write_index(&mut file, index, sorter, &mut |_, _, _| Ok(()))?;
                self.roots.insert(index.name.clone(), root);
            }
        }
        let mut schema = Vec::with_capacity(self.schema.len());
        for entry in &self.schema {
            let root_page = match entry.kind.as_str() {
                "table" | "index" => *self
                    .roots
                    .get(&entry.name)
                    .ok_or_else(|| StoreError::Integrity(format!("no b-tree was written for {}", entry.name)))?,
                _ => 0,
            };
            schema.push(SchemaRow {
                kind: entry.kind.clone(),
                name: entry.name.clone(),
                table_name: entry.table_name.clone(),
                root_page,
                sql: entry.sql.clone(),
            });
        }
        let path = self.build_dir.join(DATABASE_FILE);
        let file = file.into_inner().map_err(|e| io_error(&path, e))?;
        let database = file.finish(&schema).map_err(|e| io_error(&path, e))?;
        database.sync_all().map_err(|e| io_error(&path, e))?;
        drop(database);
        self.check_counts(&path)?;
        sync_dir(&self.build_dir)?;
        if self.data_dir.exists() {
            // Empty (checked at `create`); a directory that filled meanwhile is not replaced.
            std::fs::remove_dir(&self.data_dir).map_err(|e| io_error(&self.data_dir, e))?;
        }
        std::fs::rename(&self.build_dir, &self.data_dir).map_err(|e| io_error(&self.data_dir, e))?;
        self.finished = true;
        match self.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
        Ok(self.data_dir.join(DATABASE_FILE))
    }

    /// Check after writing: SQLite opens the file, reads its schema, and counts every table
    /// (through its smallest b-tree, usually an index) to the rows written. The largest
    /// tables are counted each on a thread of its own: the file was written past the page
    /// cache, so counting is mostly waiting for the disk.
    fn check_counts(&self, path: &Path) -> Result<(), StoreError> {
        // A URI, so that SQLite reads the file as it is (`immutable`: no WAL, no locks, no
        // side files); `%`, `?` and `#` would end or escape the path.
        let escaped = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
        let uri = format!("file:{escaped}?immutable=1");
        let count = |tables: &[&TableLayout]| -> Result<(), StoreError> {
            let connection = Connection::open_with_flags(
                &uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            // Mapped, pages are read from the disk in larger runs than SQLite's own reads.
            connection.execute_batch(&format!("PRAGMA mmap_size = {COUNT_MMAP_BYTES};"))?;
            for layout in tables {
                let count: i64 =
                    connection
                        .query_row(&format!("SELECT COUNT(*) FROM {}", quote(&layout.name)), [], |row| row.get(0))?;
                let written = self.rows_written.get(&layout.name).copied().unwrap_or(0);
                if u64::try_from(count).ok() != Some(written) {
                    return Err(StoreError::Corrupt(format!(
                        "the rebuilt {} holds {count} rows, not the {written} written",
                        layout.name
                    )));
                }
            }
            Ok(())
        };
        let mut tables: Vec<&TableLayout> = self.tables.iter().collect();
        tables.sort_by_key(|layout| std::cmp::Reverse(self.rows_written.get(&layout.name).copied().unwrap_or(0)));
        let rest = tables.split_off(COUNT_THREADS.min(tables.len()));
        std::thread::scope(|scope| {
            let counting: Vec<_> = tables
                .iter()
                .map(|layout| {
                    std::thread::Builder::new()
                        .name("restore-count".into())
                        .spawn_scoped(scope, move || count(&[layout]))
                        .map_err(|e| StoreError::Io(format!("cannot start a counting thread: {e}")))
                })
                .collect();
            let counted = count(&rest);
            // Every thread is joined before an error is returned.
            let joined: Vec<Result<(), StoreError>> = counting
                .into_iter()
                .map(|handle| handle?.join().map_err(|_| StoreError::Corrupt("a counting thread panicked".into()))?)
                .collect();
            counted?;
            joined.into_iter().collect()
        })
    }
}

impl Drop for Rebuild {
    fn drop(&mut self) {
        for (_, handle) in std::mem::take(&mut self.indexing) {
            // Its result is moot: the rebuild is abandoned or finished.
            let _ = handle.join();
        }
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.build_dir);
        }
    }
}

/// Finds the index a derived `resources` is written with, and has it carry the rest of each
/// version's row; refuses a schema where `resources` is not exactly the current version of
/// each resource in `versions`.
///
/// The unique index on `versions (resource_key, version)` lists each resource's versions
/// together, highest last: written in that order, its last entry for each resource names the
/// current version (the highest version, which in a store that verifies is also the last in
/// ledger order).
fn current_versions(layouts: &mut [TableLayout]) -> Result<String, StoreError> {
    let resources = layouts.iter().find(|t| t.name == "resources").expect("resources is derived");
    let mut names: Vec<&str> = resources.columns.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if names != ["deleted", "resource_key", "resource_type", "seq", "version"]
        || resources.rowid != RowidKind::WithoutRowid
    {
        return Err(unsupported("a `resources` table of other columns than the current versions' own"));
    }
    let versions = layouts
        .iter_mut()
        .find(|t| t.name == "versions" && t.content == TableContent::Rows)
        .ok_or_else(|| unsupported("a derived `resources` without `versions`"))?;
    let column = |name: &str| versions.column(name).ok_or_else(|| unsupported(&format!("`versions` without {name}")));
    let (resource_key, version, seq) = (column("resource_key")?, column("version")?, column("seq")?);
    let carried = vec![column("resource_type")?, column("deleted")?];
    if versions.rowid != RowidKind::Alias(seq) {
        return Err(unsupported("`versions` whose seq is not its rowid"));
    }
    let index = versions
        .indexes
        .iter_mut()
        .find(|index| {
            index.unique
                && index.key_columns == 2
                && index.columns
                    == [
                        (KeySource::Column(resource_key), false),
                        (KeySource::Column(version), false),
                        (KeySource::Rowid, false),
                    ]
        })
        .ok_or_else(|| unsupported("`versions` without its unique index on (resource_key, version)"))?;
    index.carried = carried;
    Ok(index.name.clone())
}

/// Writes `resources` while the versions index is written: one row per resource, from its
/// last entry.
struct ResourcesWriter<'a> {
    writer: TableWriter<'a>,
    /// The texts `versions` carried by position.
    texts: &'a [Vec<u8>],
    /// Positions of resource_key, resource_type, version, deleted and seq in `resources`.
    columns: [usize; 5],
    last_key: Vec<u8>,
    emitted_key: Vec<u8>,
    last_type: Vec<u8>,
    /// Version, deleted and seq of the resource's last entry so far.
    last: Option<(i64, i64, i64)>,
}

impl<'a> ResourcesWriter<'a> {
    fn new(layout: &'a TableLayout, texts: &'a [Vec<u8>]) -> Result<Self, StoreError> {
        let at = |name: &str| layout.column(name).ok_or_else(|| unsupported(&format!("`resources` without {name}")));
        Ok(Self {
            writer: TableWriter::new(layout),
            texts,
            columns: [at("resource_key")?, at("resource_type")?, at("version")?, at("deleted")?, at("seq")?],
            last_key: Vec::new(),
            emitted_key: Vec::new(),
            last_type: Vec::new(),
            last: None,
        })
    }

    /// One entry of the versions index: (resource key, version, seq), carrying the
    /// version's resource type and deleted value.
    fn entry(
        &mut self,
        file: &mut dyn PageSink,
        fields: &[(KeyField, usize)],
        scratch: &[u8],
    ) -> Result<(), StoreError> {
        let wrong_type = || StoreError::Integrity("a version row with a value of the wrong type".into());
        let [(KeyField::Blob(start, end), _), (KeyField::Int(version), _), (KeyField::Int(seq), _), (resource_type, _), (KeyField::Int(deleted), _)] =
            fields
        else {
            return Err(wrong_type());
        };
        let resource_type = match *resource_type {
            KeyField::Text(type_start, type_end) => &scratch[type_start..type_end],
            KeyField::Int(position) => {
                self.texts.get(usize::try_from(position).map_err(|_| wrong_type())?).ok_or_else(wrong_type)?
            }
            _ => return Err(wrong_type()),
        };
        let key = &scratch[*start..*end];
        if self.last.is_some() && self.last_key != key {
            self.emit(file)?;
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_type.clear();
        self.last_type.extend_from_slice(resource_type);
        self.last = Some((*version, *deleted, *seq));
        Ok(())
    }

    fn emit(&mut self, file: &mut dyn PageSink) -> Result<(), StoreError> {
        let Some((version, deleted, seq)) = self.last.take() else { return Ok(()) };
        let mut values = [Val::Null; 5];
        let [key_at, type_at, version_at, deleted_at, seq_at] = self.columns;
        values[key_at] = Val::Blob(&self.last_key);
        values[type_at] = Val::Text(&self.last_type);
        values[version_at] = Val::Int(version);
        values[deleted_at] = Val::Int(deleted);
        values[seq_at] = Val::Int(seq);
        // The index's entries come sorted and unique, so resource keys strictly increase.
        assert!(
            self.emitted_key.as_slice() < self.last_key.as_slice() || self.writer.rows == 0,
            "resources in key order"
        );
        self.writer.push_derived(file, &values)?;
        self.emitted_key.clear();
        self.emitted_key.extend_from_slice(&self.last_key);
        Ok(())
    }

    fn finish(mut self, file: &mut dyn PageSink) -> Result<(u64, u32), StoreError> {
        self.emit(file)?;
        let rows = self.writer.rows;
        Ok((rows, self.writer.finish(file)?))
    }
}

/// Runs the snapshot's schema in an in-memory database and reads back what SQLite made of it.
fn read_layout(tables: &[RebuildTable], schema: &[String]) -> Result<(Vec<SchemaEntry>, Vec<TableLayout>), StoreError> {
    let memory = Connection::open_in_memory()?;
    for table in tables {
        let sql = table.create_sql.trim_start().to_ascii_uppercase();
        if !sql.starts_with("CREATE TABLE") {
            return Err(StoreError::Integrity("a dumped table definition is not a CREATE TABLE".into()));
        }
        if has_word(&sql, "CHECK") || has_word(&sql, "AUTOINCREMENT") {
            return Err(unsupported(&format!("a CHECK constraint or AUTOINCREMENT in {}", table.name)));
        }
        // One statement each (`execute` refuses a tail).
        memory.execute(&table.create_sql, [])?;
    }
    for statement in schema {
        let sql = statement.trim_start().to_ascii_uppercase();
        let allowed = ["CREATE INDEX", "CREATE UNIQUE INDEX", "CREATE TRIGGER", "CREATE VIEW"];
        if !allowed.iter().any(|prefix| sql.starts_with(prefix)) {
            return Err(StoreError::Integrity("a dumped schema statement is not an index, trigger or view".into()));
        }
        memory.execute(statement, [])?;
    }
    let entries = memory
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid")?
        .query_map([], |row| {
            Ok(SchemaEntry { kind: row.get(0)?, name: row.get(1)?, table_name: row.get(2)?, sql: row.get(3)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(entry) = entries.iter().find(|e| e.kind == "table" && e.name.starts_with("sqlite_")) {
        return Err(unsupported(&format!("the internal table {}", entry.name)));
    }
    let mut layouts = Vec::with_capacity(tables.len());
    for table in tables {
        layouts.push(table_layout(&memory, table)?);
    }
    for entry in entries.iter().filter(|e| e.kind == "index") {
        let known = layouts.iter().flat_map(|t| t.indexes.iter()).any(|index| index.name == entry.name);
        if !known {
            return Err(unsupported(&format!("the index {}", entry.name)));
        }
    }
    Ok((entries, layouts))
}

fn table_layout(memory: &Connection, table: &RebuildTable) -> Result<TableLayout, StoreError> {
    let (without_rowid, strict): (bool, bool) = memory.query_row(
        "SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [&table.name],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if strict {
        return Err(unsupported(&format!("the STRICT table {}", table.name)));
    }
    let mut columns = Vec::new();
    let mut primary_columns = 0;
    let mut statement = memory.prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1)")?;
    let mut rows = statement.query([&table.name])?;
    while let Some(row) = rows.next()? {
        let (name, declared, not_null, pk, hidden): (String, String, bool, i64, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        if hidden != 0 {
            return Err(unsupported(&format!("the generated or hidden column {}.{name}", table.name)));
        }
        if pk > 0 {
            primary_columns += 1;
        }
        columns.push((name, affinity(&declared), not_null, pk));
    }
    drop(rows);
    let mut indexes = Vec::new();
    let mut primary = None;
    let listed = memory
        .prepare("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1)")?
        .query_map([&table.name], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?, row.get::<_, String>(2)?, row.get::<_, bool>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut primary_is_index = false;
    for (name, unique, origin, partial) in listed {
        primary_is_index |= origin == "pk";
        if partial {
            return Err(unsupported(&format!("the partial index {name}")));
        }
        let mut layout = IndexLayout {
            name: name.clone(),
            unique,
            columns: Vec::new(),
            key_columns: 0,
            carried: Vec::new(),
            rowid_values: 0,
        };
        let mut statement = memory.prepare("SELECT cid, \"desc\", coll, key FROM pragma_index_xinfo(?1)")?;
        let mut rows = statement.query([&name])?;
        while let Some(row) = rows.next()? {
            let (cid, descending, collation, key): (i64, bool, Option<String>, bool) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let source = match cid {
                -1 => KeySource::Rowid,
                cid if cid >= 0 => KeySource::Column(cid as usize),
                _ => return Err(unsupported(&format!("the expression index {name}"))),
            };
            if !collation.as_deref().unwrap_or("BINARY").eq_ignore_ascii_case("BINARY") {
                return Err(unsupported(&format!("the collation of index {name}")));
            }
            layout.columns.push((source, descending));
            if key {
                layout.key_columns += 1;
            }
        }
        if without_rowid && origin == "pk" {
            primary = Some(layout);
        } else {
            indexes.push(layout);
        }
    }
    let rowid = if without_rowid {
        if primary.is_none() {
            return Err(unsupported(&format!("the WITHOUT ROWID table {} without a primary key index", table.name)));
        }
        RowidKind::WithoutRowid
    } else if primary_columns == 1 && !primary_is_index {
        // A one-column primary key with no index of its own is the rowid (`INTEGER PRIMARY KEY`).
        let position = columns.iter().position(|c| c.3 > 0).expect("the primary key column");
        RowidKind::Alias(position)
    } else {
        RowidKind::Implicit
    };
    if rowid != RowidKind::WithoutRowid {
        for index in &mut indexes {
            let is_rowid = |source: KeySource| match (source, rowid) {
                (KeySource::Rowid, _) => true,
                (KeySource::Column(column), RowidKind::Alias(alias)) => column == alias,
                _ => false,
            };
            index.rowid_values =
                index.columns.iter().rev().take_while(|(source, descending)| is_rowid(*source) && !descending).count();
        }
    }
    Ok(TableLayout {
        name: table.name.clone(),
        content: table.content,
        stream_columns: table.columns.clone(),
        rows: table.rows,
        columns: columns
            .into_iter()
            .map(|(name, affinity, not_null, _)| ColumnLayout { name, affinity, not_null })
            .collect(),
        rowid,
        primary,
        indexes,
    })
}

/// SQLite's rules for a declared type's affinity (datatype3.html, 3.1).
fn affinity(declared: &str) -> Affinity {
    let upper = declared.to_ascii_uppercase();
    if upper.contains("INT") {
        Affinity::Integer
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        Affinity::Text
    } else if upper.contains("BLOB") || upper.is_empty() {
        Affinity::Blob
    } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

fn has_word(upper_sql: &str, word: &str) -> bool {
    upper_sql.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|token| token == word)
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Integrity(format!("restore cannot rebuild {what} exactly; the snapshot's schema is not supported"))
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {error}", path.display()))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|dir| dir.sync_all()).map_err(|e| io_error(path, e))
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A table's b-tree being written, with the index entries its rows make.
struct TableWriter<'l> {
    layout: &'l TableLayout,
    tree: Tree,
    rows: u64,
    record: Vec<u8>,
    /// A rowid table's record, planned and written into its page.
    planned: Record,
    key: Vec<u8>,
    previous_key: Vec<u8>,
    /// The texts of carried TEXT columns, each carried in sort keys as its position here.
    interned: Interned,
}

/// Texts carried in sort keys by their position in this list (an integer of one or two
/// bytes, for `Observation`'s 14): carried values only follow the record's, which are
/// unique, so they never decide an order and any stand-in does. A TEXT column holds no
/// integer (`check_value`), so an integer there is always a position.
#[derive(Debug, Default)]
struct Interned {
    texts: Vec<Vec<u8>>,
    last: usize,
}

impl Interned {
    /// The value carried for `text`: its position, or the text itself once
    /// `CARRIED_TEXTS_MAX` texts are known.
    fn carry<'v>(&mut self, text: &'v [u8]) -> Val<'v> {
        let found = match self.texts.get(self.last) {
            Some(last) if last.as_slice() == text => Some(self.last),
            _ => self.texts.iter().position(|known| known.as_slice() == text),
        };
        let position = match found {
            Some(position) => position,
            None if self.texts.len() == CARRIED_TEXTS_MAX => return Val::Text(text),
            None => {
                self.texts.push(text.to_vec());
                self.texts.len() - 1
            }
        };
        self.last = position;
        Val::Int(position as i64)
    }
}

/// Distinct texts carried by position (resource types: about 150 in FHIR R4).
const CARRIED_TEXTS_MAX: usize = 1024;

enum Tree {
    Rowid(TableTree),
    Keyed(IndexTree),
}

impl<'l> TableWriter<'l> {
    fn new(layout: &'l TableLayout) -> Self {
        let tree = match layout.rowid {
            RowidKind::WithoutRowid => Tree::Keyed(IndexTree::new()),
            _ => Tree::Rowid(TableTree::new()),
        };
        Self {
            layout,
            tree,
            rows: 0,
            record: Vec::new(),
            planned: Record::default(),
            key: Vec::new(),
            previous_key: Vec::new(),
            interned: Interned::default(),
        }
    }

    /// Checks and writes one row (values in table column order); returns its rowid (the row
    /// number for a `WITHOUT ROWID` table).
    fn push(&mut self, file: &mut dyn PageSink, sorters: &mut [Sorter], values: &[Val<'_>]) -> Result<i64, StoreError> {
        let layout = self.layout;
        for (value, column) in values.iter().zip(&layout.columns) {
            check_value(&layout.name, column, *value)?;
        }
        self.rows += 1;
        let rowid = match (&mut self.tree, layout.rowid) {
            (Tree::Rowid(tree), kind) => {
                let (rowid, alias) = match kind {
                    RowidKind::Alias(column) => match values[column] {
                        Val::Int(rowid) => (rowid, Some(column)),
                        _ => return Err(StoreError::Integrity(format!("a row of {} without its rowid", layout.name))),
                    },
                    _ => (self.rows as i64, None),
                };
                match tree.push_values(file, rowid, values, alias, &mut self.planned) {
                    Ok(()) => {}
                    Err(TreeError::OutOfOrder) => {
                        return Err(StoreError::Integrity(format!(
                            "the rows of {} are not in rowid order or repeat one",
                            layout.name
                        )))
                    }
                    Err(TreeError::Io(error)) => return Err(StoreError::Io(error.to_string())),
                }
                rowid
            }
            (Tree::Keyed(tree), _) => {
                let primary = layout.primary.as_ref().expect("a WITHOUT ROWID table has its primary key index");
                self.key.clear();
                for (source, descending) in &primary.columns[..primary.key_columns] {
                    push_key(&mut self.key, source_value(*source, values, 0), *descending)?;
                }
                if self.rows > 1 && self.key <= self.previous_key {
                    return Err(StoreError::Integrity(format!(
                        "the rows of {} are not in primary-key order or repeat a key",
                        layout.name
                    )));
                }
                std::mem::swap(&mut self.key, &mut self.previous_key);
                self.record.clear();
                encode_record(
                    &mut self.record,
                    primary.columns.iter().map(|(source, _)| source_value(*source, values, 0)),
                );
                tree.push(file, &self.record).map_err(|e| StoreError::Io(e.to_string()))?;
                self.rows as i64
            }
        };
        assert_eq!(sorters.len(), layout.indexes.len(), "a sorter per index");
        for (index, sorter) in layout.indexes.iter().zip(sorters) {
            self.key.clear();
            if sorter.rowid_values > 0 {
                for (source, descending) in &index.columns[..index.columns.len() - sorter.rowid_values] {
                    push_key(&mut self.key, source_value(*source, values, rowid), *descending)?;
                }
                sorter.push_grouped(&self.key, rowid)?;
                continue;
            }
            for (source, descending) in &index.columns {
                push_key(&mut self.key, source_value(*source, values, rowid), *descending)?;
            }
            for column in &index.carried {
                let value = match values[*column] {
                    Val::Text(text) if layout.columns[*column].affinity == Affinity::Text => self.interned.carry(text),
                    value => value,
                };
                push_key(&mut self.key, value, false)?;
            }
            sorter.push(&self.key)?;
        }
        Ok(rowid)
    }

    /// Writes a row of a derived `WITHOUT ROWID` table that the rebuild made itself, in key
    /// order (the caller asserts it), with values of the column types: no checks to repeat.
    fn push_derived(&mut self, file: &mut dyn PageSink, values: &[Val<'_>]) -> Result<(), StoreError> {
        let (Tree::Keyed(tree), Some(primary)) = (&mut self.tree, self.layout.primary.as_ref()) else {
            panic!("derived rows go to a WITHOUT ROWID table");
        };
        assert!(self.layout.indexes.is_empty(), "derived tables have no indexes");
        if self.rows == 0 {
            // Every row the rebuild makes has the same types: checking the first checks them all.
            for (value, column) in values.iter().zip(&self.layout.columns) {
                check_value(&self.layout.name, column, *value)?;
            }
        }
        self.rows += 1;
        self.record.clear();
        encode_record(&mut self.record, primary.columns.iter().map(|(source, _)| source_value(*source, values, 0)));
        tree.push(file, &self.record).map_err(|e| StoreError::Io(e.to_string()))
    }

    fn finish(self, file: &mut dyn PageSink) -> Result<u32, StoreError> {
        match self.tree {
            Tree::Rowid(tree) => tree.finish(file),
            Tree::Keyed(tree) => tree.finish(file),
        }
        .map_err(|e| StoreError::Io(e.to_string()))
    }
}

/// The complete subtrees, left to right, whose nodes make the root of a tree of `size`
/// leaves: (level, index) for each power of two in `size`, largest first.
fn root_nodes(size: u64) -> Vec<(u32, u64)> {
    let mut nodes = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1 << level) != 0 {
            nodes.push((level, start >> level));
            start += 1 << level;
        }
    }
    nodes
}

/// Writes one `ledger_nodes` row.
fn push_node(
    writer: &mut TableWriter<'_>,
    file: &mut dyn PageSink,
    (level_at, index_at, hash_at): (usize, usize, usize),
    level: i64,
    index: u64,
    hash: &Hash,
) -> Result<(), StoreError> {
    let mut values = [Val::Null; 3];
    values[level_at] = Val::Int(level);
    values[index_at] = Val::Int(i64::try_from(index).map_err(|_| StoreError::Corrupt("ledger index overflow".into()))?);
    values[hash_at] = Val::Blob(hash);
    // Written level by level, each in index order: the table's key order.
    writer.push_derived(file, &values)
}

fn source_value<'v>(source: KeySource, values: &[Val<'v>], rowid: i64) -> Val<'v> {
    match source {
        KeySource::Column(column) => values[column],
        KeySource::Rowid => Val::Int(rowid),
    }
}

/// Refuses a value SQLite would have stored differently (converted to the column's
/// affinity), and NULL in a NOT NULL column: a genuine dump never holds either.
fn check_value(table: &str, column: &ColumnLayout, value: Val<'_>) -> Result<(), StoreError> {
    let fits = match (column.affinity, value) {
        (_, Val::Null) => !column.not_null,
        // SQLite stores NaN as NULL.
        (_, Val::Real(real)) if real.is_nan() => false,
        (_, Val::Blob(_)) | (Affinity::Blob, _) => true,
        (Affinity::Integer | Affinity::Numeric, Val::Int(_)) => true,
        // An integral REAL would have become an INTEGER.
        (Affinity::Integer | Affinity::Numeric, Val::Real(real)) => real.is_finite() && real.fract() != 0.0,
        (Affinity::Real, Val::Real(_)) => true,
        (Affinity::Text, Val::Text(_)) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(StoreError::Integrity(format!("a dumped value of {table}.{} does not have its column's type", column.name)))
    }
}

// Index entries are sorted as byte strings whose order is SQLite's (BINARY collation): a
// tag per value — NULL, then numbers, then text, then blobs — then the value. An integer's
// tag says how many bytes follow (0x18 for zero, 0x18 + n for a positive of n bytes,
// 0x18 − n for a negative), then those bytes big-endian. Text and blobs have 0x00 escaped
// as 0x00 0xFF and end with 0x00 0x00 (so a prefix sorts first). A descending column's
// bytes are inverted. The encoding is reversible: the record is rebuilt from the sorted key.
const KEY_NULL: u8 = 0x05;
const KEY_ZERO: u8 = 0x18;
const KEY_TEXT: u8 = 0x30;
const KEY_BLOB: u8 = 0x40;

fn push_key(key: &mut Vec<u8>, value: Val<'_>, descending: bool) -> Result<(), StoreError> {
    let start = key.len();
    match value {
        Val::Null => key.push(KEY_NULL),
        Val::Int(integer) => {
            let magnitude = if integer < 0 { !integer } else { integer } as u64;
            let bytes = (64 - magnitude.leading_zeros() as usize).div_ceil(8);
            let bytes = if integer < 0 { bytes.max(1) } else { bytes };
            key.push(if integer < 0 { KEY_ZERO - bytes as u8 } else { KEY_ZERO + bytes as u8 });
            key.extend_from_slice(&integer.to_be_bytes()[8 - bytes..]);
        }
        Val::Real(_) => return Err(unsupported("a REAL value in an index key")),
        Val::Text(bytes) | Val::Blob(bytes) => {
            key.push(if matches!(value, Val::Text(_)) { KEY_TEXT } else { KEY_BLOB });
            let mut rest = bytes;
            while let Some(zero) = rest.iter().position(|b| *b == 0) {
                key.extend_from_slice(&rest[..=zero]);
                key.push(0xff);
                rest = &rest[zero + 1..];
            }
            key.extend_from_slice(rest);
            key.extend_from_slice(&[0, 0]);
        }
    }
    if descending {
        for byte in &mut key[start..] {
            *byte = !*byte;
        }
    }
    Ok(())
}

/// A value decoded from a sorted key; text and blobs are ranges of a scratch buffer.
#[derive(Debug, Clone, Copy)]
enum KeyField {
    Null,
    Int(i64),
    Text(usize, usize),
    Blob(usize, usize),
}

impl KeyField {
    fn value<'s>(&self, scratch: &'s [u8]) -> Val<'s> {
        match *self {
            KeyField::Null => Val::Null,
            KeyField::Int(integer) => Val::Int(integer),
            KeyField::Text(start, end) => Val::Text(&scratch[start..end]),
            KeyField::Blob(start, end) => Val::Blob(&scratch[start..end]),
        }
    }
}

/// Decodes every value of `key` into `fields`, with where each value's encoding ends.
fn decode_key(
    key: &[u8],
    descending: &[bool],
    scratch: &mut Vec<u8>,
    fields: &mut Vec<(KeyField, usize)>,
) -> Result<(), StoreError> {
    scratch.clear();
    fields.clear();
    let malformed = || StoreError::Corrupt("a malformed sort key".into());
    let mut at = 0;
    for &inverted in descending {
        let flip = |byte: u8| if inverted { !byte } else { byte };
        let tag = flip(*key.get(at).ok_or_else(malformed)?);
        at += 1;
        let field = match tag {
            KEY_NULL => KeyField::Null,
            0x10..=0x20 => {
                let negative = tag < KEY_ZERO;
                let bytes = usize::from(tag.abs_diff(KEY_ZERO));
                let mut word = if negative { [0xffu8; 8] } else { [0u8; 8] };
                for (out, byte) in word[8 - bytes..].iter_mut().zip(key.get(at..at + bytes).ok_or_else(malformed)?) {
                    *out = flip(*byte);
                }
                at += bytes;
                KeyField::Int(i64::from_be_bytes(word))
            }
            KEY_TEXT | KEY_BLOB => {
                let start = scratch.len();
                loop {
                    let rest = key.get(at..).ok_or_else(malformed)?;
                    let zero = rest.iter().position(|b| flip(*b) == 0).ok_or_else(malformed)?;
                    scratch.extend(rest[..zero].iter().map(|b| flip(*b)));
                    let next = flip(*rest.get(zero + 1).ok_or_else(malformed)?);
                    at += zero + 2;
                    match next {
                        0xff => scratch.push(0),
                        0 => break,
                        _ => return Err(malformed()),
                    }
                }
                if tag == KEY_TEXT {
                    KeyField::Text(start, scratch.len())
                } else {
                    KeyField::Blob(start, scratch.len())
                }
            }
            _ => return Err(malformed()),
        };
        fields.push((field, at));
    }
    if at != key.len() {
        return Err(malformed());
    }
    Ok(())
}

/// Called with each index entry written: its values (where each ends in the key) and the
/// scratch buffer their bytes are in.
type EachEntry<'e> = dyn FnMut(&mut dyn PageSink, &[(KeyField, usize)], &[u8]) -> Result<(), StoreError> + 'e;

/// Writes an index from its sorted entries, checking unique keys, and hands each entry's
/// values to `each`; returns its root page.
fn write_index(
    file: &mut dyn PageSink,
    index: &IndexLayout,
    sorter: Sorter,
    each: &mut EachEntry<'_>,
) -> Result<u32, StoreError> {
    let mut sorter = Some(sorter);
    write_index_from(file, index, &mut |sink| sorter.take().expect("the keys are handed over once").drain(sink), each)
}

/// Hands every sorted key to the sink it is given.
type SortedKeys<'k> = dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> + 'k;

/// [`write_index`] from keys handed over in order by `keys`.
fn write_index_from(
    file: &mut dyn PageSink,
    index: &IndexLayout,
    keys: &mut SortedKeys<'_>,
    each: &mut EachEntry<'_>,
) -> Result<u32, StoreError> {
    let descending = key_descending(index);
    let mut tree = IndexTree::new();
    let mut scratch = Vec::new();
    let mut fields = Vec::new();
    let mut record = Vec::new();
    let mut previous_key: Vec<u8> = Vec::new();
    let mut first = true;
    keys(&mut |key: &[u8]| {
        decode_key(key, &descending, &mut scratch, &mut fields)?;
        if index.unique && index.key_columns > 0 {
            let key_fields = &fields[..index.key_columns];
            let unique_part = &key[..key_fields[key_fields.len() - 1].1];
            let has_null = key_fields.iter().any(|(f, _)| matches!(f, KeyField::Null));
            if !first && !has_null && unique_part == previous_key.as_slice() {
                return Err(StoreError::Integrity(format!("two rows share a key of the unique index {}", index.name)));
            }
            previous_key.clear();
            previous_key.extend_from_slice(unique_part);
        }
        first = false;
        record.clear();
        encode_record(&mut record, fields[..index.columns.len()].iter().map(|(f, _)| f.value(&scratch)));
        tree.push(file, &record).map_err(|e| StoreError::Io(e.to_string()))?;
        each(file, &fields, &scratch)
    })?;
    tree.finish(file).map_err(|e| StoreError::Io(e.to_string()))
}

/// Whether each value of an index's sort keys is inverted: its record's columns, then the
/// carried ones (ascending).
fn key_descending(index: &IndexLayout) -> Vec<bool> {
    index.columns.iter().map(|(_, d)| *d).chain(index.carried.iter().map(|_| false)).collect()
}

/// Writes `resources` from the sorted entries of the `versions` index it comes from.
fn write_resources(
    file: &mut dyn PageSink,
    index: &IndexLayout,
    (layout, texts): (&TableLayout, &[Vec<u8>]),
    keys: &mut SortedKeys<'_>,
) -> Result<(u64, u32), StoreError> {
    let descending = key_descending(index);
    let mut rows = ResourcesWriter::new(layout, texts)?;
    let mut scratch = Vec::new();
    let mut fields = Vec::new();
    keys(&mut |key: &[u8]| {
        decode_key(key, &descending, &mut scratch, &mut fields)?;
        rows.entry(file, &fields, &scratch)
    })?;
    rows.finish(file)
}

/// Sorts a large table's index entries and writes its indexes, each on a thread of its own;
/// with `resources` (the name of the `versions` index it comes from, and its layout), writes
/// `resources` from that index's sorted entries on one more thread, beside the index.
fn write_indexes_in_background(
    file: SharedPages,
    indexes: Vec<IndexLayout>,
    sorters: Vec<Sorter>,
    resources: Option<(String, TableLayout, Vec<Vec<u8>>)>,
) -> Result<IndexingThread, StoreError> {
    std::thread::Builder::new()
        .name("restore-index".into())
        .spawn(move || {
            std::thread::scope(|scope| {
                let mut handles = Vec::with_capacity(indexes.len());
                for (index, sorter) in indexes.iter().zip(sorters) {
                    let derived = resources
                        .as_ref()
                        .filter(|(current, _, _)| *current == index.name)
                        .map(|(_, layout, texts)| (layout, texts.as_slice()));
                    let file = file.clone();
                    let handle = std::thread::Builder::new()
                        .name("restore-index".into())
                        .spawn_scoped(scope, move || write_one_index(file, index, sorter, derived));
                    handles.push(handle);
                }
                // Every thread is joined before an error is returned.
                let mut results = Vec::with_capacity(handles.len());
                for handle in handles {
                    results.push(match handle {
                        Ok(handle) => handle
                            .join()
                            .map_err(|_| StoreError::Corrupt("an indexing thread panicked".into()))
                            .and_then(|result| result),
                        Err(error) => Err(StoreError::Io(format!("cannot start an indexing thread: {error}"))),
                    });
                }
                let mut written = IndexesWritten::default();
                for (index, result) in indexes.iter().zip(results) {
                    let (root, resources) = result?;
                    written.roots.push((index.name.clone(), root));
                    if resources.is_some() {
                        written.resources = resources;
                    }
                }
                Ok(written)
            })
        })
        .map_err(|e| StoreError::Io(format!("cannot start an indexing thread: {e}")))
}

/// Sorts one index's entries and writes it; with `resources`, writes `resources` from the
/// same sorted entries on a thread beside it (or in the same pass when they were sorted in
/// runs on disk). Returns the index's root, and `resources`' rows and root.
fn write_one_index(
    mut file: SharedPages,
    index: &IndexLayout,
    mut sorter: Sorter,
    resources: Option<(&TableLayout, &[Vec<u8>])>,
) -> Result<(u32, Option<(u64, u32)>), StoreError> {
    sorter.sort_all()?;
    let Some((layout, texts)) = resources else {
        let root = write_index(&mut file, index, sorter, &mut |_, _, _| Ok(()))?;
        return Ok((root, None));
    };
    if !sorter.runs.is_empty() {
        let mut rows = ResourcesWriter::new(layout, texts)?;
        let root =
            write_index(&mut file, index, sorter, &mut |file, fields, scratch| rows.entry(file, fields, scratch))?;
        return Ok((root, Some(rows.finish(&mut file)?)));
    }
    let sorter = &sorter;
    std::thread::scope(|scope| {
        let mut resources_file = file.clone();
        let derived = std::thread::Builder::new().name("restore-resources".into()).spawn_scoped(scope, move || {
            write_resources(&mut resources_file, index, (layout, texts), &mut |sink| sorter.each_in_memory(sink))
        });
        let derived = derived.map_err(|e| StoreError::Io(format!("cannot start an indexing thread: {e}")))?;
        let root = write_index_from(&mut file, index, &mut |sink| sorter.each_in_memory(sink), &mut |_, _, _| Ok(()));
        let derived = derived.join().map_err(|_| StoreError::Corrupt("an indexing thread panicked".into()))?;
        Ok((root?, Some(derived?)))
    })
}

/// Byte keys sorted in memory, or in sorted runs on disk beyond a budget, then merged.
#[derive(Debug)]
struct Sorter {
    /// Keys, in chunks that are never moved once filled (no copying as they grow).
    chunks: Vec<Vec<u8>>,
    entries: Vec<SortEntry>,
    /// Bytes of the keys and entries held.
    held_bytes: usize,
    runs: Vec<PathBuf>,
    dir: PathBuf,
    budget_bytes: usize,
    /// The keys in memory are in order (sorted since the last push).
    sorted: bool,
    /// For an index whose keys end with the rowid: the keys as groups, until there are too
    /// many (then they become keys like any other).
    groups: Option<Groups>,
    /// For such an index, how many values at the end of each key are the rowid (else 0).
    rowid_values: usize,
}

/// Keys of an index of a rowid table whose last values are all the row's rowid (an index
/// on `(resource_type, seq)`, whose record is `(resource_type, seq, rowid)`): rows arrive in
/// rowid order, so the keys that share the values before it arrive in their own order, and
/// sorting them is sorting the few groups. Each key is kept as its rowid (8 bytes, against
/// 30-40 for a key and its sort entry): less memory to touch, no sort, and keys handed over
/// from memory read in order.
#[derive(Debug)]
struct Groups {
    /// Each group's key prefix (the values before the rowid's) and its rowids, increasing.
    groups: Vec<(Vec<u8>, Vec<i64>)>,
    /// The group of the last key.
    last: usize,
    /// How many values at the end of each key are the rowid.
    rowid_values: usize,
    /// Keys still expected: room a new group reserves (not touched), so that a group
    /// holding most keys is not copied as it grows.
    expected: usize,
}

impl Groups {
    /// Adds a key; false if it would make more than `SORT_GROUPS_MAX` groups.
    fn push(&mut self, prefix: &[u8], rowid: i64) -> bool {
        let found = match self.groups.get(self.last) {
            Some((last, _)) if last.as_slice() == prefix => Some(self.last),
            _ => self.groups.iter().position(|(group, _)| group.as_slice() == prefix),
        };
        let group = match found {
            Some(group) => group,
            None if self.groups.len() == SORT_GROUPS_MAX => return false,
            None => {
                self.groups.push((prefix.to_vec(), Vec::with_capacity(self.expected)));
                self.groups.len() - 1
            }
        };
        self.expected = self.expected.saturating_sub(1);
        let rowids = &mut self.groups[group].1;
        assert!(rowids.last().is_none_or(|last| *last < rowid), "rows arrive in rowid order");
        rowids.push(rowid);
        self.last = group;
        true
    }

    /// Hands every key to `sink`, in order once the groups are sorted.
    fn each(&self, sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut key = Vec::new();
        for (prefix, rowids) in &self.groups {
            for rowid in rowids {
                key.clear();
                key.extend_from_slice(prefix);
                for _ in 0..self.rowid_values {
                    push_key(&mut key, Val::Int(*rowid), false)?;
                }
                sink(&key)?;
            }
        }
        Ok(())
    }
}

/// A key: its first 8 bytes (big-endian, zero-padded, so most comparisons end there), and
/// where it is: chunk (top 10 bits) and offset (low 22 bits), and length.
#[derive(Debug, Clone, Copy)]
struct SortEntry {
    prefix: u64,
    location: u32,
    length: u32,
}

/// Bytes of one chunk of keys (a key longer than this gets a chunk of its own).
const SORT_CHUNK_BYTES: usize = 1 << 22;
/// Chunks before the keys are sorted to disk, whatever the budget.
const SORT_CHUNKS_MAX: usize = 1 << 10;
/// Groups of keys ending with the rowid, beyond which they are sorted like any others (a
/// few resource types, not one group per resource).
const SORT_GROUPS_MAX: usize = 256;
/// Sorted keys whose first bytes are loaded together, ahead of being handed over.
const SORT_TOUCH_AHEAD: usize = 16;

impl Sorter {
    /// A sorter for about `expected` keys (room for them is reserved, within the budget).
    fn new(dir: PathBuf, budget_bytes: usize, expected: u64) -> Self {
        let entries = usize::try_from(expected).unwrap_or(usize::MAX).min(budget_bytes / 4 / size_of::<SortEntry>());
        Self {
            chunks: Vec::new(),
            entries: Vec::with_capacity(entries),
            held_bytes: 0,
            runs: Vec::new(),
            dir,
            budget_bytes,
            sorted: false,
            groups: None,
            rowid_values: 0,
        }
    }

    /// Keeps keys whose last `rowid_values` values are the rowid as groups ([`Groups`]).
    fn grouped(mut self, rowid_values: usize) -> Self {
        let expected = self.entries.capacity().min(self.budget_bytes / size_of::<i64>());
        self.groups = Some(Groups { groups: Vec::new(), last: 0, rowid_values, expected });
        self.rowid_values = rowid_values;
        self
    }

    /// Adds the key `prefix` followed by `rowid` as each of its last values (a sorter made
    /// [`grouped`](Self::grouped); once ungrouped, as a key like any other).
    fn push_grouped(&mut self, prefix: &[u8], rowid: i64) -> Result<(), StoreError> {
        assert!(self.rowid_values > 0, "a grouped sorter");
        let over_budget = self.held_bytes + size_of::<i64>() > self.budget_bytes;
        if let Some(groups) = self.groups.as_mut().filter(|_| !over_budget) {
            if groups.push(prefix, rowid) {
                self.held_bytes += size_of::<i64>();
                self.sorted = false;
                return Ok(());
            }
        }
        self.ungroup()?;
        let mut key = prefix.to_vec();
        for _ in 0..self.rowid_values {
            push_key(&mut key, Val::Int(rowid), false)?;
        }
        self.push(&key)
    }

    /// Turns the groups into keys like any others, sorted (and spilled) as they are.
    fn ungroup(&mut self) -> Result<(), StoreError> {
        let Some(groups) = self.groups.take() else { return Ok(()) };
        self.held_bytes = 0;
        groups.each(&mut |key| self.push(key))
    }

    fn push(&mut self, key: &[u8]) -> Result<(), StoreError> {
        assert!(self.groups.is_none(), "keys are pushed to a grouped sorter as groups");
        let entry_bytes = size_of::<SortEntry>();
        let fits = |chunks: &[Vec<u8>]| {
            chunks.last().is_some_and(|c| c.len() < SORT_CHUNK_BYTES && c.capacity() - c.len() >= key.len())
        };
        let over_budget = self.held_bytes + key.len() + entry_bytes > self.budget_bytes;
        if !self.entries.is_empty() && (over_budget || (!fits(&self.chunks) && self.chunks.len() == SORT_CHUNKS_MAX)) {
            self.spill()?;
        }
        if !fits(&self.chunks) {
            // Reserved, not touched: memory is used as keys arrive.
            self.chunks.push(Vec::with_capacity(SORT_CHUNK_BYTES.max(key.len())));
        }
        self.held_bytes += key.len() + entry_bytes;
        let chunk = self.chunks.len() - 1;
        let bytes = &mut self.chunks[chunk];
        let mut prefix = [0u8; 8];
        let length = key.len().min(8);
        prefix[..length].copy_from_slice(&key[..length]);
        // A chunk's keys start below 4 MiB (a longer key starts a chunk of its own).
        assert!(chunk < SORT_CHUNKS_MAX && bytes.len() < SORT_CHUNK_BYTES, "a sort key's place fits 32 bits");
        self.entries.push(SortEntry {
            prefix: u64::from_be_bytes(prefix),
            location: ((chunk as u32) << 22) | bytes.len() as u32,
            length: u32::try_from(key.len()).map_err(|_| StoreError::Corrupt("a sort key beyond 4 GiB".into()))?,
        });
        bytes.extend_from_slice(key);
        self.sorted = false;
        Ok(())
    }

    fn key(&self, entry: &SortEntry) -> &[u8] {
        let chunk = (entry.location >> 22) as usize;
        let offset = (entry.location & ((1 << 22) - 1)) as usize;
        &self.chunks[chunk][offset..offset + entry.length as usize]
    }

    /// A stable sort: keys that arrive mostly in order (an index on the rowid's own order)
    /// sort in about one pass.
    fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| self.key(a).cmp(self.key(b))));
        self.entries = entries;
        self.sorted = true;
    }

    /// Makes every key ready to be handed over in order: sorted in memory, or the last run
    /// spilled beside the others.
    fn sort_all(&mut self) -> Result<(), StoreError> {
        if let Some(groups) = &mut self.groups {
            groups.groups.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
            self.sorted = true;
            return Ok(());
        }
        if self.runs.is_empty() {
            self.sort();
        } else if !self.entries.is_empty() {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands every key to `sink` in order, without consuming them: for keys sorted in memory
    /// (`sort_all` without runs), which several threads may read at once.
    fn each_in_memory(&self, sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        assert!(self.runs.is_empty() && (self.sorted || self.entries.is_empty()), "keys sorted in memory");
        if let Some(groups) = &self.groups {
            assert!(self.sorted || groups.groups.is_empty(), "groups sorted");
            return groups.each(sink);
        }
        // Sorted, the keys are read in random order from tens of megabytes: nearly every
        // one a cache (and TLB) miss. Loading the next group's first bytes before handing
        // over this group's keys lets those misses overlap instead of following each other.
        let touch = |group: &[SortEntry]| {
            let touched = group.iter().fold(0u8, |acc, entry| {
                let key = self.key(entry);
                acc ^ key.first().copied().unwrap_or(0) ^ key.last().copied().unwrap_or(0)
            });
            std::hint::black_box(touched);
        };
        let mut groups = self.entries.chunks(SORT_TOUCH_AHEAD).peekable();
        if let Some(first) = groups.peek() {
            touch(first);
        }
        while let Some(group) = groups.next() {
            if let Some(next) = groups.peek() {
                touch(next);
            }
            for entry in group {
                sink(self.key(entry))?;
            }
        }
        Ok(())
    }

    /// Writes the keys in memory, sorted, to a run file: (u32 length, bytes) each.
    fn spill(&mut self) -> Result<(), StoreError> {
        self.sort();
        let suffix = medvault_crypto::random::array::<8>().map_err(|e| StoreError::Crypto(e.to_string()))?;
        let path = self.dir.join(format!("sort-run-{}", medvault_base::hex::encode(&suffix)));
        let file =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io_error(&path, e))?;
        self.runs.push(path.clone());
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        for entry in &self.entries {
            writer.write_all(&entry.length.to_be_bytes()).map_err(|e| io_error(&path, e))?;
            writer.write_all(self.key(entry)).map_err(|e| io_error(&path, e))?;
        }
        writer.flush().map_err(|e| io_error(&path, e))?;
        self.chunks.clear();
        self.entries.clear();
        self.held_bytes = 0;
        Ok(())
    }

    /// Hands every key to `sink` in order, then removes its run files.
    fn drain(mut self, sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        if self.groups.is_some() {
            self.sort_all()?;
            return self.each_in_memory(sink);
        }
        if self.runs.is_empty() {
            self.sort();
            for entry in &self.entries {
                sink(self.key(entry))?;
            }
            return Ok(());
        }
        if !self.entries.is_empty() {
            self.spill()?;
        }
        let result = self.merge(sink);
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
        }
        result
    }

    fn merge(&self, sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut readers = Vec::with_capacity(self.runs.len());
        for path in &self.runs {
            readers.push(BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| io_error(path, e))?));
        }
        let next = |reader: &mut BufReader<File>| -> Result<Option<Vec<u8>>, StoreError> {
            let mut length = [0u8; 4];
            match read_full(reader, &mut length)? {
                0 => return Ok(None),
                4 => {}
                _ => return Err(StoreError::Corrupt("a sort run ends inside a length".into())),
            }
            let mut key = vec![0u8; u32::from_be_bytes(length) as usize];
            reader.read_exact(&mut key).map_err(|e| StoreError::Io(e.to_string()))?;
            Ok(Some(key))
        };
        let mut heap = BinaryHeap::new();
        for (run, reader) in readers.iter_mut().enumerate() {
            if let Some(key) = next(reader)? {
                heap.push(std::cmp::Reverse((key, run)));
            }
        }
        while let Some(std::cmp::Reverse((key, run))) = heap.pop() {
            sink(&key)?;
            if let Some(key) = next(&mut readers[run])? {
                heap.push(std::cmp::Reverse((key, run)));
            }
        }
        Ok(())
    }
}

/// One level of ledger nodes (32-byte hashes in index order), in memory up to the sort
/// budget, then in a file.
struct Level {
    dir: PathBuf,
    memory: Vec<Hash>,
    file: Option<(PathBuf, BufWriter<File>)>,
    len: u64,
}

impl Level {
    /// A level of about `expected` nodes (room is reserved, within the budget).
    fn new(dir: PathBuf, expected: u64) -> Self {
        let room = usize::try_from(expected).unwrap_or(usize::MAX).min(BACKUP_RESTORE_SORT_BYTES_MAX / 32);
        Self { dir, memory: Vec::with_capacity(room), file: None, len: 0 }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, hash: Hash) -> Result<(), StoreError> {
        self.len += 1;
        if self.file.is_none() && self.memory.len() * 32 < BACKUP_RESTORE_SORT_BYTES_MAX {
            self.memory.push(hash);
            return Ok(());
        }
        if self.file.is_none() {
            let suffix = medvault_crypto::random::array::<8>().map_err(|e| StoreError::Crypto(e.to_string()))?;
            let path = self.dir.join(format!("ledger-level-{}", medvault_base::hex::encode(&suffix)));
            let file =
                std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io_error(&path, e))?;
            self.file = Some((path, BufWriter::with_capacity(1 << 20, file)));
        }
        let (path, writer) = self.file.as_mut().expect("the level's file was just opened");
        writer.write_all(&hash).map_err(|e| io_error(path, e))
    }

    /// Hands every hash to `sink` in order and returns the level above: the node hash of
    /// each pair. A level in memory becomes the one above in place (node `i` overwrites a
    /// hash already handed over: `i / 2 < 2 i`), so climbing needs no memory of its own.
    fn climb(self, sink: &mut dyn FnMut(&Hash) -> Result<(), StoreError>) -> Result<Level, StoreError> {
        if self.file.is_none() {
            let Level { dir, mut memory, .. } = self;
            let len = memory.len();
            for index in 0..len {
                let hash = memory[index];
                sink(&hash)?;
                if index % 2 == 1 {
                    memory[index / 2] = medvault_ledger::node_hash(&memory[index - 1], &hash);
                }
            }
            memory.truncate(len / 2);
            return Ok(Level { dir, len: memory.len() as u64, memory, file: None });
        }
        let mut next = Level::new(self.dir.clone(), self.len / 2);
        let mut left: Option<Hash> = None;
        self.drain(&mut |hash: &Hash| {
            sink(hash)?;
            match left.take() {
                Some(previous) => next.push(medvault_ledger::node_hash(&previous, hash)),
                None => {
                    left = Some(*hash);
                    Ok(())
                }
            }
        })?;
        Ok(next)
    }

    /// Hands every hash to `sink` in order, then forgets them.
    fn drain(self, sink: &mut dyn FnMut(&Hash) -> Result<(), StoreError>) -> Result<(), StoreError> {
        for hash in &self.memory {
            sink(hash)?;
        }
        if let Some((path, writer)) = self.file {
            let result = (|| -> Result<(), StoreError> {
                let file = writer.into_inner().map_err(|e| io_error(&path, e.into_error()))?;
                drop(file);
                let mut reader = BufReader::with_capacity(1 << 20, File::open(&path).map_err(|e| io_error(&path, e))?);
                let mut hash = [0u8; 32];
                while read_full(&mut reader, &mut hash)? == 32 {
                    sink(&hash)?;
                }
                Ok(())
            })();
            let _ = std::fs::remove_file(&path);
            result?;
        }
        Ok(())
    }
}

pub(super) fn read_full(reader: &mut dyn Read, buffer: &mut [u8]) -> Result<usize, StoreError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(StoreError::Io(error.to_string())),
        }
    }
    Ok(filled)
}

/// Reads the row stream (format: "The logical dump") a whole row at a time, in place in the
/// reader's buffer, without allocating per value; a row that spans two of the reader's
/// buffers is gathered in one of its own.
struct RowReader<'r> {
    reader: &'r mut dyn BufRead,
    columns: usize,
    /// The current row when it spans the reader's buffers.
    carry: Vec<u8>,
    /// Bytes of the reader's buffer the last row handed out lies in (consumed at the next).
    pending: usize,
    /// (tag, integer or length, offset) of each value of the current row.
    fields: Vec<(u8, u64, usize)>,
}

/// Rows of a table from which its indexes are sorted on threads of their own while the
/// rebuild goes on (below, a thread costs more than the sort; the rebuild test's `versions`
/// is above, so the threaded path is the tested one).
const BACKGROUND_SORT_ROWS_MIN: u64 = 1_000;

/// A row found in a buffer, or how many more bytes at least it needs.
enum Parsed {
    Row(usize),
    Needs(usize),
}

impl<'r> RowReader<'r> {
    fn new(reader: &'r mut dyn BufRead, columns: usize) -> Self {
        Self { reader, columns, carry: Vec::new(), pending: 0, fields: Vec::with_capacity(columns) }
    }

    /// The next row's values, or `None` at a clean end of the stream.
    fn next_row(&mut self) -> Result<Option<Vec<Val<'_>>>, StoreError> {
        self.reader.consume(std::mem::take(&mut self.pending));
        self.carry.clear();
        let parsed = {
            let available = fill(self.reader)?;
            if available.is_empty() {
                return Ok(None);
            }
            match parse_row(available, self.columns, &mut self.fields)? {
                Parsed::Row(length) => Some(length),
                Parsed::Needs(_) => {
                    self.carry.extend_from_slice(available);
                    None
                }
            }
        };
        if let Some(length) = parsed {
            self.pending = length;
            let row = &fill(self.reader)?[..length];
            return Ok(Some(values(row, &self.fields)));
        }
        let taken = self.carry.len();
        self.reader.consume(taken);
        // Gather the rest of the row, never more: the next one starts in the reader's buffer.
        loop {
            let needs = match parse_row(&self.carry, self.columns, &mut self.fields)? {
                Parsed::Row(_) => break,
                Parsed::Needs(needs) => needs,
            };
            let available = fill(self.reader)?;
            if available.is_empty() {
                return Err(StoreError::Integrity("a dumped row is cut short".into()));
            }
            let take = needs.min(available.len());
            self.carry.extend_from_slice(&available[..take]);
            self.reader.consume(take);
        }
        Ok(Some(values(&self.carry, &self.fields)))
    }
}

/// The reader's buffered bytes, refilled if it has none (empty at the end of the stream).
fn fill(reader: &mut dyn BufRead) -> Result<&[u8], StoreError> {
    loop {
        match reader.fill_buf() {
            // Re-borrowed: a borrow returned from inside a loop is not yet accepted.
            Ok(_) => break,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(StoreError::Io(error.to_string())),
        }
    }
    reader.fill_buf().map_err(|e| StoreError::Io(e.to_string()))
}

/// The values of a row `parse_row` found in `row`.
fn values<'v>(row: &'v [u8], fields: &[(u8, u64, usize)]) -> Vec<Val<'v>> {
    fields
        .iter()
        .map(|&(tag, word, offset)| match tag {
            TAG_NULL => Val::Null,
            TAG_INTEGER => Val::Int(word as i64),
            TAG_REAL => Val::Real(f64::from_bits(word)),
            TAG_TEXT => Val::Text(&row[offset..offset + word as usize]),
            _ => Val::Blob(&row[offset..offset + word as usize]),
        })
        .collect()
}

/// Finds the values of the row at the start of `bytes` (into `fields`): the row's length, or
/// how many bytes at least it still needs (to complete the value it ends in).
fn parse_row(bytes: &[u8], columns: usize, fields: &mut Vec<(u8, u64, usize)>) -> Result<Parsed, StoreError> {
    fields.clear();
    let needs = |end: usize| Ok(Parsed::Needs(end - bytes.len()));
    let mut at = 0;
    for _ in 0..columns {
        let Some(&tag) = bytes.get(at) else { return needs(at + 1) };
        at += 1;
        match tag {
            TAG_NULL => fields.push((tag, 0, at)),
            TAG_INTEGER | TAG_REAL => {
                let Some(word) = bytes.get(at..at + 8) else { return needs(at + 8) };
                let word = u64::from_be_bytes(word.try_into().map_err(|_| StoreError::Corrupt("word".into()))?);
                fields.push((tag, word, at));
                at += 8;
            }
            TAG_TEXT | TAG_BLOB => {
                let Some(length) = bytes.get(at..at + 4) else { return needs(at + 4) };
                let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
                if length > BACKUP_VALUE_BYTES_MAX {
                    return Err(StoreError::Integrity(format!("a dumped value of {length} bytes")));
                }
                at += 4;
                let Some(value) = bytes.get(at..at + length) else { return needs(at + length) };
                if tag == TAG_TEXT && std::str::from_utf8(value).is_err() {
                    return Err(StoreError::Integrity("dumped text is not UTF-8".into()));
                }
                fields.push((tag, length as u64, at));
                at += length;
            }
            other => return Err(StoreError::Integrity(format!("unknown value tag {other} in a dumped row"))),
        }
    }
    Ok(Parsed::Row(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(values: &[(Val<'_>, bool)]) -> Vec<u8> {
        let mut key = Vec::new();
        for (value, descending) in values {
            push_key(&mut key, *value, *descending).expect("key");
        }
        key
    }

    #[test]
    fn sort_keys_order_values_as_sqlite_does_and_decode_back() {
        // SQLite's order with BINARY collation: NULL, integers, text (bytes, a prefix first),
        // blobs.
        let ordered = [
            Val::Null,
            Val::Int(i64::MIN),
            Val::Int(-(1 << 40)),
            Val::Int(-257),
            Val::Int(-256),
            Val::Int(-129),
            Val::Int(-128),
            Val::Int(-1),
            Val::Int(0),
            Val::Int(1),
            Val::Int(127),
            Val::Int(128),
            Val::Int(255),
            Val::Int(256),
            Val::Int(1 << 40),
            Val::Int(i64::MAX),
            Val::Text(b""),
            Val::Text(b"a"),
            Val::Text(b"a\0"),
            Val::Text(b"a\0b"),
            Val::Text(b"ab"),
            Val::Blob(b""),
            Val::Blob(&[0, 0]),
            Val::Blob(&[0, 1]),
            Val::Blob(&[0xff]),
        ];
        for descending in [false, true] {
            let keys: Vec<Vec<u8>> = ordered.iter().map(|v| key(&[(*v, descending), (Val::Int(7), false)])).collect();
            for pair in keys.windows(2) {
                assert_eq!(pair[0] < pair[1], !descending, "{pair:?}");
            }
            let mut scratch = Vec::new();
            let mut fields = Vec::new();
            for (value, key) in ordered.iter().zip(&keys) {
                decode_key(key, &[descending, false], &mut scratch, &mut fields).expect("decode");
                assert_eq!(fields[0].0.value(&scratch), *value);
                assert_eq!(fields[1].0.value(&scratch), Val::Int(7));
                assert_eq!(&key[..fields[0].1], &self::key(&[(*value, descending)])[..]);
                assert_eq!(fields[1].1, key.len());
            }
        }
    }

    #[test]
    fn the_sorter_spills_runs_to_disk_and_merges_them_in_order() {
        let dir = medvault_testkit::TempDir::new("sorter");
        let mut sorter = Sorter::new(dir.path().to_path_buf(), 4 * 1024, 100);
        let mut expected = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let k = key(&[(Val::Int((state % 1000) as i64), false), (Val::Blob(&state.to_be_bytes()[..3]), false)]);
            sorter.push(&k).expect("push");
            expected.push(k);
        }
        assert!(sorter.runs.len() > 10, "a small budget spills: {} runs", sorter.runs.len());
        expected.sort();
        let mut got = Vec::new();
        sorter
            .drain(&mut |k| {
                got.push(k.to_vec());
                Ok(())
            })
            .expect("drain");
        assert_eq!(got, expected);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "the runs are removed");
    }

    #[test]
    fn keys_ending_with_the_rowid_are_grouped_and_handed_over_in_key_order() {
        // A few groups stay groups; more than the limit are sorted like any other keys.
        for groups in [3i64, SORT_GROUPS_MAX as i64 + 5] {
            let dir = medvault_testkit::TempDir::new("sorter-groups");
            let mut sorter = Sorter::new(dir.path().to_path_buf(), 1 << 20, 100).grouped(2);
            let mut expected = Vec::new();
            for rowid in 1..=3000i64 {
                let name = format!("type{}", (rowid * 7919) % groups);
                let prefix = key(&[(Val::Text(name.as_bytes()), false)]);
                sorter.push_grouped(&prefix, rowid).expect("push");
                expected.push(key(&[
                    (Val::Text(name.as_bytes()), false),
                    (Val::Int(rowid), false),
                    (Val::Int(rowid), false),
                ]));
            }
            assert_eq!(sorter.groups.is_some(), groups as usize <= SORT_GROUPS_MAX, "{groups} groups");
            expected.sort();
            sorter.sort_all().expect("sort");
            let mut read = Vec::new();
            sorter
                .each_in_memory(&mut |k| {
                    read.push(k.to_vec());
                    Ok(())
                })
                .expect("each");
            assert_eq!(read, expected, "{groups} groups, read in memory");
            let mut drained = Vec::new();
            sorter
                .drain(&mut |k| {
                    drained.push(k.to_vec());
                    Ok(())
                })
                .expect("drain");
            assert_eq!(drained, expected, "{groups} groups, drained");
        }
    }

    #[test]
    fn restore_takes_any_value_sqlite_can_hold() {
        // Nothing a store holds is larger than SQLite's limit on a value; restore's limit is
        // that one (a value this size restores; SQLite refuses one byte more).
        let connection = Connection::open_in_memory().expect("memory");
        let larger = connection
            .query_row("SELECT length(zeroblob(?1))", [BACKUP_VALUE_BYTES_MAX as i64 + 1], |r| r.get::<_, i64>(0));
        assert!(larger.is_err_and(|e| e.to_string().contains("too big")), "SQLite's limit is above restore's");
        let mut stream = vec![TAG_BLOB];
        stream.extend_from_slice(&(BACKUP_VALUE_BYTES_MAX as u32 + 1).to_be_bytes());
        let mut reader = &stream[..];
        let error = RowReader::new(&mut reader, 1).next_row().expect_err("a larger value is refused");
        assert!(error.to_string().contains("bytes"), "{error}");
    }

    #[test]
    fn rows_are_read_across_buffer_refills_and_cut_rows_are_refused() {
        let mut stream = Vec::new();
        for index in 0..2000u32 {
            stream.push(TAG_INTEGER);
            stream.extend_from_slice(&i64::from(index).to_be_bytes());
            stream.push(TAG_BLOB);
            let blob = vec![index as u8; (index as usize * 37) % 3000];
            stream.extend_from_slice(&(blob.len() as u32).to_be_bytes());
            stream.extend_from_slice(&blob);
            stream.push(TAG_NULL);
        }
        // Through buffers smaller than most rows, and of a size rows never line up with.
        let mut reader = std::io::BufReader::with_capacity(997, &stream[..]);
        let mut rows = RowReader::new(&mut reader, 3);
        let mut count = 0u32;
        while let Some(values) = rows.next_row().expect("row") {
            assert_eq!(values[0], Val::Int(i64::from(count)));
            assert!(matches!(values[1], Val::Blob(b) if b.len() == (count as usize * 37) % 3000));
            assert_eq!(values[2], Val::Null);
            count += 1;
        }
        assert_eq!(count, 2000);
        let mut cut = &stream[..stream.len() - 1];
        let mut rows = RowReader::new(&mut cut, 3);
        let error = loop {
            match rows.next_row() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a cut stream ended cleanly"),
                Err(error) => break error,
            }
        };
        assert!(error.to_string().contains("cut short"), "{error}");
    }
}
