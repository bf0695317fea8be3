"""A real OpenLDAP `slapd` for the tests: its own configuration and database in a
temporary directory, on a free loopback port, seeded with POSIX users and groups.

Debian's `slapd` package provides the daemon, the schemas and the mdb backend
module; `ldap-utils` provides `ldapadd`. Nothing here touches the system's own
slapd configuration.
"""

import glob
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUFFIX = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "cpfs-test-admin"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
START_DEADLINE_S = 20.0


@dataclass
class User:
    name: str
    uid: int
    gid: int


@dataclass
class Group:
    name: str
    gid: int
    members: list = field(default_factory=list)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _module_dir():
    """Where Debian installs back_mdb (multiarch or not)."""
    for d in ["/usr/lib/ldap", *sorted(glob.glob("/usr/lib/*/ldap"))]:
        if glob.glob(os.path.join(d, "back_mdb*")):
            return d
    raise RuntimeError("slapd's back_mdb module not found; install Debian's slapd package")


def _schema_dir():
    for d in ["/etc/ldap/schema", "/etc/openldap/schema"]:
        if os.path.exists(os.path.join(d, "nis.schema")):
            return d
    raise RuntimeError("OpenLDAP schemas (nis.schema) not found; install Debian's slapd package")


class Slapd:
    """slapd on 127.0.0.1:<port>; stop() and start() keep the database."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self.workdir / "db"
        self.db.mkdir(exist_ok=True)
        self.port = _free_port()
        self.proc = None
        schema = _schema_dir()
        includes = "\n".join(f"include {schema}/{s}.schema"
                             for s in ("core", "cosine", "nis", "inetorgperson"))
        (self.workdir / "slapd.conf").write_text(f"""{includes}
pidfile {self.workdir}/slapd.pid
modulepath {_module_dir()}
moduleload back_mdb
database mdb
maxsize 67108864
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {self.db}
""")

    @property
    def uri(self):
        return f"ldap://127.0.0.1:{self.port}"

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self):
        log = open(self.workdir / "slapd.log", "ab")
        # -d 0: stay in the foreground (so we own the process), log nothing.
        self.proc = subprocess.Popen(
            ["slapd", "-f", str(self.workdir / "slapd.conf"), "-h", f"{self.uri}/", "-d", "0"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_DEADLINE_S
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'slapd.log').read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("slapd did not accept connections in time")
            time.sleep(0.05)

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None
        deadline = time.monotonic() + START_DEADLINE_S
        while self._answers() and time.monotonic() < deadline:
            time.sleep(0.05)

    def add(self, ldif):
        r = subprocess.run(["ldapadd", "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
                           input=ldif, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ldapadd failed ({r.returncode}): {r.stderr}")

    def seed(self, users, groups):
        entries = [f"""dn: {SUFFIX}
objectClass: top
objectClass: dcObject
objectClass: organization
o: CPFS tests
dc: example
""", f"""dn: {PEOPLE}
objectClass: organizationalUnit
ou: people
""", f"""dn: {GROUPS}
objectClass: organizationalUnit
ou: groups
"""]
        for u in users:
            entries.append(f"""dn: uid={u.name},{PEOPLE}
objectClass: account
objectClass: posixAccount
uid: {u.name}
cn: {u.name}
uidNumber: {u.uid}
gidNumber: {u.gid}
homeDirectory: /home/{u.name}
""")
        for g in groups:
            members = "".join(f"memberUid: {m}\n" for m in g.members)
            entries.append(f"""dn: cn={g.name},{GROUPS}
objectClass: posixGroup
cn: {g.name}
gidNumber: {g.gid}
{members}""")
        self.add("\n".join(entries))


def start_slapd(workdir, users, groups):
    d = Slapd(workdir)
    d.start()
    try:
        d.seed(users, groups)
    except BaseException:
        d.stop()
        raise
    return d
