//! LDAP configurations of file systems (Create/Modify/DeleteLDAPConfig):
//! stored here, checked and used through the `cpfs-directory` client.

use std::collections::HashMap;

pub use cpfs_directory::{probe, BindPassword, DirectoryError, Identity, LdapConfig, MAX_DN};
use cpfs_store::placeholders;
use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::secrets::{is_sealed, ldap_password_context, SecretBox};
use crate::ControlPlane;

/// Longest BindPassword accepted.
pub const MAX_BIND_PASSWORD: usize = 256;

/// From a row with the columns `uri`, `search_base` and `bind_dn`; the
/// password is left out (only the directory client ever needs it).
pub(crate) fn config_from_row(r: &sqlx::any::AnyRow) -> Result<LdapConfig> {
    Ok(LdapConfig {
        uri: r.try_get("uri")?,
        search_base: r.try_get("search_base")?,
        bind_dn: r.try_get("bind_dn")?,
        bind_password: None,
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
    if let Some(p) = &cfg.bind_password {
        if p.expose().is_empty() || p.expose().len() > MAX_BIND_PASSWORD {
            return Err(Error::invalid(
                "BindPassword",
                format!("BindPassword must be 1 to {MAX_BIND_PASSWORD} characters"),
            ));
        }
        if cfg.bind_dn.is_empty() {
            return Err(Error::invalid(
                "BindPassword",
                "BindPassword needs a BindDN to bind as",
            ));
        }
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
        let password = cfg
            .bind_password
            .as_ref()
            .map(|p| self.secrets.seal(&ldap_password_context(fs_id), p.expose()))
            .transpose()?;
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
                sqlx::query("INSERT INTO ldap_configs (fs_id, account_id, uri, search_base, bind_dn, bind_password, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(fs_id)
                    .bind(account_id)
                    .bind(&cfg.uri)
                    .bind(&cfg.search_base)
                    .bind(&cfg.bind_dn)
                    .bind(&password)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            (false, true) => {
                // Modify replaces the whole configuration, password included.
                sqlx::query("UPDATE ldap_configs SET uri = $1, search_base = $2, bind_dn = $3, bind_password = $4, updated_at = $5 WHERE fs_id = $6")
                    .bind(&cfg.uri)
                    .bind(&cfg.search_base)
                    .bind(&cfg.bind_dn)
                    .bind(&password)
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

    /// The configurations of several of the account's file systems, as
    /// DescribeFileSystems shows them (never with a password).
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

/// The configuration of a file system with its password opened, without
/// account scoping (for the metadata service, which has already resolved
/// the mount target).
pub async fn ldap_config_of(
    store: &crate::Store,
    secrets: &SecretBox,
    fs_id: &str,
) -> Result<Option<LdapConfig>> {
    let row = sqlx::query(
        "SELECT uri, search_base, bind_dn, bind_password FROM ldap_configs WHERE fs_id = $1",
    )
    .bind(fs_id)
    .fetch_optional(&store.pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let mut cfg = config_from_row(&r)?;
    if let Some(stored) = r.try_get::<Option<String>, _>("bind_password")? {
        let plain = secrets.open(&ldap_password_context(fs_id), &stored)?;
        cfg.bind_password = Some(BindPassword::new(plain));
    }
    Ok(Some(cfg))
}

impl ControlPlane {
    /// Seals bind passwords still stored in plaintext (none are written so
    /// today; this keeps rows written by hand or by an older build safe).
    pub(crate) async fn seal_plaintext_ldap_passwords(&self) -> Result<usize> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT fs_id, bind_password FROM ldap_configs WHERE bind_password IS NOT NULL",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let mut sealed = 0;
        for (fs_id, stored) in rows.iter().filter(|(_, s)| !is_sealed(s)) {
            sqlx::query("UPDATE ldap_configs SET bind_password = $1 WHERE fs_id = $2 AND bind_password = $3")
                .bind(self.secrets.seal(&ldap_password_context(fs_id), stored)?)
                .bind(fs_id)
                .bind(stored)
                .execute(&self.store.pool)
                .await?;
            sealed += 1;
        }
        Ok(sealed)
    }
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
            bind_password: None,
        };
        assert!(validate(&c).is_ok());
        c.bind_password = Some(BindPassword::new("pw".into()));
        assert!(validate(&c).is_err(), "a password without a BindDN");
        c.bind_dn = "cn=reader,dc=example,dc=com".into();
        assert!(validate(&c).is_ok());
        c.search_base = " ".into();
        assert!(validate(&c).is_err());
        c.search_base = "x".repeat(2000);
        assert!(validate(&c).is_err());
    }
}
