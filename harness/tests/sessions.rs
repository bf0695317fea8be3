//! Session leases end to end: a client that goes quiet loses its session
//! when the lease runs out, the file it held open after deleting it is
//! collected from the data nodes, and the client mounts again on its next
//! call.

use std::time::{Duration, Instant};

use cpfs_harness::{wait_for, Cluster};
use cpfs_proto::meta::{MetaOp, MetaReply, ROOT_INO};

#[tokio::test]
async fn an_expired_session_lets_go_of_a_deleted_open_file() -> anyhow::Result<()> {
    let c = Cluster::builder().nodes(2).build().await?;
    let f = c.create("held").await?;
    let ino = f.attr.ino;
    c.write(&f, 0, &[7u8; 8192]).await?;
    let stored = || {
        c.nodes()
            .iter()
            .map(|n| n.chunk_files(c.fs(), ino))
            .sum::<usize>()
    };
    assert!(stored() > 0, "the write stored no chunk");
    let unlink = MetaOp::Unlink {
        parent: ROOT_INO,
        name: b"held".to_vec(),
    };
    assert!(matches!(c.meta_call(unlink).await?, MetaReply::Done));
    let svc = c
        .meta()
        .service()
        .expect("the metadata service runs")
        .clone();
    // Held open by the client's session: the collector leaves it alone.
    assert!(svc.is_open(c.fs(), ino));
    assert!(stored() > 0);

    // The lease runs out (the clock is moved, not waited for).
    let later = Instant::now() + cpfs_meta::SESSION_LEASE + Duration::from_secs(1);
    assert_eq!(svc.expire_sessions(later), 1);
    assert!(!svc.is_open(c.fs(), ino));
    let orphan_rows = || async {
        let n: Result<(i64,), _> = sqlx::query_as("SELECT COUNT(*) FROM orphans WHERE ino = $1")
            .bind(ino as i64)
            .fetch_one(&c.meta().store().pool)
            .await;
        n.map(|n| n.0).unwrap_or(-1)
    };
    // The orphan is in the store's tables once the journal's log is
    // folded.
    svc.folded().await;
    assert_eq!(orphan_rows().await, 1);
    wait_for(
        "the orphan to be collected",
        Duration::from_secs(20),
        || async { stored() == 0 && orphan_rows().await == 0 },
    )
    .await?;

    // The client's next call finds its session gone and mounts again.
    assert_eq!(svc.session_count(), 0);
    let r = c.meta_call(MetaOp::GetAttr { ino: ROOT_INO }).await?;
    assert!(matches!(r, MetaReply::Attr(_)), "{r:?}");
    assert_eq!(svc.session_count(), 1);
    Ok(())
}
