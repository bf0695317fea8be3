//! What the control plane reads of quotas from the namespace's side: the
//! fileset bindings and the user and group quota figures the metadata
//! service publishes (`fileset_usage`, `user_quota_usage`: usage and the
//! limits in force), and what a path names in the committed namespace (so
//! that CreateFileset can refuse a missing parent before anything is
//! recorded). Each read first waits for the tables to hold what was
//! committed before it ([`folded`]).

use cpfs_proto::meta::{Kind, ROOT_INO};
use cpfs_store::Store;

use crate::lifecycle::LifecycleError;

/// How long a read waits for the namespace tables to catch up with the
/// journal's log before it reads what they hold.
const FOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until the journal's log rows of `fs_id` committed before the call
/// are folded into the namespace tables (the journal folds its log behind
/// the commits, about 10 ms behind), so that a read
/// after an acknowledged change sees it: a directory a program made just
/// before asking for a fileset on it. Gives up after [`FOLD_WAIT`] (no
/// metadata server folding: it stopped) and lets the read see the tables
/// as they are.
pub async fn folded(store: &Store, fs_id: &str) -> Result<(), LifecycleError> {
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM meta_log WHERE fs_id = $1")
        .bind(fs_id)
        .fetch_one(&store.pool)
        .await?;
    let Some(last) = last else {
        return Ok(());
    };
    let left = std::sync::atomic::AtomicI64::new(0);
    let done = poll_until(FOLD_WAIT, std::time::Duration::from_millis(2), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM meta_log WHERE fs_id = $1 AND seq <= $2")
                .bind(fs_id)
                .bind(last)
                .fetch_one(&store.pool)
                .await?;
        left.store(n, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, LifecycleError>(n == 0)
    })
    .await?;
    if !done {
        tracing::warn!(
            fs_id,
            left = left.load(std::sync::atomic::Ordering::Relaxed),
            "the namespace tables lag the journal's log; reading them as they are"
        );
    }
    Ok(())
}

/// Asks `check` every `every` until it answers true or `wait` has passed;
/// whether it answered true. For the readers that wait for the metadata
/// service to publish what they just changed: they read what is there
/// after a while rather than fail.
pub async fn poll_until<E, Check, Asked>(
    wait: std::time::Duration,
    every: std::time::Duration,
    mut check: Check,
) -> Result<bool, E>
where
    Check: FnMut() -> Asked,
    Asked: std::future::Future<Output = Result<bool, E>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(every).await;
    }
}

/// A bound fileset as its metadata server last committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundFileset {
    pub id: String,
    pub root: u64,
    pub used_bytes: u64,
    pub files: u64,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

/// The bound filesets of `fs_id`.
pub async fn bound(store: &Store, fs_id: &str) -> Result<Vec<BoundFileset>, LifecycleError> {
    folded(store, fs_id).await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT fset_id, ino, used_bytes, files, size_limit, file_count_limit FROM fileset_usage WHERE fs_id = $1",
    )
    .bind(fs_id)
    .fetch_all(&store.pool)
    .await?;
    let limit = |l: i64| u64::try_from(l).ok();
    Ok(rows
        .into_iter()
        .map(|(id, ino, used, files, size, count)| BoundFileset {
            id,
            root: ino.max(0) as u64,
            used_bytes: used.max(0) as u64,
            files: files.max(0) as u64,
            size_limit: limit(size),
            file_limit: limit(count),
        })
        .collect())
}

/// What an absolute path names in the committed namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// A directory.
    Dir,
    /// Something that is not a directory.
    NotDir,
    /// Nothing, but its parent is a directory.
    Missing,
    /// Its parent is missing or not a directory.
    NoParent,
}

/// Looks `path` (`/a/b/`) up component by component, one query each.
pub async fn path_state(
    store: &Store,
    fs_id: &str,
    path: &str,
) -> Result<PathState, LifecycleError> {
    folded(store, fs_id).await?;
    let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut dir = ROOT_INO as i64;
    for (i, name) in names.iter().enumerate() {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT ino, kind FROM dentries WHERE fs_id = $1 AND parent = $2 AND name = $3",
        )
        .bind(fs_id)
        .bind(dir)
        .bind(name.as_bytes())
        .fetch_optional(&store.pool)
        .await?;
        let last = i + 1 == names.len();
        match row {
            None if last => return Ok(PathState::Missing),
            None => return Ok(PathState::NoParent),
            Some((_, kind)) if Kind::from_code(kind) != Kind::Dir => {
                return Ok(if last {
                    PathState::NotDir
                } else {
                    PathState::NoParent
                })
            }
            Some((ino, _)) => dir = ino,
        }
    }
    Ok(PathState::Dir)
}

/// A limited uid's or gid's figures as its metadata server last
/// published them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUsage {
    /// A gid when true.
    pub group: bool,
    pub id: u32,
    pub used_bytes: u64,
    pub files: u64,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

/// The published user and group quota figures of `fs_id`.
pub async fn owner_usage(store: &Store, fs_id: &str) -> Result<Vec<OwnerUsage>, LifecycleError> {
    folded(store, fs_id).await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT user_type, user_id, used_bytes, files, size_limit, file_count_limit FROM user_quota_usage WHERE fs_id = $1",
    )
    .bind(fs_id)
    .fetch_all(&store.pool)
    .await?;
    let limit = |l: i64| u64::try_from(l).ok();
    Ok(rows
        .into_iter()
        .filter_map(|(kind, id, used, files, size, count)| {
            Some(OwnerUsage {
                group: kind == "Gid",
                id: u32::try_from(id).ok()?,
                used_bytes: used.max(0) as u64,
                files: files.max(0) as u64,
                size_limit: limit(size),
                file_limit: limit(count),
            })
        })
        .collect())
}
