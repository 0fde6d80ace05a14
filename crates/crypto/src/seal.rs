//! The sealed-record format, version 1 (`docs/format/sealed-record.md`).

use crate::xchacha::{NonceSequence, XChaCha};
use crate::{random, CryptoError, Secret32};

const FORMAT: u8 = 0x01;
const ALGORITHM_XCHACHA20_POLY1305: u8 = 0x01;
#[cfg(feature = "danger-benchmark-unsealed")]
const ALGORITHM_DANGER_PLAINTEXT: u8 = 0x00;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = 2 + NONCE_BYTES;
const TAG_BYTES: usize = 16;

/// What a sealed version is bound to through the associated data.
#[derive(Debug, Clone, Copy)]
pub struct RecordIdentity<'a> {
    pub store_id: &'a [u8; 16],
    pub resource_type: &'a str,
    /// The keyed resource key (HMAC of type and id), so a row can be opened without
    /// knowing its id and a row moved onto another resource fails.
    pub resource_key: &'a [u8; 16],
    pub version: u64,
    pub deleted: bool,
}

impl RecordIdentity<'_> {
    fn associated_data(&self) -> Result<Vec<u8>, CryptoError> {
        let type_len = u16::try_from(self.resource_type.len()).map_err(|_| CryptoError::Malformed("type too long"))?;
        let mut aad = Vec::with_capacity(64 + self.resource_type.len());
        aad.extend_from_slice(b"medvault/v1/record");
        aad.extend_from_slice(self.store_id);
        aad.extend_from_slice(&type_len.to_be_bytes());
        aad.extend_from_slice(self.resource_type.as_bytes());
        aad.extend_from_slice(self.resource_key);
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.push(u8::from(self.deleted));
        Ok(aad)
    }
}

/// Seals and opens records under one data key.
/// Where a seal's nonce comes from.
enum Nonce<'a> {
    /// Drawn at random for this seal.
    Drawn([u8; NONCE_BYTES]),
    /// The next of a sequence (whose subkey the cipher keeps).
    Next(&'a NonceSequence),
}

pub struct Sealer {
    cipher: XChaCha,
    #[cfg(feature = "danger-benchmark-unsealed")]
    danger_unsealed: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    pub fn new(data_key: &Secret32) -> Self {
        Self {
            cipher: XChaCha::new(data_key),
            #[cfg(feature = "danger-benchmark-unsealed")]
            danger_unsealed: false,
        }
    }

    /// A sealer that stores plaintext, so a benchmark can measure what sealing costs.
    #[cfg(feature = "danger-benchmark-unsealed")]
    pub fn danger_unsealed_for_benchmark(data_key: &Secret32) -> Self {
        Self { danger_unsealed: true, ..Self::new(data_key) }
    }

    pub fn seal(&self, identity: &RecordIdentity<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(feature = "danger-benchmark-unsealed")]
        if self.danger_unsealed {
            let mut sealed = Vec::with_capacity(HEADER_BYTES + plaintext.len());
            sealed.extend_from_slice(&[FORMAT, ALGORITHM_DANGER_PLAINTEXT]);
            sealed.extend_from_slice(&[0u8; NONCE_BYTES]);
            sealed.extend_from_slice(plaintext);
            return Ok(sealed);
        }
        self.seal_with(Nonce::Drawn(random::array::<NONCE_BYTES>()?), identity, plaintext)
    }

    /// [`Sealer::seal`] with the nonce taken from `nonces` instead of a system call: for
    /// records sealed on a request's path (audit journal frames).
    pub fn seal_sequenced(
        &self,
        nonces: &NonceSequence,
        identity: &RecordIdentity<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        #[cfg(feature = "danger-benchmark-unsealed")]
        if self.danger_unsealed {
            return self.seal(identity, plaintext);
        }
        self.seal_with(Nonce::Next(nonces), identity, plaintext)
    }

    fn seal_with(
        &self,
        nonce: Nonce<'_>,
        identity: &RecordIdentity<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let aad = identity.associated_data()?;
        let mut sealed = Vec::with_capacity(HEADER_BYTES + plaintext.len() + TAG_BYTES);
        sealed.push(FORMAT);
        sealed.push(ALGORITHM_XCHACHA20_POLY1305);
        match nonce {
            Nonce::Drawn(nonce) => self.cipher.seal_append(&nonce, &aad, plaintext, &mut sealed)?,
            Nonce::Next(nonces) => self.cipher.seal_append_sequenced(nonces, &aad, plaintext, &mut sealed)?,
        }
        Ok(sealed)
    }

    pub fn open(&self, identity: &RecordIdentity<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < HEADER_BYTES {
            return Err(CryptoError::Malformed("sealed record shorter than its header"));
        }
        if sealed[0] != FORMAT {
            return Err(CryptoError::Malformed("unknown sealed-record format version"));
        }
        #[cfg(feature = "danger-benchmark-unsealed")]
        if self.danger_unsealed && sealed[1] == ALGORITHM_DANGER_PLAINTEXT {
            return Ok(sealed[HEADER_BYTES..].to_vec());
        }
        if sealed[1] != ALGORITHM_XCHACHA20_POLY1305 {
            return Err(CryptoError::Malformed("unknown sealing algorithm"));
        }
        if sealed.len() < HEADER_BYTES + TAG_BYTES {
            return Err(CryptoError::Malformed("sealed record shorter than its tag"));
        }
        let aad = identity.associated_data()?;
        self.cipher.open_framed(&aad, &sealed[2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: [u8; 16] = [1; 16];

    const KEY_A: [u8; 16] = [0xa; 16];
    const KEY_B: [u8; 16] = [0xb; 16];

    fn identity(id: &str, version: u64, deleted: bool) -> RecordIdentity<'static> {
        let resource_key = if id == "a" { &KEY_A } else { &KEY_B };
        RecordIdentity { store_id: &STORE, resource_type: "Patient", resource_key, version, deleted }
    }

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let sealer = Sealer::new(&Secret32::random().expect("random"));
        let body = br#"{"resourceType":"Patient","id":"a"}"#;
        let sealed = sealer.seal(&identity("a", 1, false), body).expect("seal");
        assert_eq!(sealer.open(&identity("a", 1, false), &sealed).expect("open"), body);
        assert!(!sealed.windows(body.len()).any(|window| window == body), "plaintext visible");

        for wrong in [identity("b", 1, false), identity("a", 2, false), identity("a", 1, true)] {
            assert!(matches!(sealer.open(&wrong, &sealed), Err(CryptoError::Integrity)));
        }
        let other_type = RecordIdentity { resource_type: "Observation", ..identity("a", 1, false) };
        assert!(matches!(sealer.open(&other_type, &sealed), Err(CryptoError::Integrity)));
        let other_key = Sealer::new(&Secret32::random().expect("random"));
        assert!(matches!(other_key.open(&identity("a", 1, false), &sealed), Err(CryptoError::Integrity)));
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x80;
            assert!(sealer.open(&identity("a", 1, false), &tampered).is_err(), "bit flip at {index}");
        }
        assert!(sealer.open(&identity("a", 1, false), &sealed[..sealed.len() - 1]).is_err());
        assert!(sealer.open(&identity("a", 1, false), &sealed[..10]).is_err());
    }

    #[test]
    fn another_store_cannot_open_it() {
        let sealer = Sealer::new(&Secret32::random().expect("random"));
        let sealed = sealer.seal(&identity("a", 1, false), b"{}").expect("seal");
        let other_store = RecordIdentity { store_id: &[2; 16], ..identity("a", 1, false) };
        assert!(matches!(sealer.open(&other_store, &sealed), Err(CryptoError::Integrity)));
    }
}
