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

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
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

/// The layers above, around every route of `router`.
pub fn apply(router: Router, limits: &HttpLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
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
}
