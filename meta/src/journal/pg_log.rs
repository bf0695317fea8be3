//! The PostgreSQL side of the journal's log (`log.rs`): a batch commits
//! one row per file system in one statement, and the folder writes them
//! into the tables by set.
//!
//! Writing the changed rows themselves costs PostgreSQL a statement per
//! row: 170-184 µs of its CPU for a create's five rows and their
//! transaction, where one log row costs 56-58 (pgbench on this project's
//! tables, `bench/pg/journal-log.sh`). The fold then writes the rows of
//! many batches at once, by set (27-32 µs a create).
//!
//! Beyond what `log.rs` says of order and ownership:
//! - The append locks the file system's owner row (`FOR SHARE`) inside its
//!   statement, so a reassignment waits for it.
//! - A failed append ends its connection's server process before its
//!   operations hear of the failure, so it cannot land after a load read
//!   the log.
//! - A log row whose append was given up on (no answer) may have
//!   committed anyway, before the retry (the writer ends the abandoned
//!   connection's server process first): it holds the retry's images and
//!   a lower sequence number, and the fold that deletes up to the retry's
//!   deletes it too.

use std::sync::Arc;
use std::time::Duration;

use super::log::{appended, log_rows, Folds, LogStore};
use super::pg_pipeline::PgWriter;
use super::rows::{Batch, Change};
use super::Writer;

/// How long a failed append waits for its connection's server process to
/// be ended.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal's writer on PostgreSQL: appends each batch to the log and
/// hands it to the folder.
pub(crate) struct PgLogWriter {
    writer: PgWriter,
    folds: Folds,
}

impl PgLogWriter {
    pub fn new(writer: PgWriter, folds: Folds) -> PgLogWriter {
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
        let logs = log_rows(batch)?;
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
        let (fenced, fold) = appended(batch, &logs, &written);
        if let Some(fold) = fold {
            // The folder is gone only when the journal is: what is logged
            // is folded by the next load.
            self.folds.committed(fold);
        }
        Ok(fenced)
    }
}

impl LogStore for PgWriter {
    /// PostgreSQL locks rows, not the database: commits go on beside a
    /// fold of any length.
    const FOLD_ROWS: usize = super::log::MAX_FOLDED_ROWS;

    async fn fold(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        PgWriter::fold(self, batch, drops).await
    }

    async fn read_log(&mut self, fs: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        PgWriter::read_log(self, fs, limit).await
    }
}

#[cfg(test)]
#[path = "pg_log_tests.rs"]
mod tests;
