//! Capability revocations (issue 14, finding 8): what the heartbeat reply
//! tells data nodes, per file system, about capabilities that no longer
//! stand. Whatever decides a mount's grant (its mount targets and their
//! status, the file system's status, the access groups' rules, the LDAP
//! configuration) is fingerprinted per file system; when a fingerprint
//! changes, capabilities issued under grants decided before that moment
//! are revoked, and clients renew theirs under the new grant (or are
//! refused).
//!
//! Computed here, from the tables, rather than in every API action that
//! changes a grant: a path that forgets to report a change cannot leave a
//! capability standing. The fingerprints live in memory, and a file system
//! first seen (after a start, or a change between two computations that
//! made it appear) is revoked up to that moment: what changed before is
//! unknown. Each open file of it renews once.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use cpfs_proto::heartbeat::Revocation;
use sqlx::Row;

use crate::error::Result;
use crate::nodes::wall_ms;
use crate::ControlPlane;

/// How often the fingerprints are computed again (every node heartbeats
/// about once a second; they share one computation).
pub(crate) const REFRESH: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Revocations {
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    at: Option<Instant>,
    /// Per file system: its fingerprint and the revocation time.
    seen: HashMap<String, (u64, i64)>,
}

fn digest(h: &impl Hash) -> u64 {
    let mut s = DefaultHasher::new();
    h.hash(&mut s);
    s.finish()
}

impl ControlPlane {
    /// The revocation time of every file system (and of those just gone).
    pub async fn capability_revocations(&self) -> Result<Vec<Revocation>> {
        let mut st = self.revocations.state.lock().await;
        if st.at.is_none_or(|t| t.elapsed() >= REFRESH) {
            let fresh = self.grant_fingerprints().await?;
            // Grants are stamped before their store read, so one that read
            // the old state carries a time at most this millisecond's:
            // everything up to and including it is revoked.
            let at_ms = wall_ms() + 1;
            let mut moved = false;
            for (fs, (old, at)) in st.seen.iter_mut() {
                match fresh.get(fs) {
                    Some(d) if d == old => continue,
                    // Changed, or deleted.
                    Some(d) => (*old, *at) = (*d, at_ms),
                    None => (*old, *at) = (0, at_ms),
                }
                moved = true;
            }
            for (fs, d) in fresh {
                st.seen.entry(fs).or_insert_with(|| {
                    moved = true;
                    (d, at_ms)
                });
            }
            // Nothing is published before that millisecond is over: a
            // renewal that a refusal under the revocation prompts is then
            // stamped after it, and stands.
            while moved && wall_ms() < at_ms {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            st.at = Some(Instant::now());
        }
        Ok(st
            .seen
            .iter()
            .map(|(fs, (_, at))| Revocation {
                fs: fs.clone(),
                before_ms: *at,
            })
            .collect())
    }

    /// A fingerprint per file system of everything its grants depend on.
    async fn grant_fingerprints(&self) -> Result<HashMap<String, u64>> {
        let pool = &self.store.pool;
        let mut rules: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT account_id, group_name, rule_id, source_cidr, ipv6_source_cidr, rw_access, user_access, priority, insecure_ports FROM access_rules ORDER BY account_id, group_name, priority, rule_id",
        )
        .fetch_all(pool)
        .await?
        {
            let rule = format!(
                "{}|{}|{}|{}|{}|{}|{}",
                r.try_get::<i64, _>("rule_id")?,
                r.try_get::<String, _>("source_cidr")?,
                r.try_get::<String, _>("ipv6_source_cidr")?,
                r.try_get::<String, _>("rw_access")?,
                r.try_get::<String, _>("user_access")?,
                r.try_get::<i64, _>("priority")?,
                r.try_get::<i64, _>("insecure_ports")?,
            );
            rules
                .entry((r.try_get("account_id")?, r.try_get("group_name")?))
                .or_default()
                .push(rule);
        }
        let mut ldap: HashMap<String, u64> = HashMap::new();
        for r in sqlx::query("SELECT fs_id, uri, search_base, bind_dn FROM ldap_configs")
            .fetch_all(pool)
            .await?
        {
            let cfg: (String, String, String) = (
                r.try_get("uri")?,
                r.try_get("search_base")?,
                r.try_get("bind_dn")?,
            );
            ldap.insert(r.try_get("fs_id")?, digest(&cfg));
        }
        // A fenced client address revokes every capability of its file
        // system issued before (clients.rs).
        let mut fences: HashMap<String, Vec<String>> = HashMap::new();
        for r in sqlx::query("SELECT fs_id, client_ip FROM client_fences ORDER BY fs_id, client_ip")
            .fetch_all(pool)
            .await?
        {
            fences
                .entry(r.try_get("fs_id")?)
                .or_default()
                .push(r.try_get("client_ip")?);
        }
        // Every file system, with or without mount targets: one whose last
        // mount target went before it was first seen must still be revoked.
        let mut per_fs: BTreeMap<String, (String, Vec<u64>)> = BTreeMap::new();
        for r in sqlx::query("SELECT id, status FROM file_systems")
            .fetch_all(pool)
            .await?
        {
            per_fs.insert(r.try_get("id")?, (r.try_get("status")?, Vec::new()));
        }
        for r in sqlx::query(
            "SELECT fs_id, domain, account_id, access_group, status FROM mount_targets ORDER BY fs_id, domain",
        )
        .fetch_all(pool)
        .await?
        {
            let fs: String = r.try_get("fs_id")?;
            let account: String = r.try_get("account_id")?;
            let group: String = r.try_get("access_group")?;
            let target = (
                r.try_get::<String, _>("domain")?,
                r.try_get::<String, _>("status")?,
                rules.get(&(account, group.clone())),
                group,
            );
            if let Some((_, targets)) = per_fs.get_mut(&fs) {
                targets.push(digest(&target));
            }
        }
        Ok(per_fs
            .into_iter()
            .map(|(fs, (status, targets))| {
                let d = digest(&(status, targets, ldap.get(&fs), fences.get(&fs)));
                (fs, d)
            })
            .collect())
    }
}
