"""Restarting `cpfs serve` (control plane, metadata service and its data nodes)
under a mounted, busy file system: programs see a stall, never an error, and
never wrong data.

Writers create (also with O_EXCL), rewrite (O_TRUNC), append, replace by
rename, unlink, mkdir and rmdir, fsync everything and read every file back;
a namespace thread creates, renames, links, symlinks, sets and removes
extended attributes (each of which fails if applied twice) and checks each
step; a reader keeps verifying files written before the first restart. Meanwhile the
whole server is stopped (SIGKILL or SIGTERM, to its process group or to
`cpfs serve` alone) and started again on the same data directory. Afterwards
every file must hold exactly what was last written, seen from the busy mount
and from a fresh one, with no file missing and none left over.

The server picks its metadata port itself (the default), so this also checks
that a restarted server comes back on the port mounted clients resolved.
"""

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest

from dataplane_harness import (
    LIVE_MOUNTS, LIVE_SERVERS, create_filesystem, start_mount, start_server, stop_group,
    wait_until,
)

WRITERS = 2
THREADS = WRITERS + 2       # and the namespace churn and the reader
NAMES = 12                  # rewritten names per writer
STABLE = 6                  # files the reader verifies throughout
MAX_SIZE = 1536 * 1024      # spans two 1 MiB chunks, so two chains
PROGRESS_DEADLINE_S = 120.0
# A restart takes a second or two; an operation waiting longer is hung on
# something (the metadata wait gives up after 15 s, a call after 30 s).
MAX_STALL_S = 30.0
# (signal, to the whole process group?, seconds kept down): systemd stops a
# service with SIGTERM to its cgroup; kill -9 of the group is a crash; a
# signal to `cpfs serve` alone leaves the nodes to die with it
# (PR_SET_PDEATHSIG). Most restarts are immediate (well under a second here);
# one stays down for some seconds, as a slow start would, so that waiting
# programs go through several retries.
RESTARTS = [(signal.SIGKILL, True, 0), (signal.SIGTERM, True, 0), (signal.SIGTERM, False, 0),
            (signal.SIGKILL, False, 0), (signal.SIGKILL, True, 5), (signal.SIGTERM, True, 0),
            (signal.SIGKILL, True, 0), (signal.SIGTERM, False, 0)]


def body(tag, size):
    """Reproducible content that names its writer and generation in its first bytes,
    so a wrong read says which version it saw."""
    head = f"<{tag}>".encode()
    rest = random.Random(tag).randbytes(max(0, size - len(head)))
    return (head + rest)[:size]


def describe(data):
    if not data:
        return "0 bytes"
    end = data.find(b">")
    return f"{len(data)} bytes starting {data[:end + 1][:60]!r}"


class Workload:
    def __init__(self, root):
        self.root = root
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []          # (what, path, error)
        self.ops = 0              # operations, all threads
        self.rounds = {}          # thread -> rounds it completed without error
        self.longest = 0.0        # longest single operation, seconds
        self.files = {}           # relative path -> expected bytes (writers' final state)
        self.dirs = set()         # relative paths of directories that must exist

    def fail(self, what, path, err):
        with self.lock:
            self.errors.append((round(time.monotonic(), 2), what, str(path), err))

    def round_done(self, who):
        with self.lock:
            self.rounds[who] = self.rounds.get(who, 0) + 1

    def timed(self, what, path, fn):
        t = time.monotonic()
        try:
            return fn()
        finally:
            took = time.monotonic() - t
            with self.lock:
                self.longest = max(self.longest, took)
                self.ops += 1

    def write_file(self, rel, data, mode="wb"):
        path = self.root / rel
        with open(path, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def check(self, rel, want):
        got = (self.root / rel).read_bytes()
        if got != want:
            self.fail("read back", rel, f"expected {describe(want)}, got {describe(got)}")
            return False
        return True

    def writer(self, w):
        rng = random.Random(f"writer-{w}")
        d = f"w{w}"
        mine = {}                 # rel -> expected bytes
        extra = []                # unique files that may be unlinked
        subdirs = []
        gen = 0
        while not self.stop.is_set():
            gen += 1
            op = rng.choice(["rewrite", "rewrite", "rewrite", "excl", "append", "replace",
                             "unlink", "mkdir"])
            size = rng.choice([0, 1, 4096, 65536 + 17, 300 * 1024, MAX_SIZE])
            try:
                if op == "rewrite":
                    rel = f"{d}/f{rng.randrange(NAMES)}"
                    data = body(f"{rel}#{gen}", size)
                    self.timed(op, rel, lambda: self.write_file(rel, data))
                    mine[rel] = data
                elif op == "excl":
                    rel = f"{d}/x{gen}"
                    data = body(f"{rel}#{gen}", size)
                    self.timed(op, rel, lambda: self.write_file(rel, data, "xb"))
                    mine[rel] = data
                    extra.append(rel)
                elif op == "append":
                    rel = f"{d}/f{rng.randrange(NAMES)}"
                    more = body(f"{rel}+{gen}", rng.choice([1, 5000, 200 * 1024]))
                    self.timed(op, rel, lambda: self.write_file(rel, more, "ab"))
                    mine[rel] = mine.get(rel, b"") + more
                    data = mine[rel]
                elif op == "replace":
                    # The editor's pattern: write a temporary file, fsync, rename over.
                    rel = f"{d}/f{rng.randrange(NAMES)}"
                    tmp = f"{d}/.tmp{gen}"
                    data = body(f"{rel}~{gen}", size)
                    self.timed(op, tmp, lambda: self.write_file(tmp, data, "xb"))
                    self.timed("rename", rel, lambda: os.rename(self.root / tmp, self.root / rel))
                    mine[rel] = data
                elif op == "unlink":
                    if not extra:
                        continue
                    rel = extra.pop(rng.randrange(len(extra)))
                    self.timed(op, rel, lambda: os.unlink(self.root / rel))
                    del mine[rel]
                    if (self.root / rel).exists():
                        self.fail("unlink", rel, "still there after unlink")
                    self.round_done(d)
                    continue
                else:
                    if subdirs and rng.random() < 0.5:
                        rel = subdirs.pop(rng.randrange(len(subdirs)))
                        self.timed("rmdir", rel, lambda: os.rmdir(self.root / rel))
                        if (self.root / rel).exists():
                            self.fail("rmdir", rel, "still there after rmdir")
                    else:
                        rel = f"{d}/dir{gen}"
                        self.timed(op, rel, lambda: os.mkdir(self.root / rel))
                        subdirs.append(rel)
                        if not (self.root / rel).is_dir():
                            self.fail("mkdir", rel, "not a directory after mkdir")
                    self.round_done(d)
                    continue
                self.timed("verify", rel, lambda: self.check(rel, data))
                self.round_done(d)
            except OSError as e:
                self.fail(op, rel, repr(e))
                # The state of this name is unknown now; stop tracking it.
                mine.pop(rel, None)
        with self.lock:
            self.files.update(mine)
            self.dirs.update(subdirs)

    def namer(self):
        """Namespace churn, one operation after another, every one checked:
        each is one that a second application would fail (EEXIST, ENOENT,
        ENODATA), so an attempt whose answer was lost in a restart and is
        then retried must not be applied twice."""
        d = "n"
        gen = 0
        files = {}                # rel -> bytes
        while not self.stop.is_set():
            gen += 1
            a, b, link, sym, sub = (f"{d}/a{gen}", f"{d}/b{gen}", f"{d}/l{gen}", f"{d}/s{gen}",
                                    f"{d}/d{gen}")
            data = body(a, gen % 3000)
            step = "create"
            try:
                self.timed(step, a, lambda: self.write_file(a, data, "xb"))
                step = "setxattr"
                self.timed(step, a, lambda: os.setxattr(self.root / a, "user.gen", str(gen).encode(),
                                                       os.XATTR_CREATE))
                step = "rename"
                self.timed(step, b, lambda: os.rename(self.root / a, self.root / b))
                step = "link"
                self.timed(step, link, lambda: os.link(self.root / b, self.root / link))
                step = "symlink"
                self.timed(step, sym, lambda: os.symlink(f"b{gen}", self.root / sym))
                step = "mkdir"
                self.timed(step, sub, lambda: os.mkdir(self.root / sub))
                step = "check"
                if os.getxattr(self.root / link, "user.gen") != str(gen).encode():
                    self.fail(step, link, "xattr differs")
                if (self.root / sym).read_bytes() != data or (self.root / a).exists():
                    self.fail(step, sym, "rename or symlink went wrong")
                step = "removexattr"
                self.timed(step, b, lambda: os.removexattr(self.root / b, "user.gen"))
                step = "unlink"
                self.timed(step, link, lambda: os.unlink(self.root / link))
                self.timed(step, sym, lambda: os.unlink(self.root / sym))
                step = "rmdir"
                self.timed(step, sub, lambda: os.rmdir(self.root / sub))
                if os.stat(self.root / b).st_nlink != 1 or os.listxattr(self.root / b):
                    self.fail("check", b, "a link or the xattr is left")
                files[b] = data
                if len(files) > 20:
                    old = sorted(files, key=lambda r: int(r.rsplit("b", 1)[1]))[0]
                    step = "unlink"
                    self.timed(step, old, lambda: os.unlink(self.root / old))
                    del files[old]
                self.round_done(d)
            except OSError as e:
                self.fail(step, a, repr(e))
                break
        with self.lock:
            self.files.update(files)

    def reader(self, stable):
        rng = random.Random("reader")
        while not self.stop.is_set():
            rel = rng.choice(sorted(stable))
            try:
                self.timed("read", rel, lambda: self.check(rel, stable[rel]))
                self.round_done("reader")
            except OSError as e:
                self.fail("read", rel, repr(e))

    def progress(self):
        """Rounds completed per thread."""
        with self.lock:
            return dict(self.rounds)

    def advanced(self, since, rounds):
        """Whether every thread completed `rounds` rounds after `since` (a progress())."""
        now = self.progress()
        return len(now) == THREADS and all(now[t] >= since.get(t, 0) + rounds for t in now)


def tree(root):
    """{relative path: bytes} of every file and the set of directories under root."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames:
            dirs.add(os.path.relpath(os.path.join(dirpath, n), root))
        for n in filenames:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, root)] = f.read()
    return files, dirs


def assert_tree(root, files, dirs, where):
    got_files, got_dirs = tree(root)
    assert sorted(got_files) == sorted(files), (
        f"{where}: names differ; missing {sorted(set(files) - set(got_files))[:10]}, "
        f"unexpected {sorted(set(got_files) - set(files))[:10]}")
    wrong = [f"{rel}: expected {describe(want)}, got {describe(got_files[rel])}"
             for rel, want in sorted(files.items()) if got_files[rel] != want]
    assert not wrong, f"{where}: {len(wrong)} files hold the wrong data: {wrong[:5]}"
    assert got_dirs == dirs, f"{where}: directories differ: {sorted(got_dirs ^ dirs)[:10]}"


@pytest.fixture
def own_server(fuse_ready, base_dir):
    """A server of this test's own, since it is killed and restarted; on the
    default metadata address (any free port, kept for the restart). Torn down
    after the failure report, which shows its log and the mounts'."""
    srv = start_server(base_dir / f"server-restart-{uuid.uuid4().hex[:6]}", fixed_meta_port=False)
    try:
        yield srv
    finally:
        for m in [x for x in LIVE_MOUNTS if x.server is srv]:
            m.unmount()
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


def test_restarting_the_server_under_a_busy_mount_is_only_a_stall(own_server, base_dir):
    srv = own_server
    fs = create_filesystem(srv)
    parent = base_dir / f"restart-{uuid.uuid4().hex[:6]}"
    m = start_mount(srv, fs.domain, parent / "busy")
    stable = {f"stable/s{i}": body(f"stable/s{i}", MAX_SIZE if i % 2 else 70 * 1024 + i)
              for i in range(STABLE)}
    dirs = {"stable", "n"} | {f"w{w}" for w in range(WRITERS)}
    for d in dirs:
        (m.path / d).mkdir()
    work = Workload(m.path)
    for rel, data in stable.items():
        work.write_file(rel, data)

    threads = [threading.Thread(target=work.writer, args=(w,), daemon=True) for w in range(WRITERS)]
    threads.append(threading.Thread(target=work.reader, args=(stable,), daemon=True))
    threads.append(threading.Thread(target=work.namer, daemon=True))
    for t in threads:
        t.start()
    wait_until("the workload to get going", lambda: work.advanced({}, 5), PROGRESS_DEADLINE_S)
    outages = []                  # (monotonic start, end, how): to place errors in time
    for sig, group, down_s in RESTARTS:
        t = time.monotonic()
        srv.restart(sig, group=group, down_s=down_s)
        outages.append((round(t, 2), round(time.monotonic(), 2),
                        f"{sig.name} to {'the group' if group else 'cpfs serve'}"))
        since = work.progress()
        # Every thread got past the outage (a round that straddled it counts
        # too, so ask for a few).
        wait_until(f"every thread to continue after {outages[-1][2]}",
                   lambda: work.advanced(since, 3), PROGRESS_DEADLINE_S,
                   on_timeout=lambda: f"rounds {since} -> {work.progress()}; "
                                      f"errors so far: {work.errors[:5]}")
    work.stop.set()
    for t in threads:
        t.join(timeout=PROGRESS_DEADLINE_S)
        assert not t.is_alive(), "a workload thread is stuck"
    assert work.errors == [], (f"{len(work.errors)} errors across restarts {outages} "
                               f"(first ones): {work.errors[:8]}")
    print(f"{work.ops} operations, rounds {work.progress()}, longest stall "
          f"{work.longest:.2f} s across {len(RESTARTS)} restarts")
    assert work.longest < MAX_STALL_S, f"an operation stalled {work.longest:.1f} s"

    files = dict(work.files)
    files.update(stable)
    dirs |= work.dirs
    assert_tree(m.path, files, dirs, "the busy mount")
    fresh = start_mount(srv, fs.domain, parent / "fresh")
    assert_tree(fresh.path, files, dirs, "a fresh mount")


def store_count(srv, sql):
    """One number from the server's store (SQLite file or PostgreSQL)."""
    url = srv.database_url()
    if url:
        out = subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True)
        return int(out.stdout.strip())
    with sqlite3.connect(srv.data_dir / "cpfs.db") as db:
        return db.execute(sql).fetchone()[0]


def test_a_clean_stop_leaves_the_namespace_tables_whole(fuse_ready, base_dir):
    """The journal commits log rows and folds them into the namespace tables
    behind the commits; `cpfs serve` stopped with SIGTERM folds what is left
    first, so the tables hold every acknowledged change (what backups and
    the control plane's own reads see) and the log is empty. The fold delay
    is set long, so nothing is folded before the stop but by it."""
    srv = start_server(base_dir / f"server-clean-stop-{uuid.uuid4().hex[:6]}",
                       extra_env={"CPFS_META_FOLD_DELAY_MS": "600000"})
    try:
        fs = create_filesystem(srv)
        m = start_mount(srv, fs.domain, base_dir / f"clean-stop-{uuid.uuid4().hex[:6]}" / "mnt")
        names = [f"clean-{i:03d}" for i in range(200)]
        for n in names:
            (m.path / n).write_bytes(b"")
        os.rename(m.path / names[0], m.path / "clean-renamed")
        os.unlink(m.path / names[1])
        m.unmount()
        assert store_count(srv, "SELECT COUNT(*) FROM meta_log") > 0, "folded before the stop"
        stop_group(srv.proc)
        assert srv.proc.returncode == 0, f"`cpfs serve` did not stop cleanly: {srv.stderr_tail(30)}"
        assert store_count(srv, "SELECT COUNT(*) FROM meta_log") == 0
        text = "convert_from(name, 'UTF8')" if srv.database_url() else "CAST(name AS TEXT)"
        named = store_count(srv, f"SELECT COUNT(*) FROM dentries WHERE {text} LIKE 'clean-%'")
        assert named == len(names) - 1, named
        renamed = store_count(srv, f"SELECT COUNT(*) FROM dentries WHERE {text} = 'clean-renamed'")
        assert renamed == 1
    finally:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)
