//! `cpfs billing ...`: operator commands over the same store as `serve`
//! (they may run while the server runs; everything billing writes is
//! idempotent).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::config::{BillingArgs, Settings, StoreArgs};

#[derive(Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub billing: BillingArgs,
}

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

async fn open(common: Common) -> anyhow::Result<(Settings, cpfs_billing::Billing)> {
    let settings = Settings::load_billing(common.store, common.billing)?;
    let cp = crate::serve::open_control_plane_for_operator(&settings).await?;
    let billing = crate::serve::billing(&cp, &settings)?;
    Ok((settings, billing))
}

fn plan_json(p: &cpfs_billing::plans::Plan, now: i64) -> serde_json::Value {
    use cpfs_controlplane::clock::format_utc;
    serde_json::json!({
        "PlanId": p.id,
        "AccountId": p.account_id,
        "SizeGiB": p.size_gib,
        "Months": p.months,
        "TotalGiBHours": cpfs_billing::plans::gib_hours(p.total_gib_seconds),
        "RemainingGiBHours": cpfs_billing::plans::gib_hours(p.remaining_gib_seconds),
        "EffectiveTime": format_utc(p.effective_at),
        "ExpiryTime": format_utc(p.expires_at),
        "Status": p.status(now),
        "Remark": p.remark,
    })
}

pub async fn run(cmd: BillingCommand) -> anyhow::Result<()> {
    match cmd {
        BillingCommand::Meter { through, common } => {
            let (_, billing) = open(common).await?;
            let now = billing.cp.now();
            let through = match through {
                Some(t) => cpfs_billing::times::parse_time("through", &t)?,
                None => now,
            };
            if through > now {
                anyhow::bail!(
                    "--through {} is in the future (now is {}); only time that has passed is billed",
                    cpfs_controlplane::clock::format_utc(through),
                    cpfs_controlplane::clock::format_utc(now)
                );
            }
            let report = billing.pass(through).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BillingCommand::Report {
            month,
            format,
            output,
            common,
        } => {
            let (_, billing) = open(common).await?;
            let st = cpfs_billing::report::statement(&billing.cp, &month, &billing.book.currency)
                .await?;
            let text = match format {
                ReportFormat::Json => serde_json::to_string_pretty(&st.to_json())? + "\n",
                ReportFormat::Csv => st.to_csv(),
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
            let (_, billing) = open(common).await?;
            let start = start
                .map(|s| cpfs_billing::times::parse_time("start", &s))
                .transpose()?;
            let plan = billing
                .add_plan(&account, size_gib, months, start, &remark)
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&plan_json(&plan, billing.cp.now()))?
            );
        }
        BillingCommand::Plan {
            command: PlanCommand::List { account, common },
        } => {
            let (_, billing) = open(common).await?;
            let account_id = match account {
                Some(a) => Some(
                    cpfs_billing::plans::resolve_account(&billing.cp, &a)
                        .await?
                        .with_context(|| format!("no account with id or name {a}"))?,
                ),
                None => None,
            };
            let now = billing.cp.now();
            let plans: Vec<serde_json::Value> = billing
                .plans(account_id.as_deref())
                .await?
                .iter()
                .map(|p| plan_json(p, now))
                .collect();
            println!("{}", serde_json::to_string_pretty(&plans)?);
        }
        BillingCommand::Renew {
            fs_id,
            months,
            common,
        } => {
            let (_, billing) = open(common).await?;
            let owner = billing.cp.file_system_owner(&fs_id).await?;
            let r = billing
                .cp
                .renew_file_system(&owner, &fs_id, months, None)
                .await?;
            // Charge the renewal now rather than on the server's next pass.
            billing.charge_orders(billing.cp.now()).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "FileSystemId": r.fs_id,
                    "OrderId": r.order_id(),
                    "ExpiredTime": cpfs_controlplane::clock::format_utc(r.expired_at),
                    "Resumed": r.resumed,
                }))?
            );
        }
        BillingCommand::PriceBook { common } => {
            let (_, billing) = open(common).await?;
            print!("{}", billing.book.source);
        }
    }
    Ok(())
}
