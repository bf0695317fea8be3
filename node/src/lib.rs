//! The data node (`cpfs node`): chunks on disk, checksummed per 4 KiB
//! block, served over the node protocol; chain replication as a head;
//! resync, scrub and collection in the background.
//!
//! - [`config`]: settings, the node id and the data-directory lock.
//! - [`chunkstore`]: chunks on a node's disk.
//! - [`server`]: the node itself: leases, routing, ordering, dispatch.
//! - [`heartbeat`]: reports to the control plane, takes the chain table.
//! - [`resync`]: filling a new or returning chain member from the head.
//! - [`scrub`]: background verification, repair, census and collection.
//! - [`throttle`]: byte-rate limits (client I/O, repair, scrub).

mod blocking;
pub mod chunkstore;
pub mod config;
pub mod heartbeat;
pub mod resync;
pub mod scrub;
pub mod server;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use cpfs_proto::capability::CapabilityKey;
use tokio::net::TcpListener;

pub use config::{node_id, NodeConfig, Rates};
pub use server::Node;

use chunkstore::ChunkStore;
use heartbeat::{HeartbeatError, Heartbeater};

/// Runs a node until one of its tasks ends (which is an error: each runs
/// for the life of the process).
pub async fn run(cfg: NodeConfig) -> Result<(), String> {
    let _lock = config::lock_data_dir(&cfg.data_dir).await?;
    let id = node_id(&cfg.data_dir)
        .map_err(|e| format!("node id in {}: {e}", cfg.data_dir.display()))?;
    let store = ChunkStore::open(&cfg.data_dir)
        .map_err(|e| format!("chunk store in {}: {e}", cfg.data_dir.display()))?;
    let node = Node::open(
        id.clone(),
        store,
        CapabilityKey::from_cluster_token(&cfg.cluster_token),
        cfg.rates,
    );
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    tracing::info!(node_id = %id, listen = %bound, "data node serving");

    // Register before serving traffic; a wrong token is fatal, an
    // unreachable control plane is retried.
    let heartbeater = Heartbeater::new(&cfg, &advertise)?;
    loop {
        match heartbeater.round(&node).await {
            Ok(()) => break,
            Err(e @ HeartbeatError::Refused) => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "control plane not reachable yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::info!(node_id = %id, "registered with the control plane");

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(heartbeater.run(node.clone(), cfg.heartbeat));
    tasks.spawn(scrub::census_loop(node.clone()));
    tasks.spawn(scrub::scrub_loop(node.clone()));
    tasks.spawn(server::serve(node, listener));
    match tasks.join_next().await {
        Some(Err(e)) => Err(format!("a node task failed: {e}")),
        _ => Err("a node task ended".into()),
    }
}

/// A node with no control plane, for tests and tools that drive it
/// directly: the caller installs chain tables and grants leases.
pub fn open_detached(
    id: &str,
    dir: &std::path::Path,
    key: CapabilityKey,
    rates: Rates,
) -> Result<Arc<Node>, String> {
    let store =
        ChunkStore::open(dir).map_err(|e| format!("chunk store in {}: {e}", dir.display()))?;
    Ok(Node::open(id.to_string(), store, key, rates))
}
