//! `cpfs client list | fence | unfence`: a file system's mounted and
//! fenced clients for the operator, by file system id alone.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use cpfs_controlplane::clock::format_utc;
use serde_json::json;

use super::{body, ok, AdminResult, AdminState};

/// Mounted clients (every mount target) and fenced addresses.
pub async fn list(State(s): State<Arc<AdminState>>, Path(fs_id): Path<String>) -> AdminResult {
    let account = s.cp.file_system_account(&fs_id).await?;
    let mounted = s.cp.mounted_clients(&account, &fs_id, None, None).await?;
    let fenced = s.cp.fenced_clients(&account, &fs_id, None).await?;
    ok(json!({
        "Mounted": mounted.iter().map(|c| json!({
            "ClientIP": c.client_ip,
            "SessionId": c.session_id.to_string(),
            "MountTargetDomain": c.domain,
            "AccessPointId": c.access_point,
            "MountTime": format_utc(c.mounted_at),
            "LastActiveTime": format_utc(c.last_active_at),
        })).collect::<Vec<_>>(),
        "Fenced": fenced.iter().map(|(ip, state)| json!({"ClientIP": ip, "State": state})).collect::<Vec<_>>(),
    }))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Fence {
    #[serde(rename = "ClientIP")]
    client_ip: String,
    /// Lifts the fence instead.
    #[serde(default)]
    remove: bool,
}

pub async fn fence(
    State(s): State<Arc<AdminState>>,
    Path(fs_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let req: Fence = body(&bytes)?;
    let account = s.cp.file_system_account(&fs_id).await?;
    if req.remove {
        s.cp.unfence_client(&account, &fs_id, &req.client_ip, None)
            .await?;
    } else {
        s.cp.fence_client(&account, &fs_id, &req.client_ip, None)
            .await?;
    }
    let fenced =
        s.cp.fenced_clients(&account, &fs_id, Some(&req.client_ip))
            .await?;
    ok(json!({
        "ClientIP": req.client_ip,
        "State": fenced.first().map_or("ACCEPTABLE", |(_, state)| *state),
    }))
}
