//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP) for a second factor.
//!
//! The server stores the secret (sealed, like any key) and, per account, the last time
//! step it accepted. [`Totp::verify`] accepts a code for the current step or one step
//! either side ([`TOTP_SKEW_STEPS`]) and refuses a code whose step is not after the last
//! accepted one, so a code seen over a shoulder or in a phishing proxy's log cannot be
//! used twice (RFC 6238 5.2: "the verifier MUST NOT accept the second attempt of the OTP
//! after the successful validation has been issued for the first OTP").
//!
//! Authenticator apps (Google Authenticator, Microsoft Authenticator, FreeOTP, 1Password,
//! Aegis) all support SHA-1, 6 digits and 30 seconds; several ignore the `algorithm`,
//! `digits` and `period` parameters. So [`Totp::generate_default`] uses exactly that. HMAC-
//! SHA-1 remains sound as a MAC (SHA-1's collision attacks do not apply to HMAC), which is
//! why ring's `HMAC_SHA1_FOR_LEGACY_USE_ONLY` is acceptable here.

use std::fmt;

use ring::hmac;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::AuthError;

/// Steps either side of the current one that are accepted: one (30 s) covers a user
/// typing as the code changes and modest clock drift on the phone, as RFC 6238 5.2
/// recommends ("at most one time step").
pub const TOTP_SKEW_STEPS: u64 = 1;
/// Shortest secret accepted: 128 bits (RFC 4226 4, requirement R6).
pub const TOTP_SECRET_BYTES_MIN: usize = 16;
/// Longest secret accepted: 64 bytes, the RFC 6238 SHA-512 test seed's length.
pub const TOTP_SECRET_BYTES_MAX: usize = 64;
/// Length of generated secrets: 160 bits, RFC 4226's recommendation and SHA-1's size.
pub const TOTP_SECRET_BYTES_DEFAULT: usize = 20;
/// Accepted time steps: short enough for a one-time code, long enough to type one.
pub const TOTP_STEP_SECONDS_MIN: u64 = 15;
/// See [`TOTP_STEP_SECONDS_MIN`].
pub const TOTP_STEP_SECONDS_MAX: u64 = 300;
/// The time step of generated secrets: 30 s, RFC 6238's default and what every app uses.
pub const TOTP_STEP_SECONDS_DEFAULT: u64 = 30;
/// Digits of generated codes: 6, what every app shows.
pub const TOTP_DIGITS_DEFAULT: u32 = 6;

/// Longest base32 text [`Totp::from_base32`] reads: a 64-byte secret is 103 characters,
/// 104 with padding.
const BASE32_CHARS_MAX: usize = 128;

/// The HMAC behind the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1: the default, the only one every authenticator app supports.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth://` URIs.
    pub fn uri_name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            TotpAlgorithm::Sha256 => hmac::HMAC_SHA256,
            TotpAlgorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// The outcome of [`Totp::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpCheck {
    /// The code is right and fresh. The caller stores `step` as the account's last used
    /// step, in the same transaction that records the successful login.
    Accepted { step: u64 },
    /// The code is right but for a step at or before the last accepted one: a second use
    /// of a code. Refuse it and log a security event (someone else may hold the code).
    Replayed,
    /// Not a code for any step in the window (or not `digits` ASCII digits).
    Wrong,
}

/// A TOTP generator and verifier: a secret and its parameters. The secret is zeroized on
/// drop and never printed; read it with [`Totp::expose_secret`] or [`Totp::secret_base32`]
/// only to store it or to show it once at enrolment.
#[derive(Clone)]
pub struct Totp {
    algorithm: TotpAlgorithm,
    digits: u32,
    step_seconds: u64,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("step_seconds", &self.step_seconds)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl Totp {
    /// A TOTP over `secret` (16 to 64 bytes), with 6 or 8 `digits` and a time step of 15
    /// to 300 seconds. The secret is moved into a zeroizing buffer before any check, so
    /// it is wiped on the error paths too.
    pub fn new(secret: Vec<u8>, algorithm: TotpAlgorithm, digits: u32, step_seconds: u64) -> Result<Totp, AuthError> {
        let secret = Zeroizing::new(secret);
        if secret.len() < TOTP_SECRET_BYTES_MIN {
            return Err(AuthError::TotpSecret("shorter than 16 bytes"));
        }
        if secret.len() > TOTP_SECRET_BYTES_MAX {
            return Err(AuthError::TotpSecret("longer than 64 bytes"));
        }
        if digits != 6 && digits != 8 {
            return Err(AuthError::TotpParams("digits must be 6 or 8"));
        }
        if !(TOTP_STEP_SECONDS_MIN..=TOTP_STEP_SECONDS_MAX).contains(&step_seconds) {
            return Err(AuthError::TotpParams("time step must be 15 to 300 seconds"));
        }
        Ok(Totp { algorithm, digits, step_seconds, secret })
    }

    /// A new secret of 20 bytes from the operating system's generator, with HMAC-SHA-1, 6
    /// digits and 30-second steps: what authenticator apps support.
    pub fn generate_default() -> Result<Totp, AuthError> {
        let mut secret = Zeroizing::new(vec![0u8; TOTP_SECRET_BYTES_DEFAULT]);
        medvault_crypto::random::fill(&mut secret).map_err(|_| AuthError::Random)?;
        Totp::new(std::mem::take(&mut *secret), TotpAlgorithm::Sha1, TOTP_DIGITS_DEFAULT, TOTP_STEP_SECONDS_DEFAULT)
    }

    /// A TOTP from a base32 secret (RFC 4648; upper or lower case; padding optional).
    pub fn from_base32(
        secret_base32: &str,
        algorithm: TotpAlgorithm,
        digits: u32,
        step_seconds: u64,
    ) -> Result<Totp, AuthError> {
        if secret_base32.len() > BASE32_CHARS_MAX {
            return Err(AuthError::TotpSecret("base32 text too long"));
        }
        let mut secret = base32_decode(secret_base32).ok_or(AuthError::TotpSecret("not valid base32"))?;
        Totp::new(std::mem::take(&mut *secret), algorithm, digits, step_seconds)
    }

    /// The secret in base32 (upper case, no padding), for storage or manual entry in an
    /// app. This is the secret itself: show it once, never log it.
    pub fn secret_base32(&self) -> String {
        base32_encode(&self.secret)
    }

    /// The secret's bytes, for sealing it into storage.
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn algorithm(&self) -> TotpAlgorithm {
        self.algorithm
    }

    pub fn digits(&self) -> u32 {
        self.digits
    }

    pub fn step_seconds(&self) -> u64 {
        self.step_seconds
    }

    /// The time step containing `unix_seconds` (RFC 6238 4.2, T0 = 0).
    pub fn step_at(&self, unix_seconds: u64) -> u64 {
        unix_seconds / self.step_seconds
    }

    /// The code an app shows at `unix_seconds`.
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.hotp(self.step_at(unix_seconds))
    }

    /// The RFC 4226 HOTP value for `counter`, zero-padded to `digits`. TOTP is this with
    /// the counter set to the time step.
    pub fn hotp(&self, counter: u64) -> String {
        let value = self.hotp_value(counter);
        format!("{value:0width$}", width = self.digits as usize)
    }

    /// Checks `code` at `unix_seconds`, given the step last accepted for this account.
    ///
    /// Every candidate step (current ± [`TOTP_SKEW_STEPS`]) is computed and compared in
    /// constant time, with no early exit, so timing does not reveal which step (if any)
    /// matched. A match on a step at or before `last_used_step` is [`TotpCheck::Replayed`];
    /// if the code matches several steps (a 1-in-10^digits coincidence), the latest fresh
    /// one is accepted. Codes of the wrong length or with anything but ASCII digits
    /// (including spaces) are [`TotpCheck::Wrong`]; strip separators before calling.
    pub fn verify(&self, code: &str, unix_seconds: u64, last_used_step: Option<u64>) -> TotpCheck {
        let code = code.as_bytes();
        if code.len() != self.digits as usize || !code.iter().all(u8::is_ascii_digit) {
            return TotpCheck::Wrong;
        }
        let current = self.step_at(unix_seconds);
        let first = current.saturating_sub(TOTP_SKEW_STEPS);
        let last = current.saturating_add(TOTP_SKEW_STEPS);
        let mut accepted_step = 0u64;
        let mut any_fresh = Choice::from(0);
        let mut any_match = Choice::from(0);
        for step in first..=last {
            let candidate = Zeroizing::new(self.hotp(step));
            let matched = candidate.as_bytes().ct_eq(code);
            // Freshness depends only on public values (the step and the stored step).
            let fresh = Choice::from(u8::from(last_used_step.is_none_or(|used| step > used)));
            let accept = matched & fresh;
            accepted_step.conditional_assign(&step, accept);
            any_fresh |= accept;
            any_match |= matched;
        }
        if bool::from(any_fresh) {
            TotpCheck::Accepted { step: accepted_step }
        } else if bool::from(any_match) {
            TotpCheck::Replayed
        } else {
            TotpCheck::Wrong
        }
    }

    /// The enrolment URI in Google's Key Uri Format, for a QR code:
    /// `otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    ///
    /// `issuer` and `account` are percent-encoded (RFC 3986: everything but unreserved
    /// characters), so a colon or space in them cannot change the label's structure. The
    /// URI contains the secret: render it for the user once, never log it.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let issuer = percent_encode(issuer);
        format!(
            "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
             &algorithm={algorithm}&digits={digits}&period={period}",
            account = percent_encode(account),
            secret = self.secret_base32(),
            algorithm = self.algorithm.uri_name(),
            digits = self.digits,
            period = self.step_seconds,
        )
    }

    fn hotp_value(&self, counter: u64) -> u32 {
        let key = hmac::Key::new(self.algorithm.hmac_algorithm(), &self.secret);
        let tag = hmac::sign(&key, &counter.to_be_bytes());
        let tag = tag.as_ref();
        // RFC 4226 5.3, dynamic truncation: the low 4 bits of the last byte select where
        // 31 bits are read. Tags are at least 20 bytes, so offset + 4 ≤ 19 is in range.
        let offset = usize::from(tag[tag.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([tag[offset], tag[offset + 1], tag[offset + 2], tag[offset + 3]]) & 0x7fff_ffff;
        binary % 10u32.pow(self.digits)
    }
}

/// Renders `text` (an `otpauth://` URI) as a QR code in Unicode half blocks (two modules
/// per character cell) with the standard 4-module quiet zone, error correction level M.
///
/// Drawn for a dark-background terminal: light modules are printed as full blocks and
/// dark modules as spaces, so the code appears dark on light as scanners expect.
pub fn qr_for_terminal(text: &str) -> Result<String, AuthError> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|error| AuthError::QrCode(error.to_string()))?;
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, without padding (what authenticator apps expect).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(BASE32_ALPHABET[((buffer >> bits) & 0x1f) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        text.push(char::from(BASE32_ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize]));
    }
    text
}

/// RFC 4648 base32, strictly: upper or lower case, `=` padding optional but, if present,
/// complete (to a multiple of 8) and only at the end; no other characters (no spaces);
/// no impossible lengths; unused trailing bits must be zero, so each byte string has
/// exactly one accepted encoding per case. Returns `None` for anything else. The output
/// is zeroizing because it is usually a secret.
pub fn base32_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let unpadded = text.trim_end_matches('=');
    if unpadded.len() != text.len() && text.len() != unpadded.len().div_ceil(8) * 8 {
        return None;
    }
    if !matches!(unpadded.len() % 8, 0 | 2 | 4 | 5 | 7) {
        return None;
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(unpadded.len() * 5 / 8));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for character in unpadded.bytes() {
        let value = match character {
            b'A'..=b'Z' => character - b'A',
            b'a'..=b'z' => character - b'a',
            b'2'..=b'7' => character - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    if buffer != 0 {
        return None;
    }
    Some(bytes)
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
