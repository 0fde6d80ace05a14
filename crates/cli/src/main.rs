//! `medvault`: the one binary. Every command is scriptable without prompts; exit codes are
//! listed in `ExitCode` and in the README.

mod audit;
mod backup;
mod demo;
mod fetch;
mod import;
mod ledger;
mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use medvault_crypto::master::{KeyFile, Passphrase};
use medvault_crypto::{MasterKey, MasterKeySource};
use medvault_server::alert_sink::{AlertSink, TlsSyslog};
use medvault_server::auth::Role;
use medvault_store::{Store, StoreError};

/// mimalloc instead of glibc's malloc: allocation was a quarter of the import path's CPU
/// (parsed JSON trees are many small objects freed across threads); see docs/PERFORMANCE.md.
/// Built without transparent huge pages (the workspace's `no_thp` feature): see Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, stable for scripts.
pub mod exit {
    pub const FAILURE: u8 = 1;
    /// Usage errors (clap's own code).
    pub const USAGE: u8 = 2;
    /// The data directory is not in the state the command needs (exists for `init`, missing otherwise).
    pub const STORE_STATE: u8 = 3;
    /// The master key is missing, unreadable, too widely readable, or does not open the store.
    pub const KEY: u8 = 4;
    /// An import finished but some entries were rejected.
    pub const IMPORT_REJECTED: u8 = 5;
    /// Stored data failed an integrity check.
    pub const INTEGRITY: u8 = 6;
}

#[derive(Parser, Debug)]
#[command(name = "medvault", version, about = "A FHIR R4 server that holds while under attack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new store (keys, database) in a directory that does not exist or is empty.
    Init(InitArgs),
    /// Serve the FHIR API.
    Serve(ServeArgs),
    /// First run: create a store with a demo dataset and tokens if there is none, then serve it.
    Demo(DemoArgs),
    /// Import FHIR Bundles (transaction, batch, collection) and Bulk Data NDJSON files.
    Import(ImportArgs),
    /// Create, list and revoke the access tokens of service clients.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage user accounts: create, unlock, disable, reset the second factor, assign patients.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Register service clients that authenticate with signed JWTs (SMART Backend Services).
    #[command(subcommand)]
    Client(users::ClientCommand),
    /// Incident tools over the audit trail: breach scoping, timelines, a patient's access report.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Review break-glass accesses.
    #[command(subcommand)]
    BreakGlass(users::BreakGlassCommand),
    /// Print the current TOTP code of a secret (for scripts; like `oathtool --totp -b`).
    TotpCode {
        /// The environment variable that holds the base32 secret.
        #[arg(long, value_name = "VARIABLE")]
        secret_env: String,
    },
    /// Show what the store holds.
    Status(StatusArgs),
    /// Recompute the ledger from every stored version and check every checkpoint; exit 6 on any finding.
    Verify(ledger::VerifyArgs),
    /// Checkpoints and proofs of the tamper-evident ledger.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Witness a log from elsewhere: check consistency, cosign, keep.
    #[command(subcommand)]
    Witness(ledger::WitnessCommand),
    /// Encrypted, append-only backups: keygen, init, create, list, verify, restore, drill, prune.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Rebuild the search index online (after an upgrade, a restore, or to rotate its key);
    /// `serve` also does it by itself when it is needed.
    Reindex(ReindexArgs),
}

#[derive(Args, Debug)]
struct ReindexArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Build the index under a new search key, then erase the old key.
    #[arg(long)]
    rotate_key: bool,
    /// Rebuild even if the index is current.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The data directory.
    #[arg(long, env = "MEDVAULT_DATA_DIR", default_value = "medvault-data")]
    data_dir: PathBuf,
    /// The master key file [default: <data-dir>.key, beside the data directory].
    #[arg(long, env = "MEDVAULT_KEY_FILE", conflicts_with = "passphrase_env")]
    key_file: Option<PathBuf>,
    /// Derive the master key from a passphrase held in this environment variable.
    #[arg(long, value_name = "VARIABLE")]
    passphrase_env: Option<String>,
}

#[derive(Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Also write a self-signed TLS certificate for these host names, for evaluation.
    #[arg(long, value_name = "HOSTNAME", num_args = 1..)]
    self_signed_cert: Vec<String>,
    /// Create the first administrator account with this name (with --admin-password-env).
    #[arg(long, requires = "admin_password_env")]
    admin_username: Option<String>,
    /// The environment variable holding the first administrator's password.
    #[arg(long, value_name = "VARIABLE", requires = "admin_username")]
    admin_password_env: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on. Anything but loopback needs TLS.
    #[arg(long, env = "MEDVAULT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PEM certificate chain for TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Fixed public base URL (e.g. behind a proxy), used in Location and paging links.
    #[arg(long)]
    public_base_url: Option<String>,
    /// Also send audit alerts to this syslog receiver (RFC 5424 over UDP), e.g. siem.example:514.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "alert_syslog_tls")]
    alert_syslog: Option<String>,
    /// Also send audit alerts to this syslog receiver over TLS (RFC 5425), e.g.
    /// siem.example:6514; its certificate must chain to --alert-syslog-ca.
    #[arg(long, value_name = "HOST:PORT", requires = "alert_syslog_ca")]
    alert_syslog_tls: Option<String>,
    /// The certificates (PEM) that --alert-syslog-tls trusts for the receiver.
    #[arg(long, value_name = "FILE", requires = "alert_syslog_tls")]
    alert_syslog_ca: Option<PathBuf>,
    /// Refuse all writes (read-only lockdown) when an account changes over 100 records a
    /// minute, until an administrator lifts it (POST /admin/lockdown/lift).
    #[arg(long)]
    lockdown_on_mass_modification: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Files to import: `.json` Bundles or `.ndjson` resources, one per line.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a token for a named service client; it is printed once and stored only as a digest.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        client: String,
        /// SMART system scopes, space-separated, e.g. 'system/Observation.rs system/Patient.r'
        /// (default: none, which is enough to fetch ledger checkpoints as a witness).
        #[arg(long, default_value = "")]
        scope: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (clients, roles, state; never the tokens).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke every token of a client; takes effect on the next request.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        client: String,
    },
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Init(args) => init(args),
        Command::Serve(args) => serve(args, None),
        Command::Demo(args) => demo::run(args.serve),
        Command::Import(args) => import::run(&args.store, &args.files, args.quiet),
        Command::Token(command) => token(command),
        Command::User(command) => users::user(command),
        Command::BreakGlass(command) => users::break_glass(command),
        Command::Client(command) => users::client(command),
        Command::Audit(command) => audit::audit(command),
        Command::TotpCode { secret_env } => users::totp_code(&secret_env),
        Command::Status(args) => status(args),
        Command::Verify(args) => ledger::verify(args),
        Command::Ledger(command) => ledger::ledger(command),
        Command::Witness(command) => ledger::witness(command),
        Command::Backup(command) => backup::run(command),
        Command::Reindex(args) => reindex(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code_of(&error))
        }
    }
}

fn exit_code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(store_error) = cause.downcast_ref::<StoreError>() {
            return match store_error {
                StoreError::AlreadyExists(_) | StoreError::NotFound(_) | StoreError::NotAStore(_) => exit::STORE_STATE,
                StoreError::WrongMasterKey | StoreError::MasterKeySourceMismatch { .. } | StoreError::Crypto(_) => {
                    exit::KEY
                }
                StoreError::Integrity(_) => exit::INTEGRITY,
                _ => exit::FAILURE,
            };
        }
        if cause.downcast_ref::<medvault_crypto::CryptoError>().is_some() {
            return exit::KEY;
        }
    }
    exit::FAILURE
}

fn init_logging() {
    let level = match std::env::var("MEDVAULT_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false).init();
}

impl StoreArgs {
    fn key_file_path(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| default_key_file(&self.data_dir))
    }

    fn source(&self) -> anyhow::Result<Box<dyn MasterKeySource>> {
        match &self.passphrase_env {
            Some(variable) => {
                let passphrase = std::env::var(variable)
                    .with_context(|| format!("the environment variable {variable} (--passphrase-env) is not set"))?;
                if passphrase.chars().count() < 15 {
                    anyhow::bail!("the passphrase in {variable} is shorter than 15 characters");
                }
                Ok(Box::new(Passphrase(zeroize::Zeroizing::new(passphrase))))
            }
            None => Ok(Box::new(KeyFile { path: self.key_file_path() })),
        }
    }

    fn open(&self) -> anyhow::Result<Store> {
        let source = self.source()?;
        Store::open(&self.data_dir, source.as_ref(), Arc::new(medvault_base::SystemClock))
            .with_context(|| format!("cannot open the store in {}", self.data_dir.display()))
    }
}

fn default_key_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "medvault-data".into());
    name.push(".key");
    data_dir.with_file_name(name)
}

/// Creates the store and its key file.
fn create_store(args: &StoreArgs) -> anyhow::Result<Store> {
    if args.data_dir.join(medvault_store::sqlite::DATABASE_FILE).exists() {
        return Err(StoreError::AlreadyExists(args.data_dir.display().to_string()).into());
    }
    if args.passphrase_env.is_none() {
        let key_file = args.key_file_path();
        if key_file.exists() {
            anyhow::bail!(StoreError::AlreadyExists(format!(
                "the key file {} (give another --key-file, or move it away)",
                key_file.display()
            )));
        }
        MasterKey::generate()?.create_key_file(&key_file)?;
    }
    let source = args.source()?;
    let store = Store::create(&args.data_dir, source.as_ref(), Arc::new(medvault_base::SystemClock))
        .with_context(|| format!("cannot create a store in {}", args.data_dir.display()))?;
    Ok(store)
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    // Read the administrator's password before creating anything, so a missing variable
    // leaves no half-made store behind.
    let admin = match (&args.admin_username, &args.admin_password_env) {
        (Some(username), Some(variable)) => {
            medvault_server::accounts::check_username(username)
                .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            let password = std::env::var(variable)
                .map(zeroize::Zeroizing::new)
                .with_context(|| format!("the environment variable {variable} (--admin-password-env) is not set"))?;
            medvault_auth::password::check_new_password(&password, true, &[username])
                .map_err(|rejected| anyhow::anyhow!("password refused: {}", rejected.reason))?;
            Some((username.clone(), password))
        }
        _ => None,
    };
    let store = create_store(&args.store)?;
    println!("Created a medvault store in {}", args.store.data_dir.display());
    if args.store.passphrase_env.is_none() {
        println!(
            "Master key file: {} (keep it apart from the data; without it the data cannot be read)",
            args.store.key_file_path().display()
        );
    }
    if !args.self_signed_cert.is_empty() {
        let (certificate, key) = write_self_signed_certificate(&args.store.data_dir, &args.self_signed_cert)?;
        println!(
            "Self-signed TLS certificate for evaluation: --tls-cert {} --tls-key {}",
            certificate.display(),
            key.display()
        );
    }
    match admin {
        Some((username, password)) => {
            let account = medvault_server::accounts::NewAccount {
                username: &username,
                role: Role::Administrator,
                password: &password,
                fhir_user: None,
                scopes: None,
                mfa: true,
            };
            let (_, enrolment) =
                medvault_server::accounts::create_account(&store, medvault_auth::password::PasswordParams::DEFAULT, &account)
                    .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            println!("Administrator '{username}' created (reads no clinical data).");
            if let Some(enrolment) = enrolment {
                users::print_enrolment(&username, &enrolment);
            }
        }
        None => println!(
            "No accounts yet: create them with `medvault user create` (an administrator first), and service clients with `medvault token create`."
        ),
    }
    store.close();
    Ok(ExitCode::SUCCESS)
}

fn write_self_signed_certificate(data_dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let tls_dir = data_dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let certified = rcgen::generate_simple_self_signed(names.to_vec()).context("cannot generate a certificate")?;
    let certificate_path = tls_dir.join("cert.pem");
    let key_path = tls_dir.join("key.pem");
    std::fs::write(&certificate_path, certified.cert.pem())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut key_file = options.open(&key_path).with_context(|| format!("cannot create {}", key_path.display()))?;
    std::io::Write::write_all(&mut key_file, certified.signing_key.serialize_pem().as_bytes())?;
    Ok((certificate_path, key_path))
}

fn serve(args: ServeArgs, store: Option<Store>) -> anyhow::Result<ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => Some(medvault_server::serve::tls_config(certificate, key)?),
        _ => None,
    };
    medvault_server::serve::check_plaintext_allowed(args.listen, tls.is_some())?;
    let store = match store {
        Some(store) => store,
        None => args.store.open()?,
    };
    let store = Arc::new(store);
    reindex_in_background(store.clone())?;
    let service = medvault_server::Service::new(store.clone());
    let config = medvault_server::http::HttpConfig {
        scheme: if tls.is_some() { "https" } else { "http" },
        fallback_authority: args.listen.to_string(),
        public_base: args.public_base_url.clone().map(|b| b.trim_end_matches('/').to_string()),
    };
    let alert_sink = match (&args.alert_syslog, &args.alert_syslog_tls, &args.alert_syslog_ca) {
        (Some(target), _, _) => {
            let address = std::net::ToSocketAddrs::to_socket_addrs(target.as_str())
                .with_context(|| format!("--alert-syslog '{target}' is not HOST:PORT"))?
                .next()
                .with_context(|| format!("--alert-syslog '{target}' resolves to no address"))?;
            Some(AlertSink::udp(address).context("cannot open a socket for --alert-syslog")?)
        }
        (None, Some(target), Some(ca)) => Some(AlertSink::Tls(
            TlsSyslog::start(target, ca).map_err(|error| anyhow::anyhow!("--alert-syslog-tls: {error}"))?,
        )),
        _ => None,
    };
    let state = medvault_server::http::AppState::with_alerts(
        service,
        config.clone(),
        alert_sink,
        args.lockdown_on_mass_modification,
    );
    let app = medvault_server::http::router(state);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| medvault_server::serve::ServeError::Bind(args.listen, e))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, tls = config.scheme == "https", "medvault serving FHIR R4 at {}://{address}/fhir", config.scheme);
        println!("Serving FHIR R4 at {}://{address}/fhir (Ctrl-C to stop)", config.scheme);
        medvault_server::serve::serve(listener, app, tls, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    store.close();
    tracing::info!("stopped; every acknowledged write is on disk");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { store, client, scope, expires_in_days } => {
            let scopes = medvault_server::accounts::check_scopes(Role::Service, &scope)
                .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            if client.is_empty()
                || client.len() > medvault_base::limits::CLIENT_NAME_BYTES_MAX
                || client.chars().any(char::is_control)
            {
                anyhow::bail!(
                    "the client name must be 1 to {} printable bytes",
                    medvault_base::limits::CLIENT_NAME_BYTES_MAX
                );
            }
            let store = store.open()?;
            let expires_ms = expires_in_days.map(|days| store.clock().now_ms() + i64::from(days) * 86_400_000);
            let token = store.create_service_token(&client, &scopes, expires_ms)?;
            medvault_server::audit::account_change(
                &store,
                "console",
                "operator",
                medvault_audit::EventKind::TokenCreate,
                &client,
                &format!("scopes={scopes}"),
            )
            .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            println!("{}", token.as_str());
            eprintln!("service client '{client}', scopes '{scopes}' (the token is shown once)");
            store.close();
        }
        TokenCommand::List { store } => {
            let store = store.open()?;
            println!("{:<24} {:<32} {:<26} state", "client", "scopes", "created");
            let now_ms = store.clock().now_ms();
            for row in store.tokens()? {
                let state = match (row.revoked_ms, row.expires_ms) {
                    (Some(at), _) => format!("revoked {}", medvault_base::time::format_instant(at)),
                    (None, Some(expires)) if expires <= now_ms => "expired".to_string(),
                    (None, Some(expires)) => format!("active until {}", medvault_base::time::format_instant(expires)),
                    (None, None) => "active".to_string(),
                };
                println!(
                    "{:<24} {:<32} {:<26} {state}",
                    row.client,
                    if row.scopes.is_empty() { "-" } else { row.scopes.as_str() },
                    medvault_base::time::format_instant(row.created_ms)
                );
            }
            store.close();
        }
        TokenCommand::Revoke { store, client } => {
            let store = store.open()?;
            let revoked = store.revoke_tokens(&client)?;
            medvault_server::audit::account_change(
                &store,
                "console",
                "operator",
                medvault_audit::EventKind::TokenRevoke,
                &client,
                &format!("revoked={revoked}"),
            )
            .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
            println!("revoked {revoked} token(s) of '{client}'");
            store.close();
            if revoked == 0 {
                return Ok(ExitCode::from(exit::FAILURE));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `medvault reindex`: builds a new index generation while the server may keep serving
/// (another process; SQLite serializes the writes), then switches to it.
fn reindex(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("reindex [{bar:30}] {pos}/{len} resources ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let options = medvault_store::search::ReindexOptions { rotate_key: args.rotate_key, force: args.force };
    let report = store.reindex(options, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    store.close();
    let report = report?;
    if report.nothing_to_do {
        println!("the search index (generation {}) is current; nothing to do (--force rebuilds it)", report.generation);
    } else {
        println!(
            "search index generation {} built: {} resources indexed{}",
            report.generation,
            report.resources,
            if report.rotated_key { "; the old search key was erased" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Rebuilds the search index in the background when it is needed (an upgrade, a restore,
/// new definitions): reads and writes are served meanwhile, searches answer 503 until done.
fn reindex_in_background(store: Arc<Store>) -> anyhow::Result<()> {
    if !store.search_needs_reindex()? {
        return Ok(());
    }
    tracing::warn!("the search index must be rebuilt; searches answer 503 until it is done");
    std::thread::Builder::new().name("medvault-reindex".into()).spawn(move || {
        let mut logged = 0u64;
        let result = store.reindex(Default::default(), &mut |done, total| {
            let percent = done * 100 / total.max(1);
            if percent >= logged + 10 {
                logged = percent;
                tracing::info!(done, total, "reindexing: {percent} %");
            }
        });
        match result {
            Ok(report) => {
                tracing::info!(generation = report.generation, resources = report.resources, "search index rebuilt")
            }
            Err(error) => tracing::error!(%error, "the search index could not be rebuilt; run `medvault reindex`"),
        }
    })?;
    Ok(())
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let status = store.status()?;
    let search = store.search_status()?;
    store.close();
    let resources: u64 = status.by_type.iter().map(|(_, current, _)| current).sum();
    let versions: u64 = status.by_type.iter().map(|(_, _, versions)| versions).sum();
    if args.json {
        let by_type: serde_json::Map<String, serde_json::Value> = status
            .by_type
            .iter()
            .map(|(name, current, versions)| {
                (name.clone(), serde_json::json!({"resources": current, "versions": versions}))
            })
            .collect();
        let report = serde_json::json!({
            "data_dir": status.data_dir,
            "store_id": status.store_id,
            "format_version": status.format_version,
            "master_key_source": status.master_key_source,
            "resources": resources,
            "versions": versions,
            "by_type": by_type,
            "data_keys": status.data_keys,
            "tokens_active": status.tokens_active,
            "audit_blocks": status.audit_blocks,
            "audit_records": status.audit_records,
            "database_bytes": status.database_bytes,
            "ledger_leaves": status.ledger_leaves,
            "checkpoint_size": status.checkpoint_size,
            "search_index": {
                "active_generation": search.active_generation,
                "searchable": search.searchable,
                "building_generation": search.building_generation,
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "store        {} (id {}, format {})",
            status.data_dir.display(),
            status.store_id,
            status.format_version
        );
        println!("master key   {}", status.master_key_source);
        println!("resources    {resources} current, {versions} versions, sealed under {} data keys", status.data_keys);
        println!(
            "ledger       {} leaves, latest signed checkpoint of size {}",
            status.ledger_leaves,
            status.checkpoint_size.map_or("none".to_string(), |s| s.to_string())
        );
        println!(
            "search index {}",
            match (search.searchable, search.active_generation, search.building_generation) {
                (true, Some(generation), None) => format!("generation {generation}, current"),
                (_, _, Some(building)) => format!("generation {building} being built (run `medvault reindex`)"),
                _ => "must be rebuilt (`medvault reindex`)".to_string(),
            }
        );
        println!("tokens       {} active", status.tokens_active);
        println!("audit trail  {} records in {} blocks", status.audit_records, status.audit_blocks);
        println!("database     {} bytes", status.database_bytes);
        for (name, current, versions) in &status.by_type {
            println!("  {name:<28} {current:>8} {versions:>8}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
