//! File systems: desired state written by the API, moved along by the
//! reconciler.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::error::{Error, ResourceKind, Result};
use crate::events::{EventKind, EVENT_COLUMNS};
use crate::tiers::{self, Spec, StorageType};
use crate::{clock, idempotency, ids, tags, ControlPlane};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Extending,
    Stopping,
    Stopped,
    Deleting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Running => "Running",
            Status::Extending => "Extending",
            Status::Stopping => "Stopping",
            Status::Stopped => "Stopped",
            Status::Deleting => "Deleting",
        }
    }

    pub fn parse(s: &str) -> Result<Status> {
        Ok(match s {
            "Pending" => Status::Pending,
            "Running" => Status::Running,
            "Extending" => Status::Extending,
            "Stopping" => Status::Stopping,
            "Stopped" => Status::Stopped,
            "Deleting" => Status::Deleting,
            other => {
                return Err(Error::Internal(format!(
                    "unknown file system status {other}"
                )))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeType {
    PayAsYouGo,
    Subscription,
}

impl ChargeType {
    pub fn parse(s: &str) -> Option<ChargeType> {
        match s {
            "PayAsYouGo" => Some(ChargeType::PayAsYouGo),
            "Subscription" => Some(ChargeType::Subscription),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChargeType::PayAsYouGo => "PayAsYouGo",
            ChargeType::Subscription => "Subscription",
        }
    }
}

/// Subscription terms offered, in months.
pub const DURATIONS: &[u32] = &[1, 2, 3, 6, 12, 24, 36];

/// What CreateFileSystem asks for, already parsed.
#[derive(Debug, Clone)]
pub struct NewFileSystem {
    pub fs_type: String,
    pub protocol_type: String,
    pub storage_type: StorageType,
    pub storage_type_name: String,
    pub capacity_gib: i64,
    pub bandwidth_mbps: Option<i64>,
    pub charge_type: ChargeType,
    pub duration_months: Option<u32>,
    pub zone_id: Option<String>,
    pub vpc_id: String,
    pub vswitch_id: String,
    pub description: String,
    pub encrypt_type: i64,
    pub tags: Vec<(String, String)>,
    pub dry_run: bool,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FileSystem {
    pub id: String,
    pub account_id: String,
    pub fs_type: String,
    pub protocol_type: String,
    pub storage_type: String,
    pub description: String,
    pub status: Status,
    pub region_id: String,
    pub zone_id: String,
    pub vpc_id: String,
    pub vswitch_id: String,
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
    pub charge_type: String,
    pub created_at: i64,
    pub expired_at: Option<i64>,
    pub encrypt_type: i64,
    pub options_json: String,
    pub auto_upgrade_json: String,
    pub metered_size: i64,
    pub status_reason: String,
}

impl FileSystem {
    pub(crate) fn from_row(r: &AnyRow) -> Result<FileSystem> {
        Ok(FileSystem {
            id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            fs_type: r.try_get("fs_type")?,
            protocol_type: r.try_get("protocol_type")?,
            storage_type: r.try_get("storage_type")?,
            description: r.try_get("description")?,
            status: Status::parse(&r.try_get::<String, _>("status")?)?,
            region_id: r.try_get("region_id")?,
            zone_id: r.try_get("zone_id")?,
            vpc_id: r.try_get("vpc_id")?,
            vswitch_id: r.try_get("vswitch_id")?,
            capacity_gib: r.try_get("capacity_gib")?,
            bandwidth_mbps: r.try_get("bandwidth_mbps")?,
            charge_type: r.try_get("charge_type")?,
            created_at: r.try_get("created_at")?,
            expired_at: r.try_get("expired_at")?,
            encrypt_type: r.try_get("encrypt_type")?,
            options_json: r.try_get("options_json")?,
            auto_upgrade_json: r.try_get("auto_upgrade_json")?,
            metered_size: r.try_get("metered_size")?,
            status_reason: r.try_get("status_reason")?,
        })
    }

    /// The IOPS limits of the file system's edition and tier.
    pub fn spec(&self) -> Spec {
        let storage = StorageType::parse(&self.storage_type).unwrap_or(StorageType::Standard);
        tiers::spec_of(storage, self.capacity_gib, self.bandwidth_mbps)
    }

    /// Appends an event describing the file system as it is after the
    /// change (in the change's transaction); returns its sequence number.
    /// The event is written here rather than in `events` so that `events`,
    /// which billing reads, does not depend on this module.
    pub(crate) async fn record_event(
        &self,
        tx: &mut Transaction<'_, Any>,
        kind: EventKind,
        at: i64,
        months: i64,
    ) -> Result<i64> {
        let seq: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) AS seq FROM fs_events WHERE fs_id = $1",
        )
        .bind(&self.id)
        .fetch_one(&mut **tx)
        .await?
        .try_get("seq")?;
        sqlx::query(&format!(
            "INSERT INTO fs_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&self.id)
        .bind(seq)
        .bind(&self.account_id)
        .bind(at)
        .bind(kind.as_str())
        .bind(&self.storage_type)
        .bind(self.capacity_gib)
        .bind(self.bandwidth_mbps)
        .bind(&self.charge_type)
        .bind(self.expired_at)
        .bind(months)
        .bind(&self.zone_id)
        .bind(&self.description)
        .execute(&mut **tx)
        .await?;
        Ok(seq)
    }
}

/// Filters of DescribeFileSystems.
#[derive(Debug, Default, Clone)]
pub struct FileSystemFilter {
    pub ids: Vec<String>,
    /// Empty means all types.
    pub types: Vec<String>,
    pub vpc_id: Option<String>,
    pub tags: Vec<(String, String)>,
}

pub const FS_COLUMNS: &str = "id, account_id, fs_type, protocol_type, storage_type, description, status, region_id, zone_id, vpc_id, vswitch_id, capacity_gib, bandwidth_mbps, charge_type, created_at, expired_at, encrypt_type, options_json, auto_upgrade_json, metered_size, status_reason";

/// Columns as read: MeteredSize is the bytes of file data the metadata
/// service counts.
pub const FS_SELECT: &str = concat!(
    "id, account_id, fs_type, protocol_type, storage_type, description, status, region_id, zone_id, vpc_id, vswitch_id, capacity_gib, bandwidth_mbps, charge_type, created_at, expired_at, encrypt_type, options_json, auto_upgrade_json, ",
    cpfs_meta::metered_size_column!(),
    ", status_reason"
);

impl ControlPlane {
    /// Records a new file system as Pending and returns its id; the
    /// reconciler provisions it. DryRun validates only and returns "".
    pub async fn create_file_system(&self, account_id: &str, req: NewFileSystem) -> Result<String> {
        let storage = req.storage_type;
        let spec = tiers::resolve(storage, req.capacity_gib, req.bandwidth_mbps)?;
        let zone_id = match &req.zone_id {
            Some(z) if self.region.zones.iter().any(|known| known == z) => z.clone(),
            Some(z) => {
                return Err(Error::invalid(
                    "ZoneId",
                    format!(
                        "zone {z} is not in region {}; zones: {}",
                        self.region.region_id,
                        self.region.zones.join(", ")
                    ),
                ))
            }
            None => self
                .region
                .zones
                .first()
                .cloned()
                .ok_or_else(|| Error::Internal("the region has no zones configured".into()))?,
        };
        tags::validate_tags(&req.tags)?;
        if let Some(t) = &req.client_token {
            idempotency::validate_token(t)?;
        }
        let now = self.now();
        let expired_at = match (req.charge_type, req.duration_months) {
            (ChargeType::Subscription, Some(m)) if DURATIONS.contains(&m) => {
                Some(clock::add_months(now, m))
            }
            (ChargeType::Subscription, Some(_)) => {
                return Err(Error::invalid(
                    "Duration",
                    format!("Duration must be one of {DURATIONS:?} months"),
                ))
            }
            (ChargeType::Subscription, None) => {
                return Err(Error::invalid(
                    "Duration",
                    "Duration (months) is required when ChargeType is Subscription",
                ))
            }
            (ChargeType::PayAsYouGo, _) => None,
        };
        if req.dry_run {
            return Ok(String::new());
        }

        let mut tx = self.store.begin_write().await?;
        if let Some(token) = &req.client_token {
            if let Some(previous) =
                idempotency::lookup(&mut tx, account_id, "CreateFileSystem", token).await?
            {
                return Ok(previous);
            }
        }
        let id = ids::file_system_id();
        sqlx::query(&format!(
            "INSERT INTO file_systems ({FS_COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'Pending', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, '{{}}', '{{}}', 0, '', $14)"
        ))
        .bind(&id)
        .bind(account_id)
        .bind(&req.fs_type)
        .bind(&req.protocol_type)
        .bind(&req.storage_type_name)
        .bind(&req.description)
        .bind(&self.region.region_id)
        .bind(&zone_id)
        .bind(&req.vpc_id)
        .bind(&req.vswitch_id)
        .bind(spec.capacity_gib)
        .bind(spec.bandwidth_mbps)
        .bind(req.charge_type.as_str())
        .bind(now)
        .bind(expired_at)
        .bind(req.encrypt_type)
        .execute(&mut *tx)
        .await?;
        tags::put_tags(&mut tx, account_id, tags::FILESYSTEM, &id, &req.tags).await?;
        let created = fs_in(&mut tx, account_id, &id).await?;
        let months = match req.charge_type {
            ChargeType::Subscription => i64::from(req.duration_months.unwrap_or(0)),
            ChargeType::PayAsYouGo => 0,
        };
        created
            .record_event(&mut tx, EventKind::Create, now, months)
            .await?;
        if let Some(token) = &req.client_token {
            idempotency::record(&mut tx, account_id, "CreateFileSystem", token, &id, now).await?;
        }
        tx.commit().await?;
        tracing::info!(fs_id = %id, account_id, capacity_gib = spec.capacity_gib, "file system requested");
        self.poke();
        Ok(id)
    }

    /// One file system of the account, in any status.
    pub async fn file_system(&self, account_id: &str, fs_id: &str) -> Result<FileSystem> {
        let row = sqlx::query(&format!(
            "SELECT {FS_SELECT} FROM file_systems WHERE id = $1 AND account_id = $2"
        ))
        .bind(fs_id)
        .bind(account_id)
        .fetch_optional(&self.store.pool)
        .await?;
        match row {
            Some(r) => FileSystem::from_row(&r),
            None => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
        }
    }

    /// Fails with NotFound unless every id is a file system of the account
    /// that is not being deleted.
    pub(crate) async fn check_file_systems_exist(
        &self,
        account_id: &str,
        ids: &[String],
    ) -> Result<()> {
        for id in ids {
            let fs = self.file_system(account_id, id).await?;
            if fs.status == Status::Deleting {
                return Err(Error::not_found(ResourceKind::FileSystem, id.clone()));
            }
        }
        Ok(())
    }

    pub async fn modify_file_system(
        &self,
        account_id: &str,
        fs_id: &str,
        description: Option<&str>,
        options_json: Option<&str>,
        auto_upgrade_json: Option<&str>,
    ) -> Result<()> {
        let fs = self.file_system(account_id, fs_id).await?;
        if fs.status == Status::Deleting {
            return Err(Error::not_found(ResourceKind::FileSystem, fs_id));
        }
        let description = description.unwrap_or(&fs.description);
        let options = options_json.unwrap_or(&fs.options_json);
        let auto = auto_upgrade_json.unwrap_or(&fs.auto_upgrade_json);
        sqlx::query(
            "UPDATE file_systems SET description = $1, options_json = $2, auto_upgrade_json = $3, updated_at = $4 WHERE id = $5 AND account_id = $6",
        )
        .bind(description)
        .bind(options)
        .bind(auto)
        .bind(self.now())
        .bind(fs_id)
        .bind(account_id)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Scale-up: records the new capacity (and bandwidth) and moves the file
    /// system to Extending; the reconciler grows its reservations.
    pub async fn upgrade_file_system(
        &self,
        account_id: &str,
        fs_id: &str,
        capacity_gib: i64,
        bandwidth_mbps: Option<i64>,
        dry_run: bool,
        client_token: Option<&str>,
    ) -> Result<()> {
        if let Some(t) = client_token {
            idempotency::validate_token(t)?;
        }
        let mut tx = self.store.begin_write().await?;
        if let Some(token) = client_token {
            if idempotency::lookup(&mut tx, account_id, "UpgradeFileSystem", token)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        let fs = fs_in(&mut tx, account_id, fs_id).await?;
        if fs.status != Status::Running {
            return Err(Error::invalid_status(
                ResourceKind::FileSystem,
                format!(
                    "the file system is {}; it can be upgraded only when Running",
                    fs.status.as_str()
                ),
            ));
        }
        let storage = StorageType::parse(&fs.storage_type).unwrap_or(StorageType::Standard);
        let next = tiers::resolve_upgrade(storage, fs.spec(), capacity_gib, bandwidth_mbps)?;
        if dry_run {
            return Ok(());
        }
        let now = self.now();
        sqlx::query(
            "UPDATE file_systems SET capacity_gib = $1, bandwidth_mbps = $2, status = 'Extending', updated_at = $3 WHERE id = $4 AND account_id = $5 AND status = 'Running'",
        )
        .bind(next.capacity_gib)
        .bind(next.bandwidth_mbps)
        .bind(now)
        .bind(fs_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        let upgraded = fs_in(&mut tx, account_id, fs_id).await?;
        upgraded
            .record_event(&mut tx, EventKind::Upgrade, now, 0)
            .await?;
        if let Some(token) = client_token {
            idempotency::record(&mut tx, account_id, "UpgradeFileSystem", token, fs_id, now)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(
            fs_id,
            capacity_gib = next.capacity_gib,
            bandwidth_mbps = next.bandwidth_mbps,
            "file system upgrade requested"
        );
        self.poke();
        Ok(())
    }

    /// Marks the file system Deleting; the reconciler releases its
    /// placement, mount targets and tags, then removes it.
    pub async fn delete_file_system(&self, account_id: &str, fs_id: &str) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        let fs = fs_in(&mut tx, account_id, fs_id).await?;
        if fs.status == Status::Deleting {
            return Ok(());
        }
        let now = self.now();
        sqlx::query(
            "UPDATE file_systems SET status = 'Deleting', updated_at = $1 WHERE id = $2 AND account_id = $3",
        )
        .bind(now)
        .bind(fs_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        // Billing stops at this moment (a stopped subscription already
        // stopped accruing; the event closes its history).
        fs.record_event(&mut tx, EventKind::Delete, now, 0).await?;
        tx.commit().await?;
        tracing::info!(fs_id, "file system deletion requested");
        self.poke();
        Ok(())
    }
}

/// One file system of the account, read inside a transaction.
pub(crate) async fn fs_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account_id: &str,
    fs_id: &str,
) -> Result<FileSystem> {
    let row = sqlx::query(&format!(
        "SELECT {FS_SELECT} FROM file_systems WHERE id = $1 AND account_id = $2"
    ))
    .bind(fs_id)
    .bind(account_id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(r) => FileSystem::from_row(&r),
        None => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
    }
}
