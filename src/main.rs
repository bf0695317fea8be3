//! `cpfs`: one executable for every role. The member crates hold the logic;
//! this file only parses the command line and wires them together.

mod admin_client;
mod allocator;
mod billing_cmd;
mod client_cmd;
mod config;
mod fileset_cmd;
mod meta_cmd;
mod mount_cmd;
mod mount_helper;
mod node_admin;
mod node_cmd;
mod private;
mod quota_cmd;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cpfs",
    version,
    about = "CPFS: a parallel file system with an Alibaba Cloud NAS/CPFS compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API gateway, control plane and reconciler (SQLite in ./cpfs-data by default)
    Serve(Box<config::ServeArgs>),
    /// Manage accounts and their access keys
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Run a data node (`cpfs node --data-dir DIR ...`), or manage them (`cpfs node list|status|drain`)
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        command: Option<node_admin::NodeCommand>,
        #[command(flatten)]
        run: node_cmd::NodeArgs,
    },
    /// Run a metadata server (`cpfs meta --data-dir DIR --database-url URL ...`), or list them (`cpfs meta list`)
    #[command(args_conflicts_with_subcommands = true)]
    Meta {
        #[command(subcommand)]
        command: Option<meta_cmd::MetaCommand>,
        #[command(flatten)]
        run: meta_cmd::MetaArgs,
    },
    /// Mount a file system through FUSE: cpfs mount MOUNT_TARGET_DOMAIN DIR
    Mount(mount_cmd::MountArgs),
    /// Read or set the striping of a file or directory on a mount
    Stripe {
        #[command(subcommand)]
        command: mount_cmd::StripeCommand,
    },
    /// Filesets of a file system and their quotas: list, create, quota, delete
    Fileset {
        #[command(subcommand)]
        command: fileset_cmd::FilesetCommand,
    },
    /// Mounted and fenced clients of a file system: list, fence, unfence
    Client {
        #[command(subcommand)]
        command: client_cmd::ClientCommand,
    },
    /// User and group quotas of a file system (an extension): list, set, cancel
    Quota {
        #[command(subcommand)]
        command: quota_cmd::QuotaCommand,
    },
    /// Billing: meter and backfill, statements, resource plans, renewals, the price book
    Billing {
        #[command(subcommand)]
        command: billing_cmd::BillingCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account with one access key and print it as JSON
    Create {
        /// Account name (letters, digits, '-', '_', '.')
        name: String,
        #[command(flatten)]
        server: admin_client::AdminArgs,
    },
}

fn init_logging() {
    let mut spec = std::env::var("CPFS_LOG").unwrap_or_else(|_| "info,sqlx=warn".into());
    // At debug, tokio-postgres logs the values of every statement the
    // metadata journal runs (file names, extended attributes): only when
    // it is asked for by name.
    if !spec.contains("tokio_postgres") {
        spec.push_str(",tokio_postgres=info");
    }
    let filter = tracing_subscriber::EnvFilter::new(spec);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allocator::keep_freed_memory();
    if mount_helper::called_as_helper() {
        init_logging();
        return mount_helper::run().await;
    }
    let cli = Cli::parse();
    init_logging();
    if matches!(
        cli.command,
        Command::Serve(_)
            | Command::Node { command: None, .. }
            | Command::Meta { command: None, .. }
    ) {
        // Services keep tenants' data and secrets: nothing they create is
        // for other local users.
        private::restrict_umask();
    }
    match cli.command {
        Command::Serve(args) => {
            let settings = config::Settings::load(*args)?;
            serve::run(settings).await
        }
        Command::Account {
            command: AccountCommand::Create { name, server },
        } => {
            let api = admin_client::AdminClient::from_args(server)?;
            let account = api
                .post(&["accounts"], serde_json::json!({ "Name": name }))
                .await?;
            println!("{}", serde_json::to_string_pretty(&account)?);
            Ok(())
        }
        Command::Node { command: None, run } => node_cmd::run(run).await,
        Command::Meta { command: None, run } => meta_cmd::run(run).await,
        Command::Meta {
            command: Some(command),
            ..
        } => meta_cmd::list(command).await,
        Command::Mount(args) => mount_cmd::mount(args).await,
        Command::Stripe { command } => mount_cmd::stripe(command),
        Command::Billing { command } => billing_cmd::run(command).await,
        Command::Fileset { command } => fileset_cmd::run(command).await,
        Command::Quota { command } => quota_cmd::run(command).await,
        Command::Client { command } => client_cmd::run(command).await,
        Command::Node {
            command: Some(command),
            ..
        } => node_admin::run(command).await,
    }
}

/// `./cpfs-data` unless told otherwise.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("cpfs-data")
}
