//! Filesets in a namespace: directory subtrees whose usage (bytes stored
//! and inodes) is counted exactly as the namespace changes, and whose
//! limits are checked before a change that would pass them (EDQUOT), as
//! Lustre's and XFS's project quotas do. Nothing crosses a fileset's
//! boundary: a rename or link between two filesets (or between one and the
//! rest of the file system) is EXDEV, so `mv` copies, and a fileset's root,
//! or a directory above one, cannot be renamed or removed (EBUSY): the
//! path the control plane shows stays true.
//!
//! Membership is where an inode's `parent` chain meets a root: a file
//! counts where its `parent` directory does, and an inode with no links
//! left counts nowhere (its bytes stop counting when its last name goes).
//! Usage is computed from the tree when a fileset is bound or the
//! namespace loaded, and kept current in memory by every operation after,
//! which is where limits are checked. The figures are published to the
//! store (`fileset_usage`, what DescribeFilesets shows) by the next sync
//! pass, within [`SYNC_PERIOD`], not with every operation: one more row
//! in every commit cost 9 % more instructions per create (measured by
//! `bench/fileset_cost.py`), and nothing depends on the stored figure,
//! since a load recomputes it from the tree.

use std::collections::HashSet;
use std::sync::Arc;

use cpfs_proto::meta::{errno::*, Caller, Change as WatchedChange, Kind, ROOT_INO};

use crate::journal::{Change, FilesetRow};
use crate::policy::{FilesetSpec, UserQuotaSpec};
use crate::{fail, Res};

use super::state::FsState;
use super::NewNode;

/// Deeper than any path the API lets a fileset have; a walk up that goes
/// further has met a damaged tree.
const MAX_WALK: usize = 4096;

/// The origin of changes the service makes on its own (no session has 0).
const NO_SESSION: u64 = 0;

/// Directories a new fileset's path makes when missing are root's, 0755.
const MADE_DIR_PERM: u32 = 0o755;

/// One bound fileset, keyed by its root inode.
#[derive(Debug, Clone)]
pub(crate) struct Fileset {
    pub id: Arc<str>,
    pub used_bytes: u64,
    pub files: u64,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
    /// Usage moved since it was last published.
    pub dirty: bool,
}

impl Fileset {
    fn row(&self, root: u64) -> FilesetRow {
        FilesetRow {
            ino: root,
            used_bytes: self.used_bytes,
            files: self.files,
            size_limit: self.size_limit,
            file_limit: self.file_limit,
        }
    }
}

/// What a sync pass did to one fileset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    Bound,
    Released,
    Failed(String),
}

impl FsState {
    /// The root of the fileset `ino` lies in, if any.
    pub fn fileset_of(&self, ino: u64) -> Option<u64> {
        if self.filesets.is_empty() {
            return None;
        }
        let i = self.inodes.get(&ino)?;
        if i.attr.kind != Kind::Dir && i.attr.nlink == 0 {
            return None;
        }
        let mut cur = ino;
        for _ in 0..MAX_WALK {
            if self.filesets.contains_key(&cur) {
                return Some(cur);
            }
            if cur == ROOT_INO {
                return None;
            }
            cur = self.inodes.get(&cur)?.parent;
        }
        None
    }

    /// For a mount rooted at `root` inside a fileset: the fileset's size
    /// limit, used bytes and files (what `df` shows there).
    pub fn fileset_stat(&self, root: u64) -> Option<(Option<u64>, u64, u64)> {
        if root == ROOT_INO {
            return None;
        }
        let f = self.filesets.get(&self.fileset_of(root)?)?;
        Some((f.size_limit, f.used_bytes, f.files))
    }

    /// Whether directory `dir` is a fileset's root or lies above one.
    pub fn holds_fileset_root(&self, dir: u64) -> bool {
        self.filesets.keys().any(|root| {
            let mut cur = *root;
            for _ in 0..MAX_WALK {
                if cur == dir {
                    return true;
                }
                if cur == ROOT_INO {
                    return false;
                }
                match self.inodes.get(&cur) {
                    Some(i) => cur = i.parent,
                    None => return false,
                }
            }
            false
        })
    }

    /// Refuses adding `bytes` and `files` to fileset `root` past its
    /// limits. Shrinking is always allowed, even over a limit set below
    /// the usage.
    pub fn quota_allows(&self, root: Option<u64>, bytes: u64, files: u64) -> Res<()> {
        let Some(f) = root.and_then(|r| self.filesets.get(&r)) else {
            return Ok(());
        };
        if bytes > 0
            && f.size_limit
                .is_some_and(|l| f.used_bytes.saturating_add(bytes) > l)
        {
            return fail(EDQUOT, format!("fileset {} size limit reached", f.id));
        }
        if files > 0
            && f.file_limit
                .is_some_and(|l| f.files.saturating_add(files) > l)
        {
            return fail(EDQUOT, format!("fileset {} file count limit reached", f.id));
        }
        Ok(())
    }

    /// Moves fileset `root`'s usage by `bytes` and `files` (published by
    /// the next sync pass).
    pub fn charge(&mut self, root: Option<u64>, bytes: i64, files: i64) {
        let Some(r) = root else { return };
        if bytes == 0 && files == 0 {
            return;
        }
        let Some(f) = self.filesets.get_mut(&r) else {
            return;
        };
        f.used_bytes = f.used_bytes.saturating_add_signed(bytes);
        f.files = f.files.saturating_add_signed(files);
        f.dirty = true;
    }

    /// The bytes `ino` counts for: its data and its extended attributes.
    pub fn inode_bytes(&self, ino: u64) -> u64 {
        let data = match self.inodes.get(&ino) {
            Some(i) if i.attr.kind == Kind::File => i.attr.stored,
            _ => 0,
        };
        data + self.xattr_bytes(ino)
    }

    /// Usage of the subtree under directory `root`: its inodes' bytes
    /// (the root's own attributes included) and how many inodes below it.
    /// A file counts under the directory its `parent` names, once however
    /// many links it has there.
    pub fn subtree_usage(&self, root: u64) -> (u64, u64) {
        let mut bytes = self.inode_bytes(root);
        let mut files = 0u64;
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(dir) = stack.pop() {
            for child in self.children_of(dir).collect::<Vec<_>>() {
                let Some(i) = self.inodes.get(&child) else {
                    continue;
                };
                if i.attr.kind == Kind::Dir {
                    if i.parent == dir && seen.insert(child) {
                        stack.push(child);
                        bytes += self.inode_bytes(child);
                        files += 1;
                    }
                } else if i.parent == dir && seen.insert(child) {
                    bytes += self.inode_bytes(child);
                    files += 1;
                }
            }
        }
        (bytes, files)
    }

    /// Bindings read from the store at load. Usage is recomputed from the
    /// tree (the truth); a stored figure that differs (the last changes
    /// before a crash were not published yet), or a binding whose root is
    /// gone, is put right by the next sync pass (nothing is recorded here:
    /// a load changes no rows).
    pub fn restore_filesets(&mut self, rows: Vec<(Arc<str>, FilesetRow)>) {
        for (id, row) in rows {
            let root = row.ino;
            if self
                .inodes
                .get(&root)
                .is_none_or(|i| i.attr.kind != Kind::Dir)
            {
                tracing::warn!(fs = %self.fs, fileset = %id, root, "fileset root is gone; unbinding it");
                self.filesets_unbound.push(id);
                continue;
            }
            self.filesets.insert(
                root,
                Fileset {
                    id,
                    used_bytes: row.used_bytes,
                    files: row.files,
                    size_limit: row.size_limit,
                    file_limit: row.file_limit,
                    dirty: false,
                },
            );
        }
        let roots: Vec<u64> = self.filesets.keys().copied().collect();
        for root in roots {
            let (bytes, files) = self.subtree_usage(root);
            let Some(f) = self.filesets.get_mut(&root) else {
                continue;
            };
            if (f.used_bytes, f.files) != (bytes, files) {
                tracing::info!(fs = %self.fs, fileset = %f.id, stored_bytes = f.used_bytes, bytes, stored_files = f.files, files, "fileset usage recomputed at load; publishing it");
                f.used_bytes = bytes;
                f.files = files;
                f.dirty = true;
            }
        }
    }

    /// Brings the bound filesets to what the control plane wants: binds
    /// new ones (making their directories, each added to `made` for the
    /// mounts to hear of), updates limits, unbinds released ones. `t` is
    /// now in nanoseconds.
    /// Whether binding `specs` would make directories: one of them is not
    /// bound yet.
    pub fn binds_new(&self, specs: &[FilesetSpec]) -> bool {
        specs
            .iter()
            .filter(|s| !s.releasing)
            .any(|s| !self.filesets.values().any(|f| f.id.as_ref() == s.id))
    }

    pub fn apply_filesets(
        &mut self,
        specs: &[FilesetSpec],
        t: i64,
        made: &mut Vec<WatchedChange>,
    ) -> Vec<(String, Settled)> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.filesets_unbound) {
            self.push_change(Change::Fileset(id, None));
        }
        let mut rows = Vec::new();
        for (root, f) in self.filesets.iter_mut().filter(|(_, f)| f.dirty) {
            f.dirty = false;
            rows.push(Change::Fileset(f.id.clone(), Some(f.row(*root))));
        }
        for row in rows {
            self.push_change(row);
        }
        let wanted: HashSet<&str> = specs
            .iter()
            .filter(|s| !s.releasing)
            .map(|s| s.id.as_str())
            .collect();
        let gone: Vec<u64> = self
            .filesets
            .iter()
            .filter(|(_, f)| !wanted.contains(f.id.as_ref()))
            .map(|(root, _)| *root)
            .collect();
        for root in gone {
            if let Some(f) = self.filesets.remove(&root) {
                self.push_change(Change::Fileset(f.id.clone(), None));
                out.push((f.id.to_string(), Settled::Released));
            }
        }
        for spec in specs.iter().filter(|s| !s.releasing) {
            let bound = self
                .filesets
                .iter_mut()
                .find(|(_, f)| f.id.as_ref() == spec.id);
            match bound {
                Some((root, f)) => {
                    if f.size_limit != spec.size_limit || f.file_limit != spec.file_limit {
                        f.size_limit = spec.size_limit;
                        f.file_limit = spec.file_limit;
                        let change = Change::Fileset(f.id.clone(), Some(f.row(*root)));
                        self.push_change(change);
                    }
                }
                None => {
                    let settled = match self.bind(spec, t, made) {
                        Ok(()) => Settled::Bound,
                        Err((_, why)) => Settled::Failed(why),
                    };
                    out.push((spec.id.clone(), settled));
                }
            }
        }
        out
    }

    /// Binds `spec`'s directory, making it (and missing parents) first.
    /// Checked before anything changes: an existing non-directory on the
    /// path, or a fileset above or below it, refuses it.
    fn bind(&mut self, spec: &FilesetSpec, t: i64, made: &mut Vec<WatchedChange>) -> Res<()> {
        let names: Vec<&[u8]> = spec
            .path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::as_bytes)
            .collect();
        if names.is_empty() {
            return fail(EINVAL, "a fileset cannot be the root directory");
        }
        let mut dir = ROOT_INO;
        let mut existing = 0;
        for name in &names {
            match self.child(dir, name) {
                Some((ino, Kind::Dir)) => {
                    dir = ino;
                    existing += 1;
                }
                Some(_) => return fail(ENOTDIR, format!("{} is not a directory", spec.path)),
                None => break,
            }
        }
        if self.fileset_of(dir).is_some() {
            return fail(EEXIST, format!("{} lies in another fileset", spec.path));
        }
        if existing == names.len() && self.holds_fileset_root(dir) {
            return fail(EEXIST, format!("{} holds another fileset", spec.path));
        }
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        };
        for name in &names[existing..] {
            let new = self.create(
                &root,
                dir,
                name,
                NewNode {
                    kind: Kind::Dir,
                    perm: MADE_DIR_PERM,
                    rdev: 0,
                    target: None,
                },
                None,
                t,
            )?;
            made.push(WatchedChange::Entry {
                parent: dir,
                name: name.to_vec(),
            });
            dir = new.ino;
        }
        let (used_bytes, files) = self.subtree_usage(dir);
        let f = Fileset {
            id: spec.id.as_str().into(),
            used_bytes,
            files,
            size_limit: spec.size_limit,
            file_limit: spec.file_limit,
            dirty: false,
        };
        self.push_change(Change::Fileset(f.id.clone(), Some(f.row(dir))));
        self.filesets.insert(dir, f);
        Ok(())
    }
}

/// How often a metadata server brings its filesets and user quotas to what
/// the control plane wants (and how long a new fileset or limit may wait
/// for it; the control plane's quota calls wait for it to apply).
pub const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

impl crate::MetaService {
    /// One pass over the file systems this server serves: binds, limits and
    /// releases filesets, and sets user and group quotas, as the control
    /// plane lists them, and publishes usage that moved. A file system with
    /// neither, wanted or in force, is not even loaded.
    pub async fn sync_quotas(&self) -> Result<(), String> {
        let loaded = self.shards.loaded();
        let serving: Vec<String> = match self.shards.ownership.get() {
            Some(o) => o.owned().into_iter().map(|(fs, _)| fs).collect(),
            None => loaded
                .iter()
                .map(|s| s.with(|st| st.fs.to_string()))
                .collect(),
        };
        if serving.is_empty() {
            return Ok(());
        }
        let specs = self.policies.filesets(&serving).await?;
        let users = self.policies.user_quotas(&serving).await?;
        let t = super::now_ns();
        let mut synced = false;
        for fs in &serving {
            let mine: Vec<FilesetSpec> = specs.iter().filter(|s| &s.fs == fs).cloned().collect();
            let limits: Vec<UserQuotaSpec> =
                users.iter().filter(|s| &s.fs == fs).cloned().collect();
            if mine.is_empty() && limits.is_empty() {
                let bound = loaded.iter().any(|s| {
                    s.with(|st| {
                        st.fs.as_ref() == fs.as_str()
                            && !(st.filesets.is_empty()
                                && st.filesets_unbound.is_empty()
                                && !st.has_owner_quotas())
                    })
                });
                if !bound {
                    continue;
                }
            }
            synced = true;
            // Directories the service makes end every delegation of the
            // file system first (their parents are not known before).
            let binds = self.shards.read(fs, |st| Ok(st.binds_new(&mine))).await;
            if binds.unwrap_or(true) {
                self.watchers.recall_all(fs, NO_SESSION).await;
            }
            let mut made = Vec::new();
            match self
                .shards
                .write(fs, |st| {
                    st.apply_user_quotas(&limits);
                    Ok(st.apply_filesets(&mine, t, &mut made))
                })
                .await
            {
                Ok(settled) => {
                    // No session made them: every mount that saw the
                    // parents hears of them, and a delegation of a parent
                    // granted since the recall above is recalled too.
                    self.watchers.recall(fs, NO_SESSION, &made).await;
                    self.watchers.publish(fs, NO_SESSION, &made);
                    self.log_settled(fs, settled)
                }
                // Moved away meanwhile: its new owner binds them.
                Err((EMOVED, _)) => {}
                Err((_, why)) => return Err(format!("filesets of {fs}: {why}")),
            }
        }
        // Usage is published once it is in the tables the control plane
        // reads (they follow the journal's log a fold behind).
        if synced {
            self.shards.journal.settled().await;
        }
        Ok(())
    }

    /// Logs what a pass did; a failure only when it is new, since the
    /// next pass tries the same fileset again.
    fn log_settled(&self, fs: &str, settled: Vec<(String, Settled)>) {
        let mut failing = self
            .fileset_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (id, s) in settled {
            match s {
                Settled::Bound => {
                    failing.remove(&id);
                    tracing::info!(fs, fileset = %id, "fileset bound");
                }
                Settled::Released => {
                    failing.remove(&id);
                    tracing::info!(fs, fileset = %id, "fileset released");
                }
                Settled::Failed(why) => {
                    if failing.get(&id) != Some(&why) {
                        tracing::warn!(fs, fileset = %id, why, "fileset cannot be bound; retrying");
                        failing.insert(id, why);
                    }
                }
            }
        }
    }
}
