#!/usr/bin/env bash
# Presence over federation between Presenced and the reference homeserver (matrix-synapse
# 1.163.2), both on loopback with TLS (self-signed), each with the example presence router
# sending everyone's presence to a watcher on each side.
#
# Checks, with /sync on each side:
#   1. a Presenced user's presence reaches the Synapse watcher;
#   2. a Synapse user's presence reaches the Presenced watcher;
#   3. a later change on Presenced reaches Synapse too (not just the first contact).
# Server names are IP literals with explicit ports, so neither side needs DNS or SRV.
#
# Not part of CI (installing Synapse takes minutes). Usage:
#   scripts/interop-synapse.sh
# Environment:
#   PRESENCED_SYNAPSE_VENV  virtualenv with matrix-synapse (default:
#                           ~/.cache/presenced-synapse-venv; created if missing)
#   PRESENCED_BIN           the presenced binary (default: built with cargo, debug)
#   CARGO_TARGET_DIR        honoured when building
#   KEEP_WORKDIR=1          keep configs and logs for inspection
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
router_py="$repo/crates/presence-python/tests/python/example_router.py"
secret="interop-shared-secret"

venv="$("$repo/scripts/synapse-venv.sh")"
echo "== matrix-synapse in $venv"
"$venv/bin/python" -c 'import synapse; print("synapse", synapse.__version__)'

echo "== presenced"
if [ -z "${PRESENCED_BIN:-}" ]; then
    (cd "$repo" && cargo build --quiet -p presenced)
    PRESENCED_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/presenced"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP_WORKDIR:-}" = 1 ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Four free loopback ports: Synapse client, Synapse federation, Presenced client, Presenced
# federation.
read -r s_client s_fed p_client p_fed < <("$venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
s_name="127.0.0.1:$s_fed"
p_name="127.0.0.1:$p_fed"
echo "synapse:   $s_name (client http://127.0.0.1:$s_client)"
echo "presenced: $p_name (client http://127.0.0.1:$p_client)"

# Self-signed certificates for 127.0.0.1 (with the venv's `cryptography`, a Synapse
# dependency, so no openssl binary is needed).
"$venv/bin/python" - "$work" <<'EOF'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

for who in ("synapse", "presenced"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    with open(f"{sys.argv[1]}/{who}.crt", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(f"{sys.argv[1]}/{who}.key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
EOF

watchers="[\"@watcher:$s_name\", \"@watcher:$p_name\"]"

mkdir -p "$work/synapse" "$work/router"
cp "$router_py" "$work/router/example_router.py"
cat >"$work/synapse/log.yaml" <<EOF
version: 1
formatters:
  f: {format: '%(asctime)s %(levelname)s %(name)s %(message)s'}
handlers:
  file: {class: logging.FileHandler, filename: $work/synapse/homeserver.log, formatter: f}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
cat >"$work/synapse/homeserver.yaml" <<EOF
server_name: "$s_name"
pid_file: $work/synapse/homeserver.pid
listeners:
  - {port: $s_client, type: http, tls: false, bind_addresses: ['127.0.0.1'], resources: [{names: [client], compress: false}]}
  - {port: $s_fed, type: http, tls: true, bind_addresses: ['127.0.0.1'], resources: [{names: [federation, keys], compress: false}]}
tls_certificate_path: $work/synapse.crt
tls_private_key_path: $work/synapse.key
database: {name: sqlite3, args: {database: $work/synapse/homeserver.db}}
log_config: $work/synapse/log.yaml
media_store_path: $work/synapse/media
signing_key_path: $work/synapse/signing.key
registration_shared_secret: $secret
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
# Synapse checks IP-literal server names against the blacklist alone (the whitelist does not
# apply to them), so loopback must be off its federation blacklist.
federation_ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.1']
presence:
  enabled: true
  presence_router:
    module: example_router.ExamplePresenceRouter
    config:
      always_send_to_users: $watchers
rc_presence: {per_user: {per_second: 1000, burst_count: 1000}}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
EOF
"$venv/bin/generate_signing_key" -o "$work/synapse/signing.key"

cat >"$work/presenced.yaml" <<EOF
server_name: "$p_name"
listeners:
  - {port: $p_client, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [client, metrics]}]}
  - {port: $p_fed, type: http, tls: true, bind_addresses: ['127.0.0.1'], resources: [{names: [federation, keys]}]}
database: {name: sqlite3, args: {database: $work/presenced.db}}
registration_shared_secret: $secret
signing_key_path: $work/presenced.signing.key
tls_certificate_path: $work/presenced.crt
tls_private_key_path: $work/presenced.key
federation_verify_certificates: false
ip_range_whitelist: ['127.0.0.1']
trusted_key_servers: []
federation:
  destination_min_retry_interval: 1s
  destination_max_retry_interval: 5s
presence:
  enabled: true
  presence_router:
    module: presenced.routers.ExamplePresenceRouter
    config:
      always_send_to_users: $watchers
rc_presence: {per_user: {per_second: 1000, burst_count: 1000}}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_joins: {local: {per_second: 1000, burst_count: 1000}}
rc_joins_per_room: {per_second: 1000, burst_count: 1000}
rc_room_creation: {per_second: 1000, burst_count: 1000}
rc_message: {per_second: 1000, burst_count: 1000}
EOF

echo "== starting both servers"
PYTHONPATH="$work/router" "$venv/bin/python" -m synapse.app.homeserver \
    -c "$work/synapse/homeserver.yaml" >"$work/synapse/stdout.log" 2>&1 &
pids+=($!)
RUST_LOG=info "$PRESENCED_BIN" -c "$work/presenced.yaml" >"$work/presenced.stdout" 2>"$work/presenced.log" &
pids+=($!)

export S_CLIENT="http://127.0.0.1:$s_client" P_CLIENT="http://127.0.0.1:$p_client"
export S_NAME="$s_name" P_NAME="$p_name" SECRET="$secret"
status=0
"$venv/bin/python" - <<'EOF' || status=$?
import hashlib, hmac, json, os, sys, time, urllib.error, urllib.request

S, P = os.environ["S_CLIENT"], os.environ["P_CLIENT"]
SECRET = os.environ["SECRET"].encode()


def call(base, method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_up(base, what):
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    print(f"{what} is up")
                    return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} did not start")


def register(base, user):
    """Shared-secret registration (the admin API both servers implement), then a token."""
    _, n = call(base, "GET", "/_synapse/admin/v1/register")
    mac = hmac.new(SECRET, digestmod=hashlib.sha1)
    mac.update(b"\x00".join([n["nonce"].encode(), user.encode(), b"pw-" + user.encode(), b"notadmin"]))
    st, body = call(base, "POST", "/_synapse/admin/v1/register", {
        "nonce": n["nonce"], "username": user, "password": "pw-" + user,
        "admin": False, "mac": mac.hexdigest()})
    assert st == 200, (base, user, st, body)
    return body["user_id"], body["access_token"]


def set_presence(base, user, token, presence, msg):
    st, body = call(base, "PUT", f"/_matrix/client/v3/presence/{user}/status",
                    {"presence": presence, "status_msg": msg}, token)
    assert st == 200, (st, body)


def wait_presence(base, token, who, want, label, timeout=30):
    """Incremental syncs (not changing the watcher's own presence) until `who` is `want`."""
    start, since, seen = time.time(), None, {}
    while time.time() - start < timeout:
        q = "timeout=1000&set_presence=offline" + (f"&since={since}" if since else "")
        st, body = call(base, "GET", "/_matrix/client/v3/sync?" + q, token=token)
        assert st == 200, (st, body)
        for e in body.get("presence", {}).get("events", []):
            seen[e["sender"]] = e["content"]
        c = seen.get(who)
        if c and all(c.get(k) == v for k, v in want.items()):
            print(f"OK  {label}: {who} -> {json.dumps(c, sort_keys=True)} "
                  f"after {time.time() - start:.1f}s")
            return
        since = body["next_batch"]
    sys.exit(f"FAIL {label}: {who} never became {want}; saw {json.dumps(seen)}")


wait_up(S, "synapse")
wait_up(P, "presenced")
alice, alice_t = register(S, "alice")        # on Synapse
s_watch, s_watch_t = register(S, "watcher")
bob, bob_t = register(P, "bob")              # on Presenced
p_watch, p_watch_t = register(P, "watcher")
print("users:", alice, s_watch, bob, p_watch)

set_presence(P, bob, bob_t, "online", "hello from presenced")
wait_presence(S, s_watch_t, bob, {"presence": "online", "status_msg": "hello from presenced"},
              "presenced -> synapse")

set_presence(S, alice, alice_t, "unavailable", "hello from synapse")
wait_presence(P, p_watch_t, alice, {"presence": "unavailable", "status_msg": "hello from synapse"},
              "synapse -> presenced")

set_presence(P, bob, bob_t, "unavailable", "changed on presenced")
wait_presence(S, s_watch_t, bob, {"presence": "unavailable", "status_msg": "changed on presenced"},
              "presenced -> synapse (update)")

set_presence(S, alice, alice_t, "online", "back on synapse")
wait_presence(P, p_watch_t, alice, {"presence": "online", "status_msg": "back on synapse"},
              "synapse -> presenced (update)")
print("interop: presence flows both ways")
EOF

echo "== federation lines from the logs"
grep -E "Federation enabled|Presence transaction" "$work/presenced.log" | head -n 10 || true
grep -E "Processed request.*(PUT /_matrix/federation/v1/send|GET /_matrix/key/v2/server)" \
    "$work/synapse/homeserver.log" | sed -E 's/ ru=.*"(PUT|GET)/ "\1/' | head -n 6 || true
if [ "$status" != 0 ]; then
    echo "-- presenced log (tail) --"; tail -n 40 "$work/presenced.log"
    echo "-- synapse log (errors) --"; grep -E "ERROR|WARNING|presence" "$work/synapse/homeserver.log" | tail -n 40
    exit "$status"
fi
