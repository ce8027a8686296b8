#!/usr/bin/env bash
# bench/hostile.sh - a clean route's throughput while hostile plugin routes are hammered.
#
# One Weir (1 worker, pinned to cpu$PROXY_CPU) in front of the benchmarks' nginx origin
# (cpu$LG_CPU, with both wrk runs). Routes: /clean (no plugin), /benign (the probe test
# plugin tagging the request: a plugin route that works), and hostile routes where the
# same plugin loops, allocates without bound, recurses, answers 4 MB, traps or floods
# the log. Three runs of $DURATION s, wrk -c$CONNS on /clean each time:
#
#   alone    /clean only
#   benign   /clean while a second wrk (-c$HAMMER_CONNS) hammers /benign
#   hostile  /clean while the second wrk hammers the hostile routes in turn
#
# and prints /clean's req/s in each with hostile/alone and hostile/benign. The second
# wrk takes its share of the worker in both hammered runs; hostile/benign is what the
# hostility itself costs the clean route. Everything binds 127.0.0.1 only.
#
#   bench/hostile.sh            # builds weir (release) and the probe guest, then runs
#   WEIR_BIN=target/release/weir bench/hostile.sh
# Environment: DURATION=10 CONNS=32 HAMMER_CONNS=8 LG_CPU=0 PROXY_CPU=1
#   HOSTILE="loop oom recurse huge trap flood" (the hostile routes the hammer takes in turn)
set -euo pipefail

HOST=127.0.0.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/upstream.sh"

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
HAMMER_CONNS=${HAMMER_CONNS:-8}
LG_CPU=${LG_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
HOSTILE=${HOSTILE:-loop oom recurse huge trap flood}
for route in $HOSTILE; do
  [[ " loop oom recurse huge trap flood " == *" $route "* ]] || { echo "unknown hostile route '$route'" >&2; exit 2; }
done
UP_PORT=18080
WEIR_PORT=18095
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

log() { echo "[hostile] $*" >&2; }
die() { echo "[hostile] ERROR: $*" >&2; exit 1; }

for tool in wrk curl taskset setsid; do
  command -v "$tool" >/dev/null || die "'$tool' not found (bench/run.sh install installs nginx, wrk, curl)"
done
[[ -x $NGINX ]] || die "nginx not found (bench/run.sh install)"

if [[ -z ${WEIR_BIN:-} ]]; then
  log "cargo build --release -p weir-gateway"
  (cd "$ROOT" && cargo build --release -q -p weir-gateway)
  WEIR_BIN=$ROOT/target/release/weir
fi
log "building the probe test guest"
(cd "$ROOT/tests/guests" && cargo build --release -q --target wasm32-wasip2 -p probe \
  --target-dir "$ROOT/target/guests")
PROBE=$ROOT/target/guests/wasm32-wasip2/release/probe.wasm

OUT=$(mktemp -d /tmp/weir-hostile.XXXXXX)
PIDS=()
trap stop_started EXIT

mkdir -p "$OUT/plugins" "$OUT/tmp/upstream"
cp "$PROBE" "$OUT/plugins/probe.wasm"
upstream_conf "$OUT" "$HOST:$UP_PORT" >"$OUT/upstream.conf"
route() { # name plugin-entry
  printf '[[route]]\nname = "%s"\nmatch = { path_prefix = "/%s" }\nupstream = "origin"\nplugins = [%s]\n\n' "$1" "$1" "$2"
}
{
  printf '[server]\nlisten = "%s:%s"\nworkers = 1\naccess_log = false\n\n' "$HOST" "$WEIR_PORT"
  printf '[admin]\nlisten = "%s:18096"\n\n[plugins]\ndir = "%s/plugins"\n\n' "$HOST" "$OUT"
  printf '[[upstream]]\nname = "origin"\nendpoints = ["%s:%s"]\n\n' "$HOST" "$UP_PORT"
  route benign '{ name = "probe", config = { tag = "b" } }'
  route loop '{ name = "probe", config = { mode = "loop" } }'
  route oom '{ name = "probe", config = { mode = "oom" } }'
  route recurse '{ name = "probe", config = { mode = "recurse" } }'
  route huge '{ name = "probe", config = { mode = "huge", size = 4000000 } }'
  route trap '{ name = "probe", config = { mode = "trap" } }'
  route flood '{ name = "probe", config = { mode = "log-flood", size = 1000 } }'
  printf '[[route]]\nname = "clean"\nmatch = { path_prefix = "/" }\nupstream = "origin"\n'
} >"$OUT/weir.toml"
lua_paths=""
for route in $HOSTILE; do lua_paths+="\"/$route\", "; done
cat >"$OUT/hammer.lua" <<EOF
-- Each request goes to the next hostile route.
local paths = { $lua_paths }
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
EOF

start() { # name cpu cmd...
  local name=$1 cpu=$2
  shift 2
  setsid taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}
start origin "$LG_CPU" "$NGINX" -p "$OUT/" -c "$OUT/upstream.conf" -e "$OUT/upstream.err"
start weir "$PROXY_CPU" "$WEIR_BIN" run --config "$OUT/weir.toml"
for ((i = 0; i < 300; i++)); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$WEIR_PORT/clean" 2>/dev/null) == 200 ]] && break
  sleep 0.1
done
[[ $i -lt 300 ]] || die "weir did not answer on /clean; see $OUT/weir.log"

wrk_rps() { # file -> requests/s
  awk '/^Requests\/sec:/ { print $2 }' "$1"
}
run() { # label hammer-args... ("" for none)
  local label=$1 hammer_pid=""
  shift
  if (($# > 0)); then
    setsid taskset -c "$LG_CPU" wrk -t1 -c"$HAMMER_CONNS" -d"$((DURATION + 1))s" "$@" \
      >"$OUT/hammer-$label.txt" 2>&1 </dev/null &
    hammer_pid=$!
    sleep 0.5
  fi
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$HOST:$WEIR_PORT/clean" \
    >"$OUT/clean-$label.txt" 2>&1
  [[ -n $hammer_pid ]] && wait "$hammer_pid"
  return 0
}
log "warm-up"
taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d2s "http://$HOST:$WEIR_PORT/clean" >/dev/null
log "alone"
run alone
log "benign hammer"
run benign "http://$HOST:$WEIR_PORT/benign"
log "hostile hammer"
run hostile -s "$OUT/hammer.lua" "http://$HOST:$WEIR_PORT/"

alone=$(wrk_rps "$OUT/clean-alone.txt")
benign=$(wrk_rps "$OUT/clean-benign.txt")
hostile=$(wrk_rps "$OUT/clean-hostile.txt")
p99() { awk '$1 == "99%" { print $2 }' "$1"; }
echo
printf '%-34s %10s %10s\n' "/clean (wrk -c$CONNS, ${DURATION}s)" "req/s" "p99"
printf '%-34s %10s %10s\n' "alone" "$alone" "$(p99 "$OUT/clean-alone.txt")"
printf '%-34s %10s %10s   (hammer: %s req/s)\n' "with /benign hammered (-c$HAMMER_CONNS)" "$benign" \
  "$(p99 "$OUT/clean-benign.txt")" "$(wrk_rps "$OUT/hammer-benign.txt")"
printf '%-34s %10s %10s   (hammer: %s req/s)\n' "with hostile routes hammered" "$hostile" \
  "$(p99 "$OUT/clean-hostile.txt")" "$(wrk_rps "$OUT/hammer-hostile.txt")"
awk -v a="$alone" -v b="$benign" -v h="$hostile" \
  'BEGIN { printf "hostile/alone %.2f   hostile/benign %.2f\n", h / a, h / b }'
curl -s "http://$HOST:18096/metrics" |
  grep -E '^weir_plugin_(refusals|failures)_total\{.*plugin="probe"|^weir_requests_total\{' |
  grep -v ' 0$' || true
log "files in $OUT"
