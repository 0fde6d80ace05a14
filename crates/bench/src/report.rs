//! The figures of one invocation: the printed table, the targets marked met or missed, and
//! the same figures as JSON.

use serde_json::json;

use crate::floor::FloorRun;
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

/// The product targets (issue text): sealed import, import against the floor, read rate
/// and tail, read against nginx, and the cost of sealing.
pub const IMPORT_PER_S_MIN: f64 = 20_000.0;
pub const IMPORT_FLOOR_RATIO_MIN: f64 = 0.50;
pub const READ_PER_S_MIN: f64 = 4_000.0;
pub const READ_P99_MS_MAX: f64 = 10.0;
pub const READ_NGINX_RATIO_MIN: f64 = 0.25;
pub const SEALING_OVERHEAD_MAX: f64 = 1.25;
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
        targets
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
        line(format!("{} · {}", self.machine.cpu, self.machine.date));
        line(format!("load average before: {} · after: {}", self.machine.load_before, self.machine.load_after));
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
        line("targets".to_string());
        for target in self.targets() {
            line(format!("  {:<46}{:>12}   {}", target.name, target.value, if target.met { "met" } else { "MISSED" }));
        }
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
        });
        let targets: Vec<_> = self
            .targets()
            .into_iter()
            .map(|target| json!({"target": target.name, "value": target.value, "met": target.met}))
            .collect();
        json!({
            "machine": {
                "cores": self.machine.cores,
                "cpu": self.machine.cpu,
                "date": self.machine.date,
                "load_average_before": self.machine.load_before,
                "load_average_after": self.machine.load_after,
            },
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
            "nginx_static_2kb": wrk_json(&self.nginx),
            "ratios": ratios,
            "targets": targets,
        })
    }
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
