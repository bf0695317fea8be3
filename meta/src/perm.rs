//! POSIX permission checks for a caller.

use cpfs_proto::meta::{errno, Attr, Caller};

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

pub fn in_group(c: &Caller, gid: u32) -> bool {
    c.gid == gid || c.groups.contains(&gid)
}

/// Whether `c` may access `a` for every bit of `mask` (R/W/X).
pub fn allowed(a: &Attr, c: &Caller, mask: u32) -> bool {
    if c.uid == 0 {
        // Root reads and writes anything; it executes only what someone may.
        return mask & X == 0 || a.kind == cpfs_proto::meta::Kind::Dir || a.perm & 0o111 != 0;
    }
    let bits = if c.uid == a.uid {
        (a.perm >> 6) & 7
    } else if in_group(c, a.gid) {
        (a.perm >> 3) & 7
    } else {
        a.perm & 7
    };
    bits & mask == mask
}

pub fn check(a: &Attr, c: &Caller, mask: u32) -> Result<(), i32> {
    if allowed(a, c, mask) {
        Ok(())
    } else {
        Err(errno::EACCES)
    }
}

/// Removing or renaming `victim` out of `dir`: write+search on the dir, and
/// with the sticky bit only the owner of the file or the dir (or root).
pub fn may_delete(dir: &Attr, victim: &Attr, c: &Caller) -> Result<(), i32> {
    check(dir, c, W | X)?;
    if dir.perm & 0o1000 != 0 && c.uid != 0 && c.uid != dir.uid && c.uid != victim.uid {
        return Err(errno::EPERM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpfs_proto::meta::Kind;

    fn attr(perm: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            ino: 2,
            kind: Kind::File,
            perm,
            nlink: 1,
            uid,
            gid,
            size: 0,
            stored: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            rdev: 0,
        }
    }

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn owner_group_other() {
        let a = attr(0o640, 10, 20);
        assert!(allowed(&a, &caller(10, 1, &[]), R | W));
        assert!(allowed(&a, &caller(11, 20, &[]), R));
        assert!(!allowed(&a, &caller(11, 20, &[]), W));
        assert!(allowed(&a, &caller(11, 1, &[20]), R), "supplementary group");
        assert!(!allowed(&a, &caller(11, 1, &[]), R));
        assert!(allowed(&a, &caller(0, 0, &[]), R | W));
        assert!(!allowed(&a, &caller(0, 0, &[]), X), "root needs some x bit");
    }

    #[test]
    fn sticky_directories() {
        let mut dir = attr(0o1777, 0, 0);
        dir.kind = Kind::Dir;
        let f = attr(0o644, 10, 10);
        assert_eq!(
            may_delete(&dir, &f, &caller(11, 11, &[])),
            Err(errno::EPERM)
        );
        assert!(may_delete(&dir, &f, &caller(10, 10, &[])).is_ok());
    }
}
