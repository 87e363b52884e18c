# SPDX-License-Identifier: MIT
"""Lifetimes of what a pact loop hands out: objects pact still calls back
stay alive whatever the garbage collector does; on the engine PACT_ENGINE
names."""
import asyncio
import gc
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import warnings

import pact.asyncio as pa
from pact_loop_case import ENGINE, PactLoopTestCase


class LifetimeTests(PactLoopTestCase):
    def test_a_collection_before_connection_made_keeps_the_transport(self):
        # Between accepting and connection_made the only strong references
        # to a new server-side transport are pact's own and the accept
        # task's, which nothing else holds. A collection right then (here:
        # in the factory of the next connection accepted in the same
        # batch) must leave the transport, its protocol and its waiter
        # alone; if it does not, connection_made never comes and the
        # socket object closes the fd under pact.
        made = []

        class Hello(asyncio.Protocol):
            def connection_made(p, transport):
                made.append(transport)
                transport.write(b'hello')

        def factory():
            gc.collect()
            return Hello()

        async def main():
            listener = socket.socket()
            listener.bind(('127.0.0.1', 0))
            listener.listen(16)
            clients = []
            for _ in range(4):  # all waiting before the server accepts
                c = socket.create_connection(listener.getsockname())
                c.setblocking(False)
                clients.append(c)
            srv = await self.loop.create_server(factory, sock=listener)
            try:
                for c in clients:
                    got = await asyncio.wait_for(self.loop.sock_recv(c, 100), 10)
                    self.assertEqual(got, b'hello')
            finally:
                for c in clients:
                    c.close()
                srv.close()
                await srv.wait_closed()
            self.assertEqual(len(made), 4)
        self.run_main(main())

    def test_a_loop_left_open_at_exit_closes_quietly(self):
        # A loop nobody closed (pytest-asyncio leaves one set in the policy;
        # scripts keep one in a global) is collected during interpreter
        # shutdown, when module globals may be None already: __del__ closes
        # it without an exception (its ResourceWarning shows only while
        # sys.stderr is still there, as with asyncio's loops).
        for keep in ('loop = pact.asyncio.new_event_loop(engine=ENGINE)',
                     'pact.asyncio.install()\n'
                     'asyncio.set_event_loop(asyncio.new_event_loop())',
                     'loop = pact.asyncio.new_event_loop(engine=ENGINE)\n'
                     'loop.add_signal_handler(signal.SIGUSR1, print)'):
            code = ('import asyncio, os, signal, pact.asyncio\n'
                    'ENGINE = os.environ.get("PACT_ENGINE", "auto")\n' + keep)
            p = subprocess.run([sys.executable, '-W', 'default', '-c', code],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertNotIn('Traceback', p.stderr)
            self.assertNotIn('Exception ignored', p.stderr)

    def test_connection_lost_at_loop_close_may_schedule(self):
        # A transport closed just before the loop (writer.close() without
        # waiting): its connection_lost, due at the next iteration, runs
        # inside loop.close(), and may use the loop as it would anywhere
        # (asyncio's SSLProtocol and streams call call_soon there): no
        # "Event loop is closed" from inside close(). What it schedules is
        # dropped.
        unraisable = []
        old_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: unraisable.append(repr(u.exc_value))
        self.addCleanup(setattr, sys, 'unraisablehook', old_hook)
        lost = []

        class Scheduler(asyncio.Protocol):
            def connection_lost(p, exc):
                lost.append(exc)
                self.loop.call_soon(lost.append, 'never run')
                self.loop.call_later(1, lost.append, 'never run')

        async def main():
            a, b = socket.socketpair()
            tr, _ = await self.loop.create_connection(Scheduler, sock=a)
            return tr, b
        tr, b = self.run_main(main())
        tr.close()
        self.assertEqual(lost, [])
        self.loop.close()
        b.close()
        self.assertEqual(unraisable, [])
        self.assertEqual(lost, [None])
        self.assertTrue(self.loop.is_closed())


def open_fds():
    return set(os.listdir('/proc/self/fd'))


class StringsHandler(logging.Handler):
    """Keeps the messages logged at WARNING and above as strings: a record
    keeps its arguments (a transport, its process) alive."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class CloseWithEverythingOpenTests(unittest.TestCase):
    """loop.close() with servers, connections (plain, Unix), pipes,
    datagram endpoints, a subprocess (ended; one still running is
    test_close_with_a_subprocess_running), readers, writers, a timer and the
    executor still open. As with asyncio's loop, what the program left open
    stays open until it closes it; the program then closes the servers,
    writers and transports it holds (pact's transports release their fds
    then; asyncio's raise 'Event loop is closed' instead). Nothing is
    reported: no exception from close() or unraised, nothing to the
    exception handler, no warning logged by asyncio, no ResourceWarning
    (each one is recorded, so that none hides in a __del__), and no fd is
    left open (the loop's own included). Under the sanitized build
    (python/tests/run.sh) LeakSanitizer checks what was left in memory.

    Not here: TLS, which asyncio's SSLProtocol can only close while the
    loop runs (after the loop closed, close() raises 'Event loop is
    closed' on asyncio's loop too)."""

    maxDiff = None

    def close_with_open(self, open_everything):
        """Runs open_everything(loop, tmp) on a new loop, closes the loop,
        then what it returned (its last item: the caller's own sockets);
        returns what was reported and the fds left open."""
        gc.collect()
        before = open_fds()
        unraisable = []
        old_hook = sys.unraisablehook
        # Strings only: a traceback kept here would keep its objects open.
        sys.unraisablehook = lambda u: unraisable.append(
            '%r in %r' % (u.exc_value, u.object))
        self.addCleanup(setattr, sys, 'unraisablehook', old_hook)
        logged = StringsHandler()
        logger = logging.getLogger('asyncio')
        logger.addHandler(logged)
        self.addCleanup(logger.removeHandler, logged)
        tmp = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, tmp)
        # asyncio 3.11 leaves a Unix server's path behind (3.13 unlinks it).
        self.addCleanup(lambda: [os.unlink(os.path.join(tmp, name))
                                 for name in os.listdir(tmp)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            loop = pa.Loop(engine=ENGINE)
            handled = []
            loop.set_exception_handler(lambda loop, ctx: handled.append(ctx))
            kept = loop.run_until_complete(
                asyncio.wait_for(open_everything(loop, tmp), 30))
            loop.close()
            for sock in kept.pop():  # the caller's own sockets
                sock.close()
            # What a program closes in its finally: after the loop closed.
            for obj in kept:
                if isinstance(obj, (asyncio.StreamWriter, asyncio.Server,
                                    asyncio.BaseTransport)):
                    obj.close()
            obj = kept = loop = None
            # asyncio's child watcher (ThreadedChildWatcher, 3.11's default)
            # reaps a child in a thread of its own, named waitpid-N, which
            # holds the subprocess transport until then.
            for thread in threading.enumerate():
                if thread.name.startswith('waitpid-'):
                    thread.join(30)
            gc.collect()
        return {'unraisable': unraisable,
                'warnings': [str(w.message) for w in caught],
                'logged': logged.messages,
                'exception handler': [ctx.get('message') for ctx in handled],
                'fds': sorted(open_fds() - before)}

    def test_close_leaves_nothing(self):
        self.assertEqual(self.close_with_open(self.open_everything),
                         {'unraisable': [], 'warnings': [], 'logged': [],
                          'exception handler': [], 'fds': []})

    def test_close_with_a_subprocess_running(self):
        # A subprocess still running at close: the program's close() of its
        # transport afterwards kills it (asyncio's subprocess transport),
        # and the child watcher's thread reaps it, so no fd and no zombie
        # is left. What is reported is asyncio's own, about the process's
        # end the closed loop can no longer hear: the watcher's warning
        # that the loop handling the pid is closed, and subprocess.Popen's
        # ResourceWarning that the process it never saw end still runs;
        # in debug mode also the transport's warning as it kills the
        # process. (On asyncio's own loops that close() raises 'Event loop
        # is closed', from its pipe transports.)
        opened = []

        async def open_running(loop, tmp):
            transport, _ = await loop.subprocess_exec(
                asyncio.SubprocessProtocol, 'sleep', '60',
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            opened.append((transport.get_pid(), loop.get_debug()))
            return [transport, ()]
        left = self.close_with_open(open_running)
        pid, debug = opened[0]
        logged = left.pop('logged')
        self.assertEqual(left, {
            'unraisable': [],
            'warnings': ['subprocess %d is still running' % pid],
            'exception handler': [], 'fds': []})
        expected = [r'^Loop <.*> that handles pid %d is closed$' % pid]
        if debug:
            expected.insert(0, r'^Close running child process: kill '
                            r'<_UnixSubprocessTransport closed pid=%d running ' % pid)
        self.assertEqual(len(logged), len(expected), logged)
        for message, pattern in zip(logged, expected):
            self.assertRegex(message, pattern)
        self.assertFalse(os.path.exists('/proc/%d' % pid), 'not reaped')

    async def open_everything(self, loop, tmp):
        kept = []

        async def handler(reader, writer):
            kept.append(writer)
            data = await reader.readexactly(4)
            writer.write(data)

        # A plain server with a connection each way, mid-conversation.
        srv = await asyncio.start_server(handler, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'ping')
        self.assertEqual(await r.readexactly(4), b'ping')
        kept += [srv, r, w]
        # Unix.
        path = os.path.join(tmp, 'sock')
        xsrv = await asyncio.start_unix_server(handler, path)
        xr, xw = await asyncio.open_unix_connection(path)
        xw.write(b'unix')
        self.assertEqual(await xr.readexactly(4), b'unix')
        kept += [xsrv, xr, xw]
        # Pipes, both ways.
        rfd, wfd = os.pipe()
        rpipe = open(rfd, 'rb', buffering=0)
        wpipe = open(wfd, 'wb', buffering=0)
        kept += await loop.connect_read_pipe(asyncio.Protocol, rpipe)
        kept += await loop.connect_write_pipe(asyncio.Protocol, wpipe)
        # Datagram endpoints: a bound one that received a datagram and has
        # another on its way at close, and a connected one that sent them.
        received = loop.create_future()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(p, data, addr):
                if not received.done():
                    received.set_result(data)
        kept += await loop.create_datagram_endpoint(
            Receiver, local_addr=('127.0.0.1', 0))
        kept += await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol,
            remote_addr=kept[-2].get_extra_info('sockname'))
        kept[-2].sendto(b'first')
        self.assertEqual(await received, b'first')
        kept[-2].sendto(b'in flight')
        # A subprocess that ended while the loop ran, its transport (and
        # its stdin pipe) not closed.
        exited = loop.create_future()

        class Exits(asyncio.SubprocessProtocol):
            def process_exited(p):
                exited.set_result(None)
        kept += await loop.subprocess_exec(
            Exits, sys.executable, '-c', 'pass', stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        await exited
        # Readiness watchers on a socket pair (the caller's sockets: closed
        # by their owner, here right after the loop).
        a, b = socket.socketpair()
        loop.add_reader(a, lambda: None)
        loop.add_writer(b, lambda: None)
        # A timer far ahead, an executor that ran something.
        kept.append(loop.call_later(3600, lambda: None))
        kept.append(await loop.run_in_executor(None, sum, [1, 2]))
        kept.append((a, b))
        return kept


if __name__ == '__main__':
    unittest.main()
