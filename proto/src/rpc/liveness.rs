//! Deadlines on a connection's peer, enforced by the kernel.
//!
//! A peer that crashed or restarted answers with a reset and costs
//! nothing; a peer behind a link that went down answers nothing, and
//! without these settings what was sent to it waits on TCP's
//! retransmissions (minutes) and a call waiting for its reply on
//! [`super::CALL_TIMEOUT`]. With them, data unacknowledged for
//! [`PEER_TIMEOUT`] (`TCP_USER_TIMEOUT`), or keepalive probes of a
//! connection waiting for a reply unanswered for as long, fail the
//! connection: every call on it fails and is retried elsewhere, so a
//! blackholed peer costs about the failure timeout, as a killed one does.
//! The kernel acknowledges data and probes whatever the peer process is
//! doing, so a busy peer is not taken for a dead one.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// How long a peer may leave data or keepalive probes unacknowledged: the
/// control plane's default failure timeout, after which a data node cut
/// off from the cluster is replaced anyway.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Silence after which a connection that waits for a reply probes its
/// peer, and the interval between probes.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// Silence after which a listener probes an idle client: only to reclaim
/// connections of hosts that went away, so much later than a caller.
const IDLE_PROBE_AFTER: Duration = Duration::from_secs(30);

/// Settings for a connection a caller waits on (see the module comment).
pub fn watch_peer(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    set(stream, PROBE_AFTER)
}

/// Settings for a connection a listener accepted: replies a vanished
/// client never acknowledges fail it after [`PEER_TIMEOUT`]; an idle one
/// is probed after [`IDLE_PROBE_AFTER`].
pub fn watch_client(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    set(stream, IDLE_PROBE_AFTER)
}

fn set(stream: &tokio::net::TcpStream, probe_after: Duration) -> std::io::Result<()> {
    let socket = SockRef::from(stream);
    let retries = (PEER_TIMEOUT.as_secs() as u32).max(1);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(probe_after)
            .with_interval(PROBE_AFTER)
            .with_retries(retries),
    )?;
    // With a user timeout set, Linux also ends a connection whose
    // keepalive probes went unanswered that long.
    socket.set_tcp_user_timeout(Some(PEER_TIMEOUT))
}
