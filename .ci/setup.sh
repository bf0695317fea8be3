#!/usr/bin/env bash
# Install and start what the test suites need, on Debian 12, as root.
#
#   bash .ci/setup.sh
#
# Idempotent: every step checks first and only acts when something is
# missing, so running it twice is cheap and safe.  It prints each action and
# exits non-zero on the first failure.
#
# What it does:
#   1. apt-get install the Debian packages that are missing;
#   2. a Python venv at <repo>/.venv with the pinned official Alibaba Cloud
#      SDKs, pytest (for tests/sdk and tests/billing) and schemathesis
#      (tests/schema);
#   3. npm ci in tests/sdk/node (pop-core, pinned by package-lock.json) and
#      in console/ (the web console's front-end packages);
#   4. a PostgreSQL server on 127.0.0.1:55432 with database cpfs_test, for the
#      PostgreSQL variant of the tests (CPFS_TEST_DATABASE_URL).
#
# Environment:
#   CPFS_PG_DIR      where the test cluster lives (default /tmp/cpfs-ci-pg)
#   CPFS_PG_PORT     its port (default 55432)
#   CPFS_SKIP_PG=1   skip step 4
#   PYTHON           interpreter used to create the venv (default python3)

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { printf '[setup] %s\n' "$*"; }
run() { printf '[setup] + %s\n' "$*"; "$@"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "run me as root (apt-get and runuser need it)"
fi

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
APT_PACKAGES=(
    postgresql          # server + client tools (initdb, pg_ctl, pg_isready, psql)
    openssl             # tests/sdk makes a self-signed certificate with the CLI
    fuse3               # tests/dataplane: fusermount3 (mount/unmount FUSE)
    fio                 # tests/dataplane: write + verify workloads
    rsync               # tests/dataplane: tree copies
    git                 # tests/dataplane: a repository on the mount
    bindfs              # tests/dataplane: a FUSE reference to check the POSIX tests
    slapd               # tests/dataplane: a real OpenLDAP server (own config, loopback port)
    ldap-utils          # tests/dataplane: ldapadd seeds its users and groups
    chromium            # tests/dataplane/test_console.py: the web console in headless Chromium
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

PYTHON="${PYTHON:-python3}"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done
# Tools that are normally already on the machine image; fall back to
# Debian's packages only when they are absent.
command -v "$PYTHON" >/dev/null 2>&1 || { missing+=(python3 python3-venv); PYTHON=python3; }
if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm  >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update
    run apt-get install -y --no-install-recommends "${missing[@]}"
else
    say "Debian packages present: ${APT_PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------
# 2. Python venv with the official SDKs
# ---------------------------------------------------------------------------
PY_PINS=(
    aliyun-python-sdk-core==2.16.1
    aliyun-python-sdk-nas==3.14.5
    alibabacloud-tea-openapi==0.4.6
    alibabacloud-nas20170626==3.7.5
    alibabacloud-bssopenapi20171214==5.1.2
    alibabacloud-credentials==1.0.12
    darabonba-core==1.0.9
    pytest==9.2.0
    schemathesis==4.32.5    # tests/schema: generated, signed requests against openapi/
    playwright==1.65.2      # tests/dataplane/test_console.py drives Debian's chromium (no browser download)
)
VENV="$REPO/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    run "$PYTHON" -m venv "$VENV"
else
    say "venv exists: .venv"
fi
if "$VENV/bin/python" - "${PY_PINS[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name} (have {have}, want {want})")
if bad:
    print("[setup] venv needs: " + ", ".join(bad))
    sys.exit(1)
EOF
then
    say "Python packages already at their pins"
else
    run "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PY_PINS[@]}"
fi

# ---------------------------------------------------------------------------
# 3. Node packages for tests/sdk/node
# ---------------------------------------------------------------------------
NODE_DIR="$REPO/tests/sdk/node"
if [ -f "$NODE_DIR/package.json" ]; then
    have_popcore="$(cd "$NODE_DIR" && node -p "require('@alicloud/pop-core/package.json').version" 2>/dev/null || true)"
    if [ "$have_popcore" = "1.8.0" ] && [ -f "$NODE_DIR/node_modules/.package-lock.json" ] \
        && [ ! "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]; then
        say "node_modules up to date (@alicloud/pop-core $have_popcore)"
    elif [ -f "$NODE_DIR/package-lock.json" ]; then
        (cd "$NODE_DIR" && run npm ci --no-audit --no-fund)
    else
        (cd "$NODE_DIR" && run npm install --no-audit --no-fund)
    fi
else
    die "tests/sdk/node/package.json is missing"
fi

# ---------------------------------------------------------------------------
# 3b. The web console's front-end packages (console/), which
#     `node console/build.mjs --check` compares with the copies committed
#     under console/app/vendor
# ---------------------------------------------------------------------------
CONSOLE_DIR="$REPO/console"
if [ -f "$CONSOLE_DIR/node_modules/.package-lock.json" ] \
    && [ ! "$CONSOLE_DIR/package-lock.json" -nt "$CONSOLE_DIR/node_modules/.package-lock.json" ]; then
    say "console node_modules up to date"
else
    (cd "$CONSOLE_DIR" && run npm ci --no-audit --no-fund)
fi

# ---------------------------------------------------------------------------
# 4. PostgreSQL for the tests
# ---------------------------------------------------------------------------
PG_PORT="${CPFS_PG_PORT:-55432}"
PG_DIR="${CPFS_PG_DIR:-/tmp/cpfs-ci-pg}"
PG_URL="postgres://postgres@127.0.0.1:${PG_PORT}/cpfs_test"

if [ "${CPFS_SKIP_PG:-0}" = "1" ]; then
    say "CPFS_SKIP_PG=1: not starting PostgreSQL"
    exit 0
fi

# Debian keeps the server binaries out of PATH; take the newest installed.
PG_BIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [ -x "$d/initdb" ] && PG_BIN="$d"
done
[ -n "$PG_BIN" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
id postgres >/dev/null 2>&1 || die "user postgres does not exist (package postgresql should create it)"

# Everything run as postgres starts from a directory it can read.
as_pg() { (cd / && runuser -u postgres -- "$@"); }
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }

if pg_ready; then
    say "PostgreSQL already answering on 127.0.0.1:$PG_PORT"
else
    PGDATA="$PG_DIR/data"
    run mkdir -p "$PG_DIR"
    run chown postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        say "creating a cluster in $PGDATA"
        # An interrupted earlier initdb may have left a partial directory.
        rm -rf "$PGDATA"
        say "+ initdb -D $PGDATA -U postgres -A trust -E UTF8 --locale=C.UTF-8"
        as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" \
            || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    else
        say "cluster exists in $PGDATA"
    fi
    # Loopback only, trust for 127.0.0.1 (initdb -A trust already wrote it;
    # kept explicit so a reused cluster is fixed up too).
    if ! grep -q '^host[[:space:]]\+all[[:space:]]\+all[[:space:]]\+127.0.0.1/32[[:space:]]\+trust' "$PGDATA/pg_hba.conf"; then
        run as_pg sh -c "echo 'host all all 127.0.0.1/32 trust' >> '$PGDATA/pg_hba.conf'"
    fi
    # A postmaster.pid left by a server that is gone (machine restarted, or
    # the pid now belongs to something else) would stop the start.
    if [ -f "$PGDATA/postmaster.pid" ]; then
        old_pid="$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
        if [ -z "$old_pid" ] || [ "$(cat "/proc/$old_pid/comm" 2>/dev/null || true)" != "postgres" ]; then
            say "removing stale $PGDATA/postmaster.pid (pid '$old_pid' is not a postgres)"
            rm -f "$PGDATA/postmaster.pid"
        fi
    fi
    run as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_DIR/server.log" -W \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off" start
    say "waiting for PostgreSQL with pg_isready (up to 60 s)"
    deadline=$((SECONDS + 60))
    until pg_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$PG_DIR/server.log" >&2 || true
            die "PostgreSQL did not become ready on 127.0.0.1:$PG_PORT"
        fi
        sleep 0.5
    done
    say "PostgreSQL ready on 127.0.0.1:$PG_PORT"
fi

PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
if [ "$("${PSQL[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'cpfs_test'")" = "1" ]; then
    say "database cpfs_test exists"
else
    run "${PSQL[@]}" -c "CREATE DATABASE cpfs_test"
fi

# Every test makes a database of its own and leaves it (a failed test's
# is there to look at); those of earlier runs are dropped here, or they
# fill the disk of a machine that runs the tests day after day. One in use
# (a run going on beside this one) is refused by PostgreSQL and kept.
stale="$("${PSQL[@]}" -tAc "SELECT datname FROM pg_database WHERE datname ~ '^cpfs_(cp|bill|schema|t|bss|dp|sdk|meta_[0-9a-f]+)_[0-9a-f]+$'")"
if [ -n "$stale" ]; then
    dropped=0
    for db in $stale; do
        if "${PSQL[@]}" -c "DROP DATABASE \"$db\"" 2>/dev/null; then
            dropped=$((dropped + 1))
        fi
    done
    say "dropped $dropped test databases left by earlier runs"
fi

say "done. For the PostgreSQL variant of the tests:"
echo "export CPFS_TEST_DATABASE_URL=$PG_URL"
