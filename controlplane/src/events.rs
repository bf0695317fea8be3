//! The history of every file system as billing needs it: creation,
//! upgrades, renewals, stops and deletion, each with the capacity,
//! bandwidth and term in force afterwards. An event is written in the same
//! transaction as the change it records (`FileSystem::record_event`), so
//! billing never sees a change without its event or the reverse; the rows
//! outlive the file system.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Upgrade,
    Renew,
    /// A subscription expired: the file system is stopped (mounts refused,
    /// data kept) and nothing accrues until a renewal.
    Stop,
    /// Deleted by its owner, or released after an expired subscription's
    /// retention period.
    Delete,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Upgrade => "upgrade",
            EventKind::Renew => "renew",
            EventKind::Stop => "stop",
            EventKind::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "create" => EventKind::Create,
            "upgrade" => EventKind::Upgrade,
            "renew" => EventKind::Renew,
            "stop" => EventKind::Stop,
            "delete" => EventKind::Delete,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEvent {
    pub fs_id: String,
    pub seq: i64,
    pub account_id: String,
    pub at: i64,
    pub kind: EventKind,
    pub storage_type: String,
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
    pub charge_type: String,
    pub expired_at: Option<i64>,
    pub months: i64,
    pub zone_id: String,
    pub description: String,
}

pub const EVENT_COLUMNS: &str = "fs_id, seq, account_id, at, kind, storage_type, capacity_gib, bandwidth_mbps, charge_type, expired_at, months, zone_id, description";

impl FsEvent {
    pub fn from_row(r: &AnyRow) -> Result<FsEvent> {
        let kind: String = r.try_get("kind")?;
        Ok(FsEvent {
            fs_id: r.try_get("fs_id")?,
            seq: r.try_get("seq")?,
            account_id: r.try_get("account_id")?,
            at: r.try_get("at")?,
            kind: EventKind::parse(&kind).ok_or_else(|| {
                crate::Error::Internal(format!("unknown file system event kind {kind}"))
            })?,
            storage_type: r.try_get("storage_type")?,
            capacity_gib: r.try_get("capacity_gib")?,
            bandwidth_mbps: r.try_get("bandwidth_mbps")?,
            charge_type: r.try_get("charge_type")?,
            expired_at: r.try_get("expired_at")?,
            months: r.try_get("months")?,
            zone_id: r.try_get("zone_id")?,
            description: r.try_get("description")?,
        })
    }
}

impl crate::ControlPlane {
    /// Every event of one file system, oldest first.
    pub async fn fs_events(&self, fs_id: &str) -> Result<Vec<FsEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM fs_events WHERE fs_id = $1 ORDER BY seq"
        ))
        .bind(fs_id)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(FsEvent::from_row).collect()
    }
}
