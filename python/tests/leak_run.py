# SPDX-License-Identifier: MIT
"""Leak run: many requests through a server on one pact loop, with the
process's RSS and open fds sampled at quiet points; both must stay flat.

    PYTHONPATH=build/python /usr/bin/python3 python/tests/leak_run.py \\
        --server protocol --requests 1000000 --engine uring

The load runs in rounds. In each round CONNECTIONS clients connect, each
makes its share of the round's requests on its connection, checks every
answer and closes; so every connection, transport and protocol of a round
is gone at its end. After warm-up rounds and a warm-up stream (caches, free
lists and pact's buffers reach their working size), a sample follows the last round of
every tenth of the run: RSS (VmRSS) and the number of open fds. The run
fails (exit 1) if the fd count at any sample differs from the first
sample's, or RSS grew by more than --rss-growth-kib between the first and
the last sample, or at a sample a transport is still alive (every round's
connections are closed by then) or pact has another number of operations
in flight than at the first (the listening socket's: one that stays is a
leaked operation, with its memory in pact's pool, which RSS would not see
for a long time). The servers:

  protocol  an asyncio.Protocol answering each request line with a 512-byte
            body (pact transports both sides: asyncio streams clients);
  aiohttp   aiohttp's web server, with aiohttp's ClientSession as the
            client (one session per round, keep-alive within it);
  tls       the protocol server and clients over TLS (create_server and
            open_connection with ssl=).

Prints one line per sample and a summary line:
  sample requests=... rss_kib=... fds=... transports=... ops_live=... req_s=...
  result server=... engine=... requests=... rss_start_kib=... ... ok|FAILED
"""
import argparse
import asyncio
import gc
import os
import socket
import sys
import time

import pact.asyncio as pa

BODY = 512


def rss_kib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS')


def fd_count():
    return len(os.listdir('/proc/self/fd'))


def answer_for(n):
    # The answer to request n: its number, then a body that depends on it.
    head = b'%d ' % n
    return head + bytes([48 + n % 10]) * (BODY - len(head) - 1) + b'\n'


class AnswerProtocol(asyncio.Protocol):
    """Reads request lines 'n\\n' and answers each with answer_for(n)."""

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b''

    def data_received(self, data):
        lines = (self.pending + data).split(b'\n')
        self.pending = lines.pop()
        self.transport.write(b''.join(answer_for(int(n)) for n in lines))

    def eof_received(self):
        self.transport.close()


async def line_client(host, port, first, count, ssl_context):
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context,
        server_hostname='' if ssl_context else None)
    for n in range(first, first + count):
        writer.write(b'%d\n' % n)
        got = await reader.readexactly(BODY)
        if got != answer_for(n):
            raise AssertionError('request %d: wrong answer %r' % (n, got[:40]))
    writer.close()
    await writer.wait_closed()


class LineServer:
    def __init__(self, tls):
        self.tls = tls

    async def start(self):
        from test.test_asyncio import utils as test_utils
        self.server_ctx = (test_utils.simple_server_sslcontext()
                           if self.tls else None)
        if self.tls:
            # No session tickets: OpenSSL would keep a session per
            # connection for resumption (up to 20480 of them), RSS growth
            # by design on every loop.
            self.server_ctx.num_tickets = 0
        self.client_ctx = (test_utils.simple_client_sslcontext()
                           if self.tls else None)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            AnswerProtocol, '127.0.0.1', 0, ssl=self.server_ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def round(self, first, per_client, clients):
        await asyncio.gather(*[
            line_client('127.0.0.1', self.port, first + i * per_client,
                        per_client, self.client_ctx) for i in range(clients)])

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


class AiohttpServer:
    async def start(self):
        from aiohttp import web

        async def handle(request):
            return web.Response(body=answer_for(int(request.match_info['n'])))
        app = web.Application()
        app.router.add_get('/{n}', handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        self.site = web.SockSite(self.runner, sock)
        await self.site.start()
        self.base = 'http://127.0.0.1:%d/' % sock.getsockname()[1]

    async def round(self, first, per_client, clients):
        import aiohttp

        async def client(session, first):
            for n in range(first, first + per_client):
                async with session.get(self.base + str(n)) as resp:
                    got = await resp.read()
                if resp.status != 200 or got != answer_for(n):
                    raise AssertionError('request %d: %d %r'
                                         % (n, resp.status, got[:40]))
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*[client(session, first + i * per_client)
                                   for i in range(clients)])

    async def stop(self):
        await self.runner.cleanup()


# The loop's receive buffers are touched as traffic reaches them: on
# io_uring since Linux 6.12 the kernel fills them one after the other
# (incremental consumption), so small requests walk through the whole
# buffer ring (count x size, a few MiB) before RSS stops growing. The
# warm-up streams more than that through one connection, so the first
# sample already sees them resident.
WARM_STREAM_BYTES = 16 << 20


async def warm_receive_buffers():
    received = 0
    done = asyncio.get_running_loop().create_future()

    async def sink(reader, writer):
        nonlocal received
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            received += len(data)
        writer.close()
        await writer.wait_closed()
        done.set_result(None)

    server = await asyncio.start_server(sink, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    chunk = b'w' * (1 << 16)
    for _ in range(WARM_STREAM_BYTES // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    writer.close()
    await done
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    del reader, writer, server
    gc.collect()
    # The listener's last accept ends (and its fd closes) a few iterations
    # after wait_closed.
    for _ in range(20):
        await asyncio.sleep(0.001)
    assert received == WARM_STREAM_BYTES, received


def live_transports():
    """Transports still alive, closed or not: a closed transport that
    something keeps is a leak too. (loop._transports cannot tell: it is
    keyed by fd, so a kept transport drops out of it as soon as a later
    connection reuses its fd number.) Every transport type, pact's and
    asyncio's, is tracked by the garbage collector."""
    return sum(1 for o in gc.get_objects()
               if isinstance(o, asyncio.BaseTransport))


async def run(args, out):
    loop = asyncio.get_running_loop()
    server = (AiohttpServer() if args.server == 'aiohttp'
              else LineServer(tls=args.server == 'tls'))
    await server.start()
    per_round = args.connections * args.per_connection
    rounds = max(1, args.requests // per_round)
    sample_every = max(1, rounds // 10)
    # Warm-up, not counted: the receive buffers, then rounds of the load
    # itself, last, so that caches, free lists, pact's buffers and the
    # allocator reach their working size for it (glibc raises its mmap and
    # trim thresholds as large blocks are freed, SSLProtocol's 256 KiB
    # buffers among them; the stream that warms the receive buffers,
    # after the rounds, left the heap trimmed below what they use, and
    # the first counted round grew it again).
    await warm_receive_buffers()
    for w in range(3):
        await server.round(10 ** 9 + w * per_round, args.per_connection,
                           args.connections)
    samples = []
    done = 0
    started = time.monotonic()

    async def quiesce():
        # The server's ends of a round's connections close once they see
        # the clients' EOF, a few iterations after the clients are done.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            gc.collect()
            if not live_transports():
                break
            await asyncio.sleep(0.001)

    async def sample():
        await quiesce()
        gc.collect()
        s = {'requests': done, 'rss_kib': rss_kib(), 'fds': fd_count(),
             'transports': live_transports(),
             # pact operations in flight (the listening socket's poll...)
             'ops_live': loop.stats()['ops_live'] if isinstance(
                 loop, pa.Loop) else -1,
             'req_s': int(done / max(time.monotonic() - started, 1e-9))}
        samples.append(s)
        print('sample ' + ' '.join('%s=%s' % kv for kv in s.items()),
              file=out, flush=True)
    await sample()
    for r in range(rounds):
        await server.round(done, args.per_connection, args.connections)
        done += per_round
        if (r + 1) % sample_every == 0 or r + 1 == rounds:
            await sample()
    await server.stop()
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--server', choices=('protocol', 'aiohttp', 'tls'),
                        default='protocol')
    parser.add_argument('--requests', type=int, default=1000000)
    parser.add_argument('--connections', type=int, default=8)
    parser.add_argument('--per-connection', type=int, default=50,
                        help='requests on a connection before it closes')
    parser.add_argument('--engine', default='auto',
                        help="auto, uring, epoll; or asyncio: asyncio's own "
                        "loop, for comparison")
    parser.add_argument('--rss-growth-kib', type=int, default=1024,
                        help='allowed RSS growth from the first sample to '
                        'the last')
    args = parser.parse_args()
    if args.engine == 'asyncio':  # asyncio's own loop, for comparison
        loop = asyncio.new_event_loop()
        engine = 'asyncio'
    else:
        loop = pa.Loop(engine=args.engine)
        engine = loop.engine
    t0 = time.monotonic()
    try:
        samples = loop.run_until_complete(run(args, sys.stdout))
    finally:
        loop.close()
    first, middle, last = samples[0], samples[len(samples) // 2], samples[-1]
    growth = last['rss_kib'] - first['rss_kib']
    fds_flat = all(s['fds'] == first['fds'] for s in samples)
    transports_left = max(s['transports'] for s in samples)
    ops_flat = all(s['ops_live'] == first['ops_live'] for s in samples)
    ok = (fds_flat and growth <= args.rss_growth_kib and
          transports_left == 0 and ops_flat)
    print('result server=%s engine=%s requests=%d seconds=%.1f '
          'rss_start_kib=%d rss_middle_kib=%d rss_end_kib=%d '
          'rss_growth_kib=%d fds_start=%d fds_middle=%d fds_end=%d '
          'fds_flat=%s transports_left=%d ops_live_flat=%s %s' % (
              args.server, engine, last['requests'],
              time.monotonic() - t0, first['rss_kib'], middle['rss_kib'],
              last['rss_kib'], growth, first['fds'], middle['fds'],
              last['fds'], fds_flat, transports_left, ops_flat,
              'ok' if ok else 'FAILED'), flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
