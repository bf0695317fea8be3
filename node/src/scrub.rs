//! Background work of a node over its whole store:
//!
//! - every few seconds, a census: bytes held per chain (reported on
//!   heartbeats, what rebalancing weighs chains by) and the collection of
//!   chunks of chains this node no longer belongs to (moved away by a
//!   rebalance or a drain, or replaced while the node was down);
//! - every `scrub_interval`, a scrub pass at a bounded rate: every block of
//!   every chunk the node serves is read and checked, and bad blocks are
//!   rewritten from another serving member's good copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blocking::blocking;
use crate::server::Node;
use cpfs_proto::layout::BLOCK;
use cpfs_proto::node::{ChainRef, ChunkKey, NodeError, NodeRequest, NodeResponse, ScrubReport};

const CENSUS_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct ScrubState {
    chain_bytes: Mutex<Vec<(u32, u64)>>,
    passes: AtomicU64,
    scrubbed: AtomicU64,
    last_pass_end: AtomicU64,
    bad: AtomicU64,
    repaired: AtomicU64,
    unrecoverable: AtomicU64,
}

impl ScrubState {
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
}

/// Keeps the per-chain byte census fresh (heartbeats report it; the
/// planner moves chains by it).
pub async fn census_loop(node: Arc<Node>) {
    loop {
        node.census().await;
        tokio::time::sleep(CENSUS_EVERY).await;
    }
}

/// Scrubs every block once per `scrub_interval`.
pub async fn scrub_loop(node: Arc<Node>) {
    loop {
        tokio::time::sleep(node.rates.scrub_interval).await;
        node.scrub_pass().await;
    }
}

impl Node {
    async fn census(&self) {
        let store = self.store.clone();
        let Ok(chunks) = blocking(move || Ok(store.list_chunks())).await else {
            return;
        };
        let mut per_chain: std::collections::BTreeMap<u32, u64> = Default::default();
        for (k, len) in &chunks {
            *per_chain.entry(k.chain).or_default() += len;
        }
        *self
            .scrub
            .chain_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = per_chain.into_iter().collect();

        // The table cannot change while the read guard is held, so a chain
        // this node joins is never collected under a forwarded write.
        let table = self.chains.read().await;
        if table.version == 0 {
            return;
        }
        let gone: Vec<ChunkKey> = chunks
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| table.chain(k.chain).is_some_and(|c| !c.holds(&self.id)))
            .collect();
        if gone.is_empty() {
            return;
        }
        tracing::info!(
            chunks = gone.len(),
            "collecting chunks of chains this node left"
        );
        let store = self.store.clone();
        if let Err(e) = blocking(move || {
            for k in gone {
                store.put_raw(&k, None)?;
            }
            Ok(())
        })
        .await
        {
            tracing::warn!(error = %e, "collecting chunks failed");
        }
        drop(table);
    }

    /// Reads every block this node serves, repairing bad ones.
    pub(crate) async fn scrub_pass(&self) {
        let store = self.store.clone();
        let Ok(chunks) = blocking(move || Ok(store.list_chunks())).await else {
            return;
        };
        for (key, len) in chunks {
            self.scrub_throttle.take(len).await;
            let store = self.store.clone();
            let k = key.clone();
            let bad = match blocking(move || store.bad_blocks(&k)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, chunk = key.index, "scrub could not read a chunk");
                    continue;
                }
            };
            self.scrub.scrubbed.fetch_add(len, Ordering::Relaxed);
            if bad.is_empty() {
                continue;
            }
            tracing::warn!(fs = %key.fs, inode = key.inode, chunk = key.index, blocks = bad.len(), "scrub found bad blocks");
            self.scrub
                .bad
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            for b in bad {
                match self.repair_block(&key, b).await {
                    BlockRepair::Repaired => {
                        self.scrub.repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    BlockRepair::NoGoodCopy => {
                        tracing::error!(fs = %key.fs, inode = key.inode, chunk = key.index, block = b, "no good copy of a bad block");
                        self.scrub.unrecoverable.fetch_add(1, Ordering::Relaxed);
                    }
                    BlockRepair::Later => {}
                }
            }
        }
        self.scrub.passes.fetch_add(1, Ordering::Relaxed);
        self.scrub
            .last_pass_end
            .store(crate::blocking::now().max(0) as u64, Ordering::Relaxed);
    }

    /// Fetches block `b` from another serving member and rewrites it here
    /// if it is still bad.
    async fn repair_block(&self, key: &ChunkKey, b: u64) -> BlockRepair {
        // A few tries: a table change in the middle only delays the repair.
        for _ in 0..5 {
            let (version, others) = {
                let t = self.chains.read().await;
                let Some(c) = t.chain(key.chain) else {
                    return BlockRepair::Later;
                };
                let others: Vec<String> = c
                    .members
                    .iter()
                    .filter(|m| m.id != self.id)
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
                    cap: self.cluster_cap(&key.fs),
                    chain: ChainRef {
                        id: key.chain,
                        version,
                    },
                    key: key.clone(),
                    block: b,
                };
                let data = match self.peers.get(addr).call(req).await {
                    Ok(NodeResponse::Block(Some(data))) => data,
                    Ok(NodeResponse::Failed(NodeError::Checksum)) => continue,
                    _ => {
                        // Absent there, or not reachable: no verdict.
                        all_bad = false;
                        continue;
                    }
                };
                let store = self.store.clone();
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
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        BlockRepair::Later
    }
}

enum BlockRepair {
    Repaired,
    /// Every other copy is bad too (or there is none).
    NoGoodCopy,
    /// The other members could not be asked now; the next pass retries.
    Later,
}
