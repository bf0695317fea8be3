//! A byte-rate limiter shared by the tasks of one node: client I/O under
//! `--max-bandwidth`, resync and rebalance copies under the repair rate, and
//! the scrubber's reads. Each caller reserves its bytes on a virtual
//! timeline and sleeps until its slot, so concurrent callers share the rate
//! fairly and a long idle spell earns at most `BURST` of credit.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Credit an idle limiter may bank.
const BURST: Duration = Duration::from_millis(100);

pub struct Throttle {
    /// Bytes per second; 0 is unlimited.
    rate: u64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            rate: bytes_per_sec,
            next_free: Mutex::new(Instant::now()),
        }
    }

    pub fn unlimited() -> Throttle {
        Throttle::new(0)
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 || bytes == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let earliest = now.checked_sub(BURST).unwrap_or(now);
            let start = (*next).max(earliest);
            *next = start + cost;
            start
        };
        // The caller's bytes are "sent" over [start, start + cost): it may go
        // once its slot has begun, so a lone caller is never delayed twice.
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn callers_share_the_rate() {
        let t = Throttle::new(1 << 20);
        let begin = tokio::time::Instant::now();
        // 4 MiB at 1 MiB/s: the last reservation starts about 3 s in
        // (less the idle credit).
        for _ in 0..4 {
            t.take(1 << 20).await;
        }
        let waited = begin.elapsed();
        assert!(waited >= Duration::from_millis(2800), "{waited:?}");
        assert!(waited <= Duration::from_millis(3100), "{waited:?}");
        let u = Throttle::unlimited();
        let begin = tokio::time::Instant::now();
        u.take(1 << 40).await;
        assert_eq!(begin.elapsed(), Duration::ZERO);
    }
}
