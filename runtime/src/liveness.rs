//! Which background loops of `cpfs serve` are alive: each loop registers
//! with the period it promises and ticks after every pass, with the pass's
//! outcome. `/healthz` reports them and answers 503 when one has not
//! finished a pass for three periods (at least a minute): a wedged loop
//! is visible to an operator's probe instead of hiding behind "ok".

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct LoopState {
    period: Duration,
    last_pass: Instant,
    passes: u64,
    failures: u64,
    last_error: Option<String>,
    /// How long the last pass took, when the loop says.
    last_duration: Option<Duration>,
    /// Objects waiting for the loop, for a loop with a work queue.
    queue_depth: Option<u64>,
}

/// One loop as `/healthz` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoopReport {
    pub name: &'static str,
    pub alive: bool,
    pub seconds_since_pass: u64,
    pub passes: u64,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Liveness {
    loops: Mutex<BTreeMap<&'static str, LoopState>>,
}

impl Liveness {
    /// Starts watching `name`, which promises a pass every `period`.
    pub fn register(&self, name: &'static str, period: Duration) {
        self.lock().insert(
            name,
            LoopState {
                period,
                last_pass: Instant::now(),
                passes: 0,
                failures: 0,
                last_error: None,
                last_duration: None,
                queue_depth: None,
            },
        );
    }

    /// Records a finished pass of `name`.
    pub fn pass(&self, name: &'static str, outcome: Result<(), String>) {
        self.record(name, outcome, None);
    }

    /// Records a finished pass of `name` that took `took`.
    pub fn pass_took(&self, name: &'static str, outcome: Result<(), String>, took: Duration) {
        self.record(name, outcome, Some(took));
    }

    /// Records how many objects wait for `name` (a controller's queue).
    pub fn queue_depth(&self, name: &'static str, depth: usize) {
        if let Some(l) = self.lock().get_mut(name) {
            l.queue_depth = Some(depth as u64);
        }
    }

    fn record(&self, name: &'static str, outcome: Result<(), String>, took: Option<Duration>) {
        let mut loops = self.lock();
        let Some(l) = loops.get_mut(name) else {
            return;
        };
        if took.is_some() {
            l.last_duration = took;
        }
        l.last_pass = Instant::now();
        l.passes += 1;
        if let Err(e) = outcome {
            l.failures += 1;
            l.last_error = Some(e);
        }
    }

    /// Every loop's state, and whether all are alive.
    pub fn report(&self) -> (bool, Vec<LoopReport>) {
        let loops = self.lock();
        let reports: Vec<LoopReport> = loops
            .iter()
            .map(|(name, l)| {
                let since = l.last_pass.elapsed();
                LoopReport {
                    name,
                    alive: since <= (l.period * 3).max(Duration::from_secs(60)),
                    seconds_since_pass: since.as_secs(),
                    passes: l.passes,
                    failures: l.failures,
                    last_error: l.last_error.clone(),
                    last_pass_seconds: l.last_duration.map(|d| d.as_secs_f64()),
                    queue_depth: l.queue_depth,
                }
            })
            .collect();
        (reports.iter().all(|r| r.alive), reports)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, LoopState>> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_and_failures_are_counted_and_a_silent_loop_is_dead() {
        let l = Liveness::default();
        l.register("reconciler", Duration::from_secs(30));
        l.pass("reconciler", Err("database locked".into()));
        let (ok, r) = l.report();
        assert!(ok);
        assert_eq!((r[0].passes, r[0].failures), (1, 1));
        assert_eq!(r[0].last_error.as_deref(), Some("database locked"));

        // A loop whose last pass was 61 s ago, with a 1 s period: dead
        // (three periods, but at least a minute).
        let Some(long_ago) = Instant::now().checked_sub(Duration::from_secs(61)) else {
            return; // the machine booted less than a minute ago
        };
        l.lock().insert(
            "billing",
            LoopState {
                period: Duration::from_secs(1),
                last_pass: long_ago,
                passes: 3,
                failures: 0,
                last_error: None,
                last_duration: None,
                queue_depth: None,
            },
        );
        let (ok, r) = l.report();
        assert!(!ok, "{r:?}");
        let billing = r.iter().find(|r| r.name == "billing").unwrap();
        assert!(!billing.alive);
        l.pass_took("billing", Ok(()), Duration::from_millis(1500));
        l.queue_depth("reconciler", 4);
        let (ok, r) = l.report();
        assert!(ok, "a pass brings it back");
        let billing = r.iter().find(|r| r.name == "billing").unwrap();
        assert_eq!(billing.last_pass_seconds, Some(1.5));
        assert_eq!(r[0].queue_depth, None);
        let reconciler = r.iter().find(|r| r.name == "reconciler").unwrap();
        assert_eq!(reconciler.queue_depth, Some(4));
    }
}
