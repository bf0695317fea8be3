//! Request/reply over the frame codec: [`client`] is the calling half
//! (multiplexed connections and a pool of them), [`server`] the one shell
//! every binary listener runs in, [`liveness`] the deadlines on a
//! connection's peer, [`reserved`] connecting from a privileged port.

pub mod client;
pub mod liveness;
pub mod reserved;
pub mod server;
pub mod writer;

pub use client::{Client, Pool, CALL_TIMEOUT};
pub use liveness::PEER_TIMEOUT;
pub use server::{serve, serve_until, Outcome, ServiceLimits, ServiceStats};
