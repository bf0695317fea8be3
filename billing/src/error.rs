//! Errors of billing.

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(
        "\"{0}\" is not a decimal number (digits, an optional point and at most 8 fraction digits)"
    )]
    InvalidNumber(String),
    #[error("price book: {0}")]
    PriceBook(String),
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error(transparent)]
    ControlPlane(#[from] cpfs_controlplane::Error),
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        BillingError::ControlPlane(cpfs_controlplane::Error::Database(e))
    }
}

impl From<cpfs_store::StoreError> for BillingError {
    fn from(e: cpfs_store::StoreError) -> Self {
        BillingError::ControlPlane(cpfs_controlplane::Error::Store(e))
    }
}

impl BillingError {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        BillingError::Invalid {
            name,
            message: message.into(),
        }
    }
}

pub type Result<T, E = BillingError> = std::result::Result<T, E>;
