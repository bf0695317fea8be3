//! Sizes and times of written files reaching the metadata service.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use fuser::Notifier;

use std::sync::Arc;

use cpfs_proto::capability::Capability;
use cpfs_proto::meta::{errno, Attr, Caller, MetaOp, MetaReply, SetAttr};

use super::open_files::{FileHandle, OpenInode};
use crate::caps::HeldCap;
use crate::data::DataClient;
use crate::meta::MetaClient;

/// Records a write's new end with the metadata service when it grows the
/// file (capacity is checked there), and marks the handle dirty: every
/// write, growing or not, is followed by a `Written` once its data landed
/// (at flush, fsync or close). The growth's own call comes before the
/// data moves, so without the later one another mount could open the file
/// after the close, find the size and mtime it saw while the data was
/// still on its way, and keep what it read then (its read cache and the
/// kernel's pages trust an unchanged size and mtime).
pub(crate) async fn note_write(
    meta: &MetaClient,
    who: &Caller,
    h: &FileHandle,
    end: u64,
    notifier: &OnceLock<Notifier>,
) -> Result<(), i32> {
    let st = &h.inode;
    if who.uid != 0 && h.privileged.swap(false, Ordering::AcqRel) {
        // The service clears setuid/setgid with this call; the kernel's
        // copy of the mode must go too (a negative offset: attributes
        // only, which takes no lock the writer holds).
        let _sizing = st.sizing.lock().await;
        let size = end.max(st.stored.load(Ordering::Acquire));
        let a = written(meta, who, h.ino, size).await?;
        st.learn(&a);
        if let Some(n) = notifier.get() {
            super::open_files::drop_cached(n, h.ino, -1);
        }
        h.wrote();
        return Ok(());
    }
    // `stored` is at most `size`: a write past it grows the file, or
    // reaches into a hole a truncate made, and either counts as used.
    if end > st.stored.load(Ordering::Acquire) {
        let _sizing = st.sizing.lock().await;
        if end > st.stored.load(Ordering::Acquire) {
            let a = written(meta, who, h.ino, end).await?;
            st.learn(&a);
            h.wrote();
            return Ok(());
        }
    }
    h.wrote();
    Ok(())
}

/// Pushes mtime for writes that did not grow the file. It names no size:
/// every growth was recorded before its data moved (note_write), and a size
/// known here may predate a truncate, which it would undo.
pub(crate) async fn settle(meta: &MetaClient, who: &Caller, h: &FileHandle) -> Result<(), i32> {
    let record = h.needs_record();
    if h.dirty.swap(false, Ordering::AcqRel) && record {
        written(meta, who, h.ino, 0).await?;
    }
    Ok(())
}

/// Records that `ino` was written up to `size`. The service takes it only
/// through a handle this mount's session opened for writing; a session
/// that is new (the service restarted, or the file system moved to another
/// server) holds none yet, so the handle is opened again there, once, and
/// the call repeated.
async fn written(meta: &MetaClient, who: &Caller, ino: u64, size: u64) -> Result<Attr, i32> {
    let op = MetaOp::Written { ino, size };
    let r = match meta.call(who, op.clone()).await {
        Err(errno::EBADF) => {
            let reopen = MetaOp::Open {
                ino,
                read: false,
                write: true,
            };
            match meta.call(who, reopen).await? {
                MetaReply::Open(_) => meta.call(who, op).await?,
                _ => return Err(errno::EIO),
            }
        }
        r => r?,
    };
    match r {
        MetaReply::Attr(a) => Ok(a),
        _ => Err(errno::EIO),
    }
}

/// setattr's work: the change in the metadata service and, when the size
/// shrinks, the cut of the data on the nodes (a later extension must read
/// zeros, not the old bytes).
pub(crate) async fn set_attr(
    meta: &Arc<MetaClient>,
    data: &DataClient,
    who: &Caller,
    ino: u64,
    set: SetAttr,
    handle: Option<&FileHandle>,
    st: Option<&OpenInode>,
) -> Result<Attr, i32> {
    // A file whose size changes has its cached data dropped before the
    // change, and again after it, however it ends.
    let _forgetting = set.size.map(|_| data.read_cache.forget_around(ino));
    let size = set.size;
    // Writes taken before an explicit setting of the times: the setting
    // records the file's version after they landed, so their handles need
    // not record it again at close (which would overwrite those times).
    let times = set.mtime_ns.is_some();
    let taken = st.map(|st| st.writes_taken.load(Ordering::Acquire));
    if let (true, Some(st)) = (size.is_some() || times, st) {
        // A write still on its way would land after the cut, or after
        // the times set.
        st.writes.settle().await;
    }
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
        st.learn(&a);
        if let (true, Some(taken)) = (times, taken) {
            st.times_set_after.fetch_max(taken, Ordering::AcqRel);
        }
    }
    let Some(new) = size.filter(|new| *new < old) else {
        return Ok(a);
    };
    // Through the held capability, so that one a node refuses (revoked,
    // or issued before a restart) is renewed once and the cut tried again,
    // as reads and writes do.
    let (held, layout, release) = match handle {
        Some(h) => (None, h.layout.clone(), false),
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
            MetaReply::Open(o) => (
                Some(HeldCap::new(o.cap, meta.clone(), who.clone())),
                o.layout,
                true,
            ),
            _ => return Err(errno::EIO),
        },
    };
    let cut = |cap: Capability| {
        let layout = &layout;
        async move { data.truncate(&cap, layout, ino, new, old).await }
    };
    let r = match (&held, handle) {
        (Some(held), _) => held.with(cut).await,
        (None, Some(h)) => h.cap.with(cut).await,
        (None, None) => return Err(errno::EIO),
    };
    if release {
        let release = MetaOp::Release {
            ino,
            writable: true,
        };
        let _ = meta.call(who, release).await;
    }
    r.map_err(|e| e.errno())?;
    Ok(a)
}
