//! Leases: a node that has not heard from the control plane within its
//! lease may already have been replaced, so it serves nothing until the
//! lease is renewed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cpfs_harness::{check_bytes, pattern, wait_for, Cluster};
use cpfs_proto::layout::MIN_CHUNK_SIZE;
use cpfs_proto::node::{NodeClient, NodeError, NodeResponse};

const CHUNK: u64 = MIN_CHUNK_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_expired_refuses_until_it_is_renewed() {
    let c = Cluster::start(2, 2).await;
    let f = c.create("f").await.unwrap();
    let data = pattern(1, 2 * CHUNK as usize);
    c.write(&f, 0, &data).await.unwrap();

    let key = c.chunk_key(&f, 0);
    let head_id = c
        .table()
        .chain(key.chain)
        .unwrap()
        .head()
        .unwrap()
        .id
        .clone();
    let head = c.index_of(&head_id).unwrap();
    let node = NodeClient::new(c.node(head).addr().to_string());

    // A short lease: served while it runs...
    c.grant_lease(head, Duration::from_millis(500)).unwrap();
    match node.call(c.block_read(&f, 0)).await.unwrap() {
        NodeResponse::Data(d) => check_bytes("leased read", &d, &data[..4096]).unwrap(),
        other => panic!("a leased node refused: {other:?}"),
    }
    // ...and refused once it lapses, reads and writes alike.
    wait_for("the lease to lapse", Duration::from_secs(10), || async {
        matches!(
            node.call(c.block_read(&f, 0)).await,
            Ok(NodeResponse::Failed(NodeError::NoLease))
        )
    })
    .await
    .unwrap();
    let w = node.call(c.block_write(&f, 0, 0xaa)).await.unwrap();
    assert!(
        matches!(w, NodeResponse::Failed(NodeError::NoLease)),
        "{w:?}"
    );

    // The data client treats NoLease as "try again": its write stalls
    // while the lease is out and goes through once it is renewed.
    let failures = c.node(head).node().unwrap().service_stats.clone();
    let refused_before = failures.failures.load(Ordering::Relaxed);
    let new = pattern(2, CHUNK as usize);
    let write = {
        let data = c.data().clone();
        let (cap, layout, ino, new) = (f.cap.clone(), f.layout.clone(), f.attr.ino, new.clone());
        tokio::spawn(async move { data.write(&cap, &layout, ino, 0, &new).await })
    };
    wait_for(
        "the client's write to be refused for want of a lease",
        Duration::from_secs(10),
        || async { failures.failures.load(Ordering::Relaxed) > refused_before },
    )
    .await
    .unwrap();
    assert!(!write.is_finished(), "a write went through without a lease");

    c.grant_lease(head, Duration::from_secs(3600)).unwrap();
    write.await.unwrap().unwrap();
    match node.call(c.block_read(&f, 0)).await.unwrap() {
        NodeResponse::Data(d) => check_bytes("renewed read", &d, &new[..4096]).unwrap(),
        other => panic!("a renewed node refused: {other:?}"),
    }
    let mut expected = new;
    expected.extend_from_slice(&data[CHUNK as usize..]);
    check_bytes("read", &c.read(&f, 0, 2 * CHUNK).await.unwrap(), &expected).unwrap();
}
