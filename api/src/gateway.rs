//! The HTTP side of the gateway: one wrapper that authenticates, dispatches,
//! renders, logs and counts every call.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use cpfs_controlplane::ControlPlane;
use governor::DefaultKeyedRateLimiter;
use serde_json::Value;
use tracing::Instrument;

use crate::actions::bss::BSS_VERSION;
use crate::actions::{self, NAS_VERSION};
use crate::address_limit::{keyed_limiter, wait_from_now, FailedAuthLimit};
use crate::cluster_routes;
use crate::envelope::{error_body, format_of, header, is_bss, request_id};
use crate::error::ApiError;
use crate::keys::KeyCache;
use crate::layers::HttpLimits;
use crate::nonce::NonceCache;
use crate::params::{form_decode, Params};
use crate::render::{render_reply, Format, Reply};
use crate::signature::{self, RawRequest};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Sustained requests per second allowed per access key.
    pub rate_limit_per_key: u32,
    /// Requests a key may send at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// The secret data nodes present on their heartbeats (None: node
    /// traffic refused).
    pub cluster_token: Option<String>,
    /// Where clients reach the metadata service (told to `cpfs mount`).
    pub meta_address: String,
    /// Check signature timestamps and nonces against the machine's clock
    /// rather than the control plane's (which a test clock file may move
    /// through months while SDKs sign with the real time).
    pub signatures_use_wall_clock: bool,
    /// Failed authentications an address may make per second (a burst of
    /// five times that) before it is refused without being looked at.
    pub failed_auth_per_address: u32,
    /// Tower layers around every route: concurrency, deadline, body size.
    pub http: HttpLimits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 256 * 1024,
            rate_limit_per_key: 2_000,
            rate_limit_burst: 4_000,
            cluster_token: None,
            meta_address: String::new(),
            signatures_use_wall_clock: false,
            failed_auth_per_address: 20,
            http: HttpLimits::default(),
        }
    }
}

pub struct Gateway {
    pub cp: ControlPlane,
    pub(crate) config: GatewayConfig,
    nonces: NonceCache,
    keys: KeyCache,
    limiter: DefaultKeyedRateLimiter<String>,
    failed_auth: FailedAuthLimit,
    /// Calls answered, by action and code, and their latency (/metrics).
    metrics: crate::metrics::GatewayMetrics,
}

/// Who made a request, established by its signature.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub account_id: String,
    pub access_key_id: String,
    pub action: String,
    /// The API the action belongs to: NAS 2017-06-26 or BssOpenApi 2017-12-14.
    pub version: String,
    pub params: Params,
}

impl Gateway {
    pub fn new(cp: ControlPlane, config: GatewayConfig) -> Arc<Gateway> {
        let keys = KeyCache::default();
        Arc::new(Gateway {
            metrics: crate::metrics::GatewayMetrics::new(keys.queries.clone()),
            cp,
            limiter: keyed_limiter(config.rate_limit_per_key, config.rate_limit_burst),
            failed_auth: FailedAuthLimit::new(
                config.failed_auth_per_address,
                config.failed_auth_per_address.saturating_mul(5),
            ),
            config,
            nonces: NonceCache::default(),
            keys,
        })
    }

    fn count(&self, action: &str, code: &str, took: std::time::Duration) {
        // Unknown action names are folded so callers cannot grow the map.
        let action = if actions::SUPPORTED.contains(&action)
            || actions::NOT_YET_SUPPORTED.contains(&action)
            || actions::bss::SUPPORTED.contains(&action)
        {
            action
        } else {
            "other"
        };
        self.metrics.answered(action, code, took);
    }

    /// Authenticates a request whose parameters are already merged.
    async fn authenticate(
        &self,
        raw: &RawRequest<'_>,
        params: Params,
    ) -> Result<VerifiedRequest, ApiError> {
        let claim = signature::claim(raw)?;
        let key = self.keys.get(&self.cp, &claim.access_key_id).await?;
        claim.verify(&key.secret)?;
        let now = if self.config.signatures_use_wall_clock {
            cpfs_controlplane::Clock::now_unix(&cpfs_controlplane::SystemClock)
        } else {
            self.cp.now()
        };
        claim.check_time(now)?;
        if let Err(not_until) = self.limiter.check_key(&key.access_key_id) {
            let wait = wait_from_now(&not_until);
            return Err(ApiError::Throttling {
                retry_after_ms: wait.as_millis().max(1) as u64,
            });
        }
        match self.nonces.insert(&key.access_key_id, &claim.nonce, now) {
            Ok(()) => {}
            Err(crate::nonce::Refused::Used) => return Err(ApiError::NonceUsed),
            Err(crate::nonce::Refused::Full { retry_after_secs }) => {
                tracing::warn!("the nonce cache is full; refusing signed calls until it ages");
                return Err(ApiError::Throttling {
                    retry_after_ms: (retry_after_secs as u64).saturating_mul(1000),
                });
            }
        }
        // Only signed inputs decide what runs. A V1 signature covers the
        // parameters but no header, so there `x-acs-action` and
        // `x-acs-version` are ignored; V3 requires both headers signed.
        let signed_header = |name: &str| match claim.version {
            signature::Version::V1 => None,
            signature::Version::V3 => header(raw.headers, name),
        };
        let action = params
            .opt("Action")
            .map(str::to_string)
            .or_else(|| signed_header("x-acs-action"))
            .ok_or_else(|| ApiError::MissingParameter("Action".into()))?;
        let version = params
            .opt("Version")
            .map(str::to_string)
            .or_else(|| signed_header("x-acs-version"))
            .ok_or_else(|| ApiError::MissingParameter("Version".into()))?;
        if version != NAS_VERSION && version != BSS_VERSION {
            return Err(ApiError::ApiNotFound(
                action.chars().take(64).collect(),
                version.chars().take(32).collect(),
            ));
        }
        Ok(VerifiedRequest {
            account_id: key.account_id,
            access_key_id: key.access_key_id,
            action,
            version,
            params,
        })
    }

    /// The `/metrics` exposition: this gateway's series and the
    /// cluster's, read now.
    async fn metrics_text(&self) -> Result<String, cpfs_controlplane::Error> {
        let snapshot = crate::metrics::ClusterSnapshot {
            nodes: self.cp.nodes().await?,
            usage: self.cp.node_usage().await?,
            meta_servers: self.cp.meta_servers().await?,
            reports: self.cp.telemetry.snapshot(),
            chain_version: self.cp.chain_table().await?.version,
            loops: self.cp.liveness.report().1,
        };
        crate::metrics::render(&self.metrics, snapshot)
            .map_err(|e| cpfs_controlplane::Error::Internal(e.to_string()))
    }
}

/// The gateway's routes (signed calls, health, metrics, the cluster's
/// routes) without the admin API, inside the HTTP layers.
pub fn router(gw: Arc<Gateway>) -> Router {
    app(gw, None)
}

/// Every route of the API port, the admin API included when given, inside
/// the HTTP layers (`layers.rs`). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so that failed
/// authentication is limited per address.
pub fn app(gw: Arc<Gateway>, admin: Option<Arc<crate::admin::AdminState>>) -> Router {
    let cluster = cluster_routes::router(cluster_routes::Cluster {
        cp: gw.cp.clone(),
        cluster_token: gw.config.cluster_token.clone(),
        meta_address: gw.config.meta_address.clone(),
    });
    let limits = gw.config.http.clone();
    let gw_endpoint = gw.cp.region.endpoint.clone();
    let mut routes = Router::new()
        .route("/", any(rpc))
        .route("/healthz", get(healthz))
        .with_state(gw.clone())
        .merge(cluster)
        // Static files: the page signs its API calls like any client.
        .merge(cpfs_console::router());
    if let Some(admin) = admin {
        // Every tenant's counters: for the operator only, behind the
        // metrics or the admin token (without an admin API there is no
        // /metrics).
        let metrics = Router::new().route("/metrics", get(metrics)).with_state(gw);
        routes = routes
            .merge(crate::admin::require_metrics_token(metrics, admin.clone()))
            .merge(crate::admin::router(admin));
    }
    crate::layers::apply(routes, &limits, &gw_endpoint)
}

/// 200 while every background loop of the process finishes its passes,
/// 503 when one has stopped; the body lists each loop.
async fn healthz(State(gw): State<Arc<Gateway>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (alive, loops) = gw.cp.liveness.report();
    let status = if alive {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "Status": if alive { "ok" } else { "degraded" },
        "Loops": loops,
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match gw.metrics_text().await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics could not be read");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "metrics could not be read from the store; try again\n",
            )
                .into_response()
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// Errors of [`Gateway::authenticate`] raised before the caller proved a
/// key: what the per-address limit on failed authentication counts.
fn proves_no_key(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::IncompleteSignature(_)
            | ApiError::InvalidSignatureMethod(_)
            | ApiError::SignatureDoesNotMatch(_)
            | ApiError::AccessKeyNotFound
            | ApiError::AccessKeyInactive
            | ApiError::TimestampFormat(_)
            | ApiError::TimestampExpired(_)
            | ApiError::NonceUsed
    )
}

async fn rpc(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let id = request_id();
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let mut format = Format::Json;
    let mut action = String::new();
    // BssOpenApi replies (and errors) have their own envelope; known before
    // authentication so that even a refused call answers in its shape.
    let query = form_decode(parts.uri.query().unwrap_or(""));
    // Before anything can fail: the query and headers already say whether
    // this is a BssOpenApi call (a form body may say so too, below).
    let mut bss = is_bss(&query, &parts.headers);
    let outcome: Result<Reply, ApiError> = async {
        if let Some(ip) = peer {
            gw.failed_auth
                .admit(ip, Instant::now())
                .map_err(|wait| ApiError::Throttling {
                    retry_after_ms: wait.as_millis().max(1) as u64,
                })?;
        }
        if parts.method != Method::GET && parts.method != Method::POST {
            return Err(ApiError::UnsupportedHttpMethod(parts.method.to_string()));
        }
        let body = axum::body::to_bytes(body, gw.config.max_body_bytes)
            .await
            .map_err(|_| ApiError::BodyTooLarge(gw.config.max_body_bytes))?;
        let form = if is_form(&parts.headers) && !body.is_empty() {
            let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("Body", "the form body is not UTF-8"))?;
            form_decode(text)
        } else {
            Vec::new()
        };
        let merged: Vec<(String, String)> = query.iter().chain(form.iter()).cloned().collect();
        bss = is_bss(&merged, &parts.headers);
        format = format_of(&merged)?;
        action = merged
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .or_else(|| header(&parts.headers, "x-acs-action"))
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        let params = Params::from_pairs(merged)?;
        let raw = RawRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            body: &body,
            query: &query,
            form: &form,
        };
        let verified = match gw.authenticate(&raw, params).await {
            Ok(v) => v,
            Err(e) => {
                // Only a request that proved no key counts against its
                // address; a throttled key, or a verified call that lacks
                // Action or Version, did authenticate.
                if let (Some(ip), true) = (peer, proves_no_key(&e)) {
                    gw.failed_auth.failed(ip, Instant::now());
                }
                return Err(e);
            }
        };
        let span = tracing::debug_span!("call", request_id = %id, action = %verified.action, access_key_id = %verified.access_key_id);
        let command =
            actions::parse_versioned(&verified.version, &verified.action, &verified.params)?;
        // In a task of its own: a client that hangs up must not cancel the
        // action halfway through a database transaction.
        let cp = gw.cp.clone();
        let account = verified.account_id.clone();
        tokio::spawn(async move { actions::execute(&cp, &account, command).await }.instrument(span))
            .await
            .unwrap_or_else(|e| {
                Err(ApiError::ControlPlane(cpfs_controlplane::Error::Internal(
                    e.to_string(),
                )))
            })
    }
    .await;

    let (status, code, mut reply, root) = match outcome {
        Ok(reply) => (
            StatusCode::OK,
            "OK".to_string(),
            reply,
            format!("{action}Response"),
        ),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(request_id = %id, action = %action, error = %e, "request failed");
            } else {
                tracing::info!(request_id = %id, action = %action, code = %e.code(), message = %e, "request refused");
            }
            let m = error_body(bss, &gw.cp.region.endpoint, &e.code(), &e.public_message());
            let retry = match e {
                ApiError::Throttling { retry_after_ms } => Some(retry_after_ms),
                _ => None,
            };
            let mut resp_body = m;
            if let Some(ms) = retry {
                resp_body.insert("RetryAfterMs".into(), Value::from(ms));
            }
            (
                status,
                e.code(),
                Reply::from(resp_body),
                "Error".to_string(),
            )
        }
    };
    reply
        .body
        .insert("RequestId".into(), Value::String(id.clone()));
    let text = render_reply(format, &root, &reply);
    let body = reply.body;
    gw.count(&action, &code, started.elapsed());
    tracing::debug!(request_id = %id, action = %action, status = status.as_u16(), code = %code, micros = started.elapsed().as_micros() as u64, "request done");
    let mut resp = (status, text).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-acs-request-id", v);
    }
    if let Some(ms) = body.get("RetryAfterMs").and_then(Value::as_u64) {
        if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
            h.insert("x-acs-retry-after", v);
        }
    }
    resp
}
