"""Fixtures for the schema suite: one real `cpfs serve` (SQLite, or the
database CPFS_TEST_DATABASE_URL names) on a free loopback port, with a known
access key, for the whole pytest session.

Environment:
  CPFS_BIN                 the server binary (default <repo>/target/debug/cpfs)
  CPFS_TEST_DATABASE_URL   when set, a fresh database on that server
"""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

ACCESS_KEY_ID = "LTAI5tCpfsSchemaKey001"
ACCESS_KEY_SECRET = "cpfsSchemaSecret/+=Qz4"
READY_DEADLINE_S = 30.0

for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    stderr_path: Path

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stderr_tail(self, lines=40):
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr file)"
        return "\n".join(text.splitlines()[-lines:])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthz(port):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    binary = Path(os.environ.get("CPFS_BIN") or REPO / "target" / "debug" / "cpfs")
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"server binary {binary} not found (cargo build, or set CPFS_BIN)")
    workdir = tmp_path_factory.mktemp("cpfs-schema")
    port = _free_port()
    args = [str(binary), "serve", "--data-dir", str(workdir / "data"),
            "--listen", f"127.0.0.1:{port}"]
    db_url = os.environ.get("CPFS_TEST_DATABASE_URL")
    if db_url:
        name = "cpfs_schema_" + uuid.uuid4().hex
        subprocess.run(["psql", db_url, "-qc", f"CREATE DATABASE {name}"], check=True)
        args += ["--database-url", db_url.rsplit("/", 1)[0] + "/" + name]
    env = dict(os.environ)
    env["CPFS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
    env["CPFS_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    stderr_path = workdir / "server.stderr"
    with open(workdir / "server.stdout", "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(workdir))
    srv = Server(port, proc, stderr_path)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while _healthz(port) != 200:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{srv.stderr_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_DEADLINE_S:.0f} s:\n{srv.stderr_tail()}")
            time.sleep(0.1)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of the server's stderr to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if srv is not None:
            rep.sections.append(("cpfs server stderr (tail)", srv.stderr_tail()))
