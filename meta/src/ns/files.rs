//! Open files and listings: open, release, access, readdir, sizes written,
//! statfs.

use cpfs_proto::capability::{READ, WRITE};
use cpfs_proto::layout::Layout;
use cpfs_proto::meta::{errno::*, Attr, Caller, DirEntry, FsStat, Kind, OpenFile};

use crate::perm::{self, R, W};
use crate::{fail, MetaService, Res, Session, CAPABILITY_SECS};

use super::*;

impl MetaService {
    pub(crate) async fn open(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        read: bool,
        write: bool,
    ) -> Res<OpenFile> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        if i.attr.kind == Kind::Dir && write {
            return fail(EISDIR, "is a directory");
        }
        let mask = if read { R } else { 0 } | if write { W } else { 0 };
        perm::check(&i.attr, who, mask).map_err(|e| (e, "open permission".to_string()))?;
        let mut attr = i.attr.clone();
        if read {
            // relatime: atime moves when it is older than mtime/ctime or a day.
            let t = now_ns();
            if attr.atime_ns <= attr.mtime_ns
                || attr.atime_ns <= attr.ctime_ns
                || t - attr.atime_ns > 86_400_000_000_000
            {
                attr.atime_ns = t;
                db(
                    sqlx::query("UPDATE inodes SET atime_ns = $1 WHERE fs_id = $2 AND ino = $3")
                        .bind(t)
                        .bind(&s.fs)
                        .bind(ino as i64)
                        .execute(&mut *c)
                        .await,
                )?;
            }
        }
        let rights = if write { READ | WRITE } else { READ };
        let expires = t_secs() + CAPABILITY_SECS;
        self.opened(&s.fs, ino);
        Ok(OpenFile {
            attr,
            layout: Layout {
                chunk_size: i.chunk_size,
                chains: i.chains,
            },
            cap: self.key.issue_for(who.uid, &s.fs, ino, rights, expires),
        })
    }

    /// Opens a regular file a create just made, for writing (and reading)
    /// by its creator whatever mode it was given, as open(O_CREAT) does.
    pub(crate) async fn open_created(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        read: bool,
    ) -> Res<OpenFile> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        let rights = if read { READ | WRITE } else { WRITE };
        self.opened(&s.fs, ino);
        Ok(OpenFile {
            attr: i.attr.clone(),
            layout: Layout {
                chunk_size: i.chunk_size,
                chains: i.chains,
            },
            cap: self.key.issue_for(
                who.uid,
                &s.fs,
                i.attr.ino,
                rights,
                t_secs() + CAPABILITY_SECS,
            ),
        })
    }

    pub(crate) fn release(&self, s: &Session, ino: u64) {
        self.released(&s.fs, ino);
    }

    pub(crate) async fn access(&self, s: &Session, who: &Caller, ino: u64, mask: u32) -> Res<()> {
        let mut c = self.conn().await?;
        let i = load(&mut c, &s.fs, ino).await?;
        perm::check(&i.attr, who, mask & 7).map_err(|e| (e, "access".to_string()))
    }

    pub(crate) async fn readdir(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Res<(Vec<DirEntry>, bool)> {
        let mut c = self.conn().await?;
        let d = load(&mut c, &s.fs, ino).await?;
        if d.attr.kind != Kind::Dir {
            return fail(ENOTDIR, "not a directory");
        }
        perm::check(&d.attr, who, R).map_err(|e| (e, "read permission".to_string()))?;
        let limit = limit.clamp(1, MAX_READDIR) as i64;
        let rows: Vec<(Vec<u8>, i64, i64)> = match after {
            Some(a) => db(sqlx::query_as("SELECT name, ino, kind FROM dentries WHERE fs_id = $1 AND parent = $2 AND name > $3 ORDER BY name LIMIT $4")
                .bind(&s.fs)
                .bind(ino as i64)
                .bind(a)
                .bind(limit + 1)
                .fetch_all(&mut *c)
                .await)?,
            None => db(sqlx::query_as("SELECT name, ino, kind FROM dentries WHERE fs_id = $1 AND parent = $2 ORDER BY name LIMIT $3")
                .bind(&s.fs)
                .bind(ino as i64)
                .bind(limit + 1)
                .fetch_all(&mut *c)
                .await)?,
        };
        let more = rows.len() as i64 > limit;
        let entries = rows
            .into_iter()
            .take(limit as usize)
            .map(|(name, ino, kind)| DirEntry {
                name,
                ino: ino as u64,
                kind: Kind::from_code(kind),
            })
            .collect();
        Ok((entries, more))
    }

    pub(crate) async fn written(&self, s: &Session, ino: u64, size: u64) -> Res<Attr> {
        let mut tx = self.tx().await?;
        let mut i = load(&mut tx, &s.fs, ino).await?;
        if i.attr.kind != Kind::File {
            return fail(EINVAL, "not a regular file");
        }
        let t = now_ns();
        if size > i.attr.size {
            self.account_growth(&mut tx, s, i.attr.size, size).await?;
            i.attr.size = size;
        }
        i.attr.mtime_ns = t;
        i.attr.ctime_ns = t;
        // Writing clears setuid/setgid, as a local file system does.
        let clear = if i.attr.perm & 0o010 != 0 {
            0o6000
        } else {
            0o4000
        };
        i.attr.perm &= !clear;
        db(sqlx::query("UPDATE inodes SET size = $1, mtime_ns = $2, ctime_ns = $2, perm = $3 WHERE fs_id = $4 AND ino = $5")
            .bind(i.attr.size as i64)
            .bind(t)
            .bind(i.attr.perm as i64)
            .bind(&s.fs)
            .bind(ino as i64)
            .execute(&mut *tx)
            .await)?;
        db(tx.commit().await)?;
        Ok(i.attr)
    }

    pub(crate) async fn statfs(&self, s: &Session) -> Res<FsStat> {
        let mut c = self.conn().await?;
        let (used, files): (i64, i64) = db(sqlx::query_as(
            "SELECT used_bytes, files FROM fs_counters WHERE fs_id = $1",
        )
        .bind(&s.fs)
        .fetch_one(&mut *c)
        .await)?;
        Ok(FsStat {
            capacity_bytes: s.capacity_bytes,
            used_bytes: used.max(0) as u64,
            files: files.max(0) as u64,
        })
    }
}
