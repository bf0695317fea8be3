//! What the control plane's integration tests share: a control plane on
//! every backend, and the inputs they feed it.

#![allow(dead_code)] // each test file uses its own part

use std::process::Command;
use std::sync::Arc;

use cpfs_controlplane::filesystems::{ChargeType, NewFileSystem};
use cpfs_controlplane::nodes::GIB;
use cpfs_controlplane::tiers::StorageType;
use cpfs_controlplane::{ControlPlane, ManualClock, RegionConfig, Store};

/// A fresh database URL per backend: SQLite always, PostgreSQL when
/// `CPFS_TEST_DATABASE_URL` names a server. The directory keeps the
/// SQLite file alive.
pub async fn backend_urls() -> Vec<(String, String, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("t.db").display());
    out.push(("sqlite".to_string(), url, Some(tmp)));
    match std::env::var("CPFS_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("cpfs_cp_{}", uuid_like());
            let ok = Command::new("psql")
                .arg(&base)
                .arg("-qc")
                .arg(format!("CREATE DATABASE {name}"))
                .status()
                .unwrap();
            assert!(ok.success());
            let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
            out.push(("postgres".to_string(), url, None));
        }
        _ => assert!(
            std::env::var("CPFS_REQUIRE_POSTGRES").is_err(),
            "CPFS_REQUIRE_POSTGRES is set but CPFS_TEST_DATABASE_URL is not"
        ),
    }
    out
}

pub async fn backends() -> Vec<(String, ControlPlane, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    for (name, url, keep) in backend_urls().await {
        out.push((name, cp(&url).await, keep));
    }
    out
}

pub fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub async fn cp(url: &str) -> ControlPlane {
    let store = Store::open(url).await.unwrap();
    ControlPlane::new(
        store,
        Arc::new(ManualClock::at(1_768_465_800)),
        RegionConfig::default(),
    )
}

pub fn new_fs(capacity: i64, tags: Vec<(String, String)>) -> NewFileSystem {
    NewFileSystem {
        fs_type: "cpfs".into(),
        protocol_type: "cpfs".into(),
        storage_type: StorageType::Advance100,
        storage_type_name: "advance_100".into(),
        capacity_gib: capacity,
        bandwidth_mbps: None,
        charge_type: ChargeType::PayAsYouGo,
        duration_months: None,
        zone_id: None,
        vpc_id: "vpc".into(),
        vswitch_id: "vsw".into(),
        description: "d".into(),
        encrypt_type: 0,
        tags,
        dry_run: false,
        client_token: None,
    }
}

/// Node `n{i}`'s heartbeat, reporting `file_systems` as what it stores.
pub fn heartbeat(
    i: usize,
    file_systems: Vec<cpfs_proto::node::FsUsage>,
) -> cpfs_proto::heartbeat::Heartbeat {
    cpfs_proto::heartbeat::Heartbeat {
        id: format!("n{i}"),
        address: format!("127.0.0.1:{}", 9000 + i),
        zone: "z".into(),
        capacity_bytes: 100_000 * GIB as u64,
        stats: cpfs_proto::node::NodeStats {
            file_systems,
            ..Default::default()
        },
        unreachable: vec![],
    }
}

pub async fn add_nodes(cp: &ControlPlane, n: usize) {
    for i in 0..n {
        let hb = heartbeat(i, vec![]);
        cp.node_heartbeat(&hb).await.unwrap();
    }
}
