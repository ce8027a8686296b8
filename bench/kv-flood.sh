#!/usr/bin/env bash
# bench/kv-flood.sh - the gateway's memory while clients flood `rate-limit` with keys.
#
# One Weir (1 worker) with `rate-limit` keyed by a header (`key = "header:x-client"`,
# 1000 a minute), in front of the benchmarks' nginx origin; wrk sends a new x-client
# value on every request for $DURATION s. Prints the gateway's RSS before and every 5 s,
# the requests answered 200 and 429, and what the plugin holds in the store
# (`weir_kv_entries`, `weir_kv_bytes`). With the `[kv]` bounds the RSS levels off; without
# them (a gateway built before them) it grows with every key.
#
#   bench/kv-flood.sh                       # builds weir (release) and the plugins first
#   WEIR_BIN=path/to/weir PLUGIN=path/to/rate-limit.wasm bench/kv-flood.sh
# Environment: DURATION=30 CONNS=64 KV_MAX_ENTRIES (unset: the default, 100000)
set -euo pipefail

HOST=127.0.0.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/upstream.sh"

DURATION=${DURATION:-30}
CONNS=${CONNS:-64}
UP_PORT=18080
WEIR_PORT=18097
ADMIN_PORT=18098
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
log() { echo "[kv-flood] $*" >&2; }

if [[ -z ${WEIR_BIN:-} ]]; then
  log "cargo build --release -p weir-gateway"
  (cd "$ROOT" && cargo build --release -q -p weir-gateway)
  WEIR_BIN=$ROOT/target/release/weir
fi
if [[ -z ${PLUGIN:-} ]]; then
  log "cargo xtask plugins"
  (cd "$ROOT" && cargo xtask plugins >&2)
  PLUGIN=$ROOT/target/weir-plugins/rate-limit.wasm
fi

OUT=$(mktemp -d /tmp/weir-kv-flood.XXXXXX)
PIDS=()
trap stop_started EXIT
mkdir -p "$OUT/plugins" "$OUT/tmp/upstream"
cp "$PLUGIN" "$OUT/plugins/rate-limit.wasm"
upstream_conf "$OUT" "$HOST:$UP_PORT" >"$OUT/upstream.conf"
{
  printf '[server]\nlisten = "%s:%s"\nworkers = 1\naccess_log = false\n\n' "$HOST" "$WEIR_PORT"
  printf '[admin]\nlisten = "%s:%s"\n\n[plugins]\ndir = "%s/plugins"\n\n' "$HOST" "$ADMIN_PORT" "$OUT"
  [[ -n ${KV_MAX_ENTRIES:-} ]] && printf '[kv]\nmax_entries = %s\n\n' "$KV_MAX_ENTRIES"
  printf '[[upstream]]\nname = "origin"\nendpoints = ["%s:%s"]\n\n' "$HOST" "$UP_PORT"
  printf '[[route]]\nname = "api"\nmatch = { path_prefix = "/" }\nupstream = "origin"\n'
  printf 'plugins = [{ name = "rate-limit", config = { requests = 1000, window = "1m", key = "header:x-client" } }]\n'
} >"$OUT/weir.toml"
cat >"$OUT/keys.lua" <<'EOF'
-- A new client key on every request.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["x-client"] = string.format("client-%d-%d", math.random(1e9), n) })
end
EOF

setsid "$NGINX" -p "$OUT/" -c "$OUT/upstream.conf" -e "$OUT/upstream.err" >/dev/null 2>&1 </dev/null &
PIDS+=("$!")
setsid "$WEIR_BIN" run --config "$OUT/weir.toml" >"$OUT/weir.log" 2>&1 </dev/null &
WEIR=$!
PIDS+=("$WEIR")
for ((i = 0; i < 300; i++)); do
  curl -s -o /dev/null "http://$HOST:$WEIR_PORT/" && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$WEIR/status"; }
echo "RSS at start: $(rss)"
wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/keys.lua" "http://$HOST:$WEIR_PORT/" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
for ((t = 5; t <= DURATION; t += 5)); do
  sleep 5
  echo "RSS after ${t}s: $(rss)"
done
wait "$WRK" || true
awk '/requests in/ { print "requests:", $1 } /Non-2xx/ { print "non-2xx (429):", $NF }' "$OUT/wrk.txt"
curl -s "http://$HOST:$ADMIN_PORT/metrics" |
  grep -E '^weir_(kv_entries|kv_bytes|plugin_store_full_total|plugin_refusals_total)\{plugin="rate-limit"' |
  grep -v ' 0$' || true
log "files in $OUT"
