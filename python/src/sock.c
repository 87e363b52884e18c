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

/* _recv_now(fd, n) -> bytes (b'' at EOF), or None when nothing is waiting. */
static PyObject *recv_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_recv_now(fd, n)");
        return NULL;
    }
    if (parse_fd(args[0], &fd) < 0)
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
    ssize_t r;
    for (;;) {
        r = recv(fd, PyBytes_AS_STRING(b), (size_t)n, MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            Py_DECREF(b);
            return NULL;
        }
    }
    if (r < 0) {
        int err = errno;
        Py_DECREF(b);
        if (would_block(err))
            Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (r != n && _PyBytes_Resize(&b, r) < 0)
        return NULL;
    return b;
}

/* _recv_into_now(fd, buf) -> bytes received, or None when nothing is
 * waiting. The buffer is released before returning. */
static PyObject *recv_into_now(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    (void)module;
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_recv_into_now(fd, buf)");
        return NULL;
    }
    if (parse_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    ssize_t r;
    for (;;) {
        r = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int err = errno;
    PyBuffer_Release(&view);
    if (r < 0) {
        if (would_block(err))
            Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(r);
}

/* _send_now(fd, data) -> bytes sent (0 when the socket takes nothing now). */
static PyObject *send_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_send_now(fd, data)");
        return NULL;
    }
    if (parse_fd(args[0], &fd) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t r;
    for (;;) {
        r = send(fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int err = errno;
    PyBuffer_Release(&view);
    if (r < 0) {
        if (would_block(err))
            return PyLong_FromLong(0);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(r);
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
