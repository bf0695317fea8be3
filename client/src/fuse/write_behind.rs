//! Write-behind: a write is answered once this mount holds it, and reaches
//! the nodes in batches, as a local file system's page cache answers a
//! write before the disk has it. What waits between a program's writes is
//! then the mount's memory, not a replicated round trip, and many small
//! writes cost the nodes one request: each chain has one batch out at a
//! time, and what gathers meanwhile goes as the next one.
//!
//! What a program can rely on is what POSIX gives it: its own reads see
//! its writes (a read of a file with writes on their way waits for them);
//! fsync and close wait for them and report the first that failed (as the
//! next write does); another mount sees them after close (close-to-open).
//! A file opened with O_SYNC or O_DSYNC is written through, each write
//! answered once every copy has it. Memory is bounded: a mount holds at
//! most [`ROOM`] bytes of writes on their way, and a writer past it waits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use cpfs_proto::meta::errno;
use cpfs_proto::node::{ChunkKey, ChunkWrite, NodeError, MAX_BATCHED_WRITES};

use super::open_files::FileHandle;
use crate::data::{DataClient, DataError};

/// The most bytes of writes a mount holds on their way to the nodes.
pub(crate) const ROOM: u64 = 64 << 20;
/// The unit `ROOM` is counted in.
const UNIT: u64 = 4096;
/// The most bytes one batch carries (a request stays far below the frame
/// limit, and one chain's batch does not hold up its next for long).
const BATCH_BYTES: usize = 8 << 20;

/// Per inode (shared by its handles): what of its writes is on its way.
#[derive(Default)]
pub(crate) struct InodeWrites {
    outstanding: AtomicUsize,
    /// Tasks waiting for the writes to land: new writes wait for them, so a
    /// reader or a close is not starved by a writer that never stops.
    draining: AtomicUsize,
    /// The errno of the first write that failed and was not reported yet.
    error: AtomicI32,
    changed: Notify,
}

/// Counts a drainer while it waits (also if its task is dropped).
struct Draining<'a>(&'a InodeWrites);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if self.0.draining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl InodeWrites {
    /// Whether writes of this inode are on their way.
    pub(crate) fn busy(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) != 0
    }

    fn finished(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_waiters();
        }
    }

    fn fail(&self, e: i32) {
        let _ = self
            .error
            .compare_exchange(0, e, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Waits until `done` holds, re-checked at every change.
    async fn wait(&self, done: impl Fn(&Self) -> bool) {
        if done(self) {
            return;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// Waits until every write made so far has landed (new ones wait
    /// meanwhile). Reads and truncates call this; the failure, if any,
    /// stays for the writer's fsync or close.
    pub(crate) async fn settle(&self) {
        if !self.busy() {
            return;
        }
        self.draining.fetch_add(1, Ordering::AcqRel);
        let _counted = Draining(self);
        self.wait(|w| !w.busy()).await;
    }

    /// [`Self::settle`], then the first failure since the last report.
    pub(crate) async fn drain(&self) -> Result<(), i32> {
        self.settle().await;
        self.take_error()
    }

    /// The first failure since the last report, now reported.
    pub(crate) fn take_error(&self) -> Result<(), i32> {
        match self.error.swap(0, Ordering::AcqRel) {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// Whether a failure waits to be reported.
    pub(crate) fn failed(&self) -> bool {
        self.error.load(Ordering::Acquire) != 0
    }
}

/// A piece of a write waiting for its chain.
struct Pending {
    handle: Arc<FileHandle>,
    write: ChunkWrite,
    _room: OwnedSemaphorePermit,
}

#[derive(Default)]
struct ChainQueue {
    waiting: VecDeque<Pending>,
    /// A task is sending this queue's batches.
    sending: bool,
}

/// A mount's writes on their way, queued per (file system, chain).
pub(crate) struct WriteBehind {
    data: Arc<DataClient>,
    rt: Handle,
    room: Arc<Semaphore>,
    queues: Mutex<HashMap<(String, u32), ChainQueue>>,
}

impl WriteBehind {
    pub(crate) fn new(rt: Handle, data: Arc<DataClient>) -> Arc<WriteBehind> {
        Arc::new(WriteBehind {
            data,
            rt,
            room: Arc::new(Semaphore::new((ROOM / UNIT) as usize)),
            queues: Mutex::default(),
        })
    }

    /// Takes a write of `buf` at `offset` through `h`: answered once queued.
    /// A failure of an earlier write of the file is reported here (and
    /// again at fsync or close).
    pub(crate) async fn write(
        self: &Arc<Self>,
        h: &Arc<FileHandle>,
        offset: u64,
        buf: Vec<u8>,
    ) -> Result<(), i32> {
        let w = &h.inode.writes;
        w.wait(|w| w.draining.load(Ordering::Acquire) == 0).await;
        let e = w.error.load(Ordering::Acquire);
        if e != 0 {
            return Err(e);
        }
        let pieces = h
            .layout
            .pieces(offset, buf.len() as u64)
            .map_err(|e| DataError::from(e).errno())?;
        let fs = h.cap.get().fs;
        // What the read cache holds of the file is stale from here on (and
        // again once the write landed: see read_cache.rs).
        self.data.read_cache.forget(h.ino);
        // Pieces are slices of the one buffer, not copies.
        let buf = bytes::Bytes::from(buf);
        for p in pieces {
            let units = p.len.div_ceil(UNIT).clamp(1, ROOM / UNIT) as u32;
            let room = self
                .room
                .clone()
                .acquire_many_owned(units)
                .await
                .map_err(|_| errno::EIO)?;
            let data = buf.slice(p.buf_offset as usize..(p.buf_offset + p.len) as usize);
            let write = ChunkWrite {
                cap: h.cap.get(),
                key: ChunkKey {
                    fs: fs.clone(),
                    inode: h.ino,
                    index: p.chunk,
                    chain: p.chain,
                },
                offset: p.offset,
                data,
            };
            w.outstanding.fetch_add(1, Ordering::AcqRel);
            self.push(
                (fs.clone(), p.chain),
                Pending {
                    handle: h.clone(),
                    write,
                    _room: room,
                },
            );
        }
        Ok(())
    }

    fn push(self: &Arc<Self>, queue: (String, u32), p: Pending) {
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let q = queues.entry(queue.clone()).or_default();
            q.waiting.push_back(p);
            !std::mem::replace(&mut q.sending, true)
        };
        if start {
            let me = self.clone();
            self.rt.spawn(async move { me.send(queue).await });
        }
    }

    /// Sends one queue's batches until it is empty.
    async fn send(self: Arc<Self>, queue: (String, u32)) {
        loop {
            let batch = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let Some(q) = queues.get_mut(&queue) else {
                    return;
                };
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(p) = q.waiting.front() {
                    let len = p.write.data.len();
                    if batch.len() == MAX_BATCHED_WRITES
                        || (!batch.is_empty() && bytes + len > BATCH_BYTES)
                    {
                        break;
                    }
                    bytes += len;
                    batch.extend(q.waiting.pop_front());
                }
                if batch.is_empty() {
                    queues.remove(&queue);
                    return;
                }
                batch
            };
            self.send_batch(queue.1, batch).await;
        }
    }

    async fn send_batch(&self, chain: u32, batch: Vec<Pending>) {
        let mut handles = Vec::with_capacity(batch.len());
        let mut writes = Vec::with_capacity(batch.len());
        // The room is given back once the batch is done with.
        let mut _room = Vec::with_capacity(batch.len());
        for p in batch {
            handles.push(p.handle);
            writes.push(p.write);
            _room.push(p._room);
        }
        let r = if let ([h], [w]) = (handles.as_slice(), writes.as_slice()) {
            self.send_one(h, w).await
        } else {
            for (h, w) in handles.iter().zip(writes.iter_mut()) {
                w.cap = h.cap.fresh().await;
            }
            match self.data.write_batch(chain, &writes).await {
                // Refused by a node for one write's sake (a capability
                // revoked or expired, a file system over its capacity): one
                // by one, each with its handle's renewals, so the others
                // land and each failure is its own file's.
                Err(DataError::Node(e)) if !matches!(e, NodeError::Io(_)) => {
                    for (h, w) in handles.iter().zip(&writes) {
                        if let Err(e) = self.send_one(h, w).await {
                            h.inode.writes.fail(e.errno());
                        }
                    }
                    Ok(())
                }
                r => r,
            }
        };
        if let Err(e) = r {
            tracing::warn!(chain, writes = writes.len(), error = %e, "writes failed");
            for h in &handles {
                h.inode.writes.fail(e.errno());
            }
        }
        for h in &handles {
            self.data.read_cache.forget(h.ino);
            h.inode.writes.finished();
        }
    }

    async fn send_one(&self, h: &FileHandle, w: &ChunkWrite) -> Result<(), DataError> {
        h.cap
            .with(|cap| async move { self.data.write_chunk(&cap, &w.key, w.offset, &w.data).await })
            .await
    }
}
