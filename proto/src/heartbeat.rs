//! The node ↔ control plane exchange: a node reports itself and its usage
//! every heartbeat; the reply carries the chain table, dropped file systems
//! and the node's lease. Sent as JSON over HTTP to the gateway's internal
//! route, authenticated by the cluster token.

use serde::{Deserialize, Serialize};

use crate::chains::ChainTable;
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
}
