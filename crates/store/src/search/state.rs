//! Which index generations exist, under which search keys, for which definitions
//! (`docs/format/index-token.md`, *Generations*), as recorded in `meta`.

use std::sync::{Arc, OnceLock};

use medvault_crypto::KeyPurpose;
use rusqlite::{params, OptionalExtension};

use super::token::{SearchKey, SCHEME};
use crate::engine::{Engine, SearchGenerations};
use crate::keyring::Keyring;
use crate::sqlite::SqliteEngine;
use crate::StoreError;

pub(crate) const ACTIVE: &str = "search_active";
pub(crate) const BUILDING: &str = "search_building";

/// One index generation: its number, key and definitions digest.
#[derive(Debug)]
pub(crate) struct Generation {
    pub key: SearchKey,
    pub digest: String,
}

impl Generation {
    pub fn number(&self) -> u32 {
        self.key.generation()
    }

    /// The `meta` value naming this generation (without a cursor).
    pub fn meta_value(&self) -> String {
        format!("{} {} {}", self.number(), self.key.key_id, self.digest)
    }
}

/// A generation being built, and how far (the last resource key done).
#[derive(Debug)]
pub(crate) struct Building {
    pub generation: Arc<Generation>,
    pub cursor: Option<[u8; 16]>,
}

#[derive(Debug, Default)]
pub(crate) struct SearchState {
    pub active: Option<Arc<Generation>>,
    pub building: Option<Building>,
}

impl SearchState {
    pub fn generations(&self) -> SearchGenerations {
        SearchGenerations {
            active: self.active.as_ref().map(|g| g.number()),
            building: self.building.as_ref().map(|b| b.generation.number()),
        }
    }

    /// Every generation a write indexes into.
    pub fn writable(&self) -> Vec<Arc<Generation>> {
        let mut generations: Vec<Arc<Generation>> = self.active.iter().cloned().collect();
        if let Some(building) = &self.building {
            if generations.iter().all(|g| g.number() != building.generation.number()) {
                generations.push(building.generation.clone());
            }
        }
        generations
    }

    /// The generation searches may use: active, and built from this build's definitions.
    pub fn searchable(&self) -> Option<&Arc<Generation>> {
        self.active.as_ref().filter(|g| g.digest == definitions_digest())
    }
}

/// SHA-256 over the token scheme and every supported parameter's definition, hex.
pub fn definitions_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let mut text = format!("{SCHEME}\nextraction {}\n", medvault_fhir::search::EXTRACTION_VERSION);
        for resource_type in medvault_fhir::resource_types() {
            for param in medvault_fhir::search::params(resource_type) {
                text.push_str(&format!(
                    "{}\0{}\0{}\0{}\0{}\n",
                    resource_type,
                    param.code,
                    param.kind.code(),
                    param.expression,
                    param.targets.join(",")
                ));
            }
        }
        medvault_base::hex::encode(&medvault_crypto::sha256(text.as_bytes()))
    })
}

/// A parsed `meta` value: generation, key id, digest, cursor.
fn parse(value: &[u8]) -> Option<(u32, u64, String, Option<[u8; 16]>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let generation = parts.next()?.parse().ok()?;
    let key_id = parts.next()?.parse().ok()?;
    let digest = parts.next()?.to_string();
    let cursor = match parts.next() {
        None | Some("-") => None,
        Some(hex) => Some(medvault_base::hex::decode(hex)?.try_into().ok()?),
    };
    Some((generation, key_id, digest, cursor))
}

/// Reads the generations from `meta` and unwraps their keys (`danger_plaintext`: only in a
/// `bench-plaintext-index` build, tokens in the clear).
pub(crate) fn load(
    engine: &SqliteEngine,
    keyring: &Keyring,
    danger_plaintext: bool,
) -> Result<SearchState, StoreError> {
    let generation = |value: &[u8]| -> Result<(Arc<Generation>, Option<[u8; 16]>), StoreError> {
        let (number, key_id, digest, cursor) =
            parse(value).ok_or_else(|| StoreError::Corrupt("a search index generation in meta is malformed".into()))?;
        let row = engine
            .key_by_id(key_id)?
            .filter(|row| row.purpose == KeyPurpose::SearchIndex as u8)
            .ok_or_else(|| StoreError::Corrupt(format!("search index key {key_id} is missing")))?;
        let secret = keyring.unwrap_store_key(&row, KeyPurpose::SearchIndex)?;
        let key = search_key(&secret, number, key_id, danger_plaintext);
        Ok((Arc::new(Generation { key, digest }), cursor))
    };
    let active = engine.meta(ACTIVE)?.map(|value| generation(&value)).transpose()?.map(|(g, _)| g);
    let building = engine
        .meta(BUILDING)?
        .map(|value| generation(&value))
        .transpose()?
        .map(|(generation, cursor)| Building { generation, cursor });
    Ok(SearchState { active, building })
}

fn search_key(secret: &medvault_crypto::Secret32, number: u32, key_id: u64, danger_plaintext: bool) -> SearchKey {
    #[cfg(feature = "bench-plaintext-index")]
    if danger_plaintext {
        return SearchKey::danger_plaintext_for_benchmark(secret, number, key_id);
    }
    // Without the benchmark feature the flag can only be false.
    assert!(!danger_plaintext, "a plaintext search index needs the bench-plaintext-index feature");
    SearchKey::new(secret, number, key_id)
}

/// The newest usable search key's id, creating one if the store has none (a store made
/// before format 4): inserted only if still absent, inside the writer's transaction.
pub(crate) fn ensure_key(engine: &SqliteEngine, keyring: &Keyring, now_ms: i64) -> Result<u64, StoreError> {
    if let Some(key_id) = newest_key(engine)? {
        return Ok(key_id);
    }
    let purpose = KeyPurpose::SearchIndex;
    let wrapped = keyring.wrap_store_key(&medvault_crypto::Secret32::random()?, purpose)?;
    engine.execute(Box::new(move |c| {
        let present: i64 = c.query_row(
            "SELECT COUNT(*) FROM keys WHERE purpose = ?1 AND wrapped IS NOT NULL",
            [purpose as u8],
            |row| row.get(0),
        )?;
        if present == 0 {
            c.execute(
                "INSERT INTO keys (purpose, compartment, wrapped, created_ms) VALUES (?1, NULL, ?2, ?3)",
                params![purpose as u8, wrapped, now_ms],
            )?;
        }
        Ok(0)
    }))?;
    newest_key(engine)?.ok_or_else(|| StoreError::Corrupt("the search key was not created".into()))
}

/// Adds a new search key (for a rotation) and returns its id.
pub(crate) fn add_key(engine: &SqliteEngine, keyring: &Keyring, now_ms: i64) -> Result<u64, StoreError> {
    let purpose = KeyPurpose::SearchIndex;
    let wrapped = keyring.wrap_store_key(&medvault_crypto::Secret32::random()?, purpose)?;
    let key_id = engine.execute(Box::new(move |c| {
        c.execute(
            "INSERT INTO keys (purpose, compartment, wrapped, created_ms) VALUES (?1, NULL, ?2, ?3)",
            params![purpose as u8, wrapped, now_ms],
        )?;
        Ok(c.last_insert_rowid())
    }))?;
    u64::try_from(key_id).map_err(|_| StoreError::Corrupt("negative key id".into()))
}

fn newest_key(engine: &SqliteEngine) -> Result<Option<u64>, StoreError> {
    Ok(engine
        .keys_by_purpose(KeyPurpose::SearchIndex as u8)?
        .into_iter()
        .filter(|row| row.wrapped.is_some())
        .map(|row| row.key_id)
        .max())
}

/// An empty store starts with generation 1 active: there is nothing to build. Done in the
/// writer, only if no generation is recorded and no resource exists yet.
pub(crate) fn activate_if_empty(engine: &SqliteEngine, key_id: u64) -> Result<(), StoreError> {
    let value = format!("1 {key_id} {}", definitions_digest());
    engine.execute(Box::new(move |c| {
        let recorded: Option<i64> = c
            .query_row("SELECT 1 FROM meta WHERE name IN (?1, ?2) LIMIT 1", params![ACTIVE, BUILDING], |row| row.get(0))
            .optional()?;
        let resources: Option<i64> = c.query_row("SELECT 1 FROM resources LIMIT 1", [], |row| row.get(0)).optional()?;
        if recorded.is_none() && resources.is_none() {
            c.execute("INSERT INTO meta (name, value) VALUES (?1, ?2)", params![ACTIVE, value.as_bytes()])?;
        }
        Ok(0)
    }))?;
    Ok(())
}
