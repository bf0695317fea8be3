//! The reconciler: a level-triggered loop that reads desired state and takes
//! the next idempotent step for every resource that is not yet where it
//! should be. Each step is one transaction guarded by the status it expects,
//! so a crash between steps (even `kill -9`) only means the step runs again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cpfs_runtime::{Shutdown, WorkQueue};
use sqlx::Row;
use tracing::Instrument;

use crate::error::Result;
use crate::filesystems::{FileSystem, FS_SELECT};
use crate::nodes::PlacementPolicy;
use crate::ControlPlane;

pub use cpfs_runtime::Next;

/// Converged objects are looked at again this often even without a change
/// notification, to catch work a missed notification or a crashed peer
/// left behind.
const RESYNC: Duration = Duration::from_secs(2);
/// A failing object is retried after 100 ms, then ever more slowly, up to
/// this (per object: the others keep converging at full speed).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The name the reconciler reports under on `/healthz`.
pub const LOOP_NAME: &str = "reconciler";

/// The objects the reconciler drives, each one key of its work queue. A
/// key holds the desired state it was read with, so a change to that state
/// (an upgrade, a deletion, the file system of a mount target starting) is
/// a new key, due at once even while the old one was backing off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Object {
    FileSystem {
        id: String,
        status: String,
        capacity_gib: i64,
        bandwidth_mbps: i64,
    },
    MountTarget {
        domain: String,
        status: String,
        fs_status: String,
    },
}

pub struct Reconciler {
    cp: ControlPlane,
    policy: PlacementPolicy,
    queue: WorkQueue<Object>,
}

impl Reconciler {
    pub fn new(cp: ControlPlane, policy: PlacementPolicy) -> Self {
        Reconciler {
            cp,
            policy,
            queue: WorkQueue::new(RESYNC, FIRST_BACKOFF, MAX_BACKOFF),
        }
    }

    /// Runs until shutdown: a pass over the due objects, then a sleep until
    /// the next one is due or desired state changes.
    pub async fn run(mut self, shutdown: Shutdown) -> std::result::Result<(), String> {
        self.cp.liveness.register(LOOP_NAME, RESYNC);
        while !shutdown.is_requested() {
            let now = Instant::now();
            let outcome = self.pass_at(now).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "reconciler pass failed");
            }
            self.cp.liveness.pass_took(
                LOOP_NAME,
                outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                now.elapsed(),
            );
            // The objects not converged yet (the pass lists only those).
            self.cp.liveness.queue_depth(LOOP_NAME, self.queue.len());
            // A pass that could not even list the objects waits a second.
            let wait = outcome.unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.requested() => {}
                _ = self.cp.changed.notified() => self.queue.changed(),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// One pass now (what tests drive).
    pub async fn pass(&mut self) -> Result<Duration> {
        self.pass_at(Instant::now()).await
    }

    /// Reconciles every object not yet converged whose turn has come at
    /// `now`. Returns how long the loop may sleep before one is due.
    pub async fn pass_at(&mut self, now: Instant) -> Result<Duration> {
        let rows = sqlx::query(&format!(
            "SELECT {FS_SELECT} FROM file_systems WHERE status IN ('Pending', 'Extending', 'Deleting') ORDER BY created_at"
        ))
        .fetch_all(&self.cp.store.pool)
        .await?;
        let mts = sqlx::query(
            "SELECT m.domain, m.status, f.status AS fs_status FROM mount_targets m JOIN file_systems f ON f.id = m.fs_id WHERE m.status IN ('Pending', 'Deleting')",
        )
        .fetch_all(&self.cp.store.pool)
        .await?;
        let mut present = HashSet::new();
        for row in &rows {
            let fs = FileSystem::from_row(row)?;
            let key = Object::FileSystem {
                id: fs.id.clone(),
                status: fs.status.as_str().to_string(),
                capacity_gib: fs.capacity_gib,
                bandwidth_mbps: fs.bandwidth_mbps,
            };
            present.insert(key.clone());
            if !self.queue.is_due(&key, now) {
                continue;
            }
            let span =
                tracing::info_span!("reconcile_fs", fs_id = %fs.id, status = fs.status.as_str());
            let outcome = self.reconcile_file_system(&fs).instrument(span).await;
            self.settle(key, outcome, now).await;
        }
        for row in &mts {
            let domain: String = row.try_get("domain")?;
            let status: String = row.try_get("status")?;
            let fs_status: String = row.try_get("fs_status")?;
            let key = Object::MountTarget {
                domain: domain.clone(),
                status: status.clone(),
                fs_status: fs_status.clone(),
            };
            present.insert(key.clone());
            if !self.queue.is_due(&key, now) {
                continue;
            }
            let span = tracing::info_span!("reconcile_mount_target", %domain, %status);
            let outcome = self
                .reconcile_mount_target(&domain, &status, &fs_status)
                .instrument(span)
                .await;
            self.settle(key, outcome, now).await;
        }
        self.queue.retain(&present);
        Ok(self.queue.next_wake(now))
    }

    /// The one error policy: the object backs off on its own, and the
    /// reason lands on the object's own row for operators to read.
    async fn settle(&mut self, key: Object, outcome: Result<Next>, now: Instant) {
        let Some(failures) = self.queue.settle(key.clone(), &outcome, now) else {
            return;
        };
        let Err(e) = outcome else { return };
        // Only a new reason is written: an object retrying with the same
        // failure would otherwise rewrite its row on every attempt, and
        // every write moves the read generation (see `fs_view`).
        let (sql, id) = match &key {
            Object::FileSystem { id, .. } => (
                "UPDATE file_systems SET status_reason = $1 WHERE id = $2 AND status_reason <> $1",
                id,
            ),
            Object::MountTarget { domain, .. } => (
                "UPDATE mount_targets SET status_reason = $1 WHERE domain = $2 AND status_reason <> $1",
                domain,
            ),
        };
        tracing::warn!(object = ?key, failures, error = %e, "reconcile step failed; backing off");
        if let Err(write) = sqlx::query(sql)
            .bind(e.to_string())
            .bind(id)
            .execute(&self.cp.store.pool)
            .await
        {
            tracing::warn!(object = ?key, error = %write, "could not record the failure reason");
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
                    "DELETE FROM filesets WHERE fs_id = $1",
                    "DELETE FROM user_quotas WHERE fs_id = $1",
                    "DELETE FROM client_fences WHERE fs_id = $1",
                    "DELETE FROM tags WHERE resource_type = 'accesspoint' AND resource_id IN (SELECT access_point_id FROM access_points WHERE fs_id = $1)",
                    "DELETE FROM access_points WHERE fs_id = $1",
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
                sqlx::query("UPDATE mount_targets SET status = 'Active', status_reason = '' WHERE domain = $1 AND status = 'Pending'")
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
