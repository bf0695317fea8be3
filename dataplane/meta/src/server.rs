//! Serving the metadata protocol, and the orphan collector.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cpfs_dataplane::capability::{ADMIN, ANY_INODE};
use cpfs_dataplane::client::DataClient;
use cpfs_dataplane::metaproto::{errno, Caller, Kind, MetaOp, MetaReply, MetaRequest, RequestId};
use cpfs_dataplane::proto::NodeRequest;
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
        if let MetaOp::Mount { domain } = &req.op {
            return reply(self.mount(domain, peer.ip()).await, |r| r);
        }
        let Some(s) = self.session(req.session) else {
            return MetaReply::Err {
                errno: errno::ESTALE,
                message: "unknown session; mount again".into(),
            };
        };
        // Bookkeeping that no identity may be refused: forgetting an open
        // handle, and the data path's chain table.
        if matches!(req.op, MetaOp::Release { .. } | MetaOp::ChainTable) {
            return self.handle_as(s, req.caller, req.op, None).await;
        }
        let grant = match self.session_grant(&s).await {
            Ok(g) => g,
            Err((errno, message)) => return MetaReply::Err { errno, message },
        };
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
        self.handle_as(s, who, req.op, req.id).await
    }

    /// Runs `op` for `who`, the identity the service decided on. An
    /// operation that is not idempotent is applied once per request id: a
    /// retry of one already applied gets the answer the first attempt got.
    async fn handle_as(
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
            MetaOp::Mount { .. } => MetaReply::Err {
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
                match self.create(&s, &who, parent, &name, node, id).await {
                    Ok(a) => reply(
                        self.open_created(&s, &who, a.ino, read).await,
                        MetaReply::Open,
                    ),
                    Err((errno, message)) => MetaReply::Err { errno, message },
                }
            }
            MetaOp::Readlink { ino } => reply(self.readlink(&s, ino).await, MetaReply::Link),
            MetaOp::Link {
                ino,
                new_parent,
                new_name,
            } => reply(
                self.link(&s, &who, ino, new_parent, &new_name, id).await,
                MetaReply::Entry,
            ),
            MetaOp::Unlink { parent, name } => reply(
                self.unlink(&s, &who, parent, &name, false, id).await,
                |_| MetaReply::Done,
            ),
            MetaOp::Rmdir { parent, name } => {
                reply(self.unlink(&s, &who, parent, &name, true, id).await, |_| {
                    MetaReply::Done
                })
            }
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
            MetaOp::Release { ino } => {
                self.release(&s, ino);
                MetaReply::Done
            }
            MetaOp::Access { ino, mask } => {
                reply(self.access(&s, &who, ino, mask).await, |_| MetaReply::Done)
            }
            MetaOp::ReadDir { ino, after, limit } => reply(
                self.readdir(&s, &who, ino, after, limit).await,
                |(entries, more)| MetaReply::Dir { entries, more },
            ),
            MetaOp::Written { ino, size } => {
                reply(self.written(&s, ino, size).await, MetaReply::Attr)
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
        }
    }

    /// Removes orphaned inodes (last link gone, no client holds them open):
    /// their chunks on every node, then their rows.
    pub async fn collect_orphans(self: &Arc<Self>, data: &DataClient) -> Res<usize> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT fs_id, ino FROM orphans ORDER BY since LIMIT 256")
                .fetch_all(&self.store.pool)
                .await
                .map_err(|e| (errno::EIO, e.to_string()))?;
        let mut done = 0;
        for (fs, ino) in rows {
            let ino = ino as u64;
            if self.is_open(&fs, ino) {
                continue;
            }
            let cap = self.key.issue(
                &fs,
                ANY_INODE,
                ADMIN,
                crate::ns::now_ns() / 1_000_000_000 + 60,
            );
            if let Err(e) = data
                .broadcast(NodeRequest::DropInode {
                    cap,
                    fs: fs.clone(),
                    inode: ino,
                })
                .await
            {
                tracing::warn!(fs, ino, error = %e, "could not drop an orphan's chunks yet");
                continue;
            }
            let mut tx = self
                .store
                .begin_write()
                .await
                .map_err(|e| (errno::EIO, e.to_string()))?;
            let size: Option<(i64,)> = sqlx::query_as(
                "SELECT size FROM inodes WHERE fs_id = $1 AND ino = $2 AND kind = 1",
            )
            .bind(&fs)
            .bind(ino as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| (errno::EIO, e.to_string()))?;
            for sql in [
                "DELETE FROM xattrs WHERE fs_id = $1 AND ino = $2",
                "DELETE FROM inodes WHERE fs_id = $1 AND ino = $2",
                "DELETE FROM orphans WHERE fs_id = $1 AND ino = $2",
            ] {
                sqlx::query(sql)
                    .bind(&fs)
                    .bind(ino as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| (errno::EIO, e.to_string()))?;
            }
            sqlx::query("UPDATE fs_counters SET used_bytes = used_bytes - $1, files = files - 1 WHERE fs_id = $2")
                .bind(size.map_or(0, |s| s.0))
                .bind(&fs)
                .execute(&mut *tx)
                .await
                .map_err(|e| (errno::EIO, e.to_string()))?;
            tx.commit().await.map_err(|e| (errno::EIO, e.to_string()))?;
            done += 1;
        }
        Ok(done)
    }
}

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
        | MetaOp::SetXattr { .. }
        | MetaOp::RemoveXattr { .. }
        | MetaOp::SetStripe { .. } => true,
        MetaOp::Mount { .. }
        | MetaOp::Lookup { .. }
        | MetaOp::GetAttr { .. }
        | MetaOp::Readlink { .. }
        | MetaOp::Release { .. }
        | MetaOp::ReadDir { .. }
        | MetaOp::StatFs
        | MetaOp::GetXattr { .. }
        | MetaOp::ListXattr { .. }
        | MetaOp::GetStripe { .. }
        | MetaOp::ChainTable => false,
    }
}

/// Serves metadata requests on `listener` and collects orphans in the
/// background.
pub async fn serve(service: Arc<MetaService>, listener: TcpListener) {
    let gc = service.clone();
    tokio::spawn(async move {
        let source_svc = gc.clone();
        let source: cpfs_dataplane::client::ChainSource = Arc::new(move || {
            let s = source_svc.clone();
            Box::pin(async move { s.chain_table().await.map_err(|e| e.1) })
        });
        let table = gc.chain_table().await.unwrap_or_default();
        let data = DataClient::new(table, source);
        let mut rounds = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rounds += 1;
            if rounds.is_multiple_of(30) {
                if let Err(e) = gc.forget_requests().await {
                    tracing::warn!(error = %e.1, "dropping old request records failed");
                }
            }
            if let Ok(t) = gc.chain_table().await {
                if t.version > data.chain_version().await {
                    data.set_table(t).await;
                }
            }
            match gc.collect_orphans(&data).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "orphaned inodes collected"),
                Err(e) => tracing::warn!(error = %e.1, "orphan collection failed"),
            }
        }
    });
    cpfs_dataplane::rpc::serve(listener, move |peer, req: MetaRequest| {
        service.clone().handle(peer, req)
    })
    .await;
}

#[cfg(test)]
mod tests {
    //! Exactly-once application of retried requests, on SQLite and, when
    //! `CPFS_TEST_DATABASE_URL` names a server, on PostgreSQL (CI also sets
    //! `CPFS_REQUIRE_POSTGRES=1`, so a missing server fails the run).

    use super::*;
    use cpfs_controlplane::{ControlPlane, RegionConfig, Store, SystemClock};
    use cpfs_dataplane::capability::CapabilityKey;
    use cpfs_dataplane::chains::{Chain, ChainTable, NodeAddr};
    use cpfs_dataplane::metaproto::ROOT_INO;

    const FS: &str = "cpfs-test";

    struct Backend {
        name: &'static str,
        svc: Arc<MetaService>,
        s: Session,
        _dir: Option<tempfile::TempDir>,
    }

    async fn backends() -> Vec<Backend> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let (svc, s) = service(&url).await;
        let mut out = vec![Backend {
            name: "sqlite",
            svc,
            s,
            _dir: Some(dir),
        }];
        match std::env::var("CPFS_TEST_DATABASE_URL") {
            Ok(base) if !base.is_empty() => {
                let name = format!(
                    "cpfs_meta_{:x}_{:x}",
                    std::process::id(),
                    rand::random::<u64>()
                );
                let ok = std::process::Command::new("psql")
                    .arg(&base)
                    .arg("-qc")
                    .arg(format!("CREATE DATABASE {name}"))
                    .status()
                    .unwrap();
                assert!(ok.success(), "could not create database {name}");
                let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
                let (svc, s) = service(&url).await;
                out.push(Backend {
                    name: "postgres",
                    svc,
                    s,
                    _dir: None,
                });
            }
            _ => assert!(
                std::env::var("CPFS_REQUIRE_POSTGRES").is_err(),
                "CPFS_REQUIRE_POSTGRES is set but CPFS_TEST_DATABASE_URL is not"
            ),
        }
        out
    }

    /// A metadata service over a provisioned file system, and a session on it.
    async fn service(url: &str) -> (Arc<MetaService>, Session) {
        let store = Store::open(url).await.unwrap();
        let table = ChainTable {
            version: 1,
            chains: vec![Chain {
                id: 0,
                members: vec![NodeAddr {
                    id: "node-a".into(),
                    address: "127.0.0.1:1".into(),
                }],
                syncing: vec![],
            }],
            replicas: 1,
        };
        sqlx::query("INSERT INTO chain_tables (version, body, created_at) VALUES (1, $1, 0)")
            .bind(serde_json::to_string(&table).unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        let cp = ControlPlane::new(
            store.clone(),
            Arc::new(SystemClock),
            RegionConfig::default(),
        );
        cp.provision_namespace(FS).await.unwrap();
        let svc = MetaService::new(
            store,
            CapabilityKey::from_cluster_token("test"),
            crate::access::IdentitySettings {
                ldap_cache_ttl: Duration::from_secs(60),
                ldap_bind_password: None,
            },
        );
        let s = Session {
            fs: FS.into(),
            capacity_bytes: 1 << 30,
            domain: "test".into(),
            peer: "127.0.0.1".parse().unwrap(),
        };
        (svc, s)
    }

    fn id(seq: u64) -> Option<RequestId> {
        Some(RequestId { client: 7, seq })
    }

    impl Backend {
        async fn run(&self, op: MetaOp, id: Option<RequestId>) -> MetaReply {
            let root = Caller {
                uid: 0,
                gid: 0,
                groups: vec![],
            };
            self.svc
                .clone()
                .handle_as(self.s.clone(), root, op, id)
                .await
        }

        /// The errno of the answer, 0 for success.
        async fn errno(&self, op: MetaOp, id: Option<RequestId>) -> i32 {
            match self.run(op, id).await {
                MetaReply::Err { errno, .. } => errno,
                _ => 0,
            }
        }

        async fn ino(&self, op: MetaOp, id: Option<RequestId>) -> u64 {
            match self.run(op, id).await {
                MetaReply::Open(o) => o.attr.ino,
                MetaReply::Entry(a) => a.ino,
                other => panic!("{}: no inode in {other:?}", self.name),
            }
        }

        async fn nlink(&self, ino: u64) -> u32 {
            match self.run(MetaOp::GetAttr { ino }, None).await {
                MetaReply::Attr(a) => a.nlink,
                other => panic!("{}: getattr: {other:?}", self.name),
            }
        }

        async fn names(&self) -> Vec<String> {
            let op = MetaOp::ReadDir {
                ino: ROOT_INO,
                after: None,
                limit: 100,
            };
            match self.run(op, None).await {
                MetaReply::Dir { entries, .. } => entries
                    .into_iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .collect(),
                other => panic!("{}: readdir: {other:?}", self.name),
            }
        }
    }

    fn create(name: &str) -> MetaOp {
        MetaOp::Create {
            parent: ROOT_INO,
            name: name.into(),
            mode: 0o644,
            umask: 0o022,
            read: true,
        }
    }

    #[tokio::test]
    async fn a_retried_operation_is_applied_once_and_answered_as_the_first_attempt() {
        for b in backends().await {
            let n = b.name;
            // Each operation twice under one id (an attempt whose answer was
            // lost, then its retry), then under a new id (a new operation,
            // which must still fail as POSIX says).
            let f = b.ino(create("f"), id(1)).await;
            assert_eq!(b.ino(create("f"), id(1)).await, f, "{n}");
            assert_eq!(b.errno(create("f"), id(2)).await, errno::EEXIST, "{n}");

            let mkdir = MetaOp::Mkdir {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                mode: 0o755,
                umask: 0,
            };
            let d = b.ino(mkdir.clone(), id(3)).await;
            assert_eq!(b.ino(mkdir.clone(), id(3)).await, d, "{n}");
            assert_eq!(b.errno(mkdir, id(4)).await, errno::EEXIST, "{n}");

            let link = MetaOp::Link {
                ino: f,
                new_parent: ROOT_INO,
                new_name: b"l".to_vec(),
            };
            assert_eq!(b.ino(link.clone(), id(5)).await, f, "{n}");
            assert_eq!(b.ino(link.clone(), id(5)).await, f, "{n}");
            assert_eq!(b.nlink(f).await, 2, "{n}: the link was made twice");
            assert_eq!(b.errno(link, id(6)).await, errno::EEXIST, "{n}");

            let symlink = MetaOp::Symlink {
                parent: ROOT_INO,
                name: b"s".to_vec(),
                target: b"f".to_vec(),
            };
            let sy = b.ino(symlink.clone(), id(7)).await;
            assert_eq!(b.ino(symlink, id(7)).await, sy, "{n}");

            let xattr = MetaOp::SetXattr {
                ino: f,
                name: b"user.k".to_vec(),
                value: b"v".to_vec(),
                flags: 1, // XATTR_CREATE
            };
            assert_eq!(b.errno(xattr.clone(), id(8)).await, 0, "{n}");
            assert_eq!(b.errno(xattr.clone(), id(8)).await, 0, "{n}");
            assert_eq!(b.errno(xattr, id(9)).await, errno::EEXIST, "{n}");
            let rmxattr = MetaOp::RemoveXattr {
                ino: f,
                name: b"user.k".to_vec(),
            };
            assert_eq!(b.errno(rmxattr.clone(), id(10)).await, 0, "{n}");
            assert_eq!(b.errno(rmxattr.clone(), id(10)).await, 0, "{n}");
            assert_eq!(b.errno(rmxattr, id(11)).await, errno::ENODATA, "{n}");

            let rename = MetaOp::Rename {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"g".to_vec(),
                flags: 0,
            };
            assert_eq!(b.errno(rename.clone(), id(12)).await, 0, "{n}");
            assert_eq!(b.errno(rename.clone(), id(12)).await, 0, "{n}");
            assert_eq!(b.errno(rename, id(13)).await, errno::ENOENT, "{n}");

            let unlink = MetaOp::Unlink {
                parent: ROOT_INO,
                name: b"g".to_vec(),
            };
            assert_eq!(b.errno(unlink.clone(), id(14)).await, 0, "{n}");
            assert_eq!(b.errno(unlink.clone(), id(14)).await, 0, "{n}");
            assert_eq!(b.nlink(f).await, 1, "{n}: the unlink was applied twice");
            assert_eq!(b.errno(unlink, id(15)).await, errno::ENOENT, "{n}");
            let rmdir = MetaOp::Rmdir {
                parent: ROOT_INO,
                name: b"d".to_vec(),
            };
            assert_eq!(b.errno(rmdir.clone(), id(16)).await, 0, "{n}");
            assert_eq!(b.errno(rmdir, id(16)).await, 0, "{n}");

            assert_eq!(b.names().await, ["l", "s"], "{n}");
        }
    }

    #[tokio::test]
    async fn a_refused_attempt_leaves_no_record_and_its_retry_runs_afresh() {
        for b in backends().await {
            let unlink = MetaOp::Unlink {
                parent: ROOT_INO,
                name: b"later".to_vec(),
            };
            assert_eq!(b.errno(unlink.clone(), id(1)).await, errno::ENOENT);
            assert_eq!(b.errno(create("later"), id(2)).await, 0);
            assert_eq!(b.errno(unlink, id(1)).await, 0, "{}", b.name);
            assert!(b.names().await.is_empty(), "{}", b.name);
        }
    }

    #[tokio::test]
    async fn without_an_id_a_repeated_create_is_refused() {
        for b in backends().await {
            assert_eq!(b.errno(create("f"), None).await, 0);
            assert_eq!(
                b.errno(create("f"), None).await,
                errno::EEXIST,
                "{}",
                b.name
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_attempts_of_one_request_apply_it_once() {
        for b in backends().await {
            let b = Arc::new(b);
            let attempts: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    tokio::spawn(async move { b.ino(create("once"), id(1)).await })
                })
                .collect();
            let mut inos = Vec::new();
            for a in attempts {
                inos.push(a.await.unwrap());
            }
            inos.dedup();
            assert_eq!(
                inos.len(),
                1,
                "{}: answered different inodes: {inos:?}",
                b.name
            );
            assert_eq!(b.names().await, ["once"], "{}", b.name);
        }
    }

    #[tokio::test]
    async fn records_are_forgotten_once_no_retry_can_come() {
        for b in backends().await {
            assert_eq!(b.errno(create("f"), id(1)).await, 0);
            assert_eq!(b.svc.forget_requests().await.unwrap(), 0, "{}", b.name);
            sqlx::query("UPDATE meta_requests SET at = at - 3600")
                .execute(&b.svc.store.pool)
                .await
                .unwrap();
            assert_eq!(b.svc.forget_requests().await.unwrap(), 1, "{}", b.name);
            let gone = b.svc.applied(&b.s, RequestId { client: 7, seq: 1 });
            assert_eq!(gone.await.unwrap(), None, "{}", b.name);
        }
    }
}
