/* SPDX-License-Identifier: MIT */
/* pact._pact.DatagramTransport: a pact datagram endpoint (pact_datagram_*)
 * as asyncio's datagram transport, for create_datagram_endpoint(). pact
 * receives (one receive in flight; an error is reported and reception goes
 * on), queues what cannot leave at once and does the flow control; this
 * file calls the Python protocol from pact's callbacks and gives sendto()
 * asyncio's semantics:
 *
 *   - data must be bytes, bytearray or memoryview (TypeError); an empty
 *     datagram is not sent (asyncio 3.11 returns);
 *   - with a remote address (create_datagram_endpoint(remote_addr=...)) any
 *     other address is a ValueError, raised to the caller;
 *   - with nothing queued the datagram is sent at once, as asyncio's
 *     selector transport does: get_write_buffer_size() stays 0 and
 *     pause_writing is called only when the kernel's buffer is full and
 *     datagrams wait in pact's queue; an OSError from that send (and a
 *     name that does not resolve) goes to error_received() from inside
 *     sendto(), as in asyncio;
 *   - an address the socket module would refuse (not a tuple, a port out
 *     of range, None on an unconnected socket) ends the transport as
 *     asyncio's does: the exception handler hears "Fatal write error on
 *     datagram transport" and connection_lost() gets the exception;
 *   - after close() or abort() datagrams are dropped, and from the fifth
 *     on each is logged ("socket.send() raised exception."), as asyncio.
 *
 * An exception escaping datagram_received or error_received is reported to
 * the loop's exception handler and the transport goes on, as in asyncio
 * (there it escapes the reader callback, which the loop reports).
 *
 * Addresses are converted as the socket module converts them (tuples for
 * AF_INET/AF_INET6, str or bytes paths for AF_UNIX). The last address
 * received and the last one sent to are kept with their sockaddr: an echo
 * that answers with the address it was given converts nothing, and a peer
 * that sends again gets the same object (a tuple of str and ints, a str or
 * bytes path: it cannot change), equal to the new one asyncio would make.
 * One address, not a few: under callgrind a cache of four saved about 500
 * instructions a datagram when four peers took turns, and cost about 140
 * when sixteen did. What a server answering many peers pays is the
 * conversion: an IPv4 address is converted without inet_ntop and
 * Py_BuildValue, with which a datagram from another peer than the last
 * cost about 2,500 instructions more than one from the same (now 570).
 * A datagram's bytes object is the loop's spare when nobody kept the last
 * one (endpoint.c, "Received bytes"), as the stream transport's are.
 *
 * Lifetime and loop close are the stream transport's (transport.c): the
 * transport holds itself from open until pact's connection_lost, the
 * socket object keeps its fd number until then and is detached; left open
 * at loop close it keeps a duplicate fd and warns when collected. */
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <structmember.h>

/* asyncio counts the bytes of the datagrams waiting; pact's count adds 8
 * per datagram (so that empty ones count too) and is corrected by this. */
#define PACT_DATAGRAM_OVERHEAD 8
typedef struct {
    /* sock is NULL after connection_lost (asyncio's _sock is None) */
    PACT_PY_ENDPOINT_FIELDS
    pact_datagram *ep;    /* NULL after connection_lost */
    PyObject *address;  /* the remote address given, or NULL */
    int family;
    int connected; /* the socket has a peer: send() ignores the address */
    unsigned conn_lost; /* asyncio's _conn_lost: counts dropped sends */
    uint64_t queued;    /* datagrams handed to pact's queue */
    int reading_held;   /* until connection_made's turn (made_soon) */
    /* The last address received, as a sockaddr and as Python has it. */
    struct sockaddr_storage recv_ss;
    socklen_t recv_len;
    PyObject *recv_addr;
    /* The last address sent to (an immutable object) and its sockaddr. */
    struct sockaddr_storage send_ss;
    socklen_t send_len;
    PyObject *send_addr;
} DatagramObject;

static PyObject *datagram_type;

static struct {
    PyObject *connection_made;
    PyObject *datagram_received;
    PyObject *error_received;
    PyObject *connection_lost;
    PyObject *pause_writing;
    PyObject *resume_writing;
} method;

static PyObject *socket_getaddrinfo; /* socket.getaddrinfo */

/* ---- protocol calls ------------------------------------------------------ */

static PyObject *protocol_call(DatagramObject *self, PyObject *name,
                               PyObject *a1, PyObject *a2)
{
    return pact_py_endpoint_call(PACT_PY_ENDPOINT(self), name, a1, a2);
}

static void report_exception(DatagramObject *self, PyObject *message)
{
    pact_py_endpoint_report(PACT_PY_ENDPOINT(self), message);
}

/* A protocol callback raised: asyncio makes these calls from its reader
 * callback or from handles of their own, so it is reported as a handle's
 * exception, and the transport goes on. */
static void callback_failed(DatagramObject *self, PyObject *name, PyObject *a1,
                            PyObject *a2)
{
    pact_py_endpoint_callback_failed(PACT_PY_ENDPOINT(self), name, a1, a2);
}

/* asyncio's _fatal_error: the transport ends with the exception. */
static void fatal_error(DatagramObject *self, const char *message)
{
    pact_py_endpoint_fatal_error(PACT_PY_ENDPOINT(self), message,
                                 self->ep != NULL);
    if (self->ep) {
        self->closing = 1;
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_datagram_abort(self->ep);
    }
}

/* ---- addresses ----------------------------------------------------------- */

/* An IPv4 address in dotted decimal, as inet_ntop(AF_INET) writes it
 * (glibc's formats with sprintf: about 1,700 instructions a call under
 * callgrind, which a server answering many peers paid for every datagram
 * from a peer other than the last one); its length, without a NUL. */
static size_t format_ipv4(const struct in_addr *a, char *out)
{
    const unsigned char *octet = (const unsigned char *)&a->s_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = octet[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        if (i < 3)
            *p++ = '.';
    }
    return (size_t)(p - out);
}

/* (host, port) for AF_INET, built directly: Py_BuildValue parses its
 * format and decodes the host as UTF-8 (about 500 instructions more). */
static PyObject *ipv4_tuple(const struct sockaddr_in *in)
{
    char text[sizeof "255.255.255.255"];
    size_t n = format_ipv4(&in->sin_addr, text);
    PyObject *host = PyUnicode_New((Py_ssize_t)n, 127);
    if (!host)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(host), text, n);
    PyObject *port = PyLong_FromLong(ntohs(in->sin_port));
    if (!port) {
        Py_DECREF(host);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (!pair) {
        Py_DECREF(host);
        Py_DECREF(port);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, host);
    PyTuple_SET_ITEM(pair, 1, port);
    return pair;
}

/* A sockaddr as the socket module returns it (makesockaddr). */
static PyObject *address_to_python(const struct sockaddr *sa, socklen_t len)
{
    if (!sa || len == 0)
        Py_RETURN_NONE;
    char host[INET6_ADDRSTRLEN];
    switch (sa->sa_family) {
    case AF_INET:
        return ipv4_tuple((const struct sockaddr_in *)(const void *)sa);
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host))
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port),
                             (unsigned)ntohl(in6->sin6_flowinfo),
                             (unsigned)in6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const void *)sa;
        size_t path_len = len > offsetof(struct sockaddr_un, sun_path)
                              ? len - offsetof(struct sockaddr_un, sun_path)
                              : 0;
        if (path_len == 0)
            Py_RETURN_NONE; /* an unnamed sender, as recvfrom() says */
        if (un->sun_path[0] == '\0') /* Linux's abstract namespace */
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)path_len);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path,
                                                (Py_ssize_t)strnlen(un->sun_path,
                                                                    path_len));
    }
    default:
        return Py_BuildValue("(iy#)", sa->sa_family, sa->sa_data,
                             (Py_ssize_t)sizeof sa->sa_data);
    }
}

/* The socket module's host argument: str (IDNA-encoded when not ASCII),
 * bytes or bytearray. A new bytes object, or NULL with TypeError. */
static PyObject *host_bytes(PyObject *host)
{
    if (PyUnicode_Check(host)) {
        if (PyUnicode_IS_ASCII(host))
            return PyUnicode_AsASCIIString(host);
        return PyUnicode_AsEncodedString(host, "idna", NULL);
    }
    if (PyBytes_Check(host))
        return Py_NewRef(host);
    if (PyByteArray_Check(host))
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(host),
                                         PyByteArray_GET_SIZE(host));
    PyErr_Format(PyExc_TypeError, "str, bytes or bytearray expected, not %s",
                 Py_TYPE(host)->tp_name);
    return NULL;
}

/* The socket module's setipaddr(): '' is any address, '<broadcast>' the
 * broadcast address (IPv4), a numeric address is taken as is, anything
 * else is resolved (socket.getaddrinfo: its gaierror is an OSError). On
 * success *scope gets the scope id a resolved IPv6 name came with. */
static int host_address(const char *name, int family, void *addr,
                        uint32_t *scope)
{
    *scope = 0;
    if (name[0] == '\0') {
        memset(addr, 0, family == AF_INET ? 4 : 16);
        return 0;
    }
    if (family == AF_INET && (strcmp(name, "<broadcast>") == 0 ||
                              strcmp(name, "255.255.255.255") == 0)) {
        uint32_t all = INADDR_BROADCAST;
        memcpy(addr, &all, 4);
        return 0;
    }
    if (strcmp(name, "<broadcast>") == 0) {
        PyErr_SetString(PyExc_OSError, "address family mismatched");
        return -1;
    }
    if (inet_pton(family, name, addr) == 1)
        return 0;
    PyObject *infos = PyObject_CallFunction(socket_getaddrinfo, "sOi", name,
                                            Py_None, family);
    if (!infos)
        return -1;
    int r = -1;
    PyObject *sa = NULL;
    if (PyList_Check(infos) && PyList_GET_SIZE(infos) > 0) {
        PyObject *info = PyList_GET_ITEM(infos, 0);
        if (PyTuple_Check(info) && PyTuple_GET_SIZE(info) == 5)
            sa = PyTuple_GET_ITEM(info, 4);
    }
    PyObject *h = sa && PyTuple_Check(sa) && PyTuple_GET_SIZE(sa) >= 2
                      ? PyTuple_GET_ITEM(sa, 0)
                      : NULL;
    const char *text = h && PyUnicode_Check(h) ? PyUnicode_AsUTF8(h) : NULL;
    if (text && inet_pton(family, text, addr) == 1) {
        if (family == AF_INET6 && PyTuple_GET_SIZE(sa) >= 4)
            *scope = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(sa, 3));
        r = PyErr_Occurred() ? -1 : 0;
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_OSError, "getaddrinfo() returned no usable address");
    }
    Py_DECREF(infos);
    return r;
}

static int port_in_range(int port)
{
    if (port < 0 || port > 0xffff) {
        PyErr_SetString(PyExc_OverflowError, "sendto(): port must be 0-65535.");
        return 0;
    }
    return 1;
}

/* The socket module's getsockaddrarg() for sendto(), with its exceptions
 * and messages. 0, or -1 with the exception set. */
static int address_from_python(int family, PyObject *addr,
                               struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        PyObject *encoded = NULL;
        Py_buffer path;
        if (PyUnicode_Check(addr)) {
            encoded = PyUnicode_EncodeFSDefault(addr);
            if (!encoded)
                return -1;
            addr = encoded;
        }
        if (PyObject_GetBuffer(addr, &path, PyBUF_SIMPLE) < 0) {
            Py_XDECREF(encoded);
            return -1;
        }
        int abstract = path.len > 0 && ((const char *)path.buf)[0] == '\0';
        size_t need = (size_t)path.len + (abstract ? 0 : 1);
        if (need > sizeof un->sun_path) {
            PyBuffer_Release(&path);
            Py_XDECREF(encoded);
            PyErr_SetString(PyExc_OSError, "AF_UNIX path too long");
            return -1;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path.buf, (size_t)path.len);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + need);
        PyBuffer_Release(&path);
        Py_XDECREF(encoded);
        return 0;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_OSError, "sendto(): bad family");
        return -1;
    }
    if (!PyTuple_Check(addr)) {
        PyErr_Format(PyExc_TypeError, "sendto(): %s address must be tuple, not %.500s",
                     family == AF_INET ? "AF_INET" : "AF_INET6",
                     Py_TYPE(addr)->tp_name);
        return -1;
    }
    PyObject *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    int ok = family == AF_INET
                 ? PyArg_ParseTuple(addr, "Oi;AF_INET address must be a pair "
                                          "(host, port)", &host, &port)
                 : PyArg_ParseTuple(addr, "Oi|II;AF_INET6 address must be a tuple "
                                          "(host, port[, flowinfo[, scopeid]])",
                                    &host, &port, &flowinfo, &scope_id);
    if (!ok) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            port_in_range(-1);
        }
        return -1;
    }
    PyObject *name = host_bytes(host);
    if (!name)
        return -1;
    if (strlen(PyBytes_AS_STRING(name)) != (size_t)PyBytes_GET_SIZE(name)) {
        Py_DECREF(name);
        PyErr_SetString(PyExc_TypeError, "host name must not contain null character");
        return -1;
    }
    uint32_t resolved_scope;
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        int r = host_address(PyBytes_AS_STRING(name), AF_INET, &in->sin_addr,
                             &resolved_scope);
        Py_DECREF(name);
        if (r < 0 || !port_in_range(port))
            return -1;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    int r = host_address(PyBytes_AS_STRING(name), AF_INET6, &in6->sin6_addr,
                         &resolved_scope);
    Py_DECREF(name);
    if (r < 0 || !port_in_range(port))
        return -1;
    if (flowinfo > 0xfffff) {
        PyErr_SetString(PyExc_OverflowError, "sendto(): flowinfo must be 0-1048575.");
        return -1;
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    in6->sin6_flowinfo = htonl(flowinfo);
    in6->sin6_scope_id = scope_id ? scope_id : resolved_scope;
    *len = sizeof *in6;
    return 0;
}

/* An address object that cannot change: its sockaddr may be kept. */
static int is_immutable_address(PyObject *addr)
{
    if (PyUnicode_CheckExact(addr) || PyBytes_CheckExact(addr))
        return 1;
    if (!PyTuple_CheckExact(addr))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(addr); i++) {
        PyObject *item = PyTuple_GET_ITEM(addr, i);
        if (!PyUnicode_CheckExact(item) && !PyLong_CheckExact(item) &&
            !PyBytes_CheckExact(item))
            return 0;
    }
    return 1;
}

/* ---- pact's callbacks ---------------------------------------------------- */

/* connection_made's turn is queued as asyncio's transports queue it, and
 * reception starts after it, as theirs (transport.c, made_soon, says
 * why): pact's receiving is paused until then. */
static void made_soon(DatagramObject *self)
{
    pact_py_endpoint_made_soon(PACT_PY_ENDPOINT(self));
    if (self->made_turn == PACT_PY_MADE_QUEUED &&
        pact_datagram_pause_reading(self->ep) == 0)
        self->reading_held = 1;
}

/* The protocol's connection_made, once, then the waiter's result. */
static void deliver_made(DatagramObject *self)
{
    self->made_turn = PACT_PY_MADE_DONE;
    PyObject *r = protocol_call(self, method.connection_made, (PyObject *)self,
                                NULL);
    if (!r)
        callback_failed(self, method.connection_made, (PyObject *)self, NULL);
    Py_XDECREF(r);
    if (self->reading_held) {
        self->reading_held = 0;
        if (self->ep && !self->closing && !pact_datagram_is_closing(self->ep))
            pact_datagram_resume_reading(self->ep);
    }
    pact_py_endpoint_made(PACT_PY_ENDPOINT(self));
}

static void on_connection_made(pact_datagram *ep, void *user)
{
    (void)ep;
    DatagramObject *self = user;
    self->made = 1;
    if (self->made_turn == PACT_PY_MADE_NONE)
        deliver_made(self); /* no turn could be queued */
}

static void on_datagram(pact_datagram *ep, const void *data, size_t len,
                        const struct sockaddr *addr, socklen_t addrlen,
                        void *user)
{
    (void)ep;
    DatagramObject *self = user;
    LoopObject *loop = self->loop;
    size_t room;
    PyObject *bytes = pact_py_received_bytes(loop, data, len, &room);
    if (!bytes) {
        callback_failed(self, method.datagram_received, NULL, NULL);
        return;
    }
    PyObject *from;
    if (addr && self->recv_addr && addrlen == self->recv_len &&
        memcmp(addr, &self->recv_ss, addrlen) == 0) {
        from = Py_NewRef(self->recv_addr);
    } else {
        from = address_to_python(addr, addrlen);
        if (!from) {
            callback_failed(self, method.datagram_received, NULL, NULL);
            pact_py_received_bytes_done(loop, bytes, room);
            return;
        }
        if (addr && addrlen <= sizeof self->recv_ss) {
            memcpy(&self->recv_ss, addr, addrlen);
            self->recv_len = addrlen;
            Py_XSETREF(self->recv_addr, Py_NewRef(from));
        }
    }
    PyObject *r = protocol_call(self, method.datagram_received, bytes, from);
    if (!r)
        callback_failed(self, method.datagram_received, bytes, from);
    Py_XDECREF(r);
    pact_py_received_bytes_done(loop, bytes, room);
    Py_DECREF(from);
}

static void call_error_received(DatagramObject *self, PyObject *exc)
{
    PyObject *r = protocol_call(self, method.error_received, exc, NULL);
    if (!r)
        callback_failed(self, method.error_received, exc, NULL);
    Py_XDECREF(r);
}

static void on_error(pact_datagram *ep, int err, const struct sockaddr *addr,
                     socklen_t addrlen, void *user)
{
    (void)ep;
    (void)addr;
    (void)addrlen;
    DatagramObject *self = user;
    /* A queued send failed before connection_made's turn (reception waits
     * for it): connection_made first. */
    if (self->made_turn == PACT_PY_MADE_QUEUED)
        deliver_made(self);
    PyObject *exc = pact_py_exception_for(err);
    if (!exc) {
        PyErr_WriteUnraisable((PyObject *)self);
        return;
    }
    call_error_received(self, exc);
    Py_DECREF(exc);
}

/* The protocol's connection_lost, once. */
static void deliver_lost(DatagramObject *self, int err)
{
    self->lost_turn = PACT_PY_LOST_DONE;
    PyObject *exc = self->lost_exc ? Py_NewRef(self->lost_exc)
                                   : pact_py_exception_for(err);
    Py_CLEAR(self->lost_exc);
    if (!exc) {
        PyErr_WriteUnraisable((PyObject *)self);
        exc = Py_NewRef(Py_None);
    }
    PyObject *r = protocol_call(self, method.connection_lost, exc, NULL);
    if (!r)
        callback_failed(self, method.connection_lost, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(r);
}

/* As asyncio's _call_connection_lost after the protocol's call: the
 * socket and the protocol are let go. */
static void let_go(DatagramObject *self)
{
    Py_CLEAR(self->sock);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->context);
}

static void on_connection_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    DatagramObject *self = user;
    self->ep = NULL;
    self->closing = 1;
    if (self->orphaned) {
        /* Left open at loop close: the protocol hears nothing (asyncio's
         * loop.close() calls no protocol); the orphan keeps its duplicate. */
        if (self->sock) {
            PyObject *d = PyObject_CallMethod(self->sock, "detach", NULL);
            Py_XDECREF(d);
            if (!d)
                PyErr_Clear();
        }
        Py_CLEAR(self->waiter);
        Py_CLEAR(self->context);
        Py_CLEAR(self->self_ref); /* may free self: last */
        return;
    }
    if (self->made_turn == PACT_PY_MADE_QUEUED &&
        self->lost_turn == PACT_PY_LOST_NONE && !self->loop->closing) {
        /* Ended before connection_made's turn: connection_lost takes one
         * behind it. */
        if (!self->lost_exc && err && !(self->lost_exc = pact_py_exception_for(err)))
            PyErr_Clear();
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
    }
    /* The program ended it: connection_lost has its turn in the ready
     * queue (pact_py_endpoint_lost_soon), unless the loop is closing and
     * drops that queue. */
    int turn_waits = self->lost_turn == PACT_PY_LOST_QUEUED &&
                     !self->loop->closing;
    if (self->made_turn == PACT_PY_MADE_QUEUED && !turn_waits)
        deliver_made(self);
    if (self->lost_turn != PACT_PY_LOST_DONE && !turn_waits)
        deliver_lost(self, err);
    pact_py_endpoint_lost(PACT_PY_ENDPOINT(self), "detach", err);
    if (!turn_waits)
        let_go(self);
    Py_CLEAR(self->self_ref); /* may free self (the turn's handle holds it
                                 while it waits): last */
}

/* The handle pact_py_endpoint_made_soon queued. */
static PyObject *Datagram_connection_made_turn(DatagramObject *self,
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
static PyObject *Datagram_connection_lost_turn(DatagramObject *self,
                                               PyObject *unused)
{
    (void)unused;
    if (self->lost_turn != PACT_PY_LOST_QUEUED)
        Py_RETURN_NONE;
    if (self->ep && !self->made && self->made_turn != PACT_PY_MADE_DONE) {
        /* Ended before pact's connection_made: pact calls both, in
         * order. */
        self->lost_turn = PACT_PY_LOST_NONE;
        Py_RETURN_NONE;
    }
    deliver_lost(self, 0);
    if (!self->ep) /* pact's end came first and left these */
        let_go(self);
    /* SystemExit from connection_lost: raised from the handle, as
     * asyncio raises it from its own. */
    if (pact_py_raise_kept_exception(self->loop) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static void on_pause_writing(pact_datagram *ep, void *user)
{
    (void)ep;
    DatagramObject *self = user;
    if (self->protocol_paused)
        return;
    self->protocol_paused = 1;
    PyObject *r = protocol_call(self, method.pause_writing, NULL, NULL);
    if (!r) {
        /* asyncio's _maybe_pause_protocol: reported, the transport goes on. */
        PyObject *msg = PyUnicode_FromString("protocol.pause_writing() failed");
        report_exception(self, msg);
        Py_XDECREF(msg);
    }
    Py_XDECREF(r);
}

static void on_resume_writing(pact_datagram *ep, void *user)
{
    (void)ep;
    DatagramObject *self = user;
    if (!self->protocol_paused)
        return;
    self->protocol_paused = 0;
    PyObject *r = protocol_call(self, method.resume_writing, NULL, NULL);
    if (!r) {
        PyObject *msg = PyUnicode_FromString("protocol.resume_writing() failed");
        report_exception(self, msg);
        Py_XDECREF(msg);
    }
    Py_XDECREF(r);
}

static const pact_datagram_protocol datagram_protocol = {
    .connection_made = on_connection_made,
    .datagram_received = on_datagram,
    .error_received = on_error,
    .connection_lost = on_connection_lost,
    .pause_writing = on_pause_writing,
    .resume_writing = on_resume_writing,
};

/* ---- the transport ------------------------------------------------------- */

/* DatagramTransport._open(loop, sock, protocol, address, waiter, extra):
 * pact takes the socket's fd (the socket object is detached at
 * connection_lost); connection_made has its turn in the ready queue
 * (pact_py_endpoint_made_soon), then the waiter's result. */
static PyObject *Datagram_open(PyObject *cls, PyObject *args)
{
    PyObject *loop, *sock, *protocol, *address, *waiter, *extra;
    if (!PyArg_ParseTuple(args, "OOOOOO:_open", &loop, &sock, &protocol,
                          &address, &waiter, &extra))
        return NULL;
    LoopObject *lo = pact_py_open_loop(loop);
    if (!lo)
        return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    int connected = getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0;
    DatagramObject *self =
        (DatagramObject *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (!self)
        return NULL;
    self->family = local.ss_family;
    self->connected = connected;
    if (pact_py_endpoint_init(PACT_PY_ENDPOINT(self), extra, lo, protocol,
                              sock, waiter) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (address != Py_None && PyObject_IsTrue(address) == 1)
        self->address = Py_NewRef(address);
    if (PyErr_Occurred()) {
        Py_DECREF(self);
        return NULL;
    }
    pact_datagram_options opts;
    pact_datagram_options_init(&opts);
    /* asyncio receives up to 256 KiB at a time (its transports' max_size),
     * pact by default as much as the family allows: the same for UDP. */
    int r = pact_datagram_adopt(lo->loop, fd, &opts, &datagram_protocol, self,
                                &self->ep);
    if (r < 0) {
        self->ep = NULL;
        /* pact closed the fd: the socket object must not close it too. */
        PyObject *d = PyObject_CallMethod(sock, "detach", NULL);
        Py_XDECREF(d);
        PyErr_Clear();
        Py_DECREF(self);
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* pact turns on IP_RECVERR, which reports ICMP errors (port
     * unreachable, ...) also on an unconnected socket. asyncio's and
     * uvloop's do not: put the socket back as the program made it, so
     * error_received hears what it hears on asyncio. */
    int off = 0;
    if (self->family == AF_INET || self->family == AF_INET6)
        setsockopt(fd, SOL_IP, IP_RECVERR, &off, sizeof off);
    if (self->family == AF_INET6)
        setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &off, sizeof off);
    self->self_ref = Py_NewRef((PyObject *)self);
    made_soon(self);
    return (PyObject *)self;
}

/* A send that cannot happen (closed, closing, lost): dropped and counted,
 * logged from the fifth on, as asyncio does. */
static PyObject *drop_send(DatagramObject *self)
{
    return pact_py_drop_write(&self->conn_lost);
}

/* Datagrams in pact's queue (handed over, not yet sent, failed or
 * dropped). */
static uint64_t datagrams_waiting(const DatagramObject *self)
{
    pact_datagram_stats st;
    if (!self->ep || pact_datagram_get_stats(self->ep, &st) < 0)
        return 0;
    uint64_t done = st.sent + st.send_errors + st.dropped;
    return self->queued > done ? self->queued - done : 0;
}

static size_t write_buffer_size(const DatagramObject *self)
{
    if (!self->ep)
        return 0;
    size_t size = pact_datagram_write_buffer_size(self->ep);
    size_t overhead = (size_t)datagrams_waiting(self) * PACT_DATAGRAM_OVERHEAD;
    return size > overhead ? size - overhead : 0;
}

static PyObject *Datagram_sendto(DatagramObject *self, PyObject *const *args,
                                 Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "addr"};
    PyObject *data = NULL, *addr = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "sendto() takes from 1 to 2 positional arguments but %zd were given",
                     nargs);
        return NULL;
    }
    if (nargs >= 1)
        data = args[0];
    if (nargs == 2)
        addr = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int slot = -1;
        for (int j = 0; j < 2; j++)
            if (PyUnicode_CompareWithASCIIString(k, names[j]) == 0)
                slot = j;
        if (slot < 0 || slot < nargs) {
            PyErr_Format(PyExc_TypeError,
                         slot < 0 ? "sendto() got an unexpected keyword argument '%U'"
                                  : "sendto() got multiple values for argument '%U'",
                         k);
            return NULL;
        }
        if (slot == 0)
            data = args[nargs + i];
        else
            addr = args[nargs + i];
    }
    if (!data) {
        PyErr_SetString(PyExc_TypeError,
                        "sendto() missing 1 required positional argument: 'data'");
        return NULL;
    }
    if (pact_py_check_data(data) < 0)
        return NULL;
    if (self->orphaned) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE; /* asyncio 3.11 sends no empty datagram */
    }
    if (self->address) {
        if (addr != Py_None) {
            int same = PyObject_RichCompareBool(addr, self->address, Py_EQ);
            if (same < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
            if (!same) {
                PyBuffer_Release(&view);
                return PyErr_Format(PyExc_ValueError,
                                    "Invalid address: must be None or %S",
                                    self->address);
            }
        }
        addr = self->address;
    }
    /* After close() or an error, as asyncio's datagram transport: while
     * datagrams still wait, more are queued behind them (pact takes them
     * while its close drains the queue); with none waiting, one made with
     * remote_addr drops them, and one without sends at once, its socket
     * being open until connection_lost. */
    if (!self->ep ||
        (self->address && (self->closing || pact_datagram_is_closing(self->ep)) &&
         pact_datagram_write_buffer_size(self->ep) == 0)) {
        PyBuffer_Release(&view);
        return drop_send(self);
    }
    /* Where to: the connected peer (send() ignores the address, as
     * asyncio's does), else the address converted as the socket module
     * converts it. */
    const struct sockaddr *sa = NULL;
    socklen_t salen = 0;
    if (!self->connected) {
        if (addr == self->recv_addr && self->recv_len) {
            sa = (const struct sockaddr *)&self->recv_ss;
            salen = self->recv_len;
        } else if (addr == self->send_addr && self->send_len) {
            sa = (const struct sockaddr *)&self->send_ss;
            salen = self->send_len;
        } else {
            struct sockaddr_storage ss;
            socklen_t len;
            if (address_from_python(self->family, addr, &ss, &len) < 0) {
                PyBuffer_Release(&view);
                if (PyErr_ExceptionMatches(PyExc_OSError)) {
                    /* asyncio: the failed sendto()'s OSError (a name that
                     * does not resolve, say) goes to error_received. */
                    PyObject *et, *ev, *tb;
                    PyErr_Fetch(&et, &ev, &tb);
                    PyErr_NormalizeException(&et, &ev, &tb);
                    if (tb && ev)
                        PyException_SetTraceback(ev, tb);
                    call_error_received(self, ev);
                    Py_XDECREF(et);
                    Py_XDECREF(ev);
                    Py_XDECREF(tb);
                    Py_RETURN_NONE;
                }
                if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
                    PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
                    return NULL;
                fatal_error(self, "Fatal write error on datagram transport");
                Py_RETURN_NONE;
            }
            self->send_ss = ss;
            self->send_len = len;
            if (is_immutable_address(addr))
                Py_XSETREF(self->send_addr, Py_NewRef(addr));
            else
                Py_CLEAR(self->send_addr);
            sa = (const struct sockaddr *)&self->send_ss;
            salen = len;
        }
    }
    /* Nothing waiting: send now, as asyncio does. */
    if (pact_datagram_write_buffer_size(self->ep) == 0) {
        int fd = pact_datagram_fd(self->ep);
        ssize_t n;
        do
            n = sendto(fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL,
                       sa, salen);
        while (n < 0 && errno == EINTR);
        if (n >= 0) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            int err = errno;
            PyBuffer_Release(&view);
            PyObject *exc = pact_py_exception_for(-err);
            if (!exc)
                return NULL;
            call_error_received(self, exc);
            Py_DECREF(exc);
            Py_RETURN_NONE;
        }
    }
    /* The kernel's buffer is full (or datagrams wait already): pact
     * queues a copy and sends it when the socket takes it, in order. */
    int r = pact_datagram_sendto(self->ep, view.buf, (size_t)view.len, sa, salen);
    PyBuffer_Release(&view);
    if (r == -ESHUTDOWN)
        return drop_send(self);
    if (r < 0) {
        errno = -r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->queued++;
    Py_RETURN_NONE;
}

/* Releases what an orphan kept open (its duplicate fd). */
static void orphan_release(DatagramObject *self)
{
    if (!self->orphaned)
        return;
    self->orphaned = 0;
    self->closing = 1;
    if (self->orphan_fd >= 0) {
        close(self->orphan_fd);
        self->orphan_fd = -1;
    }
    Py_CLEAR(self->sock);
}

/* Called by the loop's close() for each transport still open: it stays
 * open (on a duplicate of its fd) until closed or collected, as asyncio's. */
static PyObject *Datagram_orphan(DatagramObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->ep || self->closing || self->orphaned)
        Py_RETURN_NONE;
    self->orphan_fd = fcntl(pact_datagram_fd(self->ep), F_DUPFD_CLOEXEC, 0);
    if (self->orphan_fd < 0)
        Py_RETURN_NONE; /* closed with the loop, connection_lost and all */
    self->orphaned = 1;
    Py_RETURN_NONE;
}

static void Datagram_finalize(DatagramObject *self)
{
    if (!self->orphaned)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (PyErr_ResourceWarning((PyObject *)self, 1, "unclosed transport %R",
                              (PyObject *)self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    orphan_release(self);
    PyErr_Restore(et, ev, tb);
}

static PyObject *Datagram_close(DatagramObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned) {
        orphan_release(self);
        Py_RETURN_NONE;
    }
    if (self->ep && !self->closing) {
        self->closing = 1;
        if (write_buffer_size(self) == 0)
            pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_datagram_close(self->ep);
    }
    Py_RETURN_NONE;
}

static PyObject *Datagram_abort(DatagramObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned) {
        orphan_release(self);
        Py_RETURN_NONE;
    }
    if (self->ep) {
        self->closing = 1;
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_datagram_abort(self->ep);
    }
    Py_RETURN_NONE;
}

/* _force_close(exc): asyncio's end after a fatal error: what is queued is
 * dropped, connection_lost gets exc. */
static PyObject *Datagram_force_close(DatagramObject *self, PyObject *exc)
{
    if (self->orphaned) {
        orphan_release(self);
        Py_RETURN_NONE;
    }
    if (self->ep && !self->lost_exc) {
        self->closing = 1;
        if (exc != Py_None)
            self->lost_exc = Py_NewRef(exc);
        pact_py_endpoint_lost_soon(PACT_PY_ENDPOINT(self));
        pact_datagram_abort(self->ep);
    }
    Py_RETURN_NONE;
}

static PyObject *Datagram_is_closing(DatagramObject *self, PyObject *unused)
{
    (void)unused;
    if (self->orphaned)
        return PyBool_FromLong(0);
    return PyBool_FromLong(!self->ep || self->closing ||
                           pact_datagram_is_closing(self->ep));
}

static PyObject *Datagram_get_write_buffer_size(DatagramObject *self,
                                                PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(write_buffer_size(self));
}

static PyObject *Datagram_get_write_buffer_limits(DatagramObject *self,
                                                  PyObject *unused)
{
    (void)unused;
    size_t high = 64 * 1024, low = 16 * 1024;
    if (self->ep)
        pact_datagram_get_write_buffer_limits(self->ep, &high, &low);
    return Py_BuildValue("(nn)", (Py_ssize_t)low, (Py_ssize_t)high);
}

static PyObject *Datagram_set_write_buffer_limits(DatagramObject *self,
                                                  PyObject *args, PyObject *kwds)
{
    Py_ssize_t high, low;
    if (pact_py_write_buffer_limits(args, kwds, &high, &low) < 0)
        return NULL;
    if (self->ep) {
        int r = pact_datagram_set_write_marks(self->ep, (size_t)high,
                                              (size_t)low);
        if (r < 0) {
            errno = -r;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Datagram_set_protocol(DatagramObject *self, PyObject *protocol)
{
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_RETURN_NONE;
}

static PyObject *Datagram_repr(DatagramObject *self)
{
    int fd = self->ep ? pact_datagram_fd(self->ep) : -1;
    if (self->orphaned)
        fd = self->orphan_fd;
    const char *state = self->orphaned ? "open"
                        : !self->ep    ? "closed"
                        : (self->closing || pact_datagram_is_closing(self->ep))
                            ? "closing"
                            : "open";
    if (!self->ep || self->orphaned)
        return PyUnicode_FromFormat("<%s %s fd=%d>", Py_TYPE(self)->tp_name,
                                    state, fd);
    size_t bufsize = write_buffer_size(self);
    return PyUnicode_FromFormat("<%s %s fd=%d read=%s write=<%s, bufsize=%zu>>",
                                Py_TYPE(self)->tp_name, state, fd,
                                pact_datagram_is_reading(self->ep) ? "polling"
                                                                   : "idle",
                                pact_datagram_write_buffer_size(self->ep)
                                    ? "polling"
                                    : "idle",
                                bufsize);
}

static int Datagram_traverse(DatagramObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->address);
    Py_VISIT(self->recv_addr);
    Py_VISIT(self->send_addr);
    return pact_py_endpoint_traverse(PACT_PY_ENDPOINT(self), visit, arg);
}

static int Datagram_clear(DatagramObject *self)
{
    pact_py_endpoint_clear(PACT_PY_ENDPOINT(self));
    Py_CLEAR(self->address);
    Py_CLEAR(self->recv_addr);
    Py_CLEAR(self->send_addr);
    return 0;
}

static void Datagram_dealloc(DatagramObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(self);
    Datagram_clear(self);
    pact_py_endpoint_free(PACT_PY_ENDPOINT(self));
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Datagram_methods[] = {
    {"_open", (PyCFunction)Datagram_open, METH_VARARGS | METH_CLASS,
     "_open(loop, sock, protocol, address, waiter, extra) -> transport"},
    {"sendto", (PyCFunction)(void (*)(void))Datagram_sendto,
     METH_FASTCALL | METH_KEYWORDS, "sendto(data, addr=None)"},
    {"close", (PyCFunction)Datagram_close, METH_NOARGS, NULL},
    {"abort", (PyCFunction)Datagram_abort, METH_NOARGS, NULL},
    {"_force_close", (PyCFunction)Datagram_force_close, METH_O, NULL},
    {"_connection_made_turn", (PyCFunction)Datagram_connection_made_turn,
     METH_NOARGS, NULL},
    {"_connection_lost_turn", (PyCFunction)Datagram_connection_lost_turn,
     METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)Datagram_is_closing, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)Datagram_get_write_buffer_size,
     METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Datagram_get_write_buffer_limits,
     METH_NOARGS, NULL},
    {"set_write_buffer_limits",
     (PyCFunction)(void (*)(void))Datagram_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_protocol", pact_py_endpoint_get_protocol, METH_NOARGS, NULL},
    {"get_extra_info",
     (PyCFunction)(void (*)(void))pact_py_endpoint_get_extra_info,
     METH_FASTCALL | METH_KEYWORDS,
     "get_extra_info(name, default=None): what asyncio's transports tell"},
    {"set_protocol", (PyCFunction)Datagram_set_protocol, METH_O, NULL},
    {"_orphan", (PyCFunction)Datagram_orphan, METH_NOARGS,
     "_orphan(): the loop is closing; stay open as asyncio's transports do"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Datagram_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(DatagramObject, weakreflist),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(DatagramObject, dict), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *get_sock(DatagramObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->sock ? self->sock : Py_None);
}

static PyObject *get_address(DatagramObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->address ? self->address : Py_None);
}

static PyGetSetDef Datagram_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"_loop", pact_py_endpoint_get_loop, NULL, "the loop", NULL},
    {"_sock", (getter)get_sock, NULL,
     "the socket (None once the transport is closed), as asyncio's", NULL},
    {"_address", (getter)get_address, NULL,
     "the remote address given to create_datagram_endpoint, or None", NULL},
    {"_protocol_paused", pact_py_endpoint_get_protocol_paused, NULL,
     "pause_writing() was delivered and resume_writing() not yet", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Datagram_slots[] = {
    {Py_tp_members, Datagram_members},
    {Py_tp_getset, Datagram_getset},
    {Py_tp_doc, "A pact datagram endpoint (asyncio's datagram transport)."},
    {Py_tp_dealloc, Datagram_dealloc},
    {Py_tp_finalize, Datagram_finalize},
    {Py_tp_traverse, Datagram_traverse},
    {Py_tp_clear, Datagram_clear},
    {Py_tp_methods, Datagram_methods},
    {Py_tp_repr, Datagram_repr},
    {0, NULL},
};

static PyType_Spec Datagram_spec = {
    .name = "pact._pact.DatagramTransport",
    .basicsize = sizeof(DatagramObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Datagram_slots,
};

int pact_py_datagram_init(PyObject *module)
{
    static const pact_py_name names[] = {
        {&method.connection_made, "connection_made"},
        {&method.datagram_received, "datagram_received"},
        {&method.error_received, "error_received"},
        {&method.connection_lost, "connection_lost"},
        {&method.pause_writing, "pause_writing"},
        {&method.resume_writing, "resume_writing"},
    };
    if (pact_py_intern_names(names, sizeof names / sizeof names[0]) < 0)
        return -1;
    PyObject *socket_module = PyImport_ImportModule("socket");
    if (!socket_module)
        return -1;
    socket_getaddrinfo = PyObject_GetAttrString(socket_module, "getaddrinfo");
    Py_DECREF(socket_module);
    if (!socket_getaddrinfo)
        return -1;
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (!asyncio)
        return -1;
    /* Both: asyncio's own datagram transport is an asyncio.Transport (its
     * tests check that), and DatagramTransport is the documented type. */
    PyObject *dgram = PyObject_GetAttrString(asyncio, "DatagramTransport");
    PyObject *stream = PyObject_GetAttrString(asyncio, "Transport");
    Py_DECREF(asyncio);
    PyObject *bases = dgram && stream ? PyTuple_Pack(2, dgram, stream) : NULL;
    Py_XDECREF(dgram);
    Py_XDECREF(stream);
    if (!bases)
        return -1;
    datagram_type = pact_py_add_type(module, &Datagram_spec, bases);
    Py_DECREF(bases);
    return datagram_type ? 0 : -1;
}
