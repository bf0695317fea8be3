//! A file system's namespace from its creation to its deletion: what
//! "Running" needs (a layout over the chain table, counters and a root
//! directory), what deleting it removes, and how much it holds. The
//! reconciler and billing call these; nothing else writes or reads the
//! namespace tables. Every step is idempotent.

use cpfs_proto::chains::ChainTable;
use cpfs_proto::layout::{DEFAULT_CHUNK_SIZE, DEFAULT_STRIPE_WIDTH};
use cpfs_proto::meta::{Kind, ROOT_INO};
use cpfs_store::Store;

/// Why a lifecycle step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The chain table is empty: no data node has registered yet.
    #[error("waiting for data nodes to form the chain table")]
    NoChains,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] cpfs_store::StoreError),
    #[error("stored {what} is not readable: {reason}")]
    Corrupt { what: String, reason: String },
}

/// Lays the file system over the chains of `table` and creates its root
/// directory (mode 0755, owned by root) with `now_ns` as its times.
pub async fn provision(
    store: &Store,
    fs_id: &str,
    table: &ChainTable,
    now_ns: i64,
) -> Result<(), LifecycleError> {
    if table.chains.is_empty() {
        return Err(LifecycleError::NoChains);
    }
    let ids: Vec<u32> = table.chains.iter().map(|c| c.id).collect();
    // Start the stripe at a chain picked by the id, so file systems spread
    // their first chunks over different heads.
    let start = fs_id
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % ids.len();
    let width = (DEFAULT_STRIPE_WIDTH as usize).min(ids.len());
    let chains: Vec<u32> = (0..width).map(|i| ids[(start + i) % ids.len()]).collect();
    let chains_json = serde_json::to_string(&chains).unwrap_or_else(|_| "[]".into());
    let all_json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    let mut tx = store.begin_write().await?;
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

/// Removes every namespace row of the file system, its request records
/// and the journal's log rows included.
pub async fn drop(store: &Store, fs_id: &str) -> Result<(), LifecycleError> {
    let mut tx = store.begin_write().await?;
    for sql in [
        "DELETE FROM dentries WHERE fs_id = $1",
        "DELETE FROM xattrs WHERE fs_id = $1",
        "DELETE FROM orphans WHERE fs_id = $1",
        "DELETE FROM inodes WHERE fs_id = $1",
        "DELETE FROM fs_counters WHERE fs_id = $1",
        "DELETE FROM fs_layouts WHERE fs_id = $1",
        "DELETE FROM meta_requests WHERE fs_id = $1",
        "DELETE FROM fileset_usage WHERE fs_id = $1",
        "DELETE FROM user_quota_usage WHERE fs_id = $1",
        "DELETE FROM meta_log WHERE fs_id = $1",
        // Fences its metadata server off at once: a commit or a fold of
        // the journal's log still on its way writes nothing after this.
        "DELETE FROM meta_assignments WHERE fs_id = $1",
    ] {
        sqlx::query(sql).bind(fs_id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Bytes of file data in the file system (the sum of its files' sizes);
/// 0 before it is provisioned.
pub async fn used_bytes(store: &Store, fs_id: &str) -> Result<u64, LifecycleError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT used_bytes FROM fs_counters WHERE fs_id = $1")
        .bind(fs_id)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map_or(0, |r| r.0.max(0) as u64))
}

/// SQL for a `metered_size` column of a query over `file_systems`, so that
/// listings read usage in the same query instead of once per row. Kept
/// here, beside the table it reads; a macro so that it can be part of
/// another crate's constant query text (`concat!`).
#[macro_export]
macro_rules! metered_size_column {
    () => {
        "CAST(COALESCE((SELECT c.used_bytes FROM fs_counters c WHERE c.fs_id = file_systems.id), 0) AS BIGINT) AS metered_size"
    };
}

/// The chains each of `fs_ids` is laid over (file systems without a layout
/// are absent), in one query.
pub async fn layout_chains(
    store: &Store,
    fs_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<u32>>, LifecycleError> {
    let mut out = std::collections::HashMap::new();
    if fs_ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT fs_id, chains FROM fs_layouts WHERE fs_id IN ({})",
        cpfs_store::placeholders(1, fs_ids.len())
    );
    let mut q = sqlx::query_as::<_, (String, String)>(&sql);
    for id in fs_ids {
        q = q.bind(id);
    }
    for (fs, chains) in q.fetch_all(&store.pool).await? {
        let ids = serde_json::from_str(&chains).map_err(|e| LifecycleError::Corrupt {
            what: format!("layout of {fs}"),
            reason: e.to_string(),
        })?;
        out.insert(fs, ids);
    }
    Ok(out)
}

/// The chain stripe of each of `inodes` of `fs` (inodes that no longer
/// exist are absent), in one query: a data node migrating its chunk files
/// from format 1 asks for these to name each chunk's chain.
pub async fn file_chains(
    store: &Store,
    fs: &str,
    inodes: &[u64],
) -> Result<std::collections::BTreeMap<u64, Vec<u32>>, LifecycleError> {
    let mut out = std::collections::BTreeMap::new();
    if inodes.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT ino, chains FROM inodes WHERE fs_id = $1 AND ino IN ({})",
        cpfs_store::placeholders(2, inodes.len())
    );
    let mut q = sqlx::query_as::<_, (i64, String)>(&sql).bind(fs);
    for ino in inodes {
        q = q.bind(*ino as i64);
    }
    for (ino, chains) in q.fetch_all(&store.pool).await? {
        let ids = serde_json::from_str(&chains).map_err(|e| LifecycleError::Corrupt {
            what: format!("chains of inode {ino} of {fs}"),
            reason: e.to_string(),
        })?;
        out.insert(ino as u64, ids);
    }
    Ok(out)
}
