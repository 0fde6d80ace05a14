//! The figures of one invocation: the printed table, the targets marked met or missed, and
//! the same figures as JSON.

use serde_json::json;

use crate::floor::FloorRun;
use crate::ledger::{Latencies, LedgerFigures};
use crate::wrk::{WrkRun, WrkSettings};

/// Everything one invocation measured.
#[derive(Debug)]
pub struct Figures {
    pub machine: Machine,
    pub resources: usize,
    pub bundles: usize,
    pub body_bytes: usize,
    pub generation_s: f64,
    pub wrk: WrkSettings,
    pub import_connections: usize,
    pub floor: FloorRun,
    pub sealed: ModeFigures,
    pub unsealed: ModeFigures,
    pub nginx: WrkRun,
    /// The same import into a sealed store without a ledger.
    pub no_ledger: NoLedgerImport,
    pub ledger: LedgerFigures,
}

/// `--ledger-only`: the in-process ledger figures alone.
#[derive(Debug)]
pub struct LedgerOnly {
    pub machine: Machine,
    pub ledger: LedgerFigures,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub date: String,
    pub load_before: String,
    pub load_after: String,
}

/// The figures of one store mode (sealed or unsealed).
#[derive(Debug, Clone, Copy)]
pub struct ModeFigures {
    pub import_resources: usize,
    pub import_s: f64,
    /// CPU seconds the server spent importing (the import client's threads excluded).
    pub import_server_cpu_s: Option<f64>,
    pub read: WrkRun,
    pub create: WrkRun,
    /// Resources the store holds after the create run, beyond the imported ones.
    pub created_stored: u64,
}

impl ModeFigures {
    pub fn import_per_s(&self) -> f64 {
        self.import_resources as f64 / self.import_s
    }

    pub fn import_cpu_us_per_resource(&self) -> Option<f64> {
        self.import_server_cpu_s.map(|cpu_s| cpu_s * 1e6 / self.import_resources.max(1) as f64)
    }
}

/// The import over HTTP into a sealed store opened without a ledger (no leaves, no
/// checkpoints), to set against the sealed store's import.
#[derive(Debug, Clone, Copy)]
pub struct NoLedgerImport {
    pub resources: usize,
    pub import_s: f64,
    pub server_cpu_s: Option<f64>,
}

impl NoLedgerImport {
    pub fn import_per_s(&self) -> f64 {
        self.resources as f64 / self.import_s
    }

    pub fn import_cpu_us_per_resource(&self) -> Option<f64> {
        self.server_cpu_s.map(|cpu_s| cpu_s * 1e6 / self.resources.max(1) as f64)
    }
}

/// The product targets (issue text): sealed import, import against the floor, read rate
/// and tail, read against nginx, and the cost of sealing.
pub const IMPORT_PER_S_MIN: f64 = 20_000.0;
pub const IMPORT_FLOOR_RATIO_MIN: f64 = 0.50;
pub const READ_PER_S_MIN: f64 = 4_000.0;
pub const READ_P99_MS_MAX: f64 = 10.0;
pub const READ_NGINX_RATIO_MIN: f64 = 0.25;
pub const SEALING_OVERHEAD_MAX: f64 = 1.25;
/// The ledger targets (product issue 3): its cost on the write path, the tree part of
/// `verify` at (at least) a million leaves, and proof latency at that size.
pub const LEDGER_OVERHEAD_MAX: f64 = 1.10;
pub const LEDGER_TREE_LEAVES_PER_S_MIN: f64 = 1_000_000.0;
pub const LEDGER_TARGET_LEAVES: u64 = 1_000_000;
pub const PROOF_P99_MS_MAX: f64 = 1.0;
/// Imported resources read back and compared before the read runs.
pub const READS_CHECKED: usize = 200;

struct Target {
    name: String,
    value: String,
    met: bool,
}

impl Figures {
    pub fn import_floor_ratio(&self) -> f64 {
        self.sealed.import_per_s() / self.floor.resources_per_s()
    }

    pub fn floor_cpu_us_per_resource(&self) -> Option<f64> {
        self.floor.cpu_s.map(|cpu_s| cpu_s * 1e6 / self.floor.resources.max(1) as f64)
    }

    pub fn read_nginx_ratio(&self) -> f64 {
        self.sealed.read.requests_per_s() / self.nginx.requests_per_s()
    }

    fn targets(&self) -> Vec<Target> {
        let clean = |run: &WrkRun| run.is_clean();
        let mut targets = vec![
            Target {
                name: format!("import >= {} resources/s (sealed)", thousands(IMPORT_PER_S_MIN)),
                value: thousands(self.sealed.import_per_s()),
                met: self.sealed.import_per_s() >= IMPORT_PER_S_MIN,
            },
            Target {
                name: format!("import / floor >= {IMPORT_FLOOR_RATIO_MIN:.2}"),
                value: format!("{:.2}", self.import_floor_ratio()),
                met: self.import_floor_ratio() >= IMPORT_FLOOR_RATIO_MIN,
            },
            Target {
                name: format!("read by id >= {} req/s (sealed)", thousands(READ_PER_S_MIN)),
                value: thousands(self.sealed.read.requests_per_s()),
                met: clean(&self.sealed.read) && self.sealed.read.requests_per_s() >= READ_PER_S_MIN,
            },
            Target {
                name: format!("read by id p99 <= {READ_P99_MS_MAX} ms (sealed)"),
                value: format!("{:.2} ms", self.sealed.read.p99_ms),
                met: clean(&self.sealed.read) && self.sealed.read.p99_ms <= READ_P99_MS_MAX,
            },
            Target {
                name: format!("read / nginx >= {READ_NGINX_RATIO_MIN:.2}"),
                value: format!("{:.2}", self.read_nginx_ratio()),
                met: clean(&self.sealed.read) && clean(&self.nginx) && self.read_nginx_ratio() >= READ_NGINX_RATIO_MIN,
            },
        ];
        let overheads = [
            ("import", overhead(self.unsealed.import_per_s(), self.sealed.import_per_s()), true),
            (
                "read by id",
                overhead(self.unsealed.read.requests_per_s(), self.sealed.read.requests_per_s()),
                clean(&self.sealed.read) && clean(&self.unsealed.read),
            ),
            (
                "create",
                overhead(self.unsealed.create.requests_per_s(), self.sealed.create.requests_per_s()),
                clean(&self.sealed.create) && clean(&self.unsealed.create),
            ),
        ];
        for (name, ratio, valid) in overheads {
            targets.push(Target {
                name: format!("sealing overhead <= {SEALING_OVERHEAD_MAX:.2}x: {name}"),
                value: format!("{ratio:.2}x"),
                met: valid && ratio <= SEALING_OVERHEAD_MAX,
            });
        }
        let ledger_overhead = self.ledger_overhead();
        targets.push(Target {
            name: format!("ledger overhead <= {LEDGER_OVERHEAD_MAX:.2}x: import"),
            value: format!("{ledger_overhead:.2}x"),
            met: ledger_overhead <= LEDGER_OVERHEAD_MAX,
        });
        targets.extend(ledger_targets(&self.ledger));
        targets
    }

    /// How much slower the sealed import is with the ledger than without.
    pub fn ledger_overhead(&self) -> f64 {
        overhead(self.no_ledger.import_per_s(), self.sealed.import_per_s())
    }

    /// The table, as printed on stdout.
    pub fn table(&self) -> String {
        let (sealed, unsealed) = (&self.sealed, &self.unsealed);
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(format!(
            "medvault benchmark — {} cores, {} resources in {} bundles, {:.1} MB of JSON (generated in {:.1} s)",
            self.machine.cores,
            thousands(self.resources as f64),
            thousands(self.bundles as f64),
            self.body_bytes as f64 / 1e6,
            self.generation_s
        ));
        line(machine_line(&self.machine));
        line(load_line(&self.machine));
        line(format!(
            "wrk: {} threads, {} connections, {} s per run · \
             import: {} connections, transaction Bundles, Prefer: return=minimal",
            self.wrk.threads, self.wrk.connections, self.wrk.duration_s, self.import_connections
        ));
        line(String::new());
        let conns = self.wrk.connections;
        line(format!("{:<40}{:>12}{:>14}{:>10}", "", "sealed", "unsealed", "ratio*"));
        line(row(
            "import over HTTP (resources/s)",
            thousands(sealed.import_per_s()),
            thousands(unsealed.import_per_s()),
            Some(overhead(unsealed.import_per_s(), sealed.import_per_s())),
        ));
        line(row(
            "  server CPU per resource (µs)",
            micros(sealed.import_cpu_us_per_resource()),
            micros(unsealed.import_cpu_us_per_resource()),
            cost_ratio(sealed.import_cpu_us_per_resource(), unsealed.import_cpu_us_per_resource()),
        ));
        line(row("storage floor, plain SQLite (res/s)", thousands(self.floor.resources_per_s()), String::new(), None));
        line(row("  CPU per resource (µs)", micros(self.floor_cpu_us_per_resource()), String::new(), None));
        line(format!(
            "{:<40}{:>12.2}   (target >= {IMPORT_FLOOR_RATIO_MIN:.2})",
            "import / floor",
            self.import_floor_ratio()
        ));
        line(row(
            &format!("read by id, {conns} conns (req/s)"),
            thousands(sealed.read.requests_per_s()),
            thousands(unsealed.read.requests_per_s()),
            Some(overhead(unsealed.read.requests_per_s(), sealed.read.requests_per_s())),
        ));
        line(row("  p50 / p99 (ms)", latencies(&sealed.read), latencies(&unsealed.read), None));
        line(row(
            "  server CPU per request (µs)",
            micros(sealed.read.server_cpu_us_per_request()),
            micros(unsealed.read.server_cpu_us_per_request()),
            cost_ratio(sealed.read.server_cpu_us_per_request(), unsealed.read.server_cpu_us_per_request()),
        ));
        line(row(
            &format!("nginx static 2 KB, {conns} conns (req/s)"),
            thousands(self.nginx.requests_per_s()),
            String::new(),
            None,
        ));
        line(row("  p50 / p99 (ms)", latencies(&self.nginx), String::new(), None));
        line(format!(
            "{:<40}{:>12.2}   (target >= {READ_NGINX_RATIO_MIN:.2})",
            "read / nginx",
            self.read_nginx_ratio()
        ));
        line(row(
            &format!("create, {conns} conns (req/s)"),
            thousands(sealed.create.requests_per_s()),
            thousands(unsealed.create.requests_per_s()),
            Some(overhead(unsealed.create.requests_per_s(), sealed.create.requests_per_s())),
        ));
        line(row("  p50 / p99 (ms)", latencies(&sealed.create), latencies(&unsealed.create), None));
        line(row(
            "  server CPU per request (µs)",
            micros(sealed.create.server_cpu_us_per_request()),
            micros(unsealed.create.server_cpu_us_per_request()),
            cost_ratio(sealed.create.server_cpu_us_per_request(), unsealed.create.server_cpu_us_per_request()),
        ));
        line(
            "* what sealing costs: unsealed / sealed throughput (target <= 1.25x); on CPU rows, sealed / unsealed CPU"
                .to_string(),
        );
        for (name, run) in [
            ("sealed read", &sealed.read),
            ("unsealed read", &unsealed.read),
            ("sealed create", &sealed.create),
            ("unsealed create", &unsealed.create),
            ("nginx", &self.nginx),
        ] {
            if !run.is_clean() {
                line(format!(
                    "!! {name}: {} non-2xx responses and {} socket errors in {} requests: this figure is not valid",
                    run.status_errors, run.socket_errors, run.requests
                ));
            }
        }
        line("checks: every import answer was 200 with one 201 per entry; the store held every imported".to_string());
        line(format!(
            "  resource; {READS_CHECKED} of them were read back and compared; a read without token was refused (401);"
        ));
        line(format!(
            "  the stores hold {} (sealed) and {} (unsealed) created resources, at least as many as wrk saw answered",
            thousands(sealed.created_stored as f64),
            thousands(unsealed.created_stored as f64)
        ));
        line(String::new());
        let no_ledger = &self.no_ledger;
        line(format!("{:<40}{:>12}{:>14}{:>10}", "ledger", "with", "without", "ratio**"));
        line(row(
            "import over HTTP, sealed (resources/s)",
            thousands(sealed.import_per_s()),
            thousands(no_ledger.import_per_s()),
            Some(self.ledger_overhead()),
        ));
        line(row(
            "  server CPU per resource (µs)",
            micros(sealed.import_cpu_us_per_resource()),
            micros(no_ledger.import_cpu_us_per_resource()),
            cost_ratio(sealed.import_cpu_us_per_resource(), no_ledger.import_cpu_us_per_resource()),
        ));
        line(format!(
            "** what the ledger costs: without / with throughput (target <= {LEDGER_OVERHEAD_MAX:.2}x); on the CPU row, with / without CPU"
        ));
        line(
            "checks: the same answers and counts as above; the latest checkpoint of the store with the ledger covers"
                .to_string(),
        );
        line("  every imported resource; the store without it has no checkpoint".to_string());
        ledger_lines(&self.ledger).into_iter().for_each(&mut line);
        line(String::new());
        line("targets".to_string());
        target_lines(&self.targets()).into_iter().for_each(&mut line);
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let wrk_json = |run: &WrkRun| {
            json!({
                "requests": run.requests,
                "duration_s": run.duration_s,
                "requests_per_s": run.requests_per_s(),
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
                "server_cpu_s": run.server_cpu_s,
                "server_cpu_us_per_request": run.server_cpu_us_per_request(),
                "non_2xx_responses": run.status_errors,
                "socket_errors": run.socket_errors,
            })
        };
        let mode_json = |mode: &ModeFigures| {
            json!({
                "import": {
                    "resources": mode.import_resources,
                    "elapsed_s": mode.import_s,
                    "resources_per_s": mode.import_per_s(),
                    "server_cpu_s": mode.import_server_cpu_s,
                    "server_cpu_us_per_resource": mode.import_cpu_us_per_resource(),
                },
                "read_by_id": wrk_json(&mode.read),
                "create": wrk_json(&mode.create),
                "creates_stored": mode.created_stored,
            })
        };
        let (sealed, unsealed) = (&self.sealed, &self.unsealed);
        let ratios = json!({
            "import_over_floor": self.import_floor_ratio(),
            "read_over_nginx": self.read_nginx_ratio(),
            "sealing_overhead_import": overhead(unsealed.import_per_s(), sealed.import_per_s()),
            "sealing_overhead_read": overhead(unsealed.read.requests_per_s(), sealed.read.requests_per_s()),
            "sealing_overhead_create": overhead(unsealed.create.requests_per_s(), sealed.create.requests_per_s()),
            "sealing_cpu_ratio_import":
                cost_ratio(sealed.import_cpu_us_per_resource(), unsealed.import_cpu_us_per_resource()),
            "sealing_cpu_ratio_read":
                cost_ratio(sealed.read.server_cpu_us_per_request(), unsealed.read.server_cpu_us_per_request()),
            "sealing_cpu_ratio_create":
                cost_ratio(sealed.create.server_cpu_us_per_request(), unsealed.create.server_cpu_us_per_request()),
            "ledger_overhead_import": self.ledger_overhead(),
            "ledger_cpu_ratio_import":
                cost_ratio(sealed.import_cpu_us_per_resource(), self.no_ledger.import_cpu_us_per_resource()),
        });
        json!({
            "machine": machine_json(&self.machine),
            "dataset": {
                "resources": self.resources,
                "bundles": self.bundles,
                "body_bytes": self.body_bytes,
                "generation_s": self.generation_s,
            },
            "settings": {
                "wrk_threads": self.wrk.threads,
                "wrk_connections": self.wrk.connections,
                "wrk_duration_s": self.wrk.duration_s,
                "import_connections": self.import_connections,
            },
            "storage_floor": {
                "resources": self.floor.resources,
                "elapsed_s": self.floor.elapsed.as_secs_f64(),
                "resources_per_s": self.floor.resources_per_s(),
                "cpu_s": self.floor.cpu_s,
                "cpu_us_per_resource": self.floor_cpu_us_per_resource(),
            },
            "sealed": mode_json(&self.sealed),
            "unsealed": mode_json(&self.unsealed),
            "sealed_without_ledger": {
                "import": {
                    "resources": self.no_ledger.resources,
                    "elapsed_s": self.no_ledger.import_s,
                    "resources_per_s": self.no_ledger.import_per_s(),
                    "server_cpu_s": self.no_ledger.server_cpu_s,
                    "server_cpu_us_per_resource": self.no_ledger.import_cpu_us_per_resource(),
                },
            },
            "nginx_static_2kb": wrk_json(&self.nginx),
            "ledger": ledger_json(&self.ledger),
            "ratios": ratios,
            "targets": targets_json(&self.targets()),
        })
    }
}

impl LedgerOnly {
    /// The table, as printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(format!("medvault benchmark, ledger only — {} cores", self.machine.cores));
        line(machine_line(&self.machine));
        line(load_line(&self.machine));
        ledger_lines(&self.ledger).into_iter().for_each(&mut line);
        line(String::new());
        line("targets".to_string());
        target_lines(&ledger_targets(&self.ledger)).into_iter().for_each(&mut line);
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "machine": machine_json(&self.machine),
            "ledger": ledger_json(&self.ledger),
            "targets": targets_json(&ledger_targets(&self.ledger)),
        })
    }
}

fn machine_line(machine: &Machine) -> String {
    format!("{} · {}", machine.cpu, machine.date)
}

fn load_line(machine: &Machine) -> String {
    format!("load average before: {} · after: {}", machine.load_before, machine.load_after)
}

fn machine_json(machine: &Machine) -> serde_json::Value {
    json!({
        "cores": machine.cores,
        "cpu": machine.cpu,
        "date": machine.date,
        "load_average_before": machine.load_before,
        "load_average_after": machine.load_after,
    })
}

fn target_lines(targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|target| {
            format!("  {:<52}{:>12}   {}", target.name, target.value, if target.met { "met" } else { "MISSED" })
        })
        .collect()
}

fn targets_json(targets: &[Target]) -> Vec<serde_json::Value> {
    targets.iter().map(|target| json!({"target": target.name, "value": target.value, "met": target.met})).collect()
}

/// The in-process ledger targets; measured on a store smaller than the million
/// leaves, their names say so.
fn ledger_targets(ledger: &LedgerFigures) -> Vec<Target> {
    let at = if ledger.leaves >= LEDGER_TARGET_LEAVES {
        String::new()
    } else {
        format!(" [{} leaves]", thousands(ledger.leaves as f64))
    };
    vec![
        Target {
            name: format!("ledger tree >= {} leaves/s{at}", thousands(LEDGER_TREE_LEAVES_PER_S_MIN)),
            value: thousands(ledger.tree.leaves_per_s()),
            met: ledger.tree.leaves_per_s() >= LEDGER_TREE_LEAVES_PER_S_MIN,
        },
        Target {
            name: format!("inclusion proof p99 <= {PROOF_P99_MS_MAX} ms{at}"),
            value: format!("{:.3} ms", ledger.inclusion.p99_ms),
            met: ledger.inclusion.p99_ms <= PROOF_P99_MS_MAX,
        },
        Target {
            name: format!("consistency proof p99 <= {PROOF_P99_MS_MAX} ms{at}"),
            value: format!("{:.3} ms", ledger.consistency.p99_ms),
            met: ledger.consistency.p99_ms <= PROOF_P99_MS_MAX,
        },
    ]
}

/// The in-process part of the ledger block of the table.
fn ledger_lines(ledger: &LedgerFigures) -> Vec<String> {
    let mut lines = vec![
        String::new(),
        format!(
            "ledger store, in-process: {} versions ({} patients, {} observations, {} updates of them)",
            thousands(ledger.leaves as f64),
            thousands(ledger.patients as f64),
            thousands(ledger.observations as f64),
            thousands(ledger.observation_updates as f64)
        ),
        format!(
            "  {} Store::write calls, {} checkpoints, {:.0} MB; built in {:.1} s (not a measurement)",
            thousands(ledger.writes as f64),
            thousands(ledger.checkpoints as f64),
            ledger.database_bytes as f64 / 1e6,
            ledger.build_s
        ),
        format!(
            "{:<40}{:>12}   {:.1} s; CPU {}",
            "verify, whole store (versions/s)",
            thousands(ledger.verify.versions_per_s()),
            ledger.verify.elapsed_s,
            ledger
                .verify
                .cpu_us_per_version()
                .map_or_else(|| "n/a".to_string(), |us| format!("{us:.1} µs per version"))
        ),
        format!(
            "{:<40}{:>12}   read {:.3} s + root {:.3} s   (target >= {})",
            "  tree: leaf hashes + root (leaves/s)",
            thousands(ledger.tree.leaves_per_s()),
            ledger.tree.read_s,
            ledger.tree.hash_s,
            thousands(LEDGER_TREE_LEAVES_PER_S_MIN)
        ),
        proof_line("inclusion proof p50 / p99 (ms)", &ledger.inclusion),
        proof_line("consistency proof p50 / p99 (ms)", &ledger.consistency),
        "checks: verify found nothing and counted every version, leaf and checkpoint; the recomputed root is the"
            .to_string(),
        "  latest signed checkpoint's; every proof named the leaf asked for and verified against signed roots"
            .to_string(),
    ];
    if ledger.leaves < LEDGER_TARGET_LEAVES {
        lines.push(format!(
            "!! the ledger store has {} versions, fewer than the {} the ledger targets are about",
            thousands(ledger.leaves as f64),
            thousands(LEDGER_TARGET_LEAVES as f64)
        ));
    }
    lines
}

fn proof_line(name: &str, latencies: &Latencies) -> String {
    format!(
        "{:<36}{:>16}   {} proofs; max {:.3}; {:.1} hashes each   (target p99 <= {PROOF_P99_MS_MAX} ms)",
        name,
        format!("{:.3} / {:.3}", latencies.p50_ms, latencies.p99_ms),
        thousands(latencies.count as f64),
        latencies.max_ms,
        latencies.mean_hashes
    )
}

fn ledger_json(ledger: &LedgerFigures) -> serde_json::Value {
    let latencies_json = |latencies: &Latencies| {
        json!({
            "count": latencies.count,
            "p50_ms": latencies.p50_ms,
            "p99_ms": latencies.p99_ms,
            "max_ms": latencies.max_ms,
            "mean_ms": latencies.mean_ms,
            "mean_hashes_per_proof": latencies.mean_hashes,
        })
    };
    json!({
        "store": {
            "versions": ledger.leaves,
            "patients": ledger.patients,
            "observations": ledger.observations,
            "observation_updates": ledger.observation_updates,
            "writes": ledger.writes,
            "checkpoints": ledger.checkpoints,
            "database_bytes": ledger.database_bytes,
            "build_s": ledger.build_s,
        },
        "verify": {
            "versions": ledger.verify.versions,
            "elapsed_s": ledger.verify.elapsed_s,
            "versions_per_s": ledger.verify.versions_per_s(),
            "cpu_s": ledger.verify.cpu_s,
            "cpu_us_per_version": ledger.verify.cpu_us_per_version(),
        },
        "tree": {
            "leaves": ledger.tree.leaves,
            "read_s": ledger.tree.read_s,
            "root_s": ledger.tree.hash_s,
            "elapsed_s": ledger.tree.elapsed_s(),
            "leaves_per_s": ledger.tree.leaves_per_s(),
        },
        "inclusion_proofs": latencies_json(&ledger.inclusion),
        "consistency_proofs": latencies_json(&ledger.consistency),
    })
}

/// How much slower the sealed store is: unsealed throughput over sealed throughput.
fn overhead(unsealed_per_s: f64, sealed_per_s: f64) -> f64 {
    unsealed_per_s / sealed_per_s
}

fn row(name: &str, sealed: String, unsealed: String, ratio: Option<f64>) -> String {
    let ratio = ratio.map(|r| format!("{r:.2}x")).unwrap_or_default();
    format!("{name:<40}{sealed:>12}{unsealed:>14}{ratio:>10}")
}

/// Sealed CPU over unsealed CPU per operation, when both were measured.
fn cost_ratio(sealed_us: Option<f64>, unsealed_us: Option<f64>) -> Option<f64> {
    sealed_us.zip(unsealed_us).map(|(sealed, unsealed)| sealed / unsealed)
}

fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |us| format!("{us:.0}"))
}

fn latencies(run: &WrkRun) -> String {
    format!("{:.1} / {:.1}", run.p50_ms, run.p99_ms)
}

/// `12345.6` → `12,346`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let rounded = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in rounded.chars().enumerate() {
        if index > 0 && (rounded.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && rounded != "0" {
        grouped.insert(0, '-');
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(100_123.4), "100,123");
        assert_eq!(thousands(-1_234_567.0), "-1,234,567");
    }
}
