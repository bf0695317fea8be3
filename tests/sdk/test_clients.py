"""Client fencing and mounted clients through the official SDKs
(AddClientToBlackList, DescribeBlackListClients, RemoveClientFromBlackList,
DescribeMountedClients): parameters, reply shapes (the blacklist is a JSON
string), errors, ClientToken idempotency and refusal across accounts. The
fence itself, under a running writer, is checked on a real mount in
tests/dataplane/test_fencing.py.
"""

import json
import subprocess
import uuid

import pytest

from test_filesets import fs_of  # noqa: F401  (fixture)
from test_sdk_compat import REGION, expect_error, make_client

pytestmark = [pytest.mark.filterwarnings("ignore:Unverified HTTPS request")]


@pytest.mark.parametrize("kind", ("core", "tea-v3", "pop-post"))
def test_fence_round_trip(kind, server, node_driver, fs_of):  # noqa: F811
    fs_id = fs_of()
    c = make_client(kind, "http", server, node_driver)
    # RegionId is a parameter of the Tea models; the core SDK sends the
    # client's region itself and has no setter for it.
    base = {"FileSystemId": fs_id} if kind == "core" else {"FileSystemId": fs_id, "RegionId": REGION}

    token = uuid.uuid4().hex
    c.call("AddClientToBlackList", {**base, "ClientIP": "10.0.0.7", "ClientToken": token})
    c.call("AddClientToBlackList", {**base, "ClientIP": "10.0.0.7", "ClientToken": token})
    c.call("AddClientToBlackList", {**base, "ClientIP": "fd00::8", "ClientToken": uuid.uuid4().hex})
    body = c.call("DescribeBlackListClients", base)
    states = json.loads(body["Clients"])
    assert set(states) == {"10.0.0.7", "fd00::8"}, body
    assert set(states.values()) <= {"EVICTING", "EVICTED"}, body
    body = c.call("DescribeBlackListClients", {**base, "ClientIP": "10.0.0.7"})
    assert list(json.loads(body["Clients"])) == ["10.0.0.7"], body

    err = expect_error(c.call, "AddClientToBlackList",
                       {**base, "ClientIP": "10.0.0.300", "ClientToken": uuid.uuid4().hex})
    assert err.code == "InvalidParameter.ClientIP", err

    c.call("RemoveClientFromBlackList", {**base, "ClientIP": "10.0.0.7", "ClientToken": uuid.uuid4().hex})
    assert list(json.loads(c.call("DescribeBlackListClients", base)["Clients"])) == ["fd00::8"]

    body = c.call("DescribeMountedClients", {**base, "MountTargetDomain": "none.example"})
    assert body["TotalCount"] == 0 and body["Clients"]["Client"] == [], body
    assert body["PageNumber"] == 1 and body["PageSize"] == 10, body


def test_missing_parameters_and_other_accounts(server, node_driver, fs_of):  # noqa: F811
    fs_id = fs_of()
    c = make_client("tea-v3", "http", server, node_driver)
    err = expect_error(c.call, "DescribeMountedClients", {"FileSystemId": fs_id, "RegionId": REGION})
    assert err.code == "MissingParameter" and "MountTargetDomain" in (err.message or ""), err
    err = expect_error(c.call, "RemoveClientFromBlackList",
                       {"FileSystemId": fs_id, "RegionId": REGION, "ClientIP": "10.1.1.1"})
    assert (err.code, err.status) == ("InvalidClientIP.NotFound", 404), err
    # With a ClientToken it may be the retry of a removal that succeeded.
    c.call("RemoveClientFromBlackList", {"FileSystemId": fs_id, "RegionId": REGION,
                                         "ClientIP": "10.1.1.1", "ClientToken": uuid.uuid4().hex})

    res = subprocess.run(
        [server.args[0], "account", "create", f"clother{uuid.uuid4().hex[:8]}",
         "--data-dir", str(server.workdir / "data")],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout)
    other = make_client("core", "http", server, node_driver,
                        key_id=acct["AccessKeyId"], secret=acct["AccessKeySecret"])
    for action, params in (
        ("AddClientToBlackList", {"ClientIP": "10.0.0.9", "ClientToken": uuid.uuid4().hex}),
        ("DescribeBlackListClients", {}),
        ("DescribeMountedClients", {"MountTargetDomain": "x.example"}),
    ):
        err = expect_error(other.call, action, {"FileSystemId": fs_id, **params})
        assert (err.code, err.status) == ("InvalidFileSystem.NotFound", 404), (action, err)
