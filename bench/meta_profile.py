#!/usr/bin/env python3
"""Where a namespace operation's cost goes in the metadata service.

Runs `cpfs serve` (release build, embedded nodes), mounts one file system
and, one Python thread at a time, creates, stats (after dropping the
kernel's caches) and unlinks N empty files, then reports:

- ops/s of each phase;
- CPU time per operation of the server and of the FUSE client (perf stat
  task-clock: this machine's VM has no hardware counters);
- instructions per operation of the server, counted by callgrind (stable
  under machine noise: the figure to compare before and after a change),
  with the server run under valgrind and instrumentation switched on only
  around each phase (`callgrind_control -i on|off`);
- the server's and the FUSE client's profiles during a create phase
  (`perf record -e cpu-clock -g`, then `perf report`'s top entries), where
  the time goes.

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/meta_profile.py [--files N]

Needs root (FUSE, drop_caches), perf and valgrind. Writes
bench/results/<UTC date>-meta-profile.md (or --report PATH).
"""

import argparse
import datetime
import os
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
import dataplane_harness as h  # noqa: E402  (the harness the FUSE tests use)

PHASES = ("create", "stat", "unlink")


def run_phase(directory, names, phase):
    """One thread doing `phase` on every name; seconds taken."""
    if phase == "stat":
        h.drop_caches()
    t0 = time.perf_counter()
    for n in names:
        p = os.path.join(directory, n)
        if phase == "create":
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        elif phase == "stat":
            os.stat(p)
        else:
            os.unlink(p)
    return time.perf_counter() - t0


def perf_stat(pids, out):
    """perf stat -e task-clock on each pid, until interrupted."""
    return [subprocess.Popen(["perf", "stat", "-e", "task-clock", "-x", ",", "-p", str(pid),
                              "-o", f"{out}.{pid}"], stderr=subprocess.DEVNULL) for pid in pids]


def stop_perf(procs):
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(timeout=60)


def task_clock_ms(path):
    """The task-clock figure (ms) of a perf stat -x output file."""
    try:
        for line in Path(path).read_text().splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2].startswith("task-clock"):
                return float(f[0])
    except (OSError, ValueError):
        pass
    return None


def clean(report, limit):
    """perf report's rows without comments and trailing padding."""
    rows = [re.sub(r"[\s-]+$", "", l) for l in report.splitlines()]
    return "\n".join(r for r in rows if r and not r.startswith("#"))[:limit]


def start(workdir, wrapper=None):
    """cpfs serve (optionally through a wrapper) and one mounted file system."""
    if wrapper:
        os.environ["CPFS_BIN"] = str(wrapper)
    server = h.start_server(workdir)
    # The largest tier, as compare.sh makes: the harness's default is held
    # by QoS to 200 MB/s, which would pace large calls, not measure them.
    fs = h.create_filesystem(server, storage_type="advance_200", capacity=51200)
    mount = h.Mounter(server, workdir).mount(fs.domain)
    return server, mount


def stop(server, mount):
    mount.unmount()
    h.stop_group(server.proc, deadline_s=60)


def measure_time(binary, workdir, n, perf_data):
    os.environ["CPFS_BIN"] = str(binary)
    server, mount = start(workdir / "timed")
    rows = {}
    try:
        client = mount.daemon_pids() or ([mount.proc.pid] if mount.proc else [])
        d = mount.path / "profile"
        d.mkdir()
        names = [f"f{i:06d}" for i in range(n)]
        for phase in PHASES:
            procs = perf_stat([server.proc.pid] + client, workdir / f"stat-{phase}")
            time.sleep(0.2)
            secs = run_phase(d, names, phase)
            stop_perf(procs)
            srv = task_clock_ms(workdir / f"stat-{phase}.{server.proc.pid}")
            cli = sum(filter(None, (task_clock_ms(workdir / f"stat-{phase}.{p}") for p in client))) or None
            rows[phase] = (n / secs, srv, cli)
        # The profile: a second create loop under perf record.
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(server.proc.pid),
                                "-o", str(perf_data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run_phase(d, [f"p{i:06d}" for i in range(n)], "create")
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=120)
        # And the FUSE client's, during a third.
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", ",".join(map(str, client)),
                                "-o", f"{perf_data}.client"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run_phase(d, [f"q{i:06d}" for i in range(n)], "create")
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=120)
    finally:
        stop(server, mount)
    return rows


def counted_run(binary, workdir, n, phases):
    """Instructions `cpfs serve` executes over a whole run (start, one
    mount, `phases` on n files, stop) under callgrind."""
    out = workdir / "callgrind.out"
    wrapper = workdir / "cpfs-under-callgrind"
    # Only `cpfs serve` runs under valgrind; the nodes it starts and the
    # mount run natively (the server finds its own executable for them).
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = serve ]; then exec valgrind --tool=callgrind --dump-line=no '
        f'--callgrind-out-file={out} "{binary}" "$@"; fi\n'
        f'exec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    server, mount = start(workdir / "run", wrapper=wrapper)
    try:
        d = mount.path / "counted"
        d.mkdir()
        names = [f"f{i:06d}" for i in range(n)]
        for phase in phases:
            run_phase(d, names, phase)
    finally:
        mount.unmount()
        # SIGTERM: the server stops gracefully and callgrind writes its
        # totals at exit.
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            h.stop_group(server.proc)
        os.environ["CPFS_BIN"] = str(binary)
    m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
    h.force_rmtree(workdir / "run")
    out.unlink()
    return int(m.group(1)) if m else None


def measure_instructions(binary, workdir, n):
    """Instructions per operation of the server: the difference between
    whole runs that do one phase more than the other, divided by n (the
    background loops add a little noise with the time a phase takes)."""
    totals = []
    for k in range(len(PHASES) + 1):
        totals.append(counted_run(binary, workdir, n, PHASES[:k]))
    per_op = {}
    for i, phase in enumerate(PHASES):
        a, b = totals[i], totals[i + 1]
        per_op[phase] = (b - a) / n if a is not None and b is not None else None
    return per_op


def profile_sections(perf_data):
    """Markdown lines of a perf recording: by thread, by symbol (self
    time), and by symbol with callees (what leads to the time)."""
    def report(*args):
        return subprocess.run(["perf", "report", "-i", str(perf_data), "--stdio", "-g", "none", *args],
                              capture_output=True, text=True, timeout=600).stdout
    threads = report("--no-children", "--sort", "comm")
    profile = report("--no-children", "--percent-limit", "1.5", "--sort", "dso,symbol")
    inclusive = report("--children", "--percent-limit", "8", "--sort", "symbol")
    return ["By thread:", "", "```", clean(threads, 3000), "```", "",
            "By symbol, self time (≥ 1.5 %):", "", "```", clean(profile, 8000), "```", "",
            "By symbol, including callees (≥ 8 %): which code leads to that time", "", "```",
            clean(inclusive, 8000), "```", ""]


def fmt(v, spec):
    """`v` formatted, or "-" when it was not measured."""
    return "-" if v is None else format(v, spec)


def prerequisites():
    """The release binary to profile (CPFS_BIN or target/release/cpfs) and
    today's date (UTC) for the report's name; exits when a tool is missing."""
    binary = Path(os.environ.get("CPFS_BIN") or REPO / "target" / "release" / "cpfs").resolve()
    if not binary.is_file():
        sys.exit(f"{binary} not found: cargo build --release --bin cpfs, or set CPFS_BIN")
    for tool in ("perf", "valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    return binary, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="files per timed phase (default 2000)")
    ap.add_argument("--counted-files", type=int, default=500,
                    help="files per phase under callgrind (default 500)")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    binary, date = prerequisites()
    report = args.report or REPO / "bench" / "results" / f"{date}-meta-profile.md"
    workdir = Path(tempfile.mkdtemp(prefix="cpfs-meta-profile-"))
    perf_data = workdir / "perf.data"
    try:
        timed = measure_time(binary, workdir, args.files, perf_data)
        counted = measure_instructions(binary, workdir, args.counted_files)
        server_profile = profile_sections(perf_data)
        client_profile = profile_sections(Path(f"{perf_data}.client"))
    finally:
        h.force_rmtree(workdir)

    lines = [
        f"# Metadata operations: cost per operation ({date})",
        "",
        f"Generated by `bench/meta_profile.py` (`cpfs serve` release build, one mount, one Python thread; "
        f"{args.files} files per timed phase, {args.counted_files} under callgrind). "
        f"Machine: {os.cpu_count()} cores; load before: {os.getloadavg()[0]:.2f}.",
        "",
        "| phase | ops/s | server CPU µs/op | client CPU µs/op | server instructions/op (callgrind) |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase in PHASES:
        rate, srv, cli = timed[phase]
        n = args.files
        lines.append(f"| {phase} | {rate:.0f} | {fmt(srv and srv * 1000 / n, '.0f')} | "
                     f"{fmt(cli and cli * 1000 / n, '.0f')} | {fmt(counted.get(phase), ',.0f')} |")
    lines += ["", "CPU time is perf stat's task-clock of the process (all threads) over the phase; "
              "stat runs after dropping the kernel's dentry and inode caches.",
              "", "## Server profile during creates (perf record -e cpu-clock -g; self time)", "",
              *server_profile,
              "## FUSE client profile during creates (perf record -e cpu-clock -g; self time)", "",
              *client_profile]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    print(report)


if __name__ == "__main__":
    main()
