//! The PostgreSQL writer: a batch is one message of the simple query
//! protocol holding every statement, which PostgreSQL runs as one implicit
//! transaction: one round trip and one commit per batch, however many rows
//! (a statement per row over the extended protocol would cost a round trip
//! each). Values are written as literals: integers as digits, bytes as
//! `decode('<hex>', 'hex')`, text with its quotes doubled, so nothing a
//! client names can change the statements.

use std::fmt::Write;
use std::sync::Arc;

use cpfs_store::Store;

use super::rows::{chains_text, Batch, Change};
use super::Writer;

pub(crate) struct SqlWriter {
    store: Store,
}

/// `'text'` with its quotes doubled.
fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn bytes(b: &[u8]) -> String {
    format!("decode('{}', 'hex')", hex::encode(b))
}

fn opt_bytes(b: &Option<Vec<u8>>) -> String {
    b.as_deref().map_or_else(|| "NULL".to_string(), bytes)
}

/// The statements of `batch` without the file systems in `fenced`.
fn statements(batch: &Batch, fenced: &[Arc<str>]) -> String {
    let mut sql = String::new();
    for (fs, epoch) in batch.epochs.iter().filter(|e| Batch::keeps(fenced, &e.0)) {
        let _ = writeln!(sql, "SELECT cpfs_owner_is({}, {});", text(fs), epoch);
    }
    for (fs, before) in batch.forget.iter().filter(|f| Batch::keeps(fenced, &f.0)) {
        let _ = writeln!(
            sql,
            "DELETE FROM meta_requests WHERE fs_id = {} AND at < {before};",
            text(fs)
        );
    }
    for (fs, rows) in batch.rows.iter().filter(|r| Batch::keeps(fenced, &r.0)) {
        let fs = text(fs);
        for c in rows {
            let _ = match c {
                Change::Inode(ino, Some(i)) => {
                    let a = &i.attr;
                    writeln!(
                        sql,
                        "INSERT INTO inodes (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains) \
                         VALUES ({fs}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) \
                         ON CONFLICT (fs_id, ino) DO UPDATE SET kind = excluded.kind, perm = excluded.perm, uid = excluded.uid, gid = excluded.gid, \
                         nlink = excluded.nlink, size = excluded.size, atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns, \
                         ctime_ns = excluded.ctime_ns, rdev = excluded.rdev, parent = excluded.parent, target = excluded.target, \
                         chunk_size = excluded.chunk_size, chains = excluded.chains;",
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
                        opt_bytes(&i.target),
                        i.chunk_size as i64,
                        text(&chains_text(&i.chains)),
                    )
                }
                Change::Inode(ino, None) => writeln!(
                    sql,
                    "DELETE FROM inodes WHERE fs_id = {fs} AND ino = {};",
                    *ino as i64
                ),
                Change::Dentry(parent, name, Some((ino, kind))) => writeln!(
                    sql,
                    "INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ({fs}, {}, {}, {}, {}) \
                     ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind;",
                    *parent as i64,
                    bytes(name),
                    *ino as i64,
                    kind.code()
                ),
                Change::Dentry(parent, name, None) => writeln!(
                    sql,
                    "DELETE FROM dentries WHERE fs_id = {fs} AND parent = {} AND name = {};",
                    *parent as i64,
                    bytes(name)
                ),
                Change::Xattr(ino, name, Some(value)) => writeln!(
                    sql,
                    "INSERT INTO xattrs (fs_id, ino, name, value) VALUES ({fs}, {}, {}, {}) \
                     ON CONFLICT (fs_id, ino, name) DO UPDATE SET value = excluded.value;",
                    *ino as i64,
                    bytes(name),
                    bytes(value)
                ),
                Change::Xattr(ino, name, None) => writeln!(
                    sql,
                    "DELETE FROM xattrs WHERE fs_id = {fs} AND ino = {} AND name = {};",
                    *ino as i64,
                    bytes(name)
                ),
                Change::Orphan(ino, Some(since)) => writeln!(
                    sql,
                    "INSERT INTO orphans (fs_id, ino, since) VALUES ({fs}, {}, {since}) \
                     ON CONFLICT (fs_id, ino) DO UPDATE SET since = excluded.since;",
                    *ino as i64
                ),
                Change::Orphan(ino, None) => writeln!(
                    sql,
                    "DELETE FROM orphans WHERE fs_id = {fs} AND ino = {};",
                    *ino as i64
                ),
                Change::Counters(c) => writeln!(
                    sql,
                    "UPDATE fs_counters SET next_ino = {}, used_bytes = {}, files = {} WHERE fs_id = {fs};",
                    c.next_ino as i64,
                    c.used_bytes as i64,
                    c.files as i64
                ),
                Change::Request {
                    client,
                    seq,
                    ino,
                    at,
                } => writeln!(
                    sql,
                    "INSERT INTO meta_requests (fs_id, client, seq, ino, at) VALUES ({fs}, {}, {}, {}, {at}) \
                     ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino, at = excluded.at;",
                    *client as i64,
                    *seq as i64,
                    *ino as i64
                ),
                Change::ForgetRequests { .. } => Ok(()),
            };
        }
    }
    sql
}

impl SqlWriter {
    pub fn new(store: Store) -> SqlWriter {
        SqlWriter { store }
    }

    /// The file systems of the batch whose owner epoch changed.
    async fn fenced(&self, batch: &Batch) -> Result<Vec<Arc<str>>, sqlx::Error> {
        let mut out = Vec::new();
        for (fs, epoch) in &batch.epochs {
            let stored: Option<(i64,)> =
                sqlx::query_as("SELECT epoch FROM meta_assignments WHERE fs_id = $1")
                    .bind(fs.as_ref())
                    .fetch_optional(&self.store.pool)
                    .await?;
            if stored.map(|s| s.0) != Some(*epoch as i64) {
                out.push(fs.clone());
            }
        }
        Ok(out)
    }

    async fn write_now(&self, batch: &Batch) -> Result<Vec<Arc<str>>, sqlx::Error> {
        match sqlx::raw_sql(&statements(batch, &[]))
            .execute(&self.store.pool)
            .await
        {
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.to_string().contains("cpfs-fenced") => {
                // Some file system moved: write the others' rows.
                let fenced = self.fenced(batch).await?;
                let rest = statements(batch, &fenced);
                if !rest.is_empty() {
                    sqlx::raw_sql(&rest).execute(&self.store.pool).await?;
                }
                Ok(fenced)
            }
            Err(e) => Err(e),
        }
    }
}

impl Writer for SqlWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write_now(batch).await.map_err(|e| e.to_string())
    }
}
