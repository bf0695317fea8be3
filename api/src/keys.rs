//! A short-lived cache of access keys, so that verifying a signature does
//! not cost a database round trip on every request, and a set of the key
//! ids that exist, so that an unknown id (a typo, or a caller trying random
//! ids from many addresses) costs no query of its own: however many
//! unknown ids arrive, the set is reloaded at most once per `IDS_REFRESH`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
/// How stale the set of existing ids may be when an id is not in it. A key
/// this process creates is usable at once (the set is dropped when
/// `ControlPlane::keys_generation` moves); one added to a shared store by
/// another process works within this time.
const IDS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct KnownIds {
    ids: HashSet<String>,
    loaded: Option<Instant>,
    /// `keys_generation` when loaded.
    generation: u64,
}

#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Option<AccessKey>, Instant)>>,
    known: RwLock<KnownIds>,
    /// One reload of the id set at a time; the others wait and reuse it.
    reload: tokio::sync::Mutex<()>,
    /// Database queries made for keys (exported on /metrics).
    pub queries: std::sync::Arc<AtomicU64>,
}

impl KeyCache {
    fn cached(&self, access_key_id: &str) -> Option<Option<AccessKey>> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(access_key_id)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(k, _)| k.clone())
    }

    /// Whether `access_key_id` may exist: in the set, or the set is older
    /// than `IDS_REFRESH` and a reload finds it.
    async fn may_exist(&self, cp: &ControlPlane, access_key_id: &str) -> Result<bool, ApiError> {
        let generation = || cp.keys_generation.load(Ordering::SeqCst);
        let fresh = |k: &KnownIds| {
            k.generation == generation() && k.loaded.is_some_and(|at| at.elapsed() < IDS_REFRESH)
        };
        {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            if known.ids.contains(access_key_id) {
                return Ok(true);
            }
            if fresh(&known) {
                return Ok(false);
            }
        }
        let _one = self.reload.lock().await;
        {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            if fresh(&known) {
                return Ok(known.ids.contains(access_key_id));
            }
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        // Read before the query: a key added meanwhile moves it again.
        let at_generation = generation();
        let ids: HashSet<String> = cp.access_key_ids().await?.into_iter().collect();
        let found = ids.contains(access_key_id);
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = KnownIds {
            ids,
            loaded: Some(Instant::now()),
            generation: at_generation,
        };
        Ok(found)
    }

    pub async fn get(&self, cp: &ControlPlane, access_key_id: &str) -> Result<AccessKey, ApiError> {
        let key = match self.cached(access_key_id) {
            Some(k) => k,
            None if !self.may_exist(cp, access_key_id).await? => None,
            None => {
                self.queries.fetch_add(1, Ordering::Relaxed);
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
