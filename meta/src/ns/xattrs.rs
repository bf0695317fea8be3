//! Extended attributes, on a file system's namespace in memory.

use cpfs_proto::meta::{errno::*, Caller, Kind, RequestId};

use crate::inode::Inode;
use crate::perm::{self, R, W};
use crate::{fail, Res};

use super::state::FsState;
use super::MAX_XATTR_VALUE;

/// The most bytes (names and values) one inode's extended attributes may
/// take. The namespace lives in memory, so this bounds what one inode
/// can hold there; like ext4 with a full attribute block, more is ENOSPC.
pub const MAX_XATTR_BYTES_PER_INODE: u64 = 64 * 1024;

fn allowed(name: &[u8], i: &Inode, who: &Caller, write: bool) -> Res<()> {
    if name.is_empty() || name.len() > 255 {
        return fail(ERANGE, "xattr name must be 1-255 bytes");
    }
    if name.starts_with(b"system.") || name.starts_with(b"security.") {
        // Clients answer security.* reads locally (the kernel asks for
        // security.capability before every write), so none is stored.
        return fail(
            95,
            "system.* (ACLs) and security.* attributes are not supported",
        );
    }
    if name.starts_with(b"trusted.") && who.uid != 0 {
        return fail(EPERM, "trusted.* is for root");
    }
    if name.starts_with(b"user.") && !matches!(i.attr.kind, Kind::File | Kind::Dir) {
        return fail(EPERM, "user.* attributes only on files and directories");
    }
    perm::check(&i.attr, who, if write { W } else { R })
        .map_err(|e| (e, "xattr permission".to_string()))
}

impl FsState {
    /// Sets an attribute; its name and value count against `capacity`
    /// like file data.
    #[allow(clippy::too_many_arguments)]
    pub fn setxattr(
        &mut self,
        who: &Caller,
        ino: u64,
        (name, value): (&[u8], &[u8]),
        flags: u32,
        capacity: u64,
        id: Option<RequestId>,
        t: i64,
    ) -> Res<()> {
        if value.len() > MAX_XATTR_VALUE {
            return fail(7, "xattr value larger than 64 KiB"); // E2BIG
        }
        self.not_applied(id)?;
        allowed(name, self.inode(ino)?, who, true)?;
        match (self.xattr(ino, name).is_some(), flags) {
            (true, 1) => return fail(EEXIST, "xattr exists (XATTR_CREATE)"),
            (false, 2) => return fail(ENODATA, "no such xattr (XATTR_REPLACE)"),
            _ => {}
        }
        let old = self.xattr_bytes(ino);
        let replaced = self
            .xattr(ino, name)
            .map_or(0, |v| (name.len() + v.len()) as u64);
        let new = old - replaced + (name.len() + value.len()) as u64;
        if new > MAX_XATTR_BYTES_PER_INODE {
            return fail(ENOSPC, "an inode's extended attributes hold at most 64 KiB");
        }
        let fileset = self.fileset_of(ino);
        let owner = self.counted_owner(ino);
        self.quota_allows(fileset, new.saturating_sub(old), 0)?;
        self.owner_allows(owner, new.saturating_sub(old), 0, who.uid == 0)?;
        let used = self.grown(capacity, old, new)?;
        self.count(|c| c.used_bytes = used);
        self.charge(fileset, new as i64 - old as i64, 0);
        self.owner_charge(owner, new as i64 - old as i64, 0);
        self.set_xattr(ino, name, Some(value));
        self.update_inode(ino, |i| i.attr.ctime_ns = t)?;
        self.record(id, 0, t);
        Ok(())
    }

    pub fn getxattr(&self, who: &Caller, ino: u64, name: &[u8]) -> Res<Vec<u8>> {
        allowed(name, self.inode(ino)?, who, false)?;
        self.xattr(ino, name)
            .cloned()
            .ok_or((ENODATA, "no such xattr".into()))
    }

    pub fn listxattr(&self, ino: u64) -> Res<Vec<Vec<u8>>> {
        self.inode(ino)?;
        Ok(self.xattr_names(ino))
    }

    pub fn removexattr(
        &mut self,
        who: &Caller,
        ino: u64,
        name: &[u8],
        id: Option<RequestId>,
        t: i64,
    ) -> Res<()> {
        self.not_applied(id)?;
        allowed(name, self.inode(ino)?, who, true)?;
        let Some(value) = self.xattr(ino, name) else {
            return fail(ENODATA, "no such xattr");
        };
        let freed = (name.len() + value.len()) as u64;
        self.count(|c| c.used_bytes = c.used_bytes.saturating_sub(freed));
        let fileset = self.fileset_of(ino);
        self.charge(fileset, -(freed as i64), 0);
        let owner = self.counted_owner(ino);
        self.owner_charge(owner, -(freed as i64), 0);
        self.set_xattr(ino, name, None);
        self.record(id, 0, t);
        Ok(())
    }
}
