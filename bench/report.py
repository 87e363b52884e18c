#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/results/*.csv -> results.md, PNG charts, and a summary on stdout.

Usage: report.py RESULTS_DIR

Every cell is a median over the interleaved repetitions with its min-max
range. pact's contenders are compared with the BEST peer of each scenario
and placement (raw liburing, raw epoll, libuv written for speed, libuv
shaped like its example; for HTTP: raw liburing, raw epoll, libuv): the
peer with the highest median req/s for throughput, the lowest median server
CPU per request for cost. Ratios: pact / best peer, so > 1 is better for
req/s and < 1 is better for CPU per request.

The summary's ratios are paired: every repetition runs all contenders of a
scenario and placement back to back, seconds apart, so each repetition
gives one ratio pact / best peer measured under the same conditions; the
summary shows the median of those ratios and their min-max. The machine's
load drifts over minutes, and a ratio of two medians taken from different
repetitions carries that drift; the paired median does not, and the range
of the per-repetition ratios says how far one repetition can be trusted.
The full tables keep the plain medians and their ratio.

Charts use matplotlib (Debian python3-matplotlib) with the Agg backend;
skipped with a note if it is missing.
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")

ECHO_PEERS = ["raw_uring", "raw_epoll", "libuv_fast", "libuv_example"]
ECHO_PACT = ["pact_stream_uring", "pact_stream_uring_copy", "pact_stream_epoll", "pact_uring", "pact_epoll"]
HTTP_PEERS = ["http_raw_uring", "http_raw_epoll", "http_libuv"]
HTTP_PACT = ["http_pact_uring", "http_pact_epoll"]
DESC = {
    "raw_uring": "raw liburing",
    "raw_epoll": "raw epoll",
    "libuv_fast": "libuv, written for speed",
    "libuv_example": "libuv, shaped like its example",
    "pact_stream_uring": "pact transports, io_uring",
    "pact_stream_uring_copy": "pact transports, io_uring, echo by pact_transport_write (inline send)",
    "pact_stream_epoll": "pact transports, epoll",
    "pact_uring": "pact operations, io_uring",
    "pact_epoll": "pact operations, epoll",
    "http_raw_uring": "raw liburing",
    "http_raw_epoll": "raw epoll",
    "http_libuv": "libuv (best practice)",
    "http_pact_uring": "pact transports, io_uring",
    "http_pact_epoll": "pact transports, epoll",
}
SC_DESC = {
    "pp64_c1": "ping-pong 64 B, 1 conn",
    "pp64_c50": "ping-pong 64 B, 50 conns",
    "pp64_c500": "ping-pong 64 B, 500 conns",
    "pp16k_c50": "ping-pong 16 KiB, 50 conns",
    "stream64k_c10": "stream 64 KiB chunks (4 in flight), 10 conns",
    "churn_c100": "churn: connect, 1 req, close; 100 concurrent (conn/s)",
    "http_c50": "HTTP keep-alive under wrk, 50 conns",
    "http_c500": "HTTP keep-alive under wrk, 500 conns",
}
PLACEMENTS = ("split", "shared")
PL_DESC = {"split": "split (server CPU 0, load CPU 1)", "shared": "shared (both on CPU 0)"}


def read(name):
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def agg(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt(v, digits=0):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v / 1000:.{max(digits, 1)}f}k"
    return f"{v:.{digits}f}"


def fmt_range(a, digits=1):
    if not a:
        return "—"
    return f"{fmt(a[0], digits)} ({fmt(a[1], digits)}–{fmt(a[2], digits)})"


def base_name(who):
    return who[:-5] if who.endswith("@base") else who


def label(who):
    d = DESC.get(base_name(who), who)
    return d + (" (baseline build)" if who.endswith("@base") else "")


class Table:
    """metric[(scenario, placement, contender)][key] -> [values]."""

    def __init__(self, rows, keys):
        self.m = defaultdict(lambda: defaultdict(list))
        self.by_rep = defaultdict(dict)  # (scenario, placement, contender, key) -> {rep: value}
        self.scenarios, self.contenders, self.features = [], [], {}
        for r in rows:
            k = (r["scenario"], r["placement"], r["contender"])
            if r["scenario"] not in self.scenarios:
                self.scenarios.append(r["scenario"])
            if r["contender"] not in self.contenders:
                self.contenders.append(r["contender"])
            for key in keys:
                self.m[k][key].append(num(r.get(key)))
                self.by_rep[k + (key,)][r.get("rep")] = num(r.get(key))
            if r.get("features"):
                self.features[r["contender"]] = r["features"].replace("+", ",")

    def agg(self, sc, pl, who, key):
        return agg(self.m[(sc, pl, who)][key])

    def med(self, sc, pl, who, key):
        a = self.agg(sc, pl, who, key)
        return a[0] if a else None

    def paired(self, sc, pl, who, peer, key):
        """Median and min-max of who / peer over the repetitions both ran."""
        mine, theirs = self.by_rep[(sc, pl, who, key)], self.by_rep[(sc, pl, peer, key)]
        return agg([mine[r] / theirs[r] for r in mine
                    if mine[r] is not None and theirs.get(r)])

    def best(self, sc, pl, peers, key, lower_is_better):
        cands = [(self.med(sc, pl, p, key), p) for p in peers]
        cands = [c for c in cands if c[0]]
        if not cands:
            return None, None
        v, p = (min if lower_is_better else max)(cands)
        return p, v


def ordered(present, peers, pact):
    """Peers, then pact's contenders each followed by its baseline."""
    out = [p for p in peers if p in present]
    for p in pact:
        out += [w for w in (p, p + "@base") if w in present]
    out += [w for w in present if w not in out]
    return out


meta = ""
if os.path.exists(os.path.join(OUT, "meta.txt")):
    meta = open(os.path.join(OUT, "meta.txt")).read().strip()
warn = []
loads = []
for line in meta.splitlines():
    if line.startswith("load average at"):
        try:
            loads.append(float(line.split(":")[1].split()[0]))
        except (IndexError, ValueError):
            pass
if loads and max(loads) > (os.cpu_count() or 2) / 2:
    warn = [f"**Machine load:** the 1-minute load average was {', '.join(str(x) for x in loads)} "
            "(start, end) on a machine with 2 CPUs: other work shared it, so absolute numbers are "
            "depressed and ranges are wide. Repetitions are interleaved (every contender once per "
            "scenario and placement, then again), which spreads the disturbance over all contenders; "
            "read a ratio only where the ranges allow it, and prefer server CPU per request.", ""]
md = ["# pact benchmarks: against the best of libuv, raw liburing and raw epoll", "",
      "Generated by `bench/run.sh` and `bench/report.py`; raw numbers in the CSV files next to this one.",
      "", "```", meta, "```", ""] + warn
summary = []  # lines printed on stdout


def paired_str(a):
    """A paired ratio: median (min–max) of pact / best peer per repetition."""
    return f"×{a[0]:.2f} ({a[1]:.2f}–{a[2]:.2f})" if a else "—"


def compare_section(title, t, peers, pact, unit_note, keys_lat, side_by_side=False):
    """Summary (pact vs best peer), then full tables per placement."""
    global md
    if not t.scenarios:
        return
    who_all = ordered(t.contenders, peers, pact)
    peers_here = [p for p in who_all if p in peers]
    pact_here = [p for p in who_all if p not in peers]
    md += [f"## {title}", "",
           "Contenders: " + "; ".join(f"**{w}** — {label(w)} ({t.features.get(w, '?')})" for w in who_all), "",
           unit_note, ""]
    # --- summary: pact / best peer
    md += ["### pact against the best peer", "",
           "The best peer is the one with the best median, chosen per scenario, placement and metric. "
           "Ratio = pact ÷ best peer, paired by repetition: the median (min–max) of the ratios of "
           "runs made seconds apart (req/s: higher is better; CPU per request: lower is better).", "",
           "| scenario | placement | metric | best peer | " + " | ".join(pact_here) + " |",
           "|---|---|---|---|" + "---:|" * len(pact_here)]
    summary.append(f"== {title}: pact ÷ best peer (paired median; req/s higher is better, CPU/req lower)")
    for sc in t.scenarios:
        for pl in PLACEMENTS:
            for key, name, lower in (("req_s", "req/s", False), ("cpu_s_per_mreq", "CPU µs/req", True)):
                bp, bv = t.best(sc, pl, peers_here, key, lower)
                if bp is None:
                    continue
                cells = [paired_str(t.paired(sc, pl, w, bp, key)) for w in pact_here]
                ba = t.agg(sc, pl, bp, key)
                md.append(f"| {SC_DESC.get(sc, sc)} | {pl} | {name} | {bp} {fmt_range(ba, 1 if lower else 1)} | "
                          + " | ".join(cells) + " |")
                summary.append(f"  {sc:14} {pl:6} {name:10} best={bp:15} {fmt(bv, 2):>8}  " +
                               "  ".join(f"{w}={c}" for w, c in zip(pact_here, cells)))
    md.append("")
    if side_by_side:
        md += ["### Every contender: req/s, latency and server CPU per request", "",
               "Median (min–max) over the repetitions.", "",
               "| scenario | placement | contender | req/s | p50 µs | p99 µs | server CPU µs/req |",
               "|---|---|---|---:|---:|---:|---:|"]
        for sc in t.scenarios:
            for pl in PLACEMENTS:
                for w in who_all:
                    if not t.agg(sc, pl, w, "req_s"):
                        continue
                    md.append(f"| {SC_DESC.get(sc, sc)} | {pl} | {w} | {fmt_range(t.agg(sc, pl, w, 'req_s'))} | "
                              f"{fmt_range(t.agg(sc, pl, w, 'p50_us'), 0)} | {fmt_range(t.agg(sc, pl, w, 'p99_us'), 0)} | "
                              f"{fmt_range(t.agg(sc, pl, w, 'cpu_s_per_mreq'), 2)} |")
        md.append("")
    # --- full tables per placement
    for pl in PLACEMENTS:
        for key, name, lower in (("req_s", "Throughput (req/s; churn: connections/s)", False),
                                 ("cpu_s_per_mreq", "Server CPU per request (µs = s per million requests)", True)):
            md += [f"### {name}, {PL_DESC[pl]}", "",
                   "Median (min–max); pact's ratio to the best peer in bold.", "",
                   "| scenario | " + " | ".join(who_all) + " |", "|---|" + "---:|" * len(who_all)]
            for sc in t.scenarios:
                bp, bv = t.best(sc, pl, peers_here, key, lower)
                cells = []
                for w in who_all:
                    a = t.agg(sc, pl, w, key)
                    cell = fmt_range(a, 2 if lower else 1)
                    if a and w not in peers_here and bv:
                        cell += f" **×{a[0] / bv:.2f}**"
                    elif a and w == bp:
                        cell += " (best)"
                    cells.append(cell)
                md.append(f"| {SC_DESC.get(sc, sc)} | " + " | ".join(cells) + " |")
            md.append("")
        md += [f"### Latency {' / '.join(k[0] for k in keys_lat)} in µs (medians), {PL_DESC[pl]}", "",
               "| scenario | " + " | ".join(who_all) + " |", "|---|" + "---:|" * len(who_all)]
        for sc in t.scenarios:
            cells = []
            for w in who_all:
                p = [t.med(sc, pl, w, k[1]) for k in keys_lat]
                cells.append("—" if p[0] is None else " / ".join(f"{x:.0f}" if x is not None else "—" for x in p))
            md.append(f"| {SC_DESC.get(sc, sc)} | " + " | ".join(cells) + " |")
        md.append("")
    threads = {w: max((v for sc in t.scenarios for pl in PLACEMENTS
                       for v in t.m[(sc, pl, w)]["server_threads"] if v), default=None)
               for w in who_all}
    md += ["Server threads seen at the end of each run (io-wq workers would show here): " +
           ", ".join(f"{w}={int(n) if n else '?'}" for w, n in threads.items()), ""]
    return who_all, peers_here


# ---------------------------------------------------------------- network
NET_KEYS = ("req_s", "mib_s", "p50_us", "p99_us", "p999_us", "cpu_s_per_mreq", "server_threads")
net = Table(read("network.csv"), NET_KEYS)
net_order = compare_section(
    "Echo over loopback (the C load generator)", net, ECHO_PEERS, ECHO_PACT,
    "One C load generator (bench/loadgen.c) checks every byte. Churn counts connections (one request "
    "each). *split* = server on CPU 0, load generator on CPU 1; *shared* = both on CPU 0.",
    (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")))

# ---------------------------------------------------------------- http
HTTP_KEYS = ("req_s", "p50_us", "p99_us", "cpu_s_per_mreq", "errors", "server_threads")
http = Table(read("http.csv"), HTTP_KEYS)
compare_section(
    "HTTP/1.1 keep-alive hello-world under wrk", http, HTTP_PEERS, HTTP_PACT,
    "wrk (one thread) against the same fixed 13-byte response on every server; every server passes "
    "bench/http_check.py (keep-alive, pipelining, split requests, bodies, Connection: close, "
    "HTTP/1.0, 400) before it is measured. req/s and latency percentiles are wrk's; server CPU per "
    "request is the time the server's threads ran over the measured run (schedstat nanoseconds, "
    "summed; utime+stime ticks where a thread ended in it) divided by wrk's request count.",
    (("p50", "p50_us"), ("p99", "p99_us")), side_by_side=True)
if http.scenarios:
    errs = {w: sum(v for sc in http.scenarios for pl in PLACEMENTS
                   for v in http.m[(sc, pl, w)]["errors"] if v) for w in http.contenders}
    bad = {w: e for w, e in errs.items() if e}
    md += ["wrk socket errors and non-2xx answers: " +
           (", ".join(f"{w}={int(e)}" for w, e in bad.items()) if bad else "none") + "", ""]

# ---------------------------------------------------------------- summary
# One table per placement over both suites, for the README: the best peer
# and pact's ratio to it, transports (the API a server is written with)
# first. Inserted right after the header.
def summary_tables():
    out = ["## Summary: pact ÷ best peer", "",
           "The best peer of each row is the one with the best median over the interleaved repetitions. "
           "pact's cells are paired ratios: per repetition, pact ÷ that peer in runs made seconds apart; "
           "the median of those ratios, and their min–max. req/s: higher is better (churn: "
           "connections/s); CPU: server CPU µs per request, lower is better.", ""]
    cols = [("pact transports, io_uring", "pact_stream_uring", "http_pact_uring"),
            ("pact transports, epoll", "pact_stream_epoll", "http_pact_epoll"),
            ("pact operations, io_uring", "pact_uring", None),
            ("pact operations, epoll", "pact_epoll", None)]
    rows_any = False
    for pl in PLACEMENTS:
        out += [f"### {PL_DESC[pl]}", "",
                "| scenario | metric | best peer: median (min–max) | " + " | ".join(c[0] for c in cols) + " |",
                "|---|---|---|" + "---:|" * len(cols)]
        for t, peers, idx in ((net, ECHO_PEERS, 1), (http, HTTP_PEERS, 2)):
            for sc in t.scenarios:
                for key, name, lower in (("req_s", "req/s", False), ("cpu_s_per_mreq", "CPU µs/req", True)):
                    bp, bv = t.best(sc, pl, [p for p in peers if p in t.contenders], key, lower)
                    if bp is None:
                        continue
                    rows_any = True
                    cells = []
                    for c in cols:
                        w = c[idx]
                        cells.append(paired_str(t.paired(sc, pl, w, bp, key)) if w else "—")
                    out.append(f"| {SC_DESC.get(sc, sc)} | {name} | {bp} {fmt_range(t.agg(sc, pl, bp, key), 2 if lower else 1)} | "
                               + " | ".join(cells) + " |")
        out.append("")
    return out if rows_any else []


hdr = md.index("```", md.index("```") + 1) + 2 + len(warn)
md[hdr:hdr] = summary_tables()

# ---------------------------------------------------------------- micro
micro = read("micro.csv")
if micro:
    md += ["## Loop micro-benchmarks (pact on io_uring vs libuv)", "",
           "timers: N timers scheduled (deadlines spread over 1 s) then all fired, libuv's million_timers shape "
           "(libuv includes uv_close of every timer). call_soon: a chain of N callbacks each scheduling the next "
           "(libuv: an idle handle run N times). async: cross-thread ping-pong, pact_call_soon_threadsafe vs "
           "uv_async_send (libuv's async1), unpinned.", "",
           "| benchmark | N | pact | libuv | pact / libuv |", "|---|---:|---:|---:|---:|"]
    by = defaultdict(list)
    ns = {}
    for r in micro:
        by[(r["bench"], r["contender"])].append(r)
        if r["bench"] != "async":
            ns[r["bench"]] = r["n"]
    for b in ("timers", "call_soon", "async"):
        key = "rate_per_s" if b == "async" else "per_op_ns"
        unit = " rt/s" if b == "async" else " ns/op"
        vals = {}
        cells = []
        for who in ("pact", "libuv"):
            a = agg([num(r[key]) for r in by[(b, who)]])
            vals[who] = a
            if not a:
                cells.append("—")
            elif b == "async":
                cells.append(f"{fmt(a[0], 1)}{unit} ({fmt(a[1], 1)}–{fmt(a[2], 1)})")
            else:
                cells.append(f"{a[0]:.1f}{unit} ({a[1]:.1f}–{a[2]:.1f})")
        ratio = "—"
        if vals["pact"] and vals["libuv"]:
            ratio = f"{vals['pact'][0] / vals['libuv'][0]:.2f}"
        md.append(f"| {b} | {ns.get(b, '—')} | {cells[0]} | {cells[1]} | {ratio} |")
    md += ["", "For timers and call_soon lower is better; for async higher is better.", ""]

# ---------------------------------------------------------------- alloc / idle
alloc = read("alloc.csv")
if alloc:
    md += ["## Heap allocations per request", "",
           "Counted in the server by an LD_PRELOAD malloc/calloc/realloc counter (bench/alloc_count.c) "
           "between two SIGUSR1 sent at the start and end of the measured window: by the load generator "
           "for echo (connections already open), around one wrk run for HTTP (wrk opens its 50 connections "
           "inside the window, so what a server allocates per connection shows as a multiple of 50).", "",
           "| contender | scenario | requests | allocations | per request |", "|---|---|---:|---:|---:|"]
    for r in alloc:
        md.append(f"| {r['contender']} | {r['scenario']} | {r['reqs']} | {r['allocs']} | {r['allocs_per_req']} |")
    md.append("")
idle = read("idle.csv")
if idle:
    md += ["## Memory per idle connection", "",
           "RSS delta over 10,000 idle accepted connections. pact_uring / pact_epoll: one pact_recv in "
           "flight on the operation API (one shared 64-byte buffer, since nothing arrives); "
           "pact_stream_*: socket transports (transport, multishot receive, engine per-fd state, no "
           "buffer): the memory per idle transport; pact_stream_*_echoed: the same transports after each "
           "echoed one 64-byte message (what a keep-alive server holds between requests; loop-wide "
           "receive buffers are warmed before the first reading); libuv: a malloc'd uv_tcp_t plus uv_read_start "
           "(buffers are allocated only when readable). Kernel memory (socket buffers, io_uring poll "
           "entries) is not in RSS.", "",
           "| contender | connections | RSS delta (bytes) | bytes per connection |", "|---|---:|---:|---:|"]
    summary.append("== memory per idle connection (RSS delta / connections)")
    for r in idle:
        md.append(f"| {r['contender']} | {r['conns']} | {r['rss_delta']} | {r['bytes_per_conn']} |")
        summary.append(f"  {r['contender']:26} {r['bytes_per_conn']} B")
    md.append("")

# ---------------------------------------------------------------- python
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_python  # noqa: E402

md += report_python.section(OUT)

# ---------------------------------------------------------------- charts
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    md += ["(charts skipped: matplotlib not available)", ""]

if plt and net.scenarios:
    foot = "; ".join(l for l in meta.splitlines() if l.startswith(("kernel", "machine", "mode")))
    who_all, peers_here = net_order
    cmap = plt.get_cmap("tab10")
    for pl in PLACEMENTS:
        for key, lower, title, fname in (
                ("req_s", False, f"Throughput relative to the best peer (= 1.0), {pl}", f"throughput_{pl}.png"),
                ("cpu_s_per_mreq", True, f"Server CPU per request relative to the best peer (lower is better), {pl}",
                 f"cpu_{pl}.png")):
            fig, ax = plt.subplots(figsize=(9, 3.6), dpi=72)
            width = 0.8 / len(who_all)
            for i, who in enumerate(who_all):
                ys, lo, hi = [], [], []
                for sc in net.scenarios:
                    a = net.agg(sc, pl, who, key)
                    _, b = net.best(sc, pl, peers_here, key, lower)
                    if a and b:
                        ys.append(a[0] / b)
                        lo.append((a[0] - a[1]) / b)
                        hi.append((a[2] - a[0]) / b)
                    else:
                        ys.append(0)
                        lo.append(0)
                        hi.append(0)
                xs = [j + (i - len(who_all) / 2 + 0.5) * width for j in range(len(net.scenarios))]
                ax.bar(xs, ys, width, yerr=[lo, hi], label=who, color=cmap(i % 10), capsize=1.5,
                       error_kw={"elinewidth": 0.6})
            ax.axhline(1.0, color="black", linewidth=0.6)
            ax.set_xticks(range(len(net.scenarios)))
            ax.set_xticklabels(net.scenarios, fontsize=8)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="y", labelsize=8)
            ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
            fig.text(0.01, 0.01, foot, fontsize=6, color="#555555")
            fig.tight_layout(rect=(0, 0.04, 1, 1))
            fig.savefig(os.path.join(OUT, fname))
            plt.close(fig)
            md.append(f"![{title}]({fname})")
            md.append("")

with open(os.path.join(OUT, "results.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print("\n".join(summary))
print(f"wrote {os.path.join(OUT, 'results.md')}")
