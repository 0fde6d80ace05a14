//! `medvault-bench`: measures import, read-by-id and create over HTTP on a sealed and an
//! unsealed store, against a plain-SQLite storage floor and nginx serving a static file;
//! the import on a sealed store without a ledger; and `verify` and proofs on a store of a
//! million versions; all in one invocation, and prints the figures (`docs/PERFORMANCE.md`
//! explains them).
//!
//! It also measures login latency and what session checks and authorization cost on reads
//! (`auth.rs`).
//!
//! Run with `cargo run --release -p medvault-bench -- [--quick] [--ledger-only] [--auth-only] [--json PATH]`.

mod audit;
mod auth;
mod backup;
mod cpu;
mod dataset;
mod floor;
mod ledger;
mod nginx;
mod report;
mod search;
mod server;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use medvault_base::Clock as _;

use crate::report::{Figures, LedgerOnly, Machine, ModeFigures, NoLedgerImport};
use crate::server::{BenchServer, Sealing};
use crate::wrk::WrkSettings;

const USAGE: &str = "\
usage: medvault-bench [--quick] [--resources N] [--duration-s S] [--import-connections N]
                      [--ledger-leaves N] [--ledger-only] [--auth-only] [--auth-patients N] [--auth-rounds N]
                      [--json PATH]
       medvault-bench --backup-only [--backup-resources N]
       medvault-bench --search-only [--search-resources N]

  --resources N           generate at least N resources (default 100000; 20000 with --quick)
  --duration-s S          seconds per wrk run (default 10; 3 with --quick)
  --import-connections N  HTTP connections POSTing Bundles in the import phase (default 8)
  --ledger-leaves N       versions in the store that verify and the proofs run on
                          (default 1000000; 100000 with --quick; at least 2000)
  --ledger-only           only build that store and measure verify and proofs (no wrk, nginx)
  --auth-only             only measure logins and checked versus unchecked reads (needs wrk)
  --audit-only            only measure the audit trail's query by patient (in process)
  --audit-records N       audit records for --audit-only (default 1000000; 100000 with --quick)
  --auth-patients N       patients in the clinician's care for the auth reads (default 2000; 500 with --quick)
  --auth-rounds N         interleaved rounds of the three read runs, each run's best kept (default 2)
  --backup-only           only the backup benchmark: medvault against restic on one store
                          (needs restic: apt-get install -y restic)
  --backup-resources N    resources in that store (default 1000000; 100000 with --quick)
  --search-only           only the search benchmark: keyed tokens against a plaintext index, in process
  --search-resources N    resources in each of its two stores (default 1000000; 250000 with --quick)
  --quick                 a short run for development
  --json PATH             also write the figures as JSON to PATH

Needs wrk and nginx, except with --ledger-only (Debian/Ubuntu: apt-get install -y wrk nginx).";

/// Seed of the dataset and of the wrk scripts' id picks.
const SEED: u64 = 0x6d65_6476_6175_6c74;
/// Concurrent connections of every wrk run (the figure).
const WRK_CONNECTIONS: u32 = 32;
const WRK_TIMEOUT_S: u64 = 10;

#[derive(Debug)]
struct Options {
    resources: usize,
    duration_s: u64,
    import_connections: usize,
    ledger_leaves: u64,
    ledger_only: bool,
    auth_only: bool,
    auth_patients: usize,
    auth_rounds: usize,
    audit_only: bool,
    audit_records: u64,
    backup_only: bool,
    backup_resources: usize,
    search_only: bool,
    search_resources: usize,
    json: Option<PathBuf>,
}

/// The allocator `medvault` runs with (crates/cli/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut quick = false;
    let mut resources = None;
    let mut duration_s = None;
    let mut import_connections = 8;
    let mut ledger_leaves = None;
    let mut ledger_only = false;
    let mut auth_only = false;
    let mut auth_patients = None;
    let mut auth_rounds = 2;
    let mut audit_only = false;
    let mut audit_records = None;
    let mut backup_only = false;
    let mut backup_resources = None;
    let mut search_only = false;
    let mut search_resources = None;
    let mut json = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--resources" => resources = Some(value("--resources")?.parse().context("--resources")?),
            "--duration-s" => duration_s = Some(value("--duration-s")?.parse().context("--duration-s")?),
            "--import-connections" => {
                import_connections = value("--import-connections")?.parse().context("--import-connections")?
            }
            "--ledger-leaves" => ledger_leaves = Some(value("--ledger-leaves")?.parse().context("--ledger-leaves")?),
            "--ledger-only" => ledger_only = true,
            "--auth-only" => auth_only = true,
            "--audit-only" => audit_only = true,
            "--audit-records" => audit_records = Some(value("--audit-records")?.parse().context("--audit-records")?),
            "--auth-patients" => auth_patients = Some(value("--auth-patients")?.parse().context("--auth-patients")?),
            "--auth-rounds" => auth_rounds = value("--auth-rounds")?.parse().context("--auth-rounds")?,
            "--backup-only" => backup_only = true,
            "--backup-resources" => {
                backup_resources = Some(value("--backup-resources")?.parse().context("--backup-resources")?)
            }
            "--search-only" => search_only = true,
            "--search-resources" => {
                search_resources = Some(value("--search-resources")?.parse().context("--search-resources")?)
            }
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--help" | "-h" => return Ok(None),
            other => anyhow::bail!("unknown argument '{other}'"),
        }
    }
    let options = Options {
        resources: resources.unwrap_or(if quick { 20_000 } else { 100_000 }),
        duration_s: duration_s.unwrap_or(if quick { 3 } else { 10 }),
        import_connections,
        ledger_leaves: ledger_leaves.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        ledger_only,
        auth_only,
        auth_patients: auth_patients.unwrap_or(if quick { 500 } else { 2000 }),
        auth_rounds,
        audit_only,
        audit_records: audit_records.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        backup_only,
        backup_resources: backup_resources.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        search_only,
        search_resources: search_resources.unwrap_or(if quick { 250_000 } else { 1_000_000 }),
        json,
    };
    anyhow::ensure!(options.auth_patients > 0, "--auth-patients must be positive");
    anyhow::ensure!((1..=20).contains(&options.auth_rounds), "--auth-rounds must be 1 to 20");
    anyhow::ensure!(options.resources > 0, "--resources must be positive");
    anyhow::ensure!(options.duration_s > 0, "--duration-s must be positive");
    anyhow::ensure!((1..=64).contains(&options.import_connections), "--import-connections must be 1 to 64");
    anyhow::ensure!(
        options.ledger_leaves >= ledger::LEAVES_MIN && options.ledger_leaves <= u64::from(u32::MAX),
        "--ledger-leaves must be {} to {}",
        ledger::LEAVES_MIN,
        u32::MAX
    );
    Ok(Some(options))
}

/// The external programs the benchmark drives.
struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
}

fn find_tools() -> anyhow::Result<Tools> {
    let wrk = find_program("wrk");
    let nginx = find_program("nginx");
    match (wrk, nginx) {
        (Some(wrk), Some(nginx)) => Ok(Tools { wrk, nginx }),
        (wrk, nginx) => {
            let missing: Vec<&str> =
                [("wrk", wrk.is_none()), ("nginx", nginx.is_none())].iter().filter(|m| m.1).map(|m| m.0).collect();
            anyhow::bail!(
                "{} not found. The benchmark drives wrk (HTTP load) and nginx (the static-file \
                 yardstick); install them first, e.g. on Debian or Ubuntu: \
                 sudo apt-get update && sudo apt-get install -y wrk nginx",
                missing.join(" and ")
            )
        }
    }
}

/// Looks in `PATH`, and in the sbin directories where nginx lives but which a user's `PATH`
/// often lacks.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|directory| directory.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    path.is_file()
}

fn wrk_settings(options: &Options) -> WrkSettings {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    WrkSettings {
        threads: u32::try_from(cores).unwrap_or(2).clamp(1, WRK_CONNECTIONS),
        connections: WRK_CONNECTIONS,
        duration_s: options.duration_s,
        timeout_s: WRK_TIMEOUT_S,
    }
}

fn run(options: &Options) -> anyhow::Result<()> {
    if options.backup_only {
        return backup::run(options.backup_resources);
    }
    if options.search_only {
        let figures = search::run(options.search_resources, SEED)?;
        println!();
        print!("{}", figures.table());
        return write_json(options, &json_with_machine(figures.to_json()));
    }
    if options.ledger_only {
        return run_ledger_only(options);
    }
    if options.audit_only {
        let figures = audit::run(options.audit_records, SEED)?;
        println!();
        print!("{}", figures.table());
        return write_json(options, &json_with_machine(figures.to_json()));
    }
    let tools = find_tools()?;
    if options.auth_only {
        let figures = auth::run(&tools.wrk, wrk_settings(options), options.auth_patients, options.auth_rounds)?;
        println!();
        print!("{}", figures.table());
        return write_json(options, &json_with_machine(figures.to_json()));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load_before = load_average();
    let settings = wrk_settings(options);

    progress(format!("generating at least {} resources", report::thousands(options.resources as f64)));
    let generation_started = Instant::now();
    let dataset = dataset::generate(options.resources, SEED)?;
    let generation_s = generation_started.elapsed().as_secs_f64();
    progress(format!(
        "generated {} resources in {} bundles in {generation_s:.1} s",
        report::thousands(dataset.resources as f64),
        report::thousands(dataset.bundles.len() as f64)
    ));

    progress("storage floor: plain JSON rows into SQLite (WAL, synchronous=FULL), one transaction per Bundle");
    let floor = floor::run(&dataset)?;
    progress(format!("storage floor: {} resources/s", report::thousands(floor.resources_per_s())));

    // All stores are imported first, then each load runs on the sealed and the unsealed
    // server back to back (and nginx between the reads and the creates), so that paired
    // figures come from neighbouring moments of a shared machine. The store without a
    // ledger is imported right before the sealed one, its pair.
    let no_ledger = import_without_ledger(&dataset, options.import_connections)?;
    let sealed = ModeRun::import(Sealing::Sealed, &dataset, options.import_connections)?;
    let unsealed = ModeRun::import(Sealing::DangerUnsealed, &dataset, options.import_connections)?;
    let sealed_read = sealed.read(&tools, settings)?;
    let unsealed_read = unsealed.read(&tools, settings)?;
    progress(format!("nginx: static 2 KB file, wrk, {} connections, {} s", settings.connections, settings.duration_s));
    let nginx = {
        let nginx = nginx::Nginx::start(&tools.nginx)?;
        let script = wrk::write_file(nginx.directory(), "static.lua", &wrk::static_script(nginx::STATIC_PATH, SEED))?;
        wrk::run(&tools.wrk, settings, &format!("http://{}", nginx.address), &script, None)?
    };
    let (sealed_create, sealed_created_stored) = sealed.create(&tools, settings)?;
    let (unsealed_create, unsealed_created_stored) = unsealed.create(&tools, settings)?;
    let sealed = sealed.finish(sealed_read, sealed_create, sealed_created_stored)?;
    let unsealed = unsealed.finish(unsealed_read, unsealed_create, unsealed_created_stored)?;
    // Last, on its own store, with the servers stopped: it is not paired with anything.
    let ledger = ledger::run(options.ledger_leaves, SEED)?;

    let figures = Figures {
        machine: Machine {
            cores,
            cpu: cpu_model(),
            date: medvault_base::time::format_instant(medvault_base::SystemClock.now_ms()),
            load_before,
            load_after: load_average(),
        },
        resources: dataset.resources,
        bundles: dataset.bundles.len(),
        body_bytes: dataset.body_bytes,
        generation_s,
        wrk: settings,
        import_connections: options.import_connections,
        floor,
        sealed,
        unsealed,
        nginx,
        no_ledger,
        ledger,
    };
    // Authentication on a store of its own, with the other servers stopped.
    let auth = auth::run(&tools.wrk, settings, options.auth_patients, options.auth_rounds)?;
    println!();
    print!("{}", figures.table());
    print!("{}", auth.table());
    let mut json = figures.to_json();
    json["auth"] = auth.to_json();
    write_json(options, &json)
}

/// A section's JSON with the machine it ran on.
fn json_with_machine(mut section: serde_json::Value) -> serde_json::Value {
    section["machine"] = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu_model(),
        "date": medvault_base::time::format_instant(medvault_base::SystemClock.now_ms()),
    });
    section
}

/// `--ledger-only`: the in-process ledger figures, without wrk or nginx.
fn run_ledger_only(options: &Options) -> anyhow::Result<()> {
    let load_before = load_average();
    let date = medvault_base::time::format_instant(medvault_base::SystemClock.now_ms());
    let ledger = ledger::run(options.ledger_leaves, SEED)?;
    let figures = LedgerOnly {
        machine: Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu: cpu_model(),
            date,
            load_before,
            load_after: load_average(),
        },
        ledger,
    };
    println!();
    print!("{}", figures.table());
    write_json(options, &figures.to_json())
}

fn write_json(options: &Options, figures: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(figures)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        progress(format!("figures written to {}", path.display()));
    }
    Ok(())
}

/// Imports the dataset, as the sealed store is imported, into a sealed store opened
/// without a ledger, and stops it: only its import is measured.
fn import_without_ledger(dataset: &dataset::Dataset, import_connections: usize) -> anyhow::Result<NoLedgerImport> {
    let sealing = Sealing::DangerNoLedger;
    let label = sealing.label();
    let (server, import, _imported) = start_and_import(sealing, dataset, import_connections)?;
    let checkpoint = server.latest_checkpoint_size()?;
    anyhow::ensure!(checkpoint.is_none(), "[{label}] the store signed a checkpoint of size {checkpoint:?}");
    server.stop()?;
    Ok(NoLedgerImport {
        resources: import.resources,
        import_s: import.elapsed.as_secs_f64(),
        server_cpu_s: import.server_cpu_s,
    })
}

/// Serves a fresh store in `sealing` mode, imports the dataset, and checks that the store
/// holds every resource and reads a sample back.
fn start_and_import(
    sealing: Sealing,
    dataset: &dataset::Dataset,
    import_connections: usize,
) -> anyhow::Result<(BenchServer, server::ImportRun, u64)> {
    let label = sealing.label();
    let server = BenchServer::start(sealing)?;
    progress(format!("[{label}] import: {} Bundles over {import_connections} connections", dataset.bundles.len()));
    let import = server::import(&server, dataset, import_connections)?;
    let imported = server.resources_stored()?;
    anyhow::ensure!(
        imported == dataset.resources as u64,
        "[{label}] the store holds {imported} resources after the import, expected {}",
        dataset.resources
    );
    progress(format!("[{label}] import: {} resources/s", report::thousands(import.resources_per_s())));
    server::verify_reads(&server, &import.references, report::READS_CHECKED)?;
    Ok((server, import, imported))
}

/// One fresh store in one sealing mode, served and imported, with its wrk scripts.
struct ModeRun {
    sealing: Sealing,
    server: BenchServer,
    import: server::ImportRun,
    imported: u64,
    url: String,
    read_script: PathBuf,
    create_script: PathBuf,
    _scripts: medvault_testkit::TempDir,
}

impl ModeRun {
    /// Starts a server on a fresh store and imports the dataset into it.
    fn import(sealing: Sealing, dataset: &dataset::Dataset, import_connections: usize) -> anyhow::Result<Self> {
        let label = sealing.label();
        let (server, import, imported) = start_and_import(sealing, dataset, import_connections)?;
        // A fresh store: one leaf per imported resource and one per block of audit records
        // (the imports' own, and the reads' just verified, once settled), all covered by the
        // latest checkpoint.
        let ledger = server.settled_ledger()?;
        anyhow::ensure!(
            ledger.leaves == imported + ledger.audit_blocks && ledger.checkpoint == Some(ledger.leaves),
            "[{label}] after importing {imported} resources the ledger holds {} leaves ({} audit blocks), \
             and the latest checkpoint covers {:?}",
            ledger.leaves,
            ledger.audit_blocks,
            ledger.checkpoint
        );

        let scripts = medvault_testkit::TempDir::new(&format!("bench-scripts-{label}"));
        let paths: String = import.references.iter().map(|reference| format!("/fhir/{reference}\n")).collect();
        let patients: String = import
            .references
            .iter()
            .filter_map(|reference| reference.strip_prefix("Patient/"))
            .map(|id| format!("{id}\n"))
            .collect();
        anyhow::ensure!(!patients.is_empty(), "the dataset has no Patient");
        let paths_file = wrk::write_file(scripts.path(), "read-paths.txt", &paths)?;
        let patients_file = wrk::write_file(scripts.path(), "patients.txt", &patients)?;
        let read_script = wrk::write_file(scripts.path(), "read.lua", &wrk::read_script(&paths_file, SEED))?;
        let create_script = wrk::write_file(scripts.path(), "create.lua", &wrk::create_script(&patients_file, SEED))?;
        let url = format!("http://{}", server.address);
        Ok(Self { sealing, server, import, imported, url, read_script, create_script, _scripts: scripts })
    }

    fn read(&self, tools: &Tools, settings: WrkSettings) -> anyhow::Result<wrk::WrkRun> {
        progress(format!(
            "[{}] read by id: wrk, {} connections, {} s",
            self.sealing.label(),
            settings.connections,
            settings.duration_s
        ));
        let run = self.measured_wrk(tools, settings, &self.read_script)?;
        progress(format!(
            "[{}] read by id: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
            self.sealing.label(),
            run.requests_per_s(),
            run.p50_ms,
            run.p99_ms
        ));
        Ok(run)
    }

    /// A wrk run, with the CPU this process (the server; wrk is another process) spent in it.
    fn measured_wrk(&self, tools: &Tools, settings: WrkSettings, script: &Path) -> anyhow::Result<wrk::WrkRun> {
        let cpu_started = cpu::process_s();
        let mut run = wrk::run(&tools.wrk, settings, &self.url, script, Some(self.server.token()))?;
        run.server_cpu_s = cpu::process_s().zip(cpu_started).map(|(end, start)| end - start);
        Ok(run)
    }

    /// The create run, and how many new resources the store holds after it.
    fn create(&self, tools: &Tools, settings: WrkSettings) -> anyhow::Result<(wrk::WrkRun, u64)> {
        let label = self.sealing.label();
        progress(format!("[{label}] create: wrk, {} connections, {} s", settings.connections, settings.duration_s));
        let create = self.measured_wrk(tools, settings, &self.create_script)?;
        let created_stored = self.server.resources_stored()?.saturating_sub(self.imported);
        // wrk stops counting when its time is up; creates then in flight may still be stored.
        let answered_ok = create.requests - create.status_errors.min(create.requests);
        anyhow::ensure!(
            created_stored >= answered_ok,
            "[{label}] wrk saw {answered_ok} creates answered, the store holds {created_stored} new resources"
        );
        Ok((create, created_stored))
    }

    fn finish(self, read: wrk::WrkRun, create: wrk::WrkRun, created_stored: u64) -> anyhow::Result<ModeFigures> {
        self.server.stop()?;
        Ok(ModeFigures {
            import_resources: self.import.resources,
            import_s: self.import.elapsed.as_secs_f64(),
            import_server_cpu_s: self.import.server_cpu_s,
            read,
            create,
            created_stored,
        })
    }
}

fn progress(message: impl AsRef<str>) {
    eprintln!("· {}", message.as_ref());
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
