//! The audit trail's index by patient, format version 5 (`docs/format/audit.md`, *The index
//! by patient*): one row per patient per commit that moved audit records naming them, its
//! entries packed, instead of one row per (patient, record).
//!
//! A move of the audit journal commits about a second of reads at once; a patient whose
//! chart is open is read many times in that second, and each row insert costs the writer
//! about a microsecond, so packing turns a dozen inserts into one.

use rusqlite::{params, Connection};

use crate::engine::AuditSlot;
use crate::StoreError;

/// One record naming one patient: patient token, recorded_ms, block (leaf index), slot.
pub(crate) type AuditIndexEntry = ([u8; 32], i64, i64, usize);

/// Creates the version-5 table (named `audit_by_patient_v5` until the old one is gone).
pub(crate) const SCHEMA_V5: &str = "
CREATE TABLE audit_by_patient_v5 (
    patient  BLOB NOT NULL,
    last_ms  INTEGER NOT NULL,
    block    INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    entries  BLOB NOT NULL,
    PRIMARY KEY (patient, last_ms, block)
) WITHOUT ROWID;
";

/// Inserts `entries` (all committed together) as one row per patient.
pub(crate) fn insert(connection: &Connection, mut entries: Vec<AuditIndexEntry>) -> Result<(), StoreError> {
    insert_into(connection, "audit_by_patient", &mut entries)
}

fn insert_into(connection: &Connection, table: &str, entries: &mut [AuditIndexEntry]) -> Result<(), StoreError> {
    // By patient, then (recorded_ms, block, slot): each patient's entries in order.
    entries.sort_unstable();
    let mut insert = connection.prepare_cached(&format!(
        "INSERT INTO {table} (patient, last_ms, block, first_ms, entries) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?;
    for group in entries.chunk_by(|a, b| a.0 == b.0) {
        let row = Row::pack(group)?;
        insert.execute(params![&group[0].0[..], row.last_ms, row.block, row.first_ms, row.entries])?;
    }
    Ok(())
}

/// Rewrites a version-4 index (one row per patient and record) as version 5, in the
/// caller's transaction, grouping each patient's entries by block; streams, so a large
/// trail does not have to fit in memory.
pub(crate) fn migrate_from_v4(connection: &Connection) -> Result<(), StoreError> {
    connection.execute_batch(SCHEMA_V5)?;
    {
        let mut select = connection.prepare(
            "SELECT patient, recorded_ms, block, slot FROM audit_by_patient ORDER BY patient, block, recorded_ms, slot",
        )?;
        let mut rows = select.query([])?;
        let mut group: Vec<AuditIndexEntry> = Vec::new();
        while let Some(row) = rows.next()? {
            let patient: Vec<u8> = row.get(0)?;
            let patient: [u8; 32] = patient
                .try_into()
                .map_err(|_| StoreError::Corrupt("an audit index row's patient is not 32 bytes".into()))?;
            let slot: i64 = row.get(3)?;
            let entry = (
                patient,
                row.get(1)?,
                row.get(2)?,
                usize::try_from(slot).map_err(|_| StoreError::Corrupt("a negative audit slot".into()))?,
            );
            if group.last().is_some_and(|last| (last.0, last.2) != (entry.0, entry.2)) {
                insert_into(connection, "audit_by_patient_v5", &mut group)?;
                group.clear();
            }
            group.push(entry);
        }
        if !group.is_empty() {
            insert_into(connection, "audit_by_patient_v5", &mut group)?;
        }
    }
    connection
        .execute_batch("DROP TABLE audit_by_patient; ALTER TABLE audit_by_patient_v5 RENAME TO audit_by_patient;")?;
    Ok(())
}

/// A packed row.
struct Row {
    first_ms: i64,
    last_ms: i64,
    block: i64,
    entries: Vec<u8>,
}

impl Row {
    /// `entries`: one patient's, sorted by (recorded_ms, block, slot).
    fn pack(entries: &[AuditIndexEntry]) -> Result<Row, StoreError> {
        let first_ms = entries.first().map_or(0, |e| e.1);
        let last_ms = entries.last().map_or(0, |e| e.1);
        let block = entries.iter().map(|e| e.2).min().unwrap_or(0);
        let mut packed = Vec::with_capacity(entries.len() * 6);
        for &(_, recorded_ms, entry_block, slot) in entries {
            let ms_delta = u64::try_from(recorded_ms - first_ms)
                .map_err(|_| StoreError::Corrupt("audit index entries out of order".into()))?;
            let block_delta = u64::try_from(entry_block - block)
                .map_err(|_| StoreError::Corrupt("an audit index entry before its row's block".into()))?;
            put_varint(&mut packed, ms_delta);
            put_varint(&mut packed, block_delta);
            put_varint(&mut packed, slot as u64);
        }
        Ok(Row { first_ms, last_ms, block, entries: packed })
    }
}

/// The entries of a row, in order; any malformed byte is an integrity error.
fn unpack(first_ms: i64, last_ms: i64, block: i64, packed: &[u8]) -> Result<Vec<AuditSlot>, StoreError> {
    let malformed = || StoreError::Integrity(format!("the audit index row of block {block} is malformed"));
    let mut at = 0;
    let mut out = Vec::new();
    while at < packed.len() {
        let ms_delta = take_varint(packed, &mut at).ok_or_else(malformed)?;
        let block_delta = take_varint(packed, &mut at).ok_or_else(malformed)?;
        let slot = take_varint(packed, &mut at).ok_or_else(malformed)?;
        let recorded_ms = i64::try_from(ms_delta).ok().and_then(|d| first_ms.checked_add(d)).ok_or_else(malformed)?;
        let entry_block = i64::try_from(block_delta).ok().and_then(|d| block.checked_add(d)).ok_or_else(malformed)?;
        if recorded_ms > last_ms {
            return Err(malformed());
        }
        out.push(AuditSlot {
            recorded_ms,
            block: u64::try_from(entry_block).map_err(|_| malformed())?,
            slot: u32::try_from(slot).map_err(|_| malformed())?,
        });
    }
    Ok(out)
}

/// Where the records naming `patient` are, newest first, within `[since_ms, until_ms)`,
/// strictly before `before`, at most `limit`.
pub(crate) fn slots_of_patient(
    connection: &Connection,
    patient: &[u8; 32],
    since_ms: i64,
    until_ms: i64,
    before: Option<AuditSlot>,
    limit: u32,
) -> Result<Vec<AuditSlot>, StoreError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let key = |s: &AuditSlot| (s.recorded_ms, s.block, s.slot);
    let before_ms = before.map_or(i64::MAX, |b| b.recorded_ms);
    let mut select = connection.prepare_cached(
        "SELECT first_ms, last_ms, block, entries FROM audit_by_patient
         WHERE patient = ?1 AND last_ms >= ?2 AND first_ms < ?3 AND first_ms <= ?4
         ORDER BY last_ms DESC, block DESC",
    )?;
    let mut rows = select.query(params![&patient[..], since_ms, until_ms, before_ms])?;
    let mut found: Vec<AuditSlot> = Vec::new();
    // Rows come newest `last_ms` first; once `limit` entries are found, a row whose newest
    // entry is older than the oldest kept one cannot contribute.
    let mut threshold_ms = i64::MIN;
    while let Some(row) = rows.next()? {
        let (first_ms, last_ms, block): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if last_ms < threshold_ms {
            break;
        }
        let packed = row
            .get_ref(3)?
            .as_blob()
            .map_err(|_| StoreError::Integrity(format!("the audit index row of block {block} holds no entries")))?;
        for slot in unpack(first_ms, last_ms, block, packed)? {
            let in_window = (since_ms..until_ms).contains(&slot.recorded_ms);
            if in_window && before.is_none_or(|b| key(&slot) < key(&b)) {
                found.push(slot);
            }
        }
        if found.len() >= limit {
            found.sort_unstable_by_key(|s| std::cmp::Reverse(key(s)));
            found.truncate(limit);
            threshold_ms = found.last().map_or(i64::MIN, |s| s.recorded_ms);
        }
    }
    found.sort_unstable_by_key(|s| std::cmp::Reverse(key(s)));
    found.truncate(limit);
    Ok(found)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// LEB128; `None` past the end, over 10 bytes, or over 64 bits.
fn take_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(recorded_ms: i64, block: u64, slot: u32) -> AuditSlot {
        AuditSlot { recorded_ms, block, slot }
    }

    fn memory() -> Connection {
        let connection = Connection::open_in_memory().expect("sqlite");
        connection.execute_batch(&SCHEMA_V5.replace("audit_by_patient_v5", "audit_by_patient")).expect("schema");
        connection
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong_input() {
        for value in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut at = 0;
            assert_eq!(take_varint(&out, &mut at), Some(value));
            assert_eq!(at, out.len());
        }
        assert_eq!(take_varint(&[0x80, 0x80], &mut 0), None, "cut short");
        assert_eq!(take_varint(&[0xff; 10], &mut 0), None, "over 64 bits");
        assert_eq!(take_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &mut 0), None);
    }

    /// The packed index answers every window, cursor and limit exactly as the version-4
    /// table (one row per entry, ordered by its key) would have.
    #[test]
    fn queries_match_one_row_per_entry() {
        let connection = memory();
        let alice = [1u8; 32];
        let bob = [2u8; 32];
        let mut all: Vec<AuditSlot> = Vec::new();
        let mut block = 10i64;
        // 40 commits, each several blocks with both patients' records, times overlapping
        // between commits (a journal's records are moved with the next write's).
        for commit in 0..40i64 {
            let mut entries = Vec::new();
            for b in 0..3 {
                for s in 0..5usize {
                    let ms = 1_000 + commit * 50 + ((s as i64 * 37 + b * 11) % 70);
                    entries.push((if s % 2 == 0 { alice } else { bob }, ms, block + b, s));
                    if s % 2 == 0 {
                        all.push(slot(ms, (block + b) as u64, s as u32));
                    }
                }
            }
            block += 3;
            insert(&connection, entries).expect("insert");
        }
        let key = |s: &AuditSlot| (s.recorded_ms, s.block, s.slot);
        all.sort_by_key(|s| std::cmp::Reverse(key(s)));
        for (since, until) in [(0, i64::MAX), (1_200, 2_000), (1_333, 1_334), (5_000, 6_000)] {
            for limit in [1u32, 3, 7, 50, 1_000] {
                let expected: Vec<AuditSlot> =
                    all.iter().copied().filter(|s| (since..until).contains(&s.recorded_ms)).collect();
                // Page through with cursors, as the HTTP search does.
                let mut got: Vec<AuditSlot> = Vec::new();
                let mut before = None;
                loop {
                    let page = slots_of_patient(&connection, &alice, since, until, before, limit).expect("query");
                    assert!(page.len() <= limit as usize);
                    if page.is_empty() {
                        break;
                    }
                    before = page.last().copied();
                    got.extend(page);
                }
                assert_eq!(got, expected, "window {since}..{until}, limit {limit}");
            }
        }
        assert!(slots_of_patient(&connection, &[9; 32], 0, i64::MAX, None, 10).expect("query").is_empty());
    }

    #[test]
    fn a_malformed_row_is_an_integrity_error_not_a_panic() {
        let connection = memory();
        for entries in [vec![0x80u8], vec![0x01, 0x00], vec![0x05, 0x00, 0x00]] {
            connection.execute("DELETE FROM audit_by_patient", []).expect("delete");
            connection
                .execute(
                    "INSERT INTO audit_by_patient VALUES (?1, 1003, 7, 1000, ?2)",
                    params![&[1u8; 32][..], entries],
                )
                .expect("insert");
            let result = slots_of_patient(&connection, &[1; 32], 0, i64::MAX, None, 10);
            assert!(matches!(result, Err(StoreError::Integrity(_))), "{entries:?}: {result:?}");
        }
    }

    #[test]
    fn a_version_4_index_is_rewritten_entry_for_entry() {
        let connection = Connection::open_in_memory().expect("sqlite");
        connection
            .execute_batch(
                "CREATE TABLE audit_by_patient (patient BLOB NOT NULL, recorded_ms INTEGER NOT NULL,
                 block INTEGER NOT NULL, slot INTEGER NOT NULL,
                 PRIMARY KEY (patient, recorded_ms, block, slot)) WITHOUT ROWID;",
            )
            .expect("v4 schema");
        let mut expected = Vec::new();
        for i in 0..500i64 {
            let patient = [(i % 7) as u8; 32];
            let (ms, block, slot) = (10_000 + i * 3, 100 + i / 40, i % 40);
            connection
                .execute("INSERT INTO audit_by_patient VALUES (?1, ?2, ?3, ?4)", params![&patient[..], ms, block, slot])
                .expect("insert");
            if i % 7 == 3 {
                expected.push(slot_of(ms, block, slot));
            }
        }
        migrate_from_v4(&connection).expect("migrate");
        expected.reverse();
        let got = slots_of_patient(&connection, &[3; 32], 0, i64::MAX, None, 1_000).expect("query");
        assert_eq!(got, expected);
        let rows: i64 = connection.query_row("SELECT COUNT(*) FROM audit_by_patient", [], |r| r.get(0)).expect("count");
        assert!(rows < 500 / 2, "grouped by patient and block: {rows} rows");
    }

    fn slot_of(ms: i64, block: i64, slot: i64) -> AuditSlot {
        AuditSlot { recorded_ms: ms, block: block as u64, slot: slot as u32 }
    }
}
