//! [`NodeRequest::WriteBatch`]: several writes to chunks of one chain in
//! one request, from a client's write-behind. Small random writes cost a
//! node mostly per request (decoding, routing, a task switch, forwarding),
//! not per byte: a batch pays that once for all its writes.
//!
//! Every write is checked (capability, range, chain) before anything is
//! applied, so a batch is refused whole or applied whole; the head takes
//! the ordering slots of all its chunks, applies the writes in order and
//! forwards the batch, as [`Node::mutate`] does for one write.

use std::sync::Arc;

use cpfs_proto::capability::{NodeAuth, WRITE};
use cpfs_proto::node::{
    check_range, ChainRef, ChunkWrite, NodeError, NodeRequest, NodeResponse, MAX_BATCHED_WRITES,
};

use super::Node;
use crate::blocking::blocking;

impl Node {
    pub(super) async fn write_batch(
        &self,
        chain: ChainRef,
        writes: Vec<ChunkWrite>,
        forwarded: Option<NodeAuth>,
    ) -> Result<NodeResponse, NodeError> {
        let Some(first) = writes.first() else {
            return Err(NodeError::Invalid("an empty write batch".into()));
        };
        if writes.len() > MAX_BATCHED_WRITES {
            return Err(NodeError::Invalid(format!(
                "{} writes in a batch, at most {MAX_BATCHED_WRITES}",
                writes.len()
            )));
        }
        let fs = first.key.fs.clone();
        let mut bytes = 0u64;
        for w in &writes {
            if w.key.fs != fs {
                return Err(NodeError::Invalid(
                    "a write batch spans file systems".into(),
                ));
            }
            if w.key.chain != chain.id {
                return Err(NodeError::Invalid(
                    "chunk routed through another chain".into(),
                ));
            }
            if !self.state.allows(&w.cap, &w.key.fs, w.key.inode, WRITE) {
                return Err(NodeError::BadCapability);
            }
            check_range(w.offset, w.data.len() as u64)?;
            bytes += w.data.len() as u64;
        }
        if forwarded
            .as_ref()
            .is_some_and(|a| !self.state.proves_node(a))
        {
            return Err(NodeError::BadCapability);
        }
        if forwarded.is_none() {
            // As for one write: the head decides for the chain, and is the
            // one to charge the file system's share of its tier.
            if self.state.is_full(&fs) {
                for w in &writes {
                    self.refuse_growth(&w.key, w.offset, w.data.len() as u64)
                        .await?;
                }
            }
            self.qos.admit(&fs, true, bytes).await;
        }
        self.io_throttle.take(bytes).await;
        let (others, _inflight) = self
            .state
            .enter_mutation(chain, forwarded.is_some())
            .await?;
        let writes = Arc::new(writes);
        if forwarded.is_some() {
            for w in writes.iter() {
                self.resync.touched(&w.key);
            }
            return self.apply_writes(writes).await.map(|()| NodeResponse::Done);
        }
        let mut slots: Vec<usize> = writes
            .iter()
            .map(|w| self.state.slot_index(&w.key))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let mut held = Vec::with_capacity(slots.len());
        for i in slots {
            held.push(self.state.slot_at(i).lock().await);
        }
        let forward = NodeRequest::WriteBatch {
            chain,
            writes: writes.to_vec(),
            forwarded: Some(self.state.node_auth()),
        };
        let (local, remote) =
            tokio::join!(self.apply_writes(writes), self.forward(others, forward));
        local?;
        remote?;
        Ok(NodeResponse::Done)
    }

    /// Applies the writes in order: on this task while each can be done
    /// without waiting for the disk, the rest on the blocking pool.
    async fn apply_writes(&self, writes: Arc<Vec<ChunkWrite>>) -> Result<(), NodeError> {
        let store = &self.state.store;
        let mut done = 0;
        for w in writes.iter() {
            if !store.write_cached(&w.key, w.offset, &w.data)? {
                break;
            }
            done += 1;
        }
        if done == writes.len() {
            return Ok(());
        }
        let store = store.clone();
        blocking(move || {
            for w in &writes[done..] {
                store.write(&w.key, w.offset, &w.data, false)?;
            }
            Ok(())
        })
        .await
    }
}
