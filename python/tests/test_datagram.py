# SPDX-License-Identifier: MIT
"""Datagram transports: create_datagram_endpoint on pact's datagram
endpoints (pact._pact.DatagramTransport), UDP over IPv4 and IPv6 and Unix
datagram sockets; sendto's semantics, errors, flow control and the order of
the protocol's callbacks checked against asyncio's own loop where the two
must agree; on the engine PACT_ENGINE names."""
import asyncio
import gc
import logging
import os
import socket
import tempfile
import unittest
import warnings
from test.test_asyncio import test_base_events

import pact.asyncio as pa
from pact_loop_case import ENGINE, PactLoopTestCase


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


class Recorder(asyncio.DatagramProtocol):
    """Logs every protocol call; echo=True answers each datagram."""

    def __init__(self, echo=False):
        self.events = []
        self.echo = echo
        self.transport = None
        self.received = []
        self.lost = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def datagram_received(self, data, addr):
        self.events.append(('data', data))
        self.received.append((data, addr))
        self.got.set()
        if self.echo and addr is not None:
            self.transport.sendto(data, addr)

    def error_received(self, exc):
        self.events.append(('error', type(exc)))

    def pause_writing(self):
        self.events.append('pause')

    def resume_writing(self):
        self.events.append('resume')

    def connection_lost(self, exc):
        self.events.append(('lost', type(exc) if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for(self, n):
        while len(self.received) < n:
            self.got.clear()
            await self.got.wait()


class DatagramTests(PactLoopTestCase):
    def on_both_loops(self, scenario):
        """Runs scenario(loop) on pact and on asyncio's selector loop:
        what each returns, for the test to compare."""
        results = []
        for loop in (self.loop, asyncio.SelectorEventLoop()):
            try:
                results.append(loop.run_until_complete(
                    asyncio.wait_for(scenario(loop), 30)))
            finally:
                if loop is not self.loop:
                    loop.close()
        return results

    def test_udp_echo(self):
        async def main():
            st, server = await self.loop.create_datagram_endpoint(
                lambda: Recorder(echo=True), local_addr=('127.0.0.1', 0))
            self.assertEqual(type(st).__name__, 'DatagramTransport')
            self.assertEqual(type(st).__module__, 'pact._pact')
            self.assertIsInstance(st, asyncio.DatagramTransport)
            self.assertIsInstance(st, asyncio.Transport)  # as asyncio's
            self.assertIs(server.transport, st)
            self.assertEqual(server.events, ['made'])  # before the await ends
            addr = st.get_extra_info('sockname')
            self.assertEqual(addr[0], '127.0.0.1')
            self.assertIsNone(st.get_extra_info('peername'))
            self.assertEqual(st.get_extra_info('socket').getsockname(), addr)
            self.assertEqual(st._sock.family, socket.AF_INET)
            ct, client = await self.loop.create_datagram_endpoint(
                Recorder, remote_addr=addr)
            self.assertEqual(ct.get_extra_info('peername'), addr)
            caddr = ct.get_extra_info('sockname')
            payloads = [b'', b'a', os.urandom(1000), os.urandom(60000)]
            for p in payloads:
                ct.sendto(p)
            # asyncio 3.11 sends no empty datagram: three arrive, in order.
            await client.wait_for(3)
            self.assertEqual([d for d, _ in client.received], payloads[1:])
            self.assertEqual([a for _, a in server.received], [caddr] * 3)
            self.assertEqual([a for _, a in client.received], [addr] * 3)
            self.assertRegex(repr(ct), r'fd=\d+ read=polling '
                             r'write=<idle, bufsize=0>')
            ct.close()
            self.assertTrue(ct.is_closing())
            self.assertIsNone(await client.lost)
            self.assertIsNone(ct._sock)
            self.assertIsNone(ct.get_protocol())
            self.assertIn('closed', repr(ct))
            st.close()
            await server.lost
            self.assertEqual(server.events[0], 'made')
            self.assertEqual(server.events[-1], ('lost', None))
        self.run_main(main())

    @unittest.skipUnless(ipv6_loopback(), 'no IPv6 loopback on this machine')
    def test_udp6_echo(self):
        async def main():
            st, server = await self.loop.create_datagram_endpoint(
                lambda: Recorder(echo=True), local_addr=('::1', 0))
            addr = st.get_extra_info('sockname')
            self.assertEqual(len(addr), 4)
            ct, client = await self.loop.create_datagram_endpoint(
                Recorder, family=socket.AF_INET6)
            for i in range(5):
                ct.sendto(b'six%d' % i, ('::1', addr[1]))
            await client.wait_for(5)
            self.assertEqual([d for d, _ in client.received],
                             [b'six%d' % i for i in range(5)])
            self.assertEqual(client.received[0][1], addr)
            # Bound by its first send (to the wildcard address).
            self.assertEqual(server.received[0][1][1],
                             ct._sock.getsockname()[1])
            ct.close()
            st.close()
            await client.lost
            await server.lost
        self.run_main(main())

    def test_unix_datagram_paths(self):
        async def main():
            with tempfile.TemporaryDirectory() as d:
                spath = os.path.join(d, 'server')
                cpath = os.path.join(d, 'client')
                st, server = await self.loop.create_datagram_endpoint(
                    lambda: Recorder(echo=True), local_addr=spath,
                    family=socket.AF_UNIX)
                self.assertEqual(st.get_extra_info('sockname'), spath)
                ct, client = await self.loop.create_datagram_endpoint(
                    Recorder, local_addr=cpath, remote_addr=spath,
                    family=socket.AF_UNIX)
                self.assertEqual(ct.get_extra_info('peername'), spath)
                ct.sendto(b'hello')
                ct.sendto(b'again', spath)  # the connected peer: allowed
                with self.assertRaisesRegex(ValueError, 'Invalid address'):
                    ct.sendto(b'x', os.path.join(d, 'other'))
                await client.wait_for(2)
                self.assertEqual(client.received,
                                 [(b'hello', spath), (b'again', spath)])
                self.assertEqual(server.received[0], (b'hello', cpath))
                # An unnamed sender: the address is None, as recvfrom says.
                anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                anon.sendto(b'anon', spath)
                anon.close()
                await server.wait_for(3)
                self.assertEqual(server.received[2], (b'anon', None))
                # The abstract namespace: bytes addresses.
                abstract = b'\0pact-dgram-%d' % os.getpid()
                at, ap = await self.loop.create_datagram_endpoint(
                    Recorder, local_addr=abstract.decode(),
                    family=socket.AF_UNIX)
                self.assertEqual(at.get_extra_info('sockname'), abstract)
                st.sendto(b'abs', abstract)
                await ap.wait_for(1)
                self.assertEqual(ap.received, [(b'abs', spath)])
                at.sendto(b'back', spath)
                await server.wait_for(4)
                self.assertEqual(server.received[3], (b'back', abstract))
                for t in (ct, st, at):
                    t.close()
                await asyncio.gather(client.lost, server.lost, ap.lost)
                # asyncio leaves the socket files where they are.
                self.assertTrue(os.path.exists(spath))
        self.run_main(main())

    def test_sock_and_socket_options(self):
        async def main():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(('127.0.0.1', 0))
            fd = sock.fileno()
            t, p = await self.loop.create_datagram_endpoint(Recorder, sock=sock)
            self.assertIs(t._sock, sock)
            self.assertEqual(t.get_extra_info('socket').fileno(), fd)
            with self.assertRaises(RuntimeError):
                self.loop.add_reader(fd, lambda: None)  # the transport's fd
            t.close()
            await p.lost
            self.assertEqual(sock.fileno(), -1)  # detached: pact closed it
            t, p = await self.loop.create_datagram_endpoint(
                Recorder, local_addr=('127.0.0.1', 0), reuse_port=True,
                allow_broadcast=True)
            s = t.get_extra_info('socket')
            self.assertTrue(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
            self.assertTrue(s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
            # The socket is as the program made it: no IP_RECVERR.
            ip_recverr = getattr(socket, 'IP_RECVERR', 11)  # Linux's number
            self.assertFalse(s.getsockopt(socket.SOL_IP, ip_recverr))
            t.sendto(b'bcast', ('<broadcast>', 9))
            t.close()
            await p.lost
            self.assertNotIn(('error', OSError), p.events)
        self.run_main(main())

    def test_sendto_checks_as_asyncio(self):
        async def scenario(loop):
            results = []
            st, server = await loop.create_datagram_endpoint(
                Recorder, local_addr=('127.0.0.1', 0))
            addr = st.get_extra_info('sockname')
            ct, client = await loop.create_datagram_endpoint(
                Recorder, remote_addr=addr)
            for data, to in [('text', None), (b'x', ('127.0.0.2', 9)),
                             (b'x', addr[0]), (1, addr)]:
                try:
                    ct.sendto(data, to)
                    results.append('sent')
                except Exception as exc:
                    results.append((type(exc),
                                    str(exc).replace(str(addr), 'ADDR')))
            ct.sendto(memoryview(b'mv'), addr)
            ct.sendto(bytearray(b'ba'))
            ct.sendto(data=b'kw', addr=None)
            await server.wait_for(3)
            results.append([d for d, _ in server.received])
            ct.close()
            st.close()
            await client.lost
            await server.lost
            return results
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)
        self.assertEqual(pact[-1], [b'mv', b'ba', b'kw'])

    def test_bad_addresses_end_the_transport_as_in_asyncio(self):
        async def scenario(loop):
            outcome = []
            handled = []
            loop.set_exception_handler(
                lambda lp, ctx: handled.append(
                    (ctx['message'], type(ctx.get('exception')))))
            for family, addr in [
                    (socket.AF_INET, None),
                    (socket.AF_INET, '127.0.0.1'),
                    (socket.AF_INET, ('127.0.0.1',)),
                    (socket.AF_INET, ('127.0.0.1', 70000)),
                    (socket.AF_INET, ('127.0.0.1', 'port')),
                    (socket.AF_INET, ('127.0.0.1', 9, 1)),
                    (socket.AF_INET6, ('::1', 9, 1 << 21)),
                    (socket.AF_UNIX, None),
                    (socket.AF_UNIX, ('a', 1))]:
                if family == socket.AF_INET6 and not ipv6_loopback():
                    continue
                kw = ({'local_addr': ('127.0.0.1', 0)} if family == socket.AF_INET
                      else {'family': family})
                t, p = await loop.create_datagram_endpoint(Recorder, **kw)
                t.sendto(b'x', addr)
                exc = await p.lost
                outcome.append((type(exc), str(exc), t.is_closing(),
                                p.events))
            loop.set_exception_handler(None)
            return outcome, handled
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)
        self.assertTrue(all(m == 'Fatal write error on datagram transport'
                            for m, _ in pact[1]))

    def test_errors_go_to_error_received_and_reception_goes_on(self):
        async def scenario(loop):
            # A connected client whose peer is gone: the ICMP error reaches
            # error_received, and the transport still receives after it.
            gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            gone.bind(('127.0.0.1', 0))
            addr = gone.getsockname()
            gone.close()
            ct, client = await loop.create_datagram_endpoint(
                Recorder, remote_addr=addr)
            ct.sendto(b'into the void')
            while not any(e[0] == 'error' for e in client.events
                          if isinstance(e, tuple)):
                await asyncio.sleep(0.005)
            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            back.bind(addr)
            back.settimeout(10)
            ct.sendto(b'and again')  # the socket error was consumed
            back.sendto(b'still listening', ct.get_extra_info('sockname'))
            await client.wait_for(1)
            self.assertEqual(back.recv(100), b'and again')
            back.close()
            # Unconnected: a name that does not resolve is an OSError
            # (gaierror) for error_received; sending to a dead port is
            # silent, as on asyncio (no IP_RECVERR).
            ut, uclient = await loop.create_datagram_endpoint(
                Recorder, local_addr=('127.0.0.1', 0))
            ut.sendto(b'x', ('name.that.does.not.resolve.invalid', 9))
            ut.sendto(b'x', addr)
            ut.sendto(b'self', ut.get_extra_info('sockname'))
            await uclient.wait_for(1)
            ct.close()
            ut.close()
            await client.lost
            await uclient.lost
            return client.events, uclient.events
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)
        self.assertEqual(pact[0], ['made', ('error', ConnectionRefusedError),
                                   ('data', b'still listening'),
                                   ('lost', None)])
        self.assertEqual(pact[1][1][0], 'error')
        self.assertTrue(issubclass(pact[1][1][1], socket.gaierror))

    def test_protocol_exceptions_are_reported_and_reception_goes_on(self):
        class Raising(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                if data == b'raise':
                    raise ValueError('from the protocol')

        async def main():
            handled = []
            self.loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))
            t, p = await self.loop.create_datagram_endpoint(
                Raising, local_addr=('127.0.0.1', 0))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b'raise', t.get_extra_info('sockname'))
            s.sendto(b'after', t.get_extra_info('sockname'))
            await p.wait_for(2)
            s.close()
            self.assertEqual([d for d, _ in p.received], [b'raise', b'after'])
            self.assertEqual(len(handled), 1)
            self.assertIsInstance(handled[0]['exception'], ValueError)
            self.assertIn('datagram_received', handled[0]['message'])
            self.assertFalse(t.is_closing())
            t.close()
            await p.lost
        self.run_main(main())

    def unix_pair(self):
        """A Unix datagram socketpair whose receiving end is not read: the
        kernel refuses more once its queue is full (EAGAIN), so datagrams
        wait in pact's queue."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        b.setblocking(False)
        return a, b

    def test_flow_control_pauses_and_resumes_in_order(self):
        async def main():
            a, b = self.unix_pair()
            t, p = await self.loop.create_datagram_endpoint(Recorder, sock=a)
            t.set_write_buffer_limits(high=4000, low=1000)
            self.assertEqual(t.get_write_buffer_limits(), (1000, 4000))
            sent = [b'%05d' % i + bytes(995) for i in range(40)]
            for d in sent:
                t.sendto(d)
            # The socket took some at once; the rest wait, counted as
            # asyncio counts them (their bytes only).
            waiting = t.get_write_buffer_size()
            self.assertGreater(waiting, 4000)
            self.assertEqual(waiting % 1000, 0)
            self.assertEqual(p.events, ['made', 'pause'])
            self.assertTrue(t._protocol_paused)
            got = []
            while len(got) < len(sent):
                try:
                    got.append(b.recv(2000))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            self.assertEqual(got, sent)
            while t.get_write_buffer_size():
                await asyncio.sleep(0.001)
            self.assertEqual(p.events, ['made', 'pause', 'resume'])
            # close() sends what waits first, and what is sent while it
            # does, as asyncio.
            for d in sent[:20]:
                t.sendto(d)
            t.close()
            t.sendto(b'after close')
            got = []
            while not p.lost.done() or len(got) < 21:
                try:
                    got.append(b.recv(2000))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            self.assertEqual(got, sent[:20] + [b'after close'])
            self.assertIsNone(await p.lost)
            b.close()
        self.run_main(main())

    def test_abort_drops_what_waits(self):
        async def main():
            a, b = self.unix_pair()
            t, p = await self.loop.create_datagram_endpoint(Recorder, sock=a)
            for i in range(40):
                t.sendto(bytes(1000))
            self.assertGreater(t.get_write_buffer_size(), 0)
            t.abort()
            self.assertTrue(t.is_closing())
            self.assertIsNone(await p.lost)
            self.assertEqual(t.get_write_buffer_size(), 0)
            n = 0
            while True:
                try:
                    b.recv(2000)
                    n += 1
                except BlockingIOError:
                    break
            self.assertLess(n, 40)
            b.close()
        self.run_main(main())

    def test_sends_after_close_are_logged_from_the_fifth(self):
        async def scenario(loop):
            st, server = await loop.create_datagram_endpoint(
                Recorder, local_addr=('127.0.0.1', 0))
            ct, client = await loop.create_datagram_endpoint(
                Recorder, remote_addr=st.get_extra_info('sockname'))
            ct.close()
            logger = logging.getLogger('asyncio')
            with self.assertLogs(logger, 'WARNING') as logs:
                for _ in range(7):
                    ct.sendto(b'late')
                logger.warning('end')
            await client.lost
            st.close()
            await server.lost
            return logs.output, server.received
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)
        self.assertEqual(len(pact[0]), 4)  # the 5th, 6th, 7th, and 'end'

    def test_sends_after_close_are_asyncio_s(self):
        # asyncio's _SelectorDatagramTransport after close(): with datagrams
        # still buffered, later ones are buffered behind them and sent
        # before connection_lost; with none buffered, a transport made with
        # remote_addr drops them, and one without sends them at once (its
        # socket is open until connection_lost).
        async def buffered(loop):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, 'b')
                b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                b.bind(path)
                b.setblocking(False)
                t, p = await loop.create_datagram_endpoint(
                    Recorder, remote_addr=path, family=socket.AF_UNIX)
                t.get_extra_info('socket').setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                sent = [b'%05d' % i + bytes(995) for i in range(40)]
                for d in sent:
                    t.sendto(d)
                waiting = t.get_write_buffer_size() > 0
                t.close()
                t.sendto(b'after close')
                got = []
                while not p.lost.done():
                    try:
                        got.append(b.recv(2000))
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                while True:
                    try:
                        got.append(b.recv(2000))
                    except BlockingIOError:
                        break
                b.close()
                return waiting, got == sent + [b'after close'], p.events

        async def nothing_buffered(loop, connected):
            st, server = await loop.create_datagram_endpoint(
                Recorder, local_addr=('127.0.0.1', 0))
            addr = st.get_extra_info('sockname')
            if connected:
                ct, client = await loop.create_datagram_endpoint(
                    Recorder, remote_addr=addr)
            else:
                ct, client = await loop.create_datagram_endpoint(
                    Recorder, local_addr=('127.0.0.1', 0))
            ct.sendto(b'before', addr)
            ct.close()
            ct.sendto(b'after', addr)
            await client.lost
            await asyncio.wait_for(server.wait_for(1), 5)
            await asyncio.sleep(0.05)  # anything more would be here
            st.close()
            await server.lost
            return server.received and [d for d, a in server.received], \
                client.events

        async def scenario(loop):
            return (await buffered(loop),
                    await nothing_buffered(loop, connected=True),
                    await nothing_buffered(loop, connected=False))
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)
        self.assertEqual(ref[0], (True, True, ['made', ('lost', None)]))
        self.assertEqual(ref[1][0], [b'before'])
        self.assertEqual(ref[2][0], [b'before', b'after'])

    def test_same_callbacks_as_asyncio_for_an_exchange(self):
        async def scenario(loop):
            st, server = await loop.create_datagram_endpoint(
                lambda: Recorder(echo=True), local_addr=('127.0.0.1', 0))
            ct, client = await loop.create_datagram_endpoint(
                Recorder, remote_addr=st.get_extra_info('sockname'))
            for i in range(50):
                ct.sendto(b'%d' % i)
            await client.wait_for(50)
            ct.close()
            await client.lost
            st.abort()
            await server.lost
            return server.events, client.events
        pact, ref = self.on_both_loops(scenario)
        self.assertEqual(pact, ref)

    def test_loop_close_leaves_it_open_and_collection_warns(self):
        t, p = self.run_main(self.loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', 0)))
        addr = t.get_extra_info('sockname')
        self.loop.close()
        self.assertFalse(t.is_closing())
        self.assertEqual(p.events, ['made'])  # connection_lost not called
        # The socket is still bound: nobody else gets the port.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with self.assertRaises(OSError):
            s.bind(addr)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            del t, p
            gc.collect()
        self.assertTrue(any(issubclass(x.category, ResourceWarning) and
                            'unclosed transport' in str(x.message) for x in w))
        s.bind(addr)  # released
        s.close()

    def test_peers_in_turn_each_get_their_own_address(self):
        # A server answering peers in turn converts each datagram's address
        # anew (only the last peer's is kept): it must be the peer's own,
        # as the socket module writes it (octets of one, two and three
        # digits, 0 and 255 among them), and the answer sent to it must
        # reach that peer. Peers on loopback addresses of their own, each
        # sending and waiting for its answer in turn, several rounds.
        hosts = ['127.0.0.1', '127.0.0.10', '127.0.0.100', '127.1.22.255',
                 '127.200.9.90', '127.255.255.254', '127.0.255.0',
                 '127.99.100.9']
        rounds = 4

        async def main():
            st, server = await self.loop.create_datagram_endpoint(
                lambda: Recorder(echo=True), local_addr=('127.0.0.1', 0))
            saddr = st.get_extra_info('sockname')
            peers = [await self.loop.create_datagram_endpoint(
                Recorder, local_addr=(host, 0), remote_addr=saddr)
                for host in hosts]
            expected = []
            for r in range(rounds):
                for i, (ct, client) in enumerate(peers):
                    ct.sendto(b'%d %d' % (r, i))
                    expected.append((b'%d %d' % (r, i),
                                     ct.get_extra_info('sockname')))
                    await client.wait_for(r + 1)
            self.assertEqual(server.received, expected)
            for host, (ct, client) in zip(hosts, peers):
                self.assertEqual(ct.get_extra_info('sockname')[0], host)
                self.assertEqual(client.received,
                                 [(d, saddr) for d, a in expected
                                  if a == ct.get_extra_info('sockname')])
                ct.close()
                await client.lost
            st.close()
            await server.lost
        self.run_main(main())

    def test_many_datagrams_in_order(self):
        async def main():
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, 'sink')
                st, server = await self.loop.create_datagram_endpoint(
                    Recorder, local_addr=path, family=socket.AF_UNIX)
                ct, client = await self.loop.create_datagram_endpoint(
                    Recorder, remote_addr=path, family=socket.AF_UNIX)
                sent = [os.urandom(1 + (i * 7919) % 3000) for i in range(2000)]
                for i, d in enumerate(sent):
                    ct.sendto(d)
                    if i % 100 == 99:
                        await asyncio.sleep(0)
                await server.wait_for(len(sent))
                self.assertEqual([x for x, _ in server.received], sent)
                ct.close()
                st.close()
                await asyncio.gather(client.lost, server.lost)
        self.run_main(main())

    def check_kept_datagrams(self, keep, take_back=lambda kept: kept):
        # The loop copies a datagram into the bytes object of an earlier
        # delivery that nobody kept (endpoint.c, "Received bytes"): what
        # the protocol kept of one (keep(data), stored; take_back(stored)
        # gives the bytes back) must never change, and one reused hashes
        # as what it holds now. Every datagram is hashed, every other one
        # kept, the others copied and let go; sizes rise and fall (0 and 1
        # are Python's shared bytes), so that datagrams fit the spare or
        # not. Two client sockets in a thread send in turn, each waiting
        # for the server's answer, so the server's datagrams are the loop's
        # only deliveries and come one at a time; the address each came
        # with must be its sender's, and the one kept must stay it.
        sizes = [0, 1, 2, 3, 100, 1000, 1500, 5000, 40000, 65000]
        order = [sizes[(i * 7) % len(sizes)] for i in range(120)]
        order += [1000] * 20 + [600, 999, 400, 1000, 2, 1000]
        pattern = bytes(range(256)) * 300

        class Keeper(asyncio.DatagramProtocol):
            def __init__(self):
                self.stored, self.bad_hashes = [], 0

            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                if hash(data) != hash(bytes(bytearray(data))):
                    self.bad_hashes += 1
                entry = [None, addr, bytes(bytearray(data))]
                self.stored.append(entry)
                self.transport.sendto(len(self.stored).to_bytes(8, 'big'),
                                      addr)
                if len(self.stored) % 2 == 0:
                    entry[0] = keep(data)  # may raise
                else:
                    entry[0] = bytes(bytearray(data))

        def client(addr):
            sent = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                for s in (a, b):
                    s.bind(('127.0.0.1', 0))
                    s.settimeout(10)
                for i, n in enumerate(order):
                    s = (a, b)[i % 2]
                    d = pattern[i % 256:i % 256 + n]
                    s.sendto(d, addr)
                    sent.append((d, s.getsockname()))
                    self.assertEqual(s.recv(8), (i + 1).to_bytes(8, 'big'))
            return sent

        async def main():
            st, keeper = await self.loop.create_datagram_endpoint(
                Keeper, local_addr=('127.0.0.1', 0))
            sent = await self.loop.run_in_executor(
                None, client, st.get_extra_info('sockname'))
            self.assertEqual(keeper.bad_hashes, 0)
            # what each datagram was when it came, then what is kept now
            self.assertEqual([(d, a) for _, a, d in keeper.stored], sent)
            self.assertEqual([(bytes(take_back(k)) if i % 2 else k, a)
                              for i, (k, a, _) in enumerate(keeper.stored)],
                             sent)
            for _, a, _ in keeper.stored:
                self.assertIs(type(a), tuple)
            st.close()
        self.run_main(main())

    def test_kept_datagrams_in_a_list_stay_what_arrived(self):
        self.check_kept_datagrams(lambda data: [data], lambda kept: kept[0])

    def test_kept_datagrams_in_a_dict_stay_what_arrived(self):
        self.check_kept_datagrams(lambda data: {'data': data},
                                  lambda kept: kept['data'])

    def test_kept_datagrams_in_a_closure_stay_what_arrived(self):
        def keep(data):
            return lambda: data
        self.check_kept_datagrams(keep, lambda kept: kept())

    def test_kept_datagrams_in_a_suspended_generator_stay_what_arrived(self):
        def keep(data):
            def later():
                yield data
            return later()
        self.check_kept_datagrams(keep, next)

    def test_kept_datagrams_seen_through_a_memoryview_stay_what_arrived(self):
        # only a view (zero-copy parsers keep those): its export holds the
        # bytes
        self.check_kept_datagrams(lambda data: memoryview(data)[:],
                                  lambda kept: kept.tobytes())

    def test_kept_datagrams_in_a_traceback_stay_what_arrived(self):
        # only through the frame of a function that raised, in the
        # exception kept
        def parse(data):
            raise ValueError('kept')

        def keep(data):
            try:
                parse(data)
            except ValueError as e:
                return e
        self.check_kept_datagrams(
            keep, lambda e: e.__traceback__.tb_next.tb_frame.f_locals['data'])

    def test_datagrams_kept_by_a_reported_exception_stay_what_arrived(self):
        # datagram_received raises for every other datagram and the
        # exception handler keeps what it is given: the datagram is held
        # only by the traceback of the exception escaping the protocol,
        # still the loop's own when the loop is done with the delivery.
        reports = []
        self.loop.set_exception_handler(lambda loop, ctx: reports.append(ctx))

        def keep(data):
            raise LookupError('escapes')
        taken = []

        def take_back(kept):
            self.assertIsNone(kept)
            e = reports[len(taken)]['exception']
            self.assertIsInstance(e, LookupError)
            tb = e.__traceback__
            while tb.tb_frame.f_code.co_name != 'datagram_received':
                tb = tb.tb_next
            taken.append(tb.tb_frame.f_locals['data'])
            return taken[-1]
        self.check_kept_datagrams(keep, take_back)
        self.assertEqual(len(taken), len(reports))


class CPythonBaseEventsDatagramTests(
        test_base_events.BaseEventLoopWithSelectorTests):
    """CPython's create_datagram_endpoint tests of test_base_events, which
    run on asyncio's selector loop in CPython's suite, on a pact loop. Not
    test_create_datagram_endpoint_ip_addr: it replaces the socket module
    with mocks, so the transport is asyncio's (no fd for pact)."""

    def setUp(self):
        super().setUp()
        self.loop.close()
        self.loop = pa.Loop(engine=ENGINE)
        self.set_event_loop(self.loop)


for _name in dir(CPythonBaseEventsDatagramTests):
    if _name.startswith('test') and ('datagram' not in _name or
                                     _name.endswith('_ip_addr')):
        setattr(CPythonBaseEventsDatagramTests, _name, None)
del _name


if __name__ == '__main__':
    unittest.main()
