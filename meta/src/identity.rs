//! Who a caller may act as. The client reports the local identity of the
//! process behind each request; this module decides what it becomes:
//!
//! 1. the mount target's access group must have a rule matching the
//!    client's address (highest priority first); the rule says read-write
//!    or read-only, and how identities are squashed;
//! 2. without an LDAP configuration only root may use the file system;
//! 3. with one, the uid must be a `posixAccount` under the search base, and
//!    its groups are the directory's, not the client's.
//!
//! Both decisions are cached briefly, so a change of rules or of the LDAP
//! configuration reaches mounted clients within [`GRANT_REFRESH`], and a
//! directory outage is ridden out for the identities already resolved.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpfs_directory::{self as ldap, LdapConfig};
use cpfs_proto::meta::{errno, Caller};

pub use crate::policy::Squash;
use crate::policy::{MountPolicy, Rule};
use crate::{fail, MetaService, Res, Session};

/// How long a grant (access rule + LDAP configuration) is reused.
pub const GRANT_REFRESH: Duration = Duration::from_secs(2);
/// The longest an access decision waits for the store.
const GRANT_LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long "no such uid in the directory" is believed.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// After a failed lookup, how long the directory is treated as down before
/// it is tried again (so an outage fails fast instead of stalling each call).
const DOWN_RETRY: Duration = Duration::from_secs(2);
/// The anonymous identity squashed callers become (NFS's nobody/nogroup).
pub const NOBODY: u32 = 65534;

/// What a client at one address may do through one mount target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub fs: String,
    /// The file system's Capacity in bytes (a mount enforces it).
    pub capacity_bytes: u64,
    pub writable: bool,
    pub squash: Squash,
    /// The rule wants a privileged source port (it has no `InsecurePorts`).
    pub privileged_only: bool,
    pub ldap: Option<LdapConfig>,
    /// When it was read from the control plane (unix ms): the issue time
    /// of the capabilities it backs, so a revocation after it refuses them.
    pub decided_ms: i64,
}

/// Operator settings for identity resolution.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// How long an identity resolved from LDAP is used without asking again
    /// (and how long it survives a directory outage).
    pub ldap_cache_ttl: Duration,
    /// Password for the configurations' BindDN (none: anonymous bind).
    pub ldap_bind_password: Option<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            ldap_cache_ttl: Duration::from_secs(60),
            ldap_bind_password: None,
        }
    }
}

pub(crate) struct Resolved {
    config: LdapConfig,
    identity: Option<ldap::Identity>,
    at: Instant,
}

#[cfg(test)]
impl Resolved {
    /// The directory's answer for an identity, as if just asked.
    pub(crate) fn known(config: LdapConfig, identity: ldap::Identity) -> Resolved {
        Resolved {
            config,
            identity: Some(identity),
            at: Instant::now(),
        }
    }
}

/// A decision (a grant, or a refusal of a key granted before) and when it
/// was made.
type CachedGrant = (Res<Arc<Grant>>, Instant);

#[derive(Default)]
pub(crate) struct AccessCache {
    grants: Mutex<HashMap<(String, IpAddr), CachedGrant>>,
    pub(crate) identities: Mutex<HashMap<(String, u32), Resolved>>,
    directory_down: Mutex<HashMap<LdapConfig, Instant>>,
    /// One directory lookup at a time: a burst of calls for a new uid makes
    /// one lookup, not one per call.
    lookup: tokio::sync::Mutex<()>,
    /// Hits and misses of the two caches (`/metrics`).
    pub(crate) stats: CacheStats,
}

#[derive(Default)]
pub(crate) struct CacheStats {
    pub(crate) grant_hits: std::sync::atomic::AtomicU64,
    pub(crate) grant_misses: std::sync::atomic::AtomicU64,
    pub(crate) identity_hits: std::sync::atomic::AtomicU64,
    pub(crate) identity_misses: std::sync::atomic::AtomicU64,
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Grants cached at most (one per mount target and client address in use).
const MAX_GRANTS: usize = 16_384;
/// Identities cached at most (one per file system and uid in use).
const MAX_IDENTITIES: usize = 65_536;

/// Inserts into a cache of at most `max` entries: when full, entries that
/// `stale` says are no longer useful go first, and if that frees nothing,
/// all of them (a cache only saves work; a full one must not grow).
fn insert_bounded<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    max: usize,
    stale: impl Fn(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, v| !stale(v));
        if map.len() >= max {
            map.clear();
        }
    }
    map.insert(key, value);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A client's address as rules and sessions know it: an IPv4 client on a
/// dual-stack socket shows up as ::ffff:a.b.c.d.
pub fn client_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The rule of `rules` (sorted by priority) that admits `addr`, if any.
fn matching_rule(rules: &[Rule], addr: IpAddr) -> Option<&Rule> {
    let addr = client_ip(addr);
    rules.iter().find(|r| r.admits(addr))
}

fn not_in_directory<T>(uid: u32, cfg: &LdapConfig) -> Res<T> {
    fail(
        errno::EACCES,
        format!("uid {uid} is not a posixAccount under {}", cfg.search_base),
    )
}

/// Applies squashing to the client's claimed identity.
pub fn squash(mode: Squash, c: Caller) -> Caller {
    let squashed = match mode {
        Squash::None => false,
        Squash::Root => c.uid == 0,
        Squash::All => true,
    };
    if squashed {
        Caller {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![],
        }
    } else {
        c
    }
}

impl MetaService {
    /// Decides the grant of `(domain, addr)` from the control plane's policy.
    async fn load_grant(&self, domain: &str, addr: IpAddr) -> Res<Grant> {
        // Stamped before the read: the decision reflects the store as of
        // this moment or later, which is what a revocation compares with.
        let decided_ms = cpfs_proto::capability::now_ms();
        let policy = self
            .policies
            .mount_policy(domain)
            .await
            .map_err(|e| (errno::EIO, e))?;
        let Some(MountPolicy {
            fs,
            mount_target_status,
            fs_status,
            capacity_bytes,
            access_group,
            rules,
            ldap,
            fenced,
        }) = policy
        else {
            return fail(errno::ENOENT, format!("no mount target {domain}"));
        };
        if fenced.contains(&addr) {
            return fail(
                errno::EACCES,
                format!("client {addr} is fenced off file system {fs} (AddClientToBlackList)"),
            );
        }
        if mount_target_status != "Active" {
            return fail(
                errno::EACCES,
                format!("mount target {domain} is {mount_target_status}, not Active"),
            );
        }
        if fs_status != "Running" && fs_status != "Extending" {
            return fail(errno::EACCES, format!("file system {fs} is {fs_status}"));
        }
        let (writable, squash, privileged_only) = match rules {
            None => (true, Squash::None, false),
            Some(rules) => {
                let Some(rule) = matching_rule(&rules, addr) else {
                    return fail(
                        errno::EACCES,
                        format!("no rule of access group {access_group} admits {addr}"),
                    );
                };
                (rule.writable, rule.squash, !rule.insecure_ports)
            }
        };
        Ok(Grant {
            fs,
            capacity_bytes,
            writable,
            squash,
            privileged_only,
            ldap,
            decided_ms,
        })
    }

    /// The grant for a client at `addr` on `domain`, cached for
    /// [`GRANT_REFRESH`].
    pub(crate) async fn grant(&self, domain: &str, addr: IpAddr) -> Res<Arc<Grant>> {
        let key = (domain.to_string(), addr);
        if let Some((g, at)) = lock(&self.access.grants).get(&key) {
            if at.elapsed() < GRANT_REFRESH {
                count(&self.access.stats.grant_hits);
                return g.clone();
            }
        }
        count(&self.access.stats.grant_misses);
        self.fresh_grant(domain, addr).await
    }

    /// Decides again from the store (a new mount never uses a cached grant)
    /// and caches the decision.
    pub(crate) async fn fresh_grant(&self, domain: &str, addr: IpAddr) -> Res<Arc<Grant>> {
        let key = (domain.to_string(), addr);
        // A store that does not answer (a partition: the connection hangs
        // until TCP gives up) counts as unreachable, so the previous
        // decision is used and the server can still answer "moved".
        let fresh =
            match tokio::time::timeout(GRANT_LOAD_TIMEOUT, self.load_grant(domain, addr)).await {
                Ok(r) => r.map(Arc::new),
                Err(_) => Err((errno::EIO, "the store did not answer".to_string())),
            };
        let fresh = match fresh {
            // The store was unreachable: keep serving the last decision
            // rather than failing every call of every client.
            Err((errno::EIO, ref why)) => {
                let cache = lock(&self.access.grants);
                match cache.get(&key) {
                    Some((g, _)) => {
                        tracing::warn!(domain, error = %why, "access check uses the previous grant");
                        return g.clone();
                    }
                    None => fresh,
                }
            }
            other => other,
        };
        let mut cache = lock(&self.access.grants);
        match &fresh {
            Ok(_) => insert_bounded(
                &mut cache,
                key,
                (fresh.clone(), Instant::now()),
                MAX_GRANTS,
                |(_, at)| at.elapsed() >= GRANT_REFRESH,
            ),
            // A refusal is remembered only for a key that was granted
            // before (a mounted client whose access changed): refusals of
            // whatever domains a client makes up must cost no memory.
            Err(_) => {
                if let Some(known) = cache.get_mut(&key) {
                    *known = (fresh.clone(), Instant::now());
                }
            }
        }
        drop(cache);
        fresh
    }

    /// When the grant a session's last request used was decided (unix ms).
    pub(crate) fn grant_decided_ms(&self, s: &Session) -> Option<i64> {
        let grants = lock(&self.access.grants);
        match grants.get(&(s.domain.clone(), s.peer)) {
            Some((Ok(g), _)) => Some(g.decided_ms),
            _ => None,
        }
    }

    /// The grant of a mounted session; it must still be for the same file
    /// system (a mount target cannot move, but be careful).
    pub(crate) async fn session_grant(&self, s: &Session) -> Res<Arc<Grant>> {
        let g = self.grant(&s.domain, s.peer).await?;
        if g.fs != s.fs {
            return fail(errno::ESTALE, "mount target now belongs elsewhere");
        }
        Ok(g)
    }

    /// Who `claimed` may act as under `grant`.
    pub(crate) async fn identity(&self, grant: &Grant, claimed: Caller) -> Res<Caller> {
        let c = squash(grant.squash, claimed);
        if c.uid == 0 {
            return Ok(c);
        }
        let Some(cfg) = &grant.ldap else {
            return fail(
                errno::EACCES,
                format!(
                    "uid {} refused: without an LDAP configuration only root may use {}",
                    c.uid, grant.fs
                ),
            );
        };
        if c.uid == NOBODY && grant.squash != Squash::None {
            // A squashed caller is the anonymous user: others' permissions.
            return Ok(c);
        }
        let id = self.resolve(&grant.fs, cfg, c.uid).await?;
        // The process may act with any of its directory groups as its
        // primary one (newgrp); otherwise it gets the directory's.
        let gid = if id.groups.contains(&c.gid) {
            c.gid
        } else {
            id.gid
        };
        Ok(Caller {
            uid: id.uid,
            gid,
            groups: id.groups,
        })
    }

    fn cached_identity(&self, fs: &str, cfg: &LdapConfig, uid: u32) -> Option<Res<ldap::Identity>> {
        let cache = lock(&self.access.identities);
        let r = cache.get(&(fs.to_string(), uid))?;
        if &r.config != cfg {
            return None;
        }
        let ttl = match r.identity {
            Some(_) => self.identity_settings.ldap_cache_ttl,
            None => NEGATIVE_TTL.min(self.identity_settings.ldap_cache_ttl),
        };
        if r.at.elapsed() >= ttl {
            return None;
        }
        Some(match &r.identity {
            Some(id) => Ok(id.clone()),
            None => not_in_directory(uid, cfg),
        })
    }

    async fn resolve(&self, fs: &str, cfg: &LdapConfig, uid: u32) -> Res<ldap::Identity> {
        if let Some(r) = self.cached_identity(fs, cfg, uid) {
            count(&self.access.stats.identity_hits);
            return r;
        }
        count(&self.access.stats.identity_misses);
        let _one = self.access.lookup.lock().await;
        if let Some(r) = self.cached_identity(fs, cfg, uid) {
            return r;
        }
        if let Some(at) = lock(&self.access.directory_down).get(cfg) {
            if at.elapsed() < DOWN_RETRY {
                return fail(
                    errno::EACCES,
                    format!("uid {uid} refused: LDAP server {} is unavailable", cfg.uri),
                );
            }
        }
        let password = self.identity_settings.ldap_bind_password.as_deref();
        match ldap::lookup(cfg, password, uid).await {
            Ok(identity) => {
                lock(&self.access.directory_down).remove(cfg);
                let ttl = self.identity_settings.ldap_cache_ttl;
                insert_bounded(
                    &mut lock(&self.access.identities),
                    (fs.to_string(), uid),
                    Resolved {
                        config: cfg.clone(),
                        identity: identity.clone(),
                        at: Instant::now(),
                    },
                    MAX_IDENTITIES,
                    |r| r.at.elapsed() >= ttl,
                );
                match identity {
                    Some(id) => Ok(id),
                    None => {
                        tracing::info!(fs, uid, base = %cfg.search_base, "uid not in the directory; refused");
                        not_in_directory(uid, cfg)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(fs, uid, error = %e, "LDAP lookup failed; the caller is refused");
                lock(&self.access.directory_down).insert(cfg.clone(), Instant::now());
                fail(errno::EACCES, format!("uid {uid} refused: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mounts of made-up domains are refused and cost no memory: nothing
    /// keyed by what a client sends is kept for a refusal, and a domain
    /// that is not a DNS name is refused before the store is asked.
    #[tokio::test]
    async fn refused_mounts_leave_nothing_behind() {
        for b in crate::exactly_once_tests::backends().await {
            let peer: std::net::SocketAddr = "127.0.0.1:700".parse().unwrap();
            for i in 0..2_000 {
                let domain = format!("made-up-{i}.example");
                let r = b.svc.mount(&domain, None, peer).await;
                assert!(
                    matches!(r, Err((errno::ENOENT, _))),
                    "{}: {i}: {r:?}",
                    b.name
                );
            }
            let long = "a".repeat(crate::ns::MAX_DOMAIN + 1);
            for bad in [long.as_str(), "", "no spaces", "x\0y"] {
                let r = b.svc.mount(bad, None, peer).await;
                assert!(
                    matches!(r, Err((errno::EINVAL, _))),
                    "{}: {bad:?}: {r:?}",
                    b.name
                );
            }
            assert_eq!(lock(&b.svc.access.grants).len(), 0, "{}", b.name);
        }
    }

    #[test]
    fn a_full_cache_drops_stale_entries_then_everything() {
        let mut m = HashMap::new();
        for i in 0..4 {
            insert_bounded(&mut m, i, i, 4, |v| *v < 2);
        }
        insert_bounded(&mut m, 9, 9, 4, |v| *v < 2);
        let mut keys: Vec<_> = m.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, vec![2, 3, 9]);
        insert_bounded(&mut m, 10, 10, 3, |_| false);
        assert_eq!(m.len(), 1, "nothing stale: the cache starts over");
    }

    fn rule(cidr: &str, rw: &str, user: &str) -> Rule {
        Rule {
            ipv4: crate::policy::parse_net(cidr),
            ipv6: None,
            writable: rw != "RDONLY",
            squash: Squash::parse(user),
            insecure_ports: false,
        }
    }

    #[test]
    fn first_matching_rule_by_priority_wins() {
        let rules = vec![
            rule("10.0.0.0/8", "RDONLY", "no_squash"),
            rule("0.0.0.0/0", "RDWR", "root_squash"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(matching_rule(&rules, ip("10.1.2.3")), Some(&rules[0]));
        assert_eq!(matching_rule(&rules, ip("192.168.0.1")), Some(&rules[1]));
        assert_eq!(
            matching_rule(&rules, ip("::ffff:10.0.0.1")),
            Some(&rules[0]),
            "IPv4-mapped addresses match IPv4 rules"
        );
        assert!(matching_rule(&rules, ip("2001:db8::1")).is_none());
        assert!(matching_rule(&rules[..1], ip("127.0.0.1")).is_none());
    }

    #[test]
    fn squashing() {
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: vec![1],
        };
        let user = Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        assert_eq!(squash(Squash::None, root.clone()), root);
        assert_eq!(squash(Squash::Root, root.clone()).uid, NOBODY);
        assert_eq!(squash(Squash::Root, user.clone()), user);
        let all = squash(Squash::All, user);
        assert_eq!((all.uid, all.gid, all.groups.len()), (NOBODY, NOBODY, 0));
    }
}
