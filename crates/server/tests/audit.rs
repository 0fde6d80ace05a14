//! Every access leaves exactly the expected audit record: a scripted mix of interactions
//! by several callers, checked record by record (who, what, which patients, outcome).

mod common;

use common::TestServer;
use medvault_audit::{AuditRecord, EventKind, Outcome};
use medvault_server::auth::Role;
use serde_json::json;

/// Every audit record in the store, in ledger order.
fn records(server: &TestServer) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let blocks = server.store.audit_blocks(0, i64::MAX, after, 100).expect("blocks");
        let Some(last) = blocks.last() else { break };
        after = Some(last.seq);
        for block in &blocks {
            for bytes in server.store.open_audit_block(block).expect("opens") {
                out.push(medvault_audit::decode(&bytes).expect("decodes"));
            }
        }
    }
    out
}

#[tokio::test]
async fn each_interaction_leaves_exactly_its_record() {
    let server = TestServer::new();
    for (path, body) in [
        ("Practitioner/d1", json!({"resourceType": "Practitioner", "id": "d1"})),
        ("Patient/p1", json!({"resourceType": "Patient", "id": "p1"})),
        ("Patient/p2", json!({"resourceType": "Patient", "id": "p2"})),
        (
            "Observation/o1",
            json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        ),
        (
            "Encounter/e1",
            json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress", "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}, "participant": [{"individual": {"reference": "Practitioner/d1"}}]}),
        ),
    ] {
        assert_eq!(server.call("PUT", &format!("/fhir/{path}"), Some(body)).await.status, 201);
    }
    let nurse = server.session("nurse", Role::Clinician, Some("Practitioner/d1"), None);
    let before = records(&server).len();

    // The script: (caller, method, path, body, expected status).
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "y"}, "subject": {"reference": "Patient/p1"}});
    assert_eq!(server.call_as(&nurse, "GET", "/fhir/Observation/o1", None).await.status, 200);
    assert_eq!(server.call_as(&nurse, "GET", "/fhir/Patient/p1/_history/1", None).await.status, 200);
    assert_eq!(server.call_as(&nurse, "GET", "/fhir/Observation/_history?_count=10", None).await.status, 200);
    let created = server.call_as(&nurse, "POST", "/fhir/Observation", Some(observation)).await;
    assert_eq!(created.status, 201);
    let new_id = created.json()["id"].as_str().expect("id").to_string();
    assert_eq!(server.call_as(&nurse, "DELETE", &format!("/fhir/Observation/{new_id}"), None).await.status, 204);
    assert_eq!(server.call_as(&nurse, "GET", "/fhir/Patient/p2", None).await.status, 403, "not in care");
    assert_eq!(
        server.send("GET", "/fhir/Patient/p1", &[("authorization", "Bearer mvs_forged")], None).await.status,
        401
    );
    assert_eq!(server.call_as(&server.admin, "GET", "/fhir/Patient/p1", None).await.status, 403, "an administrator");
    assert_eq!(server.call("GET", "/fhir/Patient/p2", None).await.status, 200, "the service client");

    let new: Vec<AuditRecord> = records(&server).into_iter().skip(before).collect();
    let summary: Vec<(String, EventKind, Outcome, Vec<String>)> =
        new.iter().map(|r| (r.agent.name.clone(), r.kind, r.outcome, r.patients.clone())).collect();
    let p1 = vec!["p1".to_string()];
    assert_eq!(
        summary,
        vec![
            ("nurse".into(), EventKind::Read, Outcome::Success, p1.clone()),
            ("nurse".into(), EventKind::Vread, Outcome::Success, p1.clone()),
            ("nurse".into(), EventKind::HistoryType, Outcome::Success, p1.clone()),
            ("nurse".into(), EventKind::Create, Outcome::Success, p1.clone()),
            ("nurse".into(), EventKind::Delete, Outcome::Success, p1.clone()),
            ("nurse".into(), EventKind::Read, Outcome::MinorFailure, vec![]),
            // (the forged token: no record, only a log line)
            ("test-admin".into(), EventKind::Read, Outcome::MinorFailure, vec![]),
            ("test-clinician".into(), EventKind::Read, Outcome::Success, vec!["p2".to_string()]),
        ]
    );
    // Details that matter to an investigator.
    assert_eq!(new[0].entities, vec!["Observation/o1/_history/1".to_string()]);
    assert_eq!(new[0].agent.role, "clinician");
    assert_eq!(new[0].agent.purpose_of_use.as_deref(), Some("TREAT"));
    assert_eq!(new[2].query.as_deref(), Some("Observation/_history?_count=10"));
    assert_eq!(new[3].entities, vec![format!("Observation/{new_id}")]);
    assert!(new.iter().all(|r| !r.request_id.is_empty()));
    // Each record renders as a valid FHIR AuditEvent.
    let identity = medvault_audit::ServerIdentity { name: "medvault-test".into(), site: None };
    for (index, record) in new.iter().enumerate() {
        let event = medvault_audit::to_audit_event(record, &format!("a{index}"), &identity);
        medvault_fhir::validate_resource(&event)
            .unwrap_or_else(|e| panic!("record {index}: {:?}\n{event:#}", e.issues));
    }
    // The audit blocks are in the ledger, and verify is clean.
    let report = server.store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert!(report.audit_records as usize >= new.len());
}

#[tokio::test]
async fn logins_and_their_failures_are_security_events() {
    let server = TestServer::new();
    let before = records(&server).len();
    let _ = server.session("someone", Role::Clinician, None, None);
    let address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    assert!(server.state.auth.login("someone", "wrong-password-here", None, address).is_err());
    assert!(server.state.auth.login("nobody-at-all", "wrong-password-here", None, address).is_err());
    let new: Vec<(EventKind, String, Outcome)> =
        records(&server).into_iter().skip(before).map(|r| (r.kind, r.agent.name, r.outcome)).collect();
    assert_eq!(
        new,
        vec![
            (EventKind::Login, "someone".to_string(), Outcome::Success),
            (EventKind::LoginFailure, "someone".to_string(), Outcome::MinorFailure),
            (EventKind::LoginFailure, "nobody-at-all".to_string(), Outcome::MinorFailure),
        ]
    );
}

#[tokio::test]
async fn auditors_search_the_trail_and_patients_see_who_opened_their_record() {
    let server = TestServer::new();
    for (path, body) in [
        ("Patient/p1", json!({"resourceType": "Patient", "id": "p1"})),
        ("Patient/p2", json!({"resourceType": "Patient", "id": "p2"})),
    ] {
        assert_eq!(server.call("PUT", &format!("/fhir/{path}"), Some(body)).await.status, 201);
    }
    for _ in 0..3 {
        assert_eq!(server.call("GET", "/fhir/Patient/p1", None).await.status, 200);
    }
    assert_eq!(server.call("GET", "/fhir/Patient/p2", None).await.status, 200);
    let auditor = server.session("aud", Role::Auditor, None, None);
    let patient = server.session("pt1", Role::Patient, Some("Patient/p1"), None);
    let nurse = server.session("nurse", Role::Clinician, None, None);

    // The auditor: by patient, newest first, paged.
    let page = server.call_as(&auditor, "GET", "/fhir/AuditEvent?patient=Patient/p1&subtype=read&_count=2", None).await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let bundle = page.json();
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().expect("entries").clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["resource"]["resourceType"], "AuditEvent");
    let next = bundle["link"].as_array().expect("links").iter().find(|l| l["relation"] == "next").expect("a next page");
    let next = next["url"].as_str().expect("url").replace("http://fhir.example.org:8443", "");
    let second = server.call_as(&auditor, "GET", &next, None).await.json();
    assert_eq!(second["entry"].as_array().map(Vec::len), Some(1), "three reads of p1 in all");
    // By agent and date.
    let by_agent = server
        .call_as(&auditor, "GET", "/fhir/AuditEvent?agent-name=test-clinician&date=ge2000-01-01T00:00:00Z", None)
        .await
        .json();
    assert!(by_agent["entry"].as_array().map(Vec::len).unwrap_or(0) >= 6, "two writes and four reads");
    // One by id.
    let id = entries[0]["resource"]["id"].as_str().expect("id");
    let one = server.call_as(&auditor, "GET", &format!("/fhir/AuditEvent/{id}"), None).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], id);

    // The patient: who opened my record — and nobody else's.
    let mine = server.call_as(&patient, "GET", "/fhir/AuditEvent?patient=p1", None).await;
    assert_eq!(mine.status, 200, "{}", String::from_utf8_lossy(&mine.body));
    assert!(String::from_utf8_lossy(&mine.body).contains("test-clinician"), "the report names who opened it");
    assert_eq!(server.call_as(&patient, "GET", "/fhir/AuditEvent?patient=p2", None).await.status, 403);
    assert_eq!(server.call_as(&patient, "GET", "/fhir/AuditEvent", None).await.status, 403);
    // Clinicians, administrators and services do not read the trail; nobody writes it.
    assert_eq!(server.call_as(&nurse, "GET", "/fhir/AuditEvent?patient=p1", None).await.status, 403);
    assert_eq!(server.call_as(&server.admin, "GET", "/fhir/AuditEvent", None).await.status, 403);
    assert_eq!(server.call("GET", "/fhir/AuditEvent", None).await.status, 403);
    let forged = json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z"});
    assert_eq!(server.call_as(&auditor, "POST", "/fhir/AuditEvent", Some(forged)).await.status, 405);
    assert_eq!(server.call("DELETE", &format!("/fhir/AuditEvent/{id}"), None).await.status, 405);
    // Bad queries.
    assert_eq!(server.call_as(&auditor, "GET", "/fhir/AuditEvent?date=yesterday", None).await.status, 400);
    assert_eq!(server.call_as(&auditor, "GET", "/fhir/AuditEvent?color=red", None).await.status, 400);
    // Searching the trail is itself in the trail.
    let searches =
        records(&server).into_iter().filter(|r| r.agent.name == "aud" && r.kind == EventKind::SearchType).count();
    assert!(searches >= 3);
}

#[tokio::test]
async fn alerts_fire_on_canaries_and_mass_deletion_and_stay_quiet_otherwise() {
    let clock = std::sync::Arc::new(medvault_base::ManualClock::new(1_800_000_000_000));
    let server = TestServer::with_clock(clock.clone());
    // Seeded in the store directly: the seeding is not the traffic under watch.
    let seed: Vec<medvault_store::Write> = (0..130)
        .map(|n| medvault_store::Write {
            resource_type: "Patient".into(),
            id: format!("p{n}"),
            action: medvault_store::WriteAction::Put(json!({"resourceType": "Patient", "id": format!("p{n}")})),
            if_match: None,
            must_be_new: false,
        })
        .collect();
    server.store.write(&seed, "seed").expect("seed");
    let auditor = server.session("aud", Role::Auditor, None, None);
    let alerts = || async {
        let reply = server.call_as(&auditor, "GET", "/admin/alerts", None).await;
        assert_eq!(reply.status, 200);
        reply.json()["alerts"].as_array().cloned().unwrap_or_default()
    };
    // Normal traffic: a few reads.
    for n in 0..5 {
        assert_eq!(server.call("GET", &format!("/fhir/Patient/p{n}"), None).await.status, 200);
    }
    assert!(alerts().await.is_empty(), "normal traffic raises nothing");
    // A canary: bait nobody should open. The server re-reads the list every 5 s.
    server.store.set_canary("p7", true).expect("canary");
    clock.advance_ms(6_000);
    assert_eq!(server.call("GET", "/fhir/Patient/p8", None).await.status, 200);
    assert!(alerts().await.is_empty(), "another patient is not bait");
    assert_eq!(server.call("GET", "/fhir/Patient/p7", None).await.status, 200);
    let raised = alerts().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["alert"], "canary-access");
    assert_eq!(raised[0]["agent"], "test-clinician");
    // Mass deletion: a script deleting 120 records within a minute.
    for n in 10..130 {
        assert_eq!(server.call("DELETE", &format!("/fhir/Patient/p{n}"), None).await.status, 204);
    }
    let raised = alerts().await;
    let mut kinds: Vec<&str> = raised.iter().filter_map(|a| a["alert"].as_str()).collect();
    kinds.sort_unstable();
    // 120 deletions in a minute, and 120 distinct patients in an hour (the floor is 30).
    assert_eq!(kinds, ["canary-access", "mass-modification", "unusual-patient-volume"], "{raised:?}");
    // Non-auditors may not read the alerts.
    assert_eq!(server.call_as(&server.admin, "GET", "/admin/alerts", None).await.status, 403);
}

#[tokio::test]
async fn mass_modification_can_lock_the_server_down_until_an_administrator_lifts_it() {
    let clock = std::sync::Arc::new(medvault_base::ManualClock::new(1_800_000_000_000));
    let server = TestServer::with_lockdown(clock.clone());
    let seed: Vec<medvault_store::Write> = (0..110)
        .map(|n| medvault_store::Write {
            resource_type: "Observation".into(),
            id: format!("o{n}"),
            action: medvault_store::WriteAction::Put(
                json!({"resourceType": "Observation", "id": format!("o{n}"), "status": "final", "code": {"text": "x"}}),
            ),
            if_match: None,
            must_be_new: false,
        })
        .collect();
    server.store.write(&seed, "seed").expect("seed");
    // A script deletes as fast as it can; after the 101st delete in a minute, writes stop.
    let mut refused_at = None;
    for n in 0..110 {
        let status = server.call("DELETE", &format!("/fhir/Observation/o{n}"), None).await.status;
        if status == 503 {
            refused_at = Some(n);
            break;
        }
        assert_eq!(status, 204);
    }
    assert_eq!(refused_at, Some(101), "the lockdown starts right after the alert");
    let reply = server
        .call(
            "POST",
            "/fhir/Observation",
            Some(json!({"resourceType": "Observation", "status": "final", "code": {"text": "y"}})),
        )
        .await;
    assert_eq!((reply.status, reply.outcome().0.as_str()), (503, "lock-error"), "no writes in lockdown");
    assert_eq!(server.call("GET", "/fhir/Observation/o105", None).await.status, 200, "reads go on");
    // Only an administrator lifts it; then writes work again.
    assert_eq!(server.call("POST", "/admin/lockdown/lift", None).await.status, 403);
    let lifted = server.call_as(&server.admin, "POST", "/admin/lockdown/lift", None).await;
    assert_eq!(lifted.json()["lockdown_lifted"], true);
    assert_eq!(server.call("DELETE", "/fhir/Observation/o105", None).await.status, 204);
    let kinds: Vec<EventKind> = records(&server).into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Lockdown).count(),
        2,
        "the lockdown and its lifting are audited"
    );
}
