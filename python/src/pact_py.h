/* SPDX-License-Identifier: MIT */
/* The pact._pact extension: what its files share. */
#ifndef PACT_PY_H
#define PACT_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pact.h>
#include <stdint.h>

/* What one receive takes at most: the size of pact's receive buffers
 * (loop.c) and of the bytes object a read by readiness lands in
 * (endpoint.c, "Received bytes"), so that up to this much that a socket
 * holds comes in one data_received on every path. */
#define PACT_PY_RECEIVE_BYTES (1024 * 1024)

/* Objects from asyncio and the standard library the extension calls;
 * looked up once at import (module.c). */
typedef struct {
    PyObject *handle_type;       /* asyncio.events.Handle */
    PyObject *timer_handle_type; /* asyncio.events.TimerHandle */
    PyObject *future_type;       /* asyncio.futures.Future */
    PyObject *task_type;         /* asyncio.tasks.Task */
    /* asyncio.base_events.BaseEventLoop.create_task: with a task factory
     * or in debug mode, create_task is asyncio's own. */
    PyObject *base_create_task;
} pact_py_imports;

extern pact_py_imports pact_py;

/* Interned attribute and method names. */
extern PyObject *pact_py_str_cancelled;       /* "_cancelled" */
extern PyObject *pact_py_str_scheduled;       /* "_scheduled" */
extern PyObject *pact_py_str_run;             /* "_run" */
extern PyObject *pact_py_str_run_handle_debug; /* "_run_handle_debug" */
extern PyObject *pact_py_str_check_thread;    /* "_check_thread" */
extern PyObject *pact_py_str_check_callback;  /* "_check_callback" */
extern PyObject *pact_py_str_source_traceback; /* "_source_traceback" */
extern PyObject *pact_py_str_context;         /* "context" */

/* Interns each name into its slot (module.c): 0, or -1 with an exception. */
typedef struct {
    PyObject **slot;
    const char *name;
} pact_py_name;
int pact_py_intern_names(const pact_py_name *names, size_t n);

/* Makes the type of spec on bases (a tuple, or NULL) and adds it to module
 * under its short name (module.c): a new reference the caller keeps, or
 * NULL with an exception. */
PyObject *pact_py_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases);

/* The Loop type (loop.c); added to the module by module.c. */
extern PyType_Spec pact_py_loop_spec;

typedef struct {
    double when;
    uint64_t seq; /* equal deadlines run in the order they were scheduled */
    PyObject *handle;
} timer_entry;

typedef struct {
    PyObject_HEAD
    pact_loop *loop;
    /* Ready handles: a ring buffer (capacity a power of two). */
    PyObject **ready;
    size_t ready_head, ready_len, ready_cap;
    /* Scheduled TimerHandles: a binary heap on (when, seq). */
    timer_entry *timers;
    size_t timers_len, timers_cap;
    uint64_t timer_seq;
    Py_ssize_t timer_cancelled_count;
    /* loop._task_factory (set_task_factory() stores it). */
    PyObject *task_factory;
    int stopping;
    int closed;
    int closing; /* close_core under way (protocol callbacks run inside it) */
    int debug;
    int in_run;
    /* How many handles at the head of the ready queue were there when
     * run_once began: run in pact's after-wait hook (loop.c, take_gil). */
    size_t earlier;
    /* The pact iteration of run_once is under way (in_iteration), its
     * hook took the timers due (due_taken) into due, for after the I/O
     * callbacks. */
    int in_iteration, due_taken;
    PyObject **due;
    size_t due_len, due_cap;
    /* SystemExit / KeyboardInterrupt raised in a protocol callback (run
     * from inside a pact iteration): raised by run_once after it. */
    PyObject *pending_exc;
    PyThreadState *wait_tstate;
    /* A socketpair whose write end is signal.set_wakeup_fd() while the loop
     * runs on the main thread, so that a signal arriving just before the
     * wait still wakes it; the read stays armed while the loop is open,
     * which also keeps pact's iteration from returning at once when
     * nothing else is in flight. */
    int signal_rfd, signal_wfd;
    pact_op signal_op;
    unsigned char signal_buf[64];
    uint64_t signals_seen;
    /* Signal numbers read, for _process_self_data() after the wait (never
     * from inside a pact callback: Python code run there would raise a
     * pending KeyboardInterrupt where nobody can propagate it). */
    unsigned char signals_pending[512];
    size_t signals_pending_len;
    /* add_reader / add_writer (readiness.c): a watcher per fd, indexed by
     * fd. */
    struct pact_py_watcher **watchers;
    size_t watchers_cap;
    /* Writes made in a callback go out when it returns (transport.c,
     * "Writes made in a callback"): how many Python callbacks the loop is
     * running (nested: a protocol call inside write()), and the
     * transports holding such writes (a list through the transports). */
    int callback_depth;
    struct TransportObject *deferred_writes, **deferred_writes_tail;
    /* Blocks for the writes a transport holds, kept between callbacks
     * (transport.c): a transport has one only while it holds writes. */
    struct held_writes *held_spares;
    int held_spares_len;
    /* The bytes object of a delivery that nobody kept, for the next
     * delivery of a like size (endpoint.c, "Received bytes"), and the
     * bytes its memory holds; NULL while there is none. */
    PyObject *spare_bytes;
    size_t spare_bytes_room;
    /* The bytes object a read by readiness lands in (endpoint.c,
     * "Received bytes"), handed over as it is when the read was large;
     * NULL while there is none. */
    PyObject *landing;
    /* run_once calls, counted: a transport notes the one that last
     * handed it bytes (transport.c, "The peer's end"). */
    uint64_t iteration;
    /* Stream transports whose peer's EOF asyncio would read in a later
     * iteration than the bytes before it (transport.c): a list through
     * the transports, handed over after the next iteration's ready
     * handles, where asyncio runs its I/O callbacks. eofs_later gathers
     * them during an iteration, eofs_now is what run_once took. */
    struct TransportObject *eofs_later, *eofs_now;
} LoopObject;

/* Appends a handle to the ready queue (new reference taken); -1 on
 * MemoryError. */
int pact_py_ready_push(LoopObject *self, PyObject *handle);

/* asyncio's Handle and TimerHandle made, tested and run from C (handle.c).
 * pact_py_handles_init() reads their slot offsets (once, at import). */
int pact_py_handles_init(void);
/* New handles (new references); the loop's debug mode uses asyncio's
 * constructors. context None: a copy of the current context. */
PyObject *pact_py_handle_new(LoopObject *loop, PyObject *callback,
                             PyObject *args, PyObject *context);
PyObject *pact_py_timer_handle_new(LoopObject *loop, PyObject *when,
                                   PyObject *callback, PyObject *args,
                                   PyObject *context);
/* 1 if cancelled, 0 if not, -1 with an exception. */
int pact_py_handle_cancelled(PyObject *handle);
/* A TimerHandle's _scheduled flag. */
int pact_py_timer_set_scheduled(PyObject *handle, int scheduled);
int pact_py_timer_scheduled(PyObject *handle);
/* Runs a ready handle as Handle._run does (in debug mode through the
 * loop's _run_handle_debug); -1 only for SystemExit, KeyboardInterrupt or
 * a failure to report the callback's exception. */
int pact_py_handle_run(LoopObject *loop, PyObject *handle);
/* The current exception, raised by callback(*args) run in context where
 * asyncio runs that call as a handle of its own: reported as Handle._run
 * reports it (the exception handler with "Exception in callback ...",
 * 'exception' and 'handle', a handle made for the report). -1 with the
 * exception still set for SystemExit and KeyboardInterrupt, or with
 * another one if the report failed; 0 once reported. */
int pact_py_report_as_handle(LoopObject *loop, PyObject *callback,
                             PyObject *args, PyObject *context);

/* The Loop type object (module.c). */
extern PyTypeObject *pact_py_loop_type;

/* Keeps the current exception to be raised once the pact iteration that is
 * running returns (the first one wins); clears it. */
void pact_py_keep_exception(LoopObject *self);
/* Raises the exception pact_py_keep_exception kept, if any: -1 with it
 * set (and no longer kept), else 0. */
int pact_py_raise_kept_exception(LoopObject *self);

/* The Transport type (transport.c): adds it to the module. */
int pact_py_transport_init(PyObject *module);
/* The non-raising system calls of the sock_* methods (sock.c). */
int pact_py_sock_init(PyObject *module);

/* Sends the writes the Python callbacks of this loop held back
 * (transport.c); the current exception, if any, is kept. */
void pact_py_flush_writes(LoopObject *self);
/* Frees the loop's spare held-write blocks (transport.c). */
void pact_py_held_spares_free(LoopObject *self);
/* Has pact read sockets by readiness straight into a bytes object of the
 * loop's (endpoint.c, "Received bytes"); called once, at the loop's
 * creation. */
void pact_py_receive_into_bytes(LoopObject *self);
/* Hands the EOFs run_once took (eofs_now) to their protocols
 * (transport.c); the current exception, if any, is kept. */
void pact_py_deliver_eofs(LoopObject *self);
/* Puts the EOFs run_once took back in front of those held since: an
 * iteration that raised before handing them over. */
void pact_py_postpone_eofs(LoopObject *self);
/* Drops the listed EOFs (the loop closes: as asyncio's close(), no
 * protocol hears more). */
void pact_py_drop_eofs(LoopObject *self);

/* Around every Python callback the loop runs (a protocol call, a
 * sendfile's done callback; a batch of ready handles or of due timers as a
 * whole): writes made inside are held and sent together when the
 * outermost one returns. */
static inline void pact_py_callback_enter(LoopObject *self)
{
    self->callback_depth++;
}

static inline void pact_py_callback_leave(LoopObject *self)
{
    if (--self->callback_depth == 0 && self->deferred_writes)
        pact_py_flush_writes(self);
}

/* The Python transport of a connection a pact server accepted (server.c):
 * t is pact_server_accepting()'s transport, sock a socket object on its
 * fd (detached at connection_lost), server asyncio's Server or None.
 * *proto gets the protocol table the factory returns, with the transport
 * as its user. A new reference, or NULL with an exception (nothing was
 * handed to pact then). */
PyObject *pact_py_transport_accepted(LoopObject *loop, pact_transport *t,
                                     PyObject *sock, PyObject *protocol,
                                     PyObject *extra, PyObject *server,
                                     const pact_protocol **proto);

/* The loop argument of an _open (a transport's, a server's): a pact loop
 * that is open, or NULL with TypeError / RuntimeError (endpoint.c). */
LoopObject *pact_py_open_loop(PyObject *loop);

/* The current exception to the loop's exception handler (endpoint.c), as
 * asyncio reports one: {message, exception}, and transport and protocol
 * unless transport is NULL; message NULL (out of memory): unraisable.
 * SystemExit and KeyboardInterrupt are kept for the loop to raise after
 * its iteration. Clears the exception. */
void pact_py_report_exception(LoopObject *loop, PyObject *message,
                               PyObject *transport, PyObject *protocol);

/* The Server type (server.c): adds it to the module. */
int pact_py_server_init(PyObject *module);

/* The DatagramTransport type (datagram.c): adds it to the module. */
int pact_py_datagram_init(PyObject *module);


/* Readiness (readiness.c): asyncio's add_reader/add_writer on one-shot pact
 * polls, re-armed before each wait while wanted (level-triggered). */
PyObject *pact_py_add_reader(LoopObject *self, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *pact_py_add_writer(LoopObject *self, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *pact_py_remove_reader(LoopObject *self, PyObject *fd);
PyObject *pact_py_remove_writer(LoopObject *self, PyObject *fd);
PyObject *pact_py_add_callback(LoopObject *self, PyObject *handle);
/* At close, after the pact loop closed: frees every watcher. */
void pact_py_watchers_free(LoopObject *self);
int pact_py_watchers_traverse(LoopObject *self, visitproc visit, void *arg);
void pact_py_watchers_clear(LoopObject *self);

#endif
