# SPDX-License-Identifier: MIT
"""The order of callbacks a program can observe, on pact.asyncio (the
engine PACT_ENGINE names) and on asyncio's own selector loop, which is the
reference: every test runs its scenario on both and wants the same list,
and the list asyncio gives (so a change in either shows).

At a transport's start: asyncio schedules connection_made with call_soon
when it makes the transport, so handles queued before (by the protocol
factory, say) run before it and handles queued after run after it, in
whichever callback the transport was made: a task, a handle, a timer, the
server's accept.

Around a transport's end (docs/contract.md §6, §8): close() with nothing left to send, abort() and
_force_close() schedule connection_lost with call_soon, so handles queued
before the call run before it and handles queued after it run after it;
close() with writes queued sends them first and calls connection_lost
when the last is out. For stream sockets, datagram sockets, read and write
pipes.

At the peer's end: bytes, the EOF behind them and connection_lost come in
successive iterations, as asyncio reads once per iteration and schedules
connection_lost with call_soon (also after a reset, and when a write
pipe's reader goes away)."""
import asyncio
import os
import socket
import struct
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

    # ---- the start of a transport -----------------------------------

    def start(self, make):
        """make(loop, factory) makes a transport with the protocol
        factory; the factory and connection_made each queue a handle."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []

            class Proto(Recorder, DatagramRecorder):
                def connection_made(self, transport):
                    log.append('made')
                    keep.append(transport)
                    loop.call_soon(log.append, 'from-made')

            def factory():
                log.append('factory')
                loop.call_soon(log.append, 'from-factory')
                return Proto(log)
            try:
                await make(loop, factory, keep)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'from-made' in log:
                        break
                await asyncio.sleep(0.01)
                return [e for e in log if not e.startswith('lost')]
            finally:
                for k in keep:
                    k.close()
        return scenario

    def test_stream_start(self):
        async def make(loop, factory, keep):
            a, b = socket.socketpair()
            keep.append(b)
            await loop.create_unix_connection(factory, sock=a)
        self.assert_order(self.start(make), ['factory', 'from-factory',
                                             'made', 'from-made'])

    def test_datagram_start(self):
        async def make(loop, factory, keep):
            await loop.create_datagram_endpoint(
                factory, local_addr=('127.0.0.1', 0))
        self.assert_order(self.start(make), ['factory', 'from-factory',
                                             'made', 'from-made'])

    def test_read_pipe_start(self):
        async def make(loop, factory, keep):
            r, w = os.pipe()
            keep.append(os.fdopen(w, 'wb', 0))
            await loop.connect_read_pipe(factory, os.fdopen(r, 'rb', 0))
        self.assert_order(self.start(make), ['factory', 'from-factory',
                                             'made', 'from-made'])

    def test_write_pipe_start(self):
        async def make(loop, factory, keep):
            r, w = os.pipe()
            keep.append(os.fdopen(r, 'rb', 0))
            await loop.connect_write_pipe(factory, os.fdopen(w, 'wb', 0))
        self.assert_order(self.start(make), ['factory', 'from-factory',
                                             'made', 'from-made'])

    def test_accepted_start(self):
        # The server's accept makes the protocol, then the transport.
        async def make(loop, factory, keep):
            server = await loop.create_unix_server(factory, sock=listener)
            keep.append(server)
            client = socket.socket(socket.AF_UNIX)
            keep.append(client)
            client.connect(listener.getsockname())
        theirs, ours = [], []
        for runs, new_loop in ((theirs, asyncio.SelectorEventLoop),
                               (ours, lambda: pa.Loop(engine=ENGINE))):
            listener = socket.socket(socket.AF_UNIX)
            path = '%s/pact-order-%d' % (os.environ.get('TMPDIR', '/tmp'),
                                         os.getpid())
            try:
                listener.bind(path)
                runs.extend(run(new_loop(), self.start(make)()))
            finally:
                listener.close()
                os.unlink(path)
        expected = ['factory', 'from-factory', 'made', 'from-made']
        self.assertEqual(theirs, expected, 'asyncio itself changed')
        self.assertEqual(ours, expected)

    def reading(self, make):
        """make(loop, factory) makes a transport whose peer has sent
        already: the task that made it resumes before the protocol
        hears the bytes, as asyncio starts reading after connection_made's
        turn."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []

            class Proto(Recorder, DatagramRecorder):
                def connection_made(self, transport):
                    log.append('made')
                    keep.append(transport)

                def data_received(self, data):
                    log.append('data')

                def datagram_received(self, data, addr):
                    log.append('data')
            try:
                await make(loop, lambda: Proto(log), keep)
                log.append('made-returned')
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'data' in log:
                        break
                return [e for e in log if not e.startswith('lost')]
            finally:
                for k in keep:
                    k.close()
                await asyncio.sleep(0.01)
        return scenario

    def test_stream_reads_after_the_task_that_made_it(self):
        async def make(loop, factory, keep):
            a, b = socket.socketpair()
            keep.append(b)
            b.send(b'x')
            await loop.create_unix_connection(factory, sock=a)
        self.assert_order(self.reading(make),
                          ['made', 'made-returned', 'data'])

    def test_read_pipe_reads_after_the_task_that_made_it(self):
        async def make(loop, factory, keep):
            r, w = os.pipe()
            keep.append(os.fdopen(w, 'wb', 0))
            keep[-1].write(b'x')
            await loop.connect_read_pipe(factory, os.fdopen(r, 'rb', 0))
        self.assert_order(self.reading(make),
                          ['made', 'made-returned', 'data'])

    def test_datagram_reads_after_the_task_that_made_it(self):
        async def make(loop, factory, keep):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            keep.append(b)
            b.send(b'x')
            await loop.create_datagram_endpoint(factory, sock=a)
        self.assert_order(self.reading(make),
                          ['made', 'made-returned', 'data'])

    def test_pause_in_connection_made_holds_the_bytes(self):
        # Reading paused in connection_made starts at resume, also now that
        # pact holds its reading for connection_made's turn. On pact only:
        # asyncio 3.11 adds its reader after connection_made even when it
        # paused (3.12 checks), and reads; pact keeps the pause
        # (docs/contract.md §5).
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []
            a, b = socket.socketpair()

            class Proto(Recorder):
                def connection_made(self, transport):
                    transport.pause_reading()
                    log.append('made:%s' % transport.is_reading())

                def data_received(self, data):
                    log.append('data')
            try:
                b.send(b'x')
                tr, _ = await loop.create_unix_connection(lambda: Proto(log),
                                                          sock=a)
                await asyncio.sleep(0.02)
                log.append('resume')
                tr.resume_reading()
                log.append('reading:%s' % tr.is_reading())
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'data' in log:
                        break
                tr.close()
                await asyncio.sleep(0.01)
                return [e for e in log if not e.startswith('lost')]
            finally:
                b.close()
        self.assertEqual(run(pa.Loop(engine=ENGINE), scenario()),
                         ['made:False', 'resume', 'reading:True', 'data'])

    def ended_at_once(self, make, how):
        """In one handle: a handle, a transport made (make(loop, protocol)
        returns it) and ended (how(transport)), a handle; the task that
        waits sees the waiter's result as asyncio gives it."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []

            class Proto(Recorder, DatagramRecorder):
                def connection_made(self, transport):
                    log.append('made')
            try:
                waiter = loop.create_future()

                def step():
                    loop.call_soon(log.append, 'before')
                    tr = make(loop, Proto(log), waiter, keep)
                    how(tr)
                    loop.call_soon(log.append, 'after')
                loop.call_soon(step)
                try:
                    await waiter
                    log.append('waiter:ok')
                except OSError as e:
                    log.append('waiter:' + type(e).__name__)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if any(e.startswith('lost') for e in log):
                        break
                await asyncio.sleep(0.01)
                return list(log)
            finally:
                for k in keep:
                    k.close()
        return scenario

    @staticmethod
    def socket_transport(loop, protocol, waiter, keep):
        a, b = socket.socketpair()
        keep.append(b)
        return loop._make_socket_transport(a, protocol, waiter)

    @staticmethod
    def write_pipe(loop, protocol, waiter, keep):
        r, w = os.pipe()
        keep.append(os.fdopen(r, 'rb', 0))
        return loop._make_write_pipe_transport(os.fdopen(w, 'wb', 0),
                                               protocol, waiter)

    def test_stream_closed_before_connection_made(self):
        self.assert_order(self.ended_at_once(self.socket_transport,
                                             lambda tr: tr.close()),
                          ['before', 'made', 'lost', 'after', 'waiter:ok'])

    def test_stream_aborted_before_connection_made(self):
        self.assert_order(self.ended_at_once(self.socket_transport,
                                             lambda tr: tr.abort()),
                          ['before', 'made', 'lost', 'after', 'waiter:ok'])

    def test_write_pipe_closed_before_connection_made(self):
        self.assert_order(self.ended_at_once(self.write_pipe,
                                             lambda tr: tr.close()),
                          ['before', 'made', 'lost', 'after', 'waiter:ok'])

    def made_outside_a_task(self, when):
        """The transport made in a handle or a timer's callback: a handle
        before, connection_made, a handle after, and one the handle after
        queues."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []
            a, b = socket.socketpair()
            made = []

            class Proto(Recorder):
                def connection_made(self, transport):
                    log.append('made')
            try:
                def step():
                    loop.call_soon(log.append, 'before')
                    made.append(loop._make_socket_transport(a, Proto(log)))
                    loop.call_soon(log.append, 'after')
                    loop.call_soon(loop.call_soon, log.append, 'after-next')
                when(loop, step)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'after-next' in log:
                        break
                return list(log)
            finally:
                if made:
                    made[0].close()
                    await asyncio.sleep(0.01)
                b.close()
        return scenario

    def test_start_in_a_handle(self):
        self.assert_order(
            self.made_outside_a_task(lambda loop, f: loop.call_soon(f)),
            ['before', 'made', 'after', 'after-next'])

    def test_start_in_a_timer(self):
        self.assert_order(
            self.made_outside_a_task(lambda loop, f: loop.call_later(0.001, f)),
            ['before', 'made', 'after', 'after-next'])

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


    # ---- the peer's end ---------------------------------------------
    #
    # asyncio reads a socket once per iteration: bytes and the EOF behind
    # them come one iteration apart, with what data_received scheduled
    # in between; eof_received returning false closes the transport, and
    # connection_lost then has its turn (call_soon). An error (a reset) and
    # a write pipe's reader going away schedule connection_lost too. A
    # read pipe's EOF schedules eof_received and connection_lost together.
    # In these scenarios a handle queues the next one ('h1', 'h2', ...): a
    # handle per iteration, so the log shows which iteration each protocol
    # callback came in. Each callback X queues 'from-X'.

    def peer_end(self, make, buffered=False, keep_open=False,
                 pause_at_data=False, until='from-lost', after=None):
        """make(loop, protocol_factory, keep) makes the transport and
        returns a function that ends the connection from the other side;
        a handle calls it and queues 'h1'. after(transport, log), when
        given, runs in a handle once the log has `until`, and the
        scenario waits for 'from-lost' then."""
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []

            def chain(prefix, i=1, n=5):
                log.append('%s%d' % (prefix, i))
                if i < n:
                    loop.call_soon(chain, prefix, i + 1, n)

            def note(what):
                log.append(what)
                loop.call_soon(log.append, 'from-' + what)

            class Proto(asyncio.Protocol):
                def connection_made(self, transport):
                    self.transport = transport

                def data_received(self, data):
                    note('data')
                    if pause_at_data:
                        self.transport.pause_reading()

                def eof_received(self):
                    note('eof')
                    return keep_open

                def connection_lost(self, exc):
                    note('lost' if exc is None
                         else 'lost:' + type(exc).__name__)

            class Buffered(asyncio.BufferedProtocol):
                connection_made = Proto.connection_made
                eof_received = Proto.eof_received
                connection_lost = Proto.connection_lost

                def get_buffer(self, sizehint):
                    self.buffer = bytearray(1024)
                    return self.buffer

                def buffer_updated(self, nbytes):
                    note('data')

            async def wait_for(what):
                for _ in range(1000):
                    await asyncio.sleep(0.002)
                    if any(e.startswith(what) for e in log):
                        break
                await asyncio.sleep(0.01)  # the handles' chain ends
            try:
                end = await make(loop, Buffered if buffered else Proto,
                                 keep)
                await asyncio.sleep(0.01)

                def step():
                    end()
                    loop.call_soon(chain, 'h')
                loop.call_soon(step)
                await wait_for(until)
                if after is not None:
                    tr = keep[0]
                    loop.call_soon(after, tr, log, chain)
                    await wait_for('lost')
                return list(log)  # not what the loop's close adds
            finally:
                for k in keep:
                    k.close()
        return scenario

    @staticmethod
    async def socket_with_peer(loop, factory, keep, send=b'x'):
        a, b = socket.socketpair()
        tr, _ = await loop.create_unix_connection(factory, sock=a)
        keep += [tr, b]

        def end():
            if send:
                b.send(send)
            b.close()
        return end

    def test_stream_peer_sends_and_closes(self):
        self.assert_order(self.peer_end(self.socket_with_peer),
                          ['h1', 'data', 'h2', 'from-data', 'eof',
                           'h3', 'from-eof', 'lost', 'h4', 'from-lost',
                           'h5'])

    def test_two_streams_peers_send_and_close(self):
        # Both EOFs come in the iteration after both data_received, behind
        # what those scheduled, as asyncio's I/O callbacks of that
        # iteration.
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep, peers = [], [], []

            def proto(name):
                class Proto(asyncio.Protocol):
                    def note(self, what):
                        log.append(what + name)
                        loop.call_soon(log.append, 'from-' + what + name)

                    def data_received(self, data):
                        self.note('data')

                    def eof_received(self):
                        self.note('eof')

                    def connection_lost(self, exc):
                        self.note('lost')
                return Proto
            try:
                for name in ('1', '2'):
                    a, b = socket.socketpair()
                    peers.append(b)
                    tr, _ = await loop.create_unix_connection(proto(name),
                                                              sock=a)
                    keep.append(tr)
                await asyncio.sleep(0.01)

                def step():
                    for b in peers:
                        b.send(b'x')
                        b.close()
                    loop.call_soon(chain, 1)

                def chain(i):
                    log.append('h%d' % i)
                    if i < 5:
                        loop.call_soon(chain, i + 1)
                loop.call_soon(step)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'from-lost2' in log:
                        break
                await asyncio.sleep(0.01)
                return list(log)  # not what the loop's close adds
            finally:
                for k in keep + peers:
                    k.close()
        self.assert_order(scenario,
                          ['h1', 'data1', 'data2', 'h2', 'from-data1',
                           'from-data2', 'eof1', 'eof2', 'h3', 'from-eof1',
                           'lost1', 'from-eof2', 'lost2', 'h4', 'from-lost1',
                           'from-lost2', 'h5'])

    def test_stream_peer_closes(self):
        async def make(loop, factory, keep):
            return await self.socket_with_peer(loop, factory, keep, send=b'')
        self.assert_order(self.peer_end(make),
                          ['h1', 'eof', 'h2', 'from-eof', 'lost',
                           'h3', 'from-lost', 'h4', 'h5'])

    def test_buffered_stream_peer_sends_and_closes(self):
        self.assert_order(self.peer_end(self.socket_with_peer, buffered=True),
                          ['h1', 'data', 'h2', 'from-data', 'eof',
                           'h3', 'from-eof', 'lost', 'h4', 'from-lost',
                           'h5'])

    def test_stream_eof_received_keeps_it_open(self):
        # eof_received returns true: nothing more until the program
        # closes, then connection_lost has its turn.
        def close(tr, log, chain):
            log.append('close')
            tr.close()
            loop = asyncio.get_running_loop()
            loop.call_soon(chain, 'c', 1, 3)
        self.assert_order(self.peer_end(self.socket_with_peer,
                                        keep_open=True, until='from-eof',
                                        after=close),
                          ['h1', 'data', 'h2', 'from-data', 'eof',
                           'h3', 'from-eof', 'h4', 'h5',
                           'close', 'lost', 'c1', 'from-lost', 'c2', 'c3'])

    def test_stream_paused_in_data_received_holds_the_eof(self):
        # Paused in data_received: asyncio reads nothing more, so the EOF
        # waits for resume_reading, and comes in the iteration after it.
        def resume(tr, log, chain):
            log.append('resume:%s' % tr.is_reading())
            tr.resume_reading()
            asyncio.get_running_loop().call_soon(chain, 'r')
        self.assert_order(self.peer_end(self.socket_with_peer,
                                        pause_at_data=True,
                                        until='from-data', after=resume),
                          ['h1', 'data', 'h2', 'from-data', 'h3', 'h4', 'h5',
                           'resume:False', 'r1', 'eof', 'r2', 'from-eof',
                           'lost', 'r3', 'from-lost', 'r4', 'r5'])

    def test_stream_peer_resets(self):
        # A read error: connection_lost has its turn (asyncio's
        # _fatal_error schedules it).
        async def make(loop, factory, keep):
            listener = socket.create_server(('127.0.0.1', 0))
            tr, _ = await loop.create_connection(factory,
                                                 *listener.getsockname())
            b, _ = listener.accept()
            listener.close()
            keep += [tr, b]
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack('ii', 1, 0))
            return b.close
        self.assert_order(self.peer_end(make),
                          ['h1', 'h2', 'lost:ConnectionResetError', 'h3',
                           'from-lost:ConnectionResetError', 'h4', 'h5'])

    def test_read_pipe_peer_writes_and_closes(self):
        async def make(loop, factory, keep):
            r, w = os.pipe()
            tr, _ = await loop.connect_read_pipe(factory,
                                                 os.fdopen(r, 'rb', 0))
            keep.append(tr)

            def end():
                os.write(w, b'x')
                os.close(w)
            return end
        self.assert_order(self.peer_end(make),
                          ['h1', 'data', 'h2', 'from-data', 'h3', 'eof',
                           'lost', 'h4', 'from-eof', 'from-lost', 'h5'])

    def test_read_pipe_peer_closes(self):
        async def make(loop, factory, keep):
            r, w = os.pipe()
            tr, _ = await loop.connect_read_pipe(factory,
                                                 os.fdopen(r, 'rb', 0))
            keep.append(tr)
            return lambda: os.close(w)
        self.assert_order(self.peer_end(make),
                          ['h1', 'h2', 'eof', 'lost', 'h3', 'from-eof',
                           'from-lost', 'h4', 'h5'])

    def test_write_pipe_reader_goes(self):
        # asyncio's write pipe transport watches the pipe for the reader
        # going away, and schedules connection_lost.
        async def make(loop, factory, keep):
            r, w = os.pipe()
            tr, _ = await loop.connect_write_pipe(factory,
                                                  os.fdopen(w, 'wb', 0))
            keep.append(tr)
            return lambda: os.close(r)
        self.assert_order(self.peer_end(make),
                          ['h1', 'h2', 'lost', 'h3', 'from-lost', 'h4', 'h5'])

    def test_write_pipe_reader_goes_with_writes_queued(self):
        # The write that finds the reader gone fails, connection_lost has
        # its turn: in the same iteration as on asyncio's loop, also on
        # io_uring, where the write's failure and the watch for the
        # reader come back together and neither waits for the cancel of
        # the other.
        async def make(loop, factory, keep):
            r, w = os.pipe()
            tr, _ = await loop.connect_write_pipe(factory,
                                                  os.fdopen(w, 'wb', 0))
            keep.append(tr)

            def end():
                tr.write(b'x' * (1 << 20))  # more than the pipe takes
                os.close(r)
            return end
        self.assert_order(self.peer_end(make),
                          ['h1', 'h2', 'lost:BrokenPipeError', 'h3',
                           'from-lost:BrokenPipeError', 'h4', 'h5'])

    def test_write_pipe_reader_goes_with_a_write_under_way(self):
        # As above, with the rest of the write already waiting for room
        # in the pipe (handed to the kernel an iteration before) when the
        # reader goes.
        async def make(loop, factory, keep):
            r, w = os.pipe()
            tr, _ = await loop.connect_write_pipe(factory,
                                                  os.fdopen(w, 'wb', 0))
            keep.append(tr)
            tr.write(b'x' * (1 << 20))  # more than the pipe takes
            await asyncio.sleep(0.01)
            return lambda: os.close(r)
        self.assert_order(self.peer_end(make),
                          ['h1', 'h2', 'lost:BrokenPipeError', 'h3',
                           'from-lost:BrokenPipeError', 'h4', 'h5'])

if __name__ == '__main__':
    unittest.main()
