//! The FHIR REST API through the router: what a client sees for each interaction, and
//! that bad input gets an OperationOutcome and costs no stored data.

mod common;

use common::TestServer;
use serde_json::json;

const BASE: &str = "http://fhir.example.org:8443/fhir";

fn patient(family: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}], "gender": "female", "birthDate": "1970-01-02"})
}

#[tokio::test]
async fn only_metadata_and_health_are_open() {
    let server = TestServer::new();
    let metadata = server.send("GET", "/fhir/metadata", &[], None).await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()["resourceType"], "CapabilityStatement");
    assert_eq!(server.send("GET", "/health", &[], None).await.status, 200);
    for (method, uri) in [
        ("GET", "/fhir/Patient/x"),
        ("POST", "/fhir/Patient"),
        ("GET", "/fhir/_history"),
        ("POST", "/fhir"),
        ("DELETE", "/fhir/Patient/x"),
    ] {
        let reply = server.send(method, uri, &[], None).await;
        assert_eq!(reply.status, 401, "{method} {uri}");
        assert_eq!(reply.outcome().0, "login");
        let bad = server.send(method, uri, &[("authorization", "Bearer mvt_not-a-token")], None).await;
        assert_eq!(bad.status, 401, "{method} {uri} with a wrong token");
    }
}

#[tokio::test]
async fn an_administrator_reads_no_clinical_data() {
    let server = TestServer::new();
    let created = server.call("POST", "/fhir/Patient", Some(patient("Doe"))).await;
    let location = created.header("location").expect("location").replace(BASE, "/fhir");
    let auth = format!("Bearer {}", server.admin);
    let reply = server.send("GET", &location, &[("authorization", &auth)], None).await;
    assert_eq!(reply.status, 403);
    assert!(!String::from_utf8_lossy(&reply.body).contains("Doe"));
}

#[tokio::test]
async fn create_read_update_delete_with_versions() {
    let server = TestServer::new();
    let created = server.call("POST", "/fhir/Patient", Some(patient("Doe"))).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let location = created.header("location").expect("location").to_string();
    assert!(location.starts_with(&format!("{BASE}/Patient/")) && location.ends_with("/_history/1"), "{location}");
    let body = created.json();
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().is_some());

    let read = server.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("content-type"), Some("application/fhir+json; charset=utf-8"));
    assert!(read.header("last-modified").is_some());
    assert_eq!(read.json()["name"][0]["family"], "Doe");

    let mut changed = read.json();
    changed["name"][0]["family"] = json!("Roe");
    let updated = server.call("PUT", &format!("/fhir/Patient/{id}"), Some(changed.clone())).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));

    // Optimistic locking: a stale If-Match is refused with 412 and changes nothing.
    let auth = format!("Bearer {}", server.clinician);
    let stale = server
        .send(
            "PUT",
            &format!("/fhir/Patient/{id}"),
            &[("authorization", &auth), ("content-type", "application/fhir+json"), ("if-match", "W/\"1\"")],
            Some(serde_json::to_vec(&changed).expect("json")),
        )
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.outcome().0, "conflict");
    let fresh = server
        .send(
            "PUT",
            &format!("/fhir/Patient/{id}"),
            &[("authorization", &auth), ("content-type", "application/fhir+json"), ("if-match", "W/\"2\"")],
            Some(serde_json::to_vec(&changed).expect("json")),
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("etag"), Some("W/\"3\""));

    let v1 = server.call("GET", &format!("/fhir/Patient/{id}/_history/1"), None).await;
    assert_eq!(v1.json()["name"][0]["family"], "Doe");
    assert_eq!(server.call("GET", &format!("/fhir/Patient/{id}/_history/9"), None).await.status, 404);

    let deleted = server.call("DELETE", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(deleted.status, 204);
    let gone = server.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.outcome().0, "deleted");
    assert_eq!(server.call("GET", &format!("/fhir/Patient/{id}/_history/4"), None).await.status, 410);
    assert_eq!(server.call("GET", &format!("/fhir/Patient/{id}/_history/3"), None).await.status, 200);
    assert_eq!(server.call("GET", "/fhir/Patient/never-was", None).await.status, 404);
    assert_eq!(server.call("DELETE", "/fhir/Patient/never-was", None).await.status, 404);
}

#[tokio::test]
async fn update_creates_with_the_client_id() {
    let server = TestServer::new();
    let mut body = patient("Client");
    body["id"] = json!("chosen-id.1");
    let created = server.call("PUT", "/fhir/Patient/chosen-id.1", Some(body.clone())).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["id"], "chosen-id.1");
    let mismatch = server.call("PUT", "/fhir/Patient/other-id", Some(body)).await;
    assert_eq!(mismatch.status, 400);
}

#[tokio::test]
async fn history_pages_with_absolute_links_from_the_client_base() {
    let server = TestServer::new();
    let created = server.call("POST", "/fhir/Patient", Some(patient("V1"))).await.json();
    let id = created["id"].as_str().expect("id").to_string();
    for family in ["V2", "V3", "V4", "V5"] {
        let mut body = created.clone();
        body["name"][0]["family"] = json!(family);
        assert_eq!(server.call("PUT", &format!("/fhir/Patient/{id}"), Some(body)).await.status, 200);
    }
    let mut seen = Vec::new();
    let mut url = format!("/fhir/Patient/{id}/_history?_count=2");
    for _page in 0..10 {
        let bundle = server.call("GET", &url, None).await.json();
        assert_eq!(bundle["type"], "history");
        for entry in bundle["entry"].as_array().expect("entries") {
            seen.push(entry["resource"]["name"][0]["family"].as_str().expect("family").to_string());
            assert!(entry["fullUrl"].as_str().expect("fullUrl").starts_with(BASE));
        }
        let next = bundle["link"]
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().expect("url").to_string());
        match next {
            Some(next) => {
                assert!(next.starts_with(BASE), "paging links are absolute: {next}");
                url = next.replace("http://fhir.example.org:8443", "");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["V5", "V4", "V3", "V2", "V1"]);
    let system = server.call("GET", "/fhir/_history?_count=50", None).await.json();
    assert_eq!(system["entry"].as_array().map(Vec::len), Some(5));
    let by_type = server.call("GET", "/fhir/Observation/_history", None).await.json();
    assert_eq!(by_type["entry"].as_array().map(Vec::len), Some(0));
    assert_eq!(server.call("GET", "/fhir/Patient/_history?_count=0", None).await.status, 400);
    assert_eq!(server.call("GET", "/fhir/Patient/_history?_count=100000", None).await.status, 400);
    assert_eq!(server.call("GET", "/fhir/Patient/_history?_since=yesterday", None).await.status, 400);
    assert_eq!(server.call("GET", "/fhir/Patient/_history?_at=2020", None).await.status, 400);
    let future = server.call("GET", "/fhir/Patient/_history?_since=2999-01-01T00:00:00Z", None).await.json();
    assert_eq!(future["entry"].as_array().map(Vec::len), Some(0));
}

fn transaction(entries: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test]
async fn a_transaction_rewrites_urn_uuids_and_commits_everything() {
    let server = TestServer::new();
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
               "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                            "subject": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"}},
               "request": {"method": "POST", "url": "Observation"}}),
        json!({"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": patient("Tx"),
               "request": {"method": "POST", "url": "Patient"}}),
    ]);
    let reply = server.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let response = reply.json();
    assert_eq!(response["type"], "transaction-response");
    let entries = response["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    let patient_id = entries[1]["resource"]["id"].as_str().expect("patient id");
    assert_eq!(entries[0]["resource"]["subject"]["reference"], format!("Patient/{patient_id}"));
    let observation_location = entries[0]["response"]["location"].as_str().expect("location");
    let stored = server
        .call("GET", &format!("/fhir/{}", observation_location.split("/_history").next().unwrap_or_default()), None)
        .await;
    assert_eq!(stored.json()["subject"]["reference"], format!("Patient/{patient_id}"));
}

#[tokio::test]
async fn a_failing_transaction_stores_nothing_and_names_the_entry() {
    let server = TestServer::new();
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": patient("Good"), "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient", "id": "p9", "gender": "female"}, "request": {"method": "PUT", "url": "Patient/p9", "ifMatch": "W/\"4\""}}),
    ]);
    let reply = server.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(reply.status, 412);
    assert!(reply.outcome().1.contains("Bundle.entry[1]"), "{}", reply.outcome().1);
    let history = server.call("GET", "/fhir/_history", None).await.json();
    assert_eq!(history["entry"].as_array().map(Vec::len), Some(0), "nothing of the failed transaction is stored");

    let bad_url =
        transaction(vec![json!({"resource": patient("X"), "request": {"method": "POST", "url": "NotAType"}})]);
    assert_eq!(server.call("POST", "/fhir", Some(bad_url)).await.status, 404);
    let no_request = transaction(vec![json!({"resource": patient("X")})]);
    let reply = server.call("POST", "/fhir", Some(no_request)).await;
    assert_eq!(reply.status, 400);
    assert!(reply.outcome().1.contains("Bundle.entry[0]"));
}

#[tokio::test]
async fn a_batch_treats_each_entry_alone() {
    let server = TestServer::new();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("One"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"resource": {"resourceType": "Patient", "id": "b2"}, "request": {"method": "PUT", "url": "Patient/b2", "ifMatch": "W/\"3\""}},
        {"resource": patient("Two"), "request": {"method": "POST", "url": "Patient"}},
    ]});
    let response = server.call("POST", "/fhir", Some(bundle)).await.json();
    assert_eq!(response["type"], "batch-response");
    let statuses: Vec<&str> = response["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["201 Created", "404 Not Found", "412 Precondition Failed", "201 Created"]);
    let history = server.call("GET", "/fhir/Patient/_history", None).await.json();
    assert_eq!(history["entry"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bad_input_gets_an_operation_outcome_and_loses_nothing() {
    let server = TestServer::new();
    let kept = server.call("POST", "/fhir/Patient", Some(patient("Kept"))).await.json();
    let kept_id = kept["id"].as_str().expect("id").to_string();
    let auth = format!("Bearer {}", server.clinician);
    let fhir_json = ("content-type", "application/fhir+json");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("malformed JSON", "/fhir/Patient", vec![fhir_json], b"{\"resourceType\": \"Patient\",".to_vec(), 400),
        (
            "invalid UTF-8",
            "/fhir/Patient",
            vec![fhir_json],
            b"{\"resourceType\":\"Patient\",\"id\":\"\xff\xfe\"}".to_vec(),
            400,
        ),
        ("wrong content type", "/fhir/Patient", vec![("content-type", "text/plain")], b"hello".to_vec(), 415),
        ("no content type", "/fhir/Patient", vec![], b"{}".to_vec(), 415),
        ("not a resource", "/fhir/Patient", vec![fhir_json], b"[1,2,3]".to_vec(), 400),
        ("empty body", "/fhir/Patient", vec![fhir_json], b"".to_vec(), 400),
        ("type mismatch", "/fhir/Patient", vec![fhir_json], br#"{"resourceType":"Observation"}"#.to_vec(), 400),
        ("unknown type", "/fhir/Spaceship", vec![fhir_json], br#"{"resourceType":"Spaceship"}"#.to_vec(), 404),
        (
            "deep nesting",
            "/fhir/Patient",
            vec![fhir_json],
            format!("{{\"resourceType\":\"Patient\",\"x\":{}1{}}}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            400,
        ),
        (
            "huge number",
            "/fhir/Patient",
            vec![fhir_json],
            format!("{{\"resourceType\":\"Patient\",\"multipleBirthInteger\":{}}}", "9".repeat(400)).into_bytes(),
            400,
        ),
        ("too large", "/fhir/Patient", vec![fhir_json], vec![b' '; medvault_base::limits::RESOURCE_BYTES_MAX + 1], 413),
        (
            "collection posted",
            "/fhir",
            vec![fhir_json],
            br#"{"resourceType":"Bundle","type":"collection"}"#.to_vec(),
            400,
        ),
    ];
    for (name, uri, extra, body, expected) in cases {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(extra);
        let reply = server.send("POST", uri, &headers, Some(body)).await;
        assert_eq!(reply.status, expected, "{name}: {}", String::from_utf8_lossy(&reply.body));
        let (code, diagnostics) = reply.outcome();
        assert!(!code.is_empty() && !diagnostics.is_empty(), "{name}");
    }
    let bad_id = server.call("GET", "/fhir/Patient/bad$id", None).await;
    assert_eq!(bad_id.status, 400);
    let xml = server
        .send(
            "GET",
            &format!("/fhir/Patient/{kept_id}"),
            &[("authorization", &auth), ("accept", "application/fhir+xml")],
            None,
        )
        .await;
    assert_eq!(xml.status, 406);
    let format_json = server.call("GET", &format!("/fhir/Patient/{kept_id}?_format=json"), None).await;
    assert_eq!(format_json.status, 200);
    let format_xml = server.call("GET", &format!("/fhir/Patient/{kept_id}?_format=xml"), None).await;
    assert_eq!(format_xml.status, 406);
    let plain_json = server
        .send(
            "GET",
            &format!("/fhir/Patient/{kept_id}"),
            &[("authorization", &auth), ("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(plain_json.status, 200);
    assert_eq!(server.call("PATCH", &format!("/fhir/Patient/{kept_id}"), None).await.status, 405);
    assert_eq!(server.call("GET", "/nowhere", None).await.status, 404);

    // Everything stored before is intact, and nothing else was stored.
    let still = server.call("GET", &format!("/fhir/Patient/{kept_id}"), None).await.json();
    assert_eq!(still["name"][0]["family"], "Kept");
    let history = server.call("GET", "/fhir/_history", None).await.json();
    assert_eq!(history["entry"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_integrity_failure_is_an_error_not_data() {
    let server = TestServer::new();
    let created = server.call("POST", "/fhir/Patient", Some(patient("Tampered"))).await.json();
    let id = created["id"].as_str().expect("id").to_string();
    let database = rusqlite::Connection::open(server.dir.path().join("data/medvault.db")).expect("sqlite");
    let mut sealed: Vec<u8> = database.query_row("SELECT sealed FROM versions", [], |row| row.get(0)).expect("row");
    let middle = sealed.len() / 2;
    sealed[middle] ^= 0x20;
    database.execute("UPDATE versions SET sealed = ?1", [sealed]).expect("tamper");
    let reply = server.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(reply.status, 500);
    let (code, diagnostics) = reply.outcome();
    assert_eq!(code, "exception");
    assert!(diagnostics.contains("integrity"), "{diagnostics}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("Tampered"));
}

#[tokio::test]
async fn the_capability_statement_lists_what_the_router_serves() {
    let server = TestServer::new();
    let statement = server.send("GET", "/fhir/metadata", &[], None).await.json();
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let rest = &statement["rest"][0];
    let system: Vec<&str> =
        rest["interaction"].as_array().expect("interactions").iter().filter_map(|i| i["code"].as_str()).collect();
    assert_eq!(system, ["transaction", "batch", "history-system"]);
    let resources = rest["resource"].as_array().expect("resources");
    assert!(resources.len() > 140, "every R4 resource type");
    for resource in resources {
        assert!(resource.get("searchParam").is_none(), "search is not served yet, so none is listed");
    }
    // Search is not listed, and indeed not served.
    assert_eq!(server.call("GET", "/fhir/Patient?name=x", None).await.status, 501);
}

#[tokio::test]
async fn writes_carry_a_ledger_receipt_and_proofs_are_served() {
    let server = TestServer::new();
    let created = server.call("POST", "/fhir/Patient", Some(patient("Ledger"))).await;
    // Audit blocks are leaves too (the test server's administrator logged in before).
    let header =
        |reply: &common::Reply, name: &str| -> u64 { reply.header(name).expect("receipt").parse().expect("a number") };
    let leaf_index = header(&created, "x-medvault-leaf-index");
    assert!(header(&created, "x-medvault-checkpoint-size") > leaf_index, "the checkpoint covers the write");
    let id = created.json()["id"].as_str().expect("id").to_string();
    let updated =
        server.call("PUT", &format!("/fhir/Patient/{id}"), Some(json!({"resourceType": "Patient", "id": id}))).await;
    assert!(header(&updated, "x-medvault-leaf-index") > leaf_index);

    let auth = format!("Bearer {}", server.clinician);
    let admin = format!("Bearer {}", server.admin);
    assert_eq!(server.send("GET", "/ledger/checkpoint", &[], None).await.status, 401);
    let checkpoint = server.send("GET", "/ledger/checkpoint", &[("authorization", &admin)], None).await;
    assert_eq!(checkpoint.status, 200);
    let note = String::from_utf8(checkpoint.body.clone()).expect("utf8");
    let key = server.send("GET", "/ledger/key", &[("authorization", &admin)], None).await;
    let verifier = medvault_ledger::Verifier::parse(String::from_utf8_lossy(&key.body).trim()).expect("vkey");
    let opened = medvault_ledger::open_checkpoint(note.as_bytes(), &verifier, &[]).expect("signed by the log");
    let size = opened.checkpoint.size();
    assert!(size > header(&updated, "x-medvault-leaf-index"));

    let uri = format!("/ledger/inclusion?resource=Patient/{id}/_history/1&tree_size={size}");
    assert_eq!(server.send("GET", &uri, &[("authorization", &admin)], None).await.status, 403, "proofs name patients");
    let proof = server.send("GET", &uri, &[("authorization", &auth)], None).await.json();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf = medvault_ledger::LeafData::decode(&b64.decode(proof["leaf"].as_str().expect("leaf")).expect("b64"))
        .expect("leaf");
    assert_eq!((leaf.resource_id(), leaf.version(), leaf.author()), (id.as_str(), 1, "test-clinician"));
    let hashes: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| b64.decode(h.as_str().expect("str")).expect("b64").try_into().expect("32 bytes"))
        .collect();
    medvault_ledger::verify_inclusion(&leaf.leaf_hash(), leaf_index, size, &hashes, opened.checkpoint.root())
        .expect("included");
    // From the create's checkpoint to the latest; a size no checkpoint has is not found.
    let old = header(&created, "x-medvault-checkpoint-size");
    let uri = format!("/ledger/consistency?old={old}");
    let consistency = server.send("GET", &uri, &[("authorization", &auth)], None).await;
    assert_eq!(consistency.status, 200, "{}", String::from_utf8_lossy(&consistency.body));
    let uri = format!("/ledger/consistency?old={}", old + 1_000_000);
    assert_eq!(server.send("GET", &uri, &[("authorization", &auth)], None).await.status, 404);
}
