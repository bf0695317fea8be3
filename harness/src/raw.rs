//! Raw connections: bytes the real clients never send (an oversized
//! length prefix, a frame of another wire version), and a way to tell
//! whether the server answered or hung up.
//!
//! The frame layout is the one of [`cpfs_proto::frame`]:
//! `u32 length (little-endian) | u8 version | u64 request id | body`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cpfs_proto::frame::{encode_frame_within, read_frame_within, WIRE_VERSION};

/// Offset of the version byte in an encoded frame (after the length).
const VERSION_AT: usize = 4;

/// `msg` as a frame with request id `id`, whatever its size, with `version`
/// as its version byte.
pub fn frame<T: Serialize>(version: u8, id: u64, msg: &T) -> anyhow::Result<Vec<u8>> {
    let mut f = encode_frame_within(id, msg, usize::MAX)?;
    f[VERSION_AT] = version;
    Ok(f)
}

/// `msg` as a frame of this build's wire version.
pub fn current_frame<T: Serialize>(id: u64, msg: &T) -> anyhow::Result<Vec<u8>> {
    frame(WIRE_VERSION, id, msg)
}

/// What a server did with what it was sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It closed the connection (end of stream or reset) without answering.
    Closed,
    /// It sent bytes back (the first of them).
    Answered(Vec<u8>),
    /// Neither, within the time allowed: it is still waiting for more.
    Silent,
}

/// One TCP connection driven by hand.
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn { stream })
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends only a length prefix announcing `len` bytes, and nothing of
    /// them: a server that allocated and waited for the body would stay
    /// [`Outcome::Silent`]; one that refuses the length closes at once.
    pub async fn send_length_prefix(&mut self, len: u32) -> anyhow::Result<()> {
        self.send(&len.to_le_bytes()).await
    }

    /// Sends `msg` as one frame with `version` as its version byte.
    pub async fn send_frame<T: Serialize>(
        &mut self,
        version: u8,
        id: u64,
        msg: &T,
    ) -> anyhow::Result<()> {
        let f = frame(version, id, msg)?;
        self.send(&f).await
    }

    /// Sends `bytes` and waits up to `timeout` for the server to answer or
    /// hang up. A server may hang up before it has read everything (that
    /// is how a too-large frame is refused), so a failed write counts as
    /// [`Outcome::Closed`].
    pub async fn send_then_outcome(&mut self, bytes: &[u8], timeout: Duration) -> Outcome {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Err(_) => Outcome::Silent,
            Ok(Err(_)) => Outcome::Closed,
            Ok(Ok(())) => self.outcome(timeout).await,
        }
    }

    /// Waits up to `timeout` for the server to answer or hang up.
    pub async fn outcome(&mut self, timeout: Duration) -> Outcome {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
            Err(_) => Outcome::Silent,
            Ok(Ok(0)) | Ok(Err(_)) => Outcome::Closed,
            Ok(Ok(n)) => {
                buf.truncate(n);
                Outcome::Answered(buf)
            }
        }
    }

    /// Reads one reply frame (of this build's version) within `timeout`.
    pub async fn reply<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(u64, T)> {
        let read = read_frame_within(&mut self.stream, usize::MAX);
        Ok(tokio::time::timeout(timeout, read).await??)
    }
}
