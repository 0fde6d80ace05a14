//! The compact audit record the store seals for every access and security event, and its
//! versioned binary encoding (one record, and a block of records per group commit).
//!
//! # Record format, version 1
//!
//! All integers are big-endian. Three building blocks:
//!
//! - `str`: `u16` byte length `n`, then `n` bytes of UTF-8 (`n` may be 0). At most
//!   [`AUDIT_QUERY_BYTES_MAX`] = 16,384 for `query`, [`AUDIT_TEXT_BYTES_MAX`] = 1,024 for
//!   every other text. Invalid UTF-8 or a longer text is malformed.
//! - `opt<T>`: one tag byte, `0x00` = absent, `0x01` = present and followed by a `T`; any
//!   other tag is malformed.
//! - `list`: `u16` count `c`, then `c` × `str`.
//!
//! ```text
//! offset size  field
//! 0      1     format version = 0x01
//! 1      8     recorded_ms: i64, Unix milliseconds (0 ..= 253,402,300,799,999, i.e. up to
//!              9999-12-31T23:59:59.999Z)
//! 9      1     kind: EventKind code (see EventKind::code; 0 and unlisted codes are malformed)
//! 10     1     action: ASCII 'C' 0x43, 'R' 0x52, 'U' 0x55, 'D' 0x44 or 'E' 0x45
//! 11     1     outcome: 0, 4, 8 or 12 (the FHIR AuditEvent.outcome codes)
//! 12     …     agent.name            str
//!              agent.role            str
//!              agent.user_id         opt<i64>
//!              agent.purpose_of_use  opt<str>
//!              agent.address         opt<str>
//!              patients              list (count ≤ AUDIT_PATIENTS_MAX = 1,000)
//!              entities              list (count ≤ AUDIT_ENTITIES_MAX = 1,000)
//!              query                 opt<str>
//!              request_id            str
//!              detail                opt<str>
//! end          nothing may follow; the whole record is at most AUDIT_RECORD_BYTES_MAX
//!              = 262,144 bytes (256 KiB)
//! ```
//!
//! Fields are in this fixed order and none may be skipped; a reader that meets a version
//! other than 1 stops (versions are never mixed within a record). The record carries no
//! checksum or signature: the store seals every block (AEAD) and makes it a ledger leaf.
//!
//! # Blocks
//!
//! The store frames encoded records into sealed blocks itself (`docs/format/audit.md`);
//! at this level a record is one encoded byte string.
//!
//! # Example
//!
//! A failed read (outcome 4) of patient `p1` at 1,000 ms by agent `al` (role `c`, user id
//! 7, address `::1`, no purpose of use), request `r`, detail `x`, no entities, no query
//! (55 bytes; pinned by the test `the_bytes_of_format_version_1_are_as_documented`):
//!
//! ```text
//! 01                  version 1
//! 00 00 00 00 00 00 03 e8   recorded_ms 1000
//! 01 52 04            kind Read, action 'R', outcome 4
//! 00 02 61 6c         agent.name "al"
//! 00 01 63            agent.role "c"
//! 01 00 00 00 00 00 00 00 07   agent.user_id Some(7)
//! 00                  agent.purpose_of_use None
//! 01 00 03 3a 3a 31   agent.address Some("::1")
//! 00 01 00 02 70 31   patients ["p1"]
//! 00 00               entities []
//! 00                  query None
//! 00 01 72            request_id "r"
//! 01 00 01 78         detail Some("x")
//! ```
//!
//! In a block with a second (one-byte) record `aa`:
//! `01 00000002 00000037 <the 55 bytes above> 00000001 aa`.

use crate::AuditError;

/// The record format version written by [`encode`] (the first byte of every record).
pub const AUDIT_FORMAT_VERSION: u8 = 1;
/// The largest encoded record. Large enough for [`AUDIT_PATIENTS_MAX`] patient ids and
/// [`AUDIT_ENTITIES_MAX`] version references of typical (UUID) length;
/// [`AuditRecord::truncate_to_limits`] trims anything larger. Everything but the two lists
/// takes at most 23 KiB, so trimming the lists always makes a record fit.
pub const AUDIT_RECORD_BYTES_MAX: usize = 256 * 1024;
/// The most patient ids in one record (more: [`AuditRecord::truncate_to_limits`]).
pub const AUDIT_PATIENTS_MAX: usize = 1_000;
/// The most entity references in one record (more: [`AuditRecord::truncate_to_limits`]).
pub const AUDIT_ENTITIES_MAX: usize = 1_000;
/// The longest text other than `query`: agent name, role, purpose of use and address,
/// request id, detail, each patient id and each entity reference.
pub const AUDIT_TEXT_BYTES_MAX: usize = 1_024;
/// The longest `query` (requests URLs are at most 8 KiB).
pub const AUDIT_QUERY_BYTES_MAX: usize = 16 * 1_024;
/// The earliest `recorded_ms` a record may carry (the Unix epoch).
pub const AUDIT_RECORDED_MS_MIN: i64 = 0;
/// The latest `recorded_ms` a record may carry: 9999-12-31T23:59:59.999Z, the last FHIR
/// `instant` and RFC 5424 `TIMESTAMP` with a four-digit year.
pub const AUDIT_RECORDED_MS_MAX: i64 = 253_402_300_799_999;

/// One audited event: who did what to which records, when, and how it ended.
///
/// Holds no secret by contract: never a password, token, code, key or break-glass reason
/// (`detail` is a short machine-readable word or phrase). It may hold patient ids and, in
/// `query`, search parameters; it is sealed by the store like clinical data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When the event was recorded, Unix milliseconds (from the injected clock).
    pub recorded_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The FHIR action; usually [`EventKind::default_action`].
    pub action: Action,
    pub outcome: Outcome,
    /// Who did it.
    pub agent: Agent,
    /// Ids of the patients whose data the event touched, without `Patient/`.
    pub patients: Vec<String>,
    /// Records touched, as `Type/id` or `Type/id/_history/version`.
    pub entities: Vec<String>,
    /// The request's relative URL for searches and history (`Observation?code=1234`,
    /// `Patient/1/_history?_since=…`), so that the searched type is kept with the query.
    pub query: Option<String>,
    /// The request id also logged by the server and sent in `X-Request-Id`.
    pub request_id: String,
    /// A short machine-readable detail for security events and truncated records
    /// (`wrong-password`, `locked-after-100-failures`); never a secret.
    pub detail: Option<String>,
}

/// The person or service client behind an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// The account's user name, or the service client's name. For a failed login, the
    /// name that was tried (which may be no account at all).
    pub name: String,
    /// The role name (`clinician`, `patient`, `administrator`, `auditor`, `service`).
    pub role: String,
    /// The account's numeric id, if the name is an account.
    pub user_id: Option<i64>,
    /// A v3 PurposeOfUse code (`TREAT`, `ETREAT`, `BTG`, …).
    pub purpose_of_use: Option<String>,
    /// The client's network address as the server saw it.
    pub address: Option<String>,
}

/// What happened. The [`code`](EventKind::code) is persisted and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Read,
    Vread,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    SearchType,
    SearchSystem,
    Create,
    Update,
    Delete,
    Transaction,
    Batch,
    /// Bulk data export (`$export`).
    Export,
    /// A break-glass grant: a clinician opened a patient outside their care.
    BreakGlass,
    Login,
    LoginFailure,
    Logout,
    /// An account locked after too many failures.
    Lockout,
    Unlock,
    MfaEnrolment,
    MfaReset,
    TokenCreate,
    TokenRevoke,
    /// An account created, changed, disabled or given new scopes or a new password.
    AccountChange,
    /// Master key, KEK or signing key operations (rotation, unwrap failures).
    KeyOperation,
    Backup,
    Configuration,
    /// The server entered or left lockdown (writes refused).
    Lockdown,
    /// An alert rule fired ([`crate::alerts`]); `detail` names it.
    AlertRaised,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 29] = [
        EventKind::Read,
        EventKind::Vread,
        EventKind::HistoryInstance,
        EventKind::HistoryType,
        EventKind::HistorySystem,
        EventKind::SearchType,
        EventKind::SearchSystem,
        EventKind::Create,
        EventKind::Update,
        EventKind::Delete,
        EventKind::Transaction,
        EventKind::Batch,
        EventKind::Export,
        EventKind::BreakGlass,
        EventKind::Login,
        EventKind::LoginFailure,
        EventKind::Logout,
        EventKind::Lockout,
        EventKind::Unlock,
        EventKind::MfaEnrolment,
        EventKind::MfaReset,
        EventKind::TokenCreate,
        EventKind::TokenRevoke,
        EventKind::AccountChange,
        EventKind::KeyOperation,
        EventKind::Backup,
        EventKind::Configuration,
        EventKind::Lockdown,
        EventKind::AlertRaised,
    ];

    /// The persisted code: 1–13 for clinical access, 32–47 for security events; 0 is never
    /// a kind. New kinds take new codes; a code is never reused.
    ///
    /// | code | kind | code | kind |
    /// | --- | --- | --- | --- |
    /// | 1 | Read | 32 | BreakGlass |
    /// | 2 | Vread | 33 | Login |
    /// | 3 | HistoryInstance | 34 | LoginFailure |
    /// | 4 | HistoryType | 35 | Logout |
    /// | 5 | HistorySystem | 36 | Lockout |
    /// | 6 | SearchType | 37 | Unlock |
    /// | 7 | SearchSystem | 38 | MfaEnrolment |
    /// | 8 | Create | 39 | MfaReset |
    /// | 9 | Update | 40 | TokenCreate |
    /// | 10 | Delete | 41 | TokenRevoke |
    /// | 11 | Transaction | 42 | AccountChange |
    /// | 12 | Batch | 43 | KeyOperation |
    /// | 13 | Export | 44 | Backup |
    /// | | | 45 | Configuration |
    /// | | | 46 | Lockdown |
    /// | | | 47 | AlertRaised |
    pub fn code(self) -> u8 {
        match self {
            EventKind::Read => 1,
            EventKind::Vread => 2,
            EventKind::HistoryInstance => 3,
            EventKind::HistoryType => 4,
            EventKind::HistorySystem => 5,
            EventKind::SearchType => 6,
            EventKind::SearchSystem => 7,
            EventKind::Create => 8,
            EventKind::Update => 9,
            EventKind::Delete => 10,
            EventKind::Transaction => 11,
            EventKind::Batch => 12,
            EventKind::Export => 13,
            EventKind::BreakGlass => 32,
            EventKind::Login => 33,
            EventKind::LoginFailure => 34,
            EventKind::Logout => 35,
            EventKind::Lockout => 36,
            EventKind::Unlock => 37,
            EventKind::MfaEnrolment => 38,
            EventKind::MfaReset => 39,
            EventKind::TokenCreate => 40,
            EventKind::TokenRevoke => 41,
            EventKind::AccountChange => 42,
            EventKind::KeyOperation => 43,
            EventKind::Backup => 44,
            EventKind::Configuration => 45,
            EventKind::Lockdown => 46,
            EventKind::AlertRaised => 47,
        }
    }

    /// The kind with this code; `None` for 0 and unassigned codes.
    pub fn from_code(code: u8) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// A stable lower-case name for logs and syslog structured data (`read`,
    /// `history-instance`, `login-failure`, …).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Read => "read",
            EventKind::Vread => "vread",
            EventKind::HistoryInstance => "history-instance",
            EventKind::HistoryType => "history-type",
            EventKind::HistorySystem => "history-system",
            EventKind::SearchType => "search-type",
            EventKind::SearchSystem => "search-system",
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Transaction => "transaction",
            EventKind::Batch => "batch",
            EventKind::Export => "export",
            EventKind::BreakGlass => "break-glass",
            EventKind::Login => "login",
            EventKind::LoginFailure => "login-failure",
            EventKind::Logout => "logout",
            EventKind::Lockout => "lockout",
            EventKind::Unlock => "unlock",
            EventKind::MfaEnrolment => "mfa-enrolment",
            EventKind::MfaReset => "mfa-reset",
            EventKind::TokenCreate => "token-create",
            EventKind::TokenRevoke => "token-revoke",
            EventKind::AccountChange => "account-change",
            EventKind::KeyOperation => "key-operation",
            EventKind::Backup => "backup",
            EventKind::Configuration => "configuration",
            EventKind::Lockdown => "lockdown",
            EventKind::AlertRaised => "alert-raised",
        }
    }

    /// A FHIR REST interaction on clinical data (reads, history, searches, writes,
    /// transactions, batches, export). Exactly the kinds that are not security events.
    pub fn is_clinical_access(self) -> bool {
        matches!(
            self,
            EventKind::Read
                | EventKind::Vread
                | EventKind::HistoryInstance
                | EventKind::HistoryType
                | EventKind::HistorySystem
                | EventKind::SearchType
                | EventKind::SearchSystem
                | EventKind::Create
                | EventKind::Update
                | EventKind::Delete
                | EventKind::Transaction
                | EventKind::Batch
                | EventKind::Export
        )
    }

    /// Authentication, accounts, keys, backups, configuration, lockdown, break-glass
    /// grants and alerts.
    pub fn is_security_event(self) -> bool {
        !self.is_clinical_access()
    }

    /// The FHIR action this kind records unless the caller knows better: as IHE BALP does,
    /// reads and history are `R`, searches, transactions and batches `E` (execute), writes
    /// `C`/`U`/`D`; export and backup `R` (as DICOM's Export event); every other security
    /// event `E` (as DICOM's Security Alert and User Authentication events).
    pub fn default_action(self) -> Action {
        match self {
            EventKind::Read
            | EventKind::Vread
            | EventKind::HistoryInstance
            | EventKind::HistoryType
            | EventKind::HistorySystem
            | EventKind::Export
            | EventKind::Backup => Action::Read,
            EventKind::Create => Action::Create,
            EventKind::Update => Action::Update,
            EventKind::Delete => Action::Delete,
            EventKind::SearchType
            | EventKind::SearchSystem
            | EventKind::Transaction
            | EventKind::Batch
            | EventKind::BreakGlass
            | EventKind::Login
            | EventKind::LoginFailure
            | EventKind::Logout
            | EventKind::Lockout
            | EventKind::Unlock
            | EventKind::MfaEnrolment
            | EventKind::MfaReset
            | EventKind::TokenCreate
            | EventKind::TokenRevoke
            | EventKind::AccountChange
            | EventKind::KeyOperation
            | EventKind::Configuration
            | EventKind::Lockdown
            | EventKind::AlertRaised => Action::Execute,
        }
    }
}

/// The FHIR `AuditEvent.action` (value set `audit-event-action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Create, Action::Read, Action::Update, Action::Delete, Action::Execute];

    /// The FHIR code: `C`, `R`, `U`, `D` or `E` (its ASCII byte is what is persisted).
    pub fn code(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }

    /// The action with this FHIR code.
    pub fn from_code(code: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.code() == code)
    }

    fn byte(self) -> u8 {
        self.code().as_bytes()[0]
    }

    fn from_byte(byte: u8) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.byte() == byte)
    }
}

/// The FHIR `AuditEvent.outcome` (value set `audit-event-outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 0: the action succeeded.
    Success,
    /// 4: the action was not successful (a refused login, a 4xx answer).
    MinorFailure,
    /// 8: the action was terminated prematurely (an integrity failure, a 5xx answer).
    SeriousFailure,
    /// 12: the action made the system unavailable.
    MajorFailure,
}

impl Outcome {
    pub const ALL: [Outcome; 4] =
        [Outcome::Success, Outcome::MinorFailure, Outcome::SeriousFailure, Outcome::MajorFailure];

    /// The persisted value and FHIR code as a number: 0, 4, 8 or 12.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::MinorFailure => 4,
            Outcome::SeriousFailure => 8,
            Outcome::MajorFailure => 12,
        }
    }

    /// The outcome with this value.
    pub fn from_code(code: u8) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|outcome| outcome.code() == code)
    }

    /// The FHIR code as text: `"0"`, `"4"`, `"8"` or `"12"`.
    pub fn fhir_code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
            Outcome::MajorFailure => "12",
        }
    }
}

impl AuditRecord {
    /// A record of `kind` with its default action, a successful outcome and nothing
    /// touched; fill in the rest.
    pub fn new(recorded_ms: i64, kind: EventKind, agent: Agent, request_id: impl Into<String>) -> AuditRecord {
        AuditRecord {
            recorded_ms,
            kind,
            action: kind.default_action(),
            outcome: Outcome::Success,
            agent,
            patients: Vec::new(),
            entities: Vec::new(),
            query: None,
            request_id: request_id.into(),
            detail: None,
        }
    }

    /// Makes the record encodable by cutting what is over a limit, and says whether
    /// anything was cut. In order: `recorded_ms` is clamped into range; each text is cut to
    /// its limit ([`AUDIT_QUERY_BYTES_MAX`], [`AUDIT_TEXT_BYTES_MAX`]) at a character
    /// boundary; `patients` to [`AUDIT_PATIENTS_MAX`] and `entities` to
    /// [`AUDIT_ENTITIES_MAX`]; then, while the record is over [`AUDIT_RECORD_BYTES_MAX`],
    /// entities from the end, then patients from the end. When anything was cut, `detail`
    /// gains `truncated patients=kept/total entities=kept/total`, so that an auditor knows
    /// the lists are not complete.
    pub fn truncate_to_limits(&mut self) -> bool {
        let patients_total = self.patients.len();
        let entities_total = self.entities.len();
        let clamped = self.recorded_ms.clamp(AUDIT_RECORDED_MS_MIN, AUDIT_RECORDED_MS_MAX);
        let mut cut = clamped != self.recorded_ms;
        self.recorded_ms = clamped;
        if let Some(query) = self.query.as_mut() {
            cut |= truncate_text(query, AUDIT_QUERY_BYTES_MAX);
        }
        for text in self.short_texts_mut() {
            cut |= truncate_text(text, AUDIT_TEXT_BYTES_MAX);
        }
        self.patients.truncate(AUDIT_PATIENTS_MAX);
        self.entities.truncate(AUDIT_ENTITIES_MAX);
        cut |= self.patients.len() != patients_total || self.entities.len() != entities_total;
        let mut bytes = encoded_len(self);
        // Once anything is cut, leave room for the note added to `detail`.
        while bytes > AUDIT_RECORD_BYTES_MAX || (cut && bytes + TRUNCATION_NOTE_BYTES_MAX > AUDIT_RECORD_BYTES_MAX) {
            let Some(removed) = self.entities.pop().or_else(|| self.patients.pop()) else {
                break; // cannot happen: without the lists a record takes at most 23 KiB.
            };
            bytes -= 2 + removed.len();
            cut = true;
        }
        if cut {
            let note = format!(
                "truncated patients={}/{patients_total} entities={}/{entities_total}",
                self.patients.len(),
                self.entities.len()
            );
            let mut detail = match self.detail.take() {
                Some(detail) if !detail.is_empty() => format!("{detail}; {note}"),
                _ => note,
            };
            // An over-long detail keeps its start; the note is then partly lost.
            truncate_text(&mut detail, AUDIT_TEXT_BYTES_MAX);
            self.detail = Some(detail);
        }
        cut
    }

    /// Every text limited by [`AUDIT_TEXT_BYTES_MAX`].
    fn short_texts_mut(&mut self) -> impl Iterator<Item = &mut String> {
        let agent = &mut self.agent;
        [&mut agent.name, &mut agent.role, &mut self.request_id]
            .into_iter()
            .chain(agent.purpose_of_use.as_mut())
            .chain(agent.address.as_mut())
            .chain(self.detail.as_mut())
            .chain(self.patients.iter_mut())
            .chain(self.entities.iter_mut())
    }
}

/// The most bytes the note of [`AuditRecord::truncate_to_limits`] adds to a record: its
/// `"; "` separator or a new `detail` (2 length bytes), 31 fixed characters, four numbers
/// of at most 20 digits.
const TRUNCATION_NOTE_BYTES_MAX: usize = 2 + 31 + 4 * 20;

/// Cuts `text` to at most `bytes_max` bytes at a character boundary; whether it cut.
fn truncate_text(text: &mut String, bytes_max: usize) -> bool {
    if text.len() <= bytes_max {
        return false;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// The number of bytes [`encode`] writes for `record` (whether or not it is within the
/// limits).
pub fn encoded_len(record: &AuditRecord) -> usize {
    let text = |text: &str| 2 + text.len();
    let optional_text = |optional: &Option<String>| 1 + optional.as_deref().map_or(0, text);
    let list = |items: &[String]| 2 + items.iter().map(|item| text(item)).sum::<usize>();
    let agent = &record.agent;
    1 + 8
        + 3
        + text(&agent.name)
        + text(&agent.role)
        + 1
        + agent.user_id.map_or(0, |_| 8)
        + optional_text(&agent.purpose_of_use)
        + optional_text(&agent.address)
        + list(&record.patients)
        + list(&record.entities)
        + optional_text(&record.query)
        + text(&record.request_id)
        + optional_text(&record.detail)
}

/// Encodes `record` in format version 1 (see the module documentation).
///
/// Refuses, naming the limit: more than [`AUDIT_PATIENTS_MAX`] patients or
/// [`AUDIT_ENTITIES_MAX`] entities, a text over [`AUDIT_TEXT_BYTES_MAX`] (the query over
/// [`AUDIT_QUERY_BYTES_MAX`]) bytes, a
/// record over [`AUDIT_RECORD_BYTES_MAX`] bytes, a `recorded_ms` out of range.
/// [`AuditRecord::truncate_to_limits`] first makes any record encodable.
pub fn encode(record: &AuditRecord) -> Result<Vec<u8>, AuditError> {
    check_limits(record)?;
    let mut writer = Writer { bytes: Vec::with_capacity(encoded_len(record)) };
    writer.bytes.push(AUDIT_FORMAT_VERSION);
    writer.bytes.extend_from_slice(&record.recorded_ms.to_be_bytes());
    writer.bytes.push(record.kind.code());
    writer.bytes.push(record.action.byte());
    writer.bytes.push(record.outcome.code());
    let agent = &record.agent;
    writer.text(&agent.name);
    writer.text(&agent.role);
    match agent.user_id {
        Some(user_id) => {
            writer.bytes.push(1);
            writer.bytes.extend_from_slice(&user_id.to_be_bytes());
        }
        None => writer.bytes.push(0),
    }
    writer.optional_text(agent.purpose_of_use.as_deref());
    writer.optional_text(agent.address.as_deref());
    writer.list(&record.patients);
    writer.list(&record.entities);
    writer.optional_text(record.query.as_deref());
    writer.text(&record.request_id);
    writer.optional_text(record.detail.as_deref());
    // The size check above used encoded_len; the two must agree.
    assert_eq!(writer.bytes.len(), encoded_len(record), "encoded_len disagrees with encode");
    Ok(writer.bytes)
}

fn check_limits(record: &AuditRecord) -> Result<(), AuditError> {
    if !(AUDIT_RECORDED_MS_MIN..=AUDIT_RECORDED_MS_MAX).contains(&record.recorded_ms) {
        return Err(AuditError::TimeOutOfRange { recorded_ms: record.recorded_ms });
    }
    if record.patients.len() > AUDIT_PATIENTS_MAX {
        return Err(AuditError::TooManyItems {
            field: "patients",
            count: record.patients.len(),
            max: AUDIT_PATIENTS_MAX,
        });
    }
    if record.entities.len() > AUDIT_ENTITIES_MAX {
        return Err(AuditError::TooManyItems {
            field: "entities",
            count: record.entities.len(),
            max: AUDIT_ENTITIES_MAX,
        });
    }
    let agent = &record.agent;
    if let Some(query) = &record.query {
        if query.len() > AUDIT_QUERY_BYTES_MAX {
            return Err(AuditError::FieldTooLong { field: "query", bytes: query.len(), max: AUDIT_QUERY_BYTES_MAX });
        }
    }
    let fields = [
        ("agent.name", Some(&agent.name)),
        ("agent.role", Some(&agent.role)),
        ("agent.purpose_of_use", agent.purpose_of_use.as_ref()),
        ("agent.address", agent.address.as_ref()),
        ("request_id", Some(&record.request_id)),
        ("detail", record.detail.as_ref()),
    ];
    let listed = record.patients.iter().map(|p| ("patients", p)).chain(record.entities.iter().map(|e| ("entities", e)));
    for (field, text) in fields.into_iter().filter_map(|(field, text)| Some((field, text?))).chain(listed) {
        if text.len() > AUDIT_TEXT_BYTES_MAX {
            return Err(AuditError::FieldTooLong { field, bytes: text.len(), max: AUDIT_TEXT_BYTES_MAX });
        }
    }
    let bytes = encoded_len(record);
    if bytes > AUDIT_RECORD_BYTES_MAX {
        return Err(AuditError::RecordTooLarge { bytes });
    }
    Ok(())
}

struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// Callers checked the length against AUDIT_TEXT_BYTES_MAX or AUDIT_QUERY_BYTES_MAX.
    fn text(&mut self, text: &str) {
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(text.as_bytes());
    }

    fn optional_text(&mut self, text: Option<&str>) {
        match text {
            Some(text) => {
                self.bytes.push(1);
                self.text(text);
            }
            None => self.bytes.push(0),
        }
    }

    /// Callers checked the count against AUDIT_PATIENTS_MAX / AUDIT_ENTITIES_MAX.
    fn list(&mut self, items: &[String]) {
        let count = u16::try_from(items.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&count.to_be_bytes());
        for item in items {
            self.text(item);
        }
    }
}

/// Decodes one record written by [`encode`]. Every malformed input is an error (never a
/// panic): unknown version, truncation, unknown kind, action or outcome, a presence tag
/// other than 0 or 1, invalid UTF-8, a count over its limit, a time out of range, bytes
/// after the last field, more than [`AUDIT_RECORD_BYTES_MAX`] bytes.
pub fn decode(bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    if bytes.len() > AUDIT_RECORD_BYTES_MAX {
        return Err(AuditError::RecordTooLarge { bytes: bytes.len() });
    }
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != AUDIT_FORMAT_VERSION {
        return Err(AuditError::UnsupportedVersion { version });
    }
    let recorded_ms = reader.i64()?;
    if !(AUDIT_RECORDED_MS_MIN..=AUDIT_RECORDED_MS_MAX).contains(&recorded_ms) {
        return Err(AuditError::TimeOutOfRange { recorded_ms });
    }
    let kind = EventKind::from_code(reader.u8()?).ok_or(malformed("unknown event kind"))?;
    let action = Action::from_byte(reader.u8()?).ok_or(malformed("unknown action"))?;
    let outcome = Outcome::from_code(reader.u8()?).ok_or(malformed("unknown outcome"))?;
    let name = reader.text(AUDIT_TEXT_BYTES_MAX)?;
    let role = reader.text(AUDIT_TEXT_BYTES_MAX)?;
    let user_id = if reader.present()? { Some(reader.i64()?) } else { None };
    let purpose_of_use = reader.optional_text(AUDIT_TEXT_BYTES_MAX)?;
    let address = reader.optional_text(AUDIT_TEXT_BYTES_MAX)?;
    let patients = reader.list(AUDIT_PATIENTS_MAX)?;
    let entities = reader.list(AUDIT_ENTITIES_MAX)?;
    let query = reader.optional_text(AUDIT_QUERY_BYTES_MAX)?;
    let request_id = reader.text(AUDIT_TEXT_BYTES_MAX)?;
    let detail = reader.optional_text(AUDIT_TEXT_BYTES_MAX)?;
    if reader.at != bytes.len() {
        return Err(malformed("bytes after the last field"));
    }
    Ok(AuditRecord {
        recorded_ms,
        kind,
        action,
        outcome,
        agent: Agent { name, role, user_id, purpose_of_use, address },
        patients,
        entities,
        query,
        request_id,
        detail,
    })
}

fn malformed(reason: &'static str) -> AuditError {
    AuditError::Malformed { reason }
}

/// A cursor over untrusted bytes: every read is bounds-checked and allocates at most what
/// the input holds.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], AuditError> {
        let end = self.at.checked_add(count).ok_or(malformed("length overflows"))?;
        let taken = self.bytes.get(self.at..end).ok_or(malformed("truncated"))?;
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AuditError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, AuditError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, AuditError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, AuditError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn present(&mut self) -> Result<bool, AuditError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed("presence tag is neither 0 nor 1")),
        }
    }

    fn text(&mut self, bytes_max: usize) -> Result<String, AuditError> {
        let length = usize::from(self.u16()?);
        if length > bytes_max {
            return Err(malformed("text longer than its limit"));
        }
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("text is not UTF-8"))?;
        Ok(text.to_owned())
    }

    fn optional_text(&mut self, bytes_max: usize) -> Result<Option<String>, AuditError> {
        if self.present()? {
            Ok(Some(self.text(bytes_max)?))
        } else {
            Ok(None)
        }
    }

    fn list(&mut self, count_max: usize) -> Result<Vec<String>, AuditError> {
        let count = usize::from(self.u16()?);
        if count > count_max {
            return Err(malformed("list longer than its limit"));
        }
        // Each entry takes at least its two length bytes: refuse a count the input cannot hold
        // before allocating for it.
        if count.saturating_mul(2) > self.bytes.len() - self.at {
            return Err(malformed("truncated"));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.text(AUDIT_TEXT_BYTES_MAX)?);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_text_cuts_at_a_character_boundary() {
        let mut text = "aé".to_string(); // 'é' is two bytes
        assert!(truncate_text(&mut text, 2));
        assert_eq!(text, "a");
        let mut short = "abc".to_string();
        assert!(!truncate_text(&mut short, 3));
        assert_eq!(short, "abc");
    }

    #[test]
    fn the_truncation_note_fits_its_reserve() {
        let note = format!("; truncated patients={}/{} entities={}/{}", u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert!(note.len() <= TRUNCATION_NOTE_BYTES_MAX, "{} bytes", note.len());
        // Everything but the lists, at its limits, leaves room for the lists to shrink into.
        let agent = Agent {
            name: "n".repeat(AUDIT_TEXT_BYTES_MAX),
            role: "r".repeat(AUDIT_TEXT_BYTES_MAX),
            user_id: Some(1),
            purpose_of_use: Some("p".repeat(AUDIT_TEXT_BYTES_MAX)),
            address: Some("a".repeat(AUDIT_TEXT_BYTES_MAX)),
        };
        let mut record = AuditRecord::new(0, EventKind::Read, agent, "i".repeat(AUDIT_TEXT_BYTES_MAX));
        record.query = Some("q".repeat(AUDIT_QUERY_BYTES_MAX));
        record.detail = Some("d".repeat(AUDIT_TEXT_BYTES_MAX));
        assert!(encoded_len(&record) + TRUNCATION_NOTE_BYTES_MAX <= 23 * 1024);
    }
}
