//! The metadata service: the only owner of every file system's namespace
//! (inodes, directory entries, extended attributes, counters, layouts) in
//! the sqlx store, POSIX checks against the caller's identity, and
//! capabilities for the nodes.
//!
//! - [`lifecycle`]: provisioning, dropping and measuring a namespace (the
//!   reconciler's and billing's way in).
//! - [`policy`]: what the control plane tells it about mount targets.
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
pub mod identity;
mod inode;
mod journal;
pub mod lifecycle;
mod ns;
pub mod ownership;
pub mod perm;
pub mod policy;
pub mod server;
pub mod watch;

#[cfg(test)]
mod capacity_tests;
#[cfg(test)]
mod exactly_once_tests;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod reload_tests;

use std::collections::HashMap;
use std::sync::Arc;

use cpfs_proto::capability::CapabilityKey;
use cpfs_store::Store;

pub use server::{serve, serve_until, Collector};

/// A mounted client: which file system, bought how large.
#[derive(Debug, Clone)]
pub struct Session {
    /// Given when the session is added (0 before).
    pub id: u64,
    pub fs: String,
    pub capacity_bytes: u64,
    pub domain: String,
    /// The client's address: access rules are matched against it.
    pub peer: std::net::IpAddr,
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
    sessions: std::sync::RwLock<HashMap<u64, Session>>,
    /// What each session has seen, and what others changed of it.
    pub watchers: watch::Watchers,
    /// Open handles per (fs, inode), per session: an unlinked inode keeps
    /// its data while any client holds it open, and a session releases and
    /// writes through only the handles it opened itself.
    open: std::sync::Mutex<HashMap<(String, u64), HashMap<u64, Handles>>>,
    /// The namespaces of the file systems in use.
    shards: ns::shard::Shards,
    /// How long the capabilities it issues last, in seconds.
    capability_secs: std::sync::atomic::AtomicI64,
}

/// One session's open handles of one inode.
#[derive(Debug, Default, Clone, Copy)]
struct Handles {
    all: u32,
    writable: u32,
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

impl MetaService {
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
            watchers: watch::Watchers::default(),
            open: std::sync::Mutex::new(HashMap::new()),
            capability_secs: CAPABILITY_SECS.into(),
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

    pub fn session(&self, id: u64) -> Option<Session> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn add_session(&self, mut s: Session) -> u64 {
        let id = rand::random::<u64>() | 1;
        s.id = id;
        self.watchers.add(id, &s.fs);
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, s);
        id
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

    /// Forgets one handle of `s` (a writable one when `writable`); handles
    /// of other sessions are not its to release.
    fn released(&self, s: &Session, ino: u64, writable: bool) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = (s.fs.clone(), ino);
        let Some(by) = open.get_mut(&key) else {
            return;
        };
        if let Some(h) = by.get_mut(&s.id) {
            h.all = h.all.saturating_sub(1);
            if writable {
                h.writable = h.writable.saturating_sub(1);
            }
            h.writable = h.writable.min(h.all);
            if h.all == 0 {
                by.remove(&s.id);
            }
        }
        if by.is_empty() {
            open.remove(&key);
        }
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
