//! The client side of the data path: cuts file I/O into chunk pieces by the
//! file's layout and sends them to the chains in parallel; writes go to the
//! chain head (which replicates), reads to a member, spreading load, and a
//! read whose copy fails its checksum is served by another member and the
//! bad copy repaired. A stale chain table is refreshed and the piece retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cpfs_runtime::retry;
use tokio::sync::RwLock;

use cpfs_proto::capability::{Capability, WRITE};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::frame::WireError;
use cpfs_proto::layout::{Layout, LayoutError, Piece, BLOCK};
use cpfs_proto::node::NodePeers as Peers;
use cpfs_proto::node::{
    ChainRef, ChunkKey, ChunkWrite, NodeError, NodeRequest, NodeResponse, MAX_LISTED_CHUNKS,
};

use crate::read_cache::{self, ReadCache};

/// Where a fresh chain table comes from (the metadata service).
pub type ChainSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<ChainTable, String>> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Node(NodeError),
    #[error("no member of chain {0} answered: {1}")]
    Unreachable(u32, String),
    #[error("chain {0} is not in the chain table")]
    NoChain(u32),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// The metadata service refused to renew the capability (errno).
    #[error("capability renewal refused (errno {0})")]
    Renewal(i32),
}

impl DataError {
    /// The errno a file operation reports for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            DataError::Node(NodeError::NoSpace) => 28,       // ENOSPC
            DataError::Node(NodeError::BadCapability) => 13, // EACCES
            DataError::Node(NodeError::OutOfRange { .. }) => 27, // EFBIG
            DataError::Node(NodeError::Invalid(_)) => 22,    // EINVAL
            DataError::Layout(LayoutError::Overflow { .. }) => 27, // EFBIG
            DataError::Renewal(errno) => *errno,
            _ => 5, // EIO
        }
    }
}

/// How long a piece of I/O keeps retrying through node failures before it
/// fails with EIO: long enough for failure detection (3 s by default), the
/// new chain table and a restarted `cpfs serve`, so programs see a stall.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(45);

/// Chunks a truncate cuts at once.
const TRUNCATE_BATCH: usize = 64;

/// Delays between retries of one piece of I/O, with the shared policy:
/// quick at first (a table change is usually picked up in milliseconds),
/// doubling to half a second, jittered so the clients of a failed node do
/// not retry in step.
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// How long a call waits for a node before the client checks, and then
/// how often, whether the chain table moved on without that node.
const RECHECK_AFTER: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_millis(500);

fn retry_delays() -> retry::ExponentialBackoff {
    retry::delays(RETRY_FIRST, RETRY_CAP)
}

/// Whether a node's answer means "try again, perhaps elsewhere".
fn transient(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::StaleChainTable { .. }
            | NodeError::NotMember
            | NodeError::NoLease
            | NodeError::Io(_)
    )
}

pub struct DataClient {
    peers: Peers,
    table: RwLock<ChainTable>,
    source: ChainSource,
    /// When a slow call last refreshed the table (see `call_routed`).
    refreshed: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// File data read before (see read_cache.rs).
    pub read_cache: ReadCache,
}

impl DataClient {
    /// A data client without a read cache (the metadata service's).
    pub fn new(table: ChainTable, source: ChainSource) -> Arc<DataClient> {
        DataClient::with_read_cache(table, source, 0)
    }

    /// A data client caching up to `cache_bytes` of what it reads.
    pub fn with_read_cache(
        table: ChainTable,
        source: ChainSource,
        cache_bytes: u64,
    ) -> Arc<DataClient> {
        Arc::new(DataClient {
            peers: Peers::default(),
            table: RwLock::new(table),
            source,
            refreshed: Default::default(),
            read_cache: ReadCache::new(cache_bytes),
        })
    }

    pub async fn chain_version(&self) -> u64 {
        self.table.read().await.version
    }

    pub async fn set_table(&self, t: ChainTable) {
        let mut cur = self.table.write().await;
        if t.version >= cur.version {
            *cur = t;
        }
    }

    async fn refresh(&self) {
        match (self.source)().await {
            Ok(t) => {
                let mut cur = self.table.write().await;
                if t.version >= cur.version {
                    *cur = t;
                }
            }
            Err(e) => tracing::warn!(error = %e, "chain table refresh failed"),
        }
    }

    /// Members of a chain (head first) and the table version.
    async fn members(&self, chain: u32) -> Result<(Vec<String>, u64), DataError> {
        let t = self.table.read().await;
        let c = t.chain(chain).ok_or(DataError::NoChain(chain))?;
        Ok((
            c.members.iter().map(|m| m.address.clone()).collect(),
            t.version,
        ))
    }

    /// Sends a request built for (address, chain ref); retries on a stale
    /// table or an unreachable node with a refreshed table.
    async fn to_head(
        &self,
        chain: u32,
        build: impl Fn(ChainRef) -> NodeRequest,
    ) -> Result<NodeResponse, DataError> {
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + FAILOVER_BUDGET;
        let mut delays = retry_delays();
        while tokio::time::Instant::now() < deadline {
            let (members, version) = self.members(chain).await?;
            if let Some(head) = members.first() {
                // Given up once another node heads the chain: the old head
                // cannot complete the write any more (the other members
                // refuse what it forwards under its table), so it is safe
                // to send it to the new one.
                let still_head = |t: &ChainTable| {
                    t.chain(chain).and_then(|c| c.head()).map(|h| &h.address) == Some(head)
                };
                match self
                    .call_routed(head, build(ChainRef { id: chain, version }), still_head)
                    .await
                {
                    Some(Ok(NodeResponse::Failed(e))) if transient(&e) => last = e.to_string(),
                    Some(Ok(NodeResponse::Failed(e))) => return Err(DataError::Node(e)),
                    Some(Ok(r)) => return Ok(r),
                    Some(Err(e)) => last = e.to_string(),
                    None => {
                        last = format!("{head} no longer heads chain {chain}");
                        continue;
                    }
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(RETRY_CAP)).await;
            self.refresh().await;
        }
        Err(DataError::Unreachable(chain, last))
    }

    /// Calls the node at `addr` until it answers or a table refreshed
    /// meanwhile no longer routes this request to it (`routed`: None). A
    /// node that went silent (its link is down) then costs the time the
    /// control plane takes to replace it, not the connection's deadline
    /// and a reconnection after it.
    async fn call_routed(
        &self,
        addr: &str,
        req: NodeRequest,
        routed: impl Fn(&ChainTable) -> bool,
    ) -> Option<Result<NodeResponse, WireError>> {
        let peer = self.peers.get(addr);
        let call = peer.call(req);
        tokio::pin!(call);
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_AFTER, RECHECK_AFTER);
        loop {
            tokio::select! {
                r = &mut call => return Some(r),
                _ = recheck.tick() => {
                    self.refresh_at_most_every(RECHECK_AFTER / 2).await;
                    if !routed(&*self.table.read().await) {
                        return None;
                    }
                }
            }
        }
    }

    /// Refreshes the table unless that was done less than `every` ago:
    /// many pieces waiting on one silent node share a refresh.
    async fn refresh_at_most_every(&self, every: Duration) {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.refresh().await;
        *last = Some(tokio::time::Instant::now());
    }

    pub async fn write(
        &self,
        cap: &Capability,
        layout: &Layout,
        inode: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DataError> {
        let pieces = layout.pieces(offset, data.len() as u64)?;
        let mut set = Vec::with_capacity(pieces.len());
        for p in pieces {
            let bytes = data[p.buf_offset as usize..(p.buf_offset + p.len) as usize].to_vec();
            set.push(self.write_piece(cap, inode, p, bytes));
        }
        for r in join_all(set).await {
            r?;
        }
        Ok(())
    }

    async fn write_piece(
        &self,
        cap: &Capability,
        inode: u64,
        p: Piece,
        data: Vec<u8>,
    ) -> Result<(), DataError> {
        let key = ChunkKey {
            fs: cap.fs.clone(),
            inode,
            index: p.chunk,
            chain: p.chain,
        };
        self.write_chunk(cap, &key, p.offset, &data).await
    }

    /// Writes `data` at `offset` of one chunk, through its chain's head.
    pub async fn write_chunk(
        &self,
        cap: &Capability,
        key: &ChunkKey,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DataError> {
        self.to_head(key.chain, |chain| NodeRequest::Write {
            cap: cap.clone(),
            chain,
            key: key.clone(),
            offset,
            data: data.to_vec(),
            forwarded: None,
        })
        .await
        .map(|_| ())
    }

    /// Sends writes to chunks of `chain` as one request (at most
    /// [`cpfs_proto::node::MAX_BATCHED_WRITES`], of one file system),
    /// applied in order; retried through failovers like one write.
    pub async fn write_batch(&self, chain: u32, writes: &[ChunkWrite]) -> Result<(), DataError> {
        self.to_head(chain, |chain| NodeRequest::WriteBatch {
            chain,
            writes: writes.to_vec(),
            forwarded: None,
        })
        .await
        .map(|_| ())
    }

    /// Reads `len` bytes at `offset` (the caller trims to the file size).
    pub async fn read(
        &self,
        cap: &Capability,
        layout: &Layout,
        inode: u64,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, DataError> {
        let pieces = layout.pieces(offset, len)?;
        let mut parts = join_all(pieces.iter().map(|p| self.read_piece(cap, inode, *p))).await;
        // One piece (a read within a chunk): the reply's own bytes, a view
        // of the frame they came in, with no copy.
        if parts.len() == 1 {
            return parts.pop().unwrap_or_else(|| Ok(Bytes::new()));
        }
        let mut out = Vec::with_capacity(len as usize);
        for part in parts {
            out.extend_from_slice(&part?);
        }
        Ok(out.into())
    }

    /// [`Self::read`] through the read cache, for a file of `size` bytes
    /// whose writes from this mount have settled (see read_cache.rs).
    pub async fn read_cached(
        &self,
        cap: &Capability,
        layout: &Layout,
        inode: u64,
        offset: u64,
        len: u64,
        size: u64,
    ) -> Result<Bytes, DataError> {
        let cache = &self.read_cache;
        if !cache.takes(len) {
            return self.read(cap, layout, inode, offset, len).await;
        }
        // What no node checks, the cache does: a capability past its
        // expiry (the service refused to renew it) reads nothing here
        // either; the caller renews it or fails the read.
        if cap.expires.saturating_mul(1000) <= cpfs_proto::capability::now_ms() {
            return Err(DataError::Node(NodeError::BadCapability));
        }
        let epoch = cache.epoch(inode);
        let wanted = read_cache::segments(offset, len, size);
        let mut parts: Vec<(u64, Bytes)> = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for (i, (s, start, _)) in wanted.iter().enumerate() {
            match cache.get(inode, epoch, *s) {
                Some(b) => parts.push((*start, b)),
                None => {
                    missing.push(i);
                    parts.push((*start, Bytes::new()));
                }
            }
        }
        if !missing.is_empty() {
            let fetched = join_all(missing.iter().map(|i| {
                let (s, start, n) = wanted[*i];
                async move {
                    let b = self.read(cap, layout, inode, start, n).await?;
                    cache.put(inode, epoch, s, b.clone());
                    Ok::<_, DataError>(b)
                }
            }))
            .await;
            for (i, b) in missing.into_iter().zip(fetched) {
                parts[i].1 = b?;
            }
        }
        match read_cache::assemble(offset, len, &parts) {
            Some(out) => Ok(out.into()),
            // Cached before the file grew: read it as it is now.
            None => {
                cache.forget(inode);
                self.read(cap, layout, inode, offset, len).await
            }
        }
    }

    async fn read_piece(&self, cap: &Capability, inode: u64, p: Piece) -> Result<Bytes, DataError> {
        let key = ChunkKey {
            fs: cap.fs.clone(),
            inode,
            index: p.chunk,
            chain: p.chain,
        };
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + FAILOVER_BUDGET;
        let mut delays = retry_delays();
        while tokio::time::Instant::now() < deadline {
            let (members, version) = self.members(p.chain).await?;
            let chain = ChainRef {
                id: p.chain,
                version,
            };
            let n = members.len();
            let mut bad: Vec<String> = Vec::new();
            let mut stale = false;
            // Start at a member chosen by chunk, so reads spread over copies.
            for i in 0..n {
                let addr = &members[(p.chunk as usize + i) % n];
                let req = NodeRequest::Read {
                    cap: cap.clone(),
                    chain,
                    key: key.clone(),
                    offset: p.offset,
                    len: p.len,
                };
                match self.peers.get(addr).call(req).await {
                    Ok(NodeResponse::Data(d)) => {
                        // Without write rights the node whose copy failed
                        // heals it itself, from another member.
                        if !bad.is_empty() && cap.rights & WRITE != 0 {
                            self.repair(cap, chain, &key, p, addr, &bad).await;
                        }
                        return Ok(d);
                    }
                    Ok(NodeResponse::Failed(NodeError::Checksum)) => bad.push(addr.clone()),
                    Ok(NodeResponse::Failed(
                        NodeError::StaleChainTable { .. } | NodeError::NotMember,
                    )) => {
                        stale = true;
                        break;
                    }
                    Ok(NodeResponse::Failed(e @ NodeError::BadCapability)) => {
                        return Err(DataError::Node(e))
                    }
                    Ok(NodeResponse::Failed(e)) => last = e.to_string(),
                    Ok(other) => last = format!("{other:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            if !stale && !bad.is_empty() && bad.len() == n {
                return Err(DataError::Node(NodeError::Checksum));
            }
            tokio::time::sleep(delays.next().unwrap_or(RETRY_CAP)).await;
            self.refresh().await;
        }
        Err(DataError::Unreachable(p.chain, last))
    }

    /// Rewrites the blocks of `p` on the members whose copy failed, with
    /// the content of `good`.
    async fn repair(
        &self,
        cap: &Capability,
        chain: ChainRef,
        key: &ChunkKey,
        p: Piece,
        good: &str,
        bad: &[String],
    ) {
        let start = p.offset / BLOCK * BLOCK;
        let end = (p.offset + p.len).div_ceil(BLOCK) * BLOCK;
        let req = NodeRequest::Read {
            cap: cap.clone(),
            chain,
            key: key.clone(),
            offset: start,
            len: end - start,
        };
        let Ok(NodeResponse::Data(blocks)) = self.peers.get(good).call(req).await else {
            return;
        };
        for addr in bad {
            let fix = NodeRequest::Repair {
                cap: cap.clone(),
                chain,
                key: key.clone(),
                offset: start,
                data: blocks.to_vec(),
            };
            match self.peers.get(addr).call(fix).await {
                Ok(NodeResponse::Done) => {
                    tracing::info!(node = %addr, chunk = key.index, "bad copy repaired")
                }
                other => {
                    tracing::warn!(node = %addr, chunk = key.index, result = ?other.map(|_| ()), "repair failed")
                }
            }
        }
    }

    /// Cuts the file's data from `old_size` down to `new_size`: the chunk
    /// holding the new end, and every chunk past it up to the old end that
    /// exists (asked of each chain's head), never one request per chunk of
    /// the range, which for a sparse file could be billions.
    pub async fn truncate(
        &self,
        cap: &Capability,
        layout: &Layout,
        inode: u64,
        new_size: u64,
        old_size: u64,
    ) -> Result<(), DataError> {
        if new_size >= old_size {
            return Ok(());
        }
        layout.check()?;
        let cs = layout.chunk_size;
        let first = new_size / cs;
        let last = (old_size - 1) / cs;
        let mut chunks = vec![first];
        let mut chains = layout.chains.clone();
        chains.sort_unstable();
        chains.dedup();
        for chain in chains {
            for index in self.existing_chunks(cap, inode, chain, first + 1).await? {
                if index <= last && layout.chain_of(index) == chain {
                    chunks.push(index);
                }
            }
        }
        // In bounded batches: a file may hold many chunks.
        for batch in chunks.chunks(TRUNCATE_BATCH) {
            let ops = batch.iter().map(|&chunk| {
                let keep = if chunk == first { new_size % cs } else { 0 };
                let chain = layout.chain_of(chunk);
                let key = ChunkKey {
                    fs: cap.fs.clone(),
                    inode,
                    index: chunk,
                    chain,
                };
                async move {
                    self.to_head(chain, |c| NodeRequest::Truncate {
                        cap: cap.clone(),
                        chain: c,
                        key: key.clone(),
                        len: keep,
                        forwarded: None,
                    })
                    .await
                    .map(|_| ())
                }
            });
            for r in join_all(ops).await {
                r?;
            }
        }
        Ok(())
    }

    /// Indexes of the chunks of `inode` the head of `chain` holds, from
    /// `from` up (every copy of a chain has what its head has).
    async fn existing_chunks(
        &self,
        cap: &Capability,
        inode: u64,
        chain: u32,
        from: u64,
    ) -> Result<Vec<u64>, DataError> {
        let mut out = Vec::new();
        let mut from = Some(from);
        while let Some(at) = from {
            let page = self
                .to_head(chain, |c| NodeRequest::ListChunks {
                    cap: cap.clone(),
                    chain: c,
                    fs: cap.fs.clone(),
                    inode,
                    from: at,
                })
                .await?;
            let NodeResponse::Chunks(page) = page else {
                return Err(DataError::Unreachable(chain, format!("{page:?}")));
            };
            from = match page.last() {
                Some(&l) if page.len() >= MAX_LISTED_CHUNKS && l >= at => l.checked_add(1),
                _ => None,
            };
            out.extend(page);
        }
        Ok(out)
    }

    /// Makes the file's data durable on every node of its chains.
    pub async fn fsync(
        &self,
        cap: &Capability,
        layout: &Layout,
        inode: u64,
    ) -> Result<(), DataError> {
        // Idempotent, so it is retried like a write: a node that restarts
        // while the program waits is a stall, not EIO.
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + FAILOVER_BUDGET;
        let mut delays = retry_delays();
        while tokio::time::Instant::now() < deadline {
            let mut addrs: Vec<String> = Vec::new();
            for c in &layout.chains {
                let (m, _) = self.members(*c).await?;
                for a in m {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            let version = self.chain_version().await;
            let calls = addrs.iter().map(|a| {
                let req = NodeRequest::Fsync {
                    cap: cap.clone(),
                    fs: cap.fs.clone(),
                    inode,
                };
                // A node that went silent is waited for only until the
                // table changes: the new one may not hold it.
                self.call_routed(a, req, move |t: &ChainTable| t.version == version)
            });
            let mut all_done = true;
            for r in join_all(calls).await {
                let Some(r) = r else {
                    all_done = false;
                    last = "the chain table changed".into();
                    continue;
                };
                match r {
                    Ok(NodeResponse::Done) => {}
                    Ok(NodeResponse::Failed(e)) if transient(&e) => {
                        all_done = false;
                        last = e.to_string();
                    }
                    Ok(NodeResponse::Failed(e)) => return Err(DataError::Node(e)),
                    Ok(other) => return Err(DataError::Unreachable(0, format!("{other:?}"))),
                    Err(e) => {
                        all_done = false;
                        last = e.to_string();
                    }
                }
            }
            if all_done {
                return Ok(());
            }
            tokio::time::sleep(delays.next().unwrap_or(RETRY_CAP)).await;
            self.refresh().await;
        }
        Err(DataError::Unreachable(0, last))
    }

    /// Sends an administrative request to every node of the table.
    pub async fn broadcast(&self, req: NodeRequest) -> Result<(), String> {
        let t = self.table.read().await.clone();
        let mut addrs: Vec<String> = t
            .chains
            .iter()
            .flat_map(|c| {
                c.members
                    .iter()
                    .map(|m| m.address.clone())
                    .chain(c.syncing.iter().map(|s| s.node.address.clone()))
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        for a in addrs {
            match self.peers.get(&a).call(req.clone()).await {
                Ok(NodeResponse::Done) => {}
                other => return Err(format!("{a}: {other:?}")),
            }
        }
        Ok(())
    }
}

/// Polls futures concurrently in this task and returns their outputs in order.
pub async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    // poll_fn returned, so every slot is filled: nothing is dropped here.
    out.into_iter().flatten().collect()
}
