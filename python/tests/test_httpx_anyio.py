# SPDX-License-Identifier: MIT
"""httpx's AsyncClient through anyio (Debian's python3-httpx and
python3-anyio, unchanged) on pact.asyncio, chosen the way anyio offers:
anyio.run(..., backend_options={'policy': pact.asyncio.EventLoopPolicy()}).
httpx talks to the aiohttp application of webapp.py (plain HTTP and TLS)
served by the same pact loop; anyio's own sockets, threads and
subprocesses run on it too. On the engine PACT_ENGINE names."""
import asyncio
import hashlib
import os
import sys
import unittest
from test.test_asyncio import utils as test_utils

import anyio
import httpx

import pact.asyncio as pa
from webapp import pattern, start_site


def run_on_pact(func):
    """anyio.run on a pact loop (the policy picks the engine PACT_ENGINE
    names); asyncio's own policy is back afterwards."""
    try:
        return anyio.run(func, backend='asyncio',
                         backend_options={'policy': pa.EventLoopPolicy()})
    finally:
        asyncio.set_event_loop_policy(None)


class HttpxThroughAnyioTests(unittest.TestCase):
    def check_loop(self):
        loop = asyncio.get_running_loop()
        self.assertIsInstance(loop, pa.Loop)
        engine = os.environ.get('PACT_ENGINE')
        if engine in ('uring', 'epoll'):
            self.assertEqual(loop.engine, engine)

    def test_requests_streams_and_keep_alive(self):
        async def main():
            self.check_loop()
            runner, base = await start_site()
            try:
                async with httpx.AsyncClient(base_url=base) as client:
                    ports = set()
                    for i in range(10):
                        r = await client.get('/hello', params={'i': i})
                        self.assertEqual(r.status_code, 200)
                        got = r.json()
                        self.assertEqual(got['query'], {'i': str(i)})
                        self.assertEqual(got['transport'], 'pact._pact')
                        ports.add(got['peer_port'])
                    self.assertEqual(len(ports), 1)  # one kept-alive connection
                    for seed, size in enumerate((0, 1, 1000, 1 << 20)):
                        data = pattern(size, seed)
                        r = await client.post('/echo', content=data)
                        self.assertEqual(r.content, data)
                    # A streamed upload (an async iterator: chunked) ...
                    data = pattern(3 << 20, 5)

                    async def body():
                        for off in range(0, len(data), 50000):
                            yield data[off:off + 50000]
                    r = await client.post('/upload', content=body())
                    self.assertEqual(r.json(), {
                        'size': len(data), 'chunked': True,
                        'sha256': hashlib.sha256(data).hexdigest()})
                    # ... and a streamed download, read as it comes.
                    received = bytearray()
                    async with client.stream('GET', '/download', params={
                            'size': 3 << 20, 'piece': 7777,
                            'seed': 6}) as r:
                        self.assertEqual(r.headers['transfer-encoding'],
                                         'chunked')
                        async for chunk in r.aiter_bytes():
                            received += chunk
                    self.assertEqual(bytes(received), pattern(3 << 20, 6))
            finally:
                await runner.cleanup()
        run_on_pact(main)

    def test_https_with_concurrent_requests(self):
        # TLS: aiohttp's server with ssl= (asyncio's SSLProtocol, today on
        # asyncio's socket transport over pact readiness), httpx's client
        # through anyio's TLS stream over a pact transport.
        async def main():
            self.check_loop()
            runner, base = await start_site(
                test_utils.simple_server_sslcontext())
            try:
                async with httpx.AsyncClient(
                        base_url=base,
                        verify=test_utils.simple_client_sslcontext()) as client:
                    results = {}

                    async def fetch(i):
                        r = await client.post('/echo',
                                              content=pattern(20000 * i, i))
                        results[i] = r.content
                    async with anyio.create_task_group() as tg:
                        for i in range(20):
                            tg.start_soon(fetch, i)
                    self.assertEqual(results, {
                        i: pattern(20000 * i, i) for i in range(20)})
            finally:
                await runner.cleanup()
        run_on_pact(main)

    def test_anyio_sockets_threads_and_processes(self):
        async def main():
            self.check_loop()
            # anyio's listener (sock_accept, connect_accepted_socket) and
            # its client stream (create_connection).
            listener = await anyio.create_tcp_listener(local_host='127.0.0.1')
            port = listener.extra(anyio.abc.SocketAttribute.local_port)

            async def serve(stream):
                async with stream:
                    async for chunk in stream:
                        await stream.send(chunk[::-1])
            data = pattern(100000, 9)
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, serve)
                async with await anyio.connect_tcp('127.0.0.1', port) as c:
                    for off in range(0, len(data), 1000):
                        await c.send(data[off:off + 1000])
                        got = b''
                        while len(got) < 1000:
                            got += await c.receive()
                        self.assertEqual(got, data[off:off + 1000][::-1])
                tg.cancel_scope.cancel()
            await listener.aclose()
            # A worker thread, and a subprocess through the policy's child
            # watcher.
            self.assertEqual(
                await anyio.to_thread.run_sync(sum, range(1000)), 499500)
            result = await anyio.run_process(
                [sys.executable, '-c',
                 'import sys; sys.stdout.write(sys.stdin.read().upper())'],
                input=b'through anyio')
            self.assertEqual(result.returncode, 0)
            self.assertEqual(result.stdout, b'THROUGH ANYIO')
        run_on_pact(main)


if __name__ == '__main__':
    unittest.main()
