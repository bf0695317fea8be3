//! Filesets: directory subtrees of a CPFS file system that the service
//! tracks, with optional quotas (CreateFileset, DescribeFilesets,
//! GetFileset, ModifyFileset, DeleteFileset, SetFilesetQuota,
//! CancelFilesetQuota).
//!
//! The `filesets` rows are desired state. The metadata server owning the
//! file system reads them ([`ControlPlane::fileset_specs`], every
//! `cpfs_meta::QUOTA_SYNC_PERIOD`), binds each path (making the
//! directory when it is new), enforces the limits and commits the exact
//! usage with every namespace change (`cpfs_meta::quota_view`). Status
//! follows what it did: CREATING until the binding is committed, then
//! CREATED; RELEASING until it is unbound, then the row goes. Deleting a
//! fileset stops tracking the subtree: the directory and its data stay.

use std::collections::HashMap;

use cpfs_meta::policy::FilesetSpec;
use cpfs_meta::quota_view::{self, BoundFileset, PathState};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::filesystems::Status as FsStatus;
use crate::{idempotency, ids, ControlPlane};

/// The reference's statuses.
pub const CREATING: &str = "CREATING";
pub const CREATED: &str = "CREATED";
pub const RELEASING: &str = "RELEASING";

/// Deepest fileset path: `/` is level 0, `/a/b/c/` level 3.
pub const MAX_DEPTH: usize = 8;
pub const MAX_PATH_LEN: usize = 1024;
/// How long a quota call waits for the owning metadata server to enforce
/// the new limits before it answers anyway (the limits are recorded and
/// apply when a server takes the file system).
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The operator's fileset limits (`cpfs serve` settings). Defaults are the
/// reference's for CPFS general-purpose: 10 filesets per file system (CPFS
/// for Lingjun allows 500), quotas of at least 10 GiB in 1 GiB steps and
/// 10,000 to 10^10 files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesetLimits {
    pub per_file_system: u32,
    pub min_size_limit: u64,
    pub min_file_limit: u64,
}

pub const GIB: u64 = 1 << 30;
pub const MAX_FILE_LIMIT: u64 = 10_000_000_000;

impl Default for FilesetLimits {
    fn default() -> Self {
        FilesetLimits {
            per_file_system: 10,
            min_size_limit: 10 * GIB,
            min_file_limit: 10_000,
        }
    }
}

impl FilesetLimits {
    /// SizeLimit goes in steps of 1 GiB (of the minimum, when an operator
    /// set one below 1 GiB).
    pub fn size_step(&self) -> u64 {
        self.min_size_limit.clamp(1, GIB)
    }

    pub fn check_size(&self, size: u64) -> Result<()> {
        if size < self.min_size_limit || !size.is_multiple_of(self.size_step()) {
            return Err(Error::invalid(
                "SizeLimit",
                format!(
                    "SizeLimit must be at least {} bytes, in steps of {} bytes",
                    self.min_size_limit,
                    self.size_step()
                ),
            ));
        }
        Ok(())
    }

    pub fn check_files(&self, files: u64) -> Result<()> {
        if !(self.min_file_limit..=MAX_FILE_LIMIT).contains(&files) {
            return Err(Error::invalid(
                "FileCountLimit",
                format!(
                    "FileCountLimit must be between {} and {MAX_FILE_LIMIT}",
                    self.min_file_limit
                ),
            ));
        }
        Ok(())
    }
}

/// A fileset as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fileset {
    pub id: String,
    pub fs_id: String,
    pub path: String,
    pub description: String,
    pub deletion_protection: bool,
    pub status: String,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
    pub used_bytes: u64,
    pub files: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "fset_id, fs_id, path, description, deletion_protection, status, size_limit, file_count_limit, created_at, updated_at";

fn limit(v: Option<i64>) -> Option<u64> {
    v.and_then(|l| u64::try_from(l).ok())
}

fn column(v: Option<u64>) -> Option<i64> {
    v.map(|l| l.min(i64::MAX as u64) as i64)
}

impl Fileset {
    fn from_row(r: &AnyRow) -> Result<Fileset> {
        Ok(Fileset {
            id: r.try_get("fset_id")?,
            fs_id: r.try_get("fs_id")?,
            path: r.try_get("path")?,
            description: r.try_get("description")?,
            deletion_protection: r.try_get::<i64, _>("deletion_protection")? != 0,
            status: r.try_get("status")?,
            size_limit: limit(r.try_get("size_limit")?),
            file_limit: limit(r.try_get("file_count_limit")?),
            used_bytes: 0,
            files: 0,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewFileset {
    pub fs_id: String,
    pub path: String,
    pub description: Option<String>,
    pub deletion_protection: bool,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
    pub dry_run: bool,
    pub client_token: Option<String>,
}

/// What a change of a fileset carries besides its ids.
#[derive(Debug, Clone)]
pub enum FilesetChange {
    Modify {
        description: Option<String>,
        deletion_protection: Option<bool>,
    },
    Delete,
    SetQuota {
        size_limit: Option<u64>,
        file_limit: Option<u64>,
    },
    CancelQuota,
}

impl FilesetChange {
    fn action(&self) -> &'static str {
        match self {
            FilesetChange::Modify { .. } => "ModifyFileset",
            FilesetChange::Delete => "DeleteFileset",
            FilesetChange::SetQuota { .. } => "SetFilesetQuota",
            FilesetChange::CancelQuota => "CancelFilesetQuota",
        }
    }
}

/// Checks a fileset path the way the reference does: absolute, `/` at both
/// ends, 2 to 1,024 characters, at most [`MAX_DEPTH`] levels; and, since
/// it names directories, no empty, `.` or `..` component, none longer
/// than a file name may be.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid("FileSystemPath", why.to_string()));
    if path.len() < 2 || path.len() > MAX_PATH_LEN {
        return bad("FileSystemPath must be 2 to 1024 characters");
    }
    if !path.starts_with('/') || !path.ends_with('/') {
        return bad("FileSystemPath must start and end with /");
    }
    let names: Vec<&str> = path[1..path.len() - 1].split('/').collect();
    if names
        .iter()
        .any(|n| n.is_empty() || *n == "." || *n == ".." || n.len() > 255 || n.contains('\0'))
    {
        return bad("FileSystemPath has an empty, '.', '..' or over-long component");
    }
    if names.len() > MAX_DEPTH {
        return bad("FileSystemPath is deeper than 8 levels");
    }
    Ok(())
}

/// Descriptions as the reference has them: 2 to 128 characters, starting
/// with a letter, not with `http://` or `https://`.
pub fn check_description(d: &str) -> Result<()> {
    let n = d.chars().count();
    let starts_with_letter = d.chars().next().is_some_and(char::is_alphabetic);
    if !(2..=128).contains(&n)
        || !starts_with_letter
        || d.starts_with("http://")
        || d.starts_with("https://")
    {
        return Err(Error::invalid(
            "Description",
            "Description must be 2 to 128 characters, start with a letter and not with http:// or https://",
        ));
    }
    Ok(())
}

/// Whether one path lies inside the other (or is it).
fn nested(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl ControlPlane {
    /// A CPFS file system of the account that is Running (filesets are
    /// made and changed only then).
    async fn fileset_file_system(&self, account_id: &str, fs_id: &str) -> Result<()> {
        let fs = self.file_system(account_id, fs_id).await?;
        match fs.status {
            FsStatus::Deleting => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
            FsStatus::Running => Ok(()),
            other => Err(Error::invalid_status(
                ResourceKind::FileSystem,
                format!(
                    "the file system is {}; filesets can be changed only when it is Running",
                    other.as_str()
                ),
            )),
        }
    }

    pub async fn create_fileset(&self, account_id: &str, req: NewFileset) -> Result<String> {
        check_path(&req.path)?;
        if let Some(d) = &req.description {
            check_description(d)?;
        }
        let limits = self.fileset_limits;
        if let Some(s) = req.size_limit {
            limits.check_size(s)?;
        }
        if let Some(f) = req.file_limit {
            limits.check_files(f)?;
        }
        if let Some(t) = &req.client_token {
            idempotency::validate_token(t)?;
        }
        self.fileset_file_system(account_id, &req.fs_id).await?;
        match quota_view::path_state(&self.store, &req.fs_id, &req.path).await? {
            PathState::Dir | PathState::Missing => {}
            PathState::NotDir => {
                return Err(Error::invalid(
                    "FileSystemPath",
                    "FileSystemPath names something that is not a directory",
                ))
            }
            PathState::NoParent => {
                return Err(Error::invalid(
                    "FileSystemPath",
                    "the parent directory of FileSystemPath must exist",
                ))
            }
        }
        let mut tx = self.store.begin_write().await?;
        if let Some(token) = &req.client_token {
            if let Some(id) =
                idempotency::lookup(&mut tx, account_id, "CreateFileset", token).await?
            {
                return Ok(id);
            }
        }
        let existing: Vec<(String, String)> =
            sqlx::query_as("SELECT fset_id, path FROM filesets WHERE fs_id = $1")
                .bind(&req.fs_id)
                .fetch_all(&mut *tx)
                .await?;
        if let Some((id, _)) = existing.iter().find(|(_, p)| *p == req.path) {
            return Err(Error::AlreadyExists {
                kind: ResourceKind::Fileset,
                id: format!("{id} at {}", req.path),
            });
        }
        if let Some((id, p)) = existing.iter().find(|(_, p)| nested(p, &req.path)) {
            return Err(Error::denied(
                "OperationDenied.NestedFileset",
                format!("filesets cannot nest: {} and fileset {id} at {p}", req.path),
            ));
        }
        if existing.len() >= limits.per_file_system as usize {
            return Err(Error::denied(
                "QuotaExceeded.Fileset",
                format!(
                    "a file system has at most {} filesets",
                    limits.per_file_system
                ),
            ));
        }
        if req.dry_run {
            return Ok(String::new());
        }
        let id = ids::fileset_id();
        let now = self.now();
        sqlx::query(&format!(
            "INSERT INTO filesets ({COLUMNS}, account_id, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, \
             (SELECT COALESCE(MAX(seq), 0) + 1 FROM filesets WHERE fs_id = $2))"
        ))
        .bind(&id)
        .bind(&req.fs_id)
        .bind(&req.path)
        .bind(req.description.clone().unwrap_or_default())
        .bind(req.deletion_protection as i64)
        .bind(CREATING)
        .bind(column(req.size_limit))
        .bind(column(req.file_limit))
        .bind(now)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if let Some(token) = &req.client_token {
            idempotency::record(&mut tx, account_id, "CreateFileset", token, &id, now).await?;
        }
        tx.commit().await?;
        tracing::info!(fs_id = %req.fs_id, fileset = %id, path = %req.path, "fileset requested");
        Ok(id)
    }

    /// The account's filesets of `fs_id` with their usage and settled
    /// status, oldest first.
    pub async fn filesets(&self, account_id: &str, fs_id: &str) -> Result<Vec<Fileset>> {
        self.file_system(account_id, fs_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM filesets WHERE fs_id = $1 AND account_id = $2 ORDER BY seq, fset_id"
        ))
        .bind(fs_id)
        .bind(account_id)
        .fetch_all(&self.store.pool)
        .await?;
        let mut list: Vec<Fileset> = rows.iter().map(Fileset::from_row).collect::<Result<_>>()?;
        let bound = self.settle_filesets(fs_id, &list).await?;
        list.retain(|f| f.status != RELEASING || bound.contains_key(&f.id));
        for f in &mut list {
            if let Some(b) = bound.get(&f.id) {
                f.used_bytes = b.used_bytes;
                f.files = b.files;
                if f.status == CREATING {
                    f.status = CREATED.into();
                }
            }
        }
        Ok(list)
    }

    pub async fn fileset(&self, account_id: &str, fs_id: &str, fset_id: &str) -> Result<Fileset> {
        self.filesets(account_id, fs_id)
            .await?
            .into_iter()
            .find(|f| f.id == fset_id)
            .ok_or_else(|| Error::not_found(ResourceKind::Fileset, fset_id))
    }

    /// Moves statuses along what the metadata server committed: CREATING
    /// rows it bound become CREATED, RELEASING rows it unbound go. The
    /// bindings, by fileset id.
    async fn settle_filesets(
        &self,
        fs_id: &str,
        rows: &[Fileset],
    ) -> Result<HashMap<String, BoundFileset>> {
        let bound: HashMap<String, BoundFileset> = quota_view::bound(&self.store, fs_id)
            .await?
            .into_iter()
            .map(|b| (b.id.clone(), b))
            .collect();
        let now = self.now();
        for f in rows {
            if f.status == CREATING && bound.contains_key(&f.id) {
                sqlx::query("UPDATE filesets SET status = $1, updated_at = $2 WHERE fset_id = $3 AND status = $4")
                    .bind(CREATED)
                    .bind(now)
                    .bind(&f.id)
                    .bind(CREATING)
                    .execute(&self.store.pool)
                    .await?;
            } else if f.status == RELEASING && !bound.contains_key(&f.id) {
                sqlx::query("DELETE FROM filesets WHERE fset_id = $1 AND status = $2")
                    .bind(&f.id)
                    .bind(RELEASING)
                    .execute(&self.store.pool)
                    .await?;
                tracing::info!(fs_id, fileset = %f.id, "fileset released");
            }
        }
        Ok(bound)
    }

    /// Modify, delete, set or cancel a quota: one transaction with the
    /// ClientToken's record; a quota change then waits (a few seconds at
    /// most) until the owning metadata server enforces it.
    pub async fn change_fileset(
        &self,
        account_id: &str,
        fs_id: &str,
        fset_id: &str,
        change: FilesetChange,
        dry_run: bool,
        client_token: Option<&str>,
    ) -> Result<()> {
        if let Some(t) = client_token {
            idempotency::validate_token(t)?;
        }
        let limits = self.fileset_limits;
        match &change {
            FilesetChange::Modify {
                description: Some(d),
                ..
            } => check_description(d)?,
            FilesetChange::SetQuota {
                size_limit,
                file_limit,
            } => {
                if size_limit.is_none() && file_limit.is_none() {
                    return Err(Error::invalid(
                        "SizeLimit",
                        "give SizeLimit, FileCountLimit or both",
                    ));
                }
                if let Some(s) = size_limit {
                    limits.check_size(*s)?;
                }
                if let Some(f) = file_limit {
                    limits.check_files(*f)?;
                }
            }
            _ => {}
        }
        self.fileset_file_system(account_id, fs_id).await?;
        let current = self.fileset(account_id, fs_id, fset_id).await?;
        if current.status == RELEASING {
            return Err(Error::invalid_status(
                ResourceKind::Fileset,
                "the fileset is being released",
            ));
        }
        if let FilesetChange::SetQuota {
            size_limit,
            file_limit,
        } = &change
        {
            if size_limit.is_some_and(|s| s < current.used_bytes) {
                return Err(Error::invalid(
                    "SizeLimit",
                    format!(
                        "SizeLimit is below the fileset's usage ({} bytes)",
                        current.used_bytes
                    ),
                ));
            }
            if file_limit.is_some_and(|f| f < current.files) {
                return Err(Error::invalid(
                    "FileCountLimit",
                    format!(
                        "FileCountLimit is below the fileset's file count ({})",
                        current.files
                    ),
                ));
            }
        }
        if matches!(change, FilesetChange::Delete) && current.deletion_protection {
            return Err(Error::denied(
                "OperationDenied.DeletionProtection",
                "the fileset has deletion protection; turn it off with ModifyFileset first",
            ));
        }
        if dry_run {
            return Ok(());
        }
        let action = change.action();
        let mut tx = self.store.begin_write().await?;
        if let Some(token) = client_token {
            if idempotency::lookup(&mut tx, account_id, action, token)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        let now = self.now();
        let q = match &change {
            FilesetChange::Modify {
                description,
                deletion_protection,
            } => sqlx::query(
                "UPDATE filesets SET description = COALESCE($1, description), deletion_protection = COALESCE($2, deletion_protection), updated_at = $3 WHERE fset_id = $4",
            )
            .bind(description.clone())
            .bind(deletion_protection.map(|d| d as i64)),
            FilesetChange::Delete => sqlx::query(
                "UPDATE filesets SET status = $1, updated_at = $2 WHERE fset_id = $3",
            )
            .bind(RELEASING),
            FilesetChange::SetQuota {
                size_limit,
                file_limit,
            } => sqlx::query(
                "UPDATE filesets SET size_limit = COALESCE($1, size_limit), file_count_limit = COALESCE($2, file_count_limit), updated_at = $3 WHERE fset_id = $4",
            )
            .bind(column(*size_limit))
            .bind(column(*file_limit)),
            FilesetChange::CancelQuota => sqlx::query(
                "UPDATE filesets SET size_limit = NULL, file_count_limit = NULL, updated_at = $1 WHERE fset_id = $2",
            ),
        };
        q.bind(now).bind(fset_id).execute(&mut *tx).await?;
        if let Some(token) = client_token {
            idempotency::record(&mut tx, account_id, action, token, fset_id, now).await?;
        }
        tx.commit().await?;
        tracing::info!(fs_id, fileset = fset_id, action, "fileset changed");
        if matches!(
            change,
            FilesetChange::SetQuota { .. } | FilesetChange::CancelQuota
        ) {
            self.wait_for_limits(account_id, fs_id, fset_id).await?;
        }
        Ok(())
    }

    /// Waits until the metadata server enforces the fileset's limits as
    /// recorded (it polls every `QUOTA_SYNC_PERIOD`), for at most
    /// [`APPLY_WAIT`]: a file system nobody serves right now gets them
    /// when a server takes it.
    async fn wait_for_limits(&self, account_id: &str, fs_id: &str, fset_id: &str) -> Result<()> {
        let applied =
            quota_view::poll_until(APPLY_WAIT, cpfs_meta::QUOTA_SYNC_PERIOD / 5, || async {
                let want = self.fileset(account_id, fs_id, fset_id).await?;
                let applied = quota_view::bound(&self.store, fs_id)
                    .await?
                    .into_iter()
                    .find(|b| b.id == fset_id);
                Ok::<_, Error>(applied.is_some_and(|b| {
                    (b.size_limit, b.file_limit) == (want.size_limit, want.file_limit)
                }))
            })
            .await?;
        if !applied {
            tracing::warn!(
                fs_id,
                fileset = fset_id,
                "fileset limits recorded; no metadata server applied them yet"
            );
        }
        Ok(())
    }

    /// The account owning file system `fs_id` (for the operator's admin
    /// API, which names file systems without their account).
    pub async fn file_system_account(&self, fs_id: &str) -> Result<String> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT account_id FROM file_systems WHERE id = $1")
                .bind(fs_id)
                .fetch_optional(&self.store.pool)
                .await?;
        row.map(|r| r.0)
            .ok_or_else(|| Error::not_found(ResourceKind::FileSystem, fs_id))
    }

    /// What the metadata servers of `fs_ids` are to bind (the
    /// [`cpfs_meta::policy::PolicySource`] side); settles statuses on the
    /// way.
    pub async fn fileset_specs(&self, fs_ids: &[String]) -> Result<Vec<FilesetSpec>> {
        if fs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM filesets WHERE fs_id IN ({}) ORDER BY seq, fset_id",
            cpfs_store::placeholders(1, fs_ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in fs_ids {
            q = q.bind(id);
        }
        let rows: Vec<Fileset> = q
            .fetch_all(&self.store.pool)
            .await?
            .iter()
            .map(Fileset::from_row)
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        let mut by_fs: HashMap<&str, Vec<Fileset>> = HashMap::new();
        for f in &rows {
            by_fs.entry(f.fs_id.as_str()).or_default().push(f.clone());
        }
        for (fs, list) in by_fs {
            if list.iter().any(|f| f.status != CREATED) {
                self.settle_filesets(fs, &list).await?;
            }
        }
        for f in rows {
            out.push(FilesetSpec {
                releasing: f.status == RELEASING,
                fs: f.fs_id,
                id: f.id,
                path: f.path,
                size_limit: f.size_limit,
                file_limit: f.file_limit,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_reference() {
        for ok in ["/a/", "/a/b/c/d/e/f/g/h/", "/data set/x/"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "a/",
            "/a",
            "/a//b/",
            "/a/../b/",
            "/./",
            "/a/b/c/d/e/f/g/h/i/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path(&format!("/{}/", "x".repeat(256))).is_err());
        assert!(check_path(&format!("/{}/", "x/".repeat(600))).is_err());
    }

    #[test]
    fn quotas_have_a_floor_and_steps() {
        let l = FilesetLimits::default();
        assert!(l.check_size(10 * GIB).is_ok());
        assert!(l.check_size(11 * GIB).is_ok());
        assert!(l.check_size(9 * GIB).is_err());
        assert!(l.check_size(10 * GIB + 1).is_err());
        assert!(l.check_files(10_000).is_ok());
        assert!(l.check_files(9_999).is_err());
        assert!(l.check_files(MAX_FILE_LIMIT + 1).is_err());
        let small = FilesetLimits {
            min_size_limit: 1 << 20,
            ..l
        };
        assert_eq!(small.size_step(), 1 << 20);
        assert!(small.check_size(3 << 20).is_ok());
    }

    #[test]
    fn nesting_is_either_way() {
        assert!(nested("/a/", "/a/b/"));
        assert!(nested("/a/b/", "/a/"));
        assert!(!nested("/a/", "/ab/"));
    }

    #[test]
    fn descriptions_start_with_a_letter() {
        assert!(check_description("Team data").is_ok());
        assert!(check_description("x").is_err());
        assert!(check_description("1abc").is_err());
        assert!(check_description("http://x").is_err());
    }
}
