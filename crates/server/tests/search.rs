//! Search over HTTP: searchset Bundles and their absolute paging links, strict and lenient
//! handling of bad queries, `_include`/`_revinclude`, chains and `_has`, `_elements`,
//! `_summary=count`, `POST _search`, conditional create, update and delete, and
//! `Patient/{id}/$everything`.

mod common;

use std::collections::BTreeSet;

use common::{Reply, TestServer};
use serde_json::{json, Value};

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["Iris"]}],
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.1", "value": format!("MRN-{id}")}],
        "birthDate": "1971-05-17"})
}

fn observation(id: &str, patient: &str, code: &str, day: u32) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": "Hemoglobin A1c"},
        "subject": {"reference": format!("Patient/{patient}")},
        "performer": [{"reference": "Practitioner/doc"}],
        "effectiveDateTime": format!("2024-03-{day:02}T08:30:00Z"),
        "valueQuantity": {"value": 5 + day, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})
}

async fn put(server: &TestServer, body: Value) {
    let uri = format!("/fhir/{}/{}", body["resourceType"].as_str().expect("type"), body["id"].as_str().expect("id"));
    let reply = server.call("PUT", &uri, Some(body)).await;
    assert!(matches!(reply.status, 200 | 201), "{uri}: {}", String::from_utf8_lossy(&reply.body));
}

async fn seeded() -> TestServer {
    let server = TestServer::new();
    put(&server, json!({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Quill"}]})).await;
    for index in 0..25 {
        put(&server, patient(&format!("p{index}"), if index % 2 == 0 { "Lindqvist" } else { "Åberg" })).await;
    }
    for day in 1..=12 {
        put(&server, observation(&format!("o{day}"), "p0", if day % 3 == 0 { "4548-4" } else { "718-7" }, day)).await;
    }
    put(&server, observation("other", "p1", "4548-4", 20)).await;
    server
}

fn ids(bundle: &Value, mode: &str) -> Vec<String> {
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

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// The path and query of an absolute link of the test server.
fn path_of(url: &str) -> String {
    url.strip_prefix("http://fhir.example.org:8443")
        .unwrap_or_else(|| panic!("not an absolute link of this server: {url}"))
        .to_string()
}

async fn strict(server: &TestServer, uri: &str) -> Reply {
    let auth = format!("Bearer {}", server.clinician);
    server.send("GET", uri, &[("authorization", &auth), ("prefer", "handling=strict")], None).await
}

#[tokio::test]
async fn a_search_pages_with_absolute_links_and_counts() {
    let server = seeded().await;
    let first = server.call("GET", "/fhir/Patient?family=lindq&_count=4&_total=accurate", None).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let bundle = first.json();
    assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("searchset")));
    assert_eq!(bundle["total"], 13);
    let entries = bundle["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 4);
    assert!(entries
        .iter()
        .all(|e| e["fullUrl"].as_str().is_some_and(|u| u.starts_with("http://fhir.example.org:8443/fhir/Patient/"))));
    let mut seen: Vec<String> = ids(&bundle, "match");
    let mut next = link(&bundle, "next");
    let mut pages = 1;
    let mut second_page_previous = None;
    while let Some(url) = next {
        let page = server.call("GET", &path_of(&url), None).await;
        assert_eq!(page.status, 200);
        let page = page.json();
        if pages == 1 {
            second_page_previous = link(&page, "previous");
        }
        seen.extend(ids(&page, "match"));
        next = link(&page, "next");
        pages += 1;
    }
    assert_eq!(pages, 4);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (13, 13), "every match once");
    // The previous link of page 2 is the first page.
    let previous = server.call("GET", &path_of(&second_page_previous.expect("previous")), None).await.json();
    assert_eq!(ids(&previous, "match"), ids(&bundle, "match"));
    // Accents and case do not matter for strings; :exact is exact.
    let aberg = server.call("GET", "/fhir/Patient?family=aberg&_summary=count", None).await.json();
    assert_eq!(aberg["total"], 12);
    assert!(aberg.get("entry").is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)));
    let exact = server.call("GET", "/fhir/Patient?family:exact=%C3%85berg&_summary=count", None).await.json();
    assert_eq!(exact["total"], 12);
    let inexact = server.call("GET", "/fhir/Patient?family:exact=aberg&_summary=count", None).await.json();
    assert_eq!(inexact["total"], 0);
    // Tokens, dates, quantities.
    let coded =
        server.call("GET", "/fhir/Observation?code=http://loinc.org%7C4548-4&subject=Patient/p0", None).await.json();
    assert_eq!(ids(&coded, "match").len(), 4);
    let dated =
        server.call("GET", "/fhir/Observation?date=ge2024-03-05&date=lt2024-03-08&_sort=date", None).await.json();
    assert_eq!(ids(&dated, "match"), ["Observation/o5", "Observation/o6", "Observation/o7"]);
    let valued = server.call("GET", "/fhir/Observation?value-quantity=gt15%7C%7C%25&_summary=count", None).await.json();
    assert_eq!(valued["total"], 3, "values 16, 17 and 25");
    let cursor = link(&bundle, "next").expect("next");
    let tampered = cursor.replace("_cursor=", "_cursor=A");
    assert_eq!(server.call("GET", &path_of(&tampered), None).await.status, 400, "a forged cursor is refused");
}

#[tokio::test]
async fn bad_queries_are_refused_when_strict_and_reported_when_lenient() {
    let server = seeded().await;
    for uri in [
        "/fhir/Patient?no-such-parameter=1",
        "/fhir/Patient?birthdate=1971-13-45",
        "/fhir/Patient?family:sideways=x",
        "/fhir/Patient?_count=100000",
        "/fhir/Patient?_sort=no-such-parameter",
    ] {
        let reply = strict(&server, uri).await;
        assert_eq!(reply.status, 400, "{uri}: {}", String::from_utf8_lossy(&reply.body));
        let (_, diagnostics) = reply.outcome();
        assert!(!diagnostics.is_empty(), "{uri}");
        // Lenient (the default): answered, the problem reported in an outcome entry.
        let reply = server.call("GET", uri, None).await;
        assert_eq!(reply.status, 200, "{uri}");
        let bundle = reply.json();
        let outcome = bundle["entry"]
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["search"]["mode"] == "outcome"))
            .unwrap_or_else(|| panic!("{uri}: no outcome entry: {bundle}"));
        assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
        assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    }
    let unknown = strict(&server, "/fhir/Patient?no-such-parameter=1").await;
    assert!(unknown.outcome().1.contains("no-such-parameter"), "the message names the parameter");
    assert_eq!(server.call("GET", "/fhir/NotAType?x=1", None).await.status, 404);
}

#[tokio::test]
async fn includes_chains_and_has_follow_references() {
    let server = seeded().await;
    let included = server
        .call("GET", "/fhir/Observation?code=4548-4&_include=Observation:subject&_include=Observation:performer", None)
        .await
        .json();
    assert_eq!(ids(&included, "match").len(), 5);
    let extra: BTreeSet<String> = ids(&included, "include").into_iter().collect();
    assert_eq!(extra, BTreeSet::from(["Patient/p0".into(), "Patient/p1".into(), "Practitioner/doc".into()]));
    let reverse = server.call("GET", "/fhir/Patient?_id=p0,p1&_revinclude=Observation:subject", None).await.json();
    assert_eq!(ids(&reverse, "match").len(), 2);
    assert_eq!(ids(&reverse, "include").len(), 13);
    let chained =
        server.call("GET", "/fhir/Observation?subject:Patient.family=%C3%A5berg&_summary=count", None).await.json();
    assert_eq!(chained["total"], 1, "only p1 (Åberg) has an observation");
    let has = server.call("GET", "/fhir/Patient?_has:Observation:subject:code=4548-4", None).await.json();
    let found: BTreeSet<String> = ids(&has, "match").into_iter().collect();
    assert_eq!(found, BTreeSet::from(["Patient/p0".into(), "Patient/p1".into()]));
}

#[tokio::test]
async fn summaries_keep_what_the_definitions_mark_and_the_mandatory_elements() {
    let server = seeded().await;
    let mut detailed = observation("detailed", "p0", "4548-4", 2);
    detailed["text"] =
        json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">HbA1c 7 %</div>"});
    detailed["note"] = json!([{"text": "fasting"}]);
    detailed["interpretation"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}]);
    put(&server, detailed).await;
    let subsetted = |resource: &Value| {
        resource["meta"]["tag"].as_array().is_some_and(|tags| tags.iter().any(|t| t["code"] == "SUBSETTED"))
    };
    let keys = |resource: &Value| -> BTreeSet<String> {
        resource.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };

    let summary = server.call("GET", "/fhir/Observation?_id=detailed&_summary=true", None).await.json();
    let resource = &summary["entry"][0]["resource"];
    assert!(subsetted(resource), "{resource}");
    let expected =
        ["resourceType", "id", "meta", "status", "code", "subject", "performer", "effectiveDateTime", "valueQuantity"];
    assert_eq!(keys(resource), expected.iter().map(|k| k.to_string()).collect(), "{resource}");
    assert_eq!(resource["valueQuantity"]["value"], 7, "a kept element is kept whole");

    let text = server.call("GET", "/fhir/Observation?_id=detailed&_summary=text", None).await.json();
    let resource = &text["entry"][0]["resource"];
    assert!(subsetted(resource), "{resource}");
    let expected = ["resourceType", "id", "meta", "text", "status", "code"];
    assert_eq!(keys(resource), expected.iter().map(|k| k.to_string()).collect(), "{resource}");

    // Patients: identifier, name and birthDate are summary elements.
    let patients = server.call("GET", "/fhir/Patient?_id=p3&_summary=true", None).await.json();
    let resource = &patients["entry"][0]["resource"];
    assert_eq!(resource["identifier"][0]["value"], "MRN-p3");
    assert_eq!(resource["birthDate"], "1971-05-17");

    // With _elements too: lenient ignores _elements and says so; strict refuses.
    let both = server.call("GET", "/fhir/Observation?_id=detailed&_summary=text&_elements=note", None).await.json();
    assert!(both["entry"][0]["resource"].get("note").is_none());
    assert!(both.to_string().contains("_elements is ignored"), "{both}");
    let auth = format!("Bearer {}", server.clinician);
    let strict = server
        .send(
            "GET",
            "/fhir/Observation?_id=detailed&_summary=true&_elements=note",
            &[("authorization", &auth), ("prefer", "handling=strict")],
            None,
        )
        .await;
    assert_eq!(strict.status, 400, "{}", String::from_utf8_lossy(&strict.body));
    assert_eq!(strict.json()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn elements_post_search_and_everything() {
    let server = seeded().await;
    let subset = server.call("GET", "/fhir/Patient?_id=p3&_elements=birthDate", None).await.json();
    let resource = &subset["entry"][0]["resource"];
    assert_eq!(resource["birthDate"], "1971-05-17");
    assert!(resource.get("name").is_none());
    assert!(resource["meta"]["tag"].as_array().is_some_and(|tags| tags.iter().any(|t| t["code"] == "SUBSETTED")));
    let auth = format!("Bearer {}", server.clinician);
    let posted = server
        .send(
            "POST",
            "/fhir/Observation/_search?subject=Patient/p0",
            &[("authorization", &auth), ("content-type", "application/x-www-form-urlencoded")],
            Some(b"code=4548-4&_count=2".to_vec()),
        )
        .await;
    assert_eq!(posted.status, 200, "{}", String::from_utf8_lossy(&posted.body));
    let posted = posted.json();
    assert_eq!(ids(&posted, "match").len(), 2);
    assert!(
        link(&posted, "next").is_some_and(|next| next.contains("code=4548-4")),
        "the body's parameters are in the links"
    );
    let everything = server.call("GET", "/fhir/Patient/p0/$everything?_count=100", None).await;
    assert_eq!(everything.status, 200, "{}", String::from_utf8_lossy(&everything.body));
    let all: BTreeSet<String> = ids(&everything.json(), "match").into_iter().collect();
    assert_eq!(all.len(), 13, "the patient and their 12 observations: {all:?}");
    assert!(all.contains("Patient/p0") && !all.contains("Observation/other"));
    let paged = server.call("GET", "/fhir/Patient/p0/$everything?_count=5", None).await.json();
    assert_eq!(ids(&paged, "match").len(), 5);
    assert!(link(&paged, "next").is_some());
    assert_eq!(server.call("GET", "/fhir/Patient/nobody/$everything", None).await.status, 404);
}

#[tokio::test]
async fn conditional_create_update_and_delete_act_on_what_the_criteria_match() {
    let server = seeded().await;
    let auth = format!("Bearer {}", server.clinician);
    let body = serde_json::to_vec(&json!({"resourceType": "Patient", "name": [{"family": "Newcomer"}],
        "identifier": [{"system": "urn:oid:9.9", "value": "N-1"}]}))
    .expect("json");
    let create = |criteria: &'static str| {
        let headers =
            [("authorization", auth.as_str()), ("content-type", "application/fhir+json"), ("if-none-exist", criteria)];
        let body = body.clone();
        let server = &server;
        async move { server.send("POST", "/fhir/Patient", &headers, Some(body)).await }
    };
    assert_eq!(create("identifier=urn:oid:9.9|N-1").await.status, 201);
    let again = create("identifier=urn:oid:9.9|N-1").await;
    assert_eq!(again.status, 200, "the existing one is returned, nothing created");
    let count = server.call("GET", "/fhir/Patient?identifier=urn:oid:9.9%7CN-1&_summary=count", None).await.json();
    assert_eq!(count["total"], 1);
    assert_eq!(create("family=lindqvist").await.status, 412, "several match");
    assert_eq!(create("no-such-parameter=x").await.status, 400, "criteria are strict");
    // Conditional update: the one match is updated.
    let update = json!({"resourceType": "Patient", "name": [{"family": "Newcomer-Renamed"}],
        "identifier": [{"system": "urn:oid:9.9", "value": "N-1"}]});
    let updated = server.call("PUT", "/fhir/Patient?identifier=urn:oid:9.9%7CN-1", Some(update)).await;
    assert_eq!(updated.status, 200, "{}", String::from_utf8_lossy(&updated.body));
    assert_eq!(updated.json()["meta"]["versionId"], "2");
    let none = json!({"resourceType": "Patient", "name": [{"family": "Fresh"}]});
    assert_eq!(server.call("PUT", "/fhir/Patient?identifier=urn:oid:9.9%7CN-404", Some(none)).await.status, 201);
    assert_eq!(
        server.call("PUT", "/fhir/Patient?family=lindqvist", Some(json!({"resourceType": "Patient"}))).await.status,
        412
    );
    // Conditional delete.
    assert_eq!(server.call("DELETE", "/fhir/Patient?family=lindqvist", None).await.status, 412);
    assert_eq!(server.call("DELETE", "/fhir/Patient?identifier=urn:oid:9.9%7CN-1", None).await.status, 204);
    let gone = server.call("GET", "/fhir/Patient?identifier=urn:oid:9.9%7CN-1&_summary=count", None).await.json();
    assert_eq!(gone["total"], 0);
    assert_eq!(server.call("DELETE", "/fhir/Patient?identifier=urn:oid:9.9%7CN-1", None).await.status, 204);
}

/// Every audit record in the store, in ledger order.
fn audit_records(server: &TestServer) -> Vec<medvault_audit::AuditRecord> {
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
async fn each_search_is_audited_with_its_query_and_the_patients_it_showed() {
    let server = seeded().await;
    let before = audit_records(&server).len();
    let reply = server.call("GET", "/fhir/Observation?code=4548-4&_include=Observation:subject&_count=100", None).await;
    assert_eq!(reply.status, 200);
    let auth = format!("Bearer {}", server.clinician);
    let posted = server
        .send(
            "POST",
            "/fhir/Patient/_search",
            &[("authorization", &auth), ("content-type", "application/x-www-form-urlencoded")],
            Some(b"_id=p7".to_vec()),
        )
        .await;
    assert_eq!(posted.status, 200);
    assert_eq!(strict(&server, "/fhir/Patient?nonsense=1").await.status, 400);
    let new: Vec<medvault_audit::AuditRecord> = audit_records(&server).into_iter().skip(before).collect();
    assert_eq!(new.len(), 3, "one record per search: {new:?}");
    assert!(new.iter().all(|r| r.kind == medvault_audit::EventKind::SearchType));
    assert_eq!(new[0].query.as_deref(), Some("Observation?code=4548-4&_include=Observation:subject&_count=100"));
    assert_eq!(new[0].patients, ["p0", "p1"], "the patients of the matches and the included resources");
    assert_eq!(new[0].entities.len(), 5 + 2);
    assert_eq!(new[1].query.as_deref(), Some("Patient?_id=p7"), "a form body's parameters are recorded too");
    assert_eq!(new[1].patients, ["p7"]);
    assert_eq!(new[2].outcome, medvault_audit::Outcome::MinorFailure);
}
