//! The mount's cache of file data it read: small reads are answered from
//! memory when the same bytes were read before and nothing has changed
//! them since.
//!
//! A small read that misses fetches the whole aligned [`SEGMENT`] around it
//! (64 KiB, the unit MooseFS's chunk servers read and checksum too), so a
//! random reader warms the cache sixteen times faster than page by page,
//! and a reader of small sequential pieces makes one request per segment.
//! Reads larger than [`LARGEST_CACHED_READ`] (streams, which would only
//! push everything else out) neither use nor fill it. Every byte in it was
//! checked against its checksums on the node that sent it.
//!
//! Staying true to the file, with one number per inode, its epoch, in
//! every key: a new epoch makes what was cached under the old one
//! unreachable (it ages out), so nothing is ever searched for or removed.
//! The epoch moves on
//! - when this mount takes a write of the file, and again when the write
//!   has landed on the nodes (a reader that fetched in between cached
//!   under an epoch no one asks for any more), and around a truncate;
//! - when the watch reports another client's change of the file's data,
//!   and for every file when changes were lost;
//! - when an open finds the file's size or mtime changed since this mount
//!   last saw it (close-to-open, as for the kernel's own page cache).
//!
//! A reader takes the epoch after its own writes settled and caches what
//! it fetched under that epoch: what is cached under the current epoch
//! was fetched after every write that landed before it began. Epochs are
//! kept also when the cache has no room (`--read-cache-mib 0`): a
//! sequential reader's prefetch (fuse/readahead.rs) is trusted only while
//! its file's epoch stands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The unit fetched and cached.
pub const SEGMENT: u64 = 64 * 1024;
/// Larger reads go straight to the nodes.
pub const LARGEST_CACHED_READ: u64 = 128 * 1024;
/// The cache takes this share of the machine's memory unless told.
const SHARE_OF_MEMORY: u64 = 16;
/// ... but never more than this.
const DEFAULT_CEILING: u64 = 2 << 30;
/// Epochs of this many inodes at most are remembered (about 16 MiB); past
/// it they are all forgotten at once (every inode gets a fresh epoch, so
/// nothing stale is found, and what was cached ages out).
const MAX_EPOCHS: usize = 1 << 18;

/// The most bytes a mount holds prefetched for sequential readers
/// (fuse/readahead.rs), and the unit that is counted in.
pub const AHEAD_ROOM: u64 = 64 << 20;
pub const AHEAD_UNIT: u64 = 4096;

/// (inode, epoch, segment index)
type Key = (u64, u64, u64);
/// A file's size and mtime (ns) as an open found them.
pub type Version = (u64, i64);

#[derive(Clone)]
struct ByLength;

/// What an entry costs beyond its bytes (key, `Bytes` header, the
/// allocation and the store's slot), counted so that many tiny segments
/// (small files read after each of many writes) stay within the size.
const ENTRY_OVERHEAD: u64 = 256;

impl quick_cache::Weighter<Key, Bytes> for ByLength {
    fn weight(&self, _key: &Key, val: &Bytes) -> u64 {
        val.len() as u64 + ENTRY_OVERHEAD
    }
}

/// What a mount holds of file data.
pub struct ReadCache {
    segments: Option<quick_cache::sync::Cache<Key, Bytes, ByLength>>,
    /// Per inode: its epoch, and the size and mtime of the file its data
    /// was cached from, when known (see [`ReadCache::opened`]).
    epochs: Mutex<HashMap<u64, (u64, Option<Version>)>>,
    next_epoch: AtomicU64,
    ahead_room: Arc<tokio::sync::Semaphore>,
}

/// The default size: a sixteenth of the machine's memory, at most 2 GiB.
pub fn default_bytes() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 256 << 20;
    }
    ((pages as u64).saturating_mul(page as u64) / SHARE_OF_MEMORY).min(DEFAULT_CEILING)
}

impl ReadCache {
    /// A cache of at most `bytes` (0: none, every read goes to the nodes).
    pub fn new(bytes: u64) -> ReadCache {
        let segments = (bytes >= SEGMENT).then(|| {
            let items = (bytes / SEGMENT) as usize;
            quick_cache::sync::Cache::with_weighter(items, bytes, ByLength)
        });
        ReadCache {
            segments,
            epochs: Mutex::default(),
            next_epoch: AtomicU64::new(1),
            ahead_room: Arc::new(tokio::sync::Semaphore::new(
                (AHEAD_ROOM / AHEAD_UNIT) as usize,
            )),
        }
    }

    /// The room prefetched pieces share.
    pub fn ahead_room(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.ahead_room
    }

    /// Whether a read of `len` bytes goes through the cache.
    pub fn takes(&self, len: u64) -> bool {
        self.segments.is_some() && len > 0 && len <= LARGEST_CACHED_READ
    }

    fn fresh(&self) -> u64 {
        self.next_epoch.fetch_add(1, Ordering::Relaxed)
    }

    /// The current epoch of `ino`.
    pub fn epoch(&self, ino: u64) -> u64 {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((e, _)) = epochs.get(&ino) {
            return *e;
        }
        if epochs.len() >= MAX_EPOCHS {
            epochs.clear();
        }
        let e = self.fresh();
        epochs.insert(ino, (e, None));
        e
    }

    /// An open found `ino` at `version`: what was cached of another
    /// version is dropped (close-to-open).
    pub fn opened(&self, ino: u64, version: Version) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        match epochs.get_mut(&ino) {
            Some((_, Some(v))) if *v == version => {}
            Some(known) => *known = (self.fresh(), Some(version)),
            None => {
                if epochs.len() >= MAX_EPOCHS {
                    epochs.clear();
                }
                epochs.insert(ino, (self.fresh(), Some(version)));
            }
        }
    }

    /// [`Self::forget`] now and again when the returned guard is dropped:
    /// for a change in flight (a write through, a resize), where a read
    /// that fetched during it cached under an epoch the change then ends.
    pub fn forget_around(&self, ino: u64) -> ForgetAgain<'_> {
        self.forget(ino);
        ForgetAgain { cache: self, ino }
    }

    /// Makes everything cached of `ino` unreachable.
    pub fn forget(&self, ino: u64) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = epochs.get_mut(&ino) {
            // What the file is now is not known until the next open.
            *known = (self.fresh(), None);
        }
    }

    /// Makes everything cached unreachable (changes were lost).
    pub fn forget_all(&self) {
        self.epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(s) = &self.segments {
            s.clear();
        }
    }

    pub fn get(&self, ino: u64, epoch: u64, segment: u64) -> Option<Bytes> {
        self.segments.as_ref()?.get(&(ino, epoch, segment))
    }

    pub fn put(&self, ino: u64, epoch: u64, segment: u64, bytes: Bytes) {
        if let Some(s) = &self.segments {
            s.insert((ino, epoch, segment), bytes);
        }
    }

    /// Bytes held now (for the tests: the size is the store's to keep).
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.segments.as_ref().map_or(0, |s| s.weight())
    }
}

/// Forgets its inode's cached data again when dropped
/// ([`ReadCache::forget_around`]).
pub struct ForgetAgain<'a> {
    cache: &'a ReadCache,
    ino: u64,
}

impl Drop for ForgetAgain<'_> {
    fn drop(&mut self) {
        self.cache.forget(self.ino);
    }
}

/// What a read of `len` bytes at `offset` needs: the segments it touches,
/// each with the range to fetch (trimmed to the file's `size`).
pub fn segments(offset: u64, len: u64, size: u64) -> Vec<(u64, u64, u64)> {
    let end = offset.saturating_add(len).min(size);
    if offset >= end {
        return Vec::new();
    }
    (offset / SEGMENT..=(end - 1) / SEGMENT)
        .map(|s| {
            let start = s * SEGMENT;
            (s, start, SEGMENT.min(size - start))
        })
        .collect()
}

/// Cuts `[offset, offset+len)` out of the fetched or cached segments
/// (`parts` in order, from [`segments`]); `None` when one is shorter than
/// the read needs (the file grew since it was cached).
pub fn assemble(offset: u64, len: u64, parts: &[(u64, Bytes)]) -> Option<Vec<u8>> {
    let end = offset + len;
    let mut out = Vec::with_capacity(len as usize);
    for (start, bytes) in parts {
        let from = offset.max(*start);
        let to = end.min(start + SEGMENT);
        if from >= to {
            continue;
        }
        let (a, b) = ((from - start) as usize, (to - start) as usize);
        out.extend_from_slice(bytes.get(a..b)?);
    }
    (out.len() as u64 == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_touches_the_segments_around_it_trimmed_to_the_file() {
        assert_eq!(segments(0, 4096, 1 << 30), vec![(0, 0, SEGMENT)]);
        assert_eq!(
            segments(SEGMENT - 10, 20, 1 << 30),
            vec![(0, 0, SEGMENT), (1, SEGMENT, SEGMENT)]
        );
        assert_eq!(
            segments(SEGMENT + 5, 100, SEGMENT + 50),
            vec![(1, SEGMENT, 50)]
        );
        assert!(segments(100, 10, 100).is_empty());
    }

    #[test]
    fn assembling_cuts_the_range_and_refuses_a_short_segment() {
        let a = Bytes::from((0..SEGMENT).map(|i| i as u8).collect::<Vec<_>>());
        let b = Bytes::from(vec![7u8; SEGMENT as usize]);
        let out = assemble(SEGMENT - 2, 4, &[(0, a.clone()), (SEGMENT, b.clone())]);
        assert_eq!(out, Some(vec![254, 255, 7, 7]));
        let short = Bytes::from(vec![1u8; 10]);
        assert_eq!(assemble(SEGMENT + 5, 20, &[(SEGMENT, short)]), None);
    }

    #[test]
    fn a_new_epoch_hides_what_was_cached_and_other_inodes_keep_theirs() {
        let c = ReadCache::new(1 << 20);
        let (e1, e2) = (c.epoch(1), c.epoch(2));
        c.put(1, e1, 0, Bytes::from_static(b"old"));
        c.put(2, e2, 0, Bytes::from_static(b"two"));
        assert_eq!(c.get(1, c.epoch(1), 0).as_deref(), Some(&b"old"[..]));
        c.forget(1);
        assert_ne!(c.epoch(1), e1);
        assert_eq!(c.get(1, c.epoch(1), 0), None);
        assert_eq!(c.get(2, c.epoch(2), 0).as_deref(), Some(&b"two"[..]));
        // A fetch that began before the change caches where no one looks.
        c.put(1, e1, 0, Bytes::from_static(b"stale"));
        assert_eq!(c.get(1, c.epoch(1), 0), None);
        c.forget_all();
        assert_eq!(c.get(2, c.epoch(2), 0), None);
    }

    #[test]
    fn what_is_cached_during_a_change_is_forgotten_when_it_ends() {
        let c = ReadCache::new(1 << 20);
        c.put(1, c.epoch(1), 0, Bytes::from_static(b"before"));
        let forgetting = c.forget_around(1);
        assert_eq!(c.get(1, c.epoch(1), 0), None);
        // A read during the change caches what may be half old.
        c.put(1, c.epoch(1), 0, Bytes::from_static(b"during"));
        drop(forgetting);
        assert_eq!(c.get(1, c.epoch(1), 0), None);
    }

    #[test]
    fn an_open_that_finds_another_version_drops_the_cached_data() {
        let c = ReadCache::new(1 << 20);
        c.opened(5, (100, 1));
        let e = c.epoch(5);
        c.put(5, e, 0, Bytes::from_static(b"v1"));
        c.opened(5, (100, 1));
        assert_eq!(c.get(5, c.epoch(5), 0).as_deref(), Some(&b"v1"[..]));
        // Another client wrote and closed: same size, a new mtime.
        c.opened(5, (100, 2));
        assert_eq!(c.get(5, c.epoch(5), 0), None);
        // After this mount's own write, the next open starts afresh.
        let e = c.epoch(5);
        c.put(5, e, 0, Bytes::from_static(b"v2"));
        c.forget(5);
        c.opened(5, (100, 2));
        assert_eq!(c.get(5, c.epoch(5), 0), None);
    }

    #[test]
    fn the_cache_stays_within_its_size_and_zero_turns_it_off() {
        let c = ReadCache::new(4 * SEGMENT);
        let e = c.epoch(9);
        for s in 0..64 {
            c.put(9, e, s, Bytes::from(vec![0u8; SEGMENT as usize]));
        }
        assert!(c.held() <= 4 * SEGMENT, "{}", c.held());
        // Tiny entries count their upkeep too.
        let e = c.epoch(10);
        for s in 0..10_000 {
            c.put(10, e, s, Bytes::from_static(b"x"));
        }
        let entries = c.segments.as_ref().map_or(0, |s| s.len()) as u64;
        assert!(entries <= 4 * SEGMENT / ENTRY_OVERHEAD, "{entries} entries");
        let off = ReadCache::new(0);
        assert!(!off.takes(4096));
        off.put(1, off.epoch(1), 0, Bytes::from_static(b"x"));
        assert_eq!(off.get(1, off.epoch(1), 0), None);
        assert!(default_bytes() >= SEGMENT);
    }
}
