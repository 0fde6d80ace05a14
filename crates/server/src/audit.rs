//! The audit trail from the server's side: which record each request makes, and the rule
//! that an access whose record cannot be committed does not happen (503).
//!
//! - Reads (read, vread, history, search, the reads of a Bundle) make one record per
//!   request after the data is fetched; the response leaves only after that record is
//!   committed (`docs/format/audit.md`).
//! - Writes carry one record per written resource in their own commit.
//! - Refusals after authentication (403, failed writes) make a failure record.
//! - Security events (logins, lockouts, account and token changes, break-glass) make their
//!   own records through [`Auditor::security_event`].

use std::sync::{Arc, Mutex};

use medvault_audit::{Action, Agent, AlertEngine, AuditRecord, EventKind, Outcome};
use medvault_store::{AuditEntry, Store};

use crate::auth::{ClinicalAccess, Principal};
use crate::error::ApiError;

/// Makes and commits audit records; one per server.
/// The canary patients' compartment tokens, shared by the requests that check them.
type CanaryTokens = Arc<std::collections::HashSet<[u8; 32]>>;

pub struct Auditor {
    store: Arc<Store>,
    /// Benchmark only: records nothing (`danger-benchmark-unchecked`).
    disabled: bool,
    alerts: Mutex<AlertEngine>,
    /// Canary patients' compartment tokens, reloaded every `CANARY_RELOAD_MS`.
    canaries: Mutex<(CanaryTokens, Option<i64>)>,
    /// The latest alerts, for auditors (`GET /admin/alerts`), newest last.
    recent: Mutex<std::collections::VecDeque<medvault_audit::Alert>>,
    /// Where alerts are sent besides the log: a syslog receiver, over UDP or TLS.
    sink: Option<crate::alert_sink::AlertSink>,
    /// When set (`serve --lockdown-on-mass-modification`), a mass-modification alert puts
    /// the server in read-only lockdown until an administrator lifts it.
    lockdown_enabled: bool,
    lockdown: std::sync::atomic::AtomicBool,
}

/// How often the canary list is re-read from the store (the command line changes it).
pub const CANARY_RELOAD_MS: u64 = 5_000;
/// Alerts kept in memory for `GET /admin/alerts`.
pub const RECENT_ALERTS_MAX: usize = 1_000;

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("disabled", &self.disabled).finish_non_exhaustive()
    }
}

impl Auditor {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            disabled: false,
            alerts: Mutex::new(AlertEngine::new(medvault_audit::AlertPolicy::DEFAULT)),
            canaries: Mutex::new((Arc::default(), None)),
            recent: Mutex::new(std::collections::VecDeque::new()),
            sink: None,
            lockdown_enabled: false,
            lockdown: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Mass modification puts the server in read-only lockdown.
    pub fn with_lockdown(mut self) -> Self {
        self.lockdown_enabled = true;
        self
    }

    /// Whether writes are refused (lockdown).
    pub fn locked_down(&self) -> bool {
        self.lockdown.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lifts a lockdown (an administrator); audited by the caller.
    pub fn lift_lockdown(&self) -> bool {
        self.lockdown.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Also sends every alert as an RFC 5424 message to `sink` (a SIEM's syslog receiver).
    pub fn with_syslog(mut self, sink: crate::alert_sink::AlertSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The latest alerts, oldest first.
    pub fn recent_alerts(&self) -> Vec<medvault_audit::Alert> {
        self.recent.lock().map(|recent| recent.iter().cloned().collect()).unwrap_or_default()
    }

    /// An auditor that records nothing, so a benchmark can measure what auditing costs.
    #[cfg(feature = "danger-benchmark-unchecked")]
    pub fn danger_disabled_for_benchmark(store: Arc<Store>) -> Self {
        Self { disabled: true, ..Self::new(store) }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Commits records and waits (blocking threads, the command line). A failure is 503:
    /// the access it records must not be answered.
    pub fn commit_blocking(&self, records: Vec<AuditRecord>) -> Result<(), ApiError> {
        if self.disabled || records.is_empty() {
            return Ok(());
        }
        self.observe(&records);
        let entries = entries(records)?;
        self.store.audit(entries).map(|_| ()).map_err(audit_unavailable)
    }

    /// Commits records without blocking the async worker; resolves when they are committed.
    pub async fn commit(&self, records: Vec<AuditRecord>) -> Result<(), ApiError> {
        if self.disabled || records.is_empty() {
            return Ok(());
        }
        self.observe(&records);
        let entries = entries(records)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.store
            .stage_audit(
                entries,
                Box::new(move |result| {
                    let _ = sender.send(result);
                }),
            )
            .map_err(audit_unavailable)?;
        // Group commit: the worker's other ready requests stage their records too, then the
        // first of them to run again commits them all with one `write` to the journal.
        tokio::task::yield_now().await;
        self.store.write_staged_audit();
        match receiver.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(audit_unavailable(error)),
            Err(_) => Err(audit_unavailable(medvault_store::StoreError::Closed)),
        }
    }

    /// Runs the alert rules over records already committed with their writes.
    pub fn observe_committed(&self, records: &[AuditRecord]) {
        if !self.disabled && !records.is_empty() {
            self.observe(records);
        }
    }

    /// Records a security event; a failure is logged (the event already happened).
    pub fn security_event(&self, record: AuditRecord) {
        if let Err(error) = self.commit_blocking(vec![record]) {
            tracing::error!(target: "medvault::security", diagnostics = %error.issues.first().map(|i| i.diagnostics.as_str()).unwrap_or(""), "a security event could not be audited");
        }
    }

    /// Runs the alert rules over committed-to-be records; alerts go to the log, to the
    /// syslog target if one is set, and to the recent list auditors read.
    fn observe(&self, records: &[AuditRecord]) {
        let canaries = self.canaries();
        let is_canary =
            |patient: &str| !canaries.is_empty() && canaries.contains(&self.store.compartment_token(patient));
        let alerts: Vec<medvault_audit::Alert> = {
            let Ok(mut engine) = self.alerts.lock() else { return };
            records.iter().flat_map(|record| engine.observe(record, &is_canary)).collect()
        };
        for alert in alerts {
            if self.lockdown_enabled
                && alert.kind == medvault_audit::AlertKind::MassModification
                && !self.lockdown.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::error!(target: "medvault::alert", agent = %alert.agent, "LOCKDOWN: mass modification; writes are refused until an administrator lifts it");
                let agent = Agent {
                    name: "medvault".into(),
                    role: "server".into(),
                    user_id: None,
                    purpose_of_use: None,
                    address: None,
                };
                let mut record = AuditRecord::new(alert.at_ms, EventKind::Lockdown, agent, "lockdown");
                record.detail = Some(format!("mass-modification by {}", alert.agent));
                if let Ok(entries) = entries(vec![record]) {
                    if let Err(error) = self.store.audit(entries) {
                        tracing::error!(%error, "the lockdown could not be audited");
                    }
                }
            }
            tracing::warn!(
                target: "medvault::alert",
                alert = alert.kind.name(),
                agent = %alert.agent,
                detail = %alert.detail,
                "audit alert"
            );
            if let Some(sink) = &self.sink {
                sink.send(&medvault_audit::syslog_alert(&alert, "medvault", "medvault"));
            }
            if let Ok(mut recent) = self.recent.lock() {
                if recent.len() >= RECENT_ALERTS_MAX {
                    recent.pop_front();
                }
                recent.push_back(alert);
            }
        }
    }

    /// The canary tokens, re-read from the store at most every `CANARY_RELOAD_MS`.
    fn canaries(&self) -> CanaryTokens {
        let Ok(mut canaries) = self.canaries.lock() else { return Default::default() };
        let now_ms = self.store.clock().now_ms();
        let reload_ms = i64::try_from(CANARY_RELOAD_MS).unwrap_or(i64::MAX);
        let stale = canaries.1.is_none_or(|at| now_ms.saturating_sub(at) >= reload_ms);
        if stale {
            match self.store.canary_tokens() {
                Ok(tokens) => *canaries = (Arc::new(tokens), Some(now_ms)),
                Err(error) => tracing::error!(%error, "the canary list could not be read"),
            }
        }
        canaries.0.clone()
    }
}

/// Encodes records into what the store commits.
pub fn entries(records: Vec<AuditRecord>) -> Result<Vec<AuditEntry>, ApiError> {
    records
        .into_iter()
        .map(|mut record| {
            record.truncate_to_limits();
            let bytes = medvault_audit::encode(&record)
                .map_err(|e| ApiError::internal(format!("an audit record does not encode: {e}")))?;
            Ok(AuditEntry {
                recorded_ms: record.recorded_ms,
                patients: std::mem::take(&mut record.patients),
                record: bytes,
            })
        })
        .collect()
}

fn audit_unavailable(error: medvault_store::StoreError) -> ApiError {
    ApiError {
        internal: Some(format!("audit: {error}")),
        ..ApiError::new(503, "transient", "the access could not be audited, so it was not carried out; try again")
    }
}

/// The agent of a principal at an address.
pub fn agent(principal: &Principal, address: Option<&str>, break_glass: bool) -> Agent {
    let purpose = match principal.role {
        crate::auth::Role::Clinician if break_glass => Some("BTG".to_string()),
        crate::auth::Role::Clinician => Some("TREAT".to_string()),
        crate::auth::Role::Patient => Some("PATRQT".to_string()),
        _ => None,
    };
    Agent {
        name: principal.client.clone(),
        role: principal.role.name().to_string(),
        user_id: principal.user_id,
        purpose_of_use: purpose,
        address: address.map(str::to_string),
    }
}

/// The outcome of an HTTP status.
pub fn outcome_of(status: u16) -> Outcome {
    match status {
        200..=399 => Outcome::Success,
        400..=499 => Outcome::MinorFailure,
        _ => Outcome::SeriousFailure,
    }
}

/// The record of a request's reads: what it touched, how it ended.
pub fn read_record(
    access: &ClinicalAccess,
    kind: EventKind,
    status: u16,
    query: Option<String>,
    now_ms: i64,
) -> AuditRecord {
    let (touched, break_glass) = access.touched();
    let request = access.request();
    let mut record = AuditRecord::new(
        now_ms,
        kind,
        agent(access.principal(), request.address.as_deref(), break_glass),
        &request.request_id,
    );
    record.outcome = outcome_of(status);
    record.query = query;
    let mut patients: Vec<String> = touched.iter().filter_map(|(_, patient)| patient.clone()).collect();
    patients.sort();
    patients.dedup();
    record.patients = patients;
    record.entities = touched.into_iter().map(|(entity, _)| entity).collect();
    record
}

/// The record of one write.
pub fn write_record(
    access: &ClinicalAccess,
    kind: EventKind,
    entity: String,
    patients: Vec<String>,
    now_ms: i64,
) -> AuditRecord {
    let request = access.request();
    let mut record = AuditRecord::new(
        now_ms,
        kind,
        agent(access.principal(), request.address.as_deref(), false),
        &request.request_id,
    );
    record.action = match kind {
        EventKind::Create => Action::Create,
        EventKind::Delete => Action::Delete,
        _ => Action::Update,
    };
    record.entities = vec![entity];
    record.patients = patients;
    record
}

/// The patient a stored record belongs to (`None`: shared data). A Patient is its own;
/// otherwise the compartment owner its body names.
pub fn patient_of(resource_type: &str, id: &str, json: &[u8], compartment: Option<&[u8; 32]>) -> Option<String> {
    compartment?;
    if resource_type == "Patient" {
        return Some(id.to_string());
    }
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    medvault_fhir::patient_compartment_owner(&value)
}

/// Audits an account or key change made by someone (an administrator over HTTP, or the
/// operator at the console); fails if the record cannot be committed.
pub fn account_change(
    store: &Store,
    by: &str,
    by_role: &str,
    kind: EventKind,
    target: &str,
    detail: &str,
) -> Result<(), ApiError> {
    let agent =
        Agent { name: by.to_string(), role: by_role.to_string(), user_id: None, purpose_of_use: None, address: None };
    let mut record = AuditRecord::new(store.clock().now_ms(), kind, agent, "account");
    record.entities = vec![format!("user:{target}")];
    record.detail = Some(detail.to_string());
    store.audit(entries(vec![record])?).map(|_| ()).map_err(audit_unavailable)
}
