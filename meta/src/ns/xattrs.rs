//! Extended attributes, and the stripe a directory gives new files.

use cpfs_proto::layout::{self, Layout};
use cpfs_proto::meta::{errno::*, Caller, Kind, RequestId};

use crate::perm::{self, R, W};
use crate::{fail, MetaService, Res, Session};

use super::*;

impl MetaService {
    pub(crate) fn xattr_allowed(name: &[u8], i: &Inode, who: &Caller, write: bool) -> Res<()> {
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

    pub(crate) async fn setxattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        (name, value): (&[u8], &[u8]),
        flags: u32,
        id: Option<RequestId>,
    ) -> Res<()> {
        if value.len() > MAX_XATTR_VALUE {
            return fail(7, "xattr value larger than 64 KiB"); // E2BIG
        }
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, 0).await?;
        let i = load(&mut tx, &s.fs, ino).await?;
        Self::xattr_allowed(name, &i, who, true)?;
        let exists: Option<(i64,)> = db(sqlx::query_as(
            "SELECT ino FROM xattrs WHERE fs_id = $1 AND ino = $2 AND name = $3",
        )
        .bind(&s.fs)
        .bind(ino as i64)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await)?;
        match (exists.is_some(), flags) {
            (true, 1) => return fail(EEXIST, "xattr exists (XATTR_CREATE)"),
            (false, 2) => return fail(ENODATA, "no such xattr (XATTR_REPLACE)"),
            _ => {}
        }
        db(
            sqlx::query("DELETE FROM xattrs WHERE fs_id = $1 AND ino = $2 AND name = $3")
                .bind(&s.fs)
                .bind(ino as i64)
                .bind(name)
                .execute(&mut *tx)
                .await,
        )?;
        db(
            sqlx::query("INSERT INTO xattrs (fs_id, ino, name, value) VALUES ($1, $2, $3, $4)")
                .bind(&s.fs)
                .bind(ino as i64)
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await,
        )?;
        db(
            sqlx::query("UPDATE inodes SET ctime_ns = $1 WHERE fs_id = $2 AND ino = $3")
                .bind(now_ns())
                .bind(&s.fs)
                .bind(ino as i64)
                .execute(&mut *tx)
                .await,
        )?;
        db(tx.commit().await)?;
        Ok(())
    }

    pub(crate) async fn getxattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        name: &[u8],
    ) -> Res<Vec<u8>> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        Self::xattr_allowed(name, &i, who, false)?;
        let row: Option<(Vec<u8>,)> = db(sqlx::query_as(
            "SELECT value FROM xattrs WHERE fs_id = $1 AND ino = $2 AND name = $3",
        )
        .bind(&s.fs)
        .bind(ino as i64)
        .bind(name)
        .fetch_optional(&mut *c)
        .await)?;
        row.map(|r| r.0).ok_or((ENODATA, "no such xattr".into()))
    }

    pub(crate) async fn listxattr(&self, s: &Session, ino: u64) -> Res<Vec<Vec<u8>>> {
        let mut c = self.conn().await?;
        load(&mut c, &s.fs, ino).await?;
        let rows: Vec<(Vec<u8>,)> = db(sqlx::query_as(
            "SELECT name FROM xattrs WHERE fs_id = $1 AND ino = $2 ORDER BY name",
        )
        .bind(&s.fs)
        .bind(ino as i64)
        .fetch_all(&mut *c)
        .await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub(crate) async fn removexattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        name: &[u8],
        id: Option<RequestId>,
    ) -> Res<()> {
        let mut tx = self.tx().await?;
        claim(&mut tx, &s.fs, id, 0).await?;
        let i = load(&mut tx, &s.fs, ino).await?;
        Self::xattr_allowed(name, &i, who, true)?;
        let n = db(
            sqlx::query("DELETE FROM xattrs WHERE fs_id = $1 AND ino = $2 AND name = $3")
                .bind(&s.fs)
                .bind(ino as i64)
                .bind(name)
                .execute(&mut *tx)
                .await,
        )?;
        if n.rows_affected() == 0 {
            return fail(ENODATA, "no such xattr");
        }
        db(tx.commit().await)?;
        Ok(())
    }

    pub(crate) async fn get_stripe(&self, s: &Session, ino: u64) -> Res<(u64, u32)> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        Ok((i.chunk_size, i.chains.len() as u32))
    }

    pub(crate) async fn set_stripe(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        chunk_size: u64,
        width: u32,
    ) -> Res<()> {
        layout::validate(chunk_size, width).map_err(|m| (EINVAL, m))?;
        let mut tx = self.tx().await?;
        let i = load(&mut tx, &s.fs, ino).await?;
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
        let (_, _, all) = fs_layout(&mut tx, &s.fs).await?;
        if all.is_empty() {
            return fail(EIO, "no chains");
        }
        let chains = Layout::stripe(chunk_size, &all, width, (ino as usize) % all.len()).chains;
        db(sqlx::query("UPDATE inodes SET chunk_size = $1, chains = $2, ctime_ns = $3 WHERE fs_id = $4 AND ino = $5")
            .bind(chunk_size as i64)
            .bind(serde_json::to_string(&chains).unwrap_or_else(|_| "[]".into()))
            .bind(now_ns())
            .bind(&s.fs)
            .bind(ino as i64)
            .execute(&mut *tx)
            .await)?;
        db(tx.commit().await)?;
        Ok(())
    }
}
