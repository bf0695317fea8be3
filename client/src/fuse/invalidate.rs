//! Keeping the kernel's caches true to what other clients change.
//!
//! The kernel keeps entries (also negative ones: "no such name") and
//! attributes for [`TTL`](super::TTL), much longer than a second, because
//! the metadata service tells this mount what other clients changed of
//! what it has seen (`meta/src/watch.rs`): a [`MetaOp::Watch`] is always
//! outstanding, and each change it returns is dropped from the kernel's
//! caches with FUSE's notify_inval_entry and notify_inval_inode.
//!
//! When changes were lost (the session is new after a restart or a
//! failover, or this mount fell behind) every inode this mount has shown
//! the kernel is invalidated; names cannot be listed, so a stale entry may
//! then live until its TTL ends.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cpfs_proto::meta::{Caller, Change, MetaOp, MetaReply};
use fuser::{INodeNo, Notifier};

use crate::data::DataClient;
use crate::meta::MetaClient;

/// How long one Watch may wait on the service (it caps this itself).
const WAIT_MS: u32 = 10_000;
/// Pause after a failed Watch (the service is restarting or moving; the
/// calls of the mount wait for it on their own).
const AFTER_FAILURE: Duration = Duration::from_millis(500);

/// The watching side of one mount.
#[derive(Clone)]
pub struct Invalidator {
    pub(super) meta: Arc<MetaClient>,
    pub(super) notifier: Arc<OnceLock<Notifier>>,
    pub(super) shown: Arc<Mutex<HashMap<u64, (u64, i64)>>>,
    pub(super) data: Arc<DataClient>,
}

impl Invalidator {
    /// Follows changes until the mount ends (the task is dropped with the
    /// runtime). The service watches a session from its mount on, so
    /// nothing changed while the FUSE session starts is missed.
    pub async fn run(self) {
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        // The kernel's caches are told on a task of their own, in order:
        // telling the kernel can wait for its locks (held by this mount's
        // own requests, which may wait for another mount to let go of a
        // delegation), and the next Watch, which lets go of the
        // delegations recalled, must not wait for that.
        let (kernel, mut told) = tokio::sync::mpsc::unbounded_channel();
        let teller = self.clone();
        tokio::spawn(async move {
            while let Some((changes, lost)) = told.recv().await {
                teller.apply(changes, lost).await;
            }
        });
        loop {
            let sent = std::time::Instant::now();
            let breaks = self.meta.breaks();
            match self
                .meta
                .call(&root, MetaOp::Watch { wait_ms: WAIT_MS })
                .await
            {
                Ok(MetaReply::Changes {
                    changes,
                    lost,
                    lease_ms,
                }) => {
                    // An earlier answer lost on the way counts as lost
                    // changes. What this mount knows goes first; then it
                    // may go on answering from its delegations (the next
                    // Watch acknowledges the recalls among these changes).
                    let lost = lost || self.meta.take_watch_failure();
                    self.forget(&changes, lost);
                    self.meta.names.renew(sent, lease_ms, breaks);
                    let _ = kernel.send((changes, lost));
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a watch");
                    tokio::time::sleep(AFTER_FAILURE).await;
                }
                Err(errno) => {
                    tracing::debug!(errno, "watch failed; trying again");
                    tokio::time::sleep(AFTER_FAILURE).await;
                }
            }
        }
    }

    /// Drops what this mount keeps itself of what changed: the copies of
    /// directories' attributes from its own changes (the kernel asks for
    /// them next), what it knows of names, listings, and file data read.
    fn forget(&self, changes: &[Change], lost: bool) {
        if lost {
            self.meta.dirs.clear();
            self.meta.changes.clear();
            self.meta.names.clear();
            self.data.read_cache.forget_all();
        }
        for c in changes {
            let ino = c.ino();
            self.meta.dirs.forget(ino);
            self.meta.changes.invalidate(ino);
            self.meta.names.invalidate(ino);
            if let Change::Inode { data: true, .. } = c {
                self.data.read_cache.forget(ino);
            }
        }
    }

    async fn apply(&self, changes: Vec<Change>, lost: bool) {
        let Some(notifier) = self.notifier.get().cloned() else {
            // The kernel has not been told anything yet.
            return;
        };
        let everything: Vec<u64> = if lost {
            self.shown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        if changes.is_empty() && everything.is_empty() {
            return;
        }
        // Notifications write to /dev/fuse and may wait for the kernel's
        // locks on the directory (held while a request of this mount in it
        // is answered): off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            for ino in everything {
                let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
            }
            for c in changes {
                // Errors mean the kernel did not hold it: nothing to drop.
                let _ = match c {
                    Change::Entry { parent, name } => {
                        notifier.inval_entry(INodeNo(parent), OsStr::from_bytes(&name))
                    }
                    // A negative offset drops the attributes only.
                    Change::Inode { ino, data } => {
                        notifier.inval_inode(INodeNo(ino), if data { 0 } else { -1 }, 0)
                    }
                };
            }
        })
        .await;
    }
}
