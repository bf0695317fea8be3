//! Namespace operations. Each takes the session's file system and the
//! caller, checks what POSIX requires, and applies the change in one
//! transaction.

use cpfs_proto::capability::{READ, WRITE};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::layout::{self, Layout};
use cpfs_proto::meta::{
    errno::*, Attr, Caller, DirEntry, FsStat, Kind, MetaReply, Mounted, OpenFile, RequestId,
    SetAttr, NAME_MAX, ROOT_INO,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::perm::{self, R, W, X};
use crate::{fail, MetaService, Res, Session, CAPABILITY_SECS};

const INO_BATCH: u64 = 1024;
/// Not an errno a client ever sees: another attempt of the same request
/// committed first, so this one is answered from that attempt's record.
pub(crate) const APPLIED: i32 = -1;
/// How long a request's outcome is kept. A client gives up on an operation
/// after its outage wait plus one call timeout, well under a minute.
const REQUEST_KEEP_SECS: i64 = 600;
const MAX_XATTR_VALUE: usize = 64 * 1024;
const MAX_READDIR: u32 = 4096;

/// What a create makes.
pub(crate) struct NewNode {
    pub kind: Kind,
    pub perm: u32,
    pub rdev: u32,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub attr: Attr,
    pub parent: u64,
    pub target: Option<Vec<u8>>,
    pub chunk_size: u64,
    pub chains: Vec<u32>,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn db<T>(r: Result<T, sqlx::Error>) -> Res<T> {
    r.map_err(|e| {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return (EEXIST, "already exists".into());
            }
        }
        tracing::warn!(error = %e, "metadata store error");
        (EIO, format!("metadata store: {e}"))
    })
}

const COLS: &str = "ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains";

fn from_row(r: &AnyRow) -> Res<Inode> {
    let g = |name: &str| -> Res<i64> { db(r.try_get::<i64, _>(name)) };
    let chains: String = db(r.try_get("chains"))?;
    let ino = g("ino")?;
    Ok(Inode {
        attr: Attr {
            ino: g("ino")? as u64,
            kind: Kind::from_code(g("kind")?),
            perm: g("perm")? as u32,
            nlink: g("nlink")? as u32,
            uid: g("uid")? as u32,
            gid: g("gid")? as u32,
            size: g("size")? as u64,
            atime_ns: g("atime_ns")?,
            mtime_ns: g("mtime_ns")?,
            ctime_ns: g("ctime_ns")?,
            rdev: g("rdev")? as u32,
        },
        parent: g("parent")? as u64,
        target: db(r.try_get::<Option<Vec<u8>>, _>("target"))?,
        chunk_size: g("chunk_size")? as u64,
        chains: serde_json::from_str(&chains).map_err(|e| {
            (
                EIO,
                format!("inode {ino}: stored chain list unreadable: {e}"),
            )
        })?,
    })
}

pub(crate) async fn load(c: &mut AnyConnection, fs: &str, ino: u64) -> Res<Inode> {
    let row = db(sqlx::query(&format!(
        "SELECT {COLS} FROM inodes WHERE fs_id = $1 AND ino = $2"
    ))
    .bind(fs)
    .bind(ino as i64)
    .fetch_optional(&mut *c)
    .await)?;
    match row {
        Some(r) => from_row(&r),
        None => fail(ENOENT, format!("inode {ino}")),
    }
}

async fn child(c: &mut AnyConnection, fs: &str, parent: u64, name: &[u8]) -> Res<Option<u64>> {
    let row: Option<(i64,)> = db(sqlx::query_as(
        "SELECT ino FROM dentries WHERE fs_id = $1 AND parent = $2 AND name = $3",
    )
    .bind(fs)
    .bind(parent as i64)
    .bind(name)
    .fetch_optional(&mut *c)
    .await)?;
    Ok(row.map(|r| r.0 as u64))
}

fn check_name(name: &[u8]) -> Res<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return fail(EINVAL, "invalid name");
    }
    if name.len() > NAME_MAX {
        return fail(ENAMETOOLONG, "name longer than 255 bytes");
    }
    Ok(())
}

/// A directory the caller may add to or remove from.
async fn writable_dir(c: &mut AnyConnection, fs: &str, ino: u64, who: &Caller) -> Res<Inode> {
    let d = load(c, fs, ino).await?;
    if d.attr.kind != Kind::Dir {
        return fail(ENOTDIR, "not a directory");
    }
    perm::check(&d.attr, who, W | X).map_err(|e| (e, "directory not writable".to_string()))?;
    Ok(d)
}

async fn touch_dir(c: &mut AnyConnection, fs: &str, ino: u64, nlink_delta: i64, t: i64) -> Res<()> {
    db(sqlx::query("UPDATE inodes SET mtime_ns = $1, ctime_ns = $1, nlink = nlink + $2 WHERE fs_id = $3 AND ino = $4")
        .bind(t)
        .bind(nlink_delta)
        .bind(fs)
        .bind(ino as i64)
        .execute(&mut *c)
        .await)?;
    Ok(())
}

async fn insert_inode(c: &mut AnyConnection, fs: &str, i: &Inode) -> Res<()> {
    let a = &i.attr;
    db(sqlx::query(&format!(
        "INSERT INTO inodes ({COLS}, fs_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(a.ino as i64)
    .bind(a.kind.code())
    .bind(a.perm as i64)
    .bind(a.uid as i64)
    .bind(a.gid as i64)
    .bind(a.nlink as i64)
    .bind(a.size as i64)
    .bind(a.atime_ns)
    .bind(a.mtime_ns)
    .bind(a.ctime_ns)
    .bind(a.rdev as i64)
    .bind(i.parent as i64)
    .bind(i.target.clone())
    .bind(i.chunk_size as i64)
    .bind(serde_json::to_string(&i.chains).unwrap_or_else(|_| "[]".into()))
    .bind(fs)
    .execute(&mut *c)
    .await)?;
    db(
        sqlx::query("UPDATE fs_counters SET files = files + 1 WHERE fs_id = $1")
            .bind(fs)
            .execute(&mut *c)
            .await,
    )?;
    Ok(())
}

async fn add_dentry(
    c: &mut AnyConnection,
    fs: &str,
    parent: u64,
    name: &[u8],
    ino: u64,
    kind: Kind,
) -> Res<()> {
    db(sqlx::query(
        "INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(fs)
    .bind(parent as i64)
    .bind(name)
    .bind(ino as i64)
    .bind(kind.code())
    .execute(&mut *c)
    .await)?;
    Ok(())
}

async fn remove_dentry(c: &mut AnyConnection, fs: &str, parent: u64, name: &[u8]) -> Res<()> {
    db(
        sqlx::query("DELETE FROM dentries WHERE fs_id = $1 AND parent = $2 AND name = $3")
            .bind(fs)
            .bind(parent as i64)
            .bind(name)
            .execute(&mut *c)
            .await,
    )?;
    Ok(())
}

/// Drops one link of a non-directory; the last one makes it an orphan whose
/// data goes once nobody holds it open.
async fn unlink_inode(c: &mut AnyConnection, fs: &str, ino: u64, t: i64) -> Res<()> {
    db(sqlx::query(
        "UPDATE inodes SET nlink = nlink - 1, ctime_ns = $1 WHERE fs_id = $2 AND ino = $3",
    )
    .bind(t)
    .bind(fs)
    .bind(ino as i64)
    .execute(&mut *c)
    .await)?;
    let left = load(c, fs, ino).await?.attr.nlink;
    if left == 0 {
        db(
            sqlx::query("INSERT INTO orphans (fs_id, ino, since) VALUES ($1, $2, $3)")
                .bind(fs)
                .bind(ino as i64)
                .bind(t / 1_000_000_000)
                .execute(&mut *c)
                .await,
        )?;
    }
    Ok(())
}

async fn delete_dir_inode(c: &mut AnyConnection, fs: &str, ino: u64) -> Res<()> {
    for sql in [
        "DELETE FROM xattrs WHERE fs_id = $1 AND ino = $2",
        "DELETE FROM inodes WHERE fs_id = $1 AND ino = $2",
    ] {
        db(sqlx::query(sql)
            .bind(fs)
            .bind(ino as i64)
            .execute(&mut *c)
            .await)?;
    }
    db(
        sqlx::query("UPDATE fs_counters SET files = files - 1 WHERE fs_id = $1")
            .bind(fs)
            .execute(&mut *c)
            .await,
    )?;
    Ok(())
}

/// Claims request `id` for this transaction, first thing in it: a retry of
/// an operation that was applied already must not fail the checks its first
/// attempt changed the answer of (the name exists now, the source is gone).
/// The claim commits with the change, naming the inode the operation made
/// or linked (`ino`; 0: none); a rolled-back attempt leaves none. An attempt
/// that finds the claim taken (it waits for a concurrent one to commit or
/// roll back) fails with [`APPLIED`] and is answered from the record.
async fn claim(c: &mut AnyConnection, fs: &str, id: Option<RequestId>, ino: u64) -> Res<()> {
    let Some(id) = id else {
        return Ok(());
    };
    let done = db(sqlx::query(
        "INSERT INTO meta_requests (fs_id, client, seq, ino, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(fs)
    .bind(id.client as i64)
    .bind(id.seq as i64)
    .bind(ino as i64)
    .bind(t_secs())
    .execute(&mut *c)
    .await)?;
    if done.rows_affected() == 0 {
        return fail(APPLIED, "applied by an earlier attempt");
    }
    Ok(())
}

async fn is_empty_dir(c: &mut AnyConnection, fs: &str, ino: u64) -> Res<bool> {
    let row: Option<(i64,)> = db(sqlx::query_as(
        "SELECT ino FROM dentries WHERE fs_id = $1 AND parent = $2 LIMIT 1",
    )
    .bind(fs)
    .bind(ino as i64)
    .fetch_optional(&mut *c)
    .await)?;
    Ok(row.is_none())
}

/// The file system's default layout and chain list.
async fn fs_layout(c: &mut AnyConnection, fs: &str) -> Res<(u64, u32, Vec<u32>)> {
    let row: Option<(i64, i64, String)> = db(sqlx::query_as(
        "SELECT chunk_size, stripe_width, chains FROM fs_layouts WHERE fs_id = $1",
    )
    .bind(fs)
    .fetch_optional(&mut *c)
    .await)?;
    match row {
        Some((cs, w, chains)) => Ok((
            cs as u64,
            w as u32,
            serde_json::from_str(&chains).map_err(|e| {
                (
                    EIO,
                    format!("layout of {fs}: stored chain list unreadable: {e}"),
                )
            })?,
        )),
        None => fail(EIO, "file system has no layout (not provisioned)"),
    }
}

pub(crate) async fn latest_chain_table(c: &mut AnyConnection) -> Res<ChainTable> {
    let row: Option<(String,)> = db(sqlx::query_as(
        "SELECT body FROM chain_tables ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *c)
    .await)?;
    match row {
        None => Ok(ChainTable::default()),
        Some((body,)) => ChainTable::from_stored(&body).map_err(|e| (EIO, e.to_string())),
    }
}

impl MetaService {
    async fn conn(&self) -> Res<sqlx::pool::PoolConnection<sqlx::Any>> {
        db(self.store.pool.acquire().await)
    }

    async fn tx(&self) -> Res<sqlx::Transaction<'static, sqlx::Any>> {
        self.store
            .begin_write()
            .await
            .map_err(|e| (EIO, e.to_string()))
    }

    async fn new_ino(&self, fs: &str) -> Res<u64> {
        let mut map = self.inos.lock().await;
        let entry = map.entry(fs.to_string()).or_insert((0, 0));
        if entry.0 >= entry.1 {
            let mut tx = self.tx().await?;
            db(
                sqlx::query("UPDATE fs_counters SET next_ino = next_ino + $1 WHERE fs_id = $2")
                    .bind(INO_BATCH as i64)
                    .bind(fs)
                    .execute(&mut *tx)
                    .await,
            )?;
            let (end,): (i64,) = db(sqlx::query_as(
                "SELECT next_ino FROM fs_counters WHERE fs_id = $1",
            )
            .bind(fs)
            .fetch_one(&mut *tx)
            .await)?;
            db(tx.commit().await)?;
            *entry = (end as u64 - INO_BATCH, end as u64);
        }
        let ino = entry.0;
        entry.0 += 1;
        Ok(ino)
    }

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
    async fn account_growth(
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

    fn xattr_allowed(name: &[u8], i: &Inode, who: &Caller, write: bool) -> Res<()> {
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

    /// The inode request `id` made or linked (0: none), when it was applied.
    pub(crate) async fn applied(&self, s: &Session, id: RequestId) -> Res<Option<u64>> {
        let mut c = self.conn().await?;
        let row: Option<(i64,)> = db(sqlx::query_as(
            "SELECT ino FROM meta_requests WHERE fs_id = $1 AND client = $2 AND seq = $3",
        )
        .bind(&s.fs)
        .bind(id.client as i64)
        .bind(id.seq as i64)
        .fetch_optional(&mut *c)
        .await)?;
        Ok(row.map(|r| r.0 as u64))
    }

    /// Drops the records of requests nobody can still be retrying.
    pub(crate) async fn forget_requests(&self) -> Res<u64> {
        let mut c = self.conn().await?;
        let r = db(sqlx::query("DELETE FROM meta_requests WHERE at < $1")
            .bind(t_secs() - REQUEST_KEEP_SECS)
            .execute(&mut *c)
            .await)?;
        Ok(r.rows_affected())
    }

    pub(crate) async fn chain_table(&self) -> Res<ChainTable> {
        let mut c = self.conn().await?;
        latest_chain_table(&mut c).await
    }
}

fn t_secs() -> i64 {
    now_ns() / 1_000_000_000
}
