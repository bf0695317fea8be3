//! `cpfs quota list | set | cancel`: user and group quotas of a file
//! system (a CPFS extension), for the operator, through the running
//! server's admin API.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::admin_client::{AdminArgs, AdminClient};
use crate::fileset_cmd::{human, parse_size};

/// Whose quota: exactly one of --uid and --gid.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Owner {
    /// A user id
    #[arg(long)]
    uid: Option<u32>,
    /// A group id
    #[arg(long)]
    gid: Option<u32>,
}

impl Owner {
    fn body(&self) -> (&'static str, u32) {
        match (self.uid, self.gid) {
            (Some(u), _) => ("Uid", u),
            (_, Some(g)) => ("Gid", g),
            // clap's group makes one of them present.
            (None, None) => ("Uid", 0),
        }
    }
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// List a file system's user and group quotas with usage
    List {
        /// The file system (cpfs-…)
        fs_id: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Set a uid's or gid's hard limits (in force when the command returns)
    Set {
        fs_id: String,
        #[command(flatten)]
        owner: Owner,
        /// Bytes the owner may hold (binary units: 10G = 10 GiB)
        #[arg(long, value_parser = parse_size)]
        size_limit: Option<u64>,
        /// Files and directories the owner may hold
        #[arg(long)]
        file_count_limit: Option<u64>,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Remove a uid's or gid's limits
    Cancel {
        fs_id: String,
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        server: AdminArgs,
    },
}

fn cell(v: &Value, f: impl Fn(u64) -> String) -> String {
    v.as_u64().map_or_else(|| "-".to_string(), f)
}

fn table(list: &Value) -> String {
    let mut rows = vec![[
        "TYPE".to_string(),
        "ID".into(),
        "USED".into(),
        "SIZE LIMIT".into(),
        "FILES".into(),
        "FILE LIMIT".into(),
    ]];
    for q in list.as_array().into_iter().flatten() {
        rows.push([
            q["UserType"].as_str().unwrap_or("").to_string(),
            cell(&q["UserId"], |n| n.to_string()),
            human(q["SizeReal"].as_u64().unwrap_or(0)),
            cell(&q["SizeLimit"], human),
            cell(&q["FileCountReal"], |n| n.to_string()),
            cell(&q["FileCountLimit"], |n| n.to_string()),
        ]);
    }
    crate::fileset_cmd::align(&rows)
}

pub async fn run(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::List {
            fs_id,
            json,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            let list = api
                .get(&["file-systems", &fs_id, "user-quotas"], &[])
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", table(&list));
            }
        }
        QuotaCommand::Set {
            fs_id,
            owner,
            size_limit,
            file_count_limit,
            server,
        } => {
            if size_limit.is_none() && file_count_limit.is_none() {
                anyhow::bail!("give --size-limit, --file-count-limit or both");
            }
            let (kind, id) = owner.body();
            let api = AdminClient::from_args(server)?;
            let list = api
                .post(
                    &["file-systems", &fs_id, "user-quotas"],
                    json!({
                        "UserType": kind,
                        "UserId": id,
                        "SizeLimit": size_limit,
                        "FileCountLimit": file_count_limit,
                    }),
                )
                .await?;
            println!("{}", table(&list));
        }
        QuotaCommand::Cancel {
            fs_id,
            owner,
            server,
        } => {
            let (kind, id) = owner.body();
            let api = AdminClient::from_args(server)?;
            api.post(
                &["file-systems", &fs_id, "user-quotas"],
                json!({ "UserType": kind, "UserId": id, "Cancel": true }),
            )
            .await?;
            eprintln!("{kind} {id} has no quota on {fs_id} any more");
        }
    }
    Ok(())
}
