//! CPFS access points (CreateCpfsAccessPoint, DescribeCpfsAccessPoints,
//! ModifyCpfsAccessPoint, DeleteCpfsAccessPoint): a directory of a file
//! system that mounts through the access point see as their root
//! (`cpfs mount DOMAIN DIR --access-point ID`; the metadata service
//! confines them). Who may mount is still the mount target's access
//! group's decision. An access point is Active as soon as it is created;
//! its `RootPathStatus` says whether the directory exists now.

use cpfs_meta::policy::AccessPointSpec;
use cpfs_meta::quota_view::{self, PathState};
use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::filesystems::Status as FsStatus;
use crate::{ids, tags, ControlPlane};

/// Access points one file system may have.
pub const MAX_PER_FILE_SYSTEM: i64 = 100;
pub const ACCESS_POINT: &str = "accesspoint";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    pub id: String,
    pub fs_id: String,
    pub root_path: String,
    pub description: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// `Ready`, `NotExist` or `Unknown` (the directory is not a directory).
    pub root_path_status: &'static str,
    pub tags: Vec<(String, String)>,
}

/// A root path: absolute, at most 1,024 characters, no `.`/`..` or empty
/// components; `/` when not given.
pub fn check_root(path: &str) -> Result<String> {
    let bad = || {
        Err(Error::invalid(
            "RootDirectory",
            "RootDirectory.RootPath must be an absolute path of at most 1024 characters without '.', '..' or empty components",
        ))
    };
    if !path.starts_with('/') || path.len() > 1024 || path.contains('\0') {
        return bad();
    }
    let trimmed = path.trim_end_matches('/');
    if !trimmed.is_empty()
        && trimmed[1..]
            .split('/')
            .any(|n| n.is_empty() || n == "." || n == ".." || n.len() > 255)
    {
        return bad();
    }
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

impl ControlPlane {
    async fn access_point_file_system(&self, account_id: &str, fs_id: &str) -> Result<()> {
        let fs = self.file_system(account_id, fs_id).await?;
        match fs.status {
            FsStatus::Deleting => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
            _ => Ok(()),
        }
    }

    pub async fn create_access_point(
        &self,
        account_id: &str,
        fs_id: &str,
        root_path: Option<&str>,
        description: Option<&str>,
        tag_list: &[(String, String)],
    ) -> Result<String> {
        let root = check_root(root_path.unwrap_or("/"))?;
        if let Some(d) = description {
            crate::filesets::check_description(d)?;
        }
        tags::validate_tags(tag_list)?;
        self.access_point_file_system(account_id, fs_id).await?;
        let mut tx = self.store.begin_write().await?;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM access_points WHERE fs_id = $1")
            .bind(fs_id)
            .fetch_one(&mut *tx)
            .await?;
        if n >= MAX_PER_FILE_SYSTEM {
            return Err(Error::denied(
                "QuotaExceeded.AccessPoint",
                format!("a file system has at most {MAX_PER_FILE_SYSTEM} access points"),
            ));
        }
        let id = ids::access_point_id();
        let now = self.now();
        sqlx::query(
            "INSERT INTO access_points (access_point_id, account_id, fs_id, root_path, description, status, created_at, updated_at, seq) \
             VALUES ($1, $2, $3, $4, $5, 'Active', $6, $6, (SELECT COALESCE(MAX(seq), 0) + 1 FROM access_points WHERE fs_id = $3))",
        )
        .bind(&id)
        .bind(account_id)
        .bind(fs_id)
        .bind(&root)
        .bind(description.unwrap_or_default())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tags::put_tags(&mut tx, account_id, ACCESS_POINT, &id, tag_list).await?;
        tx.commit().await?;
        tracing::info!(fs_id, access_point = %id, root = %root, "access point created");
        Ok(id)
    }

    /// The account's access points of `fs_id` (one when `id` is given),
    /// oldest first.
    pub async fn access_points(
        &self,
        account_id: &str,
        fs_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<AccessPoint>> {
        self.access_point_file_system(account_id, fs_id).await?;
        let rows = sqlx::query(
            "SELECT access_point_id, fs_id, root_path, description, status, created_at, updated_at \
             FROM access_points WHERE fs_id = $1 AND account_id = $2 ORDER BY seq, access_point_id",
        )
        .bind(fs_id)
        .bind(account_id)
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let ap_id: String = r.try_get("access_point_id")?;
            if id.is_some_and(|want| want != ap_id) {
                continue;
            }
            let root_path: String = r.try_get("root_path")?;
            let root_path_status =
                match quota_view::path_state(&self.store, fs_id, &root_path).await? {
                    PathState::Dir => "Ready",
                    PathState::NotDir => "Unknown",
                    PathState::Missing | PathState::NoParent => "NotExist",
                };
            out.push(AccessPoint {
                id: ap_id,
                fs_id: r.try_get("fs_id")?,
                root_path,
                description: r.try_get("description")?,
                status: r.try_get("status")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                root_path_status,
                tags: Vec::new(),
            });
        }
        let ids: Vec<String> = out.iter().map(|a| a.id.clone()).collect();
        let mut tags = self.tags_of(account_id, &ids).await?;
        for a in &mut out {
            a.tags = tags.remove(&a.id).unwrap_or_default();
        }
        if let Some(want) = id {
            if out.is_empty() {
                return Err(Error::not_found(ResourceKind::AccessPoint, want));
            }
        }
        Ok(out)
    }

    pub async fn modify_access_point(
        &self,
        account_id: &str,
        fs_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<()> {
        if let Some(d) = description {
            crate::filesets::check_description(d)?;
        }
        self.access_point_file_system(account_id, fs_id).await?;
        let n = sqlx::query(
            "UPDATE access_points SET description = COALESCE($1, description), updated_at = $2 \
             WHERE access_point_id = $3 AND fs_id = $4 AND account_id = $5",
        )
        .bind(description)
        .bind(self.now())
        .bind(id)
        .bind(fs_id)
        .bind(account_id)
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::not_found(ResourceKind::AccessPoint, id));
        }
        Ok(())
    }

    /// Deletes an access point: new mounts through it are refused; mounts
    /// already made keep their session until they unmount.
    pub async fn delete_access_point(&self, account_id: &str, fs_id: &str, id: &str) -> Result<()> {
        self.access_point_file_system(account_id, fs_id).await?;
        let mut tx = self.store.begin_write().await?;
        let n = sqlx::query(
            "DELETE FROM access_points WHERE access_point_id = $1 AND fs_id = $2 AND account_id = $3",
        )
        .bind(id)
        .bind(fs_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::not_found(ResourceKind::AccessPoint, id));
        }
        sqlx::query("DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2")
            .bind(ACCESS_POINT)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(fs_id, access_point = id, "access point deleted");
        Ok(())
    }

    /// The access point `id` for the metadata service (any account: the
    /// service checks it belongs to the mount target's file system).
    pub async fn access_point_spec(&self, id: &str) -> Result<Option<AccessPointSpec>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT fs_id, root_path, status FROM access_points WHERE access_point_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(row.map(|(fs, root_path, status)| AccessPointSpec {
            fs,
            root_path,
            active: status == "Active",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_absolute_and_plain() {
        assert_eq!(check_root("/").unwrap(), "/");
        assert_eq!(check_root("/a/b/").unwrap(), "/a/b");
        assert!(check_root("a").is_err());
        assert!(check_root("/a/../b").is_err());
        assert!(check_root("/a//b").is_err());
        assert!(check_root(&format!("/{}", "x".repeat(300))).is_err());
    }
}
