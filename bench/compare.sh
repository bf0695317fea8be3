#!/usr/bin/env bash
# bench/compare.sh — run the shared fio suite on a local directory, a bindfs
# passthrough mount, a CPFS FUSE mount and MooseFS, one after the other, and
# write a Markdown report to bench/results/<UTC date>-fio.md.
#
#   CPFS_SHARED_BENCH=/path/to/shared/bench bench/compare.sh
#
# CPFS_SHARED_BENCH (required) is the directory holding fio-suite.sh and
# peer-setup.sh. Needs root (drop_caches, FUSE allow_other, MooseFS setup),
# fio, bindfs, fusermount3, curl, python3 and the repo's .venv with
# aliyunsdkcore + aliyunsdknas.
#
# What it does:
#   1. cargo build --release --bin cpfs (no-op when up to date; SKIP_BUILD=1 skips)
#   2. local:   the suite on $WORK/local
#   3. bindfs:  bindfs $WORK/bindfs-src $WORK/bindfs-mnt, the suite, unmount
#   4. cpfs:    cpfs serve (3 data nodes, R=2) with its data dir in $WORK,
#               CreateFileSystem + CreateMountTarget with the core SDK,
#               cpfs mount, the suite, unmount, stop the server
#   5. moosefs: peer-setup.sh start moosefs, trash time 0 on its root (deleted
#               files' chunks are freed, not kept 24 h on the shared disk),
#               the suite (peer-setup.sh stop on exit)
# $WORK is a fresh mktemp directory, so the local directory, the bindfs source
# and the CPFS data dir share one file system; the report records each
# target's file system and device. `uptime` and the busiest processes are
# recorded before every target, and whether a compiler / test run was going
# on while it ran. During CPFS's randread the script samples `top` and the CPU
# time of cpfs serve / the data nodes / cpfs mount.
#
# Environment knobs:
#   TARGETS      subset/order of "local bindfs cpfs moosefs" (default: all four)
#   MD_SETTLE    passed to fio-suite.sh (default 30, as the suite recommends)
#   SETTLE       seconds to sync and idle before each target (default 10)
#   QUIET_WAIT   before each target, wait up to this many seconds for the
#                machine to be >= QUIET_IDLE % (default 90) idle (default 0:
#                don't wait); useful when builds/tests come and go
#   SKIP_BUILD   1 = use the existing target/release/cpfs (or CPFS_BIN)
#   CPFS_BIN     the cpfs binary to run (default target/release/cpfs)
#   CPFS_MOUNT_ARGS  extra flags for cpfs mount (e.g. "--read-cache-mib 0")
#   CPFS_BENCH_PORT  API port for cpfs serve (default: a free port)
#   TREE         1 (default) = also run bench/tree-suite.sh (4 parallel
#                creators, cp -a / ls -lR / rm -rf of /usr/include); 0 = skip
#   KEEP_RAW     1 = keep fio's JSON under bench/results/<date>-raw/
#   KEEP_TMP     1 = keep $WORK (logs) after the run
#   REPORT       report path (default bench/results/<UTC date>-fio.md)
# Other fio-suite.sh knobs (RUNTIME, RR_REPEAT, MD_FILES, ...) pass through.
#
# Everything is torn down on exit (trap): CPFS unmounted and the server (and
# with it its data nodes) stopped, bindfs unmounted, MooseFS stopped if this
# script started it, $WORK removed. Re-running is safe; a second concurrent
# run is refused.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

if [[ -z ${CPFS_SHARED_BENCH:-} ]]; then
  echo "CPFS_SHARED_BENCH is not set: point it at the shared bench directory (the one holding fio-suite.sh and peer-setup.sh)" >&2
  exit 2
fi
SHARED=$(cd "$CPFS_SHARED_BENCH" && pwd)
SUITE=$SHARED/fio-suite.sh
PEER=$SHARED/peer-setup.sh
for f in "$SUITE" "$PEER"; do
  [[ -x $f ]] || { echo "not executable: $f (is CPFS_SHARED_BENCH right?)" >&2; exit 2; }
done
[[ $EUID -eq 0 ]] || { echo "run as root (drop_caches, FUSE allow_other, MooseFS)" >&2; exit 2; }
for c in fio bindfs fusermount3 curl python3 mountpoint top; do
  command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 2; }
done
PY=$REPO/.venv/bin/python
[[ -x $PY ]] || { echo "missing $REPO/.venv/bin/python (with aliyunsdkcore, aliyunsdknas)" >&2; exit 2; }

# one run at a time (the lock is on this script, no lock file is created)
exec 9<"${BASH_SOURCE[0]}"
flock -n 9 || { echo "another compare.sh run is in progress" >&2; exit 2; }

TARGETS=${TARGETS:-local bindfs cpfs moosefs}
export MD_SETTLE=${MD_SETTLE:-30}
SETTLE=${SETTLE:-10}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_IDLE=${QUIET_IDLE:-90}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_RAW=${KEEP_RAW:-0}
TREE=${TREE:-1}
KEEP_TMP=${KEEP_TMP:-0}
DATE=$(date -u +%Y-%m-%d)
RESULTS_DIR=$SCRIPT_DIR/results
REPORT=${REPORT:-$RESULTS_DIR/$DATE-fio.md}
CPFS_BIN=${CPFS_BIN:-$REPO/target/release/cpfs}
AK_ID=LTAIbench0000000001
AK_SECRET=benchsecret0001

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpfs-compare.XXXXXX")
LINES=$WORK/lines.txt          # every suite stdout line, all targets
TARGETS_TSV=$WORK/targets.tsv  # label dir fstype device start end rc
FAILURES=$WORK/failures.txt
SECTIONS=$WORK/sections.tsv    # title <TAB> file, extra report sections
ENVF=$WORK/env.tsv
OURPIDS=$WORK/ourpids          # pids of processes this script started
: >"$LINES"; : >"$TARGETS_TSV"; : >"$FAILURES"; : >"$SECTIONS"; : >"$ENVF"; : >"$OURPIDS"

T_START=$SECONDS
SERVE_PID= MOUNT_PID= NODE_PIDS= PORT=
BINDFS_MNT=$WORK/bindfs-mnt
CPFS_MNT=$WORK/cpfs-mnt
CPFS_DATA=$WORK/cpfs-data
MFS_DIR=
MFS_STARTED_HERE=0
SAMPLER_PID=
WATCH_PID=

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { log "FAILURE: $*"; printf '%s\n' "$*" >>"$FAILURES"; }
envline() { printf '%s\t%s\n' "$1" "$2" >>"$ENVF"; }
section() { printf '%s\t%s\n' "$1" "$2" >>"$SECTIONS"; }
alive() { # a running (not zombie) process
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null &&
    [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

wait_gone() { # wait_gone SECONDS PID
  local end=$((SECONDS + $1))
  while alive "$2"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

stop_pid() { # stop_pid PID : TERM, wait 15 s, KILL
  alive "$1" || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait_gone 15 "$1" || { log "pid $1 ignored TERM; KILL"; kill -KILL "$1" 2>/dev/null || true; wait_gone 5 "$1" || true; }
}

fuse_unmount() { # fuse_unmount DIR
  mountpoint -q "$1" 2>/dev/null || return 0
  log "unmounting $1"
  fusermount3 -u "$1" 2>/dev/null || fusermount -u "$1" 2>/dev/null || umount "$1" 2>/dev/null ||
    { sleep 2; fusermount3 -u "$1" 2>/dev/null || umount -l "$1"; }
}

stop_cpfs() {
  fuse_unmount "$CPFS_MNT" || true
  if alive "$MOUNT_PID"; then wait_gone 10 "$MOUNT_PID" || stop_pid "$MOUNT_PID"; fi
  if alive "$SERVE_PID"; then log "stopping cpfs serve (pid $SERVE_PID)"; stop_pid "$SERVE_PID"; fi
  # the nodes die with the server (PDEATHSIG); make sure of it, by pid
  local p
  for p in $NODE_PIDS; do
    wait_gone 5 "$p" || true
    if alive "$p" && [[ $(cat "/proc/$p/comm" 2>/dev/null) == cpfs ]]; then
      log "data node $p outlived the server; stopping it"; stop_pid "$p"
    fi
  done
  MOUNT_PID= SERVE_PID= NODE_PIDS=
}

cleanup() {
  local rc=$?
  set +e
  alive "$WATCH_PID" && kill "$WATCH_PID" 2>/dev/null
  alive "$SAMPLER_PID" && kill "$SAMPLER_PID" 2>/dev/null
  stop_cpfs
  fuse_unmount "$BINDFS_MNT"
  if ((MFS_STARTED_HERE)); then log "stopping MooseFS"; "$PEER" stop moosefs; fi
  if ((KEEP_TMP)); then log "kept $WORK"; else rm -rf --one-file-system "$WORK"; fi
  log "done (exit $rc, $((SECONDS - T_START)) s)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ------------------------------------------------------------- sampling --
# Every 5 s: time, load averages, and how many compiler / test processes run
# (to tell afterwards whether a target shared the CPUs with a build).
sampler() {
  local ours n_cpfs_foreign p
  while :; do
    ours=" $(tr '\n' ' ' <"$OURPIDS") "
    n_cpfs_foreign=0
    for p in $(pgrep -x cpfs || true); do [[ $ours == *" $p "* ]] || n_cpfs_foreign=$((n_cpfs_foreign + 1)); done
    printf '%s %s %s %s %s\n' "$(date +%s)" "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(pgrep -c -x rustc || true)" "$(pgrep -c -f 'pytest|cargo-clippy|cargo test' || true)" "$n_cpfs_foreign"
    sleep 5
  done >>"$WORK/load.txt"
}

top_frame() { # second frame of a 2-frame top (the first has no interval)
  { top -b -n 2 -d "${1:-2}" -w 160 || true; } | awk -v max="${2:-20}" '/^top - /{n++} n == 2 && c++ < max'
}

cpu_ticks() { # cpu_ticks PID : utime+stime in clock ticks ("-" when gone)
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo -
}

# During CPFS's randread (4 jobs, 4 KiB, O_DIRECT): CPU time of every cpfs
# process over the whole job, plus one top frame a few seconds in.
watch_cpfs_randread() { # watch_cpfs_randread SUITE_STDERR_FILE DONE_FLAG
  local errf=$1 done=$2 out=$WORK/cpfs-randread-cpu.txt
  until grep -q '] running randread$' "$errf" 2>/dev/null; do
    [[ ! -e $done ]] || return 0   # the suite ended without a randread job
    sleep 0.2
  done
  local pids="$SERVE_PID $NODE_PIDS $MOUNT_PID" p t0 t1 c0 c1
  declare -A a
  for p in $pids; do a[$p]=$(cpu_ticks "$p"); done
  c0=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  t0=$(date +%s.%N)
  sleep 3
  top_frame 2 25 >"$WORK/cpfs-randread-top.txt"
  # until the suite moves on (its latest progress line is no longer randread's)
  while [[ $(grep -E '] (running|settling)' "$errf" 2>/dev/null | tail -n 1) == *'] running randread' ]]; do
    [[ ! -e $done ]] || break
    sleep 0.2
  done
  t1=$(date +%s.%N)
  c1=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  local hz; hz=$(getconf CLK_TCK)
  {
    printf 'window %.1f s (fio randread, first repetition, incl. ramp), CPU %% of one core:\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')"
    for p in $pids; do
      local role=node
      [[ $p == "$SERVE_PID" ]] && role="cpfs serve (API + metadata service)"
      [[ $p == "$MOUNT_PID" ]] && role="cpfs mount (FUSE client)"
      [[ $role == node ]] && role="cpfs node (data node)"
      local b; b=$(cpu_ticks "$p")
      if [[ ${a[$p]} == - || $b == - ]]; then printf '  %-36s pid %-7s gone\n' "$role" "$p"; continue; fi
      printf '  %-36s pid %-7s %6.1f %%\n' "$role" "$p" "$(awk -v x="${a[$p]}" -v y="$b" -v hz="$hz" -v a="$t0" -v e="$t1" 'BEGIN{print (y - x) * 100 / hz / (e - a)}')"
    done
    read -r busy0 all0 <<<"$c0"; read -r busy1 all1 <<<"$c1"
    printf '  %-36s %14.1f %% of %d cores busy (everything, incl. fio, kernel and other users)\n' "whole machine" \
      "$(awk -v b0="$busy0" -v b1="$busy1" -v a0="$all0" -v a1="$all1" 'BEGIN{print (b1 - b0) * 100 / (a1 - a0)}')" "$(nproc)"
  } >"$out"
}

# CPU used by processes that are not part of this benchmark between two
# snapshots: everything except this script's descendants, the processes it
# started (cpfs serve/nodes/mount), bindfs, the MooseFS daemons and kernel
# threads. Processes that both start and exit between the snapshots are missed.
procsnap() { # procsnap FILE : "pid ppid starttime ticks comm" per process
  python3 - >"$1" <<'PY'
import os
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        st = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm = st[st.index("(") + 1:st.rindex(")")].replace(" ", "_")
    f = st[st.rindex(")") + 2:].split()
    # f[0] = state (field 3); ppid = field 4, utime/stime = 14/15, starttime = 22
    print(pid, f[1], f[19], int(f[11]) + int(f[12]), comm)
PY
}

foreign_cpu() { # foreign_cpu SNAP0 SNAP1 SECONDS : "cores (top consumers)"
  python3 - "$1" "$2" "$3" "$$" "$OURPIDS" "$(getconf CLK_TCK)" <<'PY'
import sys
a, b, secs, me, ours_f, hz = sys.argv[1:7]
secs, hz = max(float(secs), 1e-9), float(hz)
def load(p):
    d = {}
    for l in open(p):
        pid, ppid, start, ticks, comm = l.split()
        d[pid] = (ppid, start, int(ticks), comm)
    return d
s0, s1 = load(a), load(b)
ours = set(open(ours_f).read().split())
parent = {p: v[0] for p, v in s0.items()}
parent.update({p: v[0] for p, v in s1.items()})
def excluded(pid, comm):
    if comm.startswith("mfs") or comm == "bindfs" or pid in ("1", "2"):
        return True
    seen = 0
    while pid not in ("0", "1") and seen < 64:
        if pid == me or pid in ours or pid == "2":
            return True
        pid = parent.get(pid, "0"); seen += 1
    return False
use = {}
for pid, (ppid, start, ticks, comm) in s1.items():
    if excluded(pid, comm):
        continue
    old = s0.get(pid)
    d = ticks - old[2] if old and old[1] == start else ticks
    if d > 0:
        use[comm] = use.get(comm, 0) + d
tot = sum(use.values()) / hz / secs
top = sorted(use.items(), key=lambda kv: -kv[1])[:4]
print(f"{tot:.2f} cores (" + ", ".join(f"{c} {t / hz / secs:.2f}" for c, t in top) + ")")
PY
}

# ------------------------------------------------------------ one target --
idle_pct() { # idle_pct : % of all CPUs idle over 2 s
  local a b
  a=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat)
  sleep 2
  b=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a, x, " "); split(b, y, " "); printf "%d\n", (y[1] - x[1]) * 100 / (y[2] - x[2] + 1e-9)}'
}

backing() { # backing PATH : "fstype device" of the file system holding PATH
  df --output=fstype,source "$1" 2>/dev/null | awk 'NR == 2 {sub("^/dev/", "", $2); print $1, $2}'
}

run_target() { # run_target LABEL DIR [BACKING_STORE_DIR]
  local label=$1 dir=$2 store=${3:-$2} rc=0 t0 t1
  local outf=$WORK/suite-$label.out errf=$WORK/suite-$label.err
  log "settling ${SETTLE}s before $label"
  sync; sleep "$SETTLE"
  if ((QUIET_WAIT > 0)); then
    local qend=$((SECONDS + QUIET_WAIT)) qt0=$SECONDS idle
    while :; do
      idle=$(idle_pct)
      ((idle >= QUIET_IDLE)) && { log "machine ${idle}% idle after $((SECONDS - qt0)) s of waiting"; break; }
      ((SECONDS < qend)) || { log "machine still only ${idle}% idle after ${QUIET_WAIT}s; running anyway"; break; }
      sleep 3
    done
    echo "waited $((SECONDS - qt0)) s for >= ${QUIET_IDLE}% idle (QUIET_WAIT=$QUIET_WAIT); last sample ${idle}% idle" >"$WORK/quiet-$label.txt"
  fi
  {
    [[ -f $WORK/quiet-$label.txt ]] && cat "$WORK/quiet-$label.txt"
    echo "\$ uptime"; uptime
    echo; echo "\$ top -b (second frame, 1 s interval), busiest processes:"; top_frame 1 15
  } >"$WORK/before-$label.txt"
  log "before $label: $(uptime)"
  local raw=()
  ((KEEP_RAW)) && raw=(RAW_DIR="$RESULTS_DIR/$DATE-raw")
  procsnap "$WORK/procs0-$label"
  t0=$(date +%s)
  local done=$WORK/suite-$label.done
  if [[ $label == cpfs ]]; then watch_cpfs_randread "$errf" "$done" & WATCH_PID=$!; fi
  log "running fio-suite on $label"
  env "${raw[@]}" "$SUITE" "$dir" "$label" >"$outf" 2> >(tee "$errf" >&2) || rc=$?
  if ((TREE)); then
    log "running tree-suite on $label"
    "$SCRIPT_DIR/tree-suite.sh" "$dir" "$label" >>"$outf" 2> >(tee -a "$errf" >&2) || rc=$?
  fi
  t1=$(date +%s)
  touch "$done"
  procsnap "$WORK/procs1-$label"
  local foreign; foreign=$(foreign_cpu "$WORK/procs0-$label" "$WORK/procs1-$label" $((t1 - t0)) 2>&1 || echo "?")
  log "$label: CPU used by other processes during the suite: $foreign"
  if [[ -n $WATCH_PID ]]; then wait "$WATCH_PID" 2>/dev/null || true; WATCH_PID=; fi
  cat "$outf"
  cat "$outf" >>"$LINES"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$dir" \
    "$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null || echo ?)" \
    "$(backing "$store")" "$t0" "$t1" "$rc" "$foreign" "$store" >>"$TARGETS_TSV"
  section "State before $label" "$WORK/before-$label.txt"
  if ((rc != 0)); then
    fail "$label: fio-suite.sh exited $rc"
    grep -E "^# $label .*(rc=|FAIL|could not)|^$label .*FAIL" "$outf" >>"$FAILURES" || true
  fi
  return 0
}

# ------------------------------------------------------------------- CPFS --
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

create_fs() { # prints the mount target domain
  "$PY" - "127.0.0.1:$PORT" "$AK_ID" "$AK_SECRET" <<'PY'
import json, sys, time, importlib
from aliyunsdkcore.client import AcsClient

endpoint, ak, secret = sys.argv[1:4]
client = AcsClient(ak, secret, "cn-hangzhou", auto_retry=False, timeout=30, connect_timeout=5)

def call(action, **params):
    mod = importlib.import_module(f"aliyunsdknas.request.v20170626.{action}Request")
    req = getattr(mod, f"{action}Request")()
    req.set_endpoint(endpoint)
    req.set_protocol_type("http")
    for k, v in params.items():
        getattr(req, "set_" + k)(v)
    return json.loads(client.do_action_with_exception(req))

def poll(what, fn, timeout=180):
    end = time.time() + timeout
    while True:
        got, last = fn()
        if got:
            return got
        if time.time() > end:
            sys.exit(f"timed out waiting for {what}; last: {last}")
        time.sleep(0.5)

# The largest tier (10,000 MB/s, 600,000 read IOPS): its QoS limits lie
# far above what this machine can do, so the figures are the system's own.
fs_id = call("CreateFileSystem", FileSystemType="cpfs", ProtocolType="cpfs",
             StorageType="advance_200", Capacity=51200, ZoneId="cn-hangzhou-b",
             VpcId="v", VSwitchId="s")["FileSystemId"]
print(f"created {fs_id}", file=sys.stderr)

def fs_running():
    fss = call("DescribeFileSystems", FileSystemId=fs_id)["FileSystems"]["FileSystem"]
    st = fss[0].get("Status") if fss else None
    return st == "Running", st
poll(f"{fs_id} Running", fs_running)

domain = call("CreateMountTarget", FileSystemId=fs_id, NetworkType="Vpc",
              VpcId="v", VSwitchId="s")["MountTargetDomain"]

def mt_active():
    mts = call("DescribeMountTargets", FileSystemId=fs_id)["MountTargets"]["MountTarget"]
    mine = [m for m in mts if m.get("MountTargetDomain") == domain]
    st = mine[0].get("Status") if mine else None
    return (domain if st == "Active" else None), st
print(poll(f"mount target {domain} Active", mt_active))
PY
}

start_cpfs() {
  PORT=${CPFS_BENCH_PORT:-$(free_port)}
  mkdir -p "$CPFS_DATA" "$CPFS_MNT"
  log "starting cpfs serve on 127.0.0.1:$PORT"
  CPFS_ACCESS_KEY_ID=$AK_ID CPFS_ACCESS_KEY_SECRET=$AK_SECRET \
    "$CPFS_BIN" serve --data-dir "$CPFS_DATA" --listen "127.0.0.1:$PORT" \
    >"$WORK/cpfs-serve.log" 2>&1 </dev/null &
  SERVE_PID=$!
  echo "$SERVE_PID" >>"$OURPIDS"
  local end=$((SECONDS + 60))
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do
    alive "$SERVE_PID" || { fail "cpfs serve exited during start-up"; return 1; }
    ((SECONDS < end)) || { fail "cpfs serve not healthy within 60 s"; return 1; }
    sleep 0.3
  done
  end=$((SECONDS + 30))
  until (($(pgrep -c -P "$SERVE_PID" -x cpfs || true) >= 3)); do
    ((SECONDS < end)) || { fail "fewer than 3 data nodes started"; return 1; }
    sleep 0.3
  done
  NODE_PIDS=$(pgrep -P "$SERVE_PID" -x cpfs | tr '\n' ' ')
  printf '%s\n' $NODE_PIDS >>"$OURPIDS"
  log "cpfs serve pid $SERVE_PID, data nodes: $NODE_PIDS"
  local domain
  domain=$(create_fs 2>>"$WORK/create-fs.log") || { fail "creating the file system / mount target: $(tail -n 3 "$WORK/create-fs.log")"; return 1; }
  log "mount target $domain"
  local out
  # shellcheck disable=SC2086 # CPFS_MOUNT_ARGS is a list of flags
  out=$(TMPDIR=$WORK "$CPFS_BIN" mount "$domain" "$CPFS_MNT" --controlplane "http://127.0.0.1:$PORT" -d ${CPFS_MOUNT_ARGS:-} 2>&1) ||
    { fail "cpfs mount: $out"; return 1; }
  log "$out"
  MOUNT_PID=$(sed -n 's/.*(pid \([0-9]*\),.*/\1/p' <<<"$out")
  echo "$MOUNT_PID" >>"$OURPIDS"
  mountpoint -q "$CPFS_MNT" || { fail "cpfs mount returned but $CPFS_MNT is not a mount point"; return 1; }
  envline "cpfs mount flags" "${CPFS_MOUNT_ARGS:-(defaults)}"
  envline "cpfs stripe of the mount root" "$("$CPFS_BIN" stripe get "$CPFS_MNT" 2>&1 || true)"
}

cpfs_logs_section() { # serve log: warnings/errors count, and the tail when something failed
  local f=$WORK/cpfs-serve.log
  [[ -f $f ]] || return 0
  {
    echo "cpfs serve log: $(wc -l <"$f") lines, $(grep -c ' WARN ' "$f" || true) WARN, $(grep -c ' ERROR ' "$f" || true) ERROR"
    if [[ ${1:-} == tail ]]; then
      echo; echo "--- last 40 lines of the cpfs serve log ---"; tail -n 40 "$f"
      local m
      for m in "$WORK"/cpfs-mount-*.log; do
        [[ -f $m ]] || continue
        echo; echo "--- last 20 lines of the cpfs mount log ---"; tail -n 20 "$m"
      done
    fi
  } >"$WORK/cpfs-logs.txt"
  section "CPFS logs" "$WORK/cpfs-logs.txt"
}

# ---------------------------------------------------------------- MooseFS --
start_moosefs() {
  if "$PEER" status 2>/dev/null | grep -q '^moosefs: mounted at'; then
    log "MooseFS already up (not started here; it will be left running)"
  else
    MFS_STARTED_HERE=1
  fi
  local rc=0
  "$PEER" start moosefs 2>"$WORK/peer-start.log" || rc=$?
  cat "$WORK/peer-start.log" >&2
  ((rc == 0)) || { fail "peer-setup.sh start moosefs exited $rc: $(tail -n 3 "$WORK/peer-start.log")"; return 1; }
  MFS_DIR=$(sed -n 's/.*MooseFS up: .* mounted at //p' "$WORK/peer-start.log" | tail -n 1)
  [[ -z $MFS_DIR ]] && MFS_DIR=$("$PEER" status | sed -n 's/^moosefs: mounted at \(.*\), .*/\1/p')
  [[ -n $MFS_DIR ]] && mountpoint -q "$MFS_DIR" || { fail "MooseFS mount point not found"; return 1; }
  envline "moosefs" "$(grep -o 'MooseFS up: .*, goal [0-9]*' "$WORK/peer-start.log" | tail -n 1)"
  # MooseFS keeps a deleted file's chunks in its trash for 24 h by default:
  # every run left about 2 GiB on the disk all targets share, which filled
  # it to 92 % and slowed every file creation on it (CPFS's chunk files,
  # bindfs's files) in later runs. With trash time 0 a deleted file's
  # chunks are freed in the background at once, as CPFS frees its own.
  # The tool asks the master, which listens in the peers' network namespace.
  if command -v mfssettrashtime >/dev/null; then
    if nsenter --net="/run/netns/${PEER_NETNS:-cpfspeers}" mfssettrashtime 0 "$MFS_DIR" >"$WORK/trash.log" 2>&1; then
      envline "moosefs trash time" "0 s (files the suite deletes are not kept)"
    else
      envline "moosefs trash time" "left at its default: mfssettrashtime failed ($(tail -n 1 "$WORK/trash.log"))"
    fi
  fi
}

# ------------------------------------------------------------------- main --
log "work dir $WORK; report $REPORT"
mkdir -p "$RESULTS_DIR"
sampler & SAMPLER_PID=$!

envline "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M:%S')"
envline "host" "$(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
envline "fio" "$(fio --version)"
envline "repo" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
envline "suite" "fio-suite.sh, MD_SETTLE=$MD_SETTLE, RUNTIME=${RUNTIME:-10}, RR_REPEAT=${RR_REPEAT:-2}, MD_FILES=${MD_FILES:-2000}; SETTLE=$SETTLE s before each target, QUIET_WAIT=$QUIET_WAIT s (>= $QUIET_IDLE % idle)"

if ((SKIP_BUILD)); then
  log "SKIP_BUILD=1: using the existing $CPFS_BIN"
else
  log "cargo build --release --bin cpfs"
  tb=$SECONDS
  (cd "$REPO" && cargo build --release --bin cpfs) >&2 || { fail "cargo build failed"; exit 1; }
  envline "build" "cargo build --release --bin cpfs: $((SECONDS - tb)) s"
fi
[[ -x $CPFS_BIN ]] || { fail "no $CPFS_BIN"; exit 1; }
envline "cpfs" "$("$CPFS_BIN" --version)"

for t in $TARGETS; do
  case $t in
    local)
      mkdir -p "$WORK/local"
      run_target local "$WORK/local"
      ;;
    bindfs)
      mkdir -p "$WORK/bindfs-src" "$BINDFS_MNT"
      if bindfs "$WORK/bindfs-src" "$BINDFS_MNT" && mountpoint -q "$BINDFS_MNT"; then
        envline "bindfs" "$(bindfs --version 2>&1 | head -n 1)"
        run_target bindfs "$BINDFS_MNT" "$WORK/bindfs-src"
      else
        fail "bindfs mount failed"
      fi
      fuse_unmount "$BINDFS_MNT"
      ;;
    cpfs)
      if start_cpfs; then
        run_target cpfs "$CPFS_MNT" "$CPFS_DATA"
        [[ -f $WORK/cpfs-randread-cpu.txt ]] && section "CPU during CPFS randread (per process)" "$WORK/cpfs-randread-cpu.txt"
        [[ -f $WORK/cpfs-randread-top.txt ]] && section "top during CPFS randread (3 s in, 2 s interval)" "$WORK/cpfs-randread-top.txt"
      fi
      if alive "$SERVE_PID" || [[ -f $WORK/cpfs-serve.log ]]; then
        if grep -q 'cpfs' "$FAILURES"; then cpfs_logs_section tail; else cpfs_logs_section; fi
      fi
      stop_cpfs
      ;;
    moosefs)
      if start_moosefs; then
        # peer-setup.sh keeps MooseFS's chunks under $PEERS_ROOT/moosefs, PEERS_ROOT being
        # two levels above the mount point ($PEERS_ROOT/mnt/moosefs)
        run_target moosefs "$MFS_DIR" "$(dirname "$(dirname "$MFS_DIR")")/moosefs"
      fi
      ;;
    *) fail "unknown target $t" ;;
  esac
done

envline "total run time" "$((SECONDS - T_START)) s"
kill "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=

# ----------------------------------------------------------------- report --
# Machine paths are replaced by placeholders before anything is written.
PEERS_ROOT_DIR=
[[ -n $MFS_DIR ]] && PEERS_ROOT_DIR=$(dirname "$(dirname "$MFS_DIR")")
python3 - "$REPORT" "$WORK" "$REPO" "$SHARED" "${MFS_DIR:-}" "$PEERS_ROOT_DIR" "$TARGETS" <<'PY'
import os, re, sys, statistics
report, work, repo, shared, mfs_dir, peers_root, targets = sys.argv[1:8]
targets = targets.split()

subs = sorted([(work, "$WORK"), (repo, "<repo>"), (shared, "$CPFS_SHARED_BENCH")]
              + ([(mfs_dir, "<moosefs mount>")] if mfs_dir else [])
              + ([(peers_root, "$PEERS_ROOT")] if peers_root else []),
              key=lambda s: -len(s[0]))
def clean(s):
    for a, b in subs:
        s = s.replace(a, b)
    return s
def read(p):
    try:
        return clean(open(p).read())
    except OSError:
        return ""
def tsv(p):
    return [l.rstrip("\n").split("\t") for l in read(p).splitlines() if l.strip()]

env = tsv(f"{work}/env.tsv")
tinfo = {r[0]: r for r in tsv(f"{work}/targets.tsv")}
failures = [l for l in read(f"{work}/failures.txt").splitlines() if l.strip()]
lines = read(f"{work}/lines.txt").splitlines()

# label job iops bw p50 p99
res, jobs = {}, []
for l in lines:
    f = l.split()
    if l.startswith("#") or len(f) != 6:
        continue
    label, job = f[0], f[1]
    res[(label, job)] = f[2:]
    if job not in jobs:
        jobs.append(job)

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
def fmt(v):
    x = num(v)
    if x is None:
        return v if v else "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"
def ratio(a, b):
    a, b = num(a), num(b)
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"{r:.2f}" if r >= 0.1 else f"{r:.3f}"

names = {"local": "local", "bindfs": "bindfs", "cpfs": "CPFS", "moosefs": "MooseFS"}
cols = [t for t in targets if any(k[0] == t for k in res)] or targets
others = [t for t in ("local", "bindfs", "moosefs") if t in cols] if "cpfs" in cols else []
metrics = [("iops", 0), ("MiB/s", 1), ("p50 µs", 2), ("p99 µs", 3)]
headline = lambda job: 1 if job in ("seqwrite", "seqread") else 0

out = []
w = out.append
date = dict((r[0], r[1]) for r in env if len(r) > 1).get("date (UTC)", "")
w(f"# fio-suite: CPFS vs {', '.join(names.get(t, t) for t in cols if t != 'cpfs')} ({date})")
w("")
w("Generated by `bench/compare.sh` (run with `CPFS_SHARED_BENCH=<shared bench dir> bench/compare.sh`).")
w("Ratios are CPFS ÷ other: above 1 means CPFS does more iops / MiB/s, but *slower* for the p50/p99 latency rows.")
w("Latencies are fio completion latencies of one syscall (µs); md* rows are one Python thread doing create / stat / unlink, iops = ops/s.")
w("mdcreate4 is four processes creating at once (total ops/s); tree* rows (bench/tree-suite.sh) are entries/s of cp -a, ls -lR (cold caches) and rm -rf of /usr/include, so above 1 means CPFS took less time; the seconds are in the raw lines below.")
w("")
w("## Environment")
w("")
w("| | |")
w("|---|---|")
for r in env:
    if len(r) > 1:
        w(f"| {r[0]} | {r[1]} |")
w("")
w("## Targets")
w("")
w("| target | dir | fs | backing store (fs, device) | wall s | suite rc | load1 before | CPU of other processes during the suite | compiler / test processes seen |")
w("|---|---|---|---|---|---|---|---|---|")
loads = []
for l in read(f"{work}/load.txt").splitlines():
    f = l.split()
    if len(f) == 5:
        loads.append((int(f[0]), float(f[1]), int(f[2]), int(f[3]), int(f[4])))
devs = set()
for t in targets:
    r = tinfo.get(t)
    if not r or len(r) < 9:
        w(f"| {t} | (not run) | | | | | | | |")
        continue
    _, d, fs, back, t0, t1, rc, foreign, store = r[:9]
    devs.add(back.split(" ")[-1])
    t0, t1 = int(t0), int(t1)
    up = read(f"{work}/before-{t}.txt").splitlines()
    l1 = "-"
    for u in up:
        if "load average:" in u:
            l1 = u.split("load average:")[1].split(",")[0].strip()
            break
    win = [x for x in loads if t0 <= x[0] <= t1]
    busy = [x for x in win if x[2] or x[3] or x[4]]
    if win:
        seen = (f"{len(busy)}/{len(win)} samples (max {max(x[2] for x in win)} rustc, "
                f"{max(x[3] for x in win)} pytest/cargo, {max(x[4] for x in win)} other cpfs)")
    else:
        seen = "-"
    w(f"| {t} | `{d}` | {fs} | {back} (`{store}`) | {t1 - t0} | {rc} | {l1} | {foreign} | {seen} |")
w("")
if len(devs) == 1:
    w(f"All backing stores are on the same device ({devs.pop()}).")
elif devs:
    w(f"**Backing stores are on different devices: {', '.join(sorted(devs))}.**")
w("")
w("\"CPU of other processes\": CPU time (in cores, averaged over the suite's wall time) used by processes that are not part of this run "
  "(not this script's children, the cpfs processes it started, bindfs, the MooseFS daemons or kernel threads), from /proc snapshots before and after; "
  "the machine has " + str(os.cpu_count()) + " cores.")
w("Process counts are sampled every 5 s; \"other cpfs\" counts cpfs processes not started by this run (e.g. a test suite).")
w("")

if "cpfs" in cols:
    w("## Summary (headline metric per job: MiB/s for seq*, iops / ops/s otherwise)")
    w("")
    w("| job | metric | " + " | ".join(names.get(t, t) for t in cols) + " | "
      + " | ".join(f"CPFS/{names[o]}" for o in others) + " |")
    w("|---|---|" + "---:|" * (len(cols) + len(others)))
    for job in jobs:
        i = headline(job)
        vals = [res.get((t, job), ["-"] * 4)[i] for t in cols]
        c = res.get(("cpfs", job), ["-"] * 4)[i]
        w(f"| {job} | {metrics[i][0] if i else 'iops'} | " + " | ".join(fmt(v) for v in vals) + " | "
          + " | ".join(ratio(c, res.get((o, job), ["-"] * 4)[i]) for o in others) + " |")
    w("")

w("## Per job")
for job in jobs:
    w("")
    w(f"### {job}")
    w("")
    w("| " + " | ".join([""] + [names.get(t, t) for t in cols] + [f"CPFS/{names[o]}" for o in others]) + " |")
    w("|---|" + "---:|" * (len(cols) + len(others)))
    for m, i in metrics:
        vals = [res.get((t, job), ["-"] * 4)[i] for t in cols]
        if all(v == "-" for v in vals):
            continue
        c = res.get(("cpfs", job), ["-"] * 4)[i]
        w("| " + " | ".join([m] + [fmt(v) for v in vals]
                            + [ratio(c, res.get((o, job), ["-"] * 4)[i]) for o in others]) + " |")

w("")
w("## Failures")
w("")
if failures:
    for f in failures:
        w(f"- `{f}`")
else:
    w("none")

for title, path in tsv(f"{work}/sections.tsv"):
    body = read(path.replace("$WORK", work)).rstrip()
    if body:
        w("")
        w(f"## {title}")
        w("")
        w("```")
        w(body)
        w("```")

w("")
w("## Raw suite output")
w("")
w("```")
w("\n".join(lines))
w("```")
text = "\n".join(out) + "\n"
# last line of defence: no absolute paths of this machine in the report
for m in sorted(set(re.findall(r"(?<![\w.$<])/(?:tmp|work|root|home|var|mnt|srv|opt)/[^\s`|)'\"]*", text))):
    print(f"warning: report mentions the path {m}; replaced by <path>", file=sys.stderr)
    text = text.replace(m, "<path>")
os.makedirs(os.path.dirname(report), exist_ok=True)
with open(report, "w") as fh:
    fh.write(text)
PY
log "report: $REPORT"
log "total run time $((SECONDS - T_START)) s"
[[ ! -s $FAILURES ]] || { log "failures:"; cat "$FAILURES" >&2; }
