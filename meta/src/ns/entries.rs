//! Names: lookup, attributes, creating, linking, unlinking and renaming,
//! on a file system's namespace in memory. Each operation checks all that
//! POSIX requires first and changes the namespace only once nothing can
//! fail any more.

use cpfs_proto::layout::Layout;
use cpfs_proto::meta::{errno::*, Attr, Caller, Kind, RequestId, SetAttr, NAME_MAX, ROOT_INO};

use crate::inode::Inode;
use crate::perm::{self, W, X};
use crate::{fail, Res};

use super::state::FsState;
use super::{check_name, NewNode, APPLIED};

/// Longest symlink target: what FUSE's readlink can return.
const MAX_SYMLINK: usize = 4095;

impl FsState {
    /// Fails with [`APPLIED`] when request `id` was applied already.
    pub(super) fn not_applied(&self, id: Option<RequestId>) -> Res<()> {
        match id {
            Some(id) if self.request(id.client, id.seq).is_some() => {
                fail(APPLIED, "applied by an earlier attempt")
            }
            _ => Ok(()),
        }
    }

    pub(super) fn record(&mut self, id: Option<RequestId>, ino: u64, t_ns: i64) {
        if let Some(id) = id {
            self.record_request(id.client, id.seq, ino, t_ns / 1_000_000_000);
        }
    }

    /// A directory the caller may add to or remove from.
    pub(super) fn writable_dir(&self, ino: u64, who: &Caller) -> Res<&Inode> {
        let d = self.inode(ino)?;
        if d.attr.kind != Kind::Dir {
            return fail(ENOTDIR, "not a directory");
        }
        perm::check(&d.attr, who, W | X).map_err(|e| (e, "directory not writable".to_string()))?;
        Ok(d)
    }

    fn touch_dir(&mut self, ino: u64, nlink_delta: i32, t: i64) -> Res<()> {
        self.update_inode(ino, |d| {
            d.attr.mtime_ns = t;
            d.attr.ctime_ns = t;
            d.attr.nlink = d.attr.nlink.saturating_add_signed(nlink_delta);
        })
        .map(|_| ())
    }

    pub fn lookup(&self, who: &Caller, parent: u64, name: &[u8]) -> Res<Attr> {
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        let p = self.inode(parent)?;
        if p.attr.kind != Kind::Dir {
            return fail(ENOTDIR, "not a directory");
        }
        perm::check(&p.attr, who, X).map_err(|e| (e, "search permission".to_string()))?;
        let ino = match name {
            b"." => parent,
            b".." => p.parent,
            _ => match self.child(parent, name) {
                Some((i, _)) => i,
                None => return fail(ENOENT, "no such entry"),
            },
        };
        self.attr(ino)
    }

    /// The new used-bytes figure after a file goes from `old` to `new`
    /// bytes, refusing growth beyond `capacity`.
    pub(super) fn grown(&self, capacity: u64, old: u64, new: u64) -> Res<u64> {
        let used = self.counters.used_bytes;
        if new > old && used.saturating_add(new - old) > capacity {
            return fail(ENOSPC, "file system capacity reached");
        }
        Ok((used + new).saturating_sub(old))
    }

    pub fn setattr(
        &mut self,
        who: &Caller,
        ino: u64,
        set: SetAttr,
        capacity: u64,
        t: i64,
    ) -> Res<Attr> {
        let mut a = self.attr(ino)?;
        let counted = self.counted_owner(ino);
        let owner = who.uid == 0 || who.uid == a.uid;
        if let Some(mode) = set.mode {
            if !owner {
                return fail(EPERM, "only the owner may chmod");
            }
            a.perm = mode & 0o7777;
            if who.uid != 0 && !perm::in_group(who, a.gid) {
                a.perm &= !0o2000;
            }
        }
        if set.uid.is_some_and(|u| u != a.uid) && who.uid != 0 {
            return fail(EPERM, "only root may change the owner");
        }
        if let Some(g) = set.gid.filter(|g| *g != a.gid) {
            if who.uid != 0 && !(who.uid == a.uid && perm::in_group(who, g)) {
                return fail(EPERM, "may not change the group");
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            a.uid = set.uid.unwrap_or(a.uid);
            a.gid = set.gid.unwrap_or(a.gid);
            if a.kind != Kind::Dir && who.uid != 0 {
                a.perm &= !0o6000;
            }
        }
        let mut used = None;
        let mut freed = 0;
        if let Some(size) = set.size {
            match a.kind {
                Kind::Dir => return fail(EISDIR, "truncate of a directory"),
                Kind::File => {}
                _ => return fail(EINVAL, "truncate of a special file"),
            }
            perm::check(&a, who, W)
                .map_err(|e| (e, "truncate needs write permission".to_string()))?;
            if size > super::MAX_FILE_SIZE {
                return fail(EFBIG, "larger than the largest file size");
            }
            // Extending stores nothing (a hole), so it counts nothing, as
            // `du` would have it; cutting frees what was stored past the
            // new end. Growth is checked against the capacity when a
            // write reaches it.
            let stored = a.stored.min(size);
            used = Some(self.grown(capacity, a.stored, stored)?);
            freed = a.stored - stored;
            a.stored = stored;
            a.size = size;
            a.mtime_ns = t;
        }
        check_times(owner, &a, who, &set)?;
        for (want, slot) in [(set.atime_ns, 0), (set.mtime_ns, 1)] {
            if let Some(when) = want {
                let v = when.unwrap_or(t);
                if slot == 0 {
                    a.atime_ns = v;
                } else {
                    a.mtime_ns = v;
                }
            }
        }
        a.ctime_ns = t;
        // The inode's usage moves to its new owner (and shrinks by what a
        // truncate freed); a non-root transfer may not pass the new
        // owner's limits.
        let moved_to = counted.map(|_| (a.uid, a.gid));
        let held = self.inode_bytes(ino);
        if let (Some((old_uid, old_gid)), Some((uid, gid))) = (counted, moved_to) {
            let exempt = who.uid == 0;
            let kept = held - freed;
            if uid != old_uid {
                self.owner_allows(Some((uid, u32::MAX)), kept, 1, exempt)?;
            }
            if gid != old_gid {
                self.owner_allows(Some((u32::MAX, gid)), kept, 1, exempt)?;
            }
        }
        if let Some(used) = used {
            self.count(|c| c.used_bytes = used);
        }
        if counted != moved_to || freed > 0 {
            self.owner_charge(counted, -(held as i64), -1);
            self.owner_charge(moved_to, (held - freed) as i64, 1);
        }
        if freed > 0 {
            let fileset = self.fileset_of(ino);
            self.charge(fileset, -(freed as i64), 0);
        }
        self.update_inode(ino, |i| i.attr = a)
    }

    pub fn create(
        &mut self,
        who: &Caller,
        parent: u64,
        name: &[u8],
        new: NewNode,
        id: Option<RequestId>,
        t: i64,
    ) -> Res<Attr> {
        let NewNode {
            kind,
            perm: perm_bits,
            rdev,
            target,
        } = new;
        check_name(name)?;
        if let Some(t) = &target {
            // What readlink can give back: a page less its terminating NUL.
            if t.len() > MAX_SYMLINK {
                return fail(ENAMETOOLONG, "symlink target longer than 4095 bytes");
            }
            if t.is_empty() || t.contains(&0) {
                return fail(EINVAL, "symlink target empty or holding NUL");
            }
        }
        self.not_applied(id)?;
        let p = self.writable_dir(parent, who)?;
        if self.child(parent, name).is_some() {
            return fail(EEXIST, "exists");
        }
        let fileset = self.fileset_of(parent);
        self.quota_allows(fileset, 0, 1)?;
        let sgid_dir = p.attr.perm & 0o2000 != 0;
        let new_owner = (who.uid, if sgid_dir { p.attr.gid } else { who.gid });
        let owner = self.has_owner_quotas().then_some(new_owner);
        self.owner_allows(owner, 0, 1, who.uid == 0)?;
        let (p_gid, p_chunk, p_chains) = (p.attr.gid, p.chunk_size, p.chains.clone());
        let mut perm_bits = perm_bits & 0o7777;
        if kind == Kind::Dir && sgid_dir {
            perm_bits |= 0o2000;
        }
        let ino = self.new_ino();
        let mut node = Inode {
            attr: Attr {
                ino,
                kind,
                perm: if kind == Kind::Symlink {
                    0o777
                } else {
                    perm_bits
                },
                nlink: if kind == Kind::Dir { 2 } else { 1 },
                uid: who.uid,
                gid: if sgid_dir { p_gid } else { who.gid },
                size: target.as_ref().map_or(0, |t| t.len() as u64),
                stored: 0,
                atime_ns: t,
                mtime_ns: t,
                ctime_ns: t,
                rdev,
            },
            parent,
            target,
            // Files and directories inherit the directory's layout.
            chunk_size: p_chunk,
            chains: p_chains,
        };
        if kind == Kind::File && !node.chains.is_empty() && !self.chains.is_empty() {
            // A file keeps the directory's stripe width and chunk size but
            // starts at a chain picked by its inode number, so the files of
            // one directory spread over every chain of the file system
            // (and over every node once chains are rebalanced).
            let all = &self.chains;
            node.chains = Layout::stripe(
                p_chunk,
                all,
                node.chains.len() as u32,
                (ino as usize) % all.len(),
            )
            .chains;
        }
        let attr = node.attr.clone();
        self.put_inode(node);
        self.count(|c| c.files += 1);
        self.charge(fileset, 0, 1);
        self.owner_charge(owner, 0, 1);
        self.add_entry(parent, name, ino, kind);
        self.touch_dir(parent, if kind == Kind::Dir { 1 } else { 0 }, t)?;
        self.record(id, ino, t);
        Ok(attr)
    }

    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let i = self.inode(ino)?;
        match (i.attr.kind, &i.target) {
            (Kind::Symlink, Some(t)) => Ok(t.clone()),
            _ => fail(EINVAL, "not a symlink"),
        }
    }

    pub fn link(
        &mut self,
        who: &Caller,
        ino: u64,
        (new_parent, new_name): (u64, &[u8]),
        id: Option<RequestId>,
        t: i64,
    ) -> Res<Attr> {
        check_name(new_name)?;
        self.not_applied(id)?;
        let kind = self.inode(ino)?.attr.kind;
        if kind == Kind::Dir {
            return fail(EPERM, "hard links to directories are not allowed");
        }
        self.writable_dir(new_parent, who)?;
        if self.child(new_parent, new_name).is_some() {
            return fail(EEXIST, "exists");
        }
        if self.fileset_of(ino) != self.fileset_of(new_parent) {
            return fail(EXDEV, "a link cannot cross a fileset's boundary");
        }
        self.add_entry(new_parent, new_name, ino, kind);
        let out = self.update_inode(ino, |i| {
            i.attr.nlink += 1;
            i.attr.ctime_ns = t;
        })?;
        self.touch_dir(new_parent, 0, t)?;
        self.record(id, ino, t);
        Ok(out)
    }

    /// Drops the link of a non-directory that `dir` held (its entry is
    /// removed already); the last one makes it an orphan whose data goes
    /// once nobody holds it open. When links remain and `dir` was the one
    /// the inode's `parent` named, another directory holding it takes its
    /// place: the permission walk (reach.rs) goes through `parent`.
    fn drop_link(&mut self, ino: u64, dir: u64, t: i64) -> Res<()> {
        let i = self.inode(ino)?;
        let moved = if i.parent == dir && i.attr.nlink > 1 {
            self.another_parent(ino, dir)
        } else {
            None
        };
        let fileset = self.fileset_of(ino);
        let owner = self.counted_owner(ino);
        let bytes = self.inode_bytes(ino) as i64;
        let left = self
            .update_inode(ino, |i| {
                i.attr.nlink = i.attr.nlink.saturating_sub(1);
                i.attr.ctime_ns = t;
                if let Some(p) = moved {
                    i.parent = p;
                }
            })?
            .nlink;
        if left == 0 {
            // Out of the namespace: it stops counting for its fileset now
            // (the file system's figures drop when its data goes).
            self.charge(fileset, -bytes, -1);
            self.owner_charge(owner, -bytes, -1);
            self.set_orphan(ino, Some(t / 1_000_000_000));
        } else if moved.is_some() {
            let now_in = self.fileset_of(ino);
            if now_in != fileset {
                self.charge(fileset, -bytes, -1);
                self.charge(now_in, bytes, 1);
            }
        }
        Ok(())
    }

    fn remove_dir(&mut self, parent: u64, name: &[u8], ino: u64, t: i64) -> Res<()> {
        let fileset = self.fileset_of(ino);
        let owner = self.counted_owner(ino);
        let bytes = self.inode_bytes(ino) as i64;
        self.charge(fileset, -bytes, -1);
        self.owner_charge(owner, -bytes, -1);
        self.remove_entry(parent, name);
        self.remove_inode(ino);
        self.count(|c| c.files = c.files.saturating_sub(1));
        self.touch_dir(parent, -1, t)
    }

    pub fn unlink(
        &mut self,
        who: &Caller,
        (parent, name): (u64, &[u8]),
        dir: bool,
        id: Option<RequestId>,
        t: i64,
    ) -> Res<()> {
        if name == b"." {
            return fail(EINVAL, "cannot remove .");
        }
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        self.not_applied(id)?;
        let p = self.writable_dir(parent, who)?;
        let Some((ino, _)) = self.child(parent, name) else {
            return fail(ENOENT, "no such entry");
        };
        let victim = self.inode(ino)?;
        perm::may_delete(&p.attr, &victim.attr, who)
            .map_err(|e| (e, "sticky directory".to_string()))?;
        let is_dir = victim.attr.kind == Kind::Dir;
        if dir {
            if !is_dir {
                return fail(ENOTDIR, "not a directory");
            }
            if !self.is_empty_dir(ino) {
                return fail(ENOTEMPTY, "directory not empty");
            }
            if self.filesets.contains_key(&ino) {
                return fail(EBUSY, "the root of a fileset (delete the fileset first)");
            }
            self.remove_dir(parent, name, ino, t)?;
        } else {
            if is_dir {
                return fail(EISDIR, "is a directory");
            }
            self.remove_entry(parent, name);
            self.drop_link(ino, parent, t)?;
            self.touch_dir(parent, 0, t)?;
        }
        self.record(id, 0, t);
        Ok(())
    }

    /// Moves `from` (parent, name) to `to` (parent, name).
    pub fn rename(
        &mut self,
        who: &Caller,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        flags: u32,
        id: Option<RequestId>,
        t: i64,
    ) -> Res<()> {
        let ((parent, name), (new_parent, new_name)) = (from, to);
        check_name(new_name)?;
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        if flags & 2 != 0 {
            return fail(EINVAL, "RENAME_EXCHANGE is not supported");
        }
        self.not_applied(id)?;
        let sp = self.writable_dir(parent, who)?.attr.clone();
        let dp = self.writable_dir(new_parent, who)?.attr.clone();
        let Some((src_ino, src_kind)) = self.child(parent, name) else {
            return fail(ENOENT, "no such entry");
        };
        let src = self.attr(src_ino)?;
        perm::may_delete(&sp, &src, who).map_err(|e| (e, "sticky directory".to_string()))?;
        let src_is_dir = src_kind == Kind::Dir;
        if src_is_dir && parent != new_parent {
            // A directory may not move into its own subtree.
            let mut up = new_parent;
            while up != ROOT_INO {
                if up == src_ino {
                    return fail(EINVAL, "cannot move a directory into itself");
                }
                up = self.inode(up)?.parent;
            }
        }
        if !self.filesets.is_empty() {
            if src_is_dir && self.holds_fileset_root(src_ino) {
                return fail(
                    EBUSY,
                    "a fileset's root, or a directory above one, cannot move",
                );
            }
            if self.fileset_of(src_ino) != self.fileset_of(new_parent) {
                return fail(EXDEV, "a rename cannot cross a fileset's boundary");
            }
        }
        // Every check of the target comes before the first change.
        let mut replaced = None;
        if let Some((dst_ino, dst_kind)) = self.child(new_parent, new_name) {
            if dst_ino == src_ino {
                self.record(id, 0, t);
                return Ok(());
            }
            if flags & 1 != 0 {
                return fail(EEXIST, "target exists (RENAME_NOREPLACE)");
            }
            let dst = self.attr(dst_ino)?;
            perm::may_delete(&dp, &dst, who).map_err(|e| (e, "sticky directory".to_string()))?;
            match (src_is_dir, dst_kind == Kind::Dir) {
                (true, false) => {
                    return fail(ENOTDIR, "cannot replace a non-directory with a directory")
                }
                (false, true) => {
                    return fail(EISDIR, "cannot replace a directory with a non-directory")
                }
                (true, true) if !self.is_empty_dir(dst_ino) => {
                    return fail(ENOTEMPTY, "target directory not empty")
                }
                (true, true) if self.filesets.contains_key(&dst_ino) => {
                    return fail(EBUSY, "the target is a fileset's root")
                }
                _ => {}
            }
            replaced = Some((dst_ino, dst_kind == Kind::Dir));
        }
        match replaced {
            Some((dst_ino, true)) => self.remove_dir(new_parent, new_name, dst_ino, t)?,
            Some((dst_ino, false)) => {
                self.remove_entry(new_parent, new_name);
                self.drop_link(dst_ino, new_parent, t)?;
            }
            None => {}
        }
        self.remove_entry(parent, name);
        self.add_entry(new_parent, new_name, src_ino, src_kind);
        // The new directory holds it now: a directory's `..`, and for a
        // file a directory through which it is reached (reach.rs).
        self.update_inode(src_ino, |i| {
            i.attr.ctime_ns = t;
            i.parent = new_parent;
        })?;
        let moved_dir = src_is_dir && parent != new_parent;
        self.touch_dir(parent, if moved_dir { -1 } else { 0 }, t)?;
        if parent != new_parent {
            self.touch_dir(new_parent, if moved_dir { 1 } else { 0 }, t)?;
        }
        self.record(id, 0, t);
        Ok(())
    }
}

/// Whether `who` may set the times `set` asks for on `a` (`owner`: `who`
/// owns it or is root): explicit times need the owner, "now" the owner or
/// write permission.
fn check_times(owner: bool, a: &Attr, who: &Caller, set: &SetAttr) -> Res<()> {
    for when in [set.atime_ns, set.mtime_ns].into_iter().flatten() {
        match when {
            Some(_) if !owner => return fail(EPERM, "only the owner may set times"),
            None if !owner && !perm::allowed(a, who, W) => {
                return fail(EACCES, "touch needs write permission")
            }
            _ => {}
        }
    }
    Ok(())
}

impl FsState {
    /// Whether `set` is a truncate (with times, perhaps) of regular file
    /// `ino` that `setattr` will take from `who`: checked before a change
    /// made ahead of it in the same operation.
    pub fn takes_truncate(&self, who: &Caller, ino: u64, set: &SetAttr) -> bool {
        let Ok(a) = self.attr(ino) else {
            return false;
        };
        let truncate_alone = set.mode.is_none() && set.uid.is_none() && set.gid.is_none();
        truncate_alone
            && a.kind == Kind::File
            && set.size.is_some_and(|s| s <= super::MAX_FILE_SIZE)
            && perm::allowed(&a, who, W)
            && check_times(who.uid == 0 || who.uid == a.uid, &a, who, set).is_ok()
    }

    /// Checks, before anything changes, that `who` may set the times
    /// `set` asks for on `ino` (a record of the size written goes first
    /// in the same change: see `SetAttr::written`).
    pub fn may_set_times(&self, who: &Caller, ino: u64, set: &SetAttr) -> Res<()> {
        let a = self.attr(ino)?;
        check_times(who.uid == 0 || who.uid == a.uid, &a, who, set)
    }
}
