//! medvault's key hierarchy and sealing. Knows nothing of storage or HTTP.
//!
//! - [`master`]: where the master key comes from (key file, passphrase; later a module).
//! - [`keys`]: the key-encryption key, wrapping of random data and index keys.
//! - [`seal`]: the sealed-record format (`docs/format/sealed-record.md`).
//! - [`token`]: keyed tokens and access tokens.
//! - [`xchacha`]: the AEAD under all of them (XChaCha20-Poly1305).
//!
//! Algorithms and parameters are written at their call sites, never left to defaults.

pub mod keys;
pub mod master;
pub mod random;
pub mod seal;
pub mod secret;
pub mod token;
pub mod xchacha;

pub use keys::{DataKey, IndexKey, KeyEncryptionKey, KeyPurpose, WrapContext};
pub use master::{MasterKey, MasterKeySource};
pub use seal::{RecordIdentity, Sealer};
pub use secret::Secret32;
pub use token::{
    access_token_digest, constant_time_eq, new_access_token, new_session_token, sha256, NewAccessToken,
    SESSION_TOKEN_PREFIX,
};

/// Failures of cryptographic operations. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// An AEAD refused to open: the bytes, their associated data or the key is wrong.
    #[error("integrity check failed: the sealed bytes were altered, moved or opened with the wrong key")]
    Integrity,
    /// The sealed bytes do not have the documented layout (too short, unknown version).
    #[error("malformed sealed data: {0}")]
    Malformed(&'static str),
    /// The key file is missing, unreadable, malformed or readable by others.
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// The operating system's random generator failed.
    #[error("the operating system's random generator failed")]
    Random,
    /// Key derivation failed (bad parameters).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}
