//! Routing by chain-table version: nodes refuse requests routed with
//! another version, the data client refreshes and retries, and reads only
//! go to serving members.

use cpfs_harness::{check_bytes, pattern, Cluster};
use cpfs_proto::chains::{Chain, Syncing};
use cpfs_proto::layout::MIN_CHUNK_SIZE;
use cpfs_proto::node::{ChainRef, NodeClient, NodeError, NodeRequest, NodeResponse};

const CHUNK: u64 = MIN_CHUNK_SIZE;

/// Store reads node `i` served for the cluster's file system.
async fn read_ops(c: &Cluster, i: usize) -> u64 {
    let stats = c.node(i).stats().await.unwrap();
    stats
        .file_systems
        .iter()
        .find(|u| u.fs == c.fs())
        .map_or(0, |u| u.read_ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_stale_table_is_refused_and_the_client_refreshes_and_succeeds() {
    let mut c = Cluster::builder().build().await.unwrap();
    let f = c.create("f").await.unwrap();
    let old = pattern(1, 4 * CHUNK as usize);
    c.write(&f, 0, &old).await.unwrap();
    assert_eq!(c.data().chain_version().await, 1);

    let t = c.next_version();
    c.install_table(t).await.unwrap();

    // A write routed with version 1 straight to the head of chunk 3's
    // chain is refused, naming the node's version, and changes nothing.
    let key = c.chunk_key(&f, 3);
    let head = c.table().chain(key.chain).unwrap().head().unwrap().clone();
    let stale = NodeClient::new(head.address.clone())
        .call(NodeRequest::Write {
            cap: f.cap.clone(),
            chain: ChainRef {
                id: key.chain,
                version: 1,
            },
            key,
            offset: 0,
            data: vec![0xee; 4096],
            forwarded: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            stale,
            NodeResponse::Failed(NodeError::StaleChainTable { current: 2 })
        ),
        "{stale:?}"
    );

    // The data client still routes with version 1: its write is refused
    // the same way, and it refreshes from the metadata service and succeeds.
    assert_eq!(c.data().chain_version().await, 1);
    let new = pattern(2, 3 * CHUNK as usize);
    c.write(&f, 0, &new).await.unwrap();
    assert_eq!(
        c.data().chain_version().await,
        2,
        "the client did not refresh"
    );

    let mut expected = new.clone();
    expected.extend_from_slice(&old[3 * CHUNK as usize..]);
    check_bytes("read", &c.read(&f, 0, 4 * CHUNK).await.unwrap(), &expected).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_serving_members_and_never_to_a_syncing_one() {
    let mut c = Cluster::start(2, 2).await;
    let f = c.create("f").await.unwrap();
    let chunks = c.table().chains.len() as u64 * 2;
    let data = pattern(3, (chunks * CHUNK) as usize);
    c.write(&f, 0, &data).await.unwrap();

    // With both nodes serving every chain, see which one the client reads
    // from: that node becomes a syncing member below, so the check that it
    // then serves nothing means something. (With 2 nodes and R = 2 the
    // client reads a file from one node only: the member it starts at,
    // chunk mod R, and the chain's rotation of heads cancel out.)
    let before = [read_ops(&c, 0).await, read_ops(&c, 1).await];
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &data).unwrap();
    let after = [read_ops(&c, 0).await, read_ops(&c, 1).await];
    let (syncing, serving) = if after[0] - before[0] >= after[1] - before[1] {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(after[syncing] > before[syncing]);

    // That node becomes a syncing member of every chain: it still holds
    // every chunk, but must serve no reads until it is promoted.
    let mut t = c.next_version();
    let (a, b) = (c.node(serving).node_addr(), c.node(syncing).node_addr());
    t.chains = t
        .chains
        .iter()
        .map(|ch| Chain {
            id: ch.id,
            members: vec![a.clone()],
            syncing: vec![Syncing {
                node: b.clone(),
                since: t.version,
                replaces: None,
            }],
        })
        .collect();
    c.install_table(t).await.unwrap();

    let refused = NodeClient::new(b.address.clone())
        .call(c.block_read(&f, 0))
        .await
        .unwrap();
    assert!(
        matches!(refused, NodeResponse::Failed(NodeError::NotMember)),
        "{refused:?}"
    );

    let syncing_before = read_ops(&c, syncing).await;
    let serving_before = read_ops(&c, serving).await;
    check_bytes("read", &c.read(&f, 0, chunks * CHUNK).await.unwrap(), &data).unwrap();
    assert_eq!(
        read_ops(&c, syncing).await,
        syncing_before,
        "the syncing member served reads"
    );
    assert!(read_ops(&c, serving).await >= serving_before + chunks);
}
