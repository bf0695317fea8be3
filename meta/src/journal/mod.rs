//! The journal: every namespace change reaches the store through here, in
//! group-committed batches.
//!
//! A shard applies an operation in memory and submits the rows it changed
//! (their images after the operation) as one [`Entry`] with a sequence
//! number. One writer per store takes every entry queued while the previous
//! transaction was committing, keeps the last image of each row, and writes
//! them all in one transaction: many operations from many clients share one
//! commit, and on SQLite the writer owns its connection on its own thread,
//! so a batch costs one hand-off instead of one per statement. An operation
//! is answered once its entry committed; a read waits for the entries of
//! its shard submitted before it ([`Journal::durable`]), so nobody sees a
//! change that a crash could still take back.

mod pg_script;
mod rows;
mod sql;
mod sqlite;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use rows::{Change, Counters, FilesetRow, Owner, OwnerRow};

use cpfs_store::{Backend, Store};

/// Why the journal could not start or commit.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("opening the SQLite database for the journal: {0}")]
    Open(String),
    #[error("the journal's writer has stopped")]
    Stopped,
    #[error("committing namespace changes: {0}")]
    Commit(String),
}

/// One operation's changed rows.
pub(crate) struct Entry {
    pub seq: u64,
    pub fs: Arc<str>,
    /// The shard's incarnation: after a failed commit the shard is
    /// reloaded from the store, and entries of the old one are refused.
    pub generation: u64,
    /// The owner's epoch the changes were made under, checked in the
    /// commit (`None`: not served by lease).
    pub epoch: Option<u64>,
    pub changes: Vec<Change>,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Why an entry was refused when its file system has another owner now:
/// not a failure of the store, so the operation is answered "moved" and
/// the client retries it where the file system went.
pub(crate) const FENCED: &str = "another metadata server owns this file system now";

/// The most entries one transaction takes.
const MAX_BATCH: usize = 4096;
/// A failing commit is tried this many times (a busy database, a
/// PostgreSQL connection that was reset) before its operations fail.
const COMMIT_ATTEMPTS: usize = 5;

/// The write side of one store.
pub struct Journal {
    queue: Mutex<Queue>,
    committed: watch::Receiver<u64>,
    generations: std::sync::atomic::AtomicU64,
    /// Commits made, and the entries they carried (for `/metrics`).
    pub stats: Arc<JournalStats>,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub entries: std::sync::atomic::AtomicU64,
}

struct Queue {
    next_seq: u64,
    tx: mpsc::UnboundedSender<Entry>,
}

/// What a writer needs to do: write the batch's rows in one transaction,
/// except those of file systems whose owner epoch in the store is no
/// longer the batch's (another server owns them now); it answers those.
pub(crate) trait Writer: Send + 'static {
    fn write(
        &mut self,
        rows: &rows::Batch,
    ) -> impl std::future::Future<Output = Result<Vec<Arc<str>>, String>> + Send;
}

impl Journal {
    /// Starts the writer for `store`: a thread with its own SQLite
    /// connection, or a task on the PostgreSQL pool.
    pub fn start(store: &Store) -> Result<Arc<Journal>, JournalError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(0u64);
        let stats = Arc::new(JournalStats::default());
        let counted = stats.clone();
        match store.backend {
            Backend::Sqlite => {
                let file = store
                    .sqlite_file
                    .as_deref()
                    .ok_or_else(|| JournalError::Open("no database file".into()))?;
                let writer = sqlite::SqliteWriter::open(file)?;
                std::thread::Builder::new()
                    .name("cpfs-journal".into())
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().build();
                        match rt {
                            Ok(rt) => rt.block_on(run(writer, rx, done_tx, counted)),
                            Err(e) => tracing::error!(error = %e, "journal thread could not start"),
                        }
                    })
                    .map_err(|e| JournalError::Open(e.to_string()))?;
            }
            Backend::Postgres => {
                let writer = sql::SqlWriter::new(store.clone());
                tokio::spawn(run(writer, rx, done_tx, counted));
            }
        }
        Ok(Arc::new(Journal {
            queue: Mutex::new(Queue { next_seq: 1, tx }),
            committed: done_rx,
            generations: std::sync::atomic::AtomicU64::new(1),
            stats,
        }))
    }

    /// A new shard incarnation number.
    pub(crate) fn generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `changes`; the receiver answers once they are committed.
    /// Callers hold their shard's lock, so a shard's entries are numbered
    /// and queued in the order its operations were applied.
    pub(crate) fn submit(
        &self,
        fs: &Arc<str>,
        (generation, epoch): (u64, Option<u64>),
        changes: Vec<Change>,
    ) -> (u64, oneshot::Receiver<Result<(), String>>) {
        let (done, wait) = oneshot::channel();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let seq = q.next_seq;
        q.next_seq += 1;
        // A stopped writer drops the entry, and with it `done`: the
        // receiver then reports the journal stopped.
        let _ = q.tx.send(Entry {
            seq,
            fs: fs.clone(),
            generation,
            epoch,
            changes,
            done,
        });
        (seq, wait)
    }

    /// Waits until every entry up to `seq` was committed or failed.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), JournalError> {
        if *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= seq)
            .await
            .map(|_| ())
            .map_err(|_| JournalError::Stopped)
    }
}

/// The writer loop: one transaction per batch of whatever is queued.
async fn run<W: Writer>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    committed: watch::Sender<u64>,
    stats: Arc<JournalStats>,
) {
    // Shards whose commit failed, with the generation that failed: their
    // later entries are refused until the shard is reloaded (a new
    // generation), so no change built on a lost one is ever written.
    let mut failed: HashMap<Arc<str>, u64> = HashMap::new();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let (refused, accepted): (Vec<Entry>, Vec<Entry>) = batch
            .drain(..)
            .partition(|e| failed.get(&e.fs).is_some_and(|g| e.generation <= *g));
        let last = refused
            .iter()
            .chain(accepted.iter())
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        for e in refused {
            let _ = e
                .done
                .send(Err("an earlier change of this file system was lost".into()));
        }
        let rows = rows::Batch::coalesce(&accepted);
        let mut outcome = Err(String::new());
        for attempt in 0..COMMIT_ATTEMPTS {
            outcome = writer.write(&rows).await;
            match &outcome {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, entries = accepted.len(), "journal commit failed");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        if outcome.is_ok() {
            use std::sync::atomic::Ordering::Relaxed;
            stats.commits.fetch_add(1, Relaxed);
            stats.entries.fetch_add(accepted.len() as u64, Relaxed);
        }
        let fenced = outcome.clone().unwrap_or_default();
        for e in &accepted {
            if outcome.is_err() || fenced.contains(&e.fs) {
                let g = failed.entry(e.fs.clone()).or_insert(0);
                *g = (*g).max(e.generation);
            }
        }
        for e in accepted {
            let r = match &outcome {
                Err(why) => Err(why.clone()),
                Ok(fenced) if fenced.contains(&e.fs) => Err(FENCED.to_string()),
                Ok(_) => Ok(()),
            };
            let _ = e.done.send(r);
        }
        committed.send_replace(last);
    }
}
