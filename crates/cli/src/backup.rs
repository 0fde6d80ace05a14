//! `medvault backup …`: offline keys, repositories, snapshots of a running store, verify,
//! restore with proof, restore drills, prune (`docs/format/backup-repository.md`,
//! `docs/BACKUP-RUNBOOK.md`). No prompts: secrets come from files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medvault_backup::keys::write_secret_file;
use medvault_backup::{BackupError, DirectoryStore, PruneKey, RecoverySecret, Repository};
use medvault_ledger::Verifier;
use serde_json::json;

use crate::{exit, StoreArgs};

const RECOVERY_PUBLIC_HEADER: &str = "medvault-backup-recovery-public v1 ";
const PRUNE_PUBLIC_HEADER: &str = "medvault-backup-prune-public v1 ";

#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// The repository directory (a removable disk, a mounted share).
    #[arg(long, value_name = "DIR", env = "MEDVAULT_BACKUP_REPO")]
    repo: PathBuf,
    /// The store's log key from your offline records (`medvault ledger key`); the repository
    /// must be bound to it. Without it, the key the repository names is used and printed.
    #[arg(long, value_name = "VKEY")]
    ledger_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Make the offline recovery key pair and prune key pair in a new directory; move the
    /// private halves off the server (print them, or put them on a token).
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create a repository for a store; the server keeps only the public halves.
    Init {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        repo: RepoArgs,
        /// The recovery public key file (recovery.pub from keygen).
        #[arg(long, value_name = "FILE")]
        recovery_public: PathBuf,
        /// The prune public key file (prune.pub from keygen).
        #[arg(long, value_name = "FILE")]
        prune_public: PathBuf,
    },
    /// Snapshot the store at its latest signed checkpoint, while it serves.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// List snapshots by ledger position (forged ones are flagged, never listed as valid).
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check every signature and pack; with the recovery key, every blob and every
    /// snapshot's ledger. Exit 6 on any finding.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        /// The recovery private key file: also open every blob and rebuild every ledger.
        #[arg(long, value_name = "FILE")]
        recovery_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Restore a snapshot into a new data directory, prove its ledger, and run `verify`.
    Restore {
        /// The new data directory (must not exist, or be empty) and its master key.
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        repo: RepoArgs,
        /// The snapshot's name (or a unique prefix), or `latest`.
        #[arg(long, default_value = "latest")]
        snapshot: String,
        #[arg(long, value_name = "FILE")]
        recovery_key: PathBuf,
        /// A checkpoint a witness holds: a snapshot older than it is refused.
        #[arg(long, value_name = "FILE")]
        witness_checkpoint: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
    },
    /// Restore the newest snapshot into a temporary directory, verify it, and print the
    /// time it took (RTO) and the age of the newest snapshot (RPO).
    Drill {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, value_name = "FILE")]
        recovery_key: PathBuf,
        /// The store's master key file (from escrow).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        #[arg(long, value_name = "FILE")]
        witness_checkpoint: Option<PathBuf>,
        /// Where to make the temporary directory [default: the system's].
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove all but the newest snapshots; needs the offline prune key.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, value_name = "FILE")]
        prune_key: PathBuf,
        #[arg(long, value_name = "FILE")]
        recovery_key: PathBuf,
        #[arg(long, value_name = "N")]
        keep_last: usize,
    },
}

/// Runs a backup command; errors become messages and the README's exit codes.
pub fn run(command: BackupCommand) -> anyhow::Result<ExitCode> {
    match dispatch(command) {
        Ok(code) => Ok(code),
        Err(error) => {
            let code = error.chain().find_map(|cause| cause.downcast_ref::<BackupError>()).map(exit_code);
            match code {
                Some(code) => {
                    eprintln!("error: {error:#}");
                    Ok(ExitCode::from(code))
                }
                None => Err(error),
            }
        }
    }
}

fn exit_code(error: &BackupError) -> u8 {
    match error {
        BackupError::Integrity(_) | BackupError::Forged(_) | BackupError::Stale(_) => exit::INTEGRITY,
        BackupError::Key(_) => exit::KEY,
        BackupError::State(_) | BackupError::NotFound(_) => exit::STORE_STATE,
        BackupError::Storage(medvault_backup::StorageError::AlreadyExists(_)) => exit::STORE_STATE,
        BackupError::Store(medvault_store::StoreError::AlreadyExists(_) | medvault_store::StoreError::NotFound(_)) => {
            exit::STORE_STATE
        }
        BackupError::Store(medvault_store::StoreError::Integrity(_)) => exit::INTEGRITY,
        _ => exit::FAILURE,
    }
}

fn dispatch(command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Keygen { out } => keygen(&out),
        BackupCommand::Init { store, repo, recovery_public, prune_public } => {
            init(&store, &repo, &recovery_public, &prune_public)
        }
        BackupCommand::Create { store, repo, quiet, json } => create(&store, &repo, quiet || json, json),
        BackupCommand::List { repo, json } => list(&repo, json),
        BackupCommand::Verify { repo, recovery_key, json, quiet } => {
            verify(&repo, recovery_key.as_deref(), json, quiet)
        }
        BackupCommand::Restore { store, repo, snapshot, recovery_key, witness_checkpoint, quiet } => {
            let repository = open(&repo)?;
            let recovery = RecoverySecret::read(&recovery_key)?;
            let outcome =
                restore_and_verify(&repository, &snapshot, &recovery, &store, witness_checkpoint.as_deref(), quiet)?;
            print_restore(&outcome);
            Ok(if outcome.verified_ok { ExitCode::SUCCESS } else { ExitCode::from(exit::INTEGRITY) })
        }
        BackupCommand::Drill { repo, recovery_key, key_file, witness_checkpoint, work_dir, quiet, json } => {
            drill(&repo, &recovery_key, &key_file, witness_checkpoint.as_deref(), work_dir, quiet || json, json)
        }
        BackupCommand::Prune { repo, prune_key, recovery_key, keep_last } => {
            let repository = open(&repo)?;
            let prune_key = PruneKey::read(&prune_key)?;
            let recovery = RecoverySecret::read(&recovery_key)?;
            let objects = DirectoryStore::new(&repo.repo)?;
            let report = repository.prune(&objects, &prune_key, &recovery, keep_last)?;
            println!(
                "pruned {} snapshot(s) and {} pack(s) ({}); record {}",
                report.snapshots_removed.len(),
                report.packs_removed,
                bytes(report.bytes_removed),
                report.record
            );
            for name in &report.snapshots_removed {
                println!("  removed {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        return Err(BackupError::State(format!(
            "{} exists and is not empty; keygen never overwrites keys",
            out.display()
        ))
        .into());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let recovery = RecoverySecret::generate()?;
    let prune = PruneKey::generate()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    write_secret_file(&out.join("recovery.key"), &recovery.to_file_text())?;
    write_secret_file(&out.join("prune.key"), &prune.to_file_text())?;
    std::fs::write(
        out.join("recovery.pub"),
        format!("{RECOVERY_PUBLIC_HEADER}{}\n", b64.encode(recovery.public_key())),
    )?;
    std::fs::write(out.join("prune.pub"), format!("{PRUNE_PUBLIC_HEADER}{}\n", b64.encode(prune.public_key())))?;
    println!("Wrote {}/recovery.key, prune.key (private, mode 0600) and recovery.pub, prune.pub", out.display());
    println!("Give only the .pub files to the server (`medvault backup init`).");
    println!("Move recovery.key and prune.key OFF the server now, on separate media (print them, or a token):");
    println!("  recovery.key opens every backup; prune.key is the only way to delete one.");
    Ok(ExitCode::SUCCESS)
}

fn read_public(path: &Path, header: &str) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let encoded = text
        .trim_end()
        .strip_prefix(header)
        .ok_or_else(|| BackupError::Key(format!("{} is not a {}key file", path.display(), header.trim_end())))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| BackupError::Key(format!("{} is not valid base64", path.display())))?;
    Ok(bytes.try_into().map_err(|_| BackupError::Key(format!("{} does not hold 32 bytes", path.display())))?)
}

fn init(store_args: &StoreArgs, repo: &RepoArgs, recovery: &Path, prune: &Path) -> anyhow::Result<ExitCode> {
    let recovery_public = read_public(recovery, RECOVERY_PUBLIC_HEADER)?;
    let prune_public = read_public(prune, PRUNE_PUBLIC_HEADER)?;
    let store = store_args.open()?;
    let objects = Arc::new(DirectoryStore::new(&repo.repo)?);
    let repository = Repository::init(objects, &store, recovery_public, prune_public);
    store.close();
    let repository = repository?;
    println!("Created a backup repository in {}", repo.repo.display());
    println!("repository   {}", medvault_base::hex::encode(&repository.config().repository_id));
    println!("log key      {}", repository.config().log_key);
    println!("Compare the log key with your offline records; give it to restore with --ledger-key.");
    Ok(ExitCode::SUCCESS)
}

fn open(repo: &RepoArgs) -> anyhow::Result<Repository> {
    if !repo.repo.join("config").exists() {
        return Err(BackupError::NotFound(format!("a backup repository in {}", repo.repo.display())).into());
    }
    let pinned = repo
        .ledger_key
        .as_deref()
        .map(|text| {
            Verifier::parse(text.trim()).map_err(|e| anyhow::anyhow!("'{}' is not a verifier key: {e}", text.trim()))
        })
        .transpose()?;
    let objects = Arc::new(DirectoryStore::new(&repo.repo)?);
    let repository = Repository::open(objects, pinned.as_ref())?;
    if pinned.is_none() {
        eprintln!("note: repository bound to log key {} (pin it with --ledger-key)", repository.config().log_key);
    }
    Ok(repository)
}

fn bar(hidden: bool, template: &str) -> ProgressBar {
    let bar = if hidden { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "),
    );
    bar
}

fn create(store_args: &StoreArgs, repo: &RepoArgs, quiet: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let repository = open(repo)?;
    let store = store_args.open()?;
    let progress = bar(quiet, "backup [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})");
    let report = repository.create_snapshot(&store, &mut |_, done, total| {
        progress.set_length(total.max(done));
        progress.set_position(done);
    });
    progress.finish_and_clear();
    store.close();
    let report = report?;
    let new_versions = report.tree_size - report.parent_tree_size;
    let per_version = if new_versions > 0 { report.bytes_written as f64 / new_versions as f64 } else { 0.0 };
    let throughput = report.dump_bytes as f64 / 1e6 / report.elapsed_s.max(1e-9);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "snapshot": report.name, "unchanged": report.unchanged, "parent": report.parent,
                "tree_size": report.tree_size, "new_versions": new_versions,
                "last_leaf": medvault_base::time::format_instant(report.last_leaf_ms),
                "dump_bytes": report.dump_bytes, "bytes_written": report.bytes_written,
                "bytes_per_new_version": per_version, "blobs_new": report.blobs_new,
                "blobs_reused": report.blobs_reused, "packs_written": report.packs_written,
                "erasures_written": report.erasures_written, "elapsed_s": report.elapsed_s,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if report.unchanged {
        println!("unchanged: {} already holds this state (tree size {})", report.name, report.tree_size);
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot     {}", report.name);
    println!(
        "checkpoint   tree size {} (last write {}); {} new versions since {}",
        report.tree_size,
        medvault_base::time::format_instant(report.last_leaf_ms),
        new_versions,
        report.parent.as_deref().unwrap_or("nothing (first snapshot)")
    );
    println!("dumped       {} in {:.2} s ({throughput:.0} MB/s)", bytes(report.dump_bytes), report.elapsed_s);
    println!(
        "written      {} in {} pack(s): {} new blobs, {} reused",
        bytes(report.bytes_written),
        report.packs_written,
        report.blobs_new,
        report.blobs_reused
    );
    if new_versions > 0 {
        println!("per change   {per_version:.0} bytes written per new version");
    }
    if report.erasures_written > 0 {
        println!("erasures     {} new erasure record(s)", report.erasures_written);
    }
    Ok(ExitCode::SUCCESS)
}

fn list(repo: &RepoArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let repository = open(repo)?;
    let (snapshots, refused) = repository.snapshots()?;
    if as_json {
        let valid: Vec<_> = snapshots
            .iter()
            .map(|s| {
                json!({"name": s.name, "tree_size": s.manifest.tree_size,
                       "last_leaf": medvault_base::time::format_instant(s.manifest.last_leaf_ms),
                       "parent": s.manifest.parent, "packs": s.manifest.packs.len()})
            })
            .collect();
        let refused: Vec<_> = refused.iter().map(|(name, reason)| json!({"name": name, "reason": reason})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"snapshots": valid, "refused": refused}))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<56} {:>10} {:<26} packs", "snapshot", "tree size", "last write (ledger time)");
    for snapshot in &snapshots {
        println!(
            "{:<56} {:>10} {:<26} {}",
            snapshot.name,
            snapshot.manifest.tree_size,
            medvault_base::time::format_instant(snapshot.manifest.last_leaf_ms),
            snapshot.manifest.packs.len()
        );
    }
    for (name, reason) in &refused {
        println!("REFUSED {name}: {reason}");
    }
    println!("{} valid snapshot(s), {} refused", snapshots.len(), refused.len());
    Ok(ExitCode::SUCCESS)
}

fn verify(repo: &RepoArgs, recovery_key: Option<&Path>, as_json: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    let repository = open(repo)?;
    let recovery = recovery_key.map(RecoverySecret::read).transpose()?;
    let progress = bar(quiet || as_json, "verify [{bar:30}] {pos}/{len} packs");
    let report = repository.verify(recovery.as_ref(), &mut |_, done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    if as_json {
        let findings: Vec<_> =
            report.findings.iter().map(|f| json!({"kind": f.kind, "object": f.object, "message": f.message})).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": report.ok(), "snapshots": report.snapshots, "packs": report.packs, "blobs": report.blobs,
                "bytes_read": report.bytes_read, "contents_checked": report.contents_checked,
                "unreferenced_packs": report.unreferenced_packs, "elapsed_s": report.elapsed_s, "findings": findings,
            }))?
        );
    } else {
        println!(
            "checked {} snapshot(s), {} pack(s), {} blob(s), {} read in {:.2} s{}",
            report.snapshots,
            report.packs,
            report.blobs,
            bytes(report.bytes_read),
            report.elapsed_s,
            if report.contents_checked {
                ""
            } else {
                " (signatures and pack hashes only: give --recovery-key to open every blob)"
            }
        );
        if report.unreferenced_packs > 0 {
            println!(
                "{} pack(s) belong to no snapshot (an interrupted backup); prune removes them",
                report.unreferenced_packs
            );
        }
        if report.ok() {
            println!("OK: every object is authentic and every snapshot's ledger reproduces its checkpoint");
        } else {
            println!("FAILED: {} problem(s)", report.findings.len());
            for finding in &report.findings {
                println!("  [{}] {}: {}", finding.kind, finding.object, finding.message);
            }
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(exit::INTEGRITY) })
}

struct RestoreOutcome {
    report: medvault_backup::RestoreReport,
    verified_ok: bool,
    verify_summary: String,
    verify_s: f64,
    data_dir: PathBuf,
}

fn witness(repository: &Repository, path: Option<&Path>) -> anyhow::Result<Option<(u64, [u8; 32])>> {
    let Some(path) = path else { return Ok(None) };
    let note = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let opened = medvault_ledger::open_checkpoint(&note, repository.log_key(), &[]).map_err(|e| {
        BackupError::Forged(format!("{} is not a checkpoint signed by the store's log key: {e}", path.display()))
    })?;
    Ok(Some((opened.checkpoint.size(), *opened.checkpoint.root())))
}

fn restore_and_verify(
    repository: &Repository,
    snapshot: &str,
    recovery: &RecoverySecret,
    target: &StoreArgs,
    witness_checkpoint: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<RestoreOutcome> {
    let witness = witness(repository, witness_checkpoint)?;
    // The master key must be at hand before anything is written.
    let source = target.source()?;
    let snapshot = repository.find_snapshot(snapshot)?;
    let progress = bar(quiet, "restore [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})");
    let report = repository.restore(&snapshot, recovery, &target.data_dir, witness, &mut |_, done, total| {
        progress.set_length(total.max(done));
        progress.set_position(done);
    });
    progress.finish_and_clear();
    let report = report?;
    let started = Instant::now();
    let store = medvault_store::Store::open(&target.data_dir, source.as_ref(), Arc::new(medvault_base::SystemClock))
        .with_context(|| format!("cannot open the restored store in {}", target.data_dir.display()))?;
    let progress = bar(quiet, "verify  [{bar:30}] {pos}/{len} leaves ({per_sec})");
    let verified = store.verify(Some(repository.log_key()), &[], &[], &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    store.close();
    let mut verify_summary = format!(
        "{} versions, {} leaves, {} checkpoints (latest {}), {} erased",
        verified.versions,
        verified.leaves,
        verified.checkpoints,
        verified.latest_checkpoint_size.map_or("none".into(), |s| s.to_string()),
        verified.erased
    );
    for finding in &verified.findings {
        verify_summary.push_str(&format!("\n  [{}] {}", finding.kind.name(), finding.message));
    }
    Ok(RestoreOutcome {
        report,
        verified_ok: verified.ok(),
        verify_summary,
        verify_s: started.elapsed().as_secs_f64(),
        data_dir: target.data_dir.clone(),
    })
}

fn print_restore(outcome: &RestoreOutcome) {
    let report = &outcome.report;
    println!("restored     {} into {}", report.snapshot, outcome.data_dir.display());
    println!(
        "ledger       tree size {} reproduces the signed checkpoint root (last write {})",
        report.tree_size,
        medvault_base::time::format_instant(report.last_leaf_ms)
    );
    for (table, rows) in &report.tables {
        println!("  {table:<28} {rows:>10} rows");
    }
    println!("read         {} in {:.2} s", bytes(report.bytes_read), report.elapsed_s);
    if report.erasures_applied > 0 {
        println!("erasures     {} destroyed patient key(s) erased again", report.erasures_applied);
    }
    println!("verify       {} in {:.2} s", outcome.verify_summary, outcome.verify_s);
    println!(
        "{}",
        if outcome.verified_ok { "OK: restored and verified" } else { "FAILED: the restored store does not verify" }
    );
}

fn drill(
    repo: &RepoArgs,
    recovery_key: &Path,
    key_file: &Path,
    witness_checkpoint: Option<&Path>,
    work_dir: Option<PathBuf>,
    quiet: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let repository = open(repo)?;
    let recovery = RecoverySecret::read(recovery_key)?;
    let base = work_dir.unwrap_or_else(std::env::temp_dir);
    let unique = medvault_base::hex::encode(&medvault_crypto::random::array::<8>()?);
    let scratch = base.join(format!("medvault-drill-{unique}"));
    let target =
        StoreArgs { data_dir: scratch.join("data"), key_file: Some(key_file.to_path_buf()), passphrase_env: None };
    let outcome = restore_and_verify(&repository, "latest", &recovery, &target, witness_checkpoint, quiet);
    let _ = std::fs::remove_dir_all(&scratch);
    let outcome = outcome?;
    let rto_s = started.elapsed().as_secs_f64();
    let now_ms = medvault_base::Clock::now_ms(&medvault_base::SystemClock);
    let rpo_s = (now_ms - outcome.report.last_leaf_ms).max(0) as f64 / 1000.0;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": outcome.verified_ok, "snapshot": outcome.report.snapshot, "tree_size": outcome.report.tree_size,
                "restore_s": outcome.report.elapsed_s, "verify_s": outcome.verify_s, "rto_s": rto_s, "rpo_s": rpo_s,
                "last_write": medvault_base::time::format_instant(outcome.report.last_leaf_ms),
            }))?
        );
    } else {
        print_restore(&outcome);
        println!("RTO          {rto_s:.1} s to restore and verify the newest snapshot");
        println!(
            "RPO          {} since the newest snapshot's last write ({})",
            duration(rpo_s),
            medvault_base::time::format_instant(outcome.report.last_leaf_ms)
        );
    }
    Ok(if outcome.verified_ok { ExitCode::SUCCESS } else { ExitCode::from(exit::INTEGRITY) })
}

fn bytes(count: u64) -> String {
    match count {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn duration(seconds: f64) -> String {
    match seconds {
        s if s >= 86_400.0 => format!("{:.1} days", s / 86_400.0),
        s if s >= 3_600.0 => format!("{:.1} h", s / 3_600.0),
        s if s >= 60.0 => format!("{:.1} min", s / 60.0),
        s => format!("{s:.0} s"),
    }
}
