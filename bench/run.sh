#!/usr/bin/env bash
# bench/run.sh - Weir vs nginx vs no proxy, plain reverse proxy on loopback.
#
# Starts a trivial upstream (nginx, `return 200 "ok"`), then for each target
# in $PEERS (one at a time, interleaved over $ROUNDS) drives it with wrk and
# records req/s, p50/p99 latency and the proxy's CPU time per request:
#
#   direct  wrk straight at the upstream (us CPU/req is the upstream's)
#   nginx   nginx as a plain keep-alive reverse proxy to the upstream
#   weir    the Weir gateway as a plain reverse proxy to the upstream
#
# Everything binds 127.0.0.1 only. Every process started here gets its own
# process group (setsid) and is killed by PGID on exit.
#
# Usage:
#   bench/run.sh install     # apt-get install nginx-light wrk curl if missing (idempotent)
#   bench/run.sh [run]       # install if missing, build weir (unless WEIR_BIN), benchmark
#
# Environment (all optional; see bench/README.md):
#   PEERS="direct nginx weir"  ROUNDS=1 (max 5)  DURATION=10  WARMUP=2  CONNS=64
#   LG_THREADS=1  LG_CPU=0  UP_CPU=0  PROXY_CPU=1  WORKERS=1  REQ_PATH=/
#   WEIR_BIN=<path>  WEIR_CONFIG_EXTRA=<toml>  BENCH_OUT=<dir>  READY_TIMEOUT=30
#   REQ_HEADER="name: value" (one header wrk sends on every request, e.g. an API key)
set -euo pipefail

HOST=127.0.0.1 # hard-wired: nothing here ever binds or targets anything but loopback
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# The origin's config (upstream_conf) and nginx_temp_paths, shared with bench/pairs.sh.
. "$HERE/upstream.sh"

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }

clamp() { # value default lo hi -> integer within [lo, hi] (non-numeric -> default)
  local v=$1 def=$2 lo=$3 hi=$4
  [[ $v =~ ^[0-9]+$ ]] || v=$def
  v=$((10#$v))
  ((v < lo)) && v=$lo
  ((v > hi)) && v=$hi
  echo "$v"
}

PEERS=${PEERS:-"direct nginx weir"}
ROUNDS=$(clamp "${ROUNDS:-1}" 1 1 5)
DURATION=$(clamp "${DURATION:-10}" 10 1 300)
WARMUP=$(clamp "${WARMUP:-2}" 2 0 60)
CONNS=$(clamp "${CONNS:-64}" 64 1 1024)
LG_THREADS=$(clamp "${LG_THREADS:-1}" 1 1 64)
LG_CPU=$(clamp "${LG_CPU:-0}" 0 0 4095)
UP_CPU=$(clamp "${UP_CPU:-0}" 0 0 4095)
PROXY_CPU=$(clamp "${PROXY_CPU:-1}" 1 0 4095)
WORKERS=$(clamp "${WORKERS:-1}" 1 1 256)
READY_TIMEOUT=$(clamp "${READY_TIMEOUT:-30}" 30 1 300)
REQ_PATH=${REQ_PATH:-/}
REQ_HEADER=${REQ_HEADER:-}
WEIR_CONFIG_EXTRA=${WEIR_CONFIG_EXTRA:-}
((CONNS < LG_THREADS)) && CONNS=$LG_THREADS # wrk needs >= 1 connection per thread

UP_PORT=18080
declare -A PORT=([direct]=$UP_PORT [nginx]=18081 [weir]=18090)
declare -A LABEL=([direct]="direct (no proxy)" [nginx]=nginx [weir]=weir)

[[ $REQ_PATH =~ ^/[^[:space:]]*$ ]] || die "REQ_PATH must start with / and contain no spaces (got '$REQ_PATH')"
[[ -z $REQ_HEADER || $REQ_HEADER =~ ^[A-Za-z0-9-]+:\ ?[[:print:]]+$ ]] || die "REQ_HEADER must look like 'name: value' (got '$REQ_HEADER')"
WRK_HEADER_ARGS=()
[[ -n $REQ_HEADER ]] && WRK_HEADER_ARGS=(-H "$REQ_HEADER")
for t in $PEERS; do
  [[ -n ${PORT[$t]:-} ]] || die "unknown target '$t' in PEERS (known: direct nginx weir)"
done
want() { [[ " $PEERS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ install
APT_GUARD="" # policy-rc.d we created (and must remove) during apt-get install

nginx_bin() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }

do_install() {
  local missing=()
  [[ -n $(nginx_bin) ]] || missing+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  local t
  for t in taskset setsid timeout awk; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (util-linux / coreutils / mawk are expected on Debian)"
  done
  if ((${#missing[@]} == 0)); then
    log "nginx, wrk and curl already installed"
    return 0
  fi
  ((EUID == 0)) || die "need root to install: apt-get install -y --no-install-recommends ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
  # Debian's nginx package starts a system-wide nginx on :80 after install. The
  # benchmark does not want it (it binds 0.0.0.0 and competes for CPU), so deny
  # service starts for the duration of this install unless a policy already exists.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    APT_GUARD=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# temporary, created by weir bench/run.sh install\nexit 101\n' >"$APT_GUARD"
    chmod 755 "$APT_GUARD"
  fi
  log "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  local rc=0
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  remove_apt_guard
  ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
  [[ -n $(nginx_bin) ]] || die "nginx still not found after install"
}

remove_apt_guard() {
  if [[ -n $APT_GUARD ]] && grep -q 'weir bench/run.sh' "$APT_GUARD" 2>/dev/null; then rm -f "$APT_GUARD"; fi
  APT_GUARD=""
}

show_versions() {
  local n; n=$(nginx_bin)
  log "nginx: $([[ -n $n ]] && "$n" -v 2>&1 | sed 's/.*version: //')"
  log "wrk:   $( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')"
  log "curl:  $(curl --version 2>/dev/null | awk 'NR == 1 { print $2 }')"
}

# ------------------------------------------------------------------ processes
OUT=""
declare -a STARTED=() # PIDs (= PGIDs) of everything we started
declare -A PIDOF=()

start_proc() { # name cpu cmd... -> own session/process group, pinned, logs to $OUT/name.log
  local name=$1 cpu=$2 pid pg
  shift 2
  setsid taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  PIDOF[$name]=$pid
  # setsid only forks when the caller already leads a process group; our
  # background children never do, so $! is the group leader. Check anyway.
  pg=$(pgid_of "$pid")
  if [[ -n $pg && $pg != "$pid" ]]; then
    sleep 0.05 # setsid/taskset may not have exec'd yet
    pg=$(pgid_of "$pid")
    [[ -z $pg || $pg == "$pid" ]] || die "$name (pid $pid) is not in its own process group (pgid $pg)"
  fi
}

pgid_of() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[3] }' "/proc/$1/stat" 2>/dev/null || true; }
alive() { # pid -> 0 if running (not a zombie)
  local st
  st=$(awk '{ s = $0; sub(/^.*\) /, "", s); print substr(s, 1, 1) }' "/proc/$1/stat" 2>/dev/null || true)
  [[ -n $st && $st != Z ]]
}

stop_pg() { # pgid: TERM the group, wait (bounded, 5 s), KILL what is left, reap
  local pg=$1 i
  kill -TERM -- "-$pg" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pg" || break; sleep 0.1; done
  kill -KILL -- "-$pg" 2>/dev/null || true
  wait "$pg" 2>/dev/null || true
  kill -KILL -- "-$pg" 2>/dev/null || true # stragglers (e.g. nginx worker) after the leader died
  forget "$pg"
}

forget() { # pid -> drop from STARTED
  local keep=() p
  for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}

stop_proc() {
  local pid=${PIDOF[$1]:-}
  [[ -n $pid ]] && stop_pg "$pid"
  unset "PIDOF[$1]"
  return 0
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  remove_apt_guard
  for pid in "${STARTED[@]}"; do stop_pg "$pid"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; stopping what we started"; exit 130' INT
trap 'log "terminated; stopping what we started"; exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_ready() { # name port logs... -> returns when GET $REQ_PATH answers 200 "ok"; dies otherwise
  local name=$1 port=$2 i code="" body=$OUT/$1.ready-body
  shift 2
  local logs="$*"
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    alive "${PIDOF[$name]}" || die "$name exited during start-up; see $logs"
    code=$(curl -s "${WRK_HEADER_ARGS[@]}" -o "$body" -w '%{http_code}' --max-time 1 "http://$HOST:$port$REQ_PATH" 2>/dev/null || true)
    if [[ $code == 200 ]]; then
      [[ $(cat "$body") == ok ]] && return 0
      die "$name answered 200 on http://$HOST:$port$REQ_PATH but the body is '$(head -c 80 "$body")', not 'ok'; see $logs"
    fi
    sleep 0.1
  done
  die "$name did not answer 200 'ok' on http://$HOST:$port$REQ_PATH within ${READY_TIMEOUT}s (last HTTP code '${code:-none}'); see $logs"
}

# ------------------------------------------------------------------ configs
write_configs() {
  mkdir -p "$OUT/tmp/upstream" "$OUT/tmp/nginx"
  upstream_conf "$OUT" "$HOST:$UP_PORT" >"$OUT/upstream.conf"
  cat >"$OUT/nginx.conf" <<EOF
# nginx: plain keep-alive reverse proxy, 1 worker, pinned to cpu$PROXY_CPU
worker_processes 1;
daemon off;
pid $OUT/nginx.pid;
error_log $OUT/nginx.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
$(nginx_temp_paths "$OUT/tmp/nginx")
  upstream up {
    server $HOST:$UP_PORT;
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }
  server {
    listen $HOST:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  {
    cat <<EOF
[server]
listen = "$HOST:${PORT[weir]}"
workers = $WORKERS
access_log = false

[[upstream]]
name = "bench"
endpoints = ["$HOST:$UP_PORT"]

[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "bench"
EOF
    if [[ -n $WEIR_CONFIG_EXTRA ]]; then
      printf '\n# WEIR_CONFIG_EXTRA\n%s\n' "$WEIR_CONFIG_EXTRA"
    fi
  } >"$OUT/weir.toml"
}

start_target() { # name -> starts the proxy pinned to PROXY_CPU and waits until it answers
  local name=$1
  port_busy "${PORT[$name]}" && die "port ${PORT[$name]} on $HOST is already in use; stop whatever holds it"
  case $name in
    nginx)
      start_proc nginx "$PROXY_CPU" "$NGINX" -p "$OUT/" -c "$OUT/nginx.conf" -e "$OUT/nginx.err"
      wait_ready nginx "${PORT[nginx]}" "$OUT/nginx.log" "$OUT/nginx.err" ;;
    weir)
      start_proc weir "$PROXY_CPU" "$WEIR_BIN" run --config "$OUT/weir.toml"
      wait_ready weir "${PORT[weir]}" "$OUT/weir.log" ;;
  esac
}

# ------------------------------------------------------------------ measuring
CLK_TCK=$(getconf CLK_TCK)
LG_TICKS=0

group_ticks() { # pgid -> utime+stime ticks summed over every process in the group (threads included)
  # processes may vanish between the glob and the read; cat then fails, which must not stop the run
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pg="$1" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[3] == pg) t += f[12] + f[13] }
                    END { printf "%d\n", t }'
}

cpu_ticks() { # -> "busy_all busy_cpuLG total_cpuLG busy_cpuPX total_cpuPX" from /proc/stat
  awk -v a="cpu$LG_CPU" -v b="cpu$PROXY_CPU" '
    function busy() { return $2 + $3 + $4 + $7 + $8 + $9 }
    function total() { return $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }
    $1 == "cpu" { all = busy() }
    $1 == a { ba = busy(); ta = total() }
    $1 == b { bb = busy(); tb = total() }
    END { printf "%d %d %d %d %d\n", all, ba, ta, bb, tb }' /proc/stat
}

children_ticks() { # sets LG_TICKS = CPU ticks of all reaped children of this shell (wrk, via timeout)
  # `times` must run in this shell: in a pipe or $(...) a subshell would report its own (no) children
  times >"$OUT/.times"
  LG_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] }
                                             printf "%d", s * hz + 0.5 }' "$OUT/.times")
}

run_wrk() { # port secs outfile -> runs wrk pinned to LG_CPU in its own process group
  local port=$1 secs=$2 out=$3 pid rc=0
  setsid timeout -k 5 $((secs + 30)) taskset -c "$LG_CPU" \
    wrk -t"$LG_THREADS" -c"$CONNS" -d"${secs}s" --latency "${WRK_HEADER_ARGS[@]}" "http://$HOST:$port$REQ_PATH" >"$out" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

to_ms() { # wrk duration (850.00us, 1.20ms, 1.01s, 2.00m) -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000
    printf "%.3f", n }'
}

measure() { # round name -> appends a row to $OUT/rounds.tsv
  local round=$1 name=$2 port=${PORT[$2]} up pg f
  f=$OUT/wrk-$name-r$round.txt
  up=${PIDOF[upstream]}
  pg=${PIDOF[$name]:-$up} # direct: the "proxy" is the upstream itself
  if ((WARMUP > 0)); then
    run_wrk "$port" "$WARMUP" "$OUT/wrk-$name-r$round-warmup.txt" ||
      die "warm-up wrk against $name failed; see $OUT/wrk-$name-r$round-warmup.txt"
  fi
  local p0 p1 u0 u1 l0 l1 c0 c1 w0 w1
  children_ticks; l0=$LG_TICKS
  read -r -a c0 <<<"$(cpu_ticks)"
  p0=$(group_ticks "$pg"); u0=$(group_ticks "$up")
  w0=$EPOCHREALTIME
  run_wrk "$port" "$DURATION" "$f" || die "wrk against $name failed; see $f"
  w1=$EPOCHREALTIME
  p1=$(group_ticks "$pg"); u1=$(group_ticks "$up")
  read -r -a c1 <<<"$(cpu_ticks)"
  children_ticks; l1=$LG_TICKS

  local rps p50 p99 reqs non2xx sockerr
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  reqs=$(awk '/ requests in / { print $1 }' "$f")
  p50=$(awk '$1 == "50%" { print $2 }' "$f")
  p99=$(awk '$1 == "99%" { print $2 }' "$f")
  non2xx=$(awk '/Non-2xx/ { print $NF }' "$f")
  sockerr=$(awk '/Socket errors/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$f")
  [[ -n $rps && -n $reqs && -n $p50 && -n $p99 ]] || die "could not parse wrk output for $name; see $f"
  ((reqs > 0)) || die "wrk completed no requests against $name; see $f and $OUT/$name.log"

  # seconds of CPU; for direct the proxy is the upstream, so don't count it twice in "other"
  local same=0
  [[ $pg == "$up" ]] && same=1
  awk -v r="$round" -v n="$name" -v rps="$rps" -v p50="$(to_ms "$p50")" -v p99="$(to_ms "$p99")" \
      -v reqs="$reqs" -v err="$(( ${non2xx:-0} + ${sockerr:-0} ))" -v hz="$CLK_TCK" \
      -v p="$((p1 - p0))" -v u="$((u1 - u0))" -v l="$((l1 - l0))" -v same="$same" \
      -v busy="$((c1[0] - c0[0]))" -v bl="$((c1[1] - c0[1]))" -v tl="$((c1[2] - c0[2]))" \
      -v bp="$((c1[3] - c0[3]))" -v tp="$((c1[4] - c0[4]))" -v w0="$w0" -v w1="$w1" 'BEGIN {
        wall = w1 - w0; if (wall <= 0) wall = 1
        ps = p / hz; us = u / hz; ls = l / hz
        other = busy / hz - ps - ls - (same ? 0 : us); if (other < 0) other = 0
        printf "%s\t%s\t%.2f\t%.3f\t%.3f\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%.2f\n",
          r, n, rps, p50, p99, reqs, err,
          ps * 1e6 / reqs, ps * 100 / wall, us * 100 / wall, ls * 100 / wall, other * 100 / wall,
          (tl > 0 ? bl * 100 / tl : 0), (tp > 0 ? bp * 100 / tp : 0), wall
      }' >>"$OUT/rounds.tsv"
  local row
  row=$(tail -n 1 "$OUT/rounds.tsv")
  log "$(awk -F'\t' '{ who = ($2 == "direct") ? "upstream" : "proxy"
                      px = ($2 == "direct") ? "" : "proxy " $9 ", "
                      printf "round %s %s: %.0f req/s, p50 %s ms, p99 %s ms, %s us %s CPU/req; CPU %% of a core: %supstream %s, loadgen %s, other %s; errors %s",
                      $1, $2, $3, $4, $5, $8, who, px, $10, $11, $12, $7 }' <<<"$row")"
  awk -F'\t' '$12 > 25 { exit 0 } { exit 1 }' <<<"$row" &&
    log "WARNING: other processes used >25% of a core during $name round $round; this row is noisy"
  awk -F'\t' '$7 > 0 { exit 0 } { exit 1 }' <<<"$row" &&
    log "WARNING: $name had non-2xx responses or socket errors; see $f"
  return 0
}

idle_check() { # warn when something else already uses the CPUs before we start
  local a b
  read -r -a a <<<"$(cpu_ticks)"
  sleep 1
  read -r -a b <<<"$(cpu_ticks)"
  local busy=$(((b[0] - a[0]) * 100 / CLK_TCK))
  if ((busy > 10)); then
    log "WARNING: the machine is already busy (${busy}% of a core used by other processes before the run);"
    log "         results will be skewed; the 'other CPU' column shows how much during each run"
  fi
}

# ------------------------------------------------------------------ report
report() {
  local nginx_v wrk_v weir_v="" rev=""
  nginx_v=$("$NGINX" -v 2>&1 | sed 's/.*version: //')
  wrk_v=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
  if want weir; then
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit yet")
    weir_v=", weir $WEIR_BIN (repo at $rev)"
  fi
  {
    echo "## Weir bench $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "$(nproc) CPUs, kernel $(uname -r); nginx $nginx_v, wrk $wrk_v$weir_v."
    echo "wrk -t$LG_THREADS -c$CONNS -d${DURATION}s (warm-up ${WARMUP}s) GET $REQ_PATH; rounds=$ROUNDS (medians);" \
         "pinning: loadgen cpu$LG_CPU, upstream cpu$UP_CPU, proxy cpu$PROXY_CPU; weir workers=$WORKERS."
    echo
    awk -F'\t' -v order="$PEERS" -v ldirect="${LABEL[direct]}" '
      function med(key,   n, i, j, t, v) { # median of vals[key, 1..cnt[key]]
        n = cnt[key]; for (i = 1; i <= n; i++) v[i] = vals[key, i]
        for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      }
      NR > 1 { for (c = 3; c <= 14; c++) { k = $2 SUBSEP c; vals[k, ++cnt[k]] = $c } }
      END {
        nt = split(order, t, " ")
        for (i = 1; i <= nt; i++) if (cnt[t[i] SUBSEP 3]) for (c = 3; c <= 14; c++) m[t[i], c] = med(t[i] SUBSEP c)
        have_ngx = cnt["nginx" SUBSEP 3] > 0
        print "| target | req/s | p50 ms | p99 ms | us CPU/req | rps vs nginx | cpu/req vs nginx |"
        print "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= nt; i++) {
          n = t[i]; if (!cnt[n SUBSEP 3] || seen[n]++) continue
          label = (n == "direct") ? ldirect : n
          cpr = sprintf("%.1f", m[n, 8]); if (n == "direct") cpr = cpr " (upstream)"
          rr = have_ngx && m["nginx", 3] > 0 ? sprintf("%.2f", m[n, 3] / m["nginx", 3]) : "-"
          cr = (have_ngx && n != "direct" && m["nginx", 8] > 0) ? sprintf("%.2f", m[n, 8] / m["nginx", 8]) : "-"
          if (m[n, 12] > 25) label = label " (noisy)"
          printf "| %s | %.0f | %.3f | %.3f | %s | %s | %s |\n", label, m[n, 3], m[n, 4], m[n, 5], cpr, rr, cr
        }
        print ""
        print "CPU during the measured runs (medians; % of one core over the wall time of the run):"
        print ""
        printf "| target | requests | errors | proxy CPU %% | upstream CPU %% | loadgen CPU %% | other CPU %% | cpu%s busy %% | cpu%s busy %% |\n", lgc, pxc
        print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        delete seen
        for (i = 1; i <= nt; i++) {
          n = t[i]; if (!cnt[n SUBSEP 3] || seen[n]++) continue
          label = (n == "direct") ? ldirect : n
          pc = (n == "direct") ? "-" : sprintf("%.0f", m[n, 9])
          printf "| %s | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
            label, m[n, 6], m[n, 7], pc, m[n, 10], m[n, 11], m[n, 12], m[n, 13], m[n, 14]
        }
      }' lgc="$LG_CPU" pxc="$PROXY_CPU" "$OUT/rounds.tsv"
    echo
    echo "us CPU/req = proxy CPU (utime+stime of its whole process group) x 1e6 / requests completed;"
    echo "for direct it is the upstream's. 'other' = machine busy time (/proc/stat) minus proxy, upstream"
    echo "and loadgen: noise from other processes (a few % of kernel time is normal); '(noisy)' = >25%."
    echo "When cpu$LG_CPU (loadgen + upstream) is ~100% busy, req/s is capped by the load side: compare us CPU/req."
  } >"$OUT/results.md"
  cat "$OUT/results.md"
  echo
  echo "Raw wrk outputs, configs, logs and per-round rows (rounds.tsv) are in: $OUT"
}

# ------------------------------------------------------------------ main
do_run() {
  do_install
  NGINX=$(nginx_bin)
  if want weir; then
    if [[ -z ${WEIR_BIN:-} ]]; then
      log "building weir: cargo build --release -p weir-gateway (in $ROOT)"
      (cd "$ROOT" && cargo build --release -p weir-gateway) || die "cargo build --release -p weir-gateway failed"
      WEIR_BIN=$ROOT/target/release/weir
    fi
    [[ -x $WEIR_BIN ]] || die "WEIR_BIN=$WEIR_BIN is not an executable file"
    WEIR_BIN=$(cd "$(dirname "$WEIR_BIN")" && pwd)/$(basename "$WEIR_BIN")
  fi
  if [[ -n ${BENCH_OUT:-} ]]; then
    mkdir -p "$BENCH_OUT"
    OUT=$(cd "$BENCH_OUT" && pwd)
  else
    OUT=$(mktemp -d /tmp/weirbench.XXXX)
    chmod 755 "$OUT" # nginx workers run as an unprivileged user and may need the temp dirs in here
  fi
  printf 'round\ttarget\trps\tp50_ms\tp99_ms\trequests\terrors\tus_cpu_per_req\tproxy_cpu_pct\tupstream_cpu_pct\tloadgen_cpu_pct\tother_cpu_pct\tcpu%s_busy_pct\tcpu%s_busy_pct\twall_s\n' \
    "$LG_CPU" "$PROXY_CPU" >"$OUT/rounds.tsv"
  log "output dir: $OUT"
  write_configs

  port_busy "$UP_PORT" && die "port $UP_PORT on $HOST is already in use; stop whatever holds it"
  start_proc upstream "$UP_CPU" "$NGINX" -p "$OUT/" -c "$OUT/upstream.conf" -e "$OUT/upstream.err"
  wait_ready upstream "$UP_PORT" "$OUT/upstream.log" "$OUT/upstream.err"
  idle_check

  local round name
  for ((round = 1; round <= ROUNDS; round++)); do
    for name in $PEERS; do
      [[ $name == direct ]] || start_target "$name"
      measure "$round" "$name"
      [[ $name == direct ]] || stop_proc "$name"
    done
  done
  stop_proc upstream
  report
}

case ${1:-run} in
  install) do_install; show_versions ;;
  run) do_run ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [install|run|help]" ;;
esac
