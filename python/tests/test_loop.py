# SPDX-License-Identifier: MIT
"""pact.asyncio.Loop: scheduling, running, errors, executor, policy.

Runs on the engine PACT_ENGINE names ('uring' or 'epoll'; make test-python
runs it on both), passed as Loop(engine=...)."""
import asyncio
import contextvars
import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import unittest
import warnings
import weakref

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


class LoopTestCase(unittest.TestCase):
    def setUp(self):
        self.loop = pa.Loop(engine=ENGINE)
        self.addCleanup(self.loop.close)

    def run_briefly(self, n=1):
        for _ in range(n):
            self.loop._run_once()


class EngineTests(unittest.TestCase):
    def test_the_engine_asked_for_runs_and_is_named(self):
        for engine in ('uring', 'epoll'):
            if engine == 'uring' and ENGINE == 'epoll':
                continue
            loop = pa.Loop(engine=engine)
            try:
                self.assertEqual(loop.engine, engine)
                self.assertIsNone(loop.engine_reason)
            finally:
                loop.close()

    def test_auto_follows_pact_engine(self):
        loop = pa.new_event_loop()
        try:
            if ENGINE in ('uring', 'epoll'):
                self.assertEqual(loop.engine, ENGINE)
            else:
                self.assertIn(loop.engine, ('uring', 'epoll'))
        finally:
            loop.close()

    def test_unknown_engine_is_a_value_error(self):
        with self.assertRaisesRegex(ValueError, "'auto', 'uring' or 'epoll'"):
            pa.Loop(engine='kqueue')

    def test_it_is_an_asyncio_loop_with_a_dict(self):
        loop = pa.Loop(engine=ENGINE)
        try:
            self.assertIsInstance(loop, asyncio.AbstractEventLoop)
            loop.custom = 42  # tests and libraries patch loop instances
            self.assertEqual(loop.custom, 42)
            self.assertIn('running=False', repr(loop))
        finally:
            loop.close()


class ScheduleTests(LoopTestCase):
    def test_call_soon_runs_in_order_with_args_and_returns_a_handle(self):
        seen = []
        h = self.loop.call_soon(seen.append, 1)
        self.loop.call_soon(seen.append, 2)
        self.assertIsInstance(h, asyncio.Handle)
        self.assertNotIsInstance(h, asyncio.TimerHandle)
        self.run_briefly()
        self.assertEqual(seen, [1, 2])

    def test_callbacks_scheduled_by_callbacks_run_next_iteration(self):
        seen = []

        def first():
            seen.append('first')
            self.loop.call_soon(seen.append, 'second')
        self.loop.call_soon(first)
        self.run_briefly()
        self.assertEqual(seen, ['first'])
        self.run_briefly()
        self.assertEqual(seen, ['first', 'second'])

    def test_cancelled_handles_never_run(self):
        seen = []
        h = self.loop.call_soon(seen.append, 1)
        t = self.loop.call_later(0.001, seen.append, 2)
        h.cancel()
        t.cancel()
        self.assertTrue(h.cancelled())
        self.loop.call_later(0.02, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(seen, [])

    def test_context_is_entered_for_the_callback(self):
        var = contextvars.ContextVar('var', default='outside')
        seen = []
        ctx = contextvars.copy_context()
        ctx.run(var.set, 'inside')
        self.loop.call_soon(lambda: seen.append(var.get()), context=ctx)
        self.loop.call_later(0, lambda: seen.append(var.get()), context=ctx)
        self.loop.call_soon(lambda: seen.append(var.get()))
        self.loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        self.loop.call_later(0.001, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(sorted(seen), ['inside', 'inside', 'inside', 'outside'])

    def test_handles_are_asyncios_own_types_with_their_whole_api(self):
        # The C core fills and runs asyncio's Handle/TimerHandle itself;
        # what code sees must be exactly what asyncio's loop returns.
        ctx = contextvars.copy_context()
        h = self.loop.call_soon(print, 1, context=ctx)
        self.assertIs(type(h), asyncio.Handle)
        self.assertIs(h._context, ctx)  # get_context() from 3.12 on
        self.assertFalse(h.cancelled())
        self.assertEqual(h._args, (1,))
        self.assertIsNone(h._source_traceback)
        self.assertIn('print', repr(h))
        self.assertIsInstance(self.loop.call_soon(print)._context,
                              contextvars.Context)
        t = self.loop.call_at(self.loop.time() + 100, print)
        self.assertIs(type(t), asyncio.TimerHandle)
        self.assertTrue(t._scheduled)
        self.assertIn('when=', repr(t))
        t2 = self.loop.call_later(100, print)
        self.assertLess(t.when() - 1, t2.when())
        self.assertLessEqual(t, t2)
        t.cancel()
        self.assertTrue(t.cancelled())
        self.assertIsNone(t._callback)
        self.assertEqual(self.loop._timer_cancelled_count, 1)
        h.cancel()
        self.assertIn('cancelled', repr(h))

    def test_a_callback_may_cancel_its_own_handle(self):
        seen = []
        box = []

        def cb(x):
            box[0].cancel()
            seen.append(x)
        box.append(self.loop.call_soon(cb, 'ran'))
        tbox = []

        def tcb():
            tbox[0].cancel()
            seen.append('timer')
        tbox.append(self.loop.call_later(0, tcb))
        self.loop.call_later(0.001, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(seen, ['ran', 'timer'])
        self.assertTrue(box[0].cancelled())
        self.assertEqual(self.loop._timer_cancelled_count, 0)

    def test_a_context_already_entered_is_reported_as_asyncio_does(self):
        # Handle._run's Context.run raises RuntimeError for a context that
        # is already entered, and reports it to the exception handler.
        contexts = []
        self.loop.set_exception_handler(lambda loop, c: contexts.append(c))
        ctx = contextvars.copy_context()
        h = self.loop.call_soon(print, 'never', context=ctx)
        ctx.run(self.loop._run_once)
        self.assertEqual(len(contexts), 1)
        self.assertIsInstance(contexts[0]['exception'], RuntimeError)
        self.assertIs(contexts[0]['handle'], h)
        self.assertTrue(contexts[0]['message'].startswith('Exception in callback print('))

    def test_unknown_keyword_is_a_type_error(self):
        with self.assertRaises(TypeError):
            self.loop.call_soon(print, ctx=None)
        with self.assertRaises(TypeError):
            self.loop.call_later(None, print)
        with self.assertRaises(TypeError):
            self.loop.call_at(None, print)

    def test_time_is_time_monotonic(self):
        a = time.monotonic()
        t = self.loop.time()
        b = time.monotonic()
        self.assertLessEqual(a, t)
        self.assertLessEqual(t, b)

    def test_timers_are_never_early_and_run_in_deadline_order(self):
        seen = []

        def fire(tag, when):
            seen.append((tag, self.loop.time() >= when))
        now = self.loop.time()
        for tag, delay in (('c', 0.03), ('a', 0.01), ('b', 0.02), ('b2', 0.02)):
            h = self.loop.call_at(now + delay, fire, tag, now + delay)
            self.assertIsInstance(h, asyncio.TimerHandle)
            self.assertEqual(h.when(), now + delay)
        self.loop.call_at(now + 0.04, self.loop.stop)
        t0 = time.monotonic()
        self.loop.run_forever()
        self.assertGreaterEqual(time.monotonic() - t0, 0.035)
        self.assertEqual(seen, [('a', True), ('b', True), ('b2', True), ('c', True)])

    def test_many_cancelled_timers_are_dropped_from_the_heap(self):
        handles = [self.loop.call_later(3600, print) for _ in range(300)]
        for h in handles[:250]:
            h.cancel()
        self.assertEqual(self.loop._timer_cancelled_count, 250)
        self.loop.call_soon(int)  # so the iteration does not block
        self.run_briefly()
        self.assertEqual(self.loop.stats()['timers'], 50)
        self.assertEqual(self.loop._timer_cancelled_count, 0)
        for h in handles[250:]:
            h.cancel()

    def test_call_soon_threadsafe_wakes_a_sleeping_loop(self):
        woke = []

        def from_thread():
            time.sleep(0.05)
            self.loop.call_soon_threadsafe(lambda: (woke.append(1), self.loop.stop()))
        self.loop.call_later(30, print)  # the loop would sleep 30 s
        th = threading.Thread(target=from_thread)
        th.start()
        t0 = time.monotonic()
        self.loop.run_forever()
        th.join()
        self.assertEqual(woke, [1])
        self.assertLess(time.monotonic() - t0, 5)

    def test_the_gil_is_released_while_the_loop_sleeps(self):
        # A thread spinning in Python gets the GIL while the loop waits for
        # its timer; the loop's callbacks run with it held.
        counter = [0]
        done = threading.Event()

        def spin():
            while not done.is_set():
                counter[0] += 1
        th = threading.Thread(target=spin)
        self.loop.call_later(0.2, self.loop.stop)
        th.start()
        try:
            self.loop.run_forever()
        finally:
            done.set()
            th.join()
        self.assertGreater(counter[0], 1000)


class RunTests(LoopTestCase):
    def test_run_until_complete_returns_the_result(self):
        async def main():
            await asyncio.sleep(0.01)
            self.assertIs(asyncio.get_running_loop(), self.loop)
            self.assertTrue(self.loop.is_running())
            return 'done'
        self.assertEqual(self.loop.run_until_complete(main()), 'done')
        self.assertFalse(self.loop.is_running())

    def test_run_until_complete_raises_the_exception(self):
        async def main():
            raise ZeroDivisionError
        with self.assertRaises(ZeroDivisionError):
            self.loop.run_until_complete(main())

    def test_short_sleeps_do_not_spin(self):
        # asyncio's test_timeout_rounding: sub-resolution sleeps must not
        # make the loop iterate in a hot loop.
        async def wait():
            for delay in (1e-2, 1e-4, 1e-6, 1e-8, 1e-10):
                await asyncio.sleep(delay)
        before = self.loop.stats()['iterations']
        self.loop.run_until_complete(wait())
        self.assertLessEqual(self.loop.stats()['iterations'] - before, 20)

    def test_stats_tell_how_the_loop_receives_and_waits(self):
        # A loop starts on io_uring's fast ring (multishot receive on
        # provided buffers, where the kernel has it) and receives through
        # readiness once another thread has run it; stats() says which,
        # and counts the engine's waits (io_uring_enter / epoll_wait).
        # A pact.asyncio loop is movable: it starts on the fast ring only
        # where closing a ring ends its waiting receives without doing
        # them (Linux 6.17, 6.16.9, 6.12.49: ring_teardown_skips_waiting_io
        # in src/unix/engine_uring.c), else on the plain ring ('poll').
        numbers = os.uname().release.split('-')[0].split('.')
        major, minor = int(numbers[0]), int(numbers[1])
        patch = int(numbers[2]) if len(numbers) > 2 and numbers[2].isdigit() else 0
        if major != 6:
            fast = major > 6
        else:
            fast = (minor >= 17 or (minor == 16 and patch >= 9) or
                    (minor == 12 and patch >= 49))
        masked = os.environ.get('PACT_URING_MASK', '')
        if any(name in masked for name in ('teardown', 'setup', 'multishot', 'all')):
            fast = False
        if self.loop.engine == 'epoll':
            first = moved = 'epoll'
        else:
            forced = os.environ.get('PACT_RECV_MULTISHOT') == 'poll'
            first = 'multishot' if fast and not forced else 'poll'
            moved = 'poll'
        received = []

        class Sink(asyncio.Protocol):
            def data_received(p, data):
                received.append(data)

        async def exchange():
            a, b = socket.socketpair()
            tr, _ = await self.loop.connect_accepted_socket(Sink, a)
            b.send(b'ping')
            while not received:
                await asyncio.sleep(0.001)
            tr.close()
            b.close()

        before = self.loop.stats()
        self.assertEqual(before['receive'], first)
        self.loop.run_until_complete(exchange())
        after = self.loop.stats()
        self.assertEqual(received, [b'ping'])
        self.assertEqual(after['receive'], first)
        self.assertGreater(after['enters'], before['enters'])
        self.assertGreaterEqual(after['iterations'], after['enters'])
        self.assertGreater(after['ops_completed'], before['ops_completed'])
        t = threading.Thread(target=self.loop.run_until_complete,
                             args=(asyncio.sleep(0),))
        t.start()
        t.join()
        self.assertEqual(self.loop.stats()['receive'], moved)

    def test_stop_then_run_again(self):
        seen = []
        self.loop.call_soon(self.loop.stop)
        self.loop.call_soon(seen.append, 1)
        self.loop.run_forever()
        self.assertEqual(seen, [1])  # stop() lets the iteration finish
        self.loop.call_soon(seen.append, 2)
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(seen, [1, 2])

    def test_run_forever_in_a_thread_then_run_and_close_in_this_one(self):
        # asyncio's own pattern: a loop run by a thread, stopped from here,
        # then run again and closed here; the future its task resolves and
        # a reader added on the thread keep working across the move.
        a, b = __import__('socket').socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        got = []
        started = threading.Event()

        def add_reader():
            self.loop.add_reader(a, lambda: got.append(a.recv(10)))
            started.set()
        self.loop.call_soon(add_reader)
        t = threading.Thread(target=self.loop.run_forever)
        t.start()
        self.assertTrue(started.wait(5))
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.sleep(0.01, result='thread'), self.loop)
        self.assertEqual(fut.result(5), 'thread')
        with self.assertRaisesRegex(RuntimeError, 'running'):
            self.loop.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        t.join(5)
        self.assertFalse(t.is_alive())
        b.send(b'moved')
        async def until_read():
            while not got:
                await asyncio.sleep(0.001)
        self.loop.run_until_complete(asyncio.wait_for(until_read(), 5))
        self.assertEqual(got, [b'moved'])
        self.assertTrue(self.loop.remove_reader(a))
        self.loop.close()
        self.assertTrue(self.loop.is_closed())

    def test_a_stream_received_on_a_thread_goes_on_here_byte_for_byte(self):
        # The loop starts on io_uring's fast ring bound to the thread that
        # runs it (multishot receive); run here afterwards, it moves to a
        # ring of its own. A transport's bytes received there, sent while
        # nobody ran the loop, and sent after the move arrive once, in
        # order, and its echo goes back.
        a, b = __import__('socket').socketpair()
        self.addCleanup(b.close)
        got = bytearray()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                got.extend(data)
                self.transport.write(data)

        async def connect():
            return await self.loop.connect_accepted_socket(Echo, a)
        first = bytes(range(256)) * 64
        b.sendall(first)

        def on_thread():
            transport, _ = self.loop.run_until_complete(connect())
            async def until(n):
                while len(got) < n:
                    await asyncio.sleep(0.001)
            self.loop.run_until_complete(asyncio.wait_for(until(len(first)), 5))
            return transport
        result = []
        t = threading.Thread(target=lambda: result.append(on_thread()))
        t.start()
        t.join(10)
        self.assertFalse(t.is_alive())
        transport = result[0]
        second = bytes(reversed(range(256))) * 300
        b.sendall(second)  # nobody runs the loop now

        async def finish():
            third = b'after the move' * 1000
            b.sendall(third)
            want = first + second + third
            while len(got) < len(want):
                await asyncio.sleep(0.001)
            return want
        want = self.loop.run_until_complete(asyncio.wait_for(finish(), 5))
        self.assertEqual(bytes(got), want)
        echoed = bytearray()
        b.settimeout(5)
        while len(echoed) < len(want):
            echoed.extend(b.recv(1 << 16))
        self.assertEqual(bytes(echoed), want)
        transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))

    def test_nested_run_is_refused(self):
        async def main():
            coro = asyncio.sleep(0)
            with self.assertRaisesRegex(RuntimeError, 'already running'):
                self.loop.run_until_complete(coro)
            coro.close()
        self.loop.run_until_complete(main())

    def test_closed_loop_refuses_work(self):
        self.loop.close()
        self.assertTrue(self.loop.is_closed())
        with self.assertRaisesRegex(RuntimeError, 'closed'):
            self.loop.call_soon(print)
        with self.assertRaisesRegex(RuntimeError, 'closed'):
            self.loop.call_later(1, print)
        with self.assertRaisesRegex(RuntimeError, 'closed'):
            self.loop.run_forever()
        self.loop.close()  # twice is fine

    def test_close_while_running_is_refused(self):
        async def main():
            with self.assertRaisesRegex(RuntimeError, 'running'):
                self.loop.close()
        self.loop.run_until_complete(main())

    def test_tasks_futures_and_the_task_factory(self):
        made = []

        def factory(loop, coro, **kw):
            made.append(coro)
            return asyncio.Task(coro, loop=loop, **kw)
        self.loop.set_task_factory(factory)
        self.assertIs(self.loop.get_task_factory(), factory)

        async def main():
            fut = self.loop.create_future()
            self.loop.call_later(0.01, fut.set_result, 7)
            t = self.loop.create_task(asyncio.sleep(0, 'x'), name='n')
            self.assertEqual(t.get_name(), 'n')
            return await fut + len(await t)
        self.assertEqual(self.loop.run_until_complete(main()), 8)
        self.assertEqual(len(made), 2)

    def test_create_task_and_create_future_without_a_factory(self):
        # The C fast path (no factory, no debug) must be asyncio's.
        var = contextvars.ContextVar('var', default='outside')
        ctx = contextvars.copy_context()
        ctx.run(var.set, 'inside')

        async def read_var():
            return var.get()
        fut = self.loop.create_future()
        self.assertIs(type(fut), asyncio.Future)
        self.assertIs(fut.get_loop(), self.loop)
        t = self.loop.create_task(read_var(), name='named', context=ctx)
        self.assertIs(type(t), asyncio.Task)
        self.assertEqual(t.get_name(), 'named')
        self.assertIs(t.get_loop(), self.loop)
        self.assertEqual(self.loop.run_until_complete(t), 'inside')
        self.assertRegex(self.loop.create_task(read_var()).get_name(), r'^Task-\d+$')
        refused = read_var()
        with self.assertRaises(TypeError):
            self.loop.create_task(refused, nom='x')
        refused.close()  # never started: no "never awaited" warning
        with self.assertRaises(TypeError):
            self.loop.create_task()
        self.loop.set_task_factory(None)
        self.assertIsNone(self.loop.get_task_factory())
        loop = pa.Loop(engine=ENGINE)
        loop.close()
        coro = read_var()
        with self.assertRaisesRegex(RuntimeError, 'Event loop is closed'):
            loop.create_task(coro)
        coro.close()
        self.loop.run_until_complete(asyncio.sleep(0))

    def test_asyncgens_are_finalised_by_shutdown_asyncgens(self):
        closed = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                closed.append(True)

        async def main():
            g = agen()
            await g.__anext__()
            self._keep = g  # unfinished, not collected
        self.loop.run_until_complete(main())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.assertEqual(closed, [True])

    def test_keyboard_interrupt_escapes_run_forever(self):
        def raise_ki():
            raise KeyboardInterrupt
        self.loop.call_soon(raise_ki)
        with self.assertRaises(KeyboardInterrupt):
            self.loop.run_forever()
        self.assertFalse(self.loop.is_running())

    def test_loop_is_collected(self):
        loop = pa.Loop(engine=ENGINE)
        loop.call_soon(lambda: loop)  # a cycle through the ready queue
        loop.close()
        ref = weakref.ref(loop)
        del loop
        gc.collect()
        self.assertIsNone(ref())


class ErrorTests(LoopTestCase):
    def test_exception_in_a_callback_goes_to_the_handler(self):
        contexts = []
        self.loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

        def fail():
            raise ValueError('boom')
        h = self.loop.call_soon(fail)
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(len(contexts), 1)
        self.assertIsInstance(contexts[0]['exception'], ValueError)
        self.assertIs(contexts[0]['handle'], h)

    def test_a_failing_callback_is_reported_with_asyncios_message(self):
        contexts = []
        self.loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

        def fail(x):
            raise KeyError(x)
        h = self.loop.call_soon(fail, 'k')
        t = self.loop.call_later(0, fail, 't')
        self.loop.call_later(0.001, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual([c['handle'] for c in contexts], [h, t])
        self.assertEqual(contexts[0]['message'],
                         f'Exception in callback {fail.__qualname__}(\'k\') at '
                         f'{__file__}:{fail.__code__.co_firstlineno}')
        self.assertIsNotNone(contexts[0]['exception'].__traceback__)
        self.assertNotIn('source_traceback', contexts[0])

    def test_system_exit_in_a_callback_leaves_run_forever(self):
        def leave():
            raise SystemExit(3)
        self.loop.call_soon(leave)
        with self.assertRaises(SystemExit):
            self.loop.run_forever()

    def test_default_handler_logs(self):
        with self.assertLogs('asyncio', 'ERROR') as cm:
            self.loop.call_exception_handler({'message': 'something odd'})
        self.assertIn('something odd', cm.output[0])

    def test_debug_mode_reports_slow_callbacks(self):
        self.loop.set_debug(True)
        self.assertTrue(self.loop.get_debug())
        self.loop.slow_callback_duration = 0.01
        self.loop.call_soon(time.sleep, 0.02)
        self.loop.call_soon(self.loop.stop)
        with self.assertLogs('asyncio', 'WARNING') as cm:
            self.loop.run_forever()
        self.assertIn('took', cm.output[0])

    def test_debug_mode_refuses_coroutine_callbacks_and_other_threads(self):
        self.loop.set_debug(True)

        async def coro():
            pass
        with self.assertRaises(TypeError):
            self.loop.call_soon(coro)
        errors = []

        async def main():
            th = threading.Thread(target=lambda: self._try_call_soon(errors))
            th.start()
            th.join()
        self.loop.run_until_complete(main())
        self.assertEqual(len(errors), 1)
        self.assertIn('thread', str(errors[0]))

    def _try_call_soon(self, errors):
        try:
            self.loop.call_soon(print)
        except RuntimeError as e:
            errors.append(e)


class DebugModeTests(LoopTestCase):
    """asyncio's debug mode on a pact loop: thread checks, slow callbacks
    (protocol callbacks too: test_transport), resource warnings."""

    def test_every_scheduling_call_checks_the_thread(self):
        self.loop.set_debug(True)
        errors = []

        def other_thread():
            for call in (lambda: self.loop.call_soon(print),
                         lambda: self.loop.call_later(1, print),
                         lambda: self.loop.call_at(self.loop.time(), print)):
                try:
                    call()
                except RuntimeError as e:
                    errors.append(str(e))
            # The one call made for other threads stays allowed.
            self.loop.call_soon_threadsafe(self.loop.stop)

        async def main():
            th = threading.Thread(target=other_thread)
            th.start()
            th.join()
        self.loop.run_until_complete(main())
        self.assertEqual(len(errors), 3)
        for e in errors:
            self.assertIn('other than the current one', e)

    def test_no_thread_check_without_debug(self):
        handles = []

        async def main():
            th = threading.Thread(
                target=lambda: handles.append(self.loop.call_soon(print)))
            th.start()
            th.join()
        self.loop.run_until_complete(main())
        self.assertEqual(len(handles), 1)
        handles[0].cancel()

    def test_slow_callback_names_the_handle(self):
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = 0.01

        def slow_one():
            time.sleep(0.02)
        self.loop.call_soon(slow_one)
        self.loop.call_soon(self.loop.stop)
        with self.assertLogs('asyncio', 'WARNING') as cm:
            self.loop.run_forever()
        self.assertEqual(len(cm.output), 1)
        self.assertRegex(cm.output[0], r'Executing <Handle .*slow_one.*> '
                         r'took 0\.0\d\d seconds')

    def test_an_unclosed_loop_warns_when_collected(self):
        loop = pa.Loop(engine=ENGINE)
        with self.assertWarnsRegex(ResourceWarning, 'unclosed event loop'):
            del loop
            gc.collect()

    def test_a_closed_loop_does_not_warn(self):
        loop = pa.Loop(engine=ENGINE)
        loop.close()
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            del loop
            gc.collect()

    def test_pythondevmode_turns_debug_on(self):
        out = subprocess.run(
            [sys.executable, '-X', 'dev', '-c',
             'import pact.asyncio as pa; loop = pa.Loop(); '
             'print(loop.get_debug()); loop.close()'],
            capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), 'True')


class ExecutorTests(LoopTestCase):
    def test_run_in_executor_and_to_thread(self):
        async def main():
            a = await self.loop.run_in_executor(None, threading.get_ident)
            b = await asyncio.to_thread(lambda: 5)
            return a, b
        ident, five = self.loop.run_until_complete(main())
        self.assertNotEqual(ident, threading.get_ident())
        self.assertEqual(five, 5)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())

    def test_getaddrinfo_and_getnameinfo(self):
        import socket

        async def main():
            infos = await self.loop.getaddrinfo('127.0.0.1', 80,
                                                type=socket.SOCK_STREAM)
            name = await self.loop.getnameinfo(('127.0.0.1', 80),
                                               socket.NI_NUMERICHOST |
                                               socket.NI_NUMERICSERV)
            return infos, name
        infos, name = self.loop.run_until_complete(main())
        self.assertEqual(infos[0][4], ('127.0.0.1', 80))
        self.assertEqual(name, ('127.0.0.1', '80'))


class PolicyTests(unittest.TestCase):
    def tearDown(self):
        asyncio.set_event_loop_policy(None)

    def test_install_makes_asyncio_use_pact(self):
        pa.install()
        self.assertIsInstance(asyncio.get_event_loop_policy(),
                              asyncio.DefaultEventLoopPolicy)
        loop = asyncio.new_event_loop()
        try:
            self.assertIsInstance(loop, pa.Loop)
        finally:
            loop.close()

        async def main():
            return type(asyncio.get_running_loop())
        self.assertIs(asyncio.run(main()), pa.Loop)

    def test_run_with_debug(self):
        async def main():
            loop = asyncio.get_running_loop()
            return type(loop), loop.get_debug()
        self.assertEqual(pa.run(main(), debug=True), (pa.Loop, True))
        self.assertEqual(pa.run(main(), debug=False), (pa.Loop, False))


CTRL_C_CHILD = textwrap.dedent('''
    import asyncio, sys, os
    import pact.asyncio as pa
    mode = sys.argv[1]
    async def main():
        print('ready', flush=True)
        await asyncio.sleep(60)
    if mode == 'run_forever':
        loop = pa.Loop(engine=os.environ.get('PACT_ENGINE', 'auto'))
        loop.call_soon(lambda: print('ready', flush=True))
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            print('interrupted', flush=True)
        loop.close()
    else:
        try:
            pa.run(main())
        except KeyboardInterrupt:
            print('interrupted', flush=True)
''')


class CtrlCTests(unittest.TestCase):
    def ctrl_c(self, mode):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        p = subprocess.Popen([sys.executable, '-c', CTRL_C_CHILD, mode],
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            self.assertEqual(p.stdout.readline().strip(), 'ready')
            time.sleep(0.1)
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=10)
        finally:
            p.kill()
            p.wait()
        self.assertEqual(out.strip(), 'interrupted')
        self.assertEqual(p.returncode, 0)

    def test_ctrl_c_interrupts_run_forever(self):
        self.ctrl_c('run_forever')

    def test_ctrl_c_interrupts_run(self):
        self.ctrl_c('run')


if __name__ == '__main__':
    unittest.main()
