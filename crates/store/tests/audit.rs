//! The audit trail's storage: records committed in sealed blocks that are ledger leaves,
//! found again by patient, with writes or not at all, and every edit found by `verify`.

use std::sync::Arc;

use medvault_base::SystemClock;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::engine::AuditSlot;
use medvault_store::verify::FindingKind;
use medvault_store::{AuditEntry, Store, Write, WriteAction};
use medvault_testkit::TempDir;
use serde_json::json;

fn store(dir: &TempDir) -> Store {
    let key = dir.path().join("master.key");
    MasterKey::generate().expect("random").create_key_file(&key).expect("key file");
    Store::create(&dir.path().join("data"), &KeyFile { path: key }, Arc::new(SystemClock)).expect("create")
}

fn entry(at_ms: i64, patients: &[&str], text: &str) -> AuditEntry {
    AuditEntry {
        recorded_ms: at_ms,
        patients: patients.iter().map(|p| p.to_string()).collect(),
        record: text.as_bytes().to_vec(),
    }
}

fn patient(id: &str) -> Write {
    Write {
        resource_type: "Patient".into(),
        id: id.into(),
        action: WriteAction::Put(json!({"resourceType": "Patient", "id": id})),
        if_match: None,
        must_be_new: false,
    }
}

fn verify(store: &Store) -> medvault_store::verify::VerifyReport {
    store.verify(None, &[], &[], &mut |_, _| {}).expect("verify runs")
}

#[test]
fn records_are_committed_found_by_patient_and_covered_by_the_ledger() {
    let dir = TempDir::new("audit-store");
    let store = store(&dir);
    store.write(&[patient("p1"), patient("p2")], "test").expect("write");
    store.audit(vec![entry(1_000, &["p1"], "read p1"), entry(2_000, &["p1", "p2"], "read both")]).expect("audit");
    // A write and its record, in one commit.
    let written =
        store.write_audited(&[patient("p3")], "test", None, &[entry(3_000, &["p3"], "create p3")]).expect("write");
    store.audit(vec![entry(4_000, &["p2"], "read p2")]).expect("audit");
    let blocks = store.audit_blocks(0, i64::MAX, None, 10).expect("blocks");
    let positions: Vec<(u64, u32)> = blocks.iter().map(|b| (b.seq, b.count)).collect();
    // The reads' block follows the two versions; the write's version and its record follow.
    assert_eq!(positions, [(2, 2), (4, 1), (5, 1)]);
    assert_eq!(written[0].leaf_index, 3);

    let slots = store.audit_slots_of_patient("p1", 0, i64::MAX, None, 10).expect("query");
    let records: Vec<String> = store
        .audit_records_at(&slots)
        .expect("records")
        .into_iter()
        .map(|r| String::from_utf8(r.record).expect("utf8"))
        .collect();
    assert_eq!(records, ["read both", "read p1"], "newest first");
    let p2: Vec<AuditSlot> = store.audit_slots_of_patient("p2", 0, i64::MAX, None, 10).expect("query");
    assert_eq!(p2.len(), 2);
    // Paging: strictly before the cursor.
    let older = store.audit_slots_of_patient("p2", 0, i64::MAX, Some(p2[0]), 10).expect("query");
    assert_eq!(older, vec![p2[1]]);
    // A time window.
    assert_eq!(store.audit_slots_of_patient("p2", 3_000, 5_000, None, 10).expect("query").len(), 1);
    assert!(store.audit_slots_of_patient("nobody", 0, i64::MAX, None, 10).expect("query").is_empty());

    let report = verify(&store);
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!((report.audit_blocks, report.audit_records), (3, 4));
    assert_eq!(report.leaves, 6);
    // A block of reads' records alone is signed within AUDIT_MOVE_MS, not at once.
    std::thread::sleep(std::time::Duration::from_millis(medvault_store::sqlite::AUDIT_MOVE_MS + 200));
    let report = verify(&store);
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.latest_checkpoint_size, Some(6), "audit leaves are covered by a signed checkpoint");
}

#[test]
fn nothing_in_the_database_names_the_patient_or_the_record() {
    let dir = TempDir::new("audit-sealed");
    let store = store(&dir);
    store.audit(vec![entry(1_000, &["patient-with-a-findable-id"], "Dr Findable read the record")]).expect("audit");
    store.close();
    for file in std::fs::read_dir(dir.path().join("data")).expect("dir") {
        let bytes = std::fs::read(file.expect("entry").path()).expect("read");
        for needle in ["patient-with-a-findable-id", "Dr Findable"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} is stored in the clear");
        }
    }
}

#[test]
fn editing_moving_or_deleting_an_audit_block_is_found() {
    let dir = TempDir::new("audit-tamper");
    let store = store(&dir);
    store.write(&[patient("p1")], "test").expect("write");
    store.audit(vec![entry(1_000, &["p1"], "read p1")]).expect("audit");
    store.write(&[patient("p2")], "test").expect("write");
    store.audit(vec![entry(2_000, &["p2"], "read p2")]).expect("audit");
    assert!(verify(&store).ok());
    let database = rusqlite::Connection::open(dir.path().join("data/medvault.db")).expect("sqlite");
    let kinds = |store: &Store| verify(store).findings.iter().map(|f| f.kind).collect::<Vec<_>>();

    // Edit one byte of a sealed block.
    let sealed: Vec<u8> =
        database.query_row("SELECT sealed FROM audit_blocks WHERE seq = 1", [], |r| r.get(0)).expect("row");
    let mut edited = sealed.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 1", [&edited]).expect("edit");
    assert!(kinds(&store).contains(&FindingKind::AuditAltered));
    assert!(store.audit_records_at(&store.audit_slots_of_patient("p1", 0, i64::MAX, None, 1).expect("q")).is_err());
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 1", [&sealed]).expect("restore");
    assert!(verify(&store).ok());

    // Swap the two blocks' bytes (each is bound to its leaf position).
    let other: Vec<u8> =
        database.query_row("SELECT sealed FROM audit_blocks WHERE seq = 3", [], |r| r.get(0)).expect("row");
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 1", [&other]).expect("swap");
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 3", [&sealed]).expect("swap");
    assert!(kinds(&store).iter().filter(|k| **k == FindingKind::AuditAltered).count() >= 2);
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 3", [&other]).expect("restore");
    database.execute("UPDATE audit_blocks SET sealed = ?1 WHERE seq = 1", [&sealed]).expect("restore");
    assert!(verify(&store).ok());

    // Delete a block: its leaf has nothing left.
    database.execute("DELETE FROM audit_blocks WHERE seq = 3", []).expect("delete");
    assert!(kinds(&store).contains(&FindingKind::VersionMissing));
}

/// A format-4 store (one index row per patient and record) opens as format 5 with every
/// record found again, in the same order, through every paging cursor.
#[test]
fn a_format_4_audit_index_is_migrated_and_answers_the_same() {
    let dir = TempDir::new("audit-migrate");
    let key = KeyFile { path: dir.path().join("master.key") };
    let expected: Vec<Vec<AuditSlot>>;
    let patients = ["p1", "p2", "p3"];
    {
        let store = store(&dir);
        for i in 0..60i64 {
            // Each patient in a different share of the records.
            let named: Vec<&str> = patients
                .iter()
                .enumerate()
                .filter(|(j, _)| !(i as usize + j).is_multiple_of(j + 2))
                .map(|(_, p)| *p)
                .collect();
            store.audit(vec![entry(10_000 + i * 7, &named, &format!("read {i}"))]).expect("audit");
        }
        expected = patients
            .iter()
            .map(|p| store.audit_slots_of_patient(p, 0, i64::MAX, None, 1_000).expect("query"))
            .collect();
        assert!(expected.iter().all(|slots| slots.len() > 10));
        // Rewrite the index as format 4 had it.
        let tokens: Vec<[u8; 32]> = patients.iter().map(|p| store.compartment_token(p)).collect();
        store.close();
        let database = rusqlite::Connection::open(dir.path().join("data").join(medvault_store::sqlite::DATABASE_FILE))
            .expect("sqlite");
        database
            .execute_batch(
                "DROP TABLE audit_by_patient;
                 CREATE TABLE audit_by_patient (patient BLOB NOT NULL, recorded_ms INTEGER NOT NULL,
                   block INTEGER NOT NULL, slot INTEGER NOT NULL,
                   PRIMARY KEY (patient, recorded_ms, block, slot)) WITHOUT ROWID;
                 UPDATE meta SET value = CAST('4' AS BLOB) WHERE name = 'format_version';",
            )
            .expect("format 4");
        for (token, slots) in tokens.iter().zip(&expected) {
            for slot in slots {
                database
                    .execute(
                        "INSERT INTO audit_by_patient VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![&token[..], slot.recorded_ms, slot.block as i64, slot.slot],
                    )
                    .expect("row");
            }
        }
    }
    let store = Store::open(&dir.path().join("data"), &key, Arc::new(SystemClock)).expect("open migrates");
    for (patient, expected) in patients.iter().zip(&expected) {
        assert_eq!(&store.audit_slots_of_patient(patient, 0, i64::MAX, None, 1_000).expect("query"), expected);
        // Page by page, three at a time.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = store.audit_slots_of_patient(patient, 0, i64::MAX, before, 3).expect("page");
            let Some(last) = page.last().copied() else { break };
            before = Some(last);
            paged.extend(page);
        }
        assert_eq!(&paged, expected, "{patient}, paged");
    }
    let report = verify(&store);
    assert!(report.ok(), "{:?}", report.findings);
}
