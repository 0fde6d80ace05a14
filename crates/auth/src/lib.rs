//! medvault's authentication logic, pure and storage-free.
//!
//! This crate decides; it never stores, never reads a clock and never logs. The caller
//! (the server and the CLI) loads the persisted state, passes the current time in, and
//! persists what comes back. That keeps every decision here testable with simulated time
//! and replayable from a seed.
//!
//! # Modules
//!
//! - [`password`]: Argon2id password hashing in PHC strings, verification that reports
//!   when a stored hash should be upgraded, a dummy verification of equal cost for unknown
//!   users, and the NIST SP 800-63B rules for choosing a new password (length, not
//!   composition; a guessability check with `zxcvbn`).
//! - [`totp`]: RFC 6238 time-based one-time passwords (over RFC 4226 HOTP), with replay
//!   detection by time step, the `otpauth://` enrolment URI and a terminal QR code.
//! - [`recovery`]: single-use recovery codes for a lost second factor, stored as digests.
//! - [`scope`]: SMART App Launch v2 scopes (and the v1 forms, mapped to v2), with
//!   `allows` for authorization decisions and `narrow` for granting less than requested.
//! - [`jwt`]: verification of SMART Backend Services client assertions (RFC 7523
//!   `private_key_jwt`, ES256 and RS384), and ES256 signing for tests and demos.
//! - [`throttle`]: brute-force defence: per-account exponential delays and a hard lock at
//!   100 consecutive failures (NIST SP 800-63B 5.2.2), and a per-address throttle against
//!   password spraying.
//!
//! # Invariants
//!
//! - **No secret in any `Debug` output or error.** Types holding secrets implement `Debug`
//!   by hand and print `[redacted]`; errors name what failed, never the password, code,
//!   secret or assertion text.
//! - **Secrets are zeroized** when dropped (`Zeroizing` wrappers) and read through
//!   greppable accessors (`expose_secret`).
//! - **Comparisons of secrets are constant-time** (`subtle`).
//! - **Security parameters are written at their call sites** (Argon2 costs, HMAC
//!   algorithms, signature algorithms), never left to a library's defaults.
//! - **Every quantity input can grow has a named limit** (`pub const … _MAX`).
//! - Time is always an argument (`unix_seconds`, `now_s`, `now_ms`); randomness comes from
//!   the operating system through `medvault_crypto::random`.
//!
//! # How the pieces fit a login
//!
//! 1. `throttle::AddressThrottle::check` and `throttle::LockoutPolicy::gate` for the
//!    account: anything but `Gate::Open` refuses the attempt *without* checking the
//!    password and without recording a failure, so an attacker cannot extend a wait.
//! 2. Unknown user: `password::verify_dummy`, then answer exactly as for a wrong password.
//! 3. Known user: `password::verify_password`; on a match with `needs_rehash`, store a new
//!    `hash_password`.
//! 4. Second factor: `totp::Totp::verify` with the stored last accepted step (store the
//!    new step on `Accepted`; log `Replayed` as a security event), or a recovery code
//!    checked with `recovery::find_recovery_code` (then delete that digest).
//! 5. Failure: `LockoutPolicy::record_failure` and `AddressThrottle::record_failure`;
//!    success: `LockoutPolicy::record_success`.
//!
//! # Parameters chosen
//!
//! | use | choice |
//! | --- | --- |
//! | password hashing | Argon2id v0x13, m = 19,456 KiB, t = 2, p = 1 (OWASP minimum), 16-byte salt, 32-byte output |
//! | new passwords | 8 characters with MFA, 15 without, at most 256; zxcvbn score ≥ 3 |
//! | TOTP | HMAC-SHA-1, 6 digits, 30 s, 160-bit secret; ±1 step accepted |
//! | recovery codes | 10 codes of 100 bits each, SHA-256 digests |
//! | client assertions | ES256 or RS384 (RSA ≥ 2048 bits), lifetime ≤ 300 s, 60 s skew |
//! | lockout | 5 free failures, then 1 s doubling to 15 min, locked at 100 |
//! | address throttle | 20 failures in 10 min blocks the address (IPv6: its /64) for 15 min |
//!
//! # Not yet
//!
//! - Unicode normalisation (NFKC) of passwords before hashing, which NIST SP 800-63B
//!   recommends: it needs a normalisation-table dependency and a marker in stored hashes.
//! - A breached-password corpus check (NIST's blocklist); zxcvbn's built-in lists of
//!   common passwords and words stand in for it.
//! - SMART granular scopes (`?param=value`), refused with a clear error.
//! - ES384 and PS384 client assertions (SMART names RS384 and ES384; RS384 is supported).

pub mod jwt;
pub mod password;
pub mod recovery;
pub mod scope;
pub mod throttle;
pub mod totp;

pub use jwt::{
    es256_keypair, parse_jwks, sign_es256, verify_client_assertion, AssertionClaims, AssertionError, ClientKey,
};
pub use password::{
    check_new_password, hash_password, verify_dummy, verify_password, PasswordCheck, PasswordParams, PasswordRejected,
};
pub use recovery::{find_recovery_code, generate_recovery_codes, recovery_code_digest, RECOVERY_CODES};
pub use scope::{Interaction, Permissions, Scope, ScopeContext, ScopeError, ScopeSet};
pub use throttle::{AccountAttempts, AddressPolicy, AddressThrottle, Gate, LockoutPolicy};
pub use totp::{qr_for_terminal, Totp, TotpAlgorithm, TotpCheck, TOTP_SKEW_STEPS};

/// Failures of the operations in this crate other than scope parsing ([`ScopeError`]),
/// client assertions ([`AssertionError`]) and password choice ([`PasswordRejected`]).
/// No variant carries a password, code, secret or key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The operating system's random generator failed; nothing secret was produced.
    #[error("the operating system's random generator failed")]
    Random,
    /// Argon2 parameters outside the accepted range: below the documented minimum (too
    /// cheap to guess against) or above the maximum (a denial of service on login).
    #[error("password hashing parameters refused: {0}")]
    PasswordParams(&'static str),
    /// A stored password hash is not a PHC string this crate can verify (corrupt record,
    /// unknown algorithm, out-of-range parameters).
    #[error("stored password hash unusable: {0}")]
    PasswordHashFormat(&'static str),
    /// A password longer than [`password::PASSWORD_BYTES_MAX`] was given to be hashed.
    #[error("password longer than {max} bytes", max = password::PASSWORD_BYTES_MAX)]
    PasswordTooLong,
    /// The Argon2 implementation reported an error (its message names no secret).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// A TOTP secret of the wrong length or not valid base32.
    #[error("TOTP secret refused: {0}")]
    TotpSecret(&'static str),
    /// TOTP digits or time step outside what this crate (and authenticator apps) support.
    #[error("TOTP parameters refused: {0}")]
    TotpParams(&'static str),
    /// The text does not fit in a QR code.
    #[error("QR code: {0}")]
    QrCode(String),
    /// A count outside the accepted range (for example of recovery codes).
    #[error("count refused: {0}")]
    Count(&'static str),
}
