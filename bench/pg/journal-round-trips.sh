#!/usr/bin/env bash
# What one round trip per journal commit is worth on PostgreSQL, apart from
# the rest of the service: pgbench runs a create-shaped batch (the owner's
# epoch FOR SHARE, three row upserts, the counters update) as separate
# prepared statements in a transaction (how the journal wrote before) and
# as one simple-query message with every change guarded by the epoch (how
# the journal wrote from 2026-12-03 to 2026-12-05; it now pipelines
# prepared statements, `meta/src/journal/pg_pipeline.rs`), alternately,
# ROUNDS times.
#
#   bench/pg/journal-round-trips.sh [ROUNDS]
#
# Needs the PostgreSQL of .ci/setup.sh (CPFS_PG_PORT, default 55432); uses
# and drops a scratch database `cpfs_bench_journal`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROUNDS=${1:-3}
PORT=${CPFS_PG_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PGB="$BIN/pgbench -h 127.0.0.1 -p $PORT -U postgres -n -t 3000"
PSQL="$BIN/psql -X -q -h 127.0.0.1 -p $PORT -U postgres"
DB=cpfs_bench_journal
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap '$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB"' EXIT
$PSQL -d $DB <<'SQL'
CREATE TABLE meta_assignments (fs_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, epoch BIGINT NOT NULL, since_ms BIGINT NOT NULL);
INSERT INTO meta_assignments VALUES ('fs-1', 'a', 1, 0);
CREATE TABLE dentries (fs_id TEXT NOT NULL, parent BIGINT NOT NULL, name BYTEA NOT NULL, ino BIGINT NOT NULL, kind BIGINT NOT NULL, PRIMARY KEY (fs_id, parent, name));
CREATE TABLE fs_counters (fs_id TEXT PRIMARY KEY, next_ino BIGINT NOT NULL, used_bytes BIGINT NOT NULL, files BIGINT NOT NULL);
INSERT INTO fs_counters VALUES ('fs-1', 1, 0, 0);
SQL
tps() { grep -oE 'tps = [0-9.]+' | cut -d' ' -f3; }
echo "| round | statements, tps | one message, tps | ratio |"
echo "|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  a=$($PGB -M prepared -f journal-statements.sql $DB 2>&1 | tps)
  b=$($PGB -M simple -f journal-one-message.sql $DB 2>&1 | tps)
  echo "| $r | ${a%.*} | ${b%.*} | $(python3 -c "print(f'{$b/$a:.2f}')") |"
done
