//! DescribeRegions and DescribeZones: the operator's region configuration.

use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum RegionCommand {
    Regions {
        page_number: i64,
        page_size: i64,
    },
    Zones {
        region_id: Option<String>,
        fs_type: String,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<RegionCommand>, ApiError> {
    Ok(Some(match action {
        "DescribeRegions" => {
            p.choice("FileSystemType", &["all", "standard", "extreme", "cpfs"])?;
            let (page_number, page_size) = p.page(10, 100)?;
            RegionCommand::Regions {
                page_number,
                page_size,
            }
        }
        "DescribeZones" => RegionCommand::Zones {
            // RegionId defaults to the gateway's own region, like every call.
            region_id: p.string("RegionId", 64)?,
            fs_type: p
                .choice("FileSystemType", &["standard", "extreme", "cpfs"])?
                .unwrap_or_else(|| "standard".into()),
        },
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    cmd: RegionCommand,
) -> Result<Map<String, Value>, ApiError> {
    let region = &cp.region;
    match cmd {
        RegionCommand::Regions {
            page_number,
            page_size,
        } => {
            let items = if page_number == 1 {
                vec![
                    json!({"RegionId": region.region_id, "LocalName": region.local_name, "RegionEndpoint": region.endpoint}),
                ]
            } else {
                vec![]
            };
            Ok(object(json!({
                "TotalCount": 1,
                "PageNumber": page_number,
                "PageSize": page_size,
                "Regions": { "Region": items },
            })))
        }
        RegionCommand::Zones { region_id, fs_type } => {
            let region_id = region_id.unwrap_or_else(|| region.region_id.clone());
            if region_id != region.region_id {
                return Err(ApiError::invalid(
                    "RegionId",
                    format!(
                        "region {region_id} is not served here; this deployment serves {}",
                        region.region_id
                    ),
                ));
            }
            // Only cpfs file systems are offered; other types list no
            // instance types, as a zone without that product does.
            let instance_types: Vec<Value> = if fs_type == "cpfs" {
                cpfs_controlplane::tiers::StorageType::ALL
                    .iter()
                    .map(|s| json!({"StorageType": s, "ProtocolType": "cpfs"}))
                    .collect()
            } else {
                vec![]
            };
            let zones: Vec<Value> = region
                .zones
                .iter()
                .map(|z| {
                    json!({
                        "ZoneId": z,
                        "InstanceTypes": { "InstanceType": instance_types },
                        "Capacity": { "Protocol": [] },
                        "Performance": { "Protocol": [] },
                    })
                })
                .collect();
            Ok(object(json!({ "Zones": { "Zone": zones } })))
        }
    }
}
