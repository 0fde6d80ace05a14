//! The repository's keys (`backup-repository.md`, "Actors and keys", "Key wrapping",
//! "Blob sealing"): the offline recovery and prune key pairs and their files, wrapping to
//! the recovery key, keyed blob ids, and blob sealing.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use medvault_crypto::Secret32;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::BackupError;

pub const NONCE_BYTES: usize = 24;
pub const TAG_BYTES: usize = 16;
/// Ephemeral public key, nonce, tag: what wrapping adds to the wrapped bytes.
pub const WRAP_OVERHEAD_BYTES: usize = 32 + NONCE_BYTES + TAG_BYTES;

const RECOVERY_KEY_HEADER: &str = "medvault-backup-recovery-key v1 ";
const PRUNE_KEY_HEADER: &str = "medvault-backup-prune-key v1 ";
const WRAP_DOMAIN: &[u8] = b"medvault/v1/backup/wrap\0";
const BLOB_DOMAIN: &[u8] = b"medvault/v1/backup/blob\0";
pub const PRUNE_DOMAIN: &[u8] = b"medvault/v1/backup-prune\n";

/// A blob's type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobType {
    /// Table rows or leaf hashes, sealed under the pack's key.
    Data = 1,
    /// Blob references or the snapshot root, sealed under the metadata key.
    Tree = 2,
}

impl BlobType {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(BlobType::Data),
            2 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// The recovery key's private half: kept offline, needed to restore and to verify contents.
pub struct RecoverySecret(x25519_dalek::StaticSecret);

impl std::fmt::Debug for RecoverySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoverySecret([redacted])")
    }
}

impl RecoverySecret {
    pub fn generate() -> Result<Self, BackupError> {
        let mut seed = Zeroizing::new(medvault_crypto::random::array::<32>().map_err(crypto)?);
        let secret = x25519_dalek::StaticSecret::from(*seed);
        zeroize::Zeroize::zeroize(&mut *seed);
        Ok(Self(secret))
    }

    pub fn public_key(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }

    /// The key file's text: one line, `medvault-backup-recovery-key v1 <base64>`.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{RECOVERY_KEY_HEADER}{}\n", STANDARD.encode(self.0.to_bytes())))
    }

    pub fn from_file_text(text: &str) -> Result<Self, BackupError> {
        let bytes = parse_key_file(text, RECOVERY_KEY_HEADER, "recovery")?;
        Ok(Self(x25519_dalek::StaticSecret::from(*bytes)))
    }

    pub fn read(path: &Path) -> Result<Self, BackupError> {
        Self::from_file_text(&read_secret_file(path)?)
    }

    /// Opens bytes wrapped to this key under `context`.
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        context: &str,
        repository_id: &[u8; 16],
    ) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        if wrapped.len() < WRAP_OVERHEAD_BYTES {
            return Err(BackupError::Integrity("a wrapped key is too short".into()));
        }
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&wrapped[..32]);
        let shared = self.0.diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(BackupError::Integrity("a wrapped key has a degenerate ephemeral key".into()));
        }
        let cipher = wrap_cipher(shared.as_bytes(), &ephemeral, &self.public_key(), context);
        let nonce = &wrapped[32..32 + NONCE_BYTES];
        let body = &wrapped[32 + NONCE_BYTES..];
        let (ciphertext, tag) = body.split_at(body.len() - TAG_BYTES);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &wrap_aad(context, repository_id),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| {
                BackupError::Key("the recovery key does not open this repository's keys (another recovery key?)".into())
            })?;
        Ok(plaintext)
    }
}

/// Wraps `secret` to the recovery public key under `context` (ephemeral-static X25519,
/// HKDF-SHA256, XChaCha20-Poly1305).
pub fn wrap(
    recovery_public: &[u8; 32],
    secret: &[u8],
    context: &str,
    repository_id: &[u8; 16],
) -> Result<Vec<u8>, BackupError> {
    let ephemeral_seed = Zeroizing::new(medvault_crypto::random::array::<32>().map_err(crypto)?);
    let ephemeral = x25519_dalek::StaticSecret::from(*ephemeral_seed);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(*recovery_public));
    if !shared.was_contributory() {
        return Err(BackupError::Key("the recovery public key is degenerate".into()));
    }
    let cipher = wrap_cipher(shared.as_bytes(), &ephemeral_public, recovery_public, context);
    let nonce = medvault_crypto::random::array::<NONCE_BYTES>().map_err(crypto)?;
    let mut wrapped = Vec::with_capacity(WRAP_OVERHEAD_BYTES + secret.len());
    wrapped.extend_from_slice(&ephemeral_public);
    wrapped.extend_from_slice(&nonce);
    let start = wrapped.len();
    wrapped.extend_from_slice(secret);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &wrap_aad(context, repository_id), &mut wrapped[start..])
        .map_err(|_| BackupError::Key("cannot wrap a key".into()))?;
    wrapped.extend_from_slice(&tag);
    Ok(wrapped)
}

fn wrap_cipher(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32], context: &str) -> XChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    let info = [WRAP_DOMAIN, context.as_bytes()].concat();
    hkdf.expand(&info, key.as_mut_slice()).expect("32 bytes is a valid HKDF-SHA256 output length");
    XChaCha20Poly1305::new(key.as_slice().into())
}

fn wrap_aad(context: &str, repository_id: &[u8; 16]) -> Vec<u8> {
    [WRAP_DOMAIN, context.as_bytes(), repository_id].concat()
}

/// The prune key: an Ed25519 key kept offline; the only credential that removes objects.
pub struct PruneKey {
    seed: Zeroizing<[u8; 32]>,
    public_key: [u8; 32],
}

impl std::fmt::Debug for PruneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PruneKey([redacted])")
    }
}

impl PruneKey {
    pub fn generate() -> Result<Self, BackupError> {
        Self::from_seed(Zeroizing::new(medvault_crypto::random::array::<32>().map_err(crypto)?))
    }

    fn from_seed(seed: Zeroizing<[u8; 32]>) -> Result<Self, BackupError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice())
            .map_err(|_| BackupError::Key("invalid prune key".into()))?;
        let public_key =
            pair.public_key().as_ref().try_into().map_err(|_| BackupError::Key("invalid prune key".into()))?;
        Ok(Self { seed, public_key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PRUNE_KEY_HEADER}{}\n", STANDARD.encode(self.seed.as_slice())))
    }

    pub fn from_file_text(text: &str) -> Result<Self, BackupError> {
        Self::from_seed(parse_key_file(text, PRUNE_KEY_HEADER, "prune")?)
    }

    pub fn read(path: &Path) -> Result<Self, BackupError> {
        Self::from_file_text(&read_secret_file(path)?)
    }

    /// Signs `PRUNE_DOMAIN || body`.
    pub fn sign(&self, body: &[u8]) -> Result<[u8; 64], BackupError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(self.seed.as_slice())
            .map_err(|_| BackupError::Key("invalid prune key".into()))?;
        let signature = pair.sign(&[PRUNE_DOMAIN, body].concat());
        signature.as_ref().try_into().map_err(|_| BackupError::Key("invalid prune signature".into()))
    }
}

/// Checks a prune record's signature with the prune public key from the config.
pub fn verify_prune_signature(public_key: &[u8; 32], body: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(&[PRUNE_DOMAIN, body].concat(), signature).is_ok()
}

fn parse_key_file(text: &str, header: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let encoded = text
        .trim_end()
        .strip_prefix(header)
        .ok_or_else(|| BackupError::Key(format!("not a medvault backup {what} key file")))?;
    let bytes = Zeroizing::new(
        STANDARD.decode(encoded).map_err(|_| BackupError::Key(format!("the {what} key file is not valid base64")))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(BackupError::Key(format!("the {what} key file does not hold 32 bytes")));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata =
            std::fs::metadata(path).map_err(|e| BackupError::Key(format!("cannot read {}: {e}", path.display())))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(BackupError::Key(format!(
                "{} is readable by others; run chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
    }
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| BackupError::Key(format!("cannot read {}: {e}", path.display())))
}

/// Writes a secret key file with mode 0600; refuses to overwrite.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| BackupError::Io(format!("cannot create {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| BackupError::Io(format!("cannot write {}: {e}", path.display())))
}

/// The server-held repository keys: keyed blob ids and the metadata key.
#[derive(Clone)]
pub struct RepositoryKeys {
    pub id_key: Secret32,
    pub metadata_key: Secret32,
}

impl std::fmt::Debug for RepositoryKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepositoryKeys([redacted])")
    }
}

impl RepositoryKeys {
    /// `HMAC-SHA256(Kid, type || plaintext)`.
    pub fn blob_id(&self, blob_type: BlobType, plaintext: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.id_key.expose_secret()).expect("HMAC takes any key length");
        mac.update(&[blob_type as u8]);
        mac.update(plaintext);
        mac.finalize().into_bytes().into()
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([self.id_key.expose_secret().as_slice(), self.metadata_key.expose_secret()].concat())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        if bytes.len() != 64 {
            return Err(BackupError::Integrity("the repository keys are not 64 bytes".into()));
        }
        let mut id = [0u8; 32];
        let mut metadata = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        metadata.copy_from_slice(&bytes[32..]);
        Ok(Self { id_key: Secret32::from_bytes(id), metadata_key: Secret32::from_bytes(metadata) })
    }
}

/// What a sealed blob is bound to.
#[derive(Debug, Clone, Copy)]
pub struct BlobIdentity<'a> {
    pub repository_id: &'a [u8; 16],
    pub blob_type: BlobType,
    pub id: &'a [u8; 32],
    pub raw_length: u32,
    pub compression: u8,
}

impl BlobIdentity<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(BLOB_DOMAIN.len() + 16 + 1 + 32 + 4 + 1);
        aad.extend_from_slice(BLOB_DOMAIN);
        aad.extend_from_slice(self.repository_id);
        aad.push(self.blob_type as u8);
        aad.extend_from_slice(self.id);
        aad.extend_from_slice(&self.raw_length.to_be_bytes());
        aad.push(self.compression);
        aad
    }
}

/// Seals `payload` onto the end of `out`: nonce, ciphertext, tag.
pub fn seal_blob(
    cipher: &BlobCipher,
    identity: &BlobIdentity<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BackupError> {
    let nonce = medvault_crypto::random::array::<NONCE_BYTES>().map_err(crypto)?;
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(payload);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &identity.aad(), &mut out[start..])
        .map_err(|_| BackupError::Io("a blob too large to seal".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// A sealed blob did not open: altered, moved, or opened with the wrong key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRefused;

pub fn open_blob(cipher: &BlobCipher, identity: &BlobIdentity<'_>, stored: &[u8]) -> Result<Vec<u8>, BlobRefused> {
    if stored.len() < NONCE_BYTES + TAG_BYTES {
        return Err(BlobRefused);
    }
    let (nonce, rest) = stored.split_at(NONCE_BYTES);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
    let mut plaintext = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), &identity.aad(), &mut plaintext, Tag::from_slice(tag))
        .map_err(|_| BlobRefused)?;
    Ok(plaintext)
}

/// Opens a sealed blob where it lies: `stored` is nonce, ciphertext and tag; the plaintext
/// replaces the ciphertext, and its place in `stored` is returned.
pub fn open_blob_in_place(
    cipher: &BlobCipher,
    identity: &BlobIdentity<'_>,
    stored: &mut [u8],
) -> Result<std::ops::Range<usize>, BlobRefused> {
    if stored.len() < NONCE_BYTES + TAG_BYTES {
        return Err(BlobRefused);
    }
    let (nonce, rest) = stored.split_at_mut(NONCE_BYTES);
    let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), &identity.aad(), ciphertext, Tag::from_slice(tag))
        .map_err(|_| BlobRefused)?;
    Ok(NONCE_BYTES..stored.len() - TAG_BYTES)
}

/// The cipher of blobs and pack headers (under a pack key or the metadata key).
pub fn cipher(key: &Secret32) -> BlobCipher {
    BlobCipher { inner: medvault_crypto::xchacha::XChaCha::new(key) }
}

/// XChaCha20-Poly1305 for blobs and pack headers: the store's own implementation
/// (`medvault_crypto::xchacha`, HChaCha20 + ring's ChaCha20-Poly1305), the same bytes as
/// `chacha20poly1305::XChaCha20Poly1305` (a test here compares them too) at about twice its
/// speed, which matters because restore and verify open every byte of a repository.
pub struct BlobCipher {
    inner: medvault_crypto::xchacha::XChaCha,
}

impl std::fmt::Debug for BlobCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobCipher(<redacted>)")
    }
}

impl BlobCipher {
    pub fn encrypt_in_place_detached(
        &self,
        nonce: &XNonce,
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, chacha20poly1305::Error> {
        let nonce: &[u8; NONCE_BYTES] = nonce.as_slice().try_into().map_err(|_| chacha20poly1305::Error)?;
        let tag = self.inner.seal_in_place(nonce, aad, buffer).map_err(|_| chacha20poly1305::Error)?;
        Ok(*Tag::from_slice(&tag))
    }

    pub fn decrypt_in_place_detached(
        &self,
        nonce: &XNonce,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &Tag,
    ) -> Result<(), chacha20poly1305::Error> {
        let nonce: &[u8; NONCE_BYTES] = nonce.as_slice().try_into().map_err(|_| chacha20poly1305::Error)?;
        let tag: &[u8; TAG_BYTES] = tag.as_slice().try_into().map_err(|_| chacha20poly1305::Error)?;
        self.inner.open_in_place(nonce, aad, buffer, tag).map_err(|_| chacha20poly1305::Error)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    medvault_crypto::sha256(bytes)
}

fn crypto(error: medvault_crypto::CryptoError) -> BackupError {
    BackupError::Key(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_the_recovery_key_context_and_repository() {
        let recovery = RecoverySecret::generate().expect("key");
        let repository = [7u8; 16];
        let wrapped = wrap(&recovery.public_key(), &[42u8; 32], "pack-key", &repository).expect("wrap");
        assert_eq!(recovery.unwrap(&wrapped, "pack-key", &repository).expect("unwrap").as_slice(), &[42u8; 32]);
        assert!(recovery.unwrap(&wrapped, "repository-keys", &repository).is_err());
        assert!(recovery.unwrap(&wrapped, "pack-key", &[8u8; 16]).is_err());
        let other = RecoverySecret::generate().expect("key");
        assert!(other.unwrap(&wrapped, "pack-key", &repository).is_err());
        for index in 0..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[index] ^= 1;
            assert!(recovery.unwrap(&tampered, "pack-key", &repository).is_err(), "flip at {index}");
        }
    }

    #[test]
    fn key_files_round_trip_and_refuse_other_text() {
        let recovery = RecoverySecret::generate().expect("key");
        let text = recovery.to_file_text();
        assert_eq!(RecoverySecret::from_file_text(&text).expect("parse").public_key(), recovery.public_key());
        assert!(PruneKey::from_file_text(&text).is_err(), "a recovery key is not a prune key");
        let prune = PruneKey::generate().expect("key");
        let again = PruneKey::from_file_text(&prune.to_file_text()).expect("parse");
        let signature = again.sign(b"body").expect("sign");
        assert!(verify_prune_signature(&prune.public_key(), b"body", &signature));
        assert!(!verify_prune_signature(&prune.public_key(), b"other", &signature));
    }

    #[test]
    fn the_blob_cipher_is_xchacha20_poly1305_byte_for_byte() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for length in [0usize, 1, 15, 16, 17, 63, 64, 65, 255, 1000, 8192, 65_536] {
            let key = Secret32::from_bytes(std::array::from_fn(|_| next() as u8));
            let nonce: [u8; 24] = std::array::from_fn(|_| next() as u8);
            let aad: Vec<u8> = (0..(next() % 100)).map(|_| next() as u8).collect();
            let plaintext: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            let reference = XChaCha20Poly1305::new(key.expose_secret().into());
            let ours = cipher(&key);
            let mut theirs = plaintext.clone();
            let their_tag =
                reference.encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut theirs).expect("seal");
            let mut mine = plaintext.clone();
            let my_tag = ours.encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut mine).expect("seal");
            assert_eq!((&mine, my_tag), (&theirs, their_tag), "{length} bytes");
            ours.decrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut theirs, &their_tag).expect("open");
            assert_eq!(theirs, plaintext);
            let mut flipped = mine.clone();
            if let Some(byte) = flipped.first_mut() {
                *byte ^= 1;
                assert!(ours
                    .decrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut flipped, &my_tag)
                    .is_err());
            }
            let mut other_nonce = nonce;
            other_nonce[20] ^= 1;
            assert!(ours
                .decrypt_in_place_detached(XNonce::from_slice(&other_nonce), &aad, &mut mine.clone(), &my_tag)
                .is_err());
        }
    }

    #[test]
    fn blobs_are_bound_to_their_identity() {
        let key = Secret32::random().expect("random");
        let cipher = cipher(&key);
        let id = [3u8; 32];
        let identity =
            BlobIdentity { repository_id: &[1; 16], blob_type: BlobType::Data, id: &id, raw_length: 5, compression: 0 };
        let mut stored = Vec::new();
        seal_blob(&cipher, &identity, b"hello", &mut stored).expect("seal");
        assert_eq!(open_blob(&cipher, &identity, &stored).expect("open"), b"hello");
        let mut in_place = stored.clone();
        let range = open_blob_in_place(&cipher, &identity, &mut in_place).expect("open in place");
        assert_eq!(&in_place[range], b"hello");
        let other_id = [4u8; 32];
        assert!(open_blob(&cipher, &BlobIdentity { id: &other_id, ..identity }, &stored).is_err());
        assert!(open_blob(&cipher, &BlobIdentity { blob_type: BlobType::Tree, ..identity }, &stored).is_err());
        let mut flipped = stored.clone();
        flipped[30] ^= 1;
        assert!(open_blob(&cipher, &identity, &flipped).is_err());
    }
}
