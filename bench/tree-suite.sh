#!/usr/bin/env bash
# bench/tree-suite.sh DIR LABEL — the small-file workloads of the metadata
# engine issue, on one mounted target, printed in fio-suite.sh's line format
# ("LABEL JOB RATE - - -", higher is better) so bench/compare.sh reports
# them beside the fio jobs:
#
#   mdcreate4   4 processes each creating MD_FILES/4 empty files in its own
#               directory at once (ops/s over all four): does the service
#               take more than one client's creates at a time?
#   treecopy    cp -a of TREE_SRC (default /usr/include), entries/s
#   treelist    ls -lR of the copy after dropping the kernel's caches, entries/s
#   treeremove  rm -rf of the copy, entries/s
#
# A "# LABEL JOB seconds=S entries=N" line carries the wall time of each
# tree job (the issue's targets are in seconds; the rate is entries / S).
# Needs root for drop_caches (without it the list runs warm and says so).
set -euo pipefail
DIR=$1
LABEL=$2
MD_FILES=${MD_FILES:-2000}
TREE_SRC=${TREE_SRC:-/usr/include}
JOB_TIMEOUT=${JOB_TIMEOUT:-600}

log() { printf '[tree-suite %s %s] %s\n' "$LABEL" "$(date -u +%H:%M:%S)" "$*" >&2; }
drop_caches() {
  sync
  if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    echo "# $LABEL note: drop_caches not permitted; treelist ran with warm caches"
  fi
}
now() { date +%s.%N; }
rate() { python3 -c "import sys; n, s = float(sys.argv[1]), float(sys.argv[2]); print(f'{n / s:.0f}' if s > 0 else '-')" "$1" "$2"; }

WORK=$DIR/tree-suite.$$
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

log "mdcreate4: 4 x $((MD_FILES / 4)) files"
if ! timeout -k 10 "$JOB_TIMEOUT" python3 - "$WORK/md" "$MD_FILES" <<'PY' >"$WORK/create4.out"
import os, sys, time, multiprocessing as mp
base, n = sys.argv[1], int(sys.argv[2]) // 4
def creator(i, start):
    d = os.path.join(base, f"w{i}")
    os.makedirs(d, exist_ok=True)
    start.wait()
    for k in range(n):
        os.close(os.open(os.path.join(d, f"f{k:06d}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
if __name__ == "__main__":
    start = mp.Event()
    procs = [mp.Process(target=creator, args=(i, start)) for i in range(4)]
    for p in procs: p.start()
    time.sleep(0.5)  # every worker has made its directory and waits
    t0 = time.perf_counter(); start.set()
    for p in procs: p.join()
    el = time.perf_counter() - t0
    ok = all(p.exitcode == 0 for p in procs)
    print(f"{4 * n / el:.0f}" if ok else "FAIL")
PY
then
  echo "$LABEL mdcreate4 FAIL - - -"
else
  echo "$LABEL mdcreate4 $(cat "$WORK/create4.out") - - -"
fi
rm -rf "$WORK/md"

entries=$(find "$TREE_SRC" | wc -l)
run_tree() { # run_tree JOB COMMAND...
  local job=$1; shift
  local t0 t1
  t0=$(now)
  if timeout -k 10 "$JOB_TIMEOUT" "$@" >/dev/null; then
    t1=$(now)
    local s; s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$t1")
    echo "$LABEL $job $(rate "$entries" "$s") - - -"
    echo "# $LABEL $job seconds=$s entries=$entries"
  else
    echo "$LABEL $job FAIL - - -"
  fi
}
log "treecopy: cp -a $TREE_SRC ($entries entries)"
run_tree treecopy cp -a "$TREE_SRC" "$WORK/tree"
drop_caches
log "treelist: ls -lR"
run_tree treelist ls -lR "$WORK/tree"
log "treeremove: rm -rf"
run_tree treeremove rm -rf "$WORK/tree"
