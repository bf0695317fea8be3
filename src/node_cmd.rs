//! `cpfs node`: run a data node.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use cpfs_node::{self as node, NodeConfig};

#[derive(Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// Directory for this node's chunks (created when missing)
    #[arg(long, env = "CPFS_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve chunks on (port 0: any free port)
    #[arg(long, env = "CPFS_NODE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address other nodes and clients should use, when not the bound one
    #[arg(long, env = "CPFS_NODE_ADVERTISE")]
    pub advertise: Option<String>,
    /// The control plane: the URL `cpfs serve` answers the API on
    #[arg(
        long,
        env = "CPFS_CONTROLPLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub controlplane: String,
    /// Zone of this node
    #[arg(long, env = "CPFS_NODE_ZONE", default_value = "cn-hangzhou-b")]
    pub zone: String,
    /// Capacity this node offers placement, in GiB (thin provisioned)
    #[arg(long, env = "CPFS_NODE_CAPACITY_GIB", default_value_t = 1024 * 1024)]
    pub capacity_gib: u64,
    /// Cap on client reads and writes through this node, MB/s (0: none)
    #[arg(long, env = "CPFS_NODE_MAX_BANDWIDTH", default_value_t = 0)]
    pub max_bandwidth: u64,
    /// Rate of resync and rebalance copies this node sends, MB/s (0: none)
    #[arg(long, env = "CPFS_NODE_REPAIR_BANDWIDTH", default_value_t = 100)]
    pub repair_bandwidth: u64,
    /// Rate at which the scrubber reads, MB/s (0: none)
    #[arg(long, env = "CPFS_NODE_SCRUB_BANDWIDTH", default_value_t = 32)]
    pub scrub_bandwidth: u64,
    /// Seconds between the end of one scrub pass and the start of the next
    #[arg(long, env = "CPFS_NODE_SCRUB_INTERVAL", default_value_t = 3600)]
    pub scrub_interval: u64,
}

/// The cluster token a process started apart from `cpfs serve` (a node, a
/// metadata server) proves itself with, from `CPFS_CLUSTER_TOKEN`.
pub fn cluster_token_from_env(who: &str) -> anyhow::Result<String> {
    let token = std::env::var("CPFS_CLUSTER_TOKEN").unwrap_or_default();
    if token.is_empty() {
        anyhow::bail!(
            "CPFS_CLUSTER_TOKEN is not set: give {who} the cluster token of its control plane (cpfs serve keeps it in DATA_DIR/cluster-token)"
        );
    }
    Ok(token)
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir else {
        anyhow::bail!("cpfs node needs --data-dir DIR");
    };
    let token = cluster_token_from_env("the node")?;
    crate::private::private_dir(&data_dir)?;
    let cfg = NodeConfig {
        data_dir,
        listen: args.listen,
        advertise: args.advertise,
        controlplane: args.controlplane,
        cluster_token: token,
        zone: args.zone,
        capacity_bytes: args.capacity_gib.saturating_mul(1 << 30),
        heartbeat: Duration::from_secs(1),
        rates: node::Rates {
            max_bandwidth: args.max_bandwidth.saturating_mul(1_000_000),
            repair: args.repair_bandwidth.saturating_mul(1_000_000),
            scrub: args.scrub_bandwidth.saturating_mul(1_000_000),
            scrub_interval: Duration::from_secs(args.scrub_interval.max(1)),
        },
    };
    node::run(cfg).await.map_err(|e| anyhow::anyhow!(e))
}
