# SPDX-License-Identifier: MIT
"""One iteration of the loop, in the order a program can observe, on
pact.asyncio (the engine PACT_ENGINE names) and on asyncio's own selector
loop, the reference: every test runs its scenario on both and wants the
same list, and the list asyncio gives. asyncio waits, appends the I/O callbacks its select() found to the
handles already queued, then the timers that are due, and runs all of
them; what those schedule runs in the next iteration. So a handle queued
before the wait runs before the I/O callbacks of that wait, even when the
I/O it finds was caused by the handle's predecessor."""
import asyncio
import os
import socket
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class Recorder(asyncio.Protocol):
    def __init__(self, log):
        self.log = log


def run(loop, coro):
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class IterationOrderTests(unittest.TestCase):
    def assert_order(self, scenario, expected):
        theirs = run(asyncio.SelectorEventLoop(), scenario())
        ours = run(pa.Loop(engine=ENGINE), scenario())
        self.assertEqual(theirs, expected, 'asyncio itself changed')
        self.assertEqual(ours, expected)

    def test_io_after_handles_queued_before_the_wait(self):
        # The peer's bytes are there when the next iteration waits, behind
        # a handle queued before it: the handle runs first, then
        # data_received, then the timer that is due; what data_received
        # schedules runs in the iteration after.
        async def scenario():
            loop = asyncio.get_running_loop()
            log, keep = [], []

            class Proto(Recorder):
                def data_received(self, data):
                    log.append('data')
                    loop.call_soon(log.append, 'from-data')
            try:
                a, b = socket.socketpair()
                keep.append(b)
                tr, _ = await loop.create_unix_connection(lambda: Proto(log),
                                                          sock=a)
                keep.append(tr)
                await asyncio.sleep(0.01)
                done = loop.create_future()

                def step():
                    b.send(b'x')
                    loop.call_at(loop.time(), log.append, 'timer')
                    loop.call_soon(log.append, 'handle')
                    loop.call_soon(loop.call_soon, done.set_result, None)
                loop.call_soon(step)
                await done
                await asyncio.sleep(0.01)
                return list(log)  # not what the loop's close adds
            finally:
                for k in keep:
                    k.close()
        self.assert_order(scenario, ['handle', 'data', 'timer', 'from-data'])

    def test_reader_after_handles_queued_before_the_wait(self):
        # add_reader's callback is an I/O callback too.
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []
            a, b = socket.socketpair()
            try:
                def readable():
                    log.append('reader')
                    a.recv(100)
                    loop.remove_reader(a)
                    loop.call_soon(log.append, 'from-reader')
                loop.add_reader(a, readable)
                await asyncio.sleep(0.01)
                done = loop.create_future()

                def step():
                    b.send(b'x')
                    loop.call_soon(log.append, 'handle')
                    loop.call_soon(loop.call_soon, done.set_result, None)
                loop.call_soon(step)
                await done
                await asyncio.sleep(0.01)
                return list(log)  # not what the loop's close adds
            finally:
                loop.remove_reader(a)
                a.close()
                b.close()
        self.assert_order(scenario, ['handle', 'reader', 'from-reader'])

    def test_due_timers_before_what_the_iteration_schedules(self):
        # Timers due at the wait run in that iteration, before the
        # handles its callbacks schedule.
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []
            done = loop.create_future()

            def step():
                loop.call_at(loop.time() - 1, log.append, 'timer')
                loop.call_soon(first)

            def first():
                log.append('first')
                loop.call_soon(log.append, 'from-first')
                loop.call_soon(loop.call_soon, done.set_result, None)
            loop.call_soon(step)
            await done
            return log
        self.assert_order(scenario, ['first', 'timer', 'from-first'])


if __name__ == '__main__':
    unittest.main()
