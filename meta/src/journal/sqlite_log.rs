//! The SQLite side of the journal's log (`log.rs`): a commit appends one
//! row per file system (`sqlite.rs`), and the folder, on its own thread
//! and connection, writes the rows of many commits at once.
//!
//! Writing a create's rows themselves cost about 35 µs of SQLite's CPU a
//! commit here (five B-trees, a page of each into the write-ahead log),
//! one log row about 11 (Python's sqlite3 on this project's table shapes).
//! A create's share of a fold costs the folder thread about 15 µs, off the
//! operation's path (`perf` of `cpfs serve` in a create loop).
//!
//! SQLite has one writer at a time. The folder takes the journal's lead
//! for each fold, as the checkpointer does for its last round
//! ([`Gate`]): operations queue meanwhile and share the commit made after
//! it, instead of each finding the database locked. When the lead cannot
//! be had (a leader retrying a failing commit), or the database is locked
//! (the control plane writing), it folds beside the commits, waiting for
//! the database lock like any writer, so that commits never wait behind
//! the lead for somebody else's lock.

use std::sync::Arc;

use super::checkpoint::Gate;
use super::log::LogStore;
use super::rows::Batch;
use super::sqlite::SqliteWriter;
use super::JournalError;

pub(crate) struct SqliteFolder<G> {
    /// Used while the folder holds the lead: fails at once when the
    /// database is locked (the control plane writing), rather than keep
    /// every commit waiting behind the lead meanwhile.
    quick: SqliteWriter,
    /// Used without the lead: waits for the database lock like any writer.
    patient: SqliteWriter,
    gate: G,
}

impl<G: Gate> SqliteFolder<G> {
    /// A folder on `file`, holding commits off through `gate`.
    pub fn open(file: &std::path::Path, gate: G) -> Result<SqliteFolder<G>, JournalError> {
        Ok(SqliteFolder {
            quick: SqliteWriter::open(file, false)?,
            patient: SqliteWriter::open(file, true)?,
            gate,
        })
    }
}

impl<G: Gate> LogStore for SqliteFolder<G> {
    /// A fold's transaction holds commits off: this many rows take about
    /// 0.1-0.3 ms to write here, where the fold of 10 ms of a create loop
    /// took about a millisecond.
    const FOLD_ROWS: usize = 48;

    async fn fold(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        let Self {
            quick,
            patient,
            gate,
        } = self;
        let mut folded = false;
        let mut fenced = Vec::new();
        gate.hold(&mut || match quick.fold_now(batch, drops) {
            Ok(f) => {
                fenced = f;
                folded = true;
                true
            }
            Err(_) => false,
        });
        if folded {
            return Ok(fenced);
        }
        // The lead could not be had (a leader retrying a failing commit),
        // or the database was locked: beside the commits, waiting for the
        // lock (nothing of a failed attempt was kept).
        patient.fold_now(batch, drops)
    }

    async fn read_log(&mut self, fs: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        self.patient.read_log(fs, limit)
    }
}

#[cfg(test)]
#[path = "sqlite_log_tests.rs"]
mod tests;
