//! Prefetch for sequential readers of large pieces.
//!
//! A read too large for the read cache (a stream: O_DIRECT reads of a
//! megabyte, or the kernel's own readahead) that begins where the handle's
//! last read ended, or at the start of the file, starts fetching the next
//! piece of the same length before it waits for its own. The nodes then
//! read the next piece while this one travels to the program and the
//! program asks for the next: one more request in flight per stream.
//!
//! A prefetched piece is used only by a read of exactly its range, and
//! only while the file's epoch in the read cache is the one it was fetched
//! under: any write of this mount, any change another client made that the
//! watch reported, any open that found the file changed moves the epoch on,
//! and the read then fetches afresh. A mount holds at most 64 MiB
//! prefetched (the read cache's `AHEAD_ROOM`); past it, reads are not
//! prefetched.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::data::DataError;

use crate::read_cache::{AHEAD_ROOM as ROOM, AHEAD_UNIT as UNIT};

/// What a read gets from its handle's prefetch.
pub(crate) type Fetch = JoinHandle<Result<bytes::Bytes, DataError>>;

/// One piece on its way.
struct Ahead {
    offset: u64,
    len: u64,
    epoch: u64,
    task: Option<Fetch>,
    _room: OwnedSemaphorePermit,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Not wanted any more (another range was read, the handle closed).
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Per file handle.
#[derive(Default)]
pub(crate) struct Readahead {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Where the handle's last large read ended.
    next: Option<u64>,
    ahead: Option<Ahead>,
}

impl Readahead {
    /// A large read of `len` bytes at `offset` under `epoch` begins: the
    /// prefetched piece if it is this very range, still true, and whether
    /// the read continues a stream (so the next piece is worth fetching).
    pub(crate) fn begin(&self, offset: u64, len: u64, epoch: u64) -> (Option<Fetch>, bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let sequential = offset == 0 || st.next == Some(offset);
        st.next = Some(offset + len);
        let mut ahead = st.ahead.take();
        let fits = |a: &Ahead| a.offset == offset && a.len == len && a.epoch == epoch;
        let task = match &mut ahead {
            Some(a) if fits(a) => a.task.take(),
            _ => None,
        };
        (task, sequential)
    }

    /// Holds `task`, the fetch of `len` bytes at `offset` under `epoch`,
    /// for the read that asks for them; `None` when the mount's prefetch
    /// room is spent (nothing is started then).
    pub(crate) fn hold(
        &self,
        room: &Arc<Semaphore>,
        offset: u64,
        len: u64,
        epoch: u64,
        start: impl FnOnce() -> Fetch,
    ) {
        let units = len.div_ceil(UNIT).clamp(1, ROOM / UNIT) as u32;
        let Ok(permit) = room.clone().try_acquire_many_owned(units) else {
            return;
        };
        let ahead = Ahead {
            offset,
            len,
            epoch,
            task: Some(start()),
            _room: permit,
        };
        self.state.lock().unwrap_or_else(|p| p.into_inner()).ahead = Some(ahead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Arc<Semaphore> {
        crate::read_cache::ReadCache::new(0).ahead_room().clone()
    }

    fn fetched(bytes: &'static [u8]) -> Fetch {
        tokio::spawn(async move { Ok(bytes::Bytes::from_static(bytes)) })
    }

    #[tokio::test]
    async fn a_stream_gets_its_next_piece_and_nothing_else_does() {
        let (r, room) = (Readahead::default(), room());
        assert!(r.begin(0, 8, 1).1, "the start of a file begins a stream");
        r.hold(&room, 8, 8, 1, || fetched(b"next"));
        let (task, sequential) = r.begin(8, 8, 1);
        assert!(sequential);
        assert_eq!(
            task.expect("prefetched").await.unwrap().unwrap(),
            &b"next"[..]
        );

        // Not where the last read ended: no stream, and no piece.
        r.hold(&room, 16, 8, 1, || fetched(b"x"));
        let (task, sequential) = r.begin(40, 8, 1);
        assert!(task.is_none() && !sequential);
        // Another range than the one fetched.
        r.hold(&room, 48, 8, 1, || fetched(b"x"));
        assert!(r.begin(48, 4, 1).0.is_none());
    }

    #[tokio::test]
    async fn a_piece_fetched_before_the_file_changed_is_not_used() {
        let (r, room) = (Readahead::default(), room());
        r.begin(0, 8, 1);
        r.hold(&room, 8, 8, 1, || fetched(b"old"));
        let (task, sequential) = r.begin(8, 8, 2);
        assert!(task.is_none());
        assert!(sequential, "still a stream: the next piece is fetched anew");
    }

    #[tokio::test]
    async fn the_room_bounds_what_is_held_and_comes_back() {
        let (a, b, room) = (Readahead::default(), Readahead::default(), room());
        a.hold(&room, 0, ROOM, 1, || fetched(b"all"));
        let mut started = false;
        b.hold(&room, 0, 4096, 1, || {
            started = true;
            fetched(b"none")
        });
        assert!(!started, "no room left");
        drop(a.begin(99, 1, 1)); // a's piece is dropped, and its room freed
        b.hold(&room, 0, 4096, 1, || {
            started = true;
            fetched(b"now")
        });
        assert!(started);
    }
}
