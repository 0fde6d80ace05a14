//! Single-use recovery codes, for a user who has lost their second factor.
//!
//! Each code carries 100 bits from the operating system's generator, written for people:
//! 20 characters of a lowercase base32 alphabet without look-alikes, in four groups of
//! five (`ab3k9-x7mq2-0hv4t-pz8wc`). The server shows the codes once and stores only their
//! SHA-256 digests; a used code's digest is deleted.
//!
//! A plain, unsalted SHA-256 is enough here, unlike for passwords: a slow, salted hash
//! protects low-entropy secrets from guessing, but guessing a 100-bit random value from
//! its digest costs about 2^100 hashes whatever the hash's speed. A fast digest also lets
//! the server check a code against all of a user's digests cheaply.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::AuthError;

/// Codes issued per user by default: enough to recover several times, few enough to
/// print or write down.
pub const RECOVERY_CODES: usize = 10;
/// Most codes [`generate_recovery_codes`] makes in one call.
pub const RECOVERY_CODES_MAX: usize = 64;
/// Characters per code (without dashes): 20 × 5 bits = 100 bits, above the 80-bit floor
/// the design asks for and far beyond online guessing under the lockout policy.
pub const RECOVERY_CODE_CHARS: usize = 20;
/// Characters between dashes.
const GROUP_CHARS: usize = 5;

/// Crockford's base32 alphabet in lower case: digits and letters without `i`, `l`, `o`
/// (which look like `1`, `1`, `0`) and `u`. [`recovery_code_digest`] maps the look-alikes
/// back, so a code read aloud or retyped from paper still matches.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Makes `count` fresh codes (1 to [`RECOVERY_CODES_MAX`]), formatted for people. Show
/// them to the user once and store [`recovery_code_digest`] of each.
pub fn generate_recovery_codes(count: usize) -> Result<Vec<String>, AuthError> {
    if count == 0 || count > RECOVERY_CODES_MAX {
        return Err(AuthError::Count("recovery codes must number 1 to 64"));
    }
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        // One random byte per character, masked to 5 bits: 256 is a multiple of 32, so
        // every character is uniform.
        let random =
            Zeroizing::new(medvault_crypto::random::array::<RECOVERY_CODE_CHARS>().map_err(|_| AuthError::Random)?);
        let mut code = String::with_capacity(RECOVERY_CODE_CHARS + RECOVERY_CODE_CHARS / GROUP_CHARS);
        for (position, byte) in random.iter().enumerate() {
            if position > 0 && position % GROUP_CHARS == 0 {
                code.push('-');
            }
            code.push(char::from(ALPHABET[usize::from(byte & 0x1f)]));
        }
        codes.push(code);
    }
    Ok(codes)
}

/// The digest to store for a code, and to compare against at use. Normalises first, so
/// that what a person types still matches: lower case; spaces and dashes removed; `o` read
/// as `0` and `i`, `l` as `1` (Crockford's decoding rules; those letters never appear in
/// a code). Then SHA-256, which suffices for 100-bit random codes (see the module docs).
pub fn recovery_code_digest(code: &str) -> [u8; 32] {
    let normalised: Zeroizing<String> = Zeroizing::new(
        code.chars()
            .filter(|character| *character != ' ' && *character != '-')
            .map(|character| match character.to_ascii_lowercase() {
                'o' => '0',
                'i' | 'l' => '1',
                other => other,
            })
            .collect(),
    );
    medvault_crypto::token::sha256(normalised.as_bytes())
}

/// The index in `digests` of the code's digest, comparing against every digest in
/// constant time with no early exit. The caller deletes that digest (a code is used once)
/// in the same transaction that records the login.
pub fn find_recovery_code(code: &str, digests: &[[u8; 32]]) -> Option<usize> {
    let digest = recovery_code_digest(code);
    let mut found = Choice::from(0);
    let mut found_index = 0u64;
    for (index, stored) in digests.iter().enumerate() {
        let matched = digest.ct_eq(stored);
        found_index.conditional_assign(&(index as u64), matched);
        found |= matched;
    }
    bool::from(found).then_some(found_index as usize)
}
