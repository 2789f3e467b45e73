#!/usr/bin/env bash
# Registers users on a running Presenced with the reference homeserver's own
# `register_new_matrix_user` tool (from matrix-synapse 1.163.2), to check that shared-secret
# registration is compatible: the same nonce request, the same HMAC, the same answers.
#
# Not run by default (installing the package takes minutes). Usage:
#   crates/presenced/tests/reference_register.sh
# Environment:
#   PRESENCED_SYNAPSE_VENV  virtualenv to install into / reuse
#                           (default: ~/.cache/presenced-synapse-venv)
#   PRESENCED_BIN           the presenced binary (default: built with cargo, debug)
#   CARGO_TARGET_DIR        honoured when building
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
secret="reference-register-secret"

venv="$("$repo/scripts/synapse-venv.sh")"
echo "== matrix-synapse in $venv"
"$venv/bin/python" -c 'import synapse; print("synapse", synapse.__version__)'

echo "== presenced"
if [ -z "${PRESENCED_BIN:-}" ]; then
    (cd "$repo" && cargo build --quiet -p presenced)
    PRESENCED_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/presenced"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/presenced.yaml" <<EOF
server_name: reference.test
listeners:
  - port: 0
    type: http
    bind_addresses: ['127.0.0.1']
    resources: [{names: [client]}]
database: {name: sqlite3, args: {database: $work/presenced.db}}
registration_shared_secret: $secret
EOF

"$PRESENCED_BIN" -c "$work/presenced.yaml" --print-listen-addrs >"$work/stdout" 2>"$work/log" &
server_pid=$!
for _ in $(seq 1 100); do
    if grep -q '^listening on ' "$work/stdout"; then break; fi
    sleep 0.1
done
addr="$(sed -n 's/^listening on //p' "$work/stdout" | head -n 1)"
if [ -z "$addr" ]; then
    echo "presenced did not start:" >&2
    cat "$work/log" >&2
    exit 1
fi
base="http://$addr"
echo "presenced at $base"

fail() {
    echo "FAIL: $*" >&2
    echo "-- presenced log --" >&2
    cat "$work/log" >&2
    exit 1
}

login() { # user password -> HTTP status
    curl -s -o "$work/login.json" -w '%{http_code}' -X POST "$base/_matrix/client/v3/login" \
        -H 'Content-Type: application/json' \
        -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$1\"},\"password\":\"$2\"}"
}

echo "== register_new_matrix_user: a plain user"
"$venv/bin/register_new_matrix_user" -u alice -p 'alice pw' --no-admin -k "$secret" "$base" \
    || fail "registering alice"
[ "$(login alice 'alice pw')" = 200 ] || fail "alice cannot log in: $(cat "$work/login.json")"
token="$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$work/login.json")"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/_presenced/admin/v1/presence")"
[ "$code" = 403 ] || fail "alice is not an admin, yet the admin API answered $code"

echo "== register_new_matrix_user: an admin"
"$venv/bin/register_new_matrix_user" -u root -p 'root pw' -a -k "$secret" "$base" \
    || fail "registering root"
[ "$(login root 'root pw')" = 200 ] || fail "root cannot log in"
token="$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$work/login.json")"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/_presenced/admin/v1/presence")"
[ "$code" = 200 ] || fail "root is an admin, yet the admin API answered $code"

echo "== register_new_matrix_user: a taken name fails, --exists-ok accepts it"
if "$venv/bin/register_new_matrix_user" -u alice -p x --no-admin -k "$secret" "$base" >"$work/taken" 2>&1; then
    fail "registering alice twice succeeded"
fi
"$venv/bin/register_new_matrix_user" -u alice -p x --no-admin --exists-ok -k "$secret" "$base" \
    || fail "--exists-ok did not accept the taken name"

echo "== register_new_matrix_user: a wrong secret is refused"
if "$venv/bin/register_new_matrix_user" -u bob -p x --no-admin -k "not the secret" "$base" >"$work/wrong" 2>&1; then
    fail "a wrong shared secret registered bob"
fi
grep -q 'HMAC incorrect' "$work/wrong" || fail "unexpected answer to a wrong secret: $(cat "$work/wrong")"

echo "OK: the reference's register_new_matrix_user works against Presenced"
