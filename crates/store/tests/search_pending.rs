//! Pending search documents (`docs/format/index-token.md`, *Pending documents and
//! posting*): a search finds a new resource before its tokens are posted, in the process
//! that wrote it and in another one, across a post, after a restart, and in a store
//! upgraded from format 5; the writer posts on its own; posted and pending answers agree.

use std::sync::Arc;
use std::time::{Duration, Instant};

use medvault_base::SystemClock;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_fhir::search::{parse_query, Handling};
use medvault_store::search::{SearchOptions, Visibility};
use medvault_store::{Store, Write, WriteAction};
use medvault_testkit::TempDir;
use serde_json::json;

fn observation(id: &str, code: &str, value: f64) -> Write {
    Write {
        resource_type: "Observation".into(),
        id: id.into(),
        action: WriteAction::Put(json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mg/dL"},
            "effectiveDateTime": "2024-03-01T10:00:00Z"
        })),
        if_match: None,
        must_be_new: false,
    }
}

/// The ids matching `query` (every page) and the total the store gives.
fn search(store: &Store, query: &str) -> (Vec<String>, Option<u64>) {
    let (parsed, _) =
        parse_query("Observation", &medvault_testkit::query_pairs(query), Handling::Strict).expect("query");
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    loop {
        let options = SearchOptions {
            visibility: &Visibility::All,
            page_size: 7,
            cursor: cursor.as_deref(),
            query_digest: medvault_crypto::sha256(query.as_bytes()),
            total: cursor.is_none(),
        };
        let result = store.search(&parsed, &options).expect("search");
        if cursor.is_none() {
            total = result.total;
        }
        ids.extend(result.matches.iter().map(|m| m.id.clone()));
        match result.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.sort();
    (ids, total)
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids: Vec<String> = range.map(|i| format!("{prefix}{i:03}")).collect();
    ids.sort();
    ids
}

fn write(store: &Store, writes: &[Write]) {
    for written in store.write_each(writes, "pending-test") {
        written.expect("write");
    }
}

fn database(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("data").join(medvault_store::sqlite::DATABASE_FILE)).expect("sqlite")
}

fn count(database: &rusqlite::Connection, sql: &str) -> i64 {
    database.query_row(sql, [], |row| row.get(0)).expect("count")
}

/// A new store in a new directory, and the key file that opens it.
fn new_store(name: &str) -> (TempDir, KeyFile, Store) {
    let dir = TempDir::new(name);
    let key = KeyFile { path: dir.path().join("master.key") };
    MasterKey::generate().expect("random").create_key_file(&key.path).expect("key file");
    let store = Store::create(&dir.path().join("data"), &key, Arc::new(SystemClock)).expect("create");
    (dir, key, store)
}

/// Waits until some writer has posted every pending document.
fn wait_until_posted(dir: &TempDir, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&database(dir), "SELECT COUNT(*) FROM search_pending") > 0 {
        assert!(Instant::now() < deadline, "{who} did not post the pending documents");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pending_documents_are_found_by_this_process_another_one_and_after_a_restart() {
    let (dir, key, store) = new_store("search-pending");
    store.hold_search_posts(true);
    write(&store, &(0..40).map(|i| observation(&format!("a{i:03}"), "2339-0", 90.0 + i as f64)).collect::<Vec<_>>());
    assert_eq!(store.pending_search_documents(), 40);
    let pending_rows = count(&database(&dir), "SELECT COUNT(*) FROM search_pending");
    assert_eq!(pending_rows, 40, "every new document is pending");
    assert_eq!(count(&database(&dir), "SELECT COUNT(*) FROM search_entries"), 0, "nothing posted yet");
    let glucose = "code=http://loinc.org|2339-0";
    assert_eq!(search(&store, glucose), (ids("a", 0..40), Some(40)));
    assert_eq!(search(&store, "value-quantity=ge110").0, ids("a", 20..40));

    // Another process opens the store (its writer posts what it finds pending, as after a
    // crash): it finds them, and then what the first one writes after it opened (its own
    // copy no longer matches: it reads the tables).
    let other = Store::open(&dir.path().join("data"), &key, Arc::new(SystemClock)).expect("second process");
    other.hold_search_posts(true);
    assert_eq!(search(&other, glucose), (ids("a", 0..40), Some(40)));
    wait_until_posted(&dir, "the second process, at its start,");
    assert_eq!(search(&store, glucose), (ids("a", 0..40), Some(40)), "the first process sees the post");
    write(&store, &(40..50).map(|i| observation(&format!("a{i:03}"), "2339-0", 90.0 + i as f64)).collect::<Vec<_>>());
    assert_eq!(store.pending_search_documents(), 10);
    assert_eq!(search(&other, glucose), (ids("a", 0..50), Some(50)));
    // Updates and deletions of pending documents, seen by both.
    let mut changes: Vec<Write> = (40..45).map(|i| observation(&format!("a{i:03}"), "718-7", 12.0)).collect();
    changes.push(Write {
        resource_type: "Observation".into(),
        id: "a045".into(),
        action: WriteAction::Delete,
        if_match: None,
        must_be_new: false,
    });
    write(&store, &changes);
    assert_eq!(store.pending_search_documents(), 9);
    let mut expected: Vec<String> = ids("a", 0..40).into_iter().chain(ids("a", 46..50)).collect();
    expected.sort();
    for process in [&store, &other] {
        assert_eq!(search(process, glucose), (expected.clone(), Some(44)));
        assert_eq!(search(process, "code=http://loinc.org|718-7"), (ids("a", 40..45), Some(5)));
    }

    // The other process posts: both still give the same answers, from the posting lists.
    assert_eq!(other.post_search_documents().expect("post"), 9);
    assert_eq!(count(&database(&dir), "SELECT COUNT(*) FROM search_pending"), 0);
    assert!(count(&database(&dir), "SELECT COUNT(*) FROM search_entries") > 49 * 5);
    for process in [&store, &other] {
        assert_eq!(search(process, glucose), (expected.clone(), Some(44)));
        assert_eq!(search(process, "code=http://loinc.org|718-7"), (ids("a", 40..45), Some(5)));
        let high: Vec<String> = ids("a", 20..40).into_iter().chain(ids("a", 46..50)).collect();
        assert_eq!(search(process, "value-quantity=ge110").0, high);
    }
    // A posted document updated: its entries change at once.
    write(&store, &[observation("a049", "718-7", 12.0)]);
    assert_eq!(search(&other, "code=http://loinc.org|718-7").1, Some(6));
    assert_eq!(store.pending_search_documents(), 0, "an update of a posted document is not pending");
    assert_eq!(search(&store, glucose).1, Some(43));
    other.close();

    // Pending documents survive a restart, and the writer posts them on its own.
    write(&store, &(0..8).map(|i| observation(&format!("b{i:03}"), "2339-0", 50.0)).collect::<Vec<_>>());
    store.close();
    drop(store);
    let store = Store::open(&dir.path().join("data"), &key, Arc::new(SystemClock)).expect("reopen");
    let (found, total) = search(&store, glucose);
    assert_eq!(total, Some(51));
    assert!(ids("b", 0..8).iter().all(|id| found.contains(id)));
    wait_until_posted(&dir, "the writer, after the restart,");
    assert_eq!(store.pending_search_documents(), 0);
    assert_eq!(search(&store, glucose).1, Some(51));
}

#[test]
fn a_format_5_store_is_upgraded_and_its_documents_count_as_posted() {
    let (dir, key, store) = new_store("search-pending-v5");
    {
        write(&store, &(0..12).map(|i| observation(&format!("c{i:03}"), "2339-0", 1.0)).collect::<Vec<_>>());
        store.post_search_documents().expect("post");
        store.close();
    }
    database(&dir)
        .execute_batch(
            "DROP TABLE search_pending;
             DELETE FROM meta WHERE name = 'search_posts';
             UPDATE meta SET value = CAST('5' AS BLOB) WHERE name = 'format_version';",
        )
        .expect("format 5");
    let store = Store::open(&dir.path().join("data"), &key, Arc::new(SystemClock)).expect("open upgrades");
    assert_eq!(store.status().expect("status").format_version, medvault_store::sqlite::SCHEMA_VERSION);
    assert_eq!(search(&store, "code=http://loinc.org|2339-0"), (ids("c", 0..12), Some(12)));
    store.hold_search_posts(true);
    write(&store, &[observation("c100", "2339-0", 1.0)]);
    assert_eq!(store.pending_search_documents(), 1);
    assert_eq!(search(&store, "code=http://loinc.org|2339-0").1, Some(13));
}
