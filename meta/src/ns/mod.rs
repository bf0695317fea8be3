//! Namespace operations. Each takes the session's file system and the
//! caller, checks what POSIX requires, and applies the change in one
//! transaction.
//!
//! - `rows`: reading and writing inode, dentry and counter rows;
//! - `entries`: mount, lookup, attributes, create, link, unlink, rename;
//! - `files`: open, release, readdir, sizes, statfs;
//! - `xattrs`: extended attributes and the stripe of a directory.

mod entries;
mod files;
mod rows;
mod xattrs;

pub(crate) use rows::*;

use cpfs_proto::chains::ChainTable;
use cpfs_proto::meta::{errno::*, Attr, Kind, RequestId};

use crate::{MetaService, Res, Session};

const INO_BATCH: u64 = 1024;
/// Not an errno a client ever sees: another attempt of the same request
/// committed first, so this one is answered from that attempt's record.
pub(crate) const APPLIED: i32 = -1;
/// How long a request's outcome is kept. A client gives up on an operation
/// after its outage wait plus one call timeout, well under a minute.
const REQUEST_KEEP_SECS: i64 = 600;
const MAX_XATTR_VALUE: usize = 64 * 1024;
const MAX_READDIR: u32 = 4096;

/// What a create makes.
pub(crate) struct NewNode {
    pub kind: Kind,
    pub perm: u32,
    pub rdev: u32,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub attr: Attr,
    pub parent: u64,
    pub target: Option<Vec<u8>>,
    pub chunk_size: u64,
    pub chains: Vec<u32>,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(super) fn db<T>(r: Result<T, sqlx::Error>) -> Res<T> {
    r.map_err(|e| {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return (EEXIST, "already exists".into());
            }
        }
        tracing::warn!(error = %e, "metadata store error");
        (EIO, format!("metadata store: {e}"))
    })
}

impl MetaService {
    pub(crate) async fn conn(&self) -> Res<sqlx::pool::PoolConnection<sqlx::Any>> {
        db(self.store.pool.acquire().await)
    }

    pub(crate) async fn tx(&self) -> Res<sqlx::Transaction<'static, sqlx::Any>> {
        self.store
            .begin_write()
            .await
            .map_err(|e| (EIO, e.to_string()))
    }

    pub(crate) async fn new_ino(&self, fs: &str) -> Res<u64> {
        let mut map = self.inos.lock().await;
        let entry = map.entry(fs.to_string()).or_insert((0, 0));
        if entry.0 >= entry.1 {
            let mut tx = self.tx().await?;
            db(
                sqlx::query("UPDATE fs_counters SET next_ino = next_ino + $1 WHERE fs_id = $2")
                    .bind(INO_BATCH as i64)
                    .bind(fs)
                    .execute(&mut *tx)
                    .await,
            )?;
            let (end,): (i64,) = db(sqlx::query_as(
                "SELECT next_ino FROM fs_counters WHERE fs_id = $1",
            )
            .bind(fs)
            .fetch_one(&mut *tx)
            .await)?;
            db(tx.commit().await)?;
            *entry = (end as u64 - INO_BATCH, end as u64);
        }
        let ino = entry.0;
        entry.0 += 1;
        Ok(ino)
    }
}

impl MetaService {
    /// The inode request `id` made or linked (0: none), when it was applied.
    pub(crate) async fn applied(&self, s: &Session, id: RequestId) -> Res<Option<u64>> {
        let mut c = self.conn().await?;
        let row: Option<(i64,)> = db(sqlx::query_as(
            "SELECT ino FROM meta_requests WHERE fs_id = $1 AND client = $2 AND seq = $3",
        )
        .bind(&s.fs)
        .bind(id.client as i64)
        .bind(id.seq as i64)
        .fetch_optional(&mut *c)
        .await)?;
        Ok(row.map(|r| r.0 as u64))
    }

    /// Drops the records of requests nobody can still be retrying.
    pub(crate) async fn forget_requests(&self) -> Res<u64> {
        let mut c = self.conn().await?;
        let r = db(sqlx::query("DELETE FROM meta_requests WHERE at < $1")
            .bind(t_secs() - REQUEST_KEEP_SECS)
            .execute(&mut *c)
            .await)?;
        Ok(r.rows_affected())
    }

    pub(crate) async fn chain_table(&self) -> Res<ChainTable> {
        let mut c = self.conn().await?;
        latest_chain_table(&mut c).await
    }
}

pub(super) fn t_secs() -> i64 {
    now_ns() / 1_000_000_000
}
