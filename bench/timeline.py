# SPDX-License-Identifier: MIT
"""Per-request timeline of an echo server under loadgen's ping-pong, from a
kernel trace (bench/timeline.sh records it):

    perf script -F comm,tid,cpu,time,event,trace -i FILE | \\
        timeline.py --pid SERVER_TID --port SERVER_PORT --size SIZE

The trace holds tcp:tcp_probe of every segment with data to or from the
server's port (it fires where the receiving socket takes the segment, on
loopback inside the sender's system call; src is the receiving socket, so
src port == the server's port is request bytes reaching the server's
socket), the server thread's raw_syscalls (enter and exit), its
sched_switch / sched_wakeup, and io_uring's tracepoints (kept for the rings
the server submits to).

A socket's file descriptor is tied to its client port by the server's own
sends: a send system call on fd F inside which a reply segment reaches
client port P (loopback delivers it in the sender's call). Reads on F are
then that connection's (read/recvfrom/recvmsg returns, io_uring RECV
completions whose request's file was F).

Per connection, one request at a time (ping-pong): first and last request
byte in the server's socket (in_first, in_last: the tcp_probe that brings
the bytes to --size), the read that brings the bytes read to --size
(read_done, the system call's return or the CQE), the first and last
reply byte in the client's socket (out_first, out_last). Printed as
medians (and p90) of

  in_span    in_last - in_first      the client's send of the request
  wait_read  read_done - in_last     last byte there, until the server has it all
  to_reply   out_first - read_done   the server's turn: wakeup of the task,
                                     the Python code, the send's start
  out_span   out_last - out_first    the reply's delivery
  serve      out_last - in_last      last request byte to last reply byte
  client     next in_first - out_last  loadgen's turn
  cycle      next in_first - in_first  one round trip of a connection

with counts per request (completed requests in the window): every system
call by name, reads (and their sizes, EAGAIN reads apart), sends (partial
ones apart), the loop's waits for events (epoll_wait / epoll_pwait2 /
io_uring_enter; blocking ones apart, epoll ones that returned no event
apart), io_uring SQEs by opcode and CQEs, sleeps (sched_switch to S),
and sleeps taken while request bytes sat unread in a socket of a mapped
connection (held), each with its length. The sleeps a request ended
(woken_*, per request, with the time from that request's first byte to the
server running again) are told apart by where the wakeup was made:
idle_cpu (the server's CPU was idle: the wakeup is queued to it and done
by its idle task when the IPI lands; on a VM the host must first run the
halted vCPU again; a timer that expired there looks the same, which
sched:sched_waking, made in the waker's context, would tell apart),
sender (in loadgen's call, the CPU busy with another task) or other. A segment that comes when its
request is all there already is a retransmission (retrans; a tail-loss
probe after a stall), not counted as request bytes.

With --client-pid (loadgen's thread, whose sched events the trace holds
too) the time per request each of the two spends on a CPU (run), asleep
(sleep) and runnable while another task has its CPU (wait: the machine's
load), and the wall time split by both states at once: both_run,
server_only, client_only, both_asleep (nobody works: a wakeup owed),
server_runnable, client_runnable. perf misses some switch-ins of a task
from a CPU's idle task (seen on the bench VMs for loadgen), so any event
in a task's own context also marks it running; a task that runs without
making a traced event (loadgen inside recv) still counts as asleep then,
so read both_asleep as an upper bound and check it with --list.

With --srv-cpu (the server's CPU, whose every sched_switch the trace then
holds) the server's runnable time (server_wait_us) is split by what that
CPU ran meanwhile: its idle task (server_wait_idle_us: a wakeup queued to
the idle CPU, until the switch), kernel threads (server_wait_kernel_us:
ksoftirqd, kworkers, rcu, kdamond...) and other tasks
(server_wait_tasks_us); server_waits_over_1ms counts the runnable spells
over 1 ms per request, and server_wait_behind names the tasks it waited
behind most (name:us per request). A woken task that does not preempt the
one running waits until that one sleeps or a scheduler tick ends its
slice (4 ms apart at HZ=250), which is what a server that shares its CPU
with nothing of the bench waits for.

--csv prints one line of values (--header its names); default: a report;
--list prints each held sleep and each both-asleep gap over 100 us."""
import argparse
import collections
import re
import sys

from perf_events import KV, Trace, pct

ENTER = re.compile(r'NR (\d+) \(([^)]*)\)')
EXIT = re.compile(r'NR (\d+) = (-?\d+)')
URING = re.compile(r'(\w+) (0x[0-9a-f]+|\w+)')

NAMES = {0: 'read', 1: 'write', 3: 'close', 7: 'poll', 9: 'mmap', 11: 'munmap',
         12: 'brk', 13: 'rt_sigaction', 14: 'rt_sigprocmask', 16: 'ioctl',
         19: 'readv', 20: 'writev', 44: 'sendto', 45: 'recvfrom',
         46: 'sendmsg', 47: 'recvmsg', 202: 'futex', 228: 'clock_gettime',
         232: 'epoll_wait', 233: 'epoll_ctl', 281: 'epoll_pwait',
         288: 'accept4', 426: 'io_uring_enter', 441: 'epoll_pwait2'}
READS = {0, 45, 47, 19}
SENDS = {1, 44, 46, 20}
WAITS = {232, 281, 441, 426}
SYSCALLS_SHOWN = ('read', 'recvfrom', 'write', 'sendto', 'writev',
                  'epoll_wait', 'epoll_pwait', 'epoll_pwait2', 'io_uring_enter', 'brk')
# Where each request's wall time goes, from the two tasks' states together
# (run, sleep, wait: runnable but another task has the CPU).
PAIRS = {'both_run': (('run',), ('run',)),
         'server_only': (('run',), ('sleep',)),
         'client_only': (('sleep',), ('run',)),
         'both_asleep': (('sleep',), ('sleep',)),
         'server_runnable': (('wait',), ('run', 'sleep', 'wait')),
         'client_runnable': (('run', 'sleep'), ('wait',))}
# Kernel threads, by name (perf script gives no flag for them).
KERNEL_THREAD = re.compile(r'^(ksoftirqd|kworker|rcu|migration|kdamond|kcompactd|kswapd|'
                           r'khugepaged|kthreadd|irq/|watchdog|cpuhp|idle_inject|oom_reaper)')
PHASES = ('in_span', 'wait_read', 'to_reply', 'out_span', 'serve', 'client', 'cycle')
COUNTS = ('syscalls', 'reads', 'read_eagain', 'sends', 'sends_partial',
          'send_eagain', 'sqes', 'sqe_recv', 'sqe_poll', 'sqe_send', 'cqes', 'cqe_recv',
          'sleeps', 'held', 'preempted', 'waits', 'waits_blocking', 'waits_empty') + tuple('sys_' + n for n in SYSCALLS_SHOWN)


class Conn:
    def __init__(self):
        self.in_bytes = 0
        self.read_bytes = 0
        self.out_bytes = 0
        self.cur = None       # the request in flight: dict of times
        self.last_in_first = None
        self.last_out_last = None


def header():
    cols = ['requests', 'lost', 'retrans']
    for who in ('server', 'client'):
        cols += [who + '_run_us', who + '_sleep_us', who + '_wait_us', who + '_sleeps']
    cols += ['per_req_' + c for c in COUNTS]
    cols += [k + '_us' for k in PAIRS]
    cols += ['read_sizes']
    for ph in PHASES:
        cols += [ph + '_p50_us', ph + '_p90_us']
    cols += ['held_p50_us', 'held_max_us', 'held_sum_ms', 'sleep_p50_us']
    for k in ('idle_cpu', 'sender', 'other'):
        cols += ['woken_' + k, 'woken_' + k + '_p50_us', 'woken_' + k + '_p90_us']
    cols += ['server_wait_idle_us', 'server_wait_kernel_us', 'server_wait_tasks_us',
             'server_waits_over_1ms', 'server_wait_behind']
    return ','.join(cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--pid', type=int)
    ap.add_argument('--client-pid', type=int, default=-1, help="loadgen's thread")
    ap.add_argument('--port', type=int)
    ap.add_argument('--size', type=int, default=102400)
    ap.add_argument('--srv-cpu', type=int, default=-1,
                    help="the server's CPU (the trace holds all its switches)")
    ap.add_argument('--csv', action='store_true')
    ap.add_argument('--header', action='store_true')
    ap.add_argument('--list', action='store_true',
                    help='print each held sleep and both-asleep gap (to stderr)')
    a = ap.parse_args()
    if a.header:
        print(header())
        return
    pid, port, size = str(a.pid), str(a.port), a.size
    conns = collections.defaultdict(Conn)    # client port -> Conn
    fd_port = {}                            # server fd -> client port
    counts = collections.Counter()
    read_sizes = collections.Counter()
    phases = {p: [] for p in PHASES}
    rings = set()
    req_op = {}                             # io_uring req -> (opcode, fd)
    in_call = None                          # (nr, args, t) of the open syscall
    sent_to = None                          # client port a send reached
    sleeping_since = None
    held_at_sleep = False
    held = []
    sleeps = []
    # the server's sleeps that a request ended: first request byte during the
    # sleep, and who made the wakeup (kind); request -> running, by kind
    woken = {'idle_cpu': [], 'sender': [], 'other': []}
    wake = {'first': None, 'kind': None}
    requests = 0
    retrans = 0
    vals_task = {}
    # per task (server, client): [state, since, run_s, sleep_s, wait_s, sleeps]
    tasks = {pid: ['?', None, 0.0, 0.0, 0.0, 0], str(a.client_pid): ['?', None, 0.0, 0.0, 0.0, 0]}

    both = collections.Counter()   # (server state, client state) -> seconds
    both_since = [None]
    # What the server's CPU runs (its comm; 'idle' for its idle task), and
    # the server's runnable time by it, from the last mark on.
    cpu_runs = [None]
    behind = collections.Counter()
    mark = [None]
    spell = [0.0]                  # the runnable spell so far
    spells_over_1ms = [0]

    def behind_to(t):
        if mark[0] is not None and tasks[pid][0] == 'wait' and cpu_runs[0] is not None:
            behind[cpu_runs[0]] += t - mark[0]
            spell[0] += t - mark[0]
        mark[0] = t

    def task_to(who, state, t):
        if who == pid:
            behind_to(t)
            if tasks[pid][0] == 'wait' and state != 'wait':
                spells_over_1ms[0] += spell[0] > 1e-3
                spell[0] = 0.0
        if both_since[0] is not None:
            key = (tasks[pid][0], tasks[str(a.client_pid)][0])
            both[key] += t - both_since[0]
            if a.list and key == ('sleep', 'sleep') and t - both_since[0] > 100e-6:
                print(f'both asleep {both_since[0]:.6f} - {t:.6f} '
                      f'({(t - both_since[0]) * 1e6:.0f} us)', file=sys.stderr)
        both_since[0] = t
        st = tasks[who]
        if st[1] is not None:
            st[{'run': 2, 'sleep': 3, 'wait': 4}[st[0]]] += t - st[1]
        st[0], st[1] = state, t

    def got_read(port_, n, t):
        c = conns[port_]
        c.read_bytes += n
        if c.cur is not None and 'read_done' not in c.cur and c.read_bytes >= c.in_bytes \
                and c.in_bytes >= size:
            c.cur['read_done'] = t

    def unread():
        return any(c.in_bytes > c.read_bytes for p, c in conns.items() if p in fd_port.values())

    trace = Trace(sys.stdin)
    for t, m in trace:
        ev = m['event']
        tr = m['trace']
        tid = m['tid']
        if tid in tasks and tasks[tid][0] != 'run' and ev != 'sched:sched_switch':
            # an event in the task's own context: it runs (perf misses some
            # switch-ins from the idle task of a CPU, seen on the VMs)
            task_to(tid, 'run', t)
        if ev == 'tcp:tcp_probe':
            kv = dict(KV.findall(tr))
            n = int(kv.get('data_len', '0'))
            sp = kv.get('src', '').rsplit(':', 1)[-1]
            dp = kv.get('dest', '').rsplit(':', 1)[-1]
            if n <= 0:
                continue
            if sp == port:                   # request bytes into the server's socket
                if sleeping_since is not None and wake['first'] is None:
                    wake['first'] = t
                c = conns[dp]
                if c.cur is None or 'out_last' in c.cur:
                    if c.cur is not None and c.last_in_first is not None:
                        phases['cycle'].append((t - c.last_in_first) * 1e6)
                    if c.last_out_last is not None:
                        phases['client'].append((t - c.last_out_last) * 1e6)
                    c.cur = {'in_first': t}
                    c.in_bytes = c.read_bytes = c.out_bytes = 0
                    c.last_in_first = t
                if c.in_bytes >= size:
                    retrans += 1      # the request is all there: a retransmission
                    continue
                c.in_bytes += n
                if c.in_bytes >= size and 'in_last' not in c.cur:
                    c.cur['in_last'] = t
            elif dp == port:                 # reply bytes into the client's socket
                c = conns[sp]
                if tid == pid and in_call is not None and in_call[0] in SENDS:
                    sent_to = sp
                if c.cur is None:
                    continue
                c.cur.setdefault('out_first', t)
                c.out_bytes += n
                if c.out_bytes >= size and 'out_last' not in c.cur:
                    c.cur['out_last'] = t
                    c.last_out_last = t
                    cur = c.cur
                    if all(k in cur for k in ('in_first', 'in_last', 'read_done')):
                        requests += 1
                        phases['in_span'].append((cur['in_last'] - cur['in_first']) * 1e6)
                        phases['wait_read'].append((cur['read_done'] - cur['in_last']) * 1e6)
                        phases['to_reply'].append((cur['out_first'] - cur['read_done']) * 1e6)
                        phases['out_span'].append((cur['out_last'] - cur['out_first']) * 1e6)
                        phases['serve'].append((cur['out_last'] - cur['in_last']) * 1e6)
            continue
        if ev == 'sched:sched_switch':
            kv = dict(KV.findall(tr))
            if int(m['cpu']) == a.srv_cpu:
                behind_to(t)
                nxt = kv.get('next_pid')
                cpu_runs[0] = ('idle' if nxt == '0' else None if nxt == pid else
                               re.search(r'next_comm=(.*?) next_pid=', tr).group(1))
            if kv.get('prev_pid') in tasks:
                asleep = kv.get('prev_state', 'R')[:1] in ('S', 'D')
                task_to(kv['prev_pid'], 'sleep' if asleep else 'wait', t)
                tasks[kv['prev_pid']][5] += asleep
            if kv.get('next_pid') in tasks:
                task_to(kv['next_pid'], 'run', t)
            if kv.get('next_pid') == pid and wake['first'] is not None and wake['kind']:
                woken[wake['kind']].append((t - wake['first']) * 1e6)
            if kv.get('next_pid') == pid:
                wake['first'] = wake['kind'] = None
            if kv.get('prev_pid') == pid:
                if kv.get('prev_state', 'R')[:1] in ('S', 'D'):
                    sleeping_since = t
                    held_at_sleep = unread()
                    if held_at_sleep and a.list:
                        print(f'sleep at {t:.6f} with unread ' + ' '.join(
                            f'{p}:{c.in_bytes - c.read_bytes}B since {c.cur["in_first"]:.6f}'
                            for p, c in conns.items() if p in fd_port.values()
                            and c.in_bytes > c.read_bytes), file=sys.stderr)
                    counts['sleeps'] += 1
                else:
                    counts['preempted'] += 1
            continue
        if ev == 'sched:sched_wakeup':
            kv = dict(KV.findall(tr))
            if kv.get('pid') in tasks and tasks[kv['pid']][0] == 'sleep':
                task_to(kv['pid'], 'wait', t)
            if kv.get('pid') == pid and sleeping_since is not None:
                # A wakeup of a task on an idle CPU is queued to that CPU
                # and done there, by its idle task, when the IPI lands (on a
                # VM: when the host runs the halted vCPU again); else it is
                # done in the waker's call.
                waker = m['comm'].strip()
                wake['kind'] = ('idle_cpu' if waker.startswith('swapper') else
                                'sender' if tid == str(a.client_pid) else 'other')
                d = (t - sleeping_since) * 1e6
                sleeps.append(d)
                if held_at_sleep:
                    if a.list:
                        print(f'  woken at {t:.6f} after {d:.0f} us by {m["comm"].strip()} '
                              f'{tid}', file=sys.stderr)
                    held.append(d)
                    counts['held'] += 1
                sleeping_since = None
            continue
        if ev.startswith('io_uring:'):
            f = dict(URING.findall(tr))
            ring = f.get('ring')
            if ev == 'io_uring:io_uring_submit_req' and tid == pid:
                rings.add(ring)
            if ring not in rings:
                continue
            if ev == 'io_uring:io_uring_submit_req':
                op = f.get('opcode', '?')
                req_op[f.get('req')] = (op, None)
                counts['sqes'] += 1
                if op in ('RECV', 'READ', 'RECVMSG'):
                    counts['sqe_recv'] += 1
                elif op == 'POLL_ADD':
                    counts['sqe_poll'] += 1
                elif op in ('SEND', 'WRITE', 'SENDMSG', 'SEND_ZC', 'WRITEV'):
                    counts['sqe_send'] += 1
            elif ev == 'io_uring:io_uring_file_get':
                r = f.get('req')
                if r in req_op:
                    req_op[r] = (req_op[r][0], int(f.get('fd', '-1')))
            elif ev == 'io_uring:io_uring_complete':
                counts['cqes'] += 1
                m2 = re.search(r'result (-?\d+)', tr)
                res = int(m2.group(1)) if m2 else 0
                op, fd = req_op.get(f.get('req'), ('?', None))
                if op in ('RECV', 'READ', 'RECVMSG'):
                    counts['cqe_recv'] += 1
                    if res > 0:
                        counts['reads'] += 1
                        read_sizes[res] += 1
                        if fd in fd_port:
                            got_read(fd_port[fd], res, t)
            continue
        if tid != pid:
            continue
        if ev == 'raw_syscalls:sys_enter':
            m2 = ENTER.search(tr)
            if m2:
                nr = int(m2.group(1))
                args = [int(x, 16) for x in m2.group(2).split(', ') if x]
                in_call = (nr, args, t)
                sent_to = None
                counts['syscalls'] += 1
                counts['sys_' + NAMES.get(nr, str(nr))] += 1
        elif ev == 'raw_syscalls:sys_exit':
            m2 = EXIT.search(tr)
            if not m2 or in_call is None:
                continue
            nr, ret = int(m2.group(1)), int(m2.group(2))
            _, args, _ = in_call
            fd = args[0] if args else -1
            if nr in READS:
                if ret > 0:
                    counts['reads'] += 1
                    read_sizes[ret] += 1
                    if fd in fd_port:
                        got_read(fd_port[fd], ret, t)
                elif ret == -11:
                    counts['read_eagain'] += 1
            elif nr in WAITS:
                # epoll_wait / epoll_pwait: timeout -1 blocks; epoll_pwait2: a
                # NULL timespec; io_uring_enter: min_complete >= 1 waits
                counts['waits'] += 1
                if nr == 426:
                    blocking = len(args) > 2 and args[2] >= 1
                elif nr == 441:
                    blocking = len(args) > 3 and args[3] == 0
                else:
                    blocking = len(args) > 3 and args[3] in (0xffffffff, 0xffffffffffffffff)
                counts['waits_blocking'] += blocking
                if nr != 426 and ret == 0:
                    counts['waits_empty'] += 1
            elif nr in SENDS:
                if ret == -11:
                    counts['send_eagain'] += 1
                elif ret > 0:
                    counts['sends'] += 1
                    if nr in (1, 44) and len(args) > 2 and ret < args[2]:
                        counts['sends_partial'] += 1
                    if sent_to is not None:
                        fd_port[fd] = sent_to
            in_call = None
    n = max(requests, 1)
    for who, name in ((pid, 'server'), (str(a.client_pid), 'client')):
        st = tasks[who]
        if st[1] is not None:
            task_to(who, st[0], t)
        vals_task[name + '_run_us'] = f'{st[2] * 1e6 / n:.1f}'
        vals_task[name + '_sleep_us'] = f'{st[3] * 1e6 / n:.1f}'
        vals_task[name + '_wait_us'] = f'{st[4] * 1e6 / n:.1f}'
        vals_task[name + '_sleeps'] = f'{st[5] / n:.3f}'
    sizes = ' '.join(f'{s}x{c / n:.2f}' for s, c in read_sizes.most_common(4))
    vals = {'requests': requests, 'lost': trace.lost, 'retrans': retrans}
    for k, (ss, cs) in PAIRS.items():
        vals[k + '_us'] = f'{sum(v for (x, y), v in both.items() if x in ss and y in cs) * 1e6 / n:.1f}'
    vals.update(vals_task)
    kernel = sum(v for k, v in behind.items() if k != 'idle' and KERNEL_THREAD.match(k))
    vals['server_wait_idle_us'] = f'{behind["idle"] * 1e6 / n:.2f}'
    vals['server_wait_kernel_us'] = f'{kernel * 1e6 / n:.2f}'
    vals['server_wait_tasks_us'] = f'{(sum(behind.values()) - behind["idle"] - kernel) * 1e6 / n:.2f}'
    vals['server_waits_over_1ms'] = f'{spells_over_1ms[0] / n:.4f}'
    # names without their CPU or number (kworker/0:1H -> kworker,
    # ksoftirqd/0 -> ksoftirqd); no commas (CSV)
    named = collections.Counter()
    for k, v in behind.items():
        k = 'kworker' if k.startswith('kworker/') else re.sub(r'[/-][0-9]+$', '', k)
        named[k.replace(',', ' ')] += v
    vals['server_wait_behind'] = ' '.join(f'{k}:{v * 1e6 / n:.2f}' for k, v in named.most_common(4))
    for c in COUNTS:
        vals['per_req_' + c] = f'{counts[c] / n:.3f}'
    vals['read_sizes'] = sizes
    for ph in PHASES:
        vals[ph + '_p50_us'] = f'{pct(phases[ph], 0.5):.1f}'
        vals[ph + '_p90_us'] = f'{pct(phases[ph], 0.9):.1f}'
    vals['held_p50_us'] = f'{pct(held, 0.5):.1f}'
    vals['held_max_us'] = f'{max(held, default=0):.1f}'
    vals['held_sum_ms'] = f'{sum(held) / 1e3:.2f}'
    vals['sleep_p50_us'] = f'{pct(sleeps, 0.5):.1f}'
    for k, xs in woken.items():
        vals['woken_' + k] = f'{len(xs) / n:.3f}'
        vals['woken_' + k + '_p50_us'] = f'{pct(xs, 0.5):.1f}'
        vals['woken_' + k + '_p90_us'] = f'{pct(xs, 0.9):.1f}'
    if a.csv:
        print(','.join(str(vals[k]) for k in header().split(',')))
    else:
        for k in header().split(','):
            print(f'{k} = {vals[k]}')


if __name__ == '__main__':
    main()
