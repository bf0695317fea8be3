//! Per-object scheduling for a level-triggered controller. Every key (a
//! file system, a mount target) is in one of three states: due now, waiting
//! for a change (converged), or not before a time (asked to come back, or
//! backing off after failures). Failures back off per key with the shared
//! retry policy, so a file system that cannot be placed is retried ever
//! more slowly while its neighbours keep converging at full speed.
//!
//! Time is passed in, never read here, so the schedule is testable without
//! sleeping.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::retry::{self, BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// What a reconcile step asks of the queue next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Converged: nothing to do until desired state changes (or the
    /// periodic resync catches a change a notification missed).
    AwaitChange,
    /// Come back after this long (a dependency is not ready yet).
    RequeueAfter(Duration),
}

#[derive(Debug)]
enum Slot {
    Converged { since: Instant },
    NotBefore(Instant),
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    /// Present while the key is failing; dropped on its next success.
    backoff: Option<ExponentialBackoff>,
    failures: u32,
}

pub struct WorkQueue<K> {
    entries: HashMap<K, Entry>,
    policy: ExponentialBuilder,
    resync: Duration,
}

impl<K: Eq + Hash + Clone> WorkQueue<K> {
    /// A queue whose converged keys are looked at again every `resync`,
    /// and whose failing keys back off from `first` up to `cap`.
    pub fn new(resync: Duration, first: Duration, cap: Duration) -> Self {
        WorkQueue {
            entries: HashMap::new(),
            policy: retry::policy(first, cap),
            resync,
        }
    }

    /// Whether `key` should be reconciled at `now`. A key the queue has
    /// never seen is due at once.
    pub fn is_due(&self, key: &K, now: Instant) -> bool {
        match self.entries.get(key).map(|e| &e.slot) {
            None => true,
            Some(Slot::Converged { since }) => now >= *since + self.resync,
            Some(Slot::NotBefore(t)) => now >= *t,
        }
    }

    /// Records the outcome of reconciling `key` at `now`; on failure,
    /// returns how many times in a row it has failed.
    pub fn settle<E>(&mut self, key: K, outcome: &Result<Next, E>, now: Instant) -> Option<u32> {
        let entry = self.entries.entry(key).or_insert(Entry {
            slot: Slot::Converged { since: now },
            backoff: None,
            failures: 0,
        });
        match outcome {
            Ok(Next::AwaitChange) => {
                entry.slot = Slot::Converged { since: now };
                entry.backoff = None;
                entry.failures = 0;
                None
            }
            Ok(Next::RequeueAfter(d)) => {
                entry.slot = Slot::NotBefore(now + *d);
                entry.backoff = None;
                entry.failures = 0;
                None
            }
            Err(_) => {
                let policy = &self.policy;
                let delay = entry
                    .backoff
                    .get_or_insert_with(|| policy.build())
                    .next()
                    .unwrap_or(self.resync);
                entry.slot = Slot::NotBefore(now + delay);
                entry.failures += 1;
                Some(entry.failures)
            }
        }
    }

    /// Desired state changed somewhere: converged keys are due again.
    /// Keys backing off stay put, so a stream of unrelated changes cannot
    /// turn a failing key into a hot loop.
    pub fn changed(&mut self) {
        for e in self.entries.values_mut() {
            if let Slot::Converged { since } = e.slot {
                e.slot = Slot::NotBefore(since);
            }
        }
    }

    /// Forgets keys that no longer need work (deleted, or converged and
    /// out of the candidate set), so the queue never outgrows the objects.
    pub fn retain(&mut self, present: &HashSet<K>) {
        self.entries.retain(|k, _| present.contains(k));
    }

    /// How long the controller may sleep after `now` before some key is
    /// due; never longer than the resync period.
    pub fn next_wake(&self, now: Instant) -> Duration {
        self.entries
            .values()
            .map(|e| match e.slot {
                Slot::Converged { since } => (since + self.resync).saturating_duration_since(now),
                Slot::NotBefore(t) => t.saturating_duration_since(now),
            })
            .min()
            .unwrap_or(self.resync)
            .min(self.resync)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(2000 * MS, 100 * MS, 30_000 * MS)
    }

    #[test]
    fn a_failing_key_backs_off_alone_and_recovers_on_success() {
        let mut q = queue();
        let t0 = Instant::now();
        assert!(q.is_due(&"broken", t0) && q.is_due(&"fine", t0));

        let fail: Result<Next, &str> = Err("no nodes");
        assert_eq!(q.settle("broken", &fail, t0), Some(1));
        q.settle("fine", &Ok::<_, &str>(Next::RequeueAfter(10 * MS)), t0);
        assert!(
            !q.is_due(&"broken", t0 + 99 * MS),
            "first retry waits at least 100 ms"
        );
        assert!(
            q.is_due(&"fine", t0 + 10 * MS),
            "the other key is unaffected"
        );
        assert!(
            q.is_due(&"broken", t0 + 200 * MS),
            "jitter adds under one delay"
        );

        // Consecutive failures wait longer each time.
        let mut at = t0;
        let mut last_wait = Duration::ZERO;
        for n in 2..=6 {
            at += 40_000 * MS;
            assert_eq!(q.settle("broken", &fail, at), Some(n));
            let wait = (0..=60_000u32)
                .step_by(10)
                .map(|ms| MS * ms)
                .find(|d| q.is_due(&"broken", at + *d))
                .unwrap();
            assert!(wait >= last_wait, "failure {n}: {wait:?} < {last_wait:?}");
            last_wait = wait;
        }
        assert!(last_wait >= 1600 * MS, "{last_wait:?}");

        // Unrelated changes do not shorten a backoff.
        q.changed();
        assert!(!q.is_due(&"broken", at + MS));

        // A success resets the backoff: the next failure starts again at 100 ms.
        q.settle("broken", &Ok::<_, &str>(Next::AwaitChange), at);
        assert_eq!(q.settle("broken", &fail, at), Some(1));
        assert!(q.is_due(&"broken", at + 200 * MS));
    }

    #[test]
    fn converged_keys_wait_for_a_change_or_the_resync() {
        let mut q = queue();
        let t0 = Instant::now();
        q.settle("fs", &Ok::<_, &str>(Next::AwaitChange), t0);
        assert!(!q.is_due(&"fs", t0 + 1999 * MS));
        assert!(q.is_due(&"fs", t0 + 2000 * MS), "the periodic resync");
        assert_eq!(q.next_wake(t0), 2000 * MS);
        q.changed();
        assert!(q.is_due(&"fs", Instant::now()), "a change makes it due");

        q.settle("mt", &Ok::<_, &str>(Next::RequeueAfter(500 * MS)), t0);
        assert_eq!(q.next_wake(t0), Duration::ZERO, "fs is due now");
        q.retain(&HashSet::from(["mt"]));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_wake(t0), 500 * MS);
    }
}
