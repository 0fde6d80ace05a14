//! SIEM export: exact RFC 5424 lines for fixed inputs, PRI arithmetic, structured-data
//! escaping checked by an independent parser, and JSON lines.

use medvault_audit::alerts::{Alert, AlertKind};
use medvault_audit::event::{to_audit_event, ServerIdentity};
use medvault_audit::export::{json_line, record_severity, syslog_alert, syslog_pri, syslog_rfc5424};
use medvault_audit::{Agent, AuditRecord, EventKind, Outcome};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn record(kind: EventKind) -> AuditRecord {
    let agent = Agent {
        name: "dr.zoë".into(),
        role: "clinician".into(),
        user_id: Some(42),
        purpose_of_use: None,
        address: Some("192.0.2.7".into()),
    };
    let mut record = AuditRecord::new(T0 + 123, kind, agent, "req-1");
    record.patients = vec!["p1".into(), "p2".into()];
    record
}

/// A parsed RFC 5424 message (enough of the grammar to check ours).
#[derive(Debug, PartialEq)]
struct Syslog {
    pri: u8,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

/// Parses `<PRI>1 TS HOST APP PROCID MSGID [SD-ID name="value"…] BOM MSG`, unescaping
/// PARAM-VALUEs as RFC 5424 §6.3.3 says. Panics on anything else.
fn parse(line: &str) -> Syslog {
    let rest = line.strip_prefix('<').expect("<");
    let (pri, rest) = rest.split_once('>').expect(">");
    let rest = rest.strip_prefix("1 ").expect("version 1");
    let mut header = rest.splitn(6, ' ');
    let mut next = || header.next().expect("header field").to_owned();
    let (timestamp, hostname, app, procid, msgid, rest) = (next(), next(), next(), next(), next(), next());
    for field in [&timestamp, &hostname, &app, &procid, &msgid] {
        assert!(field.bytes().all(|b| (33..=126).contains(&b)), "header field {field:?} is PRINTUSASCII");
    }
    let rest = rest.strip_prefix('[').expect("one SD-ELEMENT");
    let (sd_id, mut rest) = rest.split_once(' ').expect("SD-ID");
    let mut params = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            rest = after;
            break;
        }
        let (name, after) = rest.split_once("=\"").expect("PARAM-NAME=\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => {
                    let (_, escaped) = chars.next().expect("escaped character");
                    assert!(matches!(escaped, '"' | '\\' | ']'), "only these are escaped");
                    value.push(escaped);
                }
                (_, ']') => panic!("unescaped ] in a PARAM-VALUE"),
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        params.push((name.trim_start().to_owned(), value));
        rest = &after[end + 1..];
    }
    let msg = rest.strip_prefix(" \u{FEFF}").expect("SP, then the BOM before a UTF-8 MSG");
    Syslog {
        pri: pri.parse().expect("PRIVAL"),
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd_id: sd_id.to_owned(),
        params,
        msg: msg.to_owned(),
    }
}

#[test]
fn an_audit_record_becomes_this_exact_syslog_line() {
    let event = json!({"resourceType": "AuditEvent", "id": "ae-1"});
    let line = syslog_rfc5424(&record(EventKind::Read), &event, "mv1.example.org", "medvault");
    assert_eq!(
        line,
        concat!(
            "<85>1 2026-01-01T00:00:00.123Z mv1.example.org medvault - AuditEvent ",
            "[medvault@32473 event=\"ae-1\" kind=\"read\" action=\"R\" outcome=\"0\" agent=\"dr.zoë\" ",
            "role=\"clinician\" request=\"req-1\" patients=\"2\"] ",
            "\u{FEFF}{\"resourceType\":\"AuditEvent\",\"id\":\"ae-1\"}"
        )
    );
    assert!(!line.ends_with('\n'), "framing belongs to the transport");
}

#[test]
fn an_alert_becomes_this_exact_syslog_line() {
    let alert = Alert {
        kind: AlertKind::CanaryAccess,
        agent: "dr.d".into(),
        at_ms: T0,
        detail: "canary patient c1 touched by read (request r9)".into(),
    };
    assert_eq!(
        syslog_alert(&alert, "mv1", "medvault"),
        concat!(
            "<82>1 2026-01-01T00:00:00.000Z mv1 medvault - Alert [medvault@32473 alert=\"canary-access\" agent=\"dr.d\"] ",
            "\u{FEFF}{\"alert\":\"canary-access\",\"agent\":\"dr.d\",\"at\":\"2026-01-01T00:00:00.000Z\",",
            "\"detail\":\"canary patient c1 touched by read (request r9)\"}"
        )
    );
}

#[test]
fn pri_is_facility_10_times_8_plus_the_severity() {
    for severity in 0..8 {
        assert_eq!(syslog_pri(severity), 80 + severity);
    }
    let severity_of = |kind: EventKind, outcome: Outcome| {
        let mut record = record(kind);
        record.outcome = outcome;
        record_severity(&record)
    };
    assert_eq!(severity_of(EventKind::Read, Outcome::Success), 5);
    assert_eq!(severity_of(EventKind::Login, Outcome::Success), 5);
    for outcome in [Outcome::MinorFailure, Outcome::SeriousFailure, Outcome::MajorFailure] {
        assert_eq!(severity_of(EventKind::Read, outcome), 4, "{outcome:?}");
        assert_eq!(severity_of(EventKind::LoginFailure, outcome), 4, "{outcome:?}");
    }
    assert_eq!(severity_of(EventKind::BreakGlass, Outcome::Success), 4);
    assert_eq!(severity_of(EventKind::Lockout, Outcome::Success), 4);
    assert_eq!(severity_of(EventKind::AlertRaised, Outcome::Success), 2);
    assert_eq!(severity_of(EventKind::Lockdown, Outcome::Success), 2);

    let event = json!({"id": "x"});
    for (kind, outcome, pri) in [
        (EventKind::Read, Outcome::Success, 85),
        (EventKind::Delete, Outcome::MinorFailure, 84),
        (EventKind::BreakGlass, Outcome::Success, 84),
        (EventKind::AlertRaised, Outcome::Success, 82),
    ] {
        let mut record = record(kind);
        record.outcome = outcome;
        assert_eq!(parse(&syslog_rfc5424(&record, &event, "h", "a")).pri, pri, "{kind:?}");
    }
}

#[test]
fn structured_data_escapes_quote_backslash_and_bracket_and_no_value_breaks_the_line() {
    let mut record = record(EventKind::LoginFailure);
    record.outcome = Outcome::MinorFailure;
    record.agent.name = "a\"b\\c]d [x=\"y\"]".into();
    record.agent.role = String::new();
    record.request_id = "r\n<82>1 2026-01-01T00:00:00Z forged - - - - forged".into();
    let server = ServerIdentity { name: "mv1".into(), site: None };
    let event = to_audit_event(&record, "ae-7", &server);
    let line = syslog_rfc5424(&record, &event, "mv1", "medvault");
    assert!(!line.contains('\n') && !line.contains('\r'), "one line: {line}");
    assert!(line.contains(r#"agent="a\"b\\c\]d [x=\"y\"\]""#), "{line}");

    let parsed = parse(&line);
    assert_eq!(parsed.pri, 84);
    assert_eq!(parsed.timestamp, "2026-01-01T00:00:00.123Z");
    assert_eq!((parsed.hostname.as_str(), parsed.app.as_str(), parsed.procid.as_str()), ("mv1", "medvault", "-"));
    assert_eq!(parsed.msgid, "AuditEvent");
    assert_eq!(parsed.sd_id, "medvault@32473");
    let param = |name: &str| parsed.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(param("agent").as_deref(), Some("a\"b\\c]d [x=\"y\"]"), "the escaping round-trips");
    assert_eq!(param("role").as_deref(), Some(""));
    assert_eq!(param("request").as_deref(), Some("r\u{FFFD}<82>1 2026-01-01T00:00:00Z forged - - - - forged"));
    assert_eq!(param("kind").as_deref(), Some("login-failure"));
    let names: Vec<&str> = parsed.params.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["event", "kind", "action", "outcome", "agent", "role", "request", "patients"]);
    let msg: Value = serde_json::from_str(&parsed.msg).expect("MSG is the AuditEvent JSON");
    assert_eq!(msg, event);
}

#[test]
fn header_fields_are_cleaned_and_bounded() {
    let event = json!({});
    let line = syslog_rfc5424(&record(EventKind::Read), &event, "", &"app name ".repeat(10));
    let parsed = parse(&line);
    assert_eq!(parsed.hostname, "-", "NILVALUE for no hostname");
    assert_eq!(parsed.app, "app_name_".repeat(10)[..48]);
    assert!(parsed.params.iter().all(|(name, _)| name != "event"), "no id, no event parameter");
    let long = parse(&syslog_rfc5424(&record(EventKind::Read), &event, &"h".repeat(300), "a"));
    assert_eq!(long.hostname.len(), 255);

    let mut ancient = record(EventKind::Read);
    ancient.recorded_ms = i64::MIN;
    assert_eq!(parse(&syslog_rfc5424(&ancient, &event, "h", "a")).timestamp, "1970-01-01T00:00:00.000Z");
}

#[test]
fn json_lines_are_one_line_each() {
    let mut record = record(EventKind::SearchSystem);
    record.query = Some("_content=line1\nline2".into());
    record.agent.name = "multi\nline".into();
    let event = to_audit_event(&record, "ae-2", &ServerIdentity { name: "mv1".into(), site: None });
    let line = json_line(&event);
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "{line}");
    let parsed: Value = serde_json::from_str(line.trim_end()).expect("JSON");
    assert_eq!(parsed, event);
    assert_eq!(json_line(&json!({"a": 1})), "{\"a\":1}\n");
}
