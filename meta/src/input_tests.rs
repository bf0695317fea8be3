//! Bounds on what a client sends: what the service cannot give back
//! exactly is refused when it arrives, not stored.

use cpfs_proto::meta::{errno, Kind, MetaOp, MetaReply, ROOT_INO};

use crate::exactly_once_tests::{backends, create_in};

fn symlink(name: &str, target: Vec<u8>) -> MetaOp {
    MetaOp::Symlink {
        parent: ROOT_INO,
        name: name.into(),
        target,
    }
}

#[tokio::test]
async fn symlink_targets_are_what_readlink_can_return() {
    for b in backends().await {
        let n = b.name;
        let longest = vec![b'x'; 4095];
        let ino = match b.run(symlink("longest", longest.clone()), None).await {
            MetaReply::Entry(a) if a.kind == Kind::Symlink => a.ino,
            other => panic!("{n}: {other:?}"),
        };
        match b.run(MetaOp::Readlink { ino }, None).await {
            MetaReply::Link(t) => assert_eq!(t, longest, "{n}"),
            other => panic!("{n}: readlink: {other:?}"),
        }
        let too_long = symlink("too-long", vec![b'x'; 4096]);
        assert_eq!(b.errno(too_long, None).await, errno::ENAMETOOLONG, "{n}");
        let nul = symlink("nul", b"a\0b".to_vec());
        assert_eq!(b.errno(nul, None).await, errno::EINVAL, "{n}");
        assert_eq!(
            b.errno(symlink("empty", vec![]), None).await,
            errno::EINVAL,
            "{n}"
        );
    }
}

/// A size or time change goes through a handle the session opened for
/// writing, and a session releases only its own handles: an inode number
/// alone does not let another client grow a file or unpin it.
#[tokio::test]
async fn only_the_session_holding_a_writable_handle_moves_the_size() {
    for b in backends().await {
        let n = b.name;
        let create = MetaOp::Create {
            parent: ROOT_INO,
            name: b"held".to_vec(),
            mode: 0o644,
            umask: 0,
            read: false,
        };
        let ino = match b.run(create, None).await {
            MetaReply::Open(o) => o.attr.ino,
            other => panic!("{n}: {other:?}"),
        };
        let mut other = b.s.clone();
        other.id = b.s.id + 1;
        let root = cpfs_proto::meta::Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let as_other = |op: MetaOp| {
            b.svc
                .clone()
                .handle_as(other.clone(), root.clone(), op, None)
        };
        let grow = MetaOp::Written {
            ino,
            size: 1 << 30,
            resumed: false,
        };
        match as_other(grow.clone()).await {
            MetaReply::Err { errno: e, .. } => assert_eq!(e, errno::EBADF, "{n}"),
            other => panic!("{n}: another session grew the file: {other:?}"),
        }
        let release = MetaOp::Release {
            ino,
            writable: true,
        };
        as_other(release.clone()).await;
        assert!(
            b.svc.is_open(crate::exactly_once_tests::FS, ino),
            "{n}: another session released the handle"
        );
        // The holder still can, until it releases.
        assert!(
            matches!(b.run(grow.clone(), None).await, MetaReply::Attr(a) if a.size == 1 << 30),
            "{n}"
        );
        b.run(release, None).await;
        assert!(!b.svc.is_open(crate::exactly_once_tests::FS, ino), "{n}");
        assert_eq!(b.errno(grow, None).await, errno::EBADF, "{n}");
    }
}

/// Releases sent together: each one counts as a single release of the
/// sending session's handle, another session's are untouched, and a batch
/// over the limit is refused whole.
#[tokio::test]
async fn handles_released_together_are_released_and_bounded() {
    for b in backends().await {
        let n = b.name;
        let mut inos = Vec::new();
        for i in 0..3 {
            let create = create_in(ROOT_INO, &format!("many-{i}"));
            match b.run(create, None).await {
                MetaReply::Open(o) => inos.push(o.attr.ino),
                other => panic!("{n}: {other:?}"),
            }
        }
        let fs = crate::exactly_once_tests::FS;
        let over = MetaOp::ReleaseMany {
            handles: vec![(inos[0], true); cpfs_proto::meta::MAX_RELEASES + 1],
        };
        assert_eq!(b.errno(over, None).await, errno::EINVAL, "{n}");
        assert!(
            inos.iter().all(|&i| b.svc.is_open(fs, i)),
            "{n}: refused, yet released"
        );

        // The first two released together; the third stays open.
        let two = MetaOp::ReleaseMany {
            handles: vec![(inos[0], true), (inos[1], false)],
        };
        assert!(matches!(b.run(two, None).await, MetaReply::Done), "{n}");
        assert!(!b.svc.is_open(fs, inos[0]), "{n}");
        assert!(!b.svc.is_open(fs, inos[1]), "{n}");
        assert!(b.svc.is_open(fs, inos[2]), "{n}");
    }
}
