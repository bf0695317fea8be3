//! What the metadata service needs to know from the control plane to
//! decide a mount's grant, asked through a trait so that this crate never
//! reads the control plane's tables or links its crate: the binary hands
//! the control plane in as the [`PolicySource`].

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub use cpfs_directory::LdapConfig;
pub use ipnet::IpNet;

/// How identities of one rule are squashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Squash {
    None,
    Root,
    All,
}

impl Squash {
    /// From the API's `UserAccessType` (`no_squash`, `root_squash`,
    /// `all_squash`).
    pub fn parse(s: &str) -> Squash {
        match s {
            "root_squash" => Squash::Root,
            "all_squash" => Squash::All,
            _ => Squash::None,
        }
    }
}

/// One access rule, as the metadata service applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    pub writable: bool,
    pub squash: Squash,
    /// Admits clients whose connection comes from an unprivileged source
    /// port too (NFS's `insecure`). Without it only ports below
    /// [`PRIVILEGED_PORTS`] are: on an admitted host only root can open
    /// one, so a local user cannot claim another's uid.
    pub insecure_ports: bool,
}

/// Source ports below this are privileged: only root may bind them.
pub const PRIVILEGED_PORTS: u16 = 1024;

impl Rule {
    pub fn admits(&self, addr: IpAddr) -> bool {
        let net = if addr.is_ipv4() { self.ipv4 } else { self.ipv6 };
        net.is_some_and(|n| n.contains(&addr))
    }
}

/// Parses `a.b.c.d/n`, a bare address (a host route) or an IPv6 equivalent.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Everything that decides what clients of one mount target may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPolicy {
    pub fs: String,
    pub mount_target_status: String,
    pub fs_status: String,
    pub capacity_bytes: u64,
    pub access_group: String,
    /// The group's rules, highest priority first (the control plane gives
    /// the default group one rule per network the operator lets it admit);
    /// `None` admits every address and source port read-write without
    /// squashing (tests' fixed tables).
    pub rules: Option<Vec<Rule>>,
    pub ldap: Option<LdapConfig>,
    /// Client addresses fenced off the file system (AddClientToBlackList):
    /// refused whatever the rules say.
    pub fenced: Vec<IpAddr>,
}

pub type PolicyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<MountPolicy>, String>> + Send + 'a>>;

/// A fileset as the control plane wants it: the metadata service binds
/// the directory at `path` (making it when missing), counts its usage and
/// enforces the limits; a released one it unbinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesetSpec {
    pub fs: String,
    pub id: String,
    /// Absolute, `/` at both ends (`/data/a/`).
    pub path: String,
    /// Being deleted: stop tracking it.
    pub releasing: bool,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

/// A user or group quota as the control plane wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuotaSpec {
    pub fs: String,
    /// A gid when true, a uid otherwise.
    pub group: bool,
    pub id: u32,
    pub size_limit: Option<u64>,
    pub file_limit: Option<u64>,
}

pub type UserQuotaFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<UserQuotaSpec>, String>> + Send + 'a>>;

/// A CPFS access point: the subtree mounts through it are confined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPointSpec {
    pub fs: String,
    /// Absolute (`/data/team-a/`).
    pub root_path: String,
    /// Mountable (status Active).
    pub active: bool,
}

pub type AccessPointFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<AccessPointSpec>, String>> + Send + 'a>>;

pub type FilesetFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<FilesetSpec>, String>> + Send + 'a>>;

/// Where mount policies come from (the control plane in `cpfs serve`, a
/// fixed table in tests).
pub trait PolicySource: Send + Sync {
    /// The policy of the mount target named `domain`; `Ok(None)` when there
    /// is no such mount target, `Err` when the source could not answer.
    fn mount_policy<'a>(&'a self, domain: &'a str) -> PolicyFuture<'a>;

    /// The filesets of the file systems `fs` (none unless the source has
    /// them).
    fn filesets<'a>(&'a self, fs: &'a [String]) -> FilesetFuture<'a> {
        let _ = fs;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The access point `id`, if it exists.
    fn access_point<'a>(&'a self, id: &'a str) -> AccessPointFuture<'a> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// The user and group quotas of the file systems `fs`.
    fn user_quotas<'a>(&'a self, fs: &'a [String]) -> UserQuotaFuture<'a> {
        let _ = fs;
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(net: &str) -> Rule {
        Rule {
            ipv4: parse_net(net),
            ipv6: None,
            writable: true,
            squash: Squash::None,
            insecure_ports: false,
        }
    }

    #[test]
    fn rules_admit_the_addresses_of_their_networks() {
        let a: IpAddr = "192.168.1.7".parse().unwrap();
        assert!(v4("192.168.1.0/24").admits(a));
        assert!(!v4("192.168.2.0/24").admits(a));
        assert!(v4("0.0.0.0/0").admits(a));
        assert!(
            v4("192.168.1.7").admits(a),
            "a bare address is a host route"
        );
        assert!(!v4("192.168.1.8").admits(a));
        let v6 = Rule {
            ipv4: None,
            ipv6: parse_net("fd00::/8"),
            writable: true,
            squash: Squash::None,
            insecure_ports: false,
        };
        assert!(v6.admits("fd12::1".parse().unwrap()));
        assert!(!v6.admits(a), "an IPv4 client never matches an IPv6 rule");
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("nonsense").is_none());
        assert!(parse_net("").is_none(), "an empty CIDR is no network");
    }
}
