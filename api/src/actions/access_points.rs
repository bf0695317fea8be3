//! CreateCpfsAccessPoint, DescribeCpfsAccessPoints, ModifyCpfsAccessPoint,
//! DeleteCpfsAccessPoint: parameters and replies as the NAS 2017-06-26
//! models have them (`RootDirectory.RootPath`, `Tag.N.Key/Value`).

use cpfs_controlplane::access_points::AccessPoint;
use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum AccessPointCommand {
    Create {
        fs_id: String,
        root_path: Option<String>,
        description: Option<String>,
        tags: Vec<(String, String)>,
    },
    Describe {
        fs_id: String,
        id: Option<String>,
        tags: Vec<(String, String)>,
        page_number: i64,
        page_size: i64,
    },
    Modify {
        fs_id: String,
        id: String,
        description: Option<String>,
    },
    Delete {
        fs_id: String,
        id: String,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<AccessPointCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    Ok(Some(match action {
        "CreateCpfsAccessPoint" => AccessPointCommand::Create {
            fs_id: fs_id()?,
            root_path: p.string("RootDirectory.RootPath", 1024)?,
            description: p.string("Description", 128)?,
            tags: p.key_values("Tag", 20)?,
        },
        "DescribeCpfsAccessPoints" => {
            let (page_number, page_size) = p.page(10, 100)?;
            AccessPointCommand::Describe {
                fs_id: fs_id()?,
                id: p.string("AccessPointId", 64)?,
                tags: p.key_values("Tag", 20)?,
                page_number,
                page_size,
            }
        }
        "ModifyCpfsAccessPoint" => AccessPointCommand::Modify {
            fs_id: fs_id()?,
            id: p.required_string("AccessPointId", 64)?,
            description: p.string("Description", 128)?,
        },
        "DeleteCpfsAccessPoint" => AccessPointCommand::Delete {
            fs_id: fs_id()?,
            id: p.required_string("AccessPointId", 64)?,
        },
        _ => return Ok(None),
    }))
}

fn item(cp: &ControlPlane, account: &str, a: &AccessPoint) -> Value {
    json!({
        "AccessPointId": a.id,
        "ARN": format!("acs:nas:{}:{account}:accesspoint/{}", cp.region.region_id, a.id),
        "FileSystemId": a.fs_id,
        "RegionId": cp.region.region_id,
        "Description": a.description,
        "Status": a.status,
        "CreateTime": format_utc(a.created_at),
        "ModifyTime": format_utc(a.updated_at),
        "RootDirectory": { "RootPath": a.root_path, "RootPathStatus": a.root_path_status },
        "Tags": a.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
    })
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: AccessPointCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        AccessPointCommand::Create {
            fs_id,
            root_path,
            description,
            tags,
        } => {
            let id = cp
                .create_access_point(
                    account,
                    &fs_id,
                    root_path.as_deref(),
                    description.as_deref(),
                    &tags,
                )
                .await?;
            Ok(object(json!({ "AccessPointId": id })))
        }
        AccessPointCommand::Describe {
            fs_id,
            id,
            tags,
            page_number,
            page_size,
        } => {
            let all: Vec<AccessPoint> = cp
                .access_points(account, &fs_id, id.as_deref())
                .await?
                .into_iter()
                .filter(|a| tags.iter().all(|t| a.tags.contains(t)))
                .collect();
            let skip = ((page_number - 1) * page_size) as usize;
            let page: Vec<Value> = all
                .iter()
                .skip(skip)
                .take(page_size as usize)
                .map(|a| item(cp, account, a))
                .collect();
            Ok(object(json!({
                "TotalCount": all.len(),
                "PageNumber": page_number,
                "PageSize": page_size,
                "AccessPoints": page,
            })))
        }
        AccessPointCommand::Modify {
            fs_id,
            id,
            description,
        } => {
            cp.modify_access_point(account, &fs_id, &id, description.as_deref())
                .await?;
            Ok(Map::new())
        }
        AccessPointCommand::Delete { fs_id, id } => {
            cp.delete_access_point(account, &fs_id, &id).await?;
            Ok(Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn the_root_and_tags_are_flattened() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("RootDirectory.RootPath", "/a"),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ]);
        let Some(AccessPointCommand::Create {
            root_path, tags, ..
        }) = parse("CreateCpfsAccessPoint", &p).unwrap()
        else {
            panic!("not a create");
        };
        assert_eq!(root_path.as_deref(), Some("/a"));
        assert_eq!(tags, vec![("k".to_string(), "v".to_string())]);
        let p = params(&[("FileSystemId", "cpfs-1")]);
        let e = parse("DeleteCpfsAccessPoint", &p).unwrap_err();
        assert!(e.to_string().contains("AccessPointId"));
    }
}
