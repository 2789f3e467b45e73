#!/usr/bin/env bash
# A throwaway Synapse deployment with workers, for black-box tests of Presenced as its presence
# stream writer: PostgreSQL + Redis + Synapse main + one generic sync worker (`sync1`), with
# `stream_writers.presence: presenced`, all on loopback, everything inside one directory.
#
#   scripts/synapse-deployment.sh start <dir> [--stock-writer] [--no-remote]
#   scripts/synapse-deployment.sh stop <dir>
#   scripts/synapse-deployment.sh env <dir>          # the exports tests read (also in <dir>/env)
#   scripts/synapse-deployment.sh restart-redis <dir>     # same port; Redis holds no data
#   scripts/synapse-deployment.sh restart-postgres <dir>  # same port, same data
#   (also stop-redis/start-redis and stop-postgres/start-postgres, to keep one down a while)
#   scripts/synapse-deployment.sh start-stock-writer <dir>  # Synapse's own writer in the slot
#   scripts/synapse-deployment.sh stop-stock-writer <dir>   # (for tests that Presenced refuses to
#                                                            #  start beside it)
#
# The deployment's server name is 127.0.0.1:<port of main's TLS federation listener>, and a
# second, independent Synapse (a monolith on SQLite, `remote`, named 127.0.0.1:<its port>)
# federates with it over TLS on loopback, for the tests of presence over federation (left out
# with --no-remote).
#
# <dir> should be a fresh (empty or missing) directory; it gets the data, sockets, configs,
# logs (<dir>/logs) and pid files (<dir>/pids). Without --stock-writer nothing serves the
# `presenced` instance: the test starts Presenced with <dir>/presenced-writer.yaml on
# $PRESENCED_WRITER_REPLICATION_PORT. With --stock-writer, Synapse's own generic worker runs
# under that name with that file: the reference run (scripts/synapse-deployment-check.sh).
#
# Installs what is missing first (Debian packages through apt-get, only when their binaries
# are missing; a cached virtualenv with matrix-synapse[postgres,redis], see
# scripts/synapse-venv.sh --postgres). Environment:
#   PRESENCED_SYNAPSE_PG_VENV  the virtualenv (default ~/.cache/presenced-synapse-pg-venv)
#   SYNAPSE_VERSION            default 1.163.2
#   SYNAPSE_SERVER_NAME        default 127.0.0.1:<main's federation port>
# Works as root (PostgreSQL then runs as the `postgres` user, since initdb refuses root) and
# as an ordinary user (everything runs as that user; missing packages need sudo).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PRESENCED_SYNAPSE_PG_VENV:-$HOME/.cache/presenced-synapse-pg-venv}"
writer_name=presenced

say() { echo "== $*"; }
die() { echo "error: $*" >&2; exit 1; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

# Prints the last lines of each log that exists, for a failed step.
show_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "-- $f (tail) --" >&2
        tail -n 40 "$f" >&2
    done
}

# Runs a PostgreSQL server command as `postgres` when we are root (initdb and postgres refuse
# to run as root), from / so that the postgres user is not left in an unreadable cwd.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/<major>/bin.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    d="$(command -v initdb || true)"
    if [ -n "$d" ]; then dirname "$(readlink -f "$d")"; return 0; fi
    return 1
}

# Importing Synapse takes a second or two on a busy machine: remember a positive answer.
venv_ok=0
venv_ready() {
    [ "$venv_ok" = 1 ] && return 0
    "$venv/bin/python" -c "import synapse, psycopg2, txredisapi, sys
sys.exit(synapse.__version__ != '${SYNAPSE_VERSION:-1.163.2}')" 2>/dev/null && venv_ok=1
}

# apt-get install of what is missing: the servers always; the build tools for psycopg2 only
# while the virtualenv still has to be built.
ensure_packages() {
    local missing=() log="$1/logs/apt.log"
    pg_bindir >/dev/null || missing+=(postgresql)
    { command -v redis-server && command -v redis-cli; } >/dev/null || missing+=(redis-server)
    command -v openssl >/dev/null || missing+=(openssl)
    if ! venv_ready; then
        command -v pg_config >/dev/null || missing+=(libpq-dev)
        { command -v cc && command -v make; } >/dev/null || missing+=(build-essential)
        python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            || missing+=(python3-dev)
        python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    fi
    [ "${#missing[@]}" -gt 0 ] || return 0
    local t sudo=()
    t="$(now)"
    say "installing Debian packages: ${missing[*]}"
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    # A fresh machine has no package lists yet; stale ones give 404s: update and retry then.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update >>"$log" 2>&1 || { show_logs "$log"; die "apt-get update failed"; }
    fi
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        "${sudo[@]}" apt-get update >>"$log" 2>&1 || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
            || { show_logs "$log"; die "apt-get install ${missing[*]} failed"; }
    fi
    pg_bindir >/dev/null || die "still no PostgreSQL server binaries (initdb) after apt-get"
    command -v redis-server >/dev/null || die "still no redis-server after apt-get"
    echo "   done in $(since "$t")"
}

ensure_venv() {
    local t log="$1/logs/pip.log"
    venv_ready && return 0
    t="$(now)"
    say "building the Synapse virtualenv $venv (psycopg2 compiles from source)"
    PRESENCED_SYNAPSE_VENV="$venv" "$repo/scripts/synapse-venv.sh" --postgres >/dev/null 2>"$log" \
        || { show_logs "$log"; die "could not install matrix-synapse[postgres,redis] into $venv"; }
    venv_ready || die "$venv still lacks synapse, psycopg2 or txredisapi"
    echo "   done in $(since "$t")"
}

# N distinct free loopback ports, from below the kernel's ephemeral range (so an outgoing
# connection cannot take one between our choice and the bind, nor while a service restarts),
# starting at a random point so that parallel deployments on one machine do not collide.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
top = max(low, 12000)
lo = max(1025, top - 12000)
start = random.randrange(lo, top)
held, port = [], start
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        held.append(s)
    except OSError:
        s.close()
    port = lo if port + 1 >= top else port + 1
    if port == start:
        sys.exit("no free ports")
print(*[s.getsockname()[1] for s in held])
EOF
}

secrets() { python3 -c 'import secrets, sys; print(*[secrets.token_hex(16) for _ in range(int(sys.argv[1]))])' "$1"; }

# Reads <dir>/env (written before any service starts, so stop works after a failed start).
load_env() {
    local dir="$1"
    [ -f "$dir/env" ] || die "$dir has no deployment (no $dir/env)"
    # shellcheck disable=SC1091
    source "$dir/env"
    PGBIN="$(pg_bindir)" || die "PostgreSQL binaries not found"
}

# ---- TLS -------------------------------------------------------------------------------------

# A throwaway CA and a server certificate for 127.0.0.1 and localhost: PostgreSQL and Redis
# also accept TLS (beside clear text, which Synapse's processes use), for the tests of
# Presenced's TLS connections (SYNAPSE_TLS_CA, SYNAPSE_REDIS_TLS_PORT).
make_certs() {
    local t="$1/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=presenced test CA" \
        -keyout "$t/ca.key" -out "$t/ca.crt" >/dev/null 2>&1 || die "openssl: CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$t/server.key" -out "$t/server.csr" >/dev/null 2>&1 || die "openssl: CSR"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/san.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
        -days 30 -extfile "$t/san.ext" -out "$t/server.crt" >/dev/null 2>&1 || die "openssl: sign"
    chmod 644 "$t"/*.crt "$t/server.key"
}

# ---- PostgreSQL ------------------------------------------------------------------------------

start_postgres() {
    local d="$SYNAPSE_DEPLOYMENT_DIR/pg" t
    t="$(now)"
    if ! as_pg "$PGBIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 start >/dev/null; then
        show_logs "$d/postgres.log"; die "PostgreSQL did not start"
    fi
    echo "   PostgreSQL up on port $SYNAPSE_PG_PORT, socket dir $SYNAPSE_PG_HOST ($(since "$t"))"
}

stop_postgres() {
    [ -f "$SYNAPSE_DEPLOYMENT_DIR/pg/data/postmaster.pid" ] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$SYNAPSE_DEPLOYMENT_DIR/pg/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
        || echo "   (pg_ctl stop failed; was it running?)"
}

# SIGSTOP (or SIGCONT) to the postmaster and every process under it: PostgreSQL then hangs
# with its sockets open, as a server that stopped answering does (a refused connection is
# the easy case, `stop-postgres`).
signal_postgres() {
    local sig="$1" pid
    pid="$(head -n1 "$SYNAPSE_DEPLOYMENT_DIR/pg/data/postmaster.pid" 2>/dev/null)" \
        || die "PostgreSQL is not running"
    kill "-$sig" "$pid" $(pgrep -P "$pid") || die "could not send SIG$sig to PostgreSQL"
}

init_postgres() {
    local dir="$1" d="$1/pg" t
    t="$(now)"
    say "PostgreSQL: initdb in $d/data"
    mkdir -p "$d/run"
    if [ "$(id -u)" = 0 ]; then
        # The postgres user must reach its directories: let it through <dir>, own pg/.
        chmod go+x "$dir"
        chown -R postgres:postgres "$d"
        as_pg test -w "$d" || die "the postgres user cannot reach $d: make its parent directories traversable (chmod o+x), e.g. use a directory under /tmp"
    fi
    chmod 755 "$d/run"
    # Superuser `postgres` whoever runs it; trust for local sockets and loopback TCP.
    as_pg "$PGBIN/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C -A trust \
        >"$d/initdb.log" 2>&1 || { show_logs "$d/initdb.log"; die "initdb failed"; }
    # fsync and friends off: the data is thrown away and migrations run several times faster on
    # a busy 2-core machine. A fast (clean) shutdown still keeps the data for restart-postgres.
    cat >>"$d/data/postgresql.conf" <<EOF

# scripts/synapse-deployment.sh
port = $SYNAPSE_PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$d/run'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 100
ssl = on
ssl_cert_file = '$d/server.crt'
ssl_key_file = '$d/server.key'
EOF
    # PostgreSQL insists that its key belongs to it and nobody else can read it.
    cp "$dir/tls/server.crt" "$dir/tls/server.key" "$d/"
    chmod 600 "$d/server.key"
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$d/server.crt" "$d/server.key"
    echo "   done in $(since "$t")"
    say "PostgreSQL: start"
    start_postgres
    local psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$d/run" -p "$SYNAPSE_PG_PORT" -U postgres -d postgres)
    # Separate statements: CREATE DATABASE cannot run inside the implicit transaction of a
    # multi-statement -c. Synapse insists on C collation.
    "${psql[@]}" -c "CREATE ROLE $SYNAPSE_PG_USER LOGIN" \
        && "${psql[@]}" -c "CREATE DATABASE $SYNAPSE_PG_DB OWNER $SYNAPSE_PG_USER ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0" \
        || { show_logs "$d/postgres.log"; die "could not create the synapse role and database"; }
}

# ---- Redis -----------------------------------------------------------------------------------

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$SYNAPSE_REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_redis() {
    local t i
    t="$(now)"
    mkdir -p "$SYNAPSE_DEPLOYMENT_DIR/redis"
    # No persistence: Synapse only uses Redis pub/sub (and a cache it tolerates losing).
    redis-server --port "$SYNAPSE_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --tls-port "$SYNAPSE_REDIS_TLS_PORT" --tls-cert-file "$SYNAPSE_DEPLOYMENT_DIR/tls/server.crt" \
        --tls-key-file "$SYNAPSE_DEPLOYMENT_DIR/tls/server.key" \
        --tls-ca-cert-file "$SYNAPSE_TLS_CA" --tls-auth-clients no \
        --daemonize yes --pidfile "$SYNAPSE_DEPLOYMENT_DIR/pids/redis.pid" \
        --logfile "$SYNAPSE_LOG_DIR/redis.log" --dir "$SYNAPSE_DEPLOYMENT_DIR/redis" \
        || { show_logs "$SYNAPSE_LOG_DIR/redis.log"; die "redis-server did not start"; }
    for i in $(seq 100); do redis_up && break; sleep 0.1; done
    redis_up || { show_logs "$SYNAPSE_LOG_DIR/redis.log"; die "Redis does not answer PING"; }
    echo "   Redis up on port $SYNAPSE_REDIS_PORT ($(since "$t"))"
}

stop_redis() {
    local pidfile="$SYNAPSE_DEPLOYMENT_DIR/pids/redis.pid" pid i
    if redis_up; then
        redis-cli -h 127.0.0.1 -p "$SYNAPSE_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    # Wait until the port is really free, so a restart can bind it again.
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        for i in $(seq 100); do is_proc "$pid" redis-server || break; sleep 0.1; done
        if is_proc "$pid" redis-server; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$pidfile"
    fi
}

# ---- Synapse ---------------------------------------------------------------------------------

# is_proc PID WORD: PID is alive and its command line mentions WORD (a pid file may be stale
# and its number reused by another process).
is_proc() {
    [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

# GET http://127.0.0.1:PORT/health answers 200 (bash's /dev/tcp: curl may not be installed).
health_ok() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        IFS= read -r -t 5 line <&3
        [[ "$line" == HTTP/1.?" 200"* ]]
    ) 2>/dev/null
}

declare -A launched=()  # name -> when launch_synapse started it
# launch_synapse NAME APP CONFIG...: start one Synapse process (wait_synapse waits for it).
launch_synapse() {
    local name="$1" app="$2" args=() c
    shift 2
    for c in "$@"; do args+=(-c "$c"); done
    say "Synapse: $name ($app)"
    # Not daemonized: Synapse only writes pid files when it daemonizes, so we record $! (the
    # exec keeps the subshell's pid).
    (cd "$SYNAPSE_DEPLOYMENT_DIR" && PYTHONPATH="$SYNAPSE_PYTHONPATH" \
        exec "$SYNAPSE_PYTHON" -m "$app" "${args[@]}" \
        >"$SYNAPSE_LOG_DIR/$name.stdout" 2>&1 </dev/null) &
    echo "$!" >"$SYNAPSE_DEPLOYMENT_DIR/pids/$name.pid"
    launched[$name]="$EPOCHREALTIME"
}

# wait_synapse NAME PORT: until its /health answers; dies with its logs if it exits or hangs.
wait_synapse() {
    local name="$1" port="$2" t pid limit=${SYNAPSE_START_TIMEOUT:-300}
    pid="$(cat "$SYNAPSE_DEPLOYMENT_DIR/pids/$name.pid")"
    t="${launched[$name]}"
    until health_ok "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_logs "$SYNAPSE_LOG_DIR/$name.stdout" "$SYNAPSE_LOG_DIR/$name.log"
            die "Synapse $name exited before answering /health"
        fi
        if awk -v a="$t" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            show_logs "$SYNAPSE_LOG_DIR/$name.stdout" "$SYNAPSE_LOG_DIR/$name.log"
            die "Synapse $name: no /health on port $port after ${limit}s"
        fi
        sleep 0.2
    done
    echo "   $name healthy on http://127.0.0.1:$port, pid $pid ($(since "$t"))"
}

stop_pidfile() {
    local name="$1" f="$SYNAPSE_DEPLOYMENT_DIR/pids/$1.pid" pid i
    [ -f "$f" ] || return 0
    pid="$(cat "$f")"
    if is_proc "$pid" "$SYNAPSE_DEPLOYMENT_DIR"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 150); do is_proc "$pid" "$SYNAPSE_DEPLOYMENT_DIR" || break; sleep 0.1; done
        if is_proc "$pid" "$SYNAPSE_DEPLOYMENT_DIR"; then
            echo "   $name did not stop on SIGTERM in 15s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "   stopped $name (pid $pid)"
    fi
    rm -f "$f"
}

log_config() { # NAME: a Python logging config writing <dir>/logs/NAME.log
    cat >"$SYNAPSE_DEPLOYMENT_DIR/synapse/$1.log.config" <<EOF
version: 1
formatters:
  precise: {format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'}
filters:
  context: {(): synapse.logging.context.LoggingContextFilter}
handlers:
  file: {class: logging.FileHandler, filename: '$SYNAPSE_LOG_DIR/$1.log', formatter: precise, filters: [context]}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
}

write_configs() {
    local dir="$1"
    local repl_secret reg_secret macaroon_secret form_secret
    read -r repl_secret reg_secret macaroon_secret form_secret < <(secrets 4)
    read -r pg redis main_client main_repl sync_client w_repl w_client w_metrics redis_tls \
        main_fed remote_client remote_fed < <(free_ports 12)
    local server_name="${SYNAPSE_SERVER_NAME:-127.0.0.1:$main_fed}"
    local remote_name="127.0.0.1:$remote_fed"
    local q
    {
        echo "# Written by scripts/synapse-deployment.sh start; source it."
        for q in \
            "SYNAPSE_DEPLOYMENT_DIR=$dir" \
            "SYNAPSE_SERVER_NAME=$server_name" \
            "SYNAPSE_HOMESERVER_YAML=$dir/homeserver.yaml" \
            "SYNAPSE_SYNC_WORKER_YAML=$dir/sync1.yaml" \
            "SYNAPSE_MAIN_URL=http://127.0.0.1:$main_client" \
            "SYNAPSE_MAIN_REPLICATION_PORT=$main_repl" \
            "SYNAPSE_WORKER_URL=http://127.0.0.1:$sync_client" \
            "SYNAPSE_SHARED_SECRET=$reg_secret" \
            "SYNAPSE_REPLICATION_SECRET=$repl_secret" \
            "PRESENCED_WRITER_NAME=$writer_name" \
            "PRESENCED_WRITER_YAML=$dir/presenced-writer.yaml" \
            "PRESENCED_WRITER_REPLICATION_PORT=$w_repl" \
            "PRESENCED_WRITER_CLIENT_PORT=$w_client" \
            "PRESENCED_WRITER_METRICS_PORT=$w_metrics" \
            "SYNAPSE_PYTHONPATH=$repo/crates/presence-python/tests/python:$repo/crates/presenced/tests/python" \
            "SYNAPSE_ROUTED_WATCHER=@routed-watcher:$server_name" \
            "SYNAPSE_REMOTE_ROUTED_WATCHER=@far-watcher:remote.invalid" \
            "SYNAPSE_REMOTE=$remote" \
            "SYNAPSE_REMOTE_SERVER_NAME=$remote_name" \
            "SYNAPSE_REMOTE_URL=http://127.0.0.1:$remote_client" \
            "SYNAPSE_REMOTE_YAML=$dir/remote.yaml" \
            "SYNAPSE_REMOTE_WATCHER=@watcher:$remote_name" \
            "SYNAPSE_PG_HOST=$dir/pg/run" \
            "SYNAPSE_PG_PORT=$pg" \
            "SYNAPSE_PG_DB=synapse" \
            "SYNAPSE_PG_USER=synapse" \
            "SYNAPSE_PG_DSN=host=$dir/pg/run port=$pg user=synapse dbname=synapse" \
            "SYNAPSE_REDIS_HOST=127.0.0.1" \
            "SYNAPSE_REDIS_PORT=$redis" \
            "SYNAPSE_REDIS_TLS_PORT=$redis_tls" \
            "SYNAPSE_TLS_CA=$dir/tls/ca.crt" \
            "SYNAPSE_VENV=$venv" \
            "SYNAPSE_PYTHON=$venv/bin/python" \
            "SYNAPSE_LOG_DIR=$dir/logs" \
            "SYNAPSE_STOCK_WRITER=$stock"; do
            # Single quotes (no value holds one): readable, and safe to source.
            printf "export %s='%s'\n" "${q%%=*}" "${q#*=}"
        done
    } >"$dir/env"
    load_env "$dir"

    log_config main
    log_config sync1
    log_config "$writer_name"
    log_config remote
    "$SYNAPSE_VENV/bin/generate_signing_key" -o "$dir/synapse/signing.key"
    # Both servers' rate limits, out of the way of the tests.
    local rate_limits
    rate_limits="$(cat <<EOF
rc_presence: {per_user: {per_second: 1000, burst_count: 1000}}
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_joins_per_room: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
EOF
)"
    cat >"$dir/homeserver.yaml" <<EOF
# Shared by main and every worker (scripts/synapse-deployment.sh).
server_name: "$server_name"
public_baseurl: "$SYNAPSE_MAIN_URL/"
listeners:
  - {port: $main_client, type: http, tls: false, bind_addresses: ['127.0.0.1'], x_forwarded: true,
     resources: [{names: [client, federation], compress: false}]}
  - {port: $main_repl, type: http, tls: false, bind_addresses: ['127.0.0.1'],
     resources: [{names: [replication]}]}
  # Federation as other servers reach it: TLS on the port in the server name.
  - {port: $main_fed, type: http, tls: true, bind_addresses: ['127.0.0.1'],
     resources: [{names: [federation, keys], compress: false}]}
tls_certificate_path: '$dir/tls/server.crt'
tls_private_key_path: '$dir/tls/server.key'
database:
  name: psycopg2
  args: {user: $SYNAPSE_PG_USER, dbname: $SYNAPSE_PG_DB, host: '$SYNAPSE_PG_HOST', port: $pg,
         cp_min: 1, cp_max: 5}
log_config: '$dir/synapse/main.log.config'
media_store_path: '$dir/synapse/media'
signing_key_path: '$dir/synapse/signing.key'
registration_shared_secret: "$reg_secret"
macaroon_secret_key: "$macaroon_secret"
form_secret: "$form_secret"
enable_registration: false
report_stats: false
# No notary: keys come from the servers themselves, the remote Synapse on loopback (whose
# certificate is the throwaway CA's; Synapse checks IP-literal server names against the
# blacklist alone, so loopback must be off it).
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
federation_ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.1']
worker_replication_secret: "$repl_secret"
redis: {enabled: true, host: 127.0.0.1, port: $redis}
instance_map:
  main: {host: 127.0.0.1, port: $main_repl}
  $writer_name: {host: 127.0.0.1, port: $w_repl}
stream_writers:
  presence: $writer_name
# The example presence router, loaded by every process (Synapse's and Presenced): the routed
# watchers receive everyone's presence without sharing a room (the remote one's server does
# not exist: what Presenced asks Synapse's federation sender to send it is checked on the
# presence_federation stream). Tests that route to the remote Synapse's watcher give
# Presenced a router of its own that names it, so Synapse's processes do not send it.
presence:
  enabled: true
  presence_router:
    module: example_router.ExamplePresenceRouter
    config: {always_send_to_users: ['$SYNAPSE_ROUTED_WATCHER', '@far-watcher:remote.invalid'],
             blacklisted_users: []}
# A module of another kind, written against Synapse's internals: Synapse loads it, Presenced
# skips it with a warning.
modules:
  - module: deployment_modules.InternalsSpamChecker
    config: {}
# Tests hammer one user at a time: the defaults (rc_presence is 0.1/s) would give 429s.
$rate_limits
EOF
    # The remote server: a Synapse monolith of its own, on SQLite, whose example router sends
    # its users' presence to the deployment's routed watcher.
    cat >"$dir/remote.yaml" <<EOF
server_name: "$remote_name"
listeners:
  - {port: $remote_client, type: http, tls: false, bind_addresses: ['127.0.0.1'],
     resources: [{names: [client], compress: false}]}
  - {port: $remote_fed, type: http, tls: true, bind_addresses: ['127.0.0.1'],
     resources: [{names: [federation, keys], compress: false}]}
tls_certificate_path: '$dir/tls/server.crt'
tls_private_key_path: '$dir/tls/server.key'
database: {name: sqlite3, args: {database: '$dir/remote/homeserver.db'}}
log_config: '$dir/synapse/remote.log.config'
media_store_path: '$dir/remote/media'
signing_key_path: '$dir/remote/signing.key'
registration_shared_secret: "$reg_secret"
macaroon_secret_key: "$macaroon_secret"
form_secret: "$form_secret"
enable_registration: false
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
federation_ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.1']
presence:
  enabled: true
  presence_router:
    module: example_router.ExamplePresenceRouter
    config: {always_send_to_users: ['@watcher:$remote_name', '$SYNAPSE_ROUTED_WATCHER'],
             blacklisted_users: []}
$rate_limits
EOF
    mkdir -p "$dir/remote/media"
    "$SYNAPSE_VENV/bin/generate_signing_key" -o "$dir/remote/signing.key"
    cat >"$dir/sync1.yaml" <<EOF
worker_app: synapse.app.generic_worker
worker_name: sync1
worker_listeners:
  - {type: http, port: $sync_client, bind_addresses: ['127.0.0.1'], x_forwarded: true,
     resources: [{names: [client]}]}
worker_log_config: '$dir/synapse/sync1.log.config'
EOF
    # The presence writer's worker file: for Presenced, and for the stock writer of
    # --stock-writer (same name, same ports), so one can replace the other.
    cat >"$dir/presenced-writer.yaml" <<EOF
worker_app: synapse.app.generic_worker
worker_name: $writer_name
worker_listeners:
  - {type: http, port: $w_repl, bind_addresses: ['127.0.0.1'], resources: [{names: [replication]}]}
  - {type: http, port: $w_client, bind_addresses: ['127.0.0.1'], x_forwarded: true,
     resources: [{names: [client]}]}
  # Synapse's own worker ignores it (no enable_metrics); Presenced serves /metrics there.
  - {type: metrics, port: $w_metrics, bind_addresses: ['127.0.0.1']}
worker_log_config: '$dir/synapse/$writer_name.log.config'
EOF
}

# ---- subcommands -----------------------------------------------------------------------------

cmd_start() {
    local dir="" arg t0
    stock=0
    remote=1
    for arg in "$@"; do
        case "$arg" in
            --stock-writer) stock=1 ;;
            --no-remote) remote=0 ;;
            -*) die "unknown option $arg" ;;
            *) [ -z "$dir" ] || die "one directory only"; dir="$arg" ;;
        esac
    done
    [ -n "$dir" ] || die "usage: $0 start <dir> [--stock-writer] [--no-remote]"
    t0="$(now)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ ! -e "$dir/env" ] || die "$dir already holds a deployment: stop it and use a fresh directory"
    mkdir -p "$dir/logs" "$dir/pids" "$dir/synapse/media" "$dir/pg"
    say "Synapse deployment in $dir"
    ensure_packages "$dir"
    ensure_venv "$dir"
    write_configs "$dir"
    # From here on, a failure stops what was started (the logs stay in <dir>).
    trap 'echo "== start failed: stopping what was started" >&2; cmd_stop "$SYNAPSE_DEPLOYMENT_DIR" >&2' EXIT
    make_certs "$dir"
    init_postgres "$dir"
    say "Redis"
    start_redis
    # Main first: it runs the schema migrations on the empty database.
    launch_synapse main synapse.app.homeserver "$SYNAPSE_HOMESERVER_YAML"
    wait_synapse main "${SYNAPSE_MAIN_URL##*:}"
    # The workers together: each takes seconds of CPU to import Synapse, and neither needs the
    # other to start.
    if [ "$stock" = 1 ]; then
        launch_synapse "$writer_name" synapse.app.generic_worker \
            "$SYNAPSE_HOMESERVER_YAML" "$PRESENCED_WRITER_YAML"
    fi
    launch_synapse sync1 synapse.app.generic_worker \
        "$SYNAPSE_HOMESERVER_YAML" "$SYNAPSE_SYNC_WORKER_YAML"
    [ "$remote" = 0 ] || launch_synapse remote synapse.app.homeserver "$SYNAPSE_REMOTE_YAML"
    [ "$stock" = 0 ] || wait_synapse "$writer_name" "$PRESENCED_WRITER_CLIENT_PORT"
    wait_synapse sync1 "${SYNAPSE_WORKER_URL##*:}"
    [ "$remote" = 0 ] || wait_synapse remote "${SYNAPSE_REMOTE_URL##*:}"
    trap - EXIT
    say "deployment up in $(since "$t0"): source $dir/env"
    echo "   main $SYNAPSE_MAIN_URL, sync worker $SYNAPSE_WORKER_URL, presence writer '$writer_name'" \
        "on replication port $PRESENCED_WRITER_REPLICATION_PORT" \
        "($([ "$stock" = 1 ] && echo "stock Synapse worker" || echo "not started: start Presenced"))"
}

cmd_stop() {
    local dir
    dir="$(cd "$1" 2>/dev/null && pwd)" || { echo "== nothing to stop: no $1"; return 0; }
    [ -f "$dir/env" ] || { echo "== nothing to stop in $dir"; return 0; }
    load_env "$dir"
    say "stopping the deployment in $dir"
    # Workers before main, the databases last so Synapse can shut down cleanly.
    stop_pidfile sync1
    stop_pidfile "$writer_name"
    stop_pidfile remote
    stop_pidfile main
    stop_redis
    stop_postgres
    echo "   stopped"
}

main() {
    local cmd="${1:-}"
    [ $# -ge 2 ] || die "usage: $0 {start <dir> [--stock-writer] [--no-remote]|stop|env|restart-redis|restart-postgres|stop-redis|start-redis|stop-postgres|start-postgres|pause-postgres|resume-postgres|start-stock-writer|stop-stock-writer} <dir>"
    shift
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$1" ;;
        env) load_env "$1"; cat "$1/env" ;;
        stop-redis) load_env "$1"; say "Redis: stop"; stop_redis ;;
        start-redis) load_env "$1"; say "Redis: start"; start_redis ;;
        restart-redis) load_env "$1"; say "Redis: restart"; stop_redis; start_redis ;;
        stop-postgres) load_env "$1"; say "PostgreSQL: stop"; stop_postgres ;;
        start-postgres) load_env "$1"; say "PostgreSQL: start"; start_postgres ;;
        restart-postgres) load_env "$1"; say "PostgreSQL: restart"; stop_postgres; start_postgres ;;
        pause-postgres) load_env "$1"; say "PostgreSQL: pause (SIGSTOP)"; signal_postgres STOP ;;
        resume-postgres) load_env "$1"; say "PostgreSQL: resume (SIGCONT)"; signal_postgres CONT ;;
        start-stock-writer)
            load_env "$1"
            launch_synapse "$writer_name" synapse.app.generic_worker \
                "$SYNAPSE_HOMESERVER_YAML" "$PRESENCED_WRITER_YAML"
            wait_synapse "$writer_name" "$PRESENCED_WRITER_CLIENT_PORT" ;;
        stop-stock-writer) load_env "$1"; say "Synapse: stop $writer_name"; stop_pidfile "$writer_name" ;;
        *) die "unknown subcommand $cmd" ;;
    esac
}

main "$@"
