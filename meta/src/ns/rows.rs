//! Rows of the namespace tables: reading, inserting, linking, unlinking.

use cpfs_proto::chains::ChainTable;
use cpfs_proto::meta::{errno::*, Attr, Caller, Kind, RequestId, NAME_MAX};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::perm::{self, W, X};
use crate::{fail, Res};

use super::*;

pub(super) const COLS: &str = "ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains";

pub(super) fn from_row(r: &AnyRow) -> Res<Inode> {
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

pub(super) async fn child(
    c: &mut AnyConnection,
    fs: &str,
    parent: u64,
    name: &[u8],
) -> Res<Option<u64>> {
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

pub(super) fn check_name(name: &[u8]) -> Res<()> {
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
pub(super) async fn writable_dir(
    c: &mut AnyConnection,
    fs: &str,
    ino: u64,
    who: &Caller,
) -> Res<Inode> {
    let d = load(c, fs, ino).await?;
    if d.attr.kind != Kind::Dir {
        return fail(ENOTDIR, "not a directory");
    }
    perm::check(&d.attr, who, W | X).map_err(|e| (e, "directory not writable".to_string()))?;
    Ok(d)
}

pub(super) async fn touch_dir(
    c: &mut AnyConnection,
    fs: &str,
    ino: u64,
    nlink_delta: i64,
    t: i64,
) -> Res<()> {
    db(sqlx::query("UPDATE inodes SET mtime_ns = $1, ctime_ns = $1, nlink = nlink + $2 WHERE fs_id = $3 AND ino = $4")
        .bind(t)
        .bind(nlink_delta)
        .bind(fs)
        .bind(ino as i64)
        .execute(&mut *c)
        .await)?;
    Ok(())
}

pub(super) async fn insert_inode(c: &mut AnyConnection, fs: &str, i: &Inode) -> Res<()> {
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

pub(super) async fn add_dentry(
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

pub(super) async fn remove_dentry(
    c: &mut AnyConnection,
    fs: &str,
    parent: u64,
    name: &[u8],
) -> Res<()> {
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
pub(super) async fn unlink_inode(c: &mut AnyConnection, fs: &str, ino: u64, t: i64) -> Res<()> {
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

pub(super) async fn delete_dir_inode(c: &mut AnyConnection, fs: &str, ino: u64) -> Res<()> {
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
pub(super) async fn claim(
    c: &mut AnyConnection,
    fs: &str,
    id: Option<RequestId>,
    ino: u64,
) -> Res<()> {
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

pub(super) async fn is_empty_dir(c: &mut AnyConnection, fs: &str, ino: u64) -> Res<bool> {
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
pub(super) async fn fs_layout(c: &mut AnyConnection, fs: &str) -> Res<(u64, u32, Vec<u32>)> {
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
    match db(cpfs_store::latest_chain_table_body(&mut *c).await)? {
        None => Ok(ChainTable::default()),
        Some(body) => ChainTable::from_stored(&body).map_err(|e| (EIO, e.to_string())),
    }
}
