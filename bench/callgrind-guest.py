#!/usr/bin/env python3
"""bench/callgrind-guest.py CALLGRIND_FILE PERF_MAP N [TOP]

The plugins' own (JIT-compiled) functions in a callgrind profile, by name. callgrind
sees Wasm code only as addresses (`???:0x...`); wasmtime's perf map
(`/tmp/perf-PID.map`, written when the gateway runs with WEIR_PERF_MAP=1) says which
function each address range holds. Prints each function's instructions per request
(its self cost divided by N, the requests counted), biggest first, and their total.
Names are the guest's own when the plugin was built without `strip` (see
bench/README.md, "Instructions per request").
"""
import bisect
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    profile, perf_map, requests = sys.argv[1], sys.argv[2], float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    ranges = []
    with open(perf_map) as lines:
        for line in lines:
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3:
                ranges.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
    ranges.sort()
    starts = [start for start, _, _ in ranges]

    def name(address):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < ranges[i][0] + ranges[i][1]:
            return ranges[i][2]
        return None

    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", profile],
        capture_output=True, text=True, check=True,
    ).stdout
    costs = {}
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\?\?\?:0x([0-9a-f]+)", line)
        if not match:
            continue
        function = name(int(match.group(2), 16))
        if function is None:
            continue
        cost = int(match.group(1).replace(",", "")) / requests
        costs[function] = costs.get(function, 0) + cost
    print("plugin code: %.0f instructions per request" % sum(costs.values()))
    for function, cost in sorted(costs.items(), key=lambda kv: -kv[1])[:top]:
        print("%8.0f  %s" % (cost, function[:140]))


if __name__ == "__main__":
    main()
