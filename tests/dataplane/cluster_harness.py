"""A cluster whose data nodes the test owns: `cpfs serve --nodes 0` plus
`cpfs node` processes started, killed (-9) and restarted by the test.

Used by test_availability.py (failover, resync, scrub, scale-out, drain).
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dataplane_harness as h

SETTLE_S = 180.0


@dataclass
class DataNode:
    index: int
    data_dir: Path
    proc: subprocess.Popen = None

    @property
    def node_id(self):
        return (self.data_dir / "node-id").read_text().strip()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, workdir, node_env=None, server_args=()):
        self.workdir = Path(workdir)
        self.server = h.start_server(self.workdir, extra_args=["--nodes", "0", *server_args])
        self.token = (self.server.data_dir / "cluster-token").read_text().strip()
        self.node_env = dict(node_env or {})
        self.nodes = []

    # -- nodes -------------------------------------------------------------
    def add_node(self):
        node = DataNode(len(self.nodes) + 1, self.workdir / f"node{len(self.nodes) + 1}")
        self.nodes.append(node)
        self.start(node)
        h.wait_until(f"node {node.index} registered", lambda: node.data_dir.joinpath("node-id").exists()
                     and any(n["Id"] == node.node_id and n["SecondsSinceHeartbeat"] < 2
                             for n in self.node_list()), 60, interval_s=0.2,
                     on_timeout=lambda: self.node_log(node))
        return node

    def start(self, node):
        env = dict(os.environ)
        env.update(self.node_env)
        env["CPFS_CLUSTER_TOKEN"] = self.token
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")
        log = open(self.workdir / f"node{node.index}.log", "ab")
        node.proc = subprocess.Popen(
            [str(h.require_binary()), "node", "--data-dir", str(node.data_dir),
             "--listen", "127.0.0.1:0", "--controlplane", self.server.url],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()

    def kill(self, node):
        """kill -9, and wait until the process is gone."""
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)

    def node_log(self, node, lines=40):
        return h.tail_text(self.workdir / f"node{node.index}.log", lines)

    def stop(self):
        for n in self.nodes:
            if n.alive():
                h.stop_group(n.proc)
        h.stop_group(self.server.proc)
        if self.server in h.LIVE_SERVERS:
            h.LIVE_SERVERS.remove(self.server)

    # -- the registry and chain table (through the CLI) --------------------
    def cli(self, *args, timeout=120):
        # The server's data directory holds its API address and admin token.
        cmd = [str(h.require_binary()), "node", *args, "--data-dir", str(self.server.data_dir)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}"
        return r

    def node_list(self):
        return json.loads(self.cli("list").stdout)

    def status(self):
        return json.loads(self.cli("status").stdout)

    def wait_settled(self, without=(), what="every chain back to R serving members"):
        """Until every chain has R serving members, nothing syncs, and no chain
        names a node of `without`."""
        ids = {n.node_id for n in without}
        last = {}

        def settled():
            st = self.status()
            last["st"] = {k: st[k] for k in ("ChainTableVersion", "DegradedChains", "Syncing")}
            held = {m["id"] for c in st["Table"]["chains"] for m in c["members"]}
            return st["Settled"] and not (held & ids)
        h.wait_until(what, settled, SETTLE_S, interval_s=0.5,
                     on_timeout=lambda: f"last status: {last.get('st')}\n{self.server.stderr_tail(30)}")
        return self.status()

    def wait_table_stable(self, quiet_s=3.0):
        """Until the chain table has stayed the same, settled, for `quiet_s`
        seconds: nodes report their bytes with each heartbeat and the planner
        then moves chains toward even bytes, after the table first settled."""
        seen = {"version": None, "since": time.monotonic()}

        def stable():
            st = self.status()
            if st["ChainTableVersion"] != seen["version"] or not st["Settled"]:
                seen["version"], seen["since"] = st["ChainTableVersion"], time.monotonic()
                return False
            return time.monotonic() - seen["since"] >= quiet_s
        h.wait_until("the chain table to stay unchanged", stable, SETTLE_S, interval_s=0.25)

    # -- what is on the nodes' disks -----------------------------------------
    def chunk_files(self, node):
        """{relative path under chunks/: sha256} of a node's chunk files."""
        out = {}
        root = node.data_dir / "chunks"
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if ".c" not in name:
                    continue
                p = Path(dirpath) / name
                try:
                    out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
                except FileNotFoundError:
                    continue
        return out

    def stored_bytes(self, node):
        root = node.data_dir / "chunks"
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def replica_problems(self, live_nodes):
        """Differences between the disks and the chain table: every chunk must
        be on exactly its chain's serving members, byte for byte the same."""
        table = self.status()["Table"]
        members = {c["id"]: {m["id"] for m in c["members"]} for c in table["chains"]}
        by_path = {}
        for node in live_nodes:
            for rel, digest in self.chunk_files(node).items():
                by_path.setdefault(rel, {})[node.node_id] = digest
        problems = []
        for rel, holders in sorted(by_path.items()):
            suffix = rel.rsplit(".c", 1)[1]
            if not suffix.isdigit():
                # `<index>.c<chain>.resync`: a copy still on its way.
                problems.append(f"{rel}: a copy in progress on {sorted(holders)}")
                continue
            chain = int(suffix)
            want = members.get(chain, set()) & {n.node_id for n in live_nodes}
            if set(holders) != want:
                problems.append(f"{rel}: on {sorted(holders)}, chain {chain} is {sorted(want)}")
            elif len(set(holders.values())) != 1:
                problems.append(f"{rel}: copies differ")
        return problems

    def wait_replicas_consistent(self, live_nodes):
        last = {}

        def consistent():
            last["p"] = self.replica_problems(live_nodes)
            return not last["p"]
        # Nodes collect chunks of chains they left every few seconds.
        h.wait_until("chunk copies to match the chain table", consistent, 60, interval_s=1,
                     on_timeout=lambda: "\n".join(last.get("p", [])[:20]))
