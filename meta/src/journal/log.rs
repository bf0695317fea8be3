//! The journal's log: a batch commits one row per file system (its
//! coalesced changed rows, encoded), and a folder behind the commits
//! writes those rows into the namespace tables, many batches in one
//! transaction, each row once at its last image (the counters row and a
//! busy directory's inode once per fold, not once per operation). The
//! store's side of the log is SQLite's (`sqlite_log.rs`) or PostgreSQL's
//! (`pg_log.rs`); the format, the folder and the recovery are here.
//!
//! Order and ownership:
//! - The log row of a batch is guarded by the file system's owner epoch,
//!   as a batch's rows were: a deposed owner appends nothing, and a
//!   reassignment waits for the append.
//! - The folder takes what the writer committed in commit order, and
//!   writes it with the same guards, deleting the file system's log rows
//!   up to the last one folded. A fold refused (the file system moved on)
//!   leaves its log rows to the next owner.
//! - A file system is loaded only after every entry submitted before was
//!   committed or refused and its log was folded ([`Fold::Recover`]), by
//!   the folder itself, so the fold of a recovery and the folds of commits
//!   never overlap.
//!
//! Readers of the tables outside the metadata server see a change once it
//! is folded, a fold (milliseconds) behind; the control plane's
//! quota views wait for it (`quota_view::folded`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use super::rows::{Batch, Change, Coalescer};
use super::{COMMIT_ATTEMPTS, FENCED};

/// The first byte of a log row's body: how the rest is encoded (bincode
/// of [`Body`]). A server meeting a format it does not know refuses to
/// load the file system rather than skip changes.
const FORMAT: u8 = 1;

/// The most committed batches one fold takes, and the most rows: a fold
/// must finish well within the connection's timeout, or it would be
/// retried forever.
const MAX_FOLDED: usize = 1024;
pub(crate) const MAX_FOLDED_ROWS: usize = 50_000;
/// Log rows a recovery folds per transaction.
const RECOVER_CHUNK: i64 = 1024;
/// How long a fold waits for more commits after the first it holds, on
/// PostgreSQL: the tables lag the log by about this much.
/// `CPFS_META_FOLD_DELAY_MS` sets it (longer: fewer, larger folds, and
/// tables further behind).
pub(crate) const FOLD_DELAY: Duration = Duration::from_millis(10);
/// The same on SQLite, whose one writer at a time makes commits wait for
/// a fold. In one-thread loops here, in alternating runs against writing
/// the rows in each commit (`bench/journal_cost.py`): folded every 2 ms,
/// creates went 4,137-4,552 → 4,902-5,514/s and unlinks 5,889-6,319 →
/// 7,376-7,843/s with the 99th percentile where it was (626-692 µs);
/// every 10 ms, a little faster still (5,242-5,680 and 6,991-7,979), but
/// about one create in fifty waited a millisecond for a fold (99th
/// percentile 1.2-1.4 ms; part of it is an operation committed just
/// before a fold whose answer reached the client only after it, which is
/// not understood yet).
pub(crate) const SQLITE_FOLD_DELAY: Duration = Duration::from_millis(2);
/// The longest fold delay taken from the environment.
const MAX_FOLD_DELAY: Duration = Duration::from_secs(600);

/// The fold delay: `CPFS_META_FOLD_DELAY_MS` if set (at most
/// [`MAX_FOLD_DELAY`]), else `default`.
pub(crate) fn fold_delay(default: Duration) -> Duration {
    match std::env::var("CPFS_META_FOLD_DELAY_MS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms).min(MAX_FOLD_DELAY),
            Err(_) => {
                tracing::warn!(value = %v, "CPFS_META_FOLD_DELAY_MS is not a number of milliseconds; using the default");
                default
            }
        },
        Err(_) => default,
    }
}

/// A log row's content.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    changes: Vec<Change>,
    /// Request records older than these (seconds) are dropped.
    forget: Vec<i64>,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    changes: &'a [Change],
    forget: &'a [i64],
}

fn encode(changes: &[Change], forget: &[i64]) -> Result<Vec<u8>, String> {
    let mut out = vec![FORMAT];
    bincode::serialize_into(&mut out, &BodyRef { changes, forget })
        .map_err(|e| format!("encoding a log row: {e}"))?;
    Ok(out)
}

fn decode(body: &[u8]) -> Result<Body, String> {
    match body.split_first() {
        Some((&FORMAT, rest)) => {
            bincode::deserialize(rest).map_err(|e| format!("decoding a log row: {e}"))
        }
        Some((other, _)) => Err(format!("a log row of unknown format {other}")),
        None => Err("an empty log row".into()),
    }
}

/// What the folder is asked to do, in the order asked.
pub(crate) enum Fold {
    /// A batch's rows, committed to the log as these rows (file system,
    /// sequence number).
    Committed {
        batch: Batch,
        logged: Vec<(Arc<str>, i64)>,
    },
    /// Fold every log row of `fs` under `epoch` (it is about to be loaded
    /// from the tables), then answer.
    Recover {
        fs: Arc<str>,
        epoch: Option<u64>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Answer once everything asked before is folded.
    Settle(oneshot::Sender<()>),
}

/// The folder's inbox, as the journal holds it: commits queue without
/// waking the folder while it gathers a fold; recoveries and settles wake
/// it.
#[derive(Clone)]
pub(crate) struct Folds {
    tx: mpsc::UnboundedSender<Fold>,
    urgent: Arc<Notify>,
}

/// The folder's end of [`Folds`].
pub(crate) struct FoldInbox {
    rx: mpsc::UnboundedReceiver<Fold>,
    urgent: Arc<Notify>,
}

impl Folds {
    pub fn channel() -> (Folds, FoldInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let urgent = Arc::new(Notify::new());
        (
            Folds {
                tx,
                urgent: urgent.clone(),
            },
            FoldInbox { rx, urgent },
        )
    }

    /// Queues a committed batch's fold; false when the folder is gone.
    pub fn committed(&self, fold: Fold) -> bool {
        self.tx.send(fold).is_ok()
    }

    /// Asks for a recovery or a settle, ending the folder's gathering.
    pub fn ask(&self, fold: Fold) -> bool {
        let sent = self.tx.send(fold).is_ok();
        self.urgent.notify_one();
        sent
    }
}

/// The store's side of the log, as the folder uses it.
pub(crate) trait LogStore: Send + 'static {
    /// Rows past which a fold is cut into another transaction: on a store
    /// with one writer at a time, commits wait for a fold's transaction,
    /// so its length is theirs.
    const FOLD_ROWS: usize;

    /// Writes `batch`'s rows and deletes each listed file system's log
    /// rows up to the sequence number given, in one transaction; the file
    /// systems fenced off (nothing of theirs changed).
    fn fold(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> impl Future<Output = Result<Vec<Arc<str>>, String>> + Send;

    /// `fs`'s oldest `limit` log rows, oldest first: (sequence number,
    /// body).
    fn read_log(
        &mut self,
        fs: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>, String>> + Send;
}

/// Log rows written, as (file system, sequence number).
pub(crate) type Logged = Vec<(Arc<str>, i64)>;

/// A log row to append, per file system of `batch`: its epoch and body.
pub(crate) type LogRow = (Arc<str>, Option<u64>, Vec<u8>);

/// The log rows of `batch`, one per file system with an entry in it
/// (each has a row list, possibly empty).
pub(crate) fn log_rows(batch: &Batch) -> Result<Vec<LogRow>, String> {
    let mut logs = Vec::with_capacity(batch.rows.len());
    for (fs, changes) in &batch.rows {
        let forget: Vec<i64> = batch
            .forget
            .iter()
            .filter(|(f, _)| f == fs)
            .map(|(_, before)| *before)
            .collect();
        logs.push((fs.clone(), batch.epoch_of(fs), encode(changes, &forget)?));
    }
    Ok(logs)
}

/// What an append of `logs` wrote (`written`: file system, sequence
/// number): the file systems fenced off (those missing from it), and the
/// fold to ask for of the rest.
pub(crate) fn appended(
    batch: &Batch,
    logs: &[LogRow],
    written: &[(String, i64)],
) -> (Vec<Arc<str>>, Option<Fold>) {
    let logged: Vec<(Arc<str>, i64)> = logs
        .iter()
        .filter_map(|(fs, _, _)| {
            let (_, seq) = written.iter().find(|(f, _)| f == fs.as_ref())?;
            Some((fs.clone(), *seq))
        })
        .collect();
    let fenced: Vec<Arc<str>> = logs
        .iter()
        .map(|(fs, _, _)| fs.clone())
        .filter(|fs| !logged.iter().any(|(f, _)| f == fs))
        .collect();
    if logged.is_empty() {
        return (fenced, None);
    }
    let mut kept = batch.clone();
    if !fenced.is_empty() {
        kept.rows.retain(|(fs, _)| !fenced.contains(fs));
        kept.forget.retain(|(fs, _)| !fenced.contains(fs));
        kept.epochs.retain(|(fs, _)| !fenced.contains(fs));
    }
    let fold = Fold::Committed {
        batch: kept,
        logged,
    };
    (fenced, Some(fold))
}

/// The folder: folds what the writer committed, as it comes, many
/// batches per transaction; recovers a file system's log before its load.
/// Ends when the journal is gone and everything sent is done.
pub(crate) async fn fold_behind<S: LogStore>(mut writer: S, inbox: FoldInbox, delay: Duration) {
    let FoldInbox {
        rx: mut asked,
        urgent,
    } = inbox;
    let mut held: Option<Fold> = None;
    loop {
        let first = match held.take() {
            Some(f) => f,
            None => match asked.recv().await {
                Some(f) => f,
                None => return,
            },
        };
        match first {
            Fold::Committed { batch, logged } => {
                let mut rows_held = batch.len();
                let mut gathered = vec![(batch, logged)];
                // What commits within the next moment joins this fold: a
                // loop of one operation at a time would otherwise fold
                // each commit on its own, paying a transaction apiece.
                // The folder sleeps meanwhile rather than wait on the
                // channel, so that a commit's hand-off wakes nobody; a
                // recovery or a settle ends the sleep.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = urgent.notified() => {}
                }
                while gathered.len() < MAX_FOLDED && rows_held < MAX_FOLDED_ROWS {
                    match asked.try_recv() {
                        Ok(Fold::Committed { batch, logged }) => {
                            rows_held += batch.len();
                            gathered.push((batch, logged));
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                fold_gathered(&mut writer, gathered, &asked).await;
            }
            Fold::Recover { fs, epoch, done } => {
                let _ = done.send(recover(&mut writer, &fs, epoch).await);
            }
            Fold::Settle(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Folds committed batches, in order, in transactions of about
/// [`LogStore::FOLD_ROWS`] rows each (at least a batch), each cut where a
/// file system's epoch changes (a file system lost and served again is
/// folded apart, each part under its own epoch).
async fn fold_gathered<S: LogStore>(
    writer: &mut S,
    gathered: Vec<(Batch, Logged)>,
    asked: &mpsc::UnboundedReceiver<Fold>,
) {
    let mut rows = Coalescer::default();
    let mut upto: HashMap<Arc<str>, i64> = HashMap::new();
    for (batch, logged) in gathered {
        if !upto.is_empty() && (rows.len() >= S::FOLD_ROWS || !same_epochs(&rows, &batch)) {
            let drops: Vec<(Arc<str>, i64)> = upto.drain().collect();
            let chunk = std::mem::take(&mut rows).finish();
            fold_until_done(writer, &chunk, &drops, asked).await;
        }
        take(&mut rows, &mut upto, &batch, logged);
    }
    let drops: Vec<(Arc<str>, i64)> = upto.into_iter().collect();
    fold_until_done(writer, &rows.finish(), &drops, asked).await;
}

/// Adds a committed batch to a fold.
fn take(
    rows: &mut Coalescer,
    upto: &mut HashMap<Arc<str>, i64>,
    batch: &Batch,
    logged: Vec<(Arc<str>, i64)>,
) {
    rows.add_batch(batch);
    for (fs, seq) in logged {
        let u = upto.entry(fs).or_insert(seq);
        *u = (*u).max(seq);
    }
}

/// Whether `batch` was made under the epochs of what the fold holds for
/// the same file systems (a file system lost and served again is folded
/// apart, each part under its own epoch).
fn same_epochs(rows: &Coalescer, batch: &Batch) -> bool {
    batch
        .rows
        .iter()
        .all(|(fs, _)| rows.epoch_of(fs).is_none_or(|e| e == batch.epoch_of(fs)))
}

/// Folds until it succeeds: the log rows are durable, only the tables
/// wait. Gives up once the journal is gone and the store keeps failing
/// (the next load folds what is left).
async fn fold_until_done<S: LogStore>(
    writer: &mut S,
    batch: &Batch,
    drops: &[(Arc<str>, i64)],
    asked: &mpsc::UnboundedReceiver<Fold>,
) {
    for attempt in 0u32.. {
        match writer.fold(batch, drops).await {
            Ok(fenced) => {
                if !fenced.is_empty() {
                    tracing::info!(?fenced, "log rows left to the file systems' new owners");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "folding the journal's log failed");
                if asked.is_closed() && attempt as usize >= COMMIT_ATTEMPTS {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
        }
    }
}

/// Folds every log row of `fs` under `epoch`.
async fn recover<S: LogStore>(
    writer: &mut S,
    fs: &Arc<str>,
    epoch: Option<u64>,
) -> Result<(), String> {
    let mut last = Err(String::new());
    for attempt in 0..COMMIT_ATTEMPTS {
        last = recover_once(writer, fs, epoch).await;
        match &last {
            Ok(()) => break,
            Err(e) if e == FENCED => break,
            Err(e) => {
                tracing::warn!(attempt, %fs, error = %e, "folding a file system's log before its load failed");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    last
}

async fn recover_once<S: LogStore>(
    writer: &mut S,
    fs: &Arc<str>,
    epoch: Option<u64>,
) -> Result<(), String> {
    // A chunk at a time, each folded and deleted in its own transaction,
    // so a long log never makes one fold too long to finish.
    loop {
        let logged = writer.read_log(fs, RECOVER_CHUNK).await?;
        let Some(&(upto, _)) = logged.last() else {
            return Ok(());
        };
        fold_chunk(writer, fs, epoch, &logged, upto).await?;
        if (logged.len() as i64) < RECOVER_CHUNK {
            return Ok(());
        }
    }
}

async fn fold_chunk<S: LogStore>(
    writer: &mut S,
    fs: &Arc<str>,
    epoch: Option<u64>,
    logged: &[(i64, Vec<u8>)],
    upto: i64,
) -> Result<(), String> {
    let mut rows = Coalescer::default();
    rows.add(fs, epoch, &[]);
    for (_, body) in logged {
        let body = decode(body)?;
        rows.add(fs, epoch, &body.changes);
        let forget: Vec<Change> = body
            .forget
            .into_iter()
            .map(|before| Change::ForgetRequests { before })
            .collect();
        rows.add(fs, epoch, &forget);
    }
    let fenced = writer.fold(&rows.finish(), &[(fs.clone(), upto)]).await?;
    if fenced.contains(fs) {
        return Err(FENCED.into());
    }
    tracing::info!(%fs, rows = logged.len(), "folded the journal's log before loading");
    Ok(())
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
