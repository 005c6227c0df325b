# shellcheck shell=bash disable=SC2034  # sourced: the scripts read the variables it sets
# Shared by run.sh, instructions.sh, replicas.sh and tls.sh: tools, build, configs, starting and stopping the
# upstream, the nginx proxy and refold-proxy. Sourced, not run. Everything lives in a
# temporary directory; every process started is recorded and stopped on exit.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOAD_DIR="$ROOT/benches/load"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/refold-proxy"
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

# The path the benchmark requests, and the account every app JWT names.
API_PATH="/api/v2/public/workflow"
ACCOUNT="load-account"
# About 200 bytes, shaped like Refold's answer to GET /api/v2/public/workflow.
BODY='{"docs":[{"_id":"66a1f0c2e4b0a1b2c3d4e5f6","name":"Create ticket","slug":"freshdesk","alias":"create-ticket","enabled":true,"version":3}],"totalDocs":1,"limit":10,"page":1,"totalPages":1}'

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        as_root apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# need_tools CMD:PACKAGE ... installs the Debian package of every missing command; "oha"
# comes from `cargo install oha --locked`.
need_tools() {
    local missing=() spec cmd pkg
    for spec in "$@"; do
        cmd="${spec%%:*}" pkg="${spec#*:}"
        [ "$cmd" = oha ] && continue
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" = 0 ] || apt_install "${missing[@]}"
    for spec in "$@"; do
        if [ "${spec%%:*}" = oha ] && ! command -v oha >/dev/null 2>&1; then
            log "cargo install oha --locked (a few minutes)"
            cargo install oha --locked >&2
        fi
    done
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to build refold-proxy (https://rustup.rs)"
}

build_proxy() {
    log "cargo build --release"
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin refold-proxy >&2
    [ -x "$BIN" ] || die "no binary at $BIN after the build"
}

versions() {
    local v_nginx v_proxy v_git
    v_nginx="$(nginx -v 2>&1 | sed 's|.*nginx/||')"
    v_proxy="$("$BIN" --version | awk '{print $2}')"
    v_git="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
        v_git="$v_git+changes"
    fi
    printf 'refold-proxy %s (%s), nginx %s' "$v_proxy" "$v_git" "$v_nginx"
}

# ---------------------------------------------------------------- processes

WORK="$(mktemp -d "${TMPDIR:-/tmp}/refold-load.XXXXXX")"
PIDS=()          # processes to stop, in start order
NGINX_PIDFILES=() # daemonised nginx masters, found through their pid files

stop_all() {
    local status=$? pid pidfile i
    trap - EXIT INT TERM
    for pidfile in "${NGINX_PIDFILES[@]}"; do
        if [ -s "$pidfile" ]; then PIDS+=("$(cat "$pidfile")"); fi
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 "$LOAD_DIR/load.py" port; }

# wait_listening PORT: until something listens on 127.0.0.1:PORT, sending no request (so
# instruction counts see none).
wait_listening() {
    local port="$1" hex
    hex="$(printf '%04X' "$port")"
    for _ in $(seq 1200); do
        if awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p {f = 1} END {exit !f}' /proc/net/tcp; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$port"
}

# ---------------------------------------------------------------- TLS (tls.sh)

# The one TLS 1.3 cipher suite every leg negotiates, and the one key-exchange group.
TLS_SUITE="TLS_AES_128_GCM_SHA256"
TLS_GROUP="X25519"

# make_test_certs: a test CA and a server certificate it signs (ECDSA P-256, names
# localhost and 127.0.0.1), made for this run in WORK/tls, as certs/README.md makes the dev
# pair. Sets TLS_CA, TLS_CERT, TLS_KEY, and CLIENT_OPENSSL_CONF: an OpenSSL configuration
# for the OpenSSL-based clients (wrk, curl) that offers TLS 1.3 with TLS_SUITE only.
make_test_certs() {
    local dir="$WORK/tls"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key.pem" -out "$dir/ca.pem" -days 2 -subj "/CN=refold-proxy load test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/server.key.pem" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key.pem" \
        -CAcreateserial -out "$dir/server.pem" -days 2 -extfile "$dir/ext.cnf" 2>/dev/null
    TLS_CA="$dir/ca.pem" TLS_CERT="$dir/server.pem" TLS_KEY="$dir/server.key.pem"
    CLIENT_OPENSSL_CONF="$dir/client-openssl.cnf"
    cat >"$CLIENT_OPENSSL_CONF" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = $TLS_SUITE
Groups = $TLS_GROUP
EOF
    log "test CA and server certificate in $dir"
}

# nginx_tls_server: the server-side TLS directives of an nginx server block: TLS 1.3 only,
# TLS_SUITE only, TLS_GROUP only, the test certificate.
nginx_tls_server() {
    cat <<EOF
        ssl_certificate $TLS_CERT;
        ssl_certificate_key $TLS_KEY;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites $TLS_SUITE;
        ssl_ecdh_curve $TLS_GROUP;
EOF
}

# ---------------------------------------------------------------- upstream (nginx)

# start_upstream: nginx, one worker, serving BODY for GET API_PATH when the request carries
# `Authorization: Bearer STATIC_TOKEN` (401 otherwise), and the session-token endpoint
# answering STATIC_TOKEN. Each mint is one line of mints.log, naming the API key. With
# UP_LOG_ACCOUNTS=1 each mint's body (its linked_account_id) is also one line of
# mint-accounts.log: nginx reads a body only to pass it on, so the mint is then answered
# through a second location of the same server. With UP_TLS=1 (after make_test_certs) the
# same server also listens with TLS on UP_TLS_PORT (HTTP/1.1 only: no h2 in ALPN, so both
# proxies speak HTTP/1.1 to it, nginx can do nothing else) and on UP_TLS_H2_PORT (h2 too,
# for callers straight to it), and a second server on
# UP_PROBE_PORT answers every request with the TLS version, suite and group it negotiated,
# honouring the client's order (which suite a client offers first). Its plaintext port
# then also serves nginx's stub_status at /upstream-status (connections accepted so far).
start_upstream() {
    UP_PORT="$(free_port)"
    local tls_listen="" tls_conf="" probe_server=""
    if [ "${UP_TLS:-0}" = 1 ]; then
        UP_TLS_PORT="$(free_port)" UP_TLS_H2_PORT="$(free_port)" UP_PROBE_PORT="$(free_port)"
        tls_listen="listen 127.0.0.1:$UP_TLS_PORT ssl backlog=4096;
        listen 127.0.0.1:$UP_TLS_H2_PORT ssl http2 backlog=4096;"
        tls_conf="$(nginx_tls_server)
        location = /upstream-status { stub_status; }"
        probe_server="server {
        listen 127.0.0.1:$UP_PROBE_PORT ssl;
        ssl_certificate $TLS_CERT;
        ssl_certificate_key $TLS_KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256;
        ssl_prefer_server_ciphers off;
        location / { return 200 '\$ssl_protocol \$ssl_cipher \$ssl_curve\\n'; }
    }"
    fi
    STATIC_TOKEN="$(python3 "$LOAD_DIR/load.py" refold-token)"
    local dir="$WORK/upstream" mint_answer
    mkdir -p "$dir/logs"
    : >"$dir/logs/mints.log"
    : >"$dir/logs/mint-accounts.log"
    mint_answer="return 200 '{\"token\":\"$STATIC_TOKEN\",\"expires_in\":2592000}';"
    local mint_location="$mint_answer" answer_location=""
    if [ "${UP_LOG_ACCOUNTS:-0}" = 1 ]; then
        mint_location="access_log $dir/logs/mint-accounts.log mint_account;
            proxy_pass http://127.0.0.1:$UP_PORT/mint-answer;"
        answer_location="location = /mint-answer { $mint_answer }"
    fi
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    default_type application/json;
    log_format mint '\$request_method \$uri \$status key=\$http_x_api_key';
    log_format mint_account escape=json '\$request_body';
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        $tls_listen
$tls_conf
        location = $API_PATH {
            if (\$http_authorization != "Bearer $STATIC_TOKEN") {
                return 401 '{"status_code":401,"http_error_type":"UNAUTHORIZED","error":"INVALID_TOKEN","message":"Invalid token"}';
            }
            return 200 '$BODY';
        }
        location = /api/v2/public/session-token {
            access_log $dir/logs/mints.log mint;
            if (\$http_x_api_key = "") {
                return 401 '{"status_code":401,"http_error_type":"UNAUTHORIZED","error":"UNAUTHORIZED","message":"Invalid Credentials"}';
            }
            $mint_location
        }
        $answer_location
        location / {
            return 404 '{"status_code":404,"http_error_type":"NOT_FOUND","error":"NOT_FOUND","message":"Not found"}';
        }
    }
    $probe_server
}
EOF
    mkdir -p "$dir/tmp"
    NGINX_PIDFILES+=("$dir/nginx.pid")
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
    wait_listening "$UP_PORT"
    UP_MASTER="$(cat "$dir/nginx.pid")"
    UP_WORKERS="$(pgrep -P "$UP_MASTER" | tr '\n' ' ')"
    [ "${UP_TLS:-0}" = 1 ] && wait_listening "$UP_TLS_PORT"
    log "upstream nginx on 127.0.0.1:$UP_PORT${UP_TLS_PORT:+ and with TLS on $UP_TLS_PORT} (master $UP_MASTER, worker $UP_WORKERS)"
}

# mints_for KEY: mint requests the upstream answered for that API key.
mints_for() { grep -c "^POST /api/v2/public/session-token 200 key=$1\$" "$WORK/upstream/logs/mints.log" || true; }

# ---------------------------------------------------------------- nginx proxy

# write_nginx_proxy_conf: the proxy a team would build instead, in front of the upstream.
# EXTRA (optional) is added at the top level (instructions.sh: "daemon off; master_process off;").
# With NGINX_TLS=1 (after make_test_certs, in front of an upstream started with UP_TLS=1)
# it terminates TLS 1.3 (HTTP/1.1 and h2 on the listener, by ALPN) and originates TLS 1.3
# to the upstream's TLS port, verifying it with the test CA, sessions reused.
# NGINX_KEEPALIVE (64) is the upstream block's `keepalive`: idle connections kept. Requests
# in flight beyond it open connections that close after their answer (with TLS, a handshake
# each), so it must be at least the requests in flight.
write_nginx_proxy_conf() {
    NGINX_PORT="$(free_port)"
    local dir="$WORK/nginx-proxy"
    mkdir -p "$dir/logs" "$dir/tmp"
    local listen="listen 127.0.0.1:$NGINX_PORT backlog=4096;" up_port="$UP_PORT" scheme=http
    local server_tls="" proxy_tls=""
    if [ "${NGINX_TLS:-0}" = 1 ]; then
        listen="listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;"
        up_port="$UP_TLS_PORT" scheme=https
        server_tls="$(nginx_tls_server)"
        # proxy_ssl_name: nginx checks the certificate's DNS names, not its IP addresses.
        proxy_tls="proxy_ssl_protocols TLSv1.3;
            proxy_ssl_conf_command Ciphersuites $TLS_SUITE;
            proxy_ssl_conf_command Groups $TLS_GROUP;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $TLS_CA;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;"
    fi
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
${1:-}
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    upstream refold {
        server 127.0.0.1:$up_port;
        keepalive ${NGINX_KEEPALIVE:-64};
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }
    server {
        $listen
$server_tls
        location / {
            proxy_pass $scheme://refold;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $STATIC_TOKEN";
            $proxy_tls
        }
    }
}
EOF
    NGINX_CONF="$dir/nginx.conf"
    NGINX_DIR="$dir"
}

start_nginx_proxy() {
    write_nginx_proxy_conf ""
    NGINX_PIDFILES+=("$NGINX_DIR/nginx.pid")
    nginx -p "$NGINX_DIR" -c "$NGINX_CONF" -e "$NGINX_DIR/logs/error.log"
    wait_listening "$NGINX_PORT"
    NGINX_MASTER="$(cat "$NGINX_DIR/nginx.pid")"
    NGINX_WORKERS="$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
    log "nginx proxy on 127.0.0.1:$NGINX_PORT (master $NGINX_MASTER, worker $NGINX_WORKERS)"
}

# ---------------------------------------------------------------- refold-proxy

HS_SECRET="load-bench-hs256-secret-0123456789abcdef"

# write_refold_conf NAME ALG: config for one refold-proxy (ALG HS256 or ES256), one
# runtime worker, rate limits out of the way. Sets REFOLD_PORT, REFOLD_ADMIN_PORT,
# REFOLD_CONF, REFOLD_KEY (the API key it mints with, so mints are counted per instance,
# unless REFOLD_SHARED_KEY names one for several) and APP_JWT. REFOLD_EXTRA_TOML (optional)
# is appended to the config. With REFOLD_TLS=1 (after make_test_certs, in front of an
# upstream started with UP_TLS=1) it serves HTTPS with the test certificate (`[server.tls]`)
# and reaches the upstream's TLS port, trusting the test CA (`upstream.ca_file`).
# REFOLD_UPSTREAM_TOML (optional) is added to the [upstream] table.
write_refold_conf() {
    local name="$1" alg="$2" dir="$WORK/$1"
    mkdir -p "$dir"
    local base_url="http://127.0.0.1:$UP_PORT" upstream_tls="" server_tls=""
    if [ "${REFOLD_TLS:-0}" = 1 ]; then
        base_url="https://127.0.0.1:$UP_TLS_PORT"
        upstream_tls="ca_file = \"$TLS_CA\""
        server_tls="
[server.tls]
cert_file = \"$TLS_CERT\"
key_file = \"$TLS_KEY\""
    fi
    REFOLD_PORT="$(free_port)"
    REFOLD_ADMIN_PORT="$(free_port)"
    REFOLD_KEY="${REFOLD_SHARED_KEY:-tk_load_$name}"
    local identity
    case "$alg" in
        HS256) identity="algorithms = [\"HS256\"]
hs_secret_env = \"APP_JWT_SECRET\"" ;;
        ES256) identity="algorithms = [\"ES256\"]
public_key_file = \"$ROOT/tests/keys/es256.pub.pem\"
allow_missing_issuer_audience = true" ;;
        *) die "unknown algorithm $alg" ;;
    esac
    cat >"$dir/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$REFOLD_PORT"
shutdown_grace_s = 2
worker_threads = 1
$server_tls

[admin]
listen = "127.0.0.1:$REFOLD_ADMIN_PORT"

[upstream]
base_url = "$base_url"
api_key_env = "REFOLD_API_KEY"
$upstream_tls
${REFOLD_UPSTREAM_TOML:-}

[identity]
$identity

[limits]
max_connections = 10000
per_account_rps = 1000000.0
per_account_burst = 1000000
max_in_flight = 100000
per_account_in_flight = 100000
${REFOLD_EXTRA_TOML:-}
EOF
    REFOLD_CONF="$dir/proxy.toml"
    case "$alg" in
        HS256)
            # shellcheck disable=SC2046
            APP_JWT="$(env $(refold_env) "$BIN" --config "$REFOLD_CONF" sign-jwt --sub "$ACCOUNT" --ttl 1d)"
            ;;
        ES256) APP_JWT="$(python3 "$LOAD_DIR/load.py" es256-jwt "$ROOT/tests/keys/es256.key.pem" "$ACCOUNT" 86400)" ;;
    esac
    # shellcheck disable=SC2046
    env $(refold_env) "$BIN" --check-config "$REFOLD_CONF" >/dev/null \
        || die "refold-proxy refuses $REFOLD_CONF"
}

# refold_env: the environment refold-proxy runs with (secrets through the named variables;
# logs at warn, so the per-request access line at info is off), plus REFOLD_EXTRA_ENV
# (optional, VAR=value words without spaces: the [redis] table's variables).
refold_env() {
    echo "APP_JWT_SECRET=$HS_SECRET REFOLD_API_KEY=$REFOLD_KEY RUST_LOG=${REFOLD_LOG:-warn} ${REFOLD_EXTRA_ENV:-}"
}

# start_refold NAME ALG: starts one refold-proxy; sets REFOLD_PID and the variables of
# write_refold_conf.
start_refold() {
    write_refold_conf "$1" "$2"
    # shellcheck disable=SC2046
    env $(refold_env) "$BIN" --config "$REFOLD_CONF" 2>"$WORK/$1/proxy.log" &
    REFOLD_PID=$!
    PIDS+=("$REFOLD_PID")
    wait_listening "$REFOLD_PORT"
    # Serving (not only bound): a request without an app JWT gets 401 and mints nothing.
    local scheme=http
    [ "${REFOLD_TLS:-0}" = 1 ] && scheme=https
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' ${TLS_CA:+--cacert "$TLS_CA"} "$scheme://127.0.0.1:$REFOLD_PORT$API_PATH")" = 401 ] && break
        sleep 0.1
    done
    log "refold-proxy $1 ($2) on 127.0.0.1:$REFOLD_PORT (pid $REFOLD_PID)"
}

# ---------------------------------------------------------------- refold-proxy targets

# The refold-proxy targets: refold-hs256 (HS256 app JWT), refold-es256 (ES256 app JWT) and
# refold-hyper: refold-hs256 with `server.http1_fast_path = false`
# (REFOLD_PROXY__SERVER__HTTP1_FAST_PATH=false in its environment), so hyper serves every
# connection as it did before the proxy's own HTTP/1.1 loop. Measured in the same run as
# refold-hs256, it shows what that loop buys.
refold_alg() {
    case "$1" in
        refold-hs256 | refold-hyper) echo HS256 ;;
        refold-es256) echo ES256 ;;
        *) die "unknown refold-proxy target $1 (refold-hs256, refold-hyper, refold-es256)" ;;
    esac
}
refold_target_env() {
    case "$1" in
        refold-hyper) echo "REFOLD_PROXY__SERVER__HTTP1_FAST_PATH=false" ;;
        *) echo "" ;;
    esac
}

# start_refold_target TARGET: start_refold with the target's algorithm and environment.
start_refold_target() {
    local alg extra
    alg="$(refold_alg "$1")" extra="$(refold_target_env "$1")"
    REFOLD_EXTRA_ENV="${REFOLD_EXTRA_ENV:-} $extra" start_refold "$1" "$alg"
}

# check_http1_path TARGET URL: the target serves HTTP/1.1 on the path its name says. One
# HTTP/1.0 request, which the proxy's own loop hands to hyper
# (refold_proxy_http1_handoffs_total on the admin listener, REFOLD_ADMIN_PORT of the target):
# the counter moves for refold-hs256 and refold-es256 and stays 0 for refold-hyper, whose
# connections all go to hyper. Call it right after start_refold_target.
check_http1_path() {
    local target="$1" url="$2" before after
    before="$(python3 "$LOAD_DIR/load.py" metric "$REFOLD_ADMIN_PORT" refold_proxy_http1_handoffs)"
    # --no-alpn: over TLS the proxy offers h2 and http/1.1 only, and refuses curl's http/1.0.
    curl -s -o /dev/null --http1.0 --no-alpn ${TLS_CA:+--cacert "$TLS_CA"} "$url" || die "$target: no answer over HTTP/1.0"
    after="$(python3 "$LOAD_DIR/load.py" metric "$REFOLD_ADMIN_PORT" refold_proxy_http1_handoffs)"
    if [ -n "$(refold_target_env "$target")" ]; then
        [ "$after" = 0 ] || die "$target: its own HTTP/1.1 loop handed $after connection(s) to hyper; it should be off"
    else
        [ "$after" -gt "$before" ] || die "$target: no HTTP/1.0 handoff counted; is the proxy's own HTTP/1.1 loop on?"
    fi
    log "$target: HTTP/1.1 served by $([ -n "$(refold_target_env "$target")" ] && echo hyper || echo "the proxy's own loop")"
}
