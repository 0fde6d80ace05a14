//! The FHIR AuditEvent of a record: the exact shape for a search, the codes chosen for
//! each kind, and validity against the R4 definitions (through `medvault-fhir`) for every
//! kind and for hostile or empty field values.

use base64::Engine as _;
use medvault_audit::event::{
    to_audit_event, ServerIdentity, CLIENT_SYSTEM, OBJECT_SYSTEM, PATIENT_ID_SYSTEM, REQUEST_ID_SYSTEM, USER_SYSTEM,
};
use medvault_audit::{Action, Agent, AuditRecord, EventKind, Outcome};
use serde_json::{json, Value};

fn server() -> ServerIdentity {
    ServerIdentity { name: "mv1.example.org".into(), site: Some("St Elsewhere".into()) }
}

fn clinician() -> Agent {
    Agent {
        name: "dr.zoë".into(),
        role: "clinician".into(),
        user_id: Some(42),
        purpose_of_use: Some("TREAT".into()),
        address: Some("192.0.2.7".into()),
    }
}

fn record(kind: EventKind) -> AuditRecord {
    AuditRecord::new(1_764_387_554_123, kind, clinician(), "req-1")
}

fn validate(event: &Value) {
    if let Err(error) = medvault_fhir::validate_resource(event) {
        panic!("invalid AuditEvent: {error}\n{event:#}");
    }
}

/// A coding's system and code.
type SystemCode = (&'static str, &'static str);

fn coding_of(value: &Value) -> (&str, &str) {
    (value["system"].as_str().unwrap_or_default(), value["code"].as_str().unwrap_or_default())
}

fn entity_with_role<'a>(event: &'a Value, role: &str) -> Vec<&'a Value> {
    let entities = event["entity"].as_array().map(Vec::as_slice).unwrap_or_default();
    entities.iter().filter(|entity| entity["role"]["code"] == role).collect()
}

#[test]
fn a_search_renders_exactly_as_balp_shapes_it() {
    let mut search = record(EventKind::SearchType);
    search.patients = vec!["p1".into()];
    search.entities = vec!["Observation/o1/_history/2".into()];
    search.query = Some("Observation?code=1234".into());
    let event = to_audit_event(&search, "ae-1", &server());
    let expected = json!({
        "resourceType": "AuditEvent",
        "id": "ae-1",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type", "display": "search-type"}],
        "action": "E",
        "recorded": "2025-11-29T03:39:14.123Z",
        "outcome": "0",
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}],
        "agent": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                "role": [{"text": "clinician"}],
                "who": {"identifier": {"system": "urn:medvault:user", "value": "dr.zoë"}},
                "altId": "42",
                "name": "dr.zoë",
                "requestor": true,
                "network": {"address": "192.0.2.7", "type": "2"},
                "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}]
            },
            {
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110152", "display": "Destination Role ID"}]},
                "who": {"identifier": {"value": "mv1.example.org"}, "display": "mv1.example.org"},
                "requestor": false
            }
        ],
        "source": {
            "site": "St Elsewhere",
            "observer": {"identifier": {"value": "mv1.example.org"}, "display": "mv1.example.org"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]
        },
        "entity": [
            {
                "what": {"reference": "Observation/o1/_history/2"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"}
            },
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
                "query": "T2JzZXJ2YXRpb24/Y29kZT0xMjM0"
            },
            {
                "what": {"reference": "Patient/p1"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
            },
            {
                "what": {"identifier": {"system": "urn:medvault:request-id", "value": "req-1"}},
                "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId", "display": "transport specific unique identifier where http X-Request-Id is used"}
            }
        ]
    });
    assert_eq!(event, expected, "{event:#}");
    // Key order is part of "exactly": FHIR's element order, as a reader expects it.
    assert_eq!(event.to_string(), expected.to_string());
    validate(&event);
}

#[test]
fn each_kind_has_its_type_and_subtype() {
    const REST: (&str, &str) = ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest");
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
    let cases: [(EventKind, SystemCode, Option<SystemCode>); 29] = [
        (EventKind::Read, REST, Some((INTERACTION, "read"))),
        (EventKind::Vread, REST, Some((INTERACTION, "vread"))),
        (EventKind::HistoryInstance, REST, Some((INTERACTION, "history-instance"))),
        (EventKind::HistoryType, REST, Some((INTERACTION, "history-type"))),
        (EventKind::HistorySystem, REST, Some((INTERACTION, "history-system"))),
        (EventKind::SearchType, REST, Some((INTERACTION, "search-type"))),
        (EventKind::SearchSystem, REST, Some((INTERACTION, "search-system"))),
        (EventKind::Create, REST, Some((INTERACTION, "create"))),
        (EventKind::Update, REST, Some((INTERACTION, "update"))),
        (EventKind::Delete, REST, Some((INTERACTION, "delete"))),
        (EventKind::Transaction, REST, Some((INTERACTION, "transaction"))),
        (EventKind::Batch, REST, Some((INTERACTION, "batch"))),
        (EventKind::Export, (DCM, "110106"), Some((INTERACTION, "operation"))),
        (EventKind::BreakGlass, (DCM, "110113"), Some((DCM, "110127"))),
        (EventKind::Login, (DCM, "110114"), Some((DCM, "110122"))),
        (EventKind::LoginFailure, (DCM, "110114"), Some((DCM, "110122"))),
        (EventKind::Logout, (DCM, "110114"), Some((DCM, "110123"))),
        (EventKind::Lockout, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::Unlock, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::MfaEnrolment, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::MfaReset, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::TokenCreate, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::TokenRevoke, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::AccountChange, (DCM, "110113"), Some((DCM, "110137"))),
        (EventKind::KeyOperation, (DCM, "110113"), Some((DCM, "110129"))),
        (EventKind::Backup, (DCM, "110106"), None),
        (EventKind::Configuration, (DCM, "110113"), Some((DCM, "110131"))),
        (EventKind::Lockdown, (DCM, "110113"), Some((DCM, "110129"))),
        (EventKind::AlertRaised, (DCM, "110113"), None),
    ];
    assert_eq!(cases.map(|(kind, _, _)| kind), EventKind::ALL);
    for (kind, event_type, subtype) in cases {
        let event = to_audit_event(&record(kind), "ae-1", &server());
        assert_eq!(coding_of(&event["type"]), event_type, "{kind:?}");
        match subtype {
            Some(subtype) => {
                assert_eq!(event["subtype"].as_array().map(Vec::len), Some(1), "{kind:?}");
                assert_eq!(coding_of(&event["subtype"][0]), subtype, "{kind:?}");
            }
            None => assert!(event.get("subtype").is_none(), "{kind:?}"),
        }
        assert_eq!(event["action"], kind.default_action().code(), "{kind:?}");
    }
}

/// The codes this crate may emit, with their displays, as the code systems define them
/// (R4 4.0.1 definitions; terminology.hl7.org for v3; IHE BALP for XrequestId).
fn known_codes() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
    let mut codes = vec![
        ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", Some("RESTful Operation")),
        (DCM, "110106", Some("Export")),
        (DCM, "110113", Some("Security Alert")),
        (DCM, "110114", Some("User Authentication")),
        (DCM, "110122", Some("Login")),
        (DCM, "110123", Some("Logout")),
        (DCM, "110127", Some("Emergency Override Started")),
        (DCM, "110129", Some("Security Configuration")),
        (DCM, "110131", Some("Software Configuration")),
        (DCM, "110137", Some("User security Attributes Changed")),
        (DCM, "110150", Some("Application")),
        (DCM, "110152", Some("Destination Role ID")),
        (DCM, "110153", Some("Source Role ID")),
        ("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", Some("Person")),
        ("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", Some("System Object")),
        ("http://terminology.hl7.org/CodeSystem/object-role", "1", Some("Patient")),
        ("http://terminology.hl7.org/CodeSystem/object-role", "4", Some("Domain Resource")),
        ("http://terminology.hl7.org/CodeSystem/object-role", "24", Some("Query")),
        ("http://terminology.hl7.org/CodeSystem/security-source-type", "4", Some("Application Server")),
        ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", Some("information recipient")),
        ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT", Some("author (originator)")),
        ("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", Some("human user")),
        (
            "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
            "XrequestId",
            Some("transport specific unique identifier where http X-Request-Id is used"),
        ),
    ];
    for interaction in [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search",
        "search-type",
        "search-system",
        "capabilities",
        "transaction",
        "batch",
        "operation",
    ] {
        codes.push((INTERACTION, interaction, Some(interaction)));
    }
    for purpose in medvault_audit::event::PURPOSE_OF_USE_CODES {
        codes.push(("http://terminology.hl7.org/CodeSystem/v3-ActReason", purpose, None));
    }
    codes
}

/// Every Coding (an object with `system` and `code`) anywhere in `value`.
fn codings(value: &Value, found: &mut Vec<(String, String, Option<String>)>) {
    match value {
        Value::Object(object) => {
            if let (Some(Value::String(system)), Some(Value::String(code))) = (object.get("system"), object.get("code"))
            {
                let display = object.get("display").and_then(Value::as_str).map(str::to_owned);
                found.push((system.clone(), code.clone(), display));
            }
            object.values().for_each(|child| codings(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| codings(child, found)),
        _ => {}
    }
}

fn odd_records() -> Vec<AuditRecord> {
    let mut records = Vec::new();
    for kind in EventKind::ALL {
        for outcome in Outcome::ALL {
            let mut full = record(kind);
            full.outcome = outcome;
            full.patients = vec!["p1".into(), "p2".into()];
            full.entities = vec!["Patient/p1".into(), "Observation/o1/_history/3".into()];
            full.query = Some("Observation?subject=Patient/p1&code=a|b".into());
            full.detail = Some("wrong-password".into());
            records.push(full);
        }
        let mut empty = record(kind);
        empty.agent =
            Agent { name: String::new(), role: String::new(), user_id: None, purpose_of_use: None, address: None };
        empty.request_id = String::new();
        empty.query = Some(String::new());
        empty.detail = Some(String::new());
        empty.patients = vec![String::new()];
        empty.entities = vec![String::new()];
        records.push(empty);

        let mut hostile = record(kind);
        hostile.agent = Agent {
            name: "eve\n<82>1 forged\u{0}\u{b}\u{c}".into(),
            role: "service".into(),
            user_id: Some(-1),
            purpose_of_use: Some("because \"I can\"".into()),
            address: Some("host name\twith tab".into()),
        };
        hostile.recorded_ms = i64::MAX;
        hostile.patients = vec!["../etc/passwd".into(), "a".repeat(65)];
        hostile.entities = vec!["user:bob".into(), "patient/p1".into(), "Patient/p 1".into(), "Unknown/x/y".into()];
        hostile.query = Some("\u{0}\u{ff}\u{1F600}".into());
        hostile.request_id = "req\u{7}\u{b}".into();
        hostile.detail = Some("\u{c}".into());
        records.push(hostile);
    }
    records
}

#[test]
fn every_kind_and_every_odd_value_renders_a_valid_audit_event_with_known_codes() {
    let known = known_codes();
    for (index, record) in odd_records().into_iter().enumerate() {
        let event = to_audit_event(&record, &format!("ae-{index}"), &server());
        validate(&event);
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["agent"][1]["requestor"], false);
        assert!(event["source"]["observer"].is_object());
        let mut found = Vec::new();
        codings(&event, &mut found);
        for (system, code, display) in found {
            let is_known = known.iter().any(|(s, c, d)| *s == system && *c == code && d.map(str::to_owned) == display);
            assert!(is_known, "unknown coding {system}#{code} ({display:?}) in {event:#}");
        }
    }
    let no_site = ServerIdentity { name: String::new(), site: None };
    let event = to_audit_event(&record(EventKind::Read), "ae-1", &no_site);
    validate(&event);
    assert_eq!(event["source"]["observer"]["display"], "medvault");
    assert!(event["source"].get("site").is_none());
}

#[test]
fn hostile_values_are_kept_out_of_references_and_stripped_of_control_characters() {
    let hostile = odd_records().into_iter().find(|record| record.agent.role == "service").expect("hostile record");
    let event = to_audit_event(&hostile, "ae-1", &server());
    let text = event.to_string();
    for control in ['\u{0}', '\u{7}', '\u{b}', '\u{c}', '\n', '\t'] {
        assert!(!text.contains(control), "{control:?} in {text}");
    }
    assert_eq!(event["agent"][0]["name"], "eve\u{FFFD}<82>1 forged\u{FFFD}\u{FFFD}\u{FFFD}");
    assert_eq!(event["recorded"], "9999-12-31T23:59:59.999Z", "clamped");
    assert_eq!(
        event["agent"][0]["purposeOfUse"][0],
        json!({"text": "because \"I can\""}),
        "an unknown purpose is text, not a code"
    );
    assert!(event["agent"][0]["network"].get("type").is_none(), "not an IP address");
    let identifiers: Vec<(&str, &str)> = event["entity"]
        .as_array()
        .expect("entities")
        .iter()
        .filter_map(|entity| {
            let identifier = &entity["what"]["identifier"];
            Some((identifier["system"].as_str()?, identifier["value"].as_str()?))
        })
        .collect();
    assert!(identifiers.contains(&(OBJECT_SYSTEM, "user:bob")));
    assert!(identifiers.contains(&(OBJECT_SYSTEM, "patient/p1")));
    assert!(identifiers.contains(&(PATIENT_ID_SYSTEM, "../etc/passwd")));
    let query = entity_with_role(&event, "24")[0]["query"].as_str().expect("query");
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(query).expect("base64"),
        "\u{0}\u{ff}\u{1F600}".as_bytes()
    );
}

#[test]
fn agents_are_typed_by_who_they_are_and_what_they_did() {
    const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    let agent_type = |record: &AuditRecord| {
        let event = to_audit_event(record, "ae-1", &server());
        let user = coding_of(&event["agent"][0]["type"]["coding"][0]);
        let server = coding_of(&event["agent"][1]["type"]["coding"][0]);
        (user.0.to_owned(), user.1.to_owned(), server.1.to_owned())
    };
    let owned = |(system, code, server): (&str, &str, &str)| (system.to_owned(), code.to_owned(), server.to_owned());
    assert_eq!(agent_type(&record(EventKind::Read)), owned((PARTICIPATION, "IRCP", "110153")));
    assert_eq!(agent_type(&record(EventKind::SearchSystem)), owned((PARTICIPATION, "IRCP", "110152")));
    assert_eq!(agent_type(&record(EventKind::Create)), owned((PARTICIPATION, "AUT", "110152")));
    assert_eq!(agent_type(&record(EventKind::Delete)), owned((PARTICIPATION, "AUT", "110152")));
    assert_eq!(
        agent_type(&record(EventKind::Login)),
        owned(("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", "110152"))
    );
    let mut service = record(EventKind::Update);
    service.agent.role = "service".into();
    service.agent.user_id = None;
    assert_eq!(agent_type(&service), owned((DCM, "110150", "110152")));
    let event = to_audit_event(&service, "ae-1", &server());
    assert_eq!(event["agent"][0]["who"]["identifier"]["system"], CLIENT_SYSTEM);
    assert!(event["agent"][0].get("altId").is_none());
    let event = to_audit_event(&record(EventKind::Read), "ae-1", &server());
    assert_eq!(event["agent"][0]["who"]["identifier"]["system"], USER_SYSTEM);

    // The record's action wins over the kind's default.
    let mut executed_read = record(EventKind::Read);
    executed_read.action = Action::Execute;
    let event = to_audit_event(&executed_read, "ae-1", &server());
    assert_eq!(event["action"], "E");
}

#[test]
fn break_glass_failures_and_details_are_recorded() {
    let mut break_glass = record(EventKind::BreakGlass);
    break_glass.agent.purpose_of_use = None;
    break_glass.patients = vec!["p9".into()];
    let event = to_audit_event(&break_glass, "ae-1", &server());
    let btg = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}]}]);
    assert_eq!(event["purposeOfEvent"], btg, "a break-glass record names BTG even when the agent does not");
    assert_eq!(event["agent"][0]["purposeOfUse"], btg);
    assert_eq!(entity_with_role(&event, "1")[0]["what"]["reference"], "Patient/p9");

    let mut failure = record(EventKind::LoginFailure);
    failure.outcome = Outcome::MinorFailure;
    failure.agent.purpose_of_use = None;
    failure.detail = Some("wrong-second-factor".into());
    let event = to_audit_event(&failure, "ae-2", &server());
    assert_eq!(event["outcome"], "4");
    assert_eq!(event["outcomeDesc"], "wrong-second-factor");
    assert!(event.get("purposeOfEvent").is_none());
    assert!(event["agent"][0].get("purposeOfUse").is_none());
    validate(&event);

    let request = event["entity"].as_array().expect("entities").last().cloned().expect("request id entity");
    assert_eq!(request["what"]["identifier"], json!({"system": REQUEST_ID_SYSTEM, "value": "req-1"}));
}
