//! Directory delegations: a directory a session made is delegated to it,
//! and its client answers lookups of names it does not hold there itself
//! (the lookup the kernel makes before every create is then no round
//! trip). That is only true while nobody else changes the directory, so
//! before another session's change to a delegated directory goes ahead,
//! the delegation is recalled: a notice of the directory goes to the
//! holder's Watch and the change waits until the holder watches again
//! (it had dropped what it knew by then), or for [`DELEGATION_RECALL`],
//! past the holder's lease (`cpfs_proto::meta::DELEGATION_LEASE`): a
//! holder that did not answer in time has stopped using the delegation.
//!
//! A delegation is granted only to a session with a Watch outstanding (a
//! live client) and lasts until recalled, until its session goes, or until
//! the client loses track (a lost queue releases all of the session's).

use std::collections::HashMap;
use std::sync::Arc;

use cpfs_proto::meta::{
    Attr, Change, DELEGATION_LEASE, DELEGATION_RECALL, DELEGATION_RENEW, DELEGATION_TTL,
};
use tokio::time::Instant;

use super::{Registry, Watchers, MAX_QUEUE};
use crate::{MetaService, Session};

/// Directories delegated to one session at most.
pub const MAX_DELEGATED: usize = 4096;

impl Registry {
    /// Releases `dirs` of `fs` held by `session`; whether any was.
    pub(super) fn release(&mut self, fs: &str, session: u64, dirs: &[u64]) -> bool {
        let mut any = false;
        if let Some(held) = self.holders.get_mut(fs) {
            for dir in dirs {
                if held.get(dir).map(|h| h.0) == Some(session) {
                    held.remove(dir);
                    any = true;
                }
            }
            if held.is_empty() {
                self.holders.remove(fs);
            }
        }
        if let Some(w) = self.sessions.get_mut(&session) {
            for dir in dirs {
                w.delegated.remove(dir);
                w.recalling.remove(dir);
                w.delivered.remove(dir);
            }
        }
        any
    }

    /// Ends `session`'s delegations past their time (its client stopped
    /// using them by then).
    pub(super) fn expire(&mut self, session: u64, now: Instant) {
        let Some(w) = self.sessions.get(&session) else {
            return;
        };
        let held = self.holders.get(&w.fs);
        let old: Vec<u64> = w
            .delegated
            .iter()
            .copied()
            .filter(|d| held.and_then(|h| h.get(d)).is_none_or(|h| h.1 <= now))
            .collect();
        if !old.is_empty() {
            let fs = w.fs.clone();
            self.release(&fs, session, &old);
        }
    }

    /// The session acknowledged the recalls it was sent (it watches
    /// again); whether any delegation ended.
    pub(super) fn acknowledge(&mut self, session: u64) -> bool {
        let Some(w) = self.sessions.get_mut(&session) else {
            return false;
        };
        if w.delivered.is_empty() {
            return false;
        }
        let fs = w.fs.clone();
        let dirs: Vec<u64> = w.delivered.drain().collect();
        self.release(&fs, session, &dirs)
    }
}

impl Watchers {
    /// Delegates `dir`, just made by `session`, to it, if its client is
    /// watching; whether it did.
    pub fn grant(&self, session: u64, fs: &str, dir: u64) -> bool {
        let mut r = self.lock();
        let Some(w) = r.sessions.get_mut(&session) else {
            return false;
        };
        // A live client: a Watch outstanding, or one that returned a
        // moment ago (it is on its way back).
        let live = w.waiting || w.polled.elapsed() < DELEGATION_RENEW;
        if !live || w.lost || w.delegated.len() >= MAX_DELEGATED || w.fs.as_ref() != fs {
            return false;
        }
        w.delegated.insert(dir);
        // Its Watch returns now and comes back with the holder's shorter
        // wait, which renews the client's lease from then on.
        w.wake.notify_one();
        let fs = w.fs.clone();
        let ends = Instant::now() + DELEGATION_TTL;
        r.holders
            .entry(fs)
            .or_default()
            .insert(dir, (session, ends));
        true
    }

    /// Recalls the delegations of the directories `changes` (to be made by
    /// `by`) touch, from any other session holding them, and waits until
    /// each is acknowledged or [`DELEGATION_RECALL`] passed.
    pub async fn recall(&self, fs: &str, by: u64, changes: &[Change]) {
        let recalled = {
            let mut r = self.lock();
            let Some(held) = r.holders.get(fs) else {
                return;
            };
            let now = Instant::now();
            let mut recalled: Vec<(u64, u64)> = Vec::new();
            for c in changes {
                let dir = c.ino();
                match held.get(&dir) {
                    // Past its time, its holder no longer uses it.
                    Some(&(holder, ends))
                        if ends > now && holder != by && !recalled.contains(&(dir, holder)) =>
                    {
                        recalled.push((dir, holder))
                    }
                    _ => {}
                }
            }
            for &(dir, holder) in &recalled {
                let Some(w) = r.sessions.get_mut(&holder) else {
                    continue;
                };
                if w.recalling.insert(dir) && !w.lost {
                    if w.queue.len() >= MAX_QUEUE {
                        w.queue.clear();
                        w.lost = true;
                    } else {
                        w.queue.push(Change::Inode {
                            ino: dir,
                            data: false,
                        });
                    }
                }
                w.wake.notify_one();
            }
            recalled
        };
        if recalled.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + DELEGATION_RECALL;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let pending = {
                let r = self.lock();
                let held = r.holders.get(fs);
                recalled.iter().any(|(dir, holder)| {
                    held.and_then(|h| h.get(dir)).map(|h| h.0) == Some(*holder)
                })
            };
            if !pending {
                return;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break;
            }
        }
        // The holders did not answer: their leases have run out.
        let mut r = self.lock();
        let mut by_holder: HashMap<u64, Vec<u64>> = HashMap::new();
        for (dir, holder) in recalled {
            by_holder.entry(holder).or_default().push(dir);
        }
        for (holder, dirs) in by_holder {
            tracing::warn!(
                fs,
                session = holder,
                ?dirs,
                "a delegation's holder did not acknowledge its recall in time"
            );
            r.release(fs, holder, &dirs);
        }
        drop(r);
        // Other changes waiting on the same directories go ahead too.
        self.released.notify_waiters();
    }

    /// Recalls every delegation of `fs` (for `by`), as [`Watchers::recall`].
    pub async fn recall_all(&self, fs: &str, by: u64) {
        let changes: Vec<Change> = match self.lock().holders.get(fs) {
            Some(held) => held
                .keys()
                .map(|&ino| Change::Inode { ino, data: false })
                .collect(),
            None => return,
        };
        self.recall(fs, by, &changes).await;
    }

    /// Ends `session`'s delegation of `dir` (granted, then found changed).
    pub fn give_up(&self, fs: &str, session: u64, dir: u64) {
        self.lock().release(fs, session, &[dir]);
        self.released.notify_waiters();
    }

    /// How many directories are delegated (for tests and status).
    pub fn delegated(&self) -> usize {
        self.lock().holders.values().map(|h| h.len()).sum()
    }
}

impl MetaService {
    /// Delegates the directory `made` (as the mkdir answered) to `session`
    /// if its client watches and nobody changed the directory since: a
    /// change that found no delegation before the grant shows in the
    /// directory's times; one after it recalls it.
    /// For how long (ms from the request's sending) the client may use it;
    /// 0: not delegated.
    pub(crate) async fn delegate(&self, s: &Session, session: u64, made: &Attr) -> u32 {
        let ms = self.delegation_ms(&s.fs);
        if ms == 0 || !self.watchers.grant(session, &s.fs, made.ino) {
            return 0;
        }
        // Read under the shard's lock: a change applied before it shows,
        // one applied after it found the grant and recalls it. Empty, too:
        // a retried mkdir answers with the directory as it is now.
        let unchanged = self
            .shards
            .read(&s.fs, |st| {
                let now = &st.inode(made.ino)?.attr;
                Ok(st.is_empty_dir(made.ino)
                    && (now.nlink, now.ctime_ns, now.mtime_ns)
                        == (made.nlink, made.ctime_ns, made.mtime_ns))
            })
            .await
            .unwrap_or(false);
        if !unchanged {
            self.watchers.give_up(&s.fs, session, made.ino);
            return 0;
        }
        ms
    }

    /// For how long a client told now may use its delegations of `fs`:
    /// [`DELEGATION_LEASE`], cut to what is left of this server's own
    /// lease on it (another server may own it after that).
    pub(crate) fn delegation_ms(&self, fs: &str) -> u32 {
        let left = match self.shards.ownership.get() {
            Some(o) => o.remaining(fs).unwrap_or_default(),
            None => DELEGATION_LEASE,
        };
        left.min(DELEGATION_LEASE).as_millis() as u32
    }
}

/// What the registry keeps of delegations: per file system, directory →
/// holding session and when the delegation ends.
pub(super) type Holders = HashMap<Arc<str>, HashMap<u64, (u64, Instant)>>;

#[cfg(test)]
#[path = "delegations_tests.rs"]
mod tests;
