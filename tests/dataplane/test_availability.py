"""Availability and elasticity with real data-node processes: a node killed
(-9) under a running fio, a node coming back during the run, the scrubber
repairing corrupted chunk files, a node added to a loaded cluster (data
rebalanced onto it) and a node drained.

Each test owns a `cpfs serve --nodes 0` and its `cpfs node` processes
(cluster_harness.Cluster), so it can kill and restart nodes at will.
"""

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

import dataplane_harness as h
from cluster_harness import Cluster


@pytest.fixture
def cluster_factory(fuse_ready, base_dir, request):
    made = []

    def make(nodes=3, node_env=None, server_args=()):
        workdir = base_dir / f"cluster-{request.node.name}-{len(made)}"
        workdir.mkdir(parents=True)
        c = Cluster(workdir, node_env=node_env, server_args=server_args)
        made.append(c)
        for _ in range(nodes):
            c.add_node()
        return c
    yield make
    for c in made:
        c.stop()


@pytest.fixture
def mounter_for(base_dir):
    made = []

    def make(cluster):
        m = h.Mounter(cluster.server, cluster.workdir)
        made.append(m)
        return m
    yield make
    for m in made:
        m.cleanup()


def fio_cmd(directory, name, extra):
    fio = shutil.which("fio")
    if not fio:
        pytest.fail("fio is not installed (.ci/setup.sh installs it)")
    return [fio, f"--name={name}", f"--directory={directory}", "--ioengine=psync",
            "--bs=1M", "--size=48M", "--numjobs=4", "--verify=crc32c", "--verify_fatal=1",
            "--verify_dump=0", "--verify_state_save=0", "--end_fsync=1",
            "--group_reporting=0", "--output-format=json", *extra]


def fio_errors(stdout):
    report = json.loads(stdout[stdout.index("{"):])
    return [(j["jobname"], j["error"]) for j in report["jobs"] if j.get("error")], report["jobs"]


def written_bytes(directory):
    return sum(p.stat().st_size for p in directory.glob("*") if p.is_file())


def start_fio(directory, name, rate="6m"):
    # Rate-limited so the run lasts long enough (about 8 s per pass) for a
    # node to die and come back in the middle of it.
    args = fio_cmd(directory, name, ["--rw=write", "--do_verify=1", f"--rate={rate}"])
    # From outside the mount: fio may leave files in its working directory.
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(directory.parent.parent))


def finish_fio(proc, what):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"fio {what} exited {proc.returncode}:\n{err}\n{out[-2000:]}"
    errors, jobs = fio_errors(out)
    assert not errors, f"fio {what}: jobs with errors {errors}"
    assert len(jobs) == 4
    return jobs


def verify_from_fresh_mount(mounter, fs, directory_name, name):
    m = mounter.mount(fs.domain)
    args = fio_cmd(m.path / directory_name, name, ["--rw=write", "--verify_only"])
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=str(m.path.parent))
    assert r.returncode == 0, f"fio verify exited {r.returncode}:\n{r.stderr}\n{r.stdout[:3000]}"
    errors, _ = fio_errors(r.stdout)
    assert not errors, f"verification from a fresh mount failed: {errors}"


def test_fio_survives_a_node_killed_mid_run(cluster_factory, mounter_for):
    c = cluster_factory(nodes=3)
    fs = h.create_filesystem(c.server)
    mounter = mounter_for(c)
    m = mounter.mount(fs.domain)
    d = m.path / "failover"
    d.mkdir()
    victim = c.nodes[1]
    before = c.status()
    assert any(victim.node_id in {x["id"] for x in ch["members"]} for ch in before["Table"]["chains"])

    fio = start_fio(d, "failover")
    h.wait_until("fio to have written 24 MiB", lambda: written_bytes(d) >= 24 << 20, 60)
    c.kill(victim)
    jobs = finish_fio(fio, "with a node killed mid-run")
    assert sum(j["write"]["io_bytes"] for j in jobs) == 4 * 48 << 20

    # The dead node left every chain and the chains are back to R copies.
    after = c.wait_settled(without=[victim])
    assert after["ChainTableVersion"] > before["ChainTableVersion"]
    assert all(len(ch["members"]) == 2 for ch in after["Table"]["chains"])
    live = [n for n in c.nodes if n.alive()]
    c.wait_replicas_consistent(live)
    verify_from_fresh_mount(mounter, fs, "failover", "failover")


def test_a_node_returning_during_the_run_rejoins(cluster_factory, mounter_for):
    c = cluster_factory(nodes=3)
    fs = h.create_filesystem(c.server)
    mounter = mounter_for(c)
    m = mounter.mount(fs.domain)
    d = m.path / "rejoin"
    d.mkdir()
    victim = c.nodes[2]

    fio = start_fio(d, "rejoin")
    h.wait_until("fio to have written 16 MiB", lambda: written_bytes(d) >= 16 << 20, 60)
    c.kill(victim)

    def gone():
        return all(victim.node_id not in {x["id"] for x in ch["members"]}
                   for ch in c.status()["Table"]["chains"])
    h.wait_until("the killed node to leave its chains", gone, 30, interval_s=0.2)
    assert fio.poll() is None, "fio should still be running when the node returns"
    c.start(victim)
    finish_fio(fio, "with a node leaving and returning")

    # The returning node takes chains again (rebalance) and holds exactly
    # what its chains hold.
    st = c.wait_settled()

    def back():
        return any(victim.node_id in {x["id"] for x in ch["members"]}
                   for ch in c.wait_settled()["Table"]["chains"])
    h.wait_until("the returned node to serve chains again", back, 120, interval_s=1)
    assert st["Settled"]
    c.wait_replicas_consistent(c.nodes)
    verify_from_fresh_mount(mounter, fs, "rejoin", "rejoin")


def test_scrubber_repairs_corrupted_chunk_files(cluster_factory, mounter_for):
    c = cluster_factory(nodes=3, node_env={"CPFS_NODE_SCRUB_INTERVAL": "1"})
    fs = h.create_filesystem(c.server)
    m = mounter_for(c).mount(fs.domain)
    payload = os.urandom(3 << 20)
    (m.path / "scrubbed").write_bytes(payload)
    os.sync()
    c.wait_settled()
    # No chain moves (toward even bytes) while the copies are damaged: a
    # move would drop the damaged copy instead of repairing it.
    c.wait_table_stable()
    c.wait_replicas_consistent(c.nodes)

    # Flip one byte in two blocks of one node's copy of every chunk it holds.
    node = c.nodes[0]
    root = node.data_dir / "chunks"
    files = sorted(p for p in root.rglob("*.c*") if p.is_file() and p.stat().st_size > 2 * 4100)
    assert files, "the node should hold chunks of the file"
    good = {p: p.read_bytes() for p in files}
    for p in files:
        raw = bytearray(good[p])
        raw[100] ^= 0xFF
        raw[4100 + 200] ^= 0xFF            # inside the second record's block
        p.write_bytes(bytes(raw))
    damaged = 2 * len(files)

    def repaired():
        me = next(n for n in c.node_list() if n["Id"] == node.node_id)
        return me["Scrub"]["RepairedBlocks"] >= damaged
    h.wait_until(f"the scrubber to repair {damaged} blocks", repaired, 120, interval_s=0.5,
                 on_timeout=lambda: c.node_log(node))
    for p in files:
        assert p.read_bytes() == good[p], f"{p} was not restored"
    c.wait_replicas_consistent(c.nodes)
    me = next(n for n in c.node_list() if n["Id"] == node.node_id)
    assert me["Scrub"]["BadBlocks"] >= damaged
    assert me["Scrub"]["UnrecoverableBlocks"] == 0
    h.drop_caches()
    assert (m.path / "scrubbed").read_bytes() == payload


def write_files(directory, count, size, tag):
    digests = {}
    for i in range(count):
        data = os.urandom(size)
        p = directory / f"{tag}-{i:03d}"
        p.write_bytes(data)
        digests[p.name] = hashlib.sha256(data).hexdigest()
    return digests


def test_a_new_node_gets_an_even_share_and_a_drained_node_none(cluster_factory, mounter_for):
    c = cluster_factory(nodes=3)
    fs = h.create_filesystem(c.server)
    mounter = mounter_for(c)
    m = mounter.mount(fs.domain)
    d = m.path / "spread"
    d.mkdir()
    digests = write_files(d, 48, 4 << 20, "before")
    os.sync()
    c.wait_settled()

    # A fourth node joins while a writer keeps going.
    errors = []
    during = {}

    def writer():
        try:
            during.update(write_files(d, 16, 1 << 20, "during"))
        except OSError as e:
            errors.append(e)
    t = threading.Thread(target=writer)
    t.start()
    new = c.add_node()
    t.join(timeout=300)
    assert not errors, f"writes failed during the rebalance: {errors}"
    digests.update(during)

    last = {}

    def balanced():
        st = c.wait_settled(what="the rebalance to finish")
        held = {n.node_id: 0 for n in c.nodes}
        for ch in st["Table"]["chains"]:
            for mem in ch["members"]:
                held[mem["id"]] += 1
        sizes = [c.stored_bytes(n) for n in c.nodes]
        last["sizes"] = sizes
        mean = sum(sizes) / len(sizes)
        return held[new.node_id] > 0 and all(abs(s - mean) <= 0.2 * mean for s in sizes)
    h.wait_until("per-node usage within 20 % of even", balanced, 180, interval_s=1,
                 on_timeout=lambda: f"bytes per node: {last.get('sizes')}")
    c.wait_replicas_consistent(c.nodes)
    h.drop_caches()
    fresh = mounter.mount(fs.domain)
    for name, digest in digests.items():
        assert hashlib.sha256((fresh.path / "spread" / name).read_bytes()).hexdigest() == digest, name

    # Drain the new node: it ends holding nothing, the data stays intact
    # even after the node is stopped.
    r = c.cli("drain", new.node_id)
    assert "drained" in r.stderr
    me = next(n for n in c.node_list() if n["Id"] == new.node_id)
    assert me["State"] == "Drained" and me["ServingChains"] == 0 and me["SyncingChains"] == 0
    c.wait_settled(without=[new])
    c.kill(new)
    rest = [n for n in c.nodes if n is not new]
    c.wait_replicas_consistent(rest)
    h.drop_caches()
    for name, digest in digests.items():
        assert hashlib.sha256((fresh.path / "spread" / name).read_bytes()).hexdigest() == digest, name


def redundancy(server, fs):
    return server.api("DescribeFileSystems", FileSystemId=fs.fs_id)["FileSystems"]["FileSystem"][0]["DataRedundancy"]


def test_a_returning_node_resyncs_what_it_missed_before_serving(cluster_factory, mounter_for):
    # Two nodes, R = 2: with one down there is nowhere to repair to, so the
    # file system is Degraded until the node returns and catches up.
    c = cluster_factory(nodes=2)
    fs = h.create_filesystem(c.server)
    mounter = mounter_for(c)
    m = mounter.mount(fs.domain)
    a, b = c.nodes
    before = write_files(m.path, 8, 2 << 20, "before")
    os.sync()
    assert redundancy(c.server, fs)["State"] == "Healthy"

    c.kill(b)
    h.wait_until("the file system to be Degraded",
                 lambda: redundancy(c.server, fs)["State"] == "Degraded", 30, interval_s=0.2)
    # Writes go on with one copy, overwrites and deletions included.
    missed = write_files(m.path, 8, 2 << 20, "missed")
    (m.path / "before-000").write_bytes(b"rewritten while b was down")
    before["before-000"] = hashlib.sha256(b"rewritten while b was down").hexdigest()
    (m.path / "before-001").unlink()
    del before["before-001"]
    os.sync()

    c.start(b)
    st = c.wait_settled(what="the returned node to resync and serve")
    assert all({x["id"] for x in ch["members"]} == {a.node_id, b.node_id} for ch in st["Table"]["chains"])
    red = redundancy(c.server, fs)
    assert red["State"] == "Healthy" and red["DegradedChains"] == 0 and red["Replicas"] == 2
    c.wait_replicas_consistent(c.nodes)

    # Only b is left: everything, including what it missed, reads from it.
    c.kill(a)
    h.wait_until("a to leave its chains", lambda: all(
        {x["id"] for x in ch["members"]} == {b.node_id} for ch in c.status()["Table"]["chains"]), 30,
        interval_s=0.2)
    h.drop_caches()
    fresh = mounter.mount(fs.domain)
    for name, digest in {**before, **missed}.items():
        got = (fresh.path / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == digest, (name, len(got), got[:40])
    assert not (fresh.path / "before-001").exists()


def test_nodes_on_chunk_format_1_migrate_when_they_start(cluster_factory, mounter_for):
    """Chunk files named by index only (format 1, before chains were part of
    their names) are renamed to their chains when `cpfs node` starts, from
    the stripes the metadata service knows: every node goes back to format
    1, and the data reads back exactly from a fresh mount."""
    c = cluster_factory(nodes=2)
    fs = h.create_filesystem(c.server)
    m = mounter_for(c).mount(fs.domain)
    files = {f"f{i}": os.urandom((1 << 20) + i * 4097) for i in range(4)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    os.sync()
    c.wait_settled()
    c.wait_replicas_consistent(c.nodes)

    names = {}
    for node in c.nodes:
        c.kill(node)
        current = sorted(p for p in (node.data_dir / "chunks").rglob("*.c*") if p.is_file())
        assert current, f"node {node.index} holds no chunk"
        names[node.index] = [p.relative_to(node.data_dir) for p in current]
        for p in current:
            p.rename(p.with_name(p.name.split(".c")[0]))
        (node.data_dir / "chunk-format").unlink()

    for node in c.nodes:
        c.start(node)
    for node in c.nodes:
        h.wait_until(f"node {node.index} migrated and serving",
                     lambda: (node.data_dir / "chunk-format").exists()
                     and any(n["Id"] == node.node_id and n["SecondsSinceHeartbeat"] < 2
                             for n in c.node_list()),
                     60, interval_s=0.2, on_timeout=lambda: c.node_log(node))
        assert (node.data_dir / "chunk-format").read_text().strip() == "2"
        for rel in names[node.index]:
            assert (node.data_dir / rel).is_file(), f"{rel} did not get its chain back"
        assert "chunk format migrated" in c.node_log(node, lines=200)

    h.drop_caches()
    fresh = mounter_for(c).mount(fs.domain)
    for name, data in files.items():
        assert (fresh.path / name).read_bytes() == data, f"{name} differs after the migration"
