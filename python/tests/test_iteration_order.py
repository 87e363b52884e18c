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

    def test_datagram_after_handles_queued_before_the_wait(self):
        # Two datagrams wait: asyncio reads one per readiness, so what
        # datagram_received schedules runs before the second one. On epoll
        # pact tries the next receive when it submits it, and finds the
        # second datagram there: its callback still waits for the handles
        # queued before the wait.
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    log.append('datagram:' + data.decode())
                    loop.call_soon(log.append, 'from-' + data.decode())
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                peer.bind(('127.0.0.1', 0))
                tr, _ = await loop.create_datagram_endpoint(
                    Proto, local_addr=('127.0.0.1', 0))
                await asyncio.sleep(0.01)
                addr = tr.get_extra_info('sockname')

                def step():
                    peer.sendto(b'1', addr)
                    peer.sendto(b'2', addr)
                    loop.call_soon(log.append, 'handle')
                loop.call_soon(step)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    if 'from-2' in log:
                        break
                tr.close()
                await asyncio.sleep(0)
                return list(log)  # not what the loop's close adds
            finally:
                peer.close()
        self.assert_order(scenario, ['handle', 'datagram:1', 'from-1',
                                     'datagram:2', 'from-2'])

    def test_write_done_after_handles_queued_before_the_wait(self):
        # A write pipe's transport holds what the pipe did not take; the
        # reader empties the pipe in the same callback. asyncio sends the
        # rest when its next select() says writable, after the handles
        # queued before it; pact on epoll sends it when it submits the
        # write, and its completion (resume_writing) waits for those
        # handles too.
        async def scenario():
            loop = asyncio.get_running_loop()
            log = []

            class Proto(asyncio.Protocol):
                def pause_writing(self):
                    log.append('pause')

                def resume_writing(self):
                    log.append('resume')
            r, w = os.pipe()
            os.set_blocking(r, False)

            def drain():
                try:
                    while os.read(r, 1 << 20):
                        pass
                except BlockingIOError:
                    pass
            try:
                tr, _ = await loop.connect_write_pipe(Proto,
                                                      os.fdopen(w, 'wb', 0))
                await asyncio.sleep(0.01)
                tr.set_write_buffer_limits(high=1, low=0)

                def step():
                    tr.write(b'x' * 100000)  # more than a pipe takes
                    drain()
                    log.append('drained')
                    loop.call_soon(log.append, 'handle')
                loop.call_soon(step)
                for _ in range(500):
                    await asyncio.sleep(0.002)
                    drain()
                    if 'resume' in log:
                        break
                tr.close()
                await asyncio.sleep(0)
                return list(log)  # not what the loop's close adds
            finally:
                os.close(r)
        self.assert_order(scenario, ['pause', 'drained', 'handle', 'resume'])

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
