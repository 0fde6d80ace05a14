//! The store's side of the ledger (`docs/format/ledger.md`, `docs/format/checkpoint.md`):
//! the signer the writer calls inside each group commit, and the proofs clients ask for.
//!
//! Only node hashes are persisted; leaf bytes name resource ids, so they are rebuilt from
//! the opened version whenever a proof or `verify` needs them.

use medvault_ledger::{Checkpoint, Hash, LeafData, NodeStore, ResourceVersionFields, SigningKey, Verifier};

use crate::engine::{CheckpointRow, CheckpointSigner, Engine, VersionRow};
use crate::{Store, StoreError};

/// Signs checkpoints with the store's ledger key; its origin names the log.
pub struct LedgerSigner {
    origin: String,
    key: SigningKey,
    store_id: [u8; 16],
    audit: std::sync::Arc<medvault_crypto::Sealer>,
    /// Nonces of audit journal frames, sealed on the request's path: no system call each.
    journal_nonces: medvault_crypto::xchacha::NonceSequence,
}

impl std::fmt::Debug for LedgerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSigner").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl LedgerSigner {
    pub fn new(
        origin: String,
        key: SigningKey,
        store_id: [u8; 16],
        audit: std::sync::Arc<medvault_crypto::Sealer>,
    ) -> Result<Self, StoreError> {
        let journal_nonces = medvault_crypto::xchacha::NonceSequence::new()?;
        Ok(Self { origin, key, store_id, audit, journal_nonces })
    }
}

impl CheckpointSigner for LedgerSigner {
    fn sign(&self, tree_size: u64, root: &[u8; 32]) -> Result<String, String> {
        let body = Checkpoint::new(&self.origin, tree_size, *root).map_err(|e| e.to_string())?.to_body();
        medvault_ledger::sign_note(&body, &self.origin, &self.key).map_err(|e| e.to_string())
    }

    fn seal_audit_block(&self, leaf_index: u64, block: &[u8]) -> Result<Vec<u8>, String> {
        let key = crate::audit::block_key(leaf_index);
        let identity = crate::audit::block_identity(&self.store_id, &key);
        self.audit.seal(&identity, block).map_err(|e| e.to_string())
    }

    fn seal_audit_journal(&self, sequence: u64, frame: &[u8]) -> Result<Vec<u8>, String> {
        let key = crate::journal::frame_key(sequence);
        self.audit
            .seal_sequenced(&self.journal_nonces, &journal_identity(&self.store_id, &key), frame)
            .map_err(|e| e.to_string())
    }

    fn open_audit_journal(&self, sequence: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let key = crate::journal::frame_key(sequence);
        self.audit.open(&journal_identity(&self.store_id, &key), sealed).map_err(|e| e.to_string())
    }
}

fn journal_identity<'a>(store_id: &'a [u8; 16], key: &'a [u8; 16]) -> medvault_crypto::RecordIdentity<'a> {
    medvault_crypto::RecordIdentity {
        store_id,
        resource_type: crate::journal::AUDIT_JOURNAL_TYPE,
        resource_key: key,
        version: 1,
        deleted: false,
    }
}

/// A signer for benchmark stores that keep no ledger (`danger-benchmark-unsealed` feature).
#[cfg(feature = "danger-benchmark-unsealed")]
#[derive(Debug)]
pub(crate) struct DangerNoLedger;

#[cfg(feature = "danger-benchmark-unsealed")]
impl CheckpointSigner for DangerNoLedger {
    fn sign(&self, _tree_size: u64, _root: &[u8; 32]) -> Result<String, String> {
        Err("a benchmark store without a ledger signs nothing".into())
    }

    fn danger_skips_ledger(&self) -> bool {
        true
    }
}

/// Reads complete-subtree hashes through the engine's readers.
pub(crate) struct EngineNodes<'a>(pub &'a dyn Engine);

impl NodeStore for EngineNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, medvault_ledger::LedgerError> {
        self.0.ledger_node(level, index).map_err(|e| medvault_ledger::LedgerError::Store(Box::new(e)))
    }
}

/// An inclusion proof for one resource version against a signed checkpoint.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The leaf bytes (`ledger.md`); their leaf hash is what the proof includes.
    pub leaf: Vec<u8>,
    pub proof: Vec<Hash>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

impl InclusionProof {
    /// The self-contained proof document of `docs/format/checkpoint.md` ("Proof files").
    pub fn to_document(&self, resource: &str) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "type": "inclusion",
            "resource": resource,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf": b64.encode(&self.leaf),
            "proof": self.proof.iter().map(|hash| b64.encode(hash)).collect::<Vec<_>>(),
            "checkpoint": self.checkpoint,
        })
    }
}

impl Store {
    /// A consistency proof document (`checkpoint.md`, "Proof files") from the checkpoint
    /// of `old_size` (0: the empty log) to that of `new_size` (default: the latest).
    pub fn consistency_document(&self, old_size: u64, new_size: Option<u64>) -> Result<serde_json::Value, StoreError> {
        use base64::Engine as _;
        let new = match new_size {
            Some(size) => self.engine.checkpoint(size)?,
            None => self.engine.latest_checkpoint()?,
        }
        .ok_or_else(|| StoreError::Missing(format!("a signed checkpoint of size {}", new_size.unwrap_or(0))))?;
        let old = match old_size {
            0 => None,
            size => Some(
                self.engine
                    .checkpoint(size)?
                    .ok_or_else(|| StoreError::Missing(format!("a signed checkpoint of size {size}")))?,
            ),
        };
        let proof = self.consistency_proof(old_size, new.tree_size)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(serde_json::json!({
            "type": "consistency",
            "old_size": old_size,
            "new_size": new.tree_size,
            "old_checkpoint": old.map(|o| o.note),
            "new_checkpoint": new.note,
            "proof": proof.iter().map(|hash| b64.encode(hash)).collect::<Vec<_>>(),
        }))
    }

    /// The log's name in checkpoints and signature lines.
    pub fn ledger_origin(&self) -> Result<String, StoreError> {
        self.engine
            .meta("ledger_origin")?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .ok_or(StoreError::Corrupt("the store has no ledger origin".into()))
    }

    /// The verifier key of the log (`name+hash+base64`), to give to witnesses and auditors.
    pub fn ledger_verifier(&self) -> Result<Verifier, StoreError> {
        self.keyring
            .ledger_signing_key()?
            .verifier(&self.ledger_origin()?)
            .map_err(|e| StoreError::Crypto(format!("ledger verifier key: {e}")))
    }

    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        self.engine.latest_checkpoint()
    }

    pub fn checkpoint_at(&self, tree_size: u64) -> Result<Option<CheckpointRow>, StoreError> {
        self.engine.checkpoint(tree_size)
    }

    /// The leaf bytes of a version, rebuilt from its row and opened body.
    pub(crate) fn leaf_of(&self, row: &VersionRow, id: &str) -> Result<LeafData, StoreError> {
        LeafData::resource_version(ResourceVersionFields {
            resource_type: &row.resource_type,
            resource_id: id,
            version: row.version,
            sealed_sha256: medvault_crypto::sha256(&row.sealed),
            deleted: row.deleted,
            recorded_ms: row.recorded_ms,
            author: &row.author,
        })
        .map_err(|e| StoreError::Integrity(format!("row {} cannot form a ledger leaf: {e}", row.seq)))
    }

    /// Proves that a version is in the log at `tree_size` (default: the latest checkpoint).
    /// `None` if the version does not exist.
    pub fn inclusion_proof(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
        tree_size: Option<u64>,
    ) -> Result<Option<InclusionProof>, StoreError> {
        let resource_key = self.keyring.resource_key(resource_type, id);
        let Some(row) = self.engine.version(&resource_key, version)? else { return Ok(None) };
        let opened = self.open_row(&row)?;
        let checkpoint = match tree_size {
            Some(size) => self.engine.checkpoint(size)?,
            None => self.engine.latest_checkpoint()?,
        }
        .ok_or_else(|| StoreError::Missing(format!("a signed checkpoint of size {}", tree_size.unwrap_or(0))))?;
        if row.leaf_index >= checkpoint.tree_size {
            return Err(StoreError::Missing(format!(
                "this version (leaf {}) in a checkpoint of size {}",
                row.leaf_index, checkpoint.tree_size
            )));
        }
        let proof =
            medvault_ledger::inclusion_proof(row.leaf_index, checkpoint.tree_size, &EngineNodes(self.engine.as_ref()))
                .map_err(|e| StoreError::Integrity(format!("inclusion proof: {e}")))?;
        Ok(Some(InclusionProof {
            leaf_index: row.leaf_index,
            tree_size: checkpoint.tree_size,
            leaf: self.leaf_of(&row, &opened.id)?.encode(),
            proof,
            checkpoint: checkpoint.note,
        }))
    }

    /// Proves that the log at `old_size` is a prefix of the log at `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, StoreError> {
        let size = self.engine.ledger_size()?;
        if old_size > new_size || new_size > size {
            return Err(StoreError::Missing(format!(
                "a consistency proof from {old_size} to {new_size} (the log has {size} leaves)"
            )));
        }
        medvault_ledger::consistency_proof(old_size, new_size, &EngineNodes(self.engine.as_ref()))
            .map_err(|e| StoreError::Integrity(format!("consistency proof: {e}")))
    }
}
