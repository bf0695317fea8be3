//! Directories whose every name this client knows, so that a lookup of a
//! name that is not there is answered without asking the service.
//!
//! Before the kernel creates a file, a directory or a link it looks the new
//! name up, and for a name it has never seen that is a round trip to the
//! metadata service which answers "no such name": half of the requests of
//! a create loop, a `cp -a` or an untar. A directory this client made is
//! known to be empty; from then on the client's own changes in it keep
//! the set of its names exact, and any change another client makes in it
//! (or to its attributes) drops what is known, through the same
//! notifications that keep the kernel's caches true (fuse/invalidate.rs).
//!
//! What may be missed is bounded as for the kernel's own negative entries:
//! knowledge lives at most [`ATTR_TTL`] from the mkdir that gave it, and a
//! negative answer from here is kept by the kernel only for what is left of
//! that. It is dropped whole when notifications were lost or the session
//! was opened again (a restart or a failover).
//!
//! Who may look names up is the service's decision (identities, access
//! groups, root squash), so a caller is answered from here only after the
//! service answered it a lookup in that directory, let it create there, or
//! made it the owner of the new directory with search permission.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};

use crate::dir_attrs::ATTR_TTL;

/// Directories known at once; beyond, a new one is not taken in.
const MAX_DIRS: usize = 4096;
/// Names of one directory; beyond, the directory is forgotten.
const MAX_NAMES: usize = 100_000;
/// Callers answered from here per directory.
const MAX_SEARCHERS: usize = 8;
/// Directories whose last invalidation is remembered one by one.
const MAX_INVALIDATED: usize = 65_536;

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
            | MetaOp::RemoveXattr { ino, .. } => Touch::Attrs { ino: *ino },
            _ => Touch::None,
        }
    }
}

struct Known {
    names: HashSet<Vec<u8>>,
    searchers: Vec<Caller>,
    until: Instant,
}

#[derive(Default)]
struct Inner {
    dirs: HashMap<u64, Known>,
    /// Counts invalidations; a call notes it before it goes out, so that
    /// one that arrived while the call was under way is not overtaken.
    generation: u64,
    /// When each directory was last invalidated.
    invalidated: HashMap<u64, u64>,
    /// Directories missing from `invalidated` may have been invalidated
    /// up to this generation (the map was cleared then).
    floor: u64,
}

impl Inner {
    /// Notes that `ino`'s names or attributes changed now.
    fn mark(&mut self, ino: u64) {
        self.generation += 1;
        if self.invalidated.len() >= MAX_INVALIDATED {
            self.invalidated.clear();
            self.floor = self.generation;
        }
        self.invalidated.insert(ino, self.generation);
    }

    /// Notes that anything may have changed now.
    fn mark_all(&mut self) {
        self.generation += 1;
        self.invalidated.clear();
        self.floor = self.generation;
    }

    fn forget(&mut self, ino: u64) {
        self.mark(ino);
        self.dirs.remove(&ino);
    }

    fn last_change(&self, ino: u64) -> u64 {
        self.invalidated
            .get(&ino)
            .copied()
            .unwrap_or(0)
            .max(self.floor)
    }

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

    /// Takes in `ino` as empty, made by a call that started at `since`.
    fn made(&mut self, ino: u64, owner: Option<&Caller>, since: u64, now: Instant) {
        if self.last_change(ino) > since {
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
                until: now + ATTR_TTL,
            },
        );
    }
}

/// The directories this client knows every name of.
#[derive(Default)]
pub struct DirNames {
    inner: Mutex<Inner>,
}

impl DirNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// To note before a call goes out and hand to [`DirNames::after`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// For how long `who` may be told that `parent` holds no `name`, if
    /// this client knows so.
    pub fn absent(&self, parent: u64, name: &[u8], who: &Caller, now: Instant) -> Option<Duration> {
        if name == b"." || name == b".." {
            return None;
        }
        let inner = self.lock();
        let k = inner.dirs.get(&parent)?;
        let left = k
            .until
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())?;
        (!k.names.contains(name) && k.searchers.contains(who)).then_some(left)
    }

    /// Learns from the outcome of a call that started at `since`.
    pub fn after(
        &self,
        touch: Touch,
        who: &Caller,
        result: &Result<MetaReply, i32>,
        since: u64,
        now: Instant,
    ) {
        let mut inner = self.lock();
        match (touch, result) {
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
                inner.mark(parent);
                inner.add(parent, name, now);
                inner.searcher(parent, who, now);
                if let (true, MetaReply::Entry(a)) = (dir, reply) {
                    // The service made the caller the owner; the owner's
                    // search bit is then the service's answer to a lookup.
                    let owner = (a.uid == who.uid && a.perm & 0o100 != 0).then_some(who);
                    inner.made(a.ino, owner, since, now);
                }
            }
            (Touch::Added { parent, name, .. }, Err(errno::EEXIST)) => inner.add(parent, name, now),
            (Touch::Removed { parent, name }, Ok(_)) => {
                inner.mark(parent);
                inner.remove(parent, name, now)
            }
            (Touch::Removed { parent, name }, Err(errno::ENOENT)) => {
                inner.remove(parent, name, now)
            }
            (Touch::Renamed { from, to, plain }, Ok(_)) => {
                // The moved inode changed too, and which it is is not
                // known here.
                inner.mark_all();
                if plain {
                    inner.remove(from.0, from.1, now);
                }
                inner.add(to.0, to.1, now);
            }
            (Touch::Renamed { from, to, .. }, Err(_)) => {
                inner.mark_all();
                inner.forget(from.0);
                inner.forget(to.0);
            }
            // Whether it happened is not known.
            (Touch::Added { parent, .. } | Touch::Removed { parent, .. }, Err(_)) => {
                inner.forget(parent)
            }
            (Touch::Attrs { ino }, _) => inner.forget(ino),
        }
    }

    /// Another client changed a name in `ino` or its attributes.
    pub fn invalidate(&self, ino: u64) {
        self.lock().forget(ino);
    }

    /// Changes of other clients may have been missed.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.mark_all();
        inner.dirs.clear();
    }

    /// Whether `ino`'s names and attributes are as they were at
    /// `generation`, as far as this client knows: neither its own calls
    /// (counted when they end) nor another client's (as the watch tells)
    /// changed them since.
    pub fn unchanged_since(&self, ino: u64, generation: u64) -> bool {
        self.lock().last_change(ino) <= generation
    }
}

#[cfg(test)]
#[path = "dir_names_tests.rs"]
mod tests;
