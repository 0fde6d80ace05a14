//! Ransomware-proof backups of a medvault store (`docs/format/backup-repository.md`):
//! encrypted, deduplicated, append-only repositories whose snapshots are bound to signed
//! ledger checkpoints and restored with proof.
//!
//! - [`chunker`]: content-defined chunking with a keyed gear table.
//! - [`keys`]: the offline recovery and prune keys, wrapping, blob ids and sealing.
//! - [`pack`]: packs of sealed blobs and blob references.
//! - [`manifest`]: the config, manifests and erasure records, signed by the store.
//! - [`storage`]: the append-only [`storage::ObjectStore`] and the directory backend.
//! - [`repository`]: init, create, list, restore, verify, prune.
//!
//! Architecture invariants:
//! - the writer holds an `ObjectStore`, which cannot overwrite or delete; only
//!   [`repository::Repository::prune`] deletes, and only after a prune record signed with
//!   the offline prune key is stored;
//! - the server never holds a key that opens data blobs: each pack's key is wrapped to the
//!   offline recovery key and dropped;
//! - a snapshot's order and time come from its signed checkpoint, never from a clock.

pub mod chunker;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod repository;
pub mod storage;

pub use keys::{PruneKey, RecoverySecret};
pub use repository::{CreateReport, Repository, RestoreReport, Snapshot, VerifyFinding, VerifyReport};
pub use storage::{DirectoryStore, ObjectStore, PruneStore, StorageError};

/// Failures of backup operations. Messages name objects, never contents or keys.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] medvault_store::StoreError),
    /// A repository object failed authentication, its id or hash, or its layout: damaged or
    /// altered. The message names the object.
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// A config, manifest or record is not signed by the pinned store key.
    #[error("refused: {0}")]
    Forged(String),
    /// The snapshot is older than a checkpoint a witness holds: a planted old backup.
    #[error("refused: {0}")]
    Stale(String),
    /// A key file is missing, malformed, too widely readable, or not this repository's.
    #[error("{0}")]
    Key(String),
    /// The repository or the target is not in the state the operation needs.
    #[error("{0}")]
    State(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("I/O error: {0}")]
    Io(String),
}
