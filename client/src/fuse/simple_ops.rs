//! The two shapes most namespace operations share: a call answered with
//! an entry, and a call answered with nothing.

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};
use fuser::{Errno, Generation, INodeNo, ReplyEmpty, ReplyEntry, Request};

use super::caller::caller;
use super::inline;
use super::open_files::kernel_attr;
use super::{CpfsFs, TTL};

impl CpfsFs {
    pub(super) fn lookup_op(&self, req: &Request, parent: u64, name: &[u8], reply: ReplyEntry) {
        // "No such name" is kept by the kernel too (a negative entry): the
        // service invalidates it when another client creates the name. In
        // a directory delegated to this mount it is said here, and kept by
        // the kernel not at all: a recall must reach every next lookup.
        let who = caller(req);
        if self.meta.known_absent(parent, name, &who) {
            return reply.entry(&std::time::Duration::ZERO, &no_such_entry(), Generation(0));
        }
        let op = MetaOp::Lookup {
            parent,
            name: name.to_vec(),
        };
        self.entry_op_with(who, op, reply, true);
    }

    pub(super) fn entry_op(&self, req: &Request, op: MetaOp, reply: ReplyEntry) {
        self.entry_op_with(caller(req), op, reply, false)
    }

    /// As `entry_op`; `negative`: an ENOENT answer is given to the kernel as
    /// an entry for no inode, which it keeps for the TTL.
    pub(super) fn entry_op_with(&self, who: Caller, op: MetaOp, reply: ReplyEntry, negative: bool) {
        let meta = self.meta.clone();
        let shown = self.shown.clone();
        let inodes = self.inodes.clone();
        inline::run(&self.rt, async move {
            match meta.call(&who, op).await {
                Ok(MetaReply::Entry(a)) => {
                    shown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(a.ino, (a.size, a.mtime_ns));
                    reply.entry(&TTL, &kernel_attr(&inodes, &a), Generation(0))
                }
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(errno::ENOENT) if negative => {
                    reply.entry(&TTL, &no_such_entry(), Generation(0))
                }
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    pub(super) fn empty_op(&self, req: &Request, op: MetaOp, reply: ReplyEmpty) {
        let meta = self.meta.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            match meta.call(&who, op).await {
                Ok(MetaReply::Done) => reply.ok(),
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }
}

/// What the kernel takes as "no such name" to keep: an entry for inode 0.
fn no_such_entry() -> fuser::FileAttr {
    let t = std::time::UNIX_EPOCH;
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
