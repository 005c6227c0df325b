#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind callgrind, for nginx as the proxy
# and for refold-proxy (HS256 app JWT on its own HTTP/1.1 loop; refold-hyper: the same on
# hyper, server.http1_fast_path = false; refold-es256 on request), each on one worker in
# front of the same nginx upstream. Each proxy runs twice under callgrind: warm-up + N requests, then
# warm-up + 2N; (Ir(2N) - Ir(N)) / N is the cost of one request, start-up and shutdown
# cancelled out. See benches/load/README.md.
#
#   bash benches/load/instructions.sh [--requests 2000] [--warmup 200] [--repeats 1]
#                                     [--targets "nginx refold-hs256 refold-hyper"] [--out DIR]

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REQUESTS=2000 WARMUP_REQUESTS=200 REPEATS=1 TARGETS_ARG="nginx refold-hs256 refold-hyper" OUT=""
COMMAND="bash benches/load/instructions.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift 2 ;;
        --warmup) WARMUP_REQUESTS="$2"; shift 2 ;;
        --repeats) REPEATS="$2"; shift 2 ;;
        --targets) TARGETS_ARG="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="${OUT:-$TARGET_DIR/load}"
COMMAND="${COMMAND% }"
read -r -a TARGETS <<<"$TARGETS_ARG"
for t in "${TARGETS[@]}"; do
    case "$t" in
        nginx | refold-hs256 | refold-hyper | refold-es256) ;;
        *) die "unknown target $t (nginx, refold-hs256, refold-hyper, refold-es256)" ;;
    esac
done

need_tools nginx:nginx curl:curl openssl:openssl python3:python3 valgrind:valgrind pgrep:procps \
    awk:gawk oha
build_proxy
start_upstream

RAW="$WORK/raw-instructions"
mkdir -p "$RAW"
OHA_JSON=(--output-format json)
oha --help 2>/dev/null | grep -q -- --output-format || OHA_JSON=(--json)

# drive PORT AUTH COUNT OUTFILE: exactly COUNT requests over one keep-alive connection.
drive() {
    oha --no-tui "${OHA_JSON[@]}" -n "$3" -c 1 -H "Authorization: $2" "http://127.0.0.1:$1$API_PATH" >"$4"
}

# measure TARGET REPEAT SIZE COUNT: one callgrind run of TARGET serving warm-up + COUNT requests.
measure() {
    local t="$1" rep="$2" size="$3" count="$4" port auth pid
    local cg=(valgrind --tool=callgrind --callgrind-out-file="$RAW/$t-$rep-$size.callgrind")
    case "$t" in
        nginx)
            write_nginx_proxy_conf "daemon off; master_process off;"
            port=$NGINX_PORT
            # nginx overwrites the header; same request size as refold-hs256.
            auth="Bearer $(APP_JWT_SECRET="$HS_SECRET" REFOLD_API_KEY=x "$BIN" --config "$HS_CONF" \
                sign-jwt --sub "$ACCOUNT" --ttl 1d)"
            "${cg[@]}" nginx -p "$NGINX_DIR" -c "$NGINX_CONF" -e "$NGINX_DIR/logs/error.log" \
                2>"$RAW/$t-$rep-$size.valgrind.log" &
            ;;
        refold-hs256 | refold-hyper | refold-es256)
            write_refold_conf "$t" "$(refold_alg "$t")"
            port=$REFOLD_PORT auth="Bearer $APP_JWT"
            # shellcheck disable=SC2046
            env $(refold_env) $(refold_target_env "$t") "${cg[@]}" "$BIN" --config "$REFOLD_CONF" \
                2>"$RAW/$t-$rep-$size.valgrind.log" &
            ;;
        *) die "unknown target $t (nginx, refold-hs256, refold-hyper, refold-es256)" ;;
    esac
    pid=$!
    PIDS+=("$pid")
    wait_listening "$port"
    drive "$port" "$auth" "$WARMUP_REQUESTS" "$RAW/$t-$rep-$size-warmup-oha.json"
    drive "$port" "$auth" "$count" "$RAW/$t-$rep-$size-oha.json"
    kill -TERM "$pid"
    wait "$pid" || true
    [ -s "$RAW/$t-$rep-$size.callgrind" ] || die "$t: callgrind wrote nothing (see $RAW/$t-$rep-$size.valgrind.log)"
    log "$t repeat $rep: warm-up $WARMUP_REQUESTS + $count requests counted"
}

# A config to sign nginx's (ignored) app JWT with.
write_refold_conf signer HS256
HS_CONF="$REFOLD_CONF"

for rep in $(seq "$REPEATS"); do
    for t in "${TARGETS[@]}"; do
        measure "$t" "$rep" n "$REQUESTS"
        measure "$t" "$rep" 2n $((2 * REQUESTS))
    done
done

targets_json="$(printf '"%s",' "${TARGETS[@]}")"
cat >"$RAW/meta.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "command": "$COMMAND",
  "requests": $REQUESTS,
  "warmup": $WARMUP_REQUESTS,
  "repeats": $REPEATS,
  "targets": [${targets_json%,}],
  "refold_log": "${REFOLD_LOG:-warn}",
  "versions": "$(versions), $(valgrind --version), $(oha --version)"
}
EOF

mkdir -p "$OUT"
rm -rf "$OUT/raw-instructions" && cp -r "$RAW" "$OUT/raw-instructions"
status=0
python3 "$LOAD_DIR/load.py" instructions "$RAW" "$OUT" || status=1
echo
cat "$OUT/instructions.md"
echo
log "results in $OUT (instructions.json, instructions.md, raw-instructions/)"
exit "$status"
