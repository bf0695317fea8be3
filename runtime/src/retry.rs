//! The one retry policy: exponential backoff with jitter (the `backon`
//! crate), so every retry in the system spreads out the same way and a
//! fleet of clients recovering from one failure does not retry in step.

use std::time::Duration;

pub use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays starting at `first`, doubling up to `cap`, with jitter, for as
/// long as the caller keeps asking (bounded retries use `.with_max_times`).
pub fn policy(first: Duration, cap: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// The delays of [`policy`], for loops that sleep between attempts
/// themselves.
pub fn delays(first: Duration, cap: Duration) -> ExponentialBackoff {
    policy(first, cap).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap_with_jitter() {
        let cap = Duration::from_secs(2);
        let delays: Vec<Duration> = policy(Duration::from_millis(100), cap)
            .build()
            .take(12)
            .collect();
        assert_eq!(delays.len(), 12, "the policy never runs out");
        // Jitter adds up to one more delay on top: [d, 2d).
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(200));
        assert!(delays[3] >= Duration::from_millis(800), "{delays:?}");
        assert!(delays.iter().all(|d| *d < cap * 2), "{delays:?}");
    }
}
