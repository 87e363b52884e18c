/* SPDX-License-Identifier: MIT */
/* What pact._pact's transport objects share: the stream Transport
 * (transport.c) and the DatagramTransport (datagram.c) are each a pact
 * endpoint seen from Python, with the same fields first (so that either
 * is a pact_py_endpoint), the same way of calling their protocol, the same
 * waiter, the same lifetime (a reference to itself while pact may call
 * back) and the same end (the socket object detached, the waiter failed). */
#ifndef PACT_PY_ENDPOINT_H
#define PACT_PY_ENDPOINT_H

#include "pact_py.h"

/* The fields every endpoint object starts with, in this order. */
#define PACT_PY_ENDPOINT_FIELDS                                               \
    PyObject_HEAD                                                             \
    PyObject *extra_slot; /* asyncio.BaseTransport.__slots__ = ('_extra',) */ \
    LoopObject *loop;                                                         \
    PyObject *protocol;                                                       \
    PyObject *sock;     /* the socket object the fd came from */              \
    PyObject *context;  /* contextvars.Context for protocol calls */          \
    PyObject *waiter;   /* future set after connection_made, or NULL */       \
    PyObject *lost_exc; /* connection_lost's argument after a fatal error */  \
    PyObject *self_ref; /* held while pact may still call back */             \
    PyObject *weakreflist; /* loop._transports holds weak references */       \
    PyObject *dict; /* instance attributes: tests and libraries patch them */ \
    int closing;                                                              \
    int in_context; /* protocol calls under way (the context is entered) */   \
    int protocol_paused; /* pause_writing delivered, resume_writing not yet */ \
    int orphaned;  /* left open at loop close (transport.c says how) */       \
    int orphan_fd; /* an orphaned socket's duplicate fd, or -1 */         \
    int made;      /* pact's connection_made came */                          \
    int made_turn; /* PACT_PY_MADE_*: see pact_py_endpoint_made_soon */       \
    int lost_turn; /* PACT_PY_LOST_*: see pact_py_endpoint_lost_soon */

typedef struct {
    PACT_PY_ENDPOINT_FIELDS
} pact_py_endpoint;

/* Where an endpoint's connection_made stands. */
enum {
    PACT_PY_MADE_NONE,   /* pact's connection_made calls it */
    PACT_PY_MADE_QUEUED, /* its turn waits in the loop's ready queue */
    PACT_PY_MADE_DONE,   /* the protocol had it */
};

/* The endpoint was just made. asyncio's transports schedule
 * connection_made with call_soon in their constructor, so the handles
 * queued before (by the protocol factory, say) run before it and those
 * queued after run after it, whichever callback made the transport; pact's
 * own connection_made comes from pact's next iteration, ahead of or behind
 * the ready queue. So a handle calling the endpoint's _connection_made_turn
 * (the type's method: the protocol's connection_made, then the waiter's
 * result) goes into the ready queue now; pact's connection_made, when it
 * comes, leaves the protocol alone. The types hold their reading until
 * the turn, as asyncio's start reading after it; an end that comes
 * before the turn gets a connection_lost turn behind it (or, while the
 * loop closes and drops its queue, both are called at once, in order).
 * Exceptions are cleared (then pact's connection_made calls it, as
 * before). */
void pact_py_endpoint_made_soon(pact_py_endpoint *self);

/* Where an endpoint's connection_lost stands. */
enum {
    PACT_PY_LOST_NONE,   /* pact calls it when the endpoint ends */
    PACT_PY_LOST_QUEUED, /* its turn waits in the loop's ready queue */
    PACT_PY_LOST_DONE,   /* the protocol had it */
};

/* The program ended the endpoint with nothing left to send (close() with
 * an empty buffer, abort(), _force_close()). asyncio schedules
 * connection_lost with call_soon there, so the handles queued before the
 * call run before it and those queued after run after it; pact's own
 * connection_lost comes from pact's next iteration, ahead of the ready
 * queue. So a handle calling the endpoint's _connection_lost_turn (the
 * type's method: the protocol's connection_lost, once) goes into the ready
 * queue now, and pact's connection_lost only cleans up if it comes first.
 * Exceptions are cleared (then pact calls it, as before). */
void pact_py_endpoint_lost_soon(pact_py_endpoint *self);

#define PACT_PY_ENDPOINT(obj) ((pact_py_endpoint *)(obj))

/* Fills the fields _open sets the same way for every endpoint (new
 * references): extra, loop, protocol, sock, the current context, and the
 * waiter unless it is None. 0, or -1 with an exception. */
int pact_py_endpoint_init(pact_py_endpoint *self, PyObject *extra,
                          LoopObject *loop, PyObject *protocol,
                          PyObject *sock, PyObject *waiter);

/* protocol.name(a1, a2) in the endpoint's context (a1 and a2 may be NULL:
 * fewer arguments), as one of the Python callbacks the loop runs: writes
 * made inside go out when it returns, slow calls are logged in debug mode.
 * A new reference, or NULL with the exception set. */
PyObject *pact_py_endpoint_call(pact_py_endpoint *self, PyObject *name,
                                PyObject *a1, PyObject *a2);

/* The current exception to the loop's exception handler with message (a
 * str; NULL: out of memory, the exception is unraisable), the endpoint and
 * its protocol; SystemExit and KeyboardInterrupt are kept for the loop to
 * raise after its iteration. Clears the exception. */
void pact_py_endpoint_report(pact_py_endpoint *self, PyObject *message);

/* The protocol's callback name(a1, a2) (a1, a2 may be NULL) raised the
 * current exception, a call asyncio makes from a handle of its own
 * (connection_made and connection_lost, scheduled with call_soon; a read
 * pipe's data_received and a datagram endpoint's calls, from its reader
 * callback): reported as Handle._run reports it (message "Exception in
 * callback ...", keys 'exception' and 'handle'), and the endpoint goes
 * on. SystemExit and KeyboardInterrupt are kept for the loop to raise
 * after its iteration. Clears the exception. */
void pact_py_endpoint_callback_failed(pact_py_endpoint *self, PyObject *name,
                                      PyObject *a1, PyObject *a2);

/* asyncio's _fatal_error for the current exception, which ends the
 * endpoint (ends 1: it is still up; the caller then aborts it): the
 * exception becomes connection_lost's argument; an OSError is logged in
 * debug mode only, anything else goes to the exception handler with
 * message, 'exception', 'transport' and 'protocol'. SystemExit and
 * KeyboardInterrupt are kept for the loop to raise after its iteration.
 * Clears the exception. */
void pact_py_endpoint_fatal_error(pact_py_endpoint *self, const char *message,
                                  int ends);

/* After the protocol's connection_made: the waiter's result. */
void pact_py_endpoint_made(pact_py_endpoint *self);

/* At pact's connection_lost: the socket object lets go of the fd pact
 * closed (method "detach"; "close" for a pipe object, which cannot be
 * detached), and a waiter connection_made never set fails with err (0:
 * ECONNABORTED), unless connection_made's turn is still to come and sets
 * it. Exceptions are cleared. */
void pact_py_endpoint_lost(pact_py_endpoint *self, const char *method, int err);

/* The bytes object for a received delivery of len bytes (endpoint.c,
 * "Received bytes": the one a large read landed in, or the loop's spare
 * when nobody kept it and len fits); *room is the bytes its memory holds.
 * A new reference, or NULL with MemoryError. */
PyObject *pact_py_received_bytes(LoopObject *loop, const void *data,
                                 size_t len, size_t *room);
/* The protocol call that got b returned (with or without an exception):
 * gives the reference back, and the loop keeps b as its spare if nobody
 * else holds it. */
void pact_py_received_bytes_done(LoopObject *loop, PyObject *b, size_t room);

/* OSError(-err) (its subclass: ConnectionResetError...), None for 0. */
PyObject *pact_py_exception_for(int err);

/* A write or send after the end is dropped, as asyncio drops it; from the
 * fifth on each is logged, as asyncio logs them. count is the endpoint's
 * count of dropped writes. None, or NULL with an exception. */
PyObject *pact_py_drop_write(unsigned *count);

/* write()'s and sendto()'s data: asyncio's transports take bytes,
 * bytearray and memoryview only. 0, or -1 with asyncio's TypeError. */
int pact_py_check_data(PyObject *data);

/* set_write_buffer_limits(high=None, low=None) with asyncio's defaults and
 * checks. 0, or -1 with an exception. */
int pact_py_write_buffer_limits(PyObject *args, PyObject *kwds,
                                Py_ssize_t *high, Py_ssize_t *low);

/* tp_traverse and tp_clear of the shared fields (not self_ref: it stands
 * for pact's pointer to the endpoint, a reference from outside Python's
 * heap; visited, it made an endpoint that only pact and an accept task
 * held look like an unreachable cycle, and a collection cleared its
 * protocol and waiter before connection_made). */
int pact_py_endpoint_traverse(pact_py_endpoint *self, visitproc visit,
                              void *arg);
void pact_py_endpoint_clear(pact_py_endpoint *self);
/* What tp_dealloc frees of the shared fields, after tp_clear. */
void pact_py_endpoint_free(pact_py_endpoint *self);

/* Methods and attributes every endpoint type has: get_protocol(),
 * get_extra_info(name, default=None), _loop,
 * __dict__, _protocol_paused; __weaklistoffset__ and __dictoffset__ for
 * the type whose object has the fields at the given offsets. */
PyObject *pact_py_endpoint_get_protocol(PyObject *self, PyObject *unused);
PyObject *pact_py_endpoint_get_extra_info(PyObject *self,
                                          PyObject *const *args,
                                          Py_ssize_t nargs, PyObject *kwnames);
PyObject *pact_py_endpoint_get_loop(PyObject *self, void *closure);
PyObject *pact_py_endpoint_get_protocol_paused(PyObject *self, void *closure);

#endif
