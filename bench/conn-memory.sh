#!/usr/bin/env bash
# Memory per client connection: the gateway's resident memory (VmRSS) with N idle
# keep-alive HTTP/1.1 connections open, each having had one request answered, against
# none. Everything on 127.0.0.1.
#
#   bench/conn-memory.sh                       # release build, N=5000
#   WEIR_BIN=target/debug/weir N=2000 bench/conn-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
PORT=${PORT:-18190}
if [[ -z "${WEIR_BIN:-}" ]]; then
    cargo build --release -q -p weir-gateway
    WEIR_BIN=target/release/weir
fi
OUT=$(mktemp -d)
trap 'kill "$WEIR_PID" 2>/dev/null || true; rm -rf "$OUT"' EXIT
cat >"$OUT/weir.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
workers = 1
access_log = false
[admin]
listen = "127.0.0.1:0"
[[route]]
name = "ok"
respond = { status = 200, body = "ok" }
TOML
ulimit -n $((N + 1024))
RUST_LOG=warn "$WEIR_BIN" run --config "$OUT/weir.toml" &
WEIR_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$WEIR_PID/status"; }
python3 - "$PORT" "$N" "$WEIR_PID" <<'PY'
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def one():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"ok"):
        got += s.recv(4096)
    return s
# Warm up: the first connections allocate what every later one reuses.
warm = [one() for _ in range(100)]
for s in warm:
    s.close()
time.sleep(1)
before = rss()
held = [one() for _ in range(n)]
time.sleep(1)
after = rss()
print(f"connections={n} rss_before_kib={before} rss_after_kib={after} "
      f"kib_per_connection={(after - before) / n:.1f}")
PY
