//! The LDAP client: checks that a directory configuration works (for
//! Create/ModifyLDAPConfig) and resolves POSIX identities from it (for the
//! metadata service). It stores nothing; the control plane keeps the
//! configurations.
//!
//! The NAS API has no bind password parameter, so the password for a
//! `BindDN` is operator configuration (`ldap_bind_password`); without a
//! `BindDN` the service binds anonymously.

use std::time::Duration;

use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

/// How long connecting, binding and one search may take in total. A slow
/// directory must not hold an API call or a file-system operation for long.
pub const LDAP_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_URI: usize = 512;
/// Longest SearchBase or BindDN accepted.
pub const MAX_DN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LdapConfig {
    pub uri: String,
    pub search_base: String,
    pub bind_dn: String,
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
    #[error("cannot reach the LDAP server at {uri}: {reason}")]
    Unreachable { uri: String, reason: String },
    #[error("the LDAP server at {uri} did not answer within {secs} s")]
    Timeout { uri: String, secs: u64 },
    #[error("the LDAP server refused to bind as {dn:?}: {reason}")]
    BindRefused { dn: String, reason: String },
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

fn network_error(uri: &str, e: LdapError) -> DirectoryError {
    DirectoryError::Unreachable {
        uri: uri.to_string(),
        reason: e.to_string(),
    }
}

/// One connection, bound as the config says, closed when dropped.
struct Session {
    ldap: ldap3::Ldap,
}

impl Session {
    async fn open(
        cfg: &LdapConfig,
        password: Option<&str>,
    ) -> std::result::Result<Session, DirectoryError> {
        validate_uri(&cfg.uri)?;
        let settings = LdapConnSettings::new().set_conn_timeout(LDAP_TIMEOUT);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.uri)
            .await
            .map_err(|e| network_error(&cfg.uri, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        ldap.with_timeout(LDAP_TIMEOUT);
        if !cfg.bind_dn.is_empty() {
            let refused = |reason: String| DirectoryError::BindRefused {
                dn: cfg.bind_dn.clone(),
                reason,
            };
            let result = ldap
                .simple_bind(&cfg.bind_dn, password.unwrap_or(""))
                .await
                .map_err(|e| network_error(&cfg.uri, e))?;
            result.success().map_err(|e| refused(e.to_string()))?;
        }
        Ok(Session { ldap })
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
            .map_err(|e| DirectoryError::Search(e.to_string()))?;
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
    match tokio::time::timeout(LDAP_TIMEOUT * 2, f).await {
        Ok(r) => r,
        Err(_) => Err(DirectoryError::Timeout {
            uri: uri.to_string(),
            secs: (LDAP_TIMEOUT * 2).as_secs(),
        }),
    }
}

/// Connects, binds and reads the search base: what CreateLDAPConfig checks
/// before it stores anything.
pub async fn probe(
    cfg: &LdapConfig,
    password: Option<&str>,
) -> std::result::Result<(), DirectoryError> {
    bounded(&cfg.uri, async {
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
    .await
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
