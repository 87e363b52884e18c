# SPDX-License-Identifier: MIT
"""Stream transports: create_server / create_connection on pact transports
(asyncio.Transport subclasses), streams, TLS through asyncio's SSLProtocol,
buffered protocols, pause/resume without loss, flow control; on the engine
PACT_ENGINE names."""
import asyncio
import os
import socket
import ssl
import unittest
from test.test_asyncio import utils as test_utils

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class TransportTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def run_main(self, coro, timeout=30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def test_echo_server_and_client(self):
        async def main():
            srv = await self.loop.create_server(Echo, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port)
            tr = w.transport
            self.assertIsInstance(tr, asyncio.Transport)
            self.assertEqual(type(tr).__module__, 'pact._pact')
            self.assertEqual(w.get_extra_info('peername'), ('127.0.0.1', port))
            sock = w.get_extra_info('socket')
            # aiohttp sets TCP_NODELAY through it; asyncio sets it already.
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP,
                                             socket.TCP_NODELAY), 1)
            tr.patched = 'yes'  # tests and libraries patch transports
            self.assertEqual(tr.__dict__, {'patched': 'yes'})
            for i in range(10):
                w.write(b'line %d\n' % i)
                self.assertEqual(await r.readline(), b'line %d\n' % i)
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            self.assertEqual(srv.sockets, ())
        self.run_main(main())

    def test_large_transfer_is_exact(self):
        async def main():
            srv = await self.loop.create_server(Echo, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port)
            data = os.urandom(8 << 20)
            w.write(data)
            got = await r.readexactly(len(data))
            self.assertEqual(got, data)
            w.close()
            srv.close()
            await srv.wait_closed()
        self.run_main(main())

    def test_pause_and_resume_reading_every_ms_loses_nothing(self):
        # A server pausing and resuming reading every millisecond while the
        # client streams; every byte must arrive once and in order.
        total = 4 << 20
        received = bytearray()
        done = self.loop.create_future()

        class Pauser(asyncio.Protocol):
            def connection_made(p, transport):
                p.transport = transport
                p.toggle = self.loop.call_later(0.001, p.flip)

            def flip(p):
                if p.transport.is_reading():
                    p.transport.pause_reading()
                else:
                    p.transport.resume_reading()
                if not done.done():
                    p.toggle = self.loop.call_later(0.001, p.flip)

            def data_received(p, data):
                self.assertTrue(p.transport.is_reading())
                received.extend(data)
                if len(received) >= total and not done.done():
                    done.set_result(None)

        async def main():
            srv = await self.loop.create_server(Pauser, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            _, w = await asyncio.open_connection('127.0.0.1', port)
            data = bytes(i % 251 for i in range(total))
            for off in range(0, total, 16384):
                w.write(data[off:off + 16384])
                await w.drain()
            await done
            self.assertEqual(bytes(received), data)
            w.close()
            srv.close()
            await srv.wait_closed()
        self.run_main(main(), timeout=60)

    def test_flow_control_pauses_and_resumes_the_protocol(self):
        events = []

        class Writer(asyncio.Protocol):
            def connection_made(p, transport):
                p.transport = transport
                transport.set_write_buffer_limits(high=4096)
                self.assertEqual(transport.get_write_buffer_limits(), (1024, 4096))

            def pause_writing(p):
                events.append('pause')

            def resume_writing(p):
                events.append('resume')

        async def main():
            a, b = socket.socketpair()
            b.setblocking(False)
            tr, _ = await self.loop.create_connection(Writer, sock=a)
            chunk = b'x' * (1 << 20)
            tr.write(chunk)  # more than the socket takes at once
            self.assertEqual(events, ['pause'])
            self.assertGreater(tr.get_write_buffer_size(), 0)
            got = 0
            while got < len(chunk):
                got += len(await self.loop.sock_recv(b, 1 << 20))
            for _ in range(5):
                await asyncio.sleep(0)
            self.assertEqual(events, ['pause', 'resume'])
            self.assertEqual(tr.get_write_buffer_size(), 0)
            tr.close()
            b.close()
        self.run_main(main())

    def test_eof_close_and_connection_lost(self):
        log = []
        lost = self.loop.create_future()

        class Recorder(asyncio.Protocol):
            def connection_made(p, transport):
                log.append('made')

            def data_received(p, data):
                log.append(data)

            def eof_received(p):
                log.append('eof')

            def connection_lost(p, exc):
                log.append(('lost', exc))
                lost.set_result(None)

        async def main():
            a, b = socket.socketpair()
            tr, _ = await self.loop.create_connection(Recorder, sock=a)
            b.sendall(b'hi')
            b.shutdown(socket.SHUT_WR)
            await lost
            b.close()
            self.assertTrue(tr.is_closing())
        self.run_main(main())
        self.assertEqual(log, ['made', b'hi', 'eof', ('lost', None)])

    def test_peer_reset_is_reported(self):
        lost = self.loop.create_future()

        class Recorder(asyncio.Protocol):
            def connection_lost(p, exc):
                lost.set_result(exc)

        async def main():
            srv = socket.socket()
            srv.bind(('127.0.0.1', 0))
            srv.listen()
            tr, _ = await self.loop.create_connection(
                Recorder, *srv.getsockname())
            conn, _ = srv.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b'\x01\x00\x00\x00\x00\x00\x00\x00')
            conn.close()  # RST
            srv.close()
            return await lost
        exc = self.run_main(main())
        self.assertIsInstance(exc, ConnectionResetError)

    def test_buffered_protocol(self):
        class Buffered(asyncio.BufferedProtocol):
            def __init__(p):
                p.buf = bytearray(7)  # small: many get_buffer calls
                p.data = bytearray()
                p.done = self.loop.create_future()

            def get_buffer(p, sizehint):
                return p.buf

            def buffer_updated(p, nbytes):
                p.data += p.buf[:nbytes]

            def eof_received(p):
                p.done.set_result(bytes(p.data))

        async def main():
            a, b = socket.socketpair()
            tr, proto = await self.loop.create_connection(Buffered, sock=a)
            payload = os.urandom(100000)
            b.sendall(payload)
            b.shutdown(socket.SHUT_WR)
            got = await proto.done
            b.close()
            tr.close()
            return got == payload
        self.assertTrue(self.run_main(main()))

    def test_protocol_error_goes_to_the_exception_handler(self):
        contexts = []
        self.loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        lost = self.loop.create_future()

        class Broken(asyncio.Protocol):
            def data_received(p, data):
                raise ValueError('bad data')

            def connection_lost(p, exc):
                lost.set_result(exc)

        async def main():
            a, b = socket.socketpair()
            await self.loop.create_connection(Broken, sock=a)
            b.sendall(b'x')
            await lost
            b.close()
        self.run_main(main())
        self.assertEqual(len(contexts), 1)
        self.assertIsInstance(contexts[0]['exception'], ValueError)

    def test_tls_through_create_server_and_create_connection(self):
        server_ctx = test_utils.simple_server_sslcontext()
        client_ctx = test_utils.simple_client_sslcontext()

        async def main():
            srv = await self.loop.create_server(Echo, '127.0.0.1', 0,
                                                ssl=server_ctx)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection('127.0.0.1', port,
                                                 ssl=client_ctx)
            self.assertIsNotNone(w.get_extra_info('ssl_object'))
            data = os.urandom(1 << 20)
            w.write(data)
            self.assertEqual(await r.readexactly(len(data)), data)
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
        self.run_main(main())

    def test_unix_server(self):
        import tempfile
        path = os.path.join(tempfile.mkdtemp(), 'sock')

        async def main():
            srv = await self.loop.create_unix_server(Echo, path)
            r, w = await asyncio.open_unix_connection(path)
            w.write(b'unix\n')
            self.assertEqual(await r.readline(), b'unix\n')
            w.close()
            srv.close()
            await srv.wait_closed()
        self.run_main(main())
        os.unlink(path)
        os.rmdir(os.path.dirname(path))

    def test_loop_close_with_a_transport_open(self):
        lost = []

        class Recorder(asyncio.Protocol):
            def connection_lost(p, exc):
                lost.append(exc)

        async def main():
            a, b = socket.socketpair()
            await self.loop.create_connection(Recorder, sock=a)
            return b
        b = self.run_main(main())
        self.loop.close()  # pact closes the transport: connection_lost once
        b.close()
        self.assertEqual(len(lost), 1)


class PipeAndDatagramTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def run_main(self, coro, timeout=30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def test_read_pipe(self):
        r, w = os.pipe()
        got = bytearray()
        done = self.loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(p, data):
                got.extend(data)

            def eof_received(p):
                pass

            def connection_lost(p, exc):
                done.set_result(exc)

        async def main():
            rpipe = open(r, 'rb', buffering=0)
            tr, _ = await self.loop.connect_read_pipe(Reader, rpipe)
            self.assertIs(tr.get_extra_info('pipe'), rpipe)
            os.write(w, b'through a pipe')
            os.close(w)
            exc = await done
            self.assertTrue(rpipe.closed)  # the transport closes its pipe
            return exc
        self.assertIsNone(self.run_main(main()))
        self.assertEqual(bytes(got), b'through a pipe')

    def test_write_pipe_writes_at_once(self):
        # asyncio code writes and then blocks reading the other end in the
        # same callback: the write must have reached the pipe already.
        r, w = os.pipe()

        async def main():
            wpipe = open(w, 'wb', buffering=0)
            tr, _ = await self.loop.connect_write_pipe(asyncio.Protocol, wpipe)
            tr.write(b'now')
            data = os.read(r, 100)  # would block forever if it waited
            tr.close()
            await asyncio.sleep(0.01)
            self.assertTrue(wpipe.closed)
            return data
        self.assertEqual(self.run_main(main()), b'now')
        os.close(r)

    def test_write_pipe_sees_the_reader_go_away(self):
        rsock, wsock = socket.socketpair()
        lost = self.loop.create_future()

        class Writer(asyncio.Protocol):
            def connection_lost(p, exc):
                lost.set_result(exc)

        async def main():
            wpipe = open(wsock.detach(), 'wb', buffering=0)
            tr, _ = await self.loop.connect_write_pipe(Writer, wpipe)
            rsock.close()
            return await lost
        self.assertIsNone(self.run_main(main()))

    def test_datagram_endpoint_echo(self):
        class EchoDatagram(asyncio.DatagramProtocol):
            def connection_made(p, transport):
                p.transport = transport

            def datagram_received(p, data, addr):
                p.transport.sendto(data.upper(), addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(p):
                p.got = self.loop.create_future()

            def datagram_received(p, data, addr):
                p.got.set_result(data)

        async def main():
            srv, _ = await self.loop.create_datagram_endpoint(
                EchoDatagram, local_addr=('127.0.0.1', 0))
            addr = srv.get_extra_info('sockname')
            cli, proto = await self.loop.create_datagram_endpoint(
                Client, remote_addr=addr)
            self.assertEqual(cli.get_extra_info('peername'), addr)
            cli.sendto(b'ping')
            data = await proto.got
            cli.close()
            srv.close()
            await asyncio.sleep(0)  # connection_lost runs from call_soon
            return data
        self.assertEqual(self.run_main(main()), b'PING')


class SubprocessTests(unittest.TestCase):
    def test_subprocess_pipes_and_exit_status(self):
        async def main():
            p = await asyncio.create_subprocess_exec(
                'sh', '-c', 'cat; echo err >&2; exit 3',
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await p.communicate(b'to the child')
            return type(asyncio.get_running_loop()), out, err, p.returncode
        self.assertEqual(pa.run(main()),
                         (pa.Loop, b'to the child', b'err\n', 3))


if __name__ == '__main__':
    unittest.main()
