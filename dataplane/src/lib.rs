//! The data plane: how bytes of a file reach disks.
//!
//! - [`proto`]: the length-prefixed binary protocol (frames carrying
//!   bincode messages, many requests in flight per connection).
//! - [`rpc`]: a multiplexed client connection and the server loop.
//! - [`capability`]: short-lived HMAC-signed grants the metadata service
//!   hands out and nodes verify.
//! - [`chains`]: the versioned chain table (which nodes hold which chain).
//! - [`layout`]: striping, from a file offset to (chain, chunk, offset).
//! - [`chunkstore`]: chunks on a node's disk, checksummed per 4 KiB block.
//! - [`node`]: the data-node server.
//! - [`resync`]: filling a new or returning chain member from the head.
//! - [`scrub`]: background verification, repair and collection on a node.
//! - [`throttle`]: byte-rate limits (client I/O, repair, scrub).

pub mod capability;
pub mod chains;
pub mod chunkstore;
pub mod client;
pub mod fuse;
pub mod layout;
pub mod metaproto;
pub mod node;
pub mod proto;
pub mod resync;
pub mod rpc;
pub mod scrub;
pub mod throttle;
