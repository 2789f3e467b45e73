#!/usr/bin/env bash
# Synapse's own presence writer against Presenced in its place, on one deployment in one run
# (PostgreSQL, Redis, Synapse main and a sync worker, from scripts/synapse-deployment.sh):
#
#   scripts/bench-synapse-writer.sh [--seconds S] [--in-flight 8,64] [--samples N] [--keep DIR]
#
# For each writer in turn (stock first, then Presenced) `presence-bench writer` measures
# `presence_set_state` throughput and latency at each in-flight count, called directly on the
# writer's replication listener while main and the worker parse every row from Redis, then the
# time from a PUT on the sync worker to a room-mate's /sync there. Every line also gives the CPU
# seconds of each process (main, sync1, the writer, Redis) during that measurement, to
# name what saturates first. Figures go to stdout; docs/benchmarks.md records a run.
#
# Uses release builds (cargo build --release; PRESENCED_BIN and PRESENCE_BENCH_BIN override).
# --smoke: one second per step on debug builds, to check that the script and its output work.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

seconds=10 in_flight=8,64 samples=20 keep="" profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --in-flight) in_flight="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        --smoke) seconds=1 in_flight=8 samples=2 profile=debug; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-$repo/target}"
presenced="${PRESENCED_BIN:-$target/$profile/presenced}"
bench="${PRESENCE_BENCH_BIN:-$target/$profile/presence-bench}"
if [ ! -x "$presenced" ] || [ ! -x "$bench" ] || [ -z "${PRESENCED_BIN:-}${PRESENCE_BENCH_BIN:-}" ]; then
    flag=(); [ "$profile" = release ] && flag=(--release)
    echo "== building presenced and presence-bench ($profile)" >&2
    # All features, as the test build: the debug build is then already there.
    cargo build "${flag[@]}" --all-features -p presenced -p presence-bench >&2
fi
# Presenced runs from inside the deployment directory: paths given relative to the checkout
# must not change meaning there.
presenced="$(realpath -m "$presenced")" bench="$(realpath -m "$bench")"

dir="${keep:-$(mktemp -d /tmp/presenced-writer-bench.XXXXXX)}"
presenced_pid=""
cleanup() {
    [ -z "$presenced_pid" ] || kill -TERM "$presenced_pid" 2>/dev/null || true
    scripts/synapse-deployment.sh stop "$dir" >&2 || true
    [ -n "$keep" ] || rm -rf "$dir"
}
trap cleanup EXIT
scripts/synapse-deployment.sh start "$dir" --no-remote >&2
# shellcheck disable=SC1091
source "$dir/env"

pid_of() { cat "$dir/pids/$1.pid"; }

# PostgreSQL's CPU is not reported: it runs one backend process per connection.
run_bench() {
    local label="$1" writer_pid="$2"
    "$bench" writer --label "$label" \
        --replication-url "http://127.0.0.1:$PRESENCED_WRITER_REPLICATION_PORT" \
        --replication-secret "$SYNAPSE_REPLICATION_SECRET" \
        --main-url "$SYNAPSE_MAIN_URL" --worker-url "$SYNAPSE_WORKER_URL" \
        --shared-secret "$SYNAPSE_SHARED_SECRET" --server-name "$SYNAPSE_SERVER_NAME" \
        --in-flight "$in_flight" --seconds "$seconds" --e2e-samples "$samples" \
        --pid "main=$(pid_of main),sync1=$(pid_of sync1),writer=$writer_pid,redis=$(pid_of redis)"
}

echo "== stock Synapse writer" >&2
scripts/synapse-deployment.sh start-stock-writer "$dir" >&2
run_bench stock "$(pid_of presenced)"
scripts/synapse-deployment.sh stop-stock-writer "$dir" >&2

echo "== Presenced" >&2
(cd "$dir" && PYTHONPATH="$SYNAPSE_PYTHONPATH" RUST_LOG=warn exec "$presenced" \
    -c "$SYNAPSE_HOMESERVER_YAML" -c "$PRESENCED_WRITER_YAML" \
    >"$SYNAPSE_LOG_DIR/presenced-bench.log" 2>&1) &
presenced_pid=$!
for _ in $(seq 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PRESENCED_WRITER_REPLICATION_PORT") 2>/dev/null && break
    kill -0 "$presenced_pid" 2>/dev/null || { tail -20 "$SYNAPSE_LOG_DIR/presenced-bench.log" >&2; exit 1; }
    sleep 0.2
done
run_bench presenced "$presenced_pid"
kill -TERM "$presenced_pid"
wait "$presenced_pid" || true
presenced_pid=""
