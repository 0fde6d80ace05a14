//! Signed notes, checkpoints and cosignatures at the boundary: known-good notes published
//! by independent implementations must verify (and our signatures must equal theirs, as
//! Ed25519 is deterministic), tampering must fail, unknown keys must be reported, and
//! malformed notes must be rejected.
//!
//! Sources of the known-good vectors:
//! - Go `golang.org/x/mod/sumdb/note` (`note.go` package comment and `note_test.go`):
//!   the PeterNeumann signer key, verifier key and signed note, and the EnochRoot
//!   verifier key and signature.
//! - sigsum-go (`pkg/checkpoint/checkpoint_test.go`): a real sum.golang.org checkpoint
//!   (2024-09-23) with the Go checksum database verifier key; a log checkpoint and a
//!   `tlog-cosignature` v1 line made with the Ed25519 seed `{17, 0, …, 0}`, timestamp 1234.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{hex, XorShift};
use medvault_ledger::note::{NOTE_BYTES_MAX, NOTE_SIGNATURES_MAX};
use medvault_ledger::{
    cosign, key_id, open_checkpoint, open_note, sign_note, Checkpoint, NoteError, SignatureType, SigningKey, Verifier,
    EMPTY_ROOT,
};

const PETER_SIGNER_KEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VERIFIER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VERIFIER_KEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIGNATURE: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIGNATURE: &str =
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

const SUM_GOLANG_ORG_KEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
const SUM_GOLANG_ORG_CHECKPOINT: &str = "go.sum database tree
30055305
mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=

— sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=
";

const SIGSUM_LOG_CHECKPOINT: &str = "sigsum.org/v1/tree/e796172b92befd62d9dc67e41c2f5bc9d3100a3023b20b1ca40288dd1c679e69
10
HA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=

— sigsum.org/v1/tree/e796172b92befd62d9dc67e41c2f5bc9d3100a3023b20b1ca40288dd1c679e69 gJ2ho0n8F8olcerUF1FFdv235A/5as/coWrpLrtE7ovMeP5whgwouYExowG/lTznxu6OUGjjt5yJQ6bXtTcf718MqAQ=
";
const SIGSUM_COSIGNED_BODY: &str = "example.org/log\n10\nHA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
const SIGSUM_COSIGNATURE: &str = "— example.org/witness ys8uUAAAAAAAAATSftMzceM8zssdZ9jin9SjwIxzx9iADMf63VqirX2hafol9RsqNqbofIz0LVRqHXI2kpEBSki5RTXFtxz1vo9+Cg==\n";

fn peter_key() -> SigningKey {
    // PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>; the base64 may contain '+'.
    let encoded = PETER_SIGNER_KEY.splitn(5, '+').nth(4).expect("key data");
    let bytes = STANDARD.decode(encoded).expect("base64");
    assert_eq!(bytes[0], 0x01, "Ed25519");
    SigningKey::from_seed(&bytes[1..].try_into().expect("32-byte seed")).expect("key")
}

fn sigsum_key() -> SigningKey {
    let mut seed = [0u8; 32];
    seed[0] = 17;
    SigningKey::from_seed(&seed).expect("key")
}

fn verifier(vkey: &str) -> Verifier {
    Verifier::parse(vkey).expect("verifier key")
}

#[test]
fn signs_exactly_as_go_sumdb_note() {
    let key = peter_key();
    let expected = format!("{GO_TEXT}\n{PETER_SIGNATURE}");
    assert_eq!(sign_note(GO_TEXT, "PeterNeumann", &key).expect("sign"), expected);
    assert_eq!(key.verifier("PeterNeumann").expect("verifier").to_vkey(), PETER_VERIFIER_KEY);
    assert_eq!(verifier(PETER_VERIFIER_KEY).to_string(), PETER_VERIFIER_KEY);
    assert_eq!(key_id("PeterNeumann", SignatureType::Ed25519, key.public_key()), 0xc74f_20a3);
    let printed = format!("{key:?}");
    let seed_base64 = PETER_SIGNER_KEY.splitn(5, '+').nth(4).expect("key data");
    let seed = STANDARD.decode(seed_base64).expect("base64");
    let seed_hex: String = seed[1..].iter().map(|b| format!("{b:02x}")).collect();
    assert!(printed.contains("redacted"), "{printed}");
    for secret in [&seed_base64[4..], &STANDARD.encode(&seed[1..])[..20], &seed_hex[..16]] {
        assert!(!printed.contains(secret), "the seed must never print: {printed}");
    }
}

#[test]
fn opens_go_sumdb_notes() {
    let peter = verifier(PETER_VERIFIER_KEY);
    let enoch = verifier(ENOCH_VERIFIER_KEY);
    let both = format!("{GO_TEXT}\n{PETER_SIGNATURE}{ENOCH_SIGNATURE}");

    let opened = open_note(both.as_bytes(), std::slice::from_ref(&peter)).expect("verified by Peter");
    assert_eq!(opened.body, GO_TEXT);
    assert_eq!(opened.signer_names(), ["PeterNeumann"]);
    assert_eq!(opened.signatures[0].key_id, 0xc74f_20a3);
    assert_eq!(opened.unknown.len(), 1);
    assert_eq!((opened.unknown[0].name.as_str(), opened.unknown[0].key_id), ("EnochRoot", 0xaf0c_fe78));

    let opened = open_note(both.as_bytes(), &[peter.clone(), enoch.clone()]).expect("verified by both");
    assert_eq!(opened.signer_names(), ["PeterNeumann", "EnochRoot"]);
    assert!(opened.unknown.is_empty());

    // Unknown keys only: reported, never trusted.
    assert_eq!(
        open_note(both.as_bytes(), &[]),
        Err(NoteError::Unverified { unknown_signers: vec!["PeterNeumann".into(), "EnochRoot".into()] })
    );
    // Same name, other key; same key, other name: both unknown.
    let other = SigningKey::from_seed(&[9; 32]).expect("key");
    let impostor = other.verifier("PeterNeumann").expect("verifier");
    let renamed = Verifier::new("PeterNeuman", SignatureType::Ed25519, *peter.public_key()).expect("verifier");
    assert!(matches!(open_note(both.as_bytes(), &[impostor, renamed]), Err(NoteError::Unverified { .. })));
    // A cosignature key for the same name and public key has another key ID: unknown.
    let cosigner = Verifier::new("PeterNeumann", SignatureType::CosignatureV1, *peter.public_key()).expect("verifier");
    assert!(matches!(open_note(both.as_bytes(), &[cosigner]), Err(NoteError::Unverified { .. })));
}

#[test]
fn rejects_what_go_sumdb_note_rejects() {
    let peter = verifier(PETER_VERIFIER_KEY);
    let note = |text: String| open_note(text.as_bytes(), std::slice::from_ref(&peter));

    // A corrupted signature by a known key rejects the whole note.
    let corrupted = format!("{}ABCD{}", &PETER_SIGNATURE[..60], &PETER_SIGNATURE[60..]);
    assert_eq!(
        note(format!("{GO_TEXT}\n{corrupted}")),
        Err(NoteError::InvalidSignature { name: "PeterNeumann".into(), key_id: 0xc74f_20a3 })
    );
    // Repeated signatures are all checked and reported once; unknown ones are ignored.
    let corrupted_enoch = format!("{}ABCD{}", &ENOCH_SIGNATURE[..60], &ENOCH_SIGNATURE[60..]);
    let repeated = format!("{GO_TEXT}\n{PETER_SIGNATURE}{PETER_SIGNATURE}{ENOCH_SIGNATURE}{corrupted_enoch}");
    let opened = note(repeated).expect("verified");
    assert_eq!(opened.signer_names(), ["PeterNeumann"]);
    assert_eq!(
        note(format!("{GO_TEXT}\n{PETER_SIGNATURE}{corrupted}")).map(|_| ()),
        Err(NoteError::InvalidSignature { name: "PeterNeumann".into(), key_id: 0xc74f_20a3 })
    );
    // Too many signature lines, with or without known keys.
    let many = format!("{GO_TEXT}\n{}", PETER_SIGNATURE.repeat(NOTE_SIGNATURES_MAX + 1));
    assert_eq!(note(many.clone()), Err(NoteError::TooManySignatures { max: NOTE_SIGNATURES_MAX }));
    assert_eq!(open_note(many.as_bytes(), &[]), Err(NoteError::TooManySignatures { max: NOTE_SIGNATURES_MAX }));
    let allowed = format!("{GO_TEXT}\n{}", PETER_SIGNATURE.repeat(NOTE_SIGNATURES_MAX));
    assert!(note(allowed).is_ok());

    // Malformed notes (the `badMsgs` of note_test.go, and more).
    let malformed = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", PETER_SIGNATURE.trim_end_matches('\n')),
        format!("\u{1}{GO_TEXT}\n{PETER_SIGNATURE}"),
        format!("{GO_TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        format!("{GO_TEXT}\n{PETER_SIGNATURE}Unexpected line.\n"),
        format!("{GO_TEXT}\n{PETER_SIGNATURE}\n"),
        format!("{GO_TEXT}\n- PeterNeumann{}", &PETER_SIGNATURE["— PeterNeumann".len()..]),
        format!("{GO_TEXT}\n—PeterNeumann{}", &PETER_SIGNATURE["— PeterNeumann".len()..]),
        format!("{GO_TEXT}\n— Peter+Neumann{}", &PETER_SIGNATURE["— PeterNeumann".len()..]),
        format!("{GO_TEXT}\n— PeterNeumann\n"),
        format!("{GO_TEXT}\n— PeterNeumann \n"),
        format!("{GO_TEXT}\n— PeterNeumann AAAAAA==\n"),
        format!("{GO_TEXT}\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM\n"),
        format!("{}\r\n\n{PETER_SIGNATURE}", GO_TEXT.trim_end_matches('\n')),
        format!("{GO_TEXT}\n{}", PETER_SIGNATURE.replace('\n', "\r\n")),
    ];
    for text in malformed {
        assert!(matches!(note(text.clone()), Err(NoteError::Malformed(_))), "accepted {text:?}");
    }
    let mut invalid_utf8 = vec![0xff];
    invalid_utf8.extend_from_slice(format!("{GO_TEXT}\n{PETER_SIGNATURE}").as_bytes());
    assert_eq!(open_note(&invalid_utf8, std::slice::from_ref(&peter)), Err(NoteError::Malformed("not UTF-8")));
    let huge = format!("{}\n\n{PETER_SIGNATURE}", "a".repeat(NOTE_BYTES_MAX));
    assert!(matches!(note(huge), Err(NoteError::TooLarge { .. })));
}

#[test]
fn verifier_keys_are_parsed_strictly() {
    assert_eq!(verifier(ENOCH_VERIFIER_KEY).key_id(), 0xaf0c_fe78);
    // Every truncation and every single-character change is refused (`TestNewVerifier`).
    let bytes = PETER_VERIFIER_KEY.as_bytes();
    for start in 0..bytes.len() {
        for end in start + 1..=bytes.len() {
            if (start, end) != (0, bytes.len()) {
                let part = &PETER_VERIFIER_KEY[start..end];
                assert!(Verifier::parse(part).is_err(), "accepted {part:?}");
            }
        }
    }
    for index in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[index] = changed[index].wrapping_add(1);
        if let Ok(changed) = String::from_utf8(changed) {
            assert!(Verifier::parse(&changed).is_err(), "accepted {changed:?}");
        }
    }
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(Verifier::parse(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn verifies_a_real_sum_golang_org_checkpoint() {
    let log = verifier(SUM_GOLANG_ORG_KEY);
    let opened = open_checkpoint(SUM_GOLANG_ORG_CHECKPOINT.as_bytes(), &log, &[]).expect("verified");
    assert_eq!(opened.checkpoint.origin(), "go.sum database tree");
    assert_eq!(opened.checkpoint.size(), 30_055_305);
    assert_eq!(STANDARD.encode(opened.checkpoint.root()), "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=");
    assert!(opened.cosignatures.is_empty());
    let tampered = SUM_GOLANG_ORG_CHECKPOINT.replace("30055305", "30055306");
    assert!(matches!(open_checkpoint(tampered.as_bytes(), &log, &[]), Err(NoteError::InvalidSignature { .. })));
}

#[test]
fn verifies_sigsum_signatures_and_cosignatures() {
    let key = sigsum_key();
    let origin = "sigsum.org/v1/tree/e796172b92befd62d9dc67e41c2f5bc9d3100a3023b20b1ca40288dd1c679e69";
    // sigsum names its log after the SHA-256 of its public key.
    assert!(origin.ends_with(&sha256_hex(key.public_key())));
    let log = key.verifier(origin).expect("verifier");
    let opened = open_checkpoint(SIGSUM_LOG_CHECKPOINT.as_bytes(), &log, &[]).expect("log signature");
    assert_eq!(opened.checkpoint.size(), 10);
    // Ed25519 is deterministic: we produce their exact note.
    assert_eq!(sign_note(&opened.checkpoint.to_body(), origin, &key).expect("sign"), SIGSUM_LOG_CHECKPOINT);

    let witness = key.cosignature_verifier("example.org/witness").expect("verifier");
    let cosigned = format!("{SIGSUM_COSIGNED_BODY}\n{SIGSUM_COSIGNATURE}");
    let opened = open_note(cosigned.as_bytes(), std::slice::from_ref(&witness)).expect("cosignature");
    assert_eq!(opened.signatures[0].cosigned_at_s, Some(1234));
    assert_eq!(opened.signatures[0].signature_type, SignatureType::CosignatureV1);
    // And we produce their exact cosignature line.
    let log_signed = sign_note(SIGSUM_COSIGNED_BODY, "example.org/log", &key).expect("sign");
    let ours = cosign(&log_signed, "example.org/witness", &key, 1234).expect("cosign");
    assert!(ours.ends_with(SIGSUM_COSIGNATURE), "{ours}");
    // The same cosignature with another timestamp no longer verifies.
    let mut payload = STANDARD.decode(SIGSUM_COSIGNATURE.trim_end().rsplit(' ').next().expect("b64")).expect("b64");
    payload[11] ^= 1;
    let retimed = format!("{SIGSUM_COSIGNED_BODY}\n— example.org/witness {}\n", STANDARD.encode(&payload));
    assert_eq!(
        open_note(retimed.as_bytes(), std::slice::from_ref(&witness)),
        Err(NoteError::InvalidSignature { name: "example.org/witness".into(), key_id: witness.key_id() })
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn checkpoints_round_trip_through_signed_notes_and_cosignatures() {
    let mut random = XorShift::new(7);
    let log_key = SigningKey::from_seed(&random.hash()).expect("key");
    let witness_a = SigningKey::from_seed(&random.hash()).expect("key");
    let witness_b = SigningKey::from_seed(&random.hash()).expect("key");
    let origin = "medvault.example/ledger";
    let log = log_key.verifier(origin).expect("verifier");
    let witness_a_verifier = witness_a.cosignature_verifier("witness.example/a").expect("verifier");
    let witness_b_verifier = witness_b.cosignature_verifier("witness.example/b").expect("verifier");
    let witnesses = [witness_a_verifier.clone(), witness_b_verifier.clone()];

    let checkpoint = Checkpoint::new(origin, 1_000_000, random.hash()).expect("checkpoint");
    let signed = sign_note(&checkpoint.to_body(), origin, &log_key).expect("sign");
    let opened = open_checkpoint(signed.as_bytes(), &log, &witnesses).expect("opens");
    assert_eq!(opened.checkpoint, checkpoint);
    assert!(opened.cosignatures.is_empty());

    let cosigned = cosign(&signed, "witness.example/a", &witness_a, 1_700_000_000).expect("cosign");
    let cosigned = cosign(&cosigned, "witness.example/b", &witness_b, 1_700_000_005).expect("cosign");
    // Cosigning again replaces the witness's earlier line.
    let cosigned = cosign(&cosigned, "witness.example/a", &witness_a, 1_700_000_010).expect("cosign");
    assert_eq!(cosigned.matches("witness.example/a").count(), 1);
    let opened = open_checkpoint(cosigned.as_bytes(), &log, &witnesses).expect("opens");
    assert_eq!(opened.checkpoint, checkpoint);
    let seen: Vec<(&str, u64)> = opened.cosignatures.iter().map(|c| (c.witness.as_str(), c.time_s)).collect();
    assert_eq!(seen, [("witness.example/b", 1_700_000_005), ("witness.example/a", 1_700_000_010)]);
    // Witnesses the verifier does not know are ignored; the log alone suffices to open.
    assert!(open_checkpoint(cosigned.as_bytes(), &log, &[]).expect("opens").cosignatures.is_empty());

    // Witness signatures without the log's: refused.
    let only_witness = open_note(cosigned.as_bytes(), &witnesses).expect("witnesses verify");
    assert_eq!(only_witness.unknown.len(), 1);
    let other_log = SigningKey::from_seed(&random.hash()).expect("key").verifier(origin).expect("verifier");
    assert_eq!(
        open_checkpoint(cosigned.as_bytes(), &other_log, &witnesses),
        Err(NoteError::MissingLogSignature { name: origin.into() })
    );
    // Key types are not interchangeable.
    assert!(open_checkpoint(cosigned.as_bytes(), &witness_a_verifier, &[]).is_err());
    assert!(open_checkpoint(cosigned.as_bytes(), &log, std::slice::from_ref(&log)).is_err());

    // Any change to the body breaks the log signature and every cosignature.
    let body = checkpoint.to_body();
    for index in 0..body.len() {
        let mut tampered = cosigned.clone().into_bytes();
        tampered[index] ^= 0x01;
        assert!(open_checkpoint(&tampered, &log, &witnesses).is_err(), "body byte {index}");
    }
    // Any change to a signature line breaks it (or makes it unknown, which then lacks the log).
    for (line_index, line) in cosigned[body.len() + 1..].lines().enumerate() {
        let start = cosigned.find(line).expect("line");
        for offset in "— ".len()..line.len() {
            let mut tampered = cosigned.clone().into_bytes();
            tampered[start + offset] ^= 0x01;
            if let Ok(opened) = open_checkpoint(&tampered, &log, &witnesses) {
                // Only a changed witness name or key ID can survive: the line became unknown.
                assert_ne!(line_index, 0, "log line changed at {offset} and still verified");
                assert_eq!(opened.cosignatures.len(), 1, "line {line_index} offset {offset}");
            }
        }
    }
    // A changed cosignature timestamp breaks it.
    let line = cosigned.lines().last().expect("line").to_owned();
    let (prefix, b64) = line.rsplit_once(' ').expect("b64");
    let mut payload = STANDARD.decode(b64).expect("b64");
    payload[11] = payload[11].wrapping_add(1);
    let retimed = cosigned.replace(&line, &format!("{prefix} {}", STANDARD.encode(&payload)));
    assert_eq!(
        open_checkpoint(retimed.as_bytes(), &log, &witnesses),
        Err(NoteError::InvalidSignature { name: "witness.example/a".into(), key_id: witness_a_verifier.key_id() })
    );
}

#[test]
fn refuses_to_sign_or_cosign_what_it_could_not_open() {
    let key = SigningKey::from_seed(&[3; 32]).expect("key");
    assert!(matches!(sign_note("no newline", "log", &key), Err(NoteError::Malformed(_))));
    assert!(matches!(sign_note("tab\there\n", "log", &key), Err(NoteError::Malformed(_))));
    assert!(matches!(sign_note("ok\n", "", &key), Err(NoteError::InvalidName(_))));
    assert!(matches!(sign_note("ok\n", "a b", &key), Err(NoteError::InvalidName(_))));
    assert!(matches!(sign_note("ok\n", "a+b", &key), Err(NoteError::InvalidName(_))));
    assert!(matches!(sign_note("ok\n", "a\u{a0}b", &key), Err(NoteError::InvalidName(_))));
    assert!(matches!(sign_note(&"a\n".repeat(NOTE_BYTES_MAX), "log", &key), Err(NoteError::TooLarge { .. })));
    // Notes with empty lines in their text still open: the last blank line separates.
    let text = "first\n\nsecond\n";
    let signed = sign_note(text, "log", &key).expect("sign");
    assert_eq!(open_note(signed.as_bytes(), &[key.verifier("log").expect("v")]).expect("opens").body, text);

    let checkpoint = Checkpoint::new("log", 0, EMPTY_ROOT).expect("checkpoint");
    let signed_checkpoint = sign_note(&checkpoint.to_body(), "log", &key).expect("sign");
    assert!(matches!(cosign(&signed, "w", &key, 1), Err(NoteError::MalformedCheckpoint(_))), "not a checkpoint");
    assert!(matches!(cosign("log\n0\n", "w", &key, 1), Err(NoteError::Malformed(_))), "not a signed note");
    assert_eq!(cosign(&signed_checkpoint, "w", &key, 1 << 63), Err(NoteError::InvalidTimestamp { time_s: 1 << 63 }));
    assert!(cosign(&signed_checkpoint, "w", &key, (1 << 63) - 1).is_ok());
    assert!(matches!(cosign(&signed_checkpoint, "w w", &key, 1), Err(NoteError::InvalidName(_))));
}

#[test]
fn key_ids_follow_the_c2sp_recipe() {
    // SHA-256(name || 0x0A || type || key)[:4], checked against an independent computation.
    let key = SigningKey::from_seed(&[5; 32]).expect("key");
    for (signature_type, type_byte) in [(SignatureType::Ed25519, 0x01u8), (SignatureType::CosignatureV1, 0x04)] {
        let mut input = b"witness.example/w1\n".to_vec();
        input.push(type_byte);
        input.extend_from_slice(key.public_key());
        let digest = hex(&sha256_hex(&input));
        let expected = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        assert_eq!(key_id("witness.example/w1", signature_type, key.public_key()), expected);
    }
}
