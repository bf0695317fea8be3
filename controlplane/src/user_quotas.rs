//! User and group quotas, a CPFS extension (SetUserQuota,
//! DescribeUserQuotas, CancelUserQuota): hard limits on the bytes and
//! files one uid or gid owns in a file system, as Lustre and JuiceFS have
//! them. The rows are desired state; the metadata server owning the file
//! system enforces them and publishes each limited owner's usage
//! (`cpfs_meta::quota_view::owner_usage`). As `setquota` allows, a limit
//! may be set below the current usage: the owner then cannot grow until it
//! frees enough.

use cpfs_meta::policy::UserQuotaSpec;
use cpfs_meta::quota_view;

use crate::error::{Error, ResourceKind, Result};
use crate::filesystems::Status as FsStatus;
use crate::ControlPlane;

/// The largest id (`(uid_t) -1` is "no change" to chown).
pub const MAX_ID: u32 = u32::MAX - 1;
/// Quotas one file system may hold.
pub const MAX_PER_FILE_SYSTEM: i64 = 10_000;
/// How long a change waits for the metadata server to enforce it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `Uid` or `Gid`, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    Uid,
    Gid,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Uid => "Uid",
            UserType::Gid => "Gid",
        }
    }

    pub fn parse(s: &str) -> Option<UserType> {
        match s {
            "Uid" => Some(UserType::Uid),
            "Gid" => Some(UserType::Gid),
            _ => None,
        }
    }
}

/// One quota with its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuota {
    pub user_type: UserType,
    pub user_id: u32,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
    pub used_bytes: u64,
    pub files: u64,
}

fn column(v: Option<u64>) -> Option<i64> {
    v.map(|l| l.min(i64::MAX as u64) as i64)
}

impl ControlPlane {
    async fn quota_file_system(&self, account_id: &str, fs_id: &str) -> Result<()> {
        let fs = self.file_system(account_id, fs_id).await?;
        match fs.status {
            FsStatus::Deleting => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
            _ => Ok(()),
        }
    }

    /// Sets (or replaces) the limits of one uid or gid, and answers once
    /// the metadata server enforces them (a few seconds at most).
    pub async fn set_user_quota(
        &self,
        account_id: &str,
        fs_id: &str,
        (user_type, user_id): (UserType, u32),
        size_limit: Option<u64>,
        file_limit: Option<u64>,
    ) -> Result<()> {
        if size_limit.is_none() && file_limit.is_none() {
            return Err(Error::invalid(
                "SizeLimit",
                "give SizeLimit, FileCountLimit or both",
            ));
        }
        self.quota_file_system(account_id, fs_id).await?;
        let mut tx = self.store.begin_write().await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM user_quotas WHERE fs_id = $1")
            .bind(fs_id)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_PER_FILE_SYSTEM {
            return Err(Error::denied(
                "QuotaExceeded.UserQuota",
                format!("a file system has at most {MAX_PER_FILE_SYSTEM} user and group quotas"),
            ));
        }
        let now = self.now();
        sqlx::query(
            "INSERT INTO user_quotas (fs_id, account_id, user_type, user_id, size_limit, file_count_limit, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (fs_id, user_type, user_id) DO UPDATE SET size_limit = excluded.size_limit, \
             file_count_limit = excluded.file_count_limit, updated_at = excluded.updated_at",
        )
        .bind(fs_id)
        .bind(account_id)
        .bind(user_type.as_str())
        .bind(i64::from(user_id))
        .bind(column(size_limit))
        .bind(column(file_limit))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            fs_id,
            user_type = user_type.as_str(),
            user_id,
            "user quota set"
        );
        self.wait_for_user_quota(fs_id, (user_type, user_id), Some((size_limit, file_limit)))
            .await
    }

    /// Removes one uid's or gid's limits.
    pub async fn cancel_user_quota(
        &self,
        account_id: &str,
        fs_id: &str,
        (user_type, user_id): (UserType, u32),
    ) -> Result<()> {
        self.quota_file_system(account_id, fs_id).await?;
        let gone = sqlx::query(
            "DELETE FROM user_quotas WHERE fs_id = $1 AND account_id = $2 AND user_type = $3 AND user_id = $4",
        )
        .bind(fs_id)
        .bind(account_id)
        .bind(user_type.as_str())
        .bind(i64::from(user_id))
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if gone == 0 {
            return Err(Error::not_found(
                ResourceKind::UserQuota,
                format!("{} {user_id}", user_type.as_str()),
            ));
        }
        self.wait_for_user_quota(fs_id, (user_type, user_id), None)
            .await
    }

    /// The account's user and group quotas of `fs_id` with their usage,
    /// uids first, each by id.
    pub async fn user_quotas(
        &self,
        account_id: &str,
        fs_id: &str,
        filter: Option<(UserType, Option<u32>)>,
    ) -> Result<Vec<UserQuota>> {
        self.quota_file_system(account_id, fs_id).await?;
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT user_type, user_id, size_limit, file_count_limit FROM user_quotas \
             WHERE fs_id = $1 AND account_id = $2 ORDER BY user_type DESC, user_id",
        )
        .bind(fs_id)
        .bind(account_id)
        .fetch_all(&self.store.pool)
        .await?;
        let usage = quota_view::owner_usage(&self.store, fs_id).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, id, size, files)| {
                let user_type = UserType::parse(&kind)?;
                let user_id = u32::try_from(id).ok()?;
                let used = usage
                    .iter()
                    .find(|u| u.group == (user_type == UserType::Gid) && u.id == user_id);
                Some(UserQuota {
                    user_type,
                    user_id,
                    size_limit: size.and_then(|s| u64::try_from(s).ok()),
                    file_limit: files.and_then(|f| u64::try_from(f).ok()),
                    used_bytes: used.map_or(0, |u| u.used_bytes),
                    files: used.map_or(0, |u| u.files),
                })
            })
            .filter(|q| {
                filter.is_none_or(|(t, id)| q.user_type == t && id.is_none_or(|i| i == q.user_id))
            })
            .collect())
    }

    /// Waits until the metadata server enforces `want` for the owner
    /// (`None`: no quota), for at most [`APPLY_WAIT`].
    async fn wait_for_user_quota(
        &self,
        fs_id: &str,
        (user_type, user_id): (UserType, u32),
        want: Option<(Option<u64>, Option<u64>)>,
    ) -> Result<()> {
        let applied =
            quota_view::poll_until(APPLY_WAIT, cpfs_meta::QUOTA_SYNC_PERIOD / 5, || async {
                let applied = quota_view::owner_usage(&self.store, fs_id)
                    .await?
                    .into_iter()
                    .find(|u| u.group == (user_type == UserType::Gid) && u.id == user_id)
                    .map(|u| (u.size_limit, u.file_limit));
                Ok::<_, Error>(applied == want)
            })
            .await?;
        if !applied {
            tracing::warn!(
                fs_id,
                user_id,
                "user quota recorded; no metadata server applied it yet"
            );
        }
        Ok(())
    }

    /// What the metadata servers of `fs_ids` are to enforce (the
    /// [`cpfs_meta::policy::PolicySource`] side).
    pub async fn user_quota_specs(&self, fs_ids: &[String]) -> Result<Vec<UserQuotaSpec>> {
        if fs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT fs_id, user_type, user_id, size_limit, file_count_limit FROM user_quotas WHERE fs_id IN ({})",
            cpfs_store::placeholders(1, fs_ids.len())
        );
        let mut q = sqlx::query_as::<_, (String, String, i64, Option<i64>, Option<i64>)>(&sql);
        for id in fs_ids {
            q = q.bind(id);
        }
        Ok(q.fetch_all(&self.store.pool)
            .await?
            .into_iter()
            .filter_map(|(fs, kind, id, size, files)| {
                Some(UserQuotaSpec {
                    fs,
                    group: UserType::parse(&kind)? == UserType::Gid,
                    id: u32::try_from(id).ok()?,
                    size_limit: size.and_then(|s| u64::try_from(s).ok()),
                    file_limit: files.and_then(|f| u64::try_from(f).ok()),
                })
            })
            .collect())
    }
}
