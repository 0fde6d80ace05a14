//! Recovery codes: shape, entropy, normalisation, digests and lookup.

use std::collections::{HashMap, HashSet};

use medvault_auth::recovery::{
    find_recovery_code, generate_recovery_codes, recovery_code_digest, RECOVERY_CODES, RECOVERY_CODES_MAX,
};
use medvault_auth::AuthError;

const ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";

#[test]
fn ten_codes_of_four_dashed_groups_of_five() {
    assert_eq!(RECOVERY_CODES, 10);
    let codes = generate_recovery_codes(RECOVERY_CODES).expect("random");
    assert_eq!(codes.len(), 10);
    for code in &codes {
        assert_eq!(code.len(), 23, "{code}");
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for group in groups {
            assert_eq!(group.len(), 5, "{code}");
            assert!(group.chars().all(|c| ALPHABET.contains(c)), "{code}");
        }
    }
    let distinct: HashSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
}

#[test]
fn characters_are_uniform_over_the_alphabet_without_look_alikes() {
    let codes = generate_recovery_codes(RECOVERY_CODES_MAX).expect("random");
    let mut counts: HashMap<char, usize> = HashMap::new();
    for _ in 0..20 {
        for code in generate_recovery_codes(RECOVERY_CODES_MAX).expect("random") {
            for c in code.chars().filter(|c| *c != '-') {
                *counts.entry(c).or_default() += 1;
            }
        }
    }
    // 20 × 64 codes × 20 characters = 25,600 draws, 800 expected per character.
    assert_eq!(counts.len(), 32, "{counts:?}");
    for c in ['i', 'l', 'o', 'u'] {
        assert!(!counts.contains_key(&c));
    }
    for (c, count) in &counts {
        assert!((600..1000).contains(count), "{c}: {count}");
    }
    assert_eq!(codes.len(), 64);
}

#[test]
fn counts_outside_1_to_64_are_refused() {
    assert!(matches!(generate_recovery_codes(0), Err(AuthError::Count(_))));
    assert!(matches!(generate_recovery_codes(65), Err(AuthError::Count(_))));
    assert_eq!(generate_recovery_codes(1).expect("one").len(), 1);
}

#[test]
fn the_digest_is_sha256_of_the_normalised_code() {
    // sha256("ab3k90x7mq2hv4tpz8wc"), computed independently.
    let expected = "827e2e6cfcbe630b7c97e7f520c547b8ba32b5ec52e05d7b6f44d40f60ddd8ae";
    let hex = |digest: [u8; 32]| digest.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(recovery_code_digest("ab3k9-0x7mq-2hv4t-pz8wc")), expected);
    for typed in [
        "ab3k90x7mq2hv4tpz8wc",
        "AB3K9-0X7MQ-2HV4T-PZ8WC",
        " ab3k9 0x7mq 2hv4t pz8wc ",
        "ab3k9-Ox7mq-2hv4t-pz8wc", // letter O for zero
        "ab3k9-ox7mq-2hv4t-pz8wc",
    ] {
        assert_eq!(hex(recovery_code_digest(typed)), expected, "{typed:?}");
    }
    assert_ne!(hex(recovery_code_digest("ab3k9-0x7mq-2hv4t-pz8wd")), expected);
}

#[test]
fn a_code_is_found_among_the_stored_digests_and_a_wrong_one_is_not() {
    let codes = generate_recovery_codes(RECOVERY_CODES).expect("random");
    let digests: Vec<[u8; 32]> = codes.iter().map(|code| recovery_code_digest(code)).collect();
    for (index, code) in codes.iter().enumerate() {
        assert_eq!(find_recovery_code(code, &digests), Some(index));
        assert_eq!(find_recovery_code(&code.to_uppercase().replace('-', " "), &digests), Some(index));
    }
    assert_eq!(find_recovery_code("00000-00000-00000-00000", &digests), None);
    assert_eq!(find_recovery_code("", &digests), None);
    assert_eq!(find_recovery_code(&codes[0], &[]), None);
    // Once its digest is deleted, a used code is not found again.
    let remaining: Vec<[u8; 32]> = digests[1..].to_vec();
    assert_eq!(find_recovery_code(&codes[0], &remaining), None);
}
