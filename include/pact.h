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
 *     pact_strerror() and pact_err_name() turn them into text.
 *   - Every callback receives the loop and the user pointer that was given
 *     when the callback was registered.
 *   - A loop belongs to one thread. Only functions marked "thread-safe" may
 *     be called from other threads.
 *   - Times are in nanoseconds of CLOCK_MONOTONIC unless a name says "_ms".
 *
 * See docs/guide.md for a tour and ../shared/DESIGN.md for the contract.
 */
#ifndef PACT_H
#define PACT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PACT_API __attribute__((visibility("default")))
#define PACT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PACT_API
#define PACT_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Describes a negative errno value ("operation canceled"); never NULL. */
PACT_API const char *pact_strerror(int err);

/* Names a negative errno value ("ECANCELED"); never NULL. */
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
} pact_engine_kind;

/* Options for pact_loop_create(); fill with pact_loop_options_init(). */
typedef struct pact_loop_options {
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
} pact_loop_options;

/* Fills *opts with the defaults (auto engine, default depth, debug from the
 * environment). */
PACT_API void pact_loop_options_init(pact_loop_options *opts);

/* Creates a loop owned by the calling thread. opts may be NULL for the
 * defaults. With PACT_ENGINE_URING, failure to set up io_uring is an error
 * (the errno of the failure); with AUTO it falls back to epoll and
 * pact_loop_engine_reason() says why. Returns 0 and sets *out, or a negative
 * errno. */
PACT_API int pact_loop_create(pact_loop **out, const pact_loop_options *opts);

/* Runs until pact_loop_stop() is called or nothing is left to do (no
 * operation in flight, no timer, no scheduled callback, no open resource
 * that keeps the loop alive). Returns 0, or a negative errno (-EBUSY if
 * called from inside a callback of the same loop, -ESHUTDOWN if closed). */
PACT_API int pact_loop_run(pact_loop *loop);

/* Runs one iteration: submits what was started, waits at most timeout_ns
 * for completions (-1 = until something happens, 0 = do not block), runs
 * the callbacks that are due. Returns 1 if the loop still has work, 0 if
 * not, or a negative errno. */
PACT_API int pact_loop_run_once(pact_loop *loop, int64_t timeout_ns);

/* Makes pact_loop_run() return after the current iteration. Thread-safe. */
PACT_API int pact_loop_stop(pact_loop *loop);

/* Closes the loop. Every operation still in flight is cancelled and its
 * callback runs exactly once (with -ECANCELED or, if the kernel finished it
 * first, its real result) before this returns; their memory is released
 * only after the kernel's completion arrived. Scheduled callbacks and
 * timers that have not run are dropped (and listed in debug mode), open
 * resources (transports, servers, ...) are closed and reported. The engine
 * is torn down last. Callbacks run during close may not start new
 * operations (-ESHUTDOWN). Returns 0; -EBUSY if the loop is running;
 * -EBADF if it was closed already. The memory stays valid until
 * pact_loop_free(). */
PACT_API int pact_loop_close(pact_loop *loop);

/* Releases a loop's memory, closing it first if needed. NULL is ignored. */
PACT_API void pact_loop_free(pact_loop *loop);

/* Current CLOCK_MONOTONIC time in nanoseconds. */
PACT_API uint64_t pact_now(void);

/* The time at the start of the loop's current iteration (nanoseconds). */
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

/* 1 if the loop has work that keeps pact_loop_run() going, else 0. */
PACT_API int pact_loop_alive(const pact_loop *loop);

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

/* Called for errors that have no caller to return to: a failure inside the
 * loop's own machinery, a report from pact_loop_report_error(). */
typedef void (*pact_error_handler)(pact_loop *loop, int err,
                                   const char *message, void *user);

/* Installs the loop's error hook (NULL restores the default, which prints
 * to stderr). */
PACT_API int pact_loop_set_error_handler(pact_loop *loop,
                                         pact_error_handler handler,
                                         void *user);

/* Reports a failure inside a callback to the loop's error hook (the C form
 * of an exception escaping a callback in asyncio). */
PACT_API void pact_loop_report_error(pact_loop *loop, int err,
                                     const char *fmt, ...) PACT_PRINTF(3, 4);

/* ------------------------------------------------------------------------ */
/* Scheduled callbacks and timers                                           */
/* ------------------------------------------------------------------------ */

/* A handle for a scheduled callback: > 0, or a negative errno. It carries a
 * generation count, so a stale handle is answered -ENOENT, never UB. */
typedef int64_t pact_handle;

/* A plain callback. */
typedef void (*pact_callback)(pact_loop *loop, void *user);

/* Schedules cb to run on the next iteration, after the callbacks already
 * scheduled (FIFO). Returns a handle or a negative errno. */
PACT_API pact_handle pact_call_soon(pact_loop *loop, pact_callback cb,
                                    void *user);

/* Schedules cb to run delay_ns from now; never earlier. Timers due at the
 * same time run in the order they were scheduled. */
PACT_API pact_handle pact_call_later(pact_loop *loop, uint64_t delay_ns,
                                     pact_callback cb, void *user);

/* Schedules cb to run at the absolute monotonic time when_ns (pact_now()
 * clock); never earlier. */
PACT_API pact_handle pact_call_at(pact_loop *loop, uint64_t when_ns,
                                  pact_callback cb, void *user);

/* Cancels a scheduled callback so that it never runs. Returns 0 if it was
 * cancelled in time, -EALREADY if it has already run (or is running), or
 * -ENOENT for a handle that is unknown or stale. Safe from any callback. */
PACT_API int pact_handle_cancel(pact_loop *loop, pact_handle handle);

/* Schedules cb on the loop from any thread. Wakes the loop (wake-ups are
 * coalesced: many calls, one write to the eventfd). Callbacks from one
 * thread run in the order they were scheduled. Not cancellable. Returns 0,
 * -ENOMEM, or -ESHUTDOWN once the loop is closing. Thread-safe. */
PACT_API int pact_call_soon_threadsafe(pact_loop *loop, pact_callback cb,
                                       void *user);

/* Wakes the loop if it is waiting. Thread-safe. */
PACT_API int pact_loop_wake(pact_loop *loop);

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* A handle for an operation in flight: > 0, or a negative errno when the
 * operation could not be started (then its callback will never run).
 * Operations are owned by the loop; a handle cannot dangle: after the
 * callback has run it is stale and pact_cancel() answers -ENOENT. */
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
    /* accept: the peer's address. NULL otherwise. */
    const struct sockaddr *addr;
    socklen_t addrlen;
} pact_completion;

/* Called exactly once per started operation. The completion and, for
 * accept, its address are valid only during the call. */
typedef void (*pact_op_cb)(pact_loop *loop, const pact_completion *c,
                           void *user);

/* Receives up to len bytes from a socket into buf. Result: bytes (0 = the
 * peer closed). buf must stay valid until the callback. */
PACT_API pact_op pact_recv(pact_loop *loop, int fd, void *buf, size_t len,
                           int flags, pact_op_cb cb, void *user);

/* Sends up to len bytes. Result: the bytes actually sent, which may be
 * fewer than len (a short send is reported, never hidden). MSG_NOSIGNAL is
 * always added. buf must stay valid until the callback. */
PACT_API pact_op pact_send(pact_loop *loop, int fd, const void *buf,
                           size_t len, int flags, pact_op_cb cb, void *user);

/* Sends all len bytes, continuing after short sends. Result: len, or a
 * negative errno with c->transferred telling how much went out first. */
PACT_API pact_op pact_send_all(pact_loop *loop, int fd, const void *buf,
                               size_t len, int flags, pact_op_cb cb,
                               void *user);

/* Accepts a connection. Result: the new fd (close-on-exec, non-blocking);
 * c->addr is the peer. The callback owns the fd — also when the accept won
 * a race against pact_cancel() (see pact_cancel()). */
PACT_API pact_op pact_accept(pact_loop *loop, int listen_fd, pact_op_cb cb,
                             void *user);

/* Connects a socket (best non-blocking). The address is copied. Result: 0. */
PACT_API pact_op pact_connect(pact_loop *loop, int fd,
                              const struct sockaddr *addr, socklen_t addrlen,
                              pact_op_cb cb, void *user);

/* shutdown(2) as an operation (how = SHUT_RD, SHUT_WR, SHUT_RDWR). */
PACT_API pact_op pact_shutdown(pact_loop *loop, int fd, int how,
                               pact_op_cb cb, void *user);

/* Reads from any fd (pipe, file, socket) at offset, or at the current
 * position when offset is -1. Result: bytes (0 = end of file). */
PACT_API pact_op pact_read(pact_loop *loop, int fd, void *buf, size_t len,
                           int64_t offset, pact_op_cb cb, void *user);

/* Writes to any fd at offset (-1 = current position / append for pipes).
 * Result: bytes written, possibly fewer than len. */
PACT_API pact_op pact_write(pact_loop *loop, int fd, const void *buf,
                            size_t len, int64_t offset, pact_op_cb cb,
                            void *user);

/* Waits until fd is ready for events (POLLIN, POLLOUT, ...). Result: the
 * events that are ready. */
PACT_API pact_op pact_poll(pact_loop *loop, int fd, unsigned events,
                           pact_op_cb cb, void *user);

/* Completes with 0 after delay_ns (never earlier). */
PACT_API pact_op pact_sleep(pact_loop *loop, uint64_t delay_ns, pact_op_cb cb,
                            void *user);

/* Gives an operation a deadline timeout_ns from now: if it has not
 * completed by then it is cancelled and completes with -ETIMEDOUT (unless
 * the kernel finished it first: then the real result is delivered). On
 * io_uring, an operation not yet submitted (call this right after starting
 * it) gets a linked timeout; otherwise the loop's timer heap is used.
 * Returns 0, -EALREADY if the op is already completing, -ENOENT if stale. */
PACT_API int pact_op_set_timeout(pact_loop *loop, pact_op op,
                                 uint64_t timeout_ns);

/* Asks for an operation to be cancelled. Cancel is a request: the
 * operation's callback still runs exactly once, with -ECANCELED if the
 * cancel was in time, or with the real result (bytes received, an accepted
 * fd) if the kernel completed it first — that result is never dropped.
 * Returns 0 if the request was made, -EALREADY if the op is already
 * completing or a cancel was already requested, -ENOENT for an unknown or
 * stale handle (the callback has run). Safe from any callback, twice, or
 * after completion. */
PACT_API int pact_cancel(pact_loop *loop, pact_op op);

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
 * set. Returns the fd or a negative errno. */
PACT_API int pact_tcp_listen(const char *host, uint16_t port, int backlog);

/* Creates a non-blocking, close-on-exec TCP socket for addr's family.
 * Returns the fd or a negative errno. */
PACT_API int pact_tcp_socket(int family);

/* The port a socket is bound to, or a negative errno. */
PACT_API int pact_socket_port(int fd);

#ifdef __cplusplus
}
#endif
#endif /* PACT_H */
