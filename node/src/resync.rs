//! Resync: how a syncing member of a chain gets the chain's chunks.
//!
//! The head drives it. For every chunk it holds of the chain it compares
//! digests with the member and sends the records when they differ, holding
//! the chunk's ordering slot so the copy and the writes it forwards reach
//! the member in order. A member that returns after an absence therefore
//! receives only what it missed. At the end the member drops chunks of the
//! chain that the head neither sent nor wrote meanwhile (files deleted
//! while it was away). The head reports progress on its heartbeats and the
//! control plane promotes the member once the head reports it finished.
//!
//! [`Resync`] holds both sides' bookkeeping and works on the node's shared
//! [`NodeState`]; the request handler calls it, never the other way round.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_runtime::retry;
use tracing::Instrument;

use crate::blocking::blocking;
use crate::state::NodeState;
use cpfs_proto::capability::NodeAuth;
use cpfs_proto::chains::{ChainTable, NodeAddr};
use cpfs_proto::node::{ChainRef, ChunkKey, NodeError, NodeRequest, NodeResponse, SyncReport};
use cpfs_proto::node::{NodeClient, SYNC_PIECE_RECORDS};

#[derive(Default)]
struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    copied: AtomicU64,
    finished: AtomicBool,
    error: Mutex<Option<String>>,
}

/// (chain, member being filled, session).
type Session = (u32, String, u64);

/// A node's resync bookkeeping, both sides: the sessions it runs as a
/// head, and as a member the chunks a head has not vouched for yet.
#[derive(Default)]
pub struct Resync {
    /// Head side: the sessions this node runs.
    running: Mutex<HashMap<Session, Arc<Progress>>>,
    /// Member side: chunks of a chain held when a session began that the
    /// head has not vouched for yet.
    pending: Mutex<HashMap<u32, HashSet<ChunkKey>>>,
    /// Where head sessions run: the node's supervisor, once attached.
    spawner: std::sync::OnceLock<cpfs_runtime::Spawner>,
}

impl Resync {
    /// Runs the sessions this node heads on `spawner` from now on.
    pub(crate) fn attach(&self, spawner: cpfs_runtime::Spawner) {
        let _ = self.spawner.set(spawner);
    }

    /// A chunk the head sent or wrote during a session: keep it.
    pub(crate) fn touched(&self, key: &ChunkKey) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = p.get_mut(&key.chain) {
            set.remove(key);
        }
    }

    pub(crate) fn reports(&self) -> Vec<SyncReport> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SyncReport> = running
            .iter()
            .map(|((chain, target, since), p)| SyncReport {
                chain: *chain,
                target: target.clone(),
                since: *since,
                done_bytes: p.done.load(Ordering::Relaxed),
                total_bytes: p.total.load(Ordering::Relaxed),
                copied_bytes: p.copied.load(Ordering::Relaxed),
                finished: p.finished.load(Ordering::Relaxed),
                error: p.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            })
            .collect();
        out.sort_by(|a, b| (a.chain, &a.target).cmp(&(b.chain, &b.target)));
        out
    }
}

/// Retries of one call to the member while tables settle.
const CALL_TRIES: u32 = 50;
/// The pause between those retries (the shared policy with this as both
/// first delay and cap: a table change settles in a heartbeat or two, so
/// waiting longer would only slow the copy).
const CALL_RETRY: Duration = Duration::from_millis(100);
/// The pause before a failed pass is tried again (first delay and cap).
const PASS_RETRY: Duration = Duration::from_secs(1);

impl Resync {
    /// Starts a session for every syncing member of a chain this node
    /// heads, and forgets sessions the table no longer asks for.
    pub(crate) fn start(&self, node: &Arc<NodeState>, table: &ChainTable) {
        let mut wanted: Vec<Session> = Vec::new();
        for c in &table.chains {
            if c.head().is_some_and(|h| h.id == node.id) {
                for s in &c.syncing {
                    wanted.push((c.id, s.node.id.clone(), s.since));
                }
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|k, _| wanted.contains(k));
        for session in wanted {
            if running.contains_key(&session) {
                continue;
            }
            let progress = Arc::new(Progress::default());
            running.insert(session.clone(), progress.clone());
            let span = tracing::info_span!("resync", chain = session.0, target = %session.1, since = session.2);
            let head = HeadSession {
                node: node.clone(),
                session,
                progress,
            };
            // Sessions come and go with the table, and one ends by itself
            // once the table stops asking for it; they still belong to the
            // node's supervisor, which stops them with the process.
            let task = head.run().instrument(span);
            match self.spawner.get() {
                Some(spawner) => {
                    spawner.spawn("resync", task);
                }
                // A node driven directly (tests, tools) has no supervisor.
                None => {
                    tokio::spawn(task);
                }
            }
        }
    }

    /// Member side: a session begins; note the chain's chunks held now.
    pub(crate) async fn begin(&self, node: &NodeState, chain: u32) -> Result<(), NodeError> {
        let store = node.store.clone();
        let held: HashSet<ChunkKey> = blocking(move || Ok(store.list_chunks()))
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.chain == chain)
            .collect();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chain, held);
        Ok(())
    }

    /// Member side: the session is complete; drop what the head did not
    /// vouch for.
    pub(crate) async fn end(&self, node: &NodeState, chain: u32) -> Result<(), NodeError> {
        let stale = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chain)
            .unwrap_or_default();
        if stale.is_empty() {
            return Ok(());
        }
        tracing::info!(
            chain,
            chunks = stale.len(),
            "dropping chunks deleted while away"
        );
        let store = node.store.clone();
        blocking(move || {
            for k in stale {
                store.remove_chunk(&k)?;
            }
            Ok(())
        })
        .await
    }
}

/// What became of one chunk's copy.
enum Copied {
    /// Sent, this many bytes of records.
    Sent(u64),
    /// The head's copy has bad blocks: not sent.
    BadBlocks,
    /// The session is no longer wanted.
    Abandoned,
}

/// The head's side of one session, run as its own task.
struct HeadSession {
    node: Arc<NodeState>,
    session: Session,
    progress: Arc<Progress>,
}

impl HeadSession {
    /// The member's current address while the session is still wanted.
    async fn target(&self) -> Option<(NodeAddr, u64)> {
        let t = self.node.chains.read().await;
        let c = t.chain(self.session.0)?;
        if c.head()?.id != self.node.id {
            return None;
        }
        c.syncing
            .iter()
            .find(|s| s.node.id == self.session.1 && s.since == self.session.2)
            .map(|s| (s.node.clone(), t.version))
    }

    async fn run(self) {
        // Writes routed with a table older than the session may not have
        // been forwarded to the member; wait until they are done (bounded
        // by the call timeout) so that the listing below includes them.
        // A poll for a condition, not a retry: a fixed period.
        for _ in 0..400 {
            match self.node.oldest_inflight() {
                Some(v) if v < self.session.2 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => break,
            }
        }
        let mut retries = retry::delays(PASS_RETRY, PASS_RETRY);
        let progress = &self.progress;
        loop {
            if self.target().await.is_none() {
                return;
            }
            match self.pass().await {
                Ok(true) => {
                    progress.finished.store(true, Ordering::Relaxed);
                    tracing::info!(
                        bytes = progress.total.load(Ordering::Relaxed),
                        copied = progress.copied.load(Ordering::Relaxed),
                        "resync finished"
                    );
                    // Wake the heartbeat so the control plane hears it now.
                    self.node.wake.notify_one();
                    return;
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "resync pass failed; retrying");
                    *progress.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    tokio::time::sleep(retries.next().unwrap_or(PASS_RETRY)).await;
                }
            }
        }
    }

    /// Sends `build(chain ref)` to the member, riding out table changes.
    async fn call_member(
        &self,
        build: impl Fn(ChainRef) -> NodeRequest,
    ) -> Result<Option<NodeResponse>, String> {
        let mut last = String::new();
        let mut delays = retry::delays(CALL_RETRY, CALL_RETRY);
        for _ in 0..CALL_TRIES {
            let Some((target, version)) = self.target().await else {
                return Ok(None);
            };
            let peer: Arc<NodeClient> = self.node.peers.get(&target.address);
            let req = build(ChainRef {
                id: self.session.0,
                version,
            });
            match peer.call(req).await {
                Ok(NodeResponse::Failed(
                    e @ (NodeError::StaleChainTable { .. }
                    | NodeError::NotMember
                    | NodeError::NoLease
                    | NodeError::Io(_)),
                )) => last = e.to_string(),
                Ok(NodeResponse::Failed(e)) => return Err(e.to_string()),
                Ok(r) => return Ok(Some(r)),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(delays.next().unwrap_or(CALL_RETRY)).await;
        }
        Err(format!("member did not answer: {last}"))
    }

    /// Sends the head's copy of one chunk to the member in pieces of
    /// [`SYNC_PIECE_RECORDS`], each read from disk as it is sent: a full
    /// 64 MiB chunk and its checksums exceed the frame limit, and no chunk
    /// is held whole in memory. The caller holds the chunk's ordering slot,
    /// so no write reaches the chunk between pieces.
    async fn copy(&self, key: &ChunkKey, auth: &NodeAuth) -> Result<Copied, String> {
        let store = self.node.store.clone();
        let k = key.clone();
        let records = blocking(move || store.records(&k))
            .await
            .map_err(|e| e.to_string())?;
        let Some(records) = records else {
            let put = self
                .call_member(|chain| NodeRequest::SyncPut {
                    auth: auth.clone(),
                    chain,
                    key: key.clone(),
                    first: 0,
                    raw: None,
                    last: true,
                })
                .await?;
            return Ok(if put.is_none() {
                Copied::Abandoned
            } else {
                Copied::Sent(0)
            });
        };
        let mut first = 0;
        let mut sent = 0;
        loop {
            let count = SYNC_PIECE_RECORDS.min(records - first);
            let store = self.node.store.clone();
            let k = key.clone();
            let raw = match blocking(move || store.read_raw(&k, first, count)).await {
                Ok(raw) => raw.unwrap_or_default(),
                Err(NodeError::Checksum) => return Ok(Copied::BadBlocks),
                Err(e) => return Err(e.to_string()),
            };
            let last = first + count >= records;
            let len = raw.len() as u64;
            let raw = Some(raw);
            if self
                .call_member(|chain| NodeRequest::SyncPut {
                    auth: auth.clone(),
                    chain,
                    key: key.clone(),
                    first,
                    raw: raw.clone(),
                    last,
                })
                .await?
                .is_none()
            {
                return Ok(Copied::Abandoned);
            }
            sent += len;
            first += count;
            if last {
                return Ok(Copied::Sent(sent));
            }
        }
    }

    /// One pass over the chain. Ok(false): the session was abandoned.
    async fn pass(&self) -> Result<bool, String> {
        let node = &self.node;
        let progress = &self.progress;
        let auth = node.node_auth();
        if self
            .call_member(|chain| NodeRequest::SyncBegin {
                auth: auth.clone(),
                chain,
            })
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let store = node.store.clone();
        let chain_id = self.session.0;
        let mut keys: Vec<(ChunkKey, u64)> = blocking(move || Ok(store.list_chunks()))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(k, _)| k.chain == chain_id)
            .collect();
        keys.sort_by(|a, b| (&a.0.fs, a.0.inode, a.0.index).cmp(&(&b.0.fs, b.0.inode, b.0.index)));
        progress
            .total
            .store(keys.iter().map(|(_, l)| *l).sum(), Ordering::Relaxed);
        progress.done.store(0, Ordering::Relaxed);
        let mut skipped = 0u64;
        for (key, len) in keys {
            node.repair_throttle.take(len).await;
            let _slot = node.slot(&key).lock().await;
            let store = node.store.clone();
            let k = key.clone();
            let local = blocking(move || store.digest(&k))
                .await
                .map_err(|e| e.to_string())?;
            let auth = node.node_auth();
            let remote = match self
                .call_member(|chain| NodeRequest::SyncDigest {
                    auth: auth.clone(),
                    chain,
                    key: key.clone(),
                })
                .await?
            {
                None => return Ok(false),
                Some(NodeResponse::Digest(d)) => d,
                Some(other) => return Err(format!("unexpected answer {other:?}")),
            };
            if local != remote {
                match self.copy(&key, &auth).await? {
                    Copied::Sent(sent) => {
                        progress.copied.fetch_add(sent, Ordering::Relaxed);
                    }
                    Copied::BadBlocks => {
                        // Left to the scrubber, which repairs it from another
                        // copy if there is one; the rest of the chain goes on.
                        tracing::warn!(fs = %key.fs, inode = key.inode, chunk = key.index, "chunk has bad blocks; not copied");
                        skipped += 1;
                    }
                    Copied::Abandoned => return Ok(false),
                }
            }
            progress.done.fetch_add(len, Ordering::Relaxed);
        }
        if self
            .call_member(|chain| NodeRequest::SyncEnd {
                auth: auth.clone(),
                chain,
            })
            .await?
            .is_none()
        {
            return Ok(false);
        }
        if skipped > 0 {
            *progress.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                "{skipped} chunks with unreadable blocks were not copied"
            ));
        }
        Ok(true)
    }
}
