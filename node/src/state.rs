//! What every part of a node shares: its store, its place in the chains
//! (the table, the lease, the routing check), the per-chunk ordering slots,
//! the count of mutations in flight, its peers and its rate limits.
//!
//! The request handler ([`crate::server`]), resync ([`crate::resync`]) and
//! scrub ([`crate::scrub`]) all work on this state, and it knows none of
//! them, so the node's modules depend one way: state ← resync, scrub ←
//! server ← heartbeat ← the process (`lib.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpfs_proto::capability::{Capability, CapabilityKey, NodeAuth, NODE_AUTH_SECS};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::node::{ChainRef, ChunkKey, NodeError, NodePeers};
use tokio::sync::RwLock;

use crate::blocking::now;
use crate::chunkstore::ChunkStore;
use crate::config::Rates;
use crate::throttle::Throttle;

pub struct NodeState {
    pub(crate) id: String,
    pub(crate) store: Arc<ChunkStore>,
    pub(crate) key: CapabilityKey,
    pub(crate) chains: RwLock<ChainTable>,
    pub(crate) peers: NodePeers,
    /// Per-chunk ordering at the head: a write holds its chunk's slot while
    /// it is applied locally and on every other member, so all copies see
    /// writes to a chunk in the same order (resync copies take it too).
    order: Vec<tokio::sync::Mutex<()>>,
    /// Until when the node may serve (None: not leased yet, or no leases).
    lease: std::sync::Mutex<Lease>,
    /// Wakes the heartbeat loop early (a request named a newer table, a
    /// resync finished).
    pub(crate) wake: tokio::sync::Notify,
    /// Mutations in flight per chain-table version: a resync waits for
    /// those routed with an older table before it lists the chain.
    inflight: std::sync::Mutex<HashMap<u64, usize>>,
    pub(crate) repair_throttle: Throttle,
    pub(crate) scrub_throttle: Throttle,
    /// Per file system, the time (unix ms) before which its capabilities
    /// were revoked, as the control plane's heartbeat replies say.
    revoked: std::sync::RwLock<HashMap<String, i64>>,
    /// File systems whose nodes store more than their capacity, as the
    /// last heartbeat reply that knew said: client writes that would store
    /// more of them are refused.
    full: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Chunks a failed read made this node heal from another member, so
    /// many reads of one bad chunk start one repair.
    pub(crate) healing: std::sync::Mutex<std::collections::HashSet<ChunkKey>>,
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
pub(crate) struct InFlight<'a> {
    state: &'a NodeState,
    version: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self
            .state
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.version);
            }
        }
    }
}

impl NodeState {
    pub(crate) fn new(id: String, store: ChunkStore, key: CapabilityKey, rates: Rates) -> Self {
        NodeState {
            id,
            store: Arc::new(store),
            key,
            chains: RwLock::new(ChainTable::default()),
            peers: NodePeers::default(),
            order: (0..1024).map(|_| tokio::sync::Mutex::new(())).collect(),
            lease: std::sync::Mutex::new(Lease::None),
            wake: tokio::sync::Notify::new(),
            inflight: std::sync::Mutex::new(HashMap::new()),
            revoked: Default::default(),
            full: Default::default(),
            healing: Default::default(),
            repair_throttle: Throttle::new(rates.repair),
            scrub_throttle: Throttle::new(rates.scrub),
        }
    }

    /// Extends the lease from a heartbeat sent at `sent` and answered.
    pub(crate) fn renew_lease(&self, sent: std::time::Instant, lease_ms: u64) {
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

    /// The proof nodes present to each other for cluster-internal calls.
    pub(crate) fn node_auth(&self) -> NodeAuth {
        self.key.node_key().issue(now() + NODE_AUTH_SECS)
    }

    /// Whether `auth` proves a request comes from the cluster.
    pub(crate) fn proves_node(&self, auth: &NodeAuth) -> bool {
        self.key.node_key().allows(auth, now())
    }

    /// Whether a client's `cap` covers `(fs, inode, need)` now: genuine,
    /// unexpired, and issued after the file system's last revocation.
    pub(crate) fn allows(&self, cap: &Capability, fs: &str, inode: u64, need: u8) -> bool {
        self.key.allows(cap, fs, inode, need, now())
            && self
                .revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(fs)
                .is_none_or(|before| cap.issued_ms >= *before)
    }

    /// Takes the list of full file systems of a heartbeat reply (`None`:
    /// the control plane could not tell; the last list stands).
    pub(crate) fn set_full(&self, full: Option<Vec<String>>) {
        if let Some(full) = full {
            *self.full.write().unwrap_or_else(|p| p.into_inner()) = full.into_iter().collect();
        }
    }

    pub(crate) fn is_full(&self, fs: &str) -> bool {
        self.full
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fs)
    }

    /// Takes the revocations of a heartbeat reply (each only moves later).
    pub(crate) fn revoke(&self, revoked: &[cpfs_proto::heartbeat::Revocation]) {
        let mut map = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for r in revoked {
            let at = map.entry(r.fs.clone()).or_insert(i64::MIN);
            if r.before_ms > *at {
                tracing::info!(fs = %r.fs, before_ms = r.before_ms, "capabilities issued before this are revoked");
                *at = r.before_ms;
            }
        }
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

    pub(crate) fn begin_mutation(&self, version: u64) -> InFlight<'_> {
        *self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(version)
            .or_default() += 1;
        InFlight {
            state: self,
            version,
        }
    }

    /// Starts a change of `chain` here, as its head or (`forwarded`) as a
    /// replica: checks the routing ([`NodeState::route`]) and counts the
    /// change in flight until the guard drops. Returns where the head
    /// forwards it, and the guard.
    pub(crate) async fn enter_mutation(
        &self,
        chain: ChainRef,
        forwarded: bool,
    ) -> Result<(Vec<String>, InFlight<'_>), NodeError> {
        let role = if forwarded { Role::Replica } else { Role::Head };
        let others = self.route(chain, role).await?;
        Ok((others, self.begin_mutation(chain.version)))
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

    /// The ordering slot of a chunk (see `order`).
    pub(crate) fn slot(&self, key: &ChunkKey) -> &tokio::sync::Mutex<()> {
        &self.order[self.slot_index(key)]
    }

    /// Which ordering slot `key` shares; a request changing several chunks
    /// takes their slots in ascending order, so two never wait on each
    /// other in a cycle.
    pub(crate) fn slot_index(&self, key: &ChunkKey) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % self.order.len()
    }

    pub(crate) fn slot_at(&self, index: usize) -> &tokio::sync::Mutex<()> {
        &self.order[index]
    }
}
