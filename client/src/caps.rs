//! The capability a client holds for an open file, renewed while the file
//! stays open. Capabilities last minutes; a program may keep a file open
//! for days. Before each use, one with less than a third of its life left
//! is renewed ([`MetaOp::Renew`]); one a node refuses anyway (it expired
//! while the handle was idle, or the control plane revoked it after a
//! change of the mount's grant) is renewed once and the I/O retried, so
//! the program sees an error only when the metadata service refuses the
//! renewal (the mount target is gone, the rule now refuses this host).

use std::future::Future;
use std::sync::{Arc, Mutex};

use cpfs_proto::capability::{now_ms, Capability};
use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};
use cpfs_proto::node::NodeError;

use crate::data::DataError;
use crate::meta::MetaClient;

pub struct HeldCap {
    cap: Mutex<Capability>,
    /// One renewal at a time; the others wait for it and use its result.
    renewing: tokio::sync::Mutex<()>,
    meta: Arc<MetaClient>,
    /// Who opened the file: the identity the renewal is decided for.
    opener: Caller,
}

impl HeldCap {
    pub fn new(cap: Capability, meta: Arc<MetaClient>, opener: Caller) -> HeldCap {
        HeldCap {
            cap: Mutex::new(cap),
            renewing: tokio::sync::Mutex::new(()),
            meta,
            opener,
        }
    }

    /// The capability held now, as it is.
    pub fn get(&self) -> Capability {
        self.cap.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether less than a third of `cap`'s life is left at `now` (ms).
    fn due(cap: &Capability, now: i64) -> bool {
        let expires_ms = cap.expires.saturating_mul(1000);
        let life = expires_ms.saturating_sub(cap.issued_ms).max(0);
        expires_ms.saturating_sub(now) < life / 3
    }

    /// The capability to use now, renewed first if it is due. A failed
    /// renewal is not an error here: the node decides about the old one.
    pub async fn fresh(&self) -> Capability {
        let cap = self.get();
        if !Self::due(&cap, now_ms()) {
            return cap;
        }
        self.renew(&cap).await.unwrap_or(cap)
    }

    /// Replaces `stale` by a renewed capability (unless another task did
    /// already) and returns it; the errno when the service refuses.
    pub async fn renew(&self, stale: &Capability) -> Result<Capability, i32> {
        let _one = self.renewing.lock().await;
        let held = self.get();
        if held.mac != stale.mac {
            return Ok(held);
        }
        let op = MetaOp::Renew { cap: stale.clone() };
        match self.meta.call(&self.opener, op).await? {
            MetaReply::Renewed(cap) => {
                *self.cap.lock().unwrap_or_else(|p| p.into_inner()) = cap.clone();
                Ok(cap)
            }
            _ => Err(errno::EIO),
        }
    }

    /// Runs `io` with a fresh capability; when a node refuses it, renews
    /// it once and runs `io` again.
    pub async fn with<T, F, Fut>(&self, io: F) -> Result<T, DataError>
    where
        F: Fn(Capability) -> Fut,
        Fut: Future<Output = Result<T, DataError>>,
    {
        let cap = self.fresh().await;
        match io(cap.clone()).await {
            Err(DataError::Node(NodeError::BadCapability)) => {
                let renewed = self.renew(&cap).await.map_err(DataError::Renewal)?;
                io(renewed).await
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpfs_proto::capability::{CapabilityKey, READ};

    #[test]
    fn a_capability_is_due_for_renewal_in_the_last_third_of_its_life() {
        let k = CapabilityKey::from_cluster_token("t");
        // Issued at 1000 s, expires at 1300 s.
        let cap = k.issue_at(0, "fs", 2, READ, 1_000_000, 1_300);
        assert!(!HeldCap::due(&cap, 1_000_000));
        assert!(!HeldCap::due(&cap, 1_199_000));
        assert!(HeldCap::due(&cap, 1_201_000));
        assert!(HeldCap::due(&cap, 9_000_000), "expired");
    }
}
