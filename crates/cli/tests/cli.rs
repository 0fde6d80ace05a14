//! The `medvault` command as a script would use it: outputs and exit codes.

mod common;

use std::sync::Arc;

use common::{init, run, text, token, ServerProcess};
use medvault_testkit::{HttpClient, TempDir};

#[test]
fn init_creates_once_and_can_make_the_first_administrator() {
    let dir = TempDir::new("cli-init");
    let plain = init(dir.path());
    assert!(plain.contains("medvault user create"), "init says how to make accounts: {plain}");
    assert!(!plain.contains("mvt_"), "init mints no token: {plain}");
    let data = dir.path().join("data");
    let again = run(&["init", "--data-dir", data.to_str().expect("utf8")]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(text(&again).contains("already exists"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data.key")).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
        let mode = std::fs::metadata(&data).expect("data dir").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the data directory is private");
    }
}

#[test]
fn key_problems_exit_with_code_4() {
    let dir = TempDir::new("cli-key");
    init(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let missing = run(&["status", "--data-dir", data, "--key-file", "/nonexistent/key"]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing));
    let other = dir.path().join("other.key");
    medvault_crypto::MasterKey::generate().expect("random").create_key_file(&other).expect("key");
    let wrong = run(&["status", "--data-dir", data, "--key-file", other.to_str().expect("utf8")]);
    assert_eq!(wrong.status.code(), Some(4), "{}", text(&wrong));
    assert!(text(&wrong).contains("does not open this store"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("data.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let loose = run(&["status", "--data-dir", data]);
        assert_eq!(loose.status.code(), Some(4), "{}", text(&loose));
        assert!(text(&loose).contains("chmod 600"));
    }
    let nowhere = run(&["status", "--data-dir", dir.path().join("nothing").to_str().expect("utf8")]);
    assert_eq!(nowhere.status.code(), Some(3), "{}", text(&nowhere));
}

#[test]
fn tokens_are_scriptable() {
    let dir = TempDir::new("cli-token");
    init(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let user_scope = run(&["token", "create", "--data-dir", data, "--client", "x", "--scope", "user/*.rs"]);
    assert_eq!(user_scope.status.code(), Some(1));
    assert!(text(&user_scope).contains("does not fit the service role"), "{}", text(&user_scope));
    let role_name = run(&["token", "create", "--data-dir", data, "--client", "x", "--scope", "clinician"]);
    assert_eq!(role_name.status.code(), Some(1));
    assert!(text(&role_name).contains("not a SMART resource scope"), "{}", text(&role_name));
    let bad_scope = run(&["token", "create", "--data-dir", data, "--client", "x", "--scope", "system/Nonsense.rs"]);
    assert_eq!(bad_scope.status.code(), Some(1));
    assert!(text(&bad_scope).contains("names no FHIR R4 resource type"), "{}", text(&bad_scope));
    let ward = token(dir.path(), "ward-3", "system/Observation.rs system/Patient.r");
    assert!(ward.starts_with("mvt_"));
    let witness = token(dir.path(), "witness", "");
    let list = run(&["token", "list", "--data-dir", data]);
    let listing = text(&list);
    assert!(listing.contains("ward-3") && listing.contains("system/Observation.rs") && listing.contains("witness"));
    assert!(!listing.contains(&ward) && !listing.contains(&witness), "tokens are never listed");
    let revoked = run(&["token", "revoke", "--data-dir", data, "--client", "ward-3"]);
    assert!(revoked.status.success() && text(&revoked).contains("revoked 1"));
    let none = run(&["token", "revoke", "--data-dir", data, "--client", "nobody"]);
    assert_eq!(none.status.code(), Some(1));
}

#[test]
fn import_reports_counts_and_status_sees_them() {
    let dir = TempDir::new("cli-import");
    init(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    // An NDJSON file with two good lines, one malformed, one invalid resource type.
    let ndjson = dir.path().join("patients.ndjson");
    std::fs::write(
        &ndjson,
        "{\"resourceType\":\"Patient\",\"id\":\"nd-1\"}\n{\"resourceType\":\"Patient\"}\n{not json\n{\"resourceType\":\"Nope\"}\n",
    )
    .expect("write");
    let collection = dir.path().join("collection.json");
    std::fs::write(
        &collection,
        r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Practitioner","id":"dr-1"}}]}"#,
    )
    .expect("write");
    let mut args = vec!["import", "--quiet", "--data-dir", data];
    let files: Vec<String> = medvault_testkit::demo_bundle_files().iter().map(|p| p.display().to_string()).collect();
    args.extend(files.iter().map(String::as_str));
    args.push(ndjson.to_str().expect("utf8"));
    args.push(collection.to_str().expect("utf8"));
    let output = run(&args);
    assert_eq!(output.status.code(), Some(5), "some lines were rejected: {}", text(&output));
    let report = text(&output);
    assert!(report.contains("imported 942 resources from 14 file(s); 2 rejected"), "{report}");
    assert!(report.contains("line 3") && report.contains("line 4"), "{report}");

    let status = run(&["status", "--data-dir", data, "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["resources"], 942);
    let audit_blocks = status["audit_blocks"].as_u64().expect("audit blocks");
    assert!(audit_blocks >= 1 && status["audit_records"].as_u64() >= Some(942), "every write is audited: {status}");
    let leaves = 942 + audit_blocks;
    assert_eq!(status["ledger_leaves"], leaves, "every imported version and audit block is a ledger leaf: {status}");
    assert_eq!(status["checkpoint_size"], leaves, "and a signed checkpoint covers them all: {status}");
    assert_eq!(status["by_type"]["Practitioner"]["resources"].as_u64().map(|n| n >= 1), Some(true));
    assert!(status["data_keys"].as_u64().expect("keys") >= 12, "one data key per patient: {status}");

    let missing = run(&["import", "--data-dir", data, "/nonexistent.json"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn serving_off_loopback_needs_tls() {
    let dir = TempDir::new("cli-tls-refuse");
    init(dir.path());
    let data = dir.path().join("data");
    let output = run(&["serve", "--data-dir", data.to_str().expect("utf8"), "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("refusing to serve 0.0.0.0:0 without TLS"), "{}", text(&output));
}

#[test]
fn a_real_server_over_a_real_socket() {
    let dir = TempDir::new("cli-serve");
    init(dir.path());
    let clinician = token(dir.path(), "e2e", "system/*.cruds");
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = HttpClient::connect(server.address).expect("connect");
    let auth = format!("Bearer {clinician}");
    let created = client
        .request(
            "POST",
            "/fhir/Patient",
            &[("Authorization", &auth), ("Content-Type", "application/fhir+json")],
            Some(br#"{"resourceType":"Patient","gender":"other"}"#),
        )
        .expect("create");
    assert_eq!(created.status, 201);
    let location = created.header("location").expect("location").to_string();
    assert!(location.starts_with(&format!("http://{}/fhir/Patient/", server.address)), "{location}");
    let path = location.split_once(&server.address.to_string()).map(|(_, p)| p.to_string()).expect("path");
    let read = client.request("GET", &path, &[("Authorization", &auth)], None).expect("read");
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["gender"], "other");
    let anonymous = client.request("GET", &path, &[], None).expect("read");
    assert_eq!(anonymous.status, 401);
    server.stop();
}

#[test]
fn tls_with_a_self_signed_certificate() {
    let dir = TempDir::new("cli-tls");
    let data = dir.path().join("data");
    let output =
        run(&["init", "--data-dir", data.to_str().expect("utf8"), "--self-signed-cert", "localhost", "127.0.0.1"]);
    assert!(output.status.success(), "{}", text(&output));
    let certificate = data.join("tls/cert.pem");
    let key = data.join("tls/key.pem");
    let mut server = ServerProcess::start(
        dir.path(),
        &["--tls-cert", certificate.to_str().expect("utf8"), "--tls-key", key.to_str().expect("utf8")],
    );

    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_file_iter(&certificate).expect("pem") {
        roots.add(certificate.expect("certificate")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut socket = std::net::TcpStream::connect(server.address).expect("connect");
        let mut stream = rustls::Stream::new(&mut connection, &mut socket);
        use std::io::{Read, Write};
        stream
            .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("request over TLS");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{version:?}: {response}");
        assert!(response.contains("https://localhost/fhir"), "the base URL says https: {response}");
    }
    // Plain HTTP to the TLS port gets no FHIR answer.
    let mut plain = HttpClient::connect(server.address).expect("connect");
    assert!(plain.request("GET", "/fhir/metadata", &[], None).map(|r| r.status != 200).unwrap_or(true));
    server.stop();
}

#[test]
fn a_passphrase_store_opens_only_with_its_passphrase() {
    let dir = TempDir::new("cli-passphrase");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let with = |passphrase: &str, args: &[&str]| {
        common::medvault().args(args).env("MV_TEST_PASSPHRASE", passphrase).output().expect("runs")
    };
    let short = with("too short", &["init", "--data-dir", data, "--passphrase-env", "MV_TEST_PASSPHRASE"]);
    assert_eq!(short.status.code(), Some(1), "{}", text(&short));
    let created =
        with("correct horse battery staple", &["init", "--data-dir", data, "--passphrase-env", "MV_TEST_PASSPHRASE"]);
    assert!(created.status.success(), "{}", text(&created));
    assert!(!dir.path().join("data.key").exists(), "no key file in passphrase mode");
    let opened =
        with("correct horse battery staple", &["status", "--data-dir", data, "--passphrase-env", "MV_TEST_PASSPHRASE"]);
    assert!(opened.status.success(), "{}", text(&opened));
    assert!(text(&opened).contains("passphrase"));
    let wrong = with(
        "correct horse battery stapler",
        &["status", "--data-dir", data, "--passphrase-env", "MV_TEST_PASSPHRASE"],
    );
    assert_eq!(wrong.status.code(), Some(4), "{}", text(&wrong));
    let key_file = run(&["status", "--data-dir", data]);
    assert_eq!(
        key_file.status.code(),
        Some(4),
        "a passphrase store does not open with a key file: {}",
        text(&key_file)
    );
}

/// Accounts from the console, then a real login over a real socket: password, then the
/// code `medvault totp-code` computes from the enrolment's secret.
#[test]
fn accounts_are_scriptable_and_log_in_over_http() {
    let dir = TempDir::new("cli-users");
    init(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let user = |args: &[&str], password: Option<&str>| {
        let mut command = common::medvault();
        command.arg("user").args(args).args(["--data-dir", data]);
        if let Some(password) = password {
            command.env("MV_TEST_PASSWORD", password);
        }
        command.output().expect("medvault runs")
    };
    let created = user(
        &["create", "--username", "ward.nurse", "--role", "clinician", "--password-env", "MV_TEST_PASSWORD"],
        Some("orbit-lantern-quartz-91"),
    );
    assert!(created.status.success(), "{}", text(&created));
    let output = text(&created);
    assert!(output.contains("otpauth://totp/medvault:ward.nurse?secret="), "{output}");
    assert!(!output.contains("orbit-lantern-quartz-91"), "the password is never printed");
    let secret = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("TOTP secret:"))
        .map(|s| s.trim().to_string())
        .expect("secret line");
    // Refusals: a weak password, an unknown role, a missing variable, a duplicate, a service.
    let weak = user(
        &["create", "--username", "weak", "--role", "clinician", "--password-env", "MV_TEST_PASSWORD"],
        Some("password"),
    );
    assert_eq!(weak.status.code(), Some(1));
    assert!(text(&weak).contains("password refused"), "{}", text(&weak));
    let role = user(
        &["create", "--username", "x", "--role", "superuser", "--password-env", "MV_TEST_PASSWORD"],
        Some("orbit-lantern-quartz-91"),
    );
    assert!(text(&role).contains("unknown role"), "{}", text(&role));
    let unset =
        user(&["create", "--username", "x", "--role", "clinician", "--password-env", "MV_NOT_SET_ANYWHERE"], None);
    assert!(text(&unset).contains("MV_NOT_SET_ANYWHERE"), "{}", text(&unset));
    let again = user(
        &["create", "--username", "ward.nurse", "--role", "clinician", "--password-env", "MV_TEST_PASSWORD"],
        Some("orbit-lantern-quartz-91"),
    );
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    let nobody = user(&["unlock", "--username", "nobody"], None);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(text(&nobody).contains("no user named 'nobody'"), "{}", text(&nobody));
    let listed = text(&user(&["list"], None));
    assert!(listed.contains("ward.nurse") && listed.contains("clinician") && listed.contains("totp"), "{listed}");

    // Log in over HTTP.
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = HttpClient::connect(server.address).expect("connect");
    let json = [("Content-Type", "application/json")];
    let login = client
        .request(
            "POST",
            "/auth/login",
            &json,
            Some(br#"{"username":"ward.nurse","password":"orbit-lantern-quartz-91"}"#),
        )
        .expect("login");
    assert_eq!(login.status, 200, "{}", login.text());
    let ticket = login.json()["mfa_ticket"].as_str().expect("ticket").to_string();
    let code = common::medvault()
        .args(["totp-code", "--secret-env", "MV_TOTP"])
        .env("MV_TOTP", &secret)
        .output()
        .expect("runs");
    let code = String::from_utf8_lossy(&code.stdout).trim().to_string();
    assert_eq!(code.len(), 6, "{code}");
    let body = format!(r#"{{"mfa_ticket":"{ticket}","code":"{code}"}}"#);
    let session = client.request("POST", "/auth/mfa", &json, Some(body.as_bytes())).expect("mfa");
    assert_eq!(session.status, 200, "{}", session.text());
    let session_token = session.json()["access_token"].as_str().expect("token").to_string();
    let auth = format!("Bearer {session_token}");
    let me = client.request("GET", "/auth/session", &[("Authorization", &auth)], None).expect("session");
    assert_eq!(me.json()["name"], "ward.nurse");
    // The clinician cares for nobody yet: a patient's record is closed to them.
    let service = token(dir.path(), "registry", "system/*.cruds");
    let service_auth = format!("Bearer {service}");
    let put = client
        .request(
            "PUT",
            "/fhir/Patient/ward-7-bed-3",
            &[("Authorization", &service_auth), ("Content-Type", "application/fhir+json")],
            Some(br#"{"resourceType":"Patient","id":"ward-7-bed-3","gender":"female"}"#),
        )
        .expect("put");
    assert_eq!(put.status, 201);
    let read = |client: &mut HttpClient| {
        client.request("GET", "/fhir/Patient/ward-7-bed-3", &[("Authorization", &auth)], None).expect("read").status
    };
    assert_eq!(read(&mut client), 403);
    // An assignment made at the console, while the server runs, opens it at the next
    // request; removing it closes it again.
    // (A change made by another process reaches the server within CHANGE_POLL_MS.)
    let propagation = std::time::Duration::from_millis(medvault_store::sqlite::CHANGE_POLL_MS + 10);
    let assigned = user(&["assign", "--username", "ward.nurse", "--patient", "Patient/ward-7-bed-3"], None);
    assert!(assigned.status.success(), "{}", text(&assigned));
    std::thread::sleep(propagation);
    assert_eq!(read(&mut client), 200);
    let unassigned = user(&["unassign", "--username", "ward.nurse", "--patient", "Patient/ward-7-bed-3"], None);
    assert!(unassigned.status.success(), "{}", text(&unassigned));
    std::thread::sleep(propagation);
    assert_eq!(read(&mut client), 403);
    // Revoking at the console ends the session (within CHANGE_POLL_MS).
    let revoked = user(&["revoke-sessions", "--username", "ward.nurse"], None);
    assert!(revoked.status.success(), "{}", text(&revoked));
    std::thread::sleep(propagation);
    let after = client.request("GET", "/auth/session", &[("Authorization", &auth)], None).expect("session");
    assert_eq!(after.status, 401);
    server.stop();
}
