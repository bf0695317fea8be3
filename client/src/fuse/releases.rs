//! Closing a file tells the service (it keeps an unlinked file's data
//! while any client holds the file open), but nobody waits for that answer:
//! the closing program is answered at once, and the releases of the next
//! few milliseconds go to the service together, as one request. A loop
//! that creates or opens many files then costs the service one request
//! per file, not two.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpfs_proto::meta::{Caller, MetaOp, MAX_RELEASES};
use tokio::runtime::Handle;

use crate::meta::MetaClient;

/// How long releases gather before they are sent: long enough to take
/// several from a busy loop, short enough that an unlinked file's data is
/// dropped about as soon as before.
const GATHER: Duration = Duration::from_millis(5);

pub(crate) struct Releases {
    rt: Handle,
    meta: Arc<MetaClient>,
    pending: Mutex<Vec<(u64, bool)>>,
}

impl Releases {
    pub fn new(rt: Handle, meta: Arc<MetaClient>) -> Arc<Releases> {
        Arc::new(Releases {
            rt,
            meta,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Queues the release of one handle of `ino` (`writable`: opened for
    /// writing); the first of a gathering starts the timer that sends them.
    pub fn push(self: &Arc<Self>, who: &Caller, ino: u64, writable: bool) {
        let first = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.push((ino, writable));
            p.len() == 1
        };
        if first {
            let me = self.clone();
            let who = who.clone();
            self.rt.spawn(async move {
                tokio::time::sleep(GATHER).await;
                me.send(&who).await;
            });
        }
    }

    /// Sends everything queued, [`MAX_RELEASES`] at a time. A failure is
    /// not retried: the service forgets a session's handles when its
    /// lease ends.
    async fn send(&self, who: &Caller) {
        loop {
            let batch: Vec<(u64, bool)> = {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let n = p.len().min(MAX_RELEASES);
                p.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let _ = self
                .meta
                .call(who, MetaOp::ReleaseMany { handles: batch })
                .await;
        }
    }
}
