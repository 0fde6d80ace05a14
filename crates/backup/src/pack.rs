//! Packs and blob references (`backup-repository.md`, "Packs", "Trees"): many sealed blobs
//! in one file, with a header sealed under the metadata key that holds the pack key wrapped
//! to the offline recovery key.

use medvault_base::limits::{BACKUP_CHUNK_BYTES_MAX, BACKUP_PACK_BLOBS_MAX, BACKUP_PACK_BYTES_MAX};
use medvault_crypto::Secret32;

use crate::keys::{self, BlobCipher, BlobIdentity, BlobType, NONCE_BYTES, TAG_BYTES, WRAP_OVERHEAD_BYTES};
use crate::BackupError;

pub const PACK_MAGIC: &[u8; 4] = b"MVBP";
pub const PACK_VERSION: u8 = 1;
const TRAILER_BYTES: usize = 4 + 4 + 1;
const HEADER_DOMAIN: &[u8] = b"medvault/v1/backup/pack-header\0";
const WRAPPED_PACK_KEY_BYTES: usize = WRAP_OVERHEAD_BYTES + 32;
const ENTRY_BYTES: usize = 1 + 1 + 32 + 4 + 4 + 4;
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_LZ4: u8 = 1;

/// Where a blob is and what it is: 78 bytes in trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    pub id: [u8; 32],
    pub pack: [u8; 32],
    pub offset: u32,
    pub stored_length: u32,
    pub raw_length: u32,
    pub blob_type: BlobType,
    pub compression: u8,
}

pub const REF_BYTES: usize = 78;

impl BlobRef {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.pack);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.stored_length.to_be_bytes());
        out.extend_from_slice(&self.raw_length.to_be_bytes());
        out.push(self.blob_type as u8);
        out.push(self.compression);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BackupError> {
        if bytes.len() != REF_BYTES {
            return Err(BackupError::Integrity("a blob reference is not 78 bytes".into()));
        }
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut id = [0u8; 32];
        let mut pack = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        pack.copy_from_slice(&bytes[32..64]);
        let blob_ref = Self {
            id,
            pack,
            offset: word(64),
            stored_length: word(68),
            raw_length: word(72),
            blob_type: BlobType::from_byte(bytes[76])
                .ok_or_else(|| BackupError::Integrity("a blob reference has an unknown type".into()))?,
            compression: bytes[77],
        };
        blob_ref.check()?;
        Ok(blob_ref)
    }

    fn check(&self) -> Result<(), BackupError> {
        let raw = self.raw_length as usize;
        if raw > BACKUP_CHUNK_BYTES_MAX.max(ROOT_BYTES_MAX) || self.compression > COMPRESSION_LZ4 {
            return Err(BackupError::Integrity("a blob reference is out of bounds".into()));
        }
        Ok(())
    }

    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, BackupError> {
        if bytes.len() / REF_BYTES * REF_BYTES != bytes.len() {
            return Err(BackupError::Integrity("a tree is not a whole number of references".into()));
        }
        bytes.chunks(REF_BYTES).map(Self::decode).collect()
    }

    pub fn to_hex(&self) -> String {
        let mut bytes = Vec::with_capacity(REF_BYTES);
        self.encode(&mut bytes);
        medvault_base::hex::encode(&bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, BackupError> {
        let bytes = medvault_base::hex::decode(text)
            .ok_or_else(|| BackupError::Integrity("a blob reference is not hex".into()))?;
        Self::decode(&bytes)
    }
}

/// The snapshot root is the one blob allowed above the chunk size (a JSON list of tables).
pub const ROOT_BYTES_MAX: usize = 1024 * 1024;

/// One entry of a pack header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub compression: u8,
    pub id: [u8; 32],
    pub offset: u32,
    pub stored_length: u32,
    pub raw_length: u32,
}

/// A pack being filled. Its data key is drawn at creation and dropped with it.
pub struct PackWriter {
    pub id: [u8; 32],
    cipher: BlobCipher,
    wrapped_key: Vec<u8>,
    buffer: Vec<u8>,
    entries: Vec<PackEntry>,
    /// Scratch space for compression, reused from blob to blob.
    compressed: Vec<u8>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter").field("bytes", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl PackWriter {
    pub fn new(recovery_public: &[u8; 32], repository_id: &[u8; 16], target_bytes: usize) -> Result<Self, BackupError> {
        Self::with_buffer(recovery_public, repository_id, target_bytes, Vec::new())
    }

    /// A pack written into `buffer` (cleared): the buffer of a pack already stored, so that
    /// its memory is not touched afresh.
    pub fn with_buffer(
        recovery_public: &[u8; 32],
        repository_id: &[u8; 16],
        target_bytes: usize,
        mut buffer: Vec<u8>,
    ) -> Result<Self, BackupError> {
        let pack_key = Secret32::random().map_err(|e| BackupError::Key(e.to_string()))?;
        let wrapped_key = keys::wrap(recovery_public, pack_key.expose_secret(), "pack-key", repository_id)?;
        let id = medvault_crypto::random::array::<32>().map_err(|e| BackupError::Key(e.to_string()))?;
        buffer.clear();
        buffer.reserve(target_bytes + BACKUP_CHUNK_BYTES_MAX + 4096);
        Ok(Self {
            id,
            cipher: keys::cipher(&pack_key),
            wrapped_key,
            buffer,
            entries: Vec::new(),
            compressed: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Compresses (if `try_compress`, and when it saves at least 1/8), seals and appends one
    /// blob; returns its reference. Tree blobs are sealed under `metadata`, data blobs under
    /// the pack key. Readers take a blob stored either way.
    pub fn add(
        &mut self,
        repository_id: &[u8; 16],
        metadata: &BlobCipher,
        blob_type: BlobType,
        id: [u8; 32],
        plaintext: &[u8],
        try_compress: bool,
    ) -> Result<BlobRef, BackupError> {
        let raw_length = u32::try_from(plaintext.len()).map_err(|_| BackupError::Integrity("blob too large".into()))?;
        let mut compressed = std::mem::take(&mut self.compressed);
        let saves = try_compress && {
            compressed.clear();
            compressed.resize(lz4_flex::block::get_maximum_output_size(plaintext.len()), 0);
            let written = lz4_flex::block::compress_into(plaintext, &mut compressed)
                .map_err(|_| BackupError::Io("a blob does not compress into its bound".into()))?;
            compressed.truncate(written);
            written <= plaintext.len() - plaintext.len() / 8
        };
        let (payload, compression) =
            if saves { (compressed.as_slice(), COMPRESSION_LZ4) } else { (plaintext, COMPRESSION_NONE) };
        let offset = u32::try_from(self.buffer.len()).map_err(|_| BackupError::Integrity("pack too large".into()))?;
        let identity = BlobIdentity { repository_id, blob_type, id: &id, raw_length, compression };
        let cipher = if blob_type == BlobType::Tree { metadata } else { &self.cipher };
        keys::seal_blob(cipher, &identity, payload, &mut self.buffer)?;
        let stored_length = self.buffer.len() as u32 - offset;
        let entry = PackEntry { blob_type, compression, id, offset, stored_length, raw_length };
        self.entries.push(entry);
        self.compressed = compressed;
        Ok(BlobRef { id, pack: self.id, offset, stored_length, raw_length, blob_type, compression })
    }

    /// The pack file's bytes: blobs, sealed header, trailer.
    pub fn finish(mut self, repository_id: &[u8; 16], metadata: &BlobCipher) -> Result<Vec<u8>, BackupError> {
        let mut header = Vec::with_capacity(1 + WRAPPED_PACK_KEY_BYTES + 4 + ENTRY_BYTES * self.entries.len());
        header.push(PACK_VERSION);
        header.extend_from_slice(&self.wrapped_key);
        header.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            header.push(entry.blob_type as u8);
            header.push(entry.compression);
            header.extend_from_slice(&entry.id);
            header.extend_from_slice(&entry.offset.to_be_bytes());
            header.extend_from_slice(&entry.stored_length.to_be_bytes());
            header.extend_from_slice(&entry.raw_length.to_be_bytes());
        }
        let start = self.buffer.len();
        seal_header(metadata, repository_id, &header, &mut self.buffer)?;
        let header_length = (self.buffer.len() - start) as u32;
        self.buffer.extend_from_slice(&header_length.to_be_bytes());
        self.buffer.extend_from_slice(PACK_MAGIC);
        self.buffer.push(PACK_VERSION);
        Ok(self.buffer)
    }
}

fn header_aad(repository_id: &[u8; 16]) -> Vec<u8> {
    [HEADER_DOMAIN, repository_id].concat()
}

fn seal_header(
    metadata: &BlobCipher,
    repository_id: &[u8; 16],
    header: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BackupError> {
    let nonce = medvault_crypto::random::array::<NONCE_BYTES>().map_err(|e| BackupError::Key(e.to_string()))?;
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(header);
    let tag = metadata
        .encrypt_in_place_detached(
            chacha20poly1305::XNonce::from_slice(&nonce),
            &header_aad(repository_id),
            &mut out[start..],
        )
        .map_err(|_| BackupError::Io("cannot seal a pack header".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// An opened pack header.
#[derive(Debug, Clone)]
pub struct PackHeader {
    pub wrapped_key: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

/// Where the sealed header of a pack of `pack_length` bytes is, from its trailer.
pub fn header_location(pack_length: u64, trailer: &[u8]) -> Result<(u64, usize), BackupError> {
    if trailer.len() != TRAILER_BYTES || &trailer[4..8] != PACK_MAGIC {
        return Err(BackupError::Integrity("not a pack (no MVBP trailer)".into()));
    }
    if trailer[8] != PACK_VERSION {
        return Err(BackupError::Integrity(format!("unsupported pack version {}", trailer[8])));
    }
    let header_length = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as u64;
    let end = pack_length.checked_sub(TRAILER_BYTES as u64).ok_or(BackupError::Integrity("pack too short".into()))?;
    let start = end.checked_sub(header_length).ok_or(BackupError::Integrity("pack header out of bounds".into()))?;
    Ok((start, header_length as usize))
}

pub const fn trailer_bytes() -> usize {
    TRAILER_BYTES
}

/// Opens a sealed pack header with the metadata key and checks every entry's bounds
/// against the header's start.
pub fn open_header(
    metadata: &BlobCipher,
    repository_id: &[u8; 16],
    sealed: &[u8],
    header_start: u64,
) -> Result<PackHeader, BackupError> {
    if sealed.len() < NONCE_BYTES + TAG_BYTES || header_start as usize > BACKUP_PACK_BYTES_MAX {
        return Err(BackupError::Integrity("pack header out of bounds".into()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_BYTES);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
    let mut header = ciphertext.to_vec();
    metadata
        .decrypt_in_place_detached(
            chacha20poly1305::XNonce::from_slice(nonce),
            &header_aad(repository_id),
            &mut header,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| BackupError::Integrity("the pack header fails authentication".into()))?;
    let fixed = 1 + WRAPPED_PACK_KEY_BYTES + 4;
    if header.len() < fixed || header[0] != PACK_VERSION {
        return Err(BackupError::Integrity("malformed pack header".into()));
    }
    let wrapped_key = header[1..1 + WRAPPED_PACK_KEY_BYTES].to_vec();
    let count =
        u32::from_be_bytes([header[fixed - 4], header[fixed - 3], header[fixed - 2], header[fixed - 1]]) as usize;
    if count > BACKUP_PACK_BLOBS_MAX || header.len() != fixed + count * ENTRY_BYTES {
        return Err(BackupError::Integrity("malformed pack header (entry count)".into()));
    }
    let mut entries = Vec::with_capacity(count);
    for raw in header[fixed..].chunks(ENTRY_BYTES) {
        let word = |at: usize| u32::from_be_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&raw[2..34]);
        let entry = PackEntry {
            blob_type: BlobType::from_byte(raw[0])
                .ok_or_else(|| BackupError::Integrity("a pack entry has an unknown type".into()))?,
            compression: raw[1],
            id,
            offset: word(34),
            stored_length: word(38),
            raw_length: word(42),
        };
        if u64::from(entry.offset) + u64::from(entry.stored_length) > header_start {
            return Err(BackupError::Integrity("a pack entry points past the blobs".into()));
        }
        entries.push(entry);
    }
    Ok(PackHeader { wrapped_key, entries })
}

/// Opens a stored blob, decompresses it and checks its id (the second check).
pub fn open_blob(
    cipher: &BlobCipher,
    keys: &crate::keys::RepositoryKeys,
    repository_id: &[u8; 16],
    blob_ref: &BlobRef,
    stored: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let identity = BlobIdentity {
        repository_id,
        blob_type: blob_ref.blob_type,
        id: &blob_ref.id,
        raw_length: blob_ref.raw_length,
        compression: blob_ref.compression,
    };
    let name =
        || format!("blob {} in pack {}", medvault_base::hex::encode(&blob_ref.id[..8]), pack_name(&blob_ref.pack));
    let payload = keys::open_blob(cipher, &identity, stored)
        .map_err(|_| BackupError::Integrity(format!("{} fails authentication", name())))?;
    let plaintext = match blob_ref.compression {
        COMPRESSION_NONE => payload,
        COMPRESSION_LZ4 => lz4_flex::block::decompress(&payload, blob_ref.raw_length as usize)
            .map_err(|_| BackupError::Integrity(format!("{} does not decompress", name())))?,
        _ => return Err(BackupError::Integrity(format!("{} has an unknown compression", name()))),
    };
    if plaintext.len() != blob_ref.raw_length as usize || keys.blob_id(blob_ref.blob_type, &plaintext) != blob_ref.id {
        return Err(BackupError::Integrity(format!("{} does not match its id", name())));
    }
    Ok(plaintext)
}

/// Whether opening a data blob recomputes its keyed id from its plaintext
/// (`backup-repository.md`, "Blob sealing", "Restore").
#[derive(Clone, Copy)]
pub enum IdCheck<'k> {
    /// Recompute and compare. The AEAD binds a blob to its id, but a holder of the recovery
    /// key can unwrap the pack's key and seal other bytes under the same id; only the
    /// recomputed id ties the content, through the trees, to the signed manifest.
    Recompute(&'k crate::keys::RepositoryKeys),
    /// The AEAD and the length only: for the streams whose every byte the ledger proves on
    /// its own (the leaf hashes against the signed root, each `versions` or `audit_blocks`
    /// row against its leaf by the store's `verify`). `Repository::verify` never uses it.
    ProvenByLedger,
}

/// [`open_blob`] without copying: `stored` (the sealed blob) is opened in place, and
/// decompressed into `spare` if it was compressed. Returns the buffer that holds the
/// plaintext and where; the other buffer is left in `spare` for reuse.
pub fn open_blob_into(
    cipher: &BlobCipher,
    id_check: IdCheck<'_>,
    repository_id: &[u8; 16],
    blob_ref: &BlobRef,
    mut stored: Vec<u8>,
    spare: &mut Vec<u8>,
) -> Result<(Vec<u8>, std::ops::Range<usize>), BackupError> {
    let identity = BlobIdentity {
        repository_id,
        blob_type: blob_ref.blob_type,
        id: &blob_ref.id,
        raw_length: blob_ref.raw_length,
        compression: blob_ref.compression,
    };
    let name =
        || format!("blob {} in pack {}", medvault_base::hex::encode(&blob_ref.id[..8]), pack_name(&blob_ref.pack));
    let sealed = keys::open_blob_in_place(cipher, &identity, &mut stored)
        .map_err(|_| BackupError::Integrity(format!("{} fails authentication", name())))?;
    let (plaintext, range) = match blob_ref.compression {
        COMPRESSION_NONE => (stored, sealed),
        COMPRESSION_LZ4 => {
            let raw_length = blob_ref.raw_length as usize;
            if raw_length > medvault_base::limits::BACKUP_CHUNK_BYTES_MAX {
                return Err(BackupError::Integrity(format!("{} is larger than a blob can be", name())));
            }
            spare.clear();
            spare.resize(raw_length, 0);
            let written = lz4_flex::block::decompress_into(&stored[sealed], spare)
                .map_err(|_| BackupError::Integrity(format!("{} does not decompress", name())))?;
            let plaintext = std::mem::replace(spare, stored);
            (plaintext, 0..written)
        }
        _ => return Err(BackupError::Integrity(format!("{} has an unknown compression", name()))),
    };
    let bytes = &plaintext[range.clone()];
    if bytes.len() != blob_ref.raw_length as usize {
        return Err(BackupError::Integrity(format!("{} does not have its length", name())));
    }
    if let IdCheck::Recompute(keys) = id_check {
        if keys.blob_id(blob_ref.blob_type, bytes) != blob_ref.id {
            return Err(BackupError::Integrity(format!("{} does not match its id", name())));
        }
    }
    Ok((plaintext, range))
}

/// `packs/<2 hex>/<64 hex>`.
pub fn pack_name(id: &[u8; 32]) -> String {
    let hex = medvault_base::hex::encode(id);
    format!("packs/{}/{hex}", &hex[..2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{RecoverySecret, RepositoryKeys};

    #[test]
    fn a_pack_round_trips_and_its_key_needs_the_recovery_key() {
        let recovery = RecoverySecret::generate().expect("key");
        let repository = [5u8; 16];
        let keys = RepositoryKeys {
            id_key: Secret32::random().expect("random"),
            metadata_key: Secret32::random().expect("random"),
        };
        let metadata = crate::keys::cipher(&keys.metadata_key);
        let mut pack = PackWriter::new(&recovery.public_key(), &repository, 1 << 20).expect("pack");
        let text = b"compressible compressible compressible compressible compressible".repeat(20);
        let data_ref = pack
            .add(&repository, &metadata, BlobType::Data, keys.blob_id(BlobType::Data, &text), &text, true)
            .expect("add");
        assert_eq!(data_ref.compression, COMPRESSION_LZ4);
        let noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let tree_ref = pack
            .add(&repository, &metadata, BlobType::Tree, keys.blob_id(BlobType::Tree, &noise), &noise, true)
            .expect("add");
        let bytes = pack.finish(&repository, &metadata).expect("finish");
        let (start, length) =
            header_location(bytes.len() as u64, &bytes[bytes.len() - trailer_bytes()..]).expect("trailer");
        let header = open_header(&metadata, &repository, &bytes[start as usize..start as usize + length], start)
            .expect("header");
        assert_eq!(header.entries.len(), 2);
        let pack_key = recovery.unwrap(&header.wrapped_key, "pack-key", &repository).expect("pack key");
        let data_cipher = crate::keys::cipher(&Secret32::from_slice_zeroizing(&mut pack_key.to_vec()).expect("32"));
        let stored = |r: &BlobRef| &bytes[r.offset as usize..(r.offset + r.stored_length) as usize];
        assert_eq!(open_blob(&data_cipher, &keys, &repository, &data_ref, stored(&data_ref)).expect("open"), text);
        assert_eq!(open_blob(&metadata, &keys, &repository, &tree_ref, stored(&tree_ref)).expect("open"), noise);
        // The metadata key does not open data, and a flipped byte is caught.
        assert!(open_blob(&metadata, &keys, &repository, &data_ref, stored(&data_ref)).is_err());
        let mut flipped = stored(&data_ref).to_vec();
        flipped[40] ^= 1;
        assert!(open_blob(&data_cipher, &keys, &repository, &data_ref, &flipped).is_err());
        let mut encoded = Vec::new();
        data_ref.encode(&mut encoded);
        assert_eq!(BlobRef::decode(&encoded).expect("decode"), data_ref);
    }
}
