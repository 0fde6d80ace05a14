//! TOTP and HOTP against the RFC test vectors; replay; the window; base32; URIs; QR codes.

use medvault_auth::totp::{
    base32_decode, base32_encode, qr_for_terminal, Totp, TotpAlgorithm, TotpCheck, TOTP_SKEW_STEPS,
};
use medvault_auth::AuthError;

/// RFC 6238 Appendix B seeds: the ASCII digits repeated to the hash's output length.
const SEED_SHA1: &[u8] = b"12345678901234567890";
const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

/// RFC 6238 Appendix B, Table 1: time, SHA-1, SHA-256, SHA-512 (8 digits, 30 s steps).
const RFC6238_TABLE: [(u64, &str, &str, &str); 6] = [
    (59, "94287082", "46119246", "90693936"),
    (1_111_111_109, "07081804", "68084774", "25091201"),
    (1_111_111_111, "14050471", "67062674", "99943326"),
    (1_234_567_890, "89005924", "91819424", "93441116"),
    (2_000_000_000, "69279037", "90698825", "38618901"),
    (20_000_000_000, "65353130", "77737706", "47863826"),
];

/// RFC 4226 Appendix D: HOTP values for counters 0 to 9, secret "12345678901234567890".
const RFC4226_HOTP: [&str; 10] =
    ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];

fn rfc_totp(algorithm: TotpAlgorithm, digits: u32) -> Totp {
    let seed = match algorithm {
        TotpAlgorithm::Sha1 => SEED_SHA1,
        TotpAlgorithm::Sha256 => SEED_SHA256,
        TotpAlgorithm::Sha512 => SEED_SHA512,
    };
    Totp::new(seed.to_vec(), algorithm, digits, 30).expect("RFC parameters")
}

#[test]
fn rfc6238_appendix_b_all_vectors() {
    let sha1 = rfc_totp(TotpAlgorithm::Sha1, 8);
    let sha256 = rfc_totp(TotpAlgorithm::Sha256, 8);
    let sha512 = rfc_totp(TotpAlgorithm::Sha512, 8);
    for (time, code_sha1, code_sha256, code_sha512) in RFC6238_TABLE {
        assert_eq!(sha1.code_at(time), code_sha1, "SHA-1 at {time}");
        assert_eq!(sha256.code_at(time), code_sha256, "SHA-256 at {time}");
        assert_eq!(sha512.code_at(time), code_sha512, "SHA-512 at {time}");
        for (totp, code) in [(&sha1, code_sha1), (&sha256, code_sha256), (&sha512, code_sha512)] {
            assert_eq!(
                totp.verify(code, time, None),
                TotpCheck::Accepted { step: time / 30 },
                "{:?} at {time}",
                totp.algorithm()
            );
        }
    }
}

#[test]
fn rfc6238_steps_match_the_table() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 8);
    // "Value of T (hex)" column.
    let steps = [0x1, 0x0235_23EC, 0x0235_23ED, 0x0273_EF07, 0x03F9_40AA, 0x27BC_86AA];
    for ((time, ..), step) in RFC6238_TABLE.iter().zip(steps) {
        assert_eq!(totp.step_at(*time), step);
    }
}

#[test]
fn rfc4226_appendix_d_hotp_values() {
    let hotp = Totp::new(SEED_SHA1.to_vec(), TotpAlgorithm::Sha1, 6, 30).expect("RFC parameters");
    for (counter, expected) in RFC4226_HOTP.iter().enumerate() {
        assert_eq!(hotp.hotp(counter as u64), *expected, "counter {counter}");
    }
    // The same values as TOTP at the start of steps 0..9.
    for (counter, expected) in RFC4226_HOTP.iter().enumerate() {
        assert_eq!(hotp.code_at(counter as u64 * 30), *expected);
    }
}

#[test]
fn the_window_is_one_step_either_side_and_no_more() {
    assert_eq!(TOTP_SKEW_STEPS, 1);
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    let now = 1_111_111_111; // step 37037037, 1 s into it
    let step = now / 30;
    assert_eq!(totp.verify(&totp.hotp(step), now, None), TotpCheck::Accepted { step });
    assert_eq!(totp.verify(&totp.hotp(step - 1), now, None), TotpCheck::Accepted { step: step - 1 });
    assert_eq!(totp.verify(&totp.hotp(step + 1), now, None), TotpCheck::Accepted { step: step + 1 });
    assert_eq!(totp.verify(&totp.hotp(step - 2), now, None), TotpCheck::Wrong);
    assert_eq!(totp.verify(&totp.hotp(step + 2), now, None), TotpCheck::Wrong);
}

#[test]
fn window_edges_follow_the_step_boundaries() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    let code_step_10 = totp.hotp(10); // valid 300..=329
                                      // Accepted from the first second of step 9 to the last second of step 11.
    assert_eq!(totp.verify(&code_step_10, 269, None), TotpCheck::Wrong);
    assert_eq!(totp.verify(&code_step_10, 270, None), TotpCheck::Accepted { step: 10 });
    assert_eq!(totp.verify(&code_step_10, 359, None), TotpCheck::Accepted { step: 10 });
    assert_eq!(totp.verify(&code_step_10, 360, None), TotpCheck::Wrong);
}

#[test]
fn the_first_step_has_no_step_before_it() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    assert_eq!(totp.verify(&totp.hotp(0), 0, None), TotpCheck::Accepted { step: 0 });
    assert_eq!(totp.verify(&totp.hotp(1), 0, None), TotpCheck::Accepted { step: 1 });
    assert_eq!(totp.verify(&totp.hotp(2), 0, None), TotpCheck::Wrong);
}

#[test]
fn a_code_is_accepted_once_and_then_reported_as_replayed() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    let now = 1_234_567_890;
    let step = now / 30;
    let code = totp.code_at(now);
    let TotpCheck::Accepted { step: accepted } = totp.verify(&code, now, None) else {
        panic!("first use refused");
    };
    assert_eq!(accepted, step);
    assert_eq!(totp.verify(&code, now, Some(accepted)), TotpCheck::Replayed);
    assert_eq!(totp.verify(&code, now + 29, Some(accepted)), TotpCheck::Replayed);
    // An older code in the window is a replay too (its step is before the last used).
    assert_eq!(totp.verify(&totp.hotp(step - 1), now, Some(accepted)), TotpCheck::Replayed);
    // The next step's code is fresh.
    assert_eq!(totp.verify(&totp.hotp(step + 1), now, Some(accepted)), TotpCheck::Accepted { step: step + 1 });
    // A wrong code is wrong, not replayed.
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert_eq!(totp.verify(wrong, now, Some(accepted)), TotpCheck::Wrong);
}

#[test]
fn malformed_codes_are_wrong() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    let now = 59;
    let code = totp.code_at(now);
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let padded = format!("{code}0");
    let full_width: String =
        code.chars().map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).expect("digit")).collect();
    for malformed in ["", &code[..5], &padded, &spaced, "12345a", "-12345", "+12345", full_width.as_str()] {
        assert_eq!(totp.verify(malformed, now, None), TotpCheck::Wrong, "{malformed:?}");
    }
    assert_eq!(totp.verify(&code, now, None), TotpCheck::Accepted { step: 1 });
}

#[test]
fn parameters_are_checked() {
    let secret = || SEED_SHA1.to_vec();
    assert!(matches!(Totp::new(vec![7; 15], TotpAlgorithm::Sha1, 6, 30), Err(AuthError::TotpSecret(_))));
    assert!(matches!(Totp::new(vec![7; 65], TotpAlgorithm::Sha1, 6, 30), Err(AuthError::TotpSecret(_))));
    assert!(Totp::new(vec![7; 16], TotpAlgorithm::Sha1, 6, 30).is_ok());
    assert!(Totp::new(vec![7; 64], TotpAlgorithm::Sha1, 6, 30).is_ok());
    for digits in [0, 5, 7, 9, 10] {
        assert!(matches!(Totp::new(secret(), TotpAlgorithm::Sha1, digits, 30), Err(AuthError::TotpParams(_))));
    }
    for step in [0, 14, 301] {
        assert!(matches!(Totp::new(secret(), TotpAlgorithm::Sha1, 6, step), Err(AuthError::TotpParams(_))));
    }
}

#[test]
fn generated_secrets_are_what_apps_support() {
    let first = Totp::generate_default().expect("random");
    let second = Totp::generate_default().expect("random");
    assert_eq!(first.expose_secret().len(), 20);
    assert_eq!(first.algorithm(), TotpAlgorithm::Sha1);
    assert_eq!(first.digits(), 6);
    assert_eq!(first.step_seconds(), 30);
    assert_eq!(first.secret_base32().len(), 32);
    assert_ne!(first.expose_secret(), second.expose_secret());
    let reloaded = Totp::from_base32(&first.secret_base32(), TotpAlgorithm::Sha1, 6, 30).expect("reload");
    assert_eq!(reloaded.expose_secret(), first.expose_secret());
    assert_eq!(reloaded.code_at(1_700_000_000), first.code_at(1_700_000_000));
}

#[test]
fn debug_output_never_shows_the_secret() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    let debug = format!("{totp:?}");
    assert_eq!(debug, r#"Totp { algorithm: Sha1, digits: 6, step_seconds: 30, secret: "[redacted]" }"#);
    assert!(!debug.contains(&totp.secret_base32()));
}

#[test]
fn base32_matches_rfc4648_test_vectors() {
    let vectors: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "MY"),
        (b"fo", "MZXQ"),
        (b"foo", "MZXW6"),
        (b"foob", "MZXW6YQ"),
        (b"fooba", "MZXW6YTB"),
        (b"foobar", "MZXW6YTBOI"),
    ];
    let padded = ["", "MY======", "MZXQ====", "MZXW6===", "MZXW6YQ=", "MZXW6YTB", "MZXW6YTBOI======"];
    for ((bytes, text), padded) in vectors.iter().zip(padded) {
        assert_eq!(base32_encode(bytes), *text);
        assert_eq!(base32_decode(text).expect("decode").as_slice(), *bytes, "{text}");
        assert_eq!(base32_decode(padded).expect("padded").as_slice(), *bytes, "{padded}");
        assert_eq!(base32_decode(&text.to_lowercase()).expect("lower").as_slice(), *bytes, "{text}");
    }
    assert_eq!(base32_encode(SEED_SHA1), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
}

#[test]
fn base32_round_trips_every_length() {
    for length in 0..=64usize {
        let bytes: Vec<u8> = (0..length).map(|i| (i as u8).wrapping_mul(151).wrapping_add(7)).collect();
        let text = base32_encode(&bytes);
        assert!(!text.contains('='));
        assert_eq!(text.len(), (length * 8).div_ceil(5));
        assert_eq!(base32_decode(&text).expect("decode").as_slice(), bytes.as_slice(), "length {length}");
    }
}

#[test]
fn base32_refuses_what_is_not_canonical_base32() {
    for bad in [
        "M",                // impossible length
        "MZX",              // impossible length
        "MZXW6Y",           // impossible length
        "MZ",               // non-zero trailing bits ("MY" is canonical)
        "MZXW6YR",          // non-zero trailing bits
        "MZXW 6YQ",         // space
        "MZXW6YQ1",         // 1 is not in the alphabet
        "MZXW6YQ8",         // nor 8
        "MZXW6YQ0",         // nor 0
        "MY=",              // incomplete padding
        "MY=======",        // too much padding
        "MY======MY",       // padding in the middle
        "MZXW6YQ=========", // too much padding
        "MZXW6YQé",
    ] {
        assert!(base32_decode(bad).is_none(), "{bad:?}");
    }
    assert!(matches!(
        Totp::from_base32("MZXW6YQ!", TotpAlgorithm::Sha1, 6, 30),
        Err(AuthError::TotpSecret("not valid base32"))
    ));
    assert!(matches!(
        Totp::from_base32(&"A".repeat(129), TotpAlgorithm::Sha1, 6, 30),
        Err(AuthError::TotpSecret("base32 text too long"))
    ));
}

#[test]
fn otpauth_uri_follows_the_key_uri_format() {
    let totp = rfc_totp(TotpAlgorithm::Sha1, 6);
    assert_eq!(
        totp.otpauth_uri("medvault", "alice@example.org"),
        "otpauth://totp/medvault:alice%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
         &issuer=medvault&algorithm=SHA1&digits=6&period=30"
    );
    let sha256 = rfc_totp(TotpAlgorithm::Sha256, 8);
    assert_eq!(
        sha256.otpauth_uri("St. Mary's: Cardiology", "dr ököla/1"),
        "otpauth://totp/St.%20Mary%27s%3A%20Cardiology:dr%20%C3%B6k%C3%B6la%2F1\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA\
         &issuer=St.%20Mary%27s%3A%20Cardiology&algorithm=SHA256&digits=8&period=30"
    );
}

/// Reads the half-block picture back into modules: `true` is dark.
fn modules_of(picture: &str) -> Vec<Vec<bool>> {
    let mut rows = Vec::new();
    for line in picture.lines() {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for cell in line.chars() {
            // Drawn for dark terminals: light is a printed block, dark is blank.
            let (upper_light, lower_light) = match cell {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected character {other:?}"),
            };
            top.push(!upper_light);
            bottom.push(!lower_light);
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

#[test]
fn the_terminal_qr_code_draws_exactly_the_symbol_with_a_quiet_zone() {
    let uri = rfc_totp(TotpAlgorithm::Sha1, 6).otpauth_uri("medvault", "alice@example.org");
    let picture = qr_for_terminal(&uri).expect("fits");
    let symbol = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).expect("fits");
    let width = symbol.width();
    let colors = symbol.to_colors();
    let modules = modules_of(&picture);
    let quiet = 4;
    let side = width + 2 * quiet;
    assert!(picture.lines().all(|line| line.chars().count() == side));
    assert_eq!(picture.lines().count(), side.div_ceil(2));
    for (y, row) in modules.iter().enumerate().take(side) {
        for (x, dark) in row.iter().enumerate() {
            let inside = (quiet..quiet + width).contains(&x) && (quiet..quiet + width).contains(&y);
            let expected = inside && colors[(y - quiet) * width + (x - quiet)] == qrcode::Color::Dark;
            assert_eq!(*dark, expected, "module ({x}, {y})");
        }
    }
}

#[test]
fn text_too_long_for_a_qr_code_is_an_error() {
    assert!(matches!(qr_for_terminal(&"x".repeat(4000)), Err(AuthError::QrCode(_))));
}
