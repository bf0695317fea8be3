//! Telling mounted clients what other clients changed, so that their
//! kernels may cache entries and attributes for long (see
//! `client/src/fuse/invalidate.rs` for the other end).
//!
//! Each session has a watcher: the inodes the session has seen (named in
//! one of its requests or answers) and a queue of changes to those, made
//! by other sessions of the same file system. A client keeps a
//! [`MetaOp::Watch`](cpfs_proto::meta::MetaOp::Watch) outstanding, which
//! returns as soon as its queue is not empty.
//!
//! Delivery is asynchronous, after the change is committed: waiting for
//! every other client to acknowledge before answering would stall two
//! clients creating in one directory on each other's kernel locks. What a
//! client may miss is bounded instead: a queue that overflows, or a
//! session that is new (a remount, a failover), is reported as `lost`, and
//! the client drops what it cached of every inode.
//!
//! A session's interest in what a request names or answers is recorded
//! once the request is handled; a change another session publishes while
//! the request is under way would find no interest yet and be missed, and
//! the client's kernel would keep what the answer said for up to its TTL.
//! So the last changes published are kept ([`RECENT`]) and a request
//! replays those published since it started ([`Watchers::mark`]) against
//! its session's new interest; a change already queued is sent twice at
//! worst, which only drops a cache entry twice.
//!
//! Everything here is bounded: the inodes per session (beyond
//! [`MAX_INTEREST`] a session simply gets every change of its file
//! system), the queue ([`MAX_QUEUE`]), and the watchers themselves (one
//! that has not polled for [`IDLE`] is dropped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpfs_proto::meta::{Change, MetaOp, MetaReply, DELEGATION_RENEW};
use tokio::sync::Notify;

mod delegations;

/// Inodes remembered per session before it is sent everything.
pub const MAX_INTEREST: usize = 1 << 20;
/// Changes queued for one session before they count as lost.
pub const MAX_QUEUE: usize = 8192;
/// The longest a Watch waits before it returns empty.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// A watcher that has not polled for this long belongs to a client that
/// went away (or never watches): it is dropped.
pub const IDLE: Duration = Duration::from_secs(60);
/// Changes kept for requests that were under way while they were
/// published; a request that outlived more finds its session `lost`.
pub const RECENT: usize = 8192;

struct Watcher {
    fs: Arc<str>,
    interest: HashSet<u64>,
    /// The interest overflowed: every change of the file system counts.
    everything: bool,
    queue: Vec<Change>,
    lost: bool,
    wake: Arc<Notify>,
    /// When a Watch last returned (or the session mounted).
    polled: Instant,
    waiting: bool,
    /// Directories delegated to this session (delegations.rs).
    delegated: HashSet<u64>,
    /// Of those, recalled and not yet sent to the client.
    recalling: HashSet<u64>,
    /// Recalled and sent: the client's next Watch acknowledges them.
    delivered: HashSet<u64>,
    /// Counts Watches; only the latest may take the queue (an earlier one
    /// still parked belongs to a connection the client gave up on).
    latest: u64,
}

impl Watcher {
    fn wants(&self, change: &Change) -> bool {
        self.everything || self.interest.contains(&change.ino())
    }

    fn idle(&self, now: Instant) -> bool {
        !self.waiting && now.duration_since(self.polled) > IDLE
    }
}

/// A change as it was published.
struct Published {
    seq: u64,
    fs: Arc<str>,
    origin: u64,
    change: Change,
}

/// Where a request started in the sequence of published changes (see
/// [`Watchers::mark`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark(u64);

#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, Watcher>,
    by_fs: HashMap<Arc<str>, HashSet<u64>>,
    /// The last changes published, oldest first, numbered from `next`
    /// down.
    recent: VecDeque<Published>,
    next: u64,
    holders: delegations::Holders,
}

impl Registry {
    fn remove(&mut self, session: u64) {
        if let Some(w) = self.sessions.get(&session) {
            let (fs, dirs) = (
                w.fs.clone(),
                w.delegated.iter().copied().collect::<Vec<_>>(),
            );
            self.release(&fs, session, &dirs);
        }
        if let Some(w) = self.sessions.remove(&session) {
            if let Some(set) = self.by_fs.get_mut(&w.fs) {
                set.remove(&session);
                if set.is_empty() {
                    self.by_fs.remove(&w.fs);
                }
            }
        }
    }
}

/// The watchers of every session of this server.
#[derive(Default)]
pub struct Watchers {
    registry: Mutex<Registry>,
    closed: AtomicBool,
    /// Woken whenever delegations end (a recall waits on it).
    released: Notify,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session of `fs`. Its first Watch reports `lost`: whatever a
    /// client cached under an earlier session may be stale.
    pub fn add(&self, session: u64, fs: &str) {
        let fs: Arc<str> = Arc::from(fs);
        let mut r = self.lock();
        // A session registered again starts over (its delegations end).
        r.remove(session);
        r.by_fs.entry(fs.clone()).or_default().insert(session);
        r.sessions.insert(
            session,
            Watcher {
                fs,
                interest: HashSet::new(),
                everything: false,
                queue: Vec::new(),
                lost: true,
                wake: Arc::new(Notify::new()),
                polled: Instant::now(),
                waiting: false,
                delegated: HashSet::new(),
                recalling: HashSet::new(),
                delivered: HashSet::new(),
                latest: 0,
            },
        );
    }

    /// Where the sequence of published changes stands: taken before a
    /// request is handled and handed to [`Watchers::note`] after.
    pub fn mark(&self) -> Mark {
        Mark(self.lock().next)
    }

    /// Records the inodes `session` named in a request (`named`) or was
    /// told about in `reply`: the kernel of that client may cache them.
    /// Changes other sessions published since `since` (while the request
    /// was handled, before this interest existed) are queued now if they
    /// touch them.
    pub fn note(&self, session: u64, named: Named, reply: &MetaReply, since: Mark) {
        let mut guard = self.lock();
        let Registry {
            sessions,
            recent,
            next,
            ..
        } = &mut *guard;
        let Some(w) = sessions.get_mut(&session) else {
            return;
        };
        // Changes to inodes it already watched were queued when published:
        // only those to inodes new to it are replayed (all of them when it
        // turns to watching everything now, none when it already did).
        let was_everything = w.everything;
        let mut new: Vec<u64> = Vec::new();
        if !w.everything {
            let mut add = |ino: u64| {
                if w.interest.insert(ino) {
                    new.push(ino);
                }
            };
            for ino in named.0.into_iter().chain(named.1) {
                add(ino);
            }
            match reply {
                MetaReply::Attr(a) | MetaReply::Entry(a) => add(a.ino),
                MetaReply::Open(o) => add(o.attr.ino),
                MetaReply::DirPlus { entries, .. } => {
                    for (_, a) in entries {
                        add(a.ino);
                    }
                }
                MetaReply::Dir { entries, .. } => {
                    for e in entries {
                        add(e.ino);
                    }
                }
                _ => {}
            }
            if w.interest.len() > MAX_INTEREST {
                w.interest = HashSet::new();
                w.everything = true;
            }
        }
        if was_everything || (new.is_empty() && !w.everything) {
            return;
        }
        if since.0 == *next || w.lost {
            return;
        }
        let oldest = recent.front().map_or(*next, |p| p.seq);
        if oldest > since.0 {
            // Some of what was published meanwhile is no longer kept.
            w.queue.clear();
            w.lost = true;
            w.wake.notify_one();
            return;
        }
        let before = w.queue.len();
        // Numbers are consecutive: the first missed one is at `since - oldest`.
        let missed = recent.range((since.0 - oldest) as usize..);
        for p in missed {
            let unseen = w.everything || new.contains(&p.change.ino());
            if p.origin != session && p.fs == w.fs && unseen {
                w.queue.push(p.change.clone());
            }
        }
        if w.queue.len() > MAX_QUEUE {
            w.queue.clear();
            w.lost = true;
        }
        if w.queue.len() != before || w.lost {
            w.wake.notify_one();
        }
    }

    /// Queues `changes`, made by `origin`, for the other sessions of `fs`
    /// that have seen what they touch, and wakes their Watch.
    pub fn publish(&self, fs: &str, origin: u64, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut r = self.lock();
        let Some((fs, sessions)) = r.by_fs.get_key_value(fs) else {
            return;
        };
        let fs = fs.clone();
        let sessions: Vec<u64> = sessions.iter().copied().filter(|s| *s != origin).collect();
        if sessions.is_empty() {
            // Nobody else to tell, now or to a request under way.
            return;
        }
        for c in changes {
            let seq = r.next;
            r.next += 1;
            r.recent.push_back(Published {
                seq,
                fs: fs.clone(),
                origin,
                change: c.clone(),
            });
            if r.recent.len() > RECENT {
                r.recent.pop_front();
            }
        }
        let mut gone = Vec::new();
        for session in sessions {
            let Some(w) = r.sessions.get_mut(&session) else {
                continue;
            };
            if w.idle(now) {
                gone.push(session);
                continue;
            }
            let before = w.queue.len();
            for c in changes {
                if w.lost {
                    break;
                }
                if w.wants(c) {
                    if w.queue.len() >= MAX_QUEUE {
                        w.queue.clear();
                        w.lost = true;
                    } else {
                        w.queue.push(c.clone());
                    }
                }
            }
            if w.queue.len() != before || w.lost {
                w.wake.notify_one();
            }
        }
        let released = !gone.is_empty();
        for session in gone {
            r.remove(session);
        }
        drop(r);
        if released {
            self.released.notify_waiters();
        }
    }

    /// What changed for `session` since its last Watch, waiting up to
    /// `wait` for something to. A session unknown here (idle too long, or
    /// the server restarted) is registered again, and told it lost changes.
    pub async fn wait(&self, session: u64, fs: &str, wait: Duration) -> MetaReply {
        let lost = || MetaReply::Changes {
            changes: vec![],
            lost: true,
            lease_ms: 0,
        };
        let wake = match self.lock().sessions.get(&session) {
            Some(w) => w.wake.clone(),
            None => {
                self.add(session, fs);
                match self.lock().sessions.get(&session) {
                    Some(w) => w.wake.clone(),
                    None => return lost(),
                }
            }
        };
        let (notified, me, wait) = {
            let mut r = self.lock();
            // Watching again acknowledges the recalls last sent.
            if r.acknowledge(session) {
                self.released.notify_waiters();
            }
            r.expire(session, tokio::time::Instant::now());
            let Some(w) = r.sessions.get_mut(&session) else {
                return lost();
            };
            w.latest += 1;
            if w.waiting {
                // An earlier Watch is still parked: its client retried on
                // another connection. It leaves empty-handed.
                w.wake.notify_waiters();
            }
            // Registered (after that) before the state is looked at, under
            // the lock: no wake-up between the two is missed.
            let mut notified = Box::pin(wake.notified());
            notified.as_mut().enable();
            if !w.queue.is_empty() || w.lost || self.closed.load(Ordering::Acquire) {
                w.waiting = false;
                w.polled = Instant::now();
                return take(w);
            }
            w.waiting = true;
            // A holder's lease is renewed by each answer.
            let wait = match w.delegated.is_empty() {
                true => wait.min(MAX_WAIT),
                false => wait.min(DELEGATION_RENEW),
            };
            (notified, w.latest, wait)
        };
        let _ = tokio::time::timeout(wait, notified).await;
        let mut r = self.lock();
        match r.sessions.get_mut(&session) {
            Some(w) if w.latest != me => MetaReply::Changes {
                changes: vec![],
                lost: false,
                lease_ms: 0,
            },
            Some(w) => {
                w.waiting = false;
                w.polled = Instant::now();
                take(w)
            }
            None => lost(),
        }
    }

    /// The server is shutting down: every Watch returns now, so that the
    /// drain does not wait for them.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for w in self.lock().sessions.values() {
            w.wake.notify_one();
        }
    }

    /// Forgets the watcher of `session` (its lease expired).
    pub fn remove(&self, session: u64) {
        self.lock().remove(session);
        self.released.notify_waiters();
    }

    /// Whether `session` has a Watch outstanding (a live mount).
    pub fn waiting(&self, session: u64) -> bool {
        self.lock()
            .sessions
            .get(&session)
            .is_some_and(|w| w.waiting)
    }

    /// How many sessions are watched (for tests and status).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn take(w: &mut Watcher) -> MetaReply {
    let lost = std::mem::take(&mut w.lost);
    // Sent now, acknowledged by the next Watch; a client told it lost
    // changes drops everything it knew, the delegations' names too.
    let recalled: Vec<u64> = match lost {
        true => w.delegated.iter().copied().collect(),
        false => w.recalling.drain().collect(),
    };
    w.recalling.clear();
    w.delivered.extend(recalled);
    // The service fills in the lease (it knows its own, server.rs).
    MetaReply::Changes {
        changes: std::mem::take(&mut w.queue),
        lost,
        lease_ms: 0,
    }
}

/// The inodes a request names (its parent directories and targets), taken
/// before the request is consumed, so that nothing of it is copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named(Option<u64>, Option<u64>);

/// What `op` names.
pub fn named(op: &MetaOp) -> Named {
    let (a, b) = match op {
        MetaOp::Lookup { parent, .. }
        | MetaOp::Mknod { parent, .. }
        | MetaOp::Mkdir { parent, .. }
        | MetaOp::Create { parent, .. }
        | MetaOp::Symlink { parent, .. }
        | MetaOp::Unlink { parent, .. }
        | MetaOp::Rmdir { parent, .. } => (Some(*parent), None),
        MetaOp::Rename {
            parent, new_parent, ..
        } => (Some(*parent), Some(*new_parent)),
        MetaOp::Link {
            ino, new_parent, ..
        } => (Some(*ino), Some(*new_parent)),
        MetaOp::GetAttr { ino }
        | MetaOp::SetAttr { ino, .. }
        | MetaOp::Readlink { ino }
        | MetaOp::Open { ino, .. }
        | MetaOp::Access { ino, .. }
        | MetaOp::ReadDir { ino, .. }
        | MetaOp::ReadDirPlus { ino, .. }
        | MetaOp::Written { ino, .. }
        | MetaOp::GetXattr { ino, .. }
        | MetaOp::ListXattr { ino } => (Some(*ino), None),
        _ => (None, None),
    };
    Named(a, b)
}

/// What applying `op` (successfully) changed, as other clients' kernels
/// see it: names in directories, and the attributes (or contents) of
/// inodes, among them the directories whose times and sizes moved.
pub fn changes_of(op: &MetaOp) -> Vec<Change> {
    let entry = |parent: u64, name: &[u8]| Change::Entry {
        parent,
        name: name.to_vec(),
    };
    let inode = |ino: u64, data: bool| Change::Inode { ino, data };
    match op {
        MetaOp::Mknod { parent, name, .. }
        | MetaOp::Mkdir { parent, name, .. }
        | MetaOp::Create { parent, name, .. }
        | MetaOp::Symlink { parent, name, .. }
        | MetaOp::Unlink { parent, name }
        | MetaOp::Rmdir { parent, name } => vec![entry(*parent, name), inode(*parent, false)],
        MetaOp::Link {
            ino,
            new_parent,
            new_name,
        } => vec![
            entry(*new_parent, new_name),
            inode(*new_parent, false),
            inode(*ino, false),
        ],
        MetaOp::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => {
            let mut v = vec![entry(*parent, name), entry(*new_parent, new_name)];
            v.push(inode(*parent, false));
            if new_parent != parent {
                v.push(inode(*new_parent, false));
            }
            v
        }
        // A new mtime stands for new data, as NFS takes it: a mount with the
        // kernel's writeback cache records writes that did not grow the
        // file only so (the kernel sends their mtime once they landed), and
        // other mounts holding the pages must drop them.
        MetaOp::SetAttr { ino, set } => {
            let data = set.size.is_some() || set.mtime_ns.is_some() || set.written.is_some();
            vec![inode(*ino, data)]
        }
        MetaOp::Written { ino, .. } => vec![inode(*ino, true)],
        MetaOp::SetXattr { ino, .. }
        | MetaOp::RemoveXattr { ino, .. }
        | MetaOp::SetStripe { ino, .. } => vec![inode(*ino, false)],
        _ => Vec::new(),
    }
}

/// The directories whose entries `changes` (of one operation) name, once
/// each.
pub fn entry_parents(changes: &[Change]) -> Vec<u64> {
    let mut dirs: Vec<u64> = Vec::new();
    for c in changes {
        if let Change::Entry { parent, .. } = c {
            if !dirs.contains(parent) {
                dirs.push(*parent);
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(parent: u64) -> MetaOp {
        MetaOp::Lookup {
            parent,
            name: b"x".to_vec(),
        }
    }

    fn create(parent: u64, name: &[u8]) -> MetaOp {
        MetaOp::Mkdir {
            parent,
            name: name.to_vec(),
            mode: 0o755,
            umask: 0,
        }
    }

    async fn poll(w: &Watchers, session: u64) -> (Vec<Change>, bool) {
        match w.wait(session, "fs", Duration::ZERO).await {
            MetaReply::Changes { changes, lost, .. } => (changes, lost),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_new_size_or_mtime_drops_the_data_other_attributes_only_themselves() {
        use cpfs_proto::meta::SetAttr;
        let data_of = |set: SetAttr| match changes_of(&MetaOp::SetAttr { ino: 9, set }).as_slice() {
            [Change::Inode { ino: 9, data }] => *data,
            other => panic!("unexpected {other:?}"),
        };
        assert!(data_of(SetAttr {
            mtime_ns: Some(Some(5)),
            ..Default::default()
        }));
        assert!(data_of(SetAttr {
            size: Some(0),
            ..Default::default()
        }));
        assert!(!data_of(SetAttr {
            mode: Some(0o600),
            atime_ns: Some(None),
            ..Default::default()
        }));
    }

    #[tokio::test]
    async fn a_session_gets_the_changes_of_others_to_what_it_has_seen() {
        let w = Watchers::default();
        w.add(1, "fs");
        w.add(2, "fs");
        w.add(3, "other-fs");
        // A new session is told it may have missed changes, once.
        assert_eq!(poll(&w, 1).await, (vec![], true));
        assert_eq!(poll(&w, 1).await, (vec![], false));
        let _ = poll(&w, 2).await;
        let _ = poll(&w, 3).await;
        // Session 1 looked into directory 7, not into 8.
        w.note(1, named(&lookup(7)), &MetaReply::Done, w.mark());
        w.publish("fs", 2, &changes_of(&create(7, b"a")));
        w.publish("fs", 2, &changes_of(&create(8, b"b")));
        let (changes, lost) = poll(&w, 1).await;
        assert!(!lost);
        assert_eq!(
            changes,
            vec![
                Change::Entry {
                    parent: 7,
                    name: b"a".to_vec()
                },
                Change::Inode {
                    ino: 7,
                    data: false
                }
            ]
        );
        // Its own changes, and other file systems', are not sent back.
        w.publish("fs", 1, &changes_of(&create(7, b"c")));
        w.note(3, named(&lookup(7)), &MetaReply::Done, w.mark());
        w.publish("fs", 2, &changes_of(&create(7, b"d")));
        assert_eq!(poll(&w, 1).await.0.len(), 2);
        assert_eq!(poll(&w, 3).await, (vec![], false));
    }

    #[tokio::test]
    async fn a_waiting_watch_wakes_on_a_change_and_an_overflow_counts_as_lost() {
        let w = Arc::new(Watchers::default());
        w.add(1, "fs");
        let _ = poll(&w, 1).await;
        w.note(1, named(&lookup(7)), &MetaReply::Done, w.mark());
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait(1, "fs", Duration::from_secs(30)).await })
        };
        while !w.lock().sessions.get(&1).is_some_and(|x| x.waiting) {
            tokio::task::yield_now().await;
        }
        w.publish("fs", 2, &changes_of(&create(7, b"a")));
        match tokio::time::timeout(Duration::from_secs(5), waiter).await {
            Ok(Ok(MetaReply::Changes { changes, lost, .. })) => {
                assert_eq!(changes.len(), 2);
                assert!(!lost);
            }
            other => panic!("the watch did not wake: {other:?}"),
        }
        for i in 0..MAX_QUEUE {
            w.publish("fs", 2, &changes_of(&create(7, format!("{i}").as_bytes())));
        }
        assert_eq!(poll(&w, 1).await, (vec![], true));
    }

    #[tokio::test]
    async fn closing_ends_every_watch_at_once() {
        let w = Arc::new(Watchers::default());
        w.add(1, "fs");
        let _ = poll(&w, 1).await;
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait(1, "fs", Duration::from_secs(30)).await })
        };
        while !w.lock().sessions.get(&1).is_some_and(|x| x.waiting) {
            tokio::task::yield_now().await;
        }
        w.close();
        let r = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(r, Ok(Ok(MetaReply::Changes { .. }))), "{r:?}");
    }

    #[tokio::test]
    async fn a_change_published_while_a_request_was_handled_reaches_its_session() {
        let w = Watchers::default();
        for session in [1, 2, 3] {
            w.add(session, "fs");
            let _ = poll(&w, session).await;
        }
        w.add(4, "other-fs");
        let _ = poll(&w, 4).await;
        // Published before session 1's lookup started: its answer shows it.
        w.publish("fs", 2, &changes_of(&create(7, b"before")));
        let mark = w.mark();
        // Session 1 looks into 7 (no interest yet) while session 2
        // creates there and session 4 in another file system.
        w.publish("fs", 2, &changes_of(&create(7, b"during")));
        w.publish("other-fs", 4, &changes_of(&create(7, b"elsewhere")));
        w.note(1, named(&lookup(7)), &MetaReply::Done, mark);
        let (changes, lost) = poll(&w, 1).await;
        assert!(!lost);
        assert_eq!(changes, changes_of(&create(7, b"during")));
        // Already watching 7: the change was queued when published, once.
        let mark = w.mark();
        w.publish("fs", 2, &changes_of(&create(7, b"again")));
        w.note(1, named(&lookup(7)), &MetaReply::Done, mark);
        assert_eq!(poll(&w, 1).await, (changes_of(&create(7, b"again")), false));
        // A session's own changes are not sent back to it.
        let mark = w.mark();
        w.publish("fs", 3, &changes_of(&create(9, b"own")));
        w.note(3, named(&lookup(9)), &MetaReply::Done, mark);
        assert_eq!(poll(&w, 3).await, (vec![], false));
    }

    #[tokio::test]
    async fn a_request_that_outlived_the_kept_changes_finds_its_session_lost() {
        let w = Watchers::default();
        w.add(1, "fs");
        w.add(2, "fs");
        let _ = poll(&w, 1).await;
        let mark = w.mark();
        for i in 0..RECENT {
            w.publish("fs", 2, &changes_of(&create(100 + i as u64, b"x")));
        }
        w.note(1, named(&lookup(7)), &MetaReply::Done, mark);
        assert_eq!(poll(&w, 1).await, (vec![], true));
        assert!(w.lock().recent.len() <= RECENT);
    }

    #[tokio::test]
    async fn a_watch_left_parked_by_a_retry_does_not_take_the_changes() {
        let w = Arc::new(Watchers::default());
        w.add(1, "fs");
        w.add(2, "fs");
        let _ = poll(&w, 1).await;
        w.note(1, named(&lookup(7)), &MetaReply::Done, w.mark());
        let watch = |w: &Arc<Watchers>| {
            let w = w.clone();
            tokio::spawn(async move { w.wait(1, "fs", Duration::from_secs(30)).await })
        };
        let old = watch(&w);
        while !w.waiting(1) {
            tokio::task::yield_now().await;
        }
        // The client's connection broke; it watches again on a new one.
        let new = watch(&w);
        let left = tokio::time::timeout(Duration::from_secs(5), old).await;
        assert!(
            matches!(&left, Ok(Ok(MetaReply::Changes { changes, lost: false, .. })) if changes.is_empty()),
            "{left:?}"
        );
        w.publish("fs", 2, &changes_of(&create(7, b"a")));
        let got = tokio::time::timeout(Duration::from_secs(5), new).await;
        assert!(
            matches!(&got, Ok(Ok(MetaReply::Changes { changes, .. })) if *changes == changes_of(&create(7, b"a"))),
            "{got:?}"
        );
    }

    #[test]
    fn too_many_inodes_turn_into_every_change() {
        let w = Watchers::default();
        w.add(1, "fs");
        for ino in 0..=MAX_INTEREST as u64 {
            w.note(1, named(&lookup(ino + 10)), &MetaReply::Done, w.mark());
        }
        let r = w.lock();
        let x = &r.sessions[&1];
        assert!(x.everything && x.interest.is_empty());
    }
}
