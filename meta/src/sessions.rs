//! Publishing the sessions this metadata server holds (`meta_sessions`),
//! for DescribeMountedClients: who is mounted, through which mount target
//! and access point, since when, and when it last did anything (a mount
//! keeps a Watch outstanding, so an idle mount is active every few
//! seconds). Each pass replaces this server's rows in one transaction;
//! rows of a server that stopped keep their last activity, fall out of the
//! reference's one-minute window, and are removed after an hour by any
//! server's pass.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::MetaService;

/// How often sessions are published.
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(5);
/// Rows older than this (of servers that went away) are removed.
const STALE_SECS: i64 = 3600;

struct Row {
    id: u64,
    fs: String,
    domain: String,
    peer: String,
    access_point: String,
    mounted_at: i64,
    last_active_at: i64,
}

impl MetaService {
    fn session_rows(&self) -> Vec<Row> {
        let now = std::time::Instant::now();
        let now_ms = self.ms_since_epoch(now);
        let unix = crate::ns::t_secs();
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        sessions
            .values()
            .map(|l| {
                let idle_ms = now_ms.saturating_sub(l.used_ms.load(Ordering::Relaxed));
                Row {
                    id: l.session.id,
                    fs: l.session.fs.clone(),
                    domain: l.session.domain.clone(),
                    peer: l.session.peer.to_string(),
                    access_point: l.session.access_point.clone().unwrap_or_default(),
                    mounted_at: l.mounted_at,
                    last_active_at: unix - (idle_ms / 1000) as i64,
                }
            })
            .collect()
    }

    /// One pass: this server's sessions replace its rows.
    pub async fn publish_sessions(&self) -> Result<(), String> {
        let rows = self.session_rows();
        let db = |e: sqlx::Error| format!("publishing sessions: {e}");
        let mut tx = self.store.begin_write().await.map_err(|e| e.to_string())?;
        sqlx::query("DELETE FROM meta_sessions WHERE publisher = $1 OR last_active_at < $2")
            .bind(&self.publisher)
            .bind(crate::ns::t_secs() - STALE_SECS)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for r in rows {
            sqlx::query(
                "INSERT INTO meta_sessions (session_id, publisher, fs_id, domain, client_ip, access_point, mounted_at, last_active_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (session_id) DO UPDATE SET publisher = excluded.publisher, last_active_at = excluded.last_active_at",
            )
            .bind(r.id as i64)
            .bind(&self.publisher)
            .bind(&r.fs)
            .bind(&r.domain)
            .bind(&r.peer)
            .bind(&r.access_point)
            .bind(r.mounted_at)
            .bind(r.last_active_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}
