//! Signature V3 (`ACS3-HMAC-SHA256`): a canonical request over the method,
//! path, URL query, the headers the client lists in SignedHeaders, and the
//! SHA-256 of the body.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{Claim, RawRequest, Version};
use crate::error::ApiError;
use crate::percent;

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Headers a V3 request must sign, or a replay could change them.
const MUST_SIGN: &[&str] = &[
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

fn incomplete(what: &str) -> ApiError {
    ApiError::IncompleteSignature(format!(
        "The request signature does not conform to Aliyun standards: {what}."
    ))
}

/// The parts of `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization {
    pub credential: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

pub fn parse_authorization(value: &str) -> Result<Authorization, ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| incomplete("only ACS3-HMAC-SHA256 is supported"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.trim().split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(
                v.split(';')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>(),
            );
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v.to_string());
        }
    }
    match (credential, signed, signature) {
        (Some(c), Some(h), Some(s)) if !c.is_empty() && !s.is_empty() => Ok(Authorization {
            credential: c,
            signed_headers: h,
            signature: s,
        }),
        _ => Err(incomplete(
            "Authorization needs Credential, SignedHeaders and Signature",
        )),
    }
}

pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = query.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, name: &str) -> Result<String, ApiError> {
    let mut values: Vec<String> = Vec::new();
    for v in headers.get_all(name) {
        let s = std::str::from_utf8(v.as_bytes())
            .map_err(|_| incomplete("a signed header is not UTF-8"))?;
        values.push(s.trim().to_string());
    }
    if values.is_empty() {
        return Err(incomplete(&format!("signed header {name} is missing")));
    }
    values.sort();
    Ok(values.join(","))
}

pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    signed_headers: &[String],
    hashed_payload: &str,
) -> Result<String, ApiError> {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&header_value(headers, name)?);
        canonical_headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        canonical_query(query),
        canonical_headers,
        signed_headers.join(";"),
        hashed_payload
    ))
}

pub fn string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Lower-case hex HMAC-SHA256 keyed with the secret as is.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn claim(req: &RawRequest<'_>) -> Result<Claim, ApiError> {
    let auth_value = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("Authorization is not readable"))?;
    let auth = parse_authorization(auth_value)?;
    for needed in MUST_SIGN {
        if !auth.signed_headers.iter().any(|h| h == needed) {
            return Err(incomplete(&format!("{needed} must be a signed header")));
        }
    }
    if req.headers.contains_key("content-type")
        && !auth.signed_headers.iter().any(|h| h == "content-type")
    {
        return Err(incomplete("content-type must be a signed header"));
    }
    let hashed_payload = hex::encode(Sha256::digest(req.body));
    let claimed_hash = header_value(req.headers, "x-acs-content-sha256")?;
    if !claimed_hash.eq_ignore_ascii_case(&hashed_payload) {
        return Err(ApiError::SignatureDoesNotMatch(format!(
            "x-acs-content-sha256 does not match the body; body sha256 is {hashed_payload}"
        )));
    }
    let canonical = canonical_request(
        req.method,
        req.path,
        req.query,
        req.headers,
        &auth.signed_headers,
        &hashed_payload,
    )?;
    Ok(Claim {
        version: Version::V3,
        access_key_id: auth.credential,
        timestamp: header_value(req.headers, "x-acs-date")?,
        nonce: header_value(req.headers, "x-acs-signature-nonce")?,
        provided_signature: auth.signature.to_ascii_lowercase(),
        string_to_sign: string_to_sign(&canonical),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization_with_spaces() {
        let a = parse_authorization(
            "ACS3-HMAC-SHA256 Credential=AK, SignedHeaders=host;x-acs-date, Signature=ab",
        )
        .unwrap();
        assert_eq!(a.credential, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-acs-date"]);
        assert_eq!(a.signature, "ab");
        assert!(parse_authorization("ACS3-HMAC-SHA256 Credential=AK").is_err());
        assert!(
            parse_authorization("ACS3-RSA-SHA256 Credential=AK,SignedHeaders=h,Signature=s")
                .is_err()
        );
    }
}
