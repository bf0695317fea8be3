//! The reconciler: a level-triggered loop that reads desired state and takes
//! the next idempotent step for every resource that is not yet where it
//! should be. Each step is one transaction guarded by the status it expects,
//! so a crash between steps (even `kill -9`) only means the step runs again.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use tracing::Instrument;

use crate::error::Result;
use crate::filesystems::{FileSystem, FS_SELECT};
use crate::nodes::PlacementPolicy;
use crate::ControlPlane;

/// What a step asks of the loop next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Done; nothing to do until desired state changes.
    AwaitChange,
    /// Try again after this long (a dependency is not ready, or an error).
    RequeueAfter(Duration),
}

/// Periodic pass even without a change, to catch work that a missed
/// notification or a crashed peer left behind.
const RESYNC: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Reconciler {
    cp: ControlPlane,
    policy: PlacementPolicy,
    /// Consecutive failures per resource: the one retry policy.
    failures: HashMap<String, u32>,
}

fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << failures.min(10));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

impl Reconciler {
    pub fn new(cp: ControlPlane, policy: PlacementPolicy) -> Self {
        Reconciler {
            cp,
            policy,
            failures: HashMap::new(),
        }
    }

    /// Runs until the task is dropped.
    pub async fn run(mut self) {
        self.cp.liveness.register("reconciler", RESYNC);
        loop {
            let wait = match self.pass().await {
                Ok(wait) => {
                    self.cp.liveness.pass("reconciler", Ok(()));
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler pass failed");
                    self.cp.liveness.pass("reconciler", Err(e.to_string()));
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.cp.changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over everything that is not converged. Returns how long the
    /// loop may sleep before the next pass.
    pub async fn pass(&mut self) -> Result<Duration> {
        let mut wait = RESYNC;
        let rows = sqlx::query(&format!(
            "SELECT {FS_SELECT} FROM file_systems WHERE status IN ('Pending', 'Extending', 'Deleting') ORDER BY created_at"
        ))
        .fetch_all(&self.cp.store.pool)
        .await?;
        for row in &rows {
            let fs = FileSystem::from_row(row)?;
            let span =
                tracing::info_span!("reconcile_fs", fs_id = %fs.id, status = fs.status.as_str());
            let outcome = self.reconcile_file_system(&fs).instrument(span).await;
            wait = wait.min(self.settle(&fs.id, outcome).await);
        }
        let mts = sqlx::query(
            "SELECT m.domain, m.status, f.status AS fs_status FROM mount_targets m JOIN file_systems f ON f.id = m.fs_id WHERE m.status IN ('Pending', 'Deleting')",
        )
        .fetch_all(&self.cp.store.pool)
        .await?;
        for row in &mts {
            let domain: String = row.try_get("domain")?;
            let status: String = row.try_get("status")?;
            let fs_status: String = row.try_get("fs_status")?;
            let span = tracing::info_span!("reconcile_mount_target", %domain, %status);
            let outcome = self
                .reconcile_mount_target(&domain, &status, &fs_status)
                .instrument(span)
                .await;
            wait = wait.min(self.settle(&domain, outcome).await);
        }
        Ok(wait)
    }

    async fn settle(&mut self, key: &str, outcome: Result<Next>) -> Duration {
        match outcome {
            Ok(Next::AwaitChange) => {
                self.failures.remove(key);
                RESYNC
            }
            Ok(Next::RequeueAfter(d)) => d,
            Err(e) => {
                let n = self.failures.entry(key.to_string()).or_insert(0);
                *n += 1;
                tracing::warn!(resource = key, failures = *n, error = %e, "reconcile step failed; will retry");
                // Make the reason visible to operators (DescribeFileSystems
                // does not show it, the log and the row do).
                let _ = sqlx::query("UPDATE file_systems SET status_reason = $1 WHERE id = $2")
                    .bind(e.to_string())
                    .bind(key)
                    .execute(&self.cp.store.pool)
                    .await;
                backoff(*n)
            }
        }
    }

    async fn reconcile_file_system(&self, fs: &FileSystem) -> Result<Next> {
        use crate::filesystems::Status::*;
        match fs.status {
            Pending | Extending => {
                let placed = self
                    .cp
                    .reserve(&fs.id, fs.capacity_gib, self.policy)
                    .await?;
                self.cp.provision_namespace(&fs.id).await?;
                // Only the status this step expects is moved on: an upgrade
                // that landed meanwhile keeps the file system Extending.
                let done = sqlx::query(
                    "UPDATE file_systems SET status = 'Running', status_reason = '', updated_at = $1 WHERE id = $2 AND status = $3 AND capacity_gib = $4 AND bandwidth_mbps = $5",
                )
                .bind(self.cp.now())
                .bind(&fs.id)
                .bind(fs.status.as_str())
                .bind(fs.capacity_gib)
                .bind(fs.bandwidth_mbps)
                .execute(&self.cp.store.pool)
                .await?
                .rows_affected();
                tracing::info!(
                    nodes = placed.len(),
                    moved = done,
                    "file system placed; Running"
                );
                Ok(Next::AwaitChange)
            }
            Deleting => {
                self.drop_data(&fs.id).await?;
                self.cp.drop_namespace(&fs.id).await?;
                let mut tx = self.cp.store.begin_write().await?;
                for sql in [
                    "DELETE FROM mount_targets WHERE fs_id = $1",
                    "DELETE FROM tags WHERE resource_id = $1",
                    "DELETE FROM ldap_configs WHERE fs_id = $1",
                    "DELETE FROM reservations WHERE fs_id = $1",
                    "DELETE FROM file_systems WHERE id = $1 AND status = 'Deleting'",
                ] {
                    sqlx::query(sql).bind(&fs.id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                tracing::info!("file system deleted");
                Ok(Next::AwaitChange)
            }
            _ => Ok(Next::AwaitChange),
        }
    }

    /// Marks the file system's data for removal: every node drops its
    /// chunks on its next heartbeat (a node that is down does it when it
    /// returns), so a dead node never blocks a deletion.
    async fn drop_data(&self, fs_id: &str) -> Result<()> {
        sqlx::query("INSERT INTO dropped_file_systems (fs_id, dropped_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(fs_id)
            .bind(self.cp.now())
            .execute(&self.cp.store.pool)
            .await?;
        Ok(())
    }

    async fn reconcile_mount_target(
        &self,
        domain: &str,
        status: &str,
        fs_status: &str,
    ) -> Result<Next> {
        match status {
            "Pending" if fs_status == "Running" || fs_status == "Extending" => {
                sqlx::query("UPDATE mount_targets SET status = 'Active' WHERE domain = $1 AND status = 'Pending'")
                    .bind(domain)
                    .execute(&self.cp.store.pool)
                    .await?;
                tracing::info!("mount target Active");
                Ok(Next::AwaitChange)
            }
            "Pending" => Ok(Next::RequeueAfter(Duration::from_millis(500))),
            "Deleting" => {
                sqlx::query("DELETE FROM mount_targets WHERE domain = $1 AND status = 'Deleting'")
                    .bind(domain)
                    .execute(&self.cp.store.pool)
                    .await?;
                tracing::info!("mount target deleted");
                Ok(Next::AwaitChange)
            }
            _ => Ok(Next::AwaitChange),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert!(backoff(3) > backoff(2));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
