//! `cpfs node list | status | drain`: the data-node registry and the chain
//! table as operators see them, read from the control plane's store.

use std::time::Duration;

use clap::Subcommand;
use cpfs_controlplane::nodes::{sync_progress, wall_ms, Node};
use cpfs_controlplane::ControlPlane;
use cpfs_proto::chains::ChainTable;
use serde_json::json;

use crate::{config, serve};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List registered data nodes with capacity, usage, chains, resync and scrub counters (JSON)
    List {
        #[command(flatten)]
        store: config::StoreArgs,
    },
    /// Redundancy of the cluster: chains short of R copies, resyncs and their progress (JSON);
    /// with --wait, a progress bar until every chain has R serving copies
    Status {
        /// Wait (with a progress bar on a terminal) until nothing is degraded or syncing
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        #[command(flatten)]
        store: config::StoreArgs,
    },
    /// Move every chain off a node (it then shows as Drained and can be stopped)
    Drain {
        /// The node id (`cpfs node list`)
        id: String,
        /// Return at once instead of showing progress until the node is drained
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        store: config::StoreArgs,
    },
}

pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List { store } => {
            let cp = open(store).await?;
            let table = cp.chain_table().await?;
            let nodes: Vec<serde_json::Value> = cp
                .nodes()
                .await?
                .iter()
                .map(|n| node_json(n, &table))
                .collect();
            println!("{}", serde_json::to_string_pretty(&nodes)?);
            Ok(())
        }
        NodeCommand::Status {
            wait,
            timeout,
            store,
        } => {
            let cp = open(store).await?;
            if wait {
                wait_settled(&cp, Duration::from_secs(timeout)).await?;
            }
            let table = cp.chain_table().await?;
            let nodes = cp.nodes().await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&status_json(&table, &nodes))?
            );
            Ok(())
        }
        NodeCommand::Drain { id, no_wait, store } => {
            let cp = open(store).await?;
            cp.mark_draining(&id).await?;
            eprintln!("node {id} is draining: its chains move to other nodes");
            if !no_wait {
                wait_drained(&cp, &id).await?;
                eprintln!("node {id} is drained: it holds no chain and can be stopped");
            }
            Ok(())
        }
    }
}

async fn open(store: config::StoreArgs) -> anyhow::Result<ControlPlane> {
    let settings = config::Settings::load_store(store)?;
    serve::open_control_plane_for_operator(&settings).await
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

fn bar(len: u64, template: &str, msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len.max(1));
    pb.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

async fn wait_settled(cp: &ControlPlane, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let pb = bar(
        0,
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
        "resync",
    );
    loop {
        let table = cp.chain_table().await?;
        let r = table.replicas.max(1);
        if table.settled(r) {
            pb.finish_and_clear();
            return Ok(());
        }
        let (done, total) = resync_progress(&table, &cp.nodes().await?);
        pb.set_length(total.max(1));
        pb.set_position(done);
        pb.set_message(format!(
            "{} degraded, {} syncing",
            table.chains.iter().filter(|c| c.members.len() < r).count(),
            table.chains.iter().map(|c| c.syncing.len()).sum::<usize>()
        ));
        if tokio::time::Instant::now() > deadline {
            pb.abandon();
            anyhow::bail!("the cluster did not settle within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_drained(cp: &ControlPlane, id: &str) -> anyhow::Result<()> {
    let start = cp.chain_table().await?;
    let held = |t: &ChainTable| t.chains.iter().filter(|c| c.holds(id)).count() as u64;
    let pb = bar(
        held(&start),
        "drain {msg} [{bar:40}] {pos}/{len} chains",
        id,
    );
    loop {
        let nodes = cp.nodes().await?;
        let table = cp.chain_table().await?;
        pb.set_position(held(&start).saturating_sub(held(&table)));
        if nodes.iter().any(|n| n.id == id && n.state == "Drained") {
            pb.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
