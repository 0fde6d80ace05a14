//! Bearer access tokens: 256 bits from the OS generator, stored only as SHA-256 digests.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{random, CryptoError};

pub const ACCESS_TOKEN_PREFIX: &str = "mvt_";
const ACCESS_TOKEN_RANDOM_BYTES: usize = 32;

/// A freshly minted access token: show `token` once, store only `digest`.
pub struct NewAccessToken {
    pub token: Zeroizing<String>,
    pub digest: [u8; 32],
}

pub fn new_access_token() -> Result<NewAccessToken, CryptoError> {
    new_prefixed_token(ACCESS_TOKEN_PREFIX)
}

/// Login sessions: the same 256-bit construction under their own prefix.
pub const SESSION_TOKEN_PREFIX: &str = "mvs_";

pub fn new_session_token() -> Result<NewAccessToken, CryptoError> {
    new_prefixed_token(SESSION_TOKEN_PREFIX)
}

fn new_prefixed_token(prefix: &str) -> Result<NewAccessToken, CryptoError> {
    let bytes = Zeroizing::new(random::array::<ACCESS_TOKEN_RANDOM_BYTES>()?);
    let token = Zeroizing::new(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice())
    ));
    let digest = access_token_digest(&token);
    Ok(NewAccessToken { token, digest })
}

pub fn access_token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality for secrets and digests of secrets.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_digested() {
        let a = new_access_token().expect("random");
        let b = new_access_token().expect("random");
        assert!(a.token.starts_with(ACCESS_TOKEN_PREFIX));
        assert_eq!(a.token.len(), ACCESS_TOKEN_PREFIX.len() + 43);
        assert_ne!(a.token.as_str(), b.token.as_str());
        assert_eq!(a.digest, access_token_digest(&a.token));
        assert!(constant_time_eq(&a.digest, &access_token_digest(&a.token)));
        assert!(!constant_time_eq(&a.digest, &b.digest));
    }
}
