//! The data node (`cpfs node`): chunks on disk, checksummed per 4 KiB
//! block, served over the node protocol; chain replication as a head;
//! resync, scrub and collection in the background.
//!
//! - [`config`]: settings, the node id and the data-directory lock.
//! - [`chunkstore`]: chunks on a node's disk.
//! - [`state`]: what the parts share: store, chain table, lease, routing,
//!   ordering slots, mutations in flight.
//! - [`resync`]: filling a new or returning chain member from the head.
//! - [`scrub`]: background verification, repair, census and collection.
//! - [`server`]: the node itself ([`Node`]: state, resync and scrub put
//!   together) and its request dispatch.
//! - [`heartbeat`]: reports to the control plane, takes the chain table.
//! - [`peers`]: probes the other nodes, so that one its clients cannot
//!   reach is reported.
//! - [`throttle`]: byte-rate limits (client I/O, repair, scrub).
//!
//! Modules depend one way: `state` ← `resync`, `scrub`, `peers` ← `server` ←
//! `heartbeat` ← this file, which runs the process on the shared
//! supervisor of `cpfs-runtime`.

mod blocking;
pub mod chunkstore;
pub mod config;
pub mod heartbeat;
pub mod peers;
pub mod qos;
pub mod resync;
pub mod scrub;
pub mod server;
pub mod state;
#[cfg(test)]
mod tests;
pub mod throttle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cpfs_proto::capability::CapabilityKey;
use cpfs_runtime::{retry, Shutdown, Supervisor};
use tokio::net::TcpListener;

pub use config::{node_id, NodeConfig, Rates};
pub use server::Node;

use chunkstore::ChunkStore;
use heartbeat::{HeartbeatError, Heartbeater};

/// How long a stopping node gives its tasks to finish: a census pass
/// takes well under it, and a scrub pass stops at its next chunk.
pub const GRACE: Duration = Duration::from_secs(5);
/// Pause between registration attempts while the control plane is not
/// reachable yet (first delay and cap of the shared retry policy: a
/// control plane starting up answers within a second or two).
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Runs a node until SIGTERM or Ctrl-C (then `Ok`, once its tasks have
/// stopped) or until one of its tasks ends, which is an error carrying
/// that task's reason: each runs for the life of the process.
pub async fn run(cfg: NodeConfig) -> Result<(), String> {
    let mut tasks = Supervisor::new(Arc::default());
    tasks.stop_on_signals();
    run_on(tasks, cfg).await
}

/// As [`run`], on a supervisor the caller made (and may stop through its
/// [`Supervisor::shutdown`] handle) instead of one stopped by signals.
pub async fn run_on(tasks: Supervisor, cfg: NodeConfig) -> Result<(), String> {
    run_with(tasks, cfg, |node, listener, shutdown| {
        server::serve_until(node, listener, async move { shutdown.requested().await })
    })
    .await
}

/// [`run_on`] with the listener's loop given, so a test can make it die.
async fn run_with<S, F>(mut tasks: Supervisor, cfg: NodeConfig, serve: S) -> Result<(), String>
where
    S: FnOnce(Arc<Node>, TcpListener, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // Held until every task has stopped, so a node started next on this
    // directory never overlaps one still stopping.
    let _lock = config::lock_data_dir(&cfg.data_dir).await?;
    let id = node_id(&cfg.data_dir)
        .map_err(|e| format!("node id in {}: {e}", cfg.data_dir.display()))?;
    let found = chunkstore::migrate::detect(&cfg.data_dir)
        .map_err(|e| format!("chunk store in {}: {e}", cfg.data_dir.display()))?;
    if found == chunkstore::migrate::Found::Format1 {
        tracing::warn!(data_dir = %cfg.data_dir.display(), "chunks of format 1 found; migrating them to chain-scoped names");
        let layouts = heartbeat::LayoutClient::new(&cfg)?;
        let migration = chunkstore::migrate::format_1_to_2(
            &cfg.data_dir,
            cpfs_proto::heartbeat::MAX_LAYOUT_INODES,
            |fs, inodes| layouts.chains(fs, inodes),
        );
        let shutdown = tasks.shutdown();
        let report = tokio::select! {
            r = migration => r.map_err(|e| format!("migrating chunk format 1: {e}"))?,
            _ = shutdown.requested() => return Ok(()),
        };
        tracing::info!(?report, "chunk format migrated");
    }
    let store = ChunkStore::open(&cfg.data_dir)
        .map_err(|e| format!("chunk store in {}: {e}", cfg.data_dir.display()))?;
    let node = Node::open(
        id.clone(),
        store,
        CapabilityKey::from_cluster_token(&cfg.cluster_token),
        cfg.rates,
    );
    node.supervise_resyncs(tasks.spawner());
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    tracing::info!(node_id = %id, listen = %bound, "data node serving");

    // Register before serving traffic; a wrong token is fatal, an
    // unreachable control plane is retried, a shutdown meanwhile ends the
    // node before it served anything.
    let heartbeater = Heartbeater::new(&cfg, &advertise)?;
    let shutdown = tasks.shutdown();
    tokio::select! {
        registered = register(&heartbeater, &node) => registered?,
        _ = shutdown.requested() => return Ok(()),
    }
    tracing::info!(node_id = %id, "registered with the control plane");

    let beating = node.clone();
    let interval = cfg.heartbeat;
    tasks.spawn("heartbeat", async move {
        heartbeater.run(beating, interval).await;
        Err("the heartbeat loop ended".into())
    });
    let probing = node.clone();
    tasks.every("peer probes", peers::PROBE_EVERY, move || {
        let node = probing.clone();
        async move { node.probe_peers().await }
    });
    let counting = node.clone();
    tasks.every("census", scrub::CENSUS_EVERY, move || {
        let node = counting.clone();
        async move { node.census().await }
    });
    // The first scrub waits an interval too, as it always has: a node
    // restarted often does not rescan its disk each time, and right after
    // a start the disk is busy with resyncs.
    let scrubbing = node.clone();
    let stop = tasks.shutdown();
    tasks.every_after("scrub", cfg.rates.scrub_interval, move || {
        let (node, stop) = (scrubbing.clone(), stop.clone());
        async move { node.scrub_pass(&stop).await }
    });
    // On shutdown the listener drains (requests in flight are answered)
    // within the grace period instead of being dropped mid-request.
    tasks.spawn_until("listener", move |shutdown| {
        let serving = serve(node, listener, shutdown.clone());
        async move {
            serving.await;
            if shutdown.is_requested() {
                Ok(())
            } else {
                Err("the listener stopped".into())
            }
        }
    });
    tasks
        .run(GRACE)
        .await
        .map_err(|why| format!("the data node stopped: {why}"))?;
    tracing::info!(node_id = %id, "data node stopped");
    Ok(())
}

/// Sends heartbeats until one is answered; a refused token is fatal.
async fn register(heartbeater: &Heartbeater, node: &Arc<Node>) -> Result<(), String> {
    let mut delays = retry::delays(REGISTER_RETRY, REGISTER_RETRY);
    loop {
        match heartbeater.round(node).await {
            Ok(()) => return Ok(()),
            Err(e @ HeartbeatError::Refused) => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "control plane not reachable yet");
                tokio::time::sleep(delays.next().unwrap_or(REGISTER_RETRY)).await;
            }
        }
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
