#!/usr/bin/env bash
# bench/pairs.sh - DESIGN.md's plugin chain against no plugins, in alternating pairs.
#
#   cargo build --release && cargo xtask plugins
#   bench/pairs.sh                      # PAIRS=8 DURATION=4 ISOLATION=worker
#
# The chain is jwt-auth (ES256, the public example key and token of examples/jwt/, a
# token seen before), rate-limit (per user, never refusing) and headers (one request
# header). Weir runs alone on cpu1 with one worker; a trivial nginx upstream and
# `wrk -t1 -c64` share cpu0. Each pair is one run without plugins and one with the
# chain, back to back. Per run it prints req/s and Weir's user and system CPU per
# request (from /proc/PID/stat); at the end, the throughput ratio of the pairs whose two
# runs cost the same system time per request (within 8 %): this VM flips between two
# kernel-cost states for minutes at a time, and a pair that straddles them compares
# nothing (see bench/README.md).
#
# CHAIN=request-id measures one header-only plugin instead (request-id: an id generated
# per request, set on the request and queued for the response): DESIGN.md's "one
# header-only plugin" rows.
#
# RATE=N sends N requests a second in total (h2load --h1 --rps, from Debian's
# nghttp2-client) instead of as many as the gateway answers: both runs of a pair then do
# the same work per second, so what the chain adds per request is not mixed with how
# the kernel and the runtime batch work at a lower throughput. Pick N below what the
# chain sustains; req/s then shows whether it kept up.
#
# Environment: WEIR_BIN (<repo>/target/release/weir), PLUGINS_DIR
#   (<repo>/target/weir-plugins), PAIRS (8), DURATION (seconds per run, 4), CONNS (64),
#   ISOLATION (worker | request), CHAIN (design | request-id), RATE (unset: closed loop).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEIR_BIN=${WEIR_BIN:-$ROOT/target/release/weir}
PLUGINS_DIR=${PLUGINS_DIR:-$ROOT/target/weir-plugins}
PAIRS=${PAIRS:-8}
DURATION=${DURATION:-4}
CONNS=${CONNS:-64}
ISOLATION=${ISOLATION:-worker}
CHAIN=${CHAIN:-design}
UP=127.0.0.1:18080
GW=127.0.0.1:18090

die() { echo "pairs.sh: $*" >&2; exit 1; }
[[ -x $WEIR_BIN ]] || die "WEIR_BIN=$WEIR_BIN is not executable (cargo build --release)"
for p in jwt-auth rate-limit headers request-id; do
  [[ -f $PLUGINS_DIR/$p.wasm ]] || die "no $PLUGINS_DIR/$p.wasm (cargo xtask plugins)"
done
[[ $PAIRS =~ ^[0-9]+$ && $PAIRS -ge 1 && $PAIRS -le 50 ]] || die "PAIRS must be 1..50"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 60 ]] || die "DURATION must be 1..60"
[[ $ISOLATION == worker || $ISOLATION == request ]] || die "ISOLATION must be worker or request"
[[ $CHAIN == design || $CHAIN == request-id ]] || die "CHAIN must be design or request-id"
RATE=${RATE:-}
if [[ -n $RATE ]]; then
  [[ $RATE =~ ^[0-9]+$ && $RATE -ge $CONNS && $RATE -le 1000000 ]] ||
    die "RATE must be a number of requests a second, from CONNS ($CONNS) to 1000000"
  command -v h2load >/dev/null || die "RATE needs h2load (apt-get install nghttp2-client)"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found (bench/run.sh install)"
command -v wrk >/dev/null || die "wrk not found (bench/run.sh install)"
command -v curl >/dev/null || die "curl not found (bench/run.sh install)"

# The public example token of examples/jwt/README.md (subject alice, valid until 2100).
TOKEN=eyJhbGciOiJFUzI1NiIsImtpZCI6ImV4YW1wbGUtZXMyNTYiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJkZW1vIiwiZW1haWwiOiJhbGljZUBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9pZHAuZXhhbXBsZSIsInN1YiI6ImFsaWNlIn0.lvom2MXUUs3lY44iOKIFpcMSJv8W5hFSvAAJn-V_v_NpAS64ZJahcF5ME8zu5tkn4w4uTQyva6ZRoSaa3PqyVQ
AUTH="authorization: Bearer $TOKEN"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/weir-pairs.XXXXXX")
GROUPS_STARTED=()
cleanup() {
  local pg
  # The gateway of an interrupted run (started in a subshell, so only its file knows it).
  [[ -f $OUT/weir.pid ]] && GROUPS_STARTED+=("$(cat "$OUT/weir.pid")")
  for pg in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  sleep 0.2
  for pg in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT

mkdir -p "$OUT"

# The route's plugins (the chain run's WEIR_CONFIG_EXTRA for bench/peers-gateway.sh,
# which writes the same bench config as bench/run.sh and execs the gateway).
chain_design() {
  cat <<EOF
[[route.plugins]]
name = "jwt-auth"
config = { algorithms = ["ES256"], issuer = "https://idp.example", audience = "demo", claims_to_headers = { sub = "x-user-id" }, jwks = { keys = [{ kty = "EC", crv = "P-256", kid = "example-es256", use = "sig", x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }] } }
[[route.plugins]]
name = "rate-limit"
config = { requests = 1000000000, window = "1h", key = "header:x-user-id" }
[[route.plugins]]
name = "headers"
config = { request = { set = { x-forwarded-prefix = "/api" } } }
EOF
}
chain_request_id() {
  cat <<EOF
[[route.plugins]]
name = "request-id"
EOF
}
CHAIN_EXTRA=$(
  if [[ $CHAIN == design ]]; then chain_design; else chain_request_id; fi
  cat <<EOF

[plugins]
dir = "$PLUGINS_DIR"
cache_dir = "$OUT/cache"
isolation = "$ISOLATION"
EOF
)

NGINX=$NGINX setsid taskset -c 0 "$ROOT/bench/upstream.sh" "$OUT" "$UP" >/dev/null 2>&1 &
GROUPS_STARTED+=($!)
for _ in $(seq 50); do curl -fs "http://$UP/" >/dev/null && break; sleep 0.1; done

TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12], f[13] }' "/proc/$1/stat"; }

# load SECONDS: the load on the gateway, from cpu0: as fast as it answers (wrk), or
# RATE requests a second (h2load, HTTP/1.1).
load() {
  if [[ -n $RATE ]]; then
    taskset -c 0 h2load --h1 -t1 -c"$CONNS" --rps $((RATE / CONNS)) -D "$1" -H "$AUTH" "http://$GW/"
  else
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${1}s" -H "$AUTH" "http://$GW/"
  fi
}

# run EXTRA -> "rps user_ns sys_ns" (per request), the gateway's route with EXTRA
run() {
  local extra=$1 pid u0 s0 u1 s1 requests rps
  # peers-gateway.sh execs the gateway, so $! is the gateway; its config file goes in $OUT.
  TMPDIR=$OUT WEIR_BIN=$WEIR_BIN GATEWAY_PORT=${GW##*:} UPSTREAM_ADDR=$UP WORKERS=1 \
    WEIR_CONFIG_EXTRA=$extra setsid taskset -c 1 "$ROOT/bench/peers-gateway.sh" >"$OUT/weir.log" 2>&1 &
  pid=$!
  echo "$pid" >"$OUT/weir.pid"
  for _ in $(seq 300); do
    curl -fs -H "$AUTH" "http://$GW/" >/dev/null && break
    sleep 0.1
  done
  load 1 >/dev/null
  read -r u0 s0 < <(cpu_ticks "$pid")
  load "$DURATION" >"$OUT/load.txt"
  read -r u1 s1 < <(cpu_ticks "$pid")
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$OUT/weir.pid"
  if [[ -n $RATE ]]; then
    requests=$(awk '/^requests:/ { print $8 }' "$OUT/load.txt")
    rps=$(awk '/^finished in/ { print $4 }' "$OUT/load.txt")
  else
    requests=$(awk '/requests in/ { print $1 }' "$OUT/load.txt")
    rps=$(awk '/Requests\/sec/ { print $2 }' "$OUT/load.txt")
  fi
  [[ -n $requests && $requests -gt 0 ]] || { cat "$OUT/weir.log" >&2; return 1; }
  echo "$rps $(((u1 - u0) * TICK_NS / requests)) $(((s1 - s0) * TICK_NS / requests))"
}

printf 'pair\tconfig\treq/s\tuser_ns/req\tsys_ns/req\n'
: >"$OUT/pairs.txt"
for i in $(seq "$PAIRS"); do
  read -r ra ua sa < <(run "") || true
  [[ -n ${ra:-} ]] || die "the run without plugins completed no requests"
  printf '%s\tnone\t%s\t%s\t%s\n' "$i" "$ra" "$ua" "$sa"
  read -r rb ub sb < <(run "$CHAIN_EXTRA") || true
  [[ -n ${rb:-} ]] || die "the run with the chain completed no requests"
  printf '%s\tchain\t%s\t%s\t%s\n' "$i" "$rb" "$ub" "$sb"
  echo "$ra $ua $sa $rb $ub $sb" >>"$OUT/pairs.txt"
done

awk '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { ua[NR] = $2; ub[NR] = $5; sa[NR] = $3; sb[NR] = $6
    d = $6 - $3; if (d < 0) d = -d
    if (d <= 0.08 * $3) { same++; r[same] = $4 / $1; list = list sprintf(" %.3f", $4 / $1) } }
  END {
    printf "user CPU per request, medians: none %.0f ns, chain %.0f ns\n", median(ua, NR), median(ub, NR)
    printf "system CPU per request, medians: none %.0f ns, chain %.0f ns\n", median(sa, NR), median(sb, NR)
    if (same) printf "same-state pairs: %d of %d, ratios%s; median chain/none throughput %.3f\n", same, NR, list, median(r, same)
    else print "no pair had both runs in the same kernel-cost state: run more PAIRS"
  }' "$OUT/pairs.txt"
