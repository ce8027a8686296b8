#!/usr/bin/env bash
# bench/upstream.sh - the benchmarks' trivial origin: nginx, one worker, `return 200 "ok"`.
#
#   bench/upstream.sh DIR HOST:PORT   # writes DIR/upstream.conf, execs nginx (files in DIR)
#
# bench/pairs.sh runs it; bench/run.sh sources it for upstream_conf and nginx_temp_paths,
# bench/hostile.sh and bench/kv-flood.sh also for stop_started.
# Environment: NGINX (default: nginx on PATH, else /usr/sbin/nginx).

nginx_temp_paths() { # prefix -> *_temp_path lines for the modules this nginx has
  local p=$1 v m
  v=$("$NGINX" -V 2>&1 || true)
  echo "  client_body_temp_path $p/client_body;"
  for m in proxy fastcgi uwsgi scgi; do
    [[ $v == *"--without-http_${m}_module"* ]] || echo "  ${m}_temp_path $p/$m;"
  done
}

stop_started() { # TERM, then KILL, the process group of every PID in PIDS (setsid-started)
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

upstream_conf() { # dir host:port -> the origin's nginx config, its files under dir
  local dir=$1 listen=$2
  cat <<EOF
worker_processes 1;
daemon off;
pid $dir/upstream.pid;
error_log $dir/upstream.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
$(nginx_temp_paths "$dir/tmp/upstream")
  server {
    listen $listen backlog=4096;
    default_type text/plain;
    location / { return 200 "ok"; }
  }
}
EOF
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  [[ $# -eq 2 ]] || { echo "usage: bench/upstream.sh DIR HOST:PORT" >&2; exit 2; }
  NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
  mkdir -p "$1/tmp/upstream"
  upstream_conf "$1" "$2" >"$1/upstream.conf"
  exec "$NGINX" -p "$1/" -c "$1/upstream.conf" -e "$1/upstream.err"
fi
