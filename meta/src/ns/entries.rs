//! Names: mounting, lookup, attributes, creating, linking, unlinking and
//! renaming.

use cpfs_proto::layout::Layout;
use cpfs_proto::meta::{
    errno::*, Attr, Caller, Kind, MetaReply, Mounted, RequestId, SetAttr, NAME_MAX, ROOT_INO,
};
use sqlx::AnyConnection;

use crate::perm::{self, W, X};
use crate::{fail, MetaService, Res, Session};

use super::*;

impl MetaService {
    pub(crate) async fn mount(&self, domain: &str, peer: std::net::IpAddr) -> Res<MetaReply> {
        // The access group decides whether this address may mount at all.
        let grant = self.fresh_grant(domain, peer).await?;
        let fs = grant.fs.clone();
        let mut c = self.conn().await?;
        let root = load(&mut c, &fs, ROOT_INO).await?;
        let chain_table = latest_chain_table(&mut c).await?;
        let session = self.add_session(Session {
            fs: fs.clone(),
            capacity_bytes: grant.capacity_bytes,
            domain: domain.to_string(),
            peer,
        });
        tracing::info!(
            fs = %fs,
            domain,
            %peer,
            writable = grant.writable,
            squash = ?grant.squash,
            ldap = grant.ldap.is_some(),
            "client mounted"
        );
        Ok(MetaReply::Mounted(Mounted {
            session,
            fs,
            root: root.attr,
            chain_table,
        }))
    }

    pub(crate) async fn lookup(
        &self,
        s: &Session,
        who: &Caller,
        parent: u64,
        name: &[u8],
    ) -> Res<Attr> {
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        let mut c = self.conn().await?;
        let p = load(&mut c, &s.fs, parent).await?;
        if p.attr.kind != Kind::Dir {
            return fail(ENOTDIR, "not a directory");
        }
        perm::check(&p.attr, who, X).map_err(|e| (e, "search permission".to_string()))?;
        let ino = match name {
            b"." => parent,
            b".." => p.parent,
            _ => match child(&mut c, &s.fs, parent, name).await? {
                Some(i) => i,
                None => return fail(ENOENT, "no such entry"),
            },
        };
        Ok(load(&mut c, &s.fs, ino).await?.attr)
    }

    pub(crate) async fn getattr(&self, s: &Session, ino: u64) -> Res<Attr> {
        let mut c = self.conn().await?;
        Ok(load(&mut c, &s.fs, ino).await?.attr)
    }

    pub(crate) async fn setattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        set: SetAttr,
    ) -> Res<Attr> {
        let mut tx = self.tx().await?;
        let cur = load(&mut tx, &s.fs, ino).await?;
        let mut a = cur.attr.clone();
        let owner = who.uid == 0 || who.uid == a.uid;
        let t = now_ns();
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
        if let Some(size) = set.size {
            match a.kind {
                Kind::Dir => return fail(EISDIR, "truncate of a directory"),
                Kind::File => {}
                _ => return fail(EINVAL, "truncate of a special file"),
            }
            perm::check(&a, who, W)
                .map_err(|e| (e, "truncate needs write permission".to_string()))?;
            self.account_growth(&mut tx, s, a.size, size).await?;
            a.size = size;
            a.mtime_ns = t;
        }
        for (want, slot) in [(set.atime_ns, 0), (set.mtime_ns, 1)] {
            if let Some(when) = want {
                match when {
                    Some(_) if !owner => return fail(EPERM, "only the owner may set times"),
                    None if !owner && !perm::allowed(&a, who, W) => {
                        return fail(EACCES, "touch needs write permission")
                    }
                    _ => {}
                }
                let v = when.unwrap_or(t);
                if slot == 0 {
                    a.atime_ns = v;
                } else {
                    a.mtime_ns = v;
                }
            }
        }
        a.ctime_ns = t;
        db(sqlx::query("UPDATE inodes SET perm = $1, uid = $2, gid = $3, size = $4, atime_ns = $5, mtime_ns = $6, ctime_ns = $7 WHERE fs_id = $8 AND ino = $9")
            .bind(a.perm as i64)
            .bind(a.uid as i64)
            .bind(a.gid as i64)
            .bind(a.size as i64)
            .bind(a.atime_ns)
            .bind(a.mtime_ns)
            .bind(a.ctime_ns)
            .bind(&s.fs)
            .bind(ino as i64)
            .execute(&mut *tx)
            .await)?;
        db(tx.commit().await)?;
        Ok(a)
    }

    /// Adds `new - old` to the file system's used bytes, refusing growth
    /// beyond its capacity.
    pub(crate) async fn account_growth(
        &self,
        c: &mut AnyConnection,
        s: &Session,
        old: u64,
        new: u64,
    ) -> Res<()> {
        if new > old {
            let (used,): (i64,) = db(sqlx::query_as(
                "SELECT used_bytes FROM fs_counters WHERE fs_id = $1",
            )
            .bind(&s.fs)
            .fetch_one(&mut *c)
            .await)?;
            if used as u64 + (new - old) > s.capacity_bytes {
                return fail(ENOSPC, "file system capacity reached");
            }
        }
        db(
            sqlx::query("UPDATE fs_counters SET used_bytes = used_bytes + $1 WHERE fs_id = $2")
                .bind(new as i64 - old as i64)
                .bind(&s.fs)
                .execute(&mut *c)
                .await,
        )?;
        Ok(())
    }

    pub(crate) async fn create(
        &self,
        s: &Session,
        who: &Caller,
        parent: u64,
        name: &[u8],
        new: NewNode,
        id: Option<RequestId>,
    ) -> Res<Attr> {
        let NewNode {
            kind,
            perm: perm_bits,
            rdev,
            target,
        } = new;
        check_name(name)?;
        if target
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > 4096)
        {
            return fail(EINVAL, "symlink target must be 1-4096 bytes");
        }
        let ino = self.new_ino(&s.fs).await?;
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, ino).await?;
        let p = writable_dir(&mut tx, &s.fs, parent, who).await?;
        if child(&mut tx, &s.fs, parent, name).await?.is_some() {
            return fail(EEXIST, "exists");
        }
        let t = now_ns();
        let sgid_dir = p.attr.perm & 0o2000 != 0;
        let mut perm_bits = perm_bits & 0o7777;
        if kind == Kind::Dir && sgid_dir {
            perm_bits |= 0o2000;
        }
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
                gid: if sgid_dir { p.attr.gid } else { who.gid },
                size: target.as_ref().map_or(0, |t| t.len() as u64),
                atime_ns: t,
                mtime_ns: t,
                ctime_ns: t,
                rdev,
            },
            parent,
            target,
            // Files and directories inherit the directory's layout.
            chunk_size: p.chunk_size,
            chains: p.chains.clone(),
        };
        if kind == Kind::File && !p.chains.is_empty() {
            // A file keeps the directory's stripe width and chunk size but
            // starts at a chain picked by its inode number, so the files of
            // one directory spread over every chain of the file system
            // (and over every node once chains are rebalanced).
            let (_, _, all) = fs_layout(&mut tx, &s.fs).await?;
            if !all.is_empty() {
                node.chains = Layout::stripe(
                    p.chunk_size,
                    &all,
                    p.chains.len() as u32,
                    (ino as usize) % all.len(),
                )
                .chains;
            }
        }
        insert_inode(&mut tx, &s.fs, &node).await?;
        add_dentry(&mut tx, &s.fs, parent, name, ino, kind).await?;
        touch_dir(
            &mut tx,
            &s.fs,
            parent,
            if kind == Kind::Dir { 1 } else { 0 },
            t,
        )
        .await?;
        db(tx.commit().await)?;
        Ok(node.attr)
    }

    pub(crate) async fn readlink(&self, s: &Session, ino: u64) -> Res<Vec<u8>> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        match (i.attr.kind, i.target) {
            (Kind::Symlink, Some(t)) => Ok(t),
            _ => fail(EINVAL, "not a symlink"),
        }
    }

    pub(crate) async fn link(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        new_parent: u64,
        new_name: &[u8],
        id: Option<RequestId>,
    ) -> Res<Attr> {
        check_name(new_name)?;
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, ino).await?;
        let i = load(&mut tx, &s.fs, ino).await?;
        if i.attr.kind == Kind::Dir {
            return fail(EPERM, "hard links to directories are not allowed");
        }
        writable_dir(&mut tx, &s.fs, new_parent, who).await?;
        if child(&mut tx, &s.fs, new_parent, new_name).await?.is_some() {
            return fail(EEXIST, "exists");
        }
        let t = now_ns();
        add_dentry(&mut tx, &s.fs, new_parent, new_name, ino, i.attr.kind).await?;
        db(sqlx::query(
            "UPDATE inodes SET nlink = nlink + 1, ctime_ns = $1 WHERE fs_id = $2 AND ino = $3",
        )
        .bind(t)
        .bind(&s.fs)
        .bind(ino as i64)
        .execute(&mut *tx)
        .await)?;
        touch_dir(&mut tx, &s.fs, new_parent, 0, t).await?;
        let out = load(&mut tx, &s.fs, ino).await?.attr;
        db(tx.commit().await)?;
        Ok(out)
    }

    pub(crate) async fn unlink(
        &self,
        s: &Session,
        who: &Caller,
        parent: u64,
        name: &[u8],
        dir: bool,
        id: Option<RequestId>,
    ) -> Res<()> {
        if name == b"." {
            return fail(EINVAL, "cannot remove .");
        }
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, 0).await?;
        let p = writable_dir(&mut tx, &s.fs, parent, who).await?;
        let Some(ino) = child(&mut tx, &s.fs, parent, name).await? else {
            return fail(ENOENT, "no such entry");
        };
        let victim = load(&mut tx, &s.fs, ino).await?;
        perm::may_delete(&p.attr, &victim.attr, who)
            .map_err(|e| (e, "sticky directory".to_string()))?;
        let t = now_ns();
        if dir {
            if victim.attr.kind != Kind::Dir {
                return fail(ENOTDIR, "not a directory");
            }
            if !is_empty_dir(&mut tx, &s.fs, ino).await? {
                return fail(ENOTEMPTY, "directory not empty");
            }
            remove_dentry(&mut tx, &s.fs, parent, name).await?;
            delete_dir_inode(&mut tx, &s.fs, ino).await?;
            touch_dir(&mut tx, &s.fs, parent, -1, t).await?;
        } else {
            if victim.attr.kind == Kind::Dir {
                return fail(EISDIR, "is a directory");
            }
            remove_dentry(&mut tx, &s.fs, parent, name).await?;
            unlink_inode(&mut tx, &s.fs, ino, t).await?;
            touch_dir(&mut tx, &s.fs, parent, 0, t).await?;
        }
        db(tx.commit().await)?;
        Ok(())
    }

    /// Moves `from` (parent, name) to `to` (parent, name).
    pub(crate) async fn rename(
        &self,
        s: &Session,
        who: &Caller,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        flags: u32,
        id: Option<RequestId>,
    ) -> Res<()> {
        let ((parent, name), (new_parent, new_name)) = (from, to);
        check_name(new_name)?;
        if name.len() > NAME_MAX {
            return fail(ENAMETOOLONG, "name too long");
        }
        if flags & 2 != 0 {
            return fail(EINVAL, "RENAME_EXCHANGE is not supported");
        }
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, 0).await?;
        let sp = writable_dir(&mut tx, &s.fs, parent, who).await?;
        let dp = writable_dir(&mut tx, &s.fs, new_parent, who).await?;
        let Some(src_ino) = child(&mut tx, &s.fs, parent, name).await? else {
            return fail(ENOENT, "no such entry");
        };
        let src = load(&mut tx, &s.fs, src_ino).await?;
        perm::may_delete(&sp.attr, &src.attr, who)
            .map_err(|e| (e, "sticky directory".to_string()))?;
        if src.attr.kind == Kind::Dir && parent != new_parent {
            // A directory may not move into its own subtree.
            let mut up = new_parent;
            while up != ROOT_INO {
                if up == src_ino {
                    return fail(EINVAL, "cannot move a directory into itself");
                }
                up = load(&mut tx, &s.fs, up).await?.parent;
            }
        }
        let t = now_ns();
        if let Some(dst_ino) = child(&mut tx, &s.fs, new_parent, new_name).await? {
            if dst_ino == src_ino {
                return Ok(());
            }
            if flags & 1 != 0 {
                return fail(EEXIST, "target exists (RENAME_NOREPLACE)");
            }
            let dst = load(&mut tx, &s.fs, dst_ino).await?;
            perm::may_delete(&dp.attr, &dst.attr, who)
                .map_err(|e| (e, "sticky directory".to_string()))?;
            match (src.attr.kind == Kind::Dir, dst.attr.kind == Kind::Dir) {
                (true, false) => {
                    return fail(ENOTDIR, "cannot replace a non-directory with a directory")
                }
                (false, true) => {
                    return fail(EISDIR, "cannot replace a directory with a non-directory")
                }
                (true, true) => {
                    if !is_empty_dir(&mut tx, &s.fs, dst_ino).await? {
                        return fail(ENOTEMPTY, "target directory not empty");
                    }
                    remove_dentry(&mut tx, &s.fs, new_parent, new_name).await?;
                    delete_dir_inode(&mut tx, &s.fs, dst_ino).await?;
                    touch_dir(&mut tx, &s.fs, new_parent, -1, t).await?;
                }
                (false, false) => {
                    remove_dentry(&mut tx, &s.fs, new_parent, new_name).await?;
                    unlink_inode(&mut tx, &s.fs, dst_ino, t).await?;
                }
            }
        }
        remove_dentry(&mut tx, &s.fs, parent, name).await?;
        add_dentry(&mut tx, &s.fs, new_parent, new_name, src_ino, src.attr.kind).await?;
        let moved_dir = src.attr.kind == Kind::Dir && parent != new_parent;
        db(sqlx::query(
            "UPDATE inodes SET ctime_ns = $1, parent = $2 WHERE fs_id = $3 AND ino = $4",
        )
        .bind(t)
        .bind(if src.attr.kind == Kind::Dir {
            new_parent as i64
        } else {
            src.parent as i64
        })
        .bind(&s.fs)
        .bind(src_ino as i64)
        .execute(&mut *tx)
        .await)?;
        touch_dir(&mut tx, &s.fs, parent, if moved_dir { -1 } else { 0 }, t).await?;
        if parent != new_parent {
            touch_dir(&mut tx, &s.fs, new_parent, if moved_dir { 1 } else { 0 }, t).await?;
        }
        db(tx.commit().await)?;
        Ok(())
    }
}
