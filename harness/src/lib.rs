//! An in-process CPFS cluster for tests of the data path.
//!
//! The end-to-end suites start the real binaries, mount with FUSE and need
//! root; they take minutes and cannot reach inside a process to cut one
//! connection or let one lease lapse. This crate runs the same code (the
//! node's service shell, the metadata service on SQLite, the mount's
//! metadata and data clients) in one tokio runtime, so a test can build a
//! cluster in milliseconds and inject the faults the product must survive:
//!
//! - [`Cluster`] ([`ClusterBuilder`]): N data nodes on ephemeral
//!   127.0.0.1 ports in temporary directories, a chain table of R replicas
//!   installed in every node with leases granted, a metadata service over a
//!   provisioned file system, and a [`MetaClient`](cpfs_client::meta::MetaClient)
//!   plus [`DataClient`](cpfs_client::data::DataClient) ready to use.
//! - Faults: kill and restart a node or the metadata service (same
//!   directory, same port), install a newer chain table (failover, a
//!   syncing member, a promotion), let a lease expire, cut and restore a
//!   [`Proxy`] in front of a node or the metadata service, lose one reply.
//! - [`raw`]: frames the real clients never send (an oversized length
//!   prefix, another wire version), to test the protocol limits.
//!
//! Nothing here sleeps for a fixed time to decide an outcome: tests wait
//! for conditions with [`wait_for`], which fails with a message when the
//! condition does not come true in time.

mod cluster;
mod meta;
mod node;
mod proxy;
pub mod raw;
mod tables;

use std::future::Future;
use std::time::Duration;

pub use cluster::{check_bytes, pattern, Cluster, ClusterBuilder, ROOT};
pub use meta::{MetaServer, DOMAIN};
pub use node::{stats_request, TestNode};
pub use proxy::Proxy;

/// How often [`wait_for`] looks again: short, so tests stay fast, long
/// enough not to spin two cores.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `cond` returns true, looking every few milliseconds; fails
/// with `what` when `timeout` passes first. Tests use it instead of a fixed
/// sleep, so they are as fast as the system and fail by name when it hangs.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Binds a listener on `127.0.0.1:port` (0: an ephemeral port) with
/// SO_REUSEADDR, so a node or service restarted on its old port can bind
/// it again while connections of its previous life linger in TIME_WAIT.
pub(crate) fn bind(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok(socket.listen(1024)?)
}

/// Aborts a task when dropped, so a harness object that owns a server
/// task never leaves it running after the test (a dropped `JoinHandle`
/// would detach it instead).
#[derive(Debug)]
pub(crate) struct Task(Option<tokio::task::JoinHandle<()>>);

impl Task {
    pub(crate) fn spawn(f: impl Future<Output = ()> + Send + 'static) -> Task {
        Task(Some(tokio::spawn(f)))
    }

    /// Aborts the task and waits until it is gone (its listener and
    /// connections closed), as a process exit would leave things.
    pub(crate) async fn stop(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}
