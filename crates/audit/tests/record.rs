//! The binary record format: round trips, the exact bytes of format version 1,
//! every limit, and malformed input (random bytes, every truncation, every byte changed)
//! refused without a panic.

use medvault_audit::record::{
    decode, encode, encoded_len, Action, Agent, AuditRecord, EventKind, Outcome, AUDIT_ENTITIES_MAX,
    AUDIT_PATIENTS_MAX, AUDIT_QUERY_BYTES_MAX, AUDIT_RECORDED_MS_MAX, AUDIT_RECORD_BYTES_MAX, AUDIT_TEXT_BYTES_MAX,
};
use medvault_audit::AuditError;

fn agent(name: &str) -> Agent {
    Agent {
        name: name.into(),
        role: "clinician".into(),
        user_id: Some(42),
        purpose_of_use: Some("TREAT".into()),
        address: Some("192.0.2.7".into()),
    }
}

fn full_record() -> AuditRecord {
    AuditRecord {
        recorded_ms: 1_764_387_554_123,
        kind: EventKind::SearchType,
        action: Action::Execute,
        outcome: Outcome::Success,
        agent: agent("dr.zoë"),
        patients: vec!["p1".into(), "p2".into()],
        entities: vec!["Observation/o1/_history/2".into(), "Observation/o2".into()],
        query: Some("Observation?code=http://loinc.org|1234-5&_count=10".into()),
        request_id: "req-0001".into(),
        detail: None,
    }
}

fn minimal_record() -> AuditRecord {
    AuditRecord::new(
        0,
        EventKind::Login,
        Agent { name: String::new(), role: String::new(), user_id: None, purpose_of_use: None, address: None },
        "",
    )
}

/// A small deterministic generator (xorshift64*), so every run tests the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn records_round_trip_for_every_kind_action_and_outcome() {
    for kind in EventKind::ALL {
        for action in Action::ALL {
            for outcome in Outcome::ALL {
                let mut record = full_record();
                record.kind = kind;
                record.action = action;
                record.outcome = outcome;
                record.detail = Some("wrong-password".into());
                let bytes = encode(&record).expect("encodes");
                assert_eq!(bytes.len(), encoded_len(&record));
                assert_eq!(decode(&bytes).expect("decodes"), record);
            }
        }
    }
    let minimal = minimal_record();
    assert_eq!(decode(&encode(&minimal).expect("encodes")).expect("decodes"), minimal);
}

#[test]
fn the_bytes_of_format_version_1_are_as_documented() {
    let record = AuditRecord {
        recorded_ms: 1_000,
        kind: EventKind::Read,
        action: Action::Read,
        outcome: Outcome::MinorFailure,
        agent: Agent {
            name: "al".into(),
            role: "c".into(),
            user_id: Some(7),
            purpose_of_use: None,
            address: Some("::1".into()),
        },
        patients: vec!["p1".into()],
        entities: vec![],
        query: None,
        request_id: "r".into(),
        detail: Some("x".into()),
    };
    let expected = concat!(
        "01",                 // version
        "00000000000003e8",   // recorded_ms = 1000
        "01",                 // kind: Read
        "52",                 // action: 'R'
        "04",                 // outcome: minor failure
        "0002616c",           // agent.name "al"
        "000163",             // agent.role "c"
        "010000000000000007", // agent.user_id = Some(7)
        "00",                 // agent.purpose_of_use = None
        "0100033a3a31",       // agent.address = Some("::1")
        "000100027031",       // patients ["p1"]
        "0000",               // entities []
        "00",                 // query = None
        "000172",             // request_id "r"
        "01000178",           // detail = Some("x")
    );
    let bytes = encode(&record).expect("encodes");
    assert_eq!(medvault_base::hex::encode(&bytes), expected);
    assert_eq!(decode(&bytes).expect("decodes"), record);
}

#[test]
fn event_kind_codes_are_stable_unique_and_partition_the_kinds() {
    let expected: [(EventKind, u8); 29] = [
        (EventKind::Read, 1),
        (EventKind::Vread, 2),
        (EventKind::HistoryInstance, 3),
        (EventKind::HistoryType, 4),
        (EventKind::HistorySystem, 5),
        (EventKind::SearchType, 6),
        (EventKind::SearchSystem, 7),
        (EventKind::Create, 8),
        (EventKind::Update, 9),
        (EventKind::Delete, 10),
        (EventKind::Transaction, 11),
        (EventKind::Batch, 12),
        (EventKind::Export, 13),
        (EventKind::BreakGlass, 32),
        (EventKind::Login, 33),
        (EventKind::LoginFailure, 34),
        (EventKind::Logout, 35),
        (EventKind::Lockout, 36),
        (EventKind::Unlock, 37),
        (EventKind::MfaEnrolment, 38),
        (EventKind::MfaReset, 39),
        (EventKind::TokenCreate, 40),
        (EventKind::TokenRevoke, 41),
        (EventKind::AccountChange, 42),
        (EventKind::KeyOperation, 43),
        (EventKind::Backup, 44),
        (EventKind::Configuration, 45),
        (EventKind::Lockdown, 46),
        (EventKind::AlertRaised, 47),
    ];
    assert_eq!(expected.map(|(kind, _)| kind), EventKind::ALL);
    for (kind, code) in expected {
        assert_eq!(kind.code(), code, "{kind:?}");
        assert_eq!(EventKind::from_code(code), Some(kind));
        assert_ne!(kind.is_clinical_access(), kind.is_security_event(), "{kind:?}");
        assert_eq!(kind.is_clinical_access(), code < 32, "{kind:?}");
    }
    let known: Vec<u8> = expected.iter().map(|(_, code)| *code).collect();
    for code in 0..=u8::MAX {
        assert_eq!(EventKind::from_code(code).is_some(), known.contains(&code), "code {code}");
    }
    let mut names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EventKind::ALL.len(), "names are unique");
}

#[test]
fn default_actions_follow_balp() {
    use Action::*;
    let cases = [
        (EventKind::Read, Read),
        (EventKind::Vread, Read),
        (EventKind::HistoryInstance, Read),
        (EventKind::HistoryType, Read),
        (EventKind::HistorySystem, Read),
        (EventKind::SearchType, Execute),
        (EventKind::SearchSystem, Execute),
        (EventKind::Create, Create),
        (EventKind::Update, Update),
        (EventKind::Delete, Delete),
        (EventKind::Transaction, Execute),
        (EventKind::Batch, Execute),
        (EventKind::Export, Read),
        (EventKind::Backup, Read),
        (EventKind::Login, Execute),
        (EventKind::BreakGlass, Execute),
        (EventKind::AlertRaised, Execute),
    ];
    for (kind, action) in cases {
        assert_eq!(kind.default_action(), action, "{kind:?}");
    }
    assert_eq!(AuditRecord::new(5, EventKind::Delete, agent("a"), "r").action, Delete);
    for action in Action::ALL {
        assert_eq!(Action::from_code(action.code()), Some(action));
    }
    assert_eq!(Action::from_code("X"), None);
    for outcome in Outcome::ALL {
        assert_eq!(Outcome::from_code(outcome.code()), Some(outcome));
        assert_eq!(outcome.fhir_code(), outcome.code().to_string());
    }
}

#[test]
fn encode_refuses_what_is_over_a_limit() {
    let mut record = full_record();
    record.patients = vec!["p".into(); AUDIT_PATIENTS_MAX + 1];
    assert_eq!(
        encode(&record),
        Err(AuditError::TooManyItems { field: "patients", count: AUDIT_PATIENTS_MAX + 1, max: AUDIT_PATIENTS_MAX })
    );

    let mut record = full_record();
    record.entities = vec!["Patient/p".into(); AUDIT_ENTITIES_MAX + 1];
    assert!(matches!(encode(&record), Err(AuditError::TooManyItems { field: "entities", .. })));

    let mut record = full_record();
    record.agent.name = "n".repeat(AUDIT_TEXT_BYTES_MAX + 1);
    assert_eq!(
        encode(&record),
        Err(AuditError::FieldTooLong {
            field: "agent.name",
            bytes: AUDIT_TEXT_BYTES_MAX + 1,
            max: AUDIT_TEXT_BYTES_MAX
        })
    );
    record.agent.name = "n".repeat(AUDIT_TEXT_BYTES_MAX);
    assert!(encode(&record).is_ok(), "exactly at the limit is fine");

    let mut record = full_record();
    record.query = Some("q".repeat(AUDIT_QUERY_BYTES_MAX + 1));
    assert!(matches!(encode(&record), Err(AuditError::FieldTooLong { field: "query", .. })));

    let mut record = full_record();
    record.patients = vec!["p".repeat(AUDIT_TEXT_BYTES_MAX); AUDIT_PATIENTS_MAX];
    let bytes = encoded_len(&record);
    assert!(bytes > AUDIT_RECORD_BYTES_MAX);
    assert_eq!(encode(&record), Err(AuditError::RecordTooLarge { bytes }));

    for recorded_ms in [-1, AUDIT_RECORDED_MS_MAX + 1, i64::MIN, i64::MAX] {
        let mut record = full_record();
        record.recorded_ms = recorded_ms;
        assert_eq!(encode(&record), Err(AuditError::TimeOutOfRange { recorded_ms }));
    }
    let mut record = full_record();
    record.recorded_ms = AUDIT_RECORDED_MS_MAX;
    assert!(encode(&record).is_ok());
}

#[test]
fn errors_never_quote_the_content() {
    let mut record = full_record();
    record.agent.name = "hunter2-typed-as-a-user-name".repeat(100);
    let error = encode(&record).expect_err("too long");
    assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
}

#[test]
fn truncate_to_limits_makes_any_record_encodable_and_says_so() {
    let mut unchanged = full_record();
    assert!(!unchanged.truncate_to_limits());
    assert_eq!(unchanged, full_record());

    let mut record = full_record();
    record.patients = (0..5_000).map(|i| format!("patient-{i}")).collect();
    record.entities = (0..1_500).map(|i| format!("Observation/o{i}")).collect();
    assert!(record.truncate_to_limits());
    assert_eq!(record.patients.len(), AUDIT_PATIENTS_MAX);
    assert_eq!(record.patients[999], "patient-999", "the first ones are kept");
    assert_eq!(record.entities.len(), AUDIT_ENTITIES_MAX);
    assert_eq!(record.detail.as_deref(), Some("truncated patients=1000/5000 entities=1000/1500"));
    assert!(encode(&record).is_ok());

    // Over the byte limit with counts within theirs: entities go first, then patients.
    let mut record = full_record();
    record.detail = Some("partial".into());
    record.patients = vec!["p".repeat(200); AUDIT_PATIENTS_MAX];
    record.entities = vec![format!("Observation/{}", "o".repeat(64)); AUDIT_ENTITIES_MAX];
    assert!(encoded_len(&record) > AUDIT_RECORD_BYTES_MAX);
    assert!(record.truncate_to_limits());
    assert_eq!(record.patients.len(), AUDIT_PATIENTS_MAX, "patients kept while entities could go");
    assert!(record.entities.len() < AUDIT_ENTITIES_MAX);
    let detail = record.detail.clone().expect("detail");
    assert!(detail.starts_with("partial; truncated patients=1000/1000 entities="), "{detail}");
    let bytes = encode(&record).expect("fits now");
    assert!(bytes.len() <= AUDIT_RECORD_BYTES_MAX);

    // Every text at twice its limit, with multi-byte characters at the cut.
    let mut record = full_record();
    record.agent.name = "é".repeat(AUDIT_TEXT_BYTES_MAX);
    record.query = Some("ü".repeat(AUDIT_QUERY_BYTES_MAX));
    record.patients = vec!["p".repeat(AUDIT_TEXT_BYTES_MAX * 2); AUDIT_PATIENTS_MAX * 2];
    record.recorded_ms = -5;
    assert!(record.truncate_to_limits());
    assert_eq!(record.recorded_ms, 0);
    assert_eq!(record.agent.name.len(), AUDIT_TEXT_BYTES_MAX);
    assert_eq!(record.query.as_ref().map(String::len), Some(AUDIT_QUERY_BYTES_MAX));
    let bytes = encode(&record).expect("fits now");
    assert_eq!(decode(&bytes).expect("decodes"), record);
}

#[test]
fn decode_refuses_each_kind_of_malformed_record() {
    let good = encode(&full_record()).expect("encodes");
    let malformed = |reason| Err(AuditError::Malformed { reason });

    let mut bytes = good.clone();
    bytes[0] = 2;
    assert_eq!(decode(&bytes), Err(AuditError::UnsupportedVersion { version: 2 }));
    assert_eq!(decode(&[]), malformed("truncated"));

    let mut bytes = good.clone();
    bytes.push(0);
    assert_eq!(decode(&bytes), malformed("bytes after the last field"));

    for kind in [0u8, 14, 31, 48, 255] {
        let mut bytes = good.clone();
        bytes[9] = kind;
        assert_eq!(decode(&bytes), malformed("unknown event kind"), "kind {kind}");
    }
    let mut bytes = good.clone();
    bytes[10] = b'X';
    assert_eq!(decode(&bytes), malformed("unknown action"));
    let mut bytes = good.clone();
    bytes[11] = 3;
    assert_eq!(decode(&bytes), malformed("unknown outcome"));

    let mut bytes = good.clone();
    bytes[1] = 0x80; // negative time
    assert!(matches!(decode(&bytes), Err(AuditError::TimeOutOfRange { .. })));

    // The user id's presence tag follows name and role.
    let at = 12 + 2 + "dr.zoë".len() + 2 + "clinician".len();
    let mut bytes = good.clone();
    assert_eq!(bytes[at], 1);
    bytes[at] = 2;
    assert_eq!(decode(&bytes), malformed("presence tag is neither 0 nor 1"));

    // Invalid UTF-8 in the name.
    let mut bytes = good.clone();
    bytes[14] = 0xff;
    assert_eq!(decode(&bytes), malformed("text is not UTF-8"));

    // A list count over its limit, and a text over its limit, written by hand.
    let mut record = minimal_record();
    record.patients = vec!["p".into()];
    let bytes = encode(&record).expect("encodes");
    let count_at = bytes.windows(4).position(|w| w == [0, 1, 0, 1]).expect("patients list");
    let mut over = bytes.clone();
    over[count_at..count_at + 2].copy_from_slice(&1_001u16.to_be_bytes());
    assert_eq!(decode(&over), malformed("list longer than its limit"));

    let mut long_name = vec![1u8];
    long_name.extend_from_slice(&0i64.to_be_bytes());
    long_name.extend_from_slice(&[33, b'E', 0]);
    long_name.extend_from_slice(&1_025u16.to_be_bytes());
    long_name.extend(std::iter::repeat_n(b'a', 1_025));
    assert_eq!(decode(&long_name), malformed("text longer than its limit"));

    assert!(matches!(decode(&vec![1u8; AUDIT_RECORD_BYTES_MAX + 1]), Err(AuditError::RecordTooLarge { .. })));
}

#[test]
fn every_truncation_of_a_valid_record_is_refused() {
    for record in [full_record(), minimal_record()] {
        let bytes = encode(&record).expect("encodes");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
        }
    }
}

#[test]
fn any_byte_changed_is_refused_or_decodes_to_a_record_that_encodes_back_to_it() {
    // The encoding is canonical: whatever decode accepts, encode writes back byte for byte.
    let bytes = encode(&full_record()).expect("encodes");
    let mut accepted = 0;
    for at in 0..bytes.len() {
        for value in [0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff, bytes[at] ^ 1] {
            let mut changed = bytes.clone();
            changed[at] = value;
            if let Ok(record) = decode(&changed) {
                accepted += 1;
                assert_eq!(encode(&record).expect("re-encodes"), changed, "byte {at} = {value}");
            }
        }
    }
    assert!(accepted > 0, "some changes (inside texts) are still records");
}

#[test]
fn random_bytes_never_panic_the_decoders() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let valid = encode(&full_record()).expect("encodes");
    for round in 0..20_000 {
        let bytes = match round % 3 {
            0 => {
                let len = rng.below(300);
                rng.bytes(len)
            }
            // Valid start, random tail: exercises the later fields.
            1 => {
                let keep = rng.below(valid.len());
                let mut bytes = valid[..keep].to_vec();
                let len = rng.below(100);
                bytes.extend(rng.bytes(len));
                bytes
            }
            _ => {
                let mut bytes = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
                bytes
            }
        };
        if let Ok(record) = decode(&bytes) {
            assert_eq!(encode(&record).expect("re-encodes"), bytes);
        }
    }
}
