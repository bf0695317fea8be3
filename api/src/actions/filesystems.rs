//! CreateFileSystem, DescribeFileSystems, ModifyFileSystem,
//! UpgradeFileSystem, DeleteFileSystem.

use std::sync::Arc;

use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::filesystems::{ChargeType, FileSystem, FileSystemFilter, NewFileSystem};
use cpfs_controlplane::ldap::LdapConfig;
use cpfs_controlplane::mount_targets::MountTarget;
use cpfs_controlplane::tiers::StorageType;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;
use crate::render::{Reply, Spliced};

/// Largest Capacity accepted by the parser (GiB); the spec grid narrows it.
const MAX_CAPACITY_GIB: i64 = 10 * 1024 * 1024;
const MAX_BANDWIDTH_MBPS: i64 = 10_000_000;

#[derive(Debug)]
pub enum FsCommand {
    Create(NewFileSystem),
    Describe {
        filter: FileSystemFilter,
        page_number: i64,
        page_size: i64,
    },
    Modify {
        fs_id: String,
        description: Option<String>,
        options: Option<String>,
        auto_upgrade: Option<String>,
    },
    Upgrade {
        fs_id: String,
        capacity_gib: i64,
        bandwidth_mbps: Option<i64>,
        dry_run: bool,
        client_token: Option<String>,
    },
    Delete {
        fs_id: String,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<FsCommand>, ApiError> {
    Ok(Some(match action {
        "CreateFileSystem" => FsCommand::Create(parse_create(p)?),
        "DescribeFileSystems" => parse_describe(p)?,
        "ModifyFileSystem" => FsCommand::Modify {
            fs_id: fs_id(p)?,
            description: description(p)?,
            options: json_object(
                p,
                "Options",
                &[
                    "EnableOplock",
                    "EnableABE",
                    "EnableDataInsight",
                    "VscAccessPointAccessOnly",
                ],
            )?,
            auto_upgrade: json_object(
                p,
                "AutoUpgradeConfig",
                &["enabled", "capacityUsedRatio", "step", "time"],
            )?,
        },
        "UpgradeFileSystem" => FsCommand::Upgrade {
            fs_id: fs_id(p)?,
            capacity_gib: p.required_int("Capacity", 1, MAX_CAPACITY_GIB)?,
            // Extension: the SDK models have no Bandwidth here; generic
            // calls (add_query_param) can send it.
            bandwidth_mbps: p.int("Bandwidth", 1, MAX_BANDWIDTH_MBPS)?,
            dry_run: p.flag("DryRun")?,
            client_token: p.string("ClientToken", 64)?,
        },
        "DeleteFileSystem" => FsCommand::Delete { fs_id: fs_id(p)? },
        _ => return Ok(None),
    }))
}

fn fs_id(p: &Params) -> Result<String, ApiError> {
    p.required_string("FileSystemId", 64)
}

/// 2-128 characters, starting with a letter, not a URL.
fn description(p: &Params) -> Result<Option<String>, ApiError> {
    let Some(d) = p.string("Description", 128)? else {
        return Ok(None);
    };
    let ok = d.chars().count() >= 2
        && d.starts_with(|c: char| c.is_alphabetic())
        && !d.starts_with("http://")
        && !d.starts_with("https://");
    if !ok {
        return Err(ApiError::invalid(
            "Description",
            "Description is 2-128 characters, starts with a letter, and must not start with http:// or https://",
        ));
    }
    Ok(Some(d))
}

/// A JSON-object parameter whose keys must be among `known`.
fn json_object(p: &Params, name: &str, known: &[&str]) -> Result<Option<String>, ApiError> {
    let Some(text) = p.opt(name) else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|_| ApiError::invalid(name, format!("{name} must be a JSON object")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid(
            name,
            format!("{name} must be a JSON object"),
        ));
    };
    for k in map.keys() {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                name,
                format!(
                    "{name} has an unknown field {k}; known: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(Some(Value::Object(map).to_string()))
}

fn parse_create(p: &Params) -> Result<NewFileSystem, ApiError> {
    let fs_type = p.opt("FileSystemType").unwrap_or("standard");
    if fs_type != "cpfs" {
        return Err(ApiError::invalid(
            "FileSystemType",
            format!("FileSystemType \"{fs_type}\" is not offered here; use cpfs"),
        ));
    }
    let protocol = p.required("ProtocolType")?;
    if protocol != "cpfs" {
        return Err(ApiError::invalid(
            "ProtocolType",
            "ProtocolType must be cpfs for a cpfs file system",
        ));
    }
    let storage_name = p.required("StorageType")?;
    let storage = StorageType::parse(storage_name).ok_or_else(|| {
        ApiError::invalid(
            "StorageType",
            format!(
                "StorageType \"{storage_name}\" is not valid; use one of {}",
                StorageType::ALL.join(", ")
            ),
        )
    })?;
    let charge = match p.opt("ChargeType") {
        None => ChargeType::PayAsYouGo,
        Some(c) => ChargeType::parse(c).ok_or_else(|| {
            ApiError::invalid(
                "ChargeType",
                "ChargeType must be PayAsYouGo or Subscription",
            )
        })?,
    };
    let encrypt_type = p.int("EncryptType", 0, 2)?.unwrap_or(0);
    if encrypt_type != 0 {
        return Err(ApiError::invalid(
            "EncryptType",
            "encryption at rest is not offered for cpfs; use 0",
        ));
    }
    Ok(NewFileSystem {
        fs_type: fs_type.into(),
        protocol_type: protocol.into(),
        storage_type: storage,
        storage_type_name: storage_name.into(),
        capacity_gib: p.required_int("Capacity", 1, MAX_CAPACITY_GIB)?,
        bandwidth_mbps: p.int("Bandwidth", 1, MAX_BANDWIDTH_MBPS)?,
        charge_type: charge,
        duration_months: p.int("Duration", 1, 120)?.map(|d| d as u32),
        zone_id: p.string("ZoneId", 64)?,
        vpc_id: p.required_string("VpcId", 64)?,
        vswitch_id: p.required_string("VSwitchId", 64)?,
        description: description(p)?.unwrap_or_default(),
        encrypt_type,
        tags: p.key_values("Tag", 20)?,
        dry_run: p.flag("DryRun")?,
        client_token: p.string("ClientToken", 64)?,
    })
}

fn parse_describe(p: &Params) -> Result<FsCommand, ApiError> {
    let (page_number, page_size) = p.page(10, 100)?;
    let types = match p.opt("FileSystemType") {
        None | Some("all") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .take(10)
            .collect(),
    };
    let ids = match p.opt("FileSystemId") {
        None => Vec::new(),
        // The API documents one id; a comma list is accepted as the console does.
        Some(list) => list
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .take(100)
            .collect(),
    };
    Ok(FsCommand::Describe {
        filter: FileSystemFilter {
            ids,
            types,
            vpc_id: p.string("VpcId", 64)?,
            tags: p.key_values("Tag", 20)?,
        },
        page_number,
        page_size,
    })
}

pub async fn execute(cp: &ControlPlane, account: &str, cmd: FsCommand) -> Result<Reply, ApiError> {
    let body = match cmd {
        FsCommand::Describe {
            filter,
            page_number,
            page_size,
        } => return describe(cp, account, &filter, page_number, page_size).await,
        FsCommand::Create(req) => {
            let id = cp.create_file_system(account, req).await?;
            object(json!({ "FileSystemId": id }))
        }
        FsCommand::Modify {
            fs_id,
            description,
            options,
            auto_upgrade,
        } => {
            cp.modify_file_system(
                account,
                &fs_id,
                description.as_deref(),
                options.as_deref(),
                auto_upgrade.as_deref(),
            )
            .await?;
            Map::new()
        }
        FsCommand::Upgrade {
            fs_id,
            capacity_gib,
            bandwidth_mbps,
            dry_run,
            client_token,
        } => {
            cp.upgrade_file_system(
                account,
                &fs_id,
                capacity_gib,
                bandwidth_mbps,
                dry_run,
                client_token.as_deref(),
            )
            .await?;
            Map::new()
        }
        FsCommand::Delete { fs_id } => {
            cp.delete_file_system(account, &fs_id).await?;
            Map::new()
        }
    };
    Ok(body.into())
}

/// A page of DescribeFileSystems. Each file system is rendered once per
/// copy of the read model and its text reused by every call that lists it;
/// one with a chain being repaired is rendered afresh (its progress moves).
async fn describe(
    cp: &ControlPlane,
    account: &str,
    filter: &FileSystemFilter,
    page_number: i64,
    page_size: i64,
) -> Result<Reply, ApiError> {
    let page = cp
        .describe_file_systems(account, filter, page_number, page_size)
        .await?;
    let items = page
        .items
        .iter()
        .map(|e| {
            let redundancy = page.redundancy.get(&e.fs.id);
            let render = || {
                let mut v = file_system_json(&e.fs, &e.mount_targets, &e.tags, e.ldap.as_ref());
                if let (Some(r), Some(map)) = (redundancy, v.as_object_mut()) {
                    map.insert("DataRedundancy".into(), redundancy_json(r));
                }
                Arc::<str>::from(v.to_string())
            };
            match redundancy {
                Some(r) if r.syncing_chains > 0 => render(),
                _ => e.rendered.get_or_init(render).clone(),
            }
        })
        .collect();
    let body = object(json!({
        "TotalCount": page.total,
        "PageNumber": page_number,
        "PageSize": page_size,
    }));
    Ok(Reply {
        body,
        spliced: Some(Spliced {
            outer: "FileSystems",
            inner: "FileSystem",
            items,
        }),
    })
}

/// This product's extension block: the protection of the file system's
/// data (SDK models ignore fields they do not know).
fn redundancy_json(r: &cpfs_controlplane::nodes::Redundancy) -> Value {
    let progress = (r.repair_done_bytes * 100)
        .checked_div(r.repair_total_bytes)
        .unwrap_or(100);
    json!({
        "State": r.state,
        "Replicas": r.replicas,
        "Chains": r.chains,
        "DegradedChains": r.degraded_chains,
        "SyncingChains": r.syncing_chains,
        "RepairDoneBytes": r.repair_done_bytes,
        "RepairTotalBytes": r.repair_total_bytes,
        "RepairProgress": progress,
    })
}

fn tags_json(tags: &[(String, String)]) -> Value {
    json!({ "Tag": tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>() })
}

fn parse_stored_object(text: &str) -> Map<String, Value> {
    serde_json::from_str::<Value>(text)
        .ok()
        .map(object)
        .unwrap_or_default()
}

/// What every listing of a file system shows (DescribeFileSystems,
/// DescribeFileSystemStatistics), under the SDK models' names.
pub(super) fn summary_json(fs: &FileSystem) -> Map<String, Value> {
    object(json!({
        "FileSystemId": fs.id,
        "FileSystemType": fs.fs_type,
        "Description": fs.description,
        "Status": fs.status.as_str(),
        "RegionId": fs.region_id,
        "ZoneId": fs.zone_id,
        "ProtocolType": fs.protocol_type,
        "StorageType": fs.storage_type,
        "ChargeType": fs.charge_type,
        "CreateTime": format_utc(fs.created_at),
        "ExpiredTime": fs.expired_at.map(format_utc).unwrap_or_default(),
        "Capacity": fs.capacity_gib,
        "MeteredSize": fs.metered_size,
        "MeteredIASize": 0,
        "Packages": { "Package": [] },
    }))
}

/// One file system as DescribeFileSystems shows it (wire names of the SDK
/// model), plus `ReadIops`/`WriteIops`, this product's tier limits.
pub fn file_system_json(
    fs: &FileSystem,
    mts: &[MountTarget],
    tags: &[(String, String)],
    ldap: Option<&LdapConfig>,
) -> Value {
    let spec = fs.spec();
    let mut options = parse_stored_object(&fs.options_json);
    for k in [
        "EnableOplock",
        "EnableABE",
        "EnableDataInsight",
        "VscAccessPointAccessOnly",
    ] {
        options.entry(k).or_insert(Value::Bool(false));
    }
    let mut auto = parse_stored_object(&fs.auto_upgrade_json);
    auto.entry("enabled").or_insert(Value::Bool(false));
    auto.entry("capacityUsedRatio").or_insert(json!(0));
    auto.entry("step").or_insert(json!(0));
    auto.entry("time").or_insert(json!(0));
    let mut out = json!({
        "Bandwidth": fs.bandwidth_mbps,
        "ReadIops": spec.read_iops,
        "WriteIops": spec.write_iops,
        "MeteredArchiveSize": 0,
        "EncryptType": fs.encrypt_type,
        "KMSKeyId": "",
        "Version": "2.3.0",
        "VpcId": fs.vpc_id,
        "VswIds": { "VswId": [fs.vswitch_id.clone()] },
        "ResourceGroupId": "",
        "AccessPointCount": "0",
        "MountTargets": { "MountTarget": mts.iter().map(|m| json!({
            "MountTargetDomain": m.domain,
            "DualStackMountTargetDomain": "",
            "NetworkType": "vpc",
            "VpcId": m.vpc_id,
            "VswId": m.vswitch_id,
            "Status": m.status,
            "AccessGroupName": m.access_group,
            "ClientMasterNodes": { "ClientMasterNode": [] },
            "Tags": { "Tag": [] },
        })).collect::<Vec<_>>() },
        "Tags": tags_json(tags),
        "SupportedFeatures": { "SupportedFeature": [] },
        "Options": options,
        "AutoUpgradeConfig": auto,
    });
    if let Some(map) = out.as_object_mut() {
        map.extend(summary_json(fs));
    }
    // Only a file system with a directory has the block, as in the service.
    if let (Some(cfg), Some(map)) = (ldap, out.as_object_mut()) {
        map.insert(
            "Ldap".into(),
            json!({ "BindDN": cfg.bind_dn, "SearchBase": cfg.search_base, "URI": cfg.uri }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    fn create(extra: &[(&str, &str)]) -> Result<NewFileSystem, ApiError> {
        let mut all = vec![
            ("FileSystemType", "cpfs"),
            ("ProtocolType", "cpfs"),
            ("StorageType", "advance_100"),
            ("Capacity", "5120"),
            ("VpcId", "vpc-1"),
            ("VSwitchId", "vsw-1"),
        ];
        for (k, v) in extra {
            all.retain(|(a, _)| a != k);
            all.push((k, v));
        }
        all.retain(|(_, v)| !v.is_empty());
        parse_create(&params(&all))
    }

    #[test]
    fn create_parses_the_sdk_parameters() {
        let c = create(&[
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
            ("DryRun", "True"),
            ("Description", "test-fs"),
        ])
        .unwrap();
        assert_eq!(c.capacity_gib, 5120);
        assert_eq!(c.storage_type, StorageType::Advance100);
        assert_eq!(c.tags, vec![("env".to_string(), "prod".to_string())]);
        assert!(c.dry_run);
        assert_eq!(c.charge_type, ChargeType::PayAsYouGo);
    }

    #[test]
    fn create_refuses_bad_input_with_the_parameter_named() {
        assert_eq!(
            create(&[("Capacity", "")]).unwrap_err().to_string(),
            ApiError::MissingParameter("Capacity".into()).to_string()
        );
        assert_eq!(
            create(&[("StorageType", "fast")]).unwrap_err().code(),
            "InvalidParameter.StorageType"
        );
        assert_eq!(
            create(&[("FileSystemType", "standard")])
                .unwrap_err()
                .code(),
            "InvalidParameter.FileSystemType"
        );
        assert_eq!(
            create(&[("ChargeType", "Free")]).unwrap_err().code(),
            "InvalidParameter.ChargeType"
        );
        assert_eq!(
            create(&[("Description", "http://x")]).unwrap_err().code(),
            "InvalidParameter.Description"
        );
        assert_eq!(
            create(&[("VpcId", "")]).unwrap_err().code(),
            "MissingParameter"
        );
        assert_eq!(
            create(&[("Capacity", "-5")]).unwrap_err().code(),
            "InvalidParameter.Capacity"
        );
    }

    #[test]
    fn json_options_are_checked() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("Options", "{\"EnableOplock\":true}"),
        ]);
        assert!(matches!(
            parse("ModifyFileSystem", &p).unwrap(),
            Some(FsCommand::Modify {
                options: Some(_),
                ..
            })
        ));
        let p = params(&[("FileSystemId", "cpfs-1"), ("Options", "{\"Bogus\":1}")]);
        assert_eq!(
            parse("ModifyFileSystem", &p).unwrap_err().code(),
            "InvalidParameter.Options"
        );
        let p = params(&[("FileSystemId", "cpfs-1"), ("Options", "[1]")]);
        assert!(parse("ModifyFileSystem", &p).is_err());
    }

    #[test]
    fn describe_paging_is_bounded() {
        let p = params(&[("PageSize", "101")]);
        assert_eq!(
            parse("DescribeFileSystems", &p).unwrap_err().code(),
            "InvalidParameter.PageSize"
        );
        let p = params(&[("FileSystemType", "cpfs,extreme")]);
        match parse("DescribeFileSystems", &p).unwrap() {
            Some(FsCommand::Describe {
                filter, page_size, ..
            }) => {
                assert_eq!(filter.types, vec!["cpfs", "extreme"]);
                assert_eq!(page_size, 10);
            }
            other => panic!("{other:?}"),
        }
    }
}
