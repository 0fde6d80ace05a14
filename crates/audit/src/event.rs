//! The FHIR R4 `AuditEvent` of an audit record, shaped after IHE Basic Audit Log Patterns
//! (BALP, `https://profiles.ihe.net/ITI/BALP`) and the DICOM audit codes (PS3.15 A.5).
//!
//! # Shape
//!
//! | element | content |
//! | --- | --- |
//! | `type` | REST interactions: `audit-event-type#rest`; export and backup: DICOM `110106` Export; logins and logouts: DICOM `110114` User Authentication; every other security event: DICOM `110113` Security Alert |
//! | `subtype` | REST: the `restful-interaction` code (`read`, `vread`, `history-instance`, `search-type`, `create`, …, `operation` for `$export`); logins `110122` Login, logouts `110123` Logout; break-glass `110127` Emergency Override Started; lockout, unlock, second-factor, token and account changes `110137` User Security Attributes Changed; key operations and lockdown `110129` Security Configuration; configuration `110131` Software Configuration |
//! | `action`, `outcome` | the record's (`C R U D E`; `0 4 8 12`) |
//! | `recorded` | the record's time as an `instant` with milliseconds, UTC |
//! | `outcomeDesc` | the record's `detail` |
//! | `purposeOfEvent` | the agent's purpose of use: a `v3-ActReason` coding for the PurposeOfUse codes listed in [`PURPOSE_OF_USE_CODES`], otherwise text; `BTG` for a break-glass record that names none |
//! | `agent[0]` | the requesting person or client (`requestor: true`), see below |
//! | `agent[1]` | the server (`requestor: false`): DICOM `110153` Source Role ID when data flows out (action `R`), `110152` Destination Role ID otherwise, as BALP assigns them |
//! | `source` | `site` = [`ServerIdentity::site`], `observer.identifier.value` = [`ServerIdentity::name`], `type` = `security-source-type#4` Application Server |
//! | `entity` | each entity: `what.reference` `Type/id[/_history/v]`, `audit-entity-type#2` System Object, `object-role#4` Domain Resource (BALP's *data* slice); the query: `audit-entity-type#2`, `object-role#24` Query, `query` = base64 of the query text (BALP's *query* slice); each patient: `what.reference` `Patient/{id}`, `audit-entity-type#1` Person, `object-role#1` Patient (BALP's *patient* slice); the request id: `what.identifier` with system [`REQUEST_ID_SYSTEM`], type BALP `BasicAuditEntityType#XrequestId` (BALP's *transaction* slice) |
//!
//! The requesting agent: `type` is DICOM `110150` Application for role `service`;
//! otherwise `v3-ParticipationType#AUT` (author) for create, update and delete,
//! `extra-security-role-type#humanuser` for security events and
//! `v3-ParticipationType#IRCP` (information recipient) for reads, searches, history,
//! transactions, batches and export. `who.identifier` = the name, with system
//! [`USER_SYSTEM`] or [`CLIENT_SYSTEM`]; `altId` = the numeric user id; `name`; `role[0].text`
//! = the role; `requestor: true`; `network.address` = the client address (`network.type`
//! `2`, IP address, when it parses as one); `purposeOfUse`.
//!
//! **Differences from BALP**, on purpose: BALP puts the client's network address on a
//! separate *client* agent and none on the user; medvault knows no client identity apart
//! from the account or service client, so the requesting agent carries the address (as
//! the R4 core login example does). BALP records one AuditEvent per patient for a search;
//! medvault records one per request, listing every patient.
//!
//! # Validity
//!
//! The output is a valid R4 `AuditEvent` (checked against the R4 definitions by
//! `medvault-fhir` in this crate's tests) for any record: empty texts are left out,
//! control characters in texts become U+FFFD, a `recorded_ms` out of range is clamped, an
//! entity that is not a relative reference (`Type/id`, `Type/id/_history/v` with FHIR ids)
//! and a patient id that is not a FHIR id become `what.identifier` values (system
//! [`OBJECT_SYSTEM`] or [`PATIENT_ID_SYSTEM`]) instead of references. The caller passes a
//! FHIR id as `id`, and entity references to resource types that exist.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::record::{Action, AuditRecord, EventKind, AUDIT_RECORDED_MS_MAX, AUDIT_RECORDED_MS_MIN};

/// The identity of this server as an audit source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The server's name (host name or configured name); `medvault` if empty.
    pub name: String,
    /// The site or enterprise (`AuditEvent.source.site`), if configured.
    pub site: Option<String>,
}

/// `Identifier.system` of the request id entity (the `X-Request-Id` value).
pub const REQUEST_ID_SYSTEM: &str = "urn:medvault:request-id";
/// `Identifier.system` of an account's user name in `agent.who`.
pub const USER_SYSTEM: &str = "urn:medvault:user";
/// `Identifier.system` of a service client's name in `agent.who`.
pub const CLIENT_SYSTEM: &str = "urn:medvault:client";
/// `Identifier.system` of an entity that is not a FHIR relative reference.
pub const OBJECT_SYSTEM: &str = "urn:medvault:object";
/// `Identifier.system` of a patient id that is not a FHIR id.
pub const PATIENT_ID_SYSTEM: &str = "urn:medvault:patient-id";

/// The v3 PurposeOfUse codes (in `v3-ActReason`) rendered as codings; any other purpose
/// is rendered as `text`.
pub const PURPOSE_OF_USE_CODES: [&str; 16] = [
    "BTG",
    "CAREMGT",
    "CLINTRCH",
    "COC",
    "COVERAGE",
    "ETREAT",
    "HMARKT",
    "HOPERAT",
    "HPAYMT",
    "HRESCH",
    "HSYSADMIN",
    "PATADMIN",
    "PATRQT",
    "PUBHLTH",
    "SYSDEV",
    "TREAT",
];

const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const EXTRA_SECURITY_ROLE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";

/// A coding: system, code, display.
type Code = (&'static str, &'static str, &'static str);

const REST: Code = (AUDIT_EVENT_TYPE, "rest", "RESTful Operation");
const DCM_EXPORT: Code = (DICOM, "110106", "Export");
const DCM_SECURITY_ALERT: Code = (DICOM, "110113", "Security Alert");
const DCM_USER_AUTHENTICATION: Code = (DICOM, "110114", "User Authentication");
const DCM_LOGIN: Code = (DICOM, "110122", "Login");
const DCM_LOGOUT: Code = (DICOM, "110123", "Logout");
const DCM_EMERGENCY_OVERRIDE_STARTED: Code = (DICOM, "110127", "Emergency Override Started");
const DCM_SECURITY_CONFIGURATION: Code = (DICOM, "110129", "Security Configuration");
const DCM_SOFTWARE_CONFIGURATION: Code = (DICOM, "110131", "Software Configuration");
const DCM_USER_SECURITY_ATTRIBUTES_CHANGED: Code = (DICOM, "110137", "User security Attributes Changed");
const DCM_APPLICATION: Code = (DICOM, "110150", "Application");
const DCM_DESTINATION_ROLE_ID: Code = (DICOM, "110152", "Destination Role ID");
const DCM_SOURCE_ROLE_ID: Code = (DICOM, "110153", "Source Role ID");
const PERSON: Code = (ENTITY_TYPE, "1", "Person");
const SYSTEM_OBJECT: Code = (ENTITY_TYPE, "2", "System Object");
const ROLE_PATIENT: Code = (OBJECT_ROLE, "1", "Patient");
const ROLE_DOMAIN_RESOURCE: Code = (OBJECT_ROLE, "4", "Domain Resource");
const ROLE_QUERY: Code = (OBJECT_ROLE, "24", "Query");
const APPLICATION_SERVER: Code = (SOURCE_TYPE, "4", "Application Server");
const INFORMATION_RECIPIENT: Code = (PARTICIPATION_TYPE, "IRCP", "information recipient");
const AUTHOR: Code = (PARTICIPATION_TYPE, "AUT", "author (originator)");
const HUMAN_USER: Code = (EXTRA_SECURITY_ROLE_TYPE, "humanuser", "human user");
const X_REQUEST_ID: Code =
    (BALP_ENTITY_TYPE, "XrequestId", "transport specific unique identifier where http X-Request-Id is used");

/// Renders `record` as a FHIR R4 `AuditEvent` with id `id` (a FHIR id, at most 64 of
/// `A-Z a-z 0-9 - .`), observed by `server`. See the module documentation for the shape.
pub fn to_audit_event(record: &AuditRecord, id: &str, server: &ServerIdentity) -> Value {
    let (event_type, subtype) = event_type(record.kind);
    let mut event = Map::new();
    event.insert("resourceType".into(), json!("AuditEvent"));
    event.insert("id".into(), json!(id));
    event.insert("type".into(), coding(event_type));
    if let Some(subtype) = subtype {
        event.insert("subtype".into(), json!([coding(subtype)]));
    }
    event.insert("action".into(), json!(record.action.code()));
    let recorded_ms = record.recorded_ms.clamp(AUDIT_RECORDED_MS_MIN, AUDIT_RECORDED_MS_MAX);
    event.insert("recorded".into(), json!(medvault_base::time::format_instant(recorded_ms)));
    event.insert("outcome".into(), json!(record.outcome.fhir_code()));
    if let Some(detail) = non_empty(record.detail.as_deref()) {
        event.insert("outcomeDesc".into(), json!(fhir_string(detail)));
    }
    if let Some(purpose) = purpose_of_use(record) {
        event.insert("purposeOfEvent".into(), json!([purpose]));
    }
    event.insert("agent".into(), json!([requesting_agent(record), server_agent(record, server)]));
    event.insert("source".into(), source(server));
    let entities = entities(record);
    if !entities.is_empty() {
        event.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(event)
}

/// `type` and `subtype` of each kind (see the module documentation).
fn event_type(kind: EventKind) -> (Code, Option<Code>) {
    let rest = |interaction: &'static str| (REST, Some((RESTFUL_INTERACTION, interaction, interaction)));
    match kind {
        EventKind::Read => rest("read"),
        EventKind::Vread => rest("vread"),
        EventKind::HistoryInstance => rest("history-instance"),
        EventKind::HistoryType => rest("history-type"),
        EventKind::HistorySystem => rest("history-system"),
        EventKind::SearchType => rest("search-type"),
        EventKind::SearchSystem => rest("search-system"),
        EventKind::Create => rest("create"),
        EventKind::Update => rest("update"),
        EventKind::Delete => rest("delete"),
        EventKind::Transaction => rest("transaction"),
        EventKind::Batch => rest("batch"),
        EventKind::Export => (DCM_EXPORT, Some((RESTFUL_INTERACTION, "operation", "operation"))),
        EventKind::Backup => (DCM_EXPORT, None),
        EventKind::Login | EventKind::LoginFailure => (DCM_USER_AUTHENTICATION, Some(DCM_LOGIN)),
        EventKind::Logout => (DCM_USER_AUTHENTICATION, Some(DCM_LOGOUT)),
        EventKind::BreakGlass => (DCM_SECURITY_ALERT, Some(DCM_EMERGENCY_OVERRIDE_STARTED)),
        EventKind::Lockout
        | EventKind::Unlock
        | EventKind::MfaEnrolment
        | EventKind::MfaReset
        | EventKind::TokenCreate
        | EventKind::TokenRevoke
        | EventKind::AccountChange => (DCM_SECURITY_ALERT, Some(DCM_USER_SECURITY_ATTRIBUTES_CHANGED)),
        EventKind::KeyOperation | EventKind::Lockdown => (DCM_SECURITY_ALERT, Some(DCM_SECURITY_CONFIGURATION)),
        EventKind::Configuration => (DCM_SECURITY_ALERT, Some(DCM_SOFTWARE_CONFIGURATION)),
        EventKind::AlertRaised => (DCM_SECURITY_ALERT, None),
    }
}

fn coding((system, code, display): Code) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn concept(code: Code) -> Value {
    json!({"coding": [coding(code)]})
}

/// The person or client that asked (`requestor: true`).
fn requesting_agent(record: &AuditRecord) -> Value {
    let agent = &record.agent;
    let is_service = agent.role == "service";
    let agent_type = if is_service {
        DCM_APPLICATION
    } else if record.kind.is_security_event() {
        HUMAN_USER
    } else if matches!(record.action, Action::Create | Action::Update | Action::Delete) {
        AUTHOR
    } else {
        INFORMATION_RECIPIENT
    };
    let mut object = Map::new();
    object.insert("type".into(), concept(agent_type));
    if let Some(role) = non_empty(Some(&agent.role)) {
        object.insert("role".into(), json!([{"text": fhir_string(role)}]));
    }
    let name = non_empty(Some(&agent.name)).map(fhir_string);
    if let Some(name) = &name {
        let system = if is_service { CLIENT_SYSTEM } else { USER_SYSTEM };
        object.insert("who".into(), json!({"identifier": {"system": system, "value": name}}));
    }
    if let Some(user_id) = agent.user_id {
        object.insert("altId".into(), json!(user_id.to_string()));
    }
    if let Some(name) = name {
        object.insert("name".into(), json!(name));
    }
    object.insert("requestor".into(), json!(true));
    if let Some(address) = non_empty(agent.address.as_deref()) {
        let mut network = Map::new();
        network.insert("address".into(), json!(fhir_string(address)));
        if is_ip_address(address) {
            network.insert("type".into(), json!("2"));
        }
        object.insert("network".into(), Value::Object(network));
    }
    if let Some(purpose) = purpose_of_use(record) {
        object.insert("purposeOfUse".into(), json!([purpose]));
    }
    Value::Object(object)
}

/// The server, as BALP's *server* agent.
fn server_agent(record: &AuditRecord, server: &ServerIdentity) -> Value {
    let agent_type = if record.action == Action::Read { DCM_SOURCE_ROLE_ID } else { DCM_DESTINATION_ROLE_ID };
    json!({
        "type": concept(agent_type),
        "who": observer(server),
        "requestor": false,
    })
}

fn source(server: &ServerIdentity) -> Value {
    let mut source = Map::new();
    if let Some(site) = non_empty(server.site.as_deref()) {
        source.insert("site".into(), json!(fhir_string(site)));
    }
    source.insert("observer".into(), observer(server));
    source.insert("type".into(), json!([coding(APPLICATION_SERVER)]));
    Value::Object(source)
}

fn observer(server: &ServerIdentity) -> Value {
    let name = non_empty(Some(&server.name)).map_or_else(|| "medvault".to_string(), fhir_string);
    json!({"identifier": {"value": name}, "display": name})
}

/// The purpose of use as a CodeableConcept.
fn purpose_of_use(record: &AuditRecord) -> Option<Value> {
    let purpose = match non_empty(record.agent.purpose_of_use.as_deref()) {
        Some(purpose) => purpose,
        None if record.kind == EventKind::BreakGlass => "BTG",
        None => return None,
    };
    Some(match PURPOSE_OF_USE_CODES.iter().find(|code| **code == purpose) {
        Some(code) => json!({"coding": [{"system": ACT_REASON, "code": code}]}),
        None => json!({"text": fhir_string(purpose)}),
    })
}

/// Data, query, patients, request id: BALP's slices in the order of its examples.
fn entities(record: &AuditRecord) -> Vec<Value> {
    let mut entities = Vec::with_capacity(record.entities.len() + record.patients.len() + 2);
    for entity in &record.entities {
        if is_relative_reference(entity) {
            entities.push(json!({
                "what": {"reference": entity},
                "type": coding(SYSTEM_OBJECT),
                "role": coding(ROLE_DOMAIN_RESOURCE),
            }));
        } else if !entity.is_empty() {
            entities.push(json!({
                "what": {"identifier": {"system": OBJECT_SYSTEM, "value": fhir_string(entity)}},
                "type": coding(SYSTEM_OBJECT),
            }));
        }
    }
    if let Some(query) = non_empty(record.query.as_deref()) {
        entities.push(json!({
            "type": coding(SYSTEM_OBJECT),
            "role": coding(ROLE_QUERY),
            "query": base64::engine::general_purpose::STANDARD.encode(query.as_bytes()),
        }));
    }
    for patient in &record.patients {
        let what = if is_fhir_id(patient) {
            json!({"reference": format!("Patient/{patient}")})
        } else if !patient.is_empty() {
            json!({"identifier": {"system": PATIENT_ID_SYSTEM, "value": fhir_string(patient)}})
        } else {
            continue;
        };
        entities.push(json!({"what": what, "type": coding(PERSON), "role": coding(ROLE_PATIENT)}));
    }
    if let Some(request_id) = non_empty(Some(&record.request_id)) {
        entities.push(json!({
            "what": {"identifier": {"system": REQUEST_ID_SYSTEM, "value": fhir_string(request_id)}},
            "type": coding(X_REQUEST_ID),
        }));
    }
    entities
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.is_empty())
}

/// A FHIR `string`: control characters (which FHIR strings may not hold, except tab, CR
/// and LF, and which have no business in audit fields) become U+FFFD.
fn fhir_string(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

/// `id`: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'))
}

/// `Type/id` or `Type/id/_history/version`, the type an upper-case letter then letters.
/// (Whether the type exists is the caller's knowledge.)
fn is_relative_reference(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    let is_type = |name: &str| {
        name.len() <= 64
            && name.bytes().next().is_some_and(|first| first.is_ascii_uppercase())
            && name.bytes().all(|byte| byte.is_ascii_alphabetic())
    };
    match parts.as_slice() {
        [resource_type, id] => is_type(resource_type) && is_fhir_id(id),
        [resource_type, id, "_history", version] => is_type(resource_type) && is_fhir_id(id) && is_fhir_id(version),
        _ => false,
    }
}

fn is_ip_address(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_ids_are_recognised() {
        assert!(is_relative_reference("Observation/abc-1.2"));
        assert!(is_relative_reference("Patient/p1/_history/3"));
        for bad in
            ["Patient", "Patient/", "patient/p1", "Patient/p 1", "Patient/p1/_history", "Patient/p1/x/3", "", "/p1"]
        {
            assert!(!is_relative_reference(bad), "{bad}");
        }
        assert!(is_fhir_id(&"a".repeat(64)));
        assert!(!is_fhir_id(&"a".repeat(65)));
        assert!(!is_fhir_id("a/b"));
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(fhir_string("a\nb\u{7}c\u{85}"), "a\u{FFFD}b\u{FFFD}c\u{FFFD}");
        assert_eq!(fhir_string("Zoë"), "Zoë");
    }
}
