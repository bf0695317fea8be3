#!/usr/bin/env python3
"""Writes openapi/nas.json and openapi/bssopenapi.json, the OpenAPI 3
descriptions of the gateway: the NAS API (2017-06-26) and the BssOpenApi
billing actions (2017-12-14) it serves on the same route and signatures.

The tables below are the descriptions' source; `cargo test` (api/tests/openapi.rs)
fails when the router and a description disagree on the actions served or on
their required parameters, and `build.py --check` when a file is not what
this script writes.
Run `python3 openapi/build.py` after changing the table.

RPC style: every action is `GET|POST /` with `Action=<name>`; each is listed
under the path key `/?Action=<name>` so that tools show one operation per action.
"""
import json, os

S, I, B = "string", "integer", "boolean"

# name: (summary, [(param, type, required, example, description)], {reply field: type})
ACTIONS = {
    "CreateFileSystem": ("Create a CPFS file system (asynchronous: Pending, then Running)", [
        ("FileSystemType", S, True, "cpfs", "Only cpfs is offered"),
        ("ProtocolType", S, True, "cpfs", "cpfs"),
        ("StorageType", S, True, "advance_100", "advance_100, advance_200, economic, or the editions standard, advance"),
        ("Capacity", I, True, "5120", "GiB; one of 2048, 5120, 10240, 30720, 51200"),
        ("Bandwidth", I, False, None, "MB/s; a tier of the capacity (standard, advance, economic) or capacity x baseline (advance_100/200). Default: the lowest tier"),
        ("ChargeType", S, False, None, "PayAsYouGo (default) or Subscription"),
        ("Duration", I, False, None, "Months of a Subscription: 1, 2, 3, 6, 12, 24, 36"),
        ("ZoneId", S, False, None, "A zone of the region (default: the first)"),
        ("VpcId", S, True, "vpc-1", "VPC of the file system"),
        ("VSwitchId", S, True, "vsw-1", "vSwitch of the file system"),
        ("Description", S, False, None, "2-128 characters, starts with a letter"),
        ("EncryptType", I, False, None, "0 only"),
        ("Tag.N.Key", S, False, None, "Up to 20 tags"), ("Tag.N.Value", S, False, None, ""),
        ("DryRun", B, False, None, "Validate only; FileSystemId is empty"),
        ("ClientToken", S, False, None, "Idempotency token, ASCII, at most 64"),
    ], {"FileSystemId": S}),
    "DescribeFileSystems": ("List file systems of the caller's account; Bandwidth (MB/s, reads and writes together), ReadIops and WriteIops are the tier's limits, enforced by the data nodes (QoS)", [
        ("FileSystemId", S, False, None, "One id (a comma list is accepted)"),
        ("FileSystemType", S, False, None, "all (default) or a comma list"),
        ("VpcId", S, False, None, ""),
        ("Tag.N.Key", S, False, None, "Only file systems carrying every given tag"), ("Tag.N.Value", S, False, None, ""),
        ("PageNumber", I, False, None, "From 1"), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "FileSystems": "FileSystems"}),
    "ModifyFileSystem": ("Change description, options and auto-upgrade settings", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("Description", S, False, None, ""),
        ("Options", S, False, None, "JSON object: EnableOplock, EnableABE, EnableDataInsight, VscAccessPointAccessOnly"),
        ("AutoUpgradeConfig", S, False, None, "JSON object: enabled, capacityUsedRatio, step, time"),
    ], {}),
    "UpgradeFileSystem": ("Grow capacity (and bandwidth) online: Running, Extending, Running; the new tier's QoS limits reach the data nodes within about two seconds", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("Capacity", I, True, "10240", "GiB, a grid capacity not below the current one"),
        ("Bandwidth", I, False, None, "Extension (not in the SDK models): MB/s, a tier of the new capacity; default keeps at least the current bandwidth"),
        ("DryRun", B, False, None, ""), ("ClientToken", S, False, None, ""),
    ], {}),
    "DeleteFileSystem": ("Delete a file system with its mount targets (asynchronous: Deleting, then gone)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
    ], {}),
    "CreateMountTarget": ("Create a mount target (Pending, then Active)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", "The file system must be Running"),
        ("NetworkType", S, True, "Vpc", "Vpc"),
        ("VpcId", S, True, "vpc-1", ""), ("VSwitchId", S, True, "vsw-1", ""),
        ("AccessGroupName", S, False, None, "Default DEFAULT_VPC_GROUP_NAME"),
        ("SecurityGroupId", S, False, None, "Accepted and ignored"),
        ("EnableIpv6", B, False, None, "Accepted and ignored"),
        ("DryRun", B, False, None, ""),
    ], {"MountTargetDomain": S, "MountTargetExtra": "MountTargetExtra"}),
    "DescribeMountTargets": ("List the mount targets of a file system", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("MountTargetDomain", S, False, None, ""),
        ("PageNumber", I, False, None, ""), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "MountTargets": "MountTargets"}),
    "ModifyMountTarget": ("Change a mount target's access group or status", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("MountTargetDomain", S, True, "cpfs-0123456789abcdef-abc123.cn-hangzhou.cpfs.nas.localhost", ""),
        ("AccessGroupName", S, False, None, ""), ("Status", S, False, None, "Active or Inactive"),
    ], {}),
    "DeleteMountTarget": ("Delete a mount target", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("MountTargetDomain", S, True, "cpfs-0123456789abcdef-abc123.cn-hangzhou.cpfs.nas.localhost", ""),
    ], {}),
    "CreateAccessGroup": ("Create an access group", [
        ("AccessGroupName", S, True, "lab-net", "3-64 characters, starts with a letter"),
        ("AccessGroupType", S, True, "Vpc", "Vpc"),
        ("Description", S, False, None, ""), ("FileSystemType", S, False, None, "standard (default), extreme, cpfs"),
    ], {"AccessGroupName": S}),
    "DescribeAccessGroups": ("List access groups (DEFAULT_VPC_GROUP_NAME first)", [
        ("AccessGroupName", S, False, None, ""), ("FileSystemType", S, False, None, ""),
        ("PageNumber", I, False, None, ""), ("PageSize", I, False, None, ""),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "AccessGroups": "AccessGroups"}),
    "ModifyAccessGroup": ("Change an access group's description", [
        ("AccessGroupName", S, True, "lab-net", ""), ("Description", S, False, None, ""),
    ], {}),
    "DeleteAccessGroup": ("Delete an access group no mount target uses", [
        ("AccessGroupName", S, True, "lab-net", ""),
    ], {}),
    "CreateAccessRule": ("Add a rule to an access group", [
        ("AccessGroupName", S, True, "lab-net", ""),
        ("SourceCidrIp", S, False, None, "IPv4 address or CIDR (this or Ipv6SourceCidrIp)"),
        ("Ipv6SourceCidrIp", S, False, None, ""),
        ("RWAccessType", S, False, None, "RDWR (default) or RDONLY"),
        ("UserAccessType", S, False, None, "no_squash (default), root_squash, all_squash"),
        ("Priority", I, False, None, "1 (highest, default) - 100"),
        ("FileSystemType", S, False, None, ""),
        ("InsecurePorts", B, False, None, "Extension (not in the SDK models), as NFS's insecure: also admit clients connecting to the metadata service from unprivileged source ports (1024 and up); default false: only root on an admitted host can mount"),
    ], {"AccessRuleId": S}),
    "DescribeAccessRules": ("List the rules of an access group", [
        ("AccessGroupName", S, True, "lab-net", ""), ("AccessRuleId", S, False, None, ""),
        ("PageNumber", I, False, None, ""), ("PageSize", I, False, None, ""),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "AccessRules": "AccessRules"}),
    "ModifyAccessRule": ("Change a rule", [
        ("AccessGroupName", S, True, "lab-net", ""), ("AccessRuleId", S, True, "1", ""),
        ("SourceCidrIp", S, False, None, ""), ("Ipv6SourceCidrIp", S, False, None, ""),
        ("RWAccessType", S, False, None, ""), ("UserAccessType", S, False, None, ""), ("Priority", I, False, None, ""),
        ("InsecurePorts", B, False, None, "Extension, as in CreateAccessRule; unchanged when absent"),
    ], {}),
    "DeleteAccessRule": ("Delete a rule", [
        ("AccessGroupName", S, True, "lab-net", ""), ("AccessRuleId", S, True, "1", ""),
    ], {}),
    "TagResources": ("Add or replace tags on file systems", [
        ("ResourceType", S, True, "filesystem", "filesystem"),
        ("ResourceId.N", S, True, "cpfs-0123456789abcdef", "1-50 ids"),
        ("Tag.N.Key", S, True, "env", "1-20 tags"), ("Tag.N.Value", S, False, None, ""),
    ], {}),
    "UntagResources": ("Remove tags from file systems", [
        ("ResourceType", S, True, "filesystem", ""),
        ("ResourceId.N", S, True, "cpfs-0123456789abcdef", ""),
        ("TagKey.N", S, False, "env", "Keys to remove (or All=true)"), ("All", B, False, None, "Remove every tag"),
    ], {}),
    "ListTagResources": ("List tags", [
        ("ResourceType", S, True, "filesystem", ""), ("ResourceId.N", S, False, None, ""),
        ("Tag.N.Key", S, False, None, ""), ("Tag.N.Value", S, False, None, ""), ("NextToken", S, False, None, ""),
    ], {"NextToken": S, "TagResources": "TagResources"}),
    "DescribeRegions": ("The region this deployment serves", [
        ("FileSystemType", S, False, None, ""), ("PageNumber", I, False, None, ""), ("PageSize", I, False, None, ""),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "Regions": "Regions"}),
    "DescribeZones": ("The zones of the region", [
        ("FileSystemType", S, False, None, "standard (default), extreme, cpfs"),
    ], {"Zones": "Zones"}),
    "CreateLDAPConfig": ("Resolve the file system's users and groups from an LDAP server (checked first: connect, bind, read SearchBase; nothing is stored on failure; loopback, link-local, unspecified, multicast and broadcast addresses are refused unless the operator lists the server; a failed check answers InvalidLDAPConfig.Unreachable, unreachable or refused, after a fixed time)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("URI", S, True, "ldap://10.0.0.5:389", "ldap:// or ldaps://, host and optional port"),
        ("SearchBase", S, True, "dc=example,dc=com", "posixAccount and posixGroup entries are searched below it"),
        ("BindDN", S, False, None, "Bind as this DN (with BindPassword, or the operator's ldap_bind_password on servers the operator lists); anonymous when empty"),
        ("BindPassword", S, False, None, "Extension (not in the SDK models): the password for BindDN, 1-256 characters; stored encrypted, never returned; required for a BindDN unless the operator lists the server"),
    ], {}),
    "ModifyLDAPConfig": ("Replace the LDAP configuration (checked like CreateLDAPConfig; reaches mounted clients within seconds)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("URI", S, True, "ldap://10.0.0.5:389", ""),
        ("SearchBase", S, True, "dc=example,dc=com", ""),
        ("BindDN", S, False, None, ""),
        ("BindPassword", S, False, None, "Extension, as in CreateLDAPConfig; the configuration is replaced whole, so a BindDN needs it again"),
    ], {}),
    "DeleteLDAPConfig": ("Remove the LDAP configuration: only root may use the file system again", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
    ], {}),
    "CreateFileset": ("Track a directory subtree as a fileset (CREATING, then CREATED once its metadata server bound it; a new path's directory is made, an existing directory is adopted with its usage). At most 10 per file system by default (an operator setting; QuotaExceeded.Fileset), no nesting (OperationDenied.NestedFileset)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FileSystemPath", S, True, "/data/team-a/", "Absolute, / at both ends, 2-1024 characters, at most 8 levels; its parent must exist"),
        ("Description", S, False, None, "2-128 characters, starts with a letter"),
        ("DeletionProtection", B, False, None, "DeleteFileset is refused while true"),
        ("Quota.SizeLimit", I, False, None, "Bytes, at least 10 GiB in 1 GiB steps (operator setting)"),
        ("Quota.FileCountLimit", I, False, None, "10000 to 10000000000 (the minimum is an operator setting)"),
        ("DryRun", B, False, None, "Validate only; FsetId is empty"),
        ("ClientToken", S, False, None, "Idempotency token, ASCII, at most 64"),
    ], {"FsetId": S}),
    "DescribeFilesets": ("List a file system's filesets with exact usage, oldest first", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("Filters.N.Key", S, False, None, "FsetIds (comma list of at most 10, exact), FileSystemPath and Description (substring), QuotaExists (true/false)"),
        ("Filters.N.Value", S, False, None, ""),
        ("MaxResults", I, False, None, "10-100, default 20"),
        ("NextToken", S, False, None, "From the previous page; empty on the last"),
        ("OrderByField", S, False, None, "FileCountLimit, SizeLimit, FileCountUsage, SpaceUsage"),
        ("SortOrder", S, False, None, "asc (default) or desc"),
    ], {"FileSystemId": S, "NextToken": S, "Entries": "FilesetEntries"}),
    "GetFileset": ("One fileset (times as yyyy-MM-dd HH:mm:ss, UTC)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FsetId", S, True, "fset-0123456789abcdef", ""),
    ], {"Data": "Fileset"}),
    "ModifyFileset": ("Change a fileset's description or deletion protection", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FsetId", S, True, "fset-0123456789abcdef", ""),
        ("Description", S, False, None, ""), ("DeletionProtection", B, False, None, ""),
        ("DryRun", B, False, None, ""), ("ClientToken", S, False, None, ""),
    ], {}),
    "DeleteFileset": ("Release a fileset (RELEASING, then gone): the directory and its data stay and stop counting against any quota. Refused with OperationDenied.DeletionProtection while protected", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FsetId", S, True, "fset-0123456789abcdef", ""),
        ("DryRun", B, False, None, ""), ("ClientToken", S, False, None, ""),
    ], {}),
    "SetFilesetQuota": ("Limit a fileset's bytes and files; enforced by the metadata service at once and exactly (EDQUOT), answered once it is. A limit below the current usage is refused", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FsetId", S, True, "fset-0123456789abcdef", ""),
        ("SizeLimit", I, False, None, "Bytes, at least 10 GiB in 1 GiB steps"),
        ("FileCountLimit", I, False, None, "10000 to 10000000000"),
        ("DryRun", B, False, None, ""), ("ClientToken", S, False, None, ""),
    ], {}),
    "CancelFilesetQuota": ("Remove a fileset's limits (usage is still counted)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("FsetId", S, True, "fset-0123456789abcdef", ""),
        ("DryRun", B, False, None, ""), ("ClientToken", S, False, None, ""),
    ], {}),
    "CreateCpfsAccessPoint": ("Create an access point: mounts through it (cpfs mount DOMAIN DIR --access-point ID) see RootDirectory.RootPath as their root and nothing above it; who may mount is the mount target's access group's decision. Active at once", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("RootDirectory.RootPath", S, False, None, "Absolute, at most 1024 characters; default /"),
        ("Description", S, False, None, "2-128 characters, starts with a letter"),
        ("Tag.N.Key", S, False, None, "Up to 20 tags"), ("Tag.N.Value", S, False, None, ""),
    ], {"AccessPointId": S}),
    "DescribeCpfsAccessPoints": ("List a file system's access points, oldest first; RootPathStatus is Ready, NotExist or Unknown (not a directory)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("AccessPointId", S, False, None, "Only this one"),
        ("Tag.N.Key", S, False, None, "Only those carrying every given tag"), ("Tag.N.Value", S, False, None, ""),
        ("PageNumber", I, False, None, "From 1"), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "AccessPoints": "AccessPoints"}),
    "ModifyCpfsAccessPoint": ("Change an access point's description", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("AccessPointId", S, True, "ap-0123456789abcdef", ""),
        ("Description", S, False, None, ""),
    ], {}),
    "DeleteCpfsAccessPoint": ("Delete an access point: new mounts through it are refused, mounts made keep working until unmounted", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("AccessPointId", S, True, "ap-0123456789abcdef", ""),
    ], {}),
    "DescribeMountedClients": ("Clients of the mount target active in the last minute (each keeps a watch outstanding, so an idle mount counts), most recently mounted first; besides ClientIP, this service adds SessionId, MountTargetDomain, AccessPointId, MountTime and LastActiveTime", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("MountTargetDomain", S, True, "cpfs-0123456789abcdef-abcdef.cn-hangzhou.cpfs.nas.localhost", ""),
        ("ClientIP", S, False, None, "Only this address"),
        ("PageNumber", I, False, None, "From 1"), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "Clients": "MountedClients"}),
    "AddClientToBlackList": ("Fence a client address off the file system: refused at mount and on every request, every capability of the file system issued before revoked on the nodes (others renew theirs); EVICTING, then EVICTED once every serving node holds the revocation (a few seconds): no write from it lands after", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("ClientIP", S, True, "10.0.0.7", "IPv4 or IPv6"),
        ("ClientToken", S, False, None, "Idempotency token"),
    ], {}),
    "RemoveClientFromBlackList": ("Lift a fence: the client may mount and work again (InvalidClientIP.NotFound when not fenced and no ClientToken)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("ClientIP", S, True, "10.0.0.7", ""),
        ("ClientToken", S, False, None, ""),
    ], {}),
    "DescribeBlackListClients": ("Fenced addresses and their state, as a JSON string: {\"10.0.0.7\":\"EVICTED\"}", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("ClientIP", S, False, None, "Only this address"),
    ], {"Clients": S}),
    "SetUserQuota": ("Extension (not in the NAS reference): hard limits on the bytes and files one uid or gid owns in the file system, as Lustre and JuiceFS have them; the owner of each inode is charged whoever writes, callers other than root get EDQUOT past a limit, a chown or chgrp by a non-root caller that would pass the new owner's limit is refused. Replaces earlier limits; may be below the current usage (no growth until enough is freed). Answered once the metadata service enforces it", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("UserType", S, True, "Uid", "Uid or Gid"),
        ("UserId", I, True, "1000", "0-4294967294"),
        ("SizeLimit", I, False, None, "Bytes (at least one of SizeLimit and FileCountLimit)"),
        ("FileCountLimit", I, False, None, "Files and directories"),
    ], {}),
    "DescribeUserQuotas": ("Extension: the file system's user and group quotas with usage (uids first, then gids, by id)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("UserType", S, False, None, "Uid or Gid: only those"),
        ("UserId", I, False, None, "Only this id (needs UserType)"),
        ("PageNumber", I, False, None, "From 1"), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"FileSystemId": S, "TotalCount": I, "PageNumber": I, "PageSize": I, "UserQuotas": "UserQuotas"}),
    "CancelUserQuota": ("Extension: remove one uid's or gid's limits (InvalidUserQuota.NotFound when it has none)", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("UserType", S, True, "Uid", "Uid or Gid"),
        ("UserId", I, True, "1000", ""),
    ], {}),
    "DescribeFileSystemStatistics": ("The caller's file systems counted per type (TotalCount, MeteredSize in bytes, ExpiredCount: subscriptions past their expiry, ExpiringCount: subscriptions expiring within 7 days), and a page of the file systems", [
        ("PageNumber", I, False, None, "From 1"), ("PageSize", I, False, None, "1-100, default 10"),
    ], {"TotalCount": I, "PageNumber": I, "PageSize": I, "FileSystemStatistics": "FileSystemStatistics",
        "FileSystems": "StatisticsFileSystems"}),
    "DescribeFileSystemTimeSeries": ("Extension (not in the NAS reference): one file system's I/O as its clients were served (each request counted once, by the node that served it) and its capacity used, in buckets of Period seconds aligned to the epoch; kept by the service at one-minute resolution for 7 days. Buckets with no sample are left out", [
        ("FileSystemId", S, True, "cpfs-0123456789abcdef", ""),
        ("StartTime", S, False, None, "yyyy-MM-ddTHH:mm:ssZ; default EndTime minus one hour"),
        ("EndTime", S, False, None, "yyyy-MM-ddTHH:mm:ssZ, excluded; default now"),
        ("Period", I, False, None, "Seconds per bucket: 60 (default), 300, 900 or 3600; at most 1440 buckets"),
    ], {"FileSystemId": S, "Period": I, "StartTime": S, "EndTime": S, "Datapoints": "Datapoints"}),
}

# Actions of the NAS API that answer UnsupportedOperation.
NOT_YET_SUPPORTED = [
    "DescribeStoragePackages", "CreateDataFlow", "OpenNasService",
]

def obj(props, required=()):
    o = {"type": "object", "properties": props}
    if required:
        o["required"] = list(required)
    return o

def wrap(outer, inner, item):
    return obj({inner: {"type": "array", "items": item}})

TAGS = wrap("Tags", "Tag", obj({"Key": {"type": S}, "Value": {"type": S}}))
SCHEMAS = {
    "Error": obj({"RequestId": {"type": S}, "HostId": {"type": S}, "Code": {"type": S}, "Message": {"type": S}, "Recommend": {"type": S}},
                 ["RequestId", "Code", "Message"]),
    "MountTargetExtra": obj({"DualStackMountTargetDomain": {"type": S}}),
    "FileSystems": wrap("FileSystems", "FileSystem", obj({
        **{k: {"type": S} for k in ["FileSystemId", "FileSystemType", "Description", "Status", "RegionId", "ZoneId",
                                    "ProtocolType", "StorageType", "ChargeType", "CreateTime", "ExpiredTime", "KMSKeyId",
                                    "Version", "VpcId", "ResourceGroupId", "AccessPointCount"]},
        **{k: {"type": I} for k in ["Capacity", "Bandwidth", "MeteredSize", "MeteredIASize", "MeteredArchiveSize",
                                    "EncryptType", "ReadIops", "WriteIops"]},
        "VswIds": wrap("VswIds", "VswId", {"type": S}),
        "MountTargets": wrap("MountTargets", "MountTarget", obj({
            **{k: {"type": S} for k in ["MountTargetDomain", "DualStackMountTargetDomain", "NetworkType", "VpcId", "VswId", "Status", "AccessGroupName"]},
            "Tags": TAGS})),
        "Packages": wrap("Packages", "Package", obj({"PackageId": {"type": S}})),
        "Tags": TAGS,
        "SupportedFeatures": wrap("SupportedFeatures", "SupportedFeature", {"type": S}),
        "Options": obj({k: {"type": B} for k in ["EnableOplock", "EnableABE", "EnableDataInsight", "VscAccessPointAccessOnly"]}),
        "AutoUpgradeConfig": obj({"enabled": {"type": B}, "capacityUsedRatio": {"type": I}, "step": {"type": I}, "time": {"type": I}}),
        "Ldap": obj({k: {"type": S} for k in ["BindDN", "SearchBase", "URI"]}),
        # Extension: how well the data is protected now (failover, repair).
        "DataRedundancy": obj({
            "State": {"type": S, "enum": ["Healthy", "Repairing", "Degraded"]},
            **{k: {"type": I} for k in ["Replicas", "Chains", "DegradedChains", "SyncingChains",
                                        "RepairDoneBytes", "RepairTotalBytes", "RepairProgress"]}}),
    })),
    "MountTargets": wrap("MountTargets", "MountTarget", obj({
        **{k: {"type": S} for k in ["MountTargetDomain", "DualStackMountTargetDomain", "NetworkType", "VpcId", "VswId", "Status", "AccessGroup", "IPVersion"]},
        "AccessPointAccessOnly": {"type": B}, "Tags": TAGS})),
    "AccessGroups": wrap("AccessGroups", "AccessGroup", obj({
        **{k: {"type": S} for k in ["AccessGroupName", "AccessGroupType", "Description", "FileSystemType", "RegionId", "CreateTime"]},
        "RuleCount": {"type": I}, "MountTargetCount": {"type": I}})),
    "AccessRules": wrap("AccessRules", "AccessRule", obj({
        **{k: {"type": S} for k in ["AccessRuleId", "AccessGroupName", "SourceCidrIp", "Ipv6SourceCidrIp", "RWAccess", "UserAccess", "FileSystemType", "RegionId"]},
        "Priority": {"type": I},
        # Extension: the rule's InsecurePorts.
        "InsecurePorts": {"type": B}})),
    "TagResources": wrap("TagResources", "TagResource", obj({k: {"type": S} for k in ["ResourceId", "ResourceType", "TagKey", "TagValue"]})),
    "Regions": wrap("Regions", "Region", obj({k: {"type": S} for k in ["RegionId", "LocalName", "RegionEndpoint"]})),
    "Fileset": obj({
        **{k: {"type": S} for k in ["FsetId", "FileSystemId", "FileSystemPath", "Description", "CreateTime", "UpdateTime"]},
        "Status": {"type": S, "enum": ["CREATING", "CREATED", "RELEASING"]},
        "DeletionProtection": {"type": B}, "FileCountUsage": {"type": I}, "SpaceUsage": {"type": I},
        "Quota": obj({"SizeLimit": {"type": I}, "FileCountLimit": {"type": I}})}),
    # The item key really is "Entrie", as in the SDK models.
    "FilesetEntries": wrap("Entries", "Entrie", {"$ref": "#/components/schemas/Fileset"}),
    "AccessPoints": {"type": "array", "items": obj({
        **{k: {"type": S} for k in ["AccessPointId", "ARN", "FileSystemId", "RegionId", "Description", "CreateTime", "ModifyTime"]},
        "Status": {"type": S, "enum": ["Active", "Inactive", "Pending", "Deleting"]},
        "RootDirectory": obj({"RootPath": {"type": S}, "RootPathStatus": {"type": S, "enum": ["Ready", "NotExist", "Unknown"]}}),
        "Tags": {"type": "array", "items": obj({"Key": {"type": S}, "Value": {"type": S}})}})},
    "FileSystemStatistics": wrap("FileSystemStatistics", "FileSystemStatistic", obj({
        "FileSystemType": {"type": S},
        **{k: {"type": I} for k in ["TotalCount", "MeteredSize", "ExpiredCount", "ExpiringCount"]}})),
    "StatisticsFileSystems": wrap("FileSystems", "FileSystem", obj({
        **{k: {"type": S} for k in ["FileSystemId", "FileSystemType", "Description", "Status", "RegionId", "ZoneId",
                                    "ProtocolType", "StorageType", "ChargeType", "CreateTime", "ExpiredTime"]},
        **{k: {"type": I} for k in ["Capacity", "MeteredSize", "MeteredIASize"]},
        "Packages": wrap("Packages", "Package", obj({"PackageId": {"type": S}}))})),
    "Datapoints": wrap("Datapoints", "Datapoint", obj({
        "Timestamp": {"type": S, "description": "Start of the bucket"},
        **{k: {"type": I} for k in ["ReadOps", "WriteOps", "ReadBytes", "WriteBytes"]},
        **{k: {"type": "number"} for k in ["ReadIops", "WriteIops", "ReadBandwidth", "WriteBandwidth"]},
        "ReadLatencyUs": {"type": I, "description": "Mean time a node took to serve a read"},
        "WriteLatencyUs": {"type": I, "description": "Mean time the head took to serve a write, its replicas included"},
        "UsedBytes": {"type": I, "nullable": True, "description": "MeteredSize at the bucket's last sample; null when none fell in it"}})),
    "MountedClients": wrap("Clients", "Client", obj({k: {"type": S} for k in [
        "ClientIP", "SessionId", "MountTargetDomain", "AccessPointId", "MountTime", "LastActiveTime"]})),
    "UserQuotas": wrap("UserQuotas", "UserQuota", obj({
        "UserType": {"type": S, "enum": ["Uid", "Gid"]}, "UserId": {"type": S},
        **{k: {"type": I} for k in ["SizeLimit", "FileCountLimit", "SizeReal", "FileCountReal"]}})),
    "Zones": wrap("Zones", "Zone", obj({"ZoneId": {"type": S},
        "InstanceTypes": wrap("InstanceTypes", "InstanceType", obj({"StorageType": {"type": S}, "ProtocolType": {"type": S}}))})),
}

COMMON = [
    ("Action", True, "The action name (V1); V3 sends the x-acs-action header instead"),
    ("Version", True, "2017-06-26 (V1); V3 sends x-acs-version"),
    ("Format", False, "JSON (default) or XML, any case"),
    ("RegionId", False, "Defaults to the gateway's region"),
    ("AccessKeyId", False, "V1 signature"), ("Signature", False, "V1 signature"),
    ("SignatureMethod", False, "HMAC-SHA1"), ("SignatureVersion", False, "1.0"),
    ("SignatureNonce", False, "Unique per request within 15 minutes"), ("Timestamp", False, "yyyy-MM-ddTHH:mm:ssZ, within 15 minutes"),
]

ERRORS = {
    "400": "MissingParameter, MissingParameter.BindPassword, InvalidParameter.<Name>, InvalidLDAPConfig.Unreachable, InvalidLDAPConfig.AlreadyExists, InvalidFileset.AlreadyExists, InvalidLDAPConfig.SearchFailed, IncompleteSignature, SignatureDoesNotMatch, InvalidTimeStamp.Expired, InvalidTimeStamp.Format, SignatureNonceUsed, Throttling.User (with x-acs-retry-after), UnsupportedHTTPMethod, UnsupportedOperation",
    "403": "InvalidFileSystemStatus.Ordering, InvalidMountTargetStatus.Ordering, InvalidFilesetStatus.Ordering, OperationDenied, OperationDenied.DeletionProtection, OperationDenied.NestedFileset, QuotaExceeded.Fileset, QuotaExceeded.UserQuota, QuotaExceeded.AccessPoint, QuotaExceeded.BlackListClient",
    "404": "InvalidApi.NotFound, InvalidAccessKeyId.NotFound, InvalidFileSystem.NotFound, InvalidMountTarget.NotFound, InvalidAccessGroup.NotFound, InvalidAccessRule.NotFound, InvalidLDAPConfig.NotFound, InvalidFsetId.NotFound, InvalidUserQuota.NotFound, InvalidAccessPoint.NotFound, InvalidClientIP.NotFound",
    "408": "RequestTimeout (not answered within the server's deadline; retry)",
    "413": "InvalidParameter.BodyTooLarge",
    "500": "InternalError",
    "503": "ServiceUnavailable (load shed: too many requests in flight; retry)",
}

def common_parameters(action, version):
    """The V1 parameters every action takes: Action and Version are required
    (the gateway refuses a V1 call without either) and have one value each."""
    out = []
    for n, required, d in COMMON:
        schema = {"type": S}
        if n == "Action":
            schema["enum"] = [action]
        elif n == "Version":
            schema["enum"] = [version]
        out.append({"name": n, "in": "query", "required": required, "schema": schema,
                    "description": d.replace("2017-06-26", version)})
    return out

def operation(name, summary, params, reply):
    props = {"RequestId": {"type": S}}
    for field, t in reply.items():
        props[field] = {"$ref": f"#/components/schemas/{t}"} if t[0].isupper() else {"type": t}
    plist = common_parameters(name, "2017-06-26")
    for n, t, req, ex, desc in params:
        p = {"name": n, "in": "query", "required": req, "schema": {"type": t}, "description": desc}
        if ex is not None:
            p["example"] = ex
        plist.append(p)
    responses = {"200": {"description": "Success (never carries Code)", "content": {
        "application/json": {"schema": obj(props, ["RequestId"])}}}}
    for status, codes in ERRORS.items():
        responses[status] = {"description": codes, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op = {"operationId": name, "summary": summary, "parameters": plist, "responses": responses}
    return {"get": op, "post": {**op, "operationId": name + "Post"}}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "CPFS API (Alibaba Cloud NAS 2017-06-26 compatible)", "version": "2017-06-26",
             "description": "RPC-style API: GET or POST /, parameters in the query string or a form body, signed with V1 (HMAC-SHA1) or V3 (ACS3-HMAC-SHA256). Replies are JSON (default) or XML, always with RequestId."},
    "servers": [{"url": "http://127.0.0.1:8080"}],
    "paths": {f"/?Action={n}": operation(n, *spec) for n, spec in ACTIONS.items()},
    "components": {"schemas": SCHEMAS},
    "x-unsupported-actions": NOT_YET_SUPPORTED,
}

# BssOpenApi 2017-12-14: name: (summary, params, Data fields)
BSS_ACTIONS = {
    "QueryBillOverview": ("Monthly totals per subscription type and bill type", [
        ("BillingCycle", S, True, "2026-10", "YYYY-MM"),
        ("ProductCode", S, False, None, "nas (CPFS bills sit under NAS); another code gives no rows"),
        ("ProductType", S, False, None, ""),
        ("SubscriptionType", S, False, None, "Subscription or PayAsYouGo"),
        ("BillOwnerId", I, False, None, "Another owner than the caller gives no rows"),
    ], "Data.Items.Item[]: ProductCode, ProductDetail, CommodityCode, SubscriptionType, Item, Currency, PretaxGrossAmount, InvoiceDiscount, PretaxAmount, PaymentAmount, ... (numbers; RoundDownDiscount a string)"),
    "QueryBill": ("One row per order, or per hour of a pay-as-you-go file system", [
        ("BillingCycle", S, True, "2026-10", "YYYY-MM"),
        ("Type", S, False, None, "SubscriptionOrder, PayAsYouGoBill, Refund, Adjustment"),
        ("ProductCode", S, False, None, ""), ("ProductType", S, False, None, ""),
        ("SubscriptionType", S, False, None, ""),
        ("IsHideZeroCharge", B, False, None, "Hide rows whose PretaxGrossAmount is 0"),
        ("IsDisplayLocalCurrency", B, False, None, "Accepted; amounts are in the price book's currency"),
        ("PageNum", I, False, None, "From 1"), ("PageSize", I, False, None, "1-300, default 20"),
        ("OwnerId", I, False, None, ""), ("BillOwnerId", I, False, None, ""),
    ], "Data.{PageNum, PageSize, TotalCount, Items.Item[]: RecordID, Item, Status, UsageStartTime, UsageEndTime, PaymentTime, amounts}"),
    "QueryInstanceBill": ("Per file system (or plan), optionally per billing item and per day", [
        ("BillingCycle", S, True, "2026-10", "YYYY-MM"),
        ("Granularity", S, False, None, "MONTHLY (default) or DAILY"),
        ("BillingDate", S, False, None, "YYYY-MM-DD, required with DAILY"),
        ("IsBillingItem", B, False, None, "One row per billing item (size, bandwidth, subscription, ...)"),
        ("IsHideZeroCharge", B, False, None, ""),
        ("ProductCode", S, False, None, ""), ("ProductType", S, False, None, ""),
        ("SubscriptionType", S, False, None, ""),
        ("PageNum", I, False, None, ""), ("PageSize", I, False, None, "1-300, default 20"),
        ("OwnerId", I, False, None, ""), ("BillOwnerId", I, False, None, ""),
    ], "Data.{PageNum, PageSize, TotalCount, Items.Item[]: InstanceID, BillingItem, ListPrice, Usage, UsageUnit, DeductedByResourcePackage (strings), amounts (numbers)}"),
    "QueryResourcePackageInstances": ("The caller's resource plans", [
        ("ProductCode", S, False, None, ""),
        ("ExpiryTimeStart", S, False, None, "yyyy-MM-ddTHH:mm:ssZ"), ("ExpiryTimeEnd", S, False, None, ""),
        ("IncludePartner", B, False, None, ""),
        ("PageNum", I, False, None, ""), ("PageSize", I, False, None, ""), ("OwnerId", I, False, None, ""),
    ], "Page, PageSize, Total (integers) and Data.{PageNum, PageSize, TotalCount (strings), Instances.Instance[]: InstanceId, Status, TotalAmount, RemainingAmount (GiB*Hour, strings), EffectiveTime, ExpiryTime}"),
    "RenewInstance": ("Renew a Subscription file system (a stopped one runs again)", [
        ("ProductCode", S, True, "nas", "nas"),
        ("InstanceId", S, True, "cpfs-0123456789abcdef", "The file system"),
        ("RenewPeriod", I, True, "1", "Months: 1-9, 12, 24, 36"),
        ("ProductType", S, False, None, ""), ("ClientToken", S, False, None, "Idempotency token"),
        ("OwnerId", I, False, None, ""),
    ], "Data.OrderId (string)"),
}

BSS_ERRORS = {
    "400": "MissingParameter, MissingParameter.BindPassword, InvalidParameter.<Name>, signature and timestamp errors as for NAS",
    "403": "InvalidFileSystemStatus.Ordering (renewing a PayAsYouGo file system)",
    "404": "InvalidApi.NotFound, InvalidAccessKeyId.NotFound, InvalidFileSystem.NotFound",
    "408": "RequestTimeout (not answered within the server's deadline; retry)",
    "413": "InvalidParameter.BodyTooLarge",
    "500": "InternalError",
    "503": "ServiceUnavailable (load shed: too many requests in flight; retry)",
}

def bss_operation(name, summary, params, data):
    plist = common_parameters(name, "2017-12-14")
    for n, t, req, ex, desc in params:
        p = {"name": n, "in": "query", "required": req, "schema": {"type": t}, "description": desc}
        if ex is not None:
            p["example"] = ex
        plist.append(p)
    ok = obj({"RequestId": {"type": S}, "Success": {"type": B}, "Code": {"type": S}, "Message": {"type": S},
              "Data": {"type": "object", "description": data}}, ["RequestId", "Success", "Code", "Message"])
    responses = {"200": {"description": "Success: Success=true, Code=Success", "content": {"application/json": {"schema": ok}}}}
    for status, codes in BSS_ERRORS.items():
        responses[status] = {"description": codes, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op = {"operationId": name, "summary": summary, "parameters": plist, "responses": responses}
    return {"get": op, "post": {**op, "operationId": name + "Post"}}

bss_doc = {
    "openapi": "3.0.3",
    "info": {"title": "CPFS billing API (Alibaba Cloud BssOpenApi 2017-12-14 compatible)", "version": "2017-12-14",
             "description": "The billing actions on the same gateway as the NAS API: Version 2017-12-14 (query parameter or x-acs-version header) selects them. Same signatures (V1, V3). Amounts are JSON numbers except where the BssOpenApi models declare strings."},
    "servers": [{"url": "http://127.0.0.1:8080"}],
    "paths": {f"/?Action={n}": bss_operation(n, *spec) for n, spec in BSS_ACTIONS.items()},
    "components": {"schemas": {"Error": obj({"RequestId": {"type": S}, "Success": {"type": B}, "HostId": {"type": S}, "Code": {"type": S}, "Message": {"type": S}, "Recommend": {"type": S}},
                                            ["RequestId", "Success", "Code", "Message"])}},
}

if __name__ == "__main__":
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    stale = []
    for name, d, n in (("nas.json", doc, len(ACTIONS)), ("bssopenapi.json", bss_doc, len(BSS_ACTIONS))):
        out = os.path.join(here, name)
        text = json.dumps(d, indent=1, sort_keys=True) + "\n"
        if "--check" in sys.argv:
            try:
                with open(out) as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                stale.append(name)
            else:
                print(f"openapi/{name} is up to date")
        else:
            with open(out, "w") as f:
                f.write(text)
            print(f"wrote {out}: {n} actions")
    if stale:
        sys.exit(f"openapi/{', '.join(stale)} stale: run python3 openapi/build.py")
