//! `cpfs meta`: a metadata server of its own (another host, pointed at the
//! control plane and the shared PostgreSQL), and `cpfs meta list`. Also the
//! two ways a metadata server reaches the control plane for its lease: a
//! call inside `cpfs serve`, an HTTP heartbeat from `cpfs meta`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use cpfs_controlplane::{ControlPlane, RegionConfig};
use cpfs_meta::ownership::{Coordinator, HeartbeatFuture, LeaseKeeper};
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::heartbeat::{MetaHeartbeat, META_HEARTBEAT_PATH, TOKEN_HEADER};
use cpfs_runtime::supervisor::Supervisor;
use cpfs_store::Store;

use crate::admin_client::{AdminArgs, AdminClient};

#[derive(Args)]
pub struct MetaArgs {
    /// Where this server keeps its id (created when missing)
    #[arg(long, env = "CPFS_META_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve the metadata protocol on (port 0: any free port)
    #[arg(long, env = "CPFS_META_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Address clients should use, when not the bound one
    #[arg(long, env = "CPFS_META_ADVERTISE")]
    pub advertise: Option<String>,
    /// The control plane: the URL `cpfs serve` answers the API on
    #[arg(
        long,
        env = "CPFS_CONTROLPLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub controlplane: String,
    /// The shared store (postgres://…): the one `cpfs serve` uses
    #[arg(long, env = "CPFS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The key that seals secrets in the store: a copy of cpfs serve's
    /// (default DATA_DIR/secret-key)
    #[arg(long, env = "CPFS_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// LDAP servers (host or host:port, comma-separated) allowed at any
    /// address; as cpfs serve's --ldap-allowed-servers
    #[arg(long, env = "CPFS_LDAP_ALLOWED_SERVERS", value_delimiter = ',')]
    pub ldap_allowed_servers: Option<Vec<String>>,
    /// Networks (CIDRs, comma-separated) whose hosts the default access
    /// group lets mount: give the same as to `cpfs serve`
    /// [default: 127.0.0.0/8,::1/128]
    #[arg(long, env = "CPFS_DEFAULT_ACCESS_NETWORKS", value_delimiter = ',')]
    pub default_access_networks: Option<Vec<String>>,
    /// Seconds a data-node capability lasts (clients renew theirs while files stay open)
    #[arg(long, env = "CPFS_CAPABILITY_SECS")]
    pub capability_secs: Option<u64>,
    /// Seconds a metadata session lives unused before it ends and its open files are let go (mounts keep theirs alive)
    #[arg(long, env = "CPFS_SESSION_LEASE_SECS")]
    pub session_lease_secs: Option<u64>,
}

#[derive(Subcommand)]
pub enum MetaCommand {
    /// List metadata servers, whether they are live, and the file systems each owns (JSON)
    List {
        #[command(flatten)]
        server: AdminArgs,
    },
}

pub async fn list(command: MetaCommand) -> anyhow::Result<()> {
    match command {
        MetaCommand::List { server } => {
            let api = AdminClient::from_args(server)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api.get(&["meta-servers"], &[]).await?)?
            );
        }
    }
    Ok(())
}

/// The lease through a call: the metadata server inside `cpfs serve`.
pub struct InProcess(pub ControlPlane);

impl Coordinator for InProcess {
    fn heartbeat<'a>(&'a self, hb: &'a MetaHeartbeat) -> HeartbeatFuture<'a> {
        Box::pin(async move { self.0.meta_heartbeat(hb).await.map_err(|e| e.to_string()) })
    }
}

/// The lease over HTTP, authenticated by the cluster token.
struct OverHttp {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Coordinator for OverHttp {
    fn heartbeat<'a>(&'a self, hb: &'a MetaHeartbeat) -> HeartbeatFuture<'a> {
        Box::pin(async move {
            let resp = self
                .client
                .post(&self.url)
                .header(TOKEN_HEADER, &self.token)
                .json(hb)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            resp.json().await.map_err(|e| e.to_string())
        })
    }
}

/// This server's id: kept in `dir/meta-server-id`, made on first start.
pub fn server_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("meta-server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = format!("meta-{:012x}", rand::random::<u64>() >> 16);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The address clients are told: the advertised one, or the bound one
/// (an unspecified host becomes loopback).
pub fn advertised(bound: std::net::SocketAddr, advertise: Option<String>) -> String {
    advertise.unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            format!("127.0.0.1:{}", bound.port())
        } else {
            bound.to_string()
        }
    })
}

pub async fn run(args: MetaArgs) -> anyhow::Result<()> {
    let Some(dir) = args.data_dir else {
        anyhow::bail!("cpfs meta needs --data-dir DIR (where it keeps its id)");
    };
    let Some(url) = args.database_url else {
        anyhow::bail!("cpfs meta needs --database-url: the store cpfs serve uses (postgres://…)");
    };
    let token = crate::node_cmd::cluster_token_from_env("the metadata server")?;
    crate::private::private_dir(&dir)?;
    cpfs_directory::install_policy(cpfs_directory::DirectoryPolicy {
        allowed_servers: crate::config::allowed_servers(
            args.ldap_allowed_servers.unwrap_or_default(),
        )?,
    });
    // The key is cpfs serve's: a key of its own would open nothing.
    let key_file = args
        .secret_key_file
        .unwrap_or_else(|| dir.join("secret-key"));
    let secrets = if key_file.exists() {
        cpfs_controlplane::secrets::SecretBox::load(&key_file)?
    } else {
        tracing::warn!(path = %key_file.display(), "no secret key file: tenant LDAP bind passwords cannot be opened (copy cpfs serve's DATA_DIR/secret-key)");
        cpfs_controlplane::secrets::SecretBox::ephemeral()
    };
    let id = server_id(&dir)?;
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening database {}", cpfs_store::redact(&url)))?;
    // Mount-target rules and LDAP configurations are read from the shared
    // store, as the control plane itself reads them.
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(cpfs_controlplane::clock::SystemClock),
        RegionConfig::default(),
    )
    .with_secrets(secrets);
    let cp = match args.default_access_networks {
        Some(nets) => cp.with_default_networks(crate::config::access_networks(nets)?),
        None => cp,
    };
    let service = cpfs_meta::MetaService::new(
        store,
        Arc::new(cp.clone()),
        CapabilityKey::from_cluster_token(&token),
        cpfs_meta::identity::IdentitySettings::default(),
    )
    .context("starting the metadata service")?;
    service.set_capability_lifetime(crate::config::capability_secs(args.capability_secs)?);
    service.set_session_lease(crate::config::session_lease_secs(args.session_lease_secs)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = advertised(listener.local_addr()?, args.advertise);
    let coordinator = Arc::new(OverHttp {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?,
        url: format!(
            "{}{META_HEARTBEAT_PATH}",
            args.controlplane.trim_end_matches('/')
        ),
        token,
    });
    tracing::info!(id = %id, address = %address, "metadata server starting");
    let mut tasks = Supervisor::new(cp.liveness.clone());
    tasks.stop_on_signals();
    spawn_server(&mut tasks, service, listener, coordinator, id, address);
    tasks
        .run(Duration::from_secs(10))
        .await
        .map_err(|why| anyhow::anyhow!("cpfs meta stopped: {why}"))
}

/// The loops of a metadata server: its listener (draining on shutdown),
/// its lease, quota sync, session publication and the orphan collector.
pub fn spawn_server(
    tasks: &mut Supervisor,
    service: Arc<cpfs_meta::MetaService>,
    listener: tokio::net::TcpListener,
    coordinator: Arc<dyn Coordinator>,
    id: String,
    address: String,
) {
    let keeper = LeaseKeeper::new(service.clone(), coordinator, id, address);
    tasks.every("metadata lease", LeaseKeeper::PERIOD, move || {
        let k = keeper.clone();
        async move { k.pass().await }
    });
    let listening = service.clone();
    tasks.spawn_until("metadata service", move |shutdown| async move {
        let stop = shutdown.clone();
        let folding = listening.clone();
        cpfs_meta::serve_until(listening, listener, async move { stop.requested().await }).await;
        if shutdown.is_requested() {
            // A clean stop leaves the namespace tables whole: nothing of
            // it waits in the journal's log for the next load.
            folding.folded().await;
            Ok(())
        } else {
            Err("the listener stopped".to_string())
        }
    });
    let syncing = service.clone();
    tasks.every("quota sync", cpfs_meta::QUOTA_SYNC_PERIOD, move || {
        let s = syncing.clone();
        async move { s.sync_quotas().await }
    });
    let publishing = service.clone();
    tasks.every(
        "session publication",
        cpfs_meta::SESSION_PUBLISH_PERIOD,
        move || {
            let s = publishing.clone();
            async move { s.publish_sessions().await }
        },
    );
    let collector = cpfs_meta::Collector::new(service);
    tasks.every(
        "orphan collector",
        cpfs_meta::Collector::PERIOD,
        move || {
            let c = collector.clone();
            async move { c.pass().await }
        },
    );
}
