//! File systems' namespaces, through their only owner, the metadata
//! service's crate: the reconciler provisions and drops them, listings and
//! billing read their usage. No SQL on namespace tables lives here.

use cpfs_meta::lifecycle;

use crate::error::Result;
use crate::ControlPlane;

impl ControlPlane {
    /// Lays the file system over the current chain table and creates its
    /// root directory (idempotent).
    pub async fn provision_namespace(&self, fs_id: &str) -> Result<()> {
        let table = self.chain_table().await?;
        let now_ns = self.now() * 1_000_000_000;
        lifecycle::provision(&self.store, fs_id, &table, now_ns).await?;
        Ok(())
    }

    /// Removes the file system's namespace (idempotent).
    pub async fn drop_namespace(&self, fs_id: &str) -> Result<()> {
        lifecycle::drop(&self.store, fs_id).await?;
        Ok(())
    }

    /// The chain stripe of each of `inodes` of `fs` still in the namespace
    /// (for a node migrating its chunk files).
    pub async fn file_chains(
        &self,
        fs: &str,
        inodes: &[u64],
    ) -> Result<std::collections::BTreeMap<u64, Vec<u32>>> {
        Ok(lifecycle::file_chains(&self.store, fs, inodes).await?)
    }

    /// Bytes of file data in the file system (sizes of its files).
    pub async fn used_bytes(&self, fs_id: &str) -> Result<u64> {
        Ok(lifecycle::used_bytes(&self.store, fs_id).await?)
    }
}
