//! The data node (`cpfs node`): serves chunks over the binary protocol,
//! orders and forwards writes as a chain head, and keeps in touch with the
//! control plane (registration and heartbeats carry usage out and the
//! chain table back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpfs_proto::capability::{Capability, CapabilityKey, ADMIN, ANY_INODE, READ, WRITE};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::frame::MAX_FRAME;
use cpfs_proto::heartbeat::HeartbeatReply;
use cpfs_proto::node::{ChainRef, NodeError, NodePeers, NodeRequest, NodeResponse, NodeStats};
use cpfs_proto::rpc::{self, ServiceLimits, ServiceStats};
use tokio::net::TcpListener;
use tokio::sync::RwLock;

use crate::blocking::{blocking, now};
use crate::chunkstore::ChunkStore;
use crate::config::Rates;
use crate::throttle::Throttle;

/// Serves the node protocol on `listener` until the task is dropped.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let limits = ServiceLimits {
        name: "node",
        max_request: MAX_FRAME,
        max_reply: MAX_FRAME,
        // Each request may hold a chunk's worth of memory; a connection
        // gets a bounded share of the node.
        max_in_flight: 256,
    };
    let stats = node.service_stats.clone();
    rpc::serve(listener, limits, stats, move |_peer, req: NodeRequest| {
        node.clone().handle(req)
    })
    .await
}

pub struct Node {
    pub id: String,
    pub(crate) store: Arc<ChunkStore>,
    pub(crate) key: CapabilityKey,
    pub(crate) chains: RwLock<ChainTable>,
    pub(crate) peers: NodePeers,
    /// Counters of the node protocol's service shell.
    pub service_stats: Arc<ServiceStats>,
    /// Per-chunk ordering at the head: a write holds its chunk's slot while
    /// it is applied locally and on every other member, so all copies see
    /// writes to a chunk in the same order (resync copies take it too).
    order: Vec<tokio::sync::Mutex<()>>,
    /// Until when the node may serve (None: not leased yet, or no leases).
    lease: std::sync::Mutex<Lease>,
    /// Wakes the heartbeat loop early (a request named a newer table).
    pub(crate) wake: tokio::sync::Notify,
    /// Mutations in flight per chain-table version: a resync waits for
    /// those routed with an older table before it lists the chain.
    inflight: std::sync::Mutex<HashMap<u64, usize>>,
    pub(crate) sync: crate::resync::SyncState,
    pub(crate) scrub: crate::scrub::ScrubState,
    pub(crate) rates: Rates,
    io_throttle: Throttle,
    pub(crate) repair_throttle: Throttle,
    pub(crate) scrub_throttle: Throttle,
}

#[derive(Debug, Clone, Copy)]
enum Lease {
    /// No heartbeat answered yet.
    None,
    Until(std::time::Instant),
    /// The control plane grants no leases (older control plane).
    Forever,
}

/// What a request needs this node to be in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The head (client writes).
    Head,
    /// Any member, serving or syncing (forwarded writes, resync copies).
    Replica,
    /// A serving member (reads).
    Serving,
}

/// Counts a mutation in flight for its table version until dropped.
struct InFlight<'a> {
    node: &'a Node,
    version: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.node.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.version);
            }
        }
    }
}

impl Node {
    pub fn open(id: String, store: ChunkStore, key: CapabilityKey, rates: Rates) -> Arc<Node> {
        Arc::new(Node {
            id,
            store: Arc::new(store),
            key,
            chains: RwLock::new(ChainTable::default()),
            peers: NodePeers::default(),
            service_stats: Default::default(),
            order: (0..1024).map(|_| tokio::sync::Mutex::new(())).collect(),
            lease: std::sync::Mutex::new(Lease::None),
            wake: tokio::sync::Notify::new(),
            inflight: std::sync::Mutex::new(HashMap::new()),
            sync: Default::default(),
            scrub: Default::default(),
            rates,
            io_throttle: Throttle::new(rates.max_bandwidth),
            repair_throttle: Throttle::new(rates.repair),
            scrub_throttle: Throttle::new(rates.scrub),
        })
    }

    /// Takes a newer table and starts the resyncs it asks of this node.
    pub async fn set_chain_table(self: &Arc<Self>, table: ChainTable) {
        {
            let mut current = self.chains.write().await;
            if table.version <= current.version {
                return;
            }
            tracing::info!(
                version = table.version,
                chains = table.chains.len(),
                "chain table updated"
            );
            *current = table.clone();
        }
        self.start_resyncs(&table);
    }

    /// Extends the lease from a heartbeat sent at `sent` and answered.
    pub fn renew_lease(&self, sent: std::time::Instant, lease_ms: u64) {
        let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        *l = if lease_ms == 0 {
            Lease::Forever
        } else {
            Lease::Until(sent + Duration::from_millis(lease_ms))
        };
    }

    fn leased(&self) -> bool {
        match *self.lease.lock().unwrap_or_else(|p| p.into_inner()) {
            Lease::None => false,
            Lease::Forever => true,
            Lease::Until(t) => std::time::Instant::now() < t,
        }
    }

    /// Capability nodes present to each other for cluster-internal calls.
    pub(crate) fn cluster_cap(&self, fs: &str) -> Capability {
        self.key.issue(fs, ANY_INODE, ADMIN | READ, now() + 300)
    }

    /// The oldest table version with mutations still in flight.
    pub(crate) fn oldest_inflight(&self) -> Option<u64> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .min()
            .copied()
    }

    fn begin_mutation(&self, version: u64) -> InFlight<'_> {
        *self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(version)
            .or_default() += 1;
        InFlight {
            node: self,
            version,
        }
    }

    /// Applies a heartbeat reply: the chain table, and deleted file systems.
    pub async fn apply(self: &Arc<Self>, reply: HeartbeatReply) {
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
            chain_bytes: self.scrub.chain_bytes(),
            syncs: self.sync.reports(),
            scrub: self.scrub.report(),
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

    /// Checks the routing of a chunk request: the lease, the table
    /// version, and this node's role in the chain. Returns the addresses a
    /// head forwards writes to (the other serving members and the syncing
    /// ones).
    pub(crate) async fn route(
        &self,
        chain: ChainRef,
        role: Role,
    ) -> Result<Vec<String>, NodeError> {
        if !self.leased() {
            return Err(NodeError::NoLease);
        }
        let table = self.chains.read().await;
        if chain.version != table.version {
            if chain.version > table.version {
                // The client saw a newer table than ours: fetch it now
                // rather than at the next heartbeat.
                self.wake.notify_one();
            }
            return Err(NodeError::StaleChainTable {
                current: table.version,
            });
        }
        let c = table.chain(chain.id).ok_or(NodeError::NotMember)?;
        let pos = c.members.iter().position(|m| m.id == self.id);
        let syncing = c.syncing.iter().any(|s| s.node.id == self.id);
        let allowed = match role {
            Role::Head => pos == Some(0),
            Role::Replica => pos.is_some() || syncing,
            Role::Serving => pos.is_some(),
        };
        if !allowed {
            return Err(NodeError::NotMember);
        }
        if role != Role::Head {
            return Ok(vec![]);
        }
        Ok(c.members
            .iter()
            .filter(|m| m.id != self.id)
            .map(|m| m.address.clone())
            .chain(c.syncing.iter().map(|s| s.node.address.clone()))
            .collect())
    }

    pub(crate) fn slot(&self, key: &cpfs_proto::node::ChunkKey) -> &tokio::sync::Mutex<()> {
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
        key: &cpfs_proto::node::ChunkKey,
        forwarded: bool,
        forward: impl FnOnce() -> NodeRequest,
        apply: impl FnOnce() -> Result<(), NodeError> + Send + 'static,
    ) -> Result<NodeResponse, NodeError> {
        if key.chain != chain.id {
            return Err(NodeError::Invalid(
                "chunk routed through another chain".into(),
            ));
        }
        let role = if forwarded { Role::Replica } else { Role::Head };
        let others = self.route(chain, role).await?;
        let _inflight = self.begin_mutation(chain.version);
        if forwarded {
            self.sync.touched(key);
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
        match &req {
            NodeRequest::Write { data, .. } => self.io_throttle.take(data.len() as u64).await,
            NodeRequest::Read { len, .. } => self.io_throttle.take(*len).await,
            _ => {}
        }
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
                if len > cpfs_proto::layout::MAX_CHUNK_SIZE {
                    return Err(NodeError::Invalid("read too large".into()));
                }
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.route(chain, Role::Serving).await?;
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
                self.route(chain, Role::Serving).await?;
                let store = self.store.clone();
                tracing::info!(fs = %key.fs, inode = key.inode, chunk = key.index, offset, len = data.len(), "repairing a copy");
                // Only blocks still bad are rewritten: one written since the
                // damage was seen is newer than the good copy.
                blocking(move || store.repair_blocks(&key, offset, &data)).await?;
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
            NodeRequest::SyncBegin { cap, chain } => {
                self.check_cluster_cap(&cap, "", t)?;
                self.route(chain, Role::Replica).await?;
                self.sync_begin(chain.id).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::SyncDigest { cap, chain, key } => {
                self.check_cluster_cap(&cap, &key.fs, t)?;
                self.route(chain, Role::Replica).await?;
                // The head holds this chunk: keep it whether or not it is
                // sent (an identical copy is not).
                self.sync.touched(&key);
                let store = self.store.clone();
                Ok(NodeResponse::Digest(
                    blocking(move || store.digest(&key)).await?,
                ))
            }
            NodeRequest::SyncPut {
                cap,
                chain,
                key,
                raw,
            } => {
                self.check_cluster_cap(&cap, &key.fs, t)?;
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.route(chain, Role::Replica).await?;
                self.sync.touched(&key);
                let store = self.store.clone();
                blocking(move || store.put_raw(&key, raw.as_deref())).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::ReadBlock {
                cap,
                chain,
                key,
                block,
            } => {
                self.check_cluster_cap(&cap, &key.fs, t)?;
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.route(chain, Role::Serving).await?;
                let store = self.store.clone();
                Ok(NodeResponse::Block(
                    blocking(move || store.read_block(&key, block)).await?,
                ))
            }
            NodeRequest::SyncEnd { cap, chain } => {
                self.check_cluster_cap(&cap, "", t)?;
                self.route(chain, Role::Replica).await?;
                self.sync_end(chain.id).await?;
                Ok(NodeResponse::Done)
            }
        }
    }
}

impl Node {
    fn check_cluster_cap(&self, cap: &Capability, fs: &str, t: i64) -> Result<(), NodeError> {
        if self.key.allows(cap, fs, ANY_INODE, ADMIN, t) {
            Ok(())
        } else {
            Err(NodeError::BadCapability)
        }
    }
}
