//! Serving the metadata protocol, and the orphan collector.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cpfs_client::data::DataClient;
use cpfs_proto::capability::{ADMIN, ANY_INODE};
use cpfs_proto::meta::{
    errno, Caller, Kind, MetaOp, MetaReply, MetaRequest, RequestId, MAX_RELEASES,
};
use cpfs_proto::node::{NodeRequest, MAX_DROPPED_INODES};
use cpfs_proto::rpc::{self, ServiceLimits};
use tokio::net::TcpListener;

use crate::ns::{NewNode, APPLIED};
use crate::{MetaService, Res, Session};

fn reply<T>(r: Res<T>, ok: impl FnOnce(T) -> MetaReply) -> MetaReply {
    match r {
        Ok(v) => ok(v),
        Err((errno, message)) => MetaReply::Err { errno, message },
    }
}

impl MetaService {
    pub async fn handle(self: Arc<Self>, peer: SocketAddr, req: MetaRequest) -> MetaReply {
        let kind = req.op.kind();
        let started = std::time::Instant::now();
        let reply = self.clone().handle_counted(peer, req).await;
        let ok = !matches!(reply, MetaReply::Err { .. });
        self.ops.record(kind, started.elapsed(), ok);
        reply
    }

    async fn handle_counted(self: Arc<Self>, peer: SocketAddr, mut req: MetaRequest) -> MetaReply {
        match &req.op {
            MetaOp::Mount { domain } => return reply(self.mount(domain, None, peer).await, |r| r),
            MetaOp::MountAt { domain, root } => {
                return reply(self.mount(domain, Some(root), peer).await, |r| r)
            }
            _ => {}
        }
        let Some(s) = self.session(req.session, peer) else {
            return MetaReply::Err {
                errno: errno::ESTALE,
                message: "unknown session; mount again".into(),
            };
        };
        if s.root == cpfs_proto::meta::ROOT_INO {
            return self.handle_session(peer, s, req).await;
        }
        // A subdirectory mount: inode numbers mapped in and checked, and
        // mapped back out (confine.rs).
        if let Err((errno, message)) = self.confine(&s, &mut req.op).await {
            tracing::debug!(fs = %s.fs, session = s.id, %message, "outside the mount's root");
            return MetaReply::Err { errno, message };
        }
        let root = s.root;
        let mut out = self.handle_session(peer, s, req).await;
        crate::confine::outward(root, &mut out);
        out
    }

    async fn handle_session(
        self: Arc<Self>,
        peer: SocketAddr,
        s: crate::Session,
        req: MetaRequest,
    ) -> MetaReply {
        // A file system this server no longer owns is answered "moved"
        // before anything else is spent on the request (its access check
        // may need a store that a partition made unreachable).
        if let Err((errno, message)) = self.shards.may_serve(&s.fs) {
            return MetaReply::Err { errno, message };
        }
        // Bookkeeping that no identity may be refused: forgetting an open
        // handle, and the data path's chain table.
        if matches!(
            req.op,
            MetaOp::Release { .. } | MetaOp::ReleaseMany { .. } | MetaOp::ChainTable
        ) {
            return self.handle_as(s, req.caller, req.op, None).await;
        }
        // Decides the grant afresh rather than from the cache (caps.rs).
        if let MetaOp::Renew { cap } = req.op {
            return reply(self.renew(&s, req.caller, cap).await, MetaReply::Renewed);
        }
        let grant = match self.session_grant(&s).await {
            Ok(g) => g,
            Err((errno, message)) => return MetaReply::Err { errno, message },
        };
        // The rule may have lost its InsecurePorts since the mount: the
        // session is then no longer this connection's (the remount that
        // follows is refused, saying why).
        if grant.privileged_only && peer.port() >= crate::policy::PRIVILEGED_PORTS {
            return MetaReply::Err {
                errno: errno::ESTALE,
                message: "unknown session; mount again".into(),
            };
        }
        if let MetaOp::Watch { wait_ms } = req.op {
            let wait = Duration::from_millis(u64::from(wait_ms));
            let mut reply = self.watchers.wait(req.session, &s.fs, wait).await;
            if let MetaReply::Changes { lease_ms, .. } = &mut reply {
                *lease_ms = self.delegation_ms(&s.fs);
            }
            return reply;
        }
        if !grant.writable && mutates(&req.op) {
            return MetaReply::Err {
                errno: errno::EROFS,
                message: format!("mount target {} is read-only for {}", s.domain, s.peer),
            };
        }
        let who = match self.identity(&grant, req.caller).await {
            Ok(who) => who,
            Err((errno, message)) => {
                tracing::debug!(fs = %s.fs, %message, "caller refused");
                return MetaReply::Err { errno, message };
            }
        };
        // An inode number is no key: the caller must be able to walk to
        // every inode the request names (ns/reach.rs).
        if let Err((errno, message)) = self.may_reach(&s, &who, &req.op).await {
            tracing::debug!(fs = %s.fs, uid = who.uid, %message, "inode not reachable");
            return MetaReply::Err { errno, message };
        }
        let session = req.session;
        let fs = s.fs.clone();
        let changes = crate::watch::changes_of(&req.op);
        let seen =
            (!changes.is_empty() || interesting(&req.op)).then(|| crate::watch::named(&req.op));
        let dirs = crate::watch::entry_parents(&changes);
        let asked = (!dirs.is_empty()).then(|| s.clone());
        let made_dir = matches!(req.op, MetaOp::Mkdir { .. });
        // Another session's delegation of a directory this changes ends
        // first (watch/delegations.rs).
        self.watchers.recall(&fs, session, &changes).await;
        // Changes published while this request is handled are checked
        // against what it names and answers (watch.rs).
        let mark = seen.map(|_| self.watchers.mark());
        let reply = self.clone().handle_as(s, who, req.op, req.id).await;
        let failed = matches!(reply, MetaReply::Err { .. });
        // A delegation granted while this was under way (its mkdir answered
        // in between) is recalled before this is answered, failed or not
        // (a create can commit and then fail to open what it made).
        self.watchers.recall(&fs, session, &changes).await;
        if let (Some(seen), Some(mark)) = (seen, mark) {
            self.watchers.note(session, seen, &reply, mark);
            if !failed {
                self.watchers.publish(&fs, session, &changes);
            }
        }
        let Some(s) = asked.filter(|_| !failed) else {
            return reply;
        };
        let delegated_ms = match &reply {
            MetaReply::Entry(a) if made_dir => self.delegate(&s, session, a).await,
            _ => 0,
        };
        // The directories' attributes after the change, for the client to
        // answer the kernel's next GETATTR of them (client dir_attrs.rs).
        let mut attrs = Vec::with_capacity(dirs.len());
        for d in dirs {
            if let Ok(a) = self.getattr(&s, d).await {
                attrs.push(a);
            }
        }
        MetaReply::Changed {
            dirs: attrs,
            reply: Box::new(reply),
            delegated_ms,
        }
    }

    /// Runs `op` for `who`, the identity the service decided on. An
    /// operation that is not idempotent is applied once per request id: a
    /// retry of one already applied gets the answer the first attempt got.
    pub(crate) async fn handle_as(
        self: Arc<Self>,
        s: Session,
        who: Caller,
        op: MetaOp,
        id: Option<RequestId>,
    ) -> MetaReply {
        let Some(id) = id.filter(|_| once_only(&op)) else {
            return self.apply(s, who, op, None).await;
        };
        let again = op.clone();
        match self
            .clone()
            .apply(s.clone(), who.clone(), op, Some(id))
            .await
        {
            MetaReply::Err { errno: APPLIED, .. } => match self.applied(&s, id).await {
                Ok(Some(ino)) => self.replay(&s, &who, &again, id, ino).await,
                Ok(None) => MetaReply::Err {
                    errno: errno::EIO,
                    message: "request claimed but its record is gone".into(),
                },
                Err((errno, message)) => MetaReply::Err { errno, message },
            },
            r => r,
        }
    }

    /// The answer to a retry of request `id`, which was applied already and
    /// made or linked `ino`: what the first attempt answered, as the
    /// namespace is now.
    async fn replay(
        &self,
        s: &Session,
        who: &Caller,
        op: &MetaOp,
        id: RequestId,
        ino: u64,
    ) -> MetaReply {
        tracing::info!(fs = %s.fs, client = id.client, seq = id.seq, ino, "a retried request was applied before; answering from its record");
        match op {
            MetaOp::Create { read, .. } => {
                reply(self.open_created(s, who, ino, *read).await, MetaReply::Open)
            }
            MetaOp::Mknod { .. }
            | MetaOp::Mkdir { .. }
            | MetaOp::Symlink { .. }
            | MetaOp::Link { .. } => reply(self.getattr(s, ino).await, MetaReply::Entry),
            _ => MetaReply::Done,
        }
    }

    /// Applies `op` for `who`; `id`, when given, is recorded with the change.
    async fn apply(
        self: Arc<Self>,
        s: Session,
        who: Caller,
        req_op: MetaOp,
        id: Option<RequestId>,
    ) -> MetaReply {
        match req_op {
            MetaOp::Mount { .. } | MetaOp::MountAt { .. } => MetaReply::Err {
                errno: errno::EINVAL,
                message: "already mounted".into(),
            },
            MetaOp::Lookup { parent, name } => {
                reply(self.lookup(&s, &who, parent, &name).await, MetaReply::Entry)
            }
            MetaOp::GetAttr { ino } => reply(self.getattr(&s, ino).await, MetaReply::Attr),
            MetaOp::SetAttr { ino, set } => {
                reply(self.setattr(&s, &who, ino, set).await, MetaReply::Attr)
            }
            MetaOp::Mknod {
                parent,
                name,
                mode,
                rdev,
                umask,
            } => {
                let Some(kind) = Kind::from_mode(mode) else {
                    return MetaReply::Err {
                        errno: errno::EINVAL,
                        message: "unknown file type".into(),
                    };
                };
                if kind == Kind::Dir {
                    return MetaReply::Err {
                        errno: errno::EINVAL,
                        message: "use mkdir".into(),
                    };
                }
                if matches!(kind, Kind::CharDev | Kind::BlockDev) && who.uid != 0 {
                    return MetaReply::Err {
                        errno: errno::EPERM,
                        message: "device nodes need root".into(),
                    };
                }
                reply(
                    self.create(
                        &s,
                        &who,
                        parent,
                        &name,
                        NewNode {
                            kind,
                            perm: mode & !umask,
                            rdev,
                            target: None,
                        },
                        id,
                    )
                    .await,
                    MetaReply::Entry,
                )
            }
            MetaOp::Mkdir {
                parent,
                name,
                mode,
                umask,
            } => reply(
                self.create(
                    &s,
                    &who,
                    parent,
                    &name,
                    NewNode {
                        kind: Kind::Dir,
                        perm: mode & !umask,
                        rdev: 0,
                        target: None,
                    },
                    id,
                )
                .await,
                MetaReply::Entry,
            ),
            MetaOp::Symlink {
                parent,
                name,
                target,
            } => reply(
                self.create(
                    &s,
                    &who,
                    parent,
                    &name,
                    NewNode {
                        kind: Kind::Symlink,
                        perm: 0o777,
                        rdev: 0,
                        target: Some(target),
                    },
                    id,
                )
                .await,
                MetaReply::Entry,
            ),
            MetaOp::Create {
                parent,
                name,
                mode,
                umask,
                read,
            } => {
                let node = NewNode {
                    kind: Kind::File,
                    perm: mode & 0o7777 & !umask,
                    rdev: 0,
                    target: None,
                };
                reply(
                    self.create_file(&s, &who, (parent, &name), node, id, read)
                        .await,
                    MetaReply::Open,
                )
            }
            MetaOp::Readlink { ino } => reply(self.readlink(&s, ino).await, MetaReply::Link),
            MetaOp::Link {
                ino,
                new_parent,
                new_name,
            } => reply(
                self.link(&s, &who, ino, (new_parent, &new_name), id).await,
                MetaReply::Entry,
            ),
            MetaOp::Unlink { parent, name } => reply(
                self.unlink(&s, &who, (parent, &name), false, id).await,
                |_| MetaReply::Done,
            ),
            MetaOp::Rmdir { parent, name } => reply(
                self.unlink(&s, &who, (parent, &name), true, id).await,
                |_| MetaReply::Done,
            ),
            MetaOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => reply(
                self.rename(
                    &s,
                    &who,
                    (parent, &name),
                    (new_parent, &new_name),
                    flags,
                    id,
                )
                .await,
                |_| MetaReply::Done,
            ),
            MetaOp::Open { ino, read, write } => {
                reply(self.open(&s, &who, ino, read, write).await, MetaReply::Open)
            }
            MetaOp::Release { ino, writable } => {
                self.release(&s, &[(ino, writable)]).await;
                MetaReply::Done
            }
            MetaOp::ReleaseMany { handles } => {
                if handles.len() > MAX_RELEASES {
                    return MetaReply::Err {
                        errno: errno::EINVAL,
                        message: format!(
                            "{} handles released at once; at most {MAX_RELEASES}",
                            handles.len()
                        ),
                    };
                }
                self.release(&s, &handles).await;
                MetaReply::Done
            }
            // Answered in `handle`, before the cached grant is used.
            MetaOp::Renew { .. } => MetaReply::Err {
                errno: errno::EINVAL,
                message: "renewals are not replayed".into(),
            },
            MetaOp::Access { ino, mask } => {
                reply(self.access(&s, &who, ino, mask).await, |_| MetaReply::Done)
            }
            MetaOp::ReadDir { ino, after, limit } => reply(
                self.readdir(&s, &who, ino, after, limit).await,
                |(entries, more)| MetaReply::Dir { entries, more },
            ),
            MetaOp::ReadDirPlus { ino, after, limit } => {
                reply(self.readdir_plus(&s, &who, ino, after, limit).await, |p| {
                    MetaReply::DirPlus {
                        entries: p.entries,
                        searchable: p.searchable,
                        more: p.more,
                        parent: p.parent,
                    }
                })
            }
            MetaOp::Written { ino, size, resumed } => reply(
                self.written(&s, &who, ino, size, resumed).await,
                MetaReply::Attr,
            ),
            MetaOp::Reserve { ino, upto } => {
                reply(self.reserve(&s, &who, ino, upto).await, MetaReply::Attr)
            }
            MetaOp::StatFs => reply(self.statfs(&s).await, MetaReply::StatFs),
            MetaOp::SetXattr {
                ino,
                name,
                value,
                flags,
            } => reply(
                self.setxattr(&s, &who, ino, (&name, &value), flags, id)
                    .await,
                |_| MetaReply::Done,
            ),
            MetaOp::GetXattr { ino, name } => {
                reply(self.getxattr(&s, &who, ino, &name).await, MetaReply::Xattr)
            }
            MetaOp::ListXattr { ino } => {
                reply(self.listxattr(&s, ino).await, MetaReply::XattrNames)
            }
            MetaOp::RemoveXattr { ino, name } => {
                reply(self.removexattr(&s, &who, ino, &name, id).await, |_| {
                    MetaReply::Done
                })
            }
            MetaOp::GetStripe { ino } => reply(
                self.get_stripe(&s, ino).await,
                |(chunk_size, stripe_width)| MetaReply::Stripe {
                    chunk_size,
                    stripe_width,
                },
            ),
            MetaOp::SetStripe {
                ino,
                chunk_size,
                stripe_width,
            } => reply(
                self.set_stripe(&s, &who, ino, chunk_size, stripe_width)
                    .await,
                |_| MetaReply::Done,
            ),
            MetaOp::ChainTable => reply(self.chain_table().await, MetaReply::Chains),
            // Answered in `handle`, where the session is known.
            MetaOp::Watch { .. } => MetaReply::Err {
                errno: errno::EINVAL,
                message: "watch is not an operation on the namespace".into(),
            },
        }
    }

    /// Forgets the shards of file systems whose namespace was dropped (the
    /// file system was deleted); how many.
    pub async fn unload_dropped(&self) -> Res<usize> {
        let live: Vec<(String,)> = sqlx::query_as("SELECT fs_id FROM fs_counters")
            .fetch_all(&self.store.pool)
            .await
            .map_err(|e| (errno::EIO, e.to_string()))?;
        let live: std::collections::HashSet<String> = live.into_iter().map(|r| r.0).collect();
        let mut gone = 0;
        for shard in self.shards.loaded() {
            let fs = shard.with(|st| st.fs.clone());
            if !live.contains(fs.as_ref()) {
                self.shards.unload(&fs);
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Removes orphaned inodes (last link gone, no client holds them open):
    /// their chunks on every node, then their rows. File systems with
    /// orphans in the store are loaded first, so none waits for a mount;
    /// so are those with rows in the journal's log, which may hold orphans
    /// a stopped server never folded into the tables.
    pub async fn collect_orphans(self: &Arc<Self>, data: &DataClient) -> Res<usize> {
        let with_orphans: Vec<(String,)> =
            sqlx::query_as("SELECT fs_id FROM orphans UNION SELECT fs_id FROM meta_log")
                .fetch_all(&self.store.pool)
                .await
                .map_err(|e| (errno::EIO, e.to_string()))?;
        for (fs,) in with_orphans {
            match self.shards.get(&fs).await {
                Ok(_) => {}
                // Another server's: it collects them.
                Err((errno::EMOVED, _)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut done = 0;
        for shard in self.shards.loaded() {
            for _ in 0..ORPHAN_ROUNDS {
                let (fs, orphans): (Arc<str>, Vec<u64>) = shard.with(|st| {
                    (
                        st.fs.clone(),
                        st.orphans
                            .keys()
                            .take(MAX_DROPPED_INODES)
                            .copied()
                            .collect(),
                    )
                });
                let listed = orphans.len();
                // Open ones stay until their last handle is released.
                let orphans: Vec<u64> = orphans
                    .into_iter()
                    .filter(|&ino| !self.is_open(&fs, ino))
                    .collect();
                if orphans.is_empty() {
                    break;
                }
                // One request per node and one commit for the lot: a
                // deleted tree's files cost the service a little each, not
                // a round trip to every node and a commit apiece.
                let cap = self.key.issue(
                    &fs,
                    ANY_INODE,
                    ADMIN,
                    crate::ns::now_ns() / 1_000_000_000 + 60,
                );
                if let Err(e) = data
                    .broadcast(NodeRequest::DropInodes {
                        cap,
                        fs: fs.to_string(),
                        inodes: orphans.clone(),
                    })
                    .await
                {
                    tracing::warn!(%fs, orphans = orphans.len(), error = %e, "could not drop orphans' chunks yet");
                    break;
                }
                let purge = |st: &mut crate::ns::state::FsState| {
                    orphans.iter().try_for_each(|&ino| st.purge(ino))
                };
                match self.shards.write(&fs, purge).await {
                    Ok(()) => done += orphans.len(),
                    Err((errno::EMOVED, _)) => break,
                    Err(e) => return Err(e),
                }
                // Fewer than a batch: nothing more to take this pass.
                if listed < MAX_DROPPED_INODES {
                    break;
                }
            }
        }
        Ok(done)
    }
}

/// How many batches of orphans ([`MAX_DROPPED_INODES`] each) one pass
/// collects per file system, at most.
const ORPHAN_ROUNDS: usize = 4;

/// Whether applying `op` twice differs from applying it once (the second
/// create answers EEXIST, the second unlink ENOENT, ...): such operations are
/// recorded by request id. Truncates, attribute and size changes are not: a
/// repetition sets the same values again.
fn once_only(op: &MetaOp) -> bool {
    matches!(
        op,
        MetaOp::Create { .. }
            | MetaOp::Mknod { .. }
            | MetaOp::Mkdir { .. }
            | MetaOp::Symlink { .. }
            | MetaOp::Link { .. }
            | MetaOp::Unlink { .. }
            | MetaOp::Rmdir { .. }
            | MetaOp::Rename { .. }
            | MetaOp::SetXattr { .. }
            | MetaOp::RemoveXattr { .. }
    )
}

/// Whether the answer to `op` tells the client about inodes its kernel
/// may cache (so changes to them must reach it).
fn interesting(op: &MetaOp) -> bool {
    matches!(
        op,
        MetaOp::Lookup { .. }
            | MetaOp::GetAttr { .. }
            | MetaOp::Open { .. }
            | MetaOp::ReadDir { .. }
            | MetaOp::ReadDirPlus { .. }
            | MetaOp::Readlink { .. }
            | MetaOp::Access { .. }
            | MetaOp::GetXattr { .. }
            | MetaOp::ListXattr { .. }
    )
}

/// Whether `op` changes the file system (refused on a read-only mount).
fn mutates(op: &MetaOp) -> bool {
    match op {
        MetaOp::Open { write, .. } => *write,
        MetaOp::Access { mask, .. } => mask & crate::perm::W != 0,
        MetaOp::SetAttr { .. }
        | MetaOp::Mknod { .. }
        | MetaOp::Mkdir { .. }
        | MetaOp::Create { .. }
        | MetaOp::Symlink { .. }
        | MetaOp::Link { .. }
        | MetaOp::Unlink { .. }
        | MetaOp::Rmdir { .. }
        | MetaOp::Rename { .. }
        | MetaOp::Written { .. }
        | MetaOp::Reserve { .. }
        | MetaOp::SetXattr { .. }
        | MetaOp::RemoveXattr { .. }
        | MetaOp::SetStripe { .. } => true,
        MetaOp::Mount { .. }
        | MetaOp::MountAt { .. }
        | MetaOp::Lookup { .. }
        | MetaOp::GetAttr { .. }
        | MetaOp::Readlink { .. }
        | MetaOp::Release { .. }
        | MetaOp::ReleaseMany { .. }
        | MetaOp::Renew { .. }
        | MetaOp::ReadDir { .. }
        | MetaOp::ReadDirPlus { .. }
        | MetaOp::StatFs
        | MetaOp::GetXattr { .. }
        | MetaOp::ListXattr { .. }
        | MetaOp::GetStripe { .. }
        | MetaOp::Watch { .. }
        | MetaOp::ChainTable => false,
    }
}

/// Largest metadata request accepted: names, symlink targets and xattr
/// values are small; a write of data never passes through here.
pub const MAX_META_REQUEST: usize = 1 << 20;

/// Serves metadata requests on `listener` until the task is dropped. The
/// orphan collector ([`Collector`]) runs beside it as its own loop.
pub async fn serve(service: Arc<MetaService>, listener: TcpListener) {
    serve_until(service, listener, std::future::pending()).await
}

/// As [`serve`], draining when `stop` resolves: requests in flight are
/// answered (and committed), no new ones are read, connections close;
/// clients retry against the next server.
pub async fn serve_until(
    service: Arc<MetaService>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let limits = ServiceLimits {
        name: "meta",
        max_request: MAX_META_REQUEST,
        // Directory listings and chain tables come back; both are bounded
        // well below the protocol limit.
        max_reply: cpfs_proto::frame::MAX_FRAME,
        max_in_flight: 1024,
    };
    let handler = service.clone();
    let closing = service.clone();
    // Outstanding Watches would hold the drain for their whole wait.
    let stop = async move {
        stop.await;
        closing.watchers.close();
    };
    rpc::serve_until(
        listener,
        limits,
        service.service_stats.clone(),
        move |peer, req: MetaRequest| handler.clone().handle(peer, req),
        stop,
    )
    .await
}

/// Background upkeep of the namespace, one pass every [`Collector::PERIOD`]:
/// follows the chain table, removes the data of orphaned inodes (unlinked
/// and no longer open) and, every minute, old request records.
pub struct Collector {
    service: Arc<MetaService>,
    data: Arc<DataClient>,
    passes: std::sync::atomic::AtomicU64,
}

impl Collector {
    pub const PERIOD: Duration = Duration::from_secs(2);
    /// Request records are dropped every this many passes.
    const FORGET_EVERY: u64 = 30;

    pub fn new(service: Arc<MetaService>) -> Arc<Collector> {
        let source_svc = service.clone();
        let source: cpfs_client::data::ChainSource = Arc::new(move || {
            let s = source_svc.clone();
            Box::pin(async move { s.chain_table().await.map_err(|e| e.1) })
        });
        // The table is fetched on the first pass.
        let data = DataClient::new(Default::default(), source);
        Arc::new(Collector {
            service,
            data,
            passes: Default::default(),
        })
    }

    /// One pass; the error says which step failed.
    pub async fn pass(&self) -> Result<(), String> {
        let n = self
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let table = self
            .service
            .chain_table()
            .await
            .map_err(|e| format!("reading the chain table: {}", e.1))?;
        if table.version > self.data.chain_version().await {
            self.data.set_table(table).await;
        }
        if n.is_multiple_of(Self::FORGET_EVERY) {
            self.service
                .forget_requests(crate::ns::t_secs())
                .await
                .map_err(|e| format!("dropping old request records: {}", e.1))?;
            self.service
                .unload_dropped()
                .await
                .map_err(|e| format!("unloading deleted file systems: {}", e.1))?;
        }
        let expired = self.service.expire_sessions(std::time::Instant::now());
        if expired > 0 {
            tracing::info!(expired, "sessions whose lease ran out ended");
        }
        self.service.settle_tails(&self.data).await;
        match self.service.collect_orphans(&self.data).await {
            Ok(0) => Ok(()),
            Ok(n) => {
                tracing::info!(removed = n, "orphaned inodes collected");
                Ok(())
            }
            Err(e) => Err(format!("collecting orphans: {}", e.1)),
        }
    }
}
