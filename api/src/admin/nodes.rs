//! `cpfs node list | status | drain` and `cpfs meta list`: the data-node
//! registry, the chain table and the metadata servers as operators see
//! them.

use std::sync::Arc;

use axum::extract::{Path, State};
use cpfs_controlplane::nodes::{sync_progress, wall_ms, Node};
use cpfs_proto::chains::ChainTable;
use serde_json::json;

use super::{ok, AdminResult, AdminState};

/// Every registered node with capacity, usage, chains, resync and scrub
/// counters.
pub async fn list(State(s): State<Arc<AdminState>>) -> AdminResult {
    let table = s.cp.chain_table().await?;
    let nodes: Vec<serde_json::Value> =
        s.cp.nodes()
            .await?
            .iter()
            .map(|n| node_json(n, &table))
            .collect();
    ok(json!(nodes))
}

/// Every metadata server, whether it is live, and the file systems it owns.
pub async fn meta_servers(State(s): State<Arc<AdminState>>) -> AdminResult {
    let servers: Vec<serde_json::Value> =
        s.cp.meta_servers()
            .await?
            .into_iter()
            .map(|m| {
                json!({
                    "Id": m.id,
                    "Address": m.address,
                    "State": if m.live { "Up" } else { "Down" },
                    "SecondsSinceHeartbeat": m.silent_ms.max(0) as f64 / 1000.0,
                    "FileSystems": m.file_systems.iter().map(|a| json!({
                        "FileSystemId": a.fs_id,
                        "Epoch": a.epoch,
                        "State": if a.pending { "Moving" } else { "Serving" },
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
    ok(json!(servers))
}

/// Redundancy of the cluster: chains short of R copies, resyncs and their
/// progress.
pub async fn status(State(s): State<Arc<AdminState>>) -> AdminResult {
    let table = s.cp.chain_table().await?;
    let nodes = s.cp.nodes().await?;
    ok(status_json(&table, &nodes))
}

/// Starts moving every chain off a node; `cpfs node drain` then follows
/// `list` until the node shows as Drained.
pub async fn drain(State(s): State<Arc<AdminState>>, Path(id): Path<String>) -> AdminResult {
    s.cp.mark_draining(&id).await?;
    ok(json!({"NodeId": id, "State": "Draining"}))
}

fn node_json(n: &Node, table: &ChainTable) -> serde_json::Value {
    let serving = table
        .chains
        .iter()
        .filter(|c| c.members.iter().any(|m| m.id == n.id))
        .count();
    let syncing = table
        .chains
        .iter()
        .filter(|c| c.syncing.iter().any(|s| s.node.id == n.id))
        .count();
    json!({
        "Id": n.id,
        "Address": n.address,
        "ZoneId": n.zone_id,
        "State": n.state,
        "SecondsSinceHeartbeat": (wall_ms() - n.last_seen_ms).max(0) as f64 / 1000.0,
        "CapacityBytes": n.capacity_bytes,
        "ReservedBytes": n.reserved_bytes,
        "StoredBytes": n.stored_bytes,
        "ServingChains": serving,
        "SyncingChains": syncing,
        "ChecksumErrors": n.checksum_errors,
        "Repairs": n.repairs,
        "Scrub": {
            "Passes": n.report.scrub.passes,
            "ScrubbedBytes": n.report.scrub.scrubbed_bytes,
            "LastPassEnd": if n.report.scrub.last_pass_end > 0 {
                cpfs_controlplane::clock::format_utc(n.report.scrub.last_pass_end)
            } else {
                String::new()
            },
            "BadBlocks": n.report.scrub.bad_blocks,
            "RepairedBlocks": n.report.scrub.repaired_blocks,
            "UnrecoverableBlocks": n.report.scrub.unrecoverable_blocks,
        },
        "Resyncs": n.report.syncs.iter().map(|s| json!({
            "Chain": s.chain,
            "Target": s.target,
            "DoneBytes": s.done_bytes,
            "TotalBytes": s.total_bytes,
            "CopiedBytes": s.copied_bytes,
            "Finished": s.finished,
            "Error": s.error,
        })).collect::<Vec<_>>(),
        "LastHeartbeat": cpfs_controlplane::clock::format_utc(n.last_heartbeat),
    })
}

/// Resync progress summed over the heads' reports: (done, total) bytes.
fn resync_progress(table: &ChainTable, nodes: &[Node]) -> (u64, u64) {
    let mut done = 0;
    let mut total = 0;
    for c in &table.chains {
        for s in &c.syncing {
            if let Some((d, t)) = sync_progress(nodes, c.id, s) {
                done += d;
                total += t;
            }
        }
    }
    (done, total)
}

fn status_json(table: &ChainTable, nodes: &[Node]) -> serde_json::Value {
    let r = table.replicas.max(1);
    let degraded: Vec<u32> = table
        .chains
        .iter()
        .filter(|c| c.members.len() < r)
        .map(|c| c.id)
        .collect();
    let syncing: Vec<serde_json::Value> = table
        .chains
        .iter()
        .flat_map(|c| {
            c.syncing.iter().map(move |s| {
                json!({"Chain": c.id, "Node": s.node.id, "Replaces": s.replaces, "Since": s.since})
            })
        })
        .collect();
    let (done, total) = resync_progress(table, nodes);
    json!({
        "ChainTableVersion": table.version,
        "Replicas": r,
        "Chains": table.chains.len(),
        "DegradedChains": degraded,
        "Syncing": syncing,
        "ResyncDoneBytes": done,
        "ResyncTotalBytes": total,
        "Settled": table.settled(r),
        "Table": table,
    })
}
