# SPDX-License-Identifier: MIT
"""Lifetimes of what a pact loop hands out: objects pact still calls back
stay alive whatever the garbage collector does; on the engine PACT_ENGINE
names."""
import asyncio
import gc
import os
import socket
import subprocess
import sys
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class LifetimeTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def run_main(self, coro, timeout=30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

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


if __name__ == '__main__':
    unittest.main()
