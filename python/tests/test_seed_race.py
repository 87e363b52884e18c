# SPDX-License-Identifier: MIT
"""The seed race in Python: a protocol server pausing and resuming reading
every millisecond while clients stream 2000 x 16 KiB each through it and
check every byte that comes back (order, loss, duplication); once over
plain pact transports, once through start_tls (asyncio's SSLProtocol over
a pact transport, upgraded after a plaintext handshake with the client's
first TLS bytes held while the server is paused). On the engine
PACT_ENGINE names.

PACT_RACE_PACKETS changes the packets per client (default 2000)."""
import asyncio
import os
import ssl
import unittest
from test.test_asyncio import utils as test_utils

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')
PACKET = 16 * 1024
PACKETS = int(os.environ.get('PACT_RACE_PACKETS', '2000'))
CLIENTS = 2
TOGGLE = 0.001  # seconds between pause_reading and resume_reading


def stream_for(client):
    # What client n sends: bytes that differ at every offset within a
    # period (a prime, so no 16 KiB packet lines up with it) and between
    # clients, so a byte lost, doubled, reordered or crossed shows.
    period = 65521
    block = bytes((i * 131 + client * 29 + (i >> 8) * 7) & 0xff
                  for i in range(period))
    total = PACKETS * PACKET
    return (block * (total // period + 1))[:total]


class PausingEchoServer(asyncio.Protocol):
    """Echoes what it reads, while pause_reading()/resume_reading() flip
    every millisecond. With starttls, it first waits for b'STARTTLS\\n',
    pauses, answers b'GO\\n' and upgrades; the toggling then runs on the
    TLS transport."""

    def __init__(self, loop, starttls_context, stats):
        self.loop = loop
        self.tls_context = starttls_context
        self.stats = stats
        self.transport = None
        self.toggler = None
        self.plaintext = b''
        # With starttls: what TLS delivered before start_tls() returned the
        # transport to answer on (echoed then).
        self.early = None

    def connection_made(self, transport):
        if self.transport is None:  # the plain one, first
            self.transport = transport
            if self.tls_context is None:
                self.start_toggling()

    def start_toggling(self):
        # Start paused: on a fast machine a whole transfer can fit in one
        # toggle period, and the race must really pause.
        self.transport.pause_reading()
        self.stats['pauses'] += 1
        self.toggler = self.loop.call_later(TOGGLE, self.toggle)

    def toggle(self):
        if self.transport.is_closing():
            return
        if self.transport.is_reading():
            self.transport.pause_reading()
            self.stats['pauses'] += 1
        else:
            self.transport.resume_reading()
        self.toggler = self.loop.call_later(TOGGLE, self.toggle)

    def data_received(self, data):
        if self.tls_context is not None and self.toggler is None:
            self.plaintext += data
            if self.plaintext == b'STARTTLS\n':
                # The client's TLS bytes follow GO at once: they must wait
                # in the paused transport for the TLS protocol.
                self.transport.pause_reading()
                self.transport.write(b'GO\n')
                self.early = []
                self.toggler = self.loop.create_task(self.upgrade())
            return
        if self.early is not None:
            self.early.append(data)
            return
        if not self.transport.is_reading():
            self.stats['while_paused'] += 1
        self.stats['echoed'] += len(data)
        self.transport.write(data)

    async def upgrade(self):
        tls = await self.loop.start_tls(self.transport, self,
                                        self.tls_context, server_side=True)
        self.stats['tls_server'] = tls.get_extra_info('ssl_object') is not None
        self.transport = tls
        early, self.early = b''.join(self.early), None
        self.stats['echoed'] += len(early)
        tls.write(early)
        self.start_toggling()

    def eof_received(self):
        self.transport.close()

    def connection_lost(self, exc):
        self.stats['lost'] += 1
        if self.toggler is not None:
            self.toggler.cancel()
        if exc is not None:
            self.stats['errors'].append(exc)


class CheckingClient(asyncio.Protocol):
    """Writes its stream packet by packet under flow control and checks
    what comes back against it, offset by offset."""

    def __init__(self, loop, expected):
        self.loop = loop
        self.expected = memoryview(expected)
        self.sent = 0
        self.verified = 0
        self.mismatch_at = None
        self.writing_paused = False
        self.done = loop.create_future()
        self.lost = loop.create_future()
        self.go = loop.create_future()
        self.prelude = b''
        self.streaming = False

    def connection_made(self, transport):
        self.transport = transport

    def start_streaming(self, transport):
        self.transport = transport
        self.streaming = True
        self.write_more()

    def write_more(self):
        total = len(self.expected)
        while not self.writing_paused and self.sent < total:
            self.transport.write(self.expected[self.sent:self.sent + PACKET])
            self.sent += PACKET

    def pause_writing(self):
        self.writing_paused = True

    def resume_writing(self):
        self.writing_paused = False
        if self.streaming:
            self.write_more()

    def data_received(self, data):
        if not self.streaming:
            self.prelude += data
            if self.prelude == b'GO\n' and not self.go.done():
                self.go.set_result(None)
            return
        end = self.verified + len(data)
        if (self.mismatch_at is None and
                self.expected[self.verified:end] != data):
            want = self.expected[self.verified:end]
            self.mismatch_at = self.verified + next(
                (i for i in range(min(len(data), len(want)))
                 if data[i] != want[i]), min(len(data), len(want)))
        self.verified = end
        if self.verified >= len(self.expected) and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(
                'closed after %d of %d bytes' % (self.verified,
                                                 len(self.expected))))


class SeedRaceTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.errors = []
        self.loop.set_exception_handler(
            lambda loop, ctx: self.errors.append(ctx))

    def race(self, tls):
        server_ctx = test_utils.simple_server_sslcontext() if tls else None
        client_ctx = test_utils.simple_client_sslcontext() if tls else None
        stats = {'pauses': 0, 'while_paused': 0, 'echoed': 0, 'errors': [],
                 'lost': 0}
        expected = [stream_for(n) for n in range(CLIENTS)]

        async def client(n):
            proto = CheckingClient(self.loop, expected[n])
            tr, _ = await self.loop.create_connection(
                lambda: proto, '127.0.0.1', port)
            self.assertEqual(type(tr).__module__, 'pact._pact')
            if tls:
                tr.write(b'STARTTLS\n')
                await proto.go
                tr = await self.loop.start_tls(tr, proto, client_ctx,
                                               server_hostname='')
                self.assertIsInstance(tr.get_extra_info('ssl_object'),
                                      ssl.SSLObject)
            proto.start_streaming(tr)
            await proto.done
            # Until the close is done: over TLS it waits for the server's
            # close_notify, and a loop closed before that leaves the
            # socket transport under the TLS one open (a ResourceWarning
            # when the test's objects are collected, as on asyncio's loop).
            tr.close()
            self.assertIsNone(await proto.lost)
            return proto

        async def main():
            nonlocal port
            srv = await self.loop.create_server(
                lambda: PausingEchoServer(self.loop, server_ctx, stats),
                '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            try:
                clients = await asyncio.gather(*[client(n)
                                                 for n in range(CLIENTS)])
                # The server's ends close after the clients' (through TLS
                # after the close_notify exchange); the loop must not be
                # closed with them open (they would stay open, as on
                # asyncio, and warn when collected).
                while stats['lost'] < CLIENTS:
                    await asyncio.sleep(0.001)
                return clients
            finally:
                srv.close()
                await srv.wait_closed()

        port = None
        clients = self.loop.run_until_complete(
            asyncio.wait_for(main(), 300))
        for n, proto in enumerate(clients):
            self.assertIsNone(proto.mismatch_at,
                              'client %d: first wrong byte at %s'
                              % (n, proto.mismatch_at))
            self.assertEqual(proto.verified, PACKETS * PACKET)
        self.assertEqual(stats['echoed'], CLIENTS * PACKETS * PACKET)
        self.assertEqual(stats['while_paused'], 0)
        self.assertGreater(stats['pauses'], CLIENTS)  # it really toggled
        self.assertEqual(stats['errors'], [])
        self.assertEqual(self.errors, [])
        if tls:
            self.assertTrue(stats['tls_server'])

    def test_pause_resume_every_ms_loses_no_byte(self):
        self.race(tls=False)

    def test_the_same_through_start_tls(self):
        self.race(tls=True)


if __name__ == '__main__':
    unittest.main()
