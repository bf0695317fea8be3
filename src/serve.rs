//! `cpfs serve`: open the store, bootstrap the first account, start the
//! metadata service, the data nodes (child processes), the reconciler and
//! the gateway on HTTP (and HTTPS when configured).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cpfs_api::{Gateway, GatewayConfig};
use cpfs_controlplane::accounts::{NewAccount, BOOTSTRAP_ACCOUNT};
use cpfs_controlplane::nodes::PlacementPolicy;
use cpfs_controlplane::reconciler::Reconciler;
use cpfs_controlplane::{Clock, ControlPlane, FileClock, RegionConfig, Store, SystemClock};
use cpfs_proto::capability::CapabilityKey;
use cpfs_runtime::{Shutdown, Supervisor};

use crate::config::Settings;

/// Opens the control plane for `cpfs serve`, bringing the schema up to
/// date (the only place that does).
pub async fn open_control_plane(s: &Settings) -> anyhow::Result<ControlPlane> {
    crate::private::private_dir(&s.data_dir)
        .with_context(|| format!("preparing data directory {}", s.data_dir.display()))?;
    let store = Store::open(&s.database_url)
        .await
        .with_context(|| format!("opening database {}", cpfs_store::redact(&s.database_url)))?;
    control_plane_on(store, s)
}

fn control_plane_on(store: Store, s: &Settings) -> anyhow::Result<ControlPlane> {
    let region = RegionConfig {
        region_id: s.region.clone(),
        local_name: s.region.clone(),
        zones: s.zones.clone(),
        mount_domain: s.mount_domain.clone(),
        endpoint: s.listen.to_string(),
    };
    let clock: Arc<dyn Clock> = match &s.clock_file {
        Some(path) => {
            tracing::warn!(path = %path.display(), "time is read from a clock file (test and rehearsal only)");
            Arc::new(FileClock::open(path)?)
        }
        None => Arc::new(SystemClock),
    };
    let secrets = cpfs_controlplane::secrets::SecretBox::load_or_create(&s.secret_key_file)?;
    Ok(ControlPlane::new(store, clock, region).with_secrets(secrets))
}

/// The price book in force: the operator's file, else the built-in one.
pub fn price_book(s: &Settings) -> anyhow::Result<cpfs_billing::PriceBook> {
    match &s.price_book {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading price book {}", path.display()))?;
            cpfs_billing::PriceBook::parse(&text)
                .with_context(|| format!("price book {}", path.display()))
        }
        None => Ok(cpfs_billing::PriceBook::builtin()?),
    }
}

/// Billing over an open control plane, with the operator's settings.
pub fn billing(cp: &ControlPlane, s: &Settings) -> anyhow::Result<cpfs_billing::Billing> {
    Ok(cpfs_billing::Billing::new(
        cp.clone(),
        Arc::new(price_book(s)?),
        s.retention_secs,
    ))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates the first account on the first start. The secret is printed once
/// and kept, readable by the owner only, in the data directory.
async fn bootstrap(cp: &ControlPlane, s: &Settings) -> anyhow::Result<()> {
    let from_env = match (
        std::env::var("CPFS_ACCESS_KEY_ID"),
        std::env::var("CPFS_ACCESS_KEY_SECRET"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Some((id, secret)),
        _ => None,
    };
    // A key the operator supplied is not echoed back: they have it.
    let created: Option<NewAccount> = match from_env {
        Some((id, secret)) => {
            cp.ensure_access_key(BOOTSTRAP_ACCOUNT, &id, &secret)
                .await?;
            tracing::info!(access_key_id = %id, "using the access key from CPFS_ACCESS_KEY_ID");
            None
        }
        None if !cp.account_exists(BOOTSTRAP_ACCOUNT).await? => {
            Some(cp.create_account(BOOTSTRAP_ACCOUNT, None).await?)
        }
        None => None,
    };
    if let Some(account) = created {
        let path = s.data_dir.join("access-key.json");
        write_private(&path, &serde_json::to_string_pretty(&account)?)?;
        // Printed once, on stdout (never through the log).
        println!(
            "Created account {} with access key:\n  AccessKeyId:     {}\n  AccessKeySecret: {}\n(also saved to {}, mode 0600)",
            account.account_id,
            account.access_key_id,
            account.access_key_secret,
            path.display()
        );
    }
    Ok(())
}

/// The secret nodes prove themselves with: `CPFS_CLUSTER_TOKEN`, else the
/// one kept in the data directory (generated on first start).
fn cluster_token(s: &Settings) -> anyhow::Result<String> {
    secret(s, "CPFS_CLUSTER_TOKEN", "cluster-token")
}

/// The secret operator commands present to the admin API:
/// `CPFS_ADMIN_TOKEN`, else the one kept in the data directory (generated
/// on first start). Not the cluster token: nodes hold that one.
fn admin_token(s: &Settings) -> anyhow::Result<String> {
    secret(s, "CPFS_ADMIN_TOKEN", crate::admin_client::TOKEN_FILE)
}

/// The secret that opens `/metrics` and nothing else (for a Prometheus
/// server): `CPFS_METRICS_TOKEN`, else the one kept in the data directory
/// as `metrics-token` (generated on first start).
fn metrics_token(s: &Settings) -> anyhow::Result<String> {
    secret(s, "CPFS_METRICS_TOKEN", "metrics-token")
}

/// A secret from `var`, else from `DATA_DIR/file`, else a new random one
/// written there readable by the owner only.
fn secret(s: &Settings, var: &str, file: &str) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var(var) {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let path = s.data_dir.join(file);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "{file} generated");
    Ok(token)
}

/// Records where the API listens, so operator commands on this machine find
/// it from the data directory alone.
fn record_endpoint(s: &Settings, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let path = s.data_dir.join(crate::admin_client::ENDPOINT_FILE);
    std::fs::write(&path, format!("http://{host}:{}\n", addr.port()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Binds the metadata service. With port 0 ("any") it takes the port it had
/// before when that is free again: mounted clients keep the address they
/// resolved at mount time, so a restarted `cpfs serve` must come back where
/// they look for it (they re-establish their session by themselves).
async fn bind_meta(s: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    let remembered = s.data_dir.join("meta-port");
    if s.meta_listen.port() == 0 {
        let previous = std::fs::read_to_string(&remembered)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        if let Some(port) = previous {
            let addr = std::net::SocketAddr::new(s.meta_listen.ip(), port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Ok(l),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "the previous metadata port is taken; mounted clients must mount again")
                }
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(s.meta_listen)
        .await
        .with_context(|| format!("binding the metadata service on {}", s.meta_listen))?;
    if s.meta_listen.port() == 0 {
        let port = listener.local_addr()?.port();
        std::fs::write(&remembered, format!("{port}\n"))
            .with_context(|| format!("writing {}", remembered.display()))?;
    }
    Ok(listener)
}

/// Runs `cpfs node` for embedded node `i` and restarts it when it exits,
/// until the future is dropped (which kills the child). The child is also
/// killed with this process (PR_SET_PDEATHSIG), so a restarted
/// `cpfs serve` never finds a stray node holding a data directory.
async fn supervise_node(i: usize, s: &Settings, token: String) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let dir = s.data_dir.join("nodes").join(format!("node-{i}"));
    let controlplane = format!("http://{}", s.listen);
    let zone = s.zones[(i - 1) % s.zones.len()].clone();
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the cpfs executable for the nodes: {e}"))?;
    let policy = || cpfs_runtime::retry::delays(Duration::from_secs(1), Duration::from_secs(30));
    let mut restarts = policy();
    loop {
        let started = std::time::Instant::now();
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "node",
            "--listen",
            "127.0.0.1:0",
            "--zone",
            &zone,
            "--controlplane",
            &controlplane,
            "--data-dir",
        ])
        .arg(&dir)
        .env("CPFS_CLUSTER_TOKEN", &token)
        .kill_on_drop(true);
        // SAFETY: prctl only sets a flag of the child process; it runs
        // between fork and exec and touches no shared memory.
        unsafe {
            cmd.as_std_mut().pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(node = i, pid = child.id().unwrap_or(0), "data node started");
                match child.wait().await {
                    Ok(status) => tracing::warn!(node = i, %status, "data node exited; restarting"),
                    Err(e) => tracing::warn!(node = i, error = %e, "data node lost; restarting"),
                }
            }
            Err(e) => tracing::error!(node = i, error = %e, "data node failed to start"),
        }
        // A node that ran for a while is restarted after the first delay
        // again; one that keeps failing at start ever more slowly.
        if started.elapsed() > Duration::from_secs(60) {
            restarts = policy();
        }
        tokio::time::sleep(restarts.next().unwrap_or(Duration::from_secs(30))).await;
    }
}

/// Every embedded node under one task: dropping it (at shutdown) kills
/// them all.
async fn supervise_nodes(s: Settings, token: String) -> Result<(), String> {
    let mut nodes = tokio::task::JoinSet::new();
    for i in 1..=s.nodes {
        let (s, token) = (s.clone(), token.clone());
        nodes.spawn(async move { supervise_node(i, &s, token).await });
    }
    match nodes.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(e.to_string()),
        None => std::future::pending().await,
    }
}

/// Serves HTTP until shutdown, then lets requests in flight finish.
async fn serve_http(
    server: impl std::future::Future<Output = std::io::Result<()>>,
    handle: axum_server::Handle,
    shutdown: Shutdown,
) -> Result<(), String> {
    tokio::select! {
        r = server => r.map_err(|e| e.to_string()),
        _ = async {
            shutdown.requested().await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
            std::future::pending::<()>().await
        } => Ok(()),
    }
}

pub async fn run(mut s: Settings) -> anyhow::Result<()> {
    crate::private::private_dir(&s.data_dir)
        .with_context(|| format!("preparing data directory {}", s.data_dir.display()))?;
    cpfs_directory::install_policy(cpfs_directory::DirectoryPolicy {
        allowed_servers: s.ldap_allowed_servers.clone(),
    });
    // The API's port is taken first, before any listener or node binds an
    // ephemeral port that could land on it. With port 0 the port the
    // system chose is what the region, the nodes and the endpoint file
    // name from here on.
    let listener =
        std::net::TcpListener::bind(s.listen).with_context(|| format!("binding {}", s.listen))?;
    listener.set_nonblocking(true)?;
    s.listen = listener.local_addr()?;
    let token = cluster_token(&s)?;
    let admin = admin_token(&s)?;
    let policy = PlacementPolicy {
        replicas: s.replicas,
        expected_nodes: s.nodes,
        failure_timeout_ms: s.failure_timeout.as_millis() as i64,
    };
    let cp = open_control_plane(&s)
        .await?
        .with_policy(policy)
        .with_ldap_bind_password(s.ldap_bind_password.clone())
        .with_default_networks(s.default_access_networks.clone())
        .with_fileset_limits(s.fileset_limits);
    // Rows from before secrets were sealed are sealed now, before the
    // gateway reads any of them.
    cp.seal_plaintext_secrets()
        .await
        .context("sealing stored secrets")?;
    // A bad price book stops the start, before anything is billed with it.
    let billing = billing(&cp, &s)?;
    bootstrap(&cp, &s).await?;

    // The metadata service, on its own port.
    let meta_listener = bind_meta(&s).await?;
    let meta_listener_address = meta_listener.local_addr()?;
    let meta_address = crate::meta_cmd::advertised(meta_listener_address, None);
    let meta = cpfs_meta::MetaService::new(
        cp.store.clone(),
        std::sync::Arc::new(cp.clone()),
        CapabilityKey::from_cluster_token(&token),
        cpfs_meta::identity::IdentitySettings {
            ldap_cache_ttl: s.ldap_cache_ttl,
            ldap_bind_password: s.ldap_bind_password.clone(),
        },
    )
    .context("starting the metadata service")?;
    meta.set_capability_lifetime(s.capability_lifetime);
    meta.set_session_lease(s.session_lease);
    let mut tasks = Supervisor::new(cp.liveness.clone());
    tasks.stop_on_signals();
    // One metadata server runs here by default; it takes its file systems
    // from the control plane under a lease like any `cpfs meta`, so more
    // servers can join (and take over when this process dies).
    tracing::info!(listen = %meta_address, "metadata service listening");
    crate::meta_cmd::spawn_server(
        &mut tasks,
        meta,
        meta_listener,
        Arc::new(crate::meta_cmd::InProcess(cp.clone())),
        crate::meta_cmd::server_id(&s.data_dir)?,
        crate::meta_cmd::advertised(meta_listener_address, None),
    );

    let reconciler = Reconciler::new(cp.clone(), policy);
    tasks.spawn_until(cpfs_controlplane::reconciler::LOOP_NAME, |shutdown| {
        reconciler.run(shutdown)
    });
    // The chain table is planned twice a second besides on heartbeats, so
    // a dead node is replaced within the timeout even when no other node
    // speaks.
    let planner = cp.clone();
    tasks.every("chain planner", Duration::from_millis(500), move || {
        let cp = planner.clone();
        async move {
            cp.update_chain_table()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    });
    // Each file system's capacity used, for its per-minute series (the
    // I/O comes with the nodes' heartbeats); several samples a minute, so
    // a slow pass does not leave a minute without one, and a chart shows a
    // write's space within seconds.
    let sampler = cp.clone();
    tasks.every("statistics", Duration::from_secs(5), move || {
        let cp = sampler.clone();
        async move { cp.sample_statistics().await.map_err(|e| e.to_string()) }
    });
    let billing = Arc::new(billing);
    let metering = billing.clone();
    tasks.every(
        "billing",
        Duration::from_secs(s.billing_interval_secs),
        move || {
            let b = metering.clone();
            async move { b.scheduled_pass().await }
        },
    );

    let gateway = Gateway::new(
        cp.clone(),
        GatewayConfig {
            rate_limit_per_key: s.rate_limit,
            rate_limit_burst: s.rate_limit.saturating_mul(2),
            cluster_token: Some(token.clone()),
            meta_address,
            signatures_use_wall_clock: s.clock_file.is_some(),
            ..GatewayConfig::default()
        },
    );
    let admin =
        cpfs_api::admin::AdminState::new(cp.clone(), billing, admin, Some(metrics_token(&s)?))
            .context("the admin token is empty")?;
    let app = cpfs_api::app(gateway, Some(admin));
    let handle = axum_server::Handle::new();

    record_endpoint(&s, s.listen)?;
    tracing::info!(listen = %s.listen, data_dir = %s.data_dir.display(), "API listening (http)");
    // TCP_NODELAY: a reply written in two segments must not wait for the
    // client's delayed ACK.
    let http = axum_server::from_tcp(listener)
        .acceptor(axum_server::accept::NoDelayAcceptor::new())
        .handle(handle.clone())
        .serve(
            app.clone()
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        );
    let http_handle = handle.clone();
    tasks.spawn_until("api (http)", |shutdown| {
        serve_http(http, http_handle, shutdown)
    });

    if let (Some((cert, key)), Some(addr)) = (&s.tls, s.https_listen) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .with_context(|| {
                format!(
                    "loading TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?;
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        tracing::info!(listen = %addr, "API listening (https)");
        let https = axum_server::from_tcp_rustls(listener, tls)
            .handle(handle.clone())
            .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>());
        tasks.spawn_until("api (https)", |shutdown| {
            serve_http(https, handle, shutdown)
        });
    }

    // Nodes start once the API (where they register) is bound.
    if s.nodes > 0 {
        tasks.spawn("data nodes", supervise_nodes(s.clone(), token));
    }

    tasks
        .run(Duration::from_secs(10))
        .await
        .map_err(|why| anyhow::anyhow!("cpfs serve stopped: {why}"))?;
    tracing::info!("stopped");
    Ok(())
}
