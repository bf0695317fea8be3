//! The PostgreSQL writer: a transaction on the store's pool per batch. The
//! driver is asynchronous on the connection's socket, so there is no
//! thread hand-off per statement; a batch's statements are one round trip
//! each and share one commit.

use std::sync::Arc;

use cpfs_store::Store;

use super::rows::{chains_text, statements as st, Batch, Change};
use super::Writer;

pub(crate) struct SqlWriter {
    store: Store,
}

impl SqlWriter {
    pub fn new(store: Store) -> SqlWriter {
        SqlWriter { store }
    }

    async fn write_now(&self, batch: &Batch) -> Result<Vec<Arc<str>>, sqlx::Error> {
        let mut tx = self
            .store
            .begin_write()
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        // FOR SHARE: a reassignment (an UPDATE of the row) waits for this
        // commit, and this commit sees any reassignment committed before.
        let mut fenced = Vec::new();
        for (fs, epoch) in &batch.epochs {
            let stored: Option<(i64,)> = sqlx::query_as(&format!("{} FOR SHARE", st::OWNER_EPOCH))
                .bind(fs.as_ref())
                .fetch_optional(&mut *tx)
                .await?;
            if stored.map(|s| s.0) != Some(*epoch as i64) {
                fenced.push(fs.clone());
            }
        }
        for (fs, before) in batch.forget.iter().filter(|f| Batch::keeps(&fenced, &f.0)) {
            sqlx::query(st::FORGET_REQUESTS)
                .bind(fs.as_ref())
                .bind(*before)
                .execute(&mut *tx)
                .await?;
        }
        for (fs, rows) in batch.rows.iter().filter(|r| Batch::keeps(&fenced, &r.0)) {
            let fs = fs.as_ref();
            for c in rows {
                let q = match c {
                    Change::Inode(ino, Some(i)) => {
                        let a = &i.attr;
                        sqlx::query(st::UPSERT_INODE)
                            .bind(fs)
                            .bind(*ino as i64)
                            .bind(a.kind.code())
                            .bind(a.perm as i64)
                            .bind(a.uid as i64)
                            .bind(a.gid as i64)
                            .bind(a.nlink as i64)
                            .bind(a.size as i64)
                            .bind(a.atime_ns)
                            .bind(a.mtime_ns)
                            .bind(a.ctime_ns)
                            .bind(a.rdev as i64)
                            .bind(i.parent as i64)
                            .bind(i.target.clone())
                            .bind(i.chunk_size as i64)
                            .bind(chains_text(&i.chains))
                            .bind(a.stored as i64)
                    }
                    Change::Inode(ino, None) => {
                        sqlx::query(st::DELETE_INODE).bind(fs).bind(*ino as i64)
                    }
                    Change::Dentry(parent, name, Some((ino, kind))) => {
                        sqlx::query(st::UPSERT_DENTRY)
                            .bind(fs)
                            .bind(*parent as i64)
                            .bind(name.clone())
                            .bind(*ino as i64)
                            .bind(kind.code())
                    }
                    Change::Dentry(parent, name, None) => sqlx::query(st::DELETE_DENTRY)
                        .bind(fs)
                        .bind(*parent as i64)
                        .bind(name.clone()),
                    Change::Xattr(ino, name, Some(value)) => sqlx::query(st::UPSERT_XATTR)
                        .bind(fs)
                        .bind(*ino as i64)
                        .bind(name.clone())
                        .bind(value.clone()),
                    Change::Xattr(ino, name, None) => sqlx::query(st::DELETE_XATTR)
                        .bind(fs)
                        .bind(*ino as i64)
                        .bind(name.clone()),
                    Change::Orphan(ino, Some(since)) => sqlx::query(st::UPSERT_ORPHAN)
                        .bind(fs)
                        .bind(*ino as i64)
                        .bind(*since),
                    Change::Orphan(ino, None) => {
                        sqlx::query(st::DELETE_ORPHAN).bind(fs).bind(*ino as i64)
                    }
                    Change::Counters(c) => sqlx::query(st::UPDATE_COUNTERS)
                        .bind(fs)
                        .bind(c.next_ino as i64)
                        .bind(c.used_bytes as i64)
                        .bind(c.files as i64),
                    Change::Request {
                        client,
                        seq,
                        ino,
                        at,
                    } => sqlx::query(st::UPSERT_REQUEST)
                        .bind(fs)
                        .bind(*client as i64)
                        .bind(*seq as i64)
                        .bind(*ino as i64)
                        .bind(*at),
                    Change::ForgetRequests { .. } => continue,
                };
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(fenced)
    }
}

impl Writer for SqlWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A connection to a server that went silent (a partition) would
        // hold the writer, and every later batch, until TCP gives up.
        match tokio::time::timeout(COMMIT_TIMEOUT, self.write_now(batch)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no answer from the database within {} s",
                COMMIT_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The longest one batch may take to commit; far above what a batch of
/// [`super::MAX_BATCH`] entries needs on a live server.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
