//! Connecting from a privileged source port, as NFS clients do
//! (bindresvport): the metadata service admits a session only from a port
//! below 1024 unless the access rule opts out, so that only root on an
//! admitted host can speak for that host's users.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

/// The ports tried, highest first, as bindresvport does: 1023 down to 512
/// (those below are left to well-known services).
pub const RESERVED_PORTS: std::ops::RangeInclusive<u16> = 512..=1023;

/// Connects to `address` from a free privileged port. A process that may
/// not bind one (not root: EACCES) connects from an ordinary port instead
/// and the server decides, saying why it refuses; so does one that finds
/// every privileged port taken.
pub async fn connect(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    // Each address in turn, as TcpStream::connect does.
    for to in tokio::net::lookup_host(address).await? {
        match connect_to(address, to).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn connect_to(address: &str, to: SocketAddr) -> io::Result<TcpStream> {
    for port in RESERVED_PORTS.rev() {
        let socket = match to {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A port whose last connection is in TIME_WAIT can be bound again;
        // only the same (source, destination) pair is refused, at connect.
        socket.set_reuseaddr(true)?;
        let from = SocketAddr::new(unspecified(to), port);
        match socket.bind(from) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(%address, "not allowed to bind a privileged port (not root?): connecting from an ordinary one; access rules without InsecurePorts refuse it");
                return TcpStream::connect(to).await;
            }
            Err(e) => return Err(e),
        }
        match socket.connect(to).await {
            Ok(stream) => return Ok(stream),
            // Another socket uses this port towards the same peer.
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    || e.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(%address, "every privileged port is in use: connecting from an ordinary one");
    TcpStream::connect(to).await
}

fn unspecified(to: SocketAddr) -> std::net::IpAddr {
    match to {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root (the test suites run as root) the connection comes from a
    /// privileged port, and two at once get two different ones.
    #[tokio::test]
    async fn connects_from_a_privileged_port_when_root() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let a = connect(&address).await.unwrap();
        let b = connect(&address).await.unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's effective user.
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        if root {
            assert!(RESERVED_PORTS.contains(&pa), "{pa}");
            assert!(RESERVED_PORTS.contains(&pb), "{pb}");
            assert_ne!(pa, pb);
        } else {
            assert!(pa >= 1024, "{pa}");
        }
    }
}
