//! What every store's log must do, written once: each store's tests
//! (`sqlite_log_tests.rs`, `pg_log_tests.rs`) run these scenarios on a
//! real database through [`StoreUnderTest`]. The stores' writers differ
//! (SQLite's blocks on its connection, PostgreSQL's is async), which is
//! all the trait hides.

use std::sync::Arc;

use cpfs_proto::meta::Kind;
use tokio::sync::oneshot;

use super::log::{Fold, FoldInbox, Folds};
use super::pg_pipeline::tests::inode;
use super::rows::{Batch, Change, Counters};
use crate::exactly_once_tests::FS;

pub(super) fn dentry(name: &str, ino: Option<u64>) -> Change {
    Change::Dentry(1, name.as_bytes().to_vec(), ino.map(|i| (i, Kind::File)))
}

pub(super) fn batch(changes: Vec<Change>) -> Batch {
    Batch {
        rows: vec![(FS.into(), changes)],
        ..Default::default()
    }
}

/// A store's side of the scenarios.
pub(super) trait StoreUnderTest {
    /// Opens the journal's writer, telling `folds` what it appends.
    fn open_writer(&mut self, folds: Folds);
    /// Commits `batch` with that writer; the file systems fenced off.
    async fn commit(&mut self, batch: &Batch) -> Vec<Arc<str>>;
    /// Runs the store's folder on what `asked` receives.
    fn start_folder(&self, asked: FoldInbox);
    /// Rows in the log of [`FS`].
    async fn log_rows(&self) -> i64;
    /// Entries of [`FS`]'s root called `name`.
    async fn named(&self, name: &str) -> i64;
    /// Inodes of [`FS`] numbered `ino`.
    async fn inodes(&self, ino: u64) -> i64;
    /// The store's URL, for a new service to load from.
    fn url(&self) -> String;
}

/// A commit writes one log row, not the rows it changed; the folder
/// writes those behind it and deletes the log row.
pub(super) async fn a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it(
    s: &mut impl StoreUnderTest,
) {
    let (folds, asked) = Folds::channel();
    s.open_writer(folds.clone());
    let fenced = s
        .commit(&batch(vec![inode(9301), dentry("logged", Some(9301))]))
        .await;
    assert!(fenced.is_empty());
    assert_eq!(s.log_rows().await, 1);
    assert_eq!(s.named("logged").await, 0, "not folded yet");

    s.start_folder(asked);
    let (done, settled) = oneshot::channel();
    assert!(folds.ask(Fold::Settle(done)));
    settled.await.unwrap();
    assert_eq!(s.named("logged").await, 1);
    assert_eq!(s.inodes(9301).await, 1);
    assert_eq!(s.log_rows().await, 0, "the folded log row is gone");
}

/// What a server committed but never folded (it stopped first) is in the
/// namespace the next server loads, in commit order, and the log is empty
/// after.
pub(super) async fn a_load_folds_what_the_log_holds_first(s: &mut impl StoreUnderTest) {
    // A folder that never runs: the server stopped before folding.
    let (folds, asked) = Folds::channel();
    drop(asked);
    s.open_writer(folds);
    let counters = |next_ino| {
        Change::Counters(Counters {
            next_ino,
            used_bytes: 0,
            files: 3,
        })
    };
    s.commit(&batch(vec![
        inode(9311),
        dentry("first", Some(9311)),
        counters(9312),
    ]))
    .await;
    // A rename of it, committed after: its images win.
    s.commit(&batch(vec![
        dentry("first", None),
        dentry("renamed", Some(9311)),
        Change::Orphan(9311, Some(5)),
        counters(9400),
    ]))
    .await;
    assert_eq!(s.log_rows().await, 2);

    // A new service on the same store loads the file system.
    let store = cpfs_store::Store::open(&s.url()).await.unwrap();
    let next = crate::exactly_once_tests::open(store);
    let shard = next.shards.get(FS).await.unwrap();
    let (orphan, next_ino) =
        shard.with(|st| (st.orphans.get(&9311).copied(), st.counters.next_ino));
    assert_eq!(orphan, Some(5));
    assert_eq!(next_ino, 9400);
    assert_eq!(s.named("first").await, 0);
    assert_eq!(s.named("renamed").await, 1);
    assert_eq!(s.log_rows().await, 0);
}
