//! The sqlx store: SQLite by default, PostgreSQL at scale, one code path.
//!
//! Queries use `$N` placeholders, which both SQLite and PostgreSQL accept,
//! and only portable types (BIGINT, TEXT) so that one `AnyPool` serves both.
//!
//! Only `cpfs serve` opens the store, and it brings the schema up to date
//! ([`Store::open`]); operator commands go through its admin API instead.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

/// What can go wrong opening or using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url scheme (want sqlite: or postgres:): {0}")]
    Scheme(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The database file, on SQLite: the metadata journal opens its own
    /// connection to it.
    pub sqlite_file: Option<std::path::PathBuf>,
    /// The database's URL, on PostgreSQL: the metadata journal opens its
    /// own connection with it. It may hold a password: never log it.
    pub postgres_url: Option<String>,
}

impl Store {
    /// Opens (creating when needed) the database at `url` and brings its
    /// schema up to date. `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Scheme(redact(url)));
        };
        let mut sqlite_file = None;
        if backend == Backend::Sqlite {
            // The Any driver does not create files; do it with the SQLite
            // driver's own options, which also switch on WAL (readers never
            // block the writer).
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
            sqlite_file = Some(opts.get_filename().to_path_buf());
            let conn = sqlx::ConnectOptions::connect(&opts).await?;
            sqlx::Connection::close(conn).await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // NORMAL in WAL mode: a commit survives a crash or
                        // kill -9 of any process; after a power loss the last
                        // commits before the WAL's next sync may be lost (the
                        // guarantee of MooseFS's periodically flushed
                        // changelog). FULL would fsync every namespace
                        // operation and cap creates at the disk's sync rate.
                        // busy_timeout: writers queue instead of failing.
                        // wal_autocheckpoint: the metadata journal's own
                        // thread checkpoints the log and starts it over
                        // past about 4,096 pages; at SQLite's default of
                        // 1,000 every control-plane commit past that would
                        // copy the log again inline. This only backs it up.
                        conn.execute(
                            "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA wal_autocheckpoint = 8192;",
                        )
                        .await?;
                    } else {
                        // A transaction whose process died or lost its
                        // network mid-way would otherwise hold its locks
                        // until TCP gives up (minutes): among them a
                        // metadata server's share lock on its file
                        // system's owner row, which the reassignment to
                        // the next owner waits for. Ours never sit idle.
                        conn.execute("SET idle_in_transaction_session_timeout = '5s'")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(Store {
            pool,
            backend,
            sqlite_file,
            postgres_url: (backend == Backend::Postgres).then(|| url.to_string()),
        })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
    /// writes fails with SQLITE_BUSY, without waiting, when another writer
    /// committed in between; an immediate one queues behind the busy timeout.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// The stored body of the newest chain table, if any. The control plane
/// writes chain tables and both it and the metadata service read them;
/// this is the one query (callers decode with `ChainTable::from_stored`).
pub async fn latest_chain_table_body<'c, E>(
    executor: E,
) -> std::result::Result<Option<String>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row: Option<(String,)> =
        sqlx::query_as("SELECT body FROM chain_tables ORDER BY version DESC LIMIT 1")
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(body,)| body))
}

/// `$start, $start+1, …` for `n` values of an `IN (…)` list (both
/// databases take `$N` placeholders).
pub fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hides the password in a database URL before it reaches a log or an error.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_start() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
