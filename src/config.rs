//! Settings: a TOML file (`--config`), overridden by `CPFS_*` environment
//! variables, overridden by flags. Every setting has a default, so
//! `cpfs serve` with nothing else runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct StoreArgs {
    /// Directory for the SQLite database, keys and node data
    #[arg(long, env = "CPFS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://... to keep state in PostgreSQL instead of SQLite
    #[arg(long, env = "CPFS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// TOML file with any of the settings (flags and CPFS_* override it)
    #[arg(long, env = "CPFS_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the key that seals secrets in the store (default
    /// DATA_DIR/secret-key, generated on first start; with PostgreSQL every
    /// cpfs serve and cpfs meta of the deployment needs the same key)
    #[arg(long, env = "CPFS_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// HTTP address of the API
    #[arg(long, env = "CPFS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTPS address of the API (needs --tls-cert and --tls-key)
    #[arg(long, env = "CPFS_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS
    #[arg(long, env = "CPFS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS
    #[arg(long, env = "CPFS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Region served (DescribeRegions)
    #[arg(long, env = "CPFS_REGION")]
    pub region: Option<String>,
    /// Zones of the region, comma-separated (DescribeZones)
    #[arg(long, env = "CPFS_ZONES", value_delimiter = ',')]
    pub zones: Option<Vec<String>>,
    /// Data nodes registered by this process (0 when nodes run elsewhere)
    #[arg(long, env = "CPFS_NODES")]
    pub nodes: Option<usize>,
    /// Copies of every chunk
    #[arg(long, env = "CPFS_REPLICAS")]
    pub replicas: Option<usize>,
    /// Seconds without a heartbeat before a data node is declared dead and
    /// replaced in its chains (default 3)
    #[arg(long, env = "CPFS_FAILURE_TIMEOUT")]
    pub failure_timeout: Option<f64>,
    /// Sustained API requests per second per access key
    #[arg(long, env = "CPFS_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Address of the metadata service (port 0: any free port; clients find it through the API)
    #[arg(long, env = "CPFS_META_LISTEN")]
    pub meta_listen: Option<SocketAddr>,
    /// Seconds an identity resolved from LDAP is reused (and survives an LDAP outage)
    #[arg(long, env = "CPFS_LDAP_CACHE_TTL")]
    pub ldap_cache_ttl: Option<u64>,
    /// Password for the BindDN of LDAP configurations, sent only to the
    /// --ldap-allowed-servers (prefer the environment variable)
    #[arg(long, env = "CPFS_LDAP_BIND_PASSWORD", hide_env_values = true)]
    pub ldap_bind_password: Option<String>,
    /// LDAP servers (host or host:port, comma-separated) the operator
    /// vouches for: they get the operator's bind password and may be at
    /// any address, loopback included
    #[arg(long, env = "CPFS_LDAP_ALLOWED_SERVERS", value_delimiter = ',')]
    pub ldap_allowed_servers: Option<Vec<String>>,
    /// Networks (CIDRs, comma-separated) whose hosts the default access
    /// group lets mount, read-write [default: 127.0.0.0/8,::1/128]
    #[arg(long, env = "CPFS_DEFAULT_ACCESS_NETWORKS", value_delimiter = ',')]
    pub default_access_networks: Option<Vec<String>>,
    /// Seconds a data-node capability lasts (clients renew theirs while files stay open)
    #[arg(long, env = "CPFS_CAPABILITY_SECS")]
    pub capability_secs: Option<u64>,
    /// Seconds a metadata session lives unused before it ends and its open files are let go (mounts keep theirs alive)
    #[arg(long, env = "CPFS_SESSION_LEASE_SECS")]
    pub session_lease_secs: Option<u64>,
    /// Filesets one file system may have [default: 10, as CPFS
    /// general-purpose; CPFS for Lingjun allows 500]
    #[arg(long, env = "CPFS_FILESETS_PER_FILE_SYSTEM")]
    pub filesets_per_file_system: Option<u32>,
    /// Smallest fileset SizeLimit in bytes [default: 10 GiB, in 1 GiB steps;
    /// a smaller minimum is also the step]
    #[arg(long, env = "CPFS_FILESET_MIN_SIZE_LIMIT")]
    pub fileset_min_size_limit: Option<u64>,
    /// Smallest fileset FileCountLimit [default: 10000]
    #[arg(long, env = "CPFS_FILESET_MIN_FILE_COUNT_LIMIT")]
    pub fileset_min_file_count_limit: Option<u64>,
    #[command(flatten)]
    pub billing: BillingArgs,
}

/// Billing settings, shared by `serve` and `cpfs billing ...`.
#[derive(Args, Debug, Default, Clone)]
pub struct BillingArgs {
    /// TOML price book replacing the built-in one (`cpfs billing price-book` prints it)
    #[arg(long, env = "CPFS_PRICE_BOOK")]
    pub price_book: Option<PathBuf>,
    /// Days an expired subscription stays stopped before it is released (default 15)
    #[arg(long, env = "CPFS_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Seconds between billing passes of `cpfs serve` (default 60)
    #[arg(long, env = "CPFS_BILLING_INTERVAL")]
    pub billing_interval: Option<u64>,
    /// Test and rehearsal only: read the time from this file (unix seconds
    /// or yyyy-MM-ddTHH:mm:ssZ) instead of the system clock
    #[arg(long, env = "CPFS_CLOCK_FILE")]
    pub clock_file: Option<PathBuf>,
}

/// The TOML file: the same names as the flags, with underscores.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    https_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    region: Option<String>,
    zones: Option<Vec<String>>,
    mount_domain: Option<String>,
    nodes: Option<usize>,
    replicas: Option<usize>,
    failure_timeout: Option<f64>,
    rate_limit: Option<u32>,
    meta_listen: Option<SocketAddr>,
    ldap_cache_ttl: Option<u64>,
    ldap_bind_password: Option<String>,
    ldap_allowed_servers: Option<Vec<String>>,
    default_access_networks: Option<Vec<String>>,
    secret_key_file: Option<PathBuf>,
    capability_secs: Option<u64>,
    session_lease_secs: Option<u64>,
    filesets_per_file_system: Option<u32>,
    fileset_min_size_limit: Option<u64>,
    fileset_min_file_count_limit: Option<u64>,
    price_book: Option<PathBuf>,
    retention_days: Option<u32>,
    billing_interval: Option<u64>,
    clock_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub listen: SocketAddr,
    pub https_listen: Option<SocketAddr>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub region: String,
    pub zones: Vec<String>,
    pub mount_domain: String,
    pub nodes: usize,
    pub replicas: usize,
    pub failure_timeout: std::time::Duration,
    pub rate_limit: u32,
    pub meta_listen: SocketAddr,
    /// None: the built-in price book.
    pub price_book: Option<PathBuf>,
    pub retention_secs: i64,
    pub billing_interval_secs: u64,
    /// None: the system clock.
    pub clock_file: Option<PathBuf>,
    pub ldap_cache_ttl: std::time::Duration,
    pub ldap_bind_password: Option<String>,
    pub ldap_allowed_servers: Vec<cpfs_directory::AllowedServer>,
    pub default_access_networks: Vec<String>,
    pub secret_key_file: PathBuf,
    pub capability_lifetime: std::time::Duration,
    pub session_lease: std::time::Duration,
    pub fileset_limits: cpfs_controlplane::filesets::FilesetLimits,
}

/// Settings in logs: every field but the secret.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("https_listen", &self.https_listen)
            .field("region", &self.region)
            .field("nodes", &self.nodes)
            .field("replicas", &self.replicas)
            .field("failure_timeout", &self.failure_timeout)
            .field("meta_listen", &self.meta_listen)
            .field("ldap_cache_ttl", &self.ldap_cache_ttl)
            .field(
                "ldap_bind_password",
                &self.ldap_bind_password.as_ref().map(|_| "<set>"),
            )
            .field("ldap_allowed_servers", &self.ldap_allowed_servers)
            .field("default_access_networks", &self.default_access_networks)
            .field("secret_key_file", &self.secret_key_file)
            .finish_non_exhaustive()
    }
}

/// How long data-node capabilities last: `--capability-secs`, default
/// [`cpfs_meta::CAPABILITY_SECS`]. At most an hour: the lifetime bounds how
/// long a capability outlives a grant no revocation reached the nodes for.
pub fn capability_secs(secs: Option<u64>) -> anyhow::Result<std::time::Duration> {
    let secs = secs.unwrap_or(cpfs_meta::CAPABILITY_SECS as u64);
    if !(1..=3600).contains(&secs) {
        anyhow::bail!("--capability-secs must be between 1 and 3600 seconds");
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// How long a metadata session lives unused: `--session-lease-secs`,
/// default [`cpfs_meta::SESSION_LEASE`]. At least 15 s, so that a mount's
/// Watch (each returns within 10 s) keeps it; at most a day.
pub fn session_lease_secs(secs: Option<u64>) -> anyhow::Result<std::time::Duration> {
    let secs = secs.unwrap_or(cpfs_meta::SESSION_LEASE.as_secs());
    if !(15..=86_400).contains(&secs) {
        anyhow::bail!("--session-lease-secs must be between 15 and 86400 seconds");
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// The operator's fileset limits, each checked against what the service
/// can honour.
fn fileset_limits(
    per_file_system: Option<u32>,
    min_size: Option<u64>,
    min_files: Option<u64>,
) -> anyhow::Result<cpfs_controlplane::filesets::FilesetLimits> {
    use cpfs_controlplane::filesets::{FilesetLimits, MAX_FILE_LIMIT};
    let d = FilesetLimits::default();
    let limits = FilesetLimits {
        per_file_system: per_file_system.unwrap_or(d.per_file_system),
        min_size_limit: min_size.unwrap_or(d.min_size_limit),
        min_file_limit: min_files.unwrap_or(d.min_file_limit),
    };
    if !(1..=10_000).contains(&limits.per_file_system) {
        anyhow::bail!("--filesets-per-file-system must be between 1 and 10000");
    }
    if limits.min_size_limit == 0 || limits.min_size_limit > i64::MAX as u64 {
        anyhow::bail!("--fileset-min-size-limit must be at least 1 byte");
    }
    if !(1..=MAX_FILE_LIMIT).contains(&limits.min_file_limit) {
        anyhow::bail!("--fileset-min-file-count-limit must be between 1 and {MAX_FILE_LIMIT}");
    }
    Ok(limits)
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    match path {
        None => Ok(FileSettings::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config file {}", p.display()))
        }
    }
}

impl Settings {
    pub fn load(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = read_file(args.store.config.as_deref())?;
        let data_dir = args
            .store
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(crate::default_data_dir);
        let database_url = args
            .store
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| sqlite_url(&data_dir));
        let https_listen = args.https_listen.or(file.https_listen);
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let failure_timeout = args.failure_timeout.or(file.failure_timeout).unwrap_or(3.0);
        if !(1.0..=600.0).contains(&failure_timeout) {
            anyhow::bail!("--failure-timeout must be between 1 and 600 seconds");
        }
        let failure_timeout = std::time::Duration::from_secs_f64(failure_timeout);
        let replicas = args.replicas.or(file.replicas).unwrap_or(2);
        if replicas == 0 || replicas > 5 {
            anyhow::bail!("--replicas must be between 1 and 5");
        }
        let zones = args
            .zones
            .or(file.zones)
            .unwrap_or_else(|| vec!["cn-hangzhou-b".into(), "cn-hangzhou-g".into()]);
        if zones.is_empty() || zones.iter().any(|z| z.is_empty()) {
            anyhow::bail!("--zones needs at least one zone name");
        }
        let ldap_cache_ttl = args.ldap_cache_ttl.or(file.ldap_cache_ttl).unwrap_or(60);
        if !(1..=86_400).contains(&ldap_cache_ttl) {
            anyhow::bail!("--ldap-cache-ttl must be between 1 and 86400 seconds");
        }
        let capability_secs = capability_secs(args.capability_secs.or(file.capability_secs))?;
        let session_lease =
            session_lease_secs(args.session_lease_secs.or(file.session_lease_secs))?;
        let retention_days = args
            .billing
            .retention_days
            .or(file.retention_days)
            .unwrap_or(15);
        let billing_interval_secs = args
            .billing
            .billing_interval
            .or(file.billing_interval)
            .unwrap_or(60);
        if billing_interval_secs == 0 {
            anyhow::bail!("--billing-interval must be at least 1 second");
        }
        let ldap_allowed_servers = allowed_servers(
            args.ldap_allowed_servers
                .or(file.ldap_allowed_servers)
                .unwrap_or_default(),
        )?;
        let default_access_networks = access_networks(
            args.default_access_networks
                .or(file.default_access_networks)
                .unwrap_or_else(|| {
                    cpfs_controlplane::access_groups::DEFAULT_NETWORKS
                        .iter()
                        .map(|n| n.to_string())
                        .collect()
                }),
        )?;
        let fileset_limits = fileset_limits(
            args.filesets_per_file_system
                .or(file.filesets_per_file_system),
            args.fileset_min_size_limit.or(file.fileset_min_size_limit),
            args.fileset_min_file_count_limit
                .or(file.fileset_min_file_count_limit),
        )?;
        let secret_key_file = args
            .store
            .secret_key_file
            .or(file.secret_key_file)
            .unwrap_or_else(|| data_dir.join("secret-key"));
        Ok(Settings {
            ldap_allowed_servers,
            default_access_networks,
            secret_key_file,
            ldap_cache_ttl: std::time::Duration::from_secs(ldap_cache_ttl),
            ldap_bind_password: args.ldap_bind_password.or(file.ldap_bind_password),
            capability_lifetime: capability_secs,
            session_lease,
            fileset_limits,
            price_book: args.billing.price_book.or(file.price_book),
            retention_secs: i64::from(retention_days) * 86_400,
            billing_interval_secs,
            clock_file: args.billing.clock_file.or(file.clock_file),
            data_dir,
            database_url,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            https_listen: match (&tls, https_listen) {
                (Some(_), None) => Some(SocketAddr::from(([127, 0, 0, 1], 8443))),
                (None, Some(_)) => anyhow::bail!("--https-listen needs --tls-cert and --tls-key"),
                (_, h) => h,
            },
            tls,
            region: args
                .region
                .or(file.region)
                .unwrap_or_else(|| "cn-hangzhou".into()),
            zones,
            mount_domain: file.mount_domain.unwrap_or_else(|| "localhost".into()),
            nodes: args.nodes.or(file.nodes).unwrap_or(3),
            replicas,
            failure_timeout,
            rate_limit: args.rate_limit.or(file.rate_limit).unwrap_or(2_000),
            meta_listen: args
                .meta_listen
                .or(file.meta_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        })
    }

    /// Only what is needed to open the store (for `cpfs account ...`).
    pub fn load_store(store: StoreArgs) -> anyhow::Result<Settings> {
        Settings::load(ServeArgs {
            store,
            ..ServeArgs::default()
        })
    }
}

/// Checks the operator's `default_access_networks`: each a CIDR, as an
/// access rule's `SourceCidrIp` (or `Ipv6SourceCidrIp`) would be.
pub fn access_networks(entries: Vec<String>) -> anyhow::Result<Vec<String>> {
    let nets: Vec<String> = entries
        .into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    for net in &nets {
        if cpfs_meta::policy::parse_net(net).is_none() {
            anyhow::bail!("--default-access-networks: {net:?} is not a CIDR such as 10.0.0.0/8");
        }
    }
    Ok(nets)
}

/// Parses the operator's `ldap_allowed_servers` (empty entries ignored).
pub fn allowed_servers(entries: Vec<String>) -> anyhow::Result<Vec<cpfs_directory::AllowedServer>> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.parse()
                .map_err(|m| anyhow::anyhow!("--ldap-allowed-servers: {m}"))
        })
        .collect()
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("cpfs.db").display())
}
