//! A file system's namespace in memory: what the store holds, loaded whole
//! when the shard is first used, and changed only through the helpers
//! here, which also record each changed row for the journal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cpfs_proto::meta::{errno::*, Attr, Kind};
use sqlx::Row;

use crate::inode::Inode;
use crate::journal::{Change, Counters, FilesetRow, Owner, OwnerRow};

use super::filesets::Fileset;
use super::owners::OwnerQuotas;
use crate::{fail, Res};

pub(crate) struct FsState {
    pub fs: Arc<str>,
    pub(super) inodes: HashMap<u64, Inode>,
    /// Directory → its entries, sorted by name (readdir pages by name).
    children: HashMap<u64, BTreeMap<Vec<u8>, (u64, Kind)>>,
    xattrs: HashMap<u64, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Inodes whose last link is gone → since (seconds).
    pub orphans: BTreeMap<u64, i64>,
    /// (client, seq) → (inode made or linked, when).
    requests: HashMap<(u64, u64), (u64, i64)>,
    pub counters: Counters,
    /// Every chain of the file system's layout (new files start on one
    /// picked by inode number).
    pub chains: Vec<u32>,
    /// Bound filesets by root inode (`filesets.rs`).
    pub(super) filesets: HashMap<u64, Fileset>,
    /// Filesets whose stored row the next sync pass deletes: their root
    /// was gone at load.
    pub(super) filesets_unbound: Vec<Arc<str>>,
    /// User and group quotas, while any is in force (`owners.rs`).
    pub(super) owners: Option<OwnerQuotas>,
    /// The rows the current operation changed.
    pending: Vec<Change>,
}

fn db<T>(r: Result<T, sqlx::Error>) -> Res<T> {
    r.map_err(|e| (EIO, format!("loading the namespace: {e}")))
}

impl FsState {
    /// Reads the whole namespace of `fs` from the store.
    pub async fn load(pool: &sqlx::AnyPool, fs: &str) -> Res<FsState> {
        let layout: Option<(String,)> = db(sqlx::query_as(
            "SELECT chains FROM fs_layouts WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_optional(pool)
        .await)?;
        let Some((chains,)) = layout else {
            return fail(EIO, "file system has no layout (not provisioned)");
        };
        let chains: Vec<u32> = serde_json::from_str(&chains)
            .map_err(|e| (EIO, format!("layout of {fs}: chain list unreadable: {e}")))?;
        let (next_ino, used_bytes, files): (i64, i64, i64) = db(sqlx::query_as(
            "SELECT next_ino, used_bytes, files FROM fs_counters WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_one(pool)
        .await)?;
        let mut st = FsState {
            fs: fs.into(),
            inodes: HashMap::new(),
            children: HashMap::new(),
            xattrs: HashMap::new(),
            orphans: BTreeMap::new(),
            requests: HashMap::new(),
            counters: Counters {
                next_ino: next_ino.max(1) as u64,
                used_bytes: used_bytes.max(0) as u64,
                files: files.max(0) as u64,
            },
            chains,
            filesets: HashMap::new(),
            filesets_unbound: Vec::new(),
            owners: None,
            pending: Vec::new(),
        };
        let rows = db(sqlx::query(
            "SELECT ino, kind, perm, uid, gid, nlink, size, stored, atime_ns, mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains FROM inodes WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        for r in &rows {
            let i = inode_from_row(r)?;
            if i.attr.kind == Kind::Dir {
                st.children.entry(i.attr.ino).or_default();
            }
            st.inodes.insert(i.attr.ino, i);
        }
        st.give_back_reservations();
        let dentries: Vec<(i64, Vec<u8>, i64, i64)> = db(sqlx::query_as(
            "SELECT parent, name, ino, kind FROM dentries WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        // A file's `parent` must be a directory holding a link to it (the
        // permission walk goes through it); before renames kept it so, a
        // renamed file's row could name a directory it left.
        let mut confirmed = std::collections::HashSet::new();
        let mut elsewhere = HashMap::new();
        for (parent, name, ino, kind) in dentries {
            let (parent, ino, kind) = (parent as u64, ino as u64, Kind::from_code(kind));
            if kind != Kind::Dir {
                match st.inodes.get(&ino) {
                    Some(i) if i.parent == parent => {
                        confirmed.insert(ino);
                    }
                    _ => {
                        elsewhere.entry(ino).or_insert(parent);
                    }
                }
            }
            st.children
                .entry(parent)
                .or_default()
                .insert(name, (ino, kind));
        }
        for (ino, parent) in elsewhere {
            if !confirmed.contains(&ino) {
                if let Some(i) = st.inodes.get_mut(&ino) {
                    i.parent = parent;
                }
            }
        }
        let xattrs: Vec<(i64, Vec<u8>, Vec<u8>)> = db(sqlx::query_as(
            "SELECT ino, name, value FROM xattrs WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        for (ino, name, value) in xattrs {
            st.xattrs.entry(ino as u64).or_default().insert(name, value);
        }
        let orphans: Vec<(i64, i64)> = db(sqlx::query_as(
            "SELECT ino, since FROM orphans WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        st.orphans = orphans.into_iter().map(|(i, s)| (i as u64, s)).collect();
        let requests: Vec<(i64, i64, i64, i64)> = db(sqlx::query_as(
            // Oldest first: were a request ever recorded twice, its latest
            // record is the one kept.
            "SELECT client, seq, ino, at FROM meta_requests WHERE fs_id = $1 ORDER BY at",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        st.requests = requests
            .into_iter()
            .map(|(c, s, i, at)| ((c as u64, s as u64), (i as u64, at)))
            .collect();
        let filesets: Vec<(String, i64, i64, i64, i64, i64)> = db(sqlx::query_as(
            "SELECT fset_id, ino, used_bytes, files, size_limit, file_count_limit FROM fileset_usage WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        let limit = |l: i64| u64::try_from(l).ok();
        st.restore_filesets(
            filesets
                .into_iter()
                .map(|(id, ino, used, count, size, files)| {
                    let row = FilesetRow {
                        ino: ino as u64,
                        used_bytes: used.max(0) as u64,
                        files: count.max(0) as u64,
                        size_limit: limit(size),
                        file_limit: limit(files),
                    };
                    (Arc::from(id), row)
                })
                .collect(),
        );
        let owners: Vec<(String, i64, i64, i64, i64, i64)> = db(sqlx::query_as(
            "SELECT user_type, user_id, used_bytes, files, size_limit, file_count_limit FROM user_quota_usage WHERE fs_id = $1",
        )
        .bind(fs)
        .fetch_all(pool)
        .await)?;
        st.restore_owner_quotas(
            owners
                .into_iter()
                .filter_map(|(kind, id, used, files, size, count)| {
                    let id = u32::try_from(id).ok()?;
                    let owner = if kind == "Gid" {
                        Owner::Gid(id)
                    } else {
                        Owner::Uid(id)
                    };
                    let row = OwnerRow {
                        used_bytes: used.max(0) as u64,
                        files: files.max(0) as u64,
                        size_limit: limit(size),
                        file_limit: limit(count),
                    };
                    Some((owner, row))
                })
                .collect(),
        );
        Ok(st)
    }

    /// Capacity set aside by clients of an earlier incarnation (its
    /// sessions ended with it: see `MetaOp::Reserve`) stops counting: a
    /// file whose stored bytes pass its size counts its size again. What
    /// lies past its end is not cut: the clients may be alive (the
    /// service restarted, or the file system moved here) and record their
    /// sizes when they next call. Done
    /// before the filesets' and owners' usage is counted from the tree;
    /// the changed rows go to the store with the next commit, submitted
    /// by the shard's load without waiting (a crash before it finds the
    /// same rows, and gives the same back again).
    fn give_back_reservations(&mut self) {
        let over: Vec<(u64, u64)> = self
            .inodes
            .values()
            .filter(|i| i.attr.kind == Kind::File && i.attr.stored > i.attr.size)
            .map(|i| (i.attr.ino, i.attr.stored - i.attr.size))
            .collect();
        if over.is_empty() {
            return;
        }
        let freed: u64 = over.iter().map(|(_, n)| n).sum();
        for (ino, _) in &over {
            let _ = self.update_inode(*ino, |i| i.attr.stored = i.attr.size);
        }
        self.count(|c| c.used_bytes = c.used_bytes.saturating_sub(freed));
        tracing::info!(fs = %self.fs, files = over.len(), bytes = freed, "capacity set aside by earlier sessions given back");
    }

    /// Records a changed row.
    pub(super) fn push_change(&mut self, c: Change) {
        self.pending.push(c);
    }

    /// The rows changed since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }

    pub fn inode(&self, ino: u64) -> Res<&Inode> {
        match self.inodes.get(&ino) {
            Some(i) => Ok(i),
            None => fail(ENOENT, format!("inode {ino}")),
        }
    }

    pub fn attr(&self, ino: u64) -> Res<Attr> {
        Ok(self.inode(ino)?.attr.clone())
    }

    /// Stores `i` (new or changed).
    pub fn put_inode(&mut self, i: Inode) {
        self.pending
            .push(Change::Inode(i.attr.ino, Some(i.clone())));
        if i.attr.kind == Kind::Dir {
            self.children.entry(i.attr.ino).or_default();
        }
        self.inodes.insert(i.attr.ino, i);
    }

    /// Changes inode `ino` in place with `f`.
    pub fn update_inode(&mut self, ino: u64, f: impl FnOnce(&mut Inode)) -> Res<Attr> {
        let Some(i) = self.inodes.get_mut(&ino) else {
            return fail(ENOENT, format!("inode {ino}"));
        };
        f(i);
        let i = i.clone();
        let attr = i.attr.clone();
        self.pending.push(Change::Inode(ino, Some(i)));
        Ok(attr)
    }

    /// Removes inode `ino` with its extended attributes (and, for a
    /// directory, its empty entry map). The attributes' bytes stop
    /// counting as used.
    pub fn remove_inode(&mut self, ino: u64) {
        self.inodes.remove(&ino);
        self.children.remove(&ino);
        let freed = self.xattr_bytes(ino);
        if let Some(names) = self.xattrs.remove(&ino) {
            for name in names.into_keys() {
                self.pending.push(Change::Xattr(ino, name, None));
            }
        }
        if freed > 0 {
            self.count(|c| c.used_bytes = c.used_bytes.saturating_sub(freed));
        }
        self.pending.push(Change::Inode(ino, None));
    }

    /// The bytes `ino`'s extended attributes take: names and values, as
    /// they count against the file system's capacity.
    pub fn xattr_bytes(&self, ino: u64) -> u64 {
        self.xattrs.get(&ino).map_or(0, |x| {
            x.iter()
                .map(|(name, value)| (name.len() + value.len()) as u64)
                .sum()
        })
    }

    pub fn child(&self, dir: u64, name: &[u8]) -> Option<(u64, Kind)> {
        self.children.get(&dir).and_then(|c| c.get(name)).copied()
    }

    /// The inodes `dir` holds entries of.
    pub fn children_of(&self, dir: u64) -> impl Iterator<Item = u64> + '_ {
        self.children
            .get(&dir)
            .into_iter()
            .flat_map(|c| c.values().map(|(ino, _)| *ino))
    }

    /// The directories holding an entry of `ino` (a walk of them all).
    pub fn dirs_holding(&self, ino: u64) -> impl Iterator<Item = u64> + '_ {
        self.children
            .iter()
            .filter(move |(_, c)| c.values().any(|(i, _)| *i == ino))
            .map(|(dir, _)| *dir)
    }

    pub fn is_empty_dir(&self, dir: u64) -> bool {
        self.children.get(&dir).is_none_or(|c| c.is_empty())
    }

    /// The entries of `dir` after `after` (all when `None`), at most `limit`.
    pub fn entries(
        &self,
        dir: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> impl Iterator<Item = (&Vec<u8>, &(u64, Kind))> {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = match after {
            Some(a) => Excluded(a.to_vec()),
            None => Unbounded,
        };
        self.children
            .get(&dir)
            .into_iter()
            .flat_map(move |c| c.range((lower.clone(), Unbounded)))
            .take(limit)
    }

    pub fn add_entry(&mut self, dir: u64, name: &[u8], ino: u64, kind: Kind) {
        self.children
            .entry(dir)
            .or_default()
            .insert(name.to_vec(), (ino, kind));
        self.pending
            .push(Change::Dentry(dir, name.to_vec(), Some((ino, kind))));
    }

    pub fn remove_entry(&mut self, dir: u64, name: &[u8]) {
        if let Some(c) = self.children.get_mut(&dir) {
            c.remove(name);
        }
        self.pending.push(Change::Dentry(dir, name.to_vec(), None));
    }

    pub fn xattr(&self, ino: u64, name: &[u8]) -> Option<&Vec<u8>> {
        self.xattrs.get(&ino).and_then(|x| x.get(name))
    }

    pub fn xattr_names(&self, ino: u64) -> Vec<Vec<u8>> {
        self.xattrs
            .get(&ino)
            .map(|x| x.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn set_xattr(&mut self, ino: u64, name: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.xattrs
                    .entry(ino)
                    .or_default()
                    .insert(name.to_vec(), v.to_vec());
            }
            None => {
                if let Some(x) = self.xattrs.get_mut(&ino) {
                    x.remove(name);
                }
            }
        }
        self.pending
            .push(Change::Xattr(ino, name.to_vec(), value.map(|v| v.to_vec())));
    }

    pub fn set_orphan(&mut self, ino: u64, since: Option<i64>) {
        match since {
            Some(t) => self.orphans.insert(ino, t),
            None => self.orphans.remove(&ino),
        };
        self.pending.push(Change::Orphan(ino, since));
    }

    /// Sets the counters with `f` and records the row.
    pub fn count(&mut self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters);
        self.pending.push(Change::Counters(self.counters));
    }

    pub fn new_ino(&mut self) -> u64 {
        let ino = self.counters.next_ino;
        self.count(|c| c.next_ino += 1);
        ino
    }

    /// The inode request (client, seq) made or linked, if it was applied.
    pub fn request(&self, client: u64, seq: u64) -> Option<u64> {
        self.requests.get(&(client, seq)).map(|r| r.0)
    }

    pub fn record_request(&mut self, client: u64, seq: u64, ino: u64, at: i64) {
        self.requests.insert((client, seq), (ino, at));
        self.pending.push(Change::Request {
            client,
            seq,
            ino,
            at,
        });
    }

    /// Drops the request records older than `before`; how many.
    pub fn forget_requests(&mut self, before: i64) -> u64 {
        let n = self.requests.len();
        self.requests.retain(|_, (_, at)| *at >= before);
        let gone = (n - self.requests.len()) as u64;
        if gone > 0 {
            self.pending.push(Change::ForgetRequests { before });
        }
        gone
    }
}

fn inode_from_row(r: &sqlx::any::AnyRow) -> Res<Inode> {
    let g = |name: &str| -> Res<i64> { db(r.try_get::<i64, _>(name)) };
    let chains: String = db(r.try_get("chains"))?;
    let ino = g("ino")?;
    Ok(Inode {
        attr: Attr {
            ino: ino as u64,
            kind: Kind::from_code(g("kind")?),
            perm: g("perm")? as u32,
            nlink: g("nlink")? as u32,
            uid: g("uid")? as u32,
            gid: g("gid")? as u32,
            size: g("size")? as u64,
            stored: g("stored")? as u64,
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
