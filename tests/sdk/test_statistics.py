"""DescribeFileSystemStatistics through the official SDKs (core, Tea with
its reply model, pop-core): the account's file systems counted per type
and a page of them, in the reference's reply shape, scoped to the caller's
account; and the extension DescribeFileSystemTimeSeries through the core
SDK's CommonRequest (no SDK has a class for it). The I/O behind the series
is checked on a real mount in tests/dataplane/test_statistics.py.
"""

import json
import subprocess
import uuid

import pytest
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from conftest import REGION, ZONES
from test_sdk_compat import expect_error, make_client

pytestmark = [pytest.mark.filterwarnings("ignore:Unverified HTTPS request")]


def new_account(server):
    res = subprocess.run(
        [server.args[0], "account", "create", f"stats{uuid.uuid4().hex[:8]}",
         "--data-dir", str(server.workdir / "data")],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def create(client, **extra):
    return client.call("CreateFileSystem", {
        "FileSystemType": "cpfs", "ProtocolType": "cpfs",
        "StorageType": "advance_100", "Capacity": 2048,
        "ZoneId": ZONES[0], "VpcId": "vpc-test", "VSwitchId": "vsw-test", **extra,
    })["FileSystemId"]


@pytest.mark.parametrize("kind", ("core", "tea-v3", "pop-post"))
def test_statistics_count_the_callers_file_systems(kind, server, node_driver):
    acct = new_account(server)
    c = make_client(kind, "http", server, node_driver,
                    key_id=acct["AccessKeyId"], secret=acct["AccessKeySecret"])
    body = c.call("DescribeFileSystemStatistics", {})
    assert body["TotalCount"] == 0, body
    assert (body.get("FileSystemStatistics") or {}).get("FileSystemStatistic", []) == [], body

    payg = create(c)
    sub = create(c, ChargeType="Subscription", Duration=1)
    body = c.call("DescribeFileSystemStatistics", {"PageSize": 1, "PageNumber": 2})
    assert (body["TotalCount"], body["PageNumber"], body["PageSize"]) == (2, 2, 1), body
    [stat] = body["FileSystemStatistics"]["FileSystemStatistic"]
    assert stat["FileSystemType"] == "cpfs" and stat["TotalCount"] == 2, stat
    # A month's subscription is neither expired nor within a week of it.
    assert (stat["ExpiredCount"], stat["ExpiringCount"]) == (0, 0), stat
    assert stat["MeteredSize"] == 0, stat
    # A page at a time, every one listed once.
    [second] = body["FileSystems"]["FileSystem"]
    [first] = c.call("DescribeFileSystemStatistics", {"PageSize": 1})["FileSystems"]["FileSystem"]
    assert {first["FileSystemId"], second["FileSystemId"]} == {payg, sub}, (first, second)
    fs = first if first["FileSystemId"] == sub else second
    assert fs["ChargeType"] == "Subscription" and fs["ExpiredTime"].endswith("Z"), fs
    assert (fs["Capacity"], fs["FileSystemType"], fs["StorageType"]) == (2048, "cpfs", "advance_100"), fs
    assert fs["RegionId"] == REGION and fs["ZoneId"] == ZONES[0], fs
    assert fs["Packages"] == {"Package": []} or fs["Packages"] == {}, fs

    err = expect_error(c.call, "DescribeFileSystemStatistics", {"PageSize": 101})
    assert (err.code, err.status) == ("InvalidParameter.PageSize", 400), err

    for fs_id in (payg, sub):
        c.call("DeleteFileSystem", {"FileSystemId": fs_id})


def common(server, key, action, **params):
    req = CommonRequest(domain=server.hostport("http"), version="2017-06-26", action_name=action)
    req.set_method("POST")
    req.set_protocol_type("http")
    for name, value in params.items():
        req.add_query_param(name, str(value))
    client = AcsClient(key["AccessKeyId"], key["AccessKeySecret"], REGION, auto_retry=False, timeout=20)
    return client, req


def test_time_series_is_scoped_to_the_account(server):
    owner, other = new_account(server), new_account(server)
    client, req = common(server, owner, "CreateFileSystem", FileSystemType="cpfs", ProtocolType="cpfs",
                         StorageType="advance_100", Capacity=2048, ZoneId=ZONES[0],
                         VpcId="vpc-test", VSwitchId="vsw-test")
    fs_id = json.loads(client.do_action_with_exception(req))["FileSystemId"]

    client, req = common(server, owner, "DescribeFileSystemTimeSeries", FileSystemId=fs_id, Period=300)
    body = json.loads(client.do_action_with_exception(req))
    assert body["FileSystemId"] == fs_id and body["Period"] == 300, body
    assert body["StartTime"].endswith("Z") and body["EndTime"].endswith("Z"), body
    assert isinstance(body["Datapoints"]["Datapoint"], list), body

    from aliyunsdkcore.acs_exception.exceptions import ServerException
    client, req = common(server, other, "DescribeFileSystemTimeSeries", FileSystemId=fs_id)
    with pytest.raises(ServerException) as e:
        client.do_action_with_exception(req)
    assert e.value.get_error_code() == "InvalidFileSystem.NotFound", e.value
    assert e.value.get_http_status() == 404

    client, req = common(server, owner, "DeleteFileSystem", FileSystemId=fs_id)
    client.do_action_with_exception(req)
