"""Restarting `cpfs serve` (control plane, metadata service and its data nodes)
under a mounted, busy file system: programs see a stall, never an error, and
nothing acknowledged is lost.

The server runs on the default metadata address (any free port), so the test
also checks that a restarted server comes back on the port clients resolved.
"""

import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid

from dataplane_harness import (
    ACCESS_KEY_ID, ACCESS_KEY_SECRET, LIVE_MOUNTS, LIVE_SERVERS, READY_DEADLINE_S,
    create_filesystem, healthz, start_mount, start_server, stop_group, wait_until,
)

BLOCK = 256 * 1024


def restart(srv):
    """kill -9 the whole server process group (nodes included), start it again
    with the same command, and wait for /healthz."""
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=30)
    env = dict(os.environ, CPFS_ACCESS_KEY_ID=ACCESS_KEY_ID, CPFS_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET)
    env.setdefault("RUST_LOG", "info")
    with open(srv.stderr_path, "ab") as err:
        srv.proc = subprocess.Popen(srv.args, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(srv.workdir), start_new_session=True)
    wait_until("the restarted server to answer", lambda: healthz(srv.api_port) == 200,
                READY_DEADLINE_S, interval_s=0.05)


def test_restarting_the_server_under_a_busy_mount_is_only_a_stall(fuse_ready, base_dir):
    srv = start_server(base_dir / f"server-restart-{uuid.uuid4().hex[:6]}", fixed_meta_port=False)
    try:
        fs = create_filesystem(srv)
        m = start_mount(srv, fs.domain, base_dir / f"restart-{uuid.uuid4().hex[:6]}" / "mnt")
        written = {}          # name -> sha256 of what an acknowledged write+fsync holds
        errors, stalls = [], []
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                name = f"f{i % 64}"
                data = os.urandom(BLOCK)
                t = time.monotonic()
                try:
                    with open(m.path / name, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    if hashlib.sha256((m.path / name).read_bytes()).hexdigest() != hashlib.sha256(data).hexdigest():
                        errors.append((i, "read back differs"))
                    written[name] = hashlib.sha256(data).hexdigest()
                except OSError as e:
                    errors.append((i, repr(e)))
                stalls.append(time.monotonic() - t)
                i += 1

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        wait_until("the writer to get going", lambda: len(stalls) > 20, 30)
        for _ in range(2):
            restart(srv)
            before = len(stalls)
            wait_until("writes to flow after the restart", lambda: len(stalls) > before + 20, 60)
        stop.set()
        th.join(timeout=60)
        assert not th.is_alive(), "the writer is stuck"
        assert errors == [], f"programs saw errors across restarts: {errors[:5]}"
        for name, digest in written.items():
            assert hashlib.sha256((m.path / name).read_bytes()).hexdigest() == digest, name
        print(f"longest stall across 2 restarts: {max(stalls):.2f} s over {len(stalls)} writes")
    finally:
        for mt in [x for x in LIVE_MOUNTS if x.server is srv]:
            mt.unmount()
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)
