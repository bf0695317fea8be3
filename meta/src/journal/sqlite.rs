//! The SQLite writer: its own connection (rusqlite) with cached prepared
//! statements, used by the journal's thread or, with a connection that
//! never waits for the database lock, by an inline leader (see
//! [`super::Journal`]). A batch is one `BEGIN IMMEDIATE … COMMIT`.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{chains_text, limit_column, statements as st, Batch, Change};
use super::{JournalError, Writer};

pub(crate) struct SqliteWriter {
    conn: Connection,
}

/// How long the writer thread's connection waits for the database lock
/// (the control plane's pool writes to the same file).
pub(crate) const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A cached statement. SQLite numbers `$N` parameters by first appearance,
/// not by N; `?N` is bound to position N, as PostgreSQL reads `$N`.
fn prepare<'c>(
    tx: &'c rusqlite::Transaction<'_>,
    sql: &str,
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    tx.prepare_cached(&sql.replace('$', "?"))
}

impl SqliteWriter {
    /// A connection to `file` that waits up to `busy_wait` for the
    /// database lock (zero: a busy database fails the commit at once).
    pub fn open(
        file: &std::path::Path,
        busy_wait: std::time::Duration,
    ) -> Result<SqliteWriter, JournalError> {
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
        conn.busy_timeout(busy_wait)
            .map_err(|e| JournalError::Open(e.to_string()))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteWriter { conn })
    }

    /// Writes `batch` in one transaction; the file systems it fenced.
    pub fn write_now(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction(batch).map_err(|e| e.to_string())
    }

    fn transaction(&mut self, batch: &Batch) -> rusqlite::Result<Vec<Arc<str>>> {
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        // Under the write lock: no reassignment can commit in between.
        let mut fenced = Vec::new();
        for (fs, epoch) in &batch.epochs {
            let stored: Option<i64> = prepare(&tx, st::OWNER_EPOCH)?
                .query_row(params![fs.as_ref()], |r| r.get(0))
                .optional()?;
            if stored != Some(*epoch as i64) {
                fenced.push(fs.clone());
            }
        }
        for (fs, before) in batch.forget.iter().filter(|f| Batch::keeps(&fenced, &f.0)) {
            prepare(&tx, st::FORGET_REQUESTS)?.execute(params![fs.as_ref(), before])?;
        }
        for (fs, rows) in batch.rows.iter().filter(|r| Batch::keeps(&fenced, &r.0)) {
            let fs = fs.as_ref();
            for c in rows {
                match c {
                    Change::Inode(ino, Some(i)) => {
                        let a = &i.attr;
                        prepare(&tx, st::UPSERT_INODE)?.execute(params![
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
                        prepare(&tx, st::DELETE_INODE)?.execute(params![fs, *ino as i64])?;
                    }
                    Change::Dentry(parent, name, Some((ino, kind))) => {
                        prepare(&tx, st::UPSERT_DENTRY)?.execute(params![
                            fs,
                            *parent as i64,
                            name,
                            *ino as i64,
                            kind.code()
                        ])?;
                    }
                    Change::Dentry(parent, name, None) => {
                        prepare(&tx, st::DELETE_DENTRY)?.execute(params![
                            fs,
                            *parent as i64,
                            name
                        ])?;
                    }
                    Change::Xattr(ino, name, Some(value)) => {
                        prepare(&tx, st::UPSERT_XATTR)?.execute(params![
                            fs,
                            *ino as i64,
                            name,
                            value
                        ])?;
                    }
                    Change::Xattr(ino, name, None) => {
                        prepare(&tx, st::DELETE_XATTR)?.execute(params![fs, *ino as i64, name])?;
                    }
                    Change::Orphan(ino, Some(since)) => {
                        prepare(&tx, st::UPSERT_ORPHAN)?.execute(params![
                            fs,
                            *ino as i64,
                            since
                        ])?;
                    }
                    Change::Orphan(ino, None) => {
                        prepare(&tx, st::DELETE_ORPHAN)?.execute(params![fs, *ino as i64])?;
                    }
                    Change::Counters(c) => {
                        prepare(&tx, st::UPDATE_COUNTERS)?.execute(params![
                            fs,
                            c.next_ino as i64,
                            c.used_bytes as i64,
                            c.files as i64
                        ])?;
                    }
                    Change::Fileset(id, Some(f)) => {
                        prepare(&tx, st::UPSERT_FILESET)?.execute(params![
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
                        prepare(&tx, st::DELETE_FILESET)?.execute(params![fs, id.as_ref()])?;
                    }
                    Change::OwnerQuota(o, Some(r)) => {
                        prepare(&tx, st::UPSERT_OWNER)?.execute(params![
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
                        prepare(&tx, st::DELETE_OWNER)?.execute(params![
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
                        prepare(&tx, st::UPSERT_REQUEST)?.execute(params![
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
        tx.commit()?;
        Ok(fenced)
    }
}

impl Writer for SqliteWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        self.write_now(batch)
    }
}
