//! One data node of a test cluster: a detached [`Node`] (no control
//! plane: the harness installs chain tables and grants leases) serving on a
//! fixed 127.0.0.1 port from its own temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpfs_node::{Node, Rates};
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::chains::{ChainTable, NodeAddr};
use cpfs_proto::node::{NodeClient, NodeRequest, NodeResponse, NodeStats};

use crate::{Proxy, Task};

/// A `Stats` request as the cluster sends it: with a node proof, which no
/// client holds.
pub fn stats_request(key: &CapabilityKey) -> NodeRequest {
    NodeRequest::Stats {
        auth: key.node_key().issue(i64::MAX),
    }
}

/// A node, alive or killed. Killing it ends its service task, which owns
/// every connection and request of the node, so peers see what they would
/// see after the process died; restarting opens the same directory again
/// and binds the same port, as a node process restarted by its supervisor.
pub struct TestNode {
    id: String,
    dir: tempfile::TempDir,
    /// The node's own listener.
    listen: SocketAddr,
    /// Set when the cluster puts a proxy in front of the node; the chain
    /// table then names the proxy, so clients and other nodes go through it.
    proxy: Option<Proxy>,
    key: CapabilityKey,
    rates: Rates,
    live: Option<(Arc<Node>, Task)>,
}

impl TestNode {
    /// Opens a node in a new temporary directory and serves it on an
    /// ephemeral port (behind a proxy when `proxied`).
    pub(crate) async fn start(
        id: String,
        key: CapabilityKey,
        rates: Rates,
        proxied: bool,
    ) -> anyhow::Result<TestNode> {
        let dir = tempfile::Builder::new().prefix("cpfs-node-").tempdir()?;
        let listener = crate::bind(0)?;
        let listen = listener.local_addr()?;
        let proxy = proxied.then(|| Proxy::start(listen)).transpose()?;
        let mut n = TestNode {
            id,
            dir,
            listen,
            proxy,
            key,
            rates,
            live: None,
        };
        n.serve(listener)?;
        Ok(n)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let node =
            cpfs_node::open_detached(&self.id, self.dir.path(), self.key.clone(), self.rates)
                .map_err(anyhow::Error::msg)?;
        let task = Task::spawn(cpfs_node::server::serve(node.clone(), listener));
        self.live = Some((node, task));
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address peers use: the proxy's when there is one.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.as_ref().map_or(self.listen, Proxy::addr)
    }

    /// The node's own listener, bypassing any proxy.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            id: self.id.clone(),
            address: self.addr().to_string(),
        }
    }

    /// The node's data directory (chunks live under `chunks/<fs>/<inode>/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The running node; None after [`TestNode::kill`].
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.live.as_ref().map(|(n, _)| n)
    }

    fn running(&self) -> anyhow::Result<&Arc<Node>> {
        self.node()
            .ok_or_else(|| anyhow::anyhow!("node {} is not running", self.id))
    }

    /// The node's counters and the resyncs it runs as a head, asked over
    /// the wire (bypassing any proxy) as the control plane would.
    pub async fn stats(&self) -> anyhow::Result<NodeStats> {
        self.running()?;
        let client = NodeClient::new(self.listen.to_string());
        match client.call(stats_request(&self.key)).await? {
            NodeResponse::Stats(s) => Ok(s),
            other => anyhow::bail!("node {} answered Stats with {other:?}", self.id),
        }
    }

    /// Chunks the node holds of `fs`'s inode `ino`, read from its disk.
    pub fn chunk_files(&self, fs: &str, ino: u64) -> usize {
        let dir = self.dir().join("chunks").join(fs).join(ino.to_string());
        std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
    }

    /// Grants a lease of `lease` from now (`Duration::ZERO`: a node that
    /// needs no lease, as under an older control plane).
    pub fn grant_lease(&self, lease: Duration) -> anyhow::Result<()> {
        self.running()?
            .renew_lease(Instant::now(), lease.as_millis() as u64);
        Ok(())
    }

    /// Ends the lease now: the node serves nothing until it is renewed, as
    /// when it has not heard from the control plane for a lease period.
    pub fn expire_lease(&self) -> anyhow::Result<()> {
        let past = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        self.running()?.renew_lease(past, 1);
        Ok(())
    }

    pub(crate) async fn install(&self, table: &ChainTable) {
        if let Some(node) = self.node() {
            node.set_chain_table(table.clone()).await;
        }
    }

    /// Kills the node: its service task ends, with every connection and
    /// request in flight. The node's background resyncs are not part of
    /// that task, so they are fenced off (an expired lease, and a table
    /// without chains that ends every session): a killed process would not
    /// keep copying either.
    pub async fn kill(&mut self) {
        if let Some((node, task)) = self.live.take() {
            task.stop().await;
            let past = Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now);
            node.renew_lease(past, 1);
            node.set_chain_table(ChainTable {
                version: u64::MAX,
                chains: vec![],
                replicas: 0,
            })
            .await;
        }
    }

    /// Starts the node again on the same directory and port. It comes
    /// back with no chain table and no lease, as a restarted process does;
    /// the cluster gives it both.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.live.is_none(), "node {} is running", self.id);
        let listener = crate::bind(self.listen.port())?;
        self.serve(listener)
    }
}
