//! Building a test cluster, and the file operations tests start from.

use std::sync::Arc;
use std::time::Duration;

use cpfs_client::data::{ChainSource, DataClient};
use cpfs_client::meta::MetaClient;
use cpfs_node::Rates;
use cpfs_proto::capability::{Capability, CapabilityKey};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::layout::MIN_CHUNK_SIZE;
use cpfs_proto::meta::{Caller, MetaOp, MetaReply, OpenFile, ROOT_INO};
use cpfs_proto::node::{ChainRef, ChunkKey, NodeRequest};

use crate::meta::{MetaServer, DOMAIN};
use crate::node::TestNode;

/// The identity tests act as: root, the only one a mount target without
/// LDAP admits.
pub const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

/// How a cluster is laid out. The defaults make a small, fast cluster:
/// 3 nodes, 2 replicas, 64 KiB chunks striped over every chain (so a few
/// hundred KiB already touch every chain and both copies), hour-long leases
/// and no rate limits.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    replicas: usize,
    chunk_size: u64,
    stripe_width: Option<u32>,
    lease: Duration,
    proxy_nodes: bool,
    proxy_meta: bool,
    fs: String,
    token: String,
    max_bandwidth: u64,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 3,
            replicas: 2,
            chunk_size: MIN_CHUNK_SIZE,
            stripe_width: None,
            lease: Duration::from_secs(3600),
            proxy_nodes: false,
            proxy_meta: false,
            fs: "cpfs-harness".into(),
            token: "harness-cluster-token".into(),
            max_bandwidth: 0,
        }
    }
}

impl ClusterBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Copies per chain (R).
    pub fn replicas(mut self, r: usize) -> Self {
        self.replicas = r;
        self
    }

    /// Chunk size of new files (set on the root directory).
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Stripe width of new files (default: every chain).
    pub fn stripe_width(mut self, width: u32) -> Self {
        self.stripe_width = Some(width);
        self
    }

    /// The lease every node is granted at start and on restart
    /// (`Duration::ZERO`: nodes that need none).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Puts a [`crate::Proxy`] in front of every node; the chain table
    /// names the proxies, so clients and nodes reach each other through
    /// them and a node can be partitioned.
    pub fn proxy_nodes(mut self) -> Self {
        self.proxy_nodes = true;
        self
    }

    /// Client I/O of every node limited to `bytes_per_sec`, as
    /// `cpfs node --max-bandwidth` does (default: unlimited).
    pub fn max_bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.max_bandwidth = bytes_per_sec;
        self
    }

    /// Puts a [`crate::Proxy`] in front of the metadata service.
    pub fn proxy_meta(mut self) -> Self {
        self.proxy_meta = true;
        self
    }

    pub async fn build(self) -> anyhow::Result<Cluster> {
        anyhow::ensure!(self.nodes > 0, "a cluster needs nodes");
        let key = CapabilityKey::from_cluster_token(&self.token);
        // Copies are not throttled: tests wait for them.
        let rates = Rates {
            repair: 0,
            max_bandwidth: self.max_bandwidth,
            ..Rates::default()
        };
        let mut nodes = Vec::with_capacity(self.nodes);
        for i in 0..self.nodes {
            let id = format!("node-{i}");
            nodes.push(TestNode::start(id, key.clone(), rates, self.proxy_nodes).await?);
        }
        let addrs: Vec<_> = nodes.iter().map(TestNode::node_addr).collect();
        let table = ChainTable::build(1, &addrs, self.replicas);
        for n in &nodes {
            n.install(&table).await;
            n.grant_lease(self.lease)?;
        }
        let meta = MetaServer::start(&self.fs, key.clone(), &table, self.proxy_meta).await?;
        let meta_client = MetaClient::new(&meta.addr().to_string(), DOMAIN);
        let mounted = meta_client
            .mount()
            .await
            .map_err(|(errno, m)| anyhow::anyhow!("mount: errno {errno}: {m}"))?;
        let data = DataClient::new(mounted.chain_table, chain_source(meta_client.clone()));
        let cluster = Cluster {
            key,
            fs: self.fs,
            nodes,
            table,
            replicas: self.replicas,
            lease: self.lease,
            meta,
            meta_client,
            data,
        };
        let width = self
            .stripe_width
            .unwrap_or(cluster.table.chains.len().min(256) as u32);
        cluster.set_stripe(ROOT_INO, self.chunk_size, width).await?;
        Ok(cluster)
    }
}

/// Where the data client refreshes its table: the metadata service, as in
/// a mount, so a refresh sees what was last stored there.
fn chain_source(meta: Arc<MetaClient>) -> ChainSource {
    Arc::new(move || {
        let meta = meta.clone();
        Box::pin(async move {
            match meta.call(&ROOT, MetaOp::ChainTable).await {
                Ok(MetaReply::Chains(t)) => Ok(t),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(errno) => Err(format!("errno {errno}")),
            }
        })
    })
}

/// A running test cluster. Dropping it stops every task and removes every
/// directory it made.
pub struct Cluster {
    pub(crate) key: CapabilityKey,
    pub(crate) fs: String,
    pub(crate) nodes: Vec<TestNode>,
    /// The newest table installed (in the store and every live node).
    pub(crate) table: ChainTable,
    pub(crate) replicas: usize,
    pub(crate) lease: Duration,
    pub(crate) meta: MetaServer,
    meta_client: Arc<MetaClient>,
    data: Arc<DataClient>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// A cluster of `nodes` data nodes keeping `replicas` copies, with
    /// everything else as the builder defaults; for tests, which have
    /// nothing to do but fail when it cannot start.
    pub async fn start(nodes: usize, replicas: usize) -> Cluster {
        Cluster::builder()
            .nodes(nodes)
            .replicas(replicas)
            .build()
            .await
            .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"))
    }

    pub fn key(&self) -> &CapabilityKey {
        &self.key
    }

    pub fn fs(&self) -> &str {
        &self.fs
    }

    pub fn nodes(&self) -> &[TestNode] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Index of the node with id `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == id)
    }

    pub fn meta(&self) -> &MetaServer {
        &self.meta
    }

    pub fn meta_mut(&mut self) -> &mut MetaServer {
        &mut self.meta
    }

    /// The mount's metadata client (mounted on [`DOMAIN`]).
    pub fn meta_client(&self) -> &Arc<MetaClient> {
        &self.meta_client
    }

    /// The mount's data client; it refreshes its table from the metadata
    /// service, so it learns of a new table only when a node refuses it.
    pub fn data(&self) -> &Arc<DataClient> {
        &self.data
    }

    /// A capability for `ino` of the cluster's file system, valid an hour.
    pub fn cap(&self, ino: u64, rights: u8) -> Capability {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.key.issue(&self.fs, ino, rights, now + 3600)
    }

    /// The key of chunk `index` of an open file.
    pub fn chunk_key(&self, file: &OpenFile, index: u64) -> ChunkKey {
        ChunkKey {
            fs: self.fs.clone(),
            inode: file.attr.ino,
            index,
            chain: file.layout.chain_of(index),
        }
    }

    /// A read of the first block of chunk `index`, routed with the current
    /// table, to send to a node directly.
    pub fn block_read(&self, file: &OpenFile, index: u64) -> NodeRequest {
        let key = self.chunk_key(file, index);
        NodeRequest::Read {
            cap: file.cap.clone(),
            chain: ChainRef {
                id: key.chain,
                version: self.table().version,
            },
            key,
            offset: 0,
            len: 4096,
        }
    }

    /// A client write of `byte` over the first block of chunk `index`,
    /// routed with the current table, to send to a node directly.
    pub fn block_write(&self, file: &OpenFile, index: u64, byte: u8) -> NodeRequest {
        let key = self.chunk_key(file, index);
        NodeRequest::Write {
            cap: file.cap.clone(),
            chain: ChainRef {
                id: key.chain,
                version: self.table().version,
            },
            key,
            offset: 0,
            data: vec![byte; 4096],
            forwarded: None,
        }
    }

    /// One metadata call as root; an errno becomes an error.
    pub async fn meta_call(&self, op: MetaOp) -> anyhow::Result<MetaReply> {
        self.meta_client
            .call(&ROOT, op)
            .await
            .map_err(|errno| anyhow::anyhow!("metadata call failed with errno {errno}"))
    }

    /// Sets the layout of a directory (inherited by new files) or an empty file.
    pub async fn set_stripe(&self, ino: u64, chunk_size: u64, width: u32) -> anyhow::Result<()> {
        let op = MetaOp::SetStripe {
            ino,
            chunk_size,
            stripe_width: width,
        };
        match self.meta_call(op).await? {
            MetaReply::Done => Ok(()),
            other => anyhow::bail!("set stripe: {other:?}"),
        }
    }

    /// Creates `name` in the root directory, open for reading and writing.
    pub async fn create(&self, name: &str) -> anyhow::Result<OpenFile> {
        let op = MetaOp::Create {
            parent: ROOT_INO,
            name: name.as_bytes().to_vec(),
            mode: 0o644,
            umask: 0o022,
            read: true,
        };
        match self.meta_call(op).await? {
            MetaReply::Open(f) => Ok(f),
            other => anyhow::bail!("create {name}: {other:?}"),
        }
    }

    /// Creates `name` with its own layout, and opens it again to get it.
    pub async fn create_striped(
        &self,
        name: &str,
        chunk_size: u64,
        width: u32,
    ) -> anyhow::Result<OpenFile> {
        let f = self.create(name).await?;
        self.set_stripe(f.attr.ino, chunk_size, width).await?;
        let op = MetaOp::Open {
            ino: f.attr.ino,
            read: true,
            write: true,
        };
        match self.meta_call(op).await? {
            MetaReply::Open(f) => Ok(f),
            other => anyhow::bail!("open {name}: {other:?}"),
        }
    }

    /// Writes through the data client, then records the size, as a mount
    /// does on write.
    pub async fn write(&self, file: &OpenFile, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        self.data
            .write(&file.cap, &file.layout, file.attr.ino, offset, data)
            .await?;
        let op = MetaOp::Written {
            ino: file.attr.ino,
            size: offset + data.len() as u64,
            resumed: false,
        };
        self.meta_call(op).await?;
        Ok(())
    }

    /// Reads through the data client.
    pub async fn read(&self, file: &OpenFile, offset: u64, len: u64) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .data
            .read(&file.cap, &file.layout, file.attr.ino, offset, len)
            .await?
            .to_vec())
    }
}

/// `len` bytes that differ from chunk to chunk and from `seed` to `seed`,
/// so a piece read from the wrong chunk, file or version shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether `got` is `want`; if not, an error naming the first byte that
/// differs (comparing megabytes with `assert_eq!` prints them all).
pub fn check_bytes(what: &str, got: &[u8], want: &[u8]) -> anyhow::Result<()> {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    anyhow::bail!(
        "{what}: {} bytes read, {} expected, first difference at byte {at}",
        got.len(),
        want.len()
    )
}
