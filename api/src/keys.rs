//! A short-lived cache of access keys, so that verifying a signature does
//! not cost a database round trip on every request.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use cpfs_controlplane::accounts::AccessKey;
use cpfs_controlplane::ControlPlane;

use crate::error::ApiError;

/// How long a key (or its absence) is remembered. A disabled or new key
/// takes effect within this time.
const TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; beyond it the cache starts over (junk key ids from
/// unauthenticated callers cannot grow memory without bound).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Option<AccessKey>, Instant)>>,
}

impl KeyCache {
    pub async fn get(&self, cp: &ControlPlane, access_key_id: &str) -> Result<AccessKey, ApiError> {
        let cached = {
            let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
            map.get(access_key_id)
                .filter(|(_, at)| at.elapsed() < TTL)
                .map(|(k, _)| k.clone())
        };
        let key = match cached {
            Some(k) => k,
            None => {
                let fresh = cp.access_key(access_key_id).await?;
                let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
                map.insert(access_key_id.to_string(), (fresh.clone(), Instant::now()));
                fresh
            }
        };
        match key {
            None => Err(ApiError::AccessKeyNotFound),
            Some(k) if !k.active => Err(ApiError::AccessKeyInactive),
            Some(k) => Ok(k),
        }
    }
}
