"""Billing end to end: the real server on a clock file, driven through
pay-as-you-go, an upgrade, a deletion, a subscription that expires, is
stopped and released, a renewal, a resource plan, and five hours of
downtime; then the official BssOpenApi SDK (alibabacloud-bssopenapi20171214,
V3 and V1 signatures) reads the bills and they must equal the statements
`cpfs billing report` writes, which must add up.
"""

import csv
import importlib
import io
import json
from decimal import Decimal

import pytest
from aliyunsdkcore.client import AcsClient
from alibabacloud_tea_openapi.models import Config
from alibabacloud_bssopenapi20171214.client import Client as BssClient
from alibabacloud_bssopenapi20171214 import models as bss
from Tea.exceptions import TeaException

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET

H = 3600
DAY = 86400
T0 = 1791195600            # 2026-10-05T10:20:00Z
UPGRADE = T0 + 5 * H + 20 * 60   # 15:40
DELETE = T0 + 2 * DAY
Q = Decimal("0.0001")


def nas(server, key, action, **params):
    """A NAS call through the core SDK (aliyun-python-sdk-nas request classes)."""
    mod = importlib.import_module(f"aliyunsdknas.request.v20170626.{action}Request")
    req = getattr(mod, f"{action}Request")()
    req.set_endpoint(f"127.0.0.1:{server.port}")
    req.set_protocol_type("http")
    for k, v in params.items():
        getattr(req, f"set_{k}")(v)
    client = AcsClient(key[0], key[1], "cn-hangzhou")
    return json.loads(client.do_action_with_exception(req))


def bss_client(server, key, signature_algorithm=None):
    return BssClient(Config(access_key_id=key[0], access_key_secret=key[1],
                            endpoint=f"127.0.0.1:{server.port}", protocol="http",
                            signature_algorithm=signature_algorithm))


def poll(what, fn, deadline_s=30):
    import time
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def fs_of(server, key, fs_id):
    r = nas(server, key, "DescribeFileSystems", FileSystemId=fs_id)
    items = r["FileSystems"]["FileSystem"]
    return items[0] if items else None


def wait_status(server, key, fs_id, status):
    return poll(f"{fs_id} {status}", lambda: (lambda f: f if (f and f["Status"] == status) else None)(
        fs_of(server, key, fs_id)))


def create(server, key, capacity=2048, **extra):
    r = nas(server, key, "CreateFileSystem", FileSystemType="cpfs", ProtocolType="cpfs",
            StorageType="advance_100", Capacity=capacity, ZoneId="cn-hangzhou-b", VpcId="vpc-1",
            VSwitchId="vsw-1", **extra)
    fs_id = r["FileSystemId"]
    wait_status(server, key, fs_id, "Running")
    return fs_id


def dec(x):
    """A float amount from the SDK as the exact 4-decimal value it encodes."""
    return Decimal(repr(x)).quantize(Q)


def all_pages(call):
    rows, page = [], 1
    while True:
        data = call(page).body.data
        rows += data.items.item
        if page * data.page_size >= data.total_count:
            return rows, data
        page += 1


def hourly_usage(segments):
    """GiB-hours per hour as the bill rounds them (4 decimals), summed."""
    start = min(s[0] for s in segments) // H * H
    end = max(s[1] for s in segments)
    total = Decimal(0)
    h = start
    while h < end:
        gib_s = sum(cap * max(0, min(b, h + H) - max(a, h)) for a, b, cap in segments)
        total += (Decimal(gib_s) / H).quantize(Q, rounding="ROUND_HALF_UP")
        h += H
    return total


@pytest.fixture(scope="module")
def story(server):
    """Runs the whole billing story once; the tests below read its bills."""
    me = (ACCESS_KEY_ID, ACCESS_KEY_SECRET)
    server.set_clock(T0)
    server.start()
    payg = create(server, me)
    sub = create(server, me, ChargeType="Subscription", Duration=1)
    renewed = create(server, me, ChargeType="Subscription", Duration=1)
    assert fs_of(server, me, sub)["ExpiredTime"] == "2026-11-05T10:20:00Z"

    acct = server.cli_json("account", "create", "planner")
    planner = (acct["AccessKeyId"], acct["AccessKeySecret"])
    plan = server.cli_json("billing", "plan", "add", "--account", "planner", "--size-gib", "1000", "--months", "1")
    planfs = create(server, planner)

    server.set_clock(UPGRADE)
    nas(server, me, "UpgradeFileSystem", FileSystemId=payg, Capacity=5120)
    wait_status(server, me, payg, "Running")
    server.set_clock(DELETE)
    nas(server, me, "DeleteFileSystem", FileSystemId=payg)
    poll(f"{payg} gone", lambda: fs_of(server, me, payg) is None)
    first = server.cli_json("billing", "meter")
    assert first["hours_metered"] > 0

    # Five hours down: killed, the clock moves, then back up. The start-up
    # pass and an operator backfill both run; each hour is billed once.
    server.kill()
    server.set_clock(DELETE + 5 * H)
    server.start()
    server.cli_json("billing", "meter")
    again = server.cli_json("billing", "meter")
    assert again["hours_metered"] == 0 and again["orders_charged"] == 0

    r = bss_client(server, me).renew_instance(bss.RenewInstanceRequest(
        product_code="nas", instance_id=renewed, renew_period=1))
    assert r.status_code == 200 and r.body.success and r.body.code == "Success"
    order_id = r.body.data.order_id
    assert order_id
    assert fs_of(server, me, renewed)["ExpiredTime"] == "2026-12-05T10:20:00Z"

    # The subscription expires: stopped, data kept; the renewed one runs.
    server.set_clock(T0 + 31 * DAY + 2 * H)
    out = server.cli_json("billing", "meter")
    assert out["stopped"] == [sub]
    assert fs_of(server, me, sub)["Status"] == "Stopped"
    assert fs_of(server, me, renewed)["Status"] == "Running"
    # Released after the one-day retention.
    server.set_clock(T0 + 32 * DAY + 2 * H)
    out = server.cli_json("billing", "meter")
    assert out["released"] == [sub]
    poll(f"{sub} released", lambda: fs_of(server, me, sub) is None)

    reports = {m: server.cli_json("billing", "report", "--month", m) for m in ("2026-10", "2026-11")}
    csv_text = server.cli("billing", "report", "--month", "2026-10", "--format", "csv")
    return dict(me=me, planner=planner, payg=payg, sub=sub, renewed=renewed, planfs=planfs,
                plan=plan, order_id=order_id, reports=reports, csv=csv_text, account_id=None)


def account_report(report, account_id):
    for a in report["Accounts"]:
        if a["AccountID"] == account_id:
            return a
    return None


def test_reports_add_up(story):
    for month, rep in story["reports"].items():
        amounts = ("PretaxGrossAmount", "InvoiceDiscount", "DeductedByResourcePackage", "PretaxAmount")
        for field in amounts:
            accounts = sum(Decimal(a[field]) for a in rep["Accounts"])
            assert accounts == Decimal(rep[field]), (month, field)
            for a in rep["Accounts"]:
                assert sum(Decimal(i[field]) for i in a["Instances"]) == Decimal(a[field])
                for i in a["Instances"]:
                    assert sum(Decimal(l[field]) for l in i["Lines"]) == Decimal(i[field])
                    for l in i["Lines"]:
                        # payable = list - discount - plan offset, on every line
                        assert Decimal(l["PretaxAmount"]) == Decimal(l["PretaxGrossAmount"]) - \
                            Decimal(l["InvoiceDiscount"]) - Decimal(l["DeductedByResourcePackage"])
    # The CSV is the same statement.
    rows = list(csv.DictReader(io.StringIO(story["csv"])))
    rep = story["reports"]["2026-10"]
    lines = [r for r in rows if r["row"] == "line"]
    assert sum(Decimal(r["pretax_amount"]) for r in lines) == Decimal(rep["PretaxAmount"])
    total = [r for r in rows if r["row"] == "total"]
    assert len(total) == 1 and Decimal(total[0]["pretax_amount"]) == Decimal(rep["PretaxAmount"])
    for r in (r for r in rows if r["row"] == "instance"):
        mine = [l for l in lines if l["instance_id"] == r["instance_id"]]
        assert sum(Decimal(l["pretax_amount"]) for l in mine) == Decimal(r["pretax_amount"])


@pytest.mark.parametrize("signing", [None, "v2"])
def test_sdk_bills_match_the_report(story, server, signing):
    for key, name in ((story["me"], "me"), (story["planner"], "planner")):
        client = bss_client(server, key, signing)
        for month, rep in story["reports"].items():
            ov = client.query_bill_overview(bss.QueryBillOverviewRequest(billing_cycle=month)).body
            acct = account_report(rep, ov.data.account_id)
            want = Decimal(acct["PretaxAmount"]) if acct else Decimal(0)
            assert ov.success and ov.code == "Success" and ov.data.billing_cycle == month
            assert sum(dec(i.pretax_amount) for i in ov.data.items.item) == want, (name, month)

            bills, data = all_pages(lambda p: client.query_bill(bss.QueryBillRequest(
                billing_cycle=month, page_num=p, page_size=300)))
            assert data.total_count == len(bills)
            assert sum(dec(b.pretax_amount) for b in bills) == want, (name, month)
            assert len({b.record_id for b in bills}) == len(bills)

            rows, data = all_pages(lambda p: client.query_instance_bill(bss.QueryInstanceBillRequest(
                billing_cycle=month, is_billing_item=True, page_num=p, page_size=300)))
            per_instance = {}
            for r in rows:
                per_instance[r.instance_id] = per_instance.get(r.instance_id, Decimal(0)) + dec(r.pretax_amount)
                assert dec(r.pretax_amount) == dec(r.pretax_gross_amount) - dec(r.invoice_discount) - \
                    Decimal(r.deducted_by_resource_package)
            if acct:
                assert per_instance == {i["InstanceID"]: Decimal(i["PretaxAmount"]) for i in acct["Instances"]}
            else:
                assert per_instance == {}


def test_pay_as_you_go_usage_and_subscription_orders(story, server):
    client = bss_client(server, story["me"])
    rows, _ = all_pages(lambda p: client.query_instance_bill(bss.QueryInstanceBillRequest(
        billing_cycle="2026-10", is_billing_item=True, product_code="nas", page_num=p, page_size=300)))
    size = [r for r in rows if r.instance_id == story["payg"] and r.usage_unit == "GiB*Hour"]
    assert len(size) == 1 and size[0].subscription_type == "PayAsYouGo"
    assert Decimal(size[0].usage) == hourly_usage([(T0, UPGRADE, 2048), (UPGRADE, DELETE, 5120)])
    assert size[0].list_price == "1" and size[0].instance_config.startswith("Capacity:5120GiB")

    bills, _ = all_pages(lambda p: client.query_bill(bss.QueryBillRequest(
        billing_cycle="2026-10", type="SubscriptionOrder", page_num=p, page_size=300)))
    orders = {b.record_id: b for b in bills}
    # The purchase of each subscription once, and the renewal.
    assert story["order_id"] in orders
    assert sum(1 for b in bills if b.record_id.startswith(story["sub"])) == 1
    assert all(b.item == "SubscriptionOrder" and b.subscription_type == "Subscription" for b in bills)
    payg, _ = all_pages(lambda p: client.query_bill(bss.QueryBillRequest(
        billing_cycle="2026-10", type="PayAsYouGoBill", page_num=p, page_size=300)))
    # One record per hour the pay-as-you-go file system existed (10:00 on
    # the 5th through the 10:00 hour of the 7th), none for subscriptions.
    assert len(payg) == 49
    assert {b.usage_start_time for b in payg} >= {"2026-10-05 10:00:00", "2026-10-07 10:00:00"}

    daily = client.query_instance_bill(bss.QueryInstanceBillRequest(
        billing_cycle="2026-10", granularity="DAILY", billing_date="2026-10-06",
        subscription_type="PayAsYouGo")).body.data.items.item
    assert [(r.instance_id, r.billing_date) for r in daily] == [(story["payg"], "2026-10-06")]
    assert dec(daily[0].pretax_amount) > 0


def test_downtime_hours_are_billed_once(story, server):
    client = bss_client(server, story["planner"])
    # 10:00 on the 5th through Nov 6 11:00 (the last meter ran at 12:20).
    end = T0 + 32 * DAY + 2 * H
    total = Decimal(0)
    for month in ("2026-10", "2026-11"):
        rows, _ = all_pages(lambda p: client.query_instance_bill(bss.QueryInstanceBillRequest(
            billing_cycle=month, is_billing_item=True, page_num=p, page_size=300)))
        total += sum(Decimal(r.usage) for r in rows if r.usage_unit == "GiB*Hour")
    assert total == hourly_usage([(T0, end // H * H, 2048)])


def test_resource_plan_absorbs_usage_until_it_runs_out(story, server):
    client = bss_client(server, story["planner"])
    r = client.query_resource_package_instances(bss.QueryResourcePackageInstancesRequest(product_code="nas"))
    assert r.body.success and r.body.total == 1 and r.body.data.total_count == "1"
    p = r.body.data.instances.instance[0]
    assert p.instance_id == story["plan"]["PlanId"]
    assert (p.total_amount, p.remaining_amount, p.total_amount_unit) == ("720000", "0", "GiB*Hour")
    assert p.status == "Expired" and p.applicable_products.product == ["nas"]
    rows, _ = all_pages(lambda p: client.query_instance_bill(bss.QueryInstanceBillRequest(
        billing_cycle="2026-10", is_billing_item=True, page_num=p, page_size=300)))
    size = [r for r in rows if r.instance_id == story["planfs"] and r.usage_unit == "GiB*Hour"][0]
    # 720,000 GiB-hours (2,592,000,000 GiB-seconds) at the list price of 1
    # per GiB-month were offset, each hour's offset rounded on its own line:
    # 40 minutes of the first hour, 350 full hours, then the remainder.
    month_s = 30 * DAY
    first, full = 2048 * 2400, 2048 * H
    rest = 2_592_000_000 - first - 350 * full
    assert 0 < rest < full
    line = lambda gib_s: (Decimal(gib_s) / month_s).quantize(Q, rounding="ROUND_HALF_UP")
    assert Decimal(size.deducted_by_resource_package) == line(first) + 350 * line(full) + line(rest)
    assert dec(size.pretax_amount) == dec(size.pretax_gross_amount) - Decimal(size.deducted_by_resource_package)


def test_bss_errors_have_the_bss_shape(story, server):
    client = bss_client(server, story["me"])
    with pytest.raises(TeaException) as e:
        client.query_bill(bss.QueryBillRequest(billing_cycle="2026-13"))
    assert e.value.code == "InvalidParameter.BillingCycle"
    assert e.value.data.get("statusCode") == 400 if isinstance(e.value.data, dict) else True
    with pytest.raises(TeaException) as e:
        client.renew_instance(bss.RenewInstanceRequest(product_code="nas", instance_id=story["payg"],
                                                       renew_period=1))
    assert e.value.code == "InvalidFileSystem.NotFound"
