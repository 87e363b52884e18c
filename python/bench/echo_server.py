# SPDX-License-Identifier: MIT
"""uvloop's own echo benchmark server (python3-uvloop's
examples/bench/echoserver.py), run unchanged on the loop named by --loop.

    echo_server.py --loop asyncio|uvloop|pact-uring|pact-epoll -- ARGS

ARGS go to echoserver.py (--proto, --streams, --buffered, --addr H:P; none
of them: loop.sock_recv/sock_sendall). echoserver.py makes its loop with
asyncio.new_event_loop() (or uvloop.new_event_loop() with --uvloop), so the
wrapper only points that at the loop under test."""
import argparse
import asyncio
import os
import runpy
import sys

ECHOSERVER = os.environ.get(
    'UVLOOP_ECHOSERVER',
    '/usr/share/doc/python3-uvloop/examples/bench/echoserver.py')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--loop', required=True,
                   choices=('asyncio', 'uvloop', 'pact-uring', 'pact-epoll'))
    p.add_argument('args', nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = [x for x in a.args if x != '--']
    if a.loop == 'uvloop':
        import uvloop
        asyncio.new_event_loop = uvloop.new_event_loop
    elif a.loop.startswith('pact-'):
        import pact.asyncio
        engine = a.loop[5:]
        asyncio.new_event_loop = lambda: pact.asyncio.new_event_loop(engine=engine)
    sys.argv = [ECHOSERVER] + args
    # The server prints a few lines at start; keep them off the bench's
    # output, a ready line on stderr is what the runner waits for.
    sys.stdout = open(os.devnull, 'w')
    runpy.run_path(ECHOSERVER, run_name='__main__')


if __name__ == '__main__':
    main()
