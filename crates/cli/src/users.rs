//! `medvault user`, `medvault break-glass` and `medvault totp-code`: accounts from the
//! console, without prompts (passwords come from environment variables, never arguments,
//! which other users of the machine can read in the process list).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use medvault_auth::password::PasswordParams;
use medvault_server::accounts::{self, Enrolment, NewAccount};
use medvault_server::auth::Role;
use medvault_server::ApiError;

use crate::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account; prints its second-factor enrolment (secret, otpauth URI, QR
    /// code, recovery codes) once.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// administrator, clinician, auditor or patient.
        #[arg(long)]
        role: String,
        /// The environment variable that holds the password.
        #[arg(long, value_name = "VARIABLE")]
        password_env: String,
        /// The FHIR resource the user is: Practitioner/<id> (clinicians) or Patient/<id> (patients).
        #[arg(long)]
        fhir_user: Option<String>,
        /// SMART scopes, space-separated (default: the role's: user/*.cruds for clinicians,
        /// patient/*.rs for patients, none otherwise).
        #[arg(long)]
        scope: Option<String>,
        /// Auditors only: no second factor (the password must then be 15 characters or more).
        #[arg(long)]
        no_mfa: bool,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lift a lockout.
    Unlock(UserTarget),
    /// Disable an account and end its sessions.
    Disable(UserTarget),
    /// Re-enable a disabled account.
    Enable(UserTarget),
    /// End every session of an account (effective on its next request).
    RevokeSessions(UserTarget),
    /// Replace the second factor and recovery codes; prints the new enrolment; ends sessions.
    ResetMfa(UserTarget),
    /// Set a new password (from an environment variable); ends sessions.
    Password {
        #[command(flatten)]
        target: UserTarget,
        #[arg(long, value_name = "VARIABLE")]
        password_env: String,
    },
    /// Assign a clinician to a patient (a care relationship besides CareTeams and Encounters).
    Assign {
        #[command(flatten)]
        target: UserTarget,
        /// Patient/<id>
        #[arg(long)]
        patient: String,
    },
    /// Remove an explicit assignment.
    Unassign {
        #[command(flatten)]
        target: UserTarget,
        #[arg(long)]
        patient: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct UserTarget {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    username: String,
}

#[derive(Subcommand, Debug)]
pub enum BreakGlassCommand {
    /// Break-glass accesses, newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only those awaiting review.
        #[arg(long)]
        open: bool,
    },
    /// Close the review of one break-glass access with a decision.
    Review {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        grant: i64,
        /// justified or unjustified
        #[arg(long)]
        decision: String,
        /// The auditor who decides (recorded with the decision).
        #[arg(long)]
        auditor: String,
    },
}

fn api(error: ApiError) -> anyhow::Error {
    let text = error.issues.first().map_or_else(|| format!("status {}", error.status), |i| i.diagnostics.clone());
    anyhow::anyhow!(text)
}

fn read_password(variable: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    std::env::var(variable)
        .map(zeroize::Zeroizing::new)
        .with_context(|| format!("the environment variable {variable} (--password-env) is not set"))
}

pub fn print_enrolment(username: &str, enrolment: &Enrolment) {
    println!("Second factor for '{username}' (shown once; give it to the user in person):");
    println!("  TOTP secret:  {}", enrolment.secret_base32.as_str());
    println!("  otpauth URI:  {}", enrolment.otpauth_uri.as_str());
    match medvault_auth::totp::qr_for_terminal(&enrolment.otpauth_uri) {
        Ok(qr) => println!("{qr}"),
        Err(error) => println!("  (no QR code: {error})"),
    }
    println!("  Recovery codes (each works once):");
    for code in &enrolment.recovery_codes {
        println!("    {}", code.as_str());
    }
}

pub fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    let params = PasswordParams::DEFAULT;
    match command {
        UserCommand::Create { store, username, role, password_env, fhir_user, scope, no_mfa } => {
            let role = Role::parse(&role)
                .filter(|role| Role::USERS.contains(role))
                .with_context(|| format!("unknown role '{role}'; choose one of: administrator, clinician, auditor, patient (service clients get a token: `medvault token create`)"))?;
            let password = read_password(&password_env)?;
            let store = store.open()?;
            let account = NewAccount {
                username: &username,
                role,
                password: &password,
                fhir_user: fhir_user.as_deref(),
                scopes: scope.as_deref(),
                mfa: !no_mfa,
            };
            let (_, enrolment) = accounts::create_account(&store, params, &account).map_err(api)?;
            medvault_server::audit::account_change(
                &store,
                "console",
                "operator",
                medvault_audit::EventKind::MfaEnrolment,
                &username,
                "user-created",
            )
            .map_err(api)?;
            let user = accounts::user(&store, &username).map_err(api)?;
            println!("Created {} '{}' with scopes '{}'", user.role, user.username, user.scopes);
            if let Some(enrolment) = enrolment {
                print_enrolment(&username, &enrolment);
            }
            store.close();
        }
        UserCommand::List { store } => {
            let store = store.open()?;
            println!("{:<24} {:<14} {:<28} {:<6} state", "user", "role", "fhirUser", "mfa");
            for user in store.users()? {
                let state = match (user.disabled_ms, user.locked, user.failures) {
                    (Some(_), _, _) => "disabled".to_string(),
                    (None, true, _) => "locked".to_string(),
                    (None, false, 0) => "active".to_string(),
                    (None, false, failures) => format!("active, {failures} failed logins"),
                };
                println!(
                    "{:<24} {:<14} {:<28} {:<6} {state}",
                    user.username,
                    user.role,
                    user.fhir_user.as_deref().unwrap_or("-"),
                    if user.mfa_required { "totp" } else { "none" }
                );
            }
            store.close();
        }
        UserCommand::Unlock(target) => on_user(target, "unlocked", |store, user| Ok(store.unlock_user(user.user_id)?))?,
        UserCommand::Disable(target) => on_user(target, "disabled; its sessions ended", |store, user| {
            Ok(store.set_user_disabled(user.user_id, true)?)
        })?,
        UserCommand::Enable(target) => {
            on_user(target, "enabled", |store, user| Ok(store.set_user_disabled(user.user_id, false)?))?
        }
        UserCommand::RevokeSessions(target) => on_user(target, "signed out everywhere", |store, user| {
            store.revoke_user_sessions(user.user_id)?;
            Ok(())
        })?,
        UserCommand::ResetMfa(target) => {
            on_user(target, "given a new second factor; its sessions ended", |store, user| {
                let enrolment = accounts::reset_mfa(store, user).map_err(api)?;
                print_enrolment(&user.username, &enrolment);
                Ok(())
            })?
        }
        UserCommand::Password { target, password_env } => {
            let password = read_password(&password_env)?;
            on_user(target, "given a new password; its sessions ended", |store, user| {
                accounts::set_password(store, params, user, &password).map_err(api)
            })?
        }
        UserCommand::Assign { target, patient } => {
            let patient_id = patient_id(&patient)?;
            on_user(target, &format!("assigned to Patient/{patient_id}"), |store, user| {
                if user.role != Role::Clinician.name() {
                    anyhow::bail!("only clinicians are assigned to patients");
                }
                Ok(store.assign_patient(user.user_id, &patient_id, "console")?)
            })?
        }
        UserCommand::Unassign { target, patient } => {
            let patient_id = patient_id(&patient)?;
            on_user(target, &format!("no longer assigned to Patient/{patient_id}"), |store, user| {
                if !store.unassign_patient(user.user_id, &patient_id)? {
                    anyhow::bail!("{} was not assigned to Patient/{patient_id}", user.username);
                }
                Ok(())
            })?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn patient_id(reference: &str) -> anyhow::Result<String> {
    let id = reference.strip_prefix("Patient/").unwrap_or(reference);
    if !medvault_fhir::is_valid_id(id) {
        anyhow::bail!("'{reference}' is not Patient/<id>");
    }
    Ok(id.to_string())
}

fn on_user(
    target: UserTarget,
    done: &str,
    action: impl FnOnce(&medvault_store::Store, &medvault_store::accounts::UserRecord) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let store = target.store.open()?;
    let user = accounts::user(&store, &target.username).map_err(api)?;
    action(&store, &user)?;
    let kind = if done.starts_with("unlocked") {
        medvault_audit::EventKind::Unlock
    } else if done.contains("second factor") {
        medvault_audit::EventKind::MfaReset
    } else {
        medvault_audit::EventKind::AccountChange
    };
    medvault_server::audit::account_change(&store, "console", "operator", kind, &user.username, done).map_err(api)?;
    tracing::warn!(target: "medvault::security", user = %user.username, "account changed at the console: {done}");
    println!("{} {done}", user.username);
    store.close();
    Ok(())
}

pub fn break_glass(command: BreakGlassCommand) -> anyhow::Result<ExitCode> {
    match command {
        BreakGlassCommand::List { store, open } => {
            let store = store.open()?;
            let grants = store.break_glass_grants(open)?;
            println!("{:<6} {:<20} {:<44} {:<22} {:<12} reason", "grant", "user", "patient", "opened", "review");
            for grant in grants {
                println!(
                    "{:<6} {:<20} {:<44} {:<22} {:<12} {}",
                    grant.grant_id,
                    grant.username,
                    grant.patient,
                    medvault_base::time::format_instant(grant.created_ms),
                    grant.decision.as_deref().unwrap_or("open"),
                    grant.reason
                );
            }
            store.close();
        }
        BreakGlassCommand::Review { store, grant, decision, auditor } => {
            if !medvault_server::admin::REVIEW_DECISIONS.contains(&decision.as_str()) {
                anyhow::bail!("the decision is 'justified' or 'unjustified'");
            }
            let store = store.open()?;
            let auditor_user = accounts::user(&store, &auditor).map_err(api)?;
            if auditor_user.role != Role::Auditor.name() {
                anyhow::bail!("{auditor} is not an auditor");
            }
            if !store.review_break_glass(grant, &auditor, &decision)? {
                anyhow::bail!("break-glass grant {grant} does not exist or was already reviewed");
            }
            medvault_server::audit::account_change(
                &store,
                &auditor,
                "auditor",
                medvault_audit::EventKind::BreakGlass,
                &format!("grant-{grant}"),
                &format!("review-{decision}"),
            )
            .map_err(api)?;
            println!("grant {grant}: {decision} (by {auditor})");
            store.close();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the current TOTP code of a secret held in an environment variable: for scripts
/// and tests that log in without a phone, like `oathtool --totp -b`.
pub fn totp_code(secret_env: &str) -> anyhow::Result<ExitCode> {
    let secret = std::env::var(secret_env)
        .map(zeroize::Zeroizing::new)
        .with_context(|| format!("the environment variable {secret_env} (--secret-env) is not set"))?;
    let totp = medvault_auth::totp::Totp::from_base32(&secret, medvault_auth::totp::TotpAlgorithm::Sha1, 6, 30)
        .map_err(|e| anyhow::anyhow!("the secret in {secret_env} is not a base32 TOTP secret: {e}"))?;
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    println!("{}", totp.code_at(now_s));
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a service client that signs JWT assertions (SMART Backend Services):
    /// its public keys (a JWK Set file) and the system scopes it may be given.
    Register {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        client_id: String,
        /// A JSON file with the client's public keys: {"keys": [ ... ]} (ES256 or RS384).
        #[arg(long)]
        jwks_file: std::path::PathBuf,
        /// SMART system scopes, space-separated.
        #[arg(long)]
        scope: String,
    },
    /// List registered clients.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a client: its assertions are refused and its tokens revoked.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        client_id: String,
    },
}

pub fn client(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Register { store, client_id, jwks_file, scope } => {
            if client_id.is_empty()
                || client_id.len() > medvault_base::limits::CLIENT_NAME_BYTES_MAX
                || client_id.chars().any(char::is_control)
            {
                anyhow::bail!(
                    "the client id must be 1 to {} printable bytes",
                    medvault_base::limits::CLIENT_NAME_BYTES_MAX
                );
            }
            let scopes = accounts::check_scopes(Role::Service, &scope).map_err(api)?;
            let text = std::fs::read_to_string(&jwks_file)
                .with_context(|| format!("cannot read the JWK Set {}", jwks_file.display()))?;
            let jwks: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", jwks_file.display()))?;
            let keys = medvault_auth::jwt::parse_jwks(&jwks)
                .map_err(|e| anyhow::anyhow!("{} is not a usable JWK Set: {e}", jwks_file.display()))?;
            let store = store.open()?;
            store.register_client(&client_id, &serde_json::to_string(&jwks)?, &scopes)?;
            println!("registered service client '{client_id}' with {} key(s), scopes '{scopes}'", keys.len());
            store.close();
        }
        ClientCommand::List { store } => {
            let store = store.open()?;
            println!("{:<24} {:<40} state", "client", "scopes");
            for client in store.clients()? {
                let state = if client.disabled_ms.is_some() { "disabled" } else { "active" };
                println!("{:<24} {:<40} {state}", client.client_id, client.scopes);
            }
            store.close();
        }
        ClientCommand::Disable { store, client_id } => {
            let store = store.open()?;
            store.disable_client(&client_id)?;
            println!("disabled '{client_id}'; its tokens are revoked");
            store.close();
        }
    }
    Ok(ExitCode::SUCCESS)
}
