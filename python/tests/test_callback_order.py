# SPDX-License-Identifier: MIT
"""The order of callbacks a program can observe, on pact.asyncio (the
engine PACT_ENGINE names) and on asyncio's own selector loop, which is the
reference: every test runs its scenario on both and wants the same list,
and the list asyncio gives (so a change in either shows).

Around a transport's end (docs/contract.md §6, §8): close() with nothing left to send, abort() and
_force_close() schedule connection_lost with call_soon, so handles queued
before the call run before it and handles queued after it run after it;
close() with writes queued sends them first and calls connection_lost
when the last is out. For stream sockets, datagram sockets, read and write
pipes."""
import asyncio
import os
import socket
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class Recorder(asyncio.Protocol):
    def __init__(self, log):
        self.log = log

    def data_received(self, data):
        self.log.append('data')

    def connection_lost(self, exc):
        self.log.append('lost' if exc is None else 'lost:' + type(exc).__name__)


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, log):
        self.log = log

    def connection_lost(self, exc):
        self.log.append('lost' if exc is None else 'lost:' + type(exc).__name__)


async def stream_transport(loop, log, keep):
    a, b = socket.socketpair()
    keep.append(b)
    tr, _ = await loop.create_unix_connection(lambda: Recorder(log), sock=a)
    return tr, b


async def datagram_transport(loop, log, keep):
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keep.append(b)
    b.bind(('127.0.0.1', 0))
    tr, _ = await loop.create_datagram_endpoint(
        lambda: DatagramRecorder(log), remote_addr=b.getsockname())
    return tr, b


async def read_pipe_transport(loop, log, keep):
    r, w = os.pipe()
    keep.append(os.fdopen(w, 'wb', 0))
    tr, _ = await loop.connect_read_pipe(lambda: Recorder(log),
                                         os.fdopen(r, 'rb', 0))
    return tr, None  # nothing to read on the peer's end


async def write_pipe_transport(loop, log, keep):
    r, w = os.pipe()
    keep.append(os.fdopen(r, 'rb', 0))
    tr, _ = await loop.connect_write_pipe(lambda: Recorder(log),
                                          os.fdopen(w, 'wb', 0))
    return tr, keep[-1]


def drain(peer):
    """Reads what waits on the peer's end (a socket or a pipe)."""
    if peer is None:
        return
    fd = peer.fileno()
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 1 << 20):
            pass
    except BlockingIOError:
        pass


def run(loop, coro):
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class CallbackOrderTests(unittest.TestCase):
    def on_both(self, scenario):
        """scenario(loop) on asyncio's selector loop and on pact's; the
        log from each."""
        return (run(asyncio.SelectorEventLoop(), scenario()),
                run(pa.Loop(engine=ENGINE), scenario()))

    def assert_order(self, scenario, expected):
        theirs, ours = self.on_both(scenario)
        self.assertEqual(theirs, expected, 'asyncio itself changed')
        self.assertEqual(ours, expected)

    # ---- the end of a transport -------------------------------------

    def end(self, make, how, queued=False):
        """In one callback: (a big write that waits,) a handle, the
        transport's end (how), a handle; the peer then reads until
        connection_lost came."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []
            try:
                tr, peer = await make(loop, log, keep)
                await asyncio.sleep(0.01)
                done = loop.create_future()

                def step():
                    if queued:
                        tr.write(b'x' * (4 << 20))
                        assert tr.get_write_buffer_size() > 0
                    loop.call_soon(log.append, 'before')
                    if how == 'force_close':
                        tr._force_close(ConnectionResetError())
                    else:
                        getattr(tr, how)()
                    loop.call_soon(log.append, 'after')
                    loop.call_soon(loop.call_soon, log.append, 'after-next')
                loop.call_soon(step)
                for _ in range(1000):
                    await asyncio.sleep(0.002)
                    drain(peer)
                    if any(e.startswith('lost') for e in log) and \
                            'after-next' in log:
                        break
                return list(log)  # not what the loop's close adds
            finally:
                for k in keep:
                    k.close()
        return scenario

    def test_stream_close(self):
        self.assert_order(self.end(stream_transport, 'close'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_stream_abort(self):
        self.assert_order(self.end(stream_transport, 'abort'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_stream_force_close(self):
        self.assert_order(self.end(stream_transport, 'force_close'),
                          ['before', 'lost:ConnectionResetError', 'after',
                           'after-next'])

    def test_stream_close_with_writes_queued(self):
        # The writes go out first: connection_lost comes after the peer
        # read them, later than any of the handles.
        self.assert_order(self.end(stream_transport, 'close', queued=True),
                          ['before', 'after', 'after-next', 'lost'])

    def test_stream_abort_with_writes_queued(self):
        self.assert_order(self.end(stream_transport, 'abort', queued=True),
                          ['before', 'lost', 'after', 'after-next'])

    def test_datagram_close(self):
        self.assert_order(self.end(datagram_transport, 'close'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_datagram_abort(self):
        self.assert_order(self.end(datagram_transport, 'abort'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_read_pipe_close(self):
        self.assert_order(self.end(read_pipe_transport, 'close'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_write_pipe_close(self):
        self.assert_order(self.end(write_pipe_transport, 'close'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_write_pipe_abort(self):
        self.assert_order(self.end(write_pipe_transport, 'abort'),
                          ['before', 'lost', 'after', 'after-next'])

    def test_write_pipe_close_with_writes_queued(self):
        self.assert_order(self.end(write_pipe_transport, 'close', queued=True),
                          ['before', 'after', 'after-next', 'lost'])

    def test_write_pipe_abort_with_writes_queued(self):
        self.assert_order(self.end(write_pipe_transport, 'abort', queued=True),
                          ['before', 'lost', 'after', 'after-next'])

    def test_close_then_abort_with_writes_queued(self):
        # close() waits for the writes; abort() then drops them and ends
        # the transport with call_soon.
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []
            try:
                tr, peer = await stream_transport(loop, log, keep)
                await asyncio.sleep(0.01)
                tr.write(b'x' * (4 << 20))
                tr.close()
                await asyncio.sleep(0.01)
                loop.call_soon(log.append, 'before')
                tr.abort()
                loop.call_soon(log.append, 'after')
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'after' in log and 'lost' in log:
                        break
                return list(log)  # not what the loop's close adds
            finally:
                for k in keep:
                    k.close()
        self.assert_order(scenario, ['before', 'lost', 'after'])


if __name__ == '__main__':
    unittest.main()
