#!/usr/bin/env python3
"""Noisy neighbour: how much one file system's sequential writes push up
another's read latency on the same nodes, with and without QoS.

Runs `cpfs serve` (release build, its three embedded nodes) and three file
systems on them, each mounted:

- the victim (advance_200, 2,048 GiB): fio 4 KiB random reads, one job at
  queue depth 1, direct I/O, whose completion latency p50/p99 is measured;
- a neighbour held by QoS (standard, 2,048 GiB: 125 MB/s);
- a neighbour QoS does not hold here (advance_200, 51,200 GiB: 10,000 MB/s,
  far above what this machine can write), standing for "without QoS".

Three runs of the victim's reads: alone, beside the unheld neighbour
writing with four jobs of 1 MiB, beside the held neighbour doing the same.
Reports the victim's latencies and the neighbours' throughput as a
markdown table; ratios against the alone run are the figures to compare
(absolute times depend on the machine).

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/qos_noisy.py [--seconds 15]

Needs root (FUSE) and fio. Writes bench/results/<UTC date>-qos-noisy.md
(or --report PATH).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
import dataplane_harness as h  # noqa: E402  (the harness the FUSE tests use)


def fio_args(directory, name, extra, seconds):
    return ["fio", f"--name={name}", f"--directory={directory}", "--ioengine=psync", "--direct=1",
            "--time_based", f"--runtime={seconds}", "--ramp_time=2", "--group_reporting",
            "--output-format=json", *extra]


def parse(out):
    return json.loads(out[out.index("{"):])["jobs"][0]


def lay_out(directory, name, size, jobs):
    subprocess.run(["fio", f"--name={name}", f"--directory={directory}", "--rw=write", "--bs=1M",
                    f"--size={size}", f"--numjobs={jobs}", "--ioengine=psync", "--direct=1",
                    "--output-format=json"], check=True, capture_output=True, timeout=600)


def victim_reads(directory, seconds, neighbour=None):
    """The victim's read latencies (µs p50, p99) and IOPS; with a
    neighbour (directory) writing meanwhile, its MB/s too."""
    noise = None
    if neighbour is not None:
        noise = subprocess.Popen(
            fio_args(neighbour, "noise", ["--rw=write", "--bs=1M", "--size=256M", "--numjobs=4"],
                     seconds + 4),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(fio_args(directory, "victim", ["--rw=randread", "--bs=4k", "--size=64M",
                                                      "--numjobs=1"], seconds),
                       capture_output=True, text=True, timeout=seconds + 120, check=True)
    job = parse(r.stdout)["read"]
    pct = job["clat_ns"]["percentile"]
    row = {"p50": pct["50.000000"] / 1000, "p99": pct["99.000000"] / 1000, "iops": job["iops"]}
    if noise is not None:
        out, err = noise.communicate(timeout=seconds + 120)
        assert noise.returncode == 0, err[-2000:]
        row["noise_mbs"] = parse(out)["write"]["bw_bytes"] / 1e6
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=15, help="length of each measured run")
    ap.add_argument("--report", type=Path, help="where to write the report")
    args = ap.parse_args()
    if shutil.which("fio") is None:
        sys.exit("fio is not installed")
    binary = h.cpfs_binary().resolve()
    # The server runs from its work directory.
    os.environ["CPFS_BIN"] = str(binary)
    work = Path(tempfile.mkdtemp(prefix="cpfs-qos-"))
    server = h.start_server(work)
    mounter = h.Mounter(server, work)
    try:
        victim = h.create_filesystem(server, storage_type="advance_200")
        held = h.create_filesystem(server, storage_type="standard")
        free = h.create_filesystem(server, storage_type="advance_200", capacity=51200)
        dirs = {name: mounter.mount(fs.domain).path for name, fs in
                (("victim", victim), ("held", held), ("free", free))}
        lay_out(dirs["victim"], "victim", "64M", 1)
        for name in ("held", "free"):
            lay_out(dirs[name], "noise", "256M", 4)
        rows = [
            ("alone", victim_reads(dirs["victim"], args.seconds)),
            ("beside writes QoS does not hold (10,000 MB/s tier)",
             victim_reads(dirs["victim"], args.seconds, dirs["free"])),
            ("beside writes QoS holds (125 MB/s tier)",
             victim_reads(dirs["victim"], args.seconds, dirs["held"])),
        ]
    finally:
        mounter.cleanup()
        h.stop_group(server.proc, deadline_s=60)
        shutil.rmtree(work, ignore_errors=True)

    alone = rows[0][1]
    lines = [
        f"# Noisy neighbour with and without QoS ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d})",
        "",
        f"Command: `CPFS_BIN={os.path.relpath(binary, REPO)} .venv/bin/python bench/qos_noisy.py "
        f"--seconds {args.seconds}` (2 cores; `cpfs serve` with its three embedded nodes, R = 2).",
        "The victim reads 4 KiB at random, one job at queue depth 1, direct I/O; the neighbour",
        "writes 1 MiB blocks with four jobs on the same nodes.",
        "",
        "| victim's reads | p50 µs | p99 µs | IOPS | p50 / alone | p99 / alone | neighbour MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['p50']:.0f} | {r['p99']:.0f} | {r['iops']:.0f} | "
                     f"{r['p50'] / alone['p50']:.2f} | {r['p99'] / alone['p99']:.2f} | "
                     f"{r.get('noise_mbs', 0):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    report = args.report or REPO / "bench" / "results" / \
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-qos-noisy.md"
    report.write_text(text)
    print(f"wrote {report}", file=sys.stderr)


if __name__ == "__main__":
    main()
