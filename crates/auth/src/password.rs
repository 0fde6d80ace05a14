//! Password hashing (Argon2id, PHC strings) and the rules for choosing a new password.
//!
//! Hashes are stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so
//! each record says how it was made and [`verify_password`] can tell the caller when to
//! upgrade it ([`PasswordCheck::needs_rehash`]) on the next successful login.
//!
//! Passwords are hashed as their UTF-8 bytes, as typed. NIST SP 800-63B (5.1.1.2) says a
//! verifier SHOULD apply Unicode normalisation (NFKC or NFKD) first; this crate does not
//! yet (it would need a normalisation table dependency). Adding it later changes the
//! bytes hashed for non-ASCII passwords, so it must come with a flag in the stored record.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::AuthError;

/// Fewest characters (Unicode scalar values) of a new password when the account also has
/// a second factor: NIST SP 800-63B-4 3.1.1.2 ("at least 8 characters" when used only as
/// part of multi-factor authentication).
pub const PASSWORD_CHARS_MIN_WITH_MFA: usize = 8;
/// Fewest characters of a new password when it is the only factor: NIST SP 800-63B-4
/// 3.1.1.2 ("at least 15 characters" for single-factor passwords).
pub const PASSWORD_CHARS_MIN_WITHOUT_MFA: usize = 15;
/// Most characters of a new password. NIST requires accepting at least 64; 256 leaves
/// room for pass phrases while bounding the work per login. Longer passwords are refused
/// with a reason, never silently truncated (truncation would make two passwords equal).
pub const PASSWORD_CHARS_MAX: usize = 256;
/// Most bytes of a password given to [`hash_password`] or [`verify_password`]: 256
/// characters of at most 4 UTF-8 bytes each. Bounds the pre-hashing work per attempt.
pub const PASSWORD_BYTES_MAX: usize = PASSWORD_CHARS_MAX * 4;
/// Most `user_inputs` [`check_new_password`] passes to zxcvbn, and the most characters of
/// each: bounds the dictionary it builds per call.
pub const USER_INPUTS_MAX: usize = 16;
/// See [`USER_INPUTS_MAX`].
pub const USER_INPUT_CHARS_MAX: usize = 100;
/// Characters of a new password that zxcvbn judges (see [`check_new_password`]).
pub const ZXCVBN_CHARS_MAX: usize = 100;

/// Upper bounds on Argon2 costs, for configured parameters and for stored hashes alike: a
/// corrupted or planted hash record must not turn one login into gigabytes of memory.
pub const MEMORY_KIB_MAX: u32 = 1_048_576; // 1 GiB
/// See [`MEMORY_KIB_MAX`].
pub const ITERATIONS_MAX: u32 = 64;
/// See [`MEMORY_KIB_MAX`].
pub const PARALLELISM_MAX: u32 = 16;

/// Salt length of new hashes: 128 bits, RFC 9106's recommendation.
const SALT_BYTES: usize = 16;
/// Output length of new hashes: 256 bits.
const HASH_BYTES: usize = 32;
/// Accepted lengths in stored hashes (verification only). 8 is Argon2's minimum salt.
const STORED_SALT_BYTES_MIN: usize = 8;
const STORED_SALT_BYTES_MAX: usize = 64;
const STORED_HASH_BYTES_MIN: usize = 16;
const STORED_HASH_BYTES_MAX: usize = 64;

/// Argon2id costs. Written explicitly at every call site, never left to a library default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordParams {
    /// Memory per hash in KiB (Argon2 `m`).
    pub memory_kib: u32,
    /// Passes over the memory (Argon2 `t`).
    pub iterations: u32,
    /// Lanes (Argon2 `p`). 1: the server hashes on a blocking thread per login, and more
    /// lanes would let one login occupy several cores.
    pub parallelism: u32,
}

impl PasswordParams {
    /// OWASP Password Storage Cheat Sheet's first Argon2id configuration: m = 19 MiB
    /// (19,456 KiB), t = 2, p = 1. About 20–50 ms per hash on a server core, which keeps
    /// a login fast while making each offline guess cost the same memory.
    pub const DEFAULT: PasswordParams = PasswordParams { memory_kib: 19_456, iterations: 2, parallelism: 1 };

    /// The least accepted for new hashes, field by field: the OWASP minimum above. Weaker
    /// configurations are refused rather than warned about.
    pub const MINIMUM: PasswordParams = PasswordParams::DEFAULT;

    /// Checks each field against [`PasswordParams::MINIMUM`] and the `*_MAX` bounds.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.memory_kib < Self::MINIMUM.memory_kib {
            return Err(AuthError::PasswordParams("memory below 19,456 KiB"));
        }
        if self.iterations < Self::MINIMUM.iterations {
            return Err(AuthError::PasswordParams("fewer than 2 iterations"));
        }
        if self.parallelism < Self::MINIMUM.parallelism {
            return Err(AuthError::PasswordParams("parallelism below 1"));
        }
        if self.memory_kib > MEMORY_KIB_MAX {
            return Err(AuthError::PasswordParams("memory above 1 GiB"));
        }
        if self.iterations > ITERATIONS_MAX {
            return Err(AuthError::PasswordParams("more than 64 iterations"));
        }
        if self.parallelism > PARALLELISM_MAX {
            return Err(AuthError::PasswordParams("parallelism above 16"));
        }
        Ok(())
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The outcome of [`verify_password`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCheck {
    /// The password is the one the hash was made from.
    pub matched: bool,
    /// The stored hash was not made with Argon2id v0x13, the `current` parameters, a
    /// 16-byte salt and a 32-byte output. When `matched`, the caller should store a fresh
    /// [`hash_password`] of the password it now holds in memory.
    pub needs_rehash: bool,
}

/// A new password was refused. `reason` is a sentence for the user; it never contains the
/// password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordRejected {
    pub reason: String,
}

impl fmt::Display for PasswordRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "password refused: {}", self.reason)
    }
}

impl std::error::Error for PasswordRejected {}

/// Hashes `password` with Argon2id v0x13, a fresh 16-byte salt from the operating system
/// and a 32-byte output, and returns the PHC string to store.
pub fn hash_password(password: &str, params: PasswordParams) -> Result<String, AuthError> {
    params.validate()?;
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::PasswordTooLong);
    }
    let salt = medvault_crypto::random::array::<SALT_BYTES>().map_err(|_| AuthError::Random)?;
    let salt_string = SaltString::encode_b64(&salt).map_err(|error| AuthError::Hashing(error.to_string()))?;
    let argon2 = argon2id(params, HASH_BYTES)?;
    let hash = argon2
        .hash_password(password.as_bytes(), &salt_string)
        .map_err(|error| AuthError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// Verifies `password` against a stored PHC string, using the parameters the string
/// records, and says whether the hash should be upgraded to `current`.
///
/// Argon2i and Argon2d hashes (for example imported from another system) are verified and
/// reported as `needs_rehash`. A password longer than [`PASSWORD_BYTES_MAX`] cannot have
/// been stored, so it does not match; it is refused before hashing. Errors mean the stored
/// string (or `current`) is unusable; the caller logs them and refuses the login.
pub fn verify_password(phc: &str, password: &str, current: PasswordParams) -> Result<PasswordCheck, AuthError> {
    current.validate()?;
    let stored = StoredHash::parse(phc)?;
    if password.len() > PASSWORD_BYTES_MAX {
        return Ok(PasswordCheck { matched: false, needs_rehash: false });
    }
    let argon2 = Argon2::new(stored.algorithm, stored.version, stored.params.clone());
    let mut computed = Zeroizing::new([0u8; STORED_HASH_BYTES_MAX]);
    let computed = &mut computed[..stored.hash.len()];
    argon2
        .hash_password_into(password.as_bytes(), &stored.salt, computed)
        .map_err(|error| AuthError::Hashing(error.to_string()))?;
    let matched: bool = computed.ct_eq(&stored.hash).into();
    let needs_rehash = stored.algorithm != Algorithm::Argon2id
        || stored.version != Version::V0x13
        || stored.params.m_cost() != current.memory_kib
        || stored.params.t_cost() != current.iterations
        || stored.params.p_cost() != current.parallelism
        || stored.salt.len() != SALT_BYTES
        || stored.hash.len() != HASH_BYTES;
    Ok(PasswordCheck { matched, needs_rehash })
}

/// Spends the same time as [`verify_password`] with `current` parameters, for a login
/// naming a user that does not exist, so that response time does not reveal which
/// accounts exist. The caller then answers exactly as for a wrong password.
///
/// The dummy hash is a PHC string with `current`'s parameters, a fixed salt and a fixed
/// output, built by formatting (no hashing), so it needs no cache and the very first
/// unknown-user login already costs the same as every later one; verification then goes
/// through the same code path as a real one. (A cache of a *computed* dummy hash would
/// make the first call cost two hashes.)
pub fn verify_dummy(password: &str, current: PasswordParams) {
    let dummy = dummy_phc(current);
    let outcome = verify_password(&dummy, password, current);
    std::hint::black_box(outcome.ok());
}

/// Checks a password a user has chosen, following NIST SP 800-63B-4 3.1.1.2:
///
/// - at least [`PASSWORD_CHARS_MIN_WITH_MFA`] characters if the account has a second
///   factor (`mfa`), else [`PASSWORD_CHARS_MIN_WITHOUT_MFA`]; characters are Unicode
///   scalar values, so "é" counts once whatever its byte length;
/// - at most [`PASSWORD_CHARS_MAX`], refused with a reason, never truncated;
/// - no composition rules (no required digits or symbols): they make passwords harder to
///   remember, not harder to guess;
/// - no control characters (they cannot be typed reliably on every keyboard);
/// - refused if easy to guess: zxcvbn's score below 3 (about 10^8 guesses or fewer),
///   which catches common passwords, dictionary words with substitutions, keyboard walks,
///   dates, repeats and sequences, and the `user_inputs` (username, e-mail, name) given.
///
/// zxcvbn's matching is super-linear in the input's length, so only the first
/// [`ZXCVBN_CHARS_MAX`] (100) characters are judged (zxcvbn 3 applies the same cut
/// internally; this crate makes it explicit so it does not depend on that), and
/// `user_inputs` are limited to [`USER_INPUTS_MAX`] entries of [`USER_INPUT_CHARS_MAX`]
/// characters. Measured on a development machine: about 10 ms for a 256-character
/// repetitive input, 25 ms for the first call of the process (zxcvbn builds its
/// dictionaries once). The tradeoff: a password over 100 characters is judged by its
/// first 100 alone, so a weak prefix followed by a strong tail is refused; a user who
/// writes that much can rephrase the start.
pub fn check_new_password(password: &str, mfa: bool, user_inputs: &[&str]) -> Result<(), PasswordRejected> {
    let chars = password.chars().count();
    let chars_min = if mfa { PASSWORD_CHARS_MIN_WITH_MFA } else { PASSWORD_CHARS_MIN_WITHOUT_MFA };
    if chars < chars_min {
        let reason = if mfa {
            format!("use at least {chars_min} characters")
        } else {
            format!(
                "use at least {chars_min} characters \
                 (or {PASSWORD_CHARS_MIN_WITH_MFA} once a second factor is set up)"
            )
        };
        return Err(PasswordRejected { reason });
    }
    if chars > PASSWORD_CHARS_MAX {
        return Err(PasswordRejected { reason: format!("use at most {PASSWORD_CHARS_MAX} characters") });
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordRejected {
            reason: "do not use control characters (such as tabs or line breaks)".to_owned(),
        });
    }
    let inputs: Vec<String> = user_inputs
        .iter()
        .take(USER_INPUTS_MAX)
        .map(|input| input.chars().take(USER_INPUT_CHARS_MAX).collect())
        .filter(|input: &String| !input.is_empty())
        .collect();
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let judged: Zeroizing<String> = Zeroizing::new(password.chars().take(ZXCVBN_CHARS_MAX).collect());
    let entropy = zxcvbn::zxcvbn(&judged, &input_refs);
    // zxcvbn's score 2 (at least 10^6 guesses) stops common and easily guessed passwords;
    // with a second factor and online throttling that is the bar NIST sets. Without a
    // second factor the password stands alone, so it must reach score 3 (10^8 guesses).
    let score_min = if mfa { zxcvbn::Score::Two } else { zxcvbn::Score::Three };
    if entropy.score() >= score_min {
        return Ok(());
    }
    Err(PasswordRejected { reason: guessable_reason(entropy.feedback()) })
}

/// The zxcvbn warning and suggestions, which are fixed sentences that never quote the
/// password.
fn guessable_reason(feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut reason = String::from("this password is too easy to guess");
    if let Some(feedback) = feedback {
        if let Some(warning) = feedback.warning() {
            reason.push_str(": ");
            reason.push_str(warning.to_string().trim_end_matches('.'));
        }
        reason.push('.');
        for suggestion in feedback.suggestions() {
            reason.push(' ');
            reason.push_str(&suggestion.to_string());
        }
    } else {
        reason.push('.');
    }
    reason
}

fn argon2id(params: PasswordParams, output_bytes: usize) -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(output_bytes))
        .map_err(|error| AuthError::Hashing(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A stored PHC string taken apart and range-checked.
struct StoredHash {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl StoredHash {
    fn parse(phc: &str) -> Result<StoredHash, AuthError> {
        let parsed = PasswordHash::new(phc).map_err(|_| AuthError::PasswordHashFormat("not a PHC string"))?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm).map_err(|_| AuthError::PasswordHashFormat("not an Argon2 hash"))?;
        // A missing version is ambiguous (0x10 in the reference implementation, 0x13 in
        // some libraries); this crate always writes it, so its absence is refused.
        let version = match parsed.version {
            Some(0x13) => Version::V0x13,
            Some(0x10) => Version::V0x10,
            Some(_) => return Err(AuthError::PasswordHashFormat("unknown Argon2 version")),
            None => return Err(AuthError::PasswordHashFormat("Argon2 version missing")),
        };
        if parsed.params.iter().count() != 3 {
            return Err(AuthError::PasswordHashFormat("parameters other than m, t and p"));
        }
        let cost = |name: &str| {
            parsed.params.get_decimal(name).ok_or(AuthError::PasswordHashFormat("parameter m, t or p missing"))
        };
        let (memory_kib, iterations, parallelism) = (cost("m")?, cost("t")?, cost("p")?);
        if memory_kib > MEMORY_KIB_MAX || iterations > ITERATIONS_MAX || parallelism > PARALLELISM_MAX {
            return Err(AuthError::PasswordHashFormat("costs above the accepted maximum"));
        }
        let salt_field = parsed.salt.ok_or(AuthError::PasswordHashFormat("salt missing"))?;
        let mut salt_buffer = [0u8; STORED_SALT_BYTES_MAX];
        let salt = salt_field
            .decode_b64(&mut salt_buffer)
            .map_err(|_| AuthError::PasswordHashFormat("salt not valid base64"))?
            .to_vec();
        if !(STORED_SALT_BYTES_MIN..=STORED_SALT_BYTES_MAX).contains(&salt.len()) {
            return Err(AuthError::PasswordHashFormat("salt length out of range"));
        }
        let hash = parsed.hash.ok_or(AuthError::PasswordHashFormat("hash missing"))?;
        let hash = hash.as_bytes().to_vec();
        if !(STORED_HASH_BYTES_MIN..=STORED_HASH_BYTES_MAX).contains(&hash.len()) {
            return Err(AuthError::PasswordHashFormat("hash length out of range"));
        }
        let params = Params::new(memory_kib, iterations, parallelism, Some(hash.len()))
            .map_err(|_| AuthError::PasswordHashFormat("parameters out of range"))?;
        Ok(StoredHash { algorithm, version, params, salt, hash })
    }
}

/// A PHC string of the shape [`hash_password`] writes with `params`, whose output no
/// password produces in practice (all zero bytes: a 2^-256 chance).
fn dummy_phc(params: PasswordParams) -> String {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt = b64.encode(*b"medvault-dummy!!");
    let hash = b64.encode([0u8; HASH_BYTES]);
    format!("$argon2id$v=19$m={},t={},p={}${salt}${hash}", params.memory_kib, params.iterations, params.parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_has_the_shape_of_a_real_one() {
        let dummy = dummy_phc(PasswordParams::DEFAULT);
        let stored = StoredHash::parse(&dummy).expect("dummy parses");
        assert_eq!(stored.algorithm, Algorithm::Argon2id);
        assert_eq!(stored.version, Version::V0x13);
        assert_eq!(stored.salt.len(), SALT_BYTES);
        assert_eq!(stored.hash.len(), HASH_BYTES);
        assert_eq!(stored.params.m_cost(), 19_456);
        assert_eq!(stored.params.t_cost(), 2);
        assert_eq!(stored.params.p_cost(), 1);
        let real = hash_password("correct horse battery staple", PasswordParams::DEFAULT).expect("hash");
        assert_eq!(real.len(), dummy.len());
    }
}
