//! The frame codec shared by the node and metadata protocols.
//!
//! A frame is `u32 length | u8 version | u64 request id | body`, the body a
//! bincode message and the length counting everything after itself.
//! Requests and replies carry the id, so one TCP connection carries many
//! requests at once and replies may come back in any order.
//!
//! The version byte is checked on every frame: bincode is not
//! self-describing, so a peer speaking another version would otherwise be
//! decoded into garbage instead of being refused with a clear message.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The wire version this build speaks. Bump it whenever a message of the
/// node or metadata protocol changes shape.
pub const WIRE_VERSION: u8 = 10;

/// Largest frame accepted (a 64 MiB chunk write plus headers).
pub const MAX_FRAME: usize = (64 << 20) + 4096;

/// Bytes of the header after the length prefix: version and request id.
const HEADER: usize = 1 + 8;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("peer speaks wire version {got}, this build speaks {WIRE_VERSION}")]
    Version { got: u8 },
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error("connection closed")]
    Closed,
}

/// Encodes one frame (header and body) into a buffer, refusing messages
/// larger than `limit` before allocating for them.
pub fn encode_frame_within<T: Serialize>(
    id: u64,
    msg: &T,
    limit: usize,
) -> Result<Vec<u8>, WireError> {
    encode_whole(id, msg, body_size(msg, limit)?)
}

/// The size of `msg`'s body, refused when the frame would pass `limit`.
fn body_size<T: Serialize>(msg: &T, limit: usize) -> Result<usize, WireError> {
    let size =
        bincode::serialized_size(msg).map_err(|e| WireError::Decode(e.to_string()))? as usize;
    if size + HEADER > limit {
        return Err(WireError::TooLarge(size + HEADER));
    }
    Ok(size)
}

/// The length prefix and header of a frame whose body is `size` bytes, in
/// a buffer with room for `room` bytes of body.
fn frame_head(id: u64, size: usize, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEADER + room);
    out.extend_from_slice(&((size + HEADER) as u32).to_le_bytes());
    out.push(WIRE_VERSION);
    out.extend_from_slice(&id.to_le_bytes());
    out
}

/// The whole frame of `msg`, whose body is `size` bytes, in one buffer.
fn encode_whole<T: Serialize>(id: u64, msg: &T, size: usize) -> Result<Vec<u8>, WireError> {
    let mut out = frame_head(id, size, size);
    bincode::serialize_into(&mut out, msg).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(out)
}

/// A frame as the pieces it is sent in: its encoded bytes, with each large
/// payload between them as the buffer it already was (see
/// `crate::payload::serialize`), not copied.
pub struct Frame {
    pub parts: Vec<bytes::Bytes>,
}

impl Frame {
    /// The frame's bytes in one buffer (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

/// [`encode_frame_within`], as the pieces to send: a payload of
/// `crate::payload::SPLICE_FROM` bytes or more is not copied into the
/// frame. The bytes on the wire are the same.
pub fn encode_frame_parts<T: Serialize>(
    id: u64,
    msg: &T,
    limit: usize,
) -> Result<Frame, WireError> {
    let (size, large) = crate::payload::counting_large(|| body_size(msg, limit));
    let size = size?;
    if large == 0 {
        // Nothing in it is large enough to splice: one buffer, written
        // the direct way.
        return Ok(Frame {
            parts: vec![bytes::Bytes::from(encode_whole(id, msg, size)?)],
        });
    }
    let start = crate::payload::Spliced {
        head: frame_head(id, size, 4096),
        payloads: Vec::new(),
    };
    let (encoded, spliced) = crate::payload::splicing(start, || {
        bincode::serialize_into(crate::payload::SplicedWriter, msg)
    });
    encoded.map_err(|e| WireError::Decode(e.to_string()))?;
    let head = bytes::Bytes::from(spliced.head);
    let mut parts = Vec::with_capacity(2 * spliced.payloads.len() + 1);
    let mut from = 0;
    for (at, payload) in spliced.payloads {
        parts.push(head.slice(from..at));
        parts.push(payload);
        from = at;
    }
    parts.push(head.slice(from..));
    parts.retain(|p| !p.is_empty());
    Ok(Frame { parts })
}

/// [`encode_frame_within`] the protocol-wide [`MAX_FRAME`].
/// The read buffer of an RPC connection: room for a whole metadata frame
/// or a write's header, so that most frames take one read call. A larger
/// body is read past it, straight into the frame's own buffer.
pub const READ_BUFFER: usize = 16 * 1024;

pub fn encode_frame<T: Serialize>(id: u64, msg: &T) -> Result<Vec<u8>, WireError> {
    encode_frame_within(id, msg, MAX_FRAME)
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    id: u64,
    msg: &T,
) -> Result<(), WireError> {
    let frame = encode_frame(id, msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes; a longer length prefix is
/// refused before anything is allocated for it.
pub async fn read_frame_within<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: usize,
) -> Result<(u64, T), WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(HEADER..=limit).contains(&len) {
        return Err(WireError::TooLarge(len));
    }
    // Read into the vector's spare capacity: zeroing a megabyte first
    // only to overwrite it costs a node a few percent of a write's CPU.
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let want = (len - buf.len()) as u64;
        if (&mut *r).take(want).read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    if buf[0] != WIRE_VERSION {
        return Err(WireError::Version { got: buf[0] });
    }
    let id = u64::from_le_bytes(
        buf[1..HEADER]
            .try_into()
            .map_err(|_| WireError::Decode("short frame".into()))?,
    );
    // Payloads become views of the frame (crate::payload), not copies.
    let frame = bytes::Bytes::from(buf);
    let msg = crate::payload::decoding(&frame, || bincode::deserialize(&frame[HEADER..]))
        .map_err(|e| WireError::Decode(e.to_string()))?;
    Ok((id, msg))
}

/// [`read_frame_within`] the protocol-wide [`MAX_FRAME`].
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<(u64, T), WireError> {
    read_frame_within(r, MAX_FRAME).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeResponse;

    #[tokio::test]
    async fn frames_round_trip_and_bound_their_size() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, 42, &NodeResponse::Data(vec![1, 2, 3].into()))
            .await
            .unwrap();
        let (id, msg): (u64, NodeResponse) = read_frame(&mut b).await.unwrap();
        assert_eq!(id, 42);
        assert!(matches!(msg, NodeResponse::Data(d) if d == vec![1, 2, 3]));
        // A hostile length prefix is refused before allocating.
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let r: Result<(u64, NodeResponse), _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(WireError::TooLarge(_))));
    }

    #[test]
    fn a_frame_sent_in_pieces_is_the_frame_and_its_payloads_are_not_copied() {
        use crate::node::{ChunkWrite, NodeRequest};
        let big = bytes::Bytes::from(vec![7u8; 1 << 20]);
        let small = NodeResponse::Data(vec![1, 2, 3].into());
        let read = NodeResponse::Data(big.clone());
        // A large message without a payload to splice (a long listing of
        // many small ones) is one piece.
        let many = NodeResponse::Data(vec![1u8; 100].into());
        let listing: Vec<NodeResponse> = (0..400).map(|_| many.clone()).collect();
        let f = encode_frame_parts(9, &listing, MAX_FRAME).unwrap();
        assert_eq!(f.to_vec(), encode_frame(9, &listing).unwrap());
        assert_eq!(f.parts.len(), 1);
        for (msg, pieces) in [(&small, 1), (&read, 2)] {
            let f = encode_frame_parts(9, msg, MAX_FRAME).unwrap();
            assert_eq!(f.to_vec(), encode_frame(9, msg).unwrap());
            assert_eq!(f.parts.len(), pieces);
        }
        let f = encode_frame_parts(9, &read, MAX_FRAME).unwrap();
        assert_eq!(f.parts[1].as_ptr(), big.as_ptr(), "the payload was copied");
        // Several payloads in one message, each between its neighbours.
        let cap = crate::capability::CapabilityKey::from_cluster_token("t").issue("fs-t", 5, 1, 0);
        let write = |offset: u64, data: &bytes::Bytes| ChunkWrite {
            cap: cap.clone(),
            key: crate::node::ChunkKey {
                fs: "fs-t".into(),
                inode: 5,
                index: offset,
                chain: 1,
            },
            offset,
            data: data.clone(),
        };
        let other = bytes::Bytes::from(vec![8u8; 100 << 10]);
        let batch = NodeRequest::WriteBatch {
            chain: crate::node::ChainRef { id: 1, version: 2 },
            writes: vec![write(0, &big), write(1, &other), write(2, &"tiny".into())],
            forwarded: None,
        };
        let f = encode_frame_parts(3, &batch, MAX_FRAME).unwrap();
        assert_eq!(f.to_vec(), encode_frame(3, &batch).unwrap());
        assert_eq!(f.parts.len(), 5);
        assert!(f.parts.iter().any(|p| p.as_ptr() == other.as_ptr()));
        // The limit holds as before.
        assert!(matches!(
            encode_frame_parts(1, &read, 1024),
            Err(WireError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_frame_of_another_version_is_refused_by_name() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut frame = encode_frame(7, &NodeResponse::Data(vec![9].into())).unwrap();
        frame[4] = WIRE_VERSION.wrapping_add(1);
        a.write_all(&frame).await.unwrap();
        let r: Result<(u64, NodeResponse), _> = read_frame(&mut b).await;
        match r {
            Err(WireError::Version { got }) => assert_eq!(got, WIRE_VERSION.wrapping_add(1)),
            other => panic!("expected a version error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_smaller_limit_refuses_what_the_protocol_limit_allows() {
        let big = NodeResponse::Data(vec![0; 4096].into());
        assert!(matches!(
            encode_frame_within(1, &big, 1024),
            Err(WireError::TooLarge(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, 1, &big).await.unwrap();
        let r: Result<(u64, NodeResponse), _> = read_frame_within(&mut b, 1024).await;
        assert!(matches!(r, Err(WireError::TooLarge(_))));
    }

    #[tokio::test]
    async fn a_body_that_arrives_in_pieces_is_whole_and_one_cut_short_is_an_error() {
        // A large body through a pipe far smaller than it: many reads.
        let data: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 249) as u8).collect();
        let frame = encode_frame(5, &NodeResponse::Data(data.clone().into())).unwrap();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let sent = frame.clone();
        let writer = tokio::spawn(async move { a.write_all(&sent).await });
        let (id, msg): (u64, NodeResponse) = read_frame(&mut b).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(id, 5);
        assert!(matches!(msg, NodeResponse::Data(d) if d == data));
        // The connection closes halfway through a body.
        let (mut a, mut b) = tokio::io::duplex(frame.len());
        a.write_all(&frame[..frame.len() / 2]).await.unwrap();
        drop(a);
        let r: Result<(u64, NodeResponse), _> = read_frame(&mut b).await;
        match r {
            Err(WireError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected an early end, got {other:?}"),
        }
    }
}
