//! LDAP configurations of file systems (Create/Modify/DeleteLDAPConfig):
//! stored here, checked and used through the `cpfs-directory` client.

use std::collections::HashMap;

pub use cpfs_directory::{probe, DirectoryError, Identity, LdapConfig, MAX_DN};
use cpfs_store::placeholders;
use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::ControlPlane;

/// From a row with the columns `uri`, `search_base` and `bind_dn`.
fn config_from_row(r: &sqlx::any::AnyRow) -> Result<LdapConfig> {
    Ok(LdapConfig {
        uri: r.try_get("uri")?,
        search_base: r.try_get("search_base")?,
        bind_dn: r.try_get("bind_dn")?,
    })
}

/// Validates the parameters of Create/ModifyLDAPConfig.
pub fn validate(cfg: &LdapConfig) -> Result<()> {
    cpfs_directory::validate_uri(&cfg.uri).map_err(|e| Error::invalid("URI", e.to_string()))?;
    if cfg.search_base.trim().is_empty() || cfg.search_base.len() > MAX_DN {
        return Err(Error::invalid(
            "SearchBase",
            format!("SearchBase must be a DN of 1 to {MAX_DN} characters"),
        ));
    }
    if cfg.bind_dn.len() > MAX_DN {
        return Err(Error::invalid(
            "BindDN",
            format!("BindDN must be at most {MAX_DN} characters"),
        ));
    }
    Ok(())
}

impl ControlPlane {
    /// Stores a configuration (`create`: there must be none yet; otherwise
    /// there must be one). The caller has already probed the server.
    pub async fn put_ldap_config(
        &self,
        account_id: &str,
        fs_id: &str,
        cfg: &LdapConfig,
        create: bool,
    ) -> Result<()> {
        validate(cfg)?;
        let fs = self.file_system(account_id, fs_id).await?;
        if fs.status.as_str() == "Deleting" {
            return Err(Error::invalid_status(
                ResourceKind::FileSystem,
                format!("file system {fs_id} is being deleted"),
            ));
        }
        let now = self.now();
        let mut tx = self.store.begin_write().await?;
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT fs_id FROM ldap_configs WHERE fs_id = $1")
                .bind(fs_id)
                .fetch_optional(&mut *tx)
                .await?;
        match (create, exists.is_some()) {
            (true, true) => {
                return Err(Error::AlreadyExists {
                    kind: ResourceKind::LdapConfig,
                    id: fs_id.to_string(),
                })
            }
            (false, false) => return Err(Error::not_found(ResourceKind::LdapConfig, fs_id)),
            (true, false) => {
                sqlx::query("INSERT INTO ldap_configs (fs_id, account_id, uri, search_base, bind_dn, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(fs_id)
                    .bind(account_id)
                    .bind(&cfg.uri)
                    .bind(&cfg.search_base)
                    .bind(&cfg.bind_dn)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            (false, true) => {
                sqlx::query("UPDATE ldap_configs SET uri = $1, search_base = $2, bind_dn = $3, updated_at = $4 WHERE fs_id = $5")
                    .bind(&cfg.uri)
                    .bind(&cfg.search_base)
                    .bind(&cfg.bind_dn)
                    .bind(now)
                    .bind(fs_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        tracing::info!(fs_id, uri = %cfg.uri, "LDAP configuration stored");
        Ok(())
    }

    /// The configurations of several of the account's file systems.
    pub async fn ldap_configs_of(
        &self,
        account_id: &str,
        fs_ids: &[String],
    ) -> Result<HashMap<String, LdapConfig>> {
        let mut out = HashMap::new();
        if fs_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT fs_id, uri, search_base, bind_dn FROM ldap_configs WHERE account_id = $1 AND fs_id IN ({})",
            placeholders(2, fs_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(account_id);
        for id in fs_ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(&self.store.pool).await? {
            out.insert(r.try_get("fs_id")?, config_from_row(&r)?);
        }
        Ok(out)
    }

    pub async fn delete_ldap_config(&self, account_id: &str, fs_id: &str) -> Result<()> {
        self.file_system(account_id, fs_id).await?;
        let done = sqlx::query("DELETE FROM ldap_configs WHERE fs_id = $1")
            .bind(fs_id)
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(ResourceKind::LdapConfig, fs_id));
        }
        tracing::info!(fs_id, "LDAP configuration deleted");
        Ok(())
    }
}

/// The configuration of a file system, without account scoping (for the
/// metadata service, which has already resolved the mount target).
pub async fn ldap_config_of(store: &crate::Store, fs_id: &str) -> Result<Option<LdapConfig>> {
    let row = sqlx::query("SELECT uri, search_base, bind_dn FROM ldap_configs WHERE fs_id = $1")
        .bind(fs_id)
        .fetch_optional(&store.pool)
        .await?;
    Ok(match row {
        Some(r) => Some(config_from_row(&r)?),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds() {
        let mut c = LdapConfig {
            uri: "ldap://h:389".into(),
            search_base: "dc=example,dc=com".into(),
            bind_dn: String::new(),
        };
        assert!(validate(&c).is_ok());
        c.search_base = " ".into();
        assert!(validate(&c).is_err());
        c.search_base = "x".repeat(2000);
        assert!(validate(&c).is_err());
    }
}
