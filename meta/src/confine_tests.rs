//! Subdirectory mounts: a session mounted through an access point or a
//! path sees its directory as inode 1, `..` at its root stays there, and
//! no inode outside its subtree can be named, whatever number the client
//! sends.

use std::net::SocketAddr;
use std::sync::Arc;

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply, MetaRequest, MountRoot, ROOT_INO};

use crate::exactly_once_tests::{mkdir_in as mkdir, provisioned, FS};
use crate::identity::IdentitySettings;
use crate::policy::{AccessPointFuture, AccessPointSpec, MountPolicy, PolicyFuture, PolicySource};
use crate::MetaService;

const DOMAIN: &str = "confine.mount.cpfs";
const FROM: &str = "127.0.0.1:700";

struct Targets;

impl PolicySource for Targets {
    fn mount_policy<'a>(&'a self, domain: &'a str) -> PolicyFuture<'a> {
        let policy = (domain == DOMAIN).then(|| MountPolicy {
            fs: FS.into(),
            mount_target_status: "Active".into(),
            fs_status: "Running".into(),
            capacity_bytes: 1 << 30,
            access_group: "g".into(),
            rules: None,
            ldap: None,
            fenced: vec![],
        });
        Box::pin(async move { Ok(policy) })
    }

    fn access_point<'a>(&'a self, id: &'a str) -> AccessPointFuture<'a> {
        let spec = match id {
            "ap-team" => Some(AccessPointSpec {
                fs: FS.into(),
                root_path: "/team".into(),
                active: true,
            }),
            "ap-elsewhere" => Some(AccessPointSpec {
                fs: "cpfs-another".into(),
                root_path: "/".into(),
                active: true,
            }),
            _ => None,
        };
        Box::pin(async move { Ok(spec) })
    }
}

async fn call(svc: &Arc<MetaService>, session: u64, op: MetaOp) -> MetaReply {
    let req = MetaRequest {
        session,
        caller: Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        },
        op,
        id: None,
    };
    let from: SocketAddr = FROM.parse().unwrap();
    svc.clone().handle(from, req).await
}

async fn mount(svc: &Arc<MetaService>, root: Option<MountRoot>) -> Result<(u64, u64), i32> {
    let op = match root {
        None => MetaOp::Mount {
            domain: DOMAIN.into(),
        },
        Some(root) => MetaOp::MountAt {
            domain: DOMAIN.into(),
            root,
        },
    };
    match call(svc, 0, op).await {
        MetaReply::Mounted(m) => Ok((m.session, m.root.ino)),
        MetaReply::Err { errno, .. } => Err(errno),
        other => panic!("{other:?}"),
    }
}

fn ino(r: MetaReply) -> u64 {
    match r.without_dirs() {
        MetaReply::Entry(a) | MetaReply::Attr(a) => a.ino,
        MetaReply::Open(o) => o.attr.ino,
        other => panic!("no inode in {other:?}"),
    }
}

fn errno_of(r: &MetaReply) -> i32 {
    match r {
        MetaReply::Err { errno, .. } => *errno,
        _ => 0,
    }
}

#[tokio::test]
async fn a_subdirectory_mount_sees_its_root_as_inode_1_and_nothing_above() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let svc = MetaService::new(
        provisioned(&url).await,
        Arc::new(Targets),
        cpfs_proto::capability::CapabilityKey::from_cluster_token("test"),
        IdentitySettings::default(),
    )
    .unwrap();
    let (whole, root) = mount(&svc, None).await.unwrap();
    assert_eq!(root, ROOT_INO);
    let team = ino(call(&svc, whole, mkdir(ROOT_INO, "team")).await);
    let sub = ino(call(&svc, whole, mkdir(team, "sub")).await);
    let other = ino(call(&svc, whole, mkdir(ROOT_INO, "other")).await);
    let secret = ino(call(
        &svc,
        whole,
        MetaOp::Create {
            parent: other,
            name: b"secret".to_vec(),
            mode: 0o600,
            umask: 0,
            read: true,
        },
    )
    .await);

    let (ap, ap_root) = mount(&svc, Some(MountRoot::AccessPoint("ap-team".into())))
        .await
        .unwrap();
    assert_eq!(ap_root, ROOT_INO, "the access point's directory is inode 1");
    let lookup = |parent, name: &str| MetaOp::Lookup {
        parent,
        name: name.into(),
    };
    assert_eq!(ino(call(&svc, ap, lookup(ROOT_INO, "sub")).await), sub);
    assert_eq!(
        ino(call(&svc, ap, lookup(ROOT_INO, "..")).await),
        ROOT_INO,
        "`..` of the root is the root"
    );
    assert_eq!(ino(call(&svc, ap, lookup(sub, "..")).await), ROOT_INO);
    assert_eq!(
        ino(call(&svc, ap, MetaOp::GetAttr { ino: team }).await),
        ROOT_INO,
        "its own number is mapped too"
    );
    for outside in [other, secret] {
        for op in [
            MetaOp::GetAttr { ino: outside },
            lookup(outside, "secret"),
            MetaOp::Open {
                ino: outside,
                read: true,
                write: false,
            },
            MetaOp::Link {
                ino: outside,
                new_parent: ROOT_INO,
                new_name: b"stolen".to_vec(),
            },
            MetaOp::Rename {
                parent: ROOT_INO,
                name: b"sub".to_vec(),
                new_parent: outside,
                new_name: b"sub".to_vec(),
                flags: 0,
            },
        ] {
            let r = call(&svc, ap, op.clone()).await;
            assert_eq!(errno_of(&r), errno::EACCES, "{op:?}: {r:?}");
        }
    }
    match call(
        &svc,
        ap,
        MetaOp::ReadDir {
            ino: ROOT_INO,
            after: None,
            limit: 10,
        },
    )
    .await
    {
        MetaReply::Dir { entries, .. } => {
            let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
            assert_eq!(names, vec![b"sub".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
    // A listing names `..`: the root's is the root, a subdirectory's is
    // the root as the mount numbers it.
    for (dir, parent) in [(ROOT_INO, ROOT_INO), (sub, ROOT_INO)] {
        let list = MetaOp::ReadDirPlus {
            ino: dir,
            after: None,
            limit: 10,
        };
        match call(&svc, ap, list).await {
            MetaReply::DirPlus { parent: p, .. } => assert_eq!(p, parent, "`..` of {dir}"),
            other => panic!("{other:?}"),
        }
    }
    // A change's directory attributes are mapped like every inode number.
    match call(&svc, ap, mkdir(ROOT_INO, "made-inside")).await {
        MetaReply::Changed { dirs, .. } => {
            assert_eq!(dirs.iter().map(|a| a.ino).collect::<Vec<_>>(), [ROOT_INO]);
        }
        other => panic!("{other:?}"),
    }

    // A path works the same; what does not exist, or belongs to another
    // file system, is refused.
    let (p, _) = mount(&svc, Some(MountRoot::Path("/team/sub".into())))
        .await
        .unwrap();
    assert_eq!(
        errno_of(&call(&svc, p, MetaOp::GetAttr { ino: team }).await),
        errno::EACCES
    );
    for bad in [
        MountRoot::Path("/missing".into()),
        MountRoot::AccessPoint("ap-none".into()),
        MountRoot::AccessPoint("ap-elsewhere".into()),
    ] {
        assert_eq!(
            mount(&svc, Some(bad.clone())).await,
            Err(errno::ENOENT),
            "{bad:?}"
        );
    }
    assert_eq!(
        mount(&svc, Some(MountRoot::Path("/team/../other".into()))).await,
        Err(errno::EINVAL)
    );
}
