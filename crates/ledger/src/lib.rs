//! medvault's tamper-evident ledger: a Merkle log over every committed version, signed
//! checkpoints and witness cosignatures. Knows nothing of FHIR, HTTP or storage.
//!
//! - [`hash`]: RFC 9162 §2.1.1 hashing (leaves, interior nodes, the empty tree).
//! - [`leaf`]: the leaf format, version 1 (`docs/format/ledger.md`).
//! - [`tree`]: the tree over a [`NodeStore`] of complete subtrees: appending, roots,
//!   inclusion and consistency proofs, and a streaming [`RootBuilder`].
//! - [`proof`]: the RFC 9162 §2.1.3.2 and §2.1.4.2 verifiers.
//! - [`checkpoint`]: the C2SP `tlog-checkpoint` body (`docs/format/checkpoint.md`).
//! - [`note`]: C2SP signed notes with Ed25519 signatures and `tlog-cosignature` v1
//!   witness cosignatures.
//!
//! Architecture Invariant: this crate depends on no other medvault crate, reads no clock
//! and draws no randomness; the caller passes times and key seeds in.

pub mod checkpoint;
pub mod hash;
pub mod leaf;
pub mod note;
pub mod proof;
pub mod tree;

pub use checkpoint::Checkpoint;
pub use hash::{leaf_hash, node_hash, Hash, EMPTY_ROOT};
pub use leaf::{AuditBlockLeaf, LeafData, LeafKind, ResourceVersionFields};
pub use note::{
    cosign, key_id, open_checkpoint, open_note, sign_note, Cosignature, OpenedCheckpoint, OpenedNote, SignatureType,
    SigningKey, UnknownSignature, VerifiedSignature, Verifier,
};
pub use proof::{verify_consistency, verify_inclusion};
pub use tree::{append_nodes, consistency_proof, inclusion_proof, root, MemoryNodeStore, NodeStore, RootBuilder};

/// Failures of the leaf format and of the tree over its node store.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A leaf could not be built: a field is empty, too long or has a forbidden character.
    #[error("invalid leaf: {0}")]
    InvalidLeaf(&'static str),
    /// Stored leaf bytes do not have the documented layout (unknown format or kind, bad
    /// length, forbidden character, trailing bytes): the ledger row was altered or corrupted.
    #[error("malformed leaf bytes: {0}")]
    MalformedLeaf(&'static str),
    /// The node store lacks a complete subtree that the tree size says must exist: the
    /// ledger table was truncated or edited, or the size asked for is larger than the tree.
    #[error("the node store has no node at level {level}, index {index}")]
    MissingNode { level: u8, index: u64 },
    /// Appending a leaf at an index that already holds one (a replayed or duplicated append).
    #[error("the ledger already has a leaf at index {index}")]
    LeafExists { index: u64 },
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof asked from a larger tree to a smaller one.
    #[error("tree size {old_size} is larger than tree size {new_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    /// The tree holds 2^64 - 1 leaves and cannot grow.
    #[error("the ledger is full")]
    TreeFull,
    /// The node store itself failed (I/O, database error).
    #[error("node store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// Why an inclusion or consistency proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is at or beyond the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The old tree is larger than the new one: the log went backwards (a rollback).
    #[error("the old tree size {old_size} is larger than the new tree size {new_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    /// A consistency proof between two different non-empty sizes has no hashes.
    #[error("the consistency proof is empty")]
    EmptyProof,
    /// The proof has more hashes than the sizes allow.
    #[error("the proof has {len} hashes, more than the tree sizes allow")]
    ProofTooLong { len: usize },
    /// The proof has fewer hashes than the sizes require.
    #[error("the proof has {len} hashes, fewer than the tree sizes require")]
    ProofTooShort { len: usize },
    /// The root computed from the leaf and the inclusion proof is not the expected root.
    #[error("the inclusion proof leads to another root: the leaf is not at that index in that tree")]
    RootMismatch,
    /// The old root computed from the consistency proof is not the given old root.
    #[error("the consistency proof does not lead to the old root")]
    OldRootMismatch,
    /// The new root computed from the consistency proof is not the given new root: the
    /// new tree does not extend the old one (history was rewritten).
    #[error("the consistency proof does not lead to the new root: the new tree does not extend the old one")]
    NewRootMismatch,
}

/// Failures of checkpoints, signed notes, keys and signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note text does not follow the C2SP signed-note syntax.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// The checkpoint body does not follow the C2SP tlog-checkpoint syntax.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The note is larger than [`note::NOTE_BYTES_MAX`].
    #[error("the note has {bytes} bytes, more than the {max} allowed")]
    TooLarge { bytes: usize, max: usize },
    /// The note has more signature lines than [`note::NOTE_SIGNATURES_MAX`].
    #[error("the note has more than {max} signature lines")]
    TooManySignatures { max: usize },
    /// A key or signer name is empty or contains a space, a plus sign or a control character.
    #[error("invalid key name: {0}")]
    InvalidName(&'static str),
    /// A verifier key string is not `<name>+<8 hex digits>+<base64(type || key)>` with a
    /// supported type and a matching key ID.
    #[error("invalid verifier key: {0}")]
    InvalidVerifierKey(&'static str),
    /// The 32-byte seed was refused by the Ed25519 implementation.
    #[error("invalid Ed25519 seed")]
    InvalidSeed,
    /// A cosignature timestamp above 2^63 - 1.
    #[error("cosignature timestamp {time_s} is above 2^63 - 1")]
    InvalidTimestamp { time_s: u64 },
    /// Two configured verifiers share a name and key ID but not a key.
    #[error("two verifier keys share the name {name} and key ID {key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    /// A signature by a known key does not verify: the note was altered or forged.
    #[error("the signature by {name} (key ID {key_id:08x}) does not verify")]
    InvalidSignature { name: String, key_id: u32 },
    /// No signature in the note is by a known key; the note must not be trusted.
    #[error("no signature by a known key (signed by: {})", .unknown_signers.join(", "))]
    Unverified { unknown_signers: Vec<String> },
    /// The checkpoint is not signed by the log's own key (only by witnesses).
    #[error("the checkpoint has no valid signature by the log key {name}")]
    MissingLogSignature { name: String },
}
