//! The tower layers every HTTP request passes through before any handler,
//! outermost first:
//!
//! 1. a tracing span per request (method, path);
//! 2. a body limit: a larger declared body is refused with 413 before it is
//!    read, and a chunked one is cut off at the limit. Routes have tighter
//!    limits of their own (signed calls 256 KiB, admin 64 KiB); this one
//!    bounds the largest (heartbeats);
//! 3. load shedding: above `max_in_flight` requests in flight a request is
//!    answered 503 at once, so overload cannot queue without bound;
//! 4. a deadline: a request not answered within `request_timeout` gets 408
//!    and its work is dropped.
//!
//! Authentication and per-key or per-address rate limits happen inside
//! the routes, where the caller's identity is known.
//!
//! The replies these layers make themselves (503, 408, 413) are given the
//! signed API's error envelope on its route (`/`): a RequestId, the Code
//! and Message, and `Success: false` for a BssOpenApi call, so an SDK reads
//! them as it reads any other error ([`envelope`]).

use std::time::Duration;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

use crate::envelope;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(60),
            // The largest route body: a heartbeat (4 MiB) and its framing.
            max_body_bytes: (4 << 20) + 64 * 1024,
        }
    }
}

/// The layers above, around every route of `router`. `host_id` is what
/// error envelopes name as their HostId (the region's endpoint).
pub fn apply(router: Router, limits: &HttpLimits, host_id: &str) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(axum::middleware::from_fn_with_state(
                Arc::<str>::from(host_id),
                envelope,
            ))
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "application/json")],
                    r#"{"Code":"ServiceUnavailable","Message":"the server is overloaded; retry later"}"#,
                )
                    .into_response()
            }))
            .load_shed()
            // Global: `Router::layer` wraps each route on its own, and a
            // per-route limit would not bound the process.
            .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight.max(1)))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            )),
    )
}

/// Gives a reply that a layer made on the signed API's route the
/// envelope the gateway's own errors have. The gateway's replies carry
/// `x-acs-request-id`; a reply without one came from a layer.
async fn envelope(State(host_id): State<Arc<str>>, req: Request, next: Next) -> Response {
    if req.uri().path() != "/" {
        return next.run(req).await;
    }
    // Read before the request is consumed: only the query and headers
    // (the body may be what was refused).
    let query = crate::params::form_decode(req.uri().query().unwrap_or(""));
    let bss = envelope::is_bss(&query, req.headers());
    let format = envelope::format_of(&query).unwrap_or(crate::render::Format::Json);
    let resp = next.run(req).await;
    if resp.headers().contains_key("x-acs-request-id") {
        return resp;
    }
    let status = resp.status();
    let (code, message) = match status {
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "the server is overloaded; retry later",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "RequestTimeout",
            "the request was not answered in time; retry later",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "InvalidParameter.BodyTooLarge",
            "the request body is larger than the server accepts",
        ),
        _ => return resp,
    };
    let id = envelope::request_id();
    let mut body = envelope::error_body(bss, &host_id, code, message);
    body.insert("RequestId".into(), Value::String(id.clone()));
    let mut out = (status, crate::render::render(format, "Error", &body)).into_response();
    let h = out.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-acs-request-id", v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::{get, post};
    use std::sync::Arc;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(200),
            max_body_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn overload_is_shed_slow_requests_time_out_and_large_bodies_are_refused() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (r, e) = (release.clone(), entered.clone());
        let app = apply(
            Router::new()
                .route(
                    "/hold",
                    get(move || async move {
                        e.notify_one();
                        r.notified().await;
                        "done"
                    }),
                )
                .route("/never", get(std::future::pending::<&'static str>))
                .route("/ping", get(|| async { "pong" }))
                .route(
                    "/echo",
                    post(|b: axum::body::Bytes| async move { b.len().to_string() }),
                ),
            &limits(),
            "nas.test",
        );
        let get_req = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();

        // One request in flight: the next is answered 503 at once.
        let held = tokio::spawn(app.clone().oneshot(get_req("/hold")));
        entered.notified().await;
        let shed = app.clone().oneshot(get_req("/ping")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        let served = app.clone().oneshot(get_req("/ping")).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK, "the slot is free again");

        // A request past its deadline gets 408.
        let slow = app.clone().oneshot(get_req("/never")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);

        // A declared body over the limit is refused before it is read.
        let big = Request::post("/echo")
            .header("content-length", "4096")
            .body(Body::from(vec![0u8; 4096]))
            .unwrap();
        let refused = app.clone().oneshot(big).await.unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let small = Request::post("/echo")
            .body(Body::from(vec![0u8; 10]))
            .unwrap();
        assert_eq!(app.oneshot(small).await.unwrap().status(), StatusCode::OK);
    }

    async fn json(resp: axum::response::Response) -> (StatusCode, Option<String>, Value) {
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-acs-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, id, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn replies_the_layers_make_on_the_api_route_carry_the_envelope() {
        let app = apply(
            Router::new().route(
                "/",
                get(std::future::pending::<&'static str>)
                    .post(std::future::pending::<&'static str>),
            ),
            &limits(),
            "nas.test",
        );
        // A NAS call past its deadline.
        let nas = Request::get("/?Action=DescribeFileSystems&Version=2017-06-26")
            .body(Body::empty())
            .unwrap();
        let (status, id, body) = json(app.clone().oneshot(nas).await.unwrap()).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["Code"], "RequestTimeout");
        assert_eq!(body["HostId"], "nas.test");
        assert_eq!(Some(body["RequestId"].as_str().unwrap().to_string()), id);
        assert!(body.get("Success").is_none(), "{body}");

        // A BssOpenApi call has its own envelope, with Success.
        let bss = Request::get("/?Action=QueryBill&Version=2017-12-14")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = json(app.clone().oneshot(bss).await.unwrap()).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["Success"], false);
        assert!(body["RequestId"].is_string());

        // A body over the limit, refused before the handler.
        let big = Request::post("/?Action=QueryBill&Version=2017-12-14")
            .header("content-length", "4096")
            .body(Body::from(vec![0u8; 4096]))
            .unwrap();
        let (status, _, body) = json(app.clone().oneshot(big).await.unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["Code"], "InvalidParameter.BodyTooLarge");
        assert_eq!(body["Success"], false);

        // Other routes keep their own replies.
        let other = apply(
            Router::new().route("/healthz", get(std::future::pending::<&'static str>)),
            &limits(),
            "nas.test",
        );
        let resp = other
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(resp.headers().get("x-acs-request-id").is_none());
    }
}
