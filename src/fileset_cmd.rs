//! `cpfs fileset list | create | quota | delete`: a file system's filesets
//! and their quotas, for the operator, through the running server's admin
//! API. Sizes take binary units (`10G` is 10 GiB, as `df -h` shows them).

use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::admin_client::{AdminArgs, AdminClient};

#[derive(Subcommand)]
pub enum FilesetCommand {
    /// List a file system's filesets with usage and limits
    List {
        /// The file system (cpfs-…)
        fs_id: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Track a directory as a fileset (made when missing; an existing one is adopted with what it holds)
    Create {
        fs_id: String,
        /// Absolute path with / at both ends, e.g. /data/team-a/
        path: String,
        /// Bytes it may hold (binary units: 10G = 10 GiB)
        #[arg(long, value_parser = parse_size)]
        size_limit: Option<u64>,
        /// Files and directories it may hold
        #[arg(long)]
        file_count_limit: Option<u64>,
        #[arg(long)]
        description: Option<String>,
        /// Refuse deletion until this is turned off
        #[arg(long)]
        deletion_protection: bool,
        /// Return at once instead of waiting until the fileset is CREATED
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Set or cancel a fileset's quota (in force when the command returns)
    Quota {
        fs_id: String,
        /// The fileset (fset-…)
        fset_id: String,
        #[arg(long, value_parser = parse_size)]
        size_limit: Option<u64>,
        #[arg(long)]
        file_count_limit: Option<u64>,
        /// Remove both limits (usage is still counted)
        #[arg(long, conflicts_with_all = ["size_limit", "file_count_limit"])]
        cancel: bool,
        #[command(flatten)]
        server: AdminArgs,
    },
    /// Stop tracking a fileset: its directory and data stay
    Delete {
        fs_id: String,
        fset_id: String,
        #[command(flatten)]
        server: AdminArgs,
    },
}

/// `123`, `4K`, `10G`, `1.5T`, `10GiB`, `512MB`: binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1048576, 512M, 10G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G, T or P)")),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 || bytes.fract() != 0.0 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// `10.0G`-style, as `df -h` prints.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

fn limit(v: &Value, f: impl Fn(u64) -> String) -> String {
    v.as_u64().map_or_else(|| "-".to_string(), f)
}

fn table(list: &Value) -> String {
    let mut rows = vec![[
        "FSET ID".to_string(),
        "PATH".into(),
        "STATUS".into(),
        "USED".into(),
        "SIZE LIMIT".into(),
        "FILES".into(),
        "FILE LIMIT".into(),
    ]];
    for f in list.as_array().into_iter().flatten() {
        rows.push([
            f["FsetId"].as_str().unwrap_or("").to_string(),
            f["FileSystemPath"].as_str().unwrap_or("").to_string(),
            f["Status"].as_str().unwrap_or("").to_string(),
            human(f["SpaceUsage"].as_u64().unwrap_or(0)),
            limit(&f["SizeLimit"], human),
            f["FileCountUsage"].as_u64().unwrap_or(0).to_string(),
            limit(&f["FileCountLimit"], |n| n.to_string()),
        ]);
    }
    align(&rows)
}

/// Rows as columns two spaces apart, each as wide as its widest cell.
pub fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn run(command: FilesetCommand) -> anyhow::Result<()> {
    match command {
        FilesetCommand::List {
            fs_id,
            json,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            let list = api.get(&["file-systems", &fs_id, "filesets"], &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", table(&list));
            }
        }
        FilesetCommand::Create {
            fs_id,
            path,
            size_limit,
            file_count_limit,
            description,
            deletion_protection,
            no_wait,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            let made = api
                .post(
                    &["file-systems", &fs_id, "filesets"],
                    json!({
                        "Path": path,
                        "Description": description,
                        "DeletionProtection": deletion_protection,
                        "SizeLimit": size_limit,
                        "FileCountLimit": file_count_limit,
                    }),
                )
                .await?;
            let id = made["FsetId"].as_str().unwrap_or_default().to_string();
            if !no_wait {
                wait_created(&api, &fs_id, &id).await?;
            }
            println!("{id}");
        }
        FilesetCommand::Quota {
            fs_id,
            fset_id,
            size_limit,
            file_count_limit,
            cancel,
            server,
        } => {
            if !cancel && size_limit.is_none() && file_count_limit.is_none() {
                anyhow::bail!("give --size-limit, --file-count-limit or --cancel");
            }
            let api = AdminClient::from_args(server)?;
            let f = api
                .post(
                    &["file-systems", &fs_id, "filesets", &fset_id, "quota"],
                    json!({
                        "SizeLimit": size_limit,
                        "FileCountLimit": file_count_limit,
                        "Cancel": cancel,
                    }),
                )
                .await?;
            println!("{}", table(&json!([f])));
        }
        FilesetCommand::Delete {
            fs_id,
            fset_id,
            server,
        } => {
            let api = AdminClient::from_args(server)?;
            api.delete(&["file-systems", &fs_id, "filesets", &fset_id])
                .await?;
            eprintln!("fileset {fset_id} is being released; its directory and data stay");
        }
    }
    Ok(())
}

/// Waits (up to a minute) until the metadata server bound the fileset.
async fn wait_created(api: &AdminClient, fs_id: &str, id: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = api.get(&["file-systems", fs_id, "filesets"], &[]).await?;
        let status = list
            .as_array()
            .and_then(|l| l.iter().find(|f| f["FsetId"] == id))
            .and_then(|f| f["Status"].as_str())
            .unwrap_or("")
            .to_string();
        if status == "CREATED" {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("fileset {id} is still {status:?} after a minute (is a metadata server serving {fs_id}?)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512mb"), Ok(512 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("0.3").is_err());
        assert!(parse_size("99999999P").is_err());
        assert_eq!(human(10 << 30), "10.0G");
        assert_eq!(human(100), "100");
    }
}
