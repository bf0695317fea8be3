//! Orphan collection in batches: the files of a deleted tree leave the
//! data nodes with a request per node per batch, not one per file, and a
//! node refuses a batch larger than the protocol allows.

use std::time::Duration;

use cpfs_harness::{wait_for, Cluster};
use cpfs_proto::capability::{ADMIN, ANY_INODE};
use cpfs_proto::meta::{MetaOp, MetaReply, ROOT_INO};
use cpfs_proto::node::{NodeClient, NodeError, NodeRequest, NodeResponse, MAX_DROPPED_INODES};

/// How many DropInode/DropInodes requests each node has served.
async fn drops(c: &Cluster) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for n in c.nodes() {
        let s = n.stats().await?;
        let count = s
            .ops
            .iter()
            .find(|o| o.op == "drop_inode")
            .map_or(0, |o| o.latency.count);
        out.push(count);
    }
    Ok(out)
}

#[tokio::test]
async fn a_deleted_tree_leaves_the_nodes_in_batches() -> anyhow::Result<()> {
    const FILES: usize = MAX_DROPPED_INODES + 100;
    let c = Cluster::builder().nodes(2).build().await?;
    let mut inos = Vec::new();
    for i in 0..FILES {
        let f = c.create(&format!("f{i}")).await?;
        c.write(&f, 0, &[i as u8; 4096]).await?;
        inos.push(f.attr.ino);
    }
    let stored = || {
        inos.iter()
            .map(|&ino| {
                c.nodes()
                    .iter()
                    .map(|n| n.chunk_files(c.fs(), ino))
                    .sum::<usize>()
            })
            .sum::<usize>()
    };
    assert_eq!(
        stored(),
        2 * FILES,
        "one chunk per file on each of two nodes"
    );
    let before = drops(&c).await?;

    for (i, &ino) in inos.iter().enumerate() {
        let unlink = MetaOp::Unlink {
            parent: ROOT_INO,
            name: format!("f{i}").into_bytes(),
        };
        assert!(matches!(c.meta_call(unlink).await?, MetaReply::Done));
        let release = MetaOp::Release {
            ino,
            writable: true,
        };
        assert!(matches!(c.meta_call(release).await?, MetaReply::Done));
    }
    let orphan_rows = || async {
        let n: Result<(i64,), _> = sqlx::query_as("SELECT COUNT(*) FROM orphans")
            .fetch_one(&c.meta().store().pool)
            .await;
        n.map(|n| n.0).unwrap_or(-1)
    };
    wait_for(
        "every deleted file to leave the nodes and the store",
        Duration::from_secs(60),
        || async { stored() == 0 && orphan_rows().await == 0 },
    )
    .await?;

    // One request per node per batch: a handful for the lot (passes may
    // cut the deletions into a few batches), where a request per file
    // would be FILES.
    let after = drops(&c).await?;
    for (b, a) in before.iter().zip(&after) {
        let requests = a - b;
        assert!(
            (1..=20).contains(&requests),
            "{requests} drop requests on a node for {FILES} files"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_node_refuses_a_batch_over_the_limit() -> anyhow::Result<()> {
    let c = Cluster::builder().nodes(1).replicas(1).build().await?;
    let node = NodeClient::new(c.node(0).addr().to_string());
    let batch = |n: usize| NodeRequest::DropInodes {
        cap: c.key().issue(c.fs(), ANY_INODE, ADMIN, i64::MAX),
        fs: c.fs().to_string(),
        inodes: (1..=n as u64).collect(),
    };
    let r = node.call(batch(MAX_DROPPED_INODES + 1)).await?;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::Invalid(ref m)) if m.contains("at most")),
        "{r:?}"
    );
    let r = node.call(batch(MAX_DROPPED_INODES)).await?;
    assert!(matches!(r, NodeResponse::Done), "{r:?}");
    // A capability for one inode opens only that one.
    let narrow = NodeRequest::DropInodes {
        cap: c.key().issue(c.fs(), 7, ADMIN, i64::MAX),
        fs: c.fs().to_string(),
        inodes: vec![7, 8],
    };
    let r = node.call(narrow).await?;
    assert!(
        matches!(r, NodeResponse::Failed(NodeError::BadCapability)),
        "{r:?}"
    );
    Ok(())
}
