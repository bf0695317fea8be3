//! The data-node registry and placement.
//!
//! Nodes register and heartbeat; placement reserves a file system's
//! capacity × replicas across live nodes with the most free space. The
//! data-plane node process uses exactly this interface (`register_node`,
//! `heartbeat`), so the embedded registry entries of `cpfs serve` and real
//! nodes are the same thing to the reconciler.
//!
//! Reservations are logical (thin provisioned): a node advertises the
//! capacity it is willing to promise, which the operator may set above its
//! disk size; the file system's own Capacity is what bounds its data.

use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::ControlPlane;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub address: String,
    pub zone_id: String,
    pub capacity_bytes: i64,
    pub reserved_bytes: i64,
    pub state: String,
    pub last_heartbeat: i64,
}

#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub id: String,
    pub address: String,
    pub zone_id: String,
    pub capacity_bytes: i64,
}

/// How placement behaves (cluster configuration).
#[derive(Debug, Clone, Copy)]
pub struct PlacementPolicy {
    /// Copies of every chunk (R).
    pub replicas: usize,
    /// Seconds without a heartbeat after which a node is not used for new
    /// placements.
    pub heartbeat_timeout_secs: i64,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy {
            replicas: 2,
            heartbeat_timeout_secs: 3,
        }
    }
}

pub const GIB: i64 = 1 << 30;

impl ControlPlane {
    /// Adds a node or updates its address and capacity; idempotent.
    pub async fn register_node(&self, reg: &NodeRegistration) -> Result<()> {
        if reg.id.is_empty() || reg.id.len() > 64 || reg.capacity_bytes < 0 {
            return Err(Error::invalid(
                "NodeId",
                "node ids are 1-64 characters; capacity must be >= 0",
            ));
        }
        let now = self.now();
        let mut tx = self.store.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE nodes SET address = $1, zone_id = $2, capacity_bytes = $3, state = 'Up', last_heartbeat = $4 WHERE id = $5",
        )
        .bind(&reg.address)
        .bind(&reg.zone_id)
        .bind(reg.capacity_bytes)
        .bind(now)
        .bind(&reg.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            sqlx::query(
                "INSERT INTO nodes (id, address, zone_id, capacity_bytes, state, last_heartbeat, registered_at) VALUES ($1, $2, $3, $4, 'Up', $5, $5)",
            )
            .bind(&reg.id)
            .bind(&reg.address)
            .bind(&reg.zone_id)
            .bind(reg.capacity_bytes)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(node_id = %reg.id, address = %reg.address, "node registered");
        self.poke();
        Ok(())
    }

    pub async fn heartbeat(&self, node_id: &str) -> Result<()> {
        let n = sqlx::query("UPDATE nodes SET last_heartbeat = $1, state = 'Up' WHERE id = $2")
            .bind(self.now())
            .bind(node_id)
            .execute(&self.store.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::not_found(ResourceKind::Node, node_id));
        }
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let rows = sqlx::query(
            "SELECT n.id, n.address, n.zone_id, n.capacity_bytes, n.state, n.last_heartbeat, CAST(COALESCE((SELECT SUM(r.bytes) FROM reservations r WHERE r.node_id = n.id), 0) AS BIGINT) AS reserved FROM nodes n ORDER BY n.id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Node {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    zone_id: r.try_get("zone_id")?,
                    capacity_bytes: r.try_get("capacity_bytes")?,
                    reserved_bytes: r.try_get("reserved")?,
                    state: r.try_get("state")?,
                    last_heartbeat: r.try_get("last_heartbeat")?,
                })
            })
            .collect()
    }

    /// Reserves `capacity_gib` × R for a file system across live nodes.
    /// Idempotent: a second call with the same size changes nothing, a call
    /// with a larger size (UpgradeFileSystem) grows the same placement.
    pub async fn reserve(
        &self,
        fs_id: &str,
        capacity_gib: i64,
        policy: PlacementPolicy,
    ) -> Result<Vec<(String, i64)>> {
        let now = self.now();
        let nodes = self.nodes().await?;
        let existing: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, bytes FROM reservations WHERE fs_id = $1 ORDER BY node_id",
        )
        .bind(fs_id)
        .fetch_all(&self.store.pool)
        .await?;
        let live =
            |n: &&Node| n.state == "Up" && now - n.last_heartbeat <= policy.heartbeat_timeout_secs;
        // Keep the nodes already chosen; choose new ones only for a first
        // placement, so an upgrade grows data where it already lives.
        let chosen: Vec<&Node> = if existing.is_empty() {
            let mut candidates: Vec<&Node> = nodes.iter().filter(live).collect();
            candidates.sort_by_key(|n| std::cmp::Reverse(n.capacity_bytes - n.reserved_bytes));
            candidates
        } else {
            nodes
                .iter()
                .filter(|n| existing.iter().any(|(id, _)| *id == n.id))
                .collect()
        };
        if chosen.len() < policy.replicas {
            return Err(Error::Unavailable(format!(
                "placement needs {} live data nodes, {} available",
                policy.replicas,
                chosen.len()
            )));
        }
        let total = capacity_gib
            .saturating_mul(GIB)
            .saturating_mul(policy.replicas as i64);
        let per_node = total / chosen.len() as i64 + i64::from(total % chosen.len() as i64 != 0);
        for n in &chosen {
            let already = existing
                .iter()
                .find(|(id, _)| *id == n.id)
                .map_or(0, |(_, b)| *b);
            if n.capacity_bytes - (n.reserved_bytes - already) < per_node {
                return Err(Error::Unavailable(format!(
                    "node {} has {} bytes free, {} needed",
                    n.id,
                    n.capacity_bytes - n.reserved_bytes,
                    per_node - already
                )));
            }
        }
        let mut tx = self.store.pool.begin().await?;
        for n in &chosen {
            sqlx::query("DELETE FROM reservations WHERE fs_id = $1 AND node_id = $2")
                .bind(fs_id)
                .bind(&n.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO reservations (fs_id, node_id, bytes) VALUES ($1, $2, $3)")
                .bind(fs_id)
                .bind(&n.id)
                .bind(per_node)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(chosen.iter().map(|n| (n.id.clone(), per_node)).collect())
    }

    pub async fn reservations(&self, fs_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT node_id, bytes FROM reservations WHERE fs_id = $1 ORDER BY node_id",
        )
        .bind(fs_id)
        .fetch_all(&self.store.pool)
        .await?)
    }
}
