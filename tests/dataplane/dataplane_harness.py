"""Machinery of the data-plane suite: the server, the API, mounts, uid switching.

Kept out of conftest.py so that test modules can import it by a unique name
(tests/sdk has a conftest.py of its own). The fixtures are in conftest.py.
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

ACCESS_KEY_ID = "LTAI5tCpfsDataPlane01"
ACCESS_KEY_SECRET = "cpfsDataPlaneSecret/+=7"
REGION = "cn-hangzhou"
ZONE = "cn-hangzhou-b"
VPC_ID = "vpc-dataplane"
VSWITCH_ID = "vsw-dataplane"
REPLICAS = 2

READY_DEADLINE_S = 60.0        # cpfs serve answering /healthz
FS_DEADLINE_S = 120.0          # file system Running, mount target Active
MOUNT_DEADLINE_S = 60.0        # cpfs mount: directory becomes a mount point
UNMOUNT_DEADLINE_S = 30.0      # mount process gone after fusermount3 -u
STOP_DEADLINE_S = 15.0         # processes exit after SIGTERM
POLL_S = 0.1

# Loopback only; a proxy from the environment (read by the core SDK) must not
# get in the way.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Live objects, so that a failure report can show their logs.
LIVE_SERVERS = []
LIVE_MOUNTS = []


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def cpfs_binary():
    return Path(os.environ.get("CPFS_BIN") or REPO / "target" / "debug" / "cpfs")


def require_binary():
    binary = cpfs_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"cpfs binary {binary} not found or not executable "
                    "(build it with `cargo build`, or set CPFS_BIN)")
    return binary


def fresh_postgres_database(url):
    """An empty database beside the one `url` names, for one server: each
    server is its own cluster (its own cluster token, metadata servers and
    file systems), as it is on SQLite."""
    name = f"cpfs_dp_{uuid.uuid4().hex}"
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {name}"], check=True)
    return f"{url.rsplit('/', 1)[0]}/{name}"


def free_port(taken=()):
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def tail_text(path, lines=60):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no file {path})"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def healthz(port):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stop_group(proc, deadline_s=STOP_DEADLINE_S):
    """SIGTERM then SIGKILL the process group this suite started (by its id)."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=deadline_s)
            # The leader is gone; children of the group may linger a moment.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=deadline_s)


def group_alive(pgid):
    """Whether any process of process group pgid is still running (zombies do not count)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _unescape_mountinfo(field_text):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mount_entry(path):
    """The /proc/self/mountinfo entry (fstype, source, options) for path, or None.

    Unlike os.path.ismount this also sees a mount whose daemon died (stat
    gives ENOTCONN there)."""
    want = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            if len(parts) >= 5 and _unescape_mountinfo(parts[4]) == want:
                r = right.split()
                found = {"fstype": r[0], "source": _unescape_mountinfo(r[1]),
                         "options": parts[5] + "," + (r[2] if len(r) > 2 else "")}
    return found


def wait_until(what, fn, deadline_s, interval_s=POLL_S, on_timeout=None):
    """Poll fn() until it returns a truthy value; fail with what was last seen."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}{extra}")
        time.sleep(interval_s)


def drop_caches():
    """Drop the kernel page cache (root), so reads go to the FUSE daemon."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Server and API
# ---------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, action, code, status, message):
        super().__init__(f"{action}: {code} (HTTP {status}): {message}")
        self.code = code
        self.status = status


@dataclass
class Server:
    api_port: int
    meta_port: int
    workdir: Path
    data_dir: Path
    proc: subprocess.Popen
    stderr_path: Path
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)

    def database_url(self):
        """The PostgreSQL database this server runs on (None: SQLite)."""
        args = list(self.args)
        for flag, value in zip(args, args[1:]):
            if flag == "--database-url":
                return value
        return None

    def launch(self, log_mode="wb"):
        """Start the server's command in its own process group (teardown also
        reaches the `cpfs node` children); "ab" appends to an earlier run's logs."""
        with open(self.workdir / "server.stdout", log_mode) as out, \
                open(self.stderr_path, log_mode) as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=str(self.workdir), start_new_session=True)

    def wait_ready(self):
        """Wait for /healthz; fails with the server's stderr when it dies or is not ready in time."""
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"server exited with {rc} before it was ready\n"
                            f"command: {' '.join(self.args)}\nstderr:\n{self.stderr_tail()}")
            status = healthz(self.api_port)
            if status == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_DEADLINE_S:.0f} s "
                            f"(last /healthz status: {status})\n"
                            f"command: {' '.join(self.args)}\nstderr:\n{self.stderr_tail()}")
            time.sleep(POLL_S)

    def restart(self, sig=signal.SIGKILL, group=True, down_s=0.0):
        """Stop the server with `sig` (to its whole process group, nodes included,
        or to `cpfs serve` alone, whose nodes then die with it), wait until every
        process of the group is gone, keep it down for `down_s` seconds (the
        outage being tested, e.g. a slow start), start the same command on the
        same data directory and wait until it answers."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=STOP_DEADLINE_S + 10)
        # The nodes (same group) die with serve; a restart must not race them.
        wait_until("the old server's processes to exit", lambda: not group_alive(self.proc.pid),
                   STOP_DEADLINE_S)
        time.sleep(down_s)
        self.launch(log_mode="ab")
        self.wait_ready()

    @property
    def hostport(self):
        return f"127.0.0.1:{self.api_port}"

    @property
    def url(self):
        return f"http://{self.hostport}"

    def stderr_tail(self, lines=60):
        return tail_text(self.stderr_path, lines)

    def api(self, action, generic=False, **params):
        """Call an action with the core SDK (V1 signature); the JSON reply as a dict.

        An action the SDK has no request class for (a CPFS extension), or
        any with generic=True (a parameter its class has no setter for),
        goes through its CommonRequest, parameters as given."""
        import importlib
        from aliyunsdkcore.client import AcsClient
        from aliyunsdkcore.acs_exception.exceptions import ServerException
        from aliyunsdkcore.request import CommonRequest
        try:
            module = importlib.import_module(f"aliyunsdknas.request.v20170626.{action}Request")
        except ModuleNotFoundError:
            module = None
        if module is None or generic:
            req = CommonRequest(domain=self.hostport, version="2017-06-26", action_name=action)
            req.set_method("POST")
            for name, value in params.items():
                req.add_query_param(name, str(value))
        else:
            req = getattr(module, f"{action}Request")()
            req.set_endpoint(self.hostport)
            for name, value in params.items():
                getattr(req, f"set_{name}")(value)
        req.set_protocol_type("http")
        client = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION,
                           auto_retry=False, timeout=30, connect_timeout=5)
        try:
            return json.loads(client.do_action_with_exception(req))
        except ServerException as e:
            raise ApiError(action, e.get_error_code(), e.get_http_status(), e.get_error_msg()) from None

    def chunk_files(self):
        """{path: (size, mtime_ns, ino)} of every non-empty regular file under nodes/*/chunks."""
        out = {}
        for chunks in sorted(self.data_dir.glob("nodes/*/chunks")):
            for dirpath, _dirs, files in os.walk(chunks):
                for name in files:
                    p = Path(dirpath) / name
                    try:
                        st = p.lstat()
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                        out[p] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return out


def start_server(workdir, extra_args=(), extra_env=None, fixed_meta_port=True):
    """Launch `cpfs serve` (own process group) with its data under workdir/data and
    wait for /healthz; fails with its stderr when it dies or is not ready in time.

    fixed_meta_port=False leaves the metadata port to the server (any free one,
    remembered in the data directory), as `cpfs serve` does by default."""
    binary = require_binary()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    api_port = free_port()
    meta_port = free_port(taken={api_port}) if fixed_meta_port else None

    args = [
        str(binary), "serve",
        "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{api_port}",
    ]
    if fixed_meta_port:
        args += ["--meta-listen", f"127.0.0.1:{meta_port}"]
    db_url = os.environ.get("CPFS_TEST_DATABASE_URL")
    if db_url:
        args += ["--database-url", fresh_postgres_database(db_url)]
    args += [str(a) for a in extra_args]
    env = dict(os.environ)
    env.update(extra_env or {})
    env["CPFS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
    env["CPFS_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
    # The tests' slapd listens on loopback, which the service refuses for
    # LDAP servers the operator has not listed.
    env.setdefault("CPFS_LDAP_ALLOWED_SERVERS", "127.0.0.1")
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")

    srv = Server(api_port, meta_port, workdir, data_dir, None, workdir / "server.stderr", args, env)
    srv.launch()
    LIVE_SERVERS.append(srv)
    try:
        srv.wait_ready()
    except BaseException:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)
        raise
    return srv


def mounts_under(d):
    prefix = os.path.realpath(d) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" - ")[0].split()
            if len(parts) >= 5:
                mp = _unescape_mountinfo(parts[4])
                if mp.startswith(prefix):
                    out.append(mp)
    return out


@dataclass
class FileSystem:
    fs_id: str
    domain: str


def create_filesystem(server, storage_type="advance_100", capacity=2048, **extra):
    """CreateFileSystem + CreateMountTarget, waiting for Running / Active.

    The default, advance_100 at 2,048 GiB, is held by QoS to 200 MB/s."""
    fs_id = server.api("CreateFileSystem", FileSystemType="cpfs", ProtocolType="cpfs",
                       StorageType=storage_type, Capacity=capacity, ZoneId=ZONE,
                       VpcId=VPC_ID, VSwitchId=VSWITCH_ID, **extra)["FileSystemId"]
    last = {}

    def running():
        fss = server.api("DescribeFileSystems", FileSystemId=fs_id)["FileSystems"]["FileSystem"]
        last["fs"] = fss
        return bool(fss) and fss[0].get("Status") == "Running"
    wait_until(f"{fs_id} Status Running", running, FS_DEADLINE_S,
               interval_s=0.2, on_timeout=lambda: f"last: {last.get('fs')}\n{server.stderr_tail()}")

    domain = server.api("CreateMountTarget", FileSystemId=fs_id, NetworkType="Vpc",
                        VpcId=VPC_ID, VSwitchId=VSWITCH_ID)["MountTargetDomain"]
    assert domain, "CreateMountTarget returned an empty MountTargetDomain"

    def active():
        mts = server.api("DescribeMountTargets", FileSystemId=fs_id)["MountTargets"]["MountTarget"]
        last["mt"] = mts
        return any(mt.get("MountTargetDomain") == domain and mt.get("Status") == "Active" for mt in mts)
    wait_until(f"mount target {domain} Active", active, FS_DEADLINE_S,
               interval_s=0.2, on_timeout=lambda: f"last: {last.get('mt')}\n{server.stderr_tail()}")
    return FileSystem(fs_id, domain)


# ---------------------------------------------------------------------------
# Mounts
# ---------------------------------------------------------------------------

@dataclass
class Mount:
    path: Path
    domain: str
    server: Server
    proc: subprocess.Popen = None       # None for a daemonised (-d) mount
    stderr_path: Path = None
    args: list = field(default_factory=list)
    daemon_log: Path = None             # where a daemonised mount logs

    def stderr_tail(self, lines=40):
        return tail_text(self.stderr_path, lines) if self.stderr_path else "(no stderr file)"

    def daemon_pids(self):
        """Pids of `cpfs mount` processes serving this (unique) directory."""
        pids = []
        me = str(self.path)
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if "mount" in words and me in words and any(w.endswith("cpfs") for w in words[:1]):
                pids.append(int(d.name))
        return pids

    def unmount(self):
        """fusermount3 -u (retried until the deadline, then lazily), then make sure
        the mount process is gone. Safe to call twice; never raises."""
        deadline = time.monotonic() + UNMOUNT_DEADLINE_S
        last_err = ""
        while mount_entry(self.path) and time.monotonic() < deadline:
            try:
                r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True,
                                   text=True, timeout=UNMOUNT_DEADLINE_S)
                last_err = r.stderr
            except subprocess.TimeoutExpired:
                last_err = "fusermount3 -u timed out"
            if mount_entry(self.path):
                time.sleep(0.2)
        if mount_entry(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True, timeout=30)
            sys.stderr.write(f"[dataplane] {self.path}: unmount failed ({last_err.strip()}), "
                             "lazily detached\n")
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_group(self.proc)
        else:
            end = time.monotonic() + 10
            pids = self.daemon_pids()
            while pids and time.monotonic() < end:
                time.sleep(0.1)
                pids = self.daemon_pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # The daemon's log file is outside our directories; drop it.
            try:
                if self.daemon_log and str(self.path) in self.daemon_log.read_text(errors="replace"):
                    self.daemon_log.unlink()
            except OSError:
                pass
        if self in LIVE_MOUNTS:
            LIVE_MOUNTS.remove(self)


def start_mount(server, domain, path, daemon=False, extra_args=()):
    """Run `cpfs mount DOMAIN PATH --controlplane URL` and wait until PATH is a
    mount point. Returns the Mount (registered for teardown)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    args = [str(require_binary()), "mount", domain, str(path), "--controlplane", server.url]
    if daemon:
        args.append("-d")
    args += list(extra_args)
    stderr_path = path.parent / f"{path.name}.mount.stderr"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    with open(path.parent / f"{path.name}.mount.stdout", "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(path.parent), start_new_session=True)
    m = Mount(path, domain, server, None if daemon else proc, stderr_path, args)
    LIVE_MOUNTS.append(m)

    def ready():
        rc = proc.poll()
        if rc is not None and not daemon:
            pytest.fail(f"`cpfs mount` exited with {rc} before {path} was mounted\n"
                        f"command: {' '.join(args)}\nstderr:\n{m.stderr_tail()}\n"
                        f"server stderr:\n{server.stderr_tail(30)}")
        if daemon and rc is not None and rc != 0:
            pytest.fail(f"`cpfs mount -d` exited with {rc}\ncommand: {' '.join(args)}\n"
                        f"stderr:\n{m.stderr_tail()}")
        return mount_entry(path) is not None and os.path.ismount(path)
    try:
        wait_until(f"{path} to be mounted by `{' '.join(args)}`", ready, MOUNT_DEADLINE_S,
                   on_timeout=lambda: f"mount stderr:\n{m.stderr_tail()}\n"
                                      f"server stderr:\n{server.stderr_tail(30)}")
        if daemon:
            try:
                rc = proc.wait(timeout=MOUNT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`cpfs mount -d` did not return although {path} is mounted")
            assert rc == 0, f"`cpfs mount -d` exited {rc}: {m.stderr_tail()}"
            # "mounted D on DIR (pid P, log FILE)"; else the launcher's pid names it.
            said = tail_text(stderr_path, 20) + "\n" + tail_text(path.parent / f"{path.name}.mount.stdout", 20)
            found = re.search(r"\blog (/\S+?)\)", said)
            m.daemon_log = Path(found.group(1)) if found else \
                Path(tempfile.gettempdir()) / f"cpfs-mount-{proc.pid}.log"
            m.stderr_path = m.daemon_log if m.daemon_log.exists() else stderr_path
    except BaseException:
        m.unmount()
        raise
    return m


class Mounter:
    """Makes mounts and unmounts them all on cleanup()."""

    def __init__(self, server, parent):
        self.server = server
        self.parent = Path(parent)
        self.mounts = []

    def mount(self, domain, name=None, daemon=False, extra_args=()):
        name = name or f"mnt-{uuid.uuid4().hex[:8]}"
        m = start_mount(self.server, domain, self.parent / name, daemon=daemon, extra_args=extra_args)
        self.mounts.append(m)
        return m

    def cleanup(self):
        for m in reversed(self.mounts):
            m.unmount()
        self.mounts.clear()


def force_rmtree(path):
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o755)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


# ---------------------------------------------------------------------------
# Running as another uid
# ---------------------------------------------------------------------------

def _nobody():
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


NOBODY_UID, NOBODY_GID = _nobody()
# The interpreter itself, not the venv (whose directory nobody may not read).
SYSTEM_PYTHON = os.path.realpath(sys.executable)

_ERRNO_SNIPPET = r"""
import errno, json, os, sys
a = sys.argv[2:]
try:
    exec(sys.argv[1])
except OSError as e:
    print(json.dumps({"errno": e.errno, "msg": str(e)}))
else:
    print(json.dumps({"errno": 0}))
"""


def run_as_uid(argv, uid=NOBODY_UID, gid=NOBODY_GID, timeout=120, groups=(), **kwargs):
    """Run argv as uid/gid with the supplementary `groups` (none by default), from '/'."""
    group_args = [f"--groups={','.join(str(g) for g in groups)}"] if groups else ["--clear-groups"]
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", *group_args, "--"] + [str(a) for a in argv]
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(cmd, timeout=timeout, cwd="/", **kwargs)


def errno_as_uid(code, *args, uid=NOBODY_UID, gid=NOBODY_GID, groups=()):
    """Exec the Python statements `code` as uid (the list `a` holds args as str).

    Returns 0 when they succeed, else the errno of the OSError they raised."""
    r = run_as_uid([SYSTEM_PYTHON, "-I", "-c", _ERRNO_SNIPPET, code, *args], uid=uid, gid=gid,
                   groups=groups)
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"snippet as uid {uid} crashed (rc {r.returncode}):\n{code}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])["errno"]


