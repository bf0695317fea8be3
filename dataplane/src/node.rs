//! The data node (`cpfs node`): serves chunks over the binary protocol,
//! orders and forwards writes as a chain head, and keeps in touch with the
//! control plane (registration and heartbeats carry usage out and the
//! chain table back).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::RwLock;

use crate::capability::{CapabilityKey, ADMIN, READ, WRITE};
use crate::chains::ChainTable;
use crate::chunkstore::ChunkStore;
use crate::proto::{ChainRef, NodeError, NodeRequest, NodeResponse, NodeStats};
use crate::rpc::{self, Client};

pub type NodeClient = Client<NodeRequest, NodeResponse>;

/// Header carrying the cluster token on node → control plane calls.
pub const TOKEN_HEADER: &str = "x-cpfs-cluster-token";
pub const HEARTBEAT_PATH: &str = "/internal/v1/nodes/heartbeat";

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// Address other nodes and clients use (default: the bound address).
    pub advertise: Option<String>,
    pub controlplane: String,
    pub cluster_token: String,
    pub zone: String,
    pub capacity_bytes: u64,
    pub heartbeat: Duration,
}

/// What a node tells the control plane on every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub capacity_bytes: u64,
    pub stats: NodeStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub chain_table: ChainTable,
    /// File systems deleted recently: a node drops whatever it holds of them.
    #[serde(default)]
    pub dropped: Vec<String>,
}

/// Connections to peers, one multiplexed client per address.
#[derive(Default)]
pub struct Peers {
    map: std::sync::Mutex<HashMap<String, Arc<NodeClient>>>,
}

impl Peers {
    pub fn get(&self, address: &str) -> Arc<NodeClient> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(Client::new(address)))
            .clone()
    }
}

pub struct Node {
    pub id: String,
    store: Arc<ChunkStore>,
    key: CapabilityKey,
    chains: RwLock<ChainTable>,
    peers: Peers,
    /// Per-chunk ordering at the head: a write holds its chunk's slot while
    /// it is applied locally and on every other member, so all copies see
    /// writes to a chunk in the same order.
    order: Vec<tokio::sync::Mutex<()>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The node id, created on first start and kept in the data directory.
pub fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let id = format!("node-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(NodeError::Io(format!("worker failed: {e}"))))
}

impl Node {
    pub fn open(id: String, store: ChunkStore, key: CapabilityKey) -> Arc<Node> {
        Arc::new(Node {
            id,
            store: Arc::new(store),
            key,
            chains: RwLock::new(ChainTable::default()),
            peers: Peers::default(),
            order: (0..1024).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    pub async fn set_chain_table(&self, table: ChainTable) {
        let mut current = self.chains.write().await;
        if table.version > current.version {
            tracing::info!(
                version = table.version,
                chains = table.chains.len(),
                "chain table updated"
            );
            *current = table;
        }
    }

    /// Applies a heartbeat reply: the chain table, and deleted file systems.
    pub async fn apply(&self, reply: HeartbeatReply) {
        self.set_chain_table(reply.chain_table).await;
        let held: Vec<String> = self.store.usage().into_iter().map(|u| u.fs).collect();
        for fs in reply.dropped.into_iter().filter(|f| held.contains(f)) {
            let store = self.store.clone();
            let name = fs.clone();
            match blocking(move || store.drop_fs(&name)).await {
                Ok(()) => tracing::info!(fs = %fs, "deleted file system dropped"),
                Err(e) => {
                    tracing::warn!(fs = %fs, error = %e, "could not drop a deleted file system")
                }
            }
        }
    }

    pub fn stats(&self, chain_version: u64) -> NodeStats {
        NodeStats {
            node_id: self.id.clone(),
            chain_version,
            checksum_errors: self
                .store
                .checksum_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            repairs: self
                .store
                .repairs
                .load(std::sync::atomic::Ordering::Relaxed),
            file_systems: self.store.usage(),
        }
    }

    /// Checks the routing of a chunk request: the table version, and that
    /// this node is the head (`head = true`) or a member of the chain.
    /// Returns the addresses of the other members.
    async fn route(&self, chain: ChainRef, head: bool) -> Result<Vec<String>, NodeError> {
        let table = self.chains.read().await;
        if chain.version != table.version {
            return Err(NodeError::StaleChainTable {
                current: table.version,
            });
        }
        let c = table.chain(chain.id).ok_or(NodeError::NotMember)?;
        let pos = c
            .members
            .iter()
            .position(|m| m.id == self.id)
            .ok_or(NodeError::NotMember)?;
        if head && pos != 0 {
            return Err(NodeError::NotMember);
        }
        Ok(c.members
            .iter()
            .filter(|m| m.id != self.id)
            .map(|m| m.address.clone())
            .collect())
    }

    fn slot(&self, key: &crate::proto::ChunkKey) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.order[(h.finish() as usize) % self.order.len()]
    }

    /// Sends `req` to every address and succeeds when all succeed.
    async fn forward(&self, others: Vec<String>, req: NodeRequest) -> Result<(), NodeError> {
        let mut set = tokio::task::JoinSet::new();
        for addr in others {
            let peer = self.peers.get(&addr);
            let req = req.clone();
            set.spawn(async move { (addr, peer.call(req).await) });
        }
        let mut result = Ok(());
        while let Some(done) = set.join_next().await {
            match done {
                Ok((_, Ok(NodeResponse::Done))) => {}
                Ok((addr, Ok(NodeResponse::Failed(e)))) => {
                    tracing::warn!(peer = %addr, error = %e, "replica refused a forwarded write");
                    result = Err(e);
                }
                Ok((addr, Ok(other))) => {
                    result = Err(NodeError::Io(format!("{addr} answered {other:?}")))
                }
                Ok((addr, Err(e))) => result = Err(NodeError::Io(format!("replica {addr}: {e}"))),
                Err(e) => result = Err(NodeError::Io(e.to_string())),
            }
        }
        result
    }

    /// A change to a chunk. A forwarded one is applied here only. At the
    /// head, the chunk's ordering slot is held while the change is applied
    /// locally and on every other member, so all copies see the same order;
    /// it succeeds when every member has it.
    async fn mutate(
        &self,
        chain: ChainRef,
        key: &crate::proto::ChunkKey,
        forwarded: bool,
        forward: impl FnOnce() -> NodeRequest,
        apply: impl FnOnce() -> Result<(), NodeError> + Send + 'static,
    ) -> Result<NodeResponse, NodeError> {
        let others = self.route(chain, !forwarded).await?;
        if forwarded {
            blocking(apply).await?;
            return Ok(NodeResponse::Done);
        }
        let _slot = self.slot(key).lock().await;
        let (local, remote) = tokio::join!(blocking(apply), self.forward(others, forward()));
        local?;
        remote?;
        Ok(NodeResponse::Done)
    }

    pub async fn handle(self: Arc<Self>, req: NodeRequest) -> NodeResponse {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => NodeResponse::Failed(e),
        }
    }

    async fn dispatch(&self, req: NodeRequest) -> Result<NodeResponse, NodeError> {
        let t = now();
        match req {
            NodeRequest::Write {
                cap,
                chain,
                key,
                offset,
                data,
                forwarded,
            } => {
                if !self.key.allows(&cap, &key.fs, key.inode, WRITE, t) {
                    return Err(NodeError::BadCapability);
                }
                let store = self.store.clone();
                // Shared, so a replica (which forwards nothing) copies no data.
                let data = Arc::new(data);
                let (k, d) = (key.clone(), data.clone());
                let forward = move || NodeRequest::Write {
                    cap,
                    chain,
                    key: k,
                    offset,
                    data: d.to_vec(),
                    forwarded: true,
                };
                self.mutate(chain, &key.clone(), forwarded, forward, move || {
                    store.write(&key, offset, &data, false)
                })
                .await
            }
            NodeRequest::Truncate {
                cap,
                chain,
                key,
                len,
                forwarded,
            } => {
                if !self.key.allows(&cap, &key.fs, key.inode, WRITE, t) {
                    return Err(NodeError::BadCapability);
                }
                let store = self.store.clone();
                let k = key.clone();
                let forward = move || NodeRequest::Truncate {
                    cap,
                    chain,
                    key: k,
                    len,
                    forwarded: true,
                };
                self.mutate(chain, &key.clone(), forwarded, forward, move || {
                    store.truncate(&key, len)
                })
                .await
            }
            NodeRequest::Read {
                cap,
                chain,
                key,
                offset,
                len,
            } => {
                if !self.key.allows(&cap, &key.fs, key.inode, READ, t) {
                    return Err(NodeError::BadCapability);
                }
                if len > crate::layout::MAX_CHUNK_SIZE {
                    return Err(NodeError::Invalid("read too large".into()));
                }
                self.route(chain, false).await?;
                let store = self.store.clone();
                Ok(NodeResponse::Data(
                    blocking(move || store.read(&key, offset, len)).await?,
                ))
            }
            NodeRequest::Repair {
                cap,
                chain,
                key,
                offset,
                data,
            } => {
                if !self.key.allows(&cap, &key.fs, key.inode, READ, t) {
                    return Err(NodeError::BadCapability);
                }
                self.route(chain, false).await?;
                let store = self.store.clone();
                tracing::info!(fs = %key.fs, inode = key.inode, chunk = key.index, offset, len = data.len(), "repairing a copy");
                blocking(move || store.write(&key, offset, &data, true)).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::Fsync { cap, fs, inode } => {
                // Any open file may be synced, whether opened to read or write.
                if !self.key.allows(&cap, &fs, inode, READ, t)
                    && !self.key.allows(&cap, &fs, inode, WRITE, t)
                {
                    return Err(NodeError::BadCapability);
                }
                let store = self.store.clone();
                blocking(move || store.fsync_inode(&fs, inode)).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::DropInode { cap, fs, inode } => {
                if !self.key.allows(&cap, &fs, inode, ADMIN, t) {
                    return Err(NodeError::BadCapability);
                }
                let store = self.store.clone();
                blocking(move || store.drop_inode(&fs, inode)).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::Stats => {
                let v = self.chains.read().await.version;
                Ok(NodeResponse::Stats(self.stats(v)))
            }
        }
    }
}

/// One heartbeat; returns the control plane's chain table.
fn heartbeat_once(cfg: &NodeConfig, hb: &Heartbeat) -> Result<HeartbeatReply, String> {
    let url = format!("{}{HEARTBEAT_PATH}", cfg.controlplane.trim_end_matches('/'));
    let resp = ureq::post(&url)
        .timeout(Duration::from_secs(5))
        .set(TOKEN_HEADER, &cfg.cluster_token)
        .send_json(hb);
    match resp {
        Ok(r) => r.into_json::<HeartbeatReply>().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(401, _)) => {
            Err("the control plane refused the cluster token".into())
        }
        Err(ureq::Error::Status(code, r)) => Err(format!(
            "HTTP {code}: {}",
            r.into_string().unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Takes an exclusive lock on the data directory, so two node processes
/// never write one directory (the lock goes with the process, even on
/// kill -9). Waits a little for a previous owner that is dying.
async fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("lock file in {}: {e}", dir.display()))?;
    for _ in 0..100 {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{} is in use by another node process",
        dir.display()
    ))
}

/// Runs a node until the process ends.
pub async fn run(cfg: NodeConfig) -> Result<(), String> {
    let _lock = lock_data_dir(&cfg.data_dir).await?;
    let id = node_id(&cfg.data_dir)
        .map_err(|e| format!("node id in {}: {e}", cfg.data_dir.display()))?;
    let store = ChunkStore::open(&cfg.data_dir)
        .map_err(|e| format!("chunk store in {}: {e}", cfg.data_dir.display()))?;
    let node = Node::open(
        id.clone(),
        store,
        CapabilityKey::from_cluster_token(&cfg.cluster_token),
    );
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let mut cfg = cfg;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    cfg.advertise = Some(advertise.clone());
    tracing::info!(node_id = %id, listen = %bound, "data node serving");

    // Register before serving traffic; a wrong token is fatal, an
    // unreachable control plane is retried.
    let first = loop {
        let hb = Heartbeat {
            id: id.clone(),
            address: advertise.clone(),
            zone: cfg.zone.clone(),
            capacity_bytes: cfg.capacity_bytes,
            stats: node.stats(0),
        };
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || heartbeat_once(&c, &hb)).await {
            Ok(Ok(reply)) => break reply,
            Ok(Err(e)) if e.contains("cluster token") => return Err(e),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "control plane not reachable yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    node.apply(first).await;
    tracing::info!(node_id = %id, "registered with the control plane");

    let hb_node = node.clone();
    let hb_cfg = cfg.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(hb_cfg.heartbeat).await;
            let version = hb_node.chains.read().await.version;
            let hb = Heartbeat {
                id: hb_node.id.clone(),
                address: advertise.clone(),
                zone: hb_cfg.zone.clone(),
                capacity_bytes: hb_cfg.capacity_bytes,
                stats: hb_node.stats(version),
            };
            let c = hb_cfg.clone();
            match tokio::task::spawn_blocking(move || heartbeat_once(&c, &hb)).await {
                Ok(Ok(reply)) => hb_node.apply(reply).await,
                Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
                Err(e) => tracing::warn!(error = %e, "heartbeat task failed"),
            }
        }
    });

    let handler_node = node.clone();
    rpc::serve(listener, move |_peer, req: NodeRequest| {
        handler_node.clone().handle(req)
    })
    .await;
    Ok(())
}
