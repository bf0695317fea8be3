//! One error type for the gateway; every variant knows its Alibaba code and
//! HTTP status, so handlers only return `Err(..)`.

use cpfs_controlplane::error::{Error as CpError, ResourceKind};
use cpfs_controlplane::ldap::DirectoryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The input parameter \"{0}\" that is mandatory for processing this request is not supplied.")]
    MissingParameter(String),
    #[error("{message}")]
    InvalidParameter { name: String, message: String },
    #[error("The specified format \"{0}\" is not supported; use JSON or XML.")]
    InvalidFormat(String),
    #[error("The specified action \"{0}\" (version {1}) is not found.")]
    ApiNotFound(String, String),
    #[error(
        "The action \"{0}\" is part of the NAS API but is not supported by this CPFS deployment."
    )]
    NotSupported(String),
    #[error("The HTTP method {0} is not supported; use GET or POST.")]
    UnsupportedHttpMethod(String),
    #[error("{0}")]
    IncompleteSignature(String),
    #[error("The signature method \"{0}\" is not supported; use HMAC-SHA1.")]
    InvalidSignatureMethod(String),
    /// The message carries the server's string to sign after exactly one
    /// `:`; the core SDK parses it.
    #[error(
        "Specified signature is not matched with our calculation. server string to sign is:{0}"
    )]
    SignatureDoesNotMatch(String),
    #[error("Specified access key is not found.")]
    AccessKeyNotFound,
    #[error("Specified access key is disabled.")]
    AccessKeyInactive,
    #[error("The specified timestamp \"{0}\" is not in the format yyyy-MM-ddTHH:mm:ssZ.")]
    TimestampFormat(String),
    #[error("The specified timestamp \"{0}\" is more than 15 minutes away from the server time.")]
    TimestampExpired(String),
    #[error("The request signature nonce has been used.")]
    NonceUsed,
    #[error("Request was denied due to request throttling.")]
    Throttling { retry_after_ms: u64 },
    #[error("The request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    /// Create/ModifyLDAPConfig could not use the directory it was given.
    #[error("{0}")]
    Ldap(#[from] DirectoryError),
    #[error(transparent)]
    ControlPlane(#[from] CpError),
}

impl From<cpfs_billing::BillingError> for ApiError {
    fn from(e: cpfs_billing::BillingError) -> Self {
        use cpfs_billing::BillingError as B;
        match e {
            B::Invalid { name, message } => ApiError::InvalidParameter {
                name: name.to_string(),
                message,
            },
            B::ControlPlane(e) => ApiError::ControlPlane(e),
            other => ApiError::ControlPlane(CpError::Internal(other.to_string())),
        }
    }
}

impl ApiError {
    pub fn invalid(name: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidParameter {
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// The Alibaba error code.
    pub fn code(&self) -> String {
        use ApiError::*;
        match self {
            MissingParameter(_) => "MissingParameter".into(),
            InvalidParameter { name, .. } => format!("InvalidParameter.{name}"),
            InvalidFormat(_) => "InvalidParameter.Format".into(),
            ApiNotFound(..) => "InvalidApi.NotFound".into(),
            NotSupported(_) => "UnsupportedOperation".into(),
            UnsupportedHttpMethod(_) => "UnsupportedHTTPMethod".into(),
            IncompleteSignature(_) => "IncompleteSignature".into(),
            InvalidSignatureMethod(_) => "InvalidSignatureMethod".into(),
            SignatureDoesNotMatch(_) => "SignatureDoesNotMatch".into(),
            AccessKeyNotFound => "InvalidAccessKeyId.NotFound".into(),
            AccessKeyInactive => "InvalidAccessKeyId.Inactive".into(),
            TimestampFormat(_) => "InvalidTimeStamp.Format".into(),
            TimestampExpired(_) => "InvalidTimeStamp.Expired".into(),
            NonceUsed => "SignatureNonceUsed".into(),
            Throttling { .. } => "Throttling.User".into(),
            BodyTooLarge(_) => "InvalidParameter.BodyTooLarge".into(),
            Ldap(e) => match e {
                DirectoryError::BadUri(_) | DirectoryError::Forbidden(_) => "InvalidParameter.URI",
                DirectoryError::PasswordRequired(_) => "MissingParameter.BindPassword",
                DirectoryError::Unreachable { .. } => "InvalidLDAPConfig.Unreachable",
                DirectoryError::NoSuchBase { .. } => "InvalidParameter.SearchBase",
                DirectoryError::Search(_) => "InvalidLDAPConfig.SearchFailed",
            }
            .into(),
            ControlPlane(e) => match e {
                CpError::NotFound { kind, .. } => match kind {
                    ResourceKind::FileSystem => "InvalidFileSystem.NotFound",
                    ResourceKind::MountTarget => "InvalidMountTarget.NotFound",
                    ResourceKind::AccessGroup => "InvalidAccessGroup.NotFound",
                    ResourceKind::AccessRule => "InvalidAccessRule.NotFound",
                    ResourceKind::Account => "InvalidAccount.NotFound",
                    ResourceKind::Node => "InvalidNode.NotFound",
                    ResourceKind::LdapConfig => "InvalidLDAPConfig.NotFound",
                    ResourceKind::Fileset => "InvalidFsetId.NotFound",
                    ResourceKind::UserQuota => "InvalidUserQuota.NotFound",
                    ResourceKind::AccessPoint => "InvalidAccessPoint.NotFound",
                    ResourceKind::BlackListClient => "InvalidClientIP.NotFound",
                }
                .into(),
                CpError::InvalidParameter { name, .. } => format!("InvalidParameter.{name}"),
                CpError::AlreadyExists { kind, .. } => match kind {
                    ResourceKind::AccessGroup => "InvalidAccessGroup.AlreadyExists",
                    ResourceKind::Account => "InvalidAccount.AlreadyExists",
                    ResourceKind::LdapConfig => "InvalidLDAPConfig.AlreadyExists",
                    ResourceKind::Fileset => "InvalidFileset.AlreadyExists",
                    _ => "InvalidParameter.AlreadyExists",
                }
                .into(),
                CpError::InvalidStatus { kind, .. } => match kind {
                    ResourceKind::FileSystem => "InvalidFileSystemStatus.Ordering",
                    ResourceKind::MountTarget => "InvalidMountTargetStatus.Ordering",
                    ResourceKind::Fileset => "InvalidFilesetStatus.Ordering",
                    _ => "OperationDenied",
                }
                .into(),
                CpError::Denied { code, .. } => (*code).into(),
                CpError::Unavailable(_) => "ServiceUnavailable".into(),
                CpError::Database(_) | CpError::Store(_) | CpError::Internal(_) => {
                    "InternalError".into()
                }
            },
        }
    }

    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            ApiNotFound(..) | AccessKeyNotFound => 404,
            ControlPlane(CpError::NotFound { .. }) => 404,
            ControlPlane(CpError::InvalidStatus { .. } | CpError::Denied { .. }) => 403,
            ControlPlane(CpError::Unavailable(_)) => 503,
            BodyTooLarge(_) => 413,
            ControlPlane(CpError::Database(_) | CpError::Store(_) | CpError::Internal(_)) => 500,
            _ => 400,
        }
    }

    /// The text shown to the caller. Internal failures are not described
    /// (the log has them, under the same RequestId).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::ControlPlane(
                CpError::Database(_) | CpError::Store(_) | CpError::Internal(_),
            ) => "The request processing has failed due to some unknown error.".into(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes_and_statuses() {
        let e = ApiError::from(CpError::not_found(ResourceKind::FileSystem, "cpfs-1"));
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidFileSystem.NotFound", 404)
        );
        let e = ApiError::AccessKeyNotFound;
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidAccessKeyId.NotFound", 404)
        );
        let e = ApiError::from(CpError::invalid_status(ResourceKind::FileSystem, "x"));
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidFileSystemStatus.Ordering", 403)
        );
        let e = ApiError::from(CpError::invalid("Capacity", "bad"));
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InvalidParameter.Capacity", 400)
        );
        assert_eq!(ApiError::NonceUsed.code(), "SignatureNonceUsed");
        let e = ApiError::from(CpError::Internal("secret detail".into()));
        assert_eq!(e.status(), 500);
        assert!(!e.public_message().contains("secret detail"));
    }

    #[test]
    fn signature_mismatch_message_has_exactly_one_colon_before_the_string() {
        let m = ApiError::SignatureDoesNotMatch("GET&%2F&A%3D1".into()).to_string();
        let parts: Vec<&str> = m.split(':').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "GET&%2F&A%3D1");
    }
}
