//! Pending search documents (`docs/format/index-token.md`, *Pending documents and
//! posting*): a new document's tokens wait in `search_docs` + `search_pending` until the
//! writer posts many documents at once into `search_entries`, in token order and in slices
//! of `SEARCH_POST_SLICE_ENTRIES_MAX` entries. Searches read both; this module keeps the
//! pending tokens in memory for them, and reads them from the tables when that copy does
//! not match a search's snapshot.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use rusqlite::{params, Connection, OptionalExtension};

use crate::engine::SearchToken;
use crate::StoreError;

/// `meta` row counting the changes of the post state: a post started, a slice, a post done.
pub(crate) const POSTS: &str = "search_posts";
/// `meta` row present while a post is in progress: the first token not posted yet.
pub(crate) const POST_CURSOR: &str = "search_post_cursor";
/// `meta` row every data-changing commit increments (`store-schema.md`).
const DATA_GENERATION: &str = "data_generation";

/// One generation's pending lists: token → rids of the pending documents holding it.
type Lists = HashMap<SearchToken, BTreeSet<i64>>;

/// How a write changed the pending documents.
#[derive(Debug, Clone)]
pub(crate) enum PendingChange {
    /// One generation's pending document of one resource was written or deleted (a
    /// document being posted stays in its post until it is deleted).
    Doc {
        generation: u32,
        rid: i64,
        /// Tokens of the pending document it replaced or deleted.
        removed: Vec<SearchToken>,
        /// Tokens of the document it wrote (empty for a deletion).
        added: Vec<SearchToken>,
    },
    /// Every pending document joined a new post; nothing of it is posted yet.
    PostStarted,
    /// The post's entries with tokens below `cursor` are posted.
    PostStep { cursor: SearchToken },
    /// The post's documents are posted.
    PostFinished,
}

thread_local! {
    /// Changes recorded on the writer thread since the start of the current transaction;
    /// applied to the shared copy once it commits.
    static CHANGES: RefCell<Vec<PendingChange>> = const { RefCell::new(Vec::new()) };
}

/// Records a change made inside the writer's open transaction.
pub(crate) fn record(change: PendingChange) {
    CHANGES.with(|changes| changes.borrow_mut().push(change));
}

/// How many changes are recorded (to roll back to, with [`truncate`]).
pub(crate) fn mark() -> usize {
    CHANGES.with(|changes| changes.borrow().len())
}

/// Forgets the changes recorded after `mark` (their savepoint was rolled back).
pub(crate) fn truncate(mark: usize) {
    CHANGES.with(|changes| changes.borrow_mut().truncate(mark));
}

/// Takes every recorded change (the transaction committed, or failed and they are dropped).
pub(crate) fn take() -> Vec<PendingChange> {
    CHANGES.with(|changes| std::mem::take(&mut *changes.borrow_mut()))
}

/// The counters a copy of the pending documents is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stamp {
    pub posts: i64,
    pub data_generation: i64,
}

impl Stamp {
    /// The counters as the connection's current snapshot (or open transaction) has them.
    pub fn read(connection: &Connection) -> Result<Stamp, StoreError> {
        let read = |name: &str| -> Result<i64, StoreError> {
            let value: Option<i64> = connection
                .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE name = ?1")?
                .query_row([name], |row| row.get(0))
                .optional()?;
            Ok(value.unwrap_or(0))
        };
        Ok(Stamp { posts: read(POSTS)?, data_generation: read(DATA_GENERATION)? })
    }
}

/// A post in progress: its documents, and the first token not posted yet (entries of its
/// documents with smaller tokens are in `search_entries`).
#[derive(Debug, Clone, Default)]
struct Post {
    docs: HashSet<(u32, i64)>,
    cursor: SearchToken,
}

/// The pending documents as of one state of the tables.
#[derive(Debug, Default)]
struct Pending {
    lists: HashMap<u32, Lists>,
    docs: HashSet<(u32, i64)>,
    post: Option<Post>,
}

impl Pending {
    /// Reads the pending documents (of one generation, or all) and the post in progress.
    fn read(connection: &Connection, generation: Option<u32>) -> Result<Pending, StoreError> {
        let mut pending = Pending {
            post: read_cursor(connection)?.map(|cursor| Post { cursor, ..Post::default() }),
            ..Pending::default()
        };
        let mut statement = connection.prepare_cached(
            "SELECT p.gen, p.rid, p.posting, d.tokens FROM search_pending p
             JOIN search_docs d ON d.gen = p.gen AND d.rid = p.rid
             WHERE ?1 IS NULL OR p.gen = ?1",
        )?;
        let mut rows = statement.query(params![generation])?;
        while let Some(row) = rows.next()? {
            let generation: u32 = row.get(0)?;
            let rid: i64 = row.get(1)?;
            let posting: bool = row.get(2)?;
            let tokens = crate::sqlite::decode_tokens(row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?);
            let lists = pending.lists.entry(generation).or_default();
            for token in tokens {
                lists.entry(token).or_default().insert(rid);
            }
            pending.docs.insert((generation, rid));
            if let (true, Some(post)) = (posting, pending.post.as_mut()) {
                post.docs.insert((generation, rid));
            }
        }
        Ok(pending)
    }

    /// The rids of `generation`'s pending documents whose `token` is not posted, descending.
    fn rids(&self, generation: u32, token: &SearchToken) -> Vec<i64> {
        let Some(rids) = self.lists.get(&generation).and_then(|lists| lists.get(token)) else { return Vec::new() };
        match &self.post {
            Some(post) if *token < post.cursor => {
                rids.iter().rev().filter(|&&rid| !post.docs.contains(&(generation, rid))).copied().collect()
            }
            _ => rids.iter().rev().copied().collect(),
        }
    }

    fn apply(&mut self, change: PendingChange) {
        match change {
            PendingChange::Doc { generation, rid, removed, added } => {
                let lists = self.lists.entry(generation).or_default();
                for token in &removed {
                    if let Some(rids) = lists.get_mut(token) {
                        rids.remove(&rid);
                        if rids.is_empty() {
                            lists.remove(token);
                        }
                    }
                }
                for token in &added {
                    lists.entry(token.clone()).or_default().insert(rid);
                }
                if added.is_empty() {
                    self.docs.remove(&(generation, rid));
                    if let Some(post) = self.post.as_mut() {
                        post.docs.remove(&(generation, rid));
                    }
                } else {
                    self.docs.insert((generation, rid));
                }
            }
            PendingChange::PostStarted => {
                self.post = Some(Post { docs: self.docs.clone(), cursor: SearchToken::new() });
            }
            PendingChange::PostStep { cursor } => {
                if let Some(post) = self.post.as_mut() {
                    post.cursor = cursor;
                }
            }
            PendingChange::PostFinished => {
                let Some(post) = self.post.take() else { return };
                for (generation, lists) in self.lists.iter_mut() {
                    lists.retain(|_, rids| {
                        rids.retain(|rid| !post.docs.contains(&(*generation, *rid)));
                        !rids.is_empty()
                    });
                }
                self.docs.retain(|doc| !post.docs.contains(doc));
            }
        }
    }
}

/// The cursor of the post in progress, if any.
pub(crate) fn read_cursor(connection: &Connection) -> Result<Option<SearchToken>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([POST_CURSOR], |row| row.get(0))
        .optional()?)
}

#[derive(Debug, Default)]
struct Copy {
    /// `None` until loaded, and after a change it could not follow: searches then read
    /// the tables until the writer loads it again.
    stamp: Option<Stamp>,
    pending: Pending,
}

/// The writing process's copy of the pending documents' tokens, by generation and token.
#[derive(Debug, Default)]
pub(crate) struct PendingIndex {
    copy: RwLock<Copy>,
    held: AtomicBool,
    /// Changes whenever a document of the post in progress may have changed (a write to
    /// one, a reload): a [`PostPlan`] made before is stale.
    post_docs_version: std::sync::atomic::AtomicU64,
}

impl PendingIndex {
    /// Pending documents in the copy, and whether a post is in progress.
    pub fn state(&self) -> (usize, bool) {
        self.copy.read().map(|copy| (copy.pending.docs.len(), copy.pending.post.is_some())).unwrap_or((0, false))
    }

    /// Reads every pending document from the tables, as the connection sees them now.
    pub fn load(&self, connection: &Connection) -> Result<(), StoreError> {
        let transaction = connection.unchecked_transaction()?;
        let stamp = Stamp::read(&transaction)?;
        let pending = Pending::read(&transaction, None)?;
        drop(transaction);
        let mut copy = self.copy.write().map_err(|_| StoreError::Poisoned)?;
        *copy = Copy { stamp: Some(stamp), pending };
        self.post_docs_version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// See `post_docs_version`.
    pub fn post_docs_version(&self) -> u64 {
        self.post_docs_version.load(Ordering::SeqCst)
    }

    /// After a commit that started at `before` and ended at `after`: applies its changes if
    /// the copy was current at `before`, else reloads it (another process wrote between).
    pub fn committed(
        &self,
        connection: &Connection,
        before: Stamp,
        after: Stamp,
        changes: Vec<PendingChange>,
    ) -> Result<(), StoreError> {
        {
            let mut copy = self.copy.write().map_err(|_| StoreError::Poisoned)?;
            if copy.stamp == Some(before) {
                for change in changes {
                    if let (PendingChange::Doc { generation, rid, .. }, Some(post)) = (&change, &copy.pending.post) {
                        if post.docs.contains(&(*generation, *rid)) {
                            self.post_docs_version.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    copy.pending.apply(change);
                }
                copy.stamp = Some(after);
                return Ok(());
            }
            copy.stamp = None;
        }
        self.load(connection)
    }

    /// Whether the writer posts on its own (`SEARCH_PENDING_DOCS_MAX`,
    /// `SEARCH_POST_DELAY_MS`); tests hold it to search pending documents.
    pub fn posts_automatically(&self) -> bool {
        !self.held.load(Ordering::SeqCst)
    }

    pub fn hold(&self, hold: bool) {
        self.held.store(hold, Ordering::SeqCst);
    }

    /// Marks the copy unusable (it could not be brought up to date).
    pub fn invalidate(&self) {
        if let Ok(mut copy) = self.copy.write() {
            copy.stamp = None;
        }
        self.post_docs_version.fetch_add(1, Ordering::SeqCst);
    }
}

/// Pending documents as one search sees them: the shared copy while it matches the
/// search's snapshot, else the snapshot's own rows.
pub(crate) struct PendingView<'c> {
    connection: &'c Connection,
    shared: Option<&'c PendingIndex>,
    /// The snapshot's counters.
    stamp: Stamp,
    /// Read from the snapshot, per generation, once needed.
    local: RefCell<HashMap<u32, Pending>>,
}

impl<'c> PendingView<'c> {
    /// Call inside the search's read transaction: the first read fixes its snapshot.
    pub fn open(connection: &'c Connection, shared: Option<&'c PendingIndex>) -> Result<Self, StoreError> {
        let stamp = Stamp::read(connection)?;
        Ok(Self { connection, shared, stamp, local: RefCell::new(HashMap::new()) })
    }

    /// The rids of `generation`'s pending documents holding `token` that are not posted
    /// yet, descending.
    pub fn rids(&self, generation: u32, token: &SearchToken) -> Result<Vec<i64>, StoreError> {
        if let Some(shared) = self.shared {
            let copy = shared.copy.read().map_err(|_| StoreError::Poisoned)?;
            // The same post state (the tables hold exactly what the copy says is posted),
            // and every commit of the snapshot applied; later commits may be in it too (the
            // caller tests each candidate in its snapshot).
            if copy
                .stamp
                .is_some_and(|s| s.posts == self.stamp.posts && s.data_generation >= self.stamp.data_generation)
            {
                return Ok(copy.pending.rids(generation, token));
            }
        }
        let mut local = self.local.borrow_mut();
        let pending = match local.entry(generation) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Pending::read(self.connection, Some(generation))?)
            }
        };
        Ok(pending.rids(generation, token))
    }
}

/// Starts a post inside the writer's open transaction: every pending document joins it.
/// Returns how many; none if a post is in progress (finish it first) or nothing is pending.
pub(crate) fn start_post(connection: &Connection) -> Result<usize, StoreError> {
    if read_cursor(connection)?.is_some() {
        return Ok(0);
    }
    let joined = connection.execute("UPDATE search_pending SET posting = 1", [])?;
    if joined == 0 {
        return Ok(0);
    }
    connection.execute(
        "INSERT INTO meta (name, value) VALUES (?1, X'') ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [POST_CURSOR],
    )?;
    count_post_change(connection)?;
    record(PendingChange::PostStarted);
    Ok(joined)
}

/// The sorted entries of the post in progress not posted yet, kept by the writer between
/// slices so that each slice does not read and sort the post's documents again. Valid
/// while no document of the post changed (`version`) and its next entry is at the cursor.
#[derive(Debug)]
pub(crate) struct PostPlan {
    version: u64,
    entries: Vec<(SearchToken, i64)>,
    next: usize,
}

/// Posts the next slice of the post in progress inside the writer's open transaction: the
/// entries of its documents from the cursor on, in token order, at most `max_entries`
/// (and the rest of the last token's). `plan` (with the documents' `version`) is the
/// writer's sorted entries from the previous slice, used if still valid, else read again.
/// Returns whether the post is finished (or there was none).
pub(crate) fn post_slice(
    connection: &Connection,
    max_entries: usize,
    plan: &mut Option<PostPlan>,
    version: u64,
) -> Result<bool, StoreError> {
    let Some(cursor) = read_cursor(connection)? else {
        *plan = None;
        return Ok(true);
    };
    let valid = plan.as_ref().is_some_and(|plan| {
        plan.version == version
            && match plan.entries.get(plan.next) {
                Some((token, _)) => *token == cursor,
                None => false,
            }
            && (plan.next > 0 || cursor.is_empty())
    });
    if !valid {
        *plan = Some(PostPlan { version, entries: read_post(connection, &cursor)?, next: 0 });
    }
    let Some(plan) = plan.as_mut() else { return Ok(true) };
    let entries = &plan.entries;
    let start = plan.next;
    let mut end = entries.len().min(start.saturating_add(max_entries.max(1)));
    // A token is posted whole: its entries all below the next cursor.
    while end > start && end < entries.len() && entries[end].0 == entries[end - 1].0 {
        end += 1;
    }
    {
        let mut insert = connection
            .prepare_cached("INSERT INTO search_entries (token, rid) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?;
        for (token, rid) in &entries[start..end] {
            insert.execute(params![&token[..], rid])?;
        }
    }
    plan.next = end;
    count_post_change(connection)?;
    match entries.get(end) {
        Some((next, _)) => {
            connection.execute("UPDATE meta SET value = ?2 WHERE name = ?1", params![POST_CURSOR, &next[..]])?;
            record(PendingChange::PostStep { cursor: next.clone() });
            Ok(false)
        }
        None => {
            plan.entries = Vec::new();
            connection.execute("DELETE FROM search_pending WHERE posting = 1", [])?;
            connection.execute("DELETE FROM meta WHERE name = ?1", [POST_CURSOR])?;
            record(PendingChange::PostFinished);
            Ok(true)
        }
    }
}

/// The entries of the post's documents with tokens from `cursor` on, sorted.
fn read_post(connection: &Connection, cursor: &SearchToken) -> Result<Vec<(SearchToken, i64)>, StoreError> {
    let mut entries: Vec<(SearchToken, i64)> = Vec::new();
    let mut statement = connection.prepare_cached(
        "SELECT p.rid, d.tokens FROM search_pending p JOIN search_docs d ON d.gen = p.gen AND d.rid = p.rid
         WHERE p.posting = 1",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let rid: i64 = row.get(0)?;
        let tokens = crate::sqlite::decode_tokens(row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?);
        entries.extend(tokens.into_iter().filter(|token| token >= cursor).map(|token| (token, rid)));
    }
    // Token order: neighbouring inserts share a page, so each page is dirtied once.
    entries.sort_unstable();
    Ok(entries)
}

/// Finishes the post in progress, then posts every document still pending, inside the
/// writer's open transaction. Returns how many documents the new post took.
pub(crate) fn post_all(connection: &Connection) -> Result<usize, StoreError> {
    let mut plan = None;
    while !post_slice(connection, usize::MAX, &mut plan, 0)? {}
    let posted = start_post(connection)?;
    while !post_slice(connection, usize::MAX, &mut plan, 0)? {}
    Ok(posted)
}

fn count_post_change(connection: &Connection) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO meta (name, value) VALUES (?1, '1')
         ON CONFLICT (name) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [POSTS],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Connection {
        let connection = Connection::open_in_memory().expect("sqlite");
        connection
            .execute_batch(
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
                 CREATE TABLE search_entries (token BLOB NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (token, rid)) WITHOUT ROWID;
                 CREATE TABLE search_docs (gen INTEGER NOT NULL, rid INTEGER NOT NULL, tokens BLOB NOT NULL, PRIMARY KEY (gen, rid)) WITHOUT ROWID;
                 CREATE TABLE search_pending (gen INTEGER NOT NULL, rid INTEGER NOT NULL, posting INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gen, rid)) WITHOUT ROWID;",
            )
            .expect("schema");
        connection
    }

    fn tokens(names: &[u8]) -> Vec<SearchToken> {
        let mut tokens: Vec<SearchToken> = names.iter().map(|n| vec![*n; 16]).collect();
        tokens.sort();
        tokens
    }

    fn entries(connection: &Connection) -> Vec<(SearchToken, i64)> {
        connection
            .prepare("SELECT token, rid FROM search_entries ORDER BY token, rid")
            .expect("select")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn a_kept_plan_is_dropped_when_a_document_of_the_post_changes_or_the_cursor_moved_elsewhere() {
        let connection = tables();
        for (rid, names) in [(1, &b"acegi"[..]), (2, b"bdfhj"), (3, b"acfj")] {
            crate::sqlite::replace_search_doc(&connection, 1, rid, Some(&tokens(names))).expect("doc");
        }
        assert_eq!(start_post(&connection).expect("start"), 3);
        let mut plan = None;
        // Two slices from the kept plan: tokens a..c (the whole of each token's entries).
        assert!(!post_slice(&connection, 2, &mut plan, 7).expect("slice"));
        assert!(!post_slice(&connection, 2, &mut plan, 7).expect("slice"));
        assert_eq!(read_cursor(&connection).expect("cursor"), Some(vec![b'd'; 16]));
        // A document of the post changes: below the cursor at once, the rest by later
        // slices, which must not use the plan made before (the writer bumps the version).
        crate::sqlite::replace_search_doc(&connection, 1, 1, Some(&tokens(b"bz"))).expect("update");
        assert!(!post_slice(&connection, 4, &mut plan, 8).expect("slice"));
        // A slice that was rolled back would leave the plan ahead of the stored cursor.
        let mut ahead = Some(PostPlan { version: 8, entries: vec![(vec![b'q'; 16], 9)], next: 0 });
        assert!(!post_slice(&connection, 1, &mut ahead, 8).expect("slice"));
        plan = ahead;
        while !post_slice(&connection, 2, &mut plan, 8).expect("slice") {}
        let mut expected: Vec<(SearchToken, i64)> = Vec::new();
        for (rid, names) in [(1, &b"bz"[..]), (2, b"bdfhj"), (3, b"acfj")] {
            expected.extend(tokens(names).into_iter().map(|token| (token, rid)));
        }
        expected.sort();
        assert_eq!(entries(&connection), expected, "exactly the documents' current tokens");
        let left: i64 = connection.query_row("SELECT COUNT(*) FROM search_pending", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0);
        assert_eq!(read_cursor(&connection).expect("cursor"), None);
    }
}
