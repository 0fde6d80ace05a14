//! `verify`: recompute every ledger leaf from what is stored (opening every sealed
//! version), rebuild the tree, and check it against every signed checkpoint and against
//! checkpoints that witnesses hold. Every problem is named; nothing is repaired.

use std::collections::{BTreeMap, HashMap};

use medvault_ledger::{Hash, RootBuilder, Verifier};

use crate::engine::{Engine, ResourceKey};
use crate::{Store, StoreError};

/// Versions read per page.
const VERIFY_PAGE_VERSIONS: u32 = 2000;

/// What kind of problem a finding is; stable names for the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// Sealed bytes fail authentication, or open to another resource or version.
    VersionAltered,
    /// A ledger leaf has no version row: a version was deleted.
    VersionMissing,
    /// A version row is not in the ledger at all: inserted outside a commit.
    VersionNotInLedger,
    /// A version does not match its ledger leaf: the row or the ledger was edited, or rows
    /// were swapped or reordered.
    LeafMismatch,
    /// A resource's versions are not 1, 2, 3… in ledger order.
    VersionSequence,
    /// A resource's current-version pointer does not name its last version.
    CurrentPointer,
    /// A stored checkpoint's signature does not verify with the log key, or its text
    /// disagrees with its row.
    CheckpointInvalid,
    /// The recomputed tree differs from a signed checkpoint: history was rewritten.
    CheckpointMismatch,
    /// Leaves no signed checkpoint covers.
    NotCovered,
    /// A witness saw a larger log than the store has: the store was rolled back.
    Rollback,
    /// A witness saw a different history at the same size: a fork.
    Fork,
    /// A witness checkpoint is not signed by this log's key (or by its witness).
    WitnessInvalid,
    /// An audit block fails authentication, does not match its leaf, or claims a leaf it
    /// cannot have: audit records were edited, moved or inserted.
    AuditAltered,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::VersionAltered => "version-altered",
            FindingKind::VersionMissing => "version-missing",
            FindingKind::VersionNotInLedger => "version-not-in-ledger",
            FindingKind::LeafMismatch => "leaf-mismatch",
            FindingKind::VersionSequence => "version-sequence",
            FindingKind::CurrentPointer => "current-pointer",
            FindingKind::CheckpointInvalid => "checkpoint-invalid",
            FindingKind::CheckpointMismatch => "checkpoint-mismatch",
            FindingKind::NotCovered => "not-covered",
            FindingKind::Rollback => "rollback",
            FindingKind::Fork => "fork",
            FindingKind::WitnessInvalid => "witness-invalid",
            FindingKind::AuditAltered => "audit-altered",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
    pub leaf_index: Option<u64>,
}

/// A checkpoint held by a witness (a signed note, possibly cosigned).
#[derive(Debug, Clone)]
pub struct WitnessCheckpoint {
    /// Where it came from, for the report (a file name).
    pub source: String,
    pub note: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub versions: u64,
    /// Audit blocks and the records in them.
    pub audit_blocks: u64,
    pub audit_records: u64,
    pub leaves: u64,
    /// Versions whose data key was destroyed: their leaves are taken from the ledger unchecked.
    pub erased: u64,
    pub checkpoints: u64,
    pub latest_checkpoint_size: Option<u64>,
    pub witnesses: u64,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn find(&mut self, kind: FindingKind, leaf_index: Option<u64>, message: String) {
        self.findings.push(Finding { kind, message, leaf_index });
    }
}

/// Audit blocks read per page.
const VERIFY_PAGE_AUDIT_BLOCKS: u32 = 256;

/// Reads audit blocks in ledger order alongside the versions.
#[derive(Default)]
struct AuditCursor {
    page: std::collections::VecDeque<crate::engine::AuditBlockRow>,
    /// The next block seq to read from the table.
    next_seq: u64,
    exhausted: bool,
    blocks: u64,
    records: u64,
}

impl Store {
    /// A ledger position with no version: it must be an audit block whose bytes match
    /// the leaf and open under the audit key; otherwise something was deleted or edited.
    fn verify_gap_leaf(
        &self,
        audit: &mut AuditCursor,
        leaf: u64,
        builder: &mut RootBuilder,
        report: &mut VerifyReport,
    ) -> Result<(), StoreError> {
        // Blocks before this position sit on a version's leaf: not theirs.
        loop {
            if audit.page.is_empty() && !audit.exhausted {
                let page = self.audit_blocks_from(audit.next_seq, VERIFY_PAGE_AUDIT_BLOCKS)?;
                audit.exhausted = page.len() < VERIFY_PAGE_AUDIT_BLOCKS as usize;
                if let Some(last) = page.last() {
                    audit.next_seq = last.seq.saturating_add(1);
                }
                audit.page.extend(page);
            }
            match audit.page.front() {
                Some(block) if block.seq < leaf => {
                    report.find(
                        FindingKind::AuditAltered,
                        Some(block.seq),
                        format!("audit block {} claims a ledger leaf that holds a version", block.seq),
                    );
                    audit.page.pop_front();
                }
                _ => break,
            }
        }
        let stored = self.engine.ledger_node(0, leaf)?;
        let Some(block) = audit.page.front().filter(|block| block.seq == leaf).cloned() else {
            report.find(
                FindingKind::VersionMissing,
                Some(leaf),
                format!("ledger leaf {leaf} has no version and no audit block: one was deleted"),
            );
            builder.push(stored.unwrap_or([0; 32]));
            return Ok(());
        };
        audit.page.pop_front();
        audit.blocks += 1;
        audit.records += u64::from(block.count);
        let recomputed = medvault_ledger::AuditBlockLeaf {
            first_ms: block.first_ms,
            last_ms: block.last_ms,
            count: block.count,
            sealed_sha256: medvault_crypto::sha256(&block.sealed),
        }
        .leaf_hash();
        let opens = self.open_audit_block(&block).is_ok();
        match recomputed {
            Ok(hash) if opens && stored == Some(hash) => builder.push(hash),
            Ok(hash) => {
                report.find(
                    FindingKind::AuditAltered,
                    Some(leaf),
                    format!(
                        "audit block {leaf} was altered: {}",
                        if opens { "it does not match its ledger leaf" } else { "it fails authentication" }
                    ),
                );
                // Recompute from the altered bytes: the tree must not absorb the change.
                builder.push(hash);
            }
            Err(error) => {
                report.find(FindingKind::AuditAltered, Some(leaf), format!("audit block {leaf} is malformed: {error}"));
                builder.push(medvault_ledger::leaf_hash(&block.sealed));
            }
        }
        Ok(())
    }

    /// Verifies the whole store. `log_key` pins the expected log key (from a witness or
    /// an auditor); by default the store's own key is used. `witness_keys` verify
    /// cosignatures on witness checkpoints. `progress` is called with (done, total) leaves.
    pub fn verify(
        &self,
        log_key: Option<&Verifier>,
        witnesses: &[WitnessCheckpoint],
        witness_keys: &[Verifier],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport, StoreError> {
        let own_key = self.ledger_verifier()?;
        let log_key = log_key.unwrap_or(&own_key);
        let mut report = VerifyReport::default();
        let ledger_size = self.engine.ledger_size()?;
        report.versions = self.engine.version_count()?;
        let total = ledger_size.max(report.versions);

        // Sizes at which the recomputed root must be compared: every signed checkpoint and
        // every witness checkpoint.
        let mut expected_roots: BTreeMap<u64, Vec<(Hash, String)>> = BTreeMap::new();
        let checkpoints = self.engine.checkpoints()?;
        report.checkpoints = checkpoints.len() as u64;
        report.latest_checkpoint_size = checkpoints.last().map(|c| c.tree_size);
        for row in &checkpoints {
            match medvault_ledger::open_checkpoint(row.note.as_bytes(), log_key, &[]) {
                Ok(opened) if opened.checkpoint.size() == row.tree_size && *opened.checkpoint.root() == row.root => {
                    expected_roots.entry(row.tree_size).or_default().push((row.root, "the signed checkpoint".into()));
                }
                Ok(_) => report.find(
                    FindingKind::CheckpointInvalid,
                    None,
                    format!("the checkpoint row of size {} disagrees with its signed text", row.tree_size),
                ),
                Err(error) => report.find(
                    FindingKind::CheckpointInvalid,
                    None,
                    format!("the checkpoint of size {} does not verify with the log key: {error}", row.tree_size),
                ),
            }
        }
        let mut witness_sizes = Vec::new();
        for witness in witnesses {
            match medvault_ledger::open_checkpoint(&witness.note, log_key, witness_keys) {
                Ok(opened) => {
                    if !witness_keys.is_empty() && opened.cosignatures.is_empty() {
                        report.find(
                            FindingKind::WitnessInvalid,
                            None,
                            format!("{}: no cosignature from any given witness key", witness.source),
                        );
                        continue;
                    }
                    let size = opened.checkpoint.size();
                    witness_sizes.push((size, witness.source.clone()));
                    expected_roots.entry(size).or_default().push((*opened.checkpoint.root(), witness.source.clone()));
                }
                Err(error) => report.find(
                    FindingKind::WitnessInvalid,
                    None,
                    format!("{}: not a checkpoint signed by this log: {error}", witness.source),
                ),
            }
        }
        report.witnesses = witness_sizes.len() as u64;

        let mut builder = RootBuilder::new();
        let mut next_leaf = 0u64;
        let mut last_version: HashMap<ResourceKey, u64> = HashMap::new();
        let check_roots = |builder: &RootBuilder, report: &mut VerifyReport| {
            if let Some(expected) = expected_roots.get(&builder.size()) {
                let root = builder.root();
                for (expected_root, source) in expected {
                    if *expected_root != root {
                        let (kind, what) = if source == "the signed checkpoint" {
                            (FindingKind::CheckpointMismatch, "history was rewritten".to_string())
                        } else {
                            (FindingKind::Fork, format!("{source} saw a different history (a fork)"))
                        };
                        report.find(
                            kind,
                            None,
                            format!("the recomputed tree at size {} differs from {source}: {what}", builder.size()),
                        );
                    }
                }
            }
        };
        check_roots(&builder, &mut report);
        // Audit blocks are leaves too: they fill the ledger positions between versions.
        let mut audit = AuditCursor::default();
        let mut last_version_leaf: Option<u64> = None;
        // Where the next page of rows starts; separate from `next_leaf` (the tree position),
        // since rows past the ledger's end do not advance the tree.
        let mut cursor = 0u64;
        loop {
            let page = self.engine.versions_by_leaf(cursor, VERIFY_PAGE_VERSIONS)?;
            let Some(last) = page.last() else { break };
            cursor = last.leaf_index.saturating_add(1);
            for row in &page {
                while next_leaf < row.leaf_index && next_leaf < ledger_size {
                    self.verify_gap_leaf(&mut audit, next_leaf, &mut builder, &mut report)?;
                    next_leaf += 1;
                    check_roots(&builder, &mut report);
                }
                if row.leaf_index >= ledger_size {
                    report.find(
                        FindingKind::VersionNotInLedger,
                        Some(row.leaf_index),
                        format!(
                            "version {} of a {} (row {}) claims leaf {} beyond the ledger's {ledger_size} leaves: inserted outside a commit",
                            row.version, row.resource_type, row.seq, row.leaf_index
                        ),
                    );
                    continue;
                }
                let stored = self.engine.ledger_node(0, row.leaf_index)?;
                if stored.is_none() {
                    report.find(
                        FindingKind::LeafMismatch,
                        Some(row.leaf_index),
                        format!("ledger leaf {} is missing: a ledger row was deleted", row.leaf_index),
                    );
                }
                let stored = stored.unwrap_or([0; 32]);
                let leaf_hash = match self.open_row(row) {
                    Ok(opened) => {
                        let expected_version = last_version.get(&row.resource_key).map_or(1, |v| v + 1);
                        if row.version != expected_version {
                            report.find(
                                FindingKind::VersionSequence,
                                Some(row.leaf_index),
                                format!(
                                    "{}/{} version {} follows version {} in the ledger: a version was inserted or removed",
                                    opened.resource_type,
                                    opened.id,
                                    row.version,
                                    expected_version - 1
                                ),
                            );
                        }
                        last_version.insert(row.resource_key, row.version);
                        let recomputed = self.leaf_of(row, &opened.id)?.leaf_hash();
                        if recomputed != stored && stored != [0; 32] {
                            report.find(
                                FindingKind::LeafMismatch,
                                Some(row.leaf_index),
                                format!(
                                    "{}/{} version {} (row {}) does not match ledger leaf {}: the row or the ledger was edited, or rows were swapped",
                                    opened.resource_type, opened.id, row.version, row.seq, row.leaf_index
                                ),
                            );
                        }
                        recomputed
                    }
                    Err(StoreError::KeyDestroyed) => {
                        report.erased += 1;
                        last_version.insert(row.resource_key, row.version);
                        stored
                    }
                    Err(error) => {
                        report.find(
                            FindingKind::VersionAltered,
                            Some(row.leaf_index),
                            format!(
                                "version {} of a {} (row {}, leaf {}) was altered: {error}",
                                row.version, row.resource_type, row.seq, row.leaf_index
                            ),
                        );
                        last_version.insert(row.resource_key, row.version);
                        // Recompute from the altered bytes: the tree must not absorb the change.
                        medvault_ledger::leaf_hash(&row.sealed)
                    }
                };
                builder.push(leaf_hash);
                last_version_leaf = Some(row.leaf_index);
                next_leaf = row.leaf_index + 1;
                check_roots(&builder, &mut report);
            }
            progress(next_leaf.min(total), total);
            if page.len() < VERIFY_PAGE_VERSIONS as usize || cursor == u64::MAX {
                break;
            }
        }
        while next_leaf < ledger_size {
            self.verify_gap_leaf(&mut audit, next_leaf, &mut builder, &mut report)?;
            next_leaf += 1;
            check_roots(&builder, &mut report);
        }
        // Blocks that no leaf position was left for: inserted outside a commit, or placed
        // on a version's leaf.
        loop {
            let rest = self.audit_blocks_from(audit.next_seq, VERIFY_PAGE_AUDIT_BLOCKS)?;
            let Some(last) = rest.last() else { break };
            audit.next_seq = last.seq.saturating_add(1);
            for block in &rest {
                report.find(
                    FindingKind::AuditAltered,
                    Some(block.seq),
                    format!(
                        "audit block {} claims a ledger leaf that is not its own: inserted outside a commit",
                        block.seq
                    ),
                );
            }
            if rest.len() < VERIFY_PAGE_AUDIT_BLOCKS as usize {
                break;
            }
        }
        report.audit_blocks = audit.blocks;
        report.audit_records = audit.records;
        report.leaves = builder.size();
        progress(total, total);

        match report.latest_checkpoint_size {
            None if last_version_leaf.is_some() => {
                report.find(FindingKind::NotCovered, None, "no signed checkpoint covers any leaf".into())
            }
            // Audit blocks of reads are signed within AUDIT_MOVE_MS, and at the next open
            // after a crash; only a version outside every checkpoint is a finding.
            Some(size) if size < report.leaves && last_version_leaf.is_some_and(|leaf| leaf >= size) => report.find(
                FindingKind::NotCovered,
                Some(size),
                format!("leaves {size} to {} are not covered by any signed checkpoint", report.leaves - 1),
            ),
            Some(size) if size > report.leaves => report.find(
                FindingKind::CheckpointMismatch,
                None,
                format!("the latest signed checkpoint covers {size} leaves but the ledger has {}", report.leaves),
            ),
            _ => {}
        }
        for (size, source) in &witness_sizes {
            if *size > report.leaves {
                report.find(
                    FindingKind::Rollback,
                    None,
                    format!(
                        "{source} saw this log at size {size}, but the store has {} leaves: the store was rolled back to an older copy or truncated",
                        report.leaves
                    ),
                );
            }
        }
        for (resource_key, version, _deleted) in self.engine.current_versions()? {
            if last_version.get(&resource_key) != Some(&version) {
                report.find(
                    FindingKind::CurrentPointer,
                    None,
                    format!(
                        "a resource's current version is {version} but its last version in the ledger is {}",
                        last_version.get(&resource_key).map_or("none".to_string(), |v| v.to_string())
                    ),
                );
            }
        }
        Ok(report)
    }
}
