//! FHIR search over sealed data (`docs/format/index-token.md`): keyed tokens written with
//! every version, a planner and executor over them, exact post-filtering on the decrypted
//! resources, sealed paging cursors, and the online rebuild of the index.
//!
//! Architecture invariants:
//! - the index holds keyed tokens and row ids only; no value reaches the engine in the clear;
//! - a returned resource was decrypted and satisfies every clause by
//!   `medvault_fhir::search::matches`: the index only proposes candidates;
//! - a restricted caller's plan is intersected with their patients' compartments before
//!   anything is counted or returned, and every returned version is checked again.
//!
//! The executor reads SQLite directly (like the accounts tables) until the `Engine` trait
//! grows a posting-list interface.

mod exec;
pub(crate) mod pending;
mod plan;
mod rebuild;
pub(crate) mod state;
pub mod token;

use std::cmp::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use medvault_base::limits::{
    SEARCH_CHAIN_RESULTS_MAX, SEARCH_COMPARTMENT_STREAMS_MAX, SEARCH_COUNT_DECRYPT_MAX, SEARCH_SCAN_CANDIDATES_MAX,
    SEARCH_SORT_CANDIDATES_MAX,
};
use medvault_fhir::search::{Clause, IndexValue, Query, QueryValue};
use serde::{Deserialize, Serialize};

pub use rebuild::{ReindexOptions, ReindexReport};
pub use state::definitions_digest;

use crate::engine::SearchDoc;
use crate::{Store, StoreError, StoredVersion};
use exec::Node;
use pending::PendingView;
use plan::Plan;
use state::{Generation, SearchState};

/// Whose records a search may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every patient's (service clients, the operator).
    All,
    /// Shared data and the records of these patients (compartment tokens) only.
    Patients(Vec<[u8; 32]>),
}

impl Visibility {
    fn sees(&self, compartment: Option<&[u8; 32]>) -> bool {
        match (self, compartment) {
            (_, None) | (Visibility::All, _) => true,
            (Visibility::Patients(patients), Some(compartment)) => {
                patients.iter().any(|p| medvault_crypto::constant_time_eq(p, compartment))
            }
        }
    }
}

/// How to run one search.
#[derive(Debug, Clone)]
pub struct SearchOptions<'a> {
    pub visibility: &'a Visibility,
    /// Resources per page; 0 for a count alone.
    pub page_size: usize,
    /// The cursor of a `next` link this store issued for the same query.
    pub cursor: Option<&'a str>,
    /// SHA-256 of the query as the server normalized it: binds cursors to their query.
    pub query_digest: [u8; 32],
    /// Compute the number of matches.
    pub total: bool,
}

/// A page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// Current versions, decrypted and checked, in result order.
    pub matches: Vec<StoredVersion>,
    /// The cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
    /// The page before this one, if it is known.
    pub previous: Option<Previous>,
    /// The number of matches, when asked for and computable within the limits.
    pub total: Option<u64>,
    /// What the search could not do (a total left out), for an OperationOutcome.
    pub warnings: Vec<String>,
}

/// What `status` and `serve` need to know of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchIndexStatus {
    pub active_generation: Option<u32>,
    /// Searches are answered (an active generation built from this build's definitions).
    pub searchable: bool,
    pub building_generation: Option<u32>,
}

/// One sort field's key for one resource; `None` sorts last in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SortKey {
    Int(i64),
    Ordered(u64),
    Text(String),
}

/// Where a page starts: after this rid (default order) or after this (sort keys, rid).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    rid: i64,
    #[serde(default)]
    keys: Option<Vec<Option<SortKey>>>,
}

/// What a paging cursor holds, sealed: the page's start, and the starts of the pages
/// before it (`None`: the first page), newest last, for `previous` links.
#[derive(Debug, Serialize, Deserialize)]
struct CursorState {
    at: Position,
    back: Vec<Option<Position>>,
}

/// Pages a cursor remembers for `previous` links; further back, `previous` is left out.
const BACK_PAGES_MAX: usize = 32;

/// The page before the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// The first page: the query without a cursor.
    First,
    Cursor(String),
}

/// A query reduced to plain clauses (chains and `_has` resolved), with its plan.
struct Planned {
    resource_type: Option<String>,
    clauses: Vec<Clause>,
    plan: Plan,
    /// The plan's tokens decide every clause.
    exact: bool,
    /// The caller's restriction is checked candidate by candidate, not in the plan.
    filtered: bool,
    /// The index generation the plan's tokens are of.
    generation: u32,
}

impl Store {
    /// Runs a search: candidates from the index, each decrypted and tested, in the default
    /// order (newest resources first) or `query.sort`.
    pub fn search(&self, query: &Query, options: &SearchOptions<'_>) -> Result<SearchResult, StoreError> {
        let generation = self.searchable_generation()?;
        let planned = self.plan_query(&generation, query, options.visibility)?;
        let cursor = options.cursor.map(|c| self.open_cursor(&generation, &options.query_digest, c)).transpose()?;
        let start = cursor.as_ref().map(|c| c.at.clone());
        let (result, next) = if query.sort.is_empty() {
            self.run_default(&planned, options, start)?
        } else {
            self.run_sorted(&planned, &query.sort, options, start)?
        };
        self.with_links(&generation, options, cursor, result, next)
    }

    /// Seals the `next` and `previous` cursors of a page.
    fn with_links(
        &self,
        generation: &Generation,
        options: &SearchOptions<'_>,
        cursor: Option<CursorState>,
        mut result: SearchResult,
        next: Option<Position>,
    ) -> Result<SearchResult, StoreError> {
        let (at, mut back) = match cursor {
            Some(cursor) => (Some(cursor.at), cursor.back),
            None => (None, Vec::new()),
        };
        result.previous = match (&at, back.last()) {
            (None, _) => None,
            (Some(_), None) => None,
            (Some(_), Some(None)) => Some(Previous::First),
            (Some(_), Some(Some(position))) => {
                let earlier = back[..back.len() - 1].to_vec();
                let state = CursorState { at: position.clone(), back: earlier };
                Some(Previous::Cursor(self.seal_cursor(generation, &options.query_digest, &state)?))
            }
        };
        if let Some(next) = next {
            back.push(at);
            if back.len() > BACK_PAGES_MAX {
                back.remove(0);
            }
            let state = CursorState { at: next, back };
            result.next_cursor = Some(self.seal_cursor(generation, &options.query_digest, &state)?);
        }
        Ok(result)
    }

    /// The records of one patient's compartment (`Patient/{id}/$everything`), newest first.
    pub fn search_compartment(
        &self,
        compartment: &[u8; 32],
        options: &SearchOptions<'_>,
    ) -> Result<SearchResult, StoreError> {
        let generation = self.searchable_generation()?;
        let planned = Planned {
            resource_type: None,
            clauses: Vec::new(),
            plan: Plan::Token(generation.key.compartment_token(compartment)),
            exact: true,
            filtered: true,
            generation: generation.number(),
        };
        let cursor = options.cursor.map(|c| self.open_cursor(&generation, &options.query_digest, c)).transpose()?;
        let start = cursor.as_ref().map(|c| c.at.clone());
        let (result, next) = self.run_default(&planned, options, start)?;
        self.with_links(&generation, options, cursor, result, next)
    }

    /// The state of the search index.
    pub fn search_status(&self) -> Result<SearchIndexStatus, StoreError> {
        let state = self.search_state()?;
        Ok(SearchIndexStatus {
            active_generation: state.active.as_ref().map(|g| g.number()),
            searchable: state.searchable().is_some(),
            building_generation: state.building.as_ref().map(|b| b.generation.number()),
        })
    }

    /// The cached index state, reloaded when `meta` says otherwise (another process
    /// rebuilt the index).
    pub(crate) fn search_state(&self) -> Result<Arc<SearchState>, StoreError> {
        let cached = self.search.read().map_err(|_| StoreError::Poisoned)?.clone();
        let recorded = self.engine.query(crate::sqlite::read_search_generations)?;
        if recorded == cached.generations() {
            return Ok(cached);
        }
        self.reload_search_state()
    }

    pub(crate) fn reload_search_state(&self) -> Result<Arc<SearchState>, StoreError> {
        let state = Arc::new(state::load(&self.engine, &self.keyring, self.danger_plaintext_index)?);
        *self.search.write().map_err(|_| StoreError::Poisoned)? = state.clone();
        Ok(state)
    }

    fn searchable_generation(&self) -> Result<Arc<Generation>, StoreError> {
        let state = self.search_state()?;
        state.searchable().cloned().ok_or_else(|| {
            StoreError::SearchUnavailable(match &state.building {
                Some(_) => "the search index is being rebuilt; searches are answered when it is done".into(),
                None => "the search index must be rebuilt (`medvault reindex`, or restart `medvault serve`)".into(),
            })
        })
    }

    /// Posts the pending search documents now, in token order (`docs/format/index-token.md`,
    /// *Pending documents and posting*); the writer also does on its own. Returns how many
    /// documents were posted.
    pub fn post_search_documents(&self) -> Result<u64, StoreError> {
        let posted = self.engine.execute(Box::new(|c| Ok(i64::try_from(pending::post_all(c)?).unwrap_or(i64::MAX))))?;
        Ok(u64::try_from(posted).unwrap_or(0))
    }

    /// One step of posting, as the writer takes between group commits: starts a post of
    /// every pending document if none is in progress, then posts its next slice of at most
    /// `max_entries` entries. Returns whether the post is finished. For tests and diagnosis.
    pub fn post_search_documents_step(&self, max_entries: usize) -> Result<bool, StoreError> {
        let finished = self.engine.execute(Box::new(move |c| {
            pending::start_post(c)?;
            Ok(i64::from(pending::post_slice(c, max_entries, &mut None, 0)?))
        }))?;
        Ok(finished != 0)
    }

    /// Stops (`true`) or resumes the writer's own posting of pending search documents.
    /// Searches find pending documents either way; this is for tests and diagnosis.
    pub fn hold_search_posts(&self, hold: bool) {
        self.engine.pending_index().hold(hold);
    }

    /// Pending search documents, as the writer's copy counts them.
    pub fn pending_search_documents(&self) -> u64 {
        self.engine.pending_index().state().0 as u64
    }

    /// The search documents of a version about to be written, one per generation a write
    /// indexes into (`None` for a deletion: its documents are removed).
    pub(crate) fn search_docs(
        &self,
        state: &SearchState,
        resource_type: &str,
        json: Option<&[u8]>,
        compartment: Option<&[u8; 32]>,
    ) -> Result<Vec<SearchDoc>, StoreError> {
        let generations = state.writable();
        if generations.is_empty() {
            return Ok(Vec::new());
        }
        let entries = match json {
            Some(json) => {
                let value: serde_json::Value = serde_json::from_slice(json)
                    .map_err(|_| StoreError::Corrupt("a stamped resource is not JSON".into()))?;
                medvault_fhir::search::extract(&value)
            }
            None => Vec::new(),
        };
        Ok(generations
            .iter()
            .map(|generation| SearchDoc {
                generation: generation.number(),
                tokens: if json.is_some() {
                    generation.key.document(resource_type, compartment, &entries)
                } else {
                    Vec::new()
                },
            })
            .collect())
    }

    /// Resolves chains and `_has`, and plans the clauses with the caller's restriction.
    fn plan_query(
        &self,
        generation: &Generation,
        query: &Query,
        visibility: &Visibility,
    ) -> Result<Planned, StoreError> {
        let resource_type = query.resource_type.as_str();
        let mut clauses = Vec::with_capacity(query.clauses.len() + query.has.len());
        for clause in &query.clauses {
            clauses.push(match &clause.chain {
                None => clause.clone(),
                Some(chain) => {
                    let inner = Query {
                        resource_type: chain.target_type.clone(),
                        clauses: vec![Clause {
                            param: chain.param.clone(),
                            modifier: clause.modifier.clone(),
                            chain: None,
                            values: clause.values.clone(),
                        }],
                        ..Query::default()
                    };
                    let found = self.search_bounded(generation, &inner, visibility, "a chained parameter")?;
                    Clause {
                        param: clause.param.clone(),
                        modifier: None,
                        chain: None,
                        values: found
                            .iter()
                            .map(|stored| QueryValue::Reference {
                                resource_type: Some(stored.resource_type.clone()),
                                id: Some(stored.id.clone()),
                                url: format!("{}/{}", stored.resource_type, stored.id),
                            })
                            .collect(),
                    }
                }
            });
        }
        for has in &query.has {
            let inner =
                Query { resource_type: has.source_type.clone(), clauses: vec![has.clause.clone()], ..Query::default() };
            let sources = self.search_bounded(generation, &inner, visibility, "a _has parameter")?;
            let mut ids: Vec<String> = Vec::new();
            for source in &sources {
                let value: serde_json::Value = serde_json::from_slice(&source.json)
                    .map_err(|_| StoreError::Corrupt("a stored resource is not JSON".into()))?;
                for entry in medvault_fhir::search::extract(&value) {
                    if entry.param != has.reference_param {
                        continue;
                    }
                    if let IndexValue::Reference { resource_type: Some(target), id: Some(id), .. } = entry.value {
                        if target == resource_type && !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
            clauses.push(Clause {
                param: "_id".into(),
                modifier: None,
                chain: None,
                values: ids.into_iter().map(|id| QueryValue::Token { system: None, code: Some(id) }).collect(),
            });
        }
        let approximate = |value: &QueryValue| approximate_date(value, self.clock.now_ms());
        let mut plans = Vec::with_capacity(clauses.len() + 2);
        let mut exact = true;
        for clause in &clauses {
            let clause_plan = plan::plan_clause(&generation.key, resource_type, clause, &approximate);
            exact &= clause_plan.exact;
            plans.push(clause_plan.plan);
        }
        if plans.is_empty() {
            plans.push(Plan::Token(generation.key.type_token(resource_type)));
        }
        let mut filtered = false;
        if let Visibility::Patients(patients) = visibility {
            if patients.len() <= SEARCH_COMPARTMENT_STREAMS_MAX {
                let mut visible: Vec<Plan> =
                    patients.iter().map(|p| Plan::Token(generation.key.compartment_token(p))).collect();
                visible.push(Plan::Token(generation.key.shared_token()));
                plans.push(Plan::or(visible));
            } else {
                // Checked candidate by candidate (`visible_rid`), also when counting.
                filtered = true;
            }
        }
        Ok(Planned {
            resource_type: Some(resource_type.to_string()),
            clauses,
            plan: Plan::and(plans),
            exact,
            filtered,
            generation: generation.number(),
        })
    }

    /// All matches of an inner search (a chain, a `_has`), refused beyond
    /// `SEARCH_CHAIN_RESULTS_MAX`.
    fn search_bounded(
        &self,
        generation: &Generation,
        query: &Query,
        visibility: &Visibility,
        what: &str,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let planned = self.plan_query(generation, query, visibility)?;
        let options = SearchOptions {
            visibility,
            page_size: SEARCH_CHAIN_RESULTS_MAX,
            cursor: None,
            query_digest: [0; 32],
            total: false,
        };
        let (result, next) = self.run_default(&planned, &options, None)?;
        if next.is_some() {
            return Err(StoreError::SearchRefused(format!(
                "{what} matches more than {SEARCH_CHAIN_RESULTS_MAX} resources; narrow it"
            )));
        }
        Ok(result.matches)
    }

    /// The current version of a candidate if it is a match the caller may see.
    fn candidate(
        &self,
        connection: &rusqlite::Connection,
        planned: &Planned,
        visibility: &Visibility,
        rid: i64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let Some(row) = crate::sqlite::current_by_rid(connection, rid)? else { return Ok(None) };
        if row.deleted || planned.resource_type.as_deref().is_some_and(|t| t != row.resource_type) {
            return Ok(None);
        }
        let stored = match self.open_row(&row) {
            Ok(stored) => stored,
            // A crypto-shredded patient's records cannot be searched.
            Err(StoreError::KeyDestroyed) => return Ok(None),
            Err(error) => return Err(error),
        };
        if !visibility.sees(stored.compartment.as_ref()) {
            return Ok(None);
        }
        if planned.clauses.is_empty() {
            return Ok(Some(stored));
        }
        let value: serde_json::Value = serde_json::from_slice(&stored.json)
            .map_err(|_| StoreError::Integrity(format!("row {} opened to something that is not JSON", row.seq)))?;
        let matched = planned.clauses.iter().all(|clause| medvault_fhir::search::matches(&value, clause));
        Ok(matched.then_some(stored))
    }

    /// A page in the default order (rid descending), and where the next one starts.
    fn run_default(
        &self,
        planned: &Planned,
        options: &SearchOptions<'_>,
        start: Option<Position>,
    ) -> Result<(SearchResult, Option<Position>), StoreError> {
        let start = start.map_or(Some(i64::MAX), |position| position.rid.checked_sub(1));
        let (matches, next_rid, total, warnings) = self.engine.query(|connection| {
            let transaction = connection.unchecked_transaction()?;
            let mut matches = Vec::new();
            let mut next_rid = None;
            let mut scanned = 0usize;
            let pending = PendingView::open(&transaction, Some(self.engine.pending_index()))?;
            let mut node = Node::build(&transaction, &pending, &planned.plan, planned.generation)?;
            let mut at = start;
            if options.page_size == 0 {
                at = None;
            }
            while let Some(rid) = at.map(|at| node.seek(at)).transpose()?.flatten() {
                if matches.len() == options.page_size || scanned >= SEARCH_SCAN_CANDIDATES_MAX {
                    next_rid = Some(rid + 1);
                    break;
                }
                scanned += 1;
                if let Some(stored) = self.candidate(&transaction, planned, options.visibility, rid)? {
                    matches.push(stored);
                }
                at = rid.checked_sub(1);
            }
            let mut warnings = Vec::new();
            let total = if !options.total {
                None
            } else if start == Some(i64::MAX) && next_rid.is_none() && options.page_size > 0 {
                Some(matches.len() as u64)
            } else {
                self.count(&transaction, &pending, planned, options.visibility, &mut warnings)?
            };
            Ok((matches, next_rid, total, warnings))
        })?;
        let next = next_rid.map(|rid| Position { rid, keys: None });
        Ok((SearchResult { matches, total, warnings, ..SearchResult::default() }, next))
    }

    /// The number of matches: from the posting lists when the plan is exact, else by
    /// decrypting at most `SEARCH_COUNT_DECRYPT_MAX` candidates (`None` beyond).
    fn count(
        &self,
        connection: &rusqlite::Connection,
        pending: &PendingView<'_>,
        planned: &Planned,
        visibility: &Visibility,
        warnings: &mut Vec<String>,
    ) -> Result<Option<u64>, StoreError> {
        if planned.exact {
            if let (Plan::Token(token), false) = (&planned.plan, planned.filtered) {
                return exec::count_token(connection, pending, planned.generation, token).map(Some);
            }
            let mut node = Node::build(connection, pending, &planned.plan, planned.generation)?;
            let mut count = 0u64;
            let mut at = Some(i64::MAX);
            while let Some(rid) = at.map(|at| node.seek(at)).transpose()?.flatten() {
                if !planned.filtered || self.visible_rid(connection, visibility, rid)? {
                    count += 1;
                }
                at = rid.checked_sub(1);
            }
            return Ok(Some(count));
        }
        let mut node = Node::build(connection, pending, &planned.plan, planned.generation)?;
        let mut count = 0u64;
        let mut examined = 0usize;
        let mut at = Some(i64::MAX);
        while let Some(rid) = at.map(|at| node.seek(at)).transpose()?.flatten() {
            examined += 1;
            if examined > SEARCH_COUNT_DECRYPT_MAX {
                warnings.push(format!(
                    "the total was not computed: more than {SEARCH_COUNT_DECRYPT_MAX} candidates would have to be decrypted"
                ));
                return Ok(None);
            }
            count += u64::from(self.candidate(connection, planned, visibility, rid)?.is_some());
            at = rid.checked_sub(1);
        }
        Ok(Some(count))
    }

    /// Whether the caller may see the current version of `rid` (by its data key, no decryption).
    fn visible_rid(
        &self,
        connection: &rusqlite::Connection,
        visibility: &Visibility,
        rid: i64,
    ) -> Result<bool, StoreError> {
        let Some((key_id, deleted)) = crate::sqlite::current_key_by_rid(connection, rid)? else { return Ok(false) };
        if deleted {
            return Ok(false);
        }
        let (_, compartment) = self.keyring.sealer_and_compartment(self.engine.as_ref(), key_id)?;
        Ok(visibility.sees(compartment.as_ref()))
    }

    /// A page in `_sort` order: every match is decrypted and sorted (at most
    /// `SEARCH_SORT_CANDIDATES_MAX`), and the page taken after `start`.
    fn run_sorted(
        &self,
        planned: &Planned,
        sort: &[(String, bool)],
        options: &SearchOptions<'_>,
        start: Option<Position>,
    ) -> Result<(SearchResult, Option<Position>), StoreError> {
        let resource_type = planned.resource_type.clone().unwrap_or_default();
        let mut keyed: Vec<(Vec<Option<SortKey>>, i64)> = self.engine.query(|connection| {
            let transaction = connection.unchecked_transaction()?;
            let pending = PendingView::open(&transaction, Some(self.engine.pending_index()))?;
            let mut node = Node::build(&transaction, &pending, &planned.plan, planned.generation)?;
            let mut keyed = Vec::new();
            let mut examined = 0usize;
            let mut at = Some(i64::MAX);
            while let Some(rid) = at.map(|at| node.seek(at)).transpose()?.flatten() {
                examined += 1;
                if examined > SEARCH_COUNT_DECRYPT_MAX || keyed.len() >= SEARCH_SORT_CANDIDATES_MAX {
                    return Err(StoreError::SearchRefused(format!(
                        "_sort can order at most {SEARCH_SORT_CANDIDATES_MAX} matches; narrow the search"
                    )));
                }
                if let Some(stored) = self.candidate(&transaction, planned, options.visibility, rid)? {
                    keyed.push((sort_keys(&stored, &resource_type, sort)?, rid));
                }
                at = rid.checked_sub(1);
            }
            Ok(keyed)
        })?;
        let order = |a: &(Vec<Option<SortKey>>, i64), b: &(Vec<Option<SortKey>>, i64)| compare(a, b, sort);
        keyed.sort_by(order);
        let total = keyed.len() as u64;
        let start = match &start {
            None => 0,
            Some(start) => {
                let position = (start.keys.clone().unwrap_or_default(), start.rid);
                keyed.partition_point(|item| order(item, &position) != Ordering::Greater)
            }
        };
        let page: Vec<&(Vec<Option<SortKey>>, i64)> = keyed.iter().skip(start).take(options.page_size).collect();
        let more = start + page.len() < keyed.len();
        let matches = self.engine.query(|connection| {
            let transaction = connection.unchecked_transaction()?;
            let mut matches = Vec::with_capacity(page.len());
            for (_, rid) in &page {
                if let Some(stored) = self.candidate(&transaction, planned, options.visibility, *rid)? {
                    matches.push(stored);
                }
            }
            Ok(matches)
        })?;
        let next = match (more, page.last()) {
            (true, Some((keys, rid))) => Some(Position { rid: *rid, keys: Some(keys.clone()) }),
            _ => None,
        };
        Ok((SearchResult { matches, total: options.total.then_some(total), ..SearchResult::default() }, next))
    }

    fn cursor_sealer(&self, generation: &Generation) -> medvault_crypto::Sealer {
        medvault_crypto::Sealer::new(&generation.key.cursor_key())
    }

    fn cursor_identity<'a>(
        &'a self,
        generation: &Generation,
        digest: &'a [u8; 16],
    ) -> medvault_crypto::RecordIdentity<'a> {
        medvault_crypto::RecordIdentity {
            store_id: self.keyring.store_id(),
            resource_type: ":search-cursor",
            resource_key: digest,
            version: u64::from(generation.number()),
            deleted: false,
        }
    }

    fn seal_cursor(
        &self,
        generation: &Generation,
        query_digest: &[u8; 32],
        cursor: &CursorState,
    ) -> Result<String, StoreError> {
        let plaintext = serde_json::to_vec(cursor).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let digest: [u8; 16] = query_digest[..16].try_into().unwrap_or([0; 16]);
        let sealed = self.cursor_sealer(generation).seal(&self.cursor_identity(generation, &digest), &plaintext)?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    fn open_cursor(
        &self,
        generation: &Generation,
        query_digest: &[u8; 32],
        cursor: &str,
    ) -> Result<CursorState, StoreError> {
        let refused =
            || StoreError::SearchRefused("the paging cursor is not one this server issued for this search".into());
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| refused())?;
        let digest: [u8; 16] = query_digest[..16].try_into().unwrap_or([0; 16]);
        let plaintext = self
            .cursor_sealer(generation)
            .open(&self.cursor_identity(generation, &digest), &sealed)
            .map_err(|_| refused())?;
        serde_json::from_slice(&plaintext).map_err(|_| refused())
    }
}

/// The range an `ap` date matches: the value's range widened by 10 % of its distance from
/// now (R4's suggestion), here generously by 25 % and at least a day, so the candidates
/// include every resource the matcher's rule accepts.
fn approximate_date(value: &QueryValue, now_ms: i64) -> Option<(i64, i64)> {
    let QueryValue::Date { low, high, .. } = value else { return None };
    let distance = (now_ms.saturating_sub(*low)).unsigned_abs().max(now_ms.saturating_sub(*high).unsigned_abs());
    let width = (high.saturating_sub(*low)).unsigned_abs();
    let spread = i64::try_from(distance.max(width) / 4).unwrap_or(i64::MAX).max(86_400_000);
    Some((low.saturating_sub(spread), high.saturating_add(spread)))
}

/// The sort keys of a resource: per field, the lowest value ascending, the highest descending.
fn sort_keys(
    stored: &StoredVersion,
    resource_type: &str,
    sort: &[(String, bool)],
) -> Result<Vec<Option<SortKey>>, StoreError> {
    let value: serde_json::Value = serde_json::from_slice(&stored.json)
        .map_err(|_| StoreError::Corrupt("a stored resource is not JSON".into()))?;
    let entries = medvault_fhir::search::extract(&value);
    Ok(sort
        .iter()
        .map(|(param, descending)| {
            let _ = resource_type;
            let keys = entries.iter().filter(|e| &e.param == param).filter_map(|e| sort_key(&e.value, *descending));
            if *descending {
                keys.max_by(order_key)
            } else {
                keys.min_by(order_key)
            }
        })
        .collect())
}

fn sort_key(value: &IndexValue, descending: bool) -> Option<SortKey> {
    match value {
        IndexValue::Date { low, high } => Some(SortKey::Int(if descending { *high } else { *low })),
        IndexValue::String(text) => Some(SortKey::Text(text.clone())),
        IndexValue::Token { code, .. } => Some(SortKey::Text(code.clone())),
        IndexValue::Reference { url, .. } => Some(SortKey::Text(url.clone())),
        IndexValue::Uri(uri) => Some(SortKey::Text(uri.clone())),
        IndexValue::Number { value, low, high } | IndexValue::Quantity { value, low, high, .. } => {
            let bound = if descending { high.or(*value) } else { low.or(*value) };
            value.or(bound).and_then(token::number_key).map(SortKey::Ordered)
        }
        IndexValue::TokenText(_) | IndexValue::StringExact(_) => None,
    }
}

fn order_key(a: &SortKey, b: &SortKey) -> Ordering {
    match (a, b) {
        (SortKey::Int(a), SortKey::Int(b)) => a.cmp(b),
        (SortKey::Ordered(a), SortKey::Ordered(b)) => a.cmp(b),
        (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
        (SortKey::Int(_), _) => Ordering::Less,
        (_, SortKey::Int(_)) => Ordering::Greater,
        (SortKey::Ordered(_), _) => Ordering::Less,
        (_, SortKey::Ordered(_)) => Ordering::Greater,
    }
}

/// The result order of `_sort`: field by field (missing values last either way), then
/// newest resource first.
fn compare(a: &(Vec<Option<SortKey>>, i64), b: &(Vec<Option<SortKey>>, i64), sort: &[(String, bool)]) -> Ordering {
    for (index, (_, descending)) in sort.iter().enumerate() {
        let ordering = match (a.0.get(index).cloned().flatten(), b.0.get(index).cloned().flatten()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if *descending => order_key(&y, &x),
            (Some(x), Some(y)) => order_key(&x, &y),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    b.1.cmp(&a.1)
}
