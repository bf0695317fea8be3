#!/usr/bin/env bash
# bench/load.sh — 64 concurrent API clients x 10,000 signed requests each (a
# mix of the Describe calls) against a real `cpfs serve`;
# fails on any error reply or when the server's resident memory after the
# run exceeds what it was after a warm-up by more than the bound. Writes
# bench/results/<UTC date>-load.md. The test command runs the same test
# (tests/load.rs) with 8 x 500 and a 16 MiB bound.
#
#   bench/load.sh
#   CLIENTS=16 REQUESTS=2000 bench/load.sh
#
# Environment knobs:
#   CLIENTS        concurrent clients, each its own keep-alive connection (64)
#   REQUESTS       requests per client (10000)
#   RSS_BOUND_MIB  allowed growth of the server's RSS over the run (64): the
#                  replay-protection nonces alone keep about 40 bytes per
#                  request for 31 minutes (25 MiB for 640,000 requests), by
#                  design; more than that is a leak
#   PROFILE        debug (default: the build the test command made, no
#                  extra compile) or release
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLIENTS="${CLIENTS:-64}"
REQUESTS="${REQUESTS:-10000}"
RSS_BOUND_MIB="${RSS_BOUND_MIB:-64}"
PROFILE="${PROFILE:-debug}"
DATE="$(date -u +%Y-%m-%d)"
REPORT="bench/results/${DATE}-load.md"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

flags=()
[ "$PROFILE" = "release" ] && flags+=(--release)
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
set +e
CPFS_LOAD_CLIENTS="$CLIENTS" CPFS_LOAD_REQUESTS="$REQUESTS" CPFS_LOAD_RSS_BOUND_MIB="$RSS_BOUND_MIB" \
    CPFS_LOAD_REPORT="$OUT" cargo test "${flags[@]}" --test load -- --nocapture
rc=$?
set -e
mkdir -p bench/results
{
    echo "# API load, $DATE"
    echo
    echo "\`bench/load.sh\`: $CLIENTS clients x $REQUESTS signed V1 requests (DescribeFileSystems,"
    echo "DescribeMountTargets, DescribeAccessGroups, DescribeAccessRules, DescribeRegions,"
    echo "DescribeZones, ListTagResources in rotation) against \`cpfs serve\` ($PROFILE build,"
    echo "SQLite, 3 data nodes, --rate-limit 1000000 so the per-key limit is not what is measured),"
    echo "on $(nproc) cores; load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "The server's RSS is read from /proc/PID/status after a warm-up (a tenth of the requests"
    echo "at the same concurrency) and after the run; the bound is $RSS_BOUND_MIB MiB."
    echo
    echo "Result: $([ "$rc" -eq 0 ] && echo pass || echo "FAIL (exit $rc)")"
    echo
    echo '```json'
    cat "$OUT" 2>/dev/null || echo '{"error": "the test wrote no numbers; see its output"}'
    echo
    echo '```'
} >"$REPORT"
echo "report: $REPORT"
exit "$rc"
