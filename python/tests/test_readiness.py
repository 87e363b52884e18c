# SPDX-License-Identifier: MIT
"""add_reader/add_writer (level-triggered, removal at once), the sock_*
methods and add_signal_handler, on the engine PACT_ENGINE names."""
import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import unittest
from unittest import mock

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


# Page faults per 100 KiB message received with sock_recv(sock, 1000000)
# (test_large_sock_recvs_take_no_fresh_memory_each).
LARGE_RECV_FAULTS = """
import asyncio, os, resource, socket, sys
import pact.asyncio as pa
loop = pa.Loop(engine=sys.argv[1])
a, b = socket.socketpair()
a.setblocking(False)
payload = os.urandom(100 * 1024)

async def rounds(k):
    data = None
    for _ in range(k):
        b.sendall(payload)
        got = 0
        while got < len(payload):
            data = await loop.sock_recv(a, 1000000)
            got += len(data)

async def main():
    await rounds(20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    await rounds(200)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(loop.run_until_complete(main()) / 200)
loop.close()
"""


class ReadinessTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)

    def run_briefly(self, n=1):
        for _ in range(n):
            self.loop.call_soon(int)  # never block
            self.loop._run_once()

    def test_reader_is_level_triggered(self):
        # A reader that takes one byte per call is called again while data
        # is left, once per iteration, and not after it is drained.
        got = []

        def on_readable():
            got.append(self.a.recv(1))
        self.loop.add_reader(self.a, on_readable)
        self.b.send(b'abc')
        for _ in range(3):
            self.loop._run_once()  # blocks until readable
        self.assertEqual(got, [b'a', b'b', b'c'])
        self.run_briefly(3)
        self.assertEqual(len(got), 3)
        self.assertTrue(self.loop.remove_reader(self.a))
        self.assertFalse(self.loop.remove_reader(self.a))

    def test_removal_takes_effect_at_once(self):
        # The fd is reported ready in the same iteration in which an earlier
        # callback removes the reader: the reader must not run.
        calls = []
        self.b.send(b'x')
        self.loop.add_reader(self.a, calls.append, 'reader')

        def remover():
            self.loop.remove_reader(self.a)
        # One iteration with both the report and the remover: the report is
        # queued by the wait, after the remover already sits in the queue.
        self.loop.call_soon(remover)
        self.loop._run_once()
        self.run_briefly(3)
        self.assertEqual(calls, [])

    def test_writer_and_reader_on_one_fd(self):
        events = []
        self.loop.add_writer(self.a, lambda: (events.append('w'),
                                              self.loop.remove_writer(self.a)))
        self.loop.add_reader(self.a, lambda: (events.append('r'), self.a.recv(10)))
        self.loop._run_once()
        self.assertEqual(events, ['w'])
        self.b.send(b'y')
        self.loop._run_once()
        self.assertEqual(events, ['w', 'r'])
        self.assertTrue(self.loop.remove_reader(self.a))

    def test_replacing_a_reader_cancels_the_old_handle(self):
        seen = []
        self.loop.add_reader(self.a.fileno(), seen.append, 1)
        self.loop.add_reader(self.a.fileno(), lambda: (seen.append(2), self.a.recv(5)))
        self.b.send(b'z')
        self.loop._run_once()
        self.assertEqual(seen, [2])
        self.loop.remove_reader(self.a)

    def test_reader_of_a_closed_loop(self):
        self.loop.add_reader(self.a, print)
        self.loop.close()
        self.assertFalse(self.loop.remove_reader(self.a))
        with self.assertRaisesRegex(RuntimeError, 'closed'):
            self.loop.add_reader(self.a, print)

    def test_removing_what_is_not_registered_answers_as_asyncio(self):
        # selectors' _fileobj_to_fd: an object whose fileno() gives no int
        # is a ValueError, a MagicMock's (int() of it is 1) and any fd not
        # registered, however large, are False; on a closed loop False.
        def answers(loop):
            out = []
            for fd in (mock.Mock(), mock.MagicMock(), 7, 10**6, 2**40, -1,
                       'x', mock.Mock(fileno=lambda: 5), self.a):
                for name in ('_remove_reader', 'remove_reader',
                             '_remove_writer', 'remove_writer'):
                    try:
                        out.append(getattr(loop, name)(fd))
                    except Exception as e:
                        out.append(type(e))
            loop.close()
            for fd in (mock.Mock(), 7, -1):
                for name in ('_remove_reader', '_remove_writer'):
                    out.append(getattr(loop, name)(fd))
            return out
        ref = answers(asyncio.SelectorEventLoop())
        self.assertEqual(answers(self.loop), ref)
        self.assertEqual(ref[4:12], [False] * 8)
        self.assertEqual(ref[:4], [ValueError] * 4)

    def test_sock_methods(self):
        async def main():
            srv = socket.socket()
            srv.setblocking(False)
            srv.bind(('127.0.0.1', 0))
            srv.listen()
            cli = socket.socket()
            cli.setblocking(False)
            accept = asyncio.ensure_future(self.loop.sock_accept(srv))
            await self.loop.sock_connect(cli, srv.getsockname())
            conn, addr = await accept
            conn.setblocking(False)
            self.assertEqual(addr, cli.getsockname())
            payload = os.urandom(1 << 20)  # more than a socket buffer
            send = asyncio.ensure_future(self.loop.sock_sendall(cli, payload))
            got = bytearray()
            while len(got) < len(payload):
                got += await self.loop.sock_recv(conn, 65536)
            await send
            self.assertEqual(bytes(got), payload)
            buf = bytearray(4)
            await self.loop.sock_sendall(conn, b'ping')
            self.assertEqual(await self.loop.sock_recv_into(cli, buf), 4)
            self.assertEqual(buf, b'ping')
            for s in (srv, cli, conn):
                s.close()
        self.loop.run_until_complete(main())

    def test_cancelled_sock_recv_loses_no_byte(self):
        async def main():
            t = asyncio.ensure_future(self.loop.sock_recv(self.a, 100))
            await asyncio.sleep(0.01)
            t.cancel()
            self.b.send(b'kept')  # after the cancel, before the loop runs
            with self.assertRaises(asyncio.CancelledError):
                await t
            return await self.loop.sock_recv(self.a, 100)
        self.assertEqual(self.loop.run_until_complete(main()), b'kept')

    def test_a_cancelled_sock_recv_into_never_writes_the_buffer(self):
        # The call is made at call time and at readiness only: after a
        # cancel the buffer is the program's again and the bytes wait in
        # the kernel for the next call.
        buf = bytearray(b'.' * 8)

        async def main():
            t = asyncio.ensure_future(self.loop.sock_recv_into(self.a, buf))
            await asyncio.sleep(0.01)
            t.cancel()
            self.b.send(b'kept')
            with self.assertRaises(asyncio.CancelledError):
                await t
            await asyncio.sleep(0.01)
            self.assertEqual(buf, b'........')
            return await self.loop.sock_recv_into(self.a, buf)
        self.assertEqual(self.loop.run_until_complete(main()), 4)
        self.assertEqual(buf, b'kept....')

    def test_a_sock_wait_ends_in_its_own_callback(self):
        # The reader (writer) of a sock_recv, sock_recv_into or sock_sendall
        # that waited goes when its callback finishes the future, not one
        # iteration later in the future's done callback: its pact watch has
        # ended by the time the coroutine that awaited it runs again (on
        # io_uring without a cancel, and without its poll armed once more).
        # The bytes and the errors are asyncio's.
        def live():
            return self.loop.stats()['ops_live']
        waits = []
        payload = os.urandom(1 << 22)  # more than the socket buffers
        got = bytearray()

        def drain():  # a thread: no pact op of its own
            self.b.setblocking(True)
            while len(got) < len(payload):
                got.extend(self.b.recv(1 << 20))
        reader = threading.Thread(target=drain)

        async def main():
            base = live()
            for what in ('recv', 'recv_into', 'sendall', 'sendall_error'):
                # While the wait waits: its watch, and then what ends it.
                self.loop.call_later(0.01, lambda: waits.append(live() - base))
                if what == 'recv':
                    self.loop.call_later(0.02, self.b.send, b'data')
                    self.assertEqual(await self.loop.sock_recv(self.a, 100),
                                     b'data')
                elif what == 'recv_into':
                    self.loop.call_later(0.02, self.b.send, b'into')
                    buf = bytearray(8)
                    self.assertEqual(
                        await self.loop.sock_recv_into(self.a, buf), 4)
                    self.assertEqual(buf[:4], b'into')
                elif what == 'sendall':
                    self.loop.call_later(0.02, reader.start)
                    self.assertIsNone(
                        await self.loop.sock_sendall(self.a, payload))
                else:
                    # The peer goes while the send waits: BrokenPipeError.
                    self.loop.call_later(0.02, self.b.close)
                    with self.assertRaises(BrokenPipeError):
                        await self.loop.sock_sendall(self.a, payload)
                self.assertEqual(live(), base, what)
                self.assertFalse(self.loop.remove_reader(self.a))
                self.assertFalse(self.loop.remove_writer(self.a))
                if what == 'sendall':
                    reader.join()
                    self.assertEqual(bytes(got), payload)
            self.assertEqual(waits, [1, 1, 1, 1])
        self.loop.run_until_complete(main())

    def test_sock_methods_report_the_end_and_errors_as_asyncio(self):
        async def main():
            self.b.send(b'last')
            self.b.close()
            # Data, then the end (b'' and 0) at call time, then errors.
            self.assertEqual(await self.loop.sock_recv(self.a, 100), b'last')
            self.assertEqual(await self.loop.sock_recv(self.a, 100), b'')
            self.assertEqual(
                await self.loop.sock_recv_into(self.a, bytearray(4)), 0)
            with self.assertRaises(BrokenPipeError):
                await self.loop.sock_sendall(self.a, b'x' * (1 << 20))
            with self.assertRaises(ValueError):
                await self.loop.sock_recv(self.a, -1)
            self.a.close()
            with self.assertRaises(OSError):
                await self.loop.sock_recv(self.a, 1)
        self.loop.run_until_complete(main())

    def test_a_large_sock_recv_answers_as_a_small_one(self):
        # sock_recv(sock, n) with n far above what waits (uvloop's echo
        # server asks for 1000000): what waits, the end of the stream and
        # errors, at call time and after a wait, as asyncio answers them.
        big = 1000000

        async def main():
            self.b.send(b'x' * 100000)
            got = await self.loop.sock_recv(self.a, big)
            self.assertEqual(got, b'x' * 100000)
            recv = asyncio.ensure_future(self.loop.sock_recv(self.a, big))
            await asyncio.sleep(0.01)
            self.assertFalse(recv.done())
            self.b.send(b'after a wait')
            self.assertEqual(await recv, b'after a wait')
            # A cancelled large receive loses no byte.
            recv = asyncio.ensure_future(self.loop.sock_recv(self.a, big))
            await asyncio.sleep(0.01)
            recv.cancel()
            self.b.send(b'kept')
            with self.assertRaises(asyncio.CancelledError):
                await recv
            self.assertEqual(await self.loop.sock_recv(self.a, big), b'kept')
            # The end found after a wait, then at call time.
            recv = asyncio.ensure_future(self.loop.sock_recv(self.a, big))
            await asyncio.sleep(0.01)
            self.b.shutdown(socket.SHUT_WR)
            self.assertEqual(await recv, b'')
            self.assertEqual(await self.loop.sock_recv(self.a, big), b'')
            # A reset pending on a TCP socket raises, as recv does.
            srv = socket.socket()
            srv.bind(('127.0.0.1', 0))
            srv.listen()
            cli = socket.create_connection(srv.getsockname())
            conn, _ = srv.accept()
            conn.setblocking(False)
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                           struct.pack('ii', 1, 0))
            cli.close()
            await asyncio.sleep(0.01)
            with self.assertRaises(ConnectionResetError):
                await self.loop.sock_recv(conn, big)
            conn.close()
            srv.close()
            # Datagrams are received whole: an empty one is taken (b''),
            # then the next.
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            r.setblocking(False)
            r.bind(('127.0.0.1', 0))
            s.sendto(b'', r.getsockname())
            s.sendto(b'd' * 65000, r.getsockname())
            await asyncio.sleep(0.01)
            self.assertEqual(await self.loop.sock_recv(r, big), b'')
            self.assertEqual(await self.loop.sock_recv(r, big), b'd' * 65000)
            r.close()
            s.close()
        self.loop.run_until_complete(main())

    @unittest.skipIf('libasan' in os.environ.get('LD_PRELOAD', ''),
                     "AddressSanitizer's allocator is not malloc's heap")
    def test_large_sock_recvs_take_no_fresh_memory_each(self):
        # A bytes object of n, shrunk to what came, leaves malloc's heap
        # in pieces too small for the next one: 100 KiB messages received
        # with n = 1000000 took about 27 fresh pages from the kernel each
        # (faulted in and zeroed), more CPU than the receive. Sized by
        # what waits, the memory of the message before is used again.
        # Counted in a fresh interpreter: what the tests before left in
        # malloc's heap changes its thresholds.
        out = subprocess.run(
            [sys.executable, '-c', LARGE_RECV_FAULTS, ENGINE],
            capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertLess(float(out), 2)

    def test_sock_methods_call_a_socket_subclass_own_methods(self):
        calls = []

        class Traced(socket.socket):
            def recv(self, n, *args):
                calls.append('recv')
                return super().recv(n, *args)

            def send(self, data, *args):
                calls.append('send')
                return super().send(data, *args)

        a, b = socket.socketpair()
        t = Traced(fileno=a.detach())
        t.setblocking(False)
        self.addCleanup(t.close)
        self.addCleanup(b.close)

        async def main():
            await self.loop.sock_sendall(t, b'ping')
            self.assertEqual(b.recv(4), b'ping')
            b.send(b'pong')
            self.assertEqual(await self.loop.sock_recv(t, 4), b'pong')
        self.loop.run_until_complete(main())
        self.assertEqual(calls, ['send', 'recv'])

    def test_datagram_sock_methods(self):
        async def main():
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for x in (r, s):
                x.setblocking(False)
            r.bind(('127.0.0.1', 0))
            s.bind(('127.0.0.1', 0))
            recv = asyncio.ensure_future(self.loop.sock_recvfrom(r, 100))
            await asyncio.sleep(0)
            await self.loop.sock_sendto(s, b'dgram', r.getsockname())
            # A poll that completes while the loop submits it (epoll tries
            # at once) must not leave the loop sleeping until a timer.
            t0 = self.loop.time()
            data, addr = await asyncio.wait_for(recv, 5)
            self.assertLess(self.loop.time() - t0, 1)
            same = addr == s.getsockname()
            r.close()
            s.close()
            return data, same
        self.assertEqual(self.loop.run_until_complete(main()), (b'dgram', True))


@unittest.skipUnless(threading.current_thread() is threading.main_thread(),
                     'signals need the main thread')
class SignalTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def test_signal_sent_before_run_forever_reaches_its_handler(self):
        caught = []
        self.loop.add_signal_handler(signal.SIGUSR1, lambda *a: (
            caught.append(a), self.loop.stop()), 'arg')
        os.kill(os.getpid(), signal.SIGUSR1)
        self.loop.call_later(5, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(caught, [('arg',)])
        self.assertTrue(self.loop.remove_signal_handler(signal.SIGUSR1))
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
        self.assertEqual(signal.set_wakeup_fd(-1), -1)

    def test_signal_while_the_loop_sleeps(self):
        caught = []
        self.loop.add_signal_handler(signal.SIGUSR2, lambda: (
            caught.append(1), self.loop.stop()))
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        self.loop.call_later(5, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(caught, [1])

    def test_close_removes_signal_handlers(self):
        self.loop.add_signal_handler(signal.SIGUSR1, print)
        self.loop.close()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
        self.assertEqual(signal.set_wakeup_fd(-1), -1)

    def test_coroutines_and_bad_signals_are_refused(self):
        async def coro():
            pass
        with self.assertRaises(TypeError):
            self.loop.add_signal_handler(signal.SIGUSR1, coro)
        with self.assertRaises(RuntimeError):
            self.loop.add_signal_handler(signal.SIGKILL, print)
        with self.assertRaises(ValueError):
            self.loop.add_signal_handler(0, print)


if __name__ == '__main__':
    unittest.main()
