# SPDX-License-Identifier: MIT
"""The Python section of bench/results/results.md, from python.csv
(bench/python.sh): per scenario and placement, the median requests per
second with min-max and ratio to uvloop, and the median server CPU per
request with its ratio to uvloop. Used by bench/report.py; runnable alone:

    report_python.py RESULTS_DIR            prints the section (Markdown)
    report_python.py --readme RESULTS_DIR   the condensed table of README.md

The condensed table's ratios are paired: each repetition runs every loop of
a benchmark and placement back to back, so each repetition gives one ratio
loop / uvloop measured under the same conditions; the table shows the
median of those ratios and their min-max (bench/report.py says why).
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

CONTENDERS = ["c-floor", "uvloop", "asyncio", "pact-uring", "pact-epoll"]
BASE = "uvloop"
MODE_DESC = {
    "proto": "protocol",
    "streams": "streams",
    "sock": "sock_recv/sock_sendall",
    "udp": "UDP echo (create_datagram_endpoint)",
    "hello": "aiohttp hello-world (wrk)",
}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _agg(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def _paired(mine, base):
    """Median and min-max of mine[rep] / base[rep] over the shared repetitions."""
    return _agg([mine[r] / base[r] for r in mine if mine[r] is not None and base.get(r)])


def _k(v):
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _size(s):
    s = int(s)
    return f"{s // 1024} KiB" if s and s % 1024 == 0 else (f"{s} B" if s else "")


def section(out_dir):
    path = os.path.join(out_dir, "python.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    data = defaultdict(lambda: defaultdict(list))
    scenarios, loads = [], []
    for r in rows:
        sc = (r["mode"], r["size"])
        if sc not in scenarios:
            scenarios.append(sc)
        k = (sc, r["placement"], r["contender"])
        data[k]["req_s"].append(_num(r["req_s"]))
        data[k]["cpu"].append(_num(r["cpu_us_per_req"]))
        if _num(r.get("load1")) is not None:
            loads.append(_num(r["load1"]))
    reps = max((int(r["rep"]) for r in rows), default=0)
    # Any other contender (a baseline build's NAME@base) gets a column too.
    contenders = CONTENDERS + sorted({r["contender"] for r in rows} - set(CONTENDERS))
    md = ["## Python: pact.asyncio against uvloop and asyncio", "",
          "`bench/python.sh`: uvloop's own echo servers (python3-uvloop's examples/bench/echoserver.py, "
          "unchanged; `--proto`, `--streams`, and sock_recv/sock_sendall) on each loop, driven by "
          "bench/loadgen (ping-pong, 4 connections, as uvloop's vmbench); pact's C echo server "
          "(bench/servers/pact_stream_echo.c on io_uring: the same transport API pact.asyncio runs on, without Python) as the floor; "
          "a UDP echo ping-pong (python/bench/udp_echo.py: create_datagram_endpoint, 64 B, one datagram in flight from a blocking client); "
          "an aiohttp hello-world under wrk (50 connections). "
          f"{reps} interleaved repetitions; cells are medians (min–max) and the ratio to uvloop's median.", ""]
    meta = os.path.join(out_dir, "python-meta.txt")
    if os.path.exists(meta):
        md += ["```", open(meta).read().strip(), "```", ""]
    if loads:
        md += [f"Load average (1 min) during the runs: median {statistics.median(loads):.1f}, "
               f"min {min(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} CPUs.", ""]
    for pl, pdesc in (("split", "server and load on separate CPUs"), ("shared", "server and load on one CPU")):
        md += [f"### Requests per second, {pdesc} ({pl})", "",
               "| benchmark | " + " | ".join(contenders) + " |", "|---|" + "---:|" * len(contenders)]
        for sc in scenarios:
            base = _agg(data[(sc, pl, BASE)]["req_s"])
            cells = []
            for who in contenders:
                a = _agg(data[(sc, pl, who)]["req_s"])
                if not a:
                    cells.append("—")
                    continue
                ratio = f" **×{a[0] / base[0]:.2f}**" if base and base[0] else ""
                cells.append(f"{_k(a[0])} ({_k(a[1])}–{_k(a[2])}){ratio}")
            md.append(f"| {MODE_DESC.get(sc[0], sc[0])} {_size(sc[1])} | " + " | ".join(cells) + " |")
        md += ["", f"### Server CPU per request in µs, {pl} (lower is better; ratio to uvloop)", "",
               "| benchmark | " + " | ".join(contenders) + " |", "|---|" + "---:|" * len(contenders)]
        for sc in scenarios:
            base = _agg(data[(sc, pl, BASE)]["cpu"])
            cells = []
            for who in contenders:
                a = _agg(data[(sc, pl, who)]["cpu"])
                if not a:
                    cells.append("—")
                    continue
                ratio = f" **×{a[0] / base[0]:.2f}**" if base and base[0] else ""
                cells.append(f"{a[0]:.1f} ({a[1]:.1f}–{a[2]:.1f}){ratio}")
            md.append(f"| {MODE_DESC.get(sc[0], sc[0])} {_size(sc[1])} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["The C floor runs only the protocol rows (the same server for every mode). "
           "Server CPU is the time the server's threads ran over the measured window, in nanoseconds "
           "(/proc/PID/task/*/schedstat, summed); utime+stime in 10 ms ticks only where a thread "
           "ended within the window.", ""]
    return md


def summary(out_dir):
    """The condensed table for README.md: per placement and benchmark,
    uvloop's medians, then pact's (io_uring, epoll) and asyncio's as ratios
    to uvloop, for req/s and for server CPU per request."""
    with open(os.path.join(out_dir, "python.csv")) as f:
        rows = list(csv.DictReader(f))
    data = defaultdict(lambda: defaultdict(list))
    by_rep = defaultdict(dict)  # (scenario, placement, contender, key) -> {rep: value}
    scenarios = []
    for r in rows:
        sc = (r["mode"], r["size"])
        if sc not in scenarios:
            scenarios.append(sc)
        for key, col in (("req_s", "req_s"), ("cpu", "cpu_us_per_req")):
            data[(sc, r["placement"], r["contender"])][key].append(_num(r[col]))
            by_rep[(sc, r["placement"], r["contender"], key)][r["rep"]] = _num(r[col])
    who = ["pact-uring", "pact-epoll", "asyncio", "c-floor"]
    md = []
    for pl in ("split", "shared"):
        md += [f"**{pl}** ({'server and load on separate CPUs' if pl == 'split' else 'server and load on one CPU'}): "
               "uvloop's median (min–max), then each loop's ratio to uvloop paired by repetition "
               "(median and min–max of the per-repetition ratios), req/s ↑ | server CPU per request ↓", "",
               "| benchmark | uvloop req/s | " + " | ".join(who) + " | uvloop µs/req | " + " | ".join(who) + " |",
               "|---|" + "---:|" * (2 + 2 * len(who))]
        for sc in scenarios:
            cells = []
            for key, unit in (("req_s", "req"), ("cpu", "cpu")):
                base = _agg(data[(sc, pl, BASE)][key])
                cells.append("—" if not base else (_k(base[0]) + f" ({_k(base[1])}–{_k(base[2])})" if key == "req_s"
                                                   else f"{base[0]:.1f} ({base[1]:.1f}–{base[2]:.1f})"))
                for w in who:
                    a = _paired(by_rep[(sc, pl, w, key)], by_rep[(sc, pl, BASE, key)])
                    cells.append("—" if not a else f"×{a[0]:.2f} ({a[1]:.2f}–{a[2]:.2f})")
            md.append(f"| {MODE_DESC.get(sc[0], sc[0])} {_size(sc[1])} | " + " | ".join(cells) + " |")
        md.append("")
    if any(r["contender"].endswith("@base") for r in rows):
        md += ["**before → after** (the baseline build, NAME@base, against this one, same run): "
               "median server CPU per request in µs, and req/s", "",
               "| benchmark | placement | pact-uring µs/req | pact-epoll µs/req | pact-uring req/s | pact-epoll req/s |",
               "|---|---|---:|---:|---:|---:|"]
        for pl in ("split", "shared"):
            for sc in scenarios:
                cells = []
                for key in ("cpu", "req_s"):
                    for w in ("pact-uring", "pact-epoll"):
                        b = _agg(data[(sc, pl, w + "@base")][key])
                        a = _agg(data[(sc, pl, w)][key])
                        if not a or not b:
                            cells.append("—")
                        elif key == "cpu":
                            cells.append(f"{b[0]:.1f} → {a[0]:.1f}")
                        else:
                            cells.append(f"{_k(b[0])} → {_k(a[0])}")
                md.append(f"| {MODE_DESC.get(sc[0], sc[0])} {_size(sc[1])} | {pl} | " + " | ".join(cells) + " |")
        md.append("")
    return md


if __name__ == "__main__":
    out = sys.argv[-1] if len(sys.argv) > 1 and not sys.argv[-1].startswith("--") else \
        os.path.join(os.path.dirname(__file__), "results")
    print("\n".join(summary(out) if "--readme" in sys.argv else section(out)))
