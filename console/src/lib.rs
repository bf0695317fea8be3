//! The web console: a single-page client of the public API, served by
//! `cpfs serve` at `/console`. Its files (`console/app/`, the vendored
//! front-end packages included) are embedded in the binary, so serving it
//! needs neither the source tree nor the network.
//!
//! The page signs every API call itself (WebCrypto) with the AccessKey the
//! user signs in with: it has no back door, and shows exactly what the API
//! allows that key. These routes only hand out static files.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "app/"]
struct Assets;

/// Scripts and styles from this origin only, no framing, no inline
/// script: a page that holds an AccessKey secret must not run anyone
/// else's code. (uPlot sizes its canvas through style attributes.)
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `/console` and every file under it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*path}",
            get(|axum::extract::Path(path): axum::extract::Path<String>| async move {
                asset(&path)
            }),
        )
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "no such file in the console\n").into_response();
    };
    let mut res = file.data.into_owned().into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary; revalidate rather than keep
    // an old page after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_packages_are_embedded() {
        for f in [
            "index.html",
            "app.js",
            "api.js",
            "style.css",
            "vendor/preact.module.js",
            "vendor/hooks.module.js",
            "vendor/htm.module.js",
            "vendor/uPlot.esm.js",
            "vendor/uPlot.min.css",
        ] {
            assert!(Assets::get(f).is_some(), "{f} is not embedded");
        }
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
        assert!(Assets::get("../Cargo.toml").is_none());
    }
}
