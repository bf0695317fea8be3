//! Who commits: an operation on an idle SQLite journal commits on its own
//! thread; one that finds the database locked by another connection is
//! handed to the writer thread, which waits for the lock and commits it,
//! and nothing is lost or answered early either way.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use cpfs_proto::meta::{MetaReply, ROOT_INO};

use crate::exactly_once_tests::{backends, mkdir_in, postgres_backend};

fn mkdir(name: &str) -> cpfs_proto::meta::MetaOp {
    mkdir_in(ROOT_INO, name)
}

#[tokio::test]
async fn an_idle_journal_commits_inline_and_a_locked_database_goes_to_the_writer() {
    let mut all = backends().await;
    let b = all.remove(0);
    assert_eq!(b.name, "sqlite");
    let stats = b.svc.shards.journal.stats.clone();
    let file = b.url.trim_start_matches("sqlite://").to_string();

    let inline_before = stats.inline_commits.load(Relaxed);
    let handovers_before = stats.handovers.load(Relaxed);
    let commits_before = stats.commits.load(Relaxed);
    assert!(matches!(
        b.run(mkdir("idle"), None).await,
        MetaReply::Entry(_)
    ));
    assert_eq!(stats.inline_commits.load(Relaxed), inline_before + 1);
    assert_eq!(stats.commits.load(Relaxed), commits_before + 1);
    assert_eq!(stats.handovers.load(Relaxed), handovers_before);

    // Another connection holds the write lock (as the control plane's
    // pool does while it writes): the inline attempt fails at once and
    // the writer thread waits for the lock.
    let blocker = rusqlite::Connection::open(&file).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let svc = b.svc.clone();
    let s = b.s.clone();
    let op = tokio::spawn(async move {
        let root = cpfs_proto::meta::Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        svc.handle_as(s, root, mkdir("busy"), None).await
    });
    // The inline attempt found the lock taken and handed the lead over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.handovers.load(Relaxed) == handovers_before {
        assert!(tokio::time::Instant::now() < deadline, "never handed over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!op.is_finished(), "answered before its commit");
    blocker.execute_batch("COMMIT").unwrap();
    let reply = op.await.unwrap();
    assert!(matches!(reply, MetaReply::Entry(_)), "{reply:?}");
    assert_eq!(stats.inline_commits.load(Relaxed), inline_before + 1);
    assert_eq!(stats.commits.load(Relaxed), commits_before + 2);

    // Both directories are in the store, once the log is folded.
    b.svc.shards.journal.settled().await;
    let check = rusqlite::Connection::open(&file).unwrap();
    let n: i64 = check
        .query_row(
            "SELECT COUNT(*) FROM dentries WHERE name IN (X'69646C65', X'62757379')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2);
}

/// The server processes of the journal's connections (they name
/// themselves `cpfs-journal`).
async fn journal_backends(store: &cpfs_store::Store) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'cpfs-journal' ORDER BY pid",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap()
}

/// On PostgreSQL the journal commits on one connection it keeps, not on
/// whichever of the pool's connections is free, and takes a fresh one
/// when that one breaks, without failing an operation.
#[tokio::test]
async fn the_postgres_journal_keeps_one_connection_and_replaces_a_broken_one() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    // Fill the pool with idle connections, which it hands out in turn.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(store.pool.acquire().await.unwrap());
    }
    drop(held);
    for i in 0..12 {
        let reply = b.run(mkdir(&format!("d{i}")), None).await;
        assert!(matches!(reply, MetaReply::Entry(_)), "{reply:?}");
    }
    let before = journal_backends(store).await;
    assert_eq!(before.len(), 1, "journal connections: {before:?}");

    // Its server process dies (a restart, a cut connection).
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend(CAST($1 AS INTEGER))")
        .bind(before[0])
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert!(killed);
    // The signal is asynchronous: wait until the process is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while super::pg_pipeline::process_alive(&store.pool, before[0])
        .await
        .unwrap()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend did not exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = b.run(mkdir("after"), None).await;
    assert!(matches!(reply, MetaReply::Entry(_)), "{reply:?}");
    b.svc.shards.journal.settled().await;
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM dentries WHERE name = CAST('after' AS BYTEA)")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(n, 1);
    let after = journal_backends(store).await;
    assert_eq!(after.len(), 1, "journal connections: {after:?}");
    assert_ne!(after, before);
}

/// The checkpointer's side of the lead, without a database.
mod lead_gate {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::sync::{mpsc, oneshot, watch};

    use super::super::checkpoint::Gate;
    use super::super::{locked, Entry, LeadGate, Prepared, Shared};

    fn shared(leading: bool) -> Arc<Shared> {
        let shared = Shared::new(watch::channel(0).0, Default::default());
        locked(&shared.queue).leading = leading;
        Arc::new(shared)
    }

    fn gate(
        shared: &Arc<Shared>,
    ) -> (
        LeadGate,
        mpsc::UnboundedSender<Option<Prepared>>,
        mpsc::UnboundedReceiver<Option<Prepared>>,
    ) {
        let (takeover, rx) = mpsc::unbounded_channel();
        let gate = LeadGate {
            shared: Arc::downgrade(shared),
            takeover: takeover.downgrade(),
        };
        (gate, takeover, rx)
    }

    fn entry() -> Entry {
        Entry {
            seq: 1,
            fs: Arc::from("fs-t"),
            generation: 1,
            epoch: None,
            changes: Vec::new(),
            done: oneshot::channel().0,
        }
    }

    /// While a leader commits, the checkpointer waits; the leader passes
    /// the lead on after its commit, the copy runs with nobody else
    /// committing, and what queued meanwhile goes to the writer with the
    /// lead.
    #[test]
    fn the_checkpointer_copies_only_once_the_lead_is_passed_to_it() {
        let shared = shared(true);
        let (gate, _keep, mut writer) = gate(&shared);
        let copied = Arc::new(AtomicBool::new(false));
        let flag = copied.clone();
        let holder = std::thread::spawn(move || {
            gate.hold(&mut || {
                flag.store(true, Ordering::SeqCst);
                true
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !locked(&shared.queue).gate_waits {
            assert!(Instant::now() < deadline, "the checkpointer never asked");
            std::thread::yield_now();
        }
        assert!(
            !copied.load(Ordering::SeqCst),
            "copied under another leader"
        );
        {
            let mut q = locked(&shared.queue);
            q.pending.push(entry());
            assert!(q.pass_lead(&shared.lead_granted), "the lead was kept");
        }
        assert_eq!(holder.join().unwrap(), Some(true));
        assert!(copied.load(Ordering::SeqCst));
        assert!(
            matches!(writer.try_recv(), Ok(None)),
            "the writer was not given the lead"
        );
        let q = locked(&shared.queue);
        assert!(q.leading && !q.gate_waits && !q.gate_leads);
    }

    /// A leader that does not pass the lead on in time keeps it: the
    /// checkpointer gives up without copying and stops asking.
    #[test]
    fn a_checkpointer_not_given_the_lead_gives_up_and_stops_asking() {
        let shared = shared(true);
        let (gate, _keep, mut writer) = gate(&shared);
        let mut copied = false;
        assert_eq!(
            gate.hold(&mut || {
                copied = true;
                true
            }),
            None
        );
        assert!(!copied);
        let mut q = locked(&shared.queue);
        assert!(q.leading && !q.gate_waits);
        // The leader then lets go as usual (nothing queued).
        assert!(q.pass_lead(&shared.lead_granted));
        assert!(!q.leading && !q.gate_leads);
        assert!(writer.try_recv().is_err());
    }

    /// Records whether a gate's holder had the lead during a commit.
    struct Watching {
        shared: Arc<Shared>,
        gate_led: Arc<AtomicBool>,
    }

    impl super::super::Writer for Watching {
        async fn write(
            &mut self,
            _rows: &super::super::rows::Batch,
        ) -> Result<Vec<Arc<str>>, String> {
            let q = locked(&self.shared.queue);
            if q.gate_leads {
                self.gate_led.store(true, Ordering::SeqCst);
            }
            Ok(Vec::new())
        }
    }

    /// The writer handed the lead because entries queued behind a gate's
    /// holder (the folder between two of its transactions) commits them
    /// before the holder, already asking again, gets the lead back: a
    /// folder folding in several transactions would otherwise keep them
    /// waiting through all of them.
    #[tokio::test]
    async fn a_handed_lead_commits_what_queued_before_a_gate_takes_it_back() {
        let shared = shared(true);
        let (done, answered) = oneshot::channel();
        {
            let mut q = locked(&shared.queue);
            q.gate_waits = true;
            q.pending.push(Entry { done, ..entry() });
        }
        let gate_led = Arc::new(AtomicBool::new(false));
        let writer = Watching {
            shared: shared.clone(),
            gate_led: gate_led.clone(),
        };
        let (takeover, rx) = mpsc::unbounded_channel();
        tokio::spawn(super::super::run(writer, rx, shared.clone()));
        takeover.send(None).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answered).await;
        assert_eq!(
            answer
                .expect("the queued entry was never committed")
                .unwrap(),
            Ok(())
        );
        assert!(
            !gate_led.load(Ordering::SeqCst),
            "committed under the gate's lead"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !locked(&shared.queue).gate_leads {
            assert!(Instant::now() < deadline, "the gate never got the lead");
            tokio::task::yield_now().await;
        }
    }

    /// A free lead is taken at once and let go after the copy, also when
    /// the copy panics.
    #[test]
    fn a_free_lead_is_taken_and_given_back_even_if_the_copy_panics() {
        let shared = shared(false);
        let (gate, _keep, mut writer) = gate(&shared);
        assert_eq!(gate.hold(&mut || true), Some(true));
        assert!(!locked(&shared.queue).leading);
        assert_eq!(gate.hold(&mut || panic!("copy failed")), Some(false));
        assert!(!locked(&shared.queue).leading);
        assert!(writer.try_recv().is_err());
    }
}

/// Entries of one file system made under an older epoch than others in
/// the same batch come from an incarnation that lost it since: they are
/// answered fenced and left out, so the newer epoch's commit does not
/// write them.
#[test]
fn older_epochs_in_a_batch_are_fenced_not_written_under_the_newer() {
    use super::rows::Change;
    use super::{locked, Entry, Shared, FENCED};
    use std::sync::Arc;
    use tokio::sync::{oneshot, watch};

    let shared = Shared::new(watch::channel(0).0, Default::default());
    let fs: Arc<str> = Arc::from("fs-e");
    let entry = |seq, generation, epoch, ino| {
        let (done, answer) = oneshot::channel();
        let e = Entry {
            seq,
            fs: fs.clone(),
            generation,
            epoch: Some(epoch),
            changes: vec![Change::Orphan(ino, Some(1))],
            done,
        };
        (e, answer)
    };
    let (newer, _newer_answer) = entry(1, 2, 3, 100);
    let (older, mut older_answer) = entry(2, 1, 1, 200);
    let p = shared.prepare(vec![newer, older]);
    assert_eq!(older_answer.try_recv().unwrap(), Err(FENCED.to_string()));
    assert_eq!(p.accepted.len(), 1);
    assert_eq!(p.rows.epochs, vec![(fs.clone(), 3)]);
    let rows = format!("{:?}", p.rows.rows);
    assert!(rows.contains("100") && !rows.contains("200"), "{rows}");
    // The old incarnation's later entries are refused too.
    assert_eq!(locked(&shared.failed).get(&fs), Some(&1));
}

/// A load's recovery first settles every entry submitted before it (a
/// shard dropped when its lease lapsed may have some queued that nobody
/// leads yet): they are committed, not left to land after the load.
#[tokio::test]
async fn a_recovery_settles_what_was_submitted_before_it() {
    use super::rows::Change;
    use std::sync::Arc;
    for b in backends().await {
        let journal = &b.svc.shards.journal;
        let fs: Arc<str> = Arc::from(crate::exactly_once_tests::FS);
        let generation = journal.generation();
        // Submitted, and nobody took the lead.
        let (_, mut answer) =
            journal.submit(&fs, (generation, None), vec![Change::Orphan(4242, Some(1))]);
        assert!(answer.try_recv().is_err(), "{}: answered early", b.name);
        journal.recover(&fs, None).await.unwrap();
        assert_eq!(answer.try_recv(), Ok(Ok(())), "{}", b.name);
        // On PostgreSQL it is folded too: the recovery folded the log.
        let orphans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orphans WHERE ino = 4242")
            .fetch_one(&b.svc.store.pool)
            .await
            .unwrap();
        assert_eq!(orphans, 1, "{}", b.name);
    }
}
