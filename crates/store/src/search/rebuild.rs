//! The online rebuild of the search index (`docs/format/index-token.md`, *Generations*):
//! a new generation built in batches while reads and writes go on, then switched to in
//! one transaction; the old generation is then deleted in batches.

use std::sync::Arc;

use medvault_base::limits::REINDEX_BATCH_RESOURCES_MAX;
use rusqlite::{params, OptionalExtension};

use super::state::{self, definitions_digest, Generation, ACTIVE, BUILDING};
use crate::engine::SearchToken;
use crate::{Store, StoreError};

/// What a reindex should do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReindexOptions {
    /// Build under a new search key and erase the old one after the switch.
    pub rotate_key: bool,
    /// Rebuild even if the active generation is current.
    pub force: bool,
}

/// What a reindex did.
#[derive(Debug, Clone, Default)]
pub struct ReindexReport {
    /// The generation now active.
    pub generation: u32,
    /// Resources indexed (current, not deleted).
    pub resources: u64,
    /// The index was current: nothing was done.
    pub nothing_to_do: bool,
    pub rotated_key: bool,
}

/// Documents deleted per transaction when an old generation is dropped.
const DROP_BATCH_DOCS: i64 = 1000;

impl Store {
    /// Whether searches need a reindex first (none active, built from other definitions,
    /// or a build was interrupted).
    pub fn search_needs_reindex(&self) -> Result<bool, StoreError> {
        let state = self.reload_search_state()?;
        Ok(state.searchable().is_none() || state.building.is_some())
    }

    /// Builds a new index generation online and switches to it. `progress` is called with
    /// (resources done, resources in the store) after each batch.
    pub fn reindex(
        &self,
        options: ReindexOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ReindexReport, StoreError> {
        let current = self.reload_search_state()?;
        if !options.force && !options.rotate_key && current.searchable().is_some() && current.building.is_none() {
            let generation = current.active.as_ref().map_or(0, |g| g.number());
            return Ok(ReindexReport { generation, nothing_to_do: true, ..ReindexReport::default() });
        }
        let now_ms = self.clock.now_ms();
        let key_id = if options.rotate_key {
            state::add_key(&self.engine, &self.keyring, now_ms)?
        } else {
            state::ensure_key(&self.engine, &self.keyring, now_ms)?
        };
        let resumable = current.building.as_ref().filter(|b| {
            !options.force && b.generation.key.key_id == key_id && b.generation.digest == definitions_digest()
        });
        let (building, mut cursor) = match resumable {
            Some(building) => (building.generation.clone(), building.cursor),
            None => {
                let number = current.generations().iter().max().map_or(1, |g| g.saturating_add(1));
                let value = format!("{number} {key_id} {} -", definitions_digest());
                self.engine.execute(Box::new(move |c| {
                    c.execute(
                        "INSERT INTO meta (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        params![BUILDING, value.as_bytes()],
                    )?;
                    Ok(0)
                }))?;
                let state = self.reload_search_state()?;
                let building = state
                    .building
                    .as_ref()
                    .map(|b| b.generation.clone())
                    .ok_or_else(|| StoreError::Corrupt("the new index generation was not recorded".into()))?;
                (building, None)
            }
        };
        // From here on every write also indexes into the new generation.
        self.reload_search_state()?;
        let total = self
            .engine
            .query(|c| Ok(c.query_row("SELECT COUNT(*) FROM resources", [], |row| row.get::<_, i64>(0))?))?;
        let total = u64::try_from(total).unwrap_or(0);
        let mut done = match cursor {
            Some(cursor) => {
                let before = self.engine.query(|c| {
                    Ok(c.query_row("SELECT COUNT(*) FROM resources WHERE resource_key <= ?1", [&cursor[..]], |row| {
                        row.get::<_, i64>(0)
                    })?)
                })?;
                u64::try_from(before).unwrap_or(0)
            }
            None => 0,
        };
        progress(done, total);
        let mut indexed = 0u64;
        loop {
            let batch =
                self.engine.query(|c| crate::sqlite::current_batch(c, cursor.as_ref(), REINDEX_BATCH_RESOURCES_MAX))?;
            let Some((_, last)) = batch.last() else { break };
            let last_key = last.resource_key;
            let mut docs: Vec<(i64, [u8; 16], i64, Vec<SearchToken>)> = Vec::with_capacity(batch.len());
            for (rid, row) in &batch {
                if row.deleted {
                    continue;
                }
                let stored = match self.open_row(row) {
                    Ok(stored) => stored,
                    Err(StoreError::KeyDestroyed) => continue,
                    Err(error) => return Err(error),
                };
                let value: serde_json::Value = serde_json::from_slice(&stored.json).map_err(|_| {
                    StoreError::Integrity(format!("row {} opened to something that is not JSON", row.seq))
                })?;
                let entries = medvault_fhir::search::extract(&value);
                let tokens = building.key.document(&stored.resource_type, stored.compartment.as_ref(), &entries);
                docs.push((*rid, row.resource_key, row.seq, tokens));
            }
            indexed += docs.len() as u64;
            let expected = building.meta_value();
            let value = format!("{expected} {}", medvault_base::hex::encode(&last_key));
            let generation = building.number();
            self.engine.execute(Box::new(move |c| {
                check_building(c, &expected)?;
                let mut current = c.prepare_cached("SELECT seq, deleted FROM resources WHERE resource_key = ?1")?;
                for (rid, resource_key, seq, tokens) in &docs {
                    let now: Option<(i64, bool)> =
                        current.query_row([&resource_key[..]], |row| Ok((row.get(0)?, row.get(1)?))).optional()?;
                    // A write since the batch was read indexed the newer version itself.
                    if now == Some((*seq, false)) {
                        crate::sqlite::replace_search_doc(c, generation, *rid, Some(tokens))?;
                    }
                }
                c.execute("UPDATE meta SET value = ?2 WHERE name = ?1", params![BUILDING, value.as_bytes()])?;
                Ok(0)
            }))?;
            done += batch.len() as u64;
            cursor = Some(last_key);
            progress(done.min(total.max(done)), total.max(done));
        }
        self.switch_to(&building)?;
        let generation = building.number();
        self.drop_other_generations(generation)?;
        // The documents it wrote are pending; post them in one pass.
        self.post_search_documents()?;
        if options.rotate_key {
            let now_ms = self.clock.now_ms();
            self.engine.execute(Box::new(move |c| {
                let erased = c.execute(
                    "UPDATE keys SET wrapped = NULL, destroyed_ms = ?3
                     WHERE purpose = ?1 AND key_id != ?2 AND wrapped IS NOT NULL",
                    params![
                        medvault_crypto::KeyPurpose::SearchIndex as u8,
                        i64::try_from(key_id).unwrap_or(i64::MAX),
                        now_ms
                    ],
                )?;
                Ok(i64::try_from(erased).unwrap_or(0))
            }))?;
        }
        self.reload_search_state()?;
        Ok(ReindexReport { generation, resources: indexed, nothing_to_do: false, rotated_key: options.rotate_key })
    }

    /// Makes the built generation active, in one transaction.
    fn switch_to(&self, building: &Arc<Generation>) -> Result<(), StoreError> {
        let expected = building.meta_value();
        let active = building.meta_value();
        self.engine.execute(Box::new(move |c| {
            check_building(c, &expected)?;
            c.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![ACTIVE, active.as_bytes()],
            )?;
            c.execute("DELETE FROM meta WHERE name = ?1", [BUILDING])?;
            Ok(0)
        }))?;
        self.reload_search_state()?;
        Ok(())
    }

    /// Deletes the documents and entries of every generation but `keep`, in batches.
    fn drop_other_generations(&self, keep: u32) -> Result<(), StoreError> {
        loop {
            let deleted = self.engine.execute(Box::new(move |c| {
                let docs: Vec<(u32, i64)> = c
                    .prepare_cached("SELECT gen, rid FROM search_docs WHERE gen != ?1 LIMIT ?2")?
                    .query_map(params![keep, DROP_BATCH_DOCS], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (generation, rid) in &docs {
                    crate::sqlite::replace_search_doc(c, *generation, *rid, None)?;
                }
                Ok(i64::try_from(docs.len()).unwrap_or(0))
            }))?;
            if deleted == 0 {
                return Ok(());
            }
        }
    }
}

/// Fails unless `meta` still records the generation being built as `expected` (another
/// reindex may have replaced it).
fn check_building(c: &rusqlite::Connection, expected: &str) -> Result<(), StoreError> {
    let value: Option<Vec<u8>> =
        c.query_row("SELECT value FROM meta WHERE name = ?1", [BUILDING], |row| row.get(0)).optional()?;
    let current = value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    if current.starts_with(&format!("{expected} ")) || current == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict("another reindex replaced this one; run `medvault reindex` again".into()))
    }
}
