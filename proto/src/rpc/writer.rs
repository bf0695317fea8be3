//! The sending side of a connection, shared by everyone who sends on it.
//!
//! A sender appends its encoded frame to a buffer and, if nobody is
//! writing, writes the buffer itself; otherwise the one writing picks the
//! frame up with whatever else queued meanwhile. Frames that queue while a
//! write is under way go out together in one syscall, and a frame sent on
//! an idle connection goes out at once from the sender's own task, with no
//! hand-off to a writer task and back. A frame is queued as its pieces
//! (`crate::frame::Frame`: a large payload is a piece of its own, never
//! copied), and what is queued goes out in vectored writes.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::frame::Frame;

pub struct FrameWriter<W> {
    queued: Mutex<Vec<Bytes>>,
    socket: tokio::sync::Mutex<W>,
    broken: AtomicBool,
}

impl<W: AsyncWrite + Unpin + Send> FrameWriter<W> {
    pub fn new(socket: W) -> FrameWriter<W> {
        FrameWriter {
            queued: Mutex::new(Vec::new()),
            socket: tokio::sync::Mutex::new(socket),
            broken: AtomicBool::new(false),
        }
    }

    fn take(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn is_idle(&self) -> bool {
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Sends `frame` (written by this call or by the sender writing now).
    /// False once the connection failed.
    pub async fn send(&self, frame: Frame) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            // Nothing queued (the usual case): the frame itself is the
            // batch.
            if queued.is_empty() {
                *queued = frame.parts;
            } else {
                queued.extend(frame.parts);
            }
        }
        loop {
            // Somebody is writing: it takes this frame before it stops.
            let Ok(mut socket) = self.socket.try_lock() else {
                return true;
            };
            // A sender dropped in the middle of a write leaves half a frame
            // on the wire: the connection is then marked broken.
            let mut writing = Writing(&self.broken, false);
            loop {
                let batch = self.take();
                if batch.is_empty() {
                    break;
                }
                if write_all_parts(&mut *socket, &batch).await.is_err()
                    || socket.flush().await.is_err()
                {
                    return false;
                }
            }
            writing.1 = true;
            drop(writing);
            drop(socket);
            // A frame queued after the last take but before the lock was
            // released found it held: write it now.
            if self.is_idle() {
                return true;
            }
        }
    }

    /// Closes the sending side (after the last frame).
    pub async fn shutdown(&self) {
        let _ = self.socket.lock().await.shutdown().await;
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

/// Writes every piece, in order, as few vectored writes as the socket
/// takes them in.
async fn write_all_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: &[Bytes]) -> std::io::Result<()> {
    if let [one] = parts {
        // One small frame (most metadata calls): no list of slices.
        return w.write_all(one).await;
    }
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Marks the connection broken unless the write it guards completed.
struct Writing<'a>(&'a AtomicBool, bool);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::Release);
        }
    }
}
