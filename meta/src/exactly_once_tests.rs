//! Exactly-once application of retried requests, on SQLite and, when
//! `CPFS_TEST_DATABASE_URL` names a server, on PostgreSQL (CI also sets
//! `CPFS_REQUIRE_POSTGRES=1`, so a missing server fails the run).

use std::sync::Arc;
use std::time::Duration;

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply, RequestId};
use cpfs_store::Store;

use crate::policy::{MountPolicy, PolicyFuture, PolicySource};
use crate::{MetaService, Session};
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::chains::{Chain, ChainTable, NodeAddr};
use cpfs_proto::meta::ROOT_INO;

pub(crate) const FS: &str = "cpfs-test";

/// These tests call the service with a session directly; no mount target
/// is ever looked up.
struct NoMountTargets;

impl PolicySource for NoMountTargets {
    fn mount_policy<'a>(&'a self, _domain: &'a str) -> PolicyFuture<'a> {
        Box::pin(async { Ok(None::<MountPolicy>) })
    }
}

pub(crate) struct Backend {
    pub name: &'static str,
    pub svc: Arc<MetaService>,
    pub s: Session,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let (svc, s) = service(&url).await;
    let mut out = vec![Backend {
        name: "sqlite",
        svc,
        s,
        url,
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
                url,
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

/// The PostgreSQL backend, when `CPFS_TEST_DATABASE_URL` names a server
/// (without one, [`backends`] has already failed the test if
/// `CPFS_REQUIRE_POSTGRES` is set).
pub(crate) async fn postgres_backend() -> Option<Backend> {
    backends().await.into_iter().find(|b| b.name == "postgres")
}

/// A metadata service over a provisioned file system, and a session on it.
async fn service(url: &str) -> (Arc<MetaService>, Session) {
    (open(provisioned(url).await), session())
}

/// The store at `url` with file system [`FS`] provisioned on one chain.
pub(crate) async fn provisioned(url: &str) -> Store {
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
    crate::lifecycle::provision(&store, FS, &table, 0)
        .await
        .unwrap();
    store
}

/// A metadata service on `store` (provisioned already).
pub(crate) fn open(store: Store) -> Arc<MetaService> {
    MetaService::new(
        store,
        Arc::new(NoMountTargets),
        CapabilityKey::from_cluster_token("test"),
        crate::identity::IdentitySettings {
            ldap_cache_ttl: Duration::from_secs(60),
            ldap_bind_password: None,
        },
    )
    .unwrap()
}

fn session() -> Session {
    Session {
        id: 1,
        fs: FS.into(),
        capacity_bytes: 1 << 30,
        domain: "test".into(),
        peer: "127.0.0.1".parse().unwrap(),
        privileged_only: false,
        root: ROOT_INO,
        access_point: None,
    }
}

fn id(seq: u64) -> Option<RequestId> {
    Some(RequestId { client: 7, seq })
}

impl Backend {
    pub async fn run(&self, op: MetaOp, id: Option<RequestId>) -> MetaReply {
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
    pub(crate) async fn errno(&self, op: MetaOp, id: Option<RequestId>) -> i32 {
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

/// Creating `name` in `parent` (mode 0644, no umask), for the tests.
pub(crate) fn create_in(parent: u64, name: &str) -> MetaOp {
    MetaOp::Create {
        parent,
        name: name.into(),
        mode: 0o644,
        umask: 0,
        read: true,
    }
}

/// Making directory `name` in `parent` (mode 0755, no umask), for the tests.
pub(crate) fn mkdir_in(parent: u64, name: &str) -> MetaOp {
    MetaOp::Mkdir {
        parent,
        name: name.into(),
        mode: 0o755,
        umask: 0,
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
        let now = crate::ns::t_secs();
        assert_eq!(b.svc.forget_requests(now).await.unwrap(), 0, "{}", b.name);
        let later = now + crate::ns::REQUEST_KEEP_SECS + 1;
        assert_eq!(b.svc.forget_requests(later).await.unwrap(), 1, "{}", b.name);
        let gone = b.svc.applied(&b.s, RequestId { client: 7, seq: 1 });
        assert_eq!(gone.await.unwrap(), None, "{}", b.name);
    }
}
