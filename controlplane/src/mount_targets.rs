//! Mount targets: the network endpoints clients mount a file system through.

use cpfs_store::placeholders;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::access_groups::DEFAULT_GROUP;
use crate::error::{Error, ResourceKind, Result};
use crate::filesystems::Status as FsStatus;
use crate::{ids, ControlPlane};

/// Mount targets one file system may have.
pub const MAX_PER_FILE_SYSTEM: i64 = 16;

#[derive(Debug, Clone)]
pub struct MountTarget {
    pub domain: String,
    pub fs_id: String,
    pub network_type: String,
    pub vpc_id: String,
    pub vswitch_id: String,
    pub access_group: String,
    pub status: String,
    pub created_at: i64,
}

pub(crate) const MT_COLUMNS: &str =
    "domain, fs_id, network_type, vpc_id, vswitch_id, access_group, status, created_at";

impl MountTarget {
    pub(crate) fn from_row(r: &AnyRow) -> Result<MountTarget> {
        Ok(MountTarget {
            domain: r.try_get("domain")?,
            fs_id: r.try_get("fs_id")?,
            network_type: r.try_get("network_type")?,
            vpc_id: r.try_get("vpc_id")?,
            vswitch_id: r.try_get("vswitch_id")?,
            access_group: r.try_get("access_group")?,
            status: r.try_get("status")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewMountTarget {
    pub fs_id: String,
    pub network_type: String,
    pub vpc_id: String,
    pub vswitch_id: String,
    pub access_group: Option<String>,
    pub dry_run: bool,
}

impl ControlPlane {
    pub async fn create_mount_target(
        &self,
        account_id: &str,
        req: NewMountTarget,
    ) -> Result<String> {
        let fs = self.file_system(account_id, &req.fs_id).await?;
        if fs.status == FsStatus::Deleting {
            return Err(Error::not_found(ResourceKind::FileSystem, &req.fs_id));
        }
        if fs.status != FsStatus::Running {
            return Err(Error::invalid_status(
                ResourceKind::FileSystem,
                format!(
                    "the file system is {}; mount targets can be created only when it is Running",
                    fs.status.as_str()
                ),
            ));
        }
        let group = req
            .access_group
            .clone()
            .unwrap_or_else(|| DEFAULT_GROUP.to_string());
        self.access_group(account_id, &group).await?;
        if req.dry_run {
            return Ok(String::new());
        }
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM mount_targets WHERE fs_id = $1")
            .bind(&req.fs_id)
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?;
        if count >= MAX_PER_FILE_SYSTEM {
            return Err(Error::invalid(
                "FileSystemId",
                format!("a file system has at most {MAX_PER_FILE_SYSTEM} mount targets"),
            ));
        }
        let domain = ids::mount_target_domain(
            &req.fs_id,
            &self.region.region_id,
            &self.region.mount_domain,
        );
        sqlx::query(&format!(
            "INSERT INTO mount_targets ({MT_COLUMNS}, account_id) VALUES ($1, $2, $3, $4, $5, $6, 'Pending', $7, $8)"
        ))
        .bind(&domain)
        .bind(&req.fs_id)
        .bind(&req.network_type)
        .bind(&req.vpc_id)
        .bind(&req.vswitch_id)
        .bind(&group)
        .bind(self.now())
        .bind(account_id)
        .execute(&self.store.pool)
        .await?;
        tracing::info!(fs_id = %req.fs_id, domain, "mount target requested");
        self.poke();
        Ok(domain)
    }

    /// Mount targets of the given file systems (for DescribeFileSystems).
    pub async fn mount_targets_of(
        &self,
        account_id: &str,
        fs_ids: &[String],
    ) -> Result<Vec<MountTarget>> {
        if fs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {MT_COLUMNS} FROM mount_targets WHERE account_id = $1 AND fs_id IN ({}) ORDER BY created_at, domain",
            placeholders(2, fs_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(account_id);
        for id in fs_ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.store.pool)
            .await?
            .iter()
            .map(MountTarget::from_row)
            .collect()
    }

    pub async fn describe_mount_targets(
        &self,
        account_id: &str,
        fs_id: &str,
        domain: Option<&str>,
        page_number: i64,
        page_size: i64,
    ) -> Result<(i64, Vec<MountTarget>)> {
        let fs = self.file_system(account_id, fs_id).await?;
        let all = self.mount_targets_of(account_id, &[fs.id]).await?;
        let filtered: Vec<MountTarget> = all
            .into_iter()
            .filter(|m| domain.is_none_or(|d| m.domain == d))
            .collect();
        if let (Some(d), true) = (domain, filtered.is_empty()) {
            return Err(Error::not_found(ResourceKind::MountTarget, d));
        }
        let total = filtered.len() as i64;
        let start = ((page_number - 1).max(0) * page_size) as usize;
        let page = filtered
            .into_iter()
            .skip(start)
            .take(page_size as usize)
            .collect();
        Ok((total, page))
    }

    /// A mount target by its domain, scoped to the account.
    pub async fn mount_target(&self, account_id: &str, domain: &str) -> Result<MountTarget> {
        let row = sqlx::query(&format!(
            "SELECT {MT_COLUMNS} FROM mount_targets WHERE domain = $1 AND account_id = $2"
        ))
        .bind(domain)
        .bind(account_id)
        .fetch_optional(&self.store.pool)
        .await?;
        match row {
            Some(r) => MountTarget::from_row(&r),
            None => Err(Error::not_found(ResourceKind::MountTarget, domain)),
        }
    }

    async fn owned_mount_target(
        &self,
        account_id: &str,
        fs_id: &str,
        domain: &str,
    ) -> Result<MountTarget> {
        self.file_system(account_id, fs_id).await?;
        let mt = self.mount_target(account_id, domain).await?;
        if mt.fs_id != fs_id {
            return Err(Error::not_found(ResourceKind::MountTarget, domain));
        }
        Ok(mt)
    }

    pub async fn modify_mount_target(
        &self,
        account_id: &str,
        fs_id: &str,
        domain: &str,
        access_group: Option<&str>,
        status: Option<&str>,
    ) -> Result<()> {
        let mt = self.owned_mount_target(account_id, fs_id, domain).await?;
        if mt.status == "Deleting" || mt.status == "Pending" {
            return Err(Error::invalid_status(
                ResourceKind::MountTarget,
                format!(
                    "the mount target is {}; it can be modified when Active or Inactive",
                    mt.status
                ),
            ));
        }
        if let Some(g) = access_group {
            self.access_group(account_id, g).await?;
        }
        let status = match status {
            None => mt.status.clone(),
            Some(s @ ("Active" | "Inactive")) => s.to_string(),
            Some(_) => {
                return Err(Error::invalid(
                    "Status",
                    "Status must be Active or Inactive",
                ))
            }
        };
        sqlx::query("UPDATE mount_targets SET access_group = $1, status = $2 WHERE domain = $3 AND account_id = $4")
            .bind(access_group.unwrap_or(&mt.access_group))
            .bind(status)
            .bind(domain)
            .bind(account_id)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_mount_target(
        &self,
        account_id: &str,
        fs_id: &str,
        domain: &str,
    ) -> Result<()> {
        self.owned_mount_target(account_id, fs_id, domain).await?;
        sqlx::query(
            "UPDATE mount_targets SET status = 'Deleting' WHERE domain = $1 AND account_id = $2",
        )
        .bind(domain)
        .bind(account_id)
        .execute(&self.store.pool)
        .await?;
        self.poke();
        Ok(())
    }
}
