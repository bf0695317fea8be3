//! The data node (`cpfs node`): serves chunks over the binary protocol,
//! orders and forwards writes as a chain head, and keeps in touch with the
//! control plane (registration and heartbeats carry usage out and the
//! chain table back).
//!
//! [`Node`] puts the parts together: the shared [`NodeState`], the resync
//! sessions and member bookkeeping ([`Resync`]) and the scrubber's census
//! and counters ([`Scrub`]). Requests are dispatched here; resync and scrub
//! only see the state, never this module.

use std::sync::Arc;

use cpfs_proto::capability::{CapabilityKey, NodeAuth, ADMIN, READ, WRITE};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::frame::{WireError, MAX_FRAME};
use cpfs_proto::heartbeat::HeartbeatReply;
use cpfs_proto::layout::BLOCK;
use cpfs_proto::node::{
    check_range, ChainRef, ChunkKey, NodeError, NodeRequest, NodeResponse, NodeStats,
    MAX_DROPPED_INODES, MAX_LISTED_CHUNKS,
};
use cpfs_proto::rpc::{self, ServiceLimits, ServiceStats};
use cpfs_runtime::Shutdown;
use tokio::net::TcpListener;

use crate::blocking::blocking;
use crate::chunkstore::ChunkStore;
use crate::config::Rates;
use crate::peers::PeerWatch;
use crate::resync::Resync;
use crate::scrub::Scrub;
use crate::state::{NodeState, Role};
use crate::throttle::Throttle;

mod write_batch;

/// Serves the node protocol on `listener` until the task is dropped.
/// What a replica's answer to a forwarded change means for the head.
fn replica_answer(addr: &str, answer: Result<NodeResponse, WireError>) -> Result<(), NodeError> {
    match answer {
        Ok(NodeResponse::Done) => Ok(()),
        Ok(NodeResponse::Failed(e)) => {
            tracing::warn!(peer = %addr, error = %e, "replica refused a forwarded write");
            Err(e)
        }
        Ok(other) => Err(NodeError::Io(format!("{addr} answered {other:?}"))),
        Err(e) => Err(NodeError::Io(format!("replica {addr}: {e}"))),
    }
}

pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    serve_until(node, listener, std::future::pending()).await
}

/// As [`serve`], draining when `stop` resolves: requests in flight are
/// answered, no new ones are read, then connections close.
pub async fn serve_until(
    node: Arc<Node>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let limits = ServiceLimits {
        name: "node",
        max_request: MAX_FRAME,
        max_reply: MAX_FRAME,
        // Each request may hold a chunk's worth of memory; a connection
        // gets a bounded share of the node.
        max_in_flight: 256,
    };
    let stats = node.service_stats.clone();
    rpc::serve_until(
        listener,
        limits,
        stats,
        move |_peer, req: NodeRequest| node.clone().handle(req),
        stop,
    )
    .await
}

/// The request kinds a node counts and times (`NodeStats::ops`).
pub const NODE_OP_NAMES: [&str; 6] = [
    "read",
    "write",
    "forwarded_write",
    "truncate",
    "fsync",
    "drop_inode",
];

/// A request's index in [`NODE_OP_NAMES`]; `None` for the cluster's own
/// requests (resync, scrub, stats), which have counters of their own.
fn op_kind(req: &NodeRequest) -> Option<usize> {
    match req {
        NodeRequest::Read { .. } => Some(0),
        NodeRequest::Write {
            forwarded: None, ..
        } => Some(1),
        NodeRequest::Write { .. } => Some(2),
        NodeRequest::WriteBatch {
            forwarded: None, ..
        } => Some(1),
        NodeRequest::WriteBatch { .. } => Some(2),
        NodeRequest::Truncate { .. } => Some(3),
        NodeRequest::Fsync { .. } => Some(4),
        NodeRequest::DropInode { .. } | NodeRequest::DropInodes { .. } => Some(5),
        _ => None,
    }
}

/// A client's read or write, as (file system, is a write, bytes), counted
/// in the file system's served I/O; a forwarded write was counted by its
/// head.
fn served_io(req: &NodeRequest) -> Option<(String, bool, u64)> {
    match req {
        NodeRequest::Read { key, len, .. } => Some((key.fs.clone(), false, *len)),
        NodeRequest::Write {
            key,
            data,
            forwarded: None,
            ..
        } => Some((key.fs.clone(), true, data.len() as u64)),
        NodeRequest::WriteBatch {
            writes,
            forwarded: None,
            ..
        } => writes.first().map(|w| {
            let bytes = writes.iter().map(|w| w.data.len() as u64).sum();
            (w.key.fs.clone(), true, bytes)
        }),
        _ => None,
    }
}

/// How many client operations a request is: a batch counts as its writes,
/// so the operation counters mean the same with and without write-behind.
fn op_count(req: &NodeRequest) -> usize {
    match req {
        NodeRequest::WriteBatch { writes, .. } => writes.len().max(1),
        _ => 1,
    }
}

/// A data node: what its parts share, its resyncs and its scrubber, and
/// the request handler over them.
pub struct Node {
    state: Arc<NodeState>,
    resync: Resync,
    scrub: Scrub,
    peer_watch: PeerWatch,
    /// Counters of the node protocol's service shell.
    pub service_stats: Arc<ServiceStats>,
    io_throttle: Throttle,
    /// Client and chain requests by kind, with their latencies.
    ops: cpfs_proto::telemetry::OpTable,
    /// Each limited file system's share of its tier on this node.
    qos: crate::qos::Qos,
}

impl Node {
    pub fn open(id: String, store: ChunkStore, key: CapabilityKey, rates: Rates) -> Arc<Node> {
        Arc::new(Node {
            state: Arc::new(NodeState::new(id, store, key, rates)),
            resync: Resync::default(),
            scrub: Scrub::default(),
            peer_watch: PeerWatch::default(),
            service_stats: Default::default(),
            io_throttle: Throttle::new(rates.max_bandwidth),
            ops: cpfs_proto::telemetry::OpTable::new(&NODE_OP_NAMES),
            qos: Default::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Runs the resync sessions this node heads on its process's
    /// supervisor (without one they are plain tasks).
    pub fn supervise_resyncs(&self, spawner: cpfs_runtime::Spawner) {
        self.resync.attach(spawner);
    }

    /// The version of the chain table this node routes with.
    pub async fn chain_version(&self) -> u64 {
        self.state.chains.read().await.version
    }

    /// Notified when the heartbeat should not wait for its interval (a
    /// request named a newer table, a resync finished).
    pub(crate) fn wake(&self) -> &tokio::sync::Notify {
        &self.state.wake
    }

    /// Takes a newer table and starts the resyncs it asks of this node.
    pub async fn set_chain_table(&self, table: ChainTable) {
        {
            let mut current = self.state.chains.write().await;
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
        self.resync.start(&self.state, &table);
    }

    /// Extends the lease from a heartbeat sent at `sent` and answered.
    pub fn renew_lease(&self, sent: std::time::Instant, lease_ms: u64) {
        self.state.renew_lease(sent, lease_ms);
    }

    /// Applies a heartbeat reply: the chain table, revocations and
    /// deleted file systems.
    pub async fn apply(&self, reply: HeartbeatReply) {
        self.state.revoke(&reply.revoked);
        self.state.set_full(reply.full);
        if let Some(shares) = &reply.qos {
            self.qos.apply(shares);
        }
        // None: the control plane could not list them this time (or is
        // older); the last ones are still the best guess.
        if !reply.peers.is_empty() {
            self.peer_watch.set_peers(reply.peers);
        }
        self.set_chain_table(reply.chain_table).await;
        let held: Vec<String> = self.state.store.usage().into_iter().map(|u| u.fs).collect();
        for fs in reply.dropped.into_iter().filter(|f| held.contains(f)) {
            let store = self.state.store.clone();
            let name = fs.clone();
            match blocking(move || store.drop_fs(&name)).await {
                Ok(()) => tracing::info!(fs = %fs, "deleted file system dropped"),
                Err(e) => {
                    tracing::warn!(fs = %fs, error = %e, "could not drop a deleted file system")
                }
            }
        }
    }

    /// Probes the peers the control plane named; a change in who is
    /// unreachable is reported at once (the heartbeat is woken).
    pub async fn probe_peers(&self) -> Result<(), String> {
        if self.peer_watch.probe(&self.state).await {
            self.state.wake.notify_one();
        }
        Ok(())
    }

    /// Ids of the peers that missed the last probe.
    pub fn unreachable_peers(&self) -> Vec<String> {
        self.peer_watch.unreachable()
    }

    /// One census pass: bytes per chain, and the collection of chunks of
    /// chains this node left (see [`crate::scrub`]).
    pub async fn census(&self) -> Result<(), String> {
        self.scrub.census(&self.state).await
    }

    /// One scrub pass over every chunk, ending early once `stop` is
    /// requested.
    pub async fn scrub_pass(&self, stop: &Shutdown) -> Result<(), String> {
        self.scrub.pass(&self.state, stop).await
    }

    pub fn stats(&self, chain_version: u64) -> NodeStats {
        let store = &self.state.store;
        NodeStats {
            chain_bytes: self.scrub.chain_bytes(),
            syncs: self.resync.reports(),
            scrub: self.scrub.report(),
            node_id: self.state.id.clone(),
            chain_version,
            checksum_errors: store
                .checksum_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            repairs: store.repairs.load(std::sync::atomic::Ordering::Relaxed),
            file_systems: store
                .usage()
                .into_iter()
                .map(|mut u| {
                    u.qos_wait_us = self.qos.waited_us(&u.fs);
                    u
                })
                .collect(),
            ops: self.ops.snapshot(),
        }
    }

    /// For a file system over its capacity: refuses a write that would
    /// store blocks the chunk does not have yet (rewriting stored bytes
    /// adds nothing, so it goes on).
    async fn refuse_growth(&self, key: &ChunkKey, offset: u64, len: u64) -> Result<(), NodeError> {
        let store = self.state.store.clone();
        let k = key.clone();
        let held = blocking(move || store.records(&k)).await?.unwrap_or(0);
        if (offset + len).div_ceil(BLOCK) > held {
            tracing::debug!(fs = %key.fs, "write refused: the file system is over its capacity");
            return Err(NodeError::NoSpace);
        }
        Ok(())
    }

    /// Sends `req` to every address and succeeds when all succeed.
    async fn forward(&self, others: Vec<String>, req: NodeRequest) -> Result<(), NodeError> {
        // One other copy (the common case) is called from this task: a task
        // of its own would be a hand-off between threads for nothing.
        if let [addr] = others.as_slice() {
            let peer = self.state.peers.get(addr);
            return replica_answer(addr, peer.call(req).await);
        }
        let mut set = tokio::task::JoinSet::new();
        for addr in others {
            let peer = self.state.peers.get(&addr);
            let req = req.clone();
            set.spawn(async move {
                let answer = peer.call(req).await;
                replica_answer(&addr, answer)
            });
        }
        let mut result = Ok(());
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(NodeError::Io(e.to_string())),
            }
        }
        result
    }

    /// A change to a chunk. A forwarded one is applied here only, and only
    /// on a node's proof: a client that marked its own write as forwarded
    /// would otherwise change one copy behind the head's back. At the
    /// head, the chunk's ordering slot is held while the change is applied
    /// locally and on every other member, so all copies see the same order;
    /// it succeeds when every member has it.
    ///
    /// `now` applies the change on this task if it can without waiting for
    /// the disk (false: it cannot), `apply` on the blocking pool otherwise.
    async fn mutate(
        &self,
        chain: ChainRef,
        key: &cpfs_proto::node::ChunkKey,
        forwarded: Option<NodeAuth>,
        forward: impl FnOnce() -> NodeRequest,
        now: impl FnOnce() -> Result<bool, NodeError>,
        apply: impl FnOnce() -> Result<(), NodeError> + Send + 'static,
    ) -> Result<NodeResponse, NodeError> {
        if key.chain != chain.id {
            return Err(NodeError::Invalid(
                "chunk routed through another chain".into(),
            ));
        }
        if forwarded
            .as_ref()
            .is_some_and(|a| !self.state.proves_node(a))
        {
            return Err(NodeError::BadCapability);
        }
        let (others, _inflight) = self
            .state
            .enter_mutation(chain, forwarded.is_some())
            .await?;
        let local = async move {
            match now()? {
                true => Ok(()),
                false => blocking(apply).await,
            }
        };
        if forwarded.is_some() {
            self.resync.touched(key);
            local.await?;
            return Ok(NodeResponse::Done);
        }
        let _slot = self.state.slot(key).lock().await;
        let (local, remote) = tokio::join!(local, self.forward(others, forward()));
        local?;
        remote?;
        Ok(NodeResponse::Done)
    }

    pub async fn handle(self: Arc<Self>, req: NodeRequest) -> NodeResponse {
        let kind = op_kind(&req);
        let count = op_count(&req);
        let served = served_io(&req);
        let started = std::time::Instant::now();
        let outcome = self.dispatch(req).await;
        let took = started.elapsed();
        if let Some(kind) = kind {
            for _ in 0..count {
                self.ops.record(kind, took, outcome.is_ok());
            }
        }
        if let (Some((fs, write, bytes)), true) = (served, outcome.is_ok()) {
            self.state.store.record_served(&fs, write, bytes, took);
        }
        match outcome {
            Ok(r) => r,
            Err(e) => NodeResponse::Failed(e),
        }
    }

    async fn dispatch(&self, req: NodeRequest) -> Result<NodeResponse, NodeError> {
        match req {
            NodeRequest::WriteBatch {
                chain,
                writes,
                forwarded,
            } => self.write_batch(chain, writes, forwarded).await,
            NodeRequest::Write {
                cap,
                chain,
                key,
                offset,
                data,
                forwarded,
            } => {
                if !self.state.allows(&cap, &key.fs, key.inode, WRITE) {
                    return Err(NodeError::BadCapability);
                }
                check_range(offset, data.len() as u64)?;
                // The head decides for the chain: replicas take what it
                // forwards, so the copies never disagree.
                if forwarded.is_none() && self.state.is_full(&key.fs) {
                    self.refuse_growth(&key, offset, data.len() as u64).await?;
                }
                // The file system's share of its tier, charged by the head
                // only (its replicas' copies are the service's cost).
                if forwarded.is_none() {
                    self.qos.admit(&key.fs, true, data.len() as u64).await;
                }
                // Charged once the request is known to be genuine and
                // bounded: a forged one costs the other clients nothing.
                self.io_throttle.take(data.len() as u64).await;
                let store = self.state.store.clone();
                let auth = self.state.node_auth();
                // Shared, so a replica (which forwards nothing) copies no data.
                let data = Arc::new(data);
                let (k, d) = (key.clone(), data.clone());
                let forward = move || NodeRequest::Write {
                    cap,
                    chain,
                    key: k,
                    offset,
                    data: d.to_vec(),
                    forwarded: Some(auth),
                };
                let (cached, k, d) = (store.clone(), key.clone(), data.clone());
                let now = move || cached.write_cached(&k, offset, &d);
                self.mutate(chain, &key.clone(), forwarded, forward, now, move || {
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
                if !self.state.allows(&cap, &key.fs, key.inode, WRITE) {
                    return Err(NodeError::BadCapability);
                }
                check_range(len, 0)?;
                let store = self.state.store.clone();
                let auth = self.state.node_auth();
                let k = key.clone();
                let forward = move || NodeRequest::Truncate {
                    cap,
                    chain,
                    key: k,
                    len,
                    forwarded: Some(auth),
                };
                let now = || Ok(false);
                self.mutate(chain, &key.clone(), forwarded, forward, now, move || {
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
                if !self.state.allows(&cap, &key.fs, key.inode, READ) {
                    return Err(NodeError::BadCapability);
                }
                check_range(offset, len)?;
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.state.route(chain, Role::Serving).await?;
                // After the checks, and by the validated length.
                self.qos.admit(&key.fs, false, len).await;
                self.io_throttle.take(len).await;
                let store = self.state.store.clone();
                let k = key.clone();
                let read = match store.read_cached(&k, offset, len) {
                    Ok(Some(data)) => Ok(data),
                    Ok(None) => blocking(move || store.read(&k, offset, len)).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(data) => Ok(NodeResponse::Data(data.into())),
                    Err(NodeError::Checksum) => {
                        self.heal(key);
                        Err(NodeError::Checksum)
                    }
                    Err(e) => Err(e),
                }
            }
            NodeRequest::Repair {
                cap,
                chain,
                key,
                offset,
                data,
            } => {
                // The data comes from the client: only one that may write
                // the file may put it into a copy (a reader's failed read
                // is healed by the node itself, see `heal`).
                if !self.state.allows(&cap, &key.fs, key.inode, WRITE) {
                    return Err(NodeError::BadCapability);
                }
                check_range(offset, data.len() as u64)?;
                self.state.route(chain, Role::Serving).await?;
                let store = self.state.store.clone();
                tracing::info!(fs = %key.fs, inode = key.inode, chunk = key.index, offset, len = data.len(), "repairing a copy");
                // Only blocks still bad are rewritten: one written since the
                // damage was seen is newer than the good copy.
                blocking(move || store.repair_blocks(&key, offset, &data)).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::Fsync { cap, fs, inode } => {
                // Any open file may be synced, whether opened to read or write.
                if !self.state.allows(&cap, &fs, inode, READ)
                    && !self.state.allows(&cap, &fs, inode, WRITE)
                {
                    return Err(NodeError::BadCapability);
                }
                let store = self.state.store.clone();
                blocking(move || store.fsync_inode(&fs, inode)).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::DropInode { cap, fs, inode } => {
                self.drop_inodes(cap, fs, vec![inode]).await
            }
            NodeRequest::DropInodes { cap, fs, inodes } => self.drop_inodes(cap, fs, inodes).await,
            NodeRequest::Stats { auth } => {
                // It names every tenant's file systems: the cluster's only.
                self.check_node(&auth)?;
                let v = self.state.chains.read().await.version;
                Ok(NodeResponse::Stats(self.stats(v)))
            }
            NodeRequest::ListChunks {
                cap,
                chain,
                fs,
                inode,
                from,
            } => {
                if !self.state.allows(&cap, &fs, inode, WRITE) {
                    return Err(NodeError::BadCapability);
                }
                self.state.route(chain, Role::Serving).await?;
                let store = self.state.store.clone();
                Ok(NodeResponse::Chunks(
                    blocking(move || {
                        store.list_inode(&fs, inode, chain.id, from, MAX_LISTED_CHUNKS)
                    })
                    .await?,
                ))
            }
            NodeRequest::SyncBegin { auth, chain } => {
                self.check_node(&auth)?;
                self.state.route(chain, Role::Replica).await?;
                self.resync.begin(&self.state, chain.id).await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::SyncDigest { auth, chain, key } => {
                self.check_node(&auth)?;
                self.state.route(chain, Role::Replica).await?;
                // The head holds this chunk: keep it whether or not it is
                // sent (an identical copy is not).
                self.resync.touched(&key);
                let store = self.state.store.clone();
                Ok(NodeResponse::Digest(
                    blocking(move || store.digest(&key)).await?,
                ))
            }
            NodeRequest::SyncPut {
                auth,
                chain,
                key,
                first,
                raw,
                last,
            } => {
                self.check_node(&auth)?;
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.state.route(chain, Role::Replica).await?;
                self.resync.touched(&key);
                let store = self.state.store.clone();
                blocking(move || match raw {
                    Some(raw) => store.put_raw(&key, first, &raw, last),
                    None => store.remove_chunk(&key),
                })
                .await?;
                Ok(NodeResponse::Done)
            }
            NodeRequest::ReadBlock {
                auth,
                chain,
                key,
                block,
            } => {
                self.check_node(&auth)?;
                if key.chain != chain.id {
                    return Err(NodeError::Invalid(
                        "chunk routed through another chain".into(),
                    ));
                }
                self.state.route(chain, Role::Serving).await?;
                let store = self.state.store.clone();
                Ok(NodeResponse::Block(
                    blocking(move || store.read_block(&key, block)).await?,
                ))
            }
            NodeRequest::SyncEnd { auth, chain } => {
                self.check_node(&auth)?;
                self.state.route(chain, Role::Replica).await?;
                self.resync.end(&self.state, chain.id).await?;
                Ok(NodeResponse::Done)
            }
        }
    }
}

impl Node {
    /// Cluster-internal requests need a node's proof; no client
    /// capability, however wide, stands in for one.
    /// Removes every chunk of each of `inodes` (deleted files), at most
    /// [`MAX_DROPPED_INODES`], all named by an administrative capability.
    async fn drop_inodes(
        &self,
        cap: cpfs_proto::capability::Capability,
        fs: String,
        inodes: Vec<u64>,
    ) -> Result<NodeResponse, NodeError> {
        if inodes.len() > MAX_DROPPED_INODES {
            return Err(NodeError::Invalid(format!(
                "{} inodes named; at most {MAX_DROPPED_INODES} per request",
                inodes.len()
            )));
        }
        if !inodes
            .iter()
            .all(|&inode| self.state.allows(&cap, &fs, inode, ADMIN))
        {
            return Err(NodeError::BadCapability);
        }
        let store = self.state.store.clone();
        blocking(move || {
            inodes
                .iter()
                .try_for_each(|&inode| store.drop_inode(&fs, inode))
        })
        .await?;
        Ok(NodeResponse::Done)
    }

    fn check_node(&self, auth: &NodeAuth) -> Result<(), NodeError> {
        if self.state.proves_node(auth) {
            Ok(())
        } else {
            Err(NodeError::BadCapability)
        }
    }

    /// Rewrites the bad blocks of this node's copy of `key` from another
    /// member, in the background, after a read found one: the client that
    /// read it may hold only read rights, so it cannot (see `Repair`). One
    /// repair per chunk at a time, however many reads fail on it.
    fn heal(&self, key: cpfs_proto::node::ChunkKey) {
        {
            let mut healing = self.state.healing.lock().unwrap_or_else(|p| p.into_inner());
            if !healing.insert(key.clone()) {
                return;
            }
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            let store = state.store.clone();
            let k = key.clone();
            let bad = blocking(move || store.bad_blocks(&k))
                .await
                .unwrap_or_default();
            for b in bad {
                crate::scrub::repair_block(&state, &key, b).await;
            }
            state
                .healing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}
