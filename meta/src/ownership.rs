//! Which file systems this metadata server may serve, and until when.
//!
//! A server that runs beside other metadata servers owns the file systems
//! the control plane assigns it, for a lease counted from when it sent the
//! heartbeat that confirmed them. Past the lease, or once a file system is
//! no longer listed, every operation on it is answered "moved" (the client
//! asks the control plane where it went), and its shard is dropped: the
//! next owner may change the store, so memory can no longer be trusted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cpfs_proto::heartbeat::{MetaHeartbeat, MetaHeartbeatReply, Owned};

use crate::MetaService;

#[derive(Default)]
pub struct Ownership {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    owned: HashMap<String, u64>,
    valid_until: Option<Instant>,
}

impl Ownership {
    /// The epoch under which this server owns `fs` now, if it does.
    pub fn epoch(&self, fs: &str) -> Option<u64> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        match st.valid_until {
            Some(t) if Instant::now() < t => st.owned.get(fs).copied(),
            _ => None,
        }
    }

    /// How much is left of the lease under which this server owns `fs`, if
    /// it owns it now.
    pub fn remaining(&self, fs: &str) -> Option<std::time::Duration> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let until = st.valid_until.filter(|_| st.owned.contains_key(fs))?;
        until.checked_duration_since(Instant::now())
    }

    /// When the lease under which this server owns `fs` ends, if it owns
    /// it now under `epoch`.
    pub fn lease_end(&self, fs: &str, epoch: u64) -> Option<Instant> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        match st.valid_until {
            Some(t) if Instant::now() < t && st.owned.get(fs) == Some(&epoch) => Some(t),
            _ => None,
        }
    }

    /// Takes the owned set of a heartbeat reply, valid until `until`; the
    /// file systems lost or re-assigned since (their shards must go).
    pub(crate) fn renew(&self, owned: Vec<Owned>, until: Instant) -> Vec<String> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let lapsed = st.valid_until.is_none_or(|t| Instant::now() >= t);
        let next: HashMap<String, u64> = owned.into_iter().map(|o| (o.fs, o.epoch)).collect();
        let gone = st
            .owned
            .iter()
            .filter(|(fs, epoch)| lapsed || next.get(*fs) != Some(epoch))
            .map(|(fs, _)| fs.clone())
            .collect();
        st.owned = next;
        st.valid_until = Some(until);
        gone
    }

    /// Everything, once the lease ran out without a renewal.
    fn lapse(&self) -> Vec<String> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if st.valid_until.is_some_and(|t| Instant::now() < t) {
            return Vec::new();
        }
        st.valid_until = None;
        st.owned.drain().map(|(fs, _)| fs).collect()
    }

    pub fn owned(&self) -> Vec<(String, u64)> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.owned.iter().map(|(f, e)| (f.clone(), *e)).collect()
    }
}

pub type HeartbeatFuture<'a> =
    Pin<Box<dyn Future<Output = Result<MetaHeartbeatReply, String>> + Send + 'a>>;

/// The control plane as a metadata server sees it: in `cpfs serve` a call,
/// in `cpfs meta` an HTTP request to its internal route.
pub trait Coordinator: Send + Sync {
    fn heartbeat<'a>(&'a self, hb: &'a MetaHeartbeat) -> HeartbeatFuture<'a>;
}

/// The heartbeat loop's pass: reports the server, renews its lease, and
/// drops the shards of file systems it no longer owns.
pub struct LeaseKeeper {
    service: Arc<MetaService>,
    ownership: Arc<Ownership>,
    coordinator: Arc<dyn Coordinator>,
    hb: MetaHeartbeat,
}

impl LeaseKeeper {
    /// How often a metadata server reports itself.
    pub const PERIOD: Duration = Duration::from_millis(500);

    pub fn new(
        service: Arc<MetaService>,
        coordinator: Arc<dyn Coordinator>,
        id: String,
        address: String,
    ) -> Arc<LeaseKeeper> {
        let ownership = service.serve_by_lease();
        Arc::new(LeaseKeeper {
            service,
            ownership,
            coordinator,
            hb: MetaHeartbeat {
                id,
                address,
                telemetry: Default::default(),
            },
        })
    }

    pub async fn pass(&self) -> Result<(), String> {
        let sent = Instant::now();
        let hb = MetaHeartbeat {
            telemetry: self.service.telemetry(),
            ..self.hb.clone()
        };
        match self.coordinator.heartbeat(&hb).await {
            Ok(reply) => {
                let until = sent + Duration::from_millis(reply.lease_ms);
                for fs in self.ownership.renew(reply.owned, until) {
                    tracing::info!(fs = %fs, "no longer serving this file system");
                    self.service.shards.unload(&fs);
                }
                Ok(())
            }
            Err(e) => {
                for fs in self.ownership.lapse() {
                    tracing::warn!(fs = %fs, "lease ran out without the control plane; no longer serving");
                    self.service.shards.unload(&fs);
                }
                Err(format!("heartbeat to the control plane: {e}"))
            }
        }
    }
}
