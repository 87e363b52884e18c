/* SPDX-License-Identifier: MIT */
/* pact._pact.Loop: the C half of pact.asyncio.Loop. It owns a pact loop and
 * runs asyncio's iteration (BaseEventLoop._run_once) in C: the ready queue,
 * the timer heap, one pact iteration as the blocking wait, due timers onto
 * the ready queue, then the handles that were ready when the iteration
 * began. The Python subclass (pact/asyncio/_loop.py) adds the parts of the
 * AbstractEventLoop surface that asyncio writes in Python.
 *
 * The GIL is held for everything but the engine's blocking wait: pact's wait
 * hooks release it there and take it back before any callback runs. */
#include "pact_py.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* asyncio.base_events: at most this long in one wait, and the rule for
 * rebuilding the heap when many timers are cancelled. */
#define MAXIMUM_WAIT_SECONDS (24.0 * 3600.0)
#define MIN_SCHEDULED_TIMER_HANDLES 100
#define MIN_CANCELLED_TIMER_HANDLES_FRACTION 0.5


static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* As time.monotonic() computes it, so both agree to the last bit. */
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (ns % 1000000000 == 0)
        return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

static int check_open(LoopObject *self)
{
    if (self->closed || !self->loop) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* ---- ready queue ---------------------------------------------------- */

int pact_py_ready_push(LoopObject *self, PyObject *handle)
{
    if (self->ready_len == self->ready_cap) {
        size_t cap = self->ready_cap ? self->ready_cap * 2 : 64;
        PyObject **q = PyMem_Malloc(cap * sizeof *q);
        if (!q) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < self->ready_len; i++)
            q[i] = self->ready[(self->ready_head + i) & (self->ready_cap - 1)];
        PyMem_Free(self->ready);
        self->ready = q;
        self->ready_cap = cap;
        self->ready_head = 0;
    }
    Py_INCREF(handle);
    self->ready[(self->ready_head + self->ready_len) & (self->ready_cap - 1)] =
        handle;
    self->ready_len++;
    return 0;
}

/* Returns a new reference; the queue must not be empty. */
static PyObject *ready_pop(LoopObject *self)
{
    PyObject *h = self->ready[self->ready_head];
    self->ready_head = (self->ready_head + 1) & (self->ready_cap - 1);
    self->ready_len--;
    return h;
}

static void ready_clear(LoopObject *self)
{
    while (self->ready_len) {
        PyObject *h = ready_pop(self);
        Py_DECREF(h);
    }
}

/* ---- timer heap ----------------------------------------------------- */

static int timer_less(const timer_entry *a, const timer_entry *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_sift_up(timer_entry *h, size_t i)
{
    timer_entry e = h[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_less(&e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static void heap_sift_down(timer_entry *h, size_t len, size_t i)
{
    timer_entry e = h[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= len)
            break;
        if (child + 1 < len && timer_less(&h[child + 1], &h[child]))
            child++;
        if (!timer_less(&h[child], &e))
            break;
        h[i] = h[child];
        i = child;
    }
    h[i] = e;
}

static int timer_push(LoopObject *self, double when, PyObject *handle)
{
    if (self->timers_len == self->timers_cap) {
        size_t cap = self->timers_cap ? self->timers_cap * 2 : 64;
        timer_entry *t = PyMem_Realloc(self->timers, cap * sizeof *t);
        if (!t) {
            PyErr_NoMemory();
            return -1;
        }
        self->timers = t;
        self->timers_cap = cap;
    }
    Py_INCREF(handle);
    self->timers[self->timers_len] =
        (timer_entry){.when = when, .seq = self->timer_seq++, .handle = handle};
    heap_sift_up(self->timers, self->timers_len++);
    return 0;
}

/* Removes the earliest timer; returns its handle (a new reference). */
static PyObject *timer_pop(LoopObject *self)
{
    PyObject *h = self->timers[0].handle;
    self->timers[0] = self->timers[--self->timers_len];
    if (self->timers_len)
        heap_sift_down(self->timers, self->timers_len, 0);
    return h;
}

static void timers_clear(LoopObject *self)
{
    size_t n = self->timers_len;
    self->timers_len = 0;
    for (size_t i = 0; i < n; i++)
        Py_DECREF(self->timers[i].handle);
    /* and those taken from the heap for an iteration that raised */
    n = self->due_len;
    self->due_len = 0;
    for (size_t i = 0; i < n; i++)
        Py_DECREF(self->due[i]);
}

/* Drops cancelled timers: all of them when they are the majority of a big
 * heap, else those at its head (asyncio's rule). */
static int timers_drop_cancelled(LoopObject *self)
{
    if (self->timers_len > MIN_SCHEDULED_TIMER_HANDLES &&
        (double)self->timer_cancelled_count / (double)self->timers_len >
            MIN_CANCELLED_TIMER_HANDLES_FRACTION) {
        size_t kept = 0;
        for (size_t i = 0; i < self->timers_len; i++) {
            timer_entry e = self->timers[i];
            int c = pact_py_handle_cancelled(e.handle);
            if (c < 0)
                return -1; /* heap left as it was up to i: still valid */
            if (c) {
                if (pact_py_timer_set_scheduled(e.handle, 0) < 0)
                    PyErr_Clear();
                Py_DECREF(e.handle);
            } else {
                self->timers[kept++] = e;
            }
        }
        self->timers_len = kept;
        for (size_t i = kept / 2; i-- > 0;)
            heap_sift_down(self->timers, kept, i);
        self->timer_cancelled_count = 0;
        return 0;
    }
    while (self->timers_len) {
        int c = pact_py_handle_cancelled(self->timers[0].handle);
        if (c < 0)
            return -1;
        if (!c)
            break;
        self->timer_cancelled_count--;
        PyObject *h = timer_pop(self);
        int r = pact_py_timer_set_scheduled(h, 0);
        Py_DECREF(h);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* ---- the wait: GIL and signals ------------------------------------- */

void pact_py_keep_exception(LoopObject *self)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (self->pending_exc || !et) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return;
    }
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    self->pending_exc = ev;
}

int pact_py_raise_kept_exception(LoopObject *self)
{
    PyObject *e = self->pending_exc;
    if (!e)
        return 0;
    self->pending_exc = NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(e), e);
    Py_DECREF(e);
    return -1;
}

static void release_gil(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    LoopObject *self = user;
    /* A poll that does not block is not worth a GIL hand-over. */
    if (timeout_ns != 0)
        self->wait_tstate = PyEval_SaveThread();
}

static int run_ready(LoopObject *self, size_t n);
static int take_due(LoopObject *self);

/* After every wait of pact's engine, also one that did not block: the
 * handles that were ready before run_once's pact iteration run here,
 * after the poll and before the first completion it found, as asyncio
 * runs them before the I/O callbacks its select() found; the timers due
 * then are taken for after those. Once per run_once: not in the waits
 * loop.close() makes. */
static void take_gil(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    LoopObject *self = user;
    if (timeout_ns != 0) {
        PyEval_RestoreThread(self->wait_tstate);
        self->wait_tstate = NULL;
    }
    if (!self->in_iteration || self->due_taken)
        return;
    if (take_due(self) < 0) {
        pact_py_keep_exception(self); /* raised after the iteration */
        return;
    }
    size_t n = self->earlier;
    self->earlier = 0;
    if (run_ready(self, n) < 0)
        pact_py_keep_exception(self);
    else if (self->eofs_now)
        pact_py_deliver_eofs(self); /* I/O callbacks of this wait */
}

static void signal_read_done(pact_loop *loop, const pact_completion *c,
                             void *user);

static int signal_read_arm(LoopObject *self)
{
    if (self->signal_op > 0 || self->signal_rfd < 0)
        return 0;
    pact_op op = pact_recv(self->loop, self->signal_rfd, self->signal_buf,
                           sizeof self->signal_buf, 0, signal_read_done, self);
    if (op < 0) {
        errno = (int)-op;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->signal_op = op;
    return 0;
}

/* Bytes on the wakeup socket are signal numbers written by CPython's C
 * signal handler: kept for _process_self_data() (which schedules the
 * add_signal_handler() callbacks) after the wait; Python-level handlers
 * (KeyboardInterrupt) run from PyErr_CheckSignals() there too. */
static void signal_read_done(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    (void)loop;
    LoopObject *self = user;
    self->signal_op = 0;
    if (self->closing)
        return;
    if (c->result > 0) {
        size_t room = sizeof self->signals_pending - self->signals_pending_len;
        size_t len = (size_t)c->result < room ? (size_t)c->result : room;
        memcpy(self->signals_pending + self->signals_pending_len,
               self->signal_buf, len);
        self->signals_pending_len += len;
        self->signals_seen += (uint64_t)c->result;
        ssize_t n;
        unsigned char more[256];
        /* Drain; what does not fit is a repeat of a signal already seen
         * (CPython writes one byte per delivery). */
        while ((n = recv(self->signal_rfd, more, sizeof more, MSG_DONTWAIT)) > 0) {
            room = sizeof self->signals_pending - self->signals_pending_len;
            len = (size_t)n < room ? (size_t)n : room;
            memcpy(self->signals_pending + self->signals_pending_len, more, len);
            self->signals_pending_len += len;
            self->signals_seen += (uint64_t)n;
        }
    }
    if (c->result == 0 || c->result == -ECANCELED)
        return;
    if (signal_read_arm(self) < 0)
        PyErr_Clear(); /* next _run() tries again */
}

/* ---- one iteration ------------------------------------------------- */

static int64_t wait_timeout_ns(LoopObject *self)
{
    if (self->ready_len || self->stopping || self->eofs_now)
        return 0;
    if (!self->timers_len)
        return -1;
    double delay = self->timers[0].when - monotonic_seconds();
    if (delay <= 0)
        return 0;
    if (delay > MAXIMUM_WAIT_SECONDS)
        delay = MAXIMUM_WAIT_SECONDS;
    /* Rounded up: waking before the deadline would only spin. */
    return (int64_t)ceil(delay * 1e9);
}

/* Runs up to n handles from the head of the ready queue, as asyncio runs
 * its ntodo: 0, or -1 with SystemExit or KeyboardInterrupt (the rest stay
 * queued). */
static int run_ready(LoopObject *self, size_t n)
{
    int r = 0;
    /* One callback for the write policy: what the handles write leaves
     * when the last of them returns (transport.c, "Writes made in a
     * callback"). */
    pact_py_callback_enter(self);
    for (size_t i = 0; i < n && self->ready_len; i++) {
        PyObject *h = ready_pop(self);
        int c = pact_py_handle_cancelled(h);
        if (c == 0)
            c = pact_py_handle_run(self, h);
        else if (c > 0)
            c = 0;
        Py_DECREF(h);
        if (c < 0) {
            r = -1;
            break;
        }
    }
    pact_py_callback_leave(self); /* sends what they wrote */
    return r;
}

/* Takes the timers due now (asyncio's end_time: now plus the clock's
 * resolution, 1 ns) from the heap, in their order, for run_due to run
 * after the I/O callbacks: asyncio decides which are due right after its
 * select(), so a timer a handle of this iteration schedules waits for the
 * next one. 0, or -1 with MemoryError. */
static int take_due(LoopObject *self)
{
    self->due_taken = 1;
    /* Without timers the clock is not read: a server's iterations mostly
     * have none. */
    if (!self->timers_len)
        return 0;
    double end_time = monotonic_seconds() + 1e-9;
    while (self->timers_len && self->timers[0].when < end_time) {
        if (self->due_len == self->due_cap) {
            size_t cap = self->due_cap ? 2 * self->due_cap : 16;
            PyObject **more = PyMem_Realloc(self->due, cap * sizeof *more);
            if (!more) {
                PyErr_NoMemory();
                return -1;
            }
            self->due = more;
            self->due_cap = cap;
        }
        PyObject *h = timer_pop(self);
        self->due[self->due_len++] = h;
        if (pact_py_timer_set_scheduled(h, 0) < 0)
            return -1;
    }
    return 0;
}

/* Runs the timers take_due took, each unless cancelled meanwhile. 0, or
 * -1 with SystemExit or KeyboardInterrupt: the rest go to the ready queue,
 * as asyncio leaves them in its own. */
static int run_due(LoopObject *self)
{
    int r = 0;
    size_t i = 0, n = self->due_len;
    pact_py_callback_enter(self); /* one callback for writes, as run_ready */
    for (; i < n && r == 0; i++) {
        PyObject *h = self->due[i];
        int c = pact_py_handle_cancelled(h);
        if (c == 0)
            c = pact_py_handle_run(self, h);
        Py_DECREF(h);
        if (c < 0)
            r = -1;
    }
    pact_py_callback_leave(self);
    for (; i < n; i++) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (pact_py_ready_push(self, self->due[i]) < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        Py_DECREF(self->due[i]);
    }
    self->due_len = 0;
    return r;
}

/* One iteration in asyncio's order. asyncio waits, appends the I/O
 * callbacks to the handles already ready, then the timers due, and runs
 * them all; what they schedule runs in the next iteration. pact handles
 * I/O inside its iteration: the handles ready before it (the wait does not
 * block then) run in pact's after-wait hook, between the poll and the
 * first completion it found (take_gil); then the I/O callbacks; then,
 * back here, the timers that were due at the poll. What all of these
 * schedule waits for the next call.
 *
 * again: the caller calls run_once again at once (run_forever's loop).
 * pact's run then leaves the replies its callbacks joined to the next
 * submission for the next run's wait (PACT_RUN_AGAIN): one io_uring_enter
 * submits them and waits, where a run that hands them over when it
 * returns costs a second one per request. Whoever stops calling hands
 * them over (pact_loop_flush, Loop_run). */
static int run_once(LoopObject *self, int again)
{
    if (timers_drop_cancelled(self) < 0)
        return -1;
    self->iteration++;
    self->earlier = self->ready_len;
    self->due_taken = 0;
    /* EOFs held back in the last iteration are handed over in this one;
     * those held back in this one wait for the next. */
    self->eofs_now = self->eofs_later;
    self->eofs_later = NULL;
    /* Nothing of this loop's runs between here and pact's wait (with wait
     * hooks, pact handles even a completion its engine had at submission
     * after the after hook), so the queues keep the timeout valid. */
    int64_t timeout = wait_timeout_ns(self);
    self->in_iteration = 1;
    int r = pact_loop_run_once_flags(self->loop, timeout,
                                     again ? PACT_RUN_AGAIN : 0);
    self->in_iteration = 0;
    if (!self->due_taken && r >= 0 && !self->pending_exc) {
        /* pact's iteration made no wait: what its hook does, now */
        if (take_due(self) < 0)
            return -1;
        size_t n = self->earlier;
        self->earlier = 0;
        if (run_ready(self, n) < 0)
            return -1;
        if (self->eofs_now)
            pact_py_deliver_eofs(self);
    }
    self->earlier = 0;
    if (self->eofs_now)
        pact_py_postpone_eofs(self); /* a handle raised SystemExit first */
    if (r < 0) {
        PyErr_Format(PyExc_RuntimeError, "pact loop iteration failed: %s",
                     pact_strerror(r));
        return -1;
    }
    if (pact_py_raise_kept_exception(self) < 0)
        return -1;
    /* Ctrl-C: the default SIGINT handler raises KeyboardInterrupt here. */
    if (PyErr_CheckSignals() < 0)
        return -1;
    if (self->signals_pending_len) {
        PyObject *data = PyBytes_FromStringAndSize(
            (const char *)self->signals_pending,
            (Py_ssize_t)self->signals_pending_len);
        self->signals_pending_len = 0;
        if (!data)
            return -1;
        PyObject *res = PyObject_CallMethod((PyObject *)self,
                                            "_process_self_data", "O", data);
        Py_DECREF(data);
        if (!res)
            return -1;
        Py_DECREF(res);
    }
    /* A timer's callback is Python code that may take its time: the
     * replies of this iteration go before it, as they would have without
     * PACT_RUN_AGAIN. */
    if (again && self->due_len)
        pact_loop_flush(self->loop);
    return run_due(self);
}

/* ---- methods -------------------------------------------------------- */

static int Loop_init(LoopObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"engine", NULL};
    const char *engine = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$s:Loop", kwlist, &engine))
        return -1;
    if (self->loop) {
        PyErr_SetString(PyExc_RuntimeError, "Loop.__init__ called twice");
        return -1;
    }
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    if (strcmp(engine, "auto") == 0)
        opts.engine = PACT_ENGINE_AUTO;
    else if (strcmp(engine, "uring") == 0)
        opts.engine = PACT_ENGINE_URING;
    else if (strcmp(engine, "epoll") == 0)
        opts.engine = PACT_ENGINE_EPOLL;
    else {
        PyErr_Format(PyExc_ValueError,
                     "engine must be 'auto', 'uring' or 'epoll', not '%s'",
                     engine);
        return -1;
    }
    /* asyncio lets a loop run on one thread and then run or close on
     * another (threading.Thread(target=loop.run_forever), loop.close() on
     * the main thread). A pinned pact loop answers -EPERM there. A movable
     * one keeps io_uring's fast ring (SINGLE_ISSUER, DEFER_TASKRUN,
     * multishot receive) until another thread drives it, and moves to a
     * ring bound to no thread only then. */
    opts.movable = 1;
    /* Receive buffers of 1 MiB: with pact's default 64 KiB a multishot
     * receive handed a 100 KiB message over in two pieces, so the
     * protocol echo made two data_received calls, two bytes objects and
     * two sends per request. With 256 KiB (uvloop reads 256 KiB at a
     * time) it still did for one message in five when four connections
     * sent 100 KiB each: io_uring puts what one wait receives one after
     * the other into the buffer it is filling, and a message that meets
     * its end is split. The loop starts every wait at the start of a
     * buffer, so only what one wait receives is touched (and resident).
     * Address space: 16 x 1 MiB (MAP_NORESERVE) where the loop receives
     * with multishot: io_uring fills them incrementally on every kernel
     * that starts a movable loop on the fast ring (6.12.49+, 6.16.9+,
     * 6.17+; 256 x 1 MiB only if PACT_URING_MASK=pbufinc hides that).
     * Reads by readiness (poll mode: older kernels, or once another
     * thread has run the loop; epoll; a receive of large messages) land
     * in a bytes object of this size (endpoint.c, "Received bytes"). */
    opts.recv_buffer_size = PACT_PY_RECEIVE_BYTES;
    pact_loop *loop = NULL;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        errno = -r;
        PyErr_Format(PyExc_OSError, "cannot create a pact loop on %s: %s",
                     engine, pact_strerror(r));
        return -1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        pact_loop_free(loop);
        return -1;
    }
    self->loop = loop;
    self->signal_rfd = sv[0];
    self->signal_wfd = sv[1];
    pact_loop_set_wait_hooks(loop, release_gil, take_gil, self);
    pact_py_receive_into_bytes(self);
    if (signal_read_arm(self) < 0)
        return -1;
    return 0;
}

static PyObject *Loop_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    LoopObject *self = (LoopObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->signal_rfd = self->signal_wfd = -1;
    return (PyObject *)self;
}

/* Closes the pact loop; 0 or -1 with an exception. */
static int close_core(LoopObject *self)
{
    /* pact closes what is still open first (its transports: connection_lost
     * into Python) while the loop still takes call_soon: asyncio's own
     * protocols schedule from connection_lost (SSLProtocol hands it on to
     * the app protocol, streams wake their waiters), which on a loop marked
     * closed raised "Event loop is closed" from inside close(). What they
     * schedule is dropped below, with everything else still scheduled. A
     * close() from one of those callbacks finds the close under way. */
    if (self->closing)
        return 0;
    self->closing = 1;
    int r = 0;
    if (self->loop) {
        r = pact_loop_close(self->loop);
        if (r < 0 && r != -EBADF)
            PyErr_Format(PyExc_RuntimeError, "cannot close the pact loop: %s",
                         pact_strerror(r));
        else
            r = 0;
    }
    self->closed = 1;
    pact_py_flush_writes(self); /* pact's loop is closed: they drop */
    pact_py_drop_eofs(self);
    Py_CLEAR(self->spare_bytes);
    Py_CLEAR(self->landing);
    ready_clear(self);
    timers_clear(self);
    if (self->loop && r == 0) {
        pact_loop_free(self->loop);
        self->loop = NULL;
    }
    pact_py_watchers_free(self);
    if (self->signal_rfd >= 0)
        close(self->signal_rfd);
    if (self->signal_wfd >= 0)
        close(self->signal_wfd);
    self->signal_rfd = self->signal_wfd = -1;
    return r < 0 ? -1 : 0;
}

static int Loop_traverse(LoopObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->task_factory);
    for (size_t i = 0; i < self->ready_len; i++)
        Py_VISIT(self->ready[(self->ready_head + i) & (self->ready_cap - 1)]);
    for (size_t i = 0; i < self->timers_len; i++)
        Py_VISIT(self->timers[i].handle);
    for (size_t i = 0; i < self->due_len; i++)
        Py_VISIT(self->due[i]);
    return pact_py_watchers_traverse(self, visit, arg);
}

static int Loop_clear(LoopObject *self)
{
    Py_CLEAR(self->task_factory);
    ready_clear(self);
    timers_clear(self);
    pact_py_watchers_clear(self);
    return 0;
}

static void Loop_dealloc(LoopObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->pending_exc);
    Py_CLEAR(self->task_factory);
    if (close_core(self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    PyMem_Free(self->ready);
    PyMem_Free(self->timers);
    PyMem_Free(self->due);
    pact_py_held_spares_free(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Loop_time(LoopObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyFloat_FromDouble(monotonic_seconds());
}

/* Splits fastcall arguments (callback, *args, context=None) after `skip`
 * leading positionals. Returns the args tuple (new reference). */
static PyObject *parse_callback_args(const char *func, PyObject *const *args,
                                     Py_ssize_t nargs, PyObject *kwnames,
                                     Py_ssize_t skip, PyObject **callback,
                                     PyObject **context)
{
    *context = Py_None;
    if (kwnames) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            /* asyncio's C Future and Task pass the interned name. */
            if (name != pact_py_str_context &&
                PyUnicode_Compare(name, pact_py_str_context) != 0) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'",
                             func, name);
                return NULL;
            }
            *context = args[nargs + i];
        }
    }
    if (nargs < skip + 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument%s",
                     func, skip ? "s" : " 'callback'");
        return NULL;
    }
    *callback = args[skip];
    PyObject *t = PyTuple_New(nargs - skip - 1);
    if (!t)
        return NULL;
    for (Py_ssize_t i = skip + 1; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(t, i - skip - 1, args[i]);
    }
    return t;
}

/* Debug mode: asyncio's thread and callback checks (written in Python). */
static int debug_checks(LoopObject *self, PyObject *callback, const char *method,
                        int check_thread)
{
    if (!self->debug)
        return 0;
    if (check_thread) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self,
                                                pact_py_str_check_thread);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_check_callback", "Os",
                                      callback, method);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *call_soon_impl(LoopObject *self, const char *func,
                                PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames, int threadsafe)
{
    if (check_open(self) < 0)
        return NULL;
    PyObject *callback, *context;
    PyObject *cargs = parse_callback_args(func, args, nargs, kwnames, 0,
                                          &callback, &context);
    if (!cargs)
        return NULL;
    if (debug_checks(self, callback, func, !threadsafe) < 0) {
        Py_DECREF(cargs);
        return NULL;
    }
    PyObject *h = pact_py_handle_new(self, callback, cargs, context);
    Py_DECREF(cargs);
    if (!h)
        return NULL;
    if (pact_py_ready_push(self, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    if (threadsafe)
        pact_loop_wake(self->loop);
    return h;
}

static PyObject *Loop_call_soon(LoopObject *self, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames)
{
    return call_soon_impl(self, "call_soon", args, nargs, kwnames, 0);
}

static PyObject *Loop_call_soon_threadsafe(LoopObject *self,
                                           PyObject *const *args,
                                           Py_ssize_t nargs, PyObject *kwnames)
{
    return call_soon_impl(self, "call_soon_threadsafe", args, nargs, kwnames, 1);
}

static PyObject *call_at_impl(LoopObject *self, const char *func,
                              PyObject *when, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames,
                              Py_ssize_t skip)
{
    if (check_open(self) < 0)
        return NULL;
    PyObject *callback, *context;
    PyObject *cargs = parse_callback_args(func, args, nargs, kwnames, skip,
                                          &callback, &context);
    if (!cargs)
        return NULL;
    double when_d = PyFloat_AsDouble(when);
    if (when_d == -1.0 && PyErr_Occurred()) {
        Py_DECREF(cargs);
        return NULL;
    }
    if (isnan(when_d)) {
        Py_DECREF(cargs);
        PyErr_SetString(PyExc_ValueError, "timer deadline is NaN");
        return NULL;
    }
    if (debug_checks(self, callback, "call_at", 1) < 0) {
        Py_DECREF(cargs);
        return NULL;
    }
    PyObject *h = pact_py_timer_handle_new(self, when, callback, cargs, context);
    Py_DECREF(cargs);
    if (!h)
        return NULL;
    if (timer_push(self, when_d, h) < 0 ||
        pact_py_timer_set_scheduled(h, 1) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

static PyObject *Loop_call_at(LoopObject *self, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1 || args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, nargs < 1
                                             ? "call_at() missing argument 'when'"
                                             : "when cannot be None");
        return NULL;
    }
    return call_at_impl(self, "call_at", args[0], args, nargs, kwnames, 1);
}

static PyObject *Loop_call_later(LoopObject *self, PyObject *const *args,
                                 Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1 || args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, nargs < 1
                                             ? "call_later() missing argument 'delay'"
                                             : "delay must not be None");
        return NULL;
    }
    /* time() + delay, as asyncio computes it. For a float or an int that
     * is the IEEE sum of two doubles (float.__add__ converts the int the
     * way PyFloat_AsDouble does, OverflowError included); other numbers
     * go through Python arithmetic. */
    PyObject *when;
    if (PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])) {
        double delay = PyFloat_AsDouble(args[0]);
        if (delay == -1.0 && PyErr_Occurred())
            return NULL;
        when = PyFloat_FromDouble(monotonic_seconds() + delay);
    } else {
        PyObject *now = PyFloat_FromDouble(monotonic_seconds());
        if (!now)
            return NULL;
        when = PyNumber_Add(now, args[0]);
        Py_DECREF(now);
    }
    if (!when)
        return NULL;
    PyObject *h = call_at_impl(self, "call_later", when, args, nargs, kwnames, 1);
    Py_DECREF(when);
    return h;
}

static PyObject *Loop_timer_handle_cancelled(LoopObject *self, PyObject *handle)
{
    int scheduled = pact_py_timer_scheduled(handle);
    if (scheduled < 0)
        return NULL;
    if (scheduled)
        self->timer_cancelled_count++;
    Py_RETURN_NONE;
}

/* asyncio's create_future and create_task (base_events.py) in C: both run
 * for every request of a server such as aiohttp's. */
static PyObject *Loop_create_future(LoopObject *self, PyObject *unused)
{
    (void)unused;
    static PyObject *kwnames;
    if (!kwnames && !(kwnames = Py_BuildValue("(s)", "loop")))
        return NULL;
    PyObject *argv[1] = {(PyObject *)self};
    return PyObject_Vectorcall(pact_py.future_type, argv, 0, kwnames);
}

static PyObject *Loop_create_task(LoopObject *self, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames)
{
    static PyObject *str_name, *task_kwnames;
    if (!str_name && !(str_name = PyUnicode_InternFromString("name")))
        return NULL;
    if (!task_kwnames &&
        !(task_kwnames = Py_BuildValue("(sss)", "loop", "name", "context")))
        return NULL;
    PyObject *name = Py_None, *context = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (k == str_name || PyUnicode_Compare(k, str_name) == 0)
            name = args[nargs + i];
        else if (k == pact_py_str_context ||
                 PyUnicode_Compare(k, pact_py_str_context) == 0)
            context = args[nargs + i];
        else {
            PyErr_Format(PyExc_TypeError,
                         "create_task() got an unexpected keyword argument '%U'",
                         k);
            return NULL;
        }
    }
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "create_task() takes 1 positional argument but %zd were "
                     "given", nargs);
        return NULL;
    }
    if (self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    if ((self->task_factory && self->task_factory != Py_None) || self->debug) {
        /* asyncio's code: the factory protocol, task names, debug
         * tracebacks. */
        PyObject *argv[4] = {(PyObject *)self, args[0], name, context};
        PyObject *kw = Py_BuildValue("(ss)", "name", "context");
        if (!kw)
            return NULL;
        PyObject *r = PyObject_Vectorcall(pact_py.base_create_task, argv, 2, kw);
        Py_DECREF(kw);
        return r;
    }
    PyObject *argv[4] = {args[0], (PyObject *)self, name, context};
    return PyObject_Vectorcall(pact_py.task_type, argv, 1, task_kwnames);
}

static PyObject *get_task_factory(LoopObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->task_factory ? self->task_factory : Py_None);
}

static int set_task_factory(LoopObject *self, PyObject *v, void *c)
{
    (void)c;
    Py_XSETREF(self->task_factory, Py_XNewRef(v));
    return 0;
}

static PyObject *Loop_write_to_self(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (self->loop && !self->closed)
        pact_loop_wake(self->loop);
    Py_RETURN_NONE;
}

static PyObject *Loop_stop(LoopObject *self, PyObject *unused)
{
    (void)unused;
    self->stopping = 1;
    Py_RETURN_NONE;
}

/* The body of run_forever (the Python side sets up and restores the
 * running-loop state, asyncgen hooks and the signal wakeup fd). */
static PyObject *Loop_run(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    if (self->in_run) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return NULL;
    }
    if (signal_read_arm(self) < 0)
        return NULL;
    self->in_run = 1;
    int r = 0;
    for (;;) {
        r = run_once(self, 1);
        if (r < 0 || self->stopping || self->closed)
            break;
    }
    /* The last iteration ran with PACT_RUN_AGAIN: what its callbacks
     * wrote goes to the kernel now, not with a wait that may not come
     * (run_until_complete returns, the program goes on). */
    if (!self->closed)
        pact_loop_flush(self->loop);
    self->stopping = 0;
    self->in_run = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* One iteration, for tests and for callers that drive the loop by hand. */
static PyObject *Loop_run_once(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    if (self->in_run) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return NULL;
    }
    self->in_run = 1;
    int r = run_once(self, 0);
    self->in_run = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Loop_close_core(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (self->in_run) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");
        return NULL;
    }
    if (close_core(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Loop_get_debug(LoopObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->debug);
}

static PyObject *Loop_stats(LoopObject *self, PyObject *unused)
{
    (void)unused;
    pact_loop_stats st = {0};
    if (self->loop)
        pact_loop_get_stats(self->loop, &st);
    /* "enters": io_uring_enter / epoll_wait calls; "receive": how
     * transports receive (pact_loop_recv_multishot_mode: "multishot" is
     * io_uring's fast ring, "poll" a ring that has moved threads). */
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:n,s:n,s:K,s:s}", "iterations",
                         (unsigned long long)st.iterations, "ops_started",
                         (unsigned long long)st.ops_started, "ops_completed",
                         (unsigned long long)st.ops_completed, "ops_live",
                         (unsigned long long)st.ops_live, "enters",
                         (unsigned long long)st.syscalls_enter, "ready",
                         (Py_ssize_t)self->ready_len, "timers",
                         (Py_ssize_t)self->timers_len, "signal_bytes",
                         (unsigned long long)self->signals_seen, "receive",
                         self->loop ? pact_loop_recv_multishot_mode(self->loop)
                                    : "closed");
}

static PyObject *get_closed(LoopObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed);
}

static PyObject *get_stopping(LoopObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->stopping);
}

static PyObject *get_debug_attr(LoopObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->debug);
}

static int set_debug_attr(LoopObject *self, PyObject *v, void *c)
{
    (void)c;
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _debug");
        return -1;
    }
    int d = PyObject_IsTrue(v);
    if (d < 0)
        return -1;
    self->debug = d;
    return 0;
}

static PyObject *get_engine(LoopObject *self, void *c)
{
    (void)c;
    if (!self->loop)
        Py_RETURN_NONE;
    return PyUnicode_FromString(
        pact_loop_engine(self->loop) == PACT_ENGINE_URING ? "uring" : "epoll");
}

static PyObject *get_engine_reason(LoopObject *self, void *c)
{
    (void)c;
    const char *why = self->loop ? pact_loop_engine_reason(self->loop) : NULL;
    if (!why)
        Py_RETURN_NONE;
    return PyUnicode_FromString(why);
}

static PyObject *get_wakeup_fd(LoopObject *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->signal_wfd);
}

static PyObject *get_timer_cancelled_count(LoopObject *self, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(self->timer_cancelled_count);
}

static PyMethodDef Loop_methods[] = {
    {"time", (PyCFunction)Loop_time, METH_NOARGS,
     "The loop's clock: time.monotonic()."},
    {"call_soon", (PyCFunction)(void (*)(void))Loop_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None) -> asyncio.Handle"},
    {"call_soon_threadsafe",
     (PyCFunction)(void (*)(void))Loop_call_soon_threadsafe,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe(callback, *args, context=None) -> asyncio.Handle"},
    {"call_later", (PyCFunction)(void (*)(void))Loop_call_later,
     METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None) -> asyncio.TimerHandle"},
    {"call_at", (PyCFunction)(void (*)(void))Loop_call_at,
     METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None) -> asyncio.TimerHandle"},
    {"_timer_handle_cancelled", (PyCFunction)Loop_timer_handle_cancelled, METH_O,
     "Called by TimerHandle.cancel()."},
    {"_add_reader", (PyCFunction)(void (*)(void))pact_py_add_reader, METH_FASTCALL,
     "_add_reader(fd, callback, *args) -> the reader's asyncio.Handle"},
    {"_add_writer", (PyCFunction)(void (*)(void))pact_py_add_writer, METH_FASTCALL,
     "_add_writer(fd, callback, *args) -> the writer's asyncio.Handle"},
    {"_remove_reader", (PyCFunction)pact_py_remove_reader, METH_O,
     "_remove_reader(fd) -> True if a reader was registered"},
    {"_remove_writer", (PyCFunction)pact_py_remove_writer, METH_O,
     "_remove_writer(fd) -> True if a writer was registered"},
    {"_add_callback", (PyCFunction)pact_py_add_callback, METH_O,
     "Append a handle to the ready queue unless it is cancelled."},
    {"create_future", (PyCFunction)Loop_create_future, METH_NOARGS,
     "create_future() -> asyncio.Future attached to the loop"},
    {"create_task", (PyCFunction)(void (*)(void))Loop_create_task,
     METH_FASTCALL | METH_KEYWORDS,
     "create_task(coro, *, name=None, context=None) -> asyncio.Task"},
    {"_write_to_self", (PyCFunction)Loop_write_to_self, METH_NOARGS,
     "Wake the loop from any thread."},
    {"stop", (PyCFunction)Loop_stop, METH_NOARGS,
     "Stop after the callbacks of the current iteration."},
    {"get_debug", (PyCFunction)Loop_get_debug, METH_NOARGS, NULL},
    {"_run", (PyCFunction)Loop_run, METH_NOARGS,
     "Iterate until stop() (the body of run_forever)."},
    {"_run_once", (PyCFunction)Loop_run_once, METH_NOARGS,
     "Run one iteration."},
    {"_close_core", (PyCFunction)Loop_close_core, METH_NOARGS,
     "Close the pact loop and drop what is scheduled."},
    {"stats", (PyCFunction)Loop_stats, METH_NOARGS,
     "Counters: pact iterations, ops started, completed and live, engine\n"
     "waits (enters), ready and scheduled handles, signal bytes; and\n"
     "receive: how transports receive ('multishot', 'poll', 'epoll';\n"
     "'closed' once the loop is)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Loop_getset[] = {
    {"_closed", (getter)get_closed, NULL, NULL, NULL},
    {"_stopping", (getter)get_stopping, NULL, NULL, NULL},
    {"_debug", (getter)get_debug_attr, (setter)set_debug_attr, NULL, NULL},
    {"_timer_cancelled_count", (getter)get_timer_cancelled_count, NULL, NULL, NULL},
    {"_task_factory", (getter)get_task_factory, (setter)set_task_factory, NULL, NULL},
    {"_signal_wakeup_fd", (getter)get_wakeup_fd, NULL, NULL, NULL},
    {"engine", (getter)get_engine, NULL,
     "The engine the loop runs on: 'uring' or 'epoll'.", NULL},
    {"engine_reason", (getter)get_engine_reason, NULL,
     "Why the loop does not run on io_uring, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Loop_slots[] = {
    {Py_tp_doc, "The C core of pact.asyncio.Loop: a pact loop running "
                "asyncio's iteration."},
    {Py_tp_new, Loop_new},
    {Py_tp_init, Loop_init},
    {Py_tp_dealloc, Loop_dealloc},
    {Py_tp_traverse, Loop_traverse},
    {Py_tp_clear, Loop_clear},
    {Py_tp_methods, Loop_methods},
    {Py_tp_getset, Loop_getset},
    {0, NULL},
};

PyType_Spec pact_py_loop_spec = {
    .name = "pact._pact.Loop",
    .basicsize = sizeof(LoopObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Loop_slots,
};
