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

use crate::config::Settings;

/// Opens the control plane for `cpfs serve`, bringing the schema up to
/// date (the only place that does).
pub async fn open_control_plane(s: &Settings) -> anyhow::Result<ControlPlane> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("creating data directory {}", s.data_dir.display()))?;
    let store = Store::open(&s.database_url)
        .await
        .with_context(|| format!("opening database {}", cpfs_store::redact(&s.database_url)))?;
    control_plane_on(store, s)
}

/// Opens the control plane for an operator command (`cpfs account`,
/// `cpfs node list|status|drain`, `cpfs billing`): the schema must already
/// be exactly this build's, so a CLI of another version never migrates a
/// production store.
pub async fn open_control_plane_for_operator(s: &Settings) -> anyhow::Result<ControlPlane> {
    let store = Store::open_current(&s.database_url)
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
    Ok(ControlPlane::new(store, clock, region))
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
    if let Ok(t) = std::env::var("CPFS_CLUSTER_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let path = s.data_dir.join("cluster-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "cluster token generated");
    Ok(token)
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

/// Runs `cpfs node` for embedded node `i` and restarts it when it exits.
/// The child is killed with this process (PR_SET_PDEATHSIG), so a restarted
/// `cpfs serve` never finds a stray node holding a data directory.
fn supervise_node(i: usize, s: &Settings, token: String) {
    use std::os::unix::process::CommandExt;
    let dir = s.data_dir.join("nodes").join(format!("node-{i}"));
    let controlplane = format!("http://{}", s.listen);
    let zone = s.zones[(i - 1) % s.zones.len()].clone();
    tokio::spawn(async move {
        loop {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot find the cpfs executable for the nodes");
                    return;
                }
            };
            let mut cmd = tokio::process::Command::new(exe);
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
                        Ok(status) => {
                            tracing::warn!(node = i, %status, "data node exited; restarting")
                        }
                        Err(e) => {
                            tracing::warn!(node = i, error = %e, "data node lost; restarting")
                        }
                    }
                }
                Err(e) => tracing::error!(node = i, error = %e, "data node failed to start"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Plans the chain table twice a second besides on heartbeats, so a dead
/// node is replaced within the timeout even when no other node speaks.
async fn failure_detector(cp: cpfs_controlplane::ControlPlane) {
    const EVERY: Duration = Duration::from_millis(500);
    cp.liveness.register("chain planner", EVERY);
    loop {
        tokio::time::sleep(EVERY).await;
        let outcome = cp.update_chain_table().await;
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "chain table step failed");
        }
        cp.liveness.pass(
            "chain planner",
            outcome.map(|_| ()).map_err(|e| e.to_string()),
        );
    }
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("creating data directory {}", s.data_dir.display()))?;
    let token = cluster_token(&s)?;
    let policy = PlacementPolicy {
        replicas: s.replicas,
        expected_nodes: s.nodes,
        failure_timeout_ms: s.failure_timeout.as_millis() as i64,
    };
    let cp = open_control_plane(&s)
        .await?
        .with_policy(policy)
        .with_ldap_bind_password(s.ldap_bind_password.clone());
    // A bad price book stops the start, before anything is billed with it.
    let billing = billing(&cp, &s)?;
    bootstrap(&cp, &s).await?;

    // The metadata service, on its own port.
    let meta_listener = bind_meta(&s).await?;
    let meta_address = meta_listener.local_addr()?.to_string();
    let meta = cpfs_meta::MetaService::new(
        cp.store.clone(),
        std::sync::Arc::new(cp.clone()),
        CapabilityKey::from_cluster_token(&token),
        cpfs_meta::identity::IdentitySettings {
            ldap_cache_ttl: s.ldap_cache_ttl,
            ldap_bind_password: s.ldap_bind_password.clone(),
        },
    );
    tokio::spawn(cpfs_meta::serve(meta, meta_listener));
    tracing::info!(listen = %meta_address, "metadata service listening");

    tokio::spawn(Reconciler::new(cp.clone(), policy).run());
    tokio::spawn(failure_detector(cp.clone()));
    tokio::spawn(billing.run(Duration::from_secs(s.billing_interval_secs)));

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
    let app = cpfs_api::router(gateway);
    let handle = axum_server::Handle::new();

    let listener =
        std::net::TcpListener::bind(s.listen).with_context(|| format!("binding {}", s.listen))?;
    listener.set_nonblocking(true)?;
    tracing::info!(listen = %s.listen, data_dir = %s.data_dir.display(), "API listening (http)");
    // TCP_NODELAY: a reply written in two segments must not wait for the
    // client's delayed ACK.
    let http = axum_server::from_tcp(listener)
        .acceptor(axum_server::accept::NoDelayAcceptor::new())
        .handle(handle.clone())
        .serve(app.clone().into_make_service());

    // Nodes start once the API (where they register) is bound.
    for i in 1..=s.nodes {
        supervise_node(i, &s, token.clone());
    }

    let https = match (&s.tls, s.https_listen) {
        (Some((cert, key)), Some(addr)) => {
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
            Some(
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(handle.clone())
                    .serve(app.into_make_service()),
            )
        }
        _ => None,
    };

    let shutdown = handle.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.graceful_shutdown(Some(Duration::from_secs(5)));
    });

    match https {
        Some(https) => {
            let (a, b) = tokio::join!(http, https);
            a?;
            b?;
        }
        None => http.await?,
    }
    Ok(())
}
