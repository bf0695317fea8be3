//! `cpfs mount`: the FUSE client. Every kernel request is answered from a
//! task on the tokio runtime, so the FUSE thread never waits on the
//! network; file data goes straight to the nodes (striped, in parallel),
//! namespace operations to the metadata service.
//!
//! Consistency: close-to-open. Writes reach the nodes before write()
//! returns and a write that extends a file records the new size first (so
//! a full file system fails the write with ENOSPC before any data moves);
//! open() fetches fresh attributes and, when they changed, drops what the
//! kernel cached for the inode.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    FileType, Filesystem, KernelConfig, Notifier, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};
use tokio::runtime::Handle;

use cpfs_proto::meta::{errno, Attr, Caller, MetaOp, MetaReply, SetAttr};

use crate::data::DataClient;
use crate::meta::MetaClient;

mod attr;
mod caller;
mod open_files;

pub use attr::file_attr;
use attr::{file_type, to_ns};
use caller::caller;
use open_files::{pin, unpin, FileHandle, OpenInode, OpenInodes};

const TTL: Duration = Duration::from_secs(1);
/// The virtual extended attribute `cpfs stripe` reads and writes.
pub const STRIPE_XATTR: &str = "user.cpfs.stripe";

type DirListing = Vec<(u64, FileType, Vec<u8>)>;

pub struct CpfsFs {
    rt: Handle,
    meta: Arc<MetaClient>,
    data: Arc<DataClient>,
    files: Arc<Mutex<HashMap<u64, Arc<FileHandle>>>>,
    inodes: OpenInodes,
    dirs: Arc<Mutex<HashMap<u64, Arc<DirListing>>>>,
    next_fh: AtomicU64,
    /// Size and mtime last shown to the kernel per inode (to know when a
    /// fresh open must drop the kernel's cache).
    shown: Arc<Mutex<HashMap<u64, (u64, i64)>>>,
    notifier: Arc<OnceLock<Notifier>>,
}

impl CpfsFs {
    pub fn new(
        rt: Handle,
        meta: Arc<MetaClient>,
        data: Arc<DataClient>,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> CpfsFs {
        CpfsFs {
            rt,
            meta,
            data,
            files: Arc::default(),
            inodes: Arc::default(),
            dirs: Arc::default(),
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

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn entry_op(&self, req: &Request<'_>, op: MetaOp, reply: ReplyEntry) {
        let meta = self.meta.clone();
        let who = caller(req);
        let shown = self.shown.clone();
        self.rt.spawn(async move {
            match meta.call(&who, op).await {
                Ok(MetaReply::Entry(a)) => {
                    shown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(a.ino, (a.size, a.mtime_ns));
                    reply.entry(&TTL, &file_attr(&a), 0)
                }
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn empty_op(&self, req: &Request<'_>, op: MetaOp, reply: ReplyEmpty) {
        let meta = self.meta.clone();
        let who = caller(req);
        self.rt.spawn(async move {
            match meta.call(&who, op).await {
                Ok(MetaReply::Done) => reply.ok(),
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }
}

/// Records a write's new end with the metadata service when it grows the
/// file (capacity is checked there), and marks the handle dirty.
async fn note_write(meta: &MetaClient, who: &Caller, h: &FileHandle, end: u64) -> Result<(), i32> {
    let st = &h.inode;
    if end > st.size.load(Ordering::Acquire) {
        let _sizing = st.sizing.lock().await;
        if end > st.size.load(Ordering::Acquire) {
            match meta
                .call(
                    who,
                    MetaOp::Written {
                        ino: h.ino,
                        size: end,
                    },
                )
                .await?
            {
                MetaReply::Attr(a) => st.size.store(a.size, Ordering::Release),
                _ => return Err(errno::EIO),
            }
            return Ok(());
        }
    }
    h.dirty.store(true, Ordering::Release);
    Ok(())
}

/// Pushes mtime for writes that did not grow the file. It names no size:
/// every growth was recorded before its data moved (note_write), and a size
/// known here may predate a truncate, which it would undo.
async fn settle(meta: &MetaClient, who: &Caller, h: &FileHandle) -> Result<(), i32> {
    if h.dirty.swap(false, Ordering::AcqRel) {
        meta.call(
            who,
            MetaOp::Written {
                ino: h.ino,
                size: 0,
            },
        )
        .await?;
    }
    Ok(())
}

/// setattr's work: the change in the metadata service and, when the size
/// shrinks, the cut of the data on the nodes (a later extension must read
/// zeros, not the old bytes).
async fn set_attr(
    meta: &MetaClient,
    data: &DataClient,
    who: &Caller,
    ino: u64,
    set: SetAttr,
    handle: Option<&FileHandle>,
    st: Option<&OpenInode>,
) -> Result<Attr, i32> {
    let size = set.size;
    let _sizing = match st {
        Some(st) => Some(st.sizing.lock().await),
        None => None,
    };
    let old = match size {
        Some(_) => match meta.call(who, MetaOp::GetAttr { ino }).await? {
            MetaReply::Attr(a) => a.size,
            _ => return Err(errno::EIO),
        },
        None => 0,
    };
    let a = match meta.call(who, MetaOp::SetAttr { ino, set }).await? {
        MetaReply::Attr(a) => a,
        _ => return Err(errno::EIO),
    };
    if let Some(st) = st {
        st.size.store(a.size, Ordering::Release);
    }
    let Some(new) = size.filter(|new| *new < old) else {
        return Ok(a);
    };
    let (cap, layout, release) = match handle {
        Some(h) => (h.cap.clone(), h.layout.clone(), false),
        None => match meta
            .call(
                who,
                MetaOp::Open {
                    ino,
                    read: false,
                    write: true,
                },
            )
            .await?
        {
            MetaReply::Open(o) => (o.cap, o.layout, true),
            _ => return Err(errno::EIO),
        },
    };
    let r = data.truncate(&cap, &layout, ino, new, old).await;
    if release {
        let _ = meta.call(who, MetaOp::Release { ino }).await;
    }
    r.map_err(|e| e.errno())?;
    Ok(a)
}

impl Filesystem for CpfsFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        Ok(())
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.entry_op(
            req,
            MetaOp::Lookup {
                parent,
                name: name.as_bytes().to_vec(),
            },
            reply,
        );
    }

    fn getattr(&mut self, req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let meta = self.meta.clone();
        let who = caller(req);
        let shown = self.shown.clone();
        self.rt.spawn(async move {
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
        self.rt.spawn(async move {
            // A size change must reach every open handle of the inode
            // (open(O_TRUNC) comes without one); the inode's state is pinned
            // for the call, so an open racing it waits for its answer.
            let st = size.map(|_| pin(&inodes, ino, 0));
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
        self.rt.spawn(async move {
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
        let meta = self.meta.clone();
        let who = caller(req);
        let files = self.files.clone();
        let inodes = self.inodes.clone();
        let shown = self.shown.clone();
        let notifier = self.notifier.clone();
        let fh = self.fh();
        self.rt.spawn(async move {
            let st = pin(&inodes, ino, 0);
            // The open's answer is the newest size only if no extending
            // write or truncate of this mount ends between its call and here.
            let sizing = st.sizing.lock().await;
            let r = meta.call(&who, MetaOp::Open { ino, read, write }).await;
            if let Ok(MetaReply::Open(o)) = &r {
                st.size.store(o.attr.size, Ordering::Release);
            }
            drop(sizing);
            match r {
                Ok(MetaReply::Open(o)) => {
                    let fresh = (o.attr.size, o.attr.mtime_ns);
                    let before = shown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(ino, fresh);
                    if before.is_some_and(|b| b != fresh) {
                        // Another client changed the file: the kernel's size
                        // and pages for it are stale (close-to-open).
                        if let Some(n) = notifier.get() {
                            let _ = n.inval_inode(ino, 0, 0);
                        }
                    }
                    let h = FileHandle {
                        ino,
                        cap: o.cap,
                        layout: o.layout,
                        inode: st,
                        dirty: AtomicBool::new(false),
                    };
                    files
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(fh, Arc::new(h));
                    reply.opened(fh, 0)
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
        self.rt.spawn(async move {
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
            let st = pin(&inodes, a.ino, a.size);
            let h = FileHandle {
                ino: a.ino,
                cap: o.cap,
                layout: o.layout,
                inode: st,
                dirty: AtomicBool::new(false),
            };
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
        self.rt.spawn(async move {
            let file_size = h.inode.size.load(Ordering::Acquire);
            let offset = offset.max(0) as u64;
            if offset >= file_size {
                return reply.data(&[]);
            }
            let len = (size as u64).min(file_size - offset);
            match data.read(&h.cap, &h.layout, h.ino, offset, len).await {
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
        self.rt.spawn(async move {
            let offset = offset.max(0) as u64;
            let end = offset + buf.len() as u64;
            if let Err(e) = note_write(&meta, &who, &h, end).await {
                return reply.error(e);
            }
            match data.write(&h.cap, &h.layout, h.ino, offset, &buf).await {
                Ok(()) => reply.written(buf.len() as u32),
                Err(e) => {
                    tracing::warn!(ino = h.ino, offset, error = %e, "write failed");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn flush(&mut self, req: &Request<'_>, _ino: u64, fh: u64, _lock: u64, reply: ReplyEmpty) {
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let meta = self.meta.clone();
        let who = caller(req);
        self.rt.spawn(async move {
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
        self.rt.spawn(async move {
            let r = settle(&meta, &who, &h).await;
            let _ = meta.call(&who, MetaOp::Release { ino: h.ino }).await;
            unpin(&inodes, h.ino);
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsync(&mut self, req: &Request<'_>, _ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let meta = self.meta.clone();
        let data = self.data.clone();
        let who = caller(req);
        self.rt.spawn(async move {
            if let Err(e) = data.fsync(&h.cap, &h.layout, h.ino).await {
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
        let fh = self.fh();
        self.rt.spawn(async move {
            let parent = match meta
                .call(
                    &who,
                    MetaOp::Lookup {
                        parent: ino,
                        name: b"..".to_vec(),
                    },
                )
                .await
            {
                Ok(MetaReply::Entry(a)) => a.ino,
                _ => ino,
            };
            let mut listing: DirListing = vec![
                (ino, FileType::Directory, b".".to_vec()),
                (parent, FileType::Directory, b"..".to_vec()),
            ];
            let mut after = None;
            loop {
                match meta
                    .call(
                        &who,
                        MetaOp::ReadDir {
                            ino,
                            after: after.clone(),
                            limit: 4096,
                        },
                    )
                    .await
                {
                    Ok(MetaReply::Dir { entries, more }) => {
                        after = entries.last().map(|e| e.name.clone());
                        listing.extend(
                            entries
                                .into_iter()
                                .map(|e| (e.ino, file_type(e.kind), e.name)),
                        );
                        if !more {
                            break;
                        }
                    }
                    Ok(_) => return reply.error(errno::EIO),
                    Err(e) => return reply.error(e),
                }
            }
            dirs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, Arc::new(listing));
            reply.opened(fh, 0)
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
        else {
            return reply.error(libc::EBADF);
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok()
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
        self.rt.spawn(async move {
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
        // The kernel asks for security.capability before every write;
        // security.* attributes are not stored (setxattr refuses them), so
        // the answer is known here without a round trip.
        if name.as_bytes().starts_with(b"security.") {
            return reply.error(errno::ENODATA);
        }
        let meta = self.meta.clone();
        let who = caller(req);
        let stripe = name.as_bytes() == STRIPE_XATTR.as_bytes();
        let op = if stripe {
            MetaOp::GetStripe { ino }
        } else {
            MetaOp::GetXattr {
                ino,
                name: name.as_bytes().to_vec(),
            }
        };
        self.rt.spawn(async move {
            let value = match meta.call(&who, op).await {
                Ok(MetaReply::Xattr(v)) => v,
                Ok(MetaReply::Stripe {
                    chunk_size,
                    stripe_width,
                }) => format!("{{\"chunk_size\":{chunk_size},\"stripe_width\":{stripe_width}}}")
                    .into_bytes(),
                Ok(_) => return reply.error(errno::EIO),
                Err(e) => return reply.error(e),
            };
            xattr_reply(reply, size, &value)
        });
    }

    fn listxattr(&mut self, req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let meta = self.meta.clone();
        let who = caller(req);
        self.rt.spawn(async move {
            match meta.call(&who, MetaOp::ListXattr { ino }).await {
                Ok(MetaReply::XattrNames(names)) => {
                    let mut out = Vec::new();
                    for n in names {
                        out.extend_from_slice(&n);
                        out.push(0);
                    }
                    xattr_reply(reply, size, &out)
                }
                Ok(_) => reply.error(errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn removexattr(&mut self, req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
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

fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if (size as usize) < value.len() {
        reply.error(errno::ERANGE)
    } else {
        reply.data(value)
    }
}

/// `chunk_size=N,stripe_width=W` (either may be omitted... both required here).
pub fn parse_stripe(v: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(v).ok()?;
    let (mut cs, mut w) = (None, None);
    for part in text.trim().split(',') {
        let (k, val) = part.split_once('=')?;
        match k.trim() {
            "chunk_size" => cs = val.trim().parse().ok(),
            "stripe_width" => w = val.trim().parse().ok(),
            _ => return None,
        }
    }
    Some((cs?, w?))
}
