# SPDX-License-Identifier: MIT
"""websockets (Debian's python3-websockets, unchanged) on pact.asyncio: its
server and client in one pact loop, over TCP and a Unix socket; text and
binary messages echoed (fragmented and large ones too), ping/pong, and the
close codes and reasons each side sees; on the engine PACT_ENGINE names."""
import asyncio
import hashlib
import os
import tempfile
import unittest

import websockets

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')
BIG = 4 << 20  # max_size: the largest message echoed, with room


def pattern(n, seed):
    block = hashlib.sha256(b'%d' % seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


class WebsocketsTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.errors = []
        self.loop.set_exception_handler(
            lambda loop, ctx: self.errors.append(ctx))
        # What the server saw when each connection ended: close code,
        # reason, and the transport's class (a pact transport).
        self.server_saw = []

    def run_main(self, coro, timeout=60):
        self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
        self.assertEqual(self.errors, [])

    async def handler(self, ws, path=None):
        try:
            async for message in ws:
                if isinstance(message, str):
                    if message.startswith('close '):
                        code = int(message.split()[1])
                        await ws.close(code=code, reason='server says ' +
                                       message.split()[1])
                        break
                    await ws.send(message[::-1])
                else:
                    await ws.send(hashlib.sha256(message).digest() + message)
        except websockets.ConnectionClosed:
            pass  # a close code other than 1000/1001: recorded below
        finally:
            sent = ws.close_sent.code if ws.close_sent else None
            self.server_saw.append((ws.close_code, ws.close_reason, sent,
                                    type(ws.transport).__module__))

    async def exchange(self, ws):
        self.assertEqual(type(ws.transport).__module__, 'pact._pact')
        for i in range(100):
            text = 'text %d ✓' % i
            await ws.send(text)
            self.assertEqual(await ws.recv(), text[::-1])
        for seed, size in enumerate((0, 1, 125, 126, 65535, 65536, 1 << 20)):
            data = pattern(size, seed)
            await ws.send(data)
            self.assertEqual(await ws.recv(),
                             hashlib.sha256(data).digest() + data)
        # A fragmented message: sent frame by frame, received whole.
        pieces = [pattern(10000, 100 + i) for i in range(10)]
        await ws.send(iter(pieces))
        whole = b''.join(pieces)
        self.assertEqual(await ws.recv(), hashlib.sha256(whole).digest() + whole)
        latency = await asyncio.wait_for(await ws.ping(b'are you there'), 10)
        self.assertGreaterEqual(latency, 0)

    def test_tcp_echo_and_the_client_closes_with_a_code(self):
        async def main():
            async with websockets.serve(self.handler, '127.0.0.1', 0,
                                        max_size=BIG) as srv:
                port = srv.sockets[0].getsockname()[1]
                async with websockets.connect(
                        'ws://127.0.0.1:%d/echo' % port, max_size=BIG) as ws:
                    await self.exchange(ws)
                    await ws.close(code=4002, reason='client done')
                    self.assertEqual(ws.close_code, 4002)
                    self.assertEqual(ws.close_reason, 'client done')
                while not self.server_saw:
                    await asyncio.sleep(0.001)
            self.assertEqual(self.server_saw,
                             [(4002, 'client done', 4002, 'pact._pact')])
        self.run_main(main())

    def test_the_server_closes_with_a_code(self):
        async def main():
            async with websockets.serve(self.handler, '127.0.0.1', 0,
                                        max_size=BIG) as srv:
                port = srv.sockets[0].getsockname()[1]
                async with websockets.connect(
                        'ws://127.0.0.1:%d/' % port) as ws:
                    await ws.send('hello')
                    self.assertEqual(await ws.recv(), 'olleh')
                    await ws.send('close 4321')
                    with self.assertRaises(websockets.ConnectionClosed) as cm:
                        await ws.recv()
                    self.assertEqual(cm.exception.rcvd.code, 4321)
                    self.assertEqual(cm.exception.rcvd.reason,
                                     'server says 4321')
                    self.assertEqual(ws.close_code, 4321)
                while not self.server_saw:
                    await asyncio.sleep(0.001)
            self.assertEqual(self.server_saw,
                             [(4321, 'server says 4321', 4321, 'pact._pact')])
        self.run_main(main())

    def test_a_message_too_big_closes_with_1009(self):
        async def main():
            async with websockets.serve(self.handler, '127.0.0.1', 0,
                                        max_size=1 << 16) as srv:
                port = srv.sockets[0].getsockname()[1]
                async with websockets.connect(
                        'ws://127.0.0.1:%d/' % port) as ws:
                    await ws.send(pattern(1 << 16, 1))  # just fits
                    self.assertEqual(len(await ws.recv()), 32 + (1 << 16))
                    await ws.send(pattern((1 << 16) + 1, 2))
                    with self.assertRaises(
                            websockets.ConnectionClosedError) as cm:
                        await ws.recv()
                    self.assertEqual(cm.exception.rcvd.code, 1009)
                while not self.server_saw:
                    await asyncio.sleep(0.001)
            # The server failed the connection: it sent 1009 and closed
            # without waiting for the client's answer (1006: none came).
            self.assertEqual(self.server_saw,
                             [(1006, '', 1009, 'pact._pact')])
        self.run_main(main())

    def test_unix_socket_echo(self):
        path = os.path.join(tempfile.mkdtemp(), 'ws.sock')
        self.addCleanup(os.rmdir, os.path.dirname(path))
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))

        async def main():
            async with websockets.unix_serve(self.handler, path,
                                             max_size=BIG):
                async with websockets.unix_connect(
                        path, 'ws://localhost/unix', max_size=BIG) as ws:
                    await self.exchange(ws)
                while not self.server_saw:
                    await asyncio.sleep(0.001)
            self.assertEqual(self.server_saw, [(1000, '', 1000, 'pact._pact')])
        self.run_main(main())


if __name__ == '__main__':
    unittest.main()
