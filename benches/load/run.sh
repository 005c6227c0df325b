#!/usr/bin/env bash
# Load comparison: direct to the upstream, nginx as the proxy, refold-proxy with an HS256
# app JWT on its own HTTP/1.1 loop (refold-hs256) and on hyper (refold-hyper:
# server.http1_fast_path = false); refold-es256 (an ES256 app JWT) with --targets.
# Interleaved rounds of a closed-loop run (wrk) and an open-loop run at a fixed rate (oha);
# medians, ratios, a JSON file, a Markdown table and a chart. See benches/load/README.md.
#
#   bash benches/load/run.sh [--runs 5] [--duration 10] [--rate 2000] [--connections 64]
#                            [--warmup 5] [--targets "direct nginx refold-hs256 refold-hyper"]
#                            [--out DIR] [--publish]

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUNS=5 DURATION=10 RATE=2000 CONNECTIONS=64 WARMUP=5 OUT="" PUBLISH=0
TARGETS_ARG="direct nginx refold-hs256 refold-hyper"
COMMAND="bash benches/load/run.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --targets) TARGETS_ARG="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --publish) PUBLISH=1; shift ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="${OUT:-$TARGET_DIR/load}"
COMMAND="${COMMAND% }"
read -r -a TARGETS <<<"$TARGETS_ARG"
# direct is the base of the added latencies, nginx of the ratios.
for t in direct nginx; do
    [[ " ${TARGETS[*]} " == *" $t "* ]] || die "--targets must include $t"
done
REFOLD_TARGETS=()
for t in "${TARGETS[@]}"; do
    case "$t" in
        direct | nginx) ;;
        refold-*) refold_alg "$t" >/dev/null; REFOLD_TARGETS+=("$t") ;;
        *) die "unknown target $t (direct, nginx, refold-hs256, refold-hyper, refold-es256)" ;;
    esac
done

need_tools nginx:nginx wrk:wrk curl:curl openssl:openssl python3:python3 gnuplot:gnuplot-nox \
    pgrep:procps awk:gawk oha
build_proxy

start_upstream
start_nginx_proxy
declare -A URL AUTH CPU_PIDS RSS_PIDS KEYS
HS_JWT=""
for t in "${REFOLD_TARGETS[@]}"; do
    start_refold_target "$t"
    URL[$t]="http://127.0.0.1:$REFOLD_PORT$API_PATH"
    AUTH[$t]="Bearer $APP_JWT"
    CPU_PIDS[$t]="$REFOLD_PID" RSS_PIDS[$t]="$REFOLD_PID" KEYS[$t]="$REFOLD_KEY"
    check_http1_path "$t" "${URL[$t]}"
    if [ "$(refold_alg "$t")" = HS256 ]; then HS_JWT="$APP_JWT"; fi
done
# nginx's (ignored) app JWT: HS256, the same request size as refold-hs256's.
if [ -z "$HS_JWT" ]; then
    write_refold_conf signer HS256
    HS_JWT="$APP_JWT"
fi

URL[direct]="http://127.0.0.1:$UP_PORT$API_PATH"
AUTH[direct]="Bearer $STATIC_TOKEN"
CPU_PIDS[direct]="" RSS_PIDS[direct]=""
URL[nginx]="http://127.0.0.1:$NGINX_PORT$API_PATH"
AUTH[nginx]="Bearer $HS_JWT" # nginx overwrites it; same request size as refold-hs256
CPU_PIDS[nginx]="$NGINX_WORKERS" RSS_PIDS[nginx]="$NGINX_MASTER $NGINX_WORKERS"

RAW="$WORK/raw"
mkdir -p "$RAW"

# sample PIDS: "cpu_ticks rss_kib" summed over the processes ("null null" for none).
sample() {
    [ -n "$1" ] || { echo "null null"; return; }
    local pid t r ticks=0 rss=0
    for pid in $1; do
        read -r t r < <(python3 "$LOAD_DIR/load.py" proc "$pid")
        ticks=$((ticks + t)) rss=$((rss + r))
    done
    echo "$ticks $rss"
}

# Idle RSS, before any request.
declare -A RSS_IDLE
for t in "${TARGETS[@]}"; do
    read -r _ "RSS_IDLE[$t]" < <(sample "${RSS_PIDS[$t]}")
done

# Every target answers the benchmark request with 200 and the upstream's body.
for t in "${TARGETS[@]}"; do
    got="$(curl -s -w '\n%{http_code}' -H "Authorization: ${AUTH[$t]}" "${URL[$t]}")"
    [ "$got" = "$BODY"$'\n'200 ] || die "$t: expected 200 and the upstream's body, got: $got"
done
log "every target answers 200 with the upstream's body"

OHA_JSON=(--output-format json)
oha --help 2>/dev/null | grep -q -- --output-format || OHA_JSON=(--json)

run_wrk() { # TARGET SECONDS OUTFILE
    WRK_OUT="$3" wrk -t1 -c"$CONNECTIONS" -d"$2"s --latency -s "$LOAD_DIR/wrk-summary.lua" \
        -H "Authorization: ${AUTH[$1]}" "${URL[$1]}" >"$3.txt"
}
run_oha() { # TARGET SECONDS OUTFILE
    oha --no-tui "${OHA_JSON[@]}" -z "$2s" -w -q "$RATE" -c "$CONNECTIONS" --latency-correction \
        -H "Authorization: ${AUTH[$1]}" "${URL[$1]}" >"$3"
}

log "warm-up: ${WARMUP} s closed loop and ${WARMUP} s open loop per target"
for t in "${TARGETS[@]}"; do
    run_wrk "$t" "$WARMUP" "$RAW/warmup-$t-wrk.json"
    run_oha "$t" "$WARMUP" "$RAW/warmup-$t-oha.json"
done

for r in $(seq "$RUNS"); do
    for t in "${TARGETS[@]}"; do
        read -r c0 _ < <(sample "${CPU_PIDS[$t]}")
        run_wrk "$t" "$DURATION" "$RAW/r$r-$t-wrk.json"
        read -r c1 _ < <(sample "${CPU_PIDS[$t]}")
        run_oha "$t" "$DURATION" "$RAW/r$r-$t-oha.json"
        read -r c2 _ < <(sample "${CPU_PIDS[$t]}")
        read -r _ rss < <(sample "${RSS_PIDS[$t]}")
        if [ "$c0" = null ]; then closed=null open=null; else closed=$((c1 - c0)) open=$((c2 - c1)); fi
        printf '{"closed_ticks":%s,"open_ticks":%s,"rss_after_kib":%s}\n' "$closed" "$open" "$rss" \
            >"$RAW/r$r-$t-cpu.json"
        log "round $r/$RUNS $t: $(python3 "$LOAD_DIR/load.py" rps "$RAW/r$r-$t-wrk.json")"
    done
done

rss_idle_json="$(for t in "${TARGETS[@]}"; do printf '"%s":%s,' "$t" "${RSS_IDLE[$t]}"; done)"
targets_json="$(printf '"%s",' "${TARGETS[@]}")"
mints_json="$(for t in "${REFOLD_TARGETS[@]}"; do printf '"%s":%s,' "$t" "$(mints_for "${KEYS[$t]}")"; done)"
accounts_json="$(for t in "${REFOLD_TARGETS[@]}"; do printf '"%s":1,' "$t"; done)"
cat >"$RAW/meta.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "command": "$COMMAND",
  "runs": $RUNS,
  "clk_tck": $(getconf CLK_TCK),
  "settings": {"runs": $RUNS, "duration": $DURATION, "rate": $RATE, "connections": $CONNECTIONS, "warmup": $WARMUP, "refold_log": "${REFOLD_LOG:-warn}"},
  "versions": "$(versions), wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'), $(oha --version)",
  "targets": [${targets_json%,}],
  "rss_idle_kib": {${rss_idle_json%,}},
  "mints": {${mints_json%,}},
  "accounts": {${accounts_json%,}}
}
EOF

mkdir -p "$OUT"
rm -rf "$OUT/raw" && cp -r "$RAW" "$OUT/raw"
status=0
python3 "$LOAD_DIR/load.py" report "$RAW" "$OUT" || status=1
gnuplot -e "datafile='$OUT/chart.dat'; outfile='$OUT/chart.png'; rate='$RATE'; conns='$CONNECTIONS'" "$LOAD_DIR/chart.gp" \
    || { log "chart failed"; status=1; }

if [ "$PUBLISH" = 1 ]; then
    cp "$OUT/chart.png" "$ROOT/benches/load/chart.png"
    cp "$OUT/load.json" "$ROOT/benches/load/results.json"
    {
        echo "# Benchmarks"
        echo
        echo "Generated by \`$COMMAND\`$( [ -f "$OUT/instructions.md" ] && echo " and \`$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["command"])' "$OUT/instructions.json")\`")."
        echo "What the figures mean: [benches/load/README.md](benches/load/README.md)."
        echo
        echo "## Load comparison"
        echo
        sed 's|](chart.png)|](benches/load/chart.png)|' "$OUT/load.md"
        if [ -f "$OUT/instructions.md" ]; then
            echo
            echo "## Instructions per request"
            echo
            cat "$OUT/instructions.md"
        fi
        # Written by tls.sh and replicas.sh, kept when this script publishes again.
        if [ -f "$OUT/tls.md" ]; then
            echo
            echo "## TLS: the production shape"
            echo
            cat "$OUT/tls.md"
        fi
        if [ -f "$OUT/replicas.md" ]; then
            echo
            echo "## Many replicas: the shared token store"
            echo
            cat "$OUT/replicas.md"
        fi
        # The reading of the figures against the targets, written by hand after a run.
        if [ -f "$ROOT/benches/load/targets.md" ]; then
            echo
            cat "$ROOT/benches/load/targets.md"
        fi
    } >"$ROOT/BENCHMARKS.md"
    log "published BENCHMARKS.md, benches/load/chart.png and benches/load/results.json"
fi

echo
cat "$OUT/load.md"
echo
log "results in $OUT (load.json, load.md, chart.png, raw/)"
exit "$status"
