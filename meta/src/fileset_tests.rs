//! Filesets as the metadata service keeps them: bound from what the
//! control plane lists, usage exact through every kind of change and after
//! a reload, limits refused with EDQUOT before anything changes, and
//! nothing crossing a fileset's boundary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::meta::{errno, MetaOp, MetaReply, ROOT_INO};

use crate::exactly_once_tests::{backends, create_in as create, mkdir_in as mkdir, Backend, FS};
use crate::policy::{FilesetFuture, FilesetSpec, MountPolicy, PolicyFuture, PolicySource};
use crate::quota_view::{self, BoundFileset};
use crate::MetaService;

/// The control plane's fileset list, as a test sets it.
#[derive(Default)]
struct Wanted(Mutex<Vec<FilesetSpec>>);

impl PolicySource for Wanted {
    fn mount_policy<'a>(&'a self, _domain: &'a str) -> PolicyFuture<'a> {
        Box::pin(async { Ok(None::<MountPolicy>) })
    }

    fn filesets<'a>(&'a self, fs: &'a [String]) -> FilesetFuture<'a> {
        let list = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(list.into_iter().filter(|s| fs.contains(&s.fs)).collect()) })
    }
}

impl Wanted {
    fn set(&self, specs: Vec<FilesetSpec>) {
        *self.0.lock().unwrap() = specs;
    }
}

fn spec(id: &str, path: &str, size: Option<u64>, files: Option<u64>) -> FilesetSpec {
    FilesetSpec {
        fs: FS.into(),
        id: id.into(),
        path: path.into(),
        releasing: false,
        size_limit: size,
        file_limit: files,
    }
}

/// `b`'s store under a new service that asks `wanted` for filesets.
fn with_filesets(b: &mut Backend, wanted: Arc<Wanted>) {
    let svc = MetaService::new(
        b.svc.store.clone(),
        wanted,
        CapabilityKey::from_cluster_token("test"),
        crate::identity::IdentitySettings {
            ldap_cache_ttl: Duration::from_secs(60),
            ldap_bind_password: None,
        },
    )
    .unwrap();
    b.svc = svc;
}

async fn sync(b: &Backend) {
    // The service syncs what it has loaded: load the namespace first.
    b.run(MetaOp::GetAttr { ino: ROOT_INO }, None).await;
    b.svc.sync_quotas().await.unwrap();
}

/// The fileset's stored row, once a sync pass published the usage.
async fn bound(b: &Backend, id: &str) -> Option<BoundFileset> {
    b.svc.sync_quotas().await.unwrap();
    quota_view::bound(&b.svc.store, FS)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.id == id)
}

async fn lookup(b: &Backend, parent: u64, name: &str) -> u64 {
    let op = MetaOp::Lookup {
        parent,
        name: name.into(),
    };
    match b.run(op, None).await {
        MetaReply::Entry(a) => a.ino,
        other => panic!("{}: lookup {name}: {other:?}", b.name),
    }
}

/// Closes the handle a create opened: what it set aside is given back.
async fn closed(b: &Backend, ino: u64) {
    let release = MetaOp::Release {
        ino,
        writable: true,
    };
    assert!(
        matches!(b.run(release, None).await, MetaReply::Done),
        "{}",
        b.name
    );
}

async fn made(b: &Backend, op: MetaOp) -> u64 {
    match b.run(op, None).await {
        MetaReply::Open(o) => o.attr.ino,
        MetaReply::Entry(a) => a.ino,
        other => panic!("{}: {other:?}", b.name),
    }
}

#[tokio::test]
async fn a_fileset_counts_exactly_and_refuses_what_would_pass_its_limits() {
    for mut b in backends().await {
        let n = b.name;
        let wanted = Arc::new(Wanted::default());
        with_filesets(&mut b, wanted.clone());
        wanted.set(vec![spec("fset-a", "/proj/a/", Some(10_000), Some(3))]);
        sync(&b).await;
        let proj = lookup(&b, ROOT_INO, "proj").await;
        let root = lookup(&b, proj, "a").await;
        let f = bound(&b, "fset-a").await.expect("bound");
        assert_eq!((f.root, f.used_bytes, f.files), (root, 0, 0), "{n}");
        assert_eq!((f.size_limit, f.file_limit), (Some(10_000), Some(3)), "{n}");

        let one = made(&b, create(root, "one")).await;
        let sub = made(&b, mkdir(root, "sub")).await;
        let two = made(&b, create(sub, "two")).await;
        assert_eq!(
            b.errno(create(sub, "three"), None).await,
            errno::EDQUOT,
            "{n}: a fourth inode"
        );
        // Outside the fileset nothing is limited.
        made(&b, create(proj, "outside")).await;

        let w = |ino, size| MetaOp::Written {
            ino,
            size,
            resumed: false,
        };
        assert_eq!(b.errno(w(one, 6_000), None).await, 0, "{n}");
        assert_eq!(
            b.errno(w(two, 4_001), None).await,
            errno::EDQUOT,
            "{n}: past the size limit"
        );
        assert_eq!(b.errno(w(two, 4_000), None).await, 0, "{n}: up to it");
        let f = bound(&b, "fset-a").await.unwrap();
        assert_eq!((f.used_bytes, f.files), (10_000, 3), "{n}");

        // Freeing space and names lets writes and creates succeed again.
        let unlink = MetaOp::Unlink {
            parent: root,
            name: b"one".to_vec(),
        };
        assert_eq!(b.errno(unlink, None).await, 0, "{n}");
        let f = bound(&b, "fset-a").await.unwrap();
        assert_eq!((f.used_bytes, f.files), (4_000, 2), "{n}");
        let again = made(&b, create(sub, "three")).await;
        assert_eq!(b.errno(w(again, 6_000), None).await, 0, "{n}");

        // A truncate and extended attributes count too.
        let cut = MetaOp::SetAttr {
            ino: again,
            set: cpfs_proto::meta::SetAttr {
                size: Some(1_000),
                ..Default::default()
            },
        };
        assert!(matches!(b.run(cut, None).await, MetaReply::Attr(_)), "{n}");
        let xattr = MetaOp::SetXattr {
            ino: sub,
            name: b"user.k".to_vec(),
            value: vec![b'v'; 94],
            flags: 0,
        };
        assert_eq!(b.errno(xattr, None).await, 0, "{n}");
        let f = bound(&b, "fset-a").await.unwrap();
        assert_eq!((f.used_bytes, f.files), (5_100, 3), "{n}");

        // Limits change at the next pass; a limit is lifted by none.
        wanted.set(vec![spec("fset-a", "/proj/a/", None, None)]);
        sync(&b).await;
        let four = made(&b, create(root, "four")).await;
        closed(&b, four).await;
        let f = bound(&b, "fset-a").await.unwrap();
        assert_eq!((f.files, f.file_limit), (4, None), "{n}");

        // A new service loads what was committed and counts the same.
        let before = bound(&b, "fset-a").await.unwrap();
        with_filesets(&mut b, wanted.clone());
        sync(&b).await;
        assert_eq!(bound(&b, "fset-a").await.unwrap(), before, "{n}");
        made(&b, create(root, "five")).await;
        assert_eq!(bound(&b, "fset-a").await.unwrap().files, 5, "{n}");
    }
}

#[tokio::test]
async fn nothing_crosses_a_fileset_boundary_and_its_root_stays_put() {
    for mut b in backends().await {
        let n = b.name;
        let wanted = Arc::new(Wanted::default());
        with_filesets(&mut b, wanted.clone());
        // An existing directory is adopted with what it holds.
        let data = made(&b, mkdir(ROOT_INO, "data")).await;
        let home = made(&b, mkdir(data, "home")).await;
        let f1 = made(&b, create(home, "f1")).await;
        b.run(
            MetaOp::Written {
                ino: f1,
                size: 123,
                resumed: false,
            },
            None,
        )
        .await;
        closed(&b, f1).await;
        let free = made(&b, create(ROOT_INO, "free")).await;
        wanted.set(vec![spec("fset-h", "/data/home/", None, None)]);
        sync(&b).await;
        let f = bound(&b, "fset-h").await.expect("adopted");
        assert_eq!((f.root, f.used_bytes, f.files), (home, 123, 1), "{n}");

        let rename = |parent, name: &str, new_parent, new_name: &str| MetaOp::Rename {
            parent,
            name: name.into(),
            new_parent,
            new_name: new_name.into(),
            flags: 0,
        };
        assert_eq!(
            b.errno(rename(home, "f1", ROOT_INO, "f1"), None).await,
            errno::EXDEV,
            "{n}: out of the fileset"
        );
        assert_eq!(
            b.errno(rename(ROOT_INO, "free", home, "free"), None).await,
            errno::EXDEV,
            "{n}: into it"
        );
        let link = MetaOp::Link {
            ino: free,
            new_parent: home,
            new_name: b"l".to_vec(),
        };
        assert_eq!(b.errno(link, None).await, errno::EXDEV, "{n}: a link");
        assert_eq!(
            b.errno(rename(data, "home", data, "away"), None).await,
            errno::EBUSY,
            "{n}: the root"
        );
        assert_eq!(
            b.errno(rename(ROOT_INO, "data", ROOT_INO, "d2"), None)
                .await,
            errno::EBUSY,
            "{n}: a directory above the root"
        );
        // Inside it everything works.
        assert_eq!(
            b.errno(rename(home, "f1", home, "g1"), None).await,
            0,
            "{n}"
        );

        // Nesting is refused both ways: nothing is bound.
        wanted.set(vec![
            spec("fset-h", "/data/home/", None, None),
            spec("fset-in", "/data/home/x/", None, None),
            spec("fset-over", "/data/", None, None),
        ]);
        sync(&b).await;
        assert!(bound(&b, "fset-in").await.is_none(), "{n}: nested inside");
        assert!(bound(&b, "fset-over").await.is_none(), "{n}: nested over");

        // Releasing unbinds; the directory and its data stay, and the
        // root may go once it is empty.
        let mut released = spec("fset-h", "/data/home/", None, None);
        released.releasing = true;
        wanted.set(vec![released]);
        sync(&b).await;
        assert!(bound(&b, "fset-h").await.is_none(), "{n}: released");
        assert_eq!(lookup(&b, home, "g1").await, f1, "{n}: data stays");
        assert_eq!(
            b.errno(rename(home, "g1", ROOT_INO, "g1"), None).await,
            0,
            "{n}: no boundary any more"
        );
        let rmdir = MetaOp::Rmdir {
            parent: data,
            name: b"home".to_vec(),
        };
        assert_eq!(b.errno(rmdir, None).await, 0, "{n}");
    }
}

#[tokio::test]
async fn a_fileset_root_cannot_be_removed_while_bound() {
    for mut b in backends().await {
        let n = b.name;
        let wanted = Arc::new(Wanted::default());
        with_filesets(&mut b, wanted.clone());
        wanted.set(vec![spec("fset-r", "/r/", None, None)]);
        sync(&b).await;
        let rmdir = MetaOp::Rmdir {
            parent: ROOT_INO,
            name: b"r".to_vec(),
        };
        assert_eq!(b.errno(rmdir, None).await, errno::EBUSY, "{n}");
    }
}
