/* SPDX-License-Identifier: MIT */
/* What pact._pact's transport objects share (endpoint.h): one way of
 * calling the protocol, reporting what it raised, setting the waiter and
 * ending, for the stream and the datagram transport alike. */
#include "endpoint.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES */
#define LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

LoopObject *pact_py_open_loop(PyObject *loop)
{
    if (!PyObject_TypeCheck(loop, pact_py_loop_type)) {
        PyErr_SetString(PyExc_TypeError, "loop must be a pact loop");
        return NULL;
    }
    LoopObject *lo = (LoopObject *)loop;
    if (lo->closed || !lo->loop) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    return lo;
}

int pact_py_endpoint_init(pact_py_endpoint *self, PyObject *extra,
                          LoopObject *loop, PyObject *protocol,
                          PyObject *sock, PyObject *waiter)
{
    self->orphan_fd = -1;
    self->extra_slot = Py_NewRef(extra);
    self->loop = (LoopObject *)Py_NewRef((PyObject *)loop);
    self->protocol = Py_NewRef(protocol);
    self->sock = Py_NewRef(sock);
    if (waiter != Py_None)
        self->waiter = Py_NewRef(waiter);
    self->context = PyContext_CopyCurrent();
    return self->context ? 0 : -1;
}

/* Debug mode: asyncio times every callback it runs and logs those slower
 * than loop.slow_callback_duration; its transports' I/O callbacks are
 * handles there, pact calls the protocol from C, so the report is made
 * here. */
static void report_slow_call(pact_py_endpoint *self, const char *protocol,
                             PyObject *name, double seconds)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *limit = PyObject_GetAttrString((PyObject *)self->loop,
                                             "slow_callback_duration");
    double lim = limit ? PyFloat_AsDouble(limit) : -1;
    Py_XDECREF(limit);
    if (!PyErr_Occurred() && lim >= 0 && seconds >= lim) {
        PyObject *log = PyImport_ImportModule("asyncio.log");
        PyObject *logger = log ? PyObject_GetAttrString(log, "logger") : NULL;
        PyObject *what = PyUnicode_FromFormat("%R: %s.%U()", (PyObject *)self,
                                              protocol, name);
        PyObject *r = logger && what
                          ? PyObject_CallMethod(logger, "warning", "sOd",
                                                "Executing %s took %.3f seconds",
                                                what, seconds)
                          : NULL;
        Py_XDECREF(r);
        Py_XDECREF(what);
        Py_XDECREF(logger);
        Py_XDECREF(log);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(et, ev, tb);
}

PyObject *pact_py_endpoint_call(pact_py_endpoint *self, PyObject *name,
                                PyObject *a1, PyObject *a2)
{
    if (!self->protocol)
        Py_RETURN_NONE;
    /* pause_writing comes from inside write(), maybe from inside another
     * protocol call of this endpoint: the context is entered already. */
    int enter = self->context && self->in_context == 0;
    if (enter && PyContext_Enter(self->context) < 0)
        return NULL;
    self->in_context++;
    LoopObject *loop = self->loop;
    double t0 = loop->debug ? pact_now() / 1e9 : 0;
    const char *protocol = Py_TYPE(self->protocol)->tp_name;
    PyObject *argv[3] = {self->protocol, a1, a2};
    size_t nargs = a2 ? 3 : a1 ? 2 : 1;
    pact_py_callback_enter(loop);
    PyObject *r = PyObject_VectorcallMethod(
        name, argv, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (loop->debug)
        report_slow_call(self, protocol, name, pact_now() / 1e9 - t0);
    self->in_context--;
    if (enter) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyContext_Exit(self->context);
        PyErr_Restore(et, ev, tb);
    }
    pact_py_callback_leave(loop); /* sends what it wrote */
    return r;
}

/* The current exception taken (cleared), normalized, with its traceback:
 * a new reference, or Py_None's. NULL for SystemExit and
 * KeyboardInterrupt, which are kept for the loop to raise after its
 * iteration. */
static PyObject *take_exception(LoopObject *loop)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        pact_py_keep_exception(loop);
        return NULL;
    }
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb && ev)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    return ev ? ev : Py_NewRef(Py_None);
}

/* exc to the loop's exception handler with message, and the transport
 * and its protocol unless transport is NULL. */
static void report(LoopObject *loop, PyObject *message, PyObject *exc,
                   PyObject *transport, PyObject *protocol)
{
    PyObject *ctx = message ? Py_BuildValue("{s:O,s:O}", "message", message,
                                            "exception", exc)
                            : NULL;
    if (ctx && transport &&
        (PyDict_SetItemString(ctx, "transport", transport) < 0 ||
         PyDict_SetItemString(ctx, "protocol", protocol ? protocol : Py_None) < 0))
        Py_CLEAR(ctx);
    if (ctx) {
        PyObject *r = PyObject_CallMethod((PyObject *)loop,
                                          "call_exception_handler", "O", ctx);
        Py_DECREF(ctx);
        Py_XDECREF(r);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(transport ? transport : (PyObject *)loop);
}

void pact_py_report_exception(LoopObject *loop, PyObject *message,
                               PyObject *transport, PyObject *protocol)
{
    PyObject *exc = take_exception(loop);
    if (exc) {
        report(loop, message, exc, transport, protocol);
        Py_DECREF(exc);
    }
}

void pact_py_endpoint_report(pact_py_endpoint *self, PyObject *message)
{
    pact_py_report_exception(self->loop, message, (PyObject *)self,
                             self->protocol);
}

void pact_py_endpoint_callback_failed(pact_py_endpoint *self, PyObject *name,
                                      PyObject *a1, PyObject *a2)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *callback = self->protocol ? PyObject_GetAttr(self->protocol, name)
                                        : NULL;
    PyObject *args = !callback ? NULL
                     : a2      ? PyTuple_Pack(2, a1, a2)
                     : a1      ? PyTuple_Pack(1, a1)
                               : PyTuple_New(0);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    int r = args ? pact_py_report_as_handle(self->loop, callback, args,
                                            self->context ? self->context
                                                          : Py_None)
                 : -1;
    Py_XDECREF(callback);
    Py_XDECREF(args);
    if (r < 0) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
            PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            pact_py_keep_exception(self->loop);
        else
            PyErr_WriteUnraisable((PyObject *)self);
    }
}

/* asyncio.log.logger.debug("%r: %s", transport, message, exc_info=exc) */
static void log_debug(PyObject *transport, PyObject *message, PyObject *exc)
{
    PyObject *log = PyImport_ImportModule("asyncio.log");
    PyObject *logger = log ? PyObject_GetAttrString(log, "logger") : NULL;
    PyObject *debug = logger ? PyObject_GetAttrString(logger, "debug") : NULL;
    PyObject *args = debug ? Py_BuildValue("(sOO)", "%r: %s", transport,
                                           message)
                           : NULL;
    PyObject *kwargs = args ? Py_BuildValue("{s:O}", "exc_info", exc) : NULL;
    PyObject *r = kwargs ? PyObject_Call(debug, args, kwargs) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(debug);
    Py_XDECREF(logger);
    Py_XDECREF(log);
    if (!r)
        PyErr_WriteUnraisable(transport);
}

void pact_py_endpoint_fatal_error(pact_py_endpoint *self, const char *message,
                                  int ends)
{
    PyObject *exc = take_exception(self->loop);
    if (!exc)
        return;
    if (ends && exc != Py_None && !self->lost_exc)
        self->lost_exc = Py_NewRef(exc);
    PyObject *msg = PyUnicode_FromString(message);
    if (!msg) {
        PyErr_WriteUnraisable((PyObject *)self);
    } else if (PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (self->loop->debug)
            log_debug((PyObject *)self, msg, exc);
    } else {
        report(self->loop, msg, exc, (PyObject *)self, self->protocol);
    }
    Py_XDECREF(msg);
    Py_DECREF(exc);
}

void pact_py_endpoint_made(pact_py_endpoint *self)
{
    if (!self->waiter)
        return;
    PyObject *done = PyObject_CallMethod(self->waiter, "cancelled", NULL);
    int cancelled = done ? PyObject_IsTrue(done) : -1;
    Py_XDECREF(done);
    if (cancelled == 0) {
        PyObject *s = PyObject_CallMethod(self->waiter, "set_result", "O",
                                          Py_None);
        Py_XDECREF(s);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)self);
    Py_CLEAR(self->waiter);
}

void pact_py_endpoint_lost(pact_py_endpoint *self, const char *method, int err)
{
    /* pact closed the fd: the socket object must not close that number
     * again (it may be someone else's by now). */
    if (self->sock) {
        PyObject *d = PyObject_CallMethod(self->sock, method, NULL);
        Py_XDECREF(d);
        if (!d)
            PyErr_Clear();
    }
    if (self->waiter && self->made_turn != PACT_PY_MADE_QUEUED) {
        /* Lost before connection_made: the caller's await fails. */
        PyObject *done = PyObject_CallMethod(self->waiter, "done", NULL);
        int is_done = done ? PyObject_IsTrue(done) : 1;
        Py_XDECREF(done);
        if (!is_done) {
            PyObject *e = pact_py_exception_for(err ? err : -ECONNABORTED);
            PyObject *s = e ? PyObject_CallMethod(self->waiter, "set_exception",
                                                  "O", e)
                            : NULL;
            Py_XDECREF(e);
            Py_XDECREF(s);
        }
        if (PyErr_Occurred())
            PyErr_Clear();
        Py_CLEAR(self->waiter);
    }
}

/* A handle calling the endpoint's method *name (interned on first use)
 * into the ready queue: 0, or -1 with the exception cleared. */
static int queue_turn(pact_py_endpoint *self, PyObject **name,
                      const char *text)
{
    static PyObject *no_args;
    if (!*name && !(*name = PyUnicode_InternFromString(text)))
        goto failed;
    if (!no_args && !(no_args = PyTuple_New(0)))
        goto failed;
    PyObject *turn = PyObject_GetAttr((PyObject *)self, *name);
    if (!turn)
        goto failed;
    /* Not the endpoint's context: the protocol call enters that one. */
    PyObject *h = pact_py_handle_new(self->loop, turn, no_args, Py_None);
    Py_DECREF(turn);
    if (!h)
        goto failed;
    int r = pact_py_ready_push(self->loop, h);
    Py_DECREF(h);
    if (r < 0)
        goto failed;
    return 0;
failed:
    PyErr_Clear();
    return -1;
}

void pact_py_endpoint_made_soon(pact_py_endpoint *self)
{
    static PyObject *name;
    if (self->made_turn == PACT_PY_MADE_NONE && !self->loop->closing &&
        queue_turn(self, &name, "_connection_made_turn") == 0)
        self->made_turn = PACT_PY_MADE_QUEUED;
}

void pact_py_endpoint_lost_soon(pact_py_endpoint *self)
{
    static PyObject *name;
    if (self->lost_turn == PACT_PY_LOST_NONE && !self->loop->closing &&
        queue_turn(self, &name, "_connection_lost_turn") == 0)
        self->lost_turn = PACT_PY_LOST_QUEUED;
}

PyObject *pact_py_exception_for(int err)
{
    if (err == 0)
        Py_RETURN_NONE;
    /* OSError(errno, text) picks the subclass (ConnectionResetError...). */
    return PyObject_CallFunction(PyExc_OSError, "is", -err, strerror(-err));
}

PyObject *pact_py_drop_write(unsigned *count)
{
    /* asyncio's count starts at 1 when the connection is lost. */
    if (++*count >= LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
        PyObject *log = PyImport_ImportModule("asyncio.log");
        PyObject *logger = log ? PyObject_GetAttrString(log, "logger") : NULL;
        PyObject *r = logger ? PyObject_CallMethod(logger, "warning", "s",
                                                   "socket.send() raised exception.")
                             : NULL;
        Py_XDECREF(r);
        Py_XDECREF(logger);
        Py_XDECREF(log);
        if (!r)
            return NULL;
    }
    Py_RETURN_NONE;
}

int pact_py_check_data(PyObject *data)
{
    if (PyBytes_Check(data) || PyByteArray_Check(data) ||
        PyMemoryView_Check(data))
        return 0;
    /* type(data).__name__, as asyncio's message names it */
    const char *name = Py_TYPE(data)->tp_name;
    const char *dot = strrchr(name, '.');
    PyErr_Format(PyExc_TypeError,
                 "data argument must be a bytes-like object, not '%.100s'",
                 dot ? dot + 1 : name);
    return -1;
}

int pact_py_write_buffer_limits(PyObject *args, PyObject *kwds,
                                Py_ssize_t *high, Py_ssize_t *low)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *ho = Py_None, *lo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits",
                                     kwlist, &ho, &lo))
        return -1;
    /* asyncio's rule for the defaults. */
    if (ho == Py_None) {
        if (lo == Py_None) {
            *high = 64 * 1024;
        } else {
            *low = PyLong_AsSsize_t(lo);
            if (*low == -1 && PyErr_Occurred())
                return -1;
            *high = 4 * *low;
        }
    } else {
        *high = PyLong_AsSsize_t(ho);
        if (*high == -1 && PyErr_Occurred())
            return -1;
    }
    if (lo == Py_None) {
        /* high // 4, rounded down as Python's // (the message of a
         * negative high names the same low as asyncio's). */
        *low = *high >= 0 ? *high / 4 : -((3 - *high) / 4);
    } else {
        *low = PyLong_AsSsize_t(lo);
        if (*low == -1 && PyErr_Occurred())
            return -1;
    }
    if (!(*high >= *low && *low >= 0)) {
        PyErr_Format(PyExc_ValueError,
                     "high (%zd) must be >= low (%zd) must be >= 0", *high,
                     *low);
        return -1;
    }
    return 0;
}

int pact_py_endpoint_traverse(pact_py_endpoint *self, visitproc visit,
                              void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->extra_slot);
    Py_VISIT(self->loop);
    Py_VISIT(self->protocol);
    Py_VISIT(self->sock);
    Py_VISIT(self->context);
    Py_VISIT(self->waiter);
    Py_VISIT(self->lost_exc);
    Py_VISIT(self->dict);
    return 0;
}

void pact_py_endpoint_clear(pact_py_endpoint *self)
{
    /* Never while pact holds the endpoint: self_ref keeps it reachable. */
    Py_CLEAR(self->extra_slot);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->context);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->lost_exc);
    Py_CLEAR(self->dict);
}

void pact_py_endpoint_free(pact_py_endpoint *self)
{
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->orphan_fd >= 0) {
        close(self->orphan_fd);
        self->orphan_fd = -1;
    }
    pact_py_endpoint_clear(self);
    Py_CLEAR(self->sock);
    Py_CLEAR(self->loop);
}

PyObject *pact_py_endpoint_get_protocol(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *protocol = PACT_PY_ENDPOINT(self)->protocol;
    return Py_NewRef(protocol ? protocol : Py_None);
}

/* asyncio's BaseTransport.get_extra_info(name, default=None) is
 * self._extra.get(name, default) in Python: a function call that aiohttp
 * makes twice per request. Here the dict is read directly; an _extra that
 * was replaced by something else than a dict is asked as asyncio asks it. */
PyObject *pact_py_endpoint_get_extra_info(PyObject *self,
                                          PyObject *const *args,
                                          Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"name", "default"};
    PyObject *given[2] = {NULL, NULL};
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "get_extra_info() takes from 2 to 3 positional "
                     "arguments but %zd were given", nargs + 1);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        given[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int j = 0; j < 2; j++)
            if (PyUnicode_CompareWithASCIIString(kw, names[j]) == 0)
                slot = j;
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError,
                         "get_extra_info() got an unexpected keyword "
                         "argument '%U'", kw);
            return NULL;
        }
        if (given[slot]) {
            PyErr_Format(PyExc_TypeError,
                         "get_extra_info() got multiple values for "
                         "argument '%s'", names[slot]);
            return NULL;
        }
        given[slot] = args[nargs + k];
    }
    if (!given[0]) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info() missing 1 "
                                         "required positional argument: 'name'");
        return NULL;
    }
    PyObject *dflt = given[1] ? given[1] : Py_None;
    PyObject *extra = PACT_PY_ENDPOINT(self)->extra_slot;
    if (extra && PyDict_CheckExact(extra)) {
        PyObject *v = PyDict_GetItemWithError(extra, given[0]);
        if (v)
            return Py_NewRef(v);
        return PyErr_Occurred() ? NULL : Py_NewRef(dflt);
    }
    extra = PyObject_GetAttrString(self, "_extra");
    if (!extra)
        return NULL;
    PyObject *v = PyObject_CallMethod(extra, "get", "OO", given[0], dflt);
    Py_DECREF(extra);
    return v;
}

PyObject *pact_py_endpoint_get_loop(PyObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)PACT_PY_ENDPOINT(self)->loop);
}

PyObject *pact_py_endpoint_get_protocol_paused(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(PACT_PY_ENDPOINT(self)->protocol_paused);
}

/* ---- Received bytes -----------------------------------------------------
 *
 * Each delivery (data_received, datagram_received) is a new bytes object,
 * and most protocols let it go when the call returns: asyncio's streams
 * copy it into their buffer, an echo has sent it (sendto and write copy
 * what they cannot send at once). The loop keeps such a bytes object
 * (nobody else holds a reference) as its spare, and the next delivery of a
 * like size, on any transport of the loop, is copied into it instead of
 * into a new one: one malloc and free fewer per delivery. A reference is
 * the only way Python keeps an object (a list or dict, a closure's cell, a
 * memoryview's buffer, a traceback's frame, another thread), so an object
 * whose count is 1 after the call is one nobody can see change. At
 * 100 KiB that is also what made glibc's heap grow and shrink: its top is
 * trimmed (brk) once more than its trim threshold is free there and grown
 * again at the next peak, every new page a page fault; the 100 KiB streams
 * echo spent more CPU on those faults than on its Python code (perf, epoll
 * engine: 5-6 faults per request). A spare is used only for a delivery
 * that fills at least half of it, so a protocol that keeps its data holds
 * at most twice the bytes it was given; and none is kept above
 * RECEIVED_SPARE_MAX.
 *
 * Large receives skip that copy. pact reads a socket whose reads are
 * large (from one of at least LANDING_LARGE; on io_uring such a receive
 * reads by readiness) into memory the binding gives it
 * (pact_loop_set_recv_buffer_hook): the storage of the loop's landing
 * bytes object, LANDING_ROOM bytes; the first such read, and every small
 * one, lands in pact's buffer. A read
 * of at least LANDING_LARGE is handed over in that object as it is, and
 * the object is the landing again if nobody kept it; a smaller read is
 * copied out as above. LANDING_ROOM is the receive buffers' size
 * (PACT_PY_RECEIVE_BYTES), so up to 1 MiB that a socket holds still comes
 * in one data_received on every path. A protocol that keeps a large read
 * it is given (aiohttp's body reader queues them) keeps the whole block,
 * up to 16 times the read's bytes of address space: the pages past the
 * data are given back to the kernel then (landing_kept), since earlier
 * reads into a reused landing, or the heap block malloc handed out, may
 * have made them resident. The read
 * is a recv(2) made while the loop runs the completion, with the GIL held:
 * no kernel write comes later, so the landing needs no lifetime beyond
 * the loop object's (docs/contract.md §2). On io_uring, LANDING_LARGE is
 * also the completion size from which a receive is read by readiness
 * (smaller messages keep the ring's buffers). A transport paused and
 * resumed (asyncio's StreamReader above twice its limit) goes on reading
 * so. */
#define RECEIVED_SPARE_MAX (1024 * 1024)
#define LANDING_ROOM PACT_PY_RECEIVE_BYTES
#define LANDING_LARGE (64 * 1024)

/* What _PyBytes_Resize does to a bytes object nobody else holds: a new
 * size, the terminating NUL, no cached hash. */
static void bytes_reuse(PyObject *b, size_t len)
{
    Py_SET_SIZE(b, (Py_ssize_t)len);
    PyBytes_AS_STRING(b)[len] = '\0';
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)b)->ob_shash = -1;
    _Py_COMP_DIAG_POP
}

/* The kernel copies a read into the landing with `rep movsb`, which on
 * the AMD EPYC the benchmarks run on is about five times slower into a
 * destination 16 bytes past a cache line than 0, 32 or 48 bytes past one
 * (a 100 KiB recv(2) from a loopback TCP socket, 400 of each, timed: 9.1,
 * 45.7, 9.3, 9.7 us; src/unix/op_posix.c says the same of pact's own
 * buffer). A bytes object's data starts 32 bytes into its malloc block,
 * and glibc's blocks are 16-byte aligned. */
static int landing_aligned(PyObject *b)
{
    return (uintptr_t)PyBytes_AS_STRING(b) % 64 != 16;
}

/* A new landing: a few tries for one that is aligned (each kept until
 * the next is made, so that malloc places that one elsewhere). NULL
 * without an exception when none can be made. */
static PyObject *landing_new(void)
{
    PyObject *tries[4] = {NULL};
    PyObject *found = NULL;
    for (int i = 0; i < 4 && !found; i++) {
        tries[i] = PyBytes_FromStringAndSize(NULL, LANDING_ROOM);
        if (!tries[i]) {
            PyErr_Clear();
            break;
        }
        if (landing_aligned(tries[i])) {
            found = tries[i];
            tries[i] = NULL;
        }
    }
    for (int i = 0; i < 4; i++)
        Py_XDECREF(tries[i]);
    return found;
}

/* pact's receive-buffer hook: the landing's storage, or NULL (pact reads
 * into its own buffer) when none can be made or the loop is closing. */
static void *landing_get(pact_loop *l, size_t *len, void *user)
{
    (void)l;
    LoopObject *loop = user;
    if (!loop->landing && (loop->closing || !(loop->landing = landing_new())))
        return NULL;
    *len = LANDING_ROOM;
    return PyBytes_AS_STRING(loop->landing);
}

void pact_py_receive_into_bytes(LoopObject *loop)
{
    /* Set on a new, open loop that does not run: it cannot fail. */
    (void)pact_loop_set_recv_buffer_hook(loop->loop, landing_get, LANDING_LARGE,
                                         loop);
}

PyObject *pact_py_received_bytes(LoopObject *loop, const void *data,
                                 size_t len, size_t *room)
{
    PyObject *b = loop->landing;
    if (b && data == PyBytes_AS_STRING(b) && len >= LANDING_LARGE) {
        loop->landing = NULL; /* nothing else may land in it now */
        bytes_reuse(b, len);
        *room = LANDING_ROOM;
        return b;
    }
    b = loop->spare_bytes;
    size_t spare_room = loop->spare_bytes_room;
    if (b && len <= spare_room && len >= spare_room / 2 && len > 1) {
        loop->spare_bytes = NULL;
        memcpy(PyBytes_AS_STRING(b), data, len);
        bytes_reuse(b, len);
        *room = spare_room;
        return b;
    }
    *room = len;
    return PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
}

/* A landing the protocol kept: its data stays, the whole pages after it
 * go back to the kernel (they read as zeros if touched again; nothing
 * reads them: the object's size ends before them). */
static void landing_kept(PyObject *b)
{
    static uintptr_t page;
    if (!page)
        page = (uintptr_t)sysconf(_SC_PAGESIZE);
    char *data = PyBytes_AS_STRING(b);
    uintptr_t from = ((uintptr_t)data + (uintptr_t)PyBytes_GET_SIZE(b) + 1 +
                      page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)data + LANDING_ROOM) & ~(page - 1);
    if (from < to)
        (void)madvise((void *)from, to - from, MADV_DONTNEED);
}

void pact_py_received_bytes_done(LoopObject *loop, PyObject *b, size_t room)
{
    /* bytes of length 0 and 1 are shared singletons: never a spare */
    if (Py_REFCNT(b) != 1 || room < 2 || loop->closing) {
        if (room == LANDING_ROOM && Py_REFCNT(b) != 1)
            landing_kept(b);
        Py_DECREF(b);
        return;
    }
    if (room == LANDING_ROOM && !loop->landing && landing_aligned(b)) {
        loop->landing = b;
        return;
    }
    if (room > RECEIVED_SPARE_MAX) {
        Py_DECREF(b);
        return;
    }
    PyObject *old = loop->spare_bytes;
    loop->spare_bytes = b;
    loop->spare_bytes_room = room;
    Py_XDECREF(old);
}
