//! The leaf format, version 1 (`docs/format/ledger.md`): what one ledger entry commits to.
//!
//! Encoding is canonical: every accepted byte string decodes to exactly one [`LeafData`]
//! and encodes back to the same bytes, so a leaf hash names one leaf and nothing else.

use crate::hash::{leaf_hash, Hash};
use crate::LedgerError;

/// The only leaf format this code writes or reads.
pub const LEAF_FORMAT_V1: u8 = 0x01;
/// Longest resource type in bytes.
pub const RESOURCE_TYPE_BYTES_MAX: usize = 64;
/// Longest resource id in bytes (FHIR ids are at most 64 characters).
pub const RESOURCE_ID_BYTES_MAX: usize = 64;
/// Longest author (client name) in bytes, equal to the store's `CLIENT_NAME_BYTES_MAX`.
pub const AUTHOR_BYTES_MAX: usize = 128;
/// Longest encoded leaf in bytes.
pub const LEAF_BYTES_MAX: usize =
    1 + 1 + 2 + RESOURCE_TYPE_BYTES_MAX + 2 + RESOURCE_ID_BYTES_MAX + 8 + 32 + 1 + 8 + 2 + AUTHOR_BYTES_MAX;

const KIND_RESOURCE_VERSION: u8 = 0x01;
/// A block of audit records (`docs/format/audit.md`), [`AuditBlockLeaf`].
const KIND_AUDIT_BLOCK: u8 = 0x02;
/// Most audit records one block leaf may count.
pub const AUDIT_BLOCK_COUNT_MAX: u32 = 65_536;
/// The length of an audit block leaf.
pub const AUDIT_BLOCK_LEAF_BYTES: usize = 1 + 1 + 8 + 8 + 4 + 32;

/// What a leaf records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeafKind {
    /// A committed resource version (kind byte `0x01`).
    ResourceVersion,
}

/// The fields of a resource-version leaf, named so that none can be swapped by position.
#[derive(Debug, Clone, Copy)]
pub struct ResourceVersionFields<'a> {
    /// Resource type, printable ASCII without spaces, 1..=64 bytes.
    pub resource_type: &'a str,
    /// Resource id, printable ASCII without spaces, 1..=64 bytes.
    pub resource_id: &'a str,
    pub version: u64,
    /// SHA-256 of the sealed bytes stored for this version.
    pub sealed_sha256: Hash,
    pub deleted: bool,
    /// When the version was committed, milliseconds since 1970-01-01T00:00:00Z.
    pub recorded_ms: i64,
    /// The client that wrote the version: UTF-8 without control characters, 1..=128 bytes.
    pub author: &'a str,
}

/// One ledger entry, validated: it always encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafData {
    kind: LeafKind,
    resource_type: String,
    resource_id: String,
    version: u64,
    sealed_sha256: Hash,
    deleted: bool,
    recorded_ms: i64,
    author: String,
}

impl LeafData {
    /// A leaf for one committed resource version; refuses fields the format cannot hold.
    pub fn resource_version(fields: ResourceVersionFields<'_>) -> Result<Self, LedgerError> {
        Self::from_fields(fields).map_err(LedgerError::InvalidLeaf)
    }

    fn from_fields(fields: ResourceVersionFields<'_>) -> Result<Self, &'static str> {
        check_fields(&fields)?;
        Ok(Self {
            kind: LeafKind::ResourceVersion,
            resource_type: fields.resource_type.to_owned(),
            resource_id: fields.resource_id.to_owned(),
            version: fields.version,
            sealed_sha256: fields.sealed_sha256,
            deleted: fields.deleted,
            recorded_ms: fields.recorded_ms,
            author: fields.author.to_owned(),
        })
    }

    pub fn kind(&self) -> LeafKind {
        self.kind
    }

    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn sealed_sha256(&self) -> &Hash {
        &self.sealed_sha256
    }

    pub fn deleted(&self) -> bool {
        self.deleted
    }

    pub fn recorded_ms(&self) -> i64 {
        self.recorded_ms
    }

    pub fn author(&self) -> &str {
        &self.author
    }

    /// The version 1 bytes, as documented in `docs/format/ledger.md`.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(LEAF_BYTES_MAX);
        bytes.push(LEAF_FORMAT_V1);
        bytes.push(match self.kind {
            LeafKind::ResourceVersion => KIND_RESOURCE_VERSION,
        });
        push_string(&mut bytes, &self.resource_type);
        push_string(&mut bytes, &self.resource_id);
        bytes.extend_from_slice(&self.version.to_be_bytes());
        bytes.extend_from_slice(&self.sealed_sha256);
        bytes.push(u8::from(self.deleted));
        bytes.extend_from_slice(&self.recorded_ms.to_be_bytes());
        push_string(&mut bytes, &self.author);
        bytes
    }

    /// Parses version 1 bytes, refusing anything [`encode`](Self::encode) would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, LedgerError> {
        decode_v1(bytes).map_err(LedgerError::MalformedLeaf)
    }

    /// `SHA-256(0x00 || encode())`: the hash this leaf contributes to the tree.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

/// A ledger leaf for one block of audit records (kind `0x02`): the block's time span,
/// how many records it holds, and the SHA-256 of its sealed bytes. Like a resource leaf,
/// it binds the sealed bytes, so checking it needs no key.
///
/// ```text
/// offset  size  field
/// 0       1     format = 0x01
/// 1       1     kind = 0x02 (audit block)
/// 2       8     first recorded: i64, ms since 1970-01-01T00:00:00Z, big-endian
/// 10      8     last recorded: i64, ≥ first
/// 18      4     count: u32, 1..=65,536
/// 22      32    SHA-256 of the sealed block bytes
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditBlockLeaf {
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u32,
    pub sealed_sha256: Hash,
}

impl AuditBlockLeaf {
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        if self.count == 0 || self.count > AUDIT_BLOCK_COUNT_MAX {
            return Err(LedgerError::InvalidLeaf("an audit block counts 1 to 65,536 records"));
        }
        if self.last_ms < self.first_ms {
            return Err(LedgerError::InvalidLeaf("an audit block ends before it starts"));
        }
        let mut bytes = Vec::with_capacity(AUDIT_BLOCK_LEAF_BYTES);
        bytes.push(LEAF_FORMAT_V1);
        bytes.push(KIND_AUDIT_BLOCK);
        bytes.extend_from_slice(&self.first_ms.to_be_bytes());
        bytes.extend_from_slice(&self.last_ms.to_be_bytes());
        bytes.extend_from_slice(&self.count.to_be_bytes());
        bytes.extend_from_slice(&self.sealed_sha256);
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, LedgerError> {
        let invalid = |why| LedgerError::InvalidLeaf(why);
        if bytes.len() != AUDIT_BLOCK_LEAF_BYTES {
            return Err(invalid("an audit block leaf is 54 bytes"));
        }
        if bytes[0] != LEAF_FORMAT_V1 || bytes[1] != KIND_AUDIT_BLOCK {
            return Err(invalid("not an audit block leaf of format 1"));
        }
        let i64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
        let (Some(first_ms), Some(last_ms)) = (i64_at(2), i64_at(10)) else { return Err(invalid("truncated")) };
        let count = bytes.get(18..22).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
        let sealed_sha256: Hash = bytes.get(22..54).and_then(|b| b.try_into().ok()).ok_or(invalid("truncated"))?;
        let leaf = Self { first_ms, last_ms, count, sealed_sha256 };
        // Canonical: only what `encode` accepts decodes.
        leaf.encode()?;
        Ok(leaf)
    }

    pub fn leaf_hash(&self) -> Result<Hash, LedgerError> {
        Ok(leaf_hash(&self.encode()?))
    }
}

fn push_string(bytes: &mut Vec<u8>, value: &str) {
    let length = u16::try_from(value.len()).expect("leaf strings are checked at construction to be at most 128 bytes");
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(value.as_bytes());
}

fn check_fields(fields: &ResourceVersionFields<'_>) -> Result<(), &'static str> {
    if !is_short_printable_ascii(fields.resource_type, RESOURCE_TYPE_BYTES_MAX) {
        return Err("resource type must be 1 to 64 bytes of printable ASCII without spaces");
    }
    if !is_short_printable_ascii(fields.resource_id, RESOURCE_ID_BYTES_MAX) {
        return Err("resource id must be 1 to 64 bytes of printable ASCII without spaces");
    }
    check_author(fields.author)
}

fn is_short_printable_ascii(value: &str, bytes_max: usize) -> bool {
    !value.is_empty() && value.len() <= bytes_max && value.bytes().all(|byte| byte.is_ascii_graphic())
}

fn check_author(author: &str) -> Result<(), &'static str> {
    if author.is_empty() || author.len() > AUTHOR_BYTES_MAX {
        return Err("author must be 1 to 128 bytes");
    }
    if author.chars().any(char::is_control) {
        return Err("author must not contain control characters");
    }
    Ok(())
}

/// A cursor over untrusted bytes that never reads past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < count {
            return Err("leaf bytes end early");
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    fn string(&mut self, bytes_max: usize) -> Result<&'a str, &'static str> {
        let length = usize::from(u16::from_be_bytes(self.array()?));
        if length > bytes_max {
            return Err("string longer than its limit");
        }
        std::str::from_utf8(self.take(length)?).map_err(|_| "string is not UTF-8")
    }
}

fn decode_v1(bytes: &[u8]) -> Result<LeafData, &'static str> {
    let mut reader = Reader { rest: bytes };
    if reader.byte()? != LEAF_FORMAT_V1 {
        return Err("unknown leaf format version");
    }
    match reader.byte()? {
        KIND_RESOURCE_VERSION => {}
        KIND_AUDIT_BLOCK => return Err("leaf kind 2 is an audit block, not a resource version"),
        _ => return Err("unknown leaf kind"),
    }
    let resource_type = reader.string(RESOURCE_TYPE_BYTES_MAX)?;
    let resource_id = reader.string(RESOURCE_ID_BYTES_MAX)?;
    let version = u64::from_be_bytes(reader.array()?);
    let sealed_sha256: Hash = reader.array()?;
    let deleted = match reader.byte()? {
        0 => false,
        1 => true,
        _ => return Err("deleted flag is neither 0 nor 1"),
    };
    let recorded_ms = i64::from_be_bytes(reader.array()?);
    let author = reader.string(AUTHOR_BYTES_MAX)?;
    if !reader.rest.is_empty() {
        return Err("trailing bytes after the author");
    }
    let fields =
        ResourceVersionFields { resource_type, resource_id, version, sealed_sha256, deleted, recorded_ms, author };
    LeafData::from_fields(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ResourceVersionFields<'static> {
        ResourceVersionFields {
            resource_type: "Patient",
            resource_id: "example-1",
            version: 3,
            sealed_sha256: [0xab; 32],
            deleted: false,
            recorded_ms: 1_700_000_000_123,
            author: "ward-7 client",
        }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        for deleted in [false, true] {
            for recorded_ms in [i64::MIN, -1, 0, 1_700_000_000_123, i64::MAX] {
                let leaf = LeafData::resource_version(ResourceVersionFields { deleted, recorded_ms, ..fields() })
                    .expect("valid");
                let bytes = leaf.encode();
                assert!(bytes.len() <= LEAF_BYTES_MAX);
                let decoded = LeafData::decode(&bytes).expect("decodes");
                assert_eq!(decoded, leaf);
                assert_eq!(decoded.encode(), bytes);
                assert_eq!(decoded.leaf_hash(), leaf_hash(&bytes));
            }
        }
        let longest = LeafData::resource_version(ResourceVersionFields {
            resource_type: &"T".repeat(64),
            resource_id: &"i".repeat(64),
            author: &"é".repeat(64),
            ..fields()
        })
        .expect("valid");
        assert_eq!(longest.encode().len(), LEAF_BYTES_MAX);
    }

    #[test]
    fn refuses_fields_the_format_cannot_hold() {
        let cases = [
            ResourceVersionFields { resource_type: "", ..fields() },
            ResourceVersionFields { resource_type: &"T".repeat(65), ..fields() },
            ResourceVersionFields { resource_type: "Pat ient", ..fields() },
            ResourceVersionFields { resource_id: "", ..fields() },
            ResourceVersionFields { resource_id: &"i".repeat(65), ..fields() },
            ResourceVersionFields { resource_id: "é", ..fields() },
            ResourceVersionFields { resource_id: "a\nb", ..fields() },
            ResourceVersionFields { author: "", ..fields() },
            ResourceVersionFields { author: &"a".repeat(129), ..fields() },
            ResourceVersionFields { author: "a\u{7}b", ..fields() },
            ResourceVersionFields { author: "a\u{85}b", ..fields() },
        ];
        for case in cases {
            assert!(matches!(LeafData::resource_version(case), Err(LedgerError::InvalidLeaf(_))), "{case:?}");
        }
    }

    #[test]
    fn refuses_every_malformed_encoding() {
        let bytes = LeafData::resource_version(fields()).expect("valid").encode();
        for length in 0..bytes.len() {
            assert!(LeafData::decode(&bytes[..length]).is_err(), "truncated to {length}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(LeafData::decode(&trailing).is_err());
        let patch = |offset: usize, value: u8| {
            let mut patched = bytes.clone();
            patched[offset] = value;
            LeafData::decode(&patched)
        };
        assert!(patch(0, 0x02).is_err(), "format 2");
        assert!(patch(1, 0x02).is_err(), "reserved kind");
        assert!(patch(1, 0x00).is_err(), "unknown kind");
        let deleted_offset = 2 + 2 + 7 + 2 + 9 + 8 + 32;
        assert_eq!(bytes[deleted_offset], 0);
        assert!(patch(deleted_offset, 2).is_err(), "deleted flag 2");
        assert!(patch(4, b' ').is_err(), "space in the type");
        assert!(patch(3, 0).is_err(), "empty type, misaligned rest");
        // Every single-bit change either fails to decode or decodes to another leaf.
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[index] ^= 1 << bit;
                if let Ok(other) = LeafData::decode(&flipped) {
                    assert_eq!(other.encode(), flipped);
                    assert_ne!(other.leaf_hash(), leaf_hash(&bytes));
                }
            }
        }
    }
}

#[cfg(test)]
mod audit_block_tests {
    use super::*;

    fn leaf() -> AuditBlockLeaf {
        AuditBlockLeaf { first_ms: 1_767_225_600_000, last_ms: 1_767_225_600_250, count: 3, sealed_sha256: [0xab; 32] }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let bytes = leaf().encode().expect("encodes");
        assert_eq!(bytes.len(), AUDIT_BLOCK_LEAF_BYTES);
        assert_eq!(&bytes[..2], &[0x01, 0x02]);
        assert_eq!(AuditBlockLeaf::decode(&bytes).expect("decodes"), leaf());
        // Neither kind of leaf decodes as the other.
        assert!(LeafData::decode(&bytes).is_err());
    }

    #[test]
    fn refuses_what_the_format_cannot_hold() {
        assert!(AuditBlockLeaf { count: 0, ..leaf() }.encode().is_err());
        assert!(AuditBlockLeaf { count: AUDIT_BLOCK_COUNT_MAX + 1, ..leaf() }.encode().is_err());
        assert!(AuditBlockLeaf { last_ms: 0, ..leaf() }.encode().is_err());
        let bytes = leaf().encode().expect("encodes");
        for cut in 0..bytes.len() {
            assert!(AuditBlockLeaf::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(AuditBlockLeaf::decode(&longer).is_err());
        let mut other_kind = bytes;
        other_kind[1] = 0x01;
        assert!(AuditBlockLeaf::decode(&other_kind).is_err());
    }
}
