//! Tests of the SQLite journal's log, on a real database file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use crate::exactly_once_tests::{provisioned, FS};
use crate::journal::checkpoint::Gate;
use crate::journal::log::{self, fold_behind, Folds};
use crate::journal::log_scenarios::{self as scenarios, batch, dentry, StoreUnderTest};
use crate::journal::pg_pipeline::tests::inode;
use crate::journal::rows::Batch;
use crate::journal::sqlite::Appends;

/// Holds nothing off: these tests commit from one thread.
struct Unguarded;

impl Gate for Unguarded {
    fn hold(&self, copy: &mut dyn FnMut() -> bool) -> Option<bool> {
        Some(copy())
    }
}

/// A provisioned store's database file, and its URL.
async fn database() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meta.db");
    let url = format!("sqlite://{}", file.display());
    provisioned(&url).await.pool.close().await;
    (dir, file, url)
}

/// The journal's writer on `file`, telling `folds` what it appends.
fn appending(file: &std::path::Path, folds: Folds) -> (SqliteWriter, Appends) {
    let appends = Appends {
        folds,
        next_seq: Default::default(),
    };
    let writer = SqliteWriter::open(file, false)
        .unwrap()
        .appending(appends.clone());
    (writer, appends)
}

fn appender(file: &std::path::Path) -> (SqliteWriter, Appends, log::FoldInbox) {
    let (folds, asked) = Folds::channel();
    let (writer, appends) = appending(file, folds);
    (writer, appends, asked)
}

fn count(file: &std::path::Path, sql: &str) -> i64 {
    Connection::open(file)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn named(file: &std::path::Path, name: &str) -> i64 {
    let hex: String = name.bytes().map(|b| format!("{b:02X}")).collect();
    count(
        file,
        &format!("SELECT COUNT(*) FROM dentries WHERE parent = 1 AND name = X'{hex}'"),
    )
}

fn log_rows(file: &std::path::Path) -> i64 {
    count(file, "SELECT COUNT(*) FROM meta_log")
}

/// A database file with the journal's writer on it (see log_scenarios.rs).
struct Sqlite {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    url: String,
    writer: Option<SqliteWriter>,
}

impl Sqlite {
    async fn new() -> Sqlite {
        let (_dir, file, url) = database().await;
        Sqlite {
            _dir,
            file,
            url,
            writer: None,
        }
    }
}

impl StoreUnderTest for Sqlite {
    fn open_writer(&mut self, folds: Folds) {
        self.writer = Some(appending(&self.file, folds).0);
    }

    async fn commit(&mut self, batch: &Batch) -> Vec<Arc<str>> {
        self.writer.as_mut().unwrap().write_now(batch).unwrap()
    }

    fn start_folder(&self, asked: log::FoldInbox) {
        let folder = SqliteFolder::open(&self.file, Unguarded).unwrap();
        tokio::spawn(fold_behind(folder, asked, log::FOLD_DELAY));
    }

    async fn log_rows(&self) -> i64 {
        log_rows(&self.file)
    }

    async fn named(&self, name: &str) -> i64 {
        named(&self.file, name)
    }

    async fn inodes(&self, ino: u64) -> i64 {
        count(
            &self.file,
            &format!("SELECT COUNT(*) FROM inodes WHERE ino = {ino}"),
        )
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

#[tokio::test]
async fn a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it() {
    scenarios::a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it(
        &mut Sqlite::new().await,
    )
    .await;
}

#[tokio::test]
async fn a_load_folds_what_the_log_holds_first() {
    scenarios::a_load_folds_what_the_log_holds_first(&mut Sqlite::new().await).await;
}

/// Sequence numbers only grow within a journal, also after the folder
/// emptied the log (a plain rowid table would number from 1 again, and a
/// reader waiting for the rows up to a number it saw would wait for new
/// ones too).
#[tokio::test]
async fn log_numbers_do_not_come_back_after_a_fold() {
    let (_dir, file, _) = database().await;
    let (mut writer, appends, _asked) = appender(&file);
    for ino in [9321, 9322, 9323] {
        writer.write_now(&batch(vec![inode(ino)])).unwrap();
    }
    assert_eq!(count(&file, "SELECT MAX(seq) FROM meta_log"), 3);
    let mut folder = SqliteWriter::open(&file, true).unwrap();
    folder
        .fold_now(&batch(vec![inode(9321)]), &[(FS.into(), 3)])
        .unwrap();
    assert_eq!(log_rows(&file), 0);

    // The journal's other connection (its inline leader's) shares the
    // numbering.
    let mut other = SqliteWriter::open(&file, false)
        .unwrap()
        .appending(appends.clone());
    other.write_now(&batch(vec![inode(9324)])).unwrap();
    assert_eq!(count(&file, "SELECT MAX(seq) FROM meta_log"), 4);
    assert_eq!(appends.next_seq.load(Ordering::Relaxed), 5);
}

/// Runs the copy as if the lead were free, recording its outcomes.
struct Recording(Arc<std::sync::Mutex<Vec<bool>>>);

impl Gate for Recording {
    fn hold(&self, copy: &mut dyn FnMut() -> bool) -> Option<bool> {
        let whole = copy();
        self.0.lock().unwrap().push(whole);
        Some(whole)
    }
}

/// A fold that finds the database locked (the control plane writing)
/// gives the lead back at once, so commits are not held behind it, and
/// folds after, waiting for the lock without the lead.
#[tokio::test]
async fn a_fold_meeting_a_locked_database_waits_for_it_without_the_lead() {
    let (_dir, file, _) = database().await;
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut folder = SqliteFolder::open(&file, Recording(outcomes.clone())).unwrap();
    let blocker = Connection::open(&file).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let seen = outcomes.clone();
    let releaser = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no fold was tried");
            std::thread::yield_now();
        }
        blocker.execute_batch("COMMIT").unwrap();
    });
    let fenced = folder
        .fold(&batch(vec![inode(9331), dentry("locked", Some(9331))]), &[])
        .await
        .unwrap();
    releaser.join().unwrap();
    assert!(fenced.is_empty());
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![false],
        "the lead was held while waiting"
    );
    assert_eq!(named(&file, "locked"), 1);
}
