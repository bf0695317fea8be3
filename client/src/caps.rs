//! The capability a client holds for an open file, renewed while the file
//! stays open. Capabilities last minutes; a program may keep a file open
//! for days. Before each use, one with less than a third of its life left
//! is renewed ([`MetaOp::Renew`]); one a node refuses anyway (it expired
//! while the handle was idle, or the control plane revoked it after a
//! change of the mount's grant) is renewed and the I/O retried, so the
//! program sees an error only when the metadata service refuses the
//! renewal (the mount target is gone, the rule now refuses this host), or
//! when the nodes keep refusing what it renews for longer than a failover
//! takes.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_runtime::retry;

use cpfs_proto::capability::{now_ms, Capability};
use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};
use cpfs_proto::node::NodeError;

use crate::data::DataError;
use crate::meta::MetaClient;

/// How long a node may keep refusing capabilities the service keeps
/// renewing before the I/O fails with EACCES: the metadata outage a client
/// rides out (a failover's lease and the move to the new server).
const DISAGREEMENT: Duration = Duration::from_secs(15);
const DISAGREEMENT_FIRST: Duration = Duration::from_millis(50);
const DISAGREEMENT_CAP: Duration = Duration::from_secs(1);

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

    /// Who opened the file.
    pub fn opener(&self) -> &Caller {
        &self.opener
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
    /// it and runs `io` again: at once the first time, then with backoff
    /// for up to [`DISAGREEMENT`] while the service keeps renewing what
    /// the nodes keep refusing. That disagreement is a moment of a
    /// failover: a metadata server cut off from the control plane renews
    /// under the grant it decided last until its lease runs out, and the
    /// nodes may already refuse capabilities of grants that old; once the
    /// file system's new server answers, its renewal stands. A refusal by
    /// the service itself ends the wait at once.
    pub async fn with<T, F, Fut>(&self, io: F) -> Result<T, DataError>
    where
        F: Fn(Capability) -> Fut,
        Fut: Future<Output = Result<T, DataError>>,
    {
        let mut cap = self.fresh().await;
        let deadline = tokio::time::Instant::now() + DISAGREEMENT;
        let mut delays = retry::delays(DISAGREEMENT_FIRST, DISAGREEMENT_CAP);
        let mut renewed = false;
        loop {
            match io(cap.clone()).await {
                Err(DataError::Node(NodeError::BadCapability)) => {
                    if renewed {
                        let delay = delays.next().unwrap_or(DISAGREEMENT_CAP);
                        if tokio::time::Instant::now() + delay > deadline {
                            return Err(DataError::Node(NodeError::BadCapability));
                        }
                        tracing::debug!(
                            ino = cap.inode,
                            "a node refused a renewed capability; renewing again"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    cap = self.renew(&cap).await.map_err(DataError::Renewal)?;
                    renewed = true;
                }
                r => return r,
            }
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
