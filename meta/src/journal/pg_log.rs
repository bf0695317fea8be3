//! The PostgreSQL journal's log: a batch commits one row per file system
//! (its changed rows, encoded) in one statement, and a task behind the
//! commits folds those rows into the namespace tables.
//!
//! Writing the changed rows themselves costs PostgreSQL a statement per
//! row: 170-184 µs of its CPU for a create's five rows and their
//! transaction, where one log row costs 56-58 (pgbench on this project's
//! tables, `bench/pg/journal-log.sh`). The fold then writes the rows of
//! many batches at once, by set (27-32 µs a create), each row once at its
//! last image (the counters row and a busy directory's inode once per
//! fold, not once per operation).
//!
//! Order and ownership:
//! - The log row of a batch is guarded by the file system's owner epoch
//!   and locks its owner row, as a batch's rows were: a deposed owner
//!   appends nothing, and a reassignment waits for the append.
//! - The folder takes what the writer committed in commit order, and
//!   writes it with the same guards, deleting the file system's log rows
//!   up to the last one folded. A fold refused (the file system moved on)
//!   leaves its log rows to the next owner.
//! - A file system is loaded only after every entry submitted before was
//!   committed or refused and its log was folded ([`Fold::Recover`]), by
//!   the folder itself, so the fold of a recovery and the folds of commits
//!   never overlap.
//! - A failed append ends its connection's server process before its
//!   operations hear of the failure, so it cannot land after a load read
//!   the log.
//! - A log row whose append was given up on (no answer) may have
//!   committed anyway, before the retry (the writer ends the abandoned
//!   connection's server process first): it holds the retry's images and
//!   a lower sequence number, and the fold that deletes up to the retry's
//!   deletes it too.
//!
//! Readers of the tables outside the metadata server see a change once it
//! is folded, a fold (tens of milliseconds) behind; the control plane's
//! quota views wait for it (`quota_view::folded`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::pg_pipeline::PgWriter;
use super::rows::{Batch, Change, Coalescer};
use super::{Writer, COMMIT_ATTEMPTS, FENCED};

/// The first byte of a log row's body: how the rest is encoded (bincode
/// of [`Body`]). A server meeting a format it does not know refuses to
/// load the file system rather than skip changes.
const FORMAT: u8 = 1;

/// The most committed batches one fold takes, and the most rows: a fold
/// must finish well within the connection's timeout, or it would be
/// retried forever.
const MAX_FOLDED: usize = 1024;
const MAX_FOLDED_ROWS: usize = 50_000;
/// Log rows a recovery folds per transaction.
const RECOVER_CHUNK: i64 = 1024;
/// How long a failed append waits for its connection's server process to
/// be ended.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fold waits for more commits after the first it holds
/// (unless asked to recover or settle meanwhile, which folds at once): the
/// tables lag the log by about this much.
const FOLD_DELAY: Duration = Duration::from_millis(10);

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

/// The journal's writer on PostgreSQL: appends each batch to the log and
/// hands it to the folder.
pub(crate) struct PgLogWriter {
    writer: PgWriter,
    folds: mpsc::UnboundedSender<Fold>,
}

impl PgLogWriter {
    pub fn new(writer: PgWriter, folds: mpsc::UnboundedSender<Fold>) -> PgLogWriter {
        PgLogWriter { writer, folds }
    }
}

impl Writer for PgLogWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A row PostgreSQL would refuse must fail its operations now, as
        // it did when the commit wrote the rows: in a fold, after the
        // operations were answered, it would fail every fold after it.
        // Text columns are the only such rows (PostgreSQL's text holds no
        // NUL; names and values are bytea).
        let unstorable = batch
            .rows
            .iter()
            .flat_map(|(_, rows)| rows)
            .find(|c| matches!(c, Change::Fileset(id, _) if id.contains('\0')));
        if let Some(c) = unstorable {
            return Err(format!("a row PostgreSQL cannot store: {c:?}"));
        }
        // Every file system with an entry in the batch has a (possibly
        // empty) row list.
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
        let written = match self.writer.append(&logs).await {
            Ok(written) => written,
            Err(e) => {
                // The append may still commit on the connection given up
                // on, after its operations heard it failed and after a
                // load read the log: its server process is ended first.
                let settled = tokio::time::timeout(SETTLE_TIMEOUT, self.writer.settle()).await;
                if !matches!(settled, Ok(Ok(()))) {
                    tracing::warn!("could not end the journal connection given up on yet");
                }
                return Err(e);
            }
        };
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
        let mut kept = batch.clone();
        if !fenced.is_empty() {
            kept.rows.retain(|(fs, _)| !fenced.contains(fs));
            kept.forget.retain(|(fs, _)| !fenced.contains(fs));
            kept.epochs.retain(|(fs, _)| !fenced.contains(fs));
        }
        if !logged.is_empty() {
            // The folder is gone only when the journal is: what is logged
            // is folded by the next load.
            let _ = self.folds.send(Fold::Committed {
                batch: kept,
                logged,
            });
        }
        Ok(fenced)
    }
}

/// The folder: folds what the writer committed, as it comes, many
/// batches per transaction; recovers a file system's log before its load.
/// Ends when the journal is gone and everything sent is done.
pub(crate) async fn fold_behind(mut writer: PgWriter, mut asked: mpsc::UnboundedReceiver<Fold>) {
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
                let mut rows = Coalescer::default();
                let mut upto: HashMap<Arc<str>, i64> = HashMap::new();
                take(&mut rows, &mut upto, &batch, logged);
                // What commits within the next moment joins this fold: a
                // loop of one operation at a time would otherwise fold
                // each commit on its own, paying a transaction apiece.
                let until = tokio::time::Instant::now() + FOLD_DELAY;
                for _ in 1..MAX_FOLDED {
                    if rows.len() >= MAX_FOLDED_ROWS {
                        break;
                    }
                    match tokio::time::timeout_at(until, asked.recv()).await {
                        Ok(Some(Fold::Committed { batch, logged }))
                            if same_epochs(&rows, &batch) =>
                        {
                            take(&mut rows, &mut upto, &batch, logged)
                        }
                        Ok(Some(other)) => {
                            held = Some(other);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let drops: Vec<(Arc<str>, i64)> = upto.into_iter().collect();
                fold_until_done(&mut writer, &rows.finish(), &drops, &asked).await;
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
async fn fold_until_done(
    writer: &mut PgWriter,
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
async fn recover(writer: &mut PgWriter, fs: &Arc<str>, epoch: Option<u64>) -> Result<(), String> {
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

async fn recover_once(
    writer: &mut PgWriter,
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

async fn fold_chunk(
    writer: &mut PgWriter,
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
#[path = "pg_log_tests.rs"]
mod tests;
