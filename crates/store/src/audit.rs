//! The audit trail's storage (`docs/format/audit.md`): records arrive encoded (the
//! `medvault-audit` crate defines them; the store treats them as opaque bytes), the writer
//! seals each group commit's records as one block under the audit key, appends the block
//! to the ledger as one leaf, and indexes the records by patient.
//!
//! Writes carry their audit records in their own job, so a write and its record commit
//! together or not at all. Reads and refusals submit records on their own; the caller
//! answers only after the reply says they are committed.

use std::sync::Arc;

use medvault_crypto::{KeyPurpose, RecordIdentity, Sealer};
use rusqlite::{params, OptionalExtension};

use crate::engine::{AuditBlockRow, AuditReply, AuditSlot, Engine, NewKey, PendingAudit};
use crate::{Keyring, Store, StoreError};

/// The `resource_type` in the sealed-record identity of an audit block: not a FHIR type.
pub const AUDIT_BLOCK_TYPE: &str = ":audit-block";

/// The sealed-record `resource_key` of the block at `leaf_index`: the index, big-endian,
/// then eight zero bytes. A block moved to another row fails to open.
pub fn block_key(leaf_index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&leaf_index.to_be_bytes());
    key
}

pub fn block_identity<'a>(store_id: &'a [u8; 16], key: &'a [u8; 16]) -> RecordIdentity<'a> {
    RecordIdentity { store_id, resource_type: AUDIT_BLOCK_TYPE, resource_key: key, version: 1, deleted: false }
}

/// The audit key's sealer; creates the key (one per store) if a store made before the
/// audit trail has none.
pub(crate) fn load_or_create_audit_key(
    engine: &crate::sqlite::SqliteEngine,
    keyring: &Keyring,
    now_ms: i64,
) -> Result<Arc<Sealer>, StoreError> {
    let purpose = KeyPurpose::AuditData;
    let mut rows = engine.keys_by_purpose(purpose as u8)?;
    if rows.is_empty() {
        let key = medvault_crypto::Secret32::random()?;
        let wrapped = keyring.wrap_store_key(&key, purpose)?;
        let new_key = NewKey { purpose: purpose as u8, compartment: None, wrapped, created_ms: now_ms };
        // Inserted only if still absent inside the writer's transaction: two processes
        // opening an old store at once make one key.
        engine.execute(Box::new(move |c| {
            let present: i64 =
                c.query_row("SELECT COUNT(*) FROM keys WHERE purpose = ?1", [purpose as u8], |row| row.get(0))?;
            if present == 0 {
                c.execute(
                    "INSERT INTO keys (purpose, compartment, wrapped, created_ms) VALUES (?1, NULL, ?2, ?3)",
                    params![new_key.purpose, new_key.wrapped, new_key.created_ms],
                )?;
            }
            Ok(0)
        }))?;
        rows = engine.keys_by_purpose(purpose as u8)?;
    }
    let row = match rows.as_slice() {
        [row] => row,
        _ => return Err(StoreError::Corrupt(format!("expected one audit key, found {}", rows.len()))),
    };
    keyring.store_key_sealer(row, purpose)
}

/// An audit record ready for the writer.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub recorded_ms: i64,
    /// Ids of the patients the record names.
    pub patients: Vec<String>,
    /// The encoded record (`medvault_audit::encode`).
    pub record: Vec<u8>,
}

/// One record read back: where it is, and its bytes.
#[derive(Debug, Clone)]
pub struct StoredAudit {
    pub block: u64,
    pub slot: u32,
    pub record: Vec<u8>,
}

impl Store {
    /// Turns an entry into what the writer stores (patients as compartment tokens).
    pub fn pending_audit(&self, entry: AuditEntry) -> PendingAudit {
        let mut patients: Vec<[u8; 32]> = entry.patients.iter().map(|id| self.keyring.compartment_token(id)).collect();
        patients.sort_unstable();
        patients.dedup();
        PendingAudit { recorded_ms: entry.recorded_ms, patients, record: entry.record }
    }

    /// Queues audit records for the next group commit; `reply` gets `Ok` once they are
    /// committed (to the audit journal or the database), or the error (and the access must
    /// then fail).
    pub fn submit_audit(&self, entries: Vec<AuditEntry>, reply: AuditReply) -> Result<(), StoreError> {
        let pending = entries.into_iter().map(|entry| self.pending_audit(entry)).collect();
        self.engine.submit_audit(pending, reply)
    }

    /// [`Store::submit_audit`], except that records bound for the audit journal are only
    /// sealed and staged: the next [`Store::write_staged_audit`] — the caller's, or any other
    /// thread's — commits them with every other frame staged by then, in one `write`, and
    /// only then is `reply` called. A caller that answers many requests (an async worker)
    /// stages each request's records, lets its other ready requests run, then writes. The
    /// writer writes what is staged at its next journal sync (`AUDIT_SYNC_MS`) in any case.
    pub fn stage_audit(&self, entries: Vec<AuditEntry>, reply: AuditReply) -> Result<(), StoreError> {
        let pending = entries.into_iter().map(|entry| self.pending_audit(entry)).collect();
        self.engine.stage_audit(pending, reply)
    }

    /// Commits every audit record staged so far ([`Store::stage_audit`]) with one `write`.
    pub fn write_staged_audit(&self) {
        self.engine.write_staged_audit();
    }

    /// [`Store::submit_audit`], waiting for the commit (for the command line and for
    /// security events outside a request).
    pub fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.submit_audit(
            entries,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        )?;
        receiver.recv().map_err(|_| StoreError::Closed)?
    }

    /// Moves every audit record committed so far (some wait in the audit journal up to
    /// `AUDIT_MOVE_MS`) into the database's blocks, index and ledger, as every audit query
    /// does first.
    pub fn settle_audit(&self) -> Result<(), StoreError> {
        self.engine.flush_audit()
    }

    /// Blocks whose records end at or after `since_ms` and begin before `until_ms`, in
    /// ledger order, from leaf `after_seq` (exclusive), at most `limit`.
    pub fn audit_blocks(
        &self,
        since_ms: i64,
        until_ms: i64,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditBlockRow>, StoreError> {
        self.engine.flush_audit()?;
        let after = after_seq.map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        self.engine.query(|c| {
            Ok(c.prepare_cached(
                "SELECT seq, first_ms, last_ms, count, sealed FROM audit_blocks
                 WHERE seq > ?1 AND last_ms >= ?2 AND first_ms < ?3 ORDER BY seq LIMIT ?4",
            )?
            .query_map(params![after, since_ms, until_ms, limit], audit_block_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Like [`Store::audit_blocks`], newest first, strictly before leaf `before_seq`.
    pub fn audit_blocks_newest_first(
        &self,
        since_ms: i64,
        until_ms: i64,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditBlockRow>, StoreError> {
        self.engine.flush_audit()?;
        let before = before_seq.map_or(i64::MAX, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        self.engine.query(|c| {
            Ok(c.prepare_cached(
                "SELECT seq, first_ms, last_ms, count, sealed FROM audit_blocks
                 WHERE seq < ?1 AND last_ms >= ?2 AND first_ms < ?3 ORDER BY seq DESC LIMIT ?4",
            )?
            .query_map(params![before, since_ms, until_ms, limit], audit_block_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Marks a patient as a canary (bait: any access raises an alert), or unmarks it.
    pub fn set_canary(&self, patient_id: &str, canary: bool) -> Result<bool, StoreError> {
        let token = self.keyring.compartment_token(patient_id);
        let now_ms = self.clock.now_ms();
        let changed = self.engine.execute(Box::new(move |c| {
            let changed = if canary {
                c.execute(
                    "INSERT INTO audit_canaries (patient, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![&token[..], now_ms],
                )?
            } else {
                c.execute("DELETE FROM audit_canaries WHERE patient = ?1", [&token[..]])?
            };
            Ok(i64::try_from(changed).unwrap_or(0))
        }))?;
        Ok(changed == 1)
    }

    /// The compartment tokens of canary patients.
    pub fn canary_tokens(&self) -> Result<std::collections::HashSet<[u8; 32]>, StoreError> {
        self.engine.query(|c| {
            let mut statement = c.prepare("SELECT patient FROM audit_canaries")?;
            let tokens = statement
                .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                .filter_map(|token| token.ok().and_then(|t| t.try_into().ok()))
                .collect();
            Ok(tokens)
        })
    }

    /// Every block from leaf `from_seq`, at most `limit` (for `verify`).
    pub fn audit_blocks_from(&self, from_seq: u64, limit: u32) -> Result<Vec<AuditBlockRow>, StoreError> {
        self.engine.flush_audit()?;
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        self.engine.query(|c| {
            Ok(c.prepare_cached(
                "SELECT seq, first_ms, last_ms, count, sealed FROM audit_blocks WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![from, limit], audit_block_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn audit_block(&self, seq: u64) -> Result<Option<AuditBlockRow>, StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.engine.query(|c| {
            Ok(c.prepare_cached("SELECT seq, first_ms, last_ms, count, sealed FROM audit_blocks WHERE seq = ?1")?
                .query_row([seq], audit_block_row)
                .optional()?)
        })
    }

    /// Opens a block: its records, in order. An altered or moved block is an integrity error.
    pub fn open_audit_block(&self, row: &AuditBlockRow) -> Result<Vec<Vec<u8>>, StoreError> {
        let key = block_key(row.seq);
        let identity = block_identity(self.keyring.store_id(), &key);
        let block = self
            .audit_sealer
            .open(&identity, &row.sealed)
            .map_err(|_| StoreError::Integrity(format!("audit block {} failed authentication", row.seq)))?;
        let records = split_block(&block)
            .ok_or_else(|| StoreError::Integrity(format!("audit block {} is not a block of records", row.seq)))?;
        if records.len() != usize::try_from(row.count).unwrap_or(usize::MAX) {
            return Err(StoreError::Integrity(format!("audit block {} does not hold the records it counts", row.seq)));
        }
        Ok(records)
    }

    /// Where the records naming a patient are, newest first, within `[since_ms, until_ms)`,
    /// strictly before `before` (a paging cursor), at most `limit`.
    pub fn audit_slots_of_patient(
        &self,
        patient_id: &str,
        since_ms: i64,
        until_ms: i64,
        before: Option<AuditSlot>,
        limit: u32,
    ) -> Result<Vec<AuditSlot>, StoreError> {
        self.engine.flush_audit()?;
        let token = self.keyring.compartment_token(patient_id);
        self.engine.query(|c| crate::audit_index::slots_of_patient(c, &token, since_ms, until_ms, before, limit))
    }

    /// The records at `slots`, opening each block once.
    pub fn audit_records_at(&self, slots: &[AuditSlot]) -> Result<Vec<StoredAudit>, StoreError> {
        let mut opened: std::collections::HashMap<u64, Vec<Vec<u8>>> = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let std::collections::hash_map::Entry::Vacant(vacant) = opened.entry(slot.block) {
                let row = self.audit_block(slot.block)?.ok_or_else(|| {
                    StoreError::Integrity(format!("audit block {} is indexed but missing", slot.block))
                })?;
                vacant.insert(self.open_audit_block(&row)?);
            }
            let record = opened
                .get(&slot.block)
                .and_then(|records| records.get(usize::try_from(slot.slot).unwrap_or(usize::MAX)))
                .ok_or_else(|| {
                    StoreError::Integrity(format!("audit block {} has no record {}", slot.block, slot.slot))
                })?;
            out.push(StoredAudit { block: slot.block, slot: slot.slot, record: record.clone() });
        }
        Ok(out)
    }
}

fn audit_block_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditBlockRow> {
    let seq: i64 = row.get(0)?;
    let count: i64 = row.get(3)?;
    Ok(AuditBlockRow {
        seq: u64::try_from(seq).unwrap_or(0),
        first_ms: row.get(1)?,
        last_ms: row.get(2)?,
        count: u32::try_from(count).unwrap_or(0),
        sealed: row.get(4)?,
    })
}

/// `count (u32 BE) ‖ (length (u32 BE) ‖ record)*`, exactly.
fn split_block(block: &[u8]) -> Option<Vec<Vec<u8>>> {
    let count = u32::from_be_bytes(block.get(..4)?.try_into().ok()?);
    let mut at = 4usize;
    let mut records = Vec::with_capacity(usize::try_from(count).ok()?.min(65_536));
    for _ in 0..count {
        let length = usize::try_from(u32::from_be_bytes(block.get(at..at + 4)?.try_into().ok()?)).ok()?;
        at += 4;
        records.push(block.get(at..at.checked_add(length)?)?.to_vec());
        at += length;
    }
    (at == block.len()).then_some(records)
}
