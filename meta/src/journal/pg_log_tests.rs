//! Tests of the PostgreSQL journal's log. Those that need a server return
//! at once without `CPFS_TEST_DATABASE_URL`.

use super::*;
use crate::exactly_once_tests::{postgres_backend, FS};
use crate::journal::log::{self, fold_behind, Fold, Folds};
use crate::journal::pg_pipeline::tests::{inode, writer_for};
use crate::journal::rows::Counters;
use cpfs_proto::meta::Kind;
use cpfs_store::Store;
use tokio::sync::oneshot;

fn dentry(name: &str, ino: Option<u64>) -> Change {
    Change::Dentry(1, name.as_bytes().to_vec(), ino.map(|i| (i, Kind::File)))
}

fn batch(changes: Vec<Change>) -> Batch {
    Batch {
        rows: vec![(FS.into(), changes)],
        ..Default::default()
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(FS)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

async fn log_rows(store: &Store) -> i64 {
    count(store, "SELECT COUNT(*) FROM meta_log WHERE fs_id = $1").await
}

async fn named(store: &Store, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM dentries WHERE fs_id = $1 AND parent = 1 AND name = $2",
    )
    .bind(FS)
    .bind(name.as_bytes())
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

/// A commit writes one log row, not the rows it changed; the folder
/// writes those behind it and deletes the log row.
#[tokio::test]
async fn a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let (to_folder, asked) = Folds::channel();
    let mut writer = PgLogWriter::new(writer_for(store), to_folder.clone());
    let fenced = writer
        .write(&batch(vec![inode(9301), dentry("logged", Some(9301))]))
        .await
        .unwrap();
    assert!(fenced.is_empty());
    assert_eq!(log_rows(store).await, 1);
    assert_eq!(named(store, "logged").await, 0, "not folded yet");

    tokio::spawn(fold_behind(writer_for(store), asked, log::FOLD_DELAY));
    let (done, settled) = oneshot::channel();
    assert!(to_folder.ask(Fold::Settle(done)));
    settled.await.unwrap();
    assert_eq!(named(store, "logged").await, 1);
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino = 9301"
        )
        .await,
        1
    );
    assert_eq!(log_rows(store).await, 0, "the folded log row is gone");
}

/// What a server committed but never folded (it stopped first) is in the
/// namespace the next server loads, in commit order, and the log is empty
/// after.
#[tokio::test]
async fn a_load_folds_what_the_log_holds_first() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    // A folder that never runs: the server stopped before folding.
    let (to_folder, asked) = Folds::channel();
    drop(asked);
    let mut writer = PgLogWriter::new(writer_for(store), to_folder);
    let counters = |next_ino| {
        Change::Counters(Counters {
            next_ino,
            used_bytes: 0,
            files: 3,
        })
    };
    writer
        .write(&batch(vec![
            inode(9311),
            dentry("first", Some(9311)),
            counters(9312),
        ]))
        .await
        .unwrap();
    // A rename of it, committed after: its images win.
    writer
        .write(&batch(vec![
            dentry("first", None),
            dentry("renamed", Some(9311)),
            Change::Orphan(9311, Some(5)),
            counters(9400),
        ]))
        .await
        .unwrap();
    assert_eq!(log_rows(store).await, 2);

    // A new service on the same store loads the file system.
    let next = crate::exactly_once_tests::open(Store::open(&b.url).await.unwrap());
    let shard = next.shards.get(FS).await.unwrap();
    let (orphan, next_ino) =
        shard.with(|st| (st.orphans.get(&9311).copied(), st.counters.next_ino));
    assert_eq!(orphan, Some(5));
    assert_eq!(next_ino, 9400);
    assert_eq!(named(store, "first").await, 0);
    assert_eq!(named(store, "renamed").await, 1);
    assert_eq!(log_rows(store).await, 0);
}

/// A batch made under an epoch that is no longer the file system's
/// appends nothing and is answered fenced.
#[tokio::test]
async fn a_deposed_owner_appends_nothing() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    sqlx::query(
        "INSERT INTO meta_assignments (fs_id, server_id, epoch, since_ms) VALUES ($1, 'other', 7, 0)",
    )
    .bind(FS)
    .execute(&store.pool)
    .await
    .unwrap();
    let (to_folder, _asked) = Folds::channel();
    let mut writer = PgLogWriter::new(writer_for(store), to_folder);
    let mut stale = batch(vec![dentry("stale", Some(9321))]);
    stale.epochs = vec![(FS.into(), 6)];
    let fenced = writer.write(&stale).await.unwrap();
    assert_eq!(fenced, vec![Arc::<str>::from(FS)]);
    assert_eq!(log_rows(store).await, 0);
    let mut current = batch(vec![dentry("current", Some(9322))]);
    current.epochs = vec![(FS.into(), 7)];
    assert!(writer.write(&current).await.unwrap().is_empty());
    assert_eq!(log_rows(store).await, 1);
}

/// A row PostgreSQL cannot store fails its batch at the commit, as it did
/// when the commit wrote the rows, instead of failing every fold later.
#[tokio::test]
async fn a_row_postgres_cannot_store_fails_the_commit_not_the_fold() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let (to_folder, _asked) = Folds::channel();
    let mut writer = PgLogWriter::new(writer_for(store), to_folder);
    let unstorable = Change::Fileset("fset\0".into(), None);
    let e = writer
        .write(&batch(vec![inode(9331), unstorable]))
        .await
        .unwrap_err();
    assert!(e.contains("cannot store"), "{e}");
    assert_eq!(log_rows(store).await, 0);
}
