#!/usr/bin/env python3
"""Where a 4 KiB read or write costs in the data path.

Runs `cpfs serve` (release build, three data nodes, two copies), mounts one
file system, lays out one file and then, from one Python thread with
O_DIRECT (so every call reaches the service, as fio's random jobs do),
writes and reads 4 KiB at random offsets. Reports:

- ops/s of each phase;
- CPU time per operation of the FUSE client, the data nodes (all three)
  and `cpfs serve` (perf stat task-clock: this machine's VM has no
  hardware counters);
- instructions per operation of the client and of the nodes, counted by
  callgrind (stable under machine noise: the figure to compare before and
  after a change): the difference between whole runs that do one phase
  more than the other, divided by the operations;
- the profile of the client and of the nodes during the read phase
  (`perf record -e cpu-clock -g`, then `perf report`'s top entries).

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/data_profile.py [--ops N]

Needs root (FUSE), perf and valgrind. Writes
bench/results/<UTC date>-data-profile.md (or --report PATH).
"""

import argparse
import datetime
import mmap
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
sys.path.insert(0, str(REPO / "bench"))
import dataplane_harness as h  # noqa: E402  (the harness the FUSE tests use)
import meta_profile as mp  # noqa: E402  (perf stat / report helpers)

PHASES = ("write", "read")
FILE_BYTES = 64 << 20
BLOCK = 4096


def lay_out(path):
    """The file the phases work on, written once in 1 MiB pieces."""
    piece = b"\xa5" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(FILE_BYTES // len(piece)):
            f.write(piece)
        os.fsync(f.fileno())


def run_phase(path, n, phase, seed=7):
    """n random 4 KiB O_DIRECT calls of `phase`; seconds taken."""
    rng = random.Random(seed)
    offsets = [rng.randrange(FILE_BYTES // BLOCK) * BLOCK for _ in range(n)]
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT wants
    buf.write(b"\x5a" * BLOCK)
    fd = os.open(path, (os.O_RDWR if phase == "write" else os.O_RDONLY) | os.O_DIRECT)
    try:
        t0 = time.perf_counter()
        for off in offsets:
            if phase == "write":
                os.pwritev(fd, [buf], off)
            else:
                os.preadv(fd, [buf], off)
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        buf.close()


def node_pids(server_pid):
    """The data nodes `cpfs serve` started (its `node` children)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"node" in cmd[1:2]:
            out.append(int(d.name))
    return out


def measure_time(binary, workdir, n, perf_dir):
    os.environ["CPFS_BIN"] = str(binary)
    server, mount = mp.start(workdir / "timed")
    rows = {}
    try:
        client = mount.daemon_pids() or ([mount.proc.pid] if mount.proc else [])
        nodes = node_pids(server.proc.pid)
        path = mount.path / "data"
        lay_out(path)
        roles = {"client": client, "nodes": nodes, "serve": [server.proc.pid]}
        for phase in PHASES:
            everyone = [p for pids in roles.values() for p in pids]
            procs = mp.perf_stat(everyone, workdir / f"stat-{phase}")
            time.sleep(0.2)
            secs = run_phase(path, n, phase)
            mp.stop_perf(procs)
            cpu = {role: sum(filter(None, (mp.task_clock_ms(workdir / f"stat-{phase}.{p}")
                                           for p in pids))) or None
                   for role, pids in roles.items()}
            rows[phase] = (n / secs, cpu)
        # The profiles: a second read loop under perf record.
        recs = [subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p",
                                  ",".join(map(str, pids)), "-o", str(perf_dir / f"{role}.data")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for role, pids in (("client", client), ("nodes", nodes))]
        time.sleep(0.5)
        run_phase(path, n, "read", seed=11)
        for r in recs:
            r.send_signal(signal.SIGINT)
        for r in recs:
            r.wait(timeout=120)
    finally:
        mp.stop(server, mount)
    return rows


def callgrind_totals(out_dir):
    """Instructions per role (client, nodes, serve) of the callgrind
    outputs in out_dir, by the command line each file records."""
    totals = {"client": 0, "nodes": 0, "serve": 0}
    for f in out_dir.glob("cg.*"):
        text = f.read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        cmd = re.search(r"^cmd:\s+(.*)$", text, re.M)
        if not m or not cmd:
            continue
        words = cmd.group(1).split()
        role = {"mount": "client", "node": "nodes", "serve": "serve"}.get(words[1] if len(words) > 1 else "")
        if role:
            totals[role] += int(m.group(1))
    return totals


def counted_run(binary, workdir, n, phases):
    """Instructions of the client, the nodes and `cpfs serve` over a whole
    run (start, one mount, the layout, `phases`, stop) under callgrind."""
    out = workdir / "callgrind"
    out.mkdir(exist_ok=True)
    wrapper = workdir / "cpfs-under-callgrind"
    # `cpfs serve` starts its nodes from its own executable, so it runs
    # under valgrind with its children traced; `cpfs mount` is started
    # through this wrapper. Each process writes its own file.
    vg = f"valgrind --tool=callgrind --dump-line=no --callgrind-out-file={out}/cg.%p"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = serve ]; then exec {vg} --trace-children=yes "{binary}" "$@"; fi\n'
        f'if [ "$1" = mount ]; then exec {vg} "{binary}" "$@"; fi\n'
        f'exec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    server, mount = mp.start(workdir / "run", wrapper=wrapper)
    try:
        path = mount.path / "data"
        lay_out(path)
        for phase in phases:
            run_phase(path, n, phase)
    finally:
        mount.unmount()
        # SIGTERM: the server stops its nodes gracefully and callgrind
        # writes every process's totals at exit.
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            h.stop_group(server.proc)
        os.environ["CPFS_BIN"] = str(binary)
    totals = callgrind_totals(out)
    h.force_rmtree(workdir / "run")
    shutil.rmtree(out, ignore_errors=True)
    return totals


def measure_instructions(binary, workdir, n):
    totals = [counted_run(binary, workdir, n, PHASES[:k]) for k in range(len(PHASES) + 1)]
    per_op = {}
    for i, phase in enumerate(PHASES):
        a, b = totals[i], totals[i + 1]
        per_op[phase] = {role: (b[role] - a[role]) / n for role in a}
    return per_op


def perf_reports(data):
    self_time = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--percent-limit", "2",
         "--sort", "dso,symbol", "-g", "none"], capture_output=True, text=True, timeout=600).stdout
    threads = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "comm", "-g", "none"],
        capture_output=True, text=True, timeout=600).stdout
    return threads, self_time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=5000, help="calls per timed phase (default 5000)")
    ap.add_argument("--counted-ops", type=int, default=1000,
                    help="calls per phase under callgrind (default 1000)")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    binary = Path(os.environ.get("CPFS_BIN") or REPO / "target" / "release" / "cpfs").resolve()
    if not binary.is_file():
        sys.exit(f"{binary} not found: cargo build --release --bin cpfs, or set CPFS_BIN")
    for tool in ("perf", "valgrind"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    report = args.report or REPO / "bench" / "results" / f"{date}-data-profile.md"
    workdir = Path(tempfile.mkdtemp(prefix="cpfs-data-profile-"))
    load = os.getloadavg()[0]
    try:
        timed = measure_time(binary, workdir, args.ops, workdir)
        counted = measure_instructions(binary, workdir, args.counted_ops)
        profiles = {role: perf_reports(workdir / f"{role}.data") for role in ("client", "nodes")}
    finally:
        h.force_rmtree(workdir)

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    lines = [
        f"# Data path: cost of a 4 KiB call ({date})",
        "",
        f"Generated by `bench/data_profile.py` (`cpfs serve` release build, 3 data nodes, 2 copies, one "
        f"mount, one Python thread, O_DIRECT at random offsets of a {FILE_BYTES >> 20} MiB file; "
        f"{args.ops} calls per timed phase, {args.counted_ops} under callgrind). "
        f"Machine: {os.cpu_count()} cores; load before: {load:.2f}.",
        "",
        "| phase | ops/s | client CPU µs/op | nodes CPU µs/op | serve CPU µs/op "
        "| client instructions/op | nodes instructions/op |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in PHASES:
        rate, cpu = timed[phase]
        per = {role: (v * 1000 / args.ops if v else None) for role, v in cpu.items()}
        ins = counted[phase]
        lines.append(f"| {phase} | {rate:.0f} | {fmt(per['client'], '.0f')} | {fmt(per['nodes'], '.0f')} | "
                     f"{fmt(per['serve'], '.0f')} | {fmt(ins['client'], ',.0f')} | {fmt(ins['nodes'], ',.0f')} |")
    lines += ["", "CPU time is perf stat's task-clock (all threads of the processes) over the phase. "
              "Instructions of the nodes are all three together: a write is applied on two of them.", ""]
    for role, (threads, self_time) in profiles.items():
        lines += [f"## {role.capitalize()} profile during 4 KiB reads (perf record -e cpu-clock -g; self time)",
                  "", "By thread:", "", "```", mp.clean(threads, 2000), "```", "",
                  "By symbol (≥ 2 %):", "", "```", mp.clean(self_time, 6000), "```", ""]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    print(report)


if __name__ == "__main__":
    main()
