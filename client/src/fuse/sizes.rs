//! Sizes and times of written files reaching the metadata service.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use fuser::Notifier;

use std::sync::Arc;

use cpfs_proto::capability::Capability;
use cpfs_proto::meta::{errno, Attr, Caller, MetaOp, MetaReply, SetAttr};

use super::open_files::{FileHandle, OpenInode};
use crate::caps::HeldCap;
use crate::data::DataClient;
use crate::meta::MetaClient;

/// How often a file being written has its size recorded while writes go
/// on (flush, fsync and close record it too): another mount's `stat`
/// sees a long writer's progress about this late.
const RECORD_EVERY_MS: u64 = 1000;

/// Capacity set aside ahead of a growth reaching `end`: half as much
/// again, from 1 MiB to 64 MiB, so that a stream asks about once per 64
/// MiB and a small file for little it will not use.
fn ahead(end: u64) -> u64 {
    (end / 2).clamp(1 << 20, 64 << 20)
}

/// Milliseconds on this process's clock.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Accounts for a write reaching `end` before its data moves, and marks
/// the handle dirty: every write, growing or not, is recorded once its
/// data landed (at flush, fsync or close), since another mount opening
/// the file after the close trusts an unchanged size and mtime.
///
/// A write ending within the capacity the service counts as stored (what
/// was set aside included) needs no call: its end is the file's size on
/// this mount until recorded. One ending past it asks for capacity first
/// (`grow`), where the limits are checked, so that a write past one fails
/// whole before anything moves.
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
        let size = end.max(st.unrecorded.load(Ordering::Acquire));
        let a = written(meta, who, st, size).await?;
        st.recorded(size, &a, now_ms());
        if let Some(n) = notifier.get() {
            super::open_files::drop_cached(n, h.ino, -1);
        }
        h.wrote();
        return Ok(());
    }
    if end > st.stored.load(Ordering::Acquire) {
        let _sizing = st.sizing.lock().await;
        if end > st.stored.load(Ordering::Acquire) {
            grow(meta, who, h, end).await?;
        }
    }
    if end > st.size.load(Ordering::Acquire) {
        // `unrecorded` first: see `OpenInode::learn`.
        st.unrecorded.fetch_max(end, Ordering::SeqCst);
        st.size.fetch_max(end, Ordering::SeqCst);
    }
    h.wrote();
    let due = || {
        st.unrecorded.load(Ordering::Acquire) != 0
            && now_ms() >= st.recorded_ms.load(Ordering::Acquire) + RECORD_EVERY_MS
    };
    if due() {
        let _sizing = st.sizing.lock().await;
        // Writers that waited for the lock find it recorded.
        if due() {
            record(meta, who, h).await?;
        }
    }
    Ok(())
}

/// Makes room for a write reaching `end` (with `sizing` held): capacity
/// set aside ahead of it, or, for a file's first growth here and near a
/// limit, exactly this growth recorded as the file's size.
async fn grow(meta: &MetaClient, who: &Caller, h: &FileHandle, end: u64) -> Result<(), i32> {
    let st = &h.inode;
    let first = st.growths.fetch_add(1, Ordering::AcqRel) == 0;
    if !first && !st.at_limit.load(Ordering::Acquire) {
        let upto = end.saturating_add(ahead(end));
        match call(meta, who, st, MetaOp::Reserve { ino: h.ino, upto }).await {
            Ok(a) => {
                st.reserved.fetch_max(upto.min(a.stored), Ordering::AcqRel);
                st.learn(&a);
                if a.stored >= end {
                    return Ok(());
                }
                // Capped at the largest file size: the record below says
                // EFBIG.
            }
            Err(errno::EDQUOT | errno::ENOSPC) => st.at_limit.store(true, Ordering::Release),
            Err(e) => return Err(e),
        }
    }
    let size = end.max(st.unrecorded.load(Ordering::Acquire));
    let a = written(meta, who, st, size).await?;
    st.recorded(size, &a, now_ms());
    Ok(())
}

/// Records the size this mount's writes reached, if past the recorded
/// one (with `sizing` held).
async fn record(meta: &MetaClient, who: &Caller, h: &FileHandle) -> Result<(), i32> {
    let st = &h.inode;
    let size = st.unrecorded.load(Ordering::Acquire);
    if size == 0 {
        return Ok(());
    }
    let a = written(meta, who, st, size).await?;
    st.recorded(size, &a, now_ms());
    Ok(())
}

/// Records the handle's writes once they landed: the size they reached
/// and the mtime. A handle whose writes all came before an explicit
/// setting of the times records nothing (the setting recorded the size,
/// and would lose its times).
pub(crate) async fn settle(meta: &MetaClient, who: &Caller, h: &FileHandle) -> Result<(), i32> {
    let record = h.needs_record();
    if h.dirty.swap(false, Ordering::AcqRel) && record {
        let st = &h.inode;
        let _sizing = st.sizing.lock().await;
        let size = st.unrecorded.load(Ordering::Acquire);
        let a = written(meta, who, st, size).await?;
        st.recorded(size, &a, now_ms());
    }
    Ok(())
}

/// Records that the file was written up to `size`.
async fn written(meta: &MetaClient, who: &Caller, st: &OpenInode, size: u64) -> Result<Attr, i32> {
    let op = MetaOp::Written {
        ino: st.ino,
        size,
        resumed: st.resumed.load(Ordering::Acquire),
    };
    call(meta, who, st, op).await
}

/// Sends `op` (a `Written` or `Reserve` of the file), which the service
/// takes only through a handle this mount's session opened for writing; a
/// session that is new (the service restarted, the file system moved to
/// another server, or this mount was evicted) holds none yet, so the
/// handle is opened again there, once, and the call repeated. Writes past
/// the recorded size made under the earlier session are then recorded as
/// such (`resumed`, until recorded): the service refuses the record (EIO)
/// when that session was evicted and what it wrote there was cut.
async fn call(meta: &MetaClient, who: &Caller, st: &OpenInode, op: MetaOp) -> Result<Attr, i32> {
    let r = match meta.call(who, op.clone()).await {
        Err(errno::EBADF) => {
            let reopen = MetaOp::Open {
                ino: st.ino,
                read: false,
                write: true,
            };
            if st.unrecorded.load(Ordering::Acquire) != 0 {
                st.resumed.store(true, Ordering::Release);
            }
            let op = match op {
                MetaOp::Written { ino, size, .. } => MetaOp::Written {
                    ino,
                    size,
                    resumed: st.resumed.load(Ordering::Acquire),
                },
                op => op,
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

/// Sets the times in `set` with the record of the size written that it
/// carries, in one call; a session that holds no writable handle of the
/// file (a new one: see `call`) records through the handle opened again,
/// then sets the times.
async fn set_with_record(
    meta: &MetaClient,
    who: &Caller,
    st: &OpenInode,
    mut set: SetAttr,
) -> Result<Attr, i32> {
    let ino = st.ino;
    let r = match meta
        .call(
            who,
            MetaOp::SetAttr {
                ino,
                set: set.clone(),
            },
        )
        .await
    {
        Err(errno::EBADF) => {
            if let Some(size) = set.written.take() {
                let a = written(meta, who, st, size).await?;
                st.recorded(size, &a, now_ms());
            }
            meta.call(who, MetaOp::SetAttr { ino, set }).await?
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
    // What this mount's writes reached is recorded first: a truncate cuts
    // from there (and none of it comes back after), and times set are
    // not overwritten by a record after them. A setting of times alone
    // carries the record in its own call (`SetAttr::written`).
    let mut set = set;
    if let (true, Some(st)) = (size.is_some() || times, st) {
        let unrecorded = st.unrecorded.load(Ordering::Acquire);
        let times_alone = size.is_none() && set.mode.is_none() && set.uid.is_none();
        if unrecorded != 0
            && times_alone
            && set.gid.is_none()
            && !st.resumed.load(Ordering::Acquire)
        {
            set.written = Some(unrecorded);
        } else if unrecorded != 0 {
            let a = written(meta, who, st, unrecorded).await?;
            st.recorded(unrecorded, &a, now_ms());
        }
    }
    let old = match size {
        Some(_) => match meta.call(who, MetaOp::GetAttr { ino }).await? {
            MetaReply::Attr(a) => a.size,
            _ => return Err(errno::EIO),
        },
        None => 0,
    };
    let a = match (set.written, st) {
        (Some(unrecorded), Some(st)) => {
            let a = set_with_record(meta, who, st, set).await?;
            st.recorded(unrecorded, &a, now_ms());
            a
        }
        _ => match meta.call(who, MetaOp::SetAttr { ino, set }).await? {
            MetaReply::Attr(a) => a,
            _ => return Err(errno::EIO),
        },
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
