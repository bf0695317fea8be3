//! The node's side of the heartbeat: report usage, take back the chain
//! table, dropped file systems and the lease. One HTTP client per node, so
//! heartbeats reuse their connection instead of opening one a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpfs_proto::heartbeat::{Heartbeat, HeartbeatReply, HEARTBEAT_PATH, TOKEN_HEADER};

use crate::config::NodeConfig;
use crate::server::Node;

/// Why a heartbeat failed: a refused token is fatal at registration, the
/// rest is retried.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("the control plane refused the cluster token")]
    Refused,
    #[error("control plane answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("control plane unreachable: {0}")]
    Transport(#[from] reqwest::Error),
}

/// One JSON call to the control plane with the cluster token: a refused
/// token and any other answer than success are told apart.
async fn post_json<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Req,
) -> Result<Resp, HeartbeatError> {
    let resp = http
        .post(url)
        .header(TOKEN_HEADER, token)
        .json(body)
        .send()
        .await?;
    match resp.status().as_u16() {
        200..=299 => Ok(resp.json().await?),
        401 => Err(HeartbeatError::Refused),
        status => Err(HeartbeatError::Status {
            status,
            body: resp.text().await.unwrap_or_default(),
        }),
    }
}

/// Asks the control plane for the chain stripes of files, for the chunk
/// format migration (`chunkstore::migrate`), with the cluster token.
pub struct LayoutClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl LayoutClient {
    pub fn new(cfg: &NodeConfig) -> Result<LayoutClient, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(LayoutClient {
            http,
            url: format!(
                "{}{}",
                cfg.controlplane.trim_end_matches('/'),
                cpfs_proto::heartbeat::CHUNK_LAYOUTS_PATH
            ),
            token: cfg.cluster_token.clone(),
        })
    }

    async fn ask(
        &self,
        req: &cpfs_proto::heartbeat::ChunkLayoutsRequest,
    ) -> Result<cpfs_proto::heartbeat::ChunkLayoutsReply, HeartbeatError> {
        post_json(&self.http, &self.url, &self.token, req).await
    }

    /// The chains of each of `inodes` the metadata service knows; retried
    /// while the control plane is unreachable or busy (a node migrating at
    /// start may come up before it), not when it refuses the token.
    pub async fn chains(
        &self,
        fs: String,
        inodes: Vec<u64>,
    ) -> Result<std::collections::BTreeMap<u64, Vec<u32>>, String> {
        let req = cpfs_proto::heartbeat::ChunkLayoutsRequest { fs, inodes };
        let mut delays =
            cpfs_runtime::retry::delays(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            match self.ask(&req).await {
                Ok(reply) => return Ok(reply.chains),
                Err(e @ HeartbeatError::Refused) => return Err(e.to_string()),
                Err(
                    e @ HeartbeatError::Status {
                        status: 400..=499, ..
                    },
                ) => return Err(e.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "asking for chunk layouts; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
                }
            }
        }
    }
}

/// Deadlines of one heartbeat: under the default lease (2.5 s). A longer
/// lease outlives a few failed heartbeats; they are sent every second.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Heartbeater {
    http: reqwest::Client,
    url: String,
    token: String,
    zone: String,
    capacity_bytes: u64,
    advertise: String,
}

impl Heartbeater {
    pub fn new(cfg: &NodeConfig, advertise: &str) -> Result<Heartbeater, String> {
        // A heartbeat answered after the lease it would renew has run out
        // renews nothing, and while one hangs the next is not sent: a
        // blackholed control plane costs a deadline, not TCP's retries,
        // and the first heartbeat after the link returns goes out at once.
        let http = reqwest::Client::builder()
            .connect_timeout(HEARTBEAT_CONNECT_TIMEOUT)
            .timeout(HEARTBEAT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(1))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Heartbeater {
            http,
            url: format!("{}{HEARTBEAT_PATH}", cfg.controlplane.trim_end_matches('/')),
            token: cfg.cluster_token.clone(),
            zone: cfg.zone.clone(),
            capacity_bytes: cfg.capacity_bytes,
            advertise: advertise.to_string(),
        })
    }

    async fn send(&self, hb: &Heartbeat) -> Result<HeartbeatReply, HeartbeatError> {
        post_json(&self.http, &self.url, &self.token, hb).await
    }

    /// Sends one heartbeat and applies the reply (table, drops, lease).
    pub async fn round(&self, node: &Arc<Node>) -> Result<(), HeartbeatError> {
        let version = node.chain_version().await;
        let hb = Heartbeat {
            id: node.id().to_string(),
            address: self.advertise.clone(),
            zone: self.zone.clone(),
            capacity_bytes: self.capacity_bytes,
            stats: node.stats(version),
            unreachable: node.unreachable_peers(),
        };
        let sent = Instant::now();
        let reply = self.send(&hb).await?;
        node.renew_lease(sent, reply.lease_ms);
        node.apply(reply).await;
        Ok(())
    }

    /// Heartbeats every `interval`, or at once when a request named a
    /// newer table, until the task is dropped. Not a periodic pass of the
    /// supervisor: a wake-up cuts the interval short, and a failed round is
    /// only logged (the lease lapses by itself if they keep failing).
    pub async fn run(self, node: Arc<Node>, interval: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = node.wake().notified() => {}
            }
            if let Err(e) = self.round(&node).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}
