#!/usr/bin/env python3
"""What a namespace operation costs, variants side by side.

Runs `cpfs serve` (its default store, SQLite, or the PostgreSQL of
CPFS_TEST_DATABASE_URL as the test suites do) once per variant and round,
alternating, mounts a new file system and times a one-thread loop of
creates, then of unlinks: ops/s, the server's CPU per operation (all its
threads, from /proc), PostgreSQL's CPU per operation (every process named
postgres, so its background work is in it too) when the store is
PostgreSQL, and the median and 99th percentile of one operation's latency.

A variant is one of:

    BIN                 a cpfs binary
    BIN:MS              the same with the journal's fold delay set
                        (CPFS_META_FOLD_DELAY_MS=MS)
    BIN:NAME=VALUE,...  the same with these variables in the environment of
                        `cpfs serve` and the mount (for throw-away builds
                        that measure what a part of the path costs)
    bindfs:DIR          the same loop on a bindfs passthrough of a new
                        directory under DIR: the FUSE ceiling of this machine

    cargo build --release --bin cpfs
    .venv/bin/python bench/journal_cost.py BASE_BIN NEW_BIN NEW_BIN:2 bindfs:/var/tmp \\
        [--rounds 2] [--files 4000]

Writes bench/results/<UTC date>-journal-cost.md (or --report PATH).
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))

HZ = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def postgres_cpu_s():
    """CPU seconds used so far by every process named postgres."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_s(pid)
        except OSError:
            pass
    return total


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def loop(directory, files, server_pid, on_postgres):
    """Creates, then unlinks, `files` names in `directory`, one at a time;
    per phase: (ops/s, server µs/op, postgres µs/op, p50, p99 and p99.9
    µs), the CPU figures None where not measured."""
    names = [str(directory / f"f{i:06d}") for i in range(files)]
    out = {}
    for phase in ("create", "unlink"):
        took = []
        c0 = cpu_s(server_pid) if server_pid else None
        p0 = postgres_cpu_s() if on_postgres else None
        t0 = time.monotonic()
        for p in names:
            a = time.perf_counter()
            if phase == "create":
                os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            else:
                os.unlink(p)
            took.append(time.perf_counter() - a)
        t1 = time.monotonic()
        server = 1e6 * (cpu_s(server_pid) - c0) / files if server_pid else None
        pg = 1e6 * (postgres_cpu_s() - p0) / files if on_postgres else None
        out[phase] = (files / (t1 - t0), server, pg,
                      1e6 * percentile(took, 0.5), 1e6 * percentile(took, 0.99),
                      1e6 * percentile(took, 0.999))
    return out


def run_cpfs(h, binary, env, files):
    os.environ["CPFS_BIN"] = str(binary)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="cpfs-journal-cost-"))
    try:
        server = h.start_server(work)
        try:
            fs = h.create_filesystem(server)
            mount = h.Mounter(server, work).mount(fs.domain)
            try:
                d = mount.path / "loop"
                d.mkdir()
                on_postgres = bool(os.environ.get("CPFS_TEST_DATABASE_URL"))
                return loop(d, files, server.proc.pid, on_postgres)
            finally:
                mount.unmount()
        finally:
            h.stop_group(server.proc, deadline_s=60)
            h.force_rmtree(work)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_bindfs(backing, files):
    src = Path(tempfile.mkdtemp(prefix="bindfs-src-", dir=backing))
    mnt = Path(tempfile.mkdtemp(prefix="bindfs-mnt-"))
    try:
        subprocess.run(["bindfs", str(src), str(mnt)], check=True)
        try:
            d = mnt / "loop"
            d.mkdir()
            return loop(d, files, None, False)
        finally:
            subprocess.run(["fusermount", "-u", str(mnt)], check=False)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(mnt, ignore_errors=True)


def parse_variant(v):
    """(kind, binary or backing directory, environment) of a variant."""
    head, _, rest = v.partition(":")
    if head == "bindfs":
        if not rest:
            sys.exit("bindfs:DIR needs the directory to put the passthrough's source in")
        if not shutil.which("bindfs"):
            sys.exit("bindfs not found (apt-get install bindfs)")
        return "bindfs", Path(rest), {}
    binary = Path(head)
    if not binary.exists():
        sys.exit(f"{binary} not found: cargo build --release --bin cpfs")
    if not rest:
        return "cpfs", binary, {}
    if rest.isdigit():
        return "cpfs", binary, {"CPFS_META_FOLD_DELAY_MS": rest}
    env = {}
    for item in rest.split(","):
        name, eq, value = item.partition("=")
        if not eq or not name:
            sys.exit(f"{v}: expected BIN, BIN:MS or BIN:NAME=VALUE,...")
        env[name] = value
    return "cpfs", binary, env


def fmt(v):
    return "-" if v is None else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="BIN, BIN:FOLD_DELAY_MS, BIN:NAME=VALUE,... or bindfs:DIR")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    import dataplane_harness as h
    variants = [(v, *parse_variant(v)) for v in args.variants]
    on_postgres = bool(os.environ.get("CPFS_TEST_DATABASE_URL"))
    rows = []
    for r in range(args.rounds):
        for name, kind, where, env in variants:
            res = run_bindfs(where, args.files) if kind == "bindfs" else run_cpfs(h, where, env, args.files)
            for phase, (rate, cpu, pg, p50, p99, p999) in res.items():
                rows.append((r + 1, name, phase, rate, cpu, pg, p50, p99, p999))
                print(f"round {r + 1} {name} {phase}: {rate:,.0f}/s, server {fmt(cpu)} µs/op, "
                      f"postgres {fmt(pg)} µs/op, p50 {p50:.0f} µs, p99 {p99:.0f} µs, "
                      f"p99.9 {p999:.0f} µs", flush=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    store = "PostgreSQL" if on_postgres else "SQLite"
    lines = [
        f"# Namespace operation cost ({now:%Y-%m-%d %H:%M} UTC)", "",
        f"Generated by `bench/journal_cost.py` ({store} store, {args.files} files, one Python thread, "
        f"variants alternating, {args.rounds} rounds). Machine: {os.cpu_count()} cores.", "",
        "| round | variant | phase | ops/s | server CPU µs/op | postgres CPU µs/op | p50 µs | p99 µs | p99.9 µs |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r, name, phase, rate, cpu, pg, p50, p99, p999 in rows:
        lines.append(f"| {r} | `{name}` | {phase} | {rate:,.0f} | {fmt(cpu)} | {fmt(pg)} | "
                     f"{p50:.0f} | {p99:.0f} | {p999:.0f} |")
    report = args.report or REPO / "bench" / "results" / f"{now:%Y-%m-%d}-journal-cost.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
