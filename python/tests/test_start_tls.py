# SPDX-License-Identifier: MIT
"""TLS upgraded with start_tls over a pact transport (asyncio's SSLProtocol
on top): its fatal errors reach the reader as they do on asyncio's own
loop, never as a clean end of stream; on the engine PACT_ENGINE names."""
import asyncio
import os
import socket
import ssl
import threading
import unittest
from test.test_asyncio import utils as test_utils

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class StartTlsErrorTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)
        self.reported = []
        self.loop.set_exception_handler(
            lambda loop, ctx: self.reported.append(ctx))

    def test_a_corrupted_record_is_an_ssl_error_not_eof(self):
        # SSLProtocol ends its transport with _force_close(exc) on a fatal
        # error (asyncio's transports have it): a pact transport without
        # it raised AttributeError inside buffer_updated, and the reader
        # saw b'' (a truncation taken for a clean end) instead of SSLError.
        a, b = socket.socketpair()
        raw = b.dup()  # the server's plain socket under its TLS
        server_ctx = test_utils.simple_server_sslcontext()

        def server():
            with server_ctx.wrap_socket(b, server_side=True) as tls:
                tls.sendall(b'hello\n')
                tls.recv(1)
                raw.sendall(b'this is not a TLS record')
        thread = threading.Thread(target=server)
        thread.start()
        self.addCleanup(raw.close)

        async def main():
            reader, writer = await asyncio.open_connection(sock=a)
            self.assertEqual(type(writer.transport).__module__, 'pact._pact')
            await writer.start_tls(test_utils.simple_client_sslcontext())
            self.assertEqual(await reader.readline(), b'hello\n')
            writer.write(b'!')
            with self.assertRaises(ssl.SSLError):
                await reader.read()
            self.assertTrue(writer.transport.is_closing())
            writer.close()
        self.loop.run_until_complete(asyncio.wait_for(main(), 30))
        thread.join(30)
        # Nothing for the exception handler (an SSLError is an OSError,
        # which SSLProtocol only logs in debug mode), as on asyncio's loop:
        # no failed protocol call.
        self.assertEqual([ctx['message'] for ctx in self.reported], [])


if __name__ == '__main__':
    unittest.main()
