//! The SQLite writer: its own connection (rusqlite) with cached prepared
//! statements, used by the journal's thread or, with a connection that
//! never waits for the database lock, by an inline leader (see
//! [`super::Journal`]). A batch is one `BEGIN IMMEDIATE … COMMIT`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::log::{appended, log_rows, Folds};
use super::rows::{chains_text, limit_column, statements as st, Batch, Change};
use super::{JournalError, Writer};

pub(crate) struct SqliteWriter {
    conn: Connection,
    text: SqliteText,
    /// A committer's: where its appends go to be folded. `None`: a writer
    /// of the rows themselves (the folder's connection).
    log: Option<Appends>,
}

/// What the committing connections of one journal share.
#[derive(Clone)]
pub(crate) struct Appends {
    pub folds: Folds,
    /// No log row is numbered below this: the numbers a connection gave
    /// stay taken after the folder deleted their rows, so the sequence
    /// numbers a reader saw never come back (see [`APPEND_LOG`]).
    pub next_seq: Arc<AtomicI64>,
}

/// A batch's log row for one file system, numbered after every row in the
/// log and every number this journal gave. The table is a plain rowid
/// table: AUTOINCREMENT, which keeps numbers from coming back by itself,
/// writes `sqlite_sequence` in every commit, and an index by file system a
/// second page; each cost about 6 µs a commit here, where the log row
/// costs about 11 (`meta_log` holds a fold's worth of rows, which a scan
/// reads faster).
const APPEND_LOG: &str = "INSERT INTO meta_log (seq, fs_id, epoch, body) \
     VALUES (MAX($1, COALESCE((SELECT MAX(seq) FROM meta_log), 0) + 1), $2, $3, $4)";
const DROP_LOG: &str = "DELETE FROM meta_log WHERE fs_id = $1 AND seq <= $2";
const READ_LOG: &str = "SELECT seq, body FROM meta_log WHERE fs_id = $1 ORDER BY seq LIMIT $2";

/// How long the writer thread's connection waits for the database lock
/// (the control plane's pool writes to the same file).
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Retries of the database lock in short steps before longer ones.
const SHORT_RETRIES: i32 = 200;
const SHORT_STEP: std::time::Duration = std::time::Duration::from_micros(50);
const LONG_STEP: std::time::Duration = std::time::Duration::from_millis(1);
const LONG_RETRIES: i32 = (BUSY_WAIT.as_millis() / LONG_STEP.as_millis()) as i32;

/// The writer's wait for the database lock. SQLite's own busy timeout
/// sleeps 1, 2, 5, 10 ms… between tries, so a commit that met a control
/// plane write of a hundred microseconds waited milliseconds; operations
/// queued behind it. This one tries every 50 µs for the first 10 ms or
/// so, then every millisecond, for [`BUSY_WAIT`] in all.
fn wait_for_lock(tries: i32) -> bool {
    if tries < SHORT_RETRIES {
        std::thread::sleep(SHORT_STEP);
        true
    } else if tries < SHORT_RETRIES + LONG_RETRIES {
        std::thread::sleep(LONG_STEP);
        true
    } else {
        false
    }
}

/// The statements' SQLite text, converted once per statement: SQLite
/// numbers `$N` parameters by first appearance, not by N; `?N` is bound to
/// position N, as PostgreSQL reads `$N`.
#[derive(Default)]
struct SqliteText(HashMap<usize, Box<str>>);

impl SqliteText {
    fn of(&mut self, sql: &'static str) -> &str {
        // Keyed by the static text's address: no hashing of the text.
        self.0
            .entry(sql.as_ptr() as usize)
            .or_insert_with(|| sql.replace('$', "?").into_boxed_str())
    }
}

/// A cached statement.
fn prepare<'c>(
    conn: &'c Connection,
    text: &mut SqliteText,
    sql: &'static str,
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    conn.prepare_cached(text.of(sql))
}

impl SqliteWriter {
    /// A connection to `file` that waits for the database lock (up to
    /// [`BUSY_WAIT`]), or fails a commit that finds it busy at once.
    pub fn open(file: &std::path::Path, waits: bool) -> Result<SqliteWriter, JournalError> {
        if file.as_os_str().is_empty() || file == std::path::Path::new(":memory:") {
            return Err(JournalError::Open(
                "the metadata journal needs a database file, not an in-memory database".into(),
            ));
        }
        let conn = Connection::open(file).map_err(|e| JournalError::Open(e.to_string()))?;
        // The same durability as the control plane's pool: WAL with
        // synchronous=NORMAL survives a kill -9 of any process.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(|e| JournalError::Open(e.to_string()))?;
        let busy = if waits {
            conn.busy_handler(Some(wait_for_lock))
        } else {
            conn.busy_timeout(std::time::Duration::ZERO)
        };
        busy.map_err(|e| JournalError::Open(e.to_string()))?;
        super::checkpoint::leave_to_checkpointer(&conn)
            .map_err(|e| JournalError::Open(e.to_string()))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteWriter {
            conn,
            text: SqliteText::default(),
            log: None,
        })
    }

    /// This connection commits batches as log rows, handed to the folder.
    pub fn appending(self, log: Appends) -> SqliteWriter {
        SqliteWriter {
            log: Some(log),
            ..self
        }
    }

    /// Commits `batch` in one transaction (its log rows, or its rows on a
    /// connection that does not append); the file systems it fenced.
    pub fn write_now(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let Self { conn, text, log } = self;
        match log {
            Some(log) => append(conn, text, log, batch),
            None => fold(conn, text, batch, &[]),
        }
    }

    /// Writes `batch`'s rows and deletes each listed file system's log
    /// rows up to the sequence number given, in one transaction; the file
    /// systems fenced off (nothing of theirs changed).
    pub fn fold_now(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() && drops.is_empty() {
            return Ok(Vec::new());
        }
        fold(&self.conn, &mut self.text, batch, drops)
    }

    /// `fs`'s oldest `limit` log rows, oldest first: (sequence number,
    /// body).
    pub fn read_log(&mut self, fs: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        let mut stmt = prepare(&self.conn, &mut self.text, READ_LOG).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![fs, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }
}

/// Commits `batch` as one log row per file system, and hands it to the
/// folder; the file systems fenced.
fn append(
    conn: &Connection,
    text: &mut SqliteText,
    log: &Appends,
    batch: &Batch,
) -> Result<Vec<Arc<str>>, String> {
    let logs = log_rows(batch)?;
    let mut next = log.next_seq.load(Ordering::Relaxed);
    let written = in_transaction(conn, |conn| {
        // Under the write lock: no reassignment can commit in between.
        let fenced = fenced_by_epoch(conn, text, batch)?;
        let mut written = Vec::with_capacity(logs.len());
        for (fs, epoch, body) in logs.iter().filter(|l| !fenced.contains(&l.0)) {
            prepare(conn, text, APPEND_LOG)?.execute(params![
                next,
                fs.as_ref(),
                epoch.map(|e| e as i64),
                body
            ])?;
            let seq = conn.last_insert_rowid();
            next = seq + 1;
            written.push((fs.to_string(), seq));
        }
        Ok(written)
    })
    .map_err(|e| e.to_string())?;
    log.next_seq.fetch_max(next, Ordering::Relaxed);
    let (fenced, fold) = appended(batch, &logs, &written);
    if let Some(fold) = fold {
        // The folder is gone only when the journal is: what is logged is
        // folded by the next load.
        log.folds.committed(fold);
    }
    Ok(fenced)
}

/// Writes `batch`'s rows and deletes the log rows of `drops`, in one
/// transaction; the file systems fenced.
fn fold(
    conn: &Connection,
    text: &mut SqliteText,
    batch: &Batch,
    drops: &[(Arc<str>, i64)],
) -> Result<Vec<Arc<str>>, String> {
    in_transaction(conn, |conn| {
        let fenced = apply(conn, text, batch)?;
        for (fs, upto) in drops.iter().filter(|d| !fenced.contains(&d.0)) {
            prepare(conn, text, DROP_LOG)?.execute(params![fs.as_ref(), upto])?;
        }
        Ok(fenced)
    })
    .map_err(|e| e.to_string())
}

/// One `BEGIN IMMEDIATE … COMMIT` around `body`, its statements prepared
/// once (through `execute_batch` they were parsed again on every commit).
fn in_transaction<T>(
    conn: &Connection,
    body: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let written =
        body(conn).and_then(|out| conn.prepare_cached("COMMIT")?.execute([]).map(|_| out));
    if written.is_err() && !conn.is_autocommit() {
        // A failed statement or commit (a busy database) leaves the
        // transaction open: nothing of the batch is kept.
        if let Err(e) = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut r| r.execute([]))
        {
            tracing::warn!(error = %e, "rolling back a failed journal commit");
        }
    }
    written
}

/// The file systems of `batch` whose owner epoch in the store is no longer
/// the batch's (another server owns them now). Call it under the write
/// lock, so that no reassignment commits in between.
fn fenced_by_epoch(
    conn: &Connection,
    text: &mut SqliteText,
    batch: &Batch,
) -> rusqlite::Result<Vec<Arc<str>>> {
    let mut fenced = Vec::new();
    for (fs, epoch) in &batch.epochs {
        let stored: Option<i64> = prepare(conn, text, st::OWNER_EPOCH)?
            .query_row(params![fs.as_ref()], |r| r.get(0))
            .optional()?;
        if stored != Some(*epoch as i64) {
            fenced.push(fs.clone());
        }
    }
    Ok(fenced)
}

/// The batch's rows, inside the open transaction; the file systems fenced.
fn apply(
    conn: &Connection,
    text: &mut SqliteText,
    batch: &Batch,
) -> rusqlite::Result<Vec<Arc<str>>> {
    let fenced = fenced_by_epoch(conn, text, batch)?;
    for (fs, before) in batch.forget.iter().filter(|f| Batch::keeps(&fenced, &f.0)) {
        prepare(conn, text, st::FORGET_REQUESTS)?.execute(params![fs.as_ref(), before])?;
    }
    for (fs, rows) in batch.rows.iter().filter(|r| Batch::keeps(&fenced, &r.0)) {
        let fs = fs.as_ref();
        for c in rows {
            match c {
                Change::Inode(ino, Some(i)) => {
                    let a = &i.attr;
                    prepare(conn, text, st::UPSERT_INODE)?.execute(params![
                        fs,
                        *ino as i64,
                        a.kind.code(),
                        a.perm as i64,
                        a.uid as i64,
                        a.gid as i64,
                        a.nlink as i64,
                        a.size as i64,
                        a.atime_ns,
                        a.mtime_ns,
                        a.ctime_ns,
                        a.rdev as i64,
                        i.parent as i64,
                        i.target,
                        i.chunk_size as i64,
                        chains_text(&i.chains),
                        a.stored as i64,
                    ])?;
                }
                Change::Inode(ino, None) => {
                    prepare(conn, text, st::DELETE_INODE)?.execute(params![fs, *ino as i64])?;
                }
                Change::Dentry(parent, name, Some((ino, kind))) => {
                    prepare(conn, text, st::UPSERT_DENTRY)?.execute(params![
                        fs,
                        *parent as i64,
                        name,
                        *ino as i64,
                        kind.code()
                    ])?;
                }
                Change::Dentry(parent, name, None) => {
                    prepare(conn, text, st::DELETE_DENTRY)?.execute(params![
                        fs,
                        *parent as i64,
                        name
                    ])?;
                }
                Change::Xattr(ino, name, Some(value)) => {
                    prepare(conn, text, st::UPSERT_XATTR)?.execute(params![
                        fs,
                        *ino as i64,
                        name,
                        value
                    ])?;
                }
                Change::Xattr(ino, name, None) => {
                    prepare(conn, text, st::DELETE_XATTR)?.execute(params![
                        fs,
                        *ino as i64,
                        name
                    ])?;
                }
                Change::Orphan(ino, Some(since)) => {
                    prepare(conn, text, st::UPSERT_ORPHAN)?.execute(params![
                        fs,
                        *ino as i64,
                        since
                    ])?;
                }
                Change::Orphan(ino, None) => {
                    prepare(conn, text, st::DELETE_ORPHAN)?.execute(params![fs, *ino as i64])?;
                }
                Change::Counters(c) => {
                    prepare(conn, text, st::UPDATE_COUNTERS)?.execute(params![
                        fs,
                        c.next_ino as i64,
                        c.used_bytes as i64,
                        c.files as i64
                    ])?;
                }
                Change::Fileset(id, Some(f)) => {
                    prepare(conn, text, st::UPSERT_FILESET)?.execute(params![
                        fs,
                        id.as_ref(),
                        f.ino as i64,
                        f.used_bytes as i64,
                        f.files as i64,
                        limit_column(f.size_limit),
                        limit_column(f.file_limit),
                    ])?;
                }
                Change::Fileset(id, None) => {
                    prepare(conn, text, st::DELETE_FILESET)?.execute(params![fs, id.as_ref()])?;
                }
                Change::OwnerQuota(o, Some(r)) => {
                    prepare(conn, text, st::UPSERT_OWNER)?.execute(params![
                        fs,
                        o.type_name(),
                        i64::from(o.id()),
                        r.used_bytes as i64,
                        r.files as i64,
                        limit_column(r.size_limit),
                        limit_column(r.file_limit),
                    ])?;
                }
                Change::OwnerQuota(o, None) => {
                    prepare(conn, text, st::DELETE_OWNER)?.execute(params![
                        fs,
                        o.type_name(),
                        i64::from(o.id())
                    ])?;
                }
                Change::Request {
                    client,
                    seq,
                    ino,
                    at,
                } => {
                    prepare(conn, text, st::INSERT_REQUEST)?.execute(params![
                        fs,
                        *client as i64,
                        *seq as i64,
                        *ino as i64,
                        at
                    ])?;
                }
                Change::ForgetRequests { .. } => {}
            }
        }
    }
    Ok(fenced)
}

impl Writer for SqliteWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        self.write_now(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpfs_proto::meta::Kind;

    fn batch(name: &[u8], ino: u64) -> Batch {
        Batch {
            rows: vec![(
                Arc::from("fs-t"),
                vec![
                    Change::Orphan(ino, Some(1)),
                    Change::Dentry(1, name.to_vec(), Some((ino, Kind::File))),
                ],
            )],
            forget: Vec::new(),
            epochs: Vec::new(),
        }
    }

    /// The waiting connection commits once another connection's write
    /// transaction ends; the other kind fails at once meanwhile. Neither
    /// checkpoints the log in its commits.
    #[tokio::test]
    async fn a_waiting_writer_commits_after_another_writer_lets_go() {
        let (_dir, file) = migrated().await;
        let mut waits = SqliteWriter::open(&file, true).unwrap();
        let mut fails = SqliteWriter::open(&file, false).unwrap();
        // Neither checkpoints inside its commits: the journal's
        // checkpointer does (`checkpoint.rs`).
        for w in [&waits, &fails] {
            assert_eq!(count(&w.conn, "PRAGMA wal_autocheckpoint"), 0);
        }
        let other = Connection::open(&file).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = fails.write_now(&batch(b"now", 7)).unwrap_err();
        assert!(err.contains("locked") || err.contains("busy"), "{err}");
        let holder = std::thread::spawn(move || {
            // Holds the lock a while: the waiting writer meets it held
            // (a writer that gave up at once would fail below).
            std::thread::sleep(std::time::Duration::from_millis(30));
            other.execute_batch("COMMIT").unwrap();
        });
        let waited = waits.write_now(&batch(b"later", 8));
        holder.join().unwrap();
        waited.unwrap();
        let check = Connection::open(&file).unwrap();
        assert_eq!(
            count(&check, "SELECT COUNT(*) FROM dentries WHERE ino = 8"),
            1
        );
        assert_eq!(
            count(&check, "SELECT COUNT(*) FROM dentries WHERE ino = 7"),
            0
        );
    }

    /// A database file with the store's schema, no pool left open on it.
    async fn migrated() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpfs.db");
        let store = cpfs_store::Store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        store.pool.close().await;
        (dir, file)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A batch whose statement fails leaves nothing behind, and the
    /// connection commits the next batch (its transaction was rolled back,
    /// not left open).
    #[tokio::test]
    async fn a_failed_batch_is_rolled_back_whole_and_the_next_commits() {
        let (_dir, file) = migrated().await;
        let mut writer = SqliteWriter::open(&file, false).unwrap();
        let other = Connection::open(&file).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON dentries WHEN NEW.name = X'626164' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();

        let err = writer.write_now(&batch(b"bad", 5)).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(writer.conn.is_autocommit(), "the transaction was left open");
        assert_eq!(count(&other, "SELECT COUNT(*) FROM orphans"), 0);

        writer.write_now(&batch(b"good", 6)).unwrap();
        assert_eq!(
            count(&other, "SELECT COUNT(*) FROM orphans WHERE ino = 6"),
            1
        );
        assert_eq!(
            count(&other, "SELECT COUNT(*) FROM dentries WHERE ino = 6"),
            1
        );
        assert_eq!(count(&other, "SELECT COUNT(*) FROM orphans"), 1);
    }
}
