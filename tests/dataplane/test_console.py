"""The web console end to end, in headless Chromium (Debian's `chromium`)
driven by Playwright, against a real `cpfs serve` and a real mount.

A user signs in with an AccessKey pair (a wrong one is refused with the
API's own message), creates an access group and a rule, a subscription
file system, and a mount target in that group; sees the file system
become Running and the mount target Active; creates a fileset; mounts it (the harness's
FUSE mount), writes and reads, and sees the charts fill; reads the bill
the subscription made; and deletes the file system, which the console
does only after the id is typed. The page signs every call itself: the
test never passes it anything but the key pair.

Screenshots of the main pages go to $CPFS_CONSOLE_SCREENSHOTS when set
(docs/console/ holds the committed ones), else to the test's own
directory.
"""

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from dataplane_harness import (ACCESS_KEY_ID, ACCESS_KEY_SECRET, drop_caches, require_binary,
                               wait_until)

CHROMIUM = "/usr/bin/chromium"
UI_TIMEOUT_MS = 20_000
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("playwright is not installed (.ci/setup.sh installs it)")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (.ci/setup.sh installs Debian's package)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    d = Path(os.environ.get("CPFS_CONSOLE_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_page(browser, server, width=1280, height=800):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/console")
    return page, errors


def sign_in(page, key_id=ACCESS_KEY_ID, secret=ACCESS_KEY_SECRET):
    page.fill("input[name=keyId]", key_id)
    page.fill("input[name=secret]", secret)
    page.click("[data-testid=signin] button[type=submit]")


def submit(page, form, **values):
    f = page.locator(f"[data-testid={form}]")
    for name, value in values.items():
        field = f.locator(f"[name='{name}']")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    f.locator("button[type=submit]").click()


def test_a_wrong_key_is_refused_with_the_apis_message(browser, server, shots):
    page, errors = new_page(browser, server)
    sign_in(page, secret=ACCESS_KEY_SECRET + "x")
    error = page.locator("[data-testid=error]")
    error.wait_for()
    assert "SignatureDoesNotMatch" in error.inner_text()
    page.screenshot(path=str(shots / "sign-in-refused.png"))
    sign_in(page, key_id="LTAI" + "0" * 20)
    # The console clears the old message while the call is in flight, so the
    # element may be absent for a moment.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=error]')?.innerText.includes('InvalidAccessKeyId')")
    # Still on the sign-in form, nothing kept.
    assert page.locator("[data-testid=signin]").is_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert not errors, errors
    page.close()


def test_console_manages_a_file_system_end_to_end(browser, server, mounter, shots):
    page, errors = new_page(browser, server)
    page.screenshot(path=str(shots / "sign-in.png"))
    sign_in(page)
    page.locator("text=Create a file system").wait_for()

    # An access group admitting this host, made in the console.
    group = f"console{uuid.uuid4().hex[:6]}"
    page.click("text=Access groups")
    submit(page, "create-group", AccessGroupName=group, Description="console test")
    page.locator(f"[data-testid=group-{group}]").click()
    submit(page, f"create-rule-{group}", SourceCidrIp="127.0.0.1", RWAccessType="RDWR",
           UserAccessType="no_squash", Priority="1")
    rules = page.locator(f"[data-testid=rule-table-{group}]")
    rules.locator("text=127.0.0.1").wait_for()
    page.screenshot(path=str(shots / "access-groups.png"), full_page=True)

    # A subscription file system.
    description = f"console-{uuid.uuid4().hex[:6]}"
    page.click("text=File systems")
    # Months appear once Subscription is chosen.
    submit(page, "create-fs", StorageType="advance_100", Capacity="2048", ChargeType="Subscription",
           Duration="1", Description=description)
    row = page.locator("[data-testid=fs-table] tr", has_text=description)
    row.wait_for()
    fs_id = row.locator("a").inner_text()
    assert re.fullmatch(r"cpfs-[0-9a-f]+", fs_id), fs_id
    page.locator(f"[data-testid=status-{fs_id}]", has_text="Running").wait_for(timeout=DEADLINE_S * 1000)
    page.screenshot(path=str(shots / "file-systems.png"), full_page=True)

    # Its page: a mount target in the new group, Active.
    row.locator("a").click()
    page.locator("[data-testid=fs-status]", has_text="Running").wait_for()
    submit(page, "create-mt", AccessGroupName=group)
    mts = page.locator("[data-testid=mt-table]")
    mts.locator("text=Active").wait_for(timeout=DEADLINE_S * 1000)
    domain = mts.locator("code").first.inner_text()
    assert domain.startswith(fs_id), domain

    # A fileset, tracked once its metadata server bound it.
    submit(page, "create-fileset", FileSystemPath="/console-set/", Description="made in the console")
    page.locator("[data-testid=fileset-table] tr", has_text="/console-set/").wait_for()

    # I/O through a real mount shows in the charts.
    mount = mounter.mount(domain)
    data = os.urandom(4 << 20)
    path = mount.path / "console-data"
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    drop_caches()
    assert path.read_bytes() == data
    assert (mount.path / "console-set").is_dir()

    def charted():
        page.click("[data-testid=charts-refresh]")
        page.wait_for_timeout(300)
        points = page.locator("[data-testid=chart-throughput]").get_attribute("data-points")
        return int(points or 0) > 0
    wait_until("the throughput chart to show the I/O", charted, DEADLINE_S)
    assert page.locator("[data-testid=chart-throughput] canvas").count() == 1
    page.screenshot(path=str(shots / "file-system.png"), full_page=True)

    # The phone-sized window shows the same page.
    # (A new tab: the key is kept per tab, so it signs in again.)
    phone, phone_errors = new_page(browser, server, width=390, height=844)
    sign_in(phone)
    phone.locator("text=Create a file system").wait_for()
    phone.evaluate(f"location.hash = '#/fs/{fs_id}'")
    phone.locator("[data-testid=fs-status]").wait_for()
    phone.screenshot(path=str(shots / "file-system-phone.png"))
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert not phone_errors, phone_errors
    phone.close()

    # The subscription's order is on this month's bill once billing has
    # run (every minute in `cpfs serve`; the operator's command runs it now).
    res = subprocess.run([str(require_binary()), "billing", "meter", "--data-dir", str(server.data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    page.click("text=Bills")
    page.locator("[data-testid=bill-rows] tr", has_text="SubscriptionOrder").first.wait_for(
        timeout=DEADLINE_S * 1000)
    page.screenshot(path=str(shots / "bills.png"), full_page=True)

    # Deletion only after the id is typed.
    mount.unmount()
    page.evaluate(f"location.hash = '#/fs/{fs_id}'")
    page.click("[data-testid=delete-fs]")
    confirm = page.locator("[data-testid=confirm]")
    assert confirm.is_disabled()
    page.fill("[data-testid=confirm-input]", fs_id[:-1])
    assert confirm.is_disabled()
    page.fill("[data-testid=confirm-input]", fs_id)
    confirm.click()
    page.locator("text=Create a file system").wait_for()

    def gone_or_deleting():
        fss = server.api("DescribeFileSystems", FileSystemId=fs_id)["FileSystems"]["FileSystem"]
        return not fss or fss[0]["Status"] == "Deleting"
    wait_until(f"{fs_id} deleted", gone_or_deleting, DEADLINE_S)
    assert not errors, errors
    page.close()
