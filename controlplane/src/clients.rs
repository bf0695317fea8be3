//! Clients of a file system: which are mounted (DescribeMountedClients,
//! from the sessions metadata servers publish) and which are fenced off
//! (AddClientToBlackList, RemoveClientFromBlackList,
//! DescribeBlackListClients).
//!
//! A fence is an I/O fence. Its row enters every grant decision
//! (`mount_policy`: the address is refused at mount and on every request
//! once the metadata service's grant cache turns over) and the grant
//! fingerprints (`revocations.rs`): every capability of the file system
//! issued under a grant decided before the fence is revoked on the nodes,
//! and the other clients renew theirs while the fenced one cannot. A node
//! serves only under a lease its heartbeat renews, and a heartbeat reply
//! carries the revocations current when it was computed, so a node still
//! serving one lease and one revocation refresh after the fence has
//! applied it: that is when the fence shows `EVICTED`, and no write of the
//! fenced client lands after it.

use std::net::IpAddr;

use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::filesystems::Status as FsStatus;
use crate::nodes::wall_ms;
use crate::{idempotency, ControlPlane};

/// A client is "mounted" while it used its session this recently (the
/// reference: clients seen in the last minute).
pub const ACTIVE_WINDOW_SECS: i64 = 60;
/// Fenced addresses one file system may hold.
pub const MAX_FENCES: i64 = 1000;

/// A mounted client, as its metadata server published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedClient {
    pub client_ip: String,
    pub session_id: u64,
    pub domain: String,
    pub access_point: String,
    pub mounted_at: i64,
    pub last_active_at: i64,
}

/// A client address as the API takes it: an IPv4 or IPv6 address, kept in
/// its canonical text.
pub fn parse_ip(s: &str) -> Result<IpAddr> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| Error::invalid("ClientIP", "ClientIP must be an IPv4 or IPv6 address"))
}

impl ControlPlane {
    async fn clients_file_system(&self, account_id: &str, fs_id: &str) -> Result<()> {
        let fs = self.file_system(account_id, fs_id).await?;
        match fs.status {
            FsStatus::Deleting => Err(Error::not_found(ResourceKind::FileSystem, fs_id)),
            _ => Ok(()),
        }
    }

    /// When a fence added at `created_ms` holds on every node (see the
    /// module).
    pub fn evicted_at_ms(&self, created_ms: i64) -> i64 {
        let lease = self.policy.failure_timeout_ms;
        let grants = cpfs_meta::identity::GRANT_REFRESH.as_millis() as i64;
        created_ms + lease.max(grants) + crate::revocations::REFRESH.as_millis() as i64 + 500
    }

    pub async fn fence_client(
        &self,
        account_id: &str,
        fs_id: &str,
        client_ip: &str,
        client_token: Option<&str>,
    ) -> Result<()> {
        let ip = parse_ip(client_ip)?;
        if let Some(t) = client_token {
            idempotency::validate_token(t)?;
        }
        self.clients_file_system(account_id, fs_id).await?;
        let mut tx = self.store.begin_write().await?;
        if let Some(token) = client_token {
            if idempotency::lookup(&mut tx, account_id, "AddClientToBlackList", token)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM client_fences WHERE fs_id = $1")
            .bind(fs_id)
            .fetch_one(&mut *tx)
            .await?;
        if n >= MAX_FENCES {
            return Err(Error::denied(
                "QuotaExceeded.BlackListClient",
                format!("a file system fences at most {MAX_FENCES} clients"),
            ));
        }
        // Fencing an address again keeps its first time.
        sqlx::query(
            "INSERT INTO client_fences (fs_id, account_id, client_ip, created_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (fs_id, client_ip) DO NOTHING",
        )
        .bind(fs_id)
        .bind(account_id)
        .bind(ip.to_string())
        .bind(wall_ms())
        .execute(&mut *tx)
        .await?;
        if let Some(token) = client_token {
            idempotency::record(
                &mut tx,
                account_id,
                "AddClientToBlackList",
                token,
                fs_id,
                self.now(),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::warn!(fs_id, client = %ip, "client fenced");
        Ok(())
    }

    pub async fn unfence_client(
        &self,
        account_id: &str,
        fs_id: &str,
        client_ip: &str,
        client_token: Option<&str>,
    ) -> Result<()> {
        let ip = parse_ip(client_ip)?;
        if let Some(t) = client_token {
            idempotency::validate_token(t)?;
        }
        self.clients_file_system(account_id, fs_id).await?;
        let n = sqlx::query(
            "DELETE FROM client_fences WHERE fs_id = $1 AND account_id = $2 AND client_ip = $3",
        )
        .bind(fs_id)
        .bind(account_id)
        .bind(ip.to_string())
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if n == 0 && client_token.is_none() {
            return Err(Error::not_found(
                ResourceKind::BlackListClient,
                ip.to_string(),
            ));
        }
        tracing::info!(fs_id, client = %ip, "client fence removed");
        Ok(())
    }

    /// The fenced addresses of `fs_id` and their state (`EVICTING`,
    /// `EVICTED`), optionally only `client_ip`.
    pub async fn fenced_clients(
        &self,
        account_id: &str,
        fs_id: &str,
        client_ip: Option<&str>,
    ) -> Result<Vec<(String, &'static str)>> {
        let only = client_ip.map(parse_ip).transpose()?;
        self.clients_file_system(account_id, fs_id).await?;
        let rows = sqlx::query(
            "SELECT client_ip, created_at_ms FROM client_fences WHERE fs_id = $1 AND account_id = $2 ORDER BY client_ip",
        )
        .bind(fs_id)
        .bind(account_id)
        .fetch_all(&self.store.pool)
        .await?;
        let now = wall_ms();
        let mut out = Vec::new();
        for r in rows {
            let ip: String = r.try_get("client_ip")?;
            if only.is_some_and(|o| o.to_string() != ip) {
                continue;
            }
            let created: i64 = r.try_get("created_at_ms")?;
            let state = if now >= self.evicted_at_ms(created) {
                "EVICTED"
            } else {
                "EVICTING"
            };
            out.push((ip, state));
        }
        Ok(out)
    }

    /// The fenced addresses of `fs_id` (for grant decisions).
    pub(crate) async fn fenced_ips(&self, fs_id: &str) -> Result<Vec<IpAddr>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT client_ip FROM client_fences WHERE fs_id = $1")
                .bind(fs_id)
                .fetch_all(&self.store.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(ip,)| ip.parse().ok())
            .collect())
    }

    /// Clients of `fs_id` active in the last minute, optionally through
    /// one mount target or from one address, most recently mounted first.
    pub async fn mounted_clients(
        &self,
        account_id: &str,
        fs_id: &str,
        domain: Option<&str>,
        client_ip: Option<&str>,
    ) -> Result<Vec<MountedClient>> {
        let only = client_ip.map(parse_ip).transpose()?;
        self.clients_file_system(account_id, fs_id).await?;
        let since = self.now() - ACTIVE_WINDOW_SECS;
        let rows = sqlx::query(
            "SELECT session_id, domain, client_ip, access_point, mounted_at, last_active_at FROM meta_sessions \
             WHERE fs_id = $1 AND last_active_at >= $2 ORDER BY mounted_at DESC, session_id",
        )
        .bind(fs_id)
        .bind(since)
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let c = MountedClient {
                client_ip: r.try_get("client_ip")?,
                session_id: r.try_get::<i64, _>("session_id")? as u64,
                domain: r.try_get("domain")?,
                access_point: r.try_get("access_point")?,
                mounted_at: r.try_get("mounted_at")?,
                last_active_at: r.try_get("last_active_at")?,
            };
            if domain.is_some_and(|d| d != c.domain)
                || only.is_some_and(|o| o.to_string() != c.client_ip)
            {
                continue;
            }
            out.push(c);
        }
        Ok(out)
    }
}
