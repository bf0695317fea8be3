"""Fixtures for the official-SDK compatibility suite.

Starts the real `cpfs serve` binary once per pytest session, on free loopback
ports, over HTTP and HTTPS (a self-signed certificate made with the openssl
CLI), and stops it at the end.

Environment:
  CPFS_BIN                 the server binary (default <repo>/target/debug/cpfs)
  CPFS_TEST_DATABASE_URL   when set, the server runs on that database
                           (--database-url), e.g. the PostgreSQL that
                           .ci/setup.sh starts
"""

import os
import uuid
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

ACCESS_KEY_ID = "LTAI5tCpfsTestKey0001"
ACCESS_KEY_SECRET = "cpfsTestSecret/+=Kx9"
REGION = "cn-hangzhou"
ZONES = ("cn-hangzhou-b", "cn-hangzhou-g")

READY_DEADLINE_S = 30.0

# The suite talks to loopback only; a proxy from the environment (which the
# core SDK reads by itself) must not get in the way.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@dataclass
class Server:
    http_port: int
    https_port: int
    workdir: Path
    proc: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    args: list = field(default_factory=list)

    def port(self, scheme):
        return self.http_port if scheme == "http" else self.https_port

    def hostport(self, scheme):
        return f"127.0.0.1:{self.port(scheme)}"

    def url(self, scheme):
        return f"{scheme}://{self.hostport(scheme)}"

    def stderr_tail(self, lines=60):
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr file)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)   # in case the log is coloured
        return "\n".join(text.splitlines()[-lines:])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_cert(workdir):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl CLI not found (run .ci/setup.sh)")
    cert, key = workdir / "tls-cert.pem", workdir / "tls-key.pem"
    cmd = [
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
        "-addext", "basicConstraints=critical,CA:FALSE",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        pytest.fail(f"openssl failed ({res.returncode}):\n{res.stderr}")
    return cert, key


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
        pytest.fail(f"server binary {binary} not found or not executable "
                    "(build it with `cargo build`, or set CPFS_BIN)")

    workdir = tmp_path_factory.mktemp("cpfs-server")
    data_dir = workdir / "data"
    data_dir.mkdir()
    cert, key = _make_cert(workdir)
    http_port = _free_port()
    https_port = _free_port()
    while https_port == http_port:
        https_port = _free_port()

    args = [
        str(binary), "serve",
        "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{http_port}",
        "--https-listen", f"127.0.0.1:{https_port}",
        "--tls-cert", str(cert),
        "--tls-key", str(key),
    ]
    db_url = os.environ.get("CPFS_TEST_DATABASE_URL")
    if db_url:
        # A fresh database per run: nothing left from earlier runs (old
        # nodes, old file systems) can change what this run sees.
        name = "cpfs_sdk_" + uuid.uuid4().hex
        subprocess.run(["psql", db_url, "-qc", f"CREATE DATABASE {name}"], check=True)
        args += ["--database-url", db_url.rsplit("/", 1)[0] + "/" + name]

    env = dict(os.environ)
    env["CPFS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
    env["CPFS_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
    # The tests' slapd listens on loopback, which the service refuses for
    # LDAP servers the operator has not listed.
    env.setdefault("CPFS_LDAP_ALLOWED_SERVERS", "127.0.0.1")
    # One more than a page of DescribeFilesets (test_filesets.py).
    env["CPFS_FILESETS_PER_FILE_SYSTEM"] = "12"
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")

    stdout_path = workdir / "server.stdout"
    stderr_path = workdir / "server.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(workdir))
    srv = Server(http_port, https_port, workdir, proc, stdout_path, stderr_path, args)

    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            rc = proc.poll()
            if rc is not None:
                pytest.fail(f"server exited with {rc} before it was ready\n"
                            f"command: {' '.join(args)}\nstderr:\n{srv.stderr_tail()}")
            status = _healthz(http_port)
            if status == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_DEADLINE_S:.0f} s "
                            f"(last /healthz status: {status})\n"
                            f"command: {' '.join(args)}\nstderr:\n{srv.stderr_tail()}")
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


@pytest.fixture(scope="session")
def node_driver():
    """(node binary, path of popcore_test.js); fails if pop-core is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found (run .ci/setup.sh)")
    script = HERE / "node" / "popcore_test.js"
    pkg = HERE / "node" / "node_modules" / "@alicloud" / "pop-core" / "package.json"
    if not pkg.is_file():
        pytest.fail(f"{pkg.relative_to(REPO)} missing: run .ci/setup.sh (npm ci in tests/sdk/node)")
    res = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.fail(f"node --check {script.name} failed:\n{res.stderr}")
    return node, script


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of the server's stderr to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if srv is not None:
            rep.sections.append(("cpfs server stderr (tail)", srv.stderr_tail(40)))
