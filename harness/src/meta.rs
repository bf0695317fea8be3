//! The metadata service of a test cluster: the real [`MetaService`] on
//! SQLite in a temporary directory, with one provisioned file system and
//! one mount target in place of the control plane.

use std::net::SocketAddr;
use std::sync::Arc;

use cpfs_meta::identity::IdentitySettings;
use cpfs_meta::policy::{MountPolicy, PolicyFuture, PolicySource};
use cpfs_meta::MetaService;
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::chains::ChainTable;
use cpfs_store::Store;

use crate::{Proxy, Task};

/// The mount target every test cluster has.
pub const DOMAIN: &str = "harness.mount.cpfs";

/// The control plane's part, fixed: [`DOMAIN`] is an active mount target of
/// the running file system, in the default access group (every address may
/// mount read-write, no squashing), without LDAP (root only).
struct FixedPolicy {
    fs: String,
    /// Whether the mount target exists (a test deletes it).
    exists: Arc<std::sync::atomic::AtomicBool>,
}

impl PolicySource for FixedPolicy {
    fn mount_policy<'a>(&'a self, domain: &'a str) -> PolicyFuture<'a> {
        let exists = self.exists.load(std::sync::atomic::Ordering::SeqCst);
        let policy = (exists && domain == DOMAIN).then(|| MountPolicy {
            fs: self.fs.clone(),
            mount_target_status: "Active".into(),
            fs_status: "Running".into(),
            capacity_bytes: 1 << 40,
            access_group: "DEFAULT_VPC_GROUP_NAME".into(),
            rules: None,
            ldap: None,
            fenced: vec![],
        });
        Box::pin(async move { Ok(policy) })
    }
}

/// The metadata service, alive or killed. Like a node, killing it ends
/// its service task (connections, requests, the orphan collector) and
/// restarting it opens the same database and binds the same port; its
/// sessions, held in memory, are gone, as after a restart of `cpfs serve`.
pub struct MetaServer {
    _dir: tempfile::TempDir,
    url: String,
    /// The harness's own handle on the database (tables are installed
    /// through it, as the control plane does).
    store: Store,
    listen: SocketAddr,
    proxy: Option<Proxy>,
    fs: String,
    key: CapabilityKey,
    live: Option<(Arc<MetaService>, Task)>,
    mount_target: Arc<std::sync::atomic::AtomicBool>,
}

impl MetaServer {
    /// Creates the database, stores `table` as the first chain table,
    /// provisions `fs` over it and serves (behind a proxy when `proxied`).
    pub(crate) async fn start(
        fs: &str,
        key: CapabilityKey,
        table: &ChainTable,
        proxied: bool,
    ) -> anyhow::Result<MetaServer> {
        let dir = tempfile::Builder::new().prefix("cpfs-meta-").tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let store = Store::open(&url).await?;
        let listener = crate::bind(0)?;
        let listen = listener.local_addr()?;
        let proxy = proxied.then(|| Proxy::start(listen)).transpose()?;
        let mut m = MetaServer {
            _dir: dir,
            url,
            store,
            listen,
            proxy,
            fs: fs.to_string(),
            key,
            live: None,
            mount_target: Arc::new(true.into()),
        };
        m.store_table(table).await?;
        cpfs_meta::lifecycle::provision(&m.store, fs, table, now_ns()).await?;
        m.serve(listener).await?;
        Ok(m)
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        // The service gets its own pool, as the `cpfs serve` process has.
        let store = Store::open(&self.url).await?;
        let service = MetaService::new(
            store,
            Arc::new(FixedPolicy {
                fs: self.fs.clone(),
                exists: self.mount_target.clone(),
            }),
            self.key.clone(),
            IdentitySettings::default(),
        )?;
        // The service as `cpfs serve` runs it: the listener, and the orphan
        // collector beside it.
        let collector = cpfs_meta::Collector::new(service.clone());
        let listen = cpfs_meta::serve(service.clone(), listener);
        let task = Task::spawn(async move {
            let collect = async {
                loop {
                    tokio::time::sleep(cpfs_meta::Collector::PERIOD).await;
                    if let Err(e) = collector.pass().await {
                        tracing::warn!(error = %e, "orphan collection failed");
                    }
                }
            };
            tokio::select! {
                _ = listen => {}
                _ = collect => {}
            }
        });
        self.live = Some((service, task));
        Ok(())
    }

    /// Where clients connect: the proxy's address when there is one.
    /// Deletes [`DOMAIN`] from the fixed policy (or brings it back), as
    /// DeleteMountTarget does in the control plane.
    pub fn set_mount_target(&self, exists: bool) {
        self.mount_target
            .store(exists, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.as_ref().map_or(self.listen, Proxy::addr)
    }

    /// The service's own listener, bypassing any proxy.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// The running service; None after [`MetaServer::kill`].
    pub fn service(&self) -> Option<&Arc<MetaService>> {
        self.live.as_ref().map(|(s, _)| s)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores `table` as the newest chain table, the row the metadata
    /// service hands to clients that refresh.
    pub async fn store_table(&self, table: &ChainTable) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO chain_tables (version, body, created_at) VALUES ($1, $2, $3)")
            .bind(table.version as i64)
            .bind(table.to_stored())
            .bind(now_ns() / 1_000_000_000)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Kills the service: its task ends with every connection and request.
    pub async fn kill(&mut self) {
        if let Some((_, task)) = self.live.take() {
            task.stop().await;
        }
    }

    /// Starts the service again on the same database and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.live.is_none(), "the metadata service is running");
        let listener = crate::bind(self.listen.port())?;
        self.serve(listener).await
    }
}

/// Wall-clock nanoseconds, as the metadata service stamps times.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
