//! Tests of the PostgreSQL journal's log. Those that need a server return
//! at once without `CPFS_TEST_DATABASE_URL`.

use super::*;
use crate::exactly_once_tests::{postgres_backend, FS};
use crate::journal::log::{self, fold_behind, FoldInbox, Folds};
use crate::journal::log_scenarios::{self as scenarios, batch, dentry, StoreUnderTest};
use crate::journal::pg_pipeline::tests::{inode, writer_for};
use cpfs_store::Store;

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

/// The PostgreSQL of the tests with the journal's writer on it (see
/// log_scenarios.rs).
struct Postgres {
    backend: crate::exactly_once_tests::Backend,
    writer: Option<PgLogWriter>,
}

impl Postgres {
    /// `None` without `CPFS_TEST_DATABASE_URL`.
    async fn new() -> Option<Postgres> {
        Some(Postgres {
            backend: postgres_backend().await?,
            writer: None,
        })
    }

    fn store(&self) -> &Store {
        &self.backend.svc.store
    }
}

impl StoreUnderTest for Postgres {
    fn open_writer(&mut self, folds: Folds) {
        self.writer = Some(PgLogWriter::new(writer_for(self.store()), folds));
    }

    async fn commit(&mut self, batch: &Batch) -> Vec<Arc<str>> {
        self.writer.as_mut().unwrap().write(batch).await.unwrap()
    }

    fn start_folder(&self, asked: FoldInbox) {
        tokio::spawn(fold_behind(
            writer_for(self.store()),
            asked,
            log::FOLD_DELAY,
        ));
    }

    async fn log_rows(&self) -> i64 {
        log_rows(self.store()).await
    }

    async fn named(&self, name: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM dentries WHERE fs_id = $1 AND parent = 1 AND name = $2",
        )
        .bind(FS)
        .bind(name.as_bytes())
        .fetch_one(&self.store().pool)
        .await
        .unwrap()
    }

    async fn inodes(&self, ino: u64) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino = {ino}");
        count(self.store(), &sql).await
    }

    fn url(&self) -> String {
        self.backend.url.clone()
    }
}

#[tokio::test]
async fn a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it() {
    let Some(mut pg) = Postgres::new().await else {
        return;
    };
    scenarios::a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it(&mut pg).await;
}

#[tokio::test]
async fn a_load_folds_what_the_log_holds_first() {
    let Some(mut pg) = Postgres::new().await else {
        return;
    };
    scenarios::a_load_folds_what_the_log_holds_first(&mut pg).await;
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
