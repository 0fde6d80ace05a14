//! medvault's audit trail logic, pure and storage-free.
//!
//! This crate decides what an audit record holds, how it is written to bytes, how it is
//! shown as a FHIR `AuditEvent`, which records should raise an alert and how records and
//! alerts reach a SIEM. It never stores, never reads a clock, never logs and knows nothing
//! of HTTP: the server builds an [`AuditRecord`] for every access and security event, the
//! store seals blocks of [`encode`]d records (one block per group commit) as ledger leaves,
//! and the caller feeds records to an [`AlertEngine`] with their own time.
//!
//! # Modules
//!
//! - [`record`]: [`AuditRecord`] and its compact, versioned binary format (one record,
//!   and blocks of records), with every limit named.
//! - [`event`]: the FHIR R4 `AuditEvent` of a record, shaped after IHE Basic Audit Log
//!   Patterns (BALP) and DICOM audit codes.
//! - [`alerts`]: four alert rules (unusual patient volume, canary access, mass
//!   modification, repeated break-glass) over simulated or real time, in bounded memory.
//! - [`export`]: RFC 5424 syslog lines and JSON lines for a SIEM.
//!
//! # Invariants
//!
//! - **No secret in any record, `Debug` output or error.** Records never hold passwords,
//!   tokens, codes, keys or break-glass reasons (the caller's contract, stated on
//!   [`AuditRecord`]); errors name the field and the limit, never the content.
//! - **Untrusted bytes never panic the decoder**: [`decode`] returns an error for every
//!   malformed input and allocates no more than the input holds.
//! - **Every quantity input can grow has a named limit** (`pub const …_MAX`).
//! - **Time is an argument**: records carry their time; the alert engine only moves
//!   forward with the times it is given.

pub mod alerts;
pub mod event;
pub mod export;
pub mod record;

pub use alerts::{Alert, AlertEngine, AlertKind, AlertPolicy};
pub use event::{to_audit_event, ServerIdentity};
pub use export::{json_line, syslog_alert, syslog_rfc5424};
pub use record::{decode, encode, Action, Agent, AuditRecord, EventKind, Outcome};

/// Why a record could not be encoded or decoded. Names fields, counts and limits;
/// never the content of a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// `encode`: the record would take more than `AUDIT_RECORD_BYTES_MAX` bytes;
    /// `decode`: the input is longer than that. `AuditRecord::truncate_to_limits` fixes
    /// the first.
    #[error("audit record of {bytes} bytes; the limit is {}", record::AUDIT_RECORD_BYTES_MAX)]
    RecordTooLarge { bytes: usize },
    /// `encode`: more patients or entities than their limit.
    #[error("audit record with {count} {field}; the limit is {max}")]
    TooManyItems { field: &'static str, count: usize, max: usize },
    /// `encode`: a text longer than its limit.
    #[error("audit record {field} of {bytes} bytes; the limit is {max}")]
    FieldTooLong { field: &'static str, bytes: usize, max: usize },
    /// `encode` or `decode`: `recorded_ms` before 1970 or after 9999.
    #[error("audit record time {recorded_ms} ms is out of range")]
    TimeOutOfRange { recorded_ms: i64 },
    /// `decode`: the first byte is not a format version this build reads.
    #[error("audit format version {version} is not supported")]
    UnsupportedVersion { version: u8 },
    /// `decode`: the bytes are not a record of format version 1.
    #[error("malformed audit record: {reason}")]
    Malformed { reason: &'static str },
}
