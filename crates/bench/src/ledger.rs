//! The ledger at scale, in-process (no HTTP): a sealed store of `--ledger-leaves` versions
//! built with `Store::write`, then `verify` of the whole store, the tree part of it alone
//! (every stored leaf hash read back and folded into a root), and the latency of inclusion
//! and consistency proofs. Every proof is verified against its signed checkpoint, so that a
//! broken path cannot be measured as a fast one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::engine::CheckpointRow;
use medvault_store::{Store, Write, WriteAction};
use serde_json::{json, Value};

use crate::dataset::Xorshift64;

/// Versions per `Store::write` call (one transaction, one signed checkpoint each).
pub const CHUNK_VERSIONS: u64 = 1_000;
/// One patient per this many versions (2,000 patients for 1,000,000 versions).
const VERSIONS_PER_PATIENT: u64 = 500;
/// Share of Observation versions that update an existing Observation rather than create one.
const UPDATE_PERCENT: u64 = 20;
/// Proofs of each kind timed.
pub const PROOFS: usize = 1_000;
/// The client name the ledger records for every version.
const AUTHOR: &str = "bench";
/// The fewest leaves that give two checkpoints to prove consistency between.
pub const LEAVES_MIN: u64 = 2 * CHUNK_VERSIONS;

/// Random streams of the seed (the dataset uses streams 0, 1, 2… for its copies).
const STREAM_BUILD: u64 = 1 << 40;
const STREAM_INCLUSION: u64 = (1 << 40) + 1;
const STREAM_CONSISTENCY: u64 = (1 << 40) + 2;

/// Everything the ledger phase measured.
#[derive(Debug, Clone)]
pub struct LedgerFigures {
    pub leaves: u64,
    pub patients: u64,
    pub observations: u64,
    pub observation_updates: u64,
    /// `Store::write` calls; each signed one checkpoint.
    pub writes: u64,
    pub checkpoints: u64,
    /// Wall time of building the store (not a measurement of the ledger).
    pub build_s: f64,
    /// Bytes of the database, its WAL and shared memory after building.
    pub database_bytes: u64,
    pub verify: VerifyFigures,
    pub tree: TreeFigures,
    pub inclusion: Latencies,
    pub consistency: Latencies,
}

/// The full `verify` pass.
#[derive(Debug, Clone, Copy)]
pub struct VerifyFigures {
    pub versions: u64,
    pub elapsed_s: f64,
    /// CPU seconds of this process during the pass (the store's writer is idle).
    pub cpu_s: Option<f64>,
}

impl VerifyFigures {
    pub fn versions_per_s(&self) -> f64 {
        self.versions as f64 / self.elapsed_s
    }

    pub fn cpu_us_per_version(&self) -> Option<f64> {
        self.cpu_s.map(|cpu_s| cpu_s * 1e6 / self.versions.max(1) as f64)
    }
}

/// The tree part of `verify` alone: the stored leaf hashes read back, then folded into a root.
#[derive(Debug, Clone, Copy)]
pub struct TreeFigures {
    pub leaves: u64,
    pub read_s: f64,
    pub hash_s: f64,
}

impl TreeFigures {
    pub fn elapsed_s(&self) -> f64 {
        self.read_s + self.hash_s
    }

    pub fn leaves_per_s(&self) -> f64 {
        self.leaves as f64 / self.elapsed_s()
    }
}

/// Latencies of one kind of proof, one call at a time.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Hashes per proof, on average.
    pub mean_hashes: f64,
}

impl Latencies {
    fn from_samples(mut samples_ms: Vec<f64>, hashes: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(!samples_ms.is_empty(), "no proof was timed");
        samples_ms.sort_by(f64::total_cmp);
        let count = samples_ms.len();
        Ok(Self {
            count,
            p50_ms: percentile(&samples_ms, 50.0),
            p99_ms: percentile(&samples_ms, 99.0),
            max_ms: samples_ms[count - 1],
            mean_ms: samples_ms.iter().sum::<f64>() / count as f64,
            mean_hashes: hashes as f64 / count as f64,
        })
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Builds a store of `leaves` versions and measures it.
pub fn run(leaves: u64, seed: u64) -> anyhow::Result<LedgerFigures> {
    anyhow::ensure!(leaves >= LEAVES_MIN, "the ledger phase needs at least {LEAVES_MIN} leaves");
    let directory = medvault_testkit::TempDir::new("bench-ledger");
    let key_file = KeyFile { path: directory.path().join("master.key") };
    MasterKey::generate()?.create_key_file(&key_file.path)?;
    let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
    let store = Store::create(&directory.path().join("data"), &key_file, clock).context("cannot create the store")?;

    crate::progress(format!(
        "[ledger] building a store of {} versions with Store::write, {} per call",
        crate::report::thousands(leaves as f64),
        crate::report::thousands(CHUNK_VERSIONS as f64)
    ));
    let build_started = Instant::now();
    let built = build(&store, leaves, seed)?;
    let build_s = build_started.elapsed().as_secs_f64();
    let database_bytes = store.status()?.database_bytes;
    crate::progress(format!(
        "[ledger] built in {build_s:.1} s: {} patients, {} observations, {} updates, {} checkpoints, {:.0} MB",
        crate::report::thousands(built.patients as f64),
        crate::report::thousands(built.observations as f64),
        crate::report::thousands(built.observation_updates as f64),
        crate::report::thousands(built.checkpoint_sizes.len() as f64),
        database_bytes as f64 / 1e6
    ));

    let latest = store.latest_checkpoint()?.context("the built store has no checkpoint")?;
    anyhow::ensure!(
        latest.tree_size == leaves,
        "the latest checkpoint covers {} leaves, not {leaves}",
        latest.tree_size
    );
    let verifier = store.ledger_verifier()?;
    check_signed(&latest, &verifier)?;

    crate::progress("[ledger] verify: every version opened and checked, every leaf rebuilt, the tree recomputed");
    let verify = measure_verify(&store, leaves, built.checkpoint_sizes.len() as u64)?;
    crate::progress(format!("[ledger] verify: {} versions/s", crate::report::thousands(verify.versions_per_s())));

    crate::progress("[ledger] tree: stored leaf hashes read back and folded into the root");
    let tree = measure_tree(&store, &latest)?;
    crate::progress(format!("[ledger] tree: {} leaves/s", crate::report::thousands(tree.leaves_per_s())));

    crate::progress(format!(
        "[ledger] {} inclusion proofs of random versions",
        crate::report::thousands(PROOFS as f64)
    ));
    let inclusion = measure_inclusion(&store, &built.names, &latest, seed)?;
    crate::progress(format!(
        "[ledger] {} consistency proofs between random checkpoints",
        crate::report::thousands(PROOFS as f64)
    ));
    let consistency = measure_consistency(&store, &built.checkpoint_sizes, &verifier, seed)?;
    store.close();

    Ok(LedgerFigures {
        leaves,
        patients: built.patients,
        observations: built.observations,
        observation_updates: built.observation_updates,
        writes: built.writes,
        checkpoints: built.checkpoint_sizes.len() as u64,
        build_s,
        database_bytes,
        verify,
        tree,
        inclusion,
        consistency,
    })
}

/// What one leaf holds, as the write that made it was told.
#[derive(Debug, Clone, Copy)]
struct LeafName {
    kind: Kind,
    index: u32,
    version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Patient,
    Observation,
}

impl LeafName {
    fn resource_type(&self) -> &'static str {
        match self.kind {
            Kind::Patient => "Patient",
            Kind::Observation => "Observation",
        }
    }

    fn id(&self) -> String {
        match self.kind {
            Kind::Patient => patient_id(self.index),
            Kind::Observation => format!("bench-obs-{:08}", self.index),
        }
    }
}

fn patient_id(index: u32) -> String {
    format!("bench-patient-{index:06}")
}

struct Built {
    /// By leaf index.
    names: Vec<LeafName>,
    /// Every checkpoint size the write receipts named, ascending.
    checkpoint_sizes: Vec<u64>,
    patients: u64,
    observations: u64,
    observation_updates: u64,
    writes: u64,
}

/// Patients first, then Observations of random patients, a fifth of them updates of an
/// earlier Observation (so some resources have several versions), `CHUNK_VERSIONS` per call.
fn build(store: &Store, leaves: u64, seed: u64) -> anyhow::Result<Built> {
    let mut random = Xorshift64::new(seed, STREAM_BUILD);
    let patients = (leaves / VERSIONS_PER_PATIENT).clamp(1, u64::from(u32::MAX));
    let patients = u32::try_from(patients).unwrap_or(u32::MAX);
    let mut names: Vec<Option<LeafName>> = vec![None; usize::try_from(leaves)?];
    let mut checkpoint_sizes = Vec::new();
    let mut next_patient = 0u32;
    // Per Observation: its patient and its latest version.
    let mut observations: Vec<(u32, u32)> = Vec::new();
    let mut updates = 0u64;
    let mut writes_made = 0u64;
    let mut written = 0u64;
    while written < leaves {
        let chunk = CHUNK_VERSIONS.min(leaves - written);
        let mut writes = Vec::with_capacity(usize::try_from(chunk)?);
        let mut chunk_names = Vec::with_capacity(writes.capacity());
        // Observations this call already writes: one write per resource per transaction.
        let mut in_chunk = HashSet::new();
        for _ in 0..chunk {
            let name = if next_patient < patients {
                next_patient += 1;
                LeafName { kind: Kind::Patient, index: next_patient - 1, version: 1 }
            } else {
                let update = (!observations.is_empty() && random.below(100) < UPDATE_PERCENT)
                    .then(|| u32::try_from(random.below(observations.len() as u64)).unwrap_or(0))
                    .filter(|index| in_chunk.insert(*index));
                match update {
                    Some(index) => {
                        let entry = &mut observations[usize::try_from(index)?];
                        entry.1 += 1;
                        updates += 1;
                        LeafName { kind: Kind::Observation, index, version: entry.1 }
                    }
                    None => {
                        let patient = u32::try_from(random.below(u64::from(patients))).unwrap_or(0);
                        observations.push((patient, 1));
                        let index = u32::try_from(observations.len() - 1)?;
                        in_chunk.insert(index);
                        LeafName { kind: Kind::Observation, index, version: 1 }
                    }
                }
            };
            let (resource, must_be_new, if_match) = match name.kind {
                Kind::Patient => (patient(&mut random), true, None),
                Kind::Observation => {
                    let patient = observations[usize::try_from(name.index)?].0;
                    let update = name.version > 1;
                    (observation(patient, update, &mut random), !update, update.then(|| u64::from(name.version - 1)))
                }
            };
            writes.push(Write {
                resource_type: name.resource_type().to_string(),
                id: name.id(),
                action: WriteAction::Put(resource),
                if_match,
                must_be_new,
            });
            chunk_names.push(name);
        }
        let receipts = store.write(&writes, AUTHOR).map_err(|error| anyhow::anyhow!("a write failed: {error}"))?;
        writes_made += 1;
        anyhow::ensure!(receipts.len() == chunk_names.len(), "a write answered {} of {chunk} versions", receipts.len());
        for (receipt, name) in receipts.iter().zip(&chunk_names) {
            anyhow::ensure!(
                !receipt.noop
                    && receipt.version == u64::from(name.version)
                    && receipt.resource_type == name.resource_type()
                    && receipt.leaf_index < leaves
                    && receipt.checkpoint_size > receipt.leaf_index,
                "the receipt of {}/{} version {} is wrong: version {}, leaf {}, checkpoint {}",
                name.resource_type(),
                name.id(),
                name.version,
                receipt.version,
                receipt.leaf_index,
                receipt.checkpoint_size
            );
            let slot = &mut names[usize::try_from(receipt.leaf_index)?];
            anyhow::ensure!(slot.is_none(), "two receipts name leaf {}", receipt.leaf_index);
            *slot = Some(*name);
            if checkpoint_sizes.last() != Some(&receipt.checkpoint_size) {
                anyhow::ensure!(
                    checkpoint_sizes.last().is_none_or(|last| *last < receipt.checkpoint_size),
                    "checkpoint sizes went backwards"
                );
                checkpoint_sizes.push(receipt.checkpoint_size);
            }
        }
        written += chunk;
    }
    let names = names.into_iter().collect::<Option<Vec<_>>>().context("a leaf was named by no receipt")?;
    Ok(Built {
        names,
        checkpoint_sizes,
        patients: u64::from(patients),
        observations: observations.len() as u64,
        observation_updates: updates,
        writes: writes_made,
    })
}

fn patient(random: &mut Xorshift64) -> Value {
    const FAMILY: &[&str] = &["Syntheson", "Mocklin", "Fakeley", "Testwood"];
    const GIVEN: &[&str] = &["Juno", "Fen", "Ari", "Noor", "Tove"];
    let pick = |random: &mut Xorshift64, names: &[&'static str]| -> &'static str {
        names[usize::try_from(random.below(names.len() as u64)).unwrap_or(0)]
    };
    json!({
        "resourceType": "Patient",
        "name": [{"family": pick(random, FAMILY), "given": [pick(random, GIVEN)]}],
        "gender": if random.below(2) == 0 { "female" } else { "male" },
        "birthDate": format!("{}-0{}-1{}", 1940 + random.below(80), 1 + random.below(9), random.below(10)),
    })
}

/// A heart-rate Observation like the create phase's (an update is `amended`).
fn observation(patient: u32, update: bool, random: &mut Xorshift64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": if update { "amended" } else { "final" },
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"
        }]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
        "subject": {"reference": format!("Patient/{}", patient_id(patient))},
        "effectiveDateTime": "2026-01-01T09:00:00Z",
        "valueQuantity": {
            "value": 40 + random.below(80),
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min"
        },
    })
}

/// The checkpoint's note is signed by the log key and says what its row says.
fn check_signed(checkpoint: &CheckpointRow, verifier: &medvault_ledger::Verifier) -> anyhow::Result<()> {
    let opened = medvault_ledger::open_checkpoint(checkpoint.note.as_bytes(), verifier, &[])
        .with_context(|| format!("the checkpoint of size {} does not verify", checkpoint.tree_size))?;
    anyhow::ensure!(
        opened.checkpoint.size() == checkpoint.tree_size && *opened.checkpoint.root() == checkpoint.root,
        "the checkpoint of size {} disagrees with its signed note",
        checkpoint.tree_size
    );
    Ok(())
}

fn measure_verify(store: &Store, leaves: u64, checkpoints: u64) -> anyhow::Result<VerifyFigures> {
    let cpu_started = crate::cpu::process_s();
    let started = Instant::now();
    let report = store.verify(None, &[], &[], &mut |_, _| {})?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_s = crate::cpu::process_s().zip(cpu_started).map(|(end, start)| end - start);
    if let Some(finding) = report.findings.first() {
        anyhow::bail!(
            "verify found {} problems on a store nobody altered, the first: {} ({})",
            report.findings.len(),
            finding.message,
            finding.kind.name()
        );
    }
    anyhow::ensure!(
        report.ok()
            && report.versions == leaves
            && report.leaves == leaves
            && report.erased == 0
            && report.checkpoints == checkpoints
            && report.latest_checkpoint_size == Some(leaves),
        "verify checked {} versions, {} leaves, {} checkpoints (latest {:?}); expected {leaves}, {leaves}, {checkpoints}",
        report.versions,
        report.leaves,
        report.checkpoints,
        report.latest_checkpoint_size
    );
    Ok(VerifyFigures { versions: report.versions, elapsed_s, cpu_s })
}

/// Reads the level-0 rows of `ledger_nodes` with a read-only connection of its own (the
/// store's cache size), then pushes them through a `RootBuilder`; the root must be the
/// latest checkpoint's.
fn measure_tree(store: &Store, latest: &CheckpointRow) -> anyhow::Result<TreeFigures> {
    let path = store.data_dir().join(medvault_store::sqlite::DATABASE_FILE);
    let connection = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    connection.execute_batch("PRAGMA cache_size = -32768;")?;

    let started = Instant::now();
    let mut hashes: Vec<medvault_ledger::Hash> = Vec::with_capacity(usize::try_from(latest.tree_size)?);
    {
        let mut statement =
            connection.prepare("SELECT node_index, hash FROM ledger_nodes WHERE level = 0 ORDER BY node_index")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let index: i64 = row.get(0)?;
            anyhow::ensure!(
                u64::try_from(index).ok() == Some(hashes.len() as u64),
                "ledger leaf {index} found where leaf {} was expected",
                hashes.len()
            );
            let hash = row.get_ref(1)?.as_blob()?;
            hashes.push(hash.try_into().with_context(|| format!("ledger leaf {index} is not 32 bytes"))?);
        }
    }
    let read_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut builder = medvault_ledger::RootBuilder::new();
    for hash in &hashes {
        builder.push(*hash);
    }
    let root = builder.root();
    let hash_s = started.elapsed().as_secs_f64();

    anyhow::ensure!(
        builder.size() == latest.tree_size,
        "the ledger has {} leaves, the latest checkpoint {}",
        builder.size(),
        latest.tree_size
    );
    anyhow::ensure!(root == latest.root, "the recomputed root is not the latest checkpoint's root");
    Ok(TreeFigures { leaves: builder.size(), read_s, hash_s })
}

/// Inclusion proofs of random versions against the latest checkpoint (`tree_size` `None`).
fn measure_inclusion(
    store: &Store,
    names: &[LeafName],
    latest: &CheckpointRow,
    seed: u64,
) -> anyhow::Result<Latencies> {
    let mut random = Xorshift64::new(seed, STREAM_INCLUSION);
    let mut samples_ms = Vec::with_capacity(PROOFS);
    let mut hashes = 0;
    for _ in 0..PROOFS {
        let leaf_index = random.below(names.len() as u64);
        let name = names[usize::try_from(leaf_index)?];
        let (resource_type, id, version) = (name.resource_type(), name.id(), u64::from(name.version));
        let started = Instant::now();
        let proof = store.inclusion_proof(resource_type, &id, version, None)?;
        samples_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let proof = proof.with_context(|| format!("no inclusion proof for {resource_type}/{id} version {version}"))?;
        anyhow::ensure!(
            proof.leaf_index == leaf_index && proof.tree_size == latest.tree_size && proof.checkpoint == latest.note,
            "the proof of {resource_type}/{id} version {version} is of leaf {} at size {}, expected leaf {leaf_index} at size {}",
            proof.leaf_index,
            proof.tree_size,
            latest.tree_size
        );
        let leaf = medvault_ledger::LeafData::decode(&proof.leaf)?;
        anyhow::ensure!(
            leaf.resource_type() == resource_type && leaf.resource_id() == id && leaf.version() == version,
            "the proof's leaf names another version than {resource_type}/{id} version {version}"
        );
        medvault_ledger::verify_inclusion(
            &medvault_ledger::leaf_hash(&proof.leaf),
            proof.leaf_index,
            proof.tree_size,
            &proof.proof,
            &latest.root,
        )
        .with_context(|| format!("the inclusion proof of {resource_type}/{id} version {version} does not verify"))?;
        hashes += proof.proof.len();
    }
    Latencies::from_samples(samples_ms, hashes)
}

/// Consistency proofs between two different checkpointed sizes picked at random; both
/// checkpoints' signatures are checked and the proof verified against their roots.
fn measure_consistency(
    store: &Store,
    sizes: &[u64],
    verifier: &medvault_ledger::Verifier,
    seed: u64,
) -> anyhow::Result<Latencies> {
    anyhow::ensure!(sizes.len() >= 2, "a consistency proof needs two checkpoints, the store has {}", sizes.len());
    let mut random = Xorshift64::new(seed, STREAM_CONSISTENCY);
    let mut samples_ms = Vec::with_capacity(PROOFS);
    let mut hashes = 0;
    let count = sizes.len() as u64;
    for _ in 0..PROOFS {
        let first = random.below(count);
        let mut second = random.below(count - 1);
        if second >= first {
            second += 1;
        }
        let old_size = sizes[usize::try_from(first.min(second))?];
        let new_size = sizes[usize::try_from(first.max(second))?];
        let old = store.checkpoint_at(old_size)?.with_context(|| format!("no checkpoint of size {old_size}"))?;
        let new = store.checkpoint_at(new_size)?.with_context(|| format!("no checkpoint of size {new_size}"))?;
        let started = Instant::now();
        let proof = store.consistency_proof(old_size, new_size)?;
        samples_ms.push(started.elapsed().as_secs_f64() * 1e3);
        check_signed(&old, verifier)?;
        check_signed(&new, verifier)?;
        medvault_ledger::verify_consistency(old_size, new_size, &old.root, &new.root, &proof)
            .with_context(|| format!("the consistency proof from {old_size} to {new_size} does not verify"))?;
        hashes += proof.len();
    }
    Latencies::from_samples(samples_ms, hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 500.0);
        assert_eq!(percentile(&samples, 99.0), 990.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }
}
