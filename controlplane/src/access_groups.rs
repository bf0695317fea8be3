//! Access groups and their rules: which source addresses may mount, read
//! only or read-write, and how user identities are squashed.

use cpfs_meta::policy::{parse_net, IpNet};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{Error, ResourceKind, Result};
use crate::ControlPlane;

/// The group every account has; it allows every address, read-write, with
/// no squashing, and can be neither modified nor deleted.
pub const DEFAULT_GROUP: &str = "DEFAULT_VPC_GROUP_NAME";
/// Rules one group may hold.
pub const MAX_RULES_PER_GROUP: i64 = 300;
/// Groups one account may hold.
pub const MAX_GROUPS_PER_ACCOUNT: i64 = 100;

#[derive(Debug, Clone)]
pub struct AccessGroup {
    pub name: String,
    pub group_type: String,
    pub description: String,
    pub fs_type: String,
    pub created_at: i64,
    pub rule_count: i64,
    pub mount_target_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub rule_id: i64,
    pub group_name: String,
    pub source_cidr: String,
    pub ipv6_source_cidr: String,
    pub rw_access: String,
    pub user_access: String,
    pub priority: i64,
    /// Also admits metadata connections from unprivileged source ports
    /// (NFS's `insecure`); by default only ports below 1024 are, so only
    /// root on an admitted host can speak for its users.
    pub insecure_ports: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RuleChange {
    pub source_cidr: Option<String>,
    pub ipv6_source_cidr: Option<String>,
    pub rw_access: Option<String>,
    pub user_access: Option<String>,
    pub priority: Option<i64>,
    pub insecure_ports: Option<bool>,
}

/// The networks the default access group admits unless the operator says
/// otherwise: this machine only. A file system is not open to every host
/// that can reach the metadata port until the operator decides so.
pub const DEFAULT_NETWORKS: &[&str] = &["127.0.0.0/8", "::1/128"];

/// The default group's rules: one per network the operator lets it admit
/// (`networks`), read-write without squashing, from privileged source
/// ports only.
pub fn default_rules(networks: &[String]) -> Vec<AccessRule> {
    networks
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let v6 = net.contains(':');
            AccessRule {
                rule_id: i as i64 + 1,
                group_name: DEFAULT_GROUP.into(),
                source_cidr: if v6 { String::new() } else { net.clone() },
                ipv6_source_cidr: if v6 { net.clone() } else { String::new() },
                rw_access: "RDWR".into(),
                user_access: "no_squash".into(),
                priority: 1,
                insecure_ports: false,
            }
        })
        .collect()
}

#[cfg(test)]
fn default_rule() -> AccessRule {
    let nets: Vec<String> = DEFAULT_NETWORKS.iter().map(|n| n.to_string()).collect();
    default_rules(&nets).remove(0)
}

/// The rules of a group as stored, highest priority (lowest number) first;
/// none for a group that does not exist. The default group's implicit rule
/// is not stored: callers check for [`DEFAULT_GROUP`] first.
pub async fn rules_of(
    store: &crate::Store,
    account_id: &str,
    group: &str,
) -> Result<Vec<AccessRule>> {
    sqlx::query(
        "SELECT rule_id, group_name, source_cidr, ipv6_source_cidr, rw_access, user_access, priority, insecure_ports FROM access_rules WHERE account_id = $1 AND group_name = $2 ORDER BY priority, rule_id",
    )
    .bind(account_id)
    .bind(group)
    .fetch_all(&store.pool)
    .await?
    .iter()
    .map(AccessRule::from_row)
    .collect()
}

fn validate_group_name(name: &str) -> Result<()> {
    let ok = (3..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "AccessGroupName",
            "AccessGroupName is 3-64 characters, starts with a letter, and holds letters, digits, '_' or '-'",
        ))
    }
}

fn validate_description(d: &str) -> Result<()> {
    if d.chars().count() > 128 {
        return Err(Error::invalid(
            "Description",
            "Description is at most 128 characters",
        ));
    }
    Ok(())
}

fn validate_rule(rule: &AccessRule) -> Result<()> {
    if rule.source_cidr.is_empty() == rule.ipv6_source_cidr.is_empty() {
        return Err(Error::invalid(
            "SourceCidrIp",
            "give exactly one of SourceCidrIp and Ipv6SourceCidrIp",
        ));
    }
    if !rule.source_cidr.is_empty() && !matches!(parse_net(&rule.source_cidr), Some(IpNet::V4(_))) {
        return Err(Error::invalid(
            "SourceCidrIp",
            format!("{} is not an IPv4 address or CIDR block", rule.source_cidr),
        ));
    }
    if !rule.ipv6_source_cidr.is_empty()
        && !matches!(parse_net(&rule.ipv6_source_cidr), Some(IpNet::V6(_)))
    {
        return Err(Error::invalid(
            "Ipv6SourceCidrIp",
            format!(
                "{} is not an IPv6 address or CIDR block",
                rule.ipv6_source_cidr
            ),
        ));
    }
    if !matches!(rule.rw_access.as_str(), "RDWR" | "RDONLY") {
        return Err(Error::invalid(
            "RWAccessType",
            "RWAccessType must be RDWR or RDONLY",
        ));
    }
    if !matches!(
        rule.user_access.as_str(),
        "no_squash" | "root_squash" | "all_squash"
    ) {
        return Err(Error::invalid(
            "UserAccessType",
            "UserAccessType must be no_squash, root_squash or all_squash",
        ));
    }
    if !(1..=100).contains(&rule.priority) {
        return Err(Error::invalid(
            "Priority",
            "Priority must be between 1 and 100",
        ));
    }
    Ok(())
}

impl AccessRule {
    fn from_row(r: &AnyRow) -> Result<AccessRule> {
        Ok(AccessRule {
            rule_id: r.try_get("rule_id")?,
            group_name: r.try_get("group_name")?,
            source_cidr: r.try_get("source_cidr")?,
            ipv6_source_cidr: r.try_get("ipv6_source_cidr")?,
            rw_access: r.try_get("rw_access")?,
            user_access: r.try_get("user_access")?,
            priority: r.try_get("priority")?,
            insecure_ports: r.try_get::<i64, _>("insecure_ports")? != 0,
        })
    }
}

impl ControlPlane {
    pub async fn create_access_group(
        &self,
        account_id: &str,
        name: &str,
        group_type: &str,
        description: &str,
        fs_type: &str,
    ) -> Result<()> {
        validate_group_name(name)?;
        validate_description(description)?;
        if group_type != "Vpc" {
            return Err(Error::invalid(
                "AccessGroupType",
                "AccessGroupType must be Vpc",
            ));
        }
        if name == DEFAULT_GROUP || self.access_group(account_id, name).await.is_ok() {
            return Err(Error::AlreadyExists {
                kind: ResourceKind::AccessGroup,
                id: name.to_string(),
            });
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM access_groups WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?;
        if n >= MAX_GROUPS_PER_ACCOUNT {
            return Err(Error::invalid(
                "AccessGroupName",
                format!("an account holds at most {MAX_GROUPS_PER_ACCOUNT} access groups"),
            ));
        }
        sqlx::query(
            "INSERT INTO access_groups (account_id, name, group_type, description, fs_type, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account_id)
        .bind(name)
        .bind(group_type)
        .bind(description)
        .bind(fs_type)
        .bind(self.now())
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    async fn counts(&self, account_id: &str, name: &str) -> Result<(i64, i64)> {
        let rules: i64 = if name == DEFAULT_GROUP {
            1
        } else {
            sqlx::query(
                "SELECT COUNT(*) AS n FROM access_rules WHERE account_id = $1 AND group_name = $2",
            )
            .bind(account_id)
            .bind(name)
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?
        };
        let mts: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM mount_targets WHERE account_id = $1 AND access_group = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_one(&self.store.pool)
        .await?
        .try_get("n")?;
        Ok((rules, mts))
    }

    /// One access group (the default one included).
    pub async fn access_group(&self, account_id: &str, name: &str) -> Result<AccessGroup> {
        let (rule_count, mount_target_count) = self.counts(account_id, name).await?;
        if name == DEFAULT_GROUP {
            return Ok(AccessGroup {
                name: DEFAULT_GROUP.into(),
                group_type: "Vpc".into(),
                description: "DEFAULT_VPC_GROUP_NAME".into(),
                fs_type: "standard".into(),
                created_at: 0,
                rule_count,
                mount_target_count,
            });
        }
        let row = sqlx::query(
            "SELECT name, group_type, description, fs_type, created_at FROM access_groups WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| Error::not_found(ResourceKind::AccessGroup, name))?;
        Ok(AccessGroup {
            name: row.try_get("name")?,
            group_type: row.try_get("group_type")?,
            description: row.try_get("description")?,
            fs_type: row.try_get("fs_type")?,
            created_at: row.try_get("created_at")?,
            rule_count,
            mount_target_count,
        })
    }

    /// All groups of the account, the default one first.
    pub async fn access_groups(&self, account_id: &str) -> Result<Vec<AccessGroup>> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM access_groups WHERE account_id = $1 ORDER BY created_at, name",
        )
        .bind(account_id)
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = vec![self.access_group(account_id, DEFAULT_GROUP).await?];
        for (n,) in names {
            out.push(self.access_group(account_id, &n).await?);
        }
        Ok(out)
    }

    fn refuse_default(name: &str) -> Result<()> {
        if name == DEFAULT_GROUP {
            return Err(Error::invalid_status(
                ResourceKind::AccessGroup,
                "the default access group cannot be modified or deleted",
            ));
        }
        Ok(())
    }

    pub async fn modify_access_group(
        &self,
        account_id: &str,
        name: &str,
        description: &str,
    ) -> Result<()> {
        Self::refuse_default(name)?;
        validate_description(description)?;
        self.access_group(account_id, name).await?;
        sqlx::query(
            "UPDATE access_groups SET description = $1 WHERE account_id = $2 AND name = $3",
        )
        .bind(description)
        .bind(account_id)
        .bind(name)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_access_group(&self, account_id: &str, name: &str) -> Result<()> {
        Self::refuse_default(name)?;
        let group = self.access_group(account_id, name).await?;
        if group.mount_target_count > 0 {
            return Err(Error::invalid_status(
                ResourceKind::AccessGroup,
                format!(
                    "access group {name} is used by {} mount target(s)",
                    group.mount_target_count
                ),
            ));
        }
        let mut tx = self.store.begin_write().await?;
        sqlx::query("DELETE FROM access_rules WHERE account_id = $1 AND group_name = $2")
            .bind(account_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_groups WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_access_rule(
        &self,
        account_id: &str,
        group: &str,
        rule: RuleChange,
    ) -> Result<i64> {
        Self::refuse_default(group)?;
        let g = self.access_group(account_id, group).await?;
        if g.rule_count >= MAX_RULES_PER_GROUP {
            return Err(Error::invalid(
                "AccessGroupName",
                format!("an access group holds at most {MAX_RULES_PER_GROUP} rules"),
            ));
        }
        let mut new = AccessRule {
            rule_id: 0,
            group_name: group.to_string(),
            source_cidr: rule.source_cidr.unwrap_or_default(),
            ipv6_source_cidr: rule.ipv6_source_cidr.unwrap_or_default(),
            rw_access: rule.rw_access.unwrap_or_else(|| "RDWR".into()),
            user_access: rule.user_access.unwrap_or_else(|| "no_squash".into()),
            priority: rule.priority.unwrap_or(1),
            insecure_ports: rule.insecure_ports.unwrap_or(false),
        };
        validate_rule(&new)?;
        let mut tx = self.store.begin_write().await?;
        let max: Option<i64> = sqlx::query(
            "SELECT MAX(rule_id) AS m FROM access_rules WHERE account_id = $1 AND group_name = $2",
        )
        .bind(account_id)
        .bind(group)
        .fetch_one(&mut *tx)
        .await?
        .try_get("m")?;
        new.rule_id = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO access_rules (account_id, group_name, rule_id, source_cidr, ipv6_source_cidr, rw_access, user_access, priority, insecure_ports) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(account_id)
        .bind(group)
        .bind(new.rule_id)
        .bind(&new.source_cidr)
        .bind(&new.ipv6_source_cidr)
        .bind(&new.rw_access)
        .bind(&new.user_access)
        .bind(new.priority)
        .bind(i64::from(new.insecure_ports))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new.rule_id)
    }

    /// Rules of a group, highest priority (lowest number) first.
    pub async fn access_rules(&self, account_id: &str, group: &str) -> Result<Vec<AccessRule>> {
        self.access_group(account_id, group).await?;
        if group == DEFAULT_GROUP {
            return Ok(default_rules(&self.default_networks));
        }
        rules_of(&self.store, account_id, group).await
    }

    pub async fn access_rule(
        &self,
        account_id: &str,
        group: &str,
        rule_id: i64,
    ) -> Result<AccessRule> {
        self.access_rules(account_id, group)
            .await?
            .into_iter()
            .find(|r| r.rule_id == rule_id)
            .ok_or_else(|| Error::not_found(ResourceKind::AccessRule, rule_id.to_string()))
    }

    pub async fn modify_access_rule(
        &self,
        account_id: &str,
        group: &str,
        rule_id: i64,
        change: RuleChange,
    ) -> Result<()> {
        Self::refuse_default(group)?;
        let mut rule = self.access_rule(account_id, group, rule_id).await?;
        if let Some(v4) = change.source_cidr {
            rule.source_cidr = v4;
            rule.ipv6_source_cidr.clear();
        }
        if let Some(v6) = change.ipv6_source_cidr {
            rule.ipv6_source_cidr = v6;
            rule.source_cidr.clear();
        }
        if let Some(rw) = change.rw_access {
            rule.rw_access = rw;
        }
        if let Some(u) = change.user_access {
            rule.user_access = u;
        }
        if let Some(p) = change.priority {
            rule.priority = p;
        }
        if let Some(insecure) = change.insecure_ports {
            rule.insecure_ports = insecure;
        }
        validate_rule(&rule)?;
        sqlx::query(
            "UPDATE access_rules SET source_cidr = $1, ipv6_source_cidr = $2, rw_access = $3, user_access = $4, priority = $5, insecure_ports = $6 WHERE account_id = $7 AND group_name = $8 AND rule_id = $9",
        )
        .bind(&rule.source_cidr)
        .bind(&rule.ipv6_source_cidr)
        .bind(&rule.rw_access)
        .bind(&rule.user_access)
        .bind(rule.priority)
        .bind(i64::from(rule.insecure_ports))
        .bind(account_id)
        .bind(group)
        .bind(rule_id)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_access_rule(
        &self,
        account_id: &str,
        group: &str,
        rule_id: i64,
    ) -> Result<()> {
        Self::refuse_default(group)?;
        self.access_rule(account_id, group, rule_id).await?;
        sqlx::query(
            "DELETE FROM access_rules WHERE account_id = $1 AND group_name = $2 AND rule_id = $3",
        )
        .bind(account_id)
        .bind(group)
        .bind(rule_id)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_validation() {
        let mut r = default_rule();
        assert!(validate_rule(&r).is_ok());
        r.priority = 0;
        assert!(validate_rule(&r).is_err());
        r.priority = 1;
        r.ipv6_source_cidr = "::/0".into();
        assert!(validate_rule(&r).is_err(), "both v4 and v6 given");
        r.source_cidr.clear();
        assert!(validate_rule(&r).is_ok());
        r.user_access = "squash_all".into();
        assert!(validate_rule(&r).is_err());
    }

    #[test]
    fn group_names() {
        assert!(validate_group_name("my-group_1").is_ok());
        assert!(validate_group_name("1group").is_err());
        assert!(validate_group_name("ab").is_err());
    }
}
