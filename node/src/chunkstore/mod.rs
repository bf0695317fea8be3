//! Chunks on a node's local disk.
//!
//! One file per chunk: `chunks/<fs>/<inode>/<index>.c<chain>` (format 2:
//! the chain in the name lets a node find one chain's chunks to resync,
//! rebalance or collect them). The file is a run of
//! records, each a 4 KiB block followed by the CRC32C of that block. A write
//! builds every record it touches in memory (reading the old content of a
//! partly covered block) and puts them on disk with one `pwrite`, so a
//! killed process leaves each record either old or new, never half; a torn
//! sector after power loss fails its checksum and is repaired from another
//! copy. An all-zero record is a hole (never written): it reads as zeros.
//! Every read verifies every block it touches.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cpfs_proto::layout::{BLOCK, MAX_CHUNK_SIZE};
use cpfs_proto::node::{check_range, ChunkKey, FsUsage, NodeError, ServedIo};

mod copies;
pub mod migrate;
mod records;
mod writeback;

use records::{decode_record, encode_record, read_whole_blocks, write_whole_blocks};

const CRC: u64 = 4;
const RECORD: u64 = BLOCK + CRC;
/// Records in the largest chunk a layout allows. Nothing past it is read,
/// written, digested, copied or scrubbed: a chunk file longer than that
/// (written before offsets were bounded) is cut to it when the store
/// opens, and ignored past it meanwhile.
const MAX_RECORDS: u64 = MAX_CHUNK_SIZE / BLOCK;
const LOCK_STRIPES: usize = 1024;
const MAX_OPEN_FILES: usize = 4096;
/// Largest read [`ChunkStore::read_cached`] does on the caller's thread
/// (an async worker): copying and checking more would hold it too long.
const MAX_CACHED_READ: u64 = 256 << 10;
/// Largest write [`ChunkStore::write_cached`] does on an async worker: a
/// copy into the page cache, bounded so that dirty-page throttling, when
/// it strikes, holds the worker briefly.
const MAX_CACHED_WRITE: u64 = 64 << 10;
// Streamed writes start their writeback, which may wait for the disk: they
// must never be the writes an async worker applies.
const _: () = assert!(MAX_CACHED_WRITE < writeback::STREAMED_WRITE);
/// On-disk format, kept in `DATA_DIR/chunk-format`. Format 1 (chunk files
/// named by index only) predates chain-scoped chunks: `cpfs node` migrates
/// it before opening the store ([`migrate`]), asking the metadata service
/// for each file's chains; the store itself only opens the current format.
const FORMAT: &str = "2";

/// A chunk file's name: `<index>.c<chain>`.
fn chunk_name(index: u64, chain: u32) -> String {
    format!("{index}.c{chain}")
}

fn parse_chunk_name(name: &str) -> Option<(u64, u32)> {
    let (index, chain) = name.split_once(".c")?;
    Some((index.parse().ok()?, chain.parse().ok()?))
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    read_ops: AtomicU64,
    write_ops: AtomicU64,
    served: ServedCounters,
}

/// [`ServedIo`] as it is counted.
#[derive(Default)]
struct ServedCounters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    read_us: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    write_us: AtomicU64,
}

pub struct ChunkStore {
    root: PathBuf,
    files: Mutex<HashMap<ChunkKey, Arc<File>>>,
    /// Readers and writers of one chunk exclude each other, so a read never
    /// sees a record halfway through a concurrent write.
    locks: Vec<RwLock<()>>,
    usage: RwLock<HashMap<String, Arc<Counters>>>,
    pub checksum_errors: AtomicU64,
    pub repairs: AtomicU64,
    /// The latest streamed writes, dropped from the page cache as newer
    /// ones land.
    behind: writeback::DropBehind,
}

fn io(e: std::io::Error) -> NodeError {
    if e.raw_os_error() == Some(28) || e.kind() == ErrorKind::StorageFull {
        NodeError::NoSpace
    } else {
        NodeError::Io(e.to_string())
    }
}

/// File-system ids become directory names: only `[a-z0-9-]` is allowed.
pub fn valid_fs(fs: &str) -> bool {
    !fs.is_empty()
        && fs.len() <= 64
        && fs
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether reading the page that holds byte `at` of `f` would wait for
/// the disk: a one-byte `preadv2` with `RWF_NOWAIT` answers from the page
/// cache or not at all. Past the end of the file nothing is read either.
fn resident(f: &File, at: u64) -> bool {
    let mut byte = [0u8; 1];
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    rustix::io::preadv2(f, &mut [IoSliceMut::new(&mut byte)], at, flags).is_ok()
}

impl ChunkStore {
    /// Opens the store under `root`, counting what it already holds.
    pub fn open(root: &Path) -> std::io::Result<ChunkStore> {
        let chunks = root.join("chunks");
        std::fs::create_dir_all(&chunks)?;
        let format_file = root.join("chunk-format");
        match std::fs::read_to_string(&format_file) {
            Ok(f) if f.trim() == FORMAT => {}
            Ok(f) => {
                return Err(std::io::Error::other(format!(
                    "{} says chunk format {}, this node reads format {FORMAT}",
                    format_file.display(),
                    f.trim()
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if std::fs::read_dir(&chunks)?.next().is_some() {
                    return Err(std::io::Error::other(format!(
                        "{} holds chunks of format 1 (before chains were part of chunk names); `cpfs node` migrates them when it starts",
                        chunks.display()
                    )));
                }
                std::fs::write(&format_file, FORMAT)?;
            }
            Err(e) => return Err(e),
        }
        let store = ChunkStore {
            root: chunks,
            files: Mutex::new(HashMap::new()),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            usage: RwLock::new(HashMap::new()),
            checksum_errors: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            behind: writeback::DropBehind::default(),
        };
        for fs in std::fs::read_dir(&store.root)? {
            let fs = fs?;
            let name = fs.file_name().to_string_lossy().to_string();
            let mut total = 0u64;
            for inode in std::fs::read_dir(fs.path())? {
                for chunk in std::fs::read_dir(inode?.path())? {
                    let chunk = chunk?;
                    if parse_chunk_name(&chunk.file_name().to_string_lossy()).is_none() {
                        continue; // an unfinished resync copy, replaced by the next
                    }
                    let mut len = chunk.metadata()?.len();
                    if len > MAX_RECORDS * RECORD {
                        // Unreachable through any request, and a hazard
                        // to every pass that reads whole chunks.
                        tracing::warn!(path = %chunk.path().display(), len, "chunk file past the largest chunk size; cutting it");
                        OpenOptions::new()
                            .write(true)
                            .open(chunk.path())?
                            .set_len(MAX_RECORDS * RECORD)?;
                        len = MAX_RECORDS * RECORD;
                    }
                    total += len;
                }
            }
            store
                .counters(&name)
                .stored
                .store(total / RECORD * BLOCK, Ordering::Relaxed);
        }
        Ok(store)
    }

    fn counters(&self, fs: &str) -> Arc<Counters> {
        if let Some(c) = self.usage.read().unwrap_or_else(|p| p.into_inner()).get(fs) {
            return c.clone();
        }
        self.usage
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(fs.to_string())
            .or_default()
            .clone()
    }

    fn lock_for(&self, key: &ChunkKey) -> &RwLock<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    fn inode_dir(&self, fs: &str, inode: u64) -> PathBuf {
        self.root.join(fs).join(inode.to_string())
    }

    pub fn chunk_path(&self, key: &ChunkKey) -> PathBuf {
        self.inode_dir(&key.fs, key.inode)
            .join(chunk_name(key.index, key.chain))
    }

    /// The chunk's file if it is open already (no syscall).
    fn open_file(&self, key: &ChunkKey) -> Option<Arc<File>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn file(&self, key: &ChunkKey, create: bool) -> Result<Option<Arc<File>>, NodeError> {
        if !valid_fs(&key.fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        if let Some(f) = self.open_file(key) {
            return Ok(Some(f));
        }
        let path = self.chunk_path(key);
        let opened = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && create => {
                std::fs::create_dir_all(self.inode_dir(&key.fs, key.inode)).map_err(io)?;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(io)?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let f = Arc::new(opened);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(key.clone(), f.clone());
        Ok(Some(f))
    }

    /// Records `[first, first + count)`; callers bound them by
    /// [`MAX_RECORDS`], checked here too so a slip cannot allocate wildly.
    fn read_records(&self, f: &File, first: u64, count: u64) -> Result<Vec<u8>, NodeError> {
        if first.saturating_add(count) > MAX_RECORDS {
            return Err(NodeError::OutOfRange {
                offset: first.saturating_mul(BLOCK),
                len: count.saturating_mul(BLOCK),
            });
        }
        let mut buf = vec![0u8; (count * RECORD) as usize];
        let mut done = 0usize;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], first * RECORD + done as u64) {
                Ok(0) => break, // beyond the end: holes
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(buf)
    }

    /// Writes `data` at `offset` of the chunk. `whole_blocks` (repairs)
    /// replaces blocks without reading them, which is how a corrupt block
    /// is overwritten.
    pub fn write(
        &self,
        key: &ChunkKey,
        offset: u64,
        data: &[u8],
        whole_blocks: bool,
    ) -> Result<(), NodeError> {
        check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let _guard = self
            .lock_for(key)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let f = self
            .file(key, true)?
            .ok_or_else(|| NodeError::Io("chunk vanished".into()))?;
        let streamed = self.write_records(key, &f, offset, data, whole_blocks)?;
        drop(_guard);
        if let Some((at, len)) = streamed {
            // Outside the chunk's lock: dropping older ranges may wait for
            // their writeback, and readers of this chunk need not.
            self.behind.wrote(&f, at, len);
        }
        Ok(())
    }

    /// [`Self::write`] of whole blocks, done only if it needs no waiting
    /// for the disk: the chunk file is open already, nobody else holds the
    /// chunk, and the pages it partly covers (the first and the last: a
    /// record straddles pages) are in the page cache, so the kernel reads
    /// nothing before it copies. False: it would wait, so write on the
    /// blocking pool instead. Lets the async worker apply a small write
    /// without a hand-off to another thread and back, as reads do.
    pub fn write_cached(
        &self,
        key: &ChunkKey,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, NodeError> {
        check_range(offset, data.len() as u64)?;
        let len = data.len() as u64;
        if len == 0
            || len > MAX_CACHED_WRITE
            || !offset.is_multiple_of(BLOCK)
            || !len.is_multiple_of(BLOCK)
        {
            return Ok(false);
        }
        let _guard = match self.lock_for(key).try_write() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        let Some(f) = self.open_file(key) else {
            return Ok(false);
        };
        let start = offset / BLOCK * RECORD;
        let end = start + len / BLOCK * RECORD;
        if !resident(&f, start) || !resident(&f, end - 1) {
            return Ok(false);
        }
        self.write_records(key, &f, offset, data, false)?;
        Ok(true)
    }

    /// The records of a write, built and put on disk with one `pwrite`;
    /// the caller holds the chunk's lock. A streamed write's records (their
    /// offset and length in the chunk file) come back, their writeback
    /// started, for the caller to note once it released the lock.
    fn write_records(
        &self,
        key: &ChunkKey,
        f: &File,
        offset: u64,
        data: &[u8],
        whole_blocks: bool,
    ) -> Result<Option<(u64, u64)>, NodeError> {
        let first = offset / BLOCK;
        let last = (offset + data.len() as u64 - 1) / BLOCK;
        let count = last - first + 1;
        if whole_blocks
            && (!offset.is_multiple_of(BLOCK) || !(data.len() as u64).is_multiple_of(BLOCK))
        {
            return Err(NodeError::Invalid("repairs cover whole blocks".into()));
        }
        let head_partial = !offset.is_multiple_of(BLOCK);
        let tail_partial = !(offset + data.len() as u64).is_multiple_of(BLOCK);
        let before = f.metadata().map_err(io)?.len();
        if !whole_blocks && (head_partial || tail_partial) {
            let mut out = Vec::with_capacity((count * RECORD) as usize);
            // Old content of the partly covered edge blocks.
            let mut blocks = vec![0u8; (count * BLOCK) as usize];
            for b in [first, last] {
                if (b == first && head_partial) || (b == last && tail_partial) {
                    let rec = self.read_records(f, b, 1)?;
                    let block = decode_record(&rec).ok_or_else(|| {
                        self.checksum_errors.fetch_add(1, Ordering::Relaxed);
                        NodeError::Checksum
                    })?;
                    let at = ((b - first) * BLOCK) as usize;
                    blocks[at..at + BLOCK as usize].copy_from_slice(block);
                }
            }
            let start = (offset - first * BLOCK) as usize;
            blocks[start..start + data.len()].copy_from_slice(data);
            for block in blocks.chunks(BLOCK as usize) {
                encode_record(block, &mut out);
            }
            f.write_all_at(&out, first * RECORD).map_err(io)?;
        } else {
            write_whole_blocks(f, data, first * RECORD).map_err(io)?;
        }
        let streamed = (data.len() as u64 >= writeback::STREAMED_WRITE)
            .then_some((first * RECORD, count * RECORD));
        if let Some((at, len)) = streamed {
            writeback::start(f, at, len);
        }
        let after = before.max((first + count) * RECORD);
        let c = self.counters(&key.fs);
        c.stored
            .fetch_add((after - before) / RECORD * BLOCK, Ordering::Relaxed);
        c.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        c.write_ops.fetch_add(1, Ordering::Relaxed);
        if whole_blocks {
            self.repairs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(streamed)
    }

    /// Reads `len` bytes at `offset` of the chunk, verifying every block.
    pub fn read(&self, key: &ChunkKey, offset: u64, len: u64) -> Result<Vec<u8>, NodeError> {
        check_range(offset, len)?;
        self.count_read(key, len);
        if len == 0 {
            return Ok(Vec::new());
        }
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(vec![0u8; len as usize]);
        };
        let first = offset / BLOCK;
        if offset.is_multiple_of(BLOCK) && len.is_multiple_of(BLOCK) {
            let (data, bad) = read_whole_blocks(&f, first, len / BLOCK).map_err(io)?;
            return match bad {
                None => Ok(data),
                Some(i) => Err(self.checksum_failed(key, first + i)),
            };
        }
        let last = (offset + len - 1) / BLOCK;
        let raw = self.read_records(&f, first, last - first + 1)?;
        self.verified(key, &raw, offset, len)
    }

    fn checksum_failed(&self, key: &ChunkKey, block: u64) -> NodeError {
        self.checksum_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(fs = %key.fs, inode = key.inode, chunk = key.index, block, "checksum mismatch");
        NodeError::Checksum
    }

    /// [`Self::read`], done only if it needs no waiting: the chunk file is
    /// open already, nobody is writing it, and every record is in the page
    /// cache (`preadv2` with `RWF_NOWAIT`). None: it would wait, so read on
    /// the blocking pool instead. Lets the async worker answer a read of
    /// cached data without a hand-off to another thread and back.
    pub fn read_cached(
        &self,
        key: &ChunkKey,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        check_range(offset, len)?;
        if len == 0 || len > MAX_CACHED_READ {
            return Ok(None);
        }
        let _guard = match self.lock_for(key).try_read() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let Some(f) = self.open_file(key) else {
            return Ok(None);
        };
        let first = offset / BLOCK;
        let last = (offset + len - 1) / BLOCK;
        let mut raw = vec![0u8; ((last - first + 1) * RECORD) as usize];
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(&*f, &mut [IoSliceMut::new(&mut raw)], first * RECORD, flags) {
            // Short: not all cached, or past the end (holes), which the
            // ordinary read answers.
            Ok(n) if n == raw.len() => {}
            Ok(_) | Err(_) => return Ok(None),
        }
        self.count_read(key, len);
        self.verified(key, &raw, offset, len).map(Some)
    }

    fn count_read(&self, key: &ChunkKey, len: u64) {
        let c = self.counters(&key.fs);
        c.read_ops.fetch_add(1, Ordering::Relaxed);
        c.read.fetch_add(len, Ordering::Relaxed);
    }

    /// The `len` bytes at `offset` out of the records `raw` (which start at
    /// the block holding `offset`), every block's checksum verified.
    fn verified(
        &self,
        key: &ChunkKey,
        raw: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, NodeError> {
        let first = offset / BLOCK;
        let last = (offset + len - 1) / BLOCK;
        let mut out = Vec::with_capacity(len as usize);
        for (i, rec) in raw.chunks(RECORD as usize).enumerate() {
            let block =
                decode_record(rec).ok_or_else(|| self.checksum_failed(key, first + i as u64))?;
            let b = first + i as u64;
            let from = if b == first {
                (offset % BLOCK) as usize
            } else {
                0
            };
            let to = if b == last {
                ((offset + len - 1) % BLOCK + 1) as usize
            } else {
                BLOCK as usize
            };
            out.extend_from_slice(&block[from..to]);
        }
        Ok(out)
    }

    /// Keeps the first `len` bytes of the chunk (0 removes it).
    pub fn truncate(&self, key: &ChunkKey, len: u64) -> Result<(), NodeError> {
        check_range(len, 0)?;
        let _guard = self
            .lock_for(key)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(());
        };
        let before = f.metadata().map_err(io)?.len();
        let c = self.counters(&key.fs);
        if len == 0 {
            self.files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
            std::fs::remove_file(self.chunk_path(key)).map_err(io)?;
            c.stored.fetch_sub(
                (before / RECORD * BLOCK).min(c.stored.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            return Ok(());
        }
        let keep_blocks = len.div_ceil(BLOCK);
        if !len.is_multiple_of(BLOCK) && before >= keep_blocks * RECORD {
            // Zero the tail of the last kept block.
            let b = keep_blocks - 1;
            let rec = self.read_records(&f, b, 1)?;
            let mut block = decode_record(&rec).ok_or(NodeError::Checksum)?.to_vec();
            block[(len % BLOCK) as usize..].fill(0);
            let mut out = Vec::with_capacity(RECORD as usize);
            encode_record(&block, &mut out);
            f.write_all_at(&out, b * RECORD).map_err(io)?;
        }
        if before > keep_blocks * RECORD {
            f.set_len(keep_blocks * RECORD).map_err(io)?;
            let freed = (before - keep_blocks * RECORD) / RECORD * BLOCK;
            c.stored.fetch_sub(
                freed.min(c.stored.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// fdatasync of every chunk of the inode, and of its directory (new
    /// chunk files must be findable after a crash too).
    pub fn fsync_inode(&self, fs: &str, inode: u64) -> Result<(), NodeError> {
        if !valid_fs(fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        let dir = self.inode_dir(fs, inode);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            File::open(entry.path())
                .and_then(|f| f.sync_data())
                .map_err(io)?;
        }
        for d in [
            dir.as_path(),
            self.root.join(fs).as_path(),
            self.root.as_path(),
        ] {
            File::open(d).and_then(|f| f.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    fn forget_open(&self, fs: &str, inode: Option<u64>) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !(k.fs == fs && inode.is_none_or(|i| i == k.inode)));
    }

    fn remove_dir_counted(&self, fs: &str, dir: &Path) -> Result<(), NodeError> {
        let mut freed = 0u64;
        if let Ok(walk) = std::fs::read_dir(dir) {
            for e in walk.flatten() {
                if let Ok(m) = e.metadata() {
                    if m.is_dir() {
                        if let Ok(inner) = std::fs::read_dir(e.path()) {
                            freed += inner
                                .flatten()
                                .filter_map(|x| x.metadata().ok())
                                .map(|m| m.len())
                                .sum::<u64>();
                        }
                    } else {
                        freed += m.len();
                    }
                }
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let c = self.counters(fs);
        let freed = freed / RECORD * BLOCK;
        c.stored.fetch_sub(
            freed.min(c.stored.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(())
    }

    pub fn drop_inode(&self, fs: &str, inode: u64) -> Result<(), NodeError> {
        if !valid_fs(fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        self.forget_open(fs, Some(inode));
        self.remove_dir_counted(fs, &self.inode_dir(fs, inode))
    }

    pub fn drop_fs(&self, fs: &str) -> Result<(), NodeError> {
        if !valid_fs(fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        self.forget_open(fs, None);
        match std::fs::remove_dir_all(self.root.join(fs)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        self.usage
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(fs);
        Ok(())
    }

    /// Counts one client request served for `fs` (see [`ServedIo`]).
    pub fn record_served(&self, fs: &str, write: bool, bytes: u64, took: std::time::Duration) {
        let c = self.counters(fs);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let s = &c.served;
        let (n, b, t) = if write {
            (&s.writes, &s.write_bytes, &s.write_us)
        } else {
            (&s.reads, &s.read_bytes, &s.read_us)
        };
        n.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
        t.fetch_add(us, Ordering::Relaxed);
    }

    pub fn usage(&self) -> Vec<FsUsage> {
        let map = self.usage.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<FsUsage> = map
            .iter()
            .map(|(fs, c)| FsUsage {
                fs: fs.clone(),
                bytes_stored: c.stored.load(Ordering::Relaxed),
                bytes_read: c.read.load(Ordering::Relaxed),
                bytes_written: c.written.load(Ordering::Relaxed),
                read_ops: c.read_ops.load(Ordering::Relaxed),
                write_ops: c.write_ops.load(Ordering::Relaxed),
                served: ServedIo {
                    reads: c.served.reads.load(Ordering::Relaxed),
                    read_bytes: c.served.read_bytes.load(Ordering::Relaxed),
                    read_us: c.served.read_us.load(Ordering::Relaxed),
                    writes: c.served.writes.load(Ordering::Relaxed),
                    write_bytes: c.served.write_bytes.load(Ordering::Relaxed),
                    write_us: c.served.write_us.load(Ordering::Relaxed),
                },
                // Filled in by the node, which holds the QoS limits.
                qos_wait_us: 0,
            })
            .collect();
        out.sort_by(|a, b| a.fs.cmp(&b.fs));
        out
    }
}

#[cfg(test)]
mod tests;
