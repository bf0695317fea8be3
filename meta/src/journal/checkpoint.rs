//! Checkpoints of the SQLite write-ahead log, off the commit path.
//!
//! SQLite's default copies the log back into the database file inside
//! whichever commit finds the log past 1,000 pages, and fsyncs the file
//! there. On a create loop that was every ~170th create, at 1-12 ms each:
//! a quarter of the loop's time went to one operation in a hundred and
//! seventy. The journal's connections turn that off
//! (`wal_autocheckpoint = 0`), and this thread, with its own connection,
//! checkpoints instead. It first copies what is committed while the
//! writers go on appending (SQLite lets one checkpointer run beside
//! writers). Under a steady stream of commits that never copies the whole
//! log, and only a wholly copied log is started over: it would grow
//! without end. So the thread then takes the journal's lead for a moment
//! ([`Gate`]): operations queue meanwhile instead of committing, it copies
//! the few pages left, and the next commit, theirs, starts the log over.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

use super::JournalError;

/// Commits between checkpoints. A commit writes the log's last page, and
/// a fold the pages of its rows, many of them the same few pages again
/// (the counters, the directory's leaf, the newest inodes); a checkpoint
/// copies only a page's latest image: the rarer, the fewer pages copied
/// per operation.
const COMMITS_PER_CHECKPOINT: u64 = 256;
/// The log is started over once it is this long (16 MiB of 4 KiB pages;
/// SQLite's own default is 1,000 pages, but it pays for that inside a
/// commit). A read looks a page up in the log's index, one hash table per
/// 4,096 frames.
const RESTART_AT_FRAMES: i64 = 4096;
/// Rounds beside the commits before the held one, at most, and how few
/// frames landing during one is few enough to hold commits off for.
const CATCH_UP_ROUNDS: usize = 4;
const HELD_FRAMES: i64 = 128;
/// Past this, the log is started over whatever holding commits off costs.
const LONGEST_LOG: i64 = 4 * RESTART_AT_FRAMES;
/// An idle journal's last commits are checkpointed after this long.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// Wakes the checkpointer every [`COMMITS_PER_CHECKPOINT`] commits. When
/// it is dropped (the journal stopped), the thread ends.
pub(crate) struct Checkpoints {
    /// Commits so far (the thread reads it to tell an idle journal with
    /// commits left in the log from one without).
    commits: Arc<AtomicU64>,
    wake: mpsc::SyncSender<()>,
}

impl Checkpoints {
    /// Starts the thread on its own connection to `file`.
    pub fn start(file: &Path, gate: impl Gate) -> Result<Checkpoints, JournalError> {
        let conn = Connection::open(file).map_err(|e| JournalError::Open(e.to_string()))?;
        // A checkpoint never waits for a lock: a passive one skips what
        // it cannot copy now and the next one copies it.
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| JournalError::Open(e.to_string()))?;
        let (wake, woken) = mpsc::sync_channel(1);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("cpfs-checkpoint".into())
            .spawn(move || run(conn, woken, &counted, gate))
            .map_err(|e| JournalError::Open(e.to_string()))?;
        Ok(Checkpoints { commits, wake })
    }

    /// Counts one commit; every so many, wakes the checkpointer.
    pub fn committed(&self) {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(COMMITS_PER_CHECKPOINT) {
            // Full: a wake-up is already pending, which is as good.
            let _ = self.wake.try_send(());
        }
    }
}

/// Keeps commits out while the checkpointer copies the rest of the log.
pub(crate) trait Gate: Send + 'static {
    /// Runs `copy` while nothing commits; `None` when commits could not be
    /// held off now (the thread tries again at its next round).
    fn hold(&self, copy: &mut dyn FnMut() -> bool) -> Option<bool>;
}

/// Turns off the checkpoints inside commits on a journal connection.
pub(crate) fn leave_to_checkpointer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

fn run(conn: Connection, woken: mpsc::Receiver<()>, commits: &AtomicU64, gate: impl Gate) {
    // The commits counted when the log was last wholly copied: any since
    // are in the log only.
    let mut copied_upto = 0;
    loop {
        let idle = match woken.recv_timeout(IDLE_CHECKPOINT) {
            Ok(()) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if commits.load(Ordering::Relaxed) == copied_upto {
                    continue;
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                checkpoint(&conn);
                return;
            }
        };
        // This round copies the bulk beside the commits. It counts as
        // whole against the log it saw when it began, but commits went on
        // meanwhile: only a held round leaves nothing behind. That costs
        // the held-off operations two fsyncs (about a millisecond here),
        // so it waits for a long log or an idle moment.
        let mut log = checkpoint(&conn).map_or(0, |c| c.log);
        if !idle && log < RESTART_AT_FRAMES {
            continue;
        }
        // More rounds beside the commits, each copying what landed during
        // the one before, until little lands during one: that little is
        // what the held round copies while operations wait.
        let mut landed = i64::MAX;
        for _ in 0..CATCH_UP_ROUNDS {
            let Some(c) = checkpoint(&conn) else { break };
            landed = c.log - log;
            log = c.log;
            if landed <= HELD_FRAMES {
                break;
            }
        }
        if landed > HELD_FRAMES && log < LONGEST_LOG {
            // Commits keep landing faster than rounds copy them: holding
            // them off now would be long. Next wake-up.
            continue;
        }
        let upto = commits.load(Ordering::Relaxed);
        if gate
            .hold(&mut || checkpoint(&conn).is_some_and(|c| c.whole()))
            .unwrap_or(false)
        {
            copied_upto = upto;
        }
    }
}

/// What a checkpoint reports.
struct Copied {
    busy: bool,
    /// Frames in the log.
    log: i64,
    /// Frames of it in the database file.
    copied: i64,
}

impl Copied {
    /// Everything in the log is in the database file: the next writer
    /// starts the log over.
    fn whole(&self) -> bool {
        !self.busy && self.log == self.copied
    }
}

/// One passive checkpoint.
fn checkpoint(conn: &Connection) -> Option<Copied> {
    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Copied {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    });
    r.inspect_err(|e| tracing::warn!(error = %e, "checkpointing the journal's log"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small pages keep the log file of the test's many commits small.
    const PAGE: u64 = 1024;

    /// The log file's length in frames (a frame is a page and its header).
    fn log_frames(file: &Path) -> u64 {
        let wal = file.with_extension("db-wal");
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0) / (PAGE + 24)
    }

    fn journal_like(file: &Path) -> Connection {
        let conn = Connection::open(file).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; \
             CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB);"
        ))
        .unwrap();
        leave_to_checkpointer(&conn).unwrap();
        conn
    }

    fn commit(conn: &Connection, k: i64) {
        conn.execute("INSERT INTO t VALUES (?1, zeroblob(100))", [k])
            .unwrap();
    }

    /// The test's writer commits under this lock, as the journal's
    /// commits run under its lead.
    #[derive(Clone, Default)]
    struct Lock(Arc<std::sync::Mutex<()>>, Arc<AtomicU64>);

    impl Gate for Lock {
        fn hold(&self, copy: &mut dyn FnMut() -> bool) -> Option<bool> {
            let _held = self.0.lock().unwrap();
            let whole = copy();
            if whole {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            Some(whole)
        }
    }

    /// A few commits and then nothing: no wake-up comes (that takes 256
    /// commits), yet the idle journal's log is wholly copied within
    /// moments, by a held round.
    #[test]
    fn an_idle_journal_s_last_commits_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("idle.db");
        let writer = journal_like(&file);
        let lead = Lock::default();
        let checkpoints = Checkpoints::start(&file, lead.clone()).unwrap();
        for k in 0..10 {
            commit(&writer, k);
            checkpoints.committed();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while lead.1.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle journal's log was never copied"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = checkpoint(&Connection::open(&file).unwrap()).unwrap();
        assert!(
            c.log > 0 && c.log == c.copied,
            "{} of {} frames copied",
            c.copied,
            c.log
        );
    }

    /// A journal connection no longer copies the log back in its commits:
    /// without the checkpointer the log holds every commit's pages. With
    /// it, the log is wholly copied and the next commit starts it over,
    /// and every row is there. (How long the log grows between rounds
    /// depends on how fast the test commits against how fast this machine
    /// checkpoints: that is the benchmark's to measure, not this test's.)
    #[test]
    fn the_log_is_checkpointed_beside_the_commits_not_inside_them() {
        const COMMITS: i64 = 40_000;
        let dir = tempfile::tempdir().unwrap();
        let alone = dir.path().join("alone.db");
        let writer = journal_like(&alone);
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0);
        for k in 0..COMMITS {
            commit(&writer, k);
        }
        let grown = log_frames(&alone);
        assert!(grown >= COMMITS as u64, "the log holds {grown} frames");

        let file = dir.path().join("j.db");
        let writer = journal_like(&file);
        let lead = Lock::default();
        let checkpoints = Checkpoints::start(&file, lead.clone()).unwrap();
        for k in 0..COMMITS {
            let held = lead.0.lock().unwrap();
            commit(&writer, k);
            drop(held);
            checkpoints.committed();
        }
        // Once the writer stops, a held round copies the log wholly.
        let copies = lead.1.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while lead.1.load(Ordering::SeqCst) == copies {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not wholly copied after the commits stopped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // So the next commit starts it over: the log holds that commit's
        // few frames, not the test's tens of thousands.
        {
            let _held = lead.0.lock().unwrap();
            commit(&writer, COMMITS);
        }
        drop(checkpoints);
        let c = checkpoint(&Connection::open(&file).unwrap()).unwrap();
        assert!(c.log < 16, "the log holds {} frames", c.log);
        let rows = Connection::open(&file)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap();
        assert_eq!(rows, COMMITS + 1);
    }
}
