"""Filesets, their quotas, and user and group quotas on a real mount: a writer meets the size limit
(EDQUOT before any of its data moves, earlier data intact) and goes on once
space is freed; creates meet the file-count limit; nothing moves across a
fileset's boundary (EXDEV, so `mv` copies) and its root stays put (EBUSY);
usage in DescribeFilesets is exact and stays exact across a `kill -9` of
`cpfs serve`. Two LDAP users of one group meet their own and their
group's limits (root is not held back), and usage follows chown.

The server here lets quotas go down to 1 MiB and one file (operator
settings), so that limits are reached with little data; the reference's
floors (10 GiB, 10,000 files) are checked in tests/sdk/test_filesets.py.
"""

import errno
import os
import shutil
import signal
import uuid

import pytest

from dataplane_harness import (
    LIVE_SERVERS, Mounter, create_filesystem, errno_as_uid, start_server, stop_group, wait_until,
)
from ldap_harness import SUFFIX, Group, User, start_slapd

MIB = 1 << 20
CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def quota_server(fuse_ready, base_dir):
    srv = start_server(base_dir / f"fileset-server-{uuid.uuid4().hex[:6]}", extra_env={
        "CPFS_FILESET_MIN_SIZE_LIMIT": str(MIB),
        "CPFS_FILESET_MIN_FILE_COUNT_LIMIT": "1",
    })
    try:
        yield srv
    finally:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


@pytest.fixture(scope="module")
def quota_fs(quota_server):
    return create_filesystem(quota_server)


@pytest.fixture
def quota_mount(quota_server, quota_fs, base_dir):
    parent = base_dir / f"fset-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(quota_server, parent)
    try:
        yield m.mount(quota_fs.domain, name="mnt")
    finally:
        m.cleanup()


def fileset(server, fs_id, path, **quota):
    params = {"FileSystemId": fs_id, "FileSystemPath": path}
    if quota:
        params["Quota"] = quota
    fset = server.api("CreateFileset", **params)["FsetId"]

    def created():
        return entry(server, fs_id, fset)["Status"] == "CREATED"
    wait_until(f"{fset} CREATED", created, 20)
    return fset


def entry(server, fs_id, fset):
    body = server.api("DescribeFilesets", FileSystemId=fs_id,
                      Filterss=[{"Key": "FsetIds", "Value": fset}])
    items = body["Entries"]["Entrie"]
    assert len(items) == 1, body
    return items[0]


def usage(server, fs_id, fset):
    e = entry(server, fs_id, fset)
    return e["SpaceUsage"], e["FileCountUsage"]


def wait_usage(server, fs_id, fset, expected):
    """The metadata service counts at once (limits are checked against
    that) and publishes what DescribeFilesets shows within a quarter of a
    second."""
    last = {}

    def shown():
        last["v"] = usage(server, fs_id, fset)
        return last["v"] == tuple(expected)
    wait_until(f"{fset} usage {expected}", shown, 10, on_timeout=lambda: f"last: {last.get('v')}")


def tree_usage(root):
    """(bytes, inodes) below root, as the service counts them for files
    written from the start (no holes, no extended attributes)."""
    size = count = 0
    for dirpath, dirs, files in os.walk(root):
        count += len(dirs) + len(files)
        size += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return size, count


def test_a_writer_meets_the_size_limit_and_resumes_when_space_is_freed(quota_server, quota_fs, quota_mount):
    name = f"q-{uuid.uuid4().hex[:6]}"
    fset = fileset(quota_server, quota_fs.fs_id, f"/{name}/", SizeLimit=2 * MIB)
    root = quota_mount.path / name
    assert root.is_dir(), "creating the fileset made its directory"

    first = os.urandom(MIB)
    (root / "first").write_bytes(first)
    data = os.urandom(2 * MIB)
    written = 0
    with open(root / "second", "wb", buffering=0) as f:
        with pytest.raises(OSError) as refused:
            while written < len(data):
                written += f.write(data[written:written + CHUNK])
        assert refused.value.errno == errno.EDQUOT, refused.value
        # Up to the limit, and no byte of the refused write.
        assert written == MIB
        assert os.fstat(f.fileno()).st_size == MIB
    assert (root / "first").read_bytes() == first, "earlier data intact"
    assert (root / "second").read_bytes() == data[:MIB]
    wait_usage(quota_server, quota_fs.fs_id, fset, (2 * MIB, 2))

    # Outside the fileset the same writer is not limited.
    (quota_mount.path / f"{name}-outside").write_bytes(data)

    (root / "first").unlink()
    wait_usage(quota_server, quota_fs.fs_id, fset, (MIB, 1))
    with open(root / "second", "ab", buffering=0) as f:
        assert f.write(data[MIB:]) == MIB
    assert (root / "second").read_bytes() == data

    # A higher limit is in force when SetFilesetQuota answers.
    with pytest.raises(OSError) as refused:
        (root / "third").write_bytes(b"x" * 4096)
    assert refused.value.errno == errno.EDQUOT
    quota_server.api("SetFilesetQuota", FileSystemId=quota_fs.fs_id, FsetId=fset, SizeLimit=3 * MIB)
    (root / "third").write_bytes(b"x" * 4096)


def test_with_the_writeback_cache_the_limit_is_met_at_fsync_and_what_fit_is_kept(
        quota_server, quota_fs, base_dir):
    """With `--writeback-cache` the kernel takes every write(); the pages
    past the limit are refused when they are written back, so fsync reports
    EDQUOT, and the file holds exactly what fit."""
    name = f"w-{uuid.uuid4().hex[:6]}"
    fset = fileset(quota_server, quota_fs.fs_id, f"/{name}/", SizeLimit=2 * MIB)
    parent = base_dir / f"fset-wb-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(quota_server, parent)
    try:
        wb = m.mount(quota_fs.domain, name="wb", extra_args=["--writeback-cache"])
        root = wb.path / name
        (root / "first").write_bytes(os.urandom(MIB))
        data = os.urandom(2 * MIB)
        fd = os.open(root / "second", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            assert os.write(fd, data) == len(data), "the kernel takes the write whole"
            with pytest.raises(OSError) as refused:
                os.fsync(fd)
            assert refused.value.errno == errno.EDQUOT, refused.value
        finally:
            try:
                os.close(fd)
            except OSError:
                pass  # the close may report the refused pages again
        other = m.mount(quota_fs.domain, name="other")
        assert (other.path / name / "second").read_bytes() == data[:MIB]
        wait_usage(quota_server, quota_fs.fs_id, fset, (2 * MIB, 2))
    finally:
        m.cleanup()


def test_creates_meet_the_file_count_limit(quota_server, quota_fs, quota_mount):
    name = f"n-{uuid.uuid4().hex[:6]}"
    fset = fileset(quota_server, quota_fs.fs_id, f"/{name}/", FileCountLimit=3)
    root = quota_mount.path / name
    (root / "a").write_bytes(b"a")
    (root / "d").mkdir()
    (root / "d" / "b").symlink_to("a")
    for make in (lambda: (root / "c").write_bytes(b"c"),
                 lambda: (root / "e").mkdir(),
                 lambda: (root / "s").symlink_to("a"),
                 lambda: os.mknod(root / "f")):
        with pytest.raises(OSError) as refused:
            make()
        assert refused.value.errno == errno.EDQUOT, refused.value
    assert sorted(os.listdir(root)) == ["a", "d"]
    # A link names an inode already counted: it is no new file.
    os.link(root / "a", root / "d" / "a2")
    os.unlink(root / "d" / "a2")
    wait_usage(quota_server, quota_fs.fs_id, fset, (1, 3))
    os.unlink(root / "d" / "b")
    (root / "c").write_bytes(b"c")
    wait_usage(quota_server, quota_fs.fs_id, fset, (2, 3))


def test_nothing_crosses_a_fileset_boundary(quota_server, quota_fs, quota_mount):
    name = f"b-{uuid.uuid4().hex[:6]}"
    outer = quota_mount.path / f"{name}-parent"
    outer.mkdir()
    fileset(quota_server, quota_fs.fs_id, f"/{name}-parent/set/")
    inside, outside = outer / "set", quota_mount.path / f"{name}-out"
    # The mount made the parent, so it answers lookups of names it does not
    # hold there itself; the directory the service made for the fileset
    # reaches it as a notice, well before the kernel's TTL (10 s) would.
    wait_until("the mount to see the fileset's directory", inside.is_dir, 3)
    outside.mkdir()
    (inside / "f").write_bytes(b"inside")
    (outside / "g").write_bytes(b"outside")

    for src, dst in ((inside / "f", outside / "f"), (outside / "g", inside / "g")):
        with pytest.raises(OSError) as e:
            os.rename(src, dst)
        assert e.value.errno == errno.EXDEV
    with pytest.raises(OSError) as e:
        os.link(outside / "g", inside / "g")
    assert e.value.errno == errno.EXDEV
    # mv falls back to copy and delete, as across file systems.
    shutil.move(str(outside / "g"), str(inside / "g"))
    assert (inside / "g").read_bytes() == b"outside" and not (outside / "g").exists()

    for src, dst in ((inside, outer / "moved"), (outer, quota_mount.path / f"{name}-moved")):
        with pytest.raises(OSError) as e:
            os.rename(src, dst)
        assert e.value.errno == errno.EBUSY, (src, e.value)
    os.unlink(inside / "f")
    os.unlink(inside / "g")
    with pytest.raises(OSError) as e:
        os.rmdir(inside)
    assert e.value.errno == errno.EBUSY

    # Nesting is refused by the API, both ways.
    for path in (f"/{name}-parent/set/sub/", f"/{name}-parent/"):
        (quota_mount.path / path.strip("/")).mkdir(exist_ok=True)
        with pytest.raises(Exception) as refused:
            quota_server.api("CreateFileset", FileSystemId=quota_fs.fs_id, FileSystemPath=path)
        assert getattr(refused.value, "code", None) == "OperationDenied.NestedFileset"


def test_usage_is_exact_after_kill_9(quota_server, quota_fs, base_dir):
    name = f"k-{uuid.uuid4().hex[:6]}"
    # An existing tree is adopted with what it holds.
    parent = base_dir / f"fset-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(quota_server, parent)
    try:
        mnt = m.mount(quota_fs.domain, name="mnt")
        root = mnt.path / name
        (root / "sub" / "deeper").mkdir(parents=True)
        for i in range(20):
            (root / "sub" / f"f{i}").write_bytes(os.urandom(1000 + i))
        (root / "sub" / "deeper" / "big").write_bytes(os.urandom(3 * MIB + 7))
        fset = fileset(quota_server, quota_fs.fs_id, f"/{name}/")
        wait_usage(quota_server, quota_fs.fs_id, fset, tree_usage(root))

        for i in range(10):
            os.unlink(root / "sub" / f"f{i}")
        os.rename(root / "sub" / "f15", root / "sub" / "deeper" / "f15")
        with open(root / "sub" / "f16", "r+b") as f:
            f.truncate(10)
        (root / "late").write_bytes(b"z" * 12345)
        expected = tree_usage(root)
        wait_usage(quota_server, quota_fs.fs_id, fset, expected)
    finally:
        m.cleanup()

    quota_server.restart(signal.SIGKILL)
    wait_usage(quota_server, quota_fs.fs_id, fset, expected)

    m = Mounter(quota_server, parent / "again")
    (parent / "again").mkdir()
    try:
        mnt = m.mount(quota_fs.domain, name="mnt")
        assert tree_usage(mnt.path / name) == expected
        (mnt.path / name / "after").write_bytes(b"a" * 100)
        wait_usage(quota_server, quota_fs.fs_id, fset, (expected[0] + 100, expected[1] + 1))
    finally:
        m.cleanup()


# ---------------------------------------------------------------------------
# User and group quotas (the SetUserQuota extension)
# ---------------------------------------------------------------------------

ALICE = User("alice", 4101, 4100)
BOB = User("bob", 4102, 4100)
TEAM = Group("team", 4100, members=["alice", "bob"])

WRITE = "f = open(a[0], 'ab'); f.write(b'x' * int(a[1])); f.close()"


@pytest.fixture(scope="module")
def team_directory(base_dir):
    d = start_slapd(base_dir / f"slapd-quota-{uuid.uuid4().hex[:6]}", users=[ALICE, BOB], groups=[TEAM])
    try:
        yield d
    finally:
        d.stop()


def owner_usage(server, fs_id, user_type, user_id):
    body = server.api("DescribeUserQuotas", FileSystemId=fs_id, UserType=user_type, UserId=user_id)
    (q,) = body["UserQuotas"]["UserQuota"]
    return q["SizeReal"], q["FileCountReal"]


def wait_owner_usage(server, fs_id, user_type, user_id, expected):
    last = {}

    def shown():
        last["v"] = owner_usage(server, fs_id, user_type, user_id)
        return last["v"] == expected
    wait_until(f"{user_type} {user_id} usage {expected}", shown, 10,
               on_timeout=lambda: f"last: {last.get('v')}")


def test_user_and_group_quotas_hold_two_users_to_their_limits(quota_server, team_directory, base_dir):
    fs = create_filesystem(quota_server)
    quota_server.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=team_directory.uri, SearchBase=SUFFIX)
    parent = base_dir / f"uq-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(quota_server, parent)
    try:
        mnt = m.mount(fs.domain, name="mnt")
        shared = mnt.path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        set_quota(quota_server, fs.fs_id, "Uid", ALICE.uid, SizeLimit=MIB, FileCountLimit=3)
        set_quota(quota_server, fs.fs_id, "Gid", TEAM.gid, SizeLimit=MIB + MIB // 2)

        def as_user(u, name, n):
            return errno_as_uid(WRITE, shared / name, n, uid=u.uid, gid=u.gid)
        assert as_user(ALICE, "a", 512 * 1024) == 0
        assert as_user(ALICE, "b", 512 * 1024) == 0
        assert as_user(ALICE, "c", 4096) == errno.EDQUOT, "alice's size limit"
        assert as_user(ALICE, "d", 0) == errno.EDQUOT, "alice's fourth file"
        # Bob has no limit of his own; the team's is what stops him.
        assert as_user(BOB, "e", 512 * 1024) == 0
        assert as_user(BOB, "e", 4096) == errno.EDQUOT, "the team's size limit"
        # Root is not held back by others' limits.
        (shared / "root-file").write_bytes(b"r" * MIB)
        os.chown(shared / "root-file", ALICE.uid, ALICE.gid)
        wait_owner_usage(quota_server, fs.fs_id, "Uid", ALICE.uid, (2 * MIB, 4))
        wait_owner_usage(quota_server, fs.fs_id, "Gid", TEAM.gid, (2 * MIB + MIB // 2, 5))

        # Earlier data is intact, and freeing space lets alice write again.
        assert (shared / "a").read_bytes() == b"x" * (512 * 1024)
        os.unlink(shared / "root-file")
        os.unlink(shared / "b")
        wait_owner_usage(quota_server, fs.fs_id, "Uid", ALICE.uid, (512 * 1024, 2))
        assert as_user(ALICE, "c", 4096) == 0
        assert as_user(BOB, "e", 4096) == 0
        wait_owner_usage(quota_server, fs.fs_id, "Gid", TEAM.gid, (MIB + 8192, 3))
    finally:
        m.cleanup()



def set_quota(server, fs_id, user_type, user_id, **limits):
    """SetUserQuota, an extension: the core SDK sends it as a CommonRequest."""
    server.api("SetUserQuota", FileSystemId=fs_id, UserType=user_type, UserId=user_id, **limits)
