"""Subdirectory mounts on a real mount: through a CPFS access point
(CreateCpfsAccessPoint, `cpfs mount DOMAIN DIR --access-point ID`) or a path
(`DOMAIN:/path`), the directory is the mount's root and nothing above it is
reachable; `df` on a mount inside a fileset shows the fileset's quota and
usage; `mount -t cpfs` (the `mount.cpfs` helper), an fstab line with
`_netdev`, and `umount` work as for other network file systems.
"""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from dataplane_harness import (
    LIVE_SERVERS, Mounter, create_filesystem, mount_entry, require_binary, start_server,
    stop_group, wait_until,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def ap_server(fuse_ready, base_dir):
    srv = start_server(base_dir / f"ap-server-{uuid.uuid4().hex[:6]}",
                       extra_env={"CPFS_FILESET_MIN_SIZE_LIMIT": str(MIB)})
    try:
        yield srv
    finally:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


@pytest.fixture(scope="module")
def tree(ap_server, base_dir):
    """A file system holding /team/proj/f and /other/secret."""
    fs = create_filesystem(ap_server)
    parent = base_dir / f"ap-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(ap_server, parent)
    whole = m.mount(fs.domain, name="whole")
    (whole.path / "team" / "proj").mkdir(parents=True)
    (whole.path / "team" / "proj" / "f").write_bytes(b"team data")
    (whole.path / "other").mkdir()
    (whole.path / "other" / "secret").write_bytes(b"not for the team")
    try:
        yield fs, whole, parent
    finally:
        m.cleanup()


def create_access_point(server, fs_id, root):
    params = {"FileSystemId": fs_id, "RootDirectory.RootPath": root, "Description": "Team share"}
    return server.api("CreateCpfsAccessPoint", **params)["AccessPointId"]


def test_an_access_point_mount_is_confined_to_its_directory(ap_server, tree):
    fs, whole, parent = tree
    ap = create_access_point(ap_server, fs.fs_id, "/team")
    body = ap_server.api("DescribeCpfsAccessPoints", FileSystemId=fs.fs_id, AccessPointId=ap)
    (item,) = body["AccessPoints"]
    assert item["RootDirectory"] == {"RootPath": "/team", "RootPathStatus": "Ready"}, item
    assert item["Status"] == "Active" and item["Description"] == "Team share", item

    m = Mounter(ap_server, parent)
    try:
        mnt = m.mount(fs.domain, name=f"ap-{uuid.uuid4().hex[:6]}", extra_args=["--access-point", ap])
        assert os.listdir(mnt.path) == ["proj"]
        assert (mnt.path / "proj" / "f").read_bytes() == b"team data"
        root = os.stat(mnt.path)
        assert os.stat(mnt.path / "proj" / "..").st_ino == root.st_ino
        # What the team writes is where the whole file system sees it.
        (mnt.path / "proj" / "g").write_bytes(b"written through the access point")
        assert (whole.path / "team" / "proj" / "g").read_bytes() == b"written through the access point"

        sub = m.mount(f"{fs.domain}:/team/proj", name=f"path-{uuid.uuid4().hex[:6]}")
        assert sorted(os.listdir(sub.path)) == ["f", "g"]
    finally:
        m.cleanup()

    # A deleted access point mounts no more, with a clear error.
    ap_server.api("DeleteCpfsAccessPoint", FileSystemId=fs.fs_id, AccessPointId=ap)
    target = parent / f"gone-{uuid.uuid4().hex[:6]}"
    target.mkdir()
    r = subprocess.run([str(require_binary()), "mount", fs.domain, str(target), "--access-point", ap,
                        "--controlplane", ap_server.url], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "access point" in r.stderr, r.stderr
    assert not mount_entry(target)


def test_df_inside_a_fileset_shows_its_quota_and_usage(ap_server, tree):
    fs, whole, parent = tree
    name = f"quota-{uuid.uuid4().hex[:6]}"
    fset = ap_server.api("CreateFileset", FileSystemId=fs.fs_id, FileSystemPath=f"/{name}/",
                         Quota={"SizeLimit": 3 * MIB})["FsetId"]

    def created():
        body = ap_server.api("DescribeFilesets", FileSystemId=fs.fs_id,
                             Filterss=[{"Key": "FsetIds", "Value": fset}])
        return body["Entries"]["Entrie"][0]["Status"] == "CREATED"
    wait_until(f"{fset} CREATED", created, 20)
    (whole.path / name / "data").write_bytes(os.urandom(MIB))
    m = Mounter(ap_server, parent)
    try:
        mnt = m.mount(f"{fs.domain}:/{name}", name=f"df-{uuid.uuid4().hex[:6]}")
        st = os.statvfs(mnt.path)
        assert st.f_blocks * st.f_frsize == 3 * MIB, "the fileset's SizeLimit is the size"
        assert (st.f_blocks - st.f_bfree) * st.f_frsize == MIB, "its usage is what is used"
        out = subprocess.run(["df", "-B1", str(mnt.path)], capture_output=True, text=True, check=True).stdout
        assert str(3 * MIB) in out, out
        whole_st = os.statvfs(whole.path)
        assert whole_st.f_blocks * whole_st.f_frsize > 1000 * 1024 * MIB, "the whole file system's capacity"
    finally:
        m.cleanup()


@pytest.fixture
def mount_helper():
    """mount(8) runs /sbin/mount.<type>: the cpfs binary under that name."""
    helper = Path("/sbin/mount.cpfs")
    placed = False
    if not helper.exists():
        helper.symlink_to(require_binary())
        placed = True
    elif helper.resolve() != Path(require_binary()).resolve():
        pytest.fail(f"{helper} exists and is not this build's cpfs")
    try:
        yield helper
    finally:
        if placed:
            helper.unlink()


def test_mount_t_cpfs_fstab_and_umount(ap_server, tree, mount_helper, tmp_path):
    fs, _whole, parent = tree
    if not shutil.which("mount"):
        pytest.fail("mount(8) is not installed (util-linux)")
    target = parent / f"helper-{uuid.uuid4().hex[:6]}"
    target.mkdir()
    r = subprocess.run(["mount", "-t", "cpfs", f"{fs.domain}:/team", str(target),
                        "-o", f"_netdev,controlplane={ap_server.url}"],
                       capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert mount_entry(target), "mounted when mount(8) returned"
        assert os.listdir(target) == ["proj"]
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=60)
    wait_until(f"{target} unmounted", lambda: not mount_entry(target), 20)

    # The same from an fstab line, as systemd or `mount DIR` reads it.
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{fs.domain}:/team/proj {target} cpfs _netdev,nofail,controlplane={ap_server.url} 0 0\n")
    r = subprocess.run(["mount", "-T", str(fstab), str(target)], capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert "f" in os.listdir(target)
    finally:
        u = subprocess.run(["umount", str(target)], capture_output=True, text=True, timeout=60)
    assert u.returncode == 0, u.stderr
    wait_until(f"{target} unmounted", lambda: not mount_entry(target), 20)

    # Bad options are refused before anything is mounted.
    r = subprocess.run(["mount", "-t", "cpfs", fs.domain, str(target), "-o", "bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "bogus" in r.stderr, r.stderr
    assert not mount_entry(target)
