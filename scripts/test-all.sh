#!/usr/bin/env bash
# Every test of the project, from a fresh clone: installs what the tests
# need (idempotently), then runs formatting and lint checks, the unit and
# integration tests on SQLite and on PostgreSQL (a small API load test
# among them), the official-SDK compatibility suite, schemathesis against
# openapi/ and the data-plane suites. The fuzz targets' seeds, corpus and
# crash inputs are replayed by `cargo test --workspace` (the fuzz crate is
# a member; bench/fuzz.sh is what fuzzes). This is the command the README
# and .ci/run name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each step says when it started and how many seconds the run has taken,
# so a slow step shows in the log.
step() { printf '\n==> [%s, %ss] %s\n' "$(date -u +%T)" "$SECONDS" "$*"; }

step "installing test dependencies (.ci/setup.sh)"
bash .ci/setup.sh
PG_URL="postgres://postgres@127.0.0.1:${CPFS_PG_PORT:-55432}/cpfs_test"

step "formatting, lints, OpenAPI description, crate structure, console packages"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
python3 openapi/build.py --check
python3 scripts/check_structure.py
# The console's vendored packages are what package-lock.json pins.
node console/build.mjs --check

step "unit and integration tests on SQLite"
cargo test --workspace

# What follows runs in two lanes at once: the suites spend much of their
# time waiting (for processes to start, leases to lapse, a mount to
# answer), so on two cores the pair takes about the time of the longer lane
# instead of the sum. Every suite starts its own servers on free ports and
# its own databases, so the lanes share nothing but the PostgreSQL server;
# the two FUSE passes run one after the other in their lane.
# Each lane writes a log, shown whole when the lane ends.
LOGS="$(mktemp -d)"

api_lane() {
  step "the Rust tests on PostgreSQL"
  CPFS_TEST_DATABASE_URL="$PG_URL" CPFS_REQUIRE_POSTGRES=1 cargo test --workspace

  step "official SDK compatibility suite (SQLite, then PostgreSQL)"
  # `cargo test` built target/debug/cpfs for the integration tests; building
  # it again with `cargo build` would unify features without the
  # dev-dependencies and recompile much of the tree for nothing.
  test -x target/debug/cpfs
  .venv/bin/pytest -q tests/sdk
  CPFS_TEST_DATABASE_URL="$PG_URL" .venv/bin/pytest -q tests/sdk

  step "generated, signed requests against openapi/ (schemathesis, SQLite)"
  # At least 1,000 requests over every operation of nas.json and
  # bssopenapi.json: no 5xx, documented statuses, replies match the schema.
  .venv/bin/pytest -q tests/schema

  step "billing with the official BssOpenApi SDK (SQLite, then PostgreSQL)"
  .venv/bin/pytest -q tests/billing
  CPFS_TEST_DATABASE_URL="$PG_URL" .venv/bin/pytest -q tests/billing
}

fuse_lane() {
  step "POSIX, data and fio tests on a real FUSE mount (SQLite)"
  .venv/bin/pytest -q tests/dataplane

  step "the POSIX, restart, availability, quota, access point and fencing suites on PostgreSQL"
  # All but the 100,000-entry directory, which the SQLite pass runs: its
  # listing is served from the metadata server's memory alike on both
  # stores, and on PostgreSQL its 100,000 creates one after another (each
  # waiting for its commit) took five of this run's minutes.
  CPFS_TEST_DATABASE_URL="$PG_URL" .venv/bin/pytest -q tests/dataplane/test_posix.py \
    tests/dataplane/test_restart.py tests/dataplane/test_availability.py \
    tests/dataplane/test_fileset_quotas.py tests/dataplane/test_access_points.py \
    tests/dataplane/test_fencing.py tests/dataplane/test_statistics.py \
    --deselect tests/dataplane/test_posix.py::test_directory_of_100000_entries
}

step "two lanes: Rust tests on PostgreSQL, SDK, schema and billing suites | FUSE suites on SQLite, then on PostgreSQL (logs in $LOGS)"
api_lane >"$LOGS/api.log" 2>&1 &
api_pid=$!
fuse_lane >"$LOGS/fuse.log" 2>&1 &
fuse_pid=$!
failed=0
for lane in fuse api; do
  pid_var="${lane}_pid"
  if wait "${!pid_var}"; then rc=0; else rc=$?; fi
  step "lane '$lane' ended with status $rc; its log:"
  cat "$LOGS/$lane.log"
  [ "$rc" -eq 0 ] || failed=1
done
if [ "$failed" -ne 0 ]; then
  step "a lane failed (see its log above)"
  exit 1
fi

step "all tests passed"
