#!/usr/bin/env bash
# What the PostgreSQL journal's log is worth to PostgreSQL, apart from the
# rest of the service: pgbench, alternately, ROUNDS times, of
#   rows   a create as the journal wrote it before the log: BEGIN, the owner
#          row FOR SHARE, five guarded row statements, COMMIT, pipelined;
#   log    a create as the journal commits it now: one guarded log row;
#   fold   the fold of 100 creates in one transaction, a set-based statement
#          per table (the rows' share per create is a hundredth);
#   fold1  the same fold with one statement per row, as the folder sends it.
# PostgreSQL's CPU per transaction is the machine's busy time during the
# run less pgbench's own (so run it on an idle machine).
#
#   bench/pg/journal-log.sh [ROUNDS]
#
# Needs the PostgreSQL of .ci/setup.sh (CPFS_PG_PORT, default 55432); uses
# and drops a scratch database `cpfs_bench_log`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROUNDS=${1:-2}
PORT=${CPFS_PG_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PSQL="$BIN/psql -X -q -h 127.0.0.1 -p $PORT -U postgres"
DB=cpfs_bench_log
TMP=$(mktemp -d)
trap '$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null; rm -rf "$TMP"' EXIT
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
$PSQL -d $DB <<'SQL' >/dev/null
CREATE TABLE meta_assignments (fs_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, epoch BIGINT NOT NULL, since_ms BIGINT NOT NULL);
INSERT INTO meta_assignments VALUES ('fs-1', 'a', 1, 0);
CREATE TABLE inodes (fs_id TEXT NOT NULL, ino BIGINT NOT NULL, kind BIGINT, perm BIGINT, uid BIGINT, gid BIGINT, nlink BIGINT, size BIGINT, atime_ns BIGINT, mtime_ns BIGINT, ctime_ns BIGINT, rdev BIGINT, parent BIGINT, target BYTEA, chunk_size BIGINT, chains TEXT, stored BIGINT, PRIMARY KEY (fs_id, ino));
INSERT INTO inodes VALUES ('fs-1', 1, 2, 493, 0, 0, 2, 0, 0, 0, 0, 0, 0, NULL, 1048576, '', 0);
CREATE TABLE dentries (fs_id TEXT NOT NULL, parent BIGINT NOT NULL, name BYTEA NOT NULL, ino BIGINT NOT NULL, kind BIGINT NOT NULL, PRIMARY KEY (fs_id, parent, name));
CREATE TABLE fs_counters (fs_id TEXT PRIMARY KEY, next_ino BIGINT NOT NULL, used_bytes BIGINT NOT NULL, files BIGINT NOT NULL);
INSERT INTO fs_counters VALUES ('fs-1', 1, 0, 0);
CREATE TABLE meta_requests (fs_id TEXT NOT NULL, client BIGINT, seq BIGINT, ino BIGINT, at BIGINT, PRIMARY KEY (fs_id, client, seq));
CREATE TABLE meta_log (seq BIGSERIAL PRIMARY KEY, fs_id TEXT NOT NULL, epoch BIGINT, body BYTEA NOT NULL);
CREATE INDEX meta_log_by_fs ON meta_log (fs_id, seq);
SQL
G="WHERE EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = 'fs-1' AND a.epoch = 1)"
cat >"$TMP/rows.sql" <<SQL
\set ino random(2, 1000000000)
\startpipeline
BEGIN;
SELECT fs_id, epoch FROM meta_assignments WHERE fs_id = ANY('{fs-1}') FOR SHARE;
INSERT INTO inodes SELECT 'fs-1', :ino, 1, 420, 0, 0, 1, 0, 5, 5, 5, 0, 1, NULL, 1048576, '[0]', 0 $G ON CONFLICT (fs_id, ino) DO UPDATE SET nlink = excluded.nlink;
INSERT INTO inodes SELECT 'fs-1', 1, 2, 493, 0, 0, 2, 0, 6, 6, 6, 0, 0, NULL, 1048576, '', 0 $G ON CONFLICT (fs_id, ino) DO UPDATE SET mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns;
INSERT INTO dentries SELECT 'fs-1', 1, int8send(:ino), :ino, 1 $G ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino;
UPDATE fs_counters SET next_ino = :ino, files = files + 1 WHERE fs_id = 'fs-1' AND EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = 'fs-1' AND a.epoch = 1);
INSERT INTO meta_requests SELECT 'fs-1', 7, :ino, :ino, 5 $G ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino;
COMMIT;
\endpipeline
SQL
cat >"$TMP/log.sql" <<'SQL'
INSERT INTO meta_log (fs_id, epoch, body) SELECT 'fs-1', 1, convert_to(repeat('x', 300), 'UTF8') WHERE EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = 'fs-1' AND a.epoch = 1 FOR SHARE);
SQL
cat >"$TMP/fold.sql" <<'SQL'
\set base random(1000000001, 9000000000)
BEGIN;
SELECT fs_id, epoch FROM meta_assignments WHERE fs_id = 'fs-1' FOR SHARE;
INSERT INTO inodes SELECT 'fs-1', :base::bigint + g, 1, 420, 0, 0, 1, 0, 5, 5, 5, 0, 1, NULL, 1048576, '[0]', 0 FROM generate_series(1, 100) g ON CONFLICT (fs_id, ino) DO UPDATE SET nlink = excluded.nlink;
INSERT INTO dentries SELECT 'fs-1', 1, int8send(:base::bigint + g), :base::bigint + g, 1 FROM generate_series(1, 100) g ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino;
INSERT INTO meta_requests SELECT 'fs-1', 8, :base::bigint + g, :base::bigint + g, 5 FROM generate_series(1, 100) g ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino;
UPDATE inodes SET mtime_ns = 7 WHERE fs_id = 'fs-1' AND ino = 1;
UPDATE fs_counters SET files = files + 100 WHERE fs_id = 'fs-1';
DELETE FROM meta_log WHERE fs_id = 'fs-1' AND seq <= (SELECT MIN(seq) + 99 FROM meta_log);
COMMIT;
SQL
{
  echo '\set base random(1000000001, 9000000000)'
  echo '\startpipeline'
  echo 'BEGIN;'
  echo "SELECT fs_id, epoch FROM meta_assignments WHERE fs_id = ANY('{fs-1}') FOR SHARE;"
  for i in $(seq 100); do
    echo "INSERT INTO inodes SELECT 'fs-1', :base::bigint + $i, 1, 420, 0, 0, 1, 0, 5, 5, 5, 0, 1, NULL, 1048576, '[0]', 0 $G ON CONFLICT (fs_id, ino) DO UPDATE SET nlink = excluded.nlink;"
    echo "INSERT INTO dentries SELECT 'fs-1', 1, int8send(:base::bigint + $i), :base::bigint + $i, 1 $G ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino;"
    echo "INSERT INTO meta_requests SELECT 'fs-1', 9, :base::bigint + $i, 1, 5 $G ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino;"
  done
  echo "UPDATE inodes SET mtime_ns = 7 WHERE fs_id = 'fs-1' AND ino = 1;"
  echo "UPDATE fs_counters SET files = files + 100 WHERE fs_id = 'fs-1';"
  echo "DELETE FROM meta_log WHERE fs_id = 'fs-1' AND seq <= (SELECT MIN(seq) + 99 FROM meta_log);"
  echo 'COMMIT;'
  echo '\endpipeline'
} >"$TMP/fold1.sql"

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
# run SCRIPT TRANSACTIONS: PostgreSQL's CPU µs per transaction
run() {
  local b0 b1
  b0=$(busy)
  /usr/bin/time -f "%U %S" -o "$TMP/time" "$BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -n \
    -M prepared -t "$2" -f "$TMP/$1.sql" $DB >"$TMP/out" 2>&1
  b1=$(busy)
  python3 - "$b0" "$b1" "$(cat "$TMP/time")" "$2" "$(getconf CLK_TCK)" <<'PY'
import sys
b0, b1, t, n, hz = sys.argv[1:]
u, s = map(float, t.split())
print(f"{((int(b1) - int(b0)) / int(hz) - u - s) / int(n) * 1e6:.0f}")
PY
}
echo "| round | rows: µs per create | log row: µs | fold of 100, set-based: µs per create | fold of 100, a statement per row: µs per create |"
echo "|---:|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  a=$(run rows 5000)
  b=$(run log 5000)
  c=$(run fold 200)
  d=$(run fold1 200)
  echo "| $r | $a | $b | $((c / 100)) | $((d / 100)) |"
done
