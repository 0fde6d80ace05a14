//! The ransomware scenario (issue 6), with the real binary and a real server process:
//! load data, back up while the server takes writes, keep writing, back up again, shred a
//! patient's key; then play the attacker — encrypt the data directory, try to rewrite and
//! delete repository objects with what the server holds, plant a forged and an old
//! snapshot — and recover: every write acknowledged before the last snapshot comes back,
//! its ledger verifies, forgeries and old snapshots are refused, the erased patient stays
//! erased, and a damaged repository object is named while other snapshots still restore.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{init, run, text, token, ServerProcess};
use medvault_crypto::master::KeyFile;
use medvault_store::Store;
use medvault_testkit::{HttpClient, TempDir};
use serde_json::Value;

fn s(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

fn post_observation(client: &mut HttpClient, token: &str, patient: &str, marker: &str) -> Option<(String, u64)> {
    let body = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"text": marker}, "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 72, "unit": "/min"}});
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
    let response = client.request("POST", "/fhir/Observation", &headers, Some(body.to_string().as_bytes())).ok()?;
    assert_eq!(response.status, 201, "{}", response.text());
    let id = response.json()["id"].as_str().expect("id").to_string();
    let leaf: u64 = response.header("X-Medvault-Leaf-Index").expect("receipt").parse().expect("leaf");
    Some((id, leaf))
}

fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("JSON: {}", text(output)))
}

fn create_snapshot(data: &Path, repo: &Path) -> Value {
    let output = run(&["backup", "create", "--json", "--data-dir", s(data), "--repo", s(repo)]);
    assert!(output.status.success(), "backup create: {}", text(&output));
    json_of(&output)
}

#[test]
fn the_ransomware_scenario() {
    let dir = TempDir::new("ransomware");
    init(dir.path());
    let data = dir.path().join("data");
    let repo = dir.path().join("usb/medvault-backups");
    let offline = dir.path().join("offline-keys");
    let bundles: Vec<String> = medvault_testkit::demo_bundle_files().iter().map(|p| s(p).to_string()).collect();
    let mut args = vec!["import", "--quiet", "--data-dir", s(&data)];
    args.extend(bundles.iter().map(String::as_str));
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output));
    let clinician = token(dir.path(), "ward-7", "system/*.cruds");
    let log_key = String::from_utf8(run(&["ledger", "key", "--data-dir", s(&data)]).stdout).expect("utf8");
    let log_key = log_key.trim();

    // The operator's offline keys and a repository on "removable media".
    assert!(run(&["backup", "keygen", "--out", s(&offline)]).status.success());
    let output = run(&[
        "backup",
        "init",
        "--data-dir",
        s(&data),
        "--repo",
        s(&repo),
        "--recovery-public",
        s(&offline.join("recovery.pub")),
        "--prune-public",
        s(&offline.join("prune.pub")),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains(log_key), "init prints the log key to compare: {}", text(&output));

    // The server runs and takes writes during both backups.
    let mut server = ServerProcess::start(dir.path(), &[]);
    let patient = {
        let mut client = HttpClient::connect(server.address).expect("connect");
        let auth = format!("Bearer {clinician}");
        let response = client
            .request("GET", "/fhir/Patient/_history?_count=1", &[("Authorization", auth.as_str())], None)
            .expect("history");
        response.json()["entry"][0]["resource"]["id"].as_str().expect("a patient").to_string()
    };
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (address, token, patient) = (server.address, clinician.clone(), patient.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut client = HttpClient::connect(address).expect("connect");
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(receipt) = post_observation(&mut client, &token, &patient, &format!("live-{sequence}")) {
                    acknowledged.lock().expect("lock").push(receipt);
                }
                sequence += 1;
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let first = create_snapshot(&data, &repo);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = create_snapshot(&data, &repo);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let last_tree_size = second["tree_size"].as_u64().expect("size");
    assert!(last_tree_size > first["tree_size"].as_u64().expect("size"), "writes landed between the backups");
    assert!(second["bytes_written"].as_u64().expect("bytes") < first["bytes_written"].as_u64().expect("bytes"));
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let covered: Vec<&(String, u64)> = acknowledged.iter().filter(|(_, leaf)| *leaf < last_tree_size).collect();
    assert!(covered.len() >= 5, "writes acknowledged before the last snapshot: {}", covered.len());
    let after_last = acknowledged.iter().filter(|(_, leaf)| *leaf >= last_tree_size).count();

    // A witness keeps the checkpoint of the last snapshot on other media; the master key is
    // in escrow (the copy beside the data directory will not survive the attack).
    let witness = dir.path().join("witness-checkpoint.note");
    let output = run(&["ledger", "checkpoint", "--data-dir", s(&data), "--out", s(&witness)]);
    assert!(output.status.success(), "{}", text(&output));
    let escrow_key = offline.join("master.key");
    std::fs::copy(dir.path().join("data.key"), &escrow_key).expect("escrow the master key");
    server.stop();

    // Right to erasure: another patient's key is destroyed; the next backup records it.
    let open = |data: &Path| {
        Store::open(data, &KeyFile { path: escrow_key.clone() }, Arc::new(medvault_base::SystemClock)).expect("open")
    };
    let page = medvault_store::engine::HistoryPage { count: 1000, before_seq: None, since_ms: None };
    let (erased, erased_seq) = {
        let store = open(&data);
        let history = store.history(&medvault_store::History::Type("Patient".into()), page).expect("history");
        store.close();
        let version = history.iter().find(|v| v.id != patient).expect("another patient");
        (version.id.clone(), version.seq)
    };
    {
        let connection = rusqlite::Connection::open(data.join("medvault.db")).expect("sqlite");
        connection
            .execute("UPDATE keys SET wrapped = NULL, destroyed_ms = 1 WHERE key_id = (SELECT key_id FROM versions WHERE seq = ?1)", [erased_seq])
            .expect("shred");
    }
    let store = open(&data);
    assert!(matches!(store.read("Patient", &erased), Err(medvault_store::StoreError::KeyDestroyed)));
    store.close();
    let third = create_snapshot(&data, &repo);
    assert_eq!(third["erasures_written"], 1, "{third}");
    // The ledger grew by the versions written since, and by the audit blocks of those
    // writes and of the reads in between (audit blocks are leaves too).
    let audit_blocks_since: i64 = rusqlite::Connection::open(data.join("medvault.db"))
        .expect("sqlite")
        .query_row("SELECT COUNT(*) FROM audit_blocks WHERE seq >= ?1", [last_tree_size as i64], |row| row.get(0))
        .expect("count");
    assert_eq!(third["tree_size"].as_u64(), Some(last_tree_size + after_last as u64 + audit_blocks_since as u64));

    // The attack. Ransomware encrypts the data directory…
    for entry in std::fs::read_dir(&data).expect("data dir").flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let encrypted: Vec<u8> =
                bytes.iter().enumerate().map(|(i, b)| b ^ (i as u8).wrapping_mul(31) ^ 0xa5).collect();
            std::fs::write(&path, encrypted).expect("encrypt");
        }
    }
    std::fs::write(dir.path().join("data.key"), b"PAY 10 BTC").expect("ransom the key file too");
    let output = run(&["verify", "--data-dir", s(&data), "--key-file", s(&escrow_key)]);
    assert!(!output.status.success(), "verify must report the damaged store: {}", text(&output));
    assert!(text(&output).contains("error"), "{}", text(&output));

    // …tries to rewrite repository objects with what the server holds (refused)…
    let snapshots: Vec<String> = {
        let output = run(&["backup", "list", "--json", "--repo", s(&repo), "--ledger-key", log_key]);
        assert!(output.status.success(), "{}", text(&output));
        json_of(&output)["snapshots"]
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(snapshots.len(), 3);
    {
        use medvault_backup::ObjectStore as _;
        let objects = medvault_backup::DirectoryStore::new(&repo).expect("repo");
        for name in ["config", snapshots[2].as_str()] {
            let error = objects.put_new(name, b"ransom note").expect_err("the writer cannot overwrite");
            assert!(matches!(error, medvault_backup::StorageError::AlreadyExists(_)), "{error}");
        }
    }
    // …and to delete them: prune needs the offline prune key, which the server never held.
    let output = run(&["backup", "prune", "--repo", s(&repo), "--keep-last", "1"]);
    assert_eq!(output.status.code(), Some(2), "prune without a prune key is a usage error: {}", text(&output));
    let recovery_key = offline.join("recovery.key");
    let output = run(&[
        "backup",
        "prune",
        "--repo",
        s(&repo),
        "--keep-last",
        "1",
        "--prune-key",
        s(&recovery_key),
        "--recovery-key",
        s(&recovery_key),
    ]);
    assert_eq!(output.status.code(), Some(4), "another key is refused: {}", text(&output));
    assert_eq!(std::fs::read_dir(repo.join("snapshots")).expect("snapshots").count(), 3, "nothing was deleted");

    // It plants a forged snapshot, signed by a key of its own, claiming a larger tree.
    let forged_dir = TempDir::new("ransomware-forger");
    init(forged_dir.path());
    let forger = Store::open(
        &forged_dir.path().join("data"),
        &KeyFile { path: forged_dir.path().join("data.key") },
        Arc::new(medvault_base::SystemClock),
    )
    .expect("forger");
    let genuine = std::fs::read_to_string(repo.join(&snapshots[2])).expect("manifest");
    let body = &genuine[..genuine.rfind("\n\n").expect("note") + 1];
    let forged_body = body.replace(&format!("tree-size {}", third["tree_size"]), "tree-size 999999");
    let forged = forger.sign_backup_note(&forged_body).expect("sign");
    forger.close();
    let digest = medvault_base::hex::encode(&medvault_crypto::sha256(forged.as_bytes())[..8]);
    let forged_name = format!("snapshots/{:020}-{digest}", 999_999);
    std::fs::write(repo.join(&forged_name), forged).expect("plant");

    let restore = |snapshot: &str, target: &Path, witness: Option<&Path>| {
        let mut args = vec![
            "backup",
            "restore",
            "--quiet",
            "--repo",
            s(&repo),
            "--ledger-key",
            log_key,
            "--snapshot",
            snapshot,
            "--recovery-key",
            s(&recovery_key),
            "--data-dir",
            s(target),
            "--key-file",
            s(&escrow_key),
        ];
        if let Some(witness) = witness {
            args.extend(["--witness-checkpoint", s(witness)]);
        }
        run(&args)
    };
    let output = run(&["backup", "list", "--repo", s(&repo), "--ledger-key", log_key]);
    assert!(text(&output).contains(&format!("REFUSED {forged_name}")), "{}", text(&output));
    let output =
        run(&["backup", "verify", "--repo", s(&repo), "--ledger-key", log_key, "--recovery-key", s(&recovery_key)]);
    assert_eq!(output.status.code(), Some(6), "{}", text(&output));
    assert!(text(&output).contains(&forged_name), "verify names the forgery: {}", text(&output));
    let output = restore(&forged_name, &dir.path().join("from-forged"), None);
    assert_eq!(output.status.code(), Some(6), "a forged snapshot is refused: {}", text(&output));
    assert!(!dir.path().join("from-forged").exists());
    // An old snapshot (the first) is refused against the witness checkpoint.
    let output = restore(&snapshots[0], &dir.path().join("from-old"), Some(&witness));
    assert_eq!(output.status.code(), Some(6), "an old snapshot is refused: {}", text(&output));
    assert!(text(&output).contains("witness"), "{}", text(&output));
    assert!(!dir.path().join("from-old").exists());

    // Recovery: the newest genuine snapshot, checked against the witness.
    let recovered = dir.path().join("recovered");
    let output = restore("latest", &recovered, Some(&witness));
    assert!(output.status.success(), "restore: {}", text(&output));
    assert!(text(&output).contains("OK: restored and verified"), "{}", text(&output));
    let store = open(&recovered);
    for (id, leaf) in &covered {
        let version = store.read("Observation", id).expect("read").unwrap_or_else(|| panic!("{id} (leaf {leaf}) lost"));
        assert!(!version.deleted);
    }
    assert!(matches!(store.read("Patient", &erased), Err(medvault_store::StoreError::KeyDestroyed)));
    assert!(store.read("Patient", &patient).expect("read").is_some());
    let verified = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(verified.ok(), "{:?}", verified.findings);
    assert!(verified.erased > 0);
    store.close();
    let output = run(&[
        "verify",
        "--data-dir",
        s(&recovered),
        "--key-file",
        s(&escrow_key),
        "--witness-checkpoint",
        s(&witness),
    ]);
    assert!(output.status.success(), "the recovered ledger verifies against the witness: {}", text(&output));

    // Erasure survives restoring a snapshot taken before it.
    let before_erasure = dir.path().join("before-erasure");
    let output = restore(&snapshots[1], &before_erasure, None);
    assert!(output.status.success(), "restore: {}", text(&output));
    let store = open(&before_erasure);
    assert!(matches!(store.read("Patient", &erased), Err(medvault_store::StoreError::KeyDestroyed)));
    store.close();

    // One damaged repository object: verify names it; unaffected snapshots still restore.
    let third_packs: Vec<String> = genuine
        .lines()
        .filter_map(|line| line.strip_prefix("pack "))
        .map(|rest| rest.split(' ').next().expect("id").to_string())
        .collect();
    let first_manifest = std::fs::read_to_string(repo.join(&snapshots[0])).expect("manifest");
    let only_third =
        third_packs.iter().find(|id| !first_manifest.contains(id.as_str())).expect("a pack the first does not use");
    let pack_path = repo.join(format!("packs/{}/{only_third}", &only_third[..2]));
    let mut bytes = std::fs::read(&pack_path).expect("pack");
    bytes[64] ^= 0x01;
    std::fs::remove_file(&pack_path).expect("remove");
    std::fs::write(&pack_path, bytes).expect("damage");
    let output = run(&[
        "backup",
        "verify",
        "--json",
        "--repo",
        s(&repo),
        "--ledger-key",
        log_key,
        "--recovery-key",
        s(&recovery_key),
    ]);
    assert_eq!(output.status.code(), Some(6));
    let report = json_of(&output);
    let named =
        report["findings"].as_array().expect("findings").iter().any(|f| {
            f["kind"] == "pack-damaged" && f["object"].as_str().is_some_and(|o| o.ends_with(only_third.as_str()))
        });
    assert!(named, "verify names the damaged pack: {report}");
    let output = restore(&snapshots[0], &dir.path().join("first-again"), None);
    assert!(output.status.success(), "an unaffected snapshot restores: {}", text(&output));
}
