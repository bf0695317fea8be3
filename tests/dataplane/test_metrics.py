"""`/metrics` after known I/O through a real mount.

The data nodes and the metadata server report their counters with their
heartbeats and `cpfs serve` exports them: after a known amount of I/O on a
file system of its own, the series of that file system move by exactly
that amount (every copy counted on the nodes), the metadata server's
operation counters by exactly the operations made, and `/metrics` is
refused without its token.
"""

import errno
import os
import re
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from dataplane_harness import REPLICAS, drop_caches, wait_until

METRICS_DEADLINE_S = 20.0
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(server, token):
    req = urllib.request.Request(f"{server.url}/metrics")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        return r.read().decode()


def samples(text):
    """[(name, {label: value}, float)] of an exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def total(text, name, **want):
    """The sum of `name`'s samples whose labels include `want`."""
    return sum(v for n, labels, v in samples(text)
               if n == name and all(labels.get(k) == w for k, w in want.items()))


def token(server, name):
    return (server.data_dir / name).read_text().strip()


def wait_settled(server, t):
    """Until every node routes with the control plane's chain table: I/O is
    counted exactly only then (a node that has not heard of the table yet
    refuses forwarded writes, and the client's retry would write again)."""
    def settled():
        text = scrape(server, t)
        table = total(text, "cpfs_chain_table_version")
        nodes = [v for n, _, v in samples(text) if n == "cpfs_node_chain_table_version"]
        return table > 0 and len(nodes) == 3 and all(v == table for v in nodes)
    wait_until("every node on the current chain table", settled, METRICS_DEADLINE_S)


def write_once_and_read_back(path, size):
    """`size` random bytes written once and made durable, then read back
    from the nodes (the kernel's cache dropped)."""
    data = os.urandom(size)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        assert os.write(fd, data) == size
        os.fsync(fd)
    finally:
        os.close(fd)
    drop_caches()
    with open(path, "rb") as f:
        assert f.read() == data


def test_metrics_need_their_token(server):
    for bad in (None, "wrong-token", token(server, "metrics-token") + "x"):
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(server, bad)
        assert e.value.code == 401
    # The metrics-only token and the admin token both open it.
    for name in ("metrics-token", "admin-token"):
        text = scrape(server, token(server, name))
        assert text.rstrip().endswith("# EOF")
        assert total(text, "cpfs_api_access_key_queries_total") >= 0
    # The three embedded nodes, once up.
    wait_until("three nodes up in /metrics",
               lambda: total(scrape(server, token(server, "metrics-token")), "cpfs_node_up") == 3,
               METRICS_DEADLINE_S)
    # The metrics token is no admin token.
    req = urllib.request.Request(f"{server.url}/admin/v1/nodes")
    req.add_header("Authorization", f"Bearer {token(server, 'metrics-token')}")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_node_and_metadata_series_move_by_the_io_done(server, filesystem, mount):
    t = token(server, "metrics-token")
    fs = filesystem.fs_id

    wait_settled(server, t)
    before = scrape(server, t)

    # Metadata: a known number of mkdirs and creates.
    d = mount.path / f"metrics-{uuid.uuid4().hex[:8]}"
    dirs, files = 7, 11
    os.mkdir(d)
    for i in range(dirs - 1):
        os.mkdir(d / f"dir{i}")
    for i in range(files):
        os.close(os.open(d / f"file{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    # Data: 1 MiB written once and made durable, then read back from the nodes.
    size = 1 << 20
    write_once_and_read_back(d / "data", size)

    def moved(name, by, **labels):
        def check():
            now = scrape(server, t)
            return total(now, name, **labels) - total(before, name, **labels) >= by
        wait_until(f"{name} {labels} to grow by {by}", check, METRICS_DEADLINE_S)
        return total(scrape(server, t), name, **labels) - total(before, name, **labels)

    assert moved("cpfs_node_written_bytes_total", size * REPLICAS, fs=fs) == size * REPLICAS
    assert moved("cpfs_node_read_bytes_total", size, fs=fs) == size
    # Client requests once each, a write by its head only.
    assert moved("cpfs_node_served_bytes_total", size, fs=fs, op="write") == size
    assert moved("cpfs_node_served_bytes_total", size, fs=fs, op="read") == size
    assert moved("cpfs_node_served_seconds_total", 1e-6, fs=fs, op="write") > 0
    assert moved("cpfs_node_stored_bytes", size * REPLICAS, fs=fs) == size * REPLICAS
    # One more create: the data file.
    assert moved("cpfs_meta_operations_total", dirs, op="mkdir") == dirs
    assert moved("cpfs_meta_operations_total", files + 1, op="create") == files + 1
    assert moved("cpfs_meta_operation_duration_seconds_count", dirs, op="mkdir") == dirs
    # Every operation checks the client's grant, nearly always from the cache.
    assert moved("cpfs_meta_cache_hits_total", dirs + files, cache="grant") >= dirs + files

    after = scrape(server, t)
    # Every client write that succeeded was forwarded to the other copies,
    # and timed (a refused one, say under a capability revoked when the
    # LDAP configuration was added, is counted as an error and retried; the
    # revocation may reach a replica before its head, which then counts a
    # forwarded write refused too).
    head = total(after, "cpfs_node_operation_duration_seconds_count", op="write") \
        - total(before, "cpfs_node_operation_duration_seconds_count", op="write")
    fwd = total(after, "cpfs_node_operation_duration_seconds_count", op="forwarded_write") \
        - total(before, "cpfs_node_operation_duration_seconds_count", op="forwarded_write")
    errs = total(after, "cpfs_node_operation_errors_total", op="write") \
        - total(before, "cpfs_node_operation_errors_total", op="write")
    fwd_errs = total(after, "cpfs_node_operation_errors_total", op="forwarded_write") \
        - total(before, "cpfs_node_operation_errors_total", op="forwarded_write")
    done = head - errs
    assert done >= 1 and fwd - fwd_errs == done * (REPLICAS - 1), (head, fwd, errs, fwd_errs)
    writes = total(after, "cpfs_node_writes_total", fs=fs) - total(before, "cpfs_node_writes_total", fs=fs)
    # The head applies its copy while it forwards: a write a replica refused
    # was applied once, on the head, before the client's retry.
    assert writes == done * REPLICAS + fwd_errs, (writes, done, fwd_errs)
    # The operations were made durable, several to a commit at most.
    entries = total(after, "cpfs_meta_journal_entries_total") - total(before, "cpfs_meta_journal_entries_total")
    commits = total(after, "cpfs_meta_journal_commits_total") - total(before, "cpfs_meta_journal_commits_total")
    assert entries >= dirs + files + 1 and 1 <= commits <= entries
    assert total(after, "cpfs_meta_sessions") >= 1
    # The background loops of `cpfs serve` report their passes.
    assert total(after, "cpfs_loop_passes_total", loop="reconciler") > 0
    # How long passes take (billing's among them) and the reconciler's queue.
    durations = {l["loop"] for n, l, _ in samples(after) if n == "cpfs_loop_last_pass_duration_seconds"}
    assert {"billing", "reconciler", "statistics"} <= durations, durations
    assert [v for n, l, v in samples(after)
            if n == "cpfs_loop_queue_depth" and l.get("loop") == "reconciler"], "no reconciler queue depth"
    # The gateway counted the calls this suite made.
    assert total(after, "cpfs_api_requests_total", action="CreateFileSystem", code="OK") >= 1


def test_the_grafana_dashboard_names_only_exported_series(server):
    """docs/grafana/cpfs.json queries series `/metrics` has (a renamed series
    would leave a dashboard panel empty)."""
    import json
    from dataplane_harness import REPO
    dash = json.loads((REPO / "docs" / "grafana" / "cpfs.json").read_text())
    wanted = {name for p in dash["panels"] for t in p["targets"]
              for name in re.findall(r"\bcpfs_[a-z0-9_]+", t["expr"])}
    assert wanted
    exported = {n for n, _, _ in samples(scrape(server, token(server, "metrics-token")))}
    # Families are typed in the exposition even before their first sample.
    typed = set(re.findall(r"^# TYPE (\S+) (\S+)$", scrape(server, token(server, "metrics-token")), re.M))
    names = exported | {n + s for n, kind in typed
                        for s in ({"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""]))}
    assert wanted <= names, sorted(wanted - names)


def quiet_meta_counters(server, t):
    """A scrape once the metadata server's counters of namespace operations
    stand still (they reach /metrics with its heartbeats, so operations
    made just before may still be on their way)."""
    ops = ("lookup", "getattr", "create", "unlink", "mkdir", "rmdir", "readdirplus")
    last = {}

    def still():
        text = scrape(server, t)
        now = {op: total(text, "cpfs_meta_operations_total", op=op) for op in ops}
        same = now == last.get("counts")
        last.update(counts=now, text=text)
        return same
    wait_until("the metadata counters to stand still", still, METRICS_DEADLINE_S, interval_s=0.7)
    return last["text"]


def test_a_loop_of_creates_and_unlinks_asks_no_directory_attributes(server, mount, mounter):
    """The kernel drops a directory's attributes after every change in it
    and needs them for the next permission check; the mount answers that
    from the directory's attributes the service returned with the change,
    so a loop costs one request per create and one per unlink: the lookup
    of each new name is answered by the mount, to which the service
    delegated the directory it made (only the first reaches the service:
    the caller had not searched there yet). What the mount shows of the
    directory is exact (a fresh mount sees the same)."""
    t = token(server, "metrics-token")
    d = mount.path / f"dirattrs-{uuid.uuid4().hex[:8]}"
    os.mkdir(d)
    os.mkdir(d / "sub")
    n = 40
    before = quiet_meta_counters(server, t)
    for i in range(n):
        os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    for i in range(n // 2):
        os.unlink(d / f"f{i}")
    os.mkdir(d / "sub2")
    mine = os.stat(d)
    wait_until("the loop's last mkdir counted",
               lambda: total(scrape(server, t), "cpfs_meta_operations_total", op="mkdir")
               - total(before, "cpfs_meta_operations_total", op="mkdir") >= 1,
               METRICS_DEADLINE_S)
    after = scrape(server, t)

    def grew(op):
        return total(after, "cpfs_meta_operations_total", op=op) \
            - total(before, "cpfs_meta_operations_total", op=op)
    assert grew("create") == n and grew("unlink") == n // 2 and grew("mkdir") == 1
    # Without the directory's attributes from each change, there would be
    # one GETATTR per create, unlink and mkdir (81 here).
    assert grew("getattr") <= 2, grew("getattr")
    # Without the delegation, one lookup per create and mkdir.
    assert grew("lookup") <= 1, grew("lookup")

    # What the mount answered is what the service holds.
    assert mine.st_nlink == 4, mine.st_nlink                # ., .., sub, sub2
    fresh = os.stat(mounter.mount(mount.domain).path / d.name)
    assert (mine.st_mtime_ns, mine.st_ctime_ns, mine.st_nlink, mine.st_mode) == \
        (fresh.st_mtime_ns, fresh.st_ctime_ns, fresh.st_nlink, fresh.st_mode)


def test_rm_r_reads_each_directory_once(server, mount, mounter):
    """rm -r opens every directory twice in a row (is it empty? then read
    it); the mount serves the second opendir the listing it read for the
    first, as nothing changed in between, and the stat of each directory
    the attributes its parent's listing gave."""
    t = token(server, "metrics-token")
    name = f"rmr-{uuid.uuid4().hex[:8]}"
    # Made through another mount: this one holds nothing of the tree (no
    # attributes from its own changes).
    maker = mounter.mount(mount.domain).path / name
    for d in [maker] + [maker / f"d{i}" for i in range(5)]:
        d.mkdir()
        for j in range(3):
            (d / f"f{j}").write_bytes(b"x")
    top = mount.path / name
    dirs = [top] + [top / f"d{i}" for i in range(5)]
    before = quiet_meta_counters(server, t)
    subprocess.run(["rm", "-r", str(top)], check=True)
    assert not top.exists()
    wait_until("the last rmdir counted",
               lambda: total(scrape(server, t), "cpfs_meta_operations_total", op="rmdir")
               - total(before, "cpfs_meta_operations_total", op="rmdir") >= len(dirs),
               METRICS_DEADLINE_S)
    after = quiet_meta_counters(server, t)

    def grew(op):
        return total(after, "cpfs_meta_operations_total", op=op) \
            - total(before, "cpfs_meta_operations_total", op=op)
    assert grew("unlink") == 3 * len(dirs) and grew("rmdir") == len(dirs)
    # Twice as many without the second opendir served from the first.
    assert grew("readdirplus") == len(dirs), grew("readdirplus")
    # rm stats each directory it opened, after the kernel dropped its atime
    # for the readdir: the mount answers from the parent's listing. What
    # may reach the service: the top (looked up, in no listing of this
    # mount) and the mount's root, whose attributes other tests' changes
    # may have dropped; one more per directory without (7 here).
    assert grew("getattr") <= 2, grew("getattr")


def test_acls_and_security_labels_are_refused_at_once(mount):
    p = mount.path / f"noacl-{uuid.uuid4().hex[:8]}"
    p.write_bytes(b"x")
    for name in ("system.posix_acl_access", "security.selinux"):
        with pytest.raises(OSError) as e:
            os.setxattr(p, name, b"\x02\x00\x00\x00")
        assert e.value.errno == errno.EOPNOTSUPP, (name, e.value)
        with pytest.raises(OSError) as e:
            os.removexattr(p, name)
        assert e.value.errno in (errno.EOPNOTSUPP, errno.ENODATA), (name, e.value)
