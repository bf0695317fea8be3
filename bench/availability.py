#!/usr/bin/env python3
"""Scale-out and failover, measured. A benchmark, not a test: it prints a
Markdown report and writes it to bench/results/<UTC date>-availability.md.

1. Scaling: clusters of 1, 2 and 4 data nodes, every node capped with
   `cpfs node --max-bandwidth MBPS` (R = 1, so each byte crosses one node),
   and fio writing then reading with 8 jobs; aggregate MB/s and the scaling
   efficiency, throughput(N) / (N x throughput(1)).
2. Failover stall: 3 nodes, R = 2, a rate-limited fio writing with a
   per-second bandwidth log; one node is killed (-9) after 5 s. The stall is
   the longest run of log intervals in which less than 10 % of the median
   rate was written, measured from fio's own log.

    .venv/bin/python bench/availability.py     # CPFS_BIN=target/release/cpfs by default

Needs what tests/dataplane needs (root, FUSE, fio, the .venv). The cap must
sit well below what the machine does unthrottled, or the disk, not the
nodes, is what is measured.
"""
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
os.environ.setdefault("CPFS_BIN", str(REPO / "target" / "release" / "cpfs"))

import dataplane_harness as h  # noqa: E402
from cluster_harness import Cluster  # noqa: E402

CAP_MBPS = int(os.environ.get("CAP_MBPS", "25"))
RUNTIME_S = int(os.environ.get("RUNTIME_S", "10"))


def fio(directory, *extra):
    args = [shutil.which("fio") or "fio", "--name=bench", f"--directory={directory}",
            "--ioengine=psync", "--bs=1M", "--numjobs=8", "--group_reporting=1",
            "--output-format=json", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=str(directory.parent.parent))
    if r.returncode != 0:
        raise SystemExit(f"fio failed: {r.stderr}\n{r.stdout[-2000:]}")
    return json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]


def cluster(base, name, nodes, env, server_args):
    workdir = base / name
    workdir.mkdir()
    c = Cluster(workdir, node_env=env, server_args=server_args)
    for _ in range(nodes):
        c.add_node()
    fs = h.create_filesystem(c.server)
    m = h.start_mount(c.server, fs.domain, workdir / "mnt")
    return c, m


def scaling(base):
    rows = []
    for n in (1, 2, 4):
        c, m = cluster(base, f"scale-{n}", n, {"CPFS_NODE_MAX_BANDWIDTH": str(CAP_MBPS)},
                       ["--replicas", "1"])
        try:
            d = m.path / "data"
            d.mkdir()
            w = fio(d, "--rw=write", "--size=256M", "--time_based=1", f"--runtime={RUNTIME_S}",
                    "--end_fsync=1")
            h.drop_caches()
            r = fio(d, "--rw=read", "--size=256M", "--time_based=1", f"--runtime={RUNTIME_S}")
            rows.append((n, w["write"]["bw_bytes"] / 1e6, r["read"]["bw_bytes"] / 1e6))
        finally:
            m.unmount()
            c.stop()
    return rows


def failover(base):
    c, m = cluster(base, "failover", 3, {}, [])
    try:
        d = m.path / "data"
        d.mkdir()
        log = base / "failover-bw"
        args = [shutil.which("fio") or "fio", "--name=failover", f"--directory={d}",
                "--ioengine=psync", "--bs=1M", "--numjobs=4", "--size=64M", "--rw=write",
                "--rate=8m", "--time_based=1", "--runtime=20", f"--write_bw_log={log}",
                "--log_avg_msec=250", "--output-format=json"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=str(base))
        time.sleep(5)
        victim = c.nodes[1]
        lost_bytes = c.stored_bytes(victim)
        killed_at = time.monotonic()
        c.kill(victim)
        # Repair throughput: what the dead node held, over the time from its
        # kill to every chain having R serving copies again.
        c.wait_settled(without=[victim])
        repair_s = time.monotonic() - killed_at
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"fio failed during failover: {err}\n{out[-2000:]}")
        errors = [j["error"] for j in json.loads(out[out.index("{"):])["jobs"] if j["error"]]
        # Sum the jobs' logs per 250 ms interval.
        per_slot = {}
        for f in sorted(base.glob("failover-bw_bw.*.log")):
            for line in f.read_text().splitlines():
                t_ms, kib_s = (int(x.strip()) for x in line.split(",")[:2])
                per_slot[t_ms // 250] = per_slot.get(t_ms // 250, 0) + kib_s
        slots = [per_slot.get(i, 0) for i in range(max(per_slot) + 1)] if per_slot else []
        median = statistics.median(slots) if slots else 0
        longest = run = 0
        for v in slots:
            run = run + 1 if v < 0.1 * median else 0
            longest = max(longest, run)
        settled = c.wait_settled()
        return {"stall_s": longest * 0.25, "errors": errors, "median_mbps": median * 1024 / 1e6,
                "version": settled["ChainTableVersion"], "killed_after_s": 5,
                "lost_mb": lost_bytes / 1e6, "repair_s": repair_s}
    finally:
        m.unmount()
        c.stop()


def main():
    base = Path(tempfile.mkdtemp(prefix="cpfs-availability-bench-"))
    try:
        rows = scaling(base)
        fo = failover(base)
    finally:
        for s in list(h.LIVE_SERVERS):
            h.stop_group(s.proc)
        shutil.rmtree(base, ignore_errors=True)
    one_w, one_r = rows[0][1], rows[0][2]
    lines = [
        f"# Scale-out and failover ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d})",
        "",
        f"`.venv/bin/python bench/availability.py` (release build, per-node cap "
        f"`--max-bandwidth {CAP_MBPS}` MB/s, R = 1, fio 8 jobs × 1 MiB, {RUNTIME_S} s each way).",
        "",
        "| nodes | write MB/s | write efficiency | read MB/s | read efficiency |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, w, r in rows:
        lines.append(f"| {n} | {w:.1f} | {w / (n * one_w):.0%} | {r:.1f} | {r / (n * one_r):.0%} |")
    lines += [
        "",
        "Failover: 3 nodes, R = 2, fio 4 jobs at 8 MB/s each with a 250 ms bandwidth log; one node "
        f"killed -9 after {fo['killed_after_s']} s.",
        "",
        f"- longest stall (intervals under 10 % of the median {fo['median_mbps']:.1f} MB/s): "
        f"**{fo['stall_s']:.2f} s**",
        f"- fio errors: {len(fo['errors'])}",
        f"- back to R copies {fo['repair_s']:.1f} s after the kill (3 s of it failure detection); "
        f"the dead node held {fo['lost_mb']:.0f} MB of chunk files, so repair ran at "
        f"{fo['lost_mb'] / max(fo['repair_s'] - 3, 0.1):.0f} MB/s (while fio kept writing)",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    out = REPO / "bench" / "results" / f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-availability.md"
    out.write_text(report)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
