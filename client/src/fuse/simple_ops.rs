//! The two shapes most namespace operations share: a call answered with
//! an entry, and a call answered with nothing.

use cpfs_proto::meta::{errno, MetaOp, MetaReply};
use fuser::{ReplyEmpty, ReplyEntry, Request};

use super::caller::caller;
use super::{file_attr, CpfsFs, TTL};

impl CpfsFs {
    pub(super) fn entry_op(&self, req: &Request<'_>, op: MetaOp, reply: ReplyEntry) {
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

    pub(super) fn empty_op(&self, req: &Request<'_>, op: MetaOp, reply: ReplyEmpty) {
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
