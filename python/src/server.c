/* SPDX-License-Identifier: MIT */
/* pact._pact.Server: accepting in C for asyncio's Server. asyncio makes
 * and listens on the sockets (create_server, create_unix_server, sock=)
 * and keeps its Server object (start_serving, serve_forever, close,
 * wait_closed, sockets, the connection count); the loop's _start_serving
 * hands each listening socket to pact (pact_server_adopt on a duplicate
 * of its fd), which accepts without going through Python readiness and
 * calls the factory here for every connection: asyncio's protocol
 * factory, a socket object on the connection's fd, and a pact transport
 * (transport.c) attached to the Server, as asyncio's _accept_connection2
 * makes them.
 *
 * The duplicate: the socket objects stay asyncio's (Server.sockets,
 * Server.close() closes them), pact closes its own fd when its server is
 * closed. The loop's _stop_serving shuts the socket down first, which
 * stops the listening through both fds at once.
 *
 * Lifetime: the object holds itself until pact frees its server (after
 * close, or the loop's close, once its connections are gone). */
#include "pact_py.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    LoopObject *loop;
    pact_server *srv; /* NULL once pact has freed it */
    PyObject *protocol_factory;
    PyObject *server;  /* asyncio's Server, or None */
    PyObject *context; /* contextvars.Context the factory runs in */
    PyObject *self_ref;
    int closing;
} ServerObject;

static PyObject *socket_type;           /* socket.socket */
static PyObject *transport_socket_type; /* asyncio.trsock.TransportSocket */
static PyObject *str_transports;        /* "_transports" */

/* Asyncio's report of a connection it could not set up; the exception
 * is the current one (cleared). */
static void report_accept_error(ServerObject *self)
{
    PyObject *message = PyUnicode_FromString(
        "Error on transport creation for incoming connection");
    pact_py_report_exception(self->loop, message, NULL, NULL);
    Py_XDECREF(message);
}

/* The socket object and the extra info of an accepted connection, as
 * asyncio's transports have them. */
static PyObject *make_extra(PyObject *sock)
{
    PyObject *extra = PyDict_New();
    PyObject *tsock = extra ? PyObject_CallOneArg(transport_socket_type, sock)
                            : NULL;
    if (!tsock || PyDict_SetItemString(extra, "socket", tsock) < 0)
        goto fail;
    Py_CLEAR(tsock);
    const char *names[2] = {"getsockname", "getpeername"};
    const char *keys[2] = {"sockname", "peername"};
    for (int i = 0; i < 2; i++) {
        PyObject *v = PyObject_CallMethod(sock, names[i], NULL);
        if (!v) {
            if (!PyErr_ExceptionMatches(PyExc_OSError))
                goto fail;
            PyErr_Clear();
            v = Py_NewRef(Py_None);
        }
        int r = PyDict_SetItemString(extra, keys[i], v);
        Py_DECREF(v);
        if (r < 0)
            goto fail;
    }
    return extra;
fail:
    Py_XDECREF(tsock);
    Py_XDECREF(extra);
    return NULL;
}

/* pact's factory: asyncio's protocol for the connection pact accepted,
 * and a pact transport for it. 0, or a negative errno to refuse it (pact
 * closes it; asyncio's exception handler has heard why). */
static int accept_one(ServerObject *self, pact_transport *t,
                      const pact_protocol **proto, void **user)
{
    PyObject *protocol = PyObject_CallNoArgs(self->protocol_factory);
    if (!protocol)
        return -1;
    int fd = pact_transport_fd(t);
    /* family, type and proto -1: read from the fd. */
    PyObject *sock = PyObject_CallFunction(socket_type, "iiii", -1, -1, -1, fd);
    if (!sock) {
        Py_DECREF(protocol);
        return -1;
    }
    /* As asyncio's accepted sockets: non-blocking (pact's already is). */
    PyObject *r = PyObject_CallMethod(sock, "setblocking", "O", Py_False);
    Py_XDECREF(r);
    PyObject *extra = r ? make_extra(sock) : NULL;
    PyObject *transport =
        extra ? pact_py_transport_accepted(self->loop, t, sock, protocol, extra,
                                           self->server, proto)
              : NULL;
    Py_XDECREF(extra);
    Py_DECREF(protocol);
    if (!transport) {
        /* pact closes the fd: the socket object must not. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *d = PyObject_CallMethod(sock, "detach", NULL);
        Py_XDECREF(d);
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        Py_DECREF(sock);
        return -1;
    }
    Py_DECREF(sock);
    /* loop._transports: add_reader on the fd is refused, as asyncio. */
    PyObject *transports = PyObject_GetAttr((PyObject *)self->loop, str_transports);
    PyObject *key = PyLong_FromLong(fd);
    if (!transports || !key ||
        PyObject_SetItem(transports, key, transport) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(key);
    Py_XDECREF(transports);
    *user = transport;
    /* pact holds the transport from now on (its self reference). */
    Py_DECREF(transport);
    return 0;
}

static int on_accept(pact_server *srv, void *factory_user,
                     const pact_protocol **proto, void **user)
{
    ServerObject *self = factory_user;
    pact_transport *t = pact_server_accepting(srv);
    if (!t || self->closing)
        return -ECONNABORTED;
    /* A copy per connection, as asyncio's accept task copies the context
     * of its reader callback: what the factory sets stays with it. */
    PyObject *ctx = PyContext_Copy(self->context);
    if (!ctx || PyContext_Enter(ctx) < 0) {
        Py_XDECREF(ctx);
        report_accept_error(self);
        return -ECONNABORTED;
    }
    pact_py_callback_enter(self->loop);
    int r = accept_one(self, t, proto, user);
    if (r < 0)
        report_accept_error(self);
    pact_py_callback_leave(self->loop);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyContext_Exit(ctx);
    Py_DECREF(ctx);
    PyErr_Restore(et, ev, tb);
    return r < 0 ? -ECONNABORTED : 0;
}

/* pact freed its server (closed, and its connections gone). */
static void on_server_gone(pact_loop *loop, void *user)
{
    (void)loop;
    ServerObject *self = user;
    self->srv = NULL;
    self->closing = 1;
    Py_CLEAR(self->self_ref); /* may free self: last */
}

/* Server._open(loop, sock, protocol_factory, server): pact accepts on a
 * duplicate of the listening socket's fd. */
static PyObject *Server_open(PyObject *cls, PyObject *args)
{
    PyObject *loop, *sock, *factory, *server;
    if (!PyArg_ParseTuple(args, "OOOO:_open", &loop, &sock, &factory, &server))
        return NULL;
    LoopObject *lo = pact_py_open_loop(loop);
    if (!lo)
        return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    ServerObject *self =
        (ServerObject *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (!self)
        return NULL;
    self->loop = (LoopObject *)Py_NewRef(loop);
    self->protocol_factory = Py_NewRef(factory);
    self->server = Py_NewRef(server);
    self->context = PyContext_CopyCurrent();
    if (!self->context) {
        Py_DECREF(self);
        return NULL;
    }
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int r = pact_server_adopt(lo->loop, dup_fd, NULL, on_accept, self, &self->srv);
    if (r == 0)
        r = pact_server_wait_closed(self->srv, on_server_gone, self);
    if (r < 0) {
        if (self->srv)
            pact_server_close(self->srv); /* frees it later; not ours now */
        self->srv = NULL;
        Py_DECREF(self);
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->self_ref = Py_NewRef((PyObject *)self);
    return (PyObject *)self;
}

/* Stops accepting now; connections already made go on. */
static PyObject *Server_close(ServerObject *self, PyObject *unused)
{
    (void)unused;
    if (self->srv && !self->closing) {
        self->closing = 1;
        pact_server_close(self->srv);
    }
    Py_RETURN_NONE;
}

static PyObject *Server_get_connections(ServerObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(self->srv ? pact_server_connections(self->srv) : 0);
}

static PyObject *Server_get_closing(ServerObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closing);
}

static PyObject *Server_repr(ServerObject *self)
{
    return PyUnicode_FromFormat("<%s fd=%d %s>", Py_TYPE(self)->tp_name,
                                self->srv ? pact_server_fd(self->srv) : -1,
                                self->closing ? "closed" : "serving");
}

static int Server_traverse(ServerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->protocol_factory);
    Py_VISIT(self->server);
    Py_VISIT(self->context);
    /* Not self_ref: it stands for pact's pointer (see transport.c). */
    return 0;
}

static int Server_clear(ServerObject *self)
{
    Py_CLEAR(self->protocol_factory);
    Py_CLEAR(self->server);
    Py_CLEAR(self->context);
    return 0;
}

static void Server_dealloc(ServerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Server_clear(self);
    Py_CLEAR(self->loop);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Server_methods[] = {
    {"_open", (PyCFunction)Server_open, METH_VARARGS | METH_CLASS,
     "_open(loop, sock, protocol_factory, server) -> accepting server"},
    {"close", (PyCFunction)Server_close, METH_NOARGS,
     "stop accepting (connections already made go on)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Server_getset[] = {
    {"connections", (getter)Server_get_connections, NULL,
     "connections pact accepted that are still open", NULL},
    {"closing", (getter)Server_get_closing, NULL, "close() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Server_slots[] = {
    {Py_tp_doc, "pact accepting on a listening socket for asyncio's Server."},
    {Py_tp_dealloc, Server_dealloc},
    {Py_tp_traverse, Server_traverse},
    {Py_tp_clear, Server_clear},
    {Py_tp_methods, Server_methods},
    {Py_tp_getset, Server_getset},
    {Py_tp_repr, Server_repr},
    {0, NULL},
};

static PyType_Spec Server_spec = {
    .name = "pact._pact.Server",
    .basicsize = sizeof(ServerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Server_slots,
};

int pact_py_server_init(PyObject *module)
{
    PyObject *socket_module = PyImport_ImportModule("socket");
    if (!socket_module)
        return -1;
    socket_type = PyObject_GetAttrString(socket_module, "socket");
    Py_DECREF(socket_module);
    PyObject *trsock = PyImport_ImportModule("asyncio.trsock");
    if (!trsock)
        return -1;
    transport_socket_type = PyObject_GetAttrString(trsock, "TransportSocket");
    Py_DECREF(trsock);
    str_transports = PyUnicode_InternFromString("_transports");
    if (!socket_type || !transport_socket_type || !str_transports)
        return -1;
    PyObject *type = pact_py_add_type(module, &Server_spec, NULL);
    if (!type)
        return -1;
    Py_DECREF(type); /* the module holds it */
    return 0;
}
