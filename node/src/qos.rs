//! Per-file-system QoS on a data node: the node holds each limited file
//! system to the share of its bandwidth and IOPS the control plane gave it
//! (`HeartbeatReply::qos`), so the file system as a whole gets no more than
//! its tier across all nodes and clients, and a file system hammering
//! shared nodes leaves the rest of their time to the others.
//!
//! Each limit is a pacer: a request reserves its cost on a virtual
//! timeline and waits until its slot begins, so concurrent requests share
//! the rate in arrival order and an idle spell earns at most [`BURST`] of
//! credit (bursts are bounded). A request charges the bytes pacer and the
//! pacer of its kind and goes when both allow it. The time requests wait is
//! counted and reported: the control plane moves the file system's limit
//! towards the nodes whose requests wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cpfs_proto::heartbeat::QosShare;
use tokio::time::Instant;

/// Credit an idle limit may bank: a fifth of a second at its rate. More
/// would let a node whose requests come in bursts use more of its share,
/// but every node's credit adds to how far the file system as a whole may
/// run over its limit for a moment.
pub const BURST: Duration = Duration::from_millis(200);

/// One rate on a virtual timeline.
struct Pacer {
    state: Mutex<PacerState>,
}

struct PacerState {
    /// Units per second; 0 is unlimited.
    rate: f64,
    next_free: Instant,
}

impl Pacer {
    /// Starts with its credit banked, as after an idle spell.
    fn new() -> Pacer {
        let now = Instant::now();
        Pacer {
            state: Mutex::new(PacerState {
                rate: 0.0,
                next_free: now.checked_sub(BURST).unwrap_or(now),
            }),
        }
    }

    fn set_rate(&self, rate: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
    }

    fn rate(&self) -> f64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rate
    }

    /// Reserves `units` and answers when their slot begins (`now` when
    /// unlimited or within the banked credit).
    fn reserve(&self, units: f64, now: Instant) -> Instant {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.rate == 0.0 || units <= 0.0 {
            return now;
        }
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let start = s.next_free.max(earliest);
        s.next_free = start + Duration::from_secs_f64(units / s.rate);
        start.max(now)
    }
}

/// The limits of one file system on this node.
struct FsLimit {
    bytes: Pacer,
    reads: Pacer,
    writes: Pacer,
    waited_us: AtomicU64,
}

/// Every file system's limits on this node.
#[derive(Default)]
pub struct Qos {
    /// The file systems the last list named (a deleted one leaves with
    /// it; its wait counter starting again at 0 reads as one wait).
    limits: RwLock<HashMap<String, Arc<FsLimit>>>,
}

impl Qos {
    /// Replaces the shares: file systems not listed are no longer limited.
    pub fn apply(&self, shares: &[QosShare]) {
        let by_fs: HashMap<&str, &QosShare> = shares.iter().map(|s| (s.fs.as_str(), s)).collect();
        let mut limits = self.limits.write().unwrap_or_else(|p| p.into_inner());
        for s in shares {
            limits.entry(s.fs.clone()).or_insert_with(|| {
                Arc::new(FsLimit {
                    bytes: Pacer::new(),
                    reads: Pacer::new(),
                    writes: Pacer::new(),
                    waited_us: AtomicU64::new(0),
                })
            });
        }
        limits.retain(|fs, _| by_fs.contains_key(fs.as_str()));
        for (fs, l) in limits.iter() {
            if let Some(share) = by_fs.get(fs.as_str()) {
                l.bytes.set_rate(share.bytes_per_sec);
                l.reads.set_rate(share.reads_per_sec);
                l.writes.set_rate(share.writes_per_sec);
            }
        }
    }

    /// Waits until a client request of `fs` moving `bytes` may be served.
    pub async fn admit(&self, fs: &str, write: bool, bytes: u64) {
        let limit = {
            let limits = self.limits.read().unwrap_or_else(|p| p.into_inner());
            match limits.get(fs) {
                Some(l) => l.clone(),
                None => return,
            }
        };
        let now = Instant::now();
        let ops = if write { &limit.writes } else { &limit.reads };
        let start = limit
            .bytes
            .reserve(bytes as f64, now)
            .max(ops.reserve(1.0, now));
        if start > now {
            let waited = u64::try_from((start - now).as_micros()).unwrap_or(u64::MAX);
            limit.waited_us.fetch_add(waited, Ordering::Relaxed);
            tokio::time::sleep_until(start).await;
        }
    }

    /// The microseconds requests of `fs` have waited here so far.
    pub fn waited_us(&self, fs: &str) -> u64 {
        let limits = self.limits.read().unwrap_or_else(|p| p.into_inner());
        limits
            .get(fs)
            .map_or(0, |l| l.waited_us.load(Ordering::Relaxed))
    }

    /// The bytes per second `fs` may use here (0: unlimited).
    pub fn bytes_rate(&self, fs: &str) -> f64 {
        let limits = self.limits.read().unwrap_or_else(|p| p.into_inner());
        limits.get(fs).map_or(0.0, |l| l.bytes.rate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(fs: &str, bytes: f64, reads: f64, writes: f64) -> QosShare {
        QosShare {
            fs: fs.into(),
            bytes_per_sec: bytes,
            reads_per_sec: reads,
            writes_per_sec: writes,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_file_system_is_paced_and_others_are_not() {
        let qos = Qos::default();
        qos.apply(&[share("fs-a", 1_000_000.0, 100.0, 0.0)]);
        let started = Instant::now();
        // 20 reads of 100 kB at 1 MB/s: the last starts at 1.9 s, less the
        // banked credit.
        for _ in 0..20 {
            qos.admit("fs-a", false, 100_000).await;
        }
        let took = started.elapsed();
        let want = Duration::from_millis(1900) - BURST;
        assert!(
            took >= want && took <= want + Duration::from_millis(10),
            "{took:?}"
        );
        assert!(qos.waited_us("fs-a") > 0);
        // Another file system goes at once.
        let started = Instant::now();
        for _ in 0..100 {
            qos.admit("fs-b", false, 1_000_000).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn iops_limit_small_requests_and_lifting_frees_them() {
        let qos = Qos::default();
        qos.apply(&[share("fs-a", 0.0, 0.0, 50.0)]);
        let started = Instant::now();
        for _ in 0..60 {
            qos.admit("fs-a", true, 4096).await;
        }
        // 60 writes at 50/s: the last starts at 1.18 s, less the credit.
        let took = started.elapsed();
        let want = Duration::from_millis(1180) - BURST;
        assert!(
            took >= want && took <= want + Duration::from_millis(10),
            "{took:?}"
        );
        // Reads are not limited by the write rate.
        let started = Instant::now();
        qos.admit("fs-a", false, 4096).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        // A file system left out of the next list is free again.
        qos.apply(&[]);
        let started = Instant::now();
        for _ in 0..1000 {
            qos.admit("fs-a", true, 4096).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(qos.waited_us("fs-a"), 0);
        assert_eq!(qos.bytes_rate("fs-a"), 0.0);
    }
}
