"""Fixtures for the data-plane end-to-end suite (real FUSE mounts).

`server` (session) starts the real `cpfs serve` once, on free loopback ports
(API and metadata), with its 3 data nodes under a fresh data directory.
`directory` (session) is a real slapd knowing the user the uid-switch tests
run as; `filesystem` (module) creates a CPFS file system and a mount target
through the official core SDK (V1), waits for Running / Active, and points
its LDAP configuration at `directory` (without one only root may use it). `mount` (module)
mounts it with `cpfs mount DOMAIN DIR --controlplane URL` in the foreground.
`mounter` (function) makes extra mounts that are unmounted after the test.
`target_dir` (function) is a fresh directory on the CPFS mount, or under
$POSIX_TARGET when that is set (then no server is started at all).
`run_as` / `errno_as` run a command / a Python snippet as another uid
(nobody by default) with setpriv.

Environment:
  CPFS_BIN       the binary (default <repo>/target/debug/cpfs)
  POSIX_TARGET   run test_posix.py against this local directory instead
  CPFS_TEST_DATABASE_URL   when set, each server runs on a fresh database beside it

Every wait has a deadline; every mount is unmounted and every process this
suite started is killed on teardown, also after a failure. Missing FUSE
(/dev/fuse, fusermount3) fails the run; nothing is skipped.
"""

import os
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from ldap_harness import SUFFIX, Group, User, start_slapd
from dataplane_harness import (
    LIVE_MOUNTS, LIVE_SERVERS, NOBODY_GID, NOBODY_UID, Mounter, create_filesystem,
    errno_as_uid, force_rmtree, mount_entry, mounts_under, run_as_uid, start_server, stop_group,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes minutes on FUSE; runs by default (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def fuse_ready():
    """FUSE must be usable; a missing piece fails loudly (never a skip)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the data-plane suite runs as root (mknod, chown, setpriv, drop_caches)")
    try:
        st = os.stat("/dev/fuse")
        if not stat.S_ISCHR(st.st_mode):
            problems.append("/dev/fuse is not a character device")
        else:
            try:
                os.close(os.open("/dev/fuse", os.O_RDWR))
            except OSError as e:
                problems.append(f"cannot open /dev/fuse: {e}")
    except FileNotFoundError:
        problems.append("/dev/fuse is missing (modprobe fuse; in a container pass --device /dev/fuse)")
    if shutil.which("fusermount3") is None:
        problems.append("fusermount3 not on PATH (apt-get install fuse3, or run .ci/setup.sh)")
    try:
        if "fuse" not in Path("/proc/filesystems").read_text().split():
            problems.append("the kernel lists no 'fuse' in /proc/filesystems")
    except OSError as e:
        problems.append(f"cannot read /proc/filesystems: {e}")
    if problems:
        pytest.fail("FUSE is not available:\n  " + "\n  ".join(problems))
    return True


@pytest.fixture(scope="session")
def base_dir():
    """A session directory under the system temp dir that nobody can traverse.

    (pytest's own tmp_path lives in a 0700 directory, which would hide the
    mounts from the uid-switch tests.)"""
    d = Path(tempfile.mkdtemp(prefix="cpfs-dataplane-"))
    os.chmod(d, 0o755)
    yield d
    for p in list(LIVE_MOUNTS):
        p.unmount()
    # Never recurse into something still mounted.
    if not any(mount_entry(m) for m in mounts_under(d)):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def server(fuse_ready, base_dir):
    srv = start_server(base_dir / "server")
    try:
        yield srv
    finally:
        # Mounts first: a FUSE daemon whose servers are gone can hang unmount.
        for m in list(LIVE_MOUNTS):
            m.unmount()
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


@pytest.fixture(scope="session")
def directory(base_dir):
    """A real slapd that knows the unprivileged user the POSIX tests run as:
    without an LDAP configuration only root may use a file system."""
    d = start_slapd(base_dir / "slapd", users=[User("nobody", NOBODY_UID, NOBODY_GID)],
                    groups=[Group("nogroup", NOBODY_GID)])
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def filesystem(server, directory):
    fs = create_filesystem(server)
    server.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=directory.uri, SearchBase=SUFFIX)
    return fs


@pytest.fixture(scope="module")
def mount(server, filesystem, base_dir, request):
    """A fresh file system mounted once for the whole test module."""
    mod = request.module.__name__.rsplit(".", 1)[-1]
    mounter = Mounter(server, base_dir / f"{mod}-{uuid.uuid4().hex[:6]}")
    mounter.parent.mkdir(mode=0o755)
    os.chmod(mounter.parent, 0o755)
    try:
        yield mounter.mount(filesystem.domain, name="mnt")
    finally:
        mounter.cleanup()


@pytest.fixture
def mounter(server, base_dir):
    """Extra mounts for one test; all unmounted afterwards."""
    parent = base_dir / f"extra-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    m = Mounter(server, parent)
    try:
        yield m
    finally:
        m.cleanup()


# ---------------------------------------------------------------------------
# The directory under test (CPFS mount, or $POSIX_TARGET)
# ---------------------------------------------------------------------------

@pytest.fixture
def target_dir(request):
    """A fresh empty directory (mode 0755) for one test.

    On the module's CPFS mount, or, when $POSIX_TARGET is set, inside that
    local directory (which nobody must be able to traverse to)."""
    if os.geteuid() != 0:
        pytest.fail("the POSIX suite runs as root (chown, mknod, setpriv)")
    base = os.environ.get("POSIX_TARGET")
    if base:
        root = Path(base)
        if not root.is_dir():
            pytest.fail(f"POSIX_TARGET={base} is not a directory")
    else:
        m = request.getfixturevalue("mount")
        rc = m.server.proc.poll()
        if rc is not None:
            pytest.fail(f"`cpfs serve` exited with {rc} before this test "
                        f"(stderr tail:\n{m.server.stderr_tail(20)})")
        root = m.path
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80]
    d = root / f"{name}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    os.chmod(d, 0o755)
    yield d
    if base:
        force_rmtree(d)


@pytest.fixture(scope="session")
def run_as():
    """run_as(argv, uid=nobody, gid=nogroup) -> CompletedProcess (text, captured)."""
    return run_as_uid


@pytest.fixture(scope="session")
def nobody():
    """(uid, gid) of the unprivileged user the uid-switch tests run as."""
    return NOBODY_UID, NOBODY_GID


@pytest.fixture(scope="session")
def errno_as():
    """errno_as("open(a[0]).read()", path, uid=...) -> 0 or the errno."""
    return errno_as_uid


# ---------------------------------------------------------------------------
# Logs on failure
# ---------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server's and the mounts' stderr tails to a failure report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in LIVE_SERVERS:
            rc = srv.proc.poll()
            if rc is not None:
                rep.sections.append(("cpfs serve is GONE", f"`cpfs serve` (pid {srv.proc.pid}) exited "
                                     f"with {rc}; a negative code is the signal that ended it"))
            rep.sections.append(("cpfs serve stderr (tail)", srv.stderr_tail(40)))
        for m in LIVE_MOUNTS:
            rep.sections.append((f"cpfs mount {m.path} stderr (tail)", m.stderr_tail(30)))

