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

use std::fs::File;
use std::os::fd::AsRawFd;

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
