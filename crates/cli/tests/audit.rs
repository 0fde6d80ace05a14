//! Breach scoping on a seeded scenario: exactly the patients the compromised account
//! touched, from the command line, as JSON and as a table; and the timeline export.

mod common;

use common::{init, run, text, token, ServerProcess};
use medvault_testkit::{HttpClient, TempDir};

#[test]
fn breach_scoping_names_exactly_what_the_account_touched() {
    let dir = TempDir::new("cli-breach");
    init(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let admin = token(dir.path(), "registry", "system/*.cruds");
    let stolen = token(dir.path(), "lab-gateway", "system/*.cruds");
    let since = medvault_base::time::format_instant(medvault_base::Clock::now_ms(&medvault_base::SystemClock) - 1000);
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = HttpClient::connect(server.address).expect("connect");
    let mut call = |token: &str, method: &str, path: &str, body: Option<String>| {
        let auth = format!("Bearer {token}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
        client.request(method, path, &headers, body.as_deref().map(str::as_bytes)).expect("request").status
    };
    for n in 1..=5 {
        let body = format!(r#"{{"resourceType":"Patient","id":"p{n}","gender":"other"}}"#);
        assert_eq!(call(&admin, "PUT", &format!("/fhir/Patient/p{n}"), Some(body)), 201);
    }
    // The compromised account reads p1 (twice) and p2, and changes p3; the other reads p4.
    assert_eq!(call(&stolen, "GET", "/fhir/Patient/p1", None), 200);
    assert_eq!(call(&stolen, "GET", "/fhir/Patient/p1", None), 200);
    assert_eq!(call(&stolen, "GET", "/fhir/Patient/p2/_history/1", None), 200);
    let changed = r#"{"resourceType":"Patient","id":"p3","gender":"female"}"#.to_string();
    assert_eq!(call(&stolen, "PUT", "/fhir/Patient/p3", Some(changed)), 200);
    assert_eq!(call(&admin, "GET", "/fhir/Patient/p4", None), 200);
    server.stop();

    let output = run(&["audit", "breach", "--data-dir", data, "--user", "lab-gateway", "--since", &since, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let patients: Vec<&str> =
        report["patients"].as_array().expect("patients").iter().filter_map(|p| p["patient"].as_str()).collect();
    assert_eq!(patients, ["Patient/p1", "Patient/p2", "Patient/p3"]);
    assert_eq!(report["patients_count"], 3);
    assert_eq!(report["patients"][0]["reads"], 2);
    assert_eq!(report["patients"][2]["changes"], 1);
    assert_eq!(report["records_changed"], serde_json::json!(["Patient/p3"]));
    let table = run(&["audit", "breach", "--data-dir", data, "--user", "lab-gateway", "--since", &since]);
    assert!(text(&table).contains("3 patients") && text(&table).contains("Patient/p2"), "{}", text(&table));

    // The timeline: every record, as AuditEvent JSON lines and as RFC 5424 syslog.
    let timeline = run(&["audit", "timeline", "--data-dir", data, "--since", &since]);
    assert!(timeline.status.success(), "{}", text(&timeline));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&timeline.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= 10, "5 writes, 4 accesses, the tools' own records: {}", lines.len());
    assert!(lines.iter().all(|event| event["resourceType"] == "AuditEvent"));
    let syslog = run(&["audit", "timeline", "--data-dir", data, "--since", &since, "--format", "syslog"]);
    assert!(String::from_utf8_lossy(&syslog.stdout).lines().all(|line| line.starts_with('<')), "{}", text(&syslog));
    let bad = run(&["audit", "breach", "--data-dir", data, "--user", "x", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("not an instant"), "{}", text(&bad));
}

/// Starts a server, has `lab-gateway` read `reads` times, kills the server at once (before
/// the writer moves the journal into the database), and returns the data directory.
fn reads_then_kill(dir: &std::path::Path, reads: usize) -> std::path::PathBuf {
    init(dir);
    let admin = token(dir, "registry", "system/*.cruds");
    let reader = token(dir, "lab-gateway", "system/*.rs");
    let mut server = ServerProcess::start(dir, &[]);
    let mut client = HttpClient::connect(server.address).expect("connect");
    let mut call = |token: &str, method: &str, path: &str, body: Option<&str>| {
        let auth = format!("Bearer {token}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
        client.request(method, path, &headers, body.map(str::as_bytes)).expect("request").status
    };
    for n in 1..=5 {
        let body = format!(r#"{{"resourceType":"Patient","id":"p{n}","gender":"other"}}"#);
        assert_eq!(call(&admin, "PUT", &format!("/fhir/Patient/p{n}"), Some(&body)), 201);
    }
    for read in 0..reads {
        assert_eq!(call(&reader, "GET", &format!("/fhir/Patient/p{}", read % 5 + 1), None), 200);
    }
    server.kill_hard();
    let data = dir.join("data");
    let frames: u64 = journal_files(&data).iter().map(|file| file.1.len() as u64 - 8).sum();
    assert!(frames > 0, "the last reads' records were still in the journal when the server was killed");
    data
}

/// The audit journal's two files: (path, bytes).
fn journal_files(data: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    ["a", "b"]
        .iter()
        .map(|suffix| {
            let path = data.join(format!("medvault.db-audit-journal-{suffix}"));
            let bytes = std::fs::read(&path).expect("the journal exists");
            (path, bytes)
        })
        .collect()
}

fn reads_of(data: &std::path::Path, user: &str) -> u64 {
    let data = data.to_str().expect("utf8");
    let output =
        run(&["audit", "breach", "--data-dir", data, "--user", user, "--since", "2000-01-01T00:00:00Z", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    report["patients"].as_array().expect("patients").iter().map(|p| p["reads"].as_u64().expect("reads")).sum()
}

#[test]
fn reads_acknowledged_before_a_kill_are_in_the_audit_trail_after_it() {
    let dir = TempDir::new("cli-audit-crash");
    let data = reads_then_kill(dir.path(), 40);
    assert_eq!(reads_of(&data, "lab-gateway"), 40, "every acknowledged read has its record");
    let verify = run(&["verify", "--data-dir", data.to_str().expect("utf8")]);
    assert!(verify.status.success(), "{}", text(&verify));
    // Moved into the database; the file appends go to now holds at most the tools' own records.
    assert!(journal_files(&data).iter().any(|(_, bytes)| bytes.len() == 8), "moved and cut");
}

#[test]
fn an_altered_audit_journal_is_set_aside_not_trusted() {
    let dir = TempDir::new("cli-audit-journal-tamper");
    let data = reads_then_kill(dir.path(), 10);
    let (path, mut bytes) = journal_files(&data).into_iter().max_by_key(|(_, bytes)| bytes.len()).expect("files");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("tamper");
    // The store still opens and answers; the altered journal is kept aside for investigation.
    let before = reads_of(&data, "lab-gateway");
    assert!(before < 10, "records of the altered journal are not taken as authentic: {before}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .expect("dir")
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("medvault.db-audit-journal-") && name.contains(".damaged-"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    // As found (the tool's own records, journaled before it read the journal back, may follow).
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    let kept = aside.iter().find(|aside| aside.starts_with(&format!("{name}.damaged-"))).expect("kept");
    let kept = std::fs::read(data.join(kept)).expect("kept");
    assert!(kept.starts_with(&bytes), "the altered journal is kept as found");
    // The new journal is sound: the next tool finds nothing to set aside.
    assert_eq!(reads_of(&data, "lab-gateway"), before);
    let damaged = std::fs::read_dir(&data)
        .expect("dir")
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().contains(".damaged-")))
        .count();
    assert_eq!(damaged, 2, "only the altered journal was set aside");
}
