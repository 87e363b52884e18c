# SPDX-License-Identifier: MIT
"""An asyncio event loop on pact's C core (io_uring, or epoll).

    import pact.asyncio
    pact.asyncio.run(main())          # like asyncio.run(), on a pact loop
    pact.asyncio.install()            # asyncio.new_event_loop() gives pact loops

    loop = pact.asyncio.new_event_loop(engine="epoll")
    loop.engine, loop.engine_reason   # 'uring' or 'epoll', and why not io_uring
"""
import asyncio as _asyncio

from ._loop import Loop

__all__ = ('Loop', 'new_event_loop', 'EventLoopPolicy', 'install', 'run')


def new_event_loop(*, engine='auto'):
    """A new pact loop. engine: 'auto' (io_uring if it can be set up, else
    epoll; the PACT_ENGINE environment variable can force one), 'uring' or
    'epoll'."""
    return Loop(engine=engine)


class EventLoopPolicy(_asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy with pact loops: child watchers and the
    rest of the policy still answer as asyncio's do."""
    _loop_factory = Loop

    def __repr__(self):
        return '<pact.asyncio.EventLoopPolicy>'


def install():
    """Makes asyncio create pact loops (asyncio.new_event_loop(),
    asyncio.run(), asyncio.Runner)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """asyncio.run(main) on a new pact loop."""
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
