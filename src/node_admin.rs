//! `cpfs node list | status | drain`: the data-node registry and the chain
//! table as operators see them, from the running server's admin API.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use crate::admin_client::{AdminArgs, AdminClient};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List registered data nodes with capacity, usage, chains, resync and scrub counters (JSON)
    List {
        #[command(flatten)]
        server: AdminArgs,
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
        server: AdminArgs,
    },
    /// Move every chain off a node (it then shows as Drained and can be stopped)
    Drain {
        /// The node id (`cpfs node list`)
        id: String,
        /// Return at once instead of showing progress until the node is drained
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
}

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List { server } => {
            let api = AdminClient::from_args(server)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api.get(&["nodes"], &[]).await?)?
            );
        }
        NodeCommand::Status {
            wait,
            timeout,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            if wait {
                wait_settled(&api, Duration::from_secs(timeout)).await?;
            }
            let status = api.get(&["nodes", "status"], &[]).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        NodeCommand::Drain {
            id,
            no_wait,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            api.post(&["nodes", &id, "drain"], Value::Null).await?;
            eprintln!("node {id} is draining: its chains move to other nodes");
            if !no_wait {
                wait_drained(&api, &id).await?;
                eprintln!("node {id} is drained: it holds no chain and can be stopped");
            }
        }
    }
    Ok(())
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

async fn wait_settled(api: &AdminClient, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let pb = bar(
        0,
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
        "resync",
    );
    loop {
        let s = api.get(&["nodes", "status"], &[]).await?;
        if s["Settled"].as_bool().unwrap_or(false) {
            pb.finish_and_clear();
            return Ok(());
        }
        pb.set_length(s["ResyncTotalBytes"].as_u64().unwrap_or(0).max(1));
        pb.set_position(s["ResyncDoneBytes"].as_u64().unwrap_or(0));
        pb.set_message(format!(
            "{} degraded, {} syncing",
            s["DegradedChains"].as_array().map_or(0, Vec::len),
            s["Syncing"].as_array().map_or(0, Vec::len)
        ));
        if tokio::time::Instant::now() > deadline {
            pb.abandon();
            anyhow::bail!("the cluster did not settle within {} s", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Chains the node still serves or receives, and its state.
fn held(nodes: &Value, id: &str) -> (u64, String) {
    let node = nodes
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["Id"] == id));
    match node {
        Some(n) => (
            n["ServingChains"].as_u64().unwrap_or(0) + n["SyncingChains"].as_u64().unwrap_or(0),
            n["State"].as_str().unwrap_or("").to_string(),
        ),
        None => (0, String::new()),
    }
}

async fn wait_drained(api: &AdminClient, id: &str) -> anyhow::Result<()> {
    let (start, _) = held(&api.get(&["nodes"], &[]).await?, id);
    let pb = bar(start, "drain {msg} [{bar:40}] {pos}/{len} chains", id);
    loop {
        let (now, state) = held(&api.get(&["nodes"], &[]).await?, id);
        pb.set_position(start.saturating_sub(now));
        if state == "Drained" {
            pb.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
