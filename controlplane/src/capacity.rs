//! File systems whose data nodes hold more than their capacity (issue 14,
//! finding 5, node side). The metadata service checks capacity against
//! what the namespace counts; bytes a client writes to a node beside the
//! namespace (raw chunk writes past the size it recorded) reach only the
//! nodes' own usage reports. Here those reports are summed per file system
//! and compared with the capacity bought; heartbeat replies carry the file
//! systems over it, and a chain head refuses client writes that would store
//! more of them (ENOSPC) until enough is deleted or the capacity grows.

use crate::error::Result;
use crate::nodes::wall_ms;
use crate::ControlPlane;

impl ControlPlane {
    /// The file systems whose stored bytes per copy (the sum of live
    /// nodes' reports divided by the replicas) exceed their capacity,
    /// sorted. Reports of nodes not heard from within the failure timeout
    /// are left out: their chunks were or are being copied elsewhere, and
    /// counting them too would count those bytes twice.
    pub async fn full_file_systems(&self) -> Result<Vec<String>> {
        let live_after = wall_ms() - self.policy.failure_timeout_ms;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT u.fs_id, CAST(SUM(u.bytes_stored) AS BIGINT), CAST(MAX(f.capacity_gib) AS BIGINT) \
             FROM node_usage u JOIN nodes n ON n.id = u.node_id JOIN file_systems f ON f.id = u.fs_id \
             WHERE n.last_seen_ms > $1 GROUP BY u.fs_id ORDER BY u.fs_id",
        )
        .bind(live_after)
        .fetch_all(&self.store.pool)
        .await?;
        let replicas = self.policy.replicas.max(1) as u128;
        Ok(rows
            .into_iter()
            .filter(|(_, stored, capacity_gib)| {
                let per_copy = (*stored).max(0) as u128 / replicas;
                per_copy > ((*capacity_gib).max(0) as u128) << 30
            })
            .map(|(fs, _, _)| fs)
            .collect())
    }
}
