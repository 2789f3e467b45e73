#!/usr/bin/env bash
# `presenced routers check` on the router configurations of tests/routers-check: every
# built-in router and the Python example router must be consistent, and the deliberately
# inconsistent router must be caught. A few seconds on a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${PRESENCED_BIN:-${CARGO_TARGET_DIR:-target}/debug/presenced}"
CASES="${ROUTERS_CHECK_CASES:-300}"

for config in tests/routers-check/*.yaml; do
    echo "== routers check: $config"
    "$BIN" routers check -c "$config" --cases "$CASES" --max-reports 3
done
for config in tests/routers-check/*.yaml.inconsistent; do
    echo "== routers check (must fail): $config"
    if out="$("$BIN" routers check -c "$config" --cases "$CASES" --max-reports 3)"; then
        echo "$out"
        echo "routers check passed an inconsistent router: $config" >&2
        exit 1
    fi
    echo "$out" | grep -q '^disagreement in ' \
        || { echo "$out"; echo "no disagreement printed for $config" >&2; exit 1; }
    echo "$out" | tail -n 2
done
