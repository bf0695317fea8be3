//! The protocols between CPFS processes, and the types they share.
//!
//! Nothing here runs a process: the node, the client, the metadata service
//! and the control plane all build on these types, so none of them needs
//! another's crate to talk to it.
//!
//! - [`frame`]: the versioned, length-prefixed frame codec.
//! - [`rpc`]: request/reply over frames (a multiplexed client, a pool of
//!   them, and the one server shell every binary listener runs in).
//! - [`node`]: the node protocol (chunk reads, writes, resync, scrub).
//! - [`payload`]: byte fields decoded as views of their frame, not copies.
//! - [`meta`]: the metadata protocol (sessions, POSIX operations).
//! - [`heartbeat`]: what nodes and the control plane exchange.
//! - [`capability`]: HMAC-signed grants the metadata service hands out and
//!   nodes verify.
//! - [`chains`]: the versioned chain table and its planner.
//! - [`layout`]: striping, from a file offset to (chain, chunk, offset).
//! - [`telemetry`]: operation counters and latency histograms services
//!   report with their heartbeats.

pub mod capability;
pub mod chains;
pub mod frame;
pub mod heartbeat;
pub mod layout;
pub mod meta;
pub mod node;
pub mod payload;
pub mod rpc;
pub mod telemetry;
