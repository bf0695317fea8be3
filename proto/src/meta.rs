//! Messages between clients and the metadata service (same framing as the
//! node protocol). Every request names its session and the caller's
//! identity; the service decides what that identity may do.

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::chains::ChainTable;
use crate::layout::Layout;

pub const ROOT_INO: u64 = 1;
pub const NAME_MAX: usize = 255;
/// Capacity a create sets aside for the new file's first writes, when the
/// file system's capacity and the limits allow it (a create never fails
/// for want of it): a small file is then written and its size recorded
/// once, at close, instead of once before its data moves and again at
/// close. Given back with the creator's last writable handle.
pub const CREATE_RESERVE: u64 = 64 << 10;

/// How long after sending a Watch a client may still answer lookups in the
/// directories delegated to it, once that Watch's answer arrived (it knew
/// every recall queued before the service answered). The service gives a
/// recall [`DELEGATION_RECALL`] before it acts without the holder's
/// acknowledgement, and answers the Watch of a holder at least every
/// [`DELEGATION_RENEW`], so a live holder never lapses.
pub const DELEGATION_LEASE: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a change waits for the holder of a delegation to acknowledge
/// its recall: more than [`DELEGATION_LEASE`], so that a holder that never
/// answers has stopped using it by then.
pub const DELEGATION_RECALL: std::time::Duration = std::time::Duration::from_secs(4);
/// A delegation ends this long after the mkdir that was granted it was
/// sent (the client counts from the sending, the service from the grant,
/// which comes later).
pub const DELEGATION_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest the Watch of a session holding delegations waits.
pub const DELEGATION_RENEW: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    pub fn code(self) -> i64 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Symlink => 3,
            Kind::Fifo => 4,
            Kind::CharDev => 5,
            Kind::BlockDev => 6,
            Kind::Socket => 7,
        }
    }

    pub fn from_code(c: i64) -> Kind {
        match c {
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::CharDev,
            6 => Kind::BlockDev,
            7 => Kind::Socket,
            _ => Kind::File,
        }
    }

    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & 0o170000 {
            0o100000 | 0 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o010000 => Kind::Fifo,
            0o020000 => Kind::CharDev,
            0o060000 => Kind::BlockDev,
            0o140000 => Kind::Socket,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    /// Permission bits and setuid/setgid/sticky (no type bits).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// The bytes of a file's data that count as used, as `du` counts them:
    /// the furthest any write reached, at most `size`. A truncate that
    /// extends a file stores nothing and counts nothing (0 for others).
    pub stored: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub rdev: u32,
}

/// Who is asking (after squashing, the metadata service decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `Some(None)` means "now".
    pub atime_ns: Option<Option<i64>>,
    pub mtime_ns: Option<Option<i64>>,
    /// With times and no size only: the size this client's writes reached
    /// through a handle it holds open for writing, recorded as
    /// [`MetaOp::Written`] would, in the same change and before the times
    /// are set (so a program setting times after writing, as `cp -a` does,
    /// makes one call, not two). Refused with EBADF without such a handle.
    pub written: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaOp {
    /// Starts a session on a mount target (first call of a mount).
    Mount {
        domain: String,
    },
    Lookup {
        parent: u64,
        name: Vec<u8>,
    },
    GetAttr {
        ino: u64,
    },
    SetAttr {
        ino: u64,
        set: SetAttr,
    },
    /// Creates a node of any kind (files, fifos, devices, sockets).
    Mknod {
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        rdev: u32,
        umask: u32,
    },
    Mkdir {
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
    },
    /// Creates a regular file and opens it, in one round trip.
    Create {
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        umask: u32,
        read: bool,
    },
    Symlink {
        parent: u64,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    Readlink {
        ino: u64,
    },
    Link {
        ino: u64,
        new_parent: u64,
        new_name: Vec<u8>,
    },
    Unlink {
        parent: u64,
        name: Vec<u8>,
    },
    Rmdir {
        parent: u64,
        name: Vec<u8>,
    },
    /// `flags`: RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2.
    Rename {
        parent: u64,
        name: Vec<u8>,
        new_parent: u64,
        new_name: Vec<u8>,
        flags: u32,
    },
    /// Opens a file: checks access, returns its layout and a capability.
    Open {
        ino: u64,
        read: bool,
        write: bool,
    },
    /// One handle of the file is closed on this client (`writable`: one
    /// opened for writing).
    Release {
        ino: u64,
        writable: bool,
    },
    /// Several handles closed on this client, each (inode, writable) as
    /// in [`MetaOp::Release`], at most [`MAX_RELEASES`]: a client gathers
    /// the releases nobody waits for and sends them together.
    ReleaseMany {
        handles: Vec<(u64, bool)>,
    },
    /// A fresh capability for one this service issued (expired or not)
    /// for a file the client holds open: the grant and the caller's
    /// identity are decided anew; the rights are at most the old ones and
    /// what the grant allows now. Answered [`MetaReply::Renewed`].
    Renew {
        cap: Capability,
    },
    /// Checks `mask` (R=4, W=2, X=1) for the caller.
    Access {
        ino: u64,
        mask: u32,
    },
    /// Entries of a directory after `after` (a name), up to `limit`.
    ReadDir {
        ino: u64,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// After writes: the file's data reaches `size` (its size is at least
    /// that, and so are its stored bytes); mtime/ctime become now. Fails
    /// with ENOSPC when the file system's capacity would be exceeded, and
    /// EFBIG past the largest file size. `resumed`: the writes were made
    /// under an earlier session of this client (its handle was opened
    /// again for this call); when that session was evicted and what it
    /// wrote past the file's end was cut, the answer is EIO instead.
    Written {
        ino: u64,
        size: u64,
        resumed: bool,
    },
    StatFs,
    SetXattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
    },
    GetXattr {
        ino: u64,
        name: Vec<u8>,
    },
    ListXattr {
        ino: u64,
    },
    RemoveXattr {
        ino: u64,
        name: Vec<u8>,
    },
    /// The layout new files of a directory get, or a file's own layout.
    GetStripe {
        ino: u64,
    },
    SetStripe {
        ino: u64,
        chunk_size: u64,
        stripe_width: u32,
    },
    ChainTable,
    /// As `ReadDir`, with each entry's attributes (what the kernel's
    /// READDIRPLUS wants: a listing and the lookups of its names at once).
    ReadDirPlus {
        ino: u64,
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// Waits up to `wait_ms` (the service caps it) for changes other
    /// clients made to what this session has seen, and returns them (see
    /// [`Change`]). A mount keeps one of these outstanding.
    Watch {
        wait_ms: u32,
    },
    /// As `Mount`, with a subtree as the mount's root: the session sees
    /// that directory as inode 1 and nothing above it. (A variant of its
    /// own, after every other, so that older clients' frames still decode.)
    MountAt {
        domain: String,
        root: MountRoot,
    },
    /// Sets capacity aside for writes ahead: the file's stored bytes (what
    /// counts against the capacity and the quotas) reach `upto` while its
    /// size stays. The client then grows the file up to there without a
    /// call per write, and records the size it reached with `Written` at
    /// flush, fsync and close (and about once a second while it writes).
    /// What was set aside and not written is given back when the session
    /// releases its last writable handle of the file. Fails with EDQUOT or
    /// ENOSPC when the limits leave less (the client then records each
    /// growth exactly, as before); capped at the largest file size.
    Reserve {
        ino: u64,
        upto: u64,
    },
}

/// The names of [`MetaOp`]'s kinds, as metrics label them; a kind's
/// position here is [`MetaOp::kind`].
pub const META_OP_NAMES: [&str; 32] = [
    "mount",
    "lookup",
    "getattr",
    "setattr",
    "mknod",
    "mkdir",
    "create",
    "symlink",
    "readlink",
    "link",
    "unlink",
    "rmdir",
    "rename",
    "open",
    "release",
    "renew",
    "access",
    "readdir",
    "written",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "get_stripe",
    "set_stripe",
    "chain_table",
    "readdirplus",
    "watch",
    "mount_at",
    "release_many",
    "reserve",
];

/// The most handles one [`MetaOp::ReleaseMany`] names.
pub const MAX_RELEASES: usize = 1024;

impl MetaOp {
    /// The operation's kind: its index in [`META_OP_NAMES`].
    pub fn kind(&self) -> usize {
        match self {
            MetaOp::Mount { .. } => 0,
            MetaOp::Lookup { .. } => 1,
            MetaOp::GetAttr { .. } => 2,
            MetaOp::SetAttr { .. } => 3,
            MetaOp::Mknod { .. } => 4,
            MetaOp::Mkdir { .. } => 5,
            MetaOp::Create { .. } => 6,
            MetaOp::Symlink { .. } => 7,
            MetaOp::Readlink { .. } => 8,
            MetaOp::Link { .. } => 9,
            MetaOp::Unlink { .. } => 10,
            MetaOp::Rmdir { .. } => 11,
            MetaOp::Rename { .. } => 12,
            MetaOp::Open { .. } => 13,
            MetaOp::Release { .. } => 14,
            MetaOp::Renew { .. } => 15,
            MetaOp::Access { .. } => 16,
            MetaOp::ReadDir { .. } => 17,
            MetaOp::Written { .. } => 18,
            MetaOp::StatFs => 19,
            MetaOp::SetXattr { .. } => 20,
            MetaOp::GetXattr { .. } => 21,
            MetaOp::ListXattr { .. } => 22,
            MetaOp::RemoveXattr { .. } => 23,
            MetaOp::GetStripe { .. } => 24,
            MetaOp::SetStripe { .. } => 25,
            MetaOp::ChainTable => 26,
            MetaOp::ReadDirPlus { .. } => 27,
            MetaOp::Watch { .. } => 28,
            MetaOp::MountAt { .. } => 29,
            MetaOp::ReleaseMany { .. } => 30,
            MetaOp::Reserve { .. } => 31,
        }
    }
}

/// Which subtree a mount is confined to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountRoot {
    /// A CPFS access point of the mount target's file system.
    AccessPoint(String),
    /// An absolute path (`/data/team-a`).
    Path(String),
}

/// A change another client made, for this client's kernel caches. The
/// service sends a session the changes to inodes it named or was told
/// about (looked up, listed, created, opened), asynchronously: a change is
/// on its way when the client that made it gets its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The name in `parent` was created, removed or renamed: what the
    /// kernel holds for it (a positive or a negative entry) is stale.
    Entry { parent: u64, name: Vec<u8> },
    /// The inode's attributes changed; `data`: its contents too.
    Inode { ino: u64, data: bool },
}

impl Change {
    /// The inode the change is about: the directory of a name, or the
    /// inode itself.
    pub fn ino(&self) -> u64 {
        match self {
            Change::Entry { parent, .. } => *parent,
            Change::Inode { ino, .. } => *ino,
        }
    }
}

/// Names one operation of one client across all its retries. A client
/// retries an operation whose answer it did not get (the connection broke,
/// the service restarted), but the first attempt may have been applied: the
/// service applies an operation that is not idempotent (create, mkdir,
/// link, unlink, rename, xattr changes) once per id and answers a retry of
/// an applied one as the first attempt succeeded, not with EEXIST or ENOENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// Chosen at random by the client when it starts.
    pub client: u64,
    /// Counts the client's operations.
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaRequest {
    pub session: u64,
    pub caller: Caller,
    pub op: MetaOp,
    /// `None` asks for no protection against a repeated application.
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenFile {
    pub attr: Attr,
    pub layout: Layout,
    pub cap: Capability,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mounted {
    pub session: u64,
    pub fs: String,
    pub root: Attr,
    pub chain_table: ChainTable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsStat {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub files: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaReply {
    Mounted(Mounted),
    Attr(Attr),
    Entry(Attr),
    Link(Vec<u8>),
    Open(OpenFile),
    Renewed(Capability),
    Dir {
        entries: Vec<DirEntry>,
        more: bool,
    },
    StatFs(FsStat),
    Xattr(Vec<u8>),
    XattrNames(Vec<Vec<u8>>),
    Stripe {
        chunk_size: u64,
        stripe_width: u32,
    },
    Chains(ChainTable),
    /// Entries with their attributes. `searchable`: the caller may look
    /// the names up (search permission on the directory); when not, the
    /// client must not let the kernel keep the entries.
    DirPlus {
        entries: Vec<(DirEntry, Attr)>,
        searchable: bool,
        more: bool,
        /// The directory's `..` (itself at the mount's root), so that a
        /// listing needs no lookup of it.
        parent: u64,
    },
    /// What a [`MetaOp::Watch`] waited for. `lost`: changes were dropped
    /// (the session is new, or it fell too far behind): whatever the
    /// client cached may be stale. `lease_ms`: for how long after sending
    /// this Watch the client may use its delegations (at most
    /// [`DELEGATION_LEASE`], and never past the end of the service's own
    /// lease on the file system: no other server can own it before).
    Changes {
        changes: Vec<Change>,
        lost: bool,
        lease_ms: u32,
    },
    Done,
    /// `reply` to an operation that changed directories' entries (create,
    /// unlink, mkdir, rmdir, rename, ...), with those directories'
    /// attributes after the change: the kernel asks for them before the
    /// next operation in the directory, and the client answers that itself.
    ///
    /// `delegated_ms`: not 0 when a directory the operation made is
    /// delegated to the session (its names change only through the
    /// session, or after the service recalled the delegation through the
    /// Watch and the session acknowledged by watching again): the client
    /// may answer lookups of names it does not hold there itself, for this
    /// long after sending the request (bounded as a Watch's `lease_ms`).
    Changed {
        dirs: Vec<Attr>,
        reply: Box<MetaReply>,
        delegated_ms: u32,
    },
    /// A POSIX errno, and a message for the log.
    Err {
        errno: i32,
        message: String,
    },
}

impl MetaReply {
    /// The reply itself, without the directories' attributes a
    /// [`MetaReply::Changed`] carries with it.
    pub fn without_dirs(self) -> MetaReply {
        match self {
            MetaReply::Changed { reply, .. } => *reply,
            other => other,
        }
    }
}

pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const ESTALE: i32 = 116;
    /// A fileset's (or a user's or group's) quota is reached.
    pub const EDQUOT: i32 = 122;
    /// Not an errno a program ever sees: this server does not own the
    /// file system (it moved, or the lease lapsed); the client asks the
    /// control plane where it is now and retries there.
    pub const EMOVED: i32 = -2;
}

impl crate::rpc::Outcome for MetaReply {
    fn failed(&self) -> bool {
        matches!(self, MetaReply::Err { .. })
    }
}

/// A connection to the metadata service.
pub type MetaClient = crate::rpc::Client<MetaRequest, MetaReply>;
