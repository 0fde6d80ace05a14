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
