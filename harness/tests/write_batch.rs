//! `NodeRequest::WriteBatch` against real nodes: the writes of a batch land
//! in order on every copy, whatever files they belong to; a batch with one
//! bad write is refused whole, before any of it is applied; malformed
//! batches and forged forwards are refused.

use std::time::Duration;

use cpfs_harness::{pattern, Cluster};
use cpfs_proto::capability::{NodeAuth, WRITE};
use cpfs_proto::layout::BLOCK;
use cpfs_proto::meta::OpenFile;
use cpfs_proto::node::{
    ChainRef, ChunkWrite, NodeClient, NodeError, NodeRequest, NodeResponse, MAX_BATCHED_WRITES,
};

const ANSWER: Duration = Duration::from_secs(10);

fn write(c: &Cluster, f: &OpenFile, index: u64, offset: u64, data: Vec<u8>) -> ChunkWrite {
    ChunkWrite {
        cap: c.cap(f.attr.ino, WRITE),
        key: c.chunk_key(f, index),
        offset,
        data: data.into(),
    }
}

/// The first chunk index of `f` on `chain`.
fn index_on(f: &OpenFile, chain: u32) -> u64 {
    (0..64)
        .find(|i| f.layout.chain_of(*i) == chain)
        .expect("some chunk of the file is on every chain")
}

fn members(c: &Cluster, chain: u32) -> Vec<NodeClient> {
    c.table()
        .chain(chain)
        .unwrap()
        .members
        .iter()
        .map(|m| NodeClient::new(m.address.clone()))
        .collect()
}

fn batch(c: &Cluster, chain: u32, writes: Vec<ChunkWrite>) -> NodeRequest {
    NodeRequest::WriteBatch {
        chain: ChainRef {
            id: chain,
            version: c.table().version,
        },
        writes,
        forwarded: None,
    }
}

async fn answer(node: &NodeClient, req: NodeRequest) -> NodeResponse {
    tokio::time::timeout(ANSWER, node.call(req))
        .await
        .expect("the node did not answer in time")
        .expect("the node hung up")
}

/// `len` bytes at `offset` of chunk `index` of `f`, as `node` holds them.
async fn copy_of(
    c: &Cluster,
    node: &NodeClient,
    f: &OpenFile,
    index: u64,
    offset: u64,
    len: u64,
) -> Vec<u8> {
    let key = c.chunk_key(f, index);
    let req = NodeRequest::Read {
        cap: c.cap(f.attr.ino, cpfs_proto::capability::READ),
        chain: ChainRef {
            id: key.chain,
            version: c.table().version,
        },
        key,
        offset,
        len,
    };
    match answer(node, req).await {
        NodeResponse::Data(d) => d.to_vec(),
        other => panic!("read: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_in_order_on_every_copy() {
    let c = Cluster::start(3, 2).await;
    let f = c.create("f").await.unwrap();
    let g = c.create("g").await.unwrap();
    let chain = f.layout.chain_of(0);
    let gi = index_on(&g, chain);
    let b = BLOCK as usize;
    let (first, later, far, other) = (
        pattern(1, 2 * b),
        pattern(2, b),
        pattern(3, b),
        pattern(4, 3 * b),
    );
    let writes = vec![
        write(&c, &f, 0, 0, first.clone()),
        write(&c, &g, gi, BLOCK, other.clone()),
        // Over the second half of the first write: applied after it.
        write(&c, &f, 0, BLOCK, later.clone()),
        write(&c, &f, 0, 16 * BLOCK, far.clone()),
    ];
    c.data().write_batch(chain, &writes).await.unwrap();

    let nodes = members(&c, chain);
    assert_eq!(nodes.len(), 2);
    for node in &nodes {
        let got = copy_of(&c, node, &f, 0, 0, 2 * BLOCK).await;
        assert_eq!(&got[..b], &first[..b], "the first write's first block");
        assert_eq!(&got[b..], &later[..], "the later write wins");
        assert_eq!(copy_of(&c, node, &f, 0, 16 * BLOCK, BLOCK).await, far);
        assert_eq!(copy_of(&c, node, &g, gi, BLOCK, 3 * BLOCK).await, other);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_write_is_refused_whole() {
    let c = Cluster::start(3, 2).await;
    let f = c.create("f").await.unwrap();
    let g = c.create("g").await.unwrap();
    let chain = f.layout.chain_of(0);
    let gi = index_on(&g, chain);
    let head = members(&c, chain).remove(0);
    let b = BLOCK as usize;

    // g's chunk under f's capability: a capability names its inode.
    let mut stolen = write(&c, &g, gi, 0, vec![7; b]);
    stolen.cap = c.cap(f.attr.ino, WRITE);
    let r = answer(
        &head,
        batch(&c, chain, vec![write(&c, &f, 0, 0, vec![9; b]), stolen]),
    )
    .await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    for node in &members(&c, chain) {
        assert_eq!(
            copy_of(&c, node, &f, 0, 0, BLOCK).await,
            vec![0; b],
            "nothing of a refused batch is applied"
        );
    }

    // A chunk of another chain, no write, too many, two file systems.
    let elsewhere = (0..64)
        .find(|i| f.layout.chain_of(*i) != chain)
        .expect("the file spans chains");
    let cases = [
        vec![write(&c, &f, elsewhere, 0, vec![1; b])],
        vec![],
        (0..=MAX_BATCHED_WRITES)
            .map(|i| write(&c, &f, 0, i as u64 * BLOCK, vec![1; 1]))
            .collect(),
        {
            let mut w = write(&c, &f, 0, 0, vec![1; b]);
            w.key.fs = "another-fs".into();
            vec![write(&c, &f, 0, BLOCK, vec![1; b]), w]
        },
    ];
    for writes in cases {
        let r = answer(&head, batch(&c, chain, writes)).await;
        assert!(
            matches!(r, NodeResponse::Failed(NodeError::Invalid(_))),
            "{r:?}"
        );
    }

    // A replica takes a batch only on a node's proof.
    let replica = members(&c, chain).remove(1);
    let mut forged = batch(&c, chain, vec![write(&c, &f, 0, 0, vec![5; b])]);
    if let NodeRequest::WriteBatch { forwarded, .. } = &mut forged {
        *forwarded = Some(NodeAuth {
            expires: i64::MAX,
            mac: [0; 16],
        });
    }
    let r = answer(&replica, forged).await;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    assert_eq!(copy_of(&c, &replica, &f, 0, 0, BLOCK).await, vec![0; b]);
}
