//! What a mount knows of the files it holds open: per inode (shared by all
//! of the file's handles) and per kernel file handle.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fuser::{INodeNo, Notifier};

use cpfs_proto::layout::Layout;
use cpfs_proto::meta::{Attr, Caller, OpenFile};

use super::readahead::Readahead;
use super::write_behind::{InodeWrites, WriteBehind};
use super::writers::Writers;
use crate::caps::HeldCap;
use crate::data::{DataClient, DataError};
use crate::meta::MetaClient;
use crate::read_cache::LARGEST_CACHED_READ;

/// What this mount knows of a file it holds open, shared by all the file's
/// handles. Knowledge per handle goes stale: the kernel sends the truncate
/// of open(O_TRUNC) without a file handle, and a file may be open several
/// times at once.
pub(crate) struct OpenInode {
    /// The file's size as this mount knows it: what the metadata service
    /// recorded (as this mount's opens and truncates left it), or further
    /// where this mount's writes reached since. Reads stop at it.
    pub(crate) size: AtomicU64,
    /// How far the metadata service counts the file's data as stored,
    /// capacity set aside ahead of this mount's writes included
    /// (`MetaOp::Reserve`): a write ending within it needs no metadata
    /// call; one ending past it asks for more first (a file extended by
    /// truncate counts none of its hole until written).
    pub(crate) stored: AtomicU64,
    /// Where this mount's writes reached past the size the service has
    /// recorded (0: nowhere): recorded at flush, fsync and close, before a
    /// truncate or a setting of the times, and about once a second while
    /// writes go on. Attributes shown to the kernel take it as the size.
    pub(crate) unrecorded: AtomicU64,
    /// How far this mount has capacity set aside (the service's answer to
    /// its last `Reserve`); what other mounts set aside is theirs, and
    /// not counted on here. Cleared at each writable open: the service
    /// gives it back when the session's last writable handle goes, which
    /// this mount cannot tell from here (another ask costs a call).
    pub(crate) reserved: AtomicU64,
    /// This mount's session changed while writes past the recorded size
    /// were unrecorded: their record says so (`Written::resumed`) until
    /// it is made.
    pub(crate) resumed: AtomicBool,
    /// The file's inode number.
    pub(crate) ino: u64,
    /// When the size was last recorded (milliseconds of the mount's clock).
    pub(crate) recorded_ms: AtomicU64,
    /// Growths this mount recorded one by one; the first is recorded so,
    /// later ones set capacity aside ahead (a file written once, as most
    /// small files are, never has any to give back).
    pub(crate) growths: AtomicU64,
    /// The service refused to set capacity aside (a limit is near): each
    /// growth is recorded exactly, so that the write passing the limit
    /// fails whole and what fits is kept.
    pub(crate) at_limit: AtomicBool,
    /// Held across each metadata call whose answer sets `size`, so that an
    /// older answer (an open racing an extending write or a truncate) never
    /// overwrites a newer one.
    pub(crate) sizing: tokio::sync::Mutex<()>,
    /// Its writes on their way to the nodes (see write_behind.rs).
    pub(crate) writes: InodeWrites,
    /// Writes taken so far (numbered from 1), and the number of the last
    /// one an explicit setting of the times (utimensat, after the writes
    /// landed) followed: a handle whose writes all came before it has
    /// nothing to record at close, and recording would overwrite the
    /// times the program set (`cp -a` sets them before it closes).
    pub(crate) writes_taken: AtomicU64,
    pub(crate) times_set_after: AtomicU64,
}

/// The inodes this mount holds open, with their number of open handles.
pub(crate) type OpenInodes = Arc<Mutex<HashMap<u64, (Arc<OpenInode>, usize)>>>;

impl OpenInode {
    /// Takes the size and stored bytes of an answer of the service (with
    /// `sizing` held).
    pub(crate) fn learn(&self, a: &Attr) {
        // A write that reached further meanwhile (it raises `unrecorded`,
        // then `size`, without `sizing`) is read again after the store:
        // in the one order of SeqCst operations, either this store comes
        // before its raise of `size`, or this load sees its `unrecorded`.
        self.size.store(a.size, Ordering::SeqCst);
        self.size
            .fetch_max(self.unrecorded.load(Ordering::SeqCst), Ordering::SeqCst);
        let own = a.size.max(self.reserved.load(Ordering::Acquire));
        self.stored.store(a.stored.min(own), Ordering::Release);
    }

    /// Takes the answer to a record of the size reaching `size`: what
    /// was unrecorded up to there is recorded now.
    pub(crate) fn recorded(&self, size: u64, a: &Attr, now_ms: u64) {
        let all = self
            .unrecorded
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u != 0 && u <= size).then_some(0)
            });
        if all.is_ok() {
            self.resumed.store(false, Ordering::Release);
        }
        self.recorded_ms.store(now_ms, Ordering::Release);
        self.learn(a);
    }
}

/// The kernel's view of `a`: a regular file this mount wrote past the size
/// the service recorded shows where the writes reached (the kernel would
/// otherwise cut its pages and its size back to the recorded one).
pub(crate) fn kernel_attr(inodes: &OpenInodes, a: &Attr) -> fuser::FileAttr {
    let mut shown = super::attr::file_attr(a);
    if a.kind == cpfs_proto::meta::Kind::File {
        let map = inodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((st, _)) = map.get(&a.ino) {
            shown.size = shown.size.max(st.unrecorded.load(Ordering::Acquire));
            shown.blocks = a.stored.min(shown.size).div_ceil(512);
        }
    }
    shown
}

/// Counts one more user of `ino`'s state; made on first use with the size
/// and stored bytes of `known` (a user that finds it made keeps what it
/// holds: it knows at least as much).
pub(crate) fn pin(inodes: &OpenInodes, ino: u64, known: Option<&Attr>) -> Arc<OpenInode> {
    let mut map = inodes.lock().unwrap_or_else(|p| p.into_inner());
    let entry = map.entry(ino).or_insert_with(|| {
        (
            Arc::new(OpenInode {
                size: AtomicU64::new(known.map_or(0, |a| a.size)),
                stored: AtomicU64::new(known.map_or(0, |a| a.stored)),
                sizing: tokio::sync::Mutex::new(()),
                writes: InodeWrites::default(),
                writes_taken: AtomicU64::new(0),
                times_set_after: AtomicU64::new(0),
                unrecorded: AtomicU64::new(0),
                reserved: AtomicU64::new(0),
                recorded_ms: AtomicU64::new(super::sizes::now_ms()),
                growths: AtomicU64::new(0),
                at_limit: AtomicBool::new(false),
                resumed: AtomicBool::new(false),
                ino,
            }),
            0,
        )
    });
    entry.1 += 1;
    entry.0.clone()
}

/// Drops one user of `ino`'s state; the last one forgets it, so the next
/// open starts from what the metadata service says (close-to-open).
pub(crate) fn unpin(inodes: &OpenInodes, ino: u64) {
    let mut map = inodes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = map.get_mut(&ino) {
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            map.remove(&ino);
        }
    }
}

/// One kernel file handle of a regular file.
pub(crate) struct FileHandle {
    pub(crate) ino: u64,
    /// Renewed while the handle is open (see [`crate::caps`]).
    pub(crate) cap: crate::caps::HeldCap,
    pub(crate) layout: Layout,
    pub(crate) inode: Arc<OpenInode>,
    pub(crate) dirty: AtomicBool,
    /// The number of its last write among the inode's (`writes_taken`).
    pub(crate) last_write: AtomicU64,
    /// The file had setuid or setgid bits when opened: the first write by
    /// anyone but root clears them at once (as a local file system does),
    /// not at close.
    pub(crate) privileged: AtomicBool,
    /// Opened with O_SYNC or O_DSYNC: each write is answered once every
    /// copy has it, not from the write-behind.
    pub(crate) write_through: bool,
    /// Who wrote through it: a close by another process does not wait.
    pub(crate) writers: Writers,
    /// The next piece of a sequential reader, on its way.
    pub(crate) readahead: Readahead,
}

/// File I/O through a handle, with its capability renewed as needed.
impl FileHandle {
    /// The handle of `o`, opened by `who` (O_SYNC or O_DSYNC: written
    /// through).
    pub(crate) fn new(
        o: OpenFile,
        inode: Arc<OpenInode>,
        meta: &Arc<MetaClient>,
        who: &Caller,
        write_through: bool,
    ) -> FileHandle {
        FileHandle {
            ino: o.attr.ino,
            cap: HeldCap::new(o.cap, meta.clone(), who.clone()),
            layout: o.layout,
            inode,
            dirty: AtomicBool::new(false),
            last_write: AtomicU64::new(0),
            privileged: AtomicBool::new(o.attr.perm & 0o6000 != 0),
            write_through,
            writers: Writers::default(),
            readahead: Readahead::default(),
        }
    }

    /// Counts a write through this handle: its data version is to be
    /// recorded at flush, fsync or close (see sizes.rs).
    pub(crate) fn wrote(&self) {
        let n = self.inode.writes_taken.fetch_add(1, Ordering::AcqRel) + 1;
        self.last_write.fetch_max(n, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether writes through this handle are still to be recorded: some
    /// came after the last explicit setting of the file's times.
    pub(crate) fn needs_record(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
            && self.last_write.load(Ordering::Acquire)
                > self.inode.times_set_after.load(Ordering::Acquire)
    }

    /// Reads up to `len` bytes at `offset` (none past the end of the
    /// file), once this mount's writes of the file settled: small reads
    /// through the read cache, large ones from the handle's prefetch when
    /// they continue a stream (see readahead.rs).
    pub(crate) async fn read(
        self: &Arc<Self>,
        data: &Arc<DataClient>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, DataError> {
        // This mount's own writes first (see write_behind.rs).
        self.inode.writes.settle().await;
        let size = self.inode.size.load(Ordering::Acquire);
        if offset >= size {
            return Ok(Bytes::new());
        }
        let len = len.min(size - offset);
        let (ino, layout) = (self.ino, &self.layout);
        let cache = &data.read_cache;
        if cache.takes(len) {
            return self
                .cap
                .with(|cap| async move { data.read_cached(&cap, layout, ino, offset, len, size).await })
                .await;
        }
        if len <= LARGEST_CACHED_READ {
            // Small and the cache is off: not a stream either.
            return self.fetch(data, offset, len).await;
        }
        let epoch = cache.epoch(ino);
        let begun = self.readahead.begin(offset, len, epoch);
        if begun.sequential {
            // Top the stream up to its depth of pieces on their way.
            let mut next = begun.held_end.unwrap_or(offset + len);
            for _ in begun.held..begun.depth {
                if next >= size {
                    break;
                }
                let n = len.min(size - next);
                let (h, d) = (self.clone(), data.clone());
                let at = next;
                let held = self.readahead.hold(cache.ahead_room(), at, n, epoch, || {
                    tokio::spawn(async move { h.fetch(&d, at, n).await })
                });
                if !held {
                    break;
                }
                next += n;
            }
        }
        if let Some(task) = begun.task {
            // A prefetch that failed is tried again as an ordinary read,
            // which reports the failure if it persists.
            if let Ok(Ok(bytes)) = task.await {
                return Ok(bytes);
            }
        }
        self.fetch(data, offset, len).await
    }

    /// Reads from the nodes, with the capability renewed as needed.
    async fn fetch(&self, data: &DataClient, offset: u64, len: u64) -> Result<Bytes, DataError> {
        let (ino, layout) = (self.ino, &self.layout);
        self.cap
            .with(|cap| async move { data.read(&cap, layout, ino, offset, len).await })
            .await
    }

    /// Writes `buf` at `offset`: queued in the write-behind, or through
    /// to every copy when the file was opened so.
    pub(crate) async fn write(
        h: &Arc<FileHandle>,
        data: &DataClient,
        behind: &Arc<WriteBehind>,
        offset: u64,
        buf: Vec<u8>,
    ) -> Result<(), i32> {
        if !h.write_through {
            return behind.write(h, offset, buf).await;
        }
        // Not before what another handle of the file queued: it would land
        // later and undo this write where they overlap.
        h.inode.writes.settle().await;
        let buf = &buf;
        // Cached data is stale from the first byte written on; a read that
        // fetched meanwhile cached under an epoch the landing ends.
        let forgetting = data.read_cache.forget_around(h.ino);
        let r = h
            .cap
            .with(|cap| async move { data.write(&cap, &h.layout, h.ino, offset, buf).await })
            .await;
        drop(forgetting);
        r.map_err(|e| {
            tracing::warn!(ino = h.ino, offset, error = %e, "write failed");
            e.errno()
        })
    }

    pub(crate) async fn fsync(&self, data: &DataClient) -> Result<(), DataError> {
        self.cap
            .with(|cap| async move { data.fsync(&cap, &self.layout, self.ino).await })
            .await
    }
}

/// Records `fresh` (size, mtime) as what the kernel is shown of `ino` at an
/// open, and answers the open's flags. A file another client changed since
/// this mount last saw it has the kernel's pages dropped (close-to-open);
/// an unchanged one keeps them (FOPEN_KEEP_CACHE; without it the kernel
/// drops them at every open), and changes made while it stays open reach
/// the kernel through the watch. The mount's read cache follows the same
/// rule, against the version its own data came from.
pub(super) fn open_flags(
    shown: &Mutex<HashMap<u64, (u64, i64)>>,
    notifier: &OnceLock<Notifier>,
    data: &DataClient,
    ino: u64,
    fresh: (u64, i64),
) -> fuser::FopenFlags {
    data.read_cache.opened(ino, fresh);
    let before = shown
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ino, fresh);
    match before {
        Some(b) if b == fresh => fuser::FopenFlags::FOPEN_KEEP_CACHE,
        Some(_) => {
            if let Some(n) = notifier.get() {
                drop_cached(n, ino, 0);
            }
            fuser::FopenFlags::empty()
        }
        None => fuser::FopenFlags::empty(),
    }
}

/// Drops the kernel's cached pages of `ino` (`offset` 0), or only its
/// attributes (`offset` -1). Never on the FUSE thread, where it could wait
/// for a page lock held by a reader whose READ that thread has to serve
/// (see inline.rs).
pub(super) fn drop_cached(n: &Notifier, ino: u64, offset: i64) {
    if super::inline::on_fuse_thread() {
        let n = n.clone();
        tokio::task::spawn_blocking(move || n.inval_inode(INodeNo(ino), offset, 0));
    } else {
        let _ = n.inval_inode(INodeNo(ino), offset, 0);
    }
}
