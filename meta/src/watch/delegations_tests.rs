use std::time::Duration;

use cpfs_proto::meta::{MetaReply, DELEGATION_RECALL};

use super::super::{changes_of, Watchers};
use cpfs_proto::meta::MetaOp;

const DIR: u64 = 42;

fn create_in(parent: u64) -> Vec<cpfs_proto::meta::Change> {
    changes_of(&MetaOp::Create {
        parent,
        name: b"f".to_vec(),
        mode: 0o644,
        umask: 0,
        read: false,
    })
}

/// Watchers with sessions 1 and 2 of "fs", session 1 holding `DIR` (its
/// Watch outstanding when granted).
async fn held_by_one() -> std::sync::Arc<Watchers> {
    let w = std::sync::Arc::new(Watchers::default());
    w.add(1, "fs");
    w.add(2, "fs");
    let _ = poll(&w, 1).await;
    let _ = poll(&w, 2).await;
    // Another file system's session gets none.
    assert!(!w.grant(1, "other-fs", DIR));
    let watch = spawn_watch(&w, 1);
    while !w.waiting(1) {
        tokio::task::yield_now().await;
    }
    assert!(w.grant(1, "fs", DIR));
    assert_eq!(w.delegated(), 1);
    // The outstanding Watch returns at the latest after the renewal.
    let _ = watch.await;
    w
}

async fn poll(w: &Watchers, session: u64) -> (Vec<cpfs_proto::meta::Change>, bool) {
    match w.wait(session, "fs", Duration::ZERO).await {
        MetaReply::Changes { changes, lost, .. } => (changes, lost),
        other => panic!("unexpected {other:?}"),
    }
}

fn spawn_watch(w: &std::sync::Arc<Watchers>, session: u64) -> tokio::task::JoinHandle<MetaReply> {
    let w = w.clone();
    tokio::spawn(async move { w.wait(session, "fs", Duration::from_secs(10)).await })
}

#[tokio::test(start_paused = true)]
async fn another_sessions_change_waits_until_the_holder_watches_again() {
    let w = held_by_one().await;
    // The holder's own changes do not recall it.
    w.recall("fs", 1, &create_in(DIR)).await;
    assert_eq!(w.delegated(), 1);

    let recall = {
        let w = w.clone();
        tokio::spawn(async move { w.recall("fs", 2, &create_in(DIR)).await })
    };
    while !w.lock().sessions[&1].recalling.contains(&DIR) {
        tokio::task::yield_now().await;
    }
    // The holder is told (a notice of the directory)...
    let (changes, lost) = poll(&w, 1).await;
    assert!(!lost);
    assert!(changes
        .iter()
        .any(|c| matches!(c, cpfs_proto::meta::Change::Inode { ino, .. } if *ino == DIR)));
    tokio::task::yield_now().await;
    assert!(
        !recall.is_finished(),
        "went ahead before the holder acknowledged"
    );
    assert_eq!(w.delegated(), 1);
    // ...and acknowledges by watching again.
    let _ = poll(&w, 1).await;
    tokio::time::timeout(Duration::from_millis(10), recall)
        .await
        .expect("the recall ended with the acknowledgement")
        .unwrap();
    assert_eq!(w.delegated(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_does_not_answer_loses_it_after_the_recall_time() {
    let w = held_by_one().await;
    let started = tokio::time::Instant::now();
    w.recall("fs", 2, &create_in(DIR)).await;
    assert!(started.elapsed() >= DELEGATION_RECALL);
    assert_eq!(w.delegated(), 0);
    // Changes to other directories never wait.
    let started = tokio::time::Instant::now();
    w.recall("fs", 2, &create_in(DIR + 1)).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_goes_or_loses_track_releases_its_delegations() {
    let w = held_by_one().await;
    w.remove(1);
    assert_eq!(w.delegated(), 0);

    let w = held_by_one().await;
    // An overflowing queue: the client drops everything it knew, and its
    // next Watch acknowledges every delegation.
    for i in 0..=super::super::MAX_QUEUE as u64 {
        let seen = super::super::named(&MetaOp::GetAttr { ino: DIR + 100 + i });
        w.note(1, seen, &MetaReply::Done, w.mark());
        w.publish("fs", 2, &create_in(DIR + 100 + i));
    }
    let (_, lost) = poll(&w, 1).await;
    assert!(lost);
    let _ = poll(&w, 1).await;
    assert_eq!(w.delegated(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_holders_watch_returns_within_the_renewal_time() {
    let w = held_by_one().await;
    let started = tokio::time::Instant::now();
    let _ = spawn_watch(&w, 1).await;
    assert!(started.elapsed() <= cpfs_proto::meta::DELEGATION_RENEW);
    // Without delegations it waits the full time.
    let started = tokio::time::Instant::now();
    let _ = spawn_watch(&w, 2).await;
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_delegation_past_its_time_is_neither_recalled_nor_kept() {
    let w = held_by_one().await;
    tokio::time::advance(cpfs_proto::meta::DELEGATION_TTL).await;
    // Its client stopped using it: another session's change does not wait.
    let started = tokio::time::Instant::now();
    w.recall("fs", 2, &create_in(DIR)).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    // The holder's next Watch lets it go (room for new ones).
    let _ = poll(&w, 1).await;
    assert_eq!(w.delegated(), 0);
}
