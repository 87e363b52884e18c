/* SPDX-License-Identifier: MIT */
/* The system calls of loop.sock_recv / sock_recv_into / sock_sendall, tried
 * at call time as asyncio's selector loop tries them, but without raising:
 * "would block" is an answer (None, or 0 bytes sent), not a BlockingIOError
 * with its traceback. A request that finds no data waiting (the common
 * case for a server: it asks before the peer has sent) cost an exception
 * each time. Each call is one non-blocking system call (a large
 * sock_recv on a stream asks FIONREAD first: see recv_now), and a Python
 * buffer is the kernel's only during it. */
#include "pact_py.h"

#include <errno.h>
#include <sys/ioctl.h>
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

/* What sock_call does: receive, send, or peek at what waits without
 * taking it (a flag set, as `sending` in buffer_call reads it). */
enum { SOCK_RECEIVE = 0, SOCK_SEND = 1, SOCK_PEEK = 2 };

/* One non-blocking recv, send or peek, retried after EINTR. Returns the
 * count (a peek: 0 at the end of the stream), or -1 with *err the errno,
 * or -1 with *err 0 when a signal's Python handler raised (the exception
 * is set). */
static ssize_t sock_call(int fd, void *buf, size_t len, int way, int *err)
{
    for (;;) {
        ssize_t r = way == SOCK_SEND
                        ? send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL)
                        : recv(fd, buf, len,
                               MSG_DONTWAIT | (way == SOCK_PEEK ? MSG_PEEK : 0));
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

/* The type of a socket.socket, read from the C socket object's member
 * (socket.socket's own "type" property makes an IntEnum each time). */
static PyObject *socket_type_member;
static PyObject *fileno_name;

/* 1 when sock is a SOCK_STREAM socket, 0 when not, -1 with an exception. */
static int is_stream(PyObject *sock)
{
    PyObject *t = Py_TYPE(socket_type_member)->tp_descr_get(
        socket_type_member, sock, (PyObject *)Py_TYPE(sock));
    if (!t)
        return -1;
    long v = PyLong_AsLong(t);
    Py_DECREF(t);
    if (v == -1 && PyErr_Occurred())
        return -1;
    return (v & 0xf) == SOCK_STREAM;
}

/* Above this many bytes, _recv_now on a stream socket asks the kernel how
 * much is waiting (FIONREAD) and makes the bytes object that size instead
 * of n. Programs pass a generous n (uvloop's echo server passes 1000000):
 * a bytes object of n shrunk to what came leaves malloc's heap in pieces
 * too small for the next one, so every call took fresh pages from the
 * kernel, each faulted in and zeroed: a third of the server's CPU at
 * 100 KiB, much more than the ioctl. Below it the allocation is cheap and
 * the ioctl would be a system call for nothing. Datagram sockets keep n:
 * a datagram is received whole or truncated, never in parts. */
#define RECV_SIZE_BY_FIONREAD (64 * 1024)

/* How many bytes wait in fd's receive queue: 0 or more, -1 when the fd
 * does not say (not a socket that answers FIONREAD), -2 when a signal's
 * handler raised (*err 0). */
static Py_ssize_t bytes_waiting(int fd, int *err)
{
    int waiting;
    while (ioctl(fd, FIONREAD, &waiting) != 0) {
        if (errno != EINTR)
            return -1;
        if (PyErr_CheckSignals() < 0) {
            *err = 0;
            return -2;
        }
    }
    return waiting;
}

/* _recv_now(sock, n, readable) -> bytes (b'' at the end of the stream),
 * or None when nothing is waiting. readable: the fd was just reported
 * readable (asked again from the wait), else this is the try at call time.
 *
 * A stream socket asked for more than RECV_SIZE_BY_FIONREAD bytes is
 * received in a bytes object of what waits. Nothing waiting at call time
 * answers None at once (one system call, as a failed recv): the end of
 * the stream and a pending error make the fd readable, and the wait
 * finds them. Nothing waiting when readable is one of those (or a spurious
 * wake-up): a one-byte peek tells which, and only then is a bytes object
 * of n made for the recv that returns b'' or raises. */
static PyObject *recv_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    int err;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_recv_now(sock, n, readable)");
        return NULL;
    }
    /* sock.fileno(): -1 once closed, and the recv then raises EBADF. */
    PyObject *fileno = PyObject_CallMethodNoArgs(args[0], fileno_name);
    if (!fileno)
        return NULL;
    int fd;
    int bad = parse_fd(fileno, &fd);
    Py_DECREF(fileno);
    if (bad < 0)
        return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    Py_ssize_t room = n;
    if (n > RECV_SIZE_BY_FIONREAD) {
        int stream = is_stream(args[0]);
        if (stream < 0)
            return NULL;
        Py_ssize_t waiting = stream ? bytes_waiting(fd, &err) : -1;
        if (waiting == -2)
            return NULL;
        if (waiting > 0 && waiting < n) {
            room = waiting;
        } else if (waiting == 0) {
            int readable = PyObject_IsTrue(args[2]);
            if (readable < 0)
                return NULL;
            if (!readable)
                Py_RETURN_NONE;
            char probe;
            ssize_t r = sock_call(fd, &probe, 1, SOCK_PEEK, &err);
            if (r < 0)
                return sock_call_failed(err, Py_NewRef(Py_None));
            /* The end of the stream (received below as b''), or data
             * that came after the ioctl. */
        }
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, room);
    if (!b)
        return NULL;
    ssize_t r = sock_call(fd, PyBytes_AS_STRING(b), (size_t)room, SOCK_RECEIVE,
                          &err);
    if (r < 0) {
        Py_DECREF(b);
        return sock_call_failed(err, Py_NewRef(Py_None));
    }
    if (r != room && _PyBytes_Resize(&b, r) < 0)
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
    ssize_t r = sock_call(fd, view.buf, (size_t)view.len,
                          sending ? SOCK_SEND : SOCK_RECEIVE, &err);
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
     "_recv_now(sock, n, readable) -> bytes, or None if nothing is waiting"},
    {"_recv_into_now", (PyCFunction)(void (*)(void))recv_into_now, METH_FASTCALL,
     "_recv_into_now(fd, buf) -> bytes received, or None if nothing is waiting"},
    {"_send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "_send_now(fd, data) -> bytes sent, 0 if the socket takes nothing now"},
    {NULL, NULL, 0, NULL},
};

int pact_py_sock_init(PyObject *module)
{
    PyObject *m = PyImport_ImportModule("_socket");
    PyObject *cls = m ? PyObject_GetAttrString(m, "socket") : NULL;
    Py_XDECREF(m);
    if (!cls)
        return -1;
    fileno_name = PyUnicode_InternFromString("fileno");
    if (!fileno_name) {
        Py_DECREF(cls);
        return -1;
    }
    socket_type_member = PyObject_GetAttrString(cls, "type");
    Py_DECREF(cls);
    if (!socket_type_member)
        return -1;
    if (!Py_TYPE(socket_type_member)->tp_descr_get) {
        PyErr_SetString(PyExc_TypeError, "_socket.socket.type is not a member");
        Py_CLEAR(socket_type_member);
        return -1;
    }
    return PyModule_AddFunctions(module, sock_functions);
}
