//! The tamper suite: a real store is attacked through the back door while the server is
//! stopped — SQL edits and raw byte writes to the database file — and `medvault verify`
//! must detect and name each attack. Attackers who know the format and hold the keys are
//! caught by a witness that cosigned an earlier checkpoint.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{init, run, text};
use medvault_crypto::master::KeyFile;
use medvault_store::{Store, Write, WriteAction};
use medvault_testkit::TempDir;
use serde_json::{json, Value};

fn open(dir: &Path) -> Store {
    Store::open(&dir.join("data"), &KeyFile { path: dir.join("data.key") }, Arc::new(medvault_base::SystemClock))
        .expect("open")
}

fn put(resource_type: &str, id: &str, body: Value) -> Write {
    Write {
        resource_type: resource_type.into(),
        id: id.into(),
        action: WriteAction::Put(body),
        if_match: None,
        must_be_new: false,
    }
}

/// A store with an imported Bundle, updates and a delete; 50 versions.
fn pristine() -> TempDir {
    let dir = TempDir::new("tamper");
    init(dir.path());
    let data = dir.path().join("data");
    let bundle = medvault_testkit::demo_data_dir().join("carebundle-0000.json");
    let output =
        run(&["import", "--quiet", "--data-dir", data.to_str().expect("utf8"), bundle.to_str().expect("utf8")]);
    assert!(output.status.success(), "{}", text(&output));
    let store = open(dir.path());
    for version in 0..4 {
        let body =
            json!({"resourceType": "Patient", "id": "t1", "gender": if version % 2 == 0 { "female" } else { "male" }});
        store.write(&[put("Patient", "t1", body)], "ward-7").expect("write");
    }
    let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "K+"},
                             "subject": {"reference": "Patient/t1"}, "valueQuantity": {"value": 4.1, "unit": "mmol/L"}});
    store.write(&[put("Observation", "o1", observation)], "lab").expect("write");
    let delete = Write {
        resource_type: "Observation".into(),
        id: "o1".into(),
        action: WriteAction::Delete,
        if_match: None,
        must_be_new: false,
    };
    store.write(&[delete], "lab").expect("delete");
    store.close();
    dir
}

fn copy_store(from: &Path) -> TempDir {
    let to = TempDir::new("tamper-copy");
    std::fs::create_dir_all(to.path().join("data")).expect("mkdir");
    for entry in std::fs::read_dir(from.join("data")).expect("data").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.path().join("data").join(entry.file_name())).expect("copy");
        }
    }
    std::fs::copy(from.join("data.key"), to.path().join("data.key")).expect("copy key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to.path().join("data.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    to
}

fn database(dir: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(dir.join("data/medvault.db")).expect("sqlite");
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint the WAL");
    connection
}

/// Runs `medvault verify --json`; returns the exit code and the finding kinds.
fn verify(dir: &Path, extra: &[&str]) -> (i32, Vec<String>, Value) {
    let data = dir.join("data");
    let mut args = vec!["verify", "--json", "--data-dir", data.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    let output = run(&args);
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("JSON report: {}", text(&output)));
    let kinds = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or("").to_string())
        .collect();
    (output.status.code().unwrap_or(-1), kinds, report)
}

fn assert_detected(dir: &Path, extra: &[&str], kind: &str) -> Value {
    let (code, kinds, report) = verify(dir, extra);
    assert_eq!(code, 6, "verify must fail: {report}");
    assert!(kinds.iter().any(|k| k == kind), "expected a {kind} finding: {report}");
    report
}

#[test]
fn the_tamper_suite() {
    let original = pristine();
    let (code, kinds, report) = verify(original.path(), &[]);
    assert_eq!((code, kinds.len()), (0, 0), "a clean store verifies: {report}");
    let (versions, blocks) = (report["versions"].as_u64(), report["audit_blocks"].as_u64());
    assert_eq!(
        report["leaves"].as_u64(),
        versions.zip(blocks).map(|(v, b)| v + b),
        "leaves are versions and audit blocks"
    );
    assert!(blocks > Some(0), "the import was audited: {report}");

    // Witness the pristine log on "removable media".
    let witness = TempDir::new("witness");
    let witness_dir = witness.path().join("w");
    let witness_dir_str = witness_dir.to_str().expect("utf8").to_string();
    let output = run(&["witness", "init", "--dir", &witness_dir_str, "--name", "witness.example/disk"]);
    assert!(output.status.success(), "{}", text(&output));
    let witness_key = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let data = original.path().join("data");
    let data_str = data.to_str().expect("utf8").to_string();
    let log_key = String::from_utf8_lossy(&run(&["ledger", "key", "--data-dir", &data_str]).stdout).trim().to_string();
    let export = run(&["ledger", "export", "--data-dir", &data_str, "--witness-dir", &witness_dir_str]);
    assert!(export.status.success(), "{}", text(&export));
    let cosign = run(&["witness", "cosign", "--dir", &witness_dir_str, "--log-key", &log_key]);
    assert!(cosign.status.success(), "{}", text(&cosign));
    let witnessed = witness_dir.join("latest.note");
    let witnessed_str = witnessed.to_str().expect("utf8").to_string();
    let witness_args = ["--witness-checkpoint", witnessed_str.as_str(), "--witness-key", witness_key.as_str()];
    let (code, _, report) = verify(original.path(), &witness_args);
    assert_eq!(code, 0, "the witnessed store verifies: {report}");

    // 1. One byte of a sealed body flipped, by a raw write to the database file.
    let copy = copy_store(original.path());
    let sealed: Vec<u8> =
        database(copy.path()).query_row("SELECT sealed FROM versions WHERE seq = 7", [], |r| r.get(0)).expect("row");
    let path = copy.path().join("data/medvault.db");
    let mut bytes = std::fs::read(&path).expect("read");
    let offset =
        bytes.windows(sealed.len()).position(|w| w == sealed.as_slice()).expect("the sealed body is in the file");
    bytes[offset + sealed.len() / 2] ^= 0x01;
    std::fs::write(&path, bytes).expect("write");
    let report = assert_detected(copy.path(), &[], "version-altered");
    assert_eq!(
        report["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["kind"] == "version-altered"))
            .map(|f| f["leaf_index"].clone()),
        Some(json!(7)),
        "names the version: {report}"
    );

    // 2. The sealed bodies of two versions swapped.
    let copy = copy_store(original.path());
    database(copy.path())
        .execute_batch(
            "UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE seq = 3) WHERE seq = 4;
             UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE seq = 5) WHERE seq = 3;",
        )
        .expect("swap");
    assert_detected(copy.path(), &[], "version-altered");

    // 3. A version row deleted (the lab value that was there is gone).
    let copy = copy_store(original.path());
    database(copy.path()).execute("DELETE FROM versions WHERE seq = 10", []).expect("delete");
    let report = assert_detected(copy.path(), &[], "version-missing");
    assert!(report.to_string().contains("leaf 10"), "{report}");

    // 4. A ledger row deleted.
    let copy = copy_store(original.path());
    database(copy.path()).execute("DELETE FROM ledger_nodes WHERE level = 0 AND node_index = 12", []).expect("delete");
    assert_detected(copy.path(), &[], "leaf-mismatch");

    // 5. A forged version inserted (a copy of a real one as a new version, past the ledger).
    let copy = copy_store(original.path());
    database(copy.path())
        .execute(
            "INSERT INTO versions (seq, resource_key, resource_type, version, key_id, recorded_ms, deleted, sealed, author)
             SELECT (SELECT MAX(seq) + 1 FROM versions), resource_key, resource_type, version + 100, key_id,
                    recorded_ms, deleted, sealed, 'mallory' FROM versions WHERE seq = 2",
            [],
        )
        .expect("insert");
    assert_detected(copy.path(), &[], "version-not-in-ledger");

    // 6. Rows reordered: two versions' leaf positions exchanged.
    let copy = copy_store(original.path());
    database(copy.path())
        .execute_batch(
            "UPDATE versions SET seq = -1 WHERE seq = 20;
             UPDATE versions SET seq = 20 WHERE seq = 21;
             UPDATE versions SET seq = 21 WHERE seq = -1;",
        )
        .expect("reorder");
    assert_detected(copy.path(), &[], "leaf-mismatch");

    // 7. An attacker who knows the format changes a version's author and recomputes its
    //    leaf and the whole tree consistently: the signed checkpoints disagree.
    let copy = copy_store(original.path());
    rewrite_author_consistently(copy.path(), 30, "mallory");
    let (code, kinds, report) = verify(copy.path(), &[]);
    assert_eq!(code, 6, "{report}");
    assert!(!kinds.iter().any(|k| k == "leaf-mismatch"), "the leaves are consistent: {report}");
    assert!(kinds.iter().any(|k| k == "checkpoint-mismatch"), "{report}");

    // 8. ...and re-signs with the stolen key: drops the old checkpoints and lets the
    //    server sign a new one over the rewritten tree. Locally consistent — caught by
    //    the witness, which saw the original history.
    database(copy.path()).execute("DELETE FROM checkpoints", []).expect("drop checkpoints");
    let store = open(copy.path());
    store
        .write(&[put("Patient", "cover", json!({"resourceType": "Patient", "id": "cover"}))], "mallory")
        .expect("write");
    store.close();
    let (code, _, report) = verify(copy.path(), &[]);
    assert_eq!(code, 0, "without a witness the forgery is self-consistent: {report}");
    let copy_args = ["--witness-checkpoint", witnessed_str.as_str(), "--witness-key", witness_key.as_str()];
    assert_detected(copy.path(), &copy_args, "fork");

    // 9. The whole data directory restored from an older copy: the store grows, the
    //    witness cosigns the newer checkpoint, then the old copy is put back.
    let old_copy = copy_store(original.path());
    let store = open(original.path());
    store
        .write(&[put("Patient", "later", json!({"resourceType": "Patient", "id": "later"}))], "ward-7")
        .expect("write");
    store.close();
    let export = run(&["ledger", "export", "--data-dir", &data_str, "--witness-dir", &witness_dir_str]);
    assert!(export.status.success(), "{}", text(&export));
    let cosign = run(&["witness", "cosign", "--dir", &witness_dir_str, "--log-key", &log_key]);
    assert!(cosign.status.success(), "{}", text(&cosign));
    let (code, _, report) = verify(original.path(), &witness_args);
    assert_eq!(code, 0, "the grown store matches its witness: {report}");
    let report = assert_detected(old_copy.path(), &witness_args, "rollback");
    assert!(report.to_string().contains("rolled back"), "{report}");
    // The witness itself refuses to go back.
    let old_data = old_copy.path().join("data");
    let export =
        run(&["ledger", "export", "--data-dir", old_data.to_str().expect("utf8"), "--witness-dir", &witness_dir_str]);
    assert!(
        !export.status.success()
            || !run(&["witness", "cosign", "--dir", &witness_dir_str, "--log-key", &log_key]).status.success()
    );
}

/// What an attacker who knows `docs/format/ledger.md` and the ids can do without the
/// signing key: edit a row's plaintext column and rebuild the leaf and every node.
fn rewrite_author_consistently(dir: &Path, leaf_index: u64, author: &str) {
    let store = open(dir);
    let ids: Vec<(u64, String)> = store
        .history(
            &medvault_store::History::System,
            medvault_store::engine::HistoryPage { count: 1000, before_seq: None, since_ms: None },
        )
        .expect("history")
        .into_iter()
        .map(|v| (u64::try_from(v.seq).expect("seq"), v.id))
        .collect();
    store.close();
    let connection = database(dir);
    connection
        .execute("UPDATE versions SET author = ?1 WHERE seq = ?2", rusqlite::params![author, leaf_index as i64])
        .expect("edit");
    let mut leaves = Vec::new();
    {
        let mut statement = connection
            .prepare(
                "SELECT seq, resource_type, version, sealed, deleted, recorded_ms, author FROM versions ORDER BY seq",
            )
            .expect("prepare");
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .expect("query");
        for row in rows {
            let (seq, resource_type, version, sealed, deleted, recorded_ms, author) = row.expect("row");
            let id =
                ids.iter().find(|(s, _)| *s == u64::try_from(seq).expect("seq")).map(|(_, id)| id.clone()).expect("id");
            let leaf = medvault_ledger::LeafData::resource_version(medvault_ledger::ResourceVersionFields {
                resource_type: &resource_type,
                resource_id: &id,
                version: u64::try_from(version).expect("version"),
                sealed_sha256: medvault_crypto::sha256(&sealed),
                deleted,
                recorded_ms,
                author: &author,
            })
            .expect("leaf");
            leaves.push((seq, leaf.leaf_hash()));
        }
        // Audit blocks are leaves too: the forger keeps them.
        let mut statement =
            connection.prepare("SELECT seq, first_ms, last_ms, count, sealed FROM audit_blocks").expect("prepare");
        let blocks = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .expect("query");
        for block in blocks {
            let (seq, first_ms, last_ms, count, sealed) = block.expect("row");
            let leaf = medvault_ledger::AuditBlockLeaf {
                first_ms,
                last_ms,
                count,
                sealed_sha256: medvault_crypto::sha256(&sealed),
            };
            leaves.push((seq, leaf.leaf_hash().expect("leaf")));
        }
        leaves.sort();
    }
    let leaves: Vec<[u8; 32]> = leaves.into_iter().map(|(_, hash)| hash).collect();
    let mut memory = medvault_ledger::MemoryNodeStore::new();
    let mut nodes = Vec::new();
    for (index, hash) in leaves.iter().enumerate() {
        let created = medvault_ledger::append_nodes(index as u64, *hash, &memory).expect("append");
        for (level, node_index, node_hash) in &created {
            memory.insert(*level, *node_index, *node_hash).expect("insert");
        }
        nodes.extend(created);
    }
    connection.execute("DELETE FROM ledger_nodes", []).expect("clear");
    for (level, index, hash) in nodes {
        connection
            .execute(
                "INSERT INTO ledger_nodes (level, node_index, hash) VALUES (?1, ?2, ?3)",
                rusqlite::params![level, index as i64, &hash[..]],
            )
            .expect("insert");
    }
}

#[test]
fn offline_proofs_verify_and_tampered_ones_fail() {
    let dir = pristine();
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let log_key = String::from_utf8_lossy(&run(&["ledger", "key", "--data-dir", data]).stdout).trim().to_string();
    let proof_path = dir.path().join("proof.json");
    let proof_file = proof_path.to_str().expect("utf8");
    let prove =
        run(&["ledger", "prove", "--data-dir", data, "--resource", "Patient/t1/_history/3", "--out", proof_file]);
    assert!(prove.status.success(), "{}", text(&prove));
    let ok = run(&["ledger", "verify-proof", "--log-key", &log_key, "--proof", proof_file]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("Patient/t1 version 3") && text(&ok).contains("by ward-7"), "{}", text(&ok));

    let mut proof: Value = serde_json::from_slice(&std::fs::read(&proof_path).expect("read")).expect("json");
    let original = proof.clone();
    proof["leaf_index"] = json!(proof["leaf_index"].as_u64().expect("index") + 1);
    std::fs::write(&proof_path, proof.to_string()).expect("write");
    let bad = run(&["ledger", "verify-proof", "--log-key", &log_key, "--proof", proof_file]);
    assert_eq!(bad.status.code(), Some(6), "{}", text(&bad));
    let mut proof = original.clone();
    proof["checkpoint"] = json!(proof["checkpoint"].as_str().expect("note").replacen('\n', "\n1", 1));
    std::fs::write(&proof_path, proof.to_string()).expect("write");
    let forged = run(&["ledger", "verify-proof", "--log-key", &log_key, "--proof", proof_file]);
    assert_eq!(forged.status.code(), Some(6), "a checkpoint not signed by the log: {}", text(&forged));

    let consistency_path = dir.path().join("consistency.json");
    let consistency_file = consistency_path.to_str().expect("utf8");
    // The first checkpoint: the import's (its versions and its audit block).
    let first: i64 = rusqlite::Connection::open(dir.path().join("data/medvault.db"))
        .expect("sqlite")
        .query_row("SELECT MIN(tree_size) FROM checkpoints", [], |row| row.get(0))
        .expect("a checkpoint");
    let first = first.to_string();
    let made = run(&["ledger", "consistency", "--data-dir", data, "--old", &first, "--out", consistency_file]);
    assert!(made.status.success(), "{}", text(&made));
    let ok = run(&["ledger", "verify-proof", "--log-key", &log_key, "--proof", consistency_file]);
    assert!(ok.status.success() && text(&ok).contains(&format!("extends the log at size {first}")), "{}", text(&ok));
}

#[test]
fn a_witness_fetches_checkpoints_over_https() {
    let dir = TempDir::new("witness-https");
    let data = dir.path().join("data");
    let data_str = data.to_str().expect("utf8").to_string();
    let output = run(&["init", "--data-dir", &data_str, "--self-signed-cert", "localhost"]);
    assert!(output.status.success(), "{}", text(&output));
    let import = |file: &str| {
        let bundle = medvault_testkit::demo_data_dir().join(file);
        let output = run(&["import", "--quiet", "--data-dir", &data_str, bundle.to_str().expect("utf8")]);
        assert!(output.status.success(), "{}", text(&output));
    };
    import("carebundle-0000.json");
    let token = common::token(dir.path(), "witness-feed", "");
    let log_key = String::from_utf8_lossy(&run(&["ledger", "key", "--data-dir", &data_str]).stdout).trim().to_string();
    let certificate = data.join("tls/cert.pem");
    let key = data.join("tls/key.pem");
    let tls = ["--tls-cert", certificate.to_str().expect("utf8"), "--tls-key", key.to_str().expect("utf8")];
    let witness_dir = dir.path().join("witness");
    let witness_dir = witness_dir.to_str().expect("utf8");
    let init = run(&["witness", "init", "--dir", witness_dir, "--name", "witness.example/net"]);
    assert!(init.status.success(), "{}", text(&init));
    let cosign = |port: u16| {
        common::medvault()
            .args(["witness", "cosign", "--dir", witness_dir, "--log-key", &log_key])
            .args(["--url", &format!("https://localhost:{port}"), "--token-env", "MV_WITNESS_TOKEN"])
            .args(["--ca-cert", certificate.to_str().expect("utf8")])
            .env("MV_WITNESS_TOKEN", &token)
            .output()
            .expect("runs")
    };
    for (round, file) in ["carebundle-0001.json", "carebundle-0002.json"].iter().enumerate() {
        let mut server = common::ServerProcess::start(dir.path(), &tls);
        let output = cosign(server.address.port());
        assert!(output.status.success(), "round {round}: {}", text(&output));
        assert!(text(&output).contains("cosigned tree size"), "{}", text(&output));
        server.stop();
        import(file);
    }
    let witnessed = dir.path().join("witness/latest.note");
    let (code, _, report) = verify(dir.path(), &["--witness-checkpoint", witnessed.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["witness_checkpoints"], 1);
}
