//! Search over sealed data (`medvault-bench --search-only`): a store of `--search-resources`
//! resources (default 1,000,000: patients with about 99 Observations each, one code on
//! exactly 100,000 of them), built twice — with the keyed-token index, and with the
//! benchmark-only plaintext index (`bench-plaintext-index`) — then, on each, timed in
//! process through `Service::search` (parse, plan, index, decrypt and check every returned
//! resource, build the Bundle):
//!
//! - a token search for one code, first page of 20 (target p50 ≤ 5 ms);
//! - a patient by identifier (target p50 ≤ 2 ms);
//! - a date range on one patient's Observations (target p50 ≤ 5 ms);
//! - the count of the code with 100,000 matches (`_summary=count`);
//! - searches per second at 32 concurrent clients (the three searches above, mixed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_fhir::search::Handling;
use medvault_server::auth::ClinicalAccess;
use medvault_server::search::SearchRequest;
use medvault_server::Service;
use medvault_store::{Store, Write, WriteAction};
use serde_json::{json, Value};

use crate::dataset::Xorshift64;

/// Observations per patient (so a million resources hold 10,000 patients).
const OBSERVATIONS_PER_PATIENT: usize = 99;
/// The code of exactly `HOT_CODE_MATCHES` Observations.
const HOT_CODE: &str = "2339-0";
const HOT_CODE_MATCHES: usize = 100_000;
/// The other codes, spread evenly over the remaining Observations.
const CODES: [&str; 12] = [
    "718-7", "4548-4", "2093-3", "2085-9", "8867-4", "8480-6", "8462-4", "29463-7", "8302-2", "2160-0", "6690-2",
    "789-8",
];
/// Resources per committed write (one transaction).
const WRITE_CHUNK: usize = 500;
const QUERIES: usize = 500;
const CLIENTS: usize = 32;
const THROUGHPUT_S: u64 = 10;
/// 2020-01-01T00:00:00Z: Observations spread over five years from here.
const START_MS: i64 = 1_577_836_800_000;
const SPAN_MS: i64 = 5 * 365 * 86_400_000;

/// The figures of one index variant.
#[derive(Debug, Clone, Default)]
pub struct ModeFigures {
    pub build_s: f64,
    pub database_bytes: u64,
    /// Sorted milliseconds per query.
    pub token_ms: Vec<f64>,
    pub identifier_ms: Vec<f64>,
    pub date_range_ms: Vec<f64>,
    pub count_ms: Vec<f64>,
    pub searches_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct SearchFigures {
    pub resources: usize,
    pub patients: usize,
    pub keyed: ModeFigures,
    pub plaintext: ModeFigures,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

impl SearchFigures {
    pub fn table(&self) -> String {
        let mut out = format!(
            "search ({} resources: {} patients, {} Observations; in process through Service::search)\n",
            crate::report::thousands(self.resources as f64),
            crate::report::thousands(self.patients as f64),
            crate::report::thousands((self.resources - self.patients) as f64),
        );
        out.push_str(&format!("  {:<44} {:>12} {:>12} {:>8}   target\n", "", "keyed tokens", "plaintext", "ratio"));
        let row = |name: &str, keyed: f64, plain: f64, unit: &str, target: Option<f64>| {
            let verdict = match target {
                Some(target) if keyed <= target => format!("≤ {target} {unit}  MET"),
                Some(target) => format!("≤ {target} {unit}  MISSED"),
                None => String::new(),
            };
            format!("  {name:<44} {keyed:>9.2} {unit:<2} {plain:>9.2} {unit:<2} {:>7.2}×   {verdict}\n", keyed / plain)
        };
        let (k, p) = (&self.keyed, &self.plaintext);
        out.push_str(&row(
            "token search, one code, first page, p50",
            percentile(&k.token_ms, 0.5),
            percentile(&p.token_ms, 0.5),
            "ms",
            Some(5.0),
        ));
        out.push_str(&row("  p99", percentile(&k.token_ms, 0.99), percentile(&p.token_ms, 0.99), "ms", None));
        out.push_str(&row(
            "patient by identifier, p50",
            percentile(&k.identifier_ms, 0.5),
            percentile(&p.identifier_ms, 0.5),
            "ms",
            Some(2.0),
        ));
        out.push_str(&row("  p99", percentile(&k.identifier_ms, 0.99), percentile(&p.identifier_ms, 0.99), "ms", None));
        out.push_str(&row(
            "one patient's Observations in a year, p50",
            percentile(&k.date_range_ms, 0.5),
            percentile(&p.date_range_ms, 0.5),
            "ms",
            Some(5.0),
        ));
        out.push_str(&row("  p99", percentile(&k.date_range_ms, 0.99), percentile(&p.date_range_ms, 0.99), "ms", None));
        out.push_str(&row(
            &format!("count of a code with {} matches, p50", crate::report::thousands(HOT_CODE_MATCHES as f64)),
            percentile(&k.count_ms, 0.5),
            percentile(&p.count_ms, 0.5),
            "ms",
            None,
        ));
        out.push_str(&format!(
            "  {:<44} {:>9.0} /s {:>9.0} /s {:>7.2}×\n",
            format!("searches at {CLIENTS} clients (mixed)"),
            k.searches_per_s,
            p.searches_per_s,
            k.searches_per_s / p.searches_per_s
        ));
        out.push_str(&format!(
            "  {:<44} {:>9.0} s  {:>9.0} s  {:>7.2}×\n",
            "build (write every resource with its index)",
            k.build_s,
            p.build_s,
            k.build_s / p.build_s
        ));
        out.push_str(&format!(
            "  {:<44} {:>9.0} MB {:>9.0} MB {:>7.2}×\n",
            "data directory",
            k.database_bytes as f64 / 1e6,
            p.database_bytes as f64 / 1e6,
            k.database_bytes as f64 / p.database_bytes as f64
        ));
        out
    }

    pub fn to_json(&self) -> Value {
        let mode = |m: &ModeFigures| {
            json!({
                "build_s": m.build_s, "database_bytes": m.database_bytes,
                "token_first_page_p50_ms": percentile(&m.token_ms, 0.5), "token_first_page_p99_ms": percentile(&m.token_ms, 0.99),
                "identifier_p50_ms": percentile(&m.identifier_ms, 0.5), "identifier_p99_ms": percentile(&m.identifier_ms, 0.99),
                "date_range_p50_ms": percentile(&m.date_range_ms, 0.5), "date_range_p99_ms": percentile(&m.date_range_ms, 0.99),
                "count_p50_ms": percentile(&m.count_ms, 0.5), "searches_per_s": m.searches_per_s,
            })
        };
        json!({"resources": self.resources, "patients": self.patients,
            "keyed": mode(&self.keyed), "plaintext": mode(&self.plaintext)})
    }
}

pub fn run(resources: usize, seed: u64) -> anyhow::Result<SearchFigures> {
    let patients = (resources / (OBSERVATIONS_PER_PATIENT + 1)).max(1);
    anyhow::ensure!(
        patients * OBSERVATIONS_PER_PATIENT > HOT_CODE_MATCHES * 2,
        "--search-resources must be at least {} so that one code can have {HOT_CODE_MATCHES} matches",
        HOT_CODE_MATCHES * 2 * (OBSERVATIONS_PER_PATIENT + 1) / OBSERVATIONS_PER_PATIENT
    );
    let keyed = run_mode(patients, seed, false)?;
    let plaintext = run_mode(patients, seed, true)?;
    Ok(SearchFigures { resources: patients * (OBSERVATIONS_PER_PATIENT + 1), patients, keyed, plaintext })
}

fn run_mode(patients: usize, seed: u64, plaintext: bool) -> anyhow::Result<ModeFigures> {
    let label = if plaintext { "plaintext index" } else { "keyed tokens" };
    let directory = medvault_testkit::TempDir::new("bench-search");
    let key_file = KeyFile { path: directory.path().join("master.key") };
    MasterKey::generate()?.create_key_file(&key_file.path)?;
    let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
    let data = directory.path().join("data");
    Store::create(&data, &key_file, clock.clone()).context("store")?.close();
    let store = if plaintext {
        Store::danger_open_with_plaintext_index_for_benchmark(&data, &key_file, clock)?
    } else {
        Store::open(&data, &key_file, clock)?
    };
    let store = Arc::new(store);
    crate::progress(format!(
        "[search, {label}] writing {} patients and {} Observations",
        crate::report::thousands(patients as f64),
        crate::report::thousands((patients * OBSERVATIONS_PER_PATIENT) as f64)
    ));
    let started = Instant::now();
    build(&store, patients, seed)?;
    let build_s = started.elapsed().as_secs_f64();
    crate::progress(format!("[search, {label}] built in {build_s:.0} s; timing queries"));
    let service = Service::new(store.clone());
    let mut random = Xorshift64::new(seed, 99);
    let mut figures = ModeFigures { build_s, ..ModeFigures::default() };
    let mut time =
        |query: &dyn Fn(&mut Xorshift64) -> String, check: &dyn Fn(&Value) -> bool| -> anyhow::Result<Vec<f64>> {
            let mut times = Vec::with_capacity(QUERIES);
            for _ in 0..QUERIES {
                let text = query(&mut random);
                let started = Instant::now();
                let bundle = search(&service, &text)?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(check(&bundle), "{text}: unexpected answer {bundle}");
            }
            times.sort_by(f64::total_cmp);
            Ok(times)
        };
    let first_page = |bundle: &Value| bundle["entry"].as_array().is_some_and(|e| e.len() == 20);
    figures.token_ms = time(&|r| token_query(r), &first_page)?;
    figures.identifier_ms =
        time(&|r| identifier_query(r, patients), &|b| b["entry"].as_array().is_some_and(|e| e.len() == 1))?;
    figures.date_range_ms =
        time(&|r| date_query(r, patients), &|b| b["entry"].as_array().is_some_and(|e| !e.is_empty()))?;
    let count_query = format!("Observation?code=http://loinc.org|{HOT_CODE}&_summary=count");
    let mut counts = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = Instant::now();
        let bundle = search(&service, &count_query)?;
        counts.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(bundle["total"] == HOT_CODE_MATCHES, "the count is {}", bundle["total"]);
    }
    counts.sort_by(f64::total_cmp);
    figures.count_ms = counts;
    crate::progress(format!("[search, {label}] {CLIENTS} clients for {THROUGHPUT_S} s"));
    figures.searches_per_s = throughput(&service, patients, seed)?;
    store.close();
    figures.database_bytes = directory_bytes(&data);
    Ok(figures)
}

fn search(service: &Service, text: &str) -> anyhow::Result<Value> {
    let (resource_type, query) = text.split_once('?').context("a query")?;
    let pairs: Vec<(String, String)> =
        query.split('&').filter_map(|pair| pair.split_once('=').map(|(n, v)| (n.to_string(), v.to_string()))).collect();
    let access = ClinicalAccess::local_operator("bench-search");
    let request = SearchRequest { base: "http://bench/fhir", resource_type, pairs: &pairs, handling: Handling::Strict };
    let bytes = service.search(&access, &request).map_err(|e| {
        let diagnostics = e.issues.first().map(|i| i.diagnostics.as_str()).unwrap_or("");
        anyhow::anyhow!("{text}: {diagnostics} ({})", e.internal.as_deref().unwrap_or("no detail"))
    })?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn token_query(random: &mut Xorshift64) -> String {
    let code = CODES[usize::try_from(random.below(CODES.len() as u64)).unwrap_or(0)];
    format!("Observation?code=http://loinc.org|{code}")
}

fn identifier_query(random: &mut Xorshift64, patients: usize) -> String {
    format!("Patient?identifier=urn:oid:1.2.250.1.213|MRN-{:07}", random.below(patients as u64))
}

fn date_query(random: &mut Xorshift64, patients: usize) -> String {
    let year = 2020 + random.below(5);
    format!(
        "Observation?subject=Patient/pat-{}&date=ge{year}-01-01&date=lt{}-01-01",
        random.below(patients as u64),
        year + 1
    )
}

/// Patients first, then their Observations, `WRITE_CHUNK` resources per transaction.
fn build(store: &Store, patients: usize, seed: u64) -> anyhow::Result<()> {
    let mut random = Xorshift64::new(seed, 17);
    let put = |resource_type: &str, id: String, body: Value| Write {
        resource_type: resource_type.into(),
        id,
        action: WriteAction::Put(body),
        if_match: None,
        must_be_new: true,
    };
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    let flush = |chunk: &mut Vec<Write>| -> anyhow::Result<()> {
        if !chunk.is_empty() {
            store.write(chunk, "bench")?;
            chunk.clear();
        }
        Ok(())
    };
    for index in 0..patients {
        let id = format!("pat-{index}");
        chunk.push(put(
            "Patient",
            id.clone(),
            json!({"resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.250.1.213", "value": format!("MRN-{index:07}")}],
                "name": [{"family": format!("Family{}", random.below(5000)), "given": ["Alex"]}],
                "gender": if index % 2 == 0 { "female" } else { "male" },
                "birthDate": format!("{}-{:02}-{:02}", 1930 + random.below(90), 1 + random.below(12), 1 + random.below(28))}),
        ));
        if chunk.len() == WRITE_CHUNK {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)?;
    let observations = patients * OBSERVATIONS_PER_PATIENT;
    // Every `stride`-th Observation has the hot code: exactly HOT_CODE_MATCHES of them.
    let stride = observations / HOT_CODE_MATCHES;
    let mut written = 0usize;
    for index in 0..observations {
        let patient = index % patients;
        let hot = index % stride == 0 && index / stride < HOT_CODE_MATCHES;
        let code = if hot { HOT_CODE } else { CODES[index % CODES.len()] };
        let at_ms = START_MS + i64::try_from(random.below(u64::try_from(SPAN_MS).unwrap_or(1))).unwrap_or(0);
        chunk.push(put(
            "Observation",
            format!("obs-{index}"),
            json!({"resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": format!("Patient/pat-{patient}")},
                "effectiveDateTime": medvault_base::time::format_instant(at_ms),
                "valueQuantity": {"value": 50 + random.below(150), "unit": "mg/dL",
                    "system": "http://unitsofmeasure.org", "code": "mg/dL"}}),
        ));
        if chunk.len() == WRITE_CHUNK {
            flush(&mut chunk)?;
            written += WRITE_CHUNK;
            if written.is_multiple_of(100_000) {
                crate::progress(format!("[search]   {} Observations", crate::report::thousands(written as f64)));
            }
        }
    }
    flush(&mut chunk)
}

/// Searches per second with `CLIENTS` threads, each running the three searches in turn.
fn throughput(service: &Service, patients: usize, seed: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let outcome: anyhow::Result<()> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (done, stop) = (done.clone(), stop.clone());
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut random = Xorshift64::new(seed, 1000 + client as u64);
                    let mut turn = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let text = match turn % 3 {
                            0 => token_query(&mut random),
                            1 => identifier_query(&mut random, patients),
                            _ => date_query(&mut random, patients),
                        };
                        search(service, &text)?;
                        done.fetch_add(1, Ordering::Relaxed);
                        turn += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(THROUGHPUT_S));
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    });
    outcome?;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn directory_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}
