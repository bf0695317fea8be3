//! Actions: each request is parsed into a typed [`Command`] by a pure
//! function (unit-tested beside it), then executed against the control
//! plane. Handlers stay thin: parse, call one control-plane operation, shape
//! the reply.

mod access_groups;
mod access_points;
pub mod bss;
mod clients;
mod filesets;
mod filesystems;
mod ldap;
mod mount_targets;
mod regions;
mod statistics;
mod tags;
mod user_quotas;

use cpfs_controlplane::ControlPlane;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::render::Reply;

pub use access_groups::AccessCommand;
pub use access_points::AccessPointCommand;
pub use clients::ClientCommand;
pub use filesets::FilesetCommand;
pub use filesystems::FsCommand;
pub use ldap::LdapCommand;
pub use mount_targets::MountTargetCommand;
pub use regions::RegionCommand;
pub use statistics::StatisticsCommand;
pub use tags::TagCommand;
pub use user_quotas::UserQuotaCommand;

/// The API version every action belongs to.
pub const NAS_VERSION: &str = "2017-06-26";

/// Actions this gateway serves.
pub const SUPPORTED: &[&str] = &[
    "CreateFileSystem",
    "DescribeFileSystems",
    "ModifyFileSystem",
    "UpgradeFileSystem",
    "DeleteFileSystem",
    "CreateMountTarget",
    "DescribeMountTargets",
    "ModifyMountTarget",
    "DeleteMountTarget",
    "CreateAccessGroup",
    "DescribeAccessGroups",
    "ModifyAccessGroup",
    "DeleteAccessGroup",
    "CreateAccessRule",
    "DescribeAccessRules",
    "ModifyAccessRule",
    "DeleteAccessRule",
    "TagResources",
    "UntagResources",
    "ListTagResources",
    "DescribeRegions",
    "DescribeZones",
    "CreateLDAPConfig",
    "ModifyLDAPConfig",
    "DeleteLDAPConfig",
    "CreateFileset",
    "DescribeFilesets",
    "GetFileset",
    "ModifyFileset",
    "DeleteFileset",
    "SetFilesetQuota",
    "CancelFilesetQuota",
    "CreateCpfsAccessPoint",
    "DescribeCpfsAccessPoints",
    "ModifyCpfsAccessPoint",
    "DeleteCpfsAccessPoint",
    "DescribeMountedClients",
    "AddClientToBlackList",
    "RemoveClientFromBlackList",
    "DescribeBlackListClients",
    "SetUserQuota",
    "DescribeUserQuotas",
    "CancelUserQuota",
    "DescribeFileSystemStatistics",
    "DescribeFileSystemTimeSeries",
];

/// Actions of the NAS API reference that this deployment does not serve
/// yet: they answer `UnsupportedOperation` rather than `InvalidApi.NotFound`,
/// so a caller can tell "not here" from "misspelt".
pub const NOT_YET_SUPPORTED: &[&str] = &[
    "DescribeStoragePackages",
    "CreateDataFlow",
    "OpenNasService",
];

#[derive(Debug)]
pub enum Command {
    Bss(bss::BssCommand),
    FileSystem(FsCommand),
    MountTarget(MountTargetCommand),
    Access(AccessCommand),
    Tag(TagCommand),
    Region(RegionCommand),
    Ldap(LdapCommand),
    Fileset(FilesetCommand),
    UserQuota(UserQuotaCommand),
    AccessPoint(AccessPointCommand),
    Client(ClientCommand),
    Statistics(StatisticsCommand),
}

/// Turns an action of API `version` into a command: the NAS actions
/// (2017-06-26) or the BssOpenApi billing actions (2017-12-14).
pub fn parse_versioned(version: &str, action: &str, p: &Params) -> Result<Command, ApiError> {
    if version == bss::BSS_VERSION {
        return parse_bss(action, p);
    }
    parse(action, p)
}

/// Turns a BssOpenApi action and its parameters into a command.
pub fn parse_bss(action: &str, p: &Params) -> Result<Command, ApiError> {
    match bss::parse(action, p)? {
        Some(c) => Ok(Command::Bss(c)),
        None => Err(ApiError::ApiNotFound(
            action.chars().take(64).collect(),
            bss::BSS_VERSION.into(),
        )),
    }
}

/// Turns a NAS action name and its parameters into a command.
pub fn parse(action: &str, p: &Params) -> Result<Command, ApiError> {
    if let Some(c) = filesystems::parse(action, p)? {
        return Ok(Command::FileSystem(c));
    }
    if let Some(c) = mount_targets::parse(action, p)? {
        return Ok(Command::MountTarget(c));
    }
    if let Some(c) = access_groups::parse(action, p)? {
        return Ok(Command::Access(c));
    }
    if let Some(c) = tags::parse(action, p)? {
        return Ok(Command::Tag(c));
    }
    if let Some(c) = regions::parse(action, p)? {
        return Ok(Command::Region(c));
    }
    if let Some(c) = ldap::parse(action, p)? {
        return Ok(Command::Ldap(c));
    }
    if let Some(c) = filesets::parse(action, p)? {
        return Ok(Command::Fileset(c));
    }
    if let Some(c) = user_quotas::parse(action, p)? {
        return Ok(Command::UserQuota(c));
    }
    if let Some(c) = access_points::parse(action, p)? {
        return Ok(Command::AccessPoint(c));
    }
    if let Some(c) = clients::parse(action, p)? {
        return Ok(Command::Client(c));
    }
    if let Some(c) = statistics::parse(action, p)? {
        return Ok(Command::Statistics(c));
    }
    if NOT_YET_SUPPORTED.contains(&action) {
        return Err(ApiError::NotSupported(action.to_string()));
    }
    Err(ApiError::ApiNotFound(
        action.chars().take(64).collect(),
        NAS_VERSION.into(),
    ))
}

/// Runs a command for an account; the reply fields without `RequestId`.
pub async fn execute(cp: &ControlPlane, account_id: &str, cmd: Command) -> Result<Reply, ApiError> {
    let body = match cmd {
        Command::Bss(c) => bss::execute(cp, account_id, c).await,
        Command::FileSystem(c) => return filesystems::execute(cp, account_id, c).await,
        Command::MountTarget(c) => mount_targets::execute(cp, account_id, c).await,
        Command::Access(c) => access_groups::execute(cp, account_id, c).await,
        Command::Tag(c) => tags::execute(cp, account_id, c).await,
        Command::Region(c) => regions::execute(cp, c).await,
        Command::Ldap(c) => ldap::execute(cp, account_id, c).await,
        Command::Fileset(c) => filesets::execute(cp, account_id, c).await,
        Command::UserQuota(c) => user_quotas::execute(cp, account_id, c).await,
        Command::AccessPoint(c) => access_points::execute(cp, account_id, c).await,
        Command::Client(c) => clients::execute(cp, account_id, c).await,
        Command::Statistics(c) => statistics::execute(cp, account_id, c).await,
    };
    body.map(Reply::from)
}

/// Builds a reply object from `json!` output.
pub(crate) fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
pub(crate) fn params(pairs: &[(&str, &str)]) -> Params {
    Params::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_actions_differ() {
        let p = params(&[]);
        assert_eq!(
            parse("NoSuchAction", &p).unwrap_err().code(),
            "InvalidApi.NotFound"
        );
        assert_eq!(
            parse("CreateDataFlow", &p).unwrap_err().code(),
            "UnsupportedOperation"
        );
    }

    #[test]
    fn every_supported_action_parses_or_asks_for_a_parameter() {
        let p = params(&[]);
        for action in SUPPORTED {
            match parse(action, &p) {
                Ok(_) => {}
                Err(e) => assert!(
                    e.code() == "MissingParameter" || e.code() == "InvalidParameter.FileSystemType",
                    "{action}: {} {}",
                    e.code(),
                    e
                ),
            }
        }
    }
}
