"""Filesets through the official SDKs: CreateFileset, DescribeFilesets,
GetFileset, ModifyFileset, DeleteFileset, SetFilesetQuota and
CancelFilesetQuota, with their parameters and reply shapes, error codes,
DryRun, ClientToken idempotency, paging and filters, and refusal across
accounts.

The server fixture allows 12 filesets per file system
(CPFS_FILESETS_PER_FILE_SYSTEM in conftest.py), so that a second page of
DescribeFilesets (MaxResults is at least 10) exists.
"""

import json
import re
import subprocess
import uuid

import pytest

from test_sdk_compat import (
    ApiError,
    CoreClient,
    TeaClient,
    ZONES,
    best_effort_cleanup,
    expect_error,
    make_client,
    poll,
    wait_fs,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Unverified HTTPS request"),
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
]

GIB = 1 << 30
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PLAIN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
KINDS = ("core", "tea-v3", "pop-post")


def shaped(kind, params):
    """The same call in each SDK's own shape: the core SDK takes structs
    and lists through setters (its DescribeFilesets setter really is
    set_Filterss), Tea takes maps, pop-core takes the flattened wire
    names."""
    out = {}
    for name, value in params.items():
        if name == "Quota" and kind == "pop-post":
            for k, v in value.items():
                out[f"Quota.{k}"] = v
        elif name == "Filters" and kind == "pop-post":
            for i, f in enumerate(value, 1):
                out[f"Filters.{i}.Key"] = f["Key"]
                out[f"Filters.{i}.Value"] = f["Value"]
        elif name == "Filters" and kind == "core":
            out["Filterss"] = value
        elif name == "Quota" and kind.startswith("tea"):
            # As the model's to_map orders it (the adapter compares).
            out[name] = dict(sorted(value.items()))
        else:
            out[name] = value
    return out


class Shaped:
    def __init__(self, kind, client):
        self.kind, self.client = kind, client

    def call(self, action, params):
        return self.client.call(action, shaped(self.kind, params))


@pytest.fixture
def fs_of(server):
    """Makes Running file systems (core SDK) and deletes them afterwards."""
    made = []

    def make():
        c = CoreClient(server, "http")
        body = c.call("CreateFileSystem", {
            "FileSystemType": "cpfs", "ProtocolType": "cpfs",
            "StorageType": "advance_100", "Capacity": 2048,
            "ZoneId": ZONES[0], "VpcId": "vpc-test", "VSwitchId": "vsw-test",
        })
        fs_id = body["FileSystemId"]
        made.append(fs_id)
        wait_fs(c, fs_id, "Running", lambda f: f.get("Status") == "Running")
        return fs_id

    yield make
    for fs_id in made:
        best_effort_cleanup(server, fs_id, None)


def entries(client, fs_id, **extra):
    body = client.call("DescribeFilesets", {"FileSystemId": fs_id, **extra})
    assert body.get("FileSystemId") == fs_id, body
    return body, (body.get("Entries") or {}).get("Entrie") or []


def wait_status(client, fs_id, fset_id, status):
    def check():
        _, items = entries(client, fs_id)
        mine = [e for e in items if e["FsetId"] == fset_id]
        return bool(mine) and mine[0]["Status"] == status, items
    return [e for e in poll(f"{fset_id} {status}", check) if e["FsetId"] == fset_id][0]


def wait_gone(client, fs_id, fset_id):
    def check():
        _, items = entries(client, fs_id)
        return all(e["FsetId"] != fset_id for e in items), items
    poll(f"{fset_id} released", check)


@pytest.mark.parametrize("kind", KINDS)
def test_fileset_lifecycle(kind, server, node_driver, fs_of):
    fs_id = fs_of()
    c = Shaped(kind, make_client(kind, "http", server, node_driver))
    path = f"/proj-{kind}/"

    # DryRun checks and records nothing.
    body = c.call("CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": path, "DryRun": True})
    assert not body.get("FsetId"), body
    assert entries(c, fs_id)[1] == []

    token = uuid.uuid4().hex
    create = {
        "FileSystemId": fs_id, "FileSystemPath": path, "Description": "Team data",
        "DeletionProtection": True, "ClientToken": token,
        "Quota": {"SizeLimit": 20 * GIB, "FileCountLimit": 20000},
    }
    fset = c.call("CreateFileset", create)["FsetId"]
    assert re.fullmatch(r"fset-[0-9a-f]{16}", fset), fset
    assert c.call("CreateFileset", create)["FsetId"] == fset, "the same ClientToken"

    e = wait_status(c, fs_id, fset, "CREATED")
    assert e["FileSystemId"] == fs_id and e["FileSystemPath"] == path, e
    assert e["Description"] == "Team data" and e["DeletionProtection"] is True, e
    assert (e["SpaceUsage"], e["FileCountUsage"]) == (0, 0), e
    assert e["Quota"] == {"SizeLimit": 20 * GIB, "FileCountLimit": 20000}, e
    assert ISO.match(e["CreateTime"]) and ISO.match(e["UpdateTime"]), e

    if kind != "core":   # the core SDK has no GetFilesetRequest
        data = c.call("GetFileset", {"FileSystemId": fs_id, "FsetId": fset})["Data"]
        assert data["FsetId"] == fset and data["FileSystemPath"] == path, data
        assert data["Status"] == "CREATED", data
        assert PLAIN.match(data["CreateTime"]), data

    # The reference's refusals.
    for bad_path, code in (
        (path + "sub/", "OperationDenied.NestedFileset"),
        (path, "InvalidFileset.AlreadyExists"),
        ("/no/such/parent/", "InvalidParameter.FileSystemPath"),
        ("/a/b/c/d/e/f/g/h/i/", "InvalidParameter.FileSystemPath"),
        ("relative/", "InvalidParameter.FileSystemPath"),
    ):
        err = expect_error(c.call, "CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": bad_path})
        assert err.code == code, (bad_path, err)
    err = expect_error(c.call, "CreateFileset", {
        "FileSystemId": fs_id, "FileSystemPath": "/small/", "Quota": {"SizeLimit": 5 * GIB}})
    assert err.code == "InvalidParameter.SizeLimit", err

    # Quotas: set (a dry run changes nothing), refused below the floor, cancelled.
    c.call("SetFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset, "SizeLimit": 30 * GIB, "DryRun": True})
    c.call("SetFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset,
                               "SizeLimit": 11 * GIB, "FileCountLimit": 10000,
                               "ClientToken": uuid.uuid4().hex})
    e = wait_status(c, fs_id, fset, "CREATED")
    assert e["Quota"] == {"SizeLimit": 11 * GIB, "FileCountLimit": 10000}, e
    err = expect_error(c.call, "SetFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset, "SizeLimit": GIB})
    assert err.code == "InvalidParameter.SizeLimit", err
    c.call("CancelFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset})
    assert wait_status(c, fs_id, fset, "CREATED")["Quota"] == {}

    # Deletion protection holds until ModifyFileset lifts it.
    err = expect_error(c.call, "DeleteFileset", {"FileSystemId": fs_id, "FsetId": fset})
    assert (err.code, err.status) == ("OperationDenied.DeletionProtection", 403), err
    c.call("ModifyFileset", {"FileSystemId": fs_id, "FsetId": fset,
                             "Description": "Released soon", "DeletionProtection": False})
    e = wait_status(c, fs_id, fset, "CREATED")
    assert (e["Description"], e["DeletionProtection"]) == ("Released soon", False), e
    c.call("DeleteFileset", {"FileSystemId": fs_id, "FsetId": fset, "DryRun": True})
    assert wait_status(c, fs_id, fset, "CREATED")
    c.call("DeleteFileset", {"FileSystemId": fs_id, "FsetId": fset})
    wait_gone(c, fs_id, fset)
    err = expect_error(c.call, "SetFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset, "SizeLimit": 20 * GIB})
    assert (err.code, err.status) == ("InvalidFsetId.NotFound", 404), err
    # The directory stays and can hold a fileset again.
    again = c.call("CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": path})["FsetId"]
    wait_status(c, fs_id, again, "CREATED")


def test_describe_pages_filters_sorts_and_counts(server, node_driver, fs_of):
    fs_id = fs_of()
    c = Shaped("tea-v3", TeaClient(server, "http"))
    ids = []
    for i in range(12):
        params = {"FileSystemId": fs_id, "FileSystemPath": f"/p{i:02d}/",
                  "Description": f"Set {i}"}
        if i % 3 == 0:
            params["Quota"] = {"SizeLimit": (10 + i) * GIB}
        ids.append(c.call("CreateFileset", params)["FsetId"])
    err = expect_error(c.call, "CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": "/p12/"})
    assert (err.code, err.status) == ("QuotaExceeded.Fileset", 403), err

    body, first = entries(c, fs_id, MaxResults=10)
    assert len(first) == 10 and body["NextToken"], body
    body, second = entries(c, fs_id, MaxResults=10, NextToken=body["NextToken"])
    assert len(second) == 2 and not body.get("NextToken"), body
    assert [e["FsetId"] for e in first + second] == ids, "oldest first, each once"

    _, some = entries(c, fs_id, Filters=[{"Key": "FsetIds", "Value": f"{ids[3]},{ids[5]}"}])
    assert sorted(e["FsetId"] for e in some) == sorted([ids[3], ids[5]])
    _, by_path = entries(c, fs_id, Filters=[{"Key": "FileSystemPath", "Value": "/p1"}])
    assert sorted(e["FileSystemPath"] for e in by_path) == ["/p10/", "/p11/"]
    _, with_quota = entries(c, fs_id, Filters=[{"Key": "QuotaExists", "Value": "true"}])
    assert len(with_quota) == 4
    _, desc = entries(c, fs_id, OrderByField="SizeLimit", SortOrder="desc",
                      Filters=[{"Key": "QuotaExists", "Value": "true"}])
    assert [e["Quota"]["SizeLimit"] for e in desc] == [19 * GIB, 16 * GIB, 13 * GIB, 10 * GIB]

    for params, code in (
        ({"MaxResults": 5}, "InvalidParameter.MaxResults"),
        ({"NextToken": "not-a-token"}, "InvalidParameter.NextToken"),
        ({"OrderByField": "Name"}, "InvalidParameter.OrderByField"),
        ({"Filters": [{"Key": "Color", "Value": "x"}]}, "InvalidParameter.Filters"),
    ):
        err = expect_error(lambda: entries(c, fs_id, **params))
        assert err.code == code, (params, err)


def test_another_account_sees_none_of_them(server, node_driver, fs_of):
    fs_id = fs_of()
    owner = TeaClient(server, "http")
    fset = owner.call("CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": "/mine/"})["FsetId"]
    res = subprocess.run(
        [server.args[0], "account", "create", f"other{uuid.uuid4().hex[:8]}",
         "--data-dir", str(server.workdir / "data")],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout)
    key_id, secret = acct["AccessKeyId"], acct["AccessKeySecret"]
    for kind in ("core", "tea-v3", "pop-post"):
        other = Shaped(kind, make_client(kind, "http", server, node_driver, key_id=key_id, secret=secret))
        for action, params in (
            ("DescribeFilesets", {"FileSystemId": fs_id}),
            ("CreateFileset", {"FileSystemId": fs_id, "FileSystemPath": "/theirs/"}),
            ("DeleteFileset", {"FileSystemId": fs_id, "FsetId": fset}),
            ("SetFilesetQuota", {"FileSystemId": fs_id, "FsetId": fset, "SizeLimit": 10 * GIB}),
        ):
            err = expect_error(other.call, action, params)
            assert (err.code, err.status) == ("InvalidFileSystem.NotFound", 404), (kind, action, err)
    _, mine = entries(owner, fs_id)
    assert [e["FsetId"] for e in mine] == [fset]


def test_missing_ids_are_named(server, node_driver):
    c = TeaClient(server, "http")
    for action in ("GetFileset", "DeleteFileset", "ModifyFileset", "SetFilesetQuota", "CancelFilesetQuota"):
        err = expect_error(c.call, action, {"FileSystemId": "cpfs-00000000deadbeef"})
        assert err.code == "MissingParameter" and "FsetId" in (err.message or ""), (action, err)
    err = expect_error(c.call, "DescribeFilesets", {"FileSystemId": "cpfs-00000000deadbeef"})
    assert err.code == "InvalidFileSystem.NotFound", err
