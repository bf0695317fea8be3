//! The operator's API on the API port: `cpfs account|node|billing` call
//! these routes instead of opening the database, so a CLI of any version
//! works against a running server through one versioned interface, and
//! only `cpfs serve` ever touches (or migrates) the store.
//!
//! Every route needs `Authorization: Bearer <admin token>` (the token `cpfs
//! serve` keeps in `DATA_DIR/admin-token`, or `CPFS_ADMIN_TOKEN`). The token
//! is checked in constant time before the body is read or any query runs.
//! It is not the cluster token: a data node holds that one and must not be
//! able to create accounts.

mod accounts;
mod billing;
mod clients;
mod nodes;
mod quotas;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cpfs_billing::Billing;
use cpfs_controlplane::ControlPlane;
use subtle::ConstantTimeEq;

/// Where the routes live; a later incompatible shape gets `/admin/v2`.
pub const PREFIX: &str = "/admin/v1";
/// Admin requests are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminState {
    pub cp: ControlPlane,
    pub billing: Arc<Billing>,
    token: String,
    /// A token that opens `/metrics` and nothing else, for a Prometheus
    /// server that should not hold the admin token.
    metrics_token: Option<String>,
}

impl AdminState {
    /// `token` must be non-empty; an empty one would let anyone in (an
    /// empty metrics token is no token).
    pub fn new(
        cp: ControlPlane,
        billing: Arc<Billing>,
        token: String,
        metrics_token: Option<String>,
    ) -> Option<Arc<Self>> {
        (!token.is_empty()).then(|| {
            Arc::new(AdminState {
                cp,
                billing,
                token,
                metrics_token: metrics_token.filter(|t| !t.is_empty()),
            })
        })
    }
}

/// An admin call's failure, as `{"Code": ..., "Message": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Details go to the server's log, not to the caller.
    #[error("internal error; the server log has the details")]
    Internal,
}

impl From<cpfs_controlplane::Error> for AdminError {
    fn from(e: cpfs_controlplane::Error) -> Self {
        use cpfs_controlplane::Error as E;
        match e {
            E::NotFound { .. } => AdminError::NotFound(e.to_string()),
            E::InvalidParameter { .. } => AdminError::Invalid(e.to_string()),
            E::AlreadyExists { .. } | E::InvalidStatus { .. } | E::Denied { .. } => {
                AdminError::Conflict(e.to_string())
            }
            E::Unavailable(_) | E::Database(_) | E::Store(_) | E::Internal(_) => {
                tracing::error!(error = %e, "admin call failed");
                AdminError::Internal
            }
        }
    }
}

impl From<cpfs_billing::BillingError> for AdminError {
    fn from(e: cpfs_billing::BillingError) -> Self {
        use cpfs_billing::BillingError as E;
        match e {
            E::ControlPlane(e) => e.into(),
            E::InvalidNumber(_) | E::Invalid { .. } => AdminError::Invalid(e.to_string()),
            E::PriceBook(_) => {
                tracing::error!(error = %e, "admin call failed");
                AdminError::Internal
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidParameter"),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            AdminError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        json(
            status,
            &serde_json::json!({"Code": code, "Message": self.to_string()}),
        )
    }
}

pub(crate) type AdminResult = Result<Response, AdminError>;

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(v: serde_json::Value) -> AdminResult {
    Ok(json(StatusCode::OK, &v))
}

/// Parses a JSON request body into `T`, naming what is wrong.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| AdminError::Invalid(format!("request body: {e}")))
}

async fn authenticate(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    admit(&state, request, next, false).await
}

/// The bearer token of a request, if any.
fn bearer(request: &Request) -> &[u8] {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default()
}

/// `/metrics` takes the metrics token or the admin token.
async fn authenticate_metrics(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    admit(&state, request, next, true).await
}

/// Runs `request` when its bearer token is the admin token (or, with
/// `metrics`, the metrics token), every comparison in constant time;
/// answers 401 otherwise.
async fn admit(state: &AdminState, request: Request, next: Next, metrics: bool) -> Response {
    let given = bearer(&request);
    let admin = bool::from(given.ct_eq(state.token.as_bytes()));
    let scrape = metrics
        && state
            .metrics_token
            .as_ref()
            .is_some_and(|t| bool::from(given.ct_eq(t.as_bytes())));
    if !(admin | scrape) {
        tracing::warn!(path = %request.uri().path(), "call with a missing or wrong admin or metrics token");
        return AdminError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// `routes` behind the metrics token or the admin token.
pub fn require_metrics_token(routes: Router, state: Arc<AdminState>) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(
        state,
        authenticate_metrics,
    ))
}

/// The admin routes, authenticated; merged into the gateway's router.
pub fn router(state: Arc<AdminState>) -> Router {
    let p = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(&p("/accounts"), post(accounts::create))
        .route(&p("/nodes"), get(nodes::list))
        .route(&p("/nodes/status"), get(nodes::status))
        .route(&p("/nodes/{id}/drain"), post(nodes::drain))
        .route(&p("/meta-servers"), get(nodes::meta_servers))
        .route(
            &p("/file-systems/{fs}/filesets"),
            get(quotas::list).post(quotas::create),
        )
        .route(
            &p("/file-systems/{fs}/filesets/{id}/quota"),
            post(quotas::quota),
        )
        .route(
            &p("/file-systems/{fs}/filesets/{id}"),
            axum::routing::delete(quotas::delete),
        )
        .route(&p("/file-systems/{fs}/clients"), get(clients::list))
        .route(&p("/file-systems/{fs}/clients/fence"), post(clients::fence))
        .route(
            &p("/file-systems/{fs}/user-quotas"),
            get(quotas::user_quotas).post(quotas::set_user_quota),
        )
        .route(&p("/billing/meter"), post(billing::meter))
        .route(&p("/billing/statements/{month}"), get(billing::statement))
        .route(
            &p("/billing/plans"),
            get(billing::plans).post(billing::add_plan),
        )
        .route(&p("/billing/renewals"), post(billing::renew))
        .route(&p("/billing/price-book"), get(billing::price_book))
        // Layers run outside in: the token is checked before the body
        // limit lets a body be read.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}
