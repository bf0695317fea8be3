//! The CPFS client, as linked into `cpfs mount` (and into the metadata
//! service, which drops data on the nodes through the same data client).
//!
//! - [`meta`]: the metadata client (session, retry across restarts,
//!   exactly-once request ids).
//! - [`data`]: the data client (striped reads and writes straight to the
//!   chain heads, refreshing the chain table and retrying across failover).
//! - [`caps`]: the capability of an open file, renewed while it is open.
//! - [`dir_attrs`]: directories' attributes from this client's own changes.
//! - [`dir_changes`]: when each directory last changed, as this client knows.
//! - [`dir_names`]: directories delegated to this client, and their names.
//! - [`read_cache`]: file data this mount read, kept while unchanged.
//! - [`fuse`]: the thin FUSE adapter from kernel requests to those two.

pub mod caps;
pub mod data;
pub mod dir_attrs;
pub mod dir_changes;
pub mod dir_names;
pub mod fuse;
pub mod meta;
pub mod read_cache;
