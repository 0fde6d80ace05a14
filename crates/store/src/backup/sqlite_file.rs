//! Writes a SQLite database file page by page (file format 3,
//! <https://www.sqlite.org/fileformat2.html>): the restore's way to lay down a store's
//! b-trees in one sequential pass instead of a million `INSERT`s (decision 0001).
//!
//! It knows pages, cells, records and b-trees, nothing of medvault. Callers hand each tree
//! its entries already in key order; a rowid tree checks that its rowids increase.
//!
//! Invariants (asserted in release builds: a broken one stops the restore, it never leaves
//! a malformed file):
//! - pages are written in the order they are numbered, each exactly once; the lock-byte page
//!   (the page holding byte offset 2^30) is written as zeros and never used;
//! - every b-tree is balanced (all leaves at one depth), and every page except a root holds at
//!   least one cell, so SQLite's `integrity_check` finds nothing to report (the tests run it);
//! - page 1 is written last, so a file cut short by a crash is not a database at all.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Where a b-tree puts its pages. Every call appends complete pages and returns their
/// numbers, so that several trees can be written into one file at once.
pub trait PageSink {
    /// Appends one page; returns its number.
    fn append_page(&mut self, bytes: &[u8]) -> std::io::Result<u32>;
    /// Appends the overflow chain holding `rest` of a payload (each page: the next page's
    /// number, then up to `USABLE - 4` bytes); returns its first page.
    fn append_overflow(&mut self, rest: &[u8]) -> std::io::Result<u32>;
}

impl PageSink for PageFile {
    fn append_page(&mut self, bytes: &[u8]) -> std::io::Result<u32> {
        self.append(bytes)
    }

    fn append_overflow(&mut self, rest: &[u8]) -> std::io::Result<u32> {
        let pages: Vec<u32> = (0..rest.len().div_ceil(USABLE - 4)).map(|_| self.allocate()).collect();
        let mut page = [0u8; PAGE_BYTES];
        for (index, chunk) in rest.chunks(USABLE - 4).enumerate() {
            page.fill(0);
            let next = pages.get(index + 1).copied().unwrap_or(0);
            page[..4].copy_from_slice(&next.to_be_bytes());
            page[4..4 + chunk.len()].copy_from_slice(chunk);
            self.write(pages[index], &page)?;
        }
        Ok(pages[0])
    }
}

/// A [`PageFile`] shared by the threads that build b-trees side by side.
#[derive(Debug, Clone)]
pub struct SharedPages(Arc<Mutex<PageFile>>);

impl SharedPages {
    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, PageFile>> {
        self.0.lock().map_err(|_| std::io::Error::other("a thread writing the database panicked"))
    }

    /// Returns once every page given so far is written to the file (not yet synced).
    pub fn write_out(&self) -> std::io::Result<()> {
        self.lock()?.write_out()
    }

    /// The file back, once every other holder is gone.
    pub fn into_inner(self) -> std::io::Result<PageFile> {
        Arc::try_unwrap(self.0)
            .map_err(|_| std::io::Error::other("the database is still shared"))?
            .into_inner()
            .map_err(|_| std::io::Error::other("a thread writing the database panicked"))
    }
}

impl PageSink for SharedPages {
    fn append_page(&mut self, bytes: &[u8]) -> std::io::Result<u32> {
        self.lock()?.append(bytes)
    }

    fn append_overflow(&mut self, rest: &[u8]) -> std::io::Result<u32> {
        self.lock()?.append_overflow(rest)
    }
}

/// The page size of a new store (SQLite's default, what `Store::create` gets).
pub const PAGE_BYTES: usize = 4096;
/// Bytes written to the file in one call: large, because an `O_DIRECT` write returns only
/// once the disk has them (1 MiB writes ran at about half the disk's speed, 4 MiB at all of it).
const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Buffers of pages: one being filled, the rest queued for or being written.
const WRITE_BUFFERS: usize = 3;
/// What `O_DIRECT` needs a buffer's start aligned to (a page: more than any block size).
const DIRECT_ALIGN_BYTES: usize = PAGE_BYTES;
/// Bytes written through the page cache between two syncs (the last sync then has little left).
const SYNC_EVERY_BYTES: usize = 64 * 1024 * 1024;
/// Offset of SQLite's lock bytes; the page that holds it is never used.
const PENDING_BYTE_OFFSET: u64 = 0x4000_0000;
/// The 100-byte database header at the start of page 1.
const HEADER_BYTES: usize = 100;

const LEAF_TABLE: u8 = 0x0d;
const INTERIOR_TABLE: u8 = 0x05;
const LEAF_INDEX: u8 = 0x0a;
const INTERIOR_INDEX: u8 = 0x02;

/// The page number that holds SQLite's lock bytes.
pub fn lock_byte_page() -> u32 {
    (PENDING_BYTE_OFFSET / PAGE_BYTES as u64) as u32 + 1
}

/// A database file being written, page 1 last.
///
/// Pages are gathered into large buffers that a thread of its own writes to the file, so
/// that the threads building b-trees never wait on the disk. Where the file system allows
/// it the file is written with `O_DIRECT`: the pages go from those few reused buffers to the
/// disk without passing through the page cache, whose fresh pages (one per 4 KiB written,
/// each zeroed and mapped on a first touch) cost the restore more CPU than anything it
/// computes. Elsewhere the thread writes through the page cache and syncs what it wrote
/// every `SYNC_EVERY_BYTES`, so that the final sync has little left. Either way the file is
/// synced by the caller before it is trusted (decision 0001).
#[derive(Debug)]
pub struct PageFile {
    /// Pages not yet handed to the writing thread.
    buffer: AlignedBuffer,
    /// The next page number `write` accepts.
    next_write: u32,
    /// The last page number handed out.
    last_allocated: u32,
    /// The writing thread; `None` once it is stopped.
    writer: Option<FileWriter>,
}

/// The thread that writes full buffers to the file in order and hands them back.
#[derive(Debug)]
struct FileWriter {
    full: SyncSender<AlignedBuffer>,
    empty: Receiver<AlignedBuffer>,
    thread: JoinHandle<std::io::Result<File>>,
    /// Buffers handed to the thread and not yet back.
    in_flight: usize,
    /// Buffers made so far (at most `WRITE_BUFFERS`, the one being filled included).
    made: usize,
    /// Buffers back from the thread, for the next pages.
    spare: Vec<AlignedBuffer>,
}

/// Bytes whose start is aligned to `DIRECT_ALIGN_BYTES`, as `O_DIRECT` requires of a
/// buffer (its length and file offset are whole pages, which are aligned too).
#[derive(Debug)]
struct AlignedBuffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new(capacity: usize) -> Self {
        let bytes = vec![0u8; capacity + DIRECT_ALIGN_BYTES];
        // The first aligned address within the allocation (which has that much to spare).
        let address = bytes.as_ptr() as usize;
        let start = (DIRECT_ALIGN_BYTES - address % DIRECT_ALIGN_BYTES) % DIRECT_ALIGN_BYTES;
        Self { bytes, start, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.bytes.len() - DIRECT_ALIGN_BYTES
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn push(&mut self, page: &[u8]) {
        let at = self.start + self.len;
        self.bytes[at..at + page.len()].copy_from_slice(page);
        self.len += page.len();
    }
}

impl PageFile {
    /// Creates the file (it must not exist) with a placeholder of zeros for page 1.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        let direct = open_direct(path);
        let (full, to_write) = std::sync::mpsc::sync_channel::<AlignedBuffer>(WRITE_BUFFERS - 1);
        let (written, empty) = std::sync::mpsc::sync_channel::<AlignedBuffer>(WRITE_BUFFERS);
        let thread = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn(move || write_buffers(file, direct, to_write, written))?;
        let mut page_file = Self {
            buffer: AlignedBuffer::new(WRITE_BUFFER_BYTES),
            next_write: 1,
            last_allocated: 0,
            writer: Some(FileWriter { full, empty, thread, in_flight: 0, made: 1, spare: Vec::new() }),
        };
        let first = page_file.allocate();
        page_file.write(first, &[0u8; PAGE_BYTES])?;
        Ok(page_file)
    }

    /// The next free page number. Pages must then be written in the order they were allocated.
    pub fn allocate(&mut self) -> u32 {
        self.last_allocated += 1;
        if self.last_allocated == lock_byte_page() {
            self.last_allocated += 1;
        }
        assert!(self.last_allocated < u32::MAX / 2, "a database of 2^31 pages");
        self.last_allocated
    }

    pub fn write(&mut self, page: u32, bytes: &[u8]) -> std::io::Result<()> {
        assert_eq!(bytes.len(), PAGE_BYTES, "a page is {PAGE_BYTES} bytes");
        if self.next_write == lock_byte_page() {
            self.push(&[0u8; PAGE_BYTES])?;
            self.next_write += 1;
        }
        assert_eq!(page, self.next_write, "pages are written in the order they were allocated");
        assert!(page <= self.last_allocated, "page {page} was not allocated");
        self.push(bytes)?;
        self.next_write += 1;
        Ok(())
    }

    /// Allocates and writes one page.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u32> {
        let page = self.allocate();
        self.write(page, bytes)?;
        Ok(page)
    }

    /// Shares the file between threads, each appending whole pages (or whole overflow
    /// chains) under a lock: b-trees can then be built side by side, their pages
    /// interleaved in the file.
    pub fn share(self) -> SharedPages {
        SharedPages(Arc::new(Mutex::new(self)))
    }

    /// Writes the schema table (rooted at page 1) and the header, and returns the file,
    /// written but not yet synced.
    pub fn finish(mut self, schema: &[SchemaRow]) -> std::io::Result<File> {
        let page_one = schema_root(&mut self, schema)?;
        assert_eq!(self.next_write, self.last_allocated + 1, "every allocated page was written");
        let page_count = self.last_allocated;
        self.hand_over()?;
        let mut file = self.stop_writing()?;
        let mut page = AlignedBuffer::new(PAGE_BYTES);
        page.push(&page_one);
        page.bytes[page.start..page.start + HEADER_BYTES].copy_from_slice(&database_header(page_count));
        file.seek(SeekFrom::Start(0))?;
        file.write_all(page.filled())?;
        Ok(file)
    }
}

impl PageFile {
    fn push(&mut self, page: &[u8]) -> std::io::Result<()> {
        self.buffer.push(page);
        if self.buffer.len + PAGE_BYTES > self.buffer.capacity() {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the buffer's pages to the writing thread and takes an empty buffer: a new one
    /// while fewer than `WRITE_BUFFERS` exist, else the next one the thread is done with.
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buffer.len == 0 {
            return Ok(());
        }
        let writer = self.writer.as_mut().expect("the writing thread runs until finish");
        let next = if let Some(spare) = writer.spare.pop() {
            spare
        } else if writer.made < WRITE_BUFFERS {
            writer.made += 1;
            AlignedBuffer::new(WRITE_BUFFER_BYTES)
        } else {
            match writer.empty.recv() {
                Ok(empty) => {
                    writer.in_flight -= 1;
                    empty
                }
                Err(_) => return Err(self.writing_failed()),
            }
        };
        let full = std::mem::replace(&mut self.buffer, next);
        let writer = self.writer.as_mut().expect("the writing thread runs until finish");
        if writer.full.send(full).is_err() {
            return Err(self.writing_failed());
        }
        writer.in_flight += 1;
        Ok(())
    }

    /// Returns once every page given so far is written to the file (not yet synced).
    pub fn write_out(&mut self) -> std::io::Result<()> {
        self.hand_over()?;
        let writer = self.writer.as_mut().expect("the writing thread runs until finish");
        while writer.in_flight > 0 {
            match writer.empty.recv() {
                Ok(empty) => {
                    writer.in_flight -= 1;
                    writer.spare.push(empty);
                }
                Err(_) => return Err(self.writing_failed()),
            }
        }
        Ok(())
    }

    /// The writing thread stopped on an error: that error is the cause.
    fn writing_failed(&mut self) -> std::io::Error {
        match self.stop_writing() {
            Err(error) => error,
            Ok(_) => std::io::Error::other("the restore's writing thread stopped"),
        }
    }

    /// Waits for the writing thread to write everything handed to it; returns the file.
    fn stop_writing(&mut self) -> std::io::Result<File> {
        let FileWriter { full, empty, thread, .. } =
            self.writer.take().ok_or_else(|| std::io::Error::other("the restore's writing thread is gone"))?;
        drop(full);
        drop(empty);
        thread.join().map_err(|_| std::io::Error::other("the restore's writing thread panicked"))?
    }
}

impl Drop for PageFile {
    fn drop(&mut self) {
        // No thread outlives the file: an abandoned one ends once it has written what it holds.
        if self.writer.is_some() {
            let _ = self.stop_writing();
        }
    }
}

/// The writing thread: each buffer written after the last, in order, then handed back;
/// through `direct` while the file system takes its writes (a file system that opens a file
/// with `O_DIRECT` and then refuses the writes gets them through the page cache instead).
/// Returns the buffered handle (a sync through it covers the direct writes: both are the
/// same file).
fn write_buffers(
    file: File,
    mut direct: Option<File>,
    to_write: Receiver<AlignedBuffer>,
    written: SyncSender<AlignedBuffer>,
) -> std::io::Result<File> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0u64;
    let mut unsynced_bytes = 0;
    while let Ok(mut buffer) = to_write.recv() {
        let wrote_direct = match &direct {
            Some(handle) => match handle.write_all_at(buffer.filled(), offset) {
                Ok(()) => true,
                Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::warn!(%error, "the file system refused a direct write; the restore writes through the page cache");
                    direct = None;
                    false
                }
                Err(error) => return Err(error),
            },
            None => false,
        };
        if !wrote_direct {
            file.write_all_at(buffer.filled(), offset)?;
            unsynced_bytes += buffer.len;
        }
        offset += buffer.len as u64;
        buffer.len = 0;
        if unsynced_bytes >= SYNC_EVERY_BYTES {
            unsynced_bytes = 0;
            file.sync_data()?;
        }
        // Every buffer comes back (the channel holds them all) until the pages' side is gone.
        let _ = written.try_send(buffer);
    }
    Ok(file)
}

/// A second handle on `path` that writes past the page cache (`O_DIRECT`), or `None` where
/// the file system or the platform does not offer it.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// One row of `sqlite_schema`.
#[derive(Debug, Clone)]
pub struct SchemaRow {
    pub kind: String,
    pub name: String,
    pub table_name: String,
    pub root_page: u32,
    pub sql: Option<String>,
}

/// A value of a record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Appends a record (header of serial types, then the values) to `out`.
pub fn encode_record<'a>(out: &mut Vec<u8>, values: impl Iterator<Item = Val<'a>> + Clone) {
    let mut header_bytes = 0usize;
    for value in values.clone() {
        header_bytes += varint_len(serial_type(value));
    }
    // The header's length counts its own varint: the smallest consistent length.
    let mut own = 1;
    while varint_len((header_bytes + own) as u64) != own {
        own += 1;
    }
    let total = header_bytes + own;
    put_varint(out, total as u64);
    for value in values.clone() {
        put_varint(out, serial_type(value));
    }
    for value in values {
        match value {
            Val::Null => {}
            Val::Int(integer) => {
                let length = integer_bytes(integer);
                out.extend_from_slice(&integer.to_be_bytes()[8 - length..]);
            }
            Val::Real(real) => out.extend_from_slice(&real.to_bits().to_be_bytes()),
            Val::Text(bytes) | Val::Blob(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// A record planned from its values (each serial type computed once), then written straight
/// where it goes: into a page, without a buffer of its own in between.
#[derive(Debug, Default)]
pub struct Record {
    types: Vec<u64>,
    header_bytes: usize,
    bytes: usize,
}

impl Record {
    /// Plans the record of `values`, the one at `null_at` stored as NULL (a rowid's alias
    /// column, which the record does not repeat); returns the record's length.
    pub fn plan(&mut self, values: &[Val<'_>], null_at: Option<usize>) -> usize {
        self.types.clear();
        let mut header_bytes = 0usize;
        let mut body_bytes = 0usize;
        for (index, value) in values.iter().enumerate() {
            let value = if Some(index) == null_at { Val::Null } else { *value };
            let serial = serial_type(value);
            header_bytes += varint_len(serial);
            body_bytes += body_len(value);
            self.types.push(serial);
        }
        let mut own = 1;
        while varint_len((header_bytes + own) as u64) != own {
            own += 1;
        }
        self.header_bytes = header_bytes + own;
        self.bytes = self.header_bytes + body_bytes;
        self.bytes
    }

    /// Writes the record just planned from the same `values` into `out`, exactly its length.
    pub fn write_into(&self, out: &mut [u8], values: &[Val<'_>], null_at: Option<usize>) {
        assert_eq!(out.len(), self.bytes, "a record fills the room planned for it");
        let mut at = put_varint_at(out, 0, self.header_bytes as u64);
        for serial in &self.types {
            at = put_varint_at(out, at, *serial);
        }
        for (index, value) in values.iter().enumerate() {
            let body: &[u8] = match *value {
                _ if Some(index) == null_at => &[],
                Val::Null => &[],
                Val::Int(integer) => {
                    let length = integer_bytes(integer);
                    out[at..at + length].copy_from_slice(&integer.to_be_bytes()[8 - length..]);
                    at += length;
                    continue;
                }
                Val::Real(real) => {
                    out[at..at + 8].copy_from_slice(&real.to_bits().to_be_bytes());
                    at += 8;
                    continue;
                }
                Val::Text(bytes) | Val::Blob(bytes) => bytes,
            };
            out[at..at + body.len()].copy_from_slice(body);
            at += body.len();
        }
        assert_eq!(at, self.bytes, "a record is the length planned");
    }

    /// The record just planned, as bytes of its own (for a payload that overflows its page).
    fn to_vec(&self, values: &[Val<'_>], null_at: Option<usize>) -> Vec<u8> {
        let mut bytes = vec![0u8; self.bytes];
        self.write_into(&mut bytes, values, null_at);
        bytes
    }
}

/// Bytes of a value's body in a record.
fn body_len(value: Val<'_>) -> usize {
    match value {
        Val::Null => 0,
        Val::Int(integer) => integer_bytes(integer),
        Val::Real(_) => 8,
        Val::Text(bytes) | Val::Blob(bytes) => bytes.len(),
    }
}

/// Writes a varint at `at` in `out`; returns where it ends.
fn put_varint_at(out: &mut [u8], at: usize, value: u64) -> usize {
    if value < 0x80 {
        out[at] = value as u8;
        return at + 1;
    }
    let (bytes, length) = varint_bytes(value);
    out[at..at + length].copy_from_slice(&bytes[..length]);
    at + length
}

/// A varint of two bytes or more (`value` >= 0x80), in the first bytes of the array.
fn varint_bytes(value: u64) -> ([u8; 9], usize) {
    let mut bytes = [0u8; 9];
    if value > 0x00ff_ffff_ffff_ffff {
        bytes[8] = value as u8;
        let mut rest = value >> 8;
        for byte in bytes[..8].iter_mut().rev() {
            *byte = (rest & 0x7f) as u8 | 0x80;
            rest >>= 7;
        }
        return (bytes, 9);
    }
    let length = varint_len(value);
    let mut rest = value;
    for index in (0..length).rev() {
        bytes[index] = (rest & 0x7f) as u8 | if index + 1 < length { 0x80 } else { 0 };
        rest >>= 7;
    }
    (bytes, length)
}

fn serial_type(value: Val<'_>) -> u64 {
    match value {
        Val::Null => 0,
        Val::Int(0) => 8,
        Val::Int(1) => 9,
        Val::Int(integer) => match integer_bytes(integer) {
            1 => 1,
            2 => 2,
            3 => 3,
            4 => 4,
            6 => 5,
            _ => 6,
        },
        Val::Real(_) => 7,
        Val::Blob(bytes) => 12 + 2 * bytes.len() as u64,
        Val::Text(bytes) => 13 + 2 * bytes.len() as u64,
    }
}

/// Bytes of an integer's body: SQLite's smallest of 1, 2, 3, 4, 6, 8 (0 for 0 and 1).
fn integer_bytes(integer: i64) -> usize {
    if integer == 0 || integer == 1 {
        return 0;
    }
    let magnitude = if integer < 0 { !integer } else { integer } as u64;
    match magnitude {
        0..=0x7f => 1,
        0x80..=0x7fff => 2,
        0x8000..=0x7f_ffff => 3,
        0x80_0000..=0x7fff_ffff => 4,
        0x8000_0000..=0x7fff_ffff_ffff => 6,
        _ => 8,
    }
}

/// SQLite's variable-length integer: 1 to 9 bytes, big-endian, 7 bits per byte and all 8
/// in the ninth.
pub fn put_varint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
        return;
    }
    if value > 0x00ff_ffff_ffff_ffff {
        let mut bytes = [0u8; 9];
        bytes[8] = value as u8;
        let mut rest = value >> 8;
        for byte in bytes[..8].iter_mut().rev() {
            *byte = (rest & 0x7f) as u8 | 0x80;
            rest >>= 7;
        }
        out.extend_from_slice(&bytes);
        return;
    }
    let mut groups = [0u8; 8];
    let mut count = 0;
    let mut rest = value;
    loop {
        groups[count] = (rest & 0x7f) as u8;
        count += 1;
        rest >>= 7;
        if rest == 0 {
            break;
        }
    }
    for index in (0..count).rev() {
        out.push(groups[index] | if index > 0 { 0x80 } else { 0 });
    }
}

pub fn varint_len(value: u64) -> usize {
    if value > 0x00ff_ffff_ffff_ffff {
        return 9;
    }
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeKind {
    Table,
    Index,
}

/// Usable bytes of a page (no reserved bytes).
const USABLE: usize = PAGE_BYTES;

fn max_local(kind: TreeKind) -> usize {
    match kind {
        TreeKind::Table => USABLE - 35,
        TreeKind::Index => (USABLE - 12) * 64 / 255 - 23,
    }
}

fn min_local() -> usize {
    (USABLE - 12) * 32 / 255 - 23
}

/// How much of a payload of `payload` bytes stays on the b-tree page (file format, "Cell
/// Payload Overflow Pages").
fn local_bytes(kind: TreeKind, payload: usize) -> usize {
    let max = max_local(kind);
    if payload <= max {
        return payload;
    }
    let min = min_local();
    let k = min + (payload - min) % (USABLE - 4);
    if k <= max {
        k
    } else {
        min
    }
}

/// Appends a cell's payload part — the payload size, `rowid` for a table leaf, the local
/// bytes and the first overflow page — writing the rest of the payload to overflow pages.
fn payload_cell(
    out: &mut Vec<u8>,
    file: &mut dyn PageSink,
    kind: TreeKind,
    rowid: Option<i64>,
    payload: &[u8],
) -> std::io::Result<()> {
    put_varint(out, payload.len() as u64);
    if let Some(rowid) = rowid {
        put_varint(out, rowid as u64);
    }
    let local = local_bytes(kind, payload.len());
    out.extend_from_slice(&payload[..local]);
    if local == payload.len() {
        return Ok(());
    }
    let first = file.append_overflow(&payload[local..])?;
    out.extend_from_slice(&first.to_be_bytes());
    Ok(())
}

/// One b-tree page being filled: cells from the end, pointers after the header.
#[derive(Debug, Clone)]
struct PageBuilder {
    bytes: Vec<u8>,
    /// 100 on page 1 (after the database header), 0 elsewhere.
    header_at: usize,
    page_type: u8,
    cells: usize,
    content_start: usize,
    /// Where the last cell pushed starts, and its length (for `pop_last`).
    last_cell: Option<(usize, usize)>,
    right_child: u32,
}

impl PageBuilder {
    fn new(page_type: u8, header_at: usize) -> Self {
        Self {
            bytes: vec![0u8; PAGE_BYTES],
            header_at,
            page_type,
            cells: 0,
            content_start: PAGE_BYTES,
            last_cell: None,
            right_child: 0,
        }
    }

    /// Empties the page for reuse. Its old bytes stay until `bytes` zeroes what the new
    /// cells and pointers do not cover (cheaper than zeroing every page twice).
    fn reset(&mut self) {
        self.cells = 0;
        self.content_start = PAGE_BYTES;
        self.last_cell = None;
        self.right_child = 0;
    }

    fn header_bytes(&self) -> usize {
        if self.page_type == INTERIOR_TABLE || self.page_type == INTERIOR_INDEX {
            12
        } else {
            8
        }
    }

    fn fits(&self, cell_bytes: usize) -> bool {
        self.header_at + self.header_bytes() + 2 * (self.cells + 1) + cell_bytes <= self.content_start
    }

    fn push(&mut self, cell: &[u8]) {
        self.push_parts(cell, &[]);
    }

    /// Pushes the cell `head` followed by `tail` (a cell's prefix and its payload, without
    /// copying them together first).
    fn push_parts(&mut self, head: &[u8], tail: &[u8]) {
        self.push_with(head, tail.len(), |body| body.copy_from_slice(tail));
    }

    /// Pushes the cell `head` followed by `body_bytes` bytes that `fill` writes in place.
    fn push_with(&mut self, head: &[u8], body_bytes: usize, fill: impl FnOnce(&mut [u8])) {
        let length = head.len() + body_bytes;
        assert!(self.fits(length), "a cell of {length} bytes does not fit the page");
        self.content_start -= length;
        let start = self.content_start;
        self.bytes[start..start + head.len()].copy_from_slice(head);
        fill(&mut self.bytes[start + head.len()..start + length]);
        let pointer = self.header_at + self.header_bytes() + 2 * self.cells;
        self.bytes[pointer..pointer + 2].copy_from_slice(&(self.content_start as u16).to_be_bytes());
        self.cells += 1;
        self.last_cell = Some((self.content_start, length));
    }

    /// Removes the last cell pushed and returns it (once: only the last one is known).
    fn pop_last(&mut self) -> Vec<u8> {
        let (start, length) = self.last_cell.take().expect("a page with a last cell to pop");
        let cell = self.bytes[start..start + length].to_vec();
        self.bytes[start..start + length].fill(0);
        self.content_start += length;
        self.cells -= 1;
        let pointer = self.header_at + self.header_bytes() + 2 * self.cells;
        self.bytes[pointer..pointer + 2].fill(0);
        cell
    }

    /// The finished page: header fields written.
    fn bytes(&mut self) -> &[u8] {
        let at = self.header_at;
        // Between the cell pointers and the cells: unused, zero.
        let pointers_end = at + self.header_bytes() + 2 * self.cells;
        self.bytes[pointers_end..self.content_start].fill(0);
        self.bytes[at] = self.page_type;
        self.bytes[at + 1..at + 3].fill(0);
        self.bytes[at + 3..at + 5].copy_from_slice(&(self.cells as u16).to_be_bytes());
        self.bytes[at + 5..at + 7].copy_from_slice(&(self.content_start as u16).to_be_bytes());
        self.bytes[at + 7] = 0;
        if self.header_bytes() == 12 {
            assert!(self.right_child != 0, "an interior page without its right child");
            self.bytes[at + 8..at + 12].copy_from_slice(&self.right_child.to_be_bytes());
        }
        &self.bytes
    }
}

/// A table b-tree (rowid keys, data in the leaves), fed rows in increasing rowid order.
#[derive(Debug)]
pub struct TableTree {
    leaf: PageBuilder,
    /// Each written leaf and its largest rowid.
    children: Vec<(u32, i64)>,
    last_rowid: Option<i64>,
    cell: Vec<u8>,
}

/// Why a row was not added to a tree.
#[derive(Debug)]
pub enum TreeError {
    Io(std::io::Error),
    /// A rowid not above the previous one: the rows are not in the table's order.
    OutOfOrder,
}

impl From<std::io::Error> for TreeError {
    fn from(error: std::io::Error) -> Self {
        TreeError::Io(error)
    }
}

impl Default for TableTree {
    fn default() -> Self {
        Self::new()
    }
}

impl TableTree {
    pub fn new() -> Self {
        Self { leaf: PageBuilder::new(LEAF_TABLE, 0), children: Vec::new(), last_rowid: None, cell: Vec::new() }
    }

    pub fn push(&mut self, file: &mut dyn PageSink, rowid: i64, record: &[u8]) -> Result<(), TreeError> {
        if self.last_rowid.is_some_and(|last| rowid <= last) {
            return Err(TreeError::OutOfOrder);
        }
        self.cell.clear();
        let local = record.len() <= max_local(TreeKind::Table);
        if local {
            // The usual case: the prefix here, the record copied once, into the page.
            put_varint(&mut self.cell, record.len() as u64);
            put_varint(&mut self.cell, rowid as u64);
        } else {
            payload_cell(&mut self.cell, file, TreeKind::Table, Some(rowid), record)?;
        }
        let tail = if local { record } else { &[] };
        if !self.leaf.fits(self.cell.len() + tail.len()) {
            let page = file.append_page(self.leaf.bytes())?;
            self.children.push((page, self.last_rowid.expect("a full leaf has rows")));
            self.leaf.reset();
        }
        self.leaf.push_parts(&self.cell, tail);
        self.last_rowid = Some(rowid);
        Ok(())
    }

    /// [`push`](Self::push) for a record given as its values (the one at `null_at` stored as
    /// NULL): encoded straight into the page when it fits there, as nearly every row does.
    pub fn push_values(
        &mut self,
        file: &mut dyn PageSink,
        rowid: i64,
        values: &[Val<'_>],
        null_at: Option<usize>,
        record: &mut Record,
    ) -> Result<(), TreeError> {
        let length = record.plan(values, null_at);
        if length > max_local(TreeKind::Table) {
            return self.push(file, rowid, &record.to_vec(values, null_at));
        }
        if self.last_rowid.is_some_and(|last| rowid <= last) {
            return Err(TreeError::OutOfOrder);
        }
        self.cell.clear();
        put_varint(&mut self.cell, length as u64);
        put_varint(&mut self.cell, rowid as u64);
        if !self.leaf.fits(self.cell.len() + length) {
            let page = file.append_page(self.leaf.bytes())?;
            self.children.push((page, self.last_rowid.expect("a full leaf has rows")));
            self.leaf.reset();
        }
        self.leaf.push_with(&self.cell, length, |body| record.write_into(body, values, null_at));
        self.last_rowid = Some(rowid);
        Ok(())
    }

    /// Writes the last leaf and the interior pages; returns the root page.
    pub fn finish(mut self, file: &mut dyn PageSink) -> std::io::Result<u32> {
        let page = file.append_page(self.leaf.bytes())?;
        self.children.push((page, self.last_rowid.unwrap_or(0)));
        let mut level = self.children;
        while level.len() > 1 {
            let pages = table_interior_pages(&level, 0);
            level = Vec::with_capacity(pages.len());
            for (mut page, key) in pages {
                level.push((file.append_page(page.bytes())?, key));
            }
        }
        Ok(level[0].0)
    }
}

/// Lays one interior level of a table b-tree over `children` (page, largest rowid): each
/// page's cells point to all its children but the last, its right child. Returns each page
/// with the largest rowid under it. No page is left without a cell.
fn table_interior_pages(children: &[(u32, i64)], header_at: usize) -> Vec<(PageBuilder, i64)> {
    let mut pages: Vec<(PageBuilder, i64)> = Vec::new();
    let mut page = PageBuilder::new(INTERIOR_TABLE, header_at);
    let mut right: Option<(u32, i64)> = None;
    let mut cell = Vec::with_capacity(16);
    for child in children {
        if let Some((child_page, key)) = right {
            interior_table_cell(&mut cell, child_page, key);
            if page.fits(cell.len()) {
                page.push(&cell);
            } else {
                page.right_child = child_page;
                pages.push((std::mem::replace(&mut page, PageBuilder::new(INTERIOR_TABLE, header_at)), key));
            }
        }
        right = Some(*child);
    }
    let (last_page, last_key) = right.expect("an interior level has children");
    page.right_child = last_page;
    if page.cells == 0 {
        // A page with only a right child: take the previous page's right child as a cell,
        // and give the previous page its own last cell's child as right child.
        let (previous, previous_key) = pages.last_mut().expect("a lone right child follows a full page");
        let moved = (previous.right_child, *previous_key);
        let popped = previous.pop_last();
        assert!(previous.cells > 0, "an interior page keeps a cell after giving one away");
        let (popped_child, popped_key) = decode_interior_table_cell(&popped);
        previous.right_child = popped_child;
        *previous_key = popped_key;
        interior_table_cell(&mut cell, moved.0, moved.1);
        page.push(&cell);
    }
    pages.push((page, last_key));
    pages
}

fn interior_table_cell(cell: &mut Vec<u8>, child: u32, key: i64) {
    cell.clear();
    cell.extend_from_slice(&child.to_be_bytes());
    put_varint(cell, key as u64);
}

fn decode_interior_table_cell(cell: &[u8]) -> (u32, i64) {
    let child = u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]);
    (child, get_varint(&cell[4..]).0 as i64)
}

/// Reads a varint; returns the value and its length.
pub fn get_varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(9) {
        if index == 8 {
            return ((value << 8) | u64::from(*byte), 9);
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    (value, bytes.len())
}

/// An index b-tree (also the table b-tree of a `WITHOUT ROWID` table): keys in the
/// interior pages too. Fed records in increasing key order; the caller checks the order.
#[derive(Debug)]
pub struct IndexTree {
    leaf: PageBuilder,
    /// A full leaf not yet written, and the entry that did not fit in it (the separator
    /// between it and the next leaf).
    closed: Option<(PageBuilder, Vec<u8>)>,
    /// Each written leaf and the separator after it.
    children: Vec<(u32, Vec<u8>)>,
    cell: Vec<u8>,
    /// A written leaf's page, for the next leaf.
    spare: Option<PageBuilder>,
}

impl Default for IndexTree {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexTree {
    pub fn new() -> Self {
        Self {
            leaf: PageBuilder::new(LEAF_INDEX, 0),
            closed: None,
            children: Vec::new(),
            cell: Vec::new(),
            spare: None,
        }
    }

    pub fn push(&mut self, file: &mut dyn PageSink, record: &[u8]) -> std::io::Result<()> {
        self.cell.clear();
        let local = record.len() <= max_local(TreeKind::Index);
        if local {
            put_varint(&mut self.cell, record.len() as u64);
        } else {
            payload_cell(&mut self.cell, file, TreeKind::Index, None, record)?;
        }
        let tail = if local { record } else { &[] };
        if let Some((mut closed, separator)) = self.closed.take() {
            let page = file.append_page(closed.bytes())?;
            self.children.push((page, separator));
            self.leaf.push_parts(&self.cell, tail);
            closed.reset();
            self.spare = Some(closed);
        } else if self.leaf.fits(self.cell.len() + tail.len()) {
            self.leaf.push_parts(&self.cell, tail);
        } else {
            self.cell.extend_from_slice(tail);
            let next = self.spare.take().unwrap_or_else(|| PageBuilder::new(LEAF_INDEX, 0));
            let full = std::mem::replace(&mut self.leaf, next);
            self.closed = Some((full, self.cell.clone()));
        }
        Ok(())
    }

    /// Writes the last leaves and the interior pages; returns the root page.
    pub fn finish(mut self, file: &mut dyn PageSink) -> std::io::Result<u32> {
        if let Some((mut closed, separator)) = self.closed.take() {
            // The entries ended with a separator and no leaf after it: the closed leaf's
            // last entry becomes the separator, and the next leaf holds the entry that ended.
            let last = closed.pop_last();
            assert!(closed.cells > 0, "a full leaf keeps entries after giving one away");
            let page = file.append_page(closed.bytes())?;
            self.children.push((page, last));
            self.leaf.push(&separator);
        }
        let mut right = file.append_page(self.leaf.bytes())?;
        let mut children = self.children;
        while !children.is_empty() {
            let pages = index_interior_pages(children, right);
            children = Vec::with_capacity(pages.len());
            let last = pages.len() - 1;
            for (index, (mut page, separator)) in pages.into_iter().enumerate() {
                let number = file.append_page(page.bytes())?;
                if index == last {
                    right = number;
                } else {
                    children.push((number, separator.expect("every page but the last has a separator after it")));
                }
            }
        }
        Ok(right)
    }
}

/// Lays one interior level of an index b-tree over children C0 S0 C1 S1 … Cm (`children`
/// holds (Ci, Si), `right` is Cm): each page holds cells (Ci, Si) and a right child; the
/// separator after a page moves up a level. No page is left without a cell.
fn index_interior_pages(children: Vec<(u32, Vec<u8>)>, right: u32) -> Vec<(PageBuilder, Option<Vec<u8>>)> {
    let mut pages: Vec<(PageBuilder, Option<Vec<u8>>)> = Vec::new();
    let mut page = PageBuilder::new(INTERIOR_INDEX, 0);
    let mut cell = Vec::new();
    for (child, separator) in children {
        cell.clear();
        cell.extend_from_slice(&child.to_be_bytes());
        cell.extend_from_slice(&separator);
        if page.fits(cell.len()) {
            page.push(&cell);
        } else {
            page.right_child = child;
            pages.push((std::mem::replace(&mut page, PageBuilder::new(INTERIOR_INDEX, 0)), Some(separator)));
        }
    }
    page.right_child = right;
    if page.cells == 0 {
        // Only a right child: the previous page's right child and the separator that moved
        // up become this page's cell; the previous page's last cell gives it a new right
        // child and the separator that moves up instead.
        let (previous, moved_up) = pages.last_mut().expect("a lone right child follows a full page");
        let popped = previous.pop_last();
        assert!(previous.cells > 0, "an interior page keeps a cell after giving one away");
        cell.clear();
        cell.extend_from_slice(&previous.right_child.to_be_bytes());
        cell.extend_from_slice(moved_up.as_ref().expect("a separator after the previous page"));
        previous.right_child = u32::from_be_bytes([popped[0], popped[1], popped[2], popped[3]]);
        *moved_up = Some(popped[4..].to_vec());
        page.push(&cell);
    }
    pages.push((page, None));
    pages
}

/// Writes the schema table with its root on page 1 (after the database header); returns
/// page 1's bytes without the header.
fn schema_root(file: &mut PageFile, rows: &[SchemaRow]) -> std::io::Result<Vec<u8>> {
    let mut cells = Vec::with_capacity(rows.len());
    let mut record = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        record.clear();
        let values = [
            Val::Text(row.kind.as_bytes()),
            Val::Text(row.name.as_bytes()),
            Val::Text(row.table_name.as_bytes()),
            Val::Int(i64::from(row.root_page)),
            row.sql.as_deref().map_or(Val::Null, |sql| Val::Text(sql.as_bytes())),
        ];
        encode_record(&mut record, values.iter().copied());
        let mut cell = Vec::new();
        payload_cell(&mut cell, file, TreeKind::Table, Some(index as i64 + 1), &record)?;
        cells.push((cell, index as i64 + 1));
    }
    let mut root = PageBuilder::new(LEAF_TABLE, HEADER_BYTES);
    let fits_in_root = {
        let needed: usize = cells.iter().map(|(cell, _)| cell.len() + 2).sum();
        HEADER_BYTES + 8 + needed <= PAGE_BYTES
    };
    if fits_in_root {
        for (cell, _) in &cells {
            root.push(cell);
        }
        return Ok(root.bytes().to_vec());
    }
    let mut leaves = TableTree::new();
    let mut children = Vec::new();
    for (cell, rowid) in &cells {
        if !leaves.leaf.fits(cell.len()) {
            children.push((file.append_page(leaves.leaf.bytes())?, leaves.last_rowid.expect("rows")));
            leaves.leaf = PageBuilder::new(LEAF_TABLE, 0);
        }
        leaves.leaf.push(cell);
        leaves.last_rowid = Some(*rowid);
    }
    children.push((file.append_page(leaves.leaf.bytes())?, leaves.last_rowid.expect("rows")));
    loop {
        let in_root = table_interior_pages(&children, HEADER_BYTES);
        if in_root.len() == 1 {
            let (mut page, _) = in_root.into_iter().next().expect("one page");
            return Ok(page.bytes().to_vec());
        }
        let pages = table_interior_pages(&children, 0);
        children = Vec::with_capacity(pages.len());
        for (mut page, key) in pages {
            children.push((file.append_page(page.bytes())?, key));
        }
    }
}

/// The 100-byte header: page size 4096, WAL mode (read and write versions 2), UTF-8, schema
/// format 4, no free pages, the page count valid for change counter 1.
fn database_header(page_count: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..16].copy_from_slice(b"SQLite format 3\0");
    header[16..18].copy_from_slice(&(PAGE_BYTES as u16).to_be_bytes());
    header[18] = 2;
    header[19] = 2;
    header[20] = 0;
    header[21] = 64;
    header[22] = 32;
    header[23] = 32;
    header[24..28].copy_from_slice(&1u32.to_be_bytes());
    header[28..32].copy_from_slice(&page_count.to_be_bytes());
    header[40..44].copy_from_slice(&1u32.to_be_bytes());
    header[44..48].copy_from_slice(&4u32.to_be_bytes());
    header[56..60].copy_from_slice(&1u32.to_be_bytes());
    header[92..96].copy_from_slice(&1u32.to_be_bytes());
    header[96..100].copy_from_slice(&(rusqlite::version_number() as u32).to_be_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_a_refused_direct_write_goes_through_the_page_cache() {
        for capacity in [PAGE_BYTES, 3 * PAGE_BYTES] {
            let buffer = AlignedBuffer::new(capacity);
            assert_eq!(buffer.filled().as_ptr() as usize % DIRECT_ALIGN_BYTES, 0);
            assert_eq!(buffer.capacity(), capacity);
        }
        let dir = medvault_testkit::TempDir::new("direct-fallback");
        let path = dir.path().join("file");
        let file = std::fs::OpenOptions::new().write(true).read(true).create_new(true).open(&path).expect("create");
        let direct = open_direct(&path);
        let had_direct = direct.is_some();
        // A buffer whose start is one byte past alignment: O_DIRECT refuses it (EINVAL).
        let mut misaligned = AlignedBuffer::new(2 * PAGE_BYTES);
        misaligned.start += 1;
        misaligned.push(&[7u8; PAGE_BYTES]);
        let mut aligned = AlignedBuffer::new(PAGE_BYTES);
        aligned.push(&[9u8; PAGE_BYTES]);
        let (full, to_write) = std::sync::mpsc::sync_channel(2);
        let (written, _empty) = std::sync::mpsc::sync_channel(2);
        full.send(misaligned).expect("send");
        full.send(aligned).expect("send");
        drop(full);
        let file = write_buffers(file, direct, to_write, written).expect("the fallback writes");
        file.sync_all().expect("sync");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 2 * PAGE_BYTES, "direct available here: {had_direct}");
        assert!(bytes[..PAGE_BYTES].iter().all(|b| *b == 7));
        assert!(bytes[PAGE_BYTES..].iter().all(|b| *b == 9));
    }

    /// Writes a database of a rowid table `t` (rows of `row_bytes`), its index `ti`, a
    /// `WITHOUT ROWID` table `w` (entries of `entry_bytes`) and `views` views (to grow the
    /// schema past page 1); returns SQLite's `integrity_check` and the three counts.
    fn build(
        rows: usize,
        row_bytes: usize,
        entries: usize,
        entry_bytes: usize,
        views: usize,
    ) -> (Vec<String>, [i64; 3]) {
        let dir = medvault_testkit::TempDir::new("sqlite-file");
        let path = dir.path().join("db");
        let mut file = PageFile::create(&path).expect("create");
        let value = |index: usize, bytes: usize| {
            let mut value = vec![(index % 251) as u8; bytes.max(8)];
            value[..8].copy_from_slice(&(index as u64).to_be_bytes());
            value
        };
        let mut record = Vec::new();
        let mut table = TableTree::new();
        let mut index = IndexTree::new();
        for row in 0..rows {
            let blob = value(row, row_bytes);
            record.clear();
            encode_record(&mut record, [Val::Null, Val::Blob(&blob)].into_iter());
            table.push(&mut file, row as i64 + 1, &record).expect("row");
        }
        for row in 0..rows {
            let blob = value(row, row_bytes);
            record.clear();
            encode_record(&mut record, [Val::Blob(&blob), Val::Int(row as i64 + 1)].into_iter());
            index.push(&mut file, &record).expect("index entry");
        }
        let mut keyed = IndexTree::new();
        for entry in 0..entries {
            let blob = value(entry, entry_bytes);
            record.clear();
            encode_record(&mut record, [Val::Blob(&blob), Val::Text(b"v")].into_iter());
            keyed.push(&mut file, &record).expect("entry");
        }
        let row = |kind: &str, name: &str, table: &str, root_page: u32, sql: String| SchemaRow {
            kind: kind.into(),
            name: name.into(),
            table_name: table.into(),
            root_page,
            sql: Some(sql),
        };
        let mut schema = vec![
            row(
                "table",
                "t",
                "t",
                table.finish(&mut file).expect("t"),
                "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)".into(),
            ),
            row("index", "ti", "t", index.finish(&mut file).expect("ti"), "CREATE INDEX ti ON t(b)".into()),
            row(
                "table",
                "w",
                "w",
                keyed.finish(&mut file).expect("w"),
                "CREATE TABLE w(k BLOB PRIMARY KEY, v TEXT) WITHOUT ROWID".into(),
            ),
        ];
        for view in 0..views {
            let sql = format!("CREATE VIEW v{view} AS SELECT '{}' AS padding", "p".repeat(200));
            schema.push(row("view", &format!("v{view}"), &format!("v{view}"), 0, sql));
        }
        file.finish(&schema).expect("finish").sync_all().expect("sync");
        let connection = rusqlite::Connection::open(&path).expect("open");
        let check = connection
            .prepare("PRAGMA integrity_check")
            .expect("pragma")
            .query_map([], |r| r.get::<_, String>(0))
            .expect("check")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        let count = |sql: &str| connection.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("count");
        let counts = [
            count("SELECT COUNT(*) FROM t"),
            count("SELECT COUNT(*) FROM t INDEXED BY ti WHERE b IS NOT NULL"),
            count("SELECT COUNT(*) FROM w"),
        ];
        (check, counts)
    }

    #[test]
    fn sqlite_finds_every_shape_of_tree_sound() {
        let ok = vec!["ok".to_string()];
        // Small trees of every size (a leaf that fills up, the entry after it, a lone one).
        for count in 0..=90 {
            assert_eq!(build(count, 100, count, 100, 0), (ok.clone(), [count as i64; 3]), "{count} entries");
        }
        // Index interior levels around the point where a page of separators fills (about
        // 36 leaves of 37 entries of 100 bytes per interior page), and rows of one page each
        // around the point where a table interior page fills (528 children: 127 one-byte rowids,
        // the rest two).
        for count in (1290..=1440).step_by(3).chain(520..=540) {
            let (check, counts) = build(count, 3000, count, 100, 0);
            assert_eq!(check, ok, "{count} entries");
            assert_eq!(counts, [count as i64; 3]);
        }
        // Payloads on overflow pages, in tables and in index interior pages; a schema too
        // large for page 1 alone.
        assert_eq!(build(300, 10_000, 300, 5_000, 0), (ok.clone(), [300; 3]));
        // Payloads whose local part is exactly the largest a page keeps (K = X: 8,153 bytes
        // in a table, 5,094 in an index; a record here is its blob and 4 or 5 bytes more),
        // and one byte either side.
        for (row_bytes, entry_bytes) in [(8148, 5088), (8149, 5089), (8150, 5090)] {
            assert_eq!(build(20, row_bytes, 20, entry_bytes, 0), (ok.clone(), [20; 3]), "{row_bytes} {entry_bytes}");
        }
        assert_eq!(build(50, 100, 50, 100, 60), (ok.clone(), [50; 3]));
        assert_eq!(build(5, 100, 5, 100, 2000), (ok, [5; 3]));
    }

    /// Trees written at once from two threads into one shared file (their pages, and the
    /// overflow chains of large payloads, interleaved) make a sound database.
    #[test]
    fn trees_written_side_by_side_into_shared_pages_are_sound() {
        let dir = medvault_testkit::TempDir::new("sqlite-shared");
        let path = dir.path().join("db");
        let shared = PageFile::create(&path).expect("create").share();
        let value = |index: usize, bytes: usize| {
            let mut value = vec![(index % 251) as u8; bytes.max(8)];
            value[..8].copy_from_slice(&(index as u64).to_be_bytes());
            value
        };
        let (table_root, keyed_root) = std::thread::scope(|scope| {
            let mut file = shared.clone();
            let table = scope.spawn(move || {
                let mut table = TableTree::new();
                let mut record = Vec::new();
                for row in 0..3000usize {
                    // One row in ten spills onto overflow pages.
                    let blob = value(row, if row % 10 == 0 { 9000 } else { 300 });
                    record.clear();
                    encode_record(&mut record, [Val::Null, Val::Blob(&blob)].into_iter());
                    table.push(&mut file, row as i64 + 1, &record).expect("row");
                }
                table.finish(&mut file).expect("t")
            });
            let mut file = shared.clone();
            let keyed = scope.spawn(move || {
                let mut keyed = IndexTree::new();
                let mut record = Vec::new();
                for entry in 0..3000usize {
                    let blob = value(entry, if entry % 7 == 0 { 6000 } else { 200 });
                    record.clear();
                    encode_record(&mut record, [Val::Blob(&blob), Val::Text(b"v")].into_iter());
                    keyed.push(&mut file, &record).expect("entry");
                }
                keyed.finish(&mut file).expect("w")
            });
            (table.join().expect("table thread"), keyed.join().expect("keyed thread"))
        });
        let file = shared.into_inner().expect("no other holder");
        let schema = [
            SchemaRow {
                kind: "table".into(),
                name: "t".into(),
                table_name: "t".into(),
                root_page: table_root,
                sql: Some("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)".into()),
            },
            SchemaRow {
                kind: "table".into(),
                name: "w".into(),
                table_name: "w".into(),
                root_page: keyed_root,
                sql: Some("CREATE TABLE w(k BLOB PRIMARY KEY, v TEXT) WITHOUT ROWID".into()),
            },
        ];
        file.finish(&schema).expect("finish").sync_all().expect("sync");
        let connection = rusqlite::Connection::open(&path).expect("open");
        let check: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
        assert_eq!(check, "ok");
        let count = |sql: &str| connection.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("count");
        assert_eq!((count("SELECT COUNT(*) FROM t"), count("SELECT COUNT(*) FROM w")), (3000, 3000));
        assert_eq!(count("SELECT COUNT(*) FROM t WHERE length(b) = 9000"), 300);
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for value in [0u64, 1, 127, 128, 16383, 16384, 1 << 35, 0x00ff_ffff_ffff_ffff, 1 << 56, u64::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            assert_eq!(bytes.len(), varint_len(value), "{value}");
            assert_eq!(get_varint(&bytes), (value, bytes.len()), "{value}");
            let mut at = [0xaau8; 12];
            assert_eq!(put_varint_at(&mut at, 2, value), 2 + bytes.len(), "{value}");
            assert_eq!(&at[2..2 + bytes.len()], &bytes[..], "{value}");
        }
    }

    /// Pages kept in memory, in the order they were appended.
    #[derive(Default)]
    struct MemoryPages(Vec<Vec<u8>>);

    impl PageSink for MemoryPages {
        fn append_page(&mut self, bytes: &[u8]) -> std::io::Result<u32> {
            self.0.push(bytes.to_vec());
            Ok(self.0.len() as u32)
        }

        fn append_overflow(&mut self, rest: &[u8]) -> std::io::Result<u32> {
            let first = self.0.len() as u32 + 1;
            let chunks = rest.chunks(USABLE - 4).count() as u32;
            for (index, chunk) in rest.chunks(USABLE - 4).enumerate() {
                let mut page = vec![0u8; PAGE_BYTES];
                let next = if (index as u32) + 1 < chunks { first + index as u32 + 1 } else { 0 };
                page[..4].copy_from_slice(&next.to_be_bytes());
                page[4..4 + chunk.len()].copy_from_slice(chunk);
                self.0.push(page);
            }
            Ok(first)
        }
    }

    /// Records written in place from their values are the bytes `encode_record` makes, the
    /// pages the same; and a page reused for the next leaf keeps nothing of the last one.
    #[test]
    fn records_written_in_place_make_the_same_pages() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut rows: Vec<(i64, Vec<u8>, i64, Option<usize>)> = Vec::new();
        let mut rowid = 0i64;
        for _ in 0..3000 {
            rowid += 1 + (random() % 1000) as i64;
            let bytes = match random() % 10 {
                0 => 5000 + (random() % 9000) as usize,
                _ => (random() % 900) as usize,
            };
            let integer = (random() as i64) >> (random() % 64);
            rows.push((rowid, vec![(random() % 251) as u8; bytes], integer, (random() % 2 == 0).then_some(0)));
        }
        let mut encoded = MemoryPages::default();
        let mut in_place = MemoryPages::default();
        let mut by_record = TableTree::new();
        let mut by_values = TableTree::new();
        let mut record = Vec::new();
        let mut planned = Record::default();
        for (rowid, blob, integer, null_at) in &rows {
            let values =
                [Val::Int(*rowid), Val::Blob(blob), Val::Int(*integer), Val::Real(0.5), Val::Text(b"t"), Val::Null];
            record.clear();
            let stored = values.iter().enumerate().map(|(i, v)| if Some(i) == *null_at { Val::Null } else { *v });
            encode_record(&mut record, stored);
            assert_eq!(planned.plan(&values, *null_at), record.len());
            assert_eq!(planned.to_vec(&values, *null_at), record);
            by_record.push(&mut encoded, *rowid, &record).expect("push");
            by_values.push_values(&mut in_place, *rowid, &values, *null_at, &mut planned).expect("push values");
        }
        by_record.finish(&mut encoded).expect("finish");
        by_values.finish(&mut in_place).expect("finish");
        assert_eq!(encoded.0.len(), in_place.0.len());
        for (number, (a, b)) in encoded.0.iter().zip(&in_place.0).enumerate() {
            assert!(a == b, "page {} differs", number + 1);
            if a[0] == LEAF_TABLE {
                let cells = usize::from(u16::from_be_bytes([a[3], a[4]]));
                let content = usize::from(u16::from_be_bytes([a[5], a[6]]));
                assert!(a[8 + 2 * cells..content].iter().all(|b| *b == 0), "page {}: a gap of zeros", number + 1);
            }
        }
    }

    /// A store past 1 GiB (any real hospital's) has b-trees on both sides of the lock-byte
    /// page: SQLite must find such a file sound, every row readable.
    #[test]
    fn sqlite_finds_a_database_across_the_lock_byte_page_sound() {
        let dir = medvault_testkit::TempDir::new("sqlite-file-gib");
        let path = dir.path().join("db");
        let mut file = PageFile::create(&path).expect("create");
        // Rows of 64 KiB (overflow pages, cheap to write) up to past the lock-byte page, then
        // small rows whose leaves and interior pages all come after it.
        let big_rows = (lock_byte_page() as usize * PAGE_BYTES) / 65_536 + 64;
        let blob = vec![0x5au8; 65_536];
        let mut record = Vec::new();
        let mut table = TableTree::new();
        for row in 0..big_rows + 5_000 {
            let bytes = if row < big_rows { &blob[..] } else { &blob[..100] };
            record.clear();
            encode_record(&mut record, [Val::Int(row as i64), Val::Blob(bytes)].into_iter());
            table.push(&mut file, row as i64 + 1, &record).expect("row");
        }
        let mut index = IndexTree::new();
        for row in 0..(big_rows + 5_000) as i64 {
            record.clear();
            encode_record(&mut record, [Val::Int(row), Val::Int(row + 1)].into_iter());
            index.push(&mut file, &record).expect("entry");
        }
        let schema = [
            SchemaRow {
                kind: "table".into(),
                name: "t".into(),
                table_name: "t".into(),
                root_page: table.finish(&mut file).expect("t"),
                sql: Some("CREATE TABLE t(a INTEGER, b BLOB)".into()),
            },
            SchemaRow {
                kind: "index".into(),
                name: "ta".into(),
                table_name: "t".into(),
                root_page: index.finish(&mut file).expect("ta"),
                sql: Some("CREATE INDEX ta ON t(a)".into()),
            },
        ];
        // Not synced: the page cache is all SQLite reads.
        drop(file.finish(&schema).expect("finish"));
        let length = std::fs::metadata(&path).expect("metadata").len();
        assert!(
            length > (u64::from(lock_byte_page()) + 1_000) * PAGE_BYTES as u64,
            "the file goes past the lock-byte page"
        );
        let connection = rusqlite::Connection::open(&path).expect("open");
        let check: Vec<String> = connection
            .prepare("PRAGMA integrity_check")
            .expect("pragma")
            .query_map([], |r| r.get(0))
            .expect("check")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(check, ["ok"]);
        let (rows, bytes, sum): (i64, i64, i64) = connection
            .query_row("SELECT COUNT(*), SUM(length(b)), SUM(a) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("scan");
        let total = big_rows + 5_000;
        assert_eq!((rows, bytes), (total as i64, (big_rows * 65_536 + 5_000 * 100) as i64));
        assert_eq!(sum, (total * (total - 1) / 2) as i64);
        let indexed: i64 =
            connection.query_row("SELECT COUNT(*) FROM t INDEXED BY ta WHERE a >= 0", [], |r| r.get(0)).expect("count");
        assert_eq!(indexed, total as i64);
    }

    #[test]
    fn the_lock_byte_page_is_skipped_and_written_as_zeros() {
        let dir = medvault_testkit::TempDir::new("sqlite-file");
        let mut file = PageFile::create(&dir.path().join("db")).expect("create");
        file.last_allocated = lock_byte_page() - 2;
        file.next_write = lock_byte_page() - 1;
        let before = file.allocate();
        let after = file.allocate();
        assert_eq!((before, after), (lock_byte_page() - 1, lock_byte_page() + 1));
        file.write(before, &[1u8; PAGE_BYTES]).expect("write");
        file.write(after, &[2u8; PAGE_BYTES]).expect("write");
        file.hand_over().expect("hand over");
        drop(file);
        let bytes = std::fs::read(dir.path().join("db")).expect("read");
        // Page 1's placeholder, then the two pages around a page of zeros.
        assert_eq!(bytes.len(), 4 * PAGE_BYTES);
        assert!(bytes[PAGE_BYTES..2 * PAGE_BYTES].iter().all(|b| *b == 1));
        assert!(bytes[2 * PAGE_BYTES..3 * PAGE_BYTES].iter().all(|b| *b == 0));
        assert!(bytes[3 * PAGE_BYTES..].iter().all(|b| *b == 2));
    }

    #[test]
    fn payloads_spill_to_overflow_pages_as_the_format_says() {
        // Worked values for 4096-byte pages: X = 4061 (table) or 1002 (index), M = 489.
        assert_eq!((max_local(TreeKind::Table), max_local(TreeKind::Index), min_local()), (4061, 1002, 489));
        assert_eq!(local_bytes(TreeKind::Table, 4061), 4061);
        // K = M + (P − M) mod (U − 4); K itself when it fits, M otherwise.
        assert_eq!(local_bytes(TreeKind::Table, 4062), 489);
        assert_eq!(local_bytes(TreeKind::Table, 4092 + 489 + 100), 589);
        assert_eq!(local_bytes(TreeKind::Table, 4061 + 4092), 4061, "K = X stays local");
        assert_eq!(local_bytes(TreeKind::Table, 4061 + 4092 + 1), 489);
        assert_eq!(local_bytes(TreeKind::Index, 1003), 489);
        assert_eq!(local_bytes(TreeKind::Index, 1002 + 4092), 1002, "K = X stays local");
        assert_eq!(local_bytes(TreeKind::Index, 5000), 908);
        assert_eq!(local_bytes(TreeKind::Index, 489 + 4092 + 1500), 489);
    }
}
