//! User and group quotas (a CPFS extension, as Lustre, FSx for Lustre and
//! JuiceFS have them): hard limits on the bytes and inodes each uid and
//! each gid owns in a file system, checked before a change that would pass
//! them (EDQUOT), as Linux disk quotas do: the owner of the inode is
//! charged, whoever writes; root (the caller) is not held back, and a
//! non-root chown or chgrp that would push the new owner past a limit is
//! refused. Fileset limits apply to root too.
//!
//! Usage is tracked only while the file system has at least one such
//! quota: the first one scans every inode (an inode counts while it has a
//! name: its data and extended attributes as bytes, itself as one file),
//! and the last one cancelled drops the tables. As for filesets, the
//! figures of limited owners are published by the sync pass and recomputed
//! at load.

use std::collections::{HashMap, HashSet};

use cpfs_proto::meta::{errno::*, Kind};

use crate::journal::{Change, Owner, OwnerRow};
use crate::policy::UserQuotaSpec;
use crate::{fail, Res};

use super::state::FsState;

type Limits = (Option<u64>, Option<u64>);

/// Every owner's usage, and the limits of some.
#[derive(Debug, Default)]
pub(crate) struct OwnerQuotas {
    /// (bytes, files) of every uid and gid that owns something.
    usage: HashMap<Owner, (u64, u64)>,
    limits: HashMap<Owner, Limits>,
    /// Limited owners whose usage moved since it was last published.
    dirty: HashSet<Owner>,
}

impl OwnerQuotas {
    fn row(&self, o: Owner) -> Option<OwnerRow> {
        let (size_limit, file_limit) = *self.limits.get(&o)?;
        let (used_bytes, files) = self.usage.get(&o).copied().unwrap_or_default();
        Some(OwnerRow {
            used_bytes,
            files,
            size_limit,
            file_limit,
        })
    }
}

impl FsState {
    /// The (uid, gid) whose usage `ino` counts for: none once its last
    /// name is gone, or while no user quota exists.
    pub fn counted_owner(&self, ino: u64) -> Option<(u32, u32)> {
        self.owners.as_ref()?;
        let i = self.inodes.get(&ino)?;
        (i.attr.kind == Kind::Dir || i.attr.nlink > 0).then_some((i.attr.uid, i.attr.gid))
    }

    /// Refuses adding `bytes` and `files` to `owner`'s uid or gid past a
    /// limit, unless `exempt` (the caller is root).
    pub fn owner_allows(
        &self,
        owner: Option<(u32, u32)>,
        bytes: u64,
        files: u64,
        exempt: bool,
    ) -> Res<()> {
        let (Some(q), Some((uid, gid)), false) = (&self.owners, owner, exempt) else {
            return Ok(());
        };
        for o in [Owner::Uid(uid), Owner::Gid(gid)] {
            let Some((size, count)) = q.limits.get(&o) else {
                continue;
            };
            let (used, n) = q.usage.get(&o).copied().unwrap_or_default();
            if bytes > 0 && size.is_some_and(|l| used.saturating_add(bytes) > l) {
                return fail(
                    EDQUOT,
                    format!("{} {} size limit reached", o.type_name(), o.id()),
                );
            }
            if files > 0 && count.is_some_and(|l| n.saturating_add(files) > l) {
                return fail(
                    EDQUOT,
                    format!("{} {} file count limit reached", o.type_name(), o.id()),
                );
            }
        }
        Ok(())
    }

    /// Moves `owner`'s usage (its uid's and its gid's) by `bytes` and
    /// `files`.
    pub fn owner_charge(&mut self, owner: Option<(u32, u32)>, bytes: i64, files: i64) {
        let (Some(q), Some((uid, gid))) = (self.owners.as_mut(), owner) else {
            return;
        };
        if bytes == 0 && files == 0 {
            return;
        }
        for o in [Owner::Uid(uid), Owner::Gid(gid)] {
            let u = q.usage.entry(o).or_default();
            u.0 = u.0.saturating_add_signed(bytes);
            u.1 = u.1.saturating_add_signed(files);
            if q.limits.contains_key(&o) {
                q.dirty.insert(o);
            }
        }
    }

    /// Every owner's usage, counted from the namespace.
    fn scan_owners(&self) -> HashMap<Owner, (u64, u64)> {
        let mut usage: HashMap<Owner, (u64, u64)> = HashMap::new();
        for (ino, i) in &self.inodes {
            if i.attr.kind != Kind::Dir && i.attr.nlink == 0 {
                continue;
            }
            let bytes = self.inode_bytes(*ino);
            for o in [Owner::Uid(i.attr.uid), Owner::Gid(i.attr.gid)] {
                let u = usage.entry(o).or_default();
                u.0 += bytes;
                u.1 += 1;
            }
        }
        usage
    }

    /// Limits read from the store at load; usage is counted from the tree
    /// and a stored figure that differs is published by the next sync.
    pub fn restore_owner_quotas(&mut self, rows: Vec<(Owner, OwnerRow)>) {
        if rows.is_empty() {
            return;
        }
        let usage = self.scan_owners();
        let mut q = OwnerQuotas {
            usage,
            ..Default::default()
        };
        for (o, row) in rows {
            q.limits.insert(o, (row.size_limit, row.file_limit));
            let counted = q.usage.get(&o).copied().unwrap_or_default();
            if counted != (row.used_bytes, row.files) {
                q.dirty.insert(o);
            }
        }
        self.owners = Some(q);
    }

    /// Brings the limits to what the control plane wants and publishes the
    /// usage of limited owners that moved.
    pub fn apply_user_quotas(&mut self, specs: &[UserQuotaSpec]) {
        let mut changes = Vec::new();
        if specs.is_empty() {
            if let Some(q) = self.owners.take() {
                changes.extend(q.limits.into_keys().map(|o| Change::OwnerQuota(o, None)));
            }
        } else {
            if self.owners.is_none() {
                let usage = self.scan_owners();
                self.owners = Some(OwnerQuotas {
                    usage,
                    ..Default::default()
                });
            }
            let Some(q) = self.owners.as_mut() else {
                return;
            };
            let wanted: HashMap<Owner, Limits> = specs
                .iter()
                .map(|s| {
                    let o = if s.group {
                        Owner::Gid(s.id)
                    } else {
                        Owner::Uid(s.id)
                    };
                    (o, (s.size_limit, s.file_limit))
                })
                .collect();
            for o in q.limits.keys().filter(|o| !wanted.contains_key(o)) {
                changes.push(Change::OwnerQuota(*o, None));
            }
            for (o, l) in &wanted {
                if q.limits.get(o) != Some(l) {
                    q.dirty.insert(*o);
                }
            }
            q.limits = wanted;
            let dirty: Vec<Owner> = q.dirty.drain().collect();
            for o in dirty {
                if let Some(row) = q.row(o) {
                    changes.push(Change::OwnerQuota(o, Some(row)));
                }
            }
        }
        for c in changes {
            self.push_change(c);
        }
    }

    /// Whether any user or group quota is in force.
    pub fn has_owner_quotas(&self) -> bool {
        self.owners.is_some()
    }
}
