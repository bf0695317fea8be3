//! The journal: every namespace change reaches the store through here, in
//! group-committed batches.
//!
//! A shard applies an operation in memory and submits the rows it changed
//! (their images after the operation) as one [`Entry`] with a sequence
//! number. Whoever commits takes every entry queued so far, keeps the last
//! image of each row, and commits them all in one transaction, as one log
//! row per file system that a folder writes into the tables behind the
//! commits (`log.rs`): many operations from many clients share one
//! commit. On an idle SQLite
//! journal the operation's own thread commits (no hand-off at all); under
//! load, or on PostgreSQL, a writer thread or task does (see [`Journal`]).
//! An operation is answered once its entry committed; a read waits for the
//! entries of its shard submitted before it ([`Journal::durable`]), so
//! nobody sees a change that a crash could still take back.

mod checkpoint;
mod log;
#[cfg(test)]
mod log_scenarios;
mod pg_log;
mod pg_pipeline;
mod pg_rows;
mod rows;
mod sqlite;
mod sqlite_log;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
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

/// The longest [`Journal::settled`] waits.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// The most entries one transaction takes.
const MAX_BATCH: usize = 4096;
/// A failing commit is tried this many times (a busy database, a
/// PostgreSQL connection that was reset) before its operations fail.
const COMMIT_ATTEMPTS: usize = 5;

/// The write side of one store.
///
/// Who commits: whoever holds the lead. An operation queues its entry
/// under its shard's lock and then, with that lock released, takes the
/// lead if nobody holds it ([`Journal::lead`]). On SQLite the leader
/// commits what is queued itself, on the request's own thread, with a
/// connection that never waits for the database lock: an operation
/// arriving on an idle journal is committed and answered without a single
/// hand-off between threads. Operations queued meanwhile wait for the
/// leader's next batch (group commit); when more queued during a commit,
/// or the database was busy (the control plane writing), or the commit
/// failed, the lead passes to the journal's writer thread, which commits,
/// retries with backoff and keeps the lead until nothing is queued. On
/// PostgreSQL the lead always goes to the writer task, whose commits are
/// one round trip on a connection it keeps.
pub struct Journal {
    shared: Arc<Shared>,
    /// SQLite: the leader's own connection.
    inline: Option<Mutex<sqlite::SqliteWriter>>,
    /// Hands the lead (and a batch whose inline commit failed) to the
    /// writer.
    takeover: mpsc::UnboundedSender<Option<Prepared>>,
    committed: watch::Receiver<u64>,
    generations: std::sync::atomic::AtomicU64,
    /// Commits made, and the entries they carried (for `/metrics`).
    pub stats: Arc<JournalStats>,
    /// The thread or task that folds the log into the tables.
    folds: log::Folds,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub entries: std::sync::atomic::AtomicU64,
    /// Commits an operation made on its own thread (the rest were the
    /// writer's).
    pub inline_commits: std::sync::atomic::AtomicU64,
    /// Times the lead passed to the writer.
    pub handovers: std::sync::atomic::AtomicU64,
}

/// What every committer shares.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the gate's holder (the checkpointer or the folder) waiting
    /// for the lead when it is granted.
    lead_granted: Condvar,
    /// Taken by a gate's holder for as long as it waits for and holds the
    /// lead.
    gate_turn: Mutex<()>,
    /// SQLite: the thread that checkpoints the log, told of each commit.
    checkpoints: OnceLock<checkpoint::Checkpoints>,
    /// Shards whose commit failed, with the generation that failed: their
    /// later entries are refused until the shard is reloaded (a new
    /// generation), so no change built on a lost one is ever written.
    failed: Mutex<HashMap<Arc<str>, u64>>,
    committed: watch::Sender<u64>,
    stats: Arc<JournalStats>,
}

struct Queue {
    next_seq: u64,
    pending: Vec<Entry>,
    /// Somebody holds the lead: it takes what is pending before it lets go.
    leading: bool,
    /// A gate's holder (the checkpointer, the folder) waits for the lead:
    /// whoever holds it passes it on
    /// after its commit ([`Queue::pass_lead`]).
    gate_waits: bool,
    /// The lead was passed to the gate's holder.
    gate_leads: bool,
}

impl Queue {
    /// Called by a leader done with its commit: passes the lead to a
    /// waiting gate's holder (true), or lets go of it when nothing is
    /// queued (true), or keeps it to commit what is (false).
    fn pass_lead(&mut self, turn: &Condvar) -> bool {
        if self.gate_waits {
            self.gate_waits = false;
            self.gate_leads = true;
            turn.notify_one();
            true
        } else if self.pending.is_empty() {
            self.leading = false;
            true
        } else {
            false
        }
    }
}

/// A batch taken from the queue, its refused entries answered, its rows
/// coalesced, ready to write.
struct Prepared {
    accepted: Vec<Entry>,
    rows: rows::Batch,
    /// The highest sequence number in the batch.
    last: u64,
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

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// Starts the writer for `store`: a thread with its own SQLite
    /// connection (and another for inline commits), or a task on the
    /// PostgreSQL pool.
    pub fn start(store: &Store) -> Result<Arc<Journal>, JournalError> {
        let (takeover, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(0u64);
        let stats = Arc::new(JournalStats::default());
        let shared = Arc::new(Shared::new(done_tx, stats.clone()));
        let mut inline = None;
        let (folds, asked) = log::Folds::channel();
        match store.backend {
            Backend::Sqlite => {
                let file = store
                    .sqlite_file
                    .as_deref()
                    .ok_or_else(|| JournalError::Open("no database file".into()))?;
                let appends = sqlite::Appends {
                    folds: folds.clone(),
                    next_seq: Default::default(),
                };
                let writer = sqlite::SqliteWriter::open(file, true)?.appending(appends.clone());
                inline = Some(Mutex::new(
                    sqlite::SqliteWriter::open(file, false)?.appending(appends),
                ));
                let gate = || LeadGate {
                    shared: Arc::downgrade(&shared),
                    takeover: takeover.downgrade(),
                };
                let checkpoints = checkpoint::Checkpoints::start(file, gate())?;
                let _ = shared.checkpoints.set(checkpoints);
                let folder = sqlite_log::SqliteFolder::open(file, gate())?;
                on_thread(
                    "cpfs-journal-fold",
                    log::fold_behind(folder, asked, log::fold_delay(log::SQLITE_FOLD_DELAY)),
                )?;
                on_thread("cpfs-journal", run(writer, rx, shared.clone()))?;
            }
            Backend::Postgres => {
                let url = store
                    .postgres_url
                    .clone()
                    .ok_or_else(|| JournalError::Open("the store has no PostgreSQL URL".into()))?;
                // The pool read the URL; the journal's own driver must too,
                // or every commit would fail.
                pg_pipeline::check_url(&url).map_err(|e| {
                    JournalError::Open(format!(
                        "the database URL is not one the journal's driver reads: {e}"
                    ))
                })?;
                let folder = pg_pipeline::PgWriter::named(
                    url.clone(),
                    store.pool.clone(),
                    "cpfs-journal-fold",
                );
                tokio::spawn(log::fold_behind(
                    folder,
                    asked,
                    log::fold_delay(log::FOLD_DELAY),
                ));
                let writer = pg_log::PgLogWriter::new(
                    pg_pipeline::PgWriter::new(url, store.pool.clone()),
                    folds.clone(),
                );
                tokio::spawn(run(writer, rx, shared.clone()));
            }
        }
        Ok(Arc::new(Journal {
            shared,
            inline,
            takeover,
            committed: done_rx,
            generations: std::sync::atomic::AtomicU64::new(1),
            stats,
            folds,
        }))
    }

    /// Folds what the store's log holds of `fs` into its tables, under
    /// `epoch`: call it before loading `fs` from the tables. [`FENCED`]
    /// when `fs` has another owner.
    ///
    /// First waits for every entry submitted so far to be committed or
    /// refused: a shard dropped when its lease lapsed may have entries
    /// still queued or being retried, and what they write must be in the
    /// store before it is read, not after.
    pub(crate) async fn recover(&self, fs: &Arc<str>, epoch: Option<u64>) -> Result<(), String> {
        let submitted = locked(&self.shared.queue).next_seq - 1;
        self.lead();
        self.durable(submitted).await.map_err(|e| e.to_string())?;
        let (done, answer) = oneshot::channel();
        let asked = self.folds.ask(log::Fold::Recover {
            fs: fs.clone(),
            epoch,
            done,
        });
        if !asked {
            return Err(JournalError::Stopped.to_string());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(JournalError::Stopped.to_string()))
    }

    /// Returns once everything committed so far was folded into the
    /// store's tables (a file system that moved on meanwhile is left to
    /// its new owner), or after [`SETTLE_WAIT`] if the folder is stuck on a store
    /// that keeps failing.
    pub async fn settled(&self) {
        let (done, answer) = oneshot::channel();
        if self.folds.ask(log::Fold::Settle(done))
            && tokio::time::timeout(SETTLE_WAIT, answer).await.is_err()
        {
            tracing::warn!("the journal's log is not folded yet; going on");
        }
    }

    /// A new shard incarnation number.
    pub(crate) fn generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `changes`; the receiver answers once they are committed.
    /// Callers hold their shard's lock, so a shard's entries are numbered
    /// and queued in the order its operations were applied; once they let
    /// go of it, they call [`Journal::lead`].
    pub(crate) fn submit(
        &self,
        fs: &Arc<str>,
        (generation, epoch): (u64, Option<u64>),
        changes: Vec<Change>,
    ) -> (u64, oneshot::Receiver<Result<(), String>>) {
        let (done, wait) = oneshot::channel();
        let mut q = locked(&self.shared.queue);
        let seq = q.next_seq;
        q.next_seq += 1;
        // A stopped writer could never take the lead: the entry is
        // dropped, and with it `done`, and the receiver reports the
        // journal stopped.
        if !self.takeover.is_closed() {
            q.pending.push(Entry {
                seq,
                fs: fs.clone(),
                generation,
                epoch,
                changes,
                done,
            });
        }
        (seq, wait)
    }

    /// Commits what is queued if nobody else is doing so (see
    /// [`Journal`]). Call it without holding a shard's lock: the commit
    /// may take a while, and other operations on the shard queue behind
    /// it meanwhile, to share the next commit.
    pub(crate) fn lead(&self) {
        let batch = {
            let mut q = locked(&self.shared.queue);
            if q.leading || q.pending.is_empty() {
                return;
            }
            q.leading = true;
            self.inline.is_some().then(|| take_batch(&mut q.pending))
        };
        let (Some(batch), Some(inline)) = (batch, &self.inline) else {
            // PostgreSQL: the writer task commits.
            return self.hand_over(None);
        };
        let prepared = self.shared.prepare(batch);
        match locked(inline).write_now(&prepared.rows) {
            Ok(fenced) => {
                self.stats
                    .inline_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.shared.finish(prepared, Ok(fenced));
                let mut q = locked(&self.shared.queue);
                if !q.pass_lead(&self.shared.lead_granted) {
                    // Others queued during the commit: the writer commits
                    // them, and this operation is answered now.
                    drop(q);
                    self.hand_over(None);
                }
            }
            Err(e) => {
                // Nothing was written (the transaction rolled back): the
                // writer tries again, waiting for the database as long as
                // it takes.
                tracing::debug!(error = %e, "inline commit deferred to the journal writer");
                self.hand_over(Some(prepared));
            }
        }
    }

    /// Passes the lead to the writer. When the writer is gone, the batch
    /// is dropped (its operations hear that the journal stopped).
    fn hand_over(&self, batch: Option<Prepared>) {
        self.stats
            .handovers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.takeover.send(batch);
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

/// Runs `task` on a thread of its own (SQLite's connections block).
fn on_thread(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), JournalError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            match rt {
                Ok(rt) => rt.block_on(task),
                Err(e) => tracing::error!(error = %e, "journal thread could not start"),
            }
        })
        .map(|_| ())
        .map_err(|e| JournalError::Open(e.to_string()))
}

/// Marks `e`'s shard incarnation failed: its later entries are refused
/// until the shard is reloaded.
fn refuse_after(failed: &mut HashMap<Arc<str>, u64>, e: &Entry) {
    let g = failed.entry(e.fs.clone()).or_insert(0);
    *g = (*g).max(e.generation);
}

/// At most [`MAX_BATCH`] entries from the front of the queue.
fn take_batch(pending: &mut Vec<Entry>) -> Vec<Entry> {
    if pending.len() <= MAX_BATCH {
        std::mem::take(pending)
    } else {
        pending.drain(..MAX_BATCH).collect()
    }
}

impl Shared {
    /// Nothing queued, nobody leading.
    fn new(committed: watch::Sender<u64>, stats: Arc<JournalStats>) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                next_seq: 1,
                pending: Vec::new(),
                leading: false,
                gate_waits: false,
                gate_leads: false,
            }),
            lead_granted: Condvar::new(),
            gate_turn: Mutex::new(()),
            checkpoints: OnceLock::new(),
            failed: Mutex::new(HashMap::new()),
            committed,
            stats,
        }
    }

    /// Answers the entries of shards whose earlier commit failed, and
    /// coalesces the others' rows.
    fn prepare(&self, batch: Vec<Entry>) -> Prepared {
        let last = batch.iter().map(|e| e.seq).max().unwrap_or(0);
        let (refused, accepted): (Vec<Entry>, Vec<Entry>) = {
            let failed = locked(&self.failed);
            batch
                .into_iter()
                .partition(|e| failed.get(&e.fs).is_some_and(|g| e.generation <= *g))
        };
        for e in refused {
            let _ = e
                .done
                .send(Err("an earlier change of this file system was lost".into()));
        }
        // Entries made under an older epoch than others of the same file
        // system in this batch come from an incarnation that lost it since
        // (epochs only grow): the store would fence them, but coalesced
        // with the newer ones they would be written under the newer epoch.
        let mut newest: HashMap<Arc<str>, u64> = HashMap::new();
        for e in &accepted {
            if let Some(epoch) = e.epoch {
                let n = newest.entry(e.fs.clone()).or_insert(epoch);
                *n = (*n).max(epoch);
            }
        }
        let (stale, accepted): (Vec<Entry>, Vec<Entry>) = accepted.into_iter().partition(|e| {
            e.epoch
                .is_some_and(|epoch| newest.get(&e.fs).is_some_and(|n| epoch < *n))
        });
        if !stale.is_empty() {
            let mut failed = locked(&self.failed);
            for e in stale {
                refuse_after(&mut failed, &e);
                let _ = e.done.send(Err(FENCED.to_string()));
            }
        }
        let rows = rows::Batch::coalesce(&accepted);
        Prepared {
            accepted,
            rows,
            last,
        }
    }

    /// Answers a batch's operations with its commit's outcome.
    fn finish(&self, p: Prepared, outcome: Result<Vec<Arc<str>>, String>) {
        if outcome.is_ok() {
            if let Some(c) = self.checkpoints.get() {
                c.committed();
            }
            use std::sync::atomic::Ordering::Relaxed;
            self.stats.commits.fetch_add(1, Relaxed);
            self.stats
                .entries
                .fetch_add(p.accepted.len() as u64, Relaxed);
        }
        let fenced = outcome.clone().unwrap_or_default();
        {
            let mut failed = locked(&self.failed);
            for e in &p.accepted {
                if outcome.is_err() || fenced.contains(&e.fs) {
                    refuse_after(&mut failed, e);
                }
            }
        }
        for e in p.accepted {
            let r = match &outcome {
                Err(why) => Err(why.clone()),
                Ok(fenced) if fenced.contains(&e.fs) => Err(FENCED.to_string()),
                Ok(_) => Ok(()),
            };
            let _ = e.done.send(r);
        }
        self.committed.send_replace(p.last);
    }
}

/// The writer: each message hands it the lead (with the batch of a failed
/// inline commit, if any); it commits until nothing is queued, then lets
/// go.
async fn run<W: Writer>(
    mut writer: W,
    mut takeover: mpsc::UnboundedReceiver<Option<Prepared>>,
    shared: Arc<Shared>,
) {
    while let Some(mut next) = takeover.recv().await {
        if next.is_none() {
            // Handed the lead because entries queued behind its holder:
            // they are committed before the lead can pass to a gate's
            // holder, or a folder folding in several transactions would
            // take it back after each and keep them waiting throughout.
            let batch = take_batch(&mut locked(&shared.queue).pending);
            if !batch.is_empty() {
                next = Some(shared.prepare(batch));
            }
        }
        loop {
            if let Some(p) = next.take() {
                let mut outcome = Err(String::new());
                for attempt in 0..COMMIT_ATTEMPTS {
                    outcome = writer.write(&p.rows).await;
                    match &outcome {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(attempt, error = %e, entries = p.accepted.len(), "journal commit failed");
                            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        }
                    }
                }
                shared.finish(p, outcome);
            }
            let batch = {
                let mut q = locked(&shared.queue);
                if q.pass_lead(&shared.lead_granted) {
                    break;
                }
                take_batch(&mut q.pending)
            };
            next = Some(shared.prepare(batch));
        }
    }
}

/// Holds commits off for the checkpointer or the folder by taking the
/// lead: operations
/// queue meanwhile and share the commit made after it.
struct LeadGate {
    /// Weak: the checkpointer's and folder's threads must not keep the
    /// journal alive.
    shared: Weak<Shared>,
    takeover: mpsc::WeakUnboundedSender<Option<Prepared>>,
}

/// How long a gate's holder waits for a leader to pass the lead on.
const LEAD_WAIT: Duration = Duration::from_millis(100);

impl checkpoint::Gate for LeadGate {
    fn hold(&self, copy: &mut dyn FnMut() -> bool) -> Option<bool> {
        let shared = self.shared.upgrade()?;
        // One holder at a time (the checkpointer, the folder): the queue
        // has room for one waiting.
        let _turn = locked(&shared.gate_turn);
        let mut q = locked(&shared.queue);
        if q.leading {
            q.gate_waits = true;
            let (granted, _) = shared
                .lead_granted
                .wait_timeout_while(q, LEAD_WAIT, |q| !q.gate_leads)
                .unwrap_or_else(|p| p.into_inner());
            q = granted;
            if !q.gate_leads {
                // A leader with a long commit, or retrying a failing
                // one: next round.
                q.gate_waits = false;
                return None;
            }
            q.gate_leads = false;
        } else {
            q.leading = true;
        }
        drop(q);
        // The lead must be given back whatever happens in the copy.
        let whole = std::panic::catch_unwind(std::panic::AssertUnwindSafe(copy)).unwrap_or(false);
        let mut q = locked(&shared.queue);
        if !q.pass_lead(&shared.lead_granted) {
            drop(q);
            match self.takeover.upgrade() {
                Some(writer) if writer.send(None).is_ok() => {
                    shared
                        .stats
                        .handovers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // The writer is gone: what is queued can never commit.
                _ => locked(&shared.queue).leading = false,
            }
        }
        Some(whole)
    }
}
