/* SPDX-License-Identifier: MIT */
/* Servers: a listening socket whose accepted connections become transports
 * with a protocol from the user's factory.
 *
 * One accept is in flight at a time and is re-armed from its completion.
 * An error on one connection (ECONNABORTED, a reset before accept) never
 * stops the listener. Running out of descriptors or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) backs off for a moment and then keeps serving —
 * asyncio's proactor closed the listener here (CPython gh-93821). A connection
 * that the kernel hands over after close() is closed, never given to a
 * protocol. The listening fd is closed only after the pending accept has
 * called back (no fd-number reuse under an in-flight accept). */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "stream.h"

#define ACCEPT_BACKOFF_NS (100ull * 1000 * 1000)
#define MAX_WAITERS 8

struct pact_server {
    pact_resource res;
    pact_loop *loop;
    int fd;
    pact_protocol_factory factory;
    void *factory_user;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int port;

    pact_op accept_op;
    pact_handle backoff;
    unsigned closing : 1;
    unsigned freed_scheduled : 1;

    pact_list conns; /* pact_transport.server_link */
    size_t nconns;
    uint64_t accept_errors;

    struct {
        pact_callback cb;
        void *user;
    } waiters[MAX_WAITERS];
    int nwaiters;
};

static void arm_accept(pact_server *s);
static void maybe_done(pact_server *s);

static void server_done(pact_loop *loop, void *arg)
{
    pact_server *s = arg;
    /* Listed until now so that a closing loop runs this callback too. */
    pact__resource_remove(loop, &s->res);
    for (int i = 0; i < s->nwaiters; i++)
        s->waiters[i].cb(loop, s->waiters[i].user);
    free(s);
}

/* Once closed, the accept back and the connections gone: wake the waiters
 * and free the server. */
static void maybe_done(pact_server *s)
{
    /* The listener goes as soon as its accept is back, not once the
     * connections are gone: left open, the kernel would go on completing
     * handshakes into a backlog nobody accepts, and clients would hang
     * instead of being refused (asyncio closes its sockets in close()). */
    if (s->closing && !s->accept_op && s->fd >= 0) {
        close(s->fd);
        s->fd = -EBADF;
        if (s->unix_path[0] && s->unix_path[0] != '@')
            unlink(s->unix_path);
    }
    if (!s->closing || s->accept_op || s->nconns > 0 || s->freed_scheduled)
        return;
    s->freed_scheduled = 1;
    if (pact_call_soon(s->loop, server_done, s) < 0)
        server_done(s->loop, s);
}

static void connection_gone(pact_transport *t, void *arg)
{
    pact_server *s = arg;
    pact_list_remove(&t->server_link);
    s->nconns--;
    maybe_done(s);
}

static void serve_connection(pact_server *s, int fd)
{
    const pact_protocol *proto = NULL;
    void *user = NULL;
    int r = s->factory(s, s->factory_user, &proto, &user);
    if (r < 0 || !proto) {
        close(fd);
        return;
    }
    pact_transport *t;
    r = pact__transport_create(s->loop, fd, PACT_STREAM_SOCKET, proto, user,
                               s->res.created_at, &t);
    if (r < 0) {
        s->accept_errors++;
        return; /* fd was closed by create */
    }
    t->on_gone = connection_gone;
    t->on_gone_user = s;
    pact_list_push_back(&s->conns, &t->server_link);
    s->nconns++;
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
    s->accept_op = 0;
    if (c->result >= 0) {
        if (s->closing)
            close((int)c->result); /* accepted after close: never served */
        else
            serve_connection(s, (int)c->result);
    } else if (c->result != -ECANCELED) {
        s->accept_errors++;
        int err = (int)c->result;
        if (!s->closing && (err == -EMFILE || err == -ENFILE ||
                            err == -ENOBUFS || err == -ENOMEM)) {
            if (pact_loop_debug(loop))
                pact__log(loop, "accept on fd %d: %s; retrying in 100 ms",
                          s->fd, pact_strerror(err));
            pact_handle h = pact_call_later(loop, ACCEPT_BACKOFF_NS,
                                            backoff_over, s);
            if (h > 0) {
                s->backoff = h;
                return;
            }
        }
    }
    if (s->closing)
        maybe_done(s);
    else
        arm_accept(s);
}

static void arm_accept(pact_server *s)
{
    if (s->closing || s->accept_op || s->backoff)
        return;
    pact_op op = pact_accept(s->loop, s->fd, on_accept, s);
    if (op < 0) {
        pact__error(s->loop, (int)op, "server on fd %d cannot accept", s->fd);
        /* Retry after the back-off: a failure to start the accept (-ENOMEM)
         * stopped the listener for good (found by test_faults). */
        pact_handle h = pact_call_later(s->loop, ACCEPT_BACKOFF_NS,
                                        backoff_over, s);
        if (h > 0)
            s->backoff = h;
        return;
    }
    s->accept_op = op;
}

int pact_server_close(pact_server *s)
{
    if (!s)
        return -EINVAL;
    if (s->closing)
        return -EALREADY;
    s->closing = 1;
    if (s->backoff) {
        pact_handle_cancel(s->loop, s->backoff);
        s->backoff = 0;
    }
    if (s->accept_op)
        pact_cancel(s->loop, s->accept_op);
    maybe_done(s);
    return 0;
}

static void force_close(pact_resource *res)
{
    pact_server *s = pact_container_of(res, pact_server, res);
    pact_server_close(s);
    for (pact_list *n = s->conns.next; n != &s->conns; n = n->next)
        pact_transport_abort(pact_container_of(n, pact_transport, server_link));
}

int pact_server_wait_closed(pact_server *s, pact_callback cb, void *user)
{
    if (!s || !cb)
        return -EINVAL;
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
    return s ? s->loop : NULL;
}

int pact_server_fd(const pact_server *s)
{
    return s ? s->fd : -EINVAL;
}

size_t pact_server_connections(const pact_server *s)
{
    return s ? s->nconns : 0;
}

uint64_t pact_server_accept_errors(const pact_server *s)
{
    return s ? s->accept_errors : 0;
}

static int server_start(pact_loop *loop, int fd, pact_protocol_factory factory,
                        void *factory_user, const char *unix_path,
                        void *created_at, pact_server **out)
{
    pact_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    s->loop = loop;
    s->fd = fd;
    s->factory = factory;
    s->factory_user = factory_user;
    pact_list_init(&s->conns);
    if (unix_path)
        snprintf(s->unix_path, sizeof s->unix_path, "%s", unix_path);
    else
        s->port = pact_socket_port(fd);
    pact__resource_add(loop, &s->res, "server", force_close, created_at);
    arm_accept(s);
    *out = s;
    return 0;
}

static int check_args(pact_loop *loop, pact_protocol_factory factory,
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
                           pact_protocol_factory factory, void *factory_user,
                           pact_server **out)
{
    int r = check_args(loop, factory, out, __func__);
    if (r)
        return r;
    pact_server_options defaults = {0};
    if (!opts)
        opts = &defaults;
    struct sockaddr_storage ss;
    socklen_t len;
    r = pact_sockaddr_parse(host ? host : "0.0.0.0", port, &ss, &len);
    if (r)
        return PACT_MISUSE(loop, r, "host is not a numeric address");
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
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
    return server_start(loop, fd, factory, factory_user, NULL,
                        __builtin_return_address(0), out);
}

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
                            pact_protocol_factory factory, void *factory_user,
                            pact_server **out)
{
    int r = check_args(loop, factory, out, __func__);
    if (r)
        return r;
    if (!path)
        return PACT_MISUSE(loop, -EINVAL, "path is NULL");
    pact_server_options defaults = {0};
    if (!opts)
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
    return server_start(loop, fd, factory, factory_user, path,
                        __builtin_return_address(0), out);
}
