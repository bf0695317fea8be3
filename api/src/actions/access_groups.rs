//! Access groups and access rules.

use cpfs_controlplane::access_groups::RuleChange;
use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum AccessCommand {
    CreateGroup {
        name: String,
        group_type: String,
        description: String,
        fs_type: String,
    },
    DescribeGroups {
        name: Option<String>,
        page_number: i64,
        page_size: i64,
    },
    ModifyGroup {
        name: String,
        description: String,
    },
    DeleteGroup {
        name: String,
    },
    CreateRule {
        group: String,
        rule: RuleChange,
    },
    DescribeRules {
        group: String,
        rule_id: Option<i64>,
        page_number: i64,
        page_size: i64,
    },
    ModifyRule {
        group: String,
        rule_id: i64,
        rule: RuleChange,
    },
    DeleteRule {
        group: String,
        rule_id: i64,
    },
}

fn rule_change(p: &Params) -> Result<RuleChange, ApiError> {
    Ok(RuleChange {
        source_cidr: p.string("SourceCidrIp", 64)?,
        ipv6_source_cidr: p.string("Ipv6SourceCidrIp", 64)?,
        rw_access: p.choice("RWAccessType", &["RDWR", "RDONLY"])?,
        user_access: p.choice(
            "UserAccessType",
            &["no_squash", "root_squash", "all_squash"],
        )?,
        priority: p.int("Priority", 1, 100)?,
        // A CPFS extension, as NFS's `insecure` export option.
        insecure_ports: p.bool("InsecurePorts")?,
    })
}

fn rule_id(p: &Params) -> Result<i64, ApiError> {
    p.required_int("AccessRuleId", 1, i64::MAX)
}

pub fn parse(action: &str, p: &Params) -> Result<Option<AccessCommand>, ApiError> {
    let group = || p.required_string("AccessGroupName", 64);
    Ok(Some(match action {
        "CreateAccessGroup" => AccessCommand::CreateGroup {
            name: group()?,
            group_type: p.required_string("AccessGroupType", 16)?,
            description: p.string("Description", 128)?.unwrap_or_default(),
            fs_type: p
                .choice("FileSystemType", &["standard", "extreme", "cpfs"])?
                .unwrap_or_else(|| "standard".into()),
        },
        "DescribeAccessGroups" => {
            let (page_number, page_size) = p.page(10, 100)?;
            AccessCommand::DescribeGroups {
                name: p.string("AccessGroupName", 64)?,
                page_number,
                page_size,
            }
        }
        "ModifyAccessGroup" => AccessCommand::ModifyGroup {
            name: group()?,
            description: p.string("Description", 128)?.unwrap_or_default(),
        },
        "DeleteAccessGroup" => AccessCommand::DeleteGroup { name: group()? },
        "CreateAccessRule" => AccessCommand::CreateRule {
            group: group()?,
            rule: rule_change(p)?,
        },
        "DescribeAccessRules" => {
            let (page_number, page_size) = p.page(10, 100)?;
            AccessCommand::DescribeRules {
                group: group()?,
                rule_id: p.int("AccessRuleId", 1, i64::MAX)?,
                page_number,
                page_size,
            }
        }
        "ModifyAccessRule" => AccessCommand::ModifyRule {
            group: group()?,
            rule_id: rule_id(p)?,
            rule: rule_change(p)?,
        },
        "DeleteAccessRule" => AccessCommand::DeleteRule {
            group: group()?,
            rule_id: rule_id(p)?,
        },
        _ => return Ok(None),
    }))
}

fn page<T: Clone>(items: &[T], page_number: i64, page_size: i64) -> Vec<T> {
    let start = ((page_number - 1).max(0) * page_size) as usize;
    items
        .iter()
        .skip(start)
        .take(page_size as usize)
        .cloned()
        .collect()
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: AccessCommand,
) -> Result<Map<String, Value>, ApiError> {
    let region = cp.region.region_id.clone();
    match cmd {
        AccessCommand::CreateGroup {
            name,
            group_type,
            description,
            fs_type,
        } => {
            cp.create_access_group(account, &name, &group_type, &description, &fs_type)
                .await?;
            Ok(object(json!({ "AccessGroupName": name })))
        }
        AccessCommand::DescribeGroups {
            name,
            page_number,
            page_size,
        } => {
            let groups = match name {
                Some(n) => vec![cp.access_group(account, &n).await?],
                None => cp.access_groups(account).await?,
            };
            let items: Vec<Value> = page(&groups, page_number, page_size)
                .iter()
                .map(|g| {
                    json!({
                        "AccessGroupName": g.name,
                        "AccessGroupType": g.group_type,
                        "Description": g.description,
                        "FileSystemType": g.fs_type,
                        "RegionId": region,
                        "CreateTime": format_utc(g.created_at),
                        "RuleCount": g.rule_count,
                        "MountTargetCount": g.mount_target_count,
                    })
                })
                .collect();
            Ok(object(json!({
                "TotalCount": groups.len(),
                "PageNumber": page_number,
                "PageSize": page_size,
                "AccessGroups": { "AccessGroup": items },
            })))
        }
        AccessCommand::ModifyGroup { name, description } => {
            cp.modify_access_group(account, &name, &description).await?;
            Ok(Map::new())
        }
        AccessCommand::DeleteGroup { name } => {
            cp.delete_access_group(account, &name).await?;
            Ok(Map::new())
        }
        AccessCommand::CreateRule { group, rule } => {
            let id = cp.create_access_rule(account, &group, rule).await?;
            Ok(object(json!({ "AccessRuleId": id.to_string() })))
        }
        AccessCommand::DescribeRules {
            group,
            rule_id,
            page_number,
            page_size,
        } => {
            let rules = match rule_id {
                Some(id) => vec![cp.access_rule(account, &group, id).await?],
                None => cp.access_rules(account, &group).await?,
            };
            let items: Vec<Value> = page(&rules, page_number, page_size)
                .iter()
                .map(|r| {
                    json!({
                        "AccessRuleId": r.rule_id.to_string(),
                        "AccessGroupName": r.group_name,
                        "SourceCidrIp": r.source_cidr,
                        "Ipv6SourceCidrIp": r.ipv6_source_cidr,
                        "Priority": r.priority,
                        "RWAccess": r.rw_access,
                        "UserAccess": r.user_access,
                        "InsecurePorts": r.insecure_ports,
                        "FileSystemType": "cpfs",
                        "RegionId": region,
                    })
                })
                .collect();
            Ok(object(json!({
                "TotalCount": rules.len(),
                "PageNumber": page_number,
                "PageSize": page_size,
                "AccessRules": { "AccessRule": items },
            })))
        }
        AccessCommand::ModifyRule {
            group,
            rule_id,
            rule,
        } => {
            cp.modify_access_rule(account, &group, rule_id, rule)
                .await?;
            Ok(Map::new())
        }
        AccessCommand::DeleteRule { group, rule_id } => {
            cp.delete_access_rule(account, &group, rule_id).await?;
            Ok(Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn rule_parameters_are_choices() {
        let p = params(&[
            ("AccessGroupName", "g1"),
            ("SourceCidrIp", "10.0.0.0/8"),
            ("RWAccessType", "RW"),
        ]);
        assert_eq!(
            parse("CreateAccessRule", &p).unwrap_err().code(),
            "InvalidParameter.RWAccessType"
        );
        let p = params(&[("AccessGroupName", "g1"), ("Priority", "101")]);
        assert_eq!(
            parse("CreateAccessRule", &p).unwrap_err().code(),
            "InvalidParameter.Priority"
        );
        let p = params(&[("AccessGroupName", "g1"), ("AccessRuleId", "x")]);
        assert_eq!(
            parse("DeleteAccessRule", &p).unwrap_err().code(),
            "InvalidParameter.AccessRuleId"
        );
    }
}
