//! `GET /fhir/AuditEvent?…` and `GET /fhir/AuditEvent/{id}`: the audit trail as FHIR
//! AuditEvents. Auditors may search everything; a patient may ask only who accessed their
//! own record (`patient=` their own id); nobody else may read the trail. The search itself
//! is audited.
//!
//! Parameters: `patient` (`Patient/{id}` or `{id}`), `agent-name`, `date` (with `ge`, `gt`,
//! `le`, `lt` prefixes; repeatable), `action` (C R U D E), `outcome` (0 4 8 12), `subtype`
//! (the interaction, e.g. `read`, `login`), `_count` and `_cursor` (the server's paging).
//! Results are newest first. An AuditEvent's id is `{block}-{slot}`: its ledger block and
//! position.

use medvault_audit::{AuditRecord, EventKind, ServerIdentity};
use medvault_base::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use medvault_store::engine::AuditSlot;
use medvault_store::Store;
use serde_json::json;

use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// Blocks scanned for one page of a search without `patient` before it ends early.
pub const AUDIT_SCAN_BLOCKS_MAX: u32 = 2_000;

/// The parsed query.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub patient: Option<String>,
    pub agent: Option<String>,
    pub since_ms: i64,
    pub until_ms: i64,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub subtype: Option<String>,
    pub count: u32,
    /// `(recorded_ms, block, slot)` of the last entry of the previous page.
    pub cursor: Option<AuditSlot>,
}

impl AuditQuery {
    pub fn parse(params: &[(String, String)], lenient: bool) -> Result<Self, ApiError> {
        let mut query =
            AuditQuery { since_ms: i64::MIN, until_ms: i64::MAX, count: PAGE_SIZE_DEFAULT, ..Default::default() };
        for (name, value) in params {
            match name.as_str() {
                "patient" => {
                    let id = value.strip_prefix("Patient/").unwrap_or(value);
                    if !medvault_fhir::is_valid_id(id) {
                        return Err(ApiError::bad_request(format!("patient '{value}' is not Patient/<id>")));
                    }
                    query.patient = Some(id.to_string());
                }
                "agent-name" | "agent" => query.agent = Some(value.clone()),
                "date" => {
                    let (prefix, instant) = match value.get(..2) {
                        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &value[2..]),
                        _ => ("eq", value.as_str()),
                    };
                    let ms = medvault_base::time::parse_instant(instant).ok_or_else(|| {
                        ApiError::bad_request(format!("date '{value}' is not [ge|gt|le|lt]<instant>, e.g. ge2026-11-01T00:00:00Z"))
                    })?;
                    match prefix {
                        "ge" => query.since_ms = query.since_ms.max(ms),
                        "gt" => query.since_ms = query.since_ms.max(ms.saturating_add(1)),
                        "le" => query.until_ms = query.until_ms.min(ms.saturating_add(1)),
                        "lt" => query.until_ms = query.until_ms.min(ms),
                        _ => {
                            query.since_ms = query.since_ms.max(ms);
                            query.until_ms = query.until_ms.min(ms.saturating_add(1));
                        }
                    }
                }
                "action" => query.action = Some(value.clone()),
                "outcome" => query.outcome = Some(value.clone()),
                "subtype" => query.subtype = Some(value.clone()),
                "_count" => {
                    query.count = value
                        .parse()
                        .ok()
                        .filter(|count| (1..=PAGE_SIZE_MAX).contains(count))
                        .ok_or_else(|| ApiError::bad_request(format!("_count must be between 1 and {PAGE_SIZE_MAX}")))?;
                }
                "_cursor" => {
                    let mut parts = value.split('-');
                    let cursor = (|| {
                        Some(AuditSlot {
                            recorded_ms: parts.next()?.parse().ok()?,
                            block: parts.next()?.parse().ok()?,
                            slot: parts.next()?.parse().ok()?,
                        })
                    })();
                    query.cursor = Some(cursor.ok_or_else(|| ApiError::bad_request("_cursor is not one this server issued"))?);
                }
                "_format" => {}
                _ if lenient => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "AuditEvent search does not support '{other}' (supported: patient, agent-name, date, action, outcome, subtype, _count)"
                    )))
                }
            }
        }
        Ok(query)
    }

    fn matches(&self, record: &AuditRecord) -> bool {
        record.recorded_ms >= self.since_ms
            && record.recorded_ms < self.until_ms
            && self.agent.as_ref().is_none_or(|agent| &record.agent.name == agent)
            && self.action.as_ref().is_none_or(|action| record.action.code() == action)
            && self.outcome.as_ref().is_none_or(|outcome| record.outcome.fhir_code() == outcome)
            && self.subtype.as_ref().is_none_or(|subtype| record.kind.name() == subtype)
            && self.patient.as_ref().is_none_or(|patient| record.patients.contains(patient))
    }
}

/// Who may run `query`: auditors anything; a patient only about themselves.
pub fn authorize(principal: &Principal, query: &AuditQuery) -> Result<(), ApiError> {
    match principal.role {
        Role::Auditor if principal.user_id.is_some() => Ok(()),
        Role::Patient => match (&principal.fhir_user, &query.patient) {
            (Some((t, own)), Some(asked)) if t == "Patient" && own == asked => Ok(()),
            _ => Err(ApiError::forbidden("a patient may ask who accessed their own record: patient=<your id>")),
        },
        _ => Err(ApiError::forbidden("the audit trail is for auditors (and for patients, about their own record)")),
    }
}

/// Records with where they are.
pub type Found = Vec<(AuditSlot, AuditRecord)>;

/// One page of matching records, newest first, and the cursor of the next page.
pub fn search(store: &Store, query: &AuditQuery) -> Result<(Found, Option<AuditSlot>), ApiError> {
    let wanted = usize::try_from(query.count).unwrap_or(usize::MAX);
    let mut found = Vec::with_capacity(wanted);
    if let Some(patient) = &query.patient {
        // The index by patient; other conditions filter what it returns.
        let mut cursor = query.cursor;
        loop {
            let slots = store.audit_slots_of_patient(patient, query.since_ms, query.until_ms, cursor, query.count)?;
            let exhausted = slots.len() < wanted;
            for (slot, stored) in slots.iter().zip(store.audit_records_at(&slots)?) {
                cursor = Some(*slot);
                let record = decode(&stored.record)?;
                if query.matches(&record) {
                    found.push((*slot, record));
                    if found.len() == wanted {
                        return Ok((found, cursor));
                    }
                }
            }
            if exhausted {
                return Ok((found, None));
            }
        }
    }
    // Without a patient: the blocks of the time window, newest first.
    let mut before_block = query.cursor.map(|c| c.block.saturating_add(1));
    let mut scanned = 0u32;
    loop {
        let blocks = store.audit_blocks_newest_first(query.since_ms, query.until_ms, before_block, 64)?;
        let Some(oldest) = blocks.last() else { return Ok((found, None)) };
        before_block = Some(oldest.seq);
        for block in &blocks {
            scanned += 1;
            let records = store.open_audit_block(block)?;
            for (slot, bytes) in records.iter().enumerate().rev() {
                let slot =
                    AuditSlot { recorded_ms: 0, block: block.seq, slot: u32::try_from(slot).unwrap_or(u32::MAX) };
                if let Some(cursor) = query.cursor {
                    if (slot.block, slot.slot) >= (cursor.block, cursor.slot) {
                        continue;
                    }
                }
                let record = decode(bytes)?;
                if query.matches(&record) {
                    let slot = AuditSlot { recorded_ms: record.recorded_ms, ..slot };
                    found.push((slot, record));
                    if found.len() == wanted {
                        return Ok((found, Some(slot)));
                    }
                }
            }
        }
        if scanned >= AUDIT_SCAN_BLOCKS_MAX {
            return Ok((found, before_block.map(|block| AuditSlot { recorded_ms: 0, block, slot: 0 })));
        }
    }
}

fn decode(bytes: &[u8]) -> Result<AuditRecord, ApiError> {
    medvault_audit::decode(bytes).map_err(|e| ApiError::internal(format!("an audit record does not decode: {e}")))
}

/// The id of the AuditEvent at `slot`.
pub fn event_id(slot: &AuditSlot) -> String {
    format!("{}-{}", slot.block, slot.slot)
}

/// A searchset Bundle of the page.
pub fn bundle(
    base: &str,
    self_url: &str,
    page: &[(AuditSlot, AuditRecord)],
    next: Option<String>,
    identity: &ServerIdentity,
    now_ms: i64,
) -> serde_json::Value {
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(next) = next {
        links.push(json!({"relation": "next", "url": next}));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": medvault_base::time::format_instant(now_ms),
        "link": links,
        "entry": page.iter().map(|(slot, record)| {
            let id = event_id(slot);
            json!({
                "fullUrl": format!("{base}/AuditEvent/{id}"),
                "resource": medvault_audit::to_audit_event(record, &id, identity),
                "search": {"mode": "match"},
            })
        }).collect::<Vec<_>>(),
    })
}

/// The record of the search itself.
pub fn search_record(
    principal: &Principal,
    query: &AuditQuery,
    url: &str,
    request_id: &str,
    now_ms: i64,
) -> AuditRecord {
    let mut record =
        AuditRecord::new(now_ms, EventKind::SearchType, crate::audit::agent(principal, None, false), request_id);
    record.query = Some(url.to_string());
    record.patients = query.patient.iter().cloned().collect();
    record
}
