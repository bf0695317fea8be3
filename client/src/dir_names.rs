//! Directories delegated to this client, whose every name it knows, so
//! that a lookup of a name that is not there is answered without asking
//! the service.
//!
//! Before the kernel creates a file, a directory or a link it looks the new
//! name up, and for a name it has never seen that is a round trip to the
//! metadata service which answers "no such name": half of the requests of
//! a create loop or an untar. A directory this client made is delegated to
//! it (the mkdir's answer says so): nobody else changes it before the
//! service recalled the delegation through the watch and this client
//! acknowledged by watching again (`meta/src/watch/delegations.rs`). Its
//! own creates, links, renames and removals keep the set of names exact;
//! a recall, or any notice about the directory, drops it.
//!
//! The service acts without an acknowledgement after
//! [`DELEGATION_RECALL`](cpfs_proto::meta::DELEGATION_RECALL) (a client
//! that stopped answering), so answers from here stop at the later of two
//! leases, each at most [`DELEGATION_LEASE`] from a request's sending: the
//! mkdir's (no recall can predate the grant) and the last Watch's whose
//! answer arrived (every recall made before the service answered it was
//! in it). The service cuts each to what is left of its own lease on the
//! file system, so no other server can own it while one runs. The kernel
//! keeps none of these answers (a zero TTL): each lookup asks this client.
//!
//! Who may look names up is the service's decision (identities, access
//! groups, root squash), so a caller is answered from here only after the
//! service answered it a lookup in that directory, let it create there, or
//! made it the owner of the new directory with search permission.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply, DELEGATION_LEASE, DELEGATION_TTL};

use crate::dir_changes::DirChanges;

/// Directories known at once; beyond, a new one is not taken in.
const MAX_DIRS: usize = 4096;
/// Names of one directory; beyond, the directory is forgotten.
const MAX_NAMES: usize = 100_000;
/// Callers answered from here per directory.
const MAX_SEARCHERS: usize = 8;

/// What one metadata operation may teach about directories' names (it
/// borrows the operation's names: only a directory that is known copies
/// one).
pub enum Touch<'a> {
    None,
    Looked {
        parent: u64,
        name: &'a [u8],
    },
    Added {
        parent: u64,
        name: &'a [u8],
        dir: bool,
    },
    Removed {
        parent: u64,
        name: &'a [u8],
    },
    Renamed {
        from: (u64, &'a [u8]),
        to: (u64, &'a [u8]),
        plain: bool,
    },
    /// The inode's attributes change (a directory's permissions may).
    Attrs {
        ino: u64,
    },
}

impl<'a> Touch<'a> {
    pub fn of(op: &'a MetaOp) -> Touch<'a> {
        match op {
            MetaOp::Lookup { parent, name } => Touch::Looked {
                parent: *parent,
                name,
            },
            MetaOp::Create { parent, name, .. }
            | MetaOp::Mknod { parent, name, .. }
            | MetaOp::Symlink { parent, name, .. } => Touch::Added {
                parent: *parent,
                name,
                dir: false,
            },
            MetaOp::Link {
                new_parent,
                new_name,
                ..
            } => Touch::Added {
                parent: *new_parent,
                name: new_name,
                dir: false,
            },
            MetaOp::Mkdir { parent, name, .. } => Touch::Added {
                parent: *parent,
                name,
                dir: true,
            },
            MetaOp::Unlink { parent, name } | MetaOp::Rmdir { parent, name } => Touch::Removed {
                parent: *parent,
                name,
            },
            MetaOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => Touch::Renamed {
                from: (*parent, name),
                to: (*new_parent, new_name),
                // An exchange keeps both names, a whiteout leaves one.
                plain: *flags & (libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) == 0,
            },
            MetaOp::SetAttr { ino, .. }
            | MetaOp::SetXattr { ino, .. }
            | MetaOp::RemoveXattr { ino, .. }
            | MetaOp::SetStripe { ino, .. } => Touch::Attrs { ino: *ino },
            _ => Touch::None,
        }
    }
}

/// What a call's answer said, as far as names go.
pub struct Outcome<'r> {
    pub result: &'r Result<MetaReply, i32>,
    /// When the call was sent (its first attempt).
    pub sent: Instant,
    /// The count of broken connections to the service then.
    pub breaks: u64,
    /// For how long from `sent` the directory the call made is delegated
    /// to this client (0: it is not).
    pub delegated_ms: u32,
}

struct Known {
    names: HashSet<Vec<u8>>,
    searchers: Vec<Caller>,
    until: Instant,
    /// Until when the mkdir's answer lets the delegation be used.
    granted: Instant,
}

#[derive(Default)]
struct Inner {
    dirs: HashMap<u64, Known>,
    /// Until when the last Watch answered lets delegations be used.
    watched: Option<Instant>,
    /// The count of broken connections to the service when the
    /// delegations known were granted or renewed: a connection that broke
    /// since may be a service that restarted and forgot them.
    breaks: Option<u64>,
}

impl Inner {
    /// Delegations obtained over a connection that broke are dropped.
    fn connection(&mut self, breaks: u64) {
        if self.breaks != Some(breaks) {
            self.dirs.clear();
            self.watched = None;
            self.breaks = Some(breaks);
        }
    }
}

impl Inner {
    fn live(&mut self, ino: u64, now: Instant) -> Option<&mut Known> {
        self.dirs.get_mut(&ino).filter(|k| k.until > now)
    }

    fn add(&mut self, parent: u64, name: &[u8], now: Instant) {
        if let Some(k) = self.live(parent, now) {
            k.names.insert(name.to_vec());
            if k.names.len() > MAX_NAMES {
                self.dirs.remove(&parent);
            }
        }
    }

    fn remove(&mut self, parent: u64, name: &[u8], now: Instant) {
        if let Some(k) = self.live(parent, now) {
            k.names.remove(name);
        }
    }

    fn searcher(&mut self, parent: u64, who: &Caller, now: Instant) {
        if let Some(k) = self.live(parent, now) {
            if k.searchers.len() < MAX_SEARCHERS && !k.searchers.contains(who) {
                k.searchers.push(who.clone());
            }
        }
    }

    /// Takes in `ino` as empty, unless something about it was heard
    /// while the call that made it was under way (`fresh` false).
    /// `sent`: when the mkdir was sent; the delegation ends
    /// [`DELEGATION_TTL`] after (the service counts from its grant, later).
    fn made(
        &mut self,
        ino: u64,
        owner: Option<&Caller>,
        fresh: bool,
        (sent, until): (Instant, Instant),
        now: Instant,
    ) {
        if !fresh {
            return;
        }
        if self.dirs.len() >= MAX_DIRS {
            self.dirs.retain(|_, k| k.until > now);
            if self.dirs.len() >= MAX_DIRS {
                return;
            }
        }
        self.dirs.insert(
            ino,
            Known {
                names: HashSet::new(),
                searchers: owner.into_iter().cloned().collect(),
                until: sent + DELEGATION_TTL,
                granted: until,
            },
        );
    }
}

/// The directories delegated to this client, and their names.
#[derive(Default)]
pub struct DirNames {
    inner: Mutex<Inner>,
}

impl DirNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `who` may be told that `parent` holds no `name` now;
    /// `breaks`: the count of broken connections to the service now.
    pub fn absent(
        &self,
        parent: u64,
        name: &[u8],
        who: &Caller,
        now: Instant,
        breaks: u64,
    ) -> bool {
        if name == b"." || name == b".." {
            return false;
        }
        let inner = self.lock();
        if inner.breaks != Some(breaks) {
            return false;
        }
        let Some(k) = inner.dirs.get(&parent) else {
            return false;
        };
        let lease = inner.watched.map_or(k.granted, |w| w.max(k.granted));
        now < lease && k.until > now && !k.names.contains(name) && k.searchers.contains(who)
    }

    /// A Watch sent at `sent` (with `breaks` broken connections then) was
    /// answered with `lease_ms`, and what it said was taken in.
    pub fn renew(&self, sent: Instant, lease_ms: u32, breaks: u64) {
        let until = sent + lease(lease_ms);
        let mut inner = self.lock();
        inner.connection(breaks);
        if inner.watched.is_none_or(|w| w < until) {
            inner.watched = Some(until);
        }
    }

    /// Learns from the outcome of a call that started at generation
    /// `since` of `changes`.
    pub fn after(
        &self,
        touch: Touch,
        who: &Caller,
        outcome: Outcome,
        changes: &DirChanges,
        since: u64,
        now: Instant,
    ) {
        let mut inner = self.lock();
        match (touch, outcome.result) {
            (Touch::None, _) => {}
            (Touch::Looked { parent, name }, Ok(_)) => {
                inner.add(parent, name, now);
                inner.searcher(parent, who, now);
            }
            (Touch::Looked { parent, name }, Err(errno::ENOENT)) => {
                inner.remove(parent, name, now);
                inner.searcher(parent, who, now);
            }
            (Touch::Looked { parent, .. }, Err(_)) => {
                // Refused (its permissions changed under it): ask again.
                if let Some(k) = inner.live(parent, now) {
                    k.searchers.retain(|c| c != who);
                }
            }
            (Touch::Added { parent, name, dir }, Ok(reply)) => {
                inner.add(parent, name, now);
                inner.searcher(parent, who, now);
                let delegated = outcome.delegated_ms > 0;
                if let (true, true, MetaReply::Entry(a)) = (dir, delegated, reply) {
                    // The service made the caller the owner; the owner's
                    // search bit is then the service's answer to a lookup.
                    // A notice about it while the mkdir was under way (a
                    // recall) wins.
                    let owner = (a.uid == who.uid && a.perm & 0o100 != 0).then_some(who);
                    let fresh = changes.unchanged_since(a.ino, since);
                    let until = outcome.sent + lease(outcome.delegated_ms);
                    inner.connection(outcome.breaks);
                    inner.made(a.ino, owner, fresh, (outcome.sent, until), now);
                }
            }
            (Touch::Added { parent, name, .. }, Err(errno::EEXIST)) => inner.add(parent, name, now),
            (Touch::Removed { parent, name }, Ok(_) | Err(errno::ENOENT)) => {
                inner.remove(parent, name, now)
            }
            (Touch::Renamed { from, to, plain }, Ok(_)) => {
                if plain {
                    inner.remove(from.0, from.1, now);
                }
                inner.add(to.0, to.1, now);
            }
            (Touch::Renamed { from, to, .. }, Err(_)) => {
                inner.dirs.remove(&from.0);
                inner.dirs.remove(&to.0);
            }
            // Whether it happened is not known.
            (Touch::Added { parent, .. } | Touch::Removed { parent, .. }, Err(_)) => {
                inner.dirs.remove(&parent);
            }
            (Touch::Attrs { ino }, _) => {
                inner.dirs.remove(&ino);
            }
        }
    }

    /// Another client changed a name in `ino` or its attributes, or the
    /// service recalled its delegation.
    pub fn invalidate(&self, ino: u64) {
        self.lock().dirs.remove(&ino);
    }

    /// Changes of other clients may have been missed.
    pub fn clear(&self) {
        self.lock().dirs.clear();
    }
}

/// A lease the service gave, never longer than the protocol's.
fn lease(ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(ms)).min(DELEGATION_LEASE)
}

#[cfg(test)]
#[path = "dir_names_tests.rs"]
mod tests;
