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
//! be had (a leader retrying a failing commit), it folds beside the
//! commits, waiting for the database lock like any writer.

use std::sync::Arc;

use super::checkpoint::Gate;
use super::log::LogStore;
use super::rows::Batch;
use super::sqlite::SqliteWriter;

pub(crate) struct SqliteFolder<G> {
    writer: SqliteWriter,
    gate: G,
}

impl<G: Gate> SqliteFolder<G> {
    /// `writer` must write rows, not append (see [`SqliteWriter::appending`]).
    pub fn new(writer: SqliteWriter, gate: G) -> SqliteFolder<G> {
        SqliteFolder { writer, gate }
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
        let Self { writer, gate } = self;
        let mut folded = None;
        gate.hold(&mut || {
            let r = writer.fold_now(batch, drops);
            let ok = r.is_ok();
            folded = Some(r);
            ok
        });
        folded.unwrap_or_else(|| writer.fold_now(batch, drops))
    }

    async fn read_log(&mut self, fs: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        self.writer.read_log(fs, limit)
    }
}

#[cfg(test)]
#[path = "sqlite_log_tests.rs"]
mod tests;
