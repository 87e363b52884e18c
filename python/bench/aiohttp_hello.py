# SPDX-License-Identifier: MIT
"""aiohttp hello-world for `make bench` (run under wrk).

    aiohttp_hello.py --loop asyncio|uvloop|pact-uring|pact-epoll --port P

One GET / route answering "Hello, World!" as text, no access log (the
benchmark measures the loop and aiohttp, not logging)."""
import argparse
import asyncio
import sys

from aiohttp import web


async def hello(request):
    return web.Response(text='Hello, World!')


def make_loop(name):
    if name == 'uvloop':
        import uvloop
        return uvloop.new_event_loop()
    if name.startswith('pact-'):
        import pact.asyncio
        return pact.asyncio.new_event_loop(engine=name[5:])
    return asyncio.new_event_loop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--loop', required=True,
                   choices=('asyncio', 'uvloop', 'pact-uring', 'pact-epoll'))
    p.add_argument('--port', type=int, required=True)
    a = p.parse_args()
    loop = make_loop(a.loop)
    asyncio.set_event_loop(loop)
    app = web.Application()
    app.router.add_get('/', hello)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, '127.0.0.1', a.port, backlog=1024)
    loop.run_until_complete(site.start())
    print('ready', file=sys.stderr, flush=True)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(runner.cleanup())
        loop.close()


if __name__ == '__main__':
    main()
