# SPDX-License-Identifier: MIT
"""UDP echo ping-pong: a datagram server on the loop under test
(create_datagram_endpoint, a protocol that sends every datagram back), and
a client in plain blocking sockets that keeps --window datagrams in flight.

    udp_echo.py server --loop asyncio|uvloop|pact-uring|pact-epoll --port P
    udp_echo.py client --port P --server-pid PID [--size 64] [--window 1]
                       [--duration 1.5] [--warmup 0.5]

The server prints 'ready' on stderr once bound. The client prints
key=value pairs as loadgen does: reqs, req_s, server_cpu_s (the server's
user+system CPU time during the measured part, from /proc)."""
import argparse
import asyncio
import os
import socket
import sys
import time


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def server(a):
    if a.loop == 'uvloop':
        import uvloop
        loop = uvloop.new_event_loop()
    elif a.loop.startswith('pact-'):
        import pact.asyncio
        loop = pact.asyncio.new_event_loop(engine=a.loop[5:])
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(loop.create_datagram_endpoint(
        Echo, local_addr=('127.0.0.1', a.port)))
    print('ready', file=sys.stderr, flush=True)
    loop.run_forever()


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def client(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(('127.0.0.1', a.port))
    s.settimeout(2)
    payload = b'x' * a.size

    def run(seconds):
        n = 0
        for _ in range(a.window):
            s.send(payload)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(256):
                s.recv(65536)
                s.send(payload)
            n += 256
        for _ in range(a.window):
            s.recv(65536)
        return n

    run(a.warmup)
    c0 = cpu_seconds(a.server_pid)
    t0 = time.monotonic()
    n = run(a.duration)
    t1 = time.monotonic()
    c1 = cpu_seconds(a.server_pid)
    print(f'reqs={n} req_s={n / (t1 - t0):.0f} server_cpu_s={c1 - c0:.2f}')


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='role', required=True)
    ps = sub.add_parser('server')
    ps.add_argument('--loop', required=True,
                    choices=('asyncio', 'uvloop', 'pact-uring', 'pact-epoll'))
    ps.add_argument('--port', type=int, required=True)
    pc = sub.add_parser('client')
    pc.add_argument('--port', type=int, required=True)
    pc.add_argument('--server-pid', type=int, required=True)
    pc.add_argument('--size', type=int, default=64)
    pc.add_argument('--window', type=int, default=1)
    pc.add_argument('--duration', type=float, default=1.5)
    pc.add_argument('--warmup', type=float, default=0.5)
    a = p.parse_args()
    server(a) if a.role == 'server' else client(a)


if __name__ == '__main__':
    main()
