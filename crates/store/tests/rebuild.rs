//! The restore's rebuild at its boundary: a store with every kind of row is dumped and
//! rebuilt page by page; SQLite must find the new file sound (`integrity_check`), hold the
//! same rows in every table, and keep working when the store writes to it. Bad dumps are
//! refused and an interrupted rebuild is never taken for a store.

use std::path::Path;
use std::sync::Arc;

use medvault_base::SystemClock;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::accounts::{NewUser, SessionRecord};
use medvault_store::backup::{DestroyedKey, Rebuild, RebuildTable, TableContent, EPHEMERAL_META, EPHEMERAL_TABLES};
use medvault_store::{AuditEntry, Store, StoreError, Write, WriteAction};
use medvault_testkit::TempDir;
use rusqlite::types::Value;
use serde_json::json;

fn put(resource_type: &str, id: &str, body: serde_json::Value) -> Write {
    Write {
        resource_type: resource_type.into(),
        id: id.into(),
        action: WriteAction::Put(body),
        if_match: None,
        must_be_new: false,
    }
}

fn patient(id: &str, family: &str) -> Write {
    put("Patient", id, json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]}))
}

fn observation(id: &str, patient: &str, note: &str) -> Write {
    put(
        "Observation",
        id,
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": note},
               "subject": {"reference": format!("Patient/{patient}")}}),
    )
}

struct Source {
    dir: TempDir,
    store: Store,
}

fn key_file(dir: &Path) -> KeyFile {
    KeyFile { path: dir.join("master.key") }
}

/// An audit record of `patients`, recorded at `at_ms` (the store keeps records opaque).
fn audit_entry(at_ms: i64, patients: &[String]) -> AuditEntry {
    AuditEntry { recorded_ms: at_ms, patients: patients.to_vec(), record: format!("record at {at_ms}").into_bytes() }
}

/// A store with versions (updates, deletions, one too large for a page), audit blocks of
/// reads and of writes with their index by patient, a canary, accounts, a session, recovery
/// codes, an assignment, a break-glass grant, a client, an assertion id and a service token.
fn source() -> Source {
    let dir = TempDir::new("rebuild");
    MasterKey::generate().expect("key").create_key_file(&dir.path().join("master.key")).expect("key file");
    let store = Store::create(&dir.path().join("data"), &key_file(dir.path()), Arc::new(SystemClock)).expect("create");
    // Search documents both posted and pending, so every search table has rows.
    store.hold_search_posts(true);
    for batch in 0..30 {
        let mut writes = Vec::new();
        for i in batch * 50..batch * 50 + 50 {
            writes.push(patient(&format!("p{i}"), &format!("Family{i}")));
            writes.push(observation(&format!("o{i}"), &format!("p{i}"), &"x".repeat(i % 700)));
        }
        store.write(&writes, "loader").expect("write");
        if batch == 20 {
            store.post_search_documents().expect("post");
        }
    }
    // And a post in progress, with its cursor in `meta`.
    assert!(!store.post_search_documents_step(500).expect("slice"));
    // Audit blocks of reads (one per group commit, several records naming several patients
    // each: enough index rows for interior pages), then a write's own.
    for block in 0..100i64 {
        let entries = (0..10i64)
            .map(|record| {
                let patients: Vec<String> =
                    (0..3).map(|n| format!("p{}", (block * 10 + record) * 3 % 1500 + n)).collect();
                audit_entry(1_000_000 + block * 100 + record, &patients)
            })
            .collect();
        store.audit(entries).expect("audit");
        // A query of the trail moves the journal's records into a block of their own.
        store.audit_slots_of_patient("p0", 0, 1, None, 1).expect("audit query");
    }
    let updates: Vec<Write> = (0..200).map(|i| patient(&format!("p{}", i * 7), "Renamed")).collect();
    let records: Vec<AuditEntry> = (0..200).map(|i| audit_entry(2_000_000 + i, &[format!("p{}", i * 7)])).collect();
    store.write_audited(&updates, "loader", None, &records).expect("update");
    store.set_canary("p9", true).expect("canary");
    let large = "y".repeat(20_000);
    store.write(&[observation("large", "p1", &large)], "loader").expect("large");
    let deletion = Write { action: WriteAction::Delete, ..patient("p3", "") };
    store.write(&[deletion], "loader").expect("delete");
    let user_id = store
        .create_user(NewUser {
            username: "dr.who".into(),
            role: "clinician".into(),
            fhir_user: Some("Practitioner/pr1".into()),
            scopes: "user/*.rs".into(),
            password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            mfa_required: false,
            totp_secret: None,
            recovery_digests: vec![[1u8; 32], [2u8; 32]],
        })
        .expect("user");
    store
        .create_session(SessionRecord {
            digest: [9u8; 32],
            user_id,
            scopes: "user/*.rs".into(),
            created_ms: 1,
            last_seen_ms: 1,
            idle_ms: 1000,
            expires_ms: i64::MAX,
            revoked_ms: None,
        })
        .expect("session");
    store.assign_patient(user_id, "p5", "admin").expect("assign");
    store.create_break_glass(user_id, "p6", "an emergency in the night", i64::MAX).expect("break glass");
    store.register_client("lab", "{\"keys\":[]}", "system/*.rs").expect("client");
    store.use_assertion_id("lab", "jti-1", i64::MAX).expect("jti");
    store.create_service_token("importer", "system/*.cruds", None).expect("token");
    Source { dir, store }
}

struct Dump {
    tables: Vec<RebuildTable>,
    schema: Vec<String>,
    rows: Vec<(String, Vec<u8>)>,
    leaves: Vec<u8>,
    tree_size: u64,
}

fn dump(store: &Store) -> Dump {
    let dump = store.backup_dump().expect("dump");
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    for table in &dump.tables {
        let mut bytes = Vec::new();
        let count = dump
            .stream_rows(table, &mut |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })
            .expect("stream");
        counts.push(count);
        if table.content == TableContent::Rows {
            rows.push((table.name.clone(), bytes));
        }
    }
    let mut leaves = Vec::new();
    dump.stream_leaf_hashes(&mut |chunk| {
        leaves.extend_from_slice(chunk);
        Ok(())
    })
    .expect("leaves");
    dump.check_leaves().expect("the dump holds every leaf its checkpoint covers");
    let tables = dump
        .tables
        .iter()
        .zip(counts)
        .map(|(t, rows)| RebuildTable {
            name: t.name.clone(),
            create_sql: t.create_sql.clone(),
            columns: t.columns.clone(),
            content: t.content,
            rows,
        })
        .collect();
    Dump { tables, schema: dump.schema.clone(), rows, leaves, tree_size: dump.checkpoint.tree_size }
}

fn rebuild(dump: &Dump, target: &Path, erasures: &[DestroyedKey]) -> Result<(), StoreError> {
    let mut rebuild = Rebuild::create(target, &dump.tables, &dump.schema, erasures)?;
    for (name, bytes) in &dump.rows {
        let columns = &dump.tables.iter().find(|t| &t.name == name).expect("table").columns;
        rebuild.insert_rows(name, columns, &mut &bytes[..])?;
    }
    let ledger = rebuild.insert_leaf_hashes(&mut &dump.leaves[..], &[dump.tree_size])?;
    assert_eq!(ledger.leaves, dump.tree_size);
    rebuild.finish()?;
    Ok(())
}

fn integrity(database: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(database).expect("open");
    let mut statement = connection.prepare("PRAGMA integrity_check").expect("pragma");
    statement.query_map([], |row| row.get::<_, String>(0)).expect("query").collect::<Result<_, _>>().expect("rows")
}

/// Every row of every table, each as text, sorted; rowid tables with their rowids.
fn contents(database: &Path) -> Vec<(String, Vec<String>)> {
    let connection = rusqlite::Connection::open(database).expect("open");
    let tables: Vec<(String, bool)> = connection
        .prepare(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .expect("tables")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    tables
        .into_iter()
        .map(|(name, without_rowid)| {
            let select = if without_rowid { "*" } else { "rowid, *" };
            let mut statement = connection.prepare(&format!("SELECT {select} FROM \"{name}\"")).expect("select");
            let columns = statement.column_count();
            let mut rows: Vec<String> = statement
                .query_map([], |row| {
                    (0..columns)
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| format!("{v:?}"))
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.sort();
            (name, rows)
        })
        .collect()
}

fn schema(database: &Path) -> Vec<(String, String, String, Option<String>)> {
    let connection = rusqlite::Connection::open(database).expect("open");
    let mut rows: Vec<_> = connection
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")
        .expect("schema")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows.sort();
    rows
}

#[test]
fn a_rebuilt_database_is_sound_holds_every_row_and_keeps_working() {
    let source = source();
    let dump = dump(&source.store);
    source.store.close();
    let original = source.dir.path().join("data/medvault.db");
    // Erase the key of the first version's patient, as an erasure record would.
    let (key_id, compartment): (i64, Vec<u8>) = rusqlite::Connection::open(&original)
        .expect("open")
        .query_row(
            "SELECT key_id, compartment FROM keys WHERE key_id = (SELECT key_id FROM versions WHERE seq = 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("key");
    let erasure = DestroyedKey {
        key_id: key_id as u64,
        compartment: compartment.clone().try_into().expect("32 bytes"),
        destroyed_ms: 42,
    };
    let target = source.dir.path().join("restored");
    rebuild(&dump, &target, &[erasure]).expect("rebuild");
    let restored = target.join("medvault.db");

    assert_eq!(integrity(&restored), vec!["ok".to_string()], "SQLite finds the rebuilt file sound");
    assert_eq!(schema(&restored), schema(&original), "the same tables, indexes and statements");
    let connection = rusqlite::Connection::open(&restored).expect("open");
    let journal: String = connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
    assert_eq!(journal, "wal");
    let free: i64 = connection.query_row("PRAGMA freelist_count", [], |r| r.get(0)).expect("free");
    assert_eq!(free, 0);
    let erased: (Option<Vec<u8>>, i64) = connection
        .query_row("SELECT wrapped, destroyed_ms FROM keys WHERE key_id = ?1", [key_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("erased key");
    assert_eq!(erased, (None, 42), "the erasure was applied");
    drop(connection);

    // Every table holds what the original holds, but the erased key and the ephemeral tables.
    let mut expected = contents(&original);
    let got = contents(&restored);
    for (name, rows) in &mut expected {
        if EPHEMERAL_TABLES.contains(&name.as_str()) {
            assert!(!rows.is_empty(), "the source has rows in {name}, so the test shows they are dropped");
            rows.clear();
        }
        if name == "meta" {
            let search_rows = rows.iter().filter(|row| row.starts_with("[Text(\"search_")).count();
            let ephemeral = rows
                .iter()
                .filter(|row| EPHEMERAL_META.iter().any(|meta| row.starts_with(&format!("[Text(\"{meta}\")"))))
                .count();
            assert_eq!(search_rows, ephemeral, "every search_ row of meta is ephemeral: {rows:?}");
            let before = rows.len();
            rows.retain(|row| !EPHEMERAL_META.iter().any(|meta| row.starts_with(&format!("[Text(\"{meta}\")"))));
            assert!(
                rows.len() < before,
                "the source has the search index's generations, so the test shows they are dropped"
            );
        }
        if name == "keys" {
            let erased = rows
                .iter()
                .position(|row| row.starts_with(&format!("[Integer({key_id}), Integer({key_id}),")))
                .expect("erased key row");
            rows.remove(erased);
        }
    }
    let got: Vec<_> = got
        .into_iter()
        .map(|(name, mut rows)| {
            if name == "keys" {
                rows.retain(|row| !row.starts_with(&format!("[Integer({key_id}), Integer({key_id}),")));
            }
            (name, rows)
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    for ((name, rows), (expected_name, expected_rows)) in got.iter().zip(&expected) {
        assert_eq!(name, expected_name);
        assert_eq!(rows.len(), expected_rows.len(), "rows of {name}");
        assert!(rows == expected_rows, "the rows of {name} differ");
    }
    let rows_of = |table: &str| expected.iter().find(|(name, _)| name == table).expect(table).1.len();
    let versions = rows_of("versions");
    assert!(versions > 3000, "enough versions for interior pages in every b-tree: {versions}");
    assert_eq!(
        (rows_of("audit_blocks"), rows_of("audit_canaries")),
        (101, 1),
        "audit blocks and a canary are restored"
    );
    assert!(rows_of("audit_by_patient") > 3000, "enough audit index rows for interior pages");

    // The store opens, verifies, and writes on top of the rebuilt b-trees.
    let store = Store::open(&target, &key_file(source.dir.path()), Arc::new(SystemClock)).expect("open store");
    let report = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert!(report.erased > 0);
    assert_eq!((report.audit_blocks, report.audit_records), (101, 1200), "every audit block opens and checks");
    let slots = store.audit_slots_of_patient("p7", 0, i64::MAX, None, 100).expect("audit by patient");
    let records = store.audit_records_at(&slots).expect("audit records");
    assert!(records.iter().any(|r| r.record == b"record at 2000001"), "the write's record of p7 is found again");
    assert!(matches!(store.read("Patient", "p0"), Err(StoreError::KeyDestroyed)), "the first patient's key was erased");
    assert!(store.read("Patient", "p1").expect("read").is_some());
    // New resources (inserts all over the packed `resources` and index b-trees), new versions
    // of restored ones (rows of `resources` rewritten in place) and a deletion.
    let more: Vec<Write> = (0..500).map(|i| patient(&format!("p{}", i * 3 + 1000), "Later")).collect();
    store.write(&more, "after-restore").expect("write after restore");
    let updates: Vec<Write> = (0..300).map(|i| patient(&format!("p{}", i * 5 + 1), "Updated")).collect();
    store.write(&updates, "after-restore").expect("update after restore");
    let deletion = Write { action: WriteAction::Delete, ..patient("p2", "") };
    store.write(&[deletion], "after-restore").expect("delete after restore");
    // Audit blocks and index rows appended to the restored ones, a read's and a write's.
    store.audit(vec![audit_entry(3_000_000, &["p7".into(), "p1000".into()])]).expect("audit");
    store
        .write_audited(&[patient("p7", "Audited")], "after-restore", None, &[audit_entry(3_000_001, &["p7".into()])])
        .expect("audited write after restore");
    let slots = store.audit_slots_of_patient("p7", 3_000_000, i64::MAX, None, 10).expect("audit by patient");
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|slot| slot.block >= dump.tree_size), "in blocks after the restored ones");
    assert!(store.read("Patient", "p1006").expect("read").is_some());
    let updated = store.read("Patient", "p6").expect("read").expect("p6");
    assert!(String::from_utf8_lossy(&updated.json).contains("Updated"), "the new version is current");
    assert!(store.read("Patient", "p2").expect("read").expect("p2").deleted, "p2 is deleted");
    store.close();
    assert_eq!(integrity(&restored), vec!["ok".to_string()], "still sound after the store wrote to it");
    let store = Store::open(&target, &key_file(source.dir.path()), Arc::new(SystemClock)).expect("reopen");
    let report = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.audit_blocks, 103);
    store.close();
}

fn versions(dump: &mut Dump) -> &mut Vec<u8> {
    &mut dump.rows.iter_mut().find(|(name, _)| name == "versions").expect("versions").1
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("restore-incomplete"))
        .collect()
}

#[test]
fn bad_dumps_are_refused_and_leave_nothing() {
    let source = source();
    let good = dump(&source.store);
    source.store.close();
    let target = source.dir.path().join("restored");

    // A row stream cut short.
    let mut cut = Dump {
        rows: good.rows.clone(),
        tables: good.tables.clone(),
        schema: good.schema.clone(),
        leaves: good.leaves.clone(),
        tree_size: good.tree_size,
    };
    versions(&mut cut).pop();
    let error = rebuild(&cut, &target, &[]).expect_err("cut short");
    assert!(error.to_string().contains("cut short"), "{error}");

    // Rows out of order: the second half of `versions` before the first (whole rows: the
    // stream is re-encoded from the original's rows).
    let original = source.dir.path().join("data/medvault.db");
    let connection = rusqlite::Connection::open(&original).expect("open");
    let encode = |rows: &[Vec<Value>]| {
        let mut bytes = Vec::new();
        for row in rows {
            for value in row {
                match value {
                    Value::Null => bytes.push(0),
                    Value::Integer(i) => {
                        bytes.push(1);
                        bytes.extend_from_slice(&i.to_be_bytes());
                    }
                    Value::Real(r) => {
                        bytes.push(2);
                        bytes.extend_from_slice(&r.to_bits().to_be_bytes());
                    }
                    Value::Text(t) => {
                        bytes.push(3);
                        bytes.extend_from_slice(&(t.len() as u32).to_be_bytes());
                        bytes.extend_from_slice(t.as_bytes());
                    }
                    Value::Blob(b) => {
                        bytes.push(4);
                        bytes.extend_from_slice(&(b.len() as u32).to_be_bytes());
                        bytes.extend_from_slice(b);
                    }
                }
            }
        }
        bytes
    };
    let mut rows: Vec<Vec<Value>> = connection
        .prepare("SELECT * FROM versions ORDER BY seq")
        .expect("select")
        .query_map([], |row| (0..9).map(|i| row.get::<_, Value>(i)).collect())
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    drop(connection);
    let cases: Vec<(&str, Vec<Vec<Value>>, &str)> = vec![
        (
            "reordered",
            {
                let mut r = rows.clone();
                r.swap(10, 11);
                r
            },
            "rowid order",
        ),
        (
            "a repeated (resource, version)",
            {
                let mut r = rows.clone();
                let (key, version) = (r[0][1].clone(), r[0][3].clone());
                r[1][1] = key;
                r[1][3] = version;
                r
            },
            "unique index",
        ),
        (
            "a number where text belongs",
            {
                let mut r = rows.clone();
                r[5][2] = Value::Integer(7);
                r
            },
            "column's type",
        ),
        (
            "NULL in a NOT NULL column",
            {
                let mut r = rows.clone();
                r[5][7] = Value::Null;
                r
            },
            "column's type",
        ),
    ];
    for (what, bad_rows, message) in cases {
        let mut bad = Dump {
            rows: good.rows.clone(),
            tables: good.tables.clone(),
            schema: good.schema.clone(),
            leaves: good.leaves.clone(),
            tree_size: good.tree_size,
        };
        *versions(&mut bad) = encode(&bad_rows);
        let error = rebuild(&bad, &target, &[]).expect_err(what);
        assert!(matches!(error, StoreError::Integrity(_)), "{what}: {error}");
        assert!(error.to_string().contains(message), "{what}: {error}");
        assert!(!target.exists() && leftovers(source.dir.path()).is_empty(), "{what} left something behind");
    }
    rows.clear();

    // A schema the writer cannot reproduce exactly is refused before anything is written.
    let mut checked = Dump {
        rows: good.rows.clone(),
        tables: good.tables.clone(),
        schema: good.schema.clone(),
        leaves: good.leaves.clone(),
        tree_size: good.tree_size,
    };
    checked.tables[0].create_sql = checked.tables[0].create_sql.replacen('(', "(CHECK (1), ", 1);
    let error = rebuild(&checked, &target, &[]).expect_err("CHECK");
    assert!(error.to_string().contains("not supported"), "{error}");
    let mut collated = Dump {
        rows: good.rows.clone(),
        tables: good.tables.clone(),
        schema: good.schema.clone(),
        leaves: good.leaves.clone(),
        tree_size: good.tree_size,
    };
    collated.schema.push("CREATE INDEX by_author ON versions (author COLLATE NOCASE)".into());
    let error = rebuild(&collated, &target, &[]).expect_err("collation");
    assert!(error.to_string().contains("not supported"), "{error}");
    assert!(!target.exists() && leftovers(source.dir.path()).is_empty());

    // A target that is not empty is never written to.
    std::fs::create_dir_all(target.join("something")).expect("dir");
    let error = rebuild(&good, &target, &[]).expect_err("not empty");
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error}");
    std::fs::remove_dir_all(&target).expect("clean");
    rebuild(&good, &target, &[]).expect("the good dump rebuilds");
}

#[test]
fn an_interrupted_rebuild_is_never_taken_for_a_store() {
    let source = source();
    let dump = dump(&source.store);
    source.store.close();
    let target = source.dir.path().join("restored");
    let mut rebuild = Rebuild::create(&target, &dump.tables, &dump.schema, &[]).expect("create");
    for (name, bytes) in &dump.rows {
        let columns = &dump.tables.iter().find(|t| &t.name == name).expect("table").columns;
        rebuild.insert_rows(name, columns, &mut &bytes[..]).expect("rows");
    }
    // The process dies here: nothing runs after (no drop, no cleanup).
    std::mem::forget(rebuild);
    assert!(!target.exists(), "nothing at the target until the rebuild is complete");
    let incomplete = leftovers(source.dir.path());
    assert_eq!(incomplete.len(), 1, "one directory whose name says it is incomplete");
    let database = source.dir.path().join(&incomplete[0]).join("medvault.db");
    assert!(std::fs::metadata(&database).expect("db").len() > 1_000_000, "rows were written");
    let connection = rusqlite::Connection::open(&database).expect("open");
    let error =
        connection.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).expect_err("no header");
    assert!(error.to_string().contains("not a database"), "{error}");
    drop(connection);
    let error =
        Store::open(&source.dir.path().join(&incomplete[0]), &key_file(source.dir.path()), Arc::new(SystemClock))
            .expect_err("not a store");
    assert!(!error.to_string().is_empty());
}

/// A second process on a running store (a command-line tool beside the server, which holds
/// the audit journal) commits its audit records as blocks that a checkpoint covers only up
/// to `AUDIT_SYNC_MS` later, so a live store often has leaves beyond its latest checkpoint:
/// a dump takes exactly the leaves the checkpoint covers (the later blocks go to the next
/// snapshot), and restores to a store that verifies.
#[test]
fn a_dump_holds_the_leaves_its_checkpoint_covers_not_later_audit_blocks() {
    let source = source();
    let data = source.dir.path().join("data");
    let tool = Store::open(&data, &key_file(source.dir.path()), Arc::new(SystemClock)).expect("a second store");
    let database = rusqlite::Connection::open(data.join("medvault.db")).expect("open");
    // The tool's writer signs its block on a timer, maybe before the dump starts: try until
    // a dump is taken before that.
    let (dump, uncovered) = (0..20)
        .find_map(|attempt| {
            tool.audit(vec![audit_entry(4_000_000 + attempt, &["p11".into()])]).expect("audit");
            let newest: i64 = database.query_row("SELECT MAX(seq) FROM audit_blocks", [], |r| r.get(0)).expect("seq");
            let dump = dump(&source.store);
            (dump.tree_size <= newest as u64).then_some((dump, newest as u64))
        })
        .expect("a dump taken right after the tool's audit block is not signed yet");
    let audit_rows = |name: &str| dump.tables.iter().find(|t| t.name == name).expect(name).rows;
    assert_eq!(audit_rows("audit_blocks"), 101, "the blocks the checkpoint covers, not the later ones");
    assert_eq!(dump.leaves.len() as u64, dump.tree_size * 32);
    drop(database);
    tool.close();
    source.store.close();

    let target = source.dir.path().join("restored");
    rebuild(&dump, &target, &[]).expect("rebuild");
    assert_eq!(integrity(&target.join("medvault.db")), vec!["ok".to_string()]);
    let store = Store::open(&target, &key_file(source.dir.path()), Arc::new(SystemClock)).expect("open store");
    let report = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!((report.leaves, report.audit_blocks), (dump.tree_size, 101));
    assert!(store.audit_block(uncovered).expect("block").is_none(), "the later block is not restored");
    let slots = store.audit_slots_of_patient("p11", 4_000_000, i64::MAX, None, 10).expect("audit by patient");
    assert!(slots.is_empty(), "nor its index rows");
    // The restored store goes on from the checkpoint's size.
    store.audit(vec![audit_entry(5_000_000, &["p11".into()])]).expect("audit after restore");
    let slots = store.audit_slots_of_patient("p11", 5_000_000, i64::MAX, None, 10).expect("audit by patient");
    assert_eq!(slots.iter().map(|slot| slot.block).collect::<Vec<_>>(), [dump.tree_size]);
    store.close();
}

/// A store that lost a version (or a leaf hash) below its checkpoint is not backed up: the
/// dump counts the leaves as they stream and refuses before a snapshot could be made.
#[test]
fn a_dump_of_a_store_that_lost_a_leaf_is_refused() {
    for (what, statement) in [
        ("a version", "DELETE FROM versions WHERE seq = 3"),
        ("a leaf hash", "DELETE FROM ledger_nodes WHERE level = 0 AND node_index = 3"),
    ] {
        let source = source();
        source.store.close();
        let data = source.dir.path().join("data");
        let database = rusqlite::Connection::open(data.join("medvault.db")).expect("open");
        assert_eq!(database.execute(statement, []).expect(what), 1, "{what}");
        drop(database);
        let store = Store::open(&data, &key_file(source.dir.path()), Arc::new(SystemClock)).expect("open store");
        let dump = store.backup_dump().expect("dump");
        for table in &dump.tables {
            dump.stream_rows(table, &mut |_| Ok(())).expect("stream");
        }
        dump.stream_leaf_hashes(&mut |_| Ok(())).ok();
        let error = dump.check_leaves().expect_err(what);
        assert!(error.to_string().contains("covers"), "{what}: {error}");
        drop(dump);
        store.close();
    }
}
