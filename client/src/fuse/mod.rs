//! `cpfs mount`: the FUSE client. Every kernel request is answered from a
//! task on the tokio runtime, so no FUSE thread waits on the
//! network; file data goes straight to the nodes (striped, in parallel),
//! namespace operations to the metadata service.
//!
//! Consistency: close-to-open. A write is answered once queued in the
//! mount's write-behind (write_behind.rs; written through for O_SYNC and
//! O_DSYNC), which fsync and close wait for; a write that extends a file
//! records the new size first (so a full file system fails the write with
//! ENOSPC before any data moves); open() fetches fresh attributes and,
//! when they changed, drops what the kernel cached for the inode.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, Filesystem, INodeNo, InitFlags, KernelConfig, Notifier, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use tokio::runtime::Handle;

use cpfs_proto::capability::WRITE;
use cpfs_proto::meta::{errno, MetaOp, MetaReply, SetAttr};

use crate::data::DataClient;
use crate::meta::MetaClient;

mod attr;
mod caller;
mod dirs;
mod file_ops;
mod inline;
mod invalidate;
mod open_files;
mod readahead;
mod releases;
mod simple_ops;
mod sizes;
mod write_behind;
mod writers;
mod xattr;

pub use attr::file_attr;
use attr::to_ns;
use caller::caller;
use dirs::DirListing;
pub use invalidate::Invalidator;
use open_files::{kernel_attr, pin, unpin, FileHandle, OpenInodes};
use releases::Releases;
use sizes::{note_write, set_attr, settle};
use write_behind::WriteBehind;
pub use xattr::parse_stripe;

/// How long the kernel may keep entries (also negative ones) and
/// attributes: long, because the service tells this mount when another
/// client changes them (see [`Invalidator`]).
const TTL: Duration = crate::dir_attrs::ATTR_TTL;
pub use xattr::STRIPE_XATTR;

pub struct CpfsFs {
    rt: Handle,
    meta: Arc<MetaClient>,
    data: Arc<DataClient>,
    files: Arc<Mutex<HashMap<u64, Arc<FileHandle>>>>,
    inodes: OpenInodes,
    dirs: Arc<Mutex<HashMap<u64, Arc<DirListing>>>>,
    recent: Arc<dirs::Recent>,
    next_fh: AtomicU64,
    /// Size and mtime last shown to the kernel per inode (to know when a
    /// fresh open must drop the kernel's cache).
    shown: Arc<Mutex<HashMap<u64, (u64, i64)>>>,
    notifier: Arc<OnceLock<Notifier>>,
    releases: Arc<Releases>,
    behind: Arc<WriteBehind>,
    /// The kernel keeps buffered writes in its page cache and sends them
    /// later, in large pieces (`cpfs mount --writeback-cache`, see
    /// [`CpfsFs::writeback_cache`]).
    writeback: bool,
}

impl CpfsFs {
    pub fn new(
        rt: Handle,
        meta: Arc<MetaClient>,
        data: Arc<DataClient>,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> CpfsFs {
        CpfsFs {
            releases: Releases::new(rt.clone(), meta.clone()),
            behind: WriteBehind::new(rt.clone(), data.clone()),
            rt,
            meta,
            data,
            files: Arc::default(),
            inodes: Arc::default(),
            dirs: Arc::default(),
            recent: Arc::default(),
            next_fh: AtomicU64::new(1),
            shown: Arc::default(),
            notifier,
            writeback: false,
        }
    }

    /// Lets the kernel cache buffered writes (FUSE_WRITEBACK_CACHE): a
    /// write() lands in the page cache and reaches this mount when the
    /// kernel writes the pages back (at the latest at close or fsync, which
    /// wait for them), so small writes arrive merged. The kernel then keeps
    /// its own size and mtime of a cached file: a growth by another mount
    /// shows here only once the kernel forgets the inode. Errors of the
    /// writes (ENOSPC, EDQUOT, EIO) come at fsync or close, not at write().
    pub fn writeback_cache(mut self, on: bool) -> CpfsFs {
        self.writeback = on;
        self
    }

    /// The open file behind a kernel file handle.
    fn handle(&self, fh: u64) -> Option<Arc<FileHandle>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    /// The listing read at opendir behind a directory handle.
    fn listing(&self, fh: u64) -> Option<Arc<DirListing>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    /// The task that keeps this mount's kernel caches true to what other
    /// clients change; spawn it before the FUSE session starts.
    pub fn invalidator(&self) -> Invalidator {
        Invalidator {
            meta: self.meta.clone(),
            notifier: self.notifier.clone(),
            shown: self.shown.clone(),
            data: self.data.clone(),
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Filesystem for CpfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        // Listings come with attributes (readdirplus), always: the service
        // sends them with every page anyway.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        if self.writeback
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!("the kernel has no writeback cache for FUSE; writes go through");
            self.writeback = false;
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        self.lookup_op(req, parent, name.as_bytes(), reply)
    }

    fn getattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        // A directory this mount just changed (the service said what its
        // attributes became, dir_attrs.rs), or one the last listing of its
        // parent showed, unchanged since.
        let known = (self.meta.dirs.get(ino).map(|a| (a, TTL)))
            .or_else(|| self.recent.listed.get(&self.meta, ino));
        if let Some((a, ttl)) = known {
            return reply.attr(&ttl, &kernel_attr(&self.inodes, &a));
        }
        let meta = self.meta.clone();
        let who = caller(req);
        let shown = self.shown.clone();
        let inodes = self.inodes.clone();
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::GetAttr { ino }).await {
                Ok(MetaReply::Attr(a)) => {
                    shown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(a.ino, (a.size, a.mtime_ns));
                    reply.attr(&TTL, &kernel_attr(&inodes, &a))
                }
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let fh = fh.map(|f| f.0);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime_ns: atime.map(to_ns),
            mtime_ns: mtime.map(to_ns),
            written: None,
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        let who = caller(req);
        let handle = fh.and_then(|f| self.handle(f));
        let inodes = self.inodes.clone();
        inline::run(&self.rt, async move {
            // A size change must reach every open handle of the inode
            // (open(O_TRUNC) comes without one), as must times set after
            // writes (see sizes.rs); the inode's state is pinned for the
            // call, so an open racing it waits for its answer.
            let st = (size.is_some() || mtime.is_some()).then(|| pin(&inodes, ino, None));
            let r = set_attr(
                &meta,
                &data,
                &who,
                ino,
                set,
                handle.as_deref(),
                st.as_deref(),
            )
            .await;
            if st.is_some() {
                unpin(&inodes, ino);
            }
            match r {
                Ok(a) => reply.attr(&TTL, &kernel_attr(&inodes, &a)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let ino = ino.0;
        let meta = self.meta.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::Readlink { ino }).await {
                Ok(MetaReply::Link(t)) => reply.data(&t),
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        self.entry_op(
            req,
            MetaOp::Mknod {
                parent,
                name: name.as_bytes().to_vec(),
                mode,
                rdev,
                umask,
            },
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        self.entry_op(
            req,
            MetaOp::Mkdir {
                parent,
                name: name.as_bytes().to_vec(),
                mode,
                umask,
            },
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        self.empty_op(
            req,
            MetaOp::Unlink {
                parent,
                name: name.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        self.empty_op(
            req,
            MetaOp::Rmdir {
                parent,
                name: name.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        self.entry_op(
            req,
            MetaOp::Symlink {
                parent,
                name: link_name.as_bytes().to_vec(),
                target: target.as_os_str().as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (parent, newparent, flags) = (parent.0, newparent.0, flags.bits());
        self.empty_op(
            req,
            MetaOp::Rename {
                parent,
                name: name.as_bytes().to_vec(),
                new_parent: newparent,
                new_name: newname.as_bytes().to_vec(),
                flags,
            },
            reply,
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (ino, newparent) = (ino.0, newparent.0);
        self.entry_op(
            req,
            MetaOp::Link {
                ino,
                new_parent: newparent,
                new_name: newname.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        self.open_op(caller(req), ino.0, flags.0, reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.as_bytes().to_vec();
        self.create_op(caller(req), parent.0, name, (mode, umask), flags, reply)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let fh = fh.0;
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::from_i32(libc::EBADF));
        };
        let data = self.data.clone();
        inline::run(&self.rt, async move {
            match h.read(&data, offset, size as u64).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => {
                    tracing::warn!(ino = h.ino, offset, error = %e, "read failed");
                    reply.error(Errno::from_i32(e.errno()))
                }
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        buf: &[u8],
        _wf: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let fh = fh.0;
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::from_i32(libc::EBADF));
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        // Pages written back come from the kernel, not from the program
        // that wrote them (no one it could name): they are the opener's.
        let who = if self.writeback {
            h.cap.opener().clone()
        } else {
            caller(req)
        };
        let buf = buf.to_vec();
        h.writers.wrote(if self.writeback { 0 } else { req.pid() });
        let notifier = self.notifier.clone();
        let behind = self.behind.clone();
        inline::run(&self.rt, async move {
            let end = offset + buf.len() as u64;
            if let Err(e) = note_write(&meta, &who, &h, end, &notifier).await {
                return reply.error(Errno::from_i32(e));
            }
            let len = buf.len() as u32;
            match FileHandle::write(&h, &data, &behind, offset, buf).await {
                Ok(()) => reply.written(len),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _lock: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let writes = &h.inode.writes;
        if !h.needs_record() && !writes.busy() && !writes.failed() {
            // Nothing to push: answered here, without waking the runtime.
            return reply.ok();
        }
        let meta = self.meta.clone();
        let who = caller(req);
        let closer = req.pid();
        let writeback = self.writeback;
        inline::run(&self.rt, async move {
            // A process that only inherited the descriptor (see writers.rs).
            // Pages written back may have come through any handle of the
            // file: every close waits for them.
            if !writeback && !h.writers.includes(closer) {
                return reply.ok();
            }
            if let Err(e) = h.inode.writes.drain().await {
                return reply.error(Errno::from_i32(e));
            }
            match settle(&meta, &who, &h).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: fuser::OpenFlags,
        _lock: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let Some(h) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        else {
            return reply.ok();
        };
        let meta = self.meta.clone();
        let who = caller(req);
        let inodes = self.inodes.clone();
        let releases = self.releases.clone();
        let writable = h.cap.get().rights & WRITE != 0;
        if !h.needs_record() && !h.inode.writes.busy() {
            // Nothing to push: the closing program need not wait for the
            // runtime, nor for the service (see releases.rs).
            unpin(&inodes, h.ino);
            reply.ok();
            releases.push(&who, h.ino, writable);
            return;
        }
        inline::run(&self.rt, async move {
            let r = match h.inode.writes.drain().await {
                Ok(()) => settle(&meta, &who, &h).await,
                Err(e) => Err(e),
            };
            unpin(&inodes, h.ino);
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
            releases.push(&who, h.ino, writable);
        });
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            if let Err(e) = h.inode.writes.drain().await {
                return reply.error(Errno::from_i32(e));
            }
            if let Err(e) = h.fsync(&data).await {
                tracing::warn!(ino = h.ino, error = %e, "fsync failed");
                return reply.error(Errno::from_i32(e.errno()));
            }
            match settle(&meta, &who, &h).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        let meta = self.meta.clone();
        let who = caller(req);
        let dirs = self.dirs.clone();
        let recent = self.recent.clone();
        let fh = self.fh();
        inline::run(&self.rt, async move {
            match recent.last.open(&meta, &who, ino, &recent.listed).await {
                Ok(listing) => {
                    dirs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(fh, listing);
                    reply.opened(fuser::FileHandle(fh), fuser::FopenFlags::empty())
                }
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let fh = fh.0;
        match self.listing(fh) {
            Some(listing) => dirs::reply_plain(&listing, offset, reply),
            None => reply.error(Errno::from_i32(libc::EBADF)),
        }
    }

    /// The listing with each entry's attributes: the kernel fills its
    /// dentry and attribute caches from it, so `ls -l` or `rm -r` need no
    /// lookup per name.
    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fh = fh.0;
        match self.listing(fh) {
            Some(listing) => dirs::reply_plus(&listing, offset, TTL, &self.inodes, reply),
            None => reply.error(Errno::from_i32(libc::EBADF)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: fuser::OpenFlags,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        reply.ok()
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let meta = self.meta.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::StatFs).await {
                Ok(MetaReply::StatFs(s)) => {
                    let bs = 4096u64;
                    let blocks = s.capacity_bytes / bs;
                    let free = s.capacity_bytes.saturating_sub(s.used_bytes) / bs;
                    reply.statfs(
                        blocks,
                        free,
                        free,
                        s.files + 1_000_000_000,
                        1_000_000_000,
                        bs as u32,
                        255,
                        bs as u32,
                    )
                }
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        if name.as_bytes() == STRIPE_XATTR.as_bytes() {
            let Some((chunk_size, stripe_width)) = parse_stripe(value) else {
                return reply.error(Errno::from_i32(errno::EINVAL));
            };
            return self.empty_op(
                req,
                MetaOp::SetStripe {
                    ino,
                    chunk_size,
                    stripe_width,
                },
                reply,
            );
        }
        // The service stores no ACLs or security labels and refuses them
        // (EOPNOTSUPP); `cp -a` tries one per file it copies, so the answer
        // is given here without a round trip.
        if xattr::unsupported(name) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.empty_op(
            req,
            MetaOp::SetXattr {
                ino,
                name: name.as_bytes().to_vec(),
                value: value.to_vec(),
                flags: flags as u32,
            },
            reply,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        self.getxattr_op(req, ino, name, size, reply)
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        self.listxattr_op(req, ino, size, reply)
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let ino = ino.0;
        if xattr::unsupported(name) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.empty_op(
            req,
            MetaOp::RemoveXattr {
                ino,
                name: name.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let (ino, mask) = (ino.0, mask.bits());
        self.empty_op(
            req,
            MetaOp::Access {
                ino,
                mask: mask as u32,
            },
            reply,
        );
    }
}
