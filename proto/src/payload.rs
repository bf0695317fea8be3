//! Payloads decoded in place: the bytes of a chunk write or a read's reply
//! become a slice of the frame they arrived in, not a copy of it.
//!
//! A frame is decoded from one buffer ([`crate::frame`]); while it is, the
//! buffer is this thread's current frame. bincode hands a byte field over
//! as a slice borrowed from that buffer, and [`deserialize`] turns a slice
//! that lies inside the current frame into a shared view of it
//! (`Bytes::slice_ref`). Anything else (another decoder, another buffer)
//! is copied, as before. The wire format is unchanged: length-prefixed
//! bytes, as `serde_bytes` writes them.
//!
//! Encoding goes the other way ([`serialize`], [`splicing`]): while a frame
//! is encoded for a connection, a payload of [`SPLICE_FROM`] bytes or more
//! is not copied into the frame's buffer. Only its length prefix is; the
//! payload itself is noted with where it goes, and the frame is sent as
//! those pieces in one vectored write (`crate::frame::Frame`).

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{Deserializer, Error, Visitor};

thread_local! {
    static CURRENT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    static SPLICING: RefCell<Option<Spliced>> = const { RefCell::new(None) };
    /// Payloads of [`SPLICE_FROM`] bytes or more serialized while not
    /// splicing: counted while a frame's size is measured, so that a frame
    /// with none (a large directory listing) is encoded the plain way.
    static LARGE_SEEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `measure` and returns, with its result, how many payloads large
/// enough to splice it serialized.
pub(crate) fn counting_large<T>(measure: impl FnOnce() -> T) -> (T, usize) {
    LARGE_SEEN.with(|c| c.set(0));
    let out = measure();
    (out, LARGE_SEEN.with(|c| c.replace(0)))
}

/// A payload at least this large is spliced into its frame rather than
/// copied into it: below, one copy costs less than one more piece of a
/// vectored write.
pub const SPLICE_FROM: usize = 16 * 1024;

/// A message encoded with its large payloads left out: the encoded bytes,
/// and each payload with the offset in them where it belongs.
#[derive(Default)]
pub(crate) struct Spliced {
    pub head: Vec<u8>,
    pub payloads: Vec<(usize, Bytes)>,
}

/// Runs `encode` with splicing on for this thread: it writes through
/// [`SplicedWriter`] into `into.head`, and payload fields note themselves
/// in `into.payloads`. Returns what was encoded.
pub(crate) fn splicing<T>(into: Spliced, encode: impl FnOnce() -> T) -> (T, Spliced) {
    /// Turns splicing off also if `encode` unwinds.
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            SPLICING.with(|c| c.borrow_mut().take());
        }
    }
    SPLICING.with(|c| *c.borrow_mut() = Some(into));
    let off = Off;
    let out = encode();
    let spliced = SPLICING.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(off);
    (out, spliced)
}

/// The writer an encoder writes to while [`splicing`].
pub(crate) struct SplicedWriter;

impl std::io::Write for SplicedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SPLICING.with(|c| match c.borrow_mut().as_mut() {
            Some(s) => {
                s.head.extend_from_slice(buf);
                Ok(buf.len())
            }
            None => Err(std::io::Error::other("not splicing")),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A byte field: spliced into the frame being encoded when it is large
/// (its length prefix written, the bytes noted), else written as
/// `serde_bytes` writes it. bincode's prefix of a byte string is its
/// length as a `u64`, so the frame's bytes are the same either way.
pub fn serialize<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    if b.len() < SPLICE_FROM {
        return s.serialize_bytes(b);
    }
    if !SPLICING.with(|c| c.borrow().is_some()) {
        LARGE_SEEN.with(|c| c.set(c.get() + 1));
        return s.serialize_bytes(b);
    }
    let ok = s.serialize_u64(b.len() as u64)?;
    SPLICING.with(|c| {
        if let Some(sp) = c.borrow_mut().as_mut() {
            let at = sp.head.len();
            sp.payloads.push((at, b.clone()));
        }
    });
    Ok(ok)
}

/// Runs `decode` with `frame` as this thread's current frame.
pub(crate) fn decoding<T>(frame: &Bytes, decode: impl FnOnce() -> T) -> T {
    /// Clears the current frame also if `decode` unwinds.
    struct Clear(Option<Bytes>);
    impl Drop for Clear {
        fn drop(&mut self) {
            let before = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = before);
        }
    }
    let before = CURRENT.with(|c| c.borrow_mut().replace(frame.clone()));
    let _clear = Clear(before);
    decode()
}

/// A byte field, as a view of the current frame when it lies inside it.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_bytes(InFrame)
}

struct InFrame;

impl<'de> Visitor<'de> for InFrame {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(CURRENT.with(|c| match c.borrow().as_ref() {
            Some(frame) if within(frame, v) => frame.slice_ref(v),
            _ => Bytes::copy_from_slice(v),
        }))
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }
}

/// Whether `part` lies inside `whole` (what `slice_ref` requires).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    part.is_empty() || (at >= start && at + part.len() <= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Carrier {
        n: u32,
        #[serde(serialize_with = "serialize", deserialize_with = "deserialize")]
        data: Bytes,
    }

    #[test]
    fn a_payload_inside_the_frame_is_a_view_of_it_and_elsewhere_a_copy() {
        let sent = Carrier {
            n: 7,
            data: Bytes::from(vec![5u8; 10_000]),
        };
        let frame = Bytes::from(bincode::serialize(&sent).unwrap());
        let got: Carrier = decoding(&frame, || bincode::deserialize(&frame).unwrap());
        assert_eq!((got.n, &got.data[..]), (7, &sent.data[..]));
        let inside = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(
            inside.contains(&(got.data.as_ptr() as usize)),
            "not a view of the frame"
        );
        // The frame is no longer current afterwards: the same bytes decoded
        // from another buffer are copied, and equal.
        let other = frame.to_vec();
        let copied: Carrier = bincode::deserialize(&other).unwrap();
        assert_eq!(copied.data, sent.data);
        let other_range = other.as_ptr() as usize..other.as_ptr() as usize + other.len();
        assert!(!other_range.contains(&(copied.data.as_ptr() as usize)));
        assert!(!inside.contains(&(copied.data.as_ptr() as usize)));
    }

    #[test]
    fn the_wire_format_is_that_of_serde_bytes() {
        #[derive(serde::Serialize)]
        struct Old {
            n: u32,
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        let old = bincode::serialize(&Old {
            n: 1,
            data: vec![1, 2, 3],
        })
        .unwrap();
        let new = bincode::serialize(&Carrier {
            n: 1,
            data: Bytes::from_static(&[1, 2, 3]),
        })
        .unwrap();
        assert_eq!(old, new);
    }
}
