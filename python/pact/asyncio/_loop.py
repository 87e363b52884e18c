# SPDX-License-Identifier: MIT
"""pact.asyncio.Loop: the C core (pact._pact.Loop: iteration, ready queue,
timers, call_soon*, time, stop) plus the parts of asyncio's loop that are
written in Python in asyncio itself, reused from asyncio.base_events where
their code is exactly the semantics wanted."""
import asyncio
import errno
import functools
import io
import os
import signal
import socket
import stat
import sys
import threading
import time
import warnings
import weakref
from asyncio import (base_events, constants, coroutines, events, exceptions,
                     format_helpers, selector_events, sslproto, trsock,
                     unix_events)
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
    'set_task_factory', 'get_task_factory',
    'shutdown_asyncgens', 'shutdown_default_executor', '_do_shutdown',
    'run_in_executor', 'set_default_executor',
    '_getaddrinfo_debug', 'getaddrinfo', 'getnameinfo',
    'get_exception_handler', 'set_exception_handler',
    'default_exception_handler', 'call_exception_handler',
    '_add_callback_signalsafe', '_ensure_resolved',
    'create_connection', '_create_connection_transport', '_connect_sock',
    'create_server', '_create_server_getaddrinfo', 'connect_accepted_socket',
    'start_tls', 'connect_read_pipe', 'connect_write_pipe',
    'create_datagram_endpoint',
    'subprocess_exec', 'subprocess_shell', '_log_subprocess',
    'sock_sendfile', '_sock_sendfile_fallback', '_check_sendfile_params',
    'sendfile',
)

# asyncio's selector loop on readiness: add_reader and friends are the C
# core's _add_reader/_remove_reader (pact polls, level-triggered), and the
# sock_* methods try their system call at once and wait for readiness only
# on EAGAIN, exactly as asyncio's code does.
_REUSED_SELECTOR = (
    'add_reader', 'remove_reader',
    'add_writer', 'remove_writer',
    '_sock_read_done', '_sock_recv', '_sock_recv_into',
    'sock_recvfrom', '_sock_recvfrom',
    'sock_recvfrom_into', '_sock_recvfrom_into',
    '_sock_sendall', 'sock_sendto', '_sock_sendto',
    'sock_connect', '_sock_connect', '_sock_write_done', '_sock_connect_cb',
    'sock_accept', '_sock_accept',
    # Servers on a socket-like object without a real fd: asyncio's accept
    # loop on the listening socket's readiness; each connection is a pact
    # transport (_make_socket_transport).
    '_accept_connection', '_accept_connection2',
)

# The Unix loop's os.sendfile() path for sock_sendfile, and its signal
# number check.
_REUSED_UNIX = (
    '_sock_sendfile_native', '_sock_sendfile_native_impl',
    '_sock_sendfile_update_filepos', '_sock_add_cancellation_callback',
    '_check_signal', '_handle_signal', '_process_self_data',
    'create_unix_connection', 'create_unix_server',
    # Subprocesses: subprocess.Popen through asyncio's Unix transport (its
    # pipes are pact pipe transports) and the policy's child watcher.
    '_make_subprocess_transport', '_child_watcher_callback',
)


# start_tls() checks this: pact transports can change protocol and pause
# reading without losing data, which is what asyncio's SSLProtocol needs.
_pact.Transport._start_tls_compatible = True

# pact_stream_kind
_KIND_SOCKET, _KIND_READ_PIPE, _KIND_WRITE_PIPE = 0, 1, 2

# loop.sendfile(): socket transports send a file natively (pact's sendfile
# path in the transport's write queue); pipes do not, as asyncio's.
_pact.Transport._sendfile_compatible = property(
    lambda self: constants._SendfileMode.TRY_NATIVE
    if self._kind == _KIND_SOCKET else constants._SendfileMode.UNSUPPORTED)


# asyncio's own sock_recv, sock_recv_into and sock_sendall: for socket
# objects that are not plain socket.socket (an SSLSocket is refused there,
# a subclass may have its own recv).
_selector_sock_recv = selector_events.BaseSelectorEventLoop.sock_recv
_selector_sock_recv_into = selector_events.BaseSelectorEventLoop.sock_recv_into
_selector_sock_sendall = selector_events.BaseSelectorEventLoop.sock_sendall
_recv_now = _pact._recv_now
_recv_into_now = _pact._recv_into_now
_send_now = _pact._send_now
_socket_type = socket.socket


class _DatagramTransport(selector_events._SelectorDatagramTransport):
    """asyncio's datagram transport on pact readiness, for a socket-like
    object that is not a socket.socket with a real fd (tests pass mocks):
    pact's own (_pact.DatagramTransport) needs the fd. Its repr asks the selector
    loop's selector what is polled; here it reads once to the end of the
    transport, and writes while bytes wait."""

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        if self._sock is not None and not self._loop.is_closed():
            info.append('read=idle' if self._closing else 'read=polling')
            bufsize = self.get_write_buffer_size()
            state = 'polling' if bufsize else 'idle'
            info.append(f'write=<{state}, bufsize={bufsize}>')
        return '<{}>'.format(' '.join(info))


class _SendfileFallbackProtocol(base_events._SendfileFallbackProtocol):
    """asyncio's protocol for the read-and-write sendfile, for transports
    that are not asyncio's _FlowControlMixin (pact's do flow control in C
    and answer _protocol_paused)."""

    def __init__(self, transp):
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = transp._protocol_paused
        transp.pause_reading()
        transp.set_protocol(self)
        if self._should_resume_writing:
            self._write_ready_fut = self._transport._loop.create_future()
        else:
            self._write_ready_fut = None


def _report_callback_error(handle, exc):
    # The except branch of asyncio.events.Handle._run, for handles the C
    # core runs itself (handle.c): same message, same context keys.
    cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        'message': f'Exception in callback {cb}',
        'exception': exc,
        'handle': handle,
    }
    if handle._source_traceback:
        context['source_traceback'] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _sighandler_noop(signum, frame):
    # Python's C handler writes the signal number to the wakeup fd; the
    # loop reads it and schedules the add_signal_handler() callback.
    pass


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
        self._transports = weakref.WeakValueDictionary()
        self._pact_servers = {}  # listening fd -> _pact.Server
        self._signal_handlers = {}
        self.set_debug(coroutines._is_debug_mode())

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        old_wakeup_fd = None
        wakeup_set = False
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
                    wakeup_set = True
                except ValueError:
                    pass
            self._run()
        finally:
            if wakeup_set:
                # add_signal_handler() keeps ours; else the one before.
                keep = self._signal_handlers and not self._closed
                if old_wakeup_fd == self._signal_wakeup_fd and not keep:
                    old_wakeup_fd = -1
                try:
                    signal.set_wakeup_fd(self._signal_wakeup_fd if keep
                                         else old_wakeup_fd)
                except ValueError:
                    pass
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self, *, _is_finalizing=sys.is_finalizing, _warn=warnings.warn,
              _transport_type=(_pact.Transport, _pact.DatagramTransport)):
        """Close the loop: drop what is scheduled, shut the default
        executor down without waiting (as asyncio does)."""
        # The defaults keep what close needs from this module: a loop left
        # open is closed by __del__ during interpreter shutdown, when the
        # module's globals may be None already.
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        finalizing = _is_finalizing()
        if self._debug and not finalizing:
            logger.debug("Close %r", self)
        if not finalizing:
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        else:
            if self._signal_handlers:
                _warn(f"Closing the loop {self!r} on interpreter "
                      f"shutdown stage, skipping signal handlers "
                      f"removal", ResourceWarning, source=self)
                self._signal_handlers.clear()
        # As asyncio: transports the program left open stay open (each
        # keeps its fd, its protocol hears nothing) until closed or
        # collected, which warns as asyncio's do. At interpreter exit pact
        # just closes them (their protocols hear nothing either).
        if not finalizing:
            for transport in list(self._transports.values()):
                if isinstance(transport, _transport_type):
                    transport._orphan()
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def __del__(self, _warn=warnings.warn):
        if '_thread_id' not in self.__dict__:
            return  # __init__ failed: nothing was opened
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) from the loop when signal sig arrives (main
        thread only; the signal's number goes through the loop's wakeup fd,
        so it is seen also when it arrives before run_forever())."""
        if (coroutines.iscoroutine(callback) or
                coroutines.iscoroutinefunction(callback)):
            raise TypeError("coroutines cannot be used "
                            "with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError off the main thread: a loop running in
            # another thread cannot add a signal handler.
            signal.set_wakeup_fd(self._signal_wakeup_fd,
                                 warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    logger.info('set_wakeup_fd(-1) failed: %s', nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig} cannot be caught')
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler of sig; True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = (signal.default_int_handler if sig == signal.SIGINT
                   else signal.SIG_DFL)
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig} cannot be caught')
            raise
        if not self._signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info('set_wakeup_fd(-1) failed: %s', exc)
        return True

    # sock_recv, sock_recv_into, sock_sendall: asyncio's selector code
    # (the system call at call time, then readiness), with the call made
    # by pact: would-block is an answer, not a BlockingIOError raised and
    # caught on every request that finds nothing waiting yet.
    #
    # A call that waits ends its wait from inside the reader (writer)
    # callback that finishes its future, where asyncio's future has a done
    # callback remove it one iteration later. A pact watch removed inside
    # its own callback just ends: on io_uring its one-shot poll has fired
    # and is not armed again, where the later removal found it armed again
    # and cancelled it (two SQEs and two CQEs more per wait). The future
    # needs no done callback (a handle per call): a wait that ends
    # otherwise (the task cancelled, the coroutine closed) removes its
    # reader in the coroutine's finally, when the task hears of it, the
    # iteration in which asyncio's done callback would have run. Either
    # way only a handle still registered is removed: one that add_reader
    # replaced was cancelled, as asyncio's _sock_read_done checks.
    async def sock_recv(self, sock, n):
        """Receive up to n bytes from sock (non-blocking)."""
        if type(sock) is not _socket_type:
            return await _selector_sock_recv(self, sock, n)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        data = _recv_now(sock, n, False)
        if data is not None:
            return data
        fd = sock.fileno()
        fut = self.create_future()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, self._sock_recv_now, fut, fd, sock, n)
        try:
            return await fut
        finally:
            if not handle.cancelled():
                self._remove_reader(fd)

    def _sock_recv_now(self, fut, fd, sock, n):
        # asyncio's _sock_recv with pact's recv: the bytes object is sized
        # by what is waiting, not by n (see sock.c).
        if fut.done():
            return
        try:
            data = _recv_now(sock, n, True)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            if data is None:
                return  # again when readable
            fut.set_result(data)
        self._remove_reader(fd)

    async def sock_recv_into(self, sock, buf):
        """Receive into buf from sock (non-blocking); the number of
        bytes received."""
        if type(sock) is not _socket_type:
            return await _selector_sock_recv_into(self, sock, buf)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        fd = sock.fileno()
        nbytes = _recv_into_now(fd, buf)
        if nbytes is not None:
            return nbytes
        fut = self.create_future()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, self._sock_recv_into_now, fut, fd, sock,
                                  buf)
        try:
            return await fut
        finally:
            if not handle.cancelled():
                self._remove_reader(fd)

    def _sock_recv_into_now(self, fut, fd, sock, buf):
        # asyncio's _sock_recv_into with pact's recv (on the socket's fd of
        # the moment: a socket closed meanwhile answers EBADF).
        if fut.done():
            return
        try:
            nbytes = _recv_into_now(sock.fileno(), buf)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            if nbytes is None:
                return  # again when readable
            fut.set_result(nbytes)
        self._remove_reader(fd)

    async def sock_sendall(self, sock, data):
        """Send all of data to sock (non-blocking)."""
        if type(sock) is not _socket_type:
            return await _selector_sock_sendall(self, sock, data)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        fd = sock.fileno()
        n = _send_now(fd, data)
        if n == len(data):
            return
        fut = self.create_future()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, self._sock_send_rest, fut, fd, sock,
                                  memoryview(data), [n])
        try:
            return await fut
        finally:
            if not handle.cancelled():
                self._remove_writer(fd)

    def _sock_send_rest(self, fut, fd, sock, view, pos):
        # asyncio's _sock_sendall with pact's send.
        if fut.done():
            return
        start = pos[0]
        try:
            start += _send_now(sock.fileno(), view[start:])
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            if start < len(view):
                pos[0] = start
                return  # the rest when writable
            fut.set_result(None)
        self._remove_writer(fd)

    def _ensure_fd_no_transport(self, fd):
        # asyncio's check, without a KeyError raised and caught for every
        # fd that has no transport (the common case: every sock_* wait and
        # remove_reader asks).
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                # This code matches selectors._fileobj_to_fd function.
                raise ValueError(f"Invalid file object: {fd!r}") from None
        ref = self._transports.data.get(fileno)
        transport = ref() if ref is not None else None
        if transport is not None and not transport.is_closing():
            raise RuntimeError(
                f'File descriptor {fd!r} is used by transport '
                f'{transport!r}')

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        # A pact transport on the connected socket (pact._pact.Transport,
        # an asyncio.Transport): pact reads, buffers writes and closes.
        self._ensure_fd_no_transport(sock)
        extra = dict(extra or {})
        extra['socket'] = trsock.TransportSocket(sock)
        try:
            extra['sockname'] = sock.getsockname()
        except OSError:
            extra['sockname'] = None
        if 'peername' not in extra:
            try:
                extra['peername'] = sock.getpeername()
            except OSError:
                extra['peername'] = None
        base_events._set_nodelay(sock)  # as asyncio's socket transports
        fd = sock.fileno()
        transport = _pact.Transport._open(self, sock, protocol, waiter,
                                          extra, server)
        self._transports[fd] = transport
        return transport

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None,
                                  extra=None):
        return self._make_pipe_transport(pipe, protocol, waiter, extra,
                                         _KIND_READ_PIPE)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None,
                                   extra=None):
        # pact watches the write end: the read end going away ends the
        # transport (connection_lost(None) when nothing was left to write,
        # as asyncio's write pipe transport).
        return self._make_pipe_transport(pipe, protocol, waiter, extra,
                                         _KIND_WRITE_PIPE)

    def _make_pipe_transport(self, pipe, protocol, waiter, extra, kind):
        fd = pipe.fileno()
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or
                stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(fd, False)
        extra = dict(extra or {})
        extra['pipe'] = pipe
        transport = _pact.Transport._open(self, pipe, protocol, waiter,
                                          extra, None, kind)
        self._transports[fd] = transport
        return transport

    async def _sendfile_native(self, transp, file, offset, count):
        # asyncio's unix checks (the file must have a usable fd), then the
        # range goes into the transport's write queue: pact sends it with
        # sendfile(2) behind what was written before. The file position is
        # moved past what was sent, also on error or cancellation (when
        # the transfer, which cannot be taken back out of the stream, ends).
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        if not (count if count else fsize):
            return 0  # empty file
        fut = self.create_future()

        def done(error, sent):
            if sent:
                try:
                    file.seek(offset + sent)
                except (OSError, ValueError):
                    pass  # closed by its owner meanwhile
            if fut.done() or self.is_closed():
                return
            if error:
                fut.set_exception(OSError(-error, os.strerror(-error)))
            else:
                fut.set_result(sent)
        transp._sendfile(fileno, offset, count or 0, done)
        return await fut

    async def _sendfile_fallback(self, transp, file, offset, count):
        # asyncio's read-and-write loop, with a protocol that also takes
        # pact transports (base_events._SendfileFallbackProtocol accepts
        # only asyncio's _FlowControlMixin).
        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total_sent = 0
        proto = _SendfileFallbackProtocol(transp)
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total_sent  # EOF
                await proto.drain()
                transp.write(view[:read])
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, 'seek'):
                file.seek(offset + total_sent)
            await proto.restore()

    def _make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter=None, *,
            server_side=False, server_hostname=None, extra=None,
            server=None,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # ssl= connections, client and server side: asyncio's SSLProtocol
        # over a pact transport, as start_tls runs it (asyncio makes its
        # _SelectorSocketTransport here).
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra,
                                    server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol,
                                 address=None, waiter=None, extra=None):
        # A pact datagram endpoint on the socket (_pact.DatagramTransport):
        # pact receives, queues what the kernel does not take at once and
        # closes; sendto() has asyncio's semantics.
        if (not isinstance(sock, socket.socket) or
                type(sock.fileno()) is not int):  # a mock with a spec
            return _DatagramTransport(self, sock, protocol, address, waiter,
                                      extra)
        extra = dict(extra or {})
        extra['socket'] = trsock.TransportSocket(sock)
        try:
            extra['sockname'] = sock.getsockname()
        except OSError:
            extra['sockname'] = None
        if 'peername' not in extra:
            try:
                extra['peername'] = sock.getpeername()
            except OSError:
                extra['peername'] = None
        fd = sock.fileno()
        transport = _pact.DatagramTransport._open(self, sock, protocol,
                                                  address, waiter, extra)
        self._transports[fd] = transport
        return transport

    def _start_serving(self, protocol_factory, sock, sslcontext=None,
                       server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # Accepting in C: pact serves the listening socket (a duplicate of
        # its fd) and makes each connection's protocol and transport; the
        # Server stays asyncio's. With TLS the protocol is asyncio's
        # SSLProtocol around the program's (_ssl_server_protocol_factory).
        # Socket-like objects without a real fd take asyncio's accept loop
        # on readiness.
        if (not isinstance(sock, socket.socket) or
                type(sock.fileno()) is not int):
            return _SELECTOR_START_SERVING(
                self, protocol_factory, sock, sslcontext, server, backlog,
                ssl_handshake_timeout, ssl_shutdown_timeout)
        if sslcontext is not None:
            protocol_factory = self._ssl_server_protocol_factory(
                protocol_factory, sslcontext, ssl_handshake_timeout,
                ssl_shutdown_timeout)
        fd = sock.fileno()
        old = self._pact_servers.pop(fd, None)
        if old is not None:
            old.close()  # as add_reader replaces the reader
        self._pact_servers[fd] = _pact.Server._open(
            self, sock, protocol_factory, server)

    def _ssl_server_protocol_factory(self, protocol_factory, sslcontext,
                                     ssl_handshake_timeout,
                                     ssl_shutdown_timeout):
        # What asyncio's _accept_connection2 makes of each TLS connection
        # (_make_ssl_transport with server_side=True): the program's
        # protocol inside asyncio's SSLProtocol, which the pact transport
        # of the connection calls. A handshake that fails has ended the
        # connection already (SSLProtocol aborts it); as there, the
        # failure is reported in debug mode only.
        def accepted_with_tls():
            waiter = self.create_future()
            ssl_protocol = sslproto.SSLProtocol(
                self, protocol_factory(), sslcontext, waiter,
                server_side=True,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
            # the transport asyncio's _make_ssl_transport returns
            transport = ssl_protocol._app_transport
            waiter.add_done_callback(functools.partial(
                self._ssl_handshake_done, ssl_protocol, transport))
            return ssl_protocol
        return accepted_with_tls

    def _ssl_handshake_done(self, ssl_protocol, transport, waiter):
        if waiter.cancelled():
            return
        exc = waiter.exception()
        if exc is None:
            return
        transport.close()
        if self._debug and not isinstance(exc, (SystemExit,
                                                KeyboardInterrupt)):
            self.call_exception_handler({
                'message': 'Error on transport creation for incoming '
                           'connection',
                'exception': exc,
                'protocol': ssl_protocol._app_protocol,
                'transport': transport,
            })

    def _stop_serving(self, sock):
        # Server.close(): stop accepting now. On io_uring an accept or poll
        # in flight holds a reference to the socket until its cancellation
        # reaches the kernel (the next iteration), so closing the fd alone
        # would leave it listening until then; shutdown() stops it at once.
        pact_server = self._pact_servers.pop(sock.fileno(), None)
        if pact_server is not None:
            pact_server.close()
        self._remove_reader(sock.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

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


_SELECTOR_START_SERVING = selector_events.BaseSelectorEventLoop._start_serving

for _name in _REUSED:
    setattr(Loop, _name, getattr(_Base, _name))
for _name in _REUSED_SELECTOR:
    setattr(Loop, _name, getattr(selector_events.BaseSelectorEventLoop, _name))
for _name in _REUSED_UNIX:
    setattr(Loop, _name, getattr(unix_events._UnixSelectorEventLoop, _name))
del _name
