//! Subdirectory mounts (a CPFS access point, or `DOMAIN:/path`): the
//! session sees one directory as its root, inode 1, and nothing above it.
//! The confinement is the service's, not the client's: every inode number
//! a request names is mapped (1 is the session's root) and must lie inside
//! the subtree, `..` at the root stays at the root, and every inode number
//! in a reply is mapped back, so a client never learns or reaches an inode
//! outside. The client is unchanged: it mounts with `MountAt` and works
//! with inode 1 as ever.
//!
//! Inside means the inode's `parent` chain meets the root (a file counts
//! where its `parent` directory is; a file whose recorded directory is
//! outside, through a hard link made from outside, is refused, EACCES).

use cpfs_proto::meta::{errno::*, Attr, Change, Kind, MetaOp, MetaReply, MountRoot, ROOT_INO};

use crate::ns::state::FsState;
use crate::{fail, MetaService, Res, Session};

/// Longest path a mount may name.
const MAX_PATH: usize = 4096;
/// Deepest walk up a parent chain (a longer one means a damaged tree).
const MAX_WALK: usize = 1 << 16;

/// The inode numbers a request names, to be mapped.
fn inodes_mut(op: &mut MetaOp) -> Vec<&mut u64> {
    match op {
        MetaOp::Lookup { parent, .. }
        | MetaOp::Mknod { parent, .. }
        | MetaOp::Mkdir { parent, .. }
        | MetaOp::Create { parent, .. }
        | MetaOp::Symlink { parent, .. }
        | MetaOp::Unlink { parent, .. }
        | MetaOp::Rmdir { parent, .. } => vec![parent],
        MetaOp::Rename {
            parent, new_parent, ..
        } => vec![parent, new_parent],
        MetaOp::Link {
            ino, new_parent, ..
        } => vec![ino, new_parent],
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
        | MetaOp::Release { ino, .. } => vec![ino],
        MetaOp::ReleaseMany { handles } => handles.iter_mut().map(|(ino, _)| ino).collect(),
        MetaOp::Renew { .. }
        | MetaOp::Mount { .. }
        | MetaOp::MountAt { .. }
        | MetaOp::StatFs
        | MetaOp::ChainTable
        | MetaOp::Watch { .. } => vec![],
    }
}

/// The names of an absolute path, checked.
pub(crate) fn path_names(path: &str) -> Res<Vec<&[u8]>> {
    if !path.starts_with('/') || path.len() > MAX_PATH {
        return fail(EINVAL, "a mount path is absolute and at most 4096 bytes");
    }
    let names: Vec<&[u8]> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::as_bytes)
        .collect();
    if names.iter().any(|n| *n == b".." || n.len() > 255) {
        return fail(
            EINVAL,
            "a mount path has no '..' and no name over 255 bytes",
        );
    }
    Ok(names)
}

impl FsState {
    /// The directory at `path`, its inode number.
    pub fn resolve_dir(&self, path: &str) -> Res<u64> {
        let mut dir = ROOT_INO;
        for name in path_names(path)? {
            match self.child(dir, name) {
                Some((ino, Kind::Dir)) => dir = ino,
                Some(_) => return fail(ENOTDIR, format!("{path}: not a directory")),
                None => return fail(ENOENT, format!("{path}: no such directory")),
            }
        }
        Ok(dir)
    }

    /// Whether `ino` lies in the subtree under `root` (an unknown inode
    /// does: the operation answers ENOENT itself).
    pub fn within(&self, ino: u64, root: u64) -> bool {
        let mut cur = ino;
        for _ in 0..MAX_WALK {
            if cur == root {
                return true;
            }
            if cur == ROOT_INO {
                return false;
            }
            match self.inode(cur) {
                Ok(i) => cur = i.parent,
                Err(_) => return cur == ino,
            }
        }
        false
    }
}

impl MetaService {
    /// The directory a mount with `root` is confined to, in `fs`.
    pub(crate) async fn mount_root(
        &self,
        fs: &str,
        root: &MountRoot,
    ) -> Res<(u64, Option<String>)> {
        let (path, access_point) = match root {
            MountRoot::Path(p) => (p.clone(), None),
            MountRoot::AccessPoint(id) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return fail(EINVAL, "not an access point id");
                }
                let ap = self
                    .policies
                    .access_point(id)
                    .await
                    .map_err(|e| (EIO, format!("access points unavailable: {e}")))?;
                match ap {
                    Some(ap) if ap.fs == fs && ap.active => (ap.root_path, Some(id.clone())),
                    Some(ap) if ap.fs == fs => {
                        return fail(EACCES, format!("access point {id} is not active"))
                    }
                    _ => {
                        return fail(
                            ENOENT,
                            format!("no access point {id} on this mount target's file system"),
                        )
                    }
                }
            }
        };
        let ino = self.shards.read(fs, |st| st.resolve_dir(&path)).await?;
        Ok((ino, access_point))
    }

    /// Maps a confined session's request into the file system's inode
    /// numbers and refuses one that names anything outside its subtree.
    pub(crate) async fn confine(&self, s: &Session, op: &mut MetaOp) -> Res<()> {
        let root = s.root;
        // `..` of the root is the root, as at a chroot's top.
        if let MetaOp::Lookup { parent, name } = op {
            if (*parent == ROOT_INO || *parent == root) && name.as_slice() == b".." {
                *name = b".".to_vec();
            }
        }
        let mut named = Vec::new();
        for ino in inodes_mut(op) {
            if *ino == ROOT_INO {
                *ino = root;
            }
            named.push(*ino);
        }
        for ino in named {
            let (inside, unlinked) = self
                .shards
                .read(&s.fs, |st| {
                    let unlinked = st
                        .inode(ino)
                        .is_ok_and(|i| i.attr.kind != Kind::Dir && i.attr.nlink == 0);
                    Ok((st.within(ino, root), unlinked))
                })
                .await?;
            // A file with no name left is reached only through a handle
            // this session opened (inside, when it did).
            if !(inside || unlinked && self.holds(s, ino)) {
                return fail(EACCES, format!("inode {ino} is outside the mount's root"));
            }
        }
        Ok(())
    }
}

fn outward_attr(root: u64, a: &mut Attr) {
    if a.ino == root {
        a.ino = ROOT_INO;
    }
}

/// Maps the inode numbers of a confined session's reply back: its root is
/// inode 1.
pub(crate) fn outward(root: u64, reply: &mut MetaReply) {
    let map = |ino: &mut u64| {
        if *ino == root {
            *ino = ROOT_INO;
        }
    };
    match reply {
        MetaReply::Mounted(m) => outward_attr(root, &mut m.root),
        MetaReply::Attr(a) | MetaReply::Entry(a) => outward_attr(root, a),
        MetaReply::Open(o) => outward_attr(root, &mut o.attr),
        MetaReply::Dir { entries, .. } => entries.iter_mut().for_each(|e| map(&mut e.ino)),
        MetaReply::DirPlus {
            entries, parent, ..
        } => {
            map(parent);
            for (e, a) in entries {
                map(&mut e.ino);
                outward_attr(root, a);
            }
        }
        MetaReply::Changed { dirs, reply, .. } => {
            dirs.iter_mut().for_each(|a| outward_attr(root, a));
            outward(root, reply);
        }
        MetaReply::Changes { changes, .. } => {
            for c in changes {
                match c {
                    Change::Entry { parent, .. } => map(parent),
                    Change::Inode { ino, .. } => map(ino),
                }
            }
        }
        _ => {}
    }
}
