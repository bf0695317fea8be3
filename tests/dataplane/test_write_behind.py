"""The mount's write-behind (client/src/fuse/write_behind.rs).

A write is answered once the mount holds it and reaches the nodes in
batches: what a program must still be able to rely on is checked here. Its
own reads see its writes before they land, another mount sees them after
close, the nodes serve fewer requests than there were writes (the batches
are real), and a file opened with O_DSYNC has each write stored before
the write returns: one request per write, none batched. Two mounts appending to files of one directory
see each other's sizes and bytes. Counts come from `/metrics` on a file system of this module's
own (the `filesystem` fixture), once the bytes written are all counted.
"""

import os
import random
import threading

from dataplane_harness import drop_caches, wait_until
from test_data import NOTICE_S
from test_metrics import METRICS_DEADLINE_S, scrape, token, total, wait_settled

BLOCK = 4096
THREADS = 4
WRITES_PER_THREAD = 300
FILE_BLOCKS = 1024  # 4 MiB


def served(server, t, fs):
    text = scrape(server, t)
    return (total(text, "cpfs_node_served_requests_total", fs=fs, op="write"),
            total(text, "cpfs_node_served_bytes_total", fs=fs, op="write"))


def stamp(block, thread, n):
    """A block's content, unique to who wrote it and when."""
    head = f"block {block} thread {thread} write {n} ".encode()
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def write_concurrently(path, flags):
    """Each thread writes its own blocks (those equal to it modulo THREADS)
    at random, some more than once; returns what each block must hold."""
    expected = {}
    lock = threading.Lock()
    errors = []

    def writer(t):
        rng = random.Random(t)
        mine = [b for b in range(FILE_BLOCKS) if b % THREADS == t]
        fd = os.open(path, os.O_WRONLY | flags)
        try:
            for n in range(WRITES_PER_THREAD):
                b = rng.choice(mine)
                data = stamp(b, t, n)
                assert os.pwrite(fd, data, b * BLOCK) == BLOCK
                with lock:
                    expected[b] = data
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    return expected


def check(data, expected):
    for b in range(FILE_BLOCKS):
        got = data[b * BLOCK:(b + 1) * BLOCK]
        want = expected.get(b, bytes(BLOCK))
        assert got == want, f"block {b}: {got[:40]!r}, want {want[:40]!r}"


def zeroed_file(server, t, fs, mount, name):
    """A file of FILE_BLOCKS zero blocks, made once the nodes' counters
    settled; its path and the (requests, bytes) the nodes had served then."""
    wait_settled(server, t)
    path = mount.path / name
    with open(path, "wb") as f:
        f.truncate(FILE_BLOCKS * BLOCK)
    return path, served(server, t, fs)


def counted(server, t, fs, total_bytes):
    """(requests, bytes) served once the nodes counted `total_bytes`."""
    wait_until("every written byte counted by the nodes",
               lambda: served(server, t, fs)[1] >= total_bytes, METRICS_DEADLINE_S)
    return served(server, t, fs)


def test_small_writes_are_read_back_at_once_batched_and_seen_by_another_mount(
        server, filesystem, mount, mounter):
    t, fs = token(server, "metrics-token"), filesystem.fs_id
    path, (requests0, bytes0) = zeroed_file(server, t, fs, mount, "behind.bin")

    # Held open by a reader while the writers write: its read comes before
    # any close, so it is the write-behind that must answer it right.
    reader = os.open(path, os.O_RDONLY)
    try:
        expected = write_concurrently(path, 0)
        check(os.pread(reader, FILE_BLOCKS * BLOCK, 0), expected)
    finally:
        os.close(reader)

    # Closed: another mount, and this one with its cache dropped, read it.
    other = mounter.mount(mount.domain)
    check((other.path / "behind.bin").read_bytes(), expected)
    drop_caches()
    check(path.read_bytes(), expected)

    writes = THREADS * WRITES_PER_THREAD
    requests, written = counted(server, t, fs, bytes0 + writes * BLOCK)
    assert written - bytes0 == writes * BLOCK, "each write reached the nodes once"
    assert requests - requests0 < writes, (
        f"{requests - requests0} requests for {writes} writes: none were batched")


def test_a_file_opened_with_o_dsync_is_written_through(server, filesystem, mount):
    t, fs = token(server, "metrics-token"), filesystem.fs_id
    path, (requests0, bytes0) = zeroed_file(server, t, fs, mount, "dsync.bin")

    expected = write_concurrently(path, os.O_DSYNC)
    check(path.read_bytes(), expected)

    writes = THREADS * WRITES_PER_THREAD
    requests, written = counted(server, t, fs, bytes0 + writes * BLOCK)
    assert written - bytes0 == writes * BLOCK
    # The kernel follows each O_DSYNC write with an fsync, which waits for
    # the write (the mount writes it through anyway): a write still queued
    # when its write() returned would have gone in a batch with others.
    assert requests - requests0 == writes, "one request per write, each answered when stored"


def test_appends_from_two_mounts_and_their_sizes_reach_each_other(mount, mounter):
    """Two mounts append (O_APPEND) to their own file of one directory, in
    turns, with writes of odd sizes; each then sees the other's file whole:
    its size by stat (the kernel of each had cached the other's file as
    empty, so the size must come through invalidation, not a fresh lookup)
    and its bytes after open (close-to-open)."""
    a = mount
    b = mounter.mount(a.domain)
    d = "appends"
    os.mkdir(a.path / d)
    for m, name in ((a, "from-a"), (b, "from-b")):
        os.close(os.open(m.path / d / name, os.O_CREAT | os.O_WRONLY, 0o644))
    # Each kernel caches both files as empty.
    for m in (a, b):
        assert [os.stat(m.path / d / n).st_size for n in ("from-a", "from-b")] == [0, 0]

    rng = random.Random(5)
    wrote = {"from-a": b"", "from-b": b""}
    fds = {n: os.open(m.path / d / n, os.O_WRONLY | os.O_APPEND)
           for m, n in ((a, "from-a"), (b, "from-b"))}
    try:
        for i in range(200):
            for name, fd in fds.items():
                piece = stamp(i, name, rng.randrange(1, 9000))[:rng.randrange(1, 9000)]
                assert os.write(fd, piece) == len(piece)
                wrote[name] += piece
    finally:
        for fd in fds.values():
            os.close(fd)

    for reader, name in ((b, "from-a"), (a, "from-b")):
        want = len(wrote[name])
        wait_until(f"{name}'s size on the other mount",
                   lambda: os.stat(reader.path / d / name).st_size == want, NOTICE_S)
        assert (reader.path / d / name).read_bytes() == wrote[name]


def test_with_the_writeback_cache_rewrites_reach_another_mount_at_close(filesystem, mounter):
    """`--writeback-cache`: after blocks rewritten many times, the writer's
    own reads and another mount after the close see the last bytes and the
    mtime the writer's kernel kept; another mount that held the file's
    pages drops them when the writer's close records the new mtime; a
    write-only handle can change part of a page the kernel has to read
    first. (How many rewrites the kernel merges is its own choice: it
    limits each FUSE mount's dirty pages to a share of the machine's, by
    how much the mount wrote back lately. EDQUOT at fsync, in
    test_fileset_quotas.py, shows the cache at work.)"""
    wb = mounter.mount(filesystem.domain, extra_args=["--writeback-cache"])
    other = mounter.mount(filesystem.domain)
    region, rounds = 16 * BLOCK, 20
    path = wb.path / "rewritten.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for n in range(rounds):
            for b in range(region // BLOCK):
                assert os.pwrite(fd, stamp(b, 0, n), b * BLOCK) == BLOCK
        expected = b"".join(stamp(b, 0, rounds - 1) for b in range(region // BLOCK))
        assert path.read_bytes() == expected
        mtime = os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
    got = (other.path / "rewritten.bin").read_bytes()
    assert got == expected
    assert os.stat(other.path / "rewritten.bin").st_mtime_ns == mtime

    # Part of a page through a write-only handle, of a file this mount's
    # kernel does not hold: it reads the page first.
    (other.path / "patched.bin").write_bytes(b"a" * 10_000)
    fd = os.open(wb.path / "patched.bin", os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"B" * 10, 4100) == 10
    finally:
        os.close(fd)
    assert (other.path / "patched.bin").read_bytes() == b"a" * 4100 + b"B" * 10 + b"a" * 5890
