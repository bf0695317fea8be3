//! Metadata servers: their liveness, which one owns each file system's
//! namespace, and where clients find it.
//!
//! The rules are the data nodes' (`nodes.rs`): a server is live while its
//! heartbeats arrive within the failure timeout, and it may serve what it
//! owns for a lease shorter than that, counted from when it sent the
//! heartbeat. So when a server falls silent its file systems move only
//! after its lease ran out: there is never a second owner. A move between
//! two live servers (to spread file systems over a new one) takes effect
//! one lease later, once the old owner stopped, and every change of owner
//! raises the assignment's epoch, which the owner's journal checks in each
//! commit.

use std::collections::HashMap;

use cpfs_proto::heartbeat::{MetaHeartbeat, MetaHeartbeatReply, Owned};
use serde::Serialize;

use crate::nodes::wall_ms;
use crate::{ControlPlane, Result};

/// A metadata server as `cpfs meta list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MetaServer {
    pub id: String,
    pub address: String,
    pub live: bool,
    /// Milliseconds since its last heartbeat.
    pub silent_ms: i64,
    /// The file systems assigned to it (`pending` until the move's time).
    pub file_systems: Vec<Assignment>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    pub fs_id: String,
    pub epoch: i64,
    pub pending: bool,
}

impl ControlPlane {
    /// Records a heartbeat of metadata server `hb.id`, rebalances the
    /// assignments, and answers what the server owns now.
    pub async fn meta_heartbeat(&self, hb: &MetaHeartbeat) -> Result<MetaHeartbeatReply> {
        self.telemetry.meta(&hb.id, &hb.telemetry);
        let now = wall_ms();
        let mut tx = self.store.begin_write().await?;
        let updated =
            sqlx::query("UPDATE meta_servers SET address = $1, last_seen_ms = $2 WHERE id = $3")
                .bind(&hb.address)
                .bind(now)
                .bind(&hb.id)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            sqlx::query("INSERT INTO meta_servers (id, address, last_seen_ms, registered_ms) VALUES ($1, $2, $3, $3)")
                .bind(&hb.id)
                .bind(&hb.address)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tracing::info!(server = %hb.id, address = %hb.address, "metadata server registered");
        }
        self.assign(&mut tx, now).await?;
        let owned: Vec<(String, i64)> = sqlx::query_as(
            "SELECT fs_id, epoch FROM meta_assignments WHERE server_id = $1 AND since_ms <= $2 ORDER BY fs_id",
        )
        .bind(&hb.id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MetaHeartbeatReply {
            owned: owned
                .into_iter()
                .map(|(fs, epoch)| Owned {
                    fs,
                    epoch: epoch as u64,
                })
                .collect(),
            lease_ms: self.policy.lease_ms(),
        })
    }

    /// Gives every provisioned file system a live owner: those of silent
    /// servers (and new ones) go to the least loaded live server at once;
    /// one file system moves from the most to the least loaded live server
    /// when they differ by two or more, one lease later.
    async fn assign(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, now: i64) -> Result<()> {
        let timeout = self.policy.failure_timeout_ms;
        let servers: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, last_seen_ms FROM meta_servers ORDER BY id")
                .fetch_all(&mut **tx)
                .await?;
        let mut load: HashMap<String, usize> = servers
            .iter()
            .filter(|(_, seen)| now - seen <= timeout)
            .map(|(id, _)| (id.clone(), 0))
            .collect();
        if load.is_empty() {
            return Ok(());
        }
        let current: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT c.fs_id, a.server_id, a.epoch FROM fs_counters c LEFT JOIN meta_assignments a ON a.fs_id = c.fs_id ORDER BY c.fs_id",
        )
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query(
            "DELETE FROM meta_assignments WHERE fs_id NOT IN (SELECT fs_id FROM fs_counters)",
        )
        .execute(&mut **tx)
        .await?;
        let mut orphaned = Vec::new();
        let mut placed: Vec<(String, String, i64)> = Vec::new();
        for (fs, server, epoch) in current {
            match server.filter(|s| load.contains_key(s)) {
                Some(s) => {
                    *load.entry(s.clone()).or_default() += 1;
                    placed.push((fs, s, epoch.unwrap_or(0)));
                }
                None => orphaned.push((fs, epoch)),
            }
        }
        let least = |load: &HashMap<String, usize>| {
            load.iter()
                .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
                .map(|(id, _)| id.clone())
        };
        for (fs, epoch) in orphaned {
            let Some(to) = least(&load) else { break };
            *load.entry(to.clone()).or_default() += 1;
            self.set_owner(tx, &fs, &to, epoch, now).await?;
            tracing::info!(fs = %fs, server = %to, "file system assigned to a metadata server");
        }
        let most = load
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(id, n)| (id.clone(), *n));
        if let (Some((from, high)), Some(to)) = (most, least(&load)) {
            let low = load.get(&to).copied().unwrap_or(0);
            if high >= low + 2 {
                if let Some((fs, _, epoch)) = placed.iter().find(|p| p.1 == from) {
                    let since = now + self.policy.failure_timeout_ms;
                    self.set_owner(tx, fs, &to, Some(*epoch), since).await?;
                    tracing::info!(fs = %fs, from = %from, to = %to, "file system moves to a less loaded metadata server");
                }
            }
        }
        Ok(())
    }

    async fn set_owner(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        fs: &str,
        server: &str,
        epoch: Option<i64>,
        since_ms: i64,
    ) -> Result<()> {
        let next = epoch.unwrap_or(0) + 1;
        let updated = sqlx::query(
            "UPDATE meta_assignments SET server_id = $1, epoch = $2, since_ms = $3 WHERE fs_id = $4",
        )
        .bind(server)
        .bind(next)
        .bind(since_ms)
        .bind(fs)
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query("INSERT INTO meta_assignments (fs_id, server_id, epoch, since_ms) VALUES ($1, $2, $3, $4)")
                .bind(fs)
                .bind(server)
                .bind(next)
                .bind(since_ms)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The address of the metadata server that serves the file system of
    /// mount target `domain` now, if any.
    pub async fn meta_address_for(&self, domain: &str) -> Result<Option<String>> {
        let now = wall_ms();
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT s.address FROM mount_targets m JOIN meta_assignments a ON a.fs_id = m.fs_id \
             JOIN meta_servers s ON s.id = a.server_id WHERE m.domain = $1 AND a.since_ms <= $2 AND s.last_seen_ms >= $3",
        )
        .bind(domain)
        .bind(now)
        .bind(now - self.policy.failure_timeout_ms)
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Every metadata server with its file systems.
    pub async fn meta_servers(&self) -> Result<Vec<MetaServer>> {
        let now = wall_ms();
        let servers: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, address, last_seen_ms FROM meta_servers ORDER BY id")
                .fetch_all(&self.store.pool)
                .await?;
        let assignments: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT server_id, fs_id, epoch, since_ms FROM meta_assignments ORDER BY fs_id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        Ok(servers
            .into_iter()
            .map(|(id, address, seen)| MetaServer {
                file_systems: assignments
                    .iter()
                    .filter(|a| a.0 == id)
                    .map(|a| Assignment {
                        fs_id: a.1.clone(),
                        epoch: a.2,
                        pending: a.3 > now,
                    })
                    .collect(),
                live: now - seen <= self.policy.failure_timeout_ms,
                silent_ms: now - seen,
                id,
                address,
            })
            .collect())
    }
}
