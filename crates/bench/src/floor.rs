//! The storage floor: the dataset's resources written as plain JSON rows into SQLite with
//! the store's durability settings (WAL, `synchronous=FULL`), one transaction per Bundle,
//! from one thread. No HTTP, no parsing, no validation, no sealing: what the disk and SQLite
//! alone cost, against which the import over HTTP is compared.

use std::time::{Duration, Instant};

use crate::dataset::Dataset;

#[derive(Debug, Clone, Copy)]
pub struct FloorRun {
    pub resources: usize,
    pub elapsed: Duration,
    /// CPU seconds of the inserting thread (SQLite runs on it).
    pub cpu_s: Option<f64>,
}

impl FloorRun {
    pub fn resources_per_s(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64()
    }
}

/// A plain row table: one row and one primary-key index entry per resource.
const SCHEMA: &str = "
CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    json          BLOB NOT NULL
);";

pub fn run(dataset: &Dataset) -> anyhow::Result<FloorRun> {
    let directory = medvault_testkit::TempDir::new("bench-floor");
    let mut connection = rusqlite::Connection::open(directory.path().join("floor.db"))?;
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "SQLite refused WAL mode (got {mode})");
    // The same durability and cache as the store's connections (crates/store/src/sqlite.rs).
    connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -32768;")?;
    connection.execute_batch(SCHEMA)?;
    let started = Instant::now();
    let cpu_started = crate::cpu::thread_s();
    let mut resources = 0;
    for bundle in &dataset.bundles {
        let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert =
                transaction.prepare_cached("INSERT INTO resources (id, resource_type, json) VALUES (?1, ?2, ?3)")?;
            for row in &bundle.rows {
                insert.execute(rusqlite::params![row.id, row.resource_type, row.json])?;
            }
        }
        transaction.commit()?;
        resources += bundle.rows.len();
    }
    let elapsed = started.elapsed();
    let cpu_s = crate::cpu::thread_s().zip(cpu_started).map(|(end, start)| end - start);
    let stored: i64 = connection.query_row("SELECT COUNT(*) FROM resources", [], |row| row.get(0))?;
    anyhow::ensure!(
        usize::try_from(stored).ok() == Some(resources),
        "the floor stored {stored} rows, expected {resources}"
    );
    Ok(FloorRun { resources, elapsed, cpu_s })
}
