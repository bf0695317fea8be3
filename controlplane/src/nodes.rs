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

use cpfs_proto::chains::ChainTable;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::ControlPlane;

impl ControlPlane {
    /// The newest chain table (empty before any node registered); a stored
    /// table this build cannot read is an error, never an empty table.
    pub async fn chain_table(&self) -> Result<ChainTable> {
        match cpfs_store::latest_chain_table_body(&self.store.pool).await? {
            None => Ok(ChainTable::default()),
            Some(body) => {
                ChainTable::from_stored(&body).map_err(|e| Error::Internal(e.to_string()))
            }
        }
    }
}

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
    /// Wall-clock milliseconds of the last heartbeat.
    pub last_seen_ms: i64,
    /// The node's latest report (chain bytes, resyncs, scrub).
    pub report: NodeReport,
}

/// What a node reports besides usage, as stored in `nodes.report`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    #[serde(default)]
    pub chain_bytes: Vec<(u32, u64)>,
    #[serde(default)]
    pub syncs: Vec<cpfs_proto::node::SyncReport>,
    #[serde(default)]
    pub scrub: cpfs_proto::node::ScrubReport,
    /// Peers the node could not reach at its last probe.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// Wall-clock milliseconds (liveness never uses the injected clock).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    /// Milliseconds without a heartbeat after which a node is declared
    /// dead: it leaves its chains and gets no new placements.
    pub failure_timeout_ms: i64,
    /// Nodes to wait for before the first chain table is built (the
    /// embedded cluster's size), so the first chains spread over all of them.
    pub expected_nodes: usize,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy {
            replicas: 2,
            failure_timeout_ms: 3000,
            expected_nodes: 0,
        }
    }
}

impl PlacementPolicy {
    /// How long a node may serve after sending a heartbeat that was
    /// answered: half a second less than the failure timeout, so a node cut
    /// off from the control plane stops before it is declared dead and its
    /// chains move on without it (no two heads for one chain).
    pub fn lease_ms(&self) -> u64 {
        (self.failure_timeout_ms - 500).max(500) as u64
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
        // A draining node stays draining however often it heartbeats.
        let updated = sqlx::query(
            "UPDATE nodes SET address = $1, zone_id = $2, capacity_bytes = $3, state = CASE WHEN state IN ('Draining', 'Drained') THEN state ELSE 'Up' END, last_heartbeat = $4, last_seen_ms = $5 WHERE id = $6",
        )
        .bind(&reg.address)
        .bind(&reg.zone_id)
        .bind(reg.capacity_bytes)
        .bind(now)
        .bind(wall_ms())
        .bind(&reg.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tracing::info!(node_id = %reg.id, address = %reg.address, "node registered");
            sqlx::query(
                "INSERT INTO nodes (id, address, zone_id, capacity_bytes, state, last_heartbeat, registered_at, last_seen_ms) VALUES ($1, $2, $3, $4, 'Up', $5, $5, $6)",
            )
            .bind(&reg.id)
            .bind(&reg.address)
            .bind(&reg.zone_id)
            .bind(reg.capacity_bytes)
            .bind(now)
            .bind(wall_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.poke();
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let rows = sqlx::query(
            "SELECT n.id, n.address, n.zone_id, n.capacity_bytes, n.state, n.last_heartbeat, CAST(COALESCE((SELECT SUM(r.bytes) FROM reservations r WHERE r.node_id = n.id), 0) AS BIGINT) AS reserved, n.checksum_errors, n.repairs, CAST(COALESCE((SELECT SUM(u.bytes_stored) FROM node_usage u WHERE u.node_id = n.id), 0) AS BIGINT) AS stored, n.last_seen_ms, n.report FROM nodes n ORDER BY n.id",
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
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    report: serde_json::from_str(&r.try_get::<String, _>("report")?)
                        .unwrap_or_default(),
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
        let now = wall_ms();
        let nodes = self.nodes().await?;
        let existing: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, bytes FROM reservations WHERE fs_id = $1 ORDER BY node_id",
        )
        .bind(fs_id)
        .fetch_all(&self.store.pool)
        .await?;
        let live = |n: &&Node| n.state == "Up" && now - n.last_seen_ms <= policy.failure_timeout_ms;
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
        hb: &cpfs_proto::heartbeat::Heartbeat,
    ) -> Result<ChainTable> {
        self.register_node(&NodeRegistration {
            id: hb.id.clone(),
            address: hb.address.clone(),
            zone_id: hb.zone.clone(),
            capacity_bytes: hb.capacity_bytes.min(i64::MAX as u64) as i64,
        })
        .await?;
        self.telemetry.node(&hb.id, &hb.stats);
        let now = self.now();
        let mut tx = self.store.begin_write().await?;
        let report = NodeReport {
            chain_bytes: hb.stats.chain_bytes.clone(),
            syncs: hb.stats.syncs.clone(),
            scrub: hb.stats.scrub.clone(),
            unreachable: hb.unreachable.clone(),
        };
        let report = serde_json::to_string(&report).map_err(|e| Error::Internal(e.to_string()))?;
        sqlx::query(
            "UPDATE nodes SET checksum_errors = $1, repairs = $2, report = $3 WHERE id = $4",
        )
        .bind(hb.stats.checksum_errors as i64)
        .bind(hb.stats.repairs as i64)
        .bind(report)
        .bind(&hb.id)
        .execute(&mut *tx)
        .await?;
        crate::statistics::record_served(&mut tx, &hb.id, &hb.stats.file_systems, now).await?;
        for u in &hb.stats.file_systems {
            sqlx::query("DELETE FROM node_usage WHERE node_id = $1 AND fs_id = $2")
                .bind(&hb.id)
                .bind(&u.fs)
                .execute(&mut *tx)
                .await?;
            let served = &u.served;
            sqlx::query("INSERT INTO node_usage (node_id, fs_id, bytes_stored, bytes_read, bytes_written, read_ops, write_ops, updated_at, \
                         served_reads, served_read_bytes, served_read_us, served_writes, served_write_bytes, served_write_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")
                .bind(&hb.id)
                .bind(&u.fs)
                .bind(u.bytes_stored as i64)
                .bind(u.bytes_read as i64)
                .bind(u.bytes_written as i64)
                .bind(u.read_ops as i64)
                .bind(u.write_ops as i64)
                .bind(now)
                .bind(served.reads.min(i64::MAX as u64) as i64)
                .bind(served.read_bytes.min(i64::MAX as u64) as i64)
                .bind(served.read_us.min(i64::MAX as u64) as i64)
                .bind(served.writes.min(i64::MAX as u64) as i64)
                .bind(served.write_bytes.min(i64::MAX as u64) as i64)
                .bind(served.write_us.min(i64::MAX as u64) as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.update_chain_table().await
    }

    /// Every node's usage row per file system, as (node id, usage).
    pub async fn node_usage(&self) -> Result<Vec<(String, cpfs_proto::node::FsUsage)>> {
        let rows = sqlx::query(
            "SELECT node_id, fs_id, bytes_stored, bytes_read, bytes_written, read_ops, write_ops, \
             served_reads AS reads, served_read_bytes AS read_bytes, served_read_us AS read_us, \
             served_writes AS writes, served_write_bytes AS write_bytes, served_write_us AS write_us \
             FROM node_usage ORDER BY node_id, fs_id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let count = |r: &sqlx::any::AnyRow, c: &str| -> Result<u64> {
            Ok(r.try_get::<i64, _>(c)?.max(0) as u64)
        };
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("node_id")?,
                    cpfs_proto::node::FsUsage {
                        fs: r.try_get("fs_id")?,
                        bytes_stored: count(r, "bytes_stored")?,
                        bytes_read: count(r, "bytes_read")?,
                        bytes_written: count(r, "bytes_written")?,
                        read_ops: count(r, "read_ops")?,
                        write_ops: count(r, "write_ops")?,
                        served: crate::statistics::served_of(r)?,
                        qos_wait_us: 0,
                    },
                ))
            })
            .collect()
    }

    /// The data nodes a node probes (see `HeartbeatReply::peers`): every
    /// one heard from within ten failure timeouts, so a node that left its
    /// chains for being unreachable stays watched.
    pub async fn node_peers(&self) -> Result<Vec<cpfs_proto::chains::NodeAddr>> {
        let since = wall_ms() - 10 * self.policy.failure_timeout_ms;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, address FROM nodes WHERE last_seen_ms >= $1 AND state <> 'Drained' ORDER BY id",
        )
        .bind(since)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|(_, address)| !address.starts_with("embedded:"))
            .map(|(id, address)| cpfs_proto::chains::NodeAddr { id, address })
            .collect())
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

    /// One planning step of the chain table (see `ChainTable::next`):
    /// failures, resync promotions, repair, drain and rebalance. Writes a
    /// new version when anything changed and returns the newest table.
    /// Called on every heartbeat and by the failure detector's ticker.
    pub async fn update_chain_table(&self) -> Result<ChainTable> {
        use cpfs_proto::chains::{ClusterView, NodeView, SyncFinished};
        // One planner at a time in this process; across processes the
        // version's primary key makes a concurrent step fail, not fork.
        let _one = self.planner.lock().await;
        let policy = self.policy;
        let current = self.chain_table().await?;
        let nodes = self.nodes().await?;
        let now = wall_ms();
        // Right after a start nobody has had the chance to heartbeat to this
        // process: nodes the table holds are presumed alive for one timeout.
        let settling = self.started.elapsed().as_millis() as i64 <= policy.failure_timeout_ms;
        let mut chain_bytes: std::collections::HashMap<u32, u64> = Default::default();
        let mut finished = Vec::new();
        let heard = |n: &Node| now - n.last_seen_ms <= policy.failure_timeout_ms;
        // Nodes that heartbeat but that their peers cannot reach.
        let cut_off = crate::reachability::cut_off(
            &nodes
                .iter()
                .filter(|n| heard(n) && !n.address.starts_with("embedded:"))
                .map(|n| (n.id.clone(), n.report.unreachable.clone()))
                .collect(),
        );
        let views: Vec<NodeView> = nodes
            .iter()
            .filter(|n| !n.address.starts_with("embedded:") && n.state != "Drained")
            .map(|n| {
                for (c, b) in &n.report.chain_bytes {
                    let e = chain_bytes.entry(*c).or_default();
                    *e = (*e).max(*b);
                }
                finished.extend(n.report.syncs.iter().filter(|s| s.finished).map(|s| {
                    SyncFinished {
                        chain: s.chain,
                        node: s.target.clone(),
                        since: s.since,
                    }
                }));
                NodeView {
                    id: n.id.clone(),
                    address: n.address.clone(),
                    live: (heard(n) || (settling && current.node_ids().contains(&n.id)))
                        && !cut_off.contains(&n.id),
                    draining: n.state == "Draining",
                }
            })
            .collect();
        let view = ClusterView {
            nodes: views,
            finished,
            chain_bytes,
            replicas: policy.replicas,
            expected_nodes: policy.expected_nodes,
        };
        let next = current.next(&view);
        // A draining node that holds nothing any more is drained.
        for n in nodes.iter().filter(|n| n.state == "Draining") {
            if !next.node_ids().contains(&n.id) {
                sqlx::query(
                    "UPDATE nodes SET state = 'Drained' WHERE id = $1 AND state = 'Draining'",
                )
                .bind(&n.id)
                .execute(&self.store.pool)
                .await?;
                tracing::info!(node_id = %n.id, "node drained: it holds no chain");
            }
        }
        if next.version == current.version {
            return Ok(current);
        }
        for n in &view.nodes {
            let was = current.node_ids().contains(&n.id);
            if was && !next.node_ids().contains(&n.id) && !n.live {
                if cut_off.contains(&n.id) {
                    tracing::warn!(node_id = %n.id, "node unreachable from its peers: removed from its chains");
                } else {
                    tracing::warn!(node_id = %n.id, "node declared dead: removed from its chains");
                }
            }
        }
        let body = next.to_stored();
        let inserted =
            sqlx::query("INSERT INTO chain_tables (version, body, created_at) VALUES ($1, $2, $3)")
                .bind(next.version as i64)
                .bind(body)
                .bind(self.now())
                .execute(&self.store.pool)
                .await;
        if let Err(e) = inserted {
            // Another control-plane process wrote this version first.
            tracing::warn!(error = %e, "chain table not written (another planner won, or the database refused)");
            return self.chain_table().await;
        }
        tracing::info!(
            version = next.version,
            chains = next.chains.len(),
            syncing = next.chains.iter().map(|c| c.syncing.len()).sum::<usize>(),
            "chain table changed"
        );
        self.poke();
        Ok(next)
    }

    /// Starts draining a node: the planner of `cpfs serve` moves its chains
    /// to other nodes, then marks it `Drained`. Idempotent. Only the state
    /// is written here, so a CLI process never plans with settings other
    /// than the server's.
    pub async fn mark_draining(&self, id: &str) -> Result<()> {
        if !self.nodes().await?.iter().any(|x| x.id == id) {
            return Err(Error::invalid(
                "NodeId",
                format!("no node {id} is registered"),
            ));
        }
        sqlx::query(
            "UPDATE nodes SET state = 'Draining' WHERE id = $1 AND state NOT IN ('Draining', 'Drained')",
        )
        .bind(id)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }
}

/// How well a file system's data is protected right now: the chains it is
/// laid over, how many of them lack a copy, and the resyncs filling them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redundancy {
    /// `Healthy` (every chain has R serving copies), `Repairing` (copies
    /// being filled), `Degraded` (a chain lacks a copy and none is filling).
    pub state: &'static str,
    pub replicas: usize,
    pub chains: usize,
    pub degraded_chains: usize,
    pub syncing_chains: usize,
    /// Bytes of the chains' resyncs done and to do (as the heads report).
    pub repair_done_bytes: u64,
    pub repair_total_bytes: u64,
}

/// (done, total) bytes of the copy filling `s` in `chain`, from the head's
/// latest report of that session (None: not reported yet).
pub fn sync_progress(
    nodes: &[Node],
    chain: u32,
    s: &cpfs_proto::chains::Syncing,
) -> Option<(u64, u64)> {
    nodes
        .iter()
        .flat_map(|n| n.report.syncs.iter())
        .find(|x| x.chain == chain && x.target == s.node.id && x.since == s.since)
        .map(|x| (x.done_bytes.min(x.total_bytes), x.total_bytes))
}

/// The redundancy of a file system laid over the chains `ids` of `table`;
/// `nodes` (their reports) give the progress of repairs, and may be empty
/// when none of those chains is being filled.
pub fn redundancy(table: &ChainTable, ids: &[u32], nodes: &[Node]) -> Redundancy {
    let r = table.replicas.max(1);
    let mut red = Redundancy {
        state: "Healthy",
        replicas: r,
        chains: ids.len(),
        degraded_chains: 0,
        syncing_chains: 0,
        repair_done_bytes: 0,
        repair_total_bytes: 0,
    };
    for c in table.chains.iter().filter(|c| ids.contains(&c.id)) {
        if c.members.len() < r {
            red.degraded_chains += 1;
        }
        if !c.syncing.is_empty() {
            red.syncing_chains += 1;
        }
        for s in &c.syncing {
            if let Some((done, total)) = sync_progress(nodes, c.id, s) {
                red.repair_done_bytes += done;
                red.repair_total_bytes += total;
            }
        }
    }
    red.state = if red.degraded_chains > 0 && red.syncing_chains < red.degraded_chains {
        "Degraded"
    } else if red.degraded_chains > 0 || red.syncing_chains > 0 {
        "Repairing"
    } else {
        "Healthy"
    };
    red
}
