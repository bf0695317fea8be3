#!/usr/bin/env python3
"""Checks the shape the architecture promises (docs/architecture.md):

- the crate graph: the control plane and the API never link the node or
  the client, the metadata service never links the control plane, and the
  protocol crate links none of ours;
- only the metadata service's crate writes the namespace tables;
- no source file over 800 lines outside tests.

Run from anywhere: python3 scripts/check_structure.py. Exits 1 on a breach.
"""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "cpfs-controlplane": {"cpfs-node", "cpfs-client", "cpfs-api", "cpfs-billing"},
    "cpfs-api": {"cpfs-node", "cpfs-client", "cpfs-meta"},
    "cpfs-meta": {"cpfs-controlplane", "cpfs-api", "cpfs-billing", "cpfs-node"},
    "cpfs-node": {"cpfs-controlplane", "cpfs-api", "cpfs-meta", "cpfs-client", "cpfs-store"},
    "cpfs-client": {"cpfs-controlplane", "cpfs-api", "cpfs-meta", "cpfs-node", "cpfs-store"},
    "cpfs-proto": None,  # none of ours at all
    "cpfs-store": None,
    "cpfs-directory": None,
}
NAMESPACE_TABLES = ["inodes", "dentries", "xattrs", "orphans", "fs_counters", "fs_layouts", "meta_requests"]
MAX_LINES = 800


def crate_graph():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    ours = {p["name"]: p for p in json.loads(out)["packages"]}
    return {
        name: {d["name"] for d in p["dependencies"] if d["name"] in ours}
        for name, p in ours.items()
    }


def main():
    problems = []
    graph = crate_graph()
    for crate, banned in FORBIDDEN.items():
        deps = graph.get(crate, set())
        bad = deps if banned is None else deps & banned
        for d in sorted(bad):
            problems.append(f"{crate} depends on {d}")

    write = re.compile(
        r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(" + "|".join(NAMESPACE_TABLES) + r")\b",
        re.IGNORECASE,
    )
    for path in ROOT.rglob("*.rs"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("target", "meta") or "tests" in rel.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if write.search(line):
                problems.append(f"{rel}:{n} writes a namespace table outside cpfs-meta")

    for path in ROOT.rglob("*.rs"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "target" or "tests" in rel.parts or rel.name.endswith("tests.rs"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{rel} has {lines} lines (over {MAX_LINES})")

    for p in problems:
        print(f"structure: {p}")
    if problems:
        sys.exit(1)
    print(f"structure: ok ({len(graph)} crates)")


if __name__ == "__main__":
    main()
