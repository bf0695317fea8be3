//! Errors of the control plane. The API layer maps each variant to an
//! Alibaba error code and HTTP status in one place.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource that does not exist, or belongs to another account
    /// (the two are indistinguishable on purpose).
    #[error("the specified {kind} {id} does not exist")]
    NotFound { kind: ResourceKind, id: String },

    #[error("{message}")]
    InvalidParameter { name: &'static str, message: String },

    #[error("the {kind} {id} already exists")]
    AlreadyExists { kind: ResourceKind, id: String },

    /// The operation is not allowed in the resource's current status.
    #[error("{message}")]
    InvalidStatus { kind: ResourceKind, message: String },

    /// Refused by a rule of the service, with the Alibaba-style code that
    /// names it (`OperationDenied.DeletionProtection`, …).
    #[error("{message}")]
    Denied { code: &'static str, message: String },

    /// The cluster cannot satisfy the request right now (e.g. no capacity).
    #[error("{0}")]
    Unavailable(String),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("store: {0}")]
    Store(#[from] cpfs_store::StoreError),

    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    FileSystem,
    MountTarget,
    AccessGroup,
    AccessRule,
    Account,
    Node,
    LdapConfig,
    Fileset,
    UserQuota,
    AccessPoint,
    BlackListClient,
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceKind::FileSystem => "file system",
            ResourceKind::MountTarget => "mount target",
            ResourceKind::AccessGroup => "access group",
            ResourceKind::AccessRule => "access rule",
            ResourceKind::Account => "account",
            ResourceKind::Node => "node",
            ResourceKind::LdapConfig => "LDAP configuration of file system",
            ResourceKind::Fileset => "fileset",
            ResourceKind::UserQuota => "user quota for",
            ResourceKind::AccessPoint => "access point",
            ResourceKind::BlackListClient => "fenced client",
        })
    }
}

impl Error {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }

    pub fn invalid_status(kind: ResourceKind, message: impl Into<String>) -> Self {
        Error::InvalidStatus {
            kind,
            message: message.into(),
        }
    }

    pub fn denied(code: &'static str, message: impl Into<String>) -> Self {
        Error::Denied {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(kind: ResourceKind, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A secret that cannot be sealed or opened is the service's fault (a
/// wrong key file, a damaged row), never the caller's.
impl From<crate::secrets::SecretError> for Error {
    fn from(e: crate::secrets::SecretError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<cpfs_meta::lifecycle::LifecycleError> for Error {
    fn from(e: cpfs_meta::lifecycle::LifecycleError) -> Self {
        use cpfs_meta::lifecycle::LifecycleError as L;
        let message = e.to_string();
        match e {
            L::NoChains => Error::Unavailable(message),
            L::Database(d) => Error::Database(d),
            L::Store(s) => Error::Store(s),
            L::Corrupt { .. } => Error::Internal(message),
        }
    }
}
