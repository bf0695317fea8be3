"""Access control through the real mount: root only without LDAP, identities and
groups from a real slapd, LDAP outages, Create/Modify/DeleteLDAPConfig, and the
access groups of mount targets (source address, RDONLY, root_squash).

This module runs its own `cpfs serve` (a short LDAP cache TTL, so that the outage
test waits seconds, not a minute, and a bind password for BindDN) and its own
slapd, which one test stops and starts again.

Processes run under other uids with setpriv. The client kernel also checks mode
bits against the local credentials (default_permissions), as an NFS client does,
so each process is given the groups its directory entry has; the server must
still refuse what the directory does not back.
"""

import errno
import os
import stat
import subprocess
import uuid

import pytest

from dataplane_harness import (
    LIVE_MOUNTS, LIVE_SERVERS, VPC_ID, VSWITCH_ID, ApiError, Mounter, create_filesystem,
    errno_as_uid, require_binary, start_server, stop_group, wait_until,
)
from ldap_harness import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Group, User, start_slapd

CACHE_TTL_S = 3
ALICE = User("alice", 2001, 2001)
BOB = User("bob", 2002, 2002)
CAROL = User("carol", 2003, 2003)
RESEARCH = Group("research", 3000, members=["alice", "carol"])
UNKNOWN_UID = 4242
NOBODY = 65534


@pytest.fixture(scope="module")
def ldap(base_dir):
    d = start_slapd(base_dir / f"slapd-access-{uuid.uuid4().hex[:6]}",
                    users=[ALICE, BOB, CAROL],
                    groups=[Group("alice", 2001, ["alice"]), Group("bob", 2002, ["bob"]),
                            Group("carol", 2003, ["carol"]), RESEARCH])
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def srv(fuse_ready, base_dir):
    s = start_server(base_dir / f"server-access-{uuid.uuid4().hex[:6]}",
                     extra_args=["--ldap-cache-ttl", str(CACHE_TTL_S)],
                     extra_env={"CPFS_LDAP_BIND_PASSWORD": ADMIN_PASSWORD})
    try:
        yield s
    finally:
        # Mounts first: a FUSE daemon whose server is gone can hang unmount.
        for mt in [x for x in LIVE_MOUNTS if x.server is s]:
            mt.unmount()
        stop_group(s.proc)
        LIVE_SERVERS.remove(s)


@pytest.fixture(scope="module")
def mounts(srv, base_dir):
    parent = base_dir / f"access-{uuid.uuid4().hex[:6]}"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    m = Mounter(srv, parent)
    try:
        yield m
    finally:
        m.cleanup()


def as_user(user, code, *args, groups=None):
    """errno of `code` run as the user with its directory groups (as nss would give)."""
    if groups is None:
        groups = [user.gid] + ([RESEARCH.gid] if user.name in RESEARCH.members else [])
    return errno_as_uid(code, *[str(a) for a in args], uid=user.uid, gid=user.gid, groups=groups)


def ldap_config(srv, fs_id):
    fss = srv.api("DescribeFileSystems", FileSystemId=fs_id)["FileSystems"]["FileSystem"]
    return fss[0].get("Ldap")


@pytest.fixture(scope="module")
def ldap_fs(srv, ldap, mounts):
    """A file system whose identities come from the module's slapd, mounted."""
    fs = create_filesystem(srv)
    srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)
    m = mounts.mount(fs.domain, name="ldap")
    os.chmod(m.path, 0o755)
    return fs, m


# ---------------------------------------------------------------------------
# No LDAP: root only
# ---------------------------------------------------------------------------

def test_without_ldap_only_root_may_use_the_file_system(srv, mounts):
    fs = create_filesystem(srv)
    m = mounts.mount(fs.domain, name="rootonly")
    open_dir = m.path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)                      # whatever the modes say...
    (open_dir / "public").write_text("for everyone")
    os.chmod(open_dir / "public", 0o666)
    assert (open_dir / "public").read_text() == "for everyone"   # root works

    for user in (ALICE, User("nobody", NOBODY, NOBODY)):
        assert as_user(user, "os.listdir(a[0])", open_dir, groups=[]) == errno.EACCES
        assert as_user(user, "open(a[0]).read()", open_dir / "public", groups=[]) == errno.EACCES
        assert as_user(user, "open(a[0], 'w').close()", open_dir / f"new-{user.uid}",
                       groups=[]) == errno.EACCES
        assert as_user(user, "os.mkdir(a[0])", open_dir / f"d-{user.uid}", groups=[]) == errno.EACCES
    assert sorted(os.listdir(open_dir)) == ["public"], "nothing was created by the refused users"


# ---------------------------------------------------------------------------
# With LDAP
# ---------------------------------------------------------------------------

def test_ldap_user_writes_in_its_own_directory(ldap_fs):
    _, m = ldap_fs
    home = m.path / "home-alice"
    home.mkdir()
    os.chown(home, ALICE.uid, ALICE.gid)
    os.chmod(home, 0o700)
    assert as_user(ALICE, "open(a[0], 'w').write('mine')", home / "notes") == 0
    st = os.stat(home / "notes")
    assert (st.st_uid, st.st_gid) == (ALICE.uid, ALICE.gid)
    assert (home / "notes").read_text() == "mine"
    assert as_user(BOB, "open(a[0]).read()", home / "notes") == errno.EACCES
    assert as_user(BOB, "open(a[0], 'w')", home / "bobs") == errno.EACCES


def test_a_users_write_clears_setuid_and_setgid_at_once(ldap_fs):
    _, m = ldap_fs
    d = m.path / "privileged"
    d.mkdir()
    os.chmod(d, 0o755)
    f = d / "tool"
    f.write_bytes(b"#!/bin/sh\n")
    os.chown(f, ALICE.uid, ALICE.gid)
    os.chmod(f, 0o6775)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6775
    # Alice writes her own file: both bits go (setgid because group
    # execute is set), seen through the open handle before close, as on a
    # local file system.
    code = ("fd = os.open(a[0], os.O_WRONLY | os.O_APPEND); os.write(fd, b'echo hi\\n'); "
            "m = os.fstat(fd).st_mode; os.close(fd); "
            "\nif m & 0o6000: raise OSError(1, oct(m))")
    assert as_user(ALICE, code, f) == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o775
    # Root's writes keep them (CAP_FSETID).
    os.chmod(f, 0o6775)
    with open(f, "ab") as h:
        h.write(b"# root\n")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6775


def test_group_readable_file_through_an_ldap_group(ldap_fs):
    _, m = ldap_fs
    shared = m.path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    f = shared / "plan.txt"
    f.write_text("research only")
    os.chown(f, CAROL.uid, RESEARCH.gid)
    os.chmod(f, 0o640)
    # alice is a memberUid of research in the directory.
    assert as_user(ALICE, "assert open(a[0]).read() == 'research only'", f) == 0
    # bob is not, and claiming the group locally does not help: the server
    # checks the directory's groups, not the client's.
    assert as_user(BOB, "open(a[0]).read()", f, groups=[BOB.gid, RESEARCH.gid]) == errno.EACCES
    # Nor may alice act with a group the directory does not give her.
    g = shared / "bobs-group"
    g.write_text("x")
    os.chown(g, BOB.uid, BOB.gid)
    os.chmod(g, 0o640)
    assert as_user(ALICE, "open(a[0]).read()", g, groups=[ALICE.gid, BOB.gid]) == errno.EACCES


def test_unknown_uid_is_refused(ldap_fs):
    _, m = ldap_fs
    d = m.path / "world"
    d.mkdir()
    os.chmod(d, 0o777)
    stranger = User("stranger", UNKNOWN_UID, UNKNOWN_UID)
    assert as_user(stranger, "os.listdir(a[0])", d, groups=[]) == errno.EACCES
    assert as_user(stranger, "open(a[0], 'w')", d / "x", groups=[]) == errno.EACCES
    assert as_user(ALICE, "open(a[0], 'w').close()", d / "alices") == 0   # control


def test_ldap_outage_keeps_cached_identities_until_the_ttl(srv, ldap, ldap_fs):
    _, m = ldap_fs
    d = m.path / "outage"
    d.mkdir()
    os.chmod(d, 0o777)
    (d / "f").write_text("data")
    os.chmod(d / "f", 0o644)
    read = "assert open(a[0]).read() == 'data'"
    assert as_user(ALICE, read, d / "f") == 0          # alice is now cached
    ldap.stop()
    try:
        assert as_user(ALICE, read, d / "f") == 0, "a cached identity survives the outage"
        assert as_user(CAROL, read, d / "f") == errno.EACCES, "a new identity cannot be resolved"
        wait_until("alice's cached identity to expire", lambda: as_user(ALICE, read, d / "f") != 0,
                   deadline_s=CACHE_TTL_S + 15, interval_s=0.5)
        assert as_user(ALICE, read, d / "f") == errno.EACCES
    finally:
        ldap.start()
    wait_until("service to resume once LDAP is back", lambda: as_user(ALICE, read, d / "f") == 0,
               deadline_s=20, interval_s=0.5)
    assert as_user(CAROL, read, d / "f") == 0
    assert "LDAP lookup failed" in srv.stderr_tail(2000), "the cause is logged"


def test_ldap_config_actions_check_the_server_and_store_nothing_on_error(srv, ldap):
    fs = create_filesystem(srv)
    closed_port = ldap.port + 1 if ldap.port < 65535 else ldap.port - 1
    cases = [
        (dict(URI=f"ldap://127.0.0.1:{closed_port}", SearchBase=SUFFIX), "InvalidLDAPConfig.Unreachable"),
        (dict(URI="http://127.0.0.1:389", SearchBase=SUFFIX), "InvalidParameter.URI"),
        (dict(URI=ldap.uri, SearchBase="ou=nowhere,dc=example,dc=com"), "InvalidParameter.SearchBase"),
        # A refused bind is not told apart from an unreachable server (a
        # tenant must not learn what listens where; docs/security.md).
        (dict(URI=ldap.uri, SearchBase=SUFFIX, BindDN=f"uid=alice,ou=people,{SUFFIX}"),
         "InvalidLDAPConfig.Unreachable"),
    ]
    for params, code in cases:
        with pytest.raises(ApiError) as e:
            srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, **params)
        assert e.value.code == code, (params, e.value)
        assert e.value.status == 400
        assert ldap_config(srv, fs.fs_id) is None, f"nothing stored after {code}"

    with pytest.raises(ApiError) as e:
        srv.api("ModifyLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)
    assert e.value.code == "InvalidLDAPConfig.NotFound"

    srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX,
            BindDN=ADMIN_DN)
    assert ldap_config(srv, fs.fs_id) == {"URI": ldap.uri, "SearchBase": SUFFIX, "BindDN": ADMIN_DN}
    with pytest.raises(ApiError) as e:
        srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)
    assert e.value.code == "InvalidLDAPConfig.AlreadyExists"

    people = f"ou=people,{SUFFIX}"
    srv.api("ModifyLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=people)
    assert ldap_config(srv, fs.fs_id) == {"URI": ldap.uri, "SearchBase": people, "BindDN": ""}
    with pytest.raises(ApiError) as e:
        srv.api("ModifyLDAPConfig", FileSystemId=fs.fs_id, URI=f"ldap://127.0.0.1:{closed_port}",
                SearchBase=SUFFIX)
    assert e.value.code == "InvalidLDAPConfig.Unreachable"
    assert ldap_config(srv, fs.fs_id)["SearchBase"] == people, "a failed modify changes nothing"

    srv.api("DeleteLDAPConfig", FileSystemId=fs.fs_id)
    assert ldap_config(srv, fs.fs_id) is None
    with pytest.raises(ApiError) as e:
        srv.api("DeleteLDAPConfig", FileSystemId=fs.fs_id)
    assert e.value.code == "InvalidLDAPConfig.NotFound"
    with pytest.raises(ApiError) as e:
        srv.api("CreateLDAPConfig", FileSystemId="cpfs-doesnotexist1", URI=ldap.uri, SearchBase=SUFFIX)
    assert e.value.code == "InvalidFileSystem.NotFound"


def test_changing_the_ldap_config_reaches_mounted_clients(srv, ldap, ldap_fs):
    fs, m = ldap_fs
    d = m.path / "reconfigured"
    d.mkdir()
    os.chmod(d, 0o755)
    (d / "f").write_text("x")
    read = "open(a[0]).read()"
    assert as_user(ALICE, read, d / "f") == 0
    try:
        # A base without posixAccounts: alice is unknown there.
        srv.api("ModifyLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri,
                SearchBase=f"ou=groups,{SUFFIX}")
        wait_until("the new search base to apply", lambda: as_user(ALICE, read, d / "f") != 0,
                   deadline_s=10, interval_s=0.2)
        assert as_user(ALICE, read, d / "f") == errno.EACCES
        srv.api("DeleteLDAPConfig", FileSystemId=fs.fs_id)
        srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)
        wait_until("the restored config to apply", lambda: as_user(ALICE, read, d / "f") == 0,
                   deadline_s=10, interval_s=0.2)
        srv.api("DeleteLDAPConfig", FileSystemId=fs.fs_id)
        wait_until("root-only to apply", lambda: as_user(ALICE, read, d / "f") != 0,
                   deadline_s=10, interval_s=0.2)
        assert (d / "f").read_text() == "x", "root still works"
    finally:
        if ldap_config(srv, fs.fs_id) is None:
            srv.api("CreateLDAPConfig", FileSystemId=fs.fs_id, URI=ldap.uri, SearchBase=SUFFIX)


# ---------------------------------------------------------------------------
# Access groups and rules on mount targets
# ---------------------------------------------------------------------------

def mount_target_with_rule(srv, fs_id, cidr, rw="RDWR", squash="no_squash"):
    group = f"g{uuid.uuid4().hex[:10]}"
    srv.api("CreateAccessGroup", AccessGroupName=group, AccessGroupType="Vpc")
    rule = srv.api("CreateAccessRule", AccessGroupName=group, SourceCidrIp=cidr,
                   RWAccessType=rw, UserAccessType=squash, Priority=1)["AccessRuleId"]
    domain = srv.api("CreateMountTarget", FileSystemId=fs_id, NetworkType="Vpc", VpcId=VPC_ID,
                     VSwitchId=VSWITCH_ID, AccessGroupName=group)["MountTargetDomain"]

    def active():
        mts = srv.api("DescribeMountTargets", FileSystemId=fs_id,
                      MountTargetDomain=domain)["MountTargets"]["MountTarget"]
        return any(mt["Status"] == "Active" for mt in mts)
    wait_until(f"{domain} Active", active, deadline_s=60, interval_s=0.2)
    return group, rule, domain


def test_mount_from_an_address_outside_the_rules_is_refused(srv, ldap_fs, mounts):
    fs, _ = ldap_fs
    _, _, domain = mount_target_with_rule(srv, fs.fs_id, "10.0.0.0/8")
    d = mounts.parent / f"refused-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    r = subprocess.run([str(require_binary()), "mount", domain, str(d), "--controlplane", srv.url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "127.0.0.1" in r.stderr and "access group" in r.stderr, r.stderr
    assert not os.path.ismount(d)


def test_read_only_rule_gives_erofs(srv, ldap_fs, mounts):
    fs, rw_mount = ldap_fs
    (rw_mount.path / "ro-visible").write_text("readable")
    group, rule, domain = mount_target_with_rule(srv, fs.fs_id, "127.0.0.0/8", rw="RDONLY")
    ro = mounts.mount(domain, name=f"ro-{uuid.uuid4().hex[:4]}")
    assert (ro.path / "ro-visible").read_text() == "readable"
    for code, *args in [
        ("open(a[0], 'w')", ro.path / "new-file"),
        ("open(a[0], 'a')", ro.path / "ro-visible"),
        ("os.mkdir(a[0])", ro.path / "new-dir"),
        ("os.unlink(a[0])", ro.path / "ro-visible"),
        ("os.chmod(a[0], 0o600)", ro.path / "ro-visible"),
        ("os.rename(a[0], a[1])", ro.path / "ro-visible", ro.path / "renamed"),
    ]:
        assert errno_as_uid(code, *[str(a) for a in args], uid=0, gid=0) == errno.EROFS, code
    assert (rw_mount.path / "ro-visible").read_text() == "readable"

    # Rules are re-read while mounted: RDWR takes effect within seconds.
    srv.api("ModifyAccessRule", AccessGroupName=group, AccessRuleId=rule, RWAccessType="RDWR")
    wait_until("RDWR to apply", lambda: errno_as_uid(
        "open(a[0], 'w').write('now')", str(ro.path / "after"), uid=0, gid=0) == 0,
        deadline_s=10, interval_s=0.2)
    assert (rw_mount.path / "after").read_text() == "now"


def test_root_squash_maps_root_to_nobody(srv, ldap_fs, mounts):
    fs, rw_mount = ldap_fs
    d = rw_mount.path / "squash"
    d.mkdir()
    os.chmod(d, 0o777)
    (d / "roots-only").write_text("secret")
    os.chmod(d / "roots-only", 0o600)
    _, _, domain = mount_target_with_rule(srv, fs.fs_id, "127.0.0.1/32", squash="root_squash")
    sq = mounts.mount(domain, name=f"squash-{uuid.uuid4().hex[:4]}")
    (sq.path / "squash" / "made-by-root").write_text("x")
    st = os.stat(rw_mount.path / "squash" / "made-by-root")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    with pytest.raises(PermissionError):
        (sq.path / "squash" / "roots-only").read_text()
    assert (rw_mount.path / "squash" / "roots-only").read_text() == "secret"
    # Other users are not squashed by root_squash.
    assert as_user(ALICE, "open(a[0], 'w').close()", sq.path / "squash" / "alices") == 0
    assert os.stat(rw_mount.path / "squash" / "alices").st_uid == ALICE.uid


def set_fs_status(srv, fs_id, status):
    """What billing's expiry does to a file system, done directly in the store."""
    url = srv.database_url()
    sql = f"UPDATE file_systems SET status = '{status}' WHERE id = '{fs_id}'"
    if url:
        subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                       capture_output=True, timeout=30)
    else:
        import sqlite3
        with sqlite3.connect(srv.data_dir / "cpfs.db", timeout=30) as db:
            db.execute(sql)


def test_a_stopped_file_system_cuts_live_mounts_and_resumes(srv, ldap_fs):
    fs, m = ldap_fs
    (m.path / "before-stop").write_text("kept")
    set_fs_status(srv, fs.fs_id, "Stopped")
    try:
        wait_until("the stop to reach the mounted client",
                   lambda: errno_as_uid("open(a[0]).read()", str(m.path / "before-stop"),
                                        uid=0, gid=0) == errno.EACCES,
                   deadline_s=10, interval_s=0.2)
    finally:
        set_fs_status(srv, fs.fs_id, "Running")
    wait_until("the file system to serve again",
               lambda: errno_as_uid("assert open(a[0]).read() == 'kept'", str(m.path / "before-stop"),
                                    uid=0, gid=0) == 0,
               deadline_s=10, interval_s=0.2)
