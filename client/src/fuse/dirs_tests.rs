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
                        entries: Vec::new(),
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
    let read = || listings.load(Ordering::SeqCst);

    // rm -r: two opendirs in a row, one listing; a third reads again.
    last.open(&meta, &root(), 7).await.unwrap();
    last.open(&meta, &root(), 7).await.unwrap();
    assert_eq!(read(), 1);
    last.open(&meta, &root(), 7).await.unwrap();
    assert_eq!(read(), 2);

    // Another directory, or another caller (whose permissions differ).
    last.open(&meta, &root(), 8).await.unwrap();
    assert_eq!(read(), 3);
    let other = Caller {
        uid: 1000,
        ..root()
    };
    last.open(&meta, &other, 8).await.unwrap();
    assert_eq!(read(), 4);

    // This client changed something in between.
    last.open(&meta, &root(), 9).await.unwrap();
    let unlink = MetaOp::Unlink {
        parent: 9,
        name: b"f".to_vec(),
    };
    meta.call(&root(), unlink).await.unwrap();
    last.open(&meta, &root(), 9).await.unwrap();
    assert_eq!(read(), 6);

    // Another client did (the watch said so).
    last.open(&meta, &root(), 10).await.unwrap();
    meta.names.invalidate(10);
    last.open(&meta, &root(), 10).await.unwrap();
    assert_eq!(read(), 8);

    // A lookup changes nothing: the listing is served again.
    last.open(&meta, &root(), 11).await.unwrap();
    let lookup = MetaOp::Lookup {
        parent: 11,
        name: b"f".to_vec(),
    };
    meta.call(&root(), lookup).await.unwrap();
    last.open(&meta, &root(), 11).await.unwrap();
    assert_eq!(read(), 9);
}
