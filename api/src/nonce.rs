//! Replay protection: a nonce is accepted once per access key while its
//! request could still pass the time window.
//!
//! Nonces are kept in one-minute buckets by arrival time; a request may be
//! signed up to 15 minutes in the future or past, so a nonce must be
//! remembered for 30 minutes after arrival. Whole buckets are dropped as
//! they age, so cleanup costs nothing per request. Keys are a 128-bit
//! digest of (access key, nonce), which bounds memory per entry.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const BUCKET_SECS: i64 = 60;
const RETAIN_SECS: i64 = 2 * crate::signature::MAX_SKEW_SECS + BUCKET_SECS;

#[derive(Default)]
pub struct NonceCache {
    buckets: Mutex<VecDeque<(i64, HashSet<u128>)>>,
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
    /// Records the nonce; false when it was seen within the retention time.
    pub fn insert(&self, access_key_id: &str, nonce: &str, now: i64) -> bool {
        let key = digest(access_key_id, nonce);
        let slot = now - now.rem_euclid(BUCKET_SECS);
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        while buckets
            .front()
            .is_some_and(|(start, _)| *start + RETAIN_SECS < now)
        {
            buckets.pop_front();
        }
        if buckets.iter().any(|(_, set)| set.contains(&key)) {
            return false;
        }
        match buckets.back_mut() {
            Some((start, set)) if *start == slot => {
                set.insert(key);
            }
            _ => {
                let mut set = HashSet::new();
                set.insert(key);
                buckets.push_back((slot, set));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_repeat_and_forgets_after_retention() {
        let c = NonceCache::default();
        assert!(c.insert("AK", "n1", 1000));
        assert!(!c.insert("AK", "n1", 1500));
        assert!(c.insert("AK2", "n1", 1500), "nonces are per access key");
        assert!(!c.insert("AK", "n1", 1000 + 29 * 60));
        assert!(c.insert("AK", "n1", 1000 + 33 * 60));
    }
}
