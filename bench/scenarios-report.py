#!/usr/bin/env python3
"""bench/scenarios-report.py - the Markdown tables of a bench/scenarios.sh run.

    bench/scenarios-report.py OUT_DIR     # reads OUT_DIR/rows.tsv and meta.txt, prints Markdown

rows.tsv has one measurement per line: scenario, case, target, round, metric, value.
For every (scenario, case, target) the medians are taken over the rounds whose `other`
CPU (processes that are not ours) stayed at or under NOISY_PCT; when every round was
noisier the medians of all rounds are shown and the row is marked (noisy). Ratios are
between rows of the same run only, and the last table checks each of issue 18's targets.
"""

import os
import statistics
import sys
from collections import OrderedDict

ORDER = ["h1", "h2c", "tls-h1", "tls-h2", "handshake", "plugin", "chain", "body", "idle", "scaling"]
TITLE = {
    "h1": "HTTP/1.1 keep-alive, no plugin (wrk)",
    "h2c": "h2c, prior knowledge (h2load)",
    "tls-h1": "TLS termination, HTTP/1.1 keep-alive (h2load --h1)",
    "tls-h2": "TLS termination, HTTP/2 over TLS, ALPN h2 (h2load)",
    "handshake": "TLS handshakes, a new connection each (openssl s_time -new / -reuse)",
    "plugin": "One header plugin: Weir's request-id vs Envoy's proxy-wasm filter doing the same work (wrk)",
    "chain": "DESIGN.md's chain (jwt-auth, rate-limit, headers) vs no plugin (wrk)",
    "body": "Large bodies, streamed (curl, one transfer at a time)",
    "idle": "Idle keep-alive client connections (bench/idle-conns.py)",
    "scaling": "Scaling: Weir with 2 workers on 2 cores vs 1 worker (wrk)",
}
LABEL = {
    "direct": "direct (no proxy)",
    "weir-rid": "weir + request-id",
    "weir-chain": "weir + jwt-auth, rate-limit, headers",
    "weir-2w": "weir, 2 workers",
    "envoy-wasm": "envoy + proxy-wasm request-id filter",
}


def load(out):
    meta = OrderedDict()
    tools = []
    with open(os.path.join(out, "meta.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition(" ")
            if k == "tool":
                tools.append(v)
            else:
                meta[k] = v
    raw = OrderedDict()  # (scen, case, target) -> round -> metric -> value
    with open(os.path.join(out, "rows.tsv")) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            scen, case, target, rnd, key, value = parts
            try:
                value = float(value)
            except ValueError:
                continue
            raw.setdefault((scen, case, target), OrderedDict()).setdefault(rnd, {})[key] = value
    negotiated = {}
    path = os.path.join(out, "negotiated.txt")
    if os.path.exists(path):
        for line in open(path):
            t, _, rest = line.strip().partition(" ")
            negotiated[t] = rest
    return meta, tools, raw, negotiated


def medians(raw, noisy_pct):
    med, noisy, counts = {}, {}, {}
    for key, rounds in raw.items():
        rs = list(rounds.values())
        clean = [r for r in rs if r.get("other_pct", 0) <= noisy_pct]
        use = clean or rs
        noisy[key] = not clean
        counts[key] = (len(use), len(rs))
        metrics = {}
        for r in use:
            for k, v in r.items():
                metrics.setdefault(k, []).append(v)
        med[key] = {k: statistics.median(v) for k, v in metrics.items()}
    return med, noisy, counts


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) < 0.5 * 10 ** -digits:
        v = 0.0  # no "-0.0"
    if abs(v) >= 1000 and digits <= 1:
        return f"{v / 1000:.1f}k"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


class Report:
    def __init__(self, out):
        self.meta, self.tools, raw, self.negotiated = load(out)
        self.noisy_pct = float(self.meta.get("noisy_pct", "25"))
        self.med, self.noisy, self.counts = medians(raw, self.noisy_pct)
        self.lines = []
        self.checks = []  # (scenario, target text, measured, met)

    def p(self, s=""):
        self.lines.append(s)

    def get(self, scen, target, key, case=""):
        return self.med.get((scen, case, target), {}).get(key)

    def cpu_per(self, scen, target, case=""):
        """Microseconds of proxy CPU per request (or handshake)."""
        s, n = self.get(scen, target, "proxy_s", case), self.get(scen, target, "requests", case)
        return s * 1e6 / n if s is not None and n else None

    def targets(self, scen, case=""):
        return [t for (s, c, t) in self.med if s == scen and c == case]

    def cases(self, scen):
        out = []
        for (s, c, _t) in self.med:
            if s == scen and c not in out:
                out.append(c)
        return out

    def label(self, scen, target, case=""):
        name = LABEL.get(target, target)
        if scen == "plugin" and target == "weir":
            name = "weir, no plugin"
        if scen == "chain" and target == "weir":
            name = "weir, no plugin"
        if scen == "scaling" and target == "weir":
            name = "weir, 1 worker"
        used, total = self.counts[(scen, case, target)]
        if total > 1:
            name += f" ({used}/{total})"
        if self.noisy[(scen, case, target)]:
            name += " (noisy)"
        return name

    def check(self, scen, what, value, met, rows):
        """rows: the (scenario, case, target) medians the check compares; a noisy one is said."""
        verdict = "met" if met else "not met"
        if any(self.noisy.get(r) for r in rows):
            verdict += " (noisy rows)"
        self.checks.append((scen, what, value, verdict))

    # -------------------------------------------------------------- tables
    def http_table(self, scen):
        ts = self.targets(scen)
        h2 = scen in ("h2c", "tls-h2")
        base = {"plugin": "weir", "chain": "weir", "scaling": "weir"}.get(scen, "nginx")
        basename = {"nginx": "nginx", "weir": "weir"}[base]
        if scen == "scaling":
            basename = "weir 1 worker"
        cols = ["target", "req/s", "p50 ms", "p99 ms", "µs CPU/req",
                f"req/s ÷ {basename}", f"CPU/req ÷ {basename}", f"p99 ÷ {basename}"]
        if h2:
            cols.append("req/s ÷ haproxy")
        if scen == "plugin":
            cols.append("req/s ÷ envoy + filter")
        if scen == "scaling":
            cols.append("req/s ÷ direct")
        cols += ["errors", "loadgen / proxy core busy %", "other %"]
        self.p("| " + " | ".join(cols) + " |")
        self.p("| --- |" + " ---: |" * (len(cols) - 1))
        b_rps, b_cpu, b_p99 = self.get(scen, base, "rps"), self.cpu_per(scen, base), self.get(scen, base, "p99_ms")
        for t in ts:
            rps, cpu = self.get(scen, t, "rps"), self.cpu_per(scen, t)
            p99 = self.get(scen, t, "p99_ms")
            cpu_s = fmt(cpu) + (" (origin)" if t == "direct" else "")
            row = [self.label(scen, t), fmt(rps), fmt(self.get(scen, t, "p50_ms"), 3), fmt(p99, 3), cpu_s,
                   ratio(rps, b_rps), "–" if t == "direct" else ratio(cpu, b_cpu), ratio(p99, b_p99)]
            if h2:
                row.append(ratio(rps, self.get(scen, "haproxy", "rps")))
            if scen == "plugin":
                row.append(ratio(rps, self.get(scen, "envoy-wasm", "rps")))
            if scen == "scaling":
                row.append(ratio(rps, self.get(scen, "direct", "rps")))
            row += [fmt(self.get(scen, t, "errors"), 0),
                    f"{fmt(self.get(scen, t, 'lg_busy_pct'), 0)} / {fmt(self.get(scen, t, 'px_busy_pct'), 0)}",
                    fmt(self.get(scen, t, "other_pct"), 0)]
            self.p("| " + " | ".join(row) + " |")

    def handshake_table(self):
        scen = "handshake"
        cols = ["target", "resumption", "handshakes/s", "resumed %", "µs CPU/handshake",
                "handshakes/s ÷ nginx", "CPU/handshake ÷ nginx", "other %"]
        self.p("| " + " | ".join(cols) + " |")
        self.p("| --- | --- |" + " ---: |" * (len(cols) - 2))
        for case in self.cases(scen):
            for t in self.targets(scen, case):
                rps, cpu = self.get(scen, t, "rps", case), self.cpu_per(scen, t, case)
                self.p("| " + " | ".join([
                    self.label(scen, t, case), "on" if case == "resumption-on" else "off", fmt(rps),
                    fmt(self.get(scen, t, "resumed_pct", case), 0), fmt(cpu),
                    ratio(rps, self.get(scen, "nginx", "rps", case)),
                    ratio(cpu, self.cpu_per(scen, "nginx", case)), fmt(self.get(scen, t, "other_pct", case), 0)]) + " |")
        if self.negotiated:
            self.p()
            self.p("Negotiated with each peer (openssl s_client, the bench's cipher): " +
                   "; ".join(f"{t}: {v}" for t, v in self.negotiated.items()) + ".")

    def body_table(self):
        scen = "body"
        cols = ["body", "target", "MB/s", "µs CPU/MB", "RSS idle MiB", "RSS peak MiB", "peak − idle MiB",
                "MB/s ÷ nginx", "transfers", "other %"]
        self.p("| " + " | ".join(cols) + " |")
        self.p("| --- | --- |" + " ---: |" * (len(cols) - 2))
        for case in self.cases(scen):
            for t in self.targets(scen, case):
                mbs = self.get(scen, t, "mb_s", case)
                s, b = self.get(scen, t, "proxy_s", case), self.get(scen, t, "bytes", case)
                idle, peak = self.get(scen, t, "rss_idle_kib", case), self.get(scen, t, "rss_peak_kib", case)
                self.p("| " + " | ".join([
                    case, self.label(scen, t, case), fmt(mbs, 0), fmt(s * 1e6 / (b / 1e6) if s is not None and b else None),
                    fmt(idle / 1024), fmt(peak / 1024), fmt((peak - idle) / 1024),
                    ratio(mbs, self.get(scen, "nginx", "mb_s", case)), fmt(self.get(scen, t, "requests", case), 0),
                    fmt(self.get(scen, t, "other_pct", case), 0)]) + " |")

    def idle_table(self):
        scen = "idle"
        cols = ["target", "connections", "RSS before MiB", "RSS with them MiB", "KiB per connection", "÷ nginx"]
        self.p("| " + " | ".join(cols) + " |")
        self.p("| --- |" + " ---: |" * (len(cols) - 1))
        for t in self.targets(scen):
            k = self.get(scen, t, "kib_per_conn")
            self.p("| " + " | ".join([
                self.label(scen, t), fmt(self.get(scen, t, "conns"), 0), fmt(self.get(scen, t, "rss_before_kib") / 1024),
                fmt(self.get(scen, t, "rss_after_kib") / 1024), fmt(k, 2), ratio(k, self.get(scen, "nginx", "kib_per_conn"))]) + " |")

    # -------------------------------------------------------------- targets
    def targets_check(self):
        g, c = self.get, self.cpu_per
        present = {s for (s, _c, _t) in self.med}

        def both(scen, a, b, case=""):
            return (scen, case, a) in self.med and (scen, case, b) in self.med

        if both("h1", "weir", "nginx"):
            r = c("h1", "weir") / c("h1", "nginx")
            self.check("h1", "CPU/req ≤ nginx's", f"{r:.2f}×", r <= 1, [("h1", "", "weir"), ("h1", "", "nginx")])
            r = g("h1", "weir", "p99_ms") / g("h1", "nginx", "p99_ms")
            self.check("h1", "p99 ≤ nginx's", f"{r:.2f}×", r <= 1, [("h1", "", "weir"), ("h1", "", "nginx")])
        for scen in ("h2c", "tls-h2"):
            if both(scen, "weir", "haproxy"):
                r = g(scen, "weir", "rps") / g(scen, "haproxy", "rps")
                self.check(scen, "req/s ≥ haproxy's", f"{r:.2f}×", r >= 1, [(scen, "", "weir"), (scen, "", "haproxy")])
            if both(scen, "weir", "nginx"):
                r = c(scen, "weir") / c(scen, "nginx")
                self.check(scen, "CPU/req ≤ nginx's", f"{r:.2f}×", r <= 1, [(scen, "", "weir"), (scen, "", "nginx")])
        if both("tls-h1", "weir", "nginx"):
            r = c("tls-h1", "weir") / c("tls-h1", "nginx")
            self.check("tls-h1", "CPU/req ≤ nginx's", f"{r:.2f}×", r <= 1, [("tls-h1", "", "weir"), ("tls-h1", "", "nginx")])
        for case in ("resumption-off", "resumption-on"):
            if both("handshake", "weir", "nginx", case):
                r = g("handshake", "weir", "rps", case) / g("handshake", "nginx", "rps", case)
                self.check("handshake", f"handshakes/s ≥ nginx's, {case}", f"{r:.2f}×", r >= 1,
                           [("handshake", case, "weir"), ("handshake", case, "nginx")])
        if both("plugin", "weir-rid", "weir"):
            r = c("plugin", "weir-rid") / c("plugin", "weir")
            self.check("plugin", "request-id adds ≤ 10 % CPU/req", f"+{(r - 1) * 100:.0f} %", r <= 1.10,
                       [("plugin", "", "weir-rid"), ("plugin", "", "weir")])
            r = g("plugin", "weir-rid", "p99_ms") / g("plugin", "weir", "p99_ms")
            self.check("plugin", "p99 ≤ 1.2× no plugin", f"{r:.2f}×", r <= 1.2, [("plugin", "", "weir-rid"), ("plugin", "", "weir")])
        if both("plugin", "weir-rid", "envoy-wasm"):
            r = g("plugin", "weir-rid", "rps") / g("plugin", "envoy-wasm", "rps")
            self.check("plugin", "req/s ≥ 2× Envoy + proxy-wasm", f"{r:.2f}×", r >= 2,
                       [("plugin", "", "weir-rid"), ("plugin", "", "envoy-wasm")])
        if both("chain", "weir-chain", "weir"):
            r = g("chain", "weir-chain", "rps") / g("chain", "weir", "rps")
            self.check("chain", "req/s ≥ 0.8× no plugin", f"{r:.2f}×", r >= 0.8, [("chain", "", "weir-chain"), ("chain", "", "weir")])
        for case in self.cases("body"):
            if both("body", "weir", "nginx", case):
                r = g("body", "weir", "mb_s", case) / g("body", "nginx", "mb_s", case)
                self.check("body", f"{case}: MB/s ≥ nginx's", f"{r:.2f}×", r >= 1, [("body", case, "weir"), ("body", case, "nginx")])
            if ("body", case, "weir") in self.med:
                grow = (g("body", "weir", "rss_peak_kib", case) - g("body", "weir", "rss_idle_kib", case)) / 1024
                self.check("body", f"{case}: RSS flat (peak − idle < 16 MiB)", f"{grow:.1f} MiB", grow < 16, [])
        if both("idle", "weir", "nginx"):
            a, b = g("idle", "weir", "kib_per_conn"), g("idle", "nginx", "kib_per_conn")
            self.check("idle", "memory per connection ≤ nginx's", f"{a:.2f} vs {b:.2f} KiB", a <= b, [])
        if both("scaling", "weir-2w", "weir"):
            r = g("scaling", "weir-2w", "rps") / g("scaling", "weir", "rps")
            note = ""
            if ("scaling", "", "direct") in self.med:
                ceiling = g("scaling", "weir-2w", "rps") / g("scaling", "direct", "rps")
                note = f" ({ceiling:.2f}× the direct ceiling{': load-bound' if ceiling >= 0.9 else ''})"
            self.check("scaling", "2 workers ≥ 1.8× 1 worker", f"{r:.2f}×{note}", r >= 1.8,
                       [("scaling", "", "weir-2w"), ("scaling", "", "weir")])
        return present

    def render(self):
        m = self.meta
        self.p(f"## Weir and peers — {m.get('date', '?')}")
        self.p()
        self.p(f"- machine: {m.get('machine', '?')}")
        self.p(f"- {m.get('weir', '')}; " + ", ".join(self.tools))
        self.p(f"- command: `{m.get('command', '?')}`")
        self.p(f"- pinning: {m.get('pinning', '?')}; TLS: the same self-signed ECDSA P-256 certificate for every peer, "
               f"clients pinned to TLS 1.3 {m.get('tls13_cipher', '?')}")
        self.p(f"- medians over rounds whose `other %` (CPU of processes that are not ours, % of one core) ≤ "
               f"{self.noisy_pct:.0f}; (used/total rounds) when more than one; (noisy) = no round was that quiet")
        for scen in ORDER:
            if not any(s == scen for (s, _c, _t) in self.med):
                continue
            self.p()
            self.p(f"### {TITLE[scen]}")
            self.p()
            if scen == "handshake":
                self.handshake_table()
            elif scen == "body":
                self.body_table()
            elif scen == "idle":
                self.idle_table()
            else:
                self.http_table(scen)
        self.targets_check()
        if self.checks:
            self.p()
            self.p("### Issue 18's targets, this run")
            self.p()
            self.p("| scenario | target | measured | |")
            self.p("| --- | --- | ---: | --- |")
            for scen, what, value, met in self.checks:
                self.p(f"| {scen} | {what} | {value} | {met} |")
        self.p()
        self.p("µs CPU/req: the proxy's utime + stime (its whole process group, all threads) during the measured "
               "run × 10⁶ ÷ requests completed; compare it, not req/s, when the load generator's core is the busy one.")
        return "\n".join(self.lines)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scenarios-report.py OUT_DIR")
    print(Report(sys.argv[1]).render())


if __name__ == "__main__":
    main()
