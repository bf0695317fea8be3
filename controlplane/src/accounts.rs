//! Accounts and their access keys.

use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::secrets::{access_key_context, is_sealed};
use crate::{ids, ControlPlane};

/// The access key the first start of `cpfs serve` creates.
pub const BOOTSTRAP_ACCOUNT: &str = "default";

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewAccount {
    pub account_id: String,
    pub access_key_id: String,
    pub access_key_secret: String,
}

/// What the gateway needs to verify a signature (the secret opened, in
/// memory only).
#[derive(Clone)]
pub struct AccessKey {
    pub access_key_id: String,
    pub account_id: String,
    pub secret: String,
    pub active: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    fn keys_changed(&self) {
        self.keys_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn seal_key_secret(&self, access_key_id: &str, secret: &str) -> Result<String> {
        Ok(self
            .secrets
            .seal(&access_key_context(access_key_id), secret)?)
    }

    /// Creates an account with one access key. `key` supplies the id and
    /// secret (from the operator's environment); otherwise both are generated.
    pub async fn create_account(
        &self,
        name: &str,
        key: Option<(String, String)>,
    ) -> Result<NewAccount> {
        validate_account_name(name)?;
        let (access_key_id, access_key_secret) =
            key.unwrap_or_else(|| (ids::access_key_id(), ids::access_key_secret()));
        if access_key_id.is_empty() || access_key_id.len() > 128 || access_key_secret.len() < 8 {
            return Err(Error::invalid(
                "AccessKey",
                "access key ids must be 1-128 characters and secrets at least 8",
            ));
        }
        let account_id = ids::account_id();
        let now = self.now();
        let mut tx = self.store.begin_write().await?;
        let exists = sqlx::query("SELECT id FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(Error::AlreadyExists {
                kind: ResourceKind::Account,
                id: name.to_string(),
            });
        }
        let key_taken = sqlx::query("SELECT id FROM access_keys WHERE id = $1")
            .bind(&access_key_id)
            .fetch_optional(&mut *tx)
            .await?;
        if key_taken.is_some() {
            return Err(Error::invalid(
                "AccessKeyId",
                "that access key id is already in use",
            ));
        }
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO access_keys (id, account_id, secret, status, created_at) VALUES ($1, $2, $3, 'Active', $4)",
        )
        .bind(&access_key_id)
        .bind(&account_id)
        .bind(self.seal_key_secret(&access_key_id, &access_key_secret)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.keys_changed();
        tracing::info!(account_id, name, access_key_id, "account created");
        Ok(NewAccount {
            account_id,
            access_key_id,
            access_key_secret,
        })
    }

    pub async fn account_exists(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT id FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.store.pool)
            .await?
            .is_some())
    }

    pub async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>> {
        let row =
            sqlx::query("SELECT id, account_id, secret, status FROM access_keys WHERE id = $1")
                .bind(access_key_id)
                .fetch_optional(&self.store.pool)
                .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            let stored: String = r.try_get("secret")?;
            let secret = self.secrets.open(&access_key_context(&id), &stored)?;
            Ok(AccessKey {
                access_key_id: id,
                account_id: r.try_get("account_id")?,
                secret,
                active: r.try_get::<String, _>("status")? == "Active",
            })
        })
        .transpose()
    }

    /// The ids of every access key (the gateway's answer to "does this key
    /// exist" without a query per unknown id).
    pub async fn access_key_ids(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM access_keys")
            .fetch_all(&self.store.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Seals the access-key secrets still stored in plaintext (rows from
    /// before sealing); run at start. Returns how many were sealed.
    pub async fn seal_plaintext_secrets(&self) -> Result<usize> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, secret FROM access_keys")
            .fetch_all(&self.store.pool)
            .await?;
        let mut sealed = 0;
        for (id, stored) in rows.iter().filter(|(_, s)| !is_sealed(s)) {
            // Only the plaintext it read is replaced: a concurrent change wins.
            sqlx::query("UPDATE access_keys SET secret = $1 WHERE id = $2 AND secret = $3")
                .bind(self.seal_key_secret(id, stored)?)
                .bind(id)
                .bind(stored)
                .execute(&self.store.pool)
                .await?;
            sealed += 1;
        }
        sealed += self.seal_plaintext_ldap_passwords().await?;
        if sealed > 0 {
            tracing::info!(sealed, "sealed secrets that were stored in plaintext");
        }
        Ok(sealed)
    }
}

fn validate_account_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "AccountName",
            "account names are 1-64 characters of letters, digits, '-', '_' and '.'",
        ))
    }
}

impl ControlPlane {
    /// Makes sure `access_key_id` exists for the named account (creating the
    /// account when missing). Used at start-up with the operator's
    /// `CPFS_ACCESS_KEY_ID` / `CPFS_ACCESS_KEY_SECRET`. Returns the new
    /// account when one was created.
    pub async fn ensure_access_key(
        &self,
        account_name: &str,
        access_key_id: &str,
        secret: &str,
    ) -> Result<Option<NewAccount>> {
        if let Some(existing) = self.access_key(access_key_id).await? {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(existing.secret.as_bytes(), secret.as_bytes()).into();
            if !same {
                sqlx::query("UPDATE access_keys SET secret = $1 WHERE id = $2")
                    .bind(self.seal_key_secret(access_key_id, secret)?)
                    .bind(access_key_id)
                    .execute(&self.store.pool)
                    .await?;
                tracing::info!(
                    access_key_id,
                    "access key secret replaced from the environment"
                );
            }
            return Ok(None);
        }
        let account: Option<(String,)> = sqlx::query_as("SELECT id FROM accounts WHERE name = $1")
            .bind(account_name)
            .fetch_optional(&self.store.pool)
            .await?;
        match account {
            None => Ok(Some(
                self.create_account(
                    account_name,
                    Some((access_key_id.to_string(), secret.to_string())),
                )
                .await?,
            )),
            Some((account_id,)) => {
                sqlx::query(
                    "INSERT INTO access_keys (id, account_id, secret, status, created_at) VALUES ($1, $2, $3, 'Active', $4)",
                )
                .bind(access_key_id)
                .bind(&account_id)
                .bind(self.seal_key_secret(access_key_id, secret)?)
                .bind(self.now())
                .execute(&self.store.pool)
                .await?;
                self.keys_changed();
                tracing::info!(
                    access_key_id,
                    account_id,
                    "access key added from the environment"
                );
                Ok(None)
            }
        }
    }
}
