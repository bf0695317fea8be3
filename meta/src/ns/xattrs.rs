//! Extended attributes, on a file system's namespace in memory.

use cpfs_proto::meta::{errno::*, Caller, Kind, RequestId};

use crate::inode::Inode;
use crate::perm::{self, R, W};
use crate::{fail, Res};

use super::state::FsState;
use super::MAX_XATTR_VALUE;

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
    pub fn setxattr(
        &mut self,
        who: &Caller,
        ino: u64,
        (name, value): (&[u8], &[u8]),
        flags: u32,
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
        if self.xattr(ino, name).is_none() {
            return fail(ENODATA, "no such xattr");
        }
        self.set_xattr(ino, name, None);
        self.record(id, 0, t);
        Ok(())
    }
}
