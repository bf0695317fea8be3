use std::sync::atomic::{AtomicU64, Ordering};

use cpfs_proto::frame::{encode_frame, read_frame};
use cpfs_proto::meta::{MetaReply, MetaRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

/// A metadata service that answers every listing with one entry and every
/// other call with `Done`, counting the listings it was asked for.
async fn service(listings: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.unwrap();
        while let Ok((n, req)) = read_frame::<_, MetaRequest>(&mut c).await {
            let reply = match req.op {
                MetaOp::ReadDirPlus { ino, .. } => {
                    listings.fetch_add(1, Ordering::SeqCst);
                    MetaReply::DirPlus {
                        entries: vec![(
                            cpfs_proto::meta::DirEntry {
                                name: b"sub".to_vec(),
                                ino: SUBDIR,
                                kind: Kind::Dir,
                            },
                            subdir_attr(),
                        )],
                        searchable: true,
                        more: false,
                        parent: ino,
                    }
                }
                _ => MetaReply::Done,
            };
            c.write_all(&encode_frame(n, &reply).unwrap())
                .await
                .unwrap();
        }
    });
    address
}

/// The one entry of every listing: a directory.
const SUBDIR: u64 = 100;

fn subdir_attr() -> Attr {
    Attr {
        ino: SUBDIR,
        kind: Kind::Dir,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        size: 0,
        stored: 0,
        atime_ns: 1,
        mtime_ns: 2,
        ctime_ns: 3,
        rdev: 0,
    }
}

fn root() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

#[tokio::test]
async fn a_listing_is_served_again_once_and_only_while_nothing_changed() {
    let listings = Arc::new(AtomicU64::new(0));
    let meta = MetaClient::new(&service(listings.clone()).await, "test");
    let last = LastListing::default();
    let listed = ListedDirs::default();
    let read = || listings.load(Ordering::SeqCst);

    // rm -r: two opendirs in a row, one listing; a third reads again.
    last.open(&meta, &root(), 7, &listed).await.unwrap();
    last.open(&meta, &root(), 7, &listed).await.unwrap();
    assert_eq!(read(), 1);
    last.open(&meta, &root(), 7, &listed).await.unwrap();
    assert_eq!(read(), 2);

    // Another directory, or another caller (whose permissions differ).
    last.open(&meta, &root(), 8, &listed).await.unwrap();
    assert_eq!(read(), 3);
    let other = Caller {
        uid: 1000,
        ..root()
    };
    last.open(&meta, &other, 8, &listed).await.unwrap();
    assert_eq!(read(), 4);

    // This client changed something in between.
    last.open(&meta, &root(), 9, &listed).await.unwrap();
    let unlink = MetaOp::Unlink {
        parent: 9,
        name: b"f".to_vec(),
    };
    meta.call(&root(), unlink).await.unwrap();
    last.open(&meta, &root(), 9, &listed).await.unwrap();
    assert_eq!(read(), 6);

    // Another client did (the watch said so).
    last.open(&meta, &root(), 10, &listed).await.unwrap();
    meta.changes.invalidate(10);
    last.open(&meta, &root(), 10, &listed).await.unwrap();
    assert_eq!(read(), 8);

    // A lookup changes nothing: the listing is served again.
    last.open(&meta, &root(), 11, &listed).await.unwrap();
    let lookup = MetaOp::Lookup {
        parent: 11,
        name: b"f".to_vec(),
    };
    meta.call(&root(), lookup).await.unwrap();
    last.open(&meta, &root(), 11, &listed).await.unwrap();
    assert_eq!(read(), 9);
}

#[tokio::test]
async fn a_listed_directorys_attributes_hold_until_something_changes_it() {
    let meta = MetaClient::new(&service(Arc::default()).await, "test");
    let last = LastListing::default();
    let listed = ListedDirs::default();
    last.open(&meta, &root(), 7, &listed).await.unwrap();
    let (a, ttl) = listed.get(&meta, SUBDIR).expect("listed");
    assert_eq!(a, subdir_attr());
    assert!(ttl <= ATTR_TTL);

    // This client's change in another directory leaves it.
    let unlink = |parent| MetaOp::Unlink {
        parent,
        name: b"f".to_vec(),
    };
    meta.call(&root(), unlink(50)).await.unwrap();
    assert!(listed.get(&meta, SUBDIR).is_some());
    // One in the directory itself does not.
    meta.call(&root(), unlink(SUBDIR)).await.unwrap();
    assert!(listed.get(&meta, SUBDIR).is_none());

    // Nor another client's, nor a rename anywhere (the moved inode is not
    // named by the call).
    last.open(&meta, &root(), 8, &listed).await.unwrap();
    meta.changes.invalidate(SUBDIR);
    assert!(listed.get(&meta, SUBDIR).is_none());
    last.open(&meta, &root(), 9, &listed).await.unwrap();
    let rename = MetaOp::Rename {
        parent: 60,
        name: b"a".to_vec(),
        new_parent: 61,
        new_name: b"b".to_vec(),
        flags: 0,
    };
    meta.call(&root(), rename).await.unwrap();
    assert!(listed.get(&meta, SUBDIR).is_none());
}
