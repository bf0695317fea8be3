//! The subscription lifecycle: renewal, and what happens at expiry. An
//! expired subscription file system is stopped (the metadata service
//! refuses mounts unless the file system is Running or Extending; the data
//! is kept) and, unless renewed within the retention period, released
//! (deleted through the reconciler like any deletion).
//!
//! Events are dated when the rule says, not when a pass noticed: a stop is
//! dated at the expiry and a release at expiry + retention, so billing is
//! exact however late the pass runs.

use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::events::EventKind;
use crate::filesystems::{fs_in, FileSystem, Status, FS_SELECT};
use crate::{clock, idempotency, ControlPlane};

/// Renewal terms in months (the BssOpenApi RenewInstance values).
pub const RENEW_PERIODS: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 24, 36];

/// What a renewal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub fs_id: String,
    /// The event recording it (the order billing charges).
    pub seq: i64,
    pub expired_at: i64,
    /// The file system was stopped and runs again.
    pub resumed: bool,
}

impl Renewal {
    /// The order id shown to the caller; the bill item of the renewal
    /// carries the same id.
    pub fn order_id(&self) -> String {
        order_id(&self.fs_id, self.seq)
    }
}

/// The order id of the event `seq` of a file system.
pub fn order_id(fs_id: &str, seq: i64) -> String {
    format!("{fs_id}-{seq}")
}

/// Changes made by one expiry pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExpiryOutcome {
    pub stopped: Vec<String>,
    pub released: Vec<String>,
}

impl ControlPlane {
    /// Extends a subscription by `months`: from its expiry while it runs,
    /// from now once it has expired (a stopped file system runs again).
    pub async fn renew_file_system(
        &self,
        account_id: &str,
        fs_id: &str,
        months: u32,
        client_token: Option<&str>,
    ) -> Result<Renewal> {
        if !RENEW_PERIODS.contains(&months) {
            return Err(Error::invalid(
                "RenewPeriod",
                format!("RenewPeriod must be one of {RENEW_PERIODS:?} months"),
            ));
        }
        if let Some(t) = client_token {
            idempotency::validate_token(t)?;
        }
        let mut tx = self.store.begin_write().await?;
        if let Some(token) = client_token {
            if let Some(previous) =
                idempotency::lookup(&mut tx, account_id, "RenewInstance", token).await?
            {
                return serde_json::from_str::<(String, i64, i64, bool)>(&previous)
                    .map(|(fs_id, seq, expired_at, resumed)| Renewal {
                        fs_id,
                        seq,
                        expired_at,
                        resumed,
                    })
                    .map_err(|e| Error::Internal(format!("stored renewal: {e}")));
            }
        }
        let fs = fs_in(&mut tx, account_id, fs_id).await?;
        if fs.charge_type != "Subscription" {
            return Err(Error::invalid_status(
                ResourceKind::FileSystem,
                "only a Subscription file system can be renewed; a PayAsYouGo one is billed by the hour",
            ));
        }
        if fs.status == Status::Deleting {
            return Err(Error::not_found(ResourceKind::FileSystem, fs_id));
        }
        let now = self.now();
        let base = fs.expired_at.unwrap_or(now).max(now);
        let expired_at = clock::add_months(base, months);
        let resumed = fs.status == Status::Stopped;
        sqlx::query(
            "UPDATE file_systems SET expired_at = $1, status = CASE WHEN status = 'Stopped' THEN 'Running' ELSE status END, updated_at = $2 WHERE id = $3 AND account_id = $4",
        )
        .bind(expired_at)
        .bind(now)
        .bind(fs_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        let renewed = fs_in(&mut tx, account_id, fs_id).await?;
        let seq = renewed
            .record_event(&mut tx, EventKind::Renew, now, i64::from(months))
            .await?;
        let renewal = Renewal {
            fs_id: fs_id.to_string(),
            seq,
            expired_at,
            resumed,
        };
        if let Some(token) = client_token {
            let stored = serde_json::to_string(&(fs_id, seq, expired_at, resumed))
                .map_err(|e| Error::Internal(e.to_string()))?;
            idempotency::record(&mut tx, account_id, "RenewInstance", token, &stored, now).await?;
        }
        tx.commit().await?;
        tracing::info!(
            fs_id,
            months,
            expired_at = %clock::format_utc(expired_at),
            resumed,
            "subscription renewed"
        );
        Ok(renewal)
    }

    /// Stops subscription file systems whose term ended by `now`, and
    /// releases those stopped for `retention_secs` past their expiry.
    pub async fn expire_subscriptions(
        &self,
        now: i64,
        retention_secs: i64,
    ) -> Result<ExpiryOutcome> {
        let mut out = ExpiryOutcome::default();
        let due = sqlx::query(&format!(
            "SELECT {FS_SELECT} FROM file_systems WHERE charge_type = 'Subscription' AND expired_at IS NOT NULL AND expired_at <= $1 AND status IN ('Running', 'Stopped') ORDER BY expired_at, id"
        ))
        .bind(now)
        .fetch_all(&self.store.pool)
        .await?;
        for row in &due {
            let fs = FileSystem::from_row(row)?;
            let Some(expired_at) = fs.expired_at else {
                continue;
            };
            if fs.status == Status::Running
                && self
                    .transition(&fs, "Running", "Stopped", EventKind::Stop, expired_at)
                    .await?
            {
                tracing::info!(fs_id = %fs.id, "subscription expired; file system stopped");
                out.stopped.push(fs.id.clone());
            }
            let release_at = expired_at.saturating_add(retention_secs);
            if release_at <= now
                && self
                    .transition(&fs, "Stopped", "Deleting", EventKind::Delete, release_at)
                    .await?
            {
                tracing::info!(fs_id = %fs.id, "expired subscription released after retention");
                out.released.push(fs.id.clone());
            }
        }
        if !out.released.is_empty() {
            self.poke();
        }
        Ok(out)
    }

    /// Moves a file system from one status to another if it is still in
    /// the first with the same expiry (a renewal in between wins), and
    /// records the event in the same transaction.
    async fn transition(
        &self,
        fs: &FileSystem,
        from: &str,
        to: &str,
        kind: EventKind,
        at: i64,
    ) -> Result<bool> {
        let mut tx = self.store.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE file_systems SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4 AND expired_at = $5",
        )
        .bind(to)
        .bind(self.now())
        .bind(&fs.id)
        .bind(from)
        .bind(fs.expired_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let now_fs = fs_in(&mut tx, &fs.account_id, &fs.id).await?;
        now_fs.record_event(&mut tx, kind, at, 0).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The account owning a file system (for operator commands).
    pub async fn file_system_owner(&self, fs_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT account_id FROM file_systems WHERE id = $1")
            .bind(fs_id)
            .fetch_optional(&self.store.pool)
            .await?;
        match row {
            Some(r) => Ok(r.try_get("account_id")?),
            None => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
        }
    }
}
