//! The key-encryption key and the random keys it wraps (`docs/format/key-hierarchy.md`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::xchacha::XChaCha;
use crate::{random, CryptoError, MasterKey, Secret32};

const WRAP_FORMAT: u8 = 0x01;
const WRAP_ALGORITHM_XCHACHA20_POLY1305: u8 = 0x01;
const NONCE_BYTES: usize = 24;
const WRAPPED_BYTES: usize = 2 + NONCE_BYTES + 32 + 16;

/// What a wrapped key is for; part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyPurpose {
    Index = 1,
    SharedData = 2,
    PatientData = 3,
    /// The Ed25519 seed that signs ledger checkpoints.
    LedgerSigning = 4,
    /// A user's second-factor secret (TOTP key), bound to the user and its MFA epoch.
    UserSecret = 5,
    /// Seals blocks of audit records (`docs/format/audit.md`).
    AuditData = 6,
    /// The HMAC key of the search index's keyed tokens (`docs/format/index-token.md`);
    /// separate from [`KeyPurpose::Index`] so it can be rotated by rebuilding the index.
    SearchIndex = 7,
}

impl KeyPurpose {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Index),
            2 => Some(Self::SharedData),
            3 => Some(Self::PatientData),
            4 => Some(Self::LedgerSigning),
            5 => Some(Self::UserSecret),
            6 => Some(Self::AuditData),
            7 => Some(Self::SearchIndex),
            _ => None,
        }
    }
}

/// Everything a wrapped key is bound to.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    pub store_id: &'a [u8; 16],
    pub purpose: KeyPurpose,
    /// The compartment token for patient data keys; empty otherwise.
    pub compartment: &'a [u8],
}

impl WrapContext<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.compartment.len());
        aad.extend_from_slice(b"medvault/v1/wrapped-key");
        aad.extend_from_slice(self.store_id);
        aad.push(self.purpose as u8);
        aad.extend_from_slice(self.compartment);
        aad
    }
}

/// KEK = HKDF-SHA256(master key, salt = store id, info = "medvault/v1/key-encryption-key").
pub struct KeyEncryptionKey {
    cipher: XChaCha,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

impl KeyEncryptionKey {
    pub fn derive(master_key: &MasterKey, store_id: &[u8; 16]) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(store_id), master_key.expose_secret());
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte maximum, so expand cannot fail.
        let expanded = hkdf.expand(b"medvault/v1/key-encryption-key", okm.as_mut_slice());
        assert!(expanded.is_ok(), "HKDF expand of 32 bytes");
        Self { cipher: XChaCha::new(&Secret32::from_bytes(*okm)) }
    }

    pub fn wrap(&self, key: &Secret32, context: &WrapContext<'_>) -> Result<Vec<u8>, CryptoError> {
        let nonce = random::array::<NONCE_BYTES>()?;
        let aad = context.associated_data();
        let mut wrapped = Vec::with_capacity(WRAPPED_BYTES);
        wrapped.push(WRAP_FORMAT);
        wrapped.push(WRAP_ALGORITHM_XCHACHA20_POLY1305);
        self.cipher.seal_append(&nonce, &aad, key.expose_secret(), &mut wrapped)?;
        Ok(wrapped)
    }

    pub fn unwrap(&self, wrapped: &[u8], context: &WrapContext<'_>) -> Result<Secret32, CryptoError> {
        if wrapped.len() != WRAPPED_BYTES {
            return Err(CryptoError::Malformed("wrapped key has the wrong length"));
        }
        if wrapped[0] != WRAP_FORMAT || wrapped[1] != WRAP_ALGORITHM_XCHACHA20_POLY1305 {
            return Err(CryptoError::Malformed("unknown wrapped-key format"));
        }
        let aad = context.associated_data();
        let mut plaintext = Zeroizing::new(self.cipher.open_framed(&aad, &wrapped[2..])?);
        Secret32::from_slice_zeroizing(&mut plaintext).ok_or(CryptoError::Malformed("wrapped key is not 32 bytes"))
    }
}

/// A data key: seals the versions of one patient compartment (or the shared one).
pub type DataKey = Secret32;

/// The HMAC-SHA256 key behind every keyed token.
pub struct IndexKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey([redacted])")
    }
}

impl IndexKey {
    pub fn new(key: &Secret32) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret());
        Self { mac: mac.unwrap_or_else(|_| unreachable!("HMAC takes any key length")) }
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(store_id: &'a [u8; 16], compartment: &'a [u8]) -> WrapContext<'a> {
        WrapContext { store_id, purpose: KeyPurpose::PatientData, compartment }
    }

    #[test]
    fn wrapped_keys_are_bound_to_their_context() {
        let master = MasterKey::generate().expect("random");
        let store_id = [7u8; 16];
        let kek = KeyEncryptionKey::derive(&master, &store_id);
        let key = Secret32::random().expect("random");
        let wrapped = kek.wrap(&key, &context(&store_id, b"patient-a")).expect("wrap");
        let opened = kek.unwrap(&wrapped, &context(&store_id, b"patient-a")).expect("unwrap");
        assert_eq!(opened.expose_secret(), key.expose_secret());

        // Moved to another purpose, another patient, another store, or another master key: refused.
        let shared = WrapContext { store_id: &store_id, purpose: KeyPurpose::SharedData, compartment: b"patient-a" };
        assert!(matches!(kek.unwrap(&wrapped, &shared), Err(CryptoError::Integrity)));
        assert!(matches!(kek.unwrap(&wrapped, &context(&store_id, b"patient-b")), Err(CryptoError::Integrity)));
        let other_store = [8u8; 16];
        assert!(matches!(kek.unwrap(&wrapped, &context(&other_store, b"patient-a")), Err(CryptoError::Integrity)));
        let other_kek = KeyEncryptionKey::derive(&MasterKey::generate().expect("random"), &store_id);
        assert!(matches!(other_kek.unwrap(&wrapped, &context(&store_id, b"patient-a")), Err(CryptoError::Integrity)));

        // One flipped bit anywhere: refused.
        for index in 0..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[index] ^= 0x01;
            assert!(kek.unwrap(&tampered, &context(&store_id, b"patient-a")).is_err(), "bit flip at {index}");
        }
    }

    #[test]
    fn index_macs_differ_by_key_and_input() {
        let a = IndexKey::new(&Secret32::random().expect("random"));
        let b = IndexKey::new(&Secret32::random().expect("random"));
        assert_eq!(a.mac(&[b"x", b"y"]), a.mac(&[b"xy"]));
        assert_ne!(a.mac(&[b"xy"]), b.mac(&[b"xy"]));
        assert_ne!(a.mac(&[b"xy"]), a.mac(&[b"xz"]));
    }
}
