# SPDX-License-Identifier: MIT
"""Work a protocol schedules from a completion pact had before its wait.
On epoll a one-shot operation started in one iteration is tried at once
when pact submits it, at the start of the next: a send the kernel now
takes completes there, before the wait whose timeout pact.asyncio
computed from its queues. pact holds its callbacks (the transport's
resume_writing here; a datagram receive, a readiness poll, a sendfile's
end likewise) for after the wait hook, and makes that wait a poll, so
that what they schedule (call_soon, a future's callbacks, call_later,
stop()) never waits behind a sleep; on the engine PACT_ENGINE names."""
import asyncio
import os
import socket
import threading
import unittest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')
WATCHDOG = 5.0  # seconds: a loop asleep with work queued waits for this


class BeforeWaitTests(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def resumed_by_a_send_before_the_wait(self, on_resume, run):
        """A transport over a socket pair whose kernel buffers are full
        queues a write (its send waits) and is paused; in the same
        iteration the peer reads everything, so that on epoll the send
        completes when the next iteration submits it, and resume_writing
        runs after that iteration's poll. on_resume(loop) runs there.
        run() drives the loop until the scheduled work is done; a watchdog
        thread wakes a loop that slept instead. Returns whether it had
        to."""
        loop = self.loop
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        a.setblocking(False)
        b.setblocking(False)
        try:
            while True:
                a.send(bytes(1 << 16))
        except BlockingIOError:
            pass

        class Proto(asyncio.Protocol):
            def resume_writing(p):
                on_resume(loop)
        waiter = loop.create_future()
        tr = loop._make_socket_transport(a, Proto(), waiter)
        self.addCleanup(tr.close)
        loop.run_until_complete(waiter)
        tr.set_write_buffer_limits(high=100, low=0)

        def write():
            tr.write(bytes(1000))
            self.assertEqual(tr.get_write_buffer_size(), 1000)

        def peer_reads():
            try:
                while b.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
        woken = []
        loop.call_soon(write)
        loop.call_soon(peer_reads)
        watchdog = threading.Timer(
            WATCHDOG, lambda: loop.call_soon_threadsafe(woken.append, True))
        watchdog.start()
        try:
            run()
        finally:
            watchdog.cancel()
            watchdog.join()
        return bool(woken)

    def test_call_soon(self):
        done = self.loop.create_future()
        self.assertFalse(self.resumed_by_a_send_before_the_wait(
            lambda loop: loop.call_soon(done.set_result, None),
            lambda: self.loop.run_until_complete(done)),
            'the loop slept with a handle ready')

    def test_a_future_s_callbacks(self):
        done = self.loop.create_future()

        async def waiter():
            await done  # its wake-up is call_soon'ed by set_result
        self.assertFalse(self.resumed_by_a_send_before_the_wait(
            lambda loop: done.set_result(None),
            lambda: self.loop.run_until_complete(waiter())),
            'the loop slept with a task to wake')

    def test_call_later(self):
        done = self.loop.create_future()
        self.assertFalse(self.resumed_by_a_send_before_the_wait(
            lambda loop: loop.call_later(0.01, done.set_result, None),
            lambda: self.loop.run_until_complete(done)),
            'the loop slept past a timer')

    def test_stop(self):
        self.assertFalse(self.resumed_by_a_send_before_the_wait(
            lambda loop: loop.stop(), self.loop.run_forever),
            'the loop slept after stop()')

    def test_call_soon_threadsafe_from_another_thread_meanwhile(self):
        """A thread's call_soon_threadsafe while the loop's thread runs a
        callback inside its iteration (here one that waits for that thread,
        the GIL released) wakes the loop through pact_loop_wake only: it
        never calls into the pact loop another thread is running, which
        pact refuses (-EPERM) and, in debug mode, reports. Checked in a
        child with PACT_DEBUG=1, whose stderr carries such reports."""
        import subprocess
        import sys
        code = (
            'import sys, unittest\n'
            'sys.path[:0] = %r\n'
            'import test_before_wait as t\n'
            'case = t.BeforeWaitTests("_foreign_thread_meanwhile")\n'
            'r = unittest.TextTestRunner(verbosity=0).run(case)\n'
            'sys.exit(0 if r.wasSuccessful() else 1)\n'
        ) % ([os.path.dirname(os.path.abspath(__file__))] + sys.path,)
        env = dict(os.environ, PACT_DEBUG='1', PACT_ENGINE=ENGINE)
        p = subprocess.run([sys.executable, '-c', code], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn('pact_call_soon', p.stderr)

    def _foreign_thread_meanwhile(self):
        done = self.loop.create_future()

        def on_resume(loop):
            t = threading.Thread(
                target=loop.call_soon_threadsafe,
                args=(done.set_result, None))
            t.start()
            t.join()
        self.assertFalse(self.resumed_by_a_send_before_the_wait(
            on_resume, lambda: self.loop.run_until_complete(done)),
            'the loop slept with a handle ready')


if __name__ == '__main__':
    unittest.main()
