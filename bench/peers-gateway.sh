#!/usr/bin/env bash
# bench/peers-gateway.sh - run Weir as the "gateway" peer of ../shared/bench/peers.sh.
#
#   GATEWAY_CMD="$PWD/bench/peers-gateway.sh" GATEWAY_NAME=weir ../shared/bench/peers.sh
#
# peers.sh runs GATEWAY_CMD pinned to its PROXY_CPU with GATEWAY_PORT,
# UPSTREAM_ADDR and WORKERS exported. This writes the equivalent weir.toml
# (same shape as bench/run.sh's) to a temp file and execs the gateway, so the
# PID/process group peers.sh measures is weir itself.
#
# Environment: WEIR_BIN (default: <repo>/target/release/weir),
#   GATEWAY_PORT (18090), UPSTREAM_ADDR (127.0.0.1:18080), WORKERS (1),
#   WEIR_CONFIG_EXTRA (TOML appended to the config).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEIR_BIN=${WEIR_BIN:-$ROOT/target/release/weir}
GATEWAY_PORT=${GATEWAY_PORT:-18090}
UPSTREAM_ADDR=${UPSTREAM_ADDR:-127.0.0.1:18080}
WORKERS=${WORKERS:-1}

die() { echo "peers-gateway.sh: $*" >&2; exit 1; }
[[ -x $WEIR_BIN ]] || die "WEIR_BIN=$WEIR_BIN is not executable (cargo build --release -p weir-gateway)"
[[ $GATEWAY_PORT =~ ^[0-9]{1,5}$ ]] || die "bad GATEWAY_PORT '$GATEWAY_PORT'"
[[ $UPSTREAM_ADDR =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{1,5}$ ]] ||
  die "UPSTREAM_ADDR must be a loopback ip:port, got '$UPSTREAM_ADDR'"
[[ $WORKERS =~ ^[0-9]{1,3}$ && $WORKERS -ge 1 ]] || die "bad WORKERS '$WORKERS'"

# The file stays behind (a few hundred bytes in $TMPDIR): exec leaves no one to remove it.
tmpfile=$(mktemp "${TMPDIR:-/tmp}/weir-peers.XXXXXX")
{
  cat <<EOF
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
workers = $WORKERS
access_log = false

[[upstream]]
name = "bench"
endpoints = ["$UPSTREAM_ADDR"]

[[route]]
name = "all"
match = { path_prefix = "/" }
upstream = "bench"
EOF
  if [[ -n ${WEIR_CONFIG_EXTRA:-} ]]; then printf '\n# WEIR_CONFIG_EXTRA\n%s\n' "$WEIR_CONFIG_EXTRA"; fi
} >"$tmpfile"

exec "$WEIR_BIN" run --config "$tmpfile"
