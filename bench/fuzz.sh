#!/usr/bin/env bash
# bench/fuzz.sh — run every cargo-fuzz target in fuzz/ for a while each and
# write a Markdown report to bench/results/<UTC date>-fuzz.md. Not part of
# the test command (scripts/test-all.sh only replays the seeds and corpus,
# `cargo test -p cpfs-fuzz`, part of `cargo test --workspace`).
#
#   bench/fuzz.sh                      # every target, 10 minutes each
#   FUZZ_MINUTES=2 bench/fuzz.sh       # shorter
#   TARGETS="v1_claim params" bench/fuzz.sh
#
# Targets (fuzz/src/lib.rs): v1_claim and v3_claim (signature claims and
# their verification, api/src/signature/), params (form decoding, Params and
# every action's parameter parser, api/src/params.rs), node_frame and
# meta_frame (frames of the data-node and metadata protocols decoded as a
# listener does, proto/src/frame.rs, into NodeRequest / MetaRequest).
#
# Needs the nightly toolchain (`rustup toolchain list`: cargo-fuzz builds
# with -Z sanitizer flags) and cargo-fuzz, which it installs from crates.io
# when missing (`cargo install cargo-fuzz --locked`). Without nightly it
# stops and says so; `cargo test -p cpfs-fuzz` still replays the seeds on stable.
#
# Environment knobs:
#   FUZZ_MINUTES   minutes per target (default 10)
#   TARGETS        subset of the targets (default: all five)
#   FUZZ_JOBS      parallel fuzzing processes per target (default 1)
#   SANITIZER      none (default: the code under test is safe Rust, so what
#                  there is to find is panics, aborts, overflows (debug
#                  assertions are on), time-outs and allocation beyond the
#                  limits below) or address (AddressSanitizer, slower)
#   RSS_LIMIT_MB   libFuzzer's -rss_limit_mb (default 2048): an input that
#                  makes a target use more is a failure
#   MALLOC_LIMIT_MB  libFuzzer's -malloc_limit_mb (default 512): one
#                  allocation larger than this is a failure (unbounded
#                  allocation from a length prefix shows up here)
#   CARGO_TARGET_DIR  where cargo-fuzz builds (default: the workspace's target/,
#                  under the target triple's own directory)
#   SEED_TARGET_DIR   where the stable seed writer builds (default target,
#                  the test command's)
#
# Corpus: fuzz/corpus/<target> (kept between runs, git-ignored), started
# from the seeds fuzz/examples/write_seeds.rs writes. Crashes land in
# fuzz/artifacts/<target>; `cargo test -p cpfs-fuzz` replays both, so a crash
# stays a failing test of the test command until it is fixed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"

FUZZ_MINUTES="${FUZZ_MINUTES:-10}"
TARGETS="${TARGETS:-v1_claim v3_claim params node_frame meta_frame}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
SANITIZER="${SANITIZER:-none}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
MALLOC_LIMIT_MB="${MALLOC_LIMIT_MB:-512}"
SEED_TARGET_DIR="${SEED_TARGET_DIR:-target}"
DATE="$(date -u +%Y-%m-%d)"
REPORT="bench/results/${DATE}-fuzz.md"
LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT

say() { printf '[fuzz] %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "the nightly toolchain is not installed: cargo-fuzz needs it (rustup toolchain install nightly)."
    say "On stable, 'cargo test -p cpfs-fuzz' replays the seeds and corpus."
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

say "writing the seeds"
# On stable in the workspace's target directory: the test command built the
# same crate graph there (the fuzz crate's replay tests), so this compiles
# next to nothing.
CARGO_TARGET_DIR="$SEED_TARGET_DIR" cargo run -q -p cpfs-fuzz --example write_seeds -- "$LOGDIR/seeds"

say "building the targets (sanitizer: $SANITIZER)"
for t in $TARGETS; do
    (cd fuzz && cargo +nightly fuzz build --features libfuzzer -s "$SANITIZER" "$t")
done

declare -A RUNS EXECS COV CRASH RSS
status=0
for t in $TARGETS; do
    mkdir -p "fuzz/corpus/$t"
    before="$(find "fuzz/corpus/$t" -type f | wc -l)"
    say "$t: ${FUZZ_MINUTES} min"
    set +e
    (cd fuzz && cargo +nightly fuzz run --features libfuzzer -s "$SANITIZER" "$t" "corpus/$t" "$LOGDIR/seeds/$t" -- \
        -max_total_time=$((FUZZ_MINUTES * 60)) -rss_limit_mb="$RSS_LIMIT_MB" \
        -malloc_limit_mb="$MALLOC_LIMIT_MB" -jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS" \
        -print_final_stats=1) >"$LOGDIR/$t.log" 2>&1
    rc=$?
    set -e
    after="$(find "fuzz/corpus/$t" -type f | wc -l)"
    # libFuzzer's final statistics (one set per job).
    EXECS[$t]="$(grep -h 'stat::number_of_executed_units' "$LOGDIR/$t.log" fuzz/fuzz-*.log 2>/dev/null | awk '{s+=$2} END {print s+0}')"
    RSS[$t]="$(grep -h 'stat::peak_rss_mb' "$LOGDIR/$t.log" fuzz/fuzz-*.log 2>/dev/null | awk '{if ($2>m) m=$2} END {print m+0}')"
    COV[$t]="$(grep -ho 'cov: [0-9]*' "$LOGDIR/$t.log" fuzz/fuzz-*.log 2>/dev/null | awk '{if ($2>m) m=$2} END {print m+0}')"
    RUNS[$t]="corpus $before -> $after"
    if [ "$rc" -eq 0 ]; then
        CRASH[$t]="none"
    else
        CRASH[$t]="exit $rc: $(grep -h -m1 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$LOGDIR/$t.log" | head -c 300)"
        status=1
        mkdir -p bench/results
        cp "$LOGDIR/$t.log" "bench/results/${DATE}-fuzz-$t.log"
    fi
    rm -f fuzz/fuzz-*.log
    say "$t: ${EXECS[$t]} executions, ${CRASH[$t]}"
done

mkdir -p bench/results
{
    echo "# Fuzzing, $DATE"
    echo
    echo "\`bench/fuzz.sh\` with FUZZ_MINUTES=$FUZZ_MINUTES, FUZZ_JOBS=$FUZZ_JOBS, sanitizer $SANITIZER,"
    echo "-rss_limit_mb=$RSS_LIMIT_MB, -malloc_limit_mb=$MALLOC_LIMIT_MB, on $(nproc) cores"
    echo "($(rustc +nightly --version), $(cargo fuzz --version)). Machine load at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| target | executions | exec/s | coverage (edges) | peak RSS MiB | corpus | crashes |"
    echo "|---|---|---|---|---|---|---|"
    for t in $TARGETS; do
        rate=$(( ${EXECS[$t]:-0} / (FUZZ_MINUTES * 60) ))
        echo "| $t | ${EXECS[$t]} | $rate | ${COV[$t]} | ${RSS[$t]} | ${RUNS[$t]} | ${CRASH[$t]} |"
    done
    echo
    echo "A crash input is in fuzz/artifacts/<target>/; replay it with"
    echo "\`cargo test -p cpfs-fuzz\` or"
    echo "\`cargo +nightly fuzz run --features libfuzzer <target> artifacts/<target>/<file>\` in fuzz/."
} >"$REPORT"
say "report: $REPORT"
exit "$status"
