# SPDX-License-Identifier: MIT
"""Reading `perf script --show-lost-events -F comm,tid,cpu,time,event,trace`
text, for bench/missed_wakeups.py and bench/timeline.py."""
import re

EV = re.compile(r'^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+'
                r'(?P<time>\d+\.\d+):\s+(?P<event>[\w:]+):\s*(?P<trace>.*)$')
KV = re.compile(r'(\w+)=(\S+)')


class Trace:
    """The events of a perf script text, as (time, match of EV); the events
    perf lost (its ring buffer full) add up in .lost: a trace that lost
    some counts wrong."""

    def __init__(self, stream):
        self.stream = stream
        self.lost = 0

    def __iter__(self):
        for line in self.stream:
            if 'PERF_RECORD_LOST' in line:
                self.lost += int(line.split()[-1])
                continue
            m = EV.match(line)
            if m:
                yield float(m['time']), m


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
