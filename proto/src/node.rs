//! The node protocol: what clients, other nodes and the metadata service
//! ask of a data node, and what it answers.

use serde::{Deserialize, Serialize};

use crate::capability::{Capability, NodeAuth};

/// Records (4 KiB blocks with their checksums) in one resync piece: 1 MiB
/// of data, so a piece is a small fraction of the frame limit.
pub const SYNC_PIECE_RECORDS: u64 = 256;

/// Most chunk indexes in one [`NodeResponse::Chunks`] answer.
pub const MAX_LISTED_CHUNKS: usize = 4096;
/// The most inodes one [`NodeRequest::DropInodes`] names.
pub const MAX_DROPPED_INODES: usize = 1024;

/// Checks that `[offset, offset + len)` lies inside a chunk of the largest
/// size a layout allows, before a node does any I/O or allocation for it.
/// A node does not know each file's layout; the largest chunk size bounds
/// what one request may make it read, write or allocate, and what it
/// stores is counted and reported (see `FsUsage::bytes_stored`).
pub fn check_range(offset: u64, len: u64) -> Result<u64, NodeError> {
    match offset.checked_add(len) {
        Some(end) if end <= crate::layout::MAX_CHUNK_SIZE => Ok(end),
        _ => Err(NodeError::OutOfRange { offset, len }),
    }
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
    /// applies it and forwards it to the other members with its node proof
    /// in `forwarded`; a member applies a forwarded change on that proof
    /// alone, so a client (which has none) can only send `None`, to a head.
    Write {
        cap: Capability,
        chain: ChainRef,
        key: ChunkKey,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        forwarded: Option<NodeAuth>,
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
        forwarded: Option<NodeAuth>,
    },
    /// Replaces whole blocks of one copy with good data (after a checksum
    /// failure on this node); not forwarded. Capability: WRITE (the data
    /// comes from the client; a reader's failed read is healed by the node
    /// itself, from another member).
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
    /// Usage counters of this node. They name every file system the node
    /// holds, so only the cluster may ask (a node proof).
    Stats { auth: NodeAuth },
    /// Indexes of the chunks of an inode this node holds on `chain`, from
    /// `from` up, in ascending order and at most [`MAX_LISTED_CHUNKS`] of
    /// them (ask again from the last one + 1 for more). A truncate asks
    /// the chain heads, so it cuts only chunks that exist instead of
    /// sending one request per chunk of the range. Capability: WRITE.
    ListChunks {
        cap: Capability,
        chain: ChainRef,
        fs: String,
        inode: u64,
        from: u64,
    },
    /// Resync (head → syncing member): a copy session of one chain begins;
    /// the member notes which of its chunks of the chain the head has not
    /// vouched for yet. Like every resync request, needs a node proof.
    SyncBegin { auth: NodeAuth, chain: ChainRef },
    /// The member's digest of one chunk (absent: None).
    SyncDigest {
        auth: NodeAuth,
        chain: ChainRef,
        key: ChunkKey,
    },
    /// One piece of the head's records of a chunk, starting at record
    /// `first`; pieces come in order from record 0 and the member's copy
    /// is replaced when the `last` one arrives, so a crash in between
    /// leaves the old copy. A chunk moves in pieces of at most
    /// [`SYNC_PIECE_RECORDS`] records, far under the frame limit that a
    /// whole 64 MiB chunk and its checksums exceed. `raw: None`: the head
    /// has no such chunk (the member removes its copy).
    SyncPut {
        auth: NodeAuth,
        chain: ChainRef,
        key: ChunkKey,
        first: u64,
        #[serde(with = "serde_bytes")]
        raw: Option<Vec<u8>>,
        last: bool,
    },
    /// One verified block of this node's copy, for repairing another copy
    /// (None: the node has no such chunk, or the block lies past its end;
    /// unlike `Read`, absence is not reported as zeros). Node proof.
    ReadBlock {
        auth: NodeAuth,
        chain: ChainRef,
        key: ChunkKey,
        block: u64,
    },
    /// The session is complete: the member removes chunks of the chain the
    /// head neither sent nor wrote since `SyncBegin` (deleted while it was
    /// away).
    SyncEnd { auth: NodeAuth, chain: ChainRef },
    /// Removes every chunk of each inode (files deleted), at most
    /// [`MAX_DROPPED_INODES`] of them: the metadata service collects a
    /// deleted tree's files with one request per node, not one per file.
    DropInodes {
        cap: Capability,
        fs: String,
        inodes: Vec<u64>,
    },
    /// Writes to chunks of one chain of one file system, applied in order
    /// as if sent one after the other: what a client's write-behind
    /// gathered while its previous batch to the chain was out. At most
    /// [`MAX_BATCHED_WRITES`] of them; the head forwards them as one batch.
    WriteBatch {
        chain: ChainRef,
        writes: Vec<ChunkWrite>,
        forwarded: Option<NodeAuth>,
    },
}

/// The most writes one [`NodeRequest::WriteBatch`] carries.
pub const MAX_BATCHED_WRITES: usize = 256;

/// One write of a [`NodeRequest::WriteBatch`], under its own capability
/// (a batch may hold several files). The data is shared, not copied, when
/// the write is cloned (retries, forwarding) and when it is decoded (a
/// view of its frame); on the wire it is the same length-prefixed bytes as
/// a `serde_bytes` vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkWrite {
    pub cap: Capability,
    pub key: ChunkKey,
    pub offset: u64,
    #[serde(
        serialize_with = "crate::payload::serialize",
        deserialize_with = "crate::payload::deserialize"
    )]
    pub data: bytes::Bytes,
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
    /// An offset or length past the largest chunk (or one whose sum
    /// overflows): refused before any I/O.
    OutOfRange {
        offset: u64,
        len: u64,
    },
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
            NodeError::OutOfRange { offset, len } => write!(
                f,
                "offset {offset} + length {len} lies past the largest chunk ({} bytes)",
                crate::layout::MAX_CHUNK_SIZE
            ),
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
    /// The file system's I/O as its clients see it: each request counted
    /// once, by the node that served it (the head, for a write), where the
    /// counters above count every copy.
    #[serde(default)]
    pub served: ServedIo,
    /// Time client requests of the file system waited for its QoS share
    /// on this node since it started, in microseconds (the control plane
    /// gives more of the file system's limit to nodes whose requests wait).
    #[serde(default)]
    pub qos_wait_us: u64,
}

/// Requests a node served to clients for one file system since it started:
/// counts, bytes and the time spent serving them (a write's includes its
/// forwarding to the replicas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedIo {
    pub reads: u64,
    pub read_bytes: u64,
    pub read_us: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub write_us: u64,
}

impl ServedIo {
    /// What was served between `earlier` and `self`. A counter below its
    /// earlier value means the node restarted: all of it is new.
    pub fn since(&self, earlier: &ServedIo) -> ServedIo {
        let restarted = self.reads < earlier.reads
            || self.writes < earlier.writes
            || self.read_bytes < earlier.read_bytes
            || self.write_bytes < earlier.write_bytes
            || self.read_us < earlier.read_us
            || self.write_us < earlier.write_us;
        if restarted {
            return *self;
        }
        ServedIo {
            reads: self.reads - earlier.reads,
            read_bytes: self.read_bytes - earlier.read_bytes,
            read_us: self.read_us - earlier.read_us,
            writes: self.writes - earlier.writes,
            write_bytes: self.write_bytes - earlier.write_bytes,
            write_us: self.write_us - earlier.write_us,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reads == 0 && self.writes == 0
    }
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
    /// Requests served by kind (read, write, ...) since the node started.
    #[serde(default)]
    pub ops: Vec<crate::telemetry::OpStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResponse {
    Done,
    /// Read data; decoded as a view of the reply's frame.
    Data(
        #[serde(
            serialize_with = "crate::payload::serialize",
            deserialize_with = "crate::payload::deserialize"
        )]
        bytes::Bytes,
    ),
    Stats(NodeStats),
    Digest(Option<(u64, u32)>),
    Block(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// Chunk indexes, for [`NodeRequest::ListChunks`].
    Chunks(Vec<u64>),
    Failed(NodeError),
}

impl crate::rpc::Outcome for NodeResponse {
    fn failed(&self) -> bool {
        matches!(self, NodeResponse::Failed(_))
    }
}

/// A connection to one node.
pub type NodeClient = crate::rpc::Client<NodeRequest, NodeResponse>;
/// Connections to many nodes, by address.
pub type NodePeers = crate::rpc::Pool<NodeRequest, NodeResponse>;
