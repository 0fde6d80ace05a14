//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03 §2.3), the AEAD of every sealed record,
//! wrapped key and audit journal frame.
//!
//! HChaCha20 (the `chacha20` crate) derives a subkey from the key and the nonce's first 16
//! bytes; ring's ChaCha20-Poly1305 (RFC 8439) then seals under that subkey with the nonce
//! `0u32 ‖ nonce[16..24]`. The bytes are exactly those of
//! `chacha20poly1305::XChaCha20Poly1305` (a test compares them on many lengths), at a fraction
//! of its fixed cost per message: an audited read seals one short record, and every read
//! opens one.
//!
//! Nonces from a [`NonceSequence`] share their first 16 bytes, so they share their HChaCha20
//! subkey: [`XChaCha::seal_append_sequenced`] derives it once per sequence and keeps it
//! (beside the key it comes from, for as long as the key lives) instead of once per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use zeroize::Zeroize;

use crate::{random, CryptoError, Secret32};

pub const NONCE_BYTES: usize = 24;
pub const TAG_BYTES: usize = 16;

/// One XChaCha20-Poly1305 key.
pub struct XChaCha {
    key: Secret32,
    /// The subkey of the first nonce sequence sealed with, and that sequence's prefix.
    sequenced: OnceLock<([u8; 16], ring::aead::LessSafeKey)>,
}

impl std::fmt::Debug for XChaCha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XChaCha([redacted])")
    }
}

impl XChaCha {
    pub fn new(key: &Secret32) -> Self {
        Self { key: Secret32::from_bytes(*key.expose_secret()), sequenced: OnceLock::new() }
    }

    /// The RFC 8439 key and nonce this extended nonce selects.
    fn subkey(&self, nonce: &[u8; NONCE_BYTES]) -> Result<(ring::aead::LessSafeKey, ring::aead::Nonce), CryptoError> {
        let mut subkey: [u8; 32] = chacha20::hchacha::<U10>(
            GenericArray::from_slice(self.key.expose_secret()),
            GenericArray::from_slice(&nonce[..16]),
        )
        .into();
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &subkey);
        subkey.zeroize();
        let key = ring::aead::LessSafeKey::new(unbound.map_err(|_| CryptoError::Malformed("ChaCha20-Poly1305 key"))?);
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(&nonce[16..]);
        Ok((key, ring::aead::Nonce::assume_unique_for_key(short)))
    }

    /// Encrypts `buffer` in place and returns the tag. `nonce` must never repeat under this
    /// key: draw it with [`random::array`] or take it from a [`NonceSequence`].
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_BYTES], CryptoError> {
        let (key, short) = self.subkey(nonce)?;
        let tag = key
            .seal_in_place_separate_tag(short, ring::aead::Aad::from(aad), buffer)
            .map_err(|_| CryptoError::Malformed("too long to seal"))?;
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Checks the tag and decrypts `buffer` in place; on failure `buffer` holds no plaintext
    /// the caller may use.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), CryptoError> {
        let (key, short) = self.subkey(nonce)?;
        let tag = ring::aead::Tag::try_from(&tag[..]).map_err(|_| CryptoError::Malformed("tag"))?;
        key.open_in_place_separate_tag(short, ring::aead::Aad::from(aad), tag, buffer, 0..)
            .map(|_| ())
            .map_err(|_| CryptoError::Integrity)
    }

    /// [`XChaCha::seal_append`] with the next nonce of `nonces`, whose subkey is derived
    /// once: the same bytes as `seal_append` with that nonce.
    pub fn seal_append_sequenced(
        &self,
        nonces: &NonceSequence,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce = nonces.next()?;
        if self.sequenced.get().is_none() {
            let (key, _) = self.subkey(&nonce)?;
            let _ = self.sequenced.set((nonces.prefix, key));
        }
        let cached = self.sequenced.get().filter(|(prefix, _)| *prefix == nonces.prefix);
        let Some((_, key)) = cached else {
            // Another sequence under this key: derive per message.
            return self.seal_append(&nonce, aad, plaintext, out);
        };
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(&nonce[16..]);
        out.reserve(NONCE_BYTES + plaintext.len() + TAG_BYTES);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(short),
                ring::aead::Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Malformed("too long to seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// `nonce ‖ ciphertext ‖ tag` appended to `out`.
    pub fn seal_append(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        out.reserve(NONCE_BYTES + plaintext.len() + TAG_BYTES);
        out.extend_from_slice(nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(nonce, aad, &mut out[start..])?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`.
    pub fn open_framed(&self, aad: &[u8], framed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if framed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(CryptoError::Malformed("sealed bytes shorter than their nonce and tag"));
        }
        let (nonce, rest) = framed.split_at(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let nonce: &[u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Malformed("nonce"))?;
        let tag: &[u8; TAG_BYTES] = tag.try_into().map_err(|_| CryptoError::Malformed("tag"))?;
        let mut plaintext = ciphertext.to_vec();
        if let Err(error) = self.open_in_place(nonce, aad, &mut plaintext, tag) {
            plaintext.zeroize();
            return Err(error);
        }
        Ok(plaintext)
    }
}

/// Nonces without a system call each: 16 random bytes drawn once, then a 64-bit counter
/// (`prefix ‖ counter`, big-endian). Unique under one key as long as no two sequences share
/// a prefix (2^-128 per pair) and no counter wraps (refused).
#[derive(Debug)]
pub struct NonceSequence {
    prefix: [u8; 16],
    next: AtomicU64,
}

impl NonceSequence {
    pub fn new() -> Result<Self, CryptoError> {
        Ok(Self { prefix: random::array::<16>()?, next: AtomicU64::new(0) })
    }

    pub fn next(&self) -> Result<[u8; NONCE_BYTES], CryptoError> {
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        if counter == u64::MAX {
            // Never reached in practice (2^64 seals); refusing keeps the promise anyway.
            self.next.store(u64::MAX, Ordering::Relaxed);
            return Err(CryptoError::Malformed("nonce sequence exhausted"));
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..16].copy_from_slice(&self.prefix);
        nonce[16..].copy_from_slice(&counter.to_be_bytes());
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    use super::*;

    #[test]
    fn the_same_bytes_as_the_reference_implementation() {
        let key = Secret32::random().expect("random");
        let ours = XChaCha::new(&key);
        let reference = XChaCha20Poly1305::new(key.expose_secret().into());
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1000, 4096, 70_000] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let nonce = random::array::<NONCE_BYTES>().expect("random");
            let aad = format!("aad {len}");
            let mut framed = Vec::new();
            ours.seal_append(&nonce, aad.as_bytes(), &plaintext, &mut framed).expect("seal");
            let expected = reference
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plaintext, aad: aad.as_bytes() })
                .expect("reference seal");
            assert_eq!(&framed[NONCE_BYTES..], &expected[..], "length {len}");
            assert_eq!(ours.open_framed(aad.as_bytes(), &framed).expect("open"), plaintext);
        }
    }

    #[test]
    fn refuses_any_change_wrong_aad_and_wrong_key() {
        let key = Secret32::random().expect("random");
        let ours = XChaCha::new(&key);
        let nonce = random::array::<NONCE_BYTES>().expect("random");
        let mut framed = Vec::new();
        ours.seal_append(&nonce, b"aad", b"a short audit record", &mut framed).expect("seal");
        for index in 0..framed.len() {
            let mut tampered = framed.clone();
            tampered[index] ^= 0x01;
            assert!(matches!(ours.open_framed(b"aad", &tampered), Err(CryptoError::Integrity)), "flip at {index}");
        }
        assert!(matches!(ours.open_framed(b"aaD", &framed), Err(CryptoError::Integrity)));
        let other = XChaCha::new(&Secret32::random().expect("random"));
        assert!(matches!(other.open_framed(b"aad", &framed), Err(CryptoError::Integrity)));
        assert!(ours.open_framed(b"aad", &framed[..NONCE_BYTES + TAG_BYTES - 1]).is_err());
    }

    #[test]
    fn sequenced_sealing_gives_the_bytes_of_sealing_with_each_nonce() {
        let key = Secret32::random().expect("random");
        let ours = XChaCha::new(&key);
        let reference = XChaCha20Poly1305::new(key.expose_secret().into());
        let first = NonceSequence::new().expect("random");
        let second = NonceSequence::new().expect("random");
        // The second sequence under the same key misses the cached subkey and must still
        // seal correctly, with its own nonces.
        for (round, sequence) in [&first, &second, &first, &second].into_iter().enumerate() {
            let plaintext: Vec<u8> = (0..300 + round).map(|i| (i * 13 + round) as u8).collect();
            let mut framed = Vec::new();
            ours.seal_append_sequenced(sequence, b"journal", &plaintext, &mut framed).expect("seal");
            let nonce: [u8; NONCE_BYTES] = framed[..NONCE_BYTES].try_into().expect("nonce");
            assert_eq!(&nonce[..16], &sequence.prefix[..], "round {round}");
            let expected = reference
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plaintext, aad: b"journal" })
                .expect("reference seal");
            assert_eq!(&framed[NONCE_BYTES..], &expected[..], "round {round}");
            assert_eq!(ours.open_framed(b"journal", &framed).expect("open"), plaintext);
            let mut tampered = framed.clone();
            tampered[NONCE_BYTES + 5] ^= 0x20;
            assert!(matches!(ours.open_framed(b"journal", &tampered), Err(CryptoError::Integrity)));
        }
    }

    #[test]
    fn a_nonce_sequence_never_repeats_and_two_sequences_differ() {
        let first = NonceSequence::new().expect("random");
        let second = NonceSequence::new().expect("random");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(first.next().expect("nonce")));
            assert!(seen.insert(second.next().expect("nonce")));
        }
        let exhausted = NonceSequence { prefix: [0; 16], next: AtomicU64::new(u64::MAX - 1) };
        assert!(exhausted.next().is_ok());
        assert!(exhausted.next().is_err());
        assert!(exhausted.next().is_err(), "stays exhausted");
    }
}
