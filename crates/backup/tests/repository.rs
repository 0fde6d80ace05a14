//! The repository at its boundary: a real store, a real directory; snapshots written while
//! the store is open, restored into new data directories and verified; then attacked.

use std::path::Path;
use std::sync::Arc;

use medvault_backup::{DirectoryStore, PruneKey, RecoverySecret, Repository};
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::{Store, Write, WriteAction};
use medvault_testkit::TempDir;
use serde_json::json;

fn key_file(dir: &Path) -> KeyFile {
    KeyFile { path: dir.join("data.key") }
}

fn new_store(dir: &Path) -> Store {
    MasterKey::generate().expect("key").create_key_file(&dir.join("data.key")).expect("key file");
    Store::create(&dir.join("data"), &key_file(dir), Arc::new(medvault_base::SystemClock)).expect("store")
}

fn patient(id: &str, family: &str) -> Write {
    Write {
        resource_type: "Patient".into(),
        id: id.into(),
        action: WriteAction::Put(json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]})),
        if_match: None,
        must_be_new: false,
    }
}

fn observation(id: &str, patient: &str, value: f64) -> Write {
    Write {
        resource_type: "Observation".into(),
        id: id.into(),
        action: WriteAction::Put(json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"text": "heart rate"}, "subject": {"reference": format!("Patient/{patient}")},
            "valueQuantity": {"value": value, "unit": "/min"}})),
        if_match: None,
        must_be_new: false,
    }
}

fn load(store: &Store, from: usize, to: usize) {
    for batch in (from..to).collect::<Vec<_>>().chunks(100) {
        let writes: Vec<Write> = batch
            .iter()
            .flat_map(|i| {
                [
                    patient(&format!("p{i}"), &format!("Family{i}")),
                    observation(&format!("o{i}"), &format!("p{i}"), *i as f64),
                ]
            })
            .collect();
        store.write(&writes, "loader").expect("write");
    }
}

struct Fixture {
    dir: TempDir,
    store: Store,
    recovery: RecoverySecret,
    prune: PruneKey,
    repository: Repository,
}

fn fixture() -> Fixture {
    let dir = TempDir::new("backup-repo");
    let store = new_store(dir.path());
    let recovery = RecoverySecret::generate().expect("recovery");
    let prune = PruneKey::generate().expect("prune");
    let objects = Arc::new(DirectoryStore::new(&dir.path().join("repo")).expect("repo"));
    let repository = Repository::init(objects, &store, recovery.public_key(), prune.public_key()).expect("init");
    Fixture { dir, store, recovery, prune, repository }
}

fn family(store: &Store, id: &str) -> String {
    let version = store.read("Patient", id).expect("read").expect("exists");
    let value: serde_json::Value = serde_json::from_slice(&version.json).expect("json");
    value["name"][0]["family"].as_str().expect("family").to_string()
}

#[test]
fn an_incremental_snapshot_writes_little_more_than_the_change_and_restores_with_proof() {
    let f = fixture();
    load(&f.store, 0, 2000);
    let first = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("first snapshot");
    assert_eq!(first.tree_size, 4000);
    assert!(first.bytes_written > first.dump_bytes / 2, "{first:?}");

    load(&f.store, 2000, 2020);
    let second = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("second snapshot");
    assert_eq!(second.tree_size, 4040);
    assert_eq!(second.parent.as_deref(), Some(first.name.as_str()));
    let versions_bytes = |report: &medvault_backup::CreateReport| {
        report.tables.iter().find(|(name, _, _)| name == "versions").map(|(_, _, bytes)| *bytes).expect("versions")
    };
    let changed = versions_bytes(&second) - versions_bytes(&first);
    // A fixed cost per snapshot (the last blob and tree of each level, the root, the
    // manifest) on top of the change itself.
    assert!(second.bytes_written < changed + 200_000, "wrote {} for {changed} changed bytes", second.bytes_written);
    let unchanged = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("third");
    assert!(unchanged.unchanged, "nothing changed: {unchanged:?}");

    let report = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.snapshots, 2);

    for (snapshot, patients) in [(&first.name, 2000), (&second.name, 2020)] {
        let target = f.dir.path().join(format!("restored-{patients}"));
        let snapshot = f.repository.find_snapshot(snapshot).expect("find");
        let restored = f.repository.restore(&snapshot, &f.recovery, &target, None, &mut |_, _, _| {}).expect("restore");
        assert_eq!(restored.tree_size, patients as u64 * 2);
        let store = Store::open(&target, &key_file(f.dir.path()), Arc::new(medvault_base::SystemClock)).expect("open");
        let verified = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
        assert!(verified.ok(), "{:?}", verified.findings);
        assert_eq!(verified.leaves, patients as u64 * 2);
        assert_eq!(family(&store, &format!("p{}", patients - 1)), format!("Family{}", patients - 1));
        assert!(store.read("Patient", &format!("p{patients}")).expect("read").is_none());
        store.close();
    }
}

#[test]
fn restore_refuses_forged_stale_and_damaged_snapshots_and_leaves_nothing_behind() {
    let f = fixture();
    load(&f.store, 0, 300);
    let first = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("first");
    load(&f.store, 300, 400);
    let second = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("second");
    let repo = f.dir.path().join("repo");

    // A forged manifest: valid layout, signed by another store's key.
    let other = TempDir::new("backup-other");
    let other_store = new_store(other.path());
    let forged_body = std::fs::read_to_string(repo.join(&second.name)).expect("manifest");
    let body = &forged_body[..forged_body.rfind("\n\n").expect("note") + 1];
    let forged = other_store.sign_backup_note(body).expect("sign");
    let digest = medvault_base::hex::encode(&medvault_crypto::sha256(forged.as_bytes())[..8]);
    let forged_name = format!("snapshots/{:020}-{digest}", 800);
    std::fs::write(repo.join(&forged_name), forged).expect("plant");
    let error = f.repository.find_snapshot(&forged_name).expect_err("forged refused");
    assert!(error.to_string().contains("not signed by the store's log key"), "{error}");

    // A stale snapshot: older than the witness checkpoint.
    let witness = f.store.latest_checkpoint().expect("checkpoint").expect("some");
    let old = f.repository.find_snapshot(&first.name).expect("find");
    let target = f.dir.path().join("stale");
    let error = f
        .repository
        .restore(&old, &f.recovery, &target, Some((witness.tree_size, witness.root)), &mut |_, _, _| {})
        .expect_err("stale refused");
    assert!(matches!(error, medvault_backup::BackupError::Stale(_)), "{error}");
    assert!(!target.exists(), "nothing left behind");

    // A damaged pack used only by the second snapshot: verify names it, the first still restores.
    let newest = f.repository.find_snapshot(&second.name).expect("find");
    let older = f.repository.find_snapshot(&first.name).expect("find");
    let only_second = newest
        .manifest
        .packs
        .iter()
        .find(|(id, _)| !older.manifest.packs.iter().any(|(other, _)| other == id))
        .expect("a pack of the second snapshot only");
    let pack_path = repo.join(medvault_backup::pack::pack_name(&only_second.0));
    let mut bytes = std::fs::read(&pack_path).expect("pack");
    bytes[100] ^= 0x55;
    std::fs::remove_file(&pack_path).expect("remove (as an attacker with the disk)");
    std::fs::write(&pack_path, bytes).expect("write");
    let report = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    let pack_name = medvault_backup::pack::pack_name(&only_second.0);
    assert!(report.findings.iter().any(|x| x.kind == "pack-damaged" && x.object == pack_name), "{:?}", report.findings);
    assert!(report.findings.iter().any(|x| x.kind == "snapshot-refused" && x.object == forged_name));
    let target = f.dir.path().join("damaged");
    let error = f.repository.restore(&newest, &f.recovery, &target, None, &mut |_, _, _| {}).expect_err("damaged");
    assert!(matches!(error, medvault_backup::BackupError::Integrity(_)), "{error}");
    assert!(error.to_string().contains(&pack_name), "the restore names the damaged pack: {error}");
    assert!(!target.exists(), "a failed restore leaves nothing behind");
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("restore-incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "nor anything beside it: {leftovers:?}");
    let target = f.dir.path().join("older");
    f.repository
        .restore(&older, &f.recovery, &target, None, &mut |_, _, _| {})
        .expect("the unaffected snapshot restores");

    // Without the recovery key nothing opens.
    let wrong = RecoverySecret::generate().expect("key");
    assert!(f.repository.restore(&older, &wrong, &f.dir.path().join("wrong"), None, &mut |_, _, _| {}).is_err());
}

#[test]
fn the_writer_cannot_overwrite_and_prune_needs_the_prune_key() {
    let f = fixture();
    load(&f.store, 0, 50);
    let first = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("first");
    let objects = DirectoryStore::new(&f.dir.path().join("repo")).expect("repo");
    use medvault_backup::ObjectStore as _;
    let error = objects.put_new(&first.name, b"rewritten").expect_err("no overwrite");
    assert!(matches!(error, medvault_backup::StorageError::AlreadyExists(_)));
    let error = objects.put_new("config", b"rewritten").expect_err("no overwrite");
    assert!(matches!(error, medvault_backup::StorageError::AlreadyExists(_)));
    let wrong = PruneKey::generate().expect("key");
    let error = f.repository.prune(&objects, &wrong, &f.recovery, 1).expect_err("wrong prune key");
    assert!(error.to_string().contains("prune key"), "{error}");
    assert!(objects.get(&first.name).is_ok(), "nothing was removed");
}

/// Revoking a token changes no ledger leaf: snapshots of one tree size must still be ordered
/// newest last, so that `latest` restores the revocation.
#[test]
fn snapshots_of_one_tree_size_are_ordered_by_their_parents_and_latest_is_the_newest() {
    let f = fixture();
    load(&f.store, 0, 50);
    let mut tokens = Vec::new();
    let mut names = Vec::new();
    for step in 0..5 {
        if step % 2 == 0 {
            tokens.push(f.store.create_service_token(&format!("client-{step}"), "system/*.rs", None).expect("token"));
        } else {
            assert_eq!(f.store.revoke_tokens(&format!("client-{}", step - 1)).expect("revoke"), 1);
        }
        let report = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("snapshot");
        assert_eq!(report.tree_size, 100);
        names.push(report.name);
    }
    let (listed, _) = f.repository.snapshots().expect("list");
    assert_eq!(listed.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), names, "creation order, not name order");
    let latest = f.repository.find_snapshot("latest").expect("latest");
    assert_eq!(&latest.name, names.last().expect("names"));
    let target = f.dir.path().join("restored");
    f.repository.restore(&latest, &f.recovery, &target, None, &mut |_, _, _| {}).expect("restore");
    let store = Store::open(&target, &key_file(f.dir.path()), Arc::new(medvault_base::SystemClock)).expect("open");
    let live: Vec<bool> = tokens.iter().map(|t| store.authenticate_token(t).expect("token").is_some()).collect();
    assert_eq!(live, [false, false, true], "the revocations are restored");
    store.close();
}

#[test]
fn prune_removes_old_snapshots_and_only_their_packs_and_the_rest_still_restore() {
    let f = fixture();
    let mut snapshots = Vec::new();
    // The second snapshot changes only a one-blob table (a service token): its pack holds
    // only blobs no later snapshot uses, so the prune below must remove it.
    for (from, to, token) in [(0, 300, None), (300, 300, Some("first")), (300, 340, Some("second")), (340, 360, None)] {
        load(&f.store, from, to);
        if let Some(client) = token {
            f.store.create_service_token(client, "system/*.rs", None).expect("token");
        }
        snapshots.push(f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("snapshot"));
    }
    assert!(snapshots.iter().all(|s| !s.unchanged));
    // The first two have one tree size: their parent link, not their names, orders them.
    let (listed, _) = f.repository.snapshots().expect("list");
    let listed: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(listed, snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>());
    let packs_of = |range: std::ops::Range<usize>| -> std::collections::BTreeSet<String> {
        snapshots[range]
            .iter()
            .flat_map(|s| f.repository.find_snapshot(&s.name).expect("find").manifest.packs)
            .map(|(id, _)| medvault_backup::pack::pack_name(&id))
            .collect()
    };
    let only_removed: Vec<String> = packs_of(0..2).difference(&packs_of(2..4)).cloned().collect();
    assert!(!only_removed.is_empty(), "the second snapshot's pack is its own");
    let repo = f.dir.path().join("repo");
    let objects = DirectoryStore::new(&repo).expect("repo");
    use medvault_backup::ObjectStore as _;
    // A backup being written when the prune runs: its pack is stored, its manifest not yet.
    let in_progress = format!("packs/{}", "ab".repeat(32));
    objects.put_new(&in_progress, b"a pack whose manifest is not written yet").expect("pack");
    let packs_before = objects.list("packs/").expect("packs");

    // The server's credentials cannot prune: a prune key of its own is refused, and so is a
    // prune record it forges (then deleting files behind the repository's back is found).
    let servers = PruneKey::generate().expect("key");
    let error = f.repository.prune(&objects, &servers, &f.recovery, 2).expect_err("the server's own prune key");
    assert!(error.to_string().contains("prune key"), "{error}");
    assert_eq!(objects.list("snapshots/").expect("list").len(), 4, "nothing was removed");
    assert!(objects.list("prunes/").expect("list").is_empty());

    let report = f.repository.prune(&objects, &f.prune, &f.recovery, 2).expect("prune");
    let removed: Vec<&str> = snapshots[..2].iter().map(|s| s.name.as_str()).collect();
    assert_eq!(report.snapshots_removed, removed);
    let names = |prefix: &str| objects.list(prefix).expect("list");
    assert_eq!(names("snapshots/"), snapshots[2..].iter().map(|s| s.name.clone()).collect::<Vec<_>>());
    // Exactly the packs only removed snapshots named.
    let packs_after = names("packs/");
    assert_eq!(report.packs_removed, only_removed.len() as u64);
    assert!(only_removed.iter().all(|pack| !packs_after.contains(pack)));
    assert_eq!(packs_after.len(), packs_before.len() - only_removed.len());
    assert!(names("packs/").contains(&in_progress), "a pack no manifest names yet is left alone");
    assert_eq!(names("prunes/"), std::slice::from_ref(&report.record), "the signed record was written");

    // What remains verifies (the parent of the oldest kept snapshot is gone by a signed
    // prune record) and every kept snapshot restores to a store that verifies.
    let verified = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    assert!(verified.ok(), "{:?}", verified.findings);
    assert_eq!((verified.snapshots, verified.unreferenced_packs), (2, 1));
    for (snapshot, patients) in [(&snapshots[2], 340u64), (&snapshots[3], 360)] {
        let target = f.dir.path().join(format!("restored-{patients}"));
        let found = f.repository.find_snapshot(&snapshot.name).expect("find");
        f.repository.restore(&found, &f.recovery, &target, None, &mut |_, _, _| {}).expect("restore");
        let store = Store::open(&target, &key_file(f.dir.path()), Arc::new(medvault_base::SystemClock)).expect("open");
        let report = store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
        assert!(report.ok(), "{:?}", report.findings);
        assert_eq!(report.versions, patients * 2);
        assert_eq!(family(&store, &format!("p{}", patients - 1)), format!("Family{}", patients - 1));
        store.close();
    }
    assert!(f.repository.find_snapshot(&snapshots[0].name).is_err(), "a removed snapshot is gone");

    // A prune record forged with a key of the server's own does not count: a snapshot
    // deleted behind the repository's back is still reported missing.
    let body = format!(
        "medvault/v1/backup-prune\nrepository {}\nsnapshot {}\n",
        medvault_base::hex::encode(&f.repository.config().repository_id),
        snapshots[2].name
    );
    let forged = format!(
        "{body}signature {}\n",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            servers.sign(body.as_bytes()).expect("sign")
        )
    );
    objects.put_new("prunes/forged", forged.as_bytes()).expect("plant");
    std::fs::remove_file(repo.join(&snapshots[2].name)).expect("delete behind its back");
    let verified = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    let missing: Vec<&str> =
        verified.findings.iter().filter(|f| f.kind == "snapshot-missing").map(|f| f.object.as_str()).collect();
    assert_eq!(missing, [snapshots[2].name.as_str()]);
}

/// What a holder of the offline recovery key (and of the medium, but not of the server's log
/// key) can do to a data blob: unwrap its pack's key and seal other bytes in its place,
/// under its old id and length, so that the AEAD still opens it. `alter` changes the
/// plaintext of the first data blob of `table`, keeping its length.
fn reseal_first_blob_of(f: &Fixture, snapshot: &str, table: &str, alter: &dyn Fn(&mut Vec<u8>)) {
    use medvault_backup::keys::{self, BlobIdentity, RepositoryKeys};
    use medvault_backup::pack::{self, BlobRef};
    let config = f.repository.config();
    let repository_id = config.repository_id;
    let wrapped = f.recovery.unwrap(&config.wrapped_keys, "repository-keys", &repository_id).expect("keys");
    let repository_keys = RepositoryKeys::from_bytes(&wrapped).expect("keys");
    let metadata = keys::cipher(&repository_keys.metadata_key);
    let repo = f.dir.path().join("repo");
    let stored = |blob_ref: &BlobRef| {
        let bytes = std::fs::read(repo.join(pack::pack_name(&blob_ref.pack))).expect("pack");
        bytes[blob_ref.offset as usize..(blob_ref.offset + blob_ref.stored_length) as usize].to_vec()
    };
    let open_tree = |blob_ref: &BlobRef| {
        pack::open_blob(&metadata, &repository_keys, &repository_id, blob_ref, &stored(blob_ref)).expect("tree")
    };
    let manifest = f.repository.find_snapshot(snapshot).expect("find").manifest;
    let root: serde_json::Value = serde_json::from_slice(&open_tree(&manifest.snapshot_root)).expect("root");
    let tables = root["tables"].as_array().expect("tables");
    let entry = tables.iter().find(|t| t["name"] == table).expect("the table");
    let mut blob_ref = BlobRef::from_hex(entry["tree"].as_str().expect("rows")).expect("tree");
    while blob_ref.blob_type == keys::BlobType::Tree {
        blob_ref = BlobRef::decode_all(&open_tree(&blob_ref)).expect("refs")[0];
    }
    let pack_path = repo.join(pack::pack_name(&blob_ref.pack));
    let mut pack_bytes = std::fs::read(&pack_path).expect("pack");
    let trailer = &pack_bytes[pack_bytes.len() - pack::trailer_bytes()..];
    let (start, length) = pack::header_location(pack_bytes.len() as u64, trailer).expect("trailer");
    let sealed_header = &pack_bytes[start as usize..start as usize + length];
    let header = pack::open_header(&metadata, &repository_id, sealed_header, start).expect("header");
    let mut pack_key = f.recovery.unwrap(&header.wrapped_key, "pack-key", &repository_id).expect("pack key").to_vec();
    let data_cipher = keys::cipher(&medvault_crypto::Secret32::from_slice_zeroizing(&mut pack_key).expect("32"));
    let mut plaintext =
        pack::open_blob(&data_cipher, &repository_keys, &repository_id, &blob_ref, &stored(&blob_ref)).expect("data");
    let original = plaintext.clone();
    alter(&mut plaintext);
    assert!(plaintext != original && plaintext.len() == original.len(), "the forgery keeps the length");
    let payload = match blob_ref.compression {
        pack::COMPRESSION_NONE => plaintext,
        _ => lz4_flex::block::compress(&plaintext),
    };
    let identity = BlobIdentity {
        repository_id: &repository_id,
        blob_type: blob_ref.blob_type,
        id: &blob_ref.id,
        raw_length: blob_ref.raw_length,
        compression: blob_ref.compression,
    };
    let mut forged = Vec::new();
    keys::seal_blob(&data_cipher, &identity, &payload, &mut forged).expect("seal");
    assert_eq!(forged.len(), blob_ref.stored_length as usize, "the forged blob fits in the old one's place");
    pack_bytes[blob_ref.offset as usize..(blob_ref.offset + blob_ref.stored_length) as usize].copy_from_slice(&forged);
    std::fs::remove_file(&pack_path).expect("remove (as an attacker with the medium)");
    std::fs::write(&pack_path, pack_bytes).expect("write");
}

/// Where the values of the first row of a dump stream lie (format: "The logical dump").
fn first_row_values(stream: &[u8], columns: usize) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    let mut values = Vec::new();
    for _ in 0..columns {
        let tag = stream[at];
        at += 1;
        let length = match tag {
            0 => 0,
            1 | 2 => 8,
            _ => {
                let length = u32::from_be_bytes(stream[at..at + 4].try_into().expect("4 bytes")) as usize;
                at += 4;
                length
            }
        };
        values.push(at..at + length);
        at += length;
    }
    values
}

/// Restore takes the ids of the blobs of `versions` from their AEAD without recomputing them
/// (their rows are proven by the ledger), and recomputes every other blob's: a blob resealed
/// under its old id by a holder of the recovery key is refused by restore if it is outside
/// the ledger, and found by the restored store's `verify` if it is a version; the
/// repository's `verify`, which recomputes every id, names both.
#[test]
fn a_blob_resealed_under_its_old_id_with_the_recovery_key_is_refused_or_found() {
    let f = fixture();
    load(&f.store, 0, 200);
    f.store.create_service_token("ward-app", "system/*.rs", None).expect("token");
    let snapshot = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("snapshot");

    // Outside the ledger: a read-only service token made a deleting one.
    reseal_first_blob_of(&f, &snapshot.name, "tokens", &|bytes| {
        let at = bytes.windows(11).position(|w| w == b"system/*.rs").expect("the token's scopes");
        bytes[at + 9] = b'd';
    });
    let found = f.repository.find_snapshot(&snapshot.name).expect("find");
    let target = f.dir.path().join("forged-token");
    let error = f.repository.restore(&found, &f.recovery, &target, None, &mut |_, _, _| {}).expect_err("refused");
    assert!(error.to_string().contains("does not match its id"), "{error}");
    assert!(!target.exists(), "a refused restore leaves nothing behind");
    let report = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    assert!(report.findings.iter().any(|x| x.kind == "pack-damaged"), "{:?}", report.findings);
}

#[test]
fn a_version_resealed_under_its_old_id_with_the_recovery_key_fails_the_restored_stores_verify() {
    let f = fixture();
    load(&f.store, 0, 200);
    let snapshot = f.repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect("snapshot");
    // A byte in the middle of the first version's sealed body.
    reseal_first_blob_of(&f, &snapshot.name, "versions", &|bytes| {
        let sealed = first_row_values(bytes, 9)[7].clone();
        bytes[(sealed.start + sealed.end) / 2] ^= 0x01;
    });
    let found = f.repository.find_snapshot(&snapshot.name).expect("find");
    let target = f.dir.path().join("forged-version");
    f.repository.restore(&found, &f.recovery, &target, None, &mut |_, _, _| {}).expect("the rows are well formed");
    let store = Store::open(&target, &key_file(f.dir.path()), Arc::new(medvault_base::SystemClock)).expect("open");
    let verified = store.verify(Some(f.repository.log_key()), &[], &[], &mut |_, _| {}).expect("verify");
    store.close();
    assert!(!verified.ok(), "the restored store's verify finds the altered version");
    assert!(verified.findings.iter().any(|x| x.leaf_index == Some(0)), "{:?}", verified.findings);
    let report = f.repository.verify(Some(&f.recovery), &mut |_, _, _| {}).expect("verify");
    assert!(!report.ok(), "the repository's verify finds it too");
}

/// A store that lost a version below its checkpoint is not backed up: the dump counts the
/// leaves as they stream, and the snapshot stops before its manifest (packs stored meanwhile
/// are left unreferenced, as by any interrupted backup).
#[test]
fn a_store_that_lost_a_version_gets_no_snapshot() {
    let f = fixture();
    load(&f.store, 0, 100);
    f.store.close();
    let data = f.dir.path().join("data");
    let database = rusqlite::Connection::open(data.join("medvault.db")).expect("open");
    assert_eq!(database.execute("DELETE FROM versions WHERE seq = 7", []).expect("delete"), 1);
    drop(database);
    let store = Store::open(&data, &key_file(f.dir.path()), Arc::new(medvault_base::SystemClock)).expect("open");
    let error = f.repository.create_snapshot(&store, &mut |_, _, _| {}).expect_err("refused");
    assert!(error.to_string().contains("covers 200 leaves but the store holds 199"), "{error}");
    let (snapshots, refused) = f.repository.snapshots().expect("list");
    assert!(snapshots.is_empty() && refused.is_empty(), "no manifest was written");
    store.close();
}

/// A medium that fills up: packs after the first cannot be stored.
#[derive(Debug)]
struct FullMedium {
    inner: DirectoryStore,
    packs_allowed: std::sync::atomic::AtomicUsize,
}

impl medvault_backup::ObjectStore for FullMedium {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), medvault_backup::StorageError> {
        use std::sync::atomic::Ordering;
        let allowed = self.packs_allowed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if name.starts_with("packs/") && allowed.is_err() {
            return Err(medvault_backup::StorageError::Io("no space left on the medium".into()));
        }
        self.inner.put_new(name, bytes)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, medvault_backup::StorageError> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: usize) -> Result<Vec<u8>, medvault_backup::StorageError> {
        self.inner.get_range(name, offset, length)
    }
    fn open(
        &self,
        name: &str,
    ) -> Result<Box<dyn medvault_backup::storage::ObjectReader>, medvault_backup::StorageError> {
        self.inner.open(name)
    }
    fn size(&self, name: &str) -> Result<u64, medvault_backup::StorageError> {
        self.inner.size(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, medvault_backup::StorageError> {
        self.inner.list(prefix)
    }
}

/// Packs are stored on a thread of their own while the next is sealed: a storage failure
/// there is the snapshot's error (not a hang, not a vaguer one), and no manifest is written.
#[test]
fn a_pack_that_cannot_be_stored_stops_the_snapshot_with_the_storage_error() {
    let f = fixture();
    // Enough rows for several 16 MiB packs.
    for batch in 0..10 {
        let writes: Vec<Write> = (0..500)
            .map(|i| {
                let id = format!("big{batch}-{i}");
                let noise: String = (0..12_000u32).map(|j| char::from(b'a' + ((j * 7 + i * 13) % 26) as u8)).collect();
                Write {
                    resource_type: "Patient".into(),
                    id: id.clone(),
                    action: WriteAction::Put(json!({"resourceType": "Patient", "id": id, "name": [{"family": noise}]})),
                    if_match: None,
                    must_be_new: false,
                }
            })
            .collect();
        f.store.write(&writes, "loader").expect("write");
    }
    let medium = FullMedium {
        inner: DirectoryStore::new(&f.dir.path().join("repo")).expect("repo"),
        packs_allowed: std::sync::atomic::AtomicUsize::new(1),
    };
    let repository = Repository::open(Arc::new(medium), None).expect("open");
    let error = repository.create_snapshot(&f.store, &mut |_, _, _| {}).expect_err("the medium is full");
    assert!(error.to_string().contains("no space left"), "{error}");
    let (snapshots, _) = repository.snapshots().expect("list");
    assert!(snapshots.is_empty(), "no manifest was written");
}
