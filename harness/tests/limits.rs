//! Protocol limits at the service shell: oversized frames are refused
//! from their length prefix alone, frames of another wire version are
//! refused, and neither disturbs other connections.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cpfs_harness::raw::{self, Outcome, RawConn};
use cpfs_harness::{check_bytes, pattern, stats_request, Cluster, ROOT};
use cpfs_meta::server::MAX_META_REQUEST;
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::frame::{MAX_FRAME, WIRE_VERSION};
use cpfs_proto::meta::{MetaOp, MetaReply, MetaRequest, ROOT_INO};
use cpfs_proto::node::NodeResponse;

/// Long enough for a refusal to arrive, short enough that a server
/// waiting for more bytes shows up as [`Outcome::Silent`] quickly.
const ANSWER: Duration = Duration::from_secs(2);

async fn stats_reply(conn: &mut RawConn, key: &CapabilityKey, id: u64) {
    conn.send_frame(WIRE_VERSION, id, &stats_request(key))
        .await
        .unwrap();
    let (got, reply): (u64, NodeResponse) = conn.reply(ANSWER).await.unwrap();
    assert_eq!(got, id);
    assert!(matches!(reply, NodeResponse::Stats(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_node_limit_is_refused_from_its_length_alone() {
    let c = Cluster::start(1, 1).await;
    let f = c.create("f").await.unwrap();
    let data = pattern(1, 256 * 1024);
    c.write(&f, 0, &data).await.unwrap();
    let node = c.node(0);
    let stats = node.node().unwrap().service_stats.clone();
    let mut bystander = RawConn::connect(node.listen_addr()).await.unwrap();
    stats_reply(&mut bystander, c.key(), 1).await;

    // A length within the limit and no body: the node waits for the body.
    // (So the refusals below are decided by the length, not the silence.)
    let mut within = RawConn::connect(node.listen_addr()).await.unwrap();
    within.send_length_prefix(1000).await.unwrap();
    assert_eq!(
        within.outcome(Duration::from_millis(300)).await,
        Outcome::Silent
    );

    // Announced lengths over the limit, with no body: the node hangs up at
    // once, so it never allocated or read what was announced.
    let refused = stats.refused_frames.load(Ordering::Relaxed);
    for len in [MAX_FRAME as u32 + 1, u32::MAX] {
        let mut conn = RawConn::connect(node.listen_addr()).await.unwrap();
        conn.send_length_prefix(len).await.unwrap();
        assert_eq!(conn.outcome(ANSWER).await, Outcome::Closed, "length {len}");
    }
    assert_eq!(stats.refused_frames.load(Ordering::Relaxed), refused + 2);

    // Everyone else is served as before.
    stats_reply(&mut bystander, c.key(), 2).await;
    check_bytes(
        "read",
        &c.read(&f, 0, data.len() as u64).await.unwrap(),
        &data,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_another_wire_version_is_refused() {
    let c = Cluster::start(1, 1).await;
    let node = c.node(0);
    let stats = node.node().unwrap().service_stats.clone();

    // The very frame, with this build's version, is answered...
    let mut ok = RawConn::connect(node.listen_addr()).await.unwrap();
    stats_reply(&mut ok, c.key(), 7).await;

    // ...and with any other version the connection is closed unanswered.
    let refused = stats.refused_frames.load(Ordering::Relaxed);
    for version in [WIRE_VERSION.wrapping_add(1), WIRE_VERSION.wrapping_sub(1)] {
        let mut conn = RawConn::connect(node.listen_addr()).await.unwrap();
        let frame = raw::frame(version, 7, &stats_request(c.key())).unwrap();
        assert_eq!(
            conn.send_then_outcome(&frame, ANSWER).await,
            Outcome::Closed,
            "version {version}"
        );
    }
    assert_eq!(stats.refused_frames.load(Ordering::Relaxed), refused + 2);
    stats_reply(&mut ok, c.key(), 8).await;
}

/// A metadata request whose frame is `size` bytes or a little more.
fn meta_request_of(size: usize) -> MetaRequest {
    MetaRequest {
        session: 0,
        caller: ROOT,
        op: MetaOp::SetXattr {
            ino: ROOT_INO,
            name: b"user.big".to_vec(),
            value: vec![7; size],
            flags: 0,
        },
        id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_service_refuses_a_request_over_its_limit() {
    let c = Cluster::start(1, 1).await;
    let addr = c.meta().listen_addr();
    let stats = c.meta().service().unwrap().service_stats.clone();

    // Half the limit is read and answered (here: the session is unknown).
    let mut conn = RawConn::connect(addr).await.unwrap();
    let half = raw::current_frame(1, &meta_request_of(MAX_META_REQUEST / 2)).unwrap();
    conn.send(&half).await.unwrap();
    let (_, reply): (u64, MetaReply) = conn.reply(ANSWER).await.unwrap();
    assert!(matches!(reply, MetaReply::Err { .. }), "{reply:?}");

    // Over the limit (though far under the node's): closed unanswered.
    let refused = stats.refused_frames.load(Ordering::Relaxed);
    let big = raw::current_frame(2, &meta_request_of(MAX_META_REQUEST)).unwrap();
    assert!(big.len() - 4 > MAX_META_REQUEST && big.len() < MAX_FRAME);
    let mut conn = RawConn::connect(addr).await.unwrap();
    assert_eq!(conn.send_then_outcome(&big, ANSWER).await, Outcome::Closed);
    assert_eq!(stats.refused_frames.load(Ordering::Relaxed), refused + 1);

    // The mount's session is not disturbed.
    c.create("after").await.unwrap();
}
