"""Capacity set aside ahead of a writer (client/src/fuse/sizes.rs,
`MetaOp::Reserve`).

A file that grows asks the metadata service for capacity ahead of its
writes, and records the size it reached at flush, fsync and close: far
fewer metadata calls than writes. What must still hold is checked here:
the writer sees its own size all along (a listing with attributes or an
expired attribute does not cut it back), another mount sees the size and
the bytes after close, an O_DSYNC write has its size recorded before it
returns (the kernel follows each with an fsync, which records it), and the capacity set aside stops counting once the file is
closed, leaving exactly its bytes counted. A writer evicted before it
recorded its size leaves nothing that a later extension of the file
shows: once its session's lease ran out, the service cuts what lies past
the file's end and gives the capacity back, and the writer's close, when
it comes back, fails with EIO. Exact limits with capacity set
aside are in test_fileset_quotas.py.
"""

import errno
import os
import signal
import time
import uuid

import pytest

from dataplane_harness import (
    LIVE_SERVERS, REPLICAS, Mounter, create_filesystem, start_server, stop_group, wait_until,
)
from test_data import NOTICE_S
from test_metrics import METRICS_DEADLINE_S, scrape, token, total, wait_settled

BLOCK = 4096
CREATE_RESERVE = 64 << 10  # cpfs_proto::meta::CREATE_RESERVE
WRITES = 512  # 2 MiB in 4 KiB appends


def used_bytes(mount):
    st = os.statvfs(mount.path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def size_calls(server, t):
    text = scrape(server, t)
    return (total(text, "cpfs_meta_operations_total", op="reserve"),
            total(text, "cpfs_meta_operations_total", op="written"))


def test_an_appender_sets_capacity_aside_and_records_its_size_at_close(
        server, filesystem, mount, mounter):
    t = token(server, "metrics-token")
    wait_settled(server, t)
    other = mounter.mount(mount.domain)
    path = mount.path / "appended"
    before_calls = size_calls(server, t)
    before_used = used_bytes(mount)

    data = b""
    with open(path, "ab", buffering=0) as f:
        for i in range(WRITES):
            piece = (f"append {i} ".encode() * BLOCK)[:BLOCK]
            assert f.write(piece) == BLOCK
            data += piece
        want = len(data)
        # The writer's own view is where its writes reached, also after a
        # listing with attributes and a fresh getattr.
        assert os.fstat(f.fileno()).st_size == want
        os.listdir(mount.path)
        assert os.stat(path).st_size == want
        assert path.read_bytes() == data
        # What was set aside counts while the file is open.
        assert used_bytes(mount) >= before_used + want

    # Another mount: the size and the bytes after close.
    wait_until("the size on the other mount",
               lambda: os.stat(other.path / "appended").st_size == want, NOTICE_S)
    assert (other.path / "appended").read_bytes() == data
    # Once the handle's release reached the service, exactly the bytes count.
    wait_until("the capacity set aside given back",
               lambda: used_bytes(mount) == before_used + want, NOTICE_S)

    # Capacity was set aside (at the create, then ahead of the growths
    # after the first), and the size was recorded a handful of times (the
    # first growth past what the create set aside, about once a second, at
    # close), not once per write.
    def counted():
        now = size_calls(server, t)
        return now[0] - before_calls[0] >= 1 and now[1] - before_calls[1] >= 1
    wait_until("the size calls counted", counted, METRICS_DEADLINE_S)
    reserves, records = (a - b for a, b in zip(size_calls(server, t), before_calls))
    assert reserves + records < WRITES / 10, (reserves, records)


def test_a_long_writer_s_size_reaches_another_mount_while_it_writes(mount, mounter):
    """Sizes are recorded about once a second while writes go on, not
    only at close: another mount's stat sees the file grow."""
    other = mounter.mount(mount.domain)
    seen = 0
    with open(mount.path / "growing", "ab", buffering=0) as f:
        deadline = time.monotonic() + 10
        written = 0
        while time.monotonic() < deadline:
            written += f.write(b"g" * BLOCK)
            seen = os.stat(other.path / "growing").st_size
            # Past the first write (the create set capacity aside for it).
            if seen > BLOCK:
                break
            time.sleep(0.01)  # a writer that paces itself
        assert BLOCK < seen <= written, (seen, written)


def test_an_o_dsync_write_has_its_size_recorded_before_it_returns(mount, mounter):
    other = mounter.mount(mount.domain)
    fd = os.open(mount.path / "dsync-size", os.O_CREAT | os.O_WRONLY | os.O_DSYNC, 0o644)
    try:
        for i in range(1, 9):
            assert os.write(fd, b"d" * BLOCK) == BLOCK
            # No close, and no further write that could record it: only a
            # record made before the write returned reaches the other mount.
            wait_until(f"size {i * BLOCK} on the other mount",
                       lambda: os.stat(other.path / "dsync-size").st_size == i * BLOCK,
                       NOTICE_S)
    finally:
        os.close(fd)


def settled_calls(server, t, ops):
    """The service's counts of `ops` once they stand still (they reach
    /metrics with the metadata server's heartbeats, every half second):
    three scrapes 0.7 s apart alike, so that at least two heartbeats came
    in between even when one is late on a loaded machine."""
    def calls():
        text = scrape(server, t)
        return {op: total(text, "cpfs_meta_operations_total", op=op) for op in ops}
    seen = [calls()]

    def still():
        now = calls()
        seen.append(now)
        return len(seen) >= 3 and seen[-3] == seen[-2] == now
    wait_until("the call counts standing still", still, METRICS_DEADLINE_S, interval_s=0.7)
    return seen[-1]


def test_a_small_file_s_size_is_recorded_once_with_its_times_or_at_close(
        server, filesystem, mount, mounter):
    """A create sets capacity aside for the file's first writes
    (CREATE_RESERVE), so a small file's data moves without a call before
    it; its size reaches the service once: with the setting of its times
    when the program sets them (cp -a: write, utimensat, chmod), or at
    close. What was set aside is not shown as the file's blocks."""
    t = token(server, "metrics-token")
    other = mounter.mount(mount.domain)
    ops = ("create", "written", "reserve", "setattr")
    before = settled_calls(server, t, ops)

    copied, plain = os.urandom(5000), os.urandom(3000)
    mtime_ns = 1_500_000_000_123_456_789
    with open(mount.path / "copied", "wb", buffering=0) as f:
        assert f.write(copied) == len(copied)
        os.utime(f.fileno(), ns=(mtime_ns, mtime_ns))
        os.fchmod(f.fileno(), 0o640)
        assert os.fstat(f.fileno()).st_blocks == -(-len(copied) // 512)
    with open(mount.path / "plain", "wb", buffering=0) as f:
        assert f.write(plain) == len(plain)

    st = os.stat(other.path / "copied")
    assert (st.st_size, st.st_mtime_ns, st.st_mode & 0o777) == (len(copied), mtime_ns, 0o640)
    assert (other.path / "copied").read_bytes() == copied
    assert (other.path / "plain").read_bytes() == plain

    def moved():
        now = settled_calls(server, t, ops)
        return {op: now[op] - before[op] for op in ops}
    wait_until("the creates counted", lambda: moved()["create"] >= 2, METRICS_DEADLINE_S)
    assert moved() == {"create": 2, "written": 1, "reserve": 0, "setattr": 2}


LEASE_S = 15  # the shortest session lease the service takes


@pytest.fixture(scope="module")
def short_lease_server(fuse_ready, base_dir):
    srv = start_server(base_dir / f"lease-server-{uuid.uuid4().hex[:6]}",
                       extra_env={"CPFS_SESSION_LEASE_SECS": str(LEASE_S)})
    try:
        yield srv
    finally:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


def test_an_evicted_writer_s_unrecorded_bytes_are_cut_and_its_close_says_eio(
        short_lease_server, base_dir):
    """A mount frozen (SIGSTOP) after writing past the recorded size, for
    longer than the session lease, is evicted: the service cuts what it
    wrote past the file's end and gives the capacity back, so a later
    extension reads zeros; when the mount comes back, its close fails
    with EIO instead of recording a size over zeros."""
    srv = short_lease_server
    fs = create_filesystem(srv)
    t = token(srv, "metrics-token")
    parent = base_dir / f"tail-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(srv, parent)
    try:
        a = m.mount(fs.domain, name="a")
        b = m.mount(fs.domain, name="b")
        # Past what the create set aside (64 KiB): the file's first growth,
        # recorded as it is made.
        head, past = b"h" * (CREATE_RESERVE + BLOCK), b"x" * (1 << 20)
        HEAD = len(head)
        fd = os.open(b.path / "tail", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            # The head is recorded; the rest has capacity set aside and
            # would be recorded at close.
            assert os.write(fd, head) == HEAD
            assert os.write(fd, past) == len(past)
            wait_until("both writes on every copy",
                       lambda: total(scrape(srv, t), "cpfs_node_written_bytes_total", fs=fs.fs_id)
                       >= (HEAD + len(past)) * REPLICAS, METRICS_DEADLINE_S)
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                assert os.stat(a.path / "tail").st_size == HEAD
                assert used_bytes(a) >= HEAD + len(past), "the capacity set aside counts"

                # The lease runs out: the tail is cut, then the capacity
                # given back.
                wait_until("the capacity given back after the lease",
                           lambda: used_bytes(a) == HEAD, LEASE_S + 30)
                os.truncate(a.path / "tail", HEAD + len(past))
                with open(a.path / "tail", "rb") as f:
                    assert f.read(HEAD) == head
                    assert f.read() == bytes(len(past)), "the evicted writer's bytes show"
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
        finally:
            with pytest.raises(OSError) as refused:
                os.close(fd)
        assert refused.value.errno == errno.EIO, refused.value
        assert os.stat(a.path / "tail").st_size == HEAD + len(past)
    finally:
        m.cleanup()
