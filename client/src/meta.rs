//! The metadata client of one mount: a session with the metadata server
//! that owns the file system, remounted when that server restarted, moved
//! to the new owner when the file system moved (the control plane says
//! where), and calls that ride out an outage or a failover as a stall
//! instead of an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cpfs_runtime::retry;

use cpfs_proto::meta::{
    errno, Caller, MetaClient as Connection, MetaOp, MetaReply, MetaRequest, MountRoot, Mounted,
    RequestId,
};

/// How long a metadata call waits for an unreachable service (a restart of
/// `cpfs serve`) before it fails with EIO.
const META_OUTAGE: Duration = Duration::from_secs(15);
/// Delays between its attempts, with the shared policy: from 50 ms,
/// doubling to a second, jittered so the mounts of a restarted service do
/// not come back in step.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(1);

/// Asks the control plane where the file system's metadata server is now.
pub type Locator =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// The metadata connection of one mount, remounting its session when the
/// metadata service restarted or the file system moved.
pub struct MetaClient {
    rpc: RwLock<Arc<Connection>>,
    locate: Option<Locator>,
    domain: String,
    /// The subtree the mount is confined to (an access point or a path).
    root: RwLock<Option<MountRoot>>,
    session: AtomicU64,
    /// One remount at a time: calls that all found the session gone share
    /// the one new session instead of each opening its own (a handle
    /// reopened in one of them would be unknown to the next).
    remount: tokio::sync::Mutex<()>,
    /// This client's half of every request id (see [`RequestId`]).
    client: u64,
    /// The other half, one per operation, kept across its retries.
    seq: AtomicU64,
    /// Directories' attributes from this client's changes.
    pub dirs: crate::dir_attrs::DirAttrs,
    /// When each directory last changed, as this client knows.
    pub changes: crate::dir_changes::DirChanges,
    /// Directories delegated to this client, and their names.
    pub names: crate::dir_names::DirNames,
    /// Counts this client's calls that may have changed something, each
    /// once it ended (see [`MetaClient::mutations`]).
    mutations: AtomicU64,
    /// A Watch failed on the way since this was last taken: its answer,
    /// sent once by the service, may be lost.
    watch_failed: std::sync::atomic::AtomicBool,
}

impl MetaClient {
    pub fn new(address: &str, domain: &str) -> Arc<MetaClient> {
        Self::located(address, domain, None)
    }

    /// A client that follows the file system when it moves to another
    /// metadata server, asking `locate` where it went.
    pub fn located(address: &str, domain: &str, locate: Option<Locator>) -> Arc<MetaClient> {
        Arc::new(MetaClient {
            rpc: RwLock::new(Arc::new(Connection::reserved(address))),
            locate,
            domain: domain.to_string(),
            root: RwLock::new(None),
            session: AtomicU64::new(0),
            remount: tokio::sync::Mutex::new(()),
            client: rand::random(),
            seq: AtomicU64::new(1),
            dirs: Default::default(),
            changes: Default::default(),
            names: Default::default(),
            mutations: AtomicU64::new(0),
            watch_failed: Default::default(),
        })
    }

    /// Confines every session this client opens from now on to `root`
    /// (set before the first mount).
    pub fn set_root(&self, root: Option<MountRoot>) {
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = root;
    }

    fn rpc(&self) -> Arc<Connection> {
        self.rpc.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks where the file system is served now and, when that changed,
    /// talks to the new server from here on.
    async fn relocate(&self) {
        let Some(locate) = &self.locate else {
            return;
        };
        match locate().await {
            Ok(address) if address != self.rpc().address() => {
                tracing::info!(%address, "the file system is served elsewhere now; following it");
                *self.rpc.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(Connection::reserved(&address));
                self.session.store(0, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the control plane where the file system is")
            }
        }
    }

    /// Mounts (opens a session), waiting up to [`META_OUTAGE`] while the
    /// service is unreachable or the file system is between servers.
    pub async fn mount(&self) -> Result<Mounted, (i32, String)> {
        let deadline = tokio::time::Instant::now() + META_OUTAGE;
        let mut delays = retry::delays(RETRY_FIRST, RETRY_CAP);
        loop {
            let failure = match self.mount_once().await {
                Ok(m) => return Ok(m),
                Err((errno::EMOVED, why)) | Err((errno::EIO, why)) => (errno::EIO, why),
                Err(refused) => return Err(refused),
            };
            let backoff = delays.next().unwrap_or(RETRY_CAP);
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(failure);
            }
            tokio::time::sleep(backoff).await;
            self.relocate().await;
        }
    }

    /// Replaces `stale`, the session a call found gone (or none, after a
    /// move), unless another call replaced it already.
    async fn remount(&self, stale: u64) -> Result<(), (i32, String)> {
        let _one = self.remount.lock().await;
        let current = self.session.load(Ordering::Acquire);
        if current != stale && current != 0 {
            return Ok(());
        }
        self.mount_once().await.map(|_| ())
    }

    async fn mount_once(&self) -> Result<Mounted, (i32, String)> {
        let rpc = self.rpc();
        let req = MetaRequest {
            session: 0,
            caller: Caller {
                uid: 0,
                gid: 0,
                groups: vec![],
            },
            op: match self.root.read().unwrap_or_else(|p| p.into_inner()).clone() {
                None => MetaOp::Mount {
                    domain: self.domain.clone(),
                },
                Some(root) => MetaOp::MountAt {
                    domain: self.domain.clone(),
                    root,
                },
            },
            id: None,
        };
        match rpc.call(req).await {
            Ok(MetaReply::Mounted(m)) => {
                // Changes made while this client had no session were not
                // sent to it.
                self.changes.clear();
                self.names.clear();
                self.session.store(m.session, Ordering::Release);
                Ok(m)
            }
            Ok(MetaReply::Err { errno, message }) => Err((errno, message)),
            Ok(other) => Err((errno::EIO, format!("unexpected reply {other:?}"))),
            Err(e) => Err((
                errno::EIO,
                format!("metadata service at {}: {e}", rpc.address()),
            )),
        }
    }

    /// One call; errors come back as an errno. While the service is
    /// unreachable (a restart) the call waits, up to [`META_OUTAGE`]: the
    /// program sees a stall, not EIO. Every attempt carries the same request
    /// id, so an attempt whose answer was lost is not applied twice.
    pub async fn call(&self, caller: &Caller, op: MetaOp) -> Result<MetaReply, i32> {
        let since = self.changes.generation();
        let sent = std::time::Instant::now();
        let breaks = self.rpc().breaks();
        let (result, delegated_ms) = self.call_with_retries(caller, &op).await;
        self.changes.after(&op);
        let outcome = crate::dir_names::Outcome {
            result: &result,
            sent,
            breaks,
            delegated_ms,
        };
        let touch = crate::dir_names::Touch::of(&op);
        let now = std::time::Instant::now();
        self.names
            .after(touch, caller, outcome, &self.changes, since, now);
        if !reads_only(&op) {
            self.mutations.fetch_add(1, Ordering::Release);
        }
        result
    }

    /// How many of this client's calls that may change something have
    /// ended: unchanged between two points, nothing this client did
    /// changed the namespace in between (what a listing read before may
    /// still be served for).
    /// Whether a Watch failed on the way since the last time this was
    /// asked (then whatever changes it carried count as lost).
    pub fn take_watch_failure(&self) -> bool {
        self.watch_failed.swap(false, Ordering::AcqRel)
    }

    /// Whether `who` may be told here that `parent` holds no `name` (a
    /// directory delegated to this client, dir_names.rs).
    pub fn known_absent(&self, parent: u64, name: &[u8], who: &Caller) -> bool {
        let breaks = self.rpc().breaks();
        self.names
            .absent(parent, name, who, std::time::Instant::now(), breaks)
    }

    /// The count of broken connections to the service so far.
    pub fn breaks(&self) -> u64 {
        self.rpc().breaks()
    }

    pub fn mutations(&self) -> u64 {
        self.mutations.load(Ordering::Acquire)
    }

    /// The answer, and for how long (ms from the call's sending) a
    /// directory the call made is delegated to this client (0: not).
    async fn call_with_retries(
        &self,
        caller: &Caller,
        op: &MetaOp,
    ) -> (Result<MetaReply, i32>, u32) {
        match self.call_once_or_retry(caller, op).await {
            Ok((reply, delegated_ms)) => (Ok(reply), delegated_ms),
            Err(e) => (Err(e), 0),
        }
    }

    async fn call_once_or_retry(
        &self,
        caller: &Caller,
        op: &MetaOp,
    ) -> Result<(MetaReply, u32), i32> {
        let deadline = tokio::time::Instant::now() + META_OUTAGE;
        let mut remounts = 0;
        let mut delays = retry::delays(RETRY_FIRST, RETRY_CAP);
        let id = RequestId {
            client: self.client,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        self.dirs.before(op);
        loop {
            let session = self.session.load(Ordering::Acquire);
            let req = MetaRequest {
                session,
                caller: caller.clone(),
                op: op.clone(),
                id: Some(id),
            };
            match self.rpc().call(req).await {
                Ok(MetaReply::Err {
                    errno: errno::ESTALE,
                    ..
                }) => {
                    // The service forgot the session (it restarted, or the
                    // session's lease ran out), or it is another server's
                    // (the file system moved while this call was under
                    // way). Mounting again is retried until the deadline,
                    // as any outage: a move is a stall, never an error. A
                    // server that will not take this host refuses the mount
                    // itself, and that refusal is returned.
                    remounts += 1;
                    match self.remount(session).await {
                        // The first retries go at once, later ones (a
                        // session racing a move) after the backoff below.
                        Ok(()) if remounts <= 2 => continue,
                        Ok(()) => {}
                        // Unreachable or between servers: retried below.
                        Err((errno::EIO, _)) | Err((errno::EMOVED, _)) => {}
                        // Refused (an access rule changed, or this host
                        // may not use the port it connects from): say why.
                        Err((errno, message)) => {
                            tracing::warn!(errno, message, "mounting again was refused");
                            return Err(errno);
                        }
                    }
                }
                Ok(MetaReply::Err {
                    errno: errno::EMOVED,
                    ..
                }) => {
                    // The file system moved (or is moving): ask where, and
                    // open a session there.
                    self.relocate().await;
                    if self.remount(session).await.is_ok() {
                        continue;
                    }
                }
                Ok(MetaReply::Err { errno, message }) => {
                    tracing::debug!(errno, message, "metadata refused");
                    return Err(errno);
                }
                Ok(MetaReply::Changed {
                    dirs,
                    reply,
                    delegated_ms,
                }) => {
                    self.dirs.note(dirs);
                    return Ok((*reply, delegated_ms));
                }
                Ok(r) => return Ok((r, 0)),
                Err(e) => {
                    if matches!(op, MetaOp::Watch { .. }) {
                        // The answer may have been lost on the way, with
                        // recalls in it that the next Watch acknowledges:
                        // no answer from delegations until the invalidator
                        // has dropped everything (take_watch_failure).
                        self.names.clear();
                        self.watch_failed.store(true, Ordering::Release);
                    }
                    tracing::warn!(error = %e, "metadata service unreachable; retrying");
                    self.relocate().await;
                }
            }
            let backoff = delays.next().unwrap_or(RETRY_CAP);
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(errno::EIO);
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Calls that change nothing in the namespace.
fn reads_only(op: &MetaOp) -> bool {
    matches!(
        op,
        MetaOp::Lookup { .. }
            | MetaOp::GetAttr { .. }
            | MetaOp::Readlink { .. }
            | MetaOp::Access { .. }
            | MetaOp::ReadDir { .. }
            | MetaOp::ReadDirPlus { .. }
            | MetaOp::StatFs
            | MetaOp::GetXattr { .. }
            | MetaOp::ListXattr { .. }
            | MetaOp::GetStripe { .. }
            | MetaOp::ChainTable
            | MetaOp::Watch { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpfs_proto::frame::{encode_frame, read_frame};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// The first attempt reaches the service, which then dies before it
    /// answers; the retry must carry the same request id (so the service
    /// can tell it was applied), and the next operation a new one.
    #[tokio::test]
    async fn a_retry_carries_the_request_id_of_its_first_attempt() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = tokio::spawn(async move {
            let mut seen = Vec::new();
            // Connection 1: take the request, drop the connection unanswered.
            let (mut c, _) = listener.accept().await.unwrap();
            let (_, req): (u64, MetaRequest) = read_frame(&mut c).await.unwrap();
            seen.push(req.id);
            drop(c);
            // Connection 2: the retry, then the next operation, answered.
            let (mut c, _) = listener.accept().await.unwrap();
            for _ in 0..2 {
                let (n, req): (u64, MetaRequest) = read_frame(&mut c).await.unwrap();
                seen.push(req.id);
                let frame = encode_frame(n, &MetaReply::Done).unwrap();
                c.write_all(&frame).await.unwrap();
            }
            seen
        });
        let meta = MetaClient::new(&address, "test");
        let who = Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let unlink = || MetaOp::Unlink {
            parent: 1,
            name: b"f".to_vec(),
        };
        assert!(matches!(
            meta.call(&who, unlink()).await,
            Ok(MetaReply::Done)
        ));
        assert!(matches!(
            meta.call(&who, unlink()).await,
            Ok(MetaReply::Done)
        ));
        let seen = service.await.unwrap();
        assert!(seen.iter().all(Option::is_some), "{seen:?}");
        assert_eq!(seen[0], seen[1], "the retry changed its id");
        assert_ne!(seen[1], seen[2], "two operations shared an id");
    }

    /// Calls that all find the session gone (a restarted service) share one
    /// new session: a handle one of them reopened must be known to the
    /// session the next call uses.
    #[tokio::test]
    async fn calls_that_find_the_session_gone_remount_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mounts = Arc::new(AtomicU64::new(0));
        let counted = mounts.clone();
        tokio::spawn(async move {
            let (c, _) = listener.accept().await.unwrap();
            let (mut rd, wr) = c.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            // The client's session (none yet) is not the service's.
            let current = Arc::new(AtomicU64::new(1));
            loop {
                let Ok((n, req)) = read_frame::<_, MetaRequest>(&mut rd).await else {
                    return;
                };
                let (wr, current, counted) = (wr.clone(), current.clone(), counted.clone());
                // Answered concurrently, a mount slower than the rest.
                tokio::spawn(async move {
                    let reply = match req.op {
                        MetaOp::Mount { .. } => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let session = 100 + counted.fetch_add(1, Ordering::SeqCst);
                            current.store(session, Ordering::SeqCst);
                            MetaReply::Mounted(Mounted {
                                session,
                                fs: "fs".into(),
                                root: cpfs_proto::meta::Attr {
                                    ino: 1,
                                    kind: cpfs_proto::meta::Kind::Dir,
                                    perm: 0o755,
                                    nlink: 2,
                                    uid: 0,
                                    gid: 0,
                                    size: 0,
                                    stored: 0,
                                    atime_ns: 0,
                                    mtime_ns: 0,
                                    ctime_ns: 0,
                                    rdev: 0,
                                },
                                chain_table: Default::default(),
                            })
                        }
                        _ if req.session == current.load(Ordering::SeqCst) => MetaReply::Done,
                        _ => MetaReply::Err {
                            errno: errno::ESTALE,
                            message: "unknown session; mount again".into(),
                        },
                    };
                    let frame = encode_frame(n, &reply).unwrap();
                    wr.lock().await.write_all(&frame).await.unwrap();
                });
            }
        });
        let meta = MetaClient::new(&address, "test");
        let who = Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (meta, who) = (meta.clone(), who.clone());
                tokio::spawn(async move { meta.call(&who, MetaOp::StatFs).await })
            })
            .collect();
        for c in calls {
            assert!(matches!(c.await.unwrap(), Ok(MetaReply::Done)));
        }
        assert_eq!(
            mounts.load(Ordering::SeqCst),
            1,
            "each call mounted its own session"
        );
    }
}
