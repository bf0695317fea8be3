#!/usr/bin/env python3
"""Where a 4 KiB read or write costs in the data path (or a call of
--block bytes).

Runs `cpfs serve` (release build, three data nodes, two copies), mounts one
file system, lays out one file and then, from one Python thread with
O_DIRECT (so every call reaches the service, as fio's random jobs do),
writes and reads 4 KiB at random offsets, then reads the same offsets
again (the mount's read cache answers those). Reports:

- ops/s of each phase;
- CPU time per operation of the FUSE client, the data nodes (all three)
  and `cpfs serve` (perf stat task-clock: this machine's VM has no
  hardware counters);
- instructions per operation of the client and of the nodes, counted by
  callgrind with instrumentation on only while a phase runs (stable under
  machine noise: the figure to compare before and after a change);
- the profile of the client and of the nodes during the read phase
  (`perf record -e cpu-clock -g`, then `perf report`'s top entries).

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/data_profile.py [--ops N]

Needs root (FUSE), perf and valgrind. Writes
bench/results/<UTC date>-data-profile.md (or --report PATH).
"""

import argparse
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

# "reread" reads the offsets of "read" again: what the mount's read cache
# answers (client/src/read_cache.rs); "read" is its first, cold pass.
PHASES = ("write", "read", "reread")
FILE_BYTES = 64 << 20
BLOCK = 4096


def lay_out(path):
    """The file the phases work on, written once in 1 MiB pieces."""
    piece = b"\xa5" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(FILE_BYTES // len(piece)):
            f.write(piece)
        os.fsync(f.fileno())


def set_block(size):
    """The bytes of each call (--block)."""
    global BLOCK
    BLOCK = size


def block_name():
    return f"{BLOCK >> 20} MiB" if BLOCK % (1 << 20) == 0 else f"{BLOCK >> 10} KiB"


def run_phase(path, n, phase, seed=7):
    """n random O_DIRECT calls of BLOCK bytes of `phase`; seconds taken."""
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
        # `cpfs node ...`, or valgrind's loader running it.
        is_node = any(a.endswith(b"cpfs") and b == b"node" for a, b in zip(cmd, cmd[1:]))
        if ppid == server_pid and is_node:
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
        # The profiles: each phase again under perf record.
        for phase in PHASES:
            recs = [subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p",
                                      ",".join(map(str, pids)), "-o",
                                      str(perf_dir / f"{role}-{phase}.data")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for role, pids in (("client", client), ("nodes", nodes))]
            time.sleep(0.5)
            run_phase(path, n, phase, seed=11)
            for r in recs:
                r.send_signal(signal.SIGINT)
            for r in recs:
                r.wait(timeout=120)
    finally:
        mp.stop(server, mount)
    return rows


def dump_totals(path_glob):
    """Instructions in the callgrind dumps matching path_glob, by pid."""
    out = {}
    for f in path_glob:
        m = re.search(r"^totals:\s+(\d+)", f.read_text(errors="replace"), re.M)
        pid = int(f.name.split(".")[1])
        if m:
            out[pid] = out.get(pid, 0) + int(m.group(1))
    return out


def callgrind(pids, *args):
    for pid in pids:
        subprocess.run(["callgrind_control", *args, str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120, check=False)


def measure_instructions(binary, workdir, n):
    """Instructions per call of the client and of the nodes, counted by
    callgrind with instrumentation switched on only while a phase runs
    (`callgrind_control -i on|off`, then a dump per phase): start-up, the
    layout and the background loops between phases are not counted."""
    out = workdir / "callgrind"
    out.mkdir(exist_ok=True)
    wrapper = workdir / "cpfs-under-callgrind"
    # `cpfs serve` starts its nodes from its own executable, so it runs
    # under valgrind with its children traced; `cpfs mount` is started
    # through this wrapper. Each process writes its own files.
    vg = (f"valgrind --tool=callgrind --dump-line=no --instr-atstart=no "
          f"--callgrind-out-file={out}/cg.%p")
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = serve ]; then exec {vg} --trace-children=yes "{binary}" "$@"; fi\n'
        f'if [ "$1" = mount ]; then exec {vg} "{binary}" "$@"; fi\n'
        f'exec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    server, mount = mp.start(workdir / "run", wrapper=wrapper)
    per_op = {}
    try:
        client = mount.daemon_pids() or ([mount.proc.pid] if mount.proc else [])
        nodes = node_pids(server.proc.pid)
        path = mount.path / "data"
        lay_out(path)
        callgrind(client + nodes, "-d")
        for phase in PHASES:
            before = {f.name for f in out.glob("cg.*")}
            callgrind(client + nodes, "-i", "on")
            run_phase(path, n, phase)
            callgrind(client + nodes, "-i", "off")
            callgrind(client + nodes, "-d")
            # The dumps are written when each process next runs its
            # scheduler: wait for one whole new file (its totals line is
            # written last) per process.
            deadline = time.monotonic() + 120
            while True:
                new = [f for f in out.glob("cg.*") if f.name not in before]
                whole = {int(f.name.split(".")[1]) for f in new
                         if re.search(r"^totals:", f.read_text(errors="replace"), re.M)}
                if whole >= set(client + nodes):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            totals = dump_totals(new)
            per_op[phase] = {
                "client": sum(totals.get(p, 0) for p in client) / n or None,
                "nodes": sum(totals.get(p, 0) for p in nodes) / n or None,
            }
    finally:
        mount.unmount()
        h.stop_group(server.proc, deadline_s=120)
        os.environ["CPFS_BIN"] = str(binary)
        h.force_rmtree(workdir / "run")
        shutil.rmtree(out, ignore_errors=True)
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
    ap.add_argument("--block", type=int, default=BLOCK,
                    help="bytes per call, a multiple of 4096 dividing the file's 64 MiB "
                         "(default 4096; 1048576 shows the cost per byte of streams)")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    if args.block <= 0 or args.block % 4096 or FILE_BYTES % args.block:
        ap.error("--block must be a multiple of 4096 that divides 64 MiB")
    set_block(args.block)
    binary, date = mp.prerequisites()
    report = args.report or REPO / "bench" / "results" / f"{date}-data-profile.md"
    workdir = Path(tempfile.mkdtemp(prefix="cpfs-data-profile-"))
    load = os.getloadavg()[0]
    try:
        timed = measure_time(binary, workdir, args.ops, workdir)
        counted = measure_instructions(binary, workdir, args.counted_ops)
        profiles = {(role, phase): perf_reports(workdir / f"{role}-{phase}.data")
                    for phase in PHASES for role in ("client", "nodes")}
    finally:
        h.force_rmtree(workdir)

    fmt = mp.fmt
    lines = [
        f"# Data path: cost of a {block_name()} call ({date})",
        "",
        f"Generated by `bench/data_profile.py` (`cpfs serve` release build, 3 data nodes, 2 copies, one "
        f"mount, one Python thread, O_DIRECT calls of {block_name()} at random offsets of a {FILE_BYTES >> 20} MiB file; "
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
    for (role, phase), (threads, self_time) in profiles.items():
        lines += [f"## {role.capitalize()} profile during {block_name()} {phase}s (perf record -e cpu-clock -g; self time)",
                  "", "By thread:", "", "```", mp.clean(threads, 2000), "```", "",
                  "By symbol (≥ 2 %):", "", "```", mp.clean(self_time, 6000), "```", ""]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    print(report)


if __name__ == "__main__":
    main()
