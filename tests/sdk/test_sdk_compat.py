"""Official-SDK compatibility suite for the CPFS NAS API (2017-06-26).

Every official client is pointed at the real `cpfs serve` (see conftest.py),
over HTTP and over HTTPS:

  core       aliyun-python-sdk-core AcsClient + aliyunsdknas request classes (V1)
  tea-v3     alibabacloud-nas20170626 Tea client, default ACS3-HMAC-SHA256
  tea-v2     the same with signature_algorithm='v2' (HMAC-SHA1, V1)
  pop-post   @alicloud/pop-core (Node) with method POST (form body)
  pop-get    @alicloud/pop-core with GET (everything in the query)

Each client runs the whole CPFS lifecycle and the authentication refusals.
All five clients go through the small adapters below, which turn an SDK's
success into a dict with the wire (PascalCase) field names and an SDK's
error into ApiError(code, status).
"""

import importlib
import json
import re
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION, ZONES

# A missing SDK is a failure, never a skip.
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.acs_exception.exceptions import ServerException as CoreServerException
from aliyunsdkcore.utils import parameter_helper as core_helper
from alibabacloud_tea_openapi import models as tea_openapi_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException as TeaApiException
from alibabacloud_tea_openapi.utils import Utils as TeaUtils
from alibabacloud_nas20170626.client import Client as TeaNasClient
from alibabacloud_nas20170626 import models as tea_nas_models
from darabonba.runtime import RuntimeOptions

# Self-signed HTTPS on purpose: urllib3 (also the copy vendored in the core
# SDK) warns on every unverified call.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Unverified HTTPS request"),
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
]

SCHEMES = ("http", "https")
CLIENT_KINDS = ("core", "tea-v3", "tea-v2", "pop-post", "pop-get")

POLL_DEADLINE_S = 20.0
POLL_INTERVAL_S = 0.2

WRONG_SECRET = "thisIsNotTheSecret/+=0"
UNKNOWN_KEY_ID = "LTAI5tCpfsUnknownKey99"


class ApiError(Exception):
    """An error reply of the API, as one SDK surfaced it."""

    def __init__(self, client, code, status, message, request_id=None, data=None):
        super().__init__(f"[{client}] {code} (HTTP {status}): {message}")
        self.client = client
        self.code = code
        self.status = status
        self.message = message
        self.request_id = request_id
        self.data = data


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def stale_timestamp(minutes=20):
    t = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce():
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------

class CoreClient:
    """aliyun-python-sdk-core: AcsClient + the generated request classes."""

    def __init__(self, server, scheme, key_id=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
        self.name = f"core/{scheme}"
        self.server = server
        self.scheme = scheme
        kwargs = dict(auto_retry=False, timeout=20, connect_timeout=5)
        if scheme == "https":
            kwargs["verify"] = False
        self.acs = AcsClient(key_id, secret, REGION, **kwargs)
        self.last_raw = None

    def call(self, action, params):
        module = importlib.import_module(f"aliyunsdknas.request.v20170626.{action}Request")
        req = getattr(module, f"{action}Request")()
        req.set_endpoint(self.server.hostport(self.scheme))
        req.set_protocol_type(self.scheme)
        for name, value in params.items():
            setter = getattr(req, f"set_{name}", None)
            assert setter is not None, f"{action}Request has no setter for {name}"
            setter(value)
        try:
            raw = self.acs.do_action_with_exception(req)
        except CoreServerException as e:
            raise ApiError(self.name, e.get_error_code(), e.get_http_status(),
                           e.get_error_msg(), e.get_request_id()) from None
        self.last_raw = raw
        body = json.loads(raw)
        # A success reply must not carry Code (pop-core would throw on it).
        assert "Code" not in body, f"{action} success reply contains Code: {raw!r}"
        assert body.get("RequestId"), f"{action} success reply has no RequestId: {raw!r}"
        return body


class TeaClient:
    """alibabacloud-nas20170626 (Tea), V3 by default or V1 with 'v2'."""

    def __init__(self, server, scheme, signature_algorithm=None,
                 key_id=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
        self.name = f"tea-{signature_algorithm or 'v3'}/{scheme}"
        cfg = tea_openapi_models.Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=server.hostport(scheme),
            protocol=scheme,
            region_id=REGION,
            signature_algorithm=signature_algorithm,
            read_timeout=20000,
            connect_timeout=5000,
        )
        self.nas = TeaNasClient(cfg)
        self.runtime = RuntimeOptions(ignore_ssl=(scheme == "https"))

    def call(self, action, params):
        req = getattr(tea_nas_models, f"{action}Request")().from_map(dict(params))
        # from_map silently drops names the model does not know: catch typos.
        mapped = req.to_map()
        dropped = [k for k, v in params.items() if k not in mapped or str(mapped[k]) != str(v)]
        assert not dropped, f"{action}Request does not carry {dropped}"
        method = getattr(self.nas, f"{snake(action)}_with_options", None)
        if method is None:
            # The generator folds acronyms: CreateLDAPConfig -> create_ldapconfig.
            want = f"{action}WithOptions".lower()
            names = [n for n in dir(self.nas) if n.replace("_", "") == want]
            assert len(names) == 1, f"no single Tea method for {action}: {names}"
            method = getattr(self.nas, names[0])
        try:
            resp = method(req, self.runtime)
        except TeaApiException as e:
            raise ApiError(self.name, e.code, e.status_code, e.message,
                           getattr(e, "request_id", None), e.data) from None
        assert resp.status_code == 200, f"{action}: HTTP {resp.status_code}"
        body = resp.body.to_map()
        assert body.get("RequestId"), f"{action} success reply has no RequestId: {body}"
        return body


class PopCoreClient:
    """@alicloud/pop-core through tests/sdk/node/popcore_test.js."""

    def __init__(self, server, scheme, node_driver, method,
                 key_id=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
        self.name = f"pop-{method.lower()}/{scheme}"
        self.node, self.script = node_driver
        self.server = server
        self.scheme = scheme
        self.method = method
        self.key_id = key_id
        self.secret = secret
        # Set by tests that need a fixed nonce / an old Timestamp.
        self.nonce = None
        self.timestamp = None

    def call(self, action, params):
        payload = {
            "endpoint": self.server.url(self.scheme),
            "https": self.scheme == "https",
            "accessKeyId": self.key_id,
            "accessKeySecret": self.secret,
            "action": action,
            "params": params,
            "method": self.method,
        }
        if self.nonce:
            payload["nonce"] = self.nonce
        if self.timestamp:
            payload["timestamp"] = self.timestamp
        res = subprocess.run([self.node, str(self.script)], input=json.dumps(payload),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"popcore_test.js failed ({res.returncode}):\n{res.stderr}"
        lines = res.stdout.strip().splitlines()
        assert lines, f"popcore_test.js printed nothing; stderr:\n{res.stderr}"
        out = json.loads(lines[-1])
        if out["ok"]:
            # pop-core takes any reply without Code as success, even a 4xx.
            assert out["status"] == 200, f"{action}: pop-core success with HTTP {out['status']}: {out['body']}"
            assert out["body"].get("RequestId"), f"{action} success reply has no RequestId: {out['body']}"
            return out["body"]
        if out.get("transport"):
            raise AssertionError(f"[{self.name}] {action}: no usable reply: "
                                 f"{out.get('name')}: {out.get('message')}")
        data = out.get("data") or {}
        raise ApiError(self.name, out.get("code"), out.get("status"), data.get("Message"),
                       data.get("RequestId"), data)


def make_client(kind, scheme, server, node_driver, **kw):
    if kind == "core":
        return CoreClient(server, scheme, **kw)
    if kind == "tea-v3":
        return TeaClient(server, scheme, None, **kw)
    if kind == "tea-v2":
        return TeaClient(server, scheme, "v2", **kw)
    if kind == "pop-post":
        return PopCoreClient(server, scheme, node_driver, "POST", **kw)
    if kind == "pop-get":
        return PopCoreClient(server, scheme, node_driver, "GET", **kw)
    raise ValueError(kind)


def expect_error(fn, *args):
    try:
        result = fn(*args)
    except ApiError as e:
        return e
    pytest.fail(f"expected an error reply, got success: {result}")


def poll(what, fn, deadline_s=POLL_DEADLINE_S):
    """Call fn() until it returns something truthy; fail after the deadline
    showing the last value it saw."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        done, last = fn()
        if done:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}; last seen: {last}")
        time.sleep(POLL_INTERVAL_S)


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------

def describe_fs(client, fs_id):
    body = client.call("DescribeFileSystems", {"FileSystemId": fs_id})
    items = (body.get("FileSystems") or {}).get("FileSystem") or []
    return body, items


def describe_mt(client, fs_id, domain):
    body = client.call("DescribeMountTargets", {"FileSystemId": fs_id, "MountTargetDomain": domain})
    items = (body.get("MountTargets") or {}).get("MountTarget") or []
    return body, [m for m in items if m.get("MountTargetDomain") == domain]


def wait_fs(client, fs_id, what, predicate):
    def check():
        _, items = describe_fs(client, fs_id)
        if len(items) != 1:
            return False, items
        return predicate(items[0]), items[0]
    return poll(f"{fs_id}: {what}", check)


def best_effort_cleanup(server, fs_id, domain):
    """Leave no file system behind after a failed test (core SDK, HTTP)."""
    c = CoreClient(server, "http")
    try:
        if domain:
            try:
                c.call("DeleteMountTarget", {"FileSystemId": fs_id, "MountTargetDomain": domain})
            except Exception:
                pass
            end = time.monotonic() + POLL_DEADLINE_S
            while time.monotonic() < end:
                try:
                    _, mts = describe_mt(c, fs_id, domain)
                except Exception:
                    break
                if not mts:
                    break
                time.sleep(POLL_INTERVAL_S)
        c.call("DeleteFileSystem", {"FileSystemId": fs_id})
    except Exception:
        pass


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_lifecycle(kind, scheme, server, node_driver):
    client = make_client(kind, scheme, server, node_driver)
    fs_id = domain = None
    finished = False
    try:
        # 1. CreateFileSystem
        body = client.call("CreateFileSystem", {
            "FileSystemType": "cpfs",
            "ProtocolType": "cpfs",
            "StorageType": "advance_100",
            "Capacity": 5120,
            "ZoneId": ZONES[0],
            "VpcId": "vpc-test",
            "VSwitchId": "vsw-test",
            "Description": "sdk-test",
        })
        fs_id = body.get("FileSystemId")
        assert isinstance(fs_id, str) and fs_id.startswith("cpfs-"), body

        # 2. Pending -> Running
        fs = wait_fs(client, fs_id, "Status Running", lambda f: f.get("Status") == "Running")
        assert fs.get("FileSystemId") == fs_id, fs
        assert fs.get("FileSystemType") == "cpfs", fs
        assert fs.get("Capacity") == 5120, fs
        assert fs.get("StorageType") == "advance_100", fs
        assert fs.get("ProtocolType") == "cpfs", fs
        assert fs.get("Bandwidth") == 500, fs   # 100 MB/s per TiB x 5 TiB
        assert fs.get("ZoneId") == ZONES[0], fs
        assert fs.get("RegionId") == REGION, fs
        assert fs.get("Description") == "sdk-test", fs

        # 3. CreateMountTarget, Pending -> Active
        body = client.call("CreateMountTarget", {
            "FileSystemId": fs_id,
            "NetworkType": "Vpc",
            "VpcId": "vpc-test",
            "VSwitchId": "vsw-test",
        })
        domain = body.get("MountTargetDomain")
        assert isinstance(domain, str) and domain, body

        def mt_active():
            _, mts = describe_mt(client, fs_id, domain)
            return (len(mts) == 1 and mts[0].get("Status") == "Active"), mts
        mts = poll(f"mount target {domain} Active", mt_active)
        assert mts[0].get("VpcId") == "vpc-test", mts
        assert mts[0].get("VswId") == "vsw-test", mts

        # 4. UpgradeFileSystem 5120 -> 10240 GiB (Extending may be seen in between)
        client.call("UpgradeFileSystem", {"FileSystemId": fs_id, "Capacity": 10240})
        seen = set()

        def upgraded(f):
            seen.add(f.get("Status"))
            return f.get("Status") == "Running" and f.get("Capacity") == 10240
        fs = wait_fs(client, fs_id, "Running with Capacity 10240", upgraded)
        assert seen <= {"Running", "Extending"}, f"unexpected statuses during upgrade: {seen}"
        assert fs.get("Bandwidth") == 1000, fs   # bandwidth follows capacity for advance_100

        # 5. DeleteMountTarget, wait until it is gone, then DeleteFileSystem
        client.call("DeleteMountTarget", {"FileSystemId": fs_id, "MountTargetDomain": domain})

        def mt_gone():
            try:
                _, mts = describe_mt(client, fs_id, domain)
            except ApiError as e:
                if e.code == "InvalidMountTarget.NotFound":
                    return True, e.code
                raise
            return not mts, mts
        poll(f"mount target {domain} gone", mt_gone)

        client.call("DeleteFileSystem", {"FileSystemId": fs_id})

        def fs_gone():
            try:
                body, items = describe_fs(client, fs_id)
            except ApiError as e:
                if e.code == "InvalidFileSystem.NotFound":
                    return True, e.code
                raise
            return body.get("TotalCount") == 0 and not items, body
        poll(f"{fs_id} gone", fs_gone)
        finished = True
    finally:
        if fs_id and not finished:
            best_effort_cleanup(server, fs_id, domain)


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------

REFUSAL_KINDS = CLIENT_KINDS

# A harmless, always-valid call for the refusal tests.
PROBE_ACTION = "DescribeFileSystems"


def probe_params():
    return {"FileSystemType": "cpfs", "PageSize": 10}


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_probe_call_succeeds(kind, server, node_driver):
    """The call the refusal tests use works with good credentials."""
    client = make_client(kind, "http", server, node_driver)
    body = client.call(PROBE_ACTION, probe_params())
    assert isinstance(body.get("TotalCount"), int), body


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_wrong_secret(kind, scheme, server, node_driver):
    client = make_client(kind, scheme, server, node_driver, secret=WRONG_SECRET)
    err = expect_error(client.call, PROBE_ACTION, probe_params())
    if kind == "core":
        # The core SDK recognises its own string-to-sign in the server's
        # message and rewrites the code (reference section 6.2).
        assert err.code == "InvalidAccessKeySecret", err
    else:
        assert err.code == "SignatureDoesNotMatch", err
    assert err.status == 400, err


@pytest.mark.parametrize("kind", ("tea-v2", "pop-post", "pop-get"))
def test_wrong_secret_message_carries_string_to_sign(kind, server, node_driver):
    """V1 SignatureDoesNotMatch: exactly one ':' then the server's string to sign."""
    client = make_client(kind, "http", server, node_driver, secret=WRONG_SECRET)
    err = expect_error(client.call, PROBE_ACTION, probe_params())
    assert err.code == "SignatureDoesNotMatch", err
    message = (err.data or {}).get("Message") or ""
    assert message.count(":") == 1, message
    sts = message.split(":", 1)[1]
    method = "POST" if kind in ("tea-v2", "pop-post") else "GET"
    assert sts.startswith(method + "&%2F&"), message
    assert "AccessKeyId%3D" + ACCESS_KEY_ID in sts, message


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_unknown_access_key_id(kind, server, node_driver):
    client = make_client(kind, "http", server, node_driver, key_id=UNKNOWN_KEY_ID)
    err = expect_error(client.call, PROBE_ACTION, probe_params())
    assert err.code == "InvalidAccessKeyId.NotFound", err
    assert err.status == 404, err


def fix_nonce(kind, client, monkeypatch, nonce):
    if kind == "core":
        monkeypatch.setattr(core_helper, "get_uuid", lambda: nonce)
    elif kind.startswith("tea"):
        monkeypatch.setattr(TeaUtils, "get_nonce", staticmethod(lambda: nonce))
    else:
        client.nonce = nonce


def fix_timestamp(kind, client, monkeypatch, ts):
    if kind == "core":
        monkeypatch.setattr(core_helper, "get_iso_8061_date", lambda: ts)
    elif kind.startswith("tea"):
        monkeypatch.setattr(TeaUtils, "get_timestamp", staticmethod(lambda: ts))
    else:
        client.timestamp = ts


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_replayed_nonce(kind, server, node_driver, monkeypatch):
    client = make_client(kind, "http", server, node_driver)
    fix_nonce(kind, client, monkeypatch, new_nonce())
    client.call(PROBE_ACTION, probe_params())      # first use: accepted
    err = expect_error(client.call, PROBE_ACTION, probe_params())
    assert err.code == "SignatureNonceUsed", err
    assert err.status == 400, err


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_stale_timestamp(kind, server, node_driver, monkeypatch):
    client = make_client(kind, "http", server, node_driver)
    fix_timestamp(kind, client, monkeypatch, stale_timestamp(20))
    err = expect_error(client.call, PROBE_ACTION, probe_params())
    assert err.code == "InvalidTimeStamp.Expired", err
    assert err.status == 400, err


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_good_call_after_refusal(kind, server, node_driver, monkeypatch):
    """A refused request must not poison the client: the next normal call works."""
    bad = make_client(kind, "http", server, node_driver, secret=WRONG_SECRET)
    expect_error(bad.call, PROBE_ACTION, probe_params())
    good = make_client(kind, "http", server, node_driver)
    good.call(PROBE_ACTION, probe_params())


def test_not_found_file_system(server, node_driver):
    for kind in CLIENT_KINDS:
        client = make_client(kind, "http", server, node_driver)
        err = expect_error(client.call, "DeleteFileSystem", {"FileSystemId": "cpfs-00000000deadbeef"})
        assert err.code == "InvalidFileSystem.NotFound", err
        assert err.status == 404, err


# ---------------------------------------------------------------------------
# Raw success replies (core SDK returns the bytes as received)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
def test_success_replies_have_no_code(scheme, server, node_driver):
    client = CoreClient(server, scheme)
    for action, params in (
        ("DescribeRegions", {"FileSystemType": "cpfs"}),
        ("DescribeZones", {"FileSystemType": "cpfs"}),
        ("DescribeFileSystems", {"FileSystemType": "cpfs"}),
    ):
        client.call(action, params)   # the adapter asserts: no Code, a RequestId
        raw = json.loads(client.last_raw)
        assert "Code" not in raw and "code" not in raw, (action, client.last_raw)


def test_describe_zones_lists_default_zones(server, node_driver):
    client = CoreClient(server, "http")
    body = client.call("DescribeZones", {"FileSystemType": "cpfs"})
    zones = [z.get("ZoneId") for z in (body.get("Zones") or {}).get("Zone") or []]
    assert set(ZONES) <= set(zones), body


# ---------------------------------------------------------------------------
# LDAP configuration through every SDK, against a real slapd
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dataplane"))
    from ldap_harness import start_slapd, User
    d = start_slapd(tmp_path_factory.mktemp("slapd"), users=[User("alice", 2001, 2001)], groups=[])
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_ldap_config_round_trip(kind, server, node_driver, slapd):
    from ldap_harness import SUFFIX
    client = make_client(kind, "http", server, node_driver)
    fs_id = client.call("CreateFileSystem", {
        "FileSystemType": "cpfs", "ProtocolType": "cpfs", "StorageType": "advance_100",
        "Capacity": 2048, "ZoneId": ZONES[0], "VpcId": "vpc-ldap", "VSwitchId": "vsw-ldap",
    })["FileSystemId"]
    try:
        err = expect_error(client.call, "CreateLDAPConfig", {
            "FileSystemId": fs_id, "URI": "ldap://127.0.0.1:1", "SearchBase": SUFFIX})
        assert (err.code, err.status) == ("InvalidLDAPConfig.Unreachable", 400), err
        _, items = describe_fs(client, fs_id)
        assert "Ldap" not in items[0] or not items[0]["Ldap"], items[0]

        client.call("CreateLDAPConfig", {"FileSystemId": fs_id, "URI": slapd.uri, "SearchBase": SUFFIX})
        _, items = describe_fs(client, fs_id)
        assert items[0]["Ldap"] == {"URI": slapd.uri, "SearchBase": SUFFIX, "BindDN": ""}, items[0]

        people = f"ou=people,{SUFFIX}"
        client.call("ModifyLDAPConfig", {"FileSystemId": fs_id, "URI": slapd.uri, "SearchBase": people})
        _, items = describe_fs(client, fs_id)
        assert items[0]["Ldap"]["SearchBase"] == people

        client.call("DeleteLDAPConfig", {"FileSystemId": fs_id})
        err = expect_error(client.call, "DeleteLDAPConfig", {"FileSystemId": fs_id})
        assert (err.code, err.status) == ("InvalidLDAPConfig.NotFound", 404), err
    finally:
        best_effort_cleanup(server, fs_id, None)


def _ldap_call_with_password(client, action, fs_id, uri, base, bind_dn, password):
    """The core SDK's request with the BindPassword extension added as the
    README says to send extensions (not in the SDK models)."""
    module = importlib.import_module(f"aliyunsdknas.request.v20170626.{action}Request")
    req = getattr(module, f"{action}Request")()
    req.set_endpoint(client.server.hostport(client.scheme))
    req.set_protocol_type(client.scheme)
    req.set_FileSystemId(fs_id)
    req.set_URI(uri)
    req.set_SearchBase(base)
    req.set_BindDN(bind_dn)
    if password is not None:
        req.add_query_param("BindPassword", password)
    try:
        return json.loads(client.acs.do_action_with_exception(req))
    except CoreServerException as e:
        raise ApiError(client.name, e.get_error_code(), e.get_http_status(),
                       e.get_error_msg(), e.get_request_id()) from None


def test_ldap_tenant_bind_password(server, slapd):
    """A tenant binds with its own BindPassword (a CPFS extension); it is
    checked against the real slapd, never shown by DescribeFileSystems, and
    a wrong one answers only "unreachable or refused"."""
    from ldap_harness import ADMIN_DN, ADMIN_PASSWORD, SUFFIX
    client = CoreClient(server, "http")
    fs_id = client.call("CreateFileSystem", {
        "FileSystemType": "cpfs", "ProtocolType": "cpfs", "StorageType": "advance_100",
        "Capacity": 2048, "ZoneId": ZONES[0], "VpcId": "vpc-ldap", "VSwitchId": "vsw-ldap",
    })["FileSystemId"]
    try:
        # No operator password is configured: a BindDN needs the tenant's.
        err = expect_error(_ldap_call_with_password, client, "CreateLDAPConfig", fs_id,
                           slapd.uri, SUFFIX, ADMIN_DN, None)
        assert (err.code, err.status) == ("MissingParameter.BindPassword", 400), err
        err = expect_error(_ldap_call_with_password, client, "CreateLDAPConfig", fs_id,
                           slapd.uri, SUFFIX, ADMIN_DN, "not-the-password")
        assert (err.code, err.status) == ("InvalidLDAPConfig.Unreachable", 400), err
        assert "unreachable or refused" in err.message, err

        _ldap_call_with_password(client, "CreateLDAPConfig", fs_id, slapd.uri, SUFFIX,
                                 ADMIN_DN, ADMIN_PASSWORD)
        body, items = describe_fs(client, fs_id)
        assert items[0]["Ldap"] == {"URI": slapd.uri, "SearchBase": SUFFIX, "BindDN": ADMIN_DN}, items[0]
        raw = client.last_raw
        raw = raw.decode() if isinstance(raw, bytes) else str(raw)
        assert ADMIN_PASSWORD not in raw, raw

        people = f"ou=people,{SUFFIX}"
        _ldap_call_with_password(client, "ModifyLDAPConfig", fs_id, slapd.uri, people,
                                 ADMIN_DN, ADMIN_PASSWORD)
        _, items = describe_fs(client, fs_id)
        assert items[0]["Ldap"]["SearchBase"] == people
        assert ADMIN_PASSWORD not in server.stderr_tail(10_000)
        client.call("DeleteLDAPConfig", {"FileSystemId": fs_id})
    finally:
        best_effort_cleanup(server, fs_id, None)
