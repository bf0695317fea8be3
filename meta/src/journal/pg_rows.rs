//! The statements the PostgreSQL writer prepares, and a batch's rows as
//! executions of them (`pg_pipeline` sends them).

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::rows::{chains_text, limit_column, upsert_parts, Batch, Change};

/// The guard every statement carries: the batch's epoch (`$2`) is still
/// the file system's (`$1`), or the file system is not served by lease.
macro_rules! owned {
    () => {
        "($2::bigint IS NULL OR EXISTS (SELECT 1 FROM meta_assignments a \
         WHERE a.fs_id = $1 AND a.epoch = $2))"
    };
}

/// What the writer prepares on each connection, `$1` the file system and
/// `$2` the batch's epoch for it in every row statement. The upserts'
/// column lists and conflict clauses are those SQLite's statements use
/// ([`upsert_parts`]); their values come from a SELECT, which the guard
/// can follow.
pub(super) const SQL: [&str; 21] = [
    "BEGIN",
    "COMMIT",
    "SELECT fs_id, epoch FROM meta_assignments WHERE fs_id = ANY($1) FOR SHARE",
    // A file system's inodes, entries, orphans and request records go in
    // one statement per kind and batch, their values as arrays (one
    // element per row): a statement costs PostgreSQL about as much as the
    // rows it writes, so a fold of many operations writes each of these
    // for a few microseconds a row.
    concat!(
        upsert_parts!(inode_head),
        "SELECT $1, x.* FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
         $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
         $13::bigint[], $14::bigint[], $15::bytea[], $16::bigint[], $17::text[], $18::bigint[]) \
         AS x WHERE ",
        owned!(),
        upsert_parts!(inode_tail)
    ),
    concat!(
        "DELETE FROM inodes WHERE fs_id = $1 AND ino = ANY($3::bigint[]) AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(dentry_head),
        "SELECT $1, x.* FROM unnest($3::bigint[], $4::bytea[], $5::bigint[], $6::bigint[]) \
         AS x WHERE ",
        owned!(),
        upsert_parts!(dentry_tail)
    ),
    concat!(
        "DELETE FROM dentries d USING unnest($3::bigint[], $4::bytea[]) AS x(p, n) \
         WHERE d.fs_id = $1 AND d.parent = x.p AND d.name = x.n AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(xattr_head),
        "SELECT $1, $3::bigint, $4::bytea, $5::bytea WHERE ",
        owned!(),
        upsert_parts!(xattr_tail)
    ),
    concat!(
        "DELETE FROM xattrs WHERE fs_id = $1 AND ino = $3 AND name = $4 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(orphan_head),
        "SELECT $1, x.* FROM unnest($3::bigint[], $4::bigint[]) AS x WHERE ",
        owned!(),
        upsert_parts!(orphan_tail)
    ),
    concat!(
        "DELETE FROM orphans WHERE fs_id = $1 AND ino = ANY($3::bigint[]) AND ",
        owned!()
    ),
    concat!(
        "UPDATE fs_counters SET next_ino = $3, used_bytes = $4, files = $5 WHERE fs_id = $1 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(fileset_head),
        "SELECT $1, $3::text, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint WHERE ",
        owned!(),
        upsert_parts!(fileset_tail)
    ),
    concat!(
        "DELETE FROM fileset_usage WHERE fs_id = $1 AND fset_id = $3 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(owner_head),
        "SELECT $1, $3::text, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint WHERE ",
        owned!(),
        upsert_parts!(owner_tail)
    ),
    concat!(
        "DELETE FROM user_quota_usage WHERE fs_id = $1 AND user_type = $3 AND user_id = $4 AND ",
        owned!()
    ),
    concat!(
        "INSERT INTO meta_requests (fs_id, client, seq, ino, at) \
         SELECT $1, x.* FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
         AS x WHERE ",
        owned!(),
        " ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino, at = excluded.at"
    ),
    concat!(
        "DELETE FROM meta_requests WHERE fs_id = $1 AND at < $3 AND ",
        owned!()
    ),
    // The log ([`super::pg_log`]): a batch's row per file system, each
    // guarded like the rows and locking the owner row as `LockOwners`
    // does; the rows returned are those written.
    "INSERT INTO meta_log (fs_id, epoch, body) SELECT x.f, x.e, x.b \
     FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS x(f, e, b) \
     WHERE x.e IS NULL OR EXISTS (SELECT 1 FROM meta_assignments a \
     WHERE a.fs_id = x.f AND a.epoch = x.e FOR SHARE) RETURNING fs_id, seq",
    concat!(
        "DELETE FROM meta_log WHERE fs_id = $1 AND seq <= $3 AND ",
        owned!()
    ),
    "SELECT seq, body FROM meta_log WHERE fs_id = $1 ORDER BY seq LIMIT $2",
];

/// Index in [`SQL`] (and in a connection's prepared statements).
#[derive(Clone, Copy)]
pub(super) enum Sql {
    Begin = 0,
    Commit,
    LockOwners,
    PutInodes,
    DropInodes,
    PutDentries,
    DropDentries,
    PutXattr,
    DropXattr,
    PutOrphans,
    DropOrphans,
    SetCounters,
    PutFileset,
    DropFileset,
    PutOwner,
    DropOwner,
    PutRequests,
    ForgetRequests,
    AppendLog,
    DropLog,
    ReadLog,
}

/// A value bound to a statement.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// One statement of a batch and its values.
pub(super) struct Exec {
    pub sql: Sql,
    pub params: Vec<Param>,
}

/// The batch's rows as executions of the prepared statements: each file
/// system's rows, those of the kinds every operation writes by set
/// ([`Sets`]), the others one by one, then forgotten request records.
pub(super) fn statements(batch: &Batch) -> Vec<Exec> {
    let mut out = Vec::new();
    for (fs, rows) in &batch.rows {
        let mut sets = Sets::default();
        for c in rows {
            if !sets.take(c) {
                out.extend(row(batch, fs, c));
            }
        }
        sets.statements(batch, fs, &mut out);
    }
    // Last: a fold of many batches holds request records made before a
    // later batch's forgetting that covers them.
    for (fs, before) in &batch.forget {
        out.push(exec(
            Sql::ForgetRequests,
            batch,
            fs,
            vec![Box::new(*before)],
        ));
    }
    out
}

pub(super) fn exec(sql: Sql, batch: &Batch, fs: &Arc<str>, values: Vec<Param>) -> Exec {
    let epoch = batch.epoch_of(fs).map(|e| e as i64);
    let mut params: Vec<Param> = Vec::with_capacity(values.len() + 2);
    params.push(Box::new(fs.to_string()));
    params.push(Box::new(epoch));
    params.extend(values);
    Exec { sql, params }
}

fn int(v: u64) -> Param {
    Box::new(v as i64)
}

/// One file system's inode images as the columns of `PutInodes`.
#[derive(Default)]
struct InodeColumns {
    ints: [Vec<i64>; 12],
    target: Vec<Option<Vec<u8>>>,
    chunk_size: Vec<i64>,
    chains: Vec<String>,
    stored: Vec<i64>,
}

/// One file system's rows of the kinds written by set, as columns.
#[derive(Default)]
struct Sets {
    inodes: InodeColumns,
    dropped_inodes: Vec<i64>,
    entries: (Vec<i64>, Vec<Vec<u8>>, Vec<i64>, Vec<i64>),
    dropped_entries: (Vec<i64>, Vec<Vec<u8>>),
    orphans: (Vec<i64>, Vec<i64>),
    dropped_orphans: Vec<i64>,
    requests: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>),
}

impl Sets {
    /// Takes `c` if it is of a kind written by set.
    fn take(&mut self, c: &Change) -> bool {
        let i = |v: u64| v as i64;
        match c {
            Change::Inode(ino, Some(node)) => {
                let a = &node.attr;
                let n = &mut self.inodes;
                let ints = [
                    i(*ino),
                    a.kind.code(),
                    i(a.perm as u64),
                    i(a.uid as u64),
                    i(a.gid as u64),
                    i(a.nlink as u64),
                    i(a.size),
                    a.atime_ns,
                    a.mtime_ns,
                    a.ctime_ns,
                    i(a.rdev as u64),
                    i(node.parent),
                ];
                for (column, v) in n.ints.iter_mut().zip(ints) {
                    column.push(v);
                }
                n.target.push(node.target.clone());
                n.chunk_size.push(i(node.chunk_size));
                n.chains.push(chains_text(&node.chains));
                n.stored.push(i(a.stored));
            }
            Change::Inode(ino, None) => self.dropped_inodes.push(i(*ino)),
            Change::Dentry(parent, name, Some((ino, kind))) => {
                let e = &mut self.entries;
                e.0.push(i(*parent));
                e.1.push(name.clone());
                e.2.push(i(*ino));
                e.3.push(kind.code());
            }
            Change::Dentry(parent, name, None) => {
                self.dropped_entries.0.push(i(*parent));
                self.dropped_entries.1.push(name.clone());
            }
            Change::Orphan(ino, Some(since)) => {
                self.orphans.0.push(i(*ino));
                self.orphans.1.push(*since);
            }
            Change::Orphan(ino, None) => self.dropped_orphans.push(i(*ino)),
            Change::Request {
                client,
                seq,
                ino,
                at,
            } => {
                let r = &mut self.requests;
                r.0.push(i(*client));
                r.1.push(i(*seq));
                r.2.push(i(*ino));
                r.3.push(*at);
            }
            _ => return false,
        }
        true
    }

    /// A statement per kind that has rows.
    fn statements(self, batch: &Batch, fs: &Arc<str>, out: &mut Vec<Exec>) {
        let mut add = |sql, values: Vec<Param>| out.push(exec(sql, batch, fs, values));
        let n = self.inodes;
        if !n.target.is_empty() {
            let mut values: Vec<Param> = n.ints.into_iter().map(|c| Box::new(c) as Param).collect();
            values.push(Box::new(n.target));
            values.push(Box::new(n.chunk_size));
            values.push(Box::new(n.chains));
            values.push(Box::new(n.stored));
            add(Sql::PutInodes, values);
        }
        if !self.dropped_inodes.is_empty() {
            add(Sql::DropInodes, vec![Box::new(self.dropped_inodes)]);
        }
        let (p, name, ino, kind) = self.entries;
        if !p.is_empty() {
            add(
                Sql::PutDentries,
                vec![Box::new(p), Box::new(name), Box::new(ino), Box::new(kind)],
            );
        }
        let (p, name) = self.dropped_entries;
        if !p.is_empty() {
            add(Sql::DropDentries, vec![Box::new(p), Box::new(name)]);
        }
        let (ino, since) = self.orphans;
        if !ino.is_empty() {
            add(Sql::PutOrphans, vec![Box::new(ino), Box::new(since)]);
        }
        if !self.dropped_orphans.is_empty() {
            add(Sql::DropOrphans, vec![Box::new(self.dropped_orphans)]);
        }
        let (client, seq, ino, at) = self.requests;
        if !client.is_empty() {
            add(
                Sql::PutRequests,
                vec![Box::new(client), Box::new(seq), Box::new(ino), Box::new(at)],
            );
        }
    }
}

fn row(batch: &Batch, fs: &Arc<str>, c: &Change) -> Option<Exec> {
    let (sql, values): (Sql, Vec<Param>) = match c {
        Change::Xattr(ino, name, Some(value)) => (
            Sql::PutXattr,
            vec![int(*ino), Box::new(name.clone()), Box::new(value.clone())],
        ),
        Change::Xattr(ino, name, None) => (Sql::DropXattr, vec![int(*ino), Box::new(name.clone())]),
        Change::Counters(c) => (
            Sql::SetCounters,
            vec![int(c.next_ino), int(c.used_bytes), int(c.files)],
        ),
        Change::Fileset(id, Some(f)) => (
            Sql::PutFileset,
            vec![
                Box::new(id.to_string()),
                int(f.ino),
                int(f.used_bytes),
                int(f.files),
                Box::new(limit_column(f.size_limit)),
                Box::new(limit_column(f.file_limit)),
            ],
        ),
        Change::Fileset(id, None) => (Sql::DropFileset, vec![Box::new(id.to_string())]),
        Change::OwnerQuota(o, Some(r)) => (
            Sql::PutOwner,
            vec![
                Box::new(o.type_name().to_string()),
                Box::new(o.id() as i64),
                int(r.used_bytes),
                int(r.files),
                Box::new(limit_column(r.size_limit)),
                Box::new(limit_column(r.file_limit)),
            ],
        ),
        Change::OwnerQuota(o, None) => (
            Sql::DropOwner,
            vec![Box::new(o.type_name().to_string()), Box::new(o.id() as i64)],
        ),
        // Written by set statements ([`Sets`]), or apart (forgotten
        // requests).
        Change::Inode(..)
        | Change::Dentry(..)
        | Change::Orphan(..)
        | Change::Request { .. }
        | Change::ForgetRequests { .. } => return None,
    };
    Some(exec(sql, batch, fs, values))
}
