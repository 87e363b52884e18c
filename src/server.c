/* SPDX-License-Identifier: MIT */
/* Servers: a listening socket whose accepted connections become transports
 * with a protocol from the user's factory.
 *
 * One accept op is in flight at a time and is re-armed from its final
 * completion: a multishot accept where the engine has one (epoll, io_uring
 * since 5.19), which hands over every connection of a burst in one
 * iteration, else one pact_accept at a time. An error on one connection (ECONNABORTED, a reset before accept) never
 * stops the listener. Running out of descriptors or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) backs off for a moment and then keeps serving —
 * asyncio's proactor closed the listener here (CPython gh-93821). A connection
 * that the kernel hands over after close() is closed, never given to a
 * protocol. The listening fd is closed only after the pending accept has
 * called back (no fd-number reuse under an in-flight accept). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include "win/socket_calls.h" /* the socket calls below, on Winsock */
#else
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#include "endpoint.h"
#include "options.h"
#include "server.h"
#include "stream.h"

#define ACCEPT_BACKOFF_NS (100ull * 1000 * 1000)
#define MAX_WAITERS 8

/* The server is an endpoint (endpoint.h): closing once pact_server_close()
 * ran; busy while its accept is out; its connections are its children, so
 * it finishes (waiters woken) once the last one is gone, and its memory
 * outlives every connection that points to it. */
struct pact_server {
    pact_endpoint ep;
    int fd;
    pact_protocol_factory_cb factory;
    void *factory_user;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int port;
    /* The listener pact made has TCP_NODELAY, which Linux copies into
     * every socket accept returns: no setsockopt per connection. */
    int nodelay_inherited;

    pact_op accept_op;
    pact_handle backoff;
    uint64_t accept_errors;
    pact_transport *accepting; /* during the factory's call */

    struct {
        pact_call_cb cb;
        void *user;
    } waiters[MAX_WAITERS];
    int nwaiters;
};

static void arm_accept(pact_server *s);

/* The listener goes as soon as its accept is back, not once the
 * connections are gone: left open, the kernel would go on completing
 * handshakes into a backlog nobody accepts, and clients would hang instead
 * of being refused (asyncio closes its sockets in close()). */
static void close_listener(pact_server *s)
{
    if (!s->ep.closing || s->accept_op || s->fd < 0)
        return;
    close(s->fd);
    s->fd = -EBADF;
    if (s->unix_path[0] && s->unix_path[0] != '@')
        unlink(s->unix_path);
}

static int server_busy(const pact_endpoint *e)
{
    return pact_container_of(e, pact_server, ep)->accept_op != 0;
}

/* Closed, the accept back and the connections gone: wake the waiters. */
static void server_lost(pact_endpoint *e)
{
    pact_server *s = pact_container_of(e, pact_server, ep);
    close_listener(s);
    for (int i = 0; i < s->nwaiters; i++)
        s->waiters[i].cb(e->loop, s->waiters[i].user);
}

static void server_free(pact_endpoint *e)
{
    free(pact_container_of(e, pact_server, ep));
}

static void server_force_close(pact_endpoint *e)
{
    /* Its connections are loop resources too: each is aborted by itself. */
    pact_server_close(pact_container_of(e, pact_server, ep));
}

/* pact_server_set_ref(): its accept (or back-off timer) follows ref. */
static void server_set_ref(pact_endpoint *e, int ref)
{
    pact_server *s = pact_container_of(e, pact_server, ep);
    if (s->accept_op)
        pact_op_set_ref(e->loop, s->accept_op, ref);
    if (s->backoff)
        pact_handle_set_ref(e->loop, s->backoff, ref);
}

#ifndef _WIN32
/* A forked child frees the loop it inherited (endpoint.h): its copy of
 * the listening fd closed (the socket's path is the parent's: kept), the
 * memory freed. Its connections are endpoints of their own. */
static void server_forget(pact_endpoint *e)
{
    pact_server *s = pact_container_of(e, pact_server, ep);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -EBADF;
    server_free(e);
}
#endif

static const pact_endpoint_ops server_ops = {
    PACT_ENDPOINT_KIND("server"),
    .force_close = server_force_close,
    .busy = server_busy,
    .lost = server_lost,
    .free = server_free,
    .set_ref = server_set_ref,
#ifndef _WIN32
    .forget = server_forget,
#endif
};

/* What a fresh connection speaks until the factory has chosen: nothing
 * (its connection_made runs from a later callback, by then the factory's
 * protocol is in place). */
static const pact_protocol unchosen = {0};

/* The transport is made before the factory is asked, so that nothing can
 * fail once the factory has returned a protocol and its user: from then
 * on connection_made and connection_lost are owed exactly once, and the
 * protocol may free user in connection_lost. Made after, a failure to
 * create it (no memory, no callback slot) left the user the factory had
 * allocated with nobody to free it. A refusal closes the fresh
 * transport, which never called anything of the user's. */
static void serve_connection(pact_server *s, int fd)
{
    if (s->port > 0 && !s->nodelay_inherited) {
        /* Small writes leave at once, as on the sockets pact_connect_tcp()
         * makes (and as asyncio and libuv's users expect). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    pact_transport *t;
    if (pact__transport_create(s->ep.loop, fd, PACT_STREAM_SOCKET, &unchosen,
                               NULL, s->ep.res.created_at, &t) < 0) {
        s->accept_errors++; /* fd was closed by create; the factory never asked */
        return;
    }
    const pact_protocol *proto = NULL;
    void *user = NULL;
    /* The factory may close the server ("serve one, then stop"): it does
     * not finish before this connection is made and counted. */
    pact__endpoint_enter(&s->ep);
    s->accepting = t;
    int r = s->factory(s, s->factory_user, &proto, &user);
    s->accepting = NULL;
    if (r < 0 || !proto) {
        pact_transport_abort(t);
    } else {
        t->proto = proto;
        t->user = user;
        pact__endpoint_adopt(&t->ep, &s->ep);
    }
    pact__endpoint_leave(&s->ep);
}

static void backoff_over(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_server *s = arg;
    s->backoff = 0;
    arm_accept(s);
}

static void on_accept(pact_loop *loop, const pact_completion *c, void *arg)
{
    pact_server *s = arg;
    if (c->more) {
        /* One connection of a multishot accept; the op goes on. */
        if (c->result < 0)
            s->accept_errors++; /* it cost that connection only */
        else if (s->ep.closing)
            close((int)c->result); /* accepted after close: never served */
        else
            serve_connection(s, (int)c->result);
        return;
    }
    s->accept_op = 0;
    if (c->result >= 0) {
        if (s->ep.closing)
            close((int)c->result); /* accepted after close: never served */
        else
            serve_connection(s, (int)c->result);
    } else if (c->result != -ECANCELED) {
        s->accept_errors++;
        int err = (int)c->result;
        if (!s->ep.closing && (err == -EMFILE || err == -ENFILE ||
                            err == -ENOBUFS || err == -ENOMEM)) {
            if (pact_loop_debug(loop))
                pact__log(loop, "accept on fd %d: %s; retrying in 100 ms",
                          s->fd, pact_strerror(err));
            pact_handle h = pact_call_later(loop, ACCEPT_BACKOFF_NS,
                                            backoff_over, s);
            if (h > 0) {
                s->backoff = pact__endpoint_timer(&s->ep, h);
                return;
            }
        }
    }
    if (s->ep.closing) {
        close_listener(s);
        pact__endpoint_settle(&s->ep);
    } else {
        arm_accept(s);
    }
}

static void arm_accept(pact_server *s)
{
    if (s->ep.closing || s->accept_op || s->backoff)
        return;
    /* One multishot accept where the engine has it: a burst of
     * connections is taken in one iteration, not one per iteration. */
    pact_op op = pact__accept_multishot(s->ep.loop, s->fd, on_accept, s);
    if (op == -EOPNOTSUPP)
        op = pact_accept(s->ep.loop, s->fd, on_accept, s);
    if (op < 0) {
        pact__error(s->ep.loop, (int)op, "server on fd %d cannot accept", s->fd);
        /* Retry after the back-off: a failure to start the accept (-ENOMEM)
         * stopped the listener for good (found by test_faults). */
        pact_handle h = pact_call_later(s->ep.loop, ACCEPT_BACKOFF_NS,
                                        backoff_over, s);
        if (h > 0)
            s->backoff = pact__endpoint_timer(&s->ep, h);
        return;
    }
    s->accept_op = pact__endpoint_op(&s->ep, op);
}

int pact_server_set_ref(pact_server *s, int ref)
{
    if (!s)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(s);
    return pact__endpoint_set_ref(&s->ep, ref);
}

int pact_server_close(pact_server *s)
{
    if (!s)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(s);
    int r = pact__endpoint_begin_close(&s->ep);
    if (r)
        return r;
    if (s->backoff) {
        pact_handle_cancel(s->ep.loop, s->backoff);
        s->backoff = 0;
    }
    if (s->accept_op)
        pact_op_cancel(s->ep.loop, s->accept_op);
    close_listener(s);
    pact__endpoint_settle(&s->ep);
    return 0;
}

int pact_server_wait_closed(pact_server *s, pact_call_cb cb, void *user)
{
    if (!s || !cb)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(s);
    if (s->nwaiters == MAX_WAITERS)
        return -ENOSPC;
    s->waiters[s->nwaiters].cb = cb;
    s->waiters[s->nwaiters].user = user;
    s->nwaiters++;
    return 0;
}

int pact_server_port(const pact_server *s)
{
    return s ? (s->port ? s->port : -ENOTSUP) : -EINVAL;
}

pact_loop *pact_server_loop(const pact_server *s)
{
    return s ? s->ep.loop : NULL;
}

int pact_server_fd(const pact_server *s)
{
    return s ? s->fd : -EINVAL;
}

size_t pact_server_connections(const pact_server *s)
{
    return s ? s->ep.children : 0;
}

uint64_t pact_server_accept_errors(const pact_server *s)
{
    return s ? s->accept_errors : 0;
}

pact_transport *pact_server_accepting(const pact_server *s)
{
    return s ? s->accepting : NULL;
}

void *pact__server_factory_user(const pact_server *s,
                                pact_protocol_factory_cb factory)
{
    return s && s->factory == factory ? s->factory_user : NULL;
}

static int server_start(pact_loop *loop, int fd, pact_protocol_factory_cb factory,
                        void *factory_user, const char *unix_path, int inet,
                        void *created_at, pact_server **out)
{
    pact_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    pact__endpoint_init(&s->ep, loop, &server_ops);
    s->fd = fd;
    s->factory = factory;
    s->factory_user = factory_user;
    if (unix_path)
        snprintf(s->unix_path, sizeof s->unix_path, "%s", unix_path);
    else if (inet)
        s->port = pact_socket_port(fd);
    pact__endpoint_register(&s->ep, created_at);
    arm_accept(s);
    *out = s;
    return 0;
}

static int check_args(pact_loop *loop, pact_protocol_factory_cb factory,
                      pact_server **out, const char *func)
{
    int r = pact__check_loop(loop, func);
    if (r)
        return r;
    if (!factory || !out)
        return pact__misuse(loop, -EINVAL, func, "factory or out is NULL");
    return 0;
}

int pact_server_listen_tcp(pact_loop *loop, const char *host, uint16_t port,
                           const pact_server_options *opts,
                           pact_protocol_factory_cb factory, void *factory_user,
                           pact_server **out)
{
    int r = check_args(loop, factory, out, __func__);
    if (r)
        return r;
    pact_server_options defaults;
    pact_server_options_init(&defaults);
    if (opts && (r = pact__options_read(&defaults, sizeof defaults,
                                        PACT__SERVER_OPTIONS_V1, opts)) < 0)
        return PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    opts = &defaults;
    struct sockaddr_storage ss;
    socklen_t len;
    r = pact_sockaddr_parse(host ? host : "0.0.0.0", port, &ss, &len);
    if (r)
        return PACT_MISUSE(loop, r, "host is not a numeric address");
#ifdef _WIN32
    int fd = pact__win_tcp_listener(&ss, len, opts);
    if (fd < 0)
        return fd;
#else
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Inherited by the accepted sockets (serve_connection): one system
     * call per server instead of one per connection (perf, connect /
     * one request / close: 2 % of the server's CPU per connection). */
    int nodelay = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
    if (opts->reuse_port)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss.ss_family == AF_INET6) {
        int v6only = opts->ipv6_only ? 1 : 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
#endif
    r = server_start(loop, fd, factory, factory_user, NULL, 1,
                     __builtin_return_address(0), out);
#ifndef _WIN32
    if (r == 0)
        (*out)->nodelay_inherited = nodelay;
#endif
    return r;
}

int pact_server_adopt(pact_loop *loop, pact_os_sock sock,
                      const pact_server_options *opts,
                      pact_protocol_factory_cb factory, void *factory_user,
                      pact_server **out)
{
    int fd = (int)sock;
    int r = check_args(loop, factory, out, __func__);
    pact_server_options o;
    pact_server_options_init(&o);
    if (r == 0 && opts &&
        (r = pact__options_read(&o, sizeof o, PACT__SERVER_OPTIONS_V1, opts)) < 0)
        r = PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    if (r == 0 && (o.reuse_port || o.ipv6_only))
        r = PACT_MISUSE(loop, -EINVAL,
                        "reuse_port and ipv6_only do not apply to a socket that exists");
    if (r == 0 && fd < 0)
        r = PACT_MISUSE(loop, -EBADF, "fd is negative");
    int listening = 0, type = 0;
    socklen_t len = sizeof listening;
    /* A stream socket in the listening state, or the accepts would fail
     * forever (each a back-off) instead of the caller hearing it now. */
    if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        r = errno == ENOTSOCK ? PACT_MISUSE(loop, -ENOTSOCK, "not a socket") : -errno;
    len = sizeof type;
    if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        r = -errno;
    if (r == 0 && (!listening || type != SOCK_STREAM))
        r = PACT_MISUSE(loop, -EINVAL, "not a listening stream socket");
    if (r == 0 && o.backlog > 0 && listen(fd, o.backlog) < 0)
        r = -errno;
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        return r;
    }
#ifndef _WIN32
    /* Its accepts never wait in a system call (the epoll engine calls
     * accept4 when the socket polls readable). */
    pact__fd_make_nonblocking(fd);
#endif
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    int inet = getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0 &&
               (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    return server_start(loop, fd, factory, factory_user, NULL, inet,
                        __builtin_return_address(0), out);
}

/* Unix sockets: Linux only (named pipes are Windows' counterpart). */
#ifndef _WIN32

/* Fills a sockaddr_un; '@' at the start means the abstract namespace. */
int pact__unix_address(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun->sun_path)
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@') {
        sun->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* A socket file nobody listens on is stale: connecting is refused. */
static int is_stale_socket_file(const char *path, const struct sockaddr_un *sun,
                                socklen_t len)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0)
        return 0;
    int r = connect(probe, (const struct sockaddr *)sun, len);
    int stale = r < 0 && errno == ECONNREFUSED;
    close(probe);
    return stale;
}

int pact_server_listen_unix(pact_loop *loop, const char *path,
                            const pact_server_options *opts,
                            pact_protocol_factory_cb factory, void *factory_user,
                            pact_server **out)
{
    int r = check_args(loop, factory, out, __func__);
    if (r)
        return r;
    if (!path)
        return PACT_MISUSE(loop, -EINVAL, "path is NULL");
    pact_server_options defaults;
    pact_server_options_init(&defaults);
    if (opts && (r = pact__options_read(&defaults, sizeof defaults,
                                        PACT__SERVER_OPTIONS_V1, opts)) < 0)
        return PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    opts = &defaults;
    struct sockaddr_un sun;
    socklen_t len;
    r = pact__unix_address(path, &sun, &len);
    if (r)
        return PACT_MISUSE(loop, r, "path too long for a Unix socket");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    r = bind(fd, (struct sockaddr *)&sun, len);
    if (r < 0 && errno == EADDRINUSE && path[0] != '@' &&
        is_stale_socket_file(path, &sun, len)) {
        unlink(path); /* left by a server that died: replace it */
        r = bind(fd, (struct sockaddr *)&sun, len);
    }
    if (r < 0 || listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    return server_start(loop, fd, factory, factory_user, path, 0,
                        __builtin_return_address(0), out);
}
#endif
