# SPDX-License-Identifier: MIT
"""Counts, from a kernel trace of an echo server under loadgen's ping-pong,
the times the server slept while it had work: the load-independent side of
bench/spikes.sh (a machine that takes the CPU away makes spikes too, but
never makes a server sleep with a request in hand).

    perf script --show-lost-events -F comm,tid,cpu,time,event,trace -i FILE | \\
        missed_wakeups.py --pid SERVER_TID --port SERVER_PORT

The trace (bench/spikes.sh TRACE=1 records it) holds sched:sched_switch
and sched:sched_wakeup of the server's thread and tcp:tcp_probe of every
TCP segment with data to or from the server's port. tcp_probe fires where
the receiving socket takes the segment, on loopback in the sender's own
system call: a request is in the server's socket when its tcp_probe (the
receiving socket's port, printed as src, is the server's) fires, a reply
is sent when the client's does. Two counts:

  late wakeups   a request came while the server slept, and the server's
                 wakeup (sched_wakeup, made in the sender's call, not when
                 the scheduler runs the server) came more than --late-us
                 after it. Expected: every wakeup within a few microseconds.
  held requests  the server went to sleep with a request in its socket
                 that came more than --margin-us before, whose reply it
                 had not sent, and sent it only after it woke. Expected:
                 none; a request that came as the server went to sleep
                 wakes it at once (its wakeup, made in the sender's call
                 after tcp_probe, lands within the margin).

Each is also told apart by where the wakeup came from. The machine's own
stall (a VM's CPU taken away, an interrupt storm, a lock whose holder's
CPU was taken away) stops the sender between its segment's tcp_probe and
the wakeup it makes for it: the wakeup then comes from that same thread
with no other request in between ("in the sender's call", *_sender). A
loop that did not wake for a request is woken by something else: another
request, a timer, a signal (late_other, held_other: the counts that would
be the loop's).

A trace that lost events (perf's ring buffer full: lost=N in the output)
counts wrong: a reply whose segment was lost leaves its request in hand
for good. With --pingpong (one message in flight per connection, as
spikes.sh runs loadgen) a request starts its connection's count afresh,
which bounds the damage to one sleep; still, read a run with lost > 0 as
suspect and trace with a larger buffer (perf record -m).

Prints one line of key=value pairs."""
import argparse
import sys

from perf_events import KV, Trace, pct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--pid', type=int, required=True, help="the server's thread")
    ap.add_argument('--port', type=int, required=True, help="the server's port")
    ap.add_argument('--late-us', type=float, default=100.0)
    ap.add_argument('--margin-us', type=float, default=50.0)
    ap.add_argument('--pingpong', action='store_true',
                    help='one message in flight per connection: a request '
                         'means the reply before it was sent')
    ap.add_argument('--list', action='store_true',
                    help='print each late wakeup and held request')
    a = ap.parse_args()
    port = str(a.port)
    outstanding = {}      # client port -> request bytes not yet echoed
    since = {}            # client port -> when its oldest unanswered request came
    sleeping = False
    t_sleep = 0.0
    first_arrival = None  # the first request that came during this sleep
    first_tid = None      # the thread that delivered it
    arrivals = 0          # requests that came during this sleep
    last_tid = None       # the thread that delivered the latest request
    held = set()          # client ports with a request in hand at the sleep
    sleeps = 0
    wake_delays = []
    late = []             # (time, delay_us, in the sender's call)
    held_sleeps = []      # (time, duration_us, connections, in the sender's call)
    requests = 0
    trace = Trace(sys.stdin)
    for t, m in trace:
        ev = m['event']
        kv = dict(KV.findall(m['trace']))
        if ev == 'tcp:tcp_probe':
            src, dst = kv.get('src', ''), kv.get('dest', '')
            n = int(kv.get('data_len', '0'))
            if n <= 0:
                continue
            sport, dport = src.rsplit(':', 1)[-1], dst.rsplit(':', 1)[-1]
            if sport == port:          # into the server's socket
                requests += 1
                if a.pingpong or outstanding.get(dport, 0) == 0:
                    since[dport] = t
                    outstanding[dport] = 0
                outstanding[dport] += n
                last_tid = m['tid']
                if sleeping:
                    arrivals += 1
                    if first_arrival is None:
                        first_arrival, first_tid = t, m['tid']
            elif dport == port:        # into the client's socket: a reply
                left = outstanding.get(sport, 0) - n
                outstanding[sport] = left if left > 0 else 0
                if sleeping and outstanding[sport] == 0:
                    held.discard(sport)  # sent before the sleep, taken late
        elif ev == 'sched:sched_switch':
            if int(kv.get('prev_pid', -1)) == a.pid:
                state = kv.get('prev_state', 'R')
                if state[:1] in ('S', 'D'):
                    sleeping = True
                    sleeps += 1
                    t_sleep = t
                    first_arrival = None
                    arrivals = 0
                    margin = a.margin_us / 1e6
                    held = {c for c, b in outstanding.items()
                            if b > 0 and since[c] < t - margin}
        elif ev == 'sched:sched_wakeup':
            if int(kv.get('pid', -1)) == a.pid and sleeping:
                sleeping = False
                waker = m['tid']
                if first_arrival is not None:
                    d = (t - first_arrival) * 1e6
                    wake_delays.append(d)
                    if d > a.late_us:
                        late.append((first_arrival, d,
                                     arrivals == 1 and waker == first_tid))
                if held:
                    held_sleeps.append((t_sleep, (t - t_sleep) * 1e6, len(held),
                                        arrivals == 0 and waker == last_tid))
    if a.list:
        where = {True: "in the sender's call", False: 'by something else'}
        for t, d, s in late:
            print(f'late wakeup at {t:.6f}: {d:.1f} us after a request, {where[s]}',
                  file=sys.stderr)
        for t, d, n, s in held_sleeps:
            print(f'held at {t:.6f}: slept {d:.1f} us with {n} request(s) in hand, '
                  f'woken {where[s]}', file=sys.stderr)
    hd = [d for _, d, _, _ in held_sleeps]
    hd_other = [d for _, d, _, s in held_sleeps if not s]
    print(f'lost={trace.lost} requests={requests} sleeps={sleeps} woken_by_request={len(wake_delays)} '
          f'wake_p50_us={pct(wake_delays, 0.5):.1f} wake_p99_us={pct(wake_delays, 0.99):.1f} '
          f'wake_max_us={max(wake_delays, default=0):.1f} late={len(late)} '
          f'late_other={sum(1 for _, _, s in late if not s)} '
          f'held={len(held_sleeps)} held_1ms={sum(1 for d in hd if d > 1000)} '
          f'held_max_us={max(hd, default=0):.1f} held_total_ms={sum(hd) / 1e3:.2f} '
          f'held_other={len(hd_other)} held_other_max_us={max(hd_other, default=0):.1f}')


if __name__ == '__main__':
    main()
