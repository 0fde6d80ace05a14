//! The CapabilityStatement: exactly what this server does, no more. When an interaction
//! is added to the router, it is added here in the same change (a test compares them).

use serde_json::{json, Value};

/// Instance- and type-level interactions every resource type supports.
pub const TYPE_INTERACTIONS: [&str; 8] =
    ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"];
/// Search modifiers served, by parameter type (R4 `search.html`).
pub const MODIFIERS: [(&str, &[&str]); 7] = [
    ("token", &["missing", "not", "text", "of-type"]),
    ("string", &["missing", "exact", "contains"]),
    ("reference", &["missing", "[type]", "identifier"]),
    ("date", &["missing"]),
    ("number", &["missing"]),
    ("quantity", &["missing"]),
    ("uri", &["missing", "above", "below"]),
];

/// System-level interactions.
pub const SYSTEM_INTERACTIONS: [&str; 3] = ["transaction", "batch", "history-system"];

pub fn capability_statement(base: &str, now_ms: i64) -> Value {
    let resources: Vec<Value> = medvault_fhir::resource_types()
        .map(|resource_type| {
            let params = medvault_fhir::search::supported_params(resource_type);
            let search_params: Vec<Value> = params
                .iter()
                .map(|param| {
                    let mut entry = json!({"name": param.code, "type": param.kind.code()});
                    if !param.url.is_empty() {
                        entry["definition"] = json!(param.url);
                    }
                    entry
                })
                .collect();
            let includes: Vec<String> = params
                .iter()
                .filter(|p| p.kind == medvault_fhir::search::ParamType::Reference)
                .map(|p| format!("{resource_type}:{}", p.code))
                .collect();
            let revincludes: Vec<String> = medvault_fhir::resource_types()
                .flat_map(|source| {
                    medvault_fhir::search::supported_params(source)
                        .iter()
                        .filter(|p| {
                            p.kind == medvault_fhir::search::ParamType::Reference
                                && p.targets.iter().any(|t| t == resource_type)
                        })
                        .map(move |p| format!("{source}:{}", p.code))
                })
                .collect();
            let mut resource = json!({
                "type": resource_type,
                "interaction": TYPE_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchRevInclude": revincludes,
                "searchParam": search_params,
            });
            if resource_type == "Patient" {
                resource["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }]);
            }
            resource
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
                              History pages with _count (at most 1000) and _since. Search: every token, reference, \
                              string, date, uri, number and quantity parameter of the R4 definitions listed per type, \
                              with the modifiers in the extension below, prefixes eq ne lt gt le ge sa eb ap, chaining one \
                              level, _has, _include(:iterate), _revinclude, _sort, _total, _summary=true|text|count|data|false, \
                              _elements, _count (at most 1000), and Prefer: handling=strict|lenient (lenient by default). \
                              Composite and special parameters, :in, :not-in, :above/:below on \
                              tokens are not supported. Records are sealed at rest; the search index holds keyed tokens \
                              only.",
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
            "extension": MODIFIERS.iter().map(|(kind, modifiers)| json!({
                "url": "urn:medvault:search-modifiers",
                "valueString": format!("{kind}: {}", modifiers.join(" "))
            })).collect::<Vec<_>>(),
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        }]
    })
}
