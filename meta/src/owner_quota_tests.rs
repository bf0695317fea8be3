//! User and group quotas as the metadata service keeps them: the owner is
//! charged whoever writes, a non-root caller is refused with EDQUOT past a
//! limit, root is not, chown moves usage, and the published figures are
//! exact and survive a reload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply, SetAttr, ROOT_INO};

use crate::exactly_once_tests::{backends, create_in as create, Backend, FS};
use crate::policy::{MountPolicy, PolicyFuture, PolicySource, UserQuotaFuture, UserQuotaSpec};
use crate::quota_view::{self, OwnerUsage};
use crate::MetaService;

#[derive(Default)]
struct Limits(Mutex<Vec<UserQuotaSpec>>);

impl PolicySource for Limits {
    fn mount_policy<'a>(&'a self, _domain: &'a str) -> PolicyFuture<'a> {
        Box::pin(async { Ok(None::<MountPolicy>) })
    }

    fn user_quotas<'a>(&'a self, fs: &'a [String]) -> UserQuotaFuture<'a> {
        let list = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(list.into_iter().filter(|s| fs.contains(&s.fs)).collect()) })
    }
}

fn quota(group: bool, id: u32, size: Option<u64>, files: Option<u64>) -> UserQuotaSpec {
    UserQuotaSpec {
        fs: FS.into(),
        group,
        id,
        size_limit: size,
        file_limit: files,
    }
}

fn reopen(b: &mut Backend, limits: Arc<Limits>) {
    b.svc = MetaService::new(
        b.svc.store.clone(),
        limits,
        CapabilityKey::from_cluster_token("test"),
        crate::identity::IdentitySettings {
            ldap_cache_ttl: Duration::from_secs(60),
            ldap_bind_password: None,
        },
    )
    .unwrap();
}

async fn as_user(b: &Backend, uid: u32, gid: u32, op: MetaOp) -> MetaReply {
    let who = Caller {
        uid,
        gid,
        groups: vec![],
    };
    b.svc.clone().handle_as(b.s.clone(), who, op, None).await
}

fn errno_of(r: &MetaReply) -> i32 {
    match r {
        MetaReply::Err { errno, .. } => *errno,
        _ => 0,
    }
}

fn ino_of(r: &MetaReply) -> u64 {
    match r {
        MetaReply::Open(o) => o.attr.ino,
        MetaReply::Entry(a) => a.ino,
        other => panic!("no inode in {other:?}"),
    }
}

async fn published(b: &Backend, group: bool, id: u32) -> Option<OwnerUsage> {
    b.svc.sync_quotas().await.unwrap();
    quota_view::owner_usage(&b.svc.store, FS)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.group == group && o.id == id)
}

#[tokio::test]
async fn owners_are_charged_and_limited_and_root_is_not() {
    for mut b in backends().await {
        let n = b.name;
        let limits = Arc::new(Limits::default());
        reopen(&mut b, limits.clone());
        // A directory everyone may write, made before any quota exists.
        let shared = ino_of(
            &b.run(
                MetaOp::Mkdir {
                    parent: ROOT_INO,
                    name: b"shared".to_vec(),
                    mode: 0o777,
                    umask: 0,
                },
                None,
            )
            .await,
        );
        let early = ino_of(&as_user(&b, 1000, 1000, create(shared, "early")).await);
        as_user(
            &b,
            1000,
            1000,
            MetaOp::Written {
                ino: early,
                size: 1000,
                resumed: false,
            },
        )
        .await;
        // Opened again without what its create set aside (given back at
        // its release).
        let close = MetaOp::Release {
            ino: early,
            writable: true,
        };
        as_user(&b, 1000, 1000, close).await;
        let open_again = MetaOp::Open {
            ino: early,
            read: false,
            write: true,
        };
        as_user(&b, 1000, 1000, open_again).await;

        limits.set(vec![
            quota(false, 1000, Some(10_000), Some(3)),
            quota(true, 2000, Some(15_000), None),
        ]);
        // The first quota counts what the owner had already.
        let u = published(&b, false, 1000).await.expect("published");
        assert_eq!((u.used_bytes, u.files), (1000, 1), "{n}");
        assert_eq!((u.size_limit, u.file_limit), (Some(10_000), Some(3)), "{n}");

        let a = ino_of(&as_user(&b, 1000, 1000, create(shared, "a")).await);
        ino_of(&as_user(&b, 1000, 1000, create(shared, "b")).await);
        let r = as_user(&b, 1000, 1000, create(shared, "c")).await;
        assert_eq!(errno_of(&r), errno::EDQUOT, "{n}: a fourth file");
        let w = |ino, size| MetaOp::Written {
            ino,
            size,
            resumed: false,
        };
        assert_eq!(
            errno_of(&as_user(&b, 1000, 1000, w(a, 9_000)).await),
            0,
            "{n}"
        );
        let r = as_user(&b, 1000, 1000, w(a, 9_001)).await;
        assert_eq!(errno_of(&r), errno::EDQUOT, "{n}: a byte past the limit");

        // Root is not held back, and what it writes to the user's file is
        // the user's.
        assert_eq!(errno_of(&as_user(&b, 0, 0, w(a, 12_000)).await), 0, "{n}");
        let u = published(&b, false, 1000).await.unwrap();
        assert_eq!((u.used_bytes, u.files), (13_000, 3), "{n}");

        // A group's limit holds for every member.
        let g = ino_of(&as_user(&b, 1001, 2000, create(shared, "g")).await);
        assert_eq!(
            errno_of(&as_user(&b, 1001, 2000, w(g, 15_000)).await),
            0,
            "{n}"
        );
        let g2 = ino_of(&as_user(&b, 1002, 2000, create(shared, "g2")).await);
        let r = as_user(&b, 1002, 2000, w(g2, 1)).await;
        assert_eq!(errno_of(&r), errno::EDQUOT, "{n}: the group is full");

        // Freeing space lets writes go on.
        let unlink = MetaOp::Unlink {
            parent: shared,
            name: b"g".to_vec(),
        };
        assert_eq!(errno_of(&as_user(&b, 1001, 2000, unlink).await), 0, "{n}");
        assert_eq!(
            errno_of(&as_user(&b, 1002, 2000, w(g2, 4096)).await),
            0,
            "{n}"
        );
        let u = published(&b, true, 2000).await.unwrap();
        assert_eq!((u.used_bytes, u.files), (4096, 1), "{n}");

        // chown by root moves the usage; a chgrp by the owner into a full
        // group is refused.
        let chown = |ino, uid: Option<u32>, gid: Option<u32>| MetaOp::SetAttr {
            ino,
            set: SetAttr {
                uid,
                gid,
                ..Default::default()
            },
        };
        let r = as_user(&b, 0, 0, chown(a, Some(1001), None)).await;
        assert!(matches!(r, MetaReply::Attr(_)), "{n}: {r:?}");
        let u = published(&b, false, 1000).await.unwrap();
        assert_eq!((u.used_bytes, u.files), (1000, 2), "{n}");
        limits.set(vec![
            quota(false, 1000, Some(10_000), Some(3)),
            quota(true, 2000, Some(5_000), None),
        ]);
        published(&b, true, 2000).await;
        let r = as_user(
            &b,
            1000,
            1000,
            MetaOp::Written {
                ino: early,
                size: 2000,
                resumed: false,
            },
        )
        .await;
        assert_eq!(errno_of(&r), 0, "{n}");
        let r = as_user(&b, 1000, 1000, chown(early, None, Some(2000))).await;
        // The owner is not in group 2000: EPERM comes first.
        assert_eq!(errno_of(&r), errno::EPERM, "{n}");

        // A reload counts the same from the tree.
        let before = (
            published(&b, false, 1000).await.unwrap(),
            published(&b, true, 2000).await.unwrap(),
        );
        reopen(&mut b, limits.clone());
        b.run(MetaOp::GetAttr { ino: ROOT_INO }, None).await;
        let after = (
            published(&b, false, 1000).await.unwrap(),
            published(&b, true, 2000).await.unwrap(),
        );
        assert_eq!(before, after, "{n}");

        // Cancelling every quota removes the figures.
        limits.set(vec![]);
        assert!(published(&b, false, 1000).await.is_none(), "{n}");
    }
}

#[tokio::test]
async fn a_chgrp_into_a_full_group_is_refused() {
    for mut b in backends().await {
        let n = b.name;
        let limits = Arc::new(Limits::default());
        reopen(&mut b, limits.clone());
        limits.set(vec![quota(true, 3000, None, Some(1))]);
        b.run(MetaOp::GetAttr { ino: ROOT_INO }, None).await;
        b.svc.sync_quotas().await.unwrap();
        let shared = ino_of(
            &b.run(
                MetaOp::Mkdir {
                    parent: ROOT_INO,
                    name: b"s".to_vec(),
                    mode: 0o777,
                    umask: 0,
                },
                None,
            )
            .await,
        );
        // Member of 3000 (its primary group); one file fills the group.
        let who = |op| as_user(&b, 1000, 3000, op);
        let x = ino_of(&who(create(shared, "x")).await);
        let _ = x;
        let y = ino_of(&as_user(&b, 1000, 1000, create(shared, "y")).await);
        let chgrp = MetaOp::SetAttr {
            ino: y,
            set: SetAttr {
                gid: Some(3000),
                ..Default::default()
            },
        };
        let who = Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![3000],
        };
        let r = b.svc.clone().handle_as(b.s.clone(), who, chgrp, None).await;
        assert_eq!(errno_of(&r), errno::EDQUOT, "{n}: {r:?}");
    }
}

impl Limits {
    fn set(&self, specs: Vec<UserQuotaSpec>) {
        *self.0.lock().unwrap() = specs;
    }
}
