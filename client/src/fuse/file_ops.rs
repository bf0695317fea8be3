//! Opening and creating regular files: the service's answer becomes a
//! kernel file handle, with the inode's state shared by its handles
//! (open_files.rs).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{Errno, ReplyCreate, ReplyOpen};

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};

use super::attr::file_attr;
use super::inline;
use super::open_files::{open_flags, pin, unpin, FileHandle};
use super::{CpfsFs, TTL};

impl CpfsFs {
    /// OPEN: the service's answer (fresh attributes, a capability) and
    /// whether the kernel may keep the pages it holds (see open_flags).
    pub(super) fn open_op(&self, who: Caller, ino: u64, flags: i32, reply: ReplyOpen) {
        let acc = flags & libc::O_ACCMODE;
        let (read, write) = (acc != libc::O_WRONLY, acc != libc::O_RDONLY);
        // With the writeback cache the kernel reads a page before a write
        // covers only part of it, also through a write-only handle.
        let read_too = !read && self.writeback;
        let write_through = flags & libc::O_DSYNC != 0;
        let meta = self.meta.clone();
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
            let mut r = meta
                .call(
                    &who,
                    MetaOp::Open {
                        ino,
                        read: read || read_too,
                        write,
                    },
                )
                .await;
            if read_too && matches!(r, Err(errno::EACCES)) {
                // A file its writer may not read: whole pages only.
                r = meta.call(&who, MetaOp::Open { ino, read, write }).await;
            }
            if let Ok(MetaReply::Open(o)) = &r {
                if write {
                    st.reserved.store(0, Ordering::Release);
                }
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
                    reply.opened(fuser::FileHandle(fh), flags)
                }
                Ok(_) => {
                    unpin(&inodes, ino);
                    reply.error(Errno::from_i32(errno::EIO))
                }
                Err(e) => {
                    unpin(&inodes, ino);
                    reply.error(Errno::from_i32(e))
                }
            }
        });
    }

    /// CREATE: the new file, opened.
    pub(super) fn create_op(
        &self,
        who: Caller,
        parent: u64,
        name: Vec<u8>,
        (mode, umask): (u32, u32),
        flags: i32,
        reply: ReplyCreate,
    ) {
        let meta = self.meta.clone();
        let files = self.files.clone();
        let inodes = self.inodes.clone();
        let shown = self.shown.clone();
        let fh = self.fh();
        let acc = flags & libc::O_ACCMODE;
        // The creator may read what it creates, whatever the mode; with the
        // writeback cache the kernel may (see open).
        let read = acc != libc::O_WRONLY || self.writeback;
        inline::run(&self.rt, async move {
            let op = MetaOp::Create {
                parent,
                name,
                mode,
                umask,
                read,
            };
            let o = match meta.call(&who, op).await {
                Ok(MetaReply::Open(o)) => o,
                Ok(_) => return reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => return reply.error(Errno::from_i32(e)),
            };
            let a = o.attr.clone();
            shown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.ino, (a.size, a.mtime_ns));
            let st = pin(&inodes, a.ino, Some(&a));
            if a.size == 0 && a.stored > 0 {
                // What a new file counts as stored is what the create set
                // aside for this handle (CREATE_RESERVE): its first writes
                // need no call before their data moves. A growth past it
                // is still the file's first, recorded exactly (sizes.rs):
                // a file written once sets nothing more aside, which would
                // hold a quota's room until its release reached the
                // service.
                st.reserved.fetch_max(a.stored, Ordering::AcqRel);
                st.learn(&a);
            }
            let h = FileHandle::new(o, st, &meta, &who, flags & libc::O_DSYNC != 0);
            files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, Arc::new(h));
            reply.created(
                &TTL,
                &file_attr(&a),
                fuser::Generation(0),
                fuser::FileHandle(fh),
                fuser::FopenFlags::empty(),
            )
        });
    }
}
