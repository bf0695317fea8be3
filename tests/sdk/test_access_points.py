"""CPFS access points through the official SDKs (the Tea client, V3 and V1
signatures, and pop-core; the core SDK has no Cpfs access point requests):
CreateCpfsAccessPoint, DescribeCpfsAccessPoints, ModifyCpfsAccessPoint and
DeleteCpfsAccessPoint with the models' parameters and reply shapes, errors,
paging, and refusal across accounts. Mounting through one is checked on a
real mount in tests/dataplane/test_access_points.py.
"""

import json
import re
import subprocess
import uuid

import pytest

from test_filesets import fs_of  # noqa: F401  (fixture)
from test_sdk_compat import REGION, expect_error, make_client

pytestmark = [pytest.mark.filterwarnings("ignore:Unverified HTTPS request")]

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def shaped(kind, params):
    """Tea takes the struct and the tag list as maps, pop-core the wire names."""
    out = {}
    for k, v in params.items():
        if kind == "pop-post" and k == "RootDirectory":
            out["RootDirectory.RootPath"] = v["RootPath"]
        elif kind == "pop-post" and k == "Tag":
            for i, t in enumerate(v, 1):
                out[f"Tag.{i}.Key"], out[f"Tag.{i}.Value"] = t["Key"], t["Value"]
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("kind", ("tea-v3", "tea-v2", "pop-post"))
def test_access_point_lifecycle(kind, server, node_driver, fs_of):  # noqa: F811
    fs_id = fs_of()
    c = make_client(kind, "http", server, node_driver)

    def call(action, params):
        return c.call(action, shaped(kind, params))

    ap = call("CreateCpfsAccessPoint", {
        "FileSystemId": fs_id, "RegionId": REGION, "Description": "Team share",
        "RootDirectory": {"RootPath": "/team"}, "Tag": [{"Key": "env", "Value": "test"}],
    })["AccessPointId"]
    assert re.fullmatch(r"ap-[0-9a-f]{16}", ap), ap
    plain = call("CreateCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION})["AccessPointId"]

    body = call("DescribeCpfsAccessPoints", {"FileSystemId": fs_id, "RegionId": REGION})
    assert body["TotalCount"] == 2, body
    first = body["AccessPoints"][0]
    assert first["AccessPointId"] == ap and first["FileSystemId"] == fs_id, first
    assert first["RootDirectory"] == {"RootPath": "/team", "RootPathStatus": "NotExist"}, first
    assert first["Status"] == "Active" and first["Description"] == "Team share", first
    assert first["Tags"] == [{"Key": "env", "Value": "test"}], first
    assert ISO.match(first["CreateTime"]) and ISO.match(first["ModifyTime"]), first
    assert first["ARN"].endswith(f":accesspoint/{ap}"), first
    second = body["AccessPoints"][1]
    assert second["RootDirectory"] == {"RootPath": "/", "RootPathStatus": "Ready"}, second

    body = call("DescribeCpfsAccessPoints", {"FileSystemId": fs_id, "RegionId": REGION,
                                             "PageSize": 1, "PageNumber": 2})
    assert [a["AccessPointId"] for a in body["AccessPoints"]] == [plain], body

    call("ModifyCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION,
                                   "AccessPointId": ap, "Description": "Renamed share"})
    body = call("DescribeCpfsAccessPoints", {"FileSystemId": fs_id, "RegionId": REGION,
                                             "AccessPointId": ap})
    assert [a["Description"] for a in body["AccessPoints"]] == ["Renamed share"], body

    for params, code in (
        ({"RootDirectory": {"RootPath": "relative"}}, "InvalidParameter.RootDirectory"),
        ({"RootDirectory": {"RootPath": "/a/../b"}}, "InvalidParameter.RootDirectory"),
        ({"Description": "1bad"}, "InvalidParameter.Description"),
    ):
        err = expect_error(call, "CreateCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION, **params})
        assert err.code == code, (params, err)

    call("DeleteCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION, "AccessPointId": ap})
    err = expect_error(call, "DeleteCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION,
                                                       "AccessPointId": ap})
    assert (err.code, err.status) == ("InvalidAccessPoint.NotFound", 404), err
    body = call("DescribeCpfsAccessPoints", {"FileSystemId": fs_id, "RegionId": REGION})
    assert [a["AccessPointId"] for a in body["AccessPoints"]] == [plain], body


def test_another_account_cannot_see_or_use_them(server, node_driver, fs_of):  # noqa: F811
    fs_id = fs_of()
    owner = make_client("tea-v3", "http", server, node_driver)
    ap = owner.call("CreateCpfsAccessPoint", {"FileSystemId": fs_id, "RegionId": REGION})["AccessPointId"]
    res = subprocess.run(
        [server.args[0], "account", "create", f"apother{uuid.uuid4().hex[:8]}",
         "--data-dir", str(server.workdir / "data")],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout)
    other = make_client("pop-post", "http", server, node_driver,
                        key_id=acct["AccessKeyId"], secret=acct["AccessKeySecret"])
    for action, params in (
        ("DescribeCpfsAccessPoints", {"FileSystemId": fs_id}),
        ("DeleteCpfsAccessPoint", {"FileSystemId": fs_id, "AccessPointId": ap}),
        ("CreateCpfsAccessPoint", {"FileSystemId": fs_id}),
    ):
        err = expect_error(other.call, action, {"RegionId": REGION, **params})
        assert (err.code, err.status) == ("InvalidFileSystem.NotFound", 404), (action, err)
