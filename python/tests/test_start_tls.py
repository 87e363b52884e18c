# SPDX-License-Identifier: MIT
"""TLS over pact transports (asyncio's SSLProtocol on top), upgraded with
start_tls or made with ssl= (create_connection, create_server): fatal
errors reach the reader as they do on asyncio's own loop, never as a clean
end of stream, and the close_notify goes out also from behind a full write
buffer; on the engine PACT_ENGINE names."""
import asyncio
import os
import socket
import ssl
import threading
import time
import unittest
from test.test_asyncio import utils as test_utils

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')
SIZE = 8 << 20


def memory_bio_server(sock, ctx, result):
    """The peer, written as CPython's test_ssl writes it: TLS over memory
    BIOs on a blocking socket, so it can send its close_notify without
    waiting for the answer and keep reading. result gets the number of
    application bytes it read once the client's close_notify came, or the
    exception."""
    try:
        sock.settimeout(30)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_side=True)

        def receive():
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError('TCP end without a close_notify')
            incoming.write(data)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                receive()
        sock.sendall(outgoing.read())
        time.sleep(0.3)  # the client's transport fills its write buffer
        try:
            tls.unwrap()  # our close_notify; the answer is read below
        except ssl.SSLWantReadError:
            pass
        sock.sendall(outgoing.read())
        got = 0
        while True:
            try:
                got += len(tls.read(1 << 16))
            except ssl.SSLWantReadError:
                receive()
            except ssl.SSLZeroReturnError:
                break  # the client's close_notify
        result.append(got)
    except Exception as exc:
        result.append(exc)
    finally:
        sock.close()


class StartTlsErrorTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.reported = []
        self.loop.set_exception_handler(
            lambda loop, ctx: self.reported.append(ctx))

    def test_a_corrupted_record_is_an_ssl_error_not_eof(self):
        # SSLProtocol ends its transport with _force_close(exc) on a fatal
        # error (asyncio's transports have it): a pact transport without
        # it raised AttributeError inside buffer_updated, and the reader
        # saw b'' (a truncation taken for a clean end) instead of SSLError.
        a, b = socket.socketpair()
        raw = b.dup()  # the server's plain socket under its TLS
        server_ctx = test_utils.simple_server_sslcontext()

        def server():
            with server_ctx.wrap_socket(b, server_side=True) as tls:
                tls.sendall(b'hello\n')
                tls.recv(1)
                raw.sendall(b'this is not a TLS record')
        thread = threading.Thread(target=server)
        thread.start()
        self.addCleanup(raw.close)

        async def main():
            reader, writer = await asyncio.open_connection(sock=a)
            self.assertEqual(type(writer.transport).__module__, 'pact._pact')
            await writer.start_tls(test_utils.simple_client_sslcontext())
            self.assertEqual(await reader.readline(), b'hello\n')
            writer.write(b'!')
            with self.assertRaises(ssl.SSLError):
                await reader.read()
            self.assertTrue(writer.transport.is_closing())
            writer.close()
        self.loop.run_until_complete(asyncio.wait_for(main(), 30))
        thread.join(30)
        # Nothing for the exception handler (an SSLError is an OSError,
        # which SSLProtocol only logs in debug mode), as on asyncio's loop:
        # no failed protocol call.
        self.assertEqual([ctx['message'] for ctx in self.reported], [])


class StartTlsCloseTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def test_close_notify_answered_behind_a_full_write_buffer(self):
        # The peer's close_notify arrives while megabytes the client wrote
        # wait in its pact transport. SSLProtocol answers with its own
        # close_notify, held back because the transport paused its
        # writing, and closes the transport; the close_notify goes out
        # from resume_writing while the transport flushes after close(),
        # as asyncio's socket transport allows. pact's transport refused
        # writes after close() and reported no resume_writing then: the
        # peer saw the TCP end without close_notify (with ssl= on pact
        # transports, CPython's test_ssl
        # test_remote_shutdown_receives_trailing_data hung on it).
        server_ctx = test_utils.simple_server_sslcontext()
        client_ctx = test_utils.simple_client_sslcontext()
        listener = socket.create_server(('127.0.0.1', 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.addCleanup(listener.close)
        result = []

        def serve():
            conn, _ = listener.accept()
            memory_bio_server(conn, server_ctx, result)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        async def main():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            sock.setblocking(False)
            await self.loop.sock_connect(sock, listener.getsockname())
            r, w = await asyncio.open_connection(sock=sock)
            plain = w.transport
            self.assertEqual(type(plain).__module__, 'pact._pact')
            await w.start_tls(client_ctx, server_hostname='')
            w.write(b'x' * SIZE)
            self.assertGreater(plain.get_write_buffer_size(), 0)
            self.assertEqual(await r.read(), b'')  # its close_notify
            w.close()
            await w.wait_closed()
        try:
            self.loop.run_until_complete(asyncio.wait_for(main(), 30))
        finally:
            thread.join(30)
        self.assertEqual(result, [SIZE])


class SslArgumentTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def test_ssl_connections_and_servers_run_on_pact_transports(self):
        # ssl= on create_connection and create_server: asyncio's
        # SSLProtocol over a pact transport on both ends (it was asyncio's
        # own _SelectorSocketTransport on pact's readiness).
        server_ctx = test_utils.simple_server_sslcontext()
        client_ctx = test_utils.simple_client_sslcontext()
        under = []
        size = 1 << 20

        async def echo(reader, writer):
            under.append(writer.transport._ssl_protocol._transport)
            writer.write(await reader.readexactly(size))
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(echo, '127.0.0.1', 0,
                                                ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                '127.0.0.1', port, ssl=client_ctx, server_hostname='')
            under.append(writer.transport._ssl_protocol._transport)
            message = os.urandom(size)
            writer.write(message)
            self.assertEqual(await reader.readexactly(size), message)
            self.assertEqual(await reader.read(), b'')  # its close_notify
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
        self.loop.run_until_complete(asyncio.wait_for(main(), 30))
        self.assertEqual([type(t).__module__ for t in under],
                         ['pact._pact', 'pact._pact'])

    def test_peer_answering_and_closing_at_once_leaves_the_new_connection_up(self):
        # CPython's test_events test_create_ssl_connection on a busy
        # machine: connection_made writes a request, the loop is late to
        # its next wait, and by then the server has answered and closed.
        # asyncio reads the answer and the EOF behind it one iteration
        # apart and ends the connection with a call_soon after that, so
        # the connection is still up when create_connection returns:
        # get_extra_info('sockname') (asked through the SSL transport,
        # which answers None once its transport is lost) has the address.
        # pact handed answer, EOF and connection_lost over in one
        # iteration, and said None.
        def scenario(loop):
            with test_utils.run_test_server(use_ssl=True) as httpd:
                class Proto(asyncio.Protocol):
                    def connection_made(self, transport):
                        transport.write(b'GET / HTTP/1.0\r\n\r\n')
                        loop.call_soon(time.sleep, 0.2)  # a busy machine
                tr, _ = loop.run_until_complete(loop.create_connection(
                    Proto, *httpd.address,
                    ssl=test_utils.dummy_ssl_context()))
                try:
                    return tr.get_extra_info('sockname')
                finally:
                    tr.close()
                    loop.run_until_complete(asyncio.sleep(0.01))
        theirs = asyncio.SelectorEventLoop()
        try:
            self.assertIsNotNone(scenario(theirs), 'asyncio itself changed')
        finally:
            theirs.close()
        self.assertIsNotNone(scenario(self.loop))

    def test_ssl_servers_accept_in_pact(self):
        # create_server(ssl=) accepts through pact's server, as a plain
        # server does; each connection is asyncio's SSLProtocol around the
        # program's protocol. A client that does not speak TLS fails its
        # handshake: reported (debug mode, asyncio's message), the
        # connection ends, the server goes on.
        server_ctx = test_utils.simple_server_sslcontext()
        client_ctx = test_utils.simple_client_sslcontext()
        reported = []
        self.loop.set_exception_handler(lambda loop, ctx: reported.append(ctx))
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = 60

        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(echo, '127.0.0.1', 0,
                                                ssl=server_ctx)
            listening = server.sockets[0].fileno()
            self.assertIn(listening, self.loop._pact_servers)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection('127.0.0.1', port)
            writer.write(b'GET / HTTP/1.0\r\n\r\n')
            try:
                self.assertEqual(await reader.read(), b'')
            except ConnectionResetError:
                pass
            writer.close()
            for _ in range(500):
                if reported:
                    break
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection(
                '127.0.0.1', port, ssl=client_ctx, server_hostname='')
            writer.write(b'hello\n')
            self.assertEqual(await reader.readline(), b'hello\n')
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
        self.loop.run_until_complete(asyncio.wait_for(main(), 30))
        self.assertEqual(
            [c['message'] for c in reported],
            ['Error on transport creation for incoming connection'])
        self.assertIsInstance(reported[0]['exception'], ssl.SSLError)


if __name__ == '__main__':
    unittest.main()
