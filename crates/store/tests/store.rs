//! The store at its boundary: sealing, integrity on read, atomic writes, conflicts, history.
//! The tampering tests edit the SQLite file directly, as an attacker with the disk would.

use std::sync::Arc;

use medvault_base::SystemClock;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::engine::HistoryPage;
use medvault_store::{History, Store, StoreError, Write, WriteAction, WriteError};
use medvault_testkit::TempDir;
use serde_json::json;

struct Fixture {
    dir: TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new("store");
        let key = dir.path().join("master.key");
        MasterKey::generate().expect("random").create_key_file(&key).expect("key file");
        let store =
            Store::create(&dir.path().join("data"), &KeyFile { path: key }, Arc::new(SystemClock)).expect("create");
        Self { dir, store }
    }

    fn reopen(&mut self) {
        self.store.close();
        let key = KeyFile { path: self.dir.path().join("master.key") };
        self.store = Store::open(&self.dir.path().join("data"), &key, Arc::new(SystemClock)).expect("reopen");
    }

    fn database(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("data/medvault.db")).expect("open sqlite")
    }
}

/// The tests write as one client.
trait WriteAsTest {
    fn write_as_test(&self, writes: &[Write]) -> Result<Vec<medvault_store::Written>, WriteError>;
    fn write_each_as_test(&self, writes: &[Write]) -> Vec<Result<medvault_store::Written, WriteError>>;
}

impl WriteAsTest for Store {
    fn write_as_test(&self, writes: &[Write]) -> Result<Vec<medvault_store::Written>, WriteError> {
        self.write(writes, "store-test")
    }

    fn write_each_as_test(&self, writes: &[Write]) -> Vec<Result<medvault_store::Written, WriteError>> {
        self.write_each(writes, "store-test")
    }
}

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

fn observation(id: &str, patient_id: &str, value: &str) -> Write {
    put(
        "Observation",
        id,
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": value},
               "subject": {"reference": format!("Patient/{patient_id}")}}),
    )
}

fn family_of(store: &Store, id: &str) -> String {
    let stored = store.read("Patient", id).expect("read").expect("exists");
    let value: serde_json::Value = serde_json::from_slice(&stored.json).expect("json");
    value["name"][0]["family"].as_str().expect("family").to_string()
}

#[test]
fn writes_read_back_with_versions_and_survive_reopen() {
    let mut fixture = Fixture::new();
    let written = fixture.store.write_as_test(&[patient("p1", "Alpha")]).expect("write");
    assert_eq!((written[0].version, written[0].created), (1, true));
    let written = fixture.store.write_as_test(&[patient("p1", "Beta")]).expect("write");
    assert_eq!((written[0].version, written[0].created), (2, false));
    fixture.reopen();
    assert_eq!(family_of(&fixture.store, "p1"), "Beta");
    let first = fixture.store.vread("Patient", "p1", 1).expect("vread").expect("v1");
    assert!(String::from_utf8_lossy(&first.json).contains("Alpha"));
    assert!(fixture.store.read("Patient", "nobody").expect("read").is_none());
    assert!(fixture.store.vread("Patient", "p1", 3).expect("vread").is_none());
}

#[test]
fn plaintext_never_reaches_the_database_file() {
    let fixture = Fixture::new();
    fixture
        .store
        .write_as_test(&[patient("p1", "Xylophonist"), observation("o1", "p1", "Hemoglobinopathy")])
        .expect("write");
    fixture.store.close();
    for file in ["medvault.db", "medvault.db-wal"] {
        let path = fixture.dir.path().join("data").join(file);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        for needle in ["Xylophonist", "Hemoglobinopathy", "p1", "o1"] {
            // Ids are 2 bytes here, so only the long needles are meaningful for random bytes;
            // the ids must still not appear as JSON strings.
            let pattern = if needle.len() < 4 { format!("\"{needle}\"") } else { needle.to_string() };
            assert!(!bytes.windows(pattern.len()).any(|w| w == pattern.as_bytes()), "{pattern} found in {file}");
        }
    }
}

#[test]
fn an_edited_sealed_row_is_refused_not_returned() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "Alpha")]).expect("write");
    let database = fixture.database();
    let mut sealed: Vec<u8> = database.query_row("SELECT sealed FROM versions", [], |row| row.get(0)).expect("row");
    let last = sealed.len() - 20;
    sealed[last] ^= 0x01;
    database.execute("UPDATE versions SET sealed = ?1", [sealed]).expect("tamper");
    match fixture.store.read("Patient", "p1") {
        Err(StoreError::Integrity(detail)) => assert!(!detail.contains("Alpha"), "{detail}"),
        other => panic!("expected an integrity failure, got {other:?}"),
    }
}

#[test]
fn a_sealed_row_moved_onto_another_resource_or_version_is_refused() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "Alpha")]).expect("write");
    fixture.store.write_as_test(&[patient("p2", "Beta")]).expect("write");
    fixture.store.write_as_test(&[patient("p2", "Gamma")]).expect("write");
    let database = fixture.database();
    // Copy p1's sealed body over p2's current version: p2 must not read as Alpha.
    database
        .execute("UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE seq = 0) WHERE seq = 2", [])
        .expect("swap");
    assert!(matches!(fixture.store.read("Patient", "p2"), Err(StoreError::Integrity(_))));
    // Replay p2's version 1 as its version 2 (rollback of one record): refused too.
    database
        .execute("UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE seq = 1) WHERE seq = 2", [])
        .expect("replay");
    assert!(matches!(fixture.store.read("Patient", "p2"), Err(StoreError::Integrity(_))));
    // Flip a live version into a deletion: refused.
    database.execute("UPDATE versions SET deleted = 1 WHERE seq = 0", []).expect("flip");
    database.execute("UPDATE resources SET deleted = 1 WHERE seq = 0", []).expect("flip");
    assert!(matches!(fixture.store.read("Patient", "p1"), Err(StoreError::Integrity(_))));
}

#[test]
fn each_patient_has_a_data_key_and_a_wrong_master_key_opens_nothing() {
    let fixture = Fixture::new();
    fixture
        .store
        .write_as_test(&[
            patient("p1", "A"),
            observation("o1", "p1", "x"),
            patient("p2", "B"),
            observation("o2", "p2", "y"),
        ])
        .expect("write");
    let database = fixture.database();
    let key_ids: Vec<i64> = database
        .prepare("SELECT key_id FROM versions ORDER BY seq")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(key_ids[0], key_ids[1], "a patient's observation shares the patient's key");
    assert_eq!(key_ids[2], key_ids[3]);
    assert_ne!(key_ids[0], key_ids[2], "two patients never share a key");
    fixture.store.close();

    let other_key = fixture.dir.path().join("other.key");
    MasterKey::generate().expect("random").create_key_file(&other_key).expect("key file");
    let error = Store::open(&fixture.dir.path().join("data"), &KeyFile { path: other_key }, Arc::new(SystemClock))
        .expect_err("wrong key");
    assert!(matches!(error, StoreError::WrongMasterKey), "{error:?}");
}

#[test]
fn destroying_a_patient_key_erases_that_patient_only() {
    let fixture = Fixture::new();
    fixture
        .store
        .write_as_test(&[patient("p1", "A"), observation("o1", "p1", "x"), patient("p2", "B")])
        .expect("write");
    let database = fixture.database();
    database
        .execute("UPDATE keys SET wrapped = NULL, destroyed_ms = 1 WHERE key_id = (SELECT key_id FROM versions WHERE seq = 0)", [])
        .expect("shred");
    let mut fixture = fixture;
    fixture.reopen();
    assert!(matches!(fixture.store.read("Patient", "p1"), Err(StoreError::KeyDestroyed)));
    assert!(matches!(fixture.store.read("Observation", "o1"), Err(StoreError::KeyDestroyed)));
    assert_eq!(family_of(&fixture.store, "p2"), "B");
}

#[test]
fn a_transaction_commits_all_or_nothing() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "A")]).expect("write");
    let stale = Write { if_match: Some(7), ..patient("p1", "B") };
    let error =
        fixture.store.write_as_test(&[patient("p2", "New"), observation("o1", "p2", "x"), stale]).expect_err("stale");
    assert!(matches!(error, WriteError::PreconditionFailed { index: 2, expected: 7, current: Some(1) }), "{error:?}");
    assert!(fixture.store.read("Patient", "p2").expect("read").is_none(), "nothing of a failed transaction is stored");
    assert!(fixture.store.read("Observation", "o1").expect("read").is_none());
    let duplicate = fixture.store.write_as_test(&[patient("p3", "A"), patient("p3", "B")]).expect_err("duplicate");
    assert!(matches!(duplicate, WriteError::Duplicate { index: 1 }));
}

#[test]
fn if_match_and_must_be_new_guard_versions() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "A")]).expect("write");
    let ok = fixture.store.write_as_test(&[Write { if_match: Some(1), ..patient("p1", "B") }]).expect("fresh if-match");
    assert_eq!(ok[0].version, 2);
    let stale = fixture.store.write_as_test(&[Write { if_match: Some(1), ..patient("p1", "C") }]).expect_err("stale");
    assert!(matches!(stale, WriteError::PreconditionFailed { current: Some(2), .. }));
    let taken = fixture.store.write_as_test(&[Write { must_be_new: true, ..patient("p1", "D") }]).expect_err("exists");
    assert!(matches!(taken, WriteError::AlreadyExists { index: 0 }));
    assert_eq!(family_of(&fixture.store, "p1"), "B");
}

#[test]
fn delete_leaves_a_tombstone_and_history() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "A")]).expect("write");
    let delete = Write {
        resource_type: "Patient".into(),
        id: "p1".into(),
        action: WriteAction::Delete,
        if_match: None,
        must_be_new: false,
    };
    let deleted = fixture.store.write_as_test(std::slice::from_ref(&delete)).expect("delete");
    assert_eq!((deleted[0].version, deleted[0].deleted, deleted[0].noop), (2, true, false));
    let again = fixture.store.write_as_test(std::slice::from_ref(&delete)).expect("delete again");
    assert!(again[0].noop, "deleting a deleted resource writes nothing");
    let current = fixture.store.read("Patient", "p1").expect("read").expect("tombstone");
    assert!(current.deleted);
    let resurrected = fixture.store.write_as_test(&[patient("p1", "Back")]).expect("update after delete");
    assert_eq!((resurrected[0].version, resurrected[0].created), (3, true));
    let history = fixture
        .store
        .history(
            &History::Instance { resource_type: "Patient".into(), id: "p1".into() },
            HistoryPage { count: 10, before_seq: None, since_ms: None },
        )
        .expect("history");
    assert_eq!(
        history.iter().map(|v| (v.version, v.deleted)).collect::<Vec<_>>(),
        vec![(3, false), (2, true), (1, false)]
    );
    assert!(history.iter().all(|v| v.id == "p1"));
}

#[test]
fn history_pages_are_stable_under_new_writes() {
    let fixture = Fixture::new();
    for index in 0..25 {
        fixture.store.write_as_test(&[patient(&format!("p{index}"), "A")]).expect("write");
    }
    let page = |before| HistoryPage { count: 10, before_seq: before, since_ms: None };
    let first = fixture.store.history(&History::Type("Patient".into()), page(None)).expect("page 1");
    assert_eq!(first.len(), 10);
    // A write between pages must not shift the next page.
    fixture.store.write_as_test(&[patient("late", "A")]).expect("write");
    let second =
        fixture.store.history(&History::Type("Patient".into()), page(first.last().map(|v| v.seq))).expect("page 2");
    let third =
        fixture.store.history(&History::Type("Patient".into()), page(second.last().map(|v| v.seq))).expect("page 3");
    let ids: Vec<String> = first.iter().chain(&second).chain(&third).map(|v| v.id.clone()).collect();
    let expected: Vec<String> = (0..25).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(ids, expected);
    let system = fixture
        .store
        .history(&History::System, HistoryPage { count: 100, before_seq: None, since_ms: None })
        .expect("system");
    assert_eq!(system.len(), 26);
}

#[test]
fn batch_writes_are_independent() {
    let fixture = Fixture::new();
    fixture.store.write_as_test(&[patient("p1", "A")]).expect("write");
    let results = fixture.store.write_each_as_test(&[
        patient("p2", "B"),
        Write { if_match: Some(9), ..patient("p1", "Stale") },
        patient("p3", "C"),
    ]);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(WriteError::PreconditionFailed { .. })));
    assert_eq!(family_of(&fixture.store, "p1"), "A");
    assert_eq!(family_of(&fixture.store, "p3"), "C");
}

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let fixture = Arc::new(Fixture::new());
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let fixture = fixture.clone();
            std::thread::spawn(move || {
                for index in 0..25 {
                    fixture.store.write_as_test(&[patient(&format!("t{thread}-{index}"), "A")]).expect("write");
                    // Every thread also updates one shared resource, without If-Match: retried, never lost.
                    fixture.store.write_as_test(&[patient("shared", &format!("t{thread}"))]).expect("shared write");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let shared = fixture.store.read("Patient", "shared").expect("read").expect("exists");
    assert_eq!(shared.version, 200, "every one of the 200 updates made a version");
    for thread in 0..8 {
        for index in 0..25 {
            assert!(fixture.store.read("Patient", &format!("t{thread}-{index}")).expect("read").is_some());
        }
    }
}

#[test]
fn create_refuses_an_existing_store() {
    let fixture = Fixture::new();
    let key = KeyFile { path: fixture.dir.path().join("master.key") };
    let error = Store::create(&fixture.dir.path().join("data"), &key, Arc::new(SystemClock)).expect_err("exists");
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error:?}");
}

#[test]
fn tokens_are_stored_as_digests_and_revocable() {
    let fixture = Fixture::new();
    let token = fixture.store.create_service_token("ward-app", "system/*.rs", None).expect("token");
    assert_eq!(fixture.store.authenticate_token(&token).expect("auth").map(|r| r.client), Some("ward-app".to_string()));
    assert!(fixture.store.authenticate_token("mvt_guess").expect("auth").is_none());
    let expired = fixture.store.create_service_token("old-app", "", Some(1)).expect("token");
    assert!(fixture.store.authenticate_token(&expired).expect("auth").is_none(), "expired tokens do not authenticate");
    let database = fixture.database();
    let stored: Vec<u8> =
        database.query_row("SELECT digest FROM tokens WHERE client = 'ward-app'", [], |row| row.get(0)).expect("row");
    assert_eq!(stored.len(), 32);
    let raw = std::fs::read(fixture.dir.path().join("data/medvault.db-wal")).unwrap_or_default();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()), "the token itself is never written");
    assert_eq!(fixture.store.revoke_tokens("ward-app").expect("revoke"), 1);
    assert!(fixture.store.authenticate_token(&token).expect("auth").is_none());
}

#[test]
fn every_write_is_a_ledger_leaf_under_a_signed_checkpoint() {
    let fixture = Arc::new(Fixture::new());
    for index in 0..40 {
        let written = fixture.store.write_as_test(&[patient(&format!("p{index}"), "A")]).expect("write");
        assert_eq!(written[0].leaf_index, index, "leaves are dense and in commit order");
        assert!(written[0].checkpoint_size > written[0].leaf_index, "a checkpoint covers the write when it returns");
    }
    // A transaction that fails midway leaves no leaf behind.
    let failed =
        fixture.store.write_as_test(&[patient("ghost", "A"), Write { if_match: Some(9), ..patient("p1", "B") }]);
    assert!(failed.is_err());
    // Concurrent writers: group commits with several jobs, some rolled back.
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let fixture = fixture.clone();
            std::thread::spawn(move || {
                for index in 0..10 {
                    fixture.store.write_as_test(&[patient(&format!("c{thread}-{index}"), "A")]).expect("write");
                    let _ = fixture.store.write_as_test(&[Write { if_match: Some(99), ..patient("p2", "Stale") }]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let report = fixture.store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!((report.versions, report.leaves), (80, 80));
    assert_eq!(report.latest_checkpoint_size, Some(80));

    // An inclusion proof checks out against the signed checkpoint, from its parts alone.
    let proof = fixture.store.inclusion_proof("Patient", "p7", 1, None).expect("proof").expect("exists");
    let verifier = fixture.store.ledger_verifier().expect("verifier");
    let checkpoint =
        medvault_ledger::open_checkpoint(proof.checkpoint.as_bytes(), &verifier, &[]).expect("signed").checkpoint;
    let leaf = medvault_ledger::LeafData::decode(&proof.leaf).expect("leaf");
    assert_eq!(
        (leaf.resource_type(), leaf.resource_id(), leaf.version(), leaf.author()),
        ("Patient", "p7", 1, "store-test")
    );
    medvault_ledger::verify_inclusion(
        &leaf.leaf_hash(),
        proof.leaf_index,
        checkpoint.size(),
        &proof.proof,
        checkpoint.root(),
    )
    .expect("included");
    // The log at size 10 (sequential writes, so a checkpoint exists there) is a prefix of size 80.
    let consistency = fixture.store.consistency_proof(10, 80).expect("consistency");
    let old = fixture.store.checkpoint_at(10).expect("checkpoint").expect("size 10 was checkpointed");
    let new = fixture.store.latest_checkpoint().expect("checkpoint").expect("latest");
    medvault_ledger::verify_consistency(10, 80, &old.root, &new.root, &consistency).expect("consistent");
    assert!(medvault_ledger::verify_consistency(10, 80, &new.root, &old.root, &consistency).is_err());
}
