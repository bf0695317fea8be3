//! Signature V1: `HMAC-SHA1(secret + "&", METHOD&%2F&E(sorted params))`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{Claim, RawRequest, Version};
use crate::error::ApiError;
use crate::percent;

fn param<'a>(req: &'a RawRequest<'_>, name: &str) -> Option<&'a str> {
    req.query
        .iter()
        .chain(req.form.iter())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(req: &'a RawRequest<'_>, name: &str) -> Result<&'a str, ApiError> {
    param(req, name).filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::IncompleteSignature(format!(
            "The request signature does not conform to Aliyun standards: {name} is missing."
        ))
    })
}

/// The canonicalized query string: every parameter but `Signature`, sorted
/// by name in byte order, each side percent-encoded.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().filter(|(k, _)| *k != "Signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn string_to_sign(method: &str, params: &[(&str, &str)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent::encode("/"),
        percent::encode(&canonical_query(params))
    )
}

/// Base64 of HMAC-SHA1 keyed with `secret + "&"`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let key = format!("{secret}&");
    let mut mac = match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn claim(req: &RawRequest<'_>) -> Result<Claim, ApiError> {
    let access_key_id = required(req, "AccessKeyId")?;
    let signature = required(req, "Signature")?;
    let method = required(req, "SignatureMethod")?;
    if method != "HMAC-SHA1" {
        return Err(ApiError::InvalidSignatureMethod(
            method.chars().take(32).collect(),
        ));
    }
    if let Some(v) = param(req, "SignatureVersion") {
        if v != "1.0" {
            return Err(ApiError::IncompleteSignature(format!(
                "SignatureVersion {} is not supported; use 1.0",
                v.chars().take(16).collect::<String>()
            )));
        }
    }
    let nonce = required(req, "SignatureNonce")?;
    let timestamp = required(req, "Timestamp")?;
    let all: Vec<(&str, &str)> = req
        .query
        .iter()
        .chain(req.form.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(Claim {
        version: Version::V1,
        access_key_id: access_key_id.to_string(),
        timestamp: timestamp.to_string(),
        nonce: nonce.to_string(),
        provided_signature: signature.to_string(),
        string_to_sign: string_to_sign(req.method, &all),
    })
}
