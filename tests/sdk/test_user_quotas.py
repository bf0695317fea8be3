"""User and group quotas, a CPFS extension (SetUserQuota, DescribeUserQuotas,
CancelUserQuota), through the official SDKs' generic calls: the core SDK's
CommonRequest, the Tea client's call_api (V3 and V1 signatures) and
pop-core's request, as a caller of an action the SDK models do not list
would send them. Usage is checked on a real mount in
tests/dataplane/test_fileset_quotas.py.
"""

import json

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException as CoreServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from alibabacloud_tea_openapi import utils_models as tea_util_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException as TeaApiException
from alibabacloud_tea_openapi.utils import Utils as TeaUtils
from darabonba.runtime import RuntimeOptions

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION
from test_filesets import fs_of  # noqa: F401  (fixture)
from test_sdk_compat import ApiError, TeaClient, expect_error, make_client

pytestmark = [
    pytest.mark.filterwarnings("ignore:Unverified HTTPS request"),
]


class CoreCommon:
    """The core SDK's CommonRequest: any action by name."""

    def __init__(self, server):
        self.server = server
        self.acs = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION, auto_retry=False, timeout=20)

    def call(self, action, params):
        req = CommonRequest(domain=self.server.hostport("http"), version="2017-06-26",
                            action_name=action)
        req.set_protocol_type("http")
        req.set_method("POST")
        for k, v in params.items():
            req.add_query_param(k, str(v))
        try:
            body = json.loads(self.acs.do_action_with_exception(req))
        except CoreServerException as e:
            raise ApiError("core-common", e.get_error_code(), e.get_http_status(),
                           e.get_error_msg()) from None
        assert body.get("RequestId") and "Code" not in body, body
        return body


class TeaCommon:
    """The Tea client's call_api: any action by name (V3, or V1 with 'v2')."""

    def __init__(self, server, algorithm=None):
        self.tea = TeaClient(server, "http", algorithm)

    def call(self, action, params):
        req = tea_util_models.OpenApiRequest(query=TeaUtils.query({k: str(v) for k, v in params.items()}))
        p = tea_util_models.Params(action=action, version="2017-06-26", protocol="HTTP",
                                   pathname="/", method="POST", auth_type="AK", style="RPC",
                                   req_body_type="formData", body_type="json")
        try:
            resp = self.tea.nas.call_api(p, req, RuntimeOptions())
        except TeaApiException as e:
            raise ApiError("tea-common", e.code, e.status_code, e.message) from None
        body = resp["body"]
        assert body.get("RequestId"), body
        return body


@pytest.mark.parametrize("kind", ("core", "tea-v3", "tea-v2", "pop-post"))
def test_user_quotas_round_trip(kind, server, node_driver, fs_of):  # noqa: F811
    fs_id = fs_of()
    if kind == "core":
        c = CoreCommon(server)
    elif kind.startswith("tea"):
        c = TeaCommon(server, "v2" if kind == "tea-v2" else None)
    else:
        c = make_client(kind, "http", server, node_driver)

    c.call("SetUserQuota", {"FileSystemId": fs_id, "UserType": "Uid", "UserId": 1000,
                            "SizeLimit": 1 << 30, "FileCountLimit": 5000})
    c.call("SetUserQuota", {"FileSystemId": fs_id, "UserType": "Gid", "UserId": 100,
                            "FileCountLimit": 200})
    body = c.call("DescribeUserQuotas", {"FileSystemId": fs_id})
    assert body["TotalCount"] == 2, body
    quotas = body["UserQuotas"]["UserQuota"]
    assert quotas[0] == {"UserType": "Uid", "UserId": "1000", "SizeLimit": 1 << 30,
                         "FileCountLimit": 5000, "SizeReal": 0, "FileCountReal": 0}, quotas
    assert quotas[1]["UserType"] == "Gid" and quotas[1]["UserId"] == "100", quotas
    assert "SizeLimit" not in quotas[1], "no size limit was set"

    # Replacing a limit; filtering by type and id.
    c.call("SetUserQuota", {"FileSystemId": fs_id, "UserType": "Uid", "UserId": 1000,
                            "SizeLimit": 2 << 30})
    body = c.call("DescribeUserQuotas", {"FileSystemId": fs_id, "UserType": "Uid", "UserId": 1000})
    assert [q["SizeLimit"] for q in body["UserQuotas"]["UserQuota"]] == [2 << 30], body
    assert "FileCountLimit" not in body["UserQuotas"]["UserQuota"][0], "replaced whole"

    for params, code in (
        ({"UserType": "Project", "UserId": 1, "SizeLimit": 1}, "InvalidParameter.UserType"),
        ({"UserType": "Uid", "UserId": -1, "SizeLimit": 1}, "InvalidParameter.UserId"),
        ({"UserType": "Uid", "UserId": 1}, "InvalidParameter.SizeLimit"),
        ({"UserType": "Uid", "SizeLimit": 1}, "MissingParameter"),
    ):
        err = expect_error(c.call, "SetUserQuota", {"FileSystemId": fs_id, **params})
        assert err.code == code, (params, err)
    err = expect_error(c.call, "CancelUserQuota", {"FileSystemId": fs_id, "UserType": "Uid", "UserId": 7})
    assert (err.code, err.status) == ("InvalidUserQuota.NotFound", 404), err

    c.call("CancelUserQuota", {"FileSystemId": fs_id, "UserType": "Gid", "UserId": 100})
    body = c.call("DescribeUserQuotas", {"FileSystemId": fs_id})
    assert [q["UserType"] for q in body["UserQuotas"]["UserQuota"]] == ["Uid"], body

    err = expect_error(c.call, "DescribeUserQuotas", {"FileSystemId": "cpfs-00000000deadbeef"})
    assert (err.code, err.status) == ("InvalidFileSystem.NotFound", 404), err
