//! A per-address limit on failed authentication. Signed calls are rate
//! limited per access key once verified, but a caller that never proves a
//! key (random key ids, bad signatures, replays) would otherwise cost a key
//! lookup and a signature check per request without bound. Each failure
//! takes a token from its address's bucket; an address whose bucket is
//! empty is refused before any work until it refills. Addresses that
//! authenticate are never slowed down, however busy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed limiter of `per_second` sustained and `burst` at once (both at
/// least 1): the per-key limit of signed calls and this one share it.
pub fn keyed_limiter<K: Clone + Eq + std::hash::Hash>(
    per_second: u32,
    burst: u32,
) -> DefaultKeyedRateLimiter<K> {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// How long from now until a refused key may go again.
pub fn wait_from_now(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ))
}

/// Addresses tracked at most; beyond it the oldest blocks are dropped
/// first (an attacker with many addresses gets no more than it would with
/// few).
const MAX_TRACKED: usize = 65_536;

pub struct FailedAuthLimit {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailedAuthLimit {
    /// `per_second` failures sustained per address, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        FailedAuthLimit {
            failures: keyed_limiter(per_second, burst),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may try now; `Err(wait)` while it is blocked.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let Err(not_until) = self.failures.check_key(&ip) else {
            return;
        };
        let wait = wait_from_now(&not_until);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_TRACKED {
            blocked.retain(|_, until| *until > now);
            self.failures.retain_recent();
        }
        if blocked.len() < MAX_TRACKED {
            blocked.insert(ip, now + wait.max(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_burst_of_failures_and_others_are_not() {
        let limit = FailedAuthLimit::new(1, 5);
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "192.0.2.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limit.admit(bad, now).is_ok());
            limit.failed(bad, now);
        }
        assert!(limit.admit(bad, now).is_ok(), "the burst itself is allowed");
        limit.failed(bad, now);
        let wait = limit.admit(bad, now).unwrap_err();
        assert!(wait >= Duration::from_millis(100), "{wait:?}");
        assert!(
            limit.admit(good, now).is_ok(),
            "another address is unaffected"
        );
        assert!(
            limit.admit(bad, now + Duration::from_secs(2)).is_ok(),
            "the block expires"
        );
    }
}
