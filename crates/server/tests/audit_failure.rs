//! Fail closed: when audit records cannot be written, the access does not happen. Its own
//! test binary, because the fault switch is process-wide.

mod common;

use std::sync::atomic::Ordering;

use common::TestServer;
use medvault_store::sqlite::FAIL_AUDIT;
use serde_json::json;

#[tokio::test]
async fn no_audit_record_means_no_access() {
    let server = TestServer::new();
    let patient = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Kept"}]});
    assert_eq!(server.call("PUT", "/fhir/Patient/p1", Some(patient)).await.status, 201);
    let versions_before = server.store.status().expect("status").by_type.iter().map(|t| t.2).sum::<u64>();

    FAIL_AUDIT.store(true, Ordering::SeqCst);
    let read = server.call("GET", "/fhir/Patient/p1", None).await;
    assert_eq!(read.status, 503, "a read whose record cannot be written is not answered");
    assert!(!String::from_utf8_lossy(&read.body).contains("Kept"), "no data leaves");
    assert_eq!(read.outcome().0, "transient");
    let write = server
        .call("POST", "/fhir/Patient", Some(json!({"resourceType": "Patient", "name": [{"family": "Lost"}]})))
        .await;
    assert_eq!(write.status, 503, "a write whose record cannot be written is not made");
    FAIL_AUDIT.store(false, Ordering::SeqCst);

    let versions_after = server.store.status().expect("status").by_type.iter().map(|t| t.2).sum::<u64>();
    assert_eq!(versions_after, versions_before, "nothing half-done was stored");
    let report = server.store.verify(None, &[], &[], &mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(server.call("GET", "/fhir/Patient/p1", None).await.status, 200, "and it works again");
}
