#!/usr/bin/env python3
"""Checks the shape the architecture promises (docs/architecture.md):

- the crate graph: the control plane and the API never link the node or
  the client, the metadata service never links the control plane, and the
  protocol crate links none of ours;
- only the metadata service's crate writes the namespace tables;
- no source file over 800 lines outside tests;
- no cycle between the top-level modules of a crate (`crate::a` naming
  `crate::b` and `crate::b` naming `crate::a`, directly or around a loop;
  test code is left out).

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
    "cpfs-console": None,
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


def module_of(src: pathlib.Path, path: pathlib.Path):
    """The top-level module a file belongs to, or None for the crate root."""
    rel = path.relative_to(src)
    if len(rel.parts) == 1:
        return None if rel.name in ("lib.rs", "main.rs") else rel.stem
    return rel.parts[0]


def non_test_text(path: pathlib.Path) -> str:
    """The file up to its first `#[cfg(test)]` (test modules sit last),
    without comments (doc links name modules without depending on them)."""
    text = path.read_text().split("#[cfg(test)]", 1)[0]
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def module_cycles():
    """Cycles among each crate's top-level modules, as readable strings."""
    found = []
    for src in sorted(ROOT.glob("*/src")) + [ROOT / "src"]:
        if src.parts[-2] == "target" or not src.is_dir():
            continue
        modules = {}
        for path in src.rglob("*.rs"):
            if path.name.endswith("tests.rs"):
                continue
            m = module_of(src, path)
            if m is not None:
                modules.setdefault(m, []).append(path)
        edges = {m: set() for m in modules}
        for m, paths in modules.items():
            for path in paths:
                text = non_test_text(path)
                # `crate::x` and `crate::{x, y::z}` both name their modules.
                for target in re.findall(r"\bcrate::(\w+)", text):
                    if target in modules and target != m:
                        edges[m].add(target)
                for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
                    for target in re.findall(r"(?:^|,)\s*(\w+)", group):
                        if target in modules and target != m:
                            edges[m].add(target)
        for cycle in strongly_connected(edges):
            if len(cycle) > 1:
                found.append(f"{src.parent.name}: modules {' <-> '.join(sorted(cycle))} form a cycle")
    return found


def strongly_connected(edges):
    """Tarjan's algorithm, iterative enough for a crate's few modules."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in edges:
        if v not in index:
            visit(v)
    return out


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

    problems.extend(module_cycles())

    for p in problems:
        print(f"structure: {p}")
    if problems:
        sys.exit(1)
    print(f"structure: ok ({len(graph)} crates)")


if __name__ == "__main__":
    main()
