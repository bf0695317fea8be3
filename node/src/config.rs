//! How a node is set up: its settings, its identity and its claim on the
//! data directory.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// Address other nodes and clients use (default: the bound address).
    pub advertise: Option<String>,
    pub controlplane: String,
    pub cluster_token: String,
    pub zone: String,
    pub capacity_bytes: u64,
    pub heartbeat: Duration,
    pub rates: Rates,
}

/// Byte rates a node keeps to (0: unlimited).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Client reads and writes through this node (`--max-bandwidth`).
    pub max_bandwidth: u64,
    /// Resync and rebalance copies this node sends as a chain head.
    pub repair: u64,
    /// Scrubber reads.
    pub scrub: u64,
    /// Pause between two scrub passes.
    pub scrub_interval: Duration,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            max_bandwidth: 0,
            repair: 100 << 20,
            scrub: 32 << 20,
            scrub_interval: Duration::from_secs(3600),
        }
    }
}

/// The node id, created on first start and kept in the data directory.
pub fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let id = format!("node-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Takes an exclusive lock on the data directory, so two node processes
/// never write one directory (the lock goes with the process, even on
/// kill -9). Waits a little for a previous owner that is dying.
pub async fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("lock file in {}: {e}", dir.display()))?;
    for _ in 0..100 {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", dir.display()))
            }
        }
    }
    Err(format!(
        "{} is in use by another node process",
        dir.display()
    ))
}
