//! Routes on the API port that serve the cluster rather than API callers:
//! data-node heartbeats (authenticated by the cluster token) and mount
//! discovery for `cpfs mount`. They carry no API signature, so they get a
//! state of their own with only what they need, not the gateway's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cpfs_controlplane::ControlPlane;
use cpfs_proto::heartbeat::{
    ChunkLayoutsReply, ChunkLayoutsRequest, Heartbeat, HeartbeatReply, MetaHeartbeat,
    CHUNK_LAYOUTS_PATH, HEARTBEAT_PATH, MAX_LAYOUT_INODES, META_HEARTBEAT_PATH, TOKEN_HEADER,
};
use subtle::ConstantTimeEq;

const MOUNT_PATH: &str = "/internal/v1/mount";
const MAX_HEARTBEAT: usize = 4 << 20;

pub(crate) struct Cluster {
    pub cp: ControlPlane,
    /// None: node traffic refused.
    pub cluster_token: Option<String>,
    /// Where clients reach the metadata service when no metadata server
    /// has an assignment yet (a start before the first heartbeat).
    pub meta_address: String,
}

/// The heartbeat and mount-discovery routes, ready to merge into the
/// gateway's router.
pub(crate) fn router(cluster: Cluster) -> Router {
    Router::new()
        .route(HEARTBEAT_PATH, post(heartbeat))
        .route(CHUNK_LAYOUTS_PATH, post(chunk_layouts))
        .route(META_HEARTBEAT_PATH, post(meta_heartbeat))
        .route(MOUNT_PATH, get(mount_info))
        .with_state(Arc::new(cluster))
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Checks the cluster token in constant time: the refusal to send when it
/// is missing or wrong.
fn refusal(cluster: &Cluster, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = cluster.cluster_token.as_deref() else {
        return Some(json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"Code": "NodesDisabled"}),
        ));
    };
    let given = headers
        .get(TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.as_bytes())) {
        tracing::warn!("a node presented a wrong cluster token");
        return Some(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"Code": "InvalidClusterToken"}),
        ));
    }
    None
}

/// A node's JSON request: the cluster token first, then at most `limit`
/// bytes of body (read only once the token is proven), then the parse.
/// The refusal to send when any of them fails.
async fn authenticated_json<T: serde::de::DeserializeOwned>(
    cluster: &Cluster,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    invalid_code: &str,
) -> Result<T, Response> {
    if let Some(refused) = refusal(cluster, headers) {
        return Err(refused);
    }
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"Code": "TooLarge"}),
        ));
    };
    serde_json::from_slice(&body).map_err(|e| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Code": invalid_code, "Message": e.to_string()}),
        )
    })
}

/// The chains of the files a node migrating its chunk files from format 1
/// found (`cpfs_node::chunkstore::migrate`).
async fn chunk_layouts(
    State(cluster): State<Arc<Cluster>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // A request is a list of inodes.
    let req: ChunkLayoutsRequest =
        match authenticated_json(&cluster, &headers, body, 64 * 1024, "InvalidRequest").await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    if req.inodes.len() > MAX_LAYOUT_INODES || req.fs.len() > 64 {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Code": "InvalidRequest", "Message": format!("at most {MAX_LAYOUT_INODES} inodes of one file system")}),
        );
    }
    match cluster.cp.file_chains(&req.fs, &req.inodes).await {
        Ok(chains) => match serde_json::to_value(ChunkLayoutsReply { chains }) {
            Ok(v) => json(StatusCode::OK, v),
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"Code": "InternalError"}),
            ),
        },
        Err(e) => {
            tracing::warn!(fs = %req.fs, error = %e, "chunk layouts not read");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"Code": "ServiceUnavailable"}),
            )
        }
    }
}

async fn heartbeat(
    State(cluster): State<Arc<Cluster>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let hb: Heartbeat =
        match authenticated_json(&cluster, &headers, body, MAX_HEARTBEAT, "InvalidHeartbeat").await
        {
            Ok(h) => h,
            Err(refused) => return refused,
        };
    // In a task of its own: a node that gives up waiting closes the
    // connection, and the handler future must not be dropped halfway
    // through the heartbeat's transaction.
    let cp = cluster.cp.clone();
    let id = hb.id.clone();
    let reply = tokio::spawn(async move {
        let chain_table = cp.node_heartbeat(&hb).await?;
        let dropped = cp.dropped_file_systems().await?;
        // Not worth a node's lease: without them nodes keep the last ones.
        let revoked = cp.capability_revocations().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "capability revocations unavailable");
            Vec::new()
        });
        // Nor this: without it nodes keep the last list.
        let full = cp
            .full_file_systems()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "file systems over capacity unknown"))
            .ok();
        // Not worth a node's lease either: without them a node keeps
        // probing the last ones it was given.
        let peers = cp.node_peers().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "peers to probe unavailable");
            Vec::new()
        });
        // Nor this: without it a node keeps its last shares.
        let qos = cp
            .qos_shares(&hb.id, &hb.stats.file_systems)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "QoS shares unavailable"))
            .ok();
        Ok::<_, cpfs_controlplane::Error>(HeartbeatReply {
            chain_table,
            dropped,
            lease_ms: cp.policy.lease_ms(),
            // Nodes refuse capabilities issued before these.
            revoked,
            full,
            peers,
            qos,
        })
    });
    let reply = match reply.await {
        Ok(r) => r,
        Err(e) => Err(cpfs_controlplane::Error::Internal(e.to_string())),
    };
    match reply {
        Ok(reply) => match serde_json::to_value(reply) {
            Ok(v) => json(StatusCode::OK, v),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"Code": "InternalError", "Message": e.to_string()}),
            ),
        },
        Err(e) => {
            tracing::warn!(node = %id, error = %e, "heartbeat not recorded");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"Code": "ServiceUnavailable"}),
            )
        }
    }
}

#[derive(serde::Deserialize)]
struct MountQuery {
    domain: String,
}

/// Where to find the metadata service for a mount target. The mount itself
/// is authorised by the metadata service.
async fn mount_info(State(cluster): State<Arc<Cluster>>, Query(q): Query<MountQuery>) -> Response {
    if q.domain.len() > 256 {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Code": "InvalidParameter.MountTargetDomain"}),
        );
    }
    // The server that owns the mount target's file system now; when none
    // does (yet), the default one, which answers "moved" until the
    // assignment is made and the client asks again.
    let address = match cluster.cp.meta_address_for(&q.domain).await {
        Ok(Some(a)) => a,
        Ok(None) => cluster.meta_address.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "metadata server of a mount target not read");
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"Code": "ServiceUnavailable"}),
            );
        }
    };
    json(
        StatusCode::OK,
        serde_json::json!({"MetaAddress": address, "MountTargetDomain": q.domain}),
    )
}

/// A metadata server's heartbeat: its lease and what it owns.
async fn meta_heartbeat(
    State(cluster): State<Arc<Cluster>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let hb: MetaHeartbeat =
        match authenticated_json(&cluster, &headers, body, 4096, "InvalidHeartbeat").await {
            Ok(h) => h,
            Err(refused) => return refused,
        };
    if hb.id.is_empty() || hb.id.len() > 64 || hb.address.len() > 256 {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Code": "InvalidHeartbeat", "Message": "id of 1-64 bytes, address of at most 256"}),
        );
    }
    // Its own task: a dropped connection must not cut the transaction.
    let cp = cluster.cp.clone();
    let reply = tokio::spawn(async move { cp.meta_heartbeat(&hb).await }).await;
    match reply {
        Ok(Ok(reply)) => match serde_json::to_value(reply) {
            Ok(v) => json(StatusCode::OK, v),
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"Code": "InternalError"}),
            ),
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metadata heartbeat not recorded");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"Code": "ServiceUnavailable"}),
            )
        }
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"Code": "InternalError"}),
        ),
    }
}
