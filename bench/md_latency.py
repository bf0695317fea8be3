#!/usr/bin/env python3
"""The latency of each create and unlink in a one-thread loop, not just
their rate: how much of the loop's time goes to its slowest operations,
and when they happen (a stall every N operations points at periodic work
inside the request path, such as a checkpoint).

    python3 bench/md_latency.py DIR [--files N] [--slow-us US]

DIR is any mounted directory (a CPFS mount, MooseFS, a local directory);
the script works in a subdirectory it creates and removes. It prints, per
phase, the rate, mean, p50/p90/p99/max in µs, the share of the phase's
time spent in operations slower than twice the median, and the index and
latency of each operation slower than --slow-us (default 1000).
"""

import argparse
import os
import statistics
import sys
import time


def create(path):
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def run(phase, op, paths, slow_us):
    lat = []
    t0 = time.perf_counter()
    for p in paths:
        a = time.perf_counter()
        op(p)
        lat.append(time.perf_counter() - a)
    total = time.perf_counter() - t0
    s = sorted(lat)
    n = len(s)
    p50 = statistics.median(s)
    slow = [x for x in lat if x > 2 * p50]
    us = lambda x: f"{x * 1e6:.0f}"  # noqa: E731
    print(f"{phase}: {n / total:.0f} ops/s, mean {us(total / n)} µs, p50 {us(p50)}, "
          f"p90 {us(s[n * 9 // 10])}, p99 {us(s[n * 99 // 100])}, max {us(s[-1])}")
    print(f"  {len(slow)} ops slower than 2 x p50 took {sum(slow) / total * 100:.0f} % of the time")
    marks = [f"{i}:{us(x)}" for i, x in enumerate(lat) if x * 1e6 > slow_us]
    print(f"  ops over {slow_us} µs (index:µs): {' '.join(marks) or 'none'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--slow-us", type=int, default=1000)
    args = ap.parse_args()
    if not os.path.isdir(args.dir):
        sys.exit(f"{args.dir}: not a directory")
    work = os.path.join(args.dir, f"md-latency-{os.getpid()}")
    os.mkdir(work)
    paths = [os.path.join(work, f"f{i:07d}") for i in range(args.files)]
    try:
        run("create", create, paths, args.slow_us)
        run("unlink", os.unlink, paths, args.slow_us)
    finally:
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        os.rmdir(work)


if __name__ == "__main__":
    main()
