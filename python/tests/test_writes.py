# SPDX-License-Identifier: MIT
"""When a transport's writes reach the kernel (README, "Python": writes
made in a callback go out as one send when it returns, those of the ready
handles an iteration runs when the last of them returns, in the order
written, and so do those of its due timers, writes made outside one at
once), and writes after close() while bytes are
still buffered, compared with asyncio's own loop; on the engine
PACT_ENGINE names."""
import asyncio
import os
import socket
import struct
import threading
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class Quiet(asyncio.Protocol):
    def __init__(self):
        self.lost = []

    def connection_lost(self, exc):
        self.lost.append(exc)


def records(sock):
    """The SOCK_SEQPACKET records waiting on sock, without blocking: one
    per send the other end made."""
    out = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(1 << 20))
            if out[-1] == b'':  # end of stream
                return out
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(timeout)


def ask_in_turn(loop, peer, requests, reply, done):
    """The client of a thread: sends requests one after the other on the
    blocking socket peer, each once the reply to the last (reply(msg))
    has come, then sets done's result through call_soon_threadsafe (its
    exception on a failure)."""
    try:
        for i in range(requests):
            msg = b'%04d' % i
            peer.sendall(msg)
            want, got = reply(msg), b''
            while len(got) < len(want):
                got += peer.recv(100)
            if got != want:
                raise AssertionError((got, want))
        loop.call_soon_threadsafe(done.set_result, None)
    except BaseException as e:
        loop.call_soon_threadsafe(done.set_exception, e)


SO_TIMESTAMPNS = getattr(socket, 'SO_TIMESTAMPNS', 35)


def order_sent(peers):
    """The indexes of peers in the order the one record waiting on each was
    sent, by the kernel's receive timestamps (SO_TIMESTAMPNS)."""
    stamps = []
    for peer in peers:
        _, anc, _, _ = peer.recvmsg(100, socket.CMSG_SPACE(16))
        stamps += [struct.unpack('qq', raw[:16]) for level, kind, raw in anc
                   if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
    assert len(stamps) == len(peers), 'a record without its timestamp'
    return sorted(range(len(peers)), key=lambda i: stamps[i])


class WritesInCallbacksTests(unittest.TestCase):
    """The transport writes to a SOCK_SEQPACKET socket, whose records show
    how many sends were made and when."""

    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        a, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(self.peer.close)
        a.setblocking(False)
        self.proto = Quiet()
        waiter = self.loop.create_future()
        self.tr = self.loop._make_socket_transport(a, self.proto, waiter)
        self.loop.run_until_complete(waiter)
        self.addCleanup(self.tr.abort)

    def run_soon(self, *callbacks):
        """Runs the callbacks in one iteration, each a handle of its own."""
        done = self.loop.create_future()
        for cb in callbacks:
            self.loop.call_soon(cb)
        self.loop.call_soon(done.set_result, None)
        self.loop.run_until_complete(done)

    def test_writes_in_one_callback_are_one_send(self):
        body = bytearray(b'body')

        def respond():
            self.tr.write(b'head')
            self.tr.write(body)
            self.tr.writelines([b'-', memoryview(b'tail')])
            body[:] = b'XXXX'  # write() copied it
            self.assertEqual(records(self.peer), [])  # not yet: held
        self.run_soon(respond)
        self.assertEqual(records(self.peer), [b'headbody-tail'])

    def test_the_handles_of_an_iteration_send_together(self):
        # Their writes leave when the last of them returns, one send per
        # transport, as uvloop's end-of-iteration flush: a server's replies
        # leave in one burst, and the peer is woken once for several.
        seen = []

        def write(data):
            return lambda: self.tr.write(data)

        def look():
            seen.append(records(self.peer))
        self.run_soon(write(b'ping'), look, write(b'!'), look)
        self.assertEqual(seen, [[], []])  # held until the last handle
        self.assertEqual(records(self.peer), [b'ping!'])

    def test_the_timers_due_in_an_iteration_send_together(self):
        seen = []
        done = self.loop.create_future()
        when = self.loop.time()
        self.loop.call_at(when, self.tr.write, b'a')
        self.loop.call_at(when, lambda: seen.append(records(self.peer)))
        self.loop.call_at(when, self.tr.write, b'b')
        self.loop.call_at(when, done.set_result, None)
        self.loop.run_until_complete(done)
        self.assertEqual(seen, [[]])
        self.assertEqual(records(self.peer), [b'ab'])

    def test_a_batch_sends_to_its_transports_in_the_order_written(self):
        # The first request's reply leaves first. A transport the batch
        # closes sends at its close, and the others keep their order.
        pairs = []
        for _ in range(4):
            a, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.addCleanup(peer.close)
            peer.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            a.setblocking(False)
            waiter = self.loop.create_future()
            tr = self.loop._make_socket_transport(a, Quiet(), waiter)
            self.loop.run_until_complete(waiter)
            self.addCleanup(tr.abort)
            pairs.append((tr, peer))

        def write(i):
            return lambda: pairs[i][0].write(b'reply%d' % i)
        self.run_soon(write(0), write(1), write(2), write(3))
        self.assertEqual(order_sent([peer for _, peer in pairs]), [0, 1, 2, 3])
        self.run_soon(write(3), write(0), write(1), write(2), pairs[1][0].close)
        self.assertEqual(order_sent([peer for _, peer in pairs]), [1, 3, 0, 2])

    def test_writes_outside_callbacks_go_at_once(self):
        self.tr.write(b'a')
        self.assertEqual(records(self.peer), [b'a'])
        self.tr.write(b'b')
        self.tr.write(b'c')
        self.assertEqual(records(self.peer), [b'b', b'c'])

    def test_writes_in_a_protocol_callback_are_one_send(self):
        class Reply(Quiet):
            def data_received(p, data):
                self.tr.write(b'<' + data)
                self.tr.write(b'>')
        self.tr.set_protocol(Reply())
        for i in range(3):
            self.peer.send(b'%d' % i)
            self.peer.settimeout(10)
            # data_received runs inside the loop; the peer's read blocks in
            # a thread meanwhile.
            got = []
            t = threading.Thread(target=lambda: got.append(self.peer.recv(100)))
            t.start()
            while t.is_alive():
                self.loop.run_until_complete(asyncio.sleep(0.001))
            t.join()
            self.assertEqual(got, [b'<%d>' % i])
            self.assertEqual(records(self.peer), [])

    def test_writes_in_a_task_step_are_one_send(self):
        async def respond():
            self.tr.write(b'HTTP/1.1 200 OK\r\n\r\n')
            self.tr.write(b'hello')
            await asyncio.sleep(0)
            self.assertEqual(records(self.peer),
                             [b'HTTP/1.1 200 OK\r\n\r\nhello'])
            self.tr.write(b'again')
        self.loop.run_until_complete(respond())
        self.assertEqual(records(self.peer), [b'again'])

    def test_what_observes_or_ends_the_write_side_sends_first(self):
        sizes = []

        def observe():
            self.tr.write(b'x')
            sizes.append(self.tr.get_write_buffer_size())
            self.assertEqual(records(self.peer), [b'x'])
            self.tr.write(b'y')
            self.tr.write_eof()
            self.assertEqual(records(self.peer), [b'y', b''])
        self.run_soon(observe)
        self.assertEqual(sizes, [0])

    def test_abort_and_close_send_what_the_callback_wrote(self):
        def write_then_abort():
            self.tr.write(b'last words')
            self.tr.abort()
        self.run_soon(write_then_abort)
        self.loop.run_until_complete(asyncio.sleep(0.01))
        self.assertEqual(records(self.peer), [b'last words', b''])
        self.assertEqual(self.proto.lost, [None])

    def test_a_write_past_the_high_water_mark_goes_at_once(self):
        self.tr.set_write_buffer_limits(high=100)

        def write():
            self.tr.write(b's' * 60)
            self.tr.write(b'l' * 60)  # 120 > 100: both go now, in order
            self.assertEqual(records(self.peer), [b's' * 60, b'l' * 60])
            self.tr.write(b'x' * 101)  # alone past the mark
            self.assertEqual(records(self.peer), [b'x' * 101])
        self.run_soon(write)


def loops():
    """asyncio's own loop, then pact's."""
    return [('asyncio', asyncio.SelectorEventLoop),
            ('pact', lambda: pa.Loop(engine=ENGINE))]


class WriteAfterCloseTests(unittest.TestCase):
    """asyncio's socket transport keeps taking writes after close() while
    it still has bytes buffered, and sends them before it closes; once
    nothing is buffered, close() has closed and later writes are dropped.
    Each test runs on asyncio's loop and on pact's: the same bytes arrive."""

    def exchange(self, make_loop, scenario, rcvbuf=4096, events=None,
                 prefill=False, on_resume=None):
        """Runs scenario(transport) in connection_made on a transport over a
        Unix socket pair whose peer reads only after a while; returns what
        the peer received and the protocol's connection_lost arguments.
        prefill: the kernel's buffers are filled first (and what filled
        them is left out of the answer), so the transport's first byte
        waits. on_resume(transport) runs in resume_writing."""
        loop = make_loop()
        try:
            a, b = socket.socketpair()
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            filled = 0
            if prefill:
                a.setblocking(False)
                try:
                    while True:
                        filled += a.send(bytes(1 << 16))
                except BlockingIOError:
                    pass
            lost = loop.create_future()

            log = events if events is not None else []

            class Proto(asyncio.Protocol):
                def connection_made(p, transport):
                    p.transport = transport
                    scenario(transport)

                def pause_writing(p):
                    log.append('pause')

                def resume_writing(p):
                    log.append('resume')
                    if on_resume:
                        on_resume(p.transport)

                def connection_lost(p, exc):
                    log.append('lost')
                    lost.set_result(exc)

            received = bytearray()

            def read_all():
                b.settimeout(30)
                while chunk := b.recv(1 << 16):
                    received.extend(chunk)
            reader = threading.Timer(0.2, read_all)

            async def main():
                await loop.connect_accepted_socket(Proto, a)
                reader.start()
                return await asyncio.wait_for(lost, 30)
            exc = loop.run_until_complete(main())
            reader.join()
            b.close()
            self.assertEqual(received[:filled], bytes(filled))
            return bytes(received[filled:]), exc
        finally:
            loop.close()

    def both(self, scenario, **kw):
        results = {}
        for name, make_loop in loops():
            with self.subTest(loop=name):
                results[name] = self.exchange(make_loop, scenario, **kw)
        return results

    def test_a_write_after_close_with_bytes_buffered_is_sent(self):
        big = bytes(i % 251 for i in range(1 << 20))
        closing = {}

        def scenario(tr):
            tr.write(big)
            tr.close()
            closing['buffered'] = tr.get_write_buffer_size()
            closing['is_closing'] = tr.is_closing()
            tr.write(b'tail')
        for name, (data, exc) in self.both(scenario).items():
            with self.subTest(loop=name):
                self.assertEqual(len(data), len(big) + 4)
                self.assertEqual(data, big + b'tail')
                self.assertIsNone(exc)
        self.assertGreater(closing['buffered'], 0)
        self.assertTrue(closing['is_closing'])

    def test_a_write_after_close_in_a_later_callback_is_sent(self):
        big = bytes(i % 251 for i in range(1 << 20))

        def scenario(tr):
            tr.write(big)
            tr.close()
            asyncio.get_running_loop().call_later(0.05, tr.write, b'later')
        for name, (data, exc) in self.both(scenario).items():
            with self.subTest(loop=name):
                self.assertEqual(data, big + b'later')
                self.assertIsNone(exc)

    def test_flow_control_after_close_is_asyncio_s(self):
        # Paused by the big write, the protocol hears resume_writing once
        # the buffer drained, then connection_lost; the marks it set count.
        big = bytes(1 << 20)

        def scenario(tr):
            tr.set_write_buffer_limits(high=1 << 16, low=1 << 14)
            tr.write(big)
            tr.close()
            tr.write(b'tail')
            assert tr.get_write_buffer_limits() == (1 << 14, 1 << 16)
        for name, make_loop in loops():
            with self.subTest(loop=name):
                events = []
                data, exc = self.exchange(make_loop, scenario, events=events)
                self.assertEqual(data, big + b'tail')
                self.assertEqual(events, ['pause', 'resume', 'lost'])

    def test_a_write_after_close_with_one_byte_buffered_is_sent(self):
        closing = {}

        def scenario(tr):
            tr.write(b'1')
            closing['buffered'] = tr.get_write_buffer_size()
            tr.close()
            tr.write(b'23')
        for name, (data, exc) in self.both(scenario, prefill=True).items():
            with self.subTest(loop=name):
                self.assertEqual(data, b'123')
                self.assertIsNone(exc)
        self.assertEqual(closing['buffered'], 1)

    def test_a_close_resumes_the_protocol_at_the_low_mark(self):
        # asyncio's _write_ready resumes the protocol when the buffer falls
        # to the low mark, closing or not, and sends what it writes there.
        big = bytes(i % 251 for i in range(1 << 20))
        low = 1 << 14

        def scenario(tr):
            tr.set_write_buffer_limits(high=1 << 16, low=low)
            tr.write(big)
            tr.close()
        for name, make_loop in loops():
            with self.subTest(loop=name):
                events, sizes = [], []

                def on_resume(tr):
                    sizes.append(tr.get_write_buffer_size())
                    tr.write(b'resumed')
                data, exc = self.exchange(make_loop, scenario, events=events,
                                          on_resume=on_resume)
                self.assertEqual(data, big + b'resumed')
                self.assertEqual(events, ['pause', 'resume', 'lost'])
                self.assertEqual(len(sizes), 1)
                self.assertGreater(sizes[0], 0)
                self.assertLessEqual(sizes[0], low)

    def test_a_write_after_close_with_nothing_buffered_is_dropped(self):
        def scenario(tr):
            tr.write(b'small')
            tr.close()
            tr.write(b'dropped')
        for name, (data, exc) in self.both(scenario, rcvbuf=1 << 16).items():
            with self.subTest(loop=name):
                self.assertEqual(data, b'small')
                self.assertIsNone(exc)



class RepliesGoWithTheNextWaitTests(unittest.TestCase):
    """A reply written in data_received is handed to the kernel by the
    wait of run_forever's next iteration, in the same system call (on
    io_uring one io_uring_enter submits it and waits), and when the run
    ends before that iteration, as it ends."""

    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        listener = socket.create_server(('127.0.0.1', 0))
        self.peer = socket.create_connection(listener.getsockname())
        self.addCleanup(self.peer.close)
        self.peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer.settimeout(10)
        ours, _ = listener.accept()
        listener.close()
        self.received = []
        outer = self

        class Echo(asyncio.Protocol):
            def connection_made(p, tr):
                p.tr = tr

            def data_received(p, data):
                p.tr.write(b'<' + data + b'>')
                outer.received.append(data)
                if outer.stop_on_data:
                    outer.loop.stop()
        self.stop_on_data = False
        self.tr, _ = self.loop.run_until_complete(
            self.loop.connect_accepted_socket(Echo, ours))
        self.addCleanup(self.tr.abort)

    def test_a_reply_is_out_when_the_run_ends_in_its_iteration(self):
        # stop() in data_received: run_forever returns after this
        # iteration, whose wait would have sent the reply.
        self.stop_on_data = True
        for i in range(3):
            self.peer.send(b'%d' % i)
            self.loop.run_forever()
            self.assertEqual(self.received[-1], b'%d' % i)
            # The loop does not run from here.
            self.assertEqual(self.peer.recv(100), b'<%d>' % i)

    def test_an_iteration_costs_one_system_call(self):
        # A client in a thread makes requests one after the other; no
        # reply costs a system call besides the waits (io_uring_enter,
        # epoll_wait), of which an iteration makes one.
        requests = 200
        done = self.loop.create_future()
        before = self.loop.stats()
        t = threading.Thread(target=ask_in_turn, args=(
            self.loop, self.peer, requests, lambda msg: b'<' + msg + b'>',
            done))
        t.start()
        self.loop.run_until_complete(done)
        t.join()
        after = self.loop.stats()
        iterations = after['iterations'] - before['iterations']
        enters = after['enters'] - before['enters']
        self.assertGreaterEqual(iterations, requests)
        self.assertLessEqual(enters, iterations + 1,
                             '%d system calls in %d iterations' % (enters, iterations))


class TaskRepliesTests(unittest.TestCase):
    def test_a_task_s_reply_costs_the_waits_asyncio_s_order_needs(self):
        # A streams echo: data_received wakes the task, whose step writes
        # the reply and awaits the next read. asyncio's order has the
        # step's iteration poll before the step runs (what the poll finds
        # runs after the step; what the step causes, in the iteration
        # after: test_callback_order.py, test_iteration_order.py), and the
        # iteration after the step sleeps until the next request. On
        # io_uring's fast ring (receive 'multishot': DEFER_TASKRUN flags
        # pending completions in user space) that poll makes no system
        # call: one wait per request. epoll cannot look without one: an
        # epoll_wait that finds nothing (the client waits for the reply),
        # two per request. uvloop makes one by running ready handles
        # before its poll, the order those tests refuse. Never more.
        loop = pa.Loop(engine=ENGINE)
        self.addCleanup(loop.close)
        requests = 200
        done = loop.create_future()
        ours, peer = socket.socketpair()
        self.addCleanup(peer.close)
        peer.settimeout(10)

        async def serve(reader, writer):
            while data := await reader.read(1000):
                writer.write(data)
            writer.close()

        async def start():
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            return asyncio.ensure_future(serve(reader, writer))
        task = loop.run_until_complete(start())
        before = loop.stats()
        t = threading.Thread(target=ask_in_turn, args=(
            loop, peer, requests, lambda msg: msg, done))
        t.start()
        loop.run_until_complete(done)
        t.join()
        after = loop.stats()
        peer.shutdown(socket.SHUT_WR)
        loop.run_until_complete(task)
        enters = after['enters'] - before['enters']
        per_request = 1 if after['receive'] == 'multishot' else 2
        # + the wake-up of done's call_soon_threadsafe
        self.assertLessEqual(enters, per_request * requests + 5,
                             '%d waits for %d requests' % (enters, requests))


if __name__ == '__main__':
    unittest.main()
