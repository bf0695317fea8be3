"""Generated requests against the OpenAPI descriptions, every one signed.

schemathesis generates the parameters of every operation of
`openapi/nas.json` and `openapi/bssopenapi.json` (valid and invalid ones:
missing required parameters, wrong types, unexpected values); each request
is then signed with V1 (HMAC-SHA1, as the official SDKs sign) and sent to a
real `cpfs serve`. Every reply must be no server error (5xx), carry a
status the description lists, and match the description's schema for that
status and content type. The last test asserts that at least
MIN_REQUESTS requests were sent in all, so a generator that quietly stops
producing cases fails the suite.

Environment:
  CPFS_SCHEMA_EXAMPLES   examples per operation and phase (default 20)
  CPFS_SCHEMA_SEED       hypothesis seed (default: a fixed one, so a run is
                         reproducible; `random` for a new one each run)
"""

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import jsonschema_rs
import requests
import schemathesis
from hypothesis import HealthCheck, settings, seed
from schemathesis import checks as st_checks

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET

REPO = Path(__file__).resolve().parent.parent.parent
MIN_REQUESTS = 1000
EXAMPLES = int(os.environ.get("CPFS_SCHEMA_EXAMPLES", "20"))
SEED = os.environ.get("CPFS_SCHEMA_SEED", "1402")

# Parameters the signing owns: whatever was generated for them is replaced.
SIGNATURE_PARAMS = ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
                    "SignatureNonce", "Timestamp")

SENT = Counter()          # requests per schema
STATUSES = Counter()      # (schema, status) seen
NAS_ENVELOPE = [0]        # BSS operations' requests that named neither Action nor Version

nas = schemathesis.openapi.from_path(REPO / "openapi" / "nas.json")
bss = schemathesis.openapi.from_path(REPO / "openapi" / "bssopenapi.json")
BSS_ACTIONS = {k.split("=", 1)[1] for k in json.loads((REPO / "openapi" / "bssopenapi.json").read_text())["paths"]}

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def percent(s):
    """RFC 3986 encoding as Alibaba signatures use it (space %20, * %2A, ~ kept)."""
    return quote(s, safe="-_.~")


def sign_v1(method, pairs, secret):
    """The V1 signature over `pairs` (a list of (name, value) strings)."""
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(pairs, key=lambda p: (p[0].encode(), p[1])))
    string_to_sign = f"{method.upper()}&{percent('/')}&{percent(canonical)}"
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def signed_pairs(case):
    """The generated query as (name, value) strings, with fresh signature
    parameters and the signature over exactly what is sent."""
    pairs = []
    for name, value in (case.query or {}).items():
        if name in SIGNATURE_PARAMS:
            continue
        values = value if isinstance(value, list) else [value]
        pairs.extend((str(name), _text(v)) for v in values)
    pairs += [
        ("AccessKeyId", ACCESS_KEY_ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", uuid.uuid4().hex),
        ("Timestamp", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    pairs.append(("Signature", sign_v1(case.method, pairs, ACCESS_KEY_SECRET)))
    return pairs


NAS_ERROR = json.loads((REPO / "openapi" / "nas.json").read_text())["components"]["schemas"]["Error"]


def addressed_to_bss(pairs):
    """Whether a request says it is for the BssOpenApi at all: a Version
    2017-12-14, or no NAS Version and a BSS Action. Negative cases drop
    both; such a request cannot be told from a NAS call, and its error
    comes in the NAS envelope."""
    versions = [v for k, v in pairs if k == "Version"]
    if "2017-12-14" in versions:
        return True
    return "2017-06-26" not in versions and any(k == "Action" and v in BSS_ACTIONS for k, v in pairs)


def send_and_check(case, server, which):
    # The operation's path (`/?Action=X`) only names it; Action is one of
    # the generated query parameters, so the request goes to `/`.
    pairs = signed_pairs(case)
    resp = requests.request(case.method, server.url + "/", params=pairs, timeout=30)
    SENT[which] += 1
    STATUSES[(which, resp.status_code)] += 1
    if which == "bss" and not addressed_to_bss(pairs):
        # Every check but the schema's, which is the NAS error's here.
        case.validate_response(resp, checks=[c for c in CHECKS if c is not st_checks.response_schema_conformance])
        assert resp.status_code >= 400, f"a request without Action and Version succeeded: {resp.text}"
        jsonschema_rs.validator_for(NAS_ERROR).validate(resp.json())
        NAS_ENVELOPE[0] += 1
        return
    case.validate_response(resp, checks=CHECKS)


SETTINGS = dict(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


def _seeded(test):
    return test if SEED == "random" else seed(int(SEED))(test)


@nas.parametrize()
@settings(**SETTINGS)
@_seeded
def test_nas(case, server):
    send_and_check(case, server, "nas")


@bss.parametrize()
@settings(**SETTINGS)
@_seeded
def test_bss(case, server):
    send_and_check(case, server, "bss")


def test_enough_requests_were_sent(server):
    """Runs after the generated tests (pytest keeps file order)."""
    total = sum(SENT.values())
    print(f"schema suite: {dict(SENT)} requests, statuses {dict(sorted(STATUSES.items()))}, "
          f"{NAS_ENVELOPE[0]} BSS-operation requests without Action and Version")
    assert SENT["nas"] > 0 and SENT["bss"] > 0, dict(SENT)
    assert total >= MIN_REQUESTS, f"only {total} signed requests were generated: {dict(SENT)}"
