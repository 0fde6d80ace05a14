//! Audit records and alerts for a SIEM: RFC 5424 syslog messages and JSON lines.
//!
//! # Syslog (RFC 5424)
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [medvault@32473 …] BOM MSG
//! ```
//!
//! - **Facility 10** (security/authorization, `authpriv`): IHE ATNA's Record Audit Event
//!   (ITI-20) requires it for audit messages, and SIEMs route it as security data. (13,
//!   "log audit", is the alternative; it is less widely routed and not what ATNA names.)
//! - **Severity** ([`record_severity`]): 5 (notice, "normal but significant", ATNA's usual
//!   value) for a successful event; 4 (warning, ATNA's alternative) for any failure, and
//!   for break-glass and lockouts even when they succeed, since both want review; 2
//!   (critical) for alerts raised and lockdowns, and for every [`syslog_alert`]. So PRI is
//!   `<85>`, `<84>` or `<82>`.
//! - **TIMESTAMP**: the record's (or alert's) time in UTC with milliseconds, as in the
//!   AuditEvent's `recorded`. **HOSTNAME** and **APP-NAME**: the arguments, kept to
//!   printable US-ASCII (others become `_`) and cut at 255 and 48 characters; `-` when
//!   empty. **PROCID**: `-` (nothing in a record identifies a process).
//! - **MSGID**: `AuditEvent` for records, `Alert` for alerts. ATNA's syslog interaction
//!   sets `IHE+RFC-3881` only for its DICOM XML payload; a FHIR AuditEvent in JSON is not
//!   that payload (ATNA moves FHIR AuditEvents over HTTP instead), so labelling it
//!   `IHE+RFC-3881` would send it to the wrong parser.
//! - **STRUCTURED-DATA**: one element `medvault@32473` with the fields a SIEM filters on
//!   (see [`syslog_rfc5424`]). Values escape `"`, `\` and `]` with a backslash (§6.3.3);
//!   control characters become U+FFFD so that no value can break a line. The enterprise
//!   number 32473 is the one RFC 5612 reserves for documentation: replace [`SYSLOG_SD_ID`]
//!   once the project has its own.
//! - **MSG**: the AuditEvent (or alert) as compact JSON, UTF-8, after the byte order mark
//!   U+FEFF that §6.4 requires of a UTF-8 MSG. JSON escapes control characters, so the
//!   message is one line.
//!
//! The message has no trailing newline: framing (RFC 5425 octet counting, or a newline for
//! a plain stream) belongs to the transport.
//!
//! # JSON lines
//!
//! [`json_line`]: the AuditEvent as compact JSON and one `\n`, for files and collectors
//! that read one object per line.

use serde_json::{json, Value};

use crate::alerts::Alert;
use crate::record::{AuditRecord, EventKind, Outcome, AUDIT_RECORDED_MS_MAX, AUDIT_RECORDED_MS_MIN};

/// Facility 10: security/authorization messages.
pub const SYSLOG_FACILITY: u8 = 10;
/// Severity 2: critical.
pub const SEVERITY_CRITICAL: u8 = 2;
/// Severity 4: warning.
pub const SEVERITY_WARNING: u8 = 4;
/// Severity 5: notice (normal but significant).
pub const SEVERITY_NOTICE: u8 = 5;
/// MSGID of an audit record's message.
pub const SYSLOG_MSGID_AUDIT_EVENT: &str = "AuditEvent";
/// MSGID of an alert's message.
pub const SYSLOG_MSGID_ALERT: &str = "Alert";
/// The SD-ID of medvault's structured data element.
pub const SYSLOG_SD_ID: &str = "medvault@32473";
/// RFC 5424's limit on HOSTNAME.
pub const SYSLOG_HOSTNAME_BYTES_MAX: usize = 255;
/// RFC 5424's limit on APP-NAME.
pub const SYSLOG_APP_NAME_BYTES_MAX: usize = 48;

/// The byte order mark that starts a UTF-8 MSG (RFC 5424 §6.4).
const BOM: char = '\u{FEFF}';

/// The PRI value of a message: facility × 8 + severity.
pub fn syslog_pri(severity: u8) -> u8 {
    SYSLOG_FACILITY * 8 + severity
}

/// The syslog severity of a record (see the module documentation).
pub fn record_severity(record: &AuditRecord) -> u8 {
    match record.kind {
        EventKind::AlertRaised | EventKind::Lockdown => SEVERITY_CRITICAL,
        EventKind::BreakGlass | EventKind::Lockout => SEVERITY_WARNING,
        _ if record.outcome != Outcome::Success => SEVERITY_WARNING,
        _ => SEVERITY_NOTICE,
    }
}

/// One RFC 5424 message for `record`, whose AuditEvent is `event_json` (from
/// [`crate::event::to_audit_event`]), sent by `hostname` and `app`.
///
/// Structured data: `event` (the AuditEvent id, when it has one), `kind`
/// ([`EventKind::name`]), `action`, `outcome`, `agent`, `role`, `request`, `patients`
/// (how many).
pub fn syslog_rfc5424(record: &AuditRecord, event_json: &Value, hostname: &str, app: &str) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(id) = event_json.get("id").and_then(Value::as_str) {
        params.push(("event", id.to_owned()));
    }
    params.extend([
        ("kind", record.kind.name().to_owned()),
        ("action", record.action.code().to_owned()),
        ("outcome", record.outcome.fhir_code().to_owned()),
        ("agent", record.agent.name.clone()),
        ("role", record.agent.role.clone()),
        ("request", record.request_id.clone()),
        ("patients", record.patients.len().to_string()),
    ]);
    message(record_severity(record), record.recorded_ms, hostname, app, SYSLOG_MSGID_AUDIT_EVENT, &params, event_json)
}

/// One RFC 5424 message for an alert, severity 2 (critical). Structured data: `alert`
/// ([`crate::alerts::AlertKind::name`]) and `agent`; MSG: `{"alert", "agent", "at",
/// "detail"}` as JSON.
pub fn syslog_alert(alert: &Alert, hostname: &str, app: &str) -> String {
    let params = [("alert", alert.kind.name().to_owned()), ("agent", alert.agent.clone())];
    let body = json!({
        "alert": alert.kind.name(),
        "agent": alert.agent,
        "at": instant(alert.at_ms),
        "detail": alert.detail,
    });
    message(SEVERITY_CRITICAL, alert.at_ms, hostname, app, SYSLOG_MSGID_ALERT, &params, &body)
}

/// The AuditEvent as one line of compact JSON, ending in `\n`.
pub fn json_line(event_json: &Value) -> String {
    format!("{event_json}\n")
}

fn message(
    severity: u8,
    at_ms: i64,
    hostname: &str,
    app: &str,
    msgid: &str,
    params: &[(&str, String)],
    body: &Value,
) -> String {
    let mut structured = format!("[{SYSLOG_SD_ID}");
    for (name, value) in params {
        structured.push_str(&format!(" {name}=\"{}\"", escape_param_value(value)));
    }
    structured.push(']');
    format!(
        "<{}>1 {} {} {} - {msgid} {structured} {BOM}{body}",
        syslog_pri(severity),
        instant(at_ms),
        header_field(hostname, SYSLOG_HOSTNAME_BYTES_MAX),
        header_field(app, SYSLOG_APP_NAME_BYTES_MAX),
    )
}

fn instant(at_ms: i64) -> String {
    medvault_base::time::format_instant(at_ms.clamp(AUDIT_RECORDED_MS_MIN, AUDIT_RECORDED_MS_MAX))
}

/// A header field: `1*PRINTUSASCII` (33–126), at most `bytes_max`; NILVALUE when empty.
fn header_field(text: &str, bytes_max: usize) -> String {
    let field: String = text.chars().take(bytes_max).map(|c| if ('!'..='~').contains(&c) { c } else { '_' }).collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// A PARAM-VALUE (RFC 5424 §6.3.3): `"`, `\` and `]` escaped with `\`; control characters
/// replaced by U+FFFD, so that a value can never end a line or a frame early.
fn escape_param_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c if c.is_control() => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_values_escape_quote_backslash_and_bracket_only() {
        assert_eq!(escape_param_value(r#"a"b\c]d[e=f"#), r#"a\"b\\c\]d[e=f"#);
        assert_eq!(escape_param_value("x\ny\u{0}z"), "x\u{FFFD}y\u{FFFD}z");
        assert_eq!(escape_param_value("Zoë"), "Zoë");
    }

    #[test]
    fn header_fields_are_printable_ascii_and_bounded() {
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field("ward 7\tpc", 255), "ward_7_pc");
        assert_eq!(header_field("hôte", 255), "h_te");
        assert_eq!(header_field(&"a".repeat(300), 255).len(), 255);
        assert_eq!(header_field(&"b".repeat(60), 48).len(), 48);
    }
}
