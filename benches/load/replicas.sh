#!/usr/bin/env bash
# Many replicas: three refold-proxy processes sharing one redis-server (tokens.store =
# "redis") against three with tokens.store = "memory". Mints per account per token
# lifetime, the latency an L1 miss served from Redis adds, and throughput on L1 hits with
# either store. See benches/load/README.md.
#
#   bash benches/load/replicas.sh [--accounts 300] [--mint-duration 10] [--latency-accounts 500]
#                                 [--runs 5] [--duration 10] [--connections 64] [--warmup 5]
#                                 [--out DIR] [--publish]

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCOUNTS=300 MINT_DURATION=10 MINT_CONNECTIONS=16 LAT_ACCOUNTS=500 LAT_CHUNK=50 RUNS=5 DURATION=10
CONNECTIONS=64 WARMUP=5 OUT="" PUBLISH=0
COMMAND="bash benches/load/replicas.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --accounts) ACCOUNTS="$2"; shift 2 ;;
        --mint-duration) MINT_DURATION="$2"; shift 2 ;;
        --latency-accounts) LAT_ACCOUNTS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --publish) PUBLISH=1; shift ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="${OUT:-$TARGET_DIR/load}"
COMMAND="${COMMAND% }"
HEADING="## Many replicas: the shared token store"

need_tools nginx:nginx wrk:wrk curl:curl openssl:openssl python3:python3 pgrep:procps \
    awk:gawk redis-server:redis-server redis-cli:redis-tools
build_proxy

RAW="$WORK/raw"
mkdir -p "$RAW"
metric() { python3 "$LOAD_DIR/load.py" metric "$@"; }

# ---------------------------------------------------------------- processes

UP_LOG_ACCOUNTS=1 start_upstream

REDIS_PORT="$(free_port)"
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
PIDS+=($!)
wait_listening "$REDIS_PORT"
log "redis-server on 127.0.0.1:$REDIS_PORT (pid ${PIDS[-1]})"

# Mint pacing (15 a second per replica by default, under Refold's limit) out of the way:
# the nginx upstream has no limit, and the figures are about the store, not the pacer.
MINT_TOML='[tokens]
max_mints_per_s = 100000
max_concurrent_mints = 64'
REDIS_TOML="$MINT_TOML
store = \"redis\"

[redis]
key_prefix = \"bench:\""
REDIS_ENV="REFOLD_PROXY_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ REFOLD_PROXY_STORE_KEYS=k1:$(openssl rand -base64 32)"

# start_group STORE: three replicas with that store, one API key for the three (the
# upstream's log then counts the group's mints). Sets PORT_<STORE>_<1..3>, ADMIN_..., PID_...
declare -A PORT ADMIN PID KEY
start_group() {
    local store="$1" i
    for i in 1 2 3; do
        if [ "$store" = redis ]; then
            REFOLD_EXTRA_TOML="$REDIS_TOML" REFOLD_EXTRA_ENV="$REDIS_ENV" \
                REFOLD_SHARED_KEY="tk_load_$store" start_refold "$store-$i" HS256
        else
            REFOLD_EXTRA_TOML="$MINT_TOML" REFOLD_SHARED_KEY="tk_load_$store" start_refold "$store-$i" HS256
        fi
        PORT[$store-$i]=$REFOLD_PORT ADMIN[$store-$i]=$REFOLD_ADMIN_PORT PID[$store-$i]=$REFOLD_PID
    done
    KEY[$store]=$REFOLD_KEY
}
start_group redis
start_group memory

# jwts PREFIX N FILE: N app JWTs naming the linked accounts PREFIX0 .. PREFIX<N-1>.
jwts() { python3 "$LOAD_DIR/load.py" hs256-jwts "$HS_SECRET" "$1" "$2" 86400 >"$3"; }

# A replica answers an app JWT of these with 200 and the upstream's body (one mint, for the
# account check-0, taken off the redis group's counts below).
jwts check- 1 "$WORK/jwts-check"
got="$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $(cat "$WORK/jwts-check")" \
    "http://127.0.0.1:${PORT[redis-1]}$API_PATH")"
[ "$got" = "$BODY"$'\n'200 ] || die "redis-1: expected 200 and the upstream's body, got: $got"
CHECK_MINTS=1

# ---------------------------------------------------------------- 1. mints per account

# mint_phase STORE: ACCOUNTS accounts through the group's three replicas at once, each wrk
# cycling through every account in the same order, so each account's first requests reach
# the three replicas together.
mint_phase() {
    local store="$1" i pids=() wrk_files=()
    # Prefixes of one length (red-, mem-), so both groups' requests are the same size.
    jwts "${store:0:3}-acct-" "$ACCOUNTS" "$WORK/jwts-$store"
    for i in 1 2 3; do
        JWT_FILE="$WORK/jwts-$store" WRK_SUMMARY="$LOAD_DIR/wrk-summary.lua" \
            WRK_OUT="$RAW/mints-$store-$i-wrk.json" \
            wrk -t1 -c"$MINT_CONNECTIONS" -d"$MINT_DURATION"s -s "$LOAD_DIR/wrk-accounts.lua" \
            "http://127.0.0.1:${PORT[$store-$i]}$API_PATH" >"$RAW/mints-$store-$i-wrk.txt" &
        pids+=($!)
        wrk_files+=("$RAW/mints-$store-$i-wrk.json")
    done
    for i in "${pids[@]}"; do wait "$i" || die "wrk failed in the $store mint phase"; done
    local per replica_mints upstream
    per="$(python3 "$LOAD_DIR/load.py" mint-accounts "$WORK/upstream/logs/mint-accounts.log" "${store:0:3}-acct-")"
    replica_mints="$(for i in 1 2 3; do metric "${ADMIN[$store-$i]}" refold_proxy_token_mints outcome=ok; done | paste -sd,)"
    upstream="$(mints_for "${KEY[$store]}")"
    [ "$store" = redis ] && upstream=$((upstream - CHECK_MINTS))
    [ "$store" = redis ] && replica_mints="$(python3 -c "import sys; v=[int(x) for x in sys.argv[1].split(',')]; v[0]-=$CHECK_MINTS; print(','.join(map(str,v)))" "$replica_mints")"
    printf '{"per_account":%s,"replica_mints_ok":[%s],"upstream_mints":%s,"wrk":[%s]}\n' \
        "$per" "$replica_mints" "$upstream" "$(cat "${wrk_files[@]}" | paste -sd,)" >"$RAW/mints-$store.json"
    log "mints ($store): $upstream for $ACCOUNTS accounts (replicas: $replica_mints)"
}
log "mints: $ACCOUNTS accounts through three replicas at once for $MINT_DURATION s, redis then memory"
mint_phase redis
mint_phase memory

# ---------------------------------------------------------------- 2. L1 miss from Redis

A="redis-1" B="redis-2"
for r in $(seq "$RUNS"); do
    jwts "lat-r$r-" "$LAT_ACCOUNTS" "$WORK/jwts-lat-$r"
    python3 "$LOAD_DIR/load.py" sequential "${PORT[$A]}" "$API_PATH" "$WORK/jwts-lat-$r" "$RAW/latency-r$r-warm.json"
    sleep 1 # A's writes to Redis are done, whether or not they finish before its answers
    summary="$(python3 "$LOAD_DIR/load.py" miss-hit "${PORT[$B]}" "${ADMIN[$B]}" "$API_PATH" \
        "$WORK/jwts-lat-$r" "$LAT_CHUNK" "$RAW/latency-r$r.json")"
    log "latency round $r/$RUNS: $summary"
done

# ---------------------------------------------------------------- 3. throughput

# One replica of each group, one account whose token both have in L1 (minted in step 1).
TP_JWT="$(head -n 1 "$WORK/jwts-redis")"
TP_JWT_MEMORY="$(head -n 1 "$WORK/jwts-memory")"
declare -A TP_TARGET=([redis]=redis-3 [memory]=memory-3) TP_AUTH=([redis]="Bearer $TP_JWT" [memory]="Bearer $TP_JWT_MEMORY")
run_wrk() { # STORE SECONDS OUTFILE
    WRK_OUT="$3" wrk -t1 -c"$CONNECTIONS" -d"$2"s --latency -s "$LOAD_DIR/wrk-summary.lua" \
        -H "Authorization: ${TP_AUTH[$1]}" "http://127.0.0.1:${PORT[${TP_TARGET[$1]}]}$API_PATH" >"$3.txt"
}
ticks() { python3 "$LOAD_DIR/load.py" proc "$1" | awk '{print $1}'; }
log "throughput: warm-up $WARMUP s per store, then $RUNS interleaved rounds of $DURATION s"
for store in redis memory; do run_wrk "$store" "$WARMUP" "$RAW/tp-warmup-$store-wrk.json"; done
for r in $(seq "$RUNS"); do
    # Redis first in odd rounds, memory first in even ones: neither always runs second.
    order="redis memory"
    [ $((r % 2)) = 0 ] && order="memory redis"
    for store in $order; do
        target="${TP_TARGET[$store]}"
        reads0="$(metric "${ADMIN[$target]}" refold_proxy_token_store_reads)"
        c0="$(ticks "${PID[$target]}")"
        run_wrk "$store" "$DURATION" "$RAW/tp-r$r-$store-wrk.json"
        c1="$(ticks "${PID[$target]}")"
        reads1="$(metric "${ADMIN[$target]}" refold_proxy_token_store_reads)"
        printf '{"ticks":%s,"store_reads":%s}\n' "$((c1 - c0))" "$((reads1 - reads0))" >"$RAW/tp-r$r-$store-cpu.json"
        log "round $r/$RUNS $store: $(python3 "$LOAD_DIR/load.py" rps "$RAW/tp-r$r-$store-wrk.json")"
    done
done

# ---------------------------------------------------------------- report

cat >"$RAW/meta.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "command": "$COMMAND",
  "clk_tck": $(getconf CLK_TCK),
  "settings": {"accounts": $ACCOUNTS, "mint_duration": $MINT_DURATION, "mint_connections": $MINT_CONNECTIONS, "latency_accounts": $LAT_ACCOUNTS, "latency_chunk": $LAT_CHUNK, "runs": $RUNS, "duration": $DURATION, "connections": $CONNECTIONS, "warmup": $WARMUP},
  "versions": "$(versions), $(redis-server --version | awk '{print $1, $3}' | sed 's/v=//'), wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}')"
}
EOF

mkdir -p "$OUT"
rm -rf "$OUT/raw-replicas" && cp -r "$RAW" "$OUT/raw-replicas"
status=0
python3 "$LOAD_DIR/load.py" replicas "$RAW" "$OUT" || status=1

if [ "$PUBLISH" = 1 ]; then
    [ -f "$ROOT/BENCHMARKS.md" ] || die "no BENCHMARKS.md to publish into (run run.sh --publish first)"
    python3 "$LOAD_DIR/load.py" publish-section "$ROOT/BENCHMARKS.md" "$HEADING" "$OUT/replicas.md" \
        "## Against the targets"
    log "published the section \"${HEADING#\#\# }\" of BENCHMARKS.md"
fi

echo
cat "$OUT/replicas.md"
echo
log "results in $OUT (replicas.json, replicas.md, raw-replicas/)"
exit "$status"
