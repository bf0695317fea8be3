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

use crate::error::{Error, Result};
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
    pub checksum_errors: i64,
    pub repairs: i64,
    /// Bytes of chunk data the node reports holding.
    pub stored_bytes: i64,
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
    /// Nodes to wait for before the first chain table is built (the
    /// embedded cluster's size), so the first chains spread over all of them.
    pub expected_nodes: usize,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy {
            replicas: 2,
            heartbeat_timeout_secs: 3,
            expected_nodes: 0,
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
        let mut tx = self.store.begin_write().await?;
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
            tracing::info!(node_id = %reg.id, address = %reg.address, "node registered");
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
        self.poke();
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let rows = sqlx::query(
            "SELECT n.id, n.address, n.zone_id, n.capacity_bytes, n.state, n.last_heartbeat, CAST(COALESCE((SELECT SUM(r.bytes) FROM reservations r WHERE r.node_id = n.id), 0) AS BIGINT) AS reserved, n.checksum_errors, n.repairs, CAST(COALESCE((SELECT SUM(u.bytes_stored) FROM node_usage u WHERE u.node_id = n.id), 0) AS BIGINT) AS stored FROM nodes n ORDER BY n.id",
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
                    checksum_errors: r.try_get("checksum_errors")?,
                    repairs: r.try_get("repairs")?,
                    stored_bytes: r.try_get("stored")?,
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
        let mut tx = self.store.begin_write().await?;
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

/// Heartbeats: node registration, usage, and the chain table.
impl ControlPlane {
    /// Records a node's heartbeat and returns the chain table it must use.
    /// New nodes get chains appended (existing chains never change members
    /// here, so data already written stays where its chain says).
    pub async fn node_heartbeat(
        &self,
        hb: &cpfs_dataplane::node::Heartbeat,
    ) -> Result<cpfs_dataplane::chains::ChainTable> {
        self.register_node(&NodeRegistration {
            id: hb.id.clone(),
            address: hb.address.clone(),
            zone_id: hb.zone.clone(),
            capacity_bytes: hb.capacity_bytes.min(i64::MAX as u64) as i64,
        })
        .await?;
        let now = self.now();
        let mut tx = self.store.begin_write().await?;
        sqlx::query("UPDATE nodes SET checksum_errors = $1, repairs = $2 WHERE id = $3")
            .bind(hb.stats.checksum_errors as i64)
            .bind(hb.stats.repairs as i64)
            .bind(&hb.id)
            .execute(&mut *tx)
            .await?;
        for u in &hb.stats.file_systems {
            sqlx::query("DELETE FROM node_usage WHERE node_id = $1 AND fs_id = $2")
                .bind(&hb.id)
                .bind(&u.fs)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO node_usage (node_id, fs_id, bytes_stored, bytes_read, bytes_written, read_ops, write_ops, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&hb.id)
                .bind(&u.fs)
                .bind(u.bytes_stored as i64)
                .bind(u.bytes_read as i64)
                .bind(u.bytes_written as i64)
                .bind(u.read_ops as i64)
                .bind(u.write_ops as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.extend_chain_table().await
    }

    /// File systems deleted in the last 30 days (nodes drop their chunks).
    pub async fn dropped_file_systems(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT fs_id FROM dropped_file_systems WHERE dropped_at > $1 ORDER BY fs_id",
        )
        .bind(self.now() - 30 * 86_400)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Adds chains for live nodes that are in none, and follows address
    /// changes; writes a new version when anything changed.
    pub async fn extend_chain_table(&self) -> Result<cpfs_dataplane::chains::ChainTable> {
        use cpfs_dataplane::chains::{Chain, ChainTable, NodeAddr};
        let policy = self.policy;
        let now = self.now();
        let mut tx = self.store.begin_write().await?;
        let current: ChainTable = sqlx::query_as::<_, (String,)>(
            "SELECT body FROM chain_tables ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        .and_then(|(b,)| serde_json::from_str(&b).ok())
        .unwrap_or_default();
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT id, address, last_heartbeat, state FROM nodes ORDER BY registered_at, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let live: Vec<NodeAddr> = rows
            .iter()
            .filter(|(_, _, hb, state)| state == "Up" && now - hb <= policy.heartbeat_timeout_secs)
            .filter(|(_, addr, _, _)| !addr.starts_with("embedded:"))
            .map(|(id, address, _, _)| NodeAddr {
                id: id.clone(),
                address: address.clone(),
            })
            .collect();
        let mut next = current.clone();
        if next.chains.is_empty() {
            if live.len() >= policy.replicas.max(policy.expected_nodes).max(1) {
                next = ChainTable::build(current.version + 1, &live, policy.replicas);
            }
        } else {
            // Follow address changes of known nodes (a restarted node).
            for c in &mut next.chains {
                for m in &mut c.members {
                    if let Some((_, addr, _, _)) = rows.iter().find(|(id, _, _, _)| *id == m.id) {
                        m.address = addr.clone();
                    }
                }
            }
            for node in &live {
                if next
                    .chains
                    .iter()
                    .any(|c| c.members.iter().any(|m| m.id == node.id))
                {
                    continue;
                }
                // The new node heads a chain; the others with the fewest
                // memberships hold its copies.
                let mut others: Vec<&NodeAddr> = live.iter().filter(|n| n.id != node.id).collect();
                others.sort_by_key(|n| {
                    next.chains
                        .iter()
                        .filter(|c| c.members.iter().any(|m| m.id == n.id))
                        .count()
                });
                let mut members = vec![node.clone()];
                members.extend(
                    others
                        .into_iter()
                        .take(policy.replicas.saturating_sub(1))
                        .cloned(),
                );
                let id = next.chains.iter().map(|c| c.id + 1).max().unwrap_or(0);
                next.chains.push(Chain { id, members });
            }
        }
        if next.chains != current.chains {
            next.version = current.version + 1;
            let body = serde_json::to_string(&next).map_err(|e| Error::Internal(e.to_string()))?;
            sqlx::query("INSERT INTO chain_tables (version, body, created_at) VALUES ($1, $2, $3)")
                .bind(next.version as i64)
                .bind(body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(
                version = next.version,
                chains = next.chains.len(),
                "chain table changed"
            );
            self.poke();
            return Ok(next);
        }
        tx.commit().await?;
        Ok(current)
    }
}
