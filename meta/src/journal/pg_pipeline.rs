//! The PostgreSQL writer: a batch is one transaction of prepared
//! statements, sent as one pipeline on a connection the writer keeps.
//!
//! Every row is an execution of a statement prepared once per connection,
//! so PostgreSQL neither parses nor plans anything per commit: a simple-
//! query script (a statement of SQL text per row, or a CALL of a procedure
//! per row) spent about a third of the server's CPU per create in parse
//! analysis and planning. The statements of a batch (BEGIN, the owner-row
//! lock, the rows, COMMIT) all leave before the first answer is read, so a
//! commit still costs one round trip whatever it holds.
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
//! So before its next batch the writer ends that server process
//! (`pg_terminate_backend` through the store's pool) and waits until it is
//! gone, which settles its transaction one way or the other first.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::rows::{chains_text, limit_column, upsert_parts, Batch, Change};
use super::Writer;

/// The guard every statement carries: the batch's epoch (`$2`) is still
/// the file system's (`$1`), or the file system is not served by lease.
macro_rules! owned {
    () => {
        "($2::bigint IS NULL OR EXISTS (SELECT 1 FROM meta_assignments a \
         WHERE a.fs_id = $1 AND a.epoch = $2))"
    };
}

/// What the writer prepares on each connection, `$1` the file system and
/// `$2` the batch's epoch for it in every row statement. The upserts'
/// column lists and conflict clauses are those SQLite's statements use
/// ([`upsert_parts`]); their values come from a SELECT, which the guard
/// can follow.
const SQL: [&str; 18] = [
    "BEGIN",
    "COMMIT",
    "SELECT fs_id, epoch FROM meta_assignments WHERE fs_id = ANY($1) FOR SHARE",
    concat!(
        upsert_parts!(inode_head),
        "SELECT $1, $3::bigint, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint, \
         $9::bigint, $10::bigint, $11::bigint, $12::bigint, $13::bigint, $14::bigint, \
         $15::bytea, $16::bigint, $17::text, $18::bigint WHERE ",
        owned!(),
        upsert_parts!(inode_tail)
    ),
    concat!(
        "DELETE FROM inodes WHERE fs_id = $1 AND ino = $3 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(dentry_head),
        "SELECT $1, $3::bigint, $4::bytea, $5::bigint, $6::bigint WHERE ",
        owned!(),
        upsert_parts!(dentry_tail)
    ),
    concat!(
        "DELETE FROM dentries WHERE fs_id = $1 AND parent = $3 AND name = $4 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(xattr_head),
        "SELECT $1, $3::bigint, $4::bytea, $5::bytea WHERE ",
        owned!(),
        upsert_parts!(xattr_tail)
    ),
    concat!(
        "DELETE FROM xattrs WHERE fs_id = $1 AND ino = $3 AND name = $4 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(orphan_head),
        "SELECT $1, $3::bigint, $4::bigint WHERE ",
        owned!(),
        upsert_parts!(orphan_tail)
    ),
    concat!(
        "DELETE FROM orphans WHERE fs_id = $1 AND ino = $3 AND ",
        owned!()
    ),
    concat!(
        "UPDATE fs_counters SET next_ino = $3, used_bytes = $4, files = $5 WHERE fs_id = $1 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(fileset_head),
        "SELECT $1, $3::text, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint WHERE ",
        owned!(),
        upsert_parts!(fileset_tail)
    ),
    concat!(
        "DELETE FROM fileset_usage WHERE fs_id = $1 AND fset_id = $3 AND ",
        owned!()
    ),
    concat!(
        upsert_parts!(owner_head),
        "SELECT $1, $3::text, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint WHERE ",
        owned!(),
        upsert_parts!(owner_tail)
    ),
    concat!(
        "DELETE FROM user_quota_usage WHERE fs_id = $1 AND user_type = $3 AND user_id = $4 AND ",
        owned!()
    ),
    concat!(
        "INSERT INTO meta_requests (fs_id, client, seq, ino, at) \
         SELECT $1, $3::bigint, $4::bigint, $5::bigint, $6::bigint WHERE ",
        owned!(),
        " ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino, at = excluded.at"
    ),
    concat!(
        "DELETE FROM meta_requests WHERE fs_id = $1 AND at < $3 AND ",
        owned!()
    ),
];

/// Index in [`SQL`] (and in a connection's prepared statements).
#[derive(Clone, Copy)]
enum Sql {
    Begin = 0,
    Commit,
    LockOwners,
    PutInode,
    DropInode,
    PutDentry,
    DropDentry,
    PutXattr,
    DropXattr,
    PutOrphan,
    DropOrphan,
    SetCounters,
    PutFileset,
    DropFileset,
    PutOwner,
    DropOwner,
    PutRequest,
    ForgetRequests,
}

/// A value bound to a statement.
type Param = Box<dyn ToSql + Sync + Send>;

/// One statement of a batch and its values.
struct Exec {
    sql: Sql,
    params: Vec<Param>,
}

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
    async fn settle(&mut self) -> Result<(), String> {
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

    async fn connect(url: &str) -> Result<Connection, tokio_postgres::Error> {
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
            .batch_execute(
                "SET idle_in_transaction_session_timeout = '5s'; \
                 SET application_name = 'cpfs-journal'; \
                 SET plan_cache_mode = force_generic_plan",
            )
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

    async fn write_now(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        let execs = statements(batch);
        self.settle().await?;
        if self.conn.is_none() {
            let conn = Self::connect(&self.url).await.map_err(|e| describe(&e))?;
            self.conn = Some(conn);
        }
        let Some(conn) = &self.conn else {
            return Err("no connection to the database".into());
        };
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

impl Writer for PgWriter {
    async fn write(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A connection to a server that went silent (a partition) would
        // hold the writer, and every later batch, until TCP gives up.
        match tokio::time::timeout(self.timeout, self.write_now(batch)).await {
            Ok(r) => r,
            Err(_) => {
                self.abandon();
                Err(format!(
                    "no answer from the database within {} s",
                    self.timeout.as_secs_f32()
                ))
            }
        }
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

/// The batch's rows as executions of the prepared statements: forgotten
/// request records first, then each file system's rows.
fn statements(batch: &Batch) -> Vec<Exec> {
    let mut out = Vec::new();
    for (fs, before) in &batch.forget {
        out.push(exec(
            Sql::ForgetRequests,
            batch,
            fs,
            vec![Box::new(*before)],
        ));
    }
    for (fs, rows) in &batch.rows {
        for c in rows {
            if let Some(e) = row(batch, fs, c) {
                out.push(e);
            }
        }
    }
    out
}

fn exec(sql: Sql, batch: &Batch, fs: &Arc<str>, values: Vec<Param>) -> Exec {
    let epoch = batch.epoch_of(fs).map(|e| e as i64);
    let mut params: Vec<Param> = Vec::with_capacity(values.len() + 2);
    params.push(Box::new(fs.to_string()));
    params.push(Box::new(epoch));
    params.extend(values);
    Exec { sql, params }
}

fn int(v: u64) -> Param {
    Box::new(v as i64)
}

fn row(batch: &Batch, fs: &Arc<str>, c: &Change) -> Option<Exec> {
    let (sql, values): (Sql, Vec<Param>) = match c {
        Change::Inode(ino, Some(i)) => {
            let a = &i.attr;
            (
                Sql::PutInode,
                vec![
                    int(*ino),
                    Box::new(a.kind.code()),
                    int(a.perm as u64),
                    int(a.uid as u64),
                    int(a.gid as u64),
                    int(a.nlink as u64),
                    int(a.size),
                    Box::new(a.atime_ns),
                    Box::new(a.mtime_ns),
                    Box::new(a.ctime_ns),
                    int(a.rdev as u64),
                    int(i.parent),
                    Box::new(i.target.clone()),
                    int(i.chunk_size),
                    Box::new(chains_text(&i.chains)),
                    int(a.stored),
                ],
            )
        }
        Change::Inode(ino, None) => (Sql::DropInode, vec![int(*ino)]),
        Change::Dentry(parent, name, Some((ino, kind))) => (
            Sql::PutDentry,
            vec![
                int(*parent),
                Box::new(name.clone()),
                int(*ino),
                Box::new(kind.code()),
            ],
        ),
        Change::Dentry(parent, name, None) => {
            (Sql::DropDentry, vec![int(*parent), Box::new(name.clone())])
        }
        Change::Xattr(ino, name, Some(value)) => (
            Sql::PutXattr,
            vec![int(*ino), Box::new(name.clone()), Box::new(value.clone())],
        ),
        Change::Xattr(ino, name, None) => (Sql::DropXattr, vec![int(*ino), Box::new(name.clone())]),
        Change::Orphan(ino, Some(since)) => (Sql::PutOrphan, vec![int(*ino), Box::new(*since)]),
        Change::Orphan(ino, None) => (Sql::DropOrphan, vec![int(*ino)]),
        Change::Counters(c) => (
            Sql::SetCounters,
            vec![int(c.next_ino), int(c.used_bytes), int(c.files)],
        ),
        Change::Fileset(id, Some(f)) => (
            Sql::PutFileset,
            vec![
                Box::new(id.to_string()),
                int(f.ino),
                int(f.used_bytes),
                int(f.files),
                Box::new(limit_column(f.size_limit)),
                Box::new(limit_column(f.file_limit)),
            ],
        ),
        Change::Fileset(id, None) => (Sql::DropFileset, vec![Box::new(id.to_string())]),
        Change::OwnerQuota(o, Some(r)) => (
            Sql::PutOwner,
            vec![
                Box::new(o.type_name().to_string()),
                Box::new(o.id() as i64),
                int(r.used_bytes),
                int(r.files),
                Box::new(limit_column(r.size_limit)),
                Box::new(limit_column(r.file_limit)),
            ],
        ),
        Change::OwnerQuota(o, None) => (
            Sql::DropOwner,
            vec![Box::new(o.type_name().to_string()), Box::new(o.id() as i64)],
        ),
        Change::Request {
            client,
            seq,
            ino,
            at,
        } => (
            Sql::PutRequest,
            vec![int(*client), int(*seq), int(*ino), Box::new(*at)],
        ),
        // Gathered per file system in `Batch::forget`.
        Change::ForgetRequests { .. } => return None,
    };
    Some(exec(sql, batch, fs, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exactly_once_tests::{postgres_backend, FS};
    use crate::inode::Inode;
    use crate::journal::rows::{Counters, FilesetRow};
    use cpfs_proto::meta::{Attr, Kind};

    fn writer_for(store: &cpfs_store::Store) -> PgWriter {
        PgWriter::new(store.postgres_url.clone().unwrap(), store.pool.clone())
    }

    fn inode(ino: u64) -> Change {
        let attr = Attr {
            ino,
            kind: Kind::File,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            stored: 0,
            atime_ns: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            rdev: 0,
        };
        Change::Inode(
            ino,
            Some(Inode {
                attr,
                parent: 1,
                target: None,
                chunk_size: 1 << 20,
                chains: vec![0],
            }),
        )
    }

    #[test]
    fn a_url_the_driver_cannot_read_is_refused_with_its_reason() {
        assert!(check_url("postgres://cpfs@127.0.0.1:5432/cpfs").is_ok());
        let e = check_url("postgres://cpfs@127.0.0.1/cpfs?statement-cache-capacity=8").unwrap_err();
        assert!(e.contains("statement-cache-capacity"), "{e}");
    }

    #[test]
    fn the_owner_rows_tell_which_file_systems_are_fenced() {
        let batch = Batch {
            epochs: vec![("a".into(), 3), ("b".into(), 5), ("c".into(), 1)],
            ..Default::default()
        };
        let stored = vec![("a".to_string(), 3), ("b".to_string(), 6)];
        assert_eq!(
            fenced(&batch, &stored),
            vec![Arc::<str>::from("b"), Arc::from("c")]
        );
    }

    /// A batch is one transaction even though its statements go out
    /// before any answer: a failing statement late in the pipeline leaves
    /// nothing of the rows before it, and the next batch, on a fresh
    /// connection, commits.
    #[tokio::test]
    async fn a_batch_commits_whole_or_not_at_all() {
        let Some(b) = postgres_backend().await else {
            return;
        };
        let store = &b.svc.store;
        let mut writer = writer_for(store);
        let fs: Arc<str> = FS.into();
        let bad_fileset = Change::Fileset(
            // PostgreSQL's text holds no NUL: this row's statement fails.
            "fset\0".into(),
            Some(FilesetRow {
                ino: 1,
                used_bytes: 0,
                files: 0,
                size_limit: None,
                file_limit: None,
            }),
        );
        let batch = Batch {
            rows: vec![(fs.clone(), vec![inode(9001), inode(9002), bad_fileset])],
            ..Default::default()
        };
        assert!(writer.write(&batch).await.is_err());
        let count = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino IN (9001, 9002, 9003)",
            )
            .bind(FS)
            .fetch_one(&store.pool)
            .await
            .unwrap()
        };
        assert_eq!(count().await, 0, "rows of a failed batch were committed");

        let batch = Batch {
            rows: vec![(fs, vec![inode(9001), inode(9003)])],
            ..Default::default()
        };
        assert_eq!(writer.write(&batch).await, Ok(Vec::new()));
        assert_eq!(count().await, 2);
    }

    /// A batch given up on (no answer within the timeout) is never
    /// committed after the next one: before the next batch, the writer
    /// ends the server process that still holds it.
    #[tokio::test]
    async fn a_batch_given_up_on_cannot_commit_after_the_next() {
        let Some(b) = postgres_backend().await else {
            return;
        };
        let store = &b.svc.store;
        let mut writer = writer_for(store);
        writer.timeout = Duration::from_millis(500);
        let fs: Arc<str> = FS.into();
        // Another transaction holds the counters row: the batch's update
        // waits for it, with the rest of the batch sent.
        let mut blocker = store.pool.begin().await.unwrap();
        sqlx::query("UPDATE fs_counters SET files = files WHERE fs_id = $1")
            .bind(FS)
            .execute(&mut *blocker)
            .await
            .unwrap();
        let counters = Change::Counters(Counters {
            next_ino: 1 << 40,
            used_bytes: 0,
            files: 0,
        });
        let stuck = Batch {
            rows: vec![(fs.clone(), vec![inode(9101), counters])],
            ..Default::default()
        };
        let err = writer.write(&stuck).await.unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        let old = writer.stale.expect("the connection was given up on");

        let next = Batch {
            rows: vec![(fs, vec![inode(9102)])],
            ..Default::default()
        };
        assert_eq!(writer.write(&next).await, Ok(Vec::new()));
        assert!(
            !process_alive(&store.pool, old.into()).await.unwrap(),
            "the stuck batch's server process is still there"
        );
        blocker.commit().await.unwrap();
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT ino FROM inodes WHERE fs_id = $1 AND ino IN (9101, 9102)")
                .bind(FS)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(rows, vec![(9102,)]);
        let next_ino: i64 = sqlx::query_scalar("SELECT next_ino FROM fs_counters WHERE fs_id = $1")
            .bind(FS)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_ne!(next_ino, 1 << 40);
    }

    /// A statement the driver cannot encode fails before it is sent; the
    /// pipeline stops there, and its COMMIT never leaves.
    #[tokio::test]
    async fn a_statement_refused_before_sending_stops_the_commit() {
        let Some(b) = postgres_backend().await else {
            return;
        };
        let store = &b.svc.store;
        let conn = PgWriter::connect(store.postgres_url.as_deref().unwrap())
            .await
            .unwrap();
        let (c, st) = (&conn.client, &conn.statements);
        let good = row(&Batch::default(), &FS.into(), &inode(9201)).unwrap();
        let good_params: Vec<&(dyn ToSql + Sync)> = good
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        // The inode statement's third value is a BIGINT: text cannot be
        // encoded for it.
        let mut bad_params = good_params.clone();
        bad_params[2] = &"not a number";
        let body: Vec<Answer<'_>> = vec![
            Box::pin(c.query(&st[Sql::Begin as usize], &[])),
            Box::pin(c.query(&st[Sql::PutInode as usize], &good_params)),
            Box::pin(c.query(&st[Sql::PutInode as usize], &bad_params)),
        ];
        let commit = Box::pin(c.query(&st[Sql::Commit as usize], &[]));
        assert!(pipeline(body, commit).await.is_err());
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM inodes WHERE fs_id = $1 AND ino = 9201")
                .bind(FS)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "the rows before the refused statement were committed");
    }
}
