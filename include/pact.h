/* SPDX-License-Identifier: MIT */
/*
 * pact — a completion-based ("proactor") event loop for Linux.
 *
 * You *start* an operation (receive, send, accept, connect, sleep, ...), the
 * kernel does it, and the loop calls you back exactly once when it is done.
 * io_uring is the native engine; an epoll engine emulates the same
 * completions where io_uring is missing or forbidden.
 *
 * Conventions used throughout this header:
 *   - Errors are negative errno values (-EINVAL, -ECANCELED, ...).
 *     pact_strerror() and pact_err_name() turn them into text; the few
 *     with a meaning of pact's own are in docs/errors.md.
 *   - Every callback receives the loop and the user pointer that was given
 *     when the callback was registered.
 *   - A loop belongs to one thread. Only functions marked "thread-safe" may
 *     be called from other threads. The owner is the thread that first
 *     runs (or closes) the loop; before that it has none, so a loop may be
 *     created and set up on one thread and run on another. (A loop made
 *     with pact_loop_options.movable has no lasting owner: the thread
 *     running it owns it while it runs; see there.) From then on
 *     these calls answer -EPERM on any other thread, in every mode, and
 *     change nothing: pact_loop_run/run_once/close/free, pact_call_soon,
 *     pact_call_later, pact_call_at, pact_call_every, pact_handle_cancel,
 *     pact_handle_set_interval, the *_set_ref functions, every function
 *     that starts an operation (pact_recv ... pact_sleep, file ops,
 *     pact_queue_work, the resolver), pact_op_cancel, pact_op_set_timeout,
 *     and the functions that take the loop to create something
 *     (transports, servers, clients, datagram endpoints, processes, signal
 *     handlers, TLS connections), pact_signal_cancel,
 *     pact_loop_set_error_handler, pact_loop_set_wait_hooks and
 *     pact_loop_set_recv_buffer_hook, and the calls that change an object
 *     the loop made: pact_transport_write, writev, write_eof, sendfile,
 *     set_write_buffer_limits, set_write_marks, close, abort,
 *     pause_reading, resume_reading and set_protocol;
 *     pact_server_close and wait_closed; pact_datagram_sendto,
 *     set_write_buffer_limits, set_write_marks, close, abort,
 *     pause_reading and resume_reading; pact_process_write, write_eof, send_signal,
 *     terminate, kill, wait and close; pact_tty_open, set_mode and close.
 *     Getters (pact_loop_time(),
 *     pact_loop_get_stats(), pact_transport_write_buffer_size(), ...)
 *     and the datagram socket options (pact_datagram_set_ttl(), ...) are
 *     not checked: calling them from another thread is undefined. In debug
 *     mode a loop that never ran is also held to its creating thread.
 *   - Times are in nanoseconds of CLOCK_MONOTONIC unless a name says "_ms".
 *   - Option structs (pact_loop_options, pact_server_options, ...) begin
 *     with their size: fill them with their init function or initialiser
 *     macro, so fields can be added without breaking callers. PACT_VERSION
 *     (compile time) and pact_version() (run time) tell the version; what
 *     a version change may break is in docs/abi.md.
 *
 * pact(7) is the overview, and every function has its own page (man
 * pact_recv). docs/guide.md (a tour), docs/contract.md (the promises, each
 * with its tests), docs/abi.md (versions and ABI policy) and docs/naming.md
 * (how names are made: pact_<kind>_<verb>, callback types end in _cb,
 * handles are cancelled and objects closed) are installed
 * with the documentation, as <prefix>/share/doc/pact/guide.md and so on;
 * "docs/" in this header means that directory.
 */
#ifndef PACT_H
#define PACT_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <sys/types.h>
#else
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#endif

#include "pact_version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct addrinfo; /* <netdb.h> */
struct statx;    /* <sys/stat.h> with _GNU_SOURCE, or <linux/stat.h> */
struct ssl_ctx_st; /* <openssl/ssl.h>: SSL_CTX */
struct ssl_st;     /* <openssl/ssl.h>: SSL */
struct x509_st;    /* <openssl/x509.h>: X509 */

/* Descriptors as the system names them: a socket (pact_os_sock) and a
 * file or pipe (pact_os_fd). On Linux both are int, the fd, so the ABI and
 * every caller are those of plain fds; on Windows a SOCKET and a HANDLE. */
#ifdef _WIN32
typedef SOCKET pact_os_sock;
typedef HANDLE pact_os_fd;
/* pact_transport_writev() takes POSIX iovecs, which Windows lacks. */
struct iovec {
    void *iov_base;
    size_t iov_len;
};
/* pact_fs_unlink()'s flag for a directory, which Windows' headers lack
 * (Linux's value). */
#ifndef AT_REMOVEDIR
#define AT_REMOVEDIR 0x200
#endif
/* Two errno values pact returns (docs/errors.md) that the C runtime of
 * mingw-w64 lacks, so that a Windows program can name them too. */
#ifndef ESHUTDOWN
#define ESHUTDOWN 180
#endif
#ifndef EKEYREJECTED
#define EKEYREJECTED 181
#endif
#else
typedef int pact_os_sock;
typedef int pact_os_fd;
#endif

#if defined(_WIN32)
#define PACT_API
#define PACT_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#elif defined(__GNUC__)
#define PACT_API __attribute__((visibility("default")))
#define PACT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PACT_API
#define PACT_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/* The version of the library loaded at run time as one number, 0xMMmmpp
 * (PACT_VERSION_NUMBER(major, minor, patch)); compare it with PACT_VERSION,
 * the version of the header the caller was compiled against. A library
 * with the same major version and a minor version at least the header's
 * has everything the header declares (docs/abi.md). */
PACT_API unsigned pact_version(void);

/* The same version as text, "MAJOR.MINOR.PATCH" (static string). */
PACT_API const char *pact_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Describes a negative errno value ("Operation canceled"); never NULL.
 * The values pact uses with a meaning of its own get pact's text
 * (-EKEYREJECTED: "TLS certificate verification failed", -ESHUTDOWN: "The
 * loop or object is closing or closed", ...; docs/errors.md lists them).
 * Any int is accepted: 0 is "success"; positive values, INT_MIN and
 * errno values pact does not know are "unknown error". Where pact knows
 * more than the errno, it says so in words: pact_connect_error_message(),
 * pact_tls_error_message(), pact_tls_context_error_message(). */
PACT_API const char *pact_strerror(int err);

/* Names a negative errno value ("ECANCELED"); never NULL. Any int is
 * accepted: 0 is "OK"; positive values, INT_MIN and unknown values are
 * "UNKNOWN". */
PACT_API const char *pact_err_name(int err);

/* ------------------------------------------------------------------------ */
/* The loop                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct pact_loop pact_loop;

/* Which completion engine a loop runs on. */
typedef enum pact_engine_kind {
    PACT_ENGINE_AUTO = 0, /* io_uring if it can be set up, else epoll */
    PACT_ENGINE_URING = 1,
    PACT_ENGINE_EPOLL = 2,
    PACT_ENGINE_IOCP = 3, /* Windows: an I/O completion port (the only one) */
} pact_engine_kind;

/* Options for pact_loop_create(); fill with pact_loop_options_init(). */
typedef struct pact_loop_options {
    /* sizeof this struct as the caller was compiled: set by pact_loop_options_init()
     * (docs/abi.md: fields are only appended; the library reads the ones
     * the caller knows, refuses a size below the first layout with -EINVAL
     * and unknown non-zero fields with -E2BIG). */
    size_t size;
    /* PACT_ENGINE_AUTO honours the PACT_ENGINE environment variable
     * ("uring" or "epoll"), which exists so tests can force an engine. */
    pact_engine_kind engine;
    /* Submission queue depth for io_uring (rounded up to a power of two);
     * 0 picks the default (256). */
    unsigned queue_depth;
    /* Debug mode: track where every operation, handle and resource was
     * created, report what is still open at close, log misuse and slow
     * callbacks. -1 = from the PACT_DEBUG environment variable (default). */
    int debug;
    /* Test hook: make io_uring setup fail with this negative errno, as a
     * seccomp filter or kernel.io_uring_disabled would. 0 = off. */
    int fail_uring_setup;
    /* Buffers the loop lends to pact_recv_multishot() (and so to socket
     * transports): how many (rounded up to a power of two, at most 32768;
     * 0 = 256, or where io_uring fills buffers incrementally, Linux 6.12,
     * so that many small messages share one, as many as hold 2 MiB and
     * at least 16) and the size of each (0 = 64 KiB). On io_uring they
     * are one provided buffer ring per loop: count x size bytes of
     * address space (16 MiB, or 2 MiB filled incrementally, by
     * default), of which only pages the kernel has written become
     * resident; a receive that finds them all in use
     * waits for one (its bytes wait in the socket). A receive whose peer
     * streams (it ran the ring dry, or its receives keep leaving bytes in
     * the socket) reads by readiness into the loop-wide buffer below,
     * and goes back to the ring after a few reads in a row that fit in
     * one buffer. The
     * epoll engine (and io_uring without multishot receive) reads into
     * one loop-wide buffer of `size` x 4 bytes instead. Connections
     * themselves hold no receive buffer. */
    unsigned recv_buffer_count;
    unsigned recv_buffer_size;
    /* 0 (default): the loop is pinned to the thread that first runs it
     * (or closes it), which lets io_uring bind the ring to that thread
     * (IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN, its fastest setup).
     * 1: movable — the loop may be run on one thread, stopped, and then
     * run or closed on another (asyncio allows
     * threading.Thread(target=loop.run_forever) and loop.close() from the
     * main thread). It starts as a pinned loop does, on the fast ring
     * bound to the first thread that drives it, since most loops never
     * move (on Linux 6.17 and later, 6.16.9+ and 6.12.49+ only: on an
     * older kernel, closing the old ring could still do a waiting
     * receive and drop its bytes, so a movable loop starts on the ring it
     * would move to, and pact_loop_recv_multishot_mode() says "poll").
     * The first time another thread runs or closes it, it moves to
     * a ring set up without those flags (and without COOP_TASKRUN: a
     * completion is then finished by the thread that started the op,
     * which must be woken even if it sleeps), and stays there: the
     * completions the old ring holds are delivered, the old ring is
     * closed, and the ops still in flight are submitted again on the new
     * one (a cancel already asked for ends its op with -ECANCELED; so
     * does a pact_connect the kernel had started). If the old ring's
     * completion queue had overflowed (the kernel keeps what did not fit
     * for the old thread alone, and it is lost with that ring), every op
     * still in flight that does something ends with -EOVERFLOW — done or
     * not, it is never done twice — and only readiness waits (pact_poll,
     * pact_watch) are armed again; signal handlers and the loop's
     * wake-up lose nothing. A movable loop's file ops
     * (pact_open ... pact_unlink, and pact_read / pact_write of a regular
     * file, a block device or a character device that cannot be polled,
     * which io_uring may run on a kernel worker with the completion owed
     * to the thread that submitted it) run on the thread pool, so none
     * of them holds the loop to a thread. The rule: whoever
     * runs it owns it while it runs — run, run_once and close from
     * another thread answer -EBUSY, and the other calls that are not
     * thread-safe -EPERM; between runs any one thread at a time may use
     * it (the caller orders those uses, as for any object shared by
     * threads: a join, a lock, or the runs themselves — a run or close
     * sees everything the previous run did). Ops in flight carry over,
     * also when the thread that started them has exited (the kernel then
     * cancels what that thread submitted; pact submits it again, except a
     * pact_connect still in progress, which ends with -ECANCELED).
     * Deadlines (pact_op_set_timeout) use the loop's timer heap, never
     * io_uring linked timeouts. Signal handlers
     * (pact_signal_add) block their signals on the thread that added them
     * only: the mask does not move with the loop. On epoll both modes
     * cost the same. */
    int movable;
} pact_loop_options;

/* Fills *opts with the defaults (auto engine, default depth, debug from the
 * environment) and sets opts->size. */
PACT_API void pact_loop_options_init(pact_loop_options *opts);

/* Creates a loop owned by the calling thread. Before its first run it may be
 * handed to another thread: the thread that first runs it (or closes it)
 * owns it from then on, unless opts->movable is set (see there).
 * In a child process made by fork() the loops of the parent answer
 * -ECHILD from every entry point that takes a loop (including the
 * thread-safe ones: the wake-up eventfd is shared with the parent) and
 * never touch the parent's ring, epoll instance or fds; pact_loop_free()
 * releases the child's copy (see there). opts may be NULL for the
 * defaults. With PACT_ENGINE_URING, failure to set up io_uring is an error
 * (the errno of the failure); with AUTO it falls back to epoll and
 * pact_loop_engine_reason() says why. Returns 0 and sets *out, or a negative
 * errno. */
PACT_API int pact_loop_create(pact_loop **out, const pact_loop_options *opts);

/* Runs until pact_loop_stop() is called or nothing is left to do: until
 * nothing that keeps the loop alive is left. What keeps it alive:
 *   - an operation in flight (pact_recv ... pact_sleep, file ops, pool
 *     work, resolver requests), unless pact_op_set_ref(op, 0);
 *   - a timer (pact_call_later, pact_call_at, pact_call_every) not yet
 *     run or cancelled, unless pact_handle_set_ref(handle, 0);
 *   - a callback scheduled with pact_call_soon() and not yet run, and one
 *     accepted by pact_call_soon_threadsafe() and not yet run;
 *   - a signal handler only if pact_signal_set_ref(sig, 1) was called
 *     (by default a handler does not);
 *   - transports, servers, datagram endpoints, processes and TLS
 *     transports through the operations they have in flight (a read, a
 *     write, an accept, a process's wait for its exit, a close in
 *     progress): being open alone does not; pact_transport_set_ref(),
 *     pact_server_set_ref(), pact_datagram_set_ref() and
 *     pact_process_set_ref() with ref 0 make those not count either,
 *     until a close: the cancels a close makes count again, so its
 *     callbacks come before the run returns;
 *   - a file-system watch (pact_fs_watch) as the operation it is.
 * A signal handler alone does not, nor does a terminal (pact_tty) with
 * its resize callback.
 * The loop's own operations (its wake-up read, the signalfd read) never
 * do. pact_loop_alive() answers whether anything of this list is left.
 * Returns 0, or a negative errno (-EBUSY if
 * called from inside a callback of the same loop or while another thread
 * runs or closes it, -ESHUTDOWN if closed, -EPERM from a thread other than
 * the one that ran it first unless the loop is movable, -ECHILD in a
 * child process after fork()). */
PACT_API int pact_loop_run(pact_loop *loop);

/* Runs one iteration: submits what was started, waits at most timeout_ns
 * for completions (-1 = until something happens, 0 = do not block), runs
 * the callbacks that are due. It does not wait at all when nothing keeps
 * the loop alive (the list at pact_loop_run): a loop whose only handles
 * are unreferenced, or a signal handler alone, returns at once, as
 * libuv's UV_RUN_ONCE does; to wait for such events, reference one of
 * them (pact_signal_set_ref, pact_handle_set_ref). When it returns, what
 * its callbacks sent is in the kernel: the writes and datagrams they
 * made, the next send a transport started when the one before completed
 * (also a sendfile's next chunk), the send, write, shutdown, connect and
 * close operations they started, and the sockets they closed (see
 * PACT_RUN_AGAIN for leaving them to the next run); a receive or poll
 * they started may wait for the next run's wait. Returns 1 if the loop
 * still has work, 0 if not, or a negative errno. */
PACT_API int pact_loop_run_once(pact_loop *loop, int64_t timeout_ns);

/* Flags of pact_loop_run_once_flags(), or-ed together. */
typedef enum pact_run_flag {
    /* The caller runs the loop again at once: it returns to do work of
     * its own between iterations (a binding's iteration around pact's,
     * as pact.asyncio's), not to wait for something else. What this
     * iteration's callbacks left for the kernel (on io_uring: the small
     * writes that join the next submission, see pact_transport_write(),
     * the sends they started, and the closes of transports' sockets) is
     * then handed over by the next run's wait,
     * in the same system call (io_uring_enter submits and waits at
     * once), not by a system call of its own when this run returns.
     * A caller that does not run the loop again soon after all calls
     * pact_loop_flush(): until then a peer may wait for those bytes. */
    PACT_RUN_AGAIN = 1 << 0,
} pact_run_flag;

/* pact_loop_run_once() with flags (pact_run_flag values or-ed
 * together; 0 is pact_loop_run_once()). Returns as pact_loop_run_once(),
 * and -EINVAL for a flag this library does not know. */
PACT_API int pact_loop_run_once_flags(pact_loop *loop, int64_t timeout_ns,
                                      unsigned flags);

/* Hands the kernel now what the loop holds for its next wait: after a
 * pact_loop_run_once_flags() with PACT_RUN_AGAIN that is not followed
 * by another run soon, so that the writes its callbacks made reach the
 * peer (also one queued behind a send that completed in that run) and
 * the sockets they closed are closed. Operations started since the last
 * wait are submitted too (on epoll and IOCP: tried, as the next
 * iteration would). Does not wait and runs no callback; their
 * completions are handed over by the next run. Returns 0; -EBUSY from
 * a callback of the loop or while another thread runs it, -ESHUTDOWN if
 * closed, -EPERM from a thread other than the one that ran it first
 * unless the loop is movable, -ECHILD in a child process after fork(). */
PACT_API int pact_loop_flush(pact_loop *loop);

/* Makes pact_loop_run() return after the current iteration. Thread-safe. */
PACT_API int pact_loop_stop(pact_loop *loop);

/* Closes the loop. Every operation still in flight is cancelled and its
 * callback runs exactly once (with -ECANCELED or, if the kernel finished it
 * first, its real result) before this returns; their memory is released
 * only after the kernel's completion arrived. Scheduled callbacks and
 * timers that have not run are dropped (and listed in debug mode), open
 * resources (transports, servers, ...) are closed: each still gets its
 * callbacks in order (connection_lost last). The engine is torn down last.
 * Callbacks run during close may not start new operations (-ESHUTDOWN).
 *
 * Leftovers are reported (on stderr) only in debug mode: each open
 * resource with where it was created, each operation still in flight,
 * each scheduled callback or timer dropped, each threadsafe callback
 * dropped. In every mode, completions that matched no live operation are
 * counted (pact_loop_get_stats) and reported if there were any.
 *
 * Callbacks accepted by pact_call_soon_threadsafe() (it returned 0) that
 * have not run when close begins are dropped, not run: a producer that
 * passes memory through the user pointer must not rely on the callback
 * to free it once the loop may be closing. From the moment close begins,
 * pact_call_soon_threadsafe() answers -ESHUTDOWN, so a callback is either
 * refused, run, or accepted and then dropped by close — never run after
 * close has returned.
 *
 * Returns 0; -EBUSY if the loop is running (called from one of its
 * callbacks, or running on another thread); -EBADF if it was closed
 * already; -EPERM from a thread other than the one that ran it (io_uring
 * cannot be driven from there) unless the loop is movable; -ECHILD in a
 * child process after fork(). The memory stays valid until
 * pact_loop_free(). */
PACT_API int pact_loop_close(pact_loop *loop);

/* Releases a loop's memory, closing it first if needed. Returns 0 (also
 * for NULL, which is ignored). If the close it needs is refused, nothing
 * is closed or freed and the loop stays usable: -EBUSY when called while
 * the loop runs (from inside one of its callbacks — the loop's own code is
 * still on the stack; free it after pact_loop_run() has returned), -EPERM
 * from a thread that does not own the loop.
 *
 * In a child process that inherited the loop through fork(), it releases
 * the child's copy and returns 0 without closing anything in the kernel:
 * no callback runs, nothing is submitted, cancelled or waited for (the
 * ring, the epoll instance and the ops in flight are the parent's), the
 * child's copies of the loop's own fds are closed, its signals are given
 * back (unblocked on the calling thread, free for a new loop). The
 * transports (TLS ones too), datagram endpoints, servers and processes
 * still open on it are released the same way: their memory, and the
 * child's copies of their fds (no Unix socket file is removed, no process
 * killed or waited for); no callback of theirs runs. */
PACT_API int pact_loop_free(pact_loop *loop);

/* Current CLOCK_MONOTONIC time in nanoseconds. */
PACT_API uint64_t pact_now(void);

/* The loop's time (pact_now() clock, nanoseconds), read at the start of
 * each iteration and again when its wait ends: what the callbacks of an
 * iteration see is the time its wait ended, or its start for those run
 * before the wait. */
PACT_API uint64_t pact_loop_time(const pact_loop *loop);

/* The engine the loop runs on (never AUTO). */
PACT_API pact_engine_kind pact_loop_engine(const pact_loop *loop);

/* "io_uring" or "epoll". */
PACT_API const char *pact_loop_engine_name(const pact_loop *loop);

/* Why the loop does not run on io_uring (for example "io_uring_setup
 * failed: Operation not permitted (seccomp or kernel.io_uring_disabled?)"),
 * or NULL when it does or epoll was asked for. */
PACT_API const char *pact_loop_engine_reason(const pact_loop *loop);

/* Whether the loop runs in debug mode. */
PACT_API int pact_loop_debug(const pact_loop *loop);

/* 1 if the loop has work that keeps pact_loop_run() going (the list at
 * pact_loop_run()), else 0. */
PACT_API int pact_loop_alive(const pact_loop *loop);

/* Embedding the loop in another event loop (libuv's uv_backend_fd and
 * uv_backend_timeout): the outer loop polls pact_loop_backend_fd() for
 * readability, with a timeout of at most pact_loop_backend_timeout(), and
 * whenever the fd is readable or the timeout expired calls
 * pact_loop_run_once(loop, 0), which does not block:
 *
 *   for (;;) {
 *       int64_t ns = pact_loop_backend_timeout(loop);
 *       int ms = ns < 0 ? -1 : (int)((ns + 999999) / 1000000);
 *       epoll_wait(outer, events, n, ms);   // backend fd added, EPOLLIN
 *       ...the outer loop's own events...
 *       pact_loop_run_once(loop, 0);
 *   }
 *
 * The outer wait may end with EINTR: io_uring without COOP_TASKRUN (kernels
 * before 5.19) interrupts the thread's system call to run completions;
 * treat it as a wake-up. Ask for the timeout again after every
 * pact_loop_run_once() and after
 * starting anything on the loop from outside its callbacks (a new
 * operation is handed to the kernel by the next pact_loop_run_once(), so
 * the timeout is then 0). Everything must happen on the loop's owner
 * thread: with io_uring, completions of operations this thread started
 * are only turned into events by this thread's pact_loop_run_once().
 * Do not read from or close the fd. */

/* The fd to poll: the epoll fd on the epoll engine; on io_uring an
 * eventfd registered with the ring (made on the first call), signalled
 * when a completion is posted and also when the kernel queues one as
 * deferred task work (IORING_SETUP_DEFER_TASKRUN) that only this
 * thread's next pact_loop_run_once() turns into an event — the ring's own
 * fd does not wake a poller for those. It stays readable until
 * pact_loop_run_once() has handled what it reports (level triggered;
 * with epoll do not use EPOLLET). Call it on the loop's owner thread.
 * Returns the fd (the same for the loop's lifetime, closed by
 * pact_loop_close()), -EINVAL for NULL, -ESHUTDOWN once closed, or the
 * errno of creating or registering the eventfd. */
PACT_API int pact_loop_backend_fd(const pact_loop *loop);

/* How long an outer loop may wait on pact_loop_backend_fd() before it
 * must call pact_loop_run_once(): 0 when the loop has work queued
 * (scheduled callbacks, completions to deliver, operations not yet handed
 * to the kernel), else nanoseconds until its next timer — unreferenced
 * timers included — or -1 for no limit (nothing but the fd can bring
 * work; -1 is never an error here). Unlike libuv, a loop with nothing
 * that keeps it alive answers -1 or its next timer, not 0, so an outer
 * loop does not spin. -EINVAL for NULL, -ESHUTDOWN once closed. */
PACT_API int64_t pact_loop_backend_timeout(const pact_loop *loop);

/* Counters for tests and monitoring. */
typedef struct pact_loop_stats {
    uint64_t iterations;
    uint64_t ops_started;
    uint64_t ops_completed;
    uint64_t ops_live;          /* started, callback not yet run */
    uint64_t handles_live;      /* call_soon / call_later not yet run */
    uint64_t stray_completions; /* completions that matched no live op:
                                   always a bug, tests assert 0 */
    uint64_t slow_callbacks;    /* debug mode: callbacks over 100 ms */
    uint64_t cq_overflows;      /* io_uring: times the CQ overflowed */
    uint64_t syscalls_enter;    /* io_uring_enter / epoll_wait calls */
} pact_loop_stats;

/* Copies the loop's counters into *out. */
PACT_API int pact_loop_get_stats(const pact_loop *loop, pact_loop_stats *out);

/* How busy the loop is, for monitoring (libuv's uv_metrics_t and
 * uv_metrics_idle_time). Unlike pact_loop_stats this struct carries its
 * size, so fields can be appended (docs/abi.md): set size, for example
 * with PACT_LOOP_METRICS_INIT, before pact_loop_get_metrics(). */
typedef struct pact_loop_metrics {
    size_t size; /* sizeof the struct as the caller was compiled */
    /* Iterations of the loop (pact_loop_run's turns, pact_loop_run_once
     * calls, and the turns close takes). */
    uint64_t iterations;
    /* Nanoseconds spent blocked in the engine's wait (io_uring_enter /
     * epoll_wait with a timeout other than 0): the time the loop had
     * nothing to do. Wall time minus idle time is the time it worked. */
    uint64_t idle_ns;
    /* Operations that completed (their final completion; a multishot
     * receive counts once), the loop's own wake-up reads included. */
    uint64_t events;
    /* Callbacks the loop ran: operation completions and multishot data,
     * timers and scheduled callbacks, threadsafe callbacks, signal
     * handlers, and the loop's own wake-up read (one per cross-thread
     * wake-up). */
    uint64_t callbacks;
    /* Times a receive found every buffer of the loop in use
     * (pact_loop_options.recv_buffer_count) and waited for one to be
     * given back, its bytes waiting in the socket (it then reads by
     * readiness until its reads are small again): often, and the loop
     * wants more buffers. io_uring only; 0 elsewhere. */
    uint64_t recv_buffer_waits;
} pact_loop_metrics;

#define PACT_LOOP_METRICS_INIT { .size = sizeof(pact_loop_metrics) }

/* Fills *out with the loop's metrics, counted since it was created, in
 * every mode (reading them costs two clock readings per blocking wait).
 * out->size must be set: the fields within it are filled (a caller
 * compiled against a newer header gets 0 in fields this library does not
 * have; out->size is left as it was). Returns 0, or -EINVAL for a NULL
 * argument or a size below the first layout (0: not initialised). */
PACT_API int pact_loop_get_metrics(const pact_loop *loop,
                                   pact_loop_metrics *out);

/* Called for errors that have no caller to return to: a failure inside the
 * loop's own machinery, a report from pact_loop_report_error(). */
typedef void (*pact_error_cb)(pact_loop *loop, int err,
                              const char *message, void *user);

/* Installs the loop's error hook (NULL restores the default, which prints
 * to stderr). */
PACT_API int pact_loop_set_error_handler(pact_loop *loop,
                                         pact_error_cb handler,
                                         void *user);

/* Reports a failure inside a callback to the loop's error hook (the C form
 * of an exception escaping a callback in asyncio). */
PACT_API void pact_loop_report_error(pact_loop *loop, int err,
                                     const char *fmt, ...) PACT_PRINTF(3, 4);

/* ------------------------------------------------------------------------ */
/* Scheduled callbacks and timers                                           */
/* ------------------------------------------------------------------------ */

/* A handle for a scheduled callback: > 0, or a negative errno. It carries a
 * generation count, so a stale handle is answered -ENOENT, never UB.
 * Handles are per loop and per kind: a pact_handle is only understood by
 * pact_handle_cancel() on the loop that returned it. Given to another loop,
 * or to pact_op_cancel() / pact_op_set_timeout() (which take a pact_op), it is
 * answered -ENOENT and nothing is touched. */
typedef int64_t pact_handle;

/* A plain callback. */
typedef void (*pact_call_cb)(pact_loop *loop, void *user);

/* Schedules cb to run on the next iteration, after the callbacks already
 * scheduled (FIFO). Returns a handle or a negative errno. */
PACT_API pact_handle pact_call_soon(pact_loop *loop, pact_call_cb cb,
                                    void *user);

/* Schedules cb to run delay_ns from now; never earlier. Timers due at the
 * same time run in the order they were scheduled. */
PACT_API pact_handle pact_call_later(pact_loop *loop, uint64_t delay_ns,
                                     pact_call_cb cb, void *user);

/* Schedules cb to run at the absolute monotonic time when_ns (pact_now()
 * clock); never earlier. */
PACT_API pact_handle pact_call_at(pact_loop *loop, uint64_t when_ns,
                                  pact_call_cb cb, void *user);

/* Schedules cb to run every interval_ns, the first time interval_ns from
 * now, until the handle is cancelled. Never early, and it does not drift:
 * each deadline is the previous deadline + interval_ns (not the time the
 * callback ran + interval_ns, as libuv's repeating timers do), so the
 * ticks stay on the grid of the first one however long the callbacks
 * take. Ticks the loop missed (a callback or the machine was busy past a
 * whole interval) are skipped, not run back to back: after a late run the
 * next deadline is the first one on the grid that is still ahead. A
 * repeating timer keeps the loop alive like any timer. Returns a handle
 * (for pact_handle_cancel() and pact_handle_set_interval()) or a negative
 * errno: -EINVAL for a NULL callback or an interval of 0. */
PACT_API pact_handle pact_call_every(pact_loop *loop, uint64_t interval_ns,
                                     pact_call_cb cb, void *user);

/* Changes how often a timer repeats, also from inside its own callback.
 * The deadline already set stays; the ones after it are interval_ns
 * apart. 0 stops the repeating: the timer runs once more at the deadline
 * already set (none if called from its callback) and is gone. On a
 * one-shot timer (pact_call_later / pact_call_at) it makes the timer
 * repeat after its deadline. Returns 0, -EINVAL for a pact_call_soon()
 * handle, -ENOENT for a handle that is stale or cancelled. */
PACT_API int pact_handle_set_interval(pact_loop *loop, pact_handle handle,
                                      uint64_t interval_ns);

/* Whether a timer keeps pact_loop_run() going: ref 1 (the default) it
 * does, ref 0 it does not, so a background timer (a repeating
 * housekeeping tick) runs while other work keeps the loop alive, and
 * pact_loop_run() returns once only such timers are left; they stay
 * scheduled and run if the loop is run again. May be called at any time,
 * also from the timer's callback. Returns 0, -EINVAL for a
 * pact_call_soon() handle, -ENOENT for a stale or cancelled handle. */
PACT_API int pact_handle_set_ref(pact_loop *loop, pact_handle handle, int ref);

/* When a timer is due: the absolute monotonic time (pact_now() clock) of
 * its next run or, from inside its callback, of the run in progress.
 * Returns the time, -EINVAL for a pact_call_soon() handle or a NULL loop,
 * -ENOENT for a handle that is stale or cancelled. */
PACT_API int64_t pact_handle_due(const pact_loop *loop, pact_handle handle);

/* Cancels a scheduled callback so that it never runs (again). Returns 0
 * if it was cancelled in time, -EALREADY if it is running now (cancelled
 * from its own callback), or -ENOENT for a handle that is unknown, stale
 * (it has run or was cancelled), of another loop or an op handle. A
 * repeating timer cancelled from its own callback answers 0 (its future
 * runs were cancelled in time): the callback finishes, never runs again,
 * and the handle is stale from then on. Safe from any callback. */
PACT_API int pact_handle_cancel(pact_loop *loop, pact_handle handle);

/* Schedules cb on the loop from any thread. Wakes the loop (wake-ups are
 * coalesced: many calls, one write to the eventfd). Callbacks from one
 * thread run in the order they were scheduled. Not cancellable. Returns 0,
 * -ENOMEM, or -ESHUTDOWN once the loop is closing. A callback accepted
 * (0) but not yet run when pact_loop_close() begins is dropped without
 * running (listed in debug mode); it never runs after close. Thread-safe. */
PACT_API int pact_call_soon_threadsafe(pact_loop *loop, pact_call_cb cb,
                                       void *user);

/* Wakes the loop if it is waiting. Thread-safe. */
PACT_API int pact_loop_wake(pact_loop *loop);

/* Called by the loop thread right before and right after each wait of the
 * engine (io_uring_enter, epoll_wait, GetQueuedCompletionStatusEx), with
 * its timeout (-1 = no limit, 0 = a poll that does not block; io_uring's
 * poll that finds nothing to submit and nothing waiting in the kernel
 * makes no system call, and is wrapped all the same). They wrap the
 * system call only: completions are handled, and their callbacks run,
 * after the after hook. No pact function may be called from before_wait;
 * after_wait may call any a callback may (it runs before the first
 * completion of that wait is handled: a binding runs there the callbacks
 * it had queued before the wait, so that they come before the I/O the
 * wait found, as asyncio orders them). With hooks installed, a
 * completion the engine had at submission (the epoll engine tries each
 * system call first) waits for the after hook too: the iteration then
 * polls, and handles it after. A language binding releases its
 * global lock (Python's GIL) in before_wait and takes it back in
 * after_wait, when timeout_ns is not 0: other threads then run only while
 * the loop sleeps, and every pact callback runs with the lock held. The
 * waits that close() does for operations still owed by the kernel are
 * wrapped too. */
typedef void (*pact_wait_cb)(pact_loop *loop, int64_t timeout_ns,
                             void *user);

/* Installs the wait hooks (both or neither: NULL, NULL removes them).
 * Returns 0, -EINVAL if only one is given, -EBUSY while the loop runs,
 * -ESHUTDOWN once it is closing. */
PACT_API int pact_loop_set_wait_hooks(pact_loop *loop, pact_wait_cb before,
                                      pact_wait_cb after, void *user);

/* The receive-buffer hook: memory for one read, *len its size (see
 * pact_loop_set_recv_buffer_hook). */
typedef void *(*pact_recv_buffer_cb)(pact_loop *loop, size_t *len, void *user);

/* Installs the receive-buffer hook: where a receive made by readiness
 * lands. A binding that hands every received chunk over in an object of
 * its own (Python's bytes) copies it there from the loop's buffer; with
 * this hook the loop reads straight into the binding's memory instead.
 * get is called right before each recv(2) of a multishot receive
 * (pact_recv_multishot, and so a socket transport's) that the loop makes
 * on readiness (every such receive on the epoll engine, on io_uring in
 * poll mode and while a receive reads by readiness), with large > 0 only
 * while the receive's reads are large (below). It returns the memory
 * the read lands in, with *len its size (> 0), or NULL to read into the
 * loop's own buffer. The bytes read are handed over there: the chunk's
 * c->data (a transport's data_received data) is that pointer, so the
 * binding can tell its memory and keep the bytes without a copy. The read
 * is a system call made right then, never an asynchronous kernel write:
 * the loop does not touch the memory after the callback of that chunk has
 * returned, nor at all once a read brought nothing (would block, end of
 * file, an error), so it needs to stay valid only that long
 * (docs/contract.md §2). get runs where callbacks run, on the loop's
 * thread, with a binding's lock held, and may call no pact function. The
 * Windows engine never reads by readiness and never calls it.
 *
 * large > 0: on io_uring, a multishot receive reading into the ring's
 * provided buffers whose completion brings at least large bytes is asked
 * to end, and is armed by readiness from then on (its reads land in get's
 * memory), until a few reads in a row have each brought less than large;
 * so large messages land in the binding's memory and small ones keep the
 * ring's buffers (zero-copy writes, no system call per receive). On
 * epoll and in io_uring's poll mode a receive's reads land in the loop's
 * buffer until one brings at least large, then in get's memory until a
 * few in a row have each brought less. A transport's receive that
 * pact_transport_pause_reading ended while its reads were large starts
 * so again at pact_transport_resume_reading. large = 0: on io_uring the
 * engine reads by readiness only for a peer that streams, and get is
 * asked for every read by readiness. get = NULL removes the hook.
 * Returns 0, -EINVAL (NULL
 * loop), -EBUSY while the loop runs, -ESHUTDOWN once it is closing. */
PACT_API int pact_loop_set_recv_buffer_hook(pact_loop *loop, pact_recv_buffer_cb get,
                                            size_t large, void *user);

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* A handle for an operation in flight: > 0, or a negative errno when the
 * operation could not be started (then its callback will never run).
 * Operations are owned by the loop; a handle cannot dangle: after the
 * callback has run it is stale and pact_op_cancel() answers -ENOENT.
 * Handles are per loop and per kind: a pact_op is only understood by the
 * loop that started the op, and only by the op functions (pact_op_cancel,
 * pact_op_set_timeout, ...). A pact_handle from pact_call_soon() and
 * friends, or another loop's op handle, is answered -ENOENT and nothing is
 * touched. The loop's own operations (its wake-up read) have no handle a
 * user can cancel. */
typedef int64_t pact_op;

/* What a finished operation reports. */
typedef struct pact_completion {
    pact_op op;
    /* Bytes transferred, a new fd (accept), revents (poll), 0, or a
     * negative errno: -ECANCELED when cancelled in time, -ETIMEDOUT when
     * its deadline passed. */
    int64_t result;
    /* pact_send_all(): bytes sent before an error (result is then < 0). */
    size_t transferred;
    /* accept: the peer's address; recvfrom: the sender's (NULL when the
     * sender has no name, as an unbound Unix socket). NULL otherwise. */
    const struct sockaddr *addr;
    socklen_t addrlen;
    /* pact_getaddrinfo(): the resolved list, owned by pact and freed after
     * the callback returns unless the callback took it with
     * pact_op_take_addrinfo(). NULL otherwise. */
    const struct addrinfo *addrinfo;
    /* pact_getaddrinfo() / pact_getnameinfo(): the resolver's EAI_* code
     * when it failed (result is then the negative errno it maps to), else
     * 0. */
    int gai_error;
    /* pact_getnameinfo(): host and service names, valid during the call. */
    const char *host;
    const char *service;
    /* pact_fs_stat() / pact_fs_fstat(): the caller's buffer, filled in. */
    const struct statx *statx;
    /* pact_recv_multishot(): a data completion (more = 1) carries result
     * > 0 bytes at data, in a buffer the loop lends for the duration of
     * the callback only. The op's final completion has more = 0. NULL and
     * 0 for every other op. */
    const void *data;
    int more;
} pact_completion;

/* Called exactly once per started operation. The completion and, for
 * accept, its address are valid only during the call. */
typedef void (*pact_op_cb)(pact_loop *loop, const pact_completion *c,
                           void *user);

/* Receives up to len bytes from a socket into buf. Result: bytes (0 = the
 * peer closed). On Linux, with MSG_WAITALL on a stream socket it completes
 * once len bytes came, or with those it has at end of file, on an error
 * or when cancelled (as recv(2); Windows passes only MSG_PEEK and
 * MSG_OOB). On a socket whose error queue holds entries and no data
 * (IP_RECVERR, see pact_recvfrom) the epoll engine completes it with
 * -EAGAIN rather than spin; io_uring's waits for data. buf must stay
 * valid until the callback. */
PACT_API pact_op pact_recv(pact_loop *loop, pact_os_sock fd, void *buf, size_t len,
                           int flags, pact_op_cb cb, void *user);

/* Receives repeatedly from a stream socket into buffers the loop owns (no
 * buffer per caller: on io_uring a multishot recv on the loop's provided
 * buffer ring, on epoll reads into one loop-wide buffer). The callback
 * runs once per chunk with c->more = 1, c->result > 0 bytes at c->data
 * (valid during the call only), in stream order; these deliveries are
 * never lost, also after a cancel was requested (docs/contract.md §4). Then it
 * runs exactly once more, finally, with c->more = 0 and c->data = NULL:
 * 0 at end of file, -ECANCELED when cancelled (bytes the kernel had not
 * consumed stay in the socket), or a negative errno on error. When every
 * buffer of the loop is in use the receive waits, its bytes in the
 * socket, until one is given back, and goes on (reading by readiness into
 * the loop-wide buffer while its peer streams): it does not end for it
 * (pact_loop_metrics.recv_buffer_waits counts such waits). Deadlines
 * (pact_op_set_timeout) end it with -ETIMEDOUT. */
PACT_API pact_op pact_recv_multishot(pact_loop *loop, pact_os_sock fd, pact_op_cb cb,
                                     void *user);

/* How the loop runs pact_recv_multishot(): "multishot" (io_uring multishot
 * recv on a provided buffer ring, kernel 6.0), "poll" (io_uring without
 * it: a poll, then recvs into a loop-wide buffer), "epoll", or "iocp"
 * (Windows: one WSARecv at a time into a buffer of the op's). A movable
 * loop (pact_loop_options.movable) on io_uring uses "poll" once it has
 * changed threads: without DEFER_TASKRUN a multishot receive would drain
 * the socket while the loop is not running, and a small SO_RCVBUF would
 * no longer pace the sender. It uses "poll" from the start on a kernel
 * whose ring teardown may still do a waiting receive (before Linux 6.17,
 * 6.16.9 and 6.12.49; see pact_loop_options.movable). */
PACT_API const char *pact_loop_recv_multishot_mode(const pact_loop *loop);

/* Sends up to len bytes. Result: the bytes actually sent, which may be
 * fewer than len (a short send is reported, never hidden). MSG_NOSIGNAL is
 * always added. buf must stay valid until the callback. */
PACT_API pact_op pact_send(pact_loop *loop, pact_os_sock fd, const void *buf,
                           size_t len, int flags, pact_op_cb cb, void *user);

/* Sends all len bytes, continuing after short sends. Result: len, or a
 * negative errno with c->transferred telling how much went out first. */
PACT_API pact_op pact_send_all(pact_loop *loop, pact_os_sock fd, const void *buf,
                               size_t len, int flags, pact_op_cb cb,
                               void *user);

/* Receives one datagram (recvmsg) into buf. Result: its length — 0 is an
 * empty datagram, not end of file — and c->addr/c->addrlen name the
 * sender. A datagram longer than len is cut to len (with MSG_TRUNC in
 * flags the result is its full length, so result > len says it was cut).
 * Errors the kernel queued on the socket (-ECONNREFUSED after an ICMP
 * port unreachable, ...) complete the op. With IP_RECVERR set, read the
 * error queue (MSG_ERRQUEUE) after an error: while it holds entries the
 * socket polls as ready, and a receive that finds no datagram completes
 * with -EAGAIN (on both engines) rather than waiting. buf must stay valid
 * until the callback. */
PACT_API pact_op pact_recvfrom(pact_loop *loop, pact_os_sock fd, void *buf, size_t len,
                               int flags, pact_op_cb cb, void *user);

/* Sends one datagram (sendmsg) of len bytes — 0 is allowed — to addr,
 * which is copied; addr NULL sends on a connected socket. Result: the
 * bytes sent (a datagram goes whole or fails). MSG_NOSIGNAL is always
 * added. buf must stay valid until the callback. */
PACT_API pact_op pact_sendto(pact_loop *loop, pact_os_sock fd, const void *buf,
                             size_t len, int flags, const struct sockaddr *addr,
                             socklen_t addrlen, pact_op_cb cb, void *user);

/* Accepts a connection. Result: the new fd (close-on-exec, non-blocking;
 * on Windows the new SOCKET, associated with the loop's completion port);
 * c->addr is the peer. The callback owns the fd — also when the accept won
 * a race against pact_op_cancel() (see pact_op_cancel()). */
PACT_API pact_op pact_accept(pact_loop *loop, pact_os_sock listen_fd, pact_op_cb cb,
                             void *user);

/* Connects a socket (best non-blocking). The address is copied. Result: 0. */
PACT_API pact_op pact_connect(pact_loop *loop, pact_os_sock fd,
                              const struct sockaddr *addr, socklen_t addrlen,
                              pact_op_cb cb, void *user);

/* shutdown(2) as an operation (how = SHUT_RD, SHUT_WR, SHUT_RDWR). */
PACT_API pact_op pact_shutdown(pact_loop *loop, pact_os_sock fd, int how,
                               pact_op_cb cb, void *user);

/* Reads from any fd (pipe, file, socket) at offset, or at the current
 * position when offset is -1. Result: bytes (0 = end of file). The fd may
 * be blocking: the loop never blocks on it, and its file status flags are
 * left as the caller set them (pact_read and pact_write do not set
 * O_NONBLOCK on it; on epoll, for the rare file that refuses RWF_NOWAIT,
 * such as a tty, O_NONBLOCK is set only for the duration of the one system
 * call, which another process sharing the file may notice). */
PACT_API pact_op pact_read(pact_loop *loop, pact_os_fd fd, void *buf, size_t len,
                           int64_t offset, pact_op_cb cb, void *user);

/* Writes to any fd at offset (-1 = current position / append for pipes).
 * Result: bytes written, possibly fewer than len. Leaves the fd's flags as
 * pact_read() does. */
PACT_API pact_op pact_write(pact_loop *loop, pact_os_fd fd, const void *buf,
                            size_t len, int64_t offset, pact_op_cb cb,
                            void *user);

/* Waits until fd is ready for events (POLLIN, POLLOUT, ...). Result: the
 * events that are ready. */
PACT_API pact_op pact_poll(pact_loop *loop, pact_os_sock fd, unsigned events,
                           pact_op_cb cb, void *user);

/* Watches fd for readiness until cancelled: asyncio's add_reader /
 * add_writer (pact_poll() is the one-shot form). events is a non-empty mix
 * of POLLIN, POLLOUT, POLLPRI and POLLRDHUP. Level-triggered: in every
 * loop iteration in which fd is ready for one of them, cb runs once with
 * c->more = 1 and c->result the ready events (> 0; POLLERR and POLLHUP are
 * always reported), c->data NULL — so a callback that reads only part of
 * the data is called again at the next iteration, and a watcher on a
 * hung-up fd is called every iteration until cancelled. One op, many
 * callbacks, like pact_recv_multishot(); then exactly once more, finally
 * (c->more = 0): -ECANCELED after pact_op_cancel() or pact_loop_close(),
 * -ETIMEDOUT after a deadline (pact_op_set_timeout), or a negative errno
 * when the fd can no longer be watched (-EBADF).
 *
 * Removal takes effect at once: after pact_op_cancel() returns — also when
 * called from inside cb, or from the callback of another watcher or op
 * of the same iteration — cb is never called with more = 1 again, even
 * for a readiness the kernel had already reported. On both engines a
 * watcher waits in an epoll set, which holds no file: an fd closed while
 * watched (asyncio's close under a pending sock_recv) ends its file at
 * once, and the peer of a socket sees the end. The watcher then stays
 * silent until cancelled, or ends with -EBADF; a new watcher on the
 * number, once it names another file, watches that file (as do the
 * watchers still on the number). On epoll the fd gets one level-
 * triggered registration while watched (no system call per event); on
 * io_uring a one-shot registration armed again after each callback, by
 * an SQE sent with the loop's next submission, and the ring waits on the
 * set. Cancel a watcher before closing its fd all the same: on epoll a
 * file that lives on in a dup or a child can no longer be removed from
 * the registration by number. Errors of
 * the call: -EINVAL for bad events or a NULL callback, -EBADF for a bad
 * fd, -EPERM for a regular file or a directory (always ready; epoll
 * refuses them), plus the loop's -ESHUTDOWN, -EPERM and -ECHILD. Keeps the
 * loop alive like any op (pact_op_set_ref applies). Returns the op. */
PACT_API pact_op pact_watch(pact_loop *loop, int fd, unsigned events,
                            pact_op_cb cb, void *user);

/* Changes the events a pact_watch() op waits for, without re-creating it
 * (asyncio's add_writer on an fd that has a reader). Takes effect at once:
 * from the return on, callbacks report only the new events (a readiness
 * already reported for events no longer watched is not delivered), and
 * new events are noticed from the next wait on. Returns 0, -EINVAL for
 * bad events (as pact_watch) or an op that is not a watch, -EALREADY once
 * it is cancelled or completing, -ENOENT for a stale handle, or the
 * loop's -ESHUTDOWN, -EPERM and -ECHILD. */
PACT_API int pact_op_set_events(pact_loop *loop, pact_op watch,
                                   unsigned events);

/* Completes with 0 after delay_ns (never earlier). */
PACT_API pact_op pact_sleep(pact_loop *loop, uint64_t delay_ns, pact_op_cb cb,
                            void *user);

/* Windows: waits until handle — an object whose wait changes nothing, such
 * as a process or an event (not a mutex or semaphore) — is signalled.
 * Result: 0 when signalled, -ETIMEDOUT once timeout_ns (0 = no limit,
 * rounded up to whole milliseconds) passed, -ECANCELED when cancelled in
 * time; a cancel that comes after the wait fired gets the real result. The
 * op's memory is released only after the system's wait callback has
 * returned. On Linux: -ENOTSUP (wait for a pidfd or an eventfd with
 * pact_poll()). */
PACT_API pact_op pact_wait_for_handle(pact_loop *loop, pact_os_fd handle,
                                      uint64_t timeout_ns, pact_op_cb cb,
                                      void *user);

/* Windows named pipes (on Linux these answer -ENOTSUP: use Unix sockets).
 * A server always has an instance listening, from pact_pipe_server_open()
 * until pact_pipe_server_close(): the next instance is made before a
 * connected one is handed over, so a client never finds no pipe while the
 * server is open (it may find every instance busy, which
 * pact_pipe_connect() waits out). */
typedef struct pact_pipe_server pact_pipe_server;

/* Opens a named-pipe server on name ("\\.\pipe\NAME"), making its first
 * instance: clients can connect from now on. A second server on the same
 * name is -EACCES. */
PACT_API int pact_pipe_server_open(pact_loop *loop, const char *name,
                                   pact_pipe_server **out);

/* Accepts one client. Result: the connected pipe's HANDLE (overlapped;
 * use it with pact_read() / pact_write(); the callback owns it, also when
 * the accept won a race against pact_op_cancel()), -ECANCELED, or a
 * negative errno. One accept at a time per server (-EBUSY). A client that
 * connects and leaves before it is accepted is skipped. */
PACT_API pact_op pact_pipe_server_accept(pact_pipe_server *server,
                                         pact_op_cb cb, void *user);

/* Closes the server: its listening instance goes (new clients get
 * -ENOENT), an accept in flight completes with -ECANCELED, and the server
 * is freed once it has (at once when none is). A loop closed with a server
 * open closes it. -EALREADY when closed already. */
PACT_API int pact_pipe_server_close(pact_pipe_server *server);

/* Connects to the named-pipe server name. Result: the pipe's HANDLE
 * (overlapped), -ENOENT when no server has the name, -ECANCELED. While
 * every instance is busy it tries again after 1 ms, doubling up to 100 ms
 * between tries, on the loop's timers (the loop never blocks); a cancel
 * or deadline during that wait ends it with no handle left open. */
PACT_API pact_op pact_pipe_connect(pact_loop *loop, const char *name,
                                   pact_op_cb cb, void *user);

/* Gives an operation a deadline timeout_ns from now: if it has not
 * completed by then it is cancelled and completes with -ETIMEDOUT (unless
 * the kernel finished it first: then the real result is delivered). On
 * io_uring, an operation not yet submitted (call this right after starting
 * it) gets a linked timeout; otherwise the loop's timer heap is used.
 * Returns 0, or:
 *   -EINVAL    timeout_ns is 0, or op is a pact_sleep() (its own deadline);
 *   -EBUSY     the op has a deadline already (one per op; it cannot be
 *              moved or removed);
 *   -EALREADY  the op is already completing, or a cancel was requested;
 *   -ENOENT    the handle is stale (the callback has run), of another loop,
 *              or not an op handle;
 *   -ESHUTDOWN the loop is closing or closed; -EPERM off the owner thread. */
PACT_API int pact_op_set_timeout(pact_loop *loop, pact_op op,
                                 uint64_t timeout_ns);

/* Asks for an operation to be cancelled. Cancel is a request: the
 * operation's callback still runs exactly once, with -ECANCELED if the
 * cancel was in time, or with the real result (bytes received, an accepted
 * fd) if the kernel completed it first — that result is never dropped.
 *
 * The return value says whether a request was made, not whether it was in
 * time; the callback's result says that (-ECANCELED, or -ETIMEDOUT for a
 * deadline: in time; anything else: the op finished first).
 *   0          the request was made (the op was queued or in flight);
 *   -EALREADY  nothing was done: the op's result is already known and its
 *              callback is due or running (also from inside its own
 *              callback), or a cancel or its deadline was already
 *              requested. The callback still runs exactly once.
 *   -ENOENT    the handle is stale (the callback has run), of another
 *              loop, not an op handle, or one of the loop's own internal
 *              operations;
 *   -ESHUTDOWN the loop is closed; -EPERM off the owner thread.
 * Safe from any callback, twice, or after completion. */
PACT_API int pact_op_cancel(pact_loop *loop, pact_op op);

/* Whether an operation in flight keeps pact_loop_run() going: ref 1 (the
 * default) it does, ref 0 it does not (a receive that waits for a
 * message that may never come, while other work decides when the loop
 * ends). The op stays in flight; it still completes exactly once, also
 * with -ECANCELED when the loop is closed. pact_op_cancel() makes it count
 * again until its callback: a cancel in progress keeps the loop alive, so
 * the -ECANCELED comes before pact_loop_run() returns, on every engine.
 * Returns 0, or -ENOENT for an
 * op that has completed (its callback ran), a handle of another loop or
 * kind, or the loop's own operations. */
PACT_API int pact_op_set_ref(pact_loop *loop, pact_op op, int ref);

/* ------------------------------------------------------------------------ */
/* Streams: transports and protocols (TCP, Unix sockets, pipes)             */
/* ------------------------------------------------------------------------ */

/* A stream transport: asyncio's Transport in C. It owns its fd from
 * creation and closes it only after every operation on it has completed.
 * The pointer stays valid until connection_lost has returned; after that it
 * is freed and must not be used. */
typedef struct pact_transport pact_transport;

/* The callbacks of a stream protocol. Any member may be NULL. Order, on
 * every path (peer closes, user closes, error, abort, loop close):
 * connection_made first, then any number of data_received, at most one
 * eof_received, and connection_lost exactly once, last. Nothing is called
 * after connection_lost. Every callback may close or abort the transport.
 *
 * The table is not copied: a transport keeps the pointer it was given
 * (pact_transport_open, pact_transport_set_protocol, a server's factory,
 * the connect and TLS helpers) and reads it at every callback, so the
 * table must stay valid and unchanged until connection_lost has returned.
 * A static const table is the usual way. The same holds for
 * pact_datagram_protocol and pact_subprocess_protocol. */
typedef struct pact_protocol {
    void (*connection_made)(pact_transport *t, void *user);
    /* data is valid only during the call. */
    void (*data_received)(pact_transport *t, const void *data, size_t len,
                          void *user);
    /* The peer closed its writing side. Return non-zero to keep the
     * connection half-open (you may still write); zero closes it. */
    int (*eof_received)(pact_transport *t, void *user);
    /* err: 0 for a clean close, else a negative errno. */
    void (*connection_lost)(pact_transport *t, int err, void *user);
    /* The write buffer went above the high mark / back to the low mark. */
    void (*pause_writing)(pact_transport *t, void *user);
    void (*resume_writing)(pact_transport *t, void *user);
    /* Buffered protocol (asyncio's BufferedProtocol): if get_buffer is set,
     * received data is copied into the buffer it returns (at least 1
     * byte, valid until buffer_updated) and buffer_updated reports how many
     * bytes arrived; data_received is then not used. (Sockets receive into
     * the loop's buffers, pact_recv_multishot, so a transport holds none.)
     *
     * size_hint is how many bytes are waiting; *len may be smaller (the
     * rest goes to the next get_buffer call, at once) or larger (only
     * size_hint bytes are copied). Returning NULL or setting *len to 0 is
     * not "no room for now": it is a fatal error for the connection. The
     * transport is aborted (write buffer dropped, nothing more delivered,
     * the bytes not yet copied are lost with it) and connection_lost gets
     * -ENOBUFS. TLS transports do the same. To take no data for a while,
     * pause reading instead (also from inside buffer_updated): the rest
     * is then held and handed over after resume_reading. */
    void *(*get_buffer)(pact_transport *t, size_t size_hint, size_t *len,
                        void *user);
    void (*buffer_updated)(pact_transport *t, size_t nbytes, void *user);
} pact_protocol;

/* What a transport's fd is. */
typedef enum pact_stream_kind {
    PACT_STREAM_SOCKET = 0, /* a connected stream socket: TCP or Unix */
    PACT_STREAM_READ_PIPE,  /* the read end of a pipe or FIFO (or a tty) */
    PACT_STREAM_WRITE_PIPE, /* the write end of a pipe or FIFO */
    /* A pipe read and written through one descriptor: a Windows named
     * pipe (pact_pipe_server_accept(), pact_pipe_connect()); on Linux a
     * pty master or another fd read and written as a file. It has no
     * half-close: write_eof answers -ENOTSUP. */
    PACT_STREAM_DUPLEX_PIPE,
} pact_stream_kind;

/* Wraps a connected socket in a transport (kind PACT_STREAM_SOCKET; on
 * Linux a pipe kind with a pipe fd works too, as
 * pact_transport_open_pipe()). The transport owns fd from now on (also on
 * failure: then fd is closed). Its socket options are left as they are
 * (TCP_NODELAY is neither set nor cleared). connection_made runs on the
 * next iteration, and reading starts after it returns unless it paused
 * reading. On Windows fd is a SOCKET made for overlapped I/O (socket(),
 * WSASocket with WSA_FLAG_OVERLAPPED) and a pipe kind is -EINVAL.
 * Returns 0 and sets *out, or a negative errno. */
PACT_API int pact_transport_open(pact_loop *loop, pact_os_sock fd,
                                 pact_stream_kind kind,
                                 const pact_protocol *proto, void *user,
                                 pact_transport **out);

/* Wraps a pipe in a transport: kind PACT_STREAM_READ_PIPE,
 * PACT_STREAM_WRITE_PIPE or PACT_STREAM_DUPLEX_PIPE (a socket kind is
 * -EINVAL). The same transport as on a socket: flow control with the
 * write marks, pause_reading without loss, close flushing, exactly one
 * connection_lost. On Windows fd is a HANDLE opened for overlapped I/O
 * (a named pipe; anonymous pipes cannot be overlapped). The transport
 * owns fd from now on (also on failure: then it is closed). Returns 0
 * and sets *out, or a negative errno. */
PACT_API int pact_transport_open_pipe(pact_loop *loop, pact_os_fd fd,
                                      pact_stream_kind kind,
                                      const pact_protocol *proto, void *user,
                                      pact_transport **out);

/* Queues data for sending. The data is copied: the caller may reuse its
 * buffer at once. With nothing queued the bytes go to the kernel at once
 * (send(2)) and only what it does not take is copied; on io_uring a
 * small write to a socket made in a callback the loop runs for a
 * completion it reaped (data_received, an op's callback; never
 * connection_made or a pact_call_soon callback), while the peer is not
 * streaming, may be copied and sent with the loop's next submission
 * instead, together with the iteration's other sends (one system call
 * for all of them): the bytes are in the kernel before the loop sleeps,
 * or when pact_loop_run / pact_loop_run_once returns, whichever comes
 * first (a run with PACT_RUN_AGAIN leaves them to the next run's
 * wait, or to pact_loop_flush()); until the send completes they count
 * in the write buffer size (never past the high mark: a write that
 * would cross it goes at once).
 * Writes after close() or abort() are dropped and counted (a debug
 * message says so), as asyncio does. Returns 0, or -ESHUTDOWN
 * (closing), -EPIPE (after write_eof), -ENOMEM. */
PACT_API int pact_transport_write(pact_transport *t, const void *data,
                                  size_t len);

/* pact_transport_write() for bytes the transport's own data_received
 * was handed, without copying them: call it from data_received with data
 * and len inside the bytes of that call (an echo, a proxy forwarding
 * what it read, a framing layer answering from the request). On io_uring
 * the loop's receive buffer that holds them is handed to the send and
 * goes back to the loop when the send completes (for the caller, data
 * is still valid only during data_received). The send joins the loop's next submission with the other sends
 * of this iteration, before the loop waits again: unlike
 * pact_transport_write(), the bytes are not in the kernel yet when this
 * returns. What the socket cannot take at once is copied then, so a
 * slow reader holds no loop buffer.
 *
 * Where that is not possible the bytes are copied and sent exactly as
 * pact_transport_write() does: on epoll (whose receive buffer is reused
 * at once) and io_uring without a provided buffer ring, on TLS and pipe
 * transports, while earlier writes are still queued, and when data is
 * not inside the buffer lent to the running data_received (bytes held
 * while reading was paused, or any other memory). Either way the
 * results, errors, order with other writes and flow control are those of
 * pact_transport_write(): the bytes count in the write buffer size
 * until sent. Returns 0, or -ESHUTDOWN (closing), -EPIPE (after
 * write_eof), -ENOMEM, -EINVAL (t NULL, data NULL with len > 0). */
PACT_API int pact_transport_write_received(pact_transport *t,
                                           const void *data, size_t len);

/* pact_transport_write() for several buffers, coalesced into one send. */
PACT_API int pact_transport_writev(pact_transport *t, const struct iovec *iov,
                                   int iovcnt);

/* Half-close: after the buffered data has been sent, shut down the writing
 * side (the peer sees EOF). Reading goes on. Returns 0, or -ENOTSUP on a
 * read or duplex pipe, -ESHUTDOWN (closing), -EALREADY (called before), -EPIPE (a
 * TLS transport whose connection underneath is gone, as its writes). */
PACT_API int pact_transport_write_eof(pact_transport *t);

/* Whether write_eof is possible (stream sockets and write pipes; not
 * read or duplex pipes). */
PACT_API int pact_transport_can_write_eof(const pact_transport *t);

/* Closes: stops reading, sends what is buffered, then closes the fd and
 * calls connection_lost(0). A socket transport closed with bytes still
 * buffered takes writes until the buffer has drained, and sends them
 * before it closes (pause_writing / resume_writing follow the marks
 * meanwhile), as asyncio's socket transport does; once it has drained,
 * and on pipes and TLS at once, writes answer -ESHUTDOWN.
 * pact_transport_is_closing() is 1 from the call on. Calling it again is
 * harmless (returns -EALREADY). */
PACT_API int pact_transport_close(pact_transport *t);

/* Closes now: drops the write buffer, cancels what is in flight, then
 * connection_lost(0) once the kernel has handed back every operation (as
 * asyncio's abort(): the user asked for it, so it is not an error).
 * Harmless after close (returns -EALREADY if already aborted). */
PACT_API int pact_transport_abort(pact_transport *t);

/* Whether the transport keeps pact_loop_run() going: ref 1 (the default)
 * it does, through the operations it has in flight (its read, a write,
 * a sendfile, a pipe's watch); ref 0 they do not, now and later, so a
 * background connection (a log shipper, a control socket) stays open and
 * works while other work keeps the loop alive, and run() returns once
 * only such connections are left. Nothing else changes: data is still
 * read and delivered whenever the loop runs, and close or loop close end
 * it exactly once. On a TLS transport it covers the connection underneath
 * and the handshake and close timers; a transport wrapped by
 * pact_tls_wrap() keeps the plain transport's choice. May be called at
 * any time, also from its callbacks. Returns 0, -EINVAL for NULL, -EPERM
 * off the loop's owner thread. */
PACT_API int pact_transport_set_ref(pact_transport *t, int ref);

/* Stops calling data_received until resume. Never loses, duplicates or
 * reorders a byte: data that arrives while paused is kept and handed over
 * on resume. If sending fails meanwhile (the peer went: EPIPE,
 * ECONNRESET) while received bytes are kept, those bytes still come first
 * on resume and connection_lost(error) after them; until then writes and
 * write_eof answer -EPIPE (close or abort end it at once, with that
 * error). With nothing kept, the failure ends the transport at once.
 * Returns 0, or -EALREADY if already paused, -ESHUTDOWN when closing. */
PACT_API int pact_transport_pause_reading(pact_transport *t);

/* Resumes reading (kept data first, on the next iteration). */
PACT_API int pact_transport_resume_reading(pact_transport *t);

/* 1 if reading (not paused, not closing), else 0. */
PACT_API int pact_transport_is_reading(const pact_transport *t);

/* 1 once close() or abort() was called, the connection was lost, or a
 * send failed (writes then answer -EPIPE while bytes held for a paused
 * reader are still handed over), as asyncio's is_closing(). */
PACT_API int pact_transport_is_closing(const pact_transport *t);

/* Bytes buffered and not yet handed to the kernel (or in flight). Once a
 * transport ends, 0 — except a write pipe that ended with an error: inside
 * its connection_lost it still counts the bytes it could not write, so a
 * reader that left with bytes unwritten (a broken pipe) can be told from
 * one that left after everything was written. */
PACT_API size_t pact_transport_write_buffer_size(const pact_transport *t);

/* Sets the flow-control marks (defaults: 64 KiB high, 16 KiB low, as in
 * asyncio). high 0 = default; low must not exceed high (-EINVAL). As
 * asyncio's, new marks may call pause_writing (from inside this call)
 * but never resume_writing: a paused writer is resumed by the send that
 * takes the buffer to the low mark. May return -ENOMEM the first time:
 * the write state of a transport is allocated on first need (an idle
 * connection holds none). A high mark of zero needs
 * pact_transport_set_write_marks. */
PACT_API int pact_transport_set_write_buffer_limits(pact_transport *t,
                                                    size_t high, size_t low);

/* Sets the flow-control marks as they are given, a high mark of 0
 * included: that is asyncio's set_write_buffer_limits(high=0),
 * pause_writing whenever the buffer becomes non-empty (a write the
 * kernel takes at once buffers nothing) and resume_writing once it is
 * empty again (the low mark is then 0 too). A low mark above the high
 * one is -EINVAL. Otherwise as pact_transport_set_write_buffer_limits:
 * new marks may pause, never resume, and the first call may return
 * -ENOMEM. That call keeps reading a high of 0 as the default, the
 * meaning its callers were given (docs/abi.md). */
PACT_API int pact_transport_set_write_marks(pact_transport *t, size_t high,
                                            size_t low);

/* Reads the current marks. */
PACT_API void pact_transport_get_write_buffer_limits(const pact_transport *t,
                                                     size_t *high, size_t *low);

/* Replaces the protocol (for example to switch to TLS). */
PACT_API int pact_transport_set_protocol(pact_transport *t,
                                         const pact_protocol *proto,
                                         void *user);

/* The transport's loop, fd, kind and protocol user pointer. */
PACT_API pact_loop *pact_transport_loop(const pact_transport *t);
/* The fd (still owned by the transport), or -EBADF once it is closed. On
 * Windows the SOCKET or HANDLE as an int (Windows handle values fit in 32
 * bits: cast back through intptr_t). */
PACT_API int pact_transport_fd(const pact_transport *t);
/* Which kind of fd the transport wraps. */
PACT_API pact_stream_kind pact_transport_kind(const pact_transport *t);
/* The user pointer given with the protocol. */
PACT_API void *pact_transport_user(const pact_transport *t);

/* The local (sockname) or peer address of a socket transport. Returns 0
 * or a negative errno (-ENOTSOCK for pipes). */
PACT_API int pact_transport_sockname(const pact_transport *t,
                                     struct sockaddr_storage *ss,
                                     socklen_t *len);
/* The peer's address, as pact_transport_sockname() gives the local one. */
PACT_API int pact_transport_peername(const pact_transport *t,
                                     struct sockaddr_storage *ss,
                                     socklen_t *len);

/* Writes dropped because they came after close/abort (asyncio logs these);
 * a write a closing socket transport still took while its buffer drained
 * (pact_transport_close) is not one. The count stops at UINT32_MAX. */
PACT_API uint64_t pact_transport_writes_after_close(const pact_transport *t);

/* Sends count bytes of file_fd starting at offset over the transport,
 * after anything already buffered and before anything written later. The
 * file position of file_fd is not changed. On Windows file_fd is a file
 * HANDLE, sent with TransmitFile on socket transports (pipe transports
 * answer -ENOTSUP there). cb's result: bytes sent, or a
 * negative errno (-EPIPE/-ECONNRESET when the peer closes midway); while it
 * runs, pact_transport_write() queues behind it. count 0 = to end of file. */
PACT_API int pact_transport_sendfile(pact_transport *t, pact_os_fd file_fd,
                                     int64_t offset, size_t count,
                                     pact_op_cb cb, void *user);

/* ---- servers ------------------------------------------------------------ */

typedef struct pact_server pact_server;

/* Chooses the protocol of a new connection: fill *proto and *user and
 * return 0, or return a negative errno to refuse it (the fd is closed).
 *
 * Ownership of *user: once the factory has returned 0 with a protocol,
 * nothing can fail any more (the transport was made before the factory
 * was asked): connection_made and then connection_lost run exactly once,
 * so a user the factory allocated is freed in connection_lost. When the
 * factory refuses (an errno, or no protocol) nothing of the user's is
 * ever called: free what was allocated before returning. When the
 * transport cannot be made (no memory), the factory is not asked. */
typedef int (*pact_protocol_factory_cb)(pact_server *server,
                                        void *factory_user,
                                        const pact_protocol **proto,
                                        void **user);

/* Server options: start from pact_server_options_init() or
 * PACT_SERVER_OPTIONS_INIT (all defaults), then set what you need. */
typedef struct pact_server_options {
    /* sizeof this struct as the caller was compiled: set by the init function or macro
     * (docs/abi.md: fields are only appended; the library reads the ones
     * the caller knows, refuses a size below the first layout with -EINVAL
     * and unknown non-zero fields with -E2BIG). */
    size_t size;
    int backlog;        /* 0 = SOMAXCONN */
    int reuse_port;     /* SO_REUSEPORT: one listener per loop/thread */
    int ipv6_only;      /* for "::": 1 = IPv6 only, 0 = dual stack */
} pact_server_options;

#define PACT_SERVER_OPTIONS_INIT { .size = sizeof(pact_server_options) }

/* Fills *opts with the defaults (all zero) and sets opts->size. */
PACT_API void pact_server_options_init(pact_server_options *opts);

/* Listens on host:port (numeric address; "::" is dual stack unless
 * ipv6_only, port 0 picks one) and serves each connection with a protocol
 * from the factory. An error on one connection never stops the listener;
 * on EMFILE/ENFILE/ENOBUFS/ENOMEM the server backs off and keeps serving
 * once descriptors free up. Accepted connections get TCP_NODELAY, as the
 * sockets pact_connect_tcp() makes (and as asyncio's transports do):
 * small writes leave at once instead of waiting for Nagle's algorithm; a
 * protocol that wants Nagle back clears it in connection_made on
 * pact_transport_fd(). On Linux the listening socket has it and the
 * accepted ones inherit it (no system call per connection). Returns 0
 * and sets *out, or a negative errno. */
PACT_API int pact_server_listen_tcp(pact_loop *loop, const char *host,
                                    uint16_t port,
                                    const pact_server_options *opts,
                                    pact_protocol_factory_cb factory,
                                    void *factory_user, pact_server **out);

/* Listens on a Unix socket. A path starting with '@' is in the abstract
 * namespace. A stale socket file (nobody listening) is replaced; a live
 * one gives -EADDRINUSE. The file is removed when the server closes. */
PACT_API int pact_server_listen_unix(pact_loop *loop, const char *path,
                                     const pact_server_options *opts,
                                     pact_protocol_factory_cb factory,
                                     void *factory_user, pact_server **out);

/* Serves a socket that is already listening (bound and listen()ed by the
 * caller: the sockets a program or a framework made itself, or one
 * inherited from a service manager), as pact_server_listen_tcp() serves
 * its own: every connection gets a protocol from the factory, TCP ones
 * TCP_NODELAY. The server owns fd from now on and closes it when it
 * closes (also on failure); pass a dup() to keep one of your own (a
 * shutdown() of either stops the listening for both). A Unix socket's
 * file is left where it is. opts: backlog, if set, is given to listen()
 * again; reuse_port and ipv6_only do not apply (the socket exists) and
 * must be 0. Returns 0 and sets *out, -ENOTSOCK for a descriptor that is
 * not a socket, -EINVAL for one that is not listening (or not a stream
 * socket), or another negative errno. */
PACT_API int pact_server_adopt(pact_loop *loop, pact_os_sock fd,
                               const pact_server_options *opts,
                               pact_protocol_factory_cb factory,
                               void *factory_user, pact_server **out);

/* Inside a call of the server's protocol factory: the transport of the
 * connection being accepted, for what the factory wants to know before it
 * chooses (pact_transport_fd(), pact_transport_peername(),
 * pact_transport_sockname()) and to keep for later; its protocol's
 * callbacks start with connection_made once the factory has chosen.
 * NULL outside the factory, or when server is NULL. */
PACT_API pact_transport *pact_server_accepting(const pact_server *server);

/* Stops accepting: cancels the pending accept and closes any connection
 * accepted after this call (never handed to a protocol). Connections
 * already made go on. The server is freed once it is closed and its
 * connections are gone (after the wait_closed callbacks). Returns 0, or
 * -EALREADY if already closing. */
PACT_API int pact_server_close(pact_server *server);

/* Whether the server keeps pact_loop_run() going: ref 1 (the default)
 * its pending accept (or its back-off timer after EMFILE) does; ref 0 it
 * does not, so run() returns when only the listener is left. It still
 * accepts while the loop runs for other reasons. The connections it made
 * are not affected: each is referenced on its own
 * (pact_transport_set_ref()). Returns 0, -EINVAL, -EPERM off the owner
 * thread. */
PACT_API int pact_server_set_ref(pact_server *server, int ref);

/* Calls cb once the server is closed and all its connections are gone,
 * from a loop callback (also when the loop closes with the server open),
 * just before the server is freed: after the callbacks the pact_server
 * pointer is dangling. Waiters run in the order they were added. At most
 * 8 waiters per server: the 9th call returns -ENOSPC (a TLS server, from
 * pact_server_listen_*_tls, uses one itself, which leaves 7). Returns 0,
 * -EINVAL for a NULL server or cb, -ENOSPC when full, -EPERM off the
 * loop's owner thread. */
PACT_API int pact_server_wait_closed(pact_server *server, pact_call_cb cb,
                                     void *user);

/* The port a TCP server listens on, or a negative errno. */
PACT_API int pact_server_port(const pact_server *server);

/* The loop the server runs on. */
PACT_API pact_loop *pact_server_loop(const pact_server *server);

/* The listening fd (owned by the server). */
PACT_API int pact_server_fd(const pact_server *server);

/* Connections currently open on the server. */
PACT_API size_t pact_server_connections(const pact_server *server);

/* Accept errors absorbed (ECONNABORTED, EMFILE back-offs, ...). */
PACT_API uint64_t pact_server_accept_errors(const pact_server *server);

/* ---- clients ------------------------------------------------------------ */

/* Called once with a transport (its connection_made follows on the next
 * iteration) or with NULL and a negative errno. When err < 0,
 * pact_connect_error_message() says why in words during the call. */
typedef void (*pact_connect_cb)(pact_loop *loop, pact_transport *t, int err,
                                void *user);

/* Inside a pact_connect_cb called with err < 0 — from pact_connect_tcp(),
 * pact_connect_unix(), pact_connect_tcp_tls(), pact_connect_unix_tls() or
 * as pact_tls_wrap()'s on_handshake — why the attempt failed, in words,
 * in every build mode: for TLS OpenSSL's reason with the certificate
 * verification result ("certificate verify failed: hostname mismatch",
 * "certificate verify failed: self-signed certificate", "TLS handshake
 * timed out", "SSL_do_handshake: error:0A00010B:SSL routines::wrong
 * version number"); for a name that did not resolve, the resolver's
 * ("Name or service not known"). NULL when there is nothing to add to
 * pact_strerror(err), outside such a call, or for another loop. The
 * string is valid until the callback returns. */
PACT_API const char *pact_connect_error_message(const pact_loop *loop);

/* Inside the same callbacks: the certificate verification result when
 * the failure was one (-EKEYREJECTED): an X509_V_ERR_* code, such as
 * X509_V_ERR_HOSTNAME_MISMATCH (62) or
 * X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18); else 0 (X509_V_OK). */
PACT_API long pact_connect_verify_result(const pact_loop *loop);

/* Connects to host:port — a numeric address, or a name resolved off the
 * loop thread — trying each address in turn, then wraps the socket in a
 * transport with proto/proto_user. The socket gets TCP_NODELAY (small
 * writes leave at once, as in asyncio). Returns an op handle (cancellable
 * with pact_op_cancel: cb then gets -ECANCELED and no fd is left behind) or a
 * negative errno. */
PACT_API pact_op pact_connect_tcp(pact_loop *loop, const char *host,
                                  uint16_t port, const pact_protocol *proto,
                                  void *proto_user, pact_connect_cb cb,
                                  void *user);

/* Connects to a Unix socket ('@' = abstract), retrying while the server's
 * backlog is full (EAGAIN) with a delay doubling from 1 ms to 100 ms — the
 * role of asyncio's connect_pipe. Cancellable as pact_connect_tcp(). */
PACT_API pact_op pact_connect_unix(pact_loop *loop, const char *path,
                                   const pact_protocol *proto,
                                   void *proto_user, pact_connect_cb cb,
                                   void *user);

/* ------------------------------------------------------------------------ */
/* Datagrams: UDP and Unix datagram endpoints                               */
/* ------------------------------------------------------------------------ */

/* A datagram endpoint: asyncio's DatagramTransport in C. It owns its
 * socket from creation and closes it only after every operation on it has
 * completed. The pointer stays valid until connection_lost has returned. */
typedef struct pact_datagram pact_datagram;

/* The callbacks of a datagram protocol. Any member may be NULL. Order:
 * connection_made first, then any number of datagram_received and
 * error_received, and connection_lost exactly once, last. Every callback
 * may close or abort the endpoint. The table is not copied: it must stay
 * valid until connection_lost has returned (see pact_protocol). */
typedef struct pact_datagram_protocol {
    void (*connection_made)(pact_datagram *ep, void *user);
    /* One datagram (len may be 0). data and addr are valid only during the
     * call; addr is NULL when the sender has no name (an unbound Unix
     * socket). */
    void (*datagram_received)(pact_datagram *ep, const void *data, size_t len,
                              const struct sockaddr *addr, socklen_t addrlen,
                              void *user);
    /* A non-fatal error: -ECONNREFUSED (an ICMP port unreachable for an
     * earlier datagram), -EHOSTUNREACH, -EMSGSIZE (a datagram too long to
     * send, or received longer than the receive buffer and dropped), a
     * datagram that could not be sent, ... addr is the destination the
     * error is about when known (else NULL). Reception and sending go on:
     * an error never stops the endpoint. */
    void (*error_received)(pact_datagram *ep, int err,
                           const struct sockaddr *addr, socklen_t addrlen,
                           void *user);
    /* err: 0 after close()/abort(), else the negative errno of the fatal
     * error (a closed or invalid socket) that ended the endpoint. */
    void (*connection_lost)(pact_datagram *ep, int err, void *user);
    /* The write buffer went above the high mark / back to the low mark. */
    void (*pause_writing)(pact_datagram *ep, void *user);
    void (*resume_writing)(pact_datagram *ep, void *user);
} pact_datagram_protocol;

/* Endpoint options: start from pact_datagram_options_init() or
 * PACT_DATAGRAM_OPTIONS_INIT (all defaults), then set what you need. */
typedef struct pact_datagram_options {
    /* sizeof this struct as the caller was compiled: set by the init function or macro
     * (docs/abi.md: fields are only appended; the library reads the ones
     * the caller knows, refuses a size below the first layout with -EINVAL
     * and unknown non-zero fields with -E2BIG). */
    size_t size;
    int reuse_port;      /* SO_REUSEPORT before bind */
    int reuse_addr;      /* SO_REUSEADDR before bind (multicast receivers) */
    int allow_broadcast; /* SO_BROADCAST */
    int ipv6_only;       /* IPV6_V6ONLY for an AF_INET6 socket (1 = on) */
    /* Receive buffer for one datagram; 0 = 65536 for UDP (the largest UDP
     * payload fits), 262144 for Unix sockets. Longer datagrams are
     * dropped and reported to error_received as -EMSGSIZE. */
    size_t max_datagram;
} pact_datagram_options;

#define PACT_DATAGRAM_OPTIONS_INIT { .size = sizeof(pact_datagram_options) }

/* Fills *opts with the defaults (all zero) and sets opts->size. */
PACT_API void pact_datagram_options_init(pact_datagram_options *opts);

/* Opens a datagram endpoint on a new socket of local's or remote's family
 * (AF_INET, AF_INET6 or AF_UNIX; both given = same family). local, if not
 * NULL, is bound (a Unix path that is a stale socket file is replaced, and
 * removed again when the endpoint closes); remote, if not NULL, is
 * connected: sendto() then needs no address and only that peer's datagrams
 * arrive. Both are copied. opts may be NULL. connection_made runs on the
 * next iteration and reception starts after it returns. UDP sockets get
 * IP_RECVERR/IPV6_RECVERR, so ICMP errors reach error_received also when
 * unconnected. Returns 0 and sets *out, or a negative errno. */
PACT_API int pact_datagram_open(pact_loop *loop, const struct sockaddr *local,
                                socklen_t local_len,
                                const struct sockaddr *remote,
                                socklen_t remote_len,
                                const pact_datagram_options *opts,
                                const pact_datagram_protocol *proto,
                                void *user, pact_datagram **out);

/* pact_datagram_open() for UDP with numeric addresses: local_host NULL =
 * not bound (the kernel picks a port on the first send), remote_host NULL
 * = not connected; one of them is needed. Port 0 binds any port. */
PACT_API int pact_datagram_open_udp(pact_loop *loop, const char *local_host,
                                    uint16_t local_port,
                                    const char *remote_host,
                                    uint16_t remote_port,
                                    const pact_datagram_options *opts,
                                    const pact_datagram_protocol *proto,
                                    void *user, pact_datagram **out);

/* pact_datagram_open() for Unix datagram sockets ('@' = abstract
 * namespace): local_path NULL = unnamed (peers cannot answer), remote_path
 * NULL = not connected. */
PACT_API int pact_datagram_open_unix(pact_loop *loop, const char *local_path,
                                     const char *remote_path,
                                     const pact_datagram_options *opts,
                                     const pact_datagram_protocol *proto,
                                     void *user, pact_datagram **out);

/* Wraps an existing datagram socket (bound and/or connected by the
 * caller; socketpair(AF_UNIX, SOCK_DGRAM) works). The endpoint owns fd
 * from now on (also on failure: then fd is closed). On Windows fd is a
 * UDP SOCKET made for overlapped I/O (Winsock has no Unix datagrams:
 * pact_datagram_open_unix() answers -ENOTSUP there). */
PACT_API int pact_datagram_adopt(pact_loop *loop, pact_os_sock fd,
                                 const pact_datagram_options *opts,
                                 const pact_datagram_protocol *proto,
                                 void *user, pact_datagram **out);

/* Queues one datagram (len may be 0) for addr, or for the connected peer
 * when addr is NULL. Data and address are copied. Each datagram is sent
 * whole or reported to error_received; datagrams go out in the order they
 * were queued. Returns 0, or -ESHUTDOWN (closing: dropped and counted;
 * but while a close still sends what was queued before it, datagrams are
 * queued behind, as asyncio's datagram transport does),
 * -EDESTADDRREQ (no addr on an unconnected endpoint), -EISCONN (an addr
 * other than the connected peer's), -EMSGSIZE (len over 2 GiB), -EINVAL,
 * -ENOMEM. */
PACT_API int pact_datagram_sendto(pact_datagram *ep, const void *data,
                                  size_t len, const struct sockaddr *addr,
                                  socklen_t addrlen);

/* Closes: stops receiving, sends what is queued (and what is sent while
 * it does: pact_datagram_sendto), then closes the socket and calls
 * connection_lost(0). Again: -EALREADY. */
PACT_API int pact_datagram_close(pact_datagram *ep);

/* Closes now: drops the queued datagrams (not reported), cancels what is
 * in flight, then connection_lost(0) once the kernel has handed every
 * operation back. Again: -EALREADY. */
PACT_API int pact_datagram_abort(pact_datagram *ep);

/* Whether the endpoint keeps pact_loop_run() going: ref 1 (the default)
 * its receive and send in flight do; ref 0 they do not, now and later
 * (datagrams are still received and sent while the loop runs). Returns
 * 0, -EINVAL, -EPERM off the owner thread. */
PACT_API int pact_datagram_set_ref(pact_datagram *ep, int ref);

/* Stops calling datagram_received until resume. Nothing is lost: a
 * datagram received meanwhile is kept and handed over on resume, and the
 * rest wait in the socket's receive buffer (where the kernel drops new
 * ones once it is full, as for any UDP receiver). Returns 0, -EALREADY
 * if paused, -ESHUTDOWN when closing. */
PACT_API int pact_datagram_pause_reading(pact_datagram *ep);

/* Resumes reception (a kept datagram first, on the next iteration). */
PACT_API int pact_datagram_resume_reading(pact_datagram *ep);

/* 1 if receiving (not paused, not closing), else 0. */
PACT_API int pact_datagram_is_reading(const pact_datagram *ep);

/* 1 once close() or abort() was called or the endpoint was lost. */
PACT_API int pact_datagram_is_closing(const pact_datagram *ep);

/* Bytes queued and not yet sent, counting 8 extra per datagram so that
 * empty datagrams count too (as asyncio). */
PACT_API size_t pact_datagram_write_buffer_size(const pact_datagram *ep);

/* Sets the flow-control marks (defaults 64 KiB high, 16 KiB low).
 * high 0 = default; low must not exceed high. May pause the writer,
 * never resumes it (pact_transport_set_write_buffer_limits). A high
 * mark of zero needs pact_datagram_set_write_marks. */
PACT_API int pact_datagram_set_write_buffer_limits(pact_datagram *ep,
                                                   size_t high, size_t low);

/* Sets the flow-control marks as they are given, a high mark of 0
 * included (pact_transport_set_write_marks): with a high mark of 0,
 * pause_writing whenever a datagram is queued (every one is, until its
 * send completes), resume_writing once none is. A low mark above the
 * high one is -EINVAL. */
PACT_API int pact_datagram_set_write_marks(pact_datagram *ep, size_t high,
                                           size_t low);

/* Reads the current marks. */
PACT_API void pact_datagram_get_write_buffer_limits(const pact_datagram *ep,
                                                    size_t *high, size_t *low);

/* The socket (still owned by the endpoint), or -EBADF once closed. */
PACT_API int pact_datagram_fd(const pact_datagram *ep);

/* The endpoint's loop. */
PACT_API pact_loop *pact_datagram_loop(const pact_datagram *ep);

/* The user pointer given with the protocol. */
PACT_API void *pact_datagram_user(const pact_datagram *ep);

/* The local address (getsockname). Returns 0 or a negative errno. */
PACT_API int pact_datagram_sockname(const pact_datagram *ep,
                                    struct sockaddr_storage *ss,
                                    socklen_t *len);

/* The connected peer (getpeername): -ENOTCONN when not connected. */
PACT_API int pact_datagram_peername(const pact_datagram *ep,
                                    struct sockaddr_storage *ss,
                                    socklen_t *len);

/* Counters of one endpoint. */
typedef struct pact_datagram_stats {
    uint64_t sent;              /* datagrams the kernel accepted */
    uint64_t send_errors;       /* datagrams reported to error_received */
    uint64_t send_retries;      /* sent again after an earlier ICMP error */
    uint64_t dropped;           /* queued, then dropped by abort or a
                                   fatal error (not reported) */
    uint64_t sends_after_close; /* refused with -ESHUTDOWN */
    uint64_t received;          /* handed to datagram_received */
    uint64_t receive_errors;    /* errors reported while receiving */
} pact_datagram_stats;

/* Copies the endpoint's counters into *out. Every datagram queued with
 * pact_datagram_sendto() ends up exactly once in sent, send_errors or
 * dropped. */
PACT_API int pact_datagram_get_stats(const pact_datagram *ep,
                                     pact_datagram_stats *out);

/* ---- socket options: plain setters, 0 or a negative errno ---- */

/* SO_BROADCAST: allow sending to broadcast addresses. */
PACT_API int pact_datagram_set_broadcast(pact_datagram *ep, int on);

/* Unicast TTL / hop limit (IP_TTL or IPV6_UNICAST_HOPS), 1..255. */
PACT_API int pact_datagram_set_ttl(pact_datagram *ep, int ttl);

/* Multicast TTL / hop limit (IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS). */
PACT_API int pact_datagram_set_multicast_ttl(pact_datagram *ep, int ttl);

/* Whether multicast datagrams sent here loop back to local receivers
 * (IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP). */
PACT_API int pact_datagram_set_multicast_loop(pact_datagram *ep, int on);

/* Joins a multicast group (numeric, "224.0.0.251" or "ff02::fb") on the
 * interface named by ifname ("eth0"; NULL = the kernel's choice). */
PACT_API int pact_datagram_join_group(pact_datagram *ep, const char *group,
                                      const char *ifname);

/* Leaves a group joined with pact_datagram_join_group(). */
PACT_API int pact_datagram_leave_group(pact_datagram *ep, const char *group,
                                       const char *ifname);

/* ------------------------------------------------------------------------ */
/* TLS (OpenSSL): the same transport API over any stream socket             */
/* ------------------------------------------------------------------------ */

/* A TLS transport is a pact_transport: every pact_transport_* function
 * works on it (write/writev take plaintext and copy it, pause/resume keep
 * the no-loss contract, the write buffer marks are the same, fd/sockname/
 * peername are the socket's), except pact_transport_sendfile (-ENOTSUP)
 * and pact_transport_kind (the plain transport's kind). Underneath it,
 * the plain transport is owned by the TLS transport: do not use it after
 * wrapping.
 *
 * What its protocol sees (docs/contract.md §6 holds on every path):
 *   - connection_made once the handshake has completed (data written
 *     before that is queued and sent first); nothing at all if the
 *     handshake fails, is closed, aborted or times out before that: the
 *     outcome goes to pact_tls_wrap()'s on_handshake (or the client and
 *     server helpers' callbacks) instead, as asyncio's start_tls() reports
 *     it through the awaitable;
 *   - data_received with plaintext; eof_received when the peer's
 *     close_notify arrives (return non-zero to keep writing);
 *   - connection_lost exactly once, last: 0 for a clean close (ours or
 *     the peer's close_notify, or abort());
 *       -ECONNRESET  the peer closed TCP without close_notify (truncation,
 *                    "EOF in violation of protocol"), or reset it;
 *       -EPROTO      garbage, or a fatal alert from the peer.
 *     pact_tls_error_message() tells the details (inside connection_lost).
 *   - Handshake outcomes (on_handshake's err; t is NULL when err != 0):
 *       -EKEYREJECTED the peer's certificate failed verification (untrusted,
 *                    expired, wrong host name: pact_tls_verify_result());
 *       -EPROTO      anything else TLS refuses: garbage, a fatal alert from
 *                    the peer, no common protocol version or cipher;
 *       -ETIMEDOUT   the handshake did not finish in time;
 *       -ECONNABORTED closed or aborted before the handshake finished
 *                    (also by loop close);
 *       -ECONNRESET  the peer closed or reset the connection meanwhile.
 *
 * A TLS transport is a loop resource: closing the loop with one open
 * reports it ("TLS transport", debug mode) and aborts it (connection_lost
 * once if connection_made ran, on_handshake(NULL, -ECONNABORTED) if the
 * handshake was still going on).
 *
 * Closing: close() sends close_notify after what is buffered, then shuts
 * down the socket's writing side and closes the socket once the peer has
 * closed too (its close_notify or its EOF; what it sends meanwhile is
 * dropped), at once if its close_notify came first. Closing earlier would
 * let bytes the peer sends (a TLS 1.3 server's session tickets) arrive
 * unread, and the kernel would then reset the connection, destroying what
 * had not gone out yet. Abandoned after the context's shutdown timeout
 * (30 s by default); connection_lost(0) follows in every case.
 * Closing before the handshake has finished abandons it (as asyncio).
 * write_eof() sends close_notify and then shuts down the socket's writing
 * side; reading goes on. Renegotiation is refused.
 *
 * A library built without OpenSSL (meson -Dtls=disabled, or auto without
 * libssl-dev) has every function of this section: each answers -ENOTSUP,
 * or NULL / 0 / -1 where it returns no errno. */

/* A TLS configuration shared by many connections, also by loops on
 * several threads (one listener per thread with SO_REUSEPORT, clients on
 * many loops): its reference count and counters are atomic and its
 * client session cache is locked, so connections on any thread may use
 * it at once, and the last pact_tls_context_free() or connection to let
 * go frees it on whichever thread that is. Configure it (the
 * pact_tls_context_set_* calls, pact_tls_context_ssl_ctx()) before it is
 * shared: the setters are not thread-safe. */
typedef struct pact_tls_context pact_tls_context;

/* Which end of the handshake a context is for. */
typedef enum pact_tls_role {
    PACT_TLS_CLIENT = 0,
    PACT_TLS_SERVER = 1,
} pact_tls_role;

/* Protocol versions for pact_tls_context_set_min_version(). */
#define PACT_TLS_VERSION_1_2 0x0303
#define PACT_TLS_VERSION_1_3 0x0304

/* Creates a context. Defaults: TLS 1.2 at least, OpenSSL's default ciphers,
 * no renegotiation, no compression. A client verifies the server's
 * certificate against the system's trust store and checks its host name;
 * a server asks for no client certificate. Returns 0 and sets *out, or
 * -EINVAL / -ENOMEM. */
PACT_API int pact_tls_context_create(pact_tls_role role,
                                     pact_tls_context **out);

/* Drops the caller's reference. Transports, servers and pending connects
 * made with it hold their own, so this may be called at once. NULL is
 * ignored. */
PACT_API void pact_tls_context_free(pact_tls_context *ctx);

/* Loads a PEM certificate chain (leaf first) and its private key (key_file
 * NULL = in cert_file). Required for servers. Returns 0, -ENOENT/-EACCES
 * for an unreadable file, -ENODATA for a file with no certificate or key
 * in it (/dev/null), or -EINVAL (bad PEM, key does not match); then
 * pact_tls_context_error_message() says which file and why. */
PACT_API int pact_tls_context_set_certificate(pact_tls_context *ctx,
                                              const char *cert_file,
                                              const char *key_file);

/* Trusts the CA certificates in ca_file (PEM) and/or ca_dir (hashed
 * directory), in addition to the system store for clients. Returns 0,
 * -ENOENT/-EACCES for an unreadable file, -ENODATA for a file with no
 * certificate in it (/dev/null), -EINVAL otherwise (bad PEM, both NULL);
 * pact_tls_context_error_message() says why. */
PACT_API int pact_tls_context_set_ca(pact_tls_context *ctx, const char *ca_file,
                                     const char *ca_dir);

/* Client: verify the server's certificate (default 1; 0 turns verification
 * off, and with it the host-name check — say so explicitly, never by
 * default). Server: 1 requires a client certificate trusted by
 * pact_tls_context_set_ca() (default 0). */
PACT_API int pact_tls_context_set_verify(pact_tls_context *ctx, int verify);

/* Client: check that the certificate is for server_hostname (default 1;
 * DNS names and IP literals both work). */
PACT_API int pact_tls_context_set_check_hostname(pact_tls_context *ctx,
                                                 int check);

/* The oldest protocol version accepted: PACT_TLS_VERSION_1_2 (default) or
 * PACT_TLS_VERSION_1_3. */
PACT_API int pact_tls_context_set_min_version(pact_tls_context *ctx,
                                              int version);

/* OpenSSL cipher strings: tls12_list for TLS 1.2 ("ECDHE+AESGCM"),
 * tls13_suites for TLS 1.3 ("TLS_AES_128_GCM_SHA256"); either may be NULL
 * to keep the default. -EINVAL if OpenSSL rejects one
 * (pact_tls_context_error_message() says which). */
PACT_API int pact_tls_context_set_ciphers(pact_tls_context *ctx,
                                          const char *tls12_list,
                                          const char *tls13_suites);

/* ALPN protocol names ("h2", "http/1.1"), in preference order. A client
 * offers them; a server picks the first of its own list the client offers
 * (no overlap: the handshake goes on without ALPN). count 0 clears. */
PACT_API int pact_tls_context_set_alpn(pact_tls_context *ctx,
                                       const char *const *protos,
                                       size_t count);

/* Session resumption (default on). Client: the last session (TLS 1.3
 * ticket) received from each server_hostname is kept in the context and
 * offered on the next connection to that name (each ticket is used once);
 * connections without a server_hostname never resume. Server: OpenSSL's
 * session cache and stateless tickets; 0 turns both off. See
 * pact_tls_session_reused(). */
PACT_API int pact_tls_context_set_session_cache(pact_tls_context *ctx, int on);

/* Timeouts: the handshake (default 60 s; pact_tls_wrap() may override it)
 * and the close on close() (default 30 s): flushing close_notify and
 * waiting for the peer to close too. 0 = the default. */
PACT_API int pact_tls_context_set_timeouts(pact_tls_context *ctx,
                                           uint64_t handshake_ns,
                                           uint64_t shutdown_ns);

/* Why the last failed pact_tls_context_set_certificate(), _set_ca() or
 * _set_ciphers() call on ctx failed ("/dev/null: no CA certificate in the
 * file (PEM expected)", "the private key does not match the
 * certificate"), or NULL (the last such call succeeded, or none failed).
 * Owned by ctx, valid until the next of these calls. */
PACT_API const char *pact_tls_context_error_message(const pact_tls_context *ctx);

/* The context's SSL_CTX for anything not covered here (owned by ctx). */
PACT_API struct ssl_ctx_st *pact_tls_context_ssl_ctx(pact_tls_context *ctx);

/* Handshakes completed / failed with this context (monitoring, tests). */
PACT_API uint64_t pact_tls_context_handshakes(const pact_tls_context *ctx);
/* Handshakes that failed (including those the server helper hid). */
PACT_API uint64_t pact_tls_context_handshake_failures(const pact_tls_context *ctx);

/* Starts TLS over an open stream-socket transport — a fresh one, or one
 * that has spoken plaintext first (STARTTLS). The client or server side is
 * the context's role. From this call on, every byte the plain transport
 * reads goes to TLS; bytes its old protocol already received past the
 * STARTTLS command (the peer's first TLS record may arrive in the same
 * segment) are handed over as initial_data/initial_len (copied). A plain
 * transport that is paused is resumed: what it held is fed to TLS after
 * initial_data, in order. Call it from the old protocol's data_received or
 * at any later time; the handshake starts on the next iteration.
 * server_hostname (client) is sent as SNI (unless an IP literal) and
 * checked against the certificate; required while host-name checking is
 * on. handshake_timeout_ns 0 = the context's.
 *
 * on_handshake (required) runs exactly once, never from inside this call:
 *   - on_handshake(loop, t, 0, handshake_user) once the handshake is done,
 *     with t = *out; proto's connection_made follows at once (also if
 *     on_handshake closes t), and connection_lost once, last;
 *   - on_handshake(loop, NULL, err, handshake_user) if it failed, timed
 *     out, or was closed/aborted (pact_transport_close, loop close) before
 *     completing (errors above). proto is then never called; both the TLS
 *     and the plain transport are torn down by the library (the socket is
 *     closed after the alert has gone out). During this call *out may
 *     still be asked why (pact_tls_error_message, pact_tls_verify_result,
 *     pact_tls_peer_certificate*; other calls are refused or do nothing),
 *     and so may the loop, as for the connect helpers
 *     (pact_connect_error_message, pact_connect_verify_result); once it
 *     returns *out is gone: do not use it again.
 * Returns 0 and sets *out to the TLS transport, or a negative errno
 * (-ENOTSUP for pipes or a transport already TLS, -ESHUTDOWN if closing,
 * -EINVAL, also for a NULL on_handshake); on failure the plain transport is
 * left as it was and on_handshake is never called. */
PACT_API int pact_tls_wrap(pact_transport *plain, pact_tls_context *ctx,
                           const char *server_hostname,
                           const void *initial_data, size_t initial_len,
                           uint64_t handshake_timeout_ns,
                           const pact_protocol *proto, void *user,
                           pact_connect_cb on_handshake, void *handshake_user,
                           pact_transport **out);

/* 1 if t is a TLS transport, else 0. */
PACT_API int pact_transport_is_tls(const pact_transport *t);

/* The negotiated version ("TLSv1.3"), or NULL before the handshake. The
 * string is static. */
PACT_API const char *pact_tls_version(const pact_transport *t);

/* The negotiated cipher ("TLS_AES_256_GCM_SHA384"), or NULL before the
 * handshake. Static string. */
PACT_API const char *pact_tls_cipher(const pact_transport *t);

/* The ALPN protocol agreed on, or NULL if none. Owned by the transport. */
PACT_API const char *pact_tls_alpn(const pact_transport *t);

/* 1 if the handshake resumed an earlier session. */
PACT_API int pact_tls_session_reused(const pact_transport *t);

/* The peer's certificate as an OpenSSL X509 * with a new reference: the
 * caller owns it and calls X509_free(). NULL if the peer sent none. */
PACT_API struct x509_st *pact_tls_peer_certificate(const pact_transport *t);

/* The peer's certificate in DER: *der is malloc()ed and the caller
 * free()s it. Returns 0, -ENOENT if the peer sent none, -EINVAL. */
PACT_API int pact_tls_peer_certificate_der(const pact_transport *t,
                                           unsigned char **der, size_t *len);

/* The certificate verification result (X509_V_OK = 0, or an X509_V_ERR_*
 * code such as X509_V_ERR_HOSTNAME_MISMATCH); -1 if t is not TLS. */
PACT_API long pact_tls_verify_result(const pact_transport *t);

/* Why the connection failed ("certificate verify failed: unable to get
 * local issuer certificate", "the peer closed the connection without
 * close_notify (truncation)", OpenSSL's reason for a protocol error), or
 * NULL. Owned by the transport; valid until connection_lost (or a failed
 * on_handshake) returns. */
PACT_API const char *pact_tls_error_message(const pact_transport *t);

/* The connection's SSL * (owned by the transport) for anything else. */
PACT_API struct ssl_st *pact_tls_ssl(const pact_transport *t);

/* pact_connect_tcp() followed by a TLS handshake: cb runs once, after the
 * handshake, with the TLS transport (connection_made follows at once), or
 * with NULL and a negative errno (connect errors, -EKEYREJECTED,
 * -EPROTO, -ETIMEDOUT, ...); on failure the protocol is never called and,
 * during cb, pact_connect_error_message() and pact_connect_verify_result()
 * say why ("certificate verify failed: hostname mismatch").
 * server_hostname NULL = host. The op is cancellable until the TCP
 * connection is made; the handshake is bounded by the context's handshake
 * timeout. Returns the op or a negative errno. */
PACT_API pact_op pact_connect_tcp_tls(pact_loop *loop, const char *host,
                                      uint16_t port, pact_tls_context *ctx,
                                      const char *server_hostname,
                                      const pact_protocol *proto,
                                      void *proto_user, pact_connect_cb cb,
                                      void *user);

/* pact_connect_unix() followed by a TLS handshake, as
 * pact_connect_tcp_tls(). server_hostname may be NULL only if host-name
 * checking (or verification) is off. */
PACT_API pact_op pact_connect_unix_tls(pact_loop *loop, const char *path,
                                       pact_tls_context *ctx,
                                       const char *server_hostname,
                                       const pact_protocol *proto,
                                       void *proto_user, pact_connect_cb cb,
                                       void *user);

/* pact_server_listen_tcp() with TLS on every connection (ctx must be a
 * server context). The factory is called once the handshake has completed,
 * so a connection whose handshake fails never reaches the protocol (it is
 * counted in pact_tls_context_handshake_failures(), logged in debug mode,
 * and reported with its reason to pact_server_set_handshake_failed_cb());
 * a factory refusal closes the connection with close_notify. */
PACT_API int pact_server_listen_tcp_tls(pact_loop *loop, const char *host,
                                        uint16_t port,
                                        const pact_server_options *opts,
                                        pact_tls_context *ctx,
                                        pact_protocol_factory_cb factory,
                                        void *factory_user, pact_server **out);

/* Called when a connection's handshake failed on a server made by
 * pact_server_listen_tcp_tls() / _unix_tls(), which otherwise hides such
 * failures from user code. err is as for pact_tls_wrap()'s on_handshake
 * (-EKEYREJECTED, -EPROTO, -ETIMEDOUT, -ECONNRESET, ...). During the call
 * t, the dying TLS transport, may be asked why and who:
 * pact_tls_error_message(), pact_tls_verify_result(),
 * pact_tls_peer_certificate*(), pact_transport_peername(); other calls are
 * refused or do nothing, and once the callback returns t is gone. */
typedef void (*pact_handshake_failed_cb)(pact_server *server,
                                         pact_transport *t, int err,
                                         void *user);

/* Installs (cb NULL: removes) the handshake failure callback of a server
 * made by pact_server_listen_tcp_tls() or pact_server_listen_unix_tls().
 * Returns 0, -EINVAL for another server or NULL, -EPERM off the loop's
 * owner thread. */
PACT_API int pact_server_set_handshake_failed_cb(pact_server *server,
                                                 pact_handshake_failed_cb cb,
                                                 void *user);

/* pact_server_listen_unix() with TLS, as pact_server_listen_tcp_tls(). */
PACT_API int pact_server_listen_unix_tls(pact_loop *loop, const char *path,
                                         const pact_server_options *opts,
                                         pact_tls_context *ctx,
                                         pact_protocol_factory_cb factory,
                                         void *factory_user, pact_server **out);

/* ------------------------------------------------------------------------ */
/* Socket helpers (blocking setup calls, used by examples and tests)        */
/* ------------------------------------------------------------------------ */

/* Fills *ss with a numeric IPv4/IPv6 address and port. Returns 0 or
 * -EINVAL. */
PACT_API int pact_sockaddr_parse(const char *host, uint16_t port,
                                 struct sockaddr_storage *ss,
                                 socklen_t *len);

/* Creates a non-blocking, close-on-exec TCP socket bound to host:port
 * (port 0 = any) and listening with the given backlog; SO_REUSEADDR is
 * set. Returns the fd or a negative errno. On Windows an overlapped,
 * non-inherited SOCKET (as an int: cast it back to SOCKET), without
 * SO_REUSEADDR (there it would let another socket take the port). */
PACT_API int pact_tcp_listen(const char *host, uint16_t port, int backlog);

/* Creates a non-blocking, close-on-exec TCP socket for addr's family,
 * with TCP_NODELAY set. Returns the fd or a negative errno. On Windows an
 * overlapped, non-inherited SOCKET as an int. */
PACT_API int pact_tcp_socket(int family);

/* The port a socket is bound to, or a negative errno. */
PACT_API int pact_socket_port(int fd);

/* ------------------------------------------------------------------------ */
/* The thread pool                                                          */
/* ------------------------------------------------------------------------ */

/* Work run on one of the loop's worker threads. Its return value becomes
 * the completion's result (return a negative errno for failure). It must
 * not call pact functions on the loop, except the thread-safe ones. */
typedef int64_t (*pact_work_cb)(void *user);

/* Runs work(user) on the loop's thread pool and calls done on the loop
 * thread once, with c->result = what work returned. The pool belongs to
 * the loop; its threads start lazily (at most pact_pool_set_size(), default
 * 4) with every signal blocked, so signals go to the loop's thread.
 * pact_op_cancel(): work not yet started is dropped (work never runs, done
 * gets -ECANCELED; cancel returns 0); work already running is not
 * interrupted: cancel returns -EALREADY and done gets the real result.
 * pact_loop_close() cancels queued work, waits for running work (its done
 * runs during close with the real result) and joins the threads. Returns
 * the op, or -EINVAL (NULL loop, work or done), -ESHUTDOWN (closed). */
PACT_API pact_op pact_queue_work(pact_loop *loop, pact_work_cb work,
                                 pact_op_cb done, void *user);

/* Sets how many worker threads the loop's pool may run (1..1024; default
 * 4). Takes effect for threads started later: -EBUSY if more than n are
 * already running. */
PACT_API int pact_pool_set_size(pact_loop *loop, unsigned n);

/* ------------------------------------------------------------------------ */
/* Name resolution (getaddrinfo / getnameinfo on the thread pool)           */
/* ------------------------------------------------------------------------ */

/* Resolves host and/or service (either may be NULL, not both) with
 * getaddrinfo(3) on the thread pool; hints may be NULL and are copied.
 * On success c->result is 0 and c->addrinfo the list, which pact frees
 * with freeaddrinfo() after the callback returns — unless the callback
 * keeps it with pact_op_take_addrinfo(). On failure c->result is a negative
 * errno and c->gai_error the EAI_* code: EAI_NONAME and EAI_NODATA ->
 * -ENOENT, EAI_SERVICE -> -ESRCH, EAI_AGAIN -> -EAGAIN, EAI_FAIL -> -EIO,
 * EAI_MEMORY -> -ENOMEM, EAI_FAMILY -> -EAFNOSUPPORT, EAI_ADDRFAMILY ->
 * -EADDRNOTAVAIL, EAI_SOCKTYPE -> -ESOCKTNOSUPPORT, EAI_BADFLAGS ->
 * -EINVAL, EAI_OVERFLOW -> -ENAMETOOLONG, EAI_SYSTEM -> the errno.
 * Cancellable as pool work (a lookup already running finishes first).
 * Returns the op or a negative errno. */
PACT_API pact_op pact_getaddrinfo(pact_loop *loop, const char *host,
                                  const char *service,
                                  const struct addrinfo *hints,
                                  pact_op_cb cb, void *user);

/* Inside a pact_getaddrinfo() callback: takes ownership of the result list
 * (free it with freeaddrinfo()). Returns the list, or NULL if op is not a
 * getaddrinfo whose callback is running, or the list was taken already. */
PACT_API struct addrinfo *pact_op_take_addrinfo(pact_loop *loop, pact_op op);

/* getnameinfo(3) on the thread pool: addr is copied; flags are NI_*.
 * Result 0 with c->host and c->service (valid during the callback), or a
 * negative errno mapped as for pact_getaddrinfo() with c->gai_error. */
PACT_API pact_op pact_getnameinfo(pact_loop *loop, const struct sockaddr *addr,
                                  socklen_t addrlen, int flags, pact_op_cb cb,
                                  void *user);

/* ------------------------------------------------------------------------ */
/* File operations                                                          */
/* ------------------------------------------------------------------------ */

/* Native io_uring operations when the kernel's probe lists them (OPENAT,
 * READ, WRITE, FSYNC, STATX, CLOSE, RENAMEAT, UNLINKAT), run on the thread
 * pool otherwise (epoll, older kernels): the same results either way.
 * Paths are copied and relative ones resolve against the current
 * directory. Cancel is as for any op: a file op the kernel or a worker
 * has already started usually runs to its end and reports its result.
 *
 * On Windows they run on the thread pool, on the C runtime's fds (binary
 * mode, not inherited: O_CLOEXEC is _O_NOINHERIT there), with UTF-8
 * paths: a read or write at an offset also moves the fd's file position
 * there, fsync is FlushFileBuffers, rename replaces an existing target.
 * pact_fs_stat, pact_fs_fstat (struct statx) and pact_fs_watch (inotify)
 * are Linux's and answer -ENOTSUP on Windows. */

/* Opens path (O_CLOEXEC is always added). Result: the new fd. */
PACT_API pact_op pact_fs_open(pact_loop *loop, const char *path, int flags,
                              unsigned mode, pact_op_cb cb, void *user);

/* Reads up to len bytes at offset (-1 = the file position). Result: bytes
 * read, 0 at end of file. buf must stay valid until the callback. Unlike
 * pact_read(), never runs a blocking read on the loop thread. */
PACT_API pact_op pact_fs_read(pact_loop *loop, int fd, void *buf, size_t len,
                              int64_t offset, pact_op_cb cb, void *user);

/* Writes up to len bytes at offset (-1 = the file position). Result: bytes
 * written. buf must stay valid until the callback. */
PACT_API pact_op pact_fs_write(pact_loop *loop, int fd, const void *buf,
                               size_t len, int64_t offset, pact_op_cb cb,
                               void *user);

/* fsync(2), or fdatasync(2) if datasync is non-zero. Result: 0. */
PACT_API pact_op pact_fs_fsync(pact_loop *loop, int fd, int datasync,
                               pact_op_cb cb, void *user);

/* statx(2) of path (flags: AT_SYMLINK_NOFOLLOW, ...; mask: STATX_BASIC_STATS
 * if 0) into the caller's *out, which must stay valid and untouched until
 * the callback (the kernel writes into it). Result: 0, and c->statx ==
 * out. */
PACT_API pact_op pact_fs_stat(pact_loop *loop, const char *path, int flags,
                              unsigned mask, struct statx *out, pact_op_cb cb,
                              void *user);

/* pact_fs_stat() of an open fd (statx with AT_EMPTY_PATH). */
PACT_API pact_op pact_fs_fstat(pact_loop *loop, int fd, unsigned mask,
                               struct statx *out, pact_op_cb cb, void *user);

/* Closes fd. Result: 0 (the fd is gone even if an error is reported). Do
 * not close an fd that other operations still use. */
PACT_API pact_op pact_fs_close(pact_loop *loop, int fd, pact_op_cb cb,
                               void *user);

/* rename(2). Result: 0. */
PACT_API pact_op pact_fs_rename(pact_loop *loop, const char *from,
                                const char *to, pact_op_cb cb, void *user);

/* unlink(2), or rmdir(2) with flags = AT_REMOVEDIR. Result: 0. */
PACT_API pact_op pact_fs_unlink(pact_loop *loop, const char *path, int flags,
                                pact_op_cb cb, void *user);

/* One change pact_fs_watch() reports (inotify's struct inotify_event). */
typedef struct pact_fs_event {
    uint32_t mask;    /* IN_* bits of <sys/inotify.h>: IN_CREATE, IN_MODIFY,
                         ..., with IN_ISDIR for a directory entry */
    uint32_t cookie;  /* the same for an IN_MOVED_FROM and its IN_MOVED_TO */
    const char *name; /* the entry in a watched directory, NULL for the
                         watched path itself; valid during the callback */
} pact_fs_event;

/* Watches path for the changes in events (IN_* bits of <sys/inotify.h>,
 * e.g. IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVE; IN_ONLYDIR,
 * IN_DONT_FOLLOW and IN_EXCL_UNLINK allowed too) with inotify, on both
 * engines. Like pact_recv_multishot(), one operation calls cb many
 * times: each change as a data completion (c->more = 1, c->result > 0,
 * c->data a const pact_fs_event *, valid during the call), in the order
 * the kernel reported them, then once the final completion (more = 0):
 * 0 when the watched path is gone (deleted, moved off its file system,
 * unmounted), -ECANCELED after pact_op_cancel() (also from inside cb:
 * nothing more is delivered) or pact_loop_close(), or a negative errno.
 * Events the kernel dropped because the queue overflowed arrive as one
 * IN_Q_OVERFLOW. Keeps the loop alive like any op (pact_op_set_ref
 * applies). Errors of inotify_add_watch() are synchronous: -ENOENT,
 * -EACCES, -ENOTDIR (IN_ONLYDIR), -ENOSPC (the user's watch limit),
 * -EMFILE; -EINVAL for a NULL path or callback or events 0. Returns the
 * op. */
PACT_API pact_op pact_fs_watch(pact_loop *loop, const char *path,
                               uint32_t events, pact_op_cb cb, void *user);

/* ------------------------------------------------------------------------ */
/* Terminals                                                                */
/* ------------------------------------------------------------------------ */

/* A terminal a loop watches: its mode when opened (restored on close),
 * its window size and resize notification. */
typedef struct pact_tty pact_tty;

/* Terminal modes (libuv's uv_tty_mode_t). */
typedef enum pact_tty_mode {
    PACT_TTY_MODE_NORMAL = 0, /* the mode the terminal had when opened */
    PACT_TTY_MODE_RAW = 1,    /* cfmakeraw(): bytes as typed, no echo, no
                                 line editing, ^C a byte, no output
                                 translation */
    PACT_TTY_MODE_IO = 2,     /* raw input, but output still translated
                                 ("\n" sent as "\r\n") */
} pact_tty_mode;

/* Called when the terminal's window size changed (after SIGWINCH, only if
 * the size differs from the last one reported): the new size in
 * character cells. May close the tty. */
typedef void (*pact_tty_resize_cb)(pact_tty *tty, unsigned cols,
                                   unsigned rows, void *user);

/* Opens a pact_tty on fd (a terminal: 0, 1, or an fd of /dev/tty or a
 * pty; the fd stays the caller's, read and write it with pact_read /
 * pact_write or a pipe transport). Saves the terminal's mode so that
 * pact_tty_close(), or pact_loop_close() for a tty still open, puts it
 * back. With on_resize, a SIGWINCH handler is added on the loop
 * (pact_signal_add's rules apply: the thread blocks SIGWINCH, another
 * loop already handling it gives -EBUSY); it does not keep
 * pact_loop_run() going. Returns 0 and sets *out; -ENOTTY if fd is not a
 * terminal, -EINVAL for a NULL out or negative fd, -ESHUTDOWN on a closed
 * loop. */
PACT_API int pact_tty_open(pact_loop *loop, int fd, pact_tty_resize_cb on_resize,
                           void *user, pact_tty **out);

/* Switches the terminal's mode; output already written is sent first
 * (TCSADRAIN). Returns 0, -EINVAL for an unknown mode, or the errno of
 * tcsetattr(). */
PACT_API int pact_tty_set_mode(pact_tty *tty, pact_tty_mode mode);

/* The window size in character cells (TIOCGWINSZ). Returns 0 or a
 * negative errno. */
PACT_API int pact_tty_get_winsize(const pact_tty *tty, unsigned *cols,
                                  unsigned *rows);

/* Restores the mode the terminal had when opened, removes the resize
 * handler and frees the tty (the fd stays open). Safe from the resize
 * callback. Returns 0, or the errno of restoring the mode (the tty is
 * freed anyway). A tty still open when its loop closes is closed by
 * pact_loop_close(): do not use it after that. */
PACT_API int pact_tty_close(pact_tty *tty);

/* The loop the tty was opened on (NULL for NULL). */
PACT_API pact_loop *pact_tty_loop(const pact_tty *tty);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* A signal handler registration: > 0, or a negative errno. */
typedef int64_t pact_signal;

/* Runs as an ordinary loop callback (not in signal context): anything may
 * be done in it, including removing this or any handler. */
typedef void (*pact_signal_cb)(pact_loop *loop, int signo, void *user);

/* Calls cb on the loop each time signo arrives; several handlers per
 * signal run in the order they were added. While a signal has handlers it
 * is blocked (pthread_sigmask) on the calling thread, which must be the
 * loop's, and read through a signalfd; the previous mask is restored when
 * its last handler is removed. Signals that arrive together may be
 * coalesced into one call (as the kernel coalesces them). A handler does
 * not by itself keep pact_loop_run() going, unless made to with
 * pact_signal_set_ref().
 *
 * Threads: a process-directed signal (kill(), a terminal's ^C) goes to any
 * thread that does not block it. Block the signal in every other thread
 * (threads inherit the mask: create them after adding the handler, or
 * block it yourself), or it may run its default action there instead.
 * pact's own pool threads block every signal.
 *
 * Only one loop in the process may handle a given signal: another loop
 * gets -EBUSY. Also -EINVAL for a bad signo, SIGKILL, SIGSTOP and the
 * synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL), which a
 * signalfd cannot receive; -ESHUTDOWN on a closed loop. Returns the
 * registration. */
PACT_API pact_signal pact_signal_add(pact_loop *loop, int signo,
                                     pact_signal_cb cb, void *user);

/* Cancels a handler: it is removed and never runs again. Safe from
 * inside any callback, including the handler's own. Returns 0 or -ENOENT
 * (unknown or already cancelled). */
PACT_API int pact_signal_cancel(pact_loop *loop, pact_signal sig);

/* Whether a signal handler keeps pact_loop_run() going: ref 0 (the
 * default) it does not, ref 1 it does, so a program whose only work is to
 * wait for a signal (a daemon's SIGTERM, a SIGINT that stops it) can run
 * the loop until the handler removes itself. Returns 0, or -ENOENT for a
 * handler that is unknown or removed. */
PACT_API int pact_signal_set_ref(pact_loop *loop, pact_signal sig, int ref);

/* SIGPIPE: pact's socket sends use MSG_NOSIGNAL and never raise it. A
 * write to a pipe or FIFO whose reader is gone (pact_write, pipe
 * transports) raises SIGPIPE, whose default action kills the process;
 * only if SIGPIPE is ignored or blocked does the write report -EPIPE.
 * pact does not change the process's signal dispositions behind your
 * back: programs that write to pipes should call
 * signal(SIGPIPE, SIG_IGN) at start-up (what Python does) or block
 * SIGPIPE in every thread. */

/* ------------------------------------------------------------------------ */
/* Subprocesses                                                             */
/* ------------------------------------------------------------------------ */

/* A child process with pipes: asyncio's SubprocessTransport in C. The
 * exit is learned from the kernel through a pidfd (Linux 5.4+), on both
 * engines; signals go through pidfd_send_signal(), which never reaches a
 * recycled pid. No SIGCHLD handler is installed: do not set SIGCHLD to
 * SIG_IGN or reap with waitpid(-1) elsewhere, or the exit status is lost
 * (the returncode is then 255 and an error is reported, as asyncio does).
 * The pointer stays valid until connection_lost has returned; after that
 * it is freed and must not be used.
 *
 * On Windows the child is started with CreateProcessW (argv quoted so
 * the child's C runtime parses it back unchanged; a quote in argv[0] is
 * -EINVAL), its pipes are named pipes (the parent's end overlapped),
 * only its three standard handles are inherited, and the exit is a wait
 * on the process handle. The returncode is the exit code
 * (GetExitCodeProcess, a DWORD read as int); kill, terminate and close
 * use TerminateProcess with exit code 1, as asyncio does there.
 * PACT_STDIO_FD takes a HANDLE (0, 1 and 2 name this process's standard
 * handles); new_session and set_umask answer -ENOTSUP, new_process_group
 * is CREATE_NEW_PROCESS_GROUP. */
typedef struct pact_process pact_process;

/* Where one of the child's fds 0, 1, 2 comes from. */
typedef enum pact_stdio_kind {
    PACT_STDIO_INHERIT = 0, /* the parent's same fd (if not close-on-exec) */
    PACT_STDIO_PIPE,        /* a pipe; the parent's end is a pipe transport */
    PACT_STDIO_DEVNULL,     /* /dev/null */
    PACT_STDIO_FD,          /* the fd given in pact_stdio.fd (not closed) */
    PACT_STDIO_STDOUT,      /* stderr only: the same as the child's stdout */
} pact_stdio_kind;

typedef struct pact_stdio {
    pact_stdio_kind kind;
    int fd; /* PACT_STDIO_FD only */
} pact_stdio;

/* What to run and how: start from pact_process_options_init() or
 * PACT_PROCESS_OPTIONS_INIT (all defaults), then set what you need, e.g.
 * pact_process_options o = { .size = sizeof o, .argv = argv }. */
typedef struct pact_process_options {
    /* sizeof this struct as the caller was compiled: set by the init function or macro
     * (docs/abi.md: fields are only appended; the library reads the ones
     * the caller knows, refuses a size below the first layout with -EINVAL
     * and unknown non-zero fields with -E2BIG). */
    size_t size;
    /* The program: a path (with a '/') or a name searched in the PATH of
     * the child's environment, like execvpe(). NULL = argv[0]. */
    const char *file;
    char *const *argv;   /* NULL-terminated, argv[0] required */
    char *const *envp;   /* NULL-terminated; NULL = inherit this process's */
    const char *cwd;     /* NULL = the current directory */
    pact_stdio stdio[3]; /* stdin, stdout, stderr; zero = INHERIT */
    int new_session;       /* setsid() in the child */
    int new_process_group; /* setpgid(0, 0) in the child */
    int set_umask;         /* apply umask in the child */
    mode_t umask;
} pact_process_options;

#define PACT_PROCESS_OPTIONS_INIT { .size = sizeof(pact_process_options) }

/* Fills *opts with the defaults (all zero: inherit stdio, no argv) and
 * sets opts->size. */
PACT_API void pact_process_options_init(pact_process_options *opts);

/* The callbacks of a subprocess protocol; any member may be NULL. Order:
 * connection_made first (also when the child exits at once), then any
 * number of pipe_data_received and one pipe_connection_lost per pipe,
 * process_exited exactly once, and connection_lost exactly once and last —
 * only after the process has exited AND every pipe is closed. Pipe data
 * may still arrive after process_exited (a pipe drains after the exit).
 * Nothing is called after connection_lost. The table is not copied: it
 * must stay valid until connection_lost has returned (see pact_protocol). */
typedef struct pact_subprocess_protocol {
    void (*connection_made)(pact_process *p, void *user);
    /* fd is 1 or 2; data is valid only during the call. */
    void (*pipe_data_received)(pact_process *p, int fd, const void *data,
                               size_t len, void *user);
    /* A pipe (fd 0, 1 or 2) is closed: err 0 on EOF or close, else a
     * negative errno (-EPIPE: the child stopped reading its stdin). */
    void (*pipe_connection_lost)(pact_process *p, int fd, int err,
                                 void *user);
    /* The process is gone; pact_process_returncode() now has its status. */
    void (*process_exited)(pact_process *p, void *user);
    void (*connection_lost)(pact_process *p, void *user);
} pact_subprocess_protocol;

/* Starts a child process and wraps it in a subprocess transport
 * (connection_made runs on the next iteration). Every fd pact makes is
 * close-on-exec and only the child's fds 0-2 survive its exec (others are
 * closed, on Linux 5.9+). In the child, caught signals and SIGPIPE are
 * reset to their default, other ignored signals stay ignored, and the
 * signal mask is empty (even if the loop blocks signals for
 * pact_signal_add()). Failures are synchronous and leave nothing behind —
 * no zombie, no fd, no transport: a missing program gives -ENOENT, a
 * non-executable one -EACCES, a bad cwd its chdir() errno, fd exhaustion
 * -EMFILE; -EINVAL for bad options (NULL argv, STDOUT on fd 0 or 1),
 * -ENOSYS on kernels without CLONE_PIDFD. Returns 0 and sets *out. */
PACT_API int pact_process_spawn(pact_loop *loop,
                                const pact_process_options *opts,
                                const pact_subprocess_protocol *proto,
                                void *user, pact_process **out);

/* The child's pid (for display; signal it with pact_process_send_signal,
 * which cannot hit a recycled pid). */
PACT_API pid_t pact_process_pid(const pact_process *p);

/* The user pointer given to pact_process_spawn(). */
PACT_API void *pact_process_user(const pact_process *p);

/* The loop the process was spawned on (NULL for NULL), so its callbacks,
 * which get the process and not the loop, can reach it: to remove a
 * signal handler or schedule a callback from connection_lost. */
PACT_API pact_loop *pact_process_loop(const pact_process *p);

/* Once the process has exited and been reaped: 0 and *returncode = its
 * exit code (0-255), or minus the signal number that killed it (-9 for
 * SIGKILL), as asyncio reports it. Before that: -EAGAIN. */
PACT_API int pact_process_returncode(const pact_process *p, int *returncode);

/* The pipe transport of the child's fd 0 (a write pipe), 1 or 2 (read
 * pipes), or NULL when that fd is not a pipe or the pipe is closed. Use it
 * to write, write_eof, pause/resume reading or close one pipe; do not
 * replace its protocol. */
PACT_API pact_transport *pact_process_pipe(const pact_process *p, int fd);

/* Writes to the child's stdin pipe (copied, as pact_transport_write()).
 * -EPIPE when stdin is not a pipe or it is closed. */
PACT_API int pact_process_write(pact_process *p, const void *data, size_t len);

/* Closes the child's stdin once what was written is sent (the child sees
 * EOF). -EPIPE when stdin is not a pipe or is closed already. */
PACT_API int pact_process_write_eof(pact_process *p);

/* Sends signo to the child through its pidfd. Returns 0, or -ESRCH once
 * the process has exited and been reaped, or the transport is closed —
 * never a signal to a recycled pid; -EINVAL for a bad signal number. On
 * Windows: SIGTERM and SIGKILL are TerminateProcess (exit code 1),
 * SIGBREAK a Ctrl-Break to a child started with new_process_group, 0
 * checks it runs; other signals answer -ENOTSUP. */
PACT_API int pact_process_send_signal(pact_process *p, int signo);

/* pact_process_send_signal(p, SIGTERM). */
PACT_API int pact_process_terminate(pact_process *p);

/* pact_process_send_signal(p, SIGKILL). */
PACT_API int pact_process_kill(pact_process *p);

/* Waits for the process to exit. Any number of waits may be pending; each
 * callback runs once, with c->result = the returncode (as
 * pact_process_returncode(): 0-255, or -signo in -64..-1), or -ECANCELED
 * (pact_op_cancel) / -ETIMEDOUT (pact_op_set_timeout), both below -64. A
 * wait started after the exit completes on the next iteration. Waiters
 * are woken at the exit, before connection_lost (a grandchild holding a
 * pipe open does not hold them). A wait is only an entry in the process's
 * list, so cancelling tears it down at once: cancel returns 0 and the
 * callback gets -ECANCELED on the next iteration — unless the exit was
 * seen first (cancel returns -EALREADY and the returncode is delivered).
 * On Windows c->result is the 32-bit exit code as an unsigned value
 * (0..4294967295), so an NTSTATUS code such as 0xC0000005 is not taken
 * for an error. Returns the op or a negative errno. */
PACT_API pact_op pact_process_wait(pact_process *p, pact_op_cb cb,
                                   void *user);

/* Closes the transport: closes the pipes and, if the child still runs,
 * kills it with SIGKILL (a debug message says so) — a child that has
 * exited but is not reaped yet is not killed, and its real status is
 * reported. The child is always reaped; process_exited and
 * connection_lost still follow, in order. Loop close does this to every
 * process still open (and reports each in debug mode). Returns 0, or
 * -EALREADY if already closed, or if it has exited and every pipe is gone
 * (its connection_lost is due or running: nothing is left to close, as a
 * transport answers there). */
PACT_API int pact_process_close(pact_process *p);

/* Whether the process keeps pact_loop_run() going: ref 1 (the default)
 * the wait for its exit and its pipes do; ref 0 they do not, so run()
 * returns while a background child still runs (its exit is still
 * reaped and reported whenever the loop runs, and loop close still ends
 * it). Operations the caller started on it (pact_process_wait()) are the
 * caller's: pact_op_set_ref() chooses for them. Returns 0, -EINVAL,
 * -EPERM off the owner thread. */
PACT_API int pact_process_set_ref(pact_process *p, int ref);

#ifdef __cplusplus
}
#endif
#endif /* PACT_H */
