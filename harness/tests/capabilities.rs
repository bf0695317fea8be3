//! Capabilities are short-lived, renewed while a file is open, and
//! revocable (issue 14, finding 8): with a lifetime shortened to two
//! seconds, a handle keeps working across many lifetimes; a revocation a
//! node learns stops outstanding capabilities at once; a mount target
//! that is gone gets no renewal.

use std::time::Duration;

use cpfs_client::caps::HeldCap;
use cpfs_harness::{check_bytes, pattern, Cluster, ROOT};
use cpfs_proto::capability::{now_ms, Capability};
use cpfs_proto::heartbeat::{HeartbeatReply, Revocation};
use cpfs_proto::meta::{errno, OpenFile};
use cpfs_proto::node::{NodeClient, NodeError, NodeResponse};

/// Lifetime of the capabilities in these tests.
const LIFETIME: Duration = Duration::from_secs(2);
/// Long enough for anything here on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    let c = Cluster::start(2, 2).await;
    c.meta()
        .service()
        .unwrap()
        .set_capability_lifetime(LIFETIME);
    c
}

/// What the node holding chunk 0 of `f` answers a read with `cap`.
async fn read_with(c: &Cluster, f: &OpenFile, cap: &Capability) -> NodeResponse {
    let mut req = c.block_read(f, 0);
    if let cpfs_proto::node::NodeRequest::Read { cap: c, .. } = &mut req {
        *c = cap.clone();
    }
    let head = c.table().chain(f.layout.chain_of(0)).unwrap().members[0]
        .address
        .clone();
    tokio::time::timeout(PATIENCE, NodeClient::new(head).call(req))
        .await
        .expect("no answer")
        .expect("hung up")
}

fn refused(r: &NodeResponse) -> bool {
    matches!(r, NodeResponse::Failed(NodeError::BadCapability))
}

/// Waits until the nodes refuse `cap` (it expired).
async fn until_refused(c: &Cluster, f: &OpenFile, cap: &Capability) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !refused(&read_with(c, f, cap).await) {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells every node, as the control plane's heartbeat replies do, that the
/// file system's capabilities decided before `before_ms` are revoked.
async fn revoke_until(c: &Cluster, before_ms: i64) {
    let revoked = HeartbeatReply {
        chain_table: c.table().clone(),
        dropped: vec![],
        lease_ms: 0,
        revoked: vec![Revocation {
            fs: c.fs().to_string(),
            before_ms,
        }],
        full: None,
        peers: vec![],
        qos: None,
    };
    for n in c.nodes() {
        n.node().unwrap().apply(revoked.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_open_handle_keeps_working_past_many_lifetimes() {
    let c = cluster().await;
    let f = c.create("long-open").await.unwrap();
    assert!(
        f.cap.expires * 1000 - f.cap.issued_ms <= LIFETIME.as_millis() as i64 + 1000,
        "the capability lasts the configured lifetime: {:?}",
        f.cap
    );
    let held = HeldCap::new(f.cap.clone(), c.meta_client().clone(), ROOT);
    let data = c.data().clone();
    // Five lifetimes, each one past the expiry of the capability the
    // handle held at its start.
    for round in 0..5u64 {
        let before = held.get();
        until_refused(&c, &f, &before).await;
        let bytes = pattern(round, 4096);
        held.with(|cap| {
            let (data, f, bytes) = (&data, &f, &bytes);
            async move { data.write(&cap, &f.layout, f.attr.ino, 0, bytes).await }
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let back = held
            .with(|cap| {
                let (data, f) = (&data, &f);
                async move { data.read(&cap, &f.layout, f.attr.ino, 0, 4096).await }
            })
            .await
            .unwrap();
        check_bytes("read back", &back, &bytes).unwrap();
        assert_ne!(held.get().mac, before.mac, "renewed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_stops_outstanding_capabilities_and_a_gone_mount_gets_none() {
    let c = cluster().await;
    // Hour-long capabilities, so that only the revocation can stop them.
    c.meta()
        .service()
        .unwrap()
        .set_capability_lifetime(Duration::from_secs(3600));
    let f = c.create("revoked").await.unwrap();
    c.write(&f, 0, &pattern(1, 4096)).await.unwrap();
    assert!(matches!(
        read_with(&c, &f, &f.cap).await,
        NodeResponse::Data(_)
    ));

    // The mount target is deleted; the control plane's heartbeat replies
    // tell every node that the file system's capabilities issued until now
    // are revoked.
    c.meta().set_mount_target(false);
    let before_ms = now_ms() + 1;
    revoke_until(&c, before_ms).await;
    // As the control plane does, nothing goes on before the revoked
    // millisecond is over (a renewal within it is revoked too).
    while now_ms() < before_ms {
        tokio::task::yield_now().await;
    }
    assert!(refused(&read_with(&c, &f, &f.cap).await));
    let held = HeldCap::new(f.cap.clone(), c.meta_client().clone(), ROOT);
    match held.renew(&f.cap).await {
        Err(e) => assert!(e == errno::ENOENT || e == errno::EACCES, "errno {e}"),
        Ok(cap) => panic!("renewed for a mount target that is gone: {cap:?}"),
    }
    let data = c.data().clone();
    let write = held
        .with(|cap| {
            let (data, f) = (&data, &f);
            async move { data.write(&cap, &f.layout, f.attr.ino, 0, &[1; 4096]).await }
        })
        .await;
    assert!(write.is_err(), "a write went through a revoked capability");

    // The mount target back (the same grant): a renewal is issued after
    // the revocation and works.
    c.meta().set_mount_target(true);
    let renewed = held.renew(&f.cap).await.unwrap();
    let r = read_with(&c, &f, &renewed).await;
    assert!(
        matches!(r, NodeResponse::Data(_)),
        "the renewal ({renewed:?}) was refused: {r:?}; revoked before {before_ms}"
    );
}

/// In a failover, a metadata server cut off from the control plane renews
/// under the grant it decided last, until its lease runs out, while the
/// nodes may already refuse capabilities of grants that old. The handle
/// renews again, with backoff, while the service keeps renewing: the I/O
/// stalls until a renewal the nodes take, instead of failing with EACCES.
/// Here the nodes refuse every grant decided in the next 1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refusing_what_the_service_renews_is_a_stall_not_an_error() {
    let c = cluster().await;
    c.meta()
        .service()
        .unwrap()
        .set_capability_lifetime(Duration::from_secs(3600));
    let f = c.create("disagreement").await.unwrap();
    let before_ms = now_ms() + 1500;
    revoke_until(&c, before_ms).await;
    let held = HeldCap::new(f.cap.clone(), c.meta_client().clone(), ROOT);
    // A renewal now is refused by the nodes as well: one retry is not
    // enough.
    let early = held.renew(&f.cap).await.unwrap();
    assert!(refused(&read_with(&c, &f, &early).await));

    let data = c.data().clone();
    let bytes = pattern(9, 4096);
    held.with(|cap| {
        let (data, f, bytes) = (&data, &f, &bytes);
        async move { data.write(&cap, &f.layout, f.attr.ino, 0, bytes).await }
    })
    .await
    .expect("the write waits for a capability the nodes take");
    assert!(
        now_ms() >= before_ms,
        "the write went through before the nodes took any renewal"
    );
    assert!(held.get().issued_ms >= before_ms, "{:?}", held.get());
    let back = held
        .with(|cap| {
            let (data, f) = (&data, &f);
            async move { data.read(&cap, &f.layout, f.attr.ino, 0, 4096).await }
        })
        .await
        .unwrap();
    check_bytes("read back", &back, &bytes).unwrap();
}
