//! The control plane as the metadata service's [`PolicySource`]: a mount
//! target's status, its file system's status and capacity, its access
//! group's rules and the file system's LDAP configuration, in the shape
//! the metadata service applies them.

use cpfs_meta::policy::{
    parse_net, AccessPointFuture, FilesetFuture, MountPolicy, PolicyFuture, PolicySource, Rule,
    Squash, UserQuotaFuture,
};

use crate::access_groups::{default_rules, rules_of, DEFAULT_GROUP};
use crate::error::Result;
use crate::ldap::ldap_config_of;
use crate::ControlPlane;

impl ControlPlane {
    /// The policy of the mount target named `domain`, if there is one.
    pub async fn mount_policy(&self, domain: &str) -> Result<Option<MountPolicy>> {
        let row: Option<(String, String, String, String, String, i64)> = sqlx::query_as(
            "SELECT m.fs_id, m.account_id, m.access_group, m.status, f.status, f.capacity_gib FROM mount_targets m JOIN file_systems f ON f.id = m.fs_id WHERE m.domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.store.pool)
        .await?;
        let Some((fs, account, group, mt_status, fs_status, capacity_gib)) = row else {
            return Ok(None);
        };
        let rules = {
            let rules = if group == DEFAULT_GROUP {
                default_rules(&self.default_networks)
            } else {
                rules_of(&self.store, &account, &group).await?
            };
            Some(
                rules
                    .iter()
                    .map(|r| Rule {
                        // An empty CIDR parses as nothing: no network.
                        ipv4: parse_net(&r.source_cidr),
                        ipv6: parse_net(&r.ipv6_source_cidr),
                        writable: r.rw_access != "RDONLY",
                        squash: Squash::parse(&r.user_access),
                        insecure_ports: r.insecure_ports,
                    })
                    .collect(),
            )
        };
        let ldap = ldap_config_of(&self.store, &self.secrets, &fs).await?;
        let fenced = self.fenced_ips(&fs).await?;
        Ok(Some(MountPolicy {
            fs,
            mount_target_status: mt_status,
            fs_status,
            capacity_bytes: capacity_gib.max(0) as u64 * (1 << 30),
            access_group: group,
            rules,
            ldap,
            fenced,
        }))
    }
}

impl PolicySource for ControlPlane {
    fn mount_policy<'a>(&'a self, domain: &'a str) -> PolicyFuture<'a> {
        Box::pin(async move {
            ControlPlane::mount_policy(self, domain)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn filesets<'a>(&'a self, fs: &'a [String]) -> FilesetFuture<'a> {
        Box::pin(async move { self.fileset_specs(fs).await.map_err(|e| e.to_string()) })
    }

    fn access_point<'a>(&'a self, id: &'a str) -> AccessPointFuture<'a> {
        Box::pin(async move { self.access_point_spec(id).await.map_err(|e| e.to_string()) })
    }

    fn user_quotas<'a>(&'a self, fs: &'a [String]) -> UserQuotaFuture<'a> {
        Box::pin(async move { self.user_quota_specs(fs).await.map_err(|e| e.to_string()) })
    }
}
