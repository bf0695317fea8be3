//! A TCP proxy in front of one server, so a test can break the network
//! between a server and everyone who reaches it through the proxy's
//! address without touching the server itself.
//!
//! A cut closes every proxied connection and closes each new one as soon
//! as it is accepted: peers see a reset link, as after a partition that
//! firewalls answer with RSTs. (A silent black hole would only show up
//! after the RPC call timeout of 30 s, too slow for a test suite.)
//!
//! [`Proxy::lose_next_reply`] is the precise fault behind retried
//! requests: the request reaches the server and is applied, the first
//! bytes the server sends back are thrown away, and the proxy cuts, so
//! the caller never learns that its request succeeded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Task;

#[derive(Debug)]
struct State {
    target: SocketAddr,
    cut: AtomicBool,
    /// Bumped on every cut: live connections watch it and close.
    epoch: watch::Sender<u64>,
    lose_next_reply: AtomicBool,
    lost_replies: AtomicU64,
    accepted: AtomicU64,
}

impl State {
    fn cut_now(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// A proxy listening on an ephemeral 127.0.0.1 port; dropping it closes
/// its listener and every connection through it.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    _task: Task,
}

impl Proxy {
    /// Starts forwarding connections on a new port to `target`.
    pub fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = crate::bind(0)?;
        let addr = listener.local_addr()?;
        let (epoch, _) = watch::channel(0);
        let state = Arc::new(State {
            target,
            cut: AtomicBool::new(false),
            epoch,
            lose_next_reply: AtomicBool::new(false),
            lost_replies: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let task = Task::spawn(accept_loop(listener, state.clone()));
        Ok(Proxy {
            addr,
            state,
            _task: task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions the server: closes every connection through the proxy
    /// and every new one until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.cut_now();
    }

    /// Heals the partition: new connections are forwarded again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Drops the next bytes the server sends and cuts at that moment: the
    /// request that caused them was handled, its reply is lost. The proxy
    /// stays cut until [`Proxy::restore`].
    pub fn lose_next_reply(&self) {
        self.state.lose_next_reply.store(true, Ordering::SeqCst);
    }

    /// Replies thrown away by [`Proxy::lose_next_reply`] so far.
    pub fn lost_replies(&self) -> u64 {
        self.state.lost_replies.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (including those refused while cut):
    /// how a test sees that a client reconnected to retry.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connections belong to this task: dropping the proxy ends them.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        // Watch for cuts before looking at the flag: a cut that comes
        // after the look bumps the epoch after this subscription, so the
        // connection sees it.
        let epoch = state.epoch.subscribe();
        if state.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        conns.spawn(pipe(client, epoch, state.clone()));
    }
}

async fn pipe(client: TcpStream, mut epoch: watch::Receiver<u64>, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(state.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::io::copy(&mut cr, &mut sw);
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if state.lose_next_reply.swap(false, Ordering::SeqCst) {
                state.lost_replies.fetch_add(1, Ordering::SeqCst);
                state.cut_now();
                return;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first (or a cut) closes both connections.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = epoch.changed() => {}
    }
}
