//! When each directory last changed, as far as this client knows: by one
//! of its own calls (counted when the call ends) or by another client's
//! (as the watch tells, fuse/invalidate.rs).
//!
//! A copy this client keeps of something it read about a directory (its
//! attributes from its parent's listing, the listing itself for `rm -r`'s
//! second opendir, fuse/dirs.rs) notes the generation when it was read and
//! is served again only while the directory is unchanged since. That is
//! the kernel's own contract for what it caches: what this client saw may
//! be served for a bounded time unless a change is known. Nothing is ever
//! answered about what this client did not see: a name another client
//! just made must be found by the next lookup (close-to-open), so "no such
//! name" always comes from the service.

use std::collections::HashMap;
use std::sync::Mutex;

use cpfs_proto::meta::MetaOp;

/// Directories whose last change is remembered one by one; beyond, the
/// map is cleared and every directory counts as changed then.
const MAX_REMEMBERED: usize = 65_536;

/// What a call may change, as far as copies of directories go.
enum Changes {
    Nothing,
    Inode(u64),
    /// A rename changes the moved inode too, which is not known here.
    Anything,
}

fn changes_of(op: &MetaOp) -> Changes {
    match op {
        MetaOp::Create { parent, .. }
        | MetaOp::Mknod { parent, .. }
        | MetaOp::Symlink { parent, .. }
        | MetaOp::Mkdir { parent, .. }
        | MetaOp::Unlink { parent, .. }
        | MetaOp::Rmdir { parent, .. } => Changes::Inode(*parent),
        MetaOp::Link { new_parent, .. } => Changes::Inode(*new_parent),
        MetaOp::Rename { .. } => Changes::Anything,
        MetaOp::SetAttr { ino, .. }
        | MetaOp::SetXattr { ino, .. }
        | MetaOp::RemoveXattr { ino, .. }
        | MetaOp::SetStripe { ino, .. } => Changes::Inode(*ino),
        _ => Changes::Nothing,
    }
}

#[derive(Default)]
struct Inner {
    /// Counts changes.
    generation: u64,
    /// The generation of each directory's last change.
    changed: HashMap<u64, u64>,
    /// Directories missing from `changed` may have changed up to this
    /// generation (the map was cleared then).
    floor: u64,
}

impl Inner {
    fn mark(&mut self, ino: u64) {
        self.generation += 1;
        if self.changed.len() >= MAX_REMEMBERED {
            self.changed.clear();
            self.floor = self.generation;
        }
        self.changed.insert(ino, self.generation);
    }

    fn mark_all(&mut self) {
        self.generation += 1;
        self.changed.clear();
        self.floor = self.generation;
    }

    fn last_change(&self, ino: u64) -> u64 {
        self.changed.get(&ino).copied().unwrap_or(0).max(self.floor)
    }
}

/// Directories' last changes, as this client knows them.
#[derive(Default)]
pub struct DirChanges {
    inner: Mutex<Inner>,
}

impl DirChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// To note when a copy is read and hand to
    /// [`DirChanges::unchanged_since`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A call of this client ended, whatever its outcome (a failed one may
    /// still have changed something).
    pub fn after(&self, op: &MetaOp) {
        match changes_of(op) {
            Changes::Nothing => {}
            Changes::Inode(ino) => self.lock().mark(ino),
            Changes::Anything => self.lock().mark_all(),
        }
    }

    /// Another client changed a name in `ino` or its attributes.
    pub fn invalidate(&self, ino: u64) {
        self.lock().mark(ino);
    }

    /// Changes of other clients may have been missed.
    pub fn clear(&self) {
        self.lock().mark_all();
    }

    /// Whether `ino`'s names and attributes are as they were at
    /// `generation`, as far as this client knows.
    pub fn unchanged_since(&self, ino: u64, generation: u64) -> bool {
        self.lock().last_change(ino) <= generation
    }
}

#[cfg(test)]
#[path = "dir_changes_tests.rs"]
mod tests;
