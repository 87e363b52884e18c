# SPDX-License-Identifier: MIT
"""Loop micro-benchmarks: the cost of the scheduling core, per loop.

    PYTHONPATH=build/python /usr/bin/python3 python/bench/micro.py [reps]

call_soon: a chain of N callbacks, each scheduling the next (one handle
and one iteration each). batch: N callbacks queued at once, one iteration.
sleep0: a task awaiting asyncio.sleep(0) N times (task step + handle).
timers: N call_later(0.0) timers run. tasks: a task awaiting
create_task() of an empty coroutine, plus one create_future(), N/4 times.
sock: a round trip of 1 KiB over a socketpair between two tasks of the
loop with sock_sendall / sock_recv (uvloop's echoserver.py --sockets, both
ends in one process), N/10 times. Prints the median ns per operation
of `reps` runs (process CPU time, so that other work on the machine does
not count) for asyncio's default loop, uvloop (if installed) and pact
on io_uring and epoll.
"""
import asyncio
import socket
import statistics
import sys
import time

import pact.asyncio as pa

N = 200_000


def chain(loop):
    left = [N]

    def step():
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            loop.stop()
    loop.call_soon(step)
    t = time.process_time_ns()
    loop.run_forever()
    return (time.process_time_ns() - t) / N


def batch(loop):
    noop = int
    t = time.process_time_ns()
    for _ in range(N):
        loop.call_soon(noop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    return (time.process_time_ns() - t) / N


def sleep0(loop):
    async def main():
        for _ in range(N):
            await asyncio.sleep(0)
    t = time.process_time_ns()
    loop.run_until_complete(main())
    return (time.process_time_ns() - t) / N


def timers(loop):
    n = N // 4
    t = time.process_time_ns()
    for _ in range(n):
        loop.call_later(0.0, int)
    loop.call_later(0.0, loop.stop)
    loop.run_forever()
    return (time.process_time_ns() - t) / n


def tasks(loop):
    n = N // 4

    async def nop():
        pass

    async def main():
        for _ in range(n):
            await loop.create_task(nop())
            loop.create_future()
    t = time.process_time_ns()
    loop.run_until_complete(main())
    return (time.process_time_ns() - t) / n


def sock(loop):
    n = N // 10
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    msg = b'x' * 1024

    async def echo():
        while True:
            data = await loop.sock_recv(a, 1000000)
            if not data:
                return
            await loop.sock_sendall(a, data)

    async def main():
        server = loop.create_task(echo())
        for _ in range(n):
            await loop.sock_sendall(b, msg)
            got = 0
            while got < len(msg):
                got += len(await loop.sock_recv(b, 65536))
        b.shutdown(socket.SHUT_WR)
        await server
    try:
        t = time.process_time_ns()
        loop.run_until_complete(main())
        return (time.process_time_ns() - t) / n
    finally:
        a.close()
        b.close()


def loops():
    yield 'asyncio', asyncio.new_event_loop
    try:
        import uvloop
        yield 'uvloop ' + uvloop.__version__, uvloop.new_event_loop
    except ImportError:
        pass
    yield 'pact uring', lambda: pa.new_event_loop(engine='uring')
    yield 'pact epoll', lambda: pa.new_event_loop(engine='epoll')


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    benches = (chain, batch, sleep0, timers, tasks, sock)
    print(f"{'loop':14}" + ''.join(f'{b.__name__ + " ns":>14}' for b in benches))
    for name, factory in loops():
        row = []
        for bench in benches:
            runs = []
            for _ in range(reps):
                loop = factory()
                try:
                    runs.append(bench(loop))
                finally:
                    loop.close()
            row.append(statistics.median(runs))
        print(f'{name:14}' + ''.join(f'{v:14.0f}' for v in row), flush=True)


if __name__ == '__main__':
    main()
