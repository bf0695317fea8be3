//! Request authentication: V1 (`HMAC-SHA1` over the sorted parameters) and
//! V3 (`ACS3-HMAC-SHA256` over a canonical request in the Authorization
//! header), exactly as the official SDKs compute them.
//!
//! `claim` reads who the caller says they are without trusting it;
//! `Claim::verify` recomputes the signature with the key's secret and
//! compares in constant time. The gateway then checks the time window and
//! the nonce.

pub mod v1;
pub mod v3;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;

/// The replay window either side of the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// One request as it arrived, the parts a signature covers.
pub struct RawRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Query pairs, form-decoded, in arrival order.
    pub query: &'a [(String, String)],
    /// Form-body pairs, form-decoded (empty when the body is not a form).
    pub form: &'a [(String, String)],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    V1,
    V3,
}

/// What the caller claims, before verification.
#[derive(Debug, Clone)]
pub struct Claim {
    pub version: Version,
    pub access_key_id: String,
    pub timestamp: String,
    pub nonce: String,
    provided_signature: String,
    /// Everything signed: the string the signature must be the HMAC of.
    string_to_sign: String,
}

impl Claim {
    /// Checks the signature with the key's secret, in constant time.
    pub fn verify(&self, secret: &str) -> Result<(), ApiError> {
        let expected = match self.version {
            Version::V1 => v1::sign(secret, &self.string_to_sign),
            Version::V3 => v3::sign(secret, &self.string_to_sign),
        };
        let ok: bool = expected
            .as_bytes()
            .ct_eq(self.provided_signature.as_bytes())
            .into();
        if ok {
            Ok(())
        } else {
            Err(ApiError::SignatureDoesNotMatch(self.string_to_sign.clone()))
        }
    }

    /// The signed time must be within 15 minutes of `now`.
    pub fn check_time(&self, now: i64) -> Result<(), ApiError> {
        let t = parse_timestamp(&self.timestamp)?;
        if (t - now).abs() > MAX_SKEW_SECS {
            return Err(ApiError::TimestampExpired(self.timestamp.clone()));
        }
        Ok(())
    }

    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ`; fractional seconds and offsets are tolerated.
pub fn parse_timestamp(s: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ApiError::TimestampFormat(s.chars().take(64).collect()))
}

/// Reads the claim from a request: V3 when the Authorization header says
/// so, else V1 from the parameters.
pub fn claim(req: &RawRequest<'_>) -> Result<Claim, ApiError> {
    match req.headers.get("authorization") {
        Some(h) if h.as_bytes().starts_with(b"ACS3-") => v3::claim(req),
        _ => v1::claim(req),
    }
}
