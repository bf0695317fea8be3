//! What every reply of the signed API shares, decided before the request
//! is authenticated or even read: its id, whether it is a BssOpenApi call
//! (which has an envelope of its own, with `Success`), the format asked
//! for, and the body of an error. The gateway and the HTTP layers both
//! answer in it.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::actions::bss::BSS_VERSION;
use crate::actions::{self, NAS_VERSION};
use crate::error::ApiError;
use crate::render::Format;

/// A header's value, when present, text and not empty.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A fresh RequestId.
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_ascii_uppercase()
}

/// Whether a call is meant for the BssOpenApi: a Version (any of them, when
/// a malformed call repeats it; the header for V3) names it, or none names
/// the NAS API and the Action is a BSS action.
pub(crate) fn is_bss(pairs: &[(String, String)], headers: &HeaderMap) -> bool {
    let mut versions: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "Version")
        .map(|(_, v)| v.clone())
        .collect();
    versions.extend(header(headers, "x-acs-version"));
    if versions.iter().any(|v| v == BSS_VERSION) {
        return true;
    }
    let mut actions_named = pairs
        .iter()
        .filter(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .chain(header(headers, "x-acs-action"));
    !versions.iter().any(|v| v == NAS_VERSION)
        && actions_named.any(|a| actions::bss::SUPPORTED.contains(&a.as_str()))
}

/// `Format` from the merged parameters, before anything else can fail, so
/// that even errors come back in the format asked for.
pub(crate) fn format_of(pairs: &[(String, String)]) -> Result<Format, ApiError> {
    match pairs
        .iter()
        .find(|(k, _)| k == "Format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("") => Ok(Format::Json),
        Some(f) if f.eq_ignore_ascii_case("json") => Ok(Format::Json),
        Some(f) if f.eq_ignore_ascii_case("xml") => Ok(Format::Xml),
        Some(f) => Err(ApiError::InvalidFormat(f.chars().take(16).collect())),
    }
}

/// The body of an error reply: the NAS envelope, with `Success: false` in
/// a BssOpenApi call's (the caller adds the RequestId).
pub(crate) fn error_body(
    bss: bool,
    host_id: &str,
    code: &str,
    message: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    if bss {
        m.insert("Success".into(), Value::Bool(false));
    }
    m.insert("HostId".into(), Value::String(host_id.to_string()));
    m.insert("Code".into(), Value::String(code.to_string()));
    m.insert("Message".into(), Value::String(message.to_string()));
    m.insert("Recommend".into(), Value::String(String::new()));
    m
}
