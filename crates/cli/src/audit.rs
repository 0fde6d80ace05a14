//! `medvault audit …`: the incident tools over the audit trail. They read the store
//! directly (the operator holds the master key), and are audited themselves.
//!
//! - `breach`: for a compromised account and a time window, exactly which patients and
//!   records it read or changed — the list a GDPR Article 33 notification (72 hours) or a
//!   health-CERT declaration needs; as a table and as JSON.
//! - `timeline`: every record of a time window as AuditEvent JSON lines, or as RFC 5424
//!   syslog lines for a SIEM.
//! - `patient`: who accessed one patient's record.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use medvault_audit::{AuditRecord, EventKind, Outcome, ServerIdentity};
use medvault_store::Store;

use crate::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// What one account read or changed in a time window: patients, records, counts.
    Breach {
        #[command(flatten)]
        store: StoreArgs,
        /// The user or service client name.
        #[arg(long)]
        user: String,
        /// Start of the window, e.g. 2026-11-01T00:00:00Z.
        #[arg(long)]
        since: String,
        /// End of the window (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every audit record of a time window, oldest first (a forensic timeline, or a SIEM feed).
    Timeline {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// jsonl (FHIR AuditEvents, one a line) or syslog (RFC 5424, as IHE ATNA expects).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Mark a patient as a canary (bait): any access to it raises an alert. `--remove` unmarks.
    Canary {
        #[command(flatten)]
        store: StoreArgs,
        /// Patient/<id>
        #[arg(long)]
        patient: String,
        #[arg(long)]
        remove: bool,
    },
    /// Who accessed a patient's record, newest first.
    Patient {
        #[command(flatten)]
        store: StoreArgs,
        /// Patient/<id>
        #[arg(long)]
        patient: String,
        #[arg(long)]
        json: bool,
    },
}

fn instant(text: &str, what: &str) -> anyhow::Result<i64> {
    medvault_base::time::parse_instant(text)
        .with_context(|| format!("{what} '{text}' is not an instant such as 2026-11-01T00:00:00Z"))
}

/// Every record of `[since, until)`, oldest first.
fn records_between(store: &Store, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<(u64, u32, AuditRecord)>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let blocks = store.audit_blocks(since_ms, until_ms, after, 256)?;
        let Some(last) = blocks.last() else { break };
        after = Some(last.seq);
        for block in &blocks {
            for (slot, bytes) in store.open_audit_block(block)?.iter().enumerate() {
                let record = medvault_audit::decode(bytes)
                    .map_err(|e| anyhow::anyhow!("audit block {} record {slot} does not decode: {e}", block.seq))?;
                if record.recorded_ms >= since_ms && record.recorded_ms < until_ms {
                    out.push((block.seq, u32::try_from(slot).unwrap_or(u32::MAX), record));
                }
            }
        }
    }
    Ok(out)
}

/// Audits the use of an incident tool (it reads records that name patients).
fn audit_tool_use(store: &Store, what: &str) -> anyhow::Result<()> {
    medvault_server::audit::account_change(store, "console", "operator", EventKind::Export, "audit-trail", what)
        .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))
}

pub fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Breach { store, user, since, until, json } => {
            let since_ms = instant(&since, "--since")?;
            let store = store.open()?;
            let until_ms =
                until.as_deref().map(|u| instant(u, "--until")).transpose()?.unwrap_or(store.clock().now_ms() + 1);
            audit_tool_use(&store, &format!("breach-scope user={user}"))?;
            let report = breach(&store, &user, since_ms, until_ms)?;
            store.close();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_breach(&report);
            }
        }
        AuditCommand::Timeline { store, since, until, format, out } => {
            if !matches!(format.as_str(), "jsonl" | "syslog") {
                anyhow::bail!("--format is jsonl or syslog");
            }
            let since_ms = instant(&since, "--since")?;
            let store = store.open()?;
            let until_ms =
                until.as_deref().map(|u| instant(u, "--until")).transpose()?.unwrap_or(store.clock().now_ms() + 1);
            audit_tool_use(&store, &format!("timeline {since}"))?;
            let records = records_between(&store, since_ms, until_ms)?;
            store.close();
            let identity = ServerIdentity { name: "medvault".into(), site: None };
            let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "medvault".into());
            let mut writer: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            for (block, slot, record) in &records {
                let event = medvault_audit::to_audit_event(record, &format!("{block}-{slot}"), &identity);
                let line = if format == "jsonl" {
                    medvault_audit::json_line(&event)
                } else {
                    format!("{}\n", medvault_audit::syslog_rfc5424(record, &event, &hostname, "medvault"))
                };
                writer.write_all(line.as_bytes())?;
            }
            writer.flush()?;
            eprintln!("{} audit records", records.len());
        }
        AuditCommand::Canary { store, patient, remove } => {
            let id = patient.strip_prefix("Patient/").unwrap_or(&patient).to_string();
            if !medvault_fhir::is_valid_id(&id) {
                anyhow::bail!("'{patient}' is not Patient/<id>");
            }
            let store = store.open()?;
            let changed = store.set_canary(&id, !remove)?;
            medvault_server::audit::account_change(
                &store,
                "console",
                "operator",
                EventKind::Configuration,
                &format!("Patient/{id}"),
                if remove { "canary-removed" } else { "canary-set" },
            )
            .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            store.close();
            match (remove, changed) {
                (false, true) => {
                    println!("Patient/{id} is a canary: any access raises an alert (within 5 s on a running server)")
                }
                (false, false) => println!("Patient/{id} was already a canary"),
                (true, true) => println!("Patient/{id} is no longer a canary"),
                (true, false) => anyhow::bail!("Patient/{id} was not a canary"),
            }
        }
        AuditCommand::Patient { store, patient, json } => {
            let id = patient.strip_prefix("Patient/").unwrap_or(&patient).to_string();
            if !medvault_fhir::is_valid_id(&id) {
                anyhow::bail!("'{patient}' is not Patient/<id>");
            }
            let store = store.open()?;
            audit_tool_use(&store, "patient-access-report")?;
            let mut rows = Vec::new();
            let mut cursor = None;
            loop {
                let slots = store.audit_slots_of_patient(&id, i64::MIN, i64::MAX, cursor, 500)?;
                let Some(last) = slots.last() else { break };
                cursor = Some(*last);
                for stored in store.audit_records_at(&slots)? {
                    rows.push(medvault_audit::decode(&stored.record).map_err(|e| anyhow::anyhow!("{e}"))?);
                }
                if slots.len() < 500 {
                    break;
                }
            }
            store.close();
            if json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({"when": medvault_base::time::format_instant(r.recorded_ms), "who": r.agent.name,
                            "role": r.agent.role, "what": r.kind.name(), "why": r.agent.purpose_of_use, "outcome": r.outcome.fhir_code()})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"patient": format!("Patient/{id}"), "accesses": items})
                    )?
                );
            } else {
                println!("{:<26} {:<24} {:<12} {:<18} {:<8} outcome", "when", "who", "role", "what", "why");
                for r in &rows {
                    println!(
                        "{:<26} {:<24} {:<12} {:<18} {:<8} {}",
                        medvault_base::time::format_instant(r.recorded_ms),
                        r.agent.name,
                        r.agent.role,
                        r.kind.name(),
                        r.agent.purpose_of_use.as_deref().unwrap_or("-"),
                        r.outcome.fhir_code()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The breach report of one account over a window.
fn breach(store: &Store, user: &str, since_ms: i64, until_ms: i64) -> anyhow::Result<serde_json::Value> {
    #[derive(Default)]
    struct PerPatient {
        read: u64,
        changed: u64,
        first_ms: i64,
        last_ms: i64,
        records: std::collections::BTreeSet<String>,
    }
    let mut patients: BTreeMap<String, PerPatient> = BTreeMap::new();
    let (mut records_read, mut records_changed) =
        (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut logins: Vec<serde_json::Value> = Vec::new();
    for (_, _, record) in records_between(store, since_ms, until_ms)? {
        if record.agent.name != user {
            continue;
        }
        if matches!(record.kind, EventKind::Login | EventKind::LoginFailure | EventKind::BreakGlass) {
            logins.push(serde_json::json!({"when": medvault_base::time::format_instant(record.recorded_ms),
                "what": record.kind.name(), "address": record.agent.address, "outcome": record.outcome.fhir_code()}));
        }
        if !record.kind.is_clinical_access() || record.outcome != Outcome::Success {
            continue;
        }
        let changed = matches!(record.kind, EventKind::Create | EventKind::Update | EventKind::Delete);
        for entity in &record.entities {
            if changed {
                records_changed.insert(entity.clone());
            } else {
                records_read.insert(entity.clone());
            }
        }
        for patient in &record.patients {
            let entry = patients
                .entry(patient.clone())
                .or_insert_with(|| PerPatient { first_ms: record.recorded_ms, ..PerPatient::default() });
            if changed {
                entry.changed += 1;
            } else {
                entry.read += 1;
            }
            entry.first_ms = entry.first_ms.min(record.recorded_ms);
            entry.last_ms = entry.last_ms.max(record.recorded_ms);
            entry.records.extend(record.entities.iter().cloned());
        }
    }
    Ok(serde_json::json!({
        "user": user,
        "since": medvault_base::time::format_instant(since_ms),
        "until": medvault_base::time::format_instant(until_ms),
        "patients_count": patients.len(),
        "records_read_count": records_read.len(),
        "records_changed_count": records_changed.len(),
        "patients": patients.iter().map(|(id, p)| serde_json::json!({
            "patient": format!("Patient/{id}"),
            "reads": p.read,
            "changes": p.changed,
            "first": medvault_base::time::format_instant(p.first_ms),
            "last": medvault_base::time::format_instant(p.last_ms),
            "records": p.records,
        })).collect::<Vec<_>>(),
        "records_changed": records_changed,
        "logins": logins,
    }))
}

fn print_breach(report: &serde_json::Value) {
    println!(
        "Account {} from {} to {}: {} patients, {} records read, {} records changed",
        report["user"].as_str().unwrap_or(""),
        report["since"].as_str().unwrap_or(""),
        report["until"].as_str().unwrap_or(""),
        report["patients_count"],
        report["records_read_count"],
        report["records_changed_count"]
    );
    println!("{:<48} {:>7} {:>8} {:<26} last", "patient", "reads", "changes", "first");
    for patient in report["patients"].as_array().into_iter().flatten() {
        println!(
            "{:<48} {:>7} {:>8} {:<26} {}",
            patient["patient"].as_str().unwrap_or(""),
            patient["reads"],
            patient["changes"],
            patient["first"].as_str().unwrap_or(""),
            patient["last"].as_str().unwrap_or("")
        );
    }
    for login in report["logins"].as_array().into_iter().flatten() {
        println!(
            "  {} {} from {} (outcome {})",
            login["when"].as_str().unwrap_or(""),
            login["what"].as_str().unwrap_or(""),
            login["address"].as_str().unwrap_or("-"),
            login["outcome"].as_str().unwrap_or("")
        );
    }
}
