//! Prefetch for sequential readers of large pieces.
//!
//! A read too large for the read cache (a stream: O_DIRECT reads of a
//! megabyte, or the kernel's own readahead) that begins where the handle's
//! last read ended, or at the start of the file, starts fetching the next
//! pieces of the same length, up to [`DEPTH`] of them, before it waits
//! for its own. The nodes then read those pieces while this one travels
//! to the program and the program asks for the next: a stream keeps
//! several requests in flight, on several chains of the stripe, and a
//! node's disk has several reads queued.
//!
//! A prefetched piece is used only by a read of exactly its range, and
//! only while the file's epoch in the read cache is the one it was fetched
//! under: any write of this mount, any change another client made that the
//! watch reported, any open that found the file changed moves the epoch on,
//! and the read then fetches afresh. A mount holds at most 64 MiB
//! prefetched (the read cache's `AHEAD_ROOM`); past it, reads are not
//! prefetched.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::data::DataError;

use crate::read_cache::{AHEAD_ROOM as ROOM, AHEAD_UNIT as UNIT};

/// Pieces a stream keeps fetched ahead of its reads.
pub(crate) const DEPTH: usize = 3;

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
    /// The pieces on their way, in the order they will be read.
    ahead: VecDeque<Ahead>,
}

/// What a read learns from its handle's prefetch ([`Readahead::begin`]).
pub(crate) struct Begun {
    /// The fetch of this very range, if one was started.
    pub task: Option<Fetch>,
    /// Whether the read continues a stream (so pieces after it are worth
    /// fetching).
    pub sequential: bool,
    /// How many pieces the stream may keep on their way: one after a read
    /// at the start of a file (many programs read only a file's head),
    /// [`DEPTH`] once a read continued where the last one ended.
    pub depth: usize,
    /// How many pieces after this read are on their way, and where the
    /// last of them ends (where the next prefetch begins).
    pub held: usize,
    pub held_end: Option<u64>,
}

impl Readahead {
    /// A large read of `len` bytes at `offset` under `epoch` begins: the
    /// prefetched piece if it is this very range, still true, whether the
    /// read continues a stream, and what is on its way after it. A read of
    /// any other range drops every piece held (it is not that stream).
    pub(crate) fn begin(&self, offset: u64, len: u64, epoch: u64) -> Begun {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let continues = st.next == Some(offset);
        let sequential = offset == 0 || continues;
        st.next = Some(offset + len);
        let fits = |a: &Ahead| a.offset == offset && a.len == len && a.epoch == epoch;
        let task = match st.ahead.front() {
            Some(a) if fits(a) => st.ahead.pop_front().and_then(|mut a| a.task.take()),
            _ => {
                st.ahead.clear();
                None
            }
        };
        if st.ahead.front().is_some_and(|a| a.epoch != epoch) {
            // Fetched before the file changed: of no use to anyone.
            st.ahead.clear();
        }
        Begun {
            task,
            sequential,
            depth: if continues { DEPTH } else { 1 },
            held: st.ahead.len(),
            held_end: st.ahead.back().map(|a| a.offset + a.len),
        }
    }

    /// Holds `task`, the fetch of `len` bytes at `offset` under `epoch`,
    /// for the read that asks for them, after the pieces held already;
    /// false when the mount's prefetch room is spent (nothing is started
    /// then).
    pub(crate) fn hold(
        &self,
        room: &Arc<Semaphore>,
        offset: u64,
        len: u64,
        epoch: u64,
        start: impl FnOnce() -> Fetch,
    ) -> bool {
        let units = len.div_ceil(UNIT).clamp(1, ROOM / UNIT) as u32;
        let Ok(permit) = room.clone().try_acquire_many_owned(units) else {
            return false;
        };
        let ahead = Ahead {
            offset,
            len,
            epoch,
            task: Some(start()),
            _room: permit,
        };
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ahead
            .push_back(ahead);
        true
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
        let b = r.begin(0, 8, 1);
        assert!(b.sequential, "the start of a file begins a stream");
        assert_eq!(b.depth, 1, "one piece ahead until the stream goes on");
        r.hold(&room, 8, 8, 1, || fetched(b"next"));
        let b = r.begin(8, 8, 1);
        assert!(b.sequential);
        assert_eq!(b.depth, DEPTH);
        assert_eq!(
            b.task.expect("prefetched").await.unwrap().unwrap(),
            &b"next"[..]
        );

        // Not where the last read ended: no stream, and no piece.
        r.hold(&room, 16, 8, 1, || fetched(b"x"));
        let b = r.begin(40, 8, 1);
        assert!(b.task.is_none() && !b.sequential);
        assert_eq!(b.held, 0, "the other stream's pieces are dropped");
        // Another range than the one fetched.
        r.hold(&room, 48, 8, 1, || fetched(b"x"));
        assert!(r.begin(48, 4, 1).task.is_none());
    }

    #[tokio::test]
    async fn pieces_held_ahead_are_taken_in_order() {
        let (r, room) = (Readahead::default(), room());
        r.begin(0, 8, 1);
        assert!(r.hold(&room, 8, 8, 1, || fetched(b"one")));
        assert!(r.hold(&room, 16, 8, 1, || fetched(b"two")));
        let b = r.begin(8, 8, 1);
        assert_eq!(b.task.unwrap().await.unwrap().unwrap(), &b"one"[..]);
        assert_eq!((b.held, b.held_end), (1, Some(24)));
        let b = r.begin(16, 8, 1);
        assert_eq!(b.task.unwrap().await.unwrap().unwrap(), &b"two"[..]);
        assert_eq!((b.held, b.held_end), (0, None));
    }

    #[tokio::test]
    async fn a_piece_fetched_before_the_file_changed_is_not_used() {
        let (r, room) = (Readahead::default(), room());
        r.begin(0, 8, 1);
        r.hold(&room, 8, 8, 1, || fetched(b"old"));
        r.hold(&room, 16, 8, 1, || fetched(b"older"));
        let b = r.begin(8, 8, 2);
        assert!(b.task.is_none());
        assert!(
            b.sequential,
            "still a stream: the next pieces are fetched anew"
        );
        assert_eq!(b.held, 0, "pieces of the old epoch are dropped");
    }

    #[tokio::test]
    async fn the_room_bounds_what_is_held_and_comes_back() {
        let (a, b, room) = (Readahead::default(), Readahead::default(), room());
        assert!(a.hold(&room, 0, ROOM, 1, || fetched(b"all")));
        let mut started = false;
        let held = b.hold(&room, 0, 4096, 1, || {
            started = true;
            fetched(b"none")
        });
        assert!(!started && !held, "no room left");
        drop(a.begin(99, 1, 1)); // a's piece is dropped, and its room freed
        b.hold(&room, 0, 4096, 1, || {
            started = true;
            fetched(b"now")
        });
        assert!(started);
    }
}
