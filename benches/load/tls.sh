#!/usr/bin/env bash
# Load comparison in the production shape: TLS 1.3 on both legs. Callers over HTTPS
# (HTTP/1.1 with wrk, h2 with h2load), the nginx upstream over HTTPS with a test CA made
# for the run; nginx and refold-proxy each terminate and originate TLS with the same
# certificate, suite and group. refold-proxy runs twice: refold-hs256 (HTTP/1.1 callers on
# its own loop) and refold-hyper (server.http1_fast_path = false: hyper serves them; h2
# callers are hyper's on both). Interleaved rounds, medians, ratios, a JSON file and a
# Markdown table. See benches/load/README.md.
#
#   bash benches/load/tls.sh [--runs 5] [--duration 10] [--connections 64] [--streams 1]
#                            [--accounts 1000] [--warmup 5]
#                            [--targets "direct nginx refold-hs256 refold-hyper"] [--out DIR] [--publish]

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUNS=5 DURATION=10 CONNECTIONS=64 STREAMS=1 ACCOUNTS=1000 WARMUP=5 OUT="" PUBLISH=0
TARGETS_ARG="direct nginx refold-hs256 refold-hyper"
COMMAND="bash benches/load/tls.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --streams) STREAMS="$2"; shift 2 ;;
        --accounts) ACCOUNTS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --targets) TARGETS_ARG="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --publish) PUBLISH=1; shift ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="${OUT:-$TARGET_DIR/load}"
COMMAND="${COMMAND% }"
HEADING="## TLS: the production shape"
read -r -a TARGETS <<<"$TARGETS_ARG"
# nginx is the base of the ratios.
[[ " ${TARGETS[*]} " == *" nginx "* ]] || die "--targets must include nginx"
REFOLD_TARGETS=()
for t in "${TARGETS[@]}"; do
    case "$t" in
        direct | nginx) ;;
        refold-hs256 | refold-hyper) REFOLD_TARGETS+=("$t") ;;
        *) die "unknown target $t (direct, nginx, refold-hs256, refold-hyper)" ;;
    esac
done

need_tools nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl python3:python3 \
    pgrep:procps awk:gawk
build_proxy

# Requests in flight at most (h2: streams on every connection). Each proxy keeps at least
# as many idle upstream connections (nginx `keepalive` 64, refold-proxy
# `upstream.pool_max_idle_per_host` 256, raised when needed), so neither closes and
# reopens (a TLS handshake) upstream connections under the load.
IN_FLIGHT=$((CONNECTIONS * STREAMS))
KEEP_NGINX=$((IN_FLIGHT > 64 ? IN_FLIGHT : 64)) KEEP_REFOLD=$((IN_FLIGHT > 256 ? IN_FLIGHT : 256))

make_test_certs
UP_TLS=1 start_upstream
NGINX_TLS=1 NGINX_KEEPALIVE="$KEEP_NGINX" start_nginx_proxy
# Mint pacing out of the way: the warm-up mints one token per account at once.
MINT_TOML='[tokens]
max_mints_per_s = 100000
max_concurrent_mints = 64'
declare -A URL H2_URL JWTS H2_AUTH CPU_PIDS KEYS
for t in "${REFOLD_TARGETS[@]}"; do
    REFOLD_TLS=1 REFOLD_EXTRA_TOML="$MINT_TOML" REFOLD_UPSTREAM_TOML="pool_max_idle_per_host = $KEEP_REFOLD" \
        start_refold_target "$t"
    URL[$t]="https://127.0.0.1:$REFOLD_PORT$API_PATH" H2_URL[$t]="${URL[$t]}"
    CPU_PIDS[$t]="$REFOLD_PID" KEYS[$t]="$REFOLD_KEY"
    check_http1_path "$t" "${URL[$t]}"
done

RAW="$WORK/raw-tls"
mkdir -p "$RAW"

# HTTP/1.1 callers rotate ACCOUNTS app JWTs (wrk-accounts.lua); h2load sends one header set
# on every request, so the h2 callers all carry the first of them (see the README).
python3 "$LOAD_DIR/load.py" hs256-jwts "$HS_SECRET" tls-account- "$ACCOUNTS" 86400 >"$WORK/jwts"
echo "$STATIC_TOKEN" >"$WORK/jwt-direct"
H2_JWT="$(head -n 1 "$WORK/jwts")"

URL[direct]="https://127.0.0.1:$UP_TLS_PORT$API_PATH"
H2_URL[direct]="https://127.0.0.1:$UP_TLS_H2_PORT$API_PATH"
JWTS[direct]="$WORK/jwt-direct" H2_AUTH[direct]="Bearer $STATIC_TOKEN" CPU_PIDS[direct]=""
URL[nginx]="https://127.0.0.1:$NGINX_PORT$API_PATH" H2_URL[nginx]="${URL[nginx]}"
# nginx overwrites the header; it gets the same app JWTs, so requests are the same size.
JWTS[nginx]="$WORK/jwts" H2_AUTH[nginx]="Bearer $H2_JWT" CPU_PIDS[nginx]="$NGINX_WORKERS"
for t in "${REFOLD_TARGETS[@]}"; do
    JWTS[$t]="$WORK/jwts" H2_AUTH[$t]="Bearer $H2_JWT"
done

# up_accepts: connections the upstream has accepted so far, this request's own included.
up_accepts() { curl -s "http://127.0.0.1:$UP_PORT/upstream-status" | awk 'NR == 3 {print $1}'; }

# cpu_ticks PIDS: utime + stime summed over the processes ("null" for none).
cpu_ticks() {
    [ -n "$1" ] || { echo null; return; }
    local pid t ticks=0
    for pid in $1; do
        read -r t _ < <(python3 "$LOAD_DIR/load.py" proc "$pid")
        ticks=$((ticks + t))
    done
    echo "$ticks"
}

# Every target answers 200 with the upstream's body over HTTP/1.1 and over h2, TLS 1.3
# with the one suite.
for t in "${TARGETS[@]}"; do
    for v in 1.1 2; do
        url="${URL[$t]}"
        [ "$v" = 2 ] && url="${H2_URL[$t]}"
        got="$(curl -s --cacert "$TLS_CA" --tlsv1.3 --tls13-ciphers "$TLS_SUITE" --http"$v" \
            -w '\n%{http_code} %{http_version}' -H "Authorization: ${H2_AUTH[$t]}" "$url")"
        [ "$got" = "$BODY"$'\n'"200 $v" ] || die "$t over HTTP/$v: expected 200 and the upstream's body, got: $got"
    done
done
log "every target answers 200 with the upstream's body over HTTPS (HTTP/1.1 and h2)"

# What each client offers first: the probe server takes the client's first choice.
cat >"$WORK/probe.lua" <<'EOF'
local written = false
response = function(status, headers, body)
  if not written then
    local f = assert(io.open(os.getenv("PROBE_OUT"), "w"))
    f:write(body)
    f:close()
    written = true
  end
end
EOF
PROBE_OUT="$RAW/probe-wrk.txt" OPENSSL_CONF="$CLIENT_OPENSSL_CONF" \
    wrk -t1 -c1 -d1s -s "$WORK/probe.lua" "https://127.0.0.1:$UP_PROBE_PORT/" >/dev/null
h2load -n1 -c1 --tls13-ciphers="$TLS_SUITE" "https://127.0.0.1:$UP_PROBE_PORT/" >"$RAW/probe-h2load.txt"
PROBE_WRK="$(tr -d '\n' <"$RAW/probe-wrk.txt")"
PROBE_H2="$(awk '/^TLS Protocol:/ {p = $3} /^Cipher:/ {c = $2} /^Server Temp Key:/ {k = $4} END {print p, c, k}' "$RAW/probe-h2load.txt")"
log "wrk offers first: $PROBE_WRK; h2load negotiates: $PROBE_H2"

run_h1() { # TARGET SECONDS OUTFILE
    JWT_FILE="${JWTS[$1]}" WRK_SUMMARY="$LOAD_DIR/wrk-summary.lua" WRK_OUT="$3" \
        OPENSSL_CONF="$CLIENT_OPENSSL_CONF" \
        wrk -t1 -c"$CONNECTIONS" -d"$2"s --latency -s "$LOAD_DIR/wrk-accounts.lua" "${URL[$1]}" >"$3.txt"
}
run_h2() { # TARGET SECONDS OUTFILE
    h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D"$2" --tls13-ciphers="$TLS_SUITE" \
        -H "authorization: ${H2_AUTH[$1]}" "${H2_URL[$1]}" >"$3"
}

log "warm-up: ${WARMUP} s over HTTP/1.1 and ${WARMUP} s over h2 per target"
for t in "${TARGETS[@]}"; do
    run_h1 "$t" "$WARMUP" "$RAW/warmup-$t-h1.json"
    run_h2 "$t" "$WARMUP" "$RAW/warmup-$t-h2.txt"
done

for r in $(seq "$RUNS"); do
    for t in "${TARGETS[@]}"; do
        a0="$(up_accepts)" c0="$(cpu_ticks "${CPU_PIDS[$t]}")"
        run_h1 "$t" "$DURATION" "$RAW/r$r-$t-h1.json"
        c1="$(cpu_ticks "${CPU_PIDS[$t]}")" a1="$(up_accepts)"
        run_h2 "$t" "$DURATION" "$RAW/r$r-$t-h2.txt"
        c2="$(cpu_ticks "${CPU_PIDS[$t]}")" a2="$(up_accepts)"
        if [ "$c0" = null ]; then h1=null h2=null; else h1=$((c1 - c0)) h2=$((c2 - c1)); fi
        # Upstream connections opened during each run (less the status request's own).
        printf '{"h1_ticks":%s,"h2_ticks":%s,"h1_upstream_conns":%s,"h2_upstream_conns":%s}\n' \
            "$h1" "$h2" $((a1 - a0 - 1)) $((a2 - a1 - 1)) >"$RAW/r$r-$t-cpu.json"
        log "round $r/$RUNS $t: HTTP/1.1 $(python3 "$LOAD_DIR/load.py" rps "$RAW/r$r-$t-h1.json"); h2 $(awk '/^finished in/ {print $4, $5}' "$RAW/r$r-$t-h2.txt" | tr -d ,)"
    done
done

targets_json="$(printf '"%s",' "${TARGETS[@]}")"
mints_json="$(for t in "${REFOLD_TARGETS[@]}"; do printf '"%s":%s,' "$t" "$(mints_for "${KEYS[$t]}")"; done)"
accounts_json="$(for t in "${REFOLD_TARGETS[@]}"; do printf '"%s":%s,' "$t" "$ACCOUNTS"; done)"
cat >"$RAW/meta.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "command": "$COMMAND",
  "runs": $RUNS,
  "clk_tck": $(getconf CLK_TCK),
  "settings": {"runs": $RUNS, "duration": $DURATION, "connections": $CONNECTIONS, "streams": $STREAMS, "nginx_keepalive": $KEEP_NGINX, "refold_pool_max_idle": $KEEP_REFOLD, "in_flight": $IN_FLIGHT, "accounts": $ACCOUNTS, "warmup": $WARMUP, "refold_log": "${REFOLD_LOG:-warn}", "suite": "$TLS_SUITE", "group": "$TLS_GROUP"},
  "versions": "$(versions), $(openssl version | awk '{print $1, $2}'), wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'), $(h2load --version | head -n 1)",
  "negotiated": {"wrk": "$PROBE_WRK", "h2load": "$PROBE_H2"},
  "targets": [${targets_json%,}],
  "mints": {${mints_json%,}},
  "accounts": {${accounts_json%,}}
}
EOF

mkdir -p "$OUT"
rm -rf "$OUT/raw-tls" && cp -r "$RAW" "$OUT/raw-tls"
status=0
python3 "$LOAD_DIR/load.py" tls "$RAW" "$OUT" || status=1

if [ "$PUBLISH" = 1 ]; then
    [ -f "$ROOT/BENCHMARKS.md" ] || die "no BENCHMARKS.md to publish into (run run.sh --publish first)"
    before="## Against the targets"
    grep -q '^## Many replicas' "$ROOT/BENCHMARKS.md" && before="## Many replicas: the shared token store"
    python3 "$LOAD_DIR/load.py" publish-section "$ROOT/BENCHMARKS.md" "$HEADING" "$OUT/tls.md" "$before"
    log "published the section \"${HEADING#\#\# }\" of BENCHMARKS.md"
fi

echo
cat "$OUT/tls.md"
echo
log "results in $OUT (tls.json, tls.md, raw-tls/)"
exit "$status"
