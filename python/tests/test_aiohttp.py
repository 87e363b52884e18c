# SPDX-License-Identifier: MIT
"""aiohttp (Debian's python3-aiohttp, unchanged) on pact.asyncio: its web
server and its client in one pact loop over loopback, every exchange
checked end to end: several requests on one kept-alive connection, bodies
streamed both ways (chunked), a websocket; on the engine PACT_ENGINE names."""
import asyncio
import hashlib
import io
import os
import unittest

import aiohttp

import pact.asyncio as pa
from webapp import pattern, start_site

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class AiohttpTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.loop.set_exception_handler(self.unexpected_error)
        self.errors = []

    def unexpected_error(self, loop, context):
        self.errors.append(context)
        loop.default_exception_handler(context)

    def run_main(self, coro, timeout=60):
        self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
        self.assertEqual(self.errors, [])

    async def start_server(self):
        runner, self.base = await start_site()
        return runner

    def test_requests_share_one_kept_alive_connection(self):
        async def main():
            runner = await self.start_server()
            try:
                created = []

                async def on_create(session, ctx, params):
                    created.append(params)

                trace = aiohttp.TraceConfig()
                trace.on_connection_create_end.append(on_create)
                conn = aiohttp.TCPConnector(limit=1)
                async with aiohttp.ClientSession(
                        connector=conn, trace_configs=[trace]) as session:
                    ports = set()
                    for i in range(20):
                        async with session.get(self.base + '/hello',
                                               params={'i': str(i)}) as resp:
                            self.assertEqual(resp.status, 200)
                            self.assertNotIn('close', resp.headers.get(
                                'Connection', '').lower())
                            got = await resp.json()
                        self.assertEqual(got['path'], '/hello')
                        self.assertEqual(got['query'], {'i': str(i)})
                        self.assertEqual(got['transport'], 'pact._pact')
                        ports.add(got['peer_port'])
                    # One connection carried all twenty requests.
                    self.assertEqual(len(ports), 1)
                    self.assertEqual(len(created), 1)
            finally:
                await runner.cleanup()
        self.run_main(main())

    def test_bodies_of_many_sizes_echo_exactly(self):
        async def main():
            runner = await self.start_server()
            try:
                async with aiohttp.ClientSession() as session:
                    for seed, size in enumerate((0, 1, 100, 65535, 65536,
                                                 1 << 20, 3 << 20)):
                        data = pattern(size, seed)
                        # aiohttp warns about bytes over 1 MiB: a file-like
                        # body is what it asks for.
                        body = io.BytesIO(data) if size > 1 << 20 else data
                        async with session.post(self.base + '/echo',
                                                data=body) as resp:
                            self.assertEqual(resp.status, 200)
                            self.assertEqual(resp.content_length, size)
                            self.assertEqual(await resp.read(), data)
            finally:
                await runner.cleanup()
        self.run_main(main())

    def test_streamed_upload_and_download(self):
        size = 4 << 20

        async def body(data, piece):
            for off in range(0, len(data), piece):
                yield data[off:off + piece]
                if off % (piece * 16) == 0:
                    await asyncio.sleep(0)

        async def main():
            runner = await self.start_server()
            try:
                async with aiohttp.ClientSession() as session:
                    # Upload: an async generator body goes out chunked.
                    data = pattern(size, 7)
                    async with session.post(self.base + '/upload',
                                            data=body(data, 10000)) as resp:
                        got = await resp.json()
                    self.assertEqual(got, {
                        'size': size, 'chunked': True,
                        'sha256': hashlib.sha256(data).hexdigest()})
                    # Download: read the chunked response as it streams.
                    async with session.get(self.base + '/download', params={
                            'size': str(size), 'piece': '12345',
                            'seed': '8'}) as resp:
                        self.assertEqual(resp.headers['Transfer-Encoding'],
                                         'chunked')
                        # The client side is a pact transport too.
                        self.assertEqual(type(resp.connection.transport)
                                         .__module__, 'pact._pact')
                        received = bytearray()
                        pieces = 0
                        async for chunk in resp.content.iter_chunked(4096):
                            received += chunk
                            pieces += 1
                    self.assertGreater(pieces, 1)
                    self.assertEqual(len(received), size)
                    self.assertEqual(bytes(received), pattern(size, 8))
            finally:
                await runner.cleanup()
        self.run_main(main())

    def test_websocket_text_binary_and_close_code(self):
        async def main():
            runner = await self.start_server()
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.ws_connect(self.base + '/ws') as ws:
                        for i in range(50):
                            text = 'message %d ünïcode' % i
                            await ws.send_str(text)
                            self.assertEqual(await ws.receive_str(),
                                             text[::-1])
                        for seed, size in enumerate((1, 125, 126, 65535,
                                                     65536, 1 << 20)):
                            data = pattern(size, seed)
                            await ws.send_bytes(data)
                            got = await ws.receive_bytes()
                            self.assertEqual(
                                got, hashlib.sha256(data).digest() + data)
                        await ws.send_str('close please')
                        msg = await ws.receive()
                        self.assertEqual(msg.type, aiohttp.WSMsgType.CLOSE)
                        self.assertEqual(msg.data, 4001)
                        self.assertEqual(msg.extra, 'asked to')
                        await ws.close()
                    self.assertEqual(ws.close_code, 4001)
            finally:
                await runner.cleanup()
        self.run_main(main())

    def test_runs_unchanged_under_the_policy(self):
        # aiohttp's own entry points pick the loop up from asyncio: with
        # pact's policy installed, asyncio.run() gives them a pact loop.
        async def main():
            self.assertIsInstance(asyncio.get_running_loop(), pa.Loop)
            runner = await self.start_server()
            try:
                async with aiohttp.ClientSession() as session:
                    results = await asyncio.gather(*[
                        session.post(self.base + '/echo', data=pattern(
                            1000 * i, i)) for i in range(30)])
                    for i, resp in enumerate(results):
                        self.assertEqual(await resp.read(),
                                         pattern(1000 * i, i))
                        resp.release()
            finally:
                await runner.cleanup()
        asyncio.set_event_loop_policy(pa.EventLoopPolicy())
        self.addCleanup(asyncio.set_event_loop_policy, None)
        asyncio.run(asyncio.wait_for(main(), 60))


if __name__ == '__main__':
    unittest.main()
