#!/usr/bin/env python3
"""What identity resolution costs on the metadata path: creates, stats and
unlinks per second on one CPFS mount, as root (no directory lookup) and as an
LDAP user (identity from the cache, refreshed from a real slapd every TTL),
alternated REPEAT times. A benchmark, not a test: it prints a Markdown table
and writes it to bench/results/<UTC date>-access.md.

    sudo .venv/bin/python bench/access_overhead.py      # CPFS_BIN=target/release/cpfs by default

Needs what tests/dataplane needs (root, FUSE, slapd, ldap-utils, the .venv).
"""
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "dataplane"))
os.environ.setdefault("CPFS_BIN", str(REPO / "target" / "release" / "cpfs"))

from dataplane_harness import (  # noqa: E402
    LIVE_MOUNTS, SYSTEM_PYTHON, create_filesystem, start_mount, start_server, stop_group,
)
from ldap_harness import SUFFIX, Group, User, start_slapd  # noqa: E402

FILES = int(os.environ.get("FILES", "2000"))
REPEAT = int(os.environ.get("REPEAT", "3"))
ALICE = User("alice", 2001, 2001)

LOOP = r"""
import os, sys, time, json
d = sys.argv[1]; n = int(sys.argv[2])
out = {}
t = time.perf_counter()
for i in range(n):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
out["create"] = n / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n):
    os.stat(f"{d}/f{i}")
out["stat"] = n / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n):
    os.unlink(f"{d}/f{i}")
out["unlink"] = n / (time.perf_counter() - t)
print(json.dumps(out))
"""


def run(path, uid, gid, groups):
    cmd = [SYSTEM_PYTHON, "-I", "-c", LOOP, str(path), str(FILES)]
    if uid != 0:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
               f"--groups={','.join(map(str, groups))}", "--"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/")
    import json
    return json.loads(r.stdout)


def main():
    work = Path(tempfile.mkdtemp(prefix="cpfs-access-bench-"))
    os.chmod(work, 0o755)
    ldap = start_slapd(work / "slapd", users=[ALICE], groups=[Group("alice", 2001, ["alice"])])
    srv = start_server(work / "server")
    try:
        fs = create_filesystem(srv)
        srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)
        m = start_mount(srv, fs.domain, work / "mnt")
        os.chmod(m.path, 0o755)
        dirs = {"root": m.path / "root", "ldap user": m.path / "alice"}
        for d in dirs.values():
            d.mkdir()
        os.chown(dirs["ldap user"], ALICE.uid, ALICE.gid)
        results = {k: [] for k in dirs}
        for _ in range(REPEAT):
            results["root"].append(run(dirs["root"], 0, 0, []))
            results["ldap user"].append(run(dirs["ldap user"], ALICE.uid, ALICE.gid, [ALICE.gid]))
        best = {who: {op: max(r[op] for r in rs) for op in ("create", "stat", "unlink")}
                for who, rs in results.items()}
        lines = [f"# Identity resolution on the metadata path ({datetime.datetime.utcnow():%Y-%m-%d})", "",
                 f"`bench/access_overhead.py`, {FILES} files, best of {REPEAT}, one mount, "
                 f"binary {os.environ['CPFS_BIN'].replace(str(REPO) + '/', '')}.", "",
                 "| ops/s | root | LDAP user | LDAP user / root |", "|---|---:|---:|---:|"]
        for op in ("create", "stat", "unlink"):
            r, u = best["root"][op], best["ldap user"][op]
            lines.append(f"| {op} | {r:,.0f} | {u:,.0f} | {u / r:.2f} |")
        text = "\n".join(lines) + "\n"
        print(text)
        out = REPO / "bench" / "results" / f"{datetime.datetime.utcnow():%Y-%m-%d}-access.md"
        out.write_text(text)
        print(f"wrote {out.relative_to(REPO)}")
    finally:
        for mt in list(LIVE_MOUNTS):
            mt.unmount()
        stop_group(srv.proc)
        ldap.stop()


if __name__ == "__main__":
    main()
