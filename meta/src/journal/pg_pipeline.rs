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
//! statements after it and answers the COMMIT with a rollback. The writer
//! reports the first error and closes the connection; the retry connects
//! afresh.

use std::sync::Arc;

use std::task::Poll;

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
}

pub(crate) struct PgWriter {
    url: String,
    /// `None` after an error, until the next batch connects afresh.
    conn: Option<Connection>,
}

impl PgWriter {
    pub fn new(url: String) -> PgWriter {
        PgWriter { url, conn: None }
    }

    async fn connect(&self) -> Result<Connection, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // writer sees the latter as its next statement's error.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "journal connection closed");
            }
        });
        // A transaction whose process died or lost its network mid-way
        // would otherwise hold its locks until TCP gives up (minutes):
        // among them the share lock on a file system's owner row, which
        // the reassignment to the next owner waits for.
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
        Ok(Connection { client, statements })
    }

    async fn write_now(&mut self, batch: &Batch) -> Result<Vec<Arc<str>>, String> {
        let execs = statements(batch);
        if self.conn.is_none() {
            let conn = self.connect().await.map_err(|e| e.to_string())?;
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
        let mut pipeline: Vec<BoxFuture<'_, Result<Vec<Row>, tokio_postgres::Error>>> =
            Vec::with_capacity(execs.len() + 3);
        pipeline.push(Box::pin(c.query(prepared(Sql::Begin), &[])));
        if !owners.is_empty() {
            pipeline.push(Box::pin(c.query(prepared(Sql::LockOwners), &lock_params)));
        }
        for (e, params) in execs.iter().zip(&bound) {
            let statement = prepared(e.sql);
            pipeline.push(Box::pin(async move {
                c.execute(statement, params).await.map(|_| Vec::new())
            }));
        }
        pipeline.push(Box::pin(c.query(prepared(Sql::Commit), &[])));
        let answers = in_order(pipeline).await;
        let mut lock_rows = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(rows) if i == 1 && !owners.is_empty() => lock_rows = rows,
                Ok(_) => {}
                Err(e) => {
                    // The transaction rolled back; the connection may be
                    // broken.
                    self.conn = None;
                    return Err(e.to_string());
                }
            }
        }
        let mut stored = Vec::with_capacity(lock_rows.len());
        for r in &lock_rows {
            stored.push((
                r.try_get::<_, String>(0).map_err(|e| e.to_string())?,
                r.try_get::<_, i64>(1).map_err(|e| e.to_string())?,
            ));
        }
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
        match tokio::time::timeout(COMMIT_TIMEOUT, self.write_now(batch)).await {
            Ok(r) => r,
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

/// Runs `futures` to completion, polling them in their order every time.
/// A statement's future sends its messages when first polled, so the
/// first pass sends the whole pipeline in order, before any answer is
/// awaited (`join_all` does not promise an order of first polls).
async fn in_order<T>(mut futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
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
    use crate::exactly_once_tests::{backends, FS};
    use crate::inode::Inode;
    use crate::journal::rows::FilesetRow;
    use cpfs_proto::meta::{Attr, Kind};

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
        let Some(b) = backends().await.into_iter().find(|b| b.name == "postgres") else {
            return; // no server named: backends() already enforced CPFS_REQUIRE_POSTGRES
        };
        let store = &b.svc.store;
        let mut writer = PgWriter::new(store.postgres_url.clone().unwrap());
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
}
