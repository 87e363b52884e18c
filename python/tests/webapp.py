# SPDX-License-Identifier: MIT
"""The aiohttp web application the real-library tests talk to (aiohttp's
server, unchanged): JSON about the request, an echo, a streamed upload and
a streamed (chunked) download, a websocket echo."""
import hashlib
import socket

import aiohttp
from aiohttp import web


def pattern(n, seed):
    # Deterministic bytes that differ per offset and per seed, so a chunk
    # lost, doubled or reordered anywhere shows in the comparison.
    block = hashlib.sha256(b'%d' % seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def transport_module(request):
    return type(request.transport).__module__


async def hello(request):
    peer_port = request.transport.get_extra_info('peername')[1]
    return web.json_response({'path': request.path,
                              'query': dict(request.query),
                              'peer_port': peer_port,
                              'transport': transport_module(request)})


async def echo(request):
    body = await request.read()
    return web.Response(body=body, content_type='application/octet-stream')


async def upload(request):
    # Reads the streamed (chunked) request body piece by piece.
    digest = hashlib.sha256()
    size = 0
    chunks = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
    return web.json_response({'size': size, 'sha256': digest.hexdigest(),
                              'chunked': request.headers.get(
                                  'Transfer-Encoding') == 'chunked'})


async def download(request):
    # A streamed response: chunked transfer, written piece by piece with
    # a drain (flow control) after each.
    size = int(request.query['size'])
    piece = int(request.query['piece'])
    data = pattern(size, int(request.query['seed']))
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    resp.content_type = 'application/octet-stream'
    await resp.prepare(request)
    for off in range(0, size, piece):
        await resp.write(data[off:off + piece])
    await resp.write_eof()
    return resp


async def websocket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == 'close please':
                await ws.close(code=4001, message=b'asked to')
                break
            await ws.send_str(msg.data[::-1])
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(hashlib.sha256(msg.data).digest() + msg.data)
    return ws


def make_app():
    app = web.Application(client_max_size=8 << 20)
    app.router.add_get('/hello', hello)
    app.router.add_post('/echo', echo)
    app.router.add_post('/upload', upload)
    app.router.add_get('/download', download)
    app.router.add_get('/ws', websocket)
    return app


async def start_site(ssl_context=None):
    """Serves make_app() on 127.0.0.1 (a port of its own); answers the
    AppRunner (await runner.cleanup() to stop) and the base URL."""
    runner = web.AppRunner(make_app())
    await runner.setup()
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    scheme = 'https' if ssl_context else 'http'
    return runner, '%s://127.0.0.1:%d' % (scheme, sock.getsockname()[1])
