# SPDX-License-Identifier: MIT
"""What the unittest suites of pact.asyncio share: the engine PACT_ENGINE
names ('auto' when unset; python/tests/run.sh runs every suite on each
engine), and PactLoopTestCase, a test on a fresh pact.asyncio loop of that
engine (self.loop, closed after the test) with run_main, which runs a
coroutine on it to its end or fails it after a timeout."""
import asyncio
import os
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class PactLoopTestCase(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def run_main(self, coro, timeout=30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
