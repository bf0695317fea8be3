//! The wire protocol: every frame is `u32 length | u64 request id | body`,
//! the body a bincode message. Requests and responses carry the id, so one
//! TCP connection carries many requests at once and replies may come back
//! in any order.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::capability::Capability;

/// Largest frame accepted (a 64 MiB chunk write plus headers).
pub const MAX_FRAME: usize = (64 << 20) + 4096;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error("connection closed")]
    Closed,
}

/// Encodes one frame (header and body) into a buffer.
pub fn encode_frame<T: Serialize>(id: u64, msg: &T) -> Result<Vec<u8>, WireError> {
    let size =
        bincode::serialized_size(msg).map_err(|e| WireError::Decode(e.to_string()))? as usize;
    if size + 8 > MAX_FRAME {
        return Err(WireError::TooLarge(size));
    }
    let mut out = Vec::with_capacity(12 + size);
    out.extend_from_slice(&((size + 8) as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    bincode::serialize_into(&mut out, msg).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(out)
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    id: u64,
    msg: &T,
) -> Result<(), WireError> {
    let frame = encode_frame(id, msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<(u64, T), WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(8..=MAX_FRAME).contains(&len) {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let id = u64::from_le_bytes(
        buf[..8]
            .try_into()
            .map_err(|_| WireError::Decode("short frame".into()))?,
    );
    let msg = bincode::deserialize(&buf[8..]).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok((id, msg))
}

/// Where a chunk lives in the namespace of a node. The chain is part of a
/// chunk's identity: a file's layout fixes the chain of each of its chunks
/// for good (only the chain's members change), and a node needs it to
/// resync, rebalance, scrub and collect one chain's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkKey {
    pub fs: String,
    pub inode: u64,
    pub index: u64,
    pub chain: u32,
}

/// The chain a request was routed through, and the table version used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRef {
    pub id: u32,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeRequest {
    /// Writes `data` at `offset` in the chunk. Sent to the chain head, which
    /// applies it and forwards it (`forwarded = true`) to the other members.
    Write {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        forwarded: bool,
    },
    /// Reads `len` bytes at `offset`; holes read as zeros.
    Read {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        offset: u64,
        len: u64,
    },
    /// Cuts the chunk to `len` bytes (0 removes it). Through the head, like writes.
    Truncate {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        len: u64,
        forwarded: bool,
    },
    /// Replaces whole blocks of one copy with good data (after a checksum
    /// failure on this node); not forwarded.
    Repair {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Makes every written chunk of the inode durable.
    Fsync {
        cap: Capability,
        fs: String,
        inode: u64,
    },
    /// Removes every chunk of an inode (file deleted).
    DropInode {
        cap: Capability,
        fs: String,
        inode: u64,
    },
    /// Usage counters of this node.
    Stats,
    /// Resync (head → syncing member): a copy session of one chain begins;
    /// the member notes which of its chunks of the chain the head has not
    /// vouched for yet. Capability: fs "" (the cluster), ADMIN.
    SyncBegin { cap: Capability, chain: ChainRef },
    /// The member's digest of one chunk (absent: None).
    SyncDigest {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
    },
    /// Replaces the member's copy of a chunk with the head's records
    /// (None: the head has no such chunk).
    SyncPut {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        #[serde(with = "serde_bytes")]
        raw: Option<Vec<u8>>,
    },
    /// One verified block of this node's copy, for repairing another copy
    /// (None: the node has no such chunk, or the block lies past its end;
    /// unlike `Read`, absence is not reported as zeros).
    ReadBlock {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        block: u64,
    },
    /// The session is complete: the member removes chunks of the chain the
    /// head neither sent nor wrote since `SyncBegin` (deleted while it was
    /// away).
    SyncEnd { cap: Capability, chain: ChainRef },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeError {
    /// The request was routed with an older chain table; refresh and retry.
    StaleChainTable {
        current: u64,
    },
    /// This node is not (or no longer) where that chain's request goes.
    NotMember,
    BadCapability,
    /// The stored copy failed its checksum; read another member.
    Checksum,
    NoSpace,
    Io(String),
    Invalid(String),
    /// The node has not heard from the control plane within its lease and
    /// may already have been replaced: it serves nothing until it has.
    NoLease,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::StaleChainTable { current } => {
                write!(f, "stale chain table (node has version {current})")
            }
            NodeError::NotMember => f.write_str("not a member of that chain"),
            NodeError::BadCapability => f.write_str("capability refused"),
            NodeError::Checksum => f.write_str("checksum mismatch"),
            NodeError::NoSpace => f.write_str("no space left on the node"),
            NodeError::Io(e) => write!(f, "I/O error: {e}"),
            NodeError::Invalid(e) => write!(f, "invalid request: {e}"),
            NodeError::NoLease => {
                f.write_str("node lease expired (cut off from the control plane)")
            }
        }
    }
}

/// Per-file-system usage a node reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUsage {
    pub fs: String,
    pub bytes_stored: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Progress of one resync the node runs as a chain head.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub chain: u32,
    /// The member being filled.
    pub target: String,
    /// The table version that added it (names the session).
    pub since: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Bytes actually sent (chunks the member lacked or had stale).
    pub copied_bytes: u64,
    pub finished: bool,
    pub error: Option<String>,
}

/// The scrubber's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    pub passes: u64,
    pub scrubbed_bytes: u64,
    /// Unix seconds at the end of the last full pass (0: none yet).
    pub last_pass_end: i64,
    pub bad_blocks: u64,
    pub repaired_blocks: u64,
    /// Bad blocks no other member had a good copy of.
    pub unrecoverable_blocks: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node_id: String,
    pub chain_version: u64,
    pub checksum_errors: u64,
    pub repairs: u64,
    pub file_systems: Vec<FsUsage>,
    /// Bytes held per chain, as (chain, bytes).
    #[serde(default)]
    pub chain_bytes: Vec<(u32, u64)>,
    #[serde(default)]
    pub syncs: Vec<SyncReport>,
    #[serde(default)]
    pub scrub: ScrubReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResponse {
    Done,
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Stats(NodeStats),
    Digest(Option<(u64, u32)>),
    Block(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Failed(NodeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bound_their_size() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, 42, &NodeResponse::Data(vec![1, 2, 3]))
            .await
            .unwrap();
        let (id, msg): (u64, NodeResponse) = read_frame(&mut b).await.unwrap();
        assert_eq!(id, 42);
        assert!(matches!(msg, NodeResponse::Data(d) if d == vec![1, 2, 3]));
        // A hostile length prefix is refused before allocating.
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let r: Result<(u64, NodeResponse), _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(WireError::TooLarge(_))));
    }
}
