//! File-system lifecycle through the real binary: create, Running, mount
//! targets, upgrade, tags, access groups, delete, and account isolation.

mod common;

use common::{Client, Server};
use std::process::Command;

#[test]
fn file_system_lifecycle() {
    let server = Server::start(&[]);
    let c = server.client();
    let id = c.create_fs("5120");
    assert!(id.starts_with("cpfs-") && id.len() == 21, "{id}");
    let fs = c.wait_running(&id);
    assert_eq!(fs["Capacity"], 5120);
    assert_eq!(fs["Bandwidth"], 500, "advance_100: 100 MB/s per TiB");
    assert_eq!(fs["ProtocolType"], "cpfs");
    assert_eq!(fs["StorageType"], "advance_100");
    assert_eq!(fs["ChargeType"], "PayAsYouGo");
    // 500 MB/s reaches the 5 TB / 2.5 Gbit/s tier of the advanced edition.
    assert_eq!(fs["ReadIops"], 350_000);
    assert_eq!(fs["WriteIops"], 100_000);
    assert_eq!(fs["ZoneId"], "cn-hangzhou-b");

    // Mount target: Pending -> Active.
    let mt = c.ok(
        "CreateMountTarget",
        &[
            ("FileSystemId", &id),
            ("NetworkType", "Vpc"),
            ("VpcId", "vpc-test"),
            ("VSwitchId", "vsw-test"),
        ],
    );
    let domain = mt["MountTargetDomain"].as_str().unwrap().to_string();
    assert!(
        domain.starts_with(&format!("{id}-"))
            && domain.ends_with(".cn-hangzhou.cpfs.nas.localhost"),
        "{domain}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = c.ok("DescribeMountTargets", &[("FileSystemId", &id)]);
        let m = &v["MountTargets"]["MountTarget"][0];
        assert_eq!(m["MountTargetDomain"], domain.as_str());
        assert_eq!(m["AccessGroup"], "DEFAULT_VPC_GROUP_NAME");
        if m["Status"] == "Active" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mount target stuck: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.ok(
        "ModifyMountTarget",
        &[
            ("FileSystemId", &id),
            ("MountTargetDomain", &domain),
            ("Status", "Inactive"),
        ],
    );
    let v = c.ok("DescribeFileSystems", &[("FileSystemId", &id)]);
    let m = &v["FileSystems"]["FileSystem"][0]["MountTargets"]["MountTarget"][0];
    assert_eq!(m["Status"], "Inactive");
    assert_eq!(m["AccessGroupName"], "DEFAULT_VPC_GROUP_NAME");

    // Upgrade: capacity grows, bandwidth follows, back to Running.
    c.ok(
        "UpgradeFileSystem",
        &[("FileSystemId", &id), ("Capacity", "10240")],
    );
    let fs = c
        .wait_fs(&id, "upgraded", |f| {
            f.is_some_and(|f| f["Status"] == "Running" && f["Capacity"] == 10240)
        })
        .unwrap();
    assert_eq!(fs["Bandwidth"], 1000);
    c.err(
        "UpgradeFileSystem",
        &[("FileSystemId", &id), ("Capacity", "5120")],
        "InvalidParameter.Capacity",
    );
    c.err(
        "UpgradeFileSystem",
        &[("FileSystemId", &id), ("Capacity", "12345")],
        "InvalidParameter.Capacity",
    );

    // Modify.
    c.ok(
        "ModifyFileSystem",
        &[
            ("FileSystemId", &id),
            ("Description", "renamed fs"),
            ("Options", "{\"EnableOplock\":true}"),
        ],
    );
    let fs = c.describe_fs(&id).unwrap();
    assert_eq!(fs["Description"], "renamed fs");
    assert_eq!(fs["Options"]["EnableOplock"], true);

    // Tags.
    c.ok(
        "TagResources",
        &[
            ("ResourceType", "filesystem"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
            ("Tag.2.Key", "team"),
            ("Tag.2.Value", "hpc"),
        ],
    );
    let v = c.ok(
        "ListTagResources",
        &[("ResourceType", "filesystem"), ("ResourceId.1", &id)],
    );
    assert_eq!(
        v["TagResources"]["TagResource"].as_array().unwrap().len(),
        2
    );
    let v = c.ok(
        "DescribeFileSystems",
        &[("Tag.1.Key", "env"), ("Tag.1.Value", "prod")],
    );
    assert_eq!(v["TotalCount"], 1);
    let v = c.ok(
        "DescribeFileSystems",
        &[("Tag.1.Key", "env"), ("Tag.1.Value", "dev")],
    );
    assert_eq!(v["TotalCount"], 0);
    c.ok(
        "UntagResources",
        &[
            ("ResourceType", "filesystem"),
            ("ResourceId.1", &id),
            ("TagKey.1", "env"),
        ],
    );
    let fs = c.describe_fs(&id).unwrap();
    assert_eq!(fs["Tags"]["Tag"].as_array().unwrap().len(), 1);
    assert_eq!(fs["Tags"]["Tag"][0]["Key"], "team");

    // Delete: mount target, then the file system; both disappear.
    c.ok(
        "DeleteMountTarget",
        &[("FileSystemId", &id), ("MountTargetDomain", &domain)],
    );
    c.ok("DeleteFileSystem", &[("FileSystemId", &id)]);
    c.wait_fs(&id, "gone", |f| f.is_none());
    assert_eq!(
        c.err(
            "ModifyFileSystem",
            &[("FileSystemId", &id), ("Description", "again")],
            "InvalidFileSystem.NotFound"
        ),
        404
    );
    assert_eq!(
        c.err(
            "DeleteFileSystem",
            &[("FileSystemId", &id)],
            "InvalidFileSystem.NotFound"
        ),
        404
    );
}

#[test]
fn validation_dry_run_idempotency_and_paging() {
    let server = Server::start(&[]);
    let c = server.client();
    let base = [
        ("FileSystemType", "cpfs"),
        ("ProtocolType", "cpfs"),
        ("ZoneId", "cn-hangzhou-b"),
        ("VpcId", "vpc-test"),
        ("VSwitchId", "vsw-test"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = base
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v
    };
    // Grid validation with the offered values in the message.
    let (status, v) = c.call(
        "CreateFileSystem",
        &with(&[("StorageType", "standard"), ("Capacity", "3000")]),
    );
    assert_eq!(
        (status, v["Code"].as_str().unwrap()),
        (400, "InvalidParameter.Capacity")
    );
    assert!(v["Message"].as_str().unwrap().contains("2048"));
    c.err(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "standard"),
            ("Capacity", "5120"),
            ("Bandwidth", "1000"),
        ]),
        "InvalidParameter.Bandwidth",
    );
    c.err(
        "CreateFileSystem",
        &with(&[("StorageType", "turbo"), ("Capacity", "5120")]),
        "InvalidParameter.StorageType",
    );
    c.err(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "standard"),
            ("Capacity", "5120"),
            ("ZoneId", "cn-beijing-a"),
        ]),
        "InvalidParameter.ZoneId",
    );
    c.err(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "standard"),
            ("Capacity", "5120"),
            ("ChargeType", "Subscription"),
        ]),
        "InvalidParameter.Duration",
    );

    // Seed editions with explicit tiers and IOPS.
    let v = c.ok(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "standard"),
            ("Capacity", "10240"),
            ("Bandwidth", "312"),
        ]),
    );
    let std_id = v["FileSystemId"].as_str().unwrap().to_string();
    let fs = c.wait_running(&std_id);
    assert_eq!(
        (fs["ReadIops"].as_i64(), fs["WriteIops"].as_i64()),
        (Some(150_000), Some(60_000))
    );
    // The Bandwidth extension of UpgradeFileSystem picks a higher tier.
    c.ok(
        "UpgradeFileSystem",
        &[
            ("FileSystemId", &std_id),
            ("Capacity", "30720"),
            ("Bandwidth", "625"),
        ],
    );
    let up = c
        .wait_fs(&std_id, "upgraded", |f| {
            f.is_some_and(|f| f["Status"] == "Running" && f["Capacity"] == 30720)
        })
        .unwrap();
    assert_eq!(
        (up["Bandwidth"].as_i64(), up["ReadIops"].as_i64()),
        (Some(625), Some(200_000))
    );
    c.err(
        "UpgradeFileSystem",
        &[
            ("FileSystemId", &std_id),
            ("Capacity", "51200"),
            ("Bandwidth", "100"),
        ],
        "InvalidParameter.Bandwidth",
    );
    let v = c.ok(
        "CreateFileSystem",
        &with(&[("StorageType", "advance"), ("Capacity", "2048")]),
    );
    let adv = c.wait_running(v["FileSystemId"].as_str().unwrap());
    assert_eq!(adv["Bandwidth"], 125, "lowest tier of 2 TB is 1 Gbit/s");

    // DryRun validates only.
    let v = c.ok(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "economic"),
            ("Capacity", "5120"),
            ("DryRun", "true"),
        ]),
    );
    assert_eq!(v["FileSystemId"], "");
    assert_eq!(c.ok("DescribeFileSystems", &[])["TotalCount"], 2);

    // The same ClientToken returns the same file system.
    let a = c.ok(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "economic"),
            ("Capacity", "5120"),
            ("ClientToken", "tok-1"),
        ]),
    );
    let b = c.ok(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "economic"),
            ("Capacity", "5120"),
            ("ClientToken", "tok-1"),
        ]),
    );
    assert_eq!(a["FileSystemId"], b["FileSystemId"]);
    assert_eq!(c.ok("DescribeFileSystems", &[])["TotalCount"], 3);

    // Subscription sets ExpiredTime one month out.
    let v = c.ok(
        "CreateFileSystem",
        &with(&[
            ("StorageType", "economic"),
            ("Capacity", "5120"),
            ("ChargeType", "Subscription"),
            ("Duration", "1"),
        ]),
    );
    let sub = c.wait_running(v["FileSystemId"].as_str().unwrap());
    assert_eq!(sub["ChargeType"], "Subscription");
    let created = sub["CreateTime"].as_str().unwrap();
    let expired = sub["ExpiredTime"].as_str().unwrap();
    assert!(
        expired > created && !expired.is_empty(),
        "{created} {expired}"
    );

    // Paging and type filters.
    for _ in 0..8 {
        c.create_fs("2048");
    }
    let p1 = c.ok(
        "DescribeFileSystems",
        &[("PageSize", "5"), ("PageNumber", "1")],
    );
    let p3 = c.ok(
        "DescribeFileSystems",
        &[("PageSize", "5"), ("PageNumber", "3")],
    );
    assert_eq!(p1["TotalCount"], 12);
    assert_eq!(p1["FileSystems"]["FileSystem"].as_array().unwrap().len(), 5);
    assert_eq!(p3["FileSystems"]["FileSystem"].as_array().unwrap().len(), 2);
    assert_eq!(p3["PageNumber"], 3);
    let none = c.ok("DescribeFileSystems", &[("FileSystemType", "extreme")]);
    assert_eq!(none["TotalCount"], 0);
    let all = c.ok(
        "DescribeFileSystems",
        &[("FileSystemType", "cpfs"), ("PageSize", "100")],
    );
    assert_eq!(
        all["FileSystems"]["FileSystem"].as_array().unwrap().len(),
        12
    );
}

#[test]
fn access_groups_and_rules() {
    let server = Server::start(&[]);
    let c = server.client();
    let v = c.ok("DescribeAccessGroups", &[]);
    assert_eq!(
        v["AccessGroups"]["AccessGroup"][0]["AccessGroupName"],
        "DEFAULT_VPC_GROUP_NAME"
    );
    c.err(
        "DeleteAccessGroup",
        &[("AccessGroupName", "DEFAULT_VPC_GROUP_NAME")],
        "OperationDenied",
    );
    c.ok(
        "CreateAccessGroup",
        &[
            ("AccessGroupName", "lab-net"),
            ("AccessGroupType", "Vpc"),
            ("Description", "lab"),
        ],
    );
    c.err(
        "CreateAccessGroup",
        &[("AccessGroupName", "lab-net"), ("AccessGroupType", "Vpc")],
        "InvalidAccessGroup.AlreadyExists",
    );
    let r = c.ok(
        "CreateAccessRule",
        &[
            ("AccessGroupName", "lab-net"),
            ("SourceCidrIp", "10.0.0.0/8"),
            ("RWAccessType", "RDONLY"),
            ("UserAccessType", "root_squash"),
            ("Priority", "5"),
        ],
    );
    let rule_id = r["AccessRuleId"].as_str().unwrap().to_string();
    c.err(
        "CreateAccessRule",
        &[
            ("AccessGroupName", "lab-net"),
            ("SourceCidrIp", "10.0.0.0/99"),
        ],
        "InvalidParameter.SourceCidrIp",
    );
    let v = c.ok("DescribeAccessRules", &[("AccessGroupName", "lab-net")]);
    let rule = &v["AccessRules"]["AccessRule"][0];
    assert_eq!(
        (
            rule["RWAccess"].as_str(),
            rule["UserAccess"].as_str(),
            rule["Priority"].as_i64()
        ),
        (Some("RDONLY"), Some("root_squash"), Some(5))
    );
    // Privileged source ports unless the rule opts out (the InsecurePorts
    // extension); a change of other fields keeps it.
    assert_eq!(rule["InsecurePorts"], false);
    c.err(
        "CreateAccessRule",
        &[
            ("AccessGroupName", "lab-net"),
            ("SourceCidrIp", "10.1.0.0/16"),
            ("InsecurePorts", "yes"),
        ],
        "InvalidParameter.InsecurePorts",
    );
    c.ok(
        "ModifyAccessRule",
        &[
            ("AccessGroupName", "lab-net"),
            ("AccessRuleId", &rule_id),
            ("InsecurePorts", "true"),
        ],
    );
    c.ok(
        "ModifyAccessRule",
        &[
            ("AccessGroupName", "lab-net"),
            ("AccessRuleId", &rule_id),
            ("RWAccessType", "RDWR"),
        ],
    );
    let v = c.ok(
        "DescribeAccessRules",
        &[("AccessGroupName", "lab-net"), ("AccessRuleId", &rule_id)],
    );
    assert_eq!(v["AccessRules"]["AccessRule"][0]["RWAccess"], "RDWR");
    assert_eq!(v["AccessRules"]["AccessRule"][0]["InsecurePorts"], true);
    let v = c.ok(
        "DescribeAccessRules",
        &[("AccessGroupName", "DEFAULT_VPC_GROUP_NAME")],
    );
    assert_eq!(v["AccessRules"]["AccessRule"][0]["InsecurePorts"], false);
    let v = c.ok("DescribeAccessGroups", &[("AccessGroupName", "lab-net")]);
    assert_eq!(v["AccessGroups"]["AccessGroup"][0]["RuleCount"], 1);

    // A mount target using the group keeps it from being deleted.
    let id = c.create_fs("2048");
    c.wait_running(&id);
    let mt = c.ok(
        "CreateMountTarget",
        &[
            ("FileSystemId", &id),
            ("NetworkType", "Vpc"),
            ("VpcId", "v"),
            ("VSwitchId", "s"),
            ("AccessGroupName", "lab-net"),
        ],
    );
    c.err(
        "CreateMountTarget",
        &[
            ("FileSystemId", &id),
            ("NetworkType", "Vpc"),
            ("VpcId", "v"),
            ("VSwitchId", "s"),
            ("AccessGroupName", "nope-group"),
        ],
        "InvalidAccessGroup.NotFound",
    );
    c.err(
        "DeleteAccessGroup",
        &[("AccessGroupName", "lab-net")],
        "OperationDenied",
    );
    c.ok(
        "DeleteMountTarget",
        &[
            ("FileSystemId", &id),
            (
                "MountTargetDomain",
                mt["MountTargetDomain"].as_str().unwrap(),
            ),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.ok("DescribeMountTargets", &[("FileSystemId", &id)])["TotalCount"] != 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.ok(
        "DeleteAccessRule",
        &[("AccessGroupName", "lab-net"), ("AccessRuleId", &rule_id)],
    );
    c.err(
        "DeleteAccessRule",
        &[("AccessGroupName", "lab-net"), ("AccessRuleId", &rule_id)],
        "InvalidAccessRule.NotFound",
    );
    c.ok("DeleteAccessGroup", &[("AccessGroupName", "lab-net")]);
    c.err(
        "DescribeAccessRules",
        &[("AccessGroupName", "lab-net")],
        "InvalidAccessGroup.NotFound",
    );
}

#[test]
fn accounts_see_only_their_own_resources() {
    let server = Server::start(&[]);
    let alice = server.client();
    let id = alice.create_fs("2048");
    alice.wait_running(&id);

    // `cpfs account create` against the same store as the running server.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cpfs"));
    cmd.args(["account", "create", "bob"]);
    let store_args = server.admin_args();
    cmd.args(store_args);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob_key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bob = Client::new(
        server.port,
        bob_key["AccessKeyId"].as_str().unwrap(),
        bob_key["AccessKeySecret"].as_str().unwrap(),
    );
    assert!(bob_key["AccountId"].is_string());

    // Bob sees nothing, and alice's id answers exactly as a missing one.
    assert_eq!(bob.ok("DescribeFileSystems", &[])["TotalCount"], 0);
    assert_eq!(
        bob.ok("DescribeFileSystems", &[("FileSystemId", &id)])["TotalCount"],
        0
    );
    let (s1, theirs) = bob.call("DeleteFileSystem", &[("FileSystemId", &id)]);
    let missing = "cpfs-0000000000000000";
    let (s2, absent) = bob.call("DeleteFileSystem", &[("FileSystemId", missing)]);
    assert_eq!((s1, theirs["Code"].clone()), (s2, absent["Code"].clone()));
    assert_eq!(
        theirs["Message"].as_str().unwrap().replace(&id, "X"),
        absent["Message"].as_str().unwrap().replace(missing, "X")
    );
    bob.err(
        "UpgradeFileSystem",
        &[("FileSystemId", &id), ("Capacity", "5120")],
        "InvalidFileSystem.NotFound",
    );
    bob.err(
        "CreateMountTarget",
        &[
            ("FileSystemId", &id),
            ("NetworkType", "Vpc"),
            ("VpcId", "v"),
            ("VSwitchId", "s"),
        ],
        "InvalidFileSystem.NotFound",
    );
    bob.err(
        "TagResources",
        &[
            ("ResourceType", "filesystem"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ],
        "InvalidFileSystem.NotFound",
    );
    // Alice's file system is untouched.
    assert_eq!(alice.describe_fs(&id).unwrap()["Status"], "Running");

    // A second account of the same name is refused.
    let mut again = Command::new(env!("CARGO_BIN_EXE_cpfs"));
    again
        .args(["account", "create", "bob"])
        .args(server.admin_args());
    assert!(!again.output().unwrap().status.success());
}

#[test]
fn regions_zones_and_xml() {
    let server = Server::start(&["--region", "eu-test-1", "--zones", "eu-test-1a,eu-test-1b"]);
    let c = server.client();
    let v = c.ok("DescribeRegions", &[]);
    assert_eq!(v["Regions"]["Region"][0]["RegionId"], "eu-test-1");
    let v = c.ok(
        "DescribeZones",
        &[("RegionId", "eu-test-1"), ("FileSystemType", "cpfs")],
    );
    let zones: Vec<&str> = v["Zones"]["Zone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["ZoneId"].as_str().unwrap())
        .collect();
    assert_eq!(zones, vec!["eu-test-1a", "eu-test-1b"]);
    assert!(v["Zones"]["Zone"][0]["InstanceTypes"]["InstanceType"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["StorageType"] == "advance_200"));
    c.err(
        "DescribeZones",
        &[("RegionId", "cn-hangzhou")],
        "InvalidParameter.RegionId",
    );

    // XML on success and on error.
    let mut p = c.common("DescribeRegions");
    p.retain(|(k, _)| k != "Format");
    p.push(("Format".into(), "xml".into()));
    c.sign("GET", &mut p);
    let (status, body) = c.send(&p);
    assert_eq!(status, 200);
    assert!(
        body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeRegionsResponse>"),
        "{body}"
    );
    assert!(
        body.contains("<Regions><Region>") && body.contains("<RegionId>eu-test-1</RegionId>"),
        "{body}"
    );
    let mut p = c.common("DescribeFileSystems");
    p.retain(|(k, _)| k != "Format");
    p.push(("Format".into(), "XML".into()));
    p.push(("PageSize".into(), "1000".into()));
    c.sign("GET", &mut p);
    let (status, body) = c.send(&p);
    assert_eq!(status, 400);
    assert!(
        body.contains("<Error>")
            && body.contains("<Code>InvalidParameter.PageSize</Code>")
            && body.contains("<RequestId>"),
        "{body}"
    );
}
