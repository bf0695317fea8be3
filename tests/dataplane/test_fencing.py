"""Client fencing and mounted clients on a real mount: DescribeMountedClients
lists a mounted client (address, session, mount target, times); after
AddClientToBlackList shows it EVICTED, a writer that keeps writing through
the fence gets errors and nothing it sends lands: every byte on disk was
written before EVICTED was shown. A buffered writer learns of the fence at
its next fsync at the latest (its writes are answered from the mount's
write-behind; fsync and close are where they are known to have landed). A fenced client cannot mount again until
RemoveClientFromBlackList.

Every mount here comes from 127.0.0.1, the address this test fences: it
runs its own `cpfs serve`, so no other test's mount is fenced.
"""

import os
import subprocess
import threading
import time
import uuid

import pytest

from dataplane_harness import (
    LIVE_SERVERS, Mounter, create_filesystem, drop_caches, mount_entry, require_binary,
    start_server, stop_group, wait_until,
)

BLOCK = 4096
CLIENT = "127.0.0.1"


@pytest.fixture(scope="module")
def fence_server(fuse_ready, base_dir):
    srv = start_server(base_dir / f"fence-server-{uuid.uuid4().hex[:6]}")
    try:
        yield srv
    finally:
        stop_group(srv.proc)
        LIVE_SERVERS.remove(srv)


def record(seq):
    head = f"seq={seq:08d};".encode()
    return head + b"." * (BLOCK - len(head))


def fenced_state(server, fs_id):
    import json
    body = server.api("DescribeBlackListClients", FileSystemId=fs_id)
    return json.loads(body["Clients"]).get(CLIENT)


def test_a_fenced_writer_lands_nothing_after_evicted(fence_server, base_dir):
    srv = fence_server
    fs = create_filesystem(srv)
    parent = base_dir / f"fence-{uuid.uuid4().hex[:8]}"
    parent.mkdir(mode=0o755)
    m = Mounter(srv, parent)
    try:
        mnt = m.mount(fs.domain, name="writer")

        # Mounted clients: this one, with its session and times.
        def listed():
            body = srv.api("DescribeMountedClients", FileSystemId=fs.fs_id,
                           MountTargetDomain=fs.domain)
            return body if body["TotalCount"] >= 1 else None
        body = wait_until("the mount listed", listed, 20)
        (client,) = body["Clients"]["Client"]
        assert client["ClientIP"] == CLIENT, client
        assert client["SessionId"] and client["MountTargetDomain"] == fs.domain, client
        assert client["MountTime"].endswith("Z") and client["LastActiveTime"].endswith("Z"), client
        other = srv.api("DescribeMountedClients", FileSystemId=fs.fs_id,
                        MountTargetDomain=fs.domain, ClientIP="10.9.9.9")
        assert other["TotalCount"] == 0, other

        path = mnt.path / "log"
        issued = {}          # seq -> monotonic time the write was issued
        acked = []           # seqs whose write returned
        failed = []
        stop = threading.Event()

        def writer():
            # O_DSYNC: each write returns once it landed, so "acknowledged"
            # means on disk (a buffered write is answered from the mount's
            # write-behind and known to have landed at fsync or close).
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DSYNC, 0o644)
            seq = 0
            try:
                while not stop.is_set():
                    issued[seq] = time.monotonic()
                    try:
                        os.pwrite(fd, record(seq), seq * BLOCK)
                        acked.append(seq)
                    except OSError as e:
                        failed.append((seq, e.errno))
                        time.sleep(0.01)
                    seq += 1
            finally:
                try:
                    os.close(fd)
                except OSError:
                    pass
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        wait_until("the writer going", lambda: len(acked) > 50, 30)
        buffered = os.open(mnt.path / "buffered", os.O_CREAT | os.O_WRONLY, 0o644)
        os.pwrite(buffered, record(0), 0)
        os.fsync(buffered)

        srv.api("AddClientToBlackList", FileSystemId=fs.fs_id, ClientIP=CLIENT,
                ClientToken=uuid.uuid4().hex)
        assert fenced_state(srv, fs.fs_id) in ("EVICTING", "EVICTED")
        wait_until("EVICTED", lambda: fenced_state(srv, fs.fs_id) == "EVICTED", 30)
        evicted_at = time.monotonic()
        # The writer keeps trying for a while after EVICTED.
        wait_until("writes failing", lambda: failed and failed[-1][0] > max(acked, default=0), 30)
        time.sleep(1.0)
        stop.set()
        t.join(timeout=60)
        assert failed, "writes through the fence must fail"
        with pytest.raises(OSError):
            # The write may be taken into write-behind; its fsync cannot
            # succeed through the fence.
            os.pwrite(buffered, record(1), BLOCK)
            os.fsync(buffered)
        try:
            os.close(buffered)
        except OSError:
            pass
        late = [s for s in acked if issued[s] >= evicted_at]
        assert not late, f"writes issued after EVICTED were acknowledged: {late[:5]}"

        # A fenced client cannot mount again.
        target = parent / "refused"
        target.mkdir()
        r = subprocess.run([str(require_binary()), "mount", fs.domain, str(target),
                            "--controlplane", srv.url], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "fenced" in r.stderr, r.stderr
        assert not mount_entry(target)
    finally:
        m.cleanup()

    srv.api("RemoveClientFromBlackList", FileSystemId=fs.fs_id, ClientIP=CLIENT,
            ClientToken=uuid.uuid4().hex)
    assert fenced_state(srv, fs.fs_id) is None
    m = Mounter(srv, parent)
    try:
        reader = m.mount(fs.domain, name="reader")
        drop_caches()
        data = (reader.path / "log").read_bytes()
        found = []
        for i in range(0, len(data), BLOCK):
            block = data[i:i + BLOCK]
            if block.strip(b"\0"):
                seq = i // BLOCK
                assert block == record(seq), f"block {seq} holds something else"
                found.append(seq)
        assert found, "what was written before the fence is there"
        late = [s for s in found if issued[s] >= evicted_at]
        assert not late, f"blocks issued after EVICTED are on disk: {late[:5]}"
        assert set(acked) <= set(found), "every acknowledged write is on disk"
        kept = (reader.path / "buffered").read_bytes()
        assert kept[:BLOCK] == record(0), "the buffered write fsynced before the fence is there"
        assert not kept[BLOCK:].strip(b"\0"), "the buffered write after the fence did not land"
    finally:
        m.cleanup()
