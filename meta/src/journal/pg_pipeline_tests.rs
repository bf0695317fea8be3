//! Tests of the PostgreSQL writer's pipeline. Those that need a server
//! return at once without `CPFS_TEST_DATABASE_URL`.

use super::*;
use crate::exactly_once_tests::{postgres_backend, FS};
use crate::inode::Inode;
use crate::journal::pg_rows::statements;
use crate::journal::rows::Change;
use crate::journal::rows::{Counters, FilesetRow};
use cpfs_proto::meta::{Attr, Kind};

pub(crate) fn writer_for(store: &cpfs_store::Store) -> PgWriter {
    PgWriter::new(store.postgres_url.clone().unwrap(), store.pool.clone())
}

pub(crate) fn inode(ino: u64) -> Change {
    let attr = Attr {
        ino,
        kind: Kind::File,
        perm: 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        size: 0,
        stored: 0,
        atime_ns: 1,
        mtime_ns: 1,
        ctime_ns: 1,
        rdev: 0,
    };
    Change::Inode(
        ino,
        Some(Inode {
            attr,
            parent: 1,
            target: None,
            chunk_size: 1 << 20,
            chains: vec![0],
        }),
    )
}

#[test]
fn a_url_the_driver_cannot_read_is_refused_with_its_reason() {
    assert!(check_url("postgres://cpfs@127.0.0.1:5432/cpfs").is_ok());
    let e = check_url("postgres://cpfs@127.0.0.1/cpfs?statement-cache-capacity=8").unwrap_err();
    assert!(e.contains("statement-cache-capacity"), "{e}");
}

#[test]
fn the_owner_rows_tell_which_file_systems_are_fenced() {
    let batch = Batch {
        epochs: vec![("a".into(), 3), ("b".into(), 5), ("c".into(), 1)],
        ..Default::default()
    };
    let stored = vec![("a".to_string(), 3), ("b".to_string(), 6)];
    assert_eq!(
        fenced(&batch, &stored),
        vec![Arc::<str>::from("b"), Arc::from("c")]
    );
}

/// A batch is one transaction even though its statements go out
/// before any answer: a failing statement late in the pipeline leaves
/// nothing of the rows before it, and the next batch, on a fresh
/// connection, commits.
#[tokio::test]
async fn a_batch_commits_whole_or_not_at_all() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let mut writer = writer_for(store);
    let fs: Arc<str> = FS.into();
    let bad_fileset = Change::Fileset(
        // PostgreSQL's text holds no NUL: this row's statement fails.
        "fset\0".into(),
        Some(FilesetRow {
            ino: 1,
            used_bytes: 0,
            files: 0,
            size_limit: None,
            file_limit: None,
        }),
    );
    let batch = Batch {
        rows: vec![(fs.clone(), vec![inode(9001), inode(9002), bad_fileset])],
        ..Default::default()
    };
    assert!(writer.fold(&batch, &[]).await.is_err());
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino IN (9001, 9002, 9003)",
        )
        .bind(FS)
        .fetch_one(&store.pool)
        .await
        .unwrap()
    };
    assert_eq!(count().await, 0, "rows of a failed batch were committed");

    let batch = Batch {
        rows: vec![(fs, vec![inode(9001), inode(9003)])],
        ..Default::default()
    };
    assert_eq!(writer.fold(&batch, &[]).await, Ok(Vec::new()));
    assert_eq!(count().await, 2);
}

/// A batch given up on (no answer within the timeout) is never
/// committed after the next one: before the next batch, the writer
/// ends the server process that still holds it.
#[tokio::test]
async fn a_batch_given_up_on_cannot_commit_after_the_next() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let mut writer = writer_for(store);
    writer.timeout = Duration::from_millis(500);
    let fs: Arc<str> = FS.into();
    // Another transaction holds the counters row: the batch's update
    // waits for it, with the rest of the batch sent.
    let mut blocker = store.pool.begin().await.unwrap();
    sqlx::query("UPDATE fs_counters SET files = files WHERE fs_id = $1")
        .bind(FS)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let counters = Change::Counters(Counters {
        next_ino: 1 << 40,
        used_bytes: 0,
        files: 0,
    });
    let stuck = Batch {
        rows: vec![(fs.clone(), vec![inode(9101), counters])],
        ..Default::default()
    };
    let err = writer.fold(&stuck, &[]).await.unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    let old = writer.stale.expect("the connection was given up on");

    let next = Batch {
        rows: vec![(fs, vec![inode(9102)])],
        ..Default::default()
    };
    assert_eq!(writer.fold(&next, &[]).await, Ok(Vec::new()));
    assert!(
        !process_alive(&store.pool, old.into()).await.unwrap(),
        "the stuck batch's server process is still there"
    );
    blocker.commit().await.unwrap();
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT ino FROM inodes WHERE fs_id = $1 AND ino IN (9101, 9102)")
            .bind(FS)
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(9102,)]);
    let next_ino: i64 = sqlx::query_scalar("SELECT next_ino FROM fs_counters WHERE fs_id = $1")
        .bind(FS)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_ne!(next_ino, 1 << 40);
}

/// A statement the driver cannot encode fails before it is sent; the
/// pipeline stops there, and its COMMIT never leaves.
#[tokio::test]
async fn a_statement_refused_before_sending_stops_the_commit() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let conn = PgWriter::connect(store.postgres_url.as_deref().unwrap(), "cpfs-journal")
        .await
        .unwrap();
    let (c, st) = (&conn.client, &conn.statements);
    let batch = Batch {
        rows: vec![(FS.into(), vec![inode(9201)])],
        ..Default::default()
    };
    let good = statements(&batch).remove(0);
    let good_params: Vec<&(dyn ToSql + Sync)> = good
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    // The inode statement's third value is an array of BIGINT: text
    // cannot be encoded for it.
    let mut bad_params = good_params.clone();
    bad_params[2] = &"not a number";
    let body: Vec<Answer<'_>> = vec![
        Box::pin(c.query(&st[Sql::Begin as usize], &[])),
        Box::pin(c.query(&st[Sql::PutInodes as usize], &good_params)),
        Box::pin(c.query(&st[Sql::PutInodes as usize], &bad_params)),
    ];
    let commit = Box::pin(c.query(&st[Sql::Commit as usize], &[]));
    assert!(pipeline(body, commit).await.is_err());
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino = 9201")
        .bind(FS)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "the rows before the refused statement were committed");
}
