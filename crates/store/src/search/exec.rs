//! Plans evaluated over the posting lists: every node answers "the largest rid ≤ x in my
//! set" (`seek`), so a plan is read in descending rid order (newest resources first) and
//! an intersection is a leapfrog join that skips what the other lists exclude. A posting
//! list is read in chunks through its `(token, rid)` primary key, merged with the rids of
//! the pending documents that hold the token (`pending`).

use rusqlite::{params, Connection, OptionalExtension};

use super::pending::PendingView;
use super::plan::Plan;
use crate::engine::SearchToken;
use crate::StoreError;

/// First chunk of a posting list; later chunks double up to `CHUNK_MAX`.
const CHUNK_MIN: i64 = 32;
const CHUNK_MAX: i64 = 1024;
/// An estimate probes at most this many entries of a list.
const ESTIMATE_PROBE: i64 = 1024;
/// A union with more branches is estimated without probing them.
const ESTIMATE_BRANCHES_MAX: usize = 8;

pub(crate) enum Node<'c> {
    Empty,
    List(PostingList<'c>),
    Or(Vec<Node<'c>>),
    /// A leapfrog join of `streams`, each candidate then tested against `checks` with the
    /// resource's own tokens (`search_docs`): a union of many lists (a date range, the
    /// patients a clinician sees) costs one look-up per candidate instead of a seek in
    /// each of its lists.
    And {
        streams: Vec<Node<'c>>,
        checks: Vec<Check>,
        docs: Docs<'c>,
    },
    Minus(Box<Node<'c>>, Box<Node<'c>>),
}

/// Reads a resource's tokens in one generation.
pub(crate) struct Docs<'c> {
    connection: &'c Connection,
    generation: u32,
}

impl Docs<'_> {
    fn tokens(&self, rid: i64) -> Result<Vec<SearchToken>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT tokens FROM search_docs WHERE gen = ?1 AND rid = ?2")?
            .query_row(params![self.generation, rid], |row| row.get(0))
            .optional()?;
        Ok(crate::sqlite::decode_tokens(&blob.unwrap_or_default()))
    }
}

/// A plan as a test of one resource's tokens; a union of lists becomes a set, so a date
/// range of hundreds of buckets costs a few hash look-ups per candidate.
pub(crate) enum Check {
    Empty,
    Token(SearchToken),
    Any(std::collections::HashSet<SearchToken>),
    Or(Vec<Check>),
    And(Vec<Check>),
    Minus(Box<Check>, Box<Check>),
}

impl Check {
    fn of(plan: &Plan) -> Check {
        match plan {
            Plan::Empty => Check::Empty,
            Plan::Token(token) => Check::Token(token.clone()),
            Plan::Or(children) if children.iter().all(|c| matches!(c, Plan::Token(_))) => Check::Any(
                children.iter().filter_map(|c| if let Plan::Token(t) = c { Some(t.clone()) } else { None }).collect(),
            ),
            Plan::Or(children) => Check::Or(children.iter().map(Check::of).collect()),
            Plan::And(children) => Check::And(children.iter().map(Check::of).collect()),
            Plan::Minus(universe, minus) => Check::Minus(Box::new(Check::of(universe)), Box::new(Check::of(minus))),
        }
    }

    /// Whether a resource with these (sorted) tokens is in the set.
    fn holds(&self, tokens: &[SearchToken]) -> bool {
        match self {
            Check::Empty => false,
            Check::Token(token) => tokens.binary_search(token).is_ok(),
            Check::Any(set) => tokens.iter().any(|token| set.contains(token)),
            Check::Or(children) => children.iter().any(|child| child.holds(tokens)),
            Check::And(children) => children.iter().all(|child| child.holds(tokens)),
            Check::Minus(universe, minus) => universe.holds(tokens) && !minus.holds(tokens),
        }
    }
}

/// A plan read as a stream in an intersection: a single list, or a small union.
fn streams_well(plan: &Plan) -> bool {
    match plan {
        Plan::Token(_) | Plan::Empty => true,
        Plan::Or(children) => children.len() <= 4 && children.iter().all(|c| matches!(c, Plan::Token(_))),
        _ => false,
    }
}

impl<'c> Node<'c> {
    /// Builds the nodes of a plan in index generation `generation`: an intersection is
    /// driven by its smallest part (estimated); single lists join it, other parts are
    /// checked candidate by candidate.
    pub fn build(
        connection: &'c Connection,
        pending: &PendingView<'_>,
        plan: &Plan,
        generation: u32,
    ) -> Result<Node<'c>, StoreError> {
        Ok(match plan {
            Plan::Empty => Node::Empty,
            Plan::Token(token) => {
                Node::List(PostingList::new(connection, token.clone(), pending.rids(generation, token)?))
            }
            Plan::Or(children) => Node::Or(
                children
                    .iter()
                    .map(|child| Node::build(connection, pending, child, generation))
                    .collect::<Result<_, _>>()?,
            ),
            Plan::And(children) => {
                let mut sized = children
                    .iter()
                    .map(|child| Ok((estimate(connection, pending, generation, child)?, child)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                sized.sort_by_key(|(size, _)| *size);
                let mut streams = Vec::new();
                let mut checks = Vec::new();
                for (index, (_, child)) in sized.into_iter().enumerate() {
                    if index == 0 || streams_well(child) {
                        streams.push(Node::build(connection, pending, child, generation)?);
                    } else {
                        checks.push(Check::of(child));
                    }
                }
                Node::And { streams, checks, docs: Docs { connection, generation } }
            }
            Plan::Minus(universe, minus) => Node::Minus(
                Box::new(Node::build(connection, pending, universe, generation)?),
                Box::new(Node::build(connection, pending, minus, generation)?),
            ),
        })
    }

    /// The largest rid ≤ `at_most` in this set.
    pub fn seek(&mut self, at_most: i64) -> Result<Option<i64>, StoreError> {
        match self {
            Node::Empty => Ok(None),
            Node::List(list) => list.seek(at_most),
            Node::Or(children) => {
                let mut best = None;
                let mut index = 0;
                while index < children.len() {
                    match children[index].seek(at_most)? {
                        Some(rid) => {
                            best = best.max(Some(rid));
                            index += 1;
                        }
                        // Exhausted below `at_most`, and seeks only go down: drop it.
                        None => {
                            children.swap_remove(index);
                        }
                    }
                }
                Ok(best)
            }
            Node::And { streams, checks, docs } => {
                let mut target = at_most;
                'restart: loop {
                    for child in streams.iter_mut() {
                        match child.seek(target)? {
                            None => return Ok(None),
                            Some(rid) if rid < target => {
                                target = rid;
                                continue 'restart;
                            }
                            Some(_) => {}
                        }
                    }
                    if !checks.is_empty() {
                        let tokens = docs.tokens(target)?;
                        if !checks.iter().all(|check| check.holds(&tokens)) {
                            let Some(below) = target.checked_sub(1) else { return Ok(None) };
                            target = below;
                            continue 'restart;
                        }
                    }
                    return Ok(Some(target));
                }
            }
            Node::Minus(universe, minus) => {
                let mut target = at_most;
                loop {
                    let Some(rid) = universe.seek(target)? else { return Ok(None) };
                    if minus.seek(rid)? != Some(rid) {
                        return Ok(Some(rid));
                    }
                    let Some(below) = rid.checked_sub(1) else { return Ok(None) };
                    target = below;
                }
            }
        }
    }
}

/// One token's rids, read downwards in chunks, and its pending rids.
pub(crate) struct PostingList<'c> {
    connection: &'c Connection,
    token: SearchToken,
    /// The rids of the pending documents holding the token, descending (none of them has
    /// entries in `search_entries` yet).
    pending: Vec<i64>,
    /// Rids fetched, descending: every rid of the list in `[last, from]` is here.
    buffer: std::collections::VecDeque<i64>,
    from: Option<i64>,
    /// The last fetch returned fewer rows than asked: nothing is below the buffer.
    exhausted: bool,
    chunk: i64,
}

impl<'c> PostingList<'c> {
    fn new(connection: &'c Connection, token: SearchToken, pending: Vec<i64>) -> Self {
        Self { connection, token, pending, buffer: Default::default(), from: None, exhausted: false, chunk: CHUNK_MIN }
    }

    fn seek(&mut self, at_most: i64) -> Result<Option<i64>, StoreError> {
        let posted = self.seek_posted(at_most)?;
        let pending = self.pending.get(self.pending.partition_point(|&rid| rid > at_most)).copied();
        Ok(posted.max(pending))
    }

    fn seek_posted(&mut self, at_most: i64) -> Result<Option<i64>, StoreError> {
        if self.from.is_some_and(|from| at_most <= from) {
            while self.buffer.front().is_some_and(|&rid| rid > at_most) {
                self.buffer.pop_front();
            }
            if let Some(&rid) = self.buffer.front() {
                return Ok(Some(rid));
            }
            if self.exhausted {
                return Ok(None);
            }
        }
        self.fetch(at_most)
    }

    fn fetch(&mut self, at_most: i64) -> Result<Option<i64>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT rid FROM search_entries WHERE token = ?1 AND rid <= ?2 ORDER BY rid DESC LIMIT ?3",
        )?;
        let rids = statement
            .query_map(params![&self.token[..], at_most, self.chunk], |row| row.get::<_, i64>(0))?
            .collect::<Result<std::collections::VecDeque<i64>, _>>()?;
        self.exhausted = i64::try_from(rids.len()).unwrap_or(i64::MAX) < self.chunk;
        self.chunk = (self.chunk * 2).min(CHUNK_MAX);
        self.buffer = rids;
        self.from = Some(at_most);
        Ok(self.buffer.front().copied())
    }
}

/// The number of rids in one token's list, posted and pending.
pub(crate) fn count_token(
    connection: &Connection,
    pending: &PendingView<'_>,
    generation: u32,
    token: &SearchToken,
) -> Result<u64, StoreError> {
    let count: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM search_entries WHERE token = ?1")?
        .query_row([&token[..]], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0) + pending.rids(generation, token)?.len() as u64)
}

/// A cheap upper-ish estimate of a plan's size, to order an intersection.
fn estimate(
    connection: &Connection,
    pending: &PendingView<'_>,
    generation: u32,
    plan: &Plan,
) -> Result<i64, StoreError> {
    Ok(match plan {
        Plan::Empty => 0,
        Plan::Token(token) => {
            let posted: i64 = connection
                .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM search_entries WHERE token = ?1 LIMIT ?2)")?
                .query_row(params![&token[..], ESTIMATE_PROBE], |row| row.get(0))?;
            posted.saturating_add(i64::try_from(pending.rids(generation, token)?.len()).unwrap_or(i64::MAX))
        }
        Plan::Or(children) if children.len() > ESTIMATE_BRANCHES_MAX => {
            ESTIMATE_PROBE.saturating_mul(i64::try_from(children.len()).unwrap_or(i64::MAX))
        }
        Plan::Or(children) => {
            let mut sum = 0i64;
            for child in children {
                sum = sum.saturating_add(estimate(connection, pending, generation, child)?);
            }
            sum
        }
        Plan::And(children) => {
            let mut least = i64::MAX;
            for child in children {
                least = least.min(estimate(connection, pending, generation, child)?);
            }
            least
        }
        Plan::Minus(universe, _) => estimate(connection, pending, generation, universe)?,
    })
}
