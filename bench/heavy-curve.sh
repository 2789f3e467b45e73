#!/usr/bin/env bash
# The heavy fan-out layout (10,000 users, 1,000 long-polling watchers, Zipf rooms of up to
# 1,000 members, ~25 watchers per update) against one or more Presenced binaries in turn, at
# a sweep of offered rates, each binary with a fresh server and data directory:
#
#   bench/heavy-curve.sh [--extra-config FILE] BIN [BIN...]
#
# The server runs on CPU $SERVER_CPU (default 1) and `presence-bench http` on CPU $GEN_CPU
# (default 0). Environment: BENCH (presence-bench binary, default the release one),
# RATES (default 2000,5000,10000,20000,0; 0 is full speed), DURATION (seconds per step,
# default 10), BENCH_WORK (scratch, default /tmp/presenced-heavy), and for a smaller layout
# (CI's smoke run) USERS / WATCHERS / MAX_ROOM (default 10000 / 1000 / 1000). Prints one line
# per binary and step: `bin=... step=N target_rate=R` followed by presence-bench's line, and
# its "server CPU / generator CPU" figures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="${BENCH:-$TARGET/release/presence-bench}"
RATES="${RATES:-2000,5000,10000,20000,0}"
DURATION="${DURATION:-10}"
WORK="${BENCH_WORK:-/tmp/presenced-heavy}"
USERS="${USERS:-10000}"
WATCHERS="${WATCHERS:-1000}"
MAX_ROOM="${MAX_ROOM:-1000}"
SERVER_CPU="${SERVER_CPU:-1}"
GEN_CPU="${GEN_CPU:-0}"
SECRET="bench-shared-secret"
PORT=18018
EXTRA=""
if [ "${1:-}" = "--extra-config" ]; then
    EXTRA="$(realpath "$2")"
    shift 2
fi
[ $# -ge 1 ] || { echo "usage: $0 [--extra-config FILE] BIN [BIN...]" >&2; exit 2; }

log() { echo "[heavy $(date -u +%H:%M:%S)] $*" >&2; }

SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

i=0
for bin in "$@"; do
    bin="$(realpath "$bin")"
    dir="$WORK/$i"
    rm -rf "$dir"
    mkdir -p "$dir"
    sed -e "s#@PORT@#$PORT#g" -e "s#@DATA@#$dir#g" -e "s#@SECRET@#$SECRET#g" \
        "$ROOT/bench/presenced.yaml.in" >"$dir/presenced.yaml"
    configs=(-c "$dir/presenced.yaml")
    [ -z "$EXTRA" ] || configs+=(-c "$EXTRA")
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" "${configs[@]}" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    SERVER_PID=$!
    for _ in $(seq 1 240); do
        curl -fsS "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir/stderr.log" >&2; exit 1; }
        sleep 0.25
    done
    log "$bin (load $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c "$GEN_CPU" "$BENCH" http --base-url "http://127.0.0.1:$PORT" \
        --shared-secret "$SECRET" --server-pid "$SERVER_PID" --label "run$i" \
        --users "$USERS" --watchers "$WATCHERS" --router-watchers 1 --max-room "$MAX_ROOM" \
        --concurrency 64 --setup-concurrency 32 --rate "$RATES" --duration "$DURATION" \
        >"$dir/bench.out" 2>"$dir/bench.err"
    stop_server
    IFS=, read -ra rates <<<"$RATES"
    mapfile -t cpus < <(grep -o 'server CPU [^,]*, generator CPU [^ ]*' "$dir/bench.err")
    step=0
    while IFS= read -r line; do
        echo "bin=$bin step=$step target_rate=${rates[$step]:-0} $line ${cpus[$step]:-}"
        step=$((step + 1))
    done <"$dir/bench.out"
    i=$((i + 1))
done
