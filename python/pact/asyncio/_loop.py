# SPDX-License-Identifier: MIT
"""pact.asyncio.Loop: the C core (pact._pact.Loop: iteration, ready queue,
timers, call_soon*, time, stop) plus the parts of asyncio's loop that are
written in Python in asyncio itself, reused from asyncio.base_events where
their code is exactly the semantics wanted."""
import asyncio
import signal
import sys
import threading
import time
import weakref
from asyncio import base_events, coroutines, events
from asyncio.log import logger

from .. import _pact

_Base = base_events.BaseEventLoop

# Methods whose asyncio implementation is used as is: they only read the
# attributes set in Loop.__init__ and the C core's _closed/_debug/_stopping.
_REUSED = (
    '__repr__', '_check_closed', '_check_running', '_check_default_executor',
    '_check_callback', '_check_thread', '_set_coroutine_origin_tracking',
    '_asyncgen_finalizer_hook', '_asyncgen_firstiter_hook',
    'run_until_complete', 'is_running', 'is_closed', 'set_debug',
    'create_future', 'create_task', 'set_task_factory', 'get_task_factory',
    'shutdown_asyncgens', 'shutdown_default_executor', '_do_shutdown',
    'run_in_executor', 'set_default_executor',
    '_getaddrinfo_debug', 'getaddrinfo', 'getnameinfo',
    'get_exception_handler', 'set_exception_handler',
    'default_exception_handler', 'call_exception_handler',
)


class Loop(_pact.Loop, asyncio.AbstractEventLoop):
    """An asyncio event loop on pact. engine: 'auto', 'uring' or 'epoll';
    loop.engine names the one running, loop.engine_reason says why it is
    not io_uring (None when it is, or when epoll was asked for)."""

    def __init__(self, *, engine='auto'):
        super().__init__(engine=engine)
        self._thread_id = None
        self._default_executor = None
        self._exception_handler = None
        self._current_handle = None
        self._task_factory = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._executor_shutdown_called = False
        self._clock_resolution = time.get_clock_info('monotonic').resolution
        self.slow_callback_duration = 0.1
        self.set_debug(coroutines._is_debug_mode())

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        old_wakeup_fd = None
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            # A signal that arrives just before the loop blocks writes to
            # this fd and so still wakes it: Ctrl-C is never left waiting.
            if threading.current_thread() is threading.main_thread():
                try:
                    old_wakeup_fd = signal.set_wakeup_fd(
                        self._signal_wakeup_fd, warn_on_full_buffer=False)
                except ValueError:
                    old_wakeup_fd = None
            self._run()
        finally:
            if old_wakeup_fd is not None:
                try:
                    signal.set_wakeup_fd(old_wakeup_fd)
                except ValueError:
                    pass
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self):
        """Close the loop: drop what is scheduled, shut the default
        executor down without waiting (as asyncio does)."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def __del__(self, _warn=__import__('warnings').warn):
        if '_thread_id' not in self.__dict__:
            return  # __init__ failed: nothing was opened
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    def _run_handle_debug(self, handle):
        # Debug mode: asyncio's slow-callback report and current handle.
        self._current_handle = handle
        try:
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                logger.warning('Executing %s took %.3f seconds',
                               base_events._format_handle(handle), dt)
        finally:
            self._current_handle = None


for _name in _REUSED:
    setattr(Loop, _name, getattr(_Base, _name))
del _name
