//! The control plane's part in a test cluster, done by hand: node
//! failures and returns, chain tables (stored where the metadata service
//! reads them and installed in every live node), leases and resyncs.
//!
//! Tables are installed in the nodes and the store, never in the data
//! client: a client learns of a new table the way a mount does, when a
//! node refuses the version it routed with.

use std::time::Duration;

use cpfs_proto::chains::{ChainTable, ClusterView, NodeView, SyncFinished};
use cpfs_proto::node::SyncReport;

use crate::cluster::Cluster;

impl Cluster {
    /// The newest table installed.
    pub fn table(&self) -> &ChainTable {
        &self.table
    }

    /// Installs `table` (which must be newer than the current one) in the
    /// store and in every live node.
    pub async fn install_table(&mut self, table: ChainTable) -> anyhow::Result<()> {
        anyhow::ensure!(
            table.version > self.table.version,
            "table version {} is not newer than {}",
            table.version,
            self.table.version
        );
        self.meta.store_table(&table).await?;
        for n in &self.nodes {
            n.install(&table).await;
        }
        self.table = table;
        Ok(())
    }

    /// The current chains under the next version number: every request
    /// routed with the current version becomes stale.
    pub fn next_version(&self) -> ChainTable {
        let mut t = self.table.clone();
        t.version += 1;
        t
    }

    /// The current table without `node_id` in any chain (serving or
    /// syncing), under the next version: what the control plane publishes
    /// when a node is declared dead.
    pub fn without(&self, node_id: &str) -> ChainTable {
        let mut t = self.next_version();
        for c in &mut t.chains {
            c.members.retain(|m| m.id != node_id);
            c.syncing.retain(|s| s.node.id != node_id);
        }
        t
    }

    /// One step of the control plane's planner over the live nodes, with
    /// `finished` resyncs reported by their heads.
    pub fn plan(&self, finished: Vec<SyncFinished>) -> ChainTable {
        let view = ClusterView {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeView {
                    id: n.id().to_string(),
                    address: n.addr().to_string(),
                    live: n.is_live(),
                    draining: false,
                })
                .collect(),
            finished,
            replicas: self.replicas,
            ..Default::default()
        };
        self.table.next(&view)
    }

    /// Kills node `i` and installs a table without it (failover).
    pub async fn fail_over(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_node(i).await;
        let id = self.nodes[i].id().to_string();
        let t = self.without(&id);
        self.install_table(t).await
    }

    /// Kills node `i` (see [`crate::TestNode::kill`]); the table is left
    /// as it is, as before the control plane notices.
    pub async fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Restarts node `i` on its directory and port, and gives it the
    /// current table and a lease, as its first heartbeat would.
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart().await?;
        self.nodes[i].install(&self.table).await;
        self.nodes[i].grant_lease(self.lease)
    }

    /// Grants node `i` a lease of `lease` from now.
    pub fn grant_lease(&self, i: usize, lease: Duration) -> anyhow::Result<()> {
        self.nodes[i].grant_lease(lease)
    }

    /// Partitions node `i` from everyone (needs [`crate::ClusterBuilder::proxy_nodes`]).
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        self.node_proxy(i)?.cut();
        Ok(())
    }

    /// Heals the partition of node `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        self.node_proxy(i)?.restore();
        Ok(())
    }

    fn node_proxy(&self, i: usize) -> anyhow::Result<&crate::Proxy> {
        self.nodes[i]
            .proxy()
            .ok_or_else(|| anyhow::anyhow!("node {i} has no proxy (ClusterBuilder::proxy_nodes)"))
    }

    /// Lets the planner give chains short of R members syncing members
    /// (a returning or new node), and installs the result. Fails when the
    /// planner has nothing to add.
    pub async fn add_syncing_members(&mut self) -> anyhow::Result<()> {
        let t = self.plan(vec![]);
        anyhow::ensure!(
            t.chains.iter().any(|c| !c.syncing.is_empty()),
            "the planner added no syncing member"
        );
        self.install_table(t).await
    }

    /// Waits until the head of every chain with a syncing member reports
    /// the copy to it finished, and returns those reports. A report with
    /// an error fails at once (nothing disturbs a test cluster's resync, so
    /// a failed pass is a failure, not a hiccup), as does the timeout.
    pub async fn wait_resynced(&self, timeout: Duration) -> anyhow::Result<Vec<SyncReport>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut done = Vec::new();
            let mut waiting = Vec::new();
            for c in &self.table.chains {
                let Some(head) = c.head() else { continue };
                if c.syncing.is_empty() {
                    continue;
                }
                let i = self
                    .index_of(&head.id)
                    .ok_or_else(|| anyhow::anyhow!("head {} is not a cluster node", head.id))?;
                let reports = self.nodes[i].stats().await?.syncs;
                for s in &c.syncing {
                    let r = reports
                        .iter()
                        .find(|r| r.chain == c.id && r.target == s.node.id && r.since == s.since);
                    match r {
                        Some(r) if r.error.is_some() => {
                            anyhow::bail!("resync of chain {} to {} failed: {r:?}", c.id, s.node.id)
                        }
                        Some(r) if r.finished => done.push(r.clone()),
                        other => waiting.push((c.id, s.node.id.clone(), other.cloned())),
                    }
                }
            }
            if waiting.is_empty() {
                return Ok(done);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("resyncs not finished after {timeout:?}: {waiting:?}");
            }
            tokio::time::sleep(crate::POLL).await;
        }
    }

    /// Once [`Cluster::wait_resynced`] succeeded: reports every copy
    /// finished to the planner, which promotes the syncing members, and
    /// installs the result.
    /// (The planner may start new moves in the same step, e.g. a
    /// rebalance onto a fresh node; those members are left syncing.)
    pub async fn promote_synced(&mut self) -> anyhow::Result<()> {
        let finished = self.table.syncing_as_finished();
        let t = self.plan(finished.clone());
        for f in &finished {
            let serving = t
                .chain(f.chain)
                .is_some_and(|c| c.members.iter().any(|m| m.id == f.node));
            anyhow::ensure!(serving, "{} not promoted in chain {}", f.node, f.chain);
        }
        self.install_table(t).await
    }
}
