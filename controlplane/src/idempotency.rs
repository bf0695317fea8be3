//! ClientToken: the same token on the same action returns the first result.

use sqlx::{Any, Transaction};

use crate::error::{Error, Result};

/// Longest ClientToken accepted (the API documents ASCII, at most 64).
pub const MAX_TOKEN_LEN: usize = 64;

pub fn validate_token(token: &str) -> Result<()> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.is_ascii() {
        return Err(Error::invalid(
            "ClientToken",
            "ClientToken must be 1-64 ASCII characters",
        ));
    }
    Ok(())
}

/// The stored response for a token, if the action already ran with it.
pub async fn lookup(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    action: &str,
    token: &str,
) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT response FROM idempotency_tokens WHERE account_id = $1 AND action = $2 AND token = $3",
    )
    .bind(account_id)
    .bind(action)
    .bind(token)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Records the response in the same transaction as the change it describes,
/// so a crash leaves either both or neither.
pub async fn record(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    action: &str,
    token: &str,
    response: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_tokens (account_id, action, token, response, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(account_id)
    .bind(action)
    .bind(token)
    .bind(response)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
