//! The PostgreSQL writer: a batch is one script (see [`super::pg_script`]),
//! one round trip and one commit whatever it holds. The driver is
//! asynchronous on the connection's socket, so there is no thread hand-off
//! either.
//!
//! The writer keeps one connection of the store's pool for itself. Taken
//! from the pool for each batch, a commit paid the pool's health check (a
//! round trip of its own) and ran on whichever of the pool's server
//! processes was free, each with its own cold caches.

use std::sync::Arc;

use cpfs_store::Store;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Executor, Row};

use super::pg_script;
use super::rows::Batch;
use super::Writer;

pub(crate) struct SqlWriter {
    store: Store,
    /// The writer's own connection; `None` after an error, until the next
    /// batch takes a fresh one.
    conn: Option<PoolConnection<Any>>,
}

impl SqlWriter {
    pub fn new(store: Store) -> SqlWriter {
        SqlWriter { store, conn: None }
    }

    async fn write_now(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, sqlx::Error> {
        let script = pg_script::render(batch);
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let mut c = self.store.pool.acquire().await?;
                // Dropped (an error, a timeout mid-query): closed, never
                // handed back to the pool in an unknown state.
                c.close_on_drop();
                self.conn.insert(c)
            }
        };
        // A query without arguments goes as a simple-query message, which
        // may hold many statements.
        let rows = match conn.fetch_all(script.as_str()).await {
            Ok(rows) => rows,
            Err(e) => {
                // The connection may be broken (a server restart, a cut
                // network): the next batch takes a fresh one.
                self.conn = None;
                return Err(e);
            }
        };
        let stored = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(pg_script::fenced(batch, &stored))
    }
}

impl Writer for SqlWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A connection to a server that went silent (a partition) would
        // hold the writer, and every later batch, until TCP gives up.
        match tokio::time::timeout(COMMIT_TIMEOUT, self.write_now(batch)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                self.conn = None;
                Err(format!(
                    "no answer from the database within {} s",
                    COMMIT_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// The longest one batch may take to commit; far above what a batch of
/// [`super::MAX_BATCH`] entries needs on a live server.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
