//! The serving half: one shell for every binary listener (data nodes, the
//! metadata service). It owns what every such service needs and none
//! should write again: accepting connections, decoding frames within the
//! service's own size limit, a bound on requests in flight per connection
//! (a client that floods one connection waits for its own replies instead
//! of queueing work without end), a tracing span per request carrying the
//! request id of its frame, and counters of requests, failures and time.
//!
//! The handler decides authentication (nodes verify a capability in every
//! request, the metadata service a session), so a request is decoded, then
//! handed over, then answered; replies go back in completion order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use super::writer::FrameWriter;
use crate::frame::{encode_frame_parts, read_frame_within, WireError};

/// What distinguishes one service's listener from another's.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    /// Name in logs and spans ("node", "meta").
    pub name: &'static str,
    /// Largest request frame accepted; larger ones close the connection
    /// before anything is allocated for them.
    pub max_request: usize,
    /// Largest reply frame sent.
    pub max_reply: usize,
    /// Requests handled at once per connection; reading stops until one
    /// finishes.
    pub max_in_flight: usize,
}

/// Counters a service shell keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Requests whose handler said they failed (see [`Outcome`]).
    pub failures: AtomicU64,
    /// Connections closed for a bad frame (too large, wrong version,
    /// undecodable).
    pub refused_frames: AtomicU64,
    /// Sum of handler times, in microseconds.
    pub busy_micros: AtomicU64,
}

/// Lets the shell count failures without knowing the reply type.
pub trait Outcome {
    fn failed(&self) -> bool;
}

/// Serves `listener` until the future is dropped: every connection is read
/// by one task, every request handled by its own task (given the peer's
/// address, which access rules need). Those tasks belong to this future:
/// dropping it (a test killing a node) ends every connection and every
/// request in flight, as a process exit would.
pub async fn serve<Req, Resp, H, F>(
    listener: TcpListener,
    limits: ServiceLimits,
    stats: Arc<ServiceStats>,
    handler: H,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Outcome + Send + 'static,
    H: Fn(SocketAddr, Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    serve_until(listener, limits, stats, handler, std::future::pending()).await
}

/// As [`serve`], and drains when `stop` resolves: no new connection is
/// accepted and no new request read, the requests in flight are answered,
/// then every connection closes and this returns. A client sees its
/// answers, then a closed connection it retries elsewhere.
pub async fn serve_until<Req, Resp, H, F>(
    listener: TcpListener,
    limits: ServiceLimits,
    stats: Arc<ServiceStats>,
    handler: H,
    stop: impl Future<Output = ()> + Send,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Outcome + Send + 'static,
    H: Fn(SocketAddr, Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let limits = Arc::new(limits);
    let mut connections = tokio::task::JoinSet::new();
    let (draining, drain) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = limits.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = super::liveness::watch_client(&stream) {
            tracing::debug!(service = limits.name, error = %e, "keepalive not set");
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("conn", service = limits.name, %peer);
        connections.spawn(
            connection(
                stream,
                peer,
                limits.clone(),
                stats.clone(),
                handler.clone(),
                drain.clone(),
            )
            .instrument(span),
        );
    }
    drop(listener);
    let _ = draining.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection<Req, Resp, H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Arc<ServiceLimits>,
    stats: Arc<ServiceStats>,
    handler: H,
    mut drain: watch::Receiver<bool>,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Outcome + Send + 'static,
    H: Fn(SocketAddr, Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let (rd, wr) = stream.into_split();
    // Buffered: a frame's length and body come in one read call, not two.
    let mut rd = tokio::io::BufReader::with_capacity(crate::frame::READ_BUFFER, rd);
    let writer = Arc::new(FrameWriter::new(wr));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    // Requests of this connection; dropped (aborted) with it.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        while requests.try_join_next().is_some() {}
        // Wait for room before reading the next frame, so a flood of
        // requests is held back by TCP, not buffered here.
        // A drain stops reading: a frame cut off here is one the client
        // never got an answer to, and retries.
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => p,
            _ = drain.wait_for(|d| *d) => break,
        };
        let Ok(permit) = permit else {
            break;
        };
        let frame = tokio::select! {
            f = read_frame_within::<_, Req>(&mut rd, limits.max_request) => f,
            _ = drain.wait_for(|d| *d) => break,
        };
        match frame {
            Ok((id, req)) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let writer = writer.clone();
                let handler = handler.clone();
                let stats = stats.clone();
                let limits = limits.clone();
                let span = tracing::debug_span!("request", service = limits.name, %peer, id);
                let mut answer = Box::pin(
                    async move {
                        let started = Instant::now();
                        let resp = handler(peer, req).await;
                        let took = started.elapsed();
                        stats
                            .busy_micros
                            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                        if resp.failed() {
                            stats.failures.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::trace!(micros = took.as_micros() as u64, "answered");
                        match encode_frame_parts(id, &resp, limits.max_reply) {
                            Ok(frame) => {
                                writer.send(frame).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "reply not encodable"),
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
                // Most answers are ready at once (a lookup in memory): run
                // the request here and spare it a task and a hand-off. One
                // that waits (a commit, a disk, another node) continues as
                // a task of its own, polled again there.
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if answer.as_mut().poll(&mut cx).is_pending() {
                    requests.spawn(answer);
                }
            }
            Err(WireError::Closed) => break,
            Err(e) => {
                stats.refused_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "connection dropped");
                break;
            }
        }
    }
    // The client closed its side, or the service drains: answer what is
    // in flight, then close.
    while requests.join_next().await.is_some() {}
    writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Client;
    use serde::Deserialize;
    use tokio::sync::{oneshot, Notify};

    #[derive(Serialize, Deserialize)]
    struct Ping(u32);
    #[derive(Serialize, Deserialize)]
    struct Pong(u32);
    impl Outcome for Pong {
        fn failed(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn a_drain_answers_requests_in_flight_and_takes_no_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (e, r) = (entered.clone(), release.clone());
        let handler = move |_peer, Ping(n): Ping| {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                Pong(n)
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = ServiceLimits {
            name: "test",
            max_request: 1024,
            max_reply: 1024,
            max_in_flight: 4,
        };
        let server = tokio::spawn(serve_until(
            listener,
            limits,
            Arc::default(),
            handler,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = Arc::new(Client::<Ping, Pong>::new(addr.to_string()));
        let caller = client.clone();
        let call = tokio::spawn(async move { caller.call(Ping(7)).await });
        entered.notified().await;

        stop.send(()).unwrap();
        // The listener closes at once: new connections are refused.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting while draining");
            tokio::task::yield_now().await;
        }
        assert!(!server.is_finished(), "returned with a request in flight");

        // The request in flight is answered, then the shell returns.
        release.notify_one();
        let reply = call.await.unwrap().unwrap();
        assert_eq!(reply.0, 7);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the drained shell returns")
            .unwrap();
    }
}
