/* SPDX-License-Identifier: MIT */
/* add_reader / add_writer / remove_* with asyncio's selector semantics on
 * pact's persistent watchers (pact_watch).
 *
 * One watcher per fd, for the union of its reader's and writer's events
 * (changed in place with pact_op_set_events, cancelled when neither is
 * left). pact_watch is level-triggered: a reported fd is reported again at
 * the next wait, which comes after the callbacks ran — so a callback that
 * read part of the data is called again next iteration, and never twice in
 * one. Removal takes effect at once: the handle is cancelled (a report
 * already queued is skipped), and pact never delivers a readiness for
 * events that are no longer watched or for a watcher cancelled. */
#include "pact_py.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>

typedef struct pact_py_watcher {
    LoopObject *owner;
    int fd;
    PyObject *reader; /* asyncio Handles, or NULL */
    PyObject *writer;
    pact_op op;       /* the pact_watch for the current interest, or 0 */
    unsigned op_events;
} pact_py_watcher;

static unsigned wanted(const pact_py_watcher *w)
{
    return (w->reader ? POLLIN : 0) | (w->writer ? POLLOUT : 0);
}

static pact_py_watcher *watcher_for(LoopObject *self, int fd, int create)
{
    if ((size_t)fd < self->watchers_cap && self->watchers[fd])
        return self->watchers[fd];
    if (!create)
        return NULL;
    if ((size_t)fd >= self->watchers_cap) {
        size_t cap = self->watchers_cap ? self->watchers_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        pact_py_watcher **t = PyMem_Realloc(self->watchers, cap * sizeof *t);
        if (!t) {
            PyErr_NoMemory();
            return NULL;
        }
        for (size_t i = self->watchers_cap; i < cap; i++)
            t[i] = NULL;
        self->watchers = t;
        self->watchers_cap = cap;
    }
    pact_py_watcher *w = PyMem_Calloc(1, sizeof *w);
    if (!w) {
        PyErr_NoMemory();
        return NULL;
    }
    w->fd = fd;
    self->watchers[fd] = w;
    return w;
}

static void watch_cb(pact_loop *loop, const pact_completion *c, void *user);

static int set_oserror(int64_t err)
{
    errno = (int)-err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* Makes the pact watcher follow the interest: started, changed in place,
 * or cancelled when nothing is wanted. 0, or -1 with OSError. */
static int resync(LoopObject *self, pact_py_watcher *w)
{
    unsigned ev = wanted(w);
    if (!ev) {
        if (w->op)
            pact_op_cancel(self->loop, w->op);
        w->op = 0;
        return 0;
    }
    if (w->op) {
        if (w->op_events == ev)
            return 0;
        int r = pact_op_set_events(self->loop, w->op, ev);
        if (r == 0) {
            w->op_events = ev;
            return 0;
        }
        w->op = 0; /* ended meanwhile (its final completion is on the way) */
    }
    pact_op op = pact_watch(self->loop, w->fd, ev, watch_cb, w);
    if (op < 0)
        return set_oserror(op);
    w->op = op;
    w->op_events = ev;
    return 0;
}

/* asyncio's _process_events for one side: a cancelled handle unregisters,
 * a live one runs. asyncio appends it to the ready queue behind the
 * handles that were ready before the wait, and runs it in the same
 * iteration; here those handles ran already (in the loop's after-wait
 * hook), and the I/O callbacks of the wait run now, in pact's order: the
 * reader is called before the fd is polled again, as a level-triggered
 * selector calls it. */
static void deliver(LoopObject *self, PyObject **side)
{
    PyObject *h = *side;
    int c = pact_py_handle_cancelled(h);
    if (c < 0) {
        PyErr_WriteUnraisable(h);
        return;
    }
    if (c) {
        *side = NULL;
        Py_DECREF(h);
        return;
    }
    Py_INCREF(h); /* the callback may remove or replace its own side */
    pact_py_callback_enter(self);
    c = pact_py_handle_run(self, h);
    pact_py_callback_leave(self); /* sends what it wrote */
    Py_DECREF(h);
    if (c < 0)
        pact_py_keep_exception(self); /* raised after the iteration */
}

static void watch_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    pact_py_watcher *w = user; /* watchers live until the pact loop closed */
    LoopObject *self = w->owner;
    if (c->op != w->op)
        return; /* the final completion of a watcher replaced or removed */
    if (!c->more) {
        /* Cancelled, or the fd is gone (EBADF): report nothing, as epoll
         * forgets a closed fd; remove_* still works, add_* starts anew. */
        w->op = 0;
        return;
    }
    if (self->closing)
        return;
    unsigned revents = (unsigned)c->result;
    /* As asyncio's EpollSelector: an error or hang-up wakes both sides. */
    if (w->reader && (revents & (POLLIN | POLLPRI | POLLERR | POLLHUP | POLLNVAL)))
        deliver(self, &w->reader);
    if (w->writer && (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)))
        deliver(self, &w->writer);
    /* A cancelled handle unregistered its side: watch only what is left. */
    if (w->op && wanted(w) != w->op_events && resync(self, w) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
}

/* The fd of obj as asyncio's selector loop finds it (selectors'
 * _fileobj_to_fd): an int, or int(obj.fileno()); an object without a
 * usable fileno() or a negative fd is a ValueError. An fd past INT_MAX
 * comes back as LLONG_MAX: never registered. 0, or -1 with an exception. */
static int fileobj_to_fd(PyObject *obj, long long *fd)
{
    PyObject *num;
    if (PyLong_Check(obj)) {
        num = Py_NewRef(obj);
    } else {
        PyObject *r = PyObject_CallMethod(obj, "fileno", NULL);
        num = r ? PyNumber_Long(r) : NULL;
        Py_XDECREF(r);
        if (!num) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
                PyErr_ExceptionMatches(PyExc_TypeError) ||
                PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "Invalid file object: %R", obj);
            }
            return -1;
        }
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(num, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(num);
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && v < 0)) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %S", num);
        Py_DECREF(num);
        return -1;
    }
    Py_DECREF(num);
    *fd = overflow > 0 || v > INT_MAX ? LLONG_MAX : v;
    return 0;
}

/* (fd, callback, *args) -> the fd and a new asyncio Handle. */
static PyObject *make_handle(LoopObject *self, PyObject *const *args,
                             Py_ssize_t nargs, const char *func, int *fd)
{
    if (self->closed || !self->loop) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at least 2 arguments", func);
        return NULL;
    }
    long long n;
    if (fileobj_to_fd(args[0], &n) < 0)
        return NULL;
    if (n > INT_MAX) {
        /* As the selector's register() says it. */
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return NULL;
    }
    *fd = (int)n;
    PyObject *cargs = PyTuple_New(nargs - 2);
    if (!cargs)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(cargs, i - 2, args[i]);
    }
    PyObject *h = pact_py_handle_new(self, args[1], cargs, Py_None);
    Py_DECREF(cargs);
    return h;
}

static PyObject *add_side(LoopObject *self, PyObject *const *args,
                          Py_ssize_t nargs, int writer)
{
    int fd;
    PyObject *h = make_handle(self, args, nargs,
                              writer ? "_add_writer" : "_add_reader", &fd);
    if (!h)
        return NULL;
    pact_py_watcher *w = watcher_for(self, fd, 1);
    if (!w) {
        Py_DECREF(h);
        return NULL;
    }
    w->owner = self;
    PyObject **side = writer ? &w->writer : &w->reader;
    PyObject *old = *side;
    *side = h;
    Py_INCREF(h);
    if (old) {
        PyObject *r = PyObject_CallMethod(old, "cancel", NULL);
        Py_XDECREF(r);
        Py_DECREF(old);
        if (!r) {
            Py_DECREF(h);
            return NULL;
        }
    }
    if (resync(self, w) < 0) {
        /* A bad fd: unregister, as the selector's register() would raise. */
        *side = NULL;
        Py_DECREF(h);
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

PyObject *pact_py_add_reader(LoopObject *self, PyObject *const *args,
                             Py_ssize_t nargs)
{
    return add_side(self, args, nargs, 0);
}

PyObject *pact_py_add_writer(LoopObject *self, PyObject *const *args,
                             Py_ssize_t nargs)
{
    return add_side(self, args, nargs, 1);
}

static PyObject *remove_side(LoopObject *self, PyObject *fdobj, int writer)
{
    if (self->closed || !self->loop)
        Py_RETURN_FALSE;
    long long fd;
    if (fileobj_to_fd(fdobj, &fd) < 0)
        return NULL;
    if (fd > INT_MAX)
        Py_RETURN_FALSE; /* never registered */
    pact_py_watcher *w = watcher_for(self, (int)fd, 0);
    PyObject **side = w ? (writer ? &w->writer : &w->reader) : NULL;
    if (!side || !*side)
        Py_RETURN_FALSE;
    PyObject *h = *side;
    *side = NULL;
    /* Cancelled: a report of this fd already in the ready queue is skipped. */
    PyObject *r = PyObject_CallMethod(h, "cancel", NULL);
    Py_DECREF(h);
    if (!r)
        return NULL;
    Py_DECREF(r);
    if (resync(self, w) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

PyObject *pact_py_remove_reader(LoopObject *self, PyObject *fd)
{
    return remove_side(self, fd, 0);
}

PyObject *pact_py_remove_writer(LoopObject *self, PyObject *fd)
{
    return remove_side(self, fd, 1);
}

/* asyncio's _add_callback: a live handle joins the ready queue. */
PyObject *pact_py_add_callback(LoopObject *self, PyObject *handle)
{
    int c = pact_py_handle_cancelled(handle);
    if (c < 0)
        return NULL;
    if (!c && pact_py_ready_push(self, handle) < 0)
        return NULL;
    Py_RETURN_NONE;
}

void pact_py_watchers_free(LoopObject *self)
{
    for (size_t fd = 0; fd < self->watchers_cap; fd++) {
        pact_py_watcher *w = self->watchers[fd];
        if (!w)
            continue;
        self->watchers[fd] = NULL;
        Py_XDECREF(w->reader);
        Py_XDECREF(w->writer);
        PyMem_Free(w);
    }
    PyMem_Free(self->watchers);
    self->watchers = NULL;
    self->watchers_cap = 0;
}

int pact_py_watchers_traverse(LoopObject *self, visitproc visit, void *arg)
{
    for (size_t fd = 0; fd < self->watchers_cap; fd++) {
        pact_py_watcher *w = self->watchers[fd];
        if (w) {
            Py_VISIT(w->reader);
            Py_VISIT(w->writer);
        }
    }
    return 0;
}

/* tp_clear: drops the handles (the watchers stay until close). */
void pact_py_watchers_clear(LoopObject *self)
{
    for (size_t fd = 0; fd < self->watchers_cap; fd++) {
        pact_py_watcher *w = self->watchers[fd];
        if (w) {
            Py_CLEAR(w->reader);
            Py_CLEAR(w->writer);
        }
    }
}
