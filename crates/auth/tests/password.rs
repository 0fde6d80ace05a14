//! Password hashing, verification, upgrade and the rules for new passwords.

use std::time::{Duration, Instant};

use medvault_auth::password::{
    check_new_password, hash_password, verify_dummy, verify_password, PasswordCheck, PasswordParams,
    PASSWORD_BYTES_MAX, PASSWORD_CHARS_MAX,
};
use medvault_auth::AuthError;

const DEFAULT: PasswordParams = PasswordParams::DEFAULT;

/// The Argon2 reference implementation's published vector (phc-winner-argon2 src/test.c):
/// Argon2id v0x13, m = 65536, t = 2, p = 1, password "password", salt "somesalt".
const REFERENCE_ARGON2ID: &str =
    "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
/// The same implementation's cheap vector (m = 256 KiB), standing in for a legacy hash
/// made with parameters below today's minimum.
const REFERENCE_WEAK_ARGON2ID: &str =
    "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
/// An Argon2i vector from the same suite (salt "diffsalt").
const REFERENCE_ARGON2I: &str = "$argon2i$v=19$m=65536,t=2,p=1$ZGlmZnNhbHQ$sDV8zPvvkfOGCw26RHsjSMvv7K2vmQq/6cxAcmxSEnE";

#[test]
fn defaults_are_the_owasp_minimum() {
    assert_eq!(DEFAULT, PasswordParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    assert_eq!(PasswordParams::MINIMUM, DEFAULT);
    assert_eq!(PasswordParams::default(), DEFAULT);
    assert!(DEFAULT.validate().is_ok());
}

#[test]
fn a_hash_is_an_argon2id_phc_string_with_explicit_parameters() {
    let phc = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    let fields: Vec<&str> = phc.split('$').collect();
    assert_eq!(fields.len(), 6, "{phc}");
    assert_eq!(fields[1], "argon2id");
    assert_eq!(fields[2], "v=19");
    assert_eq!(fields[3], "m=19456,t=2,p=1");
    assert_eq!(fields[4].len(), 22, "16-byte salt in unpadded base64");
    assert_eq!(fields[5].len(), 43, "32-byte output in unpadded base64");
    let again = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    assert_ne!(phc, again, "each hash has its own random salt");
}

#[test]
fn the_right_password_matches_and_a_wrong_one_does_not() {
    let phc = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    assert_eq!(
        verify_password(&phc, "correct horse battery staple", DEFAULT).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: false }
    );
    for wrong in ["correct horse battery stapl", "Correct horse battery staple", "", "correct horse battery staple "] {
        assert_eq!(
            verify_password(&phc, wrong, DEFAULT).expect("verify"),
            PasswordCheck { matched: false, needs_rehash: false },
            "{wrong:?}"
        );
    }
}

#[test]
fn a_hash_from_the_reference_implementation_verifies_and_asks_for_an_upgrade() {
    assert_eq!(
        verify_password(REFERENCE_ARGON2ID, "password", DEFAULT).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: true }
    );
    assert_eq!(
        verify_password(REFERENCE_ARGON2ID, "passwort", DEFAULT).expect("verify"),
        PasswordCheck { matched: false, needs_rehash: true }
    );
}

#[test]
fn a_legacy_hash_below_the_minimum_still_verifies_and_needs_rehash() {
    assert_eq!(
        verify_password(REFERENCE_WEAK_ARGON2ID, "password", DEFAULT).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: true }
    );
}

#[test]
fn an_argon2i_hash_verifies_and_needs_rehash() {
    assert_eq!(
        verify_password(REFERENCE_ARGON2I, "password", DEFAULT).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: true }
    );
}

#[test]
fn changed_parameters_ask_for_a_rehash() {
    let phc = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    let stronger = PasswordParams { memory_kib: 32_768, ..DEFAULT };
    assert_eq!(
        verify_password(&phc, "correct horse battery staple", stronger).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: true }
    );
    let upgraded = hash_password("correct horse battery staple", stronger).expect("hash");
    assert!(upgraded.contains("$m=32768,t=2,p=1$"), "{upgraded}");
    assert_eq!(
        verify_password(&upgraded, "correct horse battery staple", stronger).expect("verify"),
        PasswordCheck { matched: true, needs_rehash: false }
    );
}

#[test]
fn parameters_below_the_minimum_or_above_the_maximum_are_refused() {
    let weak = [
        PasswordParams { memory_kib: 19_455, ..DEFAULT },
        PasswordParams { iterations: 1, ..DEFAULT },
        PasswordParams { parallelism: 0, ..DEFAULT },
        PasswordParams { memory_kib: 1_048_577, ..DEFAULT },
        PasswordParams { iterations: 65, ..DEFAULT },
        PasswordParams { parallelism: 17, ..DEFAULT },
    ];
    for params in weak {
        assert!(matches!(hash_password("x", params), Err(AuthError::PasswordParams(_))), "{params:?}");
        assert!(
            matches!(verify_password(REFERENCE_ARGON2ID, "password", params), Err(AuthError::PasswordParams(_))),
            "{params:?}"
        );
    }
}

#[test]
fn unusable_stored_hashes_are_errors_not_mismatches() {
    let unusable = [
        "",
        "password",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        // No version field: 0x10 or 0x13 depending on the library, so refused.
        "$argon2i$m=65536,t=2,p=1$c29tZXNhbHQ$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ",
        // Unknown version.
        "$argon2id$v=20$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        // Costs that would make one login a denial of service.
        "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=65536,t=1000,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        // No hash, no salt, extra parameter.
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ",
        "$argon2id$v=19$m=65536,t=2,p=1",
        "$argon2id$v=19$m=65536,t=2,p=1,keyid=AAAA$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        // Output shorter than 16 bytes.
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMa",
        "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
    ];
    for phc in unusable {
        assert!(matches!(verify_password(phc, "password", DEFAULT), Err(AuthError::PasswordHashFormat(_))), "{phc}");
    }
}

#[test]
fn over_long_passwords_are_refused_before_hashing() {
    let long = "a".repeat(PASSWORD_BYTES_MAX + 1);
    assert!(matches!(hash_password(&long, DEFAULT), Err(AuthError::PasswordTooLong)));
    let phc = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    assert_eq!(
        verify_password(&phc, &long, DEFAULT).expect("verify"),
        PasswordCheck { matched: false, needs_rehash: false }
    );
    let longest = "a".repeat(PASSWORD_BYTES_MAX);
    let phc = hash_password(&longest, DEFAULT).expect("the longest password hashes");
    assert!(verify_password(&phc, &longest, DEFAULT).expect("verify").matched);
}

fn fastest_of_three(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("three runs")
}

#[test]
fn an_unknown_user_costs_as_much_as_a_wrong_password() {
    let phc = hash_password("correct horse battery staple", DEFAULT).expect("hash");
    let real = fastest_of_three(|| {
        let check = verify_password(&phc, "wrong guess", DEFAULT).expect("verify");
        assert!(!check.matched);
    });
    let dummy = fastest_of_three(|| verify_dummy("wrong guess", DEFAULT));
    let ratio = dummy.as_secs_f64() / real.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "dummy {dummy:?} vs real {real:?}");
}

#[test]
fn new_passwords_need_15_characters_alone_or_8_with_a_second_factor() {
    let short = check_new_password("Tr0ub4dor&3xyz", false, &[]).expect_err("14 characters");
    assert_eq!(short.reason, "use at least 15 characters (or 8 once a second factor is set up)");
    let short = check_new_password("k9#Fq2!", true, &[]).expect_err("7 characters");
    assert_eq!(short.reason, "use at least 8 characters");
    // Characters are Unicode scalar values: 7 of them, though 12 bytes.
    let short = check_new_password("ñandú€7", true, &[]).expect_err("7 characters");
    assert_eq!(short.reason, "use at least 8 characters");
    assert_eq!(check_new_password("vY7#kq!pZ3", true, &[]), Ok(()));
}

#[test]
fn no_composition_rules_a_long_lowercase_phrase_is_accepted() {
    assert_eq!(check_new_password("purple elephants juggle quietly", false, &[]), Ok(()));
}

#[test]
fn up_to_256_characters_are_accepted_and_longer_refused_not_truncated() {
    let phrase: String = "stethoscope fjord quantum marmalade ".chars().cycle().take(PASSWORD_CHARS_MAX).collect();
    assert_eq!(phrase.chars().count(), 256);
    assert_eq!(check_new_password(&phrase, false, &[]), Ok(()));
    let longer = format!("{phrase}x");
    let refused = check_new_password(&longer, false, &[]).expect_err("257 characters");
    assert_eq!(refused.reason, "use at most 256 characters");
}

#[test]
fn common_and_guessable_passwords_are_refused_without_echoing_them() {
    for guessable in
        ["password1234", "qwertyuiopasdfgh", "aaaaaaaaaaaaaaaaaaaa", "1234567890123456", "iloveyou12345678"]
    {
        let refused = check_new_password(guessable, true, &[]).expect_err(guessable);
        assert!(refused.reason.starts_with("this password is too easy to guess"), "{}", refused.reason);
        assert!(!refused.reason.contains(guessable), "{}", refused.reason);
        assert!(!format!("{refused:?} {refused}").contains(guessable));
    }
}

#[test]
fn the_username_counts_as_guessable() {
    let password = "dr.okonkwo.cardiology";
    assert_eq!(check_new_password(password, false, &[]), Ok(()));
    let refused = check_new_password(password, false, &["dr.okonkwo.cardiology"]).expect_err("the username itself");
    assert!(refused.reason.starts_with("this password is too easy to guess"), "{}", refused.reason);
}

#[test]
fn control_characters_are_refused() {
    let refused = check_new_password("purple elephants\tjuggle quietly", false, &[]).expect_err("tab");
    assert_eq!(refused.reason, "do not use control characters (such as tabs or line breaks)");
}

#[test]
fn a_second_factor_lowers_the_guessability_bar_from_score_3_to_score_2() {
    // Eight random-looking characters: zxcvbn score 2 (about 10^8 guesses by brute force).
    let eight = "Zq8#vL2m";
    assert_eq!(check_new_password(eight, true, &[]), Ok(()), "enough beside a second factor");
    // Fifteen characters that are a common word repeated: refused with or without.
    for mfa in [true, false] {
        assert!(check_new_password("passwordpassword", mfa, &[]).is_err(), "mfa {mfa}");
    }
}
