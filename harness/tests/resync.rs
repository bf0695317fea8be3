//! Resync: a member that comes back gets the chain's chunks from the head
//! (what it missed, and no more), drops what was deleted while it was
//! away, and can then serve alone.

use std::time::Duration;

use cpfs_harness::{check_bytes, pattern, Cluster};
use cpfs_proto::capability::{ADMIN, ANY_INODE};
use cpfs_proto::layout::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use cpfs_proto::node::{NodeClient, NodeRequest, NodeResponse};

const CHUNK: u64 = MIN_CHUNK_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_member_gets_what_it_missed_and_drops_what_was_deleted() {
    let mut c = Cluster::start(2, 2).await;
    let f1 = c.create("f1").await.unwrap();
    let f2 = c.create("f2").await.unwrap();
    let mut v1 = pattern(1, 8 * CHUNK as usize);
    c.write(&f1, 0, &v1).await.unwrap();
    c.write(&f2, 0, &pattern(2, 4 * CHUNK as usize))
        .await
        .unwrap();

    // Node 1 dies and leaves every chain; node 0 goes on alone.
    c.fail_over(1).await.unwrap();
    let over = pattern(3, 2 * CHUNK as usize);
    c.write(&f1, 2 * CHUNK, &over).await.unwrap();
    v1[2 * CHUNK as usize..4 * CHUNK as usize].copy_from_slice(&over);
    let f3 = c.create("f3").await.unwrap();
    let v3 = pattern(4, 6 * CHUNK as usize);
    c.write(&f3, 0, &v3).await.unwrap();
    // f2 is deleted meanwhile: its chunks go from the live node, as the
    // orphan collector removes them.
    let drop = NodeRequest::DropInode {
        cap: c.key().issue(c.fs(), ANY_INODE, ADMIN, i64::MAX),
        fs: c.fs().to_string(),
        inode: f2.attr.ino,
    };
    let r = NodeClient::new(c.node(0).addr().to_string())
        .call(drop)
        .await
        .unwrap();
    assert!(matches!(r, NodeResponse::Done), "{r:?}");

    // Node 1 returns with its old copies and becomes a syncing member of
    // every chain.
    c.restart_node(1).await.unwrap();
    assert_eq!(c.node(1).chunk_files(c.fs(), f2.attr.ino), 4);
    assert_eq!(c.node(1).chunk_files(c.fs(), f3.attr.ino), 0);
    c.add_syncing_members().await.unwrap();
    assert!(c
        .table()
        .chains
        .iter()
        .all(|ch| ch.syncing.iter().any(|s| s.node.id == "node-1")));
    let reports = c.wait_resynced(Duration::from_secs(30)).await.unwrap();
    let total: u64 = reports.iter().map(|r| r.total_bytes).sum();
    let copied: u64 = reports.iter().map(|r| r.copied_bytes).sum();
    // It lacked f3 (6 chunks) and two chunks of f1: eight chunks' records
    // were sent, the six f1 chunks it had were not.
    assert_eq!(total, 14 * CHUNK, "{reports:?}");
    assert_eq!(copied, 8 * (CHUNK / 4096) * 4100, "{reports:?}");
    assert_eq!(c.node(1).chunk_files(c.fs(), f2.attr.ino), 0);

    // Promoted, then alone: node 1 serves every byte.
    c.promote_synced().await.unwrap();
    assert!(c.table().settled(2));
    c.fail_over(0).await.unwrap();
    check_bytes("read", &c.read(&f1, 0, 8 * CHUNK).await.unwrap(), &v1).unwrap();
    check_bytes("read", &c.read(&f3, 0, 6 * CHUNK).await.unwrap(), &v3).unwrap();
}

/// A chunk of the largest size the layout allows reaches the returning
/// member like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_size_chunk_is_resynced() {
    let mut c = Cluster::start(2, 2).await;
    c.fail_over(1).await.unwrap();
    let f = c.create_striped("big", MAX_CHUNK_SIZE, 1).await.unwrap();
    let data = pattern(5, MAX_CHUNK_SIZE as usize);
    c.write(&f, 0, &data).await.unwrap();

    c.restart_node(1).await.unwrap();
    c.add_syncing_members().await.unwrap();
    c.wait_resynced(Duration::from_secs(60)).await.unwrap();
    c.promote_synced().await.unwrap();
    c.fail_over(0).await.unwrap();
    check_bytes("read", &c.read(&f, 0, MAX_CHUNK_SIZE).await.unwrap(), &data).unwrap();
}
