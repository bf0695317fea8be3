//! `cpfs mount`: the FUSE client. Every kernel request is answered from a
//! task on the tokio runtime, so the FUSE thread never waits on the
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
    Filesystem, KernelConfig, Notifier, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};
use tokio::runtime::Handle;

use cpfs_proto::capability::WRITE;
use cpfs_proto::meta::{errno, MetaOp, MetaReply, SetAttr};

use crate::data::DataClient;
use crate::meta::MetaClient;

mod attr;
mod caller;
mod dirs;
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
use open_files::{open_flags, pin, unpin, FileHandle, OpenInodes};
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
        }
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
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        // Listings come with attributes (readdirplus), always: the service
        // sends them with every page anyway.
        let _ = config.add_capabilities(fuser::consts::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.lookup_op(req, parent, name.as_bytes(), reply)
    }

    fn getattr(&mut self, req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        // A directory this mount just changed (the service said what its
        // attributes became, dir_attrs.rs), or one the last listing of its
        // parent showed, unchanged since.
        let known = (self.meta.dirs.get(ino).map(|a| (a, TTL)))
            .or_else(|| self.recent.listed.get(&self.meta, ino));
        if let Some((a, ttl)) = known {
            return reply.attr(&ttl, &file_attr(&a));
        }
        let meta = self.meta.clone();
        let who = caller(req);
        let shown = self.shown.clone();
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::GetAttr { ino }).await {
                Ok(MetaReply::Attr(a)) => {
                    shown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(a.ino, (a.size, a.mtime_ns));
                    reply.attr(&TTL, &file_attr(&a))
                }
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime_ns: atime.map(to_ns),
            mtime_ns: mtime.map(to_ns),
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
                Ok(a) => reply.attr(&TTL, &file_attr(&a)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&mut self, req: &Request<'_>, ino: u64, reply: ReplyData) {
        let meta = self.meta.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::Readlink { ino }).await {
                Ok(MetaReply::Link(t)) => reply.data(&t),
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
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
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
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

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.empty_op(
            req,
            MetaOp::Unlink {
                parent,
                name: name.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
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
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
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
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
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
        &mut self,
        req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
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

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let acc = flags & libc::O_ACCMODE;
        let (read, write) = (acc != libc::O_WRONLY, acc != libc::O_RDONLY);
        let write_through = flags & libc::O_DSYNC != 0;
        let meta = self.meta.clone();
        let who = caller(req);
        let files = self.files.clone();
        let inodes = self.inodes.clone();
        let (shown, data) = (self.shown.clone(), self.data.clone());
        let notifier = self.notifier.clone();
        let fh = self.fh();
        inline::run(&self.rt, async move {
            let st = pin(&inodes, ino, None);
            // The open's answer is the newest size only if no extending
            // write or truncate of this mount ends between its call and here.
            let sizing = st.sizing.lock().await;
            let r = meta.call(&who, MetaOp::Open { ino, read, write }).await;
            if let Ok(MetaReply::Open(o)) = &r {
                st.learn(&o.attr);
            }
            drop(sizing);
            match r {
                Ok(MetaReply::Open(o)) => {
                    let version = (o.attr.size, o.attr.mtime_ns);
                    let flags = open_flags(&shown, &notifier, &data, ino, version);
                    let h = FileHandle::new(o, st, &meta, &who, write_through);
                    files
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(fh, Arc::new(h));
                    reply.opened(fh, flags)
                }
                Ok(_) => {
                    unpin(&inodes, ino);
                    reply.error(errno::EIO)
                }
                Err(e) => {
                    unpin(&inodes, ino);
                    reply.error(e)
                }
            }
        });
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let meta = self.meta.clone();
        let who = caller(req);
        let files = self.files.clone();
        let inodes = self.inodes.clone();
        let shown = self.shown.clone();
        let fh = self.fh();
        let name = name.as_bytes().to_vec();
        let acc = flags & libc::O_ACCMODE;
        inline::run(&self.rt, async move {
            let op = MetaOp::Create {
                parent,
                name,
                mode,
                umask,
                read: acc != libc::O_WRONLY,
            };
            let o = match meta.call(&who, op).await {
                Ok(MetaReply::Open(o)) => o,
                Ok(_) => return reply.error(errno::EIO),
                Err(e) => return reply.error(e),
            };
            let a = o.attr.clone();
            shown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.ino, (a.size, a.mtime_ns));
            let st = pin(&inodes, a.ino, Some(&a));
            let h = FileHandle::new(o, st, &meta, &who, flags & libc::O_DSYNC != 0);
            files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, Arc::new(h));
            reply.created(&TTL, &file_attr(&a), 0, fh, 0)
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(libc::EBADF);
        };
        let data = self.data.clone();
        inline::run(&self.rt, async move {
            let offset = offset.max(0) as u64;
            match h.read(&data, offset, size as u64).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => {
                    tracing::warn!(ino = h.ino, offset, error = %e, "read failed");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn write(
        &mut self,
        req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        buf: &[u8],
        _wf: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(libc::EBADF);
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        let who = caller(req);
        let buf = buf.to_vec();
        h.writers.wrote(req.pid());
        let notifier = self.notifier.clone();
        let behind = self.behind.clone();
        inline::run(&self.rt, async move {
            let offset = offset.max(0) as u64;
            let end = offset + buf.len() as u64;
            if let Err(e) = note_write(&meta, &who, &h, end, &notifier).await {
                return reply.error(e);
            }
            let len = buf.len() as u32;
            match FileHandle::write(&h, &data, &behind, offset, buf).await {
                Ok(()) => reply.written(len),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(&mut self, req: &Request<'_>, _ino: u64, fh: u64, _lock: u64, reply: ReplyEmpty) {
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
        inline::run(&self.rt, async move {
            // A process that only inherited the descriptor (see writers.rs).
            if !h.writers.includes(closer) {
                return reply.ok();
            }
            if let Err(e) = h.inode.writes.drain().await {
                return reply.error(e);
            }
            match settle(&meta, &who, &h).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn release(
        &mut self,
        req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
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
                Err(e) => reply.error(e),
            }
            releases.push(&who, h.ino, writable);
        });
    }

    fn fsync(&mut self, req: &Request<'_>, _ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            if let Err(e) = h.inode.writes.drain().await {
                return reply.error(e);
            }
            if let Err(e) = h.fsync(&data).await {
                tracing::warn!(ino = h.ino, error = %e, "fsync failed");
                return reply.error(e.errno());
            }
            match settle(&meta, &who, &h).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
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
                    reply.opened(fh, 0)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectory,
    ) {
        match self.listing(fh) {
            Some(listing) => dirs::reply_plain(&listing, offset, reply),
            None => reply.error(libc::EBADF),
        }
    }

    /// The listing with each entry's attributes: the kernel fills its
    /// dentry and attribute caches from it, so `ls -l` or `rm -r` need no
    /// lookup per name.
    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectoryPlus,
    ) {
        match self.listing(fh) {
            Some(listing) => dirs::reply_plus(&listing, offset, TTL, reply),
            None => reply.error(libc::EBADF),
        }
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        reply.ok()
    }

    fn statfs(&mut self, req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
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
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name.as_bytes() == STRIPE_XATTR.as_bytes() {
            let Some((chunk_size, stripe_width)) = parse_stripe(value) else {
                return reply.error(errno::EINVAL);
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
            return reply.error(libc::EOPNOTSUPP);
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

    fn getxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        self.getxattr_op(req, ino, name, size, reply)
    }

    fn listxattr(&mut self, req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.listxattr_op(req, ino, size, reply)
    }

    fn removexattr(&mut self, req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        if xattr::unsupported(name) {
            return reply.error(libc::EOPNOTSUPP);
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

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
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
