//! Failover: a chain member dies or is cut off, and the data stays
//! readable and writable through the data client.

use std::time::Duration;

use cpfs_harness::{check_bytes, pattern, wait_for, Cluster};
use cpfs_proto::layout::MIN_CHUNK_SIZE;
use cpfs_proto::node::NodeClient;

const CHUNK: u64 = MIN_CHUNK_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_dead_member_loses_nothing_after_failover() {
    let mut c = Cluster::start(3, 2).await;
    let f = c.create("f").await.unwrap();
    // Two chunks per chain: every chain, and so every node as head and as
    // second member, holds some of the file.
    let chunks = c.table().chains.len() as u64 * 2;
    let data = pattern(1, (chunks * CHUNK) as usize);
    c.write(&f, 0, &data).await.unwrap();

    let dead = c.node(1).id().to_string();
    assert!(c
        .table()
        .chains
        .iter()
        .any(|ch| ch.head().unwrap().id == dead));
    c.fail_over(1).await.unwrap();
    assert!(c
        .table()
        .chains
        .iter()
        .all(|ch| !ch.holds(&dead) && !ch.members.is_empty()));

    // The client still holds the old table: it meets the dead node and
    // stale refusals, refreshes and reads every byte from the survivors.
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &data).unwrap();
    assert_eq!(c.data().chain_version().await, c.table().version);

    // New writes (an overwrite across every chain and an append) go to
    // the new heads and read back identical.
    let mut expected = data.clone();
    let over = pattern(2, (chunks * CHUNK / 2) as usize);
    let at = CHUNK / 2;
    expected[at as usize..at as usize + over.len()].copy_from_slice(&over);
    c.write(&f, at, &over).await.unwrap();
    let tail = pattern(3, 3 * CHUNK as usize);
    c.write(&f, chunks * CHUNK, &tail).await.unwrap();
    expected.extend_from_slice(&tail);
    let got = c.read(&f, 0, expected.len() as u64).await.unwrap();
    check_bytes("after failover", &got, &expected).unwrap();

    // The new heads forwarded to the remaining second members: with node
    // 2 gone as well, node 0 alone serves every chain it is still in
    // (those where it was only the second member included).
    let survivor = c.node(0).id().to_string();
    c.fail_over(2).await.unwrap();
    for (index, piece) in expected.chunks(CHUNK as usize).enumerate() {
        let chain = f.layout.chain_of(index as u64);
        let members = &c.table().chain(chain).unwrap().members;
        if members.iter().any(|m| m.id == survivor) {
            let got = c
                .read(&f, index as u64 * CHUNK, piece.len() as u64)
                .await
                .unwrap();
            check_bytes(&format!("chunk {index} on the last node"), &got, piece).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_member_does_not_stop_reads_and_a_write_waits_for_it_to_heal() {
    let c = Cluster::builder()
        .nodes(2)
        .replicas(2)
        .proxy_nodes()
        .build()
        .await
        .unwrap();
    let f = c.create("f").await.unwrap();
    let chunks = c.table().chains.len() as u64;
    let data = pattern(4, (chunks * CHUNK) as usize);
    c.write(&f, 0, &data).await.unwrap();

    // Cut node 1 off. Reads that would start at it move to the other
    // copy, with no table change.
    c.partition(1).unwrap();
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &data).unwrap();

    // A write must reach every member, so it waits for the partition to
    // heal (or for the control plane to drop the member) instead of
    // succeeding with one copy.
    let proxy = c.node(1).proxy().unwrap();
    let refused = proxy.accepted();
    let new = pattern(5, (chunks * CHUNK) as usize);
    let write = {
        let data = c.data().clone();
        let (cap, layout, ino, new) = (f.cap.clone(), f.layout.clone(), f.attr.ino, new.clone());
        tokio::spawn(async move { data.write(&cap, &layout, ino, 0, &new).await })
    };
    wait_for(
        "the write to try the partitioned node",
        Duration::from_secs(10),
        || async { proxy.accepted() > refused + 2 },
    )
    .await
    .unwrap();
    assert!(!write.is_finished(), "a write completed without a member");

    c.heal(1).unwrap();
    write.await.unwrap().unwrap();
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &new).unwrap();

    // Node 1's own copy has the write: with node 0 cut off, reads come
    // from it alone.
    c.partition(0).unwrap();
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &new).unwrap();
    c.heal(0).unwrap();
}

/// A call to a node that accepts connections and drops them at once (a
/// node dying, or a partition answered with resets) must fail at once, so
/// the client moves on to another member: never wait for the 30 s call
/// timeout. Each call races the connection's failure, so many are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_to_a_node_that_hangs_up_fails_at_once() {
    let c = Cluster::builder()
        .nodes(1)
        .replicas(1)
        .proxy_nodes()
        .build()
        .await
        .unwrap();
    c.partition(0).unwrap();
    let node = NodeClient::new(c.node(0).addr().to_string());
    for i in 0..1000 {
        let call = tokio::time::timeout(
            Duration::from_secs(5),
            node.call(cpfs_harness::stats_request(c.key())),
        );
        match call.await {
            Ok(Err(_)) => {}
            Ok(Ok(r)) => panic!("call {i} through a cut proxy was answered: {r:?}"),
            Err(_) => panic!("call {i} to a node that hung up waited for the call timeout"),
        }
    }
}
