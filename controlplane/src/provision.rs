//! What "Running" means for a file system on the data plane: its layout
//! over the chain table, its counters, and its root directory exist; and
//! what deleting it removes. Every step is idempotent.

use cpfs_dataplane::chains::ChainTable;
use cpfs_dataplane::layout::{DEFAULT_CHUNK_SIZE, DEFAULT_STRIPE_WIDTH};
use cpfs_dataplane::metaproto::{Kind, ROOT_INO};

use crate::error::{Error, Result};
use crate::ControlPlane;

impl ControlPlane {
    /// The newest chain table (empty before any node registered).
    pub async fn chain_table(&self) -> Result<ChainTable> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT body FROM chain_tables ORDER BY version DESC LIMIT 1")
                .fetch_optional(&self.store.pool)
                .await?;
        Ok(row
            .and_then(|(b,)| serde_json::from_str(&b).ok())
            .unwrap_or_default())
    }

    /// Lays the file system over the chains and creates its root directory.
    pub async fn provision_namespace(&self, fs_id: &str) -> Result<()> {
        let table = self.chain_table().await?;
        if table.chains.is_empty() {
            return Err(Error::Unavailable(
                "waiting for data nodes to form the chain table".into(),
            ));
        }
        let ids: Vec<u32> = table.chains.iter().map(|c| c.id).collect();
        // Start the stripe at a chain picked by the id, so file systems
        // spread their first chunks over different heads.
        let start = fs_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % ids.len();
        let width = (DEFAULT_STRIPE_WIDTH as usize).min(ids.len());
        let chains: Vec<u32> = (0..width).map(|i| ids[(start + i) % ids.len()]).collect();
        let chains_json =
            serde_json::to_string(&chains).map_err(|e| Error::Internal(e.to_string()))?;
        let all_json = serde_json::to_string(&ids).map_err(|e| Error::Internal(e.to_string()))?;
        let now_ns = self.now() * 1_000_000_000;
        let mut tx = self.store.begin_write().await?;
        sqlx::query("INSERT INTO fs_layouts (fs_id, chunk_size, stripe_width, chains) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(fs_id)
            .bind(DEFAULT_CHUNK_SIZE as i64)
            .bind(width as i64)
            .bind(&all_json)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO fs_counters (fs_id, next_ino, used_bytes, files) VALUES ($1, $2, 0, 1) ON CONFLICT DO NOTHING")
            .bind(fs_id)
            .bind(ROOT_INO as i64 + 1)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO inodes (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains) \
             VALUES ($1, $2, $3, 493, 0, 0, 2, 0, $4, $4, $4, 0, $2, NULL, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(fs_id)
        .bind(ROOT_INO as i64)
        .bind(Kind::Dir.code())
        .bind(now_ns)
        .bind(DEFAULT_CHUNK_SIZE as i64)
        .bind(&chains_json)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the file system's namespace rows.
    pub async fn drop_namespace(&self, fs_id: &str) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        for sql in [
            "DELETE FROM dentries WHERE fs_id = $1",
            "DELETE FROM xattrs WHERE fs_id = $1",
            "DELETE FROM orphans WHERE fs_id = $1",
            "DELETE FROM inodes WHERE fs_id = $1",
            "DELETE FROM fs_counters WHERE fs_id = $1",
            "DELETE FROM fs_layouts WHERE fs_id = $1",
        ] {
            sqlx::query(sql).bind(fs_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bytes of file data in the file system (sizes of its files).
    pub async fn used_bytes(&self, fs_id: &str) -> Result<i64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT used_bytes FROM fs_counters WHERE fs_id = $1")
                .bind(fs_id)
                .fetch_optional(&self.store.pool)
                .await?;
        Ok(row.map_or(0, |r| r.0.max(0)))
    }
}
