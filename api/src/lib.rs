//! The signed API gateway: one route, `/`, for GET and POST; requests are
//! authenticated (V1 or V3 signatures), parsed into typed commands, run
//! against the control plane, and answered in the Alibaba envelope.

pub mod actions;
pub mod address_limit;
pub mod admin;
mod cluster_routes;
mod envelope;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod layers;
pub mod metrics;
pub mod nonce;
pub mod params;
pub mod percent;
pub mod render;
pub mod signature;

pub use error::ApiError;
pub use gateway::{app, router, Gateway, GatewayConfig};
