#!/usr/bin/env python3
"""What fileset quota accounting costs on the metadata path.

Runs `cpfs serve` (release build), makes two file systems and mounts both:
one without filesets (the baseline: no accounting at all) and one whose
directory `/q/` is a fileset with a size and a file-count limit (every
create, unlink and growing write inside it is counted and checked). In
rounds that alternate between the two (the machine is noisy; alternating
spreads the noise over both), one thread:

- creates N empty files, then unlinks them (ops/s of each);
- appends 4 KiB at a time to a new file, W times (each write grows the
  file, so each is checked against the quota before its data moves).

It reports the median of each figure over the rounds, the server's CPU
time per operation (from /proc: utime + stime), and the ratio
fileset / baseline. Aim (issue 15): under 5 % slower.

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/fileset_cost.py [--files N] [--writes W] [--rounds R]

Needs root (FUSE). Writes bench/results/<UTC date>-fileset-cost.md (or
--report PATH).
"""

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
import dataplane_harness as h  # noqa: E402  (the harness the FUSE tests use)

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def timed(server, fn, n):
    """(ops/s, server CPU µs per op) of fn() doing n operations."""
    c0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), cpu_seconds(server.proc.pid)
    return n / (t1 - t0), (c1 - c0) * 1e6 / n


def create_unlink(server, d, n, tag):
    names = [os.path.join(d, f"{tag}-{i}") for i in range(n)]

    def create():
        for p in names:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def unlink():
        for p in names:
            os.unlink(p)
    return timed(server, create, n), timed(server, unlink, n)


def appends(server, d, w, tag):
    path = os.path.join(d, f"{tag}-appends")
    block = os.urandom(4096)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def write():
        for _ in range(w):
            os.write(fd, block)
    try:
        return timed(server, write, w)
    finally:
        os.close(fd)
        os.unlink(path)


def counted(binary, work, n, with_fileset):
    """Instructions `cpfs serve` executes per create + unlink + 4 KiB
    append in the metadata service's request handling and its journal's
    commits (callgrind, collecting only inside `handle_as` and
    `write_now`, with instrumentation on only around the operations): the
    background loops, which run for as long as the operations take, are
    left out, so the figure is stable under machine noise."""
    out = work / f"callgrind-{with_fileset}.out"
    wrapper = work / "cpfs-under-callgrind"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = serve ]; then exec valgrind --tool=callgrind --instr-atstart=no '
        f"--collect-atstart=no --toggle-collect='*handle_as*' --toggle-collect='*write_now*' "
        f'--dump-line=no --callgrind-out-file={out} "{binary}" "$@"; fi\n'
        f'exec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    os.environ["CPFS_BIN"] = str(wrapper)
    server = h.start_server(work / f"counted-{with_fileset}")
    os.environ["CPFS_BIN"] = str(binary)
    m = None
    try:
        fs = h.create_filesystem(server)
        if with_fileset:
            fset = server.api("CreateFileset", FileSystemId=fs.fs_id, FileSystemPath="/q/",
                              Quota={"SizeLimit": 1000 << 30, "FileCountLimit": 10_000_000})["FsetId"]

            def bound():
                body = server.api("DescribeFilesets", FileSystemId=fs.fs_id)
                return body["Entries"]["Entrie"][0]["Status"] == "CREATED"
            h.wait_until(f"{fset} CREATED", bound, 120)
        (work / f"cmnt-{with_fileset}").mkdir()
        m = h.Mounter(server, work / f"cmnt-{with_fileset}")
        mnt = m.mount(fs.domain, name="m")
        d = mnt.path / "q"
        if not with_fileset:
            d.mkdir()
        subprocess.run(["callgrind_control", "-i", "on", str(server.proc.pid)],
                       check=True, capture_output=True)
        create_unlink(server, str(d), n, "c")
        appends(server, str(d), n, "c")
        subprocess.run(["callgrind_control", "-i", "off", str(server.proc.pid)],
                       check=True, capture_output=True)
    finally:
        if m:
            m.cleanup()
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            h.stop_group(server.proc)
    found = re.search(r"^totals:\s+(\d+)", out.read_text(errors="replace"), re.M)
    return int(found.group(1)) / n if found else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="files created and unlinked per round")
    ap.add_argument("--writes", type=int, default=2000, help="4 KiB appends per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--counted", type=int, default=300,
                    help="operations of each kind under callgrind (0: skip the count)")
    ap.add_argument("--a-a", action="store_true",
                    help="no fileset on the second file system either: the noise floor of the comparison")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (FUSE)")
    binary = h.require_binary()
    work = Path(tempfile.mkdtemp(prefix="cpfs-fileset-cost-"))
    os.chmod(work, 0o755)
    server = h.start_server(work / "server")
    mounts = []
    try:
        plain_fs = h.create_filesystem(server)
        quota_fs = h.create_filesystem(server)
        fset = None
        if not args.a_a:
            fset = server.api("CreateFileset", FileSystemId=quota_fs.fs_id, FileSystemPath="/q/",
                              Quota={"SizeLimit": 1000 << 30, "FileCountLimit": 10_000_000})["FsetId"]
        (work / "mnt").mkdir()
        m = h.Mounter(server, work / "mnt")
        plain = m.mount(plain_fs.domain, name="plain")
        quota = m.mount(quota_fs.domain, name="quota")
        mounts.append(m)

        def bound():
            body = server.api("DescribeFilesets", FileSystemId=quota_fs.fs_id)
            return body["Entries"]["Entrie"][0]["Status"] == "CREATED"
        dirs = {"baseline": str(plain.path / "p"), "fileset": str(quota.path / "q")}
        os.mkdir(dirs["baseline"])
        if fset:
            h.wait_until(f"{fset} CREATED", bound, 20)
        else:
            os.mkdir(dirs["fileset"])
        results = {k: {"create": [], "unlink": [], "append": []} for k in dirs}
        for r in range(args.rounds):
            order = list(dirs) if r % 2 == 0 else list(reversed(dirs))
            for kind in order:
                c, u = create_unlink(server, dirs[kind], args.files, f"r{r}")
                results[kind]["create"].append(c)
                results[kind]["unlink"].append(u)
                results[kind]["append"].append(appends(server, dirs[kind], args.writes, f"r{r}"))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        def settled():
            shown = server.api("DescribeFilesets", FileSystemId=quota_fs.fs_id)["Entries"]["Entrie"]
            return (shown or [{}])[0]
        usage = settled()
        if fset:
            # Published within a quarter of a second of the last change.
            h.wait_until("the fileset's usage back to 0",
                         lambda: settled().get("FileCountUsage") == 0 and settled().get("SpaceUsage") == 0, 10)
            usage = settled()
    finally:
        for m in mounts:
            m.cleanup()
        h.stop_group(server.proc, deadline_s=60)

    counts = {}
    if args.counted:
        for with_fileset in (False, True):
            counts[with_fileset] = counted(binary, work, args.counted, with_fileset)

    def med(kind, phase, i):
        return statistics.median(x[i] for x in results[kind][phase])
    when = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# Fileset quota accounting: cost on the metadata path ({when:%Y-%m-%d})",
        "",
        f"`CPFS_BIN={binary} .venv/bin/python bench/fileset_cost.py --files {args.files} "
        f"--writes {args.writes} --rounds {args.rounds}`: one `cpfs serve` (release, 3 embedded "
        "nodes, SQLite), two file systems mounted side by side, one thread. Baseline: a "
        "file system with no fileset. Fileset: inside `/q/`, a fileset with SizeLimit 1000 GiB "
        "and FileCountLimit 10^7, so every create, unlink and growing write is counted and "
        f"checked. Medians of {args.rounds} rounds, alternating which goes first.",
        "",
        "| operation | baseline ops/s | fileset ops/s | fileset / baseline | baseline server CPU µs/op | fileset server CPU µs/op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for phase, label in (("create", "create empty file"), ("unlink", "unlink"),
                         ("append", "4 KiB append (grows the file)")):
        b, f = med("baseline", phase, 0), med("fileset", phase, 0)
        lines.append(f"| {label} | {b:,.0f} | {f:,.0f} | {f / b:.3f} | "
                     f"{med('baseline', phase, 1):.0f} | {med('fileset', phase, 1):.0f} |")
    if counts:
        b, f = counts[False], counts[True]
        lines += [
            "",
            f"Metadata service instructions (callgrind: request handling and journal commits only) per "
            f"create + unlink + 4 KiB append, {args.counted} of each: baseline {b:,.0f}, fileset "
            f"{f:,.0f}, ratio {f / b:.3f}.",
        ]
    lines += [
        "",
        f"After the run the fileset shows SpaceUsage {usage.get('SpaceUsage')} and FileCountUsage "
        f"{usage.get('FileCountUsage')} (everything made was removed again: both must be 0)."
        + (" A/A run: no fileset anywhere." if args.a_a else ""),
        "",
        "Every round's figures (ops/s, server CPU µs/op):",
        "",
    ]
    for kind in results:
        for phase in ("create", "unlink", "append"):
            vals = ", ".join(f"{o:,.0f} ({c:.0f})" for o, c in results[kind][phase])
            lines.append(f"- {kind} {phase}: {vals}")
    h.force_rmtree(work)
    text = "\n".join(lines) + "\n"
    out = args.report or REPO / "bench" / "results" / f"{when:%Y-%m-%d}-fileset-cost.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
