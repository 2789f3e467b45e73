#!/usr/bin/env bash
# End-to-end HTTP load benchmark of Presenced side by side with the reference homeserver
# (Synapse), both on loopback with equivalent configurations, driven by
# `presence-bench http` over the client-server API only.
#
#   bench/compare.sh            # everything; writes docs/benchmarks.md (marked section) and
#                               # docs/benchmarks-http.png
#   bench/compare.sh --quick    # small sizes, short steps: checks the pipeline in ~2 minutes
#
# Every workload gets a fresh server and data directory. The server runs on CPU $SERVER_CPU
# and the generator on CPU $GEN_CPU (taskset), so they do not compete for a core.
#
# Environment: CARGO_TARGET_DIR, SYNAPSE_VENV (default ~/.cache/presenced-synapse-venv,
# created with matrix-synapse==1.163.2 if missing), BENCH_WORK (scratch directory),
# SERVER_CPU / GEN_CPU (default 0 / 1), SYNAPSE_TIMEBOX / SYNAPSE_BIG_TIMEBOX (seconds a
# Synapse run may take in all, setup included: default 600 for the reference-sized workloads,
# 180 for 10,000 users and more), DURATION (seconds per step, default 10), BENCH_DOC /
# BENCH_PLOT (where the table and chart go).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${SYNAPSE_VENV:-$HOME/.cache/presenced-synapse-venv}"
SYNAPSE_VERSION="1.163.2"
WORK="${BENCH_WORK:-/tmp/presenced-compare}"
SERVER_CPU="${SERVER_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
SYNAPSE_TIMEBOX="${SYNAPSE_TIMEBOX:-600}"
SYNAPSE_BIG_TIMEBOX="${SYNAPSE_BIG_TIMEBOX:-180}"
DURATION="${DURATION:-10}"
SECRET="bench-shared-secret"
PRESENCED_PORT=18008
SYNAPSE_PORT=18009
RESULTS="$WORK/results.tsv"
DOC="${BENCH_DOC:-$ROOT/docs/benchmarks.md}"
PLOT="${BENCH_PLOT:-$ROOT/docs/benchmarks-http.png}"

log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

# --- build and install ---------------------------------------------------------------------
log "building presenced and presence-bench (release)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p presenced -p presence-bench)
PRESENCED="$TARGET/release/presenced"
BENCH="$TARGET/release/presence-bench"

VENV="$(PRESENCED_SYNAPSE_VENV="$VENV" SYNAPSE_VERSION="$SYNAPSE_VERSION" \
  "$ROOT/scripts/synapse-venv.sh")"
if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  log "installing matplotlib (for the chart)"
  "$VENV/bin/pip" install -q matplotlib
fi

rm -rf "$WORK"
mkdir -p "$WORK"
printf 'workload\tserver\tstep\ttarget_rate\tline\tload\tfanout\tcpu\n' > "$RESULTS"

# --- servers -------------------------------------------------------------------------------
SERVER_PID=""

port_free() { # port
  if curl -fsS "http://127.0.0.1:$1/_matrix/client/versions" >/dev/null 2>&1; then
    log "port $1 is already serving: stop that server first"; return 1
  fi
}

wait_up() { # port pid logfile
  for _ in $(seq 1 240); do
    if curl -fsS "http://127.0.0.1:$1/_matrix/client/versions" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then log "server exited during startup:"; tail -20 "$3" >&2; return 1; fi
    sleep 0.25
  done
  log "server did not come up"; return 1
}

start_presenced() { # dir
  local dir="$1"; mkdir -p "$dir"
  port_free "$PRESENCED_PORT"
  sed -e "s#@PORT@#$PRESENCED_PORT#g" -e "s#@DATA@#$dir#g" -e "s#@SECRET@#$SECRET#g" \
    "$ROOT/bench/presenced.yaml.in" > "$dir/presenced.yaml"
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$PRESENCED" -c "$dir/presenced.yaml" \
    >"$dir/stdout.log" 2>"$dir/stderr.log" &
  SERVER_PID=$!
  wait_up "$PRESENCED_PORT" "$SERVER_PID" "$dir/stderr.log"
}

start_synapse() { # dir
  local dir="$1"; mkdir -p "$dir"
  port_free "$SYNAPSE_PORT"
  (cd "$dir" && "$VENV/bin/python" -m synapse.app.homeserver --server-name localhost \
    --config-path "$dir/homeserver.yaml" --data-directory "$dir" --generate-config \
    --report-stats=no >/dev/null)
  cat > "$dir/log.config" <<EOF
version: 1
formatters:
  precise: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}
handlers:
  file: {class: logging.FileHandler, formatter: precise, filename: $dir/homeserver.log}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
EOF
  sed -e "s#@PORT@#$SYNAPSE_PORT#g" -e "s#@DATA@#$dir#g" -e "s#@SECRET@#$SECRET#g" \
    "$ROOT/bench/synapse.yaml.in" > "$dir/bench.yaml"
  (cd "$dir" && PYTHONPATH="$ROOT/crates/presence-python/tests/python" exec taskset -c "$SERVER_CPU" "$VENV/bin/python" \
    -m synapse.app.homeserver -c "$dir/homeserver.yaml" -c "$dir/bench.yaml" \
    >"$dir/stdout.log" 2>&1) &
  SERVER_PID=$!
  wait_up "$SYNAPSE_PORT" "$SERVER_PID" "$dir/stdout.log"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT

# run WORKLOAD SERVER TIMEBOX RATES -- presence-bench http arguments...
run() {
  local workload="$1" server="$2" timebox="$3" rates="$4"; shift 5
  local dir="$WORK/$workload-$server" port
  log "$workload on $server (rates $rates, time box ${timebox}s): $*"
  if [ "$server" = presenced ]; then start_presenced "$dir"; port=$PRESENCED_PORT
  else start_synapse "$dir"; port=$SYNAPSE_PORT; fi
  local load; load="$(cut -d' ' -f1-3 /proc/loadavg)"
  local status=0
  timeout --signal=INT "$timebox" taskset -c "$GEN_CPU" "$BENCH" http \
    --base-url "http://127.0.0.1:$port" --shared-secret "$SECRET" \
    --server-pid "$SERVER_PID" --label "$server" --rate "$rates" --duration "$DURATION" "$@" \
    >"$dir/bench.out" 2>"$dir/bench.err" || status=$?
  stop_server
  tail -4 "$dir/bench.err" >&2
  local step=0 rate fanout
  fanout="$(grep -o 'should reach [0-9.]* watchers' "$dir/bench.err" | head -1 | cut -d' ' -f3)"
  IFS=, read -ra rate_list <<< "$rates"
  if [ "$status" -ne 0 ] || [ ! -s "$dir/bench.out" ]; then
    log "$workload on $server did not finish (exit $status)"
    # How far setup got: the last progress line.
    local reached
    reached="$(grep -E '^  (registered|rooms created|joins|initial syncs):' "$dir/bench.err" \
      | tail -1 | sed 's/^ *//')"
    printf '%s\t%s\t0\t%s\tDNF %s\t%s\t%s\t?\n' "$workload" "$server" "${rate_list[0]}" \
      "${reached:-}" "$load" "${fanout:-?}" >> "$RESULTS"
    return 0
  fi
  # "step done: server CPU 97%, generator CPU 61% (of one core)", one per step.
  local cpus=()
  mapfile -t cpus < <(grep -o 'server CPU [^,]*, generator CPU [^ ]*' "$dir/bench.err" \
    | sed -e 's/server CPU //' -e 's/, generator CPU /\//')
  while IFS= read -r line; do
    rate="${rate_list[$step]:-0}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$server" "$step" "$rate" "$line" \
      "$load" "${fanout:-?}" "${cpus[$step]:-?}" >> "$RESULTS"
    log "  $line"
    step=$((step + 1))
  done < "$dir/bench.out"
}

# --- workloads -----------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  DURATION=3
  REF_USERS=(50)
  BIG=(2000)
  SWEEP_P="500,2000,0"
  SWEEP_S="20,50,0"
  SYNAPSE_TIMEBOX=120
  SYNAPSE_BIG_TIMEBOX=60
else
  REF_USERS=(200 500)
  BIG=(10000 100000)
  SWEEP_P="1000,2000,5000,10000,20000,0"
  SWEEP_S="50,100,200,400,0"
fi

# The reference's own workload: N users in one room, one room watcher and one router watcher,
# every user setting presence in turn at the same fixed concurrency for both servers: 8 PUTs
# in flight ("ref"), then 64 ("burst"; the reference serves more with more in flight).
for kind in ref burst; do
  concurrency=8
  [ "$kind" = burst ] && concurrency=64
  for n in "${REF_USERS[@]}"; do
    for server in presenced synapse; do
      run "$kind$n" "$server" "$SYNAPSE_TIMEBOX" 0 -- --users "$n" --watchers 1 \
        --router-watchers 1 --rooms one --concurrency "$concurrency"
    done
  done
done

# Rate sweep at the reference workload's size, fixed concurrency 8: where each server bends.
n="${REF_USERS[0]}"
run "sweep$n" presenced "$SYNAPSE_TIMEBOX" "$SWEEP_P" -- --users "$n" --watchers 1 \
  --router-watchers 1 --rooms one --concurrency 8
run "sweep$n" synapse "$SYNAPSE_TIMEBOX" "$SWEEP_S" -- --users "$n" --watchers 1 \
  --router-watchers 1 --rooms one --concurrency 8

# Large servers: Zipf-sized rooms (2 per user on average, largest 1,000), 1,000 room watchers
# and one router watcher; a rate sweep ending at full speed, 64 PUTs in flight. The reference
# homeserver is time-boxed: its setup alone (room creation, joins) outlasts the box.
watchers=1000
[ "$QUICK" = 1 ] && watchers=100
for n in "${BIG[@]}"; do
  run "users$n" presenced 1800 "$SWEEP_P" -- --users "$n" --watchers "$watchers" \
    --router-watchers 1 --concurrency 64 --setup-concurrency 32
  run "users$n" synapse "$SYNAPSE_BIG_TIMEBOX" "$SWEEP_S" -- --users "$n" --watchers "$watchers" \
    --router-watchers 1 --concurrency 64 --setup-concurrency 32
done

# The same first size with rooms of at most 100 members: each update reaches ~2 watchers
# instead of ~25, so the PUT path rather than the /sync wake-ups sets the limit.
n="${BIG[0]}"
run "light$n" presenced 1800 "$SWEEP_P" -- --users "$n" --watchers "$watchers" \
  --router-watchers 1 --max-room 100 --concurrency 64 --setup-concurrency 32

# --- report --------------------------------------------------------------------------------
log "writing $DOC and $PLOT"
"$VENV/bin/python" "$ROOT/bench/report.py" "$RESULTS" "$DOC" "$PLOT" \
  --server-cpu "$SERVER_CPU" --gen-cpu "$GEN_CPU" --duration "$DURATION" \
  --synapse-timebox "$SYNAPSE_TIMEBOX s (reference sizes), $SYNAPSE_BIG_TIMEBOX s (10,000 users and more)" --quick "$QUICK"
log "done; raw results in $RESULTS"
