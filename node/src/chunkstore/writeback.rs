//! Writeback of streamed writes started as they land.
//!
//! A streamed file's pages would otherwise stay dirty until the kernel's
//! flusher gets to them (10 % of memory dirty, or 30 s old), and the
//! file's fsync would then write them all at once, hundreds of megabytes
//! while the writer waits: with 1 GiB written by four streams, the fsync
//! at their end took a second, a third of the whole run. Started as each
//! large write lands, the disk writes the pages while the stream goes on,
//! and the fsync waits only for the last of them. (One `syncfs` instead
//! of an fdatasync per chunk was tried too: no faster once the pages were
//! on their way, and it would write other tenants' dirty pages as well.)
//!
//! `sync_file_range(SYNC_FILE_RANGE_WRITE)` only queues the pages for the
//! disk; it does the file system's block allocation first and can wait
//! for a full device queue, so it runs where the write ran, on the
//! blocking pool (writes this large never run on an async worker, see
//! `MAX_CACHED_WRITE`). A thread of its own was tried and was no faster:
//! the hand-off cost what the reply gained.
//!
//! Once written, a stream's pages leave the page cache ([`DropBehind`]):
//! every page a stream dirties is otherwise a page the kernel takes from
//! free memory, and on a virtual machine whose free memory goes back to
//! the host, touching such a page for the first time costs a fault in the
//! host. Pages dropped behind the stream are taken again by its next
//! writes while they are still the guest's.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// A write at least this large is part of a stream.
pub(super) const STREAMED_WRITE: u64 = 256 * 1024;

/// Queues `len` bytes of `f` at `offset` for the disk, without waiting
/// for them. Best effort: on failure the pages wait for the flusher, and
/// an fsync writes them.
pub(super) fn start(f: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `f` keeps the descriptor open for the call, which only
    // queues I/O of the file's pages.
    let rc =
        unsafe { libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "starting writeback of a chunk");
    }
}

/// How much of the latest streamed writes a node keeps in its page cache:
/// older ranges are written out (their writeback started as they landed,
/// so it is normally done by then) and dropped. It also bounds what a
/// node holds dirty for streams, so a writer faster than the disk waits
/// here, a stream behind, rather than at its fsync.
pub(super) const KEPT_BEHIND: u64 = 64 << 20;

/// The ranges of the latest streamed writes, oldest first, and how many
/// bytes they cover. Written data read back later is read from the disk
/// (and checked), like any data the cache no longer holds.
#[derive(Default)]
pub(super) struct DropBehind {
    ranges: Mutex<(VecDeque<Streamed>, u64)>,
}

/// A streamed write: its chunk file, offset and length.
type Streamed = (Arc<File>, u64, u64);

impl DropBehind {
    /// Notes a streamed write of `len` bytes of `f` at `offset`, and drops
    /// from the page cache the oldest ranges past [`KEPT_BEHIND`]. Best
    /// effort: pages dirtied again meanwhile are left where they are.
    pub(super) fn wrote(&self, f: &Arc<File>, offset: u64, len: u64) {
        let old: Vec<Streamed> = {
            let mut g = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
            let (ranges, total) = &mut *g;
            ranges.push_back((f.clone(), offset, len));
            *total += len;
            let mut old = Vec::new();
            while *total > KEPT_BEHIND {
                let Some(r) = ranges.pop_front() else { break };
                *total -= r.2;
                old.push(r);
            }
            old
        };
        for (f, offset, len) in old {
            write_out_and_drop(&f, offset, len);
        }
    }
}

/// Waits for `len` bytes of `f` at `offset` to be written (not for the
/// device's cache: that is the fsync's job), then asks the kernel to drop
/// those clean pages from its cache.
fn write_out_and_drop(f: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let fd = f.as_raw_fd();
    let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: `f` keeps the descriptor open for both calls, which only
    // write out and advise the kernel about the file's cached pages.
    let (synced, advised) = unsafe {
        (
            libc::sync_file_range(fd, offset, len, wait),
            libc::posix_fadvise(fd, offset, len, libc::POSIX_FADV_DONTNEED),
        )
    };
    if synced != 0 || advised != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, advised, "dropping a streamed chunk's pages");
    }
}
