"""The `cpfs mount` and `cpfs stripe` commands."""

import json
import os
import re
import subprocess
import uuid

import pytest

from dataplane_harness import (
    MOUNT_DEADLINE_S, UNMOUNT_DEADLINE_S, cpfs_binary, mount_entry, wait_until,
)

MiB = 1 << 20


def cpfs(*args, timeout=MOUNT_DEADLINE_S):
    return subprocess.run([str(cpfs_binary()), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------
# Mount failures and lifecycle
# ---------------------------------------------------------------------------

def test_mount_unknown_domain_fails_clearly(server, filesystem, base_dir):
    d = base_dir / f"bad-domain-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    fs_part = filesystem.domain.split(".", 1)
    bad = f"{filesystem.fs_id}-zzzzzz.{fs_part[1]}"        # well-formed, but no such target
    for domain in (bad, "not-a-mount-target"):
        try:
            r = cpfs("mount", domain, d, "--controlplane", server.url)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`cpfs mount {domain}` hangs instead of failing")
        finally:
            if mount_entry(d):
                subprocess.run(["fusermount3", "-u", str(d)], capture_output=True, timeout=30)
        assert r.returncode != 0, f"`cpfs mount {domain}` exited 0"
        assert mount_entry(d) is None
        assert r.stderr.strip(), f"`cpfs mount {domain}` failed without a message"
        assert domain in r.stderr, f"the message does not name the domain: {r.stderr!r}"


def test_mount_missing_directory_fails_clearly(server, filesystem, base_dir):
    d = base_dir / f"does-not-exist-{uuid.uuid4().hex[:6]}"
    try:
        r = cpfs("mount", filesystem.domain, d, "--controlplane", server.url)
    except subprocess.TimeoutExpired:
        pytest.fail("`cpfs mount` on a missing directory hangs instead of failing")
    assert r.returncode != 0
    assert not d.exists(), "cpfs mount created the missing mount point"
    assert r.stderr.strip(), "failed without a message"
    assert str(d) in r.stderr, f"the message does not name the directory: {r.stderr!r}"


def test_foreground_mount_exits_0_on_unmount(mounter, filesystem):
    m = mounter.mount(filesystem.domain)
    (m.path / "hello").write_bytes(b"hi")
    r = subprocess.run(["fusermount3", "-u", str(m.path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"fusermount3 -u: {r.stderr}"
    try:
        rc = m.proc.wait(timeout=UNMOUNT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail("`cpfs mount` still runs after its directory was unmounted")
    assert rc == 0, f"`cpfs mount` exited {rc} after unmount:\n{m.stderr_tail()}"
    assert not m.path.joinpath("hello").exists()


def test_daemon_mount(mounter, filesystem):
    m = mounter.mount(filesystem.domain, daemon=True)   # returns once mounted, exit 0
    assert os.path.ismount(m.path)
    (m.path / "from-daemon").write_bytes(b"d")
    assert (m.path / "from-daemon").read_bytes() == b"d"
    # (daemon_pids finds the daemon by its command line; a daemon that rewrote
    # it is not found, and then only the unmount itself is checked.)
    r = subprocess.run(["fusermount3", "-u", str(m.path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"fusermount3 -u: {r.stderr}"
    assert mount_entry(m.path) is None
    wait_until("the daemonised `cpfs mount` to exit after unmount",
               lambda: not m.daemon_pids(), UNMOUNT_DEADLINE_S)


def fuse_readers(pid):
    """The threads of process `pid` reading /dev/fuse, and its /dev/fuse descriptors."""
    # fuser names them fuser-0, fuser-1, ... (and fuser-bg the one joining them).
    threads = [t for t in os.listdir(f"/proc/{pid}/task")
               if re.fullmatch(r"fuser-\d+", open(f"/proc/{pid}/task/{t}/comm").read().strip())]
    fds = [f for f in os.listdir(f"/proc/{pid}/fd")
           if os.path.realpath(f"/proc/{pid}/fd/{f}") == "/dev/fuse"]
    return len(threads), len(fds)


def test_fuse_threads_each_read_their_own_descriptor(mounter, filesystem):
    m = mounter.mount(filesystem.domain, extra_args=["--fuse-threads", "3"])
    assert fuse_readers(m.proc.pid) == (3, 3)
    # Several programs at once, each served by whichever thread the kernel
    # hands its request to: every file comes back whole.
    from concurrent.futures import ThreadPoolExecutor
    blobs = {f"t{i}": os.urandom(300_000 + i) for i in range(8)}
    base = m.path / f"threads-{uuid.uuid4().hex[:8]}"
    base.mkdir()

    def work(name):
        d = base / name
        d.mkdir()
        for j in range(20):
            (d / f"f{j}").write_bytes(blobs[name][j:])
        return [(d / f"f{j}").read_bytes() == blobs[name][j:] for j in range(20)]
    with ThreadPoolExecutor(8) as pool:
        assert all(all(ok) for ok in pool.map(work, blobs))
    assert sorted(os.listdir(base)) == sorted(blobs)
    r = cpfs("mount", filesystem.domain, m.path.parent / "never", "--controlplane",
             m.server.url, "--fuse-threads", "0")
    assert r.returncode != 0 and "--fuse-threads" in r.stderr, r.stderr


def test_data_survives_remount(mounter, filesystem):
    data = os.urandom(5 * MiB + 3)
    m = mounter.mount(filesystem.domain)
    (m.path / "persist").mkdir()
    (m.path / "persist" / "blob").write_bytes(data)
    os.symlink("blob", m.path / "persist" / "link")
    m.unmount()
    m2 = mounter.mount(filesystem.domain)
    assert (m2.path / "persist" / "blob").read_bytes() == data
    assert os.readlink(m2.path / "persist" / "link") == "blob"


def test_mount_is_fuse(mount):
    entry = mount_entry(mount.path)
    assert entry["fstype"].startswith("fuse"), entry


def test_df_reports_the_capacity(mount):
    """The file system was bought with Capacity=2048 (GiB); df shows that size."""
    sv = os.statvfs(mount.path)
    assert sv.f_blocks * sv.f_frsize == 2048 << 30
    assert 0 < sv.f_bavail <= sv.f_blocks


def test_a_sparse_truncate_counts_nothing_and_writes_count_what_they_reach(mount):
    """Capacity counts the bytes writes reached, as du does: extending a file
    by truncate far past the 2 TiB capacity succeeds and stores nothing;
    what is written into the hole then counts, and reads back."""
    p = mount.path / f"sparse-{uuid.uuid4().hex[:6]}"
    huge = 999_999_999_999_999
    with open(p, "wb") as f:
        os.ftruncate(f.fileno(), huge)
    st = os.stat(p)
    assert (st.st_size, st.st_blocks) == (huge, 0)
    data = os.urandom(MiB)
    with open(p, "r+b") as f:
        f.write(data)
    st = os.stat(p)
    assert (st.st_size, st.st_blocks) == (huge, MiB // 512)
    with open(p, "rb") as f:
        assert f.read(MiB) == data
        f.seek(huge // 2)
        assert f.read(4096) == bytes(4096), "the hole reads as zeros"
    os.truncate(p, 1000)
    st = os.stat(p)
    assert (st.st_size, st.st_blocks) == (1000, 2), "cutting frees what was past the end"
    os.unlink(p)


# ---------------------------------------------------------------------------
# Striping
# ---------------------------------------------------------------------------

def stripe_get(path):
    r = cpfs("stripe", "get", path)
    assert r.returncode == 0, f"cpfs stripe get {path}: {r.stderr}"
    layout = json.loads(r.stdout)
    assert set(layout) >= {"chunk_size", "stripe_width"}, layout
    return layout


def stripe_set(path, chunk_size, width):
    return cpfs("stripe", "set", path, "--chunk-size", chunk_size, "--stripe-width", width)


def test_stripe_default_layout(mount):
    layout = stripe_get(mount.path)
    assert layout["chunk_size"] > 0 and layout["stripe_width"] >= 1


def test_stripe_directory_is_inherited(mount, server):
    d = mount.path / f"striped-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    r = stripe_set(d, 65536, 3)
    assert r.returncode == 0, r.stderr
    assert stripe_get(d) == {"chunk_size": 65536, "stripe_width": 3}
    before = set(server.chunk_files())
    data = os.urandom(MiB + 1)
    with open(d / "f", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert stripe_get(d / "f") == {"chunk_size": 65536, "stripe_width": 3}
    (d / "sub").mkdir()
    assert stripe_get(d / "sub") == {"chunk_size": 65536, "stripe_width": 3}
    assert (d / "f").read_bytes() == data
    # 17 chunks of 64 KiB over a width of 3: chunk i on the file's chain
    # i mod 3, each in two copies on two nodes. (Which nodes depends on the
    # chain table, which other tests' failovers and rebalances reshape.)
    ino = str((d / "f").stat().st_ino)
    copies = {}
    for p in server.chunk_files():
        if p in before or p.parent.name != ino:
            continue
        index, chain = p.name.split(".c")
        node = p.relative_to(server.data_dir / "nodes").parts[0]
        copies.setdefault(int(index), []).append((int(chain), node))
    assert sorted(copies) == list(range(17)), f"chunk files of the file: {sorted(copies)}"
    chain_of = {}
    for index, held in copies.items():
        assert len({c for c, _ in held}) == 1, f"chunk {index} on several chains: {held}"
        assert len({n for _, n in held}) >= 2, f"chunk {index} has one copy: {held}"
        chain_of[index] = held[0][0]
    assert len(set(chain_of.values())) == 3, f"not striped over 3 chains: {chain_of}"
    assert all(chain_of[i] == chain_of[i % 3] for i in chain_of), f"stripe order: {chain_of}"


def test_stripe_empty_file_and_refusal_on_data(mount):
    d = mount.path / f"stripe-file-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    empty = d / "empty"
    empty.touch()
    r = stripe_set(empty, 131072, 2)
    assert r.returncode == 0, r.stderr
    assert stripe_get(empty) == {"chunk_size": 131072, "stripe_width": 2}
    data = os.urandom(300_000)
    empty.write_bytes(data)
    assert empty.read_bytes() == data
    # The layout of a file that holds data cannot change under it.
    r = stripe_set(empty, 65536, 3)
    assert r.returncode != 0, "stripe set changed the layout of a file with data"
    assert r.stderr.strip()
    assert stripe_get(empty) == {"chunk_size": 131072, "stripe_width": 2}
    assert empty.read_bytes() == data
