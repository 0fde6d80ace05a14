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
            "documentation": "Every endpoint except this CapabilityStatement, /health, the login endpoints and \
                              /.well-known/smart-configuration needs a bearer access token. \
                              History pages with _count (at most 1000) and _since. Search is not supported yet.",
            "security": {
                "cors": false,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"
                }]}],
                "description": "People log in with a password and a TOTP second factor (POST /auth/login, then /auth/mfa) \
                                and get a session token; backend services use SMART Backend Services (private_key_jwt at \
                                /auth/token) or a token from `medvault token create`. SMART v2 scopes limit interactions; \
                                clinicians see only patients in their care (CareTeam, Encounter, assignment, break-glass), \
                                patients only their own record, administrators and auditors no clinical data."
            },
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        }]
    })
}
