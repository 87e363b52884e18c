# SPDX-License-Identifier: MIT
"""Servers accept in C: create_server, create_unix_server and sock= hand
their listening sockets to pact (pact_server_adopt), which makes each
connection's protocol and transport without Python readiness, while the
Server stays asyncio's (start_serving, serve_forever, close, wait_closed,
sockets, the connection count); on the engine PACT_ENGINE names."""
import asyncio
import contextvars
import os
import socket
import tempfile
import unittest

from pact_loop_case import PactLoopTestCase


class Recorder(asyncio.Protocol):
    def __init__(self, log=None, echo=True):
        self.events = log if log is not None else []
        self.echo = echo
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def data_received(self, data):
        self.events.append(('data', data))
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append('eof')

    def connection_lost(self, exc):
        self.events.append(('lost', exc))


async def echo_once(host, port, payload):
    r, w = await asyncio.open_connection(host, port)
    w.write(payload)
    await w.drain()
    got = await r.readexactly(len(payload))
    w.close()
    await w.wait_closed()
    return got


class AcceptTests(PactLoopTestCase):
    def test_create_server_accepts_in_c(self):
        async def main():
            protocols = []

            def factory():
                protocols.append(Recorder())
                return protocols[-1]
            srv = await self.loop.create_server(factory, '127.0.0.1', 0)
            sock = srv.sockets[0]
            self.assertIn(sock.fileno(), self.loop._pact_servers)
            port = sock.getsockname()[1]
            for i in range(5):
                self.assertEqual(await echo_once('127.0.0.1', port, b'n%d' % i),
                                 b'n%d' % i)
            self.assertEqual(len(protocols), 5)
            t = protocols[0].transport
            self.assertEqual(type(t).__module__, 'pact._pact')
            self.assertEqual(t.get_extra_info('sockname'), ('127.0.0.1', port))
            peer = t.get_extra_info('peername')
            self.assertEqual(peer[0], '127.0.0.1')
            tsock = t.get_extra_info('socket')
            self.assertIsInstance(tsock, asyncio.trsock.TransportSocket)
            self.assertEqual(tsock.family, socket.AF_INET)
            self.assertEqual(protocols[0].events,
                             ['made', ('data', b'n0'), 'eof', ('lost', None)])
            # The count follows the connections (asyncio's _attach/_detach).
            r, w = await asyncio.open_connection('127.0.0.1', port)
            w.write(b'x')
            await r.readexactly(1)
            self.assertEqual(srv._active_count, 1)
            self.assertTrue(protocols[-1].transport.get_extra_info(
                'socket').getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            srv.close()
            self.assertEqual(self.loop._pact_servers, {})
            # The established connection goes on after close().
            w.write(b'still here')
            self.assertEqual(await r.readexactly(10), b'still here')
            self.assertEqual(srv._active_count, 1)
            with self.assertRaises(OSError):
                await asyncio.open_connection('127.0.0.1', port)
            w.close()
            await srv.wait_closed()
            while srv._active_count:
                await asyncio.sleep(0.001)
            self.assertEqual(protocols[-1].events[-1], ('lost', None))
        self.run_main(main())

    def test_sock_start_serving_and_serve_forever(self):
        async def main():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
            srv = await self.loop.create_server(
                Recorder, sock=sock, start_serving=False, backlog=5)
            self.assertFalse(srv.is_serving())
            self.assertEqual(self.loop._pact_servers, {})
            await srv.start_serving()
            self.assertTrue(srv.is_serving())
            self.assertIn(sock.fileno(), self.loop._pact_servers)
            self.assertEqual(await echo_once('127.0.0.1', port, b'sock='), b'sock=')
            task = asyncio.ensure_future(srv.serve_forever())
            await asyncio.sleep(0)
            self.assertEqual(await echo_once('127.0.0.1', port, b'again'), b'again')
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertFalse(srv.is_serving())  # serve_forever closed it
            await srv.wait_closed()
            self.assertEqual(sock.fileno(), -1)  # closed by asyncio's Server
        self.run_main(main())

    def test_unix_server(self):
        async def main():
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, 'srv.sock')
                protocols = []

                def factory():
                    protocols.append(Recorder())
                    return protocols[-1]
                srv = await self.loop.create_unix_server(factory, path)
                self.assertIn(srv.sockets[0].fileno(), self.loop._pact_servers)
                r, w = await asyncio.open_unix_connection(path)
                w.write(b'unix')
                self.assertEqual(await r.readexactly(4), b'unix')
                t = protocols[0].transport
                self.assertEqual(t.get_extra_info('sockname'), path)
                self.assertEqual(t.get_extra_info('socket').family, socket.AF_UNIX)
                w.close()
                srv.close()
                await srv.wait_closed()
                self.assertTrue(os.path.exists(path))  # as asyncio 3.11
        self.run_main(main())

    def test_factory_errors_are_reported_and_serving_goes_on(self):
        async def main():
            handled = []
            self.loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))
            calls = []

            def factory():
                calls.append(1)
                if len(calls) == 1:
                    raise ZeroDivisionError('no protocol')
                return Recorder()
            srv = await self.loop.create_server(factory, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port)
            self.assertEqual(await r.read(), b'')  # closed by the server
            w.close()
            self.assertEqual(len(handled), 1)
            self.assertEqual(handled[0]['message'],
                             'Error on transport creation for incoming connection')
            self.assertIsInstance(handled[0]['exception'], ZeroDivisionError)
            self.assertEqual(await echo_once('127.0.0.1', port, b'ok'), b'ok')
            while srv._active_count:  # the refused one was never counted
                await asyncio.sleep(0.001)
            srv.close()
            await srv.wait_closed()
        self.run_main(main())

    def test_factory_runs_in_the_context_of_start_serving(self):
        var = contextvars.ContextVar('var', default='unset')

        async def main():
            seen = []

            class P(Recorder):
                def connection_made(self, transport):
                    seen.append(('made', var.get()))
                    super().connection_made(transport)

            def factory():
                seen.append(('factory', var.get()))
                var.set('changed in the factory')
                return P()
            var.set('at create_server')
            srv = await self.loop.create_server(factory, '127.0.0.1', 0)
            var.set('later')
            port = srv.sockets[0].getsockname()[1]
            await echo_once('127.0.0.1', port, b'c')
            await echo_once('127.0.0.1', port, b'd')
            # Each connection starts from a copy of the server's context.
            self.assertEqual(seen, [('factory', 'at create_server'),
                                    ('made', 'changed in the factory')] * 2)
            srv.close()
            await srv.wait_closed()
        self.run_main(main())

    def test_many_clients_at_once(self):
        async def main():
            srv = await self.loop.create_server(Recorder, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            payloads = [os.urandom(100 + i) for i in range(100)]
            got = await asyncio.gather(*(echo_once('127.0.0.1', port, p)
                                         for p in payloads))
            self.assertEqual(got, payloads)
            srv.close()
            await srv.wait_closed()
        self.run_main(main())

    def test_same_callbacks_as_asyncio(self):
        async def scenario(loop):
            log = []
            srv = await loop.create_server(lambda: Recorder(log),
                                           '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port)
            w.write(b'one')
            await r.readexactly(3)
            w.write_eof()
            await r.read()
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            while ('lost', None) not in log:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)  # the client's transport closes too
            return log, srv.sockets, srv.is_serving()
        ref_loop = asyncio.SelectorEventLoop()
        try:
            ref = ref_loop.run_until_complete(scenario(ref_loop))
        finally:
            ref_loop.close()
        self.assertEqual(self.run_main(scenario(self.loop)), ref)

    def test_loop_close_with_a_server_open(self):
        srv = self.run_main(self.loop.create_server(Recorder, '127.0.0.1', 0))
        sock = srv.sockets[0]
        self.loop.close()
        # As asyncio: the listening socket is the Server's, still open.
        self.assertNotEqual(sock.fileno(), -1)
        srv.close()
        self.assertEqual(sock.fileno(), -1)

    def test_tls_servers_accept_in_pact_too(self):
        # Each connection: asyncio's SSLProtocol on a pact transport.
        import ssl
        from test.test_asyncio import utils as test_utils

        async def main():
            ctx = test_utils.simple_server_sslcontext()
            log = []
            srv = await self.loop.create_server(lambda: Recorder(log),
                                                '127.0.0.1', 0, ssl=ctx)
            self.assertEqual(list(self.loop._pact_servers),
                             [srv.sockets[0].fileno()])
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection(
                '127.0.0.1', port, ssl=test_utils.simple_client_sslcontext())
            w.write(b'tls')
            self.assertEqual(await r.readexactly(3), b'tls')
            w.close()
            await w.wait_closed()
            while not log or log[-1][0] != 'lost':
                await asyncio.sleep(0.001)
            srv.close()
            await srv.wait_closed()
        del ssl
        self.run_main(main())


if __name__ == '__main__':
    unittest.main()
