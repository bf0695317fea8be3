//! `cpfs billing ...`: operator commands, run by the server's own billing
//! (its clock, price book and retention) through the admin API. They may
//! run while the server's own passes run: everything billing writes is
//! idempotent.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::admin_client::{AdminArgs, AdminClient};

/// How every billing command finds the server.
pub type Common = AdminArgs;

#[derive(Subcommand, Debug)]
pub enum BillingCommand {
    /// Meter and charge every whole hour up to TIME that is not billed yet
    /// (also stops and releases expired subscriptions due by then)
    Meter {
        /// Unix seconds or yyyy-MM-ddTHH:mm:ssZ; default: now. Not later than now.
        #[arg(long)]
        through: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Write the statement of a month: per account, file system and billing item
    Report {
        /// The billing cycle, YYYY-MM
        #[arg(long)]
        month: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
        /// Write to this file instead of stdout
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Resource plans (prepaid capacity offset against pay-as-you-go usage)
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Renew a subscription file system by MONTHS (1-9, 12, 24, 36)
    Renew {
        /// The file system id (cpfs-...)
        fs_id: String,
        #[arg(long)]
        months: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Print the price book in force (TOML)
    PriceBook {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Buy a plan of SIZE GiB for MONTHS months for an account (charged as an order)
    Add {
        /// Account id or name
        #[arg(long)]
        account: String,
        #[arg(long)]
        size_gib: i64,
        #[arg(long)]
        months: i64,
        /// Start (unix seconds or yyyy-MM-ddTHH:mm:ssZ); default: now
        #[arg(long)]
        start: Option<String>,
        #[arg(long, default_value = "")]
        remark: String,
        #[command(flatten)]
        common: Common,
    },
    /// List plans (JSON)
    List {
        /// Account id or name; default: every account
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    Json,
    Csv,
}

pub async fn run(cmd: BillingCommand) -> anyhow::Result<()> {
    match cmd {
        BillingCommand::Meter { through, common } => {
            let api = AdminClient::from_args(common)?;
            let report = api
                .post(&["billing", "meter"], json!({ "Through": through }))
                .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BillingCommand::Report {
            month,
            format,
            output,
            common,
        } => {
            let api = AdminClient::from_args(common)?;
            let text = match format {
                ReportFormat::Json => {
                    let v = api.get(&["billing", "statements", &month], &[]).await?;
                    serde_json::to_string_pretty(&v)? + "\n"
                }
                ReportFormat::Csv => {
                    api.get_text(&["billing", "statements", &month], &[("format", "csv")])
                        .await?
                }
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        BillingCommand::Plan {
            command:
                PlanCommand::Add {
                    account,
                    size_gib,
                    months,
                    start,
                    remark,
                    common,
                },
        } => {
            let api = AdminClient::from_args(common)?;
            let plan = api
                .post(
                    &["billing", "plans"],
                    json!({
                        "Account": account,
                        "SizeGiB": size_gib,
                        "Months": months,
                        "Start": start,
                        "Remark": remark,
                    }),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        BillingCommand::Plan {
            command: PlanCommand::List { account, common },
        } => {
            let api = AdminClient::from_args(common)?;
            let query: Vec<(&str, &str)> =
                account.iter().map(|a| ("account", a.as_str())).collect();
            let plans = api.get(&["billing", "plans"], &query).await?;
            println!("{}", serde_json::to_string_pretty(&plans)?);
        }
        BillingCommand::Renew {
            fs_id,
            months,
            common,
        } => {
            let api = AdminClient::from_args(common)?;
            let r = api
                .post(
                    &["billing", "renewals"],
                    json!({"FileSystemId": fs_id, "Months": months}),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        BillingCommand::PriceBook { common } => {
            let api = AdminClient::from_args(common)?;
            print!("{}", api.get_text(&["billing", "price-book"], &[]).await?);
        }
    }
    Ok(())
}
