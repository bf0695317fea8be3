//! The node ↔ control plane exchange: a node reports itself and its usage
//! every heartbeat; the reply carries the chain table, dropped file systems
//! and the node's lease. Sent as JSON over HTTP to the gateway's internal
//! route, authenticated by the cluster token.

use serde::{Deserialize, Serialize};

use crate::chains::{ChainTable, NodeAddr};
use crate::node::NodeStats;

/// Header carrying the cluster token on node → control plane calls.
pub const TOKEN_HEADER: &str = "x-cpfs-cluster-token";
pub const HEARTBEAT_PATH: &str = "/internal/v1/nodes/heartbeat";

/// What a node tells the control plane on every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub capacity_bytes: u64,
    pub stats: NodeStats,
    /// Ids of the peers (see [`HeartbeatReply::peers`]) this node could not
    /// reach on its data address at its last probe. A node cut off from its
    /// clients still heartbeats; its peers' reports are how the control
    /// plane learns to replace it.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub chain_table: ChainTable,
    /// File systems deleted recently: a node drops whatever it holds of them.
    #[serde(default)]
    pub dropped: Vec<String>,
    /// How long after sending this heartbeat the node may serve (0: no
    /// lease). Shorter than the control plane's failure timeout, so a node
    /// cut off from it stops serving before another takes its place.
    #[serde(default)]
    pub lease_ms: u64,
    /// Per file system, the time (unix ms) before which every capability
    /// was issued under a grant that no longer holds (a mount target or
    /// rule changed, the file system stopped): a node refuses them, and
    /// clients renew theirs under the new grant.
    #[serde(default)]
    pub revoked: Vec<Revocation>,
    /// File systems whose nodes store more than their capacity (per copy):
    /// a chain head refuses client writes that would store more of them
    /// (`NoSpace`). The whole list, replacing the last one; `None` when
    /// the control plane could not tell (the node keeps the last list).
    #[serde(default)]
    pub full: Option<Vec<String>>,
    /// The other data nodes, which this node probes and reports on
    /// (`Heartbeat::unreachable`): every registered one, not only those of
    /// its chains, so a node that left its chains for being unreachable is
    /// still watched and not placed again while it stays so.
    #[serde(default)]
    pub peers: Vec<NodeAddr>,
    /// This node's share of each limited file system's bandwidth and IOPS:
    /// the whole list, replacing the last one (a file system not in it is
    /// not limited here); `None` when the control plane could not tell
    /// (the node keeps the last list).
    #[serde(default)]
    pub qos: Option<Vec<QosShare>>,
}

/// What one node may serve of one file system per second: client bytes
/// (reads and writes together, a write counted by its head only), reads
/// and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QosShare {
    pub fs: String,
    pub bytes_per_sec: f64,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub fs: String,
    pub before_ms: i64,
}

/// Where a node asks which chains the files of its old (format 1) chunk
/// files are striped over, to migrate them to chain-scoped names.
pub const CHUNK_LAYOUTS_PATH: &str = "/internal/v1/nodes/chunk-layouts";
/// Inodes asked about in one request.
pub const MAX_LAYOUT_INODES: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkLayoutsRequest {
    pub fs: String,
    pub inodes: Vec<u64>,
}

/// The chains of each inode the metadata service knows; an inode it does
/// not know (removed since) is absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkLayoutsReply {
    pub chains: std::collections::BTreeMap<u64, Vec<u32>>,
}

/// Where a metadata server reports itself and learns which file systems it
/// owns.
pub const META_HEARTBEAT_PATH: &str = "/internal/v1/meta/heartbeat";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaHeartbeat {
    pub id: String,
    /// Where clients reach it (host:port).
    pub address: String,
    /// Its operation counters and latencies, for `/metrics`.
    #[serde(default)]
    pub telemetry: crate::telemetry::MetaTelemetry,
}

/// A file system a metadata server owns, and the owner's epoch (checked in
/// every commit of its journal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub fs: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaHeartbeatReply {
    pub owned: Vec<Owned>,
    /// How long after sending the heartbeat the server may serve them:
    /// shorter than the failure timeout after which they move, so a server
    /// cut off from the control plane stops before another one starts.
    pub lease_ms: u64,
}
