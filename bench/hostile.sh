#!/usr/bin/env bash
# bench/hostile.sh - a clean route's throughput while hostile plugin routes are hammered.
#
# One Weir (1 worker, pinned to cpu$PROXY_CPU) in front of the benchmarks' nginx origin
# (cpu$LG_CPU, with both wrk runs). Routes: /clean (no plugin), /benign (the probe test
# plugin tagging the request: a plugin route that works), and hostile routes where the
# same plugin loops, allocates without bound, recurses, answers 4 MB, traps or floods
# the log. Three kinds of run of $DURATION s, wrk -c$CONNS on /clean each time:
#
#   alone    /clean only
#   benign   /clean while a second wrk (-c$HAMMER_CONNS) hammers /benign
#   hostile  /clean while the second wrk hammers the hostile routes in turn
#
# $ROUNDS rounds of the three, interleaved. It prints /clean's req/s in each run and,
# per round and as medians, hostile/alone and hostile/benign. The second wrk takes its
# share of the worker in both hammered runs; hostile/benign is what the hostility itself
# costs the clean route. Everything binds 127.0.0.1 only.
#
#   bench/hostile.sh            # builds weir (release) and the probe guest, then runs
#   WEIR_BIN=target/release/weir bench/hostile.sh
# Environment: DURATION=10 ROUNDS=3 CONNS=32 HAMMER_CONNS=8 LG_CPU=0 PROXY_CPU=1
#   HAMMER_RATE (unset: the hammer sends as fast as it is answered, so a cheaper answer
#   draws more requests; set, e.g. 2000, both hammers are paced to that many a second)
#   HOSTILE="loop oom recurse huge trap flood" (the hostile routes the hammer takes in turn)
set -euo pipefail

HOST=127.0.0.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/upstream.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
HAMMER_CONNS=${HAMMER_CONNS:-8}
HAMMER_RATE=${HAMMER_RATE:-}
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
  --target-dir "$ROOT/target/wasm")
PROBE=$ROOT/target/wasm/wasm32-wasip2/release/probe.wasm

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
hammer_script() { # file paths... -> a wrk script sending to each path in turn
  local file=$1 lua_paths="" path
  shift
  for path in "$@"; do lua_paths+="\"$path\", "; done
  {
    echo "local paths = { $lua_paths }"
    echo "local i = 0"
    echo "request = function() i = i % #paths + 1; return wrk.format(\"GET\", paths[i]) end"
    # Paced: each connection waits HAMMER_CONNS/HAMMER_RATE s between requests.
    if [[ -n $HAMMER_RATE ]]; then
      echo "delay = function() return $((HAMMER_CONNS * 1000 / HAMMER_RATE)) end"
    fi
  } >"$file"
}
hostile_paths=()
for route in $HOSTILE; do hostile_paths+=("/$route"); done
hammer_script "$OUT/hammer.lua" "${hostile_paths[@]}"
hammer_script "$OUT/benign.lua" /benign

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
p99() { awk '$1 == "99%" { print $2 }' "$1"; }
cpu_times() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
run() { # label hammer-args... ("" for none); appends "label rps p99 hammer-rps steal%" to results
  local label=$1 hammer_pid="" before after
  shift
  before=$(cpu_times)
  if (($# > 0)); then
    setsid taskset -c "$LG_CPU" wrk -t1 -c"$HAMMER_CONNS" -d"$((DURATION + 1))s" "$@" \
      >"$OUT/hammer-$label.txt" 2>&1 </dev/null &
    hammer_pid=$!
    sleep 0.5
  fi
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$HOST:$WEIR_PORT/clean" \
    >"$OUT/clean-$label.txt" 2>&1
  [[ -n $hammer_pid ]] && wait "$hammer_pid"
  after=$(cpu_times)
  local hammer=-
  [[ -n $hammer_pid ]] && hammer=$(wrk_rps "$OUT/hammer-$label.txt")
  echo "$label $(wrk_rps "$OUT/clean-$label.txt") $(p99 "$OUT/clean-$label.txt") $hammer" \
    "$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " ");
      printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2] + 1e-9) }')" >>"$OUT/results"
  return 0
}
log "warm-up"
taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d2s "http://$HOST:$WEIR_PORT/clean" >/dev/null
: >"$OUT/results"
# The three kinds of run alternate, their order rotating, so a slow spell of a shared
# machine (CPU stolen by its neighbours: the steal column) falls on all three alike.
for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 0; k < 3; k++)); do
    case $(((round + k) % 3)) in
      0) log "round $round: alone"; run "alone-$round" ;;
      1) log "round $round: benign hammer"; run "benign-$round" -s "$OUT/benign.lua" "http://$HOST:$WEIR_PORT/" ;;
      2) log "round $round: hostile hammer"; run "hostile-$round" -s "$OUT/hammer.lua" "http://$HOST:$WEIR_PORT/" ;;
    esac
  done
done

echo
printf '%-12s %10s %10s %12s %7s\n' "/clean run" "req/s" "p99" "hammer r/s" "steal%"
sort -t- -k2,2n -k1,1 "$OUT/results" | awk '{ printf "%-12s %10s %10s %12s %7s\n", $1, $2, $3, $4, $5 }'
# Ratios within each round (the runs of one round are next to each other), then medians.
awk -v rounds="$ROUNDS" '
  { split($1, l, "-"); rps[l[1], l[2]] = $2 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    for (r = 1; r <= rounds; r++) {
      ha[r] = rps["hostile", r] / rps["alone", r]; hb[r] = rps["hostile", r] / rps["benign", r]
      ba[r] = rps["benign", r] / rps["alone", r]
      printf "round %d: hostile/benign %.2f  hostile/alone %.2f  benign/alone %.2f\n", r, hb[r], ha[r], ba[r]
    }
    printf "median of %d rounds: hostile/benign %.2f  hostile/alone %.2f  benign/alone %.2f\n",
      rounds, median(hb, rounds), median(ha, rounds), median(ba, rounds)
  }' "$OUT/results"
curl -s "http://$HOST:18096/metrics" |
  grep -E '^weir_plugin_(refusals|failures)_total\{.*plugin="probe"|^weir_requests_total\{' |
  grep -v ' 0$' || true
log "files in $OUT"
