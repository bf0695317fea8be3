"""POSIX behaviour of a mounted file system, each refusal checked by its errno.

Runs in `target_dir` (see conftest.py): a fresh directory on the CPFS mount,
or under $POSIX_TARGET (e.g. a local ext4 directory) to check the tests
themselves against a kernel file system:

    POSIX_TARGET=/some/local/dir .venv/bin/pytest tests/dataplane/test_posix.py

Runs as root; the uid-switch cases run snippets as nobody (errno_as).
"""

import ctypes
import errno
import mmap
import os
import re
import socket
import stat
import subprocess
import threading
import time

import pytest

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def expect_errno(code, fn, *args, **kwargs):
    """Call fn and require an OSError with exactly this errno."""
    with pytest.raises(OSError) as e:
        fn(*args, **kwargs)
    assert e.value.errno == code, (
        f"{fn.__name__}{args}: expected {errno.errorcode[code]}, "
        f"got {errno.errorcode.get(e.value.errno, e.value.errno)} ({e.value})")


def wait_clock_past(ns, margin_ns=20_000_000):
    """Let the wall clock pass ns + margin (kernel timestamps are coarse), so that
    a later timestamp is strictly greater. Bounded by a deadline."""
    deadline = time.monotonic() + 5
    while time.time_ns() <= ns + margin_ns:
        assert time.monotonic() < deadline, "wall clock does not advance"
        time.sleep(0.005)


# ---------------------------------------------------------------------------
# Regular files
# ---------------------------------------------------------------------------

def test_create_write_read(target_dir):
    p = target_dir / "f"
    data = bytes(range(256)) * 40 + b"tail"
    write_file(p, data)
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(data)
    assert st.st_nlink == 1
    assert read_file(p) == data
    assert os.listdir(target_dir) == ["f"]


def test_create_mode_honours_umask(target_dir):
    os.umask(0o027)
    fd = os.open(target_dir / "f", os.O_CREAT | os.O_WRONLY, 0o666)
    os.close(fd)
    assert stat.S_IMODE(os.stat(target_dir / "f").st_mode) == 0o640
    os.mkdir(target_dir / "d", 0o777)
    assert stat.S_IMODE(os.stat(target_dir / "d").st_mode) == 0o750


def test_append(target_dir):
    p = target_dir / "log"
    write_file(p, b"one\n")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)       # O_APPEND ignores the offset
        os.write(fd, b"two\n")
        os.write(fd, b"three\n")
    finally:
        os.close(fd)
    with open(p, "ab") as f:
        f.write(b"four\n")
    assert read_file(p) == b"one\ntwo\nthree\nfour\n"
    assert os.stat(p).st_size == len(b"one\ntwo\nthree\nfour\n")


def test_overwrite_in_place(target_dir):
    p = target_dir / "f"
    write_file(p, b"a" * 10000)
    fd = os.open(p, os.O_RDWR)
    try:
        assert os.pwrite(fd, b"XYZ", 4095) == 3
        assert os.pread(fd, 7, 4093) == b"aaXYZaa"
    finally:
        os.close(fd)
    expected = b"a" * 4095 + b"XYZ" + b"a" * (10000 - 4098)
    assert read_file(p) == expected
    assert os.stat(p).st_size == 10000


def test_o_trunc_empties(target_dir):
    p = target_dir / "f"
    write_file(p, b"x" * 5000)
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(p).st_size == 0
    assert read_file(p) == b""


def test_rewrite_shorter_with_o_trunc(target_dir):
    # The kernel sends open(O_TRUNC)'s truncate without a file handle; the
    # open handle must still learn the file is empty, or the shorter write
    # leaves the old size behind (seen as the old length, zero-filled).
    p = target_dir / "f"
    write_file(p, os.urandom(3 * MiB + 5))
    for data in (b"short", os.urandom(MiB + 1), b""):
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        assert os.stat(p).st_size == len(data)
        assert read_file(p) == data


def test_truncate_reaches_every_open_handle(target_dir):
    p = target_dir / "f"
    write_file(p, b"x" * 50000)
    writer = os.open(p, os.O_RDWR)
    reader = os.open(p, os.O_RDONLY)
    try:
        os.truncate(p, 0)                  # by path, not through either handle
        assert os.pwrite(writer, b"abc", 0) == 3
        assert os.pread(reader, 100, 0) == b"abc"
        assert os.fstat(writer).st_size == 3
    finally:
        os.close(writer)
        os.close(reader)
    assert read_file(p) == b"abc"
    assert os.stat(p).st_size == 3


def test_read_past_eof_is_empty(target_dir):
    p = target_dir / "f"
    write_file(p, b"abc")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"abc"
        assert os.pread(fd, 100, 3) == b""
        assert os.pread(fd, 100, 1000) == b""
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["new-rdwr", "new-wronly", "existing-wronly", "existing-rdonly"])
def test_fsync_and_fdatasync(target_dir, how):
    p = target_dir / "f"
    if how.startswith("existing"):
        write_file(p, b"")
    flags = {"new-rdwr": os.O_RDWR | os.O_CREAT, "new-wronly": os.O_WRONLY | os.O_CREAT,
             "existing-wronly": os.O_WRONLY, "existing-rdonly": os.O_RDONLY}[how]
    fd = os.open(p, flags, 0o644)
    try:
        if flags & (os.O_WRONLY | os.O_RDWR):
            os.write(fd, b"durable")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert read_file(p) == (b"" if how == "existing-rdonly" else b"durable")


def test_read_on_write_only_fd_is_ebadf(target_dir):
    fd = os.open(target_dir / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        expect_errno(errno.EBADF, os.read, fd, 10)
    finally:
        os.close(fd)


def test_statvfs(target_dir):
    sv = os.statvfs(target_dir)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert sv.f_blocks > 0
    assert sv.f_bavail <= sv.f_blocks
    assert sv.f_namemax >= 255


def test_offsets_beyond_4_gib(target_dir):
    p = target_dir / "far"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"far", 5 << 30) == 3
        assert os.fstat(fd).st_size == (5 << 30) + 3
        assert os.pread(fd, 3, 5 << 30) == b"far"
        assert os.pread(fd, 8, 4 << 30) == bytes(8)
    finally:
        os.close(fd)


def test_mmap_shared_write(target_dir):
    p = target_dir / "mapped"
    write_file(p, bytes(3 * 4096))
    fd = os.open(p, os.O_RDWR)
    try:
        with mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mp:
            mp[4000:4200] = b"m" * 200          # across a page boundary
            mp.flush()
        assert os.pread(fd, 200, 4000) == b"m" * 200
    finally:
        os.close(fd)
    assert read_file(p) == bytes(4000) + b"m" * 200 + bytes(3 * 4096 - 4200)


def test_posix_fallocate(target_dir):
    fd = os.open(target_dir / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"keep")
        os.posix_fallocate(fd, 0, MiB)
        assert os.fstat(fd).st_size == MiB
    finally:
        os.close(fd)
    assert read_file(target_dir / "f") == b"keep" + bytes(MiB - 4)


def test_names_are_arbitrary_bytes(target_dir):
    names = [b"\xff\xfe-not-utf8", "caf\u00e9-\u65e5\u672c".encode(), b"with space",
             b"new\nline", b"tab\there", b"-dash", b"...", b"back\\slash", b"x" * 255]
    d = bytes(target_dir) + b"/"
    for n in names:
        os.close(os.open(d + n, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    assert sorted(os.listdir(bytes(target_dir))) == sorted(names)
    for n in names:
        assert stat.S_ISREG(os.stat(d + n).st_mode), n
    os.rename(d + names[0], d + b"\x80renamed")
    assert os.path.exists(d + b"\x80renamed") and not os.path.exists(d + names[0])


# ---------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------

def test_directories(target_dir):
    os.makedirs(target_dir / "a" / "b" / "c")
    os.mkdir(target_dir / "a" / "x")
    write_file(target_dir / "a" / "file", b"1")
    assert sorted(os.listdir(target_dir / "a")) == ["b", "file", "x"]
    entries = {e.name: e for e in os.scandir(target_dir / "a")}
    assert entries["b"].is_dir(follow_symlinks=False)
    assert entries["file"].is_file(follow_symlinks=False)
    st = os.stat(target_dir / "a" / "b")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o755
    os.rmdir(target_dir / "a" / "b" / "c")
    os.rmdir(target_dir / "a" / "b")
    assert sorted(os.listdir(target_dir / "a")) == ["file", "x"]
    expect_errno(errno.ENOENT, os.stat, target_dir / "a" / "b")


def dot_entries(d):
    """{name: d_ino} of `.` and `..` as readdir lists them (`ls -fai`)."""
    out = {}
    words = subprocess.run(["ls", "-fai1", str(d)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for w in words:
        ino, name = w.split(maxsplit=1)
        if name in (".", ".."):
            out[name] = int(ino)
    return out


def test_dot_and_dot_dot_in_a_listing_name_the_directory_and_its_parent(target_dir):
    os.makedirs(target_dir / "a" / "b")
    for d, parent in ((target_dir / "a" / "b", target_dir / "a"), (target_dir / "a", target_dir)):
        got = dot_entries(d)
        assert got == {".": os.stat(d).st_ino, "..": os.stat(parent).st_ino}, d


def test_directory_nlink_counts_subdirectories(target_dir):
    d = target_dir / "d"
    os.mkdir(d)
    assert os.stat(d).st_nlink == 2
    os.mkdir(d / "a")
    os.mkdir(d / "b")
    write_file(d / "f", b"")
    assert os.stat(d).st_nlink == 4
    os.rmdir(d / "a")
    assert os.stat(d).st_nlink == 3


def test_rmdir_of_a_file_is_enotdir(target_dir):
    write_file(target_dir / "f", b"")
    expect_errno(errno.ENOTDIR, os.rmdir, target_dir / "f")


def test_unlink_of_a_dir_is_eisdir(target_dir):
    os.mkdir(target_dir / "d")
    expect_errno(errno.EISDIR, os.unlink, target_dir / "d")


# ---------------------------------------------------------------------------
# Hard links
# ---------------------------------------------------------------------------

def test_hard_links(target_dir):
    a, b, c = target_dir / "a", target_dir / "b", target_dir / "sub" / "c"
    os.mkdir(target_dir / "sub")
    write_file(a, b"shared")
    os.link(a, b)
    os.link(a, c)
    sa, sb, sc = os.stat(a), os.stat(b), os.stat(c)
    assert sa.st_ino == sb.st_ino == sc.st_ino
    assert sa.st_nlink == sb.st_nlink == sc.st_nlink == 3
    with open(b, "ab") as f:
        f.write(b"+more")
    assert read_file(a) == read_file(c) == b"shared+more"
    os.unlink(a)
    assert os.stat(b).st_nlink == 2
    os.unlink(c)
    assert os.stat(b).st_nlink == 1
    assert read_file(b) == b"shared+more"


def test_link_to_a_directory_is_eperm(target_dir):
    os.mkdir(target_dir / "d")
    expect_errno(errno.EPERM, os.link, target_dir / "d", target_dir / "d2")


def test_link_onto_existing_name_is_eexist(target_dir):
    write_file(target_dir / "a", b"a")
    write_file(target_dir / "b", b"b")
    expect_errno(errno.EEXIST, os.link, target_dir / "a", target_dir / "b")


def test_link_bumps_ctime(target_dir):
    a = target_dir / "a"
    write_file(a, b"x")
    c0 = os.stat(a).st_ctime_ns
    wait_clock_past(c0)
    os.link(a, target_dir / "b")
    assert os.stat(a).st_ctime_ns > c0


# ---------------------------------------------------------------------------
# Symbolic links
# ---------------------------------------------------------------------------

def test_symlinks(target_dir):
    write_file(target_dir / "target", b"0123456789")
    os.symlink("target", target_dir / "rel")
    os.symlink(str(target_dir / "target"), target_dir / "abs")
    for name, dest in (("rel", "target"), ("abs", str(target_dir / "target"))):
        link = target_dir / name
        assert os.readlink(link) == dest
        lst = os.lstat(link)
        assert stat.S_ISLNK(lst.st_mode)
        assert lst.st_size == len(dest)
        st = os.stat(link)
        assert stat.S_ISREG(st.st_mode)
        assert st.st_size == 10
        assert st.st_ino == os.stat(target_dir / "target").st_ino
        assert lst.st_ino != st.st_ino
        assert read_file(link) == b"0123456789"
    entry = {e.name: e for e in os.scandir(target_dir)}["rel"]
    assert entry.is_symlink()


def test_dangling_symlink(target_dir):
    os.symlink("missing", target_dir / "dangling")
    assert stat.S_ISLNK(os.lstat(target_dir / "dangling").st_mode)
    expect_errno(errno.ENOENT, os.stat, target_dir / "dangling")
    expect_errno(errno.ENOENT, os.open, target_dir / "dangling", os.O_RDONLY)
    # Creating through a dangling link creates its target.
    fd = os.open(target_dir / "dangling", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    assert os.path.isfile(target_dir / "missing")


def test_symlink_self_loop_is_eloop(target_dir):
    os.symlink("loop", target_dir / "loop")
    expect_errno(errno.ELOOP, os.stat, target_dir / "loop")
    expect_errno(errno.ELOOP, os.open, target_dir / "loop", os.O_RDONLY)
    os.symlink("pong", target_dir / "ping")
    os.symlink("ping", target_dir / "pong")
    expect_errno(errno.ELOOP, os.stat, target_dir / "ping")


def test_o_nofollow_on_symlink_is_eloop(target_dir):
    write_file(target_dir / "t", b"x")
    os.symlink("t", target_dir / "l")
    expect_errno(errno.ELOOP, os.open, target_dir / "l", os.O_RDONLY | os.O_NOFOLLOW)


def test_symlink_over_existing_is_eexist(target_dir):
    write_file(target_dir / "f", b"")
    expect_errno(errno.EEXIST, os.symlink, "x", target_dir / "f")


def test_long_symlink_target(target_dir):
    dest = "d/" * 1000 + "end"     # 2003 bytes, under PATH_MAX
    os.symlink(dest, target_dir / "long")
    assert os.readlink(target_dir / "long") == dest
    assert os.lstat(target_dir / "long").st_size == len(dest)


# ---------------------------------------------------------------------------
# Rename
# ---------------------------------------------------------------------------

def test_rename_simple(target_dir):
    write_file(target_dir / "a", b"content")
    ino = os.stat(target_dir / "a").st_ino
    os.rename(target_dir / "a", target_dir / "b")
    expect_errno(errno.ENOENT, os.stat, target_dir / "a")
    assert os.stat(target_dir / "b").st_ino == ino
    assert read_file(target_dir / "b") == b"content"
    assert os.listdir(target_dir) == ["b"]


def test_rename_over_existing_file(target_dir):
    write_file(target_dir / "new", b"new")
    write_file(target_dir / "old", b"old")
    new_ino = os.stat(target_dir / "new").st_ino
    fd = os.open(target_dir / "old", os.O_RDONLY)
    try:
        os.rename(target_dir / "new", target_dir / "old")
        assert os.pread(fd, 10, 0) == b"old"      # the replaced inode lives on
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert read_file(target_dir / "old") == b"new"
    assert os.stat(target_dir / "old").st_ino == new_ino
    assert os.listdir(target_dir) == ["old"]


def test_rename_is_atomic_for_readers(target_dir):
    """While a file is replaced by rename again and again, a concurrent reader
    always finds the name, and always with one complete version."""
    dst = target_dir / "current"
    write_file(dst, b"version 0000\n" * 100)
    stop = threading.Event()
    problems = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                data = read_file(dst)
            except OSError as e:
                problems.append(f"open/read: {e}")
                continue
            reads[0] += 1
            lines = set(data.splitlines())
            if len(lines) != 1 or len(data) != 1300 or not re.fullmatch(rb"version \d{4}", lines.pop()):
                problems.append(f"torn content: {data[:40]!r}... ({len(data)} bytes)")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(1, 201):
            tmp = target_dir / f"tmp{i}"
            write_file(tmp, b"version %04d\n" % i * 100)
            os.rename(tmp, dst)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive(), "reader thread hung"
    assert not problems, f"{len(problems)} bad reads of {reads[0]}, e.g. {problems[:5]}"
    assert reads[0] > 0
    assert read_file(dst) == b"version 0200\n" * 100
    assert os.listdir(target_dir) == ["current"]


def test_rename_across_directories(target_dir):
    os.mkdir(target_dir / "src")
    os.mkdir(target_dir / "dst")
    write_file(target_dir / "src" / "f", b"moved")
    os.mkdir(target_dir / "src" / "sub")
    write_file(target_dir / "src" / "sub" / "inner", b"inner")
    os.rename(target_dir / "src" / "f", target_dir / "dst" / "g")
    os.rename(target_dir / "src" / "sub", target_dir / "dst" / "sub")
    assert os.listdir(target_dir / "src") == []
    assert sorted(os.listdir(target_dir / "dst")) == ["g", "sub"]
    assert read_file(target_dir / "dst" / "g") == b"moved"
    assert read_file(target_dir / "dst" / "sub" / "inner") == b"inner"
    # ".." of the moved directory follows it.
    assert os.stat(target_dir / "dst" / "sub" / "..").st_ino == os.stat(target_dir / "dst").st_ino


def test_rename_dir_over_empty_dir(target_dir):
    os.mkdir(target_dir / "a")
    write_file(target_dir / "a" / "f", b"x")
    os.mkdir(target_dir / "empty")
    ino = os.stat(target_dir / "a").st_ino
    os.rename(target_dir / "a", target_dir / "empty")
    assert os.stat(target_dir / "empty").st_ino == ino
    assert os.listdir(target_dir / "empty") == ["f"]
    assert os.listdir(target_dir) == ["empty"]


def test_rename_dir_over_nonempty_dir_is_enotempty(target_dir):
    os.mkdir(target_dir / "a")
    os.mkdir(target_dir / "full")
    write_file(target_dir / "full" / "f", b"x")
    expect_errno(errno.ENOTEMPTY, os.rename, target_dir / "a", target_dir / "full")
    assert os.path.isdir(target_dir / "a")
    assert os.listdir(target_dir / "full") == ["f"]


def test_rename_file_over_dir_is_eisdir(target_dir):
    write_file(target_dir / "f", b"x")
    os.mkdir(target_dir / "d")
    expect_errno(errno.EISDIR, os.rename, target_dir / "f", target_dir / "d")


def test_rename_dir_over_file_is_enotdir(target_dir):
    os.mkdir(target_dir / "d")
    write_file(target_dir / "f", b"x")
    expect_errno(errno.ENOTDIR, os.rename, target_dir / "d", target_dir / "f")


def test_rename_dir_into_itself_is_einval(target_dir):
    os.makedirs(target_dir / "d" / "sub")
    expect_errno(errno.EINVAL, os.rename, target_dir / "d", target_dir / "d" / "sub" / "d")


def test_rename_noreplace_over_existing_is_eexist(target_dir):
    write_file(target_dir / "a", b"a")
    write_file(target_dir / "b", b"b")
    libc = ctypes.CDLL(None, use_errno=True)
    RENAME_NOREPLACE, AT_FDCWD = 1, -100
    ret = libc.renameat2(AT_FDCWD, bytes(target_dir / "a"), AT_FDCWD, bytes(target_dir / "b"),
                         RENAME_NOREPLACE)
    assert ret == -1 and ctypes.get_errno() == errno.EEXIST, (ret, ctypes.get_errno())
    assert read_file(target_dir / "b") == b"b"
    ret = libc.renameat2(AT_FDCWD, bytes(target_dir / "a"), AT_FDCWD, bytes(target_dir / "c"),
                         RENAME_NOREPLACE)
    assert ret == 0, ctypes.get_errno()
    assert read_file(target_dir / "c") == b"a"


def test_rename_missing_is_enoent(target_dir):
    expect_errno(errno.ENOENT, os.rename, target_dir / "nope", target_dir / "x")


def test_rename_onto_itself_and_onto_own_hard_link(target_dir):
    write_file(target_dir / "a", b"x")
    os.rename(target_dir / "a", target_dir / "a")
    os.link(target_dir / "a", target_dir / "b")
    os.rename(target_dir / "a", target_dir / "b")    # same inode: a no-op
    assert sorted(os.listdir(target_dir)) == ["a", "b"]
    assert os.stat(target_dir / "a").st_nlink == 2


# ---------------------------------------------------------------------------
# Unlink of an open file
# ---------------------------------------------------------------------------

def test_unlink_open_file_stays_readable(target_dir):
    p = target_dir / "f"
    data = os.urandom(300_000)
    write_file(p, data)
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        expect_errno(errno.ENOENT, os.stat, p)
        assert os.listdir(target_dir) == []          # no hidden leftovers
        assert os.pread(fd, len(data) + 10, 0) == data
        os.pwrite(fd, b"more", len(data))
        assert os.pread(fd, 4, len(data)) == b"more"
        assert os.fstat(fd).st_size == len(data) + 4
    finally:
        os.close(fd)
    expect_errno(errno.ENOENT, os.stat, p)
    assert os.listdir(target_dir) == []


def test_unlinked_open_file_has_nlink_zero(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    fd = os.open(p, os.O_RDONLY)
    try:
        os.unlink(p)
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Mode, owner, group
# ---------------------------------------------------------------------------

def test_chmod(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    for mode in (0o600, 0o644, 0o755, 0o4755, 0o2750, 0o1777, 0o000, 0o7777):
        os.chmod(p, mode)
        got = stat.S_IMODE(os.stat(p).st_mode)
        assert got == mode, f"chmod {mode:o}: mode is {got:o}"
    os.mkdir(target_dir / "d")
    os.chmod(target_dir / "d", 0o1777)
    assert stat.S_IMODE(os.stat(target_dir / "d").st_mode) == 0o1777


def test_chown_as_root(target_dir, errno_as):
    p = target_dir / "f"
    write_file(p, b"x")
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (0, 0)
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(p, -1, 42)                  # -1 leaves the owner alone
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 42)
    os.chown(p, 77, -1)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (77, 42)


def test_lchown_changes_the_link_not_the_target(target_dir):
    write_file(target_dir / "t", b"x")
    os.symlink("t", target_dir / "l")
    os.lchown(target_dir / "l", 1000, 1000)
    assert (os.lstat(target_dir / "l").st_uid, os.lstat(target_dir / "l").st_gid) == (1000, 1000)
    assert (os.stat(target_dir / "t").st_uid, os.stat(target_dir / "t").st_gid) == (0, 0)


def test_nobody_reads_0644_but_not_0600(target_dir, errno_as):
    pub, priv = target_dir / "public", target_dir / "private"
    write_file(pub, b"everyone", 0o644)
    write_file(priv, b"secret", 0o600)
    os.chmod(pub, 0o644)
    os.chmod(priv, 0o600)
    # Positive control first: nobody reaches the directory and reads a 0644 file.
    assert errno_as("assert open(a[0]).read() == 'everyone'", pub) == 0
    assert errno_as("open(a[0], 'rb').read()", priv) == errno.EACCES
    assert errno_as("open(a[0], 'ab')", pub) == errno.EACCES
    assert errno_as("os.stat(a[0])", priv) == 0      # stat needs no read permission


def test_a_listable_but_unsearchable_directory_lists_names_only(target_dir, errno_as):
    """Read without search permission: the listing (which comes with each
    entry's attributes, readdirplus) shows the names, but no entry can be
    reached, not even right after the listing handed its attributes over."""
    d = target_dir / "r-only"
    d.mkdir()
    write_file(d / "f", b"x", 0o644)
    os.chmod(d, 0o744)
    assert errno_as("assert os.listdir(a[0]) == ['f'], os.listdir(a[0])", d) == 0
    assert errno_as("os.listdir(a[0]); os.stat(os.path.join(a[0], 'f'))", d) == errno.EACCES
    assert errno_as("os.listdir(a[0]); open(os.path.join(a[0], 'f')).read()", d) == errno.EACCES
    os.chmod(d, 0o755)
    assert errno_as("os.listdir(a[0]); assert open(os.path.join(a[0], 'f')).read() == 'x'", d) == 0


def test_nobody_chown_and_chmod_are_eperm(target_dir, errno_as, nobody):
    NOBODY_UID, NOBODY_GID = nobody
    mine = target_dir / "nobodys"
    write_file(mine, b"x")
    os.chown(mine, NOBODY_UID, NOBODY_GID)
    roots = target_dir / "roots"
    write_file(roots, b"x")
    # The owner may chmod its own file...
    assert errno_as("os.chmod(a[0], 0o600)", mine) == 0
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o600
    # ...but not give it away, nor touch root's file.
    assert errno_as("os.chown(a[0], 0, -1)", mine) == errno.EPERM
    assert errno_as("os.chown(a[0], int(a[1]), -1)", roots, str(NOBODY_UID)) == errno.EPERM
    assert errno_as("os.chmod(a[0], 0o777)", roots) == errno.EPERM
    assert errno_as("os.utime(a[0], (1, 1))", roots) == errno.EPERM
    assert errno_as("os.utime(a[0], None)", roots) == errno.EACCES
    assert os.stat(mine).st_uid == NOBODY_UID
    assert stat.S_IMODE(os.stat(roots).st_mode) == 0o644


def test_new_file_belongs_to_the_caller(target_dir, errno_as, nobody):
    NOBODY_UID, NOBODY_GID = nobody
    d = target_dir / "open"
    os.mkdir(d)
    os.chmod(d, 0o777)
    assert errno_as("os.close(os.open(a[0], os.O_CREAT | os.O_WRONLY, 0o640))", d / "f") == 0
    assert errno_as("os.mkdir(a[0])", d / "sub") == 0
    for name in ("f", "sub"):
        st = os.stat(d / name)
        assert (st.st_uid, st.st_gid) == (NOBODY_UID, NOBODY_GID), name
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640


def test_setgid_directory_inheritance(target_dir, errno_as):
    d = target_dir / "shared"
    os.mkdir(d)
    os.chown(d, 0, 4321)
    os.chmod(d, 0o2777)
    assert errno_as("os.close(os.open(a[0], os.O_CREAT | os.O_WRONLY, 0o644))", d / "f") == 0
    assert errno_as("os.mkdir(a[0])", d / "sub") == 0
    assert os.stat(d / "f").st_gid == 4321
    assert os.stat(d / "sub").st_gid == 4321
    assert os.stat(d / "sub").st_mode & stat.S_ISGID


def test_sticky_directory_unlink_by_other_is_eperm(target_dir, errno_as):
    d = target_dir / "sticky"
    os.mkdir(d)
    os.chmod(d, 0o1777)
    write_file(d / "roots", b"x")
    assert errno_as("os.unlink(a[0])", d / "roots") == errno.EPERM
    assert errno_as("os.rename(a[0], a[1])", d / "roots", d / "taken") == errno.EPERM
    # ...while nobody may remove its own file there.
    assert errno_as("open(a[0], 'w').close(); os.unlink(a[0])", d / "own") == 0
    assert os.listdir(d) == ["roots"]


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

OLD_A = 1_500_000_000 * 10**9     # whole seconds: no precision question here
OLD_M = 1_600_000_000 * 10**9


def test_write_bumps_mtime_and_ctime(target_dir):
    p = target_dir / "f"
    write_file(p, b"before")
    os.utime(p, ns=(OLD_A, OLD_M))
    c0 = os.stat(p).st_ctime_ns
    wait_clock_past(c0)
    with open(p, "r+b") as f:
        f.write(b"after!")
    st = os.stat(p)
    assert st.st_mtime_ns > c0, "write did not update mtime"
    assert st.st_ctime_ns > c0, "write did not update ctime"
    assert abs(st.st_mtime_ns - time.time_ns()) < 60 * 10**9


def test_read_changes_neither_mtime_nor_ctime(target_dir):
    p = target_dir / "f"
    write_file(p, b"data")
    os.utime(p, ns=(OLD_A, OLD_M))
    st0 = os.stat(p)
    wait_clock_past(st0.st_ctime_ns)
    assert read_file(p) == b"data"
    st = os.stat(p)
    assert st.st_mtime_ns == OLD_M
    assert st.st_ctime_ns == st0.st_ctime_ns


def test_chmod_bumps_ctime_only(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    os.utime(p, ns=(OLD_A, OLD_M))
    c0 = os.stat(p).st_ctime_ns
    wait_clock_past(c0)
    os.chmod(p, 0o600)
    st = os.stat(p)
    assert st.st_ctime_ns > c0, "chmod did not update ctime"
    assert st.st_mtime_ns == OLD_M, "chmod changed mtime"
    assert st.st_atime_ns == OLD_A, "chmod changed atime"


def test_chown_bumps_ctime_only(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    os.utime(p, ns=(OLD_A, OLD_M))
    c0 = os.stat(p).st_ctime_ns
    wait_clock_past(c0)
    os.chown(p, 1000, 1000)
    st = os.stat(p)
    assert st.st_ctime_ns > c0
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD_A, OLD_M)


def test_utime_sets_times(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    os.utime(p, (1_000_000_000, 1_100_000_000))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000 * 10**9, 1_100_000_000 * 10**9)
    before = time.time_ns()
    wait_clock_past(before, margin_ns=0)
    os.utime(p, None)
    st = os.stat(p)
    after = time.time_ns()
    for t in (st.st_atime_ns, st.st_mtime_ns):
        assert before - 10**9 <= t <= after + 10**9, "utime(None) did not set the current time"


def test_utime_nanoseconds(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    ns = (1_500_000_000_123_456_789, 1_600_000_000_987_654_321)
    os.utime(p, ns=ns)
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == ns


def test_utime_on_directory(target_dir):
    os.mkdir(target_dir / "d")
    os.utime(target_dir / "d", ns=(OLD_A, OLD_M))
    st = os.stat(target_dir / "d")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD_A, OLD_M)


def test_directory_entries_bump_dir_mtime_and_ctime(target_dir):
    d = target_dir / "d"
    os.mkdir(d)
    for action in ("create", "mkdir", "rename", "unlink", "rmdir"):
        os.utime(d, ns=(OLD_A, OLD_M))
        c0 = os.stat(d).st_ctime_ns
        wait_clock_past(c0)
        if action == "create":
            write_file(d / "f", b"")
        elif action == "mkdir":
            os.mkdir(d / "sub")
        elif action == "rename":
            os.rename(d / "f", d / "g")
        elif action == "unlink":
            os.unlink(d / "g")
        else:
            os.rmdir(d / "sub")
        st = os.stat(d)
        assert st.st_mtime_ns > c0, f"{action} did not update the directory's mtime"
        assert st.st_ctime_ns > c0, f"{action} did not update the directory's ctime"


def test_truncate_bumps_mtime_and_ctime(target_dir):
    p = target_dir / "f"
    write_file(p, b"x" * 100)
    os.utime(p, ns=(OLD_A, OLD_M))
    c0 = os.stat(p).st_ctime_ns
    wait_clock_past(c0)
    os.truncate(p, 10)
    st = os.stat(p)
    assert st.st_mtime_ns > c0 and st.st_ctime_ns > c0


# ---------------------------------------------------------------------------
# Truncate and sparse files
# ---------------------------------------------------------------------------

def test_truncate_up_reads_zeros(target_dir):
    p = target_dir / "f"
    write_file(p, b"abc")
    os.truncate(p, 5 * MiB + 7)
    assert os.stat(p).st_size == 5 * MiB + 7
    data = read_file(p)
    assert data[:3] == b"abc"
    assert data[3:] == bytes(5 * MiB + 4)


def test_truncate_down(target_dir):
    p = target_dir / "f"
    data = os.urandom(3 * MiB + 123)
    write_file(p, data)
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, MiB + 1)
        assert os.fstat(fd).st_size == MiB + 1
    finally:
        os.close(fd)
    assert read_file(p) == data[:MiB + 1]
    os.truncate(p, 0)
    assert read_file(p) == b""


def test_truncate_down_then_up_does_not_resurrect_data(target_dir):
    p = target_dir / "f"
    write_file(p, b"\xff" * (2 * MiB))
    os.truncate(p, 100)
    os.truncate(p, 2 * MiB)
    data = read_file(p)
    assert data[:100] == b"\xff" * 100
    assert data[100:] == bytes(2 * MiB - 100), "old bytes came back after truncate down + up"


def test_sparse_file(target_dir):
    p = target_dir / "sparse"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"end", 10 * MiB) == 3
        assert os.fstat(fd).st_size == 10 * MiB + 3
    finally:
        os.close(fd)
    assert os.stat(p).st_size == 10 * MiB + 3
    data = read_file(p)
    assert len(data) == 10 * MiB + 3
    assert data[-3:] == b"end"
    assert data[:10 * MiB] == bytes(10 * MiB), "the hole does not read as zeros"
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 6, 10 * MiB - 3) == b"\0\0\0end"
        assert os.pread(fd, 4096, 5 * MiB) == bytes(4096)
    finally:
        os.close(fd)


def test_write_into_a_hole(target_dir):
    p = target_dir / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"Z", 8 * MiB)
        os.pwrite(fd, b"middle", 3 * MiB + 5)
    finally:
        os.close(fd)
    data = read_file(p)
    assert len(data) == 8 * MiB + 1
    assert data[3 * MiB + 5:3 * MiB + 11] == b"middle"
    assert data.count(0) == len(data) - 7


# ---------------------------------------------------------------------------
# Extended attributes
# ---------------------------------------------------------------------------

def test_xattrs(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    os.setxattr(p, "user.color", b"blue")
    os.setxattr(p, "user.binary", b"\0\1\2\xff" * 100)
    assert os.getxattr(p, "user.color") == b"blue"
    assert os.getxattr(p, "user.binary") == b"\0\1\2\xff" * 100
    assert {"user.color", "user.binary"} <= set(os.listxattr(p))
    os.setxattr(p, "user.color", b"green")                   # replace
    assert os.getxattr(p, "user.color") == b"green"
    os.setxattr(p, "user.empty", b"")
    assert os.getxattr(p, "user.empty") == b""
    os.removexattr(p, "user.color")
    assert "user.color" not in os.listxattr(p)
    expect_errno(errno.ENODATA, os.getxattr, p, "user.color")
    expect_errno(errno.ENODATA, os.removexattr, p, "user.color")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.never-set")


def test_xattr_create_and_replace_flags(target_dir):
    p = target_dir / "f"
    write_file(p, b"x")
    os.setxattr(p, "user.k", b"1", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.k", b"2", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, p, "user.other", b"2", os.XATTR_REPLACE)
    os.setxattr(p, "user.k", b"3", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.k") == b"3"


def test_xattr_on_directory_and_survives_rename(target_dir):
    os.mkdir(target_dir / "d")
    os.setxattr(target_dir / "d", "user.tag", b"dir")
    os.rename(target_dir / "d", target_dir / "e")
    assert os.getxattr(target_dir / "e", "user.tag") == b"dir"


# ---------------------------------------------------------------------------
# Special files
# ---------------------------------------------------------------------------

def test_mkfifo(target_dir):
    p = target_dir / "fifo"
    os.mkfifo(p, 0o600)
    st = os.stat(p)
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    r = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"through the pipe")
        finally:
            os.close(w)
        assert os.read(r, 100) == b"through the pipe"
    finally:
        os.close(r)


def test_mknod_char_device(target_dir):
    p = target_dir / "null"
    dev = os.makedev(1, 3)
    os.mknod(p, stat.S_IFCHR | 0o600, dev)
    st = os.lstat(p)
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == dev
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_mknod_regular_and_socket(target_dir):
    os.mknod(target_dir / "reg", stat.S_IFREG | 0o640)
    assert stat.S_ISREG(os.stat(target_dir / "reg").st_mode)
    assert os.stat(target_dir / "reg").st_size == 0
    path = str(target_dir / "sock")
    if len(path.encode()) >= 108:
        pytest.fail(f"socket path too long for AF_UNIX: {path}")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        s.close()


# ---------------------------------------------------------------------------
# A big directory
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_directory_of_100000_entries(target_dir):
    d = target_dir / "big"
    os.mkdir(d)
    n = 100_000
    base = str(d) + "/"
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    for i in range(n):
        os.close(os.open(f"{base}f{i:06d}", flags, 0o644))
    count = 0
    names = set()
    with os.scandir(d) as it:
        for e in it:
            count += 1
            names.add(e.name)
    assert count == n, f"scandir returned {count} entries, expected {n}"
    assert len(names) == n, f"scandir returned {count - len(names)} duplicates"
    assert names == {f"f{i:06d}" for i in range(n)}
    assert os.stat(f"{base}f099999").st_size == 0


# ---------------------------------------------------------------------------
# Error numbers
# ---------------------------------------------------------------------------

def test_enoent(target_dir):
    missing = target_dir / "missing"
    expect_errno(errno.ENOENT, os.open, missing, os.O_RDONLY)
    expect_errno(errno.ENOENT, os.stat, missing)
    expect_errno(errno.ENOENT, os.unlink, missing)
    expect_errno(errno.ENOENT, os.rmdir, missing)
    expect_errno(errno.ENOENT, os.listdir, missing)
    expect_errno(errno.ENOENT, os.mkdir, missing / "child")
    expect_errno(errno.ENOENT, os.open, missing / "child", os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.ENOENT, os.readlink, missing)
    expect_errno(errno.ENOENT, os.chmod, missing, 0o644)


def test_eexist(target_dir):
    os.mkdir(target_dir / "d")
    expect_errno(errno.EEXIST, os.mkdir, target_dir / "d")
    write_file(target_dir / "f", b"x")
    expect_errno(errno.EEXIST, os.open, target_dir / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    expect_errno(errno.EEXIST, os.open, target_dir / "d", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    expect_errno(errno.EEXIST, os.mkdir, target_dir / "f")
    expect_errno(errno.EEXIST, os.mkfifo, target_dir / "f")
    assert read_file(target_dir / "f") == b"x"


def test_enotempty(target_dir):
    os.makedirs(target_dir / "d" / "sub")
    expect_errno(errno.ENOTEMPTY, os.rmdir, target_dir / "d")
    os.rmdir(target_dir / "d" / "sub")
    write_file(target_dir / "d" / "f", b"")
    expect_errno(errno.ENOTEMPTY, os.rmdir, target_dir / "d")
    os.unlink(target_dir / "d" / "f")
    os.rmdir(target_dir / "d")


def test_eisdir(target_dir):
    os.mkdir(target_dir / "d")
    expect_errno(errno.EISDIR, os.open, target_dir / "d", os.O_WRONLY)
    expect_errno(errno.EISDIR, os.open, target_dir / "d", os.O_RDWR)
    expect_errno(errno.EISDIR, os.open, target_dir / "d", os.O_WRONLY | os.O_CREAT, 0o644)
    fd = os.open(target_dir / "d", os.O_RDONLY)      # read-only open of a dir is fine
    try:
        expect_errno(errno.EISDIR, os.read, fd, 10)
    finally:
        os.close(fd)


def test_enotdir(target_dir):
    f = target_dir / "f"
    write_file(f, b"x")
    expect_errno(errno.ENOTDIR, os.open, f / "x", os.O_RDONLY)
    expect_errno(errno.ENOTDIR, os.stat, f / "x")
    expect_errno(errno.ENOTDIR, os.mkdir, f / "x")
    expect_errno(errno.ENOTDIR, os.open, f / "x", os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.ENOTDIR, os.listdir, f)
    expect_errno(errno.ENOTDIR, os.open, f, os.O_RDONLY | os.O_DIRECTORY)


def test_enametoolong(target_dir):
    ok = "a" * 255
    too_long = "b" * 256
    # Positive control: 255 bytes is a legal name.
    write_file(target_dir / ok, b"x")
    assert os.listdir(target_dir) == [ok]
    assert os.stat(target_dir / ok).st_size == 1
    expect_errno(errno.ENAMETOOLONG, os.open, target_dir / too_long, os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, target_dir / too_long)
    expect_errno(errno.ENAMETOOLONG, os.stat, target_dir / too_long)
    expect_errno(errno.ENAMETOOLONG, os.symlink, "x", target_dir / too_long)
    expect_errno(errno.ENAMETOOLONG, os.rename, target_dir / ok, target_dir / too_long)
    # 256 bytes in multi-byte characters (128 x 2-byte UTF-8) is too long as well.
    expect_errno(errno.ENAMETOOLONG, os.mkdir, target_dir / ("\u00e9" * 128))
    assert os.listdir(target_dir) == [ok]


def test_eacces_in_a_0700_directory(target_dir, errno_as):
    private = target_dir / "private"
    os.mkdir(private, 0o700)
    os.chmod(private, 0o700)
    write_file(private / "f", b"x", 0o644)
    assert errno_as("os.stat(a[0])", target_dir) == 0       # control: the parent is reachable
    assert errno_as("os.stat(a[0])", private / "f") == errno.EACCES
    assert errno_as("open(a[0]).read()", private / "f") == errno.EACCES
    assert errno_as("os.listdir(a[0])", private) == errno.EACCES
    assert errno_as("open(a[0], 'w')", private / "new") == errno.EACCES
    assert errno_as("os.mkdir(a[0])", private / "newdir") == errno.EACCES
    assert not os.path.exists(private / "new")


def test_eacces_writing_a_root_directory(target_dir, errno_as):
    assert stat.S_IMODE(os.stat(target_dir).st_mode) == 0o755
    write_file(target_dir / "f", b"x")
    assert errno_as("open(a[0], 'w')", target_dir / "new") == errno.EACCES
    assert errno_as("os.mkdir(a[0])", target_dir / "newdir") == errno.EACCES
    assert errno_as("os.unlink(a[0])", target_dir / "f") == errno.EACCES
    assert errno_as("os.rename(a[0], a[1])", target_dir / "f", target_dir / "g") == errno.EACCES
    assert errno_as("os.symlink('x', a[0])", target_dir / "l") == errno.EACCES
    assert sorted(os.listdir(target_dir)) == ["f"]


def test_eperm(target_dir, errno_as, nobody):
    # As root: a hard link to a directory.
    os.mkdir(target_dir / "d")
    expect_errno(errno.EPERM, os.link, target_dir / "d", target_dir / "d2")
    # As nobody: chown / chmod of root's file.
    write_file(target_dir / "f", b"x")
    assert errno_as("os.chown(a[0], int(a[1]), int(a[2]))", target_dir / "f",
                    str(nobody[0]), str(nobody[1])) == errno.EPERM
    assert errno_as("os.chmod(a[0], 0o666)", target_dir / "f") == errno.EPERM


def test_exdev_not_applicable():
    pytest.skip("EXDEV needs two file systems: within one CPFS mount every rename is "
                "on the same device, and across mounts the kernel refuses before CPFS is asked")
