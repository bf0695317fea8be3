//! A PostgreSQL connection of the journal's and what it runs: the
//! appends of the log (`pg_log`: one statement a commit) on the writer's
//! connection, and on the folder's the folds, each one transaction of
//! prepared statements sent as one pipeline (and the tests' batches, which
//! go the same way).
//!
//! Every statement is prepared once per connection (`pg_rows`), so
//! PostgreSQL neither parses nor plans anything per transaction: a
//! simple-query script (a statement of SQL text per row, or a CALL of a
//! procedure per row) spent about a third of the server's CPU per create
//! in parse analysis and planning. The statements of a fold (BEGIN, the
//! owner-row lock, the rows, COMMIT) all leave before the first answer is
//! read, so it costs one round trip whatever it holds.
//!
//! The first statement locks each file system's assignment row (`FOR
//! SHARE`) and returns its epoch; every change of a file system is guarded
//! by its epoch being the one the batch was made under (`$2` of every
//! statement, NULL when the file system is not served by lease), so a
//! batch made by a deposed owner changes nothing of that file system, and
//! a reassignment (an UPDATE of the row) waits for this commit.
//!
//! A statement that fails aborts the transaction: PostgreSQL refuses the
//! statements after it and answers the COMMIT with a rollback. A statement
//! the driver refuses before sending it (a value it cannot encode) stops
//! the pipeline before its COMMIT is sent. Either way the writer reports
//! the first error and gives the connection up.
//!
//! A connection given up on (an error, or no answer within the commit
//! timeout) may still hold a whole batch, COMMIT included, in its socket or
//! in a server process that has yet to run it: committed later, after the
//! retry and newer batches, it would write older images over newer ones.
//! So before its next statement the writer ends that server process
//! (`pg_terminate_backend` through the store's pool) and waits until it is
//! gone, which settles its transaction one way or the other first.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::pg_rows::{exec, statements, Sql, SQL};
use super::rows::Batch;

struct Connection {
    client: Client,
    statements: Vec<Statement>,
    /// Its server process.
    pid: i32,
    /// The task that reads and writes its socket.
    io: tokio::task::AbortHandle,
}

pub(crate) struct PgWriter {
    url: String,
    /// The store's pool, to end the server process of a connection given
    /// up on.
    pool: sqlx::AnyPool,
    /// `None` after an error, until the next batch connects afresh.
    conn: Option<Connection>,
    /// The server process of the connection last given up on, until it is
    /// known to be gone.
    stale: Option<i32>,
    /// The longest a batch may take, [`COMMIT_TIMEOUT`] but in tests.
    timeout: Duration,
    /// The connection's `application_name`.
    name: &'static str,
}

/// Whether `url` is one the journal's driver reads; the reason if not.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Whether the server process `pid` is still there.
pub(super) async fn process_alive(pool: &sqlx::AnyPool, pid: i64) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = CAST($1 AS INTEGER)")
            .bind(pid)
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}

/// An error with its cause: `tokio-postgres` prints only the kind ("db
/// error") and keeps the server's message in the source.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} ({})", e, db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl PgWriter {
    pub fn new(url: String, pool: sqlx::AnyPool) -> PgWriter {
        PgWriter {
            url,
            pool,
            conn: None,
            stale: None,
            timeout: COMMIT_TIMEOUT,
            name: "cpfs-journal",
        }
    }

    /// The same, its connections named `name` in `pg_stat_activity`.
    pub fn named(url: String, pool: sqlx::AnyPool, name: &'static str) -> PgWriter {
        PgWriter {
            name,
            ..PgWriter::new(url, pool)
        }
    }

    /// Gives the connection up; its server process is ended before the
    /// next batch.
    fn abandon(&mut self) {
        if let Some(c) = self.conn.take() {
            c.io.abort();
            self.stale = Some(c.pid);
        }
    }

    /// Ends the server process of the connection given up on, if any, and
    /// waits until it is gone.
    pub(super) async fn settle(&mut self) -> Result<(), String> {
        let Some(pid) = self.stale else {
            return Ok(());
        };
        let gone = async {
            sqlx::query("SELECT pg_terminate_backend(CAST($1 AS INTEGER))")
                .bind(pid as i64)
                .execute(&self.pool)
                .await?;
            while process_alive(&self.pool, pid.into()).await? {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), sqlx::Error>(())
        };
        gone.await
            .map_err(|e| format!("ending the journal's previous connection: {e}"))?;
        self.stale = None;
        Ok(())
    }

    async fn connect(url: &str, name: &str) -> Result<Connection, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let io = tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // writer sees the latter as its next statement's error.
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "journal connection closed");
            }
        })
        .abort_handle();
        // A transaction whose process died or lost its network mid-way
        // would otherwise hold its locks until TCP gives up (minutes):
        // among them the share lock on a file system's owner row, which
        // the reassignment to the next owner waits for.
        //
        // The name tells the journal's connection apart in
        // `pg_stat_activity`. Generic plans: every statement here finds
        // its rows by key whatever the values, and PostgreSQL's default
        // planned the guarded statements afresh at each execution (their
        // generic plan's estimate never beat the custom plans').
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = '5s'; \
                 SET application_name = '{name}'; \
                 SET plan_cache_mode = force_generic_plan"
            ))
            .await?;
        let statements = join_all(SQL.iter().map(|sql| client.prepare(sql)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get::<_, i32>(0)?;
        Ok(Connection {
            client,
            statements,
            pid,
            io,
        })
    }

    /// The connection, made afresh (after the one given up on is gone)
    /// when there is none.
    async fn ready(&mut self) -> Result<&Connection, String> {
        self.settle().await?;
        if self.conn.is_none() {
            let conn = Self::connect(&self.url, self.name)
                .await
                .map_err(|e| describe(&e))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| "no connection to the database".into())
    }

    async fn write_now(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        let mut execs = statements(batch);
        execs.extend(
            drops
                .iter()
                .map(|(fs, upto)| exec(Sql::DropLog, batch, fs, vec![Box::new(*upto)])),
        );
        let conn = self.ready().await?;
        let owners: Vec<&str> = batch.epochs.iter().map(|(fs, _)| fs.as_ref()).collect();
        let lock_params: [&(dyn ToSql + Sync); 1] = [&owners];
        let bound: Vec<Vec<&(dyn ToSql + Sync)>> = execs
            .iter()
            .map(|e| {
                e.params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        let c = &conn.client;
        let prepared = |sql: Sql| &conn.statements[sql as usize];
        let mut body: Vec<Answer<'_>> = Vec::with_capacity(execs.len() + 2);
        body.push(Box::pin(c.query(prepared(Sql::Begin), &[])));
        if !owners.is_empty() {
            body.push(Box::pin(c.query(prepared(Sql::LockOwners), &lock_params)));
        }
        for (e, params) in execs.iter().zip(&bound) {
            let statement = prepared(e.sql);
            body.push(Box::pin(async move {
                c.execute(statement, params).await.map(|_| Vec::new())
            }));
        }
        let commit = Box::pin(c.query(prepared(Sql::Commit), &[]));
        let answers = match pipeline(body, commit).await {
            Ok(answers) => answers,
            Err(e) => {
                self.abandon();
                return Err(describe(&e));
            }
        };
        // The batch is committed. Owner rows that do not decode (never
        // seen: the columns are TEXT and BIGINT) count as fenced, which
        // reloads those file systems from the store.
        let stored: Vec<(String, i64)> = match (owners.is_empty(), answers.get(1)) {
            (false, Some(rows)) => rows
                .iter()
                .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                .collect(),
            _ => Vec::new(),
        };
        Ok(fenced(batch, &stored))
    }
}

impl PgWriter {
    /// Runs `work` within the timeout; gives the connection up if it
    /// fails or runs out of time. A connection to a server that went
    /// silent (a partition) would hold the writer, and every later batch,
    /// until TCP gives up.
    async fn bounded<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, work(self)).await {
            Ok(r) => r,
            Err(_) => {
                self.abandon();
                Err(format!(
                    "no answer from the database within {} s",
                    timeout.as_secs_f32()
                ))
            }
        }
    }

    /// Writes `batch`'s rows and deletes each listed file system's log
    /// rows up to the sequence number given, in one transaction; the file
    /// systems fenced off (nothing of theirs changed) are returned.
    pub async fn fold(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() && drops.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async |w: &mut Self| w.write_now(batch, drops).await)
            .await
    }

    /// Appends one log row per `(file system, epoch, body)` in one
    /// statement (its own transaction); the rows written, as (file
    /// system, sequence number). A file system missing from them is
    /// fenced off.
    pub async fn append(
        &mut self,
        logs: &[(Arc<str>, Option<u64>, Vec<u8>)],
    ) -> Result<Vec<(String, i64)>, String> {
        let fs: Vec<&str> = logs.iter().map(|l| l.0.as_ref()).collect();
        let epochs: Vec<Option<i64>> = logs.iter().map(|l| l.1.map(|e| e as i64)).collect();
        let bodies: Vec<&[u8]> = logs.iter().map(|l| l.2.as_slice()).collect();
        self.bounded(async |w: &mut Self| {
            let conn = w.ready().await?;
            let r = conn
                .client
                .query(
                    &conn.statements[Sql::AppendLog as usize],
                    &[&fs, &epochs, &bodies],
                )
                .await;
            match r {
                Ok(rows) => Ok(rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect()),
                Err(e) => {
                    w.abandon();
                    Err(describe(&e))
                }
            }
        })
        .await
    }

    /// `fs`'s oldest `limit` log rows, oldest first: (sequence number,
    /// body).
    pub async fn read_log(&mut self, fs: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        self.bounded(async |w: &mut Self| {
            let conn = w.ready().await?;
            let r = conn
                .client
                .query(&conn.statements[Sql::ReadLog as usize], &[&fs, &limit])
                .await;
            match r {
                Ok(rows) => rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, tokio_postgres::Error>>()
                    .map_err(|e| describe(&e)),
                Err(e) => {
                    w.abandon();
                    Err(describe(&e))
                }
            }
        })
        .await
    }
}

/// The longest one batch may take to commit; far above what a batch of
/// [`super::MAX_BATCH`] entries needs on a live server.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which of `batch`'s file systems are fenced off, from the owner rows the
/// batch locked (fs_id, epoch): those whose stored epoch is not the
/// batch's, or whose assignment row is gone.
fn fenced(batch: &Batch, stored: &[(String, i64)]) -> Vec<Arc<str>> {
    batch
        .epochs
        .iter()
        .filter(|(fs, epoch)| {
            !stored
                .iter()
                .any(|(s, e)| s.as_str() == fs.as_ref() && *e == *epoch as i64)
        })
        .map(|(fs, _)| fs.clone())
        .collect()
}

/// A statement's answer: its rows (none for a row's statement).
type Answer<'a> = BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>>;

/// Runs `body` and then `commit` to completion, polling them in their
/// order every time, and gives the answers of `body`, or the first error.
/// A statement's future sends its messages when first polled, so the first
/// pass sends the whole pipeline in order before any answer is awaited
/// (`join_all` does not promise an order of first polls). A statement that
/// fails on that pass failed before it was sent (the driver could not
/// encode it): the pipeline stops there and its COMMIT is never sent.
async fn pipeline<'a>(
    mut body: Vec<Answer<'a>>,
    commit: Answer<'a>,
) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    let mut commit = Some(commit);
    let mut out: Vec<Option<Result<Vec<Row>, tokio_postgres::Error>>> =
        body.iter().map(|_| None).collect();
    let mut committed = None;
    let mut first_pass = true;
    std::future::poll_fn(|cx| {
        let first = std::mem::replace(&mut first_pass, false);
        let mut waiting = false;
        for (f, slot) in body.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Err(e)) if first => return Poll::Ready(Err(e)),
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if let Some(c) = commit.as_mut() {
            if let Poll::Ready(v) = c.as_mut().poll(cx) {
                committed = Some(v.map(|_| ()));
                commit = None;
            } else {
                waiting = true;
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    let mut answers = Vec::with_capacity(out.len());
    for a in out.into_iter().flatten() {
        answers.push(a?);
    }
    committed.unwrap_or(Ok(()))?;
    Ok(answers)
}

#[cfg(test)]
#[path = "pg_pipeline_tests.rs"]
pub(super) mod tests;
