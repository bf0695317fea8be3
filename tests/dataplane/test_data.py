"""Data integrity on a CPFS mount: real tools (cp, rsync, git, fio), two
clients of one file system, and a corrupted chunk replica.

Reads that check data go through a fresh mount (a new client with empty
caches) after the kernel page cache is dropped, so they see what the data
nodes hold, not what the writing client remembers.
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dataplane_harness import REPLICAS, drop_caches, wait_until

MiB = 1 << 20
TOOL_TIMEOUT_S = 900


def run(cmd, cwd=None, env=None, timeout=TOOL_TIMEOUT_S):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (f"`{' '.join(map(str, cmd))}` exited {r.returncode}\n"
                               f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found (run .ci/setup.sh)")
    return path


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def manifest(root):
    """relpath -> attributes, for every entry under root (not following links)."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            entry = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                entry.update(type="symlink", target=os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                entry.update(type="dir", mtime_ns=st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                entry.update(type="file", size=st.st_size, sha256=sha256_file(p), mtime_ns=st.st_mtime_ns)
            else:
                entry.update(type=f"other {st.st_mode:o}")
            out[str(p.relative_to(root))] = entry
    return out


def compare_manifests(want, got, what):
    """Fail with every difference, content first, then metadata."""
    problems = []
    for rel in sorted(set(want) - set(got)):
        problems.append(f"missing: {rel}")
    for rel in sorted(set(got) - set(want)):
        problems.append(f"unexpected: {rel}")
    for key in ("type", "target", "size", "sha256", "mode", "uid", "gid", "mtime_ns"):
        for rel in sorted(set(want) & set(got)):
            if want[rel].get(key) != got[rel].get(key):
                problems.append(f"{rel}: {key} {want[rel].get(key)!r} != {got[rel].get(key)!r}")
    assert not problems, f"{what}: {len(problems)} differences:\n  " + "\n  ".join(problems[:40])


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory):
    """A local tree of mixed files, with fixed modes, owners and times."""
    src = tmp_path_factory.mktemp("source") / "tree"
    src.mkdir()
    files = {
        "empty.txt": b"",
        "tiny.txt": b"hello, cpfs\n",
        "one-byte.bin": b"\x7f",
        "four-k.bin": os.urandom(4096),
        "mib-plus-one.bin": os.urandom(MiB + 1),
        "ten-mib.bin": os.urandom(10 * MiB),
        "nested/deeper/notes.md": b"# notes\n" * 1000,
    }
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (src / "empty-dir").mkdir()
    os.symlink("tiny.txt", src / "link-to-tiny")
    os.symlink("nested/deeper", src / "link-to-dir")
    os.symlink("does/not/exist", src / "dangling-link")
    os.chmod(src / "four-k.bin", 0o600)
    os.chmod(src / "tiny.txt", 0o755)
    os.chown(src / "one-byte.bin", 1234, 4321)
    os.chmod(src / "nested", 0o750)
    t = 1_650_000_000
    for i, rel in enumerate(sorted(files)):
        os.utime(src / rel, (t + i, t + i))
    for rel in ("empty-dir", "nested/deeper", "nested", "."):
        os.utime(src / rel, (t - 100, t - 100))
    return src


@pytest.fixture
def fresh_view(mounter, mount):
    """fresh_view(path on `mount`) -> the same path seen through a new mount."""
    holder = {}

    def view(path):
        if "m" not in holder:
            holder["m"] = mounter.mount(mount.domain)
        drop_caches()
        return holder["m"].path / Path(path).relative_to(mount.path)
    return view


# ---------------------------------------------------------------------------
# cp -a / rsync -a
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("tool", ["cp", "rsync"])
def test_copy_tree(tool, source_tree, mount, fresh_view, tmp_path):
    dst = mount.path / f"copy-{tool}"
    if tool == "cp":
        run([need("cp"), "-a", source_tree, dst])
    else:
        run([need("rsync"), "-a", f"{source_tree}/", f"{dst}/"])
    want = manifest(source_tree)
    compare_manifests(want, manifest(dst), f"{tool} -a into the mount (same client)")
    run([need("diff"), "-r", "--no-dereference", source_tree, dst])

    # Through another client, with no cache, the copy is the same.
    other = fresh_view(dst)
    compare_manifests(want, manifest(other), f"{tool} -a copy read through a fresh mount")
    run([need("diff"), "-r", "--no-dereference", source_tree, other])

    # And back out of the mount with the same tool.
    back = tmp_path / "back"
    if tool == "cp":
        run(["cp", "-a", other, back])
    else:
        run(["rsync", "-a", f"{other}/", f"{back}/"])
    compare_manifests(want, manifest(back), f"{tool} -a back out of the mount")


# ---------------------------------------------------------------------------
# git
# ---------------------------------------------------------------------------

def test_git_repository(mount, tmp_path, fresh_view):
    git = need("git")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="CPFS Test", GIT_AUTHOR_EMAIL="test@cpfs.invalid",
               GIT_COMMITTER_NAME="CPFS Test", GIT_COMMITTER_EMAIL="test@cpfs.invalid")
    repo = mount.path / "repo"
    run([git, "init", "-q", "-b", "main", repo], env=env)
    for i in range(3):
        (repo / f"file{i}.txt").write_text(f"line {i}\n" * (i * 500 + 1))
        (repo / "src").mkdir(exist_ok=True)
        (repo / "src" / "data.bin").write_bytes(os.urandom(100_000 + i))
        run([git, "add", "-A"], cwd=repo, env=env)
        run([git, "commit", "-q", "-m", f"commit {i}"], cwd=repo, env=env)
    run([git, "fsck", "--full", "--strict"], cwd=repo, env=env)
    assert run([git, "rev-list", "--count", "HEAD"], cwd=repo, env=env).stdout.strip() == "3"
    assert run([git, "status", "--porcelain"], cwd=repo, env=env).stdout == ""
    # Packing rewrites objects into a pack (mmap'ed reads, renames, unlinks).
    run([git, "gc", "-q", "--prune=now"], cwd=repo, env=env)
    run([git, "fsck", "--full", "--strict"], cwd=repo, env=env)
    assert run([git, "status", "--porcelain"], cwd=repo, env=env).stdout == ""
    # Another client clones it, and the clone checks out.
    other = fresh_view(repo)
    clone = tmp_path / "clone"
    run([git, "-c", f"safe.directory={other}", "clone", "-q", other, clone], env=env)
    run([git, "fsck", "--full", "--strict"], cwd=clone, env=env)
    for i in range(3):
        assert (clone / f"file{i}.txt").read_bytes() == (repo / f"file{i}.txt").read_bytes()


# ---------------------------------------------------------------------------
# fio
# ---------------------------------------------------------------------------

FIO_JOBS = {
    "seq": ["--rw=write", "--bs=1M", "--size=32M"],
    "rand": ["--rw=randwrite", "--bs=4k", "--size=16M"],
}


def fio(directory, name, extra, out_json):
    args = [need("fio"), f"--name={name}", f"--directory={directory}", *extra,
            "--numjobs=4", "--ioengine=psync", "--verify=crc32c", "--verify_fatal=1",
            "--verify_dump=0", "--verify_state_save=0", "--end_fsync=1",
            "--output-format=json", f"--output={out_json}"]
    # From the output's directory: fio may leave files in its working directory.
    r = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                       cwd=Path(out_json).parent)
    text = Path(out_json).read_text() if Path(out_json).exists() else ""
    assert r.returncode == 0, (f"fio exited {r.returncode}\n{' '.join(args)}\n"
                               f"stderr:\n{r.stderr[-3000:]}\noutput:\n{text[-3000:]}")
    report = json.loads(text[text.index("{"):])        # fio may print notes first
    jobs = report["jobs"]
    assert len(jobs) == 4, f"expected 4 fio jobs, got {len(jobs)}"
    bad = [(j["jobname"], j["error"]) for j in jobs if j["error"] != 0]
    assert not bad, f"fio jobs with errors: {bad}"
    return jobs


@pytest.mark.parametrize("kind", list(FIO_JOBS))
def test_fio_write_and_verify(kind, mount, fresh_view, tmp_path):
    d = mount.path / f"fio-{kind}"
    d.mkdir()
    size = FIO_JOBS[kind][2].split("=")[1]
    want_bytes = int(size[:-1]) * MiB
    jobs = fio(d, kind, FIO_JOBS[kind] + ["--do_verify=1"], tmp_path / "write.json")
    for j in jobs:
        assert j["write"]["io_bytes"] == want_bytes, f"{j['jobname']} wrote {j['write']['io_bytes']}"
    # The same pattern, verified by a second client that never wrote it.
    jobs = fio(fresh_view(d), kind, FIO_JOBS[kind] + ["--verify_only"], tmp_path / "verify.json")
    for j in jobs:
        assert j["read"]["io_bytes"] >= want_bytes, f"{j['jobname']} verified {j['read']['io_bytes']}"


# ---------------------------------------------------------------------------
# Two clients of one file system
# ---------------------------------------------------------------------------

def test_two_mounts_close_to_open(mount, mounter):
    a = mount
    b = mounter.mount(a.domain)
    d = "two-mounts"
    os.mkdir(a.path / d)
    data = os.urandom(3 * MiB + 17)
    with open(a.path / d / "f", "wb") as f:
        f.write(data)
    # Written and closed in A: B opens it and reads the same bytes.
    with open(b.path / d / "f", "rb") as f:
        assert f.read() == data, "B does not read what A wrote"
    assert os.stat(b.path / d / "f").st_size == len(data)

    # An append in A is seen by B after reopen.
    with open(a.path / d / "f", "ab") as f:
        f.write(b"appended by A")
    with open(b.path / d / "f", "rb") as f:
        got = f.read()
    assert len(got) == len(data) + 13, f"B sees {len(got)} bytes after A appended, want {len(data) + 13}"
    assert got == data + b"appended by A"

    # An overwrite that keeps the size (B has these pages cached) is seen too.
    new = os.urandom(len(data) + 13)
    with open(a.path / d / "f", "r+b") as f:
        f.write(new)
    with open(b.path / d / "f", "rb") as f:
        assert f.read() == new, "B reads stale cached data after A overwrote the file"

    # Namespace changes made in A appear in B.
    os.mkdir(a.path / d / "sub")
    with open(a.path / d / "sub" / "g", "wb") as f:
        f.write(b"g")
    assert sorted(os.listdir(b.path / d)) == ["f", "sub"]
    assert (b.path / d / "sub" / "g").read_bytes() == b"g"
    os.rename(a.path / d / "sub" / "g", a.path / d / "h")
    assert sorted(os.listdir(b.path / d)) == ["f", "h", "sub"]
    assert (b.path / d / "h").read_bytes() == b"g"

    # And the other way round.
    with open(b.path / d / "from-b", "wb") as f:
        f.write(b"written by B")
    with open(a.path / d / "from-b", "rb") as f:
        assert f.read() == b"written by B"


def resident_pages(path):
    """Pages of `path` in the kernel's page cache (util-linux fincore; it
    opens the file, as any program would)."""
    out = subprocess.run(["fincore", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_an_unchanged_file_keeps_its_cached_pages_across_opens(mount, mounter):
    a = mount
    d = a.path / "keep-cache"
    d.mkdir()
    data = os.urandom(2 * MiB)
    (d / "f").write_bytes(data)
    with open(d / "f", "rb") as f:
        assert f.read() == data
    # fincore's own open finds the file unchanged: the pages stay.
    pages = 2 * MiB // 4096
    assert resident_pages(d / "f") == pages, "an open of an unchanged file dropped its pages"
    with open(d / "f", "rb") as f:
        assert f.read() == data
    assert resident_pages(d / "f") == pages

    # Changed by another mount (same size): the next open here drops them
    # and reads the new bytes.
    b = mounter.mount(a.domain)
    new = os.urandom(2 * MiB)
    with open(b.path / "keep-cache" / "f", "r+b") as f:
        f.write(new)
    with open(d / "f", "rb") as f:
        assert f.read() == new, "stale cached pages after another mount overwrote the file"


# How long B's kernel would keep an entry or attributes if nobody told it
# otherwise (client/src/fuse/mod.rs, TTL); the service's notice must come
# well before.
KERNEL_TTL_S = 10
NOTICE_S = 3
# How long a change waits for a delegation's holder (proto DELEGATION_RECALL).
DELEGATION_RECALL_S = 4


def test_changes_in_one_mount_reach_the_kernel_caches_of_the_other(mount, mounter):
    assert NOTICE_S < KERNEL_TTL_S, "the test could pass on the TTL alone"
    a = mount
    b = mounter.mount(a.domain)
    d = "invalidation"
    os.mkdir(a.path / d)
    (a.path / d / "f").write_bytes(b"f")
    os.chmod(a.path / d / "f", 0o644)
    # B's kernel now holds: no name "new" (a negative entry), the entry
    # "f" and f's attributes.
    assert not (b.path / d / "new").exists()
    assert stat.S_IMODE(os.stat(b.path / d / "f").st_mode) == 0o644

    (a.path / d / "new").write_bytes(b"created by A")
    wait_until("B to see the name A created", lambda: (b.path / d / "new").exists(), NOTICE_S)
    assert (b.path / d / "new").read_bytes() == b"created by A"

    os.chmod(a.path / d / "f", 0o600)
    wait_until("B to see the mode A set",
               lambda: stat.S_IMODE(os.stat(b.path / d / "f").st_mode) == 0o600, NOTICE_S)

    os.rename(a.path / d / "f", a.path / d / "g")
    wait_until("B to lose the name A renamed away", lambda: not (b.path / d / "f").exists(), NOTICE_S)
    assert (b.path / d / "g").read_bytes() == b"f"

    os.unlink(a.path / d / "new")
    wait_until("B to lose the name A removed", lambda: not (b.path / d / "new").exists(), NOTICE_S)
    assert sorted(os.listdir(b.path / d)) == ["g"]


def test_a_name_another_mount_made_is_found_at_once(mount, mounter):
    """Close-to-open for names: once B's create has returned, A's next
    lookup finds the name, even in a directory A made and never saw
    another name in, and before the watch's notice of B's create reaches
    A. (A mount that answered "no such name" from the names it knew in
    the directories it made failed this whenever the notice was slower
    than B's create and close, as under CI's load.)"""
    a = mount
    b = mounter.mount(a.domain)
    top = f"made-{uuid.uuid4().hex[:8]}"
    os.mkdir(a.path / top)
    for i in range(20):
        d = f"{top}/d{i}"
        os.mkdir(a.path / d)
        (a.path / d / "mine").write_bytes(b"a")
        (b.path / d / "theirs").write_bytes(b"b")
        assert (a.path / d / "theirs").read_bytes() == b"b", f"round {i}"

    # A name A looked up before B made it: the kernel keeps "no such name"
    # until the notice of B's create drops it.
    d = f"{top}/d0"
    assert not (a.path / d / "looked-up").exists()
    (b.path / d / "looked-up").write_bytes(b"b")
    os.mkdir(b.path / d / "sub")
    wait_until("A to see the name it looked up before",
               lambda: (a.path / d / "looked-up").exists(), NOTICE_S)
    assert (a.path / d / "sub").is_dir()
    (a.path / d / "again").write_bytes(b"c")
    want = ["again", "looked-up", "mine", "sub", "theirs"]
    assert sorted(os.listdir(a.path / d)) == want
    assert sorted(os.listdir(b.path / d)) == want


def test_a_mount_that_stops_answering_loses_its_delegation_and_never_hides_a_name(mount, mounter):
    """A directory a mount made is delegated to it (it answers lookups of
    absent names there itself). Frozen (SIGSTOP), it cannot acknowledge the
    recall another mount's create needs: the create goes ahead after the
    recall time, not never, and once thawed the frozen mount finds the new
    name at once (its lease ran out while it was frozen, and the recall
    is waiting in its Watch; which of the two stops it first is a race
    this test does not decide: the lease alone is checked in
    client/src/dir_names_tests.rs)."""
    a = mount
    b = mounter.mount(a.domain)
    d = f"frozen-{uuid.uuid4().hex[:8]}"
    os.mkdir(a.path / d)
    assert not (a.path / d / "x").exists()      # answered by A itself
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = subprocess.run(["touch", str(b.path / d / "x")], timeout=60)
        waited = time.monotonic() - started
        assert done.returncode == 0
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # The service waited for the recall's acknowledgement, in vain.
    assert waited >= DELEGATION_RECALL_S - 0.5, f"the create did not wait for the recall ({waited:.2f} s)"
    assert (a.path / d / "x").exists(), "the frozen mount still answered from its delegation"
    assert sorted(os.listdir(a.path / d)) == ["x"]


# ---------------------------------------------------------------------------
# A corrupted chunk replica
# ---------------------------------------------------------------------------

def node_of(server, path):
    return Path(path).relative_to(server.data_dir / "nodes").parts[0]


def write_and_find_chunks(server, path, data):
    """Write data to path (fsync, close) and return its chunk files: the
    non-empty files under nodes/*/chunks that appeared or changed meanwhile,
    once all REPLICAS copies are there (waited for with a deadline)."""
    before = server.chunk_files()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    found = {}

    def complete():
        after = server.chunk_files()
        changed = {p: v for p, v in after.items() if before.get(p) != v}
        # Prefer the files that visibly hold our bytes (other chunk files may
        # change meanwhile, e.g. a background repair); fall back to all.
        ours = {p: v for p, v in changed.items() if holds_bytes_of(p, data)}
        found.clear()
        if sum(v[0] for v in ours.values()) >= REPLICAS * len(data):
            found.update(ours)
        else:
            found.update(changed)
        return sum(v[0] for v in found.values()) >= REPLICAS * len(data)
    wait_until(f"{REPLICAS} copies of {len(data)} bytes in chunk files under "
               f"{server.data_dir}/nodes/*/chunks", complete, 60,
               on_timeout=lambda: f"new chunk files: {found}")
    return sorted(found)


def holds_bytes_of(path, data, window=32):
    """Whether one of a few 32-byte windows of the chunk file occurs in data:
    true for a chunk of a random file stored as plain bytes, also when block
    checksums are interleaved (the windows sit off round offsets, and several
    are tried)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for i in range(1, 8):
                f.seek(max(0, min(size - window, size * i // 8 + 997 * i)))
                sample = f.read(window)
                if len(sample) == window and sample in data:
                    return True
    except OSError:
        pass
    return False


def flip_middle(path, n=64):
    """XOR n bytes in the middle of a chunk file, keeping its size and times."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        mid = max(0, st.st_size // 2 - n // 2)
        f.seek(mid)
        old = f.read(n)
        f.seek(mid)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def read_fresh(fresh_view, path):
    with open(fresh_view(path), "rb") as f:
        return f.read()


def test_corrupt_chunk_is_served_from_the_other_copy(mount, server, fresh_view):
    data = os.urandom(10 * MiB)
    path = mount.path / "corrupt-largest.bin"
    chunks = write_and_find_chunks(server, path, data)
    victim = max(chunks, key=lambda p: os.stat(p).st_size)
    flip_middle(victim)
    got = read_fresh(fresh_view, path)
    assert len(got) == len(data)
    assert got == data, f"corrupted copy {victim} leaked into a read"


@pytest.mark.parametrize("node_index", [0, 1, 2])
def test_every_copy_on_one_node_corrupted(node_index, mount, server, fresh_view):
    """Whichever node the client prefers, the file reads back intact when all
    of that node's copies are corrupted (one good copy of each chunk remains)."""
    data = os.urandom(10 * MiB + 12345)
    path = mount.path / f"corrupt-node{node_index}.bin"
    chunks = write_and_find_chunks(server, path, data)
    nodes = sorted({node_of(server, p) for p in chunks})
    assert len(nodes) >= 2, f"the {REPLICAS} copies are not on distinct nodes: {chunks}"
    if node_index >= len(nodes):
        pytest.fail(f"only {len(nodes)} nodes hold this file's chunks: {nodes}")
    victim_node = nodes[node_index]
    victims = [p for p in chunks if node_of(server, p) == victim_node]
    for p in victims:
        flip_middle(p)
    got = read_fresh(fresh_view, path)
    assert got == data, f"a read returned corrupted bytes with {victim_node}'s copies corrupted"


def test_every_copy_corrupted_is_eio(mount, server, fresh_view):
    """With no good copy left, a read fails with EIO instead of returning bad bytes."""
    data = os.urandom(2 * MiB)
    path = mount.path / "corrupt-all.bin"
    for p in write_and_find_chunks(server, path, data):
        flip_middle(p)
    with pytest.raises(OSError) as e:
        got = read_fresh(fresh_view, path)
        if got == data:
            pytest.fail("the original bytes came back although every chunk copy was corrupted "
                        "(served from a cache?)")
        pytest.fail(f"a read returned {len(got)} corrupted bytes instead of failing")
    assert e.value.errno == errno.EIO, f"expected EIO, got {e.value}"


def test_a_file_deleted_while_open_leaves_the_nodes_once_closed(mount, server):
    """The mount's releases reach the service (gathered and sent together):
    while the file is open its chunks stay, after the last close the
    collector drops them from every node."""
    data = os.urandom(3 * MiB)
    path = mount.path / "deleted-while-open.bin"
    chunks = write_and_find_chunks(server, path, data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        assert os.pread(fd, len(data), 0) == data
        assert all(p.exists() for p in chunks), "dropped while still open"
    finally:
        os.close(fd)
    wait_until("the deleted file's chunks to leave every node",
               lambda: not any(p.exists() for p in chunks), 30,
               on_timeout=lambda: f"still there: {[p for p in chunks if p.exists()]}")
