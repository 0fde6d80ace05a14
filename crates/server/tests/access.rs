//! Who may see what: an authorization matrix of users × records × interactions, checked
//! against rules written here independently of the server, and the attacks on them
//! (self-assignment, moving a record to another patient, reading through a Bundle).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::TestServer;
use medvault_server::auth::Role;
use serde_json::{json, Value};

const PATIENTS: [&str; 4] = ["p1", "p2", "p3", "p4"];

/// The world: (type, id, owning patient) of every record, and its body.
fn world() -> Vec<(&'static str, String, Option<&'static str>, Value)> {
    let mut records = vec![
        (
            "Practitioner",
            "d1".to_string(),
            None,
            json!({"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Doctor-One"}]}),
        ),
        (
            "Practitioner",
            "d2".to_string(),
            None,
            json!({"resourceType": "Practitioner", "id": "d2", "name": [{"family": "Doctor-Two"}]}),
        ),
        (
            "Organization",
            "org1".to_string(),
            None,
            json!({"resourceType": "Organization", "id": "org1", "name": "General Hospital"}),
        ),
    ];
    for patient in PATIENTS {
        records.push((
            "Patient",
            patient.to_string(),
            Some(patient),
            json!({"resourceType": "Patient", "id": patient, "name": [{"family": format!("Secret-{patient}")}]}),
        ));
        for (resource_type, prefix) in [("Observation", "obs"), ("Condition", "cond")] {
            let id = format!("{prefix}-{patient}");
            let body = match resource_type {
                "Observation" => json!({"resourceType": "Observation", "id": id, "status": "final",
                    "code": {"text": format!("finding-of-{patient}")}, "subject": {"reference": format!("Patient/{patient}")}}),
                _ => json!({"resourceType": "Condition", "id": id, "code": {"text": format!("condition-of-{patient}")},
                    "subject": {"reference": format!("Patient/{patient}")}}),
            };
            records.push((resource_type, id, Some(patient), body));
        }
    }
    let encounter = |id: &str, patient: &'static str, doctor: &str, status: &str| {
        (
            "Encounter",
            id.to_string(),
            Some(patient),
            json!({"resourceType": "Encounter", "id": id, "status": status, "class": {"code": "AMB"},
                "subject": {"reference": format!("Patient/{patient}")},
                "participant": [{"individual": {"reference": format!("Practitioner/{doctor}")}}]}),
        )
    };
    records.push(encounter("enc-p1", "p1", "d1", "in-progress"));
    records.push(encounter("enc-p3", "p3", "d2", "finished"));
    // A cancelled encounter states no care relationship.
    records.push(encounter("enc-p4", "p4", "d1", "cancelled"));
    records.push((
        "CareTeam",
        "team-p2".to_string(),
        Some("p2"),
        json!({"resourceType": "CareTeam", "id": "team-p2", "status": "active", "subject": {"reference": "Patient/p2"},
            "participant": [{"member": {"reference": "Practitioner/d1"}}, {"member": {"reference": "Practitioner/d2"}}]}),
    ));
    records
}

/// A caller and the rules it should get, written independently of the server.
struct Caller {
    name: &'static str,
    token: String,
    /// Patients whose records it may see (`None`: every patient).
    patients: Option<BTreeSet<&'static str>>,
    /// (type or "*", interaction letters).
    scopes: Vec<(&'static str, &'static str)>,
    reads_clinical: bool,
}

impl Caller {
    fn allows(&self, resource_type: &str, letter: char) -> bool {
        self.reads_clinical
            && self.scopes.iter().any(|(t, letters)| (*t == "*" || *t == resource_type) && letters.contains(letter))
    }

    fn sees(&self, owner: Option<&str>) -> bool {
        match (owner, &self.patients) {
            (None, _) | (_, None) => true,
            (Some(patient), Some(patients)) => patients.contains(patient),
        }
    }

    /// May it do `letter` on a record of this type and owner?
    fn may(&self, resource_type: &str, owner: Option<&str>, letter: char) -> bool {
        self.allows(resource_type, letter) && self.sees(owner)
    }
}

async fn setup() -> (TestServer, Vec<Caller>) {
    let server = TestServer::new();
    for (resource_type, id, _, body) in world() {
        let reply = server.call("PUT", &format!("/fhir/{resource_type}/{id}"), Some(body)).await;
        assert_eq!(reply.status, 201, "seed {resource_type}/{id}: {}", String::from_utf8_lossy(&reply.body));
    }
    let c3 = server.session("c3", Role::Clinician, None, None);
    server
        .store
        .assign_patient(server.store.user_by_name("c3").expect("db").expect("c3").user_id, "p4", "test")
        .expect("assign");
    let service_patients =
        server.store.create_service_token("registry", "system/Patient.r", None).expect("token").to_string();
    let set = |items: &[&'static str]| Some(items.iter().copied().collect::<BTreeSet<_>>());
    let callers = vec![
        Caller {
            name: "c1",
            token: server.session("c1", Role::Clinician, Some("Practitioner/d1"), None),
            patients: set(&["p1", "p2"]),
            scopes: vec![("*", "cruds")],
            reads_clinical: true,
        },
        Caller {
            name: "c2",
            token: server.session("c2", Role::Clinician, Some("Practitioner/d2"), None),
            patients: set(&["p2", "p3"]),
            scopes: vec![("*", "cruds")],
            reads_clinical: true,
        },
        Caller { name: "c3", token: c3, patients: set(&["p4"]), scopes: vec![("*", "cruds")], reads_clinical: true },
        Caller {
            name: "c4-observations-only",
            token: server.session("c4", Role::Clinician, Some("Practitioner/d1"), Some("user/Observation.rs")),
            patients: set(&["p1", "p2"]),
            scopes: vec![("Observation", "rs")],
            reads_clinical: true,
        },
        Caller {
            name: "pt1",
            token: server.session("pt1", Role::Patient, Some("Patient/p1"), None),
            patients: set(&["p1"]),
            scopes: vec![("*", "rs")],
            reads_clinical: true,
        },
        Caller {
            name: "service-patient-read",
            token: service_patients,
            patients: None,
            scopes: vec![("Patient", "r")],
            reads_clinical: true,
        },
        Caller {
            name: "service-all",
            token: server.clinician.clone(),
            patients: None,
            scopes: vec![("*", "cruds")],
            reads_clinical: true,
        },
        Caller {
            name: "admin",
            token: server.admin.clone(),
            patients: set(&[]),
            scopes: vec![],
            reads_clinical: false,
        },
        Caller {
            name: "auditor",
            token: server.session("aud", Role::Auditor, None, None),
            patients: set(&[]),
            scopes: vec![],
            reads_clinical: false,
        },
    ];
    (server, callers)
}

fn entry_keys(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    e["resource"].as_object().map(|r| {
                        format!("{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or(""))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// No patient's name, code or id text of a patient the caller may not see is in `body`.
fn assert_no_leak(caller: &Caller, body: &[u8], what: &str) {
    let text = String::from_utf8_lossy(body);
    for patient in PATIENTS {
        if !caller.sees(Some(patient)) || !caller.reads_clinical {
            for secret in
                [format!("Secret-{patient}"), format!("finding-of-{patient}"), format!("condition-of-{patient}")]
            {
                assert!(!text.contains(&secret), "{}: {what} leaked {secret}: {text}", caller.name);
            }
        }
    }
}

#[tokio::test]
async fn the_matrix_of_reads_has_no_leak() {
    let (server, callers) = setup().await;
    let records = world();
    let mut checked = 0;
    for caller in &callers {
        for (resource_type, id, owner, _) in &records {
            let expected = if caller.may(resource_type, *owner, 'r') { 200 } else { 403 };
            for uri in [
                format!("/fhir/{resource_type}/{id}"),
                format!("/fhir/{resource_type}/{id}/_history/1"),
                format!("/fhir/{resource_type}/{id}/_history"),
                // A ledger proof says a version exists: the same rule as reading it.
                format!("/ledger/inclusion?resource={resource_type}/{id}/_history/1"),
            ] {
                let reply = server.call_as(&caller.token, "GET", &uri, None).await;
                assert_eq!(
                    reply.status,
                    expected,
                    "{} GET {uri}: {}",
                    caller.name,
                    String::from_utf8_lossy(&reply.body)
                );
                assert_no_leak(caller, &reply.body, &uri);
                checked += 1;
            }
        }
        // Type history: exactly the visible records of the type (searching needs `s`).
        let types: BTreeSet<&str> = records.iter().map(|(t, _, _, _)| *t).collect();
        for resource_type in types {
            let uri = format!("/fhir/{resource_type}/_history");
            let reply = server.call_as(&caller.token, "GET", &uri, None).await;
            assert_no_leak(caller, &reply.body, &uri);
            if !caller.allows(resource_type, 's') {
                assert_eq!(reply.status, 403, "{} {uri}", caller.name);
                continue;
            }
            assert_eq!(reply.status, 200, "{} {uri}", caller.name);
            let expected: BTreeSet<String> = records
                .iter()
                .filter(|(t, _, owner, _)| *t == resource_type && caller.sees(*owner))
                .map(|(t, id, _, _)| format!("{t}/{id}"))
                .collect();
            assert_eq!(entry_keys(&reply.json()), expected, "{} {uri}", caller.name);
            checked += 1;
        }
        // System history: every visible record of every type it may search.
        let reply = server.call_as(&caller.token, "GET", "/fhir/_history?_count=1000", None).await;
        assert_no_leak(caller, &reply.body, "system history");
        if caller.reads_clinical {
            let expected: BTreeSet<String> = records
                .iter()
                .filter(|(t, _, owner, _)| caller.may(t, *owner, 's'))
                .map(|(t, id, _, _)| format!("{t}/{id}"))
                .collect();
            assert_eq!(reply.status, 200, "{} system history", caller.name);
            assert_eq!(entry_keys(&reply.json()), expected, "{} system history", caller.name);
        } else {
            assert_eq!(reply.status, 403);
        }
    }
    assert!(checked > 300, "the matrix ran {checked} checks");
}

/// A search reply without its links, which echo the caller's own query.
fn without_links(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            if let Some(object) = value.as_object_mut() {
                object.remove("link");
            }
            serde_json::to_vec(&value).unwrap_or_default()
        }
        Err(_) => body.to_vec(),
    }
}

/// The entries of a searchset Bundle by mode, as `Type/id`.
fn entries_by_mode(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == mode)
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or(""),
                        e["resource"]["id"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_matrix_of_searches_has_no_leak() {
    let (server, callers) = setup().await;
    // A record of p1 that points at p3 outside the patient compartment: `_include` must
    // not follow it for a caller who does not see p3.
    let pointer = json!({"resourceType": "Observation", "id": "obs-p1-about-p3", "status": "final",
        "code": {"text": "finding-of-p1"}, "subject": {"reference": "Patient/p1"}, "focus": [{"reference": "Patient/p3"}]});
    assert_eq!(server.call("PUT", "/fhir/Observation/obs-p1-about-p3", Some(pointer.clone())).await.status, 201);
    let mut records = world();
    records.push(("Observation", "obs-p1-about-p3".to_string(), Some("p1"), pointer));
    let types: BTreeSet<&str> = records.iter().map(|(t, _, _, _)| *t).collect();
    let visible = |caller: &Caller, resource_type: &str, letter: char| -> BTreeSet<String> {
        records
            .iter()
            .filter(|(t, _, owner, _)| *t == resource_type && caller.may(t, *owner, letter))
            .map(|(t, id, _, _)| format!("{t}/{id}"))
            .collect()
    };
    let mut checked = 0;
    for caller in &callers {
        for resource_type in &types {
            // A plain search, its total and its count: exactly the visible records.
            for uri in [
                format!("/fhir/{resource_type}?_count=1000&_total=accurate"),
                format!("/fhir/{resource_type}?_summary=count"),
                format!("/fhir/{resource_type}?_lastUpdated=gt2000-01-01&_count=3&_total=accurate"),
            ] {
                let reply = server.call_as(&caller.token, "GET", &uri, None).await;
                assert_no_leak(caller, &without_links(&reply.body), &uri);
                if !caller.allows(resource_type, 's') {
                    assert_eq!(reply.status, 403, "{} {uri}", caller.name);
                    continue;
                }
                assert_eq!(reply.status, 200, "{} {uri}: {}", caller.name, String::from_utf8_lossy(&reply.body));
                let bundle = reply.json();
                let expected = visible(caller, resource_type, 's');
                assert_eq!(
                    bundle["total"],
                    expected.len(),
                    "{} {uri}: the total counts only visible records",
                    caller.name
                );
                if uri.contains("_count=1000") {
                    assert_eq!(entries_by_mode(&bundle, "match"), expected, "{} {uri}", caller.name);
                }
                checked += 1;
            }
        }
        let observations_allowed = caller.allows("Observation", 's');
        let patients_allowed = caller.allows("Patient", 's');
        // `_include`: only the targets the caller may read.
        let uri = "/fhir/Observation?_include=Observation:subject&_include=Observation:focus&_count=1000";
        let reply = server.call_as(&caller.token, "GET", uri, None).await;
        assert_no_leak(caller, &without_links(&reply.body), uri);
        if observations_allowed {
            let bundle = reply.json();
            assert_eq!(entries_by_mode(&bundle, "match"), visible(caller, "Observation", 's'), "{} {uri}", caller.name);
            let targets: BTreeSet<String> = entries_by_mode(&bundle, "include");
            let may_read = visible(caller, "Patient", 'r');
            assert!(targets.is_subset(&may_read), "{} {uri}: included {targets:?}", caller.name);
            checked += 1;
        }
        for patient in PATIENTS {
            let uri = format!("/fhir/Observation?subject=Patient/{patient}&_include=Observation:subject");
            let reply = server.call_as(&caller.token, "GET", &uri, None).await;
            assert_no_leak(caller, &without_links(&reply.body), &uri);
            // Chains and `_has` resolve only over what the caller sees.
            for uri in [
                format!("/fhir/Observation?subject:Patient.family=Secret-{patient}&_total=accurate"),
                format!("/fhir/Patient?_has:Observation:subject:code:text=finding-of-{patient}&_total=accurate"),
                format!("/fhir/Patient?_id={patient}&_revinclude=Observation:subject&_revinclude=Condition:subject"),
            ] {
                let reply = server.call_as(&caller.token, "GET", &uri, None).await;
                assert_no_leak(caller, &without_links(&reply.body), &uri);
                let searched =
                    if uri.starts_with("/fhir/Observation") { observations_allowed } else { patients_allowed };
                if !searched
                    || (uri.contains("subject:Patient") && !patients_allowed)
                    || (uri.contains("_has") && !observations_allowed)
                {
                    assert_eq!(reply.status, 403, "{} {uri}", caller.name);
                    continue;
                }
                assert_eq!(reply.status, 200, "{} {uri}: {}", caller.name, String::from_utf8_lossy(&reply.body));
                let bundle = reply.json();
                let sees = caller.sees(Some(patient));
                if uri.contains("_total") {
                    let expected = if !sees {
                        0
                    } else if uri.contains("_has") {
                        1
                    } else {
                        records.iter().filter(|(t, _, owner, _)| *t == "Observation" && *owner == Some(patient)).count()
                    };
                    assert_eq!(bundle["total"], expected, "{} {uri}", caller.name);
                } else {
                    let included = entries_by_mode(&bundle, "include");
                    assert!(sees || included.is_empty(), "{} {uri}: {included:?}", caller.name);
                }
                checked += 1;
            }
            // `$everything`: the patient's records, only for those who see the patient.
            let uri = format!("/fhir/Patient/{patient}/$everything?_count=1000");
            let reply = server.call_as(&caller.token, "GET", &uri, None).await;
            assert_no_leak(caller, &without_links(&reply.body), &uri);
            let expected = if caller.may("Patient", Some(patient), 'r') { 200 } else { 403 };
            assert_eq!(reply.status, expected, "{} {uri}", caller.name);
            if expected == 200 {
                let found = entries_by_mode(&reply.json(), "match");
                let records_of: BTreeSet<String> = records
                    .iter()
                    .filter(|(t, _, owner, _)| *owner == Some(patient) && caller.may(t, *owner, 'r'))
                    .map(|(t, id, _, _)| format!("{t}/{id}"))
                    .collect();
                assert_eq!(found, records_of, "{} {uri}", caller.name);
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "the search matrix ran {checked} checks");
}

#[tokio::test]
async fn a_record_that_does_not_exist_looks_like_one_that_is_denied() {
    let (server, callers) = setup().await;
    let c1 = &callers[0];
    let denied = server.call_as(&c1.token, "GET", "/fhir/Patient/p3", None).await;
    let missing = server.call_as(&c1.token, "GET", "/fhir/Patient/no-such-patient", None).await;
    assert_eq!((denied.status, missing.status), (403, 403));
    assert_eq!(denied.outcome(), missing.outcome(), "the same answer, whether it exists or not");
    let missing_version = server.call_as(&c1.token, "GET", "/fhir/Patient/p3/_history/9", None).await;
    assert_eq!(missing_version.outcome(), denied.outcome());
    // A caller who sees every patient learns that it is missing.
    let service = server.call("GET", "/fhir/Patient/no-such-patient", None).await;
    assert_eq!(service.status, 404);
    // Without a valid session: 401, never 403.
    let anonymous = server.send("GET", "/fhir/Patient/p3", &[], None).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn the_matrix_of_writes_changes_only_what_is_allowed() {
    let (server, callers) = setup().await;
    for caller in &callers {
        for patient in PATIENTS {
            let owner = Some(patient);
            // Create.
            let body = json!({"resourceType": "Observation", "status": "final", "code": {"text": "new"},
                "subject": {"reference": format!("Patient/{patient}")}});
            let before = observation_count(&server).await;
            let created = server.call_as(&caller.token, "POST", "/fhir/Observation", Some(body)).await;
            let expected = if caller.may("Observation", owner, 'c') { 201 } else { 403 };
            assert_eq!(created.status, expected, "{} creates for {patient}", caller.name);
            assert_eq!(observation_count(&server).await, before + usize::from(expected == 201), "{}", caller.name);
            // Update (the same body again makes a new version).
            let current = server.call("GET", &format!("/fhir/Observation/obs-{patient}"), None).await.json();
            let updated =
                server.call_as(&caller.token, "PUT", &format!("/fhir/Observation/obs-{patient}"), Some(current)).await;
            let expected = if caller.may("Observation", owner, 'u') { 200 } else { 403 };
            assert_eq!(updated.status, expected, "{} updates obs-{patient}", caller.name);
            // Delete a record made for this check.
            let doomed = format!("del-{}-{patient}", caller.name);
            let body = json!({"resourceType": "Observation", "id": doomed, "status": "final", "code": {"text": "doomed"},
                "subject": {"reference": format!("Patient/{patient}")}});
            assert_eq!(server.call("PUT", &format!("/fhir/Observation/{doomed}"), Some(body)).await.status, 201);
            let deleted = server.call_as(&caller.token, "DELETE", &format!("/fhir/Observation/{doomed}"), None).await;
            let expected = if caller.may("Observation", owner, 'd') { 204 } else { 403 };
            assert_eq!(deleted.status, expected, "{} deletes {doomed}", caller.name);
            let after = server.call("GET", &format!("/fhir/Observation/{doomed}"), None).await.status;
            assert_eq!(after, if expected == 204 { 410 } else { 200 }, "{} {doomed}", caller.name);
        }
    }
}

async fn observation_count(server: &TestServer) -> usize {
    let reply = server.call("GET", "/fhir/Observation/_history?_count=1000", None).await;
    let ids: BTreeSet<String> = entry_keys(&reply.json());
    ids.len()
}

#[tokio::test]
async fn writes_cannot_make_a_care_relationship_or_move_a_record_away() {
    let (server, callers) = setup().await;
    let c1 = &callers[0];
    // Self-assignment: an Encounter that would make c1 the practitioner of p4.
    let encounter = json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "subject": {"reference": "Patient/p4"}, "participant": [{"individual": {"reference": "Practitioner/d1"}}]});
    assert_eq!(server.call_as(&c1.token, "POST", "/fhir/Encounter", Some(encounter)).await.status, 403);
    assert_eq!(server.call_as(&c1.token, "GET", "/fhir/Patient/p4", None).await.status, 403);
    // Moving p1's observation into p4's record (out of c1's reach, into someone else's).
    let mut moved = server.call("GET", "/fhir/Observation/obs-p1", None).await.json();
    moved["subject"] = json!({"reference": "Patient/p4"});
    assert_eq!(server.call_as(&c1.token, "PUT", "/fhir/Observation/obs-p1", Some(moved)).await.status, 403);
    assert_eq!(server.call("GET", "/fhir/Observation/obs-p1", None).await.json()["subject"]["reference"], "Patient/p1");
    // Re-creating a deleted patient's id is an update of that patient's record, not a registration.
    assert_eq!(server.call("DELETE", "/fhir/Patient/p3", None).await.status, 204);
    let revived = json!({"resourceType": "Patient", "id": "p3", "name": [{"family": "Impostor"}]});
    assert_eq!(server.call_as(&c1.token, "PUT", "/fhir/Patient/p3", Some(revived)).await.status, 403);
    // But a care team change made by someone who may (the service) opens p4 to c1.
    let team = json!({"resourceType": "CareTeam", "id": "team-p4", "status": "active", "subject": {"reference": "Patient/p4"},
        "participant": [{"member": {"reference": "Practitioner/d1"}}]});
    assert_eq!(server.call("PUT", "/fhir/CareTeam/team-p4", Some(team.clone())).await.status, 201);
    assert_eq!(server.call_as(&c1.token, "GET", "/fhir/Patient/p4", None).await.status, 200);
    // And ending the team closes it again.
    let mut ended = team;
    ended["status"] = json!("inactive");
    assert_eq!(server.call("PUT", "/fhir/CareTeam/team-p4", Some(ended)).await.status, 200);
    assert_eq!(server.call_as(&c1.token, "GET", "/fhir/Patient/p4", None).await.status, 403);
}

#[tokio::test]
async fn a_clinician_who_registers_a_patient_cares_for_them() {
    let (server, callers) = setup().await;
    let (c1, c2) = (&callers[0], &callers[1]);
    let created = server
        .call_as(
            &c1.token,
            "POST",
            "/fhir/Patient",
            Some(json!({"resourceType": "Patient", "name": [{"family": "Newborn"}]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let id = created.json()["id"].as_str().expect("id").to_string();
    assert_eq!(server.call_as(&c1.token, "GET", &format!("/fhir/Patient/{id}"), None).await.status, 200);
    assert_eq!(server.call_as(&c2.token, "GET", &format!("/fhir/Patient/{id}"), None).await.status, 403);
    // A transaction that registers a patient and records their first observation.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1a4a62-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "name": [{"family": "Twin"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "apgar"},
            "subject": {"reference": "urn:uuid:6f1a4a62-0000-4000-8000-000000000001"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let reply = server.call_as(&c1.token, "POST", "/fhir", Some(bundle)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let observation = reply.json()["entry"][1]["response"]["location"].as_str().expect("location").to_string();
    let path = match observation.strip_prefix("http://fhir.example.org:8443") {
        Some(absolute) => absolute.to_string(),
        None => format!("/fhir/{observation}"),
    };
    assert_eq!(server.call_as(&c1.token, "GET", &path, None).await.status, 200);
    assert_eq!(server.call_as(&c2.token, "GET", &path, None).await.status, 403);
}

#[tokio::test]
async fn bundles_are_authorized_entry_by_entry() {
    let (server, callers) = setup().await;
    let c1 = &callers[0];
    let observation = |patient: &str| {
        json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{patient}")}}, "request": {"method": "POST", "url": "Observation"}})
    };
    let read = |reference: &str| json!({"request": {"method": "GET", "url": reference}});
    let before = observation_count(&server).await;
    // A transaction with one forbidden write is refused whole.
    let transaction =
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [observation("p1"), observation("p3")]});
    let reply = server.call_as(&c1.token, "POST", "/fhir", Some(transaction)).await;
    assert_eq!(reply.status, 403);
    assert!(reply.outcome().1.contains("Bundle.entry[1]"), "{:?}", reply.outcome());
    // So is one with a forbidden read, before anything is written.
    let transaction =
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [observation("p1"), read("Patient/p3")]});
    let reply = server.call_as(&c1.token, "POST", "/fhir", Some(transaction)).await;
    assert_eq!(reply.status, 403);
    assert_no_leak(c1, &reply.body, "transaction");
    assert_eq!(observation_count(&server).await, before, "nothing of a refused transaction is stored");
    // A batch answers each entry on its own.
    let batch = json!({"resourceType": "Bundle", "type": "batch",
        "entry": [read("Patient/p1"), read("Patient/p3"), observation("p1"), observation("p3"), read("Patient/nope")]});
    let reply = server.call_as(&c1.token, "POST", "/fhir", Some(batch)).await;
    assert_eq!(reply.status, 200);
    assert_no_leak(c1, &reply.body, "batch");
    let statuses: Vec<String> = reply.json()["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(statuses, ["200", "403", "201", "403", "403"]);
    assert_eq!(observation_count(&server).await, before + 1);
}

#[tokio::test]
async fn break_glass_opens_one_patient_for_an_hour_and_awaits_review() {
    let clock = Arc::new(medvault_base::ManualClock::new(1_800_000_000_000));
    let server = TestServer::with_clock(clock.clone());
    for (resource_type, id, _, body) in world() {
        assert_eq!(server.call("PUT", &format!("/fhir/{resource_type}/{id}"), Some(body)).await.status, 201);
    }
    let c3 = server.session("c3", Role::Clinician, None, None);
    let auditor = server.session("aud", Role::Auditor, None, None);
    assert_eq!(server.call_as(&c3, "GET", "/fhir/Observation/obs-p1", None).await.status, 403);
    let json_body = |value: Value| serde_json::to_vec(&value).expect("json");
    let send = |token: &str, uri: &str, body: Value| {
        let auth = format!("Bearer {token}");
        let body = json_body(body);
        let uri = uri.to_string();
        let server = &server;
        async move {
            server
                .send("POST", &uri, &[("authorization", &auth), ("content-type", "application/json")], Some(body))
                .await
        }
    };
    let no_reason = send(&c3, "/auth/break-glass", json!({"patient": "Patient/p1", "reason": "now"})).await;
    assert_eq!(no_reason.status, 400, "a reason is required");
    let opened = send(
        &c3,
        "/auth/break-glass",
        json!({"patient": "Patient/p1", "reason": "unconscious in A&E, no records reachable"}),
    )
    .await;
    assert_eq!(opened.status, 201, "{}", String::from_utf8_lossy(&opened.body));
    let grant = opened.json()["grant"].as_i64().expect("grant");
    assert_eq!(server.call_as(&c3, "GET", "/fhir/Observation/obs-p1", None).await.status, 200);
    assert_eq!(server.call_as(&c3, "GET", "/fhir/Observation/obs-p2", None).await.status, 403, "one patient only");
    // The review queue: auditors see it, others do not, and only an auditor closes it.
    let queue = server.call_as(&auditor, "GET", "/admin/break-glass?status=open", None).await;
    assert_eq!(queue.status, 200);
    let entries = queue.json()["grants"].as_array().cloned().expect("grants");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["patient"], "Patient/p1");
    assert_eq!(entries[0]["user"], "c3");
    assert_eq!(server.call_as(&c3, "GET", "/admin/break-glass", None).await.status, 403);
    assert_eq!(server.call_as(&server.admin, "GET", "/admin/break-glass", None).await.status, 403);
    let review = format!("/admin/break-glass/{grant}/review");
    assert_eq!(send(&server.admin, &review, json!({"decision": "justified"})).await.status, 403);
    assert_eq!(send(&auditor, &review, json!({"decision": "maybe"})).await.status, 400);
    assert_eq!(send(&auditor, &review, json!({"decision": "justified"})).await.status, 200);
    assert_eq!(send(&auditor, &review, json!({"decision": "unjustified"})).await.status, 404, "reviewed once");
    let open = server.call_as(&auditor, "GET", "/admin/break-glass?status=open", None).await.json();
    assert_eq!(open["grants"].as_array().map(Vec::len), Some(0));
    // After 60 minutes the door closes (the session is kept alive meanwhile).
    for _ in 0..4 {
        clock.advance_ms(15 * 60_000);
        let _ = server.call_as(&c3, "GET", "/fhir/Practitioner/d1", None).await;
    }
    assert_eq!(server.call_as(&c3, "GET", "/fhir/Observation/obs-p1", None).await.status, 403);
    // Break-glass is for clinicians with a session.
    assert_eq!(
        send(
            &server.clinician,
            "/auth/break-glass",
            json!({"patient": "Patient/p1", "reason": "a service has no emergencies"})
        )
        .await
        .status,
        403
    );
}
