"""The mount's read cache (client/src/read_cache.rs).

A small read that misses fetches the 64 KiB segment around it and keeps
it; later reads of those bytes are answered from the mount's memory until
the file changes. Checked here through a real mount and the nodes'
`/metrics`: repeated reads cost the nodes one segment, a mount started
with `--read-cache-mib 0` sends every read, and nothing stale is ever
read: not after this mount's own writes (through the write-behind or
written through) and truncates, not after another mount's write and close
(close-to-open, checked at open; also when the other mount's growing
write was recorded before its data landed), and not by a file held open
while another mount changes it (the watch's notice). All reads use O_DIRECT, so
the kernel's page cache answers none of them.
"""

import mmap
import os
import signal
import uuid

from dataplane_harness import wait_until
from test_data import NOTICE_S
from test_metrics import METRICS_DEADLINE_S, scrape, token, total, wait_settled

SEGMENT = 64 * 1024
PAGE = 4096


def pread_direct(fd, offset, n=PAGE):
    """`n` bytes at `offset` through an O_DIRECT descriptor (aligned buffer)."""
    buf = mmap.mmap(-1, max(n, PAGE))
    try:
        got = os.preadv(fd, [memoryview(buf)[:n]], offset)
        return bytes(buf[:got])
    finally:
        buf.close()


def read_direct(path, offset, n=PAGE):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return pread_direct(fd, offset, n)
    finally:
        os.close(fd)


def served_read_bytes(server, t, fs):
    return total(scrape(server, t), "cpfs_node_served_bytes_total", fs=fs, op="read")


def reads_reaching_the_nodes(server, filesystem, path, data, expect):
    """Reads 4 KiB pages of segment 0 fifty times, then one page of
    segment 2 of the same chunk (served by the same node, so once its bytes
    are counted so are those before it); the bytes the nodes served for
    them, once at least `expect` were counted."""
    t, fs = token(server, "metrics-token"), filesystem.fs_id
    wait_settled(server, t)
    before = served_read_bytes(server, t, fs)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for i in range(50):
            off = (i % 16) * PAGE
            assert pread_direct(fd, off) == data[off:off + PAGE], f"read {i} at {off}"
        off = 2 * SEGMENT
        assert pread_direct(fd, off) == data[off:off + PAGE]
    finally:
        os.close(fd)
    wait_until(f"{expect} read bytes counted",
               lambda: served_read_bytes(server, t, fs) - before >= expect, METRICS_DEADLINE_S)
    return served_read_bytes(server, t, fs) - before


def test_repeated_small_reads_are_answered_from_the_mount(server, filesystem, mount):
    path = mount.path / f"cached-{uuid.uuid4().hex[:8]}.bin"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    # Two segments fetched: the first read's and the last one's.
    assert reads_reaching_the_nodes(server, filesystem, path, data, 2 * SEGMENT) == 2 * SEGMENT


def test_a_mount_without_a_read_cache_sends_every_read(server, filesystem, mounter):
    # In the background (-d): the flag must survive the re-exec.
    m = mounter.mount(filesystem.domain, daemon=True, extra_args=["--read-cache-mib", "0"])
    path = m.path / f"uncached-{uuid.uuid4().hex[:8]}.bin"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    assert reads_reaching_the_nodes(server, filesystem, path, data, 51 * PAGE) == 51 * PAGE


def test_this_mounts_writes_and_truncates_are_read_back(mount):
    path = mount.path / f"own-{uuid.uuid4().hex[:8]}.bin"
    data = bytearray(os.urandom(4 * SEGMENT))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        assert pread_direct(fd, 0) == data[:PAGE]

        # Through the write-behind, from another handle, still open.
        w = os.open(path, os.O_WRONLY)
        os.pwrite(w, b"x" * 10, 100)
        data[100:110] = b"x" * 10
        assert pread_direct(fd, 0) == data[:PAGE], "a write answered but not landed"
        os.close(w)
        assert pread_direct(fd, 0) == data[:PAGE]

        # Written through (O_DSYNC).
        w = os.open(path, os.O_WRONLY | os.O_DSYNC)
        os.pwrite(w, b"y" * PAGE, PAGE)
        os.close(w)
        data[PAGE:2 * PAGE] = b"y" * PAGE
        assert pread_direct(fd, 0, 2 * PAGE) == data[:2 * PAGE]

        # Cut and extended again: the cut bytes read as zeros.
        assert pread_direct(fd, SEGMENT) == data[SEGMENT:SEGMENT + PAGE]
        os.truncate(path, 50)
        os.truncate(path, 4 * SEGMENT)
    finally:
        os.close(fd)
    expected = bytes(data[:50]) + bytes(2 * SEGMENT - 50)
    assert read_direct(path, 0, 2 * SEGMENT) == expected


def test_another_mounts_write_reaches_an_open_file_through_the_notice(mount, mounter):
    a = mount
    b = mounter.mount(a.domain)
    name = f"held-{uuid.uuid4().hex[:8]}.bin"
    old = os.urandom(4 * SEGMENT)
    (a.path / name).write_bytes(old)
    fd = os.open(a.path / name, os.O_RDONLY | os.O_DIRECT)
    try:
        assert pread_direct(fd, 2 * PAGE) == old[2 * PAGE:3 * PAGE]
        new = os.urandom(PAGE)
        w = os.open(b.path / name, os.O_WRONLY)
        os.pwrite(w, new, 2 * PAGE)
        os.close(w)
        # A never opens the file again: only the watch can tell it.
        wait_until("A's open file to read B's write",
                   lambda: pread_direct(fd, 2 * PAGE) == new, NOTICE_S)
    finally:
        os.close(fd)


def test_another_mounts_write_is_read_at_the_next_open(mount, mounter):
    """Close-to-open: once B's write and close returned, A's next open
    reads B's bytes, also when the watch's notice of B's write has not
    reached A yet (twenty rounds, each racing the notice)."""
    a = mount
    b = mounter.mount(a.domain)
    name = f"reopened-{uuid.uuid4().hex[:8]}.bin"
    data = os.urandom(4 * SEGMENT)
    (a.path / name).write_bytes(data)
    for i in range(20):
        off = (i % 8) * PAGE
        assert read_direct(a.path / name, off) == data[off:off + PAGE], f"round {i}: cached"
        new = os.urandom(PAGE)
        with open(b.path / name, "r+b") as f:
            f.seek(off)
            f.write(new)
        data = data[:off] + new + data[off + PAGE:]
        assert read_direct(a.path / name, off) == new, f"round {i}"


def test_a_stream_reads_what_this_mount_wrote_ahead_of_it(mount):
    """A reader of large sequential pieces has its next piece fetched
    ahead (client/src/fuse/readahead.rs). A write this mount takes after
    that fetch began is what the reader reads, not the piece on its way."""
    path = mount.path / f"stream-{uuid.uuid4().hex[:8]}.bin"
    piece = 1 << 20
    data = bytearray(os.urandom(4 * piece))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        # The start of the file begins a stream: piece 1 is fetched ahead.
        assert pread_direct(fd, 0, piece) == data[:piece]
        w = os.open(path, os.O_WRONLY)
        os.pwrite(w, b"z" * PAGE, piece + 2 * PAGE)
        os.close(w)
        data[piece + 2 * PAGE:piece + 3 * PAGE] = b"z" * PAGE
        for i in range(1, 4):
            assert pread_direct(fd, i * piece, piece) == data[i * piece:(i + 1) * piece], f"piece {i}"
        assert pread_direct(fd, 4 * piece, piece) == b"", "nothing past the end"
    finally:
        os.close(fd)


def test_an_append_another_mount_made_is_read_after_its_close(mount, mounter):
    """A file's first growth on a mount records the new size and mtime
    before its data moves (later ones set capacity aside and are recorded
    at close). A mount that opens the file in between reads what the
    nodes hold then (zeros); once the writer closed, its next open must
    read the data, so the close records the file's version again after
    the data landed (B's mount is frozen right after its write returned,
    so that A reads before the data lands). One write of 1 MiB, the
    mount's largest: the kernel sends it as one."""
    a = mount
    b = mounter.mount(a.domain)
    name = f"append-{uuid.uuid4().hex[:8]}.bin"
    (b.path / name).write_bytes(b"")
    data = os.urandom(1 << 20)
    tail = len(data) - PAGE
    fd = os.open(b.path / name, os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            early = read_direct(a.path / name, tail)
            assert len(early) == PAGE, "the size is recorded before the data moves"
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
    finally:
        os.close(fd)
    assert read_direct(a.path / name, tail) == data[tail:]
    assert read_direct(a.path / name, 0, SEGMENT) == data[:SEGMENT]
