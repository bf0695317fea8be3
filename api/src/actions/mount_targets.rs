//! CreateMountTarget, DescribeMountTargets, ModifyMountTarget,
//! DeleteMountTarget.

use cpfs_controlplane::mount_targets::NewMountTarget;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum MountTargetCommand {
    Create(NewMountTarget),
    Describe {
        fs_id: String,
        domain: Option<String>,
        page_number: i64,
        page_size: i64,
    },
    Modify {
        fs_id: String,
        domain: String,
        access_group: Option<String>,
        status: Option<String>,
    },
    Delete {
        fs_id: String,
        domain: String,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<MountTargetCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    Ok(Some(match action {
        "CreateMountTarget" => {
            let network = p.required("NetworkType")?;
            if !network.eq_ignore_ascii_case("vpc") {
                return Err(ApiError::invalid("NetworkType", "NetworkType must be Vpc"));
            }
            MountTargetCommand::Create(NewMountTarget {
                fs_id: fs_id()?,
                network_type: "Vpc".into(),
                vpc_id: p.required_string("VpcId", 64)?,
                vswitch_id: p.required_string("VSwitchId", 64)?,
                access_group: p.string("AccessGroupName", 64)?,
                dry_run: p.flag("DryRun")?,
            })
        }
        "DescribeMountTargets" => {
            let (page_number, page_size) = p.page(10, 100)?;
            MountTargetCommand::Describe {
                fs_id: fs_id()?,
                domain: p.string("MountTargetDomain", 256)?,
                page_number,
                page_size,
            }
        }
        "ModifyMountTarget" => MountTargetCommand::Modify {
            fs_id: fs_id()?,
            domain: p.required_string("MountTargetDomain", 256)?,
            access_group: p.string("AccessGroupName", 64)?,
            status: p.choice("Status", &["Active", "Inactive"])?,
        },
        "DeleteMountTarget" => MountTargetCommand::Delete {
            fs_id: fs_id()?,
            domain: p.required_string("MountTargetDomain", 256)?,
        },
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: MountTargetCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        MountTargetCommand::Create(req) => {
            let domain = cp.create_mount_target(account, req).await?;
            Ok(object(json!({
                "MountTargetDomain": domain,
                "MountTargetExtra": { "DualStackMountTargetDomain": "" },
            })))
        }
        MountTargetCommand::Describe {
            fs_id,
            domain,
            page_number,
            page_size,
        } => {
            let (total, list) = cp
                .describe_mount_targets(account, &fs_id, domain.as_deref(), page_number, page_size)
                .await?;
            let items: Vec<Value> = list
                .iter()
                .map(|m| {
                    json!({
                        "MountTargetDomain": m.domain,
                        "DualStackMountTargetDomain": "",
                        "NetworkType": "vpc",
                        "VpcId": m.vpc_id,
                        "VswId": m.vswitch_id,
                        "Status": m.status,
                        "AccessGroup": m.access_group,
                        "IPVersion": "IPv4",
                        "AccessPointAccessOnly": false,
                        "ClientMasterNodes": { "ClientMasterNode": [] },
                        "Tags": { "Tag": [] },
                    })
                })
                .collect();
            Ok(object(json!({
                "TotalCount": total,
                "PageNumber": page_number,
                "PageSize": page_size,
                "MountTargets": { "MountTarget": items },
            })))
        }
        MountTargetCommand::Modify {
            fs_id,
            domain,
            access_group,
            status,
        } => {
            cp.modify_mount_target(
                account,
                &fs_id,
                &domain,
                access_group.as_deref(),
                status.as_deref(),
            )
            .await?;
            Ok(Map::new())
        }
        MountTargetCommand::Delete { fs_id, domain } => {
            cp.delete_mount_target(account, &fs_id, &domain).await?;
            Ok(Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn create_requires_vpc_parameters() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("NetworkType", "Vpc"),
            ("VpcId", "v"),
        ]);
        let e = parse("CreateMountTarget", &p).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        assert!(e.to_string().contains("VSwitchId"));
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("NetworkType", "Classic"),
            ("VpcId", "v"),
            ("VSwitchId", "s"),
        ]);
        assert_eq!(
            parse("CreateMountTarget", &p).unwrap_err().code(),
            "InvalidParameter.NetworkType"
        );
    }

    #[test]
    fn modify_status_is_a_choice() {
        let p = params(&[
            ("FileSystemId", "f"),
            ("MountTargetDomain", "d"),
            ("Status", "Broken"),
        ]);
        assert_eq!(
            parse("ModifyMountTarget", &p).unwrap_err().code(),
            "InvalidParameter.Status"
        );
    }
}
