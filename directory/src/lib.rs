//! The LDAP client: checks that a directory configuration works (for
//! Create/ModifyLDAPConfig) and resolves POSIX identities from it (for the
//! metadata service). It stores nothing; the control plane keeps the
//! configurations.
//!
//! A `BindDN` binds with the tenant's own `BindPassword` (a CPFS extension
//! of the NAS API) or, on the servers the operator lists only, with the
//! operator's `ldap_bind_password`; without a `BindDN` the service binds
//! anonymously. Where the service may connect at all is `net`'s policy.

mod net;

use std::time::{Duration, Instant};

use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};

pub use net::{install_policy, ordinary_address, AllowedServer, DirectoryPolicy};

/// How long connecting, binding and one search may take in total. A slow
/// directory must not hold an API call or a file-system operation for long.
pub const LDAP_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_URI: usize = 512;
/// Longest SearchBase or BindDN accepted.
pub const MAX_DN: usize = 1024;

/// How long a failed check of a configuration takes, whatever the cause:
/// a closed, a silent and an open port that is no LDAP server all answer
/// after the same time, so the check cannot be used to map a network.
pub const PROBE_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LdapConfig {
    pub uri: String,
    pub search_base: String,
    pub bind_dn: String,
    /// The tenant's own password for `bind_dn`, in memory only while the
    /// configuration is used (stored encrypted by the control plane).
    pub bind_password: Option<BindPassword>,
}

/// A bind password: never printed, compared in constant time.
#[derive(Clone)]
pub struct BindPassword(String);

impl BindPassword {
    pub fn new(password: String) -> Self {
        BindPassword(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BindPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindPassword(<redacted>)")
    }
}

impl PartialEq for BindPassword {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for BindPassword {}

// Equal passwords hash equally (the metadata service keys caches by
// configuration); the hash is of the process's own map, never shown.
impl std::hash::Hash for BindPassword {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A POSIX identity as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    /// The account's primary group (`gidNumber` of its `posixAccount`).
    pub gid: u32,
    /// Every group the account is in: the primary one and each `posixGroup`
    /// that lists it as `memberUid` (or, RFC 2307bis style, as `member`).
    pub groups: Vec<u32>,
}

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("the LDAP URI {0:?} is not ldap://host[:port] or ldaps://host[:port]")]
    BadUri(String),
    /// Refused before any connection (see `net`).
    #[error("the LDAP URI {0:?} names an address the service does not connect to for tenants (loopback, link-local, unspecified, multicast or broadcast); only the operator can allow it")]
    Forbidden(String),
    #[error("a BindDN needs a BindPassword for {0:?}: the operator's bind password is only sent to the LDAP servers the operator lists")]
    PasswordRequired(String),
    /// Connection, TLS, bind or protocol failure and timeouts alike: which
    /// one it was would tell a tenant what listens where.
    #[error("the LDAP server at {uri} is unreachable or refused")]
    Unreachable { uri: String },
    #[error("the search base {base:?} does not exist on the LDAP server")]
    NoSuchBase { base: String },
    #[error("the LDAP server failed a search: {0}")]
    Search(String),
}

/// Checks the shape of a URI before any network traffic.
pub fn validate_uri(uri: &str) -> std::result::Result<(), DirectoryError> {
    let bad = || DirectoryError::BadUri(uri.chars().take(MAX_URI).collect());
    if uri.len() > MAX_URI {
        return Err(bad());
    }
    let rest = uri
        .strip_prefix("ldap://")
        .or_else(|| uri.strip_prefix("ldaps://"))
        .ok_or_else(bad)?;
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    // A port, when given, must be a number in range.
    if let Some((host, port)) = host_port.rsplit_once(':') {
        if !host.ends_with(']') && host.contains(':') {
            return Err(bad()); // bare IPv6 without brackets
        }
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
    }
    Ok(())
}

impl DirectoryError {
    pub(crate) fn unreachable(uri: &str) -> DirectoryError {
        DirectoryError::Unreachable {
            uri: uri.to_string(),
        }
    }
}

/// The failure the caller sees; the cause only in the debug log (no
/// password is part of it).
fn network_error(uri: &str, e: impl std::fmt::Display) -> DirectoryError {
    tracing::debug!(uri, error = %e, "LDAP server unreachable or refused");
    DirectoryError::unreachable(uri)
}

/// The password a bind as `cfg.bind_dn` may send to `host:port`.
fn password_for<'a>(
    cfg: &'a LdapConfig,
    operator_password: Option<&'a str>,
    policy: &DirectoryPolicy,
    host: &str,
    port: u16,
) -> std::result::Result<&'a str, DirectoryError> {
    if let Some(own) = &cfg.bind_password {
        return Ok(own.expose());
    }
    match operator_password {
        Some(p) if policy.lists(host, port) => Ok(p),
        _ => Err(DirectoryError::PasswordRequired(cfg.uri.clone())),
    }
}

/// A TCP connection to the first checked address that answers.
async fn connect(
    uri: &str,
    addrs: &[std::net::SocketAddr],
) -> std::result::Result<std::net::TcpStream, DirectoryError> {
    for addr in addrs {
        match tokio::time::timeout(LDAP_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return stream.into_std().map_err(|e| network_error(uri, e)),
            Ok(Err(e)) => tracing::debug!(uri, %addr, error = %e, "LDAP connect failed"),
            Err(_) => tracing::debug!(uri, %addr, "LDAP connect timed out"),
        }
    }
    Err(DirectoryError::unreachable(uri))
}

/// One connection, bound as the config says, closed when dropped.
struct Session {
    ldap: ldap3::Ldap,
    uri: String,
}

impl Session {
    async fn open(
        cfg: &LdapConfig,
        password: Option<&str>,
    ) -> std::result::Result<Session, DirectoryError> {
        validate_uri(&cfg.uri)?;
        let policy = net::policy();
        let (_, host, port) =
            net::target(&cfg.uri).ok_or_else(|| DirectoryError::BadUri(cfg.uri.clone()))?;
        // Decided before any traffic: a refusal costs no connection.
        let password = if cfg.bind_dn.is_empty() {
            None
        } else {
            Some(password_for(cfg, password, policy, &host, port)?)
        };
        let (_, addrs) = net::checked_addresses(&cfg.uri, policy, LDAP_TIMEOUT).await?;
        let stream = connect(&cfg.uri, &addrs).await?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(LDAP_TIMEOUT)
            .set_std_stream(StdStream::Tcp(stream));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.uri)
            .await
            .map_err(|e| network_error(&cfg.uri, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        ldap.with_timeout(LDAP_TIMEOUT);
        if let Some(password) = password {
            let result = ldap
                .simple_bind(&cfg.bind_dn, password)
                .await
                .map_err(|e| network_error(&cfg.uri, e))?;
            result.success().map_err(|e| network_error(&cfg.uri, e))?;
        }
        Ok(Session {
            ldap,
            uri: cfg.uri.clone(),
        })
    }

    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> std::result::Result<Vec<SearchEntry>, DirectoryError> {
        self.ldap.with_timeout(LDAP_TIMEOUT);
        let ldap3::SearchResult(entries, result) = self
            .ldap
            .search(base, scope, filter, attrs.to_vec())
            .await
            // No LDAP answer at all: the same as not reaching the server.
            .map_err(|e| network_error(&self.uri, e))?;
        // 32 is noSuchObject: the base itself is missing.
        if result.rc == 32 {
            return Err(DirectoryError::NoSuchBase {
                base: base.to_string(),
            });
        }
        result
            .non_error()
            .map_err(|e| DirectoryError::Search(e.to_string()))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

async fn bounded<T>(
    uri: &str,
    f: impl std::future::Future<Output = std::result::Result<T, DirectoryError>>,
) -> std::result::Result<T, DirectoryError> {
    // The crate's own timeouts cover each step; this covers the sum, and a
    // server that accepts the connection but never answers.
    match tokio::time::timeout(PROBE_TIME, f).await {
        Ok(r) => r,
        Err(_) => Err(DirectoryError::unreachable(uri)),
    }
}

/// Connects, binds and reads the search base: what CreateLDAPConfig checks
/// before it stores anything. `password` is the operator's, sent only to
/// the servers the operator lists. A failure to reach or bind answers
/// after `PROBE_TIME`, whatever the cause.
pub async fn probe(
    cfg: &LdapConfig,
    password: Option<&str>,
) -> std::result::Result<(), DirectoryError> {
    let started = Instant::now();
    let outcome = bounded(&cfg.uri, async {
        let mut s = Session::open(cfg, password).await?;
        let found = s
            .search(&cfg.search_base, Scope::Base, "(objectClass=*)", &["1.1"])
            .await;
        s.close().await;
        match found {
            Ok(entries) if entries.is_empty() => Err(DirectoryError::NoSuchBase {
                base: cfg.search_base.clone(),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    if let Err(DirectoryError::Unreachable { .. }) = &outcome {
        tokio::time::sleep_until((started + PROBE_TIME).into()).await;
    }
    outcome
}

fn first_number(e: &SearchEntry, attr: &str) -> Option<u32> {
    e.attrs.get(attr)?.first()?.trim().parse().ok()
}

/// The identity of `uid` in the directory, or `None` when no
/// `posixAccount` under the search base has that `uidNumber`.
pub async fn lookup(
    cfg: &LdapConfig,
    password: Option<&str>,
    uid: u32,
) -> std::result::Result<Option<Identity>, DirectoryError> {
    bounded(&cfg.uri, async {
        let mut s = Session::open(cfg, password).await?;
        let result = lookup_in(&mut s, cfg, uid).await;
        s.close().await;
        result
    })
    .await
}

async fn lookup_in(
    s: &mut Session,
    cfg: &LdapConfig,
    uid: u32,
) -> std::result::Result<Option<Identity>, DirectoryError> {
    let accounts = s
        .search(
            &cfg.search_base,
            Scope::Subtree,
            &format!("(&(objectClass=posixAccount)(uidNumber={uid}))"),
            &["uid", "gidNumber"],
        )
        .await?;
    let Some(account) = accounts.first() else {
        return Ok(None);
    };
    let Some(gid) = first_number(account, "gidNumber") else {
        return Ok(None);
    };
    let name = account
        .attrs
        .get("uid")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    let mut filter = format!("(member={})", ldap_escape(&account.dn));
    if !name.is_empty() {
        filter = format!("(|(memberUid={}){filter})", ldap_escape(&name));
    }
    let groups = s
        .search(
            &cfg.search_base,
            Scope::Subtree,
            &format!("(&(objectClass=posixGroup){filter})"),
            &["gidNumber"],
        )
        .await?;
    let mut all = vec![gid];
    for g in &groups {
        if let Some(n) = first_number(g, "gidNumber") {
            if !all.contains(&n) {
                all.push(n);
            }
        }
    }
    Ok(Some(Identity {
        uid,
        gid,
        groups: all,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        for ok in [
            "ldap://10.0.0.5:389",
            "ldap://ldap.example.com",
            "ldaps://ldap.example.com:636/",
            "ldap://[::1]:389",
        ] {
            assert!(validate_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "http://x",
            "ldap://",
            "ldap://host:0",
            "ldap://host:99999",
            "ldap://host:x",
            "ldap://host/dc=x",
            "ldap://u@host",
            "ldap://::1:389",
        ] {
            assert!(validate_uri(bad).is_err(), "{bad}");
        }
        assert!(validate_uri(&format!("ldap://{}", "a".repeat(600))).is_err());
    }
}
