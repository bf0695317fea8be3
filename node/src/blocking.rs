//! Disk work off the async workers.

use cpfs_proto::node::NodeError;

/// Runs `f` on the blocking pool; a panicking worker becomes an I/O error
/// for that request instead of taking the node down.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(NodeError::Io(format!("worker failed: {e}"))))
}

/// Wall-clock seconds (capabilities and scrub stamps).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
