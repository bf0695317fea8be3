//! `cpfs serve`: open the store, bootstrap the first account, start the
//! reconciler and the gateway on HTTP (and HTTPS when configured).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cpfs_api::{Gateway, GatewayConfig};
use cpfs_controlplane::accounts::{NewAccount, BOOTSTRAP_ACCOUNT};
use cpfs_controlplane::nodes::{NodeRegistration, PlacementPolicy, GIB};
use cpfs_controlplane::reconciler::Reconciler;
use cpfs_controlplane::{ControlPlane, RegionConfig, Store, SystemClock};

use crate::config::Settings;

/// Logical capacity each embedded node offers placement (thin provisioned).
const EMBEDDED_NODE_CAPACITY_GIB: i64 = 1024 * 1024;

pub async fn open_control_plane(s: &Settings) -> anyhow::Result<ControlPlane> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("creating data directory {}", s.data_dir.display()))?;
    let store = Store::open(&s.database_url).await.with_context(|| {
        format!(
            "opening database {}",
            cpfs_controlplane::store::redact(&s.database_url)
        )
    })?;
    let region = RegionConfig {
        region_id: s.region.clone(),
        local_name: s.region.clone(),
        zones: s.zones.clone(),
        mount_domain: s.mount_domain.clone(),
        endpoint: s.listen.to_string(),
    };
    Ok(ControlPlane::new(store, Arc::new(SystemClock), region))
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
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(serde_json::to_string_pretty(&account)?.as_bytes())?;
        f.sync_all()?;
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

/// Until `cpfs node` processes run, the embedded nodes are registry entries
/// kept alive by this process.
async fn register_embedded_nodes(cp: &ControlPlane, s: &Settings) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 1..=s.nodes {
        let reg = NodeRegistration {
            id: format!("embedded-{i}"),
            address: format!("embedded:{i}"),
            zone_id: s.zones[(i - 1) % s.zones.len()].clone(),
            capacity_bytes: EMBEDDED_NODE_CAPACITY_GIB * GIB,
        };
        cp.register_node(&reg).await?;
        ids.push(reg.id);
    }
    Ok(ids)
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let cp = open_control_plane(&s).await?;
    bootstrap(&cp, &s).await?;
    let node_ids = register_embedded_nodes(&cp, &s).await?;
    let heartbeat_cp = cp.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for id in &node_ids {
                if let Err(e) = heartbeat_cp.heartbeat(id).await {
                    tracing::warn!(node_id = %id, error = %e, "embedded node heartbeat failed");
                }
            }
        }
    });
    let policy = PlacementPolicy {
        replicas: s.replicas,
        ..PlacementPolicy::default()
    };
    tokio::spawn(Reconciler::new(cp.clone(), policy).run());

    let gateway = Gateway::new(
        cp.clone(),
        GatewayConfig {
            rate_limit_per_key: s.rate_limit,
            rate_limit_burst: s.rate_limit.saturating_mul(2),
            ..GatewayConfig::default()
        },
    );
    let app = cpfs_api::router(gateway);
    let handle = axum_server::Handle::new();

    let listener =
        std::net::TcpListener::bind(s.listen).with_context(|| format!("binding {}", s.listen))?;
    listener.set_nonblocking(true)?;
    tracing::info!(listen = %s.listen, data_dir = %s.data_dir.display(), "API listening (http)");
    let http = axum_server::from_tcp(listener)
        .handle(handle.clone())
        .serve(app.clone().into_make_service());

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
