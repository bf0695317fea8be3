"""Fixtures for the billing suite: the real `cpfs serve` on a clock file.

The server reads business time from a file (`clock_file`, test and
rehearsal only), so a test moves through days and months by writing a
time; request signatures are still checked against the real clock, so the
official SDKs sign as usual. Every setting sits in one config file shared
by the server and the `cpfs billing` commands the test runs.

Environment:
  CPFS_BIN                 the server binary (default <repo>/target/debug/cpfs)
  CPFS_TEST_DATABASE_URL   when set, a fresh PostgreSQL database on that server
"""

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ACCESS_KEY_ID = "LTAI5tCpfsBillingKey01"
ACCESS_KEY_SECRET = "cpfsBillingSecret/+=Q7"

for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workdir, binary):
        self.workdir = workdir
        self.binary = binary
        self.port = _free_port()
        self.clock = workdir / "clock"
        self.config = workdir / "cpfs.toml"
        self.proc = None
        db_url = os.environ.get("CPFS_TEST_DATABASE_URL")
        lines = [
            f'data_dir = "{workdir / "data"}"',
            f'clock_file = "{self.clock}"',
            "retention_days = 1",
            # The start-up pass and explicit `cpfs billing meter` runs do
            # the metering; a long interval keeps the test's steps apart.
            "billing_interval = 3600",
            f'listen = "127.0.0.1:{self.port}"',
        ]
        if db_url:
            name = "cpfs_bss_" + uuid.uuid4().hex
            subprocess.run(["psql", db_url, "-qc", f"CREATE DATABASE {name}"], check=True)
            lines.append(f'database_url = "{db_url.rsplit("/", 1)[0]}/{name}"')
        self.config.write_text("\n".join(lines) + "\n")

    def set_clock(self, unix):
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(str(unix))
        tmp.replace(self.clock)

    def start(self):
        env = dict(os.environ, CPFS_ACCESS_KEY_ID=ACCESS_KEY_ID, CPFS_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET,
                   CPFS_LOG="info", NO_COLOR="1")
        out = open(self.workdir / "server.stdout", "ab")
        err = open(self.workdir / "server.stderr", "ab")
        self.proc = subprocess.Popen([str(self.binary), "serve", "--config", str(self.config)],
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                     cwd=str(self.workdir))
        deadline = time.monotonic() + 30
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.stderr_tail()}")
            try:
                with opener.open(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready:\n{self.stderr_tail()}")
            time.sleep(0.1)

    def kill(self):
        """SIGKILL: the server gets no chance to finish anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr_tail(self, lines=60):
        try:
            return "\n".join((self.workdir / "server.stderr").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no stderr)"

    def cli(self, *args):
        """`cpfs <args> --config <the server's config>`; stdout."""
        res = subprocess.run([str(self.binary), *args, "--config", str(self.config)],
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            pytest.fail(f"cpfs {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res.stdout

    def cli_json(self, *args):
        return json.loads(self.cli(*args))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = Path(os.environ.get("CPFS_BIN") or REPO / "target" / "debug" / "cpfs")
    if not binary.is_file():
        pytest.fail(f"{binary} not found (cargo build --bin cpfs, or set CPFS_BIN)")
    srv = Server(tmp_path_factory.mktemp("cpfs-billing"), binary)
    yield srv
    srv.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        srv = item.funcargs.get("server")
        if srv is not None:
            rep.sections.append(("cpfs serve stderr (tail)", srv.stderr_tail()))
