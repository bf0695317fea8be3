//! The metadata service: the only owner of every file system's namespace
//! (inodes, directory entries, extended attributes, counters, layouts) in
//! the sqlx store, POSIX checks against the caller's identity, and
//! capabilities for the nodes.
//!
//! - [`lifecycle`]: provisioning, dropping and measuring a namespace (the
//!   reconciler's and billing's way in).
//! - [`policy`]: what the control plane tells it about mount targets and
//!   quotas; [`quota_view`]: what the control plane reads of their usage.
//! - [`identity`]: who a caller may act as: the mount grant (access
//!   rules, squashing) and the identity (LDAP).
//! - [`perm`]: POSIX permission checks.
//! - `ns`: the namespace of each file system in memory and the operations
//!   on it; `journal`: how its changes reach the store, group-committed;
//!   [`server`]: the protocol handler.
//!
//! An operation is answered once its changes are committed, and each
//! operation's rows commit in one transaction with its request record, so
//! a crash leaves the namespace as it was before or after the operation,
//! never between; after a restart the namespace is loaded from the store.

mod caps;
mod confine;
pub mod identity;
mod inode;
mod journal;
pub mod lifecycle;
mod ns;
pub mod ownership;
pub mod perm;
pub mod policy;
pub mod quota_view;
pub mod server;
mod sessions;
pub mod watch;

#[cfg(test)]
mod capacity_tests;
#[cfg(test)]
mod confine_tests;
#[cfg(test)]
mod exactly_once_tests;
#[cfg(test)]
mod fileset_tests;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod owner_quota_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod session_tests;

use std::collections::HashMap;
use std::sync::Arc;

use cpfs_proto::capability::CapabilityKey;
use cpfs_store::Store;

pub use ns::filesets::SYNC_PERIOD as QUOTA_SYNC_PERIOD;
pub use server::{serve, serve_until, Collector};
pub use sessions::PUBLISH_PERIOD as SESSION_PUBLISH_PERIOD;

/// A mounted client: which file system, bought how large.
#[derive(Debug, Clone)]
pub struct Session {
    /// Given when the session is added (0 before).
    pub id: u64,
    pub fs: String,
    pub capacity_bytes: u64,
    pub domain: String,
    /// The client's address: access rules are matched against it, and
    /// only requests from it may use the session.
    pub peer: std::net::IpAddr,
    /// The rule that admitted the mount requires a privileged source port
    /// on every request (no `InsecurePorts`).
    pub privileged_only: bool,
    /// The directory the mount sees as its root (inode 1): the file
    /// system's root, or the subtree of an access point or a path
    /// (`confine.rs`).
    pub root: u64,
    /// The access point it mounted through, if any.
    pub access_point: Option<String>,
}

/// A session as the service keeps it: when it was last used, for its lease
/// (milliseconds since the service's `epoch`, so that a request renews it
/// under the map's read lock).
struct Live {
    session: Session,
    used_ms: std::sync::atomic::AtomicU64,
    /// When it mounted (unix seconds).
    mounted_at: i64,
}

pub struct MetaService {
    pub store: Store,
    /// Mount targets' rules and LDAP configurations (the control plane).
    policies: Arc<dyn policy::PolicySource>,
    pub key: CapabilityKey,
    pub identity_settings: identity::IdentitySettings,
    access: identity::AccessCache,
    /// Counters of the metadata protocol's service shell.
    pub service_stats: Arc<cpfs_proto::rpc::ServiceStats>,
    sessions: std::sync::RwLock<HashMap<u64, Live>>,
    /// A session unused for this long expires (see [`MetaService::expire_sessions`]).
    session_lease: std::sync::RwLock<std::time::Duration>,
    /// What sessions' use times count from.
    epoch: std::time::Instant,
    /// What each session has seen, and what others changed of it.
    pub watchers: watch::Watchers,
    /// Open handles per (fs, inode), per session: an unlinked inode keeps
    /// its data while any client holds it open, and a session releases and
    /// writes through only the handles it opened itself.
    open: std::sync::Mutex<HashMap<(String, u64), HashMap<u64, Handles>>>,
    /// Files (fs, ino) that sessions which ended had set capacity aside
    /// for, with how far it reached: their data past the file's end is
    /// cut and the capacity given back by the collector's next pass
    /// (`settle_tails`).
    tails: std::sync::Mutex<HashMap<(String, u64), u64>>,
    /// Files whose tail was cut after an eviction, with where the cut
    /// began: a record of the evicted client's writes past it is refused
    /// (`Written` with `resumed`). At most [`MAX_LOST`], for an hour each.
    lost: std::sync::Mutex<HashMap<(String, u64), (u64, std::time::Instant)>>,
    /// Woken when the collector stops cutting a file's tail.
    cut_done: tokio::sync::Notify,
    /// The namespaces of the file systems in use.
    shards: ns::shard::Shards,
    /// How long the capabilities it issues last, in seconds.
    capability_secs: std::sync::atomic::AtomicI64,
    /// Filesets that could not be bound, with why (logged once per reason).
    fileset_failures: std::sync::Mutex<HashMap<String, String>>,
    /// Names this service's rows of `meta_sessions` (sessions.rs).
    publisher: String,
    /// Requests by kind, with their latencies (reported with heartbeats).
    pub ops: cpfs_proto::telemetry::OpTable,
}

/// How many files cut after evictions are remembered, and for how long
/// (an evicted client that comes back later records over zeros).
const MAX_LOST: usize = 10_000;
const LOST_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The session id under which the collector holds a file while it cuts
/// its tail (`begin_cut`); sessions' ids are odd.
const CUTTER: u64 = 0;

/// One session's open handles of one inode.
#[derive(Debug, Default, Clone, Copy)]
struct Handles {
    all: u32,
    writable: u32,
    /// How far its writes to the inode have capacity set aside
    /// (`MetaOp::Reserve`), held while it holds a writable handle.
    reserved: u64,
}

/// Why the metadata service could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// An errno and what to log about it.
pub type Failure = (i32, String);
pub type Res<T> = Result<T, Failure>;

pub fn fail<T>(errno: i32, msg: impl Into<String>) -> Res<T> {
    Err((errno, msg.into()))
}

/// How long a capability lasts by default: clients renew theirs while
/// they hold a file open ([`cpfs_proto::meta::MetaOp::Renew`]), so the
/// lifetime bounds how long a capability outlives a change of the grant
/// behind it where no revocation reaches the nodes.
pub const CAPABILITY_SECS: i64 = 300;

/// How long a session lives unused by default. A mount keeps a Watch
/// outstanding (each returns within [`watch::MAX_WAIT`]), so a live mount
/// uses its session far more often than this; a client that went away
/// loses its session, and with it the open handles that pin deleted files.
pub const SESSION_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

impl MetaService {
    /// What this server reports with its heartbeats: operations by kind,
    /// sessions, and the journal's group commit.
    pub fn telemetry(&self) -> cpfs_proto::telemetry::MetaTelemetry {
        use std::sync::atomic::Ordering::Relaxed;
        let journal = &self.shards.journal.stats;
        cpfs_proto::telemetry::MetaTelemetry {
            ops: self.ops.snapshot(),
            sessions: self.sessions.read().map_or(0, |s| s.len() as u64),
            journal_commits: journal.commits.load(Relaxed),
            journal_entries: journal.entries.load(Relaxed),
            caches: {
                let c = &self.access.stats;
                vec![
                    (
                        "grant".to_string(),
                        c.grant_hits.load(Relaxed),
                        c.grant_misses.load(Relaxed),
                    ),
                    (
                        "identity".to_string(),
                        c.identity_hits.load(Relaxed),
                        c.identity_misses.load(Relaxed),
                    ),
                ]
            },
        }
    }

    pub fn new(
        store: Store,
        policies: Arc<dyn policy::PolicySource>,
        key: CapabilityKey,
        identity_settings: identity::IdentitySettings,
    ) -> Result<Arc<MetaService>, MetaError> {
        let journal = journal::Journal::start(&store)?;
        Ok(Arc::new(MetaService {
            shards: ns::shard::Shards::new(store.pool.clone(), journal),
            store,
            policies,
            key,
            identity_settings,
            access: identity::AccessCache::default(),
            service_stats: Default::default(),
            sessions: std::sync::RwLock::new(HashMap::new()),
            session_lease: std::sync::RwLock::new(SESSION_LEASE),
            epoch: std::time::Instant::now(),
            watchers: watch::Watchers::default(),
            open: std::sync::Mutex::new(HashMap::new()),
            tails: std::sync::Mutex::new(HashMap::new()),
            cut_done: tokio::sync::Notify::new(),
            lost: std::sync::Mutex::new(HashMap::new()),
            capability_secs: CAPABILITY_SECS.into(),
            fileset_failures: Default::default(),
            publisher: format!("{:016x}", rand::random::<u64>()),
            ops: cpfs_proto::telemetry::OpTable::new(&cpfs_proto::meta::META_OP_NAMES),
        }))
    }

    /// Sets how long the capabilities it issues from now on last (at least
    /// a second; `cpfs serve`/`cpfs meta --capability-secs`).
    pub fn set_capability_lifetime(&self, lifetime: std::time::Duration) {
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX).max(1);
        self.capability_secs
            .store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on this server serves only the file systems the control
    /// plane assigns it, under a lease ([`ownership::LeaseKeeper`] renews
    /// it). Until the first heartbeat it serves none.
    pub fn serve_by_lease(&self) -> Arc<ownership::Ownership> {
        self.shards
            .ownership
            .get_or_init(|| Arc::new(ownership::Ownership::default()))
            .clone()
    }

    /// Sets how long a session lives unused (`--session-lease-secs`; at
    /// least a second).
    pub fn set_session_lease(&self, lease: std::time::Duration) {
        *self
            .session_lease
            .write()
            .unwrap_or_else(|p| p.into_inner()) = lease.max(std::time::Duration::from_secs(1));
    }

    /// Session `id`, as used by a request from `peer` now (which renews its
    /// lease). A session is not a bearer token: a request from another
    /// address, or from an unprivileged port where the rule wants a
    /// privileged one, gets nothing, exactly as for an id never issued.
    pub fn session(&self, id: u64, peer: std::net::SocketAddr) -> Option<Session> {
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        let live = sessions.get(&id)?;
        let s = &live.session;
        if s.peer != identity::client_ip(peer.ip()) {
            tracing::debug!(session = id, %peer, owner = %s.peer, "session used from another address; refused");
            return None;
        }
        if s.privileged_only && peer.port() >= policy::PRIVILEGED_PORTS {
            tracing::debug!(session = id, %peer, "session used from an unprivileged port; refused");
            return None;
        }
        live.used_ms.fetch_max(
            self.ms_since_epoch(std::time::Instant::now()),
            std::sync::atomic::Ordering::Relaxed,
        );
        Some(live.session.clone())
    }

    fn add_session(&self, mut s: Session) -> u64 {
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        // Ids are random, so that one cannot be guessed from another; 0
        // means "none" on the wire.
        let mut id = rand::random::<u64>() | 1;
        while sessions.contains_key(&id) {
            id = rand::random::<u64>() | 1;
        }
        s.id = id;
        self.watchers.add(id, &s.fs);
        sessions.insert(
            id,
            Live {
                session: s,
                used_ms: self.ms_since_epoch(std::time::Instant::now()).into(),
                mounted_at: ns::t_secs(),
            },
        );
        id
    }

    fn ms_since_epoch(&self, t: std::time::Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Returns once every change committed so far is in the store's
    /// namespace tables, not only in the journal's log (the log is folded
    /// behind the commits), or after the journal's settle wait.
    pub async fn folded(&self) {
        self.shards.journal.settled().await
    }

    /// How many sessions are live (for tests and status).
    pub fn session_count(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Ends the sessions whose lease ran out by `now` (the collector
    /// passes the current time; tests pass a later one): each one's open
    /// handles are released, so the files it held open after they were
    /// deleted can be collected, its watcher is dropped and its id
    /// forgotten; the client remounts on its next call. A session with a
    /// Watch outstanding is in use. How many ended.
    pub fn expire_sessions(&self, now: std::time::Instant) -> usize {
        let lease = *self.session_lease.read().unwrap_or_else(|p| p.into_inner());
        let now_ms = self.ms_since_epoch(now);
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<u64> = {
            let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<u64> = sessions
                .iter()
                .filter(|(id, l)| {
                    let used = l.used_ms.load(std::sync::atomic::Ordering::Relaxed);
                    now_ms.saturating_sub(used) > lease_ms && !self.watchers.waiting(**id)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                if let Some(l) = sessions.remove(id) {
                    tracing::info!(session = id, fs = %l.session.fs, peer = %l.session.peer, "session lease expired");
                }
            }
            ids
        };
        if expired.is_empty() {
            return 0;
        }
        let gone: std::collections::HashSet<u64> = expired.iter().copied().collect();
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let mut ended = Vec::new();
            open.retain(|key, by| {
                by.retain(|session, h| {
                    if !gone.contains(session) {
                        return true;
                    }
                    if h.reserved > 0 {
                        ended.push((key.clone(), h.reserved));
                    }
                    false
                });
                !by.is_empty()
            });
            let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
            for (key, end) in ended {
                let e = tails.entry(key).or_default();
                *e = (*e).max(end);
            }
        }
        for id in &expired {
            self.watchers.remove(*id);
        }
        expired.len()
    }

    fn opened(&self, s: &Session, ino: u64, writable: bool) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let h = open
            .entry((s.fs.clone(), ino))
            .or_default()
            .entry(s.id)
            .or_default();
        h.all += 1;
        h.writable += u32::from(writable);
    }

    /// Notes that `s` has capacity set aside for `ino` up to `upto`; false
    /// when it holds no writable handle of it any more (released while
    /// the reservation was made), and so none is kept.
    fn note_reserved(&self, s: &Session, ino: u64, upto: u64) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open
            .get_mut(&(s.fs.clone(), ino))
            .and_then(|by| by.get_mut(&s.id))
        {
            Some(h) if h.writable > 0 => {
                h.reserved = h.reserved.max(upto);
                true
            }
            _ => false,
        }
    }

    /// Holds `ino` for the collector while it cuts the file's tail, unless
    /// a session holds it open for writing (its writes may be going past
    /// the end now). While held, growths and truncates of the file wait
    /// (`after_cut`): decided under the lock that opens take, so a writer
    /// opening after this waits, and one that opened before is seen.
    fn begin_cut(&self, fs: &str, ino: u64) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let by = open.entry((fs.to_string(), ino)).or_default();
        if by.values().any(|h| h.writable > 0) || by.contains_key(&CUTTER) {
            return false;
        }
        by.insert(
            CUTTER,
            Handles {
                all: 1,
                ..Default::default()
            },
        );
        true
    }

    fn end_cut(&self, fs: &str, ino: u64) {
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let key = (fs.to_string(), ino);
            if let Some(by) = open.get_mut(&key) {
                by.remove(&CUTTER);
                if by.is_empty() {
                    open.remove(&key);
                }
            }
        }
        self.cut_done.notify_waiters();
    }

    /// Remembers that `ino`'s data from `from` on was cut after an
    /// eviction.
    fn note_lost(&self, fs: &str, ino: u64, from: u64) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        lost.retain(|_, (_, at)| now.duration_since(*at) < LOST_KEPT);
        if lost.len() < MAX_LOST {
            lost.insert((fs.to_string(), ino), (from, now));
        }
    }

    /// Whether a record of writes up to `size` made under an earlier
    /// session reaches into data cut after an eviction.
    fn lost_to_eviction(&self, fs: &str, ino: u64, size: u64) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.get(&(fs.to_string(), ino))
            .is_some_and(|(from, at)| size > *from && at.elapsed() < LOST_KEPT)
    }

    /// Waits while the collector cuts `ino`'s tail.
    async fn after_cut(&self, fs: &str, ino: u64) {
        loop {
            let done = self.cut_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let cutting = self
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(fs.to_string(), ino))
                .is_some_and(|by| by.contains_key(&CUTTER));
            if !cutting {
                return;
            }
            done.await;
        }
    }

    /// The farthest any session still has capacity set aside for `ino`.
    fn reserved_by_any(&self, fs: &str, ino: u64) -> u64 {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(fs.to_string(), ino))
            .map_or(0, |by| by.values().map(|h| h.reserved).max().unwrap_or(0))
    }

    /// When `s` has capacity set aside for `ino`: what the other sessions
    /// have (the floor a give-back of its own must keep).
    fn reserved_by_others(&self, s: &Session, ino: u64) -> Option<u64> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let by = open.get(&(s.fs.clone(), ino))?;
        by.get(&s.id).filter(|h| h.reserved > 0)?;
        Some(
            by.iter()
                .filter(|(id, _)| **id != s.id)
                .map(|(_, h)| h.reserved)
                .max()
                .unwrap_or(0),
        )
    }

    /// Notes that what `s` had set aside for `ino` was given back (by its
    /// truncate).
    fn note_given_back(&self, s: &Session, ino: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = open
            .get_mut(&(s.fs.clone(), ino))
            .and_then(|by| by.get_mut(&s.id))
        {
            h.reserved = 0;
        }
    }

    /// Forgets one handle of `s` (a writable one when `writable`); handles
    /// of other sessions are not its to release. True when this was the
    /// session's last writable handle of a file it had set capacity aside
    /// for, which is then to be given back.
    fn released(&self, s: &Session, ino: u64, writable: bool) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = (s.fs.clone(), ino);
        let Some(by) = open.get_mut(&key) else {
            return false;
        };
        let mut unreserved = false;
        if let Some(h) = by.get_mut(&s.id) {
            h.all = h.all.saturating_sub(1);
            if writable {
                h.writable = h.writable.saturating_sub(1);
            }
            h.writable = h.writable.min(h.all);
            if h.writable == 0 && h.reserved > 0 {
                h.reserved = 0;
                unreserved = true;
            }
            if h.all == 0 {
                by.remove(&s.id);
            }
        }
        if by.is_empty() {
            open.remove(&key);
        }
        unreserved
    }

    /// Whether session `s` holds `ino` open.
    fn holds(&self, s: &Session, ino: u64) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(s.fs.clone(), ino))
            .is_some_and(|by| by.contains_key(&s.id))
    }

    /// Whether session `s` holds `ino` open for writing.
    fn holds_writable(&self, s: &Session, ino: u64) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(s.fs.clone(), ino))
            .and_then(|by| by.get(&s.id))
            .is_some_and(|h| h.writable > 0)
    }

    pub fn is_open(&self, fs: &str, ino: u64) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(fs.to_string(), ino))
    }
}
