//! Crash safety with a real process and a real kill: clients stream transactions at a
//! `medvault serve`, which is killed with SIGKILL at a random moment, several times. Then
//! every acknowledged transaction must be there, and no transaction may be half there.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{init, token, ServerProcess};
use medvault_crypto::master::KeyFile;
use medvault_store::engine::HistoryPage;
use medvault_store::{History, Store};
use medvault_testkit::{HttpClient, TempDir};
use serde_json::{json, Value};

const ROUNDS: u64 = 5;
const WRITERS: u64 = 4;
const OBSERVATIONS_PER_TRANSACTION: usize = 4;

fn transaction(marker: &str) -> Vec<u8> {
    let patient_url = format!("urn:uuid:{}", uuid_like(marker, 0));
    let mut entries = vec![json!({
        "fullUrl": patient_url,
        "resource": {"resourceType": "Patient", "identifier": [{"value": marker}]},
        "request": {"method": "POST", "url": "Patient"}
    })];
    for index in 0..OBSERVATIONS_PER_TRANSACTION {
        entries.push(json!({
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "crash"},
                         "identifier": [{"value": marker}], "subject": {"reference": patient_url}},
            "request": {"method": "POST", "url": "Observation"}
        }));
        let _ = index;
    }
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})).expect("json")
}

fn uuid_like(marker: &str, salt: u8) -> String {
    let digest = medvault_crypto::sha256(format!("{marker}/{salt}").as_bytes());
    let hex = medvault_base::hex::encode(&digest[..16]);
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// A small deterministic generator, so a failing run replays.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn killed_servers_lose_no_acknowledged_transaction_and_show_no_half_one() {
    let dir = TempDir::new("crash");
    init(dir.path());
    let clinician = token(dir.path(), "crash", "system/*.cruds");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..ROUNDS {
        let mut server = ServerProcess::start(dir.path(), &[]);
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let address = server.address;
                let acknowledged = acknowledged.clone();
                let auth = format!("Bearer {clinician}");
                std::thread::spawn(move || {
                    let Ok(mut client) = HttpClient::connect(address) else { return };
                    for sequence in 0.. {
                        let marker = format!("crash-{round}-{writer}-{sequence}");
                        let headers = [
                            ("Authorization", auth.as_str()),
                            ("Content-Type", "application/fhir+json"),
                            ("Prefer", "return=minimal"),
                        ];
                        match client.request("POST", "/fhir", &headers, Some(&transaction(&marker))) {
                            Ok(response) if response.status == 200 => acknowledged.lock().expect("lock").push(marker),
                            Ok(response) => panic!("unexpected {}: {}", response.status, response.text()),
                            Err(_) => return, // the server died mid-request
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + next_random(&mut random) % 600));
        server.kill_hard();
        for writer in writers {
            writer.join().expect("writer");
        }
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 20, "the writers got going: {} transactions acknowledged", acknowledged.len());
    let store = Store::open(
        &dir.path().join("data"),
        &KeyFile { path: dir.path().join("data.key") },
        Arc::new(medvault_base::SystemClock),
    )
    .expect("reopen after crashes");
    let mut by_marker: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut before_seq = None;
    loop {
        let page = store
            .history(&History::System, HistoryPage { count: 1000, before_seq, since_ms: None })
            .expect("every version opens");
        let Some(last) = page.last() else { break };
        before_seq = Some(last.seq);
        for version in &page {
            let resource: Value = serde_json::from_slice(&version.json).expect("json");
            let marker = resource["identifier"][0]["value"].as_str().expect("marker").to_string();
            let counts = by_marker.entry(marker).or_default();
            match version.resource_type.as_str() {
                "Patient" => counts.0 += 1,
                "Observation" => counts.1 += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    for (marker, counts) in &by_marker {
        assert_eq!(*counts, (1, OBSERVATIONS_PER_TRANSACTION), "transaction {marker} is half there");
    }
    for marker in &acknowledged {
        assert!(by_marker.contains_key(marker), "acknowledged transaction {marker} was lost");
    }
    store.close();
}
