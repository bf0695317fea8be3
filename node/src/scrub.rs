//! Background work of a node over its whole store:
//!
//! - every few seconds, a census: bytes held per chain (reported on
//!   heartbeats, what rebalancing weighs chains by) and the collection of
//!   chunks of chains this node no longer belongs to (moved away by a
//!   rebalance or a drain, or replaced while the node was down);
//! - every `scrub_interval`, a scrub pass at a bounded rate: every block of
//!   every chunk the node serves is read and checked, and bad blocks are
//!   rewritten from another serving member's good copy.
//!
//! Both are passes of [`Scrub`] over the node's shared [`NodeState`]; the
//! process runs them on its supervisor (`lib.rs`), the node's stats read
//! the counters kept here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cpfs_runtime::{retry, Shutdown};

use crate::blocking::blocking;
use crate::state::NodeState;
use cpfs_proto::layout::BLOCK;
use cpfs_proto::node::{ChainRef, ChunkKey, NodeError, NodeRequest, NodeResponse, ScrubReport};

/// Period of the census (from the end of one pass to the next).
pub const CENSUS_EVERY: Duration = Duration::from_secs(5);
/// Tries to fetch a good copy of a bad block before leaving it to the next
/// pass.
const REPAIR_TRIES: u32 = 5;
/// The pause between those tries: the shared policy with this as first
/// delay and cap, since a table change in the middle settles within a
/// heartbeat and a longer wait would only hold up the pass.
const REPAIR_RETRY: Duration = Duration::from_millis(200);

/// The census's result and the scrubber's counters, as stats report them.
#[derive(Default)]
pub struct Scrub {
    chain_bytes: Mutex<Vec<(u32, u64)>>,
    passes: AtomicU64,
    scrubbed: AtomicU64,
    last_pass_end: AtomicU64,
    bad: AtomicU64,
    repaired: AtomicU64,
    unrecoverable: AtomicU64,
}

impl Scrub {
    pub(crate) fn chain_bytes(&self) -> Vec<(u32, u64)> {
        self.chain_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn report(&self) -> ScrubReport {
        ScrubReport {
            passes: self.passes.load(Ordering::Relaxed),
            scrubbed_bytes: self.scrubbed.load(Ordering::Relaxed),
            last_pass_end: self.last_pass_end.load(Ordering::Relaxed) as i64,
            bad_blocks: self.bad.load(Ordering::Relaxed),
            repaired_blocks: self.repaired.load(Ordering::Relaxed),
            unrecoverable_blocks: self.unrecoverable.load(Ordering::Relaxed),
        }
    }

    /// Counts bytes per chain (heartbeats report it; the planner moves
    /// chains by it) and collects chunks of chains the node left.
    pub(crate) async fn census(&self, node: &NodeState) -> Result<(), String> {
        let store = node.store.clone();
        let chunks = blocking(move || Ok(store.list_chunks()))
            .await
            .map_err(|e| format!("listing chunks: {e}"))?;
        let mut per_chain: std::collections::BTreeMap<u32, u64> = Default::default();
        for (k, len) in &chunks {
            *per_chain.entry(k.chain).or_default() += len;
        }
        *self.chain_bytes.lock().unwrap_or_else(|e| e.into_inner()) =
            per_chain.into_iter().collect();

        // The table cannot change while the read guard is held, so a chain
        // this node joins is never collected under a forwarded write.
        let table = node.chains.read().await;
        if table.version == 0 {
            return Ok(());
        }
        let gone: Vec<ChunkKey> = chunks
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| table.chain(k.chain).is_some_and(|c| !c.holds(&node.id)))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        tracing::info!(
            chunks = gone.len(),
            "collecting chunks of chains this node left"
        );
        let store = node.store.clone();
        let collected = blocking(move || {
            for k in gone {
                store.remove_chunk(&k)?;
            }
            Ok(())
        })
        .await;
        drop(table);
        collected.map_err(|e| format!("collecting chunks: {e}"))
    }

    /// Reads every block this node serves, repairing bad ones. Stops
    /// between two chunks once `stop` is requested (a shutdown does not
    /// wait for an hour-long pass); such a pass is not counted.
    pub(crate) async fn pass(&self, node: &NodeState, stop: &Shutdown) -> Result<(), String> {
        let store = node.store.clone();
        let chunks = blocking(move || Ok(store.list_chunks()))
            .await
            .map_err(|e| format!("listing chunks: {e}"))?;
        for (key, len) in chunks {
            if stop.is_requested() {
                return Ok(());
            }
            node.scrub_throttle.take(len).await;
            let store = node.store.clone();
            let k = key.clone();
            let bad = match blocking(move || store.bad_blocks(&k)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, chunk = key.index, "scrub could not read a chunk");
                    continue;
                }
            };
            self.scrubbed.fetch_add(len, Ordering::Relaxed);
            if bad.is_empty() {
                continue;
            }
            tracing::warn!(fs = %key.fs, inode = key.inode, chunk = key.index, blocks = bad.len(), "scrub found bad blocks");
            self.bad.fetch_add(bad.len() as u64, Ordering::Relaxed);
            for b in bad {
                match repair_block(node, &key, b).await {
                    BlockRepair::Repaired => {
                        self.repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    BlockRepair::NoGoodCopy => {
                        tracing::error!(fs = %key.fs, inode = key.inode, chunk = key.index, block = b, "no good copy of a bad block");
                        self.unrecoverable.fetch_add(1, Ordering::Relaxed);
                    }
                    BlockRepair::Later => {}
                }
            }
        }
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.last_pass_end
            .store(crate::blocking::now().max(0) as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Fetches block `b` from another serving member and rewrites it here if
/// it is still bad.
pub(crate) async fn repair_block(node: &NodeState, key: &ChunkKey, b: u64) -> BlockRepair {
    // A few tries: a table change in the middle only delays the repair.
    let mut delays = retry::delays(REPAIR_RETRY, REPAIR_RETRY);
    for _ in 0..REPAIR_TRIES {
        let (version, others) = {
            let t = node.chains.read().await;
            let Some(c) = t.chain(key.chain) else {
                return BlockRepair::Later;
            };
            let others: Vec<String> = c
                .members
                .iter()
                .filter(|m| m.id != node.id)
                .map(|m| m.address.clone())
                .collect();
            (t.version, others)
        };
        if others.is_empty() {
            return BlockRepair::NoGoodCopy;
        }
        let mut all_bad = true;
        for addr in &others {
            let req = NodeRequest::ReadBlock {
                auth: node.node_auth(),
                chain: ChainRef {
                    id: key.chain,
                    version,
                },
                key: key.clone(),
                block: b,
            };
            let data = match node.peers.get(addr).call(req).await {
                Ok(NodeResponse::Block(Some(data))) => data,
                Ok(NodeResponse::Failed(NodeError::Checksum)) => continue,
                _ => {
                    // Absent there, or not reachable: no verdict.
                    all_bad = false;
                    continue;
                }
            };
            let store = node.store.clone();
            let k = key.clone();
            match blocking(move || store.repair_blocks(&k, b * BLOCK, &data)).await {
                Ok(_) => {
                    tracing::info!(fs = %key.fs, inode = key.inode, chunk = key.index, block = b, from = %addr, "scrub repaired a block");
                    return BlockRepair::Repaired;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scrub repair failed");
                    all_bad = false;
                }
            }
        }
        if all_bad {
            return BlockRepair::NoGoodCopy;
        }
        tokio::time::sleep(delays.next().unwrap_or(REPAIR_RETRY)).await;
    }
    BlockRepair::Later
}

pub(crate) enum BlockRepair {
    Repaired,
    /// Every other copy is bad too (or there is none).
    NoGoodCopy,
    /// The other members could not be asked now; the next pass retries.
    Later,
}
