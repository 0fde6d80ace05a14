//! The CapabilityStatement: exactly what this server does, no more. When an interaction
//! is added to the router, it is added here in the same change (a test compares them).

use serde_json::{json, Value};

/// Instance- and type-level interactions every resource type supports.
pub const TYPE_INTERACTIONS: [&str; 7] =
    ["read", "vread", "update", "delete", "history-instance", "history-type", "create"];
/// System-level interactions.
pub const SYSTEM_INTERACTIONS: [&str; 3] = ["transaction", "batch", "history-system"];

pub fn capability_statement(base: &str, now_ms: i64) -> Value {
    let resources: Vec<Value> = medvault_fhir::resource_types()
        .map(|resource_type| {
            json!({
                "type": resource_type,
                "interaction": TYPE_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": medvault_base::time::format_instant(now_ms),
        "publisher": "medvault",
        "kind": "instance",
        "software": {"name": "medvault", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "medvault: sealed, tamper-evident FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Every endpoint except this CapabilityStatement and /health needs a bearer access token. \
                              History pages with _count (at most 1000) and _since. Search is not supported yet.",
            "security": {
                "cors": false,
                "description": "Bearer access tokens (256-bit, stored as SHA-256 digests) minted with `medvault token create`; \
                                roles clinician and service read and write clinical data, administrator does not."
            },
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        }]
    })
}
