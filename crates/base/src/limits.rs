//! Every quantity that input can grow has a named limit here; `docs/LIMITS.md` lists them
//! with the error a client sees when it is exceeded. A tidy test keeps the two in step.

/// Largest request body accepted, in bytes (a transaction Bundle of a few thousand resources).
pub const REQUEST_BODY_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest single resource accepted in a create or update, in bytes.
pub const RESOURCE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most entries in one `transaction` or `batch` Bundle.
pub const BUNDLE_ENTRIES_MAX: usize = 10_000;
/// Deepest nesting of JSON objects and arrays in a request body.
pub const JSON_DEPTH_MAX: usize = 64;
/// Longest JSON string value (one FHIR primitive), in bytes.
pub const STRING_BYTES_MAX: usize = 1024 * 1024;
/// Default and largest page of a history Bundle.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
pub const PAGE_SIZE_MAX: u32 = 1000;
/// Longest URL path and query accepted, in bytes.
pub const REQUEST_URL_BYTES_MAX: usize = 8 * 1024;
/// Write jobs waiting for the single writer; beyond this, writers wait (back-pressure).
pub const WRITE_QUEUE_JOBS_MAX: usize = 4096;
/// Most jobs one group commit takes from the queue.
pub const GROUP_COMMIT_JOBS_MAX: usize = 512;
/// Most resource versions one group commit writes (a large transaction still commits alone).
pub const GROUP_COMMIT_VERSIONS_MAX: usize = 20_000;
/// Unwrapped data keys kept in memory.
pub const DATA_KEY_CACHE_ENTRIES_MAX: usize = 65_536;
/// Patient compartment tokens kept in memory (patient id to HMAC).
pub const COMPARTMENT_TOKEN_CACHE_ENTRIES_MAX: usize = 65_536;
/// Longest client name of an access token, in bytes.
pub const CLIENT_NAME_BYTES_MAX: usize = 128;
/// Longest line of an NDJSON import file, in bytes.
pub const NDJSON_LINE_BYTES_MAX: usize = RESOURCE_BYTES_MAX;
/// Resources per commit when importing NDJSON or collection Bundles.
pub const IMPORT_CHUNK_RESOURCES_MAX: usize = 1000;
/// Times a write is re-prepared after losing a race for the same resource or key.
pub const WRITE_RETRIES_MAX: u32 = 16;
/// Logins between password and second factor held at once; beyond this, 503.
pub const LOGIN_TICKETS_MAX: usize = 10_000;
/// Sessions whose recent activity is remembered in memory (the store has the rest).
pub const SESSION_ACTIVITY_ENTRIES_MAX: usize = 100_000;
/// Unknown user names whose failed logins are counted, so they are throttled like real ones.
pub const UNKNOWN_USER_ENTRIES_MAX: usize = 100_000;
/// Longest user name, in bytes (it is the author of writes in the ledger).
pub const USERNAME_BYTES_MAX: usize = 64;
/// Version rows a history page scans for ones the caller may see before it ends early
/// (with a `next` link), so a clinician's history of a large store stays bounded.
pub const HISTORY_SCAN_ROWS_MAX: usize = 10_000;
/// Care-relationship answers kept in memory (each valid until the next commit).
pub const CARE_CACHE_ENTRIES_MAX: usize = 100_000;
/// Sessions whose rows are kept in memory (each valid until the next commit).
pub const SESSION_CACHE_ENTRIES_MAX: usize = 100_000;
/// Largest single value (column) in a backup's row stream, in bytes: SQLite's own limit on
/// a value (`SQLITE_MAX_LENGTH`), so that whatever a store holds restores. (An audit block,
/// one per group commit, has no byte limit of its own: 16 MiB, the limit before, is reached
/// by a group of large transactions.)
pub const BACKUP_VALUE_BYTES_MAX: usize = 1_000_000_000;
/// Largest blob (one content-defined chunk) in a backup repository, in bytes.
pub const BACKUP_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Largest pack file a backup reader accepts, in bytes (the writer aims at 16 MiB).
pub const BACKUP_PACK_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most blobs in one pack.
pub const BACKUP_PACK_BLOBS_MAX: usize = 65_536;
/// Most levels of trees above a table's data blobs.
pub const BACKUP_TREE_DEPTH_MAX: usize = 8;
/// Largest config, manifest, erasure or prune record, in bytes.
pub const BACKUP_OBJECT_BYTES_MAX: usize = 256 * 1024;
/// Default page size of a search without `_count`.
pub const SEARCH_COUNT_DEFAULT: usize = 20;
/// Largest `_count` of a search (strict handling refuses more; lenient clamps and warns).
pub const SEARCH_COUNT_MAX: usize = 1000;
/// Most query parameters (name=value pairs) in one search.
pub const SEARCH_PARAMETERS_MAX: usize = 64;
/// Most comma-separated values (alternatives) in one search parameter.
pub const SEARCH_VALUES_MAX: usize = 64;
/// Most `_include` plus `_revinclude` parameters in one search.
pub const SEARCH_INCLUDES_MAX: usize = 16;
/// Index candidates a search page examines (decrypting each) before it ends early with a
/// `next` link: bounds a search whose clauses the index cannot decide alone.
pub const SEARCH_SCAN_CANDIDATES_MAX: usize = 10_000;
/// Matches a `_sort` on something other than the default order may sort in memory.
pub const SEARCH_SORT_CANDIDATES_MAX: usize = 10_000;
/// Candidates a count (`_total`, `_summary=count`) may decrypt when the index alone cannot decide it.
pub const SEARCH_COUNT_DECRYPT_MAX: usize = 100_000;
/// Resources a chained parameter or a `_has` may resolve to.
pub const SEARCH_CHAIN_RESULTS_MAX: usize = 1_000;
/// Resources `_include` and `_revinclude` may add to one page.
pub const SEARCH_INCLUDED_RESOURCES_MAX: usize = 1_000;
/// Patients a restricted caller's search intersects with through their compartment tokens;
/// a caller who sees more is checked candidate by candidate instead.
pub const SEARCH_COMPARTMENT_STREAMS_MAX: usize = 64;
/// Search documents the writer lets wait unposted (`docs/format/index-token.md`, *Pending
/// documents and posting*): reaching it, it posts them all, in token order, at once.
pub const SEARCH_PENDING_DOCS_MAX: usize = 10_000;
/// Entries one slice of a post inserts, in one transaction of the writer's, between group
/// commits: bounds how long a post holds the write lock at a time.
pub const SEARCH_POST_SLICE_ENTRIES_MAX: usize = 50_000;
/// Longest a pending search document waits to be posted when fewer are pending.
pub const SEARCH_POST_DELAY_MS: u64 = 1_000;
/// Resources read, decrypted and indexed per committed batch of a reindex.
pub const REINDEX_BATCH_RESOURCES_MAX: usize = 500;
/// Memory a restore gives each index it rebuilds (and each level of ledger nodes) before it
/// sorts on disk instead, in bytes.
pub const BACKUP_RESTORE_SORT_BYTES_MAX: usize = 256 * 1024 * 1024;
