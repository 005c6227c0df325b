#!/usr/bin/env bash
# Three replicas sharing one Redis (or Valkey) server, on this machine, in front of the
# stand-in Refold API: a trial of the fleet in deploy/replicas/proxy.toml, with nothing
# to reach but loopback. Ctrl-C stops everything it started.
#
#   bash deploy/replicas/run-local.sh
#
# Needs redis-server or valkey-server (Debian: apt-get install redis-server), and builds
# refold-proxy with cargo. Replicas listen on 127.0.0.1:8081-8083 (admin 9911-9913).
set -euo pipefail
cd "$(dirname "$0")/../.."

server="$(command -v valkey-server || command -v redis-server || true)"
[ -n "$server" ] || { echo "needs redis-server or valkey-server (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet --bin refold-proxy
bin=target/release/refold-proxy

work="$(mktemp -d "${TMPDIR:-/tmp}/refold-replicas.XXXXXX")"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT INT TERM

export REFOLD_API_KEY=tk_local_trial_key
export APP_JWT_SECRET=local-trial-signing-secret-0123456789abcdef
export REFOLD_PROXY_REDIS_URL=redis://127.0.0.1:6390
export REFOLD_PROXY_STORE_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
export REFOLD_PROXY_FINGERPRINT_KEY="$(head -c 32 /dev/urandom | base64)"
export REFOLD_PROXY_ADMIN_TOKEN="$(head -c 32 /dev/urandom | base64)"

"$server" --port 6390 --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
    >"$work/redis.log" 2>&1 &
pids+=($!)
"$bin" mock-upstream --listen 127.0.0.1:9000 --api-key "$REFOLD_API_KEY" \
    --accounts demo-user,demo-user-2 >"$work/upstream.log" 2>&1 &
pids+=($!)

for i in 1 2 3; do
    # The fleet's file, on local ports and the local stand-in (plain http on loopback).
    sed -e "s|0.0.0.0:8080|127.0.0.1:808$i|" -e "s|0.0.0.0:9901|127.0.0.1:991$i|" \
        -e "s|https://app.refold.ai|http://127.0.0.1:9000|" \
        -e 's|^trusted_proxies = .*|trusted_proxies = []|' \
        deploy/replicas/proxy.toml >"$work/replica-$i.toml"
    "$bin" --config "$work/replica-$i.toml" --log-format json >"$work/replica-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:991$i/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "replica $i: http://127.0.0.1:808$i  (readyz: $(curl -fsS "http://127.0.0.1:991$i/readyz"))"
done

jwt="$("$bin" --config "$work/replica-1.toml" sign-jwt --sub demo-user)"
cat <<TRY

Three replicas share one session token per account. Send the same caller to each:

  for port in 8081 8082 8083; do
    curl -s http://127.0.0.1:\$port/api/v2/public/workflow -H "Authorization: Bearer $jwt"; echo
  done

then count the mints (one, on whichever replica went first):

  for port in 9911 9912 9913; do
    curl -s http://127.0.0.1:\$port/metrics | grep 'token_mints_total{outcome="ok"}'
  done

Stop Redis (kill the redis-server) and the replicas keep serving, minting on their own;
start it again and they share once more. Ctrl-C stops everything. Logs: $work
TRY
wait
