//! Whether a caller may reach an inode at all. Clients name inodes by
//! number, and a number is no key: a caller that could not walk to an inode
//! by its path (a directory on the way it may not search) must not get at
//! it by sending the number. Before any operation on an inode, the service
//! walks the inode's ancestors up to the root, as the kernel walks a path,
//! and requires search permission on each of them for the caller.
//!
//! Every inode knows one directory that holds it (`Inode::parent`): a
//! directory its `..`, a file one of the directories holding a link to it
//! (kept right across rename and unlink, see `entries.rs`). A file of
//! several hard links is reachable through any of its directories: when
//! the recorded one is closed to the caller, the others are tried (a walk
//! of every directory, paid only by refused callers of multi-link files).
//! A file whose last link is gone is reached only through the handles the
//! session holds open on it.

use cpfs_proto::meta::{errno::*, Caller, Kind, MetaOp, ROOT_INO};

use crate::perm::{self, X};
use crate::{fail, MetaService, Res, Session};

use super::state::FsState;

/// Deepest directory tree walked: a longer chain of parents means the
/// namespace loops (it never should), and the walk stops rather than spin.
const MAX_DEPTH: usize = 1 << 16;

/// What the walk found.
pub(crate) enum Reach {
    /// Every directory on the way may be searched (or the inode does not
    /// exist, which the operation itself answers).
    Yes,
    /// A file with no link left: only a handle open on it reaches it.
    Unlinked,
}

impl FsState {
    /// Whether `who` may walk to `ino` (see the module).
    pub fn reach(&self, who: &Caller, ino: u64) -> Res<Reach> {
        let Ok(i) = self.inode(ino) else {
            return Ok(Reach::Yes);
        };
        if i.attr.kind != Kind::Dir && i.attr.nlink == 0 {
            return Ok(Reach::Unlinked);
        }
        if ino == ROOT_INO {
            return Ok(Reach::Yes);
        }
        match self.walk(who, ino, i.parent) {
            // A file of several links is reached through any of them.
            Err((EACCES, why)) if i.attr.kind != Kind::Dir && i.attr.nlink > 1 => {
                for dir in self.dirs_holding(ino) {
                    if dir != i.parent && self.walk(who, ino, dir).is_ok() {
                        return Ok(Reach::Yes);
                    }
                }
                Err((EACCES, why))
            }
            r => r.map(|()| Reach::Yes),
        }
    }

    /// Whether `who` may search `dir` and every directory above it.
    fn walk(&self, who: &Caller, ino: u64, mut dir: u64) -> Res<()> {
        for _ in 0..MAX_DEPTH {
            let d = self.inode(dir)?;
            if d.attr.kind != Kind::Dir {
                return fail(EIO, format!("inode {ino}: parent {dir} is not a directory"));
            }
            if !perm::allowed(&d.attr, who, X) {
                return fail(
                    EACCES,
                    format!("inode {ino}: directory {dir} on its path may not be searched"),
                );
            }
            if dir == ROOT_INO {
                return Ok(());
            }
            dir = d.parent;
        }
        fail(EIO, format!("inode {ino}: its parents loop"))
    }

    /// A directory other than `except` holding a link to `ino`, if any: a
    /// new `parent` when the link `parent` pointed at goes. It looks through
    /// every directory, which only an unlink or rename of one of several
    /// hard links of a file costs.
    pub fn another_parent(&self, ino: u64, except: u64) -> Option<u64> {
        if self.children_of(except).any(|i| i == ino) {
            return Some(except);
        }
        self.dirs_holding(ino).find(|d| *d != except)
    }
}

/// The inodes `op` acts on by number (parent directories included). Every
/// operation is listed, so a new one cannot slip past the check.
pub(crate) fn inodes_of(op: &MetaOp) -> [Option<u64>; 2] {
    match op {
        MetaOp::Lookup { parent, .. }
        | MetaOp::Mknod { parent, .. }
        | MetaOp::Mkdir { parent, .. }
        | MetaOp::Create { parent, .. }
        | MetaOp::Symlink { parent, .. }
        | MetaOp::Unlink { parent, .. }
        | MetaOp::Rmdir { parent, .. } => [Some(*parent), None],
        MetaOp::Rename {
            parent, new_parent, ..
        } => [Some(*parent), Some(*new_parent)],
        MetaOp::Link {
            ino, new_parent, ..
        } => [Some(*ino), Some(*new_parent)],
        MetaOp::GetAttr { ino }
        | MetaOp::SetAttr { ino, .. }
        | MetaOp::Readlink { ino }
        | MetaOp::Open { ino, .. }
        | MetaOp::Access { ino, .. }
        | MetaOp::ReadDir { ino, .. }
        | MetaOp::ReadDirPlus { ino, .. }
        | MetaOp::Written { ino, .. }
        | MetaOp::Reserve { ino, .. }
        | MetaOp::SetXattr { ino, .. }
        | MetaOp::GetXattr { ino, .. }
        | MetaOp::ListXattr { ino }
        | MetaOp::RemoveXattr { ino, .. }
        | MetaOp::GetStripe { ino }
        | MetaOp::SetStripe { ino, .. }
        | MetaOp::Release { ino, .. } => [Some(*ino), None],
        // Capabilities carry their own proof (issued by an allowed open);
        // releases touch only the session's own handles.
        MetaOp::ReleaseMany { .. }
        | MetaOp::Renew { .. }
        | MetaOp::Mount { .. }
        | MetaOp::MountAt { .. }
        | MetaOp::StatFs
        | MetaOp::ChainTable
        | MetaOp::Watch { .. } => [None, None],
    }
}

impl MetaService {
    /// Refuses `op` unless `who` may reach every inode it names. Root
    /// searches every directory (as the kernel's CAP_DAC_READ_SEARCH).
    pub(crate) async fn may_reach(&self, s: &Session, who: &Caller, op: &MetaOp) -> Res<()> {
        if who.uid == 0 {
            return Ok(());
        }
        for ino in inodes_of(op).into_iter().flatten() {
            let reach = self.shards.read(&s.fs, |st| st.reach(who, ino)).await?;
            if let Reach::Unlinked = reach {
                if !self.holds(s, ino) {
                    return fail(ENOENT, format!("inode {ino} has no link left"));
                }
            }
        }
        Ok(())
    }
}
