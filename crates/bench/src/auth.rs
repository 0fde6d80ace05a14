//! What authentication and authorization cost: login latency (password, then second
//! factor: Argon2id dominates), and read-by-id throughput of a clinician whose every read
//! is checked (session, scopes, care relationship) against the same server with the
//! benchmark-only switch that skips both, back to back on one store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_server::accounts::{create_account, NewAccount};
use medvault_server::auth::Role;
use medvault_server::http::{AppState, HttpConfig};
use medvault_server::login::{AuthConfig, LoginStep, SecondFactor};
use medvault_store::{Store, Write, WriteAction};
use serde_json::json;

use crate::wrk::{self, WrkRun, WrkSettings};

/// Logins measured (each a different user, so no TOTP code is reused).
const LOGINS: usize = 20;
/// Observations per patient in the read set.
const OBSERVATIONS_PER_PATIENT: usize = 4;
const PASSWORD: &str = "bench-orbit-lantern-quartz-91";

#[derive(Debug, Clone)]
pub struct AuthFigures {
    pub patients: usize,
    pub resources: usize,
    /// Milliseconds of whole logins (password step + second factor), sorted.
    pub login_ms: Vec<f64>,
    /// Milliseconds of the password step alone, sorted.
    pub password_ms: Vec<f64>,
    /// The product: session, authorization and audit on every read.
    pub checked: WrkRun,
    /// Session and authorization, auditing switched off.
    pub unaudited: WrkRun,
    /// Neither: the benchmark-only switches off.
    pub unchecked: WrkRun,
}

impl AuthFigures {
    /// How much slower reads are with authentication and authorization (target ≤ 1.10),
    /// both without auditing.
    pub fn overhead(&self) -> f64 {
        self.unchecked.requests_per_s() / self.unaudited.requests_per_s().max(f64::MIN_POSITIVE)
    }

    /// How much slower authenticated reads are with auditing (target ≤ 1.15).
    pub fn audit_overhead(&self) -> f64 {
        self.unaudited.requests_per_s() / self.checked.requests_per_s().max(f64::MIN_POSITIVE)
    }

    pub fn table(&self) -> String {
        let percentile = |values: &[f64], p: f64| {
            let index = ((values.len() as f64 - 1.0) * p).round() as usize;
            values.get(index).copied().unwrap_or(f64::NAN)
        };
        let mut out = String::new();
        out.push_str(&format!(
            "authentication ({} patients in the clinician's care, {} resources)\n",
            self.patients, self.resources
        ));
        out.push_str(&format!(
            "  login, password + TOTP    p50 {:.1} ms   p99 {:.1} ms   ({} logins)\n",
            percentile(&self.login_ms, 0.5),
            percentile(&self.login_ms, 0.99),
            self.login_ms.len()
        ));
        out.push_str(&format!(
            "  of which the password     p50 {:.1} ms   (Argon2id m=19456 KiB, t=2, p=1)\n",
            percentile(&self.password_ms, 0.5)
        ));
        for (name, run) in [
            ("read, checked + audited", &self.checked),
            ("read, checked, no audit", &self.unaudited),
            ("read, unchecked, no audit", &self.unchecked),
        ] {
            let us = |value: Option<f64>| value.map_or("-".to_string(), |us| format!("{us:.1}"));
            out.push_str(&format!(
                "  {name:<25} {:>10} req/s   p50 {:.2} ms   p99 {:.2} ms   server CPU {} µs/req   with wrk's {} µs/req\n",
                crate::report::thousands(run.requests_per_s()),
                run.p50_ms,
                run.p99_ms,
                us(run.server_cpu_us_per_request()),
                us(run.total_cpu_us_per_request()),
            ));
        }
        let overhead = self.overhead();
        out.push_str(&format!(
            "  auth overhead (unchecked/checked, no audit)  {overhead:.3}x   target ≤ 1.10x   {}\n",
            if overhead <= 1.10 { "MET" } else { "MISSED" }
        ));
        let audit = self.audit_overhead();
        out.push_str(&format!(
            "  audit overhead (no audit/audited)            {audit:.3}x   target ≤ 1.15x   {}\n",
            if audit <= 1.15 { "MET" } else { "MISSED" }
        ));
        if let (Some(audited), Some(unaudited)) =
            (self.checked.total_cpu_us_per_request(), self.unaudited.total_cpu_us_per_request())
        {
            out.push_str(&format!(
                "  the same in CPU per request, server + wrk    {:.3}x   (other load moves it less than throughput)\n",
                audited / unaudited.max(f64::MIN_POSITIVE)
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let run = |run: &WrkRun| {
            json!({"requests_per_s": run.requests_per_s(), "p50_ms": run.p50_ms, "p99_ms": run.p99_ms,
                   "server_cpu_us_per_request": run.server_cpu_us_per_request(),
                   "server_and_wrk_cpu_us_per_request": run.total_cpu_us_per_request()})
        };
        json!({
            "patients": self.patients,
            "resources": self.resources,
            "login_ms": self.login_ms,
            "password_ms": self.password_ms,
            "read_checked_audited": run(&self.checked),
            "read_checked_unaudited": run(&self.unaudited),
            "read_unchecked_unaudited": run(&self.unchecked),
            "auth_overhead": self.overhead(),
            "audit_overhead": self.audit_overhead(),
        })
    }
}

/// Builds the store, measures logins, then the two read runs.
pub fn run(wrk_path: &Path, settings: WrkSettings, patients: usize, rounds: usize) -> anyhow::Result<AuthFigures> {
    let directory = medvault_testkit::TempDir::new("bench-auth");
    let key_file = KeyFile { path: directory.path().join("master.key") };
    MasterKey::generate()?.create_key_file(&key_file.path)?;
    let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
    let store = Arc::new(Store::create(&directory.path().join("data"), &key_file, clock).context("store")?);
    crate::progress(format!("[auth] seeding {patients} patients, each in the care of one practitioner"));
    let paths = seed(&store, patients)?;
    let resources = paths.len() + patients;

    crate::progress(format!("[auth] {LOGINS} logins (password, then TOTP)"));
    let state = new_state(&store);
    let (login_ms, password_ms, token) = logins(&store, &state)?;

    let scripts = medvault_testkit::TempDir::new("bench-auth-scripts");
    let paths_file = wrk::write_file(scripts.path(), "paths.txt", &(paths.join("\n") + "\n"))?;
    let script = wrk::write_file(scripts.path(), "read.lua", &wrk::read_script(&paths_file, crate::SEED))?;

    let announce = |what: &str| {
        crate::progress(format!(
            "[auth] read, {what}: wrk, {} connections, {} s",
            settings.connections, settings.duration_s
        ))
    };
    // The first run would otherwise pay for warming the store's page caches alone.
    crate::progress("[auth] warm-up: 3 s of reads, not measured");
    let warm_up = WrkSettings { duration_s: 3, ..settings };
    serve_and_load(danger_state(&store, true, true), wrk_path, warm_up, &script, None)?;
    // Rounds, interleaved, each configuration's best run kept: other work on the machine
    // then weighs on all three alike instead of on whichever ran during it.
    let better = |a: WrkRun, b: WrkRun| if b.requests_per_s() > a.requests_per_s() { b } else { a };
    let mut best: Option<(WrkRun, WrkRun, WrkRun)> = None;
    for round in 1..=rounds {
        announce(&format!("checked + audited (round {round} of {rounds})"));
        let checked = serve_and_load(new_state(&store), wrk_path, settings, &script, Some(&token))?;
        announce(&format!("checked, no audit (round {round} of {rounds})"));
        let unaudited = serve_and_load(danger_state(&store, false, true), wrk_path, settings, &script, Some(&token))?;
        announce(&format!("unchecked, no audit (round {round} of {rounds})"));
        let unchecked = serve_and_load(danger_state(&store, true, true), wrk_path, settings, &script, None)?;
        for (name, run) in [("checked", &checked), ("unaudited", &unaudited), ("unchecked", &unchecked)] {
            anyhow::ensure!(run.is_clean(), "[auth] the {name} read run had failures: {run:?}");
        }
        best = Some(match best {
            None => (checked, unaudited, unchecked),
            Some((c, a, u)) => (better(c, checked), better(a, unaudited), better(u, unchecked)),
        });
    }
    let (checked, unaudited, unchecked) = best.context("at least one round")?;
    store.close();
    Ok(AuthFigures { patients, resources, login_ms, password_ms, checked, unaudited, unchecked })
}

fn config() -> HttpConfig {
    HttpConfig { scheme: "http", fallback_authority: "127.0.0.1:0".into(), public_base: None }
}

fn new_state(store: &Arc<Store>) -> Arc<AppState> {
    AppState::with_auth(medvault_server::Service::new(store.clone()), config(), AuthConfig::default())
}

fn danger_state(store: &Arc<Store>, skip_authorization: bool, skip_audit: bool) -> Arc<AppState> {
    AppState::danger_for_benchmark(
        medvault_server::Service::new(store.clone()),
        config(),
        skip_authorization,
        skip_audit,
    )
}

/// Patients, their observations and a CareTeam each naming `Practitioner/bench-doctor`;
/// returns the paths the read run picks from (Patients and Observations).
fn seed(store: &Store, patients: usize) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::with_capacity(patients * (OBSERVATIONS_PER_PATIENT + 1));
    let doctor = json!({"resourceType": "Practitioner", "id": "bench-doctor", "name": [{"family": "Bench"}]});
    store.write(&[put("Practitioner", "bench-doctor", doctor)], "bench")?;
    let mut writes = Vec::new();
    for n in 0..patients {
        let patient = format!("bench-patient-{n}");
        writes.push(put("Patient", &patient, json!({"resourceType": "Patient", "id": patient, "gender": "other"})));
        paths.push(format!("/fhir/Patient/{patient}"));
        writes.push(put(
            "CareTeam",
            &format!("team-{n}"),
            json!({"resourceType": "CareTeam", "id": format!("team-{n}"), "status": "active",
                   "subject": {"reference": format!("Patient/{patient}")},
                   "participant": [{"member": {"reference": "Practitioner/bench-doctor"}}]}),
        ));
        for k in 0..OBSERVATIONS_PER_PATIENT {
            let id = format!("obs-{n}-{k}");
            writes.push(put(
                "Observation",
                &id,
                json!({"resourceType": "Observation", "id": id, "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                       "subject": {"reference": format!("Patient/{patient}")},
                       "valueQuantity": {"value": 60 + k, "unit": "/min"}}),
            ));
            paths.push(format!("/fhir/Observation/{id}"));
        }
        if writes.len() >= 600 {
            store.write(&writes, "bench")?;
            writes.clear();
        }
    }
    if !writes.is_empty() {
        store.write(&writes, "bench")?;
    }
    Ok(paths)
}

fn put(resource_type: &str, id: &str, body: serde_json::Value) -> Write {
    Write {
        resource_type: resource_type.into(),
        id: id.into(),
        action: WriteAction::Put(body),
        if_match: None,
        must_be_new: false,
    }
}

/// `LOGINS` clinicians log in once each; returns whole-login and password-step latencies
/// (sorted) and one session token for the read run.
fn logins(store: &Store, state: &AppState) -> anyhow::Result<(Vec<f64>, Vec<f64>, String)> {
    let address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let mut login_ms = Vec::with_capacity(LOGINS);
    let mut password_ms = Vec::with_capacity(LOGINS);
    let mut token = String::new();
    for n in 0..LOGINS {
        let username = format!("bench-clinician-{n}");
        let account = NewAccount {
            username: &username,
            role: Role::Clinician,
            password: PASSWORD,
            fhir_user: Some("Practitioner/bench-doctor"),
            scopes: None,
            mfa: true,
        };
        let (_, enrolment) = create_account(store, state.auth.config().password, &account)
            .map_err(|e| anyhow::anyhow!("create {username}: {:?}", e.issues))?;
        let secret = enrolment.context("an enrolment")?.secret_base32;
        let totp = medvault_auth::totp::Totp::from_base32(&secret, medvault_auth::totp::TotpAlgorithm::Sha1, 6, 30)?;
        let started = Instant::now();
        let ticket = match state.auth.login(&username, PASSWORD, None, address) {
            Ok(LoginStep::SecondFactor { ticket, .. }) => ticket,
            other => anyhow::bail!("login of {username}: {other:?}"),
        };
        password_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let session = state
            .auth
            .second_factor(&ticket, SecondFactor::Totp(&totp.code_at(now_s)), address)
            .map_err(|e| anyhow::anyhow!("second factor of {username}: {:?}", e.issues))?;
        login_ms.push(started.elapsed().as_secs_f64() * 1e3);
        token = session.token.to_string();
    }
    login_ms.sort_by(f64::total_cmp);
    password_ms.sort_by(f64::total_cmp);
    Ok((login_ms, password_ms, token))
}

/// Serves `state` on a loopback port, runs wrk against it, stops.
fn serve_and_load(
    state: Arc<AppState>,
    wrk_path: &Path,
    settings: WrkSettings,
    script: &Path,
    token: Option<&str>,
) -> anyhow::Result<WrkRun> {
    let store = state.service.store().clone();
    let (address_sender, address_receiver) = std::sync::mpsc::channel::<SocketAddr>();
    let (shutdown, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("bench-auth-server".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let _ = address_sender.send(listener.local_addr()?);
            let app = medvault_server::http::router(state);
            medvault_server::serve::serve(listener, app, None, async {
                let _ = shutdown_receiver.await;
            })
            .await;
            anyhow::Ok(())
        })
    })?;
    let address = address_receiver.recv_timeout(Duration::from_secs(30)).context("the server did not start")?;
    let cpu_started = crate::cpu::process_s();
    let mut run = wrk::run(wrk_path, settings, &format!("http://{address}"), script, token);
    // The audit records of the run's last second still wait in the journal: move them now,
    // so their cost counts in this run's CPU and not in the next run.
    store.settle_audit().context("settling the audit trail")?;
    if let Ok(run) = &mut run {
        run.server_cpu_s = crate::cpu::process_s().zip(cpu_started).map(|(end, start)| end - start);
    }
    let _ = shutdown.send(());
    thread.join().map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    run
}
