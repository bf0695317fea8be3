//! Shards: each file system's namespace in memory, loaded on first use,
//! changed under its lock, and made durable through the journal before an
//! answer leaves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cpfs_proto::meta::errno::{EIO, EMOVED};

use super::state::FsState;
use crate::journal::Journal;
use crate::ownership::Ownership;
use crate::{fail, Res};

pub(crate) struct Shard {
    state: Mutex<FsState>,
    generation: u64,
    /// The owner's epoch it was loaded under (`None`: not served by lease).
    epoch: Option<u64>,
    /// The last journal entry this shard submitted and answered after.
    last_seq: AtomicU64,
    /// The last entry it submitted without waiting for it (see
    /// [`Shards::write_unawaited`]): reads do not wait for those, a reload
    /// does.
    unawaited_seq: AtomicU64,
    /// A change of this incarnation was lost (or an operation failed half
    /// way): the shard is reloaded from the store before it is used again.
    poisoned: AtomicBool,
}

/// How long an unawaited entry waits for another operation's commit to
/// carry it before it starts one itself.
const UNAWAITED_COMMIT_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The ownership that bounds waits on a shard of file system `.1`, when
/// this server serves by lease.
pub(crate) type Lease<'a> = Option<(&'a Ownership, &'a str)>;

/// Every loaded shard of this metadata server.
pub(crate) struct Shards {
    pool: sqlx::AnyPool,
    pub journal: Arc<Journal>,
    map: RwLock<HashMap<String, Arc<Shard>>>,
    /// One load at a time: two callers of an unloaded file system must not
    /// build two shards.
    loading: tokio::sync::Mutex<()>,
    /// Set when this server serves only what the control plane assigns it.
    pub ownership: std::sync::OnceLock<Arc<Ownership>>,
}

impl Shards {
    pub fn new(pool: sqlx::AnyPool, journal: Arc<Journal>) -> Shards {
        Shards {
            pool,
            journal,
            map: RwLock::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            ownership: std::sync::OnceLock::new(),
        }
    }

    fn cached(&self, fs: &str, epoch: Option<u64>) -> Option<Arc<Shard>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(fs)
            .filter(|s| !s.poisoned.load(Ordering::Acquire) && s.epoch == epoch)
            .cloned()
    }

    /// The epoch under which this server may serve `fs` (`None` when it
    /// serves everything), or "moved".
    pub fn may_serve(&self, fs: &str) -> Res<Option<u64>> {
        match self.ownership.get() {
            None => Ok(None),
            Some(o) => match o.epoch(fs) {
                Some(e) => Ok(Some(e)),
                None => fail(EMOVED, format!("{fs} is not served here")),
            },
        }
    }

    /// The shard of `fs`, loading it from the store when needed.
    pub async fn get(&self, fs: &str) -> Res<Arc<Shard>> {
        let epoch = self.may_serve(fs)?;
        if let Some(s) = self.cached(fs, epoch) {
            return Ok(s);
        }
        let _one = self.loading.lock().await;
        if let Some(s) = self.cached(fs, epoch) {
            return Ok(s);
        }
        let reloading = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(fs);
        if reloading {
            tracing::warn!(fs, "reloading the namespace from the store after a failure");
        }
        // What earlier incarnations submitted, waited for or not, is
        // settled (committed or refused) before the store is read again,
        // and on PostgreSQL, whose tables lag the journal's log, what the
        // log holds of `fs` (left by a server that stopped, or not yet
        // folded) is folded first.
        let key: Arc<str> = Arc::from(fs);
        if let Err(e) = self.journal.recover(&key, epoch).await {
            return if e == crate::journal::FENCED {
                fail(EMOVED, format!("{fs} is not served here"))
            } else {
                fail(EIO, format!("folding the journal's log of {fs}: {e}"))
            };
        }
        let mut state = FsState::load(&self.pool, fs).await?;
        let generation = self.journal.generation();
        // What the load changed itself (capacity set aside by sessions that
        // ended with the old incarnation, given back) goes to the store with
        // the next commit; a crash before it finds the same and does the same.
        let loaded = state.take_changes();
        let fs_id = state.fs.clone();
        let shard = Arc::new(Shard {
            state: Mutex::new(state),
            generation,
            epoch,
            last_seq: AtomicU64::new(0),
            unawaited_seq: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        });
        if !loaded.is_empty() {
            let (seq, wait) = self.journal.submit(&fs_id, (generation, epoch), loaded);
            shard.unawaited_seq.store(seq, Ordering::Release);
            self.follow_unawaited(shard.clone(), wait);
        }
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fs.to_string(), shard.clone());
        Ok(shard)
    }

    /// The shards loaded now.
    pub fn loaded(&self) -> Vec<Arc<Shard>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forgets the shard of `fs` (its file system was deleted).
    pub fn unload(&self, fs: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(fs);
    }

    /// Applies `f` to the namespace of `fs` and answers once its changes
    /// are committed. `f` checks everything before it changes anything:
    /// an error leaves the namespace as it was.
    pub async fn write<T>(&self, fs: &str, f: impl FnOnce(&mut FsState) -> Res<T>) -> Res<T> {
        let shard = self.get(fs).await?;
        let lease = self.ownership.get().map(|o| (o.as_ref(), fs));
        shard.write(&self.journal, lease, f).await
    }

    /// Changes the namespace of `fs` with `f` without waiting for the
    /// commit, or starting one: the changes go with the next operation's.
    /// Only for changes that a load makes again by itself when they were
    /// lost (the giving back of capacity set aside), since nothing waits
    /// for them: reads do not, and a crash may take them back.
    pub async fn write_unawaited(&self, fs: &str, f: impl FnOnce(&mut FsState)) -> Res<()> {
        let shard = self.get(fs).await?;
        let mut st = shard.lock();
        if shard.poisoned.load(Ordering::Acquire) {
            return fail(EIO, "namespace is being reloaded; retry");
        }
        f(&mut st);
        let changes = st.take_changes();
        if !changes.is_empty() {
            let (seq, wait) = self
                .journal
                .submit(&st.fs, (shard.generation, shard.epoch), changes);
            shard.unawaited_seq.store(seq, Ordering::Release);
            drop(st);
            self.follow_unawaited(shard, wait);
        }
        Ok(())
    }

    /// Sees an unawaited entry to the store: it goes with the next
    /// operation's commit, or with one started a moment later on a server
    /// that has nothing else to commit; if it fails, the shard is reloaded
    /// (the failure is not left for an unrelated operation to meet).
    fn follow_unawaited(
        &self,
        shard: Arc<Shard>,
        wait: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) {
        let journal = self.journal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(UNAWAITED_COMMIT_AFTER).await;
            journal.lead();
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => shard.poison(&e),
                Err(_) => shard.poison("journal stopped"),
            }
        });
    }

    /// Reads the namespace of `fs` with `f`, once every change it may have
    /// seen is committed.
    pub async fn read<T>(&self, fs: &str, f: impl FnOnce(&FsState) -> Res<T>) -> Res<T> {
        let shard = self.get(fs).await?;
        let lease = self.ownership.get().map(|o| (o.as_ref(), fs));
        shard.read(&self.journal, lease, f).await
    }
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, FsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poison(&self, why: &str) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(why, "namespace shard discarded; it is reloaded on next use");
        }
    }

    pub async fn write<T>(
        &self,
        journal: &Journal,
        lease: Lease<'_>,
        f: impl FnOnce(&mut FsState) -> Res<T>,
    ) -> Res<T> {
        let (out, wait) = {
            let mut st = self.lock();
            if self.poisoned.load(Ordering::Acquire) {
                return fail(EIO, "namespace is being reloaded; retry");
            }
            let out = f(&mut st);
            let changes = st.take_changes();
            match out {
                Err(e) => {
                    if !changes.is_empty() {
                        self.poison("an operation failed after changing the namespace");
                    }
                    (Err(e), None)
                }
                Ok(v) if changes.is_empty() => (Ok(v), None),
                Ok(v) => {
                    let (seq, wait) =
                        journal.submit(&st.fs, (self.generation, self.epoch), changes);
                    self.last_seq.store(seq, Ordering::Release);
                    (Ok(v), Some(wait))
                }
            }
        };
        if wait.is_some() {
            // With the shard's lock released, so that others' operations
            // queue meanwhile and share the next commit.
            journal.lead();
        }
        match wait {
            // Nothing changed: the answer may still rest on changes not
            // yet committed.
            None => self.settled(journal, lease).await?,
            Some(wait) => match self.within_lease(lease, wait).await? {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.poison(&e);
                    if e == crate::journal::FENCED {
                        // Nothing of it was written: the client asks where
                        // the file system is now and retries there.
                        return fail(EMOVED, e);
                    }
                    return fail(EIO, format!("metadata store: {e}"));
                }
                Err(_) => {
                    self.poison("journal stopped");
                    return fail(EIO, "metadata store: the journal stopped");
                }
            },
        }
        out
    }

    pub async fn read<T>(
        &self,
        journal: &Journal,
        lease: Lease<'_>,
        f: impl FnOnce(&FsState) -> Res<T>,
    ) -> Res<T> {
        let out = f(&self.lock());
        self.settled(journal, lease).await?;
        out
    }

    /// Waits until what this shard submitted so far is committed.
    async fn settled(&self, journal: &Journal, lease: Lease<'_>) -> Res<()> {
        let seq = self.last_seq.load(Ordering::Acquire);
        self.within_lease(lease, journal.durable(seq))
            .await?
            .map_err(|e| (EIO, e.to_string()))?;
        if self.poisoned.load(Ordering::Acquire) {
            return fail(EIO, "namespace is being reloaded; retry");
        }
        Ok(())
    }

    /// Waits for `done`, but, on a shard served by lease, not past the
    /// lease: a server cut off from the control plane (and maybe from the
    /// store, its commit stuck on a dead connection) must stop answering
    /// before another server takes over. The operation is then answered
    /// "moved": its commit either landed before the new owner's epoch (the
    /// epoch check in the commit holds the owner row, so a reassignment
    /// waits for it), and the client's retry under the same request id is
    /// answered from its record, or it never will, and the retry applies it.
    async fn within_lease<F: Future>(&self, lease: Lease<'_>, done: F) -> Res<F::Output> {
        let (Some((ownership, fs)), Some(epoch)) = (lease, self.epoch) else {
            return Ok(done.await);
        };
        tokio::pin!(done);
        loop {
            let Some(end) = ownership.lease_end(fs, epoch) else {
                self.poison("the lease ended before a commit was confirmed");
                return fail(EMOVED, format!("{fs}: the lease ended; ask where it went"));
            };
            tokio::select! {
                out = &mut done => return Ok(out),
                // A renewal moves the end: look again.
                _ = tokio::time::sleep_until(end.into()) => {}
            }
        }
    }

    /// Runs `f` on the state under the lock, without waiting for the
    /// journal (bookkeeping that reads only what it will itself commit).
    pub fn with<T>(&self, f: impl FnOnce(&FsState) -> T) -> T {
        f(&self.lock())
    }
}
