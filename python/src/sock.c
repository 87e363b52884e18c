/* SPDX-License-Identifier: MIT */
/* The system calls of loop.sock_recv / sock_recv_into / sock_sendall, tried
 * at call time as asyncio's selector loop tries them, but without raising:
 * "would block" is an answer (None, or 0 bytes sent), not a BlockingIOError
 * with its traceback. A request that finds no data waiting (the common
 * case for a server: it asks before the peer has sent) cost an exception
 * each time. Each call is one non-blocking system call, and a Python
 * buffer is the kernel's only during it. */
#include "pact_py.h"

#include <errno.h>
#include <sys/socket.h>

static int would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

static int parse_fd(PyObject *o, int *fd)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *fd = (int)v;
    return 0;
}

/* One non-blocking recv or send, retried after EINTR. Returns the count,
 * or -1 with *err the errno, or -1 with *err 0 when a signal's Python
 * handler raised (the exception is set). */
static ssize_t sock_call(int fd, void *buf, size_t len, int sending, int *err)
{
    for (;;) {
        ssize_t r = sending ? send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL)
                            : recv(fd, buf, len, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno != EINTR) {
            *err = errno;
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            *err = 0;
            return -1;
        }
    }
}

/* What a failed sock_call answers: would_block_answer (a new reference)
 * when the socket would block, else the OSError (or the signal handler's
 * exception) raised. */
static PyObject *sock_call_failed(int err, PyObject *would_block_answer)
{
    if (err && would_block(err))
        return would_block_answer;
    Py_XDECREF(would_block_answer);
    if (!err)
        return NULL;
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static int check_args(Py_ssize_t nargs, const char *usage)
{
    if (nargs == 2)
        return 0;
    PyErr_SetString(PyExc_TypeError, usage);
    return -1;
}

/* _recv_now(fd, n) -> bytes (b'' at EOF), or None when nothing is waiting. */
static PyObject *recv_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    int fd, err;
    if (check_args(nargs, "_recv_now(fd, n)") < 0 || parse_fd(args[0], &fd) < 0)
        return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (!b)
        return NULL;
    ssize_t r = sock_call(fd, PyBytes_AS_STRING(b), (size_t)n, 0, &err);
    if (r < 0) {
        Py_DECREF(b);
        return sock_call_failed(err, Py_NewRef(Py_None));
    }
    if (r != n && _PyBytes_Resize(&b, r) < 0)
        return NULL;
    return b;
}

/* _recv_into_now(fd, buf) -> bytes received, or None when nothing is
 * waiting; _send_now(fd, data) -> bytes sent (0 when the socket takes
 * nothing now). The buffer is released before returning. */
static PyObject *buffer_call(PyObject *const *args, Py_ssize_t nargs,
                             const char *usage, int sending)
{
    int fd, err;
    if (check_args(nargs, usage) < 0 || parse_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view,
                           sending ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0)
        return NULL;
    ssize_t r = sock_call(fd, view.buf, (size_t)view.len, sending, &err);
    PyBuffer_Release(&view);
    if (r < 0)
        return sock_call_failed(err, sending ? PyLong_FromLong(0)
                                             : Py_NewRef(Py_None));
    return PyLong_FromSsize_t(r);
}

static PyObject *recv_into_now(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    (void)module;
    return buffer_call(args, nargs, "_recv_into_now(fd, buf)", 0);
}

static PyObject *send_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    return buffer_call(args, nargs, "_send_now(fd, data)", 1);
}

static PyMethodDef sock_functions[] = {
    {"_recv_now", (PyCFunction)(void (*)(void))recv_now, METH_FASTCALL,
     "_recv_now(fd, n) -> bytes, or None if nothing is waiting"},
    {"_recv_into_now", (PyCFunction)(void (*)(void))recv_into_now, METH_FASTCALL,
     "_recv_into_now(fd, buf) -> bytes received, or None if nothing is waiting"},
    {"_send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "_send_now(fd, data) -> bytes sent, 0 if the socket takes nothing now"},
    {NULL, NULL, 0, NULL},
};

int pact_py_sock_init(PyObject *module)
{
    return PyModule_AddFunctions(module, sock_functions);
}
