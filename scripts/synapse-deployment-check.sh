#!/usr/bin/env bash
# End-to-end check of a deployment from scripts/synapse-deployment.sh: two users share a room,
# alice sets her presence through the sync worker, and bob's /sync on the sync worker shows
# it; alice's row in presence_stream must come from the `presenced` writer instance.
#
#   scripts/synapse-deployment-check.sh --stock-writer   # own deployment with Synapse's stock
#                                                        # writer in a temp dir; stopped after
#   scripts/synapse-deployment-check.sh <dir>            # a running deployment, whatever
#                                                        # serves `presenced` (e.g. Presenced)
# KEEP_WORKDIR=1 keeps the --stock-writer directory (configs and logs).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
deploy="$repo/scripts/synapse-deployment.sh"

if [ "${1:-}" = --stock-writer ]; then
    dir="$(mktemp -d /tmp/presenced-synapse.XXXXXX)"
    cleanup() {
        "$deploy" stop "$dir" || true
        if [ "${KEEP_WORKDIR:-}" = 1 ]; then echo "work dir kept: $dir"; else rm -rf "$dir"; fi
    }
    trap cleanup EXIT
    "$deploy" start "$dir" --stock-writer
else
    dir="${1:?usage: $0 --stock-writer | <dir>}"
fi
[ -f "$dir/env" ] || { echo "error: no deployment in $dir (no $dir/env)" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dir/env"

# Fresh names, so the check can run more than once against one deployment.
suffix="$(date +%s%N | tail -c 7)"
echo "== registering alice-$suffix and bob-$suffix on main"
for u in alice bob; do
    "$SYNAPSE_VENV/bin/register_new_matrix_user" -u "$u-$suffix" -p "pw-$u" --no-admin \
        -k "$SYNAPSE_SHARED_SECRET" "$SYNAPSE_MAIN_URL"
done

echo "== room, presence on the sync worker, bob's /sync on the sync worker"
export SUFFIX="$suffix"
"$SYNAPSE_PYTHON" - <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

MAIN, WORKER, SUFFIX = os.environ["SYNAPSE_MAIN_URL"], os.environ["SYNAPSE_WORKER_URL"], os.environ["SUFFIX"]


def call(base, method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body or {}).encode()
                                 if method != "GET" else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"FAIL {method} {base}{path}: {e.code} {e.read()[:300]!r}")


def login(user):
    return call(MAIN, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": f"{user}-{SUFFIX}"},
        "password": f"pw-{user}", "device_id": f"DEV_{user}"})


alice, bob = login("alice"), login("bob")
room = call(MAIN, "POST", "/_matrix/client/v3/createRoom",
            {"preset": "private_chat", "invite": [bob["user_id"]]}, alice["access_token"])["room_id"]
call(MAIN, "POST", f"/_matrix/client/v3/join/{room}", {}, bob["access_token"])
print(f"OK  {alice['user_id']} and {bob['user_id']} share {room}")

start = time.time()
call(WORKER, "PUT", f"/_matrix/client/v3/presence/{alice['user_id']}/status",
     {"presence": "online", "status_msg": "hello there"}, alice["access_token"])
print(f"OK  PUT presence on the sync worker ({time.time() - start:.2f}s)")

want = {"presence": "online", "status_msg": "hello there", "currently_active": True}
since, seen = None, None
while time.time() - start < 30:
    q = "timeout=2000" + (f"&since={since}" if since else "")
    body = call(WORKER, "GET", "/_matrix/client/v3/sync?" + q, token=bob["access_token"])
    for e in body.get("presence", {}).get("events", []):
        if e["sender"] == alice["user_id"]:
            seen = e["content"]
    if seen and all(seen.get(k) == v for k, v in want.items()):
        print(f"OK  bob's /sync on the sync worker: {json.dumps(seen, sort_keys=True)} "
              f"after {time.time() - start:.2f}s")
        break
    since = body["next_batch"]
else:
    sys.exit(f"FAIL bob's /sync never showed {want}; last seen {seen}")

# The stored row must come from the writer instance (not from main or the sync worker).
import psycopg2
with psycopg2.connect(os.environ["SYNAPSE_PG_DSN"]) as c, c.cursor() as cur:
    cur.execute("SELECT instance_name, state, status_msg FROM presence_stream WHERE user_id = %s",
                (alice["user_id"],))
    rows = cur.fetchall()
if rows != [(os.environ["PRESENCED_WRITER_NAME"], "online", "hello there")]:
    sys.exit(f"FAIL presence_stream rows for alice: {rows}")
print(f"OK  presence_stream row for alice: {rows[0]}")
EOF
echo "== check passed"
