//! Login under attack, with an injected clock: brute force against one account and
//! spraying across many, counting the Argon2id checks that actually ran; TOTP replay;
//! sessions that expire, end and are revoked; tokens that are tampered with.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::{totp_now, TestServer, TEST_PASSWORD};
use medvault_base::{Clock, ManualClock};
use medvault_server::accounts::{create_account, NewAccount};
use medvault_server::auth::Role;
use medvault_server::login::{LoginStep, SecondFactor};
use serde_json::json;

const START_MS: i64 = 1_800_000_000_000;

fn address(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn server_with_clock() -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START_MS));
    (TestServer::with_clock(clock.clone()), clock)
}

/// Creates a clinician and returns its TOTP secret.
fn clinician(server: &TestServer, username: &str) -> String {
    let account = NewAccount {
        username,
        role: Role::Clinician,
        password: TEST_PASSWORD,
        fhir_user: None,
        scopes: None,
        mfa: true,
    };
    let (_, enrolment) = create_account(&server.store, server.state.auth.config().password, &account).expect("created");
    enrolment.expect("enrolment").secret_base32.to_string()
}

/// The status of a login attempt (200 when the password was accepted).
fn attempt(server: &TestServer, username: &str, password: &str, from: IpAddr) -> u16 {
    match server.state.auth.login(username, password, None, from) {
        Ok(_) => 200,
        Err(error) => error.status,
    }
}

#[test]
fn thousands_of_guesses_against_one_account_run_few_password_checks() {
    let (server, clock) = server_with_clock();
    clinician(&server, "target");
    let checks_at_start = server.state.auth.password_checks();
    // A botnet: every guess from another address, one guess a second for 3,000 seconds.
    let mut model_failures = 0u32;
    let mut model_last_failure = i64::MIN;
    let mut model_checks = 0u64;
    for guess in 0..3000u32 {
        let now = clock.now_ms();
        // The rule, written out: 5 free guesses, then wait 1 s, 2 s, 4 s, … (at most 15 min)
        // after the last failure.
        let wait = if model_failures < 5 { 0 } else { (1000i64 << (model_failures - 5).min(30)).min(900_000) };
        let open = now >= model_last_failure.saturating_add(wait);
        let status = attempt(&server, "target", &format!("wrong-{guess}"), address(guess));
        if open {
            assert_eq!(status, 401, "guess {guess} is checked");
            model_failures += 1;
            model_last_failure = now;
            model_checks += 1;
        } else {
            assert_eq!(status, 429, "guess {guess} waits");
        }
        clock.advance_ms(1000);
    }
    let checks = server.state.auth.password_checks() - checks_at_start;
    assert_eq!(checks, model_checks);
    assert!(checks < 20, "3,000 guesses ran only {checks} password checks");
    // Patient guessing, 16 minutes apart, reaches the hard lock at 100 failures.
    while model_failures < 100 {
        clock.advance_ms(16 * 60_000);
        assert_eq!(attempt(&server, "target", "still-wrong", address(7)), 401);
        model_failures += 1;
    }
    let locked_checks = server.state.auth.password_checks();
    for guess in 0..1000u32 {
        clock.advance_ms(60 * 60_000);
        assert_eq!(attempt(&server, "target", &format!("x{guess}"), address(guess)), 429);
    }
    assert_eq!(
        attempt(&server, "target", TEST_PASSWORD, address(1)),
        429,
        "even the right password waits for an unlock"
    );
    assert_eq!(server.state.auth.password_checks(), locked_checks, "a locked account costs no password check");
    let user = server.store.user_by_name("target").expect("db").expect("user");
    assert!(user.locked && user.failures == 100);
    // An administrator unlocks; the right password works again.
    server.store.unlock_user(user.user_id).expect("unlock");
    assert_eq!(attempt(&server, "target", TEST_PASSWORD, address(1)), 200);
}

#[test]
fn spraying_from_one_address_is_stopped_and_other_addresses_are_not() {
    let (server, clock) = server_with_clock();
    for n in 0..50 {
        clinician(&server, &format!("staff-{n}"));
    }
    let sprayer = address(66);
    let before = server.state.auth.password_checks();
    let mut refused = 0;
    for n in 0..300 {
        // Real and unknown names alike, one guess each: no account lockout helps here.
        let name = if n % 2 == 0 { format!("staff-{}", n / 2 % 50) } else { format!("nobody-{n}") };
        let status = attempt(&server, &name, "Winter2026!", sprayer);
        assert!(status == 401 || status == 429, "{status}");
        refused += usize::from(status == 429);
        clock.advance_ms(1000);
    }
    let checks = server.state.auth.password_checks() - before;
    assert_eq!(checks, 20, "the address got 20 password checks, then waits");
    assert_eq!(refused, 280);
    assert_eq!(attempt(&server, "staff-3", TEST_PASSWORD, address(67)), 200, "another address is not blocked");
    // After the block, the address may try again.
    clock.advance_ms(16 * 60_000);
    assert_eq!(attempt(&server, "staff-4", TEST_PASSWORD, sprayer), 200);
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_look_alike() {
    let (server, _clock) = server_with_clock();
    clinician(&server, "known");
    let login = |username: &str| {
        let body = serde_json::to_vec(&json!({"username": username, "password": "not-the-password"})).expect("json");
        let server = &server;
        async move { server.send("POST", "/auth/login", &[("content-type", "application/json")], Some(body)).await }
    };
    let before = server.state.auth.password_checks();
    let wrong = login("known").await;
    let middle = server.state.auth.password_checks();
    let unknown = login("unknown").await;
    let after = server.state.auth.password_checks();
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.outcome(), unknown.outcome());
    assert_eq!((middle - before, after - middle), (1, 1), "both cost one Argon2id check");
    // And unknown names are throttled like real ones: after 5, they wait too.
    for _ in 0..4 {
        login("unknown").await;
        login("known").await;
    }
    let (known_throttled, unknown_throttled) = (login("known").await, login("unknown").await);
    assert_eq!((known_throttled.status, unknown_throttled.status), (429, 429));
    assert_eq!(known_throttled.outcome(), unknown_throttled.outcome());
    assert!(known_throttled.header("retry-after").is_some());
}

#[tokio::test]
async fn the_login_flow_over_http_and_totp_replay() {
    let (server, clock) = server_with_clock();
    let secret = clinician(&server, "nurse");
    let post = |uri: &str, body: serde_json::Value| {
        let body = serde_json::to_vec(&body).expect("json");
        let uri = uri.to_string();
        let server = &server;
        async move { server.send("POST", &uri, &[("content-type", "application/json")], Some(body)).await }
    };
    let first = post("/auth/login", json!({"username": "nurse", "password": TEST_PASSWORD})).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let ticket = first.json()["mfa_ticket"].as_str().expect("ticket").to_string();
    assert!(first.json().get("access_token").is_none(), "no session before the second factor");
    let code = totp_now(&secret, &*clock);
    let session = post("/auth/mfa", json!({"mfa_ticket": ticket, "code": code})).await;
    assert_eq!(session.status, 200, "{}", String::from_utf8_lossy(&session.body));
    let token = session.json()["access_token"].as_str().expect("token").to_string();
    assert!(token.starts_with("mvs_") && token.len() >= 40);
    assert_eq!(session.json()["expires_in"], 1800);
    let me = server.call_as(&token, "GET", "/auth/session", None).await;
    assert_eq!(me.json()["name"], "nurse");

    // The same code again, within its 30 seconds, on a new login: refused as a replay.
    let again = post("/auth/login", json!({"username": "nurse", "password": TEST_PASSWORD})).await;
    let ticket = again.json()["mfa_ticket"].as_str().expect("ticket").to_string();
    let replay = post("/auth/mfa", json!({"mfa_ticket": ticket, "code": code})).await;
    assert_eq!(replay.status, 401);
    // The next period's code works on the same ticket.
    clock.advance_ms(30_000);
    let next = post("/auth/mfa", json!({"mfa_ticket": ticket, "code": totp_now(&secret, &*clock)})).await;
    assert_eq!(next.status, 200);
    // A ticket is single use, and dies after five wrong codes.
    assert_eq!(post("/auth/mfa", json!({"mfa_ticket": ticket, "code": "000000"})).await.status, 401);
    clock.advance_ms(30_000);
    let third = post("/auth/login", json!({"username": "nurse", "password": TEST_PASSWORD})).await;
    let ticket = third.json()["mfa_ticket"].as_str().expect("ticket").to_string();
    for _ in 0..5 {
        assert_eq!(post("/auth/mfa", json!({"mfa_ticket": ticket, "code": "123456"})).await.status, 401);
    }
    let late = post("/auth/mfa", json!({"mfa_ticket": ticket, "code": totp_now(&secret, &*clock)})).await;
    assert_eq!(late.status, 401, "the ticket is spent");
    // Bad bodies get an OperationOutcome.
    assert_eq!(post("/auth/login", json!({"username": "nurse"})).await.status, 400);
    let garbage =
        server.send("POST", "/auth/login", &[("content-type", "application/json")], Some(b"{".to_vec())).await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.outcome().0, "invalid");
}

#[test]
fn recovery_codes_work_once() {
    let (server, _clock) = server_with_clock();
    let account = NewAccount {
        username: "surgeon",
        role: Role::Clinician,
        password: TEST_PASSWORD,
        fhir_user: None,
        scopes: None,
        mfa: true,
    };
    let (_, enrolment) = create_account(&server.store, server.state.auth.config().password, &account).expect("created");
    let code = enrolment.expect("enrolment").recovery_codes[0].to_string();
    let ticket = |server: &TestServer| match server.state.auth.login("surgeon", TEST_PASSWORD, None, address(1)) {
        Ok(LoginStep::SecondFactor { ticket, .. }) => ticket.to_string(),
        other => panic!("{other:?}"),
    };
    let first = server.state.auth.second_factor(&ticket(&server), SecondFactor::RecoveryCode(&code), address(1));
    assert!(first.is_ok());
    let second = server.state.auth.second_factor(&ticket(&server), SecondFactor::RecoveryCode(&code), address(1));
    assert_eq!(second.expect_err("spent").status, 401);
}

#[tokio::test]
async fn sessions_end_when_idle_at_their_limit_on_logout_and_on_revocation() {
    let (server, clock) = server_with_clock();
    let reads = |token: String| {
        let server = &server;
        async move { server.call_as(&token, "GET", "/fhir/Practitioner/none", None).await.status }
    };
    // Idle: 30 minutes for clinicians.
    let idle = server.session("idle", Role::Clinician, None, None);
    assert_eq!(reads(idle.clone()).await, 403);
    clock.advance_ms(29 * 60_000);
    assert_eq!(reads(idle.clone()).await, 403, "still alive after 29 idle minutes");
    clock.advance_ms(30 * 60_000 + 1);
    assert_eq!(reads(idle).await, 401, "ended after 30 idle minutes");
    // Administrators: 15 minutes.
    let admin = server.session("boss", Role::Administrator, None, None);
    clock.advance_ms(15 * 60_000 + 1);
    assert_eq!(server.call_as(&admin, "GET", "/admin/users", None).await.status, 401);
    // Absolute: 12 hours, however busy.
    let busy = server.session("busy", Role::Clinician, None, None);
    for _ in 0..35 {
        clock.advance_ms(20 * 60_000);
        assert_eq!(reads(busy.clone()).await, 403);
    }
    clock.advance_ms(20 * 60_000);
    assert_eq!(reads(busy).await, 401, "no session outlives 12 hours");
    // Logout, revocation of all sessions, disabling.
    let leaving = server.session("leaving", Role::Clinician, None, None);
    assert_eq!(server.call_as(&leaving, "POST", "/auth/logout", None).await.status, 200);
    assert_eq!(reads(leaving).await, 401);
    let stolen = server.session("stolen", Role::Clinician, None, None);
    let admin = server.session("boss2", Role::Administrator, None, None);
    let revoke = server.call_as(&admin, "POST", "/admin/users/stolen/revoke-sessions", None).await;
    assert_eq!(revoke.status, 200, "{}", String::from_utf8_lossy(&revoke.body));
    assert_eq!(reads(stolen).await, 401, "revocation takes effect on the next request");
    let fired = server.session("fired", Role::Clinician, None, None);
    assert_eq!(server.call_as(&admin, "POST", "/admin/users/fired/disable", None).await.status, 200);
    assert_eq!(reads(fired).await, 401);
    assert_eq!(attempt(&server, "fired", TEST_PASSWORD, address(2)), 401, "a disabled account cannot log in");
    // Tampered tokens: one character changed, truncated, another prefix.
    let good = server.session("careful", Role::Clinician, None, None);
    let mut bytes = good.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).expect("ascii");
    assert_eq!(reads(flipped).await, 401);
    assert_eq!(reads(good[..good.len() - 1].to_string()).await, 401);
    assert_eq!(reads(good.replacen("mvs_", "mvt_", 1)).await, 401);
    assert_eq!(reads(good).await, 403, "the untampered token still works");
}

#[tokio::test]
async fn the_admin_api_manages_accounts_and_enforces_the_password_policy() {
    let (server, clock) = server_with_clock();
    let create = |body: serde_json::Value| {
        let auth = format!("Bearer {}", server.admin);
        let body = serde_json::to_vec(&body).expect("json");
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    "/admin/users",
                    &[("authorization", &auth), ("content-type", "application/json")],
                    Some(body),
                )
                .await
        }
    };
    let weak = create(json!({"username": "weak", "role": "clinician", "password": "password1"})).await;
    assert_eq!(weak.status, 400);
    assert!(weak.outcome().1.contains("password refused"), "{:?}", weak.outcome());
    let short = create(json!({"username": "short", "role": "clinician", "password": "x7#Qp"})).await;
    assert_eq!(short.status, 400);
    let no_mfa =
        create(json!({"username": "nomfa", "role": "clinician", "password": TEST_PASSWORD, "mfa": false})).await;
    assert_eq!(no_mfa.status, 400, "clinicians must have a second factor");
    let patient_no_mfa = create(json!({"username": "pat", "role": "patient", "fhirUser": "Patient/p1", "password": TEST_PASSWORD, "mfa": false})).await;
    assert_eq!(patient_no_mfa.status, 400, "patients read clinical data: MFA is mandatory");
    let patient =
        create(json!({"username": "pat", "role": "patient", "fhirUser": "Patient/p1", "password": TEST_PASSWORD}))
            .await;
    assert_eq!(patient.status, 201, "{}", String::from_utf8_lossy(&patient.body));
    let auditor_short =
        create(json!({"username": "aud", "role": "auditor", "password": "kq7#vz!m2w", "mfa": false})).await;
    assert_eq!(auditor_short.status, 400, "without MFA a password needs 15 characters");
    let auditor =
        create(json!({"username": "aud", "role": "auditor", "password": "kq7#vz!m2w-lantern-9", "mfa": false})).await;
    assert_eq!(auditor.status, 201, "{}", String::from_utf8_lossy(&auditor.body));
    assert!(auditor.json().get("enrolment").is_none());
    let admin_scope =
        create(json!({"username": "nosy", "role": "administrator", "password": TEST_PASSWORD, "scope": "user/*.rs"}))
            .await;
    assert_eq!(admin_scope.status, 400, "administrators read no clinical data");
    let made =
        create(json!({"username": "doc", "role": "clinician", "password": "Zq8#vL2m", "fhirUser": "Practitioner/d1"}))
            .await;
    assert_eq!(made.status, 201, "8 characters are enough with MFA: {}", String::from_utf8_lossy(&made.body));
    let enrolment = made.json()["enrolment"].clone();
    assert!(enrolment["otpauth_uri"].as_str().expect("uri").starts_with("otpauth://totp/medvault:doc?secret="));
    assert_eq!(enrolment["recovery_codes"].as_array().map(Vec::len), Some(10));
    let duplicate = create(json!({"username": "doc", "role": "clinician", "password": TEST_PASSWORD})).await;
    assert_eq!(duplicate.status, 409);
    let listing = server.call_as(&server.admin, "GET", "/admin/users", None).await.json();
    let names: Vec<&str> =
        listing["users"].as_array().expect("users").iter().filter_map(|u| u["username"].as_str()).collect();
    assert!(names.contains(&"doc") && names.contains(&"pat") && names.contains(&"aud"));
    assert!(
        !String::from_utf8_lossy(&serde_json::to_vec(&listing).expect("json")).contains("argon2"),
        "no hashes listed"
    );
    // Only administrators administer.
    let clinician = server.session("someone", Role::Clinician, None, None);
    assert_eq!(server.call_as(&clinician, "GET", "/admin/users", None).await.status, 403);
    assert_eq!(server.call_as(&server.clinician, "GET", "/admin/users", None).await.status, 403, "nor service clients");
    // Lock doc out, then unlock over HTTP.
    for n in 0..5 {
        attempt(&server, "doc", "wrong", address(n));
    }
    assert_eq!(attempt(&server, "doc", "Zq8#vL2m", address(9)), 429);
    assert_eq!(server.call_as(&server.admin, "POST", "/admin/users/doc/unlock", None).await.status, 200);
    assert_eq!(attempt(&server, "doc", "Zq8#vL2m", address(9)), 200);
    let _ = clock;
}

#[test]
fn a_login_rehashes_a_password_made_with_weaker_parameters() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let server = TestServer::with_clock(clock.clone());
    clinician(&server, "veteran");
    let old_hash = server.store.user_by_name("veteran").expect("db").expect("user").password;
    assert!(old_hash.contains("m=19456,t=2,p=1"), "{old_hash}");
    // The same store served with stronger parameters.
    let stronger = medvault_auth::password::PasswordParams { memory_kib: 32_768, iterations: 3, parallelism: 1 };
    let config = medvault_server::login::AuthConfig { password: stronger, ..Default::default() };
    let auditor = Arc::new(medvault_server::audit::Auditor::new(server.store.clone()));
    let auth = medvault_server::login::Authenticator::new(server.store.clone(), config, auditor);
    let secret = {
        let user = server.store.user_by_name("veteran").expect("db").expect("user");
        let totp_secret = server.store.totp_secret(&user).expect("db").expect("secret");
        medvault_auth::totp::Totp::new(
            totp_secret.expose_secret().to_vec(),
            medvault_auth::totp::TotpAlgorithm::Sha1,
            6,
            30,
        )
        .expect("totp")
        .secret_base32()
    };
    let ticket = match auth.login("veteran", TEST_PASSWORD, None, address(1)).expect("login") {
        LoginStep::SecondFactor { ticket, .. } => ticket,
        LoginStep::Session(_) => panic!("MFA skipped"),
    };
    assert_eq!(
        server.store.user_by_name("veteran").expect("db").expect("user").password,
        old_hash,
        "not before the second factor"
    );
    auth.second_factor(&ticket, SecondFactor::Totp(&totp_now(&secret, &*clock)), address(1)).expect("session");
    let new_hash = server.store.user_by_name("veteran").expect("db").expect("user").password;
    assert!(new_hash.contains("m=32768,t=3,p=1"), "{new_hash}");
    assert!(medvault_auth::password::verify_password(&new_hash, TEST_PASSWORD, stronger).expect("verify").matched);
}

/// SMART Backend Services: a registered client signs a JWT assertion for a short-lived
/// token; expired, replayed, tampered, wrongly addressed and unknown assertions fail.
#[tokio::test]
async fn backend_services_get_tokens_only_for_valid_assertions() {
    let (server, clock) = server_with_clock();
    let (pkcs8, jwk) = medvault_auth::jwt::es256_keypair().expect("keypair");
    let jwks = serde_json::to_string(&json!({"keys": [jwk]})).expect("json");
    server.store.register_client("lab-system", &jwks, "system/Observation.rs system/Patient.r").expect("register");
    let audience = "http://fhir.example.org:8443/auth/token";
    let now_s = |clock: &ManualClock| clock.now_ms() / 1000;
    let assertion =
        |claims: serde_json::Value| medvault_auth::jwt::sign_es256(&pkcs8, jwk["kid"].as_str(), &claims).expect("sign");
    let claims = |jti: &str, aud: &str, exp: i64| json!({"iss": "lab-system", "sub": "lab-system", "aud": aud, "exp": exp, "jti": jti});
    let request = |assertion: String, scope: &str| {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .append_pair("client_assertion", &assertion);
        if !scope.is_empty() {
            form.append_pair("scope", scope);
        }
        let body = form.finish().into_bytes();
        let server = &server;
        async move {
            server
                .send("POST", "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], Some(body))
                .await
        }
    };
    let good = assertion(claims("a-1", audience, now_s(&clock) + 240));
    let issued = request(good.clone(), "system/Observation.rs system/Condition.rs").await;
    assert_eq!(issued.status, 200, "{}", String::from_utf8_lossy(&issued.body));
    let body = issued.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "system/Observation.rs", "narrowed to what was registered");
    let token = body["access_token"].as_str().expect("token").to_string();
    let seeded = json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}});
    assert_eq!(server.call("PUT", "/fhir/Observation/o1", Some(seeded)).await.status, 201);
    assert_eq!(server.call_as(&token, "GET", "/fhir/Observation/o1", None).await.status, 200);
    assert_eq!(server.call_as(&token, "GET", "/fhir/Patient/x", None).await.status, 403, "Patient was not asked for");
    // The same assertion again: a replay.
    assert_eq!(request(good, "").await.json()["error"], "invalid_client");
    // Wrong audience, expired, too long-lived, another client's name, a tampered payload.
    let wrong_audience = assertion(claims("a-2", "https://elsewhere.example/token", now_s(&clock) + 60));
    let expired = assertion(claims("a-3", audience, now_s(&clock) - 1));
    let too_long = assertion(claims("a-4", audience, now_s(&clock) + 3600));
    let stranger = medvault_auth::jwt::sign_es256(
        &pkcs8,
        jwk["kid"].as_str(),
        &json!({"iss": "unknown-system", "sub": "unknown-system", "aud": audience, "exp": now_s(&clock) + 60, "jti": "a-5"}),
    )
    .expect("sign");
    let genuine = assertion(claims("a-6", audience, now_s(&clock) + 60));
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    let forged_claims =
        json!({"iss": "lab-system", "sub": "lab-system", "aud": audience, "exp": now_s(&clock) + 60, "jti": "a-7"});
    parts[1] = base64_url(&serde_json::to_vec(&forged_claims).expect("json"));
    let tampered = parts.join(".");
    for (name, bad) in [
        ("wrong audience", wrong_audience),
        ("expired", expired),
        ("too long", too_long),
        ("unknown client", stranger),
        ("tampered", tampered),
    ] {
        let reply = request(bad, "").await;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(reply.json()["error"], "invalid_client", "{name}");
    }
    // The issued token expires after five minutes; a disabled client gets none.
    clock.advance_ms(5 * 60_000 + 1);
    assert_eq!(server.call_as(&token, "GET", "/fhir/Observation/o1", None).await.status, 401);
    server.store.disable_client("lab-system").expect("disable");
    let after = assertion(claims("a-8", audience, now_s(&clock) + 60));
    assert_eq!(request(after, "").await.status, 401);
    // Discovery tells clients where to go.
    let discovery = server.send("GET", "/.well-known/smart-configuration", &[], None).await.json();
    assert_eq!(discovery["token_endpoint"], audience);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
