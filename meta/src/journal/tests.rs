//! Who commits: an operation on an idle SQLite journal commits on its own
//! thread; one that finds the database locked by another connection is
//! handed to the writer thread, which waits for the lock and commits it,
//! and nothing is lost or answered early either way.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use cpfs_proto::meta::{MetaReply, ROOT_INO};

use crate::exactly_once_tests::{backends, mkdir_in};

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

    // Both directories are in the store.
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
