//! The row images an operation produces, and a batch of them with only the
//! last image of each row kept.

use std::collections::HashMap;
use std::sync::Arc;

use cpfs_proto::meta::Kind;
use serde::{Deserialize, Serialize};

use crate::inode::Inode;

use super::Entry;

/// A file system's counters row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub next_ino: u64,
    pub used_bytes: u64,
    pub files: u64,
}

/// A fileset as the metadata service keeps it (`fileset_usage`): the root
/// it bound, its exact usage and the limits it enforces (`None`: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilesetRow {
    pub ino: u64,
    pub used_bytes: u64,
    pub files: u64,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

/// Whose usage a user quota counts: a uid or a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Owner {
    Uid(u32),
    Gid(u32),
}

impl Owner {
    /// The `user_type` column (`Uid`, `Gid`), as the API names it.
    pub fn type_name(self) -> &'static str {
        match self {
            Owner::Uid(_) => "Uid",
            Owner::Gid(_) => "Gid",
        }
    }

    pub fn id(self) -> u32 {
        match self {
            Owner::Uid(i) | Owner::Gid(i) => i,
        }
    }
}

/// A limited owner's row in `user_quota_usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnerRow {
    pub used_bytes: u64,
    pub files: u64,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

/// A limit as its column stores it (-1: none).
pub(crate) fn limit_column(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64)
}

/// One row after an operation: its new image, or `None` when it is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Change {
    Inode(u64, Option<Inode>),
    Dentry(u64, Vec<u8>, Option<(u64, Kind)>),
    Xattr(u64, Vec<u8>, Option<Vec<u8>>),
    Orphan(u64, Option<i64>),
    Counters(Counters),
    /// A fileset's binding, usage and limits, by fileset id.
    Fileset(Arc<str>, Option<FilesetRow>),
    /// A limited uid's or gid's usage and limits.
    OwnerQuota(Owner, Option<OwnerRow>),
    /// A request's outcome: (client, seq) made or linked `ino` at `at`.
    Request {
        client: u64,
        seq: u64,
        ino: u64,
        at: i64,
    },
    /// Request records older than `before` (seconds) are dropped.
    ForgetRequests {
        before: i64,
    },
}

/// Which row a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Inode(u64),
    Dentry(u64, Vec<u8>),
    Xattr(u64, Vec<u8>),
    Orphan(u64),
    Counters,
    Fileset(Arc<str>),
    OwnerQuota(Owner),
    Request(u64, u64),
}

/// The rows of a batch of entries, each at its last image. There are no
/// foreign keys between namespace rows, so the rows can be written in any
/// order once each holds its final image.
#[derive(Default, Clone)]
pub(crate) struct Batch {
    /// Per file system: row → last change.
    pub rows: Vec<(Arc<str>, Vec<Change>)>,
    pub forget: Vec<(Arc<str>, i64)>,
    /// The owner epoch each file system's changes were made under.
    pub epochs: Vec<(Arc<str>, u64)>,
}

/// Keeps the last image of each row over changes added in order.
#[derive(Default)]
pub(crate) struct Coalescer {
    per_fs: HashMap<Arc<str>, HashMap<Key, Change>>,
    forget: Vec<(Arc<str>, i64)>,
    epochs: HashMap<Arc<str>, u64>,
}

impl Coalescer {
    /// Adds `fs`'s `changes`, made after everything added so far.
    pub fn add<'a>(
        &mut self,
        fs: &Arc<str>,
        epoch: Option<u64>,
        changes: impl IntoIterator<Item = &'a Change>,
    ) {
        if let Some(epoch) = epoch {
            self.epochs.insert(fs.clone(), epoch);
        }
        let rows = self.per_fs.entry(fs.clone()).or_default();
        for c in changes {
            let key = match c {
                Change::Inode(ino, _) => Key::Inode(*ino),
                Change::Dentry(p, name, _) => Key::Dentry(*p, name.clone()),
                Change::Xattr(ino, name, _) => Key::Xattr(*ino, name.clone()),
                Change::Orphan(ino, _) => Key::Orphan(*ino),
                Change::Counters(_) => Key::Counters,
                Change::Fileset(id, _) => Key::Fileset(id.clone()),
                Change::OwnerQuota(o, _) => Key::OwnerQuota(*o),
                Change::Request { client, seq, .. } => Key::Request(*client, *seq),
                Change::ForgetRequests { before } => {
                    self.forget.push((fs.clone(), *before));
                    continue;
                }
            };
            rows.insert(key, c.clone());
        }
    }

    /// Adds a coalesced batch made after everything added so far.
    pub fn add_batch(&mut self, batch: &Batch) {
        for (fs, rows) in &batch.rows {
            self.add(fs, batch.epoch_of(fs), rows);
        }
        for (fs, epoch) in &batch.epochs {
            self.add(fs, Some(*epoch), []);
        }
        self.forget.extend(batch.forget.iter().cloned());
    }

    /// The epoch `fs`'s changes so far were made under, if any were added.
    pub fn epoch_of(&self, fs: &Arc<str>) -> Option<Option<u64>> {
        self.per_fs
            .contains_key(fs)
            .then(|| self.epochs.get(fs).copied())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.per_fs.values().map(HashMap::len).sum::<usize>() + self.forget.len()
    }

    pub fn finish(self) -> Batch {
        Batch {
            rows: self
                .per_fs
                .into_iter()
                .map(|(fs, rows)| (fs, rows.into_values().collect()))
                .collect(),
            forget: self.forget,
            epochs: self.epochs.into_iter().collect(),
        }
    }
}

impl Batch {
    pub fn coalesce(entries: &[Entry]) -> Batch {
        let mut c = Coalescer::default();
        for e in entries {
            c.add(&e.fs, e.epoch, &e.changes);
        }
        c.finish()
    }

    /// The owner epoch `fs`'s changes were made under, if it is served by
    /// lease.
    pub fn epoch_of(&self, fs: &Arc<str>) -> Option<u64> {
        self.epochs.iter().find(|(f, _)| f == fs).map(|(_, e)| *e)
    }

    /// Whether `fs`'s rows are to be written (it is not fenced off).
    pub fn keeps(fenced: &[Arc<str>], fs: &Arc<str>) -> bool {
        !fenced.contains(fs)
    }

    pub fn is_empty(&self) -> bool {
        self.forget.is_empty() && self.rows.iter().all(|(_, r)| r.is_empty())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.forget.len() + self.rows.iter().map(|(_, r)| r.len()).sum::<usize>()
    }
}

/// The head (`INSERT INTO table (columns) `) and tail (` ON CONFLICT …`)
/// of each upsert, as literals: SQLite's statements put placeholders
/// between them and PostgreSQL's (`pg_pipeline`) a guarded SELECT, so the
/// column lists are written once.
macro_rules! upsert_parts {
    (inode_head) => {
        "INSERT INTO inodes (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns, \
         ctime_ns, rdev, parent, target, chunk_size, chains, stored) "
    };
    (inode_tail) => {
        " ON CONFLICT (fs_id, ino) DO UPDATE SET kind = excluded.kind, perm = excluded.perm, \
         uid = excluded.uid, gid = excluded.gid, nlink = excluded.nlink, size = excluded.size, \
         atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, \
         rdev = excluded.rdev, parent = excluded.parent, target = excluded.target, \
         chunk_size = excluded.chunk_size, chains = excluded.chains, stored = excluded.stored"
    };
    (dentry_head) => {
        "INSERT INTO dentries (fs_id, parent, name, ino, kind) "
    };
    (dentry_tail) => {
        " ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind"
    };
    (xattr_head) => {
        "INSERT INTO xattrs (fs_id, ino, name, value) "
    };
    (xattr_tail) => {
        " ON CONFLICT (fs_id, ino, name) DO UPDATE SET value = excluded.value"
    };
    (orphan_head) => {
        "INSERT INTO orphans (fs_id, ino, since) "
    };
    (orphan_tail) => {
        " ON CONFLICT (fs_id, ino) DO UPDATE SET since = excluded.since"
    };
    (fileset_head) => {
        "INSERT INTO fileset_usage (fs_id, fset_id, ino, used_bytes, files, size_limit, \
         file_count_limit) "
    };
    (fileset_tail) => {
        " ON CONFLICT (fs_id, fset_id) DO UPDATE SET ino = excluded.ino, \
         used_bytes = excluded.used_bytes, files = excluded.files, \
         size_limit = excluded.size_limit, file_count_limit = excluded.file_count_limit"
    };
    (owner_head) => {
        "INSERT INTO user_quota_usage (fs_id, user_type, user_id, used_bytes, files, size_limit, \
         file_count_limit) "
    };
    (owner_tail) => {
        " ON CONFLICT (fs_id, user_type, user_id) DO UPDATE SET used_bytes = excluded.used_bytes, \
         files = excluded.files, size_limit = excluded.size_limit, \
         file_count_limit = excluded.file_count_limit"
    };
}
pub(crate) use upsert_parts;

/// The statements both stores run, with `$n` placeholders (SQLite reads
/// them as numbered parameters).
pub(crate) mod statements {
    pub const UPSERT_INODE: &str = concat!(
        upsert_parts!(inode_head),
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        upsert_parts!(inode_tail)
    );
    pub const DELETE_INODE: &str = "DELETE FROM inodes WHERE fs_id = $1 AND ino = $2";
    pub const UPSERT_DENTRY: &str = concat!(
        upsert_parts!(dentry_head),
        "VALUES ($1, $2, $3, $4, $5)",
        upsert_parts!(dentry_tail)
    );
    pub const DELETE_DENTRY: &str =
        "DELETE FROM dentries WHERE fs_id = $1 AND parent = $2 AND name = $3";
    pub const UPSERT_XATTR: &str = concat!(
        upsert_parts!(xattr_head),
        "VALUES ($1, $2, $3, $4)",
        upsert_parts!(xattr_tail)
    );
    pub const DELETE_XATTR: &str = "DELETE FROM xattrs WHERE fs_id = $1 AND ino = $2 AND name = $3";
    pub const UPSERT_ORPHAN: &str = concat!(
        upsert_parts!(orphan_head),
        "VALUES ($1, $2, $3)",
        upsert_parts!(orphan_tail)
    );
    pub const DELETE_ORPHAN: &str = "DELETE FROM orphans WHERE fs_id = $1 AND ino = $2";
    pub const UPDATE_COUNTERS: &str =
        "UPDATE fs_counters SET next_ino = $2, used_bytes = $3, files = $4 WHERE fs_id = $1";
    pub const UPSERT_FILESET: &str = concat!(
        upsert_parts!(fileset_head),
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        upsert_parts!(fileset_tail)
    );
    pub const DELETE_FILESET: &str = "DELETE FROM fileset_usage WHERE fs_id = $1 AND fset_id = $2";
    pub const UPSERT_OWNER: &str = concat!(
        upsert_parts!(owner_head),
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        upsert_parts!(owner_tail)
    );
    pub const DELETE_OWNER: &str =
        "DELETE FROM user_quota_usage WHERE fs_id = $1 AND user_type = $2 AND user_id = $3";
    /// SQLite keys request records by age (migration 0020). A request is
    /// recorded once, when it is applied: every recording operation checks
    /// `not_applied` first, under the shard's lock, so a retry is answered
    /// from memory. No constraint in the table enforces that; were it
    /// recorded again at another time, the load keeps the latest record.
    pub const INSERT_REQUEST: &str =
        "INSERT OR REPLACE INTO meta_requests (fs_id, client, seq, ino, at) VALUES ($1, $2, $3, $4, $5)";
    pub const FORGET_REQUESTS: &str = "DELETE FROM meta_requests WHERE fs_id = $1 AND at < $2";
    pub const OWNER_EPOCH: &str = "SELECT epoch FROM meta_assignments WHERE fs_id = $1";
}

/// A chain list as the `chains` column stores it.
pub(crate) fn chains_text(chains: &[u32]) -> String {
    serde_json::to_string(chains).unwrap_or_else(|_| "[]".into())
}
