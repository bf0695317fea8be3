//! What services measure about themselves and report to the control plane
//! with their heartbeats, which exports it on `/metrics` (one scrape target
//! for the cluster: a node or metadata server on another host needs no
//! listener of its own, and the series are never more than a heartbeat
//! old).
//!
//! The recorders are lock-free counters a request path can afford: an
//! operation is one index into a fixed table and three atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in microseconds: from a cached
/// metadata lookup (tens of µs) to a stalled failover (seconds).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Buckets of a latency histogram: one per bound, and one for the rest.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A latency histogram as it travels: counts per bucket (not cumulative,
/// the last one above every bound), their sum and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub counts: Vec<u64>,
    pub sum_us: u64,
    pub count: u64,
}

/// One kind of operation of a service: how many failed, and how long they
/// took (how many in all is the histogram's `count`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStats {
    pub op: String,
    pub errors: u64,
    pub latency: Latency,
}

/// What a metadata server reports besides its liveness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaTelemetry {
    /// Operations by kind since the server started.
    pub ops: Vec<OpStats>,
    /// Mounted sessions it holds now.
    pub sessions: u64,
    /// Journal commits, and the entries (operations) they carried: their
    /// ratio is the group commit at work.
    pub journal_commits: u64,
    pub journal_entries: u64,
    /// Its caches' hits and misses, as (cache, hits, misses): "grant"
    /// (access decisions per mount target and client address) and
    /// "identity" (LDAP users).
    #[serde(default)]
    pub caches: Vec<(String, u64, u64)>,
}

#[derive(Debug, Default)]
struct OpRecorder {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
}

/// Counters and latency histograms for a fixed set of operation kinds,
/// named once; a kind is recorded by its index in `names`.
#[derive(Debug)]
pub struct OpTable {
    names: &'static [&'static str],
    ops: Vec<OpRecorder>,
}

impl OpTable {
    pub fn new(names: &'static [&'static str]) -> OpTable {
        OpTable {
            names,
            ops: names.iter().map(|_| OpRecorder::default()).collect(),
        }
    }

    /// Records one operation of kind `index` (ignored when out of range).
    pub fn record(&self, index: usize, took: Duration, ok: bool) {
        let Some(r) = self.ops.get(index) else {
            return;
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.partition_point(|b| *b < us);
        r.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        r.sum_us.fetch_add(us, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            r.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every kind's figures so far, those never seen included (a series
    /// that appears only after its first event breaks `rate()`).
    pub fn snapshot(&self) -> Vec<OpStats> {
        self.names
            .iter()
            .zip(&self.ops)
            .map(|(name, r)| OpStats {
                op: (*name).to_string(),
                errors: r.errors.load(Ordering::Relaxed),
                latency: Latency {
                    counts: r
                        .buckets
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    sum_us: r.sum_us.load(Ordering::Relaxed),
                    count: r.count.load(Ordering::Relaxed),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_land_in_their_bucket_and_kind() {
        let t = OpTable::new(&["read", "write"]);
        t.record(0, Duration::from_micros(50), true);
        t.record(0, Duration::from_micros(51), false);
        t.record(1, Duration::from_secs(60), true);
        t.record(7, Duration::from_micros(1), true);
        let s = t.snapshot();
        assert_eq!(s[0].op, "read");
        assert_eq!(
            (s[0].latency.count, s[0].errors, s[0].latency.sum_us),
            (2, 1, 101)
        );
        // 50 µs is within the first bound, 51 µs in the second bucket.
        assert_eq!(s[0].latency.counts[..3], [1, 1, 0]);
        assert_eq!(s[1].latency.counts[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s[1].latency.counts.iter().sum::<u64>(), 1);
    }
}
