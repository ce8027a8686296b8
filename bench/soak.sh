#!/usr/bin/env bash
# bench/soak.sh - a bounded soak: steady load through plugins while the config is
# reloaded and a plugin is swapped, recording the gateway's memory and descriptors.
#
# One Weir (2 workers) in front of the benchmarks' nginx origin, three routes:
#   /api    request-id, rate-limit (a limit never reached) and headers
#   /swap   `swap`: the headers plugin, replaced on disk every $SWAP_EVERY s by a new
#           build of itself (the same code with another custom section, so a new hash
#           the gateway must compile and swap in)
#   /plain  no plugin
# wrk sends a steady $RATE requests a second (paced, over $CONNS connections) to the
# three in turn for $DURATION s, while the config file is rewritten every
# $RELOAD_EVERY s (a header value the /api route sets changes, so every reload builds a
# new config). Every $SAMPLE_EVERY s it records the gateway's RSS, open descriptors,
# threads and the reload counters, then prints the series, the first and last figures
# and every response that was not a 200. Exits 1 when a request failed, a reload was
# refused, or RSS or descriptors kept growing: the last minute's mean RSS over 1.25x
# that of the minute before half-time plus 8 MiB, or descriptors at the end over that
# minute's most plus 16. (The first minutes fill what the gateway keeps on purpose: the
# plugin builds and snapshots it keeps for a rollback, the allocator's pools.)
#
#   bench/soak.sh               # builds weir (release) and the plugins, runs 10 minutes
#   DURATION=240 RELOAD_EVERY=10 SWAP_EVERY=20 bench/soak.sh   # a quick one
# Environment: WEIR_BIN, PLUGINS (a dir with headers.wasm, request-id.wasm,
#   rate-limit.wasm), DURATION=600 RATE=2000 CONNS=20 RELOAD_EVERY=30 SWAP_EVERY=60
#   SAMPLE_EVERY=10. Everything binds 127.0.0.1 only.
set -euo pipefail

HOST=127.0.0.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/upstream.sh"

DURATION=${DURATION:-600}
RATE=${RATE:-2000}
CONNS=${CONNS:-20}
RELOAD_EVERY=${RELOAD_EVERY:-30}
SWAP_EVERY=${SWAP_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
UP_PORT=18080
WEIR_PORT=18091
ADMIN_PORT=18092
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
log() { echo "[soak] $*" >&2; }
die() { echo "[soak] ERROR: $*" >&2; exit 1; }

for tool in wrk curl setsid; do
  command -v "$tool" >/dev/null || die "'$tool' not found (bench/run.sh install installs nginx, wrk, curl)"
done
[[ -x $NGINX ]] || die "nginx not found (bench/run.sh install)"
((DURATION >= 240)) || die "DURATION must be at least 240 s (growth compares the minute before half-time with the last)"

if [[ -z ${WEIR_BIN:-} ]]; then
  log "cargo build --release -p weir-gateway"
  (cd "$ROOT" && cargo build --release -q -p weir-gateway)
  WEIR_BIN=$ROOT/target/release/weir
fi
if [[ -z ${PLUGINS:-} ]]; then
  log "cargo xtask plugins"
  (cd "$ROOT" && cargo xtask plugins >&2)
  PLUGINS=$ROOT/target/weir-plugins
fi
for p in headers request-id rate-limit; do
  [[ -f $PLUGINS/$p.wasm ]] || die "$PLUGINS/$p.wasm not found"
done

OUT=$(mktemp -d /tmp/weir-soak.XXXXXX)
PIDS=()
trap stop_started EXIT
mkdir -p "$OUT/plugins" "$OUT/tmp/upstream" "$OUT/cache"
cp "$PLUGINS/headers.wasm" "$PLUGINS/request-id.wasm" "$PLUGINS/rate-limit.wasm" "$OUT/plugins/"

# A build of the headers plugin that differs only by a custom section named `soak`
# holding `gen-N` (id 0, size, name length, name, payload; every length under 128, so
# one LEB128 byte each): the same code, a new file hash.
swap_build() { # generation -> the plugin at $OUT/plugins/swap.wasm, replaced atomically
  local payload="gen-$1" tmp=$OUT/swap.wasm.tmp
  cp "$PLUGINS/headers.wasm" "$tmp"
  printf "\\x00\\x$(printf %02x $((1 + 4 + ${#payload})))\\x04soak%s" "$payload" >>"$tmp"
  mv "$tmp" "$OUT/plugins/swap.wasm"
}

config() { # generation -> weir.toml, replaced atomically
  cat >"$OUT/weir.toml.tmp" <<EOF
[server]
listen = "$HOST:$WEIR_PORT"
workers = 2
access_log = false

[admin]
listen = "$HOST:$ADMIN_PORT"

[plugins]
dir = "$OUT/plugins"
cache_dir = "$OUT/cache"
isolation = "worker"

[reload]
watch = true

[[upstream]]
name = "origin"
endpoints = ["$HOST:$UP_PORT"]

[[route]]
name = "api"
match = { path_prefix = "/api" }
upstream = "origin"
plugins = [
  { name = "request-id" },
  { name = "rate-limit", config = { requests = 1000000000, window = "1m" } },
  { name = "headers", config = { response = { set = { x-soak-config = "$1" } } } },
]

[[route]]
name = "swap"
match = { path_prefix = "/swap" }
upstream = "origin"
plugins = [{ name = "swap", config = { response = { set = { x-soak = "swap" } } } }]

[[route]]
name = "plain"
match = { path_prefix = "/" }
upstream = "origin"
EOF
  mv "$OUT/weir.toml.tmp" "$OUT/weir.toml"
}

# Paced requests: each connection waits CONNS/RATE s between requests, and every
# status is counted (wrk's own summary counts only non-2xx/3xx together).
cat >"$OUT/soak.lua" <<EOF
local paths = { "/api/items", "/swap/x", "/plain" }
local i = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init() statuses = {} end
function delay() return $((CONNS * 1000 / RATE)) end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\n", status, n)) end
  local e = summary.errors
  io.write(string.format("errors connect %d read %d write %d status %d timeout %d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

start() { # name cmd...
  local name=$1
  shift
  setsid "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}
upstream_conf "$OUT" "$HOST:$UP_PORT" >"$OUT/upstream.conf"
config 0
swap_build 0
start origin "$NGINX" -p "$OUT/" -c "$OUT/upstream.conf" -e "$OUT/upstream.err"
start weir "$WEIR_BIN" run --config "$OUT/weir.toml"
WEIR_PID=${PIDS[-1]}
for ((i = 0; i < 300; i++)); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$WEIR_PORT/swap/" 2>/dev/null) == 200 ]] && break
  sleep 0.1
done
((i < 300)) || die "weir did not answer; see $OUT/weir.log"

metric() { # series (with labels) -> value, 0 when absent
  curl -s "http://$HOST:$ADMIN_PORT/metrics" | awk -v s="$1" '$1 == s { v = $2 } END { print v + 0 }'
}
sample() { # elapsed -> one line of the series
  local rss fds threads
  rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$WEIR_PID/status")
  fds=$(find "/proc/$WEIR_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$WEIR_PID/status")
  printf '%6s %8s %5s %7s %9s %9s %9s %9s\n' "$1" "$rss" "$fds" "$threads" \
    "$(metric 'weir_config_reloads_total{result="success"}')" \
    "$(metric 'weir_config_reloads_total{result="error"}')" \
    "$(metric 'weir_plugin_reloads_total{result="success"}')" \
    "$(metric 'weir_plugin_reloads_total{result="error"}')"
}

log "soaking for ${DURATION}s at $RATE req/s: reload every ${RELOAD_EVERY}s, swap every ${SWAP_EVERY}s (files in $OUT)"
printf '%6s %8s %5s %7s %9s %9s %9s %9s\n' "s" "RSS MiB" "fds" "threads" \
  "cfg ok" "cfg err" "plug ok" "plug err" >"$OUT/series"
sample 0 >>"$OUT/series"
setsid wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$OUT/soak.lua" "http://$HOST:$WEIR_PORT/" \
  >"$OUT/wrk.txt" 2>&1 </dev/null &
WRK=$!
PIDS+=("$WRK")
start_time=$SECONDS
reloads=0 swaps=0
next_reload=$RELOAD_EVERY next_swap=$SWAP_EVERY next_sample=$SAMPLE_EVERY
while kill -0 "$WRK" 2>/dev/null; do
  sleep 0.5
  t=$((SECONDS - start_time))
  ((t >= DURATION)) && break
  if ((t >= next_reload)); then
    reloads=$((reloads + 1)) next_reload=$((next_reload + RELOAD_EVERY))
    config "$reloads"
  fi
  if ((t >= next_swap)); then
    swaps=$((swaps + 1)) next_swap=$((next_swap + SWAP_EVERY))
    swap_build "$swaps"
  fi
  if ((t >= next_sample)); then
    next_sample=$((next_sample + SAMPLE_EVERY))
    sample "$t" >>"$OUT/series"
  fi
done
wait "$WRK" || true
sleep 1
sample "$((SECONDS - start_time))" >>"$OUT/series"

cat "$OUT/series"
echo
grep -E '^(Requests/sec|  [0-9]+ requests in)' "$OUT/wrk.txt" || true
grep -E '^(status|errors) ' "$OUT/wrk.txt" | sort || true
echo "config rewrites $reloads, plugin swaps $swaps"

awk -v dur="$DURATION" -v mid="$((DURATION / 2))" -v reloads="$reloads" -v swaps="$swaps" -v wrk="$OUT/wrk.txt" '
  NR == 1 { next }
  { t = $1; rss = $2; fds = $3
    if (NR == 2) { rss0 = rss; fds0 = fds }
    if (t >= mid - 60 && t < mid) { a += rss; an++; if (fds > fa) fa = fds }
    if (t >= dur - 60) { b += rss; bn++ }
    cfg_ok = $5; cfg_err = $6; plug_ok = $7; plug_err = $8; last_rss = rss; last_fds = fds }
  END {
    while ((getline line < wrk) > 0) {
      split(line, f, " ")
      if (f[1] == "status") { total += f[3]; if (f[2] != 200) bad += f[3] }
      # connect, read, write and timeout errors (status errors are counted above)
      if (f[1] == "errors") bad += f[3] + f[5] + f[7] + f[11]
    }
    second = a / an; last = b / bn
    printf "requests %d, failed %d\n", total, bad
    printf "RSS MiB: start %.1f, mean of the minute before half-time %.1f, of the last minute %.1f, end %.1f\n", rss0, second, last, last_rss
    printf "descriptors: start %d, before half-time (max) %d, end %d\n", fds0, fa, last_fds
    printf "reloads applied %d of %d (refused %d), plugin loads %d for %d swaps (refused %d)\n",
      cfg_ok, reloads, cfg_err, plug_ok, swaps, plug_err
    ok = 1
    if (total == 0 || bad > 0) { print "FAIL: requests failed"; ok = 0 }
    if (cfg_err > 0 || plug_err > 0 || cfg_ok < reloads || plug_ok < swaps) { print "FAIL: a reload or swap did not apply"; ok = 0 }
    if (last > 1.25 * second + 8) { print "FAIL: RSS kept growing"; ok = 0 }
    if (last_fds > fa + 16) { print "FAIL: descriptors kept growing"; ok = 0 }
    if (ok) print "PASS"
    exit ok ? 0 : 1
  }' "$OUT/series"
