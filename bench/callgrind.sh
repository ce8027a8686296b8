#!/usr/bin/env bash
# bench/callgrind.sh - instructions per request, counted by valgrind's callgrind.
#
#   cargo build --release && cargo xtask plugins
#   bench/callgrind.sh                  # CHAIN=none, then design, then request-id
#   CHAIN=design N=4000 bench/callgrind.sh
#   CHAIN="none cached" bench/callgrind.sh   # the same route uncached, then cached (hits)
#
# Instruction counts do not drift with the VM or with what else the machine runs, so
# two builds, or a run with and one without plugins, compare to a fraction of a
# percent where wall-clock figures move by ten. They count user space only (the
# kernel's networking is not in them) and say nothing of cache misses: they answer
# "how much work", and `bench/pairs.sh` answers "how long".
#
# Weir runs under callgrind with one worker (WEIR_POOL_SLOTS=8: valgrind cannot reserve
# the default plugin pool's address space), instrumentation off while it starts and
# compiles its plugins; after 200 warm-up requests it is switched on for N requests
# (h2load, 8 connections, HTTP/1.1 or h2c) and dumped. Per chain it prints the instructions per
# request and the biggest functions; the callgrind file stays in OUT for
# callgrind_annotate.
#
# Environment: WEIR_BIN (<repo>/target/release/weir), PLUGINS_DIR
#   (<repo>/target/weir-plugins), CHAIN (none | design | design-1 | design-2 | request-id | cached;
#   design-N: the chain's first N plugins; default:
#   the first three; cached is the no-plugin route with `cache`, every counted request a
#   hit), PROTO (h1 | h2c: the client side; the upstream is HTTP/1.1 either way; h1),
#   N (requests counted, 2000), ISOLATION (worker | request), OUT (a temp dir,
#   kept), TOP (functions listed, 15).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEIR_BIN=${WEIR_BIN:-$ROOT/target/release/weir}
PLUGINS_DIR=${PLUGINS_DIR:-$ROOT/target/weir-plugins}
N=${N:-2000}
ISOLATION=${ISOLATION:-worker}
TOP=${TOP:-15}
CHAINS=${CHAIN:-none design request-id}
UP=127.0.0.1:18180
GW_PORT=18190

die() { echo "callgrind.sh: $*" >&2; exit 1; }
[[ -x $WEIR_BIN ]] || die "WEIR_BIN=$WEIR_BIN is not executable (cargo build --release)"
for p in jwt-auth rate-limit headers request-id; do
  [[ -f $PLUGINS_DIR/$p.wasm ]] || die "no $PLUGINS_DIR/$p.wasm (cargo xtask plugins)"
done
[[ $N =~ ^[0-9]+$ && $N -ge 100 && $N -le 100000 ]] || die "N must be 100..100000"
[[ $ISOLATION == worker || $ISOLATION == request ]] || die "ISOLATION must be worker or request"
PROTO=${PROTO:-h1}
[[ $PROTO == h1 || $PROTO == h2c ]] || die "PROTO must be h1 or h2c"
for c in $CHAINS; do
  [[ $c == none || $c == design || $c == design-[12] || $c == request-id || $c == cached ]] || die "unknown CHAIN '$c'"
done
for tool in valgrind callgrind_control callgrind_annotate h2load curl; do
  command -v $tool >/dev/null || die "$tool not found (apt-get install valgrind nghttp2-client curl)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found (bench/run.sh install)"

# The same token and chains as bench/pairs.sh.
TOKEN=$(sed -n 's/^TOKEN=//p' "$ROOT/bench/pairs.sh")
AUTH="authorization: Bearer $TOKEN"
chain_extra() {
  case $1 in
    design) sed -n '/^chain_design() {/,/^EOF/p' "$ROOT/bench/pairs.sh" | sed '1,2d;$d' ;;
    # The chain's first 1 or 2 plugins (each is 3 lines): what each one adds.
    design-[12]) chain_extra design | head -n $((3 * ${1#design-})) ;;
    request-id) printf '[[route.plugins]]\nname = "request-id"\n' ;;
    # Lands in the route (the config's last table): the origin's "ok" stays fresh an hour.
    cached) printf 'cache = { ttl_default = "1h" }\n' ;;
    none) ;;
  esac
}

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/weir-callgrind.XXXXXX")}
mkdir -p "$OUT"
GROUPS_STARTED=()
cleanup() {
  local pg
  for pg in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  sleep 0.5
  for pg in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
}
trap cleanup EXIT

NGINX=$NGINX setsid "$ROOT/bench/upstream.sh" "$OUT" "$UP" >/dev/null 2>&1 &
GROUPS_STARTED+=($!)
for _ in $(seq 50); do curl -fs "http://$UP/" >/dev/null && break; sleep 0.1; done

# valgrind runs the gateway (peers-gateway.sh execs WEIR_BIN, here this wrapper).
cat >"$OUT/under-callgrind.sh" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="\$CG_FILE" "$WEIR_BIN" "\$@"
EOF
chmod +x "$OUT/under-callgrind.sh"

load() {
  # A request with Authorization is not stored by a shared cache: `cached` sends none.
  local auth=(-H "$AUTH")
  [[ $2 == cached ]] && auth=()
  local proto=(--h1)
  [[ $PROTO == h2c ]] && proto=()
  h2load "${proto[@]}" -n "$1" -c 8 "${auth[@]}" "http://127.0.0.1:$GW_PORT/" >"$OUT/load.txt"
  grep -q "^requests: $1 total, $1 started, $1 done, $1 succeeded" "$OUT/load.txt" ||
    { cat "$OUT/load.txt" "$OUT/weir-$2.log" >&2; die "$2: not every request succeeded"; }
}

printf 'chain\tinstructions/request\n'
for chain in $CHAINS; do
  extra="$(chain_extra "$chain")
[plugins]
dir = \"$PLUGINS_DIR\"
cache_dir = \"$OUT/cache\"
isolation = \"$ISOLATION\""
  # callgrind_control finds the process through vgdb's files in TMPDIR, so both sides
  # use the same one.
  CG_FILE=$OUT/$chain.callgrind WEIR_POOL_SLOTS=8 WEIR_BIN=$OUT/under-callgrind.sh \
    TMPDIR=$OUT GATEWAY_PORT=$GW_PORT UPSTREAM_ADDR=$UP WORKERS=1 WEIR_CONFIG_EXTRA=$extra \
    setsid "$ROOT/bench/peers-gateway.sh" >"$OUT/weir-$chain.log" 2>&1 &
  pid=$!
  GROUPS_STARTED+=("$pid")
  for _ in $(seq 600); do
    curl -fs -H "$AUTH" "http://127.0.0.1:$GW_PORT/" >/dev/null && break
    sleep 0.2
  done
  load 200 "$chain"
  TMPDIR=$OUT callgrind_control -i on "$pid" >/dev/null 2>&1
  load "$N" "$chain"
  TMPDIR=$OUT callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The dump is part 1 (.1); what ran while shutting down is the file itself.
  file=$OUT/$chain.callgrind.1
  [[ -f $file ]] || die "$chain: no dump in $OUT"
  total=$(awk '/^summary:/ { print $2; exit }' "$file")
  printf '%s\t%d\n' "$chain" $((total / N))
  callgrind_annotate --auto=no --threshold=100 "$file" 2>/dev/null |
    sed -n '/file:function/,$p' |
    awk -v n="$N" -v top="$TOP" 'NR > 2 && NR <= top + 2 {
      c = $1; gsub(",", "", c); sub(/^[^)]*\) +/, "")
      printf "\t%8.0f  %s\n", c / n, substr($0, 1, 150) }' |
    sed -E 's|/root/.cargo/registry/src/[^/]+/||; s|/rustc/[0-9a-f]+/library/||' 
done
echo "callgrind files: $OUT"
