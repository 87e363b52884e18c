/* SPDX-License-Identifier: MIT */
/* Client connections: pact_connect_tcp() and pact_connect_unix().
 *
 * Each is one composite operation (PACT_OP_CUSTOM): its handle can be
 * cancelled with pact_op_cancel(), and its callback runs exactly once. Inside,
 * it runs a resolve (names go to the thread pool), then one connect per
 * address in turn; a Unix connect whose server's backlog is full (EAGAIN)
 * is retried after a delay doubling from 1 ms to 100 ms. Every socket it
 * opened is closed unless it became the transport handed to the callback;
 * a connect that completed before a cancel took effect is delivered, not
 * thrown away (docs/contract.md §4). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include "win/socket_calls.h" /* the socket calls below, on Winsock */
#else
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "error.h"
#include "stream.h"

#define UNIX_RETRY_FIRST_NS (1ull * 1000 * 1000)
#define UNIX_RETRY_MAX_NS (100ull * 1000 * 1000)

typedef struct connect_req {
    pact_loop *loop;
    pact_op self;
    const pact_protocol *proto;
    void *proto_user;
    pact_connect_cb cb;
    void *user;

    struct addrinfo *list; /* resolved addresses (names only) */
    struct addrinfo *cur;
    struct sockaddr_storage addr; /* the address being tried */
    socklen_t addrlen;
    int fd;
    pact_op inner; /* resolve, connect or back-off sleep in flight */
    int cancelled;
    int last_err;
    uint64_t retry_ns;
    pact_transport *transport;
    unsigned tried; /* addresses tried */
    char reason[192]; /* for pact_connect_error_message() */
} connect_req;

static void try_next_address(connect_req *req);

static void complete(connect_req *req, int result)
{
    pact_op_s *op = pact__op_lookup(req->loop, req->self);
    if (result < 0 && req->fd >= 0) {
        close(req->fd);
        req->fd = -EBADF;
    }
    pact__op_defer(req->loop, op, result);
}

/* The composite op's own callback: hands the outcome to the user. */
static void connect_finished(pact_loop *loop, const pact_completion *c, void *arg)
{
    connect_req *req = arg;
    if (req->list)
        freeaddrinfo(req->list);
    pact_connect_cb cb = req->cb;
    void *user = req->user;
    int err = (int)c->result;
    pact_transport *t = NULL;
    char reason[sizeof req->reason];
    memcpy(reason, req->reason, sizeof reason);
    if (err == 0) {
        /* The transport is made here, right before the user gets it: made
         * earlier, its connection_made (a call_soon) could run before this
         * deferred callback, and the protocol would be called before the
         * caller ever saw its transport. */
        pact_op_s *op = pact__op_lookup(loop, c->op);
        err = pact__transport_create(loop, req->fd, PACT_STREAM_SOCKET,
                                     req->proto, req->proto_user,
                                     op ? op->created_at : NULL, &t);
        req->fd = -EBADF; /* the transport's now (or closed on failure) */
        if (err < 0)
            t = NULL;
    }
    free(req);
    if (err == 0) {
        cb(loop, t, err, user);
        return;
    }
    pact_connect_failure saved;
    pact__connect_failure_begin(&saved, loop, err == -ECANCELED ? NULL : reason, 0);
    cb(loop, t, err, user);
    pact__connect_failure_end(&saved);
}

/* "connect to 192.0.2.1 port 443: Connection refused" for the reason. */
static void note_connect_failure(connect_req *req, int err)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    const struct sockaddr *sa = (const struct sockaddr *)&req->addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t n = (size_t)req->addrlen > offsetof(struct sockaddr_un, sun_path)
                       ? (size_t)req->addrlen - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        if (n && un->sun_path[0] == '\0') /* abstract: shown as '@' */
            snprintf(req->reason, sizeof req->reason, "connect to @%.*s: %s",
                     (int)(n - 1), un->sun_path + 1, pact_strerror(err));
        else
            snprintf(req->reason, sizeof req->reason, "connect to %.*s: %s",
                     (int)strnlen(un->sun_path, n), un->sun_path, pact_strerror(err));
        return;
    }
    if (req->tried > 1)
        snprintf(req->reason, sizeof req->reason,
                 "connect to %s port %u: %s (the last of %u addresses tried)",
                 host, port, pact_strerror(err), req->tried);
    else
        snprintf(req->reason, sizeof req->reason, "connect to %s port %u: %s",
                 host, port, pact_strerror(err));
}

static void connect_cancel(pact_loop *loop, pact_op_s *op)
{
    connect_req *req = op->user;
    req->cancelled = 1;
    if (req->inner)
        pact_op_cancel(loop, req->inner); /* its completion finishes the req */
}

/* Connected: the fd becomes a transport in connect_finished. */
static void become_transport(connect_req *req)
{
    complete(req, 0);
}

static void on_connected(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    connect_req *req = arg;
    req->inner = 0;
    if (c->result == 0) {
        become_transport(req); /* even if a cancel came too late */
        return;
    }
    close(req->fd);
    req->fd = -EBADF;
    if (req->cancelled || c->result == -ECANCELED) {
        complete(req, -ECANCELED);
        return;
    }
    req->last_err = (int)c->result;
    note_connect_failure(req, req->last_err);
    if (req->cur)
        req->cur = req->cur->ai_next;
    try_next_address(req);
}

static void connect_address(connect_req *req)
{
    req->tried++;
#ifdef _WIN32
    req->fd = pact__win_tcp_socket(req->addr.ss_family);
    if (req->fd < 0) {
        req->last_err = req->fd;
#else
    req->fd = socket(req->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (req->fd < 0) {
        req->last_err = -errno;
#endif
        note_connect_failure(req, req->last_err);
        req->fd = -EBADF;
        if (req->cur)
            req->cur = req->cur->ai_next;
        try_next_address(req);
        return;
    }
    int one = 1;
    setsockopt(req->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pact_op op = pact_connect(req->loop, req->fd, (struct sockaddr *)&req->addr,
                              req->addrlen, on_connected, req);
    if (op < 0) {
        complete(req, (int)op);
        return;
    }
    req->inner = op;
}

static void try_next_address(connect_req *req)
{
    if (!req->cur) {
        complete(req, req->last_err ? req->last_err : -EHOSTUNREACH);
        return;
    }
    memcpy(&req->addr, req->cur->ai_addr, req->cur->ai_addrlen);
    req->addrlen = req->cur->ai_addrlen;
    connect_address(req);
}

static void on_resolved(pact_loop *loop, const pact_completion *c, void *arg)
{
    connect_req *req = arg;
    req->inner = 0;
    if (req->cancelled || c->result == -ECANCELED) {
        complete(req, -ECANCELED);
        return;
    }
    if (c->result < 0) {
        if (c->gai_error)
            snprintf(req->reason, sizeof req->reason,
                     "cannot resolve the host name: %s", gai_strerror(c->gai_error));
        complete(req, (int)c->result);
        return;
    }
    req->list = pact_op_take_addrinfo(loop, c->op);
    req->cur = req->list;
    try_next_address(req);
}

static connect_req *request_new(pact_loop *loop, const pact_protocol *proto,
                                void *proto_user, pact_connect_cb cb, void *user,
                                void *created_at, pact_op *handle)
{
    connect_req *req = calloc(1, sizeof *req);
    if (!req) {
        *handle = -ENOMEM;
        return NULL;
    }
    int err;
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, -1, connect_finished, req, &err);
    if (!op) {
        free(req);
        *handle = err;
        return NULL;
    }
    op->custom_cancel = connect_cancel;
    req->loop = loop;
    req->proto = proto;
    req->proto_user = proto_user;
    req->cb = cb;
    req->user = user;
    req->fd = -EBADF;
    req->self = pact__op_start_custom(loop, op, created_at);
    *handle = req->self;
    return req;
}

static int check_args(pact_loop *loop, const pact_protocol *proto,
                      pact_connect_cb cb, const char *func)
{
    int r = pact__check_loop(loop, func);
    if (r)
        return r;
    if (!proto || !cb)
        return pact__misuse(loop, -EINVAL, func, "protocol or callback is NULL");
    return 0;
}

pact_op pact_connect_tcp(pact_loop *loop, const char *host, uint16_t port,
                         const pact_protocol *proto, void *proto_user,
                         pact_connect_cb cb, void *user)
{
    int r = check_args(loop, proto, cb, __func__);
    if (r)
        return r;
    if (!host)
        return PACT_MISUSE(loop, -EINVAL, "host is NULL");
    pact_op handle;
    connect_req *req = request_new(loop, proto, proto_user, cb, user,
                                   __builtin_return_address(0), &handle);
    if (!req)
        return handle;
    if (pact_sockaddr_parse(host, port, &req->addr, &req->addrlen) == 0) {
        connect_address(req);
        return handle;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    pact_op op = pact_getaddrinfo(loop, host, service, &hints, on_resolved, req);
    if (op < 0)
        complete(req, (int)op);
    else
        req->inner = op;
    return handle;
}

/* Unix sockets: Linux only (named pipes are Windows' counterpart). */
#ifndef _WIN32
static void unix_attempt(connect_req *req);

static void on_retry_timer(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    connect_req *req = arg;
    req->inner = 0;
    if (req->cancelled || c->result == -ECANCELED) {
        complete(req, -ECANCELED);
        return;
    }
    unix_attempt(req);
}

/* A Unix connect is immediate or refused; EAGAIN means the backlog is
 * full, so wait and try again rather than poll (the socket would never
 * become writable for a connect that was not queued). */
static void unix_attempt(connect_req *req)
{
    if (connect(req->fd, (struct sockaddr *)&req->addr, req->addrlen) == 0) {
        become_transport(req);
        return;
    }
    if (errno != EAGAIN) {
        int err = -errno;
        note_connect_failure(req, err);
        complete(req, err);
        return;
    }
    pact_op op = pact_sleep(req->loop, req->retry_ns, on_retry_timer, req);
    if (op < 0) {
        complete(req, (int)op);
        return;
    }
    req->inner = op;
    req->retry_ns = req->retry_ns * 2 > UNIX_RETRY_MAX_NS ? UNIX_RETRY_MAX_NS
                                                          : req->retry_ns * 2;
}

pact_op pact_connect_unix(pact_loop *loop, const char *path,
                          const pact_protocol *proto, void *proto_user,
                          pact_connect_cb cb, void *user)
{
    int r = check_args(loop, proto, cb, __func__);
    if (r)
        return r;
    struct sockaddr_un sun;
    socklen_t len;
    if (!path || pact__unix_address(path, &sun, &len) != 0)
        return PACT_MISUSE(loop, -EINVAL, "bad Unix socket path");
    pact_op handle;
    connect_req *req = request_new(loop, proto, proto_user, cb, user,
                                   __builtin_return_address(0), &handle);
    if (!req)
        return handle;
    memcpy(&req->addr, &sun, len);
    req->addrlen = len;
    req->retry_ns = UNIX_RETRY_FIRST_NS;
    req->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (req->fd < 0) {
        req->fd = -EBADF;
        complete(req, -errno);
        return handle;
    }
    unix_attempt(req);
    return handle;
}
#endif
