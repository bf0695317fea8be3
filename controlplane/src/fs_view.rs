//! The read model behind DescribeFileSystems (issue 13): each account's
//! file systems with their mount targets, tags, LDAP configuration and
//! layout, held in memory and answered from there.
//!
//! Every write to the tables it copies moves the read generation (a
//! counter kept by triggers in the writing transaction, migration 0013),
//! so a call costs one cheap query: the generation, compared with the one
//! the copy was built at. A change by any process sharing the database is
//! seen at the next call; there is no write path that could forget to
//! invalidate. A copy is built inside one read snapshot, generation
//! included, so it never mixes two states.
//!
//! What changes with every write of file data (MeteredSize, from the
//! metadata engine's counters) is not worth a generation: a copy is rebuilt
//! when it is older than [`USAGE_MAX_AGE`], so MeteredSize is at most that
//! old (Alibaba Cloud documents it as an hourly figure).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpfs_proto::chains::ChainTable;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::filesystems::{FileSystem, FileSystemFilter, FS_SELECT};
use crate::ldap::LdapConfig;
use crate::mount_targets::MountTarget;
use crate::nodes::Redundancy;
use crate::ControlPlane;

/// How stale MeteredSize may be.
pub const USAGE_MAX_AGE: Duration = Duration::from_secs(1);

/// One file system as DescribeFileSystems shows it.
#[derive(Debug)]
pub struct FsEntry {
    pub fs: FileSystem,
    /// Oldest first.
    pub mount_targets: Vec<MountTarget>,
    /// By key.
    pub tags: Vec<(String, String)>,
    pub ldap: Option<LdapConfig>,
    /// The chains its data is laid over; None before it is provisioned.
    pub chains: Option<Vec<u32>>,
    /// The gateway's rendering of this entry, made at most once per copy
    /// (a copy is never changed, only replaced).
    pub rendered: std::sync::OnceLock<Arc<str>>,
}

/// A page of an account's file systems.
pub struct FileSystemPage {
    /// How many match the filter, on every page.
    pub total: i64,
    pub items: Vec<Arc<FsEntry>>,
    /// Of the provisioned items.
    pub redundancy: HashMap<String, Redundancy>,
}

/// The copies this process holds (one per account asked about).
#[derive(Default)]
pub struct FsViews {
    accounts: Mutex<HashMap<String, Arc<AccountView>>>,
    /// One rebuild at a time: callers that find a copy out of date while
    /// another is being built wait for it instead of building their own.
    rebuilding: tokio::sync::Mutex<()>,
    probe: GenerationProbe,
}

/// Reads the generation for many callers at once. A caller joins the next
/// reading that has not started yet and takes its result: that reading
/// began after the caller arrived, so it sees every write committed before
/// the call, exactly as a reading of the caller's own would. Callers that
/// arrive together share one query instead of queueing one each.
#[derive(Default)]
struct GenerationProbe {
    next: Mutex<Arc<Reading>>,
    /// One reading at a time.
    querying: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Reading {
    result: std::sync::OnceLock<std::result::Result<i64, String>>,
}

impl GenerationProbe {
    async fn generation(&self, pool: &sqlx::AnyPool) -> Result<i64> {
        let mine = self.next.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _turn = self.querying.lock().await;
        if let Some(r) = mine.result.get() {
            return r.clone().map_err(Error::Internal);
        }
        // This caller reads for everyone who joined `mine`; later callers
        // join a fresh reading.
        {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&next, &mine) {
                *next = Arc::default();
            }
        }
        let read: std::result::Result<(i64,), sqlx::Error> =
            sqlx::query_as("SELECT n FROM read_generation WHERE id = 1")
                .fetch_one(pool)
                .await;
        let result = read.map(|(n,)| n).map_err(|e| e.to_string());
        let _ = mine.result.set(result.clone());
        result.map_err(Error::Internal)
    }
}

struct AccountView {
    generation: i64,
    built: Instant,
    /// Oldest first, as the API lists them.
    entries: Vec<Arc<FsEntry>>,
    chain_table: Arc<ChainTable>,
}

impl AccountView {
    fn current(&self, generation: i64) -> bool {
        self.generation >= generation && self.built.elapsed() < USAGE_MAX_AGE
    }
}

impl FileSystemFilter {
    fn matches(&self, e: &FsEntry) -> bool {
        (self.ids.is_empty() || self.ids.contains(&e.fs.id))
            && (self.types.is_empty() || self.types.contains(&e.fs.fs_type))
            && self.vpc_id.as_ref().is_none_or(|v| *v == e.fs.vpc_id)
            && self.tags.iter().all(|(k, v)| {
                e.tags
                    .iter()
                    .any(|(tk, tv)| tk == k && (v.is_empty() || tv == v))
            })
    }
}

impl ControlPlane {
    /// A page of the account's file systems that match `filter`, oldest
    /// first, and how many match in all.
    pub async fn describe_file_systems(
        &self,
        account_id: &str,
        filter: &FileSystemFilter,
        page_number: i64,
        page_size: i64,
    ) -> Result<FileSystemPage> {
        let view = self.account_view(account_id).await?;
        let matching: Vec<&Arc<FsEntry>> =
            view.entries.iter().filter(|e| filter.matches(e)).collect();
        let total = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        let offset = usize::try_from((page_number - 1).max(0).saturating_mul(page_size))
            .unwrap_or(usize::MAX);
        let items: Vec<Arc<FsEntry>> = matching
            .into_iter()
            .skip(offset)
            .take(usize::try_from(page_size).unwrap_or(0))
            .cloned()
            .collect();
        let redundancy = self.redundancy_of(&view.chain_table, &items).await?;
        Ok(FileSystemPage {
            total,
            items,
            redundancy,
        })
    }

    /// The account's copy, rebuilt first when a write moved the generation
    /// since it was built or its usage figures are too old.
    async fn account_view(&self, account_id: &str) -> Result<Arc<AccountView>> {
        let generation = self.fs_views.probe.generation(&self.store.pool).await?;
        if let Some(v) = self.view_if(account_id, |v| v.current(generation)) {
            return Ok(v);
        }
        let _one = match self.fs_views.rebuilding.try_lock() {
            Ok(one) => one,
            Err(_) => {
                // Another caller is rebuilding. A copy whose only fault is
                // its age (no write since) still answers meanwhile: usage
                // figures a rebuild old, never a missed change.
                if let Some(v) = self.view_if(account_id, |v| v.generation >= generation) {
                    return Ok(v);
                }
                self.fs_views.rebuilding.lock().await
            }
        };
        if let Some(v) = self.view_if(account_id, |v| v.current(generation)) {
            return Ok(v);
        }
        let view = Arc::new(self.build_view(account_id).await?);
        let mut accounts = self
            .fs_views
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        accounts.insert(account_id.to_string(), view.clone());
        Ok(view)
    }

    /// The account's copy, if `usable` says it may answer.
    fn view_if(
        &self,
        account_id: &str,
        usable: impl Fn(&AccountView) -> bool,
    ) -> Option<Arc<AccountView>> {
        let accounts = self
            .fs_views
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        accounts.get(account_id).filter(|v| usable(v)).cloned()
    }

    /// Reads the account's rows, and the generation they are at, in one
    /// snapshot.
    async fn build_view(&self, account_id: &str) -> Result<AccountView> {
        let built = Instant::now();
        let mut tx = match self.store.backend {
            cpfs_store::Backend::Sqlite => self.store.pool.begin().await?,
            cpfs_store::Backend::Postgres => {
                self.store
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?
            }
        };
        let (generation,): (i64,) = sqlx::query_as("SELECT n FROM read_generation WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let fs_rows = sqlx::query(&format!(
            "SELECT {FS_SELECT} FROM file_systems WHERE account_id = $1 ORDER BY created_at, id"
        ))
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut mount_targets: HashMap<String, Vec<MountTarget>> = HashMap::new();
        for r in sqlx::query(&format!(
            "SELECT {} FROM mount_targets WHERE account_id = $1 ORDER BY created_at, domain",
            crate::mount_targets::MT_COLUMNS
        ))
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let m = MountTarget::from_row(&r)?;
            mount_targets.entry(m.fs_id.clone()).or_default().push(m);
        }
        let mut tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (id, k, v) in sqlx::query_as::<_, (String, String, String)>(
            "SELECT resource_id, tag_key, tag_value FROM tags WHERE account_id = $1 AND resource_type = $2 ORDER BY tag_key",
        )
        .bind(account_id)
        .bind(crate::tags::FILESYSTEM)
        .fetch_all(&mut *tx)
        .await?
        {
            tags.entry(id).or_default().push((k, v));
        }
        let mut ldap: HashMap<String, LdapConfig> = HashMap::new();
        for r in sqlx::query(
            "SELECT fs_id, uri, search_base, bind_dn FROM ldap_configs WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            ldap.insert(r.try_get("fs_id")?, crate::ldap::config_from_row(&r)?);
        }
        let mut chains: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, body) in sqlx::query_as::<_, (String, String)>(
            "SELECT l.fs_id, l.chains FROM fs_layouts l JOIN file_systems f ON f.id = l.fs_id WHERE f.account_id = $1",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let ids = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("layout of {id}: {e}")))?;
            chains.insert(id, ids);
        }
        let chain_table = match cpfs_store::latest_chain_table_body(&mut *tx).await? {
            None => ChainTable::default(),
            Some(body) => {
                ChainTable::from_stored(&body).map_err(|e| Error::Internal(e.to_string()))?
            }
        };
        tx.commit().await?;
        tracing::debug!(
            account_id,
            generation,
            micros = built.elapsed().as_micros() as u64,
            "read model rebuilt"
        );
        let entries = fs_rows
            .iter()
            .map(|r| {
                let fs = FileSystem::from_row(r)?;
                Ok(Arc::new(FsEntry {
                    mount_targets: mount_targets.remove(&fs.id).unwrap_or_default(),
                    tags: tags.remove(&fs.id).unwrap_or_default(),
                    ldap: ldap.remove(&fs.id),
                    chains: chains.remove(&fs.id),
                    rendered: Default::default(),
                    fs,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AccountView {
            generation,
            built,
            entries,
            chain_table: Arc::new(chain_table),
        })
    }

    /// The redundancy of the provisioned `items`; node reports (for the
    /// progress of repairs) are read only when one of their chains is
    /// being filled.
    async fn redundancy_of(
        &self,
        table: &ChainTable,
        items: &[Arc<FsEntry>],
    ) -> Result<HashMap<String, Redundancy>> {
        let syncing = items.iter().filter_map(|e| e.chains.as_ref()).any(|ids| {
            table
                .chains
                .iter()
                .any(|c| !c.syncing.is_empty() && ids.contains(&c.id))
        });
        let nodes = if syncing {
            self.nodes().await?
        } else {
            Vec::new()
        };
        Ok(items
            .iter()
            .filter_map(|e| {
                let ids = e.chains.as_ref()?;
                Some((
                    e.fs.id.clone(),
                    crate::nodes::redundancy(table, ids, &nodes),
                ))
            })
            .collect())
    }
}

/// A subscription expiring within this many seconds counts as expiring in
/// DescribeFileSystemStatistics.
pub const EXPIRING_WITHIN_SECS: i64 = 7 * 24 * 3600;

/// An account's file systems of one type, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatistic {
    pub fs_type: String,
    pub total: i64,
    /// Sum of their MeteredSize, in bytes.
    pub metered_size: i64,
    /// Subscriptions past their expiry time.
    pub expired: i64,
    /// Subscriptions expiring within [`EXPIRING_WITHIN_SECS`].
    pub expiring: i64,
}

impl ControlPlane {
    /// The account's file systems counted per type (by type name).
    pub async fn file_system_statistics(&self, account_id: &str) -> Result<Vec<TypeStatistic>> {
        let view = self.account_view(account_id).await?;
        let now = self.now();
        let mut by_type: std::collections::BTreeMap<&str, TypeStatistic> = Default::default();
        for e in &view.entries {
            let s = by_type
                .entry(e.fs.fs_type.as_str())
                .or_insert_with(|| TypeStatistic {
                    fs_type: e.fs.fs_type.clone(),
                    ..TypeStatistic::default()
                });
            s.total += 1;
            s.metered_size = s.metered_size.saturating_add(e.fs.metered_size);
            if let Some(at) = e.fs.expired_at {
                if at <= now {
                    s.expired += 1;
                } else if at - now <= EXPIRING_WITHIN_SECS {
                    s.expiring += 1;
                }
            }
        }
        Ok(by_type.into_values().collect())
    }
}
