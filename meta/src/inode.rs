//! An inode as the namespace keeps it, in memory and in the `inodes` table.

use cpfs_proto::meta::Attr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Inode {
    pub attr: Attr,
    /// For a directory, its parent (`..`); for other kinds, one directory
    /// holding a link to it (the permission walk, `ns/reach.rs`, goes
    /// through it).
    pub parent: u64,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    pub chunk_size: u64,
    pub chains: Vec<u32>,
}
