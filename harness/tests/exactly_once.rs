//! Exactly-once metadata over the wire: a create whose reply is lost is
//! retried by the metadata client under the same request id, and the
//! service answers the retry as the first attempt succeeded.

use std::time::Duration;

use cpfs_client::meta::MetaClient;
use cpfs_harness::{wait_for, Cluster, DOMAIN, ROOT};
use cpfs_proto::meta::{errno, MetaOp, MetaReply, ROOT_INO};

fn create(name: &str) -> MetaOp {
    MetaOp::Create {
        parent: ROOT_INO,
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        umask: 0o022,
        read: true,
    }
}

/// Names in the root directory, through a client of its own that bypasses
/// the proxy.
async fn names(c: &Cluster) -> Vec<String> {
    let direct = MetaClient::new(&c.meta().listen_addr().to_string(), DOMAIN);
    direct.mount().await.unwrap();
    let op = MetaOp::ReadDir {
        ino: ROOT_INO,
        after: None,
        limit: 100,
    };
    match direct.call(&ROOT, op).await.unwrap() {
        MetaReply::Dir { entries, .. } => entries
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect(),
        other => panic!("readdir: {other:?}"),
    }
}

/// The inode `name` has, looked up past the proxy.
async fn lookup(c: &Cluster, name: &str) -> u64 {
    let direct = MetaClient::new(&c.meta().listen_addr().to_string(), DOMAIN);
    direct.mount().await.unwrap();
    let op = MetaOp::Lookup {
        parent: ROOT_INO,
        name: name.as_bytes().to_vec(),
    };
    match direct.call(&ROOT, op).await.unwrap() {
        MetaReply::Entry(a) => a.ino,
        other => panic!("lookup {name}: {other:?}"),
    }
}

/// Starts a create through the mount's client with the next reply lost,
/// waits until the service has answered it (so it was applied), and
/// returns the pending call and the inode the service made.
async fn create_with_lost_reply(
    c: &Cluster,
    name: &str,
) -> (tokio::task::JoinHandle<Result<MetaReply, i32>>, u64) {
    let proxy = c.meta().proxy().unwrap();
    proxy.lose_next_reply();
    let call = {
        let meta = c.meta_client().clone();
        let op = create(name);
        tokio::spawn(async move { meta.call(&ROOT, op).await })
    };
    wait_for(
        "the service to answer the create",
        Duration::from_secs(10),
        || async { proxy.lost_replies() == 1 },
    )
    .await
    .unwrap();
    assert!(proxy.is_cut());
    assert!(!call.is_finished(), "the client got a reply that was lost");
    // The first attempt was applied: the file is there.
    (call, lookup(c, name).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_reply_is_lost_is_retried_and_yields_the_file_once() {
    let c = Cluster::builder()
        .nodes(1)
        .replicas(1)
        .proxy_meta()
        .build()
        .await
        .unwrap();
    let (call, ino) = create_with_lost_reply(&c, "f").await;

    let proxy = c.meta().proxy().unwrap();
    let accepted = proxy.accepted();
    proxy.restore();
    let reply = call.await.unwrap();
    assert!(proxy.accepted() > accepted, "the client did not reconnect");
    match reply {
        Ok(MetaReply::Open(o)) => assert_eq!(o.attr.ino, ino, "the retry made another file"),
        other => panic!(
            "the retried create failed: {other:?} (EEXIST is {})",
            errno::EEXIST
        ),
    }
    assert_eq!(names(&c).await, ["f"]);
    // A new create of the same name is a new operation: EEXIST, as POSIX
    // says. (So the retry above succeeded by its id, not by accident.)
    assert_eq!(
        c.meta_client().call(&ROOT, create("f")).await.err(),
        Some(errno::EEXIST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_across_a_restart_of_the_service_yields_the_file_once() {
    let mut c = Cluster::builder()
        .nodes(1)
        .replicas(1)
        .proxy_meta()
        .build()
        .await
        .unwrap();
    let (call, ino) = create_with_lost_reply(&c, "g").await;

    // The service restarts before the client retries: the session is
    // gone (the client mounts again) and only the store remembers the id.
    c.meta_mut().kill().await;
    c.meta_mut().restart().await.unwrap();
    c.meta().proxy().unwrap().restore();
    match call.await.unwrap() {
        Ok(MetaReply::Open(o)) => assert_eq!(o.attr.ino, ino, "the retry made another file"),
        other => panic!("the retried create failed: {other:?}"),
    }
    assert_eq!(names(&c).await, ["g"]);
    assert_eq!(
        c.meta_client().call(&ROOT, create("g")).await.err(),
        Some(errno::EEXIST)
    );
}
