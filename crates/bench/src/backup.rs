//! The backup benchmark (issue 6, `docs/PERFORMANCE.md`, *Backup*): on one store of
//! `--backup-resources` resources (default 1,000,000, ≥ 500 MB on disk), medvault's full
//! backup, incremental after a 1 % change, verify reading all data, and restore, each side by
//! side with restic on the same data directory; then a restore drill (restore + the store's
//! full `verify`) of the whole store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use medvault_backup::{DirectoryStore, PruneKey, RecoverySecret, Repository};
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::{Store, Write, WriteAction};
use serde_json::json;

const WRITE_CHUNK: usize = 1000;
const RESTIC_PASSWORD: &str = "medvault-bench";

struct Pair {
    name: &'static str,
    medvault_s: f64,
    restic_s: f64,
    bytes: u64,
    /// restic ÷ medvault time: how many times faster medvault is.
    target: Option<f64>,
}

pub fn run(resources: usize) -> anyhow::Result<()> {
    let restic = crate::find_program("restic").context(
        "restic not found; the backup benchmark compares with it: apt-get update && apt-get install -y restic",
    )?;
    let version = output(Command::new(&restic).arg("version"))?;
    let directory = medvault_testkit::TempDir::new("bench-backup");
    let root = directory.path();
    let key_file = KeyFile { path: root.join("data.key") };
    MasterKey::generate()?.create_key_file(&key_file.path)?;
    let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
    let data = root.join("data");
    let store = Store::create(&data, &key_file, clock.clone())?;
    // No search index: it would triple the build's time and add tables that a backup never
    // holds (they are rebuilt after a restore), which restic would copy and medvault skip.
    store.danger_drop_search_index_for_benchmark()?;
    crate::progress(format!("[backup] building a store of {} resources", crate::report::thousands(resources as f64)));
    let started = Instant::now();
    let patients = (resources / 100).max(1);
    build(&store, resources, patients)?;
    store.close();
    drop(store);
    let build_s = started.elapsed().as_secs_f64();
    let data_bytes = directory_bytes(&data);
    crate::progress(format!("[backup] built in {build_s:.1} s: {} in the data directory", mb(data_bytes)));

    let recovery = RecoverySecret::generate()?;
    let prune = PruneKey::generate()?;
    let repo_dir = root.join("medvault-repo");
    let objects = Arc::new(DirectoryStore::new(&repo_dir)?);
    let store = Store::open(&data, &key_file, clock.clone())?;
    let repository = Repository::init(objects, &store, recovery.public_key(), prune.public_key())?;

    // Full backups.
    crate::progress("[backup] medvault full backup");
    settle()?;
    let full = repository.create_snapshot(&store, &mut |_, _, _| {})?;
    store.close();
    drop(store);
    let restic_repo = root.join("restic-repo");
    let restic_env = |command: &mut Command| {
        command
            .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
            .env("RESTIC_REPOSITORY", &restic_repo)
            .env("RESTIC_CACHE_DIR", root.join("restic-cache"));
    };
    let restic_run = |args: &[&str]| -> anyhow::Result<f64> {
        let mut command = Command::new(&restic);
        restic_env(&mut command);
        command.args(args);
        settle()?;
        let started = Instant::now();
        output(&mut command).with_context(|| format!("restic {}", args.join(" ")))?;
        Ok(started.elapsed().as_secs_f64())
    };
    restic_run(&["init", "--quiet"])?;
    crate::progress("[backup] restic full backup");
    let restic_full_s = restic_run(&["backup", "--quiet", path(&data)?])?;
    let restic_full_bytes = directory_bytes(&restic_repo);

    // A 1 % change: updates of 1 % of the resources, then incrementals.
    let changed = resources / 100;
    let store = Store::open(&data, &key_file, clock.clone())?;
    crate::progress(format!("[backup] updating {} resources (1 %)", crate::report::thousands(changed as f64)));
    update(&store, changed, patients)?;
    crate::progress("[backup] medvault incremental");
    settle()?;
    let incremental = repository.create_snapshot(&store, &mut |_, _, _| {})?;
    store.close();
    drop(store);
    let before = directory_bytes(&restic_repo);
    crate::progress("[backup] restic incremental");
    let restic_incremental_s = restic_run(&["backup", "--quiet", path(&data)?])?;
    let restic_incremental_bytes = directory_bytes(&restic_repo) - before;

    // Verify, reading all data.
    crate::progress("[backup] medvault verify (every blob opened, every ledger rebuilt)");
    settle()?;
    let started = Instant::now();
    let verified = repository.verify(Some(&recovery), &mut |_, _, _| {})?;
    let verify_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(verified.ok(), "medvault verify found problems: {:?}", verified.findings);
    crate::progress("[backup] restic check --read-data");
    let restic_check_s = restic_run(&["check", "--read-data"])?;

    // Restore.
    crate::progress("[backup] medvault restore");
    let snapshot = repository.find_snapshot("latest")?;
    let restored = root.join("restored");
    settle()?;
    // CPU as well as wall time: other load on the machine moves CPU much less.
    let cpu_before = crate::cpu::process_s();
    let restore = repository.restore(&snapshot, &recovery, &restored, None, &mut |_, _, _| {})?;
    let restore_s = restore.elapsed_s;
    let restore_cpu_s = crate::cpu::process_s().zip(cpu_before).map(|(after, before)| after - before);
    std::fs::remove_dir_all(&restored)?;
    crate::progress("[backup] restic restore");
    let restic_target = root.join("restic-restored");
    // Flushed first, so that the `sync` restic_run starts with (a child too) has nothing left.
    settle()?;
    let children_before = crate::cpu::children_s();
    let restic_restore_s = restic_run(&["restore", "latest", "--target", path(&restic_target)?])?;
    let restic_restore_cpu_s = crate::cpu::children_s().zip(children_before).map(|(after, before)| after - before);
    // restic returns before its files are on disk; medvault's restore syncs the database
    // it writes before renaming it into place. Timed apart: what making restic's copy
    // durable takes (the same `sync` a careful operator runs before trusting it).
    let started = Instant::now();
    settle()?;
    let restic_sync_s = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&restic_target)?;

    // The drill: restore + the store's full verify.
    crate::progress("[backup] restore drill (restore, open, full verify)");
    settle()?;
    let started = Instant::now();
    let drilled = root.join("drill");
    let drill_restore = repository.restore(&snapshot, &recovery, &drilled, None, &mut |_, _, _| {})?;
    let store = Store::open(&drilled, &key_file, clock)?;
    let report = store.verify(Some(repository.log_key()), &[], &[], &mut |_, _| {})?;
    store.close();
    let drill_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.ok(), "the restored store does not verify: {:?}", report.findings);
    anyhow::ensure!(report.versions == drill_restore.tree_size, "the drill restored every version");

    let pairs = [
        Pair {
            name: "full backup",
            medvault_s: full.elapsed_s,
            restic_s: restic_full_s,
            bytes: data_bytes,
            target: Some(1.5),
        },
        Pair {
            name: "incremental after 1 % change",
            medvault_s: incremental.elapsed_s,
            restic_s: restic_incremental_s,
            bytes: directory_bytes(&data),
            target: None,
        },
        Pair {
            name: "verify, all data read",
            medvault_s: verify_s,
            restic_s: restic_check_s,
            bytes: data_bytes,
            target: None,
        },
        Pair {
            name: "restore",
            medvault_s: restore_s,
            restic_s: restic_restore_s,
            bytes: data_bytes,
            target: Some(2.0),
        },
        Pair {
            name: "  restic's files synced too",
            medvault_s: restore_s,
            restic_s: restic_restore_s + restic_sync_s,
            bytes: data_bytes,
            target: None,
        },
    ];
    let versions_bytes = |report: &medvault_backup::CreateReport| {
        report.tables.iter().find(|(name, _, _)| name == "versions").map_or(0, |(_, _, bytes)| *bytes)
    };
    let changed_bytes = versions_bytes(&incremental) - versions_bytes(&full);
    println!();
    println!(
        "backup benchmark — {} resources, data directory {} ({})",
        crate::report::thousands(resources as f64),
        mb(data_bytes),
        version.trim()
    );
    println!("store built in {build_s:.1} s (not measured), without a search index (never backed up; a restored store rebuilds it)");
    println!(
        "MB/s = data-directory MB / wall time, same input for both; dirty pages flushed (`sync`) before each step"
    );
    println!();
    println!("{:<32} {:>14} {:>14} {:>8}", "", "medvault", "restic", "ratio*");
    for pair in &pairs {
        let medvault = pair.bytes as f64 / 1e6 / pair.medvault_s;
        let restic = pair.bytes as f64 / 1e6 / pair.restic_s;
        println!(
            "{:<32} {:>8.0} MB/s {:>8.0} MB/s {:>7.2}x{}",
            pair.name,
            medvault,
            restic,
            pair.restic_s / pair.medvault_s,
            pair.target.map_or(String::new(), |t| format!("   (target >= {t:.1}x)"))
        );
        println!("{:<32} {:>12.2} s {:>12.2} s", "  wall time", pair.medvault_s, pair.restic_s);
    }
    println!("* restic time / medvault time; restic's restore returns before its files are on disk (medvault's syncs what it");
    println!("  writes before the rename): the row under it adds the `sync` that puts restic's copy on disk");
    let cpu = |seconds: Option<f64>| seconds.map_or("-".to_string(), |s| format!("{s:.2} s"));
    println!("{:<32} {:>14} {:>14}", "restore CPU (user + sys)", cpu(restore_cpu_s), cpu(restic_restore_cpu_s));
    println!();
    println!("repository bytes                  medvault        restic");
    println!("{:<32} {:>10} {:>13}", "  full", mb(full.bytes_written), mb(restic_full_bytes));
    println!("{:<32} {:>10} {:>13}", "  incremental", mb(incremental.bytes_written), mb(restic_incremental_bytes));
    println!(
        "{:<32} {:>10.0} {:>13.0}",
        "  bytes written per changed record",
        incremental.bytes_written as f64 / changed as f64,
        restic_incremental_bytes as f64 / changed as f64
    );
    println!(
        "{:<32} {:>10.2} {:>13.2}",
        "  ... per changed byte (x)",
        incremental.bytes_written as f64 / changed_bytes.max(1) as f64,
        restic_incremental_bytes as f64 / changed_bytes.max(1) as f64
    );
    println!(
        "  ({} changed records = {} of new version rows)",
        crate::report::thousands(changed as f64),
        mb(changed_bytes)
    );
    println!();
    println!(
        "restore drill: {} versions restored in {:.1} s, verified (every version re-opened, ledger rebuilt) — {:.1} s in all (target <= 60 s)",
        crate::report::thousands(report.versions as f64),
        drill_restore.elapsed_s,
        drill_s
    );
    let figures = json!({
        "resources": resources, "data_bytes": data_bytes, "restic": version.trim(),
        "full": {"medvault_s": full.elapsed_s, "restic_s": restic_full_s, "medvault_bytes": full.bytes_written, "restic_bytes": restic_full_bytes},
        "incremental": {"medvault_s": incremental.elapsed_s, "restic_s": restic_incremental_s, "changed_records": changed,
                        "changed_bytes": changed_bytes, "medvault_bytes": incremental.bytes_written, "restic_bytes": restic_incremental_bytes},
        "verify": {"medvault_s": verify_s, "restic_s": restic_check_s},
        "restore": {"medvault_s": restore_s, "restic_s": restic_restore_s, "restic_sync_s": restic_sync_s,
                    "medvault_cpu_s": restore_cpu_s, "restic_cpu_s": restic_restore_cpu_s},
        "drill": {"restore_s": drill_restore.elapsed_s, "total_s": drill_s, "versions": report.versions},
    });
    std::fs::write(root.join("figures.json"), figures.to_string()).ok();
    println!("{figures}");
    Ok(())
}

fn build(store: &Store, resources: usize, patients: usize) -> anyhow::Result<()> {
    let mut writes = Vec::with_capacity(WRITE_CHUNK);
    for index in 0..resources {
        writes.push(if index < patients { patient(index) } else { observation(index, patients, 0) });
        if writes.len() == WRITE_CHUNK || index + 1 == resources {
            store.write(&writes, "bench").map_err(|e| anyhow::anyhow!("write: {e}"))?;
            writes.clear();
        }
    }
    Ok(())
}

/// Updates `count` Observations spread over the store (a new version of each).
fn update(store: &Store, count: usize, patients: usize) -> anyhow::Result<()> {
    let observations = store.status()?.by_type.iter().find(|(t, _, _)| t == "Observation").map_or(0, |(_, n, _)| *n);
    let step = (observations as usize / count.max(1)).max(1);
    let mut writes = Vec::with_capacity(WRITE_CHUNK);
    for n in 0..count {
        writes.push(observation(patients + n * step, patients, 1));
        if writes.len() == WRITE_CHUNK || n + 1 == count {
            store.write(&writes, "bench").map_err(|e| anyhow::anyhow!("write: {e}"))?;
            writes.clear();
        }
    }
    Ok(())
}

fn patient(index: usize) -> Write {
    let id = format!("bench-patient-{index:07}");
    Write {
        resource_type: "Patient".into(),
        action: WriteAction::Put(json!({"resourceType": "Patient", "id": id, "gender": "female",
            "name": [{"family": format!("Family{index}"), "given": ["Ann"]}], "birthDate": "1970-01-01"})),
        id,
        if_match: None,
        must_be_new: false,
    }
}

fn observation(index: usize, patients: usize, revision: u32) -> Write {
    let id = format!("bench-obs-{index:08}");
    let patient = format!("bench-patient-{:07}", index % patients);
    Write {
        resource_type: "Observation".into(),
        action: WriteAction::Put(json!({"resourceType": "Observation", "id": id,
            "status": if revision == 0 { "final" } else { "amended" },
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2026-01-01T08:00:00Z",
            "valueQuantity": {"value": 60 + (index % 40) as u64 + u64::from(revision), "unit": "beats/minute",
                              "system": "http://unitsofmeasure.org", "code": "/min"}})),
        id,
        if_match: None,
        must_be_new: false,
    }
}

/// Writes back every dirty page before a timed step, so that no step waits on what an
/// earlier one (of either tool) left in the page cache: restic does not sync what it
/// writes, medvault does.
fn settle() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    Ok(())
}

fn directory_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn path(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a non-UTF-8 temporary path")
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
