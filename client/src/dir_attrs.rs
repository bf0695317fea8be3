//! The attributes of directories this client just changed, as the service
//! answered with the change.
//!
//! The kernel drops what it knows of a directory's attributes after every
//! create, unlink, mkdir, rmdir or rename in it, and before the next such
//! operation checks the caller's permissions on the directory, which needs
//! them again: without this, every create or unlink in a loop costs a
//! GETATTR round trip on top of its own. The service answers those
//! operations with the directory's attributes after the change
//! ([`MetaReply::Changed`]); the client keeps them for the kernel's
//! attribute TTL and answers the kernel's next GETATTR of that directory
//! itself. Changes by other clients
//! drop the copy here before the kernel's (see the mount's invalidator), so
//! what is answered is never older than what the kernel's own attribute
//! cache could have kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpfs_proto::meta::{Attr, MetaOp};

/// How long the kernel may keep the attributes and entries the mount gives
/// it (the FUSE TTL), and this cache its copies: the same invalidations
/// keep both true.
pub const ATTR_TTL: Duration = Duration::from_secs(10);
/// Beyond this many directories, stale copies are dropped on insert.
const PRUNE_ABOVE: usize = 4096;

#[derive(Default)]
pub struct DirAttrs {
    by_ino: Mutex<HashMap<u64, (Attr, Instant)>>,
}

impl DirAttrs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Attr, Instant)>> {
        self.by_ino.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `dirs`, each unless a copy changed later (a larger ctime) is
    /// already here (answers to concurrent changes may arrive out of order).
    pub fn note(&self, dirs: Vec<Attr>) {
        let now = Instant::now();
        let mut map = self.map();
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, (_, at)| now.duration_since(*at) < ATTR_TTL);
        }
        for a in dirs {
            match map.get(&a.ino) {
                Some((held, _)) if held.ctime_ns > a.ctime_ns => {}
                _ => {
                    map.insert(a.ino, (a, now));
                }
            }
        }
    }

    /// The attributes of directory `ino` from a change this client made
    /// within [`ATTR_TTL`], if any.
    pub fn get(&self, ino: u64) -> Option<Attr> {
        let map = self.map();
        let (a, at) = map.get(&ino)?;
        (at.elapsed() < ATTR_TTL).then(|| a.clone())
    }

    /// Forgets `ino`'s copy (it changed in a way not answered here).
    pub fn forget(&self, ino: u64) {
        self.map().remove(&ino);
    }

    /// Forgets every copy (changes of other clients were lost).
    pub fn clear(&self) {
        self.map().clear();
    }

    /// Forgets the copy of the inode `op` changes without answering with
    /// the directory's new attributes.
    pub fn before(&self, op: &MetaOp) {
        match op {
            MetaOp::SetAttr { ino, .. }
            | MetaOp::SetXattr { ino, .. }
            | MetaOp::RemoveXattr { ino, .. }
            | MetaOp::SetStripe { ino, .. } => self.forget(*ino),
            _ => {}
        }
    }
}
