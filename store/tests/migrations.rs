//! Migrations of a database made by an older release keep its rows.

use std::str::FromStr;

use cpfs_store::Store;
use sqlx::migrate::Migrator;
use sqlx::Executor;

/// A database made before the namespace tables lost their rowid keeps
/// every row through the migration, and the tables are keyed by their
/// primary key afterwards.
#[tokio::test]
async fn namespace_rows_survive_the_move_to_tables_without_rowid() {
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0019" {
            std::fs::copy(&path, older.join(&name)).unwrap();
        }
    }
    let url = format!("sqlite://{}", dir.path().join("cpfs.db").display());
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    Migrator::new(older.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO inodes (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains, stored) \
         VALUES ('fs-a', 7, 3, 511, 10, 20, 1, 4, 1, 2, 3, 0, 1, x'2f746d70', 1048576, '[1,2]', 4)",
        "INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ('fs-a', 1, x'6c696e6b', 7, 3)",
        "INSERT INTO meta_requests (fs_id, client, seq, ino, at) VALUES ('fs-a', 9, 41, 7, 1234)",
    ] {
        pool.execute(sql).await.unwrap();
    }
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    let inode: (i64, i64, Vec<u8>, String, i64) =
        sqlx::query_as("SELECT ino, perm, target, chains, stored FROM inodes WHERE fs_id = 'fs-a'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(inode, (7, 511, b"/tmp".to_vec(), "[1,2]".to_string(), 4));
    let entry: (Vec<u8>, i64) =
        sqlx::query_as("SELECT name, ino FROM dentries WHERE fs_id = 'fs-a' AND parent = 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(entry, (b"link".to_vec(), 7));
    let request: (i64, i64) =
        sqlx::query_as("SELECT ino, at FROM meta_requests WHERE client = 9 AND seq = 41")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(request, (7, 1234));
    for table in ["inodes", "dentries", "meta_requests"] {
        let r = store
            .pool
            .execute(format!("SELECT rowid FROM {table}").as_str())
            .await;
        assert!(r.is_err(), "{table} still has a rowid");
    }
    // Request records are keyed by age first and have no other index.
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'meta_requests' \
         AND name NOT LIKE 'sqlite_autoindex%'",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert!(indexes.is_empty(), "{indexes:?}");
    let key: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM pragma_table_info('meta_requests') WHERE pk > 0 ORDER BY pk",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let key: Vec<&str> = key.iter().map(|(n,)| n.as_str()).collect();
    assert_eq!(key, ["fs_id", "at", "client", "seq"]);
}
