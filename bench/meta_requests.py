#!/usr/bin/env python3
"""How many requests common work makes of the metadata service.

Runs `cpfs serve` (the binary in CPFS_BIN, default target/release/cpfs),
mounts one file system and runs, one after the other:

- a Python loop creating N empty files in one directory, one stat-ing them
  (after dropping the kernel's caches) and one unlinking them;
- `cp -a` of TREE_SRC (default /usr/include), `ls -lR` of the copy after
  dropping the kernel's caches, `rm -rf` of it;
- streams: one file grown by 4 KiB appends (16 MiB) and one by 1 MiB
  writes (256 MiB), counted per write (the calls that record sizes and set
  capacity aside);

and reports, per phase, the operations the metadata server counted
(`cpfs_meta_operations_total` from `/metrics`, by kind) and their number
per file or entry. Round trips are what a namespace operation costs over
FUSE, so this is the figure to compare before and after a change to the
client or the protocol; it does not depend on machine noise.

    cargo build --release --bin cpfs
    CPFS_BIN=target/release/cpfs .venv/bin/python bench/meta_requests.py [--files N]

Needs root (FUSE, drop_caches). Writes
bench/results/<UTC date>-meta-requests.md (or --report PATH).
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
import dataplane_harness as h  # noqa: E402  (the harness the FUSE tests use)
from test_metrics import samples, scrape, token  # noqa: E402

# Kinds whose counts are bookkeeping of the mount itself, not of the work.
BACKGROUND = {"watch", "chain_table", "renew", "statfs"}


def op_counts(server):
    text = scrape(server, token(server, "metrics-token"))
    return {l.get("op"): v for n, l, v in samples(text) if n == "cpfs_meta_operations_total"}


def settled(server):
    """Counts once they stand still (they reach /metrics with the metadata
    server's heartbeats, every half second)."""
    last = op_counts(server)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.7)
        now = op_counts(server)
        if now == last:
            return now
        last = now
    return last


def phase(server, fn):
    before = settled(server)
    t0 = time.perf_counter()
    fn()
    took = time.perf_counter() - t0
    after = settled(server)
    moved = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
    return {k: v for k, v in moved.items() if v > 0 and k not in BACKGROUND}, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000, help="files of the Python loops (default 1000)")
    ap.add_argument("--tree", default=os.environ.get("TREE_SRC", "/usr/include"),
                    help="the tree cp -a copies (default /usr/include)")
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    binary = Path(os.environ.get("CPFS_BIN") or REPO / "target" / "release" / "cpfs").resolve()
    if not binary.is_file():
        sys.exit(f"{binary} not found: cargo build --release --bin cpfs, or set CPFS_BIN")
    os.environ["CPFS_BIN"] = str(binary)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    report = args.report or REPO / "bench" / "results" / f"{date}-meta-requests.md"
    entries = sum(len(fs) + len(ds) for _, ds, fs in os.walk(args.tree))

    work = Path(tempfile.mkdtemp(prefix="cpfs-meta-requests-"))
    server = h.start_server(work)
    rows = []
    try:
        fs = h.create_filesystem(server)
        mount = h.Mounter(server, work).mount(fs.domain)
        try:
            d = mount.path / "loop"
            d.mkdir()
            names = [str(d / f"f{i:06d}") for i in range(args.files)]
            create = lambda: [os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                              for p in names]

            def stat():
                h.drop_caches()
                for p in names:
                    os.stat(p)
            unlink = lambda: [os.unlink(p) for p in names]
            tree = mount.path / "tree"

            def shell(cmd):
                return lambda: subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)

            def ls():
                h.drop_caches()
                shell(f"ls -lR {tree}")()

            def stream(name, piece, count):
                def run():
                    buf = os.urandom(piece)
                    with open(mount.path / name, "ab", buffering=0) as f:
                        for _ in range(count):
                            f.write(buf)
                return run
            for name, fn, per in [("create (Python loop)", create, args.files),
                                  ("stat, cold (Python loop)", stat, args.files),
                                  ("unlink (Python loop)", unlink, args.files),
                                  (f"cp -a {args.tree}", shell(f"cp -a {args.tree} {tree}"), entries),
                                  ("ls -lR, cold", ls, entries),
                                  ("rm -rf", shell(f"rm -rf {tree}"), entries),
                                  ("4 KiB appends, per write", stream("appends", 4096, 4096), 4096),
                                  ("1 MiB writes, per write", stream("stream", 1 << 20, 256), 256)]:
                moved, took = phase(server, fn)
                rows.append((name, per, moved, took))
        finally:
            mount.unmount()
    finally:
        h.stop_group(server.proc, deadline_s=60)
        h.force_rmtree(work)

    lines = [f"# Requests to the metadata service per operation ({date})", "",
             f"Generated by `bench/meta_requests.py` (`{binary.name}`, one mount; {args.files} files in the "
             f"Python loops; `{args.tree}`: {entries} entries). Counts are the metadata server's "
             "`cpfs_meta_operations_total` over each phase (watch, chain-table, renewal and statfs "
             "requests left out); seconds are wall time on this machine, for orientation only.", "",
             "| phase | per | requests | per file or entry | by kind | seconds |",
             "|---|---:|---:|---:|---|---:|"]
    for name, per, moved, took in rows:
        total = sum(moved.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(moved.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {per} | {total} | {total / per:.2f} | {kinds} | {took:.2f} |")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print(report)


if __name__ == "__main__":
    main()
