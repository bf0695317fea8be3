//! The control plane: desired state of every account's resources, the node
//! registry with placement, and the reconciler that drives file systems and
//! mount targets towards their desired state.
//!
//! API handlers call the typed operations here; they never touch SQL.

pub mod access_groups;
pub mod access_points;
pub mod accounts;
pub mod capacity;
pub mod clients;
pub mod clock;
pub mod error;
pub mod events;
pub mod filesets;
pub mod filesystems;
pub mod fs_view;
pub mod idempotency;
pub mod ids;
pub mod ldap;
pub mod meta_servers;
pub mod mount_policy;
pub mod mount_targets;
pub mod namespaces;
pub mod nodes;
pub mod qos;
pub mod reachability;
pub mod reconciler;
pub mod revocations;
pub mod secrets;
pub mod statistics;
pub mod subscriptions;
pub mod tags;
pub mod telemetry;
pub mod tiers;
pub mod user_quotas;

pub use clock::{Clock, FileClock, ManualClock, SystemClock};
pub use cpfs_store::Store;
pub use error::{Error, Result};

/// Everything an API call needs: the store, the clock and the operator's
/// regional configuration.
#[derive(Clone)]
pub struct ControlPlane {
    pub store: Store,
    pub clock: std::sync::Arc<dyn Clock>,
    pub region: RegionConfig,
    /// Wakes the reconciler when desired state changes, so a new file system
    /// does not wait for the next periodic pass.
    pub changed: std::sync::Arc<tokio::sync::Notify>,
    pub policy: nodes::PlacementPolicy,
    /// The operator's password for the `BindDN` of LDAP configurations,
    /// sent only to the LDAP servers the operator lists.
    pub ldap_bind_password: Option<std::sync::Arc<str>>,
    /// Seals access-key secrets and tenant bind passwords at rest.
    pub secrets: std::sync::Arc<secrets::SecretBox>,
    /// Bumped whenever this process adds an access key, so that caches of
    /// which keys exist (the gateway's) never refuse a key just created.
    pub keys_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When this process started (failure detection waits one timeout
    /// after a start before declaring anyone dead).
    pub started: std::time::Instant,
    /// The networks the default access group admits (CIDRs, operator
    /// setting; loopback unless configured).
    pub default_networks: Vec<String>,
    /// Serialises chain-table planning steps of this process.
    pub planner: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The background loops of this process and when each last finished a
    /// pass (`/healthz`).
    pub liveness: std::sync::Arc<cpfs_runtime::Liveness>,
    /// Fingerprints of grants, for capability revocations.
    pub revocations: std::sync::Arc<revocations::Revocations>,
    /// The read model DescribeFileSystems answers from.
    pub fs_views: std::sync::Arc<fs_view::FsViews>,
    /// How many filesets a file system may have and the smallest quotas.
    pub fileset_limits: filesets::FilesetLimits,
    /// The newest counters nodes and metadata servers reported (`/metrics`).
    pub telemetry: std::sync::Arc<telemetry::Telemetry>,
    /// The per-node shares of each file system's tier limits.
    pub qos: std::sync::Arc<qos::QosPlanner>,
}

/// The region this deployment serves and its zones (operator configuration).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RegionConfig {
    pub region_id: String,
    pub local_name: String,
    pub zones: Vec<String>,
    /// Domain suffix for mount-target names:
    /// `<fsid>-<6 chars>.<region>.cpfs.nas.<domain>`.
    pub mount_domain: String,
    /// The host name clients use to reach the gateway (shown by DescribeRegions).
    pub endpoint: String,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            region_id: "cn-hangzhou".into(),
            local_name: "China (Hangzhou)".into(),
            zones: vec!["cn-hangzhou-b".into(), "cn-hangzhou-g".into()],
            mount_domain: "localhost".into(),
            endpoint: "127.0.0.1:8080".into(),
        }
    }
}

impl ControlPlane {
    pub fn new(store: Store, clock: std::sync::Arc<dyn Clock>, region: RegionConfig) -> Self {
        ControlPlane {
            store,
            clock,
            region,
            changed: std::sync::Arc::new(tokio::sync::Notify::new()),
            policy: nodes::PlacementPolicy::default(),
            ldap_bind_password: None,
            // Binaries load the deployment's key (`with_secrets`); a key of
            // this process alone suits tests and fresh stores only.
            secrets: std::sync::Arc::new(secrets::SecretBox::ephemeral()),
            keys_generation: Default::default(),
            started: std::time::Instant::now(),
            default_networks: access_groups::DEFAULT_NETWORKS
                .iter()
                .map(|n| n.to_string())
                .collect(),
            planner: Default::default(),
            liveness: Default::default(),
            revocations: Default::default(),
            fs_views: Default::default(),
            fileset_limits: Default::default(),
            telemetry: Default::default(),
            qos: Default::default(),
        }
    }

    pub fn with_policy(mut self, policy: nodes::PlacementPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The networks the default access group admits (CIDRs).
    pub fn with_default_networks(mut self, networks: Vec<String>) -> Self {
        self.default_networks = networks;
        self
    }

    pub fn with_fileset_limits(mut self, limits: filesets::FilesetLimits) -> Self {
        self.fileset_limits = limits;
        self
    }

    pub fn with_ldap_bind_password(mut self, password: Option<String>) -> Self {
        self.ldap_bind_password = password.map(std::sync::Arc::from);
        self
    }

    pub fn with_secrets(mut self, secrets: secrets::SecretBox) -> Self {
        self.secrets = std::sync::Arc::new(secrets);
        self
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// Tell the reconciler that desired state changed.
    pub fn poke(&self) {
        self.changed.notify_one();
    }
}
