//! Open files, listings, sizes written, statfs and the removal of orphans,
//! on a file system's namespace in memory.

use cpfs_proto::layout::{self, Layout};
use cpfs_proto::meta::{errno::*, Attr, Caller, DirEntry, Kind};

use crate::inode::Inode;
use crate::perm::{self, R, W, X};
use crate::{fail, Res};

use super::state::FsState;
use super::MAX_READDIR;

/// A page of a directory listing with each entry's attributes.
pub struct DirPage {
    pub entries: Vec<(DirEntry, Attr)>,
    /// The caller may look the names up (search permission).
    pub searchable: bool,
    /// More entries follow.
    pub more: bool,
    /// The directory's parent (the root's is itself).
    pub parent: u64,
}

impl FsState {
    /// Checks that `who` may open `ino` so, and moves its atime as relatime
    /// does. The inode as opened.
    pub fn open(&mut self, who: &Caller, ino: u64, read: bool, write: bool, t: i64) -> Res<Inode> {
        let i = self.inode(ino)?;
        if i.attr.kind == Kind::Dir && write {
            return fail(EISDIR, "is a directory");
        }
        let mask = if read { R } else { 0 } | if write { W } else { 0 };
        perm::check(&i.attr, who, mask).map_err(|e| (e, "open permission".to_string()))?;
        let a = &i.attr;
        // relatime: atime moves when it is older than mtime/ctime or a day.
        if read
            && (a.atime_ns <= a.mtime_ns
                || a.atime_ns <= a.ctime_ns
                || t - a.atime_ns > 86_400_000_000_000)
        {
            self.update_inode(ino, |i| i.attr.atime_ns = t)?;
        }
        Ok(self.inode(ino)?.clone())
    }

    pub fn access(&self, who: &Caller, ino: u64, mask: u32) -> Res<()> {
        let i = self.inode(ino)?;
        perm::check(&i.attr, who, mask & 7).map_err(|e| (e, "access".to_string()))
    }

    pub fn readdir(
        &self,
        who: &Caller,
        ino: u64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Res<(Vec<DirEntry>, bool)> {
        let d = self.inode(ino)?;
        if d.attr.kind != Kind::Dir {
            return fail(ENOTDIR, "not a directory");
        }
        perm::check(&d.attr, who, R).map_err(|e| (e, "read permission".to_string()))?;
        let limit = limit.clamp(1, MAX_READDIR) as usize;
        let mut entries: Vec<DirEntry> = self
            .entries(ino, after, limit + 1)
            .map(|(name, (ino, kind))| DirEntry {
                name: name.clone(),
                ino: *ino,
                kind: *kind,
            })
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }

    /// As [`FsState::readdir`], with each entry's attributes, whether `who`
    /// may look the entries up, and the directory's parent ([`DirPage`]).
    pub fn readdir_plus(
        &self,
        who: &Caller,
        ino: u64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Res<DirPage> {
        let (entries, more) = self.readdir(who, ino, after, limit)?;
        let dir = self.inode(ino)?;
        let searchable = perm::allowed(&dir.attr, who, X);
        let parent = dir.parent;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let a = self.attr(e.ino)?;
            out.push((e, a));
        }
        Ok(DirPage {
            entries: out,
            searchable,
            more,
            parent,
        })
    }

    /// A client wrote `ino` up to `size` bytes.
    /// `keep_privileges`: the writer is root (CAP_FSETID), whose writes
    /// leave setuid and setgid bits alone.
    pub fn written(
        &mut self,
        ino: u64,
        size: u64,
        capacity: u64,
        t: i64,
        keep_privileges: bool,
    ) -> Res<Attr> {
        let i = self.inode(ino)?;
        if i.attr.kind != Kind::File {
            return fail(EINVAL, "not a regular file");
        }
        if size > super::MAX_FILE_SIZE {
            return fail(EFBIG, "larger than the largest file size");
        }
        self.store_more(ino, size, capacity, keep_privileges)?;
        self.update_inode(ino, |i| {
            i.attr.size = i.attr.size.max(size);
            i.attr.stored = i.attr.stored.max(size);
            i.attr.mtime_ns = t;
            i.attr.ctime_ns = t;
            // Writing clears setuid/setgid, as a local file system does
            // (setgid only with group execute: otherwise it marks
            // mandatory locking).
            let clear = if keep_privileges {
                0
            } else if i.attr.perm & 0o010 != 0 {
                0o6000
            } else {
                0o4000
            };
            i.attr.perm &= !clear;
        })
    }

    /// Counts `ino`'s data as stored up to `upto` bytes, when that is more
    /// than it counts: checked against the fileset's, the owner's and the
    /// file system's limits before the client moves any data, so that a
    /// write past a limit fails whole, nothing of it stored.
    fn store_more(&mut self, ino: u64, upto: u64, capacity: u64, exempt: bool) -> Res<()> {
        let old = self.inode(ino)?.attr.stored;
        if upto <= old {
            return Ok(());
        }
        let fileset = self.fileset_of(ino);
        let owner = self.counted_owner(ino);
        self.quota_allows(fileset, upto - old, 0)?;
        self.owner_allows(owner, upto - old, 0, exempt)?;
        let used = self.grown(capacity, old, upto)?;
        self.count(|c| c.used_bytes = used);
        self.charge(fileset, (upto - old) as i64, 0);
        self.owner_charge(owner, (upto - old) as i64, 0);
        self.update_inode(ino, |i| i.attr.stored = upto)?;
        Ok(())
    }

    /// A client sets capacity aside for its writes to `ino` up to `upto`
    /// bytes (see `MetaOp::Reserve`): the file counts as stored that far,
    /// its size and times stay.
    pub fn reserve(&mut self, ino: u64, upto: u64, capacity: u64, exempt: bool) -> Res<Attr> {
        if self.inode(ino)?.attr.kind != Kind::File {
            return fail(EINVAL, "not a regular file");
        }
        self.store_more(ino, upto.min(super::MAX_FILE_SIZE), capacity, exempt)?;
        self.attr(ino)
    }

    /// Gives back what was set aside for `ino` and is held no longer: its
    /// stored bytes come down to its size, or to `keep` (what other
    /// sessions still hold) when that is more, and never go up.
    pub fn unreserve(&mut self, ino: u64, keep: u64) -> Res<()> {
        let (stored, floor) = match self.inodes.get(&ino) {
            Some(i) if i.attr.kind == Kind::File => (i.attr.stored, i.attr.size.max(keep)),
            _ => return Ok(()),
        };
        if stored <= floor {
            return Ok(());
        }
        let freed = stored - floor;
        let fileset = self.fileset_of(ino);
        let owner = self.counted_owner(ino);
        self.count(|c| c.used_bytes = c.used_bytes.saturating_sub(freed));
        self.charge(fileset, -(freed as i64), 0);
        self.owner_charge(owner, -(freed as i64), 0);
        self.update_inode(ino, |i| i.attr.stored = floor)?;
        Ok(())
    }

    /// Removes orphan `ino` (its data is gone from every node): its inode,
    /// attributes and the bytes and file it counted for.
    pub fn purge(&mut self, ino: u64) -> Res<()> {
        if !self.orphans.contains_key(&ino) {
            return Ok(());
        }
        let size = match self.inode(ino) {
            Ok(i) if i.attr.kind == Kind::File => i.attr.stored,
            _ => 0,
        };
        let known = self.inode(ino).is_ok();
        if known {
            self.remove_inode(ino);
        }
        self.set_orphan(ino, None);
        self.count(|c| {
            c.used_bytes = c.used_bytes.saturating_sub(size);
            if known {
                c.files = c.files.saturating_sub(1);
            }
        });
        Ok(())
    }

    pub fn get_stripe(&self, ino: u64) -> Res<(u64, u32)> {
        let i = self.inode(ino)?;
        Ok((i.chunk_size, i.chains.len() as u32))
    }

    pub fn set_stripe(
        &mut self,
        who: &Caller,
        ino: u64,
        (chunk_size, width): (u64, u32),
        t: i64,
    ) -> Res<()> {
        layout::validate(chunk_size, width).map_err(|m| (EINVAL, m))?;
        let i = self.inode(ino)?;
        if who.uid != 0 && who.uid != i.attr.uid {
            return fail(EPERM, "only the owner may set the stripe");
        }
        match i.attr.kind {
            Kind::Dir => {}
            Kind::File if i.attr.size == 0 => {}
            Kind::File => {
                return fail(
                    EINVAL,
                    "the stripe of a file can be set only while it is empty",
                )
            }
            _ => return fail(EINVAL, "stripes apply to files and directories"),
        }
        if self.chains.is_empty() {
            return fail(EIO, "no chains");
        }
        let all = &self.chains;
        let chains = Layout::stripe(chunk_size, all, width, (ino as usize) % all.len()).chains;
        self.update_inode(ino, |i| {
            i.chunk_size = chunk_size;
            i.chains = chains;
            i.attr.ctime_ns = t;
        })?;
        Ok(())
    }
}
