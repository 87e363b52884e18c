/* SPDX-License-Identifier: MIT */
/* pact._pact.Transport: a pact stream transport (pact_transport_*) as an
 * asyncio.Transport subclass. pact does the I/O (multishot receive into the
 * loop's buffers, write buffering, flow control, pause without loss); this
 * file turns its protocol callbacks into calls of the Python protocol, in
 * the context (contextvars) captured when the transport was made.
 *
 * Lifetime: the transport holds a reference to itself from open until
 * pact's connection_lost, so it stays alive while pact may call it. The
 * Python socket it was made from keeps its fd number until then, and is
 * detached (never closes the fd pact closed) at connection_lost.
 *
 * Loop close: as asyncio, closing the loop does not close the transports
 * the program left open. The loop orphans each (Transport._orphan) before
 * pact closes its objects: the transport keeps a duplicate of the fd (a
 * pipe keeps its pipe object), so the connection stays up, its protocol
 * hears nothing more, and it stays "open" until close() releases the fd
 * or the garbage collector does, with a ResourceWarning, as asyncio's.
 * One the program closed itself, whose end was still under way, gets its
 * connection_lost from inside loop.close(). */
#include "endpoint.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <structmember.h>

/* At most this many writes are held back per transport in one callback;
 * the next one sends them all first. */
#define HELD_WRITES_MAX 16
/* Spare blocks a loop keeps for them (more are made and freed). */
#define HELD_SPARES_MAX 16

/* The writes one transport holds in a callback: taken from the loop's
 * spares when it holds its first, given back when they are sent. Writes
 * are held only until the callback returns, so a transport (between
 * callbacks, nearly all of them) costs a pointer instead of the block. */
typedef struct held_writes {
    struct held_writes *next_spare;
    int n;
    size_t bytes;
    PyObject *items[HELD_WRITES_MAX];
} held_writes;

typedef struct TransportObject {
    /* sock: the socket.socket the fd came from; lost_exc: _force_close(exc) */
    PACT_PY_ENDPOINT_FIELDS
    pact_transport *t;    /* NULL after connection_lost */
    PyObject *server;  /* asyncio Server (attach/detach), or NULL */
    int buffered;      /* the protocol is an asyncio.BufferedProtocol */
    int eof_written;
    int is_pipe; /* pact owns a duplicate; the pipe object is closed at the end */
    int kind;    /* pact_stream_kind, kept after the end */
    int sendfile_active; /* a sendfile is queued: write() is refused */
    unsigned conn_lost_writes; /* writes dropped after the end (asyncio logs) */
    /* Writes held back in a callback (see "Writes made in a callback"):
     * bytes objects, sent as one writev when the callback returns; NULL
     * while none are held. */
    held_writes *held;
    /* On the loop's list of transports holding writes, in the order
     * they first held one (held_list_*): held_pprev is NULL off it. */
    struct TransportObject *next_held, **held_pprev;
    /* pact's reading is paused until connection_made's turn (see
     * hold_reading), and whether the program paused it meanwhile. */
    int reading_held, paused_meanwhile;
    Py_buffer recv_view; /* a BufferedProtocol's buffer, during a delivery */
    /* The peer's EOF (see "The peer's end"): the loop iteration that last
     * handed bytes over or resumed reading, whether the EOF is held back
     * (EOF_*), and the loop's list of held EOFs through the transports. */
    uint64_t read_iteration;
    int eof_held;
    struct TransportObject *next_eof;
} TransportObject;

enum {
    EOF_NOT_HELD,
    EOF_LISTED, /* in the loop's list, for the next iteration */
    EOF_PAUSED, /* reading was paused before its turn: at resume_reading */
};

static PyObject *transport_type; /* set by pact_py_transport_init */

/* The protocol's method names, interned once: a protocol call per
 * received chunk looks its method up by these without making a string,
 * an argument tuple or a bound method. */
static struct {
    PyObject *connection_made;
    PyObject *data_received;
    PyObject *eof_received;
    PyObject *connection_lost;
    PyObject *pause_writing;
    PyObject *resume_writing;
    PyObject *get_buffer;
    PyObject *buffer_updated;
} method;

static PyObject *protocol_call(TransportObject *self, PyObject *name,
                               PyObject *arg)
{
    return pact_py_endpoint_call(PACT_PY_ENDPOINT(self), name, arg, NULL);
}

/* An exception escaped a protocol callback asyncio's transport calls in
 * its reader (data_received, eof_received, get_buffer, buffer_updated):
 * asyncio's _fatal_error (the exception handler hears it unless it is an
 * OSError, the connection is aborted and connection_lost gets it).
 * SystemExit and KeyboardInterrupt are kept for the loop to raise after
 * its iteration. */
static void protocol_failed(TransportObject *self, const char *what)
{
    pact_py_endpoint_fatal_error(PACT_PY_ENDPOINT(self), what, self->t != NULL);
    if (self->t) {
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_transport_abort(self->t);
    }
}

/* connection_made's turn is queued (pact_py_endpoint_made_soon) as
 * asyncio's transports queue it, and they start reading only after it
 * (their reader is added by a handle queued behind it): what the protocol
 * then hears comes from a later iteration than the turn, behind the
 * handles queued meanwhile (the task that made the transport gets its
 * result first). pact starts reading at its own connection_made, which
 * may come before the turn; so reading is paused from the transport's
 * creation until the turn. A pause the program asks for meanwhile
 * (connection_made may pause) is only noted, and kept. */
static void made_soon(TransportObject *self)
{
    pact_py_endpoint_made_soon(PACT_PY_ENDPOINT(self));
    if (self->made_turn == PACT_PY_MADE_QUEUED &&
        self->kind != PACT_STREAM_WRITE_PIPE &&
        pact_transport_pause_reading(self->t) == 0)
        self->reading_held = 1;
}

static void release_reading(TransportObject *self)
{
    if (!self->reading_held)
        return;
    self->reading_held = 0;
    if (self->t && !self->paused_meanwhile && !self->closing &&
        !pact_transport_is_closing(self->t))
        pact_transport_resume_reading(self->t);
}

/* The protocol's connection_made, once, then the waiter's result. asyncio
 * calls connection_made from a handle: one that raises is reported as a
 * handle's exception, and the transport goes on (its reader and the
 * waiter's result are handles of their own). */
static void deliver_made(TransportObject *self)
{
    self->made_turn = PACT_PY_MADE_DONE;
    PyObject *r = protocol_call(self, method.connection_made, (PyObject *)self);
    if (!r)
        pact_py_endpoint_callback_failed(PACT_PY_ENDPOINT(self),
                                         method.connection_made,
                                         (PyObject *)self, NULL);
    Py_XDECREF(r);
    release_reading(self);
    pact_py_endpoint_made(PACT_PY_ENDPOINT(self));
}

static void on_connection_made(pact_transport *t, void *user)
{
    (void)t;
    TransportObject *self = user;
    self->made = 1;
    if (self->made_turn == PACT_PY_MADE_NONE)
        deliver_made(self); /* no turn could be queued */
}

static void on_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    TransportObject *self = user;
    LoopObject *loop = self->loop;
    self->read_iteration = loop->iteration;
    size_t room;
    PyObject *bytes = pact_py_received_bytes(loop, data, len, &room);
    if (!bytes) {
        protocol_failed(self, "Fatal error: out of memory for received data.");
        return;
    }
    PyObject *r = protocol_call(self, method.data_received, bytes);
    if (!r && self->kind == PACT_STREAM_READ_PIPE) {
        /* asyncio's read pipe calls data_received unguarded in its reader
         * callback: the handle's exception is reported, reading goes on. */
        pact_py_endpoint_callback_failed(PACT_PY_ENDPOINT(self),
                                         method.data_received, bytes, NULL);
        pact_py_received_bytes_done(loop, bytes, room);
        return;
    }
    pact_py_received_bytes_done(loop, bytes, room);
    if (!r) {
        protocol_failed(self, "Fatal error: protocol.data_received() call failed.");
        return;
    }
    Py_DECREF(r);
}

static void close_transport(TransportObject *self);

/* ---- The peer's end ------------------------------------------------------
 *
 * asyncio's socket transport reads once per iteration: bytes the peer sent
 * and its EOF behind them come one iteration apart, with what
 * data_received scheduled run in between; its read pipe transport
 * schedules eof_received and connection_lost with call_soon at the EOF.
 * pact's receive hands bytes and EOF over in one batch. So an EOF that
 * comes in the iteration that handed bytes over (or resumed reading: the
 * bytes then come first) is held back, in the loop's list, and handed
 * over after the next iteration's ready handles, where asyncio's select()
 * finds it; if the program paused reading meanwhile, at resume_reading,
 * as asyncio reads nothing while paused. pact keeps such a socket open
 * (the binding ends it as asyncio does: eof_received returning false
 * closes it, and connection_lost has its turn). Only the EOF costs
 * anything: a chunk of bytes costs a store of the iteration's number. */

/* asyncio's _read_ready__on_eof: eof_received, then close() unless it
 * returned true (nothing more is read either way). */
static void socket_eof(TransportObject *self)
{
    PyObject *r = protocol_call(self, method.eof_received, NULL);
    int keep = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (keep < 0) {
        protocol_failed(self, "Fatal error: protocol.eof_received() call failed.");
        return;
    }
    if (!keep)
        close_transport(self);
}

/* asyncio's read pipe at EOF: closing, eof_received and connection_lost
 * each scheduled with call_soon (pact closes the pipe itself). */
static void pipe_eof(TransportObject *self)
{
    self->closing = 1;
    PyObject *eof = self->protocol
                        ? PyObject_GetAttr(self->protocol, method.eof_received)
                        : NULL;
    PyObject *no_args = eof ? PyTuple_New(0) : NULL;
    PyObject *h = no_args ? pact_py_handle_new(self->loop, eof, no_args,
                                               self->context ? self->context
                                                             : Py_None)
                          : NULL;
    if (!h || pact_py_ready_push(self->loop, h) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(h);
    Py_XDECREF(no_args);
    Py_XDECREF(eof);
    pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
}

static void hold_eof(TransportObject *self)
{
    /* Newest first: pact_py_deliver_eofs turns the list around. */
    self->eof_held = EOF_LISTED;
    self->next_eof = self->loop->eofs_later;
    self->loop->eofs_later = (TransportObject *)Py_NewRef((PyObject *)self);
}

static int on_eof(pact_transport *t, void *user)
{
    (void)t;
    TransportObject *self = user;
    if (self->kind == PACT_STREAM_READ_PIPE)
        pipe_eof(self);
    else if (self->read_iteration == self->loop->iteration &&
             !self->loop->closing)
        hold_eof(self);
    else
        socket_eof(self);
    return 1; /* this binding closes it, as asyncio does */
}

/* A held EOF's turn: dropped if the transport ended meanwhile (asyncio's
 * close removes its reader), kept for resume_reading if reading is
 * paused. */
static void eof_turn(TransportObject *self)
{
    self->eof_held = EOF_NOT_HELD;
    if (!self->t || self->closing || pact_transport_is_closing(self->t))
        return;
    if (!pact_transport_is_reading(self->t)) {
        self->eof_held = EOF_PAUSED;
        return;
    }
    socket_eof(self);
}

void pact_py_deliver_eofs(LoopObject *loop)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    TransportObject *oldest_first = NULL, *self;
    while ((self = loop->eofs_now)) {
        loop->eofs_now = self->next_eof;
        self->next_eof = oldest_first;
        oldest_first = self;
    }
    while ((self = oldest_first)) {
        oldest_first = self->next_eof;
        self->next_eof = NULL;
        if (self->eof_held == EOF_LISTED)
            eof_turn(self);
        Py_DECREF(self); /* the list's reference */
    }
    PyErr_Restore(et, ev, tb);
}

void pact_py_postpone_eofs(LoopObject *loop)
{
    TransportObject **tail = &loop->eofs_later;
    while (*tail)
        tail = &(*tail)->next_eof;
    *tail = loop->eofs_now; /* older: behind, in a newest-first list */
    loop->eofs_now = NULL;
}

void pact_py_drop_eofs(LoopObject *loop)
{
    pact_py_postpone_eofs(loop);
    TransportObject *self;
    while ((self = loop->eofs_later)) {
        loop->eofs_later = self->next_eof;
        self->next_eof = NULL;
        self->eof_held = EOF_NOT_HELD;
        Py_DECREF(self);
    }
}

/* The protocol's connection_lost, once, and what asyncio's
 * _call_connection_lost does right after it (the server's count). */
static void deliver_lost(TransportObject *self, int err)
{
    self->lost_turn = PACT_PY_LOST_DONE;
    PyObject *exc = self->lost_exc ? Py_NewRef(self->lost_exc)
                                   : pact_py_exception_for(err);
    Py_CLEAR(self->lost_exc);
    if (!exc) {
        PyErr_WriteUnraisable((PyObject *)self);
        exc = Py_NewRef(Py_None);
    }
    PyObject *r = protocol_call(self, method.connection_lost, exc);
    /* asyncio calls it from a handle (_call_connection_lost), which
     * reports what it raises. */
    if (!r)
        pact_py_endpoint_callback_failed(PACT_PY_ENDPOINT(self),
                                         method.connection_lost, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(r);
    if (self->server) {
        PyObject *d = PyObject_CallMethod(self->server, "_detach", NULL);
        Py_XDECREF(d);
        if (!d)
            PyErr_WriteUnraisable((PyObject *)self);
        Py_CLEAR(self->server);
    }
}

static void on_connection_lost(pact_transport *t, int err, void *user)
{
    TransportObject *self = user;
    /* asyncio's write pipe transport: the reader going away with nothing
     * left to write is a clean close, not a broken pipe. */
    if (err == -EPIPE && pact_transport_kind(t) == PACT_STREAM_WRITE_PIPE &&
        pact_transport_write_buffer_size(t) == 0)
        err = 0;
    self->t = NULL;
    if (self->orphaned) {
        /* Left open at loop close: as asyncio, whose loop.close() calls no
         * protocol, the protocol hears nothing. pact closed its fd; the
         * orphan keeps its duplicate (or its pipe object). */
        if (self->sock && !self->is_pipe) {
            PyObject *d = PyObject_CallMethod(self->sock, "detach", NULL);
            Py_XDECREF(d);
            if (!d)
                PyErr_Clear();
        }
        Py_CLEAR(self->waiter);
        Py_CLEAR(self->server);
        Py_CLEAR(self->context);
        Py_CLEAR(self->self_ref); /* may free self: last */
        return;
    }
    /* asyncio calls connection_lost at once only where the last write of
     * a transport closed with writes queued went out (its _write_ready);
     * every other end it schedules with call_soon: an error (its
     * _fatal_error), a write pipe's reader gone, the close at an EOF, an
     * end before connection_made's turn (then behind it). So here,
     * unless close(), abort() or an EOF queued the turn already. */
    int closed_by_program = self->closing;
    self->closing = 1;
    if (self->lost_turn == PACT_PY_LOST_NONE && !self->loop->closing &&
        (err || !closed_by_program || self->made_turn == PACT_PY_MADE_QUEUED)) {
        if (!self->lost_exc && err && !(self->lost_exc = pact_py_exception_for(err)))
            PyErr_Clear();
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
    }
    /* connection_lost has its turn in the ready queue
     * (pact_py_endpoint_lost_soon), unless the loop is closing and drops
     * that queue. */
    int turn_waits = self->lost_turn == PACT_PY_LOST_QUEUED &&
                     !self->loop->closing;
    if (self->made_turn == PACT_PY_MADE_QUEUED && !turn_waits)
        deliver_made(self);
    if (self->lost_turn != PACT_PY_LOST_DONE && !turn_waits)
        deliver_lost(self, err);
    pact_py_endpoint_lost(PACT_PY_ENDPOINT(self),
                          self->is_pipe ? "close" : "detach", err);
    if (!turn_waits) {
        Py_CLEAR(self->protocol);
        Py_CLEAR(self->context);
    }
    Py_CLEAR(self->self_ref); /* may free self (the turn's handle holds it
                                 while it waits): last */
}

/* The handle pact_py_endpoint_made_soon queued. */
static PyObject *Transport_connection_made_turn(TransportObject *self,
                                                PyObject *unused)
{
    (void)unused;
    if (self->made_turn != PACT_PY_MADE_QUEUED)
        Py_RETURN_NONE;
    deliver_made(self);
    /* SystemExit from connection_made: raised from the handle, as
     * asyncio raises it from its own. */
    if (pact_py_raise_kept_exception(self->loop) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The handle pact_py_endpoint_lost_soon queued. */
static PyObject *Transport_connection_lost_turn(TransportObject *self,
                                                PyObject *unused)
{
    (void)unused;
    if (self->lost_turn != PACT_PY_LOST_QUEUED)
        Py_RETURN_NONE;
    if (self->t && !self->made && self->made_turn != PACT_PY_MADE_DONE) {
        /* Ended before pact's connection_made: pact calls both, in
         * order. */
        self->lost_turn = PACT_PY_LOST_NONE;
        Py_RETURN_NONE;
    }
    deliver_lost(self, 0);
    if (!self->t) { /* pact's end came first and left these */
        Py_CLEAR(self->protocol);
        Py_CLEAR(self->context);
    }
    /* SystemExit from connection_lost: raised from the handle, as
     * asyncio raises it from its own. */
    if (pact_py_raise_kept_exception(self->loop) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The protocol's pause_writing / resume_writing as pact's buffer crosses
 * the marks, also while a close drains it (pact takes writes then, as
 * asyncio's socket transport does). One that raises is reported as
 * asyncio's _FlowControlMixin reports it, and the transport goes on. */
static void flow_call_failed(TransportObject *self, const char *what)
{
    PyObject *message = PyUnicode_FromString(what);
    pact_py_endpoint_report(PACT_PY_ENDPOINT(self), message);
    Py_XDECREF(message);
}

static void on_pause_writing(pact_transport *t, void *user)
{
    (void)t;
    TransportObject *self = user;
    /* As asyncio's _FlowControlMixin: the flag, not the buffer's history,
     * decides, so a protocol never sees two pauses or a lone resume. */
    if (self->protocol_paused)
        return;
    self->protocol_paused = 1;
    PyObject *r = protocol_call(self, method.pause_writing, NULL);
    if (!r)
        flow_call_failed(self, "protocol.pause_writing() failed");
    Py_XDECREF(r);
}

static void on_resume_writing(pact_transport *t, void *user)
{
    (void)t;
    TransportObject *self = user;
    if (!self->protocol_paused)
        return;
    self->protocol_paused = 0;
    PyObject *r = protocol_call(self, method.resume_writing, NULL);
    if (!r)
        flow_call_failed(self, "protocol.resume_writing() failed");
    Py_XDECREF(r);
}

/* BufferedProtocol: the protocol's buffer is exported for the copy only
 * (get_buffer, copy, release, buffer_updated), never across iterations. */
static void *on_get_buffer(pact_transport *t, size_t size_hint, size_t *len,
                           void *user)
{
    (void)t;
    (void)size_hint; /* asyncio's socket transport asks with -1 */
    TransportObject *self = user;
    PyObject *hint = PyLong_FromLong(-1);
    PyObject *buf = hint ? protocol_call(self, method.get_buffer, hint) : NULL;
    Py_XDECREF(hint);
    if (!buf) {
        protocol_failed(self, "Fatal error: protocol.get_buffer() call failed.");
        *len = 0;
        return NULL;
    }
    /* asyncio's checks, in its order: len(buf) (an error or 0 is the
     * protocol's failure), then recv_into's refusal of a buffer it cannot
     * write into (a read error). */
    Py_ssize_t size = PyObject_Size(buf);
    if (size <= 0) {
        Py_DECREF(buf);
        if (size == 0)
            PyErr_SetString(PyExc_RuntimeError,
                            "get_buffer() returned an empty buffer");
        protocol_failed(self, "Fatal error: protocol.get_buffer() call failed.");
        *len = 0;
        return NULL;
    }
    int r = PyObject_GetBuffer(buf, &self->recv_view, PyBUF_WRITABLE);
    if (r == 0 && self->recv_view.len == 0) {
        PyBuffer_Release(&self->recv_view);
        r = -1;
    }
    if (r < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "recv_into() argument 1 must be read-write bytes-like "
                     "object, not %.100s",
                     Py_TYPE(buf)->tp_name);
        Py_DECREF(buf);
        protocol_failed(self, "Fatal read error on socket transport");
        *len = 0;
        return NULL;
    }
    Py_DECREF(buf);
    *len = (size_t)self->recv_view.len;
    return self->recv_view.buf;
}

static void on_buffer_updated(pact_transport *t, size_t nbytes, void *user)
{
    (void)t;
    TransportObject *self = user;
    self->read_iteration = self->loop->iteration;
    PyBuffer_Release(&self->recv_view);
    PyObject *n = PyLong_FromSize_t(nbytes);
    PyObject *r = n ? protocol_call(self, method.buffer_updated, n) : NULL;
    Py_XDECREF(n);
    if (!r) {
        protocol_failed(self, "Fatal error: protocol.buffer_updated() call failed.");
        return;
    }
    Py_DECREF(r);
}

static const pact_protocol plain_protocol = {
    .connection_made = on_connection_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_connection_lost,
    .pause_writing = on_pause_writing,
    .resume_writing = on_resume_writing,
};

static const pact_protocol buffered_protocol = {
    .connection_made = on_connection_made,
    .eof_received = on_eof,
    .connection_lost = on_connection_lost,
    .pause_writing = on_pause_writing,
    .resume_writing = on_resume_writing,
    .get_buffer = on_get_buffer,
    .buffer_updated = on_buffer_updated,
};

static int is_buffered(PyObject *protocol)
{
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (!asyncio)
        return -1;
    PyObject *cls = PyObject_GetAttrString(asyncio, "BufferedProtocol");
    Py_DECREF(asyncio);
    if (!cls)
        return -1;
    int r = PyObject_IsInstance(protocol, cls);
    Py_DECREF(cls);
    return r;
}

/* Transport._open(loop, sock, protocol, waiter, extra, server): wraps the
 * connected socket's fd in a pact transport. connection_made has its turn
 * in the ready queue (pact_py_endpoint_made_soon), then the waiter's
 * result. */
static PyObject *Transport_open(PyObject *cls, PyObject *args)
{
    PyObject *loop, *sock, *protocol, *waiter, *extra, *server;
    int kind = PACT_STREAM_SOCKET;
    if (!PyArg_ParseTuple(args, "OOOOOO|i:_open", &loop, &sock, &protocol,
                          &waiter, &extra, &server, &kind))
        return NULL;
    if (kind != PACT_STREAM_SOCKET && kind != PACT_STREAM_READ_PIPE &&
        kind != PACT_STREAM_WRITE_PIPE) {
        PyErr_SetString(PyExc_ValueError, "unknown transport kind");
        return NULL;
    }
    LoopObject *lo = pact_py_open_loop(loop);
    if (!lo)
        return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    int pipe_fd = -1;
    if (kind != PACT_STREAM_SOCKET) {
        /* A pipe is a file object, which cannot be detached: pact gets a
         * duplicate to own and close, the pipe object is closed at
         * connection_lost (as asyncio's pipe transports do). */
        pipe_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (pipe_fd < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    int buffered = is_buffered(protocol);
    if (buffered < 0) {
        if (pipe_fd >= 0)
            close(pipe_fd);
        return NULL;
    }
    TransportObject *self =
        (TransportObject *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (!self) {
        if (pipe_fd >= 0)
            close(pipe_fd);
        return NULL;
    }
    self->is_pipe = kind != PACT_STREAM_SOCKET;
    self->kind = kind;
    self->buffered = buffered;
    if (pact_py_endpoint_init(PACT_PY_ENDPOINT(self), extra, lo, protocol,
                              sock, waiter) < 0) {
        if (pipe_fd >= 0)
            close(pipe_fd);
        Py_DECREF(self);
        return NULL;
    }
    if (server != Py_None) {
        PyObject *r = PyObject_CallMethod(server, "_attach", NULL);
        if (!r) {
            if (pipe_fd >= 0)
                close(pipe_fd);
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(r);
        self->server = Py_NewRef(server);
    }
    /* pact owns the fd from here on and closes it; the socket object keeps
     * the number until it is detached at connection_lost. */
    int r = pact_transport_open(lo->loop, self->is_pipe ? pipe_fd : fd,
                                (pact_stream_kind)kind,
                                buffered ? &buffered_protocol : &plain_protocol,
                                self, &self->t);
    if (r < 0) {
        self->t = NULL;
        /* pact closed the fd (or the duplicate): a socket object must not
         * close it too; a pipe object still owns its own. */
        if (!self->is_pipe) {
            PyObject *d = PyObject_CallMethod(sock, "detach", NULL);
            Py_XDECREF(d);
            PyErr_Clear();
        }
        if (self->server) {
            PyObject *dd = PyObject_CallMethod(self->server, "_detach", NULL);
            Py_XDECREF(dd);
            PyErr_Clear();
        }
        Py_DECREF(self);
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->self_ref = Py_NewRef((PyObject *)self);
    made_soon(self);
    return (PyObject *)self;
}

PyObject *pact_py_transport_accepted(LoopObject *loop, pact_transport *t,
                                     PyObject *sock, PyObject *protocol,
                                     PyObject *extra, PyObject *server,
                                     const pact_protocol **proto)
{
    int buffered = is_buffered(protocol);
    if (buffered < 0)
        return NULL;
    PyTypeObject *cls = (PyTypeObject *)transport_type;
    TransportObject *self = (TransportObject *)cls->tp_alloc(cls, 0);
    if (!self)
        return NULL;
    self->orphan_fd = -1;
    self->kind = PACT_STREAM_SOCKET;
    self->extra_slot = Py_NewRef(extra);
    self->loop = (LoopObject *)Py_NewRef((PyObject *)loop);
    self->protocol = Py_NewRef(protocol);
    self->sock = Py_NewRef(sock);
    self->buffered = buffered;
    self->context = PyContext_CopyCurrent();
    if (!self->context) {
        Py_DECREF(self);
        return NULL;
    }
    if (server != Py_None) {
        PyObject *r = PyObject_CallMethod(server, "_attach", NULL);
        if (!r) {
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(r);
        self->server = Py_NewRef(server);
    }
    /* From here on nothing fails: pact calls connection_made, then
     * connection_lost, which detaches the socket and the server. */
    self->t = t;
    *proto = buffered ? &buffered_protocol : &plain_protocol;
    self->self_ref = Py_NewRef((PyObject *)self);
    made_soon(self);
    return (PyObject *)self;
}

/* The transport can no longer send: closed, lost, or a send failed. */
static int write_side_gone(TransportObject *self)
{
    return !self->t || self->closing || pact_transport_is_closing(self->t);
}

/* A write after the end is dropped, as asyncio does after a close or a
 * fatal error; from the fifth on each is logged, as asyncio logs them
 * (its constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES). */
static PyObject *drop_write(TransportObject *self)
{
    return pact_py_drop_write(&self->conn_lost_writes);
}

/* ---- Writes made in a callback ---------------------------------------
 *
 * The write policy of pact.asyncio's transports, in this one place:
 *
 * - A write to a socket transport made while the loop runs a Python
 *   callback (a ready handle, which is also how a task step runs, a
 *   protocol call, a sendfile's done callback) is held back, and
 *   everything the callback wrote to a transport goes to the kernel as one
 *   send (writev) when the callback returns. HTTP servers write a
 *   response's headers and its body separately (aiohttp does): one send
 *   per response instead of two, as uvloop's end-of-iteration flush gives.
 * - The ready handles an iteration runs (asyncio's ntodo) count as one
 *   callback: what they write leaves when the last of them returns, before
 *   the I/O callbacks of the iteration's wait run; the timers due in the
 *   iteration are a second such batch, run after those I/O callbacks. A
 *   server's replies, written by task steps, then leave in one burst, as
 *   uvloop's do; sent as each step returned, they woke the client about
 *   once per reply (README.md, "Python performance", has the counts).
 *   The burst goes out in the order the transports were first written
 *   to (a first-in, first-out list): the first request's reply first.
 *   Protocol callbacks stay one each: on io_uring their writes join the
 *   loop's next submission (src/stream.c), a burst already.
 * - A write made outside any callback (the loop is not running) goes to
 *   the kernel at once, as asyncio's own transports send: code that writes
 *   and then blocks on the other end's answer works.
 * - Pipe transports send every write at once, also in a callback, as
 *   before: a pipe is often read by the program itself or by a child whose
 *   answer the callback then waits for, and nothing is gained there.
 * - Only what would go out at once is held: a transport with bytes queued
 *   in pact already writes through (pact coalesces its queue by itself),
 *   and so does a write that would take what is held past the high-water
 *   mark or past HELD_WRITES_MAX writes, after what is held, so flow
 *   control (pause_writing inside write()) is asyncio's.
 * - Everything that observes or ends the write side sends what is held
 *   first: close, abort, write_eof, get_write_buffer_size, sendfile,
 *   set_write_buffer_limits, the loop's close.
 *
 * So write() returns with the bytes on their way at the latest when the
 * callback that wrote them returns, or the batch of handles or timers it
 * ran in. What a callback must not do is write to a socket and then
 * block on the peer's answer, in the same callback or in a later handle
 * of the same batch (uvloop, which flushes at the end of its iteration,
 * has the same rule); CPython's asyncio suites do that only outside the
 * loop, and pass. */

/* Sends what self holds (one writev); a failure ends the transport as a
 * failed send does. */
static void held_give_back(LoopObject *loop, held_writes *h)
{
    if (loop->held_spares_len < HELD_SPARES_MAX) {
        h->next_spare = loop->held_spares;
        loop->held_spares = h;
        loop->held_spares_len++;
    } else {
        PyMem_Free(h);
    }
}

void pact_py_held_spares_free(LoopObject *loop)
{
    held_writes *h;
    while ((h = loop->held_spares)) {
        loop->held_spares = h->next_spare;
        PyMem_Free(h);
    }
    loop->held_spares_len = 0;
}

static void send_held(TransportObject *self)
{
    held_writes *h = self->held;
    if (!h)
        return;
    int n = h->n;
    struct iovec iov[HELD_WRITES_MAX] = {{0}};
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = PyBytes_AS_STRING(h->items[i]);
        iov[i].iov_len = (size_t)PyBytes_GET_SIZE(h->items[i]);
    }
    self->held = NULL;
    /* Held only while the write side was up; everything that ends it
     * sends first. A transport lost meanwhile (the loop closed) drops. */
    int r = self->t ? pact_transport_writev(self->t, iov, n) : 0;
    for (int i = 0; i < n; i++)
        Py_CLEAR(h->items[i]);
    held_give_back(self->loop, h);
    if (r < 0 && r != -EPIPE && r != -ESHUTDOWN && self->t && !self->lost_exc) {
        /* No one to raise to: the write failed as a send fails. */
        errno = -r;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        self->lost_exc = ev ? ev : Py_NewRef(Py_None);
        Py_XDECREF(et);
        Py_XDECREF(tb);
        self->closing = 1;
        pact_transport_abort(self->t);
    }
}

/* The loop's list of transports holding writes is first in, first out:
 * a batch of handles that replies on several connections sends the
 * replies in the order they were written, the first request's first. */
static void held_list_append(LoopObject *loop, TransportObject *self)
{
    TransportObject **tail = loop->deferred_writes ? loop->deferred_writes_tail
                                                   : &loop->deferred_writes;
    *tail = (TransportObject *)Py_NewRef((PyObject *)self);
    self->held_pprev = tail;
    self->next_held = NULL;
    loop->deferred_writes_tail = &self->next_held;
}

/* Takes self off the list; the caller then owns the list's reference. */
static void held_list_remove(TransportObject *self)
{
    *self->held_pprev = self->next_held;
    if (self->next_held)
        self->next_held->held_pprev = self->held_pprev;
    else
        self->loop->deferred_writes_tail = self->held_pprev;
    self->next_held = NULL;
    self->held_pprev = NULL;
}

/* Takes self off the loop's list of transports holding writes. */
static void unlink_held(TransportObject *self)
{
    if (self->held_pprev) {
        held_list_remove(self);
        Py_DECREF(self); /* the list's reference; the caller holds one */
    }
}

/* Sends what self holds now (before a close, an abort...). */
static void flush_held(TransportObject *self)
{
    if (!self->held)
        return;
    send_held(self);
    unlink_held(self);
}

void pact_py_flush_writes(LoopObject *loop)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    /* One at a time off the list: a send may call back into Python (a
     * failure's abort), which may write and flush again. */
    TransportObject *self;
    while ((self = loop->deferred_writes)) {
        held_list_remove(self);
        send_held(self);
        Py_DECREF(self);
    }
    PyErr_Restore(et, ev, tb);
}

/* Holds data (a buffer of len bytes) back until the callback returns, if
 * the policy above allows: 1 held, 0 not held, -1 with an exception. */
static int hold_write(TransportObject *self, PyObject *data, Py_buffer *view)
{
    size_t len = (size_t)view->len;
    held_writes *h = self->held;
    if (self->loop->callback_depth == 0 || (h && h->n == HELD_WRITES_MAX) ||
        self->kind != PACT_STREAM_SOCKET)
        return 0;
    if (!h && pact_transport_write_buffer_size(self->t) > 0)
        return 0;
    size_t high = 0;
    pact_transport_get_write_buffer_limits(self->t, &high, NULL);
    if ((h ? h->bytes : 0) + len > high)
        return 0;
    /* bytes are immutable: kept as they are; anything else is copied, as
     * the caller may change its buffer once write() returned. */
    PyObject *b = PyBytes_CheckExact(data)
                      ? Py_NewRef(data)
                      : PyBytes_FromStringAndSize(view->buf, view->len);
    if (!b)
        return -1;
    if (!h) {
        LoopObject *loop = self->loop;
        if ((h = loop->held_spares)) {
            loop->held_spares = h->next_spare;
            loop->held_spares_len--;
        } else if (!(h = PyMem_Malloc(sizeof *h))) {
            Py_DECREF(b);
            PyErr_NoMemory();
            return -1;
        }
        h->n = 0;
        h->bytes = 0;
        self->held = h;
        held_list_append(loop, self);
    }
    h->items[h->n++] = b;
    h->bytes += len;
    return 1;
}

/* write() of a buffer that cannot be had as one block of bytes (a
 * non-contiguous memoryview; the exception is set). asyncio's write takes
 * it and tries to send it at once when nothing is buffered: the send
 * fails ("Fatal write error", connection_lost given the exception).
 * Behind buffered bytes its bytearray buffer refuses it at once, with
 * the TypeError raised here; after the end the write is dropped, as
 * any. */
static PyObject *write_unsendable(TransportObject *self, PyObject *data)
{
    if (!PyErr_ExceptionMatches(PyExc_BufferError))
        return NULL;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    flush_held(self); /* asyncio would have sent those already */
    PyErr_Restore(et, ev, tb);
    size_t buffered = self->t ? pact_transport_write_buffer_size(self->t) : 0;
    int gone = write_side_gone(self);
    if (buffered > 0 && (!gone || self->closing)) {
        /* The socket transport's buffer.extend(data), the pipe's
         * buffer += data. */
        PyErr_Clear();
        const char *type = Py_TYPE(data)->tp_name;
        if (self->kind == PACT_STREAM_WRITE_PIPE)
            PyErr_Format(PyExc_TypeError, "can't concat %.100s to bytearray",
                         type);
        else
            PyErr_Format(PyExc_TypeError, "can't set bytearray slice from %.100s",
                         type);
        return NULL;
    }
    if (gone) {
        PyErr_Clear();
        return drop_write(self);
    }
    protocol_failed(self, self->kind == PACT_STREAM_WRITE_PIPE
                              ? "Fatal write error on pipe transport"
                              : "Fatal write error on socket transport");
    Py_RETURN_NONE;
}

/* write() of any object with the buffer protocol (writelines checked). */
static PyObject *write_buffer(TransportObject *self, PyObject *data)
{
    /* asyncio's order of checks. */
    if (self->eof_written) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return NULL;
    }
    if (self->sendfile_active) {
        PyErr_SetString(PyExc_RuntimeError,
                        "unable to write; sendfile is in progress");
        return NULL;
    }
    if (self->orphaned) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return write_unsendable(self, data);
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    /* After close(), pact decides: a socket still takes writes while the
     * bytes written before are being sent (as asyncio's socket transport
     * does) and answers -ESHUTDOWN once they are out. */
    int closed = self->t && self->closing;
    if (write_side_gone(self) && !closed) {
        PyBuffer_Release(&view);
        return drop_write(self);
    }
    int held = closed ? 0 : hold_write(self, data, &view);
    if (held != 0) {
        PyBuffer_Release(&view);
        if (held < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    flush_held(self); /* what this callback wrote before goes first */
    /* pact's transports send at once when nothing is queued (as
     * asyncio's socket transports do): a write that fits costs one
     * system call and no copy. */
    int r = self->t ? pact_transport_write(self->t, view.buf, (size_t)view.len)
                    : -EPIPE;
    PyBuffer_Release(&view);
    /* write_eof was checked above: -EPIPE here is a send that failed
     * (the transport is lost, its held bytes still on their way to the
     * protocol), -ESHUTDOWN a close under way. */
    if (r == -EPIPE || r == -ESHUTDOWN)
        return drop_write(self);
    if (r < 0) {
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Transport_write(TransportObject *self, PyObject *data)
{
    if (pact_py_check_data(data) < 0)
        return NULL;
    return write_buffer(self, data);
}

/* Whether b''.join takes x, a buffer: as one block of bytes (a
 * non-contiguous memoryview is refused). */
static int joinable(PyObject *x)
{
    return !PyMemoryView_Check(x) ||
           PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(x), 'C');
}

/* asyncio's writelines is write(b''.join(lines)): an item that is not
 * bytes-like raises before anything is written, and so does an iterable
 * that fails halfway. Here the items are written one by one (no join
 * copy), once all are checked; from a tuple of them, as a write may call
 * pause_writing, which may change the list it was given. */
static PyObject *Transport_writelines(TransportObject *self, PyObject *lines)
{
    PyObject *fast = PySequence_Fast(lines, "can only join an iterable");
    PyObject *items = fast ? PySequence_Tuple(fast) : NULL;
    Py_XDECREF(fast);
    if (!items)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject **item = &PyTuple_GET_ITEM(items, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyObject_CheckBuffer(item[i]) || !joinable(item[i])) {
            PyErr_Format(PyExc_TypeError,
                         "sequence item %zd: expected a bytes-like object, "
                         "%.80s found",
                         i, Py_TYPE(item[i])->tp_name);
            Py_DECREF(items);
            return NULL;
        }
    }
    PyObject *r = NULL;
    if (n == 0) {
        /* write(b''), which still refuses after write_eof(). */
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        r = empty ? write_buffer(self, empty) : NULL;
        Py_XDECREF(empty);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(r);
        if (!(r = write_buffer(self, item[i])))
            break;
    }
    Py_DECREF(items);
    return r;
}

static PyObject *Transport_write_eof(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->t || self->closing)
        Py_RETURN_NONE;
    flush_held(self);
    self->eof_written = 1;
    int r = pact_transport_write_eof(self->t);
    if (r < 0 && r != -EALREADY && r != -ESHUTDOWN) {
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Transport_can_write_eof(TransportObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->t ? pact_transport_can_write_eof(self->t) : 1);
}

/* Releases what an orphan kept open (its duplicate fd, or its pipe
 * object); 0, or -1 with an exception. */
static int orphan_release(TransportObject *self)
{
    if (!self->orphaned)
        return 0;
    self->orphaned = 0;
    self->closing = 1;
    if (self->orphan_fd >= 0) {
        close(self->orphan_fd);
        self->orphan_fd = -1;
    }
    if (self->is_pipe && self->sock) {
        PyObject *r = PyObject_CallMethod(self->sock, "close", NULL);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Called by the loop's close() for each transport still open: see the
 * comment at the top. */
static PyObject *Transport_orphan(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->t || self->closing || self->orphaned)
        Py_RETURN_NONE;
    flush_held(self);
    if (!self->is_pipe) {
        /* Without a duplicate (no fd left) it is closed with the loop,
         * connection_lost and all, as one the program closed. */
        self->orphan_fd = fcntl(pact_transport_fd(self->t), F_DUPFD_CLOEXEC, 0);
        if (self->orphan_fd < 0)
            Py_RETURN_NONE;
    }
    self->orphaned = 1;
    Py_RETURN_NONE;
}

/* A transport left open at loop close and now collected: asyncio's
 * "unclosed transport" ResourceWarning, then its fd is released. */
static void Transport_finalize(TransportObject *self)
{
    if (!self->orphaned)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    /* An orphaned pipe whose pipe object its owner closed holds nothing. */
    int open = 1;
    if (self->is_pipe && self->sock) {
        PyObject *closed = PyObject_GetAttrString(self->sock, "closed");
        open = closed ? !PyObject_IsTrue(closed) : 1;
        Py_XDECREF(closed);
        PyErr_Clear();
    }
    if ((open && PyErr_ResourceWarning((PyObject *)self, 1,
                                       "unclosed transport %R",
                                       (PyObject *)self) < 0) ||
        orphan_release(self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(et, ev, tb);
}

static PyObject *Transport_close(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned) {
        if (orphan_release(self) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    close_transport(self);
    Py_RETURN_NONE;
}

/* close(), also at an EOF eof_received did not keep open. */
static void close_transport(TransportObject *self)
{
    if (self->t && !self->closing) {
        flush_held(self);
        self->closing = 1;
        /* A socket with bytes buffered still takes writes and sends them
         * before it closes, with the protocol's flow control going on,
         * as asyncio's (pact_transport_close); as asyncio, nothing more
         * is read. */
        if (pact_transport_write_buffer_size(self->t) == 0 &&
            !self->sendfile_active)
            pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_transport_close(self->t);
    }
}

static PyObject *Transport_abort(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned) {
        if (orphan_release(self) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (self->t) {
        flush_held(self); /* asyncio had sent them */
        self->closing = 1;
        if (self->t) {
            pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
            pact_transport_abort(self->t);
        }
    }
    Py_RETURN_NONE;
}

/* _force_close(exc): asyncio's transports end this way on a fatal error,
 * and asyncio's SSLProtocol calls it on the transport under it (a corrupt
 * record, a handshake or shutdown timeout): what is buffered is dropped,
 * and connection_lost gets exc, so the error reaches the reader instead of
 * a clean end of stream. */
static PyObject *Transport_force_close(TransportObject *self, PyObject *exc)
{
    if (self->orphaned) {
        if (orphan_release(self) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (self->t && !self->lost_exc)
        flush_held(self); /* asyncio had sent them */
    if (self->t && !self->lost_exc) {
        self->closing = 1;
        if (exc != Py_None)
            self->lost_exc = Py_NewRef(exc);
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_transport_abort(self->t);
    }
    Py_RETURN_NONE;
}

static PyObject *Transport_is_closing(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned)
        return PyBool_FromLong(0);
    return PyBool_FromLong(write_side_gone(self));
}

/* Until connection_made's turn pact's reading is held (made_soon): the
 * program's pause and resume are noted for then. */
static PyObject *Transport_is_reading(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->reading_held)
        return PyBool_FromLong(self->t && !self->closing &&
                               !self->paused_meanwhile &&
                               !pact_transport_is_closing(self->t));
    return PyBool_FromLong(self->t && !self->closing &&
                           pact_transport_is_reading(self->t));
}

static PyObject *Transport_pause_reading(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->reading_held)
        self->paused_meanwhile = 1;
    else if (self->t && !self->closing)
        pact_transport_pause_reading(self->t); /* -EALREADY: a no-op */
    Py_RETURN_NONE;
}

static PyObject *Transport_resume_reading(TransportObject *self, PyObject *unused)
{
    (void)unused;
    if (self->reading_held) {
        self->paused_meanwhile = 0;
    } else if (self->t && !self->closing && !pact_transport_is_reading(self->t)) {
        /* What pact hands over now comes in this iteration: an EOF
         * behind it waits for the next one (see "The peer's end"). */
        self->read_iteration = self->loop->iteration;
        pact_transport_resume_reading(self->t);
        if (self->eof_held == EOF_PAUSED)
            hold_eof(self);
    }
    Py_RETURN_NONE;
}

static PyObject *Transport_get_write_buffer_size(TransportObject *self,
                                                 PyObject *unused)
{
    (void)unused;
    flush_held(self); /* asyncio's answer counts what it could not send */
    return PyLong_FromSize_t(self->t ? pact_transport_write_buffer_size(self->t) : 0);
}

static PyObject *Transport_get_write_buffer_limits(TransportObject *self,
                                                   PyObject *unused)
{
    (void)unused;
    size_t high = 64 * 1024, low = 16 * 1024;
    if (self->t) {
        pact_transport_get_write_buffer_limits(self->t, &high, &low);
    }
    return Py_BuildValue("(nn)", (Py_ssize_t)low, (Py_ssize_t)high);
}

static PyObject *Transport_set_write_buffer_limits(TransportObject *self,
                                                   PyObject *args,
                                                   PyObject *kwds)
{
    Py_ssize_t high, low;
    if (pact_py_write_buffer_limits(args, kwds, &high, &low) < 0)
        return NULL;
    flush_held(self); /* held under the old marks */
    if (self->t) {
        /* The marks as asyncio's rule made them, a high of 0 included
         * (pause whenever the buffer becomes non-empty). */
        int r = pact_transport_set_write_marks(self->t, (size_t)high,
                                               (size_t)low);
        if (r < 0) {
            errno = -r;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    Py_RETURN_NONE;
}

/* ---- sendfile ----------------------------------------------------------- */

/* A sendfile in the transport's write queue: pact reads the file through
 * its own duplicate of the fd, so a caller that closes its file (after a
 * cancel, say) cannot make pact read whatever file takes the number. */
typedef struct {
    TransportObject *transport;
    PyObject *done; /* done(error, sent): error 0 or a negative errno */
    int file_fd;
} sendfile_call;

static void on_sendfile_done(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    (void)loop;
    sendfile_call *call = user;
    TransportObject *self = call->transport;
    close(call->file_fd);
    self->sendfile_active = 0;
    long long err = c->result < 0 ? (long long)c->result : 0;
    LoopObject *lo = self->loop;
    pact_py_callback_enter(lo);
    PyObject *r = PyObject_CallFunction(call->done, "LK", err,
                                        (unsigned long long)c->transferred);
    pact_py_callback_leave(lo);
    if (!r) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
            PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            pact_py_keep_exception(self->loop);
        else
            PyErr_WriteUnraisable(call->done);
    }
    Py_XDECREF(r);
    Py_DECREF(call->done);
    PyMem_Free(call);
    Py_DECREF(self);
}

/* _sendfile(file_fd, offset, count, done): queues count bytes (0: to the
 * end) of the file from offset behind what was written, for pact's
 * sendfile(2) path; done(error, sent) is called when it is over. Until
 * then write() is refused, as asyncio refuses it during a sendfile. */
static PyObject *Transport_sendfile(TransportObject *self, PyObject *args)
{
    int file_fd;
    long long offset;
    unsigned long long count;
    PyObject *done;
    if (!PyArg_ParseTuple(args, "iLKO:_sendfile", &file_fd, &offset, &count,
                          &done))
        return NULL;
    if (write_side_gone(self) || self->orphaned) {
        PyErr_SetString(PyExc_RuntimeError, "Transport is closing");
        return NULL;
    }
    if (self->sendfile_active) {
        PyErr_SetString(PyExc_RuntimeError,
                        "unable to write; sendfile is in progress");
        return NULL;
    }
    flush_held(self);
    if (write_side_gone(self)) {
        PyErr_SetString(PyExc_RuntimeError, "Transport is closing");
        return NULL;
    }
    sendfile_call *call = PyMem_Malloc(sizeof *call);
    if (!call)
        return PyErr_NoMemory();
    call->file_fd = fcntl(file_fd, F_DUPFD_CLOEXEC, 0);
    if (call->file_fd < 0) {
        PyMem_Free(call);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int r = pact_transport_sendfile(self->t, call->file_fd, (int64_t)offset,
                                    (size_t)count, on_sendfile_done, call);
    if (r < 0) {
        close(call->file_fd);
        PyMem_Free(call);
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    call->transport = (TransportObject *)Py_NewRef((PyObject *)self);
    call->done = Py_NewRef(done);
    self->sendfile_active = 1;
    Py_RETURN_NONE;
}

static PyObject *Transport_set_protocol(TransportObject *self, PyObject *protocol)
{
    int buffered = is_buffered(protocol);
    if (buffered < 0)
        return NULL;
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    if (self->t && buffered != self->buffered) {
        self->buffered = buffered;
        pact_transport_set_protocol(self->t,
                                    buffered ? &buffered_protocol : &plain_protocol,
                                    self);
    }
    Py_RETURN_NONE;
}

static PyObject *Transport_repr(TransportObject *self)
{
    int fd = self->t ? pact_transport_fd(self->t) : -1;
    if (self->orphaned)
        fd = self->orphan_fd >= 0 ? self->orphan_fd
                                  : PyObject_AsFileDescriptor(self->sock);
    if (fd < 0) {
        PyErr_Clear();
        fd = -1;
    }
    return PyUnicode_FromFormat("<%s fd=%d %s>", Py_TYPE(self)->tp_name, fd,
                                self->orphaned ? "open"
                                : !self->t ? "closed"
                                : write_side_gone(self) ? "closing" : "open");
}

static int Transport_traverse(TransportObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->server);
    return pact_py_endpoint_traverse(PACT_PY_ENDPOINT(self), visit, arg);
}

static int Transport_clear(TransportObject *self)
{
    pact_py_endpoint_clear(PACT_PY_ENDPOINT(self));
    Py_CLEAR(self->server);
    return 0;
}

static void Transport_dealloc(TransportObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(self);
    if (self->held) { /* never while listed: defensive */
        for (int i = 0; i < self->held->n; i++)
            Py_CLEAR(self->held->items[i]);
        held_give_back(self->loop, self->held);
        self->held = NULL;
    }
    Transport_clear(self);
    pact_py_endpoint_free(PACT_PY_ENDPOINT(self));
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Transport_methods[] = {
    {"_open", (PyCFunction)Transport_open, METH_VARARGS | METH_CLASS,
     "_open(loop, sock, protocol, waiter, extra, server) -> transport"},
    {"write", (PyCFunction)Transport_write, METH_O, NULL},
    {"writelines", (PyCFunction)Transport_writelines, METH_O, NULL},
    {"write_eof", (PyCFunction)Transport_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)Transport_can_write_eof, METH_NOARGS, NULL},
    {"close", (PyCFunction)Transport_close, METH_NOARGS, NULL},
    {"abort", (PyCFunction)Transport_abort, METH_NOARGS, NULL},
    {"_connection_made_turn", (PyCFunction)Transport_connection_made_turn,
     METH_NOARGS, NULL},
    {"_connection_lost_turn", (PyCFunction)Transport_connection_lost_turn,
     METH_NOARGS, NULL},
    {"_force_close", (PyCFunction)Transport_force_close, METH_O, NULL},
    {"is_closing", (PyCFunction)Transport_is_closing, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)Transport_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)Transport_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)Transport_resume_reading, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)Transport_get_write_buffer_size,
     METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Transport_get_write_buffer_limits,
     METH_NOARGS, NULL},
    {"set_write_buffer_limits",
     (PyCFunction)(void (*)(void))Transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_protocol", pact_py_endpoint_get_protocol, METH_NOARGS, NULL},
    {"get_extra_info",
     (PyCFunction)(void (*)(void))pact_py_endpoint_get_extra_info,
     METH_FASTCALL | METH_KEYWORDS,
     "get_extra_info(name, default=None): what asyncio's transports tell"},
    {"set_protocol", (PyCFunction)Transport_set_protocol, METH_O, NULL},
    {"_get_loop", (PyCFunction)(void (*)(void))pact_py_endpoint_get_loop,
     METH_NOARGS, NULL},
    {"_orphan", (PyCFunction)Transport_orphan, METH_NOARGS,
     "_orphan(): the loop is closing; stay open as asyncio's transports do"},
    {"_sendfile", (PyCFunction)Transport_sendfile, METH_VARARGS,
     "_sendfile(file_fd, offset, count, done): queue a file range"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Transport_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TransportObject, weakreflist),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(TransportObject, dict), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *get_kind(TransportObject *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->kind);
}

static PyGetSetDef Transport_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"_kind", (getter)get_kind, NULL, "pact_stream_kind (0 socket, 1 read pipe, 2 write pipe)", NULL},
    {"_loop", pact_py_endpoint_get_loop, NULL,
     "the loop (asyncio's transports have it; its sendfile fallback reads it)",
     NULL},
    {"_protocol_paused", pact_py_endpoint_get_protocol_paused, NULL,
     "pause_writing() was delivered and resume_writing() not yet", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Transport_slots[] = {
    {Py_tp_members, Transport_members},
    {Py_tp_getset, Transport_getset},
    {Py_tp_doc, "A pact stream transport (asyncio.Transport)."},
    {Py_tp_dealloc, Transport_dealloc},
    {Py_tp_finalize, Transport_finalize},
    {Py_tp_traverse, Transport_traverse},
    {Py_tp_clear, Transport_clear},
    {Py_tp_methods, Transport_methods},
    {Py_tp_repr, Transport_repr},
    {0, NULL},
};

static PyType_Spec Transport_spec = {
    .name = "pact._pact.Transport",
    .basicsize = sizeof(TransportObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Transport_slots,
};

int pact_py_transport_init(PyObject *module)
{
    static const pact_py_name names[] = {
        {&method.connection_made, "connection_made"},
        {&method.data_received, "data_received"},
        {&method.eof_received, "eof_received"},
        {&method.connection_lost, "connection_lost"},
        {&method.pause_writing, "pause_writing"},
        {&method.resume_writing, "resume_writing"},
        {&method.get_buffer, "get_buffer"},
        {&method.buffer_updated, "buffer_updated"},
    };
    if (pact_py_intern_names(names, sizeof names / sizeof names[0]) < 0)
        return -1;
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (!asyncio)
        return -1;
    PyObject *base = PyObject_GetAttrString(asyncio, "Transport");
    Py_DECREF(asyncio);
    if (!base)
        return -1;
    PyObject *bases = PyTuple_Pack(1, base);
    Py_DECREF(base);
    if (!bases)
        return -1;
    transport_type = pact_py_add_type(module, &Transport_spec, bases);
    Py_DECREF(bases);
    return transport_type ? 0 : -1;
}
