//! The calling half: a multiplexed connection. Callers share one TCP stream
//! per peer; a writer task sends frames, a reader task routes replies by
//! request id to the waiting caller. On any connection error every waiter
//! gets the error and the next call reconnects.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex};

use super::liveness::{watch_peer, PEER_TIMEOUT};
use super::writer::FrameWriter;
use crate::frame::{encode_frame_parts, read_frame, WireError, MAX_FRAME};

/// How long one call may take before it fails: the bound for a peer that
/// is reachable but never answers (a hung process). A peer that is not
/// reachable at all fails the connection much sooner, after
/// [`PEER_TIMEOUT`] (see [`super::liveness`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Pending<Resp> = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Resp, String>>>>>;
/// What a call needs of a live connection: its outbox, its waiters, and
/// whether it is still up.
type Conn<Resp> = (
    Arc<FrameWriter<OwnedWriteHalf>>,
    Pending<Resp>,
    Arc<std::sync::atomic::AtomicBool>,
);

struct Live<Resp> {
    outbox: Arc<FrameWriter<OwnedWriteHalf>>,
    pending: Pending<Resp>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Client<Req, Resp> {
    address: String,
    /// Connect from a privileged source port ([`super::reserved`]).
    reserved_port: bool,
    next_id: AtomicU64,
    live: Mutex<Option<Live<Resp>>>,
    /// Connections that broke so far (see [`Client::breaks`]).
    breaks: Arc<AtomicU64>,
    _p: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    pub fn new(address: impl Into<String>) -> Self {
        Client {
            address: address.into(),
            reserved_port: false,
            next_id: AtomicU64::new(1),
            live: Mutex::new(None),
            breaks: Arc::new(AtomicU64::new(0)),
            _p: PhantomData,
        }
    }

    /// A client whose connections come from a privileged source port (the
    /// metadata service's sessions need one unless the access rule opts
    /// out; see [`super::reserved`]).
    pub fn reserved(address: impl Into<String>) -> Self {
        Client {
            reserved_port: true,
            ..Self::new(address)
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// How many of this client's connections broke so far, counted the
    /// moment the reader sees it (the peer's process ended, say), before
    /// any call fails: what a caller trusted from the peer "while the
    /// connection stands" ends when this moves.
    pub fn breaks(&self) -> u64 {
        self.breaks.load(Ordering::Acquire)
    }

    async fn connection(&self) -> Result<Conn<Resp>, WireError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.alive.load(Ordering::Acquire) && !l.outbox.is_broken() {
                return Ok((l.outbox.clone(), l.pending.clone(), l.alive.clone()));
            }
        }
        let connect = async {
            if self.reserved_port {
                super::reserved::connect(&self.address).await
            } else {
                TcpStream::connect(&self.address).await
            }
        };
        // A SYN to an unreachable host is retried for minutes.
        let stream = tokio::time::timeout(PEER_TIMEOUT, connect)
            .await
            .map_err(|_| {
                WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })??;
        stream.set_nodelay(true)?;
        watch_peer(&stream)?;
        let (rd, wr) = stream.into_split();
        // Buffered: a frame's length and body come in one read call, not two.
        let mut rd = tokio::io::BufReader::with_capacity(crate::frame::READ_BUFFER, rd);
        let tx = Arc::new(FrameWriter::new(wr));
        let pending: Pending<Resp> = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));

        let fail_all = {
            let pending = pending.clone();
            let alive = alive.clone();
            let breaks = self.breaks.clone();
            move |why: String| {
                alive.store(false, Ordering::Release);
                breaks.fetch_add(1, Ordering::AcqRel);
                let waiters: Vec<_> = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                for (_, w) in waiters {
                    let _ = w.send(Err(why.clone()));
                }
            }
        };
        let pending_r = pending.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, Resp>(&mut rd).await {
                    Ok((id, resp)) => {
                        let waiter = pending_r
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(Ok(resp));
                        }
                    }
                    Err(e) => {
                        fail_all(e.to_string());
                        return;
                    }
                }
            }
        });
        *live = Some(Live {
            outbox: tx.clone(),
            pending: pending.clone(),
            alive: alive.clone(),
        });
        Ok((tx, pending, alive))
    }

    /// Sends one request and waits for its reply.
    pub async fn call(&self, req: Req) -> Result<Resp, WireError> {
        let (outbox, pending, alive) = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // The connection may have failed between handing it out and the
        // waiter's registration; its failure then drained the waiters
        // before this one arrived and nobody would ever answer it (the
        // call would wait for CALL_TIMEOUT). Failing marks the connection
        // dead before draining, so checking after registering is enough.
        let frame = match encode_frame_parts(id, &req, MAX_FRAME) {
            Ok(f) => f,
            Err(e) => {
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                return Err(e);
            }
        };
        if !alive.load(Ordering::Acquire) || !outbox.send(frame).await {
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            self.reset().await;
            return Err(WireError::Closed);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(why))) => {
                self.reset().await;
                Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    why,
                )))
            }
            Ok(Err(_)) => Err(WireError::Closed),
            Err(_) => {
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.reset().await;
                Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "call timed out",
                )))
            }
        }
    }

    async fn reset(&self) {
        *self.live.lock().await = None;
    }
}

/// Connections to peers, one multiplexed client per address, made on first
/// use and kept (a broken one reconnects on its next call).
pub struct Pool<Req, Resp> {
    map: std::sync::Mutex<HashMap<String, Arc<Client<Req, Resp>>>>,
}

impl<Req, Resp> Default for Pool<Req, Resp> {
    fn default() -> Self {
        Pool {
            map: Default::default(),
        }
    }
}

impl<Req, Resp> Pool<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    pub fn get(&self, address: &str) -> Arc<Client<Req, Resp>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(Client::new(address)))
            .clone()
    }
}
