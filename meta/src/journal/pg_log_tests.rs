//! Tests of the PostgreSQL journal's log. Those that need a server return
//! at once without `CPFS_TEST_DATABASE_URL`.

use super::*;
use crate::exactly_once_tests::{postgres_backend, FS};
use crate::journal::pg_pipeline::tests::{inode, writer_for};
use crate::journal::rows::Counters;
use cpfs_proto::meta::Kind;
use cpfs_store::Store;

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

#[test]
fn a_log_row_decodes_to_what_was_encoded_and_an_unknown_format_is_refused() {
    let changes = vec![
        dentry("a", Some(7)),
        Change::Counters(Counters {
            next_ino: 8,
            used_bytes: 0,
            files: 2,
        }),
        Change::Orphan(5, None),
    ];
    let body = encode(&changes, &[42]).unwrap();
    let back = decode(&body).unwrap();
    assert_eq!(format!("{:?}", back.changes), format!("{changes:?}"));
    assert_eq!(back.forget, vec![42]);
    let mut newer = body.clone();
    newer[0] = FORMAT + 1;
    assert!(decode(&newer).unwrap_err().contains("unknown format"));
    assert!(decode(&[]).is_err());
    assert!(decode(&body[..body.len() - 1]).is_err());
}

/// A commit writes one log row, not the rows it changed; the folder
/// writes those behind it and deletes the log row.
#[tokio::test]
async fn a_commit_is_a_log_row_and_the_folder_writes_its_rows_behind_it() {
    let Some(b) = postgres_backend().await else {
        return;
    };
    let store = &b.svc.store;
    let (to_folder, asked) = mpsc::unbounded_channel();
    let mut writer = PgLogWriter::new(writer_for(store), to_folder.clone());
    let fenced = writer
        .write(&batch(vec![inode(9301), dentry("logged", Some(9301))]))
        .await
        .unwrap();
    assert!(fenced.is_empty());
    assert_eq!(log_rows(store).await, 1);
    assert_eq!(named(store, "logged").await, 0, "not folded yet");

    tokio::spawn(fold_behind(writer_for(store), asked));
    let (done, settled) = oneshot::channel();
    to_folder.send(Fold::Settle(done)).unwrap();
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
    let (to_folder, asked) = mpsc::unbounded_channel();
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
    let (to_folder, _asked) = mpsc::unbounded_channel();
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
    let (to_folder, _asked) = mpsc::unbounded_channel();
    let mut writer = PgLogWriter::new(writer_for(store), to_folder);
    let unstorable = Change::Fileset("fset\0".into(), None);
    let e = writer
        .write(&batch(vec![inode(9331), unstorable]))
        .await
        .unwrap_err();
    assert!(e.contains("cannot store"), "{e}");
    assert_eq!(log_rows(store).await, 0);
}

/// The log's format 1, byte for byte: a change to the encoded types
/// (`Change`, `Inode`, the protocol's `Attr`, `Kind`) changes these bytes,
/// and must come with a new [`FORMAT`] and a decoder for the old one, or
/// a server would misread rows a server of the previous release left.
#[test]
fn the_log_format_is_what_format_1_says() {
    use crate::journal::rows::{FilesetRow, Owner, OwnerRow};
    let changes = vec![
        inode(9),
        Change::Inode(10, None),
        dentry("n", Some(9)),
        Change::Xattr(9, b"user.k".to_vec(), Some(b"v".to_vec())),
        Change::Orphan(9, Some(3)),
        Change::Counters(Counters {
            next_ino: 11,
            used_bytes: 12,
            files: 13,
        }),
        Change::Fileset(
            "fset-1".into(),
            Some(FilesetRow {
                ino: 9,
                used_bytes: 1,
                files: 2,
                size_limit: Some(3),
                file_limit: None,
            }),
        ),
        Change::OwnerQuota(
            Owner::Gid(7),
            Some(OwnerRow {
                used_bytes: 1,
                files: 1,
                size_limit: None,
                file_limit: Some(5),
            }),
        ),
        Change::Request {
            client: 1,
            seq: 2,
            ino: 9,
            at: 4,
        },
    ];
    let body = encode(&changes, &[6]).unwrap();
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, FORMAT_1, "the encoding changed:\n{hex}");
}

const FORMAT_1: &str = concat!(
    "0109000000000000000000000009000000000000000109000000000000000000",
    "0000a40100000100000000000000000000000000000000000000000000000000",
    "0000010000000000000001000000000000000100000000000000000000000100",
    "000000000000000000100000000000010000000000000000000000000000000a",
    "000000000000000001000000010000000000000001000000000000006e010900",
    "0000000000000000000002000000090000000000000006000000000000007573",
    "65722e6b01010000000000000076030000000900000000000000010300000000",
    "000000040000000b000000000000000c000000000000000d0000000000000005",
    "0000000600000000000000667365742d31010900000000000000010000000000",
    "0000020000000000000001030000000000000000060000000100000007000000",
    "0101000000000000000100000000000000000105000000000000000700000001",
    "0000000000000002000000000000000900000000000000040000000000000001",
    "000000000000000600000000000000",
);
