//! Bounds on what a client sends: what the service cannot give back
//! exactly is refused when it arrives, not stored.

use cpfs_proto::meta::{errno, Kind, MetaOp, MetaReply, ROOT_INO};

use crate::exactly_once_tests::backends;

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
