//! The official FHIR R4 examples round-trip through the API: each is accepted with its
//! own id, and reads back equal apart from the `versionId` and `lastUpdated` the server
//! sets. The few examples that are themselves invalid are listed, with the reason, in
//! `crates/fhir/testdata/r4-examples/INVALID.md`, and must be refused.

mod common;

use common::TestServer;
use serde_json::Value;

fn allow_list() -> Vec<String> {
    let path = medvault_testkit::r4_examples_dir().join("INVALID.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix("| `").and_then(|rest| rest.split('`').next()))
        .filter(|name| name.ends_with(".json"))
        .map(str::to_string)
        .collect()
}

fn without_server_meta(mut resource: Value) -> Value {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    resource
}

#[tokio::test]
async fn official_examples_round_trip() {
    let server = TestServer::new();
    let invalid = allow_list();
    let mut files: Vec<_> = std::fs::read_dir(medvault_testkit::r4_examples_dir())
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 700, "the official examples are carried in the project");
    let mut failures = Vec::new();
    let mut round_tripped = 0;
    let mut audit_events = 0;
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let example = medvault_testkit::read_json(file);
        let resource_type = example["resourceType"].as_str().expect("resourceType").to_string();
        let reply = match example.get("id").and_then(Value::as_str) {
            Some(id) => server.call("PUT", &format!("/fhir/{resource_type}/{id}"), Some(example.clone())).await,
            None => server.call("POST", &format!("/fhir/{resource_type}"), Some(example.clone())).await,
        };
        if resource_type == "AuditEvent" {
            // Valid, but only the server writes AuditEvents: a client's are refused.
            if medvault_fhir::validate_resource(&example).is_err() {
                failures.push(format!("{name}: an official AuditEvent does not validate"));
            } else if reply.status != 405 {
                failures.push(format!("{name}: a client-written AuditEvent got {}", reply.status));
            }
            audit_events += 1;
            continue;
        }
        if invalid.contains(&name) {
            if reply.status < 400 {
                failures.push(format!("{name}: listed as invalid but accepted"));
            }
            continue;
        }
        if reply.status >= 300 {
            failures.push(format!("{name}: {} {}", reply.status, String::from_utf8_lossy(&reply.body)));
            continue;
        }
        let stored = reply.json();
        let id = stored["id"].as_str().expect("id");
        let read = server.call("GET", &format!("/fhir/{resource_type}/{id}"), None).await;
        let mut expected = example.clone();
        if let Some(object) = expected.as_object_mut() {
            object.insert("id".into(), Value::String(id.to_string()));
        }
        if without_server_meta(read.json()) != without_server_meta(expected) {
            failures.push(format!("{name}: read back differs"));
        } else {
            round_tripped += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {} examples failed:\n{}", failures.len(), files.len(), failures.join("\n"));
    assert!(audit_events >= 7, "the official AuditEvent examples were tried");
    assert_eq!(round_tripped + invalid.len() + audit_events, files.len());
}
