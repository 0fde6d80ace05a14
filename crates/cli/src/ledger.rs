//! `medvault verify`, `medvault ledger …` and `medvault witness …`: checking the store
//! against its ledger, exporting checkpoints and proofs to files, verifying proofs
//! offline, and witnessing a log from another machine or a removable disk.
//!
//! Witness directory layout (`docs/format/checkpoint.md`):
//! `witness.key` (the witness's Ed25519 seed, mode 0600), `witness.name`, `log.vkey`
//! (the log's verifier key, pinned at the first cosign), `latest.note` (the last
//! cosigned checkpoint), `checkpoints/<size>.note` (every one), `incoming.json` (a
//! package written by `medvault ledger export`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medvault_ledger::{Hash, Verifier};
use medvault_store::verify::WitnessCheckpoint;
use serde_json::{json, Value};

use crate::{exit, StoreArgs};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A checkpoint held by a witness (a signed note file, e.g. a witness's latest.note); repeatable.
    #[arg(long = "witness-checkpoint", value_name = "FILE")]
    witness_checkpoints: Vec<PathBuf>,
    /// A witness's verifier key; when given, witness checkpoints must carry its cosignature.
    #[arg(long = "witness-key", value_name = "VKEY")]
    witness_keys: Vec<String>,
    /// The log's verifier key as recorded elsewhere (defeats a replaced signing key).
    #[arg(long, value_name = "VKEY")]
    log_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Write the latest signed checkpoint (for offline media) to a file or standard output.
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the log's verifier key (give it to witnesses and auditors).
    Key {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write an inclusion proof for a resource version (Type/id/_history/version).
    Prove {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a consistency proof from an older tree size to the latest checkpoint.
    Consistency {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        old: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a package for a witness directory: the latest checkpoint and a consistency
    /// proof from the witness's last cosigned size.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "DIR")]
        witness_dir: PathBuf,
    },
    /// Verify a proof file offline, without the server or the store.
    VerifyProof {
        /// The log's verifier key.
        #[arg(long, value_name = "VKEY")]
        log_key: String,
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum WitnessCommand {
    /// Create a witness directory with a new witness key; prints its verifier key.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Fetch (from a server) or read (DIR/incoming.json) the latest checkpoint with a
    /// consistency proof from the last cosigned one; check it, then cosign and keep it.
    Cosign {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The log's verifier key (pinned on first use; later runs must match).
        #[arg(long, value_name = "VKEY")]
        log_key: String,
        /// The package to read [default: DIR/incoming.json].
        #[arg(long, value_name = "FILE", conflicts_with = "url")]
        package: Option<PathBuf>,
        /// Fetch from a running server instead, e.g. https://medvault.example:8443.
        #[arg(long, value_name = "URL", requires = "token_env")]
        url: Option<String>,
        /// Environment variable holding a bearer token for the server (any role).
        #[arg(long, value_name = "VARIABLE")]
        token_env: Option<String>,
        /// PEM certificate(s) to trust for an https URL (e.g. the server's self-signed one).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let log_key = args.log_key.as_deref().map(parse_vkey).transpose()?;
    let witness_keys = args.witness_keys.iter().map(|k| parse_vkey(k)).collect::<anyhow::Result<Vec<_>>>()?;
    let witnesses = args
        .witness_checkpoints
        .iter()
        .map(|path| {
            Ok(WitnessCheckpoint {
                source: path.display().to_string(),
                note: std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let progress = if args.quiet || args.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    progress.set_style(
        ProgressStyle::with_template("verify [{bar:30}] {pos}/{len} leaves ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let report = store.verify(log_key.as_ref(), &witnesses, &witness_keys, &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    store.close();
    let elapsed_s = started.elapsed().as_secs_f64();
    if args.json {
        let findings: Vec<Value> = report
            .findings
            .iter()
            .map(|f| json!({"kind": f.kind.name(), "leaf_index": f.leaf_index, "message": f.message}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": report.ok(),
                "versions": report.versions,
                "audit_blocks": report.audit_blocks,
                "audit_records": report.audit_records,
                "leaves": report.leaves,
                "erased": report.erased,
                "checkpoints": report.checkpoints,
                "latest_checkpoint_size": report.latest_checkpoint_size,
                "witness_checkpoints": report.witnesses,
                "elapsed_s": elapsed_s,
                "findings": findings,
            }))?
        );
    } else {
        println!(
            "verified {} versions and {} audit records in {} blocks against {} ledger leaves, {} signed checkpoints (latest size {}) and {} witness checkpoint(s) in {elapsed_s:.2} s",
            report.versions,
            report.audit_records,
            report.audit_blocks,
            report.leaves,
            report.checkpoints,
            report.latest_checkpoint_size.map_or("none".to_string(), |s| s.to_string()),
            report.witnesses
        );
        if report.erased > 0 {
            println!("{} version(s) are erased (their data key was destroyed) and were not re-opened", report.erased);
        }
        if report.ok() {
            println!("OK: every version matches the ledger and every checkpoint");
        } else {
            println!("FAILED: {} problem(s)", report.findings.len());
            for finding in &report.findings {
                println!("  [{}] {}", finding.kind.name(), finding.message);
            }
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(exit::INTEGRITY) })
}

pub fn ledger(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Checkpoint { store, out } => {
            let store = store.open()?;
            let note = store.latest_checkpoint()?.context("the log is empty: no checkpoint yet")?.note;
            store.close();
            write_output(out.as_deref(), note.as_bytes())?;
        }
        LedgerCommand::Key { store } => {
            let store = store.open()?;
            println!("{}", store.ledger_verifier()?);
            store.close();
        }
        LedgerCommand::Prove { store, resource, out } => {
            let store = store.open()?;
            let parts: Vec<&str> = resource.split('/').collect();
            let [resource_type, id, "_history", version] = parts.as_slice() else {
                anyhow::bail!("--resource must be Type/id/_history/version");
            };
            let version: u64 = version.parse().context("the version must be a positive integer")?;
            let proof = store
                .inclusion_proof(resource_type, id, version, None)?
                .with_context(|| format!("{resource} does not exist"))?;
            store.close();
            let document = proof.to_document(&resource);
            write_output(out.as_deref(), serde_json::to_string_pretty(&document)?.as_bytes())?;
        }
        LedgerCommand::Consistency { store, old, out } => {
            let store = store.open()?;
            let document = consistency_document(&store, old)?;
            store.close();
            write_output(out.as_deref(), serde_json::to_string_pretty(&document)?.as_bytes())?;
        }
        LedgerCommand::Export { store, witness_dir } => {
            let old = match std::fs::read(witness_dir.join("latest.note")) {
                Ok(note) => checkpoint_size_unverified(&note)?,
                Err(_) => 0,
            };
            let store = store.open()?;
            let document = consistency_document(&store, old)?;
            store.close();
            let path = witness_dir.join("incoming.json");
            std::fs::write(&path, serde_json::to_string_pretty(&document)?)?;
            println!("wrote {} (tree size {} → {})", path.display(), old, document["new_size"]);
        }
        LedgerCommand::VerifyProof { log_key, proof } => {
            let log_key = parse_vkey(&log_key)?;
            let document: Value =
                serde_json::from_slice(&std::fs::read(&proof)?).context("the proof file is not JSON")?;
            match verify_proof_document(&document, &log_key) {
                Ok(summary) => println!("OK: {summary}"),
                Err(error) => {
                    println!("FAILED: {error:#}");
                    return Ok(ExitCode::from(exit::INTEGRITY));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn witness(command: WitnessCommand) -> anyhow::Result<ExitCode> {
    match command {
        WitnessCommand::Init { dir, name } => {
            if dir.join("witness.key").exists() {
                anyhow::bail!(medvault_store::StoreError::AlreadyExists(dir.join("witness.key").display().to_string()));
            }
            std::fs::create_dir_all(dir.join("checkpoints"))?;
            let seed = medvault_crypto::random::array::<32>()?;
            let key = medvault_ledger::SigningKey::from_seed(&seed).map_err(|e| anyhow::anyhow!("{e}"))?;
            write_private(&dir.join("witness.key"), base64::engine::general_purpose::STANDARD.encode(seed).as_bytes())?;
            std::fs::write(dir.join("witness.name"), &name)?;
            let verifier = key.cosignature_verifier(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{verifier}");
        }
        WitnessCommand::Cosign { dir, log_key, package, url, token_env, ca_cert } => {
            let log_key = parse_vkey(&log_key)?;
            let pinned = dir.join("log.vkey");
            match std::fs::read_to_string(&pinned) {
                Ok(text) if text.trim() != log_key.to_string() => {
                    anyhow::bail!("this witness follows the log key {}; refusing another", text.trim())
                }
                Ok(_) => {}
                Err(_) => std::fs::write(&pinned, format!("{log_key}\n"))?,
            }
            let document: Value = match url {
                Some(url) => {
                    let token = std::env::var(token_env.as_deref().unwrap_or_default())
                        .context("the --token-env variable is not set")?;
                    let old = match std::fs::read(dir.join("latest.note")) {
                        Ok(note) => checkpoint_size_unverified(&note)?,
                        Err(_) => 0,
                    };
                    let target = format!("{}/ledger/consistency?old={old}", url.trim_end_matches('/'));
                    let (status, body) = crate::fetch::get(&target, &token, ca_cert.as_deref())?;
                    if status != 200 {
                        anyhow::bail!("{target} answered {status}: {}", String::from_utf8_lossy(&body));
                    }
                    serde_json::from_slice(&body).context("the server's consistency document is not JSON")?
                }
                None => {
                    let package_path = package.unwrap_or_else(|| dir.join("incoming.json"));
                    serde_json::from_slice(&std::fs::read(&package_path).with_context(|| {
                        format!(
                            "cannot read {} (write it with `medvault ledger export --witness-dir`)",
                            package_path.display()
                        )
                    })?)?
                }
            };
            let new_note = document["new_checkpoint"].as_str().context("the package has no new_checkpoint")?;
            let new = medvault_ledger::open_checkpoint(new_note.as_bytes(), &log_key, &[])
                .map_err(|e| anyhow::anyhow!("the new checkpoint is not signed by the log: {e}"))?
                .checkpoint;
            let (old_size, old_root) = match std::fs::read(dir.join("latest.note")) {
                Ok(note) => {
                    let old = medvault_ledger::open_checkpoint(&note, &log_key, &[])
                        .map_err(|e| anyhow::anyhow!("the witness's own latest.note does not verify: {e}"))?
                        .checkpoint;
                    (old.size(), *old.root())
                }
                Err(_) => (0, medvault_ledger::EMPTY_ROOT),
            };
            if new.size() < old_size {
                anyhow::bail!(
                    "ROLLBACK: the log offers size {} but this witness already cosigned size {old_size}",
                    new.size()
                );
            }
            if document["old_size"].as_u64() != Some(old_size) {
                anyhow::bail!(
                    "the package proves from size {} but this witness holds size {old_size}",
                    document["old_size"]
                );
            }
            let proof = hashes(&document["proof"])?;
            medvault_ledger::verify_consistency(old_size, new.size(), &old_root, new.root(), &proof).map_err(|e| {
                anyhow::anyhow!("FORK or rewrite: the new checkpoint is not consistent with size {old_size}: {e}")
            })?;
            let name = std::fs::read_to_string(dir.join("witness.name"))?.trim().to_string();
            let seed_text = zeroize::Zeroizing::new(std::fs::read_to_string(dir.join("witness.key"))?);
            let seed = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(seed_text.trim())
                    .context("witness.key is not base64")?,
            );
            let seed: [u8; 32] = seed.as_slice().try_into().context("witness.key is not 32 bytes")?;
            let key = medvault_ledger::SigningKey::from_seed(&seed).map_err(|e| anyhow::anyhow!("{e}"))?;
            let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let cosigned = medvault_ledger::cosign(new_note, &name, &key, now_s).map_err(|e| anyhow::anyhow!("{e}"))?;
            std::fs::create_dir_all(dir.join("checkpoints"))?;
            std::fs::write(dir.join("checkpoints").join(format!("{}.note", new.size())), &cosigned)?;
            std::fs::write(dir.join("latest.note"), &cosigned)?;
            println!("cosigned tree size {} (consistent with the {old_size} leaves witnessed before)", new.size());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn consistency_document(store: &medvault_store::Store, old: u64) -> anyhow::Result<Value> {
    Ok(store.consistency_document(old, None)?)
}

/// Verifies an inclusion or consistency proof document offline.
pub fn verify_proof_document(document: &Value, log_key: &Verifier) -> anyhow::Result<String> {
    let open = |field: &str| -> anyhow::Result<medvault_ledger::Checkpoint> {
        let note = document[field].as_str().with_context(|| format!("the proof has no {field}"))?;
        Ok(medvault_ledger::open_checkpoint(note.as_bytes(), log_key, &[])
            .map_err(|e| anyhow::anyhow!("{field} is not signed by the log key: {e}"))?
            .checkpoint)
    };
    let proof = hashes(&document["proof"])?;
    match document["type"].as_str() {
        Some("inclusion") => {
            let checkpoint = open("checkpoint")?;
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(document["leaf"].as_str().context("the proof has no leaf")?)
                .context("the leaf is not base64")?;
            let data =
                medvault_ledger::LeafData::decode(&leaf).map_err(|e| anyhow::anyhow!("the leaf is malformed: {e}"))?;
            let index = document["leaf_index"].as_u64().context("the proof has no leaf_index")?;
            if document["tree_size"].as_u64() != Some(checkpoint.size()) {
                anyhow::bail!("tree_size differs from the checkpoint's size");
            }
            medvault_ledger::verify_inclusion(&data.leaf_hash(), index, checkpoint.size(), &proof, checkpoint.root())
                .map_err(|e| anyhow::anyhow!("the proof does not include the leaf: {e}"))?;
            Ok(format!(
                "{}/{} version {} (recorded {}, by {}) is leaf {index} of the log at size {}",
                data.resource_type(),
                data.resource_id(),
                data.version(),
                medvault_base::time::format_instant(data.recorded_ms()),
                data.author(),
                checkpoint.size()
            ))
        }
        Some("consistency") => {
            let new = open("new_checkpoint")?;
            let old_size = document["old_size"].as_u64().context("the proof has no old_size")?;
            let old_root = if old_size == 0 { medvault_ledger::EMPTY_ROOT } else { *open("old_checkpoint")?.root() };
            medvault_ledger::verify_consistency(old_size, new.size(), &old_root, new.root(), &proof)
                .map_err(|e| anyhow::anyhow!("the log at size {} does not extend size {old_size}: {e}", new.size()))?;
            Ok(format!("the log at size {} extends the log at size {old_size}", new.size()))
        }
        _ => anyhow::bail!("the proof's type must be inclusion or consistency"),
    }
}

fn hashes(value: &Value) -> anyhow::Result<Vec<Hash>> {
    value
        .as_array()
        .context("proof must be an array of base64 hashes")?
        .iter()
        .map(|item| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(item.as_str().context("a proof hash is not a string")?)
                .context("a proof hash is not base64")?;
            bytes.as_slice().try_into().context("a proof hash is not 32 bytes")
        })
        .collect()
}

fn checkpoint_size_unverified(note: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(note).context("latest.note is not UTF-8")?;
    let body_end = text.find("\n\n").map_or(text.len(), |i| i + 1);
    Ok(medvault_ledger::Checkpoint::parse_body(&text[..body_end]).map_err(|e| anyhow::anyhow!("{e}"))?.size())
}

fn parse_vkey(text: &str) -> anyhow::Result<Verifier> {
    Verifier::parse(text.trim()).map_err(|e| anyhow::anyhow!("'{}' is not a verifier key: {e}", text.trim()))
}

fn write_output(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display())),
        None => {
            use std::io::Write;
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    Ok(())
}
