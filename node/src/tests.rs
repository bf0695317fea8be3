//! The node process on its supervisor: it registers, runs its loops and
//! serves; a shutdown stops it cleanly (Ok, listener closed, heartbeats
//! over, data directory free); a task that dies stops it with its reason.
//! The control plane is a few lines of HTTP that answer heartbeats.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_proto::heartbeat::{Heartbeat, HeartbeatReply};
use cpfs_runtime::Supervisor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What the fake control plane has heard.
#[derive(Default)]
struct Heard {
    heartbeats: u32,
    last: Option<Heartbeat>,
}

/// A control plane answering every heartbeat with `status` (200: an empty
/// table and no lease). Returns its URL and what it heard.
async fn control_plane(status: u16) -> (String, Arc<Mutex<Heard>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heard = Arc::new(Mutex::new(Heard::default()));
    let log = heard.clone();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let body = read_request(&mut c).await;
                if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&body) {
                    let mut h = log.lock().unwrap();
                    h.heartbeats += 1;
                    h.last = Some(hb);
                }
                let reply = serde_json::to_vec(&HeartbeatReply {
                    chain_table: Default::default(),
                    dropped: vec![],
                    lease_ms: 0,
                    revoked: vec![],
                    full: None,
                    peers: vec![],
                    qos: None,
                })
                .unwrap();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(&reply).await;
            });
        }
    });
    (url, heard)
}

/// Reads one HTTP request and returns its body.
async fn read_request(c: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf[end + 4..end + 4 + len].to_vec();
            }
        }
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return Vec::new(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn config(dir: &Path, controlplane: &str) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        advertise: None,
        controlplane: controlplane.into(),
        cluster_token: "token".into(),
        zone: "zone".into(),
        capacity_bytes: 1 << 30,
        heartbeat: Duration::from_millis(20),
        rates: Rates {
            // Scrub passes run (over an empty store) while the test looks.
            scrub_interval: Duration::from_millis(10),
            ..Rates::default()
        },
    }
}

/// Waits for `cond` on what the control plane heard, for up to 10 s.
async fn heard_until(heard: &Mutex<Heard>, what: &str, cond: impl Fn(&Heard) -> bool) {
    for _ in 0..1000 {
        if cond(&heard.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_cleanly_when_shutdown_is_requested() {
    let dir = tempfile::tempdir().unwrap();
    let (url, heard) = control_plane(200).await;
    let tasks = Supervisor::new(Arc::default());
    let shutdown = tasks.shutdown();
    let node = tokio::spawn(run_on(tasks, config(dir.path(), &url)));

    // Registered, heartbeating, scrubbing (passes reach the control plane).
    heard_until(&heard, "a heartbeat after a scrub pass", |h| {
        h.last.as_ref().is_some_and(|hb| hb.stats.scrub.passes >= 1)
    })
    .await;
    let address = heard.lock().unwrap().last.as_ref().unwrap().address.clone();
    let stats = cpfs_proto::node::NodeClient::new(address.clone())
        .call(cpfs_proto::node::NodeRequest::Stats {
            auth: cpfs_proto::capability::NodeKey::from_cluster_token("token").issue(i64::MAX),
        })
        .await
        .unwrap();
    assert!(
        matches!(stats, cpfs_proto::node::NodeResponse::Stats(_)),
        "{stats:?}"
    );

    shutdown.request();
    let stopped = tokio::time::timeout(GRACE, node)
        .await
        .expect("the node did not stop within its grace period")
        .unwrap();
    assert_eq!(stopped, Ok(()), "a requested shutdown is not a failure");

    // Nothing of it is left: the port is closed, heartbeats are over and
    // the data directory can be taken at once.
    assert!(tokio::net::TcpStream::connect(&address).await.is_err());
    let after = heard.lock().unwrap().heartbeats;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        heard.lock().unwrap().heartbeats,
        after,
        "still heartbeating"
    );
    let relock =
        tokio::time::timeout(Duration::from_millis(50), config::lock_data_dir(dir.path())).await;
    assert!(matches!(relock, Ok(Ok(_))), "data directory still locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_listener_stops_the_node_with_its_reason() {
    let (url, _heard) = control_plane(200).await;

    let dir = tempfile::tempdir().unwrap();
    let ended = run_with(
        Supervisor::new(Arc::default()),
        config(dir.path(), &url),
        |_node, listener, _| async move { drop(listener) },
    );
    let err = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "the data node stopped: listener: the listener stopped");

    let dir = tempfile::tempdir().unwrap();
    let panicked = run_with(
        Supervisor::new(Arc::default()),
        config(dir.path(), &url),
        |_node, _listener, _| async move { panic!("accept loop broke") },
    );
    let err = tokio::time::timeout(Duration::from_secs(10), panicked)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "the data node stopped: listener: accept loop broke");
}

#[tokio::test]
async fn a_refused_token_is_fatal_and_a_shutdown_ends_registration() {
    let (url, _heard) = control_plane(401).await;
    let dir = tempfile::tempdir().unwrap();
    let err = run_on(Supervisor::new(Arc::default()), config(dir.path(), &url))
        .await
        .unwrap_err();
    assert_eq!(err, "the control plane refused the cluster token");

    // No control plane at all: the node keeps trying until it is stopped.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let tasks = Supervisor::new(Arc::default());
    let shutdown = tasks.shutdown();
    let node = tokio::spawn(run_on(tasks, config(dir.path(), &url)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.request();
    let stopped = tokio::time::timeout(Duration::from_secs(5), node)
        .await
        .expect("registration did not end on shutdown")
        .unwrap();
    assert_eq!(stopped, Ok(()));
}
