//! Replay protection: a nonce is accepted once per access key while its
//! request could still pass the time window.
//!
//! Nonces are kept in one-minute buckets by arrival time; a request may be
//! signed up to 15 minutes in the future or past, so a nonce must be
//! remembered for 30 minutes after arrival. Whole buckets are dropped as
//! they age, so cleanup costs nothing per request. Keys are a 128-bit
//! digest of (access key, nonce), which bounds memory per entry.
//!
//! The number of entries is bounded across all keys ([`MAX_NONCES`]):
//! the per-key rate limit bounds one key, but not many keys together.
//! When the cache is full a request is refused as throttled until the
//! oldest bucket ages out, never accepted by forgetting a nonce (which
//! would let its request be replayed).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const BUCKET_SECS: i64 = 60;
const RETAIN_SECS: i64 = 2 * crate::signature::MAX_SKEW_SECS + BUCKET_SECS;

/// At most this many nonces are remembered (about 100 MiB at worst: 16
/// bytes of digest and the hash table's overhead each). At the default
/// per-key rate (2,000/s) that is one key's half hour, or the sustained
/// traffic of hundreds of ordinary clients.
pub const MAX_NONCES: usize = 1 << 22;

pub struct NonceCache {
    buckets: Mutex<Buckets>,
    limit: usize,
}

#[derive(Default)]
struct Buckets {
    by_arrival: VecDeque<(i64, HashSet<u128>)>,
    total: usize,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Seen within the retention time: a replay.
    Used,
    /// The cache is full; retry after this many seconds.
    Full { retry_after_secs: i64 },
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache::with_limit(MAX_NONCES)
    }
}

fn digest(access_key_id: &str, nonce: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(access_key_id.as_bytes());
    h.update([0u8]);
    h.update(nonce.as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_le_bytes(first)
}

impl NonceCache {
    /// A cache that remembers at most `limit` nonces.
    pub fn with_limit(limit: usize) -> NonceCache {
        NonceCache {
            buckets: Mutex::new(Buckets::default()),
            limit,
        }
    }

    /// Records the nonce, unless it was seen within the retention time or
    /// the cache is full.
    pub fn insert(&self, access_key_id: &str, nonce: &str, now: i64) -> Result<(), Refused> {
        let key = digest(access_key_id, nonce);
        let slot = now - now.rem_euclid(BUCKET_SECS);
        let mut b = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((start, set)) = b.by_arrival.front() {
            if *start + RETAIN_SECS >= now {
                break;
            }
            let dropped = set.len();
            b.by_arrival.pop_front();
            b.total -= dropped;
        }
        if b.by_arrival.iter().any(|(_, set)| set.contains(&key)) {
            return Err(Refused::Used);
        }
        if b.total >= self.limit {
            let oldest = b.by_arrival.front().map_or(now, |(start, _)| *start);
            return Err(Refused::Full {
                retry_after_secs: (oldest + RETAIN_SECS + 1 - now).max(1),
            });
        }
        b.total += 1;
        match b.by_arrival.back_mut() {
            Some((start, set)) if *start == slot => {
                set.insert(key);
            }
            _ => {
                b.by_arrival.push_back((slot, HashSet::from([key])));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_repeat_and_forgets_after_retention() {
        let c = NonceCache::default();
        assert_eq!(c.insert("AK", "n1", 1000), Ok(()));
        assert_eq!(c.insert("AK", "n1", 1500), Err(Refused::Used));
        assert_eq!(
            c.insert("AK2", "n1", 1500),
            Ok(()),
            "nonces are per access key"
        );
        assert_eq!(c.insert("AK", "n1", 1000 + 29 * 60), Err(Refused::Used));
        assert_eq!(c.insert("AK", "n1", 1000 + 33 * 60), Ok(()));
    }

    #[test]
    fn many_keys_together_fill_it_only_up_to_the_limit() {
        let c = NonceCache::with_limit(100);
        for i in 0..100 {
            assert_eq!(c.insert(&format!("AK{i}"), "n", 1000 + i / 10), Ok(()));
        }
        // Full: a fresh nonce of any key waits for the oldest bucket.
        let Err(Refused::Full { retry_after_secs }) = c.insert("AKnew", "n", 1010) else {
            panic!("accepted past the limit");
        };
        assert_eq!(1010 + retry_after_secs, 960 + RETAIN_SECS + 1);
        // A replay is still a replay, not a "retry later".
        assert_eq!(c.insert("AK5", "n", 1010), Err(Refused::Used));
        // Once the oldest bucket ages out, there is room again, and the
        // count went down with it (every entry was in that one bucket).
        let later = 960 + RETAIN_SECS + 1;
        assert_eq!(c.insert("AKnew", "n", later), Ok(()));
        for i in 0..99 {
            assert_eq!(c.insert(&format!("AKmore{i}"), "n", later), Ok(()));
        }
        assert!(matches!(
            c.insert("AKx", "n", later),
            Err(Refused::Full { .. })
        ));
    }
}
