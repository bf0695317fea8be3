//! `cpfs account create`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;

use super::{body, ok, AdminResult, AdminState};

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NewAccount {
    name: String,
}

/// Creates an account with one access key; the secret is in the answer
/// and nowhere else.
pub async fn create(State(s): State<Arc<AdminState>>, bytes: Bytes) -> AdminResult {
    let req: NewAccount = body(&bytes)?;
    let account = s.cp.create_account(&req.name, None).await?;
    ok(serde_json::to_value(&account).map_err(|_| super::AdminError::Internal)?)
}
