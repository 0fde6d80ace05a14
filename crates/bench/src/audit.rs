//! The audit trail's query speed: a store holding 1,000,000 audit records (written as reads
//! write them: sealed blocks, ledger leaves, the index by patient), then the first page
//! (50 records, newest first) of "who accessed this patient" for random patients, timed
//! in process (`medvault-bench --audit-only`); then what one read's audit record costs in
//! CPU, on the request's thread and in the writer, measured in process where other work on
//! the machine cannot move it much.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use medvault_audit::{Agent, AuditRecord, EventKind};
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::{AuditEntry, Store};

use crate::dataset::Xorshift64;

/// Records per `Store::audit` call: a busy server's group commit.
const RECORDS_PER_BLOCK: usize = 256;
const QUERIES: usize = 1_000;
/// Reads whose audit record is committed one by one, as the server commits them.
const READS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct AuditFigures {
    pub records: u64,
    pub patients: u64,
    pub build_s: f64,
    pub records_per_s: f64,
    /// Milliseconds of one first page by patient, sorted.
    pub query_ms: Vec<f64>,
    pub page_records: f64,
    /// CPU µs per read's audit record on the request's thread (`Auditor::commit_blocking`
    /// of one record: alert rules, encoding, the journal's sealed append).
    pub per_read_thread_us: f64,
    /// CPU µs per read's audit record in the rest of the process (the writer's moves into
    /// blocks, index and ledger, and the journal's syncs).
    pub per_read_writer_us: f64,
}

impl AuditFigures {
    fn percentile(&self, p: f64) -> f64 {
        let index = ((self.query_ms.len() as f64 - 1.0) * p).round() as usize;
        self.query_ms.get(index).copied().unwrap_or(f64::NAN)
    }

    pub fn table(&self) -> String {
        let p99 = self.percentile(0.99);
        format!(
            "audit trail ({} records about {} patients, in blocks of {RECORDS_PER_BLOCK})\n  \
             written at {} records/s in process ({:.1} s, not the request path)\n  \
             query by patient, first page   p50 {:.2} ms   p99 {:.2} ms   ({QUERIES} queries, {:.1} records a page)   target p99 ≤ 20 ms   {}\n",
            crate::report::thousands(self.records as f64),
            crate::report::thousands(self.patients as f64),
            crate::report::thousands(self.records_per_s),
            self.build_s,
            self.percentile(0.5),
            p99,
            self.page_records,
            if p99 <= 20.0 { "MET" } else { "MISSED" }
        ) + &format!(
            "  CPU per audited read          {:.2} µs on the request's thread + {:.2} µs in the writer ({} reads, one record each, in process)\n",
            self.per_read_thread_us,
            self.per_read_writer_us,
            crate::report::thousands(READS as f64),
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.records, "patients": self.patients, "build_s": self.build_s,
            "query_p50_ms": self.percentile(0.5), "query_p99_ms": self.percentile(0.99),
            "page_records": self.page_records,
            "per_read_thread_us": self.per_read_thread_us, "per_read_writer_us": self.per_read_writer_us,
        })
    }
}

pub fn run(records: u64, seed: u64) -> anyhow::Result<AuditFigures> {
    let directory = medvault_testkit::TempDir::new("bench-audit");
    let key_file = KeyFile { path: directory.path().join("master.key") };
    MasterKey::generate()?.create_key_file(&key_file.path)?;
    let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
    let store = Store::create(&directory.path().join("data"), &key_file, clock).context("store")?;
    // A patient is seen by about 100 records.
    let patients = (records / 100).max(1);
    let mut random = Xorshift64::new(seed, 7);
    crate::progress(format!("[audit] writing {records} audit records about {patients} patients"));
    let started = Instant::now();
    let mut written = 0u64;
    let start_ms = 1_767_225_600_000i64;
    while written < records {
        let batch = usize::try_from((records - written).min(RECORDS_PER_BLOCK as u64)).unwrap_or(RECORDS_PER_BLOCK);
        let mut records_batch = Vec::with_capacity(batch);
        for _ in 0..batch {
            let patient = format!("patient-{}", random.below(patients));
            let at_ms = start_ms + i64::try_from(written).unwrap_or(0) * 100;
            let agent = Agent {
                name: format!("clinician-{}", random.below(500)),
                role: "clinician".into(),
                user_id: Some(1),
                purpose_of_use: Some("TREAT".into()),
                address: Some("10.0.0.7".into()),
            };
            let mut record = AuditRecord::new(at_ms, EventKind::Read, agent, format!("req-{written}"));
            record.entities = vec![format!("Observation/{}/_history/1", random.uuid())];
            record.patients = vec![patient.clone()];
            let bytes = medvault_audit::encode(&record).map_err(|e| anyhow::anyhow!("{e}"))?;
            records_batch.push(AuditEntry { recorded_ms: at_ms, patients: vec![patient], record: bytes });
            written += 1;
        }
        store.audit(records_batch)?;
    }
    let build_s = started.elapsed().as_secs_f64();
    crate::progress(format!("[audit] {QUERIES} queries by patient, first page of 50"));
    let mut query_ms = Vec::with_capacity(QUERIES);
    let mut page_total = 0usize;
    for _ in 0..QUERIES {
        let patient = format!("patient-{}", random.below(patients));
        let started = Instant::now();
        let slots = store.audit_slots_of_patient(&patient, i64::MIN, i64::MAX, None, 50)?;
        let page = store.audit_records_at(&slots)?;
        let decoded: Vec<AuditRecord> = page
            .iter()
            .map(|r| medvault_audit::decode(&r.record))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        query_ms.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(decoded.iter().all(|r| r.patients == [patient.clone()]), "a record of another patient");
        page_total += decoded.len();
    }
    query_ms.sort_by(f64::total_cmp);

    crate::progress(format!("[audit] {READS} reads' audit records, one commit each"));
    let store = Arc::new(store);
    let auditor = medvault_server::audit::Auditor::new(store.clone());
    // Built beforehand: the server builds a read's record whether auditing is on or not.
    let reads: Vec<AuditRecord> = (0..READS)
        .map(|i| {
            let agent = Agent {
                name: "clinician-1".into(),
                role: "clinician".into(),
                user_id: Some(1),
                purpose_of_use: Some("TREAT".into()),
                address: Some("10.0.0.7".into()),
            };
            let at_ms = start_ms + i64::try_from(records).unwrap_or(0) * 100 + i64::try_from(i).unwrap_or(0);
            let mut record = AuditRecord::new(at_ms, EventKind::Read, agent, format!("req-read-{i}"));
            let patient = format!("patient-{}", random.below(patients));
            record.entities = vec![format!("Observation/{}/_history/1", random.uuid())];
            record.patients = vec![patient];
            record
        })
        .collect();
    store.settle_audit()?;
    let (process_started, thread_started) = (crate::cpu::process_s(), crate::cpu::thread_s());
    for record in reads {
        auditor.commit_blocking(vec![record]).map_err(|e| anyhow::anyhow!("audit: {e:?}"))?;
    }
    let thread_s = crate::cpu::thread_s().zip(thread_started).map(|(end, start)| end - start);
    store.settle_audit()?;
    let process_s = crate::cpu::process_s().zip(process_started).map(|(end, start)| end - start);
    let (thread_s, process_s) = (thread_s.unwrap_or(f64::NAN), process_s.unwrap_or(f64::NAN));
    store.close();
    Ok(AuditFigures {
        records,
        patients,
        build_s,
        records_per_s: records as f64 / build_s,
        query_ms,
        page_records: page_total as f64 / QUERIES as f64,
        per_read_thread_us: thread_s / READS as f64 * 1e6,
        per_read_writer_us: (process_s - thread_s) / READS as f64 * 1e6,
    })
}
