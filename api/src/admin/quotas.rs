//! `cpfs fileset list | create | quota | delete` and `cpfs quota list |
//! set | cancel`: a file system's filesets and user and group quotas for
//! the operator, by file system id alone (the account is the file
//! system's), through the same control-plane operations as the NAS API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use cpfs_controlplane::filesets::{Fileset, FilesetChange, NewFileset};
use cpfs_controlplane::user_quotas::{UserQuota, UserType, MAX_ID};
use serde_json::json;

use super::{body, ok, AdminResult, AdminState};

fn fileset_json(f: &Fileset) -> serde_json::Value {
    json!({
        "FsetId": f.id,
        "FileSystemId": f.fs_id,
        "FileSystemPath": f.path,
        "Description": f.description,
        "Status": f.status,
        "DeletionProtection": f.deletion_protection,
        "SpaceUsage": f.used_bytes,
        "FileCountUsage": f.files,
        "SizeLimit": f.size_limit,
        "FileCountLimit": f.file_limit,
    })
}

pub async fn list(State(s): State<Arc<AdminState>>, Path(fs_id): Path<String>) -> AdminResult {
    let account = s.cp.file_system_account(&fs_id).await?;
    let list = s.cp.filesets(&account, &fs_id).await?;
    ok(json!(list.iter().map(fileset_json).collect::<Vec<_>>()))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Create {
    path: String,
    description: Option<String>,
    #[serde(default)]
    deletion_protection: bool,
    size_limit: Option<u64>,
    file_count_limit: Option<u64>,
}

pub async fn create(
    State(s): State<Arc<AdminState>>,
    Path(fs_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let req: Create = body(&bytes)?;
    let account = s.cp.file_system_account(&fs_id).await?;
    let id =
        s.cp.create_fileset(
            &account,
            NewFileset {
                fs_id,
                path: req.path,
                description: req.description,
                deletion_protection: req.deletion_protection,
                size_limit: req.size_limit,
                file_limit: req.file_count_limit,
                dry_run: false,
                client_token: None,
            },
        )
        .await?;
    ok(json!({ "FsetId": id }))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Quota {
    size_limit: Option<u64>,
    file_count_limit: Option<u64>,
    /// Removes both limits.
    #[serde(default)]
    cancel: bool,
}

pub async fn quota(
    State(s): State<Arc<AdminState>>,
    Path((fs_id, fset_id)): Path<(String, String)>,
    bytes: Bytes,
) -> AdminResult {
    let req: Quota = body(&bytes)?;
    let account = s.cp.file_system_account(&fs_id).await?;
    let change = if req.cancel {
        FilesetChange::CancelQuota
    } else {
        FilesetChange::SetQuota {
            size_limit: req.size_limit,
            file_limit: req.file_count_limit,
        }
    };
    s.cp.change_fileset(&account, &fs_id, &fset_id, change, false, None)
        .await?;
    let f = s.cp.fileset(&account, &fs_id, &fset_id).await?;
    ok(fileset_json(&f))
}

pub async fn delete(
    State(s): State<Arc<AdminState>>,
    Path((fs_id, fset_id)): Path<(String, String)>,
) -> AdminResult {
    let account = s.cp.file_system_account(&fs_id).await?;
    s.cp.change_fileset(
        &account,
        &fs_id,
        &fset_id,
        FilesetChange::Delete,
        false,
        None,
    )
    .await?;
    ok(json!({}))
}

fn owner(user_type: &str, user_id: u32) -> Result<(UserType, u32), super::AdminError> {
    let t = UserType::parse(user_type)
        .ok_or_else(|| super::AdminError::Invalid("UserType must be Uid or Gid".into()))?;
    if user_id > MAX_ID {
        return Err(super::AdminError::Invalid(format!(
            "UserId must be at most {MAX_ID}"
        )));
    }
    Ok((t, user_id))
}

fn user_quota_json(q: &UserQuota) -> serde_json::Value {
    json!({
        "UserType": q.user_type.as_str(),
        "UserId": q.user_id,
        "SizeLimit": q.size_limit,
        "FileCountLimit": q.file_limit,
        "SizeReal": q.used_bytes,
        "FileCountReal": q.files,
    })
}

/// `cpfs quota list`: every user and group quota of the file system.
pub async fn user_quotas(
    State(s): State<Arc<AdminState>>,
    Path(fs_id): Path<String>,
) -> AdminResult {
    let account = s.cp.file_system_account(&fs_id).await?;
    let list = s.cp.user_quotas(&account, &fs_id, None).await?;
    ok(json!(list.iter().map(user_quota_json).collect::<Vec<_>>()))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SetUserQuota {
    user_type: String,
    user_id: u32,
    size_limit: Option<u64>,
    file_count_limit: Option<u64>,
    /// Removes the owner's limits.
    #[serde(default)]
    cancel: bool,
}

/// `cpfs quota set | cancel`.
pub async fn set_user_quota(
    State(s): State<Arc<AdminState>>,
    Path(fs_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let req: SetUserQuota = body(&bytes)?;
    let who = owner(&req.user_type, req.user_id)?;
    let account = s.cp.file_system_account(&fs_id).await?;
    if req.cancel {
        s.cp.cancel_user_quota(&account, &fs_id, who).await?;
        return ok(json!({}));
    }
    s.cp.set_user_quota(&account, &fs_id, who, req.size_limit, req.file_count_limit)
        .await?;
    let list =
        s.cp.user_quotas(&account, &fs_id, Some((who.0, Some(who.1))))
            .await?;
    ok(json!(list.iter().map(user_quota_json).collect::<Vec<_>>()))
}
