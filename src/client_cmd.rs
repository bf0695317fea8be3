//! `cpfs client list | fence | unfence`: who is mounted on a file system
//! and which addresses are fenced off it, for the operator, through the
//! running server's admin API.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::admin_client::{AdminArgs, AdminClient};
use crate::fileset_cmd::align;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Clients mounted in the last minute, and fenced addresses
    List {
        /// The file system (cpfs-…)
        fs_id: String,
        /// Print JSON instead of tables
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Fence a client address off the file system: its sessions are refused,
    /// its capabilities revoked on every node; waits until EVICTED
    Fence {
        fs_id: String,
        /// The client's address (IPv4 or IPv6)
        client_ip: String,
        /// Return at once (EVICTING) instead of waiting for EVICTED
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Lift a fence: the client may mount and work again
    Unfence {
        fs_id: String,
        client_ip: String,
        #[command(flatten)]
        server: AdminArgs,
    },
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn tables(v: &Value) -> String {
    let mut mounted = vec![[
        "CLIENT".to_string(),
        "SESSION".into(),
        "MOUNT TARGET".into(),
        "ACCESS POINT".into(),
        "MOUNTED".into(),
        "LAST ACTIVE".into(),
    ]];
    for c in v["Mounted"].as_array().into_iter().flatten() {
        mounted.push([
            s(&c["ClientIP"]),
            s(&c["SessionId"]),
            s(&c["MountTargetDomain"]),
            s(&c["AccessPointId"]),
            s(&c["MountTime"]),
            s(&c["LastActiveTime"]),
        ]);
    }
    let mut fenced = vec![["FENCED".to_string(), "STATE".into()]];
    for f in v["Fenced"].as_array().into_iter().flatten() {
        fenced.push([s(&f["ClientIP"]), s(&f["State"])]);
    }
    format!("{}\n\n{}", align(&mounted), align(&fenced))
}

pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::List {
            fs_id,
            json,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            let v = api.get(&["file-systems", &fs_id, "clients"], &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", tables(&v));
            }
        }
        ClientCommand::Fence {
            fs_id,
            client_ip,
            no_wait,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            let path = ["file-systems", fs_id.as_str(), "clients", "fence"];
            let mut v = api.post(&path, json!({ "ClientIP": client_ip })).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !no_wait && v["State"] != "EVICTED" {
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("{client_ip} is still {} after a minute", v["State"]);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let all = api.get(&["file-systems", &fs_id, "clients"], &[]).await?;
                let state = all["Fenced"]
                    .as_array()
                    .and_then(|l| l.iter().find(|f| f["ClientIP"] == client_ip.as_str()))
                    .map(|f| f["State"].clone())
                    .unwrap_or(Value::Null);
                v["State"] = state;
            }
            println!("{client_ip} {}", s(&v["State"]));
        }
        ClientCommand::Unfence {
            fs_id,
            client_ip,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            api.post(
                &["file-systems", &fs_id, "clients", "fence"],
                json!({ "ClientIP": client_ip, "Remove": true }),
            )
            .await?;
            println!("{client_ip} ACCEPTABLE");
        }
    }
    Ok(())
}
