# SPDX-License-Identifier: MIT
"""Lifetimes of what a pact loop hands out: objects pact still calls back
stay alive whatever the garbage collector does; on the engine PACT_ENGINE
names."""
import asyncio
import gc
import os
import socket
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


if __name__ == '__main__':
    unittest.main()
