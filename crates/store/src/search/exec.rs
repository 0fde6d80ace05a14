//! Plans evaluated over the posting lists: every node answers "the largest rid ≤ x in my
//! set" (`seek`), so a plan is read in descending rid order (newest resources first) and
//! an intersection is a leapfrog join that skips what the other lists exclude. A posting
//! list is read in chunks through its `(token, rid)` primary key.

use rusqlite::{params, Connection};

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
    And(Vec<Node<'c>>),
    Minus(Box<Node<'c>>, Box<Node<'c>>),
}

impl<'c> Node<'c> {
    /// Builds the nodes of a plan; intersections are ordered smallest first (estimated).
    pub fn build(connection: &'c Connection, plan: &Plan) -> Result<Node<'c>, StoreError> {
        Ok(match plan {
            Plan::Empty => Node::Empty,
            Plan::Token(token) => Node::List(PostingList::new(connection, token.clone())),
            Plan::Or(children) => {
                Node::Or(children.iter().map(|child| Node::build(connection, child)).collect::<Result<_, _>>()?)
            }
            Plan::And(children) => {
                let mut sized = children
                    .iter()
                    .map(|child| Ok((estimate(connection, child)?, child)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                sized.sort_by_key(|(size, _)| *size);
                Node::And(sized.into_iter().map(|(_, child)| Node::build(connection, child)).collect::<Result<_, _>>()?)
            }
            Plan::Minus(universe, minus) => {
                Node::Minus(Box::new(Node::build(connection, universe)?), Box::new(Node::build(connection, minus)?))
            }
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
            Node::And(children) => {
                let mut target = at_most;
                'restart: loop {
                    for child in children.iter_mut() {
                        match child.seek(target)? {
                            None => return Ok(None),
                            Some(rid) if rid < target => {
                                target = rid;
                                continue 'restart;
                            }
                            Some(_) => {}
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

/// One token's rids, read downwards in chunks.
pub(crate) struct PostingList<'c> {
    connection: &'c Connection,
    token: SearchToken,
    /// Rids fetched, descending: every rid of the list in `[last, from]` is here.
    buffer: std::collections::VecDeque<i64>,
    from: Option<i64>,
    /// The last fetch returned fewer rows than asked: nothing is below the buffer.
    exhausted: bool,
    chunk: i64,
}

impl<'c> PostingList<'c> {
    fn new(connection: &'c Connection, token: SearchToken) -> Self {
        Self { connection, token, buffer: Default::default(), from: None, exhausted: false, chunk: CHUNK_MIN }
    }

    fn seek(&mut self, at_most: i64) -> Result<Option<i64>, StoreError> {
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

/// The number of rids in one token's list.
pub(crate) fn count_token(connection: &Connection, token: &SearchToken) -> Result<u64, StoreError> {
    let count: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM search_entries WHERE token = ?1")?
        .query_row([&token[..]], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// A cheap upper-ish estimate of a plan's size, to order an intersection.
fn estimate(connection: &Connection, plan: &Plan) -> Result<i64, StoreError> {
    Ok(match plan {
        Plan::Empty => 0,
        Plan::Token(token) => connection
            .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM search_entries WHERE token = ?1 LIMIT ?2)")?
            .query_row(params![&token[..], ESTIMATE_PROBE], |row| row.get(0))?,
        Plan::Or(children) if children.len() > ESTIMATE_BRANCHES_MAX => {
            ESTIMATE_PROBE.saturating_mul(i64::try_from(children.len()).unwrap_or(i64::MAX))
        }
        Plan::Or(children) => {
            let mut sum = 0i64;
            for child in children {
                sum = sum.saturating_add(estimate(connection, child)?);
            }
            sum
        }
        Plan::And(children) => {
            let mut least = i64::MAX;
            for child in children {
                least = least.min(estimate(connection, child)?);
            }
            least
        }
        Plan::Minus(universe, _) => estimate(connection, universe)?,
    })
}
