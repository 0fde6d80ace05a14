//! The storage engine trait: rows in, rows out, one transaction per job, nothing sealed or
//! opened here. SQLite implements it ([`crate::sqlite`]); PostgreSQL can implement it later
//! without changing the server.
//!
//! API boundary: engines never see plaintext, keys or resource ids — only keyed resource
//! keys, sealed bytes and wrapped keys.

use crate::StoreError;

/// A keyed resource key (see `docs/format/key-hierarchy.md`).
pub type ResourceKey = [u8; 16];

/// One stored version, as an engine returns it.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// Position in the store's global order of versions (the system history order).
    pub seq: i64,
    pub resource_key: ResourceKey,
    pub resource_type: String,
    pub version: u64,
    pub key_id: u64,
    pub recorded_ms: i64,
    pub deleted: bool,
    pub sealed: Vec<u8>,
    /// Position of this version's leaf in the ledger.
    pub leaf_index: u64,
    /// The client that wrote it.
    pub author: String,
}

/// A signed checkpoint of the ledger.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub tree_size: u64,
    pub root: [u8; 32],
    /// The C2SP signed note.
    pub note: String,
    pub created_ms: i64,
}

/// Signs a checkpoint for the writer, inside the transaction that grows the ledger, so
/// that no write is acknowledged before a signed checkpoint covers it. The store supplies
/// it; the engine never holds the signing key.
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    fn sign(&self, tree_size: u64, root: &[u8; 32]) -> Result<String, String>;

    /// Benchmark builds only: write versions without ledger leaves or checkpoints, so the
    /// ledger's cost can be measured. Only `Store::danger_open_without_ledger_for_benchmark`
    /// installs a signer that says yes.
    fn danger_skips_ledger(&self) -> bool {
        false
    }

    /// Seals a block of audit records that will be ledger leaf `leaf_index`
    /// (`docs/format/audit.md`). The writer holds no key: the store's signer does it.
    fn seal_audit_block(&self, leaf_index: u64, block: &[u8]) -> Result<Vec<u8>, String> {
        let _ = (leaf_index, block);
        Err("this signer seals no audit blocks".into())
    }

    /// Seals frame `sequence` of the audit journal (`docs/format/audit.md`).
    fn seal_audit_journal(&self, sequence: u64, frame: &[u8]) -> Result<Vec<u8>, String> {
        let _ = (sequence, frame);
        Err("this signer seals no audit journal".into())
    }

    /// Opens frame `sequence` of the audit journal; an altered or moved frame fails.
    fn open_audit_journal(&self, sequence: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let _ = (sequence, sealed);
        Err("this signer opens no audit journal".into())
    }
}

/// One audit record on its way to the writer: its encoded bytes (sealed there, in a block
/// with the rest of its group commit), when it happened, and the compartment tokens of the
/// patients it names (the index auditors and patients query by).
#[derive(Debug, Clone)]
pub struct PendingAudit {
    pub recorded_ms: i64,
    pub patients: Vec<[u8; 32]>,
    pub record: Vec<u8>,
}

/// A stored block of audit records.
#[derive(Debug, Clone)]
pub struct AuditBlockRow {
    /// The block's ledger leaf index.
    pub seq: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u32,
    pub sealed: Vec<u8>,
}

/// Where an indexed audit record is: its block and position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSlot {
    pub recorded_ms: i64,
    pub block: u64,
    pub slot: u32,
}

/// Called once with the audit block's leaf index when the group commits, or the error.
pub type AuditReply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentState {
    pub version: u64,
    pub deleted: bool,
    pub key_id: u64,
}

/// A wrapped key row.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub key_id: u64,
    pub purpose: u8,
    pub compartment: Option<[u8; 32]>,
    pub wrapped: Option<Vec<u8>>,
}

/// An access-token row; the token itself is never stored.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub digest: [u8; 32],
    pub client: String,
    pub role: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// SMART scopes granted to the client, space-separated (empty: none).
    pub scopes: String,
}

/// The state a write expects to find, checked inside the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No row for this resource key.
    Absent,
    /// The current version is this one (deleted or not).
    Current(u64),
}

/// Which data key seals a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef {
    Existing(u64),
    /// Index into [`VersionJob::new_keys`].
    New(usize),
}

#[derive(Debug, Clone)]
pub struct NewKey {
    pub purpose: u8,
    /// The compartment token of a patient data key; `None` for store-wide keys.
    pub compartment: Option<[u8; 32]>,
    pub wrapped: Vec<u8>,
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewVersion {
    pub resource_key: ResourceKey,
    pub resource_type: String,
    pub expected: Expected,
    pub version: u64,
    pub key: KeyRef,
    pub recorded_ms: i64,
    pub deleted: bool,
    pub sealed: Vec<u8>,
    /// The ledger leaf hash of this version (`docs/format/ledger.md`).
    pub leaf_hash: [u8; 32],
    pub author: String,
    /// For CareTeam and Encounter versions: the care relationships this version states,
    /// replacing those of the resource's previous version. `None` for other types.
    pub care_links: Option<Vec<CareLink>>,
    /// The search index documents of this version, one per index generation the job was
    /// prepared for ([`VersionJob::search_generations`]); they replace the resource's
    /// previous ones in the same savepoint. A deletion carries empty documents.
    pub search: Vec<SearchDoc>,
}

/// One resource's keyed search tokens in one index generation (`docs/format/index-token.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDoc {
    pub generation: u32,
    /// Sorted, without duplicates.
    pub tokens: Vec<SearchToken>,
}

/// A keyed search token: 16 bytes (a benchmark build can also store plaintext tokens,
/// `bench-plaintext-index`, which are longer).
pub type SearchToken = Vec<u8>;

/// The index generations a write indexes into: the active one and the one being built.
/// The writer checks them inside its transaction; a job prepared for others is re-prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchGenerations {
    pub active: Option<u32>,
    pub building: Option<u32>,
}

impl SearchGenerations {
    pub fn iter(self) -> impl Iterator<Item = u32> {
        self.active.into_iter().chain(self.building.filter(|b| Some(*b) != self.active))
    }
}

/// A practitioner cares for a patient (both as keyed tokens, `docs/format/accounts.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CareLink {
    pub practitioner: [u8; 32],
    pub patient: [u8; 32],
}

/// Versions that commit together or not at all (one resource write, or one transaction).
#[derive(Debug, Clone, Default)]
pub struct VersionJob {
    pub new_keys: Vec<NewKey>,
    pub versions: Vec<NewVersion>,
    /// (user id, patient compartment token): a clinician who registers a new patient is
    /// assigned to them in the same commit.
    pub assignments: Vec<(i64, [u8; 32])>,
    /// The audit records of this write: committed with it or not at all.
    pub audit: Vec<PendingAudit>,
    /// The index generations the versions' search documents were made for.
    pub search_generations: SearchGenerations,
}

/// What a committed version job produced.
#[derive(Debug, Clone)]
pub struct VersionReceipt {
    /// `seq` of each version, in job order.
    pub seqs: Vec<i64>,
    /// Key id assigned to each new key, in job order.
    pub new_key_ids: Vec<u64>,
    /// Ledger leaf index of each version, in job order.
    pub leaf_indexes: Vec<u64>,
    /// Size of the signed checkpoint that covers this job.
    pub checkpoint_size: u64,
}

/// Why a version job did not commit; nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobConflict {
    /// The version at `index` found another state than it expected (a concurrent write).
    Stale { index: usize, found: Option<u64> },
    /// A new key's compartment already has a key (a concurrent first write for that patient).
    KeyExists { index: usize },
    /// The search index generations changed since the job was prepared (a rebuild started
    /// or finished): its search documents are for the wrong generations.
    SearchGenerationsChanged,
}

/// Which versions a history page covers.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(ResourceKey),
}

/// A page of history: newest first, strictly before `before_seq`, at or after `since_ms`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPage {
    pub count: u32,
    pub before_seq: Option<i64>,
    pub since_ms: Option<i64>,
}

/// Counts for `status`.
#[derive(Debug, Clone, Default)]
pub struct EngineCounts {
    /// (resource type, current resources not deleted, versions).
    pub by_type: Vec<(String, u64, u64)>,
    pub data_keys: u64,
    pub tokens_active: u64,
    /// Audit blocks (ledger leaves) and the records in them.
    pub audit_blocks: u64,
    pub audit_records: u64,
}

pub trait Engine: Send + Sync + std::fmt::Debug {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn current(&self, resource_key: &ResourceKey) -> Result<Option<VersionRow>, StoreError>;
    /// The current version number, deleted flag and data key of a resource, without its bytes.
    fn current_state(&self, resource_key: &ResourceKey) -> Result<Option<CurrentState>, StoreError>;
    fn version(&self, resource_key: &ResourceKey, version: u64) -> Result<Option<VersionRow>, StoreError>;
    fn history(&self, scope: &HistoryScope, page: HistoryPage) -> Result<Vec<VersionRow>, StoreError>;
    fn key_by_id(&self, key_id: u64) -> Result<Option<KeyRow>, StoreError>;
    fn key_by_compartment(&self, compartment: &[u8; 32]) -> Result<Option<KeyRow>, StoreError>;
    fn keys_by_purpose(&self, purpose: u8) -> Result<Vec<KeyRow>, StoreError>;

    /// Commits a version job, group-committed with others; returns after it is durable.
    fn commit_versions(&self, job: VersionJob) -> Result<Result<VersionReceipt, JobConflict>, StoreError>;
    /// Commits independent jobs (each all-or-nothing on its own), sharing group commits.
    fn commit_versions_each(
        &self,
        jobs: Vec<VersionJob>,
    ) -> Vec<Result<Result<VersionReceipt, JobConflict>, StoreError>>;

    fn insert_token(&self, token: TokenRow) -> Result<(), StoreError>;
    fn token(&self, digest: &[u8; 32]) -> Result<Option<TokenRow>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    /// Revokes every live token of `client`; returns how many.
    fn revoke_tokens(&self, client: &str, at_ms: i64) -> Result<u64, StoreError>;

    fn counts(&self) -> Result<EngineCounts, StoreError>;

    /// Installs the checkpoint signer; the writer refuses to commit versions without one.
    fn set_checkpoint_signer(&self, signer: std::sync::Arc<dyn CheckpointSigner>) -> Result<(), StoreError>;
    /// A complete-subtree hash of the ledger (level 0 = leaf hashes).
    fn ledger_node(&self, level: u8, index: u64) -> Result<Option<[u8; 32]>, StoreError>;
    /// Leaves in the ledger.
    fn ledger_size(&self) -> Result<u64, StoreError>;
    fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError>;
    fn checkpoint(&self, tree_size: u64) -> Result<Option<CheckpointRow>, StoreError>;
    /// Every checkpoint, smallest first.
    fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError>;
    /// Versions in ledger order, from `first_leaf`, at most `count`.
    fn versions_by_leaf(&self, first_leaf: u64, count: u32) -> Result<Vec<VersionRow>, StoreError>;
    /// Number of version rows.
    fn version_count(&self) -> Result<u64, StoreError>;
    /// (resource key, current version, deleted) of every resource, for `verify`.
    fn current_versions(&self) -> Result<Vec<(ResourceKey, u64, bool)>, StoreError>;
}
